//! One client connection, from upgrade to close: its lifecycle. A new connection runs the
//! connect hooks and starts; a resumed one takes a parked connection over; each is served by a
//! reader ([`super::pump`]) and a sender ([`super::sender`]) until its socket ends; then it is
//! parked for a resume or ended (the disconnect hooks run).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::Conn;
use crate::hooks::panic_message;
use crate::ids::ConnId;
use crate::metrics::{Kind, Reason};
use crate::outbox::Outbox;
use crate::protocol::encode as wire;
use crate::upgrade::Socket;

use super::Shared;
use super::pump::Pump;
use super::sender::text;

pub(super) type Tx = futures_util::stream::SplitSink<Socket, Message>;
pub(super) type Rx = futures_util::stream::SplitStream<Socket>;

/// One client connection, from upgrade to close.
pub(super) async fn connection<S: Default + Send + Sync + 'static>(
    shared: Arc<Shared<S>>,
    socket: Socket,
    session: S,
) {
    let id = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed) + 1);
    let outbox = Arc::new(Outbox::new(shared.config.max_queue_bytes));
    shared.engine.connect(id, session, outbox.clone());
    let conn = Conn {
        id,
        engine: shared.engine.clone(),
    };
    tracing::debug!(conn = %id, "client connected");
    let (mut tx, rx) = socket.split();

    for hook in &shared.on_connect {
        if let Err(panic) = AssertUnwindSafe(hook(conn.clone())).catch_unwind().await {
            tracing::error!(conn = %id, panic = panic_message(&panic), "connect hook panicked; closing the connection");
            let msg = wire::error(
                None,
                "the server failed to accept this connection (connect hook failed)",
            );
            let _ = tx.send(text(&msg)).await;
            let reason = Reason {
                reason: "connect_hook",
            };
            let metrics = shared.engine.metrics();
            metrics.disconnects.get_or_create(&reason).inc();
            finish(&shared, &conn, &outbox, None).await;
            let _ = tx.close().await;
            return;
        }
    }
    let resumable = !shared.config.resume_grace.is_zero();
    let token = if resumable {
        super::resume::token()
    } else {
        String::new()
    };
    let last_req = Arc::new(AtomicU64::new(0));
    if resumable {
        let resumable = &shared.resumable;
        resumable.register(&token, id, outbox.clone(), last_req.clone());
    }
    shared.engine.start(id, &token);
    let link = Link {
        conn,
        outbox,
        token,
        last_req,
        floor: 0,
    };
    serve(shared, link, tx, rx).await;
}

/// A socket that resumes a parked connection (its client presented the resume token): the
/// dropped socket's writes finish first, then the client gets what changed since `seq` of
/// `epoch` (or a snapshot), and the connection goes on with its session and channels. Requests
/// it sends again (ids up to the last one the server saw) are answered with their original
/// answer, not carried out twice.
pub(super) async fn resumed<S: Default + Send + Sync + 'static>(
    shared: Arc<Shared<S>>,
    socket: Socket,
    claim: super::resume::Claim,
    token: String,
    at: (u64, u64, u64),
) {
    let (tx, rx) = socket.split();
    if let Some(writer) = claim.writer {
        let _ = writer.await;
    }
    let changes = shared.engine.resume(claim.id, &token, at);
    let kind = if changes { "changes" } else { "snapshot" };
    let metrics = shared.engine.metrics();
    metrics.resumes.get_or_create(&Kind { kind }).inc();
    tracing::debug!(conn = %claim.id, seq = at.1, changes, "client resumed");
    let link = Link {
        conn: Conn {
            id: claim.id,
            engine: shared.engine.clone(),
        },
        outbox: claim.outbox,
        token,
        floor: claim.last_req.load(Ordering::SeqCst),
        last_req: claim.last_req,
    };
    serve(shared, link, tx, rx).await;
}

/// A connection as a socket serves it.
pub(super) struct Link<S> {
    pub(super) conn: Conn<S>,
    pub(super) outbox: Arc<Outbox>,
    /// Its resume token (empty: not resumable).
    pub(super) token: String,
    /// One more than the highest request id its client sent, across resumes.
    pub(super) last_req: Arc<AtomicU64>,
    /// Requests with ids below this were seen before this socket: answered from the kept
    /// answers.
    pub(super) floor: u64,
}

