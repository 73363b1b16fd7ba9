//! Small apps the tests share, besides the game example.

use omni_runtime::prelude::*;

/// Session of the document app.
#[derive(Default)]
pub(crate) struct DocSession {
    pub(crate) admin: bool,
    pub(crate) name: String,
}

/// A document whose `note` only admins may read; readable unless `hidden`.
#[derive(Model, Clone, Default, Debug, Serialize, Deserialize)]
pub(crate) struct Doc {
    pub(crate) title: String,
    pub(crate) note: String,
    pub(crate) hidden: bool,
    pub(crate) counter: i64,
    pub(crate) _owner_token: String,
}

impl Permissions<DocSession> for Doc {
    fn can_read(&self, ctx: &Access<DocSession, Self>, attr: Option<DocAttr>) -> bool {
        match attr {
            None => !self.hidden || ctx.session().admin,
            Some(DocAttr::Note) => ctx.session().admin,
            Some(_) => true,
        }
    }

    fn can_write(&self, ctx: &Access<DocSession, Self>, change: &DocChange) -> bool {
        match change {
            DocChange::Counter(_) | DocChange::Title(_) => true,
            DocChange::Note(_) | DocChange::Hidden(_) => ctx.session().admin,
        }
    }
}

#[collection(model = Doc)]
pub(crate) struct Docs;

impl CollectionPermissions<DocSession> for Docs {
    fn can_create(&self, _ctx: &Ctx<DocSession>, doc: &Doc) -> bool {
        !doc.title.is_empty()
    }
    fn can_destroy(&self, ctx: &Ctx<DocSession>, _doc: &Doc) -> bool {
        ctx.session().admin
    }
}

#[derive(Deserialize, TS)]
pub(crate) struct BecomeAdmin {
    pub(crate) on: bool,
}

#[derive(Deserialize, TS)]
pub(crate) struct Sleep {
    pub(crate) ms: u64,
    pub(crate) echo: String,
}

/// The document app: `admin` toggles the session flag and syncs; `sleep` answers after a delay.
pub(crate) fn docs_app(seed: Vec<Doc>) -> Omni<DocSession> {
    Omni::<DocSession>::new()
        .collection(Docs::with(seed))
        .event(
            "admin",
            |conn: Conn<DocSession>, _world: World, req: BecomeAdmin| async move {
                conn.update_session(|s| s.admin = req.on);
                conn.sync();
                Ok::<_, EventError>(req.on)
            },
        )
        .event(
            "sleep",
            |_conn: Conn<DocSession>, _world: World, req: Sleep| async move {
                tokio::time::sleep(std::time::Duration::from_millis(req.ms)).await;
                Ok::<_, EventError>(req.echo)
            },
        )
        .event(
            "slow_admin",
            |conn: Conn<DocSession>, _world: World, req: BecomeAdmin| async move {
                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                conn.update_session(|s| s.admin = req.on);
                Ok::<_, EventError>(req.on)
            },
        )
        .event(
            "fail",
            |_conn: Conn<DocSession>, _world: World, _req: ()| async move {
                Err::<(), _>(EventError::new("this event always fails"))
            },
        )
        .event(
            "panic",
            |_conn: Conn<DocSession>, _world: World, _req: ()| async move {
                if true {
                    panic!("handler bug");
                }
                Ok::<(), EventError>(())
            },
        )
}

pub(crate) fn doc(title: &str, note: &str) -> Doc {
    Doc {
        title: title.into(),
        note: note.into(),
        _owner_token: "tok".into(),
        ..Default::default()
    }
}
