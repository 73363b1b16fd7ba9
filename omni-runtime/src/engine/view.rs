//! What a connection may see of a model, and the one diff between what it holds and that.

use bytes::Bytes;

use crate::ids::ConnId;
use crate::model::{Access, AttrSet, Oid, Permissions};

use crate::hooks::guard;

/// Which attributes of `model` the connection may read, or `None` if it may not see it.
pub(crate) fn readable<S, M: Permissions<S>>(
    model: &M,
    session: &S,
    conn: ConnId,
    oid: u64,
) -> Option<AttrSet> {
    let ctx = Access {
        session,
        conn,
        oid: Oid::<M>::from_raw(oid),
    };
    guard("Permissions::can_read", || {
        if !model.can_read(&ctx, None) {
            return None;
        }
        let mut set = AttrSet::EMPTY;
        for (i, attr) in M::ATTRS.iter().enumerate() {
            if model.can_read(&ctx, Some(*attr)) {
                set.insert(i);
            }
        }
        Some(set)
    })
    .flatten()
}

/// What a connection must be sent about one model so that what it holds matches what it may
/// see now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delta {
    /// Nothing: it holds what it may see.
    None,
    /// It gains the model, with these attributes.
    Add(AttrSet),
    /// It loses the model.
    Remove,
    /// It keeps the model: these attributes are sent, those removed.
    Change { set: AttrSet, unset: AttrSet },
}

/// The difference between what a connection `held` of a model and what it may see `now`, after
/// the attributes `changed` changed (none, for a permission re-check).
pub(crate) fn diff(held: Option<AttrSet>, now: Option<AttrSet>, changed: AttrSet) -> Delta {
    match (held, now) {
        (None, None) => Delta::None,
        (None, Some(mask)) => Delta::Add(mask),
        (Some(_), None) => Delta::Remove,
        (Some(had), Some(mask)) => {
            let set = changed.and(mask).or(mask.minus(had));
            let unset = had.minus(mask);
            if set.is_empty() && unset.is_empty() {
                Delta::None
            } else {
                Delta::Change { set, unset }
            }
        }
    }
}

/// Encoded messages of one fan-out, keyed by the view they encode: connections that see the
/// same thing share the same bytes.
#[derive(Default)]
pub(crate) struct ViewCache {
    entries: Vec<(Delta, Bytes)>,
}

impl ViewCache {
    /// The encoding of `delta`, made with `make` the first time.
    pub(crate) fn get(&mut self, delta: Delta, make: impl FnOnce() -> Bytes) -> Bytes {
        if let Some((_, bytes)) = self.entries.iter().find(|(d, _)| *d == delta) {
            return bytes.clone();
        }
        let bytes = make();
        self.entries.push((delta, bytes.clone()));
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(bits: u64) -> AttrSet {
        AttrSet::from_bits(bits)
    }

    #[test]
    fn diff_covers_every_transition() {
        assert_eq!(diff(None, None, set(1)), Delta::None);
        assert_eq!(diff(None, Some(set(0b11)), set(1)), Delta::Add(set(0b11)));
        assert_eq!(diff(Some(set(1)), None, set(1)), Delta::Remove);
        // A change to an attribute it may read.
        assert_eq!(
            diff(Some(set(0b11)), Some(set(0b11)), set(0b01)),
            Delta::Change {
                set: set(0b01),
                unset: AttrSet::EMPTY
            }
        );
        // A change only to an unreadable attribute: nothing.
        assert_eq!(
            diff(Some(set(0b01)), Some(set(0b01)), set(0b10)),
            Delta::None
        );
        // A permission re-check: newly readable attributes are sent, hidden ones unset.
        assert_eq!(
            diff(Some(set(0b011)), Some(set(0b110)), AttrSet::EMPTY),
            Delta::Change {
                set: set(0b100),
                unset: set(0b001)
            }
        );
    }
}
