//! Omni: realtime models for Rust.
//!
//! Annotate plain structs as models (`#[derive(Model)]`), group them in collections
//! (`#[collection(model = ...)]`), say who may read and write what (`Permissions`,
//! `CollectionPermissions`), and serve them with [`Omni`]: every connected browser holds exactly
//! the models and attributes its connection may see, in real time, through a typed JavaScript
//! client generated from the same Rust code.
#![warn(missing_docs)]

mod assets;
pub mod client;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod collection;
pub mod conn;
mod engine;
pub mod error;
mod hooks;
mod ids;
mod metrics;
pub mod model;
mod outbox;
mod protocol;
pub mod query;
pub mod rules;
pub mod server;
mod static_files;
pub mod storage;
mod ts;
mod upgrade;
pub mod world;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use omni_macros::{Model, collection};

pub use conn::{Conn, ConnId};
pub use error::{EventError, WorldError};
pub use model::Oid;
/// The Prometheus client the server's metrics use, for a [`storage::Backend`] that registers
/// its own ([`storage::Backend::register_metrics`]).
pub use prometheus_client;
pub use server::{AuthError, Config, Handshake, Omni, Server};
pub use world::{Coll, World, Write};

/// Server-side observers of commits: what [`Omni::observe`] hands to an observer.
pub mod observe {
    pub use crate::engine::observe::{Observation, Observed, Origin};
}

/// Everything an app needs, in one import.
pub mod prelude {
    pub use crate::collection::{Collection, CollectionPermissions, Ctx, Seeded};
    pub use crate::conn::{Conn, ConnId};
    pub use crate::error::{EventError, WorldError};
    pub use crate::model::{Access, Attribute, Model, Oid, Permissions};
    pub use crate::observe::{Observation, Observed, Origin};
    pub use crate::query::{Dir, Query};
    pub use crate::rules::{Action, Rules};
    pub use crate::server::{AuthError, Config, Handshake, Omni, Server};
    pub use crate::storage::{
        Logging, MemoryStore, Method, Next, RedbStore, StoreError, StoreReply, StoreRequest,
    };
    pub use crate::world::{Coll, World, Write};
    pub use crate::{Model, collection};
    // The traits from serde and ts-rs; the derives of the same names from omni-macros, which
    // work in an app that depends on `omni-runtime` alone (serde's and ts-rs's own derives need
    // those crates in the app's Cargo.toml). An app that imports `serde::Deserialize` itself
    // gets serde's (an explicit import shadows this glob).
    pub use self::traits::*;
    pub use omni_macros::{Deserialize, Serialize, TS};
    pub use serde::de::Deserialize;
    pub use serde::ser::Serialize;

    mod traits {
        // A glob brings ts-rs's `TS` trait and derive; the explicit derive above shadows the
        // derive.
        pub use ts_rs::TS;
    }
}
