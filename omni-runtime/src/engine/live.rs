//! Live queries of one collection: each connection's query windows, the index that finds the
//! queries a commit can touch, and the rows that refill a window.
//!
//! A window is the first `limit` models that match the query, pass the connection's read
//! permissions and come first in its order, plus one more if there is one (so the client knows
//! whether there are `more`). A commit of a model is matched only against the queries that
//! could hold it before or after: those indexed by one of its values (a query's first
//! top-level equality or `$in` term), and those without such a term. The engine's share of it
//! is in [`super::queries`].

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::ids::ConnId;
use crate::model::{AttrSet, Attribute, Model};
use crate::query::{Field, Query};

/// One entry of a window: the model's sort key as its connection sees it, and its OID.
pub(super) struct Slot {
    pub(super) key: Box<[Option<Value>]>,
    pub(super) oid: u64,
}

/// One connection's live query.
pub(super) struct LiveQuery<M: Model> {
    pub(super) conn: ConnId,
    pub(super) qid: String,
    pub(super) query: Query<M>,
    /// The attribute and encoded values it is indexed by.
    pub(super) index: Option<(usize, Vec<String>)>,
    /// How many models it shows.
    pub(super) limit: usize,
    /// Sorted by the query's order; at most `limit + 1` (the last one beyond the limit).
    pub(super) window: Vec<Slot>,
}

impl<M: Model> LiveQuery<M> {
    /// The models it shows, in order.
    pub(super) fn visible(&self) -> impl Iterator<Item = u64> + '_ {
        self.window.iter().take(self.limit).map(|s| s.oid)
    }
    /// Whether more models match than it shows.
    pub(super) fn more(&self) -> bool {
        self.window.len() > self.limit
    }
    /// Whether it shows model `oid`.
    pub(super) fn holds(&self, oid: u64) -> bool {
        self.visible().any(|o| o == oid)
    }

    /// Places model `oid` as it is now (`probe`, seen with `mask`; `None`: gone or invisible)
    /// in the window, and records in `moves` which models entered and left the part it shows.
    /// `false` if the window must be evaluated again instead (`moves` is then incomplete): it
    /// lost a model while models beyond it may exist.
    pub(super) fn place(
        &mut self,
        oid: u64,
        probe: Option<&Probe>,
        mask: Option<AttrSet>,
        moves: &mut Moves,
    ) -> bool {
        let cap = self.limit.saturating_add(1);
        let full = self.window.len() >= cap;
        let was = self.window.iter().position(|s| s.oid == oid);
        if let Some(i) = was {
            self.window.remove(i);
            if i < self.limit {
                // It leaves the part shown, and the first model beyond moves up into it.
                moves.leave(oid);
                if let Some(s) = self.window.get(self.limit - 1) {
                    moves.enter(s.oid);
                }
            }
        }
        let slot = match (probe, mask) {
            (Some(p), Some(mask)) => {
                let mut get = |f| p.get(f, mask);
                self.query.matches(&mut get).then(|| Slot {
                    key: self.query.key(&mut get),
                    oid,
                })
            }
            _ => None,
        };
        let Some(slot) = slot else {
            return !(was.is_some() && full);
        };
        let query = &self.query;
        let pos = self.window.partition_point(|s| {
            query.compare((&s.key, s.oid), (&slot.key, slot.oid)) == Ordering::Less
        });
        if full && pos >= self.window.len() {
            // After the last model it knows: beyond the window, unless it left a gap.
            return was.is_none();
        }
        self.window.insert(pos, slot);
        if pos < self.limit {
            // It enters the part shown, and pushes the last one shown beyond.
            moves.enter(oid);
            if let Some(s) = self.window.get(self.limit) {
                moves.leave(s.oid);
            }
        }
        if self.window.len() > cap {
            self.window.pop();
        }
        true
    }
}

/// The models that entered and left the part of one window it shows, net of each other.
#[derive(Default)]
pub(super) struct Moves {
    pub(super) ins: Vec<u64>,
    pub(super) outs: Vec<u64>,
}

impl Moves {
    pub(super) fn clear(&mut self) {
        self.ins.clear();
        self.outs.clear();
    }
    fn enter(&mut self, oid: u64) {
        match self.outs.iter().position(|o| *o == oid) {
            Some(i) => {
                self.outs.swap_remove(i);
            }
            None => self.ins.push(oid),
        }
    }
    fn leave(&mut self, oid: u64) {
        match self.ins.iter().position(|o| *o == oid) {
            Some(i) => {
                self.ins.swap_remove(i);
            }
            None => self.outs.push(oid),
        }
    }
}

/// A model's values as queries read them, computed once per commit.
pub(super) struct Probe {
    oid: Value,
    values: Vec<Option<Value>>,
}

impl Probe {
    /// The values of the attributes `fields` of `model`.
    pub(super) fn of<M: Model>(model: &M, oid: u64, fields: AttrSet) -> Probe {
        let mut values = vec![None; M::ATTRS.len()];
        for i in fields.iter() {
            values[i] = Some(model.attr_value(M::ATTRS[i]));
        }
        Probe {
            oid: Value::from(oid),
            values,
        }
    }

