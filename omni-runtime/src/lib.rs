//! Omni: realtime models for Rust.
#![warn(missing_docs)]

pub mod collection;
pub mod conn;
pub mod error;
pub mod model;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use omni_macros::{Model, collection};

/// Everything an app needs, in one import.
pub mod prelude {
    pub use crate::collection::{Collection, CollectionPermissions, Ctx, Seeded};
    pub use crate::conn::ConnId;
    pub use crate::error::EventError;
    pub use crate::model::{Access, Attribute, Model, Oid, Permissions};
    pub use crate::{Model, collection};
    pub use serde::{Deserialize, Serialize};
    pub use ts_rs::TS;
}
