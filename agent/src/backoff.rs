//! How long to wait before the next attempt while the server cannot be reached.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The wait before attempt `failures + 1`: exponential from `base` (doubling per failure),
/// capped at `cap`, with "equal jitter": half of it fixed, half spread by `jitter` (0 to 1), so
/// that a fleet of agents does not come back to a restarted server all at once.
pub fn backoff(failures: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let full = exp.min(cap);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// A number in [0, 1) that differs from call to call: std's hasher keys are random per
/// process and change with each `RandomState`, which is enough for jitter.
pub fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_doubles_then_stops_at_the_cap() {
        let cap = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n, S, cap, 1.0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // Without jitter it is half the full wait; never more than the cap either way.
        assert_eq!(backoff(3, S, cap, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(u32::MAX, S, cap, 1.0), cap);
    }

    #[test]
    fn jitter_spreads_between_zero_and_one() {
        let samples: Vec<f64> = (0..200).map(|_| jitter()).collect();
        assert!(samples.iter().all(|j| (0.0..1.0).contains(j)));
        let distinct = samples
            .iter()
            .map(|j| (j * 10.0) as u32)
            .collect::<std::collections::BTreeSet<_>>();
        assert!(distinct.len() >= 5, "jitter is not spread: {distinct:?}");
    }
}
