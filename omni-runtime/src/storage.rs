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
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            backend: Arc::new(MemoryStore),
            stack: Vec::new(),
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

fn table(collection: &str) -> String {
    format!("models:{collection}")
}

/// A durable backend in one file, on [redb](https://docs.rs/redb): a pure-Rust, ACID, embedded
/// key-value store (no C toolchain, no server, crash-safe with copy-on-write B-trees and
/// checksummed commits). Each persisted collection is a table from OID to the model's JSON.
///
/// Every create, update and delete is its own committed, fsynced transaction before the engine
/// applies it and acknowledges it to the client: a restart, even after `SIGKILL`, loses no
/// acknowledged change, and OIDs stay the same.
pub struct RedbStore {
    db: redb::Database,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the store file, creating it if needed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let db = redb::Database::create(path)
            .map_err(|e| StoreError::failed(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(StoreError::failed)?;
        txn.open_table(META).map_err(StoreError::failed)?;
        txn.commit().map_err(StoreError::failed)?;
        Ok(RedbStore { db })
    }
}

impl Backend for RedbStore {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn load(&self, collection: &'static str) -> Result<Option<Vec<StoredModel>>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::failed)?;
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

    fn seed(&self, collection: &'static str, models: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::failed)?;
        {
            let name = table(collection);
            let def: TableDefinition<'_, u64, &[u8]> = TableDefinition::new(&name);
            let mut t = txn.open_table(def).map_err(StoreError::failed)?;
            let mut meta = txn.open_table(META).map_err(StoreError::failed)?;
            let mut last = meta
                .get(NEXT_OID)
                .map_err(StoreError::failed)?
                .map(|v| v.value())
                .unwrap_or(0);
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
        let txn = self.db.begin_read().map_err(StoreError::failed)?;
        let meta = txn.open_table(META).map_err(StoreError::failed)?;
        Ok(meta
            .get(NEXT_OID)
            .map_err(StoreError::failed)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    fn call(&self, req: &mut StoreRequest<'_>) -> Result<(), StoreError> {
        if !req.persist || req.method == Method::Read {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(StoreError::failed)?;
        {
            let name = table(req.collection);
            let def: TableDefinition<'_, u64, &[u8]> = TableDefinition::new(&name);
            let mut t = txn.open_table(def).map_err(StoreError::failed)?;
            match req.method {
                Method::Create | Method::Update => {
                    let doc = req.doc.ok_or_else(|| {
                        StoreError::failed(format!(
                            "{} of {}/{} {} carries no document",
                            req.method, req.collection, req.model, req.oid
                        ))
                    })?;
                    t.insert(req.oid, doc).map_err(StoreError::failed)?;
                }
                Method::Delete => {
                    t.remove(req.oid).map_err(StoreError::failed)?;
                }
                Method::Read => {}
            }
            if req.method == Method::Create {
                let mut meta = txn.open_table(META).map_err(StoreError::failed)?;
                let last = meta
                    .get(NEXT_OID)
                    .map_err(StoreError::failed)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                meta.insert(NEXT_OID, last.max(req.oid))
                    .map_err(StoreError::failed)?;
            }
        }
        txn.commit().map_err(StoreError::failed)
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
        }
    }

    #[test]
    fn middleware_passes_answers_or_refuses_in_order() {
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let s1 = seen.clone();
        let s2 = seen.clone();
        let storage = Storage {
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
