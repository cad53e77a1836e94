//! Group commit: many small writes share one transaction.
//!
//! A [`Batcher`] is the handle writers hold: [`Batcher::commit`] returns once its item is
//! written (with the item's own result), for writes that must be durable before they are
//! acknowledged; [`Batcher::later`] only queues, for records written after the answer (a
//! read's audit event). A [`Writer`] takes everything waiting (up to a batch's size) and hands
//! it to its write function in one go, on the blocking pool; under load this turns one
//! transaction per item into one per batch. The queue is bounded: a full one refuses, so a
//! flood cannot grow memory without bound.
//!
//! The writer runs hosted by a supervised actor (`crate::batch_writer`), which writes what is
//! still queued when the tree stops. Its loop survives its writes failing or panicking (a
//! panic on the blocking pool is reported to the batch's waiters like an error).

use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{Mutex, mpsc, oneshot};

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

/// Writes one batch, oldest item first, and answers one result per item, in order.
pub type WriteFn<T, R> =
    Arc<dyn Fn(&mut Connection, Vec<T>) -> Vec<Result<R, String>> + Send + Sync>;

/// A write function for items that are written together or not at all: `write` gets a
/// connection inside an open transaction, which is committed when it succeeds.
pub fn in_transaction<T: 'static>(
    write: impl Fn(&Connection, &[T]) -> Result<(), LedgerError> + Send + Sync + 'static,
) -> WriteFn<T, ()> {
    Arc::new(move |c: &mut Connection, items: Vec<T>| {
        let written = (|| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            write(&tx, &items)?;
            tx.commit()?;
            Ok::<_, LedgerError>(())
        })()
        .map_err(|e| e.to_string());
        items.iter().map(|_| written.clone()).collect()
    })
}

/// A write function for items that are written together but fail alone: each item's write
/// runs under its own savepoint in one transaction (see [`each_in_savepoint`]).
pub fn in_savepoints<T: 'static, R: 'static>(
    write: impl Fn(&Connection, &T) -> Result<R, LedgerError> + Send + Sync + 'static,
) -> WriteFn<T, R> {
    Arc::new(move |c: &mut Connection, items: Vec<T>| {
        match each_in_savepoint(c, &items, |sp, item| write(sp, item)) {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map_err(|e| e.to_string()))
                .collect(),
            Err(e) => {
                let why = e.to_string();
                items.iter().map(|_| Err(why.clone())).collect()
            }
        }
    })
}

/// Runs `write` for each item in one immediate transaction (one commit): an item whose write
/// fails is rolled back alone and answered with its error, and the others are kept. Fails as a
/// whole only when the transaction itself does.
///
/// The items are first written together without savepoints, and nearly always that is all: a
/// savepoint copies every page an item changes into its journal before the change, which was
/// half of what recording a burst of deliveries or settling one of pushes cost. Only when an
/// item fails is that transaction rolled back and the batch written again, each item under its
/// own savepoint, so `write` must do the same thing when it is run again on the same ledger
/// (it writes only to the ledger, and decides only from the ledger and the item).
pub fn each_in_savepoint<T, R>(
    conn: &mut Connection,
    items: &[T],
    mut write: impl FnMut(&Connection, &T) -> Result<R, LedgerError>,
) -> Result<Vec<Result<R, LedgerError>>, LedgerError> {
    {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            match write(&tx, item) {
                Ok(r) => results.push(Ok(r)),
                // A lone item's failure is its whole answer: dropping the transaction rolls
                // it back.
                Err(e) if items.len() == 1 => return Ok(vec![Err(e)]),
                // Dropped, so rolled back: the batch is written again below.
                Err(_) => break,
            }
        }
        if results.len() == items.len() {
            tx.commit()?;
            return Ok(results);
        }
    }
    let mut tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let sp = tx.savepoint()?;
        let written = write(&sp, item);
        if written.is_ok() {
            sp.commit()?;
        }
        results.push(written);
    }
    tx.commit()?;
    Ok(results)
}

