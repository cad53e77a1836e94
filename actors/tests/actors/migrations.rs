use rustploy_actors::ledger::{
    KEPT_UPGRADE_BACKUPS, Ledger, LedgerConfig, LedgerError, SCHEMA_VERSION, schema_version,
    upgrade_backup_dir,
};

const TABLES: &[&str] = &[
    "apps",
    "app_import_configs",
    "app_env_vars",
    "deployments",
    "deployment_logs",
    "jobs",
    "app_runtimes",
    "domains",
    "managed_services",
    "github_integrations",
    "api_tokens",
    "token_audit_events",
    "users",
    "sessions",
    "password_reset_tokens",
    "agents",
    "agent_heartbeats",
    "webhook_deliveries",
];

#[test]
fn a_fresh_ledger_has_every_table_and_its_pragmas() {
    let t = super::helpers::ledger();
    t.ledger
        .blocking(|c| {
            for table in TABLES {
                let n: i64 = c.query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [table],
                    |r| r.get(0),
                )?;
                assert_eq!(n, 1, "table {table} is missing");
            }
            let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            assert_eq!(mode, "wal");
            let fk: i64 = c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
            assert_eq!(fk, 1);
            let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            assert_eq!(sync, 1, "synchronous should be NORMAL");
            let busy: i64 = c.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?;
            assert!(busy >= 1000, "busy timeout {busy}");
            assert_eq!(schema_version(c)?, SCHEMA_VERSION);
            Ok(())
        })
        .unwrap();
}

