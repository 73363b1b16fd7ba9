use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
}

#[collection(model = Player, name = "all-players")]
struct Players;

fn main() {}
