//! The engine's commit log as seen from outside: observers in sequence order whose writes reach
//! every client, an atomic find-or-insert, and a hook that calls back into the world.

use std::sync::Arc;

use example_game::{Boards, Player, Players};
use omni_runtime::client::ClientError;
use omni_runtime::prelude::*;
use omni_runtime::storage::{Next, StoreRequest};
use omni_tests::TestServer;
use parking_lot::Mutex;
use serde_json::json;

#[tokio::test]
async fn observers_get_commits_in_order_and_their_writes_reach_the_writer() {
    let seen: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let log = seen.clone();
    let app = example_game::app("unused").observe::<Players, _, _>(
        move |_world: World, event: Observed<Player>| {
            let log = log.clone();
            async move {
                let what = match &event.change {
                    Observation::Created(p) => format!("created {}", p.name),
                    Observation::Updated { changed, new, .. } => {
                        format!("updated {} {changed:?}", new.name)
                    }
                    Observation::Deleted(p) => format!("deleted {}", p.name),
                };
                log.lock().push((event.seq, what));
            }
        },
    );
    let srv = TestServer::start(app).await;
    let mut ann = srv.client().await;
    let reply: serde_json::Value = ann
        .trigger("login", &json!({"name": "Ann", "password": "pw"}))
        .await
        .unwrap();
    let me = reply["oid"].as_u64().unwrap();
    ann.change("players", me, json!({"x": 100})).await.unwrap();
    ann.change("players", me, json!({"y": 50})).await.unwrap();
    // The game's own observer counts the moves: its write reaches the mover.
    ann.wait_until(|c| {
        c.collection("boards")
            .values()
            .any(|b| b["moves"] == 2 && b["last_mover"] == "Ann")
    })
    .await
    .unwrap();
    let board = srv.server.world().collection::<Boards>().all();
    assert_eq!(board[0].1.moves, 2);
    let seen = seen.lock().clone();
    let what: Vec<&str> = seen.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(
        what,
        [
            "created Ann",
            "updated Ann [Online]",
            "updated Ann [X]",
            "updated Ann [Y]"
        ]
    );
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "in sequence order: {seen:?}"
    );
    let (_, last) = srv.server.world().log_position();
    assert!(
        last > seen.last().unwrap().0,
        "the board's writes are commits too"
    );
}

#[derive(Default)]
struct Sess;

#[derive(Model, Clone, Default, Debug, Serialize, Deserialize)]
struct Tag {
    name: String,
}

impl Permissions<Sess> for Tag {}

#[collection(model = Tag)]
struct Tags;

impl CollectionPermissions<Sess> for Tags {}

#[tokio::test]
async fn find_or_insert_is_atomic_while_the_storage_waits() {
    // A middleware that takes a while: the first insert is still on its way when the others
    // look, so they must see it among the pending writes.
    let srv = TestServer::start(Omni::<Sess>::new().collection(Tags::empty()).middleware(
        |req: StoreRequest, next: Next| async move {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            next.run(req).await
        },
    ))
    .await;
    let tags = srv.server.world().collection::<Tags>();
    let mut writes = Vec::new();
    for i in 0..10 {
        let name = if i % 2 == 0 { "red" } else { "blue" };
        writes.push(tags.find_or_insert(
            |t| t.name == name,
            || Tag {
                name: name.to_owned(),
            },
        ));
    }
    let mut created = 0;
    let mut oids = std::collections::BTreeSet::new();
    for w in writes {
        let (oid, new) = w.await.unwrap();
        created += usize::from(new);
        oids.insert(oid);
    }
    assert_eq!(created, 2, "one red, one blue");
    assert_eq!(oids.len(), 2);
    assert_eq!(tags.len(), 2);
}

#[derive(Default)]
struct Nosy;

#[derive(Model, Clone, Default, Debug)]
struct Secret {
    text: String,
}

impl Permissions<Nosy> for Secret {
    fn can_write(&self, ctx: &Access<Nosy, Self>, _change: &SecretChange) -> bool {
        // Wrong: a hook must not call the world. It must fail, not deadlock the server.
        let _ = ctx;
        WORLD
            .lock()
            .as_ref()
            .is_some_and(|w: &World| w.collection::<Secrets>().len() < 100)
    }
}

static WORLD: Mutex<Option<World>> = Mutex::new(None);

#[collection(model = Secret)]
struct Secrets;

impl CollectionPermissions<Nosy> for Secrets {}

#[tokio::test]
async fn a_hook_that_calls_the_world_is_refused_instead_of_deadlocking() {
    let srv = TestServer::start(
        Omni::<Nosy>::new().collection(Secrets::with([Secret { text: "a".into() }])),
    )
    .await;
    *WORLD.lock() = Some(srv.server.world());
    let mut c = srv.client().await;
    let (oid, _) = c.collection("secrets").into_iter().next().unwrap();
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        c.change("secrets", oid, json!({"text": "b"})),
    )
    .await
    .expect("no deadlock")
    .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r.contains("permission denied")),
        "{err:?}"
    );
    // The server goes on.
    assert_eq!(srv.server.world().collection::<Secrets>().len(), 1);
    *WORLD.lock() = None;
}

#[tokio::test]
async fn writes_to_one_model_reach_the_storage_in_order_and_others_overlap() {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = log.clone();
    let srv = TestServer::start(
        Omni::<Sess>::new()
            .collection(Tags::with([
                Tag { name: "a".into() },
                Tag { name: "b".into() },
            ]))
            .persist::<Tags>()
            .middleware(move |req: StoreRequest, next: Next| {
                let seen = seen.clone();
                async move {
                    let doc: serde_json::Value =
                        serde_json::from_slice(req.doc.as_deref().unwrap_or(b"null")).unwrap();
                    let name = doc["name"].as_str().unwrap_or_default().to_owned();
                    if name == "slow" {
                        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                    }
                    seen.lock().push(name);
                    next.run(req).await
                }
            }),
    )
    .await;
    let tags = srv.server.world().collection::<Tags>();
    let all = tags.all();
    let (a, b) = (all[0].0, all[1].0);
    let first = tags.update(a, |t| {
        t.set_name("slow".into());
    });
    let second = tags.update(a, |t| {
        t.set_name("fast".into());
    });
    let other = tags.update(b, |t| {
        t.set_name("other".into());
    });
    let (r1, r2, r3) = tokio::join!(first, second, other);
    r1.unwrap();
    r2.unwrap();
    r3.unwrap();
    assert_eq!(
        *log.lock(),
        ["other", "slow", "fast"],
        "the other model's write overlaps; one model's writes keep their order"
    );
    assert_eq!(tags.get(a).unwrap().name, "fast", "the last write wins");
}
