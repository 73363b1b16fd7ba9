//! Storage backends and middleware, announced changes, channels and per-action rules
//! (issue 7), each with real clients against a real server on 127.0.0.1.

use std::sync::Arc;

use omni_runtime::client::ClientError;
use omni_runtime::prelude::*;
use omni_runtime::storage::{Backend, BoxFuture, Next, StoreRequest, StoredModel};
use omni_tests::TestServer;
use parking_lot::Mutex;
use serde_json::{Value, json};

#[derive(Default)]
pub(crate) struct Sess {
    name: String,
}

/// A chat message; `room` is its channel.
#[derive(Model, Clone, Default, Debug, Serialize, Deserialize)]
pub(crate) struct Note {
    pub(crate) room: String,
    pub(crate) text: String,
    /// Changes to it are answered by a middleware and never reach the backend.
    typing: bool,
    _secret: String,
}

impl Permissions<Sess> for Note {
    fn can_read(&self, _ctx: &Access<Sess, Self>, _attr: Option<NoteAttr>) -> bool {
        !self.text.starts_with("hidden")
    }
    fn can_write(&self, _ctx: &Access<Sess, Self>, _change: &NoteChange) -> bool {
        true
    }
}

#[collection(model = Note)]
pub(crate) struct Notes;

impl CollectionPermissions<Sess> for Notes {
    fn can_create(&self, _ctx: &Ctx<Sess>, _note: &Note) -> bool {
        true
    }
    fn can_destroy(&self, _ctx: &Ctx<Sess>, _note: &Note) -> bool {
        true
    }
    fn can_subscribe(&self, ctx: &Ctx<Sess>, channel: &str) -> bool {
        channel != "staff" || ctx.session().name == "admin"
    }
    fn on_create(&self, _ctx: &Ctx<Sess>, note: &mut Note) {
        note._secret = format!("secret of {}", note.text);
    }
}

/// A user store: records every request it gets, assigns ids of its own (from 1000 up) and can
/// be told to fail.
#[derive(Default, Clone)]
struct Recording {
    log: Arc<Mutex<Vec<String>>>,
    docs: Arc<Mutex<Vec<(u64, Value)>>>,
    fail: Arc<Mutex<bool>>,
}

impl Backend for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }
    fn load(&self, _: &'static str) -> Result<Option<Vec<StoredModel>>, StoreError> {
        Ok(None)
    }
    fn seed(&self, c: &'static str, models: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        self.log.lock().push(format!("seed {c} {}", models.len()));
        Ok(())
    }
    fn last_oid(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn call(&self, mut req: StoreRequest) -> BoxFuture<Result<StoreReply, StoreError>> {
        if *self.fail.lock() {
            return Box::pin(std::future::ready(Err(StoreError::failed("disk on fire"))));
        }
        if req.method == Method::Create {
            req.oid = req.oid.max(1000);
        }
        if let Some(doc) = &req.doc {
            self.docs
                .lock()
                .push((req.oid, serde_json::from_slice(doc).unwrap()));
        }
        let who = if req.conn.is_some() {
            "client"
        } else {
            "server"
        };
        self.log.lock().push(format!(
            "{} {} {} {who} {:?}",
            req.method, req.collection, req.oid, req.changed
        ));
        Box::pin(std::future::ready(Ok(StoreReply::done(&req))))
    }
}

fn notes_app(store: Recording) -> Omni<Sess> {
    Omni::<Sess>::new()
        .storage(store)
        .collection(Notes::empty())
        .persist::<Notes>()
        .middleware(Logging)
        // Answers a change of only `typing` (ephemeral: the backend never sees it), and refuses
        // clients' deletes of odd OIDs.
        .middleware(|req: StoreRequest, next: Next| async move {
            if req.method == Method::Update && req.changed == ["typing"] {
                return Ok(StoreReply::done(&req));
            }
            if req.method == Method::Delete && req.oid % 2 == 1 && req.conn.is_some() {
                return Err(StoreError::refused("odd notes are archived, not deleted"));
            }
            next.run(req).await
        })
        .channels::<Notes>(|n| &n.room)
        .event(
            "name",
            |conn: Conn<Sess>, _w: World, name: String| async move {
                conn.update_session(|s| s.name = name);
                Ok::<_, EventError>(())
            },
        )
        .event(
            "join",
            |conn: Conn<Sess>, _w: World, room: String| async move {
                Ok::<_, EventError>(conn.subscribe::<Notes>(&room))
            },
        )
}

pub(crate) async fn sub(
    c: &mut omni_runtime::client::Client,
    room: &str,
    on: bool,
) -> Result<Value, ClientError> {
    let t = if on { "sub" } else { "unsub" };
    let id = c.send(json!({"t": t, "c": "notes", "ch": room})).await?;
    c.answer(id).await
}

