//! Secrets the server hands out and checks: API tokens, session and one-time tokens, passwords.
//!
//! Every bearer secret is 256 random bits, shown once, and stored only as its SHA-256 hash
//! (enough for secrets of that entropy); lookups compare hashes in constant time. Passwords are
//! hashed with argon2id.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A fresh 256-bit secret, hex encoded.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A short random public identifier (64 bits), hex encoded.
pub fn random_public_id() -> String {
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// An API token as the user sees it: `rp_<public id>_<secret>`.
pub struct IssuedToken {
    pub public_id: String,
    pub secret_hash: Vec<u8>,
    pub token: String,
}

pub fn issue_token() -> IssuedToken {
    let public_id = random_public_id();
    let secret = random_secret();
    IssuedToken {
        token: format!("rp_{public_id}_{secret}"),
        secret_hash: hash_secret(&secret),
        public_id,
    }
}

/// Splits `rp_<public id>_<secret>` into its parts; `None` for anything else.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("rp_")?;
    let (public_id, secret) = rest.split_once('_')?;
    let hex_of = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(public_id, 16) && hex_of(secret, 64)).then_some((public_id, secret))
}

pub const MIN_PASSWORD_LEN: usize = 10;
pub const MAX_PASSWORD_LEN: usize = 1024;

pub fn check_password_rules(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(format!(
            "the password must have at least {MIN_PASSWORD_LEN} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(format!(
            "the password must have at most {MAX_PASSWORD_LEN} bytes"
        ));
    }
    Ok(())
}

pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2id hashing with default parameters cannot fail")
        .to_string()
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_lookalikes() {
        let t = issue_token();
        let (id, secret) = parse_token(&t.token).expect("parses");
        assert_eq!(id, t.public_id);
        assert!(hashes_equal(&hash_secret(secret), &t.secret_hash));
        assert!(parse_token("rp_abc_def").is_none());
        assert!(parse_token(&t.token.replace("rp_", "xx_")).is_none());
        assert!(parse_token(&format!("{}0", t.token)).is_none());
    }

    #[test]
    fn passwords_verify_only_themselves() {
        let h = hash_password("correct horse battery");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(check_password_rules("short").is_err());
    }
}
