//! Live queries over real sockets: windows that follow filter and order changes, refill when a
//! model leaves, unions across queries, permissions, paging and queried collections.

use std::time::Duration;

use omni_runtime::client::{Client, ClientError};
use omni_runtime::prelude::*;
use omni_tests::TestServer;
use serde_json::json;

#[derive(Default)]
struct Session {
    vip: bool,
}

/// A chat line. `secret` and hidden lines are for VIPs only.
#[derive(Model, Clone, Default, Debug)]
struct Line {
    room: String,
    at: u64,
    text: String,
    secret: u32,
    hidden: bool,
}

impl Permissions<Session> for Line {
    fn can_read(&self, ctx: &Access<Session, Self>, attr: Option<LineAttr>) -> bool {
        match attr {
            None => !self.hidden || ctx.session().vip,
            Some(LineAttr::Secret) => ctx.session().vip,
            Some(_) => true,
        }
    }
}

#[collection(model = Line)]
struct Lines;
impl CollectionPermissions<Session> for Lines {
    fn can_query(&self, _ctx: &Ctx<Session>, query: &Query<Line>) -> bool {
        query.max_models().is_some_and(|n| n <= 100)
    }
}

/// A score board: not queried, every client holds all of it.
#[derive(Model, Clone, Default, Debug)]
struct Score {
    name: String,
    points: i64,
}
impl Permissions<Session> for Score {}

#[collection(model = Score)]
struct Scores;
impl CollectionPermissions<Session> for Scores {}

async fn vip(conn: Conn<Session>, _world: World, _args: ()) -> Result<(), EventError> {
    conn.update_session(|s| s.vip = true);
    conn.sync();
    Ok(())
}

fn line(room: &str, at: u64) -> Line {
    Line {
        room: room.into(),
        at,
        text: format!("{room}{at}"),
        ..Default::default()
    }
}

fn app() -> Omni<Session> {
    let mut lines: Vec<Line> = (1..=10).map(|at| line("a", at)).collect();
    lines.extend((1..=5).map(|at| line("b", at)));
    let scores = ["ann", "bob", "cy", "di"].map(|n| Score {
        name: n.into(),
        points: 0,
    });
    Omni::<Session>::new()
        .collection(Lines::with(lines))
        .collection(Scores::with(scores))
        .queried::<Lines>()
        .event("vip", vip)
}

/// The `at` values of what query `qid` shows, in its order.
fn ats(c: &Client, qid: &str) -> Vec<u64> {
    c.results::<Lines>(qid)
        .unwrap()
        .iter()
        .map(|(_, l)| l.at)
        .collect()
}

/// The `(room, at)` of every line the client holds.
fn held(c: &Client) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = c
        .models::<Lines>()
        .unwrap()
        .into_iter()
        .map(|(_, l)| (l.room, l.at))
        .collect();
    v.sort();
    v
}

fn room(r: &str) -> Query<Line> {
    Query::new().eq(LineChange::Room(r.into()))
}

async fn oid_of(srv: &TestServer<Session>, room: &str, at: u64) -> Oid<Line> {
    srv.server
        .world()
        .collection::<Lines>()
        .find(|l| l.room == room && l.at == at)
        .unwrap()
        .0
}

