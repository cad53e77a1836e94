//! The token audit log: one row per token-authenticated request.

use std::collections::HashMap;

use rusqlite::{Connection, params};

use super::{LedgerError, Millis};

/// One use of an API token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUse {
    pub token_id: i64,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub client_addr: Option<String>,
    pub at: Millis,
}

/// Records `uses` and advances each token's `last_used_at`. Meant for a batch inside one
/// transaction (see `ledger::batch`).
pub fn record(c: &Connection, uses: &[TokenUse]) -> Result<(), LedgerError> {
    let mut last_used: HashMap<i64, Millis> = HashMap::new();
    let mut insert = c.prepare_cached(
        "INSERT INTO token_audit_events (token_id, method, path, status, client_addr, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for u in uses {
        insert.execute(params![
            u.token_id,
            u.method,
            u.path,
            u.status,
            u.client_addr,
            u.at
        ])?;
        let t = last_used.entry(u.token_id).or_default();
        *t = (*t).max(u.at);
    }
    let mut touch = c.prepare_cached(
        "UPDATE api_tokens SET last_used_at = MAX(COALESCE(last_used_at, 0), ?2) WHERE id = ?1",
    )?;
    for (token, at) in last_used {
        touch.execute(params![token, at])?;
    }
    Ok(())
}

/// Records that a person or token was shown a secret (credentials, secret values) outside an
/// API request of its own: a dashboard page. `path` names the API resource it equals.
pub fn record_shown(
    c: &Connection,
    token_id: Option<i64>,
    user_id: Option<i64>,
    path: &str,
    detail: &str,
    at: Millis,
) -> Result<(), LedgerError> {
    c.prepare_cached(
        "INSERT INTO token_audit_events (token_id, user_id, method, path, status, detail, at)
         VALUES (?1, ?2, 'GET', ?3, 200, ?4, ?5)",
    )?
    .execute(params![token_id, user_id, path, detail, at])?;
    Ok(())
}
