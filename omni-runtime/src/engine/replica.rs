//! The engine as one node of a cluster: its commit log lives outside the process (a NATS
//! JetStream key-value bucket, [`crate::cluster`]), and every node applies the log's entries in
//! the log's order.
//!
//! ```text
//! validate at the origin ──► storage middleware ──► publish to the log: compare-and-set on the
//! (lock, as on one node)      (no lock)             model's revision (no lock)
//!                                                        │
//!            every node's follower, in log order ◄───────┘
//!            (lock): this node's own entry applies its proposal (answers the writer);
//!            another node's entry is decoded and applied, then fanned out
//! ```
//!
//! - A write's proposal waits in [`Replica::slots`] under a token that its log entry carries;
//!   the follower takes it back when the entry comes round, so the writer's answer comes once
//!   its own node applied the commit (read-your-writes), in the log's order.
//! - The compare-and-set revision is the one the write was validated on: the model's revision
//!   at validation, or the revision of this node's previous write to it. If another node wrote
//!   the model in between, the log refuses it ([`Refusal::Conflict`]); the engine waits until
//!   the follower applied that write and validates the write again on the newer model.
//! - Lock order: the engine lock, then `slots`; `slots` alone elsewhere, never the other way.

#![cfg_attr(not(feature = "cluster"), allow(dead_code))]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::protocol::decode::CollRequest;
use crate::storage::{BoxFuture, StoreReply};

use super::commit::{Proposal, Refusal};
use super::{Applied, Engine, State};

/// What the engine asks of the cluster's commit log.
pub(crate) trait Link: Send + Sync + 'static {
    /// This node's id, carried by its entries.
    fn node(&self) -> u64;
    /// Appends `value` under `key` if the key's last revision is `expect` (0: the key must not
    /// exist); resolves to the entry's revision.
    fn publish(&self, key: String, value: Bytes, expect: u64) -> BoxFuture<Result<u64, LinkError>>;
    /// Sends an event message to the clients of every other node.
    fn broadcast(&self, msg: Bytes);
}

/// Why the log did not take an entry.
#[derive(Debug)]
pub(crate) enum LinkError {
    /// The key's last revision was not the expected one.
    Conflict,
    /// The log could not be reached: the entry was not sent.
    Unavailable(String),
    /// The entry was sent but not acknowledged in time: it may still be in the log.
    Unsure(String),
}

/// How long a write whose entry was sent but not acknowledged waits for it to come round
/// before it is refused.
const UNSURE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A write waiting for its entry to come round.
struct Slot {
    proposal: Proposal,
    request: Option<CollRequest>,
    done: tokio::sync::oneshot::Sender<Result<Applied, Refusal>>,
    state: SlotState,
}

/// Where a write's entry is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SlotState {
    /// Sent; the log has not answered yet.
    Sent,
    /// The log took it at this revision.
    Acked(u64),
    /// Not acknowledged in time: it may or may not be in the log.
    Unsure,
}

/// The engine's side of a cluster.
pub(crate) struct Replica {
    link: Arc<dyn Link>,
    slots: parking_lot::Mutex<HashMap<u64, Slot>>,
    next_token: AtomicU64,
    /// The last revision the follower applied.
    applied: tokio::sync::watch::Sender<u64>,
    /// Notified whenever the log answers a publish.
    answered: tokio::sync::Notify,
    pub(crate) metrics: ClusterMetrics,
}

/// A label: whose entry the follower applied.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(crate) struct EntryOrigin {
    origin: &'static str,
}

/// A node's counters (registered with the server's metrics, `omni_cluster_*`).
#[derive(Default)]
pub(crate) struct ClusterMetrics {
    entries: prometheus_client::metrics::family::Family<
        EntryOrigin,
        prometheus_client::metrics::counter::Counter,
    >,
    replaced: prometheus_client::metrics::counter::Counter,
    conflicts: prometheus_client::metrics::counter::Counter,
    unavailable: prometheus_client::metrics::counter::Counter,
    revision: prometheus_client::metrics::gauge::Gauge,
    publish_seconds: ClusterHistogram,
}

