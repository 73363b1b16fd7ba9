//! The cost of durability: acknowledged writes per second with the durable redb store against
//! the in-memory one, in the same run, on the todo example. Each of `--clients` connections
//! changes a todo and waits for its `ack` before the next change, for `--secs` seconds per store.
//!
//! `cargo run --release -p omni-tests --bin durability-bench -- --clients 8 --secs 5`

use std::time::{Duration, Instant};

use clap::Parser;
use omni_runtime::client::Client;
use omni_runtime::storage::RedbStore;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Acknowledged writes per second: in-memory store against durable redb store")]
struct Args {
    /// Concurrent writing connections.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds of writing per store.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Runs of each store, alternating; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Directory of the redb file (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

async fn run(durable: Option<&std::path::Path>, clients: usize, secs: u64) -> f64 {
    // The per-connection rate limit protects servers from floods; here it would cap the figure.
    let config = omni_runtime::Config {
        max_messages_per_second: 1_000_000,
        message_burst: 1_000_000,
        static_dir: None,
        ..Default::default()
    };
    let mut app = example_todo::app("/nonexistent").config(config);
    if let Some(path) = durable {
        let _ = std::fs::remove_file(path);
        app = app.storage(RedbStore::open(path).expect("open store"));
    }
    let server = app.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/omni", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve_with_shutdown(listener, async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await.expect("connect");
            let token = format!("bench-token-{i:08}-0123456789");
            let _: () = c
                .trigger(
                    "identify",
                    &json!({"token": token, "name": format!("w{i}")}),
                )
                .await
                .expect("identify");
            let oid = c
                .add("todos", json!({"title": format!("todo {i}")}))
                .await
                .expect("add");
            let mut acked = 0u64;
            let mut done = false;
            while Instant::now() < deadline {
                done = !done;
                c.change("todos", oid, json!({"done": done}))
                    .await
                    .expect("acknowledged");
                acked += 1;
            }
            acked
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let _ = stop.send(());
    total as f64 / secs as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("omni-durability-bench-{}.redb", std::process::id()));
    let (mut mem, mut disk) = (Vec::new(), Vec::new());
    for r in 0..args.runs {
        let m = run(None, args.clients, args.secs).await;
        let d = run(Some(&path), args.clients, args.secs).await;
        eprintln!("run {}: memory {m:.0}/s, redb {d:.0}/s", r + 1);
        mem.push(m);
        disk.push(d);
    }
    let _ = std::fs::remove_file(&path);
    let (m, d) = (median(mem), median(disk));
    println!(
        "| store | clients | acknowledged writes/s (median of {}) |",
        args.runs
    );
    println!("|---|---|---|");
    println!("| memory | {} | {m:.0} |", args.clients);
    println!("| redb (group commit) | {} | {d:.0} |", args.clients);
    println!("durable/memory = {:.3}", d / m);
}
