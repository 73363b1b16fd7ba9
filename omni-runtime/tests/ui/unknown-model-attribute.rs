use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
#[model(rename_al = "camelCase")]
struct Player {
    #[model(read_only)]
    name: String,
    #[model(hidden = true)]
    x: i32,
}

fn main() {}
