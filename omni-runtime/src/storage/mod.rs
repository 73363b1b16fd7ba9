//! Storage: a backend under a stack of middleware, as in Backbone.IO; both asynchronous.
//!
//! Every write to a collection, from a client or from server code, becomes a [`StoreRequest`]
//! (create, update or delete; a client's one-shot `read` too) that runs down the middleware
//! stack to the [`Backend`] after the engine validated it and before anyone sees it. Storage
//! runs outside the engine's lock, so a backend or middleware may take milliseconds (a
//! networked database, a REST call) without delaying other connections' deliveries. Writes to
//! one model reach the storage one at a time, in the order the engine accepted them.
//!
//! Each middleware sees the request (method, collection, model, OID, connection, the client's
//! options) and can
//!
//! - **pass it on** with [`Next::run`],
//! - **answer it** by returning [`StoreReply`] without calling `next` (the backend never sees
//!   it); for a `read`, [`StoreReply::with_data`] answers the client with that data (Backbone.IO's
//!   `res.end(data)`), or
//! - **refuse it** with a [`StoreError`]: nothing is applied and the client gets a `reject`
//!   carrying the error's message.
//!
//! A request is **durable** when the backend's future resolves `Ok`: only then is the change
//! applied and sent to any client (the writer included), and server code's write returns. A
//! panic in a middleware or backend refuses that request; a failed request changes nothing, and
//! the next write to the model works again once the backend recovers.
//!
//! The default backend is [`MemoryStore`]: models live in the engine and nothing survives a
//! restart, as in Omni.js. [`RedbStore`] keeps every collection registered with
//! [`Omni::persist`](crate::Omni::persist) in an embedded [redb](https://docs.rs/redb) file,
//! group-committed: one fsync per batch of writes.
//!
//! # Example
//!
//! ```no_run
//! # use omni_runtime::prelude::*;
//! use omni_runtime::storage::{Logging, Method, Next, RedbStore, StoreError, StoreRequest};
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
//!     .middleware(|req: StoreRequest, next: Next| async move {
//!         if req.method == Method::Delete && req.conn.is_some() {
//!             return Err(StoreError::refused("todos are archived, not deleted"));
//!         }
//!         next.run(req).await                          // may also await a database here
//!     })
//!     .build();
//! # Ok(()) }
//! ```

mod memory;
mod redb;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::ids::ConnId;

pub use self::memory::{Logging, MemoryStore};
pub use self::redb::RedbStore;

/// A boxed, sendable future: what [`Backend::call`] and [`Middleware::call`] return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

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

/// One request on its way down the middleware stack. Owned, so a middleware can hold it
/// across `.await`s.
#[derive(Debug, Clone)]
pub struct StoreRequest {
    /// What is done.
    pub method: Method,
    /// The collection's wire name.
    pub collection: &'static str,
    /// The model's Rust type name.
    pub model: &'static str,
    /// The model's OID. For [`Method::Create`] it is the OID the engine reserved; a backend that
    /// assigns its own ids (a database sequence) may answer with a larger unused one
    /// ([`StoreReply::oid`]), and clients then see that id as the model's OID.
    pub oid: u64,
    /// The whole model (private fields included) as JSON, for a create or update of a persisted
    /// collection; `None` otherwise.
    pub doc: Option<Bytes>,
    /// For an update: the wire names of the attributes that changed.
    pub changed: Vec<&'static str>,
    /// The client connection that asked, or `None` for server code.
    pub conn: Option<ConnId>,
    /// Whether the collection is persisted by the backend ([`Omni::persist`](crate::Omni::persist)).
    pub persist: bool,
    /// What the client sent along in the message's `opts` field (Backbone.IO's `options`), if
    /// anything: `model.save(attrs, { opts })` in the generated client.
    pub options: Option<serde_json::Value>,
}

/// A request carried out: the answer of a backend or middleware.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreReply {
    /// The model's OID: the request's own, or for a create an id the backend assigned.
    pub oid: u64,
    /// For a `read`: data to answer the client with instead of the model's readable attributes
    /// (Backbone.IO's `res.end(data)`). Ignored for other methods.
    pub data: Option<serde_json::Value>,
}

impl StoreReply {
    /// The request is done, as asked.
    pub fn done(req: &StoreRequest) -> Self {
        StoreReply {
            oid: req.oid,
            data: None,
        }
    }

