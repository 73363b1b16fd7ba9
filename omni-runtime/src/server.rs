//! The server: the [`Omni`] builder, its warp routes and the per-connection task.
//!
//! ```no_run
//! # use omni_runtime::prelude::*;
//! # #[derive(Default)] struct Session;
//! # #[derive(Model, Clone, Default)] struct Player { name: String }
//! # impl Permissions<Session> for Player {}
//! # #[collection(model = Player)] struct Players;
//! # impl CollectionPermissions<Session> for Players {}
//! # async fn run() -> std::io::Result<()> {
//! Omni::<Session>::new()
//!     .collection(Players::with([Player { name: "Jim".into() }]))
//!     .listen(([127, 0, 0, 1], 3000))
//!     .await
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use omni_client_gen::schema::{CollectionSchema, EventSchema, Schema};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_tungstenite::tungstenite::Message;
use warp::Filter;
use warp::filters::BoxedFilter;

use crate::upgrade::{Socket, Upgrade};

use crate::collection::{CollectionPermissions, Seeded};
use crate::conn::{Conn, ConnId};
use crate::engine::{Announce, Codec, ConnState, Engine, Request, Store, panic_message};
use crate::error::EventError;
use crate::model::{Model, Permissions};
use crate::outbox::{Drain, Outbox, frame};
use crate::rules::Rules;
use crate::storage::{Backend, Middleware, StoreError};
use crate::world::{World, WorldCore};
use crate::{assets, wire};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type EventFn<S> = Arc<
    dyn Fn(Conn<S>, World, serde_json::Value) -> BoxFuture<Result<Vec<u8>, String>> + Send + Sync,
>;
type HookFn<S> = Arc<dyn Fn(Conn<S>) -> BoxFuture<()> + Send + Sync>;

/// Limits and switches of a server. Every field has a documented default.
#[derive(Debug, Clone)]
pub struct Config {
    /// Serve a readable client (`true`) or a minified, compressed, cached one. Default: `false`.
    pub development: bool,
    /// Path segment of the WebSocket endpoint. Default: `"omni"`.
    pub ws_path: String,
    /// Directory served as static files at `/`, if any. Default: `Some("public")`.
    pub static_dir: Option<PathBuf>,
    /// Largest accepted WebSocket message, in bytes. Default: 1 MiB.
    pub max_message_size: usize,
    /// Bytes of pending state updates per connection before they are dropped and the client is
    /// resynced with a fresh snapshot once it reads again. Default: 4 MiB.
    pub max_queue_bytes: usize,
    /// Sustained client messages per second per connection (each message of a batch counts).
    /// Default: 2,000.
    pub max_messages_per_second: u32,
    /// Messages a connection may send in a burst above the sustained rate; a client over it gets
    /// an `error`, and one that goes on to twice this burst is disconnected. Default: 4,000.
    pub message_burst: u32,
    /// Origins allowed to open the WebSocket (`https://example.com`). Empty: only the same origin
    /// as the `Host` header. Requests without an `Origin` header (non-browser clients) are
    /// allowed. A refused origin gets HTTP 403. Default: empty.
    pub allowed_origins: Vec<String>,
    /// Bytes each WebSocket reads from its socket at a time (tungstenite's read buffer; it
    /// grows while a larger message arrives). It is most of what an idle connection costs
    /// (7.6 KiB each at 4 KiB, 15,000 connections), but below 4 KiB throughput collapses once
    /// the server is saturated (docs/BENCHMARKS.md). Default: 4 KiB.
    pub socket_read_buffer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            development: false,
            ws_path: "omni".to_owned(),
            static_dir: Some(PathBuf::from("public")),
            max_message_size: 1 << 20,
            max_queue_bytes: 4 << 20,
            max_messages_per_second: 2_000,
            message_burst: 4_000,
            allowed_origins: Vec::new(),
            socket_read_buffer: 4 * 1024,
        }
    }
}

