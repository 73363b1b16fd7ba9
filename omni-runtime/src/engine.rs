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
//!
//! What a connection may see of a model is, in order: the collection's `list` rule, the
//! connection's channel subscriptions (for a collection with channels), then the model's
//! `can_read` hook. Every write passes the collection's rules and hooks, then the storage stack
//! (middleware and backend) before it is applied: a refusal anywhere changes nothing.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use bytes::Bytes;

use crate::collection::{Collection, CollectionPermissions, Ctx, Seeded};
use crate::conn::ConnId;
use crate::model::{Access, AttrSet, Attribute, Model, Oid, Permissions};
use crate::outbox::Outbox;
use crate::rules::{Action, Rules};
use crate::storage::{Method, Storage, StoreError, StoreRequest, Ticket};
use crate::wire::{self, Target};

/// The state of one connection as the engine sees it.
pub(crate) struct ConnState<S> {
    pub(crate) session: S,
    pub(crate) outbox: Arc<Outbox>,
    /// Per collection index: the models the client holds and which of their attributes.
    pub(crate) held: Vec<Held>,
    /// Per collection index: the channels the client subscribed to.
    pub(crate) channels: Vec<HashSet<String>>,
    /// Whether the client got its first snapshot; until then fan-outs skip it.
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

pub(crate) struct Engine<S> {
    pub(crate) colls: Vec<Box<dyn CollState<S>>>,
    pub(crate) conns: Conns<S>,
    pub(crate) next_oid: u64,
    pub(crate) storage: Storage,
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
    /// A one-shot read of one model, answered with a `reply`.
    Read {
        oid: u64,
    },
    /// Subscribe to (or, with `on == false`, leave) a channel of the collection.
    Subscribe {
        channel: &'a str,
        on: bool,
    },
}

/// A server-side change announced after it happened outside the engine (Backbone.IO's
/// `backend.emit`): applied to memory and fanned out, never sent to the storage.
pub(crate) enum Announce {
    Created(u64, Box<dyn Any>),
    Updated(u64, Box<dyn Any>),
    Deleted(u64),
}

/// What the engine needs of the rest of itself while one collection handles a request.
pub(crate) struct Env<'a, S> {
    pub(crate) conns: &'a mut Conns<S>,
    pub(crate) storage: &'a Storage,
    pub(crate) next_oid: &'a mut u64,
}

