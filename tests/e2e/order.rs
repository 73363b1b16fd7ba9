//! Order and consistency under concurrent writers (behaviour 9).

use std::time::Duration;

use omni_runtime::client::Client;
use omni_runtime::prelude::*;
use omni_tests::TestServer;
use serde_json::{Value, json};

use crate::apps::{Docs, doc, docs_app};

#[tokio::test]
async fn each_connection_sees_changes_in_the_order_the_server_applied_them() {
    let srv = TestServer::start(docs_app(vec![doc("counter", "")])).await;
    let mut writer = srv.client().await;
    let mut observer = srv.client().await;
    let oid = *writer.collection("docs").keys().next().unwrap();
    // Pipelined: 300 changes sent without waiting, then all acks awaited.
    let mut ids = Vec::new();
    for i in 1..=300 {
        ids.push(
            writer
                .send(json!({"t": "change", "c": "docs", "oid": oid, "set": {"counter": i}}))
                .await
                .unwrap(),
        );
    }
    for id in ids {
        writer.answer(id).await.unwrap();
    }
    observer
        .wait_until(|c| c.model("docs", oid).unwrap()["counter"] == 300)
        .await
        .unwrap();
    let seen: Vec<i64> = observer
        .log()
        .iter()
        .filter(|m| m["t"] == "change")
        .filter_map(|m| m["set"]["counter"].as_i64())
        .collect();
    assert_eq!(
        seen,
        (1..=300).collect::<Vec<_>>(),
        "every change, once, in order"
    );
}

#[tokio::test]
async fn concurrent_writers_end_with_every_client_holding_the_server_state() {
    let seed = (0..5).map(|i| doc(&format!("doc{i}"), "")).collect();
    let srv = TestServer::start(docs_app(seed)).await;
    let url = srv.url();
    let mut writers = Vec::new();
    for w in 0..6u64 {
        let url = url.clone();
        writers.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await.unwrap();
            let oids: Vec<u64> = c.collection("docs").keys().copied().collect();
            let mut ids = Vec::new();
            for i in 0..100u64 {
                let oid = oids[((i + w) % oids.len() as u64) as usize];
                let set = json!({"counter": w * 1000 + i, "title": format!("w{w}-{i}")});
                ids.push(
                    c.send(json!({"t": "change", "c": "docs", "oid": oid, "set": set}))
                        .await
                        .unwrap(),
                );
            }
            for id in ids {
                c.answer(id).await.unwrap();
            }
            c
        }));
    }
    let mut clients = Vec::new();
    for w in writers {
        clients.push(w.await.unwrap());
    }
    clients.push(srv.client().await); // a late joiner, from the snapshot alone
    // The server's state, as clients would see it.
    let server: Vec<(u64, Value)> = srv
        .server
        .world()
        .collection::<Docs>()
        .all()
        .into_iter()
        .map(|(oid, d)| {
            (
                oid.raw(),
                json!({"title": d.title, "hidden": d.hidden, "counter": d.counter}),
            )
        })
        .collect();
    for c in &mut clients {
        c.drain(Duration::from_millis(200)).await.unwrap();
        let held: Vec<(u64, Value)> = c
            .collection("docs")
            .into_iter()
            .map(|(oid, m)| (oid, Value::Object(m)))
            .collect();
        assert_eq!(
            held,
            server,
            "client {} diverged from the server",
            c.conn_id()
        );
    }
}
