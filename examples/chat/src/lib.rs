//! A chat with rooms. Run it with `cargo run -p example-chat` and open the printed address.
//!
//! A connection sees only the messages of the room it joined; joining another room re-checks
//! every permission with `conn.sync()`, so the old room's messages disappear and the new room's
//! appear. Only connections that picked a name may post.

use omni_runtime::prelude::*;

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

/// All messages of all rooms; each client sees its room's.
#[collection(model = Message)]
pub struct Messages;

impl CollectionPermissions<Session> for Messages {
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

/// The chat server. Everyone starts in the `lobby`.
pub fn app(public_dir: impl Into<std::path::PathBuf>) -> Omni<Session> {
    Omni::<Session>::new()
        .collection(Messages::with([Message {
            room: "lobby".into(),
            author: "omni".into(),
            text: "Welcome to the lobby. Pick a name to talk.".into(),
        }]))
        .on_connect(|conn: Conn<Session>| async move {
            conn.update_session(|s| s.room = "lobby".into());
        })
        .event("join", join)
        .static_dir(public_dir)
        .development(cfg!(debug_assertions))
}