enum Entry<T, R> {
    Item {
        item: T,
        done: Option<oneshot::Sender<Result<R, BatchError>>>,
    },
    /// Its waiter hears once everything queued before it is written.
    Barrier(oneshot::Sender<Result<(), BatchError>>),
}

impl<T, R> Entry<T, R> {
    /// Whether someone waits for this entry to be written.
    fn awaited(&self) -> bool {
        match self {
            Entry::Item { done, .. } => done.is_some(),
            Entry::Barrier(_) => true,
        }
    }
}

/// A handle to one group-commit writer. Cheap to clone.
pub struct Batcher<T, R = ()> {
    name: &'static str,
    tx: mpsc::Sender<Entry<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            tx: self.tx.clone(),
        }
    }
}

/// The receiving end of a [`Batcher`]'s queue, which its [`Writer`] drains. A writer that is
/// restarted takes the same inbox back, so holders of the handle never see it change.
pub struct Inbox<T, R>(Arc<Mutex<Queue<T, R>>>);

/// What a writer drains: the channel, and the entries taken from it but not yet written (a
/// lingering batch), which a writer stopped meanwhile leaves for `drain`.
struct Queue<T, R> {
    rx: mpsc::Receiver<Entry<T, R>>,
    held: Vec<Entry<T, R>>,
}

impl<T, R> Clone for Inbox<T, R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// A handle and its inbox, holding at most `queue` waiting items.
    pub fn channel(name: &'static str, queue: usize) -> (Self, Inbox<T, R>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let queue = Queue {
            rx,
            held: Vec::new(),
        };
        (Self { name, tx }, Inbox(Arc::new(Mutex::new(queue))))
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Writes `item`, returning its result once its batch is written.
    pub async fn commit(&self, item: T) -> Result<R, BatchError> {
        let (done, written) = oneshot::channel();
        self.send(Entry::Item {
            item,
            done: Some(done),
        })
        .await?;
        written.await.map_err(|_| BatchError::Stopped(self.name))?
    }

    /// Like [`Batcher::commit`], but refused at once when the queue is full, for callers that
    /// would rather answer "busy" than wait.
    pub async fn try_commit(&self, item: T) -> Result<R, BatchError> {
        let (done, written) = oneshot::channel();
        self.tx
            .try_send(Entry::Item {
                item,
                done: Some(done),
            })
            .map_err(|e| self.refusal(e))?;
        written.await.map_err(|_| BatchError::Stopped(self.name))?
    }

    /// Returns once everything queued before the call is written (or failed): a reader of
    /// what [`Batcher::later`] queued calls it first to see every item queued so far.
    pub async fn flush(&self) -> Result<(), BatchError> {
        let (done, written) = oneshot::channel();
        self.send(Entry::Barrier(done)).await?;
        written.await.map_err(|_| BatchError::Stopped(self.name))?
    }

    /// Queues `item` to be written soon, without waiting. Refused when the queue is full; the
    /// caller decides what a lost record costs.
    pub fn later(&self, item: T) -> Result<(), BatchError> {
        self.tx
            .try_send(Entry::Item { item, done: None })
            .map_err(|e| self.refusal(e))
    }

    async fn send(&self, entry: Entry<T, R>) -> Result<(), BatchError> {
        self.tx
            .send(entry)
            .await
            .map_err(|_| BatchError::Stopped(self.name))
    }

    fn refusal(&self, e: mpsc::error::TrySendError<Entry<T, R>>) -> BatchError {
        match e {
            mpsc::error::TrySendError::Full(_) => BatchError::Full(self.name),
            mpsc::error::TrySendError::Closed(_) => BatchError::Stopped(self.name),
        }
    }
}

