//! The server under test of `omni-bench`: the players game reduced to what the benchmark needs.
//!
//! `P` players are seeded (`--models`); every connection may read every player and write any of
//! its public attributes (a benchmark, not a game with rules), so each change is fanned out to
//! every client. The per-connection message rate limit is lifted (`--rate-limit`) so that a few
//! writers can drive the server at its maximum rate.
//!
//! It prints `listening <addr>` on stdout once it accepts connections, and exits when its
//! standard input closes, so it never outlives the load generator that started it.

use std::net::SocketAddr;

use clap::Parser;
use omni_bench::model::{Line, Lines, Player, Players, Record, Records, RoomsMode};
use omni_runtime::storage::{Next, StoreRequest};
use omni_runtime::{Config, Omni};

#[derive(Parser, Debug)]
#[command(about = "Server under test of omni-bench (the 'game' scenario)")]
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
    /// `Config::max_queue_bytes`: pending bytes per connection before it is resynced.
    #[arg(long, default_value_t = 4 << 20)]
    max_queue_bytes: usize,
    /// `Config::max_messages_per_second` (and twice that as burst) per connection.
    #[arg(long, default_value_t = 100_000_000)]
    rate_limit: u32,
    /// Set TCP_NODELAY on the listening socket, which accepted sockets inherit on Linux
    /// (`Server::serve` sets it too; kept to run the generator against older servers).
    #[arg(long)]
    nodelay: bool,
    /// `Config::socket_read_buffer` in bytes (default: the runtime's default).
    #[arg(long)]
    read_buffer: Option<usize>,
    /// Slow-backend scenario: route every write through a storage middleware (so the server
    /// takes its asynchronous storage path) that waits this many milliseconds for each write to
    /// the `records` collection (0: no wait, the baseline of the scenario), while
    /// `--slow-writers` server tasks keep writing records. `players` writes pass at once.
    #[arg(long)]
    slow_backend_ms: Option<u64>,
    /// Server tasks writing `records` in the slow-backend scenario, each one write at a time
    /// and at most one per 50 ms (so with a 50 ms backend, back to back).
    #[arg(long, default_value_t = 8)]
    slow_writers: usize,
    /// Turn resume off (`Config::resume_grace` zero): a dropped client reconnects as a new
    /// connection and gets a snapshot (the baseline of `omni-resume-bench`).
    #[arg(long)]
    no_resume: bool,
    /// Run as a node of a cluster on this NATS server (JetStream on): `players` lives in the
    /// bucket `--bucket`.
    #[arg(long)]
    nats: Option<String>,
    /// The cluster's bucket.
    #[arg(long, default_value = "bench")]
    bucket: String,
    /// The 'rooms' scenario (`omni-rooms-bench`): seed this many chat lines, spread over
    /// `--rooms` rooms, in a collection the clients hold by `--rooms-mode`.
    #[arg(long, default_value_t = 0)]
    lines: usize,
    /// Rooms of the 'rooms' scenario.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// How clients hold a room: a live query or a channel.
    #[arg(long, value_enum, default_value = "query")]
    rooms_mode: RoomsMode,
    /// `Config::coalesce` in milliseconds: a connection's messages gathered into one frame per
    /// window (0: off, the default).
    #[arg(long, default_value_t = 0.0)]
    coalesce_ms: f64,
    /// Keep running when standard input closes.
    #[arg(long)]
    ignore_stdin: bool,
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
    let players = (0..args.models).map(|i| Player {
        name: format!("p{i}"),
        x: (i % 640) as i32,
        y: (i / 640) as i32,
        ..Player::default()
    });
    let config = Config {
        static_dir: None,
        max_queue_bytes: args.max_queue_bytes,
        max_messages_per_second: args.rate_limit,
        message_burst: args.rate_limit.saturating_mul(2),
        max_message_size: 16 << 20,
        // Every client of the benchmark comes from 127.0.0.1.
        max_connections_per_ip: 0,
        resume_grace: if args.no_resume {
            std::time::Duration::ZERO
        } else {
            Config::default().resume_grace
        },
        socket_read_buffer: args
            .read_buffer
            .unwrap_or(Config::default().socket_read_buffer),
        coalesce: std::time::Duration::from_secs_f64(args.coalesce_ms.max(0.0) / 1000.0),
        ..Config::default()
    };
    let mut app = Omni::<()>::new()
        .config(config)
        .collection(Players::with(players));
    if args.lines > 0 {
        let rooms = args.rooms.max(1);
        let lines = (0..args.lines).map(|i| Line {
            room: format!("r{}", i % rooms),
            text: format!("line {i}"),
            ts: 0,
        });
        app = app.collection(Lines::with(lines));
        app = match args.rooms_mode {
            RoomsMode::Query => app.queried::<Lines>(),
            RoomsMode::Channels => app.channels::<Lines>(|l| &l.room),
        };
    }
    if let Some(ms) = args.slow_backend_ms {
        let records = (0..args.slow_writers).map(|_| Record::default());
        app = app.collection(Records::with(records)).middleware(
            move |req: StoreRequest, next: Next| async move {
                if req.collection == "records" && ms > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                next.run(req).await
            },
        );
    }
    if let Some(nats) = &args.nats {
        let cluster = omni_runtime::cluster::Nats::connect(nats)
            .bucket(&args.bucket)
            .open()
            .await
            .map_err(std::io::Error::other)?;
        app = app.persist::<Players>().cluster(cluster);
    }
    let server = app.try_build().map_err(std::io::Error::other)?;
    if args.slow_backend_ms.is_some() {
        let records = server.world().collection::<Records>();
        for (oid, _) in records.all() {
            let records = records.clone();
            tokio::spawn(async move {
                // One write per 50 ms per writer whatever the backend's delay, so the no-wait
                // baseline carries the same load.
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = 0;
                loop {
                    tick.tick().await;
                    n += 1;
                    if records
                        .update(oid, |r| {
                            r.set_n(n);
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    }
    let listener = listen(args.addr, args.nodelay)?;
    let addr = listener.local_addr()?;
    // The load generator reads this line to find the server.
    println!("listening {addr}");
    if !args.ignore_stdin {
        tokio::spawn(async {
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
            std::process::exit(0);
        });
    }
    server.serve(listener).await;
    Ok(())
}

/// A listening socket on `addr`, as `tokio::net::TcpListener::bind` makes it (with a larger
/// backlog for thousands of clients), optionally with TCP_NODELAY.
fn listen(addr: SocketAddr, nodelay: bool) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if nodelay {
        socket.set_tcp_nodelay(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    tokio::net::TcpListener::from_std(socket.into())
}
