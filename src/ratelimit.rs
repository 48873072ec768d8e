//! ratelimit: one limiter per bot, shared by all its sessions, that keeps the
//! bot inside Discord's limits before a request is sent, and learns from every
//! answer.
//!
//! Model (Discord's `topics/rate-limits`): a route's bucket is identified by
//! the `X-RateLimit-Bucket` hash Discord sends, plus the route's top-level
//! resource (channel or guild id), because the hash is "non-inclusive of
//! top-level resources". Until a route's hash is known, the route itself is
//! the bucket. A global GCRA keeps every bot under 50 requests per second.
//!
//! Architecture invariants:
//! - the state lock is never held while sleeping: `acquire` computes the wait
//!   under the lock, releases it, sleeps, and tries again;
//! - the limiter never sees a token, only the bot entry that owns it;
//! - time comes through `Clock`, so tests advance time without sleeping;
//! - a response without rate-limit headers means "no known limit", not "wait".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Discord: "All bots can make up to 50 requests per second to our API."
pub const GLOBAL_PER_SECOND: u32 = 50;
/// Bucket state untouched this long is forgotten, so the map does not grow
/// with every channel a bot ever read.
const BUCKET_IDLE_TTL: Duration = Duration::from_secs(300);

/// Where time comes from. Tests use a manual clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
    fn sleep(&self, duration: Duration);
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// A route before its bucket hash is known: the route template (which
/// includes the method) and its top-level resource id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub template: &'static str,
    pub top_level: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum BucketId {
    Route(&'static str),
    Hash(Arc<str>),
}

#[derive(Debug)]
struct Bucket {
    remaining: u32,
    reset_at: Instant,
    last_used: Instant,
}

/// What Discord's rate-limit headers said on one response.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Observed {
    pub bucket: Option<String>,
    pub remaining: Option<u32>,
    pub reset_after: Option<Duration>,
    pub scope: Option<String>,
    pub global: bool,
}

impl Observed {
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Observed {
        let seconds = |name| {
            header(name)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
        };
        Observed {
            bucket: header("x-ratelimit-bucket")
                .filter(|b| !b.is_empty() && b.len() <= 64)
                .map(str::to_string),
            remaining: header("x-ratelimit-remaining").and_then(|v| v.trim().parse().ok()),
            reset_after: seconds("x-ratelimit-reset-after"),
            scope: header("x-ratelimit-scope").map(str::to_string),
            global: header("x-ratelimit-global").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        }
    }
}

#[derive(Debug)]
struct State {
    /// Route template → the bucket hash Discord named for it.
    hashes: HashMap<&'static str, Arc<str>>,
    buckets: HashMap<(BucketId, Option<u64>), Bucket>,
    /// GCRA theoretical arrival time for the global limit.
    global_tat: Option<Instant>,
    /// After a global 429: nothing is sent before this.
    global_blocked_until: Option<Instant>,
}

/// The per-bot limiter.
#[derive(Debug)]
pub struct BotLimiter {
    state: Mutex<State>,
}

impl Default for BotLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl BotLimiter {
    pub fn new() -> Self {
        BotLimiter {
            state: Mutex::new(State {
                hashes: HashMap::new(),
                buckets: HashMap::new(),
                global_tat: None,
                global_blocked_until: None,
            }),
        }
    }

    /// Waits until a request on `route` may be sent and reserves its slot.
    /// Gives up, without waiting, when the wait would end after `deadline`:
    /// `Err` carries how long the caller would have had to wait.
    pub fn acquire(
        &self,
        route: RouteKey,
        clock: &dyn Clock,
        deadline: Instant,
    ) -> Result<(), Duration> {
        loop {
            let now = clock.now();
            let wait = self.try_reserve(route, now);
            if wait.is_zero() {
                return Ok(());
            }
            if now + wait > deadline {
                return Err(wait);
            }
            clock.sleep(wait);
        }
    }

