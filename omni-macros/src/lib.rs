//! Procedural macros of Omni. Use them through `omni_runtime`, which re-exports them.
//!
//! Each macro runs in three stages, one file each: [`ast`] and [`attr`] read the input,
//! [`valid`] checks the rules across fields, [`expand`] writes tokens. Errors of every stage are
//! collected ([`ctxt`]) and reported together. Set `OMNI_MACROS_DEBUG=1` (or to a type name) to
//! print the generated code to stderr.

use proc_macro::TokenStream;

mod ast;
mod attr;
mod case;
mod ctxt;
mod data;
mod expand;
mod valid;

/// Derives `omni_runtime::model::Model`: turns a struct into a realtime model.
///
/// # Example
///
/// ```ignore
/// use omni_runtime::prelude::*;
///
/// /// A player of the game.
/// #[derive(Model, Clone, Default)]
/// #[model(rename_all = "camelCase")]
/// struct Player {
///     /// Shown above the avatar.
///     name: String,
///     x: i32,
///     y: i32,
///     #[model(readonly)]
///     high_score: u32,          // on the wire: `highScore`; no client may write it
///     online: bool,
///     _password: String,        // leading `_`: server-only, never sent, never writable
/// }
///
/// let mut player = Player::default();
/// let mut changed = AttrSet::EMPTY;
/// player.view_mut(&mut changed).set_x(10).set_y(-3);
/// assert_eq!(changed, AttrSet::from_bits(0b110));
/// ```
///
/// The struct must also implement `Clone` and `Default` (a client's new model starts from
/// `Default`). Every public field's type must be sendable to clients: `Serialize`,
/// `Deserialize`, `ts_rs::TS`, `Clone`, `Send`, `Sync` and `'static`. Standard types (numbers,
/// `String`, `bool`, `Option<T>`, `Vec<T>`, maps) qualify; give your own types
/// `#[derive(Serialize, Deserialize, TS, Clone)]`.
///
/// # Attributes
///
/// On the struct:
///
/// - `#[model(rename_all = "camelCase")]`: wire names from field names by a rule, one of
///   `camelCase`, `snake_case`, `PascalCase`, `SCREAMING_SNAKE_CASE`, `lowercase`, `UPPERCASE`.
/// - `#[model(name = "Avatar")]`: the model's name (`Model::NAME`, the TypeScript interface);
///   defaults to the struct's name.
///
/// On a public field:
///
/// - `#[model(readonly)]`: no client may ever write this field, whatever the `can_write` hook
///   says. Server code still sets it.
/// - `#[model(rename = "wireName")]`: the name on the wire and in JavaScript.
///
/// Checked at compile time, each with an error on the offending token: unknown or duplicate
/// attributes; `readonly` or `rename` on a server-only (`_`) field; a wire name that is reserved
/// by the protocol (`oid`, `t`, `id`, `tmp`, `cid`), starts with `_` or is not a JavaScript
/// identifier; two fields with the same wire name; more than 64 public fields; lifetime
/// parameters; a field type that cannot be sent to clients (the error points at the type).
/// All mistakes of a struct are reported in one build.
///
/// # Generated code
///
/// For `struct Player { name: String, x: i32, _password: String }`, with the struct's
/// visibility:
///
/// ```text
/// #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
/// pub enum PlayerAttr { Name, X }                    // impl Attribute: index, name, from_name, is_readonly
///
/// #[derive(Clone, Debug)]                             // Debug prints values as JSON
/// pub enum PlayerChange { Name(String), X(i32) }
///
/// pub struct PlayerMut<'a> { /* &'a mut Player, &'a mut AttrSet */ }
/// impl Deref for PlayerMut<'_> { type Target = Player; }
/// impl PlayerMut<'_> {
///     pub fn model(&self) -> &Player;
///     pub fn name(&self) -> &String;     pub fn set_name(&mut self, value: String) -> &mut Self;
///     pub fn x(&self) -> &i32;           pub fn set_x(&mut self, value: i32) -> &mut Self;
///     pub fn _password(&self) -> &String; pub fn set_password(&mut self, value: String) -> &mut Self; // not recorded
/// }
///
/// impl Model for Player { /* NAME = "Player", ATTRS, apply, write_attr, decode_change, describe, … */ }
/// ```
///
/// Setters of public fields record the attribute in the `AttrSet` the view was made with, so
/// the runtime sends only what changed; setters of server-only fields record nothing.
/// `describe` adds a `ModelSchema` (public fields with wire names, TypeScript types via
/// `ts-rs`, `readonly` flags and `///` docs) and the TypeScript declarations of the user types
/// the fields mention. For a generic struct (`struct Tagged<T> { value: T }`) the impls require
/// each public field type to be sendable to clients.
#[proc_macro_derive(Model, attributes(model))]
pub fn derive_model(input: TokenStream) -> TokenStream {
    let node = syn::parse_macro_input!(input as syn::DeriveInput);
    let out = expand::derive_model(&node);
    expand::debug_print("derive(Model)", &node.ident.to_string(), &out);
    out.into()
}

