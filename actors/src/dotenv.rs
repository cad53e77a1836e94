//! `.env` files: `KEY=VALUE` lines with quoting, and nothing else.
//!
//! A `.env` file comes from a person's upload or from a repository, so it is hostile input: the
//! parser never expands `${VAR}` or `$VAR` (that would hand the server's own environment to
//! whoever can read the app's variables), never runs anything, and keeps every `$` as written.
//! What it accepts is what real `.env` files hold:
//!
//! - blank lines and `#` comment lines;
//! - an optional `export ` before the key;
//! - spaces around the `=`;
//! - unquoted values: up to the end of the line, trailing spaces trimmed, and a `#` after a
//!   space or tab starts a comment (`URL=a#b` keeps `a#b`);
//! - single-quoted values: taken literally, up to the next `'` (may span lines);
//! - double-quoted values: `\n`, `\r`, `\t`, `\"`, `\\` and `\$` are escapes, any other
//!   backslash is kept as written, and a value may span lines;
//! - after a closing quote only spaces and a comment may follow.
//!
//! A key given twice takes the later value, at the place it first appeared. Errors name the
//! line and what is wrong but never repeat the line's text, since it may be a secret.

use thiserror::Error;

/// Why a `.env` file was refused. `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DotenvError {
    #[error("line {line}: expected KEY=VALUE")]
    MissingEquals { line: usize },
    #[error(
        "line {line}: the variable name must start with a letter or '_' and hold only letters, \
         digits and '_'"
    )]
    InvalidKey { line: usize },
    #[error("line {line}: the {quote} quote opened here is never closed")]
    UnclosedQuote { line: usize, quote: Quote },
    #[error("line {line}: only a comment may follow the closing {quote} quote")]
    TextAfterQuote { line: usize, quote: Quote },
    #[error("line {line}: the value holds a NUL character, which no environment variable can")]
    NulInValue { line: usize },
}

impl DotenvError {
    /// The line the error is about.
    pub fn line(&self) -> usize {
        match self {
            DotenvError::MissingEquals { line }
            | DotenvError::InvalidKey { line }
            | DotenvError::UnclosedQuote { line, .. }
            | DotenvError::TextAfterQuote { line, .. }
            | DotenvError::NulInValue { line } => *line,
        }
    }
}

/// The kind of quote around a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quote {
    Single,
    Double,
}

impl std::fmt::Display for Quote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Quote::Single => "single",
            Quote::Double => "double",
        })
    }
}

