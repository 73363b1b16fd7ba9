//! The sync engine: the one authority over the world's state.
//!
//! Every mutation, from a client or from server code, runs under the engine lock, which
//! applies it and fans it out before the next one: that gives every connection the changes in
//! the order the server applied them. For each connection the engine remembers which models,
//! and which attributes of them, the client holds (`held`). A fan-out compares that with what
//! the connection may read now and queues exactly the difference: an `add`, a `remove`, or a
//! `change` with the changed readable attributes (plus any that just became readable, minus any
//! that just became unreadable). Messages are encoded once per distinct view and the bytes are
//! shared between connections.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use bytes::Bytes;

use crate::collection::{Collection, CollectionPermissions, Ctx, Seeded};
use crate::conn::ConnId;
use crate::model::{Access, AttrSet, Attribute, Model, Oid, Permissions};
use crate::outbox::Outbox;
use crate::wire::{self, Target};

/// The state of one connection as the engine sees it.
pub(crate) struct ConnState<S> {
    pub(crate) session: S,
    pub(crate) outbox: Arc<Outbox>,
    /// Per collection index: the models the client holds and which of their attributes.
    pub(crate) held: Vec<HashMap<u64, AttrSet>>,
    /// Whether the client got its first snapshot; until then fan-outs skip it.
    pub(crate) ready: bool,
}

pub(crate) type Conns<S> = HashMap<ConnId, ConnState<S>>;

pub(crate) struct Engine<S> {
    pub(crate) colls: Vec<Box<dyn CollState<S>>>,
    pub(crate) conns: Conns<S>,
    pub(crate) next_oid: u64,
}

/// Runs a user hook, turning a panic into `None` (logged): a panicking permission hook denies.
pub(crate) fn guard<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(panic) => {
            tracing::error!(
                hook = what,
                panic = panic_message(&panic),
                "user hook panicked; treated as a refusal"
            );
            None
        }
    }
}

pub(crate) fn panic_message(panic: &Box<dyn Any + Send>) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}

/// Which attributes of `model` the connection may read, or `None` if it may not see it.
fn readable<S, M: Permissions<S>>(
    model: &M,
    session: &S,
    conn: ConnId,
    oid: u64,
) -> Option<AttrSet> {
    let ctx = Access {
        session,
        conn,
        oid: Oid::<M>::from_raw(oid),
    };
    guard("Permissions::can_read", || {
        if !model.can_read(&ctx, None) {
            return None;
        }
        let mut set = AttrSet::EMPTY;
        for (i, attr) in M::ATTRS.iter().enumerate() {
            if model.can_read(&ctx, Some(*attr)) {
                set.insert(i);
            }
        }
        Some(set)
    })
    .flatten()
}

/// Encoded messages of one fan-out, keyed by the view they encode.
#[derive(Default)]
struct ViewCache {
    entries: Vec<(u8, AttrSet, AttrSet, Bytes)>,
}

impl ViewCache {
    fn get(&mut self, kind: u8, a: AttrSet, b: AttrSet, make: impl FnOnce() -> Bytes) -> Bytes {
        if let Some((_, _, _, bytes)) = self
            .entries
            .iter()
            .find(|(k, x, y, _)| *k == kind && *x == a && *y == b)
        {
            return bytes.clone();
        }
        let bytes = make();
        self.entries.push((kind, a, b, bytes.clone()));
        bytes
    }
}

const ADD: u8 = 0;
const CHANGE: u8 = 1;
const REMOVE: u8 = 2;

/// A client request on a collection, already parsed.
pub(crate) enum Request<'a> {
    Change {
        oid: u64,
        set: &'a serde_json::Map<String, serde_json::Value>,
    },
    Add {
        tmp: &'a str,
        attrs: &'a serde_json::Map<String, serde_json::Value>,
    },
    Remove {
        oid: u64,
    },
}