    /// A field's value as a connection that may read `mask` sees it.
    pub(super) fn get<A: Attribute>(&self, f: Field<A>, mask: AttrSet) -> Option<&Value> {
        match f {
            Field::Oid => Some(&self.oid),
            Field::Attr(a) if mask.contains(a.index()) => self.values[a.index()].as_ref(),
            Field::Attr(_) => None,
        }
    }
}

/// The OIDs of the models with each value of one attribute that queries are indexed by.
#[derive(Default)]
pub(super) struct Rows {
    users: usize,
    pub(super) by_value: HashMap<String, BTreeSet<u64>>,
}

/// The live queries of one collection.
pub(crate) struct Live<M: Model> {
    /// `Omni::queried::<C>()`: a connection holds only what its queries show.
    pub(crate) queried_only: bool,
    pub(super) queries: HashMap<u64, LiveQuery<M>>,
    next: u64,
    pub(super) by_conn: HashMap<ConnId, Vec<u64>>,
    by_term: HashMap<(usize, String), Vec<u64>>,
    unindexed: Vec<u64>,
    /// Per attribute index.
    pub(super) rows: HashMap<usize, Rows>,
}

impl<M: Model> Default for Live<M> {
    fn default() -> Self {
        Live {
            queried_only: false,
            queries: HashMap::new(),
            next: 0,
            by_conn: HashMap::new(),
            by_term: HashMap::new(),
            unindexed: Vec::new(),
            rows: HashMap::new(),
        }
    }
}

/// The encoded value of one attribute of a model, as indexes key it.
fn index_key<M: Model>(model: &M, attr: usize) -> String {
    model.attr_value(M::ATTRS[attr]).to_string()
}

impl<M: Model> Live<M> {
    /// Whether any connection has a query here.
    pub(super) fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }

    /// The query `qid` of a connection.
    pub(super) fn find(&self, conn: ConnId, qid: &str) -> Option<u64> {
        self.by_conn
            .get(&conn)?
            .iter()
            .copied()
            .find(|k| self.queries[k].qid == qid)
    }

    /// The queries of a connection.
    pub(super) fn of_conn(&self, conn: ConnId) -> &[u64] {
        self.by_conn.get(&conn).map_or(&[], |v| v.as_slice())
    }

    /// Whether any query of `conn` shows model `oid`.
    pub(super) fn shown(&self, conn: ConnId, oid: u64) -> bool {
        self.of_conn(conn)
            .iter()
            .any(|k| self.queries[k].holds(oid))
    }

    /// Registers a query (its window already evaluated); builds the rows of its index attribute
    /// from `models` the first time. Its key.
    pub(super) fn insert<'m>(
        &mut self,
        q: LiveQuery<M>,
        models: impl Iterator<Item = (&'m u64, &'m M)>,
    ) -> u64 {
        let key = self.next;
        self.next += 1;
        match &q.index {
            Some((attr, values)) => {
                for v in values {
                    self.by_term
                        .entry((*attr, v.clone()))
                        .or_default()
                        .push(key);
                }
                let rows = self.rows.entry(*attr).or_default();
                if rows.users == 0 {
                    for (oid, m) in models {
                        rows.by_value
                            .entry(index_key(m, *attr))
                            .or_default()
                            .insert(*oid);
                    }
                }
                rows.users += 1;
            }
            None => self.unindexed.push(key),
        }
        self.by_conn.entry(q.conn).or_default().push(key);
        self.queries.insert(key, q);
        key
    }

    /// Removes a query.
    pub(super) fn remove(&mut self, key: u64) -> Option<LiveQuery<M>> {
        let q = self.queries.remove(&key)?;
        match &q.index {
            Some((attr, values)) => {
                for v in values {
                    let term = (*attr, v.clone());
                    if let Some(list) = self.by_term.get_mut(&term) {
                        list.retain(|k| *k != key);
                        if list.is_empty() {
                            self.by_term.remove(&term);
                        }
                    }
                }
                if let Some(rows) = self.rows.get_mut(attr) {
                    rows.users -= 1;
                    if rows.users == 0 {
                        self.rows.remove(attr);
                    }
                }
            }
            None => self.unindexed.retain(|k| *k != key),
        }
        if let Some(list) = self.by_conn.get_mut(&q.conn) {
            list.retain(|k| *k != key);
            if list.is_empty() {
                self.by_conn.remove(&q.conn);
            }
        }
        Some(q)
    }

    /// Keeps the rows up to date with a commit of `oid` (`old` and `new`: the model before and
    /// after) and gives the queries it may touch, sorted.
    pub(super) fn touch(&mut self, oid: u64, old: Option<&M>, new: Option<&M>) -> Vec<u64> {
        let mut out = self.unindexed.clone();
        for (attr, rows) in &mut self.rows {
            let before = old.map(|m| index_key(m, *attr));
            let after = new.map(|m| index_key(m, *attr));
            if before != after {
                if let Some(b) = &before
                    && let Some(set) = rows.by_value.get_mut(b)
                {
                    set.remove(&oid);
                    if set.is_empty() {
                        rows.by_value.remove(b);
                    }
                }
                if let Some(a) = &after {
                    rows.by_value.entry(a.clone()).or_default().insert(oid);
                }
            }
            for v in before.iter().chain(after.iter()) {
                if let Some(list) = self.by_term.get(&(*attr, v.clone())) {
                    out.extend_from_slice(list);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}
