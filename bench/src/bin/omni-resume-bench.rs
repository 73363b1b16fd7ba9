//! `omni-resume-bench`: a mass reconnect (docs/BENCHMARKS.md, "Mass reconnect").
//!
//! C clients hold P players each (`omni-bench-server`). All their sockets are dropped at once,
//! as a load balancer's reload does; while they are away a writer changes a share of the
//! players; then all reconnect at once. Measured: the time from the drop until every client
//! has caught up, and the bytes the clients received to catch up. Each run alternates a server
//! that resumes connections (clients present their resume token and position, and get only what
//! changed) with one that does not (`--no-resume`: every client gets a full snapshot).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Parser, Debug)]
#[command(about = "Mass reconnect: resume against full snapshots (docs/BENCHMARKS.md)")]
struct Args {
    /// Clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Players each client holds.
    #[arg(long, default_value_t = 1000)]
    models: usize,
    /// Percent of the players changed while the clients are away.
    #[arg(long, default_value_t = 1.0)]
    changed_pct: f64,
    /// Runs of each mode, alternating.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Connections opened at a time.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Path of `omni-bench-server` (default: next to this executable).
    #[arg(long)]
    server: Option<PathBuf>,
}

/// A client's position for a resume.
#[derive(Default, Clone)]
struct Position {
    token: String,
    epoch: u64,
    seq: u64,
    view: u64,
    /// Resumed with only the changes (not a snapshot).
    changes_only: bool,
}

impl Position {
    fn see(&mut self, msg: &Value) {
        match msg["t"].as_str() {
            Some("hello") => {
                self.token = msg["token"].as_str().unwrap_or_default().to_owned();
                self.epoch = msg["epoch"].as_u64().unwrap_or(0);
            }
            Some("snapshot") => self.seq = msg["seq"].as_u64().unwrap_or(self.seq),
            Some("resumed") => self.changes_only = msg["full"] == false,
            Some("at") => {
                self.seq = msg["seq"].as_u64().unwrap_or(self.seq);
                self.view = msg["v"].as_u64().unwrap_or(self.view);
            }
            _ => {}
        }
    }
}

/// Reads frames until a message satisfies `done`; the bytes read. Updates `pos`.
async fn read_until(
    ws: &mut Ws,
    pos: &mut Position,
    done: impl Fn(&Value) -> bool,
) -> Result<u64, String> {
    let mut bytes = 0u64;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .map_err(|_| "no answer within 60 s".to_string())?
            .ok_or("closed")?
            .map_err(|e| e.to_string())?;
        let Message::Text(text) = msg else { continue };
        bytes += text.len() as u64;
        let value: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
        let list = match value {
            Value::Array(items) => items,
            one => vec![one],
        };
        let mut finished = false;
        for m in &list {
            pos.see(m);
            finished |= done(m);
        }
        if finished {
            return Ok(bytes);
        }
    }
}

struct Server {
    child: tokio::process::Child,
    url: String,
}

async fn start_server(path: &PathBuf, models: usize, resume: bool) -> Result<Server, String> {
    let mut cmd = tokio::process::Command::new(path);
    cmd.arg("--models").arg(models.to_string());
    if !resume {
        cmd.arg("--no-resume");
    }
    let (child, addr) = omni_bench::child::spawn_listening(cmd).await?;
    Ok(Server {
        child,
        url: format!("ws://{addr}/omni"),
    })
}

