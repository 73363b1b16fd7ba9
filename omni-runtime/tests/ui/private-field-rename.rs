use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
    #[model(rename = "password")]
    _password: String,
}

fn main() {}
