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

mod auth;
mod builder;
mod config;
mod connection;
mod limits;
mod pump;
mod resume;
mod sender;

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use futures_util::FutureExt;
use omni_client_gen::schema::Schema;
use warp::Filter;
use warp::filters::BoxedFilter;

use crate::assets;
use crate::conn::Conn;
use crate::engine::Engine;
use crate::ids::ConnId;
use crate::upgrade::Upgrade;

use crate::world::World;
use limits::{origin_allowed, origin_hint};

pub use auth::{AuthError, Handshake};
pub use builder::Omni;
pub use config::Config;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type EventFn<S> = Arc<
    dyn Fn(Conn<S>, World, serde_json::Value) -> BoxFuture<Result<Vec<u8>, String>> + Send + Sync,
>;
type HookFn<S> = Arc<dyn Fn(Conn<S>) -> BoxFuture<()> + Send + Sync>;
type AuthFn<S> = Arc<dyn Fn(Handshake) -> BoxFuture<Result<S, AuthError>> + Send + Sync>;

/// What the server's routes and connections share.
pub(crate) struct Shared<S> {
    pub(crate) engine: Engine<S>,
    /// Whether writes may wait for the storage (a custom backend or middleware).
    engine_waits: bool,
    events: HashMap<String, EventFn<S>>,
    authenticate: Option<AuthFn<S>>,
    on_connect: Vec<HookFn<S>>,
    on_disconnect: Vec<HookFn<S>>,
    pub(crate) config: Config,
    schema: Schema,
    assets: assets::Assets,
    next_conn: AtomicU64,
    per_ip: Arc<limits::PerIp>,
    /// Connections that may be resumed, by token.
    resumable: resume::Resumable,
    /// The log's last applied sequence number (frames carry it).
    published: Arc<AtomicU64>,
    /// When the server was built: the clock `Config::coalesce` windows are counted on.
    pub(crate) started: std::time::Instant,
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
            core: self.shared.engine.erased(),
        }
    }

    /// The connected clients of this server.
    pub fn connections(&self) -> Vec<Conn<S>> {
        let ids: Vec<ConnId> = self.world().connections();
        ids.into_iter()
            .map(|id| Conn {
                id,
                engine: self.shared.engine.clone(),
            })
            .collect()
    }

    /// The schema the client is generated from.
    pub fn schema(&self) -> &Schema {
        &self.shared.schema
    }

    /// The server's metrics as OpenMetrics text (what [`Omni::metrics`](crate::Omni::metrics)
    /// serves), to serve on a route of your own.
    pub fn metrics(&self) -> String {
        self.shared.engine.metrics().encode()
    }

    /// The server's routes as a warp filter, to mount Omni inside a bigger warp app:
    /// the WebSocket endpoint, `/omni.js` and the other client files, and the static directory.
    pub fn routes(&self) -> BoxedFilter<(warp::reply::Response,)> {
        let shared = self.shared.clone();
        let cfg = &self.shared.config;
        let query = warp::query::raw()
            .map(Some)
            .or(warp::any().map(|| None))
            .unify();
        let ws = warp::path(cfg.ws_path.clone())
            .and(warp::path::end())
            .and(crate::upgrade::upgrade())
            .and(warp::header::headers_cloned())
            .and(query)
            .and(warp::addr::remote())
            .and_then(
                move |ws: Upgrade,
                      headers: warp::http::HeaderMap,
                      query: Option<String>,
                      peer: Option<std::net::SocketAddr>| {
                    let shared = shared.clone();
                    async move {
                        Ok::<_, warp::Rejection>(upgrade(shared, ws, headers, query, peer).await)
                    }
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
        let shared = self.shared.clone();
        let metrics_path = cfg.metrics_path.clone();
        let metrics =
            warp::get()
                .and(warp::path::full())
                .and_then(move |path: warp::path::FullPath| {
                    let shared = shared.clone();
                    let found = metrics_path.as_deref() == Some(path.as_str());
                    async move {
                        if !found {
                            return Err(warp::reject::not_found());
                        }
                        let mut resp =
                            warp::reply::Reply::into_response(shared.engine.metrics().encode());
                        resp.headers_mut().insert(
                            warp::http::header::CONTENT_TYPE,
                            warp::http::HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        );
                        Ok::<_, warp::Rejection>(resp)
                    }
                });
        let routes = ws.or(metrics).unify().or(assets).unify();
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

/// Answers a WebSocket upgrade: the origin check, the per-address limit and the app's
/// `authenticate` hook, in that order, each refusing with an HTTP status before the socket opens;
/// then `101` and the connection.
async fn upgrade<S: Default + Send + Sync + 'static>(
    shared: Arc<Shared<S>>,
    ws: Upgrade,
    headers: warp::http::HeaderMap,
    query: Option<String>,
    peer: Option<std::net::SocketAddr>,
) -> warp::reply::Response {
    let refuse = |status: warp::http::StatusCode, body: String| {
        let mut resp = warp::reply::Reply::into_response(body);
        *resp.status_mut() = status;
        resp
    };
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let origin = header("origin");
    if !origin_allowed(&shared.config.allowed_origins, origin, header("host")) {
        tracing::warn!(
            origin = origin.unwrap_or_default(),
            "refused a WebSocket from a foreign origin"
        );
        let body = warp::reply::Reply::into_response(origin_hint(origin));
        let mut resp = body;
        *resp.status_mut() = warp::http::StatusCode::FORBIDDEN;
        return resp;
    }
    let slot = match peer {
        Some(peer) => {
            let limit = shared.config.max_connections_per_ip;
            match shared.per_ip.take(peer.ip(), limit) {
                Some(slot) => Some(slot),
                None => {
                    tracing::warn!(%peer, limit, "refused a WebSocket: too many connections from one address");
                    return refuse(
                        warp::http::StatusCode::TOO_MANY_REQUESTS,
                        format!(
                            "too many connections from {}: at most {limit} (Config::max_connections_per_ip)",
                            peer.ip()
                        ),
                    );
                }
            }
        }
        None => None,
    };
    let handshake = Handshake::new(headers, query, peer);
    let max = shared.config.max_message_size;
    let read = shared.config.socket_read_buffer;
    if !shared.config.resume_grace.is_zero()
        && let Some(token) = handshake.query_param("resume")
    {
        let number = |name| {
            handshake
                .query_param(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let at = (number("epoch"), number("seq"), number("v"));
        // A socket the server has not yet seen drop is told to let go; then it is parked.
        let mut claimed = shared.resumable.claim(&token);
        for _ in 0..100 {
            if !matches!(claimed, Err(resume::Unclaimed::Attached)) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            claimed = shared.resumable.claim(&token);
        }
        if let Ok(claim) = claimed {
            let unstarted = connection::Unstarted::new(
                shared.clone(),
                claim.id,
                claim.outbox.clone(),
                token.clone(),
            );
            // The token is the credential of the session it resumes: no authenticate, no
            // connect hooks.
            return ws.accept(read, max, move |socket| async move {
                let _slot = slot;
                unstarted.started();
                connection::resumed(shared, socket, claim, token, at).await
            });
        }
        let kind = crate::metrics::Kind { kind: "unknown" };
        shared.engine.metrics().resumes.get_or_create(&kind).inc();
        // Expired, never issued, or still attached: a new connection, as if it had not asked.
    }
    let session = match &shared.authenticate {
        None => S::default(),
        Some(authenticate) => {
            let handshake = handshake.clone();
            let verdict = AssertUnwindSafe(authenticate(handshake))
                .catch_unwind()
                .await;
            match verdict {
                Ok(Ok(session)) => session,
                Ok(Err(refusal)) => {
                    tracing::debug!(?peer, %refusal, "authenticate refused a WebSocket");
                    shared
                        .engine
                        .metrics()
                        .disconnects
                        .get_or_create(&crate::metrics::Reason {
                            reason: "unauthenticated",
                        })
                        .inc();
                    return refuse(refusal.status(), refusal.message().to_owned());
                }
                Err(panic) => {
                    tracing::error!(
                        panic = crate::hooks::panic_message(&panic),
                        "authenticate hook panicked; refusing the connection"
                    );
                    return refuse(
                        warp::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "the server could not check this connection (authenticate hook failed)"
                            .to_owned(),
                    );
                }
            }
        }
    };
    ws.accept(read, max, move |socket| async move {
        let _slot = slot; // counted until the connection ends
        connection::connection(shared, socket, session).await
    })
}

/// Turns off Nagle's algorithm on the listener, which accepted sockets inherit (Linux, BSD):
/// realtime frames are small and must leave at once. With it on, a frame written while an
/// earlier one is unacknowledged waits for the peer's delayed ACK (up to 40 ms).
fn no_delay(listener: &tokio::net::TcpListener) {
    if let Err(e) = socket2::SockRef::from(listener).set_tcp_nodelay(true) {
        tracing::warn!(error = %e, "cannot set TCP_NODELAY; small frames may be delayed");
    }
}
