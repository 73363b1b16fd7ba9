//! Stage 1b: our attributes, `#[model(...)]` on structs and fields and `#[collection(...)]`.
//!
//! Parsing records every mistake in [`Errors`] and keeps going, so one build reports them all.

use proc_macro2::TokenStream;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::{Attribute, Ident, LitStr, Token};

use crate::case::RenameRule;
use crate::ctxt::Errors;

/// `#[model(...)]` on the struct.
#[derive(Default)]
pub(crate) struct ModelAttrs {
    /// `rename_all = "camelCase"`: the literal and the rule it names (if valid).
    pub(crate) rename_all: Option<(LitStr, Option<RenameRule>)>,
    /// `name = "Player"`: overrides `Model::NAME`.
    pub(crate) name: Option<LitStr>,
}

/// `#[model(...)]` on a field.
#[derive(Default)]
pub(crate) struct FieldAttrs {
    /// `readonly`, keeping the keyword for spans.
    pub(crate) readonly: Option<Ident>,
    /// `rename = "wireName"`.
    pub(crate) rename: Option<LitStr>,
}

const STRUCT_KEYS: &str = "`rename_all` or `name`";
const FIELD_KEYS: &str = "`readonly` or `rename`";

impl ModelAttrs {
    pub(crate) fn from_attrs(attrs: &[Attribute], errors: &mut Errors) -> ModelAttrs {
        let mut out = ModelAttrs::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("model")) {
            let result = attr.parse_nested_meta(|meta| {
                let key = key_of(&meta)?;
                match key.to_string().as_str() {
                    "rename_all" => {
                        let lit: LitStr = meta.value()?.parse()?;
                        let rule = RenameRule::from_str(&lit.value());
                        if rule.is_none() {
                            errors.spanned(
                                &lit,
                                format!(
                                    "unknown `rename_all` rule `{}`; expected one of {}",
                                    lit.value(),
                                    RenameRule::expected()
                                ),
                            );
                        }
                        set_once(&mut out.rename_all, (lit, rule), &key, errors);
                    }
                    "name" => {
                        let lit: LitStr = meta.value()?.parse()?;
                        set_once(&mut out.name, lit, &key, errors);
                    }
                    "readonly" | "rename" => {
                        skip_value(&meta)?;
                        errors.spanned(
                            &key,
                            format!("`{key}` is a field attribute: put `#[model({key})]` on a field, not on the struct"),
                        );
                    }
                    _ => {
                        skip_value(&meta)?;
                        errors.spanned(&key, format!("unknown model attribute `{key}`; expected {STRUCT_KEYS}"));
                    }
                }
                Ok(())
            });
            if let Err(e) = result {
                errors.push(e);
            }
        }
        out
    }
}

impl FieldAttrs {
    pub(crate) fn from_attrs(attrs: &[Attribute], errors: &mut Errors) -> FieldAttrs {
        let mut out = FieldAttrs::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("model")) {
            let result = attr.parse_nested_meta(|meta| {
                let key = key_of(&meta)?;
                match key.to_string().as_str() {
                    "readonly" => {
                        if meta.input.peek(Token![=]) {
                            return Err(meta.error("`readonly` takes no value: write `#[model(readonly)]`"));
                        }
                        set_once(&mut out.readonly, key.clone(), &key, errors);
                    }
                    "rename" => {
                        let lit: LitStr = meta.value()?.parse()?;
                        set_once(&mut out.rename, lit, &key, errors);
                    }
                    "rename_all" | "name" => {
                        skip_value(&meta)?;
                        errors.spanned(
                            &key,
                            format!("`{key}` is a struct attribute: put `#[model({key} = \"...\")]` on the struct, not on a field"),
                        );
                    }
                    _ => {
                        skip_value(&meta)?;
                        errors.spanned(&key, format!("unknown model attribute `{key}`; expected {FIELD_KEYS}"));
                    }
                }
                Ok(())
            });
            if let Err(e) = result {
                errors.push(e);
            }
        }
        out
    }
}

/// `#[collection(model = Player, name = "players")]`.
#[derive(Default)]
pub(crate) struct CollectionArgs {
    /// `model = Type`.
    pub(crate) model: Option<syn::Type>,
    /// `name = "..."`.
    pub(crate) name: Option<LitStr>,
}

impl CollectionArgs {
    pub(crate) fn parse(args: TokenStream, errors: &mut Errors) -> CollectionArgs {
        let mut out = CollectionArgs::default();
        let parser = syn::meta::parser(|meta| {
            let key = key_of(&meta)?;
            match key.to_string().as_str() {
                "model" => {
                    let ty: syn::Type = meta.value()?.parse()?;
                    set_once(&mut out.model, ty, &key, errors);
                }
                "name" => {
                    let lit: LitStr = meta.value()?.parse()?;
                    set_once(&mut out.name, lit, &key, errors);
                }
                _ => {
                    skip_value(&meta)?;
                    errors.spanned(
                        &key,
                        format!("unknown collection argument `{key}`; expected `model` or `name`"),
                    );
                }
            }
            Ok(())
        });
        if let Err(e) = parser.parse2(args) {
            errors.push(e);
        }
        out
    }
}

/// The key of one `key` / `key = value` item, as a plain identifier.
fn key_of(meta: &ParseNestedMeta<'_>) -> syn::Result<Ident> {
    meta.path
        .get_ident()
        .cloned()
        .ok_or_else(|| meta.error("expected an attribute name such as `rename`"))
}

/// Consumes `= value` after an unknown key so parsing can go on to the next item.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _group: TokenStream = meta.input.parse::<proc_macro2::Group>()?.stream();
    }
    Ok(())
}

fn set_once<T>(slot: &mut Option<T>, value: T, key: &Ident, errors: &mut Errors) {
    if slot.is_some() {
        errors.spanned(key, format!("duplicate `{key}`; remove one of them"));
    } else {
        *slot = Some(value);
    }
}

/// The `///` docs on an item, one line per `#[doc]`, with the conventional leading space removed.
pub(crate) fn docs(attrs: &[Attribute]) -> Option<String> {
    let mut lines = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &attr.meta
            && let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
        {
            for line in s.value().lines() {
                lines.push(line.strip_prefix(' ').unwrap_or(line).trim_end().to_owned());
            }
        }
    }
    let text = lines.join("\n");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}
