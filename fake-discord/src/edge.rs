//! The edge in front of Discord's API: Cloudflare's ban of an IP that sent
//! too many invalid requests.
//!
//! Discord (`topics/rate-limits`, "Invalid Request Limit"): "IP addresses
//! that make too many invalid HTTP requests are automatically and
//! temporarily restricted from accessing the Discord API. Currently, this
//! limit is 10,000 per 10 minutes. An invalid request is one that results in
//! 401, 403, or 429 statuses. All applications should make reasonable
//! attempts to avoid making invalid requests. ... 429 errors returned with
//! X-RateLimit-Scope: shared are not counted against you." The ban covers
//! the IP, so every bot behind it; the answer comes from Cloudflare, not
//! Discord: a 429 with an HTML body and a `Retry-After` header, without
//! Discord's JSON or any `X-RateLimit-*` header.
//!
//! Invariant: memory is bounded: each IP keeps at most `limit` timestamps,
//! and at most `MAX_IPS` IPs are tracked (idle ones are dropped first).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// IPs tracked at once; tests use one, a benchmark a handful.
const MAX_IPS: usize = 4096;

/// The ban's rule: `limit` invalid answers within `window` ban the IP for
/// `ban`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanRule {
    pub limit: usize,
    pub window: Duration,
    pub ban: Duration,
}

#[derive(Default)]
struct PerIp {
    invalid: VecDeque<Instant>,
    banned_until: Option<Instant>,
}

#[derive(Default)]
struct State {
    ips: HashMap<IpAddr, PerIp>,
    /// Invalid answers ever counted, and bans ever imposed.
    counted: u64,
    bans: u64,
}

pub struct Edge {
    rule: BanRule,
    state: Mutex<State>,
}

impl Edge {
    pub fn new(rule: BanRule) -> Edge {
        Edge {
            rule,
            state: Mutex::new(State::default()),
        }
    }

    /// How long `ip` stays banned, if it is.
    pub fn banned_for(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let until = state.ips.get(&ip)?.banned_until?;
        (now < until).then(|| until - now)
    }

    /// Counts an answer Discord gave `ip`, if it is an invalid one.
    pub fn record(&self, ip: IpAddr, status: u16, scope: Option<&str>, now: Instant) {
        let invalid = matches!(status, 401 | 403) || (status == 429 && scope != Some("shared"));
        if !invalid {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.counted += 1;
        if state.ips.len() >= MAX_IPS && !state.ips.contains_key(&ip) {
            let window = self.rule.window;
            state.ips.retain(|_, p| {
                p.banned_until.is_some_and(|u| now < u)
                    || p.invalid.back().is_some_and(|t| now < *t + window)
            });
            if state.ips.len() >= MAX_IPS {
                return;
            }
        }
        let per_ip = state.ips.entry(ip).or_default();
        while per_ip
            .invalid
            .front()
            .is_some_and(|t| now >= *t + self.rule.window)
        {
            per_ip.invalid.pop_front();
        }
        per_ip.invalid.push_back(now);
        if per_ip.invalid.len() >= self.rule.limit {
            per_ip.invalid.clear();
            per_ip.banned_until = Some(now + self.rule.ban);
            state.bans += 1;
        }
    }

    /// Invalid answers in the window, summed over IPs, and bans so far.
    pub fn stats(&self, now: Instant) -> (usize, u64, u64) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let window = self.rule.window;
        let in_window = state
            .ips
            .values()
            .map(|p| p.invalid.iter().filter(|t| now < **t + window).count())
            .sum();
        (in_window, state.counted, state.bans)
    }

    pub fn reset(&self) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = State::default();
    }
}

/// What Cloudflare answers a banned IP: HTML, a `Retry-After` in whole
/// seconds, and nothing of Discord's.
pub const BANNED_BODY: &str = "<!DOCTYPE html>\n<html><head><title>Access denied | discord.com \
used Cloudflare to restrict access</title></head><body><h1>Error 1015</h1><h2>You are being \
rate limited</h2><p>The owner of this website (discord.com) has banned you temporarily from \
accessing this website.</p></body></html>\n";

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: BanRule = BanRule {
        limit: 3,
        window: Duration::from_secs(600),
        ban: Duration::from_secs(3600),
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn the_limitth_invalid_answer_bans_the_ip_and_only_that_ip() {
        let edge = Edge::new(RULE);
        let t0 = Instant::now();
        edge.record(ip(1), 403, None, t0);
        edge.record(ip(1), 401, None, t0);
        assert_eq!(edge.banned_for(ip(1), t0), None);
        edge.record(ip(1), 429, Some("user"), t0);
        assert_eq!(edge.banned_for(ip(1), t0), Some(RULE.ban));
        assert_eq!(edge.banned_for(ip(2), t0), None);
        assert_eq!(edge.banned_for(ip(1), t0 + RULE.ban), None);
    }

    #[test]
    fn shared_429s_successes_and_404s_do_not_count() {
        let edge = Edge::new(RULE);
        let t0 = Instant::now();
        for status in [200, 404, 500] {
            edge.record(ip(1), status, None, t0);
        }
        edge.record(ip(1), 429, Some("shared"), t0);
        edge.record(ip(1), 429, Some("shared"), t0);
        edge.record(ip(1), 429, Some("shared"), t0);
        assert_eq!(edge.banned_for(ip(1), t0), None);
        assert_eq!(edge.stats(t0).0, 0);
    }

    #[test]
    fn invalid_answers_older_than_the_window_are_forgotten() {
        let edge = Edge::new(RULE);
        let t0 = Instant::now();
        edge.record(ip(1), 403, None, t0);
        edge.record(ip(1), 403, None, t0);
        let later = t0 + RULE.window;
        edge.record(ip(1), 403, None, later);
        assert_eq!(edge.banned_for(ip(1), later), None);
    }
}
