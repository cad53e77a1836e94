//! A memory budget in bytes, shared by every webhook body being read or waiting to be checked.
//!
//! The webhook endpoint is public and takes bodies of up to 25 MiB, so without a bound a crowd
//! of large requests makes the server hold gigabytes before it can refuse any of them. Each
//! body reserves its bytes here before they are read (the declared `Content-Length` at once,
//! or chunk by chunk when there is none) and gives them back when its delivery was checked and
//! recorded. A request that does not fit is answered 503 without reading its body.
//!
//! Large bodies may fill only part of the budget ([`Budget::large_share`]): the rest stays for
//! small ones, so a flood of large (forged) bodies cannot starve GitHub's real deliveries, which
//! are a few kilobytes.

use std::sync::{Arc, Mutex};

/// Bodies up to this size count as small: they may use the whole budget.
pub const SMALL: usize = 1024 * 1024;

#[derive(Debug)]
pub struct Budget {
    total: usize,
    used: Mutex<usize>,
}

/// Bytes taken from a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Budget {
    pub fn new(total: usize) -> Arc<Self> {
        Arc::new(Self {
            total,
            used: Mutex::new(0),
        })
    }

    /// The most that large bodies may hold together: three quarters of the budget.
    pub fn large_share(&self) -> usize {
        self.total - self.total / 4
    }

    /// The largest body this budget can ever take.
    pub fn largest(&self) -> usize {
        self.large_share().max(SMALL.min(self.total))
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        *self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty reservation, to grow as a body streams in.
    pub fn empty(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// Reserves `bytes` for one body, or `None` when they do not fit now.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut r = self.empty();
        r.grow_to(bytes).then_some(r)
    }

    /// Takes `more` bytes for a body that then holds `size` in all, if they fit its class.
    fn take(&self, more: usize, size: usize) -> bool {
        let limit = if size > SMALL {
            self.large_share()
        } else {
            self.total
        };
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.saturating_add(more) > limit {
            return false;
        }
        *used += more;
        true
    }

    fn give_back(&self, bytes: usize) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(bytes);
    }
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows the reservation to `size` bytes in all; false (and unchanged) when they do not fit.
    pub fn grow_to(&mut self, size: usize) -> bool {
        if size <= self.bytes {
            return true;
        }
        if !self.budget.take(size - self.bytes, size) {
            return false;
        }
        self.bytes = size;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn reservations_fit_the_budget_and_are_given_back_when_dropped() {
        let b = Budget::new(8 * MIB);
        assert_eq!(b.large_share(), 6 * MIB);
        let first = b.reserve(4 * MIB).expect("4 of 6 MiB for large bodies");
        assert!(b.reserve(3 * MIB).is_none(), "7 MiB of large bodies");
        let second = b.reserve(2 * MIB).expect("exactly the large share");
        assert_eq!(b.used(), 6 * MIB);
        // Small bodies still fit in the quarter kept for them.
        let small: Vec<Reservation> = (0..2).map(|_| b.reserve(MIB).expect("small")).collect();
        assert_eq!(b.used(), 8 * MIB);
        assert!(b.reserve(1).is_none(), "the budget is full");
        drop(first);
        assert_eq!(b.used(), 4 * MIB);
        assert!(b.reserve(3 * MIB).is_none(), "still over the large share");
        drop((second, small));
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_streamed_body_grows_into_a_large_one_within_the_large_share() {
        let b = Budget::new(4 * MIB);
        let mut r = b.empty();
        assert!(r.grow_to(MIB));
        assert!(r.grow_to(3 * MIB), "the large share is 3 MiB");
        assert!(!r.grow_to(3 * MIB + 1));
        assert_eq!(r.bytes(), 3 * MIB, "a refused growth changes nothing");
        assert!(r.grow_to(2 * MIB), "shrinking never fails");
        drop(r);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn the_largest_body_is_the_large_share_but_never_less_than_a_small_body() {
        assert_eq!(Budget::new(64 * MIB).largest(), 48 * MIB);
        assert_eq!(Budget::new(MIB).largest(), MIB);
    }
}
