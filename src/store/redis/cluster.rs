//! store::redis::cluster: Discord's per-bot limits kept by all instances together, through
//! Redis (`--redis-url`).
//!
//! Each instance keeps its local `ratelimit::BotLimiter`: it orders the
//! instance's own requests, learns buckets and waits on a condvar. But two
//! instances serving one bot would each allow the full limit, so right before
//! a request is sent, `discord` also asks the cluster (`ClusterLimiter`):
//!
//! - **global**: a sliding log per bot (a ZSET of send times, Redis's clock)
//!   admits at most `--global-rate-limit` requests in any window of one
//!   second plus `GLOBAL_MARGIN`. The margin is there because the log is
//!   stamped when a request is *sent*, and Discord counts when it *arrives*:
//!   as long as the latency varies by less than the margin, no second of
//!   arrivals holds more than the limit. (The local log stamps answers
//!   instead, which would cost a second round trip per request here.)
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
use std::time::Duration;

use redis::Script;

use crate::discord::bots::Bot;
use crate::discord::cluster::{Admission, Answer, ClusterLimiter, Mode, Ticket, Unreachable};
use crate::discord::guard::SharedCount;
use crate::discord::ratelimit::RouteKey;
use crate::store::StoreError;
use crate::store::redis::RedisPool;
use crate::store::seal::SessionKey;

/// Added to the one-second global window; see the module docs.
pub const GLOBAL_MARGIN: Duration = Duration::from_millis(100);
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
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {math.max(1, tonumber(oldest[2]) + window - now), '', 0}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], window + 1000)
local left = 0
if mode == 'known' then
  left = redis.call('HINCRBY', KEYS[2], 'remaining', -1)
elseif mode == 'probe' then
  redis.call('HSET', KEYS[2], 'probe_until', now + tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]) + 60000)
end
return {0, mode, left}
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
        RedisLimiter {
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
        let window = Duration::from_secs(1) + GLOBAL_MARGIN;
        let (wait_ms, mode, left): (u64, String, i64) = self
            .pool
            .run(|c| {
                self.admit
                    .key(format!("dbb:rl:global:{bot_hash}"))
                    .key(&route_key)
                    .arg(self.global_per_second)
                    .arg(window.as_millis() as u64)
                    .arg(self.probe_hold.as_millis() as u64)
                    .arg(member)
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
        }))
    }

    fn record(&self, ticket: &Ticket, answer: Answer<'_>) {
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
