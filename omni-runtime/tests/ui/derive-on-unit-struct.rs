use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Players;

fn main() {}
