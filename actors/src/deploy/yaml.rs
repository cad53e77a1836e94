//! YAML read from a repository, with errors that never quote the document.
//!
//! serde's messages quote the value they failed on (`invalid type: string "…"`), and a file
//! read from a repository may hold anything, up to a secret it was tricked into reading. The
//! messages here keep what a person needs to fix the file (where, and what was expected) and
//! drop what the file holds.

use serde_json::Value;

/// Parses `text` (YAML or JSON) into a JSON value, with merge keys (`<<`) applied. `file`
/// names it in messages.
pub fn parse(file: &str, text: &str) -> Result<Value, String> {
    let mut yaml: serde_norway::Value = serde_norway::from_str(text)
        .map_err(|e| format!("{file} is not valid YAML: {}", describe(&e)))?;
    yaml.apply_merge()
        .map_err(|e| format!("{file}: a YAML merge key is invalid: {}", describe(&e)))?;
    serde_json::to_value(&yaml).map_err(|_| {
        format!("{file} cannot be read as a compose file: its mapping keys must be text")
    })
}

/// What went wrong, without the document's content: serde's description when it quotes
/// nothing, else only what was expected; and where.
pub fn describe(e: &serde_norway::Error) -> String {
    let text = e.to_string();
    // The location, when the error has one, is appended as " at line L column C".
    let message = text.split(" at line ").next().unwrap_or_default();
    let what = safe_message(message);
    match e.location() {
        Some(at) => format!("{what} (line {}, column {})", at.line(), at.column()),
        None => what,
    }
}

/// `message` when it quotes nothing of the document, else what was expected.
pub fn safe_message(message: &str) -> String {
    if !message.contains(['"', '`']) {
        return message.to_string();
    }
    if message.starts_with("missing field `") && message.matches('`').count() == 2 {
        // The field's name comes from Rustploy's types, not from the document.
        return message.to_string();
    }
    match message.rfind(", expected ") {
        Some(at) => format!("expected {}", &message[at + ", expected ".len()..]),
        None => "a value has the wrong type".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_the_expectation_and_drop_the_value() {
        for (message, want) in [
            (
                "invalid type: string \"s3cr3t\", expected u16",
                "expected u16",
            ),
            (
                "unknown variant `s3cr3t`, expected one of `compose`, `dockerfile`",
                "expected one of `compose`, `dockerfile`",
            ),
            (
                "invalid type: string \"a, expected b\", expected struct Manifest",
                "expected struct Manifest",
            ),
            (
                "duplicate entry with key \"s3cr3t\"",
                "a value has the wrong type",
            ),
            ("missing field `path`", "missing field `path`"),
            (
                "mapping values are not allowed in this context",
                "mapping values are not allowed in this context",
            ),
        ] {
            assert_eq!(safe_message(message), want, "{message}");
        }
    }

    #[test]
    fn parse_errors_name_the_place_not_the_content() {
        let e = parse("compose.yaml", "services:\n  web: [unclosed\n").unwrap_err();
        assert!(e.starts_with("compose.yaml is not valid YAML"), "{e}");
        assert!(e.contains("line"), "{e}");
        let e = parse("compose.yaml", "s3cr3t: 1\ns3cr3t: 2\n").unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
        assert_eq!(
            parse("c", "x: &a {b: 1}\ny:\n  <<: *a\n  c: 2\n").unwrap()["y"]["b"],
            1
        );
    }
}
