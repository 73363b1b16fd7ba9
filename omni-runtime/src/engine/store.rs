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
use crate::hooks::guard;
use crate::ids::ConnId;
use crate::model::{Access, AttrSet, Attribute, Model, Oid, Permissions};
use crate::rules::{Action, Rules};
use crate::storage::{Method, StoreError, StoreRequest};

use super::coll::{ChannelFn, Codec, Cx};
use super::commit::{Gate, Op, Origin, Proposal, Refusal};
use super::observe::ObserverFn;
use super::state::ConnState;
use super::view::readable;

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
    pub(super) seeds: Vec<C::Model>,
    /// Position in `State::colls` and in every `ConnState::held`.
    pub(super) idx: usize,
    /// The wire name as a JSON string, ready to splice into messages.
    pub(super) name_json: String,
    pub(crate) codec: Option<Codec<C::Model>>,
    pub(crate) channel: Option<ChannelFn<C::Model>>,
    pub(crate) rules: Rules<S>,
    pub(crate) observers: Vec<ObserverFn<C::Model>>,
    /// The fan-out's delivery counters (metrics).
    pub(super) delivered: crate::metrics::Delivered,
    /// Migrations of stored records, applied in order at load.
    pub(crate) migrations: Vec<super::coll::MigrateFn>,
    /// Whether a stored record that cannot be decoded (even after the migrations) is skipped,
    /// with a warning, instead of stopping the server.
    pub(crate) skip_undecodable: bool,
    /// Bumped by every change of `models`.
    pub(super) version: u64,
    /// The last snapshot's encoding, shared by connections with the same view.
    pub(super) snapshot: parking_lot::Mutex<SnapshotCache>,
    /// Its connections' live queries.
    pub(crate) live: super::live::Live<C::Model>,
}

