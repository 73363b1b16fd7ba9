//! Snapshot, server-side changes, client changes, visibility changes (behaviours 1, 2, 3, 5).

use std::time::Duration;

use example_game::{Player, Players, Session};
use omni_runtime::client::ClientError;
use omni_runtime::prelude::*;
use omni_tests::TestServer;
use serde_json::{Value, json};

use crate::apps::{DocSession, Docs, doc, docs_app};

const QUIET: Duration = Duration::from_millis(150);

fn player(name: &str, online: bool, password: &str) -> Player {
    Player {
        name: name.into(),
        x: 1,
        y: 2,
        online,
        color: 3,
        _password: password.into(),
        _node: 0,
    }
}

fn no_password(log: &[Value]) {
    for msg in log {
        let text = msg.to_string();
        assert!(
            !text.contains("hunter2"),
            "a message carried the password: {text}"
        );
        // The field's name appears only where the client itself named it: in the refusal.
        let mut without_reason = msg.clone();
        without_reason.as_object_mut().unwrap().remove("reason");
        assert!(
            !without_reason.to_string().contains("_password"),
            "a message named the private field: {text}"
        );
    }
}

#[tokio::test]
async fn snapshot_holds_visible_models_and_readable_attributes_only() {
    let srv = TestServer::start(Omni::<Session>::new().collection(Players::with([
        player("Jim", true, "hunter2"),
        player("Bob", false, "hunter2"),
    ])))
    .await;
    let c = srv.client().await;
    let players = c.collection("players");
    assert_eq!(
        players.len(),
        1,
        "offline Bob must not be visible: {players:?}"
    );
    let (oid, jim) = players.iter().next().unwrap();
    assert!(*oid > 0);
    assert_eq!(
        Value::Object(jim.clone()),
        json!({"name": "Jim", "x": 1, "y": 2, "online": true, "color": 3})
    );
    assert!(c.collection("messages").is_empty());
    no_password(c.log());
}

#[tokio::test]
async fn connect_hook_runs_before_the_snapshot_and_shapes_it() {
    let app = Omni::<Session>::new()
        .collection(Players::with([
            player("Jim", true, "hunter2"),
            player("Bob", false, "hunter2"),
        ]))
        .on_connect(|conn: Conn<Session>| async move {
            let bob = conn
                .world()
                .collection::<Players>()
                .find(|p| p.name == "Bob")
                .map(|(oid, _)| oid);
            conn.update_session(|s| s.player = bob);
        });
    let srv = TestServer::start(app).await;
    let c = srv.client().await;
    let names: Vec<_> = c
        .collection("players")
        .values()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(
        names,
        vec![json!("Jim"), json!("Bob")],
        "Bob sees himself although offline"
    );
}

#[tokio::test]
async fn server_changes_reach_clients_with_only_the_changed_readable_attributes() {
    let srv = TestServer::start(
        Omni::<Session>::new().collection(Players::with([player("Jim", true, "hunter2")])),
    )
    .await;
    let mut a = srv.client().await;
    let mut b = srv.client().await;
    let players = srv.server.world().collection::<Players>();
    let (jim, _) = players.find(|p| p.name == "Jim").unwrap();

    // A change from another task.
    let handle = players.clone();
    tokio::spawn(async move {
        handle
            .update(jim, |p| {
                p.set_x(42);
                p.set_password("changed".into());
            })
            .await
            .unwrap();
    })
    .await
    .unwrap();
    for c in [&mut a, &mut b] {
        let msg = c.wait_for(|m| m["t"] == "change").await.unwrap();
        assert_eq!(
            msg,
            json!({"t": "change", "c": "players", "oid": jim.raw(), "set": {"x": 42}})
        );
    }

    // Add and remove.
    let ann = players
        .insert(player("Ann", true, "hunter2"))
        .await
        .unwrap();
    let hidden = players
        .insert(player("Hidden", false, "hunter2"))
        .await
        .unwrap();
    a.wait_until(|c| c.model("players", ann.raw()).is_some())
        .await
        .unwrap();
    assert!(a.model("players", hidden.raw()).is_none());
    players.remove(ann).await.unwrap();
    a.wait_until(|c| c.model("players", ann.raw()).is_none())
        .await
        .unwrap();
    b.wait_until(|c| c.model("players", ann.raw()).is_none())
        .await
        .unwrap();
    // The offline player's removal is not sent to anyone: nobody held it.
    players.remove(hidden).await.unwrap();
    let rest = a.drain(QUIET).await.unwrap();
    assert!(rest.is_empty(), "unexpected messages: {rest:?}");
    no_password(a.log());
    no_password(b.log());
}

