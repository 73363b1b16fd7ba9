//! `omni-bench`: the load generator of the 'game' benchmark (docs/BENCHMARKS.md).
//!
//! For each configuration (clients C x models P x rate) it starts `omni-bench-server` as a child
//! process, connects C WebSocket clients, lets W of them change players at a fixed total rate or
//! as fast as the server acknowledges, and measures deliveries (one change reaching one client),
//! latency from the writer's send to each client's receipt, lost and reordered deliveries, the
//! server's CPU time per delivery and memory per connection (from `/proc`), and the time for the
//! C clients to receive the initial state.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::stream::{SplitSink, SplitStream};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use omni_bench::procfs::{clock_ticks_per_second, cpu_ticks, rss_kib};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod load;
mod report;
mod servers;
use load::*;
use report::*;
use servers::{BUCKETS, start_broker, start_node, start_server};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = SplitSink<Ws, Message>;
type Stream = SplitStream<Ws>;
/// A writer's link to its connection, and where the connection's write half and OIDs go.
type WriterHandoff = (Arc<Link>, tokio::sync::oneshot::Sender<(Sink, Vec<u64>)>);

/// How fast writers change players.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rate {
    /// As fast as the server acknowledges (each writer keeps `--window` changes in flight).
    Max,
    /// This many changes per second in total, spread over the writers.
    PerSecond(f64),
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        s.replace('_', "")
            .parse::<f64>()
            .ok()
            .filter(|r| *r > 0.0)
            .map(Rate::PerSecond)
            .ok_or_else(|| format!("`{s}`: expected `max` or a positive number of changes/s"))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Max => f.write_str("max"),
            Rate::PerSecond(r) => write!(f, "{r}/s"),
        }
    }
}

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Load generator of Omni's 'game' benchmark: C clients, P players, W writers",
    long_about = "Runs every combination of --clients x --models x --rate (each --runs times, \
                  each against a fresh server process) and prints one table row per combination \
                  (medians over the runs). See docs/BENCHMARKS.md."
)]
struct Args {
    /// Numbers of clients (connections), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    clients: Vec<usize>,
    /// Numbers of players (models) seeded, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    models: Vec<usize>,
    /// Total change rates, comma-separated: `max` or changes per second (e.g. `1000`).
    #[arg(long, value_delimiter = ',', default_value = "max")]
    rate: Vec<Rate>,
    /// Writers: the first W clients also send changes (each owns the players i with i % W == w).
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Changes each writer may have sent but not yet seen acknowledged.
    #[arg(long, default_value_t = 32)]
    window: u64,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Runs of each configuration; the table shows medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Add one client that reads its snapshot, then stops reading until the end of the run.
    #[arg(long)]
    slow_client: bool,
    /// The server's `max_queue_bytes` (pending bytes per connection before a resync).
    #[arg(long, default_value_t = 4 << 20)]
    max_queue_bytes: usize,
    /// Start the server with `--nodelay` (TCP_NODELAY set by the server binary itself; since
    /// `Server::serve` sets it too, this only matters for older servers: see docs/BENCHMARKS.md).
    #[arg(long)]
    nodelay: bool,
    /// The server's `Config::coalesce` in milliseconds (0: off).
    #[arg(long, default_value_t = 0.0)]
    coalesce_ms: f64,
    /// The server's `Config::socket_read_buffer` in bytes (default: the runtime's default).
    #[arg(long)]
    read_buffer: Option<usize>,
    /// Slow-backend scenario (passed to the server): every write goes through a storage
    /// middleware that waits this many ms per write of the server's own `records` collection,
    /// written by `--slow-writers` server tasks, while the clients measure `players` as usual.
    #[arg(long)]
    slow_backend_ms: Option<u64>,
    /// Server tasks writing `records` in the slow-backend scenario.
    #[arg(long, default_value_t = 8)]
    slow_writers: usize,
    /// Nodes of a cluster (NATS JetStream): 1 is a single server. With more, the writers
    /// connect to the first node and the readers are spread over all of them (client i on node
    /// i % nodes); CPU and memory are the nodes' sum, the broker's CPU is reported apart.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// The nats-server binary for `--nodes` > 1 (default: `$OMNI_NATS_SERVER`).
    #[arg(long, env = "OMNI_NATS_SERVER")]
    nats_server: Option<PathBuf>,
    /// Path of `omni-bench-server` (default: next to this executable).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Worker threads of the server (default: one per core).
    #[arg(long)]
    server_threads: Option<usize>,
    /// Worker threads of the load generator (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Connections opened concurrently while connecting.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Seconds allowed for connecting all clients and for draining at the end.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Write the rows (with every run) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

fn bar(args: &Args, prefix: String, len: u64) -> ProgressBar {
    if args.quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos:>6}/{len:6} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix);
    pb
}

