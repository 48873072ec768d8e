//! ratelimit: one limiter per bot, shared by all its sessions, that keeps the
//! bot inside Discord's limits *before* a request is sent and learns from
//! every answer.
//!
//! Discord's model (`topics/rate-limits`): a route's bucket is named by the
//! `X-RateLimit-Bucket` hash, and limits are kept per hash *and* top-level
//! resource (channel, guild, webhook), because the hash is "non-inclusive of
//! top-level resources". Until a route's hash is known, the route template is
//! the bucket. Each bucket moves through:
//!
//! - *probing*: never seen (or re-learning after a surprise 429): exactly one
//!   request is in flight; the rest wait for its answer, so a burst of first
//!   requests cannot overrun a limit nobody knows yet (twilight #1305);
//! - *limited*: `remaining` slots until `reset_at`; up to `remaining`
//!   requests fly at once; when they are used up, requests wait for the reset;
//! - *unlimited*: the answer carried no rate-limit headers, which means "no
//!   known limit", never "wait" (discordeno #2766).
//!
//! On top of the buckets, a sliding log keeps each bot to `global_per_second`
//! requests in any rolling second (exact, unlike a fixed window or a GCRA
//! with burst, both of which admit nearly twice that across a boundary), and a
//! global 429 stops the whole bot for its `retry_after`.
//!
//! Below the buckets, Discord keeps limits it does not announce (a channel's
//! write limit shared by all its users, two channel renames per ten
//! minutes). A 429 from one of them (`Stopped::Route`) holds back only its
//! route and resource, and leaves the bucket as it was, so the bucket's other
//! routes keep flowing (discord.js `SequentialHandler`, WRITES-NOTES §4).
//!
//! Architecture invariants:
//! - the state lock is never held while sleeping: a waiter sleeps on the
//!   condvar (which releases the lock) or after dropping it, and every answer
//!   wakes the waiters;
//! - no request waits past its deadline: `acquire` refuses up front when the
//!   known wait ends after it;
//! - the limiter never sees a token, only the bot entry that owns it;
//! - time comes through `Clock`, so tests advance time without sleeping.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Discord: "All bots can make up to 50 requests per second to our API."
pub const DEFAULT_GLOBAL_PER_SECOND: u32 = 50;
/// Added to the global window and to every bucket reset, because Discord
/// counts by when requests *arrive*, and arrival jitter could otherwise put
/// one request too many into Discord's window.
const SAFETY_MARGIN: Duration = Duration::from_millis(10);
/// Bucket state untouched this long is forgotten, so the map does not grow
/// with every channel a bot ever read.
const BUCKET_IDLE_TTL: Duration = Duration::from_secs(300);
/// How far ahead a request in flight is stamped in the global log: far
/// enough that it counts until its answer re-stamps it (every slot is
/// answered, abandoned or dropped within the upstream timeout).
const IN_FLIGHT: Duration = Duration::from_secs(3600);
/// A waiter whose wake-up depends on someone else's answer re-checks this
/// often, in case that answer never comes (a dropped connection says nothing).
const RECHECK: Duration = Duration::from_millis(50);
/// Sub-limit holds one bot keeps at once. Each costs a 429 from Discord to
/// make, so only a bot refused on many routes at once reaches it; past it, a
/// sub-limit blocks its whole bucket instead (`BotLimiter::rate_limited`),
/// which wastes a little waiting but sends nothing Discord said would fail.
const MAX_HOLDS: usize = 128;

/// Where time comes from. Tests use a manual clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
    /// Waits up to `timeout`. `block` is how the caller waits for real
    /// (on a condvar, so an answer can end the wait early); a manual clock
    /// skips it and moves its time forward instead.
    fn wait(&self, timeout: Duration, block: &mut dyn FnMut(Duration)) {
        block(timeout);
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
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

type BucketKey = (BucketId, Option<u64>);

#[derive(Debug)]
enum Limit {
    /// One request is out to learn the limit; nobody else may go.
    Probing,
    /// `limit` per window; `reset_at` is `None` between a window's end and
    /// the first answer of the next one.
    Known {
        limit: u32,
        reset_at: Option<Instant>,
    },
    /// Discord sent no rate-limit headers for this route.
    Unlimited,
}

#[derive(Debug)]
struct Bucket {
    limit: Limit,
    /// Slots left in this window, with in-flight requests already taken out.
    remaining: u32,
    in_flight: u32,
    /// After a 429: nothing is sent before this.
    blocked_until: Option<Instant>,
    last_used: Instant,
    /// Tickets of the requests waiting on this bucket, oldest first: only
    /// the oldest may take the next slot, so no request starves while newer
    /// ones for the same bucket keep winning the race.
    queue: VecDeque<u64>,
}

impl Bucket {
    fn probing(now: Instant) -> Bucket {
        Bucket {
            limit: Limit::Probing,
            remaining: 0,
            in_flight: 0,
            blocked_until: None,
            last_used: now,
            queue: VecDeque::new(),
        }
    }
}

/// What Discord's rate-limit headers said on one response.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Observed {
    pub bucket: Option<String>,
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    pub reset_after: Option<Duration>,
    /// `Retry-After`, whole seconds: on a 429, the wait when the body has
    /// none (Cloudflare's 429 has only this).
    pub retry_after: Option<Duration>,
    pub scope: Option<String>,
    pub global: bool,
}

