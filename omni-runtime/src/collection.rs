//! Collections: named sets of models of one type, with create and destroy permissions.

use crate::ids::ConnId;
use crate::model::Model;

/// A named collection of one model type. Implemented by `#[collection(model = M)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an Omni collection",
    note = "add `#[collection(model = YourModel)]` to a struct `{Self}`"
)]
pub trait Collection: Send + Sync + 'static {
    /// The model the collection holds.
    type Model: Model;
    /// The wire name: `Omni.collections.<NAME>` on the client.
    const NAME: &'static str;
    /// Doc comment of the collection struct, if any.
    const DOCS: Option<&'static str> = None;
}

/// What a collection hook knows about the asking connection.
pub struct Ctx<'a, S> {
    pub(crate) session: &'a S,
    pub(crate) conn: ConnId,
}

impl<'a, S> Ctx<'a, S> {
    /// Builds a context, for unit-testing permission hooks.
    pub fn new(session: &'a S, conn: ConnId) -> Self {
        Ctx { session, conn }
    }
    /// The asking connection's session.
    pub fn session(&self) -> &'a S {
        self.session
    }
    /// The asking connection's id.
    pub fn conn_id(&self) -> ConnId {
        self.conn
    }
}

/// Who may add models to, and remove models from, a collection. Defaults as in Omni.js: nobody.
#[diagnostic::on_unimplemented(
    message = "collection `{Self}` has no permissions for sessions of type `{S}`",
    label = "needs `impl CollectionPermissions<{S}> for {Self}`",
    note = "add `impl CollectionPermissions<{S}> for {Self} {{}}` (defaults: create and destroy denied), or fix the session type in an existing impl"
)]
pub trait CollectionPermissions<S>: Collection {
    /// May this connection add `model` (already holding the server defaults plus the client's
    /// attributes)?
    fn can_create(&self, ctx: &Ctx<'_, S>, model: &Self::Model) -> bool {
        let _ = (ctx, model);
        false
    }
    /// May this connection remove `model`?
    fn can_destroy(&self, ctx: &Ctx<'_, S>, model: &Self::Model) -> bool {
        let _ = (ctx, model);
        false
    }
    /// May this connection subscribe to `channel` of a collection with channels
    /// ([`Omni::channels`](crate::Omni::channels))? Default: yes. What it then sees is still
    /// filtered by the model's `can_read`.
    fn can_subscribe(&self, ctx: &Ctx<'_, S>, channel: &str) -> bool {
        let _ = (ctx, channel);
        true
    }
    /// May this connection run `query` (a live query: `Omni.collections.lines.query(...)` in
    /// JavaScript, [`Client::query`](crate::client::Client::query) in Rust)? Default: yes. A
    /// query shows only models that pass `can_read`, and an attribute the connection may not
    /// read is absent for its filter and order (no comparison on it matches), so the default
    /// leaks nothing; refuse here what is too costly or not meant to be asked, e.g. a query
    /// without a room: `query.equality(LineAttr::Room).is_some()`.
    fn can_query(&self, ctx: &Ctx<'_, S>, query: &crate::query::Query<Self::Model>) -> bool {
        let _ = (ctx, query);
        true
    }
    /// Called on the server after a client's model was created and before it is sent to anyone,
    /// to fill in server-side fields (owner, timestamps). Default: nothing.
    fn on_create(&self, ctx: &Ctx<'_, S>, model: &mut Self::Model) {
        let _ = (ctx, model);
    }
}

/// A collection value together with the models it starts with: `Players::with([...])`.
pub struct Seeded<C: Collection> {
    pub(crate) collection: C,
    pub(crate) models: Vec<C::Model>,
}

impl<C: Collection> Seeded<C> {
    /// A collection starting with `models`.
    pub fn new(collection: C, models: impl IntoIterator<Item = C::Model>) -> Self {
        Seeded {
            collection,
            models: models.into_iter().collect(),
        }
    }
}

impl<C: Collection> From<C> for Seeded<C> {
    fn from(collection: C) -> Self {
        Seeded {
            collection,
            models: Vec::new(),
        }
    }
}
