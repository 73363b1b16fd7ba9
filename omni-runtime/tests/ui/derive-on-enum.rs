use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
enum Player {
    #[default]
    Online,
    Offline,
}

fn main() {}
