// A query's value has the attribute's Rust type: a number for a `String` room does not compile.
use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Line {
    room: String,
    at: u64,
}

fn main() {
    let _ = Query::<Line>::new().eq(LineChange::Room(5)).limit(50);
}
