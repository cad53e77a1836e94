//! First-run setup and password reset: the one-time tokens behind their links. The pages that
//! use them are the dashboard's (`dashboard/access.rs`).

use rusqlite::{OptionalExtension, params};
use rustploy_actors::ledger::{Ledger, LedgerError, now_ms};

use super::auth::create_session;
use super::error::{ApiError, ApiResult};
use crate::secrets;

/// Setup tokens live this long.
pub const SETUP_TOKEN_MS: i64 = 24 * 3600 * 1000;

/// Password reset tokens live this long.
pub const RESET_TOKEN_MS: i64 = 30 * 60 * 1000;

/// The setup token's id, when `token` is unused, unexpired, and no user exists yet.
pub fn valid_setup_token(
    c: &rusqlite::Connection,
    token: &str,
) -> Result<Option<i64>, LedgerError> {
    let users: i64 = c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
    if users > 0 {
        return Ok(None);
    }
    Ok(c.query_row(
        "SELECT id FROM setup_tokens WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
        params![secrets::hash_secret(token), now_ms()],
        |r| r.get(0),
    )
    .optional()?)
}

/// Issues a setup token when there is no user yet. Returns the token to print, or `None`.
pub fn issue_setup_token(c: &rusqlite::Connection) -> Result<Option<String>, LedgerError> {
    let users: i64 = c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
    if users > 0 {
        return Ok(None);
    }
    let token = secrets::random_secret();
    let now = now_ms();
    c.execute(
        "INSERT INTO setup_tokens (token_hash, created_at, expires_at) VALUES (?1, ?2, ?3)",
        params![secrets::hash_secret(&token), now, now + SETUP_TOKEN_MS],
    )?;
    Ok(Some(token))
}

/// Uses up the setup token and creates the owner with a session. Returns the session's cookie
/// secret, or `None` when the token is not valid (any more). The password must already have
/// passed [`secrets::check_password_rules`].
pub async fn create_owner(
    ledger: &Ledger,
    token: String,
    email: String,
    password: String,
) -> ApiResult<Option<String>> {
    let hash = tokio::task::spawn_blocking(move || secrets::hash_password(&password))
        .await
        .map_err(ApiError::internal)?;
    Ok(ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some(token_id) = valid_setup_token(&tx, &token)? else {
                return Ok(None);
            };
            let now = now_ms();
            tx.execute(
                "UPDATE setup_tokens SET used_at = ?2 WHERE id = ?1",
                params![token_id, now],
            )?;
            tx.execute(
                "INSERT INTO users (email, password_hash, role, created_at, updated_at) VALUES (?1, ?2, 'owner', ?3, ?3)",
                params![email, hash, now],
            )?;
            let secret = create_session(&tx, tx.last_insert_rowid(), None)?;
            tx.commit()?;
            Ok(Some(secret))
        })
        .await?)
}

/// The reset token's id and user, when `token` is unused and unexpired.
pub fn valid_reset_token(
    c: &rusqlite::Connection,
    token: &str,
) -> Result<Option<(i64, i64)>, LedgerError> {
    Ok(c.query_row(
        "SELECT id, user_id FROM password_reset_tokens WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
        params![secrets::hash_secret(token), now_ms()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?)
}

/// Issues a reset token for the user with `email`, if there is one, and returns it.
pub fn issue_reset_token(
    c: &rusqlite::Connection,
    email: &str,
) -> Result<Option<String>, LedgerError> {
    let user: Option<i64> = c
        .query_row("SELECT id FROM users WHERE email = ?1", [email], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(user) = user else { return Ok(None) };
    let token = secrets::random_secret();
    let now = now_ms();
    c.execute(
        "INSERT INTO password_reset_tokens (user_id, token_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![user, secrets::hash_secret(&token), now, now + RESET_TOKEN_MS],
    )?;
    Ok(Some(token))
}

/// Sets a new password with a reset token. The token is looked up (by its hash) first, so a
/// made-up one costs an indexed read and never the password hash, which is slow on purpose:
/// `hash` runs only for a token that is live. Returns false when the token is unknown, used
/// or expired. The password must already have passed [`secrets::check_password_rules`].
pub async fn reset_password(
    ledger: &Ledger,
    token: String,
    password: String,
    hash: impl FnOnce(&str) -> String + Send + 'static,
) -> ApiResult<bool> {
    let t = token.clone();
    if ledger
        .run(move |c| valid_reset_token(c, &t))
        .await?
        .is_none()
    {
        return Ok(false);
    }
    let hash = tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(ApiError::internal)?;
    // A token used meanwhile by another request is refused here, in the transaction.
    Ok(apply_reset(ledger, token, hash).await?)
}

/// Uses up a reset token: sets the new password hash and ends the user's sessions. Returns
/// false when the token is unknown, used or expired.
async fn apply_reset(ledger: &Ledger, token: String, hash: String) -> Result<bool, LedgerError> {
    ledger
        .run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let Some((id, user)) = valid_reset_token(&tx, &token)? else {
                return Ok(false);
            };
            let now = now_ms();
            tx.execute(
                "UPDATE password_reset_tokens SET used_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            tx.execute(
                "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1",
                params![user, hash, now],
            )?;
            tx.execute(
                "UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
                params![user, now],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use rustploy_actors::ledger::LedgerConfig;

    use super::*;

    #[tokio::test]
    async fn a_reset_hashes_the_password_only_for_a_live_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let ledger =
            tokio::task::spawn_blocking(move || Ledger::open(&path, &LedgerConfig::default()))
                .await
                .unwrap()
                .unwrap();
        let token = ledger
            .run(|c| {
                c.execute(
                    "INSERT INTO users (email, password_hash, role, created_at, updated_at) VALUES ('a@example.com', 'x', 'owner', 0, 0)",
                    [],
                )?;
                issue_reset_token(c, "a@example.com")
            })
            .await
            .unwrap()
            .expect("a token for a user");
        let hashed = Arc::new(AtomicBool::new(false));
        let flag = hashed.clone();
        let fake = move |_: &str| {
            flag.store(true, Ordering::SeqCst);
            "new hash".to_string()
        };
        let done = reset_password(
            &ledger,
            "made up".into(),
            "a good password".into(),
            fake.clone(),
        )
        .await
        .unwrap();
        assert!(!done);
        assert!(
            !hashed.load(Ordering::SeqCst),
            "a made-up token was hashed for"
        );
        assert!(
            reset_password(
                &ledger,
                token.clone(),
                "a good password".into(),
                fake.clone()
            )
            .await
            .unwrap()
        );
        assert!(hashed.load(Ordering::SeqCst));
        let stored: String = ledger
            .run(|c| Ok(c.query_row("SELECT password_hash FROM users", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(stored, "new hash");
        hashed.store(false, Ordering::SeqCst);
        assert!(
            !reset_password(&ledger, token, "a good password".into(), fake)
                .await
                .unwrap()
        );
        assert!(
            !hashed.load(Ordering::SeqCst),
            "a used token was hashed for"
        );
        let none = ledger
            .run(|c| issue_reset_token(c, "nobody@example.com"))
            .await
            .unwrap();
        assert_eq!(none, None);
    }
}
