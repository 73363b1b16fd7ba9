//! Compile-time guarantees of `#[derive(Model)]` and `#[collection]`: each file in `ui/` must
//! fail to compile with the error in its `.stderr`; each file in `pass/` must compile.
//!
//! The `.stderr` files are tied to the toolchain. After an intended change to a message, rerun
//! with `TRYBUILD=overwrite` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/pass/*.rs");
}
