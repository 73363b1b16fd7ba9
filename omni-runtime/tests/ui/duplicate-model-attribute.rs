use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Player {
    #[model(readonly, readonly)]
    name: String,
    #[model(rename = "a")]
    #[model(rename = "b")]
    x: i32,
}

fn main() {}
