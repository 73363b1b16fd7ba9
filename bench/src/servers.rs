//! The servers under test: one `omni-bench-server`, or a cluster (a nats-server with JetStream
//! and N nodes on one bucket). Each is a child process killed when dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;

use crate::Args;

/// Buckets used by this run of the generator (one per cluster row).
pub(crate) static BUCKETS: AtomicU64 = AtomicU64::new(0);

pub(crate) struct Server {
    pub(crate) child: tokio::process::Child,
    pub(crate) pid: u32,
    pub(crate) url: Arc<str>,
}

pub(crate) async fn start_server(args: &Args, models: usize) -> Result<Server, String> {
    start_node(args, models, None).await
}

/// A NATS server with JetStream on a free loopback port and a temporary store, for a cluster.
pub(crate) struct Broker {
    child: tokio::process::Child,
    pub(crate) pid: u32,
    pub(crate) url: String,
    store: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

pub(crate) async fn start_broker(args: &Args) -> Result<Broker, String> {
    let bin = args
        .nats_server
        .clone()
        .ok_or("--nodes > 1 needs nats-server: pass --nats-server PATH or set OMNI_NATS_SERVER")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let store = std::env::temp_dir().join(format!("omni-bench-nats-{}-{port}", std::process::id()));
    let mut child = tokio::process::Command::new(&bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&store)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let pid = child.id().ok_or("nats-server exited at once")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            let _ = child.start_kill();
            return Err("nats-server did not listen within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Broker {
        child,
        pid,
        url: format!("nats://127.0.0.1:{port}"),
        store,
    })
}

/// One server, or one node of a cluster (`nats`: the broker's URL and the bucket).
pub(crate) async fn start_node(
    args: &Args,
    models: usize,
    nats: Option<(&str, &str)>,
) -> Result<Server, String> {
    let path = match &args.server {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("omni-bench-server"),
    };
    let mut cmd = tokio::process::Command::new(&path);
    cmd.arg("--models")
        .arg(models.to_string())
        .arg("--max-queue-bytes")
        .arg(args.max_queue_bytes.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    if args.nodelay {
        cmd.arg("--nodelay");
    }
    if args.coalesce_ms > 0.0 {
        cmd.arg("--coalesce-ms").arg(args.coalesce_ms.to_string());
    }
    if let Some(n) = args.read_buffer {
        cmd.arg("--read-buffer").arg(n.to_string());
    }
    if let Some(n) = args.server_threads {
        cmd.arg("--threads").arg(n.to_string());
    }
    if let Some((url, bucket)) = nats {
        cmd.arg("--nats").arg(url).arg("--bucket").arg(bucket);
    }
    if let Some(ms) = args.slow_backend_ms {
        cmd.arg("--slow-backend-ms")
            .arg(ms.to_string())
            .arg("--slow-writers")
            .arg(args.slow_writers.to_string());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e} (build it with `cargo build --release -p omni-bench`, or pass --server)", path.display()))?;
    let pid = child.id().ok_or("server exited at once")?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| "the server did not print its address within 30 s")?
        .map_err(|e| e.to_string())?
        .ok_or("the server exited before printing its address")?;
    let addr = line
        .strip_prefix("listening ")
        .ok_or_else(|| format!("unexpected first line from the server: {line}"))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Server {
        child,
        pid,
        url: format!("ws://{addr}/omni").into(),
    })
}
