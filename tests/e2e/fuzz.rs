//! Fuzzing the message decoder over a real socket: random byte strings, random JSON, and
//! well-shaped messages with random or mutated fields (types, values, collection and attribute
//! names, nested arrays and batches), sent as WebSocket frames to a real server on 127.0.0.1.
//!
//! For every frame: the connection stays open (the rate limits are raised, frames stay far
//! below the size limit: this is bad input, not a flood); every message object carrying an `id`
//! gets exactly one answer with that id, and every other message (or undecodable frame) one
//! `error` without id; a frame nothing accepted leaves the server state unchanged; nothing
//! panics on the server. After each case both the fuzzing client and an observer hold exactly
//! the visible server state, and the observer and a new client still work.
//!
//! Cases: `OMNI_FUZZ_CASES` (default 256), each a sequence of 1 to 12 frames.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use omni_runtime::client::{Attrs, Client};
use omni_runtime::prelude::*;
use omni_tests::TestServer;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;

#[derive(Serialize, Deserialize, TS, Clone, Debug, Default, PartialEq)]
struct Pos {
    x: i32,
    y: i32,
}

#[derive(Default)]
struct Sess;

/// One model with a field of each kind the decoder handles.
#[derive(Model, Clone, Default, Debug, PartialEq)]
struct Thing {
    name: String,
    count: i32,
    small: u8,
    ratio: f64,
    flag: bool,
    tags: Vec<String>,
    pos: Pos,
    note: Option<String>,
    #[model(readonly)]
    owner: String,
    _secret: String,
}

impl Permissions<Sess> for Thing {
    /// A thing named `hidden` is invisible: requests naming it must look like a missing OID.
    fn can_read(&self, _ctx: &Access<Sess, Self>, _attr: Option<ThingAttr>) -> bool {
        self.name != "hidden"
    }
    /// Anything typed right, except a negative count (a permission refusal).
    fn can_write(&self, _ctx: &Access<Sess, Self>, change: &ThingChange) -> bool {
        !matches!(change, ThingChange::Count(c) if *c < 0)
    }
}

#[collection(model = Thing)]
struct Things;

impl CollectionPermissions<Sess> for Things {
    fn can_create(&self, _ctx: &Ctx<Sess>, thing: &Thing) -> bool {
        !thing.name.is_empty()
    }
    fn can_destroy(&self, _ctx: &Ctx<Sess>, thing: &Thing) -> bool {
        thing.flag
    }
    fn on_create(&self, _ctx: &Ctx<Sess>, thing: &mut Thing) {
        thing.owner = "fuzz".into();
        thing._secret = "s3cret".into();
    }
}

#[derive(Serialize, Deserialize, TS)]
struct Echo {
    a: i32,
    b: String,
    list: Vec<u8>,
}

fn app() -> Omni<Sess> {
    let config = omni_runtime::Config {
        // Bad input, not a flood: never rate-limited here.
        max_messages_per_second: 1_000_000,
        message_burst: 1_000_000,
        static_dir: None,
        ..Default::default()
    };
    let seed = |name: &str, flag: bool| Thing {
        name: name.into(),
        count: 1,
        small: 2,
        ratio: 0.5,
        flag,
        tags: vec!["t".into()],
        pos: Pos { x: 1, y: 2 },
        note: None,
        owner: "seed".into(),
        _secret: "s3cret".into(),
    };
    Omni::<Sess>::new()
        .collection(Things::with([
            seed("a", false),
            seed("b", true),
            seed("hidden", true),
        ]))
        .event(
            "echo",
            |_conn: Conn<Sess>, _world: World, req: Echo| async move { Ok::<_, EventError>(req) },
        )
        .event(
            "fail",
            |_conn: Conn<Sess>, _world: World, _req: ()| async move {
                Err::<(), _>(EventError::new("always fails"))
            },
        )
        .config(config)
}

// ---------- panics on the server ----------

static PANICS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    /// Set on the thread running the fuzz cases: their current-thread runtime runs the server.
    static FUZZING: Cell<bool> = const { Cell::new(false) };
}

