//! The bounded outbound queue of one connection.
//!
//! The engine pushes encoded messages (shared `Bytes`, encoded once per distinct view) while it
//! holds the world lock; the connection's task drains everything pending into one frame. When
//! the queued state updates exceed the byte limit, they are dropped and the connection is marked
//! for a resync: the task then asks the engine for a fresh snapshot, which carries the latest
//! value of every model (state, not a message log), so memory stays bounded whatever the client's
//! speed.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::storage::Ticket;

/// What the connection task finds when it drains the outbox.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Drain {
    /// Messages to send, in order, were moved into the buffer.
    Items,
    /// State updates were dropped: the connection needs a resync (control messages that came
    /// with it are in the buffer and must be sent after the resync snapshot).
    Resync,
    /// The connection must close (too many control messages pending, or server shutdown).
    Close,
    /// Nothing pending.
    Empty,
}

pub(crate) struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    limit: usize,
}

/// A queued message; `control` marks answers to the client's own requests, which are never
/// dropped.
struct Item {
    msg: Bytes,
    control: bool,
}

#[derive(Default)]
struct Inner {
    items: Vec<Item>,
    bytes: usize,
    /// Replies, acks and rejects kept while state updates are dropped, sent after the resync.
    control: Vec<Bytes>,
    overflowed: bool,
    closed: bool,
    /// Group commit: items from this index on wait until the storage made write `.1` durable.
    barrier: Option<(usize, u64)>,
    /// An error to send before closing.
    last_words: Option<Bytes>,
}

/// Control messages a connection may have pending while overflowed before it is dropped.
const MAX_CONTROL: usize = 4096;

impl Outbox {
    pub(crate) fn new(limit: usize) -> Self {
        Outbox {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            limit,
        }
    }

