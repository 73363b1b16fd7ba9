//! The reading half of a connection: parses the client's frames, applies the rate limit,
//! answers requests sent again after a resume from the kept answers, runs events side by side,
//! and hands writes to the engine in order (through a writer task when something is ahead).

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{FutureExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::conn::Conn;
use crate::hooks::panic_message;
use crate::ids::ConnId;
use crate::metrics::{EventName, Kind, Reason};
use crate::outbox::Outbox;
use crate::protocol::decode::{self, ClientMsg, CollRequest};
use crate::protocol::encode as wire;

use super::Shared;
use super::connection::{Link, Rx, Tx};
use super::limits::{RateLimit, RateVerdict};
use super::sender::Sender;

/// A client write waiting for its turn: after the events sent before it, and after the
/// connection's earlier writes.
struct Queued {
    req: u64,
    coll: String,
    request: CollRequest,
    options: Option<serde_json::Value>,
    /// Events numbered below this were sent before it.
    after_event: u64,
}

pub(super) struct Pump<'a, S> {
    shared: &'a Arc<Shared<S>>,
    conn: &'a Conn<S>,
    outbox: &'a Arc<Outbox>,
    /// One more than the highest request id the client sent (shared across resumes).
    last_req: &'a AtomicU64,
    /// Requests with ids below this came before a resume: answered from the kept answers.
    floor: u64,
    /// Whether frames tell the client their log position (a resumable connection).
    tag: bool,
    limit: RateLimit,
    events: Arc<InFlight>,
    /// The connection's writer task, started with its first write that must wait.
    writer: Option<(
        tokio::sync::mpsc::UnboundedSender<Queued>,
        tokio::task::JoinHandle<()>,
    )>,
    /// The connection's writes: how many were read, how many are done.
    writes: Arc<Writes>,
}