/// The publish round trip's histogram (100 µs .. ~26 s).
struct ClusterHistogram(prometheus_client::metrics::histogram::Histogram);

impl Default for ClusterHistogram {
    fn default() -> Self {
        ClusterHistogram(prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.0001, 4.0, 10),
        ))
    }
}

impl ClusterMetrics {
    pub(crate) fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "cluster_entries",
            "Entries of the cluster's log this node applied, by origin (own: its writes; other: other nodes')",
            self.entries.clone(),
        );
        r.register(
            "cluster_replaced",
            "Writes of this node that a newer value replaced in the bucket before the follower read them (applied from their slot)",
            self.replaced.clone(),
        );
        r.register(
            "cluster_conflicts",
            "Writes another node's write to the same model overtook (each validated again)",
            self.conflicts.clone(),
        );
        r.register(
            "cluster_unavailable",
            "Writes refused because NATS could not be reached or did not answer",
            self.unavailable.clone(),
        );
        r.register(
            "cluster_revision",
            "The last revision of the log this node applied",
            self.revision.clone(),
        );
        r.register(
            "cluster_publish_duration_seconds",
            "Time NATS took to take a write (compare-and-set and stream append)",
            self.publish_seconds.0.clone(),
        );
    }
}

impl Replica {
    pub(crate) fn new(link: Arc<dyn Link>, applied: u64) -> Self {
        Replica {
            link,
            slots: parking_lot::Mutex::default(),
            next_token: AtomicU64::new(1),
            applied: tokio::sync::watch::Sender::new(applied),
            answered: tokio::sync::Notify::new(),
            metrics: ClusterMetrics::default(),
        }
    }

    pub(crate) fn broadcast(&self, msg: Bytes) {
        self.link.broadcast(msg);
    }
}

/// The log key of a model.
pub(crate) fn key(coll: &str, oid: u64) -> String {
    format!("{coll}.{oid}")
}

/// A log entry's value: `{"n":node,"t":token,"m":model}`, or `"d":1` for a removal.
pub(crate) fn envelope(node: u64, token: u64, doc: Option<&[u8]>) -> Bytes {
    let mut out = Vec::with_capacity(48 + doc.map_or(0, <[u8]>::len));
    out.extend_from_slice(b"{\"n\":");
    out.extend_from_slice(itoa::Buffer::new().format(node).as_bytes());
    out.extend_from_slice(b",\"t\":");
    out.extend_from_slice(itoa::Buffer::new().format(token).as_bytes());
    match doc {
        Some(doc) => {
            out.extend_from_slice(b",\"m\":");
            out.extend_from_slice(doc);
        }
        None => out.extend_from_slice(b",\"d\":1"),
    }
    out.push(b'}');
    Bytes::from(out)
}

/// A log entry's value, read.
#[derive(serde::Deserialize)]
pub(crate) struct Envelope<'a> {
    #[serde(rename = "n")]
    pub(crate) node: u64,
    #[serde(rename = "t")]
    pub(crate) token: u64,
    #[serde(rename = "m", borrow, default)]
    pub(crate) model: Option<&'a serde_json::value::RawValue>,
}

type Answer = Result<Applied, Refusal>;

/// Answers for writers, sent once the engine lock is released.
struct Answers(Vec<(tokio::sync::oneshot::Sender<Answer>, Answer)>);

impl Answers {
    fn send(self) {
        for (done, result) in self.0 {
            let _ = done.send(result);
        }
    }
}

/// One entry of the cluster's log as the follower read it: revision `seq` of model `oid` of
/// collection `coll`, written by node `node` under its token; `doc` the model's stored JSON,
/// `None` for a removal.
pub(crate) struct Entry<'a> {
    pub(crate) seq: u64,
    pub(crate) coll: &'a str,
    pub(crate) oid: u64,
    pub(crate) node: u64,
    pub(crate) token: u64,
    pub(crate) doc: Option<&'a [u8]>,
}

