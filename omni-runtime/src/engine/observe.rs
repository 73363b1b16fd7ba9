//! Server-side observers of a collection's commits (Omni.js let server code listen to model
//! changes): called in sequence order, after the commit is applied, outside the engine's lock.

use std::sync::{Arc, Weak};

use crate::model::{AttrSet, Model, Oid};
use crate::storage::BoxFuture;

use super::WorldCore;

pub use super::commit::Origin;

/// One commit of a collection as an observer sees it.
#[derive(Debug, Clone)]
pub struct Observed<M: Model> {
    /// The commit's sequence number.
    pub seq: u64,
    /// The model's OID.
    pub oid: Oid<M>,
    /// Who made the commit.
    pub origin: Origin,
    /// What it did.
    pub change: Observation<M>,
}

/// What a commit did to a model, with the values before and after.
#[derive(Debug, Clone)]
pub enum Observation<M: Model> {
    /// The model was created.
    Created(M),
    /// Attributes changed: `changed` lists the public attributes whose value differs (empty
    /// when only server-only fields changed).
    Updated {
        /// The model before.
        old: M,
        /// The model after.
        new: M,
        /// The public attributes that changed.
        changed: Vec<M::Attr>,
    },
    /// The model was removed; this was its last value.
    Deleted(M),
}

/// A typed observer, erased to a boxed future; it gets the world as the engine's erased core
/// (the server wraps the user's observer, which takes a [`World`](crate::World)).
pub(crate) type ObserverFn<M> =
    Arc<dyn Fn(Arc<dyn WorldCore>, Observed<M>) -> BoxFuture<()> + Send + Sync>;

/// One call of one observer, ready to run.
pub(crate) type Job = Box<dyn FnOnce(Arc<dyn WorldCore>) -> BoxFuture<()> + Send>;

/// Queues one job per observer for a commit: `old` absent for a create, `new` absent for a
/// delete.
#[allow(clippy::too_many_arguments)]
pub(crate) fn jobs_for<M: Model>(
    observers: &[ObserverFn<M>],
    seq: u64,
    oid: u64,
    origin: &Origin,
    old: Option<&M>,
    new: Option<&M>,
    changed: AttrSet,
    jobs: &mut Vec<Job>,
) {
    let change = match (old, new) {
        (None, Some(new)) => Observation::Created(new.clone()),
        (Some(old), Some(new)) => Observation::Updated {
            old: old.clone(),
            new: new.clone(),
            changed: changed.iter().map(|i| M::ATTRS[i]).collect(),
        },
        (Some(old), None) => Observation::Deleted(old.clone()),
        (None, None) => return,
    };
    let event = Observed {
        seq,
        oid: Oid::from_raw(oid),
        origin: origin.clone(),
        change,
    };
    for f in observers {
        let f = f.clone();
        let event = event.clone();
        jobs.push(Box::new(move |world| f(world, event)));
    }
}

/// The queue of observer jobs and the task that runs them, one at a time, in commit order.
pub(crate) struct Observers {
    tx: tokio::sync::mpsc::UnboundedSender<Job>,
    rx: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Job>>>,
}

impl Observers {
    pub(crate) fn new() -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Observers {
            tx,
            rx: parking_lot::Mutex::new(Some(rx)),
        }
    }

    /// Queues jobs (called under the engine lock, so in commit order) and starts the runner on
    /// first use.
    pub(crate) fn push(&self, jobs: Vec<Job>, world: impl FnOnce() -> Weak<dyn WorldCore>) {
        if jobs.is_empty() {
            return;
        }
        let mut rx = self.rx.lock();
        if rx.is_some() {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    if let Some(rx) = rx.take() {
                        handle.spawn(run(rx, world()));
                    }
                }
                Err(_) => {
                    // Queued: the runner starts with the first commit made inside a runtime.
                    tracing::warn!(
                        "a commit outside a Tokio runtime: its observers run once one commits inside the server's runtime"
                    );
                }
            }
        }
        drop(rx);
        for job in jobs {
            let _ = self.tx.send(job);
        }
    }
}

/// Runs the jobs until the server is gone (the world is held weakly, so a dropped server ends
/// the task).
async fn run(mut rx: tokio::sync::mpsc::UnboundedReceiver<Job>, world: Weak<dyn WorldCore>) {
    use futures_util::FutureExt;
    while let Some(job) = rx.recv().await {
        let Some(core) = world.upgrade() else { return };
        let call = std::panic::AssertUnwindSafe(async move { job(core).await });
        if let Err(panic) = call.catch_unwind().await {
            tracing::error!(
                panic = crate::hooks::panic_message(&panic),
                "an observer panicked; the next ones still run"
            );
        }
    }
}
