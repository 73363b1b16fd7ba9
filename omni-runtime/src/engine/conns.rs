//! The engine's side of connections: joining, leaving, snapshots, sessions, subscriptions,
//! emits and the permission re-check of `conn.sync()`.

use std::sync::Arc;

use bytes::Bytes;

use crate::ids::ConnId;
use crate::outbox::Outbox;
use crate::protocol::encode as wire;

use super::{ConnState, Engine, State};

impl<S: Send + Sync + 'static> Engine<S> {
    /// Registers a new connection (not ready: fan-outs skip it until [`Engine::start`]).
    pub(crate) fn connect(&self, id: ConnId, session: S, outbox: Arc<Outbox>) {
        let mut st = self.lock("connect");
        let colls = st.colls.len();
        st.conns.insert(id, ConnState::new(session, outbox, colls));
        drop(st);
        self.metrics().connections.inc();
        self.metrics().connections_open.inc();
    }

    /// Marks a connection ready and queues its `hello` (with its resume `token`) and first
    /// snapshot.
    pub(crate) fn start(&self, id: ConnId, token: &str) {
        let mut st = self.lock("start");
        let epoch = st.log.epoch;
        let Some(conn) = st.conns.get_mut(&id) else {
            return;
        };
        conn.ready = true;
        conn.outbox
            .push_control(wire::hello(id.raw(), epoch, token, false));
        if let Some((snapshot, windows)) = snapshot(&mut st, id) {
            let outbox = &st.conns[&id].outbox;
            outbox.push(snapshot);
            for msg in windows {
                outbox.push(msg);
            }
            outbox.view_changed();
            self.metrics().snapshots.inc();
        }
    }

    /// A dropped connection waits to be resumed: fan-outs skip it; its session, channels and
    /// what it held stay.
    pub(crate) fn detach(&self, id: ConnId) {
        if let Some(c) = self.lock("detach").conns.get_mut(&id) {
            c.ready = false;
        }
    }

    /// Resumes a detached connection on a new socket whose client last saw log position `seq`
    /// of `epoch`: its `hello`, then only the models that commits since then touched (each
    /// sent whole, as the connection may see it now), or, when the history no longer reaches
    /// back that far (or the epoch changed, or its view changed in a way its client did not
    /// see: `view`, the count of such changes its frames said they reflect), a snapshot; then
    /// `resumed`. Whether it was only the changes.
    pub(crate) fn resume(&self, id: ConnId, token: &str, at: (u64, u64, u64)) -> bool {
        let (epoch, seq, view) = at;
        let mut st = self.lock("resume");
        let State {
            colls, conns, log, ..
        } = &mut *st;
        let Some(conn) = conns.get_mut(&id) else {
            return false;
        };
        conn.outbox.reopen();
        conn.ready = true;
        conn.outbox
            .push_control(wire::hello(id.raw(), log.epoch, token, true));
        // Queries are not kept up to date while their connection is away: evaluated again with
        // a snapshot.
        let queries = colls.iter().any(|c| c.has_queries(id));
        let touched = if epoch == log.epoch && view == conn.outbox.view() && !queries {
            log.since(seq)
        } else {
            None
        };
        let now = log.seq;
        if let Some(touched) = touched {
            for (idx, oid) in touched {
                colls[idx].resend(id, conn, oid);
            }
            conn.outbox.push_control(wire::resumed(now, false));
            return true;
        }
        if let Some((snapshot, windows)) = snapshot(&mut st, id)
            && let Some(conn) = st.conns.get(&id)
        {
            conn.outbox.push(snapshot);
            for msg in windows {
                conn.outbox.push(msg);
            }
            conn.outbox.view_changed();
            conn.outbox.push_control(wire::resumed(now, true));
            self.metrics().snapshots.inc();
        }
        false
    }

    /// Stops fan-outs to a connection that went away (its session stays readable).
    pub(crate) fn leave(&self, id: ConnId) {
        if let Some(c) = self.lock("leave").conns.get_mut(&id) {
            c.ready = false;
        }
    }

    /// Forgets a connection.
    pub(crate) fn forget(&self, id: ConnId) {
        let mut st = self.lock("forget");
        for coll in st.colls.iter_mut() {
            coll.drop_queries(id);
        }
        if st.conns.remove(&id).is_some() {
            self.metrics().connections_open.dec();
        }
    }

    /// Replaces everything queued for a connection with a fresh snapshot (after its outbox
    /// overflowed).
    pub(crate) fn resync(&self, id: ConnId) {
        let mut st = self.lock("resync");
        if let Some((snapshot, windows)) = snapshot(&mut st, id)
            && let Some(conn) = st.conns.get(&id)
        {
            conn.outbox
                .reset_with(std::iter::once(snapshot).chain(windows));
            conn.outbox.view_changed();
            self.metrics().snapshots.inc();
            self.metrics().resyncs.inc();
        }
    }

    /// `conn.sync()`: re-checks every permission for one connection and pushes the difference.
    pub(crate) fn sync_conn(&self, id: ConnId) {
        let mut st = self.lock("Conn::sync");
        let State { colls, conns, .. } = &mut *st;
        let Some(conn) = conns.get_mut(&id) else {
            return;
        };
        if conn.ready {
            let mut changed = false;
            for coll in colls.iter_mut() {
                changed |= coll.sync_conn(id, conn);
            }
            // Omni.js's `sync` event: what the connection sees changed.
            if changed {
                conn.outbox.push(wire::sync());
            }
        }
        // After the pushes: a frame that says it reflects this count holds them. Detached (or
        // not started), the sync is skipped, and so a resume sends a snapshot.
        conn.outbox.view_changed();
    }

    /// Reads a connection's session; `None` once it is gone.
    pub(crate) fn session<R>(&self, id: ConnId, f: impl FnOnce(&S) -> R) -> Option<R> {
        let st = self.lock("Conn::session");
        st.conns.get(&id).map(|c| f(&c.session))
    }

    /// Changes a connection's session; `None` once it is gone.
    pub(crate) fn update_session<R>(&self, id: ConnId, f: impl FnOnce(&mut S) -> R) -> Option<R> {
        let mut st = self.lock("Conn::update_session");
        st.conns.get_mut(&id).map(|c| f(&mut c.session))
    }

    /// Subscribes a connection to a channel (or unsubscribes it) for server code, which is not
    /// asked `can_subscribe`. Whether anything changed.
    pub(crate) fn set_channel(
        &self,
        id: ConnId,
        type_id: std::any::TypeId,
        channel: &str,
        on: bool,
    ) -> bool {
        let mut st = self.lock("Conn::subscribe");
        let Some(idx) = st.coll_index_of(type_id) else {
            return false;
        };
        let State { colls, conns, .. } = &mut *st;
        let Some(conn) = conns.get_mut(&id) else {
            return false;
        };
        let changed = colls[idx]
            .subscribe(id, conn, channel, on, false)
            .unwrap_or(false);
        conn.outbox.view_changed();
        changed
    }

    /// Queues a message that is never dropped (an emit) for one connection. `false` if gone.
    pub(crate) fn emit(&self, id: ConnId, msg: Bytes) -> bool {
        match self.lock("Conn::emit").conns.get(&id) {
            Some(c) => {
                c.outbox.push_control(msg);
                true
            }
            None => false,
        }
    }

    /// The ready connections other than `but`, in id order.
    pub(crate) fn ready_connections(&self, but: Option<ConnId>) -> Vec<ConnId> {
        let st = self.lock("connections");
        let mut ids: Vec<ConnId> = st
            .conns
            .iter()
            .filter(|(id, c)| c.ready && Some(**id) != but)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// Whether a connection is still known.
    pub(crate) fn is_connected(&self, id: ConnId) -> bool {
        self.lock("Conn::is_connected").conns.contains_key(&id)
    }

    /// Closes a connection from the server side.
    pub(crate) fn close(&self, id: ConnId) {
        if let Some(c) = self.lock("Conn::close").conns.get(&id) {
            c.outbox.close();
        }
    }
}

/// The `snapshot` message for a connection, recording what it now holds, and the `window`
/// messages of its queries, to follow it.
fn snapshot<S: Send + Sync + 'static>(
    st: &mut State<S>,
    id: ConnId,
) -> Option<(Bytes, Vec<Bytes>)> {
    let State {
        colls, conns, log, ..
    } = st;
    let conn = conns.get_mut(&id)?;
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"t\":\"snapshot\",\"seq\":");
    wire::push_u64(&mut out, log.seq);
    out.extend_from_slice(b",\"data\":{");
    let mut windows = Vec::new();
    for (i, coll) in colls.iter_mut().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        wire::push_str(&mut out, coll.name());
        out.push(b':');
        windows.extend(coll.write_snapshot(id, conn, &mut out));
    }
    out.extend_from_slice(b"}}");
    Some((Bytes::from(out), windows))
}
