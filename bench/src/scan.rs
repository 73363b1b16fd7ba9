//! A lean reader of the server's frames (docs/PROTOCOL.md): it finds each message of a frame
//! by its `{"t":"` prefix and reads only the numbers the benchmark needs, without building a
//! JSON tree. It relies on what the server writes for the benchmark's model: objects start with
//! `"t"`, model objects with `"oid"`, and attribute values are plain numbers or short strings
//! that do not contain these keys.

use std::sync::LazyLock;

use memchr::memmem::Finder;

static MSG: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"{\"t\":\""));
static OID: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"oid\":"));
static MODEL: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"{\"oid\":"));
static SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"seq\":"));
static TS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"ts\":"));
static ID: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"id\":"));

/// One message of a frame, as far as the benchmark cares.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Event {
    /// `hello`.
    Hello,
    /// Start of a `snapshot`; its models follow as [`Event::Model`].
    Snapshot,
    /// A model of the snapshot: its OID and `seq` (0 if absent).
    Model {
        /// OID.
        oid: u64,
        /// The `seq` attribute.
        seq: u64,
    },
    /// A `change`; `seq`/`ts` are `None` when the change did not set them.
    Change {
        /// OID of the changed model.
        oid: u64,
        /// The writer's sequence number.
        seq: Option<u64>,
        /// The writer's send time (ns since the generator's epoch).
        ts: Option<i64>,
    },
    /// An `ack` of request `id`.
    Ack {
        /// Request id.
        id: u64,
    },
    /// A `reject` or `error` (never expected in a benchmark run).
    Refusal,
    /// Any other message type (`add`, `remove`, `emit`, ...).
    Other,
}

fn number(bytes: &[u8]) -> Option<(i64, usize)> {
    let (neg, start) = match bytes.first() {
        Some(b'-') => (true, 1),
        _ => (false, 0),
    };
    let mut n: i64 = 0;
    let mut i = start;
    while let Some(&b) = bytes.get(i) {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.wrapping_mul(10).wrapping_add(i64::from(b - b'0'));
        i += 1;
    }
    if i == start {
        return None;
    }
    Some((if neg { -n } else { n }, i))
}

/// The number following `key` in `hay`, if any.
fn field(hay: &[u8], key: &Finder<'_>) -> Option<i64> {
    let at = key.find(hay)? + key.needle().len();
    number(&hay[at..]).map(|(n, _)| n)
}

/// Calls `f` for each message of a frame (one object or an array of objects), in order.
pub fn scan(frame: &[u8], mut f: impl FnMut(Event)) {
    let mut pos = match MSG.find(frame) {
        Some(p) => p,
        None => return,
    };
    loop {
        let body = pos + MSG.needle().len();
        let next = MSG
            .find(&frame[body..])
            .map(|n| body + n)
            .unwrap_or(frame.len());
        let msg = &frame[body..next];
        let kind_end = memchr::memchr(b'"', msg).unwrap_or(msg.len());
        let rest = &msg[kind_end.min(msg.len())..];
        match &msg[..kind_end] {
            b"change" => {
                if let Some(oid) = field(rest, &OID) {
                    f(Event::Change {
                        oid: oid as u64,
                        seq: field(rest, &SEQ).map(|s| s as u64),
                        ts: field(rest, &TS),
                    });
                }
            }
            b"ack" => f(Event::Ack {
                id: field(rest, &ID).unwrap_or(0) as u64,
            }),
            b"snapshot" => {
                f(Event::Snapshot);
                let mut at = 0;
                while let Some(p) = MODEL.find(&rest[at..]) {
                    let start = at + p + MODEL.needle().len();
                    let Some((oid, len)) = number(&rest[start..]) else {
                        break;
                    };
                    let obj_start = start + len;
                    let obj_end = MODEL
                        .find(&rest[obj_start..])
                        .map(|n| obj_start + n)
                        .unwrap_or(rest.len());
                    let seq = field(&rest[obj_start..obj_end], &SEQ).unwrap_or(0);
                    f(Event::Model {
                        oid: oid as u64,
                        seq: seq as u64,
                    });
                    at = obj_end;
                }
            }
            b"hello" => f(Event::Hello),
            b"reject" | b"error" => f(Event::Refusal),
            _ => f(Event::Other),
        }
        if next >= frame.len() {
            return;
        }
        pos = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(frame: &str) -> Vec<Event> {
        let mut out = Vec::new();
        scan(frame.as_bytes(), |e| out.push(e));
        out
    }

    #[test]
    fn hello_and_snapshot() {
        let frame = r#"[{"t":"hello","v":1,"conn":3},{"t":"snapshot","data":{"players":[{"oid":1,"name":"p0","x":0,"y":0,"seq":0,"ts":0},{"oid":2,"name":"p1","x":1,"y":0,"seq":7,"ts":-5}]}}]"#;
        assert_eq!(
            all(frame),
            vec![
                Event::Hello,
                Event::Snapshot,
                Event::Model { oid: 1, seq: 0 },
                Event::Model { oid: 2, seq: 7 },
            ]
        );
        assert_eq!(
            all(r#"{"t":"snapshot","data":{"players":[]}}"#),
            vec![Event::Snapshot]
        );
    }

    #[test]
    fn changes_acks_and_others() {
        let frame = r#"[{"t":"change","c":"players","oid":12,"set":{"x":3,"y":4,"seq":99,"ts":123456789}},{"t":"ack","id":5},{"t":"change","c":"players","oid":13,"set":{"x":1}},{"t":"reject","id":6,"reason":"no"},{"t":"remove","c":"players","oid":2}]"#;
        assert_eq!(
            all(frame),
            vec![
                Event::Change {
                    oid: 12,
                    seq: Some(99),
                    ts: Some(123456789)
                },
                Event::Ack { id: 5 },
                Event::Change {
                    oid: 13,
                    seq: None,
                    ts: None
                },
                Event::Refusal,
                Event::Other,
            ]
        );
        assert_eq!(all(r#"{"t":"ack","id":42}"#), vec![Event::Ack { id: 42 }]);
    }
}