impl Observed {
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Observed {
        let seconds = |name| {
            header(name)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && (0.0..=86_400.0).contains(s))
                .map(Duration::from_secs_f64)
        };
        let number = |name| header(name).and_then(|v| v.trim().parse::<u32>().ok());
        Observed {
            bucket: header("x-ratelimit-bucket")
                .filter(|b| !b.is_empty() && b.len() <= 64)
                .map(str::to_string),
            limit: number("x-ratelimit-limit"),
            remaining: number("x-ratelimit-remaining"),
            reset_after: seconds("x-ratelimit-reset-after"),
            retry_after: seconds("retry-after"),
            scope: header("x-ratelimit-scope").map(str::to_string),
            global: header("x-ratelimit-global").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        }
    }

    fn has_limit(&self) -> bool {
        self.remaining.is_some() && self.reset_after.is_some()
    }

    /// What a 429 with these headers stopped; `global` is the body's flag.
    ///
    /// A sub-limit is a 429 whose scope is `shared` (a limit of the
    /// resource, kept for all its users: 20028, "the channel's write
    /// limit"), or whose own `X-RateLimit-Remaining` is above 0: Discord
    /// says the bucket still had room, so a narrower limit refused it
    /// (discord.js's rule). Our own count cannot tell: `acquire` hands out a
    /// slot only while it has room, so "we had room" holds for every 429 on
    /// a known bucket, including those that mean our view was wrong (another
    /// user of the token, a bucket hash that lied, discord-api-docs #8073),
    /// which must make the bucket learn again. A 429 that gives no
    /// `Remaining` is taken as the bucket's: too wide a stop costs a wait,
    /// too narrow a one another invalid request.
    pub fn stopped(&self, global: bool) -> Stopped {
        if global || self.global || self.scope.as_deref() == Some("global") {
            Stopped::Bot
        } else if self.scope.as_deref() == Some("shared") || self.remaining.is_some_and(|r| r > 0) {
            Stopped::Route
        } else {
            Stopped::Bucket
        }
    }
}

/// What a 429 (Discord's, not its edge's) stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The bot's global limit: every route of the bot waits.
    Bot,
    /// The route's bucket is spent: the bucket waits, then learns again.
    Bucket,
    /// A sub-limit: only this route and top-level resource wait; the bucket
    /// keeps what it knew.
    Route,
}

/// Why `acquire` gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong {
    /// How long the caller would have had to wait (at least).
    pub wait: Duration,
}

#[derive(Debug)]
struct State {
    /// Route template → the bucket hash Discord named for it.
    hashes: HashMap<&'static str, Arc<str>>,
    /// Boxed: a hash table's smallest allocation holds 4 entries, and most
    /// bots use a bucket or two; 4 inline buckets were 563 bytes per bot,
    /// the largest part of a session's memory (massif, 2,000 logins).
    buckets: HashMap<BucketKey, Box<Bucket>>,
    /// The bot's recent requests for the global limit: (slot id, time).
    /// Discord counts a request when it *arrives*, somewhere between its
    /// sending and its answer, so a request counts from when its slot is
    /// taken (stamped `IN_FLIGHT` ahead) until a second after its answer
    /// (stamped with the answer's time): a slow connect, or an answer that
    /// takes longer than a second, cannot let the next second's requests
    /// crowd in with it. Every slot is answered, abandoned or dropped, so
    /// no entry stays in flight. Holds at most the limit plus the requests
    /// in flight.
    recent: Vec<(u64, Instant)>,
    /// After a global 429: nothing is sent before this.
    global_blocked_until: Option<Instant>,
    next_ticket: u64,
    /// Tickets of requests their bucket would admit but the global limit
    /// does not, oldest first: freed global slots go to them in order, so no
    /// route falls behind because others keep winning the race.
    global_queue: BTreeSet<u64>,
    /// Routes a sub-limit 429 holds back, until when. A list, not a map:
    /// nearly always empty (no allocation, and 24 bytes per bot instead of
    /// a map's 48), never longer than `MAX_HOLDS`, and pruned whenever a
    /// hold is added and on `sweep`.
    holds: Vec<(RouteKey, Instant)>,
}

/// The per-bot limiter.
#[derive(Debug)]
pub struct BotLimiter {
    state: Mutex<State>,
    /// Woken whenever an answer changes what waiters may do.
    changed: Condvar,
    global_per_second: u32,
}

/// A slot taken by `acquire`. Hand it back with `complete` (an answer
/// arrived) or `rate_limited`; dropping it any other way (no answer, or a
/// panic on the way) is `abandon`: the slot stays used, conservatively, and
/// a probe is released, so a bucket never waits forever for an answer that
/// cannot come.
pub struct Slot<'a> {
    limiter: &'a BotLimiter,
    clock: &'a dyn Clock,
    key: BucketKey,
    route: RouteKey,
    /// This request's entry in the global log.
    id: u64,
    /// Set once the slot was handed back, so `drop` does nothing more.
    returned: bool,
}

impl std::fmt::Debug for Slot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("route", &self.route)
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.returned {
            self.limiter
                .unanswered(&self.key, self.id, self.clock.now());
        }
    }
}

impl Slot<'_> {
    pub fn route(&self) -> RouteKey {
        self.route
    }
}

impl BotLimiter {
    pub fn new(global_per_second: u32) -> Self {
        BotLimiter {
            state: Mutex::new(State {
                hashes: HashMap::new(),
                buckets: HashMap::new(),
                recent: Vec::new(),
                global_blocked_until: None,
                next_ticket: 0,
                global_queue: BTreeSet::new(),
                holds: Vec::new(),
            }),
            changed: Condvar::new(),
            global_per_second: global_per_second.max(1),
        }
    }