/// One collection, with its model type erased so the engine can hold many.
pub(crate) trait CollState<S>: Send + Sync {
    fn name(&self) -> &'static str;
    fn type_id(&self) -> std::any::TypeId;
    /// The `BTreeMap<u64, M>` of models.
    fn models_any(&self) -> &dyn Any;
    /// Writes the JSON array of models `conn` may see and records them as held.
    fn write_snapshot(&self, conn_id: ConnId, conn: &mut ConnState<S>, out: &mut Vec<u8>);
    /// Pushes to `conn` the difference between what it holds and what it may see now.
    fn sync_conn(&self, conn_id: ConnId, conn: &mut ConnState<S>);
    /// Handles a client request; pushes every resulting message, including the answer.
    fn client_request(
        &mut self,
        conns: &mut Conns<S>,
        conn_id: ConnId,
        req: u64,
        request: Request<'_>,
        next_oid: &mut u64,
    );
    /// Inserts a model (a `Box<M>`) under `oid` and fans it out.
    fn server_insert(&mut self, conns: &mut Conns<S>, oid: u64, model: Box<dyn Any>);
    /// Runs `f` on the model (`&mut M`) with a change set and fans out the changes.
    fn server_update(
        &mut self,
        conns: &mut Conns<S>,
        oid: u64,
        f: &mut dyn FnMut(&mut dyn Any, &mut AttrSet),
    ) -> bool;
    /// Removes a model and fans out the removal; returns the `Box<M>`.
    fn server_remove(&mut self, conns: &mut Conns<S>, oid: u64) -> Option<Box<dyn Any + Send>>;
}

/// The typed state of collection `C`.
pub(crate) struct Store<C: Collection> {
    collection: C,
    models: BTreeMap<u64, C::Model>,
    /// Position in `Engine::colls` and in every `ConnState::held`.
    idx: usize,
    /// The wire name as a JSON string, ready to splice into messages.
    name_json: String,
}

impl<C: Collection> Store<C> {
    pub(crate) fn new(seeded: Seeded<C>, idx: usize, next_oid: &mut u64) -> Self {
        let mut models = BTreeMap::new();
        for model in seeded.models {
            *next_oid += 1;
            models.insert(*next_oid, model);
        }
        Store {
            collection: seeded.collection,
            models,
            idx,
            name_json: serde_json::to_string(C::NAME).unwrap_or_default(),
        }
    }

    fn describe(&self, oid: u64) -> String {
        format!("{}/{} {}", C::NAME, C::Model::NAME, oid)
    }
}

impl<C: Collection> Store<C> {
    fn fanout_change<S>(&self, conns: &mut Conns<S>, oid: u64, changed: AttrSet)
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S>,
    {
        let Some(model) = self.models.get(&oid) else {
            return;
        };
        let mut cache = ViewCache::default();
        for (id, conn) in conns.iter_mut().filter(|(_, c)| c.ready) {
            let now = readable(model, &conn.session, *id, oid);
            let held = &mut conn.held[self.idx];
            match (held.get(&oid).copied(), now) {
                (None, None) => {}
                (None, Some(mask)) => {
                    held.insert(oid, mask);
                    conn.outbox.push(cache.get(ADD, mask, mask, || {
                        wire::add(&self.name_json, oid, model, mask)
                    }));
                }
                (Some(_), None) => {
                    held.remove(&oid);
                    conn.outbox
                        .push(cache.get(REMOVE, AttrSet::EMPTY, AttrSet::EMPTY, || {
                            wire::remove(&self.name_json, oid)
                        }));
                }
                (Some(had), Some(mask)) => {
                    let set = changed.and(mask).or(mask.minus(had));
                    let unset = had.minus(mask);
                    if set.is_empty() && unset.is_empty() {
                        continue;
                    }
                    if had != mask {
                        held.insert(oid, mask);
                    }
                    conn.outbox.push(cache.get(CHANGE, set, unset, || {
                        wire::change(&self.name_json, oid, model, set, unset)
                    }));
                }
            }
        }
    }

    /// Fans out a new model; its creator (if a client) gets `created` instead of `add`.
    fn fanout_added<S>(&self, conns: &mut Conns<S>, oid: u64, origin: Option<(ConnId, u64, &str)>)
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S>,
    {
        let Some(model) = self.models.get(&oid) else {
            return;
        };
        let mut cache = ViewCache::default();
        for (id, conn) in conns.iter_mut().filter(|(_, c)| c.ready) {
            let now = readable(model, &conn.session, *id, oid);
            if let Some(mask) = now {
                conn.held[self.idx].insert(oid, mask);
            }
            match origin {
                Some((origin, req, tmp)) if origin == *id => {
                    conn.outbox.push_control(wire::created(
                        &self.name_json,
                        req,
                        tmp,
                        oid,
                        now.map(|m| (model, m)),
                    ));
                }
                _ => {
                    if let Some(mask) = now {
                        conn.outbox.push(cache.get(ADD, mask, mask, || {
                            wire::add(&self.name_json, oid, model, mask)
                        }));
                    }
                }
            }
        }
    }

