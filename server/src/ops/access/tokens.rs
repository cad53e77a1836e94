//! API tokens: a page of them, issue (the secret is shown once) and revoke.

use rustploy_actors::ledger::access as ledger;
use rustploy_actors::ledger::{LedgerError, now_ms};
use rustploy_api::Page;
use rustploy_api::access::{IssuedToken, NewToken, Token};
use rustploy_api::states::Scope;

use super::{NoToken, token_view};
use crate::http::auth::Principal;
use crate::http::views;
use crate::secrets;
use crate::state::AppState;

/// Token names have this many characters at most.
const MAX_NAME_LEN: usize = 100;

/// A token lives this many days at most (when it expires at all).
const MAX_DAYS: u32 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Up to `limit` tokens with an id below `before`, newest first, live or not.
pub async fn page(state: &AppState, before: i64, limit: i64) -> Result<Page<Token>, PageError> {
    let rows = state
        .ledger
        .run(move |c| ledger::tokens(c, before, limit))
        .await?;
    let items = rows.into_iter().map(token_view).collect();
    Ok(views::page(items, limit, |t: &Token| t.id))
}

/// Scopes that cannot be a token's.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("give at least one scope: read, deploy, admin or agent")]
    None,
    #[error("unknown scope '{0}': use read, deploy, admin or agent")]
    Unknown(String),
}

/// Checks token scopes given as names: known names, at least one. Answers them sorted by name
/// and unique, as tokens keep them.
pub fn valid_scopes(names: &[String]) -> Result<Vec<Scope>, ScopeError> {
    let mut names: Vec<&str> = names.iter().map(|s| s.trim()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(ScopeError::None);
    }
    names
        .into_iter()
        .map(|n| n.parse().map_err(|_| ScopeError::Unknown(n.to_string())))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the token name must have 1 to {MAX_NAME_LEN} characters")]
    BadName,
    #[error(transparent)]
    Scopes(#[from] ScopeError),
    #[error("expires_in_days must be between 1 and {MAX_DAYS}")]
    BadExpiry,
    /// The row just inserted could not be read back.
    #[error("the token just created is gone")]
    Vanished,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Checks and creates an API token for `who`; the answer holds the token itself, which is
/// never shown again.
pub async fn issue(
    state: &AppState,
    who: &Principal,
    new: NewToken,
) -> Result<IssuedToken, IssueError> {
    let name = new.name.trim().to_string();
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(IssueError::BadName);
    }
    let scopes = valid_scopes(&new.scopes)?;
    let expires_at = match new.expires_in_days {
        Some(0) => return Err(IssueError::BadExpiry),
        Some(d) if d > MAX_DAYS => return Err(IssueError::BadExpiry),
        Some(d) => Some(now_ms() + d as i64 * 86_400_000),
        None => None,
    };
    let created_by = match who {
        Principal::User { id, .. } => Some(*id),
        Principal::Token { .. } => None,
    };
    let issued = secrets::issue_token();
    let secret = issued.token.clone();
    let row = state
        .ledger
        .run(move |c| {
            let new = ledger::NewToken {
                public_id: &issued.public_id,
                name: &name,
                secret_hash: &issued.secret_hash,
                scopes: &scopes,
                created_by,
                expires_at,
            };
            let id = ledger::create_token(c, &new, now_ms())?;
            ledger::token(c, id)
        })
        .await?
        .ok_or(IssueError::Vanished)?;
    Ok(IssuedToken {
        token: token_view(row),
        secret,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error(transparent)]
    NoToken(#[from] NoToken),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Revokes token `id` (revoking twice keeps the first time).
pub async fn revoke(state: &AppState, id: i64) -> Result<(), RevokeError> {
    let found = state
        .ledger
        .run(move |c| ledger::revoke_token(c, id, now_ms()))
        .await?;
    if !found {
        return Err(NoToken(id).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_checked_by_name_and_kept_sorted_and_unique() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            valid_scopes(&names(&["read", " admin ", "read"])).unwrap(),
            [Scope::Admin, Scope::Read]
        );
        assert!(matches!(valid_scopes(&[]), Err(ScopeError::None)));
        assert_eq!(
            valid_scopes(&names(&["read", "root", "god"]))
                .unwrap_err()
                .to_string(),
            "unknown scope 'god': use read, deploy, admin or agent"
        );
    }
}
