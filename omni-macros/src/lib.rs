//! Procedural macros of Omni. Use them through `omni_runtime`, which re-exports them.

use proc_macro::TokenStream;

/// Derives `omni_runtime::model::Model`.
#[proc_macro_derive(Model, attributes(model))]
pub fn derive_model(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}

/// Turns a struct into an `omni_runtime::collection::Collection`.
#[proc_macro_attribute]
pub fn collection(_args: TokenStream, input: TokenStream) -> TokenStream {
    input
}
