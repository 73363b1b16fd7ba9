use omni_runtime::prelude::*;

#[derive(Clone, Default)]
struct Player {
    name: String,
}

#[collection(model = Player)]
struct Players;

fn main() {}
