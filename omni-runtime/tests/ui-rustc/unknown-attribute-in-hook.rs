use omni_runtime::prelude::*;

#[derive(Default)]
struct Session;

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
    x: i32,
}

impl Permissions<Session> for Player {
    fn can_read(&self, _ctx: &Access<Session, Self>, attr: Option<PlayerAttr>) -> bool {
        attr != Some(PlayerAttr::Nmae)
    }
}

fn main() {}
