//! Runs the todo example: `cargo run -p example-todo`, then open the printed address in two
//! browser windows. `cargo run -p example-todo -- --data todos.redb` keeps the list on disk.

use clap::Parser;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    example_todo::main_with(example_todo::Args::parse()).await
}
