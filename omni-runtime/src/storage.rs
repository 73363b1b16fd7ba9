//! Storage: a backend under a stack of middleware, as in Backbone.IO.
//!
//! Every write to a collection, from a client or from server code, becomes a [`StoreRequest`]
//! (create, update or delete; a client's one-shot `read` too) that runs down the middleware
//! stack to the [`Backend`] before the engine applies it. Each middleware sees the request
//! (method, collection, model, OID, connection) and can
//!
//! - **pass it on** by calling [`Next::run`],
//! - **answer it** by returning `Ok(())` without calling `next` (the backend never sees it), or
//! - **refuse it** by returning a [`StoreError`]: nothing is applied and the client gets a
//!   `reject` carrying the error's message.
//!
//! The default backend is [`MemoryStore`]: models live in the engine and nothing survives a
//! restart, as in Omni.js. [`RedbStore`] keeps every collection registered with
//! [`Omni::persist`](crate::Omni::persist) in an embedded [redb](https://docs.rs/redb) file:
//! a change is acknowledged to its client only after it was committed to disk.
//!
//! # Example
//!
//! ```no_run
//! # use omni_runtime::prelude::*;
//! use omni_runtime::storage::{Logging, Method, RedbStore, StoreError};
//! # #[derive(Default)] struct Session;
//! #[derive(Model, Clone, Default, Serialize, Deserialize)]
//! struct Todo { title: String, done: bool }
//! # impl Permissions<Session> for Todo {}
//! #[collection(model = Todo)]
//! struct Todos;
//! # impl CollectionPermissions<Session> for Todos {}
//!
//! # fn run() -> Result<(), StoreError> {
//! let server = Omni::<Session>::new()
//!     .storage(RedbStore::open("todos.redb")?)       // the one call that makes it durable
//!     .collection(Todos::empty())
//!     .persist::<Todos>()                              // stored by the backend
//!     .middleware(Logging)                             // every request, logged with tracing
//!     .middleware(|req: &mut omni_runtime::storage::StoreRequest<'_>, next: omni_runtime::storage::Next<'_>| {
//!         if req.method == Method::Delete && req.conn.is_some() {
//!             return Err(StoreError::refused("todos are archived, not deleted"));
//!         }
//!         next.run(req)
//!     })
//!     .build();
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::conn::ConnId;

/// What a storage request does (Backbone.IO's `create`, `read`, `update`, `delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// A model is added.
    Create,
    /// A client reads one model by OID (the `read` message).
    Read,
    /// Attributes of a model change.
    Update,
    /// A model is removed.
    Delete,
}

impl Method {
    /// `"create"`, `"read"`, `"update"` or `"delete"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Create => "create",
            Method::Read => "read",
            Method::Update => "update",
            Method::Delete => "delete",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request on its way down the middleware stack.
#[derive(Debug)]
pub struct StoreRequest<'a> {
    /// What is done.
    pub method: Method,
    /// The collection's wire name.
    pub collection: &'static str,
    /// The model's Rust type name.
    pub model: &'static str,
    /// The model's OID. For [`Method::Create`] it is the OID the engine proposes; a backend that
    /// assigns its own ids (a database sequence) may replace it with a larger unused one, and
    /// clients then see that id as the model's OID.
    pub oid: u64,
    /// The whole model (private fields included) as JSON, for a create or update of a persisted
    /// collection; `None` otherwise.
    pub doc: Option<&'a [u8]>,
    /// For an update: the wire names of the attributes that changed.
    pub changed: &'a [&'static str],
    /// The client connection that asked, or `None` for server code.
    pub conn: Option<ConnId>,
    /// Whether the collection is persisted by the backend ([`Omni::persist`](crate::Omni::persist)).
    pub persist: bool,
    /// Set by a backend that accepted the write but makes it durable later (group commit): the
    /// engine then holds the asking client's answer, and everything after it, until the
    /// [`Durable`] watch reaches this ticket.
    pub pending: Option<Ticket>,
}

/// A write a backend accepted and will make durable: sequence number `seq` of `watch`.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// The write's sequence number; writes become durable in sequence order.
    pub seq: u64,
    /// Where the backend reports progress.
    pub watch: Arc<Durable>,
}

type Waiter = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Progress of a backend's durable writes, for [`Ticket`]s: the backend calls
/// [`Durable::advance`] after each commit, or [`Durable::fail`] when one failed.
#[derive(Default)]
pub struct Durable {
    inner: parking_lot::Mutex<DurableInner>,
}

