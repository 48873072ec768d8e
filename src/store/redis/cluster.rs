//! store::redis::cluster: Discord's per-bot limits kept by all instances together, through
//! Redis (`--redis-url`).
//!
//! Each instance keeps its local `ratelimit::BotLimiter`: it orders the
//! instance's own requests, learns buckets and waits on a condvar. But two
//! instances serving one bot would each allow the full limit, so right before
//! a request is sent, `discord` also asks the cluster (`ClusterLimiter`):
//!
//! - **global**: a sliding log per bot (a ZSET, Redis's clock) admits at
//!   most `--global-rate-limit` requests in any window of one second.
//!   Discord counts a request when it *arrives*, somewhere between our
//!   sending it and its answer, and how long that takes is not ours to know
//!   (a slow connect, a busy machine, a network hop). So an entry is
//!   stamped in the future when the request is admitted (`hold`: the
//!   upstream timeout and a second), which keeps it counted while it is in
//!   flight, and stamped again with Redis's time once its answer came,
//!   which is after Discord counted it: it then counts for one more
//!   second. Stamping at sending time with a 100 ms margin, as before,
//!   let two instances put 51 requests in one of Discord's seconds once a
//!   request took longer than the margin to arrive (issue #16).
//!   The re-stamps are batched by a `log-restamp` thread, off the request's
//!   path: a request still costs one round trip to Redis before it is sent,
//!   and a re-stamp that is late or lost only keeps the slot longer.
//! - **route buckets**, keyed by route template and top-level id: a hash of
//!   the bucket's `remaining` and `reset_at` as Discord's headers said. An
//!   unknown or expired bucket *probes*: one request in the whole cluster
//!   until its answer is recorded; a known bucket admits `remaining`
//!   requests, counted down in Redis, then waits for `reset_at`; a route
//!   whose answers carry no headers is *unlimited* for a minute.
//!
//! Both are one Lua script (`ADMIT`), so one round trip before a request is
//! sent. Answers are recorded (`RECORD`, a second round trip) only when they
//! teach the cluster something: a probe's answer, a 429, fewer `remaining`
//! than our own count, or headers on an unlimited route. So a bucket costs
//! one record per window, not one per request.
//!
//! Architecture invariants: scripts use Redis's `TIME`, so instances with
//! skewed clocks agree; every key expires, so nothing grows with bots or
//! routes; a bot is named in Redis by a keyed hash of its token (`seal`),
//! never by the token. Redis down is `StoreError::Unavailable` (503).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use redis::Script;

use crate::discord::bots::Bot;
use crate::discord::cluster::{Admission, Answer, ClusterLimiter, Mode, Ticket, Unreachable};
use crate::discord::guard::SharedCount;
use crate::discord::ratelimit::RouteKey;
use crate::store::StoreError;
use crate::store::redis::RedisPool;
use crate::store::seal::SessionKey;

/// Discord's global window.
const GLOBAL_WINDOW: Duration = Duration::from_secs(1);
/// Re-stamps waiting for the `log-restamp` thread; past this, a re-stamp is
/// skipped and its slot is held until its future stamp ages out.
const RESTAMP_QUEUE: usize = 4096;
/// How long the `log-restamp` thread waits before trying a failed batch
/// again.
const RESTAMP_RETRY_AFTER: Duration = Duration::from_millis(100);
/// Re-stamps sent to Redis in one script call at most.
const RESTAMP_BATCH: usize = 256;
/// How long the `log-restamp` thread lets answers gather after the first:
/// one script call for many answers under load (each call is a round trip
/// and Redis's CPU, on the same cores as ours), at the price of slots held
/// that much longer.
const RESTAMP_GATHER: Duration = Duration::from_millis(5);
/// Longest a waiter sleeps before asking again while another instance's
/// probe is out (its answer may come any moment).
const PROBE_POLL: Duration = Duration::from_millis(20);
/// How long an unlimited route (answers without headers) stays so.
const UNLIMITED_FOR_MS: u64 = 60_000;

/// One round trip: the bucket's state, then the bot's global log, then both
/// are taken. Returns {wait_ms, mode, left}.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local r = redis.call('HMGET', KEYS[2], 'remaining', 'reset_at', 'probe_until', 'unlimited')
local remaining, reset_at, probe_until = tonumber(r[1]), tonumber(r[2]), tonumber(r[3])
local mode
if r[4] then
  mode = 'unlimited'
elseif reset_at and now < reset_at then
  if remaining and remaining > 0 then mode = 'known' else return {reset_at - now, '', 0} end
elseif probe_until and now < probe_until then
  return {math.min(probe_until - now, tonumber(ARGV[5])), '', 0}
else
  mode = 'probe'
end
local window = tonumber(ARGV[2])
local hold = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
  if oldest > now then return {tonumber(ARGV[5]), '', 0} end
  return {math.max(1, oldest + window - now), '', 0}
