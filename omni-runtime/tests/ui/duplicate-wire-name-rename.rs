use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
    #[model(rename = "name")]
    nickname: String,
}

fn main() {}