/// One collection, with its model type erased so the engine can hold many.
pub(crate) trait CollState<S>: Send + Sync {
    fn name(&self) -> &'static str;
    fn type_id(&self) -> std::any::TypeId;
    /// The `BTreeMap<u64, M>` of models.
    fn models_any(&self) -> &dyn Any;
    /// Whether the storage keeps this collection (`Omni::persist`).
    fn persisted(&self) -> bool;
    /// The `Store<C, S>` itself, for the builder to configure.
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Gives the seed models their OIDs, or replaces them with what the storage holds.
    fn load(&mut self, storage: &Storage, next_oid: &mut u64) -> Result<(), StoreError>;
    /// Writes the JSON array of models `conn` may see and records them as held.
    fn write_snapshot(&self, conn_id: ConnId, conn: &mut ConnState<S>, out: &mut Vec<u8>);
    /// Pushes to `conn` the difference between what it holds and what it may see now.
    fn sync_conn(&self, conn_id: ConnId, conn: &mut ConnState<S>);
    /// Handles a client request; pushes every resulting message, including the answer.
    fn client_request(&mut self, env: Env<'_, S>, conn_id: ConnId, req: u64, request: Request<'_>);
    /// Subscribes a connection to a channel (or unsubscribes it) on behalf of server code, and
    /// pushes the difference. Returns whether anything changed.
    fn server_subscribe(
        &self,
        conn_id: ConnId,
        conn: &mut ConnState<S>,
        channel: &str,
        on: bool,
    ) -> bool;
    /// Inserts a model (a `Box<M>`) and fans it out; returns its OID.
    fn server_insert(&mut self, env: Env<'_, S>, model: Box<dyn Any>) -> Result<u64, StoreError>;
    /// Runs `f` on the model (`&mut M`) with a change set and fans out the changes. `Ok(false)`
    /// if there is no such model.
    fn server_update(
        &mut self,
        env: Env<'_, S>,
        oid: u64,
        f: &mut dyn FnMut(&mut dyn Any, &mut AttrSet),
    ) -> Result<bool, StoreError>;
    /// Removes a model and fans out the removal; returns the `Box<M>`.
    fn server_remove(
        &mut self,
        env: Env<'_, S>,
        oid: u64,
    ) -> Result<Option<Box<dyn Any + Send>>, StoreError>;
    /// Applies a change made outside the engine and fans it out. `false` if it did not apply
    /// (an update or delete of an unknown OID, a model of another type).
    fn announce(&mut self, conns: &mut Conns<S>, next_oid: &mut u64, what: Announce) -> bool;
}

/// How a persisted collection's models are encoded for the storage.
pub(crate) struct Codec<M> {
    pub(crate) encode: fn(&M) -> Result<Vec<u8>, String>,
    pub(crate) decode: fn(&[u8]) -> Result<M, String>,
}

/// The channel a model belongs to, for a collection with channels.
pub(crate) type ChannelFn<M> = fn(&M) -> &str;

/// The typed state of collection `C` for sessions `S`.
pub(crate) struct Store<C: Collection, S> {
    collection: C,
    models: BTreeMap<u64, C::Model>,
    /// Initial models, until `load` gives them OIDs (or the storage replaces them).
    seeds: Vec<C::Model>,
    /// Position in `Engine::colls` and in every `ConnState::held`.
    idx: usize,
    /// The wire name as a JSON string, ready to splice into messages.
    name_json: String,
    pub(crate) codec: Option<Codec<C::Model>>,
    pub(crate) channel: Option<ChannelFn<C::Model>>,
    pub(crate) rules: Rules<S>,
}

impl<C: Collection, S> Store<C, S> {
    pub(crate) fn new(seeded: Seeded<C>, idx: usize) -> Self {
        Store {
            collection: seeded.collection,
            models: BTreeMap::new(),
            seeds: seeded.models,
            idx,
            name_json: serde_json::to_string(C::NAME).unwrap_or_default(),
            codec: None,
            channel: None,
            rules: Rules::new(),
        }
    }

    fn describe(&self, oid: u64) -> String {
        format!("{}/{} {}", C::NAME, C::Model::NAME, oid)
    }

    fn encode(&self, model: &C::Model, oid: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.codec {
            None => Ok(None),
            Some(codec) => (codec.encode)(model).map(Some).map_err(|e| {
                StoreError::failed(format!("cannot encode {}: {e}", self.describe(oid)))
            }),
        }
    }

    /// Runs a storage request for this collection.
    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        storage: &Storage,
        method: Method,
        oid: &mut u64,
        doc: Option<&[u8]>,
        changed: &[&'static str],
        conn: Option<ConnId>,
    ) -> Result<Option<Ticket>, StoreError> {
        let mut req = StoreRequest {
            method,
            collection: C::NAME,
            model: C::Model::NAME,
            oid: *oid,
            doc,
            changed,
            conn,
            persist: self.codec.is_some(),
            pending: None,
        };
        let proposed = *oid;
        storage.run(&mut req)?;
        if method == Method::Create && req.oid != proposed {
            if req.oid < proposed || self.models.contains_key(&req.oid) {
                return Err(StoreError::failed(format!(
                    "the storage assigned oid {} to a new model of `{}`, which is in use or below the next free oid {proposed}",
                    req.oid,
                    C::NAME
                )));
            }
            *oid = req.oid;
        }
        Ok(req.pending.take())
    }