#[tokio::test]
async fn attribute_level_permissions_filter_each_change() {
    let srv = TestServer::start(docs_app(vec![doc("Plan", "secret")])).await;
    let mut user = srv.client().await;
    let mut admin = srv.client().await;
    let _: bool = admin.trigger("admin", &json!({"on": true})).await.unwrap();
    let (oid, d) = user.collection("docs").into_iter().next().unwrap();
    assert!(d.get("note").is_none(), "note is admin-only: {d:?}");
    assert_eq!(admin.model("docs", oid).unwrap()["note"], "secret");

    let docs = srv.server.world().collection::<Docs>();
    docs.update(Oid::from_raw(oid), |d| {
        d.set_note("new secret".into());
    })
    .await
    .unwrap();
    admin
        .wait_until(|c| c.model("docs", oid).unwrap()["note"] == "new secret")
        .await
        .unwrap();
    let seen = user.drain(QUIET).await.unwrap();
    assert!(
        seen.is_empty(),
        "the user must get nothing for an unreadable attribute: {seen:?}"
    );

    docs.update(Oid::from_raw(oid), |d| {
        d.set_note("both".into());
        d.set_title("Plan B".into());
    })
    .await
    .unwrap();
    let msg = user.wait_for(|m| m["t"] == "change").await.unwrap();
    assert_eq!(msg["set"], json!({"title": "Plan B"}));
    let msg = admin.wait_for(|m| m["t"] == "change").await.unwrap();
    assert_eq!(msg["set"], json!({"title": "Plan B", "note": "both"}));
}

#[tokio::test]
async fn client_change_is_applied_only_when_allowed_and_acknowledged() {
    let srv = TestServer::start(example_game::app("unused")).await;
    srv.server
        .world()
        .collection::<Players>()
        .insert(player("Jim", true, "hunter2"))
        .await
        .unwrap();
    let mut ann = srv.client().await;
    let mut other = srv.client().await;
    let reply: Value = ann
        .trigger("login", &json!({"name": "Ann", "password": "hunter2"}))
        .await
        .unwrap();
    let me = reply["oid"].as_u64().unwrap();
    let jim = other
        .collection("players")
        .iter()
        .find(|(_, p)| p["name"] == "Jim")
        .map(|(o, _)| *o)
        .unwrap();

    // Allowed: own position. The writer gets the change, then the ack; the other client the change.
    ann.change("players", me, json!({"x": 100})).await.unwrap();
    assert_eq!(ann.model("players", me).unwrap()["x"], 100);
    other
        .wait_until(|c| c.model("players", me).is_some_and(|p| p["x"] == 100))
        .await
        .unwrap();

    // Refused: someone else's position. The reject carries the authoritative model.
    let id = ann
        .send(json!({"t": "change", "c": "players", "oid": jim, "set": {"x": 7}}))
        .await
        .unwrap();
    let reject = ann.wait_for(|m| m["id"] == id).await.unwrap();
    assert_eq!(reject["t"], "reject");
    let reason = reject["reason"].as_str().unwrap();
    assert!(
        reason.contains("permission denied")
            && reason.contains("`x`")
            && reason.contains("players/Player"),
        "{reason}"
    );
    assert_eq!(
        reject["m"],
        json!({"oid": jim, "name": "Jim", "x": 1, "y": 2, "online": true, "color": 3})
    );

    // Invalid: wrong type, private attribute, read-only attribute, unknown attribute, and a
    // patch with one good and one bad attribute: nothing applied.
    let cases = [
        (
            json!({"x": "abc"}),
            "attribute `x` of model `Player` expected",
        ),
        (
            json!({"_password": "x"}),
            "`_password` of model `Player` is server-only",
        ),
        (json!({"name": "Bobby"}), "`name` of players/Player"),
        (json!({"z": 1}), "`z` of model `Player` is not an attribute"),
        (json!({"x": 5, "y": "no"}), "attribute `y`"),
        (json!({"x": 100000}), "permission denied"),
    ];
    for (set, expected) in cases {
        let err = ann.change("players", me, set.clone()).await.unwrap_err();
        let ClientError::Refused(reason) = err else {
            panic!("{err}")
        };
        assert!(
            reason.contains(expected),
            "patch {set}: reason `{reason}` should contain `{expected}`"
        );
    }
    let server_ann = srv
        .server
        .world()
        .collection::<Players>()
        .get(Oid::from_raw(me))
        .unwrap();
    assert_eq!((server_ann.x, server_ann.name.as_str()), (100, "Ann"));
    assert_eq!(
        ann.model("players", me).unwrap()["x"],
        100,
        "the client's copy is the server's"
    );
    let rest = other.drain(QUIET).await.unwrap();
    assert!(
        rest.iter()
            .all(|m| m["t"] != "change" || m["c"] != "players"),
        "refused writes must not reach others: {rest:?}"
    );
    no_password(ann.log());
    no_password(other.log());
}

