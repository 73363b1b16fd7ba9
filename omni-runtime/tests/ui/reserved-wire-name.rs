use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Player {
    oid: u64,
    t: String,
    name: String,
}

fn main() {}