async fn run_one(args: &Args, clients: usize, models: usize, rate: Rate) -> Result<Row, String> {
    let ticks = clock_ticks_per_second() as f64;
    let writers = args.writers.clamp(1, models.min(clients).max(1));
    let scenario = format!(
        "{rate}{}{}{}",
        if args.slow_client { "+slow" } else { "" },
        if args.nodelay { " nodelay" } else { "" },
        if args.nodes > 1 {
            format!(" {} nodes", args.nodes)
        } else {
            String::new()
        }
    );
    let label = format!("C={clients} P={models} {scenario}");
    let (mut servers, broker) = if args.nodes > 1 {
        let broker = start_broker(args).await?;
        let bucket = format!(
            "bench{}x{}",
            std::process::id(),
            BUCKETS.fetch_add(1, Relaxed)
        );
        let mut servers = Vec::new();
        for _ in 0..args.nodes {
            servers.push(start_node(args, models, Some((&broker.url, &bucket))).await?);
            // The first node seeds the bucket; the next ones read it.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        (servers, Some(broker))
    } else {
        (vec![start_server(args, models).await?], None)
    };
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    let cpu_ticks_all = || pids.iter().map(|p| cpu_ticks(*p).unwrap_or(0)).sum::<u64>();
    let rss_all = || pids.iter().map(|p| rss_kib(*p).unwrap_or(0)).sum::<u64>();
    let server_url = |idx: usize, writer: bool| -> Arc<str> {
        if writer {
            servers[0].url.clone()
        } else {
            servers[idx % servers.len()].url.clone()
        }
    };
    // Let the server settle before the base reading.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_base = rss_all();
    let (stop, _) = watch::channel(false);
    let run = Arc::new(Run {
        epoch: Instant::now(),
        measuring: AtomicBool::new(false),
        writers_stop: AtomicBool::new(false),
        deliveries: AtomicU64::new(0),
        lost: AtomicU64::new(0),
        reordered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        snapshots: AtomicUsize::new(0),
        hists: (0..SHARDS)
            .map(|_| {
                Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"))
            })
            .collect(),
        finals: OnceLock::new(),
        stop,
        models,
        failure: Mutex::new(None),
    });

    // Connect the clients; the first `writers` of them also write.
    let pb = bar(args, format!("{label}: connect"), clients as u64);
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    let mut writer_parts = Vec::new();
    for idx in 0..clients {
        let writer = if idx < writers {
            let link = Arc::new(Link::default());
            let (tx, rx) = tokio::sync::oneshot::channel();
            writer_parts.push((link.clone(), rx));
            Some((link, tx))
        } else {
            None
        };
        let task = client(
            idx,
            server_url(idx, writer.is_some()),
            run.clone(),
            gate.clone(),
            writer,
        );
        let run2 = run.clone();
        tasks.push(tokio::spawn(async move {
            let result = task.await;
            if let Err(e) = &result {
                let mut failure = run2.failure.lock().unwrap_or_else(|e| e.into_inner());
                failure.get_or_insert_with(|| e.clone());
            }
            result
        }));
    }
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    loop {
        let n = run.snapshots.load(Relaxed);
        pb.set_position(n as u64);
        if n == clients {
            break;
        }
        if let Some(e) = run.failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
            pb.finish_and_clear();
            return Err(format!("{label}: a client failed while connecting: {e}"));
        }
        if Instant::now() > deadline {
            pb.finish_and_clear();
            return Err(format!(
                "{label}: only {n} of {clients} clients got their snapshot in time"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let initial_state_secs = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    // Idle memory per connection, once the snapshots went out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = rss_all();

    let resume = Arc::new(Notify::new());
    let slow = if args.slow_client {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(slow_client(
            servers[0].url.clone(),
            run.clone(),
            resume.clone(),
            ready_tx,
        ));
        ready_rx
            .await
            .map_err(|_| format!("{label}: the slow client failed to connect"))?;
        Some(task)
    } else {
        None
    };

    // Start the writers.
    let mut writer_tasks = Vec::new();
    for (w, (link, rx)) in writer_parts.into_iter().enumerate() {
        let (sink, oids) = rx.await.map_err(|_| "writer connection lost")?;
        writer_tasks.push(tokio::spawn(writer(
            w,
            writers,
            sink,
            oids,
            link,
            run.clone(),
            rate,
            args.window,
        )));
    }
    let load_start = Instant::now();
    let mut rss_series = Vec::new();
    let sample = |series: &mut Vec<(f64, f64)>| {
        let rss = rss_all() as f64 / 1024.0;
        series.push((load_start.elapsed().as_secs_f64(), rss));
    };
    let pb = bar(
        args,
        format!("{label}: warm-up"),
        (args.warmup * 10.0).ceil() as u64,
    );
    while load_start.elapsed().as_secs_f64() < args.warmup {
        tokio::time::sleep(Duration::from_millis(100)).await;
        pb.inc(1);
        sample(&mut rss_series);
    }
    pb.finish_and_clear();

    // The measured window.
    let pb = bar(
        args,
        format!("{label}: measure"),
        (args.secs * 10.0).ceil() as u64,
    );
    let cpu0 = cpu_ticks_all();
    let broker0 = broker.as_ref().map_or(0, |b| cpu_ticks(b.pid).unwrap_or(0));
    let gen0 = cpu_ticks(std::process::id()).unwrap_or(0);
    let d0 = run.deliveries.load(Relaxed);
    let w_start = Instant::now();
    run.measuring.store(true, Relaxed);
    let mut last = (Instant::now(), d0);
    while w_start.elapsed().as_secs_f64() < args.secs {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let d = run.deliveries.load(Relaxed);
        let dt = last.0.elapsed().as_secs_f64();
        pb.set_message(format!("{:>10.0} deliveries/s", (d - last.1) as f64 / dt));
        last = (Instant::now(), d);
        pb.inc(1);
        sample(&mut rss_series);
    }
    run.measuring.store(false, Relaxed);
    let d1 = run.deliveries.load(Relaxed);
    let cpu1 = cpu_ticks_all();
    let broker1 = broker.as_ref().map_or(0, |b| cpu_ticks(b.pid).unwrap_or(0));
    let gen1 = cpu_ticks(std::process::id()).unwrap_or(0);
    let window = w_start.elapsed().as_secs_f64();
    let rss_end = rss_all();
    pb.finish_and_clear();

    // Stop the writers, wait for their acks and for every delivery.
    run.writers_stop.store(true, Relaxed);
    let mut total_sent = 0;
    let mut finals = vec![0u64; models];
    for t in writer_tasks {
        let written = t
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{label}: {e}"))?;
        total_sent += written.sent;
        for (oid, seq) in written.finals {
            if let Some(f) = finals.get_mut((oid - 1) as usize) {
                *f = seq;
            }
        }
    }
    let expected = total_sent * clients as u64;
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout.min(60.0));
    while run.deliveries.load(Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = run.finals.set(finals);
    let _ = run.stop.send(true);
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failed += 1;
                eprintln!("{label}: client error: {e}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("{label}: client task failed: {e}");
            }
        }
    }
    let slow = match slow {
        Some(task) => {
            resume.notify_one();
            Some(
                task.await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("{label}: slow client: {e}"))?,
            )
        }
        None => None,
    };
    for server in &mut servers {
        let _ = server.child.kill().await;
    }
    drop(broker);

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    for h in &run.hists {
        let h = h.lock().unwrap_or_else(|e| e.into_inner());
        let _ = hist.add(&*h);
    }
    let deliveries = (d1 - d0) as f64;
    // Changes acknowledged during the window: deliveries / clients is exact when nothing is lost.
    let changes_per_sec = deliveries / clients as f64 / window;
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Row {
        scenario,
        clients,
        models,
        writers,
        secs: window,
        changes_per_sec,
        deliveries_per_sec: deliveries / window,
        p50_ms: ms(hist.value_at_quantile(0.50)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        max_ms: ms(hist.max()),
        lost: run.lost.load(Relaxed),
        reordered: run.reordered.load(Relaxed),
        errors: run.errors.load(Relaxed) + failed,
        cpu_us_per_delivery: if deliveries > 0.0 {
            (cpu1 - cpu0) as f64 / ticks * 1e6 / deliveries
        } else {
            0.0
        },
        server_cpu_pct: (cpu1 - cpu0) as f64 / ticks / window * 100.0,
        generator_cpu_pct: (gen1 - gen0) as f64 / ticks / window * 100.0,
        rss_base_mib: rss_base as f64 / 1024.0,
        kib_per_conn: rss_idle.saturating_sub(rss_base) as f64 / clients as f64,
        rss_max_mib: rss_series.iter().map(|s| s.1).fold(0.0, f64::max),
        rss_end_mib: rss_end as f64 / 1024.0,
        initial_state_secs,
        slow,
        nodes: args.nodes.max(1),
        broker_cpu_us_per_commit: (args.nodes > 1 && changes_per_sec > 0.0)
            .then(|| (broker1 - broker0) as f64 / ticks * 1e6 / (changes_per_sec * window)),
        rss_series,
        runs: Vec::new(),
    })
}

fn main() {
    let args = Args::parse();
    // 10,000 clients need 10,000 descriptors here and as many in the server (which inherits it).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("omni-bench: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = rt.block_on(async {
        let mut rows = Vec::new();
        let mut failed = false;
        for &models in &args.models {
            for &clients in &args.clients {
                for &rate in &args.rate {
                    let mut runs = Vec::new();
                    for _ in 0..args.runs.max(1) {
                        match run_one(&args, clients, models, rate).await {
                            Ok(row) => runs.push(row),
                            Err(e) => {
                                eprintln!("omni-bench: {e}");
                                failed = true;
                            }
                        }
                    }
                    if !runs.is_empty() {
                        rows.push(median_row(runs));
                    }
                }
            }
        }
        print_table(&rows);
        if let Some(path) = &args.json {
            match serde_json::to_vec_pretty(&rows) {
                Ok(json) => {
                    if let Err(e) = std::fs::write(path, json) {
                        eprintln!("omni-bench: cannot write {}: {e}", path.display());
                        failed = true;
                    }
                }
                Err(e) => {
                    eprintln!("omni-bench: {e}");
                    failed = true;
                }
            }
        }
        let bad = rows.iter().any(|r| r.lost > 0 || r.reordered > 0);
        if failed || bad { 1 } else { 0 }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}
