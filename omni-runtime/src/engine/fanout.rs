//! Fan-out: sending every connection exactly the difference a commit made to what it may see.

use bytes::Bytes;

use crate::collection::CollectionPermissions;
use crate::ids::ConnId;
use crate::model::{AttrSet, Model, Permissions};
use crate::outbox::Outbox;
use crate::protocol::encode as wire;

use super::state::{ConnState, Conns, Held};
use super::store::Store;
use super::view::{Delta, ViewCache, diff};

/// Sends one connection what `delta` says about a model and records what it now holds.
pub(super) fn send<S, M: Model>(
    name_json: &str,
    conn: &mut ConnState<S>,
    idx: usize,
    had: Option<AttrSet>,
    oid: u64,
    model: &M,
    delta: Delta,
) {
    if record(&mut conn.held[idx], had, oid, delta) {
        conn.outbox.push(encode(name_json, oid, model, delta));
    }
}

/// The message that tells a connection `delta` (not [`Delta::None`]).
pub(super) fn encode<M: Model>(name_json: &str, oid: u64, model: &M, delta: Delta) -> Bytes {
    match delta {
        Delta::Add(mask) => wire::add(name_json, oid, model, mask),
        Delta::Remove => wire::remove(name_json, oid),
        Delta::Change { set, unset } => wire::change(name_json, oid, model, set, unset),
        Delta::None => unreachable!("nothing to encode"),
    }
}

/// Records in `held` what a connection holds after `delta`; whether there is anything to send.
#[inline(always)]
pub(super) fn record(held: &mut Held, had: Option<AttrSet>, oid: u64, delta: Delta) -> bool {
    match delta {
        Delta::None => return false,
        Delta::Add(mask) => {
            held.insert(oid, mask);
        }
        Delta::Remove => {
            held.remove(oid);
        }
        Delta::Change { set, unset } => {
            // What it holds now is what it may see: had + set - unset.
            let had = had.unwrap_or(AttrSet::EMPTY);
            let now = had.or(set).minus(unset);
            if now != had {
                held.insert(oid, now);
            }
        }
    }
    true
}

/// Fans out a change of the attributes `changed` of one model to every ready connection.
///
/// Two passes, for memory-level parallelism. The first works out each connection's delta and
/// which encoding it gets; its lookups in `held` miss the cache, and with no atomic operation in
/// the loop the CPU overlaps those misses across connections (cloning a cached encoding is an
/// atomic too, but on a line this core holds). The second pushes: a push's lock is an atomic on
/// another core's line that waits for every load before it, so doing both in one loop made
/// each connection wait for its own misses (0.89x the deliveries/s at the maximum
/// rate; docs/BENCHMARKS.md, "The commit log").
pub(super) fn changed<C, S>(store: &Store<C, S>, conns: &mut Conns<S>, oid: u64, changed: AttrSet)
where
    C: CollectionPermissions<S>,
    C::Model: Permissions<S>,
    S: Send + Sync + 'static,
{
    let Some(model) = store.models.get(&oid) else {
        return;
    };
    let mut cache = ViewCache::default();
    let mut out: Vec<(&Outbox, Bytes)> = Vec::with_capacity(conns.len());
    let mut kinds = [0u64; 3];
    for (id, conn) in conns.iter_mut().filter(|(_, c)| c.ready) {
        let now = store.view(model, conn, *id, oid);
        let held = &mut conn.held[store.idx];
        let had = held.get(oid);
        let delta = diff(had, now, changed);
        if record(held, had, oid, delta) {
            kinds[kind(delta)] += 1;
            let msg = cache.get(delta, || encode(&store.name_json, oid, model, delta));
            out.push((&conn.outbox, msg));
        }
    }
    push_all(out);
    count(store, kinds);
}

/// The index of a delta's kind in a tally: add, change, remove.
fn kind(delta: Delta) -> usize {
    match delta {
        Delta::Add(_) => 0,
        Delta::Change { .. } => 1,
        _ => 2,
    }
}

/// Adds a fan-out's tally to the collection's delivery counters.
fn count<C: crate::collection::Collection, S>(store: &Store<C, S>, kinds: [u64; 3]) {
    let d = &store.delivered;
    for (counter, n) in [
        (&d.add, kinds[0]),
        (&d.change, kinds[1]),
        (&d.remove, kinds[2]),
    ] {
        if n > 0 {
            counter.inc_by(n);
        }
    }
}

/// Fans a new model out to every ready connection. Its creator (a client) gets `created`
/// instead of `add`, even while it waits to be resumed (it asks again for the answer): the
/// `created` is returned, to be queued after everything else the insert sends. Two passes, as
/// [`changed`].
pub(super) fn added<C, S>(
    store: &Store<C, S>,
    conns: &mut Conns<S>,
    oid: u64,
    creator: Option<(ConnId, u64, &str)>,
) -> Option<(ConnId, u64, Bytes)>
where
    C: CollectionPermissions<S>,
    C::Model: Permissions<S>,
    S: Send + Sync + 'static,
{
    let model = store.models.get(&oid)?;
    let mut cache = ViewCache::default();
    let mut out: Vec<(&Outbox, Bytes)> = Vec::with_capacity(conns.len());
    let mut answer = None;
    let is_creator = |id: &ConnId| creator.is_some_and(|(c, _, _)| c == *id);
    for (id, conn) in conns.iter_mut().filter(|(id, c)| c.ready || is_creator(id)) {
        let now = store.view(model, conn, *id, oid);
        match now {
            Some(mask) => conn.held[store.idx].insert(oid, mask),
            // The collection has it now: a connection holding the whole collection records that
            // it does not hold this one.
            None => {
                conn.held[store.idx].remove(oid);
            }
        }
        match creator {
            Some((creator, req, tmp)) if creator == *id => {
                let view = now.map(|m| (model, m));
                let created = wire::created(&store.name_json, req, tmp, oid, view);
                answer = Some((creator, req, created));
            }
            _ => {
                if let Some(mask) = now {
                    let delta = Delta::Add(mask);
                    let msg = cache.get(delta, || encode(&store.name_json, oid, model, delta));
                    out.push((&conn.outbox, msg));
                }
            }
        }
    }
    store.delivered.add.inc_by(out.len() as u64);
    push_all(out);
    answer
}

/// Pushes each message into its outbox.
fn push_all(out: Vec<(&Outbox, Bytes)>) {
    for (outbox, msg) in out {
        outbox.push(msg);
    }
}

/// Fans out the removal of one model to every connection holding it.
pub(super) fn removed<C: crate::collection::Collection, S>(
    store: &Store<C, S>,
    conns: &mut Conns<S>,
    oid: u64,
) {
    let (name_json, idx) = (&store.name_json, store.idx);
    let msg = wire::remove(name_json, oid);
    let holders: Vec<&Outbox> = conns
        .values_mut()
        .filter_map(|conn| conn.held[idx].forget(oid).map(|_| &*conn.outbox))
        .collect();
    store.delivered.remove.inc_by(holders.len() as u64);
    for outbox in holders {
        outbox.push(msg.clone());
    }
}