/// Parses a `.env` file into `(key, value)` pairs in file order, values exactly as written
/// (after quoting and escapes), with no variable substitution.
pub fn parse(input: &str) -> Result<Vec<(String, String)>, DotenvError> {
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    let mut cursor = Cursor {
        rest: input,
        line: 1,
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    while !cursor.rest.is_empty() {
        let line = cursor.line;
        cursor.skip_blanks();
        if cursor.rest.starts_with('#') || cursor.at_line_end() {
            cursor.skip_line();
            continue;
        }
        if let Some(after) = cursor.rest.strip_prefix("export")
            && after.starts_with([' ', '\t'])
        {
            cursor.rest = after;
            cursor.skip_blanks();
        }
        let key = cursor.take_while(|c| !matches!(c, '=' | ' ' | '\t' | '\n' | '\r'));
        cursor.skip_blanks();
        if !cursor.rest.starts_with('=') {
            return Err(DotenvError::MissingEquals { line });
        }
        if !valid_key(key) {
            return Err(DotenvError::InvalidKey { line });
        }
        cursor.rest = &cursor.rest[1..];
        cursor.skip_blanks();
        let value = cursor.value(line)?;
        if value.contains('\0') {
            return Err(DotenvError::NulInValue { line });
        }
        match pairs.iter_mut().find(|(k, _)| k == key) {
            Some(existing) => existing.1 = value,
            None => pairs.push((key.to_string(), value)),
        }
    }
    Ok(pairs)
}

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The unread rest of the input and the line it starts on.
struct Cursor<'a> {
    rest: &'a str,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let end = self.rest.find(|c| !keep(c)).unwrap_or(self.rest.len());
        let (taken, rest) = self.rest.split_at(end);
        self.rest = rest;
        self.line += taken.matches('\n').count();
        taken
    }

    fn skip_blanks(&mut self) {
        self.take_while(|c| c == ' ' || c == '\t');
    }

    fn at_line_end(&self) -> bool {
        self.rest.is_empty() || self.rest.starts_with('\n') || self.rest.starts_with("\r\n")
    }

    /// Skips to the start of the next line.
    fn skip_line(&mut self) {
        self.take_while(|c| c != '\n');
        if !self.rest.is_empty() {
            self.rest = &self.rest[1..];
            self.line += 1;
        }
    }

    /// Reads the value that starts here, then the rest of its (last) line.
    fn value(&mut self, line: usize) -> Result<String, DotenvError> {
        let value = if let Some(rest) = self.rest.strip_prefix('\'') {
            self.rest = rest;
            let Some(end) = self.rest.find('\'') else {
                return Err(DotenvError::UnclosedQuote {
                    line,
                    quote: Quote::Single,
                });
            };
            let value = self.take_while_len(end).to_string();
            self.rest = &self.rest[1..];
            self.after_quote(Quote::Single)?;
            value
        } else if let Some(rest) = self.rest.strip_prefix('"') {
            self.rest = rest;
            let value = self.double_quoted(line)?;
            self.after_quote(Quote::Double)?;
            value
        } else {
            let raw = self.take_while(|c| c != '\n');
            self.skip_line();
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            let end = raw
                .char_indices()
                .find(|&(i, c)| c == '#' && i > 0 && raw[..i].ends_with([' ', '\t']))
                .map_or(raw.len(), |(i, _)| i);
            raw[..end].trim_end_matches([' ', '\t']).to_string()
        };
        Ok(value)
    }

    fn take_while_len(&mut self, len: usize) -> &'a str {
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        self.line += taken.matches('\n').count();
        taken
    }

    fn double_quoted(&mut self, line: usize) -> Result<String, DotenvError> {
        let mut value = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.take_while_len(i);
                    self.rest = &self.rest[1..];
                    return Ok(value);
                }
                '\\' => match chars.next().map(|(_, e)| e) {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some('t') => value.push('\t'),
                    Some(e @ ('"' | '\\' | '$')) => value.push(e),
                    Some(e) => {
                        value.push('\\');
                        value.push(e);
                    }
                    None => break,
                },
                c => value.push(c),
            }
        }
        Err(DotenvError::UnclosedQuote {
            line,
            quote: Quote::Double,
        })
    }

    /// After a closing quote: blanks, then a comment or the end of the line.
    fn after_quote(&mut self, quote: Quote) -> Result<(), DotenvError> {
        let line = self.line;
        self.skip_blanks();
        if self.at_line_end() || self.rest.starts_with('#') {
            self.skip_line();
            return Ok(());
        }
        Err(DotenvError::TextAfterQuote { line, quote })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(input: &str) -> Vec<(String, String)> {
        parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    fn one(input: &str) -> String {
        let p = pairs(input);
        assert_eq!(p.len(), 1, "{input:?}: {p:?}");
        p[0].1.clone()
    }

    #[test]
    fn values_are_read_as_written() {
        let cases: &[(&str, &str)] = &[
            ("A=plain", "plain"),
            ("A=plain   ", "plain"),
            ("A=  spaced value  ", "spaced value"),
            ("A=", ""),
            ("A=a#b", "a#b"),
            ("A=#notacomment", "#notacomment"),
            ("A=value # a comment", "value"),
            ("A=value\t# a comment", "value"),
            ("A=${HOME}", "${HOME}"),
            ("A=$HOME", "$HOME"),
            ("A=pa$$word", "pa$$word"),
            ("A='${RUSTPLOY_SECRET_KEY}'", "${RUSTPLOY_SECRET_KEY}"),
            ("A=\"${RUSTPLOY_SMTP_URL}\"", "${RUSTPLOY_SMTP_URL}"),
            ("A='single \\n literal'", "single \\n literal"),
            (
                "A=\"dq \\\"x\\\" \\\\ \\n \\t \\$HOME\"",
                "dq \"x\" \\ \n \t $HOME",
            ),
            ("A=\"C:\\dir\\sub\"", "C:\\dir\\sub"),
            ("A=\"with # hash\"", "with # hash"),
            ("A='with # hash' # comment", "with # hash"),
            ("A=\"x\"   ", "x"),
            ("A=unquoted \"inner\" quotes", "unquoted \"inner\" quotes"),
            ("A=crlf\r\n", "crlf"),
            ("A=\"crlf\"\r\n", "crlf"),
            ("A = spaced", "spaced"),
            ("export A=exported", "exported"),
            ("  export\tA=exported", "exported"),
            ("A=é ünïcode", "é ünïcode"),
            ("\u{feff}A=bom", "bom"),
        ];
        for (input, want) in cases {
            assert_eq!(one(input), *want, "{input:?}");
        }
    }

    #[test]
    fn a_file_keeps_its_order_comments_and_multi_line_values() {
        let file = "# settings\n\nexport DB_PASSWORD=\"p a s s\"\nPORT=8080 # http\n\
                    KEY=\"-----BEGIN-----\nabc\n-----END-----\"\nexport=1\nNEXT='a\nb'\nLAST=z";
        assert_eq!(
            pairs(file),
            vec![
                ("DB_PASSWORD".into(), "p a s s".into()),
                ("PORT".into(), "8080".into()),
                ("KEY".into(), "-----BEGIN-----\nabc\n-----END-----".into()),
                ("export".into(), "1".into()),
                ("NEXT".into(), "a\nb".into()),
                ("LAST".into(), "z".into()),
            ]
        );
        assert_eq!(pairs(""), vec![]);
        assert_eq!(pairs("\n# only a comment\n   \n"), vec![]);
    }

    #[test]
    fn a_repeated_key_takes_the_later_value() {
        assert_eq!(
            pairs("A=1\nB=2\nA=3"),
            vec![("A".into(), "3".into()), ("B".into(), "2".into())]
        );
    }

    #[test]
    fn errors_name_the_line_and_never_the_value() {
        let cases: &[(&str, DotenvError)] = &[
            ("A=1\nsecret-text", DotenvError::MissingEquals { line: 2 }),
            (
                "A=1\n\nsecret text=1",
                DotenvError::MissingEquals { line: 3 },
            ),
            ("1A=x", DotenvError::InvalidKey { line: 1 }),
            ("A-B=x", DotenvError::InvalidKey { line: 1 }),
            ("=x", DotenvError::InvalidKey { line: 1 }),
            ("export =x", DotenvError::InvalidKey { line: 1 }),
            (
                "A=\"secret\nB=2",
                DotenvError::UnclosedQuote {
                    line: 1,
                    quote: Quote::Double,
                },
            ),
            (
                "X=1\nA='secret",
                DotenvError::UnclosedQuote {
                    line: 2,
                    quote: Quote::Single,
                },
            ),
            (
                "A=\"ends with a backslash\\",
                DotenvError::UnclosedQuote {
                    line: 1,
                    quote: Quote::Double,
                },
            ),
            (
                "A=\"a\nb\"secret",
                DotenvError::TextAfterQuote {
                    line: 2,
                    quote: Quote::Double,
                },
            ),
            (
                "A='x' secret",
                DotenvError::TextAfterQuote {
                    line: 1,
                    quote: Quote::Single,
                },
            ),
            (
                "A='it''",
                DotenvError::TextAfterQuote {
                    line: 1,
                    quote: Quote::Single,
                },
            ),
            ("A=a\0b", DotenvError::NulInValue { line: 1 }),
        ];
        for (input, want) in cases {
            let got = parse(input).expect_err(input);
            assert_eq!(&got, want, "{input:?}");
            assert_eq!(got.line(), want.line());
            assert!(!got.to_string().contains("secret"), "{got}");
        }
    }

    #[test]
    fn line_numbers_count_lines_inside_quoted_values() {
        let err = parse("A=\"1\n2\n3\"\nB='4\n5'\nbroken").unwrap_err();
        assert_eq!(err, DotenvError::MissingEquals { line: 6 });
    }
}