fn oids(c: &omni_runtime::client::Client) -> Vec<u64> {
    c.collection("notes").keys().copied().collect()
}

#[tokio::test]
async fn middleware_passes_answers_and_refuses_and_a_user_store_assigns_oids() {
    let store = Recording::default();
    let srv = TestServer::start(notes_app(store.clone())).await;
    let mut a = srv.client().await;
    let mut b = srv.client().await;
    sub(&mut a, "lobby", true).await.unwrap();
    sub(&mut b, "lobby", true).await.unwrap();

    // Create: the store assigns the id, and it reaches clients as the OID.
    let oid = a
        .add("notes", json!({"room": "lobby", "text": "hello"}))
        .await
        .unwrap();
    assert!(oid >= 1000, "the store's id is the OID: {oid}");
    b.wait_until(|c| c.model("notes", oid).is_some())
        .await
        .unwrap();
    // The store got the whole model, server-private fields included; clients never do.
    assert_eq!(
        store.docs.lock().last().unwrap(),
        &(
            oid,
            json!({"room": "lobby", "text": "hello", "typing": false, "_secret": "secret of hello"})
        )
    );
    assert!(!b.log().iter().any(|m| m.to_string().contains("secret of")));

    // Update passes down to the store, naming the changed attributes.
    a.change("notes", oid, json!({"text": "hello!"}))
        .await
        .unwrap();
    // Answered by a middleware: applied and sent, but the store never sees it.
    a.change("notes", oid, json!({"typing": true}))
        .await
        .unwrap();
    b.wait_until(|c| c.model("notes", oid).unwrap()["typing"] == true)
        .await
        .unwrap();

    // Refused by a middleware: the client gets its reason, nothing changes anywhere.
    let odd = if oid % 2 == 1 {
        oid
    } else {
        a.add("notes", json!({"room": "lobby", "text": "second"}))
            .await
            .unwrap()
    };
    assert_eq!(odd % 2, 1);
    let err = a.remove("notes", odd).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r.contains("odd notes are archived, not deleted") && r.contains("notes/Note")),
        "{err:?}"
    );
    assert!(
        srv.server
            .world()
            .collection::<Notes>()
            .get(Oid::from_raw(odd))
            .is_some()
    );

    // A failing backend: the write is refused with the storage's message and not applied.
    *store.fail.lock() = true;
    let err = a
        .change("notes", oid, json!({"text": "lost"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r.contains("storage failed: disk on fire")),
        "{err:?}"
    );
    assert_eq!(
        srv.server
            .world()
            .collection::<Notes>()
            .get(Oid::from_raw(oid))
            .unwrap()
            .text,
        "hello!"
    );
    // Server code gets the error too, and the model is restored.
    let err = srv
        .server
        .world()
        .collection::<Notes>()
        .update(Oid::from_raw(oid), |n| {
            n.set_text("also lost".into());
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("update of notes/Note"), "{err}");
    assert_eq!(
        srv.server
            .world()
            .collection::<Notes>()
            .get(Oid::from_raw(oid))
            .unwrap()
            .text,
        "hello!"
    );
    *store.fail.lock() = false;

    let log = store.log.lock().clone();
    assert_eq!(log[0], "seed notes 0");
    assert!(
        log.contains(&format!("create notes {oid} client []")),
        "{log:?}"
    );
    assert!(
        log.contains(&format!("update notes {oid} client [\"text\"]")),
        "{log:?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("typing")),
        "answered, never stored: {log:?}"
    );
    assert!(!log.iter().any(|l| l.starts_with("delete")), "{log:?}");
}

#[tokio::test]
async fn announced_changes_reach_clients_without_touching_the_store() {
    let store = Recording::default();
    let srv = TestServer::start(notes_app(store.clone())).await;
    let mut a = srv.client().await;
    sub(&mut a, "lobby", true).await.unwrap();
    let notes = srv.server.world().collection::<Notes>();
    let note = |text: &str| Note {
        room: "lobby".into(),
        text: text.into(),
        ..Default::default()
    };

    assert!(notes.announce_created(Oid::from_raw(77), note("from the db")));
    assert!(
        !notes.announce_created(Oid::from_raw(77), note("twice")),
        "OID in use"
    );
    a.wait_until(|c| {
        c.model("notes", 77)
            .is_some_and(|m| m["text"] == "from the db")
    })
    .await
    .unwrap();

    assert!(notes.announce_updated(Oid::from_raw(77), note("edited in the db")));
    let change = a
        .wait_for(|m| m["t"] == "change" && m["oid"] == 77)
        .await
        .unwrap();
    assert_eq!(
        change["set"],
        json!({"text": "edited in the db"}),
        "only what changed"
    );

    assert!(notes.announce_deleted(Oid::from_raw(77)));
    assert!(!notes.announce_deleted(Oid::from_raw(77)));
    a.wait_until(|c| c.model("notes", 77).is_none())
        .await
        .unwrap();

    // A model the engine creates afterwards never reuses an announced OID.
    let next = notes.insert(note("after")).await.unwrap();
    assert!(next.raw() > 77);
    let log = store.log.lock().clone();
    assert_eq!(
        log,
        [
            "seed notes 0".to_owned(),
            format!("create notes {} server []", next.raw())
        ]
    );
}

#[tokio::test]
async fn channels_isolate_their_models_between_clients() {
    let srv = TestServer::start(notes_app(Recording::default())).await;
    let notes = srv.server.world().collection::<Notes>();
    let mut ids = Vec::new();
    for (room, text) in [
        ("red", "r1"),
        ("blue", "b1"),
        ("red", "r2"),
        ("red", "hidden r3"),
    ] {
        ids.push(
            notes
                .insert(Note {
                    room: room.into(),
                    text: text.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .raw(),
        );
    }
    let (r1, b1, r2, hidden) = (ids[0], ids[1], ids[2], ids[3]);

    let mut red = srv.client().await;
    let mut blue = srv.client().await;
    let mut both = srv.client().await;
    let mut none = srv.client().await;
    assert!(oids(&red).is_empty(), "nothing before subscribing");
    sub(&mut red, "red", true).await.unwrap();
    sub(&mut blue, "blue", true).await.unwrap();
    sub(&mut both, "red", true).await.unwrap();
    sub(&mut both, "blue", true).await.unwrap();
    // `can_read` still applies inside a channel.
    assert_eq!(oids(&red), [r1, r2]);
    assert_eq!(oids(&blue), [b1]);
    both.wait_until(|c| c.collection("notes").len() == 3)
        .await
        .unwrap();
    assert!(red.model("notes", hidden).is_none());

    // Live changes go only to the channel's subscribers.
    let b2 = blue
        .add("notes", json!({"room": "blue", "text": "b2"}))
        .await
        .unwrap();
    red.change("notes", r1, json!({"text": "r1!"}))
        .await
        .unwrap();
    both.wait_until(|c| {
        c.model("notes", b2).is_some() && c.model("notes", r1).unwrap()["text"] == "r1!"
    })
    .await
    .unwrap();
    blue.wait_until(|c| c.model("notes", b2).is_some())
        .await
        .unwrap();
    // A model moved to another channel leaves one side and arrives on the other.
    red.change("notes", r2, json!({"room": "blue"}))
        .await
        .unwrap();
    blue.wait_until(|c| c.model("notes", r2).is_some())
        .await
        .unwrap();
    red.wait_until(|c| c.model("notes", r2).is_none())
        .await
        .unwrap();
    // A client outside a channel cannot touch its models.
    let err = red
        .change("notes", b1, json!({"text": "x"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r.contains("no model with oid")),
        "{err:?}"
    );

    // Unsubscribing drops the channel's models; nothing of it arrives afterwards.
    sub(&mut both, "blue", false).await.unwrap();
    both.wait_until(|c| c.model("notes", b1).is_none())
        .await
        .unwrap();
    blue.change("notes", b1, json!({"text": "b1!"}))
        .await
        .unwrap();
    let later = both
        .drain(std::time::Duration::from_millis(150))
        .await
        .unwrap();
    assert!(later.iter().all(|m| m["oid"] != b1), "{later:?}");

    // can_subscribe refuses; server code may subscribe a connection itself.
    let err = sub(&mut none, "staff", true).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r.contains("may not subscribe to channel `staff`")),
        "{err:?}"
    );
    let _: () = none.trigger("name", &"admin").await.unwrap();
    sub(&mut none, "staff", true).await.unwrap();
    let joined: bool = none.trigger("join", &"red").await.unwrap();
    assert!(joined);
    none.wait_until(|c| c.model("notes", r1).is_some())
        .await
        .unwrap();
    // Never a private field, on any of these paths.
    for c in [&red, &blue, &both, &none] {
        assert!(!c.log().iter().any(|m| m.to_string().contains("_secret")));
    }
}

// ------------------------------------------------------------------------------------------

mod ruled {
    use super::*;
    use omni_runtime::rules::{Action, Rules};

    #[derive(Default)]
    pub(crate) struct S {
        pub(crate) admin: bool,
    }

    #[derive(Model, Clone, Default, Debug)]
    pub(crate) struct Invoice {
        pub(crate) total: i64,
        pub(crate) paid: bool,
    }
    impl Permissions<S> for Invoice {
        fn can_write(&self, _ctx: &Access<S, Self>, _c: &InvoiceChange) -> bool {
            true
        }
    }
    #[collection(model = Invoice)]
    pub(crate) struct Invoices;
    impl CollectionPermissions<S> for Invoices {
        fn can_create(&self, _ctx: &Ctx<S>, _m: &Invoice) -> bool {
            true
        }
        fn can_destroy(&self, _ctx: &Ctx<S>, _m: &Invoice) -> bool {
            true
        }
    }

    #[derive(Model, Clone, Default, Debug)]
    pub(crate) struct Vault {
        pub(crate) gold: i64,
    }
    impl Permissions<S> for Vault {}
    #[collection(model = Vault)]
    pub(crate) struct Vaults;
    impl CollectionPermissions<S> for Vaults {}

    pub(crate) fn app() -> Omni<S> {
        Omni::<S>::new()
            .collection(Invoices::with([
                Invoice {
                    total: 10,
                    paid: false,
                },
                Invoice {
                    total: 20,
                    paid: true,
                },
            ]))
            .rules::<Invoices>(
                Rules::<S>::new()
                    .deny(Action::Destroy)
                    // Only admins get the list; anyone may read one invoice by OID.
                    .handle(Action::List, |ctx, _| {
                        if ctx.session().admin {
                            Ok(())
                        } else {
                            Err("admins only".into())
                        }
                    })
                    .handle(Action::Update, |_ctx, oid| {
                        if oid == Some(1) {
                            Err("invoice 1 is closed".into())
                        } else {
                            Ok(())
                        }
                    }),
            )
            .collection(Vaults::with([Vault { gold: 5 }]))
            .rules::<Vaults>(Rules::only(&[Action::List]).deny(Action::Read))
            .event("admin", |conn: Conn<S>, _w: World, on: bool| async move {
                conn.update_session(|s| s.admin = on);
                conn.sync();
                Ok::<_, EventError>(())
            })
    }
}

#[tokio::test]
async fn per_action_rules_allow_deny_and_decide_on_top_of_the_hooks() {
    let srv = TestServer::start(ruled::app()).await;
    let mut c = srv.client().await;
    // list refused by the handler: no invoices held; read denied: no vault either.
    assert!(c.collection("invoices").is_empty());
    assert!(c.collection("vaults").is_empty());

    // A one-shot read of one invoice is allowed (read is not list) and carries its attributes.
    let id = c
        .send(json!({"t": "read", "c": "invoices", "oid": 2}))
        .await
        .unwrap();
    let reply = c.answer(id).await.unwrap();
    assert_eq!(reply["ok"], json!({"oid": 2, "total": 20, "paid": true}));
    assert!(
        c.collection("invoices").is_empty(),
        "a read does not subscribe"
    );
    let id = c
        .send(json!({"t": "read", "c": "vaults", "oid": 3}))
        .await
        .unwrap();
    let err = c.answer(id).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r == "action `read` is not allowed on collection `vaults`"),
        "{err:?}"
    );
    let id = c
        .send(json!({"t": "read", "c": "invoices", "oid": 99}))
        .await
        .unwrap();
    assert!(c.answer(id).await.is_err());

    // Creating is allowed by the rules and the hook.
    let oid = c.add("invoices", json!({"total": 5})).await.unwrap();
    // Becoming admin: `sync()` re-checks the list rule and sends the invoices.
    let _: () = c.trigger("admin", &true).await.unwrap();
    c.wait_until(|c| c.collection("invoices").len() == 3)
        .await
        .unwrap();

    // update: the handler refuses invoice 1, allows the others.
    let err = c
        .change("invoices", 1, json!({"paid": true}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r == "action `update` refused on collection `invoices`: invoice 1 is closed"),
        "{err:?}"
    );
    c.change("invoices", oid, json!({"paid": true}))
        .await
        .unwrap();
    // destroy: denied as a whole, even though the hook would allow it.
    let err = c.remove("invoices", oid).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r == "action `destroy` is not allowed on collection `invoices`"),
        "{err:?}"
    );
    // Rules bind clients only: server code still removes.
    assert!(
        srv.server
            .world()
            .collection::<ruled::Invoices>()
            .remove(Oid::from_raw(oid))
            .await
            .is_ok()
    );
    c.wait_until(|c| c.model("invoices", oid).is_none())
        .await
        .unwrap();
    // Vaults: create and update are not in `only`.
    let err = c.add("vaults", json!({"gold": 1})).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r.contains("action `create` is not allowed on collection `vaults`")),
        "{err:?}"
    );
}