    /// Waits until a request on `route` may be sent and takes its slot.
    /// Refuses, without waiting, once it knows the wait would end after
    /// `deadline`.
    pub fn acquire<'a>(
        &'a self,
        route: RouteKey,
        clock: &'a dyn Clock,
        deadline: Instant,
    ) -> Result<Slot<'a>, TooLong> {
        let mut state = self.state.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        loop {
            let now = clock.now();
            let wait = match self.try_take(&mut state, route, ticket, now, clock) {
                Ok(slot) => {
                    let others_waiting = !state.global_queue.is_empty()
                        || state
                            .buckets
                            .get(&slot.key)
                            .is_some_and(|b| !b.queue.is_empty());
                    if others_waiting {
                        self.changed.notify_all();
                    }
                    return Ok(slot);
                }
                Err(Wait::For(wait)) if now + wait > deadline => Err(TooLong { wait }),
                Err(Wait::For(wait)) => Ok(wait),
                Err(Wait::ForAnswer) if now >= deadline => Err(TooLong { wait: RECHECK }),
                Err(Wait::ForAnswer) => Ok(RECHECK.min(deadline - now)),
            };
            let wait = match wait {
                Ok(wait) => wait,
                Err(too_long) => {
                    self.withdraw(&mut state, ticket);
                    return Err(too_long);
                }
            };
            // The condvar releases the lock while waiting; any answer to
            // this bot wakes us early to look again.
            clock.wait(wait, &mut |timeout| {
                self.changed.wait_for(&mut state, timeout);
            });
        }
    }

    /// Takes a slot for `ticket` if it may send now; otherwise queues the
    /// ticket on the bucket (once) and says how long to wait.
    fn try_take<'a>(
        &'a self,
        state: &mut State,
        route: RouteKey,
        ticket: u64,
        now: Instant,
        clock: &'a dyn Clock,
    ) -> Result<Slot<'a>, Wait> {
        let key = bucket_key(state, route);
        if let Some(wait) = held(state, route, now) {
            // Out of every line while held: a held request at the front of
            // its bucket's line would hold back the bucket's other routes.
            self.step_aside(state, &key, ticket);
            return Err(Wait::For(wait));
        }
        let verdict = self.check(state, &key, ticket, now);
        let bucket = state
            .buckets
            .get_mut(&key)
            .expect("check inserts the bucket");
        if let Err(wait) = verdict {
            if !bucket.queue.contains(&ticket) {
                bucket.queue.push_back(ticket);
            }
            return Err(wait);
        }
        if bucket.queue.front() == Some(&ticket) {
            bucket.queue.pop_front();
        }
        state.global_queue.remove(&ticket);
        bucket.in_flight += 1;
        bucket.remaining = bucket.remaining.saturating_sub(1);
        bucket.last_used = now;
        if state.recent.capacity() == 0 {
            // Most bots send a request now and then: room for one, not the
            // four a first push reserves (a third less memory per idle bot).
            state.recent.reserve_exact(1);
        }
        state.recent.push((ticket, now + IN_FLIGHT));
        Ok(Slot {
            limiter: self,
            clock,
            key,
            route,
            id: ticket,
            returned: false,
        })
    }

    /// Whether `ticket` may send on `key` now. Changes nothing but what
    /// time has already decided (a window that ended, a log entry that aged
    /// out).
    fn check(
        &self,
        state: &mut State,
        key: &BucketKey,
        ticket: u64,
        now: Instant,
    ) -> Result<(), Wait> {
        state
            .buckets
            .entry(key.clone())
            .or_insert_with(|| Box::new(Bucket::probing(now)));
        if let Some(until) = state.global_blocked_until.filter(|u| *u > now) {
            return Err(Wait::For(until - now));
        }
        let bucket = state.buckets.get_mut(key).expect("inserted above");
        if let Err(wait) = bucket_verdict(bucket, ticket, now) {
            state.global_queue.remove(&ticket);
            return Err(wait);
        }
        match self.global_wait(state, now) {
            Some(wait) => {
                state.global_queue.insert(ticket);
                Err(Wait::For(wait))
            }
            None => match state.global_queue.first() {
                Some(oldest) if *oldest != ticket => {
                    state.global_queue.insert(ticket);
                    Err(Wait::ForAnswer)
                }
                _ => Ok(()),
            },
        }
    }

    /// The sliding log: at most N requests in any window of a second (plus
    /// margin). Forgets entries that have aged out; if N remain, says how
    /// long until enough of them age out.
    fn global_wait(&self, state: &mut State, now: Instant) -> Option<Duration> {
        // Entries are stamped when the answer came, which is after Discord
        // counted the request, so a plain second is already on the safe side.
        let window = Duration::from_secs(1);
        state.recent.retain(|(_, at)| now < *at + window);
        let limit = self.global_per_second as usize;
        if state.recent.len() < limit {
            return None;
        }
        // The entry whose expiry brings the count below the limit; when it is
        // still in flight, only an answer frees a place (and wakes us).
        state.recent.sort_unstable_by_key(|(_, at)| *at);
        let (_, at) = state.recent[state.recent.len() - limit];
        if at > now {
            return Some(RECHECK);
        }
        Some(at + window - now)
    }

    /// A held request leaves its lines, and whoever it stood before may go.
    fn step_aside(&self, state: &mut State, key: &BucketKey, ticket: u64) {
        let mut left = state.global_queue.remove(&ticket);
        if let Some(bucket) = state.buckets.get_mut(key) {
            let before = bucket.queue.len();
            bucket.queue.retain(|t| *t != ticket);
            left |= bucket.queue.len() != before;
        }
        if left {
            self.changed.notify_all();
        }
    }

    /// A waiter gave up: take its ticket out of line and let the next go.
    fn withdraw(&self, state: &mut State, ticket: u64) {
        state.global_queue.remove(&ticket);
        for bucket in state.buckets.values_mut() {
            bucket.queue.retain(|t| *t != ticket);
        }
        self.changed.notify_all();
    }

    /// An answer arrived for `slot`: learn from its headers and wake waiters.
    pub fn complete(&self, mut slot: Slot<'_>, seen: &Observed, now: Instant) {
        slot.returned = true;
        let mut state = self.state.lock();
        let (key, route) = (&slot.key, slot.route);
        release(&mut state, key);
        answered(&mut state, slot.id, now);
        let hash_changed = seen.bucket.as_deref().is_some_and(|hash| {
            state
                .hashes
                .get(route.template)
                .is_none_or(|known| **known != *hash)
        });
        if let (true, Some(hash)) = (hash_changed, &seen.bucket) {
            state
                .hashes
                .insert(route.template, Arc::from(hash.as_str()));
        }
        let target = bucket_key(&state, route);
        if target != *key {
            // The route turned out to belong to a named bucket; the
            // route-named state it probed with is superseded.
            if state.buckets.get(key).is_some_and(|b| b.in_flight == 0) {
                state.buckets.remove(key);
            }
        }
        let bucket = state
            .buckets
            .entry(target)
            .or_insert_with(|| Box::new(Bucket::probing(now)));
        bucket.last_used = now;
        if seen.has_limit() {
            let remaining = seen.remaining.unwrap_or(0);
            // `reset_after` was counted when Discord handled the request, so
            // reckoning it from the answer's arrival already errs late.
            let reset_at = now + seen.reset_after.unwrap_or_default();
            let limit = seen.limit.unwrap_or(remaining + 1).max(1);
            let (remaining, reset_at) = match bucket.limit {
                // Our own count (limit minus what we sent this window) is
                // exact while we are the token's only user; Discord's
                // `remaining` lags behind our requests still in flight but
                // catches anyone else using the token. Trust the lower.
                Limit::Known {
                    reset_at: known, ..
                } => (
                    bucket.remaining.min(remaining),
                    known.map_or(reset_at, |k| k.max(reset_at)),
                ),
                // Learning: requests in flight now were sent after this
                // answer's count was taken.
                _ => (remaining.saturating_sub(bucket.in_flight), reset_at),
            };
            bucket.remaining = remaining;
            bucket.limit = Limit::Known {
                limit,
                reset_at: Some(reset_at),
            };
        } else if matches!(bucket.limit, Limit::Probing) {
            bucket.limit = Limit::Unlimited;
        }
        drop(state);
        self.changed.notify_all();
    }

    /// A 429 stops what `Observed::stopped` says, for `retry_after`. A
    /// global one stops the whole bot. A bucket's stops the bucket and makes
    /// it re-learn its limit afterwards, since what we believed was
    /// evidently wrong (discord-api-docs #8073). A sub-limit holds back only
    /// the route and resource it refused, and changes the bucket no more
    /// than an answer would: Discord did not count the refused request, so
    /// its slot goes back, and `remaining` and the reset stay what they were.
    /// Returns what it stopped (a sub-limit past `MAX_HOLDS` stops the bucket).
    pub fn rate_limited(
        &self,
        mut slot: Slot<'_>,
        seen: &Observed,
        retry_after: Duration,
        global: bool,
        now: Instant,
    ) -> Stopped {
        slot.returned = true;
        let until = now + retry_after + SAFETY_MARGIN;
        let mut state = self.state.lock();
        let route = slot.route;
        release(&mut state, &slot.key);
        answered(&mut state, slot.id, now);
        let mut stopped = seen.stopped(global);
        if stopped == Stopped::Route && !hold(&mut state, route, until, now) {
            stopped = Stopped::Bucket;
        }
        match stopped {
            Stopped::Bot => {
                state.global_blocked_until = state.global_blocked_until.max(Some(until));
            }
            Stopped::Route => give_back(&mut state, &slot.key, seen),
            Stopped::Bucket => {
                if let Some(hash) = &seen.bucket {
                    state
                        .hashes
                        .insert(route.template, Arc::from(hash.as_str()));
                }
                let target = bucket_key(&state, route);
                let bucket = state
                    .buckets
                    .entry(target)
                    .or_insert_with(|| Box::new(Bucket::probing(now)));
                bucket.blocked_until = bucket.blocked_until.max(Some(until));
                bucket.remaining = 0;
                bucket.limit = Limit::Probing;
                bucket.last_used = now;
            }
        }
        drop(state);
        self.changed.notify_all();
        stopped
    }

    /// No answer came for `slot` (timeout, dropped connection). The slot
    /// stays used; a probe is released so another request can try.
    pub fn abandon(&self, mut slot: Slot<'_>, now: Instant) {
        slot.returned = true;
        self.unanswered(&slot.key, slot.id, now);
    }

    fn unanswered(&self, key: &BucketKey, id: u64, now: Instant) {
        let mut state = self.state.lock();
        release(&mut state, key);
        answered(&mut state, id, now);
        drop(state);
        self.changed.notify_all();
    }

    /// Forgets buckets unused for a while and holds that ended. Returns how
    /// many buckets remain.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut state = self.state.lock();
        state.buckets.retain(|_, b| {
            b.in_flight > 0 || now.saturating_duration_since(b.last_used) < BUCKET_IDLE_TTL
        });
        prune_holds(&mut state, now);
        state.buckets.len()
    }

    /// How many sub-limit holds the bot keeps (ended ones included until
    /// they are pruned).
    #[cfg(test)]
    fn holds(&self) -> usize {
        self.state.lock().holds.len()
    }
}

