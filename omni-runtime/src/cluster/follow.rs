//! A node at work: the follower that applies the bucket's entries in order, the link the engine
//! publishes through, the seeding of a new bucket, and events between nodes.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::engine::replica::{Entry, Envelope, Link, LinkError, Replica, envelope, key};
use crate::engine::state::OidBlocks;
use crate::engine::{Engine, WeakEngine};
use crate::storage::BoxFuture;

use super::store::ClusterStore;
use super::{Cluster, Inner, is_meta, parse_key};

/// What the server's builder takes from a [`Cluster`].
pub(crate) struct Parts {
    pub(crate) store: Arc<ClusterStore>,
    pub(crate) blocks: Arc<dyn OidBlocks>,
    pub(crate) epoch: u64,
    /// The last revision of the snapshot the collections are loaded from.
    pub(crate) seq: u64,
    pub(crate) replica: Replica,
    pub(crate) follower: Follower,
}

/// The tasks of a node, ready to start once its engine exists.
pub(crate) struct Follower {
    inner: Arc<Inner>,
    watch: kv::Watch,
    store: Arc<ClusterStore>,
    from: u64,
    events: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
}

/// Takes a cluster apart for the builder.
pub(crate) fn start(cluster: Cluster) -> Parts {
    let Cluster {
        inner,
        snapshot,
        watch,
        blocks,
    } = cluster;
    let seq = snapshot.last;
    let store = Arc::new(ClusterStore::new(snapshot));
    let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
    let link = NatsLink {
        inner: inner.clone(),
        events: events_tx,
    };
    Parts {
        store: store.clone(),
        blocks,
        epoch: inner.epoch,
        seq,
        replica: Replica::new(Arc::new(link), seq),
        follower: Follower {
            inner,
            watch,
            store,
            from: seq,
            events,
        },
    }
}

impl Follower {
    /// Starts following the bucket, seeds it if it is new, and relays events. The tasks end
    /// when the server is dropped.
    pub(crate) fn run<S: Send + Sync + 'static>(self, engine: &Engine<S>) {
        let Follower {
            inner,
            watch,
            store,
            from,
            events,
        } = self;
        engine.adopt_revisions(store.revisions());
        store.clear();
        let seeds = std::mem::take(&mut *store.seeds.lock());
        tokio::spawn(follow(inner.clone(), watch, engine.downgrade(), from));
        tokio::spawn(seed(inner.clone(), seeds));
        tokio::spawn(send_events(inner.clone(), events));
        tokio::spawn(receive_events(inner, engine.downgrade()));
    }
}

/// Applies the bucket's entries in stream order; follows again from the last one applied if
/// the watch fails (NATS restarted, the connection dropped).
async fn follow<S: Send + Sync + 'static>(
    inner: Arc<Inner>,
    mut watch: kv::Watch,
    engine: WeakEngine<S>,
    mut last: u64,
) {
    let mut delay = Duration::from_millis(50);
    loop {
        match watch.next().await {
            Some(Ok(entry)) => {
                tracing::trace!(node = inner.node, revision = entry.revision, last, key = %entry.key, "entry");
                delay = Duration::from_millis(50);
                if entry.revision <= last {
                    continue;
                }
                last = entry.revision;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                apply(&engine, &entry).await;
            }
            end => {
                if engine.upgrade().is_none() {
                    return;
                }
                match end {
                    Some(Err(error)) => {
                        tracing::warn!(%error, last, "following the bucket failed; following again")
                    }
                    _ => tracing::warn!(last, "the bucket's watch ended; following again"),
                }
                loop {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    match inner.bucket.watch_all_from_revision(last + 1).await {
                        Ok(w) => {
                            watch = w;
                            break;
                        }
                        Err(error) => tracing::warn!(%error, "cannot follow the bucket yet"),
                    }
                }
            }
        }
    }
}

