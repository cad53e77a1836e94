//! A read-only look at a ledger file, for checks that must change nothing (`doctor`): no
//! migration, no pool, no file created.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{LedgerError, Millis};

/// What a read-only look found.
#[derive(Debug, Clone)]
pub struct Summary {
    pub schema_version: i64,
    /// One sealed env value, to check the secret key opens what the ledger holds.
    pub sealed_sample: Option<SealedSample>,
    /// The newest time any record was written at, to check the clock has not gone back.
    pub newest_record_at: Option<Millis>,
}

#[derive(Debug, Clone)]
pub struct SealedSample {
    pub app_id: i64,
    pub key: String,
    pub value_enc: Vec<u8>,
}

/// Reads `path` without writing to it. `None` when there is no ledger there yet.
pub fn summary(path: &Path) -> Result<Option<Summary>, LedgerError> {
    if !path.exists() {
        return Ok(None);
    }
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    let schema_version: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if schema_version == 0 {
        return Ok(Some(Summary {
            schema_version,
            sealed_sample: None,
            newest_record_at: None,
        }));
    }
    let sealed_sample = c
        .query_row(
            "SELECT app_id, key, value_enc FROM app_env_vars ORDER BY app_id, key LIMIT 1",
            [],
            |r| {
                Ok(SealedSample {
                    app_id: r.get(0)?,
                    key: r.get(1)?,
                    value_enc: r.get(2)?,
                })
            },
        )
        .optional()?;
    let newest_record_at: Option<Millis> = c.query_row(
        "SELECT MAX(t) FROM (
             SELECT MAX(created_at) AS t FROM apps
             UNION ALL SELECT MAX(created_at) FROM deployments
             UNION ALL SELECT MAX(finished_at) FROM deployments
             UNION ALL SELECT MAX(created_at) FROM jobs
             UNION ALL SELECT MAX(at) FROM token_audit_events)",
        [],
        |r| r.get(0),
    )?;
    Ok(Some(Summary {
        schema_version,
        sealed_sample,
        newest_record_at,
    }))
}
