//! Compile-time guarantees of `#[derive(Model)]` and `#[collection]`: each file in `ui/` and
//! `ui-rustc/` must fail to compile with the error in its `.stderr`; each file in `pass/` must
//! compile.
//!
//! - `ui/`: errors our macros emit (`compile_error!`-style, on spans they choose). Their text is
//!   ours, so these hold on every toolchain from the workspace's `rust-version` on.
//! - `ui-rustc/`: trait-bound and type errors, whose text is partly rustc's own ("required by a
//!   bound in", "but trait ... is implemented for it") and changes between releases. They are
//!   compared only on the toolchain they were recorded with, [`RECORDED_WITH`], and skipped with
//!   a note on any other.
//!
//! After an intended change to a message, rerun with `TRYBUILD=overwrite` and review the diff.

/// The `rustc` minor version the `ui-rustc/*.stderr` files were recorded with.
const RECORDED_WITH: &str = "1.95";

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/pass/*.rs");
    let rustc = rustc_version();
    if rustc.starts_with(&format!("rustc {RECORDED_WITH}.")) {
        t.compile_fail("tests/ui-rustc/*.rs");
    } else {
        eprintln!(
            "note: skipping tests/ui-rustc: recorded with rustc {RECORDED_WITH}, this is {rustc}; \
             rerun them with TRYBUILD=overwrite on this toolchain and update RECORDED_WITH"
        );
    }
}

/// `rustc 1.95.0 (59807616e 2026-04-14)`: the compiler trybuild will run.
fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
