//! Extracts the ```rust blocks of README.md into `$OUT_DIR/readme_blocks.rs`, one module each.
//!
//! An HTML comment on the line before a block's fence (invisible on GitHub) says how to compile it:
//!
//! - none, or `<!-- readme: items -->`: the block is a list of items (a whole program);
//! - `<!-- readme: body CONTEXT -->`: the block is the body of an `async fn` returning
//!   `Result<(), Box<dyn Error>>`, in a module that imports `crate::context::CONTEXT::*`;
//! - `<!-- readme: id NAME -->` (with either): `src/checks/NAME.rs` is compiled into the
//!   block's module as its tests, with access to the block's private items.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let readme = Path::new(&dir).join("../../README.md");
    println!("cargo:rerun-if-changed={}", readme.display());
    println!("cargo:rerun-if-changed=src/checks");
    let text = std::fs::read_to_string(&readme).expect("README.md");
    let mut out = String::new();
    let mut lines = text.lines().enumerate().peekable();
    let mut previous = "";
    let mut n = 0;
    while let Some((i, line)) = lines.next() {
        let fence = line.trim_start();
        if let Some(info) = fence.strip_prefix("```") {
            let lang = info.split(',').next().unwrap_or("").trim();
            let mut body = String::new();
            for (_, l) in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            if lang == "rust" {
                n += 1;
                module(&mut out, n, i + 1, previous, &body, &dir);
            }
            previous = "";
            continue;
        }
        previous = line;
    }
    assert!(n > 0, "README.md has no rust blocks");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("readme_blocks.rs");
    std::fs::write(dest, out).unwrap();
}

fn module(out: &mut String, n: usize, line: usize, directive: &str, body: &str, dir: &str) {
    let directive = directive
        .trim()
        .strip_prefix("<!-- readme:")
        .and_then(|d| d.strip_suffix("-->"))
        .unwrap_or("items");
    let words: Vec<&str> = directive.split_whitespace().collect();
    let context = words
        .iter()
        .position(|w| *w == "body")
        .map(|i| words.get(i + 1).copied().expect("`body` needs a context"));
    let id = words.iter().position(|w| *w == "id").map(|i| words[i + 1]);
    writeln!(out, "/// README.md, the block at line {line}.").unwrap();
    writeln!(
        out,
        "#[allow(dead_code, unused_imports, unused_variables, unreachable_code, clippy::all)]"
    )
    .unwrap();
    writeln!(out, "mod block_{n} {{").unwrap();
    match context {
        Some(ctx) => {
            writeln!(out, "use crate::context::{ctx}::*;").unwrap();
            writeln!(
                out,
                "pub(crate) async fn block() -> Result<(), Box<dyn std::error::Error>> {{"
            )
            .unwrap();
            out.push_str(body);
            writeln!(out, "#[allow(unreachable_code)]\nOk(())\n}}").unwrap();
        }
        None => out.push_str(body),
    }
    if let Some(id) = id {
        let path = Path::new(dir).join("src/checks").join(format!("{id}.rs"));
        writeln!(
            out,
            "#[cfg(test)]\nmod checks {{\nuse super::*;\ninclude!({:?});\n}}",
            path.display().to_string()
        )
        .unwrap();
    }
    writeln!(out, "}}").unwrap();
}
