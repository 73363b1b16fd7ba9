//! One collection's typed state: its models, the writes still on their way through the
//! storage, and how a write is validated and then applied.
//!
//! Validation runs at the origin, under the engine's lock, against the collection's *head*: the
//! applied models with every accepted-but-not-yet-durable write on top ([`Pending`]). It turns
//! a request into a [`Proposal`] (the whole new model, the attributes that really changed, the
//! storage request). Applying a proposal, once the storage made it durable, replaces the model
//! and fans the change out ([`super::fanout`]).

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;

use crate::collection::{Collection, CollectionPermissions, Ctx, Seeded};
use crate::ids::ConnId;
use crate::model::{Access, AttrSet, Attribute, Model, Oid, Permissions};
use crate::protocol::decode::CollRequest;
use crate::protocol::encode::{self as wire, Target};
use crate::rules::{Action, Rules};
use crate::storage::{Backend, Method, StoreError, StoreRequest};

use super::commit::{Gate, Op, Origin, Proposal, Refusal};
use super::observe::{Job, ObserverFn, jobs_for};
use super::state::{ConnState, Conns, Oids};
use super::view::readable;
use crate::hooks::guard;

/// What validation needs of the rest of the engine.
pub(crate) struct Cx<'a, S> {
    pub(crate) conns: &'a Conns<S>,
    pub(crate) oids: &'a mut Oids,
    pub(crate) backend: &'a dyn Backend,
    /// Whether the write goes through the storage before it is applied (then it is recorded as
    /// pending, so the next write to the model is validated on top of it).
    pub(crate) staged: bool,
}

/// A write from server code, with the model type erased.
pub(crate) enum ServerWrite<'a> {
    Insert(Box<dyn Any + Send>),
    Update {
        oid: u64,
        f: &'a mut dyn FnMut(&mut dyn Any, &mut AttrSet),
    },
    Remove {
        oid: u64,
    },
    /// Inserts `make()` unless a model (applied or on its way) matches `pred`.
    FindOrInsert {
        pred: &'a mut dyn FnMut(&dyn Any) -> bool,
        make: &'a mut dyn FnMut() -> Box<dyn Any + Send>,
    },
}

/// A change made outside the engine and announced (Backbone.IO's `backend.emit`): applied and
/// fanned out at once, never sent to the storage.
pub(crate) enum Announce {
    Created(u64, Box<dyn Any>),
    Updated(u64, Box<dyn Any>),
    Deleted(u64),
}

/// What applying a proposal gives back to its origin.
pub(crate) struct Applied {
    pub(crate) oid: u64,
    /// For a find-or-insert: the model existed, nothing was inserted.
    pub(crate) existing: bool,
    /// For a delete: the removed model (a `Box<M>`).
    pub(crate) removed: Option<Box<dyn Any + Send>>,
}