/// State shared by the server, its connections and every [`World`] and [`Conn`] handle.
pub(crate) struct Shared<S> {
    pub(crate) engine: Mutex<Engine<S>>,
    events: HashMap<String, EventFn<S>>,
    on_connect: Vec<HookFn<S>>,
    on_disconnect: Vec<HookFn<S>>,
    pub(crate) config: Config,
    schema: Schema,
    assets: assets::Assets,
    next_conn: AtomicU64,
}

/// Builds an Omni server: collections, events, hooks, options. `S` is the per-connection
/// session type.
pub struct Omni<S> {
    engine: Engine<S>,
    events: HashMap<String, EventFn<S>>,
    on_connect: Vec<HookFn<S>>,
    on_disconnect: Vec<HookFn<S>>,
    config: Config,
    schema: Schema,
}

impl<S: Default + Send + Sync + 'static> Default for Omni<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Default + Send + Sync + 'static> Omni<S> {
    /// A server with no collections and the default [`Config`].
    pub fn new() -> Self {
        Omni {
            engine: Engine::new(),
            events: HashMap::new(),
            on_connect: Vec::new(),
            on_disconnect: Vec::new(),
            config: Config::default(),
            schema: Schema::new(),
        }
    }

    /// Registers a collection, with its initial models: `.collection(Players::with([...]))`.
    ///
    /// # Panics
    /// If a collection with the same wire name is already registered.
    pub fn collection<C>(mut self, collection: impl Into<Seeded<C>>) -> Self
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S>,
    {
        assert!(
            self.engine.coll_index(C::NAME).is_none(),
            "collection `{}` is registered twice; give one of them another name with #[collection(name = \"...\")]",
            C::NAME
        );
        let idx = self.engine.colls.len();
        let store = Store::<C, S>::new(collection.into(), idx);
        self.engine.colls.push(Box::new(store));
        <C::Model as Model>::describe(&mut self.schema);
        self.schema.collections.push(CollectionSchema {
            name: C::NAME.to_owned(),
            model: <C::Model as Model>::NAME.to_owned(),
            docs: C::DOCS.map(str::to_owned),
        });
        self
    }

    /// The registered `Store` of collection `C`.
    fn store_mut<C>(&mut self, what: &str) -> &mut Store<C, S>
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S>,
    {
        let found = self
            .engine
            .colls
            .iter_mut()
            .find(|c| c.type_id() == std::any::TypeId::of::<C>())
            .and_then(|c| c.as_any_mut().downcast_mut::<Store<C, S>>());
        match found {
            Some(store) => store,
            None => panic!(
                "`{what}::<{}>()` needs the collection `{}` registered first: call `.collection(...)` before it",
                std::any::type_name::<C>(),
                C::NAME
            ),
        }
    }

    /// Sets the storage backend (Backbone.IO's backend): [`MemoryStore`](crate::storage::MemoryStore)
    /// by default, [`RedbStore`](crate::storage::RedbStore) for a durable one. Collections
    /// registered with [`Omni::persist`] are loaded from it when the server is built, and every
    /// write to them is stored before it is applied and acknowledged.
    pub fn storage(mut self, backend: impl Backend) -> Self {
        self.engine.storage.backend = Arc::new(backend);
        self.engine.storage.custom = true;
        self
    }

