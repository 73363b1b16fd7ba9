use omni_runtime::prelude::*;

#[derive(Model, Clone)]
struct Player {
    name: String,
}

fn main() {}
