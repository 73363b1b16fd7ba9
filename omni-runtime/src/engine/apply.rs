//! [`CollState`] for a typed [`Store`]: loading, snapshots, permission re-checks,
//! subscriptions and queries, validating writes, and applying durable commits (through
//! [`super::commits`]).

use std::any::Any;

use bytes::Bytes;

use crate::collection::{CollectionPermissions, Ctx};
use crate::hooks::guard;
use crate::ids::ConnId;
use crate::model::{AttrSet, Model, Permissions};
use crate::protocol::decode::CollRequest;
use crate::protocol::encode::{self as wire, Target};
use crate::storage::{Backend, Method, StoreError};

use super::coll::{Announce, Applied, CollState, Cx, ServerWrite};
use super::commit::{Op, Origin, Proposal, Refusal};
use super::observe::Job;
use super::state::{ConnState, Conns, Oids};
use super::store::Store;
use super::view::readable;

impl<C, S> CollState<S> for Store<C, S>
where
    C: CollectionPermissions<S>,
    C::Model: Permissions<S>,
    S: Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        C::NAME
    }

    fn len(&self) -> usize {
        self.models.len()
    }

    fn instrument(&mut self, metrics: &crate::metrics::Metrics) {
        self.delivered = crate::metrics::Delivered::of(metrics, C::NAME);
    }

    fn model_name(&self) -> &'static str {
        C::Model::NAME
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
                let mut skipped = 0;
                for (oid, doc) in rows {
                    // Seen even if skipped: its OID is never handed out again.
                    oids.saw(oid);
                    let decoded = self.migrate(oid, doc).and_then(|doc| (codec.decode)(&doc));
                    let reason = match decoded {
                        Ok(model) => {
                            self.version += 1;
                            self.models.insert(oid, model);
                            continue;
                        }
                        Err(reason) => reason,
                    };
                    if !self.skip_undecodable {
                        return Err(StoreError::failed(format!(
                            "{}/{} {oid} in the {} store cannot be decoded: {reason} (register a migration with `Omni::migrate::<C>`, or let the server start without such records with `Omni::skip_undecodable::<C>`)",
                            C::NAME,
                            C::Model::NAME,
                            backend.name()
                        )));
                    }
                    skipped += 1;
                    tracing::warn!(
                        collection = C::NAME,
                        model = C::Model::NAME,
                        oid,
                        reason,
                        "skipped a stored record that cannot be decoded (it stays in the store, untouched)"
                    );
                }
                tracing::info!(
                    collection = C::NAME,
                    models = self.models.len(),
                    skipped,
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
                    self.version += 1;
                    self.models.insert(oid, model);
                }
                if self.codec.is_some() {
                    backend.seed(C::NAME, &rows)?;
                }
            }
        }
        Ok(())
    }

    fn write_snapshot(
        &mut self,
        conn_id: ConnId,
        conn: &mut ConnState<S>,
        out: &mut Vec<u8>,
    ) -> Vec<Bytes> {
        let windows = if self.live.of_conn(conn_id).is_empty() {
            Vec::new()
        } else {
            self.refresh_queries(conn_id, conn, true)
        };
        conn.held[self.idx].clear();
        let mut shown = Vec::new();
        if self.live.queried_only {
            // Only what its queries show.
            let mut oids: Vec<u64> = (self.live.of_conn(conn_id).iter())
                .flat_map(|k| self.live.queries[k].visible())
                .collect();
            oids.sort_unstable();
            oids.dedup();
            for oid in oids {
                if let Some(model) = self.models.get(&oid)
                    && let Some(mask) = self.view(model, conn, conn_id, oid)
                {
                    conn.held[self.idx].insert(oid, mask);
                    shown.push((oid, model, mask));
                }
            }
        } else {
            for (&oid, model) in &self.models {
                if let Some(mask) = self.view(model, conn, conn_id, oid) {
                    shown.push((oid, model, mask));
                }
            }
            // Every model with the same attributes: held as that, not one by one.
            let held = &mut conn.held[self.idx];
            match shown.first() {
                Some((_, _, mask))
                    if shown.len() == self.models.len()
                        && shown.iter().all(|(_, _, m)| m == mask) =>
                {
                    held.hold_all(*mask);
                }
                _ => {
                    for (oid, _, mask) in &shown {
                        held.insert(*oid, *mask);
                    }
                }
            }
        }
        // Connections that see the same models with the same attributes get the same bytes:
        // the last snapshot's encoding is kept until a commit changes the collection.
        let mut cache = self.snapshot.lock();
        if cache.version == self.version
            && cache.shown.len() == shown.len()
            && cache
                .shown
                .iter()
                .zip(&shown)
                .all(|(a, b)| a.0 == b.0 && a.1 == b.2)
        {
            out.extend_from_slice(&cache.bytes);
            return windows;
        }
        let start = out.len();
        out.push(b'[');
        for (i, (oid, model, mask)) in shown.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            crate::model::write_object(*model, Some(*oid), *mask, out);
        }
        out.push(b']');
        cache.version = self.version;
        cache.shown = shown.iter().map(|(oid, _, mask)| (*oid, *mask)).collect();
        cache.bytes.clear();
        cache.bytes.extend_from_slice(&out[start..]);
        windows
    }

    fn sync_conn(&mut self, conn_id: ConnId, conn: &mut ConnState<S>) -> bool {
        if self.live.queried_only {
            // What it holds follows its queries: evaluate them again, then settle what changed.
            let before: Vec<u64> = conn.held[self.idx].listed().collect();
            let windows = self.refresh_queries(conn_id, conn, false);
            let changed = self.settle_queried(conn_id, conn, before, windows);
            return changed;
        }
        let windows = if self.live.of_conn(conn_id).is_empty() {
            Vec::new()
        } else {
            self.refresh_queries(conn_id, conn, false)
        };
        let mut changed = !windows.is_empty();
        for (&oid, model) in &self.models {
            let now = self.view(model, conn, conn_id, oid);
            let held = conn.held[self.idx].get(oid);
            let delta = super::view::diff(held, now, AttrSet::EMPTY);
            changed |= delta != super::view::Delta::None;
            super::fanout::send(&self.name_json, conn, self.idx, held, oid, model, delta);
        }
        for msg in windows {
            conn.outbox.push(msg);
        }
        changed
    }

    fn set_query(
        &mut self,
        conn_id: ConnId,
        conn: &mut ConnState<S>,
        qid: &str,
        spec: Option<&serde_json::Map<String, serde_json::Value>>,
        limits: super::queries::QueryLimits,
    ) -> Result<(), Refusal> {
        Store::set_query(self, conn_id, conn, qid, spec, limits)
    }

    fn has_queries(&self, conn_id: ConnId) -> bool {
        !self.live.of_conn(conn_id).is_empty()
    }

    fn drop_queries(&mut self, conn_id: ConnId) {
        Store::drop_queries(self, conn_id);
    }

    fn resend(&self, conn_id: ConnId, conn: &mut ConnState<S>, oid: u64) {
        if self.live.queried_only && !conn.held[self.idx].contains(oid) {
            // It holds only what its queries show (a connection with queries resumes with a
            // snapshot), and it did not hold this.
            return;
        }
        let now = self
            .models
            .get(&oid)
            .and_then(|m| self.view(m, conn, conn_id, oid).map(|mask| (m, mask)));
        let msg = match now {
            Some((model, mask)) => {
                conn.held[self.idx].insert(oid, mask);
                wire::add(&self.name_json, oid, model, mask)
            }
            None => {
                let held = &mut conn.held[self.idx];
                if self.models.contains_key(&oid) {
                    held.remove(oid);
                } else {
                    held.forget(oid);
                }
                wire::remove(&self.name_json, oid)
            }
        };
        conn.outbox.push(msg);
    }

    fn subscribe(
        &mut self,
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
            CollRequest::Subscribe { .. } | CollRequest::Query { .. } => {
                unreachable!("subscriptions and queries are not writes")
            }
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
            ServerWrite::Update { oid, f, .. } => self.server_update(cx, oid, f),
            ServerWrite::Merge { oid, base, mine } => self.server_merge(cx, oid, &base, &mine),
            ServerWrite::FindOrInsert { pred, make } => {
                if let Some((oid, pending)) = self.find_head(pred) {
                    return Err(Refusal::Exists { oid, pending });
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
                let creator = client.map(|(c, r)| (c, r, proposal.tmp.as_deref().unwrap_or("")));
                self.commit_insert(conns, seq, oid, &proposal.origin, *model, creator, jobs);
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
                // A staged write was validated on the head; if something else changed the model
                // meanwhile (an announce), what changes is measured against the current value.
                let changed = proposal.gate.is_none().then_some(changed);
                self.commit_replace(conns, seq, oid, &proposal.origin, *model, changed, jobs);
            }
            Op::Delete => {
                removed = self
                    .commit_remove(conns, seq, oid, &proposal.origin, jobs)
                    .map(|old| Box::new(old) as Box<dyn Any + Send>);
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
            c.outbox.push_answer(req, wire::ack(req));
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

    fn forget_pending(&mut self, oid: u64, generation: u64) {
        self.forget(oid, generation);
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
            crate::protocol::encode::json(&data, &mut json);
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

    fn head_doc(&self, oid: u64) -> Option<Bytes> {
        let codec = self.codec.as_ref()?;
        let model = self.head(oid)?;
        (codec.encode)(model).ok().map(Bytes::from)
    }

    fn follow(
        &mut self,
        conns: &mut Conns<S>,
        seq: u64,
        oid: u64,
        doc: Option<&[u8]>,
    ) -> Result<bool, String> {
        let origin = Origin::Server;
        let mut jobs = Vec::new(); // observers run on the node that made the write
        let Some(doc) = doc else {
            return Ok(self
                .commit_remove(conns, seq, oid, &origin, &mut jobs)
                .is_some());
        };
        let codec = self
            .codec
            .as_ref()
            .ok_or("the collection is not persisted")?;
        let model = (codec.decode)(doc)?;
        if self.models.contains_key(&oid) {
            Ok(self.commit_replace(conns, seq, oid, &origin, model, None, &mut jobs))
        } else {
            self.commit_insert(conns, seq, oid, &origin, model, None, &mut jobs);
            Ok(true)
        }
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
                if self.models.contains_key(&oid) || self.is_pending(oid) {
                    return false;
                }
                oids.saw(oid);
                self.commit_insert(conns, seq, oid, &origin, *model, None, jobs);
                true
            }
            Announce::Updated(oid, model) => match model.downcast::<C::Model>() {
                // Only the attributes whose encoding changed go out.
                Ok(model) => self.commit_replace(conns, seq, oid, &origin, *model, None, jobs),
                Err(_) => false,
            },
            Announce::Deleted(oid) => self.commit_remove(conns, seq, oid, &origin, jobs).is_some(),
        }
    }
}
