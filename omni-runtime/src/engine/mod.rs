//! The sync engine: the one authority over the world's state, around one ordered commit log.
//!
//! ```text
//! request ──► validate at the origin ──► storage (async, ──► durable ──► apply as commit N,
//!             (lock: rules, hooks,        no lock; one                   fan out to every
//!              decoding; the head)        write per model                connection (lock),
//!                                         at a time)                     observers (no lock)
//! ```
//!
//! - **Validate** ([`store`]) runs under the lock against the collection's head (the applied
//!   models plus every accepted write still on its way), and yields a [`Proposal`].
//! - **Storage** ([`crate::storage`]) runs without the lock. Writes to one model go one at a
//!   time, in the order they were accepted (a [`commit::Gate`] chain); others overlap.
//! - **Apply**: once the storage says the write is durable, the engine takes the lock, gives it
//!   the next sequence number of the log, applies it and fans it out ([`fanout`]): nobody, the
//!   writer included, sees a write before it is durable. Fan-out happens in sequence order
//!   because both happen under the lock.
//! - **Observers** ([`observe`]) get the commits in sequence order, outside the lock.
//!
//! Without a custom backend or middleware, the storage can neither wait nor fail, so the three
//! steps run in one critical section (the fast path).
//!
//! Lock rule: the engine's lock is held only by this module's functions, never across an
//! `.await`; user code it runs under the lock (permission hooks, channel functions, rules,
//! `World::read` closures) must not call back into the world: that panics with a message
//! ([`hooks::Critical`]) instead of deadlocking.

mod apply;
mod coll;
pub(crate) mod commit;
mod commits;
mod conns;
mod fanout;
pub(crate) mod live;
pub(crate) mod observe;
mod pipeline;
pub(crate) mod queries;
pub(crate) mod replica;
pub(crate) mod state;
pub(crate) mod store;
mod view;

use std::any::Any;
use std::sync::{Arc, Weak};

use bytes::Bytes;

use crate::ids::ConnId;
use crate::metrics::Metrics;
use crate::protocol::decode::CollRequest;
use crate::storage::Storage;

pub(crate) use coll::{Announce, Applied, Codec, ServerWrite};
pub(crate) use commit::{Origin, Proposal, Refusal};
pub(crate) use state::{ConnState, State};
pub(crate) use store::Store;

use crate::hooks::Critical;
use observe::Observers;

/// A handle to the engine. Cheap to clone; what [`Conn`](crate::Conn) and
/// [`World`](crate::World) hold.
pub(crate) struct Engine<S> {
    core: Arc<Core<S>>,
}

/// An engine handle that does not keep it alive (for a cluster's background tasks).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) struct WeakEngine<S> {
    core: Weak<Core<S>>,
}

impl<S> WeakEngine<S> {
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn upgrade(&self) -> Option<Engine<S>> {
        self.core.upgrade().map(|core| Engine { core })
    }
}

impl<S> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Engine {
            core: self.core.clone(),
        }
    }
}

pub(crate) struct Core<S> {
    state: parking_lot::Mutex<State<S>>,
    storage: Storage,
    observers: Observers,
    metrics: Arc<Metrics>,
    /// In a cluster: the link to the shared commit log.
    replica: Option<replica::Replica>,
    me: Weak<Core<S>>,
}

/// The engine's state, locked, with this thread marked as inside the critical section.
pub(crate) struct Locked<'a, S> {
    guard: parking_lot::MutexGuard<'a, State<S>>,
    _critical: Critical,
}

impl<S> std::ops::Deref for Locked<'_, S> {
    type Target = State<S>;
    fn deref(&self) -> &State<S> {
        &self.guard
    }
}

impl<S> std::ops::DerefMut for Locked<'_, S> {
    fn deref_mut(&mut self) -> &mut State<S> {
        &mut self.guard
    }
}

