//! In-memory limits on sign-ins and password reset requests.
//!
//! Sign-ins are limited twice. Per client address, ten failures within fifteen minutes make
//! that address wait until the oldest ages out. Per account, the delay grows instead of
//! locking: after [`FREE_FAILURES`] failures each further attempt must wait twice as long as
//! the one before, up to [`MAX_DELAY`]; an attempt after the wait is checked as usual, so an
//! attacker can slow the owner down but never lock them out, and a right password clears the
//! account's count.
//!
//! An attempt is charged when it starts, not when its password turns out wrong: hashing takes
//! a while, and a burst of parallel attempts must not all pass the check before the first
//! failure is counted. A successful one is refunded.
//!
//! Memory is bounded: entries that aged out are dropped when the map is full, and past that
//! the stalest key goes first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed sign-ins an account may have before each attempt has to wait.
pub const FREE_FAILURES: u32 = 5;

/// The longest an account has to wait between attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// An account's failures are forgotten after this long without one.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

const MAX_KEYS: usize = 100_000;

/// How much longer an account with `failures` failed sign-ins, the last one `since` ago, must
/// wait before its next attempt: 2^(failures - 5) seconds after the last failure, at most
/// [`MAX_DELAY`], and nothing for the first [`FREE_FAILURES`].
pub fn account_wait(failures: u32, since: Duration) -> Option<Duration> {
    let over = failures.checked_sub(FREE_FAILURES)?;
    let delay = Duration::from_secs(1u64 << over.min(20)).min(MAX_DELAY);
    delay.checked_sub(since).filter(|d| !d.is_zero())
}

/// Sign-in limits per account and per client address.
pub struct LoginLimiter {
    accounts: Backoff,
    addresses: Window,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self {
            accounts: Backoff::default(),
            addresses: Window::new(10, Duration::from_secs(15 * 60)),
        }
    }
}

impl LoginLimiter {
    /// Charges a sign-in attempt to `account` and `address`, or says how long to wait first.
    pub fn begin(&self, account: &str, address: &str, now: Instant) -> Result<(), Duration> {
        self.addresses.take(address, now)?;
        if let Err(wait) = self.accounts.take(account, now) {
            self.addresses.give_back(address);
            return Err(wait);
        }
        Ok(())
    }

    /// The attempt [`begin`](Self::begin) charged was right: the account starts afresh and
    /// the address gets its attempt back.
    pub fn succeeded(&self, account: &str, address: &str) {
        self.accounts.clear(account);
        self.addresses.give_back(address);
    }
}

/// Password reset requests per account and per client address (mails are sent to the account,
/// so both bound how much mail one person can cause).
pub struct ResetLimiter {
    accounts: Window,
    addresses: Window,
}

impl Default for ResetLimiter {
    fn default() -> Self {
        Self {
            accounts: Window::new(3, Duration::from_secs(3600)),
            addresses: Window::new(10, Duration::from_secs(3600)),
        }
    }
}

impl ResetLimiter {
    /// Counts a reset request, or says how long to wait first.
    pub fn take(&self, account: &str, address: &str, now: Instant) -> Result<(), Duration> {
        self.addresses.take(address, now)?;
        if let Err(wait) = self.accounts.take(account, now) {
            self.addresses.give_back(address);
            return Err(wait);
        }
        Ok(())
    }
}

/// At most `max` events per key within a sliding `window`.
pub struct Window {
    events: Mutex<HashMap<String, VecDeque<Instant>>>,
    max: usize,
    window: Duration,
}

impl Window {
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            events: Mutex::new(HashMap::new()),
            max,
            window,
        }
    }

    /// Records an event for `key`, or, when it is at its limit, says how long until the oldest
    /// event ages out.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut map = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let window = self.window;
            map.retain(|_, v| v.back().is_some_and(|t| now.duration_since(*t) < window));
            if map.len() >= MAX_KEYS {
                evict_stalest(&mut map, |v| v.back().copied());
            }
        }
        let entry = map.entry(key.to_string()).or_default();
        while entry
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            entry.pop_front();
        }
        if entry.len() >= self.max {
            return Err(self.window - now.duration_since(entry[0]));
        }
        entry.push_back(now);
        Ok(())
    }

    /// Takes back the newest event of `key`.
    pub fn give_back(&self, key: &str) {
        let mut map = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get_mut(key) {
            entry.pop_back();
            if entry.is_empty() {
                map.remove(key);
            }
        }
    }
}