/// Counts panics on the fuzzing thread (the app above has no code that may panic), keeping the
/// default report.
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if FUZZING.with(Cell::get) {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

// ---------- generators ----------

const NAMES: &[&str] = &[
    "things",
    "Things",
    "thing",
    "players",
    "",
    "__proto__",
    "constructor",
    "oid",
    "id",
    "t",
    "tmp",
    "_secret",
    "name",
    "count",
    "pos",
    "ñ",
    "things ",
    "echo",
    "fail",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(NAMES).prop_map(String::from),
        1 => "[a-z_]{0,8}",
        1 => ".{0,6}",
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3i64..300).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        name().prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((name(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// An attribute with a value of the right type (sometimes out of range or refused), or a
/// read-only, server-only or reserved one.
fn typed_entry() -> impl Strategy<Value = (String, Value)> {
    fn at(k: &'static str) -> impl Fn(Value) -> (String, Value) {
        move |v| (k.to_owned(), v)
    }
    prop_oneof![
        prop_oneof!["[a-z]{0,6}".prop_map(Value::from), Just(json!("hidden"))].prop_map(at("name")),
        (-5i64..5).prop_map(Value::from).prop_map(at("count")),
        (0u64..300).prop_map(Value::from).prop_map(at("small")),
        (-10.0f64..10.0).prop_map(Value::from).prop_map(at("ratio")),
        any::<bool>().prop_map(Value::from).prop_map(at("flag")),
        prop::collection::vec("[a-z]{0,3}", 0..3)
            .prop_map(Value::from)
            .prop_map(at("tags")),
        (any::<i32>(), any::<i32>())
            .prop_map(|(x, y)| json!({"x": x, "y": y}))
            .prop_map(at("pos")),
        prop_oneof![Just(Value::Null), "[a-z]{0,4}".prop_map(Value::from)].prop_map(at("note")),
        Just(json!("me")).prop_map(at("owner")),
        Just(json!("x")).prop_map(at("_secret")),
        (0u64..5).prop_map(Value::from).prop_map(at("oid")),
    ]
}

fn attrs_object() -> impl Strategy<Value = Value> {
    let entry = prop_oneof![
        8 => typed_entry(),
        1 => (name(), json_value()),
        1 => typed_entry().prop_flat_map(|(k, _)| (Just(k), json_value())),
    ];
    prop::collection::vec(entry, 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect()))
}

/// A field of a message: usually well-typed, sometimes missing or any JSON.
fn field(valid: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        14 => valid.prop_map(Some),
        1 => Just(None),
        1 => json_value().prop_map(Some),
    ]
}

/// A message object of one of the four client kinds (or another `t`), with random or mutated
/// fields and sometimes extra keys.
fn message() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        12 => prop::sample::select(&["change", "add", "remove", "event"][..]).prop_map(Value::from),
        1 => name().prop_map(Value::from),
    ];
    let coll = prop_oneof![8 => Just(json!("things")), 1 => name().prop_map(Value::from)];
    // Mostly the seeded things (3 is the invisible one), sometimes none or a created one.
    let oid = prop_oneof![3 => 1u64..4, 1 => 0u64..7].prop_map(Value::from);
    // An add usually names its thing (an unnamed one is refused by `can_create`).
    let new_attrs = (attrs_object(), prop::option::weighted(0.7, "[a-z]{1,5}")).prop_map(
        |(mut attrs, name)| {
            if let (Value::Object(obj), Some(name)) = (&mut attrs, name) {
                obj.entry("name").or_insert(Value::from(name));
            }
            attrs
        },
    );
    let event = prop_oneof![
        2 => Just(json!("echo")),
        1 => Just(json!("fail")),
        1 => name().prop_map(Value::from),
    ];
    let args = prop_oneof![
        (
            any::<i32>(),
            "[a-z]{0,4}",
            prop::collection::vec(any::<u8>(), 0..3)
        )
            .prop_map(|(a, b, list)| json!({"a": a, "b": b, "list": list})),
        json_value(),
    ];
    (
        (
            field(kind),
            field((1u64..40).prop_map(Value::from)),
            field(coll),
        ),
        (
            field(oid),
            field(attrs_object()),
            field("t[0-9]{1,2}".prop_map(Value::from)),
        ),
        (field(event), field(args), field(new_attrs)),
        prop::collection::vec((name(), json_value()), 0..2),
    )
        .prop_map(
            |((t, id, c), (oid, attrs, tmp), (event, args, new_attrs), extra)| {
                let mut obj: Map<String, Value> = extra.into_iter().collect();
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        obj.insert(k.to_owned(), v);
                    }
                };
                let kind = t.as_ref().and_then(|t| t.as_str()).unwrap_or("").to_owned();
                put("t", t);
                put("id", id);
                match kind.as_str() {
                    "change" => {
                        put("c", c);
                        put("oid", oid);
                        put("set", attrs);
                    }
                    "add" => {
                        put("c", c);
                        put("tmp", tmp);
                        put("m", new_attrs);
                    }
                    "remove" => {
                        put("c", c);
                        put("oid", oid);
                    }
                    "event" => {
                        put("name", event);
                        put("args", args);
                    }
                    _ => {
                        put("c", c);
                        put("oid", oid);
                        put("set", attrs);
                        put("name", event);
                    }
                }
                Value::Object(obj)
            },
        )
}

