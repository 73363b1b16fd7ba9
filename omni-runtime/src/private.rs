//! Support for the code `#[derive(Model)]` and `#[collection]` generate. Not public API.
//!
//! Generated code names only paths in here (`::omni_runtime::__private::…`), so users depend on
//! `omni_runtime` alone and the expansion stays small.

pub use omni_client_gen::schema;
pub use omni_macros::SerdeAttributes;
pub use serde;
pub use serde_json;
pub use ts_rs;

pub use crate::collection::{Collection, Seeded};
pub use crate::error::DecodeError;
pub use crate::model::{AttrSet, Attribute, Model};

use std::any::TypeId;
use std::collections::HashSet;
use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use ts_rs::{TS, TypeVisitor};

/// A type that public model fields may have: it travels to clients as JSON and has a TypeScript
/// type. Implemented for every type that is `Serialize + DeserializeOwned + TS + Clone + Send +
/// Sync + 'static`; the derive requires it of each public field's type.
///
/// Serde and ts-rs are deliberately not supertraits: the derive's bound `FieldType: ClientValue`
/// then fails as a whole, with the message below on the field's type, rather than as
/// "`Serialize` is not implemented". The methods are what generated code uses instead.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent to clients, so it cannot be the type of a public model field",
    label = "this field's type cannot be sent to clients",
    note = "public model fields need `Serialize`, `Deserialize`, `TS`, `Clone`, `Send`, `Sync` and `'static`: \
            add `#[derive(Serialize, Deserialize, TS, Clone)]` to the type, \
            or keep the field on the server by naming it with a leading `_`"
)]
pub trait ClientValue: Clone + Send + Sync + 'static {
    /// Appends the JSON encoding to `out`.
    fn encode_json(&self, out: &mut Vec<u8>);
    /// Decodes a client's JSON value for attribute `attr` of `model`.
    fn decode_json(
        model: &'static str,
        attr: &str,
        value: &serde_json::Value,
    ) -> Result<Self, DecodeError>
    where
        Self: Sized;
    /// Formats the value as JSON, for `Debug` of change enums.
    fn debug_json(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
    /// The TypeScript type, e.g. `Array<Pos> | null`.
    fn ts_name(cfg: &ts_rs::Config) -> String;
    /// Adds the declarations of the user types this type mentions to `schema`.
    fn add_type_decls(schema: &mut schema::Schema, cfg: &ts_rs::Config);
}

impl<T> ClientValue for T
where
    T: Serialize + DeserializeOwned + TS + Clone + Send + Sync + 'static,
{
    fn encode_json(&self, out: &mut Vec<u8>) {
        encode(self, out)
    }
    fn decode_json(
        model: &'static str,
        attr: &str,
        value: &serde_json::Value,
    ) -> Result<Self, DecodeError> {
        T::deserialize(value).map_err(|e| DecodeError::wrong_type(model, attr, &expected::<T>(), e))
    }
    fn debug_json(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(json) => f.write_str(&json),
            Err(_) => f.write_str("<unencodable>"),
        }
    }
    fn ts_name(cfg: &ts_rs::Config) -> String {
        T::name(cfg)
    }
    fn add_type_decls(schema: &mut schema::Schema, cfg: &ts_rs::Config) {
        add_type_decls::<T>(schema, cfg)
    }
}

/// Appends the JSON encoding of `value` to `out`.
pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    crate::protocol::encode::json(value, out)
}

/// Decodes a client's value for one attribute.
pub fn decode<T: DeserializeOwned>(
    model: &'static str,
    attr: &str,
    expected: &str,
    value: &serde_json::Value,
) -> Result<T, DecodeError> {
    T::deserialize(value).map_err(|e| DecodeError::wrong_type(model, attr, expected, e))
}

/// Decodes a client's value for the attribute `attr` of `model`; the error names the expected
/// type in TypeScript and in Rust: `expected number (i32)`.
pub fn decode_attr<T: ClientValue>(
    model: &'static str,
    attr: &str,
    value: &serde_json::Value,
) -> Result<T, DecodeError> {
    T::decode_json(model, attr, value)
}

