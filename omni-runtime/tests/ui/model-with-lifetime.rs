use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Player<'a> {
    name: &'a str,
}

fn main() {}
