//! API tokens the server has checked recently, so a request with a known token needs no ledger
//! read to authenticate.
//!
//! An entry is trusted only while nothing a credential check depends on has changed: the
//! ledger's `auth_epoch` counter moves (by trigger) when any token is revoked, deleted or
//! changed or any user's role changes, and every entry is stamped with the counter's generation
//! from before its read (`ledger::changes`). Entries also expire with the token itself, and
//! after `changes::MAX_AGE` for changes made by other processes, which run no hooks of ours.

use rustploy_actors::ledger::Millis;
use rustploy_actors::ledger::changes::{Changes, Stamp, StampedCache, Table};

use crate::secrets;

/// What a token check needs from the ledger's row.
pub use rustploy_actors::ledger::access::TokenAuthRow as CheckedToken;

/// At most this many tokens are kept; more than that and the cache starts over.
const CAPACITY: usize = 1024;

pub struct TokenCache {
    entries: StampedCache<CheckedToken>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            entries: StampedCache::new(CAPACITY),
        }
    }
}

/// What the cache knows about a presented token.
pub enum Known {
    /// The token is live and the secret matches.
    Valid(CheckedToken),
    /// The public id is live but the secret does not match, or the token has expired.
    Refused,
    /// Not known (or no longer trusted): read the ledger.
    Unknown,
}

impl TokenCache {
    /// The stamp to read the ledger under, taken before the read.
    pub fn stamp(changes: &Changes) -> Stamp {
        changes.stamp(&[Table::AuthEpoch])
    }

    pub fn check(
        &self,
        changes: &Changes,
        public_id: &str,
        presented: &[u8],
        now: Millis,
    ) -> Known {
        let stamp = Self::stamp(changes);
        self.entries
            .with(public_id, stamp, |token| {
                if token.expires_at.is_some_and(|at| at <= now)
                    || !secrets::hashes_equal(&token.secret_hash, presented)
                {
                    Known::Refused
                } else {
                    Known::Valid(token.clone())
                }
            })
            .unwrap_or(Known::Unknown)
    }

    /// Keeps a live token read under `stamp`.
    pub fn keep(&self, public_id: &str, token: CheckedToken, stamp: Stamp) {
        self.entries.keep(public_id, stamp, token);
    }
}
