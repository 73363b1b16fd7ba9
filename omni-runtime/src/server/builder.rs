//! The [`Omni`] builder: collections, events, hooks, storage, options.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use omni_client_gen::schema::{CollectionSchema, EventSchema, Schema};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::assets;
use crate::collection::{CollectionPermissions, Seeded};
use crate::conn::Conn;
use crate::engine::observe::Observed;
use crate::engine::{Codec, Engine, State, Store};
use crate::error::EventError;
use crate::model::{Model, Permissions};
use crate::rules::Rules;
use crate::storage::{Backend, Middleware, Storage, StoreError};
use crate::world::World;

use super::{AuthError, AuthFn, Config, EventFn, Handshake, HookFn, Server, Shared};

/// Builds an Omni server: collections, events, hooks, options. `S` is the per-connection
/// session type.
pub struct Omni<S> {
    state: State<S>,
    storage: Storage,
    events: HashMap<String, EventFn<S>>,
    authenticate: Option<AuthFn<S>>,
    on_connect: Vec<HookFn<S>>,
    on_disconnect: Vec<HookFn<S>>,
    config: Config,
    schema: Schema,
    #[cfg(feature = "cluster")]
    cluster: Option<crate::cluster::Cluster>,
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
            state: State::new(),
            storage: Storage::default(),
            events: HashMap::new(),
            authenticate: None,
            on_connect: Vec::new(),
            on_disconnect: Vec::new(),
            config: Config::default(),
            schema: Schema::new(),
            #[cfg(feature = "cluster")]
            cluster: None,
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
            self.state.coll_index(C::NAME).is_none(),
            "collection `{}` is registered twice; give one of them another name with #[collection(name = \"...\")]",
            C::NAME
        );
        let seeded = collection.into();
        self.state
            .add_collection(|idx| Box::new(Store::<C, S>::new(seeded, idx)));
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
            .state
            .coll_any_mut(std::any::TypeId::of::<C>())
            .and_then(|c| c.downcast_mut::<Store<C, S>>());
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
    /// write to them is durable before anyone (its writer included) sees it.
    pub fn storage(mut self, backend: impl Backend) -> Self {
        self.storage.set_backend(Arc::new(backend));
        self
    }

    /// Adds a middleware to the storage stack (Backbone.IO's `backend.use`). Middleware run in
    /// the order they were added, on every create, update and delete of every collection and on
    /// a client's one-shot read; see [`storage`](crate::storage).
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.storage.push(Arc::new(middleware));
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

    /// Makes collection `C` *queried*: a client holds none of its models until it runs a live
    /// query (`Omni.collections.lines.query({ where: { room: "lobby" }, order: [["oid", "desc"]],
    /// limit: 50 })`), and then only the models its queries show, as far as `can_read` allows.
    /// For a collection too large to send whole (a chat's lines, a game's history). Without it,
    /// queries on a collection are views of what the client holds anyway.
    ///
    /// # Panics
    /// If `C` was not registered with [`Omni::collection`] before.
    pub fn queried<C>(mut self) -> Self
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S>,
    {
        self.store_mut::<C>("queried").live.queried_only = true;
        self
    }

    /// Migrates the stored records of collection `C` when the server loads them: `f(oid, doc)`
    /// rewrites one record's JSON (as [`RedbStore`](crate::storage::RedbStore) stored it) before
    /// it is decoded into today's model, for changes serde's own attributes do not cover (a
    /// field whose type changed, a value that moved). It runs on every record at every start, so
    /// it must accept records already in the new shape; several run in the order registered.
    /// A field that was added takes `#[serde(default)]`, a renamed one
    /// `#[serde(alias = "old_name")]`, and a removed one needs nothing (unknown fields are
    /// ignored). The record is stored in the new shape the next time the model is written.
    ///
    /// # Panics
    /// If `C` was not registered with [`Omni::collection`] before.
    pub fn migrate<C, F>(mut self, f: F) -> Self
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S>,
        F: Fn(u64, &mut serde_json::Value) -> Result<(), String> + Send + Sync + 'static,
    {
        self.store_mut::<C>("migrate").migrations.push(Arc::new(f));
        self
    }

    /// Lets the server start when a stored record of `C` cannot be decoded even after the
    /// migrations: each such record is logged (`warn`: collection, model, OID, reason) and
    /// skipped; it stays in the store untouched and its OID is never reused. Without this call
    /// the server refuses to start, naming the record.
    ///
    /// # Panics
    /// If `C` was not registered with [`Omni::collection`] before.
    pub fn skip_undecodable<C>(mut self) -> Self
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S>,
    {
        self.store_mut::<C>("skip_undecodable").skip_undecodable = true;
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

    /// Observes the commits of collection `C` (Omni.js's server-side model listeners):
    /// `observer(world, event)` runs for every create, update and delete, from clients or
    /// server code, after it is applied, in sequence order (one at a time, each awaited),
    /// outside the engine's lock. It may write: its writes are new commits that reach every
    /// client allowed to see them, the original writer included.
    ///
    /// # Panics
    /// If `C` was not registered with [`Omni::collection`] before.
    pub fn observe<C, F, Fut>(mut self, f: F) -> Self
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S>,
        F: Fn(World, Observed<C::Model>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let f = Arc::new(f);
        self.store_mut::<C>("observe")
            .observers
            .push(Arc::new(move |core, event| {
                Box::pin(f(World { core }, event))
            }));
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
                crate::protocol::encode::json(&reply, &mut json);
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

    /// Checks every WebSocket upgrade request before the socket opens: the hook sees its
    /// headers, cookies, query and peer address ([`Handshake`]) and returns the connection's
    /// first session, or an [`AuthError`], answered with HTTP 401 or 403 (and its message as the
    /// body) before any WebSocket frame. Typically it verifies a signed token from a cookie or
    /// the query (`?token=`), so a reload keeps the user logged in. A panic in it refuses the
    /// connection with 500. Runs after the origin check and the per-address limit, before the
    /// connect hooks. Without it every connection starts with `S::default()`.
    pub fn authenticate<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Handshake) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, AuthError>> + Send + 'static,
    {
        self.authenticate = Some(Arc::new(move |handshake| Box::pin(hook(handshake))));
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

    /// Serves the server's Prometheus metrics at `path` (for example `"/metrics"`) on the same
    /// listener: connections, messages in and out, deliveries, snapshots and resyncs, rate-limit
    /// refusals and disconnects by reason, event and commit latency, the durable store's group
    /// commits, models per collection (README, "In production"). Anyone who can reach the port
    /// can read them: serve them only where that is fine, or use
    /// [`Server::metrics`](crate::Server::metrics) behind your own route.
    pub fn metrics(mut self, path: &str) -> Self {
        let path = path.trim_start_matches('/');
        self.config.metrics_path = Some(format!("/{path}"));
        self
    }

    /// Replaces the whole configuration; a metrics path set before with [`Omni::metrics`] stays
    /// unless `config.metrics_path` names one itself.
    pub fn config(mut self, config: Config) -> Self {
        let metrics_path = config
            .metrics_path
            .clone()
            .or(self.config.metrics_path.take());
        self.config = config;
        self.config.metrics_path = metrics_path;
        self
    }

    /// The schema the client is generated from.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Makes this server a node of a cluster (feature `cluster`): its collections live in the
    /// cluster's NATS JetStream bucket, every node applies every write in the same order, and
    /// [`World::broadcast`](crate::World::broadcast) reaches the clients of every node. Every
    /// collection must be persisted ([`Omni::persist`]); the storage backend is the bucket (no
    /// [`Omni::storage`]), middleware still run on the node that takes the write. See
    /// [`cluster`](crate::cluster). The server must be built inside a Tokio runtime.
    #[cfg(feature = "cluster")]
    pub fn cluster(mut self, cluster: crate::cluster::Cluster) -> Self {
        self.cluster = Some(cluster);
        self
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
        #[cfg(feature = "cluster")]
        let (replica, follower) = match self.cluster.take() {
            Some(cluster) => {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(StoreError::failed(
                        "a cluster node is built inside a Tokio runtime (it follows the bucket in tasks of its own)",
                    ));
                }
                if self.storage.backend().name() != "memory" {
                    return Err(StoreError::failed(format!(
                        "a cluster node keeps its collections in the cluster's bucket: `.storage({})` cannot be combined with `.cluster(..)`",
                        self.storage.backend().name()
                    )));
                }
                let parts = crate::cluster::start(cluster);
                self.storage.set_backend(parts.store.clone());
                self.state
                    .load_cluster(&*parts.store, parts.blocks, parts.epoch, parts.seq)?;
                (Some(parts.replica), Some(parts.follower))
            }
            None => {
                self.state.load(self.storage.backend())?;
                (None, None)
            }
        };
        #[cfg(not(feature = "cluster"))]
        let replica = {
            self.state.load(self.storage.backend())?;
            None
        };
        self.state.keep_history(self.config.resume_history);
        self.state.query_limits = crate::engine::queries::QueryLimits {
            max_limit: self.config.max_query_limit,
            max_queries: self.config.max_queries,
        };
        let published = self.state.published();
        let assets = assets::Assets::build(&self.schema, self.config.development);
        let engine_waits = self.storage.custom();
        let engine = Engine::new(self.state, self.storage, Arc::default(), replica);
        #[cfg(feature = "cluster")]
        if let Some(follower) = follower {
            follower.run(&engine);
        }
        Ok(Server {
            shared: Arc::new(Shared {
                engine,
                engine_waits,
                events: self.events,
                authenticate: self.authenticate,
                on_connect: self.on_connect,
                on_disconnect: self.on_disconnect,
                config: self.config,
                schema: self.schema,
                assets,
                next_conn: AtomicU64::new(0),
                per_ip: Arc::default(),
                resumable: Default::default(),
                published,
                started: std::time::Instant::now(),
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
