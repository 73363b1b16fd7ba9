//! TypeScript names and declarations of Rust types, through ts-rs.

use std::any::TypeId;
use std::collections::HashSet;

use omni_client_gen::schema::{Schema, TypeDecl};
use ts_rs::{Config, TS, TypeVisitor};

/// The ts-rs configuration: 64-bit integers are plain JSON numbers on the wire.
pub(crate) fn config() -> Config {
    Config::new().with_large_int("number")
}

struct Collect<'a> {
    cfg: &'a Config,
    schema: &'a mut Schema,
    seen: HashSet<TypeId>,
}

impl TypeVisitor for Collect<'_> {
    fn visit<T: TS + 'static + ?Sized>(&mut self) {
        if !self.seen.insert(TypeId::of::<T>()) {
            return;
        }
        if T::output_path().is_some() {
            self.schema.add_type(TypeDecl {
                name: T::ident(self.cfg),
                decl: T::decl(self.cfg),
            });
        }
        T::visit_dependencies(self);
    }
}

/// The TypeScript name of `T`, adding the declarations of the user types it mentions to `schema`.
pub(crate) fn ts_type<T: TS + 'static + ?Sized>(schema: &mut Schema) -> String {
    let cfg = config();
    let mut collect = Collect {
        cfg: &cfg,
        schema,
        seen: HashSet::new(),
    };
    collect.visit::<T>();
    T::name(&cfg)
}
