//! Commits: accepted mutations on their way through the pipeline, and why one can be refused.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::ids::ConnId;
use crate::model::AttrSet;
use crate::storage::{StoreError, StoreRequest};

/// Who made a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A client's request: its connection and the request id its answer carries.
    Client {
        /// The connection.
        conn: ConnId,
        /// The request id.
        req: u64,
    },
    /// Server code: the [`World`](crate::World), an observer, an `announce_*`.
    Server,
}

/// What a commit does to its model. The model values are the collection's `Model` type, erased.
pub(crate) enum Op {
    Create(Box<dyn Any + Send>),
    Update {
        model: Box<dyn Any + Send>,
        changed: AttrSet,
    },
    Delete,
    /// A client's one-shot read: goes through the storage, changes nothing.
    Read,
}

/// A mutation validated at its origin, on its way to the storage and then to be applied.
pub(crate) struct Proposal {
    pub(crate) coll: usize,
    pub(crate) oid: u64,
    pub(crate) op: Op,
    pub(crate) origin: Origin,
    /// For a client's create: its temporary id.
    pub(crate) tmp: Option<String>,
    pub(crate) request: StoreRequest,
    /// The previous write to the same model still in the pipeline: this one goes to the
    /// storage once that one is through.
    pub(crate) after: Option<Arc<Gate>>,
    /// Opened when this one is through (applied or failed).
    pub(crate) gate: Option<Arc<Gate>>,
    /// The generation of the model's pending entry this write belongs to.
    pub(crate) generation: u64,
    /// In a cluster: the revision of the model this write was validated on (0: none, a
    /// create), when no earlier write of this node to the model was still on its way.
    pub(crate) base: u64,
}

/// The end of one write in a model's chain of pending writes.
#[derive(Default, Debug)]
pub(crate) struct Gate {
    state: parking_lot::Mutex<Option<bool>>,
    opened: tokio::sync::Notify,
    /// In a cluster: the revision the write was committed at, set before it is opened.
    revision: std::sync::atomic::AtomicU64,
}

impl Gate {
    /// Records the revision the write was committed at (in a cluster).
    pub(crate) fn set_revision(&self, revision: u64) {
        self.revision
            .store(revision, std::sync::atomic::Ordering::Release);
    }