/// Appends the JSON encoding of an attribute's value to `out`.
pub fn encode_attr<T: ClientValue>(value: &T, out: &mut Vec<u8>) {
    value.encode_json(out)
}

/// `number (i32)`, `string | null (Option<String>)`.
pub fn expected<T: TS + ?Sized>() -> String {
    format!(
        "{} ({})",
        T::name(&ts_config()),
        short_type_name(std::any::type_name::<T>())
    )
}

/// `alloc::vec::Vec<core::option::Option<my_app::Pos>>` -> `Vec<Option<Pos>>`.
fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment_start = 0;
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.truncate(segment_start);
        } else {
            out.push(c);
            if !(c.is_alphanumeric() || c == '_') {
                segment_start = out.len();
            }
        }
    }
    out
}

/// The ts-rs configuration of Omni: 64-bit integers are `number`, as serde_json sends them.
pub fn ts_config() -> ts_rs::Config {
    ts_rs::Config::new().with_large_int("number")
}

/// One public field of a model's schema.
pub fn field_schema<T: ClientValue>(
    cfg: &ts_rs::Config,
    name: &str,
    readonly: bool,
    docs: Option<&str>,
) -> schema::FieldSchema {
    schema::FieldSchema {
        name: name.to_owned(),
        ts_type: T::ts_name(cfg),
        readonly,
        docs: docs.map(str::to_owned),
    }
}

/// Adds a model's schema.
pub fn add_model(
    schema: &mut schema::Schema,
    name: &str,
    docs: Option<&str>,
    fields: Vec<schema::FieldSchema>,
) {
    schema.add_model(schema::ModelSchema {
        name: name.to_owned(),
        docs: docs.map(str::to_owned),
        fields,
    });
}

/// Adds the TypeScript declarations of the user types `T` mentions (`T` itself, its type
/// arguments, their fields, recursively) to `schema`.
pub fn add_type_decls<T: TS + 'static + ?Sized>(schema: &mut schema::Schema, cfg: &ts_rs::Config) {
    struct Collect<'a> {
        cfg: &'a ts_rs::Config,
        schema: &'a mut schema::Schema,
        seen: HashSet<TypeId>,
    }
    impl TypeVisitor for Collect<'_> {
        fn visit<U: TS + 'static + ?Sized>(&mut self) {
            if !self.seen.insert(TypeId::of::<U>()) {
                return;
            }
            // Types with an output path are the declarable ones (derived or hand-written `TS`
            // with a declaration); primitives and std containers have none.
            if U::output_path().is_some() {
                self.schema.add_type(schema::TypeDecl {
                    name: U::ident(self.cfg),
                    decl: U::decl(self.cfg),
                });
            }
            U::visit_generics(self);
            U::visit_dependencies(self);
        }
    }
    Collect {
        cfg,
        schema,
        seen: HashSet::new(),
    }
    .visit::<T>();
}

/// Formats a value as its JSON encoding, for the generated `Debug` of change enums (field types
/// need not implement `Debug`).
pub struct DebugJson<'a, T>(pub &'a T);

impl<T: ClientValue> fmt::Debug for DebugJson<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.debug_json(f)
    }
}

/// Adds the TypeScript declarations of the user types a field type mentions to `schema`.
pub fn add_field_type_decls<T: ClientValue>(schema: &mut schema::Schema, cfg: &ts_rs::Config) {
    T::add_type_decls(schema, cfg)
}

/// Takes a seeded collection apart: the collection value and its initial models.
pub fn seeded_parts<C: Collection>(seeded: Seeded<C>) -> (C, Vec<C::Model>) {
    (seeded.collection, seeded.models)
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_type_names() {
        assert_eq!(super::short_type_name("i32"), "i32");
        assert_eq!(
            super::short_type_name("alloc::vec::Vec<core::option::Option<my_app::Pos>>"),
            "Vec<Option<Pos>>"
        );
        assert_eq!(
            super::short_type_name("std::collections::HashMap<alloc::string::String, u8>"),
            "HashMap<String, u8>"
        );
    }
}
