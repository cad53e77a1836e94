//! The SQLite ledger: the durable truth of Rustploy.
//!
//! Everything that must survive a crash is committed here before it is acknowledged. All access
//! goes through [`Ledger::run`], which moves the work onto tokio's blocking pool so that no SQLite
//! call ever runs on an async runtime thread.
//!
//! Statements are prepared once per connection (`prepare_cached`) and must stay prepared: SQLite
//! prepares a statement again on every run when the planner looked at one of its bound values.
//! So a bound `LIMIT` or `OFFSET` is written `CAST(?n AS INTEGER)` (a bare parameter there is
//! read by the planner), and a value compared with a partial index's own is a literal. The
//! test `actors/tests/actors/query_plans.rs` runs every statement and holds both rules.

pub mod access;
pub mod agents;
pub mod apps;
pub mod audit;
pub mod batch;
pub mod changes;
mod checkpoint;
pub mod deployments;
pub mod domains;
pub mod env;
pub mod inspect;
pub mod jobs;
mod migrate;
pub mod push_heads;
pub mod retention;
pub mod services;
pub mod trust;
pub mod webhooks;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

pub use migrate::{KEPT_UPGRADE_BACKUPS, SCHEMA_VERSION, schema_version, upgrade_backup_dir};

/// Milliseconds since the Unix epoch: the unit of every timestamp in the ledger.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("could not get a database connection: {0}")]
    Pool(#[from] r2d2::Error),
    #[error(
        "the database at {path} has schema version {found}, newer than this Rustploy supports ({supported}); \
         run a newer Rustploy or restore a backup made by this version"
    )]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("migrating the database failed: {0}")]
    Migration(String),
    #[error("a ledger task was lost: {0}")]
    Join(String),
    #[error("{0}")]
    Invalid(String),
}

/// Tunables of the connection pool; the defaults suit one control plane on a small host.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    pub max_connections: u32,
    pub busy_timeout: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            max_connections: 8,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// A pool of SQLite connections to one ledger file. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    pool: r2d2::Pool<SqliteConnectionManager>,
    changes: Arc<changes::Changes>,
    checkpointer: Arc<checkpoint::Checkpointer>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path` and applies pending migrations.
    /// This blocks: call it before the runtime starts or from a blocking context.
    pub fn open(path: &Path, config: &LedgerConfig) -> Result<Self, LedgerError> {
        private_files(path)?;
        let busy_ms = config.busy_timeout.as_millis();
        let changes = Arc::new(changes::Changes::default());
        let watcher = changes.clone();
        let manager = SqliteConnectionManager::file(path).with_init(move |c| {
            watcher.watch(c)?;
            // The actors and the server use about forty distinct cached statements.
            c.set_prepared_statement_cache_capacity(64);
            // Before anything else touches a new file: auto vacuum only takes on a file
            // without tables (an existing ledger is switched once by `migrate`, with VACUUM).
            // Temporary storage in memory: a savepoint's journal of the pages it changed
            // otherwise goes to a temporary file past 64 KiB, one write call per page, which
            // was a twentieth of the webhook intake's work in a burst.
            c.execute_batch(&format!(
                "PRAGMA auto_vacuum = INCREMENTAL;
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 PRAGMA foreign_keys = ON;
                 PRAGMA busy_timeout = {busy_ms};
                 PRAGMA cache_size = -2000;
                 PRAGMA temp_store = MEMORY;"
            ))?;
            checkpoint::install(c);
            Ok(())
        });
        let pool = r2d2::Pool::builder()
            // A connection to a local file does not go stale the way a network one does; the
            // check would run a statement on every checkout, that is on every ledger call.
            .test_on_check_out(false)
            .max_size(config.max_connections)
            .min_idle(Some(1))
            .connection_timeout(config.busy_timeout)
            .build(manager)?;
        let mut conn = pool.get()?;
        migrate::back_up_before_upgrade(&conn, path)?;
        migrate::apply(&mut conn, &path.display().to_string())?;
        drop(conn);
        let checkpointer = checkpoint::Checkpointer::start(path).map_err(|e| {
            LedgerError::Invalid(format!("cannot start the ledger's checkpointer: {e}"))
        })?;
        // The migration's own commits may have grown the WAL.
        checkpointer.after_call();
        Ok(Self {
            pool,
            changes,
            checkpointer: Arc::new(checkpointer),
        })
    }

    /// The per-table generations caches check what they keep against.
    pub fn changes(&self) -> &changes::Changes {
        &self.changes
    }

    /// Runs `f` with a pooled connection on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        F: FnOnce(&mut Connection) -> Result<T, LedgerError> + Send + 'static,
        T: Send + 'static,
    {
        let ledger = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = ledger.pool.get()?;
            let result = f(&mut conn);
            ledger.after_call();
            result
        })
        .await
        .map_err(|e| LedgerError::Join(e.to_string()))?
    }

    /// Runs `f` on the calling thread. For command-line tools and code already off the runtime.
    pub fn blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let mut conn = self.pool.get()?;
        let result = f(&mut conn);
        self.after_call();
        result
    }

    /// After a call's work has returned (committed or rolled back), on its thread: advances
    /// what it changed for the caches, and wakes the checkpointer when its commits grew the WAL.
    fn after_call(&self) {
        self.changes.settle();
        self.checkpointer.after_call();
    }

    /// Proves the ledger answers: a connection from the pool reads the schema version. It only
    /// reads, so a readiness probe that anyone may call often never takes the write lock (in
    /// WAL mode a reader neither waits for a writer nor holds one up).
    pub async fn check_readable(&self) -> Result<(), LedgerError> {
        self.run(|c| {
            c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }

    /// Copies the live database to `dest` (which must not exist) with SQLite's online backup
    /// API. The copy holds everything the ledger does, so it is created readable by its owner
    /// only.
    pub fn backup_to(&self, dest: &Path) -> Result<(), LedgerError> {
        crate::files::create_private_file(dest)
            .map_err(|e| LedgerError::Invalid(format!("cannot create {}: {e}", dest.display())))?;
        let conn = self.pool.get()?;
        let mut out = Connection::open(dest)?;
        let backup = rusqlite::backup::Backup::new(&conn, &mut out)?;
        backup.run_to_completion(256, Duration::from_millis(5), None)?;
        Ok(())
    }
}

/// Makes the ledger file 0600 before SQLite opens it: a new one is created so, and one an older
/// version left readable is tightened. SQLite gives the `-wal` and `-shm` files the mode of the
/// database file, so they follow; the ones already there are tightened too.
fn private_files(path: &Path) -> Result<(), LedgerError> {
    let io = |p: &Path, e: std::io::Error| {
        LedgerError::Invalid(format!(
            "cannot secure the ledger file {}: {e}",
            p.display()
        ))
    };
    match crate::files::create_private_file(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(path, e)),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = std::path::PathBuf::from(name);
        if crate::files::tighten(&file).map_err(|e| io(&file, e))? {
            tracing::warn!(file = %file.display(), "the ledger file was readable by others; it is now 0600");
        }
    }
    Ok(())
}
