//! Bad input, limits, panics, origins, disconnects (issue 6).

use std::time::Duration;

use omni_runtime::client::Client;
use omni_runtime::prelude::*;
use omni_tests::TestServer;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::apps::{DocSession, Docs, doc, docs_app};

/// The server state as clients would see it, for before/after comparisons.
fn server_state(srv: &TestServer<DocSession>) -> Vec<(u64, String, String, bool, i64)> {
    srv.server
        .world()
        .collection::<Docs>()
        .all()
        .into_iter()
        .map(|(oid, d)| (oid.raw(), d.title, d.note, d.hidden, d.counter))
        .collect()
}

/// Every bad frame gets an answer naming the problem and changes nothing, for the sender,
/// the server, or any other client.
#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let srv = TestServer::start(docs_app(vec![doc("a", "n1"), doc("b", "n2")])).await;
    let mut bad = srv.client().await;
    let mut other = srv.client().await;
    let oid = *bad.collection("docs").keys().next().unwrap();
    let before = server_state(&srv);
    let other_before = other.collections().clone();

    let cases: Vec<(String, &str)> = vec![
        ("{".into(), "malformed JSON"),
        ("not json".into(), "malformed JSON"),
        ("".into(), "malformed JSON"),
        ("42".into(), "must be a JSON object"),
        ("\"change\"".into(), "must be a JSON object"),
        ("null".into(), "must be a JSON object"),
        ("[1]".into(), "must be a JSON object"),
        ("{}".into(), "missing field `t`"),
        (r#"{"t":5,"id":1}"#.into(), "field `t` must be a string"),
        (r#"{"t":"change"}"#.into(), "missing field `id`"),
        (
            r#"{"t":"explode","id":1}"#.into(),
            "unknown message type `explode`",
        ),
        (
            r#"{"t":"change","id":1,"oid":1,"set":{}}"#.into(),
            "missing field `c`",
        ),
        (
            r#"{"t":"change","id":1,"c":"nope","oid":1,"set":{}}"#.into(),
            "unknown collection `nope`",
        ),
        (
            r#"{"t":"change","id":1,"c":"docs","set":{}}"#.into(),
            "missing field `oid`",
        ),
        (
            r#"{"t":"change","id":1,"c":"docs","oid":"x","set":{}}"#.into(),
            "field `oid` must be a non-negative integer",
        ),
        (
            r#"{"t":"change","id":1,"c":"docs","oid":-3,"set":{}}"#.into(),
            "field `oid` must be a non-negative integer",
        ),
        (
            r#"{"t":"change","id":1,"c":"docs","oid":999999,"set":{"title":"x"}}"#.into(),
            "has no model with oid 999999",
        ),
        (
            format!(r#"{{"t":"change","id":1,"c":"docs","oid":{oid}}}"#),
            "missing field `set`",
        ),
        (
            format!(r#"{{"t":"change","id":1,"c":"docs","oid":{oid},"set":[1]}}"#),
            "field `set` must be an object",
        ),
        (
            format!(r#"{{"t":"change","id":1,"c":"docs","oid":{oid},"set":{{"nope":1}}}}"#),
            "`nope` of model `Doc` is not an attribute",
        ),
        (
            format!(
                r#"{{"t":"change","id":1,"c":"docs","oid":{oid},"set":{{"_owner_token":"x"}}}}"#
            ),
            "is server-only",
        ),
        (
            format!(r#"{{"t":"change","id":1,"c":"docs","oid":{oid},"set":{{"counter":"abc"}}}}"#),
            "attribute `counter` of model `Doc` expected",
        ),
        (
            format!(r#"{{"t":"change","id":1,"c":"docs","oid":{oid},"set":{{"counter":1.5}}}}"#),
            "attribute `counter`",
        ),
        (
            format!(r#"{{"t":"change","id":1,"c":"docs","oid":{oid},"set":{{"title":null}}}}"#),
            "attribute `title`",
        ),
        (
            format!(
                r#"{{"t":"change","id":1,"c":"docs","oid":{oid},"set":{{"title":"ok","counter":"bad"}}}}"#
            ),
            "attribute `counter`",
        ),
        (
            format!(r#"{{"t":"change","id":1,"c":"docs","oid":{oid},"set":{{"note":"x"}}}}"#),
            "permission denied",
        ),
        (
            format!(r#"{{"t":"change","id":1,"c":"docs","oid":{oid},"set":{{"oid":5}}}}"#),
            "`oid` of model `Doc` is not an attribute",
        ),
        (
            r#"{"t":"add","id":1,"c":"docs","m":{"title":"x"}}"#.into(),
            "missing field `tmp`",
        ),
        (
            r#"{"t":"add","id":1,"c":"docs","tmp":7,"m":{"title":"x"}}"#.into(),
            "field `tmp` must be a string",
        ),
        (
            r#"{"t":"add","id":1,"c":"docs","tmp":"t1"}"#.into(),
            "missing field `m`",
        ),
        (
            r#"{"t":"add","id":1,"c":"docs","tmp":"t1","m":{"title":""}}"#.into(),
            "may not create models in `docs`",
        ),
        (
            r#"{"t":"add","id":1,"c":"docs","tmp":"t1","m":{"title":"x","_owner_token":"y"}}"#
                .into(),
            "is server-only",
        ),
        (
            r#"{"t":"add","id":1,"c":"docs","tmp":"t1","m":{"title":"x","counter":"z"}}"#.into(),
            "attribute `counter`",
        ),
        (
            r#"{"t":"remove","id":1,"c":"docs"}"#.into(),
            "missing field `oid`",
        ),
        (
            format!(r#"{{"t":"remove","id":1,"c":"docs","oid":{oid}}}"#),
            "may not remove docs/Doc",
        ),
        (r#"{"t":"event","id":1}"#.into(), "missing field `name`"),
        (
            r#"{"t":"event","id":1,"name":"nope"}"#.into(),
            "unknown event `nope`",
        ),
        (
            r#"{"t":"event","id":1,"name":"sleep","args":{"ms":"x"}}"#.into(),
            "bad arguments",
        ),
        (
            r#"{"t":"event","id":1,"name":"sleep"}"#.into(),
            "bad arguments",
        ),
    ];
    assert!(cases.len() >= 30);
    for (frame, expected) in &cases {
        let start = bad.log().len();
        bad.send_raw(frame.clone()).await.unwrap();
        let answer = bad
            .wait_for(|m| matches!(m["t"].as_str(), Some("error" | "reject" | "reply")))
            .await
            .unwrap_or_else(|e| panic!("no answer to {frame}: {e}"));
        let reason = answer["reason"]
            .as_str()
            .or(answer["err"].as_str())
            .unwrap_or_default();
        assert!(
            reason.contains(expected),
            "frame {frame}: reason `{reason}` should contain `{expected}`"
        );
        let extra: Vec<&Value> = bad.log()[start..]
            .iter()
            .filter(|m| !matches!(m["t"].as_str(), Some("error" | "reject" | "reply")))
            .collect();
        assert!(
            extra.is_empty(),
            "frame {frame} caused state messages: {extra:?}"
        );
        assert_eq!(
            server_state(&srv),
            before,
            "frame {frame} changed the server state"
        );
    }
    // A binary frame and an empty batch.
    bad.send_message(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    let answer = bad.wait_for(|m| m["t"] == "error").await.unwrap();
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("binary frames are not supported")
    );
    bad.send_raw("[]").await.unwrap();
    // Still alive, still consistent; nobody else heard anything.
    let ok: String = bad
        .trigger("sleep", &json!({"ms": 0, "echo": "alive"}))
        .await
        .unwrap();
    assert_eq!(ok, "alive");
    assert_eq!(server_state(&srv), before);
    let heard = other.drain(Duration::from_millis(150)).await.unwrap();
    assert!(
        heard.is_empty(),
        "another client heard something: {heard:?}"
    );
    assert_eq!(other.collections(), &other_before);
}

#[tokio::test]
async fn a_batch_is_processed_in_order_and_each_message_answered() {
    let srv = TestServer::start(docs_app(vec![doc("a", "")])).await;
    let mut c = srv.client().await;
    let oid = *c.collection("docs").keys().next().unwrap();
    let batch = json!([
        {"t": "change", "id": 1, "c": "docs", "oid": oid, "set": {"counter": 1}},
        {"t": "change", "id": 2, "c": "docs", "oid": oid, "set": {"counter": "bad"}},
        {"t": "change", "id": 3, "c": "docs", "oid": oid, "set": {"counter": 3}},
    ]);
    c.send_raw(batch.to_string()).await.unwrap();
    assert_eq!(c.answer(1).await.unwrap()["t"], "ack");
    assert!(c.answer(2).await.is_err());
    assert_eq!(c.answer(3).await.unwrap()["t"], "ack");
    assert_eq!(c.model("docs", oid).unwrap()["counter"], 3);
}

#[tokio::test]
async fn oversized_frames_and_floods_are_cut_off_while_others_carry_on() {
    let mut config = omni_runtime::Config {
        max_message_size: 4096,
        max_messages_per_second: 50,
        message_burst: 100,
        ..Default::default()
    };
    config.static_dir = None;
    let srv = TestServer::start(docs_app(vec![doc("a", "")]).config(config)).await;
    let mut victim = srv.client().await;
    let oid = *victim.collection("docs").keys().next().unwrap();

    // Oversized: the connection is closed by the server.
    let mut big = srv.client().await;
    big.send_raw(format!(
        r#"{{"t":"event","id":1,"name":"sleep","args":{{"ms":0,"echo":"{}"}}}}"#,
        "x".repeat(10_000)
    ))
    .await
    .unwrap();
    assert!(
        big.drain(Duration::from_millis(500)).await.is_err(),
        "an oversized frame must close the connection"
    );

    // Flood: over the burst, the extra messages are answered with errors and dropped...
    let mut flood = srv.client().await;
    for i in 0..150 {
        flood
            .send_raw(
                json!({"t": "change", "id": i, "c": "docs", "oid": oid, "set": {"counter": i}})
                    .to_string(),
            )
            .await
            .unwrap();
    }
    flood.drain(Duration::from_millis(300)).await.unwrap();
    let limited = flood
        .log()
        .iter()
        .filter(|m| m["t"] == "error" && m["reason"].as_str().unwrap_or("").contains("rate limit"))
        .count();
    let acked = flood.log().iter().filter(|m| m["t"] == "ack").count();
    assert!(limited > 0, "a flooding client is told about the limit");
    assert_eq!(
        limited + acked,
        150,
        "every request is answered, applied or refused"
    );
    // ...and a client that keeps flooding is disconnected.
    let mut closed = false;
    for i in 0..2000 {
        if flood
            .send_raw(
                json!({"t": "change", "id": i, "c": "docs", "oid": oid, "set": {"counter": i}})
                    .to_string(),
            )
            .await
            .is_err()
        {
            closed = true;
            break;
        }
    }
    if !closed {
        closed = flood.drain(Duration::from_millis(500)).await.is_err();
    }
    assert!(closed, "a client that keeps flooding is disconnected");

    // The victim still works and sees the server's state.
    victim
        .change("docs", oid, json!({"title": "still fine"}))
        .await
        .unwrap();
    let fresh = Client::connect(&srv.url()).await.unwrap();
    assert_eq!(fresh.model("docs", oid).unwrap()["title"], "still fine");
    let counter = srv
        .server
        .world()
        .collection::<Docs>()
        .get(Oid::from_raw(oid))
        .unwrap()
        .counter;
    assert_eq!(fresh.model("docs", oid).unwrap()["counter"], counter);
}

/// Raw HTTP upgrade request; returns the status line.
async fn upgrade_status(addr: std::net::SocketAddr, origin: Option<&str>) -> String {
    upgrade_response(addr, origin)
        .await
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Raw HTTP upgrade request; returns the start of the response (status, headers, body).
async fn upgrade_response(addr: std::net::SocketAddr, origin: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET /omni HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn websocket_upgrades_from_foreign_origins_get_403() {
    let srv = TestServer::start(docs_app(vec![])).await;
    let same = format!("http://{}", srv.addr);
    assert!(upgrade_status(srv.addr, Some(&same)).await.contains("101"));
    assert!(
        upgrade_status(srv.addr, None).await.contains("101"),
        "non-browser clients send no Origin"
    );
    assert!(
        upgrade_status(srv.addr, Some("https://evil.example"))
            .await
            .contains("403")
    );

    let config = omni_runtime::Config {
        allowed_origins: vec!["https://app.example".into()],
        static_dir: None,
        ..Default::default()
    };
    let srv = TestServer::start(docs_app(vec![]).config(config)).await;
    assert!(
        upgrade_status(srv.addr, Some("https://app.example"))
            .await
            .contains("101")
    );
    assert!(
        upgrade_status(srv.addr, Some(&format!("http://{}", srv.addr)))
            .await
            .contains("403")
    );
}

#[tokio::test]
async fn a_refused_origin_is_told_how_to_allow_it() {
    let srv = TestServer::start(docs_app(vec![])).await;
    let resp = upgrade_response(srv.addr, Some("http://localhost:5173")).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(
        resp.contains("http://localhost:5173") && resp.contains("Config::allowed_origins"),
        "{resp}"
    );
}

#[tokio::test]
async fn panics_in_hooks_and_handlers_are_contained() {
    #[derive(Default)]
    struct S;
    #[derive(Model, Clone, Default)]
    struct Bomb {
        armed: bool,
        value: i32,
    }
    impl Permissions<S> for Bomb {
        fn can_read(&self, _ctx: &Access<S, Self>, attr: Option<BombAttr>) -> bool {
            if self.armed && attr == Some(BombAttr::Value) {
                panic!("read hook bug");
            }
            true
        }
        fn can_write(&self, _ctx: &Access<S, Self>, change: &BombChange) -> bool {
            match change {
                BombChange::Value(13) => panic!("write hook bug"),
                _ => true,
            }
        }
    }
    #[collection(model = Bomb)]
    struct Bombs;
    impl CollectionPermissions<S> for Bombs {}

    let app = Omni::<S>::new()
        .collection(Bombs::with([Bomb::default()]))
        .on_connect(|conn: Conn<S>| async move {
            if conn.id().raw() == 2 {
                panic!("connect hook bug");
            }
        });
    let srv = TestServer::start(app).await;
    let mut a = srv.client().await; // conn 1
    // Conn 2's connect hook panics: it gets an error and is closed; the server carries on.
    let second = Client::connect(&srv.url()).await;
    assert!(
        second.is_err(),
        "the connection whose connect hook panicked gets no snapshot"
    );
    let oid = *a.collection("bombs").keys().next().unwrap();
    // A panicking write hook refuses, and nothing is half-applied.
    let err = a
        .change("bombs", oid, json!({"armed": false, "value": 13}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    assert_eq!(
        srv.server
            .world()
            .collection::<Bombs>()
            .get(Oid::from_raw(oid))
            .unwrap()
            .value,
        0
    );
    // A panicking read hook hides the model rather than leaking or crashing.
    a.change("bombs", oid, json!({"armed": true}))
        .await
        .unwrap();
    assert!(
        a.model("bombs", oid).is_none(),
        "a model whose read hook panics is not shown"
    );
    let mut c = srv.client().await;
    assert!(c.collection("bombs").is_empty());
    let _ = c.drain(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_thousand_connect_disconnect_cycles_leave_nothing_behind() {
    let srv = TestServer::start(docs_app(vec![doc("a", "")])).await;
    for i in 0..1000 {
        let c = srv.client().await;
        if i % 3 == 0 {
            drop(c); // abrupt: no close frame
        } else {
            c.close().await;
        }
    }
    for _ in 0..200 {
        if srv.server.connections().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        srv.server.connections().is_empty(),
        "{} connections left",
        srv.server.connections().len()
    );
    let mut c = srv.client().await;
    assert_eq!(c.collection("docs").len(), 1);
    let _ = c.drain(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_resynced_to_the_current_state() {
    let config = omni_runtime::Config {
        max_queue_bytes: 8 * 1024,
        static_dir: None,
        ..Default::default()
    };
    let srv = TestServer::start(docs_app(vec![doc("a", ""), doc("b", "")]).config(config)).await;
    let mut slow = srv.client().await;
    let mut fast = srv.client().await;
    let docs = srv.server.world().collection::<Docs>();
    let oids: Vec<_> = docs.all().into_iter().map(|(o, _)| o).collect();
    // `slow` reads nothing while 20,000 changes of ~1 KB (20 MB: more than the kernel's socket
    // buffers and far more than its 8 KiB queue) are applied.
    let pad = "x".repeat(1000);
    for i in 0..20_000i64 {
        let oid = oids[(i % 2) as usize];
        docs.update(oid, |d| {
            d.set_counter(i);
            d.set_title(format!("title {i} {pad}"));
        })
        .await
        .unwrap();
        if i % 1000 == 0 {
            fast.drain(Duration::from_millis(1)).await.unwrap();
        }
    }
    fast.wait_until(|c| c.model("docs", oids[1].raw()).unwrap()["counter"] == 19_999)
        .await
        .unwrap();
    // Now `slow` reads: it ends with the current state, with no duplicate or missing model.
    slow.wait_until(|c| {
        c.model("docs", oids[0].raw())
            .is_some_and(|d| d["counter"] == 19_998)
            && c.model("docs", oids[1].raw())
                .is_some_and(|d| d["counter"] == 19_999)
    })
    .await
    .unwrap();
    assert_eq!(slow.collection("docs").len(), 2);
    let snapshots = slow.log().iter().filter(|m| m["t"] == "snapshot").count();
    let changes = slow.log().iter().filter(|m| m["t"] == "change").count();
    assert!(
        snapshots >= 2,
        "the slow client was resynced with a fresh snapshot"
    );
    assert!(
        changes < 20_000,
        "its pending changes were coalesced ({changes} changes received)"
    );
}
