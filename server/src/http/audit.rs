//! The audit writer: token-authenticated requests record an audit event before their answer
//! goes out, and concurrent requests share one transaction (group commit). Under load this
//! turns one write transaction per request into one per batch, without giving up durability:
//! each request still waits until its own event is committed.
//!
//! The same transaction advances the tokens' `last_used_at`, so authenticating a request only
//! reads the ledger.

use std::collections::HashMap;

use rusqlite::params;
use rustploy_actors::ledger::Ledger;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub token_id: i64,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub client_addr: Option<String>,
    pub at: i64,
}

type Waiter = oneshot::Sender<Result<(), String>>;

pub struct AuditLog {
    tx: mpsc::Sender<(AuditEvent, Waiter)>,
}

/// At most this many events share one transaction.
const MAX_BATCH: usize = 512;

impl AuditLog {
    /// Starts the writer task on the current runtime.
    pub fn start(ledger: Ledger) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(write_batches(ledger, rx));
        Self { tx }
    }

    /// Records `event`, returning once it is committed.
    pub async fn record(&self, event: AuditEvent) -> Result<(), String> {
        let (done, committed) = oneshot::channel();
        self.tx
            .send((event, done))
            .await
            .map_err(|_| "the audit writer has stopped".to_string())?;
        committed
            .await
            .map_err(|_| "the audit writer has stopped".to_string())?
    }
}

async fn write_batches(ledger: Ledger, mut rx: mpsc::Receiver<(AuditEvent, Waiter)>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let events: Vec<AuditEvent> = batch.iter().map(|(e, _)| e.clone()).collect();
        let result = ledger
            .run(move |c| {
                let tx = c.transaction()?;
                let mut last_used: HashMap<i64, i64> = HashMap::new();
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO token_audit_events (token_id, method, path, status, client_addr, at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    for e in &events {
                        insert.execute(params![e.token_id, e.method, e.path, e.status, e.client_addr, e.at])?;
                        let t = last_used.entry(e.token_id).or_default();
                        *t = (*t).max(e.at);
                    }
                    let mut touch = tx.prepare_cached(
                        "UPDATE api_tokens SET last_used_at = MAX(COALESCE(last_used_at, 0), ?2) WHERE id = ?1",
                    )?;
                    for (token, at) in last_used {
                        touch.execute(params![token, at])?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, events = batch.len(), "writing audit events failed");
        }
        for (_, waiter) in batch {
            let _ = waiter.send(result.clone());
        }
    }
}
