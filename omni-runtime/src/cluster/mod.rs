//! Several nodes, one state: the commit log kept in a [NATS JetStream](https://docs.nats.io/nats-concepts/jetstream)
//! key-value bucket (feature `cluster`).
//!
//! ```no_run
//! # use omni_runtime::prelude::*;
//! use omni_runtime::cluster::Nats;
//! # #[derive(Default)] struct Session;
//! # #[derive(Model, Clone, Default, Serialize, Deserialize)] struct Player { name: String }
//! # impl Permissions<Session> for Player {}
//! # #[collection(model = Player)] struct Players;
//! # impl CollectionPermissions<Session> for Players {}
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = Nats::connect("nats://127.0.0.1:4222").bucket("game").open().await?;
//! Omni::<Session>::new()
//!     .collection(Players::empty())
//!     .persist::<Players>() // every collection of a node lives in the bucket
//!     .cluster(cluster)
//!     .listen(([127, 0, 0, 1], 3000))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! How it works:
//!
//! - The bucket holds every model (`collection.oid` -> the model's stored JSON, server-only
//!   fields included). Its stream is the commit log: the stream's sequence is the commit
//!   sequence every node agrees on, and the stream's identity the epoch.
//! - A write is validated on the node its client is connected to, passes the storage
//!   middleware there, and is appended with a compare-and-set on the model's revision. If
//!   another node wrote the model first, the write is validated again on the newer model (a
//!   client's write re-checks its permissions; a server update keeps the fields it changed).
//! - Every node follows the bucket and applies its entries in stream order, fanning each out
//!   to its own connections. The writer is answered once its own node applied the commit.
//! - A node that starts reads the bucket's current state, then follows it. OIDs come from
//!   blocks each node claims in the bucket, so they are unique across nodes and never reused.
//! - Cluster-wide: models, OIDs, the commit sequence, [`World::broadcast`](crate::World::broadcast).
//!   Node-local: connections ([`Server::connections`](crate::Server::connections),
//!   [`Conn::emit`](crate::Conn::emit), connection ids), resumable sessions, observers (they
//!   run on the node that made the write), metrics.

mod follow;
mod store;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv;
use futures_util::StreamExt;

pub(crate) use follow::start;
use store::{Blocks, Snapshot};

/// Where a cluster's commit log lives: a NATS server (with JetStream enabled) and a bucket.
#[derive(Debug, Clone)]
pub struct Nats {
    url: String,
    bucket: String,
    replicas: usize,
    timeout: Duration,
}

impl Nats {
    /// A NATS server, or several comma-separated (`nats://a:4222,nats://b:4222`). The bucket
    /// is named `omni` unless [`Nats::bucket`] says otherwise.
    pub fn connect(url: impl Into<String>) -> Self {
        Nats {
            url: url.into(),
            bucket: "omni".to_owned(),
            replicas: 1,
            timeout: Duration::from_secs(5),
        }
    }

    /// The key-value bucket that holds this app's state; created if it does not exist. Apps
    /// sharing one NATS server use buckets of their own.
    pub fn bucket(mut self, name: impl Into<String>) -> Self {
        self.bucket = name.into();
        self
    }

