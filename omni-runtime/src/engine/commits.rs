//! Applying a commit to a collection's models: insert, replace, remove, each followed by its
//! fan-out (to every connection, and to the live queries it can touch) and its observers' jobs.
//! Shared by durable proposals, announces and a cluster's followed entries.

use crate::collection::CollectionPermissions;
use crate::ids::ConnId;
use crate::model::{AttrSet, Model, Permissions};

use super::commit::Origin;
use super::observe::{Job, jobs_for};
use super::state::Conns;
use super::store::{Store, really_changed};

/// Applying commits to the models, shared by durable proposals and announces.
impl<C, S> Store<C, S>
where
    C: CollectionPermissions<S>,
    C::Model: Permissions<S>,
    S: Send + Sync + 'static,
{
    /// A stored record after the collection's migrations (unchanged without any).
    pub(super) fn migrate(&self, oid: u64, doc: Vec<u8>) -> Result<Vec<u8>, String> {
        if self.migrations.is_empty() {
            return Ok(doc);
        }
        let mut value: serde_json::Value =
            serde_json::from_slice(&doc).map_err(|e| format!("not JSON: {e}"))?;
        for migration in &self.migrations {
            crate::hooks::guard("a migration", || migration(oid, &mut value))
                .unwrap_or_else(|| Err("the migration panicked".to_owned()))
                .map_err(|e| format!("migration failed: {e}"))?;
        }
        serde_json::to_vec(&value).map_err(|e| e.to_string())
    }

    /// Adds a model as commit `seq`, queues its observers' jobs and fans it out; its creator (a
    /// client) gets `created` instead of `add`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn commit_insert(
        &mut self,
        conns: &mut Conns<S>,
        seq: u64,
        oid: u64,
        origin: &Origin,
        model: C::Model,
        creator: Option<(ConnId, u64, &str)>,
        jobs: &mut Vec<Job>,
    ) {
        if !self.observers.is_empty() {
            let changed = AttrSet::EMPTY;
            jobs_for(
                &self.observers,
                seq,
                oid,
                origin,
                None,
                Some(&model),
                changed,
                jobs,
            );
        }
        self.version += 1;
        self.models.insert(oid, model);
        let mut answer = None;
        if !self.live.queried_only {
            answer = super::fanout::added(self, conns, oid, creator);
        }
        if self.live.queried_only || !self.live.is_empty() {
            let all = AttrSet::first(C::Model::ATTRS.len());
            self.fan_queries(conns, oid, None, all, creator);
        }
        // The creator's answer follows everything its insert sent it (its windows included).
        if let Some((conn, req, created)) = answer
            && let Some(c) = conns.get(&conn)
        {
            c.outbox.push_answer(req, created);
        }
    }

    /// Replaces a model as commit `seq` and fans out the attributes `changed` (`None`: those
    /// whose value differs from the current one). `false` if there is no such model.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn commit_replace(
        &mut self,
        conns: &mut Conns<S>,
        seq: u64,
        oid: u64,
        origin: &Origin,
        model: C::Model,
        changed: Option<AttrSet>,
        jobs: &mut Vec<Job>,
    ) -> bool {
        let Some(slot) = self.models.get_mut(&oid) else {
            return false;
        };
        self.version += 1;
        let changed = changed
            .unwrap_or_else(|| really_changed(slot, &model, AttrSet::first(C::Model::ATTRS.len())));
        let old = std::mem::replace(slot, model);
        if !self.observers.is_empty() {
            let new = self.models.get(&oid);
            jobs_for(
                &self.observers,
                seq,
                oid,
                origin,
                Some(&old),
                new,
                changed,
                jobs,
            );
        }
        if !changed.is_empty() {
            if !self.live.queried_only {
                super::fanout::changed(self, conns, oid, changed);
            }
            if !self.live.is_empty() {
                self.fan_queries(conns, oid, Some(&old), changed, None);
            }
        }
        true
    }

    /// Removes a model as commit `seq` and fans the removal out; the removed model.
    pub(super) fn commit_remove(
        &mut self,
        conns: &mut Conns<S>,
        seq: u64,
        oid: u64,
        origin: &Origin,
        jobs: &mut Vec<Job>,
    ) -> Option<C::Model> {
        let old = self.models.remove(&oid)?;
        self.version += 1;
        if !self.observers.is_empty() {
            let changed = AttrSet::EMPTY;
            jobs_for(
                &self.observers,
                seq,
                oid,
                origin,
                Some(&old),
                None,
                changed,
                jobs,
            );
        }
        // The windows first: a `window` never names a model its client no longer holds.
        if !self.live.is_empty() {
            self.fan_queries(conns, oid, Some(&old), AttrSet::EMPTY, None);
        }
        if !self.live.queried_only {
            super::fanout::removed(self, conns, oid);
        }
        Some(old)
    }
}
