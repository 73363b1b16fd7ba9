use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
}

#[collection(model = Player)]
enum Players {
    All,
}

fn main() {}
