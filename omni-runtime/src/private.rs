//! Support for the code `#[derive(Model)]` and `#[collection]` generate. Not public API.

pub use omni_client_gen::schema;
pub use serde;
pub use serde_json;
pub use ts_rs;

pub use crate::collection::{Collection, Seeded};
pub use crate::error::DecodeError;
pub use crate::model::{AttrSet, Attribute, Model};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Appends the JSON encoding of `value` to `out`.
pub fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Serializing plain data into a Vec cannot fail except for maps with non-string keys,
    // which `ClientValue` types do not produce; write `null` rather than a broken frame.
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
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