/// The encoding of a collection's last snapshot: valid while `version` is the collection's,
/// for a connection shown the same models with the same attributes.
#[derive(Default)]
pub(super) struct SnapshotCache {
    pub(super) version: u64,
    pub(super) shown: Vec<(u64, AttrSet)>,
    pub(super) bytes: Vec<u8>,
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
            delivered: crate::metrics::Delivered::default(),
            migrations: Vec::new(),
            skip_undecodable: false,
            // 1: an empty collection's snapshot is encoded once before it is cached.
            version: 1,
            snapshot: parking_lot::Mutex::default(),
            live: super::live::Live::default(),
        }
    }

    /// The model as the next write must see it: applied, with the pending writes on top.
    pub(super) fn head(&self, oid: u64) -> Option<&C::Model> {
        match self.pending.get(&oid) {
            Some(p) => p.head.as_ref(),
            None => self.models.get(&oid),
        }
    }

    /// Whether writes to `oid` are on their way (then it is reserved: not for announces).
    pub(super) fn is_pending(&self, oid: u64) -> bool {
        self.pending.contains_key(&oid)
    }

    /// The first model in OID order, applied or on its way, that matches `pred`; with the gate
    /// of the last write on its way, if the match is not applied yet.
    pub(super) fn find_head(
        &self,
        pred: &mut dyn FnMut(&dyn Any) -> bool,
    ) -> Option<(u64, Option<Arc<Gate>>)> {
        let applied = self
            .models
            .iter()
            .filter(|(oid, _)| !self.pending.contains_key(oid))
            .find(|(_, m)| pred(*m))
            .map(|(oid, _)| *oid);
        let pending = self
            .pending
            .iter()
            .filter_map(|(oid, p)| p.head.as_ref().map(|m| (*oid, m, &p.tail)))
            .filter(|(oid, _, _)| applied.is_none_or(|a| *oid < a))
            .filter(|(_, m, _)| pred(*m))
            .min_by_key(|(oid, _, _)| *oid);
        match pending {
            Some((oid, _, tail)) => Some((oid, Some(tail.clone()))),
            None => applied.map(|oid| (oid, None)),
        }
    }

    pub(super) fn storage_error(&self, oid: Option<u64>, error: StoreError) -> Refusal {
        Refusal::Storage {
            coll: C::NAME,
            model: C::Model::NAME,
            oid,
            error,
        }
    }

    pub(super) fn encode(&self, model: &C::Model, oid: u64) -> Result<Option<Bytes>, Refusal> {
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

    /// The stored document, only when a storage will see it (the fast path has none).
    fn doc(&self, staged: bool, model: &C::Model, oid: u64) -> Result<Option<Bytes>, Refusal> {
        if staged {
            self.encode(model, oid)
        } else {
            Ok(None)
        }
    }

    pub(super) fn request(
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
    pub(super) fn propose(
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
            base: 0,
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

    /// Drops the pending entry of `oid` if it is of `generation`.
    pub(super) fn forget(&mut self, oid: u64, generation: u64) {
        if self
            .pending
            .get(&oid)
            .is_some_and(|p| p.generation == generation)
        {
            self.pending.remove(&oid);
        }
    }

    /// One write of the pending entry is through.
    pub(super) fn settle(&mut self, proposal: &Proposal, ok: bool) {
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
pub(super) fn really_changed<M: Model>(old: &M, new: &M, touched: AttrSet) -> AttrSet {
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
    pub(super) fn visible<'a>(
        &'a self,
        conn: &ConnState<S>,
        conn_id: ConnId,
        oid: u64,
    ) -> Result<&'a C::Model, Refusal> {
        self.head(oid)
            .filter(|m| self.view(m, conn, conn_id, oid).is_some())
            .ok_or(Refusal::NoSuchModel { coll: C::NAME, oid })
    }

    pub(super) fn rule(
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

    pub(super) fn client_change(
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
        if changed.is_empty() && !self.pending.contains_key(&oid) {
            // Backbone's `set` of the value it has: nothing to store or send. (With writes on
            // their way it still goes behind them: if they fail, so does this one.)
            return Ok(None);
        }
        self.propose_update(cx.staged, oid, next, changed).map(Some)
    }

    pub(super) fn client_add(
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

    pub(super) fn create(
        &mut self,
        cx: Cx<'_, S>,
        model: Box<dyn Any + Send>,
    ) -> Result<Proposal, Refusal> {
        let oid = cx.oids.next(cx.backend);
        let Some(typed) = model.downcast_ref::<C::Model>() else {
            return Err(self.storage_error(
                None,
                StoreError::failed(format!("not a model of `{}`", C::NAME)),
            ));
        };
        let doc = self.doc(cx.staged, typed, oid)?;
        let request = self.request(Method::Create, oid, doc, AttrSet::EMPTY);
        let head = cx.staged.then(|| Some(typed.clone()));
        Ok(self.propose(cx.staged, oid, Op::Create(model), head, request))
    }

    pub(super) fn client_remove(
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
    pub(super) fn client_read(
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

    pub(super) fn server_update(
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
            && !self.pending.contains_key(&oid)
            && let Some(codec) = &self.codec
            && (codec.encode)(old).ok() == (codec.encode)(&next).ok()
        {
            // Only setters of values the model already had ran: nothing to store or send.
            // (Without a codec, server-only fields cannot be compared: the new value is
            // applied, and sends nothing.)
            return Ok(None);
        }
        self.propose_update(cx.staged, oid, next, changed).map(Some)
    }

    /// A server update overtaken by another node's write, made again on the newer head.
    pub(super) fn server_merge(
        &mut self,
        cx: Cx<'_, S>,
        oid: u64,
        base: &[u8],
        mine: &[u8],
    ) -> Result<Option<Proposal>, Refusal> {
        let old = self
            .head(oid)
            .ok_or(Refusal::NoSuchModel { coll: C::NAME, oid })?;
        let codec = self
            .codec
            .as_ref()
            .ok_or_else(|| self.storage_error(Some(oid), StoreError::failed("not persisted")))?;
        let fail = |e: String| {
            self.storage_error(
                Some(oid),
                StoreError::failed(format!(
                    "cannot merge a write overtaken by another node: {e}"
                )),
            )
        };
        let parse =
            |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).map_err(|e| e.to_string());
        let newer = (codec.encode)(old).map_err(fail)?;
        let merged = match (parse(base), parse(mine), parse(&newer)) {
            (
                Ok(serde_json::Value::Object(base)),
                Ok(serde_json::Value::Object(mine)),
                Ok(serde_json::Value::Object(mut newer)),
            ) => {
                for (key, value) in mine {
                    if base.get(&key) != Some(&value) {
                        newer.insert(key, value);
                    }
                }
                serde_json::Value::Object(newer)
            }
            // Not an object: the write wins whole.
            (_, Ok(mine), _) => mine,
            (_, Err(e), _) => return Err(fail(e)),
        };
        let merged = serde_json::to_vec(&merged).map_err(|e| fail(e.to_string()))?;
        let next = (codec.decode)(&merged).map_err(fail)?;
        let changed = really_changed(old, &next, AttrSet::first(C::Model::ATTRS.len()));
        self.propose_update(cx.staged, oid, next, changed).map(Some)
    }

    /// The proposal of an update to `next`.
    fn propose_update(
        &mut self,
        staged: bool,
        oid: u64,
        next: C::Model,
        changed: AttrSet,
    ) -> Result<Proposal, Refusal> {
        let doc = self.doc(staged, &next, oid)?;
        let request = self.request(Method::Update, oid, doc, changed);
        let head = staged.then(|| Some(next.clone()));
        let op = Op::Update {
            model: Box::new(next),
            changed,
        };
        Ok(self.propose(staged, oid, op, head, request))
    }
}
