//! backoff: how long to wait before connecting again, and the randomness
//! the Gateway's rules ask for.
//!
//! Why it exists: many bots on one host lose their connections together (a
//! network blip, a Discord restart); waiting a fixed time would bring them
//! back together too. Full jitter (a uniform wait between zero and an
//! exponentially growing cap) spreads them out, and the first heartbeat's
//! `interval × random` does the same for heartbeats (GW L146).
//!
//! Invariant: the random numbers are for spreading load only, never for
//! anything secret (they come from std's `RandomState`, not a CSPRNG API).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A uniform random number in [0, 1).
pub fn fraction() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS once per thread and varied per
    // instance; hashing a counter makes each call different.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits = RandomState::new().hash_one(n);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// A uniform wait in [low, high].
pub fn between(low: Duration, high: Duration) -> Duration {
    low + high.saturating_sub(low).mul_f64(fraction())
}

/// Full-jitter exponential backoff: `attempt` 0 waits up to `base`, each
/// further attempt doubles that, never past `cap`.
pub fn full_jitter(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .checked_mul(1u32 << attempt.min(20))
        .unwrap_or(cap)
        .min(cap);
    ceiling.mul_f64(fraction())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_are_in_range_and_vary() {
        let all: Vec<f64> = (0..1000).map(|_| fraction()).collect();
        assert!(all.iter().all(|f| (0.0..1.0).contains(f)));
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        for attempt in 0..40 {
            let ceiling = Duration::from_secs(1 << attempt.min(6)).min(cap);
            assert!(full_jitter(attempt, base, cap) <= ceiling);
        }
    }
}