/// Caps how many of a bot's requests are being worked on at once, so one
/// bot's flood (all waiting on the same bucket) cannot occupy every worker
/// and starve other bots. Requests over the cap wait on their connection
/// thread, which costs no worker, until a place frees or their deadline.
#[derive(Debug)]
pub struct InFlightGate {
    count: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

/// A place in a bot's `InFlightGate`; leaving frees it.
pub struct GatePass {
    gate: Arc<dyn AsRef<InFlightGate> + Send + Sync>,
}

impl InFlightGate {
    pub fn new(max: usize) -> Self {
        InFlightGate {
            count: Mutex::new(0),
            freed: Condvar::new(),
            max: max.max(1),
        }
    }

    /// Takes a place, waiting until `deadline` at most. `owner` is what
    /// holds the gate (the bot), kept alive by the pass.
    pub fn enter(
        owner: Arc<dyn AsRef<InFlightGate> + Send + Sync>,
        deadline: Instant,
    ) -> Option<GatePass> {
        let gate = (*owner).as_ref();
        let mut count = gate.count.lock();
        while *count >= gate.max {
            if gate.freed.wait_until(&mut count, deadline).timed_out() && *count >= gate.max {
                return None;
            }
        }
        *count += 1;
        drop(count);
        Some(GatePass { gate: owner })
    }
}

impl Drop for GatePass {
    fn drop(&mut self) {
        let gate = (*self.gate).as_ref();
        *gate.count.lock() -= 1;
        gate.freed.notify_one();
    }
}

enum Wait {
    /// A known time.
    For(Duration),
    /// Until another request's answer tells us more.
    ForAnswer,
}

/// Whether the bucket admits `ticket` now: it is first in the bucket's
/// line, and the bucket has a slot (or may be probed). Applies what time
/// has decided: a window that ended, a 429 pause that is over.
fn bucket_verdict(bucket: &mut Bucket, ticket: u64, now: Instant) -> Result<(), Wait> {
    if let Some(until) = bucket.blocked_until {
        if until > now {
            return Err(Wait::For(until - now));
        }
        bucket.blocked_until = None;
    }
    if bucket.queue.front().is_some_and(|first| *first != ticket) {
        return Err(Wait::ForAnswer);
    }
    match &mut bucket.limit {
        Limit::Probing if bucket.in_flight > 0 => Err(Wait::ForAnswer),
        Limit::Probing | Limit::Unlimited => Ok(()),
        Limit::Known { limit, reset_at } => {
            if reset_at.is_some_and(|r| now >= r) {
                // A new window: the next answer tells its reset time.
                bucket.remaining = limit.saturating_sub(bucket.in_flight);
                *reset_at = None;
            }
            if bucket.remaining > 0 {
                return Ok(());
            }
            match reset_at {
                Some(r) => Err(Wait::For(*r - now)),
                None if bucket.in_flight > 0 => Err(Wait::ForAnswer),
                // Nothing in flight will tell us the new window: learn it
                // again with a single request.
                None => {
                    bucket.limit = Limit::Probing;
                    Ok(())
                }
            }
        }
    }
}

/// The request's answer (or failure) came at `now`: it reached Discord no
/// later than that.
fn answered(state: &mut State, id: u64, now: Instant) {
    if let Some(entry) = state.recent.iter_mut().find(|(slot, _)| *slot == id) {
        entry.1 = now;
    }
}

/// How long `route` is still held back by a sub-limit, if it is.
fn held(state: &State, route: RouteKey, now: Instant) -> Option<Duration> {
    state
        .holds
        .iter()
        .find(|(held, _)| *held == route)
        .and_then(|(_, until)| until.checked_duration_since(now))
        .filter(|wait| !wait.is_zero())
}

/// Holds `route` back until `until`. False when the bot already holds
/// `MAX_HOLDS` other routes: the caller stops the bucket instead.
fn hold(state: &mut State, route: RouteKey, until: Instant, now: Instant) -> bool {
    prune_holds(state, now);
    if let Some((_, held_until)) = state.holds.iter_mut().find(|(held, _)| *held == route) {
        *held_until = (*held_until).max(until);
        return true;
    }
    if state.holds.len() >= MAX_HOLDS {
        return false;
    }
    state.holds.push((route, until));
    true
}

fn prune_holds(state: &mut State, now: Instant) {
    state.holds.retain(|(_, until)| *until > now);
    if state.holds.is_empty() {
        // Back to no allocation: most bots meet a sub-limit now and then.
        state.holds = Vec::new();
    }
}

/// Discord does not count a request it refused, so a sub-limit hands its
/// slot back: never past the bucket's limit, nor past the `Remaining`
/// Discord sent with the 429 (which, like any answer's, may be lower than
/// our count when someone else used the token).
fn give_back(state: &mut State, key: &BucketKey, seen: &Observed) {
    let Some(bucket) = state.buckets.get_mut(key) else {
        return;
    };
    if let Limit::Known { limit, .. } = bucket.limit {
        let room = limit
            .saturating_sub(bucket.in_flight)
            .min(seen.remaining.unwrap_or(u32::MAX));
        bucket.remaining = bucket.remaining.saturating_add(1).min(room);
    }
}

fn release(state: &mut State, key: &BucketKey) {
    if let Some(bucket) = state.buckets.get_mut(key) {
        bucket.in_flight = bucket.in_flight.saturating_sub(1);
    }
}

fn bucket_key(state: &State, route: RouteKey) -> BucketKey {
    let id = match state.hashes.get(route.template) {
        Some(hash) => BucketId::Hash(Arc::clone(hash)),
        None => BucketId::Route(route.template),
    };
    (id, route.top_level)
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
        fn wait(&self, timeout: Duration, _block: &mut dyn FnMut(Duration)) {
            self.advance(timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_clock::ManualClock;
    use super::*;

    const MESSAGES: &str = "GET /channels/:channel_id/messages";
    const SECOND: Duration = Duration::from_secs(1);

    fn route(top: u64) -> RouteKey {
        RouteKey {
            template: MESSAGES,
            top_level: Some(top),
        }
    }

    fn headers(bucket: &str, limit: u32, remaining: u32, reset_after: f64) -> Observed {
        Observed {
            bucket: Some(bucket.into()),
            limit: Some(limit),
            remaining: Some(remaining),
            reset_after: Some(Duration::from_secs_f64(reset_after)),
            ..Observed::default()
        }
    }

    fn limiter() -> BotLimiter {
        BotLimiter::new(DEFAULT_GLOBAL_PER_SECOND)
    }

    /// Takes a slot now or fails: a deadline of "now" forbids any wait.
    fn take_now<'a>(
        limiter: &'a BotLimiter,
        clock: &'a ManualClock,
        route: RouteKey,
    ) -> Result<Slot<'a>, TooLong> {
        limiter.acquire(route, clock, clock.now())
    }

    #[test]
    fn an_unknown_bucket_admits_exactly_one_request_until_its_answer() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let probe = take_now(&limiter, &clock, route(1)).unwrap();
        assert!(take_now(&limiter, &clock, route(1)).is_err());
        limiter.complete(probe, &headers("h", 5, 4, 1.0), clock.now());
        for _ in 0..4 {
            take_now(&limiter, &clock, route(1)).unwrap();
        }
    }

