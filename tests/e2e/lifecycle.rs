//! The server's life cycle on the host: graceful stop, online backup, and refusing a ledger
//! written by a newer version.

use std::time::{Duration, Instant};

use rustploy_e2e::{Sandbox, poll};
use serde_json::json;

/// Long enough for a graceful stop with nothing to wait for, short enough to catch a hang.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn sigterm_stops_an_idle_server_with_exit_code_zero() {
    let sandbox = Sandbox::new();
    let mut server = sandbox.start(&[]);
    server
        .api(None)
        .get("/healthz")
        .expect_status(200, "health before stopping");

    let asked = Instant::now();
    server.wait_until_catching(libc::SIGTERM);
    server.signal(libc::SIGTERM);
    let status = server
        .wait_timeout(STOP_TIMEOUT)
        .unwrap_or_else(|| panic!("the server did not exit within {STOP_TIMEOUT:?} of SIGTERM"));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    eprintln!("idle server stopped {:?} after SIGTERM", asked.elapsed());

    // The lock is released with the process, so the data directory can be served again.
    let again = sandbox.start(&[]);
    again
        .api(None)
        .get("/healthz")
        .expect_status(200, "health after a restart");
}

/// A job still running at SIGTERM is given back to the queue (its attempt not counted), so a
/// planned stop never costs a job an attempt or leaves it stranded as `running`.
#[test]
fn sigterm_gives_running_jobs_back_and_exits_zero() {
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let token = sandbox.create_token("e2e", "admin");
    let mut server = sandbox.start(&["--shutdown-grace-secs", "4"]);
    let api = server.api(Some(&token));
    let reply = api
        .post(
            "/api/v1/jobs",
            &json!({ "kind": "noop", "count": 1, "sleep_ms": 600000 }),
        )
        .expect_status(202, "enqueueing a long job");
    let id = reply.body["ids"][0].as_i64().expect("a job id");
    poll(
        "the long job to run",
        Duration::from_secs(15),
        Duration::from_millis(20),
        || {
            let j = api
                .get(&format!("/api/v1/jobs/{id}"))
                .expect_status(200, "job");
            if j.body["state"] == "running" {
                Ok(())
            } else {
                Err(j.text)
            }
        },
    );

    server.wait_until_catching(libc::SIGTERM);
    server.signal(libc::SIGTERM);
    let status = server
        .wait_timeout(STOP_TIMEOUT)
        .unwrap_or_else(|| panic!("the server did not exit within {STOP_TIMEOUT:?} of SIGTERM"));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );

    let (state, attempts, locked_by): (String, i64, Option<String>) = sandbox
        .open_ledger()
        .query_row(
            "SELECT state, attempts, locked_by FROM jobs WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(state, "queued", "the interrupted job must be queued again");
    assert_eq!(attempts, 0, "a planned stop must not use up an attempt");
    assert_eq!(
        locked_by, None,
        "the job must not stay leased to a stopped worker"
    );
}

/// `backup` copies the live ledger while the server runs, and the copy is a complete SQLite
/// database with the jobs the server had accepted.
#[test]
fn backup_of_a_running_server_is_a_complete_sqlite_database() {
    let sandbox = Sandbox::new();
    sandbox.migrate();
    let token = sandbox.create_token("e2e", "admin");
    let server = sandbox.start(&[]);
    server
        .api(Some(&token))
        .post("/api/v1/jobs", &json!({ "kind": "noop", "count": 3 }))
        .expect_status(202, "enqueueing jobs");

    let dest = sandbox.tmp.path().join("backup.db");
    let out = sandbox.run(&["backup", dest.to_str().unwrap()]);
    out.assert_success("backup while the server runs");

    let bytes = std::fs::read(&dest).expect("the backup file exists");
    assert!(
        bytes.starts_with(b"SQLite format 3\0"),
        "the backup does not start with the SQLite header"
    );
    let copy =
        rusqlite::Connection::open_with_flags(&dest, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let integrity: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let has_jobs: i64 = copy
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(has_jobs, 1, "the backup has no jobs table");
    let jobs: i64 = copy
        .query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jobs, 3, "the backup must hold the jobs the server accepted");
    let tokens: i64 = copy
        .query_row("SELECT COUNT(*) FROM api_tokens", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        tokens, 1,
        "the backup must hold the token created before it"
    );
    let version: i64 = copy
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert!(version >= 1, "the backup must carry the schema version");
}

/// A ledger from a newer Rustploy is refused, not downgraded or half-read, and left untouched.
#[test]
fn a_ledger_with_a_newer_schema_is_refused() {
    let sandbox = Sandbox::new();
    sandbox.migrate();
    sandbox
        .open_ledger()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();

    let out = sandbox.run(&["serve", "--listen", "127.0.0.1:0"]);
    let line = out.assert_one_line_error("serve on a newer ledger", 1);
    assert!(line.contains("newer"), "{line}");

    let out = sandbox.run(&["migrate"]);
    let line = out.assert_one_line_error("migrate on a newer ledger", 1);
    assert!(line.contains("newer"), "{line}");

    let out = sandbox.run(&["admin", "create-token", "--name", "x", "--scopes", "read"]);
    out.assert_one_line_error("admin on a newer ledger", 1);

    let version: i64 = sandbox
        .open_ledger()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 99, "the refused ledger must be left as it was");
}
