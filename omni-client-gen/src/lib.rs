//! Generates the Omni JavaScript client and its TypeScript typings from a [`schema::Schema`].
#![warn(missing_docs)]

pub mod schema;
