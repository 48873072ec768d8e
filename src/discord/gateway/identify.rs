//! identify: when a shard of a bot may send Identify.
//!
//! Why it exists: Identify is scarce, Resume is free. Discord allows
//! `max_concurrency` identifies per 5 s, bucketed by
//! `shard_id % max_concurrency` (GW L509, L644-647; over it: op 9), and
//! 1000 session starts a day per application; the one that runs the budget
//! out resets the bot's token and emails its owner (GW L188). So each bucket
//! identifies at most once per `spacing`, and no shard identifies when
//! fewer than `RESERVE` starts remain: a `gateway.failed` we raise beats a
//! token reset by Discord.
//!
//! How long each shard waited for its turn goes to `/metrics`
//! (`dbb_gateway_identify_wait_seconds`): a bot whose shards wait minutes
//! needs a larger `max_concurrency` from Discord, or fewer restarts.
//!
//! Invariant: never blocks. A shard asks (`turn`) and is told to go, to come
//! back at an instant, or that it must not; it keeps heartbeating while it
//! waits, on its own thread.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::observe::metrics;

/// Session starts kept back (issue #13, GATEWAY-NOTES §6.3).
pub const RESERVE: u32 = 20;
/// Discord's identify window per bucket (GW L509).
pub const SPACING: Duration = Duration::from_secs(5);

/// `session_start_limit` of `GET /gateway/bot` (GW L735-779).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct SessionStartLimit {
    pub total: u32,
    pub remaining: u32,
    /// Milliseconds until `remaining` is back to `total`.
    pub reset_after: u64,
    pub max_concurrency: u16,
}

/// One bot's identify queue, shared by its shards.
#[derive(Debug)]
pub struct IdentifyQueue {
    spacing: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    max_concurrency: u16,
    /// When each bucket last identified.
    last: Vec<Option<Instant>>,
    total: u32,
    remaining: u32,
    reset_at: Instant,
    waits: Waits,
}

/// The shards told to wait, and since when: a shard asks again and again
/// while it waits, and only its first ask starts the clock.
#[derive(Debug, Default)]
struct Waits(HashMap<u16, Asked>);

#[derive(Debug, Clone, Copy)]
struct Asked {
    since: Instant,
    /// The turn it was given. A shard that comes back long after it (its
    /// connection dropped meanwhile) starts a new wait.
    until: Instant,
}

/// The answer to "may this shard identify now?".
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// Identify now: a session start is counted.
    Go,
    /// Ask again at this instant.
    Wait(Instant),
    /// Do not identify: why, for a person.
    Refused(String),
}

impl IdentifyQueue {
    pub fn new(spacing: Duration) -> IdentifyQueue {
        IdentifyQueue {
            spacing,
            state: Mutex::new(State {
                max_concurrency: 1,
                last: vec![None],
                total: 0,
                remaining: 0,
                reset_at: Instant::now(),
                waits: Waits::default(),
            }),
        }
    }

    /// What `GET /gateway/bot` said at `now`. Discord's count is the
    /// truth; buckets already used keep their times.
    pub fn update(&self, limit: SessionStartLimit, now: Instant) {
        let mut state = self.state.lock();
        let buckets = usize::from(limit.max_concurrency.max(1));
        state.max_concurrency = limit.max_concurrency.max(1);
        state.last.resize(buckets, None);
        state.total = limit.total;
        state.remaining = limit.remaining;
        state.reset_at = now + Duration::from_millis(limit.reset_after);
    }

    /// Session starts left, as we count them.
    pub fn remaining(&self) -> u32 {
        let mut state = self.state.lock();
        state.refill(Instant::now());
        state.remaining
    }

    /// May shard `shard_id` identify at `now`?
    pub fn turn(&self, shard_id: u16, now: Instant) -> Turn {
        let mut state = self.state.lock();
        state.refill(now);
        if state.remaining < RESERVE {
            state.waits.0.remove(&shard_id);
            let resets = state.reset_at.saturating_duration_since(now);
            return Turn::Refused(format!(
                "only {} of the bot's {} daily Gateway session starts remain, and the service \
                 keeps {RESERVE} in reserve (Discord resets the token when they run out); they \
                 renew in {} min: start the bot's events again then, and look for what \
                 reconnects it so often",
                state.remaining,
                state.total,
                resets.as_secs().div_ceil(60)
            ));
        }
        let bucket = usize::from(shard_id % state.max_concurrency);
        if let Some(last) = state.last[bucket] {
            let free = last + self.spacing;
            if now < free {
                state.waits.waiting(shard_id, now, free, self.spacing);
                return Turn::Wait(free);
            }
        }
        state.last[bucket] = Some(now);
        state.remaining -= 1;
        let waited = state.waits.done(shard_id, now, self.spacing);
        metrics::global().observe_identify_wait(waited);
        Turn::Go
    }
}