end
redis.call('ZADD', KEYS[1], now + hold, ARGV[4])
redis.call('PEXPIRE', KEYS[1], hold + window + 1000)
local left = 0
if mode == 'known' then
  left = redis.call('HINCRBY', KEYS[2], 'remaining', -1)
elseif mode == 'probe' then
  redis.call('HSET', KEYS[2], 'probe_until', now + tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]) + 60000)
end
return {0, mode, left}
";

/// The answers came: each entry of a global log (KEYS[i], member ARGV[i])
/// counts from now for one more window.
const RESTAMP: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', now, ARGV[i])
end
return #KEYS
";

/// What an answer taught. ARGV: kind (headers | limited | none | release),
/// remaining, reset_after_ms, whether it was the probe.
const RECORD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local kind = ARGV[1]
if ARGV[4] == '1' then redis.call('HDEL', KEYS[1], 'probe_until') end
if kind == 'release' then return 1 end
if kind == 'none' then
  redis.call('HDEL', KEYS[1], 'remaining', 'reset_at')
  redis.call('HSET', KEYS[1], 'unlimited', 1)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
  return 1
end
local rem, after = tonumber(ARGV[2]), tonumber(ARGV[3])
local cur = redis.call('HMGET', KEYS[1], 'remaining', 'reset_at')
local cur_rem, cur_reset = tonumber(cur[1]), tonumber(cur[2])
if kind == 'limited' or not (cur_reset and now < cur_reset) then
  redis.call('HSET', KEYS[1], 'remaining', rem, 'reset_at', now + after)
else
  redis.call('HSET', KEYS[1], 'remaining', math.min(cur_rem or rem, rem))
end
redis.call('HDEL', KEYS[1], 'unlimited')
redis.call('PEXPIRE', KEYS[1], after + 60000)
return 1
";

pub struct RedisLimiter {
    pool: Arc<RedisPool>,
    /// To the `log-restamp` thread: (global log key, member) of answered
    /// requests.
    restamps: SyncSender<(String, String)>,
    key: SessionKey,
    global_per_second: u32,
    /// How long a probe holds its bucket if its answer is never recorded.
    probe_hold: Duration,
    /// Makes global-log entries unique across instances.
    instance: String,
    counter: AtomicU64,
    admit: Script,
    record: Script,
}

impl RedisLimiter {
    /// `probe_hold`: the upstream timeout and a little more.
    pub fn new(
        pool: Arc<RedisPool>,
        key: SessionKey,
        global_per_second: u32,
        probe_hold: Duration,
    ) -> RedisLimiter {
        let (restamps, queue) = sync_channel(RESTAMP_QUEUE);
        let restamper_pool = Arc::clone(&pool);
        let started = std::thread::Builder::new()
            .name("log-restamp".into())
            .spawn(move || restamp_forever(&restamper_pool, &queue));
        if let Err(err) = started {
            // Entries then keep their future stamps: safe, and slower.
            log::warn!("cannot start the global-log re-stamp thread: {err}");
        }
        RedisLimiter {
            restamps,
            pool,
            key,
            global_per_second: global_per_second.max(1),
            probe_hold,
            instance: nanoid::nanoid!(12),
            counter: AtomicU64::new(0),
            admit: Script::new(ADMIT),
            record: Script::new(RECORD),
        }
    }
}

/// The invalid-request count of one `--outbound-ip-group`, in Redis: a
/// counter per 10-second slot of Redis's clock, each expiring after the
/// window, summed over the last 10 minutes. Instances that leave through
/// one IP share it, because Discord bans the IP, not the instance.
pub struct RedisInvalidCount {
    pool: Arc<RedisPool>,
    prefix: String,
    count: Script,
}

/// Sums the group's last 60 slots; with ARGV[1] = "add", first adds one to
/// the current slot.
const INVALID_COUNT: &str = r"
local t = redis.call('TIME')
local now = math.floor(tonumber(t[1]) / 10)
if ARGV[1] == 'add' then
  local key = KEYS[1] .. ':' .. now
  redis.call('INCR', key)
  redis.call('EXPIRE', key, 660)
end
local total = 0
for slot = now - 59, now do
  total = total + (tonumber(redis.call('GET', KEYS[1] .. ':' .. slot)) or 0)
end
return total
";

impl RedisInvalidCount {
    pub fn new(pool: Arc<RedisPool>, group: &str) -> RedisInvalidCount {
        RedisInvalidCount {
            pool,
            prefix: format!("dbb:invalid:{group}"),
            count: Script::new(INVALID_COUNT),
        }
    }
}

impl SharedCount for RedisInvalidCount {
    fn add(&self) -> Option<u64> {
        self.pool
            .run(|c| self.count.key(&self.prefix).arg("add").invoke::<u64>(c))
            .inspect_err(|e| log::warn!("cannot add to the shared invalid-request count: {e:?}"))
            .ok()
    }

    fn count(&self) -> Option<u64> {
        self.pool
            .run(|c| self.count.key(&self.prefix).arg("read").invoke::<u64>(c))
            .ok()
    }
}

