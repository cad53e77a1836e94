//! Numbered migrations from `migrations/`, embedded in the binary and recorded in
//! `PRAGMA user_version`: each applies once, and a newer database is refused.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};

use super::LedgerError;

const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/0001_ledger.sql"),
    include_str!("../../../migrations/0002_ingress.sql"),
    include_str!("../../../migrations/0003_webhooks.sql"),
    include_str!("../../../migrations/0004_services.sql"),
    include_str!("../../../migrations/0005_redeliveries.sql"),
    include_str!("../../../migrations/0006_trusted.sql"),
    include_str!("../../../migrations/0007_push_order.sql"),
    include_str!("../../../migrations/0008_retention.sql"),
    include_str!("../../../migrations/0009_auth_epoch.sql"),
    include_str!("../../../migrations/0010_app_deleting.sql"),
    include_str!("../../../migrations/0011_lookup_indexes.sql"),
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub fn schema_version(conn: &Connection) -> Result<i64, LedgerError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// How many pre-upgrade copies of the ledger are kept.
pub const KEPT_UPGRADE_BACKUPS: usize = 3;

/// The folder beside the ledger where its pre-upgrade copies go (`<data-dir>/backups`).
pub fn upgrade_backup_dir(ledger: &Path) -> PathBuf {
    ledger
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("backups")
}

/// Before migrations change an existing ledger, copies it with SQLite's online backup to
/// `backups/ledger-before-v<N>.db` (N: the schema version this build migrates to), readable by
/// its owner only, and keeps the newest [`KEPT_UPGRADE_BACKUPS`] such copies. A new ledger, a
/// current one and one too new to open are not copied. Answers the copy's path, if one was
/// made.
pub(super) fn back_up_before_upgrade(
    conn: &Connection,
    ledger: &Path,
) -> Result<Option<PathBuf>, LedgerError> {
    let found = schema_version(conn)?;
    if found == 0 || found >= SCHEMA_VERSION {
        return Ok(None);
    }
    let dir = upgrade_backup_dir(ledger);
    let fail = |what: &str, e: std::io::Error| {
        LedgerError::Invalid(format!(
            "cannot back the ledger up before upgrading it ({what} in {}): {e}; \
             free space or fix the folder's permissions, then start again",
            dir.display()
        ))
    };
    std::fs::create_dir_all(&dir).map_err(|e| fail("creating the folder", e))?;
    crate::files::tighten(&dir).map_err(|e| fail("making the folder private", e))?;
    let dest = dir.join(format!("ledger-before-v{SCHEMA_VERSION}.db"));
    let partial = dir.join(format!("ledger-before-v{SCHEMA_VERSION}.db.partial"));
    let _ = std::fs::remove_file(&partial);
    crate::files::create_private_file(&partial).map_err(|e| fail("creating the copy", e))?;
    let started = std::time::Instant::now();
    {
        let mut out = Connection::open(&partial)?;
        let backup = rusqlite::backup::Backup::new(conn, &mut out)?;
        backup.run_to_completion(1024, std::time::Duration::from_millis(1), None)?;
    }
    std::fs::rename(&partial, &dest).map_err(|e| fail("renaming the copy", e))?;
    tracing::info!(
        from = found,
        to = SCHEMA_VERSION,
        copy = %dest.display(),
        ms = started.elapsed().as_millis() as u64,
        "the ledger was copied before its upgrade"
    );
    prune_upgrade_backups(&dir);
    Ok(Some(dest))
}

/// Removes all but the newest [`KEPT_UPGRADE_BACKUPS`] pre-upgrade copies in `dir`.
fn prune_upgrade_backups(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut copies: Vec<(i64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name
                .strip_prefix("ledger-before-v")?
                .strip_suffix(".db")?
                .parse()
                .ok()?;
            Some((version, e.path()))
        })
        .collect();
    copies.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
    for (_, old) in copies.into_iter().skip(KEPT_UPGRADE_BACKUPS) {
        if let Err(e) = std::fs::remove_file(&old) {
            tracing::warn!(copy = %old.display(), error = %e, "removing an old pre-upgrade copy failed");
        }
    }
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
        return incremental_vacuum(conn);
    }
    if found == 0 {
        // A new ledger gets incremental vacuum before its first table, so it needs no VACUUM.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    let migrations = Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect());
    migrations
        .to_latest(conn)
        .map_err(|e| LedgerError::Migration(e.to_string()))?;
    tracing::info!(from = found, to = SCHEMA_VERSION, "ledger migrated");
    incremental_vacuum(conn)
}

/// `auto_vacuum = INCREMENTAL` lets the housekeeper give the pages of deleted rows back to the
/// file system a few at a time (`PRAGMA incremental_vacuum`). A ledger made before it needs one
/// `VACUUM` to switch, which rewrites the whole file and cannot run inside a transaction, so it
/// runs here, once: the mode is stored in the file's header, which is the record that it was
/// done. When another process holds the ledger (an `admin` command while the server runs) it
/// is left for the next start.
fn incremental_vacuum(conn: &mut Connection) -> Result<(), LedgerError> {
    const INCREMENTAL: i64 = 2;
    let mode: i64 = conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?;
    if mode == INCREMENTAL {
        return Ok(());
    }
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    tracing::info!(
        megabytes = pages * size / 1_000_000,
        "switching the ledger to incremental vacuum: one VACUUM rewrites it"
    );
    let started = std::time::Instant::now();
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    match conn.execute_batch("VACUUM") {
        Ok(()) => {
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "the ledger now uses incremental vacuum"
            );
            Ok(())
        }
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            tracing::warn!(
                "the ledger is in use: switching it to incremental vacuum is left for the next start"
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
