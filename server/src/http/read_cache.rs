//! Answers of hot reads kept as the bytes sent, until the tables they were read from change.
//!
//! A page of `GET /api/v1/apps` is the same bytes for every caller until an app or a
//! deployment changes; dashboards and scripts poll it. Each answer is stamped with the
//! generations of the tables it was read from, taken before the read (`ledger::changes`), and
//! served again only while that stamp holds and it is at most `changes::MAX_AGE` old (changes made
//! by other processes run no hooks of ours). The cache holds a few answers and starts over
//! when full.

use axum::body::Bytes;
use rustploy_actors::ledger::changes::{StampedCache, Table};
use rustploy_actors::ledger::{Ledger, LedgerError};

/// At most this many answers are kept.
const CAPACITY: usize = 16;

pub struct ReadCache {
    answers: StampedCache<Bytes>,
}

impl Default for ReadCache {
    fn default() -> Self {
        Self {
            answers: StampedCache::new(CAPACITY),
        }
    }
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
        if let Some(body) = self.answers.get(&key, stamp) {
            return Ok(body);
        }
        let body = Bytes::from(ledger.run(load).await?);
        self.answers.keep(&key, stamp, body.clone());
        Ok(body)
    }
}