#[tokio::test]
async fn a_window_follows_inserts_filter_and_order_changes_and_refills() {
    let srv = TestServer::start(app()).await;
    let lines = srv.server.world().collection::<Lines>();
    let mut c = srv.client().await;
    // A queried collection: nothing until a query asks.
    assert!(c.models::<Lines>().unwrap().is_empty());
    assert_eq!(c.models::<Scores>().unwrap().len(), 4);

    let last3 = room("a").order_by(LineAttr::At, Dir::Desc).limit(3);
    c.query::<Lines>("last", &last3).await.unwrap();
    assert_eq!(ats(&c, "last"), [10, 9, 8]);
    assert!(c.window::<Lines>("last").unwrap().more);
    assert_eq!(held(&c).len(), 3, "only the window is held");

    // A new line enters at the top and pushes the oldest out.
    lines.insert(line("a", 11)).await.unwrap();
    c.wait_until(|c| {
        c.window::<Lines>("last").is_some_and(|w| w.oids.len() == 3)
            && ats(c, "last") == [11, 10, 9]
    })
    .await
    .unwrap();
    c.wait_until(|c| held(c).len() == 3).await.unwrap();
    assert!(!held(&c).contains(&("a".into(), 8)), "{:?}", held(&c));

    // A line of another room sends nothing.
    let before = c.log().len();
    lines.insert(line("b", 99)).await.unwrap();
    let quiet = c.drain(Duration::from_millis(200)).await.unwrap();
    assert!(
        quiet.iter().all(|m| m["t"] == "at"),
        "another room's line reached the client: {quiet:?}"
    );
    assert!(c.log().len() >= before);

    // A change of the filter attribute moves a line out: the window refills from beyond it.
    let nine = oid_of(&srv, "a", 9).await;
    lines
        .update(nine, |l| {
            l.set_room("b".into());
        })
        .await
        .unwrap();
    c.wait_until(|c| ats(c, "last") == [11, 10, 8])
        .await
        .unwrap();
    c.wait_until(|c| c.get::<Lines>(nine).unwrap().is_none())
        .await
        .unwrap();

    // A removal refills too.
    let eleven = oid_of(&srv, "a", 11).await;
    lines.remove(eleven).await.unwrap();
    c.wait_until(|c| ats(c, "last") == [10, 8, 7])
        .await
        .unwrap();

    // A change of the order attribute moves a line within the window and into it.
    let one = oid_of(&srv, "a", 1).await;
    lines
        .update(one, |l| {
            l.set_at(50);
        })
        .await
        .unwrap();
    c.wait_until(|c| ats(c, "last") == [50, 10, 8])
        .await
        .unwrap();
    // ... and a line at the top that sinks below the window leaves it.
    lines
        .update(one, |l| {
            l.set_at(0);
        })
        .await
        .unwrap();
    c.wait_until(|c| ats(c, "last") == [10, 8, 7])
        .await
        .unwrap();
    c.wait_until(|c| held(c) == [("a".to_string(), 7), ("a".into(), 8), ("a".into(), 10)])
        .await
        .unwrap();

    // The window's own messages: adds before the window, removes after it.
    let w = c.log().iter().rposition(|m| m["t"] == "window").unwrap();
    let log = c.log();
    assert!(
        log[..w]
            .iter()
            .any(|m| m["t"] == "add" && m["m"]["at"] == 7)
    );
    assert!(log[w..].iter().any(|m| m["t"] == "remove"));
}

#[tokio::test]
async fn queries_union_without_duplicates_and_unquery_releases_what_only_it_showed() {
    let srv = TestServer::start(app()).await;
    let mut c = srv.client().await;
    let newest = room("a").order_by_oid(Dir::Desc).limit(2);
    let late = Query::<Line>::new()
        .ge(LineChange::At(4))
        .order_by(LineAttr::At, Dir::Asc)
        .order_by(LineAttr::Room, Dir::Asc)
        .limit(4);
    c.query::<Lines>("newest", &newest).await.unwrap();
    c.query::<Lines>("late", &late).await.unwrap();
    assert_eq!(ats(&c, "newest"), [10, 9]);
    // Ties on `at` are broken by `room`, then by OID.
    let late_rooms: Vec<(u64, String)> = c
        .results::<Lines>("late")
        .unwrap()
        .into_iter()
        .map(|(_, l)| (l.at, l.room))
        .collect();
    assert_eq!(
        late_rooms,
        [
            (4, "a".into()),
            (4, "b".into()),
            (5, "a".into()),
            (5, "b".into())
        ]
    );
    // Held once each: the union.
    assert_eq!(held(&c).len(), 6);
    let adds = c
        .log()
        .iter()
        .filter(|m| m["t"] == "add" && m["c"] == "lines")
        .count();
    assert_eq!(adds, 6, "each model is sent once");

    // A line both show, removed from one: it stays held for the other.
    let both = srv
        .server
        .world()
        .collection::<Lines>()
        .insert(line("a", 4))
        .await
        .unwrap();
    c.wait_until(|c| ats(c, "newest")[0] == 4).await.unwrap();
    c.wait_until(|c| {
        c.results::<Lines>("late")
            .unwrap()
            .iter()
            .any(|(o, _)| *o == both)
    })
    .await
    .unwrap();
    c.unquery::<Lines>("late").await.unwrap();
    assert!(c.window::<Lines>("late").is_none());
    c.wait_until(|c| held(c).len() == 2).await.unwrap();
    assert!(c.get::<Lines>(both).unwrap().is_some());
    // Loading more: the same id with a larger limit.
    c.query::<Lines>("newest", &newest.clone().limit(5))
        .await
        .unwrap();
    assert_eq!(ats(&c, "newest"), [4, 10, 9, 8, 7]);
    assert_eq!(held(&c).len(), 5);
    // A cursor: the page before the oldest line shown.
    let oldest = c.results::<Lines>("newest").unwrap().last().unwrap().0;
    let page = room("a").oid_below(oldest).order_by_oid(Dir::Desc).limit(3);
    c.query::<Lines>("older", &page).await.unwrap();
    assert_eq!(ats(&c, "older"), [6, 5, 4]);
    c.unquery::<Lines>("newest").await.unwrap();
    c.unquery::<Lines>("older").await.unwrap();
    c.wait_until(|c| held(c).is_empty()).await.unwrap();
}