    /// Queues a state update (add, change, remove, snapshot, emit).
    pub(crate) fn push(&self, msg: Bytes) {
        let mut inner = self.inner.lock();
        if inner.closed || inner.overflowed {
            return;
        }
        if inner.bytes + msg.len() > self.limit && !inner.items.is_empty() {
            inner.overflowed = true;
            // State updates are dropped (the resync snapshot replaces them); answers are kept,
            // in order, to follow the snapshot.
            let items = std::mem::take(&mut inner.items);
            let mut kept: Vec<Bytes> = items
                .into_iter()
                .filter(|i| i.control)
                .map(|i| i.msg)
                .collect();
            kept.append(&mut inner.control);
            inner.control = kept;
            inner.bytes = 0;
            if let Some(barrier) = &mut inner.barrier {
                barrier.0 = 0;
            }
        } else {
            inner.bytes += msg.len();
            inner.items.push(Item {
                msg,
                control: false,
            });
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// Queues an answer to one of this client's requests (ack, created, reject, reply, error).
    /// Answers are never dropped; a client that lets too many pile up is disconnected.
    pub(crate) fn push_control(&self, msg: Bytes) {
        let mut inner = self.inner.lock();
        if inner.closed {
            return;
        }
        if inner.overflowed {
            if inner.control.len() >= MAX_CONTROL {
                inner.closed = true;
            } else {
                inner.control.push(msg);
            }
        } else {
            inner.bytes += msg.len();
            inner.items.push(Item { msg, control: true });
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// Group commit: everything queued from now on waits until the storage reports the ticket's
    /// write durable. If it fails instead, the client gets an error and is disconnected (its
    /// write was applied in memory but is not on disk; a reconnect shows it the server state).
    pub(crate) fn hold(this: &Arc<Outbox>, ticket: Ticket) {
        {
            let mut inner = this.inner.lock();
            let at = inner.items.len();
            let barrier = inner.barrier.get_or_insert((at, ticket.seq));
            barrier.1 = barrier.1.max(ticket.seq);
        }
        let weak: Weak<Outbox> = Arc::downgrade(this);
        let seq = ticket.seq;
        ticket.watch.when(
            seq,
            Box::new(move |result| {
                if let Some(outbox) = weak.upgrade() {
                    outbox.release(seq, result);
                }
            }),
        );
    }

    fn release(&self, seq: u64, result: Result<(), String>) {
        let mut inner = self.inner.lock();
        match result {
            Ok(()) => {
                if inner.barrier.is_some_and(|(_, s)| s <= seq) {
                    inner.barrier = None;
                }
            }
            Err(reason) => {
                tracing::error!(
                    reason,
                    "a write could not be made durable; closing the connection that made it"
                );
                inner.barrier = None;
                inner.last_words = Some(crate::wire::error(
                    None,
                    &format!(
                        "the server could not store your change durably ({reason}); reconnect to see the server state"
                    ),
                ));
                inner.closed = true;
            }
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// Replaces everything pending with `msgs` (after a resync snapshot was built), then the
    /// control messages kept during the overflow.
    pub(crate) fn reset_with(&self, msgs: impl IntoIterator<Item = Bytes>) {
        let mut inner = self.inner.lock();
        let control = std::mem::take(&mut inner.control);
        inner.items.clear();
        inner.bytes = 0;
        inner.overflowed = false;
        if let Some(barrier) = &mut inner.barrier {
            barrier.0 = 0;
        }
        for m in msgs {
            inner.bytes += m.len();
            inner.items.push(Item {
                msg: m,
                control: false,
            });
        }
        for m in control {
            inner.bytes += m.len();
            inner.items.push(Item {
                msg: m,
                control: true,
            });
        }
        drop(inner);
        self.notify.notify_one();
    }

    pub(crate) fn close(&self) {
        self.inner.lock().closed = true;
        self.notify.notify_one();
    }

    /// Moves pending messages into `out` (those before a group-commit barrier).
    pub(crate) fn drain(&self, out: &mut Vec<Bytes>) -> Drain {
        let mut inner = self.inner.lock();
        if inner.closed {
            // Only a last error (a write that could not be made durable) goes out first.
            return match inner.last_words.take() {
                Some(msg) => {
                    out.push(msg);
                    Drain::Items
                }
                None => Drain::Close,
            };
        }
        if inner.overflowed {
            return Drain::Resync;
        }
        let ready = match inner.barrier {
            Some((at, _)) => at,
            None => inner.items.len(),
        };
        if ready == 0 {
            return Drain::Empty;
        }
        let inner = &mut *inner;
        for item in inner.items.drain(..ready) {
            inner.bytes -= item.msg.len();
            out.push(item.msg);
        }
        if let Some(barrier) = &mut inner.barrier {
            barrier.0 = 0;
        }
        Drain::Items
    }

    /// Waits until something was pushed since the last call.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await
    }

    #[cfg(test)]
    pub(crate) fn pending_bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

/// Joins messages into one frame: a single message as itself, several as a JSON array.
pub(crate) fn frame(items: &[Bytes]) -> Bytes {
    match items {
        [one] => one.clone(),
        _ => {
            let len = items.iter().map(|b| b.len() + 1).sum::<usize>() + 1;
            let mut buf = Vec::with_capacity(len);
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_drops_state_keeps_control_and_resyncs() {
        let ob = Outbox::new(10);
        ob.push(Bytes::from_static(b"123456"));
        ob.push(Bytes::from_static(b"123456"));
        ob.push_control(Bytes::from_static(b"ack"));
        ob.push(Bytes::from_static(b"more"));
        let mut out = Vec::new();
        assert_eq!(ob.drain(&mut out), Drain::Resync);
        assert!(out.is_empty());
        ob.reset_with([Bytes::from_static(b"snap")]);
        assert_eq!(ob.drain(&mut out), Drain::Items);
        assert_eq!(
            out,
            vec![Bytes::from_static(b"snap"), Bytes::from_static(b"ack")]
        );
        assert_eq!(ob.pending_bytes(), 0);
    }

    #[test]
    fn frames_one_or_many() {
        assert_eq!(
            frame(&[Bytes::from_static(b"{}")]),
            Bytes::from_static(b"{}")
        );
        let two = [Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"{}")];
        assert_eq!(frame(&two), Bytes::from_static(b"[{\"a\":1},{}]"));
    }
}

#[cfg(test)]
mod hold_tests {
    use super::*;
    use crate::storage::Durable;

    #[test]
    fn a_held_outbox_releases_in_order_once_durable() {
        let ob = Arc::new(Outbox::new(1 << 20));
        let watch = Arc::new(Durable::default());
        ob.push(Bytes::from_static(b"before"));
        Outbox::hold(
            &ob,
            Ticket {
                seq: 2,
                watch: watch.clone(),
            },
        );
        ob.push_control(Bytes::from_static(b"ack"));
        ob.push(Bytes::from_static(b"after"));
        let mut out = Vec::new();
        assert_eq!(ob.drain(&mut out), Drain::Items);
        assert_eq!(out, [Bytes::from_static(b"before")]);
        out.clear();
        assert_eq!(ob.drain(&mut out), Drain::Empty, "held until durable");
        watch.advance(1);
        assert_eq!(ob.drain(&mut out), Drain::Empty, "seq 1 is not enough");
        watch.advance(2);
        assert_eq!(ob.drain(&mut out), Drain::Items);
        assert_eq!(
            out,
            [Bytes::from_static(b"ack"), Bytes::from_static(b"after")]
        );
    }

    #[test]
    fn a_failed_commit_sends_an_error_then_closes() {
        let ob = Arc::new(Outbox::new(1 << 20));
        let watch = Arc::new(Durable::default());
        Outbox::hold(
            &ob,
            Ticket {
                seq: 1,
                watch: watch.clone(),
            },
        );
        ob.push_control(Bytes::from_static(b"ack"));
        watch.fail(1, "disk full");
        let mut out = Vec::new();
        assert_eq!(ob.drain(&mut out), Drain::Items);
        assert!(String::from_utf8_lossy(&out[0]).contains("disk full"));
        assert_eq!(out.len(), 1, "the unconfirmed ack is never sent");
        assert_eq!(ob.drain(&mut out), Drain::Close);
    }

    #[test]
    fn overflow_keeps_answers_queued_before_it() {
        let ob = Outbox::new(10);
        ob.push_control(Bytes::from_static(b"ack1"));
        ob.push(Bytes::from_static(b"12345678"));
        ob.push(Bytes::from_static(b"12345678"));
        let mut out = Vec::new();
        assert_eq!(ob.drain(&mut out), Drain::Resync);
        ob.reset_with([Bytes::from_static(b"snap")]);
        assert_eq!(ob.drain(&mut out), Drain::Items);
        assert_eq!(
            out,
            [Bytes::from_static(b"snap"), Bytes::from_static(b"ack1")]
        );
    }
}
