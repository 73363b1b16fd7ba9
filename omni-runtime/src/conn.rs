//! Connections.

use std::fmt;

use serde::Serialize;

/// The id of one client connection, unique while the server runs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    /// The raw number (also sent to the client in `hello`).
    pub const fn raw(self) -> u64 {
        self.0
    }
    /// Wraps a raw id, for unit-testing permission hooks.
    pub const fn from_raw(raw: u64) -> Self {
        ConnId(raw)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({})", self.0)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

use std::sync::Arc;

use crate::server::Shared;
use crate::world::World;

/// A handle to one client connection, given to event handlers and connect/disconnect hooks.
/// Cheap to clone; usable from any task. Once the client is gone, session access returns
/// `None` and sends are dropped.
pub struct Conn<S> {
    pub(crate) id: ConnId,
    pub(crate) shared: Arc<Shared<S>>,
}

impl<S> Clone for Conn<S> {
    fn clone(&self) -> Self {
        Conn {
            id: self.id,
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for Conn<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Conn").field(&self.id).finish()
    }
}

impl<S: Send + Sync + 'static> Conn<S> {
    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Reads the session. `None` once the client disconnected.
    pub fn session<R>(&self, f: impl FnOnce(&S) -> R) -> Option<R> {
        let engine = self.shared.engine.lock();
        engine.conns.get(&self.id).map(|c| f(&c.session))
    }

    /// Changes the session. What the client sees follows on the next change of each model or at
    /// once with [`Conn::sync`]; `None` once the client disconnected.
    pub fn update_session<R>(&self, f: impl FnOnce(&mut S) -> R) -> Option<R> {
        let mut engine = self.shared.engine.lock();
        engine.conns.get_mut(&self.id).map(|c| f(&mut c.session))
    }

    /// Omni.js's `connection.sync()`: re-checks every permission for this connection and sends
    /// the client only the difference (models added or removed, attributes shown or hidden).
    pub fn sync(&self) {
        self.shared.engine.lock().sync_conn(self.id);
    }

    /// Subscribes this client to `channel` of collection `C` (which must have channels, see
    /// [`Omni::channels`](crate::Omni::channels)) and sends it the models it now sees. Server
    /// code is not asked `can_subscribe`. Returns whether the subscription is new.
    pub fn subscribe<C: crate::collection::Collection>(&self, channel: &str) -> bool {
        self.set_channel::<C>(channel, true)
    }

    /// Unsubscribes this client from `channel` of collection `C`; it loses that channel's
    /// models. Returns whether it was subscribed.
    pub fn unsubscribe<C: crate::collection::Collection>(&self, channel: &str) -> bool {
        self.set_channel::<C>(channel, false)
    }

    fn set_channel<C: crate::collection::Collection>(&self, channel: &str, on: bool) -> bool {
        let mut guard = self.shared.engine.lock();
        let engine = &mut *guard;
        let Some(idx) = engine
            .colls
            .iter()
            .position(|c| c.type_id() == std::any::TypeId::of::<C>())
        else {
            return false;
        };
        let Some(conn) = engine.conns.get_mut(&self.id) else {
            return false;
        };
        engine.colls[idx].server_subscribe(self.id, conn, channel, on)
    }

    /// Sends an event to this client only (`Omni.on(name, cb)` on the client). Returns `false`
    /// if the client is gone.
    pub fn emit<T: serde::Serialize + ?Sized>(&self, name: &str, data: &T) -> bool {
        let mut json = Vec::new();
        crate::__private::encode(data, &mut json);
        let msg = crate::wire::emit(name, &json);
        let engine = self.shared.engine.lock();
        match engine.conns.get(&self.id) {
            Some(c) => {
                c.outbox.push(msg);
                true
            }
            None => false,
        }
    }

    /// The world, to read and change collections.
    pub fn world(&self) -> World {
        World {
            core: self.shared.clone(),
        }
    }

    /// The other connected clients (Omni.js's `connection.connections`).
    pub fn others(&self) -> Vec<Conn<S>> {
        let engine = self.shared.engine.lock();
        let mut ids: Vec<ConnId> = engine
            .conns
            .iter()
            .filter(|(id, c)| c.ready && **id != self.id)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids.into_iter()
            .map(|id| Conn {
                id,
                shared: self.shared.clone(),
            })
            .collect()
    }

    /// Whether the client is still connected.
    pub fn is_connected(&self) -> bool {
        self.shared.engine.lock().conns.contains_key(&self.id)
    }

    /// Closes the connection from the server side.
    pub fn close(&self) {
        if let Some(c) = self.shared.engine.lock().conns.get(&self.id) {
            c.outbox.close();
        }
    }
}
