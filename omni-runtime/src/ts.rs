//! TypeScript names and declarations of Rust types, through ts-rs.

use omni_client_gen::schema::Schema;
use ts_rs::TS;

use crate::__private::{add_type_decls, ts_config};

/// The TypeScript name of `T`, adding the declarations of the user types it mentions to `schema`.
pub(crate) fn ts_type<T: TS + 'static + ?Sized>(schema: &mut Schema) -> String {
    let cfg = ts_config();
    add_type_decls::<T>(schema, &cfg);
    T::name(&cfg)
}