    /// How many copies a clustered NATS keeps of the bucket (when it creates it): 1 by default;
    /// 3 to survive the loss of a NATS server.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// How long a write waits for NATS to acknowledge it before it is refused (5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects, opens (or creates) the bucket and reads its current state. The result goes
    /// to [`Omni::cluster`](crate::Omni::cluster).
    pub async fn open(self) -> Result<Cluster, ClusterError> {
        let err = |what: &str, e: &dyn fmt::Display| ClusterError(format!("{what}: {e}"));
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(self.timeout)
            .connect(self.url.as_str())
            .await
            .map_err(|e| err(&format!("cannot connect to NATS at {}", self.url), &e))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(self.timeout);
        let config = kv::Config {
            bucket: self.bucket.clone(),
            description: "Omni: the models of every collection, and the commit log".to_owned(),
            history: 1,
            num_replicas: self.replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let bucket = match js.get_key_value(self.bucket.as_str()).await {
            Ok(bucket) => bucket,
            Err(_) => match js.create_key_value(config).await {
                Ok(bucket) => bucket,
                // Another node created it meanwhile.
                Err(create) => js.get_key_value(self.bucket.as_str()).await.map_err(|_| {
                    err(
                        &format!(
                            "cannot create the key-value bucket `{}` (is JetStream enabled: nats-server -js?)",
                            self.bucket
                        ),
                        &create,
                    )
                })?,
            },
        };
        let mut stream = js
            .get_stream(format!("KV_{}", self.bucket))
            .await
            .map_err(|e| err("cannot read the bucket's stream", &e))?;
        let info = stream
            .info()
            .await
            .map_err(|e| err("cannot read the bucket's stream", &e))?;
        let last = info.state.last_sequence;
        let epoch = epoch_of(&self.bucket, &format!("{:?}", info.created));
        // The current state: the last value of every key, in stream order, then live entries.
        let mut watch = bucket
            .watch_all_from_revision(1)
            .await
            .map_err(|e| err("cannot follow the bucket", &e))?;
        let mut snapshot = Snapshot::default();
        while snapshot.last < last {
            let entry = tokio::time::timeout(self.timeout * 6, watch.next())
                .await
                .map_err(|_| {
                    ClusterError(format!("reading the bucket `{}` timed out", self.bucket))
                })?;
            match entry {
                Some(Ok(entry)) => snapshot.add(entry),
                Some(Err(e)) => return Err(err("cannot read the bucket", &e)),
                None => return Err(ClusterError("the bucket's watch ended".to_owned())),
            }
        }
        let node = store::random_node_id();
        let blocks = Blocks::claim(bucket.clone(), 2)
            .await
            .map_err(|e| err("cannot claim OIDs in the bucket", &e))?;
        tracing::info!(
            bucket = %self.bucket,
            node,
            models = snapshot.len(),
            revision = snapshot.last,
            "joined the cluster"
        );
        Ok(Cluster {
            inner: Arc::new(Inner {
                client,
                bucket,
                name: self.bucket,
                node,
                epoch,
            }),
            snapshot,
            watch,
            blocks,
        })
    }
}

/// A NATS connection with its bucket open and its state read: what turns a server into a node
/// ([`Omni::cluster`](crate::Omni::cluster)).
pub struct Cluster {
    inner: Arc<Inner>,
    snapshot: Snapshot,
    watch: kv::Watch,
    blocks: Arc<Blocks>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("bucket", &self.inner.name)
            .field("node", &self.inner.node)
            .field("revision", &self.snapshot.last)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// This node's id in the cluster (in its log entries and logs).
    pub fn node(&self) -> u64 {
        self.inner.node
    }
}

/// What the cluster's parts share.
struct Inner {
    client: async_nats::Client,
    bucket: kv::Store,
    name: String,
    node: u64,
    epoch: u64,
}

impl Inner {
    /// The subject events from `World::broadcast` travel on.
    fn events_subject(&self) -> String {
        format!("omni.{}.events", self.name)
    }
}

/// A failure to join a cluster.
#[derive(Debug, Clone)]
pub struct ClusterError(String);

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClusterError {}

/// The epoch of a bucket's log: the same on every node (FNV-1a of the bucket's name and its
/// stream's creation time), below 2^53 for JavaScript.
fn epoch_of(bucket: &str, created: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bucket.bytes().chain([0]).chain(created.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h & ((1 << 53) - 1)).max(1)
}

/// Whether a key is the cluster's own bookkeeping (not a model).
fn is_meta(key: &str) -> bool {
    key.starts_with("_omni.")
}

/// Splits a model key into collection and OID.
fn parse_key(key: &str) -> Option<(&str, u64)> {
    let (coll, oid) = key.rsplit_once('.')?;
    Some((coll, oid.parse().ok()?))
}