    /// Adds a middleware to the storage stack (Backbone.IO's `backend.use`). Middleware run in
    /// the order they were added, on every create, update and delete of every collection and on
    /// a client's one-shot read; see [`storage`](crate::storage).
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.engine.storage.stack.push(Arc::new(middleware));
        self.engine.storage.custom = true;
        self
    }

    /// Keeps collection `C` in the storage backend: loaded from it at start (seeded with the
    /// collection's initial models the first time), every write stored before it is applied.
    /// The model is stored whole, server-private fields included, with serde.
    ///
    /// # Panics
    /// If `C` was not registered with [`Omni::collection`] before.
    pub fn persist<C>(mut self) -> Self
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S> + Serialize + DeserializeOwned,
    {
        self.store_mut::<C>("persist").codec = Some(Codec {
            encode: |m| serde_json::to_vec(m).map_err(|e| e.to_string()),
            decode: |b| serde_json::from_slice(b).map_err(|e| e.to_string()),
        });
        self
    }

    /// Scopes collection `C` by channel: `channel(model)` names the channel a model belongs to
    /// (a chat room), and a client holds only the models of the channels it subscribed to
    /// (`Omni.collections.messages.subscribe("lobby")`, or [`Conn::subscribe`] from the server),
    /// as far as `can_read` allows. [`CollectionPermissions::can_subscribe`] decides who may
    /// subscribe to what.
    ///
    /// # Panics
    /// If `C` was not registered with [`Omni::collection`] before.
    pub fn channels<C>(mut self, channel: fn(&C::Model) -> &str) -> Self
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S>,
    {
        self.store_mut::<C>("channels").channel = Some(channel);
        self
    }

    /// Per-action rules for collection `C` (Halo's routes): allow or deny `create`, `read`,
    /// `update`, `destroy` and `list` as a whole, or decide them with handlers; see
    /// [`rules`](crate::rules).
    ///
    /// # Panics
    /// If `C` was not registered with [`Omni::collection`] before.
    pub fn rules<C>(mut self, rules: Rules<S>) -> Self
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S>,
    {
        self.store_mut::<C>("rules").rules = rules;
        self
    }

    /// Registers a client-callable event: `Omni.trigger(name, args)` on the client resolves to
    /// the handler's reply, or rejects with the error's message.
    ///
    /// # Panics
    /// If an event with this name is already registered.
    pub fn event<A, R, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        A: DeserializeOwned + ts_rs::TS + 'static,
        R: Serialize + ts_rs::TS + 'static,
        F: Fn(Conn<S>, World, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, EventError>> + Send + 'static,
    {
        assert!(
            !self.events.contains_key(name),
            "event `{name}` is registered twice"
        );
        let event_name: Arc<str> = name.into();
        let handler = Arc::new(handler);
        let erased: EventFn<S> = Arc::new(move |conn, world, args| {
            let handler = handler.clone();
            let event_name = event_name.clone();
            Box::pin(async move {
                let args: A = serde_json::from_value(args)
                    .map_err(|e| format!("event `{event_name}`: bad arguments: {e}"))?;
                let reply = handler(conn, world, args)
                    .await
                    .map_err(|e| e.message().to_owned())?;
                let mut json = Vec::new();
                crate::__private::encode(&reply, &mut json);
                Ok(json)
            })
        });
        self.events.insert(name.to_owned(), erased);
        let args_ts = crate::ts::ts_type::<A>(&mut self.schema);
        let reply_ts = crate::ts::ts_type::<R>(&mut self.schema);
        self.schema.events.push(EventSchema {
            name: name.to_owned(),
            args_ts,
            reply_ts,
        });
        self
    }

    /// Runs when a client connects, before it gets its snapshot: set up the session here, and
    /// the snapshot will follow it (Omni.js's `connect` event).
    pub fn on_connect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Conn<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_connect
            .push(Arc::new(move |conn| Box::pin(hook(conn))));
        self
    }

    /// Runs when a client disconnected; its session is still readable.
    pub fn on_disconnect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Conn<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_disconnect
            .push(Arc::new(move |conn| Box::pin(hook(conn))));
        self
    }

    /// Serves this directory as static files at `/` (default: `public`).
    pub fn static_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.static_dir = Some(dir.into());
        self
    }

    /// Serves no static files (Omni.js's `static: false`).
    pub fn no_static(mut self) -> Self {
        self.config.static_dir = None;
        self
    }

    /// Development mode: a readable `/omni.js`, not cached. Otherwise minified, compressed and
    /// cached. Typically `.development(cfg!(debug_assertions))`.
    pub fn development(mut self, on: bool) -> Self {
        self.config.development = on;
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The schema the client is generated from.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Finishes the builder. The server does not listen yet: see [`Server::serve`],
    /// [`Server::routes`] and [`Omni::listen`].
    ///
    /// # Panics
    /// If the storage cannot load the persisted collections; [`Omni::try_build`] returns the
    /// error instead.
    pub fn build(self) -> Server<S> {
        match self.try_build() {
            Ok(server) => server,
            Err(e) => panic!("the server cannot start: {e}"),
        }
    }

    /// Finishes the builder, loading persisted collections from the storage.
    pub fn try_build(mut self) -> Result<Server<S>, StoreError> {
        self.engine.load()?;
        let assets = assets::Assets::build(&self.schema, self.config.development);
        Ok(Server {
            shared: Arc::new(Shared {
                engine: Mutex::new(self.engine),
                events: self.events,
                on_connect: self.on_connect,
                on_disconnect: self.on_disconnect,
                config: self.config,
                schema: self.schema,
                assets,
                next_conn: AtomicU64::new(0),
            }),
        })
    }

    /// Builds the server and serves it on `addr` until the process ends.
    pub async fn listen(self, addr: impl Into<SocketAddr>) -> std::io::Result<()> {
        let server = self.try_build().map_err(std::io::Error::other)?;
        let listener = tokio::net::TcpListener::bind(addr.into()).await?;
        server.serve(listener).await;
        Ok(())
    }
}