    /// A client's request through the storage: on success the client's queue is held until
    /// the write is durable; the error names the model. Returns the (possibly store-assigned) OID.
    #[allow(clippy::too_many_arguments)]
    fn client_store(
        &self,
        env: &Env<'_, S>,
        method: Method,
        oid: u64,
        doc: Option<&[u8]>,
        changed: &[&'static str],
        conn_id: ConnId,
    ) -> Result<u64, String> {
        let mut key = oid;
        let ticket = self
            .store(env.storage, method, &mut key, doc, changed, Some(conn_id))
            .map_err(|e| match method {
                Method::Create => format!("{}: {e}", C::NAME),
                _ => format!("{}: {e}", self.describe(oid)),
            })?;
        hold(env.conns, conn_id, ticket);
        Ok(key)
    }
}

/// Holds what a client is sent from now on until its write is durable (group commit).
fn hold<S>(conns: &Conns<S>, conn_id: ConnId, ticket: Option<Ticket>) {
    if let (Some(ticket), Some(conn)) = (ticket, conns.get(&conn_id)) {
        Outbox::hold(&conn.outbox, ticket);
    }
}

impl<C: Collection, S> Store<C, S>
where
    C: CollectionPermissions<S>,
    C::Model: Permissions<S>,
    S: Send + Sync + 'static,
{
    /// What `conn` may see of `model`: the `list` rule, its channels, then `can_read`.
    fn view(
        &self,
        model: &C::Model,
        conn: &ConnState<S>,
        conn_id: ConnId,
        oid: u64,
    ) -> Option<AttrSet> {
        if !self.rules.lists(
            C::NAME,
            &Ctx {
                session: &conn.session,
                conn: conn_id,
            },
        ) {
            return None;
        }
        if let Some(channel) = self.channel {
            let ch = guard("channel function", || channel(model))?;
            if !conn.channels[self.idx].contains(ch) {
                return None;
            }
        }
        readable(model, &conn.session, conn_id, oid)
    }

    fn fanout_change(&self, conns: &mut Conns<S>, oid: u64, changed: AttrSet) {
        let Some(model) = self.models.get(&oid) else {
            return;
        };
        let mut cache = ViewCache::default();
        for (id, conn) in conns.iter_mut().filter(|(_, c)| c.ready) {
            let now = self.view(model, conn, *id, oid);
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
    fn fanout_added(&self, conns: &mut Conns<S>, oid: u64, origin: Option<(ConnId, u64, &str)>) {
        let Some(model) = self.models.get(&oid) else {
            return;
        };
        let mut cache = ViewCache::default();
        for (id, conn) in conns.iter_mut().filter(|(_, c)| c.ready) {
            let now = self.view(model, conn, *id, oid);
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

    fn fanout_removed(&self, conns: &mut Conns<S>, oid: u64) {
        let msg = wire::remove(&self.name_json, oid);
        for conn in conns.values_mut() {
            if conn.held[self.idx].remove(&oid).is_some() {
                conn.outbox.push(msg.clone());
            }
        }
    }

    fn reject(
        &self,
        conn_id: ConnId,
        conn: &ConnState<S>,
        req: u64,
        target: Target<'_>,
        reason: &str,
    ) -> Bytes {
        let model = match target {
            Target::Oid(oid) => self
                .models
                .get(&oid)
                .and_then(|m| self.view(m, conn, conn_id, oid).map(|mask| (m, mask))),
            Target::Tmp(_) => None,
        };
        tracing::debug!(collection = C::NAME, conn = %conn_id, reason, "rejected client request");
        wire::reject(&self.name_json, req, target, reason, model)
    }

    /// The model `conn_id` asks about, if it may see it.
    fn visible(&self, conns: &Conns<S>, conn_id: ConnId, oid: u64) -> Result<&C::Model, String> {
        let conn = conns.get(&conn_id).ok_or("connection closed")?;
        self.models
            .get(&oid)
            .filter(|m| self.view(m, conn, conn_id, oid).is_some())
            .ok_or_else(|| format!("collection `{}` has no model with oid {oid}", C::NAME))
    }

    fn rule(
        &self,
        conns: &Conns<S>,
        conn_id: ConnId,
        action: Action,
        oid: Option<u64>,
    ) -> Result<(), String> {
        if !self.rules.restricts(action) {
            return Ok(());
        }
        let conn = conns.get(&conn_id).ok_or("connection closed")?;
        self.rules.check(
            C::NAME,
            action,
            &Ctx {
                session: &conn.session,
                conn: conn_id,
            },
            oid,
        )
    }

    fn client_change(
        &mut self,
        env: Env<'_, S>,
        conn_id: ConnId,
        oid: u64,
        patch: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        let model = self.visible(env.conns, conn_id, oid)?;
        self.rule(env.conns, conn_id, Action::Update, Some(oid))?;
        let conn = &env.conns[&conn_id];
        let changes = C::Model::decode_patch(patch).map_err(|e| format!("{}: {e}", C::NAME))?;
        let ctx = Access {
            session: &conn.session,
            conn: conn_id,
            oid: Oid::<C::Model>::from_raw(oid),
        };
        let mut changed = AttrSet::EMPTY;
        let mut names = Vec::with_capacity(changes.len());
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
            changed.insert(attr.index());
            names.push(attr.name());
        }
        let mut next = model.clone();
        for change in changes {
            next.apply(change);
        }
        let doc = self.encode(&next, oid).map_err(|e| e.to_string())?;
        let mut key = oid;
        let ticket = self
            .store(
                env.storage,
                Method::Update,
                &mut key,
                doc.as_deref(),
                &names,
                Some(conn_id),
            )
            .map_err(|e| format!("{}: {e}", self.describe(oid)))?;
        hold(env.conns, conn_id, ticket);
        self.models.insert(oid, next);
        self.fanout_change(env.conns, oid, changed);
        Ok(())
    }

    fn client_add(
        &mut self,
        env: Env<'_, S>,
        conn_id: ConnId,
        req: u64,
        tmp: &str,
        attrs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        self.rule(env.conns, conn_id, Action::Create, None)?;
        let conn = env.conns.get(&conn_id).ok_or("connection closed")?;
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
        let mut oid = *env.next_oid + 1;
        let doc = self.encode(&model, oid).map_err(|e| e.to_string())?;
        oid = self.client_store(&env, Method::Create, oid, doc.as_deref(), &[], conn_id)?;
        *env.next_oid = (*env.next_oid).max(oid);
        self.models.insert(oid, model);
        self.fanout_added(env.conns, oid, Some((conn_id, req, tmp)));
        Ok(())
    }

    fn client_remove(&mut self, env: Env<'_, S>, conn_id: ConnId, oid: u64) -> Result<(), String> {
        let model = self.visible(env.conns, conn_id, oid)?;
        self.rule(env.conns, conn_id, Action::Destroy, Some(oid))?;
        let conn = &env.conns[&conn_id];
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
        self.client_store(&env, Method::Delete, oid, None, &[], conn_id)?;
        self.models.remove(&oid);
        self.fanout_removed(env.conns, oid);
        Ok(())
    }

    /// A one-shot read: the model's readable attributes as a JSON object.
    fn client_read(&self, env: &Env<'_, S>, conn_id: ConnId, oid: u64) -> Result<Vec<u8>, String> {
        self.rule(env.conns, conn_id, Action::Read, Some(oid))?;
        let conn = env.conns.get(&conn_id).ok_or("connection closed")?;
        let missing = || format!("collection `{}` has no model with oid {oid}", C::NAME);
        let model = self.models.get(&oid).ok_or_else(missing)?;
        let mask = readable(model, &conn.session, conn_id, oid).ok_or_else(missing)?;
        self.client_store(env, Method::Read, oid, None, &[], conn_id)?;
        let mut out = Vec::new();
        crate::model::write_object(model, Some(oid), mask, &mut out);
        Ok(out)
    }

    /// Subscribes `conn` to `channel` (or, with `on == false`, unsubscribes it) and pushes the
    /// difference. A client is asked `can_subscribe` first (`ask`); server code is not.
    fn subscribe(
        &self,
        conn_id: ConnId,
        conn: &mut ConnState<S>,
        channel: &str,
        on: bool,
        ask: bool,
    ) -> Result<bool, String> {
        if self.channel.is_none() {
            return Err(format!(
                "collection `{}` has no channels (the server registers them with `Omni::channels`)",
                C::NAME
            ));
        }
        if on && ask {
            let ctx = Ctx {
                session: &conn.session,
                conn: conn_id,
            };
            let allowed = guard("CollectionPermissions::can_subscribe", || {
                self.collection.can_subscribe(&ctx, channel)
            })
            .unwrap_or(false);
            if !allowed {
                return Err(format!(
                    "permission denied: connection {conn_id} may not subscribe to channel `{channel}` of `{}`",
                    C::NAME
                ));
            }
        }
        let changed = if on {
            conn.channels[self.idx].insert(channel.to_owned())
        } else {
            conn.channels[self.idx].remove(channel)
        };
        if changed && conn.ready {
            self.sync_conn(conn_id, conn);
        }
        Ok(changed)
    }
}

impl<C, S> CollState<S> for Store<C, S>
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

    fn persisted(&self) -> bool {
        self.codec.is_some()
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn load(&mut self, storage: &Storage, next_oid: &mut u64) -> Result<(), StoreError> {
        let seeds = std::mem::take(&mut self.seeds);
        let stored = match &self.codec {
            Some(_) => storage.backend.load(C::NAME)?,
            None => None,
        };
        match (stored, &self.codec) {
            (Some(rows), Some(codec)) => {
                for (oid, doc) in rows {
                    let model = (codec.decode)(&doc).map_err(|e| {
                        StoreError::failed(format!(
                            "{} in the {} store cannot be decoded: {e}",
                            self.describe(oid),
                            storage.backend.name()
                        ))
                    })?;
                    *next_oid = (*next_oid).max(oid);
                    self.models.insert(oid, model);
                }
                tracing::info!(
                    collection = C::NAME,
                    models = self.models.len(),
                    backend = storage.backend.name(),
                    "loaded"
                );
            }
            _ => {
                let mut rows = Vec::new();
                for model in seeds {
                    *next_oid += 1;
                    if let Some(doc) = self.encode(&model, *next_oid)? {
                        rows.push((*next_oid, doc));
                    }
                    self.models.insert(*next_oid, model);
                }
                if self.codec.is_some() {
                    storage.backend.seed(C::NAME, &rows)?;
                }
            }
        }
        Ok(())
    }

    fn write_snapshot(&self, conn_id: ConnId, conn: &mut ConnState<S>, out: &mut Vec<u8>) {
        conn.held[self.idx].clear();
        out.push(b'[');
        let mut first = true;
        for (&oid, model) in &self.models {
            if let Some(mask) = self.view(model, conn, conn_id, oid) {
                if !first {
                    out.push(b',');
                }
                first = false;
                crate::model::write_object(model, Some(oid), mask, out);
                conn.held[self.idx].insert(oid, mask);
            }
        }
        out.push(b']');
    }

    fn sync_conn(&self, conn_id: ConnId, conn: &mut ConnState<S>) {
        for (&oid, model) in &self.models {
            let now = self.view(model, conn, conn_id, oid);
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

    fn client_request(&mut self, env: Env<'_, S>, conn_id: ConnId, req: u64, request: Request<'_>) {
        let (result, target) = match request {
            Request::Change { oid, set } => (
                self.client_change(
                    Env {
                        conns: &mut *env.conns,
                        ..env
                    },
                    conn_id,
                    oid,
                    set,
                ),
                Target::Oid(oid),
            ),
            Request::Add { tmp, attrs } => (
                self.client_add(
                    Env {
                        conns: &mut *env.conns,
                        ..env
                    },
                    conn_id,
                    req,
                    tmp,
                    attrs,
                ),
                Target::Tmp(tmp),
            ),
            Request::Remove { oid } => (
                self.client_remove(
                    Env {
                        conns: &mut *env.conns,
                        ..env
                    },
                    conn_id,
                    oid,
                ),
                Target::Oid(oid),
            ),
            Request::Read { oid } => {
                let answer = match self.client_read(&env, conn_id, oid) {
                    Ok(json) => wire::reply_ok(req, &json),
                    Err(e) => wire::reply_err(req, &e),
                };
                if let Some(conn) = env.conns.get(&conn_id) {
                    conn.outbox.push_control(answer);
                }
                return;
            }
            Request::Subscribe { channel, on } => {
                let Some(conn) = env.conns.get_mut(&conn_id) else {
                    return;
                };
                let answer = match self.subscribe(conn_id, conn, channel, on, true) {
                    Ok(_) => wire::ack(req),
                    Err(e) => wire::error(Some(req), &e),
                };
                conn.outbox.push_control(answer);
                return;
            }
        };
        let Some(conn) = env.conns.get(&conn_id) else {
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

    fn server_subscribe(
        &self,
        conn_id: ConnId,
        conn: &mut ConnState<S>,
        channel: &str,
        on: bool,
    ) -> bool {
        self.subscribe(conn_id, conn, channel, on, false)
            .unwrap_or(false)
    }

    fn server_insert(&mut self, env: Env<'_, S>, model: Box<dyn Any>) -> Result<u64, StoreError> {
        let Ok(model) = model.downcast::<C::Model>() else {
            return Err(StoreError::failed(format!("not a model of `{}`", C::NAME)));
        };
        let mut oid = *env.next_oid + 1;
        let doc = self.encode(&model, oid)?;
        self.store(
            env.storage,
            Method::Create,
            &mut oid,
            doc.as_deref(),
            &[],
            None,
        )?;
        *env.next_oid = (*env.next_oid).max(oid);
        self.models.insert(oid, *model);
        self.fanout_added(env.conns, oid, None);
        Ok(oid)
    }

    fn server_update(
        &mut self,
        env: Env<'_, S>,
        oid: u64,
        f: &mut dyn FnMut(&mut dyn Any, &mut AttrSet),
    ) -> Result<bool, StoreError> {
        // Only a storage that could refuse needs the old value back (and the request at all).
        let stored = self.codec.is_some() || env.storage.custom;
        let Some(model) = self.models.get_mut(&oid) else {
            return Ok(false);
        };
        let backup = stored.then(|| model.clone());
        let mut changed = AttrSet::EMPTY;
        f(model, &mut changed);
        if changed.is_empty() {
            return Ok(true);
        }
        if let Some(backup) = backup {
            let names: Vec<&'static str> =
                changed.iter().map(|i| C::Model::ATTRS[i].name()).collect();
            let stored = self
                .models
                .get(&oid)
                .map(|m| self.encode(m, oid))
                .transpose()
                .and_then(|doc| {
                    let mut key = oid;
                    self.store(
                        env.storage,
                        Method::Update,
                        &mut key,
                        doc.flatten().as_deref(),
                        &names,
                        None,
                    )
                    .map(drop)
                });
            if let Err(e) = stored {
                self.models.insert(oid, backup);
                return Err(e);
            }
        }
        self.fanout_change(env.conns, oid, changed);
        Ok(true)
    }

    fn server_remove(
        &mut self,
        env: Env<'_, S>,
        oid: u64,
    ) -> Result<Option<Box<dyn Any + Send>>, StoreError> {
        if !self.models.contains_key(&oid) {
            return Ok(None);
        }
        let mut key = oid;
        self.store(env.storage, Method::Delete, &mut key, None, &[], None)?;
        let model = self.models.remove(&oid);
        self.fanout_removed(env.conns, oid);
        Ok(model.map(|m| Box::new(m) as Box<dyn Any + Send>))
    }

    fn announce(&mut self, conns: &mut Conns<S>, next_oid: &mut u64, what: Announce) -> bool {
        match what {
            Announce::Created(oid, model) => {
                let Ok(model) = model.downcast::<C::Model>() else {
                    return false;
                };
                if self.models.contains_key(&oid) {
                    return false;
                }
                *next_oid = (*next_oid).max(oid);
                self.models.insert(oid, *model);
                self.fanout_added(conns, oid, None);
                true
            }
            Announce::Updated(oid, model) => {
                let Ok(model) = model.downcast::<C::Model>() else {
                    return false;
                };
                let Some(old) = self.models.get(&oid) else {
                    return false;
                };
                // Only the attributes whose encoding changed go out.
                let mut changed = AttrSet::EMPTY;
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for (i, attr) in C::Model::ATTRS.iter().enumerate() {
                    a.clear();
                    b.clear();
                    old.write_attr(*attr, &mut a);
                    model.write_attr(*attr, &mut b);
                    if a != b {
                        changed.insert(i);
                    }
                }
                self.models.insert(oid, *model);
                if !changed.is_empty() {
                    self.fanout_change(conns, oid, changed);
                }
                true
            }
            Announce::Deleted(oid) => {
                if self.models.remove(&oid).is_none() {
                    return false;
                }
                self.fanout_removed(conns, oid);
                true
            }
        }
    }
}

impl<S: Send + Sync + 'static> Engine<S> {
    pub(crate) fn new() -> Self {
        Engine {
            colls: Vec::new(),
            conns: HashMap::new(),
            next_oid: 0,
            storage: Storage::default(),
        }
    }

    pub(crate) fn coll_index(&self, name: &str) -> Option<usize> {
        self.colls.iter().position(|c| c.name() == name)
    }

    /// Splits the engine for a call into one collection.
    pub(crate) fn split(&mut self, idx: usize) -> (&mut dyn CollState<S>, Env<'_, S>) {
        (
            &mut *self.colls[idx],
            Env {
                conns: &mut self.conns,
                storage: &self.storage,
                next_oid: &mut self.next_oid,
            },
        )
    }

    /// Gives every collection its models: the stored ones, or the seeds.
    pub(crate) fn load(&mut self) -> Result<(), StoreError> {
        self.next_oid = self.next_oid.max(self.storage.backend.last_oid()?);
        // Stored collections first, so seeds of the others get OIDs above every stored one.
        let mut order: Vec<usize> = (0..self.colls.len()).collect();
        order.sort_by_key(|&i| !self.colls[i].persisted());
        for i in order {
            self.colls[i].load(&self.storage, &mut self.next_oid)?;
        }
        Ok(())
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
        if let Some(snapshot) = self.snapshot(conn_id)
            && let Some(conn) = self.conns.get(&conn_id)
        {
            conn.outbox.reset_with([snapshot]);
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
        fn decode_change(
            attr: CounterAttr,
            value: &serde_json::Value,
        ) -> Result<CounterChange, DecodeError> {
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
        let store = Store::<Counters, Sess>::new(Seeded::new(Counters, [Counter::default()]), 0);
        engine.colls.push(Box::new(store));
        engine.load().unwrap();
        let mut outboxes = Vec::new();
        for (i, admin) in conns.iter().enumerate() {
            let outbox = Arc::new(Outbox::new(1 << 20));
            let id = ConnId(i as u64 + 1);
            let mut state = ConnState::new(Sess { admin: *admin }, outbox.clone(), 1);
            state.ready = true;
            engine.conns.insert(id, state);
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
        let (coll, env) = engine.split(0);
        coll.server_update(env, 1, &mut |any, changed| {
            let c = any.downcast_mut::<Counter>().unwrap();
            c.value = 5;
            c.secret = 9;
            changed.insert(0);
            changed.insert(1);
        })
        .unwrap();
        let msgs: Vec<Bytes> = outboxes.iter().map(|o| drain(o).pop().unwrap()).collect();
        assert_eq!(
            msgs[0],
            Bytes::from_static(br#"{"t":"change","c":"counters","oid":1,"set":{"value":5}}"#)
        );
        assert_eq!(
            msgs[2],
            Bytes::from_static(
                br#"{"t":"change","c":"counters","oid":1,"set":{"value":5,"secret":9}}"#
            )
        );
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
        let (coll, env) = engine.split(0);
        coll.server_update(env, 1, &mut |any, changed| {
            any.downcast_mut::<Counter>().unwrap().secret = 1;
            changed.insert(1);
        })
        .unwrap();
        assert!(drain(&outboxes[0]).is_empty());
        assert_eq!(drain(&outboxes[1]).len(), 1);
    }

    #[test]
    fn sync_sends_only_newly_readable_or_unreadable_attributes() {
        let (mut engine, outboxes) = engine(&[false]);
        engine.conns.get_mut(&ConnId(1)).unwrap().session.admin = true;
        engine.sync_conn(ConnId(1));
        assert_eq!(
            drain(&outboxes[0]),
            vec![Bytes::from_static(
                br#"{"t":"change","c":"counters","oid":1,"set":{"secret":0}}"#
            )]
        );
        engine.sync_conn(ConnId(1));
        assert!(
            drain(&outboxes[0]).is_empty(),
            "a second sync has nothing to send"
        );
        engine.conns.get_mut(&ConnId(1)).unwrap().session.admin = false;
        engine.sync_conn(ConnId(1));
        assert_eq!(
            drain(&outboxes[0]),
            vec![Bytes::from_static(
                br#"{"t":"change","c":"counters","oid":1,"set":{},"unset":["secret"]}"#
            )]
        );
        assert_eq!(outboxes[0].drain(&mut Vec::new()), Drain::Empty);
    }
}
