//! Name conversions: `rename_all` rules, variant names, collection names, JS identifiers.

/// A `#[model(rename_all = "...")]` rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RenameRule {
    /// `camelCase`
    Camel,
    /// `snake_case`
    Snake,
    /// `PascalCase`
    Pascal,
    /// `SCREAMING_SNAKE_CASE`
    ScreamingSnake,
    /// `lowercase`
    Lower,
    /// `UPPERCASE`
    Upper,
}

impl RenameRule {
    /// Every rule with its spelling in the attribute.
    pub(crate) const ALL: &'static [(&'static str, RenameRule)] = &[
        ("camelCase", RenameRule::Camel),
        ("snake_case", RenameRule::Snake),
        ("PascalCase", RenameRule::Pascal),
        ("SCREAMING_SNAKE_CASE", RenameRule::ScreamingSnake),
        ("lowercase", RenameRule::Lower),
        ("UPPERCASE", RenameRule::Upper),
    ];

    /// Parses the attribute's value.
    pub(crate) fn from_str(s: &str) -> Option<RenameRule> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, rule)| *rule)
    }

    /// The accepted spellings, for error messages: "`camelCase`, `snake_case`, ...".
    pub(crate) fn expected() -> String {
        Self::ALL
            .iter()
            .map(|(name, _)| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Applies the rule to a snake_case field name.
    pub(crate) fn apply(self, field: &str) -> String {
        match self {
            RenameRule::Snake => field.to_owned(),
            RenameRule::Lower => field.to_ascii_lowercase(),
            RenameRule::Upper => field.to_ascii_uppercase(),
            RenameRule::ScreamingSnake => field.to_ascii_uppercase(),
            RenameRule::Pascal => upper_camel(field),
            RenameRule::Camel => lower_first(&upper_camel(field)),
        }
    }
}

/// `player_name` -> `PlayerName`, `x` -> `X`.
pub(crate) fn upper_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper_next = true;
    for c in snake.chars() {
        if c == '_' {
            upper_next = true;
        } else if upper_next {
            out.extend(c.to_uppercase());
            upper_next = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A collection's default wire name: `Players` -> `players`, `ChatMessages` -> `chatMessages`,
/// `HTTPLogs` -> `httpLogs`.
pub(crate) fn lower_camel(type_name: &str) -> String {
    let chars: Vec<char> = type_name.chars().collect();
    let mut out = String::with_capacity(type_name.len());
    let mut i = 0;
    // Lowercase the leading run of capitals, except the last one when it starts a new word.
    while i < chars.len() && chars[i].is_uppercase() {
        let starts_word = i > 0 && chars.get(i + 1).is_some_and(|c| c.is_lowercase());
        if starts_word {
            break;
        }
        out.extend(chars[i].to_lowercase());
        i += 1;
    }
    out.extend(&chars[i..]);
    out
}

/// Whether `s` is a JavaScript identifier (ASCII subset: letters, digits, `_`, `$`).
pub(crate) fn is_js_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(RenameRule::Camel.apply("player_name"), "playerName");
        assert_eq!(RenameRule::Camel.apply("x"), "x");
        assert_eq!(RenameRule::Pascal.apply("player_name"), "PlayerName");
        assert_eq!(
            RenameRule::ScreamingSnake.apply("player_name"),
            "PLAYER_NAME"
        );
        assert_eq!(RenameRule::Snake.apply("player_name"), "player_name");
    }

    #[test]
    fn collection_names() {
        assert_eq!(lower_camel("Players"), "players");
        assert_eq!(lower_camel("ChatMessages"), "chatMessages");
        assert_eq!(lower_camel("HTTPLogs"), "httpLogs");
        assert_eq!(lower_camel("ABC"), "abc");
    }

    #[test]
    fn js_identifiers() {
        assert!(is_js_identifier("players"));
        assert!(is_js_identifier("$x_1"));
        assert!(!is_js_identifier("1x"));
        assert!(!is_js_identifier("my-name"));
        assert!(!is_js_identifier(""));
    }
}