#[tokio::test]
async fn results_pass_read_permissions_and_filters_on_unreadable_attributes_match_nothing() {
    let srv = TestServer::start(app()).await;
    let lines = srv.server.world().collection::<Lines>();
    for at in [3, 7] {
        let oid = oid_of(&srv, "a", at).await;
        lines
            .update(oid, move |l| {
                l.set_hidden(at == 7);
                l.set_secret(42);
            })
            .await
            .unwrap();
    }
    let mut c = srv.client().await;
    let top = room("a").order_by(LineAttr::At, Dir::Desc).limit(4);
    c.query::<Lines>("top", &top).await.unwrap();
    // The hidden line 7 is skipped: the window reaches one further.
    assert_eq!(ats(&c, "top"), [10, 9, 8, 6]);
    // A filter on `secret`, which this client may not read, matches nothing: not even `!=`.
    for q in [
        room("a").eq(LineChange::Secret(42)).limit(10),
        room("a").ne(LineChange::Secret(42)).limit(10),
        room("a").gt(LineChange::Secret(0)).limit(10),
    ] {
        c.query::<Lines>("secret", &q).await.unwrap();
        assert_eq!(ats(&c, "secret"), Vec::<u64>::new(), "{q:?}");
        assert!(!c.window::<Lines>("secret").unwrap().more);
    }
    // Ordered by it: all absent alike, so by OID; the value never shows.
    let by_secret = room("a").order_by(LineAttr::Secret, Dir::Desc).limit(3);
    c.query::<Lines>("bysecret", &by_secret).await.unwrap();
    assert_eq!(ats(&c, "bysecret"), [10, 9, 8]);
    assert!(
        c.log().iter().all(|m| m["m"].get("secret").is_none()),
        "the secret was sent"
    );

    // Once a VIP, the same queries see it all (its windows are evaluated again). Ties in a
    // descending order are broken by OID, descending too.
    let () = c.trigger("vip", &()).await.unwrap();
    c.wait_until(|c| ats(c, "top") == [10, 9, 8, 7])
        .await
        .unwrap();
    c.wait_until(|c| ats(c, "bysecret") == [7, 3, 10])
        .await
        .unwrap();
    c.query::<Lines>("secret", &room("a").eq(LineChange::Secret(42)).limit(10))
        .await
        .unwrap();
    assert_eq!(ats(&c, "secret"), [3, 7]);
}

