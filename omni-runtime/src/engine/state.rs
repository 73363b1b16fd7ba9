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

/// What a client holds of one collection: OID -> readable attributes. Looked up for every
/// connection on every change, so keyed with a multiplicative hash of the OID instead of SipHash
/// (OIDs are server-assigned, not attacker-chosen).
pub(crate) type Held = HashMap<u64, AttrSet, std::hash::BuildHasherDefault<OidHasher>>;

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
