//! The engine's share of live queries (the windows themselves are in [`super::live`]): a
//! client's `query` and `unquery`, a commit's fan-out to the queries it can touch, and the
//! windows evaluated again for a snapshot or a permission re-check.
//!
//! Runs under the engine's lock, like the rest of a commit. A collection's [`Live`] is taken out
//! of its store while it works, so that the store's models and permission checks stay readable.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::collection::{CollectionPermissions, Ctx};
use crate::hooks::guard;
use crate::ids::ConnId;
use crate::model::{AttrSet, Permissions};
use crate::protocol::encode as wire;
use crate::query::{Dir, Query};

use super::commit::Refusal;
use super::fanout;
use super::live::{Live, LiveQuery, Moves, Probe, Rows, Slot};
use super::state::{ConnState, Conns};
use super::store::Store;
use super::view::{Delta, ViewCache, diff};

/// Bounds on a connection's queries (from [`Config`](crate::Config)).
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueryLimits {
    /// The largest `limit`, and the limit of a query without one.
    pub(crate) max_limit: usize,
    /// Live queries per connection and collection.
    pub(crate) max_queries: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_limit: 10_000,
            max_queries: 64,
        }
    }
}

/// What a change of the models a connection's queries show sends it: adds and changes before
/// the `window` messages, removes after them, and the answer to its own request last.
#[derive(Default)]
struct Out {
    first: Vec<Bytes>,
    windows: Vec<Bytes>,
    last: Vec<Bytes>,
    answer: Option<(u64, Bytes)>,
}

impl Out {
    fn push_to(self, conn: &ConnState<impl Sized>) {
        for msg in self.first.into_iter().chain(self.windows).chain(self.last) {
            conn.outbox.push(msg);
        }
        if let Some((req, msg)) = self.answer {
            conn.outbox.push_answer(req, msg);
        }
    }
}

/// The OIDs in `a` and not in `b`, in `a`'s order.
fn minus(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut sorted = b.to_vec();
    sorted.sort_unstable();
    a.iter()
        .filter(|x| sorted.binary_search(x).is_err())
        .copied()
        .collect()
}

