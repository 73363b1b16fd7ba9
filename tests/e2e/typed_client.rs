//! The typed layer of the Rust client (`Client::models`, `get`, `set`, `create`, `destroy`,
//! `wait_model`, typed `trigger`) against real servers.

use example_game::{Player, PlayerChange, Players};
use omni_runtime::client::ClientError;
use omni_runtime::prelude::*;
use omni_tests::TestServer;

use crate::apps::{DocChange, Docs, doc, docs_app};

/// The `login` event's arguments and reply as a Rust client declares them.
#[derive(Serialize)]
struct Login<'a> {
    name: &'a str,
    password: &'a str,
}

#[derive(Deserialize, Debug)]
struct LoggedIn {
    oid: Oid<Player>,
}

#[tokio::test]
async fn typed_login_set_and_get_reach_other_clients() {
    let srv = TestServer::start(example_game::app("unused")).await;
    let mut ann = srv.client().await;
    let mut bob = srv.client().await;
    assert!(ann.models::<Players>().unwrap().is_empty());

    let me: LoggedIn = ann
        .trigger(
            "login",
            &Login {
                name: "Ann",
                password: "pw",
            },
        )
        .await
        .unwrap();
    let player = ann
        .wait_model::<Players>(me.oid, |p| p.online)
        .await
        .unwrap();
    assert_eq!(player.name, "Ann");
    assert!(
        player._password.is_empty(),
        "a server-only field never reaches a client"
    );

    ann.set::<Players>(me.oid, PlayerChange::X(123))
        .await
        .unwrap();
    assert_eq!(ann.get::<Players>(me.oid).unwrap().unwrap().x, 123);
    let seen = bob
        .wait_model::<Players>(me.oid, |p| p.x == 123)
        .await
        .unwrap();
    assert_eq!((seen.name.as_str(), seen.online), ("Ann", true));
    let all = bob.models::<Players>().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0, me.oid);

    // Several attributes at once.
    ann.set_all::<Players>(me.oid, [PlayerChange::X(7), PlayerChange::Y(9)])
        .await
        .unwrap();
    let p = ann.get::<Players>(me.oid).unwrap().unwrap();
    assert_eq!((p.x, p.y), (7, 9));

    // Refusals are errors and change nothing.
    let err = ann
        .set::<Players>(me.oid, PlayerChange::X(100_000))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused(_)), "{err}");
    let err = bob
        .set::<Players>(me.oid, PlayerChange::X(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r.contains("permission denied")),
        "{err}"
    );
    let err = ann
        .set::<Players>(me.oid, PlayerChange::Name("Eve".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r.contains("read-only")),
        "{err}"
    );
    let p = ann.get::<Players>(me.oid).unwrap().unwrap();
    assert_eq!((p.name.as_str(), p.x, p.y), ("Ann", 7, 9));
    let (oid, found) = bob
        .find::<Players>(|p| p.name == "Ann")
        .unwrap()
        .expect("Bob holds Ann");
    assert_eq!((oid, found.x), (me.oid, 7));

    // A typed reply of an event that fails is a refusal with the handler's message.
    let err = ann
        .trigger::<_, LoggedIn>(
            "login",
            &Login {
                name: "Ann",
                password: "pw",
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r.contains("already logged in")),
        "{err}"
    );
}

#[tokio::test]
async fn typed_create_and_destroy() {
    let srv = TestServer::start(docs_app(vec![doc("first", "secret note")])).await;
    let mut alice = srv.client().await;
    let mut watcher = srv.client().await;

    let docs = alice.models::<Docs>().unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].1.title, "first");
    assert!(
        docs[0].1.note.is_empty(),
        "an attribute the connection may not read keeps its default"
    );

    let mut new = doc("second", "");
    new.counter = 42;
    let oid = alice.create::<Docs>(new).await.unwrap();
    let created = alice
        .get::<Docs>(oid)
        .unwrap()
        .expect("the creator holds it");
    assert_eq!((created.title.as_str(), created.counter), ("second", 42));
    assert!(
        created._owner_token.is_empty(),
        "server-only fields are not sent"
    );
    let seen = watcher
        .wait_model::<Docs>(oid, |d| d.counter == 42)
        .await
        .unwrap();
    assert_eq!(seen.title, "second");

    // The collection's create hook refuses an empty title.
    let err = alice.create::<Docs>(doc("", "")).await.unwrap_err();
    assert!(matches!(err, ClientError::Refused(_)), "{err}");

    // All or nothing: one refused attribute refuses the whole patch.
    let err = alice
        .set_all::<Docs>(oid, [DocChange::Counter(1), DocChange::Note("x".into())])
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused(_)), "{err}");
    assert_eq!(alice.get::<Docs>(oid).unwrap().unwrap().counter, 42);

    // Only admins may destroy; a typed event makes this connection one.
    let err = alice.destroy::<Docs>(oid).await.unwrap_err();
    assert!(matches!(err, ClientError::Refused(_)), "{err}");
    let admin: bool = alice
        .trigger("admin", &serde_json::json!({"on": true}))
        .await
        .unwrap();
    assert!(admin);
    alice.destroy::<Docs>(oid).await.unwrap();
    assert_eq!(alice.get::<Docs>(oid).unwrap().map(|d| d.title), None);
    watcher
        .wait_until(|c| c.get::<Docs>(oid).unwrap().is_none())
        .await
        .unwrap();
    assert_eq!(watcher.models::<Docs>().unwrap().len(), 1);
}

#[tokio::test]
async fn the_game_refuses_oversized_names_and_passwords_and_keeps_nothing() {
    use example_game::{MAX_NAME_CHARS, MAX_PASSWORD_BYTES};
    let srv = TestServer::start(example_game::app("unused")).await;
    let mut ann = srv.client().await;
    let players = srv.server.world().collection::<Players>();
    let long_name = "é".repeat(MAX_NAME_CHARS + 1);
    let huge_password = "p".repeat(512 << 10); // under the 1 MiB frame limit
    for (name, password, reason) in [
        (long_name.as_str(), "pw", "a name has 1 to 24 characters"),
        ("   ", "pw", "a name has 1 to 24 characters"),
        (
            "Ann",
            huge_password.as_str(),
            "a password has at most 128 bytes",
        ),
    ] {
        let err = ann
            .trigger::<_, LoggedIn>("login", &Login { name, password })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Refused(r) if r == reason),
            "{err}"
        );
    }
    assert_eq!(players.len(), 0, "no player was created");
    // The bounds themselves are allowed: 24 characters of two bytes each, 128 bytes.
    let name = "é".repeat(MAX_NAME_CHARS);
    let password = "p".repeat(MAX_PASSWORD_BYTES);
    let me: LoggedIn = ann
        .trigger(
            "login",
            &Login {
                name: &name,
                password: &password,
            },
        )
        .await
        .unwrap();
    assert_eq!(players.get(me.oid).unwrap().name, name);
}
