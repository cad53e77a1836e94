//! Numbered migrations from `migrations/`, embedded in the binary and recorded in
//! `PRAGMA user_version`: each applies once, and a newer database is refused.

use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};

use super::LedgerError;

const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/0001_ledger.sql"),
    include_str!("../../../migrations/0002_ingress.sql"),
    include_str!("../../../migrations/0003_webhooks.sql"),
    include_str!("../../../migrations/0004_services.sql"),
    include_str!("../../../migrations/0005_redeliveries.sql"),
    include_str!("../../../migrations/0007_push_order.sql"),
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub fn schema_version(conn: &Connection) -> Result<i64, LedgerError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

pub(super) fn apply(conn: &mut Connection, path: &str) -> Result<(), LedgerError> {
    let found = schema_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(LedgerError::TooNew {
            path: path.to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let migrations = Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect());
    migrations
        .to_latest(conn)
        .map_err(|e| LedgerError::Migration(e.to_string()))?;
    tracing::info!(from = found, to = SCHEMA_VERSION, "ledger migrated");
    Ok(())
}
