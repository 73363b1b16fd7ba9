use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Pos(i32, i32);

fn main() {}
