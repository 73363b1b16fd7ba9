use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
#[model(readonly)]
struct Player {
    #[model(rename_all = "camelCase")]
    name: String,
}

fn main() {}
