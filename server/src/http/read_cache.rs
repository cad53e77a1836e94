//! Answers of hot reads kept as the bytes sent, until the tables they were read from change.
//!
//! A page of `GET /api/v1/apps` is the same bytes for every caller until an app or a
//! deployment changes; dashboards and scripts poll it. Each answer is stamped with the
//! generations of the tables it was read from, taken before the read (`ledger::changes`), and
//! served again only while that stamp holds and it is at most [`MAX_AGE`] old (changes made
//! by other processes run no hooks of ours). The cache holds a few answers and starts over
//! when full.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::body::Bytes;
use rustploy_actors::ledger::changes::{MAX_AGE, Stamp, Table};
use rustploy_actors::ledger::{Ledger, LedgerError};

/// At most this many answers are kept.
const CAPACITY: usize = 16;

struct Entry {
    stamp: Stamp,
    read_at: Instant,
    body: Bytes,
}

#[derive(Default)]
pub struct ReadCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl ReadCache {
    /// The answer stored under `key`, or `load`'s, which is then stored. `load` runs on the
    /// ledger's blocking pool and returns the serialised answer.
    pub async fn get_or_load(
        &self,
        ledger: &Ledger,
        key: String,
        tables: &'static [Table],
        load: impl FnOnce(&mut rusqlite::Connection) -> Result<Vec<u8>, LedgerError> + Send + 'static,
    ) -> Result<Bytes, LedgerError> {
        let stamp = ledger.changes().stamp(tables);
        if let Some(body) = self.fresh(&key, stamp) {
            return Ok(body);
        }
        let body = Bytes::from(ledger.run(load).await?);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                stamp,
                read_at: Instant::now(),
                body: body.clone(),
            },
        );
        Ok(body)
    }

    fn fresh(&self, key: &str, stamp: Stamp) -> Option<Bytes> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|e| e.stamp == stamp && e.read_at.elapsed() <= MAX_AGE)
            .map(|e| e.body.clone())
    }
}