/// Applies one entry.
async fn apply<S: Send + Sync + 'static>(engine: &Engine<S>, entry: &kv::Entry) {
    if is_meta(&entry.key) || entry.operation != kv::Operation::Put {
        return;
    }
    let Some((coll, oid)) = parse_key(&entry.key) else {
        tracing::warn!(key = %entry.key, "an entry of the bucket that is not a model; skipped");
        return;
    };
    match serde_json::from_slice::<Envelope<'_>>(&entry.value) {
        Ok(env) => {
            engine
                .follow_entry(Entry {
                    seq: entry.revision,
                    coll,
                    oid,
                    node: env.node,
                    token: env.token,
                    doc: env.model.map(|m| m.get().as_bytes()),
                })
                .await
        }
        Err(error) => {
            tracing::error!(key = %entry.key, %error, "an entry of the bucket is not Omni's; skipped");
        }
    }
}

/// Writes the seeds of collections the bucket never had; a node started at the same time
/// writes the same keys (seed OIDs are the same on every node), and the first one wins.
async fn seed(inner: Arc<Inner>, seeds: Vec<(String, (u64, Vec<u8>))>) {
    let mut colls: Vec<String> = Vec::new();
    for (coll, (oid, doc)) in seeds {
        if !colls.contains(&coll) {
            colls.push(coll.clone());
        }
        if oid == 0 {
            continue;
        }
        let value = envelope(inner.node, 0, Some(&doc));
        if let Err(e) = inner.bucket.update(key(&coll, oid), value, 0).await
            && e.kind() != kv::UpdateErrorKind::WrongLastRevision
        {
            tracing::error!(collection = %coll, oid, error = %e, "cannot write a seed to the bucket");
        }
    }
    for coll in colls {
        let marker = format!("_omni.seeded.{coll}");
        if let Err(e) = inner
            .bucket
            .update(marker, Bytes::from_static(b"1"), 0)
            .await
            && e.kind() != kv::UpdateErrorKind::WrongLastRevision
        {
            tracing::error!(collection = %coll, error = %e, "cannot mark a collection as seeded");
        }
    }
}

/// Publishes this node's broadcasts, in order: the node id (8 bytes), then the message.
async fn send_events(inner: Arc<Inner>, mut events: tokio::sync::mpsc::UnboundedReceiver<Bytes>) {
    let subject = inner.events_subject();
    while let Some(msg) = events.recv().await {
        let mut payload = Vec::with_capacity(8 + msg.len());
        payload.extend_from_slice(&inner.node.to_le_bytes());
        payload.extend_from_slice(&msg);
        if let Err(error) = inner.client.publish(subject.clone(), payload.into()).await {
            tracing::warn!(%error, "a broadcast did not reach the other nodes");
        }
    }
}

/// Delivers the other nodes' broadcasts to this node's connections.
async fn receive_events<S: Send + Sync + 'static>(inner: Arc<Inner>, engine: WeakEngine<S>) {
    let mut sub = match inner.client.subscribe(inner.events_subject()).await {
        Ok(sub) => sub,
        Err(error) => {
            tracing::error!(%error, "cannot receive the other nodes' broadcasts");
            return;
        }
    };
    while let Some(msg) = sub.next().await {
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let Some((node, body)) = msg.payload.split_first_chunk::<8>() else {
            continue;
        };
        if u64::from_le_bytes(*node) != inner.node {
            engine.deliver_broadcast(msg.payload.slice(8..8 + body.len()));
        }
    }
}

/// The engine's way into the bucket.
struct NatsLink {
    inner: Arc<Inner>,
    events: tokio::sync::mpsc::UnboundedSender<Bytes>,
}

impl Link for NatsLink {
    fn node(&self) -> u64 {
        self.inner.node
    }

    fn publish(&self, key: String, value: Bytes, expect: u64) -> BoxFuture<Result<u64, LinkError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            // While disconnected the NATS client would buffer the entry and send it once it
            // reconnects, long after the write was refused: refuse it without sending.
            if inner.client.connection_state() != async_nats::connection::State::Connected {
                return Err(LinkError::Unavailable(
                    "not connected to NATS (reconnecting)".to_owned(),
                ));
            }
            inner
                .bucket
                .update(key, value, expect)
                .await
                .map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => LinkError::Conflict,
                    kv::UpdateErrorKind::TimedOut => LinkError::Unsure(format!("NATS: {e}")),
                    _ => LinkError::Unavailable(format!("NATS: {e}")),
                })
        })
    }

    fn broadcast(&self, msg: Bytes) {
        let _ = self.events.send(msg);
    }
}