/// A built server. Cheap to clone.
pub struct Server<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for Server<S> {
    fn clone(&self) -> Self {
        Server {
            shared: self.shared.clone(),
        }
    }
}

impl<S: Default + Send + Sync + 'static> Server<S> {
    /// The world, to read and change collections from server code.
    pub fn world(&self) -> World {
        World {
            core: self.shared.clone(),
        }
    }

    /// The connected clients.
    pub fn connections(&self) -> Vec<Conn<S>> {
        let engine = self.shared.engine.lock();
        let mut ids: Vec<ConnId> = engine
            .conns
            .iter()
            .filter(|(_, c)| c.ready)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids.into_iter()
            .map(|id| Conn {
                id,
                shared: self.shared.clone(),
            })
            .collect()
    }

    /// The schema the client is generated from.
    pub fn schema(&self) -> &Schema {
        &self.shared.schema
    }

    /// The server's routes as a warp filter, to mount Omni inside a bigger warp app:
    /// the WebSocket endpoint, `/omni.js` and the other client files, and the static directory.
    pub fn routes(&self) -> BoxedFilter<(warp::reply::Response,)> {
        let shared = self.shared.clone();
        let cfg = &self.shared.config;
        let ws = warp::path(cfg.ws_path.clone())
            .and(warp::path::end())
            .and(crate::upgrade::upgrade())
            .and(warp::header::optional::<String>("origin"))
            .and(warp::header::optional::<String>("host"))
            .map(
                move |ws: Upgrade, origin: Option<String>, host: Option<String>| {
                    let shared = shared.clone();
                    if !origin_allowed(
                        &shared.config.allowed_origins,
                        origin.as_deref(),
                        host.as_deref(),
                    ) {
                        tracing::warn!(
                            origin = origin.as_deref().unwrap_or_default(),
                            "refused a WebSocket from a foreign origin"
                        );
                        let mut resp =
                            warp::reply::Reply::into_response(origin_hint(origin.as_deref()));
                        *resp.status_mut() = warp::http::StatusCode::FORBIDDEN;
                        return resp;
                    }
                    let max = shared.config.max_message_size;
                    let read = shared.config.socket_read_buffer;
                    ws.accept(read, max, move |socket| connection(shared, socket))
                },
            );
        let shared = self.shared.clone();
        let assets = warp::get()
            .and(warp::path::full())
            .and(warp::header::optional::<String>("accept-encoding"))
            .and(warp::header::optional::<String>("if-none-match"))
            .and_then(
                move |path: warp::path::FullPath, enc: Option<String>, etag: Option<String>| {
                    let shared = shared.clone();
                    async move {
                        shared
                            .assets
                            .respond(path.as_str(), enc.as_deref(), etag.as_deref())
                            .ok_or_else(warp::reject::not_found)
                    }
                },
            );
        let routes = ws.or(assets).unify();
        match &cfg.static_dir {
            Some(dir) => routes
                .or(crate::static_files::dir(dir.clone()))
                .unify()
                .boxed(),
            None => routes.boxed(),
        }
    }

    /// Serves the routes on an already bound listener until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "omni listening");
        }
        no_delay(&listener);
        warp::serve(self.routes()).incoming(listener).run().await
    }

    /// Serves until `shutdown` completes.
    pub async fn serve_with_shutdown(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        no_delay(&listener);
        warp::serve(self.routes())
            .incoming(listener)
            .graceful(shutdown)
            .run()
            .await
    }
}

