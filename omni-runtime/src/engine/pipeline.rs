//! The write pipeline: a client's request or server code's write validated under the lock, run
//! through the storage (or, on a cluster node, the shared log) without it, then applied as a
//! commit and answered. See the module map in [`super`].

use std::sync::Arc;

use bytes::Bytes;

use crate::ids::ConnId;
use crate::protocol::decode::CollRequest;
use crate::protocol::encode::{self as wire, Target};
use crate::storage::StoreReply;

use super::coll::Cx;
use super::commit::{self, Op};
use super::observe::Job;
use super::{
    Announce, Applied, Engine, Locked, Origin, Pending, Proposal, Refusal, ServerWrite, Staged,
    State, replica,
};

impl<S: Send + Sync + 'static> Engine<S> {
    /// Handles one client request on a collection: validated now; on the fast path also applied
    /// and answered at once. A write that must go through the storage comes back as a
    /// [`Staged`], to be finished with [`Engine::finish`]. Every outcome is answered on the
    /// connection's outbox.
    pub(crate) fn client_request(
        &self,
        id: ConnId,
        req: u64,
        coll: &str,
        request: CollRequest,
        options: Option<serde_json::Value>,
    ) -> Option<Staged> {
        let proposal = {
            let mut st = self.lock("a client request");
            let Some(idx) = st.coll_index(coll) else {
                if let Some(c) = st.conns.get(&id) {
                    let reason = Refusal::UnknownCollection(coll.to_owned()).to_string();
                    c.outbox.push_answer(req, wire::error(Some(req), &reason));
                }
                return None;
            };
            let State {
                colls, conns, oids, ..
            } = &mut *st;
            if let CollRequest::Query { qid, spec } = &request {
                let limits = st.query_limits;
                let State { colls, conns, .. } = &mut *st;
                let conn = conns.get_mut(&id)?;
                let answer = match colls[idx].set_query(id, conn, qid, spec.as_ref(), limits) {
                    Ok(()) => wire::ack(req),
                    Err(e) => wire::error(Some(req), &e.to_string()),
                };
                conn.outbox.view_changed();
                conn.outbox.push_answer(req, answer);
                return None;
            }
            if let CollRequest::Subscribe { channel, on } = &request {
                let conn = conns.get_mut(&id)?;
                let answer = match colls[idx].subscribe(id, conn, channel, *on, true) {
                    Ok(_) => wire::ack(req),
                    Err(e) => wire::error(Some(req), &e.to_string()),
                };
                conn.outbox.view_changed();
                conn.outbox.push_answer(req, answer);
                return None;
            }
            let staged = self.core.storage.custom();
            let cx = Cx {
                conns,
                oids,
                backend: self.core.storage.backend(),
                staged,
            };
            match colls[idx].client_write(cx, id, req, &request, options) {
                Err(refusal) => {
                    answer_refusal(&st, idx, id, req, &request, &refusal);
                    return None;
                }
                Ok(None) => {
                    if let Some(c) = st.conns.get(&id) {
                        c.outbox.push_answer(req, wire::ack(req));
                    }
                    return None;
                }
                Ok(Some(p)) if !staged => {
                    let reply = StoreReply::done(&p.request);
                    let seq = st.log.seq + 1;
                    let _ = self.commit(&mut st, seq, p, reply, Some(&request));
                    return None;
                }
                Ok(Some(mut p)) => {
                    Self::note_base(&st, &mut p);
                    p
                }
            }
        };
        Some(Staged { proposal, request })
    }

    /// Finishes a staged client write: storage, then apply and answer. Boxed, so that the fast
    /// path's callers (a connection's task) stay small.
    ///
    /// In a cluster, a write that another node's write to the same model overtook is validated
    /// again on the newer model, up to [`ATTEMPTS`] times; it runs in a task of its own, so that
    /// a connection that ends meanwhile does not abandon a write the log may already hold.
    pub(crate) fn finish(&self, staged: Staged) -> crate::storage::BoxFuture<()> {
        let engine = self.clone();
        if self.core.replica.is_none() {
            return Box::pin(async move {
                let _ = engine.staged(staged.proposal, Some(staged.request)).await;
            });
        }
        let task = tokio::spawn(async move {
            let mut staged = staged;
            for attempt in 1..=ATTEMPTS {
                let (proposal, request) = (staged.proposal, staged.request);
                let Origin::Client { conn, req } = proposal.origin.clone() else {
                    return;
                };
                let (idx, options) = (proposal.coll, proposal.request.options.clone());
                if !matches!(
                    engine.staged(proposal, Some(request.clone())).await,
                    Err(Refusal::Conflict { .. })
                ) {
                    return;
                }
                let st = engine.lock("a write overtaken by another node");
                let coll = st.colls[idx].name();
                if attempt == ATTEMPTS {
                    let refusal = Refusal::Conflict {
                        coll,
                        model: st.colls[idx].model_name(),
                        oid: request.oid().unwrap_or_default(),
                    };
                    answer_refusal(&st, idx, conn, req, &request, &refusal);
                    return;
                }
                drop(st);
                match engine.client_request(conn, req, coll, request, options) {
                    Some(next) => staged = next,
                    None => return, // answered: refused on the newer model, or nothing to do
                }
            }
        });
        Box::pin(async move {
            let _ = task.await;
        })
    }

    /// Validates a write of server code now; the result says when it is applied.
    pub(crate) fn server_write(&self, idx: usize, write: ServerWrite<'_>, what: &str) -> Pending {
        let staged = self.core.storage.custom();
        // Checked before anything is recorded: a staged write runs in a task of its own.
        let runtime = match (staged, tokio::runtime::Handle::try_current()) {
            (true, Err(_)) => panic!(
                "{what} with a custom storage backend or middleware needs a Tokio runtime (it completes in a task)"
            ),
            (_, handle) => handle.ok(),
        };
        let mut base = None;
        let proposal = {
            let mut st = self.lock(what);
            if self.core.replica.is_some()
                && let ServerWrite::Update {
                    oid, merge: true, ..
                } = &write
            {
                // What the write changed, should another node's write overtake it.
                base = st.colls[idx].head_doc(*oid);
            }
            match self.validate_server_write(&mut st, idx, write, staged) {
                Err(Refusal::Exists { oid, pending }) => {
                    let found = Applied {
                        oid,
                        existing: true,
                        removed: None,
                    };
                    let Some(gate) = pending else {
                        return Pending::Done(Ok(found));
                    };
                    // The match is on its way: it counts once it is durable.
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let (coll, model) = (st.colls[idx].name(), st.colls[idx].model_name());
                    let wait = async move {
                        let result = if gate.wait().await {
                            Ok(found)
                        } else {
                            Err(Refusal::EarlierWriteFailed { coll, model, oid })
                        };
                        let _ = tx.send(result);
                    };
                    if let Some(rt) = &runtime {
                        rt.spawn(wait);
                    }
                    return Pending::Waiting(rx);
                }
                Err(refusal) => return Pending::Done(Err(refusal)),
                Ok(None) => {
                    return Pending::Done(Ok(Applied {
                        oid: 0,
                        existing: false,
                        removed: None,
                    }));
                }
                Ok(Some(p)) if !staged => {
                    let reply = StoreReply::done(&p.request);
                    let seq = st.log.seq + 1;
                    return Pending::Done(self.commit(&mut st, seq, p, reply, None));
                }
                Ok(Some(mut p)) => {
                    Self::note_base(&st, &mut p);
                    p
                }
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let engine = self.clone();
        let run = async move {
            let _ = tx.send(engine.staged_server(proposal, base).await);
        };
        if let Some(rt) = runtime {
            rt.spawn(run);
        }
        Pending::Waiting(rx)
    }

    /// Applies a change announced by server code (made outside the engine) as a commit.
    pub(crate) fn announce(&self, idx: usize, what: Announce) -> bool {
        let mut st = self.lock("an announce_* call");
        if self.core.replica.is_some() {
            tracing::error!(
                collection = st.colls[idx].name(),
                "announce_* is not available on a cluster node (a change made outside the engine would reach only this node's clients): write it with insert, update or remove"
            );
            return false;
        }
        let State {
            colls,
            conns,
            oids,
            log,
            ..
        } = &mut *st;
        let mut jobs = Vec::new();
        let oid = match &what {
            Announce::Created(oid, _) | Announce::Updated(oid, _) => *oid,
            Announce::Deleted(oid) => *oid,
        };
        let applied = colls[idx].announce(conns, oids, log.seq + 1, what, &mut jobs);
        if applied {
            log.record(log.seq + 1, idx, oid);
        }
        self.core.observers.push(jobs, || self.weak_world());
        applied
    }

    /// A staged write: waits for the previous write to its model, runs the storage, then
    /// applies (or drops) it and answers its origin.
    async fn staged(
        &self,
        proposal: Proposal,
        request: Option<CollRequest>,
    ) -> Result<Applied, Refusal> {
        let started = std::time::Instant::now();
        let mut unfinished = Unfinished {
            engine: self,
            coll: proposal.coll,
            oid: proposal.oid,
            generation: proposal.generation,
            gate: proposal.gate.clone(),
        };
        let previous_ok = match &proposal.after {
            Some(gate) => gate.wait().await,
            None => true,
        };
        let origin = proposal.origin.clone();
        if !previous_ok && self.core.replica.is_some() {
            // Made on top of a write that failed: validated again on what is applied.
            let mut st = self.lock("a write after a failed one");
            st.colls[proposal.coll].abort(&proposal);
            drop(st);
            unfinished.gate = None;
            if let Some(gate) = &proposal.gate {
                gate.open(false);
            }
            return Err(Refusal::Conflict {
                coll: proposal.request.collection,
                model: proposal.request.model,
                oid: proposal.oid,
            });
        }
        let stored = if previous_ok {
            let (coll, model) = (proposal.request.collection, proposal.request.model);
            let oid =
                (proposal.request.method != crate::storage::Method::Create).then_some(proposal.oid);
            self.core
                .storage
                .run(proposal.request.clone())
                .await
                .map_err(|error| Refusal::Storage {
                    coll,
                    model,
                    oid,
                    error,
                })
        } else {
            Err(Refusal::EarlierWriteFailed {
                coll: proposal.request.collection,
                model: proposal.request.model,
                oid: proposal.oid,
            })
        };
        let gate = proposal.gate.clone();
        let cluster = self
            .core
            .replica
            .as_ref()
            .filter(|_| !matches!(proposal.op, Op::Read));
        let result = match (stored, cluster) {
            (Ok(_), Some(replica)) => {
                // The commit log decides the order; this node's follower applies it.
                let (coll, model, oid) = (
                    proposal.request.collection,
                    proposal.request.model,
                    proposal.oid,
                );
                let trip = self.replicate(replica, proposal, request.clone()).await;
                unfinished.gate = None; // settled by the follower, or aborted
                let result = match trip {
                    replica::Trip::Done(result) => result,
                    replica::Trip::Conflict => Err(Refusal::Conflict { coll, model, oid }),
                };
                if let (
                    Err(refusal @ Refusal::Unavailable { .. }),
                    Some(request),
                    Origin::Client { conn, req },
                ) = (&result, &request, &origin)
                {
                    let st = self.lock("answering a refused write");
                    answer_refusal(&st, unfinished.coll, *conn, *req, request, refusal);
                }
                result
            }
            (stored, _) => {
                let mut st = self.lock("applying a commit");
                match stored {
                    Ok(reply) => {
                        let seq = st.log.seq + 1;
                        self.commit(&mut st, seq, proposal, reply, request.as_ref())
                    }
                    Err(refusal) => {
                        st.colls[proposal.coll].abort(&proposal);
                        if let (Origin::Client { conn, req }, Some(request)) =
                            (&proposal.origin, &request)
                        {
                            answer_refusal(&st, proposal.coll, *conn, *req, request, &refusal);
                        }
                        Err(refusal)
                    }
                }
            }
        };
        unfinished.gate = None; // finished: settled under the lock above
        let metrics = &self.core.metrics;
        if result.is_ok() {
            let took = started.elapsed().as_secs_f64();
            metrics.commit_seconds.observe(took);
        } else {
            metrics.commits_failed.inc();
        }
        if let Some(gate) = gate {
            gate.open(result.is_ok());
        }
        result
    }

    /// A staged write of server code; in a cluster, made again on the newer model when another
    /// node's write overtook it (an update merged field by field, a removal repeated).
    async fn staged_server(
        &self,
        mut proposal: Proposal,
        base: Option<Bytes>,
    ) -> Result<Applied, Refusal> {
        // What the write itself made of the model: every merge starts again from it (not from
        // the previous attempt's merge, which holds older values of the other fields).
        let mine = proposal.request.doc.clone();
        for attempt in 1..=ATTEMPTS {
            let (idx, oid) = (proposal.coll, proposal.oid);
            let (method, mine) = (proposal.request.method, mine.clone());
            let conflict = match self.staged(proposal, None).await {
                Err(conflict @ Refusal::Conflict { .. }) => conflict,
                other => return other,
            };
            tracing::trace!(
                attempt,
                oid,
                merge = base.is_some(),
                "server write overtaken"
            );
            let write = match (method, &base, mine) {
                (crate::storage::Method::Delete, _, _) => ServerWrite::Remove { oid },
                (crate::storage::Method::Update, Some(base), Some(mine)) if attempt < ATTEMPTS => {
                    ServerWrite::Merge {
                        oid,
                        base: base.clone(),
                        mine,
                    }
                }
                _ => return Err(conflict),
            };
            let mut st = self.lock("a server write overtaken by another node");
            match self.validate_server_write(&mut st, idx, write, true) {
                Err(refusal) => return Err(refusal),
                Ok(None) => {
                    tracing::trace!(oid, "merged: nothing to change");
                    return Ok(Applied {
                        oid,
                        existing: false,
                        removed: None,
                    });
                }
                Ok(Some(mut p)) => {
                    Self::note_base(&st, &mut p);
                    proposal = p;
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Validates a write of server code on collection `idx`, under the lock.
    fn validate_server_write(
        &self,
        st: &mut Locked<'_, S>,
        idx: usize,
        write: ServerWrite<'_>,
        staged: bool,
    ) -> Result<Option<Proposal>, Refusal> {
        let State {
            colls, conns, oids, ..
        } = &mut **st;
        let cx = Cx {
            conns,
            oids,
            backend: self.core.storage.backend(),
            staged,
        };
        colls[idx].server_write(cx, write)
    }

    /// Applies a durable proposal as the next commit of the log (or answers a read).
    pub(super) fn commit(
        &self,
        st: &mut Locked<'_, S>,
        seq: u64,
        proposal: Proposal,
        reply: StoreReply,
        request: Option<&CollRequest>,
    ) -> Result<Applied, Refusal> {
        let idx = proposal.coll;
        if let (Op::Read, Origin::Client { conn, req }) = (&proposal.op, &proposal.origin) {
            if let Some(c) = st.conns.get(conn) {
                let msg = st.colls[idx].read_reply(*conn, c, *req, proposal.oid, reply.data);
                c.outbox.push_answer(*req, msg);
            }
            return Ok(Applied {
                oid: proposal.oid,
                existing: false,
                removed: None,
            });
        }
        let origin = proposal.origin.clone();
        let State {
            colls,
            conns,
            oids,
            log,
            ..
        } = &mut **st;
        let mut jobs: Vec<Job> = Vec::new();
        // Only a create may take an id from the storage (a database sequence).
        let oid = match proposal.op {
            Op::Create(_) => reply.oid,
            _ => proposal.oid,
        };
        let result = colls[idx].apply(conns, oids, seq, proposal, oid, &mut jobs);
        match &result {
            Ok(applied) => {
                log.record(seq, idx, applied.oid);
                self.core.metrics.commits.inc();
            }
            Err(refusal) => {
                if let (Origin::Client { conn, req }, Some(request)) = (&origin, request) {
                    answer_refusal(st, idx, *conn, *req, request, refusal);
                }
            }
        }
        self.core.observers.push(jobs, || self.weak_world());
        result
    }
}

/// How many times a write that other nodes' writes keep overtaking is validated again.
const ATTEMPTS: u32 = 32;

/// A staged write on its way. If it is dropped before it finished (a panic while applying, a
/// task dropped at shutdown), it is forgotten and its gate opened as failed, so the writes
/// queued behind it on the same model fail instead of waiting forever.
struct Unfinished<'a, S: Send + Sync + 'static> {
    engine: &'a Engine<S>,
    coll: usize,
    oid: u64,
    generation: u64,
    gate: Option<Arc<commit::Gate>>,
}

impl<S: Send + Sync + 'static> Drop for Unfinished<'_, S> {
    fn drop(&mut self) {
        let Some(gate) = self.gate.take() else {
            return;
        };
        let mut st = self.engine.core.lock("a write that did not finish");
        st.colls[self.coll].forget_pending(self.oid, self.generation);
        drop(st);
        gate.open(false);
    }
}

/// Answers a refused client request: a `reject` carrying the model as the client may see it,
/// or for a read an error `reply`.
fn answer_refusal<S: Send + Sync + 'static>(
    st: &State<S>,
    idx: usize,
    id: ConnId,
    req: u64,
    request: &CollRequest,
    refusal: &Refusal,
) {
    let Some(conn) = st.conns.get(&id) else {
        return;
    };
    let reason = refusal.to_string();
    let msg = match request {
        CollRequest::Change { oid, .. } | CollRequest::Remove { oid } => {
            st.colls[idx].reject(id, conn, req, Target::Oid(*oid), &reason)
        }
        CollRequest::Add { tmp, .. } => {
            st.colls[idx].reject(id, conn, req, Target::Tmp(tmp), &reason)
        }
        CollRequest::Read { .. } => wire::reply_err(req, &reason),
        CollRequest::Subscribe { .. } | CollRequest::Query { .. } => {
            wire::error(Some(req), &reason)
        }
    };
    conn.outbox.push_answer(req, msg);
}
