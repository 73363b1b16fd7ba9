use omni_runtime::prelude::*;

#[derive(Clone, Default)]
struct Secret;

#[derive(Model, Clone, Default)]
struct Tagged<T> {
    value: T,
    label: String,
}

fn needs_model<M: Model>() {}

fn main() {
    needs_model::<Tagged<u8>>();
    needs_model::<Tagged<Secret>>();
}
