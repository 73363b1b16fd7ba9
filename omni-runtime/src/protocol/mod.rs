//! The wire protocol (docs/PROTOCOL.md): what clients send, decoded, and what the server sends,
//! encoded, side by side.

pub(crate) mod decode;
pub(crate) mod encode;
