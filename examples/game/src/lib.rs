//! The Omni.js players game, rebuilt on Omni for Rust.
//!
//! Run it with `cargo run -p example-game` and open the address it prints in two browser
//! windows. Log in with any name and password (the first login with a name creates the player),
//! then move with the arrow keys or by clicking: the other window sees you move. Each player can
//! move only itself; the password never leaves the server.

use omni_runtime::prelude::*;

pub mod token;

pub use token::Tokens;

/// Per-connection state: which player this connection logged in as.
#[derive(Default, Debug)]
pub struct Session {
    /// The logged-in player, if any.
    pub player: Option<Oid<Player>>,
    /// The logged-in player's name.
    pub name: String,
}

/// A player on the board.
#[derive(Model, Clone, Default, Debug, Serialize, Deserialize)]
pub struct Player {
    /// Display name; unique.
    #[model(readonly)]
    pub name: String,
    /// Horizontal position, 0..=WIDTH.
    pub x: i32,
    /// Vertical position, 0..=HEIGHT.
    pub y: i32,
    /// Online players are visible to everyone; offline ones only to themselves.
    pub online: bool,
    /// Hue of the player's dot, 0..360.
    pub color: u16,
    /// Server-only: never sent to any client.
    pub _password: String,
    /// Server-only: the cluster node the player is online on (0 on a single server). A node
    /// that dies never marks its players offline; a player online on another node can be taken
    /// over with its login token or password.
    #[serde(default)]
    pub _node: u64,
}

/// Board size in pixels.
pub const WIDTH: i32 = 640;
/// Board size in pixels.
pub const HEIGHT: i32 = 400;

impl Permissions<Session> for Player {
    fn can_read(&self, ctx: &Access<Session, Self>, _attr: Option<PlayerAttr>) -> bool {
        self.online || ctx.session().player == Some(ctx.oid())
    }

    fn can_write(&self, ctx: &Access<Session, Self>, change: &PlayerChange) -> bool {
        let own = ctx.session().player == Some(ctx.oid());
        match change {
            PlayerChange::X(x) => own && (0..=WIDTH).contains(x),
            PlayerChange::Y(y) => own && (0..=HEIGHT).contains(y),
            PlayerChange::Color(c) => own && *c < 360,
            _ => false,
        }
    }
}

/// Everyone who ever logged in.
#[collection(model = Player)]
pub struct Players;

impl CollectionPermissions<Session> for Players {}

/// A chat line under the board.
#[derive(Model, Clone, Default, Debug, Serialize, Deserialize)]
pub struct Message {
    /// The text.
    pub text: String,
    /// Name of the author, filled in by the server.
    #[model(readonly)]
    pub author: String,
    /// OID of the author, filled in by the server.
    #[model(readonly)]
    pub author_oid: u64,
}

impl Permissions<Session> for Message {}

/// The chat under the board: logged-in players may post, and delete their own lines.
#[collection(model = Message)]
pub struct Messages;

impl CollectionPermissions<Session> for Messages {
    fn can_create(&self, ctx: &Ctx<Session>, model: &Message) -> bool {
        ctx.session().player.is_some() && !model.text.trim().is_empty() && model.text.len() <= 500
    }

    fn can_destroy(&self, ctx: &Ctx<Session>, model: &Message) -> bool {
        ctx.session().player.map(|p| p.raw()) == Some(model.author_oid)
    }

    fn on_create(&self, ctx: &Ctx<Session>, model: &mut Message) {
        model.author = ctx.session().name.clone();
        model.author_oid = ctx.session().player.map(|p| p.raw()).unwrap_or_default();
    }
}

/// Arguments of the `login` event.
#[derive(Serialize, Deserialize, TS)]
pub struct Login {
    /// Player name; a new name creates a player.
    pub name: String,
    /// Password; must match on later logins.
    pub password: String,
}

/// Reply of the `login` event.
#[derive(Serialize, Deserialize, TS)]
pub struct LoggedIn {
    /// The player's OID: find it in `Omni.collections.players`.
    pub oid: Oid<Player>,
    /// A signed login token: connect with `?token=...` (or send it as the `omni_game` cookie)
    /// and the connection starts logged in as this player, without the password.
    pub token: String,
}

