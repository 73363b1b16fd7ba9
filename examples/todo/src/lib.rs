//! A todo list shared by everyone. Run it with `cargo run -p example-todo` and open the printed
//! address in two windows.
//!
//! Anyone may add a todo and toggle any todo; only its creator may remove it. The creator is
//! recognised by a secret token the page keeps in `localStorage` and sends with `identify`;
//! the token is stored in a server-only field and never sent to any client.
//!
//! In memory by default; `--data todos.redb` keeps the list in a durable redb file, so it
//! survives a restart (even a `kill -9`): every change is on disk before it is acknowledged.

use omni_runtime::prelude::*;

/// Per-connection state.
#[derive(Default, Debug)]
pub struct Session {
    /// The secret token from `identify`.
    pub token: Option<String>,
    /// Display name from `identify`.
    pub name: String,
}

/// One todo. `Serialize`/`Deserialize` let the durable store keep it whole.
#[derive(Model, Clone, Default, Debug, Serialize, Deserialize)]
pub struct Todo {
    /// What to do.
    pub title: String,
    /// Done or not; anyone may toggle it.
    pub done: bool,
    /// Creator's display name, filled in by the server.
    #[model(readonly)]
    pub owner: String,
    /// Creator's secret token: server-only.
    pub _owner_token: String,
}

impl Permissions<Session> for Todo {
    fn can_write(&self, ctx: &Access<Session, Self>, change: &TodoChange) -> bool {
        match change {
            TodoChange::Done(_) => true,
            TodoChange::Title(t) => {
                ctx.session().token.as_deref() == Some(&self._owner_token) && !t.trim().is_empty()
            }
            TodoChange::Owner(_) => false,
        }
    }
}

/// The shared list.
#[collection(model = Todo)]
pub struct Todos;

impl CollectionPermissions<Session> for Todos {
    fn can_create(&self, ctx: &Ctx<Session>, todo: &Todo) -> bool {
        ctx.session().token.is_some() && !todo.title.trim().is_empty() && todo.title.len() <= 200
    }

    fn can_destroy(&self, ctx: &Ctx<Session>, todo: &Todo) -> bool {
        ctx.session().token.as_deref() == Some(todo._owner_token.as_str())
    }

    fn on_create(&self, ctx: &Ctx<Session>, todo: &mut Todo) {
        todo.owner = ctx.session().name.clone();
        todo._owner_token = ctx.session().token.clone().unwrap_or_default();
    }
}

/// Arguments of `identify`.
#[derive(Deserialize, TS)]
pub struct Identify {
    /// A secret the page generated once and keeps.
    pub token: String,
    /// Display name.
    pub name: String,
}

/// Tells the server who this connection is, so its own todos can be removed.
pub async fn identify(conn: Conn<Session>, _world: World, req: Identify) -> Result<(), EventError> {
    if req.token.len() < 16 || req.token.len() > 128 {
        return Err(EventError::new("the token has 16 to 128 characters"));
    }
    conn.update_session(|s| {
        s.token = Some(req.token);
        s.name = req.name.trim().chars().take(32).collect();
    });
    Ok(())
}

/// The todo server, in memory: `.storage(RedbStore::open(path)?)` makes it durable.
pub fn app(public_dir: impl Into<std::path::PathBuf>) -> Omni<Session> {
    Omni::<Session>::new()
        .collection(Todos::with([Todo {
            title: "Try Omni".into(),
            owner: "omni".into(),
            ..Default::default()
        }]))
        .persist::<Todos>()
        .middleware(omni_runtime::storage::Logging)
        .event("identify", identify)
        .static_dir(public_dir)
        .development(cfg!(debug_assertions))
}

/// The todo example's command line.
#[derive(clap::Parser, Debug)]
#[command(version, about = "The Omni todo example")]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    /// Directory of the page.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/public"))]
    pub public: std::path::PathBuf,
    /// Keep the todos in this redb file (created if missing) instead of in memory only.
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
}

/// Runs the example with command-line arguments; prints the address it listens on.
pub async fn main_with(args: Args) -> std::io::Result<()> {
    let mut omni = app(args.public);
    if let Some(path) = &args.data {
        omni = omni.storage(RedbStore::open(path).map_err(std::io::Error::other)?);
    }
    let server = omni.try_build().map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind((args.host, args.port)).await?;
    let addr = listener.local_addr()?;
    let store = match &args.data {
        Some(path) => format!("stored in {}", path.display()),
        None => "in memory".to_owned(),
    };
    println!("omni todo listening on http://{addr}/ ({store}; open it in two browser windows)");
    server.serve(listener).await;
    Ok(())
}
