//! Limits that say why: close codes with reasons, malformed frames rate-limited, connections
//! per address. Raw WebSocket clients read the close frames themselves.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use omni_tests::TestServer;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::apps::{doc, docs_app};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads until the server's close frame: the text messages before it, and its code and reason.
async fn until_close(ws: &mut Ws) -> (Vec<String>, Option<(CloseCode, String)>) {
    let mut texts = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => texts.push(t.to_string()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (texts, frame.map(|f| (f.code, f.reason.to_string())));
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) | Ok(None) | Err(_) => return (texts, None),
        }
    }
}

fn config() -> omni_runtime::Config {
    omni_runtime::Config {
        max_message_size: 4096,
        max_messages_per_second: 50,
        message_burst: 100,
        max_connections_per_ip: 4,
        static_dir: None,
        ..Default::default()
    }
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009_and_says_why() {
    let srv = TestServer::start(docs_app(vec![doc("a", "")]).config(config())).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(srv.url()).await.unwrap();
    ws.send(Message::text("x".repeat(10_000))).await.unwrap();
    let (texts, close) = until_close(&mut ws).await;
    let (code, reason) = close.unwrap_or_else(|| panic!("a close frame; got {texts:?}"));
    assert_eq!(code, CloseCode::Size);
    assert!(reason.contains("at most 4096 bytes"), "{reason}");
    assert!(
        texts.iter().any(|t| t.contains("message too big")),
        "the final error frame comes first: {texts:?}"
    );
}

#[tokio::test]
async fn a_flood_of_malformed_frames_is_cut_off_with_1008() {
    let srv = TestServer::start(docs_app(vec![doc("a", "")]).config(config())).await;
    let (ws, _) = tokio_tungstenite::connect_async(srv.url()).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        for _ in 0..5_000 {
            if tx.send(Message::text("{not json")).await.is_err() {
                break;
            }
        }
    });
    let mut errors = 0;
    let mut close = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
        match msg {
            // A frame may batch several messages.
            Ok(Message::Text(t)) => errors += t.matches("malformed JSON").count(),
            Ok(Message::Close(frame)) => {
                close = frame;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    sender.abort();
    let close = close.expect("the server closes the flooding connection");
    assert_eq!(close.code, CloseCode::Policy);
    assert!(close.reason.contains("rate limit"), "{}", close.reason);
    assert!(
        errors <= 200,
        "malformed frames count against the rate limit: {errors} answered"
    );
}

#[tokio::test]
async fn too_many_connections_from_one_address_get_429_before_the_upgrade() {
    let srv = TestServer::start(docs_app(vec![doc("a", "")]).config(config())).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(tokio_tungstenite::connect_async(srv.url()).await.unwrap().0);
    }
    let err = tokio_tungstenite::connect_async(srv.url())
        .await
        .expect_err("the fifth is refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 429);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(body.contains("max_connections_per_ip"), "{body}");
        }
        other => panic!("expected HTTP 429, got {other:?}"),
    }
    // Closing one frees its place.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    drop(first);
    let mut ok = false;
    for _ in 0..100 {
        if tokio_tungstenite::connect_async(srv.url()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a closed connection frees its place");
}

/// While a write waits for an event the client sent before it, the connection still reads and
/// answers: a ping sent after both is answered long before the event ends.
#[tokio::test]
async fn a_write_waiting_for_an_event_does_not_stall_the_connection() {
    let srv = TestServer::start(docs_app(vec![doc("a", "")]).config(config())).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(srv.url()).await.unwrap();
    let started = std::time::Instant::now();
    let batch = serde_json::json!([
        {"t": "event", "id": 1, "name": "sleep", "args": {"ms": 1500, "echo": "done"}},
        {"t": "change", "id": 2, "c": "docs", "oid": 1, "set": {"counter": 5}},
    ]);
    ws.send(Message::text(batch.to_string())).await.unwrap();
    ws.send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .unwrap();
    let mut pong_at = None;
    let mut reply_at = None;
    let mut ack_at = None;
    while ack_at.is_none() {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("answers arrive")
            .unwrap()
            .unwrap();
        match msg {
            Message::Pong(_) => pong_at = Some(started.elapsed()),
            Message::Text(t) if t.contains(r#""t":"reply""#) => reply_at = Some(started.elapsed()),
            Message::Text(t) if t.contains(r#""t":"ack""#) => ack_at = Some(started.elapsed()),
            _ => {}
        }
    }
    let (pong, reply, ack) = (pong_at.unwrap(), reply_at.unwrap(), ack_at.unwrap());
    assert!(
        pong < reply,
        "the ping is answered while the event runs: {pong:?} vs {reply:?}"
    );
    assert!(
        reply <= ack,
        "the write is applied after the event: {reply:?} vs {ack:?}"
    );
}

/// A client that stops reading loses queued state (replaced by a resync snapshot) but never an
/// event the server emitted to it.
#[tokio::test]
async fn emits_survive_a_resync_of_a_client_that_stopped_reading() {
    use crate::apps::Docs;
    let config = omni_runtime::Config {
        max_queue_bytes: 8 * 1024,
        static_dir: None,
        ..Default::default()
    };
    let srv = TestServer::start(docs_app(vec![doc("a", "")]).config(config)).await;
    let mut slow = srv.client().await;
    let conn = srv.server.connections().pop().expect("the slow client");
    assert!(conn.emit("marker", &"before the flood"));
    let docs = srv.server.world().collection::<Docs>();
    let (oid, _) = docs.all().pop().unwrap();
    let pad = "x".repeat(1000);
    for i in 0..5_000i64 {
        docs.update(oid, |d| {
            d.set_counter(i);
            d.set_title(format!("title {i} {pad}"));
        })
        .await
        .unwrap();
    }
    assert!(conn.emit("marker", &"after the flood"));
    slow.wait_until(|c| c.model("docs", oid.raw()).unwrap()["counter"] == 4_999)
        .await
        .unwrap();
    slow.drain(Duration::from_millis(200)).await.unwrap();
    let markers: Vec<&serde_json::Value> = slow
        .emitted()
        .iter()
        .filter(|(name, _)| name == "marker")
        .map(|(_, data)| data)
        .collect();
    assert_eq!(markers, ["before the flood", "after the flood"]);
    assert!(
        slow.log().iter().filter(|m| m["t"] == "snapshot").count() >= 2,
        "the client was resynced (the test must overflow its queue)"
    );
}