    fn fanout_removed<S>(&self, conns: &mut Conns<S>, oid: u64)
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S>,
    {
        let msg = wire::remove(&self.name_json, oid);
        for conn in conns.values_mut() {
            if conn.held[self.idx].remove(&oid).is_some() {
                conn.outbox.push(msg.clone());
            }
        }
    }

    fn reject<S>(
        &self,
        conn_id: ConnId,
        conn: &ConnState<S>,
        req: u64,
        target: Target<'_>,
        reason: &str,
    ) -> Bytes
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S>,
    {
        let model = match target {
            Target::Oid(oid) => self
                .models
                .get(&oid)
                .and_then(|m| readable(m, &conn.session, conn_id, oid).map(|mask| (m, mask))),
            Target::Tmp(_) => None,
        };
        tracing::debug!(collection = C::NAME, conn = %conn_id, reason, "rejected client request");
        wire::reject(&self.name_json, req, target, reason, model)
    }

    fn client_change<S>(
        &mut self,
        conns: &mut Conns<S>,
        conn_id: ConnId,
        oid: u64,
        patch: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String>
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S>,
    {
        let conn = conns.get(&conn_id).ok_or("connection closed")?;
        let model = self
            .models
            .get(&oid)
            .filter(|m| readable(*m, &conn.session, conn_id, oid).is_some());
        let Some(model) = model else {
            return Err(format!(
                "collection `{}` has no model with oid {oid}",
                C::NAME
            ));
        };
        let changes = C::Model::decode_patch(patch).map_err(|e| format!("{}: {e}", C::NAME))?;
        let ctx = Access {
            session: &conn.session,
            conn: conn_id,
            oid: Oid::<C::Model>::from_raw(oid),
        };
        for change in &changes {
            let attr = C::Model::change_attr(change);
            if attr.is_readonly() {
                return Err(format!(
                    "attribute `{}` of {} is read-only",
                    attr.name(),
                    self.describe(oid)
                ));
            }
            let allowed =
                guard("Permissions::can_write", || model.can_write(&ctx, change)).unwrap_or(false);
            if !allowed {
                return Err(format!(
                    "permission denied: connection {conn_id} may not write attribute `{}` of {}",
                    attr.name(),
                    self.describe(oid)
                ));
            }
        }
        let mut changed = AttrSet::EMPTY;
        let mut next = model.clone();
        for change in changes {
            changed.insert(C::Model::change_attr(&change).index());
            next.apply(change);
        }
        self.models.insert(oid, next);
        self.fanout_change(conns, oid, changed);
        Ok(())
    }

    fn client_add<S>(
        &mut self,
        conns: &mut Conns<S>,
        conn_id: ConnId,
        req: u64,
        tmp: &str,
        attrs: &serde_json::Map<String, serde_json::Value>,
        next_oid: &mut u64,
    ) -> Result<(), String>
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S>,
    {
        let conn = conns.get(&conn_id).ok_or("connection closed")?;
        let changes = C::Model::decode_patch(attrs).map_err(|e| format!("{}: {e}", C::NAME))?;
        let mut model = C::Model::default();
        for change in changes {
            let attr = C::Model::change_attr(&change);
            if attr.is_readonly() {
                return Err(format!(
                    "attribute `{}` of {}/{} is read-only",
                    attr.name(),
                    C::NAME,
                    C::Model::NAME
                ));
            }
            model.apply(change);
        }
        let ctx = Ctx {
            session: &conn.session,
            conn: conn_id,
        };
        let allowed = guard("CollectionPermissions::can_create", || {
            self.collection.can_create(&ctx, &model)
        })
        .unwrap_or(false);
        if !allowed {
            return Err(format!(
                "permission denied: connection {conn_id} may not create models in `{}`",
                C::NAME
            ));
        }
        guard("CollectionPermissions::on_create", || {
            self.collection.on_create(&ctx, &mut model)
        })
        .ok_or_else(|| format!("the server failed to create the model in `{}`", C::NAME))?;
        *next_oid += 1;
        let oid = *next_oid;
        self.models.insert(oid, model);
        self.fanout_added(conns, oid, Some((conn_id, req, tmp)));
        Ok(())
    }

    fn client_remove<S>(
        &mut self,
        conns: &mut Conns<S>,
        conn_id: ConnId,
        oid: u64,
    ) -> Result<(), String>
    where
        C: CollectionPermissions<S>,
        C::Model: Permissions<S>,
    {
        let conn = conns.get(&conn_id).ok_or("connection closed")?;
        let model = self
            .models
            .get(&oid)
            .filter(|m| readable(*m, &conn.session, conn_id, oid).is_some());
        let Some(model) = model else {
            return Err(format!(
                "collection `{}` has no model with oid {oid}",
                C::NAME
            ));
        };
        let ctx = Ctx {
            session: &conn.session,
            conn: conn_id,
        };
        let allowed = guard("CollectionPermissions::can_destroy", || {
            self.collection.can_destroy(&ctx, model)
        })
        .unwrap_or(false);
        if !allowed {
            return Err(format!(
                "permission denied: connection {conn_id} may not remove {}",
                self.describe(oid)
            ));
        }
        self.models.remove(&oid);
        self.fanout_removed(conns, oid);
        Ok(())
    }
}

impl<C, S> CollState<S> for Store<C>
where
    C: CollectionPermissions<S>,
    C::Model: Permissions<S>,
    S: Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        C::NAME
    }

    fn type_id(&self) -> std::any::TypeId {
        std::any::TypeId::of::<C>()
    }

    fn models_any(&self) -> &dyn Any {
        &self.models
    }

    fn write_snapshot(&self, conn_id: ConnId, conn: &mut ConnState<S>, out: &mut Vec<u8>) {
        let held = &mut conn.held[self.idx];
        held.clear();
        out.push(b'[');
        let mut first = true;
        for (&oid, model) in &self.models {
            if let Some(mask) = readable(model, &conn.session, conn_id, oid) {
                if !first {
                    out.push(b',');
                }
                first = false;
                crate::model::write_object(model, Some(oid), mask, out);
                held.insert(oid, mask);
            }
        }
        out.push(b']');
    }

    fn sync_conn(&self, conn_id: ConnId, conn: &mut ConnState<S>) {
        for (&oid, model) in &self.models {
            let now = readable(model, &conn.session, conn_id, oid);
            let held = &mut conn.held[self.idx];
            match (held.get(&oid).copied(), now) {
                (None, None) => {}
                (None, Some(mask)) => {
                    held.insert(oid, mask);
                    conn.outbox
                        .push(wire::add(&self.name_json, oid, model, mask));
                }
                (Some(_), None) => {
                    held.remove(&oid);
                    conn.outbox.push(wire::remove(&self.name_json, oid));
                }
                (Some(had), Some(mask)) if had != mask => {
                    held.insert(oid, mask);
                    conn.outbox.push(wire::change(
                        &self.name_json,
                        oid,
                        model,
                        mask.minus(had),
                        had.minus(mask),
                    ));
                }
                (Some(_), Some(_)) => {}
            }
        }
    }

    fn client_request(
        &mut self,
        conns: &mut Conns<S>,
        conn_id: ConnId,
        req: u64,
        request: Request<'_>,
        next_oid: &mut u64,
    ) {
        let (result, target) = match request {
            Request::Change { oid, set } => (
                self.client_change(conns, conn_id, oid, set),
                Target::Oid(oid),
            ),
            Request::Add { tmp, attrs } => (
                self.client_add(conns, conn_id, req, tmp, attrs, next_oid),
                Target::Tmp(tmp),
            ),
            Request::Remove { oid } => (self.client_remove(conns, conn_id, oid), Target::Oid(oid)),
        };
        let Some(conn) = conns.get(&conn_id) else {
            return;
        };
        match (result, target) {
            (Ok(()), Target::Tmp(_)) => {} // `created` was pushed by the fan-out
            (Ok(()), Target::Oid(_)) => conn.outbox.push_control(wire::ack(req)),
            (Err(reason), target) => conn
                .outbox
                .push_control(self.reject(conn_id, conn, req, target, &reason)),
        }
    }

    fn server_insert(&mut self, conns: &mut Conns<S>, oid: u64, model: Box<dyn Any>) {
        let Ok(model) = model.downcast::<C::Model>() else {
            return;
        };
        self.models.insert(oid, *model);
        self.fanout_added(conns, oid, None);
    }

    fn server_update(
        &mut self,
        conns: &mut Conns<S>,
        oid: u64,
        f: &mut dyn FnMut(&mut dyn Any, &mut AttrSet),
    ) -> bool {
        let Some(model) = self.models.get_mut(&oid) else {
            return false;
        };
        let mut changed = AttrSet::EMPTY;
        f(model, &mut changed);
        if !changed.is_empty() {
            self.fanout_change(conns, oid, changed);
        }
        true
    }

    fn server_remove(&mut self, conns: &mut Conns<S>, oid: u64) -> Option<Box<dyn Any + Send>> {
        let model = self.models.remove(&oid)?;
        self.fanout_removed(conns, oid);
        Some(Box::new(model))
    }
}

