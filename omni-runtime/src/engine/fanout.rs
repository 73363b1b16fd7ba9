//! Fan-out: sending every connection exactly the difference a commit made to what it may see.

use crate::collection::CollectionPermissions;
use crate::model::{AttrSet, Model, Permissions};
use crate::protocol::encode as wire;

use super::state::{ConnState, Conns};
use super::store::Store;
use super::view::{Delta, ViewCache, diff};

/// Sends one connection what `delta` says about a model and records what it now holds. With a
/// cache, connections that get the same delta share one encoding.
#[allow(clippy::too_many_arguments)] // the hot path: no struct to build per connection
pub(super) fn send<S, M: Model>(
    name_json: &str,
    conn: &mut ConnState<S>,
    idx: usize,
    had: Option<AttrSet>,
    oid: u64,
    model: &M,
    delta: Delta,
    cache: Option<&mut ViewCache>,
) {
    let held = &mut conn.held[idx];
    let encode = || match delta {
        Delta::Add(mask) => wire::add(name_json, oid, model, mask),
        Delta::Remove => wire::remove(name_json, oid),
        Delta::Change { set, unset } => wire::change(name_json, oid, model, set, unset),
        Delta::None => unreachable!("nothing to encode"),
    };
    let msg = match delta {
        Delta::None => return,
        Delta::Add(mask) => {
            held.insert(oid, mask);
            cache.map_or_else(encode, |c| c.get(delta, encode))
        }
        Delta::Remove => {
            held.remove(&oid);
            cache.map_or_else(encode, |c| c.get(delta, encode))
        }
        Delta::Change { set, unset } => {
            // What it holds now is what it may see: had + set - unset.
            let had = had.unwrap_or(AttrSet::EMPTY);
            let now = had.or(set).minus(unset);
            if now != had {
                held.insert(oid, now);
            }
            cache.map_or_else(encode, |c| c.get(delta, encode))
        }
    };
    conn.outbox.push(msg);
}

/// Fans out a change of the attributes `changed` of one model to every ready connection.
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
    for (id, conn) in conns.iter_mut().filter(|(_, c)| c.ready) {
        let now = store.view(model, conn, *id, oid);
        let held = conn.held[store.idx].get(&oid).copied();
        let delta = diff(held, now, changed);
        send(
            &store.name_json,
            conn,
            store.idx,
            held,
            oid,
            model,
            delta,
            Some(&mut cache),
        );
    }
}

/// Fans out the removal of one model to every connection holding it.
pub(super) fn removed<S>(name_json: &str, idx: usize, conns: &mut Conns<S>, oid: u64) {
    let msg = wire::remove(name_json, oid);
    for conn in conns.values_mut() {
        if conn.held[idx].remove(&oid).is_some() {
            conn.outbox.push(msg.clone());
        }
    }
}