    /// The request is answered with `data` (for a `read`: what the client receives).
    pub fn with_data(req: &StoreRequest, data: serde_json::Value) -> Self {
        StoreReply {
            oid: req.oid,
            data: Some(data),
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
    /// A backend failure (I/O, corruption, a panic).
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

/// Where persisted models live.
///
/// [`Backend::call`] is asynchronous and runs outside the engine's lock. Its future resolving
/// `Ok` means the write is **durable**: the engine applies it and sends it to clients only
/// then. Writes to one model are called one at a time (the next after the previous resolved);
/// writes to different models may overlap. `load`, `seed` and `last_oid` run once, when the
/// server is built.
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs (`"memory"`, `"redb"`).
    fn name(&self) -> &'static str;
    /// The stored models of a collection, or `None` if this backend never stored the collection
    /// (then the server seeds it with the collection's initial models).
    fn load(&self, collection: &'static str) -> Result<Option<Vec<StoredModel>>, StoreError>;
    /// Stores the initial models of a collection seen for the first time, and remembers that it
    /// was seeded.
    fn seed(&self, collection: &'static str, models: &[StoredModel]) -> Result<(), StoreError>;
    /// The largest OID this backend ever handed out, stored or reserved (0 if none), so OIDs
    /// stay unique and are never reused across restarts.
    fn last_oid(&self) -> Result<u64, StoreError>;
    /// Reserves every OID up to `upto`: a durable backend records it no later than the next
    /// write it makes durable, so that after a restart [`Backend::last_oid`] is at least
    /// `upto` and no OID the engine handed out (even to a create that never became durable) is
    /// handed out again. Called under the engine lock, rarely (once per block of OIDs): it must
    /// not block. Default: nothing (for backends that keep nothing across restarts).
    fn reserve_oids(&self, upto: u64) {
        let _ = upto;
    }
    /// Carries out one request that every middleware passed on; resolves once it is durable.
    fn call(&self, req: StoreRequest) -> BoxFuture<Result<StoreReply, StoreError>>;
    /// Registers the backend's own metrics with the server's Prometheus registry (names get the
    /// server's `omni_` prefix), once, when the server is built. Default: none.
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let _ = registry;
    }
}

/// A link of the storage stack (Backbone.IO's `backend.use(fn)`).
///
/// Closures `Fn(StoreRequest, Next) -> impl Future<Output = Result<StoreReply, StoreError>>` are
/// middleware too: `|req: StoreRequest, next: Next| async move { next.run(req).await }`.
pub trait Middleware: Send + Sync + 'static {
    /// Handles the request: pass it on with `next.run(req)`, answer it (return a
    /// [`StoreReply`] without calling `next`), or refuse it (return an error).
    fn call(&self, req: StoreRequest, next: Next) -> BoxFuture<Result<StoreReply, StoreError>>;
}

impl<F, Fut> Middleware for F
where
    F: Fn(StoreRequest, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<StoreReply, StoreError>> + Send + 'static,
{
    fn call(&self, req: StoreRequest, next: Next) -> BoxFuture<Result<StoreReply, StoreError>> {
        Box::pin(self(req, next))
    }
}

/// The rest of the stack below a middleware.
pub struct Next {
    stack: Arc<Stack>,
    pos: usize,
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("remaining", &(self.stack.middleware.len() - self.pos))
            .field("backend", &self.stack.backend.name())
            .finish()
    }
}

impl Next {
    /// Passes the request on to the next middleware, and finally to the backend.
    pub fn run(self, req: StoreRequest) -> BoxFuture<Result<StoreReply, StoreError>> {
        match self.stack.middleware.get(self.pos) {
            Some(first) => {
                let first = first.clone();
                first.call(
                    req,
                    Next {
                        stack: self.stack,
                        pos: self.pos + 1,
                    },
                )
            }
            None => self.stack.backend.call(req),
        }
    }
}

struct Stack {
    backend: Arc<dyn Backend>,
    middleware: Vec<Arc<dyn Middleware>>,
}

/// The backend and its middleware, as the engine holds them.
pub(crate) struct Storage {
    stack: Arc<Stack>,
    /// Whether the app set a backend or middleware: with only the default `MemoryStore`, a
    /// request can neither fail, wait nor be seen, so the engine skips the storage entirely and
    /// applies writes in one step.
    custom: bool,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            stack: Arc::new(Stack {
                backend: Arc::new(MemoryStore),
                middleware: Vec::new(),
            }),
            custom: false,
        }
    }
}