impl<S: Send + Sync + 'static> Engine<S> {
    pub(crate) fn new() -> Self {
        Engine {
            colls: Vec::new(),
            conns: HashMap::new(),
            next_oid: 0,
        }
    }

    pub(crate) fn coll_index(&self, name: &str) -> Option<usize> {
        self.colls.iter().position(|c| c.name() == name)
    }

    /// The `hello` + `snapshot` messages for a connection, recording what it now holds.
    pub(crate) fn snapshot(&mut self, conn_id: ConnId) -> Option<Bytes> {
        let conn = self.conns.get_mut(&conn_id)?;
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"t\":\"snapshot\",\"data\":{");
        for (i, coll) in self.colls.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            wire::push_str(&mut out, coll.name());
            out.push(b':');
            coll.write_snapshot(conn_id, conn, &mut out);
        }
        out.extend_from_slice(b"}}");
        Some(Bytes::from(out))
    }

    /// `conn.sync()`: re-checks every permission for one connection and pushes the difference.
    pub(crate) fn sync_conn(&mut self, conn_id: ConnId) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        if !conn.ready {
            return;
        }
        for coll in &self.colls {
            coll.sync_conn(conn_id, conn);
        }
    }

    /// Replaces everything queued for a connection with a fresh snapshot (after its outbox
    /// overflowed).
    pub(crate) fn resync(&mut self, conn_id: ConnId) {
        if let Some(snapshot) = self.snapshot(conn_id) {
            if let Some(conn) = self.conns.get(&conn_id) {
                conn.outbox.reset_with([snapshot]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Engine tests with a hand-written model, independent of the derive.
    use super::*;
    use crate::error::DecodeError;
    use crate::outbox::Drain;

    #[derive(Clone, Default, Debug)]
    struct Counter {
        value: i64,
        secret: i64,
    }

    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    enum CounterAttr {
        Value,
        Secret,
    }

    #[derive(Clone, Debug)]
    enum CounterChange {
        Value(i64),
        Secret(i64),
    }

    impl Attribute for CounterAttr {
        fn index(self) -> usize {
            self as usize
        }
        fn name(self) -> &'static str {
            match self {
                CounterAttr::Value => "value",
                CounterAttr::Secret => "secret",
            }
        }
        fn from_name(name: &str) -> Option<Self> {
            match name {
                "value" => Some(CounterAttr::Value),
                "secret" => Some(CounterAttr::Secret),
                _ => None,
            }
        }
        fn is_readonly(self) -> bool {
            false
        }
    }

    impl Model for Counter {
        type Attr = CounterAttr;
        type Change = CounterChange;
        type Mut<'a> = &'a Counter;
        const NAME: &'static str = "Counter";
        const ATTRS: &'static [CounterAttr] = &[CounterAttr::Value, CounterAttr::Secret];
        fn change_attr(change: &CounterChange) -> CounterAttr {
            match change {
                CounterChange::Value(_) => CounterAttr::Value,
                CounterChange::Secret(_) => CounterAttr::Secret,
            }
        }
        fn apply(&mut self, change: CounterChange) {
            match change {
                CounterChange::Value(v) => self.value = v,
                CounterChange::Secret(v) => self.secret = v,
            }
        }
        fn write_attr(&self, attr: CounterAttr, out: &mut Vec<u8>) {
            match attr {
                CounterAttr::Value => crate::__private::encode(&self.value, out),
                CounterAttr::Secret => crate::__private::encode(&self.secret, out),
            }
        }
        fn decode_change(attr: CounterAttr, value: &serde_json::Value) -> Result<CounterChange, DecodeError> {
            let v = crate::__private::decode::<i64>("Counter", attr.name(), "number (i64)", value)?;
            Ok(match attr {
                CounterAttr::Value => CounterChange::Value(v),
                CounterAttr::Secret => CounterChange::Secret(v),
            })
        }
        fn view_mut<'a>(&'a mut self, _changed: &'a mut AttrSet) -> &'a Counter {
            self
        }
        fn describe(_schema: &mut omni_client_gen::schema::Schema) {}
    }

    /// Session: whether this connection may read `secret`.
    #[derive(Default)]
    struct Sess {
        admin: bool,
    }

    impl Permissions<Sess> for Counter {
        fn can_read(&self, ctx: &Access<'_, Sess, Self>, attr: Option<CounterAttr>) -> bool {
            attr != Some(CounterAttr::Secret) || ctx.session().admin
        }
    }

    struct Counters;
    impl Collection for Counters {
        type Model = Counter;
        const NAME: &'static str = "counters";
    }
    impl CollectionPermissions<Sess> for Counters {}

    fn engine(conns: &[bool]) -> (Engine<Sess>, Vec<Arc<Outbox>>) {
        let mut engine = Engine::<Sess>::new();
        let store = Store::new(Seeded::new(Counters, [Counter::default()]), 0, &mut engine.next_oid);
        engine.colls.push(Box::new(store));
        let mut outboxes = Vec::new();
        for (i, admin) in conns.iter().enumerate() {
            let outbox = Arc::new(Outbox::new(1 << 20));
            let id = ConnId(i as u64 + 1);
            engine.conns.insert(id, ConnState { session: Sess { admin: *admin }, outbox: outbox.clone(), held: vec![HashMap::new()], ready: true });
            engine.snapshot(id);
            outboxes.push(outbox);
        }
        (engine, outboxes)
    }

    fn drain(outbox: &Outbox) -> Vec<Bytes> {
        let mut out = Vec::new();
        let _ = outbox.drain(&mut out);
        out
    }

    #[test]
    fn one_encoding_per_distinct_view_shared_between_connections() {
        let (mut engine, outboxes) = engine(&[false, false, true, true, false]);
        let engine = &mut engine;
        engine.colls[0].server_update(&mut engine.conns, 1, &mut |any, changed| {
            let c = any.downcast_mut::<Counter>().unwrap();
            c.value = 5;
            c.secret = 9;
            changed.insert(0);
            changed.insert(1);
        });
        let msgs: Vec<Bytes> = outboxes.iter().map(|o| drain(o).pop().unwrap()).collect();
        assert_eq!(msgs[0], Bytes::from_static(br#"{"t":"change","c":"counters","oid":1,"set":{"value":5}}"#));
        assert_eq!(msgs[2], Bytes::from_static(br#"{"t":"change","c":"counters","oid":1,"set":{"value":5,"secret":9}}"#));
        // Same view, same allocation: encoded once, shared.
        assert_eq!(msgs[0].as_ptr(), msgs[1].as_ptr());
        assert_eq!(msgs[0].as_ptr(), msgs[4].as_ptr());
        assert_eq!(msgs[2].as_ptr(), msgs[3].as_ptr());
        assert_ne!(msgs[0].as_ptr(), msgs[2].as_ptr());
    }

    #[test]
    fn a_change_only_to_unreadable_attributes_sends_nothing() {
        let (mut engine, outboxes) = engine(&[false, true]);
        let engine = &mut engine;
        engine.colls[0].server_update(&mut engine.conns, 1, &mut |any, changed| {
            any.downcast_mut::<Counter>().unwrap().secret = 1;
            changed.insert(1);
        });
        assert!(drain(&outboxes[0]).is_empty());
        assert_eq!(drain(&outboxes[1]).len(), 1);
    }

    #[test]
    fn sync_sends_only_newly_readable_or_unreadable_attributes() {
        let (mut engine, outboxes) = engine(&[false]);
        engine.conns.get_mut(&ConnId(1)).unwrap().session.admin = true;
        engine.sync_conn(ConnId(1));
        assert_eq!(drain(&outboxes[0]), vec![Bytes::from_static(br#"{"t":"change","c":"counters","oid":1,"set":{"secret":0}}"#)]);
        engine.sync_conn(ConnId(1));
        assert!(drain(&outboxes[0]).is_empty(), "a second sync has nothing to send");
        engine.conns.get_mut(&ConnId(1)).unwrap().session.admin = false;
        engine.sync_conn(ConnId(1));
        assert_eq!(
            drain(&outboxes[0]),
            vec![Bytes::from_static(br#"{"t":"change","c":"counters","oid":1,"set":{},"unset":["secret"]}"#)]
        );
        assert_eq!(outboxes[0].drain(&mut Vec::new()), Drain::Empty);
    }
}
