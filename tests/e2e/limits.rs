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
