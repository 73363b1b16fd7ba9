// A query names attributes through the model's enums: a misspelled one does not compile, in a
// filter or in an order.
use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Line {
    room: String,
    at: u64,
}

fn main() {
    let _ = Query::<Line>::new().eq(LineChange::Rooom("lobby".into()));
    let _ = Query::<Line>::new().order_by(LineAttr::Att, Dir::Desc);
}