impl<C, S> Store<C, S>
where
    C: CollectionPermissions<S>,
    C::Model: Permissions<S>,
    S: Send + Sync + 'static,
{
    /// A query's window from scratch: the first `limit + 1` models that match it, as `conn` may
    /// see them, in its order.
    fn evaluate(
        &self,
        rows: &HashMap<usize, Rows>,
        q: &LiveQuery<C::Model>,
        conn: &ConnState<S>,
        conn_id: ConnId,
    ) -> Vec<Slot> {
        let cap = q.limit.saturating_add(1);
        let fields = q.query.fields();
        let test = |oid: u64, model: &C::Model| -> Option<Slot> {
            let mask = self.view(model, conn, conn_id, oid)?;
            let probe = Probe::of(model, oid, fields);
            let mut get = |f| probe.get(f, mask);
            q.query.matches(&mut get).then(|| Slot {
                key: q.query.key(&mut get),
                oid,
            })
        };
        // The candidates, in OID order: those with the indexed value, or every model.
        let indexed: Option<Vec<u64>> = q.index.as_ref().map(|(attr, values)| {
            let Some(rows) = rows.get(attr) else {
                return Vec::new();
            };
            let mut oids: Vec<u64> = values
                .iter()
                .filter_map(|v| rows.by_value.get(v))
                .flatten()
                .copied()
                .collect();
            if values.len() > 1 {
                oids.sort_unstable();
                oids.dedup();
            }
            oids
        });
        let lookup = |oid: &u64| self.models.get(oid).map(|m| (*oid, m));
        let desc = q.query.oid_order() == Some(Dir::Desc);
        let candidates: Box<dyn Iterator<Item = (u64, &C::Model)>> = match (&indexed, desc) {
            (Some(oids), false) => Box::new(oids.iter().filter_map(lookup)),
            (Some(oids), true) => Box::new(oids.iter().rev().filter_map(lookup)),
            (None, false) => Box::new(self.models.iter().map(|(o, m)| (*o, m))),
            (None, true) => Box::new(self.models.iter().rev().map(|(o, m)| (*o, m))),
        };
        let mut window = Vec::new();
        if q.query.oid_order().is_some() {
            // Already in the query's order: stop at the limit.
            for (oid, model) in candidates {
                if let Some(slot) = test(oid, model) {
                    window.push(slot);
                    if window.len() >= cap {
                        break;
                    }
                }
            }
            return window;
        }
        window.extend(candidates.filter_map(|(oid, m)| test(oid, m)));
        let order = |a: &Slot, b: &Slot| q.query.compare((&a.key, a.oid), (&b.key, b.oid));
        if window.len() > cap {
            window.select_nth_unstable_by(cap - 1, order);
            window.truncate(cap);
        }
        window.sort_by(order);
        window
    }

    /// Brings what `conn` holds of the models `oids` in line with what its queries show, for a
    /// collection whose connections hold only that; `changed`: the attributes commit `oid`
    /// changed.
    #[allow(clippy::too_many_arguments)]
    fn settle_held(
        &self,
        live: &Live<C::Model>,
        conn_id: ConnId,
        conn: &mut ConnState<S>,
        oids: &mut Vec<u64>,
        commit: Option<(u64, AttrSet, Option<AttrSet>)>,
        creator: Option<(u64, &str)>,
        cache: &mut ViewCache,
        out: &mut Out,
    ) {
        oids.sort_unstable();
        oids.dedup();
        for &x in oids.iter() {
            let model = self.models.get(&x);
            let (changed, now) = match commit {
                Some((oid, changed, mask)) if oid == x => {
                    (changed, mask.filter(|_| live.shown(conn_id, x)))
                }
                _ => (
                    AttrSet::EMPTY,
                    model
                        .filter(|_| live.shown(conn_id, x))
                        .and_then(|m| self.view(m, conn, conn_id, x)),
                ),
            };
            let held = &mut conn.held[self.idx];
            let had = held.get(x);
            let delta = diff(had, now, changed);
            let is_commit = commit.is_some_and(|(oid, _, _)| oid == x);
            if let (true, Some((req, tmp))) = (is_commit, creator) {
                fanout::record(held, had, x, delta);
                let view = model.zip(now);
                out.answer = Some((req, wire::created(&self.name_json, req, tmp, x, view)));
                continue;
            }
            if !fanout::record(held, had, x, delta) {
                continue;
            }
            match (delta, model) {
                (Delta::Remove, _) | (_, None) => out.last.push(wire::remove(&self.name_json, x)),
                (_, Some(m)) if is_commit => out
                    .first
                    .push(cache.get(delta, || fanout::encode(&self.name_json, x, m, delta))),
                (_, Some(m)) => out.first.push(fanout::encode(&self.name_json, x, m, delta)),
            }
        }
    }

    /// [`Self::settle_held`] outside a commit (a query changed, or permissions were checked
    /// again): only what the connection's queries show decides.
    fn settle_shown(
        &self,
        live: &Live<C::Model>,
        conn_id: ConnId,
        conn: &mut ConnState<S>,
        oids: &mut Vec<u64>,
        out: &mut Out,
    ) {
        let mut cache = ViewCache::default();
        self.settle_held(live, conn_id, conn, oids, None, None, &mut cache, out);
    }

    /// Updates the windows a commit of `oid` can touch (`old`: the model before it; the store
    /// holds the one after, if any) and sends their connections what changed. For a queried
    /// collection this is the whole fan-out; the creator (a client) gets `created`.
    pub(super) fn fan_queries(
        &mut self,
        conns: &mut Conns<S>,
        oid: u64,
        old: Option<&C::Model>,
        changed: AttrSet,
        creator: Option<(ConnId, u64, &str)>,
    ) {
        let mut live = std::mem::take(&mut self.live);
        let model = self.models.get(&oid);
        let candidates = live.touch(oid, old, model);
        let mut fields = AttrSet::EMPTY;
        for k in &candidates {
            fields = fields.or(live.queries[k].query.fields());
        }
        let probe = model.map(|m| Probe::of(m, oid, fields));
        let mut groups: Vec<(ConnId, u64)> = candidates
            .iter()
            .map(|k| (live.queries[k].conn, *k))
            .collect();
        groups.sort_unstable();
        let mut cache = ViewCache::default();
        let mut answered = false;
        let mut moves = Moves::default();
        let mut touched = Vec::new();
        for group in groups.chunk_by(|a, b| a.0 == b.0) {
            let conn_id = group[0].0;
            let Some(conn) = conns.get_mut(&conn_id) else {
                continue;
            };
            if !conn.ready {
                continue; // its windows are evaluated again when it resumes
            }
            let mask = model.and_then(|m| self.view(m, conn, conn_id, oid));
            let mut out = Out::default();
            touched.clear();
            touched.push(oid);
            for &(_, key) in group {
                let Some(q) = live.queries.get_mut(&key) else {
                    continue;
                };
                let had_more = q.more();
                moves.clear();
                // Only a full window that holds the model may need to be evaluated again: then
                // what it shows now is kept to compare.
                let before: Vec<u64> = if had_more && q.window.iter().any(|s| s.oid == oid) {
                    q.visible().collect()
                } else {
                    Vec::new()
                };
                let placed = q.place(oid, probe.as_ref(), mask, &mut moves);
                let (ins, outs) = if placed {
                    (&moves.ins, &moves.outs)
                } else {
                    // Evaluated again: the difference of the whole part shown.
                    q.window = self.evaluate(&live.rows, q, conn, conn_id);
                    let after: Vec<u64> = q.visible().collect();
                    moves.ins = minus(&after, &before);
                    moves.outs = minus(&before, &after);
                    (&moves.ins, &moves.outs)
                };
                if ins.is_empty() && outs.is_empty() && had_more == q.more() {
                    continue;
                }
                touched.extend(ins);
                touched.extend(outs);
                out.windows.push(wire::window(
                    &self.name_json,
                    &q.qid,
                    ins,
                    outs,
                    q.more(),
                    false,
                ));
            }
            if live.queried_only {
                let creator = creator
                    .filter(|(c, _, _)| *c == conn_id)
                    .map(|(_, req, tmp)| (req, tmp));
                answered |= creator.is_some();
                let commit = Some((oid, changed, mask));
                self.settle_held(
                    &live,
                    conn_id,
                    conn,
                    &mut touched,
                    commit,
                    creator,
                    &mut cache,
                    &mut out,
                );
            }
            out.push_to(conn);
        }
        if live.queried_only
            && !answered
            && let Some((c, req, tmp)) = creator
            && let Some(conn) = conns.get(&c)
        {
            // No query of its creator shows the new model.
            let created = wire::created::<C::Model>(&self.name_json, req, tmp, oid, None);
            conn.outbox.push_answer(req, created);
        }
        self.live = live;
    }

    /// A client's `query` (`spec`: its `where`, `order` and `limit`), or with `spec: None` its
    /// `unquery`: the window is evaluated and sent (for a queried collection with the models
    /// it now holds and no longer holds).
    pub(super) fn set_query(
        &mut self,
        conn_id: ConnId,
        conn: &mut ConnState<S>,
        qid: &str,
        spec: Option<&Map<String, Value>>,
        limits: QueryLimits,
    ) -> Result<(), Refusal> {
        let query = match spec {
            Some(spec) => Some(self.parse_query(conn_id, conn, spec, limits)?),
            None => None,
        };
        let mut live = std::mem::take(&mut self.live);
        let existing = live.find(conn_id, qid);
        if query.is_some()
            && existing.is_none()
            && live.of_conn(conn_id).len() >= limits.max_queries
        {
            self.live = live;
            return Err(Refusal::BadQuery {
                coll: C::NAME,
                reason: format!(
                    "a connection may hold at most {} live queries on a collection (`Config::max_queries`)",
                    limits.max_queries
                ),
            });
        }
        let before: Vec<u64> = existing
            .and_then(|k| live.remove(k))
            .map(|q| q.visible().collect())
            .unwrap_or_default();
        let mut out = Out::default();
        let mut touched = before;
        if let Some((query, limit)) = query {
            let q = LiveQuery {
                conn: conn_id,
                qid: qid.to_owned(),
                index: query.index_terms(),
                query,
                limit,
                window: Vec::new(),
            };
            let key = live.insert(q, self.models.iter());
            let window = self.evaluate(&live.rows, &live.queries[&key], conn, conn_id);
            let q = live.queries.get_mut(&key).expect("just inserted");
            q.window = window;
            let shown: Vec<u64> = q.visible().collect();
            let msg = wire::window(&self.name_json, qid, &shown, &[], q.more(), true);
            out.windows.push(msg);
            touched.extend(shown);
        }
        if live.queried_only {
            self.settle_shown(&live, conn_id, conn, &mut touched, &mut out);
        }
        out.push_to(conn);
        self.live = live;
        Ok(())
    }

    /// Parses a client's query and asks `can_query`; the query and its limit.
    fn parse_query(
        &self,
        conn_id: ConnId,
        conn: &ConnState<S>,
        spec: &Map<String, Value>,
        limits: QueryLimits,
    ) -> Result<(Query<C::Model>, usize), Refusal> {
        let bad = |reason: String| Refusal::BadQuery {
            coll: C::NAME,
            reason,
        };
        let query = Query::<C::Model>::from_json(spec).map_err(bad)?;
        let limit = match query.max_models() {
            Some(n) if n > limits.max_limit => {
                return Err(bad(format!(
                    "`limit` {n} is above the server's maximum of {} (`Config::max_query_limit`)",
                    limits.max_limit
                )));
            }
            Some(n) => n,
            None => limits.max_limit,
        };
        let ctx = Ctx {
            session: &conn.session,
            conn: conn_id,
        };
        let allowed = guard("CollectionPermissions::can_query", || {
            self.collection.can_query(&ctx, &query)
        })
        .unwrap_or(false);
        if !allowed {
            return Err(Refusal::MayNotQuery {
                conn: conn_id,
                coll: C::NAME,
            });
        }
        Ok((query, limit))
    }

    /// Evaluates every query of `conn` again (after a snapshot, or a permission re-check):
    /// the `window` messages of those whose result changed (every one with `all`).
    pub(super) fn refresh_queries(
        &mut self,
        conn_id: ConnId,
        conn: &ConnState<S>,
        all: bool,
    ) -> Vec<Bytes> {
        let mut live = std::mem::take(&mut self.live);
        let mut out = Vec::new();
        for key in live.of_conn(conn_id).to_vec() {
            let window = self.evaluate(&live.rows, &live.queries[&key], conn, conn_id);
            let q = live
                .queries
                .get_mut(&key)
                .expect("a query of the connection");
            let before: Vec<u64> = q.visible().collect();
            let had_more = q.more();
            q.window = window;
            let after: Vec<u64> = q.visible().collect();
            if all || before != after || had_more != q.more() {
                out.push(wire::window(
                    &self.name_json,
                    &q.qid,
                    &after,
                    &[],
                    q.more(),
                    true,
                ));
            }
        }
        self.live = live;
        out
    }

    /// After a permission re-check of a queried collection: brings what `conn` held (`before`)
    /// in line with what its queries show now, and sends the `windows` that changed. Whether
    /// anything was sent.
    pub(super) fn settle_queried(
        &mut self,
        conn_id: ConnId,
        conn: &mut ConnState<S>,
        before: Vec<u64>,
        windows: Vec<Bytes>,
    ) -> bool {
        let live = std::mem::take(&mut self.live);
        let mut touched = before;
        for k in live.of_conn(conn_id) {
            touched.extend(live.queries[k].visible());
        }
        let mut out = Out {
            windows,
            ..Out::default()
        };
        self.settle_shown(&live, conn_id, conn, &mut touched, &mut out);
        let sent = !(out.first.is_empty() && out.windows.is_empty() && out.last.is_empty());
        out.push_to(conn);
        self.live = live;
        sent
    }

    /// Forgets every query of a connection.
    pub(super) fn drop_queries(&mut self, conn_id: ConnId) {
        for key in self.live.of_conn(conn_id).to_vec() {
            self.live.remove(key);
        }
    }
}
