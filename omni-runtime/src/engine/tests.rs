//! Engine tests with a hand-written model, independent of the derive.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::collection::{Collection, CollectionPermissions, Seeded};
use crate::error::DecodeError;
use crate::model::{Access, AttrSet, Attribute, Model, Permissions};
use crate::outbox::{Drain, Outbox};
use crate::storage::MemoryStore;

#[derive(Clone, Default, Debug, serde::Serialize, serde::Deserialize)]
struct Counter {
    value: i64,
    secret: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum CounterAttr {
    Value,
    Secret,
}

#[derive(Clone, Debug)]
enum CounterChange {
    Value(i64),
    Secret(i64),
}

impl Attribute for CounterAttr {
    fn index(self) -> usize {
        self as usize
    }
    fn name(self) -> &'static str {
        match self {
            CounterAttr::Value => "value",
            CounterAttr::Secret => "secret",
        }
    }
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "value" => Some(CounterAttr::Value),
            "secret" => Some(CounterAttr::Secret),
            _ => None,
        }
    }
    fn is_readonly(self) -> bool {
        false
    }
}

impl Model for Counter {
    type Attr = CounterAttr;
    type Change = CounterChange;
    type Mut<'a> = &'a Counter;
    const NAME: &'static str = "Counter";
    const ATTRS: &'static [CounterAttr] = &[CounterAttr::Value, CounterAttr::Secret];
    fn change_attr(change: &CounterChange) -> CounterAttr {
        match change {
            CounterChange::Value(_) => CounterAttr::Value,
            CounterChange::Secret(_) => CounterAttr::Secret,
        }
    }
    fn apply(&mut self, change: CounterChange) {
        match change {
            CounterChange::Value(v) => self.value = v,
            CounterChange::Secret(v) => self.secret = v,
        }
    }
    fn write_attr(&self, attr: CounterAttr, out: &mut Vec<u8>) {
        match attr {
            CounterAttr::Value => crate::__private::encode(&self.value, out),
            CounterAttr::Secret => crate::__private::encode(&self.secret, out),
        }
    }
    fn decode_change(
        attr: CounterAttr,
        value: &serde_json::Value,
    ) -> Result<CounterChange, DecodeError> {
        let v = crate::__private::decode::<i64>("Counter", attr.name(), "number (i64)", value)?;
        Ok(match attr {
            CounterAttr::Value => CounterChange::Value(v),
            CounterAttr::Secret => CounterChange::Secret(v),
        })
    }
    fn view_mut<'a>(&'a mut self, _changed: &'a mut AttrSet) -> &'a Counter {
        self
    }
    fn describe(_schema: &mut omni_client_gen::schema::Schema) {}
}

/// Session: whether this connection may read `secret`.
#[derive(Default)]
struct Sess {
    admin: bool,
}

impl Permissions<Sess> for Counter {
    fn can_read(&self, ctx: &Access<'_, Sess, Self>, attr: Option<CounterAttr>) -> bool {
        attr != Some(CounterAttr::Secret) || ctx.session().admin
    }
    fn can_write(&self, _ctx: &Access<'_, Sess, Self>, _change: &CounterChange) -> bool {
        true
    }
}

struct Counters;
impl Collection for Counters {
    type Model = Counter;
    const NAME: &'static str = "counters";
}
impl CollectionPermissions<Sess> for Counters {}

fn engine(conns: &[bool]) -> (Engine<Sess>, Vec<Arc<Outbox>>) {
    let mut state = State::<Sess>::new();
    let store = Store::<Counters, Sess>::new(Seeded::new(Counters, [Counter::default()]), 0);
    state.colls.push(Box::new(store));
    state.load(&MemoryStore).unwrap();
    let engine = Engine::new(state, Storage::default(), Default::default(), None);
    let mut outboxes = Vec::new();
    for (i, admin) in conns.iter().enumerate() {
        let outbox = Arc::new(Outbox::new(1 << 20));
        let id = ConnId::from_raw(i as u64 + 1);
        engine.connect(id, Sess { admin: *admin }, outbox.clone());
        engine.start(id, "");
        drain(&outbox); // hello + snapshot
        outboxes.push(outbox);
    }
    (engine, outboxes)
}

fn drain(outbox: &Outbox) -> Vec<Bytes> {
    let mut out = Vec::new();
    let _ = outbox.drain(&mut out);
    out
}

/// A server update of model 1 through the fast path.
fn update(engine: &Engine<Sess>, f: &mut dyn FnMut(&mut Counter, &mut AttrSet)) {
    let pending = engine.server_write(
        0,
        ServerWrite::Update {
            oid: 1,
            f: &mut |any, changed| f(any.downcast_mut::<Counter>().unwrap(), changed),
            merge: true,
        },
        "test",
    );
    assert!(matches!(pending, Pending::Done(Ok(_))), "applied at once");
}

