//! Client add and remove (behaviour 4).

use std::time::Duration;

use omni_runtime::client::ClientError;
use omni_tests::TestServer;
use serde_json::{Value, json};

#[tokio::test]
async fn add_needs_the_create_hook_and_maps_the_temporary_id_to_an_oid() {
    let srv = TestServer::start(example_game::app("unused")).await;
    let mut ann = srv.client().await;
    let mut other = srv.client().await;

    // Not logged in: the create hook refuses; the reject names the temporary id.
    let id = ann
        .send(json!({"t": "add", "c": "messages", "tmp": "c1", "m": {"text": "hi"}}))
        .await
        .unwrap();
    let reject = ann.wait_for(|m| m["id"] == id).await.unwrap();
    assert_eq!(reject["t"], "reject");
    assert_eq!(reject["tmp"], "c1");
    assert!(
        reject["reason"]
            .as_str()
            .unwrap()
            .contains("may not create models in `messages`"),
        "{reject}"
    );

    let reply: Value = ann
        .trigger("login", &json!({"name": "Ann", "password": "pw"}))
        .await
        .unwrap();
    let me = reply["oid"].as_u64().unwrap();
    let id = ann
        .send(json!({"t": "add", "c": "messages", "tmp": "c2", "m": {"text": "hello"}}))
        .await
        .unwrap();
    let created = ann.wait_for(|m| m["id"] == id).await.unwrap();
    assert_eq!(created["t"], "created");
    assert_eq!(created["tmp"], "c2");
    let oid = created["oid"].as_u64().unwrap();
    // Server defaults and server-filled fields come back with the OID.
    assert_eq!(
        created["m"],
        json!({"oid": oid, "text": "hello", "author": "Ann", "author_oid": me})
    );
    // The creator gets `created`, not also an `add`.
    assert!(
        !ann.log()
            .iter()
            .any(|m| m["t"] == "add" && m["c"] == "messages")
    );
    other
        .wait_until(|c| c.model("messages", oid).is_some())
        .await
        .unwrap();
    assert_eq!(other.model("messages", oid).unwrap()["author"], "Ann");

    // Read-only attributes cannot be set on create; bad types are refused.
    for m in [
        json!({"text": "x", "author": "Mallory"}),
        json!({"text": 5}),
    ] {
        let id = ann
            .send(json!({"t": "add", "c": "messages", "tmp": "c3", "m": m}))
            .await
            .unwrap();
        let answer = ann.wait_for(|msg| msg["id"] == id).await.unwrap();
        assert_eq!(answer["t"], "reject", "{m} must be refused: {answer}");
    }
    assert_eq!(
        srv.server
            .world()
            .collection::<example_game::Messages>()
            .len(),
        1
    );
}

#[tokio::test]
async fn remove_needs_the_destroy_hook() {
    let srv = TestServer::start(example_game::app("unused")).await;
    let mut ann = srv.client().await;
    let mut bob = srv.client().await;
    let _: Value = ann
        .trigger("login", &json!({"name": "Ann", "password": "pw"}))
        .await
        .unwrap();
    let _: Value = bob
        .trigger("login", &json!({"name": "Bob", "password": "pw"}))
        .await
        .unwrap();
    let oid = ann.add("messages", json!({"text": "mine"})).await.unwrap();
    bob.wait_until(|c| c.model("messages", oid).is_some())
        .await
        .unwrap();

    let err = bob.remove("messages", oid).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r.contains("may not remove messages/Message")),
        "{err}"
    );
    assert!(
        ann.drain(Duration::from_millis(100))
            .await
            .unwrap()
            .iter()
            .all(|m| m["t"] != "remove")
    );

    ann.remove("messages", oid).await.unwrap();
    assert!(ann.model("messages", oid).is_none());
    bob.wait_until(|c| c.model("messages", oid).is_none())
        .await
        .unwrap();
    assert_eq!(
        srv.server
            .world()
            .collection::<example_game::Messages>()
            .len(),
        0
    );

    // Removing what does not exist is an error naming the collection and OID.
    let err = ann.remove("messages", oid).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r.contains(&format!("`messages` has no model with oid {oid}"))),
        "{err}"
    );
}
