use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
#[model(name = "my player")]
struct Player {
    #[model(rename = "player-name")]
    name: String,
    #[model(rename = "_x")]
    x: i32,
}

fn main() {}
