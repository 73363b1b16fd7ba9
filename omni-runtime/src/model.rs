//! Models, attributes, typed changes and the permission hooks.
//!
//! A model is a plain struct with `#[derive(Model)]`. The derive generates, for
//! `struct Player { name: String, x: i32, _password: String }`:
//!
//! - `PlayerAttr` — one variant per public field (`PlayerAttr::Name`, `PlayerAttr::X`);
//! - `PlayerChange` — one variant per public field carrying its Rust type (`PlayerChange::X(i32)`);
//! - `PlayerMut<'_>` — the view server code gets in `update`, with a getter and a tracking
//!   setter per field (`p.set_x(10)` records that `x` changed);
//! - `impl Model for Player`, which the runtime uses to encode, decode and diff.
//!
//! Fields whose name starts with `_` are server-private: they have getters and setters in
//! `PlayerMut` but no attribute, no change variant, no schema entry and no wire presence.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DecodeError;
use crate::ids::ConnId;

/// A server-assigned object id, typed by the model it names.
///
/// On the wire it is a plain number (`"oid": 7`). OIDs are unique across the whole server and
/// never reused while it runs.
pub struct Oid<M>(u64, PhantomData<fn() -> M>);

impl<M> Oid<M> {
    /// Wraps a raw id. Prefer the ids the runtime hands out.
    pub const fn from_raw(raw: u64) -> Self {
        Oid(raw, PhantomData)
    }
    /// The number sent on the wire.
    pub const fn raw(self) -> u64 {
        self.0
    }
}
impl<M> Clone for Oid<M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M> Copy for Oid<M> {}
impl<M> PartialEq for Oid<M> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<M> Eq for Oid<M> {}
impl<M> PartialOrd for Oid<M> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<M> Ord for Oid<M> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}
impl<M> Hash for Oid<M> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}
impl<M> fmt::Debug for Oid<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({})", self.0)
    }
}
impl<M> fmt::Display for Oid<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
impl<M> Serialize for Oid<M> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}
impl<'de, M> Deserialize<'de> for Oid<M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u64::deserialize(d).map(Oid::from_raw)
    }
}
impl<M> ts_rs::TS for Oid<M> {
    type WithoutGenerics = Self;
    type OptionInnerType = Self;
    fn name(_: &ts_rs::Config) -> String {
        "number".to_owned()
    }
    fn inline(_: &ts_rs::Config) -> String {
        "number".to_owned()
    }
}

/// A set of attributes of one model, as a bit set (a model has at most 64 public fields).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AttrSet(u64);

impl AttrSet {
    /// The empty set.
    pub const EMPTY: AttrSet = AttrSet(0);
    /// The set of the first `n` attributes.
    pub const fn first(n: usize) -> AttrSet {
        if n >= 64 {
            AttrSet(u64::MAX)
        } else {
            AttrSet((1u64 << n) - 1)
        }
    }
    /// Builds a set from raw bits.
    pub const fn from_bits(bits: u64) -> AttrSet {
        AttrSet(bits)
    }
    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }
    /// Adds the attribute with this index.
    pub fn insert(&mut self, index: usize) {
        self.0 |= 1 << index;
    }
    /// Whether the attribute with this index is in the set.
    pub const fn contains(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }
    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Number of attributes in the set.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }
    /// Attributes in both sets.
    pub const fn and(self, other: AttrSet) -> AttrSet {
        AttrSet(self.0 & other.0)
    }
    /// Attributes in either set.
    pub const fn or(self, other: AttrSet) -> AttrSet {
        AttrSet(self.0 | other.0)
    }
    /// Attributes in `self` but not in `other`.
    pub const fn minus(self, other: AttrSet) -> AttrSet {
        AttrSet(self.0 & !other.0)
    }
    /// Indices in the set, ascending.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                None
            } else {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(i)
            }
        })
    }
}

impl fmt::Debug for AttrSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The generated attribute enum of a model (`PlayerAttr`): one variant per public field.
pub trait Attribute: Copy + Eq + Hash + fmt::Debug + Send + Sync + 'static {
    /// Position of the field among the public fields, `0..Model::ATTRS.len()`.
    fn index(self) -> usize;
    /// The wire name (after any `#[model(rename)]`).
    fn name(self) -> &'static str;
    /// Looks an attribute up by wire name.
    fn from_name(name: &str) -> Option<Self>;
    /// `#[model(readonly)]`: no client may write it, whatever the hooks say.
    fn is_readonly(self) -> bool;
}