impl Storage {
    pub(crate) fn set_backend(&mut self, backend: Arc<dyn Backend>) {
        self.stack = Arc::new(Stack {
            backend,
            middleware: self.stack.middleware.clone(),
        });
        self.custom = true;
    }

    pub(crate) fn push(&mut self, middleware: Arc<dyn Middleware>) {
        let mut list = self.stack.middleware.clone();
        list.push(middleware);
        self.stack = Arc::new(Stack {
            backend: self.stack.backend.clone(),
            middleware: list,
        });
        self.custom = true;
    }

    pub(crate) fn custom(&self) -> bool {
        self.custom
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.stack.backend
    }

    /// Runs a request through every middleware down to the backend. A panic anywhere in the
    /// stack (while building or polling its futures) becomes a failed request.
    pub(crate) fn run(&self, req: StoreRequest) -> BoxFuture<Result<StoreReply, StoreError>> {
        use futures_util::FutureExt;
        let next = Next {
            stack: self.stack.clone(),
            pos: 0,
        };
        let (collection, method) = (req.collection, req.method);
        Box::pin(async move {
            match std::panic::AssertUnwindSafe(async move { next.run(req).await })
                .catch_unwind()
                .await
            {
                Ok(result) => result,
                Err(panic) => {
                    let panic = crate::hooks::panic_message(&panic).to_owned();
                    tracing::error!(collection, %method, panic, "storage middleware or backend panicked; request refused");
                    Err(StoreError::failed(format!(
                        "the storage panicked ({panic})"
                    )))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn req(method: Method, oid: u64, doc: Option<&[u8]>) -> StoreRequest {
        StoreRequest {
            method,
            collection: "todos",
            model: "Todo",
            oid,
            doc: doc.map(Bytes::copy_from_slice),
            changed: Vec::new(),
            conn: None,
            persist: true,
            options: None,
        }
    }

    #[tokio::test]
    async fn middleware_passes_answers_or_refuses_in_order() {
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let s1 = seen.clone();
        let s2 = seen.clone();
        let mut storage = Storage::default();
        storage.push(Arc::new(move |r: StoreRequest, next: Next| {
            s1.lock().push(format!("outer {}", r.method));
            next.run(r)
        }));
        storage.push(Arc::new(move |r: StoreRequest, next: Next| {
            s2.lock().push(format!("inner {}", r.method));
            async move {
                tokio::task::yield_now().await; // a middleware may wait
                match r.method {
                    Method::Delete => Err(StoreError::refused("no deletes")),
                    Method::Read => Ok(StoreReply::with_data(&r, serde_json::json!("hi"))),
                    _ => next.run(r).await,
                }
            }
        }));
        let ok = storage
            .run(req(Method::Update, 1, Some(b"{}")))
            .await
            .unwrap();
        assert_eq!(ok, StoreReply { oid: 1, data: None });
        let err = storage.run(req(Method::Delete, 1, None)).await.unwrap_err();
        assert!(err.is_refusal());
        assert_eq!(err.to_string(), "refused by the storage: no deletes");
        let read = storage.run(req(Method::Read, 1, None)).await.unwrap();
        assert_eq!(read.data, Some(serde_json::json!("hi")));
        assert_eq!(
            *seen.lock(),
            [
                "outer update",
                "inner update",
                "outer delete",
                "inner delete",
                "outer read",
                "inner read"
            ]
        );
    }

    #[tokio::test]
    async fn a_panicking_middleware_fails_its_request_only() {
        let mut storage = Storage::default();
        storage.push(Arc::new(|r: StoreRequest, next: Next| async move {
            if r.oid == 13 {
                panic!("unlucky");
            }
            next.run(r).await
        }));
        let err = storage
            .run(req(Method::Update, 13, None))
            .await
            .unwrap_err();
        assert!(!err.is_refusal());
        assert!(err.message().contains("unlucky"), "{err}");
        assert!(storage.run(req(Method::Update, 14, None)).await.is_ok());
    }
}
