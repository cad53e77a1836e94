//! Group commit: many small writes share one transaction.
//!
//! A [`Batcher`] owns a queue and a task that takes everything waiting (up to a batch's size)
//! and writes it in one transaction. [`Batcher::commit`] returns once the item is committed,
//! for writes that must be durable before they are acknowledged; [`Batcher::later`] only
//! queues, for records written after the answer (a read's audit event). Under load this turns
//! one transaction per item into one per batch.
//!
//! The task survives its writes failing or panicking (a panic is caught on the blocking pool
//! and reported to the batch's waiters like an error); it ends when the last handle is dropped.

use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{Ledger, LedgerError};

/// Why an item was not written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    #[error("the {0} writer has stopped")]
    Stopped(&'static str),
    #[error("the {0} writer is behind: its queue is full")]
    Full(&'static str),
    #[error("writing the {what} batch failed: {error}")]
    Write { what: &'static str, error: String },
}

type WriteFn<T> = dyn Fn(&Connection, &[T]) -> Result<(), LedgerError> + Send + Sync;

struct Entry<T> {
    /// `None` is a barrier: its waiter hears once everything queued before it is committed.
    item: Option<T>,
    done: Option<oneshot::Sender<Result<(), BatchError>>>,
}

/// A handle to one group-commit writer. Cheap to clone.
pub struct Batcher<T> {
    name: &'static str,
    tx: mpsc::Sender<Entry<T>>,
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static> Batcher<T> {
    /// Starts the writer on the current runtime. `write` gets a connection inside an open
    /// transaction and the batch, oldest first; the batcher commits.
    pub fn start(
        ledger: Ledger,
        name: &'static str,
        queue: usize,
        max_batch: usize,
        write: impl Fn(&Connection, &[T]) -> Result<(), LedgerError> + Send + Sync + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        tokio::spawn(run(ledger, name, max_batch.max(1), Arc::new(write), rx));
        Self { name, tx }
    }

    /// Writes `item`, returning once it is committed.
    pub async fn commit(&self, item: T) -> Result<(), BatchError> {
        let (done, committed) = oneshot::channel();
        self.tx
            .send(Entry {
                item: Some(item),
                done: Some(done),
            })
            .await
            .map_err(|_| BatchError::Stopped(self.name))?;
        committed
            .await
            .map_err(|_| BatchError::Stopped(self.name))?
    }

    /// Returns once everything queued before the call is committed (or failed): a reader of
    /// what [`Batcher::later`] queued calls it first to see every item queued so far.
    pub async fn flush(&self) -> Result<(), BatchError> {
        let (done, committed) = oneshot::channel();
        self.tx
            .send(Entry {
                item: None,
                done: Some(done),
            })
            .await
            .map_err(|_| BatchError::Stopped(self.name))?;
        committed
            .await
            .map_err(|_| BatchError::Stopped(self.name))?
    }

    /// Queues `item` to be written soon, without waiting. Refused when the queue is full, so a
    /// flood cannot grow memory without bound; the caller decides what a lost record costs.
    pub fn later(&self, item: T) -> Result<(), BatchError> {
        self.tx
            .try_send(Entry {
                item: Some(item),
                done: None,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => BatchError::Full(self.name),
                mpsc::error::TrySendError::Closed(_) => BatchError::Stopped(self.name),
            })
    }
}

async fn run<T: Send + 'static>(
    ledger: Ledger,
    name: &'static str,
    max_batch: usize,
    write: Arc<WriteFn<T>>,
    mut rx: mpsc::Receiver<Entry<T>>,
) {
    let mut entries = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut entries, max_batch).await > 0 {
        let (items, waiters): (Vec<Option<T>>, Vec<_>) =
            entries.drain(..).map(|e| (e.item, e.done)).unzip();
        let items: Vec<T> = items.into_iter().flatten().collect();
        let count = items.len();
        let write = write.clone();
        let result = if items.is_empty() {
            Ok(())
        } else {
            ledger
                .run(move |c| {
                    let tx = c.transaction()?;
                    write(&tx, &items)?;
                    tx.commit()?;
                    Ok(())
                })
                .await
                .map_err(|e| BatchError::Write {
                    what: name,
                    error: e.to_string(),
                })
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, items = count, "a batched write failed");
        }
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.send(result.clone());
        }
    }
}