impl<S: Send + Sync + 'static> WorldCore for Shared<S> {
    fn coll_index(&self, type_id: std::any::TypeId) -> Option<usize> {
        self.engine
            .lock()
            .colls
            .iter()
            .position(|c| c.type_id() == type_id)
    }

    fn insert(&self, idx: usize, model: Box<dyn std::any::Any>) -> Result<u64, StoreError> {
        let mut engine = self.engine.lock();
        let (coll, env) = engine.split(idx);
        coll.server_insert(env, model)
    }

    fn update(
        &self,
        idx: usize,
        oid: u64,
        f: &mut dyn FnMut(&mut dyn std::any::Any, &mut crate::model::AttrSet),
    ) -> Result<bool, StoreError> {
        let mut engine = self.engine.lock();
        let (coll, env) = engine.split(idx);
        coll.server_update(env, oid, f)
    }

    fn remove(
        &self,
        idx: usize,
        oid: u64,
    ) -> Result<Option<Box<dyn std::any::Any + Send>>, StoreError> {
        let mut engine = self.engine.lock();
        let (coll, env) = engine.split(idx);
        coll.server_remove(env, oid)
    }

    fn announce(&self, idx: usize, what: Announce) -> bool {
        let mut guard = self.engine.lock();
        let engine = &mut *guard;
        engine.colls[idx].announce(&mut engine.conns, &mut engine.next_oid, what)
    }

    fn read(&self, idx: usize, f: &mut dyn FnMut(&dyn std::any::Any)) {
        let engine = self.engine.lock();
        f(engine.colls[idx].models_any())
    }

    fn broadcast(&self, msg: Bytes) {
        let engine = self.engine.lock();
        for conn in engine.conns.values().filter(|c| c.ready) {
            conn.outbox.push(msg.clone());
        }
    }

    fn connection_ids(&self) -> Vec<ConnId> {
        let engine = self.engine.lock();
        let mut ids: Vec<ConnId> = engine
            .conns
            .iter()
            .filter(|(_, c)| c.ready)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }
}

/// Turns off Nagle's algorithm on the listener, which accepted sockets inherit (Linux, BSD):
/// realtime frames are small and must leave at once. With it on, a frame written while an
/// earlier one is unacknowledged waits for the peer's delayed ACK (up to 40 ms).
fn no_delay(listener: &tokio::net::TcpListener) {
    if let Err(e) = socket2::SockRef::from(listener).set_tcp_nodelay(true) {
        tracing::warn!(error = %e, "cannot set TCP_NODELAY; small frames may be delayed");
    }
}

/// Whether a WebSocket upgrade from `origin` may proceed (cross-site WebSocket hijacking guard).
/// The body of a 403 for a foreign origin: what to change.
fn origin_hint(origin: Option<&str>) -> String {
    format!(
        "origin not allowed: a browser page from {} may not open this WebSocket. Serve the page \
         from this server, or list its origin in `Config::allowed_origins` \
         (`Omni::config(Config {{ allowed_origins: vec![\"{}\".into()], ..Default::default() }})`)",
        origin.unwrap_or("another origin"),
        origin.unwrap_or("http://localhost:5173"),
    )
}

fn origin_allowed(allowed: &[String], origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else { return true };
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    if !allowed.is_empty() {
        return false;
    }
    // Same origin: the origin's host[:port] equals the Host header.
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin)
        .trim_end_matches('/');
    host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
}

