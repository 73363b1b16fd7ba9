use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
#[model(rename_all = "camelCase")]
struct Player {
    high_score: u32,
    #[model(rename = "highScore")]
    best: u32,
}

fn main() {}