impl ClusterLimiter for RedisLimiter {
    fn admit(&self, bot: &Bot, route: RouteKey) -> Result<Admission, Unreachable> {
        let bot_hash = self.key.bot_hash(bot.token().authorization().as_bytes());
        let route_key = format!(
            "dbb:rl:route:{bot_hash}:{}:{}",
            route.template,
            route.top_level.unwrap_or(0)
        );
        let member = format!(
            "{}-{}",
            self.instance,
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let log_key = format!("dbb:rl:global:{bot_hash}");
        let (wait_ms, mode, left): (u64, String, i64) = self
            .pool
            .run(|c| {
                self.admit
                    .key(&log_key)
                    .key(&route_key)
                    .arg(self.global_per_second)
                    .arg(GLOBAL_WINDOW.as_millis() as u64)
                    .arg(self.probe_hold.as_millis() as u64)
                    .arg(&member)
                    .arg(PROBE_POLL.as_millis() as u64)
                    .invoke(c)
            })
            .map_err(|err| match err {
                StoreError::Unavailable(reason) => Unreachable(reason),
                // The pool fails only as unavailable; the store's limits
                // are not the limiter's business.
                StoreError::Full | StoreError::BotFull { .. } => {
                    Unreachable("Redis refused the command".into())
                }
            })?;
        let mode = match mode.as_str() {
            "probe" => Mode::Probe,
            "known" => Mode::Known,
            "unlimited" => Mode::Unlimited,
            _ => return Ok(Admission::Wait(Duration::from_millis(wait_ms.max(1)))),
        };
        Ok(Admission::Go(Ticket {
            route_key,
            mode,
            left,
            log_key,
            log_entry: member,
        }))
    }

    fn record(&self, ticket: &Ticket, answer: Answer<'_>) {
        // Answered, or given up on: either way after Discord counted it.
        let restamp = (ticket.log_key.clone(), ticket.log_entry.clone());
        if let Err(TrySendError::Full(_)) = self.restamps.try_send(restamp) {
            log::warn!(
                "the global-log re-stamp queue is full; a slot is held until the upstream timeout has passed"
            );
        }
        let probe = ticket.mode == Mode::Probe;
        let (kind, remaining, reset_after) = match answer {
            Answer::Lost => ("release", 0, Duration::ZERO),
            Answer::RateLimited { global: true, .. } => ("release", 0, Duration::ZERO),
            Answer::RateLimited { retry_after, .. } => ("limited", 0, retry_after),
            Answer::Answered { seen, success } => match (seen.remaining, seen.reset_after) {
                (Some(remaining), Some(reset_after)) => {
                    let teaches = probe
                        || ticket.mode == Mode::Unlimited
                        || i64::from(remaining) < ticket.left;
                    if !teaches {
                        return;
                    }
                    ("headers", remaining, reset_after)
                }
                // Only a success without headers means "no limit": an error
                // page (a Cloudflare 5xx) says nothing about the route.
                _ if probe && success => ("none", 0, Duration::ZERO),
                _ if probe => ("release", 0, Duration::ZERO),
                _ => return,
            },
        };
        if kind == "release" && !probe {
            return;
        }
        let recorded: Result<i64, _> = self.pool.run(|c| {
            self.record
                .key(&ticket.route_key)
                .arg(kind)
                .arg(remaining)
                // Rounded up: waiting a millisecond longer is always safe.
                .arg(reset_after.as_micros().div_ceil(1000) as u64)
                .arg(if probe { "1" } else { "0" })
                .arg(UNLIMITED_FOR_MS)
                .invoke(c)
        });
        if let Err(err) = recorded {
            // The pool has logged the outage; a lost record only makes the
            // cluster probe again when the probe's hold ends.
            log::debug!("cannot record a Discord answer in Redis: {err:?}");
        }
    }
}

/// The `log-restamp` thread: waits for an answered request, lets others
/// gather for `RESTAMP_GATHER`, then re-stamps them all in one script call.
/// Ends when the limiter goes.
fn restamp_forever(pool: &RedisPool, queue: &Receiver<(String, String)>) {
    let script = Script::new(RESTAMP);
    let mut batch = Vec::with_capacity(RESTAMP_BATCH);
    while let Ok(first) = queue.recv() {
        batch.push(first);
        std::thread::sleep(RESTAMP_GATHER);
        while batch.len() < RESTAMP_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let restamp = || {
            pool.run(|c| {
                let mut call = script.prepare_invoke();
                for (key, member) in &batch {
                    call.key(key).arg(member);
                }
                call.invoke::<i64>(c)
            })
        };
        // Entries not re-stamped keep their future stamps and hold their
        // slots until `hold` runs out: a busy bot would wait that long on
        // every instance. So a passing fault gets a second try.
        if restamp().is_err() {
            std::thread::sleep(RESTAMP_RETRY_AFTER);
            if let Err(err) = restamp() {
                log::warn!(
                    "cannot re-stamp {} entries of the global log ({err:?}); their slots are \
                     held until the upstream timeout has passed",
                    batch.len()
                );
            }
        }
        batch.clear();
    }
}
