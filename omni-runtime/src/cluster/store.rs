//! What a node reads from the bucket when it starts (its [`Snapshot`], served to the engine as
//! a storage [`Backend`]) and the blocks of OIDs it claims there.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::Arc;

use async_nats::jetstream::kv;
use bytes::Bytes;

use crate::engine::replica::Envelope;
use crate::engine::state::OidBlocks;
use crate::storage::{Backend, BoxFuture, StoreError, StoreReply, StoreRequest, StoredModel};

use super::{is_meta, parse_key};

/// The bucket's state when the node joined: the last value of every model, with its revision.
#[derive(Default)]
pub(super) struct Snapshot {
    /// Collection -> OID -> (revision, stored JSON).
    models: HashMap<String, BTreeMap<u64, (u64, Bytes)>>,
    /// Collections whose seeds are in the bucket.
    seeded: HashSet<String>,
    /// The last revision read.
    pub(super) last: u64,
}

impl Snapshot {
    /// Adds an entry read in stream order.
    pub(super) fn add(&mut self, entry: kv::Entry) {
        self.last = self.last.max(entry.revision);
        if let Some(coll) = entry.key.strip_prefix("_omni.seeded.") {
            self.seeded.insert(coll.to_owned());
            return;
        }
        if is_meta(&entry.key) || entry.operation != kv::Operation::Put {
            return;
        }
        let Some((coll, oid)) = parse_key(&entry.key) else {
            return;
        };
        let models = self.models.entry(coll.to_owned()).or_default();
        match serde_json::from_slice::<Envelope<'_>>(&entry.value) {
            Ok(Envelope {
                model: Some(doc), ..
            }) => {
                let doc = Bytes::copy_from_slice(doc.get().as_bytes());
                models.insert(oid, (entry.revision, doc));
            }
            Ok(_) => {
                models.remove(&oid);
            }
            Err(e) => {
                tracing::error!(key = %entry.key, error = %e, "an entry of the bucket is not Omni's; skipped")
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.models.values().map(BTreeMap::len).sum()
    }
}

/// The snapshot as the engine's storage backend when the server is built: `load` gives each
/// collection its models, `seed` collects the seeds of collections the bucket never had (the
/// node writes them to the bucket once it follows it). Writes pass through: the engine
/// publishes them to the bucket itself, after the middleware.
pub(crate) struct ClusterStore {
    snapshot: parking_lot::Mutex<Snapshot>,
    pub(super) seeds: parking_lot::Mutex<Vec<(String, StoredModel)>>,
}

impl ClusterStore {
    pub(super) fn new(snapshot: Snapshot) -> Self {
        ClusterStore {
            snapshot: parking_lot::Mutex::new(snapshot),
            seeds: parking_lot::Mutex::default(),
        }
    }

    /// The revision of every model loaded: (collection, OID, revision).
    pub(super) fn revisions(&self) -> Vec<(String, u64, u64)> {
        let snapshot = self.snapshot.lock();
        snapshot
            .models
            .iter()
            .flat_map(|(coll, models)| {
                models
                    .iter()
                    .map(move |(oid, (rev, _))| (coll.clone(), *oid, *rev))
            })
            .collect()
    }

    /// Frees the snapshot's documents once the collections are loaded.
    pub(super) fn clear(&self) {
        let mut snapshot = self.snapshot.lock();
        snapshot.models.clear();
    }
}

impl Backend for ClusterStore {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn load(&self, collection: &'static str) -> Result<Option<Vec<StoredModel>>, StoreError> {
        let snapshot = self.snapshot.lock();
        let models = snapshot.models.get(collection);
        if models.is_none() && !snapshot.seeded.contains(collection) {
            return Ok(None);
        }
        Ok(Some(
            models
                .into_iter()
                .flatten()
                .map(|(oid, (_, doc))| (*oid, doc.to_vec()))
                .collect(),
        ))
    }

    fn seed(&self, collection: &'static str, models: &[StoredModel]) -> Result<(), StoreError> {
        let mut seeds = self.seeds.lock();
        seeds.extend(models.iter().map(|m| (collection.to_owned(), m.clone())));
        // Even an empty seed list is recorded, so the collection counts as seeded.
        if models.is_empty() {
            seeds.push((collection.to_owned(), (0, Vec::new())));
        }
        Ok(())
    }

    fn last_oid(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn call(&self, req: StoreRequest) -> BoxFuture<Result<StoreReply, StoreError>> {
        Box::pin(async move { Ok(StoreReply::done(&req)) })
    }
}

/// The key that holds the next unclaimed OID.
const OIDS_KEY: &str = "_omni.oids";
/// OIDs per block: a node claims one ahead, so it never waits for one under the engine lock.
const BLOCK: u64 = 1 << 16;
/// The first OID of the first block: those below belong to seeds (see `State::load_cluster`).
const FIRST: u64 = 1 << 32;

/// The blocks of OIDs this node claimed and has not started yet.
pub(super) struct Blocks {
    bucket: kv::Store,
    ready: Arc<parking_lot::Mutex<VecDeque<Range<u64>>>>,
    runtime: tokio::runtime::Handle,
}

impl Blocks {
    /// Claims `n` blocks.
    pub(super) async fn claim(bucket: kv::Store, n: usize) -> Result<Arc<Blocks>, String> {
        let mut ready = VecDeque::new();
        for _ in 0..n {
            ready.push_back(claim_one(&bucket).await?);
        }
        Ok(Arc::new(Blocks {
            bucket,
            ready: Arc::new(parking_lot::Mutex::new(ready)),
            runtime: tokio::runtime::Handle::current(),
        }))
    }
}

/// Claims the next block with a compare-and-set on the counter.
async fn claim_one(bucket: &kv::Store) -> Result<Range<u64>, String> {
    for _ in 0..100 {
        let current = bucket.entry(OIDS_KEY).await.map_err(|e| e.to_string())?;
        let (start, revision) = match current {
            Some(entry) => (
                std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(FIRST)
                    .max(FIRST),
                entry.revision,
            ),
            None => (FIRST, 0),
        };
        let next = start + BLOCK;
        match bucket
            .update(OIDS_KEY, Bytes::from(next.to_string()), revision)
            .await
        {
            Ok(_) => return Ok(start..next),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("other nodes kept claiming OIDs at the same time".to_owned())
}

impl OidBlocks for Blocks {
    fn next_block(&self) -> Range<u64> {
        let mut ready = self.ready.lock();
        let block = ready.pop_front().expect(
            "a cluster node used up its OID blocks before it could claim another (65,536 creates within one round trip to NATS)",
        );
        if ready.is_empty() {
            // Claims the next one ahead, off the lock.
            let (bucket, slot) = (self.bucket.clone(), self.ready.clone());
            self.runtime.spawn(async move {
                let mut delay = std::time::Duration::from_millis(100);
                loop {
                    match claim_one(&bucket).await {
                        Ok(block) => return slot.lock().push_back(block),
                        Err(error) => {
                            tracing::error!(%error, "cannot claim a block of OIDs; trying again");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(std::time::Duration::from_secs(5));
                        }
                    }
                }
            });
        }
        block
    }
}

/// A random node id below 2^53.
pub(super) fn random_node_id() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = std::process::id()
            .to_le_bytes()
            .repeat(2)
            .try_into()
            .unwrap_or_default();
    }
    (u64::from_le_bytes(bytes) & ((1 << 53) - 1)).max(1)
}
