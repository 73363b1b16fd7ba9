//! The sending half of a connection: a task of its own, woken only by the connection's outbox,
//! that drains it into frames (each ending with its log position when due) and writes them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

use crate::ids::ConnId;
use crate::outbox::{Drain, Outbox, frame};
use crate::protocol::encode as wire;

use super::Shared;
use super::connection::Tx;

/// Sends a final `error` message, then a close frame with `code` and the same reason (a close
/// reason is at most 123 bytes: cut at a character boundary).
async fn close(tx: &mut Tx, code: CloseCode, reason: &str) {
    let _ = tx.send(text(&wire::error(None, reason))).await;
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].to_owned().into(),
    };
    let _ = tx.send(Message::Close(Some(frame))).await;
    let _ = tx.flush().await;
}

/// A text frame sharing the encoded bytes (they are JSON, so UTF-8; checked, never copied).
pub(super) fn text(bytes: &Bytes) -> Message {
    match tokio_tungstenite::tungstenite::Utf8Bytes::try_from(bytes.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::text(String::from_utf8_lossy(bytes).into_owned()),
    }
}

/// Messages longer than this go out in fragments (RFC 6455 continuation frames, which every
/// client reassembles). The socket's write buffer grows to the largest frame it writes and
/// keeps that capacity for the connection's life: one snapshot of 1,000 models would otherwise
/// keep about 60 KB per connection.
const FRAGMENT: usize = 16 * 1024;

/// The size of those fragments. Smaller than [`FRAGMENT`], so that a long message (a snapshot,
/// usually sent once) leaves a small buffer behind, while the frames of ordinary deliveries up
/// to `FRAGMENT` still go out whole, in one write each.
const FRAGMENT_SIZE: usize = 4 * 1024;

/// Sends one message, in fragments if it is long (see [`FRAGMENT`]).
async fn send_message(tx: &mut Tx, bytes: &Bytes) -> bool {
    if bytes.len() <= FRAGMENT {
        return tx.send(text(bytes)).await.is_ok();
    }
    let mut start = 0;
    while start < bytes.len() {
        let end = (start + FRAGMENT_SIZE).min(bytes.len());
        let opcode = if start == 0 {
            Data::Text
        } else {
            Data::Continue
        };
        let frame = Frame::message(
            bytes.slice(start..end),
            OpCode::Data(opcode),
            end == bytes.len(),
        );
        if tx.feed(Message::Frame(frame)).await.is_err() {
            return false;
        }
        start = end;
    }
    tx.flush().await.is_ok()
}

/// Every how many frames a client is told its log position (`at`) when only the sequence moved:
/// an `at` in every frame cost 4 % of the deliveries/s at the benchmark's maximum rate, and a
/// position a few frames old only makes a resume send again the models of the commits since.
const TELL_EVERY: u32 = 8;

/// The sending half of a connection: drains its outbox into frames until the outbox is closed
/// or kicked, or the socket fails; then closes the socket.
pub(super) struct Sender<S> {
    pub(super) shared: Arc<Shared<S>>,
    pub(super) id: ConnId,
    pub(super) outbox: Arc<Outbox>,
    /// Whether frames tell the client their log position (a resumable connection).
    pub(super) tag: bool,
    /// The log position and view count the last frame told the client.
    pub(super) told: (u64, u64),
    /// Frames sent since.
    pub(super) untold: u32,
}

impl<S: Default + Send + Sync + 'static> Sender<S> {
    /// Returns why it stopped: `dropped` (the socket failed, or it was told to let go) or
    /// `server` (the outbox was closed).
    pub(super) async fn run(mut self, mut tx: Tx) -> &'static str {
        let reason = self.send(&mut tx).await;
        if reason == "server"
            && let Some((code, text)) = self.outbox.last_words()
        {
            close(&mut tx, CloseCode::from(code), &text).await;
        }
        let _ = tx.close().await;
        reason
    }

    async fn send(&mut self, tx: &mut Tx) -> &'static str {
        let id = self.id;
        let mut pending = Vec::new();
        let coalesce = self.shared.config.coalesce;
        let started = tokio::time::Instant::from_std(self.shared.started);
        loop {
            self.outbox.notified().await;
            if !coalesce.is_zero() {
                // Wait for the next window boundary, the same for every connection, so that
                // their timers fire together and what arrived meanwhile goes in this frame.
                let step = coalesce.as_nanos().max(1);
                let next = (started.elapsed().as_nanos() / step + 1) * step;
                let at = started + std::time::Duration::from_nanos(next as u64);
                tokio::time::sleep_until(at).await;
            }
            loop {
                // Read before draining: every commit up to it is in what is drained (or was sent
                // before), so the frame may say it reflects them.
                let seq = self.shared.published.load(Ordering::Acquire);
                let view = self.outbox.view();
                match self.outbox.drain(&mut pending) {
                    Drain::Items => {
                        let told = pending.len();
                        if self.tag && self.should_tell(seq, view) {
                            pending.push(wire::at(seq, view));
                        }
                        let frame = frame(&pending);
                        let metrics = self.shared.engine.metrics();
                        metrics.frames_sent.inc();
                        metrics.messages_sent.inc_by(told as u64);
                        metrics.bytes_sent.inc_by(frame.len() as u64);
                        pending.clear();
                        if !send_message(tx, &frame).await {
                            return "dropped";
                        }
                    }
                    Drain::Resync => {
                        tracing::debug!(conn = %id, "outbound queue overflowed; resyncing the client");
                        self.shared.engine.resync(id);
                    }
                    Drain::Kicked => return "dropped",
                    Drain::Close => return "server",
                    Drain::Empty => break,
                }
            }
        }
    }

    /// Whether this frame ends with its log position: always when the view count changed (a
    /// stale one would cost a snapshot at a resume), every [`TELL_EVERY`] frames for the
    /// sequence alone (a stale one only makes a resume send a few models again).
    fn should_tell(&mut self, seq: u64, view: u64) -> bool {
        let (told_seq, told_view) = self.told;
        self.untold += 1;
        if view == told_view && (seq == told_seq || self.untold < TELL_EVERY) {
            return false;
        }
        self.told = (seq, view);
        self.untold = 0;
        true
    }
}
