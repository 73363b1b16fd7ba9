//! An indenting writer for generated code.

use std::fmt::Write as _;

/// Accumulates lines of generated code at the current indentation level.
#[derive(Debug, Default)]
pub struct CodeWriter {
    out: String,
    level: usize,
    unit: &'static str,
}

impl CodeWriter {
    /// A writer indenting with `unit` per level (e.g. two spaces).
    pub fn new(unit: &'static str) -> Self {
        CodeWriter {
            out: String::new(),
            level: 0,
            unit,
        }
    }

    /// Writes one line at the current indentation (an empty `text` writes an empty line).
    pub fn line(&mut self, text: impl AsRef<str>) -> &mut Self {
        let text = text.as_ref();
        if !text.is_empty() {
            for _ in 0..self.level {
                self.out.push_str(self.unit);
            }
            self.out.push_str(text);
        }
        self.out.push('\n');
        self
    }

    /// Writes each line of `text` at the current indentation.
    pub fn lines(&mut self, text: &str) -> &mut Self {
        for l in text.lines() {
            self.line(l);
        }
        self
    }

    /// Writes `open`, the body one level deeper, then `close`.
    pub fn block(
        &mut self,
        open: impl AsRef<str>,
        close: impl AsRef<str>,
        body: impl FnOnce(&mut Self),
    ) -> &mut Self {
        self.line(open);
        self.indented(body);
        self.line(close)
    }

    /// Runs `body` one level deeper.
    pub fn indented(&mut self, body: impl FnOnce(&mut Self)) -> &mut Self {
        self.level += 1;
        body(self);
        self.level -= 1;
        self
    }

    /// Writes a JSDoc comment from doc text (nothing for `None` or blank text).
    pub fn doc(&mut self, docs: Option<&str>) -> &mut Self {
        let Some(docs) = docs.map(str::trim).filter(|d| !d.is_empty()) else {
            return self;
        };
        let docs = docs.replace("*/", "*\\/");
        let lines: Vec<&str> = docs.lines().map(str::trim_end).collect();
        if lines.len() == 1 {
            let mut s = String::new();
            let _ = write!(s, "/** {} */", lines[0].trim());
            self.line(s);
        } else {
            self.line("/**");
            for l in lines {
                let l = l.strip_prefix(' ').unwrap_or(l);
                if l.is_empty() {
                    self.line(" *");
                } else {
                    self.line(format!(" * {l}"));
                }
            }
            self.line(" */");
        }
        self
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indents_blocks_and_docs() {
        let mut w = CodeWriter::new("  ");
        w.block("a {", "}", |w| {
            w.doc(Some("one\n\ntwo */ three"));
            w.line("b;").line("");
        });
        assert_eq!(
            w.finish(),
            "a {\n  /**\n   * one\n   *\n   * two *\\/ three\n   */\n  b;\n\n}\n"
        );
    }
}