/// One run of one mode: (seconds from the drop until all caught up, bytes received, resumed).
async fn run(args: &Args, server: &Server, resume: bool) -> Result<(f64, u64, usize), String> {
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let mut joins = Vec::new();
    for _ in 0..args.clients {
        let (url, gate) = (server.url.clone(), gate.clone());
        joins.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            let (mut ws, _) = tokio_tungstenite::connect_async(&url)
                .await
                .map_err(|e| e.to_string())?;
            let mut pos = Position::default();
            read_until(&mut ws, &mut pos, |m| m["t"] == "snapshot").await?;
            // The frame after the snapshot's carries its position; give it a moment.
            let _ = tokio::time::timeout(
                Duration::from_millis(20),
                read_until(&mut ws, &mut pos, |_| false),
            )
            .await;
            Ok::<_, String>((ws, pos))
        }));
    }
    let mut clients = Vec::new();
    for j in joins {
        clients.push(j.await.map_err(|e| e.to_string())??);
    }
    let (mut writer, _) = tokio_tungstenite::connect_async(&server.url)
        .await
        .map_err(|e| e.to_string())?;
    let mut wpos = Position::default();
    read_until(&mut writer, &mut wpos, |m| m["t"] == "snapshot").await?;

    // The drop: every socket at once, without a close frame.
    let start = Instant::now();
    let positions: Vec<Position> = clients
        .into_iter()
        .map(|(ws, pos)| {
            drop(ws);
            pos
        })
        .collect();
    // While they are away, the writer changes a share of the players (OIDs 1..=P).
    let changes = ((args.models as f64 * args.changed_pct / 100.0).round() as usize).max(1);
    for i in 0..changes {
        let oid = 1 + (i * args.models / changes) as u64;
        let msg = json!({ "t": "change", "c": "players", "oid": oid, "id": i + 1, "set": { "x": 7 + i } });
        writer
            .send(Message::text(msg.to_string()))
            .await
            .map_err(|e| e.to_string())?;
    }
    let last = changes as u64;
    read_until(&mut writer, &mut wpos, |m| {
        m["t"] == "ack" && m["id"] == last
    })
    .await?;

    let bytes = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let mut joins = Vec::new();
    for mut pos in positions {
        let (url, gate, bytes, resumed) = (
            server.url.clone(),
            gate.clone(),
            bytes.clone(),
            resumed.clone(),
        );
        joins.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            let target = if resume && !pos.token.is_empty() {
                format!(
                    "{url}?resume={}&epoch={}&seq={}&v={}",
                    pos.token, pos.epoch, pos.seq, pos.view
                )
            } else {
                url
            };
            let (mut ws, _) = tokio_tungstenite::connect_async(&target)
                .await
                .map_err(|e| e.to_string())?;
            let n = read_until(&mut ws, &mut pos, |m| {
                m["t"] == "resumed" || (m["t"] == "snapshot" && !resume)
            })
            .await?;
            bytes.fetch_add(n, Ordering::Relaxed);
            if pos.changes_only {
                resumed.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>((ws, n))
        }));
    }
    let mut keep = Vec::new();
    for j in joins {
        keep.push(j.await.map_err(|e| e.to_string())??);
    }
    let secs = start.elapsed().as_secs_f64();
    drop(keep);
    Ok((
        secs,
        bytes.load(Ordering::Relaxed),
        resumed.load(Ordering::Relaxed) as usize,
    ))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let path = args.server.clone().unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap_or_default();
        exe.with_file_name("omni-bench-server")
    });
    let mut results: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    for i in 1..=args.runs {
        for (m, resume) in [(0, true), (1, false)] {
            let mut server = start_server(&path, args.models, resume).await?;
            let (secs, bytes, n) = run(&args, &server, resume).await?;
            let _ = server.child.kill().await;
            let label = if resume { "resume" } else { "snapshot" };
            eprintln!(
                "run {i} {label}: {} clients caught up in {secs:.3} s, {bytes} bytes ({n} resumed with only the changes)",
                args.clients
            );
            results[m].0.push(secs);
            results[m].1.push(bytes as f64);
        }
    }
    let line = |name: &str, r: &mut (Vec<f64>, Vec<f64>)| {
        let (min_t, max_t) = (
            r.0.iter().cloned().fold(f64::MAX, f64::min),
            r.0.iter().cloned().fold(0.0, f64::max),
        );
        let (min_b, max_b) = (
            r.1.iter().cloned().fold(f64::MAX, f64::min),
            r.1.iter().cloned().fold(0.0, f64::max),
        );
        let (t, b) = (median(&mut r.0), median(&mut r.1));
        println!(
            "| {name} | {} | {t:.3} ({min_t:.3}-{max_t:.3}) | {:.2} ({:.2}-{:.2}) |",
            r.0.len(),
            b / 1e6,
            min_b / 1e6,
            max_b / 1e6
        );
        (t, b)
    };
    println!(
        "| catch up after dropping {} clients x {} players, {} % changed | runs | seconds | MB received |",
        args.clients, args.models, args.changed_pct
    );
    println!("|---|--:|--:|--:|");
    let [mut a, mut b] = results;
    let (ta, ba) = line("resume", &mut a);
    let (tb, bb) = line("snapshot (resume off)", &mut b);
    println!(
        "| snapshot / resume | | {:.1}x | {:.1}x |",
        tb / ta,
        bb / ba
    );
    Ok(())
}
