//! Stage 3: tokens out. Runs only on validated input; on errors, [`model`] emits stubs instead
//! so that one mistake gives one error rather than a cascade in the user's code.

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, GenericParam, Generics, Ident, WherePredicate};

use crate::ast::{CollectionInput, Field, Input};
use crate::attr::CollectionArgs;
use crate::ctxt::Errors;

/// `#[derive(Model)]`: parse, validate, expand.
pub(crate) fn derive_model(node: &DeriveInput) -> TokenStream {
    let mut errors = Errors::default();
    let Some(input) = Input::from_syn(node, &mut errors) else {
        return errors.into_compile_errors();
    };
    input.validate(&mut errors);
    if errors.is_empty() {
        model(&input, Mode::Real)
    } else {
        let mut out = model(&input, Mode::Stub);
        out.extend(errors.into_compile_errors());
        out
    }
}

/// `#[collection(...)]`: parse, validate, expand.
pub(crate) fn collection(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let item: syn::ItemStruct = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(_) => {
            let span = item.clone().into_iter().find_map(|tt| match tt {
                TokenTree::Ident(i)
                    if ["enum", "union", "fn", "trait", "impl", "mod", "type"]
                        .contains(&&*i.to_string()) =>
                {
                    Some(i.span())
                }
                _ => None,
            });
            errors.at(
                span.unwrap_or_else(Span::call_site),
                "`#[collection]` goes on a struct, usually a unit struct: `#[collection(model = Player)] struct Players;`",
            );
            let mut out = item;
            out.extend(errors.into_compile_errors());
            return out;
        }
    };
    let args = CollectionArgs::parse(args, &mut errors);
    let input = CollectionInput::new(&item, args);
    input.validate(&mut errors);
    let mut out = item.to_token_stream();
    if let Some(model) = &input.args.model {
        let name = if errors.is_empty() {
            input.wire_name()
        } else {
            String::new()
        };
        out.extend(collection_impl(&input, model, &name));
    }
    out.extend(errors.into_compile_errors());
    out
}

/// Real code, or stubs that type-check without asking anything of the field types.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Real,
    Stub,
}

