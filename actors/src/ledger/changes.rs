//! What changed in the ledger: a generation number per table, advanced whenever a write on one
//! of the ledger's connections changes a row of that table.
//!
//! Caches in front of the ledger (the server's token and read caches) stamp what they read
//! with [`Changes::stamp`] taken *before* the read, and trust it while the stamp stays the
//! same. SQLite's update hook advances a table's generation as a row changes (before the
//! commit), and [`super::Ledger::run`] advances it again once the closure that wrote has
//! returned (after the commit): a read that raced a commit is stamped with a generation that
//! moves again after the commit, so nothing stale outlives the write that made it stale.
//!
//! Other processes (an `admin` command, `sqlite3`) do not run our hooks: caches also bound the
//! age of what they keep (see [`MAX_AGE`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a cache may trust what it read, for the writes no hook sees.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// The tables caches watch; every other table counts as [`Table::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Table {
    /// Moved by triggers when a token or user changes in a way a credential check sees.
    AuthEpoch,
    Apps,
    Deployments,
    Domains,
    GithubIntegrations,
    Other,
}

const TABLES: usize = Table::Other as usize + 1;

impl Table {
    fn of(name: &str) -> Table {
        match name {
            "auth_epoch" => Table::AuthEpoch,
            "apps" => Table::Apps,
            "deployments" => Table::Deployments,
            "domains" => Table::Domains,
            "github_integrations" => Table::GithubIntegrations,
            _ => Table::Other,
        }
    }

    fn bit(self) -> u64 {
        1 << (self as u8)
    }
}

/// The generations of one ledger. Shared by its connections' hooks and its readers.
#[derive(Debug, Default)]
pub struct Changes {
    generations: [AtomicU64; TABLES],
}

/// A summary of the generations of some tables at one moment: equal stamps mean none of those
/// tables changed in between (generations only grow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(u64);

thread_local! {
    /// Tables changed on this thread since the last [`settle`]: a connection is used by one
    /// thread at a time, and its hooks run on that thread.
    static DIRTY: Cell<u64> = const { Cell::new(0) };
}

impl Changes {
    pub fn stamp(&self, tables: &[Table]) -> Stamp {
        Stamp(
            tables
                .iter()
                .map(|t| self.generations[*t as usize].load(Ordering::Acquire))
                .fold(0u64, u64::wrapping_add),
        )
    }

    fn bump(&self, mask: u64) {
        for (i, generation) in self.generations.iter().enumerate() {
            if mask & (1 << i) != 0 {
                generation.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Installs the hook on a new connection.
    pub(super) fn watch(self: &Arc<Self>, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        let changes = self.clone();
        conn.update_hook(Some(move |_action, _db: &str, table: &str, _row| {
            let t = Table::of(table);
            changes.bump(t.bit());
            DIRTY.with(|d| d.set(d.get() | t.bit()));
        }))
    }

    /// Advances, once more, the tables this thread changed: called after the work that wrote
    /// has returned, so after its commit (or rollback).
    pub(super) fn settle(&self) {
        let mask = DIRTY.with(|d| d.replace(0));
        if mask != 0 {
            self.bump(mask);
        }
    }
}

/// What a cache in front of the ledger keeps: values by key, each with the [`Stamp`] taken
/// before it was read and when it was kept. A value is given back only while its stamp holds
/// and for at most [`MAX_AGE`]. At most `capacity` keys are kept; past that it starts over.
pub struct StampedCache<V> {
    capacity: usize,
    entries: Mutex<HashMap<String, Stamped<V>>>,
}

struct Stamped<V> {
    stamp: Stamp,
    kept_at: Instant,
    value: V,
}

impl<V> StampedCache<V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::default(),
        }
    }

    /// `look` at the value kept under `key`, if it is still to be trusted under `stamp`.
    pub fn with<R>(&self, key: &str, stamp: Stamp, look: impl FnOnce(&V) -> R) -> Option<R> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|e| e.stamp == stamp && e.kept_at.elapsed() <= MAX_AGE)
            .map(|e| look(&e.value))
    }

    /// Keeps `value`, read under `stamp` (taken before the read).
    pub fn keep(&self, key: &str, stamp: Stamp, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(key) {
            entries.clear();
        }
        entries.insert(
            key.to_string(),
            Stamped {
                stamp,
                kept_at: Instant::now(),
                value,
            },
        );
    }
}

impl<V: Clone> StampedCache<V> {
    /// The value kept under `key`, if it is still to be trusted under `stamp`.
    pub fn get(&self, key: &str, stamp: Stamp) -> Option<V> {
        self.with(key, stamp, V::clone)
    }
}