#[test]
fn one_encoding_per_distinct_view_shared_between_connections() {
    let (engine, outboxes) = engine(&[false, false, true, true, false]);
    update(&engine, &mut |c, changed| {
        c.value = 5;
        c.secret = 9;
        changed.insert(0);
        changed.insert(1);
    });
    let msgs: Vec<Bytes> = outboxes.iter().map(|o| drain(o).pop().unwrap()).collect();
    assert_eq!(
        msgs[0],
        Bytes::from_static(br#"{"t":"change","c":"counters","oid":1,"set":{"value":5}}"#)
    );
    assert_eq!(
        msgs[2],
        Bytes::from_static(
            br#"{"t":"change","c":"counters","oid":1,"set":{"value":5,"secret":9}}"#
        )
    );
    // Same view, same allocation: encoded once, shared.
    assert_eq!(msgs[0].as_ptr(), msgs[1].as_ptr());
    assert_eq!(msgs[0].as_ptr(), msgs[4].as_ptr());
    assert_eq!(msgs[2].as_ptr(), msgs[3].as_ptr());
    assert_ne!(msgs[0].as_ptr(), msgs[2].as_ptr());
}

#[test]
fn a_change_only_to_unreadable_attributes_sends_nothing() {
    let (engine, outboxes) = engine(&[false, true]);
    update(&engine, &mut |c, changed| {
        c.secret = 1;
        changed.insert(1);
    });
    assert!(drain(&outboxes[0]).is_empty());
    assert_eq!(drain(&outboxes[1]).len(), 1);
}

#[test]
fn sync_sends_only_newly_readable_or_unreadable_attributes() {
    let (engine, outboxes) = engine(&[false]);
    let id = ConnId::from_raw(1);
    let admin = |on: bool| {
        engine
            .lock("test")
            .conns
            .get_mut(&id)
            .unwrap()
            .session
            .admin = on
    };
    admin(true);
    engine.sync_conn(id);
    assert_eq!(
        drain(&outboxes[0]),
        vec![
            Bytes::from_static(br#"{"t":"change","c":"counters","oid":1,"set":{"secret":0}}"#),
            Bytes::from_static(br#"{"t":"sync"}"#),
        ]
    );
    engine.sync_conn(id);
    assert!(
        drain(&outboxes[0]).is_empty(),
        "a second sync has nothing to send"
    );
    admin(false);
    engine.sync_conn(id);
    assert_eq!(
        drain(&outboxes[0]),
        vec![
            Bytes::from_static(
                br#"{"t":"change","c":"counters","oid":1,"set":{},"unset":["secret"]}"#
            ),
            Bytes::from_static(br#"{"t":"sync"}"#),
        ]
    );
    assert_eq!(outboxes[0].drain(&mut Vec::new()), Drain::Empty);
}

#[test]
fn setting_the_value_an_attribute_has_sends_nothing() {
    let (engine, outboxes) = engine(&[false, true]);
    let seq = engine.lock("test").log.seq;
    update(&engine, &mut |c, changed| {
        c.value = 0; // what it is already
        changed.insert(0);
    });
    assert!(drain(&outboxes[0]).is_empty());
    assert!(drain(&outboxes[1]).is_empty());
    // Without a codec the engine cannot compare server-only state, so the write is a commit
    // (that sends nothing); what matters to clients is that nothing reaches them.
    assert!(engine.lock("test").log.seq >= seq);
    update(&engine, &mut |c, changed| {
        c.value = 7;
        changed.insert(0);
    });
    assert_eq!(drain(&outboxes[0]).len(), 1);
    assert_eq!(drain(&outboxes[1]).len(), 1);
}

#[tokio::test]
async fn a_client_patch_that_changes_nothing_is_acknowledged_and_sends_nothing() {
    let (engine, outboxes) = engine(&[false, false]);
    let set: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"value":0}"#).unwrap();
    engine.client_request(
        ConnId::from_raw(1),
        9,
        "counters",
        CollRequest::Change { oid: 1, set },
        None,
    );
    assert_eq!(
        drain(&outboxes[0]),
        [Bytes::from_static(br#"{"t":"ack","id":9}"#)],
        "only the ack"
    );
    assert!(drain(&outboxes[1]).is_empty(), "nothing to others");
    let set = serde_json::from_str(r#"{"value":3}"#).unwrap();
    engine.client_request(
        ConnId::from_raw(1),
        10,
        "counters",
        CollRequest::Change { oid: 1, set },
        None,
    );
    assert_eq!(drain(&outboxes[0]).len(), 2, "the change, then the ack");
    assert_eq!(drain(&outboxes[1]).len(), 1, "the change");
}

#[test]
fn snapshots_share_an_encoding_per_view_and_never_a_stale_one() {
    let (engine, _) = engine(&[]);
    let connect = |id: u64, admin: bool| {
        let outbox = Arc::new(Outbox::new(1 << 20));
        engine.connect(ConnId::from_raw(id), Sess { admin }, outbox.clone());
        engine.start(ConnId::from_raw(id), "");
        let text: String = drain(&outbox)
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        let data = text.find("\"data\":").expect("a snapshot");
        text[data..].to_owned()
    };
    let (plain, admin) = (connect(1, false), connect(2, true));
    assert!(
        !plain.contains("secret") && admin.contains("\"secret\":0"),
        "{plain} / {admin}"
    );
    assert_eq!(connect(3, false), plain, "the same view, the same bytes");
    assert_eq!(connect(4, true), admin);
    update(&engine, &mut |c, changed| {
        c.value = 7;
        changed.insert(0);
    });
    // The last snapshot was an admin's: the next admin must not get its (old) bytes.
    let after = connect(5, true);
    assert!(
        after.contains("\"value\":7"),
        "not the cached encoding: {after}"
    );
    assert!(connect(6, false).contains("\"value\":7"));
}

/// A node of a cluster whose log is a fake: publishes take revisions 10, 11, ... once a permit
/// is given, and the test plays the follower.
mod cluster {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::engine::coll::Codec;
    use crate::engine::replica::{Entry, Link, LinkError, Replica};

    struct FakeLog {
        next: AtomicU64,
        /// One permit per answer the log may give.
        answers: Arc<tokio::sync::Semaphore>,
    }

    impl Link for FakeLog {
        fn node(&self) -> u64 {
            7
        }
        fn publish(
            &self,
            _key: String,
            _value: Bytes,
            _expect: u64,
        ) -> crate::storage::BoxFuture<Result<u64, LinkError>> {
            let rev = self.next.fetch_add(1, Ordering::SeqCst);
            let answers = self.answers.clone();
            Box::pin(async move {
                answers.acquire().await.map(|p| p.forget()).ok();
                Ok(rev)
            })
        }
        fn broadcast(&self, _msg: Bytes) {}
    }

    fn node(answers: usize) -> (Engine<Sess>, Arc<Outbox>, Arc<tokio::sync::Semaphore>) {
        let mut state = State::<Sess>::new();
        let mut store =
            Store::<Counters, Sess>::new(Seeded::new(Counters, [Counter::default()]), 0);
        store.codec = Some(Codec {
            encode: |m| serde_json::to_vec(m).map_err(|e| e.to_string()),
            decode: |b| serde_json::from_slice(b).map_err(|e| e.to_string()),
        });
        state.colls.push(Box::new(store));
        state.load(&MemoryStore).unwrap();
        let mut storage = Storage::default();
        storage.set_backend(Arc::new(MemoryStore));
        let answers = Arc::new(tokio::sync::Semaphore::new(answers));
        let log = FakeLog {
            next: AtomicU64::new(10),
            answers: answers.clone(),
        };
        let replica = Replica::new(Arc::new(log), 0);
        let engine = Engine::new(state, storage, Default::default(), Some(replica));
        let outbox = Arc::new(Outbox::new(1 << 20));
        engine.connect(ConnId::from_raw(1), Sess::default(), outbox.clone());
        engine.start(ConnId::from_raw(1), "");
        drain(&outbox);
        (engine, outbox, answers)
    }

    fn set_value(engine: &Engine<Sess>, value: i64) -> Pending {
        engine.server_write(
            0,
            ServerWrite::Update {
                oid: 1,
                f: &mut |any, changed| {
                    any.downcast_mut::<Counter>().unwrap().value = value;
                    changed.insert(0);
                },
                merge: true,
            },
            "test",
        )
    }

    fn value(engine: &Engine<Sess>) -> i64 {
        let st = engine.lock("test");
        let models = st.colls[0].models_any();
        models
            .downcast_ref::<std::collections::BTreeMap<u64, Counter>>()
            .unwrap()[&1]
            .value
    }

    /// The values the connection was sent, in order.
    fn sent(outbox: &Outbox) -> Vec<i64> {
        let text: String = drain(outbox)
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        text.match_indices("\"value\":")
            .map(|(i, m)| {
                let rest = &text[i + m.len()..];
                let end = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                rest[..end].parse().unwrap()
            })
            .collect()
    }

    /// Another node's (9) entry at revision 11: model 1's value becomes 6.
    fn foreign() -> Entry<'static> {
        Entry {
            seq: 11,
            coll: "counters",
            oid: 1,
            node: 9,
            token: 1,
            doc: Some(br#"{"value":6,"secret":0}"#),
        }
    }

    #[tokio::test]
    async fn an_own_entry_replaced_in_the_bucket_before_it_was_read_is_applied_first() {
        let (engine, outbox, _) = node(100);
        let pending = set_value(&engine, 5);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await; // published at 10
        assert_eq!(
            value(&engine),
            0,
            "not applied before the follower meets it"
        );
        // The follower never meets revision 10 (another node's 11 replaced it) and meets 11.
        engine.follow_entry(foreign()).await;
        assert!(pending.wait().await.is_ok(), "the writer is answered");
        assert_eq!(value(&engine), 6);
        assert_eq!(sent(&outbox), [5, 6], "both commits, in log order");
        assert_eq!(engine.lock("test").log.seq, 11);
    }

    #[tokio::test]
    async fn another_nodes_entry_waits_for_the_answer_to_this_nodes_write_to_the_model() {
        let (engine, outbox, answers) = node(0);
        let pending = set_value(&engine, 5);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await; // sent, unanswered
        let follower = {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine.follow_entry(foreign()).await;
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !follower.is_finished(),
            "waits while this node's write is unanswered"
        );
        assert_eq!(value(&engine), 0);
        answers.add_permits(1); // the log answers: revision 10
        follower.await.unwrap();
        assert!(pending.wait().await.is_ok());
        assert_eq!(
            value(&engine),
            6,
            "10 (ours) was applied before 11, not after"
        );
        assert_eq!(sent(&outbox), [5, 6]);
    }
}

/// A window kept by `LiveQuery::place` through thousands of random inserts, changes and removals
/// is always what evaluating the query from scratch gives, and the moves it reports are exactly
/// the models that entered and left the part shown.
#[test]
fn a_window_kept_by_place_equals_a_full_evaluation() {
    use super::live::{LiveQuery, Moves, Probe, Slot};
    use crate::query::{Dir, Query};
    use std::collections::BTreeMap;

    let all = AttrSet::first(2);
    let query = Query::<Counter>::new()
        .ge(CounterChange::Value(10))
        .order_by(CounterAttr::Secret, Dir::Desc)
        .limit(5);
    let slot = |oid: u64, m: &Counter| {
        let p = Probe::of(m, oid, all);
        let mut get = |f| p.get(f, all);
        query.matches(&mut get).then(|| Slot {
            key: query.key(&mut get),
            oid,
        })
    };
    let full = |models: &BTreeMap<u64, Counter>| -> Vec<Slot> {
        let mut v: Vec<Slot> = models.iter().filter_map(|(o, m)| slot(*o, m)).collect();
        v.sort_by(|a, b| query.compare((&a.key, a.oid), (&b.key, b.oid)));
        v.truncate(6);
        v
    };
    let oids = |w: &[Slot]| w.iter().map(|s| s.oid).collect::<Vec<u64>>();
    let mut models: BTreeMap<u64, Counter> = BTreeMap::new();
    let mut q = LiveQuery {
        conn: ConnId::from_raw(1),
        qid: "q".into(),
        query: query.clone(),
        index: None,
        limit: 5,
        window: Vec::new(),
    };
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let (mut refills, mut moved) = (0, 0);
    for _ in 0..20_000 {
        let oid = 1 + rand(30);
        if rand(8) == 0 {
            models.remove(&oid);
        } else {
            models.insert(
                oid,
                Counter {
                    value: rand(20) as i64,
                    secret: rand(6) as i64,
                },
            );
        }
        let before: Vec<u64> = q.visible().collect();
        let probe = models.get(&oid).map(|m| Probe::of(m, oid, all));
        let mut moves = Moves::default();
        if q.place(oid, probe.as_ref(), probe.as_ref().map(|_| all), &mut moves) {
            assert_eq!(
                oids(&q.window),
                oids(&full(&models)),
                "the window after placing {oid}"
            );
            let after: Vec<u64> = q.visible().collect();
            let mut ins: Vec<u64> = after
                .iter()
                .filter(|o| !before.contains(o))
                .copied()
                .collect();
            let mut outs: Vec<u64> = before
                .iter()
                .filter(|o| !after.contains(o))
                .copied()
                .collect();
            let (mut got_in, mut got_out) = (moves.ins.clone(), moves.outs.clone());
            for v in [&mut ins, &mut outs, &mut got_in, &mut got_out] {
                v.sort_unstable();
            }
            assert_eq!((got_in, got_out), (ins, outs), "the moves of placing {oid}");
            moved += usize::from(!moves.ins.is_empty() || !moves.outs.is_empty());
        } else {
            refills += 1;
            q.window = full(&models);
        }
    }
    // Both paths ran many times.
    assert!(
        refills > 100 && moved > 1_000,
        "{refills} refills, {moved} moves"
    );
}
