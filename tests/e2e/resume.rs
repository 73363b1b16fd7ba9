//! Resume (issue 12): a connection whose socket dropped is resumed by its client within the
//! grace period, keeps its session, and is sent only what changed; otherwise a snapshot. Requests
//! sent again after a resume are answered once, not carried out twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use omni_runtime::client::{Client, Resumed};
use omni_runtime::prelude::*;
use omni_tests::TestServer;
use proptest::prelude::{Strategy, TestCaseError, prop_assert_eq, prop_assert_ne};
use serde_json::{Value, json};

use crate::apps::{DocSession, doc, docs_app};

fn config(grace_ms: u64, history: usize) -> Config {
    Config {
        resume_grace: Duration::from_millis(grace_ms),
        resume_history: history,
        static_dir: None,
        ..Default::default()
    }
}

/// The docs app with a disconnect hook that counts.
fn app(grace_ms: u64, history: usize, gone: Arc<AtomicUsize>) -> Omni<DocSession> {
    docs_app(vec![doc("a", "secret a"), doc("b", "secret b")])
        .config(config(grace_ms, history))
        .on_disconnect(move |_conn: Conn<DocSession>| {
            let gone = gone.clone();
            async move {
                gone.fetch_add(1, Ordering::SeqCst);
            }
        })
}

