use omni_runtime::prelude::*;

#[derive(Default)]
struct Session;

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
    admin: bool,
}

impl Permissions<Session> for Player {
    fn can_write(&self, _ctx: &Access<Session, Self>, change: &PlayerChange) -> bool {
        !matches!(change, PlayerChange::Admn(_))
    }
}

fn main() {}
