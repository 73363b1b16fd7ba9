#![deny(warnings)]
//! A public model whose public fields have crate-private types: the generated enums and
//! accessors must not trip `private_interfaces`.

use omni_runtime::prelude::*;

#[derive(Serialize, Deserialize, TS, Clone, Default)]
struct Pos {
    x: i32,
}

/// A model.
#[derive(Model, Clone, Default)]
pub struct Player {
    pos: Pos,
}

fn main() {
    let _ = PlayerChange::Pos(Pos::default());
}