/// The longest name, in characters (the page's `maxlength`).
pub const MAX_NAME_CHARS: usize = 24;
/// The longest password, in bytes: the server keeps every player's password in memory.
pub const MAX_PASSWORD_BYTES: usize = 128;

/// Logs a connection in as a player, creating the player on first use.
pub async fn login(
    conn: Conn<Session>,
    world: World,
    req: Login,
    tokens: Tokens,
) -> Result<LoggedIn, EventError> {
    login_on(conn, world, req, tokens, 0).await
}

/// [`login`] on cluster node `node`.
pub async fn login_on(
    conn: Conn<Session>,
    world: World,
    req: Login,
    tokens: Tokens,
    node: u64,
) -> Result<LoggedIn, EventError> {
    let name = req.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(EventError::new(format!(
            "a name has 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    if req.password.len() > MAX_PASSWORD_BYTES {
        return Err(EventError::new(format!(
            "a password has at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if conn.session(|s| s.player.is_some()).unwrap_or(false) {
        return Err(EventError::new("this connection is already logged in"));
    }
    let players = world.collection::<Players>();
    let n = players.len() as i32;
    let password = req.password.clone();
    // Atomic: two logins with one new name at once create one player, not two.
    let (oid, created) = players
        .find_or_insert(
            |p| p.name == name,
            || Player {
                name: name.clone(),
                x: 40 + (n * 97) % (WIDTH - 80),
                y: 40 + (n * 53) % (HEIGHT - 80),
                online: false,
                color: ((n * 67) % 360) as u16,
                _password: password,
                _node: node,
            },
        )
        .await?;
    if !created {
        let player = players.get(oid).ok_or("the player was just removed")?;
        if player._password != req.password {
            return Err(EventError::new("wrong password"));
        }
        if player.online && player._node == node {
            return Err(EventError::new(format!(
                "`{name}` is already playing elsewhere"
            )));
        }
    }
    conn.update_session(|s| {
        s.player = Some(oid);
        s.name = name.clone();
    });
    players
        .update(oid, |p| {
            p.set_online(true);
            p.set_node(node);
        })
        .await?;
    conn.sync();
    world.broadcast("joined", &name);
    let token = tokens.issue_at(oid, token::now());
    Ok(LoggedIn { oid, token })
}

/// Checks a connection's login token (query `?token=` or the `omni_game` cookie) before the
/// WebSocket opens: no token, an anonymous session (log in with the `login` event); a good one,
/// a session logged in as its player (made online by [`resume`]); a tampered or expired one,
/// HTTP 401.
pub async fn authenticate(handshake: Handshake, tokens: Tokens) -> Result<Session, AuthError> {
    let token = handshake
        .query_param("token")
        .or_else(|| handshake.cookie(token::COOKIE).map(str::to_owned));
    let Some(token) = token else {
        return Ok(Session::default());
    };
    let player = tokens.verify_at(&token, token::now())?;
    Ok(Session {
        player: Some(player),
        name: String::new(),
    })
}

/// Connect hook: a connection that came with a good token plays as its player, if that player
/// still exists and is not playing elsewhere (otherwise it starts logged out).
pub async fn resume(conn: Conn<Session>) {
    resume_on(conn, 0).await
}

/// [`resume`] on cluster node `node`: a player online on another node is taken over (that node
/// may be gone without having marked it offline).
pub async fn resume_on(conn: Conn<Session>, node: u64) {
    let Some(Some(oid)) = conn.session(|s| s.player) else {
        return;
    };
    let players = conn.world().collection::<Players>();
    let name = match players.get(oid) {
        Some(p) if !p.online || p._node != node => p.name.clone(),
        _ => {
            conn.update_session(|s| s.player = None);
            return;
        }
    };
    conn.update_session(|s| s.name = name.clone());
    if players
        .update(oid, |p| {
            p.set_online(true);
            p.set_node(node);
        })
        .await
        .is_err()
    {
        conn.update_session(|s| s.player = None);
        return;
    }
    conn.world().broadcast("joined", &name);
}

/// Reply of the `me` event: the player this connection plays as, if any.
#[derive(Serialize, Deserialize, TS)]
pub struct Me {
    /// The player's OID, or `null` when logged out.
    pub oid: Option<Oid<Player>>,
}

/// Arguments of the `me` event (none).
#[derive(Serialize, Deserialize, TS)]
pub struct NoArgs {}

/// Which player this connection plays as (after a reload with a token, the page asks).
pub async fn me(conn: Conn<Session>, _world: World, _req: NoArgs) -> Result<Me, EventError> {
    Ok(Me {
        oid: conn.session(|s| s.player).flatten(),
    })
}

/// Marks the connection's player offline.
pub async fn logout(conn: Conn<Session>) {
    if let Some(Some(oid)) = conn.session(|s| s.player) {
        let _ = conn
            .world()
            .collection::<Players>()
            .update(oid, |p| {
                p.set_online(false);
            })
            .await;
    }
}

/// What the board shows under the players: kept up to date by an observer of `players`.
#[derive(Model, Clone, Default, Debug, Serialize, Deserialize)]
pub struct Board {
    /// Moves made by all players since the server started.
    pub moves: u64,
    /// Who moved last.
    pub last_mover: String,
}

impl Permissions<Session> for Board {}

/// The one `Board` model (everyone reads it; only the server writes it).
#[collection(model = Board)]
pub struct Boards;

impl CollectionPermissions<Session> for Boards {}

/// Observes every committed change of a player: a move (x or y) counts on the board. It runs
/// after the move is applied, outside the engine, and its write reaches every client, the mover
/// included.
pub async fn count_move(world: World, event: Observed<Player>) {
    let Observation::Updated { new, changed, .. } = event.change else {
        return;
    };
    if !changed
        .iter()
        .any(|a| matches!(a, PlayerAttr::X | PlayerAttr::Y))
    {
        return;
    }
    let boards = world.collection::<Boards>();
    if let Some((oid, _)) = boards.find(|_| true) {
        let _ = boards
            .update_with(oid, move |b| {
                let moves = b.moves + 1;
                b.set_moves(moves);
                b.set_last_mover(new.name.clone());
            })
            .await;
    }
}

/// The game server: three collections, an observer, the `login` and `me` events, login tokens
/// checked at connect, the connect and disconnect hooks, and Prometheus metrics at `/metrics`.
/// Tokens are signed with a random key and last a week.
pub fn app(public_dir: impl Into<std::path::PathBuf>) -> Omni<Session> {
    app_with(
        public_dir,
        Tokens::random(std::time::Duration::from_secs(7 * 24 * 3600)),
    )
}

/// The game server as one node of a cluster (`--nats`): every collection lives in the
/// cluster's bucket, so the players, the chat and the board are the same on every node. All
/// nodes must sign tokens with the same key, so that a player logged in on one node stays
/// logged in on another.
pub fn node(
    public_dir: impl Into<std::path::PathBuf>,
    tokens: Tokens,
    cluster: omni_runtime::cluster::Cluster,
) -> Omni<Session> {
    let id = cluster.node();
    app_on(public_dir, tokens, id)
        .persist::<Players>()
        .persist::<Messages>()
        .persist::<Boards>()
        .cluster(cluster)
}

/// The game server with the given token signer.
pub fn app_with(public_dir: impl Into<std::path::PathBuf>, tokens: Tokens) -> Omni<Session> {
    app_on(public_dir, tokens, 0)
}

/// The game server as cluster node `node` (0: a single server).
fn app_on(public_dir: impl Into<std::path::PathBuf>, tokens: Tokens, node: u64) -> Omni<Session> {
    let (for_login, for_auth) = (tokens.clone(), tokens);
    Omni::<Session>::new()
        .collection(Players::with([]))
        .collection(Messages::with([]))
        .collection(Boards::with([Board::default()]))
        .observe::<Players, _, _>(count_move)
        .event("login", move |conn, world, req| {
            login_on(conn, world, req, for_login.clone(), node)
        })
        .event("me", me)
        .authenticate(move |handshake| authenticate(handshake, for_auth.clone()))
        .on_connect(move |conn| resume_on(conn, node))
        .on_disconnect(logout)
        .static_dir(public_dir)
        .development(cfg!(debug_assertions))
        .metrics("/metrics")
}
