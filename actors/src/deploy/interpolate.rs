//! Compose's variable interpolation, done by Rustploy before the runtime file is written, so
//! compose itself never needs an environment to interpolate from (and so never gets the app's
//! variables, or the server's, in its own environment).
//!
//! The Compose Specification's syntax: `$$` (a literal `$`), `$VAR`, `${VAR}`,
//! `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`, `${VAR:+alt}`,
//! `${VAR+alt}`, where defaults and alternatives may hold `${...}` themselves. It applies to
//! every string value of the document, never to keys. Variables come from the caller (the
//! app's env vars over the `.env` file beside the compose file), never from the server.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// A document that cannot be interpolated. Messages name the field and the variable, never a
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    #[error("{path}: required variable {name} is missing a value{}", message_suffix(.message))]
    Required {
        path: String,
        name: String,
        message: String,
    },
    #[error("{path}: {why}; write '$$' for a literal '$'")]
    Invalid { path: String, why: String },
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// Interpolates every string value of `doc` in place with `vars`. Returns one warning per
/// variable that was used but is not set (it became ""), as compose warns.
pub fn document(
    doc: &mut Value,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<String>, InterpolateError> {
    let mut unset = BTreeSet::new();
    walk(doc, &mut String::new(), vars, &mut unset)?;
    Ok(unset
        .into_iter()
        .map(|name| format!("the variable {name} is not set: it became an empty string"))
        .collect())
}

fn walk(
    value: &mut Value,
    path: &mut String,
    vars: &BTreeMap<String, String>,
    unset: &mut BTreeSet<String>,
) -> Result<(), InterpolateError> {
    match value {
        Value::String(s) if s.contains('$') => {
            *s = string(s, vars, unset).map_err(|p| p.at(path))?;
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, vars, unset)?;
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                walk(item, path, vars, unset)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Escapes every `$` of every string value in `doc` as `$$`, so that compose, which
/// interpolates the file it reads, takes each value as it is.
pub fn escape(doc: &mut Value) {
    match doc {
        Value::String(s) if s.contains('$') => *s = s.replace('$', "$$"),
        Value::Array(items) => items.iter_mut().for_each(escape),
        Value::Object(map) => map.values_mut().for_each(escape),
        _ => {}
    }
}

/// A problem in one string, before the field's path is known.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    Required { name: String, message: String },
    Invalid(&'static str),
}

impl Problem {
    fn at(self, path: &str) -> InterpolateError {
        let path = if path.is_empty() { "." } else { path }.to_string();
        match self {
            Problem::Required { name, message } => InterpolateError::Required {
                path,
                name,
                message,
            },
            Problem::Invalid(why) => InterpolateError::Invalid {
                path,
                why: why.to_string(),
            },
        }
    }
}

/// Interpolates one string.
fn string(
    s: &str,
    vars: &BTreeMap<String, String>,
    unset: &mut BTreeSet<String>,
) -> Result<String, Problem> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if after.starts_with('{') {
            let (inner, used) = braced(after)?;
            out.push_str(&expand(inner, vars, unset)?);
            rest = &after[used..];
        } else {
            let len = name_len(after);
            if len == 0 {
                return Err(Problem::Invalid("a '$' is followed by no variable name"));
            }
            out.push_str(&lookup(&after[..len], vars, unset));
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The inside of `{...}` at the start of `s`, and how many bytes the braces take, counting
/// nested `${...}`.
fn braced(s: &str) -> Result<(&str, usize), Problem> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if i == 0 => depth = 1,
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Ok((&s[1..i], i + 1));
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(Problem::Invalid("a '${' is never closed with '}'"))
}

/// The length of the variable name at the start of `s`: a letter or `_`, then letters, digits
/// and `_`.
fn name_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    if !bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
    {
        return 0;
    }
    bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count()
}

fn lookup(name: &str, vars: &BTreeMap<String, String>, unset: &mut BTreeSet<String>) -> String {
    match vars.get(name) {
        Some(v) => v.clone(),
        None => {
            unset.insert(name.to_string());
            String::new()
        }
    }
}

/// Expands the inside of `${...}`: a name, then nothing or one modifier with its argument.
fn expand(
    inner: &str,
    vars: &BTreeMap<String, String>,
    unset: &mut BTreeSet<String>,
) -> Result<String, Problem> {
    let len = name_len(inner);
    if len == 0 {
        return Err(Problem::Invalid("'${' is followed by no variable name"));
    }
    let (name, modifier) = inner.split_at(len);
    if modifier.is_empty() {
        return Ok(lookup(name, vars, unset));
    }
    let value = vars.get(name).map(String::as_str);
    let ops: [(&str, bool); 6] = [
        (":-", true),
        (":?", true),
        (":+", true),
        ("-", false),
        ("?", false),
        ("+", false),
    ];
    let Some((op, arg, empty_is_unset)) = ops
        .iter()
        .find_map(|(op, colon)| modifier.strip_prefix(op).map(|arg| (*op, arg, *colon)))
    else {
        return Err(Problem::Invalid(
            "'${NAME' must be followed by '}', ':-', '-', ':?', '?', ':+' or '+'",
        ));
    };
    let set = match value {
        Some(v) => !(empty_is_unset && v.is_empty()),
        None => false,
    };
    match op.trim_start_matches(':') {
        "-" if set => Ok(value.unwrap_or_default().to_string()),
        "-" => string(arg, vars, unset),
        "?" if set => Ok(value.unwrap_or_default().to_string()),
        "?" => Err(Problem::Required {
            name: name.to_string(),
            message: string(arg, vars, unset)?,
        }),
        "+" if set => string(arg, vars, unset),
        "+" => Ok(String::new()),
        _ => unreachable!("the operators are listed above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("NAME".into(), "shop".into()),
            ("EMPTY".into(), String::new()),
            ("PORT".into(), "8080".into()),
            ("DOLLAR".into(), "a$b".into()),
        ])
    }

    fn one(s: &str) -> Result<(String, Vec<String>), Problem> {
        let mut unset = BTreeSet::new();
        let out = string(s, &vars(), &mut unset)?;
        Ok((out, unset.into_iter().collect()))
    }

    #[test]
    fn the_compose_syntax_is_interpolated() {
        for (input, want, unset) in [
            ("plain", "plain", &[][..]),
            ("$$", "$", &[]),
            ("$$NAME", "$NAME", &[]),
            ("cost: $$5", "cost: $5", &[]),
            ("$NAME", "shop", &[]),
            ("$NAME-x", "shop-x", &[]),
            ("${NAME}", "shop", &[]),
            ("a${NAME}b$PORT", "ashopb8080", &[]),
            ("${MISSING}", "", &["MISSING"]),
            ("$MISSING/x", "/x", &["MISSING"]),
            ("${MISSING:-dflt}", "dflt", &[]),
            ("${MISSING-dflt}", "dflt", &[]),
            ("${EMPTY:-dflt}", "dflt", &[]),
            ("${EMPTY-dflt}", "", &[]),
            ("${NAME:-dflt}", "shop", &[]),
            ("${NAME:+alt}", "alt", &[]),
            ("${EMPTY:+alt}", "", &[]),
            ("${EMPTY+alt}", "alt", &[]),
            ("${MISSING+alt}", "", &[]),
            ("${MISSING:-${NAME}}", "shop", &[]),
            ("${MISSING:-${OTHER:-deep}-x}", "deep-x", &[]),
            ("${MISSING:-${OTHER}}", "", &["OTHER"]),
            ("${MISSING:-a $$ b}", "a $ b", &[]),
            ("${MISSING:-}", "", &[]),
            ("${NAME:?needed}", "shop", &[]),
            ("${DOLLAR}", "a$b", &[]),
            ("${MISSING:-a}}", "a}", &[]),
        ] {
            let (out, seen) = one(input).unwrap_or_else(|e| panic!("{input}: {e:?}"));
            assert_eq!(out, want, "{input}");
            assert_eq!(seen, unset, "{input}");
        }
    }

    #[test]
    fn required_and_invalid_templates_are_errors() {
        assert_eq!(
            one("${MISSING:?set MISSING to the shop's name}"),
            Err(Problem::Required {
                name: "MISSING".into(),
                message: "set MISSING to the shop's name".into()
            })
        );
        assert!(matches!(one("${EMPTY:?}"), Err(Problem::Required { .. })));
        assert_eq!(one("${EMPTY?}").unwrap().0, "");
        assert!(matches!(one("${MISSING?}"), Err(Problem::Required { .. })));
        for bad in [
            "$",
            "a $ b",
            "$1",
            "${",
            "${NAME",
            "${}",
            "${1A}",
            "${NAME:x}",
            "${NAME x}",
        ] {
            assert!(
                matches!(one(bad), Err(Problem::Invalid(_))),
                "{bad}: {:?}",
                one(bad)
            );
        }
    }

    #[test]
    fn every_string_value_is_interpolated_and_keys_are_not() {
        let mut doc = json!({
            "services": {
                "$NAME": {
                    "image": "busybox:${TAG:-1}",
                    "command": ["echo", "$NAME", "$$HOME"],
                    "environment": { "PORT": "${PORT}", "N": 3, "B": true, "X": null },
                }
            }
        });
        let warnings = document(&mut doc, &vars()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            doc,
            json!({
                "services": {
                    "$NAME": {
                        "image": "busybox:1",
                        "command": ["echo", "shop", "$HOME"],
                        "environment": { "PORT": "8080", "N": 3, "B": true, "X": null },
                    }
                }
            })
        );
        let mut doc = json!({ "services": { "web": { "image": "${GONE}" } } });
        let warnings = document(&mut doc, &vars()).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("GONE"), "{warnings:?}");
    }

    #[test]
    fn errors_name_the_field_and_the_variable_never_the_value() {
        let mut doc = json!({ "services": { "web": { "command": ["x", "${DB:?s3cr3t hint}"] } } });
        let e = document(&mut doc, &vars()).unwrap_err();
        assert_eq!(
            e,
            InterpolateError::Required {
                path: "services.web.command[1]".into(),
                name: "DB".into(),
                message: "s3cr3t hint".into()
            }
        );
        let mut doc = json!({ "services": { "web": { "image": "s3cr3t $5" } } });
        let e = document(&mut doc, &vars()).unwrap_err().to_string();
        assert!(e.starts_with("services.web.image: "), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn escaping_doubles_every_dollar_of_values_only() {
        let mut doc = json!({ "a": "x$y$$z", "$k": ["$", 1], "n": null });
        escape(&mut doc);
        assert_eq!(doc, json!({ "a": "x$$y$$$$z", "$k": ["$$", 1], "n": null }));
        // What compose reads back from an escaped value is the value itself.
        let mut back = doc.clone();
        document(&mut back, &BTreeMap::new()).unwrap();
        assert_eq!(back, json!({ "a": "x$y$$z", "$k": ["$", 1], "n": null }));
    }
}