/// The object-safe face of the engine that [`World`](crate::World) holds, so it needs no
/// session type parameter.
pub(crate) trait WorldCore: Send + Sync {
    fn coll_index(&self, type_id: std::any::TypeId) -> Option<usize>;
    fn write(&self, idx: usize, write: ServerWrite<'_>, what: &str) -> Pending;
    fn announce(&self, idx: usize, what: Announce) -> bool;
    fn read(&self, idx: usize, f: &mut dyn FnMut(&dyn Any));
    fn broadcast(&self, msg: Bytes);
    fn connection_ids(&self) -> Vec<ConnId>;
    fn log(&self) -> (u64, u64);
}

/// A client write validated and on its way to the storage.
pub(crate) struct Staged {
    proposal: Proposal,
    request: CollRequest,
}

/// How a server write ends: at once (the fast path, or refused), or once its commit is durable
/// and applied.
pub(crate) enum Pending {
    Done(Result<Applied, Refusal>),
    Waiting(tokio::sync::oneshot::Receiver<Result<Applied, Refusal>>),
}

impl Pending {
    pub(crate) async fn wait(self) -> Result<Applied, Refusal> {
        match self {
            Pending::Done(result) => result,
            Pending::Waiting(rx) => rx.await.unwrap_or(Err(Refusal::ConnectionClosed)),
        }
    }
}

impl<S: Send + Sync + 'static> Engine<S> {
    pub(crate) fn new(
        mut state: State<S>,
        storage: Storage,
        metrics: Arc<Metrics>,
        replica: Option<replica::Replica>,
    ) -> Self {
        for coll in &mut state.colls {
            coll.instrument(&metrics);
        }
        metrics.register_with(|registry| storage.backend().register_metrics(registry));
        if let Some(replica) = &replica {
            metrics.register_with(|registry| replica.metrics.register(registry));
        }
        let core = Arc::new_cyclic(|me| Core {
            state: parking_lot::Mutex::new(state),
            storage,
            observers: Observers::new(),
            metrics: metrics.clone(),
            replica,
            me: me.clone(),
        });
        let weak = Arc::downgrade(&core);
        metrics.count_models(move || {
            let Some(core) = weak.upgrade() else {
                return Vec::new();
            };
            let st = core.lock("counting models for metrics");
            st.colls.iter().map(|c| (c.name(), c.len())).collect()
        });
        Engine { core }
    }

    /// A handle that does not keep the engine alive.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn downgrade(&self) -> WeakEngine<S> {
        WeakEngine {
            core: Arc::downgrade(&self.core),
        }
    }

    /// The server's metrics.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.core.metrics
    }

    /// Locks the state. `what` names the caller in the panic of a re-entrant call.
    pub(crate) fn lock(&self, what: &str) -> Locked<'_, S> {
        self.core.lock(what)
    }

    /// The engine without its session type, for a [`World`](crate::World).
    pub(crate) fn erased(&self) -> Arc<dyn WorldCore> {
        self.core.clone()
    }

    fn weak_world(&self) -> Weak<dyn WorldCore> {
        let weak: Weak<dyn WorldCore> = self.core.me.clone();
        weak
    }
}

impl<S: Send + Sync + 'static> WorldCore for Core<S> {
    fn coll_index(&self, type_id: std::any::TypeId) -> Option<usize> {
        self.lock("World::collection").coll_index_of(type_id)
    }

    fn write(&self, idx: usize, write: ServerWrite<'_>, what: &str) -> Pending {
        self.handle().server_write(idx, write, what)
    }

    fn announce(&self, idx: usize, what: Announce) -> bool {
        self.handle().announce(idx, what)
    }

    fn read(&self, idx: usize, f: &mut dyn FnMut(&dyn Any)) {
        let st = self.lock("World::read");
        f(st.colls[idx].models_any())
    }

    fn broadcast(&self, msg: Bytes) {
        let st = self.lock("World::broadcast");
        for conn in st.conns.values().filter(|c| c.ready) {
            conn.outbox.push_control(msg.clone());
        }
        drop(st);
        if let Some(replica) = &self.replica {
            replica.broadcast(msg);
        }
    }

    fn connection_ids(&self) -> Vec<ConnId> {
        self.handle().ready_connections(None)
    }

    fn log(&self) -> (u64, u64) {
        let st = self.lock("World::log");
        (st.log.epoch, st.log.seq)
    }
}

impl<S: Send + Sync + 'static> Core<S> {
    /// An engine handle on this core (for the world, which holds the core erased).
    fn handle(&self) -> Engine<S> {
        Engine {
            core: self
                .me
                .upgrade()
                .expect("the engine is alive while its world is used"),
        }
    }
}

impl<S> Core<S> {
    /// Locks the state. `what` names the caller in the panic of a re-entrant call.
    fn lock(&self, what: &str) -> Locked<'_, S> {
        let critical = Critical::enter(what);
        Locked {
            guard: self.state.lock(),
            _critical: critical,
        }
    }
}

#[cfg(test)]
mod tests;
