//! The todo example's server, built inside the test package so the kill-and-restart test can
//! run it as a real process (`CARGO_BIN_EXE_todo-server`). Same flags as `example-todo`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    example_todo::main_with(example_todo::Args::parse()).await
}