#[derive(Default)]
struct DurableInner {
    durable: u64,
    failed: Option<(u64, String)>,
    waiters: Vec<(u64, Waiter)>,
}

impl fmt::Debug for Durable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Durable")
            .field("durable", &self.durable())
            .finish_non_exhaustive()
    }
}

impl Durable {
    /// The highest sequence number known to be durable.
    pub fn durable(&self) -> u64 {
        self.inner.lock().durable
    }

    /// Reports every write up to `seq` durable, and wakes what waited for them.
    pub fn advance(&self, seq: u64) {
        let ready = {
            let mut inner = self.inner.lock();
            inner.durable = inner.durable.max(seq);
            let durable = inner.durable;
            let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut inner.waiters)
                .into_iter()
                .partition(|(s, _)| *s <= durable);
            inner.waiters = wait;
            ready
        };
        for (_, w) in ready {
            w(Ok(()));
        }
    }

    /// Reports that the writes up to `seq` could not be made durable.
    pub fn fail(&self, seq: u64, reason: impl Into<String>) {
        let reason = reason.into();
        let failed = {
            let mut inner = self.inner.lock();
            inner.failed = Some((seq, reason.clone()));
            std::mem::take(&mut inner.waiters)
        };
        for (_, w) in failed {
            w(Err(reason.clone()));
        }
    }

    /// Calls `then` once `seq` is durable (at once if it is), or failed.
    pub(crate) fn when(&self, seq: u64, then: Waiter) {
        let mut inner = self.inner.lock();
        if let Some((_, reason)) = &inner.failed {
            let reason = reason.clone();
            drop(inner);
            then(Err(reason));
        } else if seq <= inner.durable {
            drop(inner);
            then(Ok(()));
        } else {
            inner.waiters.push((seq, then));
        }
    }
}

/// A refused or failed storage request. Its message reaches the client that asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreErrorKind {
    Refused,
    Failed,
}

impl StoreError {
    /// A middleware's deliberate refusal ("todos are archived, not deleted").
    pub fn refused(message: impl Into<String>) -> Self {
        StoreError {
            kind: StoreErrorKind::Refused,
            message: message.into(),
        }
    }
    /// A backend failure (I/O, corruption).
    pub fn failed(message: impl fmt::Display) -> Self {
        StoreError {
            kind: StoreErrorKind::Failed,
            message: message.to_string(),
        }
    }
    /// Whether a middleware refused the request on purpose (rather than a backend failing).
    pub fn is_refusal(&self) -> bool {
        self.kind == StoreErrorKind::Refused
    }
    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            StoreErrorKind::Refused => write!(f, "refused by the storage: {}", self.message),
            StoreErrorKind::Failed => write!(f, "storage failed: {}", self.message),
        }
    }
}

impl std::error::Error for StoreError {}

/// One stored model: its OID and its JSON document.
pub type StoredModel = (u64, Vec<u8>);

/// Where persisted models live. Called under the engine lock, so every call sees the writes in
/// the order the engine applies them; a call that returns has made its write durable (or, for
/// an in-memory backend, has nothing to do).
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs (`"memory"`, `"redb"`).
    fn name(&self) -> &'static str;
    /// The stored models of a collection, or `None` if this backend never stored the collection
    /// (then the server seeds it with the collection's initial models).
    fn load(&self, collection: &'static str) -> Result<Option<Vec<StoredModel>>, StoreError>;
    /// Stores the initial models of a collection seen for the first time, and remembers that it
    /// was seeded.
    fn seed(&self, collection: &'static str, models: &[(u64, Vec<u8>)]) -> Result<(), StoreError>;
    /// The largest OID this backend ever handed out or stored (0 if none), so OIDs stay unique
    /// and are never reused across restarts.
    fn last_oid(&self) -> Result<u64, StoreError>;
    /// Carries out one request that every middleware passed on.
    fn call(&self, req: &mut StoreRequest<'_>) -> Result<(), StoreError>;
}

/// A link of the storage stack (Backbone.IO's `backend.use(fn)`).
///
/// Closures `Fn(&mut StoreRequest, Next) -> Result<(), StoreError>` are middleware too.
pub trait Middleware: Send + Sync + 'static {
    /// Handles the request: pass it on with `next.run(req)`, answer it (return `Ok(())` without
    /// calling `next`), or refuse it (return an error).
    fn call(&self, req: &mut StoreRequest<'_>, next: Next<'_>) -> Result<(), StoreError>;
}

impl<F> Middleware for F
where
    F: Fn(&mut StoreRequest<'_>, Next<'_>) -> Result<(), StoreError> + Send + Sync + 'static,
{
    fn call(&self, req: &mut StoreRequest<'_>, next: Next<'_>) -> Result<(), StoreError> {
        self(req, next)
    }
}

/// The rest of the stack below a middleware.
pub struct Next<'a> {
    rest: &'a [Arc<dyn Middleware>],
    backend: &'a dyn Backend,
}

