//! Stage 2: rules across fields. Every broken rule is recorded; nothing stops at the first.

use std::collections::HashMap;

use proc_macro2::Span;

use crate::ast::{CollectionInput, Field, Input};
use crate::case;
use crate::ctxt::Errors;

/// Keys the wire protocol puts on model objects (docs/PROTOCOL.md).
pub(crate) const RESERVED: &[&str] = &["oid", "t", "id", "tmp", "cid"];

/// At most this many public fields (`AttrSet` is a 64-bit set).
pub(crate) const MAX_PUBLIC_FIELDS: usize = 64;

impl Input<'_> {
    pub(crate) fn validate(&self, errors: &mut Errors) {
        for param in self.generics.lifetimes() {
            errors.spanned(
                param,
                format!(
                    "a model cannot borrow: remove the lifetime parameter `{}` and use owned types such as `String`",
                    param.lifetime
                ),
            );
        }
        if let Some(name) = &self.attrs.name
            && !case::is_js_identifier(&name.value())
        {
            errors.spanned(
                name,
                format!(
                    "model name `{}` is not a JavaScript identifier; use letters, digits, `_` and `$`",
                    name.value()
                ),
            );
        }

        let mut wire_names: HashMap<&str, &Field<'_>> = HashMap::new();
        let mut variants: HashMap<String, &Field<'_>> = HashMap::new();
        let mut methods: HashMap<String, String> = HashMap::new();
        methods.insert(
            "model".to_owned(),
            "the view's own method that returns the whole model".to_owned(),
        );
        let mut public_count = 0;

        for field in &self.fields {
            if field.private {
                self.validate_private(field, errors);
            } else {
                public_count += 1;
                if public_count == MAX_PUBLIC_FIELDS + 1 {
                    let total = self.public().count();
                    errors.spanned(
                        field.ident,
                        format!(
                            "model `{}` has {total} public fields, more than the {MAX_PUBLIC_FIELDS} Omni supports; \
                             make some server-only with a leading `_`, or group related fields into a nested struct",
                            self.ident
                        ),
                    );
                }
                self.validate_wire_name(field, &mut wire_names, errors);
                let variant = field.variant.to_string();
                if let Some(first) = variants.get(&variant) {
                    errors.spanned(
                        field.ident,
                        format!(
                            "fields `{}` and `{}` both become the variant `{variant}` of `{}`; rename one of the fields",
                            first.ident,
                            field.ident,
                            self.attr_ident()
                        ),
                    );
                } else {
                    variants.insert(variant, field);
                }
            }

            // Getter and setter names on the `...Mut` view.
            for (method, what) in [
                (field.name.clone(), "getter"),
                (field.setter().to_string(), "setter"),
            ] {
                let this = format!("the {what} of field `{}`", field.ident);
                match methods.get(&method) {
                    Some(other) => errors.spanned(
                        field.ident,
                        format!(
                            "{this} would be named `{}::{method}`, like {other}; rename the field \
                             (`#[model(rename = \"...\")]` keeps its wire name)",
                            self.mut_ident()
                        ),
                    ),
                    None => {
                        methods.insert(method, this);
                    }
                }
            }
        }
    }

    fn validate_private(&self, field: &Field<'_>, errors: &mut Errors) {
        if let Some(readonly) = &field.attrs.readonly {
            errors.spanned(
                readonly,
                format!(
                    "field `{}` is server-only, so no client can read or write it and `readonly` does not apply; \
                     remove the leading `_` to expose it to clients",
                    field.ident
                ),
            );
        }
        if let Some(rename) = &field.attrs.rename {
            errors.spanned(
                rename,
                format!(
                    "field `{}` is server-only and never sent to clients, so it has no wire name to rename; \
                     remove the leading `_` to expose it to clients",
                    field.ident
                ),
            );
        }
    }

    fn validate_wire_name<'f>(
        &self,
        field: &'f Field<'f>,
        seen: &mut HashMap<&'f str, &'f Field<'f>>,
        errors: &mut Errors,
    ) {
        let wire = field.wire.as_str();
        let (span, how): (Span, String) = match (&field.attrs.rename, &self.attrs.rename_all) {
            (Some(lit), _) => (lit.span(), "choose another name in `rename`".to_owned()),
            (None, Some((lit, Some(_)))) => (
                field.ident.span(),
                format!(
                    "`rename_all = {:?}` turns field `{}` into it; add `#[model(rename = \"...\")]` to the field",
                    lit.value(),
                    field.ident
                ),
            ),
            (None, _) => (
                field.ident.span(),
                "rename the field, or add `#[model(rename = \"...\")]` to give it another wire name".to_owned(),
            ),
        };
        if RESERVED.contains(&wire) {
            let all = RESERVED
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", ");
            errors.at(
                span,
                format!("`{wire}` is a reserved key of the Omni wire protocol ({all}) and cannot name a public field; {how}"),
            );
        } else if wire.starts_with('_') {
            errors.at(
                span,
                format!(
                    "wire name `{wire}` starts with `_`, which marks server-only fields; {how}"
                ),
            );
        } else if !case::is_js_identifier(wire) {
            errors.at(
                span,
                format!(
                    "wire name `{wire}` is not a JavaScript identifier (letters, digits, `_` and `$`, \
                     not starting with a digit); {how}"
                ),
            );
        }
        match seen.get(wire) {
            Some(first) => errors.at(
                span,
                format!(
                    "fields `{}` and `{}` both have the wire name `{wire}`; give one of them another \
                     `#[model(rename = \"...\")]`",
                    first.ident, field.ident
                ),
            ),
            None => {
                seen.insert(wire, field);
            }
        }
    }
}

impl CollectionInput<'_> {
    pub(crate) fn validate(&self, errors: &mut Errors) {
        if self.args.model.is_none() {
            errors.at(
                Span::call_site(),
                "missing the model of the collection: write `#[collection(model = YourModel)]`",
            );
        }
        let name = self.wire_name();
        if !case::is_js_identifier(&name) {
            let span = self
                .args
                .name
                .as_ref()
                .map_or_else(|| self.item.ident.span(), |lit| lit.span());
            errors.at(
                span,
                format!(
                    "collection name `{name}` is not a JavaScript identifier (letters, digits, `_` and `$`, \
                     not starting with a digit); choose another `name = \"...\"`"
                ),
            );
        }
        if let Some(param) = self.item.generics.lifetimes().next() {
            errors.spanned(
                param,
                "a collection cannot borrow: remove the lifetime parameter, collections live as long as the server",
            );
        }
    }
}