    #[test]
    fn a_panic_while_a_probe_is_out_releases_the_probe() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _probe = take_now(&limiter, &clock, route(1)).unwrap();
            panic!("a handler bug between acquire and complete");
        }));
        assert!(panicked.is_err());
        // The probe's answer will never come; the route is usable at once.
        let next = take_now(&limiter, &clock, route(1));
        assert!(next.is_ok(), "the route still waits for a dead probe");
    }

    #[test]
    fn an_answer_without_headers_means_no_known_limit() {
        let clock = ManualClock::new();
        let limiter = BotLimiter::new(1000);
        let probe = take_now(&limiter, &clock, route(1)).unwrap();
        limiter.complete(probe, &Observed::default(), clock.now());
        for _ in 0..200 {
            take_now(&limiter, &clock, route(1)).unwrap();
        }
    }

    #[test]
    fn up_to_remaining_requests_fly_at_once_then_wait_for_the_reset() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let start = clock.now();
        let probe = take_now(&limiter, &clock, route(1)).unwrap();
        limiter.complete(probe, &headers("h", 5, 4, 2.5), clock.now());
        let slots: Vec<Slot> = (0..4)
            .map(|_| take_now(&limiter, &clock, route(1)).unwrap())
            .collect();
        assert_eq!(slots.len(), 4);
        limiter
            .acquire(route(1), &clock, start + 10 * SECOND)
            .unwrap();
        assert!(clock.now() - start >= Duration::from_millis(2500));
    }

    #[test]
    fn answers_arriving_out_of_order_lose_no_slot() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let probe = take_now(&limiter, &clock, route(1)).unwrap();
        limiter.complete(probe, &headers("h", 5, 4, 1.0), clock.now());
        let a = take_now(&limiter, &clock, route(1)).unwrap();
        let b = take_now(&limiter, &clock, route(1)).unwrap();
        // Discord counted both; b's answer comes first, then a's.
        limiter.complete(b, &headers("h", 5, 2, 0.9), clock.now());
        limiter.complete(a, &headers("h", 5, 3, 0.9), clock.now());
        take_now(&limiter, &clock, route(1)).unwrap();
        take_now(&limiter, &clock, route(1)).unwrap();
        assert!(
            take_now(&limiter, &clock, route(1)).is_err(),
            "exactly 5 in the window"
        );
    }

    #[test]
    fn another_user_of_the_token_lowers_what_we_may_send() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let probe = take_now(&limiter, &clock, route(1)).unwrap();
        // Someone else already used 3 of 5.
        limiter.complete(probe, &headers("h", 5, 1, 1.0), clock.now());
        take_now(&limiter, &clock, route(1)).unwrap();
        assert!(take_now(&limiter, &clock, route(1)).is_err());
    }

    #[test]
    fn other_top_level_resources_are_limited_independently() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let probe = take_now(&limiter, &clock, route(1)).unwrap();
        limiter.complete(probe, &headers("h", 1, 0, 5.0), clock.now());
        assert!(take_now(&limiter, &clock, route(1)).is_err());
        take_now(&limiter, &clock, route(2)).unwrap();
    }

    #[test]
    fn routes_sharing_a_hash_share_one_bucket() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let a = RouteKey {
            template: "GET /a",
            top_level: None,
        };
        let b = RouteKey {
            template: "GET /b",
            top_level: None,
        };
        let slot = take_now(&limiter, &clock, a).unwrap();
        limiter.complete(slot, &headers("shared", 2, 1, 4.0), clock.now());
        let slot = take_now(&limiter, &clock, b).unwrap();
        limiter.complete(slot, &headers("shared", 2, 0, 4.0), clock.now());
        assert!(
            take_now(&limiter, &clock, a).is_err(),
            "b used a's last slot"
        );
    }

    #[test]
    fn a_wait_beyond_the_deadline_is_refused_without_sleeping() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let start = clock.now();
        let probe = take_now(&limiter, &clock, route(1)).unwrap();
        limiter.complete(probe, &headers("h", 1, 0, 5.0), start);
        let refused = limiter
            .acquire(route(1), &clock, start + SECOND)
            .unwrap_err();
        assert!(refused.wait >= 5 * SECOND);
        assert_eq!(clock.now(), start);
    }

    #[test]
    fn the_global_limit_admits_50_in_any_rolling_second_and_no_more() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let start = clock.now();
        let mut sent = Vec::new();
        for n in 0..300 {
            let slot = limiter
                .acquire(route(n), &clock, start + 60 * SECOND)
                .unwrap();
            sent.push(clock.now());
            limiter.complete(slot, &Observed::default(), clock.now());
        }
        assert_eq!(
            sent.iter().filter(|t| **t == start).count(),
            50,
            "a burst of 50 is fine"
        );
        for (i, t) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().filter(|u| **u < *t + SECOND).count();
            assert!(
                in_window <= 50,
                "{in_window} requests within a second of #{i}"
            );
        }
        // And no slower than needed: 300 requests in just over 5 windows.
        assert!(*sent.last().unwrap() - start < Duration::from_millis(5 * 1025 + 1));
    }

    #[test]
    fn a_request_in_flight_keeps_its_place_in_the_global_second_until_a_second_after_its_answer() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let start = clock.now();
        let in_flight: Vec<Slot> = (0..50)
            .map(|n| take_now(&limiter, &clock, route(n)).unwrap())
            .collect();
        // Two seconds without an answer: Discord may count them any moment.
        clock.advance(2 * SECOND);
        assert!(
            take_now(&limiter, &clock, route(50)).is_err(),
            "51st while 50 fly"
        );
        for slot in in_flight {
            limiter.complete(slot, &Observed::default(), clock.now());
        }
        clock.advance(SECOND / 2);
        assert!(
            take_now(&limiter, &clock, route(51)).is_err(),
            "half a second after"
        );
        clock.advance(SECOND / 2);
        take_now(&limiter, &clock, route(52)).unwrap();
        assert!(clock.now() - start >= 3 * SECOND);
    }

    #[test]
    fn a_global_429_stops_every_route_of_the_bot() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let slot = take_now(&limiter, &clock, route(1)).unwrap();
        limiter.rate_limited(slot, &Observed::default(), 3 * SECOND, true, clock.now());
        assert!(take_now(&limiter, &clock, route(2)).is_err());
        clock.advance(3 * SECOND + SAFETY_MARGIN);
        take_now(&limiter, &clock, route(2)).unwrap();
    }

    #[test]
    fn a_shared_429_pauses_only_that_route_and_resource() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let seen = Observed {
            scope: Some("shared".into()),
            bucket: Some("h".into()),
            ..Observed::default()
        };
        let slot = take_now(&limiter, &clock, route(1)).unwrap();
        limiter.rate_limited(slot, &seen, 2 * SECOND, false, clock.now());
        assert!(take_now(&limiter, &clock, route(1)).is_err());
        take_now(&limiter, &clock, route(2)).unwrap();
    }

    const EDIT: &str = "PATCH /channels/:channel_id/messages/:id";

    /// Two routes of one resource that Discord puts in one bucket.
    fn send_and_edit(top: u64) -> (RouteKey, RouteKey) {
        let edit = RouteKey {
            template: EDIT,
            top_level: Some(top),
        };
        (route(top), edit)
    }

    /// A known bucket of 5 with 3 left (each route probed once), shared by
    /// `send` and `edit`.
    fn known_bucket(limiter: &BotLimiter, clock: &ManualClock) -> (RouteKey, RouteKey) {
        known_bucket_of(limiter, clock, 1)
    }

    fn known_bucket_of(
        limiter: &BotLimiter,
        clock: &ManualClock,
        top: u64,
    ) -> (RouteKey, RouteKey) {
        let (send, edit) = send_and_edit(top);
        let probe = take_now(limiter, clock, send).unwrap();
        limiter.complete(probe, &headers("h", 5, 4, 5.0), clock.now());
        let probe = take_now(limiter, clock, edit).unwrap();
        limiter.complete(probe, &headers("h", 5, 3, 5.0), clock.now());
        (send, edit)
    }

    fn shared_429() -> Observed {
        Observed {
            scope: Some("shared".into()),
            ..headers("h", 5, 3, 5.0)
        }
    }

    /// A 429 whose scope is `user` but whose bucket Discord says had room.
    fn hidden_limit_429() -> Observed {
        Observed {
            scope: Some("user".into()),
            ..headers("h", 5, 3, 5.0)
        }
    }

    /// Takes slots on `route` until none is left now.
    fn slots_left(limiter: &BotLimiter, clock: &ManualClock, route: RouteKey) -> usize {
        let mut taken = Vec::new();
        while let Ok(slot) = take_now(limiter, clock, route) {
            taken.push(slot);
        }
        taken.len()
    }

    #[test]
    fn a_shared_429_holds_back_only_its_route_and_leaves_the_bucket_its_slots() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let (send, edit) = known_bucket(&limiter, &clock);
        let slot = take_now(&limiter, &clock, send).unwrap();
        let stopped = limiter.rate_limited(slot, &shared_429(), 2 * SECOND, false, clock.now());
        assert_eq!(stopped, Stopped::Route);
        assert!(take_now(&limiter, &clock, send).is_err(), "send is held");
        // Discord did not count the refused send: 3 left, as before it.
        assert_eq!(slots_left(&limiter, &clock, edit), 3);
    }

    #[test]
    fn a_429_while_discord_says_the_bucket_had_room_holds_back_only_its_route() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let (send, edit) = known_bucket(&limiter, &clock);
        let slot = take_now(&limiter, &clock, send).unwrap();
        let seen = hidden_limit_429();
        let stopped = limiter.rate_limited(slot, &seen, 582 * SECOND, false, clock.now());
        assert_eq!(stopped, Stopped::Route);
        assert!(take_now(&limiter, &clock, send).is_err(), "send is held");
        assert_eq!(slots_left(&limiter, &clock, edit), 3);
    }

    #[test]
    fn a_held_route_is_sent_again_once_its_retry_after_is_over() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let (send, _) = known_bucket(&limiter, &clock);
        let start = clock.now();
        let slot = take_now(&limiter, &clock, send).unwrap();
        let retry_after = Duration::from_millis(300);
        limiter.rate_limited(slot, &shared_429(), retry_after, false, start);
        limiter.acquire(send, &clock, start + SECOND).unwrap();
        assert_eq!(clock.now() - start, retry_after + SAFETY_MARGIN);
    }

    #[test]
    fn a_held_request_first_in_its_buckets_line_does_not_hold_back_the_others() {
        let limiter = Arc::new(limiter());
        let clock = SystemClock;
        let (send, edit) = send_and_edit(1);
        for route in [send, edit] {
            let probe = limiter.acquire(route, &clock, Instant::now()).unwrap();
            limiter.complete(probe, &headers("h", 5, 4, 60.0), Instant::now());
        }
        // The bucket learns again, so one probe goes out and the rest line up.
        let slot = limiter.acquire(send, &clock, Instant::now()).unwrap();
        let bucket_429 = Observed {
            scope: Some("user".into()),
            ..headers("h", 5, 0, 0.0)
        };
        limiter.rate_limited(slot, &bucket_429, Duration::ZERO, false, Instant::now());
        std::thread::sleep(SAFETY_MARGIN * 2);
        let probe = limiter.acquire(send, &clock, Instant::now()).unwrap();
        {
            let limiter = Arc::clone(&limiter);
            std::thread::spawn(move || {
                // First in the bucket's line, then held by the probe's 429.
                let _ = limiter.acquire(send, &SystemClock, Instant::now() + 30 * SECOND);
            });
        }
        std::thread::sleep(Duration::from_millis(50));
        let hold = 5 * SECOND;
        limiter.rate_limited(probe, &shared_429(), hold, false, Instant::now());
        let started = Instant::now();
        limiter
            .acquire(edit, &clock, started + 2 * hold)
            .expect("edit is not behind the held send");
        assert!(started.elapsed() < hold / 2, "{:?}", started.elapsed());
    }

    #[test]
    fn a_bucket_429_without_room_still_stops_the_whole_bucket() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let (send, edit) = known_bucket(&limiter, &clock);
        let slot = take_now(&limiter, &clock, send).unwrap();
        let seen = Observed {
            scope: Some("user".into()),
            ..headers("h", 5, 0, 2.0)
        };
        let stopped = limiter.rate_limited(slot, &seen, 2 * SECOND, false, clock.now());
        assert_eq!(stopped, Stopped::Bucket);
        assert!(take_now(&limiter, &clock, send).is_err());
        assert!(
            take_now(&limiter, &clock, edit).is_err(),
            "the bucket waits"
        );
        assert_eq!(limiter.holds(), 0);
    }

    #[test]
    fn a_429_that_says_nothing_of_the_bucket_stops_the_bucket() {
        let seen = Observed {
            scope: Some("user".into()),
            ..Observed::default()
        };
        assert_eq!(seen.stopped(false), Stopped::Bucket);
        assert_eq!(shared_429().stopped(true), Stopped::Bot);
    }

    #[test]
    fn a_sub_limit_hold_past_the_deadline_is_refused_at_once_with_its_wait() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let (send, _) = known_bucket(&limiter, &clock);
        let start = clock.now();
        let slot = take_now(&limiter, &clock, send).unwrap();
        limiter.rate_limited(slot, &hidden_limit_429(), 582 * SECOND, false, start);
        let refused = limiter
            .acquire(send, &clock, start + 10 * SECOND)
            .unwrap_err();
        assert_eq!(refused.wait, 582 * SECOND + SAFETY_MARGIN);
        assert_eq!(clock.now(), start, "refused without waiting");
    }

    #[test]
    fn ended_holds_are_pruned() {
        let clock = ManualClock::new();
        let limiter = limiter();
        for top in 1..=3 {
            let slot = take_now(&limiter, &clock, route(top)).unwrap();
            limiter.rate_limited(slot, &shared_429(), SECOND, false, clock.now());
        }
        assert_eq!(limiter.holds(), 3);
        clock.advance(SECOND + SAFETY_MARGIN);
        limiter.sweep(clock.now());
        assert_eq!(limiter.holds(), 0);
    }

    #[test]
    fn holds_are_bounded_and_past_the_bound_a_sub_limit_stops_its_bucket() {
        let clock = ManualClock::new();
        let limiter = BotLimiter::new(10_000);
        for top in 0..MAX_HOLDS as u64 {
            let slot = take_now(&limiter, &clock, route(top)).unwrap();
            let stopped =
                limiter.rate_limited(slot, &shared_429(), 60 * SECOND, false, clock.now());
            assert_eq!(stopped, Stopped::Route);
        }
        let (send, edit) = known_bucket_of(&limiter, &clock, MAX_HOLDS as u64);
        let slot = take_now(&limiter, &clock, send).unwrap();
        let stopped = limiter.rate_limited(slot, &shared_429(), 60 * SECOND, false, clock.now());
        assert_eq!(stopped, Stopped::Bucket);
        assert_eq!(limiter.holds(), MAX_HOLDS);
        assert!(
            take_now(&limiter, &clock, edit).is_err(),
            "its bucket waits"
        );
    }

    #[test]
    fn an_unexpected_429_makes_the_bucket_learn_again_with_one_request() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let probe = take_now(&limiter, &clock, route(1)).unwrap();
        limiter.complete(probe, &headers("h", 5, 4, 1.0), clock.now());
        let slot = take_now(&limiter, &clock, route(1)).unwrap();
        let seen = Observed {
            scope: Some("user".into()),
            ..headers("h", 5, 0, 1.0)
        };
        limiter.rate_limited(slot, &seen, SECOND, false, clock.now());
        clock.advance(SECOND + SAFETY_MARGIN);
        let _probe = take_now(&limiter, &clock, route(1)).unwrap();
        assert!(
            take_now(&limiter, &clock, route(1)).is_err(),
            "only one re-learning request"
        );
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_request_probe() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let probe = take_now(&limiter, &clock, route(1)).unwrap();
        limiter.abandon(probe, clock.now());
        take_now(&limiter, &clock, route(1)).unwrap();
    }

    #[test]
    fn idle_buckets_are_swept() {
        let clock = ManualClock::new();
        let limiter = limiter();
        let probe = take_now(&limiter, &clock, route(1)).unwrap();
        limiter.complete(probe, &headers("h", 5, 4, 1.0), clock.now());
        assert_eq!(limiter.sweep(clock.now()), 1);
        clock.advance(BUCKET_IDLE_TTL + SECOND);
        assert_eq!(limiter.sweep(clock.now()), 0);
    }

    #[test]
    fn a_waiting_request_holds_no_lock_that_blocks_other_buckets() {
        let limiter = Arc::new(limiter());
        let clock = SystemClock;
        let probe = limiter.acquire(route(1), &clock, Instant::now()).unwrap();
        // Route 1 is spent for 5 s; a waiter sleeps on it.
        limiter.complete(probe, &headers("h", 1, 0, 5.0), Instant::now());
        {
            let limiter = Arc::clone(&limiter);
            std::thread::spawn(move || {
                let _ = limiter.acquire(route(1), &SystemClock, Instant::now() + 10 * SECOND);
            });
        }
        std::thread::sleep(Duration::from_millis(50));
        // Had the waiter kept the lock while it sleeps, this would wait the
        // 5 s with it; a busy machine delays it by milliseconds, not that.
        let started = Instant::now();
        limiter.acquire(route(2), &clock, Instant::now()).unwrap();
        assert!(started.elapsed() < 2 * SECOND, "{:?}", started.elapsed());
    }

    /// A clock whose waits would last ten seconds unless something wakes
    /// the waiter: a waiter that is only polled would take that long.
    struct SlowPolls;

    impl Clock for SlowPolls {
        fn now(&self) -> Instant {
            Instant::now()
        }
        fn wait(&self, _timeout: Duration, block: &mut dyn FnMut(Duration)) {
            block(10 * SECOND);
        }
    }

    #[test]
    fn an_answer_wakes_requests_waiting_on_a_probe() {
        let limiter = Arc::new(limiter());
        let probe = limiter
            .acquire(route(1), &SystemClock, Instant::now())
            .unwrap();
        let waiter = {
            let limiter = Arc::clone(&limiter);
            std::thread::spawn(move || {
                let started = Instant::now();
                limiter
                    .acquire(route(1), &SlowPolls, Instant::now() + 20 * SECOND)
                    .unwrap();
                started.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(10));
        limiter.complete(probe, &headers("h", 5, 4, 1.0), Instant::now());
        let waited = waiter.join().unwrap();
        assert!(waited < 5 * SECOND, "polled, not woken: {waited:?}");
    }
}