/// One collection, with its model type erased so the engine can hold many.
pub(crate) trait CollState<S>: Send + Sync {
    fn name(&self) -> &'static str;
    fn type_id(&self) -> std::any::TypeId;
    /// The `BTreeMap<u64, M>` of applied models.
    fn models_any(&self) -> &dyn Any;
    /// Whether the storage keeps this collection (`Omni::persist`).
    fn persisted(&self) -> bool;
    /// The `Store<C, S>` itself, for the builder to configure.
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Gives the seed models their OIDs, or replaces them with what the storage holds.
    fn load(&mut self, backend: &dyn Backend, oids: &mut Oids) -> Result<(), StoreError>;
    /// Writes the JSON array of models `conn` may see and records them as held.
    fn write_snapshot(&self, conn_id: ConnId, conn: &mut ConnState<S>, out: &mut Vec<u8>);
    /// Pushes to `conn` the difference between what it holds and what it may see now.
    fn sync_conn(&self, conn_id: ConnId, conn: &mut ConnState<S>);
    /// Subscribes `conn` to a channel (or unsubscribes it) and pushes the difference. A client
    /// is asked `can_subscribe` first (`ask`); server code is not. `Ok(changed)`.
    fn subscribe(
        &self,
        conn_id: ConnId,
        conn: &mut ConnState<S>,
        channel: &str,
        on: bool,
        ask: bool,
    ) -> Result<bool, Refusal>;
    /// Validates a client's write or read. `Ok(None)`: accepted, nothing to change (answer it).
    fn client_write(
        &mut self,
        cx: Cx<'_, S>,
        conn_id: ConnId,
        req: u64,
        request: &CollRequest,
        options: Option<serde_json::Value>,
    ) -> Result<Option<Proposal>, Refusal>;
    /// Validates a write of server code. `Ok(None)`: nothing to change.
    fn server_write(
        &mut self,
        cx: Cx<'_, S>,
        write: ServerWrite<'_>,
    ) -> Result<Option<Proposal>, Refusal>;
    /// Applies a durable proposal as commit `seq` (under the OID the storage answered), fans it
    /// out, answers its origin, and queues the observers' jobs.
    fn apply(
        &mut self,
        conns: &mut Conns<S>,
        oids: &mut Oids,
        seq: u64,
        proposal: Proposal,
        oid: u64,
        jobs: &mut Vec<Job>,
    ) -> Result<Applied, Refusal>;
    /// Forgets a proposal that failed in the storage: the head falls back to what is applied.
    fn abort(&mut self, proposal: &Proposal);
    /// A `reject` for a client request, carrying the model as the client may see it now.
    fn reject(
        &self,
        conn_id: ConnId,
        conn: &ConnState<S>,
        req: u64,
        target: Target<'_>,
        reason: &str,
    ) -> Bytes;
    /// The answer to a client's one-shot read: the storage's data, or the model's readable
    /// attributes.
    fn read_reply(
        &self,
        conn_id: ConnId,
        conn: &ConnState<S>,
        req: u64,
        oid: u64,
        data: Option<serde_json::Value>,
    ) -> Bytes;
    /// Applies a change made outside the engine as commit `seq` and fans it out. `false` if it
    /// did not apply (an update or delete of an unknown OID, a model of another type).
    fn announce(
        &mut self,
        conns: &mut Conns<S>,
        oids: &mut Oids,
        seq: u64,
        what: Announce,
        jobs: &mut Vec<Job>,
    ) -> bool;
}

/// How a persisted collection's models are encoded for the storage.
pub(crate) struct Codec<M> {
    pub(crate) encode: fn(&M) -> Result<Vec<u8>, String>,
    pub(crate) decode: fn(&[u8]) -> Result<M, String>,
}

/// The channel a model belongs to, for a collection with channels.
pub(crate) type ChannelFn<M> = fn(&M) -> &str;

/// The writes to one model accepted but not yet applied.
struct Pending<M> {
    /// The model with all of them applied; `None` once one of them deletes it.
    head: Option<M>,
    /// How many are still on their way.
    writes: usize,
    /// The last one's gate: the next write goes to the storage after it.
    tail: Arc<Gate>,
    generation: u64,
}

/// The typed state of collection `C` for sessions `S`.
pub(crate) struct Store<C: Collection, S> {
    pub(super) collection: C,
    pub(super) models: BTreeMap<u64, C::Model>,
    pending: HashMap<u64, Pending<C::Model>>,
    generation: u64,
    /// Initial models, until `load` gives them OIDs (or the storage replaces them).
    seeds: Vec<C::Model>,
    /// Position in `State::colls` and in every `ConnState::held`.
    pub(super) idx: usize,
    /// The wire name as a JSON string, ready to splice into messages.
    pub(super) name_json: String,
    pub(crate) codec: Option<Codec<C::Model>>,
    pub(crate) channel: Option<ChannelFn<C::Model>>,
    pub(crate) rules: Rules<S>,
    pub(crate) observers: Vec<ObserverFn<C::Model>>,
}

