//! The token audit log: every token-authenticated request leaves an event. Events of requests
//! that change something are committed before their answer goes out; events of reads are
//! written after it, so a read costs no write on its way. Both go through one group-commit
//! writer (`ledger::batch`), so concurrent requests share a transaction.
//!
//! The same transaction advances the tokens' `last_used_at`, so authenticating a request only
//! reads the ledger.

use rustploy_actors::ledger::batch::{self, BatchError, Batcher, Writer};
use rustploy_actors::ledger::{Ledger, audit};

pub use rustploy_actors::ledger::audit::TokenUse as AuditEvent;

pub struct AuditLog {
    writer: Batcher<AuditEvent>,
}

/// At most this many events share one transaction.
const MAX_BATCH: usize = 512;
/// How long the events of reads (answered already) wait for more before they are written: a
/// busy API then commits a few large transactions a second instead of hundreds of small ones.
/// The event of a request that changes something ends the wait.
const READ_LINGER: std::time::Duration = std::time::Duration::from_millis(5);
/// Events waiting to be written; reads' events beyond it are dropped (and counted).
const QUEUE: usize = 16 * 1024;

impl AuditLog {
    /// The log, and the writer that must run for its events to be written (hosted by a
    /// `BatchWriter` in the actor tree).
    pub fn new(ledger: Ledger) -> (Self, Writer<AuditEvent, ()>) {
        let (handle, inbox) = Batcher::channel("audit", QUEUE);
        let writer = Writer {
            ledger,
            name: "audit",
            max_batch: MAX_BATCH,
            linger: Some(READ_LINGER),
            write: batch::in_transaction(audit::record),
            inbox,
        };
        (Self { writer: handle }, writer)
    }

    /// Records `event`, returning once it is committed.
    pub async fn record(&self, event: AuditEvent) -> Result<(), BatchError> {
        self.writer.commit(event).await
    }

    /// Returns once every event queued so far is committed: the audit log's readers call it,
    /// so a listing shows every request answered before it.
    pub async fn flush(&self) -> Result<(), BatchError> {
        self.writer.flush().await
    }

    /// Queues `event` to be committed shortly, without waiting.
    pub fn record_later(&self, event: AuditEvent) -> Result<(), BatchError> {
        self.writer.later(event)
    }
}
