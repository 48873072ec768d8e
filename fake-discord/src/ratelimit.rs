//! Discord-style rate limiting: per-route buckets and a per-bot global limit.
//!
//! Why it exists: the service under test must learn limits from headers and
//! respect them; a fake that enforces nothing would let a broken limiter pass.
//! The model follows `developers/topics/rate-limits.mdx`:
//! - a bucket is keyed by (token, bucket hash, top-level resource id), because
//!   `X-RateLimit-Bucket` is "non-inclusive of top-level resources";
//! - a bucket allows `route_limit` requests per fixed window that opens at the
//!   first request after the previous window ended;
//! - on top of that a bot may make at most `global_limit` requests in any
//!   rolling second;
//! - a request refused with 429 is not counted against either limit.
//!
//! Invariants: every decision takes `now` from the caller (tests pass
//! synthetic instants, nothing here reads the clock or sleeps), and the whole
//! check-then-count step happens under one lock, so concurrent requests can
//! never overshoot a limit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The rolling window of the global limit.
const GLOBAL_WINDOW: Duration = Duration::from_secs(1);
/// When the bucket map grows past this many entries, expired ones are swept.
const SWEEP_THRESHOLD: usize = 4096;

/// Limits chosen on the command line.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests allowed per bucket per window.
    pub route_limit: u32,
    /// Length of a bucket window.
    pub route_window: Duration,
    /// Requests allowed per bot in any rolling second.
    pub global_limit: u32,
}

/// One bucket's identity and size. Read routes use `--route-limit` per
/// `--route-window-ms`; write routes have their own sizes (message sends,
/// reactions, deletes by message age; see `app.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSpec {
    /// The opaque `X-RateLimit-Bucket` value.
    pub hash: &'static str,
    /// Requests allowed per window.
    pub limit: u32,
    /// Length of a window.
    pub window: Duration,
}

/// A bucket's state as reported in `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    pub limit: u32,
    pub remaining: u32,
    /// Time until the current window ends (a full window if none is open).
    pub reset_after: Duration,
}

/// The verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Counted; the bucket state after counting it.
    Allowed(BucketState),
    /// The bucket is exhausted (scope `user`).
    RouteLimited(BucketState),
    /// The bot's global limit is exhausted (scope `global`).
    GlobalLimited { retry_after: Duration },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BucketKey {
    token: String,
    hash: &'static str,
    resource: Option<String>,
}

#[derive(Debug)]
struct Bucket {
    used: u32,
    /// End of the open window; `None` until the first request.
    resets_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    buckets: HashMap<BucketKey, Bucket>,
    /// Per token: instants of counted requests within the last second.
    global: HashMap<String, VecDeque<Instant>>,
}

/// The limiter shared by all connection threads.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    state: Mutex<State>,
}