impl State {
    fn refill(&mut self, now: Instant) {
        if now >= self.reset_at && self.remaining < self.total {
            // Discord's window ended; our copy follows until the next
            // `GET /gateway/bot` says otherwise.
            self.remaining = self.total;
            self.reset_at = now + Duration::from_secs(24 * 60 * 60);
        }
    }
}

impl Waits {
    /// `shard` asked at `now` and was told to come back at `until`.
    fn waiting(&mut self, shard: u16, now: Instant, until: Instant, spacing: Duration) {
        let since = self
            .current(shard, now, spacing)
            .map_or(now, |asked| asked.since);
        self.0.insert(shard, Asked { since, until });
    }

    /// `shard` identifies at `now`: how long it waited.
    fn done(&mut self, shard: u16, now: Instant, spacing: Duration) -> Duration {
        let waited = self
            .current(shard, now, spacing)
            .map_or(Duration::ZERO, |asked| {
                now.saturating_duration_since(asked.since)
            });
        self.0.remove(&shard);
        waited
    }

    /// The wait `shard` is in at `now`, unless it gave it up: back more
    /// than `spacing` after its turn.
    fn current(&self, shard: u16, now: Instant, spacing: Duration) -> Option<Asked> {
        self.0
            .get(&shard)
            .copied()
            .filter(|asked| now <= asked.until + spacing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(remaining: u32, max_concurrency: u16) -> SessionStartLimit {
        SessionStartLimit {
            total: 1000,
            remaining,
            reset_after: 3_600_000,
            max_concurrency,
        }
    }

    #[test]
    fn one_identify_per_bucket_per_spacing() {
        let q = IdentifyQueue::new(SPACING);
        let t0 = Instant::now();
        q.update(limit(1000, 2), t0);
        assert_eq!(q.turn(0, t0), Turn::Go);
        assert_eq!(q.turn(1, t0), Turn::Go);
        assert_eq!(q.turn(2, t0), Turn::Wait(t0 + SPACING));
        assert_eq!(q.turn(2, t0 + SPACING), Turn::Go);
        assert_eq!(q.state.lock().remaining, 997);
    }

    #[test]
    fn a_wait_is_timed_from_the_first_ask_to_the_identify() {
        let mut waits = Waits::default();
        let t0 = Instant::now();
        let turn = t0 + SPACING;
        waits.waiting(1, t0, turn, SPACING);
        waits.waiting(1, t0 + Duration::from_secs(2), turn, SPACING);
        assert_eq!(waits.done(1, turn, SPACING), SPACING);
        assert_eq!(
            waits.done(1, turn, SPACING),
            Duration::ZERO,
            "forgotten once done"
        );
    }

    #[test]
    fn a_shard_back_long_after_its_turn_starts_a_new_wait() {
        let mut waits = Waits::default();
        let t0 = Instant::now();
        waits.waiting(1, t0, t0 + SPACING, SPACING);
        let back = t0 + 3 * SPACING;
        waits.waiting(1, back, back + SPACING, SPACING);
        assert_eq!(waits.done(1, back + SPACING, SPACING), SPACING);
        let late = Instant::now();
        waits.waiting(2, late, late + SPACING, SPACING);
        assert_eq!(waits.done(2, late + 3 * SPACING, SPACING), Duration::ZERO);
    }

    #[test]
    fn never_below_the_reserve() {
        let q = IdentifyQueue::new(SPACING);
        let t0 = Instant::now();
        q.update(limit(20, 1), t0);
        assert_eq!(q.turn(0, t0), Turn::Go);
        match q.turn(0, t0 + SPACING) {
            Turn::Refused(why) => assert!(why.contains("only 19 of"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
