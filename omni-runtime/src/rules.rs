//! Per-action rules for a collection, as Halo's per-action routes: allow or deny `create`,
//! `read`, `update`, `destroy` and `list` as a whole, or decide them with a handler, on top of
//! the fine-grained [`Permissions`](crate::model::Permissions) and
//! [`CollectionPermissions`](crate::collection::CollectionPermissions) hooks.
//!
//! A rule is checked first; a request it allows still needs the hooks to agree. Rules bind
//! clients only: server code (`World`) is never refused by them.
//!
//! - `list`: the collection is synced to the client (snapshot, live adds, changes, removes).
//!   Denied, the client holds none of its models, but may still `read` one by OID.
//! - `read`: a client's one-shot `read` of one model by OID. Denying `read` denies `list` too:
//!   a client that may not read may not hold anything either.
//! - `create`, `update`, `destroy`: a client's `add`, `change` and `remove`.
//!
//! # Example
//!
//! ```no_run
//! # use omni_runtime::prelude::*;
//! use omni_runtime::rules::{Action, Rules};
//! # #[derive(Default)] struct Session { admin: bool }
//! # #[derive(Model, Clone, Default)] struct Invoice { total: i64 }
//! # impl Permissions<Session> for Invoice {}
//! # #[collection(model = Invoice)] struct Invoices;
//! # impl CollectionPermissions<Session> for Invoices {}
//! let server = Omni::<Session>::new()
//!     .collection(Invoices::empty())
//!     .rules::<Invoices>(
//!         Rules::<Session>::new()
//!             .deny(Action::Destroy)                                  // never, for anyone
//!             .handle(Action::List, |ctx, _oid| {                     // admins only
//!                 if ctx.session().admin { Ok(()) } else { Err("admins only".into()) }
//!             }),
//!     )
//!     .build();
//! ```

use std::fmt;

use crate::collection::Ctx;

/// A client action on a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A client's `add`.
    Create,
    /// A client's one-shot `read` of one model.
    Read,
    /// A client's `change`.
    Update,
    /// A client's `remove`.
    Destroy,
    /// The collection synced to the client.
    List,
}

impl Action {
    /// `"create"`, `"read"`, `"update"`, `"destroy"` or `"list"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Read => "read",
            Action::Update => "update",
            Action::Destroy => "destroy",
            Action::List => "list",
        }
    }
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Handler<S> = Box<dyn Fn(&Ctx<'_, S>, Option<u64>) -> Result<(), String> + Send + Sync>;

/// The per-action rules of one collection. [`Rules::new`] allows every action (the hooks still
/// decide); [`Rules::deny`] and [`Rules::handle`] narrow it.
pub struct Rules<S> {
    denied: u8,
    handlers: Vec<(Action, Handler<S>)>,
}

impl<S> Default for Rules<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> fmt::Debug for Rules<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let denied: Vec<_> = ALL.iter().filter(|a| self.denied & a.bit() != 0).collect();
        let handled: Vec<_> = self.handlers.iter().map(|(a, _)| a).collect();
        f.debug_struct("Rules")
            .field("denied", &denied)
            .field("handled", &handled)
            .finish()
    }
}

const ALL: [Action; 5] = [
    Action::Create,
    Action::Read,
    Action::Update,
    Action::Destroy,
    Action::List,
];

impl<S> Rules<S> {
    /// Every action allowed, subject to the permission hooks.
    pub fn new() -> Self {
        Rules {
            denied: 0,
            handlers: Vec::new(),
        }
    }

    /// Only the listed actions are allowed; every other is denied.
    pub fn only(actions: &[Action]) -> Self {
        let mut rules = Self::new();
        for a in ALL {
            if !actions.contains(&a) {
                rules.denied |= a.bit();
            }
        }
        rules
    }

    /// Denies `action` to every client.
    pub fn deny(mut self, action: Action) -> Self {
        self.denied |= action.bit();
        self
    }

    /// Allows `action` again after [`Rules::only`] or [`Rules::deny`].
    pub fn allow(mut self, action: Action) -> Self {
        self.denied &= !action.bit();
        self
    }

    /// Decides `action` with `handler(ctx, oid)` (`oid` is `None` for `create` and `list`):
    /// `Err(reason)` refuses it and the client gets the reason. Several handlers for one action
    /// all have to agree.
    pub fn handle(
        mut self,
        action: Action,
        handler: impl Fn(&Ctx<'_, S>, Option<u64>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.handlers.push((action, Box::new(handler)));
        self
    }

    /// Whether any rule could refuse `action`.
    pub(crate) fn restricts(&self, action: Action) -> bool {
        self.denied & action.bit() != 0 || self.handlers.iter().any(|(a, _)| *a == action)
    }

    /// Checks `action` for a client; the error names the collection and the reason.
    pub(crate) fn check(
        &self,
        collection: &str,
        action: Action,
        ctx: &Ctx<'_, S>,
        oid: Option<u64>,
    ) -> Result<(), String> {
        if self.denied & action.bit() != 0 {
            return Err(format!(
                "action `{action}` is not allowed on collection `{collection}`"
            ));
        }
        for (a, handler) in &self.handlers {
            if *a == action {
                let verdict = crate::hooks::guard("Rules handler", || handler(ctx, oid))
                    .unwrap_or_else(|| Err("the rule's handler failed".to_owned()));
                verdict.map_err(|reason| {
                    format!("action `{action}` refused on collection `{collection}`: {reason}")
                })?;
            }
        }
        Ok(())
    }

    /// Whether the collection is synced to this client: both `read` and `list` allowed.
    pub(crate) fn lists(&self, collection: &str, ctx: &Ctx<'_, S>) -> bool {
        if self.denied & (Action::List.bit() | Action::Read.bit()) != 0 {
            return false;
        }
        if !self.restricts(Action::List) && !self.restricts(Action::Read) {
            return true;
        }
        self.check(collection, Action::Read, ctx, None).is_ok()
            && self.check(collection, Action::List, ctx, None).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ConnId;

    #[test]
    fn deny_only_allow_and_handlers() {
        let ctx = Ctx::new(&true, ConnId(1));
        let rules: Rules<bool> = Rules::only(&[Action::Read, Action::List])
            .allow(Action::Update)
            .handle(Action::Update, |ctx, oid| {
                if *ctx.session() && oid != Some(13) {
                    Ok(())
                } else {
                    Err("unlucky".into())
                }
            });
        assert_eq!(
            rules.check("todos", Action::Create, &ctx, None),
            Err("action `create` is not allowed on collection `todos`".into())
        );
        assert!(rules.check("todos", Action::Update, &ctx, Some(1)).is_ok());
        assert_eq!(
            rules.check("todos", Action::Update, &ctx, Some(13)),
            Err("action `update` refused on collection `todos`: unlucky".into())
        );
        assert!(rules.lists("todos", &ctx));
        let no_read: Rules<bool> = Rules::new().deny(Action::Read);
        assert!(!no_read.lists("todos", &ctx), "no read implies no list");
    }
}
