use omni_runtime::prelude::*;

#[collection]
struct Players;

#[collection(name = "others")]
struct Others;

fn main() {}
