//! guard: protects the host's IP from Discord's invalid-request ban, and
//! the service from login brute force.
//!
//! Discord bans an IP for a while after 10,000 invalid requests (401, 403,
//! and 429 other than `shared` scope) in 10 minutes (`topics/rate-limits`,
//! "Invalid Request Limit"). Every bot this process serves shares one IP, so
//! the count is process-wide, and with Redis it is shared by every instance
//! of the same `--outbound-ip-group` (`SharedCount`). Past a safety
//! threshold we refuse the requests most likely to be invalid: logins with
//! tokens we have not seen work, and calls Discord refused last time
//! (`refusals`). Warnings say when the count passes half, four fifths and
//! all of the threshold.
//!
//! When Discord's edge (Cloudflare) itself answers 429, with an HTML page
//! instead of Discord's JSON, the whole host is being refused, whatever
//! the bot: `block_host` stops every bot's calls until its `Retry-After`.
//!
//! Architecture invariants: counters are per 10-second slot in a fixed ring,
//! so memory is constant however many requests fail; the per-IP login map is
//! swept and capped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Discord's window for invalid requests.
pub const INVALID_WINDOW: Duration = Duration::from_secs(600);
/// Discord's ban threshold; our default refusal threshold stays well below.
pub const DISCORD_INVALID_LIMIT: u64 = 10_000;
pub const DEFAULT_INVALID_THRESHOLD: u64 = 8_000;
/// The window is counted in slots of this length.
const SLOT: Duration = Duration::from_secs(10);
const SLOTS: usize = (INVALID_WINDOW.as_secs() / SLOT.as_secs()) as usize;
/// A warning is logged as the count passes each of these percentages of
/// the threshold (and again after it fell below the first).
const WARN_AT_PERCENT: [u64; 3] = [50, 80, 100];

/// An invalid-request count kept outside this process, for instances that
/// leave through one IP (Discord bans the IP, whoever sent the requests).
pub trait SharedCount: Send + Sync {
    /// Adds one invalid request, now, and returns the group's count with
    /// it (one round trip); `None` when the shared store cannot answer.
    fn add(&self) -> Option<u64>;
    /// Invalid requests in the last 10 minutes, across the group; `None`
    /// when the shared store cannot answer.
    fn count(&self) -> Option<u64>;
}

/// Process-wide sliding count of Discord answers that count as invalid.
pub struct InvalidRequests {
    epoch: Instant,
    threshold: u64,
    /// (slot number, count) per ring position.
    slots: Mutex<[(u64, u64); SLOTS]>,
    /// How many of `WARN_AT_PERCENT` the count has passed and been warned of.
    last_warned: AtomicU64,
    shared: Option<Box<dyn SharedCount>>,
    /// Discord's edge refusing this host (a non-JSON 429), and whether the
    /// one request that tries after the block is out.
    host_block: Mutex<HostBlock>,
    /// Whether `host_block` holds a block: every Discord call asks, and all
    /// but a blocked host's answer without taking the process-wide lock.
    host_blocked: AtomicBool,
}

#[derive(Default)]
struct HostBlock {
    until: Option<Instant>,
    probing: bool,
}

/// How long others wait, after a host block ended, for the one request that
/// tries first: it answers within the upstream timeout, and its answer
/// ends the wait at once (`host_answered`).
const HOST_PROBE_POLL: Duration = Duration::from_millis(100);

impl InvalidRequests {
    pub fn new(threshold: u64) -> Self {
        InvalidRequests {
            epoch: Instant::now(),
            threshold,
            slots: Mutex::new([(u64::MAX, 0); SLOTS]),
            last_warned: AtomicU64::new(0),
            shared: None,
            host_block: Mutex::new(HostBlock::default()),
            host_blocked: AtomicBool::new(false),
        }
    }

    /// Counts with the other instances of the group, too.
    pub fn with_shared(mut self, shared: Box<dyn SharedCount>) -> Self {
        self.shared = Some(shared);
        self
    }

