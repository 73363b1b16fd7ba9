//! `omni-floor-server`: the floor of the benchmark (issue 17). A minimal server on the same stack
//! as Omni (tokio + tungstenite, TCP_NODELAY, the same small socket buffers) speaking just
//! enough of the protocol for `omni-bench`: `hello` and a snapshot of the players on connect;
//! a writer's `change` is acknowledged and sent, as the same `change` message, to every
//! connection; each connection's pending messages go out as one frame, written by its own task
//! (Omni's pattern). No engine: no permissions, no diff, no storage, no log. What Omni costs
//! above this is the engine; this much is the kernel, the runtime and WebSocket framing.
//!
//! It takes `omni-bench-server`'s arguments (most are ignored), so `omni-bench --server PATH`
//! and `scripts/bench-compare.sh` drive it like Omni.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Parser, Debug)]
#[command(about = "The benchmark's floor: tokio + tungstenite, no engine (docs/BENCHMARKS.md)")]
struct Args {
    /// Number of players seeded.
    #[arg(long, default_value_t = 100)]
    models: usize,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Accepted for `omni-bench`, ignored (no queue limit: the floor never resyncs).
    #[arg(long, default_value_t = 4 << 20)]
    max_queue_bytes: usize,
    /// Accepted for `omni-bench`, ignored (TCP_NODELAY is always set).
    #[arg(long)]
    nodelay: bool,
    /// The WebSocket read buffer in bytes (Omni's default: 4 KiB).
    #[arg(long, default_value_t = 4096)]
    read_buffer: usize,
    /// Keep running when standard input closes.
    #[arg(long)]
    ignore_stdin: bool,
}

/// One connection's pending messages.
#[derive(Default)]
struct Queue {
    items: Mutex<Vec<Bytes>>,
    notify: Notify,
}

impl Queue {
    fn push(&self, msg: Bytes) {
        self.items.lock().push(msg);
        self.notify.notify_one();
    }
}

/// A player, as `omni-bench-server`'s model.
struct Player {
    name: String,
    x: i64,
    y: i64,
    seq: i64,
    ts: i64,
}

impl Player {
    /// `{"oid":N,"name":..,"x":..,"y":..,"seq":..,"ts":..}`: Omni's attribute order, which the
    /// generator's scanner relies on (`{"oid":` starts a model).
    fn write(&self, oid: usize, out: &mut String) {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            r#"{{"oid":{oid},"name":"{}","x":{},"y":{},"seq":{},"ts":{}}}"#,
            self.name, self.x, self.y, self.seq, self.ts
        );
    }

    fn set(&mut self, key: &str, value: &serde_json::Value) {
        let n = value.as_i64().unwrap_or(0);
        match key {
            "x" => self.x = n,
            "y" => self.y = n,
            "seq" => self.seq = n,
            "ts" => self.ts = n,
            _ => {}
        }
    }
}

#[derive(Default)]
struct Shared {
    players: Mutex<Vec<Player>>,
    conns: Mutex<Vec<(u64, Arc<Queue>)>>,
    next: std::sync::atomic::AtomicU64,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    rt.build()?.block_on(run(args))
}

async fn run(args: Args) -> std::io::Result<()> {
    let shared = Arc::new(Shared::default());
    {
        let mut players = shared.players.lock();
        for i in 0..args.models {
            players.push(Player {
                name: format!("p{i}"),
                x: (i % 640) as i64,
                y: (i / 640) as i64,
                seq: 0,
                ts: 0,
            });
        }
    }
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("listening {}", listener.local_addr()?);
    if !args.ignore_stdin {
        tokio::spawn(async {
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
            std::process::exit(0);
        });
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(args.read_buffer.max(256))
        .write_buffer_size(0);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
            {
                connection(shared, ws).await;
            }
        });
    }
}

fn frame(items: &[Bytes]) -> Bytes {
    if let [one] = items {
        return one.clone();
    }
    let mut buf = Vec::with_capacity(items.iter().map(|b| b.len() + 1).sum::<usize>() + 1);
    buf.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(item);
    }
    buf.push(b']');
    Bytes::from(buf)
}

async fn connection(
    shared: Arc<Shared>,
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) {
    let id = shared
        .next
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    let queue = Arc::new(Queue::default());
    queue.push(Bytes::from(format!(
        r#"{{"t":"hello","v":1,"conn":{id},"epoch":1}}"#
    )));
    {
        let players = shared.players.lock();
        let mut snap = String::from(r#"{"t":"snapshot","seq":0,"data":{"players":["#);
        for (i, p) in players.iter().enumerate() {
            if i > 0 {
                snap.push(',');
            }
            p.write(i + 1, &mut snap);
        }
        snap.push_str("]}}");
        queue.push(Bytes::from(snap));
        shared.conns.lock().push((id, queue.clone()));
    }
    let (mut tx, mut rx) = ws.split();
    let sender = {
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut pending = Vec::new();
            loop {
                queue.notify.notified().await;
                loop {
                    std::mem::swap(&mut pending, &mut *queue.items.lock());
                    if pending.is_empty() {
                        break;
                    }
                    let f = frame(&pending);
                    pending.clear();
                    let text = match tokio_tungstenite::tungstenite::Utf8Bytes::try_from(f) {
                        Ok(t) => t,
                        Err(_) => return,
                    };
                    if tx.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    while let Some(Ok(msg)) = rx.next().await {
        let Message::Text(text) = msg else {
            if msg.is_close() {
                break;
            }
            continue;
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
            continue;
        };
        let items = match value {
            serde_json::Value::Array(items) => items,
            one => vec![one],
        };
        for m in items {
            if m["t"] != "change" {
                continue;
            }
            let (Some(oid), Some(set)) = (m["oid"].as_u64(), m["set"].as_object()) else {
                continue;
            };
            if let Some(player) = shared.players.lock().get_mut(oid as usize - 1) {
                for (k, v) in set {
                    player.set(k, v);
                }
            }
            let mut out = Vec::with_capacity(96);
            out.extend_from_slice(br#"{"t":"change","c":"players","oid":"#);
            out.extend_from_slice(oid.to_string().as_bytes());
            out.extend_from_slice(br#","set":"#);
            out.extend_from_slice(&serde_json::to_vec(set).unwrap_or_default());
            out.push(b'}');
            let change = Bytes::from(out);
            for (_, q) in shared.conns.lock().iter() {
                q.push(change.clone());
            }
            if let Some(req) = m["id"].as_u64() {
                queue.push(Bytes::from(format!(r#"{{"t":"ack","id":{req}}}"#)));
            }
        }
    }
    shared.conns.lock().retain(|(c, _)| *c != id);
    sender.abort();
}
