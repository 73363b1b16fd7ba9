//! What the engine's lock protects: collections, connections, the OID allocator and the log.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::ids::ConnId;
use crate::model::AttrSet;
use crate::outbox::Outbox;
use crate::storage::{Backend, StoreError};

use super::coll::CollState;

/// The state of one connection as the engine sees it.
pub(crate) struct ConnState<S> {
    pub(crate) session: S,
    pub(crate) outbox: Arc<Outbox>,
    /// Per collection index: the models the client holds and which of their attributes.
    pub(crate) held: Vec<Held>,
    /// Per collection index: the channels the client subscribed to.
    pub(crate) channels: Vec<HashSet<String>>,
    /// Whether the client got its first snapshot; until then fan-outs skip it. False again
    /// while a dropped connection waits to be resumed.
    pub(crate) ready: bool,
}

impl<S> ConnState<S> {
    pub(crate) fn new(session: S, outbox: Arc<Outbox>, colls: usize) -> Self {
        ConnState {
            session,
            outbox,
            held: vec![Held::default(); colls],
            channels: vec![HashSet::new(); colls],
            ready: false,
        }
    }
}

pub(crate) type Conns<S> = HashMap<ConnId, ConnState<S>>;

/// A map keyed by OID with a multiplicative hash instead of SipHash (OIDs are server-assigned,
/// not attacker-chosen).
type OidMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<OidHasher>>;

/// What a client holds of one collection: which models, and which of their attributes. Looked
/// up for every connection on every change.
///
/// Compact where it can be: a connection that holds *every* model of the collection with the
/// same attributes (a collection everyone reads whole, the common case) keeps only that set of
/// attributes, plus the exceptions, instead of an entry per model (about 35 KB per connection
/// for 1,000 models). "Every model" means every model the collection has now, so a model added
/// to the collection is held at once: the fan-out of an insert records the exception when the
/// connection may not see it ([`Held::remove`]), and the removal of a model from the collection
/// forgets it ([`Held::forget`]).
#[derive(Default, Clone)]
pub(crate) struct Held {
    /// `Some(mask)`: every model of the collection is held with `mask`, except those in `masks`
    /// (held with other attributes) and in `missing` (not held).
    all: Option<AttrSet>,
    /// Without `all`: every model held, with its attributes. With `all`: the exceptions.
    masks: OidMap<AttrSet>,
    /// With `all`: the models of the collection not held.
    missing: OidMap<()>,
}

impl Held {
    /// The attributes held of model `oid` (which the collection has), if it is held.
    #[inline]
    pub(crate) fn get(&self, oid: u64) -> Option<AttrSet> {
        match self.all {
            None => self.masks.get(&oid).copied(),
            Some(all) => {
                if !self.missing.is_empty() && self.missing.contains_key(&oid) {
                    return None;
                }
                if self.masks.is_empty() {
                    return Some(all);
                }
                Some(self.masks.get(&oid).copied().unwrap_or(all))
            }
        }
    }

    /// Whether model `oid` is held.
    pub(crate) fn contains(&self, oid: u64) -> bool {
        self.get(oid).is_some()
    }

    /// Model `oid` is now held with the attributes `mask`.
    pub(crate) fn insert(&mut self, oid: u64, mask: AttrSet) {
        match self.all {
            None => {
                self.masks.insert(oid, mask);
            }
            Some(all) => {
                if !self.missing.is_empty() {
                    self.missing.remove(&oid);
                }
                if mask == all {
                    if !self.masks.is_empty() {
                        self.masks.remove(&oid);
                    }
                } else {
                    self.masks.insert(oid, mask);
                }
            }
        }
    }

    /// Model `oid`, which the collection still has, is no longer held; what was held of it.
    pub(crate) fn remove(&mut self, oid: u64) -> Option<AttrSet> {
        let had = self.get(oid);
        self.masks.remove(&oid);
        if self.all.is_some() && had.is_some() {
            self.missing.insert(oid, ());
        }
        had
    }

    /// Model `oid` left the collection; what was held of it.
    pub(crate) fn forget(&mut self, oid: u64) -> Option<AttrSet> {
        let had = self.get(oid);
        self.masks.remove(&oid);
        self.missing.remove(&oid);
        had
    }

    /// Holds nothing (and gives the memory back).
    pub(crate) fn clear(&mut self) {
        *self = Held::default();
    }

    /// Holds every model the collection has, with the attributes `mask`.
    pub(crate) fn hold_all(&mut self, mask: AttrSet) {
        *self = Held {
            all: Some(mask),
            ..Held::default()
        };
    }

    /// The models held, when they are listed one by one (not for a connection that holds the
    /// whole collection: that needs the collection's models).
    pub(crate) fn listed(&self) -> impl Iterator<Item = u64> + '_ {
        debug_assert!(
            self.all.is_none(),
            "a connection holding every model lists none"
        );
        self.masks.keys().copied()
    }
}

/// Fibonacci hashing of a `u64` OID.
#[derive(Default)]
pub(crate) struct OidHasher(u64);

