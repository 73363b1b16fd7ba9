//! The bounded outbound queue of one connection.
//!
//! The engine pushes encoded messages (shared `Bytes`, encoded once per distinct view) while it
//! holds the world lock; the connection's task drains everything pending into one frame. When
//! the queued state updates exceed the byte limit, they are dropped and the connection is marked
//! for a resync: the task then asks the engine for a fresh snapshot, which carries the latest
//! value of every model (state, not a message log), so memory stays bounded whatever the client's
//! speed.

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

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
    /// The connection's sender must let go of the socket (the connection goes on: resumed on
    /// another socket, or its reader ended).
    Kicked,
}

pub(crate) struct Outbox {
    /// The queue, on cache lines of its own: the engine's fan-out writes it from one core while
    /// the connection's task waits on `notify` from the other. Sharing a line made every push
    /// ~4x dearer (docs/BENCHMARKS.md, "The outbox's cache lines").
    inner: CacheLine<Mutex<Inner>>,
    notify: CacheLine<Notify>,
    limit: usize,
    /// Counts the changes of what the connection holds that are not commits (a snapshot,
    /// `conn.sync()`, a channel), bumped after their messages were queued: frames say which
    /// they reflect, so a resume knows whether its client saw them all.
    view: std::sync::atomic::AtomicU64,
}

/// A value alone on its cache line(s) (128 bytes: two lines, for the adjacent-line prefetcher).
#[repr(align(128))]
struct CacheLine<T>(T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
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
    kicked: bool,
    /// A close code and reason to send before closing (a flood, an oversized message).
    last_words: Option<(u16, String)>,
    /// The last answers to the client's requests, by request id, kept so that a resumed
    /// connection that sends a request again gets the original answer (not a second effect).
    answers: std::collections::VecDeque<(u64, Bytes)>,
}

/// Answers kept per connection for resumed requests.
const KEPT_ANSWERS: usize = 256;

/// Control messages a connection may have pending while overflowed before it is dropped.
const MAX_CONTROL: usize = 4096;

impl Outbox {
    pub(crate) fn new(limit: usize) -> Self {
        Outbox {
            inner: CacheLine(Mutex::new(Inner::default())),
            notify: CacheLine(Notify::new()),
            limit,
            view: std::sync::atomic::AtomicU64::new(0),
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

    /// Marks a change of what the connection holds that is not a commit, after its messages
    /// were queued.
    pub(crate) fn view_changed(&self) {
        self.view.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// How many such changes were queued so far.
    pub(crate) fn view(&self) -> u64 {
        self.view.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Queues the answer to request `id` (ack, created, reject, reply, error) and keeps it for a
    /// resumed connection that asks again.
    pub(crate) fn push_answer(&self, id: u64, msg: Bytes) {
        {
            let mut inner = self.inner.lock();
            if inner.answers.len() >= KEPT_ANSWERS {
                inner.answers.pop_front();
            }
            inner.answers.push_back((id, msg.clone()));
        }
        self.push_control(msg);
    }

    /// The kept answer to request `id`, if any.
    pub(crate) fn answer(&self, id: u64) -> Option<Bytes> {
        let inner = self.inner.lock();
        inner
            .answers
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|(_, m)| m.clone())
    }

    /// A resumed connection takes the queue over: whatever was pending for the dropped socket
    /// is dropped (the resume sends what changed instead); the kept answers stay.
    pub(crate) fn reopen(&self) {
        let mut inner = self.inner.lock();
        inner.items.clear();
        inner.control.clear();
        inner.bytes = 0;
        inner.overflowed = false;
        inner.closed = false;
        inner.kicked = false;
        inner.last_words = None;
    }

    /// Replaces everything pending with `msgs` (after a resync snapshot was built), then the
    /// control messages kept during the overflow.
    pub(crate) fn reset_with(&self, msgs: impl IntoIterator<Item = Bytes>) {
        let mut inner = self.inner.lock();
        let control = std::mem::take(&mut inner.control);
        inner.items.clear();
        inner.bytes = 0;
        inner.overflowed = false;
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

    /// Closes it with a close code and reason for the client (sent after an `error` message).
    pub(crate) fn close_with(&self, code: u16, reason: String) {
        {
            let mut inner = self.inner.lock();
            inner.closed = true;
            inner.last_words = Some((code, reason));
        }
        self.notify.notify_one();
    }

    /// The close code and reason to send, if the server closed the connection with one.
    pub(crate) fn last_words(&self) -> Option<(u16, String)> {
        self.inner.lock().last_words.take()
    }

    /// Tells the sender of the current socket to let go of it; [`Outbox::reopen`] undoes it.
    pub(crate) fn kick(&self) {
        self.inner.lock().kicked = true;
        self.notify.notify_one();
    }

    /// Moves every pending message into `out`.
    pub(crate) fn drain(&self, out: &mut Vec<Bytes>) -> Drain {
        let mut inner = self.inner.lock();
        if inner.kicked {
            return Drain::Kicked;
        }
        if inner.closed {
            return Drain::Close;
        }
        if inner.overflowed {
            return Drain::Resync;
        }
        if inner.items.is_empty() {
            return Drain::Empty;
        }
        let inner = &mut *inner;
        inner.bytes = 0;
        out.extend(inner.items.drain(..).map(|item| item.msg));
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
mod overflow_tests {
    use super::*;

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
