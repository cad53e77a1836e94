//! Secrets at rest: env var values, service passwords, deploy keys and webhook secrets are
//! stored as XChaCha20-Poly1305 ciphertext under one key.
//!
//! The key is `RUSTPLOY_SECRET_KEY` (64 hex characters) when set, else the file `secret.key` in
//! the data directory, generated at first start with mode 0600. A stored value is
//! `nonce (24 bytes) || ciphertext`; the associated data binds it to its place (for example
//! `env:<app id>:<key>`), so a value copied to another row does not decrypt.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the secret key is invalid: {0}")]
    BadKey(String),
    #[error("cannot read or create the secret key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "a stored secret could not be decrypted: the key changed or the value was tampered with"
    )]
    Decrypt,
}

/// Encrypts and decrypts secrets. Cheap to clone.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    pub fn from_key(key: &[u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// Loads the key from `env_key` (hex) if given, else from `<data_dir>/secret.key`,
    /// creating that file with a fresh random key (mode 0600) when it does not exist.
    pub fn load(data_dir: &Path, env_key: Option<&str>) -> Result<Self, CryptoError> {
        if let Some(hex_key) = env_key {
            return Self::from_hex(hex_key.trim());
        }
        let path = data_dir.join("secret.key");
        let io = |source| CryptoError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .map_err(io)?;
                }
                Self::from_hex(text.trim())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = XChaCha20Poly1305::generate_key(&mut OsRng);
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io)?;
                file.write_all(hex::encode(key).as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(Self {
                    cipher: XChaCha20Poly1305::new(&key),
                })
            }
            Err(e) => Err(io(e)),
        }
    }

    fn from_hex(text: &str) -> Result<Self, CryptoError> {
        let bytes = hex::decode(text).map_err(|e| CryptoError::BadKey(format!("not hex: {e}")))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::BadKey("it must be 32 bytes (64 hex characters)".into()))?;
        Ok(Self::from_key(&key))
    }

    /// Encrypts `plain`, bound to `context` (where the value is stored).
    pub fn seal(&self, context: &str, plain: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .expect("encryption with a valid key cannot fail");
        let mut out = Vec::with_capacity(nonce.len() + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, context: &str, stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if stored.len() < 24 {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, sealed) = stored.split_at(24);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt)
    }

    pub fn open_string(&self, context: &str, stored: &[u8]) -> Result<String, CryptoError> {
        String::from_utf8(self.open(context, stored)?).map_err(|_| CryptoError::Decrypt)
    }
}

/// The context an app's env var value is bound to.
pub fn env_context(app_id: i64, key: &str) -> String {
    format!("env:{app_id}:{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_open_only_in_their_own_context() {
        let b = SecretBox::from_key(&[7; 32]);
        let sealed = b.seal("env:1:TOKEN", b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(b.open("env:1:TOKEN", &sealed).unwrap(), b"hunter2");
        assert!(b.open("env:2:TOKEN", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(b.open("env:1:TOKEN", &tampered).is_err());
        assert!(
            SecretBox::from_key(&[8; 32])
                .open("env:1:TOKEN", &sealed)
                .is_err()
        );
    }

    #[test]
    fn the_key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load(dir.path(), None).unwrap();
        let mode = std::fs::metadata(dir.path().join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = SecretBox::load(dir.path(), None).unwrap();
        assert_eq!(b.open("x", &a.seal("x", b"same key")).unwrap(), b"same key");
        assert!(SecretBox::load(dir.path(), Some("abcd")).is_err());
    }
}
