// A query is typed by its model: another model's attribute does not compile.
use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Line {
    room: String,
}

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
}

fn main() {
    let _ = Query::<Line>::new().eq(PlayerChange::Name("Ann".into()));
}
