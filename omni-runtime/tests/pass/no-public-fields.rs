#![deny(warnings)]
use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Secretive {
    _only: String,
}

#[derive(Model, Clone, Default)]
struct Empty {}

fn main() {
    assert!(Secretive::ATTRS.is_empty());
    assert!(Empty::ATTRS.is_empty());
    let mut s = Secretive::default();
    let mut changed = omni_runtime::model::AttrSet::EMPTY;
    s.view_mut(&mut changed).set_only("x".into());
    assert!(changed.is_empty());
}
