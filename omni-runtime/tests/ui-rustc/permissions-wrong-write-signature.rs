use omni_runtime::prelude::*;

#[derive(Default)]
struct Session;

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
}

impl Permissions<Session> for Player {
    fn can_write(&self, _ctx: &Access<Session, Self>, _change: &PlayerAttr) -> bool {
        true
    }
}

fn main() {}
