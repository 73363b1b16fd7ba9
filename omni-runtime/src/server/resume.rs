//! Connections that outlive a drop: a connection whose client went away waits, parked, for a
//! grace period (`Config::resume_grace`); a new socket that presents its resume token takes it
//! over with its session, channels and kept answers, and is sent only what changed since the
//! last log position its client saw (docs/PROTOCOL.md, "Resume").

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::task::JoinHandle;

use crate::ids::ConnId;
use crate::outbox::Outbox;

/// A resumable connection, attached to a socket or parked.
struct Parked {
    id: ConnId,
    outbox: Arc<Outbox>,
    /// The highest request id the connection's client sent so far.
    last_req: Arc<AtomicU64>,
    attached: bool,
    /// Bumped at every park and claim, so a grace timer only ends the parking it started.
    generation: u64,
    /// The dropped socket's writer task, still finishing the writes it had queued.
    writer: Option<JoinHandle<()>>,
}

/// What a resuming socket takes over.
pub(super) struct Claim {
    pub(super) id: ConnId,
    pub(super) outbox: Arc<Outbox>,
    pub(super) last_req: Arc<AtomicU64>,
    pub(super) writer: Option<JoinHandle<()>>,
}

/// Why a resume token could not be claimed.
pub(super) enum Unclaimed {
    /// Unknown: expired, ended, or never issued.
    Unknown,
    /// Its connection is still attached to a socket; that socket was told to let go, so a
    /// retry in a moment succeeds.
    Attached,
}

/// The resumable connections of a server, by resume token.
#[derive(Default)]
pub(super) struct Resumable {
    map: parking_lot::Mutex<HashMap<String, Parked>>,
}

impl Resumable {
    /// Registers a new, attached connection.
    pub(super) fn register(
        &self,
        token: &str,
        id: ConnId,
        outbox: Arc<Outbox>,
        last_req: Arc<AtomicU64>,
    ) {
        let parked = Parked {
            id,
            outbox,
            last_req,
            attached: true,
            generation: 0,
            writer: None,
        };
        self.map.lock().insert(token.to_owned(), parked);
    }

    /// Parks a connection whose socket dropped; the generation its grace timer must present.
    /// The writer back if the token is unknown.
    pub(super) fn park(
        &self,
        token: &str,
        writer: Option<JoinHandle<()>>,
    ) -> Result<u64, Option<JoinHandle<()>>> {
        let mut map = self.map.lock();
        let Some(parked) = map.get_mut(token) else {
            return Err(writer);
        };
        parked.attached = false;
        parked.generation += 1;
        parked.writer = writer;
        Ok(parked.generation)
    }

    /// Takes over a parked connection.
    pub(super) fn claim(&self, token: &str) -> Result<Claim, Unclaimed> {
        let mut map = self.map.lock();
        let parked = map.get_mut(token).ok_or(Unclaimed::Unknown)?;
        if parked.attached {
            // A socket the server has not yet seen drop (half-open): its sender lets go.
            parked.outbox.kick();
            return Err(Unclaimed::Attached);
        }
        parked.attached = true;
        parked.generation += 1;
        Ok(Claim {
            id: parked.id,
            outbox: parked.outbox.clone(),
            last_req: parked.last_req.clone(),
            writer: parked.writer.take(),
        })
    }

    /// Ends a parking whose grace period is over, if it is still that parking; its writer.
    pub(super) fn expire(&self, token: &str, generation: u64) -> Option<Option<JoinHandle<()>>> {
        let mut map = self.map.lock();
        let parked = map.get(token)?;
        if parked.attached || parked.generation != generation {
            return None;
        }
        map.remove(token).map(|p| p.writer)
    }

    /// Forgets a connection that ended for good.
    pub(super) fn forget(&self, token: &str) {
        self.map.lock().remove(token);
    }
}

/// A new resume token: 128 random bits from the operating system, in hex.
pub(super) fn token() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
