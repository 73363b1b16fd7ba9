use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Car {
    model: String,
    password: String,
    _password: String,
}

fn main() {}