fn model(input: &Input<'_>, mode: Mode) -> TokenStream {
    let ident = input.ident;
    let vis = input.vis;
    let attr_ident = input.attr_ident();
    let change_ident = input.change_ident();
    let mut_ident = input.mut_ident();
    let private = quote!(::omni_runtime::__private);

    // In stub mode, drop what validation rejected so the stubs themselves compile.
    let mut seen_variants = HashSet::new();
    let public: Vec<&Field<'_>> = input
        .public()
        .filter(|f| mode == Mode::Real || seen_variants.insert(f.variant.to_string()))
        .collect();
    let has_lifetimes = input.generics.lifetimes().next().is_some();

    let variants: Vec<&Ident> = public.iter().map(|f| &f.variant).collect();
    let wires: Vec<&str> = public.iter().map(|f| f.wire.as_str()).collect();
    let types: Vec<&syn::Type> = public.iter().map(|f| f.ty).collect();
    let field_idents: Vec<&Ident> = public.iter().map(|f| f.ident).collect();
    let variant_docs: Vec<String> = public
        .iter()
        .map(|f| match &f.docs {
            Some(docs) => format!("`{}`: {docs}", f.wire),
            None => format!("The attribute `{}` (field `{}`).", f.wire, f.ident),
        })
        .collect();

    // --- The attribute enum -------------------------------------------------------------
    let attr_doc = format!("The public attributes of [`{ident}`]: one per field clients can see.");
    let attr_enum = quote! {
        #[doc = #attr_doc]
        #[derive(
            ::core::clone::Clone, ::core::marker::Copy, ::core::cmp::PartialEq, ::core::cmp::Eq,
            ::core::hash::Hash, ::core::fmt::Debug,
        )]
        #[allow(dead_code, unreachable_pub, private_interfaces, private_bounds)]
        #vis enum #attr_ident {
            #( #[doc = #variant_docs] #variants, )*
        }
    };
    let readonly: Vec<&Ident> = public
        .iter()
        .filter(|f| f.attrs.readonly.is_some())
        .map(|f| &f.variant)
        .collect();
    let (index_body, name_body, readonly_body) = if public.is_empty() {
        (
            quote!(match self {}),
            quote!(match self {}),
            quote!(match self {}),
        )
    } else {
        let is_readonly = if readonly.is_empty() {
            quote!(false)
        } else {
            quote!(::core::matches!(self, #(#attr_ident::#readonly)|*))
        };
        (
            quote!(self as usize),
            quote!(match self { #(#attr_ident::#variants => #wires,)* }),
            is_readonly,
        )
    };
    let attr_impl = quote! {
        #[automatically_derived]
        impl #private::Attribute for #attr_ident {
            #[inline]
            fn index(self) -> usize { #index_body }
            fn name(self) -> &'static str { #name_body }
            fn from_name(name: &str) -> ::core::option::Option<Self> {
                match name {
                    #( #wires => ::core::option::Option::Some(#attr_ident::#variants), )*
                    _ => ::core::option::Option::None,
                }
            }
            fn is_readonly(self) -> bool { #readonly_body }
        }
    };

    // --- Generics ---------------------------------------------------------------------------
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let change_generics = used_generics(input.generics, &types);
    let (change_impl_generics, change_ty_generics, change_where) = change_generics.split_for_impl();
    let client_bounds: Vec<TokenStream> = if mode == Mode::Real {
        public.iter().map(|f| client_value_bound(f)).collect()
    } else {
        Vec::new()
    };
    let change_where = extend_where(change_where, &client_bounds);

    // --- The change enum ----------------------------------------------------------------------
    let change_doc = format!(
        "A typed change to one public attribute of [`{ident}`]: what `can_write` hooks inspect and clients send."
    );
    let change_enum = quote! {
        #[doc = #change_doc]
        #[allow(dead_code, unreachable_pub, private_interfaces, private_bounds)]
        #vis enum #change_ident #change_generics #change_where {
            #( #[doc = #variant_docs] #variants(#types), )*
        }
    };
    let change_impls = if mode == Mode::Real {
        let clone_body = if public.is_empty() {
            quote!(match *self {})
        } else {
            quote!(match self { #( #change_ident::#variants(v) => #change_ident::#variants(::core::clone::Clone::clone(v)), )* })
        };
        let variant_names: Vec<String> = variants.iter().map(|v| v.to_string()).collect();
        let debug_body = if public.is_empty() {
            quote!(match *self {})
        } else {
            quote!(match self { #( #change_ident::#variants(v) => f.debug_tuple(#variant_names).field(&#private::DebugJson(v)).finish(), )* })
        };
        quote! {
            #[automatically_derived]
            impl #change_impl_generics ::core::clone::Clone for #change_ident #change_ty_generics #change_where {
                fn clone(&self) -> Self { #clone_body }
            }
            #[automatically_derived]
            impl #change_impl_generics ::core::fmt::Debug for #change_ident #change_ty_generics #change_where {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result { #debug_body }
            }
        }
    } else {
        quote! {
            impl #change_impl_generics ::core::clone::Clone for #change_ident #change_ty_generics #change_where {
                fn clone(&self) -> Self { ::core::unreachable!() }
            }
            impl #change_impl_generics ::core::fmt::Debug for #change_ident #change_ty_generics #change_where {
                fn fmt(&self, _: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result { ::core::unreachable!() }
            }
        }
    };

    let item_tokens = quote!(#attr_enum #change_enum);
    if has_lifetimes {
        // Validation rejected the lifetime; a `Mut` view and `Model` impl cannot be stubbed.
        return quote! {
            #item_tokens
            const _: () = { #attr_impl #change_impls };
        };
    }

    // --- The tracking view ----------------------------------------------------------------------
    let mut mut_generics = input.generics.clone();
    mut_generics.params.insert(0, syn::parse_quote!('a));
    let (mut_impl_generics, mut_ty_generics, mut_where) = mut_generics.split_for_impl();
    let mut_ty_args = ty_args(input.generics, quote!('a));
    let mut_doc = format!(
        "A tracking view of a [`{ident}`]: setters record which attributes changed so only those are sent."
    );
    let mut_struct = quote! {
        #[doc = #mut_doc]
        #[allow(dead_code, unreachable_pub, private_interfaces, private_bounds)]
        #vis struct #mut_ident #mut_impl_generics #mut_where {
            model: &'a mut #ident #ty_generics,
            changed: &'a mut #private::AttrSet,
        }
    };
    let mut methods = Vec::new();
    let mut index = 0usize;
    let mut seen_methods = HashSet::new();
    for field in &input.fields {
        let fident = field.ident;
        let ty = field.ty;
        let setter = field.setter();
        if mode == Mode::Stub
            && !(seen_methods.insert(fident.to_string()) && seen_methods.insert(setter.to_string()))
        {
            continue;
        }
        if fident == "model" && mode == Mode::Stub {
            continue;
        }
        let getter_doc = match &field.docs {
            Some(docs) => docs.clone(),
            None => format!("The field `{fident}`."),
        };
        let (setter_doc, record) = if field.private {
            (
                format!(
                    "Sets the server-only field `{fident}`. Not recorded: clients never see it."
                ),
                quote!(),
            )
        } else {
            let i = index;
            index += 1;
            (
                format!(
                    "Sets `{fident}` and records that the attribute `{}` changed.",
                    field.wire
                ),
                quote!(self.changed.insert(#i);),
            )
        };
        methods.push(quote! {
            #[doc = #getter_doc]
            #[inline]
            #vis fn #fident(&self) -> &#ty { &self.model.#fident }
            #[doc = #setter_doc]
            #[inline]
            #vis fn #setter(&mut self, value: #ty) -> &mut Self {
                self.model.#fident = value;
                #record
                self
            }
        });
    }
    let mut_impls = quote! {
        #[allow(dead_code, unreachable_pub, private_interfaces, private_bounds)]
        impl #mut_impl_generics #mut_ident #mut_ty_generics #mut_where {
            /// The model, read-only.
            #[inline]
            #vis fn model(&self) -> &#ident #ty_generics { self.model }
            #( #methods )*
        }
        #[automatically_derived]
        impl #mut_impl_generics ::core::ops::Deref for #mut_ident #mut_ty_generics #mut_where {
            type Target = #ident #ty_generics;
            #[inline]
            fn deref(&self) -> &Self::Target { self.model }
        }
    };

    // --- impl Model ---------------------------------------------------------------------------------
    let name = input.model_name();
    let mut model_bounds = client_bounds.clone();
    if !input.generics.params.is_empty() {
        for param in input.generics.type_params() {
            let p = &param.ident;
            model_bounds.push(quote!(#p: 'static));
        }
        model_bounds.push(quote! {
            #ident #ty_generics: ::core::clone::Clone + ::core::default::Default + ::core::marker::Send + ::core::marker::Sync
        });
    }
    let model_where = extend_where(where_clause, &model_bounds);
    let change_ty = quote!(#change_ident #change_ty_generics);
    // Spanned on the derive, so a missing `Clone` or `Default` is reported once, there.
    let mut self_ident = ident.clone();
    self_ident.set_span(Span::call_site());
    let body = if mode == Mode::Stub {
        quote! {
            fn change_attr(_: &Self::Change) -> #attr_ident { ::core::unreachable!() }
            fn apply(&mut self, _: Self::Change) { ::core::unreachable!() }
            fn write_attr(&self, _: #attr_ident, _: &mut ::std::vec::Vec<u8>) { ::core::unreachable!() }
            fn decode_change(
                _: #attr_ident,
                _: &#private::serde_json::Value,
            ) -> ::core::result::Result<Self::Change, #private::DecodeError> { ::core::unreachable!() }
            fn view_mut<'a>(&'a mut self, changed: &'a mut #private::AttrSet) -> Self::Mut<'a> {
                #mut_ident { model: self, changed }
            }
            fn describe(_: &mut #private::schema::Schema) { ::core::unreachable!() }
        }
    } else {
        let (change_attr, apply, write, decode) = if public.is_empty() {
            (
                quote!(match *change {}),
                quote!(match change {}),
                quote!(match attr {}),
                quote!(match attr {}),
            )
        } else {
            (
                quote!(match *change { #( #change_ident::#variants(_) => #attr_ident::#variants, )* }),
                quote!(match change { #( #change_ident::#variants(value) => self.#field_idents = value, )* }),
                quote!(match attr { #( #attr_ident::#variants => #private::encode_attr(&self.#field_idents, out), )* }),
                quote!(match attr {
                    #( #attr_ident::#variants => #private::decode_attr::<#types>(#name, #wires, value).map(#change_ident::#variants), )*
                }),
            )
        };
        let model_docs = opt_str(input.docs.as_deref());
        let readonly_flags: Vec<bool> = public.iter().map(|f| f.attrs.readonly.is_some()).collect();
        let field_docs: Vec<TokenStream> =
            public.iter().map(|f| opt_str(f.docs.as_deref())).collect();
        quote! {
            fn change_attr(change: &Self::Change) -> #attr_ident { #change_attr }
            fn apply(&mut self, change: Self::Change) { #apply }
            fn write_attr(&self, attr: #attr_ident, out: &mut ::std::vec::Vec<u8>) { #write }
            fn decode_change(
                attr: #attr_ident,
                value: &#private::serde_json::Value,
            ) -> ::core::result::Result<Self::Change, #private::DecodeError> { #decode }
            fn view_mut<'a>(&'a mut self, changed: &'a mut #private::AttrSet) -> Self::Mut<'a> {
                #mut_ident { model: self, changed }
            }
            fn describe(schema: &mut #private::schema::Schema) {
                let cfg = #private::ts_config();
                let fields = ::std::vec![
                    #( #private::field_schema::<#types>(&cfg, #wires, #readonly_flags, #field_docs), )*
                ];
                #private::add_model(schema, #name, #model_docs, fields);
                #( #private::add_field_type_decls::<#types>(schema, &cfg); )*
            }
        }
    };
    let model_impl = quote! {
        #[automatically_derived]
        impl #impl_generics #private::Model for #self_ident #ty_generics #model_where {
            type Attr = #attr_ident;
            type Change = #change_ty;
            type Mut<'a> = #mut_ident<#mut_ty_args>;
            const NAME: &'static str = #name;
            const ATTRS: &'static [#attr_ident] = &[ #( #attr_ident::#variants, )* ];
            #body
        }
    };

    quote! {
        #item_tokens
        #mut_struct
        const _: () = {
            #attr_impl
            #change_impls
            #mut_impls
            #model_impl
        };
    }
}

fn collection_impl(input: &CollectionInput<'_>, model: &syn::Type, name: &str) -> TokenStream {
    let item = input.item;
    let ident = &item.ident;
    let vis = &item.vis;
    let private = quote!(::omni_runtime::__private);
    let (impl_generics, ty_generics, where_clause) = item.generics.split_for_impl();
    let docs = opt_str(input.docs.as_deref());
    let constructors = if matches!(item.fields, syn::Fields::Unit)
        && item.generics.params.is_empty()
    {
        let with_doc = format!("A `{ident}` collection starting with `models`.");
        let empty_doc = format!("An empty `{ident}` collection.");
        quote! {
            #[allow(dead_code, unreachable_pub, private_interfaces, private_bounds)]
            impl #ident {
                #[doc = #with_doc]
                #vis fn with(models: impl ::core::iter::IntoIterator<Item = #model>) -> #private::Seeded<Self> {
                    #private::Seeded::new(#ident, models)
                }
                #[doc = #empty_doc]
                #vis fn empty() -> #private::Seeded<Self> {
                    #private::Seeded::new(#ident, ::std::vec::Vec::new())
                }
            }
        }
    } else {
        quote!()
    };
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #private::Collection for #ident #ty_generics #where_clause {
                type Model = #model;
                const NAME: &'static str = #name;
                const DOCS: ::core::option::Option<&'static str> = #docs;
            }
            #constructors
        };
    }
}

/// `FieldType: ClientValue`, spanned on the field's type so rustc points there.
fn client_value_bound(field: &Field<'_>) -> TokenStream {
    let ty = field.ty;
    quote_spanned!(ty.span()=> #ty: ::omni_runtime::__private::ClientValue)
}

fn opt_str(s: Option<&str>) -> TokenStream {
    match s {
        Some(s) => quote!(::core::option::Option::Some(#s)),
        None => quote!(::core::option::Option::None),
    }
}

/// A where clause with more predicates.
fn extend_where(base: Option<&syn::WhereClause>, extra: &[TokenStream]) -> TokenStream {
    let existing = base
        .map(|w| {
            w.predicates
                .iter()
                .map(|p| p.to_token_stream())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if existing.is_empty() && extra.is_empty() {
        return quote!();
    }
    quote!(where #( #existing, )* #( #extra, )*)
}

/// Type arguments for the `Mut` view: `'a, T, N`.
fn ty_args(generics: &Generics, lifetime: TokenStream) -> TokenStream {
    let params = generics.params.iter().map(|p| match p {
        GenericParam::Type(t) => t.ident.to_token_stream(),
        GenericParam::Const(c) => c.ident.to_token_stream(),
        GenericParam::Lifetime(l) => l.lifetime.to_token_stream(),
    });
    quote!(#lifetime #(, #params)*)
}

/// The struct's generics reduced to the parameters the public field types mention (the change
/// enum would not compile with an unused parameter).
fn used_generics(generics: &Generics, types: &[&syn::Type]) -> Generics {
    let mut mentioned = HashSet::new();
    for ty in types {
        idents_in(ty.to_token_stream(), &mut mentioned);
    }
    let param_name = |p: &GenericParam| match p {
        GenericParam::Type(t) => t.ident.to_string(),
        GenericParam::Const(c) => c.ident.to_string(),
        GenericParam::Lifetime(l) => l.lifetime.ident.to_string(),
    };
    let dropped: HashSet<String> = generics
        .params
        .iter()
        .map(param_name)
        .filter(|name| !mentioned.contains(name))
        .collect();
    let mut out = generics.clone();
    out.params = generics
        .params
        .iter()
        .filter(|p| !dropped.contains(&param_name(p)))
        .cloned()
        .collect();
    if let Some(where_clause) = &mut out.where_clause {
        where_clause.predicates = where_clause
            .predicates
            .iter()
            .filter(|pred: &&WherePredicate| {
                let mut idents = HashSet::new();
                idents_in(pred.to_token_stream(), &mut idents);
                idents.is_disjoint(&dropped)
            })
            .cloned()
            .collect();
    }
    out
}

fn idents_in(tokens: TokenStream, out: &mut HashSet<String>) {
    for tt in tokens {
        match tt {
            TokenTree::Ident(i) => {
                out.insert(i.to_string());
            }
            TokenTree::Group(g) => idents_in(g.stream(), out),
            _ => {}
        }
    }
}

/// Prints the expansion to stderr when `OMNI_MACROS_DEBUG` is set: to `1` (or any value) for
/// every item, or to an item's name for that one.
pub(crate) fn debug_print(kind: &str, name: &str, tokens: &TokenStream) {
    if let Ok(filter) = std::env::var("OMNI_MACROS_DEBUG")
        && (filter.is_empty() || filter == "1" || filter == name)
    {
        eprintln!("// ---- {kind} {name} (OMNI_MACROS_DEBUG) ----\n{tokens}\n");
    }
}