impl std::hash::Hasher for OidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// OIDs handed out in blocks reserved durably with the backend ([`Backend::reserve_oids`]), so
/// no OID is ever handed out twice, even across a crash that lost the create that had it.
pub(crate) struct Oids {
    last: u64,
    reserved: u64,
    /// In a cluster: the source of OID blocks no other node gets, and where the current one ends.
    blocks: Option<(std::sync::Arc<dyn OidBlocks>, u64)>,
}

/// Disjoint blocks of OIDs for one node of a cluster.
pub(crate) trait OidBlocks: Send + Sync {
    /// The next block of OIDs that this node alone may hand out. Called under the engine lock:
    /// it must not block (a cluster keeps a block claimed ahead).
    fn next_block(&self) -> std::ops::Range<u64>;
}

/// OIDs reserved at a time.
const OID_BLOCK: u64 = 1024;

impl Oids {
    pub(crate) fn new() -> Self {
        Oids {
            last: 0,
            reserved: 0,
            blocks: None,
        }
    }

    /// OIDs from now on come from `blocks` (a cluster node).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn from_blocks(blocks: std::sync::Arc<dyn OidBlocks>) -> Self {
        Oids {
            last: 0,
            reserved: 0,
            blocks: Some((blocks, 0)),
        }
    }

    /// Starts after every OID the backend ever handed out.
    pub(crate) fn start_after(&mut self, last: u64) {
        self.last = self.last.max(last);
        self.reserved = self.reserved.max(last);
    }

    /// The next OID; reserves another block with the backend when the current one is used up.
    pub(crate) fn next(&mut self, backend: &dyn Backend) -> u64 {
        if let Some((blocks, end)) = &mut self.blocks {
            if self.last + 1 >= *end {
                let block = blocks.next_block();
                self.last = block.start.saturating_sub(1);
                *end = block.end;
            }
            self.last += 1;
            return self.last;
        }
        self.last += 1;
        if self.last > self.reserved {
            self.reserved = self.last + OID_BLOCK;
            backend.reserve_oids(self.reserved);
        }
        self.last
    }

    /// Records an OID given elsewhere (a backend's own id, an announced model).
    pub(crate) fn saw(&mut self, oid: u64) {
        if self.blocks.is_some() {
            return; // a cluster's blocks are disjoint: other nodes' OIDs are never ours
        }
        self.last = self.last.max(oid);
    }
}

/// The commit log's position: the sequence number of the last applied commit, in an epoch
/// that changes whenever the history behind the sequence is lost. The history lives in this
/// process, so every start of a server is a new epoch.
///
/// It also keeps the recent history (which model each commit touched) that a resuming
/// connection catches up from, bounded by count.
#[derive(Debug)]
pub(crate) struct Log {
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    /// The last commits, oldest first: (seq, collection index, OID).
    history: std::collections::VecDeque<(u64, usize, u64)>,
    /// Every commit after this one is in `history`.
    floor: u64,
    /// How many commits `history` keeps.
    limit: usize,
    /// `seq`, for readers without the lock (connection tasks tag their frames with it).
    published: Arc<std::sync::atomic::AtomicU64>,
}

impl Log {
    /// Records commit `seq` (the next one) of model `oid` of collection `idx`.
    /// In a cluster the sequence numbers are the commit log's revisions, which skip the
    /// revisions of the log's own bookkeeping entries.
    /// (A node's own write whose entry a newer value replaced before it was read is applied
    /// late, at the current sequence number.)
    pub(crate) fn record(&mut self, seq: u64, idx: usize, oid: u64) {
        let seq = seq.max(self.seq);
        self.seq = seq;
        if self.limit > 0 {
            self.history.push_back((seq, idx, oid));
            if self.history.len() > self.limit
                && let Some((dropped, _, _)) = self.history.pop_front()
            {
                self.floor = dropped;
            }
        } else {
            self.floor = seq;
        }
        self.published
            .store(seq, std::sync::atomic::Ordering::Release);
    }

    /// The models touched by the commits after `seq`, if the history still holds all of them.
    pub(crate) fn since(&self, seq: u64) -> Option<Vec<(usize, u64)>> {
        if seq < self.floor || seq > self.seq {
            return None;
        }
        let mut touched: Vec<(usize, u64)> = self
            .history
            .iter()
            .filter(|(s, _, _)| *s > seq)
            .map(|(_, idx, oid)| (*idx, *oid))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        Some(touched)
    }

    /// Continues a shared log (a cluster's): its epoch, and the last revision already applied.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn continue_at(&mut self, epoch: u64, seq: u64) {
        self.epoch = epoch;
        self.seq = seq;
        self.floor = seq;
        self.history.clear();
        self.published
            .store(seq, std::sync::atomic::Ordering::Release);
    }

    /// Keeps at most `limit` commits of history (0: none, so no connection can resume from it).
    pub(crate) fn keep(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// The last applied sequence number, readable without the lock.
    pub(crate) fn published(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.published.clone()
    }

    pub(crate) fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // A random epoch without a dependency: std's per-process random SipHash keys, mixed
        // with the time and the process id.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        // Kept within 2^53 so JavaScript clients hold it exactly.
        Log {
            epoch: (h.finish() & ((1 << 53) - 1)).max(1),
            seq: 0,
            history: std::collections::VecDeque::new(),
            floor: 0,
            limit: 10_000,
            published: Arc::default(),
        }
    }
}

