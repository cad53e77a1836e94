//! Validated values, parsed once at the edge; code inside takes the newtype.

use std::fmt;

use rustploy_actors::ledger::Millis;

/// An app's name: a DNS label (it names the compose project and the default subdomain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppName(String);

impl AppName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_len = (1..=63).contains(&s.len());
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let ok_ends = !s.starts_with('-') && !s.ends_with('-');
        if !(ok_len && ok_chars && ok_ends) {
            return Err(format!(
                "'{s}' is not a valid app name: use 1 to 63 lowercase letters, digits and hyphens, \
                 not starting or ending with a hyphen"
            ));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "'{s}' is not a valid app name: it must contain a letter (numbers are app ids)"
            ));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A hostname Caddy serves: IDNA-converted to ASCII, lowercase, without a trailing dot; at most
/// 253 characters in labels of 1 to 63 letters, digits and hyphens; at least two labels; the
/// leftmost label may be `*` (a wildcard); never an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainName(String);

impl DomainName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let input = s.trim().trim_end_matches('.');
        let bad = |why: &str| Err(format!("'{s}' is not a valid domain: {why}"));
        if input.is_empty() {
            return bad("it is empty");
        }
        if input.parse::<std::net::IpAddr>().is_ok() || input.starts_with('[') {
            return bad("it is an IP address; routes need a hostname");
        }
        let (wildcard, rest) = match input.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, input),
        };
        if rest.contains('*') {
            return bad("'*' may only stand alone as the leftmost label, as in *.example.com");
        }
        if input.contains(['/', ':', '@', ' ', '?', '#']) {
            return bad("give only the hostname, without scheme, port or path");
        }
        let ascii = match idna::domain_to_ascii_strict(rest) {
            Ok(a) => a,
            Err(_) => {
                return bad(
                    "it is not a valid internationalised hostname (labels of letters, digits \
                     and hyphens, not starting or ending with a hyphen)",
                );
            }
        };
        let labels: Vec<&str> = ascii.split('.').collect();
        if labels.len() < 2 {
            return bad("it needs at least two labels, as in app.example.com");
        }
        for label in &labels {
            let ok = (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return bad(
                    "each label must have 1 to 63 letters, digits and hyphens, not starting or \
                     ending with a hyphen",
                );
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return bad("its last label must not be all digits");
        }
        let full = if wildcard {
            format!("*.{ascii}")
        } else {
            ascii
        };
        if full.len() > 253 {
            return bad("it is longer than 253 characters");
        }
        Ok(Self(full.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A branch, tag or commit to deploy. Refused: anything git could read as an option, and the
/// forms `git check-ref-format` refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRef(String);

impl GitRef {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("'{s}' is not a valid git ref: {why}"));
        if s.is_empty() || s.len() > 255 {
            return bad("it must have 1 to 255 characters");
        }
        if s.starts_with('-') {
            return bad("it must not start with '-'");
        }
        if s.chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
        {
            return bad("it must not contain spaces, control characters or any of ~ ^ : ? * [ \\");
        }
        if s.contains("..") || s.contains("@{") || s.contains("//") {
            return bad("it must not contain '..', '@{' or '//'");
        }
        if s.starts_with('/') || s.ends_with('/') || s.ends_with('.') || s.ends_with(".lock") {
            return bad("it must not start or end with '/', or end with '.' or '.lock'");
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An environment variable's name: `[A-Za-z_][A-Za-z0-9_]*`, at most 256 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvKey(String);

impl EnvKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut bytes = s.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
        let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !(first_ok && rest_ok) || s.len() > 256 {
            return Err(format!(
                "'{s}' is not a valid variable name: use letters, digits and '_', not starting with a digit, \
                 at most 256 bytes"
            ));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Formats a ledger timestamp as RFC 3339 (UTC).
pub fn rfc3339(ms: Millis) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_are_dns_labels() {
        assert!(AppName::parse("web-1").is_ok());
        for bad in ["", "-web", "web-", "Web", "web_1", "123", &"a".repeat(64)] {
            assert!(AppName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refs_that_git_could_misread_are_refused() {
        assert!(GitRef::parse("main").is_ok());
        assert!(GitRef::parse("feature/x").is_ok());
        assert!(GitRef::parse("0123456789abcdef0123456789abcdef01234567").is_ok());
        for bad in [
            "",
            "--upload-pack=x",
            "a..b",
            "a b",
            "x:y",
            "a/",
            "a.lock",
            "@{-1}x",
        ] {
            assert!(GitRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_keys_are_shell_names() {
        assert!(EnvKey::parse("DATABASE_URL").is_ok());
        assert!(EnvKey::parse("_x1").is_ok());
        for bad in ["", "1X", "A-B", "A B", "Ä", &"A".repeat(257)] {
            assert!(EnvKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_render_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.5Z");
    }

    #[test]
    fn domains_are_normalised_and_checked() {
        let ok = |s: &str| DomainName::parse(s).map(|d| d.to_string());
        assert_eq!(ok("App.Example.COM.").unwrap(), "app.example.com");
        assert_eq!(ok("bücher.example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(ok("*.example.com").unwrap(), "*.example.com");
        for bad in [
            "",
            "localhost",
            "10.0.0.1",
            "a.*.example.com",
            "-a.example.com",
            "a_b.example.com",
            "https://a.example.com",
            "a.example.com:8080",
            "a.123",
            &format!("{}.com", "a".repeat(64)),
            &format!("{}com", "abcdefghi.".repeat(26)),
        ] {
            assert!(ok(bad).is_err(), "{bad} should be refused");
        }
    }
}
