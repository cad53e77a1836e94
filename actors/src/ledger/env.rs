//! An app's environment variables. Values are stored sealed (see `crypto::env_context`): the
//! ledger never holds nor returns them in the clear, so sealing and opening stay with callers.

use rusqlite::{Connection, params};

use super::{LedgerError, Millis, now_ms};

/// One variable, as the ledger stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVarRow {
    pub key: String,
    /// The value, sealed with the app's and the key's context.
    pub value_enc: Vec<u8>,
    /// Masked in answers unless an admin asks to see it.
    pub secret: bool,
    pub updated_at: Millis,
}

/// A variable to write, its value already sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedVar {
    pub key: String,
    pub value_enc: Vec<u8>,
    pub secret: bool,
}

/// The app's variables, by key.
pub fn list(c: &Connection, app_id: i64) -> Result<Vec<EnvVarRow>, LedgerError> {
    Ok(c.prepare_cached(
        "SELECT key, value_enc, secret, updated_at FROM app_env_vars
              WHERE app_id = ?1 ORDER BY key",
    )?
    .query_map([app_id], |r| {
        Ok(EnvVarRow {
            key: r.get(0)?,
            value_enc: r.get(1)?,
            secret: r.get(2)?,
            updated_at: r.get(3)?,
        })
    })?
    .collect::<Result<Vec<_>, _>>()?)
}

/// Upserts `vars` and marks the app changed, all at one time. Call it inside a transaction so
/// that a set of variables lands whole.
pub fn put(c: &Connection, app_id: i64, vars: &[SealedVar]) -> Result<(), LedgerError> {
    let now = now_ms();
    let mut stmt = c.prepare_cached(
        "INSERT INTO app_env_vars (app_id, key, value_enc, secret, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (app_id, key) DO UPDATE SET value_enc = ?3, secret = ?4, updated_at = ?5",
    )?;
    for var in vars {
        stmt.execute(params![app_id, var.key, var.value_enc, var.secret, now])?;
    }
    c.prepare_cached("UPDATE apps SET updated_at = ?2 WHERE id = ?1")?
        .execute(params![app_id, now])?;
    Ok(())
}

/// Deletes the variable `key`; false when the app had none by that name.
pub fn delete(c: &Connection, app_id: i64, key: &str) -> Result<bool, LedgerError> {
    let n = c
        .prepare_cached("DELETE FROM app_env_vars WHERE app_id = ?1 AND key = ?2")?
        .execute(params![app_id, key])?;
    Ok(n > 0)
}

/// Who saw an app's secret values: a token or a dashboard user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revealer {
    Token(i64),
    User(i64),
}

/// Records in the audit log that `who` was shown the secret values of the app.
pub fn record_reveal(c: &Connection, who: Revealer, app_id: i64) -> Result<(), LedgerError> {
    let (token_id, user_id) = match who {
        Revealer::Token(id) => (Some(id), None),
        Revealer::User(id) => (None, Some(id)),
    };
    c.prepare_cached(
        "INSERT INTO token_audit_events (token_id, user_id, method, path, status, detail, at)
         VALUES (?1, ?2, 'GET', ?3, 200, ?4, ?5)",
    )?
    .execute(params![
        token_id,
        user_id,
        format!("/api/v1/apps/{app_id}/env"),
        format!("revealed the secret env values of app {app_id}"),
        now_ms()
    ])?;
    Ok(())
}