    /// The revision the write was committed at (0 if not in a cluster, or not committed).
    pub(crate) fn revision(&self) -> u64 {
        self.revision.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records how the write ended and wakes the next write to the model.
    pub(crate) fn open(&self, ok: bool) {
        *self.state.lock() = Some(ok);
        self.opened.notify_waiters();
    }

    /// Waits for the write to end: `true` if it was applied.
    pub(crate) async fn wait(&self) -> bool {
        loop {
            let opened = self.opened.notified();
            if let Some(ok) = *self.state.lock() {
                return ok;
            }
            opened.await;
        }
    }
}

/// Why the engine refused a request. Built cheaply under the lock, turned into text at the
/// edge (a client's `reject`, a [`WorldError`](crate::WorldError)).
#[derive(Debug, Clone)]
pub(crate) enum Refusal {
    ConnectionClosed,
    UnknownCollection(String),
    NoSuchModel {
        coll: &'static str,
        oid: u64,
    },
    NoChannels {
        coll: &'static str,
    },
    ReadOnly {
        coll: &'static str,
        model: &'static str,
        oid: Option<u64>,
        attr: &'static str,
    },
    MayNotWrite {
        conn: ConnId,
        coll: &'static str,
        model: &'static str,
        oid: u64,
        attr: &'static str,
    },
    MayNotCreate {
        conn: ConnId,
        coll: &'static str,
    },
    MayNotDestroy {
        conn: ConnId,
        coll: &'static str,
        model: &'static str,
        oid: u64,
    },
    MayNotSubscribe {
        conn: ConnId,
        coll: &'static str,
        channel: String,
    },
    /// A query the server cannot run: unknown attribute, ill-typed value, over a limit.
    BadQuery {
        coll: &'static str,
        reason: String,
    },
    MayNotQuery {
        conn: ConnId,
        coll: &'static str,
    },
    Rule(String),
    Decode {
        coll: &'static str,
        error: crate::error::DecodeError,
    },
    CreateHookFailed {
        coll: &'static str,
    },
    Storage {
        coll: &'static str,
        model: &'static str,
        oid: Option<u64>,
        error: StoreError,
    },
    /// Not a failure: a find-or-insert found this model (turned into its result by the
    /// engine); `pending`: the gate of the write that will make it durable, if it is not yet.
    Exists {
        oid: u64,
        pending: Option<Arc<Gate>>,
    },
    EarlierWriteFailed {
        coll: &'static str,
        model: &'static str,
        oid: u64,
    },
    /// In a cluster: another node committed a write to the model first; the write is validated
    /// again on the newer model (and refused with this only after several attempts).
    Conflict {
        coll: &'static str,
        model: &'static str,
        oid: u64,
    },
    /// In a cluster: the commit log (NATS) could not take the write.
    Unavailable {
        coll: &'static str,
        reason: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::ConnectionClosed => f.write_str("connection closed"),
            Refusal::UnknownCollection(name) => write!(f, "unknown collection `{name}`"),
            Refusal::NoSuchModel { coll, oid } => {
                write!(f, "collection `{coll}` has no model with oid {oid}")
            }
            Refusal::NoChannels { coll } => write!(
                f,
                "collection `{coll}` has no channels (the server registers them with `Omni::channels`)"
            ),
            Refusal::ReadOnly {
                coll,
                model,
                oid,
                attr,
            } => {
                write!(f, "attribute `{attr}` of {coll}/{model}")?;
                if let Some(oid) = oid {
                    write!(f, " {oid}")?;
                }
                f.write_str(" is read-only")
            }
            Refusal::MayNotWrite {
                conn,
                coll,
                model,
                oid,
                attr,
            } => write!(
                f,
                "permission denied: connection {conn} may not write attribute `{attr}` of {coll}/{model} {oid}"
            ),
            Refusal::MayNotCreate { conn, coll } => write!(
                f,
                "permission denied: connection {conn} may not create models in `{coll}`"
            ),
            Refusal::MayNotDestroy {
                conn,
                coll,
                model,
                oid,
            } => write!(
                f,
                "permission denied: connection {conn} may not remove {coll}/{model} {oid}"
            ),
            Refusal::MayNotSubscribe {
                conn,
                coll,
                channel,
            } => write!(
                f,
                "permission denied: connection {conn} may not subscribe to channel `{channel}` of `{coll}`"
            ),
            Refusal::BadQuery { coll, reason } => write!(f, "query on `{coll}`: {reason}"),
            Refusal::MayNotQuery { conn, coll } => write!(
                f,
                "permission denied: connection {conn} may not run this query on `{coll}` (refused by `can_query`)"
            ),
            Refusal::Rule(reason) => f.write_str(reason),
            Refusal::Decode { coll, error } => write!(f, "{coll}: {error}"),
            Refusal::CreateHookFailed { coll } => {
                write!(f, "the server failed to create the model in `{coll}`")
            }
            Refusal::Storage {
                coll,
                model,
                oid,
                error,
            } => match oid {
                Some(oid) => write!(f, "{coll}/{model} {oid}: {error}"),
                None => write!(f, "{coll}: {error}"),
            },
            Refusal::Exists { oid, .. } => write!(f, "a matching model exists: oid {oid}"),
            Refusal::EarlierWriteFailed { coll, model, oid } => write!(
                f,
                "{coll}/{model} {oid}: an earlier write to this model failed in the storage, so this one (made on top of it) was not applied"
            ),
            Refusal::Conflict { coll, model, oid } => write!(
                f,
                "{coll}/{model} {oid}: other nodes of the cluster kept changing this model at the same time; the write was not applied (try again)"
            ),
            Refusal::Unavailable { coll, reason } => write!(
                f,
                "{coll}: the cluster's commit log is unavailable, the write was not applied: {reason}"
            ),
        }
    }
}