/// A realtime model. Implemented by `#[derive(Model)]`; not meant to be implemented by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an Omni model",
    label = "not a model",
    note = "add `#[derive(Model)]` to the struct `{Self}`"
)]
pub trait Model: Clone + Default + Send + Sync + 'static {
    /// The attribute enum, e.g. `PlayerAttr`.
    type Attr: Attribute;
    /// The typed change enum, e.g. `PlayerChange`.
    type Change: Clone + fmt::Debug + Send + Sync + 'static;
    /// The tracking view server code mutates through, e.g. `PlayerMut<'a>`.
    type Mut<'a>: std::ops::Deref<Target = Self>;

    /// The Rust type name, e.g. `"Player"`.
    const NAME: &'static str;
    /// All attributes, in field order; `ATTRS[a.index()] == a`.
    const ATTRS: &'static [Self::Attr];

    /// The attribute a change writes.
    fn change_attr(change: &Self::Change) -> Self::Attr;
    /// Applies a change to the model.
    fn apply(&mut self, change: Self::Change);
    /// Appends the JSON encoding of one attribute's value to `out`.
    fn write_attr(&self, attr: Self::Attr, out: &mut Vec<u8>);
    /// Decodes a client's value for one attribute into a typed change. The error names the
    /// model, the attribute and the expected type.
    fn decode_change(
        attr: Self::Attr,
        value: &serde_json::Value,
    ) -> Result<Self::Change, DecodeError>;
    /// The tracking view: setters on it add to `changed`.
    fn view_mut<'a>(&'a mut self, changed: &'a mut AttrSet) -> Self::Mut<'a>;
    /// Adds this model's schema, and the declarations of the user types its fields use, to `schema`.
    fn describe(schema: &mut omni_client_gen::schema::Schema);

    /// Decodes a client's patch (`{"x": 1, "name": "Jim"}`) into typed changes. Nothing is
    /// applied here; any unknown, private or ill-typed attribute fails the whole patch.
    fn decode_patch(
        patch: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<Self::Change>, DecodeError> {
        let mut out = Vec::with_capacity(patch.len());
        for (key, value) in patch {
            let attr = Self::Attr::from_name(key)
                .ok_or_else(|| DecodeError::unknown_attr(Self::NAME, key))?;
            out.push(Self::decode_change(attr, value)?);
        }
        Ok(out)
    }

    /// The JSON value of one attribute.
    fn attr_value(&self, attr: Self::Attr) -> serde_json::Value {
        let mut out = Vec::new();
        self.write_attr(attr, &mut out);
        serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null)
    }
}

/// What a permission hook knows about the asking connection and the model's OID.
pub struct Access<'a, S, M> {
    pub(crate) session: &'a S,
    pub(crate) conn: ConnId,
    pub(crate) oid: Oid<M>,
}

impl<'a, S, M> Access<'a, S, M> {
    /// Builds an access context, for unit-testing permission hooks.
    pub fn new(session: &'a S, conn: ConnId, oid: Oid<M>) -> Self {
        Access { session, conn, oid }
    }
    /// The asking connection's session.
    pub fn session(&self) -> &'a S {
        self.session
    }
    /// The asking connection's id. The server itself never asks.
    pub fn conn_id(&self) -> ConnId {
        self.conn
    }
    /// The OID of the model being checked.
    pub fn oid(&self) -> Oid<M> {
        self.oid
    }
}

/// Per-connection read and write permissions of a model, for sessions of type `S`.
///
/// Defaults as in Omni.js: everything readable, nothing writable.
///
/// ```
/// # use omni_runtime::prelude::*;
/// # #[derive(Default)] struct Session { player: Option<Oid<Player>> }
/// #[derive(Model, Clone, Default)]
/// struct Player { name: String, x: i32, online: bool, _password: String }
///
/// impl Permissions<Session> for Player {
///     fn can_read(&self, ctx: &Access<Session, Self>, _attr: Option<PlayerAttr>) -> bool {
///         self.online || ctx.session().player == Some(ctx.oid())
///     }
///     fn can_write(&self, ctx: &Access<Session, Self>, change: &PlayerChange) -> bool {
///         ctx.session().player == Some(ctx.oid()) && !matches!(change, PlayerChange::Online(_))
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "model `{Self}` has no permissions for sessions of type `{S}`",
    label = "needs `impl Permissions<{S}> for {Self}`",
    note = "add `impl Permissions<{S}> for {Self} {{}}` (defaults: read allowed, write denied), or fix the session type in an existing impl"
)]
pub trait Permissions<S>: Model {
    /// May this connection see the model at all (`attr == None`), or this attribute of it?
    /// An attribute is sent only when both answers are `true`.
    fn can_read(&self, ctx: &Access<'_, S, Self>, attr: Option<Self::Attr>) -> bool {
        let _ = (ctx, attr);
        true
    }
    /// May this connection make this change? Called once per attribute of a client's patch;
    /// one refusal refuses the whole patch.
    fn can_write(&self, ctx: &Access<'_, S, Self>, change: &Self::Change) -> bool {
        let _ = (ctx, change);
        false
    }
}

/// The JSON encoding of a model's attributes as an object, used by the engine and tests.
pub fn write_object<M: Model>(model: &M, oid: Option<u64>, attrs: AttrSet, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    if let Some(oid) = oid {
        out.extend_from_slice(b"\"oid\":");
        out.extend_from_slice(oid.to_string().as_bytes());
        first = false;
    }
    for i in attrs.iter() {
        let attr = M::ATTRS[i];
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(attr.name().as_bytes());
        out.extend_from_slice(b"\":");
        model.write_attr(attr, out);
    }
    out.push(b'}');
}