#[tokio::test]
async fn visibility_follows_changes_and_sync() {
    let srv = TestServer::start(example_game::app("unused")).await;
    let mut ann = srv.client().await;
    let mut watcher = srv.client().await;
    let reply: Value = ann
        .trigger("login", &json!({"name": "Ann", "password": "pw"}))
        .await
        .unwrap();
    let me = reply["oid"].as_u64().unwrap();
    // Ann went online: the watcher gets an add.
    watcher
        .wait_until(|c| c.model("players", me).is_some())
        .await
        .unwrap();
    // Ann leaves: the disconnect hook sets online = false, which hides her from the watcher.
    ann.close().await;
    watcher
        .wait_until(|c| c.model("players", me).is_none())
        .await
        .unwrap();

    // Attribute visibility through sync(): becoming admin shows `note`, and nothing else is sent.
    let srv = TestServer::start(docs_app(vec![doc("Plan", "secret")])).await;
    let mut user = srv.client().await;
    let (oid, _) = user.collection("docs").into_iter().next().unwrap();
    let start = user.log().len();
    let _: bool = user.trigger("admin", &json!({"on": true})).await.unwrap();
    let got: Vec<Value> = user.log()[start..]
        .iter()
        .filter(|m| m["t"] != "reply" && m["t"] != "at")
        .cloned()
        .collect();
    assert_eq!(
        got,
        vec![
            json!({"t": "change", "c": "docs", "oid": oid, "set": {"note": "secret"}}),
            json!({"t": "sync"}),
        ],
        "the changes, then `sync` (Omni.js's event)"
    );
    // And back: the attribute is removed.
    let start = user.log().len();
    let _: bool = user.trigger("admin", &json!({"on": false})).await.unwrap();
    let got: Vec<Value> = user.log()[start..]
        .iter()
        .filter(|m| m["t"] != "reply" && m["t"] != "at")
        .cloned()
        .collect();
    assert_eq!(
        got,
        vec![
            json!({"t": "change", "c": "docs", "oid": oid, "set": {}, "unset": ["note"]}),
            json!({"t": "sync"}),
        ]
    );
    // A sync that changes nothing sends nothing, not even `sync`.
    let start = user.log().len();
    let _: bool = user.trigger("admin", &json!({"on": false})).await.unwrap();
    let got: Vec<&Value> = user.log()[start..]
        .iter()
        .filter(|m| m["t"] != "reply" && m["t"] != "at")
        .collect();
    assert!(got.is_empty(), "{got:?}");
    assert!(user.model("docs", oid).unwrap().get("note").is_none());

    // A change that hides a whole model removes it; one that shows it adds it back.
    let mut admin = srv.client().await;
    let _: bool = admin.trigger("admin", &json!({"on": true})).await.unwrap();
    admin
        .change("docs", oid, json!({"hidden": true}))
        .await
        .unwrap();
    user.wait_until(|c| c.model("docs", oid).is_none())
        .await
        .unwrap();
    assert!(admin.model("docs", oid).is_some());
    admin
        .change("docs", oid, json!({"hidden": false}))
        .await
        .unwrap();
    user.wait_until(|c| c.model("docs", oid).is_some())
        .await
        .unwrap();
    let _ = DocSession::default();
}

/// A model with a float, writable and creatable by anyone.
#[derive(Model, Clone, Default, Debug)]
struct Reading {
    value: f64,
}

impl Permissions<()> for Reading {
    fn can_write(&self, _: &Access<'_, (), Self>, _: &ReadingChange) -> bool {
        true
    }
}

#[collection(model = Reading)]
struct Readings;

impl CollectionPermissions<()> for Readings {
    fn can_create(&self, _: &Ctx<'_, ()>, _: &Reading) -> bool {
        true
    }
}

#[tokio::test]
async fn floats_round_trip_exactly_between_clients_and_server() {
    // The fuzzer's find. The server holds 9.197666580629651 and sends it in that shortest form;
    // serde_json's fast parser (without `float_roundtrip`) reads that back as 9.197666580629653.
    let text = "9.1976665806296508";
    let exact: f64 = text.parse().unwrap(); // std's parser rounds correctly
    let srv = TestServer::start(Omni::<()>::new().collection(Readings::with([]))).await;
    let readings = srv.server.world().collection::<Readings>();
    let mut writer = srv.client().await;
    let mut observer = srv.client().await;
    writer
        .send_raw(format!(
            r#"{{"t":"add","c":"readings","tmp":"t1","m":{{"value":{text}}},"id":1}}"#
        ))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let oid = loop {
        if let Some((oid, _)) = readings.all().into_iter().next() {
            break oid;
        }
        assert!(tokio::time::Instant::now() < deadline, "the add arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let held = readings.get(oid).unwrap().value;
    assert_eq!(
        held.to_bits(),
        exact.to_bits(),
        "server holds {held}, not {exact}"
    );
    // Every client holds exactly the server's value.
    let seen = observer
        .wait_model::<Readings>(oid, |_| true)
        .await
        .unwrap();
    assert_eq!(seen.value.to_bits(), exact.to_bits());
    // A change, with a shortest-form value the fast parser also misreads.
    let text = "9.385340690612793"; // serde_json without float_roundtrip: 9.385340690612791
    let exact: f64 = text.parse().unwrap();
    writer
        .send_raw(format!(
            r#"{{"t":"change","c":"readings","oid":{},"set":{{"value":{text}}},"id":2}}"#,
            oid.raw()
        ))
        .await
        .unwrap();
    let seen = observer
        .wait_model::<Readings>(oid, |r| r.value != held)
        .await
        .unwrap();
    assert_eq!(seen.value.to_bits(), exact.to_bits());
    assert_eq!(readings.get(oid).unwrap().value.to_bits(), exact.to_bits());
}
