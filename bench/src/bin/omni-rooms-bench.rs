//! `omni-rooms-bench`: live queries against channels (docs/BENCHMARKS.md, "Rooms: live queries
//! against channels").
//!
//! `omni-bench-server` seeds L chat lines over R rooms. C clients each hold one room (client i
//! room i % R): with a live query for its last `--limit` lines (`Omni::queried`), or subscribed
//! to its channel (`Omni::channels`: every line of the room). One writer then posts lines to
//! random rooms at a fixed rate. Measured per run: the time for all clients to hold their room,
//! the server's memory per connection after that, then over `--secs`: deliveries (a new line
//! reaching a client) per second, the server's CPU time per delivery, and the latency from the
//! writer's send to each client's receipt. Runs alternate the two modes, each against a fresh
//! server; the table shows medians with their min-max.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use omni_bench::model::RoomsMode;
use omni_bench::procfs::{clock_ticks_per_second, cpu_ticks, rss_kib};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Parser, Debug)]
#[command(about = "Rooms: C clients each holding one room, by live query or by channel")]
struct Args {
    /// Clients.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Rooms.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Lines seeded (spread evenly over the rooms).
    #[arg(long, default_value_t = 100_000)]
    lines: usize,
    /// Lines a query shows.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Lines posted per second, in total.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Seconds of posting before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Runs of each mode, alternating.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Modes to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "query,channels"
    )]
    modes: Vec<RoomsMode>,
    /// Connections opened at a time.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Write every run's figures as JSON lines to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Path of `omni-bench-server` (default: next to this executable).
    #[arg(long)]
    server: Option<PathBuf>,
}

/// One run's figures.
#[derive(Clone, Debug, serde::Serialize)]
struct Row {
    mode: String,
    clients: usize,
    posts_per_s: f64,
    deliveries_per_s: f64,
    cpu_us_per_delivery: f64,
    kib_per_conn: f64,
    hold_secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    lost: u64,
}

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ns() -> i64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as i64
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    now_ns();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let server = match &args.server {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| e.to_string())?
                .with_file_name("omni-bench-server"),
        };
        let mut rows: Vec<Row> = Vec::new();
        for run in 0..args.runs {
            for &mode in &args.modes {
                let row = one(&args, &server, mode).await?;
                eprintln!("run {}/{} {row:?}", run + 1, args.runs);
                if let Some(path) = &args.json {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|e| e.to_string())?;
                    writeln!(f, "{}", serde_json::to_string(&row).unwrap_or_default())
                        .map_err(|e| e.to_string())?;
                }
                rows.push(row);
            }
        }
        table(&args, &rows);
        Ok(())
    })
}

/// The median and the min-max of one figure over the runs of one mode.
fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

fn table(args: &Args, rows: &[Row]) {
    println!(
        "\nC={} clients, {} rooms, {} lines, limit {}, {} lines/s posted; medians of {} runs (min-max)\n",
        args.clients, args.rooms, args.lines, args.limit, args.rate, args.runs
    );
    println!(
        "| mode | deliveries/s | CPU µs/delivery | KiB/conn | all rooms held (s) | p50 ms | p99 ms | lost |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &mode in &args.modes {
        let name = format!("{mode:?}").to_lowercase();
        let of: Vec<&Row> = rows.iter().filter(|r| r.mode == name).collect();
        if of.is_empty() {
            continue;
        }
        let cell = |f: &dyn Fn(&Row) -> f64, digits: usize| {
            let mut v: Vec<f64> = of.iter().map(|r| f(r)).collect();
            let (m, lo, hi) = spread(&mut v);
            format!("{m:.digits$} ({lo:.digits$}-{hi:.digits$})")
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&|r| r.deliveries_per_s, 0),
            cell(&|r| r.cpu_us_per_delivery, 2),
            cell(&|r| r.kib_per_conn, 1),
            cell(&|r| r.hold_secs, 2),
            cell(&|r| r.p50_ms, 2),
            cell(&|r| r.p99_ms, 2),
            of.iter().map(|r| r.lost).sum::<u64>(),
        );
    }
}

struct Server {
    child: tokio::process::Child,
    pid: u32,
    url: String,
}

async fn start(path: &PathBuf, args: &Args, mode: RoomsMode) -> Result<Server, String> {
    let mode = format!("{mode:?}").to_lowercase();
    let mut cmd = tokio::process::Command::new(path);
    cmd.args(["--models", "0", "--rooms-mode", &mode])
        .arg("--lines")
        .arg(args.lines.to_string())
        .arg("--rooms")
        .arg(args.rooms.to_string());
    let (child, addr) = omni_bench::child::spawn_listening(cmd).await?;
    let pid = child.id().ok_or("the server exited")?;
    Ok(Server {
        child,
        pid,
        url: format!("ws://{addr}/omni"),
    })
}

/// The messages of one text frame.
fn messages(msg: Message) -> Vec<Value> {
    let Message::Text(text) = msg else {
        return Vec::new();
    };
    match serde_json::from_str(text.as_str()) {
        Ok(Value::Array(items)) => items,
        Ok(one) => vec![one],
        Err(_) => Vec::new(),
    }
}

/// Reads until a message satisfies `done`.
async fn read_until(ws: &mut Ws, done: impl Fn(&Value) -> bool) -> Result<(), String> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(120), ws.next())
            .await
            .map_err(|_| "no answer within 120 s".to_string())?
            .ok_or("closed")?
            .map_err(|e| e.to_string())?;
        if messages(msg).iter().any(&done) {
            return Ok(());
        }
    }
}