/// Runs the pump until the socket ends; then parks the connection for a resume (the client
/// went away and resume is on) or ends it.
async fn serve<S: Default + Send + Sync + 'static>(
    shared: Arc<Shared<S>>,
    link: Link<S>,
    tx: Tx,
    mut rx: Rx,
) {
    let (reason, writer) = Pump::new(&shared, &link).run(tx, &mut rx).await;
    let Link {
        conn,
        outbox,
        token,
        ..
    } = link;
    // Only a connection lost without a close frame waits: a client that closed it meant it.
    let writer = if reason == "dropped" && !token.is_empty() {
        match park(
            shared.clone(),
            conn.clone(),
            outbox.clone(),
            token.clone(),
            writer,
        ) {
            Ok(()) => return,
            Err(writer) => writer,
        }
    } else {
        writer
    };
    shared.resumable.forget(&token);
    finish(&shared, &conn, &outbox, writer).await;
}

/// Parks a connection for a resume: fan-outs skip it, and unless a socket resumes it within the
/// grace period, it ends then (its disconnect hooks run). The writer back if its token is
/// unknown.
pub(super) fn park<S: Default + Send + Sync + 'static>(
    shared: Arc<Shared<S>>,
    conn: Conn<S>,
    outbox: Arc<Outbox>,
    token: String,
    writer: Option<tokio::task::JoinHandle<()>>,
) -> Result<(), Option<tokio::task::JoinHandle<()>>> {
    let generation = shared.resumable.park(&token, writer)?;
    // The disconnect hooks wait for the grace period: a resume within it is seamless.
    shared.engine.detach(conn.id);
    tracing::debug!(conn = %conn.id, "client dropped; waiting for it to resume");
    let grace = shared.config.resume_grace;
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if let Some(writer) = shared.resumable.expire(&token, generation) {
            finish(&shared, &conn, &outbox, writer).await;
        }
    });
    Ok(())
}

/// A claimed resume whose socket has not started yet. If the HTTP upgrade fails before it does
/// (the client went away again), dropping this parks the connection again, so it is not left
/// claimed forever (with its disconnect hooks never run).
pub(super) struct Unstarted<S: Default + Send + Sync + 'static> {
    armed: Option<Claimed<S>>,
}

/// What a claimed resume needs to be parked again: the server, the connection, its outbox and
/// its token.
struct Claimed<S> {
    shared: Arc<Shared<S>>,
    id: ConnId,
    outbox: Arc<Outbox>,
    token: String,
}

impl<S: Default + Send + Sync + 'static> Unstarted<S> {
    pub(super) fn new(
        shared: Arc<Shared<S>>,
        id: ConnId,
        outbox: Arc<Outbox>,
        token: String,
    ) -> Self {
        Unstarted {
            armed: Some(Claimed {
                shared,
                id,
                outbox,
                token,
            }),
        }
    }

    /// The socket started: nothing to undo.
    pub(super) fn started(mut self) {
        self.armed = None;
    }
}

impl<S: Default + Send + Sync + 'static> Drop for Unstarted<S> {
    fn drop(&mut self) {
        if let Some(Claimed {
            shared,
            id,
            outbox,
            token,
        }) = self.armed.take()
        {
            let conn = Conn {
                id,
                engine: shared.engine.clone(),
            };
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = park(shared, conn, outbox, token, None);
            }
        }
    }
}

/// Ends a connection for good: its queued writes finish, the disconnect hooks run (its session
/// still readable), and the engine forgets it.
async fn finish<S: Default + Send + Sync + 'static>(
    shared: &Arc<Shared<S>>,
    conn: &Conn<S>,
    outbox: &Arc<Outbox>,
    writer: Option<tokio::task::JoinHandle<()>>,
) {
    let id = conn.id;
    shared.engine.leave(id);
    if let Some(writer) = writer {
        let _ = writer.await;
    }
    for hook in &shared.on_disconnect {
        if let Err(panic) = AssertUnwindSafe(hook(conn.clone())).catch_unwind().await {
            tracing::error!(conn = %id, panic = panic_message(&panic), "disconnect hook panicked");
        }
    }
    shared.engine.forget(id);
    outbox.close();
    tracing::debug!(conn = %id, "client disconnected");
}
