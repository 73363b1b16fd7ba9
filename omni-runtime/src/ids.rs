//! Ids shared by every layer.

use std::fmt;

use serde::Serialize;

/// The id of one client connection, unique while the server runs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    /// The raw number (also sent to the client in `hello`).
    pub const fn raw(self) -> u64 {
        self.0
    }
    /// Wraps a raw id, for unit-testing permission hooks.
    pub const fn from_raw(raw: u64) -> Self {
        ConnId(raw)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({})", self.0)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}
