// A server-only field has no attribute: hooks cannot name it.
use omni_runtime::prelude::*;

#[derive(Default)]
struct Session;

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
    _password: String,
}

impl Permissions<Session> for Player {
    fn can_read(&self, _ctx: &Access<Session, Self>, attr: Option<PlayerAttr>) -> bool {
        attr != Some(PlayerAttr::Password)
    }
}

fn main() {}
