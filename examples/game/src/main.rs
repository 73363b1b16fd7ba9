//! Runs the players game: `cargo run -p example-game`, then open the printed address in two
//! browser windows.

use clap::Parser;

/// The Omni players game.
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
    /// Run as a node of a cluster: the NATS server (with JetStream: `nats-server -js`).
    #[arg(long)]
    nats: Option<String>,
    /// The cluster's key-value bucket.
    #[arg(long, default_value = "game")]
    bucket: String,
    /// The key login tokens are signed with; every node of a cluster needs the same one
    /// (default: a random key, so tokens stop working when the server restarts).
    #[arg(long, env = "OMNI_GAME_SECRET")]
    secret: Option<String>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind((args.host, args.port)).await?;
    let addr = listener.local_addr()?;
    println!("omni game listening on http://{addr}/ (open it in two browser windows)");
    let week = std::time::Duration::from_secs(7 * 24 * 3600);
    let tokens = match &args.secret {
        Some(secret) => example_game::Tokens::new(secret.as_bytes().to_vec(), week),
        None => example_game::Tokens::random(week),
    };
    let app = match &args.nats {
        None => example_game::app_with(args.public, tokens),
        Some(nats) => {
            if args.secret.is_none() {
                return Err(std::io::Error::other(
                    "a cluster node needs --secret (the same on every node), so that a login on one node counts on the others",
                ));
            }
            let cluster = omni_runtime::cluster::Nats::connect(nats)
                .bucket(&args.bucket)
                .open()
                .await
                .map_err(std::io::Error::other)?;
            println!(
                "node {} of the cluster in bucket `{}`",
                cluster.node(),
                args.bucket
            );
            example_game::node(args.public, tokens, cluster)
        }
    };
    app.try_build()
        .map_err(std::io::Error::other)?
        .serve(listener)
        .await;
    Ok(())
}
