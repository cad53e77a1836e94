use std::future::Future;
use std::time::Duration;

use rusqlite::Connection;
use rustploy_actors::ledger::{Ledger, LedgerConfig, LedgerError};
use tempfile::TempDir;

/// A ledger in its own temporary directory, removed when dropped.
pub struct TestLedger {
    pub ledger: Ledger,
    pub dir: TempDir,
}

pub fn ledger() -> TestLedger {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger =
        Ledger::open(&dir.path().join("test.db"), &LedgerConfig::default()).expect("open ledger");
    TestLedger { ledger, dir }
}

/// Polls `check` every 20 ms until it returns true, failing with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An app `web` (id 1) connected to GitHub's `octo/shop` at `main`.
pub fn connected_app(c: &Connection) -> Result<(), LedgerError> {
    c.execute(
        "INSERT INTO apps (id, name, created_at, updated_at) VALUES (1, 'web', 1, 1)",
        [],
    )?;
    c.execute(
        "INSERT INTO github_integrations (app_id, owner, repo, branch, secret_enc, created_at)
         VALUES (1, 'octo', 'shop', 'main', x'00', 1)",
        [],
    )?;
    Ok(())
}