/// Everything under the engine's lock.
pub(crate) struct State<S> {
    pub(super) colls: Vec<Box<dyn CollState<S>>>,
    pub(super) conns: Conns<S>,
    pub(super) oids: Oids,
    pub(super) log: Log,
    /// In a cluster: the revision of each model in the commit log (collection index, OID).
    pub(super) revisions: HashMap<(usize, u64), u64>,
    /// Bounds on live queries.
    pub(crate) query_limits: super::queries::QueryLimits,
}

impl<S: Send + Sync + 'static> State<S> {
    pub(crate) fn new() -> Self {
        State {
            colls: Vec::new(),
            conns: HashMap::new(),
            oids: Oids::new(),
            log: Log::new(),
            revisions: HashMap::new(),
            query_limits: super::queries::QueryLimits::default(),
        }
    }

    /// Keeps the last `limit` commits for resuming connections.
    pub(crate) fn keep_history(&mut self, limit: usize) {
        self.log.keep(limit);
    }

    /// The log's last applied sequence number, readable without the lock.
    pub(crate) fn published(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.log.published()
    }

    /// Registers a collection, built for its index.
    pub(crate) fn add_collection(&mut self, make: impl FnOnce(usize) -> Box<dyn CollState<S>>) {
        let idx = self.colls.len();
        self.colls.push(make(idx));
    }

    /// A registered collection's typed store, erased, for the builder to configure.
    pub(crate) fn coll_any_mut(
        &mut self,
        type_id: std::any::TypeId,
    ) -> Option<&mut dyn std::any::Any> {
        let idx = self.coll_index_of(type_id)?;
        Some(self.colls[idx].as_any_mut())
    }

    pub(crate) fn coll_index(&self, name: &str) -> Option<usize> {
        self.colls.iter().position(|c| c.name() == name)
    }

    pub(crate) fn coll_index_of(&self, type_id: std::any::TypeId) -> Option<usize> {
        self.colls.iter().position(|c| c.type_id() == type_id)
    }

    /// Gives every collection of a cluster node its models: those in the cluster's bucket, or
    /// the seeds, under OIDs that every node gives them alike (collection `i`'s seeds are
    /// `(i + 1) << 20` and up), so nodes started together seed the bucket with the same keys.
    /// From then on OIDs come from the cluster's blocks.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn load_cluster(
        &mut self,
        backend: &dyn Backend,
        blocks: Arc<dyn OidBlocks>,
        epoch: u64,
        seq: u64,
    ) -> Result<(), StoreError> {
        for i in 0..self.colls.len() {
            if !self.colls[i].persisted() {
                return Err(StoreError::failed(format!(
                    "collection `{}` is not persisted: in a cluster every collection lives in the shared bucket; register it with `.persist::<C>()` (its model must implement Serialize and Deserialize)",
                    self.colls[i].name()
                )));
            }
            let mut seeds = Oids::new();
            seeds.start_after((i as u64 + 1) << 20);
            self.colls[i].load(backend, &mut seeds)?;
        }
        self.oids = Oids::from_blocks(blocks);
        self.log.continue_at(epoch, seq);
        Ok(())
    }

    /// Gives every collection its models: the stored ones, or the seeds.
    pub(crate) fn load(&mut self, backend: &dyn Backend) -> Result<(), StoreError> {
        self.oids.start_after(backend.last_oid()?);
        // Stored collections first, so seeds of the others get OIDs above every stored one.
        let mut order: Vec<usize> = (0..self.colls.len()).collect();
        order.sort_by_key(|&i| !self.colls[i].persisted());
        for i in order {
            self.colls[i].load(backend, &mut self.oids)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_whole_keeps_only_the_exceptions() {
        let (a, b) = (AttrSet::from_bits(0b11), AttrSet::from_bits(0b01));
        let mut held = Held::default();
        held.insert(1, a);
        assert_eq!((held.get(1), held.get(2)), (Some(a), None));
        assert_eq!(held.listed().collect::<Vec<_>>(), [1]);

        held.hold_all(a);
        assert_eq!((held.get(1), held.get(99)), (Some(a), Some(a)));
        // Another mask, then not held, then held again as the whole: exceptions come and go.
        held.insert(5, b);
        assert_eq!(held.get(5), Some(b));
        assert_eq!(held.remove(6), Some(a));
        assert_eq!(held.get(6), None);
        assert!(!held.contains(6));
        held.insert(6, a);
        assert_eq!(held.get(6), Some(a));
        held.insert(5, a);
        assert!(held.masks.is_empty() && held.missing.is_empty());
        // A model that left the collection leaves no exception behind.
        held.remove(7);
        assert_eq!(held.forget(7), None);
        held.insert(8, b);
        assert_eq!(held.forget(8), Some(b));
        assert_eq!(held.forget(9), Some(a));
        assert!(held.masks.is_empty() && held.missing.is_empty());
        held.clear();
        assert_eq!(held.get(1), None);
    }
}