/// Connects one client and makes it hold room `room`.
async fn hold(url: &str, room: usize, limit: usize, mode: RoomsMode) -> Result<Ws, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    read_until(&mut ws, |m| m["t"] == "snapshot").await?;
    let room = format!("r{room}");
    let msg = match mode {
        RoomsMode::Query => json!({"t": "query", "id": 1, "c": "lines", "q": "room",
            "where": {"room": room}, "order": [["oid", "desc"]], "limit": limit}),
        RoomsMode::Channels => json!({"t": "sub", "id": 1, "c": "lines", "ch": room}),
    };
    ws.send(Message::text(msg.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    read_until(&mut ws, |m| m["id"] == 1 && m["t"] == "ack").await?;
    Ok(ws)
}

async fn one(args: &Args, path: &PathBuf, mode: RoomsMode) -> Result<Row, String> {
    let server = start(path, args, mode).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0 = rss_kib(server.pid).unwrap_or(0);
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut joins = Vec::new();
    for i in 0..args.clients {
        let (url, gate) = (server.url.clone(), gate.clone());
        let (rooms, limit) = (args.rooms.max(1), args.limit);
        joins.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            hold(&url, i % rooms, limit, mode).await
        }));
    }
    let mut clients = Vec::new();
    for j in joins {
        clients.push(j.await.map_err(|e| e.to_string())??);
    }
    let hold_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_kib(server.pid).unwrap_or(0);

    // The measured window, by the writer's send time: lines sent in it are counted wherever
    // they arrive (0: not started, or not ended).
    let window = Arc::new((AtomicI64::new(0), AtomicI64::new(0)));
    let in_window = |w: &(AtomicI64, AtomicI64), ts: i64| {
        let (start, end) = (w.0.load(Relaxed), w.1.load(Relaxed));
        start != 0 && ts >= start && (end == 0 || ts < end)
    };
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // One histogram for all (in µs): ten thousand of their own would take gigabytes.
    let hist = Arc::new(parking_lot::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
    ));
    let mut readers = Vec::new();
    for mut ws in clients {
        let (window, delivered, mut stop) = (window.clone(), delivered.clone(), stop_rx.clone());
        let hist = hist.clone();
        readers.push(tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = stop.changed() => break,
                    m = ws.next() => match m { Some(Ok(m)) => m, _ => break },
                };
                for m in messages(msg) {
                    let sent = m["m"]["ts"].as_i64().unwrap_or(0);
                    if m["t"] == "add" && m["c"] == "lines" && in_window(&window, sent) {
                        delivered.fetch_add(1, Relaxed);
                        let _ = hist.lock().record(((now_ns() - sent) / 1000).max(1) as u64);
                    }
                }
            }
        }));
    }

    // The writer.
    let (mut writer, _) = tokio_tungstenite::connect_async(&server.url)
        .await
        .map_err(|e| e.to_string())?;
    read_until(&mut writer, |m| m["t"] == "snapshot").await?;
    let (mut sink, mut stream) = writer.split();
    let acks = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let posted = Arc::new(AtomicU64::new(0));
    let expected = Arc::new(AtomicU64::new(0));
    let (rate, rooms, clients_n) = (args.rate, args.rooms.max(1), args.clients);
    let (posted2, expected2, window2) = (posted.clone(), expected.clone(), window.clone());
    let mut wstop = stop_rx.clone();
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = wstop.changed() => break,
                _ = tick.tick() => {}
            }
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let room = (seed >> 33) as usize % rooms;
            n += 1;
            let ts = now_ns();
            let msg = json!({"t": "add", "id": n, "c": "lines", "tmp": format!("t{n}"),
                "m": {"room": format!("r{room}"), "text": format!("post {n}"), "ts": ts}});
            if in_window(&window2, ts) {
                // Clients of this room: those with i % rooms == room.
                let holders = clients_n / rooms + usize::from(room < clients_n % rooms);
                expected2.fetch_add(holders as u64, Relaxed);
            }
            posted2.fetch_add(1, Relaxed);
            if sink.send(Message::text(msg.to_string())).await.is_err() {
                break;
            }
        }
    });

    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let ticks = clock_ticks_per_second() as f64;
    let cpu0 = cpu_ticks(server.pid).unwrap_or(0);
    let posted0 = posted.load(Relaxed);
    let t0 = Instant::now();
    window.0.store(now_ns(), Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.secs)).await;
    window.1.store(now_ns(), Relaxed);
    let cpu1 = cpu_ticks(server.pid).unwrap_or(0);
    let secs = t0.elapsed().as_secs_f64();
    let posted_in_window = posted.load(Relaxed) - posted0;
    // Let the last posts arrive before counting what is missing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);
    let _ = writer.await;
    acks.abort();
    for r in readers {
        let _ = r.await;
    }
    let hist = hist.lock();
    drop(server.child);
    let n = delivered.load(Relaxed);
    let cpu_s = cpu1.saturating_sub(cpu0) as f64 / ticks;
    Ok(Row {
        mode: format!("{mode:?}").to_lowercase(),
        clients: args.clients,
        posts_per_s: posted_in_window as f64 / secs,
        deliveries_per_s: n as f64 / secs,
        cpu_us_per_delivery: if n > 0 { cpu_s * 1e6 / n as f64 } else { 0.0 },
        kib_per_conn: rss1.saturating_sub(rss0) as f64 / args.clients as f64,
        hold_secs,
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1e3,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1e3,
        lost: expected.load(Relaxed).saturating_sub(n),
    })
}