impl<C: Collection, S> Store<C, S> {
    pub(crate) fn new(seeded: Seeded<C>, idx: usize) -> Self {
        Store {
            collection: seeded.collection,
            models: BTreeMap::new(),
            pending: HashMap::new(),
            generation: 0,
            seeds: seeded.models,
            idx,
            name_json: serde_json::to_string(C::NAME).unwrap_or_default(),
            codec: None,
            channel: None,
            rules: Rules::new(),
            observers: Vec::new(),
        }
    }

    /// The model as the next write must see it: applied, with the pending writes on top.
    fn head(&self, oid: u64) -> Option<&C::Model> {
        match self.pending.get(&oid) {
            Some(p) => p.head.as_ref(),
            None => self.models.get(&oid),
        }
    }

    fn storage_error(&self, oid: Option<u64>, error: StoreError) -> Refusal {
        Refusal::Storage {
            coll: C::NAME,
            model: C::Model::NAME,
            oid,
            error,
        }
    }

    fn encode(&self, model: &C::Model, oid: u64) -> Result<Option<Bytes>, Refusal> {
        match &self.codec {
            None => Ok(None),
            Some(codec) => (codec.encode)(model)
                .map(|v| Some(Bytes::from(v)))
                .map_err(|e| {
                    self.storage_error(
                        Some(oid),
                        StoreError::failed(format!(
                            "cannot encode {}/{} {oid}: {e}",
                            C::NAME,
                            C::Model::NAME
                        )),
                    )
                }),
        }
    }

    fn request(
        &self,
        method: Method,
        oid: u64,
        doc: Option<Bytes>,
        changed: AttrSet,
    ) -> StoreRequest {
        StoreRequest {
            method,
            collection: C::NAME,
            model: C::Model::NAME,
            oid,
            doc,
            changed: changed.iter().map(|i| C::Model::ATTRS[i].name()).collect(),
            conn: None,
            persist: self.codec.is_some(),
            options: None,
        }
    }

    /// Turns a validated write into a proposal, recording it as pending when it is staged.
    fn propose(
        &mut self,
        staged: bool,
        oid: u64,
        op: Op,
        head: Option<Option<C::Model>>,
        request: StoreRequest,
    ) -> Proposal {
        let mut proposal = Proposal {
            coll: self.idx,
            oid,
            op,
            origin: Origin::Server,
            tmp: None,
            request,
            after: None,
            gate: None,
            generation: 0,
        };
        if let (true, Some(head)) = (staged, head) {
            let gate = Arc::new(Gate::default());
            proposal.gate = Some(gate.clone());
            match self.pending.get_mut(&oid) {
                Some(p) => {
                    p.head = head;
                    p.writes += 1;
                    proposal.after = Some(std::mem::replace(&mut p.tail, gate));
                    proposal.generation = p.generation;
                }
                None => {
                    self.generation += 1;
                    proposal.generation = self.generation;
                    self.pending.insert(
                        oid,
                        Pending {
                            head,
                            writes: 1,
                            tail: gate,
                            generation: self.generation,
                        },
                    );
                }
            }
        }
        proposal
    }

    /// One write of the pending entry is through.
    fn settle(&mut self, proposal: &Proposal, ok: bool) {
        if proposal.gate.is_none() {
            return;
        }
        if let Some(p) = self.pending.get_mut(&proposal.oid)
            && p.generation == proposal.generation
        {
            p.writes -= 1;
            // A failure voids every write made on top of it: they fail behind it (their gate
            // waits on this one), and the next write starts again from the applied model.
            if p.writes == 0 || !ok {
                self.pending.remove(&proposal.oid);
            }
        }
    }
}

/// The attributes whose encoding differs between two values of a model, among `touched`.
fn really_changed<M: Model>(old: &M, new: &M, touched: AttrSet) -> AttrSet {
    let mut changed = AttrSet::EMPTY;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in touched.iter() {
        let attr = M::ATTRS[i];
        a.clear();
        b.clear();
        old.write_attr(attr, &mut a);
        new.write_attr(attr, &mut b);
        if a != b {
            changed.insert(i);
        }
    }
    changed
}

