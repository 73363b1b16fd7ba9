//! A small server for the Node tests of channels, per-action rules and one-shot reads:
//! `rooms` is scoped by channel (`room`), `private` rooms need a name starting with `vip`, and
//! `archive` is not listed: clients read its models one by one.

use clap::Parser;
use omni_runtime::prelude::*;

#[derive(Default)]
struct Session {
    name: String,
}

#[derive(Model, Clone, Default, Debug)]
struct Post {
    room: String,
    text: String,
    _author_ip: String,
}

impl Permissions<Session> for Post {
    fn can_write(&self, _ctx: &Access<Session, Self>, _change: &PostChange) -> bool {
        true
    }
}

#[collection(model = Post)]
struct Posts;

impl CollectionPermissions<Session> for Posts {
    fn can_create(&self, _ctx: &Ctx<Session>, _post: &Post) -> bool {
        true
    }
    fn can_subscribe(&self, ctx: &Ctx<Session>, channel: &str) -> bool {
        channel != "private" || ctx.session().name.starts_with("vip")
    }
    fn on_create(&self, _ctx: &Ctx<Session>, post: &mut Post) {
        post._author_ip = "10.0.0.1".into();
    }
}

#[derive(Model, Clone, Default, Debug)]
struct Record {
    title: String,
}
impl Permissions<Session> for Record {}

#[collection(model = Record)]
struct Archive;
impl CollectionPermissions<Session> for Archive {}

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// `Config::resume_grace` in milliseconds (default: the runtime's, 60 s).
    #[arg(long)]
    resume_grace_ms: Option<u64>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let post = |room: &str, text: &str| Post {
        room: room.into(),
        text: text.into(),
        _author_ip: "127.0.0.1".into(),
    };
    let server = Omni::<Session>::new()
        .collection(Posts::with([
            post("red", "first red"),
            post("blue", "first blue"),
            post("private", "secret plans"),
        ]))
        .channels::<Posts>(|p| &p.room)
        .collection(Archive::with([Record {
            title: "1999".into(),
        }]))
        .rules::<Archive>(Rules::only(&[Action::Read]))
        .event(
            "name",
            |conn: Conn<Session>, _w: World, name: String| async move {
                conn.update_session(|s| s.name = name);
                Ok::<_, EventError>(())
            },
        )
        .config(Config {
            static_dir: None,
            resume_grace: args.resume_grace_ms.map_or(
                Config::default().resume_grace,
                std::time::Duration::from_millis,
            ),
            ..Config::default()
        })
        .build();
    let listener = tokio::net::TcpListener::bind((args.host, args.port)).await?;
    println!(
        "channels server listening on http://{}/",
        listener.local_addr()?
    );
    server.serve(listener).await;
    Ok(())
}