async fn admin(c: &mut Client) {
    let on: bool = c.trigger("admin", &json!({ "on": true })).await.unwrap();
    assert!(on);
    c.wait_until(|c| c.model("docs", 1).is_some_and(|d| d.contains_key("note")))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dropped_connection_resumes_with_its_session_and_only_what_changed() {
    let gone = Arc::new(AtomicUsize::new(0));
    let srv = TestServer::start(app(60_000, 10_000, gone.clone())).await;
    let mut a = srv.client().await;
    admin(&mut a).await; // the session: admin reads notes
    let conn = a.conn_id();
    let mut b = srv.client().await;
    a.sever();
    for i in 1..=5 {
        b.change("docs", 1, json!({ "counter": i })).await.unwrap();
    }
    assert_eq!(
        gone.load(Ordering::SeqCst),
        0,
        "no disconnect hook at the drop"
    );
    let before = a.log().len();
    assert_eq!(a.reconnect(&srv.url()).await.unwrap(), Resumed::Changes);
    assert_eq!(a.conn_id(), conn, "the same connection");
    // Only the one model that changed came, whole, as this session may see it (note included).
    let sent: Vec<&Value> = a.log()[before..]
        .iter()
        .filter(|m| m["t"] != "hello" && m["t"] != "at" && m["t"] != "resumed")
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["t"], "add");
    assert_eq!(sent[0]["m"]["counter"], 5);
    assert_eq!(sent[0]["m"]["note"], "secret a", "the session survived");
    // And it goes on: live changes arrive, its own writes work.
    b.change("docs", 2, json!({ "counter": 9 })).await.unwrap();
    a.wait_until(|c| c.model("docs", 2).is_some_and(|d| d["counter"] == 9))
        .await
        .unwrap();
    a.change("docs", 2, json!({ "title": "mine" }))
        .await
        .unwrap();
    assert_eq!(gone.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_half_open_socket_is_let_go_when_its_client_resumes() {
    let gone = Arc::new(AtomicUsize::new(0));
    let srv = TestServer::start(app(60_000, 10_000, gone.clone())).await;
    let mut a = srv.client().await;
    let mut b = srv.client().await;
    // a stops reading (its socket stays open: the server cannot tell), b writes.
    for i in 1..=3 {
        b.change("docs", 2, json!({ "counter": i })).await.unwrap();
    }
    assert_eq!(a.reconnect(&srv.url()).await.unwrap(), Resumed::Changes);
    assert_eq!(a.model("docs", 2).unwrap()["counter"], 3);
    assert_eq!(srv.server.connections().len(), 2, "still two connections");
}

#[tokio::test]
async fn without_the_history_a_resume_gets_a_snapshot_but_keeps_its_session() {
    let gone = Arc::new(AtomicUsize::new(0));
    // The history keeps 2 commits; 5 are missed.
    let srv = TestServer::start(app(60_000, 2, gone.clone())).await;
    let mut a = srv.client().await;
    admin(&mut a).await;
    let mut b = srv.client().await;
    a.sever();
    for i in 1..=5 {
        b.change("docs", 1, json!({ "counter": i })).await.unwrap();
    }
    assert_eq!(a.reconnect(&srv.url()).await.unwrap(), Resumed::Snapshot);
    let d = a.model("docs", 1).unwrap();
    assert_eq!(
        (d["counter"].clone(), d["note"].clone()),
        (json!(5), json!("secret a"))
    );
}

#[tokio::test]
async fn after_the_grace_period_the_disconnect_hook_runs_and_a_resume_is_a_new_connection() {
    let gone = Arc::new(AtomicUsize::new(0));
    let srv = TestServer::start(app(200, 10_000, gone.clone())).await;
    let mut a = srv.client().await;
    admin(&mut a).await;
    let conn = a.conn_id();
    a.sever();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        gone.load(Ordering::SeqCst),
        0,
        "still within the grace period"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        gone.load(Ordering::SeqCst),
        1,
        "the hook ran when the grace period ended"
    );
    assert_eq!(a.reconnect(&srv.url()).await.unwrap(), Resumed::New);
    assert_ne!(a.conn_id(), conn);
    assert!(
        !a.model("docs", 1).unwrap().contains_key("note"),
        "a fresh session: not admin"
    );
}

#[tokio::test]
async fn another_epoch_gets_a_snapshot_and_a_closed_connection_is_not_kept() {
    let gone = Arc::new(AtomicUsize::new(0));
    let srv = TestServer::start(app(60_000, 10_000, gone.clone())).await;
    let mut a = srv.client().await;
    let token = a.log()[0]["token"].as_str().unwrap().to_owned();
    a.sever();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A client that claims another epoch (a restarted server's) gets the snapshot.
    let url = format!("{}?resume={token}&epoch=1&seq=0", srv.url());
    let again = Client::connect(&url).await.unwrap();
    assert_eq!(again.log()[0]["resumed"], true);
    assert!(again.log().iter().any(|m| m["t"] == "snapshot"));
    // A close frame ends the connection at once (the hook runs), no resume.
    again.close().await;
    for _ in 0..100 {
        if gone.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gone.load(Ordering::SeqCst), 1);
    let c = Client::connect(&url).await.unwrap();
    assert_ne!(c.log()[0]["resumed"], true, "that token is gone");
}

#[tokio::test]
async fn a_request_sent_again_after_a_resume_is_answered_once() {
    let gone = Arc::new(AtomicUsize::new(0));
    let srv = TestServer::start(app(60_000, 10_000, gone)).await;
    let mut a = srv.client().await;
    // Request 100: a create, sent, then the socket dies before the client reads its answer.
    a.send_raw(
        json!({ "t": "add", "c": "docs", "tmp": "t1", "id": 100, "m": { "title": "once" } })
            .to_string(),
    )
    .await
    .unwrap();
    // Wait until the server did it.
    let docs = srv.server.world().collection::<crate::apps::Docs>();
    for _ in 0..200 {
        if docs.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(docs.len(), 3);
    a.sever();
    assert_eq!(a.reconnect(&srv.url()).await.unwrap(), Resumed::Changes);
    // The client does not know whether it arrived: it sends it again, with the same id.
    a.send_raw(
        json!({ "t": "add", "c": "docs", "tmp": "t1", "id": 100, "m": { "title": "once" } })
            .to_string(),
    )
    .await
    .unwrap();
    let answer = a.answer(100).await.unwrap();
    let oid = answer["oid"].as_u64().unwrap();
    assert_eq!(docs.len(), 3, "not created twice");
    assert!(docs.get(Oid::from_raw(oid)).is_some());
    // New requests (higher ids: ids grow over a connection's life, across resumes) are carried
    // out as usual.
    a.send_raw(
        json!({ "t": "change", "c": "docs", "oid": oid, "id": 101, "set": { "counter": 1 } })
            .to_string(),
    )
    .await
    .unwrap();
    a.answer(101).await.unwrap();
    assert_eq!(docs.get(Oid::from_raw(oid)).unwrap().counter, 1);
}

/// One property case: a client creates `k` documents, one request each (creates are not
/// idempotent: one applied twice is a duplicate), and its socket is cut before the requests at
/// `drops`, with whatever it sent still in flight. After each cut it resumes and sends again every
/// request it has no answer to, with the same id. In the end every document exists exactly once
/// and every request was answered.
async fn drop_while_writing(k: usize, drops: Vec<usize>) -> Result<(), TestCaseError> {
    let gone = Arc::new(AtomicUsize::new(0));
    let srv = TestServer::start(app(60_000, 10_000, gone)).await;
    let docs = srv.server.world().collection::<crate::apps::Docs>();
    let base = docs.len();
    let mut c = srv.client().await;
    let mut sent: Vec<(u64, String)> = Vec::new();
    for i in 0..k {
        if drops.contains(&i) {
            c.sever();
            let how = c.reconnect(&srv.url()).await.unwrap();
            prop_assert_ne!(how, Resumed::New, "the connection was kept");
            let answered: std::collections::HashSet<u64> =
                c.log().iter().filter_map(|m| m["id"].as_u64()).collect();
            for (id, msg) in &sent {
                if !answered.contains(id) {
                    c.send_raw(msg.clone()).await.unwrap();
                }
            }
        }
        let id = i as u64 + 1;
        let msg = json!({ "t": "add", "c": "docs", "tmp": format!("t{id}"), "id": id, "m": { "title": format!("w{i}") } });
        c.send_raw(msg.to_string()).await.unwrap();
        sent.push((id, msg.to_string()));
    }
    // Every request answered (once is enough: a replayed answer may come twice).
    let answered = |c: &Client| {
        let ids: std::collections::HashSet<u64> =
            c.log().iter().filter_map(|m| m["id"].as_u64()).collect();
        sent.iter().all(|(id, _)| ids.contains(id))
    };
    c.wait_until(|c| answered(c)).await.unwrap();
    c.drain(Duration::from_millis(50)).await.unwrap();
    let titles: Vec<String> = docs.all().into_iter().map(|(_, d)| d.title).collect();
    prop_assert_eq!(
        titles.len(),
        base + k,
        "none lost, none twice: {:?}",
        titles
    );
    for i in 0..k {
        let n = titles.iter().filter(|t| **t == format!("w{i}")).count();
        prop_assert_eq!(n, 1, "w{} exists {} times", i, n);
    }
    Ok(())
}

fn drop_cases() -> u32 {
    std::env::var("OMNI_RESUME_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: drop_cases(), max_shrink_iters: 64, ..Default::default() })]

    /// No write is lost or applied twice across drops at random points (issue 12).
    #[test]
    fn no_write_is_lost_or_applied_twice_across_random_drops(
        (k, drops) in (1usize..24).prop_flat_map(|k| (proptest::strategy::Just(k), proptest::collection::vec(0..k, 0..4)))
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(drop_while_writing(k, drops))?;
    }
}

/// A chat line in a room (a channel).
#[derive(Model, Clone, Default)]
struct Line {
    room: String,
    text: String,
}
impl Permissions<()> for Line {}
#[collection(model = Line)]
struct Lines;
impl CollectionPermissions<()> for Lines {
    fn can_create(&self, _ctx: &Ctx<'_, ()>, _line: &Line) -> bool {
        true
    }
}

#[tokio::test]
async fn channel_subscriptions_survive_a_resume_and_the_connect_hook_does_not_run_again() {
    let connects = Arc::new(AtomicUsize::new(0));
    let counted = connects.clone();
    let app = Omni::<()>::new()
        .config(config(60_000, 10_000))
        .collection(Lines::empty())
        .channels::<Lines>(|l| &l.room)
        .on_connect(move |_conn: Conn<()>| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
    let srv = TestServer::start(app).await;
    let mut a = srv.client().await;
    let id = a
        .send(json!({ "t": "sub", "c": "lines", "ch": "den" }))
        .await
        .unwrap();
    a.answer(id).await.unwrap();
    let mut b = srv.client().await;
    assert_eq!(connects.load(Ordering::SeqCst), 2);
    a.sever();
    let den = b
        .add("lines", json!({ "room": "den", "text": "while away" }))
        .await
        .unwrap();
    let hall = b
        .add("lines", json!({ "room": "hall", "text": "elsewhere" }))
        .await
        .unwrap();
    assert_eq!(a.reconnect(&srv.url()).await.unwrap(), Resumed::Changes);
    assert_eq!(
        a.model("lines", den).unwrap()["text"],
        "while away",
        "still in den"
    );
    assert!(a.model("lines", hall).is_none(), "not subscribed to hall");
    assert_eq!(
        connects.load(Ordering::SeqCst),
        2,
        "no connect hook for a resume"
    );
    // Live lines of its channel keep coming.
    let more = b
        .add("lines", json!({ "room": "den", "text": "live" }))
        .await
        .unwrap();
    a.wait_until(|c| c.model("lines", more).is_some())
        .await
        .unwrap();
}

/// A create whose storage finishes while its client's socket is down: the resumed client asks
/// again and gets the `created` (the creator is answered even while it waits to be resumed).
#[tokio::test]
async fn a_create_finished_while_its_client_was_away_is_answered_on_resume() {
    use omni_runtime::storage::{Method, Next, StoreRequest};
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let gone = Arc::new(AtomicUsize::new(0));
    let app = app(60_000, 10_000, gone).middleware(move |req: StoreRequest, next: Next| {
        let held = held.clone();
        async move {
            if req.method == Method::Create {
                let _ = held.acquire().await.map(|p| p.forget());
            }
            next.run(req).await
        }
    });
    let srv = TestServer::start(app).await;
    let mut a = srv.client().await;
    let add = json!({ "t": "add", "c": "docs", "tmp": "t1", "id": 100, "m": { "title": "away" } });
    a.send_raw(add.to_string()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.sever();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The storage finishes while the socket is down.
    gate.add_permits(1);
    let docs = srv.server.world().collection::<crate::apps::Docs>();
    for _ in 0..200 {
        if docs.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(docs.len(), 3);
    assert_eq!(a.reconnect(&srv.url()).await.unwrap(), Resumed::Changes);
    a.send_raw(add.to_string()).await.unwrap();
    let answer = a.answer(100).await.unwrap();
    assert_eq!(answer["t"], "created");
    assert_eq!(answer["tmp"], "t1");
    assert_eq!(docs.len(), 3, "not created twice");
}
