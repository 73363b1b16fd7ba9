use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
    #[model(readonly)]
    _password: String,
}

fn main() {}