#[derive(Debug, Clone)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

/// Text with one byte deleted, inserted, replaced, or everything after it cut.
fn mutate(text: String, at: prop::sample::Index, byte: u8, how: u8) -> Frame {
    let mut bytes = text.into_bytes();
    let i = at.index(bytes.len() + 1);
    match how % 4 {
        0 if i < bytes.len() => {
            bytes.remove(i);
        }
        1 => bytes.insert(i, byte),
        2 if i < bytes.len() => bytes[i] = byte,
        _ => bytes.truncate(i),
    }
    Frame::Text(String::from_utf8_lossy(&bytes).into_owned())
}

fn frame() -> impl Strategy<Value = Frame> {
    let batch_item = prop_oneof![
        6 => message(),
        1 => json_value(),
        1 => prop::collection::vec(message(), 0..3).prop_map(Value::Array),
    ];
    prop_oneof![
        6 => message().prop_map(|m| Frame::Text(m.to_string())),
        3 => prop::collection::vec(batch_item, 0..6)
            .prop_map(|items| Frame::Text(Value::Array(items).to_string())),
        1 => json_value().prop_map(|v| Frame::Text(v.to_string())),
        2 => (message(), any::<prop::sample::Index>(), any::<u8>(), any::<u8>())
            .prop_map(|(m, at, byte, how)| mutate(m.to_string(), at, byte, how)),
        1 => prop::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| Frame::Text(String::from_utf8_lossy(&b).into_owned())),
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Frame::Binary),
    ]
}

// ---------- checks ----------

/// The answers a frame must get, decided the way the protocol says: one per message object,
/// carrying its `id` when that is a non-negative integer; one `error` for an undecodable frame.
fn expected_answers(frame: &Frame) -> (BTreeMap<u64, usize>, usize) {
    let mut ids = BTreeMap::new();
    let mut idless = 0;
    let mut one = |m: &Value| match m.get("id").and_then(Value::as_u64) {
        Some(id) if m.is_object() => *ids.entry(id).or_insert(0) += 1,
        _ => idless += 1,
    };
    match frame {
        Frame::Binary(_) => one(&Value::Null),
        Frame::Text(text) => match serde_json::from_str::<Value>(text) {
            Err(_) => one(&Value::Null),
            Ok(Value::Array(items)) => items.iter().for_each(&mut one),
            Ok(other) => one(&other),
        },
    }
    (ids, idless)
}

type State = BTreeMap<u64, Thing>;

fn state(srv: &TestServer<Sess>) -> State {
    srv.server
        .world()
        .collection::<Things>()
        .all()
        .into_iter()
        .map(|(oid, t)| (oid.raw(), t))
        .collect()
}