/// How a write's trip through the log ended.
pub(crate) enum Trip {
    Done(Result<Applied, Refusal>),
    /// Another node wrote the model first: validate the write again.
    Conflict,
}

impl<S: Send + Sync + 'static> Engine<S> {
    pub(crate) fn replica(&self) -> Option<&Replica> {
        self.core.replica.as_ref()
    }

    /// Records, under the lock, the revision a fresh proposal was validated on.
    pub(crate) fn note_base(st: &State<S>, proposal: &mut Proposal) {
        proposal.base = st
            .revisions
            .get(&(proposal.coll, proposal.oid))
            .copied()
            .unwrap_or(0);
    }

    /// Publishes a proposal the storage middleware passed and waits until this node's follower
    /// applied it.
    pub(crate) async fn replicate(
        &self,
        replica: &Replica,
        proposal: Proposal,
        request: Option<CollRequest>,
    ) -> Trip {
        let (idx, oid) = (proposal.coll, proposal.oid);
        let (coll, model) = (proposal.request.collection, proposal.request.model);
        // On top of this node's previous write to the model: that write's revision.
        let expect = match &proposal.after {
            Some(gate) => gate.revision(),
            None => proposal.base,
        };
        let token = replica.next_token.fetch_add(1, Ordering::Relaxed);
        let value = match proposal.request.method {
            crate::storage::Method::Delete => envelope(replica.link.node(), token, None),
            _ => match &proposal.request.doc {
                Some(doc) => envelope(replica.link.node(), token, Some(doc)),
                None => {
                    return Trip::Done(Err(Refusal::Unavailable {
                        coll,
                        reason: format!("{model} {oid} has no stored document"),
                    }));
                }
            },
        };
        let (done, answer) = tokio::sync::oneshot::channel();
        replica.slots.lock().insert(
            token,
            Slot {
                proposal,
                request,
                done,
                state: SlotState::Sent,
            },
        );
        let started = std::time::Instant::now();
        let published = replica.link.publish(key(coll, oid), value, expect).await;
        replica
            .metrics
            .publish_seconds
            .0
            .observe(started.elapsed().as_secs_f64());

        tracing::trace!(
            node = replica.link.node(),
            collection = coll,
            oid,
            token,
            expect,
            ?published,
            "published"
        );
        let mut answer = answer;
        let failed = match published {
            Ok(revision) => {
                // Normally the follower meets the entry and applies the proposal. But a
                // bucket keeps one value per key: a newer write to the model can replace the
                // entry before the follower reads it. The follower then applies it when it
                // meets a later entry, or, if it is already past it, this does.
                let acked = match replica.slots.lock().get_mut(&token) {
                    Some(slot) => {
                        slot.state = SlotState::Acked(revision);
                        true
                    }
                    None => false,
                };
                replica.answered.notify_waiters();
                if acked {
                    let mut st = self.lock("a write the follower went past");
                    if st.log.seq >= revision {
                        let upto = st.log.seq;
                        let done = self.apply_skipped(replica, &mut st, upto);
                        drop(st);
                        done.send();
                    }
                }
                None
            }
            Err(LinkError::Unsure(reason)) => {
                if let Some(slot) = replica.slots.lock().get_mut(&token) {
                    slot.state = SlotState::Unsure;
                }
                replica.answered.notify_waiters();
                // It may be in the log: wait for it a while before refusing.
                match tokio::time::timeout(UNSURE_WAIT, &mut answer).await {
                    Ok(result) => {
                        return Trip::Done(result.unwrap_or(Err(Refusal::ConnectionClosed)));
                    }
                    Err(_) => Some(LinkError::Unavailable(reason)),
                }
            }
            Err(e) => Some(e),
        };
        if let Some(error) = failed {
            // Not in the log, unless an unanswered publish made it after all: then the
            // follower took the slot, and the answer comes from there.
            let removed = replica.slots.lock().remove(&token);
            replica.answered.notify_waiters();
            let Some(slot) = removed else {
                return Trip::Done(answer.await.unwrap_or(Err(Refusal::ConnectionClosed)));
            };
            self.lock("a write the cluster refused").colls[idx].abort(&slot.proposal);
            match error {
                LinkError::Conflict => replica.metrics.conflicts.inc(),
                _ => replica.metrics.unavailable.inc(),
            };
            return match error {
                LinkError::Conflict => {
                    // Validated again once the other node's write is applied here.
                    let mut applied = replica.applied.subscribe();
                    let newer = || {
                        self.lock("waiting for a newer revision")
                            .revisions
                            .get(&(idx, oid))
                            .is_none_or(|r| *r != expect)
                    };
                    let caught_up = async {
                        while !newer() {
                            if applied.changed().await.is_err() {
                                return;
                            }
                        }
                    };
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_secs(5), caught_up).await;
                    // A little random backoff, so that a node that keeps losing the race to
                    // the same model gets its turn.
                    let jitter = (token.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61) + 1;
                    tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
                    Trip::Conflict
                }
                LinkError::Unavailable(reason) | LinkError::Unsure(reason) => {
                    Trip::Done(Err(Refusal::Unavailable { coll, reason }))
                }
            };
        }
        Trip::Done(answer.await.unwrap_or(Err(Refusal::ConnectionClosed)))
    }

    /// Applies one entry of the cluster's log (see [`Engine::follow`]), after waiting until the
    /// log answered every write this node sent to the same model: if one of them is in the log
    /// before this entry, it must be applied first, and the follower knows it only from the
    /// answer (the bucket may have replaced it with this entry already).
    pub(crate) async fn follow_entry(&self, entry: Entry<'_>) {
        let (coll, oid, node) = (entry.coll, entry.oid, entry.node);
        if let Some(replica) = self.replica()
            && node != replica.link.node()
        {
            let deadline = tokio::time::Instant::now() + UNSURE_WAIT;
            loop {
                let answered = replica.answered.notified();
                tokio::pin!(answered);
                answered.as_mut().enable();
                let waiting = replica.slots.lock().values().any(|slot| {
                    slot.state == SlotState::Sent
                        && slot.proposal.request.collection == coll
                        && slot.proposal.oid == oid
                });
                if !waiting || tokio::time::timeout_at(deadline, answered).await.is_err() {
                    break;
                }
            }
        }
        self.follow(entry);
    }

    /// Applies one entry of the cluster's log, in log order: this node's own write (its
    /// proposal, answering its writer) or another node's (decoded). `doc`: the model's stored
    /// JSON, `None` for a removal. Entries at or below the last applied revision are skipped.
    pub(crate) fn follow(&self, entry: Entry<'_>) {
        let Entry {
            seq,
            coll,
            oid,
            node,
            token,
            doc,
        } = entry;
        let Some(replica) = self.replica() else {
            return;
        };
        let mut st = self.lock("applying a cluster entry");
        if seq <= st.log.seq {
            tracing::debug!(seq, at = st.log.seq, "skipped an entry already applied");
            return;
        }
        // This node's own entries that newer values replaced before the follower got to them.
        let skipped = self.apply_skipped(replica, &mut st, seq - 1);
        let Some(idx) = st.coll_index(coll) else {
            tracing::warn!(
                collection = coll,
                oid,
                seq,
                "an entry of a collection this node does not have; skipped"
            );
            drop(st);
            skipped.send();
            return;
        };
        st.revisions.insert((idx, oid), seq);
        let mine = (node == replica.link.node())
            .then(|| replica.slots.lock().remove(&token))
            .flatten();
        tracing::trace!(
            me = replica.link.node(),
            collection = coll,
            oid,
            seq,
            node,
            token,
            mine = mine.is_some(),
            "following"
        );
        let origin = if node == replica.link.node() {
            "own"
        } else {
            "other"
        };
        replica
            .metrics
            .entries
            .get_or_create(&EntryOrigin { origin })
            .inc();
        replica
            .metrics
            .revision
            .set(i64::try_from(seq).unwrap_or(i64::MAX));
        match mine {
            Some(slot) => {
                if let Some(gate) = &slot.proposal.gate {
                    gate.set_revision(seq);
                }
                let reply = StoreReply::done(&slot.proposal.request);
                let result = self.commit(&mut st, seq, slot.proposal, reply, slot.request.as_ref());
                drop(st);
                let _ = slot.done.send(result);
                skipped.send();
            }
            None => {
                let State {
                    colls, conns, log, ..
                } = &mut *st;
                match colls[idx].follow(conns, seq, oid, doc) {
                    Ok(_) => log.record(seq, idx, oid),
                    Err(reason) => tracing::error!(
                        collection = coll,
                        oid,
                        seq,
                        reason,
                        "an entry of the cluster's log cannot be decoded by this node; skipped (are all nodes built from the same code?)"
                    ),
                }
                drop(st);
                skipped.send();
            }
        }
        replica.applied.send_replace(seq);
    }

    /// Applies, in revision order, this node's writes that the log acknowledged at a revision
    /// up to `upto` but that the follower never met (a newer value of the model replaced them
    /// in the bucket first). Each is applied as it was validated: the newer entry, applied
    /// after it, was validated on top of it. Their writers are answered once the lock is
    /// released ([`Answers::send`]).
    fn apply_skipped(
        &self,
        replica: &Replica,
        st: &mut super::Locked<'_, S>,
        upto: u64,
    ) -> Answers {
        let mut taken: Vec<(u64, Slot)> = {
            let mut slots = replica.slots.lock();
            let tokens: Vec<u64> = slots
                .iter()
                .filter(|(_, slot)| matches!(slot.state, SlotState::Acked(r) if r <= upto))
                .map(|(token, _)| *token)
                .collect();
            tokens
                .into_iter()
                .filter_map(|t| slots.remove(&t))
                .map(|slot| match slot.state {
                    SlotState::Acked(r) => (r, slot),
                    _ => unreachable!("only acknowledged slots are taken"),
                })
                .collect()
        };
        taken.sort_by_key(|(revision, _)| *revision);
        let mut answers = Answers(Vec::new());
        for (revision, slot) in taken {
            let key = (slot.proposal.coll, slot.proposal.oid);
            let newest = st.revisions.get(&key).copied().unwrap_or(0).max(revision);
            st.revisions.insert(key, newest);
            if let Some(gate) = &slot.proposal.gate {
                gate.set_revision(revision);
            }
            tracing::debug!(
                revision,
                oid = key.1,
                "applied a write of this node that a newer value replaced in the bucket"
            );
            replica.metrics.replaced.inc();
            let seq = revision.max(st.log.seq);
            let reply = StoreReply::done(&slot.proposal.request);
            let result = self.commit(st, seq, slot.proposal, reply, slot.request.as_ref());
            answers.0.push((slot.done, result));
        }
        answers
    }

    /// Records the revision of every model loaded from the cluster's bucket.
    pub(crate) fn adopt_revisions(&self, revisions: Vec<(String, u64, u64)>) {
        let mut st = self.lock("loading the cluster's revisions");
        for (coll, oid, rev) in revisions {
            if let Some(idx) = st.coll_index(&coll) {
                st.revisions.insert((idx, oid), rev);
            }
        }
    }

    /// Pushes an event message from another node to this node's ready connections.
    pub(crate) fn deliver_broadcast(&self, msg: Bytes) {
        let st = self.lock("a broadcast from another node");
        for conn in st.conns.values().filter(|c| c.ready) {
            conn.outbox.push_control(msg.clone());
        }
    }
}
