//! Keeps secrets out of deployment logs: env values, credentials in URLs and deploy keys are
//! replaced before a line is stored or shown.

/// What replaces a secret in a log line.
pub const MASK: &str = "***";

/// Values shorter than this are not masked: they cannot carry a meaningful secret, and masking
/// every `1` or `on` would make build logs unreadable.
pub const MIN_SECRET_LEN: usize = 4;

/// Redacts known secret values and URL credentials from log lines. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is masked whole.
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut r = Self::default();
        for s in secrets {
            r.add(s.into());
        }
        r
    }

    /// Adds a secret. A multi-line secret (a private key) is also masked line by line, since
    /// tools print such values one line at a time.
    pub fn add(&mut self, secret: String) {
        let mut pieces = vec![secret.trim().to_string()];
        if secret.contains('\n') {
            pieces.extend(secret.lines().map(|l| l.trim().to_string()));
        }
        for p in pieces {
            if p.chars().count() >= MIN_SECRET_LEN && !self.secrets.contains(&p) {
                self.secrets.push(p);
            }
        }
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// The line with every known secret and every URL password masked.
    pub fn line(&self, line: &str) -> String {
        let mut out = url_credentials(line);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        if out.contains("PRIVATE KEY-----") {
            return format!("{MASK} (a line of a private key)");
        }
        out
    }
}

/// Masks the user-info part of every `scheme://user:password@host` (and `scheme://token@host`)
/// in `text`.
pub fn url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote; user info ends at the last
        // '@' inside it.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(userinfo_end) => {
                out.push_str(MASK);
                out.push_str(&authority[userinfo_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_and_tokens_are_masked() {
        assert_eq!(
            url_credentials("cloning https://bob:hunter22@example.com/x.git now"),
            "cloning https://***@example.com/x.git now"
        );
        assert_eq!(
            url_credentials("fatal: 'https://ghp_abc@github.com/o/r' not found"),
            "fatal: 'https://***@github.com/o/r' not found"
        );
        assert_eq!(
            url_credentials("see http://example.com/a@b and ssh://git@h:22/x"),
            "see http://example.com/a@b and ssh://***@h:22/x"
        );
        assert_eq!(url_credentials("no urls here"), "no urls here");
    }

    #[test]
    fn env_values_and_keys_are_masked_longest_first() {
        let r = Redactor::new([
            "s3cret-value",
            "s3cret",
            "on",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAB3NzaC1yc2EAAAADAQAB\n-----END OPENSSH PRIVATE KEY-----",
        ]);
        assert_eq!(r.line("DB=s3cret-value ok"), "DB=*** ok");
        assert_eq!(r.line("x s3cret y"), "x *** y");
        // Too short to mask.
        assert_eq!(r.line("turn it on"), "turn it on");
        assert_eq!(r.line("key AAAAB3NzaC1yc2EAAAADAQAB"), "key ***");
        assert!(
            !r.line("-----BEGIN OPENSSH PRIVATE KEY-----")
                .contains("BEGIN")
        );
    }
}
