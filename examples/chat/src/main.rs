//! Runs the chat example: `cargo run -p example-chat`, then open the printed address in two
//! browser windows.

use clap::Parser;

/// The Omni chat example.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Directory of the page.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/public"))]
    public: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind((args.host, args.port)).await?;
    let addr = listener.local_addr()?;
    println!("omni chat listening on http://{addr}/ (open it in two browser windows)");
    example_chat::app(args.public).build().serve(listener).await;
    Ok(())
}