/// A token bucket limiting one connection's message rate.
struct RateLimit {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: tokio::time::Instant,
    warned: bool,
}

enum RateVerdict {
    Ok,
    /// Over the limit: tell the client (once per excursion) and drop the message.
    Over {
        warn: bool,
    },
    /// Far over the limit: disconnect.
    Abuse,
}

impl RateLimit {
    fn new(config: &Config) -> Self {
        let burst = f64::from(config.message_burst.max(1));
        RateLimit {
            tokens: burst,
            rate: f64::from(config.max_messages_per_second.max(1)),
            burst,
            last: tokio::time::Instant::now(),
            warned: false,
        }
    }

    fn take(&mut self, n: usize) -> RateVerdict {
        let now = tokio::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            self.warned = false;
            RateVerdict::Ok
        } else if self.tokens < -self.burst {
            RateVerdict::Abuse
        } else {
            let warn = !self.warned;
            self.warned = true;
            RateVerdict::Over { warn }
        }
    }
}

/// One client connection, from upgrade to close.
async fn connection<S: Default + Send + Sync + 'static>(shared: Arc<Shared<S>>, socket: Socket) {
    let id = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed) + 1);
    let outbox = Arc::new(Outbox::new(shared.config.max_queue_bytes));
    {
        let mut engine = shared.engine.lock();
        let colls = engine.colls.len();
        engine
            .conns
            .insert(id, ConnState::new(S::default(), outbox.clone(), colls));
    }
    let conn = Conn {
        id,
        shared: shared.clone(),
    };
    tracing::debug!(conn = %id, "client connected");
    let (mut tx, mut rx) = socket.split();

    let mut connected = true;
    for hook in &shared.on_connect {
        if let Err(panic) = AssertUnwindSafe(hook(conn.clone())).catch_unwind().await {
            tracing::error!(conn = %id, panic = panic_message(&panic), "connect hook panicked; closing the connection");
            let msg = wire::error(
                None,
                "the server failed to accept this connection (connect hook failed)",
            );
            let _ = tx.send(text(&msg)).await;
            connected = false;
            break;
        }
    }
    if connected {
        let mut engine = shared.engine.lock();
        if let Some(c) = engine.conns.get_mut(&id) {
            c.ready = true;
        }
        outbox.push_control(wire::hello(id.0));
        if let Some(snapshot) = engine.snapshot(id) {
            outbox.push(snapshot);
        }
    }

    if connected {
        pump(&shared, &conn, &outbox, &mut tx, &mut rx).await;
    }

    if let Some(c) = shared.engine.lock().conns.get_mut(&id) {
        c.ready = false;
    }
    for hook in &shared.on_disconnect {
        if let Err(panic) = AssertUnwindSafe(hook(conn.clone())).catch_unwind().await {
            tracing::error!(conn = %id, panic = panic_message(&panic), "disconnect hook panicked");
        }
    }
    shared.engine.lock().conns.remove(&id);
    outbox.close();
    let _ = tx.close().await;
    tracing::debug!(conn = %id, "client disconnected");
}