impl Limiter {
    pub fn new(limits: Limits) -> Limiter {
        Limiter {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Forgets all buckets and global windows.
    pub fn reset(&self) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = State::default();
    }

    /// The bucket of a read route: `--route-limit` per `--route-window-ms`.
    pub fn route_spec(&self, hash: &'static str) -> BucketSpec {
        BucketSpec {
            hash,
            limit: self.limits.route_limit,
            window: self.limits.route_window,
        }
    }

    /// Checks a request against a read-route bucket and counts it if allowed.
    #[cfg(test)]
    pub fn check(
        &self,
        token: &str,
        hash: &'static str,
        resource: Option<&str>,
        now: Instant,
    ) -> Decision {
        self.check_spec(token, self.route_spec(hash), resource, now)
    }

    /// Checks a request against the bucket `spec` and counts it if allowed.
    pub fn check_spec(
        &self,
        token: &str,
        spec: BucketSpec,
        resource: Option<&str>,
        now: Instant,
    ) -> Decision {
        let hash = spec.hash;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State { buckets, global } = &mut *state;

        let recent = global.entry(token.to_string()).or_default();
        prune(recent, now);
        if recent.len() >= self.limits.global_limit as usize {
            let oldest = *recent.front().expect("non-empty when at the limit");
            return Decision::GlobalLimited {
                retry_after: (oldest + GLOBAL_WINDOW).saturating_duration_since(now),
            };
        }

        if buckets.len() > SWEEP_THRESHOLD {
            buckets.retain(|_, b| b.resets_at.is_some_and(|t| t > now));
        }
        let key = BucketKey {
            token: token.to_string(),
            hash,
            resource: resource.map(str::to_string),
        };
        let bucket = buckets.entry(key).or_insert(Bucket {
            used: 0,
            resets_at: None,
        });
        if bucket.resets_at.is_some_and(|t| t <= now) {
            bucket.used = 0;
            bucket.resets_at = None;
        }
        let resets_at = *bucket.resets_at.get_or_insert(now + spec.window);
        let reset_after = resets_at.saturating_duration_since(now);
        if bucket.used >= spec.limit {
            return Decision::RouteLimited(BucketState {
                limit: spec.limit,
                remaining: 0,
                reset_after,
            });
        }
        bucket.used += 1;
        recent.push_back(now);
        Decision::Allowed(BucketState {
            limit: spec.limit,
            remaining: spec.limit - bucket.used,
            reset_after,
        })
    }

    /// A bucket's current state without counting a request (used for the
    /// headers of injected `shared` 429s).
    pub fn peek(
        &self,
        token: &str,
        spec: BucketSpec,
        resource: Option<&str>,
        now: Instant,
    ) -> BucketState {
        let hash = spec.hash;
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let key = BucketKey {
            token: token.to_string(),
            hash,
            resource: resource.map(str::to_string),
        };
        match state.buckets.get(&key) {
            Some(Bucket {
                used,
                resets_at: Some(t),
            }) if *t > now => BucketState {
                limit: spec.limit,
                remaining: spec.limit.saturating_sub(*used),
                reset_after: *t - now,
            },
            _ => BucketState {
                limit: spec.limit,
                remaining: spec.limit,
                reset_after: spec.window,
            },
        }
    }

    /// Counts a request that was answered without passing [`Limiter::check`]
    /// (an injected non-429 fault) against the bot's global window, so the
    /// global limit and the `max_in_any_second` statistic agree.
    pub fn note_global(&self, token: &str, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let recent = state.global.entry(token.to_string()).or_default();
        prune(recent, now);
        recent.push_back(now);
    }
}

/// Drops instants that left the rolling window ending at `now`.
fn prune(recent: &mut VecDeque<Instant>, now: Instant) {
    while recent
        .front()
        .is_some_and(|&t| now.saturating_duration_since(t) >= GLOBAL_WINDOW)
    {
        recent.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(route_limit: u32, global_limit: u32) -> Limiter {
        Limiter::new(Limits {
            route_limit,
            route_window: Duration::from_millis(1000),
            global_limit,
        })
    }

    #[test]
    fn bucket_counts_down_then_refuses_until_the_window_ends() {
        let l = limiter(2, 50);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let Decision::Allowed(s) = l.check("a", "h", None, t0) else {
            panic!()
        };
        assert_eq!((s.remaining, s.reset_after), (1, ms(1000)));
        let Decision::Allowed(s) = l.check("a", "h", None, t0 + ms(100)) else {
            panic!()
        };
        assert_eq!((s.remaining, s.reset_after), (0, ms(900)));
        assert_eq!(
            l.check("a", "h", None, t0 + ms(400)),
            Decision::RouteLimited(BucketState {
                limit: 2,
                remaining: 0,
                reset_after: ms(600)
            })
        );
        // A new window opens at the first request after the reset.
        let Decision::Allowed(s) = l.check("a", "h", None, t0 + ms(1500)) else {
            panic!()
        };
        assert_eq!((s.remaining, s.reset_after), (1, ms(1000)));
    }

    #[test]
    fn top_level_resources_and_tokens_are_independent() {
        let l = limiter(1, 50);
        let t0 = Instant::now();
        assert!(matches!(
            l.check("a", "h", Some("1"), t0),
            Decision::Allowed(_)
        ));
        assert!(matches!(
            l.check("a", "h", Some("1"), t0),
            Decision::RouteLimited(_)
        ));
        assert!(matches!(
            l.check("a", "h", Some("2"), t0),
            Decision::Allowed(_)
        ));
        assert!(matches!(
            l.check("b", "h", Some("1"), t0),
            Decision::Allowed(_)
        ));
    }

    #[test]
    fn global_limit_is_a_rolling_second_and_429s_do_not_count() {
        let l = limiter(100, 3);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        for i in 0..3 {
            let r = l.check("a", "h", Some(&i.to_string()), t0 + ms(i * 100));
            assert!(matches!(r, Decision::Allowed(_)));
        }
        assert_eq!(
            l.check("a", "h", Some("x"), t0 + ms(300)),
            Decision::GlobalLimited {
                retry_after: ms(700)
            }
        );
        // The refused request did not use the bucket "x".
        assert_eq!(
            l.peek("a", l.route_spec("h"), Some("x"), t0 + ms(300))
                .remaining,
            100
        );
        assert!(matches!(
            l.check("a", "h", Some("x"), t0 + ms(1000)),
            Decision::Allowed(_)
        ));
    }
}
