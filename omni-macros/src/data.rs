//! `Serialize`, `Deserialize` and `TS` for apps that depend on `omni-runtime` alone.
//!
//! serde's and ts-rs's derives name their crates by path (`extern crate serde`, `::ts_rs::…`),
//! which an app without `serde` and `ts-rs` in its Cargo.toml cannot resolve. These derives
//! delegate to the real ones, applied to a private copy of the type with the crates named as
//! `omni_runtime::__private::serde` / `::ts_rs`:
//!
//! - serde: the copy is a `#[serde(remote = "Type")]` definition, whose inherent
//!   `serialize`/`deserialize` work on `Type` itself; `Type`'s trait impls call them.
//! - ts-rs: the copy is renamed to `Type`'s name for TypeScript (`#[ts(rename)]`), and `Type`'s
//!   `TS` impl forwards every method to the copy's.
//!
//! The copy keeps the `serde`, `ts` and `doc` attributes of the type, its variants and fields, so
//! the wire form and the TypeScript type are exactly those the real derives give the type.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote};
use syn::{Attribute, Data, DeriveInput, Fields, GenericParam};

/// Which serde trait.
#[derive(Clone, Copy)]
pub(crate) enum Serde {
    Serialize,
    Deserialize,
}

/// Keeps the attributes named in `keep`.
fn filter_attrs(attrs: &mut Vec<Attribute>, keep: &[&str]) {
    attrs.retain(|a| keep.iter().any(|k| a.path().is_ident(k)));
}

fn filter_fields(fields: &mut Fields, keep: &[&str]) {
    for f in fields.iter_mut() {
        filter_attrs(&mut f.attrs, keep);
    }
}

/// A copy of `input` named `ident`, with only the `keep` attributes (on the type, its variants
/// and fields).
fn copy(input: &DeriveInput, ident: &syn::Ident, keep: &[&str]) -> DeriveInput {
    let mut copy = input.clone();
    copy.ident = ident.clone();
    copy.vis = syn::Visibility::Inherited;
    filter_attrs(&mut copy.attrs, keep);
    match &mut copy.data {
        Data::Struct(s) => filter_fields(&mut s.fields, keep),
        Data::Enum(e) => {
            for v in e.variants.iter_mut() {
                filter_attrs(&mut v.attrs, keep);
                filter_fields(&mut v.fields, keep);
            }
        }
        Data::Union(_) => {}
    }
    copy
}

/// Container `#[serde(default)]` as `#[serde(default = "Default::default")]`: serde bounds
/// the bare form on the copy being `Default`, the path form only on the type itself.
fn default_as_path(attrs: &mut [Attribute]) {
    for attr in attrs.iter_mut().filter(|a| a.path().is_ident("serde")) {
        let syn::Meta::List(list) = &mut attr.meta else {
            continue;
        };
        let tokens: Vec<TokenTree> = list.tokens.clone().into_iter().collect();
        let mut out = TokenStream::new();
        for (i, t) in tokens.iter().enumerate() {
            let bare_default = matches!(t, TokenTree::Ident(id) if id == "default")
                && !matches!(tokens.get(i + 1), Some(TokenTree::Punct(p)) if p.as_char() == '=');
            if bare_default {
                out.extend(quote!(default = "::core::default::Default::default"));
            } else {
                out.extend([t.clone()]);
            }
        }
        list.tokens = out;
    }
}

fn reject_union(input: &DeriveInput, what: &str) -> Option<TokenStream> {
    if let Data::Union(u) = &input.data {
        let msg = format!("`{what}` cannot be derived for a union");
        return Some(syn::Error::new(u.union_token.span, msg).to_compile_error());
    }
    None
}

