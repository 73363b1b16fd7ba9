use omni_runtime::prelude::*;

#[derive(Default)]
struct Session;

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
}

impl Permissions<Session> for Player {
    fn can_read(&self, _ctx: &Access<Session, Self>, _attr: Option<&str>) -> bool {
        true
    }
}

fn main() {}
