//! Checkpoints off the write path.
//!
//! In WAL mode every commit appends to the `-wal` file, and a checkpoint copies those pages
//! back into the database file and syncs both. SQLite's default runs that checkpoint inside
//! the commit that crosses 1,000 pages, so whichever writer is unlucky (the webhook
//! endpoint's, acknowledging a batch of deliveries, say) waits for two `fsync`s and the copy.
//!
//! Here a commit only notes how long the WAL has grown ([`install`]'s hook, on the committing
//! thread). Once the ledger call that committed has returned, [`Checkpointer::after_call`]
//! wakes the ledger's checkpointer thread when the WAL holds [`SOFT_FRAMES`] more than its
//! last checkpoint copied, and that thread runs a passive checkpoint on its own connection: it
//! takes no lock a writer or a reader waits for. (Under steady writes a passive checkpoint
//! rarely finds the WAL unchanged, so the WAL starts over only in a pause; measured from the
//! last copy, the thread is not woken after every call meanwhile.) A WAL that still reaches
//! [`HARD_FRAMES`] (the thread fell behind, or a long reader held the copy up) is checkpointed
//! by the committing writer, as SQLite would.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use rusqlite::Connection;

/// WAL frames (pages) past which the checkpointer is woken: SQLite's own threshold.
pub const SOFT_FRAMES: i32 = 1000;

/// WAL frames past which the committing writer checkpoints itself (about 64 MiB of 4 KiB
/// pages): the bound on the WAL's size whatever the checkpointer does.
pub const HARD_FRAMES: i32 = 16_000;

thread_local! {
    /// The WAL's length after the last commit on this thread, until a ledger call reads it:
    /// a connection is used by one thread at a time, and its hooks run on that thread.
    static WAL_FRAMES: Cell<i32> = const { Cell::new(0) };
}

/// Replaces a new connection's automatic checkpoint with the note [`Checkpointer`] reads.
pub(super) fn install(conn: &Connection) {
    conn.wal_hook(Some(|wal, frames| {
        WAL_FRAMES.with(|f| f.set(frames));
        if frames >= HARD_FRAMES {
            // Passive: it copies what no reader still needs and never waits. A failure leaves
            // the WAL as it was; the commit itself has happened either way.
            if let Err(e) = wal.checkpoint() {
                tracing::debug!(error = %e, frames, "a writer's own checkpoint did not run");
            }
        }
        Ok(())
    }));
}

/// A ledger's checkpointer: a thread that runs passive checkpoints when woken, and ends when
/// the last handle to the ledger is dropped.
#[derive(Debug)]
pub(super) struct Checkpointer {
    wake: SyncSender<()>,
    /// How many frames of the WAL the last checkpoint copied.
    copied: Arc<AtomicI32>,
}

impl Checkpointer {
    pub(super) fn start(path: &Path) -> std::io::Result<Self> {
        let (wake, woken) = mpsc::sync_channel(1);
        let path = path.to_path_buf();
        let copied = Arc::new(AtomicI32::new(0));
        let shared = copied.clone();
        std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || run(&path, woken, &shared))?;
        Ok(Self { wake, copied })
    }

    /// After a ledger call on this thread: wakes the checkpointer when its commits left
    /// [`SOFT_FRAMES`] or more in the WAL past what the last checkpoint copied (all of them
    /// when the WAL started over since). A wake already waiting stands for this one.
    pub(super) fn after_call(&self) {
        let frames = WAL_FRAMES.with(|f| f.replace(0));
        let copied = self.copied.load(Ordering::Relaxed);
        let uncopied = if frames >= copied {
            frames - copied
        } else {
            frames
        };
        if uncopied >= SOFT_FRAMES {
            match self.wake.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {
                    tracing::warn!("the ledger's checkpointer has stopped; writers checkpoint late")
                }
            }
        }
    }
}

/// How long the checkpointer's connection waits for a lock (a checkpoint only contends with
/// another checkpoint, or with a writer resetting the WAL).
const BUSY: Duration = Duration::from_secs(5);

fn run(path: &Path, woken: Receiver<()>, copied: &AtomicI32) {
    let mut conn: Option<Connection> = None;
    while woken.recv().is_ok() {
        // Opened at the first wake, and again after a failed open.
        let c = match conn {
            Some(ref c) => c,
            None => match Connection::open(path).and_then(|c| c.busy_timeout(BUSY).map(|()| c)) {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tracing::warn!(error = %e, "the ledger's checkpointer cannot open the ledger");
                    continue;
                }
            },
        };
        let done = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i32>(1)?, r.get::<_, i32>(2)?))
        });
        match done {
            Ok((frames, done)) => {
                copied.store(done, Ordering::Relaxed);
                tracing::trace!(frames, copied = done, "ledger checkpoint");
            }
            Err(e) => tracing::debug!(error = %e, "a ledger checkpoint did not run"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Instant;

    /// A WAL-mode connection with the hook, and a table to fill.
    fn hooked(path: &Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE filler (x BLOB);")
            .unwrap();
        install(&c);
        c
    }

    /// Commits a row at a time until the WAL holds at least `frames` frames.
    fn fill(c: &Connection, frames: i32) {
        while WAL_FRAMES.with(Cell::get) < frames {
            c.execute("INSERT INTO filler VALUES (zeroblob(3000))", [])
                .unwrap();
        }
    }

    /// The database file grows only when a checkpoint copies pages into it.
    fn db_len(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    #[test]
    fn a_writer_leaves_the_wal_to_the_checkpointer_until_the_hard_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let c = hooked(&path);
        let before = db_len(&path);
        fill(&c, 2 * SOFT_FRAMES);
        assert_eq!(
            db_len(&path),
            before,
            "a commit checkpointed below the hard bound"
        );
        fill(&c, HARD_FRAMES);
        assert!(
            db_len(&path) > before + 8 * 1024 * 1024,
            "no checkpoint at the hard bound"
        );
    }

    #[test]
    fn a_call_that_grew_the_wal_wakes_the_checkpointer_which_copies_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let c = hooked(&path);
        let checkpointer = Checkpointer::start(&path).unwrap();
        fill(&c, SOFT_FRAMES / 2);
        checkpointer.after_call();
        let small = db_len(&path);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(db_len(&path), small, "woken below the soft bound");
        fill(&c, SOFT_FRAMES / 2);
        fill(&c, SOFT_FRAMES);
        checkpointer.after_call();
        assert_eq!(WAL_FRAMES.with(Cell::get), 0, "the note is read once");
        let deadline = Instant::now() + Duration::from_secs(10);
        while db_len(&path) <= small + 1024 * 1024 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            db_len(&path) > small + 1024 * 1024,
            "the checkpointer copied nothing"
        );
    }
}
