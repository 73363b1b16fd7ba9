//! A chat with rooms. Run it with `cargo run -p example-chat` and open the printed address.
//!
//! Messages are a *queried* collection: a page holds none of them until it asks, with a live
//! query, for the last 50 lines of its room (`where: { room }`, newest first, `limit: 50`), and
//! "load older" asks for 50 more. So however long a room lives, a page holds what it asked for,
//! and the server keeps the last [`KEPT_PER_ROOM`] lines of each room (older ones are removed as
//! new ones arrive). A connection may read and query only the room it joined; joining another
//! room re-checks every permission with `conn.sync()`. Only connections that picked a name may
//! post.

use omni_runtime::prelude::*;

/// Lines the server keeps per room: posting the next one removes the oldest.
pub const KEPT_PER_ROOM: usize = 500;

/// The largest page a query may ask for.
pub const MAX_PAGE: usize = KEPT_PER_ROOM;

/// Per-connection state.
#[derive(Default, Debug)]
pub struct Session {
    /// The name chosen with `join`; `None` until then.
    pub name: Option<String>,
    /// The room joined.
    pub room: String,
}

/// One chat message.
#[derive(Model, Clone, Default, Debug)]
pub struct Message {
    /// The room the message belongs to.
    #[model(readonly)]
    pub room: String,
    /// Author's name, filled in by the server.
    #[model(readonly)]
    pub author: String,
    /// The text. Set by its author when posting; not `readonly`, which would refuse it in the
    /// `add` too. Nobody may change it afterwards: `can_write` keeps its default (refuse).
    pub text: String,
}

impl Permissions<Session> for Message {
    fn can_read(&self, ctx: &Access<Session, Self>, _attr: Option<MessageAttr>) -> bool {
        ctx.session().room == self.room
    }
}

/// All messages of all rooms; each client queries its room's.
#[collection(model = Message)]
pub struct Messages;

impl CollectionPermissions<Session> for Messages {
    /// A query names the connection's room and asks for at most [`MAX_PAGE`] lines.
    fn can_query(&self, ctx: &Ctx<Session>, query: &Query<Message>) -> bool {
        matches!(query.equality(MessageAttr::Room), Some(MessageChange::Room(r)) if r == ctx.session().room)
            && query.max_models().is_some_and(|n| n <= MAX_PAGE)
    }

    fn can_create(&self, ctx: &Ctx<Session>, message: &Message) -> bool {
        ctx.session().name.is_some()
            && !message.text.trim().is_empty()
            && message.text.len() <= 1000
    }

    fn on_create(&self, ctx: &Ctx<Session>, message: &mut Message) {
        message.room = ctx.session().room.clone();
        message.author = ctx.session().name.clone().unwrap_or_default();
    }
}

/// Arguments of the `join` event.
#[derive(Deserialize, TS)]
pub struct Join {
    /// Display name.
    pub name: String,
    /// Room to join.
    pub room: String,
}

/// Joins (or switches to) a room under a name; the client's messages follow the room.
pub async fn join(conn: Conn<Session>, _world: World, req: Join) -> Result<String, EventError> {
    let name = req.name.trim();
    let room = req.room.trim();
    if name.is_empty() || name.len() > 32 || room.is_empty() || room.len() > 32 {
        return Err(EventError::new("name and room have 1 to 32 characters"));
    }
    conn.update_session(|s| {
        s.name = Some(name.to_owned());
        s.room = room.to_owned();
    });
    conn.sync();
    Ok(room.to_owned())
}

/// Keeps the last [`KEPT_PER_ROOM`] lines of the room a new line was posted in.
async fn trim(world: World, event: Observed<Message>) {
    let Observation::Created(line) = event.change else {
        return;
    };
    let messages = world.collection::<Messages>();
    let mut oids: Vec<Oid<Message>> = messages
        .all()
        .into_iter()
        .filter(|(_, m)| m.room == line.room)
        .map(|(oid, _)| oid)
        .collect();
    if oids.len() > KEPT_PER_ROOM {
        oids.sort();
        for oid in &oids[..oids.len() - KEPT_PER_ROOM] {
            let _ = messages.remove(*oid).await;
        }
    }
}

/// The chat server. Everyone starts in the `lobby`.
pub fn app(public_dir: impl Into<std::path::PathBuf>) -> Omni<Session> {
    Omni::<Session>::new()
        .collection(Messages::with([Message {
            room: "lobby".into(),
            author: "omni".into(),
            text: "Welcome to the lobby. Pick a name to talk.".into(),
        }]))
        .queried::<Messages>()
        .observe::<Messages, _, _>(trim)
        .on_connect(|conn: Conn<Session>| async move {
            conn.update_session(|s| s.room = "lobby".into());
        })
        .event("join", join)
        .static_dir(public_dir)
        .development(cfg!(debug_assertions))
}