/// Drains one [`Batcher`]'s inbox into the ledger.
pub struct Writer<T, R> {
    pub ledger: Ledger,
    pub name: &'static str,
    pub max_batch: usize,
    /// How long a batch of items nobody waits for (`later`) waits for more before it is
    /// written: fewer, larger transactions under load. An item someone waits for, or a
    /// `flush`, ends the wait at once, so it costs them nothing.
    pub linger: Option<Duration>,
    pub write: WriteFn<T, R>,
    pub inbox: Inbox<T, R>,
}

impl<T, R> Clone for Writer<T, R> {
    fn clone(&self) -> Self {
        Self {
            ledger: self.ledger.clone(),
            name: self.name,
            max_batch: self.max_batch,
            linger: self.linger,
            write: self.write.clone(),
            inbox: self.inbox.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Writer<T, R> {
    /// Writes batches until every handle is dropped. Only one loop drains an inbox at a time;
    /// another waits for it to end.
    pub async fn run(&self) {
        let mut queue = self.inbox.0.lock().await;
        let Queue { rx, held } = &mut *queue;
        let max = self.max_batch.max(1);
        // What an earlier loop held when it was stopped goes first.
        while !held.is_empty() || rx.recv_many(held, max).await > 0 {
            if let Some(linger) = self.linger
                && !held.iter().any(Entry::awaited)
            {
                let until = tokio::time::Instant::now() + linger;
                while held.len() < max {
                    match tokio::time::timeout_at(until, rx.recv()).await {
                        Ok(Some(entry)) => {
                            let awaited = entry.awaited();
                            held.push(entry);
                            if awaited {
                                break;
                            }
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            self.write_batch(std::mem::take(held)).await;
        }
    }

    /// Writes what is queued now, within `within`, and returns without waiting for more: for a
    /// writer that is stopping while its handles live on.
    pub async fn drain(&self, within: Duration) {
        let drained = tokio::time::timeout(within, async {
            let mut queue = self.inbox.0.lock().await;
            let mut entries = std::mem::take(&mut queue.held);
            while let Ok(entry) = queue.rx.try_recv() {
                entries.push(entry);
            }
            if !entries.is_empty() {
                self.write_batch(entries).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                writer = self.name,
                "queued writes were left unwritten at stop"
            );
        }
    }

    /// Starts the loop as a plain task, for code that runs without the actor tree (tests,
    /// command-line tools).
    pub fn spawn_detached(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move { self.run().await })
    }

    async fn write_batch(&self, entries: Vec<Entry<T, R>>) {
        let mut items = Vec::with_capacity(entries.len());
        let mut waiters = Vec::with_capacity(entries.len());
        let mut barriers = Vec::new();
        for entry in entries {
            match entry {
                Entry::Item { item, done } => {
                    items.push(item);
                    waiters.push(done);
                }
                Entry::Barrier(done) => barriers.push(done),
            }
        }
        let count = items.len();
        let name = self.name;
        let results: Vec<Result<R, BatchError>> = if items.is_empty() {
            Vec::new()
        } else {
            let write = self.write.clone();
            match self.ledger.run(move |c| Ok(write(c, items))).await {
                Ok(results) if results.len() == count => results
                    .into_iter()
                    .map(|r| r.map_err(|error| BatchError::Write { what: name, error }))
                    .collect(),
                Ok(results) => {
                    let error = format!(
                        "the write answered {} results for {count} items",
                        results.len()
                    );
                    failures(name, &error, count)
                }
                Err(e) => failures(name, &e.to_string(), count),
            }
        };
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            tracing::error!(
                writer = name,
                failed,
                items = count,
                "batched writes failed"
            );
        }
        for (waiter, result) in waiters.into_iter().zip(results) {
            if let Some(waiter) = waiter {
                let _ = waiter.send(result);
            }
        }
        for barrier in barriers {
            let _ = barrier.send(Ok(()));
        }
    }
}

fn failures<R>(what: &'static str, error: &str, count: usize) -> Vec<Result<R, BatchError>> {
    (0..count)
        .map(|_| {
            Err(BatchError::Write {
                what,
                error: error.to_string(),
            })
        })
        .collect()
}
