//! First-run setup and password reset: the one-time tokens behind their links. The pages that
//! use them are the dashboard's (`dashboard/access.rs`).

use rustploy_actors::ledger::access::{self, ResetTokenRow};
use rustploy_actors::ledger::{Ledger, LedgerError, now_ms};

use super::auth::new_session;
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
    access::setup_token(c, &secrets::hash_secret(token), now_ms())
}

/// Issues a setup token when there is no user yet. Returns the token to print, or `None`.
pub fn issue_setup_token(c: &rusqlite::Connection) -> Result<Option<String>, LedgerError> {
    let token = secrets::random_secret();
    let now = now_ms();
    let stored =
        access::add_setup_token(c, &secrets::hash_secret(&token), now, now + SETUP_TOKEN_MS)?;
    Ok(stored.then_some(token))
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
            let session = new_session();
            let created = access::create_first_owner(
                c,
                &secrets::hash_secret(&token),
                &email,
                &hash,
                &session.row(0, None),
                now_ms(),
            )?;
            Ok(created.map(|_| session.secret))
        })
        .await?)
}

/// The reset token's id and user, when `token` is unused and unexpired.
pub fn valid_reset_token(
    c: &rusqlite::Connection,
    token: &str,
) -> Result<Option<ResetTokenRow>, LedgerError> {
    access::reset_token(c, &secrets::hash_secret(token), now_ms())
}

/// Issues a reset token for the user with `email`, if there is one, and returns it. The API's
/// reset request and `admin reset-password` both issue links through it.
pub fn issue_reset_token(
    c: &rusqlite::Connection,
    email: &str,
) -> Result<Option<String>, LedgerError> {
    let token = secrets::random_secret();
    let now = now_ms();
    let user = access::add_reset_token(
        c,
        email,
        &secrets::hash_secret(&token),
        now,
        now + RESET_TOKEN_MS,
    )?;
    Ok(user.map(|_| token))
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
    // A token used meanwhile by another request is refused here, in the transaction: the new
    // password is set and the user's sessions end (see `ledger::access::reset_password`).
    Ok(ledger
        .run(move |c| access::reset_password(c, &secrets::hash_secret(&token), &hash, now_ms()))
        .await?)
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
                let owner = access::NewUser {
                    email: "a@example.com",
                    password_hash: "x",
                    role: rustploy_api::states::Role::Owner,
                };
                access::create_user(c, &owner, 0)?;
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
        let stored = ledger
            .run(|c| access::credentials(c, "a@example.com"))
            .await
            .unwrap()
            .expect("the user");
        assert_eq!(stored.password_hash, "new hash");
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