/// Moves messages both ways until the client goes away, floods, or the server closes it.
async fn pump<S: Default + Send + Sync + 'static>(
    shared: &Arc<Shared<S>>,
    conn: &Conn<S>,
    outbox: &Outbox,
    tx: &mut futures_util::stream::SplitSink<Socket, Message>,
    rx: &mut futures_util::stream::SplitStream<Socket>,
) {
    let id = conn.id;
    let mut pending = Vec::new();
    let mut limit = RateLimit::new(&shared.config);
    let events = Arc::new(InFlight::default());
    loop {
        tokio::select! {
            incoming = rx.next() => match incoming {
                Some(Ok(msg)) => {
                    if msg.is_close() {
                        return;
                    }
                    if !handle_message(shared, conn, outbox, &events, &mut limit, msg).await {
                        tracing::warn!(conn = %id, "client flooded the server; disconnecting it");
                        let _ = tx.send(text(&wire::error(None, "message rate limit exceeded repeatedly; disconnecting"))).await;
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(conn = %id, error = %e, "websocket error");
                    return;
                }
                None => return,
            },
            _ = outbox.notified() => loop {
                match outbox.drain(&mut pending) {
                    Drain::Items => {
                        let frame = frame(&pending);
                        pending.clear();
                        if tx.send(text(&frame)).await.is_err() {
                            return;
                        }
                    }
                    Drain::Resync => {
                        tracing::debug!(conn = %id, "outbound queue overflowed; resyncing the client");
                        shared.engine.lock().resync(id);
                    }
                    Drain::Close => return,
                    Drain::Empty => break,
                }
            },
        }
    }
}

/// A text frame sharing the encoded bytes (they are JSON, so UTF-8; checked, never copied).
fn text(bytes: &Bytes) -> Message {
    match tokio_tungstenite::tungstenite::Utf8Bytes::try_from(bytes.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::text(String::from_utf8_lossy(bytes).into_owned()),
    }
}

/// Parses one frame and handles each message in it, in order. Returns `false` when the client
/// must be disconnected for flooding.
async fn handle_message<S: Default + Send + Sync + 'static>(
    shared: &Arc<Shared<S>>,
    conn: &Conn<S>,
    outbox: &Outbox,
    events: &Arc<InFlight>,
    limit: &mut RateLimit,
    msg: Message,
) -> bool {
    let text = match &msg {
        Message::Text(text) => text.as_str(),
        Message::Binary(_) => {
            outbox.push_control(wire::error(
                None,
                "binary frames are not supported: send JSON text frames",
            ));
            return true;
        }
        // Pings are answered by tungstenite; pongs and raw frames carry nothing for us.
        _ => return true,
    };
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            outbox.push_control(wire::error(None, &format!("malformed JSON: {e}")));
            return true;
        }
    };
    let count = match &value {
        serde_json::Value::Array(items) => items.len().max(1),
        _ => 1,
    };
    match limit.take(count) {
        RateVerdict::Ok => {}
        RateVerdict::Over { warn } => {
            // Every dropped request is answered, so no client promise waits forever.
            let reason = format!(
                "message rate limit exceeded ({} per second, burst {}): message dropped, nothing changed",
                shared.config.max_messages_per_second, shared.config.message_burst
            );
            let ids: Vec<u64> = match &value {
                serde_json::Value::Array(items) => {
                    items.iter().filter_map(|m| m.get("id")?.as_u64()).collect()
                }
                other => other
                    .get("id")
                    .and_then(|v| v.as_u64())
                    .into_iter()
                    .collect(),
            };
            if ids.is_empty() && warn {
                outbox.push_control(wire::error(None, &reason));
            }
            for id in ids {
                outbox.push_control(wire::error(Some(id), &reason));
            }
            return true;
        }
        RateVerdict::Abuse => return false,
    }
    let items = match value {
        serde_json::Value::Array(items) => items,
        other => vec![other],
    };
    for item in items {
        // A write waits for this client's earlier events (as Meteor's methods): an event that
        // sets up the session (`login`) comes into force before the writes sent after it.
        let is_event = item.get("t").and_then(|t| t.as_str()) == Some("event");
        if !is_event {
            events.idle().await;
        }
        handle_request(shared, conn, outbox, events, item);
    }
    true
}

/// The event handlers of one connection still running.
#[derive(Default)]
struct InFlight {
    running: std::sync::atomic::AtomicUsize,
    done: tokio::sync::Notify,
}

impl InFlight {
    fn start(self: &Arc<Self>) -> InFlightGuard {
        self.running.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    /// Waits until no event handler of the connection runs.
    async fn idle(&self) {
        loop {
            let done = self.done.notified();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            done.await;
        }
    }
}

/// Marks an event handler finished when dropped (also when it panicked).
struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.done.notify_waiters();
    }
}

fn field<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<&'a serde_json::Value, String> {
    obj.get(key).ok_or_else(|| format!("missing field `{key}`"))
}

