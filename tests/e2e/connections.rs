//! Connections: others, emit, broadcast, hooks, cleanup (behaviour 7).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use omni_runtime::prelude::*;
use omni_tests::TestServer;
use serde_json::json;

use crate::apps::{DocSession, docs_app};

#[derive(Deserialize, TS)]
struct Whisper {
    to: u64,
    text: String,
}

#[tokio::test]
async fn emit_to_one_broadcast_to_all_and_list_others() {
    let app = docs_app(vec![])
        .event(
            "whisper",
            |conn: Conn<DocSession>, _world: World, req: Whisper| async move {
                let others = conn.others();
                let target = others
                    .iter()
                    .find(|c| c.id().raw() == req.to)
                    .ok_or("no such connection")?;
                target.emit(
                    "whisper",
                    &json!({"from": conn.id().raw(), "text": req.text}),
                );
                Ok::<_, EventError>(others.len())
            },
        )
        .event(
            "shout",
            |_conn: Conn<DocSession>, world: World, text: String| async move {
                world.broadcast("shout", &text);
                Ok::<_, EventError>(world.connections().len())
            },
        );
    let srv = TestServer::start(app).await;
    let mut a = srv.client().await;
    let mut b = srv.client().await;
    let mut c = srv.client().await;

    let others: usize = a
        .trigger("whisper", &json!({"to": b.conn_id(), "text": "psst"}))
        .await
        .unwrap();
    assert_eq!(others, 2);
    b.wait_until(|cl| !cl.emitted().is_empty()).await.unwrap();
    assert_eq!(
        b.emitted()[0],
        (
            "whisper".to_owned(),
            json!({"from": a.conn_id(), "text": "psst"})
        )
    );
    assert!(
        c.drain(Duration::from_millis(100))
            .await
            .unwrap()
            .is_empty(),
        "c must not get the whisper"
    );

    let count: usize = c.trigger("shout", &"hello all").await.unwrap();
    assert_eq!(count, 3);
    for cl in [&mut a, &mut b, &mut c] {
        cl.wait_until(|cl| {
            cl.emitted()
                .iter()
                .any(|(n, d)| n == "shout" && d == "hello all")
        })
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn connect_and_disconnect_hooks_run_and_disconnect_cleans_up() {
    let connected = Arc::new(AtomicUsize::new(0));
    let disconnected = Arc::new(AtomicUsize::new(0));
    let (c1, d1) = (connected.clone(), disconnected.clone());
    let app = docs_app(vec![])
        .on_connect(move |conn: Conn<DocSession>| {
            let c1 = c1.clone();
            async move {
                c1.fetch_add(1, Ordering::SeqCst);
                conn.update_session(|s| s.name = "set by hook".into());
            }
        })
        .on_disconnect(move |conn: Conn<DocSession>| {
            let d1 = d1.clone();
            async move {
                // The session is still readable in the disconnect hook.
                assert_eq!(
                    conn.session(|s| s.name.clone()).as_deref(),
                    Some("set by hook")
                );
                d1.fetch_add(1, Ordering::SeqCst);
            }
        });
    let srv = TestServer::start(app).await;
    let clients = [srv.client().await, srv.client().await, srv.client().await];
    assert_eq!(connected.load(Ordering::SeqCst), 3);
    assert_eq!(srv.server.connections().len(), 3);
    let first = srv.server.connections()[0].clone();
    for c in clients {
        c.close().await;
    }
    for _ in 0..100 {
        if srv.server.connections().is_empty() && disconnected.load(Ordering::SeqCst) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(disconnected.load(Ordering::SeqCst), 3);
    assert!(srv.server.connections().is_empty());
    assert!(!first.is_connected());
    assert_eq!(
        first.session(|s| s.admin),
        None,
        "a closed connection has no session"
    );
    assert!(
        !first.emit("x", &1),
        "emitting to a closed connection reports it"
    );
}

/// A snapshot far larger than a WebSocket fragment (16 KiB) goes out in fragments and arrives
/// whole, multi-byte characters cut between fragments included; so do later large messages.
#[tokio::test]
async fn large_messages_arrive_whole_across_fragments() {
    // "é" is two bytes: with 3-byte prefixes some fragment boundary falls inside one.
    let seed: Vec<_> = (0..3000)
        .map(|i| crate::apps::doc(&format!("{i:03}{}", "é".repeat(20)), ""))
        .collect();
    let srv = TestServer::start(docs_app(seed)).await;
    let mut c = srv.client().await;
    let docs = c.collection("docs");
    assert_eq!(docs.len(), 3000);
    let text = serde_json::to_string(c.log()).unwrap();
    assert!(
        text.len() > 100_000,
        "the snapshot is large: {} bytes",
        text.len()
    );
    assert!(
        docs.values().all(|m| m["title"]
            .as_str()
            .is_some_and(|t| t.ends_with(&"é".repeat(20)))),
        "every title intact"
    );
    // A large change after the snapshot.
    let oid = *docs.keys().next().unwrap();
    let long = "ü".repeat(40_000);
    let title = long.clone();
    srv.server
        .world()
        .collection::<crate::apps::Docs>()
        .update(Oid::from_raw(oid), move |d| {
            d.set_title(title);
        })
        .await
        .unwrap();
    c.wait_until(|c| {
        c.model("docs", oid)
            .is_some_and(|m| m["title"] == long.as_str())
    })
    .await
    .unwrap();
    let other = srv.client().await;
    assert_eq!(other.model("docs", oid).unwrap()["title"], long.as_str());
    other.close().await;
}
