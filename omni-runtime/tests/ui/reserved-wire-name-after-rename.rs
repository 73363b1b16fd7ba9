use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Player {
    #[model(rename = "id")]
    player_id: u64,
    name: String,
}

#[derive(Model, Clone, Default)]
#[model(rename_all = "lowercase")]
struct Upload {
    #[allow(non_snake_case)]
    TMP: String,
    size: u32,
}

fn main() {}