/// Failures per key, each attempt past the free ones delayed by [`account_wait`].
#[derive(Default)]
struct Backoff {
    failures: Mutex<HashMap<String, Failures>>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Backoff {
    fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if map.len() >= MAX_KEYS {
                evict_stalest(&mut map, |f| Some(f.last));
            }
        }
        let entry = map.entry(key.to_string()).or_insert(Failures {
            count: 0,
            last: now,
        });
        let since = now.duration_since(entry.last);
        if since >= FORGET_AFTER {
            entry.count = 0;
        }
        if let Some(wait) = account_wait(entry.count, since) {
            return Err(wait);
        }
        entry.count += 1;
        entry.last = now;
        Ok(())
    }

    fn clear(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Drops the key whose latest event is the oldest.
fn evict_stalest<V>(map: &mut HashMap<String, V>, latest: impl Fn(&V) -> Option<Instant>) {
    let stalest = map
        .iter()
        .min_by_key(|(_, v)| latest(v))
        .map(|(k, _)| k.clone());
    if let Some(k) = stalest {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_account_delay_doubles_after_the_free_failures_up_to_the_cap() {
        let cases = [
            (0, S(0), None),
            (4, S(0), None),
            (5, S(0), Some(S(1))),
            (5, S(1), None),
            (6, S(0), Some(S(2))),
            (
                6,
                Duration::from_millis(1500),
                Some(Duration::from_millis(500)),
            ),
            (7, S(3), Some(S(1))),
            (14, S(0), Some(S(512))),
            (15, S(0), Some(MAX_DELAY)),
            (40, S(0), Some(MAX_DELAY)),
            (u32::MAX, S(899), Some(S(1))),
            (u32::MAX, MAX_DELAY, None),
        ];
        for (failures, since, want) in cases {
            assert_eq!(
                account_wait(failures, since),
                want,
                "{failures} failures, {since:?} ago"
            );
        }
    }

    #[test]
    fn an_account_waits_longer_after_each_failure_but_is_never_locked_out() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        // Each attempt from its own address, as a distributed guesser would.
        for i in 0..FREE_FAILURES {
            l.begin("acct", &format!("a{i}"), t0)
                .expect("a free attempt");
        }
        assert_eq!(l.begin("acct", "other", t0), Err(S(1)));
        // A refused attempt does not count, and the next one after the wait goes through.
        l.begin("acct", "owner", t0 + S(1)).expect("after the wait");
        assert_eq!(l.begin("acct", "owner", t0 + S(2)), Err(S(1)));
        l.begin("acct", "owner", t0 + S(3)).expect("after the wait");
        // The owner's right password clears the account.
        l.succeeded("acct", "owner");
        for _ in 0..FREE_FAILURES {
            l.begin("acct", "owner", t0 + S(4)).expect("afresh");
        }
        assert!(l.begin("acct", "owner", t0 + S(4)).is_err());
        // And failures are forgotten after a quiet day.
        l.begin("acct", "owner", t0 + S(4) + FORGET_AFTER)
            .expect("forgotten");
        assert!(l.begin("other acct", "elsewhere", t0).is_ok());
    }

    #[test]
    fn an_address_is_limited_across_accounts_and_successes_are_refunded() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        l.begin("ok", "addr", t0).unwrap();
        l.succeeded("ok", "addr");
        for i in 0..10 {
            l.begin(&format!("acct{i}"), "addr", t0 + S(i)).unwrap();
        }
        assert_eq!(l.begin("acct99", "addr", t0 + S(60)), Err(S(15 * 60 - 60)));
        assert!(l.begin("acct99", "elsewhere", t0 + S(60)).is_ok());
        assert!(l.begin("acct99", "addr", t0 + S(15 * 60)).is_ok());
    }

    #[test]
    fn reset_requests_are_limited_per_account_and_per_address() {
        let l = ResetLimiter::default();
        let t0 = Instant::now();
        for i in 0..3 {
            l.take("me@example.com", &format!("a{i}"), t0).unwrap();
        }
        assert_eq!(l.take("me@example.com", "a9", t0 + S(10)), Err(S(3590)));
        // The refused request did not use up the address's budget.
        for i in 0..10 {
            l.take(&format!("u{i}@example.com"), "a9", t0).unwrap();
        }
        assert!(l.take("u99@example.com", "a9", t0).is_err());
        assert!(l.take("me@example.com", "a0", t0 + S(3600)).is_ok());
    }

    #[test]
    fn a_full_window_map_drops_the_stalest_key() {
        let w = Window::new(1, S(60));
        let t0 = Instant::now();
        let mut map = HashMap::new();
        for i in 0..3u64 {
            map.insert(format!("k{i}"), VecDeque::from([t0 + S(i)]));
        }
        evict_stalest(&mut map, |v: &VecDeque<Instant>| v.back().copied());
        assert!(!map.contains_key("k0"));
        assert_eq!(map.len(), 2);
        w.take("k", t0).unwrap();
        assert!(w.take("k", t0).is_err());
        w.give_back("k");
        assert!(w.take("k", t0).is_ok());
    }
}
