//! The schema: plain data describing an app's models, collections and events.
//!
//! `#[derive(Model)]` and `#[collection]` produce it (through `omni_runtime`), the runtime
//! collects it for one app, and the emitters in this crate turn it into `omni.js` and
//! `omni.d.ts`. It is serializable so the CLI can read it from a JSON file.

use serde::{Deserialize, Serialize};

/// Version of the wire protocol described in `docs/PROTOCOL.md`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Everything the client generator needs to know about one app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// Wire protocol version the client must speak.
    pub protocol: u32,
    /// Models, each once, in registration order.
    pub models: Vec<ModelSchema>,
    /// Collections in registration order.
    pub collections: Vec<CollectionSchema>,
    /// Client-callable events.
    pub events: Vec<EventSchema>,
    /// TypeScript declarations of user types that fields or events mention (nested structs, enums).
    pub types: Vec<TypeDecl>,
}

/// One model: its name and its public fields. Server-private (`_`) fields never appear here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSchema {
    /// The Rust type name, e.g. `Player`.
    pub name: String,
    /// Doc comment of the struct, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<String>,
    /// Public fields in declaration order.
    pub fields: Vec<FieldSchema>,
}

/// One public field of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldSchema {
    /// The name on the wire and in JavaScript (after any rename).
    pub name: String,
    /// The TypeScript type, e.g. `number`, `string | null`, `Array<Pos>`.
    pub ts_type: String,
    /// No client may ever write this field (`#[model(readonly)]`).
    #[serde(default)]
    pub readonly: bool,
    /// Doc comment of the field, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<String>,
}

/// One collection: its wire name and the model it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionSchema {
    /// The wire name: `Omni.collections.<name>`.
    pub name: String,
    /// Name of the model (a [`ModelSchema::name`]).
    pub model: String,
    /// Doc comment of the collection struct, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<String>,
}

/// One client-callable event: `Omni.trigger(name, args)` resolves to the reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventSchema {
    /// The event name.
    pub name: String,
    /// TypeScript type of the argument.
    pub args_ts: String,
    /// TypeScript type of the reply.
    pub reply_ts: String,
}

/// A named TypeScript declaration, e.g. `type Pos = { x: number, y: number, };`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TypeDecl {
    /// The TypeScript name.
    pub name: String,
    /// The full declaration, without `export`.
    pub decl: String,
}

impl Schema {
    /// An empty schema for the current protocol version.
    pub fn new() -> Self {
        Schema {
            protocol: PROTOCOL_VERSION,
            ..Default::default()
        }
    }

    /// Adds a type declaration unless one with the same name is already there.
    pub fn add_type(&mut self, decl: TypeDecl) {
        if !self.types.iter().any(|t| t.name == decl.name) {
            self.types.push(decl);
        }
    }

    /// Adds a model unless one with the same name is already there.
    pub fn add_model(&mut self, model: ModelSchema) {
        if !self.models.iter().any(|m| m.name == model.name) {
            self.models.push(model);
        }
    }
}
