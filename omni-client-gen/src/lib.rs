//! Generates the Omni JavaScript client and its TypeScript typings from a [`schema::Schema`].
//!
//! [`generate`] returns three files:
//!
//! - `omni.js`: an ES module (`export default Omni`, plus named exports `Omni`, `collections`,
//!   `create`, `OmniError`, `PROTOCOL_VERSION`);
//! - `omni.global.js`: a classic script that sets `window.Omni` (and `window.Collections`, the
//!   Omni.js alias) and connects to `ws(s)://<host>/omni` on load unless
//!   `window.OMNI_MANUAL_CONNECT` is set;
//! - `omni.d.ts`: typings of the models, collections and events.
//!
//! The runtime itself is the hand-written `js/client.js`; the generated files embed the schema
//! facts it needs (collection names, attribute names, read-only flags, protocol version).
//! With [`Options::development`] off, the JavaScript is minified (the `minifier` crate, a
//! token-level comment and whitespace stripper). Compression is left to the server (the runtime
//! serves the minified client gzip-compressed).
#![warn(missing_docs)]

pub mod schema;
pub mod writer;

use schema::{ModelSchema, Schema};
use serde_json::json;
use writer::CodeWriter;

/// The hand-written client runtime (`function createOmni(SCHEMA, env)`).
pub const RUNTIME_JS: &str = concat!(
    include_str!("../js/queries.js"),
    include_str!("../js/client.js")
);
const PRELUDE_DTS: &str = include_str!("../js/prelude.d.ts");
const EPILOGUE_DTS: &str = include_str!("../js/epilogue.d.ts");

/// Name of the ES module file.
pub const ESM_FILE: &str = "omni.js";
/// Name of the classic-script file.
pub const GLOBAL_FILE: &str = "omni.global.js";
/// Name of the typings file.
pub const DTS_FILE: &str = "omni.d.ts";

/// How to generate the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Readable output (as written, with comments); otherwise minified.
    pub development: bool,
}

/// One generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// File name, e.g. `omni.js`.
    pub name: String,
    /// File contents.
    pub contents: String,
}

/// Generates `omni.js`, `omni.global.js` and `omni.d.ts` for `schema`.
pub fn generate(schema: &Schema, options: &Options) -> Vec<OutputFile> {
    let js = |text: String| {
        if options.development {
            text
        } else {
            minify(&text)
        }
    };
    vec![
        OutputFile {
            name: ESM_FILE.to_owned(),
            contents: js(esm(schema)),
        },
        OutputFile {
            name: GLOBAL_FILE.to_owned(),
            contents: js(global_script(schema)),
        },
        OutputFile {
            name: DTS_FILE.to_owned(),
            contents: typings(schema),
        },
    ]
}