/// `#[derive(Serialize)]` / `#[derive(Deserialize)]` through `omni_runtime`.
pub(crate) fn derive_serde(input: &DeriveInput, which: Serde) -> TokenStream {
    let trait_name = match which {
        Serde::Serialize => "Serialize",
        Serde::Deserialize => "Deserialize",
    };
    if let Some(err) = reject_union(input, trait_name) {
        return err;
    }
    let ident = &input.ident;
    let remote_ident = format_ident!("__Omni{}{}", trait_name, ident);
    let mut remote = copy(input, &remote_ident, &["serde"]);
    // serde adds the type's generic parameters to the remote path itself.
    let remote_path = syn::LitStr::new(&ident.to_string(), Span::call_site());
    default_as_path(&mut remote.attrs);
    let derive = format_ident!("{}", trait_name);
    remote
        .attrs
        .push(syn::parse_quote!(#[serde(crate = "::omni_runtime::__private::serde")]));
    remote
        .attrs
        .push(syn::parse_quote!(#[serde(remote = #remote_path)]));
    let serde = quote!(::omni_runtime::__private::serde);
    let (_, ty_generics, _) = input.generics.split_for_impl();
    let remote_turbofish = ty_generics.as_turbofish();
    let body = match which {
        Serde::Serialize => {
            let mut generics = input.generics.clone();
            for p in generics.type_params_mut() {
                p.bounds.push(syn::parse_quote!(#serde::Serialize));
            }
            let (impl_generics, _, where_clause) = generics.split_for_impl();
            quote! {
                impl #impl_generics #serde::Serialize for #ident #ty_generics #where_clause {
                    fn serialize<__S>(&self, serializer: __S) -> ::core::result::Result<__S::Ok, __S::Error>
                    where
                        __S: #serde::Serializer,
                    {
                        #remote_ident #remote_turbofish::serialize(self, serializer)
                    }
                }
            }
        }
        Serde::Deserialize => {
            let mut generics = input.generics.clone();
            let lifetimes: Vec<syn::Lifetime> =
                generics.lifetimes().map(|l| l.lifetime.clone()).collect();
            for p in generics.type_params_mut() {
                p.bounds.push(syn::parse_quote!(#serde::Deserialize<'de>));
            }
            let de: syn::LifetimeParam = if lifetimes.is_empty() {
                syn::parse_quote!('de)
            } else {
                syn::parse_quote!('de: #(#lifetimes)+*)
            };
            generics.params.insert(0, GenericParam::Lifetime(de));
            let (impl_generics, _, where_clause) = generics.split_for_impl();
            quote! {
                impl #impl_generics #serde::Deserialize<'de> for #ident #ty_generics #where_clause {
                    fn deserialize<__D>(deserializer: __D) -> ::core::result::Result<Self, __D::Error>
                    where
                        __D: #serde::Deserializer<'de>,
                    {
                        #remote_ident #remote_turbofish::deserialize(deserializer)
                    }
                }
            }
        }
    };
    quote! {
        #[doc(hidden)]
        const _: () = {
            #[derive(#serde::#derive)]
            #[allow(dead_code, non_camel_case_types, clippy::all)]
            #remote
            #body
        };
    }
}

/// Whether a container attribute list (`#[serde(...)]`, `#[ts(...)]`) renames the type.
fn renames(attrs: &[Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("serde") || a.path().is_ident("ts"))
        .filter_map(|a| a.meta.require_list().ok())
        .any(|list| {
            let tokens: Vec<TokenTree> = list.tokens.clone().into_iter().collect();
            tokens.windows(2).any(|w| {
                matches!(&w[0], TokenTree::Ident(i) if i == "rename")
                    && matches!(&w[1], TokenTree::Punct(p) if p.as_char() == '=')
            })
        })
}

/// `#[derive(TS)]` through `omni_runtime`.
pub(crate) fn derive_ts(input: &DeriveInput) -> TokenStream {
    if let Some(err) = reject_union(input, "TS") {
        return err;
    }
    let ident = &input.ident;
    let copy_ident = format_ident!("__OmniTs{}", ident);
    let mut copy = copy(input, &copy_ident, &["serde", "ts", "doc"]);
    copy.attrs
        .push(syn::parse_quote!(#[ts(crate = "::omni_runtime::__private::ts_rs")]));
    if !renames(&input.attrs) {
        let name = syn::LitStr::new(&ident.to_string(), ident.span());
        copy.attrs.push(syn::parse_quote!(#[ts(rename = #name)]));
    }
    let ts = quote!(::omni_runtime::__private::ts_rs);
    let mut generics = input.generics.clone();
    for p in generics.type_params_mut() {
        p.bounds.push(syn::parse_quote!(#ts::TS));
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let target = quote!(<#copy_ident #ty_generics as #ts::TS>);
    // `Self` with every type parameter replaced by `Dummy` (ts-rs's convention); not the copy's,
    // which is private.
    let without: Vec<TokenStream> = input
        .generics
        .params
        .iter()
        .map(|p| match p {
            GenericParam::Lifetime(_) => quote!('static),
            GenericParam::Type(_) => quote!(#ts::Dummy),
            GenericParam::Const(c) => {
                let c = &c.ident;
                quote!(#c)
            }
        })
        .collect();
    let without_generics = if without.is_empty() {
        quote!(Self)
    } else {
        quote!(#ident<#(#without),*>)
    };
    quote! {
        #[doc(hidden)]
        const _: () = {
            #[derive(::omni_runtime::__private::SerdeAttributes, #ts::TS)]
            #[allow(dead_code, non_camel_case_types, clippy::all)]
            #copy
            impl #impl_generics #ts::TS for #ident #ty_generics #where_clause {
                type WithoutGenerics = #without_generics;
                type OptionInnerType = Self;
                const IS_ENUM: bool = #target::IS_ENUM;
                fn docs() -> ::core::option::Option<::std::string::String> {
                    #target::docs()
                }
                fn ident(cfg: &#ts::Config) -> ::std::string::String {
                    #target::ident(cfg)
                }
                fn decl(cfg: &#ts::Config) -> ::std::string::String {
                    #target::decl(cfg)
                }
                fn decl_concrete(cfg: &#ts::Config) -> ::std::string::String {
                    #target::decl_concrete(cfg)
                }
                fn name(cfg: &#ts::Config) -> ::std::string::String {
                    #target::name(cfg)
                }
                fn inline(cfg: &#ts::Config) -> ::std::string::String {
                    #target::inline(cfg)
                }
                fn inline_flattened(cfg: &#ts::Config) -> ::std::string::String {
                    #target::inline_flattened(cfg)
                }
                fn visit_dependencies(v: &mut impl #ts::TypeVisitor)
                where
                    Self: 'static,
                {
                    #target::visit_dependencies(v)
                }
                fn visit_generics(v: &mut impl #ts::TypeVisitor)
                where
                    Self: 'static,
                {
                    #target::visit_generics(v)
                }
                fn output_path() -> ::core::option::Option<::std::path::PathBuf> {
                    #target::output_path()
                }
            }
        };
    }
}
