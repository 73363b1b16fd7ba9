use omni_runtime::prelude::*;

#[derive(Model, Default)]
struct Player {
    name: String,
}

fn main() {}
