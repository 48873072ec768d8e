//! refusals: what Discord refused a bot lately, per route and top-level
//! resource, so that a refusal about to repeat is answered here instead.
//!
//! Each 403 counts toward the host's invalid-request budget (10,000 in 10
//! minutes per IP, then a Cloudflare ban for every bot of the host), and a
//! client that retries a forbidden call in a loop would spend it alone. So
//! a 403, and a 404 of an unknown guild or channel (it costs no budget but
//! a rate-limit slot, and it will not change in seconds), is remembered per
//! (method and route, guild or channel) for `--refusal-cache-ms`: 30 s by
//! default, long enough that a client hammering a forbidden call costs two
//! invalid requests a minute instead of one per call, short enough that a
//! permission granted in Discord works again within half a minute. After
//! that the refusal is still remembered as the call's last answer: while
//! the host is past `--invalid-request-threshold`, such a call is held back
//! (the one most likely to be refused again), and a success forgets it.
//!
//! Architecture invariants: bounded per bot (`MAX_PER_BOT`, the oldest
//! refusal goes first); an entry is forgotten after `INVALID_WINDOW`, when
//! it no longer says anything about the host's count; no lock is held while
//! anything waits.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::discord::guard::INVALID_WINDOW;
use crate::discord::ratelimit::RouteKey;

/// Refused calls remembered per bot. A bot refused more distinct calls
/// than this forgets the oldest (a client walking many forbidden channels).
const MAX_PER_BOT: usize = 256;

/// One call Discord refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// 403 or 404.
    pub status: u16,
    /// Discord's JSON error code and its message, as the client first got them.
    pub code: Option<u64>,
    pub message: String,
}

/// What to do with a call, given what Discord said to it last.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Send,
    /// Answer this refusal again; Discord is not asked.
    Cached(Refused),
    /// The host is past its invalid-request threshold and this call was
    /// refused last time: do not send it.
    HoldBack,
}

struct Entry {
    key: RouteKey,
    refused: Refused,
    at: Instant,
}

/// A bot's recent refusals. A `Vec` rather than a map: most bots have
/// none, and an empty `Vec` costs no allocation per bot.
#[derive(Default)]
pub struct Refusals {
    entries: Mutex<Vec<Entry>>,
}

impl Refusals {
    /// `over_threshold` is asked only for a call refused before whose cache
    /// time is over (it may cost a Redis round trip).
    pub fn check(
        &self,
        key: RouteKey,
        now: Instant,
        cache_for: Duration,
        over_threshold: impl FnOnce() -> bool,
    ) -> Verdict {
        let mut entries = self.entries.lock();
        entries.retain(|e| now.saturating_duration_since(e.at) < INVALID_WINDOW);
        let Some(entry) = entries.iter().find(|e| e.key == key) else {
            return Verdict::Send;
        };
        if now.saturating_duration_since(entry.at) < cache_for {
            return Verdict::Cached(entry.refused.clone());
        }
        drop(entries);
        if over_threshold() {
            Verdict::HoldBack
        } else {
            Verdict::Send
        }
    }

    pub fn refused(&self, key: RouteKey, refused: Refused, now: Instant) {
        let mut entries = self.entries.lock();
        entries.retain(|e| e.key != key);
        if entries.len() >= MAX_PER_BOT {
            entries.remove(0);
        }
        entries.push(Entry {
            key,
            refused,
            at: now,
        });
    }

    /// Discord answered the call: whatever it refused before is over.
    pub fn answered(&self, key: RouteKey) {
        let mut entries = self.entries.lock();
        if !entries.is_empty() {
            entries.retain(|e| e.key != key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CACHE: Duration = Duration::from_secs(30);

    fn key(top_level: u64) -> RouteKey {
        RouteKey {
            template: "GET /guilds/:guild_id/members",
            top_level: Some(top_level),
        }
    }

    fn forbidden() -> Refused {
        Refused {
            status: 403,
            code: Some(50001),
            message: "Missing Access".into(),
        }
    }

    #[test]
    fn a_refusal_is_answered_again_for_the_cache_time_only() {
        let refusals = Refusals::default();
        let t0 = Instant::now();
        assert_eq!(refusals.check(key(1), t0, CACHE, || false), Verdict::Send);
        refusals.refused(key(1), forbidden(), t0);
        assert_eq!(
            refusals.check(key(1), t0 + CACHE / 2, CACHE, || false),
            Verdict::Cached(forbidden())
        );
        assert_eq!(refusals.check(key(2), t0, CACHE, || false), Verdict::Send);
        assert_eq!(
            refusals.check(key(1), t0 + CACHE, CACHE, || false),
            Verdict::Send
        );
    }

    #[test]
    fn past_the_threshold_a_call_refused_last_time_is_held_back() {
        let refusals = Refusals::default();
        let t0 = Instant::now();
        refusals.refused(key(1), forbidden(), t0);
        let later = t0 + CACHE;
        assert_eq!(
            refusals.check(key(1), later, CACHE, || true),
            Verdict::HoldBack
        );
        assert_eq!(
            refusals.check(key(2), later, CACHE, || true),
            Verdict::Send,
            "never refused, so not held back"
        );
        refusals.answered(key(1));
        assert_eq!(refusals.check(key(1), later, CACHE, || true), Verdict::Send);
    }

    #[test]
    fn refusals_are_forgotten_after_the_invalid_request_window() {
        let refusals = Refusals::default();
        let t0 = Instant::now();
        refusals.refused(key(1), forbidden(), t0);
        assert_eq!(
            refusals.check(key(1), t0 + INVALID_WINDOW, CACHE, || true),
            Verdict::Send
        );
    }

    #[test]
    fn a_bot_keeps_at_most_max_per_bot_refusals_dropping_the_oldest() {
        let refusals = Refusals::default();
        let t0 = Instant::now();
        for n in 0..=MAX_PER_BOT as u64 {
            refusals.refused(key(n), forbidden(), t0);
        }
        assert_eq!(refusals.entries.lock().len(), MAX_PER_BOT);
        assert_eq!(refusals.check(key(0), t0, CACHE, || false), Verdict::Send);
        assert!(matches!(
            refusals.check(key(MAX_PER_BOT as u64), t0, CACHE, || false),
            Verdict::Cached(_)
        ));
    }
}
