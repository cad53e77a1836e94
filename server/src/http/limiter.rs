//! Counts failed logins per account and per client address, in memory.
//!
//! Ten failures within fifteen minutes lock that key until the oldest failure ages out. Memory
//! is bounded: keys whose failures all aged out are dropped on each check, and the map is
//! capped (the oldest keys go first).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LoginLimiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
    max_failures: usize,
    window: Duration,
}

const MAX_KEYS: usize = 100_000;

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(10, Duration::from_secs(15 * 60))
    }
}

impl LoginLimiter {
    pub fn new(max_failures: usize, window: Duration) -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
            max_failures,
            window,
        }
    }

    /// How long `key` must wait, if it is locked now.
    pub fn locked_for(&self, key: &str, now: Instant) -> Option<Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.get_mut(key)?;
        while entry
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            entry.pop_front();
        }
        if entry.is_empty() {
            map.remove(key);
            return None;
        }
        (entry.len() >= self.max_failures).then(|| self.window - now.duration_since(entry[0]))
    }

    pub fn record_failure(&self, key: &str, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let window = self.window;
            map.retain(|_, v| v.back().is_some_and(|t| now.duration_since(*t) < window));
            if map.len() >= MAX_KEYS {
                return;
            }
        }
        let entry = map.entry(key.to_string()).or_default();
        entry.push_back(now);
        while entry.len() > self.max_failures {
            entry.pop_front();
        }
    }

    pub fn clear(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_the_limit_and_unlocks_when_failures_age_out() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(l.locked_for("k", t0), None, "attempt {i}");
            l.record_failure("k", t0 + Duration::from_secs(i));
        }
        let wait = l
            .locked_for("k", t0 + Duration::from_secs(10))
            .expect("locked");
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(l.locked_for("other", t0), None);
        assert_eq!(l.locked_for("k", t0 + Duration::from_secs(61)), None);
        l.record_failure("k", t0);
        l.clear("k");
        assert_eq!(l.locked_for("k", t0), None);
    }
}
