//! heartbeat: when the next heartbeat is due, and whether the connection
//! is a zombie.
//!
//! Why it exists: Discord closes a connection whose heartbeats stop, and a
//! connection can die without a close (a NAT forgets it, the server
//! hangs). The rules (GW L146-171): the first heartbeat after
//! `interval × random`, so a fleet reconnecting together does not beat in
//! step; then one every interval. A connection is a zombie when a heartbeat
//! comes due and nothing at all has arrived since the previous one: any
//! inbound payload counts as life, not only the ACK, because a busy shard's
//! ACK can queue behind its events (twilight's rule; discordeno #2311).
//!
//! It also reports the shards' health to `/metrics`: each ACK's latency
//! (`dbb_gateway_heartbeat_latency_seconds`), and, through `watch_shards`,
//! how many shards are in each state (`dbb_gateway_shards`), read from the
//! shards at scrape time.
//!
//! Invariant: pure state over `Instant`s handed in; it never reads a clock,
//! so the tests drive it without sleeping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Shared, State};
use crate::observe::metrics::{self, ShardStates};

#[derive(Debug)]
pub struct Heartbeat {
    interval: Duration,
    next: Instant,
    /// When the last heartbeat went out, if one has.
    sent: Option<Instant>,
    /// Whether anything arrived since the last heartbeat went out.
    heard: bool,
    /// Whether the last heartbeat was ACKed.
    acked: bool,
    latency: Option<Duration>,
}

/// What to do when `due` says a heartbeat's time has come.
#[derive(Debug, PartialEq, Eq)]
pub enum Beat {
    Send,
    /// Nothing heard since the last heartbeat: close and resume.
    Zombie,
}

impl Heartbeat {
    /// After Hello at `now`: `jitter` in [0, 1) places the first heartbeat.
    pub fn new(interval: Duration, now: Instant, jitter: f64) -> Heartbeat {
        Heartbeat {
            interval,
            next: now + interval.mul_f64(jitter.clamp(0.0, 1.0)),
            sent: None,
            heard: true,
            acked: true,
            latency: None,
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When the next heartbeat is due.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Whether a heartbeat is due at `now`, and what to do about it.
    pub fn due(&self, now: Instant) -> Option<Beat> {
        if now < self.next {
            None
        } else if self.heard {
            Some(Beat::Send)
        } else {
            Some(Beat::Zombie)
        }
    }

    /// A heartbeat went out at `now`; `scheduled` is false for one the
    /// server asked for (op 1), which leaves the schedule alone.
    pub fn sent(&mut self, now: Instant, scheduled: bool) {
        self.sent = Some(now);
        self.heard = false;
        self.acked = false;
        if scheduled {
            // From the due time, not from `now`, so a late loop does not
            // drift the schedule; never in the past, so a long stall does
            // not fire a burst.
            self.next = (self.next + self.interval).max(now + self.interval / 2);
        }
    }

    /// Any payload arrived.
    pub fn heard(&mut self) {
        self.heard = true;
    }

    /// Op 11 arrived at `now`.
    pub fn ack(&mut self, now: Instant) {
        self.heard = true;
        if !self.acked
            && let Some(sent) = self.sent
        {
            let latency = now.saturating_duration_since(sent);
            metrics::global().observe_heartbeat_latency(latency);
            self.latency = Some(latency);
        }
        self.acked = true;
    }

    /// The time from the last ACKed heartbeat to its ACK.
    pub fn latency(&self) -> Option<Duration> {
        self.latency
    }
}

/// Lets every scrape count the shards of this bot's Gateway by state, for
/// as long as the Gateway lives (`BotGateway::start` calls it).
pub(super) fn watch_shards(gateway: &Arc<Shared>) {
    let weak = Arc::downgrade(gateway);
    metrics::global().watch_shards(weak);
}

impl ShardStates for Shared {
    /// Before `GET /gateway/bot` has answered there are no shards yet: the
    /// bot counts as one shard in its launch state, so a Gateway that
    /// cannot start (a rejected token, Discord unreachable) still shows.
    fn shard_states(&self) -> Vec<&'static str> {
        let status = self.status();
        if status.shards.is_empty() {
            return label(status.state).into_iter().collect();
        }
        status
            .shards
            .iter()
            .filter_map(|s| label(s.state))
            .collect()
    }
}

/// The name a scrape counts a state under; a stopped shard is not counted.
fn label(state: State) -> Option<&'static str> {
    match state {
        State::Ready => Some("ready"),
        State::Connecting => Some("connecting"),
        State::Resuming => Some("resuming"),
        State::Backoff => Some("backoff"),
        State::Failed => Some("failed"),
        State::Idle => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_millis(1000);

    #[test]
    fn the_first_beat_is_jittered_then_every_interval() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(I, t0, 0.25);
        assert_eq!(hb.due(t0 + Duration::from_millis(249)), None);
        assert_eq!(hb.due(t0 + Duration::from_millis(250)), Some(Beat::Send));
        hb.sent(t0 + Duration::from_millis(260), true);
        assert_eq!(hb.next(), t0 + Duration::from_millis(1250));
        hb.ack(t0 + Duration::from_millis(270));
        assert_eq!(hb.latency(), Some(Duration::from_millis(10)));
        assert_eq!(hb.due(t0 + Duration::from_millis(1250)), Some(Beat::Send));
    }

    #[test]
    fn silence_between_two_beats_is_a_zombie() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(I, t0, 0.0);
        hb.sent(t0, true);
        assert_eq!(hb.due(t0 + I), Some(Beat::Zombie));
    }

    #[test]
    fn any_payload_counts_as_life_without_an_ack() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(I, t0, 0.0);
        hb.sent(t0, true);
        hb.heard();
        assert_eq!(hb.due(t0 + I), Some(Beat::Send));
        assert_eq!(hb.latency(), None);
    }

    #[test]
    fn every_state_but_idle_has_a_label_a_scrape_shows() {
        for state in [
            State::Ready,
            State::Connecting,
            State::Resuming,
            State::Backoff,
            State::Failed,
        ] {
            let name = label(state).expect("counted");
            assert!(metrics::SHARD_STATES.contains(&name), "{name}");
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                name,
                "as /api/gateway names it"
            );
        }
        assert_eq!(label(State::Idle), None);
    }

    #[test]
    fn a_requested_beat_leaves_the_schedule_alone() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(I, t0, 0.5);
        hb.sent(t0 + Duration::from_millis(100), false);
        assert_eq!(hb.next(), t0 + Duration::from_millis(500));
    }
}
