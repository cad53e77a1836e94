//! Access: signing in and out and password resets (`sessions`), first-run setup and the
//! one-time links (`setup`), users, API tokens, and the token audit log.
//!
//! The checks every form and request body shares live here: an email, a password, a role, and
//! the wait a limit imposes.

pub mod audit;
pub mod sessions;
pub mod setup;
pub mod tokens;
pub mod users;

use std::time::Duration;

use rustploy_actors::ledger::access::{AuditRow, TokenRow, UserRow};
use rustploy_api::access::{AuditEvent, Token, User};
use rustploy_api::states::Role;

use crate::domain::rfc3339;
use crate::secrets;

/// An email address that cannot be one.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a valid email address")]
pub struct BadEmail(pub String);

/// A password the rules refuse, with the rule it breaks.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WeakPassword(pub String);

/// A role that is not one.
#[derive(Debug, thiserror::Error)]
#[error("role must be owner, maintainer or viewer")]
pub struct BadRole;

/// No user has this id.
#[derive(Debug, thiserror::Error)]
#[error("no user {0}")]
pub struct NoUser(pub i64);

/// No token has this id.
#[derive(Debug, thiserror::Error)]
#[error("no token {0}")]
pub struct NoToken(pub i64);

/// The change would leave no owner.
#[derive(Debug, thiserror::Error)]
#[error("this is the last owner; make another user owner first")]
pub struct LastOwner;

/// Hashing a password on the blocking pool did not finish.
#[derive(Debug, thiserror::Error)]
#[error("hashing the password failed: {0}")]
pub struct HashFailed(#[from] tokio::task::JoinError);

/// A user as the API shows it.
pub fn user_view(row: UserRow) -> User {
    User {
        id: row.id,
        email: row.email,
        role: row.role,
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
    }
}

/// A token as the API shows it (never its secret).
pub fn token_view(row: TokenRow) -> Token {
    Token {
        id: row.id,
        public_id: row.public_id,
        name: row.name,
        scopes: row.scopes,
        created_at: rfc3339(row.created_at),
        expires_at: row.expires_at.map(rfc3339),
        revoked_at: row.revoked_at.map(rfc3339),
        last_used_at: row.last_used_at.map(rfc3339),
    }
}

/// An audit event as the API shows it.
pub fn audit_view(row: AuditRow) -> AuditEvent {
    AuditEvent {
        id: row.id,
        token_id: row.token_id,
        user_id: row.user_id,
        method: row.method,
        path: row.path,
        status: row.status,
        client_addr: row.client_addr,
        detail: row.detail,
        at: rfc3339(row.at),
    }
}

/// Checks an email address loosely (something `@` a dotted domain, no spaces or controls) and
/// answers it trimmed.
fn valid_email(email: &str) -> Result<String, BadEmail> {
    let email = email.trim();
    let ok = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(BadEmail(email.to_string()));
    }
    Ok(email.to_string())
}

fn valid_password(password: &str) -> Result<(), WeakPassword> {
    secrets::check_password_rules(password).map_err(WeakPassword)
}

fn valid_role(role: &str) -> Result<Role, BadRole> {
    role.parse().map_err(|_| BadRole)
}

/// Hashes a password on the blocking pool: argon2id is slow on purpose.
async fn hash_password(password: String) -> Result<String, HashFailed> {
    Ok(tokio::task::spawn_blocking(move || secrets::hash_password(&password)).await?)
}

/// A limit's wait in whole seconds, at least one: what `Retry-After` says.
fn wait_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The limiters' key of an account: a digest, so that keys are small whatever was typed.
fn account_key(email: &str) -> String {
    format!("account:{}", hex::encode(secrets::hash_secret(email)))
}