impl<'a, S: Default + Send + Sync + 'static> Pump<'a, S> {
    pub(super) fn new(shared: &'a Arc<Shared<S>>, link: &'a Link<S>) -> Self {
        Pump {
            shared,
            conn: &link.conn,
            outbox: &link.outbox,
            last_req: &link.last_req,
            floor: link.floor,
            tag: !link.token.is_empty(),
            limit: RateLimit::new(&shared.config),
            events: Arc::new(InFlight::default()),
            writer: None,
            writes: Arc::new(Writes::default()),
        }
    }

    /// Moves messages both ways until the client goes away, floods, or the server closes it.
    /// Returns why it stopped, and the writer task, if one was started, to be awaited.
    pub(super) async fn run(
        mut self,
        tx: Tx,
        rx: &mut Rx,
    ) -> (&'static str, Option<tokio::task::JoinHandle<()>>) {
        let reason = self.pump(tx, rx).await;
        self.shared
            .engine
            .metrics()
            .disconnects
            .get_or_create(&Reason { reason })
            .inc();
        (reason, self.writer.take().map(|(_, task)| task))
    }

    /// Returns why it stopped: `closed` (the client sent a close frame), `dropped` (the socket
    /// ended without one: the network, or a protocol error; or it was resumed on another),
    /// `flood`, `too_big` or `server` (the server closed the connection).
    ///
    /// This task reads; a task of its own sends ([`Sender`]), woken only by the outbox, so a
    /// delivery does not also poll the socket's read side (re-polling it on every wake cost
    /// ~10 % of the CPU at 20 changes/s; docs/BENCHMARKS.md, "The floor").
    async fn pump(&mut self, tx: Tx, rx: &mut Rx) -> &'static str {
        let id = self.conn.id;
        let sender = Sender {
            shared: self.shared.clone(),
            id,
            outbox: self.outbox.clone(),
            tag: self.tag,
            told: (0, 0),
            untold: 0,
        };
        let mut sending = tokio::spawn(sender.run(tx));
        let reason = loop {
            tokio::select! {
                incoming = rx.next() => match incoming {
                    Some(Ok(msg)) => {
                        if msg.is_close() {
                            break "closed";
                        }
                        if !self.message(msg) {
                            tracing::warn!(conn = %id, "client flooded the server; disconnecting it");
                            let reason = "message rate limit exceeded repeatedly; disconnecting";
                            self.outbox.close_with(CloseCode::Policy.into(), reason.to_owned());
                            let _ = (&mut sending).await;
                            return "flood";
                        }
                    }
                    Some(Err(WsError::Capacity(e))) => {
                        tracing::warn!(conn = %id, error = %e, "client sent an oversized message; disconnecting it");
                        let reason = format!(
                            "message too big: at most {} bytes (Config::max_message_size)",
                            self.shared.config.max_message_size
                        );
                        self.outbox.close_with(CloseCode::Size.into(), reason);
                        let _ = (&mut sending).await;
                        // The rest of the oversized message is unread: closing the socket now
                        // would reset it (RST) and the client could lose the close frame.
                        // Give it a moment to read it.
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        return "too_big";
                    }
                    Some(Err(e)) => {
                        tracing::debug!(conn = %id, error = %e, "websocket error");
                        break "dropped";
                    }
                    None => break "dropped",
                },
                sent = &mut sending => return sent.unwrap_or("dropped"),
            }
        };
        // The reading side ended: the sender lets go of the socket (closing it).
        self.outbox.kick();
        let _ = sending.await;
        reason
    }

    /// Answers a frame that is not a JSON message with an `error`. Counted like any message
    /// (so a flood of them is answered only up to the limit, then cut off); `false` when the
    /// client must be disconnected for flooding.
    fn invalid(&mut self, reason: &str) -> bool {
        self.received("invalid");
        match self.limit.take(1) {
            RateVerdict::Abuse => false,
            RateVerdict::Over { warn } => {
                self.refuse_over_limit(&serde_json::Value::Null, warn);
                true
            }
            RateVerdict::Ok => {
                self.outbox.push_control(wire::error(None, reason));
                true
            }
        }
    }

    /// Parses one frame and handles each message in it, in order. Returns `false` when the
    /// client must be disconnected for flooding.
    fn message(&mut self, msg: Message) -> bool {
        let text = match &msg {
            Message::Text(text) => text.as_str(),
            Message::Binary(_) => {
                return self.invalid("binary frames are not supported: send JSON text frames");
            }
            // Pings are answered by tungstenite; pongs and raw frames carry nothing for us.
            _ => return true,
        };
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return self.invalid(&format!("malformed JSON: {e}")),
        };
        let count = match &value {
            serde_json::Value::Array(items) => items.len().max(1),
            _ => 1,
        };
        match self.limit.take(count) {
            RateVerdict::Ok => {}
            RateVerdict::Over { warn } => {
                self.refuse_over_limit(&value, warn);
                return true;
            }
            RateVerdict::Abuse => return false,
        }
        let items = match value {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        };
        for item in items {
            let decoded = decode::decode(item);
            self.received(match &decoded {
                Err(_) => "invalid",
                Ok(ClientMsg::Event { .. }) => "event",
                Ok(ClientMsg::Coll { request, .. }) => request.kind(),
            });
            let req = match &decoded {
                Ok(ClientMsg::Event { req, .. } | ClientMsg::Coll { req, .. }) => Some(*req),
                Err(_) => None,
            };
            if let Some(req) = req {
                if req < self.floor {
                    // Sent again after a resume: answered as the first time, not done twice
                    // (still running: its answer comes when it is done).
                    if let Some(answer) = self.outbox.answer(req) {
                        self.outbox.push_control(answer);
                    }
                    continue;
                }
                self.last_req
                    .fetch_max(req.saturating_add(1), Ordering::SeqCst);
            }
            match decoded {
                Err(bad) => match bad.req {
                    Some(id) => self
                        .outbox
                        .push_answer(id, wire::error(Some(id), &bad.reason)),
                    None => self.outbox.push_control(wire::error(None, &bad.reason)),
                },
                Ok(ClientMsg::Event { req, name, args }) => self.event(req, name, args),
                Ok(ClientMsg::Coll {
                    req,
                    coll,
                    request,
                    options,
                }) => self.write(Queued {
                    req,
                    coll,
                    request,
                    options,
                    after_event: self.events.started(),
                }),
            }
        }
        true
    }

    /// Counts a received message of `kind` (metrics).
    fn received(&self, kind: &'static str) {
        let metrics = self.shared.engine.metrics();
        metrics.received.get_or_create(&Kind { kind }).inc();
    }

    /// Every dropped request is answered, so no client promise waits forever.
    fn refuse_over_limit(&self, value: &serde_json::Value, warn: bool) {
        let dropped = match value {
            serde_json::Value::Array(items) => items.len().max(1),
            _ => 1,
        };
        let metrics = self.shared.engine.metrics();
        metrics.rate_limited.inc_by(dropped as u64);
        let config = &self.shared.config;
        let reason = format!(
            "message rate limit exceeded ({} per second, burst {}): message dropped, nothing changed",
            config.max_messages_per_second, config.message_burst
        );
        let ids: Vec<u64> = match value {
            serde_json::Value::Array(items) => {
                items.iter().filter_map(|m| m.get("id")?.as_u64()).collect()
            }
            other => other
                .get("id")
                .and_then(|v| v.as_u64())
                .into_iter()
                .collect(),
        };
        if ids.is_empty() && warn {
            self.outbox.push_control(wire::error(None, &reason));
        }
        for id in ids {
            self.outbox.push_answer(id, wire::error(Some(id), &reason));
        }
    }

    /// A request on a collection. A connection's writes apply in the order it sent them, each
    /// after the events it sent before it (as Meteor's methods: an event that sets up the
    /// session comes into force before the writes sent after it). When nothing is ahead of it
    /// and the storage cannot wait, it is handled here at once; otherwise the connection's
    /// writer task takes it, so the pump goes on reading and sending meanwhile.
    fn write(&mut self, q: Queued) {
        let inline = self.writes.idle() && self.events.idle_now() && !self.shared.engine_waits;
        self.writes.started.fetch_add(1, Ordering::SeqCst);
        if inline {
            // The fast path: validated, applied and answered right here.
            let staged = self.shared.engine.client_request(
                self.conn.id,
                q.req,
                &q.coll,
                q.request,
                q.options,
            );
            debug_assert!(staged.is_none(), "the fast path never stages");
            self.writes.finish();
            return;
        }
        let (writer, _) = self.writer.get_or_insert_with(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let task = tokio::spawn(writer(
                self.shared.clone(),
                self.conn.id,
                self.events.clone(),
                self.writes.clone(),
                rx,
            ));
            (tx, task)
        });
        if let Err(unsent) = writer.send(q) {
            self.writes.finish();
            self.outbox.push_control(wire::error(
                Some(unsent.0.req),
                "the server could not take this write (its writer stopped); nothing changed",
            ));
        }
    }

    /// A call of a server event: runs side by side with the connection's other events.
    fn event(&self, req: u64, name: String, args: serde_json::Value) {
        let Some(handler) = self.shared.events.get(&name).cloned() else {
            self.outbox.push_answer(
                req,
                wire::error(Some(req), &format!("unknown event `{name}`")),
            );
            return;
        };
        let conn = self.conn.clone();
        let world = conn.world();
        let outbox = self.outbox.clone();
        let running = self.events.start();
        // An event runs after the writes the client sent before it (as it would see them).
        let writes = self.writes.clone();
        let after = writes.started.load(Ordering::SeqCst);
        tokio::spawn(async move {
            let _running = running;
            writes.finished_up_to(after).await;
            let started = std::time::Instant::now();
            let result = AssertUnwindSafe(handler(conn.clone(), world, args))
                .catch_unwind()
                .await;
            let label = EventName {
                event: name.clone(),
            };
            conn.engine
                .metrics()
                .event_seconds
                .get_or_create(&label)
                .observe(started.elapsed().as_secs_f64());
            let msg = match result {
                Ok(Ok(json)) => wire::reply_ok(req, &json),
                Ok(Err(e)) => wire::reply_err(req, &e),
                Err(panic) => {
                    tracing::error!(event = %name, conn = %conn.id, panic = panic_message(&panic), "event handler panicked");
                    wire::reply_err(req, &format!("event `{name}` failed on the server"))
                }
            };
            outbox.push_answer(req, msg);
        });
    }
}

