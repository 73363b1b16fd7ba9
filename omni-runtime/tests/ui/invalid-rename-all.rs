use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
#[model(rename_all = "kebab-case")]
struct Player {
    player_name: String,
}

fn main() {}