    /// Zero when the request may go now (and its slot is taken), else how
    /// long to wait before asking again.
    fn try_reserve(&self, route: RouteKey, now: Instant) -> Duration {
        let mut state = self.state.lock();
        if let Some(until) = state.global_blocked_until {
            if until > now {
                return until - now;
            }
        }
        let id = bucket_id(&state, route);
        if let Some(bucket) = state.buckets.get_mut(&(id, route.top_level)) {
            if now >= bucket.reset_at {
                // The window passed; the next answer will tell the new state.
                bucket.remaining = u32::MAX;
            } else if bucket.remaining == 0 {
                return bucket.reset_at - now;
            }
        }
        // GCRA: each request moves the theoretical arrival time on by one
        // interval; a burst of up to GLOBAL_PER_SECOND is allowed.
        let interval = Duration::from_secs(1) / GLOBAL_PER_SECOND;
        let tolerance = interval * (GLOBAL_PER_SECOND - 1);
        let tat = state.global_tat.unwrap_or(now).max(now);
        let allowed_at = tat.checked_sub(tolerance).unwrap_or(now);
        if allowed_at > now {
            return allowed_at - now;
        }
        state.global_tat = Some(tat + interval);
        let id = bucket_id(&state, route);
        if let Some(bucket) = state.buckets.get_mut(&(id, route.top_level)) {
            bucket.remaining = bucket.remaining.saturating_sub(1);
            bucket.last_used = now;
        }
        Duration::ZERO
    }

    /// Learns from a response's rate-limit headers.
    pub fn observe(&self, route: RouteKey, seen: &Observed, now: Instant) {
        let mut state = self.state.lock();
        if let Some(hash) = &seen.bucket {
            let known = state
                .hashes
                .get(route.template)
                .is_some_and(|h| **h == **hash);
            if !known {
                let hash: Arc<str> = Arc::from(hash.as_str());
                state.hashes.insert(route.template, hash);
                // Whatever was tracked under the route name is superseded.
                state
                    .buckets
                    .remove(&(BucketId::Route(route.template), route.top_level));
            }
        }
        let (Some(remaining), Some(reset_after)) = (seen.remaining, seen.reset_after) else {
            return;
        };
        let id = bucket_id(&state, route);
        let bucket = state
            .buckets
            .entry((id, route.top_level))
            .or_insert(Bucket {
                remaining,
                reset_at: now + reset_after,
                last_used: now,
            });
        let reset_at = now + reset_after;
        // Answers arrive out of order when requests overlap: keep the lowest
        // remaining count seen for the current window.
        if reset_at > bucket.reset_at + Duration::from_millis(500) || remaining < bucket.remaining {
            bucket.remaining = remaining;
        }
        bucket.reset_at = reset_at;
        bucket.last_used = now;
    }

    /// Learns from a 429: a global one stops the whole bot, any other stops
    /// the route's bucket, for `retry_after`.
    pub fn rate_limited(
        &self,
        route: RouteKey,
        seen: &Observed,
        retry_after: Duration,
        global: bool,
        now: Instant,
    ) {
        let until = now + retry_after;
        let mut state = self.state.lock();
        if global || seen.global || seen.scope.as_deref() == Some("global") {
            state.global_blocked_until = state.global_blocked_until.max(Some(until));
            return;
        }
        if let Some(hash) = &seen.bucket {
            state
                .hashes
                .insert(route.template, Arc::from(hash.as_str()));
        }
        let id = bucket_id(&state, route);
        let bucket = state
            .buckets
            .entry((id, route.top_level))
            .or_insert(Bucket {
                remaining: 0,
                reset_at: until,
                last_used: now,
            });
        bucket.remaining = 0;
        bucket.reset_at = bucket.reset_at.max(until);
        bucket.last_used = now;
    }

    /// Forgets buckets unused for a while. Returns how many remain.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut state = self.state.lock();
        state.buckets.retain(|_, b| {
            now.saturating_duration_since(b.last_used) < BUCKET_IDLE_TTL || b.reset_at > now
        });
        state.buckets.len()
    }
}

fn bucket_id(state: &State, route: RouteKey) -> BucketId {
    match state.hashes.get(route.template) {
        Some(hash) => BucketId::Hash(Arc::clone(hash)),
        None => BucketId::Route(route.template),
    }
}

#[cfg(test)]
pub mod test_clock {
    use super::*;

    /// A clock that only moves when told to (or when something sleeps on it).
    pub struct ManualClock {
        now: Mutex<Instant>,
    }

