use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
}

#[collection(model = Player, channel = "lobby")]
struct Players;

fn main() {}
