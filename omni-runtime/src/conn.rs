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
        let st = self.engine.lock("Conn::session");
        st.conns.get(&self.id).map(|c| f(&c.session))
    }

    /// Changes the session. What the client sees follows on the next change of each model or at
    /// once with [`Conn::sync`]; `None` once the client disconnected.
    pub fn update_session<R>(&self, f: impl FnOnce(&mut S) -> R) -> Option<R> {
        let mut st = self.engine.lock("Conn::update_session");
        st.conns.get_mut(&self.id).map(|c| f(&mut c.session))
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
        self.set_channel::<C>(channel, true)
    }

    /// Unsubscribes this client from `channel` of collection `C`; it loses that channel's
    /// models. Returns whether it was subscribed.
    pub fn unsubscribe<C: crate::collection::Collection>(&self, channel: &str) -> bool {
        self.set_channel::<C>(channel, false)
    }

    fn set_channel<C: crate::collection::Collection>(&self, channel: &str, on: bool) -> bool {
        let mut st = self.engine.lock("Conn::subscribe");
        let Some(idx) = st.coll_index_of(std::any::TypeId::of::<C>()) else {
            return false;
        };
        let crate::engine::State { colls, conns, .. } = &mut *st;
        let Some(conn) = conns.get_mut(&self.id) else {
            return false;
        };
        colls[idx]
            .subscribe(self.id, conn, channel, on, false)
            .unwrap_or(false)
    }

    /// Sends an event to this client only (`Omni.on(name, cb)` on the client). Returns `false`
    /// if the client is gone. Events are never dropped for a slow client (unlike state, which a
    /// resync replaces); a client that lets thousands pile up unread is disconnected.
    pub fn emit<T: serde::Serialize + ?Sized>(&self, name: &str, data: &T) -> bool {
        let mut json = Vec::new();
        crate::__private::encode(data, &mut json);
        let msg = crate::protocol::encode::emit(name, &json);
        let st = self.engine.lock("Conn::emit");
        match st.conns.get(&self.id) {
            Some(c) => {
                c.outbox.push_control(msg);
                true
            }
            None => false,
        }
    }

    /// The world, to read and change collections.
    pub fn world(&self) -> World {
        World {
            core: self.engine.erased(),
        }
    }

    /// The other connected clients of this server (Omni.js's `connection.connections`).
    pub fn others(&self) -> Vec<Conn<S>> {
        let st = self.engine.lock("Conn::others");
        let mut ids: Vec<ConnId> = st
            .conns
            .iter()
            .filter(|(id, c)| c.ready && **id != self.id)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids.into_iter()
            .map(|id| Conn {
                id,
                engine: self.engine.clone(),
            })
            .collect()
    }

    /// Whether the client is still connected.
    pub fn is_connected(&self) -> bool {
        self.engine
            .lock("Conn::is_connected")
            .conns
            .contains_key(&self.id)
    }

    /// Closes the connection from the server side.
    pub fn close(&self) {
        if let Some(c) = self.engine.lock("Conn::close").conns.get(&self.id) {
            c.outbox.close();
        }
    }
}