impl Next<'_> {
    /// Passes the request on to the next middleware, and finally to the backend.
    pub fn run(self, req: &mut StoreRequest<'_>) -> Result<(), StoreError> {
        match self.rest.split_first() {
            Some((first, rest)) => first.call(
                req,
                Next {
                    rest,
                    backend: self.backend,
                },
            ),
            None => self.backend.call(req),
        }
    }
}

/// The backend and its middleware, as the engine holds them.
pub(crate) struct Storage {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) stack: Vec<Arc<dyn Middleware>>,
    /// Whether the app set a backend or middleware: with only the default `MemoryStore`, a
    /// request can neither fail nor be seen, so server updates skip it.
    pub(crate) custom: bool,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            backend: Arc::new(MemoryStore),
            stack: Vec::new(),
            custom: false,
        }
    }
}

impl Storage {
    /// Runs a request through every middleware down to the backend.
    pub(crate) fn run(&self, req: &mut StoreRequest<'_>) -> Result<(), StoreError> {
        Next {
            rest: &self.stack,
            backend: &*self.backend,
        }
        .run(req)
    }
}

/// The default backend: models live only in the engine's memory, as in Omni.js; nothing survives
/// a restart. Every request succeeds.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryStore;

impl Backend for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn load(&self, _: &'static str) -> Result<Option<Vec<StoredModel>>, StoreError> {
        Ok(None)
    }
    fn seed(&self, _: &'static str, _: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        Ok(())
    }
    fn last_oid(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn call(&self, _: &mut StoreRequest<'_>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A middleware that logs every request (method, collection, OID, connection, outcome) through
/// `tracing` at `info` level, and passes it on.
#[derive(Debug, Default, Clone, Copy)]
pub struct Logging;

impl Middleware for Logging {
    fn call(&self, req: &mut StoreRequest<'_>, next: Next<'_>) -> Result<(), StoreError> {
        let (method, collection) = (req.method, req.collection);
        let conn = req
            .conn
            .map(|c| c.to_string())
            .unwrap_or_else(|| "server".into());
        let result = next.run(req);
        match &result {
            Ok(()) => {
                tracing::info!(%method, collection, oid = req.oid, %conn, changed = ?req.changed, "storage")
            }
            Err(e) => {
                tracing::warn!(%method, collection, oid = req.oid, %conn, error = %e, "storage refused")
            }
        }
        result
    }
}

// ---------------------------------------------------------------------------------------------

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const META: TableDefinition<'static, &str, u64> = TableDefinition::new("omni_meta");
const NEXT_OID: &str = "last_oid";

/// The largest OID ever stored, from the meta table.
fn last_oid(meta: &impl ReadableTable<&'static str, u64>) -> Result<u64, StoreError> {
    Ok(meta
        .get(NEXT_OID)
        .map_err(StoreError::failed)?
        .map(|v| v.value())
        .unwrap_or(0))
}

fn table(collection: &str) -> String {
    format!("models:{collection}")
}

/// A durable backend in one file, on [redb](https://docs.rs/redb): a pure-Rust, ACID, embedded
/// key-value store (no C toolchain, no server, crash-safe with copy-on-write B-trees and
/// checksummed commits). Each persisted collection is a table from OID to the model's JSON.
///
/// Writes are group-committed: [`Backend::call`] only queues a write (the engine never waits
/// for the disk while it holds its lock), and a writer thread commits everything queued in one
/// fsynced transaction. The client that made a write gets its answer (and everything after it)
/// only once that transaction is on disk, so a restart, even after `SIGKILL`, loses no
/// acknowledged change, and OIDs stay the same. Other clients see a change as soon as it is
/// applied, and server code's writes return before the commit: a crash can lose the last
/// few milliseconds of those.
pub struct RedbStore {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    db: redb::Database,
    queue: parking_lot::Mutex<Queue>,
    wake: parking_lot::Condvar,
    watch: Arc<Durable>,
}

#[derive(Default)]
struct Queue {
    ops: Vec<Op>,
    next_seq: u64,
    stop: bool,
}

struct Op {
    seq: u64,
    collection: &'static str,
    oid: u64,
    /// `None`: delete.
    doc: Option<Vec<u8>>,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("durable", &self.shared.watch.durable())
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the store file, creating it if needed, and starts its writer thread.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let db = redb::Database::create(path)
            .map_err(|e| StoreError::failed(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(StoreError::failed)?;
        txn.open_table(META).map_err(StoreError::failed)?;
        txn.commit().map_err(StoreError::failed)?;
        let shared = Arc::new(Shared {
            db,
            queue: parking_lot::Mutex::new(Queue::default()),
            wake: parking_lot::Condvar::new(),
            watch: Arc::new(Durable::default()),
        });
        let writer = std::thread::Builder::new()
            .name("omni-redb-writer".into())
            .spawn({
                let shared = shared.clone();
                move || writer(&shared)
            })
            .map_err(StoreError::failed)?;
        Ok(RedbStore {
            shared,
            writer: Some(writer),
        })
    }

    /// Blocks until every write queued so far is on disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        let seq = self.shared.queue.lock().next_seq;
        let (tx, rx) = std::sync::mpsc::channel();
        self.shared.watch.when(
            seq,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv()
            .map_err(StoreError::failed)?
            .map_err(StoreError::failed)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.shared.queue.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: commits what is queued, one transaction per batch, until stopped.
fn writer(shared: &Shared) {
    loop {
        let batch = {
            let mut queue = shared.queue.lock();
            while queue.ops.is_empty() && !queue.stop {
                shared.wake.wait(&mut queue);
            }
            if queue.ops.is_empty() {
                return;
            }
            std::mem::take(&mut queue.ops)
        };
        let last = batch.last().map(|op| op.seq).unwrap_or(0);
        match commit(&shared.db, &batch) {
            Ok(()) => shared.watch.advance(last),
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "redb commit failed");
                shared.watch.fail(last, e.to_string());
            }
        }
    }
}

fn commit(db: &redb::Database, batch: &[Op]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(StoreError::failed)?;
    {
        let mut meta = txn.open_table(META).map_err(StoreError::failed)?;
        let mut last = last_oid(&meta)?;
        for op in batch {
            let name = table(op.collection);
            let def: TableDefinition<'_, u64, &[u8]> = TableDefinition::new(&name);
            let mut t = txn.open_table(def).map_err(StoreError::failed)?;
            match &op.doc {
                Some(doc) => {
                    t.insert(op.oid, doc.as_slice())
                        .map_err(StoreError::failed)?;
                    last = last.max(op.oid);
                }
                None => {
                    t.remove(op.oid).map_err(StoreError::failed)?;
                }
            }
        }
        meta.insert(NEXT_OID, last).map_err(StoreError::failed)?;
    }
    txn.commit().map_err(StoreError::failed)
}

impl Backend for RedbStore {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn load(&self, collection: &'static str) -> Result<Option<Vec<StoredModel>>, StoreError> {
        self.flush()?;
        let txn = self.shared.db.begin_read().map_err(StoreError::failed)?;
        let meta = txn.open_table(META).map_err(StoreError::failed)?;
        let seeded = format!("seeded:{collection}");
        if meta
            .get(seeded.as_str())
            .map_err(StoreError::failed)?
            .is_none()
        {
            return Ok(None);
        }
        let name = table(collection);
        let def: TableDefinition<'_, u64, &[u8]> = TableDefinition::new(&name);
        let models = match txn.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Some(Vec::new())),
            Err(e) => return Err(StoreError::failed(e)),
        };
        let mut out = Vec::new();
        for row in models.iter().map_err(StoreError::failed)? {
            let (k, v) = row.map_err(StoreError::failed)?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(Some(out))
    }

    fn seed(&self, collection: &'static str, models: &[StoredModel]) -> Result<(), StoreError> {
        self.flush()?;
        let txn = self.shared.db.begin_write().map_err(StoreError::failed)?;
        {
            let name = table(collection);
            let def: TableDefinition<'_, u64, &[u8]> = TableDefinition::new(&name);
            let mut t = txn.open_table(def).map_err(StoreError::failed)?;
            let mut meta = txn.open_table(META).map_err(StoreError::failed)?;
            let mut last = last_oid(&meta)?;
            for (oid, doc) in models {
                t.insert(*oid, doc.as_slice()).map_err(StoreError::failed)?;
                last = last.max(*oid);
            }
            meta.insert(NEXT_OID, last).map_err(StoreError::failed)?;
            meta.insert(format!("seeded:{collection}").as_str(), 1)
                .map_err(StoreError::failed)?;
        }
        txn.commit().map_err(StoreError::failed)
    }

    fn last_oid(&self) -> Result<u64, StoreError> {
        self.flush()?;
        let txn = self.shared.db.begin_read().map_err(StoreError::failed)?;
        let meta = txn.open_table(META).map_err(StoreError::failed)?;
        last_oid(&meta)
    }

    fn call(&self, req: &mut StoreRequest<'_>) -> Result<(), StoreError> {
        if !req.persist || req.method == Method::Read {
            return Ok(());
        }
        let doc = match req.method {
            Method::Create | Method::Update => Some(
                req.doc
                    .ok_or_else(|| {
                        StoreError::failed(format!(
                            "{} of {}/{} {} carries no document",
                            req.method, req.collection, req.model, req.oid
                        ))
                    })?
                    .to_vec(),
            ),
            _ => None,
        };
        let seq = {
            let mut queue = self.shared.queue.lock();
            if queue.stop {
                return Err(StoreError::failed("the store is closed"));
            }
            queue.next_seq += 1;
            let seq = queue.next_seq;
            queue.ops.push(Op {
                seq,
                collection: req.collection,
                oid: req.oid,
                doc,
            });
            seq
        };
        self.shared.wake.notify_one();
        req.pending = Some(Ticket {
            seq,
            watch: self.shared.watch.clone(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, oid: u64, doc: Option<&[u8]>) -> StoreRequest<'_> {
        StoreRequest {
            method,
            collection: "todos",
            model: "Todo",
            oid,
            doc,
            changed: &[],
            conn: None,
            persist: true,
            pending: None,
        }
    }

    #[test]
    fn middleware_passes_answers_or_refuses_in_order() {
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let s1 = seen.clone();
        let s2 = seen.clone();
        let storage = Storage {
            custom: true,
            backend: Arc::new(MemoryStore),
            stack: vec![
                Arc::new(move |r: &mut StoreRequest<'_>, next: Next<'_>| {
                    s1.lock().push(format!("outer {}", r.method));
                    next.run(r)
                }),
                Arc::new(move |r: &mut StoreRequest<'_>, next: Next<'_>| {
                    s2.lock().push(format!("inner {}", r.method));
                    match r.method {
                        Method::Delete => Err(StoreError::refused("no deletes")),
                        Method::Read => Ok(()), // answered here
                        _ => next.run(r),
                    }
                }),
            ],
        };
        assert!(
            storage
                .run(&mut req(Method::Update, 1, Some(b"{}")))
                .is_ok()
        );
        let err = storage.run(&mut req(Method::Delete, 1, None)).unwrap_err();
        assert!(err.is_refusal());
        assert_eq!(err.to_string(), "refused by the storage: no deletes");
        assert_eq!(
            *seen.lock(),
            [
                "outer update",
                "inner update",
                "outer delete",
                "inner delete"
            ]
        );
    }

    #[test]
    fn redb_store_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("omni-redb-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        {
            let store = RedbStore::open(&dir).unwrap();
            assert_eq!(store.load("todos").unwrap(), None, "never seeded");
            store.seed("todos", &[(3, b"{\"a\":1}".to_vec())]).unwrap();
            store
                .call(&mut req(Method::Create, 7, Some(b"{\"a\":2}")))
                .unwrap();
            store
                .call(&mut req(Method::Update, 3, Some(b"{\"a\":3}")))
                .unwrap();
        }
        let store = RedbStore::open(&dir).unwrap();
        assert_eq!(store.last_oid().unwrap(), 7);
        assert_eq!(
            store.load("todos").unwrap(),
            Some(vec![(3, b"{\"a\":3}".to_vec()), (7, b"{\"a\":2}".to_vec())])
        );
        store.call(&mut req(Method::Delete, 3, None)).unwrap();
        assert_eq!(
            store.load("todos").unwrap(),
            Some(vec![(7, b"{\"a\":2}".to_vec())])
        );
        drop(store);
        let _ = std::fs::remove_file(&dir);
    }
}
