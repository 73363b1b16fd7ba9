//! Connections.

use std::fmt;

use crate::engine::Engine;
pub use crate::ids::ConnId;
use crate::world::World;

/// A handle to one client connection, given to event handlers and connect/disconnect hooks.
/// Cheap to clone; usable from any task. Once the client is gone, session access returns
/// `None` and sends are dropped.
pub struct Conn<S> {
    pub(crate) id: ConnId,
    pub(crate) engine: Engine<S>,
}

impl<S> Clone for Conn<S> {
    fn clone(&self) -> Self {
        Conn {
            id: self.id,
            engine: self.engine.clone(),
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
        self.engine.session(self.id, f)
    }

    /// Changes the session. What the client sees follows on the next change of each model or at
    /// once with [`Conn::sync`]; `None` once the client disconnected.
    pub fn update_session<R>(&self, f: impl FnOnce(&mut S) -> R) -> Option<R> {
        self.engine.update_session(self.id, f)
    }

    /// Omni.js's `connection.sync()`: re-checks every permission for this connection and sends
    /// the client only the difference (models added or removed, attributes shown or hidden).
    pub fn sync(&self) {
        self.engine.sync_conn(self.id);
    }

    /// Subscribes this client to `channel` of collection `C` (which must have channels, see
    /// [`Omni::channels`](crate::Omni::channels)) and sends it the models it now sees. Server
    /// code is not asked `can_subscribe`. Returns whether the subscription is new.
    pub fn subscribe<C: crate::collection::Collection>(&self, channel: &str) -> bool {
        self.engine
            .set_channel(self.id, std::any::TypeId::of::<C>(), channel, true)
    }

    /// Unsubscribes this client from `channel` of collection `C`; it loses that channel's
    /// models. Returns whether it was subscribed.
    pub fn unsubscribe<C: crate::collection::Collection>(&self, channel: &str) -> bool {
        self.engine
            .set_channel(self.id, std::any::TypeId::of::<C>(), channel, false)
    }

    /// Sends an event to this client only (`Omni.on(name, cb)` on the client). Returns `false`
    /// if the client is gone. Events are never dropped for a slow client (unlike state, which a
    /// resync replaces); a client that lets thousands pile up unread is disconnected.
    pub fn emit<T: serde::Serialize + ?Sized>(&self, name: &str, data: &T) -> bool {
        let mut json = Vec::new();
        crate::protocol::encode::json(data, &mut json);
        self.engine
            .emit(self.id, crate::protocol::encode::emit(name, &json))
    }

    /// The world, to read and change collections.
    pub fn world(&self) -> World {
        World {
            core: self.engine.erased(),
        }
    }

    /// The other connected clients of this server (Omni.js's `connection.connections`).
    pub fn others(&self) -> Vec<Conn<S>> {
        self.engine
            .ready_connections(Some(self.id))
            .into_iter()
            .map(|id| Conn {
                id,
                engine: self.engine.clone(),
            })
            .collect()
    }

    /// Whether the client is still connected.
    pub fn is_connected(&self) -> bool {
        self.engine.is_connected(self.id)
    }

    /// Closes the connection from the server side.
    pub fn close(&self) {
        self.engine.close(self.id);
    }
}
