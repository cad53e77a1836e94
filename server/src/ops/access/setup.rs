//! First-run setup and password resets: the one-time tokens behind their links. The first
//! owner is created with a setup link; a forgotten password is replaced with a reset link.

use std::time::{Duration, Instant};

use rusqlite::Connection;
use rustploy_actors::ledger::access::{self, ResetTokenRow};
use rustploy_actors::ledger::{Ledger, LedgerError, now_ms};

use super::{BadEmail, HashFailed, WeakPassword, account_key, hash_password, wait_secs};
use crate::http::auth::new_session;
use crate::secrets;
use crate::state::AppState;

/// Setup tokens live this long.
pub const SETUP_TOKEN_MS: i64 = 24 * 3600 * 1000;

/// Password reset tokens live this long.
pub const RESET_TOKEN_MS: i64 = 30 * 60 * 1000;

/// The longest issuing and mailing one reset link may take in the background.
const RESET_MAIL_TIMEOUT: Duration = Duration::from_secs(60);

/// The setup token's id, when `token` is unused, unexpired, and no user exists yet.
pub fn valid_setup_token(c: &Connection, token: &str) -> Result<Option<i64>, LedgerError> {
    access::setup_token(c, &secrets::hash_secret(token), now_ms())
}

/// Issues a setup token when there is no user yet. Returns the token to print, or `None`.
pub fn issue_setup_token(c: &Connection) -> Result<Option<String>, LedgerError> {
    let token = secrets::random_secret();
    let now = now_ms();
    let stored =
        access::add_setup_token(c, &secrets::hash_secret(&token), now, now + SETUP_TOKEN_MS)?;
    Ok(stored.then_some(token))
}

/// The reset token's id and user, when `token` is unused and unexpired.
pub fn valid_reset_token(
    c: &Connection,
    token: &str,
) -> Result<Option<ResetTokenRow>, LedgerError> {
    access::reset_token(c, &secrets::hash_secret(token), now_ms())
}

/// Issues a reset token for the user with `email`, if there is one, and returns it. The API's
/// reset request and `admin reset-password` both issue links through it.
pub fn issue_reset_token(c: &Connection, email: &str) -> Result<Option<String>, LedgerError> {
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

#[derive(Debug, thiserror::Error)]
pub enum SetupLinkError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Whether `token` is a setup link that still works: unused, unexpired, and no user yet.
pub async fn setup_link_valid(state: &AppState, token: String) -> Result<bool, SetupLinkError> {
    Ok(state
        .ledger
        .run(move |c| valid_setup_token(c, &token))
        .await?
        .is_some())
}

/// The first owner, as the setup form gives it.
#[derive(Debug, Clone)]
pub struct FirstOwner {
    pub token: String,
    pub email: String,
    pub password: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateOwnerError {
    #[error("enter a valid email address")]
    BadEmail,
    #[error(transparent)]
    WeakPassword(#[from] WeakPassword),
    /// Used already, expired, or an owner exists: only a restart prints a new link.
    #[error(
        "this setup link was used already, has expired, or the owner exists; restart the \
         server for a new link, or sign in"
    )]
    LinkInvalid,
    #[error(transparent)]
    Hash(#[from] HashFailed),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Uses up the setup token and creates the owner with a session. Answers the session's cookie
/// secret.
pub async fn create_owner(state: &AppState, owner: FirstOwner) -> Result<String, CreateOwnerError> {
    let email = owner.email.trim().to_string();
    if !email.contains('@') || email.len() > 254 {
        return Err(CreateOwnerError::BadEmail);
    }
    secrets::check_password_rules(&owner.password).map_err(WeakPassword)?;
    let hash = hash_password(owner.password).await?;
    let token = owner.token;
    let secret = state
        .ledger
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
        .await?;
    secret.ok_or(CreateOwnerError::LinkInvalid)
}

#[derive(Debug, thiserror::Error)]
pub enum ResetRequestError {
    #[error(transparent)]
    BadEmail(#[from] BadEmail),
    /// Too many requests for this account or from this address.
    #[error("too many password reset requests; try again in {retry_after} s")]
    RateLimited { retry_after: u64 },
}

impl ResetRequestError {
    /// The wait a refusal by a limit asks for, in seconds.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ResetRequestError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Counts a reset request for `email` from `client` against the limits (per address and per
/// account, known or not) and, when it is within them, issues and sends the link in a task of
/// its own: the caller answers at once and the same way whether or not such a user exists,
/// and as fast. The link goes by mail (or to the server log when no mail is configured).
pub fn request_reset(state: &AppState, email: &str, client: &str) -> Result<(), ResetRequestError> {
    let email = super::valid_email(email)?.to_lowercase();
    state
        .reset_limiter
        .take(
            &account_key(&email),
            &format!("client:{client}"),
            Instant::now(),
        )
        .map_err(|wait| ResetRequestError::RateLimited {
            retry_after: wait_secs(wait),
        })?;
    let state = state.clone();
    tokio::spawn(async move {
        match tokio::time::timeout(RESET_MAIL_TIMEOUT, send_reset_link(&state, &email)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "issuing a password reset link failed")
            }
            Err(_) => tracing::error!(
                "issuing and sending a password reset link took longer than {RESET_MAIL_TIMEOUT:?}"
            ),
        }
    });
    Ok(())
}

/// Issues a reset link for `email` and sends it, when such a user exists.
async fn send_reset_link(state: &AppState, email: &str) -> Result<(), LedgerError> {
    let e = email.to_string();
    let issued = state.ledger.run(move |c| issue_reset_token(c, &e)).await?;
    if let Some(token) = issued {
        let link = format!("{}/reset-password?token={token}", state.settings.public_url);
        crate::mail::send_reset_link(&state.settings, email, &link).await;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ResetLinkError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Whether `token` is a reset link that still works: unused and unexpired.
pub async fn reset_link_valid(state: &AppState, token: String) -> Result<bool, ResetLinkError> {
    Ok(state
        .ledger
        .run(move |c| valid_reset_token(c, &token))
        .await?
        .is_some())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfirmResetError {
    #[error(transparent)]
    WeakPassword(#[from] WeakPassword),
    #[error("this reset token is unknown, used already, or expired; ask for a new one")]
    InvalidToken,
    #[error(transparent)]
    Hash(#[from] HashFailed),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Sets a new password with a reset token, ending the user's sessions.
pub async fn confirm_reset(
    state: &AppState,
    token: String,
    password: String,
) -> Result<(), ConfirmResetError> {
    secrets::check_password_rules(&password).map_err(WeakPassword)?;
    let done = reset_password(&state.ledger, token, password, |p| {
        secrets::hash_password(p)
    })
    .await?;
    if !done {
        return Err(ConfirmResetError::InvalidToken);
    }
    Ok(())
}

/// Sets a new password with a reset token. The token is looked up (by its hash) first, so a
/// made-up one costs an indexed read and never the password hash, which is slow on purpose:
/// `hash` runs only for a token that is live. Returns false when the token is unknown, used
/// or expired. The password must already have passed [`secrets::check_password_rules`].
async fn reset_password(
    ledger: &Ledger,
    token: String,
    password: String,
    hash: impl FnOnce(&str) -> String + Send + 'static,
) -> Result<bool, ConfirmResetError> {
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
        .map_err(HashFailed)?;
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