fn refused<T: std::fmt::Debug>(r: Result<T, ClientError>) -> String {
    match r {
        Err(ClientError::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_queries_are_refused_with_the_reason() {
    let srv = TestServer::start(app()).await;
    let mut c = srv.client().await;
    // `can_query` wants a limit of at most 100.
    let reason = refused(c.query::<Lines>("q", &room("a")).await);
    assert!(
        reason.contains("may not run this query on `lines`"),
        "{reason}"
    );
    let reason = refused(c.query::<Lines>("q", &room("a").limit(101)).await);
    assert!(reason.contains("can_query"), "{reason}");
    for (spec, wanted) in [
        (
            json!({"where": {"rooom": "a"}, "limit": 5}),
            "model `Line` has no public attribute `rooom`",
        ),
        (
            json!({"where": {"at": "soon"}, "limit": 5}),
            "`at` of model `Line`",
        ),
        (
            json!({"where": {"at": {"$near": 5}}, "limit": 5}),
            "unknown comparison `$near` on `at`",
        ),
        (
            json!({"order": [["at", "up"]], "limit": 5}),
            "each `order` key",
        ),
        (
            json!({"limit": -1}),
            "`limit` must be a non-negative integer",
        ),
    ] {
        let mut msg = json!({"t": "query", "c": "lines", "q": "bad"});
        for (k, v) in spec.as_object().unwrap() {
            msg[k] = v.clone();
        }
        let id = c.send(msg).await.unwrap();
        let reason = refused(c.answer(id).await);
        assert!(reason.starts_with("query on `lines`: "), "{reason}");
        assert!(reason.contains(wanted), "{reason} should name {wanted}");
    }
    assert!(c.window::<Lines>("bad").is_none());
    // An unknown collection.
    let id = c
        .send(json!({"t": "query", "c": "nope", "q": 1, "limit": 5}))
        .await
        .unwrap();
    assert!(refused(c.answer(id).await).contains("unknown collection `nope`"));
}

#[tokio::test]
async fn on_a_collection_every_client_holds_a_query_is_a_live_view() {
    let srv = TestServer::start(app()).await;
    let scores = srv.server.world().collection::<Scores>();
    let mut c = srv.client().await;
    let leaders = Query::<Score>::new()
        .gt(ScoreChange::Points(0))
        .order_by(ScoreAttr::Points, Dir::Desc)
        .limit(2);
    c.query::<Scores>("leaders", &leaders).await.unwrap();
    assert!(c.results::<Scores>("leaders").unwrap().is_empty());
    let names = |c: &Client| -> Vec<String> {
        c.results::<Scores>("leaders")
            .unwrap()
            .into_iter()
            .map(|(_, s)| s.name)
            .collect()
    };
    let all = scores.all();
    for (i, (oid, _)) in all.iter().enumerate() {
        scores
            .update(*oid, move |s| {
                s.set_points(i as i64 * 10);
            })
            .await
            .unwrap();
    }
    c.wait_until(|c| names(c) == ["di", "cy"]).await.unwrap();
    assert!(c.window::<Scores>("leaders").unwrap().more);
    scores
        .update(all[1].0, |s| {
            s.set_points(100);
        })
        .await
        .unwrap();
    c.wait_until(|c| names(c) == ["bob", "di"]).await.unwrap();
    // Leaving the window removes nothing: the collection is held whole.
    assert_eq!(c.models::<Scores>().unwrap().len(), 4);
}

#[tokio::test]
async fn queries_come_back_after_a_resume() {
    let srv = TestServer::start(app()).await;
    let lines = srv.server.world().collection::<Lines>();
    let mut c = srv.client().await;
    let last = room("b").order_by_oid(Dir::Desc).limit(2);
    c.query::<Lines>("last", &last).await.unwrap();
    assert_eq!(ats(&c, "last"), [5, 4]);
    // Dropped (no close frame) and resumed: the same connection, evaluated again.
    c.sever();
    lines.insert(line("b", 6)).await.unwrap();
    let resumed = c.reconnect(&srv.url()).await.unwrap();
    assert_eq!(resumed, omni_runtime::client::Resumed::Snapshot);
    c.wait_until(|c| ats(c, "last") == [6, 5]).await.unwrap();
    assert_eq!(held(&c), [("b".to_string(), 5), ("b".into(), 6)]);
}