    fn slot_number(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.epoch).as_secs()) / SLOT.as_secs()
    }

    /// Whether a Discord answer counts: 401, 403, and 429 unless `shared`.
    pub fn counts(status: u16, scope: Option<&str>) -> bool {
        matches!(status, 401 | 403) || (status == 429 && scope != Some("shared"))
    }

    pub fn record(&self, now: Instant) {
        let current = self.slot_number(now);
        {
            let mut slots = self.slots.lock();
            let slot = &mut slots[(current % SLOTS as u64) as usize];
            if slot.0 != current {
                *slot = (current, 0);
            }
            slot.1 += 1;
        }
        let own = self.own_count(now);
        let total = match &self.shared {
            Some(shared) => shared.add().map_or(own, |group| group.max(own)),
            None => own,
        };
        let percent = total * 100 / self.threshold.max(1);
        let level = WARN_AT_PERCENT.iter().filter(|p| percent >= **p).count() as u64;
        if level == 0 {
            self.last_warned.store(0, Ordering::Relaxed);
        } else if self.last_warned.fetch_max(level, Ordering::SeqCst) < level {
            log::warn!(
                "{total} invalid Discord requests (401/403/429) in the last 10 minutes from this \
                 host, {percent}% of --invalid-request-threshold {}; Discord bans the IP at \
                 {DISCORD_INVALID_LIMIT}. Past the threshold, logins with new tokens and calls \
                 Discord refused before are refused here",
                self.threshold
            );
        }
    }

    /// Invalid requests in the last 10 minutes: the group's count when it
    /// is shared, and never less than this instance's own.
    pub fn count(&self, now: Instant) -> u64 {
        let own = self.own_count(now);
        let shared = self.shared.as_ref().and_then(|s| s.count());
        shared.map_or(own, |shared| shared.max(own))
    }

    fn own_count(&self, now: Instant) -> u64 {
        let current = self.slot_number(now);
        let oldest = current.saturating_sub(SLOTS as u64 - 1);
        self.slots
            .lock()
            .iter()
            .filter(|(n, _)| *n != u64::MAX && *n >= oldest && *n <= current)
            .map(|(_, c)| c)
            .sum()
    }

    /// True when requests likely to be invalid should not be sent.
    pub fn over_threshold(&self, now: Instant) -> bool {
        self.count(now) >= self.threshold
    }

    pub fn threshold(&self) -> u64 {
        self.threshold
    }

    /// Discord's edge refuses this host until `until`: no bot sends before,
    /// and then one request tries before the others.
    pub fn block_host(&self, until: Instant) {
        let mut block = self.host_block.lock();
        block.until = block.until.max(Some(until));
        block.probing = false;
        self.host_blocked.store(true, Ordering::Release);
    }

    /// `Err(wait)` while the host is blocked, or while the one request that
    /// tries after a block is out; `Ok` lets this request send. Right after
    /// a block, `Ok` carries the `HostProbe` that makes it that one request:
    /// keep it until Discord answers; dropped without an answer (a failure,
    /// a give-up), it lets the next request try.
    pub fn host_admit(&self, now: Instant) -> Result<Option<HostProbe<'_>>, Duration> {
        if !self.host_blocked.load(Ordering::Acquire) {
            return Ok(None);
        }
        let mut block = self.host_block.lock();
        match block.until {
            None => Ok(None),
            Some(until) if now < until => Err(until - now),
            Some(_) if block.probing => Err(HOST_PROBE_POLL),
            Some(_) => {
                block.probing = true;
                Ok(Some(HostProbe { guard: self }))
            }
        }
    }

    /// Discord itself answered: whatever its edge refused is over.
    pub fn host_answered(&self) {
        if !self.host_blocked.load(Ordering::Acquire) {
            return;
        }
        let mut block = self.host_block.lock();
        *block = HostBlock::default();
        // Under the lock, so a block set meanwhile is not cleared by this.
        self.host_blocked.store(false, Ordering::Release);
    }
}

/// The one request that tries after a host block; see `host_admit`.
pub struct HostProbe<'a> {
    guard: &'a InvalidRequests,
}

impl Drop for HostProbe<'_> {
    fn drop(&mut self) {
        self.guard.host_block.lock().probing = false;
    }
}

/// Failed logins allowed per client IP per window.
pub const LOGIN_FAILURES_ALLOWED: usize = 5;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// IPs tracked at once; beyond this the oldest entries are dropped.
const MAX_TRACKED_IPS: usize = 100_000;

/// Per-IP failed-login throttle: after 5 failures in a minute, logins from
/// that IP get 429 until the oldest failure is a minute old.
#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

