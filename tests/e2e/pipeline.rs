//! The write pipeline through an asynchronous storage, seen from real clients: nothing is seen
//! before it is durable, a failed write is rolled back, a panicking middleware refuses only its
//! request.

use std::sync::Arc;

use omni_runtime::client::ClientError;
use omni_runtime::prelude::*;
use omni_runtime::storage::{Backend, BoxFuture, Next, StoreRequest, StoredModel};
use omni_tests::TestServer;
use parking_lot::Mutex;
use serde_json::json;

use crate::storage::{Notes, Sess, sub};

/// How the test settles one write.
type Settle = tokio::sync::oneshot::Sender<Result<(), String>>;

/// A backend whose writes become durable (or fail) only when the test says so.
#[derive(Default, Clone)]
struct Deferred {
    waiting: Arc<Mutex<std::collections::VecDeque<Settle>>>,
}

impl Deferred {
    /// Waits until a write is waiting, then makes the oldest durable (`Ok`) or fails it.
    async fn settle(&self, outcome: Result<(), &str>) {
        for _ in 0..500 {
            let next = self.waiting.lock().pop_front();
            if let Some(tx) = next {
                tx.send(outcome.map_err(str::to_owned)).unwrap();
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no write reached the backend");
    }
}

impl Backend for Deferred {
    fn name(&self) -> &'static str {
        "deferred"
    }
    fn load(&self, _: &'static str) -> Result<Option<Vec<StoredModel>>, StoreError> {
        Ok(None)
    }
    fn seed(&self, _: &'static str, _: &[StoredModel]) -> Result<(), StoreError> {
        Ok(())
    }
    fn last_oid(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn call(&self, req: StoreRequest) -> BoxFuture<Result<StoreReply, StoreError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting.lock().push_back(tx);
        Box::pin(async move {
            match rx.await {
                Ok(Ok(())) => Ok(StoreReply::done(&req)),
                Ok(Err(e)) => Err(StoreError::failed(e)),
                Err(_) => Err(StoreError::failed("dropped")),
            }
        })
    }
}

#[tokio::test]
async fn no_client_sees_a_write_before_it_is_durable() {
    let quiet = std::time::Duration::from_millis(300);
    let store = Deferred::default();
    let srv = TestServer::start(
        Omni::<Sess>::new()
            .storage(store.clone())
            .collection(Notes::empty())
            .persist::<Notes>()
            .channels::<Notes>(|n| &n.room),
    )
    .await;
    let mut writer = srv.client().await;
    let mut other = srv.client().await;
    sub(&mut writer, "lobby", true).await.unwrap();
    sub(&mut other, "lobby", true).await.unwrap();
    let id = writer
        .send(json!({"t": "add", "c": "notes", "tmp": "t1", "m": {"room": "lobby", "text": "hi"}}))
        .await
        .unwrap();
    // Nobody, the writer included, sees the new model before the commit is durable.
    let (early_w, early_o) = tokio::join!(writer.drain(quiet), other.drain(quiet));
    assert!(
        early_w.unwrap().is_empty(),
        "the writer heard back too early"
    );
    assert!(
        early_o.unwrap().is_empty(),
        "another client saw it too early"
    );
    assert!(srv.server.world().collection::<Notes>().is_empty());
    store.settle(Ok(())).await;
    let created = writer.answer(id).await.unwrap();
    assert_eq!(created["t"], "created");
    let oid = created["oid"].as_u64().unwrap();
    other
        .wait_until(|c| c.model("notes", oid).is_some())
        .await
        .unwrap();
    assert_eq!(
        srv.server.world().log_position().1,
        1,
        "the create is commit 1"
    );

    // A commit that fails: nobody saw it, the writer's change is rejected and rolled back,
    // the server state is unchanged.
    let id = writer
        .send(json!({"t": "change", "c": "notes", "oid": oid, "set": {"text": "lost"}}))
        .await
        .unwrap();
    store.settle(Err("disk full")).await;
    let err = writer.answer(id).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r == &format!("notes/Note {oid}: storage failed: disk full")),
        "{err:?}"
    );
    let reject = writer
        .log()
        .iter()
        .rev()
        .find(|m| m["t"] == "reject")
        .unwrap();
    assert_eq!(
        reject["m"]["text"], "hi",
        "rolled back to the server's value"
    );
    let seen = other.drain(quiet).await.unwrap();
    assert!(seen.is_empty(), "a failed write reached a client: {seen:?}");
    assert_eq!(
        srv.server
            .world()
            .collection::<Notes>()
            .get(Oid::from_raw(oid))
            .unwrap()
            .text,
        "hi"
    );

    // The backend recovers: the next write works, and server code waits for it too.
    let notes = srv.server.world().collection::<Notes>();
    let write = notes.update(Oid::from_raw(oid), |n| {
        n.set_text("again".into());
    });
    let seen = other.drain(quiet).await.unwrap();
    assert!(
        seen.is_empty(),
        "a server write reached a client before it was durable: {seen:?}"
    );
    let (_, result) = tokio::join!(store.settle(Ok(())), write);
    result.unwrap();
    other
        .wait_until(|c| c.model("notes", oid).unwrap()["text"] == "again")
        .await
        .unwrap();
    writer
        .wait_until(|c| c.model("notes", oid).unwrap()["text"] == "again")
        .await
        .unwrap();
    assert_eq!(srv.server.world().log_position().1, 2);
}

