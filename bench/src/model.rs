//! The model of the benchmark: a game player everyone may read and write.

use omni_runtime::prelude::*;

/// A player of the 'game' scenario. Writers change `x`, `y`, `seq` and `ts` together.
#[derive(Model, Clone, Default, Debug, Serialize, Deserialize)]
pub struct Player {
    /// Display name, `p<index>`.
    pub name: String,
    /// Horizontal position.
    pub x: i32,
    /// Vertical position.
    pub y: i32,
    /// The writer's sequence number for this player: readers check it grows by one per change.
    pub seq: u64,
    /// When the writer sent the change: nanoseconds since the load generator's epoch.
    pub ts: i64,
}

/// Anyone may read and write every public attribute (the benchmark measures fan-out, not rules).
impl Permissions<()> for Player {
    fn can_write(&self, _ctx: &Access<(), Self>, _change: &PlayerChange) -> bool {
        true
    }
}

/// All players.
#[collection(model = Player)]
pub struct Players;

/// Anyone may create and remove players.
impl CollectionPermissions<()> for Players {
    fn can_create(&self, _ctx: &Ctx<'_, ()>, _model: &Player) -> bool {
        true
    }
    fn can_destroy(&self, _ctx: &Ctx<'_, ()>, _model: &Player) -> bool {
        true
    }
}

/// A record of the slow-backend scenario: written by the server itself, through a storage that
/// takes `--slow-backend-ms` per write, while the clients measure `players`.
#[derive(Model, Clone, Default, Debug)]
pub struct Record {
    /// Bumped by every write.
    pub n: u64,
}

/// Only the server sees and writes records: clients hold `players` only, as the generator
/// expects (the fan-out of a record still asks every connection's `can_read`).
impl Permissions<()> for Record {
    fn can_read(&self, _ctx: &Access<(), Self>, _attr: Option<RecordAttr>) -> bool {
        false
    }
}

/// The records of the slow-backend scenario.
#[collection(model = Record)]
pub struct Records;

impl CollectionPermissions<()> for Records {}

/// A chat line of the 'rooms' scenario (`omni-rooms-bench`): everyone may read and post.
#[derive(Model, Clone, Default, Debug)]
pub struct Line {
    /// The room, `r<index>`.
    pub room: String,
    /// The text.
    pub text: String,
    /// When the writer sent it: nanoseconds since the load generator's epoch.
    pub ts: i64,
}

impl Permissions<()> for Line {}

/// The lines of every room.
#[collection(model = Line)]
pub struct Lines;

/// Anyone may post; a query must name a room and ask for at most 1,000 lines.
impl CollectionPermissions<()> for Lines {
    fn can_create(&self, _ctx: &Ctx<'_, ()>, _model: &Line) -> bool {
        true
    }
    fn can_query(&self, _ctx: &Ctx<'_, ()>, query: &Query<Line>) -> bool {
        query.equality(LineAttr::Room).is_some() && query.max_models().is_some_and(|n| n <= 1000)
    }
}

/// How the clients of the 'rooms' scenario hold a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RoomsMode {
    /// A live query: the room's last `limit` lines (`Omni::queried`).
    Query,
    /// A channel subscription: every line of the room (`Omni::channels`).
    Channels,
}