fn str_field<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<&'a str, String> {
    field(obj, key)?
        .as_str()
        .ok_or_else(|| format!("field `{key}` must be a string"))
}

fn u64_field(obj: &serde_json::Map<String, serde_json::Value>, key: &str) -> Result<u64, String> {
    field(obj, key)?
        .as_u64()
        .ok_or_else(|| format!("field `{key}` must be a non-negative integer"))
}

fn obj_field<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<&'a serde_json::Map<String, serde_json::Value>, String> {
    field(obj, key)?
        .as_object()
        .ok_or_else(|| format!("field `{key}` must be an object"))
}

/// Handles one message object; any problem is answered with an `error` naming it.
fn handle_request<S: Default + Send + Sync + 'static>(
    shared: &Arc<Shared<S>>,
    conn: &Conn<S>,
    outbox: &Outbox,
    events: &Arc<InFlight>,
    value: serde_json::Value,
) {
    let serde_json::Value::Object(obj) = value else {
        outbox.push_control(wire::error(
            None,
            "each message must be a JSON object with a `t` field",
        ));
        return;
    };
    let req = obj.get("id").and_then(|v| v.as_u64());
    if let Err(reason) = dispatch(shared, conn, events, &obj, req) {
        outbox.push_control(wire::error(req, &reason));
    }
}

fn dispatch<S: Default + Send + Sync + 'static>(
    shared: &Arc<Shared<S>>,
    conn: &Conn<S>,
    events: &Arc<InFlight>,
    obj: &serde_json::Map<String, serde_json::Value>,
    req: Option<u64>,
) -> Result<(), String> {
    let kind = str_field(obj, "t")?;
    let req = req.ok_or("missing field `id` (a non-negative integer the answer will carry)")?;
    match kind {
        "change" | "add" | "remove" | "read" | "sub" | "unsub" => {
            let coll = str_field(obj, "c")?;
            let request = match kind {
                "change" => Request::Change {
                    oid: u64_field(obj, "oid")?,
                    set: obj_field(obj, "set")?,
                },
                "add" => Request::Add {
                    tmp: str_field(obj, "tmp")?,
                    attrs: obj_field(obj, "m")?,
                },
                "remove" => Request::Remove {
                    oid: u64_field(obj, "oid")?,
                },
                "read" => Request::Read {
                    oid: u64_field(obj, "oid")?,
                },
                _ => Request::Subscribe {
                    channel: str_field(obj, "ch")?,
                    on: kind == "sub",
                },
            };
            let mut engine = shared.engine.lock();
            let idx = engine
                .coll_index(coll)
                .ok_or_else(|| format!("unknown collection `{coll}`"))?;
            let (coll, env) = engine.split(idx);
            coll.client_request(env, conn.id, req, request);
            Ok(())
        }
        "event" => {
            let name = str_field(obj, "name")?;
            let handler = shared
                .events
                .get(name)
                .ok_or_else(|| format!("unknown event `{name}`"))?
                .clone();
            let args = obj.get("args").cloned().unwrap_or(serde_json::Value::Null);
            let conn = conn.clone();
            let world = conn.world();
            let event_name = name.to_owned();
            let running = events.start();
            tokio::spawn(async move {
                let _running = running;
                let shared = conn.shared.clone();
                let result = AssertUnwindSafe(handler(conn.clone(), world, args))
                    .catch_unwind()
                    .await;
                let msg = match result {
                    Ok(Ok(json)) => wire::reply_ok(req, &json),
                    Ok(Err(e)) => wire::reply_err(req, &e),
                    Err(panic) => {
                        tracing::error!(event = %event_name, conn = %conn.id, panic = panic_message(&panic), "event handler panicked");
                        wire::reply_err(req, &format!("event `{event_name}` failed on the server"))
                    }
                };
                if let Some(c) = shared.engine.lock().conns.get(&conn.id) {
                    c.outbox.push_control(msg);
                }
            });
            Ok(())
        }
        other => Err(format!(
            "unknown message type `{other}` (expected change, add, remove, read, sub, unsub or event)"
        )),
    }
}
