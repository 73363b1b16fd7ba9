//! Running user code inside the engine: panics contained, calls back into the world refused.

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs a user hook, turning a panic into `None` (logged): a panicking permission hook denies.
pub(crate) fn guard<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(panic) => {
            tracing::error!(
                hook = what,
                panic = panic_message(&panic),
                "user hook panicked; treated as a refusal"
            );
            None
        }
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(panic: &Box<dyn Any + Send>) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}

thread_local! {
    /// Whether this thread holds the engine's lock.
    static LOCKED: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as inside the engine's critical section until dropped.
pub(crate) struct Critical(());

impl Critical {
    /// Enters the critical section. Panics, with a message saying why, if this thread is in it
    /// already: user code run by the engine (a permission hook, a channel function, a rules
    /// handler, a `World::read` closure) called back into the world or a connection, which
    /// would wait for itself forever.
    pub(crate) fn enter(what: &str) -> Critical {
        if LOCKED.with(Cell::get) {
            panic!(
                "{what} was called from code the engine runs under its lock (a permission hook, a channel function, a rules handler or a `World::read`/`find` closure); that would deadlock. Hooks must only look at what they are given: read or write other models in an event handler, an observer or a middleware instead"
            );
        }
        LOCKED.with(|l| l.set(true));
        Critical(())
    }
}

impl Drop for Critical {
    fn drop(&mut self) {
        LOCKED.with(|l| l.set(false));
    }
}
