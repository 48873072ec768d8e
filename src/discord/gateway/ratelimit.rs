//! ratelimit: at most 120 payloads per connection per 60 s, with room kept
//! for heartbeats.
//!
//! Why it exists: going over closes the connection with 4008, and repeat
//! offenders lose API access (GW L507). Heartbeats must never wait behind
//! commands, or the connection is closed for a missed heartbeat instead, so
//! commands may use only what is left after the heartbeats a window needs
//! (twilight's `ratelimiter.rs` does the same).
//!
//! Invariant: pure state over `Instant`s handed in; it never reads a clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Discord's limit: payloads per window per connection (GW L507).
pub const LIMIT: usize = 120;
pub const WINDOW: Duration = Duration::from_secs(60);

/// A sliding window of what this connection sent.
#[derive(Debug)]
pub struct SendLimiter {
    /// When each payload of the current window went out, oldest first.
    /// Grows to at most `LIMIT` entries (about 2 KiB), and only on a busy
    /// connection: an idle one holds a couple.
    sent: VecDeque<Instant>,
    /// Slots only heartbeats may use.
    reserve: usize,
}

impl SendLimiter {
    /// For a connection whose heartbeat interval is `interval`: reserve
    /// one slot per heartbeat a window holds, plus one for a heartbeat the
    /// server asks for, at most half the window (a server asking for a
    /// heartbeat every few ms would otherwise leave commands nothing).
    pub fn new(interval: Duration) -> SendLimiter {
        let per_window = WINDOW.as_millis().div_ceil(interval.as_millis().max(1)) as usize;
        SendLimiter {
            sent: VecDeque::new(),
            reserve: (per_window + 1).min(LIMIT / 2),
        }
    }

    fn expire(&mut self, now: Instant) {
        while self
            .sent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= WINDOW)
        {
            self.sent.pop_front();
        }
    }

    /// Takes a slot for a command (anything but a heartbeat) at `now`, or
    /// says when one frees up.
    pub fn command(&mut self, now: Instant) -> Result<(), Instant> {
        self.take(now, LIMIT - self.reserve)
    }

    /// Takes a slot for a heartbeat: any slot of the window.
    pub fn heartbeat(&mut self, now: Instant) -> Result<(), Instant> {
        self.take(now, LIMIT)
    }

    fn take(&mut self, now: Instant, cap: usize) -> Result<(), Instant> {
        self.expire(now);
        if self.sent.len() < cap {
            self.sent.push_back(now);
            return Ok(());
        }
        // The slot that frees `cap - 1` from the newest.
        let freeing = self.sent[self.sent.len() - cap];
        Err(freeing + WINDOW)
    }

    /// Payloads sent in the window ending at `now`.
    pub fn in_window(&mut self, now: Instant) -> usize {
        self.expire(now);
        self.sent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_leave_room_for_a_windows_heartbeats() {
        let t0 = Instant::now();
        // 41.25 s heartbeats: 2 a window, plus one asked for.
        let mut l = SendLimiter::new(Duration::from_millis(41_250));
        let mut sent = 0;
        while l.command(t0).is_ok() {
            sent += 1;
        }
        assert_eq!(sent, LIMIT - 3);
        assert!(l.heartbeat(t0).is_ok());
        assert!(l.heartbeat(t0).is_ok());
        assert!(l.heartbeat(t0).is_ok());
        assert_eq!(l.heartbeat(t0), Err(t0 + WINDOW));
        assert_eq!(l.in_window(t0), LIMIT);
    }

    #[test]
    fn the_window_slides() {
        let t0 = Instant::now();
        let mut l = SendLimiter::new(Duration::from_secs(40));
        for i in 0..(LIMIT - 3) {
            l.command(t0 + Duration::from_millis(i as u64)).unwrap();
        }
        let retry = l.command(t0 + Duration::from_secs(1)).unwrap_err();
        assert_eq!(retry, t0 + WINDOW);
        assert!(l.command(retry).is_ok());
    }

    #[test]
    fn a_fast_heartbeat_keeps_half_the_window_for_commands() {
        let mut l = SendLimiter::new(Duration::from_millis(300));
        let t0 = Instant::now();
        let mut sent = 0;
        while l.command(t0).is_ok() {
            sent += 1;
        }
        assert_eq!(sent, LIMIT / 2);
    }
}