    impl Default for ManualClock {
        fn default() -> Self {
            Self::new()
        }
    }

    impl ManualClock {
        pub fn new() -> Self {
            ManualClock {
                now: Mutex::new(Instant::now()),
            }
        }
        pub fn advance(&self, by: Duration) {
            *self.now.lock() += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.now.lock()
        }
        fn sleep(&self, duration: Duration) {
            self.advance(duration);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_clock::ManualClock;
    use super::*;

    const MESSAGES: &str = "GET /channels/{channel_id}/messages";

    fn route(top: u64) -> RouteKey {
        RouteKey {
            template: MESSAGES,
            top_level: Some(top),
        }
    }

    fn headers(bucket: &str, remaining: u32, reset_after: f64) -> Observed {
        Observed {
            bucket: Some(bucket.into()),
            remaining: Some(remaining),
            reset_after: Some(Duration::from_secs_f64(reset_after)),
            ..Observed::default()
        }
    }

    #[test]
    fn empty_bucket_waits_until_its_reset() {
        let clock = ManualClock::new();
        let limiter = BotLimiter::new();
        let start = clock.now();
        limiter
            .acquire(route(1), &clock, start + Duration::from_secs(10))
            .unwrap();
        limiter.observe(route(1), &headers("h", 0, 2.5), clock.now());
        limiter
            .acquire(route(1), &clock, start + Duration::from_secs(10))
            .unwrap();
        assert!(clock.now() - start >= Duration::from_millis(2500));
    }

    #[test]
    fn other_top_level_resources_are_not_held_up() {
        let clock = ManualClock::new();
        let limiter = BotLimiter::new();
        let start = clock.now();
        limiter.observe(route(1), &headers("h", 0, 5.0), start);
        limiter.acquire(route(2), &clock, start).unwrap();
        assert_eq!(clock.now(), start);
    }

    #[test]
    fn wait_beyond_the_deadline_is_refused_without_sleeping() {
        let clock = ManualClock::new();
        let limiter = BotLimiter::new();
        let start = clock.now();
        limiter.observe(route(1), &headers("h", 0, 5.0), start);
        let wait = limiter
            .acquire(route(1), &clock, start + Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(5));
        assert_eq!(clock.now(), start);
    }

    #[test]
    fn global_429_stops_every_route_of_the_bot() {
        let clock = ManualClock::new();
        let limiter = BotLimiter::new();
        let start = clock.now();
        limiter.rate_limited(
            route(1),
            &Observed::default(),
            Duration::from_secs(3),
            true,
            start,
        );
        assert!(
            limiter
                .acquire(route(2), &clock, start + Duration::from_secs(1))
                .is_err()
        );
    }

    #[test]
    fn global_limit_admits_50_in_a_burst_then_one_per_20ms() {
        let clock = ManualClock::new();
        let limiter = BotLimiter::new();
        let start = clock.now();
        for n in 0..50 {
            limiter.acquire(route(n), &clock, start).unwrap();
        }
        assert_eq!(clock.now(), start);
        limiter
            .acquire(route(99), &clock, start + Duration::from_secs(1))
            .unwrap();
        assert_eq!(clock.now() - start, Duration::from_millis(20));
    }

    #[test]
    fn routes_sharing_a_hash_share_a_bucket() {
        let clock = ManualClock::new();
        let limiter = BotLimiter::new();
        let start = clock.now();
        let a = RouteKey {
            template: "GET /a",
            top_level: None,
        };
        let b = RouteKey {
            template: "GET /b",
            top_level: None,
        };
        limiter.observe(a, &headers("shared", 0, 4.0), start);
        limiter.observe(b, &headers("shared", 0, 4.0), start);
        assert!(
            limiter
                .acquire(b, &clock, start + Duration::from_secs(1))
                .is_err()
        );
    }

    #[test]
    fn idle_buckets_are_swept() {
        let clock = ManualClock::new();
        let limiter = BotLimiter::new();
        limiter.observe(route(1), &headers("h", 3, 1.0), clock.now());
        clock.advance(BUCKET_IDLE_TTL + Duration::from_secs(1));
        assert_eq!(limiter.sweep(clock.now()), 0);
    }
}
