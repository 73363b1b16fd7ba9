use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Tagged<T> {
    value: T,
    label: String,
}

// A parameter used only by a server-only field, and a const parameter.
#[derive(Model, Clone, Default)]
struct Buffered<T: Clone + Default + Send + Sync + 'static, const N: usize> {
    count: u32,
    _buffer: Vec<T>,
}

#[derive(Model, Clone, Default)]
struct Pair<A, B>
where
    A: Clone,
{
    first: A,
    second: Option<B>,
}

fn needs_model<M: Model>() {}

fn main() {
    needs_model::<Tagged<u8>>();
    needs_model::<Tagged<Vec<String>>>();
    needs_model::<Buffered<std::sync::Weak<()>, 3>>();
    needs_model::<Pair<String, i64>>();
    let _: TaggedChange<u8> = TaggedChange::Value(1);
    let _: BufferedChange = BufferedChange::Count(1);
    let _: PairChange<u8, bool> = PairChange::Second(None);
}