/// The connection's writer task: its writes, one at a time, in order.
async fn writer<S: Default + Send + Sync + 'static>(
    shared: Arc<Shared<S>>,
    id: ConnId,
    events: Arc<InFlight>,
    writes: Arc<Writes>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Queued>,
) {
    while let Some(q) = rx.recv().await {
        events.finished_below(q.after_event).await;
        let req = q.req;
        let engine = &shared.engine;
        let done = AssertUnwindSafe(async {
            if let Some(staged) = engine.client_request(id, q.req, &q.coll, q.request, q.options) {
                engine.finish(staged).await;
            }
        })
        .catch_unwind()
        .await;
        if let Err(panic) = done {
            tracing::error!(conn = %id, panic = panic_message(&panic), "a write panicked on the server");
            shared.engine.emit(
                id,
                wire::error(
                    Some(req),
                    "the server failed on this write; nothing changed",
                ),
            );
        }
        writes.finish();
    }
}

/// How many writes of a connection were read and how many are done.
#[derive(Default)]
struct Writes {
    started: AtomicU64,
    finished: AtomicU64,
    done: tokio::sync::Notify,
}

impl Writes {
    fn idle(&self) -> bool {
        self.started.load(Ordering::SeqCst) == self.finished.load(Ordering::SeqCst)
    }

    fn finish(&self) {
        self.finished.fetch_add(1, Ordering::SeqCst);
        self.done.notify_waiters();
    }

    /// Waits until the first `n` writes are done.
    async fn finished_up_to(&self, n: u64) {
        loop {
            let done = self.done.notified();
            if self.finished.load(Ordering::SeqCst) >= n {
                return;
            }
            done.await;
        }
    }
}

/// The event handlers of one connection still running, numbered in the order they started.
#[derive(Default)]
struct InFlight {
    next: AtomicU64,
    running: parking_lot::Mutex<BTreeSet<u64>>,
    done: tokio::sync::Notify,
}

impl InFlight {
    fn start(self: &Arc<Self>) -> InFlightGuard {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        self.running.lock().insert(n);
        InFlightGuard(self.clone(), n)
    }

    /// How many events were started so far.
    fn started(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    fn idle_now(&self) -> bool {
        self.running.lock().is_empty()
    }

    /// Waits until every event numbered below `n` has finished.
    async fn finished_below(&self, n: u64) {
        loop {
            let done = self.done.notified();
            if self.running.lock().first().is_none_or(|first| *first >= n) {
                return;
            }
            done.await;
        }
    }
}

/// Marks an event handler finished when dropped (also when it panicked).
struct InFlightGuard(Arc<InFlight>, u64);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.running.lock().remove(&self.1);
        self.0.done.notify_waiters();
    }
}
