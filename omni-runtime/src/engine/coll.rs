//! The type-erased face of one collection, as the engine holds it: [`CollState`], and what
//! passes through it.

use std::any::Any;

use bytes::Bytes;

use crate::ids::ConnId;
use crate::model::AttrSet;
use crate::protocol::decode::CollRequest;
use crate::protocol::encode::Target;
use crate::storage::{Backend, StoreError};

use super::commit::{Proposal, Refusal};
use super::observe::Job;
use super::state::{ConnState, Conns, Oids};

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
        /// In a cluster, when another node's write overtakes it: merged field by field
        /// (`true`), or refused with [`Refusal::Conflict`](super::Refusal) so that the caller
        /// runs `f` again on the newer model.
        merge: bool,
    },
    Remove {
        oid: u64,
    },
    /// In a cluster: a server update that another node's write overtook, made again on the
    /// newer model: every top-level field the write changed (`mine` against `base`, both the
    /// stored JSON) takes the write's value, the others keep the newer model's.
    Merge {
        oid: u64,
        base: Bytes,
        mine: Bytes,
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
    /// How many models it holds (applied).
    fn len(&self) -> usize;
    /// Takes its delivery counters from the server's metrics.
    fn instrument(&mut self, metrics: &crate::metrics::Metrics);
    /// The model's Rust type name.
    fn model_name(&self) -> &'static str;
    fn type_id(&self) -> std::any::TypeId;
    /// The `BTreeMap<u64, M>` of applied models.
    fn models_any(&self) -> &dyn Any;
    /// Whether the storage keeps this collection (`Omni::persist`).
    fn persisted(&self) -> bool;
    /// The `Store<C, S>` itself, for the builder to configure.
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Gives the seed models their OIDs, or replaces them with what the storage holds.
    fn load(&mut self, backend: &dyn Backend, oids: &mut Oids) -> Result<(), StoreError>;
    /// Writes the JSON array of models `conn` may see and records them as held; evaluates its
    /// queries again and gives their `window` messages, to follow the snapshot.
    fn write_snapshot(
        &mut self,
        conn_id: ConnId,
        conn: &mut ConnState<S>,
        out: &mut Vec<u8>,
    ) -> Vec<Bytes>;
    /// Re-checks every permission of one connection (and its queries) and pushes the
    /// difference; whether anything was pushed.
    fn sync_conn(&mut self, conn_id: ConnId, conn: &mut ConnState<S>) -> bool;
    /// A client's live query `qid` (`spec`: its `where`, `order`, `limit`), or its end
    /// (`spec: None`): evaluated, and what changed pushed.
    fn set_query(
        &mut self,
        conn_id: ConnId,
        conn: &mut ConnState<S>,
        qid: &str,
        spec: Option<&serde_json::Map<String, serde_json::Value>>,
        limits: super::queries::QueryLimits,
    ) -> Result<(), Refusal>;
    /// Whether a connection has live queries here.
    fn has_queries(&self, conn_id: ConnId) -> bool;
    /// Forgets a connection's live queries.
    fn drop_queries(&mut self, conn_id: ConnId);
    /// Sends a resuming connection model `oid` whole, as it may see it now (or its removal),
    /// and records that it holds that.
    fn resend(&self, conn_id: ConnId, conn: &mut ConnState<S>, oid: u64);
    /// Subscribes `conn` to a channel (or unsubscribes it) and pushes the difference. A client
    /// is asked `can_subscribe` first (`ask`); server code is not. `Ok(changed)`.
    fn subscribe(
        &mut self,
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
    /// Forgets the pending writes of `oid` of this generation (a write that never finished).
    fn forget_pending(&mut self, oid: u64, generation: u64);
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
    /// The stored JSON of the model as the next write sees it (its head), if it exists and the
    /// collection is persisted.
    fn head_doc(&self, oid: u64) -> Option<Bytes>;
    /// In a cluster: applies another node's commit `seq` of model `oid` (its stored JSON, or
    /// `None` for a removal) and fans it out. Observers do not run (they run on the node that
    /// made the write). `Err`: the document cannot be decoded.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    fn follow(
        &mut self,
        conns: &mut Conns<S>,
        seq: u64,
        oid: u64,
        doc: Option<&[u8]>,
    ) -> Result<bool, String>;
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

/// A migration of stored records: rewrites one record's JSON (its OID given) before it is
/// decoded at load.
pub(crate) type MigrateFn =
    std::sync::Arc<dyn Fn(u64, &mut serde_json::Value) -> Result<(), String> + Send + Sync>;

/// The channel a model belongs to, for a collection with channels.
pub(crate) type ChannelFn<M> = fn(&M) -> &str;
