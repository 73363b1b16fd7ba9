//! A server's limits and switches.

use std::path::PathBuf;

/// Limits and switches of a server. Every field has a documented default.
#[derive(Debug, Clone)]
pub struct Config {
    /// Serve a readable client (`true`) or a minified, compressed, cached one. Default: `false`.
    pub development: bool,
    /// Path segment of the WebSocket endpoint. Default: `"omni"`.
    pub ws_path: String,
    /// Directory served as static files at `/`, if any. Default: `Some("public")`.
    pub static_dir: Option<PathBuf>,
    /// Largest accepted WebSocket message, in bytes. Default: 1 MiB.
    pub max_message_size: usize,
    /// Bytes of pending state updates per connection before they are dropped and the client is
    /// resynced with a fresh snapshot once it reads again. Default: 4 MiB.
    pub max_queue_bytes: usize,
    /// Sustained client messages per second per connection (each message of a batch counts).
    /// Default: 2,000.
    pub max_messages_per_second: u32,
    /// Messages a connection may send in a burst above the sustained rate; a client over it gets
    /// an `error`, and one that goes on to twice this burst is disconnected. Default: 4,000.
    pub message_burst: u32,
    /// Origins allowed to open the WebSocket (`https://example.com`). Empty: only the same origin
    /// as the `Host` header. Requests without an `Origin` header (non-browser clients) are
    /// allowed. A refused origin gets HTTP 403. Default: empty.
    pub allowed_origins: Vec<String>,
    /// Open WebSocket connections allowed from one client IP address; one more is answered with
    /// HTTP 429 before the upgrade. `0`: no limit. Behind a reverse proxy every client has the
    /// proxy's address: raise it or set 0 there. Default: 256.
    pub max_connections_per_ip: usize,
    /// Bytes each WebSocket reads from its socket at a time (tungstenite's read buffer; it
    /// grows while a larger message arrives). It is most of what an idle connection costs
    /// (7.6 KiB each at 4 KiB, 15,000 connections), but below 4 KiB throughput collapses once
    /// the server is saturated (docs/BENCHMARKS.md). Default: 4 KiB.
    pub socket_read_buffer: usize,
    /// Path at which the Prometheus metrics are served (OpenMetrics text, `GET`), e.g.
    /// `"/metrics"`; set it with [`Omni::metrics`](crate::Omni::metrics). The metrics are
    /// counted either way; [`Server::metrics`](crate::Server::metrics) returns the same text to
    /// serve elsewhere (another port, behind authentication). Default: `None` (not served).
    pub metrics_path: Option<String>,
    /// How long a connection whose client dropped waits to be resumed (docs/PROTOCOL.md,
    /// "Resume"): its session, channels and kept answers stay, the disconnect hooks wait, and a
    /// client that reconnects with the connection's resume token within it gets only what changed.
    /// `Duration::ZERO`: no resume (the disconnect hooks run at the drop). Default: 60 s.
    pub resume_grace: std::time::Duration,
    /// Commits the server remembers (which model each touched) for resuming clients; a client
    /// that missed more gets a snapshot. About 24 bytes each. Default: 10,000.
    pub resume_history: usize,
    /// The largest `limit` of a live query, and the limit of a query without one. Default:
    /// 10,000.
    pub max_query_limit: usize,
    /// Live queries a connection may hold on one collection at a time. Default: 64.
    pub max_queries: usize,
    /// A window in which the messages for one connection are gathered into one frame: a
    /// connection's sender, woken by a change, waits for the next multiple of this duration
    /// (on one clock for all connections) before it writes. Fewer frames, writes and wake-ups
    /// when changes come faster than this, for at most this much more latency (answers and
    /// closes wait too). `Duration::ZERO`: off, every wake-up writes at once. Default: off.
    pub coalesce: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            development: false,
            ws_path: "omni".to_owned(),
            static_dir: Some(PathBuf::from("public")),
            max_message_size: 1 << 20,
            max_queue_bytes: 4 << 20,
            max_messages_per_second: 2_000,
            message_burst: 4_000,
            allowed_origins: Vec::new(),
            max_connections_per_ip: 256,
            socket_read_buffer: 4 * 1024,
            metrics_path: None,
            resume_grace: std::time::Duration::from_secs(60),
            resume_history: 10_000,
            max_query_limit: 10_000,
            max_queries: 64,
            coalesce: std::time::Duration::ZERO,
        }
    }
}