impl<C: Collection, S> Store<C, S>
where
    C: CollectionPermissions<S>,
    C::Model: Permissions<S>,
    S: Send + Sync + 'static,
{
    /// What `conn` may see of `model`: the `list` rule, its channels, then `can_read`.
    pub(super) fn view(
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

    /// The model `conn_id` asks to write, if it may see it (as of the head).
    fn visible<'a>(
        &'a self,
        conn: &ConnState<S>,
        conn_id: ConnId,
        oid: u64,
    ) -> Result<&'a C::Model, Refusal> {
        self.head(oid)
            .filter(|m| self.view(m, conn, conn_id, oid).is_some())
            .ok_or(Refusal::NoSuchModel { coll: C::NAME, oid })
    }

    fn rule(
        &self,
        conn: &ConnState<S>,
        conn_id: ConnId,
        action: Action,
        oid: Option<u64>,
    ) -> Result<(), Refusal> {
        if !self.rules.restricts(action) {
            return Ok(());
        }
        let ctx = Ctx {
            session: &conn.session,
            conn: conn_id,
        };
        self.rules
            .check(C::NAME, action, &ctx, oid)
            .map_err(Refusal::Rule)
    }

    fn client_change(
        &mut self,
        cx: Cx<'_, S>,
        conn_id: ConnId,
        oid: u64,
        patch: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<Proposal>, Refusal> {
        let conn = cx.conns.get(&conn_id).ok_or(Refusal::ConnectionClosed)?;
        let model = self.visible(conn, conn_id, oid)?;
        self.rule(conn, conn_id, Action::Update, Some(oid))?;
        let changes = C::Model::decode_patch(patch).map_err(|error| Refusal::Decode {
            coll: C::NAME,
            error,
        })?;
        let ctx = Access {
            session: &conn.session,
            conn: conn_id,
            oid: Oid::<C::Model>::from_raw(oid),
        };
        let mut touched = AttrSet::EMPTY;
        for change in &changes {
            let attr = C::Model::change_attr(change);
            if attr.is_readonly() {
                return Err(Refusal::ReadOnly {
                    coll: C::NAME,
                    model: C::Model::NAME,
                    oid: Some(oid),
                    attr: attr.name(),
                });
            }
            let allowed =
                guard("Permissions::can_write", || model.can_write(&ctx, change)).unwrap_or(false);
            if !allowed {
                return Err(Refusal::MayNotWrite {
                    conn: conn_id,
                    coll: C::NAME,
                    model: C::Model::NAME,
                    oid,
                    attr: attr.name(),
                });
            }
            touched.insert(attr.index());
        }
        let mut next = model.clone();
        for change in changes {
            next.apply(change);
        }
        let changed = really_changed(model, &next, touched);
        if changed.is_empty() {
            return Ok(None); // Backbone's `set` of the value it has: nothing to send.
        }
        let doc = self.encode(&next, oid)?;
        let request = self.request(Method::Update, oid, doc, changed);
        let head = cx.staged.then(|| Some(next.clone()));
        Ok(Some(self.propose(
            cx.staged,
            oid,
            Op::Update {
                model: Box::new(next),
                changed,
            },
            head,
            request,
        )))
    }

    fn client_add(
        &mut self,
        cx: Cx<'_, S>,
        conn_id: ConnId,
        attrs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<Proposal>, Refusal> {
        let conn = cx.conns.get(&conn_id).ok_or(Refusal::ConnectionClosed)?;
        self.rule(conn, conn_id, Action::Create, None)?;
        let changes = C::Model::decode_patch(attrs).map_err(|error| Refusal::Decode {
            coll: C::NAME,
            error,
        })?;
        let mut model = C::Model::default();
        for change in changes {
            let attr = C::Model::change_attr(&change);
            if attr.is_readonly() {
                return Err(Refusal::ReadOnly {
                    coll: C::NAME,
                    model: C::Model::NAME,
                    oid: None,
                    attr: attr.name(),
                });
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
            return Err(Refusal::MayNotCreate {
                conn: conn_id,
                coll: C::NAME,
            });
        }
        guard("CollectionPermissions::on_create", || {
            self.collection.on_create(&ctx, &mut model)
        })
        .ok_or(Refusal::CreateHookFailed { coll: C::NAME })?;
        self.create(cx, Box::new(model)).map(Some)
    }

    fn create(&mut self, cx: Cx<'_, S>, model: Box<dyn Any + Send>) -> Result<Proposal, Refusal> {
        let oid = cx.oids.next(cx.backend);
        let Some(typed) = model.downcast_ref::<C::Model>() else {
            return Err(self.storage_error(
                None,
                StoreError::failed(format!("not a model of `{}`", C::NAME)),
            ));
        };
        let doc = self.encode(typed, oid)?;
        let request = self.request(Method::Create, oid, doc, AttrSet::EMPTY);
        let head = cx.staged.then(|| Some(typed.clone()));
        Ok(self.propose(cx.staged, oid, Op::Create(model), head, request))
    }

    fn client_remove(
        &mut self,
        cx: Cx<'_, S>,
        conn_id: ConnId,
        oid: u64,
    ) -> Result<Option<Proposal>, Refusal> {
        let conn = cx.conns.get(&conn_id).ok_or(Refusal::ConnectionClosed)?;
        let model = self.visible(conn, conn_id, oid)?;
        self.rule(conn, conn_id, Action::Destroy, Some(oid))?;
        let ctx = Ctx {
            session: &conn.session,
            conn: conn_id,
        };
        let allowed = guard("CollectionPermissions::can_destroy", || {
            self.collection.can_destroy(&ctx, model)
        })
        .unwrap_or(false);
        if !allowed {
            return Err(Refusal::MayNotDestroy {
                conn: conn_id,
                coll: C::NAME,
                model: C::Model::NAME,
                oid,
            });
        }
        let request = self.request(Method::Delete, oid, None, AttrSet::EMPTY);
        Ok(Some(self.propose(
            cx.staged,
            oid,
            Op::Delete,
            Some(None),
            request,
        )))
    }

    /// A one-shot read: checked now, answered after the storage saw it.
    fn client_read(
        &mut self,
        cx: Cx<'_, S>,
        conn_id: ConnId,
        oid: u64,
    ) -> Result<Option<Proposal>, Refusal> {
        let conn = cx.conns.get(&conn_id).ok_or(Refusal::ConnectionClosed)?;
        self.rule(conn, conn_id, Action::Read, Some(oid))?;
        let missing = Refusal::NoSuchModel { coll: C::NAME, oid };
        let model = self.models.get(&oid).ok_or(missing.clone())?;
        readable(model, &conn.session, conn_id, oid).ok_or(missing)?;
        let request = self.request(Method::Read, oid, None, AttrSet::EMPTY);
        Ok(Some(self.propose(false, oid, Op::Read, None, request)))
    }

    fn server_update(
        &mut self,
        cx: Cx<'_, S>,
        oid: u64,
        f: &mut dyn FnMut(&mut dyn Any, &mut AttrSet),
    ) -> Result<Option<Proposal>, Refusal> {
        let old = self
            .head(oid)
            .ok_or(Refusal::NoSuchModel { coll: C::NAME, oid })?;
        let mut next = old.clone();
        let mut touched = AttrSet::EMPTY;
        f(&mut next, &mut touched);
        let changed = really_changed(old, &next, touched);
        if changed.is_empty()
            && let Some(codec) = &self.codec
            && (codec.encode)(old).ok() == (codec.encode)(&next).ok()
        {
            // Only setters of values the model already had ran: nothing to store or send.
            // (Without a codec, server-only fields cannot be compared: the new value is
            // applied, and sends nothing.)
            return Ok(None);
        }
        let doc = self.encode(&next, oid)?;
        let request = self.request(Method::Update, oid, doc, changed);
        let head = cx.staged.then(|| Some(next.clone()));
        Ok(Some(self.propose(
            cx.staged,
            oid,
            Op::Update {
                model: Box::new(next),
                changed,
            },
            head,
            request,
        )))
    }

    /// Fans a new model out; its creator (a client) gets `created` instead of `add`.
    fn fanout_added(&self, conns: &mut Conns<S>, oid: u64, origin: Option<(ConnId, u64, &str)>) {
        let Some(model) = self.models.get(&oid) else {
            return;
        };
        let mut cache = super::view::ViewCache::default();
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
                        let delta = super::view::Delta::Add(mask);
                        conn.outbox.push(
                            cache.get(delta, || wire::add(&self.name_json, oid, model, mask)),
                        );
                    }
                }
            }
        }
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

    fn load(&mut self, backend: &dyn Backend, oids: &mut Oids) -> Result<(), StoreError> {
        let seeds = std::mem::take(&mut self.seeds);
        let stored = match &self.codec {
            Some(_) => backend.load(C::NAME)?,
            None => None,
        };
        match (stored, &self.codec) {
            (Some(rows), Some(codec)) => {
                for (oid, doc) in rows {
                    let model = (codec.decode)(&doc).map_err(|e| {
                        StoreError::failed(format!(
                            "{}/{} {oid} in the {} store cannot be decoded: {e}",
                            C::NAME,
                            C::Model::NAME,
                            backend.name()
                        ))
                    })?;
                    oids.saw(oid);
                    self.models.insert(oid, model);
                }
                tracing::info!(
                    collection = C::NAME,
                    models = self.models.len(),
                    backend = backend.name(),
                    "loaded"
                );
            }
            _ => {
                let mut rows = Vec::new();
                for model in seeds {
                    let oid = oids.next(backend);
                    if let Some(codec) = &self.codec {
                        rows.push((oid, (codec.encode)(&model).map_err(StoreError::failed)?));
                    }
                    self.models.insert(oid, model);
                }
                if self.codec.is_some() {
                    backend.seed(C::NAME, &rows)?;
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
            let held = conn.held[self.idx].get(&oid).copied();
            let delta = super::view::diff(held, now, AttrSet::EMPTY);
            super::fanout::send(&self.name_json, conn, self.idx, oid, model, delta, None);
        }
    }

    fn subscribe(
        &self,
        conn_id: ConnId,
        conn: &mut ConnState<S>,
        channel: &str,
        on: bool,
        ask: bool,
    ) -> Result<bool, Refusal> {
        if self.channel.is_none() {
            return Err(Refusal::NoChannels { coll: C::NAME });
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
                return Err(Refusal::MayNotSubscribe {
                    conn: conn_id,
                    coll: C::NAME,
                    channel: channel.to_owned(),
                });
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

    fn client_write(
        &mut self,
        cx: Cx<'_, S>,
        conn_id: ConnId,
        req: u64,
        request: &CollRequest,
        options: Option<serde_json::Value>,
    ) -> Result<Option<Proposal>, Refusal> {
        let proposal = match request {
            CollRequest::Change { oid, set } => self.client_change(cx, conn_id, *oid, set),
            CollRequest::Add { attrs, .. } => self.client_add(cx, conn_id, attrs),
            CollRequest::Remove { oid } => self.client_remove(cx, conn_id, *oid),
            CollRequest::Read { oid } => self.client_read(cx, conn_id, *oid),
            CollRequest::Subscribe { .. } => unreachable!("subscriptions are not writes"),
        }?;
        Ok(proposal.map(|mut p| {
            p.origin = Origin::Client { conn: conn_id, req };
            p.request.conn = Some(conn_id);
            p.request.options = options;
            if let CollRequest::Add { tmp, .. } = request {
                p.tmp = Some(tmp.clone());
            }
            p
        }))
    }

    fn server_write(
        &mut self,
        cx: Cx<'_, S>,
        write: ServerWrite<'_>,
    ) -> Result<Option<Proposal>, Refusal> {
        match write {
            ServerWrite::Insert(model) => self.create(cx, model).map(Some),
            ServerWrite::Update { oid, f } => self.server_update(cx, oid, f),
            ServerWrite::FindOrInsert { pred, make } => {
                let applied = self
                    .models
                    .iter()
                    .filter(|(oid, _)| !self.pending.contains_key(oid))
                    .map(|(oid, m)| (*oid, m));
                let pending = self
                    .pending
                    .iter()
                    .filter_map(|(oid, p)| p.head.as_ref().map(|m| (*oid, m)));
                let mut all: Vec<(u64, &C::Model)> = applied.chain(pending).collect();
                all.sort_by_key(|(oid, _)| *oid);
                if let Some((oid, _)) = all.into_iter().find(|(_, m)| pred(*m)) {
                    return Err(Refusal::Exists { oid });
                }
                self.create(cx, make()).map(Some)
            }
            ServerWrite::Remove { oid } => {
                self.head(oid)
                    .ok_or(Refusal::NoSuchModel { coll: C::NAME, oid })?;
                let request = self.request(Method::Delete, oid, None, AttrSet::EMPTY);
                Ok(Some(self.propose(
                    cx.staged,
                    oid,
                    Op::Delete,
                    Some(None),
                    request,
                )))
            }
        }
    }

    fn apply(
        &mut self,
        conns: &mut Conns<S>,
        oids: &mut Oids,
        seq: u64,
        proposal: Proposal,
        oid: u64,
        jobs: &mut Vec<Job>,
    ) -> Result<Applied, Refusal> {
        self.settle(&proposal, true);
        let client = match &proposal.origin {
            Origin::Client { conn, req } => Some((*conn, *req)),
            Origin::Server => None,
        };
        let mut removed = None;
        match proposal.op {
            Op::Create(model) => {
                let Ok(model) = model.downcast::<C::Model>() else {
                    unreachable!("proposals of `{}` hold its models", C::NAME)
                };
                if oid != proposal.oid && (oid < proposal.oid || self.models.contains_key(&oid)) {
                    return Err(self.storage_error(
                        None,
                        StoreError::failed(format!(
                            "the storage assigned oid {oid} to a new model of `{}`, which is in use or below the oid {} the engine reserved",
                            C::NAME,
                            proposal.oid
                        )),
                    ));
                }
                oids.saw(oid);
                if !self.observers.is_empty() {
                    jobs_for(
                        &self.observers,
                        seq,
                        oid,
                        &proposal.origin,
                        None,
                        Some(&*model),
                        AttrSet::EMPTY,
                        jobs,
                    );
                }
                self.models.insert(oid, *model);
                let origin = client.map(|(c, r)| (c, r, proposal.tmp.as_deref().unwrap_or("")));
                self.fanout_added(conns, oid, origin);
                return Ok(Applied {
                    oid,
                    existing: false,
                    removed,
                });
            }
            Op::Update { model, changed } => {
                let Ok(model) = model.downcast::<C::Model>() else {
                    unreachable!("proposals of `{}` hold its models", C::NAME)
                };
                if let Some(slot) = self.models.get_mut(&oid) {
                    let old = std::mem::replace(slot, *model);
                    if !self.observers.is_empty() {
                        jobs_for(
                            &self.observers,
                            seq,
                            oid,
                            &proposal.origin,
                            Some(&old),
                            self.models.get(&oid),
                            changed,
                            jobs,
                        );
                    }
                    if !changed.is_empty() {
                        super::fanout::changed(self, conns, oid, changed);
                    }
                }
            }
            Op::Delete => {
                if let Some(old) = self.models.remove(&oid) {
                    if !self.observers.is_empty() {
                        jobs_for(
                            &self.observers,
                            seq,
                            oid,
                            &proposal.origin,
                            Some(&old),
                            None,
                            AttrSet::EMPTY,
                            jobs,
                        );
                    }
                    super::fanout::removed(&self.name_json, self.idx, conns, oid);
                    removed = Some(Box::new(old) as Box<dyn Any + Send>);
                }
            }
            Op::Read => {
                // Answered by the engine.
                return Ok(Applied {
                    oid,
                    existing: false,
                    removed,
                });
            }
        }
        if let Some((conn, req)) = client
            && let Some(c) = conns.get(&conn)
        {
            c.outbox.push_control(wire::ack(req));
        }
        Ok(Applied {
            oid,
            existing: false,
            removed,
        })
    }

    fn abort(&mut self, proposal: &Proposal) {
        self.settle(proposal, false);
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

    fn read_reply(
        &self,
        conn_id: ConnId,
        conn: &ConnState<S>,
        req: u64,
        oid: u64,
        data: Option<serde_json::Value>,
    ) -> Bytes {
        if let Some(data) = data {
            let mut json = Vec::new();
            crate::__private::encode(&data, &mut json);
            return wire::reply_ok(req, &json);
        }
        let missing = || {
            wire::reply_err(
                req,
                &Refusal::NoSuchModel { coll: C::NAME, oid }.to_string(),
            )
        };
        let Some(model) = self.models.get(&oid) else {
            return missing();
        };
        let Some(mask) = readable(model, &conn.session, conn_id, oid) else {
            return missing();
        };
        let mut out = Vec::new();
        crate::model::write_object(model, Some(oid), mask, &mut out);
        wire::reply_ok(req, &out)
    }

    fn announce(
        &mut self,
        conns: &mut Conns<S>,
        oids: &mut Oids,
        seq: u64,
        what: Announce,
        jobs: &mut Vec<Job>,
    ) -> bool {
        let origin = Origin::Server;
        match what {
            Announce::Created(oid, model) => {
                let Ok(model) = model.downcast::<C::Model>() else {
                    return false;
                };
                if self.models.contains_key(&oid) {
                    return false;
                }
                oids.saw(oid);
                if !self.observers.is_empty() {
                    jobs_for(
                        &self.observers,
                        seq,
                        oid,
                        &origin,
                        None,
                        Some(&*model),
                        AttrSet::EMPTY,
                        jobs,
                    );
                }
                self.models.insert(oid, *model);
                self.fanout_added(conns, oid, None);
                true
            }
            Announce::Updated(oid, model) => {
                let Ok(model) = model.downcast::<C::Model>() else {
                    return false;
                };
                let Some(slot) = self.models.get_mut(&oid) else {
                    return false;
                };
                // Only the attributes whose encoding changed go out.
                let all = AttrSet::first(C::Model::ATTRS.len());
                let changed = really_changed(slot, &model, all);
                let old = std::mem::replace(slot, *model);
                if !self.observers.is_empty() {
                    jobs_for(
                        &self.observers,
                        seq,
                        oid,
                        &origin,
                        Some(&old),
                        self.models.get(&oid),
                        changed,
                        jobs,
                    );
                }
                if !changed.is_empty() {
                    super::fanout::changed(self, conns, oid, changed);
                }
                true
            }
            Announce::Deleted(oid) => {
                let Some(old) = self.models.remove(&oid) else {
                    return false;
                };
                if !self.observers.is_empty() {
                    jobs_for(
                        &self.observers,
                        seq,
                        oid,
                        &origin,
                        Some(&old),
                        None,
                        AttrSet::EMPTY,
                        jobs,
                    );
                }
                super::fanout::removed(&self.name_json, self.idx, conns, oid);
                true
            }
        }
    }
}
