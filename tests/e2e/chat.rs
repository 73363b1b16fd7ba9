//! The chat example (examples/chat): its rooms are live queries on a queried collection, and the
//! server keeps at most `KEPT_PER_ROOM` lines per room.

use std::time::Duration;

use example_chat::{KEPT_PER_ROOM, Message, MessageChange, Messages};
use omni_runtime::client::ClientError;
use omni_runtime::prelude::*;
use omni_tests::TestServer;
use serde_json::json;

fn last(room: &str, n: usize) -> Query<Message> {
    Query::new()
        .eq(MessageChange::Room(room.into()))
        .order_by_oid(Dir::Desc)
        .limit(n)
}

#[tokio::test]
async fn a_room_keeps_its_last_lines_and_a_page_holds_what_it_asked_for() {
    let srv = TestServer::start(example_chat::app("unused")).await;
    let messages = srv.server.world().collection::<Messages>();
    let mut c = srv.client().await;
    assert!(
        c.models::<Messages>().unwrap().is_empty(),
        "a queried collection"
    );
    let room: String = c
        .trigger("join", &json!({"name": "ann", "room": "attic"}))
        .await
        .unwrap();
    assert_eq!(room, "attic");
    c.query::<Messages>("last", &last("attic", 50))
        .await
        .unwrap();
    assert!(c.results::<Messages>("last").unwrap().is_empty());

    // More lines than the server keeps: the oldest go, as the example says.
    let total = KEPT_PER_ROOM + 20;
    for i in 0..total {
        let line = Message {
            room: "attic".into(),
            author: "bot".into(),
            text: format!("line {i}"),
        };
        messages.insert(line).await.unwrap();
    }
    let kept = || {
        messages
            .all()
            .into_iter()
            .filter(|(_, m)| m.room == "attic")
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while kept() != KEPT_PER_ROOM {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} lines kept",
            kept()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let oldest = messages
        .all()
        .into_iter()
        .filter(|(_, m)| m.room == "attic")
        .min_by_key(|(oid, _)| *oid)
        .unwrap()
        .1;
    assert_eq!(oldest.text, format!("line {}", total - KEPT_PER_ROOM));
    // The lobby's welcome line is untouched.
    assert!(messages.find(|m| m.room == "lobby").is_some());

    // The page holds its window: the last 50, newest first.
    c.wait_until(|c| {
        c.results::<Messages>("last")
            .unwrap()
            .first()
            .is_some_and(|(_, m)| m.text == format!("line {}", total - 1))
    })
    .await
    .unwrap();
    assert_eq!(c.models::<Messages>().unwrap().len(), 50);
    assert!(c.window::<Messages>("last").unwrap().more);

    // `can_query`: another room, or a page larger than the example allows, is refused.
    for q in [last("lobby", 50), last("attic", KEPT_PER_ROOM + 1)] {
        match c.query::<Messages>("other", &q).await {
            Err(ClientError::Refused(reason)) => assert!(reason.contains("can_query"), "{reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
