// Every mistake of a struct is reported in one build.
use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
#[model(rename_all = "kebab")]
struct Player {
    oid: u64,
    #[model(readonly)]
    _password: String,
    #[model(abc)]
    x: i32,
}

fn main() {}