#[test]
fn reopening_applies_nothing_and_keeps_data() {
    let t = super::helpers::ledger();
    let path = t.dir.path().join("test.db");
    t.ledger
        .blocking(|c| {
            c.execute(
                "INSERT INTO apps (name, created_at, updated_at) VALUES ('kept', 1, 1)",
                [],
            )?;
            Ok(())
        })
        .unwrap();
    drop(t.ledger);
    // A migration applied twice would fail on CREATE TABLE; the data must still be there.
    let again = Ledger::open(&path, &LedgerConfig::default()).expect("reopen");
    let n: i64 = again
        .blocking(|c| {
            Ok(
                c.query_row("SELECT COUNT(*) FROM apps WHERE name = 'kept'", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn a_ledger_from_a_newer_version_is_refused_with_a_clear_message() {
    let t = super::helpers::ledger();
    let path = t.dir.path().join("test.db");
    t.ledger
        .blocking(|c| Ok(c.pragma_update(None, "user_version", SCHEMA_VERSION + 7)?))
        .unwrap();
    drop(t.ledger);
    let err = Ledger::open(&path, &LedgerConfig::default()).expect_err("must refuse");
    assert!(matches!(err, LedgerError::TooNew { found, .. } if found == SCHEMA_VERSION + 7));
    let msg = err.to_string();
    assert!(msg.contains("newer than this Rustploy supports"), "{msg}");
}

#[test]
fn an_older_ledger_switches_to_incremental_vacuum_once_and_keeps_its_data() {
    use std::os::unix::fs::PermissionsExt;
    let t = super::helpers::ledger();
    let path = t.dir.path().join("test.db");
    drop(t.ledger);
    // What an older version left: no auto vacuum, an earlier schema, and a file others read.
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA auto_vacuum = NONE; VACUUM;
             INSERT INTO apps (name, created_at, updated_at) VALUES ('kept', 1, 1);",
        )
        .unwrap();
        // Version 7: before the retention indexes (8), the credential counter (9), the
        // mark of an app being deleted (10) and the lookup indexes (11).
        c.pragma_update(None, "user_version", 7).unwrap();
        c.execute_batch(
            "DROP TRIGGER jobs_refused_while_app_deleting;
             DROP TRIGGER apps_name_kept_while_deleting;
             ALTER TABLE apps DROP COLUMN deleting_at;
             DROP TRIGGER api_tokens_auth_update; DROP TRIGGER api_tokens_auth_delete;
             DROP TRIGGER users_auth_update; DROP TRIGGER users_auth_delete;
             DROP TABLE auth_epoch;
             DROP INDEX token_audit_events_at; DROP INDEX webhook_deliveries_deployment;
             DROP INDEX webhook_deliveries_duplicate; DROP INDEX deployments_rollback_of;
             DROP INDEX jobs_app_kind;
             DROP INDEX webhook_deliveries_delivery; DROP INDEX agent_transitions_agent;
             DROP INDEX service_backups_service;",
        )
        .unwrap();
        let mode: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, 0);
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Copies left by earlier upgrades: only the newest three are kept.
    let backups = upgrade_backup_dir(&path);
    std::fs::create_dir_all(&backups).unwrap();
    for v in 1..=4 {
        std::fs::write(backups.join(format!("ledger-before-v{v}.db")), b"old").unwrap();
    }
    let again = Ledger::open(&path, &LedgerConfig::default()).expect("reopen");
    let copy = backups.join(format!("ledger-before-v{SCHEMA_VERSION}.db"));
    {
        let c = rusqlite::Connection::open(&copy).expect("the pre-upgrade copy opens");
        let (version, kept): (i64, i64) = (
            c.query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap(),
            c.query_row("SELECT COUNT(*) FROM apps WHERE name = 'kept'", [], |r| {
                r.get(0)
            })
            .unwrap(),
        );
        assert_eq!(
            version, 7,
            "the copy is the ledger as it was before the upgrade"
        );
        assert_eq!(kept, 1);
    }
    let copy_mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(copy_mode, 0o600, "the copy is private");
    let mut left: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut expected = vec![
        "ledger-before-v3.db".to_string(),
        "ledger-before-v4.db".to_string(),
        format!("ledger-before-v{SCHEMA_VERSION}.db"),
    ];
    expected.sort();
    assert_eq!(
        left, expected,
        "the newest {KEPT_UPGRADE_BACKUPS} copies are kept"
    );
    let (mode, kept, version): (i64, i64, i64) = again
        .blocking(|c| {
            Ok((
                c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?,
                c.query_row("SELECT COUNT(*) FROM apps WHERE name = 'kept'", [], |r| {
                    r.get(0)
                })?,
                schema_version(c)?,
            ))
        })
        .unwrap();
    assert_eq!(mode, 2, "auto_vacuum is INCREMENTAL after the open");
    assert_eq!(kept, 1);
    assert_eq!(version, SCHEMA_VERSION);
    let file_mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(file_mode, 0o600, "the ledger is made private");
}

/// The opcodes of `sql` as SQLite compiles it.
fn opcodes(c: &rusqlite::Connection, sql: &str) -> Vec<String> {
    c.prepare(&format!("EXPLAIN {sql}"))
        .unwrap()
        .query_map([], |r| r.get::<_, String>(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn writing_a_row_builds_no_temporary_table_for_its_constraints() {
    // A CHECK (x IN ('a', 'b', 'c')) is checked by building a temporary B-tree of its values
    // on every row written (`OpenEphemeral`); the ledger states its constraints as comparisons.
    let t = super::helpers::ledger();
    t.ledger
        .blocking(|c| {
            // Each table, with the columns its CHECK constraints are about.
            let tables: Vec<(String, Vec<String>)> = c
                .prepare(
                    "SELECT name, sql FROM sqlite_schema WHERE type = 'table'
                      AND name NOT LIKE 'sqlite_%' ORDER BY name",
                )?
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .map(|(table, sql)| {
                    // A new key moves the row, in two passes through a temporary table: keys
                    // are left out.
                    let columns = c
                        .prepare(&format!(
                            "SELECT name FROM pragma_table_info('{table}') WHERE pk = 0"
                        ))
                        .unwrap()
                        .query_map([], |r| r.get::<_, String>(0))
                        .unwrap()
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap()
                        .into_iter()
                        .filter(|column| sql.contains(&format!("CHECK ({column} ")))
                        .collect();
                    (table, columns)
                })
                .collect();
            assert!(tables.len() >= TABLES.len());
            let checked: usize = tables.iter().map(|(_, columns)| columns.len()).sum();
            assert!(checked >= 10, "only {checked} checked columns found");
            for (table, columns) in &tables {
                let insert = format!("INSERT INTO {table} DEFAULT VALUES");
                assert!(
                    !opcodes(c, &insert).contains(&"OpenEphemeral".to_string()),
                    "{insert} builds a temporary table"
                );
                for column in columns {
                    // One row by its key, as the ledger's updates are (a whole table's update
                    // under a trigger goes through a temporary table of its rows).
                    let key: String = c.query_row(
                        &format!("SELECT name FROM pragma_table_info('{table}') WHERE pk = 1"),
                        [],
                        |r| r.get(0),
                    )?;
                    let update = format!("UPDATE {table} SET {column} = {column} WHERE {key} = 1");
                    assert!(
                        !opcodes(c, &update).contains(&"OpenEphemeral".to_string()),
                        "{update} builds a temporary table"
                    );
                }
            }
            // The migration's rewrite is what this tests: the first tables stated the lists.
            let jobs: String = c.query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'jobs'",
                [],
                |r| r.get(0),
            )?;
            assert!(
                jobs.contains("state = 'queued' OR state = 'running'"),
                "{jobs}"
            );
            Ok(())
        })
        .unwrap();
}