impl LoginThrottle {
    /// `Err(wait)` when this IP must wait before trying again.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let failures = self.failures.lock();
        let Some(times) = failures.get(&ip) else {
            return Ok(());
        };
        let recent: Vec<&Instant> = times.iter().filter(|t| now < **t + LOGIN_WINDOW).collect();
        if recent.len() < LOGIN_FAILURES_ALLOWED {
            return Ok(());
        }
        let oldest = recent.iter().min().copied().copied().unwrap_or(now);
        Err((oldest + LOGIN_WINDOW).saturating_duration_since(now))
    }

    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut failures = self.failures.lock();
        if failures.len() >= MAX_TRACKED_IPS && !failures.contains_key(&ip) {
            failures.retain(|_, times| times.iter().any(|t| now < *t + LOGIN_WINDOW));
            if failures.len() >= MAX_TRACKED_IPS {
                // Still full of live entries: forget an arbitrary one rather
                // than grow without bound.
                if let Some(victim) = failures.keys().next().copied() {
                    failures.remove(&victim);
                }
            }
        }
        let times = failures.entry(ip).or_default();
        times.retain(|t| now < *t + LOGIN_WINDOW);
        times.push(now);
        if times.len() > LOGIN_FAILURES_ALLOWED {
            times.remove(0);
        }
    }

    /// Drops IPs with no failure in the window.
    pub fn sweep(&self, now: Instant) {
        self.failures
            .lock()
            .retain(|_, times| times.iter().any(|t| now < *t + LOGIN_WINDOW));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_requests_are_401_403_and_non_shared_429() {
        assert!(InvalidRequests::counts(401, None));
        assert!(InvalidRequests::counts(403, None));
        assert!(InvalidRequests::counts(429, Some("user")));
        assert!(InvalidRequests::counts(429, Some("global")));
        assert!(!InvalidRequests::counts(429, Some("shared")));
        assert!(!InvalidRequests::counts(404, None));
    }

    #[test]
    fn the_count_slides_out_after_ten_minutes() {
        let guard = InvalidRequests::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            guard.record(t0);
        }
        assert!(guard.over_threshold(t0));
        assert!(guard.over_threshold(t0 + Duration::from_secs(300)));
        assert!(!guard.over_threshold(t0 + INVALID_WINDOW + SLOT));
        assert_eq!(guard.count(t0 + INVALID_WINDOW + SLOT), 0);
    }

    struct Fixed(u64);

    impl SharedCount for Fixed {
        fn add(&self) -> Option<u64> {
            Some(self.0)
        }
        fn count(&self) -> Option<u64> {
            Some(self.0)
        }
    }

    #[test]
    fn a_blocked_host_waits_for_the_latest_end_then_lets_one_request_try_first() {
        let guard = InvalidRequests::new(5);
        let t0 = Instant::now();
        assert!(matches!(guard.host_admit(t0), Ok(None)));
        guard.block_host(t0 + Duration::from_secs(30));
        guard.block_host(t0 + Duration::from_secs(10));
        assert_eq!(guard.host_admit(t0).err(), Some(Duration::from_secs(30)));
        let after = t0 + Duration::from_secs(30);
        let probe = guard.host_admit(after).unwrap();
        assert!(probe.is_some(), "the first tries");
        assert_eq!(
            guard.host_admit(after).err(),
            Some(HOST_PROBE_POLL),
            "the rest wait"
        );
        drop(probe);
        let probe = guard.host_admit(after).unwrap();
        assert!(
            probe.is_some(),
            "a probe that got no answer lets the next try"
        );
        guard.host_answered();
        drop(probe);
        assert!(matches!(guard.host_admit(after), Ok(None)));
    }

    #[test]
    fn a_shared_count_is_the_groups_and_never_below_our_own() {
        let now = Instant::now();
        let guard = InvalidRequests::new(5).with_shared(Box::new(Fixed(7)));
        assert_eq!(guard.count(now), 7);
        assert!(guard.over_threshold(now));
        let guard = InvalidRequests::new(5).with_shared(Box::new(Fixed(0)));
        guard.record(now);
        assert_eq!(guard.count(now), 1);
    }

    #[test]
    fn five_failed_logins_a_minute_then_429_until_the_oldest_ages_out() {
        let throttle = LoginThrottle::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = Instant::now();
        for n in 0..5 {
            assert!(throttle.check(ip, t0).is_ok());
            throttle.record_failure(ip, t0 + Duration::from_secs(n));
        }
        let wait = throttle
            .check(ip, t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(
            throttle.check("192.0.2.8".parse().unwrap(), t0).is_ok(),
            "other IPs unaffected"
        );
        assert!(throttle.check(ip, t0 + LOGIN_WINDOW).is_ok());
    }
}
