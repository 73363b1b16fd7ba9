use omni_runtime::prelude::*;

#[derive(Default)]
struct Session;
#[derive(Default)]
struct OtherSession;

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
}

impl Permissions<OtherSession> for Player {}

fn needs<M: Permissions<Session>>() {}

fn main() {
    needs::<Player>();
}
