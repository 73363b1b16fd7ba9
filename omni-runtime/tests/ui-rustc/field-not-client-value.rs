use omni_runtime::prelude::*;

#[derive(Clone, Default)]
struct Secret {
    key: Vec<u8>,
}

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
    secret: Secret,
    _fine: Secret,
}

fn main() {}
