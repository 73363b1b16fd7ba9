//! One node of a cluster, for the cluster tests: `docs` are readable by everyone when `public`,
//! otherwise only by their `owner` (the `?user=` of the connection); `shout` broadcasts to the
//! clients of every node; `bump` increments a doc's `a` from server code (`update_with`), and
//! `stamp` sets its text (`update`).

use clap::Parser;
use omni_runtime::cluster::Nats;
use omni_runtime::prelude::*;

#[derive(Default)]
struct Session {
    user: String,
}

#[derive(Model, Clone, Default, Debug, Serialize, Deserialize)]
struct Doc {
    owner: String,
    public: bool,
    text: String,
    a: i64,
    b: i64,
    _note: String,
}

impl Permissions<Session> for Doc {
    fn can_read(&self, ctx: &Access<Session, Self>, _attr: Option<DocAttr>) -> bool {
        self.public || self.owner == ctx.session().user
    }
    fn can_write(&self, ctx: &Access<Session, Self>, _change: &DocChange) -> bool {
        self.public || self.owner == ctx.session().user
    }
}

#[collection(model = Doc)]
struct Docs;

impl CollectionPermissions<Session> for Docs {
    fn can_create(&self, _ctx: &Ctx<Session>, _doc: &Doc) -> bool {
        true
    }
    fn can_destroy(&self, ctx: &Ctx<Session>, doc: &Doc) -> bool {
        doc.public || doc.owner == ctx.session().user
    }
}

#[derive(Parser)]
struct Args {
    /// The NATS server.
    #[arg(long)]
    nats: String,
    /// The key-value bucket.
    #[arg(long, default_value = "omni-test")]
    bucket: String,
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// How long a write waits for NATS before it is refused, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let cluster = Nats::connect(&args.nats)
        .bucket(&args.bucket)
        .timeout(std::time::Duration::from_millis(args.timeout_ms))
        .open()
        .await?;
    let doc = |owner: &str, public: bool, text: &str| Doc {
        owner: owner.into(),
        public,
        text: text.into(),
        ..Doc::default()
    };
    let server = Omni::<Session>::new()
        .collection(Docs::with([
            doc("ann", true, "welcome"),
            doc("ann", false, "ann's diary"),
        ]))
        .persist::<Docs>()
        .cluster(cluster)
        .authenticate(|h: Handshake| async move {
            Ok(Session {
                user: h.query_param("user").unwrap_or_default().to_owned(),
            })
        })
        .event(
            "shout",
            |_conn: Conn<Session>, world: World, text: String| async move {
                world.broadcast("shout", &text);
                Ok::<_, EventError>(())
            },
        )
        .event(
            "bump",
            |_conn: Conn<Session>, world: World, oid: u64| async move {
                world
                    .collection::<Docs>()
                    .update_with(Oid::from_raw(oid), |d| {
                        let a = *d.a();
                        d.set_a(a + 1);
                    })
                    .await
                    .map_err(|e| EventError::new(e.to_string()))
            },
        )
        .event(
            "stamp",
            |_conn: Conn<Session>, world: World, (oid, text): (u64, String)| async move {
                world
                    .collection::<Docs>()
                    .update(Oid::from_raw(oid), |d| {
                        d.set_text(text);
                    })
                    .await
                    .map_err(|e| EventError::new(e.to_string()))
            },
        )
        .config(Config {
            static_dir: None,
            ..Config::default()
        })
        .metrics("/metrics")
        .try_build()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    println!(
        "cluster node listening on http://{}/",
        listener.local_addr()?
    );
    server.serve(listener).await;
    Ok(())
}
