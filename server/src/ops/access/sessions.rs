//! Signing in and out, and who is asking.

use std::sync::OnceLock;
use std::time::Instant;

use rustploy_actors::ledger::access as ledger;
use rustploy_actors::ledger::{LedgerError, now_ms};
use rustploy_api::access::{Me, User};

use super::{account_key, user_view, wait_secs};
use crate::http::auth::{self, Principal};
use crate::secrets;
use crate::state::AppState;

/// A new session: the cookie secret, its CSRF token, and the user.
#[derive(Debug)]
pub struct SignedIn {
    pub secret: String,
    pub csrf: String,
    pub user: User,
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Too many failed attempts for this account or from this address.
    #[error("too many failed sign-ins; try again in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// The same for an unknown email as for a wrong password.
    #[error("the email or password is wrong")]
    BadCredentials,
    /// The user was removed while signing in; there is no session to use.
    #[error("the user was removed while signing in")]
    Removed,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl SignInError {
    /// The wait a refusal by a limit asks for, in seconds.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            SignInError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Checks an email and password from `client` (an address) and creates a session. Attempts
/// are limited per client address and delayed per account (see `http/limiter.rs`), the same
/// for an unknown email as for a known one, and an unknown email takes as long to refuse.
pub async fn sign_in(
    state: &AppState,
    email: &str,
    password: String,
    client: String,
) -> Result<SignedIn, SignInError> {
    let email = email.trim().to_lowercase();
    let (account_key, client_key) = (account_key(&email), format!("client:{client}"));
    let limiter = &state.login_limiter;
    if let Err(wait) = limiter.begin(&account_key, &client_key, Instant::now()) {
        return Err(SignInError::RateLimited {
            retry_after: wait_secs(wait),
        });
    }
    let lookup = email.clone();
    let user = state
        .ledger
        .run(move |c| ledger::credentials(c, &lookup))
        .await?;
    let (user_id, hash) = match user {
        Some(u) => (Some(u.user_id), u.password_hash),
        None => (None, dummy_hash().to_string()),
    };
    let verified = tokio::task::spawn_blocking(move || secrets::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(user_id) = user_id.filter(|_| verified) else {
        return Err(SignInError::BadCredentials);
    };
    limiter.succeeded(&account_key, &client_key);
    let (session, user) = state
        .ledger
        .run(move |c| {
            let session = auth::open_session(c, user_id, Some(&client))?;
            Ok((session, ledger::user(c, user_id)?))
        })
        .await?;
    // The user was there a moment ago; one removed meanwhile has no session to use.
    let user = user.ok_or(SignInError::Removed)?;
    Ok(SignedIn {
        secret: session.secret,
        csrf: session.csrf,
        user: user_view(user),
    })
}

/// A hash to verify against when the email is unknown, so that both cases take as long.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| secrets::hash_password(&secrets::random_secret()))
}

#[derive(Debug, thiserror::Error)]
pub enum SignOutError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Ends the session whose cookie secret is `secret`, if there is one and it is live.
pub async fn sign_out(state: &AppState, secret: Option<String>) -> Result<(), SignOutError> {
    if let Some(secret) = secret {
        let hash = secrets::hash_secret(&secret);
        state
            .ledger
            .run(move |c| ledger::revoke_session(c, &hash, now_ms()))
            .await?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum MeError {
    /// The session's user was removed after the request was authenticated.
    #[error("the signed-in user no longer exists")]
    Removed,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Who is asking: the signed-in user with the session's CSRF token, or the token.
pub async fn me(state: &AppState, who: Principal) -> Result<Me, MeError> {
    Ok(match who {
        Principal::User { id, csrf_token, .. } => {
            let user = state
                .ledger
                .run(move |c| ledger::user(c, id))
                .await?
                .ok_or(MeError::Removed)?;
            Me::User {
                user: user_view(user),
                csrf_token,
            }
        }
        Principal::Token { id, name, scopes } => Me::Token { id, name, scopes },
    })
}
