//! Errors a client or server code can get, each naming what it concerns.

use std::fmt;

/// A client's value could not be decoded into a typed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The model, e.g. `Player`.
    pub model: &'static str,
    /// The attribute as the client named it.
    pub attr: String,
    /// Why it failed.
    pub reason: String,
}

impl DecodeError {
    /// The attribute does not exist on the model or is server-private.
    pub fn unknown_attr(model: &'static str, attr: &str) -> Self {
        let reason = if attr.starts_with('_') {
            "is server-only: clients can neither read nor write it".to_owned()
        } else {
            "is not an attribute of this model".to_owned()
        };
        DecodeError {
            model,
            attr: attr.to_owned(),
            reason,
        }
    }
    /// The value has the wrong type.
    pub fn wrong_type(
        model: &'static str,
        attr: &str,
        expected: &str,
        error: impl fmt::Display,
    ) -> Self {
        DecodeError {
            model,
            attr: attr.to_owned(),
            reason: format!("expected {expected}: {error}"),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attribute `{}` of model `{}` {}",
            self.attr, self.model, self.reason
        )
    }
}

impl std::error::Error for DecodeError {}

/// The error an event handler returns; its message reaches the calling client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    message: String,
}

impl EventError {
    /// An error with this message for the client.
    pub fn new(message: impl Into<String>) -> Self {
        EventError {
            message: message.into(),
        }
    }
    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EventError {}

impl From<&str> for EventError {
    fn from(s: &str) -> Self {
        EventError::new(s)
    }
}

impl From<String> for EventError {
    fn from(s: String) -> Self {
        EventError::new(s)
    }
}

/// A server-side operation on the world failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorldError {
    /// No model with this OID in the collection.
    NoSuchModel {
        /// Collection wire name.
        collection: &'static str,
        /// The OID asked for.
        oid: u64,
    },
    /// The collection was never registered with the server.
    NoSuchCollection {
        /// Collection wire name.
        collection: &'static str,
    },
    /// The storage (a middleware or the backend) refused or failed the write; nothing changed.
    Storage {
        /// Collection wire name.
        collection: &'static str,
        /// The model's Rust type name.
        model: &'static str,
        /// `insert`, `update`, `replace` or `remove`.
        op: &'static str,
        /// The model's OID, if it had one.
        oid: Option<u64>,
        /// The storage's message.
        reason: String,
    },
}

impl fmt::Display for WorldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorldError::NoSuchModel { collection, oid } => {
                write!(f, "collection `{collection}` has no model with oid {oid}")
            }
            WorldError::Storage {
                collection,
                model,
                op,
                oid,
                reason,
            } => {
                write!(f, "{op} of {collection}/{model}")?;
                if let Some(oid) = oid {
                    write!(f, " {oid}")?;
                }
                write!(f, " failed: {reason}")
            }
            WorldError::NoSuchCollection { collection } => {
                write!(
                    f,
                    "collection `{collection}` is not registered with this server; add it with `Omni::collection`"
                )
            }
        }
    }
}

impl std::error::Error for WorldError {}

impl From<WorldError> for EventError {
    fn from(e: WorldError) -> Self {
        EventError::new(e.to_string())
    }
}