/// `serde::Serialize` for an app that depends on `omni-runtime` alone (no `serde` in its
/// Cargo.toml): `use omni_runtime::prelude::*; #[derive(Serialize)]`. Takes serde's
/// `#[serde(...)]` attributes and gives the same encoding as serde's own derive, which it
/// applies to a private copy of the type (`#[serde(remote = "Type")]`) through
/// `omni_runtime::__private::serde`.
#[proc_macro_derive(Serialize, attributes(serde))]
pub fn derive_serialize(input: TokenStream) -> TokenStream {
    let node = syn::parse_macro_input!(input as syn::DeriveInput);
    data::derive_serde(&node, data::Serde::Serialize).into()
}

/// `serde::Deserialize` for an app that depends on `omni-runtime` alone; see
/// [`macro@Serialize`].
#[proc_macro_derive(Deserialize, attributes(serde))]
pub fn derive_deserialize(input: TokenStream) -> TokenStream {
    let node = syn::parse_macro_input!(input as syn::DeriveInput);
    data::derive_serde(&node, data::Serde::Deserialize).into()
}

/// `ts_rs::TS` for an app that depends on `omni-runtime` alone (no `ts-rs` in its Cargo.toml).
/// Takes ts-rs's `#[ts(...)]` (and serde's) attributes and gives the same TypeScript type as
/// ts-rs's own derive, which it applies to a private copy of the type through
/// `omni_runtime::__private::ts_rs`.
#[proc_macro_derive(TS, attributes(ts))]
pub fn derive_ts(input: TokenStream) -> TokenStream {
    let node = syn::parse_macro_input!(input as syn::DeriveInput);
    data::derive_ts(&node).into()
}

/// Accepts `#[serde(...)]` attributes and generates nothing: lets the private copy that
/// [`macro@TS`] hands to ts-rs keep them (ts-rs reads them, serde's derive is not on the copy).
#[doc(hidden)]
#[proc_macro_derive(SerdeAttributes, attributes(serde))]
pub fn serde_attributes(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}

/// Declares a collection: a named set of models of one type, `Omni.collections.<name>` on the
/// client.
///
/// # Example
///
/// ```ignore
/// use omni_runtime::prelude::*;
///
/// /// Everyone in the game.
/// #[collection(model = Player)]
/// struct Players;                               // wire name: `players`
///
/// #[collection(model = ChatMessage, name = "chat")]
/// struct ChatLog { max_len: usize }             // a collection can carry configuration
///
/// impl CollectionPermissions<Session> for Players {
///     fn can_create(&self, ctx: &Ctx<Session>, player: &Player) -> bool { true }
/// }
///
/// let players = Players::with([Player { name: "Jim".into(), ..Default::default() }]);
/// ```
///
/// # Attributes
///
/// - `model = Type` (required): the model the collection holds; it must `#[derive(Model)]`.
/// - `name = "..."`: the wire name, a JavaScript identifier. Defaults to the struct's name in
///   lowerCamelCase: `Players` -> `players`, `ChatMessages` -> `chatMessages`.
///
/// Unknown arguments, a missing `model`, an invalid name and use on anything but a struct are
/// compile errors.
///
/// # Generated code
///
/// The struct is emitted unchanged, plus:
///
/// ```text
/// impl Collection for Players {
///     type Model = Player;
///     const NAME: &'static str = "players";
///     const DOCS: Option<&'static str> = Some("Everyone in the game.");   // from `///`
/// }
/// // for unit structs only, with the struct's visibility:
/// impl Players {
///     pub fn with(models: impl IntoIterator<Item = Player>) -> Seeded<Self>;
///     pub fn empty() -> Seeded<Self>;
/// }
/// ```
///
/// Create and destroy permissions come from `impl CollectionPermissions<Session> for Players`
/// (defaults: both denied).
#[proc_macro_attribute]
pub fn collection(args: TokenStream, input: TokenStream) -> TokenStream {
    let name = input
        .clone()
        .into_iter()
        .skip_while(|tt| tt.to_string() != "struct")
        .nth(1)
        .map(|tt| tt.to_string())
        .unwrap_or_default();
    let out = expand::collection(args.into(), input.into());
    expand::debug_print("#[collection]", &name, &out);
    out.into()
}