/// What every client must hold: the visible things, public attributes only.
fn visible(state: &State) -> BTreeMap<u64, Attrs> {
    state
        .iter()
        .filter(|(_, t)| t.name != "hidden")
        .map(|(oid, t)| {
            let v = json!({
                "name": t.name, "count": t.count, "small": t.small, "ratio": t.ratio,
                "flag": t.flag, "tags": t.tags, "pos": t.pos, "note": t.note, "owner": t.owner,
            });
            (*oid, v.as_object().cloned().unwrap_or_default())
        })
        .collect()
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

async fn run_case(frames: Vec<Frame>) -> Result<(), TestCaseError> {
    let srv = TestServer::start(app()).await;
    let mut fuzz = srv.client().await;
    let mut observer = srv.client().await;
    fuzz.set_timeout(Duration::from_secs(5));
    observer.set_timeout(Duration::from_secs(5));
    let mut before = state(&srv);

    for (n, frame) in frames.iter().enumerate() {
        let (mut ids, mut idless) = expected_answers(frame);
        let sent = match frame {
            Frame::Text(t) => fuzz.send_raw(t.clone()).await,
            Frame::Binary(b) => fuzz.send_message(Message::binary(b.clone())).await,
        };
        sent.map_err(|e| fail(format!("frame {n} {frame:?}: cannot send: {e}")))?;
        let mut accepted = false;
        while !ids.is_empty() || idless > 0 {
            let answer = fuzz
                .wait_for(|m| {
                    matches!(
                        m["t"].as_str(),
                        Some("ack" | "created" | "reject" | "reply" | "error")
                    )
                })
                .await
                .map_err(|e| {
                    fail(format!(
                        "frame {n} {frame:?}: no answer (missing ids {ids:?}, {idless} without id): {e}"
                    ))
                })?;
            match answer["id"].as_u64() {
                Some(id) => {
                    let left = ids.get_mut(&id).ok_or_else(|| {
                        fail(format!("frame {n} {frame:?}: unexpected answer {answer}"))
                    })?;
                    *left -= 1;
                    if *left == 0 {
                        ids.remove(&id);
                    }
                }
                None if answer["t"] == "error" && idless > 0 => idless -= 1,
                None => {
                    return Err(fail(format!(
                        "frame {n} {frame:?}: unexpected answer {answer}"
                    )));
                }
            }
            accepted |= matches!(answer["t"].as_str(), Some("ack" | "created"));
        }
        let now = state(&srv);
        if !accepted {
            prop_assert_eq!(
                &now,
                &before,
                "frame {} {:?} was refused but changed the server state",
                n,
                frame
            );
        }
        before = now;
        prop_assert_eq!(
            PANICS.load(Ordering::SeqCst),
            0,
            "the server panicked on frame {} {:?}",
            n,
            frame
        );
    }

    // Both connections are alive and hold exactly the visible state.
    let echo = json!({"a": 1, "b": "still here", "list": [1, 2]});
    let back: Value = fuzz
        .trigger("echo", &echo)
        .await
        .map_err(|e| fail(format!("the fuzzing client no longer works: {e}")))?;
    prop_assert_eq!(&back, &echo);
    let back: Value = observer
        .trigger("echo", &echo)
        .await
        .map_err(|e| fail(format!("the observer no longer works: {e}")))?;
    prop_assert_eq!(&back, &echo);
    let expected = visible(&state(&srv));
    prop_assert_eq!(
        &fuzz.collection("things"),
        &expected,
        "the fuzzing client's view"
    );
    prop_assert_eq!(
        &observer.collection("things"),
        &expected,
        "the observer's view"
    );

    // The observer can still write, and a new client gets the current state.
    let target = match expected.keys().next() {
        Some(oid) => *oid,
        None => observer
            .add("things", json!({"name": "late"}))
            .await
            .map_err(|e| fail(format!("the observer cannot add: {e}")))?,
    };
    observer
        .change("things", target, json!({"count": 7, "tags": ["after"]}))
        .await
        .map_err(|e| fail(format!("the observer cannot write: {e}")))?;
    let fresh = Client::connect(&srv.url())
        .await
        .map_err(|e| fail(format!("a new client cannot connect: {e}")))?;
    let now = visible(&state(&srv));
    prop_assert_eq!(now[&target]["count"].clone(), json!(7));
    prop_assert_eq!(&fresh.collection("things"), &now, "a new client's snapshot");
    prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the server panicked");
    Ok(())
}

fn cases() -> u32 {
    std::env::var("OMNI_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_and_mutated_frames_get_answers_and_change_nothing_they_should_not(
        frames in prop::collection::vec(frame(), 1..13)
    ) {
        count_panics();
        PANICS.store(0, Ordering::SeqCst);
        FUZZING.with(|f| f.set(true));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let result = rt.block_on(run_case(frames));
        FUZZING.with(|f| f.set(false));
        result?;
    }
}
