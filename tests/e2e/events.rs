//! Events: typed handlers, replies matched by id, errors (behaviour 6).

use omni_runtime::client::ClientError;
use omni_tests::TestServer;
use serde_json::json;

use crate::apps::docs_app;

#[tokio::test]
async fn replies_are_matched_by_request_id_not_by_order() {
    let srv = TestServer::start(docs_app(vec![])).await;
    let mut c = srv.client().await;
    let slow = c
        .send(json!({"t": "event", "name": "sleep", "args": {"ms": 300, "echo": "slow"}}))
        .await
        .unwrap();
    let fast = c
        .send(json!({"t": "event", "name": "sleep", "args": {"ms": 0, "echo": "fast"}}))
        .await
        .unwrap();
    let first = c.wait_for(|m| m["t"] == "reply").await.unwrap();
    assert_eq!(first, json!({"t": "reply", "id": fast, "ok": "fast"}));
    let second = c.wait_for(|m| m["t"] == "reply").await.unwrap();
    assert_eq!(second, json!({"t": "reply", "id": slow, "ok": "slow"}));
}

#[tokio::test]
async fn unknown_events_bad_arguments_errors_and_panics_are_reported() {
    let srv = TestServer::start(docs_app(vec![])).await;
    let mut c = srv.client().await;
    let refused = |r: Result<serde_json::Value, ClientError>| match r {
        Err(ClientError::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refused(c.trigger("nope", &json!({})).await),
        "unknown event `nope`"
    );
    let reason = refused(c.trigger("sleep", &json!({"ms": "soon"})).await);
    assert!(
        reason.starts_with("event `sleep`: bad arguments:"),
        "{reason}"
    );
    assert_eq!(
        refused(c.trigger("fail", &()).await),
        "this event always fails"
    );
    assert_eq!(
        refused(c.trigger("panic", &()).await),
        "event `panic` failed on the server"
    );
    // The connection and the server carry on.
    let ok: String = c
        .trigger("sleep", &json!({"ms": 0, "echo": "still here"}))
        .await
        .unwrap();
    assert_eq!(ok, "still here");
}

#[tokio::test]
async fn a_write_waits_for_the_events_sent_before_it() {
    let srv = TestServer::start(docs_app(vec![crate::apps::doc("a", "n")])).await;
    let mut c = srv.client().await;
    let oid = *c.collection("docs").keys().next().unwrap();
    // One frame: an event that makes the session admin after 150 ms, then a remove only an
    // admin may make. The remove is handled after the event, so it is allowed.
    c.send_raw(
        json!([
            {"t": "event", "id": 1, "name": "slow_admin", "args": {"on": true}},
            {"t": "remove", "id": 2, "c": "docs", "oid": oid},
        ])
        .to_string(),
    )
    .await
    .unwrap();
    let reply = c.answer(1).await.unwrap();
    assert_eq!(reply["ok"], true);
    let ack = c.answer(2).await.unwrap();
    assert_eq!(ack["t"], "ack");
    assert!(
        srv.server
            .world()
            .collection::<crate::apps::Docs>()
            .is_empty()
    );
    // Events themselves still run side by side: `replies_are_matched_by_request_id_not_by_order`.
}
