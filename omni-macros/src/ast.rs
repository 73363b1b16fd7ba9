//! Stage 1: the input, borrowed from syn (keeping the original nodes for spans).

use syn::{Data, DeriveInput, Fields, Generics, Ident, Type, Visibility};

use crate::attr::{self, CollectionArgs, FieldAttrs, ModelAttrs};
use crate::case;
use crate::ctxt::Errors;

/// A `#[derive(Model)]` struct.
pub(crate) struct Input<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) vis: &'a Visibility,
    pub(crate) generics: &'a Generics,
    pub(crate) attrs: ModelAttrs,
    pub(crate) docs: Option<String>,
    pub(crate) fields: Vec<Field<'a>>,
}

/// One named field of a model struct.
pub(crate) struct Field<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) ty: &'a Type,
    /// The field name without `r#`.
    pub(crate) name: String,
    /// A leading `_`: server-only.
    pub(crate) private: bool,
    pub(crate) attrs: FieldAttrs,
    pub(crate) docs: Option<String>,
    /// The name on the wire: `rename`, else `rename_all` applied to `name`, else `name`.
    pub(crate) wire: String,
    /// The variant in the attribute and change enums: `player_name` -> `PlayerName`.
    pub(crate) variant: Ident,
}

impl<'a> Input<'a> {
    /// Reads the struct. `None` when its shape cannot be a model at all (enum, union, tuple or
    /// unit struct); the reason is in `errors`.
    pub(crate) fn from_syn(node: &'a DeriveInput, errors: &mut Errors) -> Option<Input<'a>> {
        let named = match &node.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(named) => named,
                Fields::Unnamed(fields) => {
                    errors.spanned(
                        fields,
                        "`#[derive(Model)]` needs named fields, each of which becomes an attribute; \
                         name them, e.g. `struct Pos { x: i32, y: i32 }`",
                    );
                    return None;
                }
                Fields::Unit => {
                    errors.spanned(
                        &node.ident,
                        "`#[derive(Model)]` needs a struct with named fields, and a unit struct has none; \
                         add fields, or use `#[collection(model = ...)]` to declare a collection",
                    );
                    return None;
                }
            },
            Data::Enum(data) => {
                errors.spanned(
                    data.enum_token,
                    "`#[derive(Model)]` works on structs with named fields, not on enums; \
                     keep the enum as the type of a model field instead (it needs `Serialize`, `Deserialize` and `TS`)",
                );
                return None;
            }
            Data::Union(data) => {
                errors.spanned(
                    data.union_token,
                    "`#[derive(Model)]` works on structs with named fields, not on unions",
                );
                return None;
            }
        };

        let attrs = ModelAttrs::from_attrs(&node.attrs, errors);
        let rule = attrs.rename_all.as_ref().and_then(|(_, rule)| *rule);
        let fields = named
            .named
            .iter()
            .map(|field| Field::from_syn(field, rule, errors))
            .collect();
        Some(Input {
            ident: &node.ident,
            vis: &node.vis,
            generics: &node.generics,
            attrs,
            docs: attr::docs(&node.attrs),
            fields,
        })
    }

    /// The public fields, in declaration order; their position is the attribute index.
    pub(crate) fn public(&self) -> impl Iterator<Item = &Field<'a>> + Clone {
        self.fields.iter().filter(|f| !f.private)
    }

    /// `Model::NAME`.
    pub(crate) fn model_name(&self) -> String {
        match &self.attrs.name {
            Some(lit) => lit.value(),
            None => self.ident.to_string(),
        }
    }

    /// Names of the generated items.
    pub(crate) fn attr_ident(&self) -> Ident {
        Ident::new(&format!("{}Attr", self.ident), self.ident.span())
    }
    pub(crate) fn change_ident(&self) -> Ident {
        Ident::new(&format!("{}Change", self.ident), self.ident.span())
    }
    pub(crate) fn mut_ident(&self) -> Ident {
        Ident::new(&format!("{}Mut", self.ident), self.ident.span())
    }
}

impl<'a> Field<'a> {
    fn from_syn(
        field: &'a syn::Field,
        rule: Option<case::RenameRule>,
        errors: &mut Errors,
    ) -> Field<'a> {
        let ident = field.ident.as_ref().expect("named field");
        let name = ident.to_string().trim_start_matches("r#").to_owned();
        let attrs = FieldAttrs::from_attrs(&field.attrs, errors);
        let private = name.starts_with('_');
        let wire = match (&attrs.rename, rule) {
            (Some(lit), _) => lit.value(),
            (None, Some(rule)) if !private => rule.apply(&name),
            _ => name.clone(),
        };
        let mut variant = case::upper_camel(&name);
        if variant == "Self" {
            variant.push('_');
        }
        Field {
            ident,
            ty: &field.ty,
            variant: Ident::new(&variant, ident.span()),
            name,
            private,
            attrs,
            docs: attr::docs(&field.attrs),
            wire,
        }
    }

    /// `set_x`; a private `_password` gets `set_password`.
    pub(crate) fn setter(&self) -> Ident {
        Ident::new(
            &format!("set_{}", self.name.trim_start_matches('_')),
            self.ident.span(),
        )
    }
}

/// A `#[collection(...)]` struct.
pub(crate) struct CollectionInput<'a> {
    pub(crate) item: &'a syn::ItemStruct,
    pub(crate) args: CollectionArgs,
    pub(crate) docs: Option<String>,
}

impl<'a> CollectionInput<'a> {
    pub(crate) fn new(item: &'a syn::ItemStruct, args: CollectionArgs) -> CollectionInput<'a> {
        CollectionInput {
            item,
            args,
            docs: attr::docs(&item.attrs),
        }
    }

    /// The wire name: `name = "..."`, else the struct name in lowerCamelCase.
    pub(crate) fn wire_name(&self) -> String {
        match &self.args.name {
            Some(lit) => lit.value(),
            None => case::lower_camel(&self.item.ident.to_string()),
        }
    }
}