#[tokio::test]
async fn a_panicking_middleware_refuses_its_request_and_leaves_no_stale_connection() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let gone = Arc::new(AtomicUsize::new(0));
    let hook = gone.clone();
    let srv = TestServer::start(
        Omni::<Sess>::new()
            .collection(Notes::empty())
            .channels::<Notes>(|n| &n.room)
            .middleware(|req: StoreRequest, next: Next| async move {
                let boom = req
                    .doc
                    .as_ref()
                    .is_some_and(|d| String::from_utf8_lossy(d).contains("boom"));
                if boom {
                    panic!("middleware bug");
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await; // may wait
                next.run(req).await
            })
            // Answers reads itself, with data that echoes the client's options.
            .middleware(|req: StoreRequest, next: Next| async move {
                if req.method == Method::Read {
                    let data = json!({"answered": true, "opts": req.options});
                    return Ok(StoreReply::with_data(&req, data));
                }
                next.run(req).await
            })
            .persist::<Notes>()
            .on_disconnect(move |_conn: Conn<Sess>| {
                let hook = hook.clone();
                async move {
                    hook.fetch_add(1, Ordering::SeqCst);
                }
            }),
    )
    .await;
    let mut c = srv.client().await;
    sub(&mut c, "lobby", true).await.unwrap();
    let err = c
        .add("notes", json!({"room": "lobby", "text": "boom"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(r) if r.contains("the storage panicked (middleware bug)")),
        "{err:?}"
    );
    assert!(srv.server.world().collection::<Notes>().is_empty());
    // The connection goes on: the next write works, a read is answered by the middleware.
    let oid = c
        .add("notes", json!({"room": "lobby", "text": "fine"}))
        .await
        .unwrap();
    let id = c
        .send(json!({"t": "read", "c": "notes", "oid": oid, "opts": {"why": "audit"}}))
        .await
        .unwrap();
    let reply = c.answer(id).await.unwrap();
    assert_eq!(
        reply["ok"],
        json!({"answered": true, "opts": {"why": "audit"}})
    );
    // Server code's write that panics in the middleware is refused too.
    let notes = srv.server.world().collection::<Notes>();
    let err = notes
        .update(Oid::from_raw(oid), |n| {
            n.set_text("boom".into());
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the storage panicked"), "{err}");
    assert_eq!(notes.get(Oid::from_raw(oid)).unwrap().text, "fine");
    // Leaving: the disconnect hook runs and nothing of the connection stays.
    assert_eq!(srv.server.connections().len(), 1);
    c.close().await;
    for _ in 0..200 {
        if gone.load(Ordering::SeqCst) == 1 && srv.server.connections().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(gone.load(Ordering::SeqCst), 1, "the disconnect hook ran");
    assert!(srv.server.connections().is_empty(), "no stale connection");
}