/// Generates the client files for `schema` and writes them into `dir` (created if missing);
/// returns the paths written. Only files whose contents changed are rewritten, so a build
/// script calling it does not trigger needless rebuilds of what watches them.
///
/// This is the build-time helper: a front-end crate's `build.rs` can depend on the app's
/// library as a build-dependency and write the client next to its sources:
///
/// ```ignore
/// // build.rs of a crate with `[build-dependencies] my-app = { path = "../my-app" }`
/// fn main() {
///     let schema = my_app::app().schema().clone();
///     omni_client_gen::write_files(&schema, "web/omni", &omni_client_gen::Options::default())
///         .expect("write the Omni client");
/// }
/// ```
pub fn write_files(
    schema: &Schema,
    dir: impl AsRef<std::path::Path>,
    options: &Options,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for file in generate(schema, options) {
        let path = dir.join(&file.name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(file.contents.as_str()) {
            std::fs::write(&path, &file.contents)?;
        }
        written.push(path);
    }
    Ok(written)
}

/// Minifies JavaScript (comments and whitespace). Falls back to the input if it cannot be
/// tokenized, so a minifier failure never breaks the client.
pub fn minify(js: &str) -> String {
    match minifier::js::minify(js) {
        Ok(min) => {
            let mut out = min.to_string();
            out.push('\n');
            out
        }
        Err(_) => js.to_owned(),
    }
}

/// The schema facts the runtime needs, as a JavaScript object literal (JSON).
fn client_schema(schema: &Schema, w: &mut CodeWriter) {
    let model =
        |name: &str| -> Option<&ModelSchema> { schema.models.iter().find(|m| m.name == name) };
    w.line("const SCHEMA = {");
    w.indented(|w| {
        w.line(format!("v: {},", schema.protocol));
        w.line("collections: [");
        w.indented(|w| {
            for c in &schema.collections {
                let fields = model(&c.model).map(|m| m.fields.as_slice()).unwrap_or_default();
                let attrs: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
                let readonly: Vec<&str> = fields.iter().filter(|f| f.readonly).map(|f| f.name.as_str()).collect();
                let entry = json!({ "name": c.name, "model": c.model, "attrs": attrs, "readonly": readonly });
                w.line(format!("{entry},"));
            }
        });
        w.line("],");
        let events: Vec<&str> = schema.events.iter().map(|e| e.name.as_str()).collect();
        w.line(format!("events: {}", json!(events)));
    });
    w.line("};");
}

fn header(w: &mut CodeWriter, what: &str) {
    w.line(format!(
        "/* {what}: generated by omni-client-gen from the app's schema. Do not edit. */"
    ));
}

/// `omni.js`, the ES module.
fn esm(schema: &Schema) -> String {
    let mut w = CodeWriter::new("  ");
    header(&mut w, "omni.js (ES module)");
    client_schema(schema, &mut w);
    w.lines(RUNTIME_JS);
    w.line("const Omni = createOmni(SCHEMA);");
    w.line("export default Omni;");
    w.line("export { Omni };");
    w.line("export const collections = Omni.collections;");
    w.line("export const OmniError = Omni.OmniError;");
    w.line("export const PROTOCOL_VERSION = SCHEMA.v;");
    w.line("export function create(options) { return Omni.create(options); }");
    w.finish()
}

/// `omni.global.js`, the classic script.
fn global_script(schema: &Schema) -> String {
    let mut w = CodeWriter::new("  ");
    header(&mut w, "omni.global.js (classic script: sets window.Omni)");
    w.block(
        "(function (root) {",
        "})(typeof globalThis !== \"undefined\" ? globalThis : this);",
        |w| {
            w.line("\"use strict\";");
            client_schema(schema, w);
            w.lines(RUNTIME_JS);
            w.line("const Omni = createOmni(SCHEMA);");
            w.line("root.Omni = Omni;");
            w.line("root.Collections = Omni.collections;");
            w.block(
                "if (!root.OMNI_MANUAL_CONNECT && root.location && root.location.host) {",
                "}",
                |w| {
                    w.line("Omni.connect();");
                },
            );
        },
    );
    w.finish()
}

fn export_decl(decl: &str) -> String {
    let decl = decl.trim();
    if decl.starts_with("export ") {
        decl.to_owned()
    } else {
        format!("export {decl}")
    }
}

/// `omni.d.ts`: the fixed part (the generic model and collection types) and the app's types.
pub fn typings(schema: &Schema) -> String {
    let mut w = CodeWriter::new("  ");
    header(&mut w, "omni.d.ts");
    w.line("");
    w.lines(PRELUDE_DTS);
    w.line("");
    w.line("/** The wire protocol version this client speaks. */");
    w.line(format!(
        "export declare const PROTOCOL_VERSION: {};",
        schema.protocol
    ));
    for t in &schema.types {
        w.line("");
        w.lines(&export_decl(&t.decl));
    }
    for m in &schema.models {
        w.line("");
        w.doc(m.docs.as_deref());
        w.block(format!("export interface {} {{", m.name), "}", |w| {
            w.line("/** The server-assigned object id. */");
            w.line("readonly oid: number;");
            for f in &m.fields {
                w.doc(f.docs.as_deref());
                let ro = if f.readonly { "readonly " } else { "" };
                w.line(format!("{ro}{}: {};", property_name(&f.name), f.ts_type));
            }
        });
        w.line(format!("/** A live `{0}` model of the client. */", m.name));
        w.line(format!("export type {0}Model = Model<{0}>;", m.name));
    }
    w.line("");
    w.block("export interface Collections {", "}", |w| {
        for c in &schema.collections {
            w.doc(c.docs.as_deref());
            w.line(format!(
                "{}: Collection<{}>;",
                property_name(&c.name),
                c.model
            ));
        }
    });
    w.line("");
    w.line("/** The events `Omni.trigger` can call: their argument and reply types. */");
    w.block("export interface Events {", "}", |w| {
        for e in &schema.events {
            w.line(format!(
                "{}: {{ args: {}; reply: {} }};",
                property_name(&e.name),
                e.args_ts,
                e.reply_ts
            ));
        }
    });
    w.line("");
    w.lines(EPILOGUE_DTS);
    w.finish()
}

/// A TypeScript property name: bare when it is an identifier, quoted otherwise.
fn property_name(name: &str) -> String {
    let mut chars = name.chars();
    let ident = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if ident {
        name.to_owned()
    } else {
        serde_json::Value::String(name.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests;
