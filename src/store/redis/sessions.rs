//! store::redis::sessions: sessions in Redis, so several instances behind a load
//! balancer act as one service (`--redis-url`).
//!
//! A session made on one instance works on every other at once, a logout
//! anywhere ends it everywhere, and an instance restart loses nothing: the
//! instances keep no session state of their own. What each keeps locally is
//! a cache of bot entries (`Arc<Bot>` by bot hash), so a bot's requests on
//! one instance share one local limiter, as in memory mode, and a token is
//! unsealed once per instance rather than per request.
//!
//! Redis data layout (`seal` says what the hashes are):
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `dbb:session:<HMAC(session ID)>` | hash | `t` sealed token, `b` bot hash, `i`/`u` bot id and name, `p` the 6-character log prefix | idle timeout, refreshed on use |
//! | `dbb:sessions` | zset | session hashes scored by expiry (Redis time, ms): `--max-sessions` across the cluster | trimmed at each login |
//! | `dbb:bot:<HMAC(token)>` | set | the bot's session hashes, to end them all when Discord rejects the token | idle timeout, refreshed on use |
//!
//! Each operation is one Lua script, so one round trip, atomic, and timed by
//! Redis's clock (`TIME`), which every instance shares. The scripts name
//! keys they derive, so this needs one Redis (or a primary), not Redis
//! Cluster.
//!
//! Architecture invariants: Redis never sees a token or a session ID in
//! clear; no log line or error names a key, a token or the Redis URL (it may
//! carry a password); every Redis call is bounded by `--redis-timeout`, and
//! a failure is `StoreError::Unavailable` (503), never a hang or a panic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::Script;

use crate::discord::bots::{Bot, BotRegistry, Identity, Token};
use crate::store::redis::RedisPool;
use crate::store::seal::SessionKey;
use crate::store::{SessionId, SessionStore, StoreError};

const SESSION_KEY_PREFIX: &str = "dbb:session:";
const BOT_KEY_PREFIX: &str = "dbb:bot:";
const SESSIONS_ZSET: &str = "dbb:sessions";
/// A cached bot entry unused this long is dropped (its local limiter state
/// with it); the next request unseals the token again.
const BOT_CACHE_IDLE: Duration = Duration::from_secs(600);

/// Logs in: trims expired entries, refuses past --max-sessions (0) and
/// --max-sessions-per-bot (-1), stores the session and indexes it under its
/// bot.
const CREATE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[9]) then return -1 end
redis.call('HSET', KEYS[1], 't', ARGV[3], 'b', ARGV[4], 'i', ARGV[5], 'u', ARGV[6], 'p', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[8])
redis.call('ZADD', KEYS[3], now + ttl, ARGV[8])
redis.call('PEXPIRE', KEYS[3], ttl)
return 1
";

/// A request: the session's bot, refreshing the idle TTLs (one round trip).
const GET: &str = r"
local v = redis.call('HMGET', KEYS[1], 't', 'b', 'i', 'u')
if not v[1] then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], 'XX', now + ttl, ARGV[2])
local bot = ARGV[3] .. v[2]
redis.call('ZADD', bot, 'XX', now + ttl, ARGV[2])
redis.call('ZREMRANGEBYSCORE', bot, '-inf', now)
redis.call('PEXPIRE', bot, ttl)
return v
";

/// Logout: the session goes from all three places at once.
const REMOVE: &str = r"
local v = redis.call('HMGET', KEYS[1], 't', 'b', 'i', 'u')
if not v[1] then return false end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', ARGV[2] .. v[2], ARGV[1])
return v
";

/// Discord rejected the token: every session of the bot goes.
const REMOVE_BOT: &str = r"
local prefixes = {}
for _, h in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local p = redis.call('HGET', ARGV[1] .. h, 'p')
  if p then table.insert(prefixes, p) end
  redis.call('DEL', ARGV[1] .. h)
  redis.call('ZREM', KEYS[2], h)
end
redis.call('DEL', KEYS[1])
return prefixes
";

/// What a sealed token is bound to: its session and its bot.
fn seal_context(session_hash: &str, bot_hash: &str) -> String {
    format!("{session_hash}:{bot_hash}")
}

/// (sealed token, bot hash, bot id, bot name) as the scripts return them.
type Stored = (Vec<u8>, String, String, String);

struct Cached {
    bot: Arc<Bot>,
    used: Instant,
}

pub struct RedisStore {
    pool: Arc<RedisPool>,
    key: SessionKey,
    bots: Arc<BotRegistry>,
    cache: Mutex<HashMap<String, Cached>>,
    max_sessions: u64,
    max_per_bot: u32,
    ttl_ms: u64,
    create: Script,
    get: Script,
    remove: Script,
    remove_bot: Script,
}

impl RedisStore {
    pub fn new(
        pool: Arc<RedisPool>,
        key: SessionKey,
        bots: Arc<BotRegistry>,
        max_sessions: u64,
        max_per_bot: u32,
        idle_timeout: Duration,
    ) -> RedisStore {
        RedisStore {
            pool,
            key,
            bots,
            cache: Mutex::new(HashMap::new()),
            max_sessions,
            max_per_bot,
            ttl_ms: idle_timeout.as_millis().max(1) as u64,
            create: Script::new(CREATE),
            get: Script::new(GET),
            remove: Script::new(REMOVE),
            remove_bot: Script::new(REMOVE_BOT),
        }
    }

    fn bot_hash(&self, bot: &Bot) -> String {
        self.key.bot_hash(bot.token().authorization().as_bytes())
    }

    /// This instance's entry for a stored session's bot: cached, or made
    /// from the unsealed token (and then cached); `None` for a token Discord
    /// rejected, which is never sent again.
    ///
    /// The seal is opened every time, cache hit or not: it is bound to the
    /// session and bot hashes, so a value moved or edited in Redis cannot
    /// lend one session another bot (a few hundred nanoseconds).
    fn local_bot(&self, hash: &str, stored: Stored) -> Result<Option<Arc<Bot>>, StoreError> {
        let (sealed, bot_hash, id, username) = stored;
        let token = self
            .key
            .open(&sealed, seal_context(hash, &bot_hash).as_bytes())
            .and_then(|plain| String::from_utf8(plain).ok())
            .and_then(|text| Token::parse(&text).ok())
            .ok_or_else(|| {
                log::error!("a session's sealed token does not open: is --session-key the same on every instance?");
                StoreError::Unavailable(
                    "a stored session cannot be read with this instance's session key".into(),
                )
            })?;
        if let Some(cached) = self.cache.lock().get_mut(&bot_hash) {
            cached.used = Instant::now();
            return Ok(Some(Arc::clone(&cached.bot)));
        }
        if self.bots.was_rejected(&token) {
            return Ok(None);
        }
        let bot = self.bots.get_or_create(token);
        if bot.identity().id.is_empty() {
            bot.set_identity(Identity { id, username });
        }
        self.cache.lock().insert(
            bot_hash,
            Cached {
                bot: Arc::clone(&bot),
                used: Instant::now(),
            },
        );
        Ok(Some(bot))
    }
}

impl SessionStore for RedisStore {
    fn create(&self, bot: Arc<Bot>) -> Result<SessionId, StoreError> {
        let id = SessionId::generate();
        let hash = self.key.session_hash(id.as_str());
        let bot_hash = self.bot_hash(&bot);
        let sealed = self.key.seal(
            bot.token().authorization().as_bytes(),
            seal_context(&hash, &bot_hash).as_bytes(),
        );
        let identity = bot.identity();
        let created: i64 = self.pool.run(|c| {
            self.create
                .key(format!("{SESSION_KEY_PREFIX}{hash}"))
                .key(SESSIONS_ZSET)
                .key(format!("{BOT_KEY_PREFIX}{bot_hash}"))
                .arg(self.ttl_ms)
                .arg(self.max_sessions)
                .arg(sealed)
                .arg(&bot_hash)
                .arg(&identity.id)
                .arg(&identity.username)
                .arg(id.prefix())
                .arg(&hash)
                .arg(self.max_per_bot)
                .invoke(c)
        })?;
        match created {
            0 => return Err(StoreError::Full),
            -1 => {
                return Err(StoreError::BotFull {
                    limit: self.max_per_bot,
                });
            }
            _ => {}
        }
        self.cache.lock().insert(
            bot_hash,
            Cached {
                bot,
                used: Instant::now(),
            },
        );
        Ok(id)
    }

    fn get(&self, id: &SessionId) -> Result<Option<Arc<Bot>>, StoreError> {
        let hash = self.key.session_hash(id.as_str());
        let stored: Option<Stored> = self.pool.run(|c| {
            self.get
                .key(format!("{SESSION_KEY_PREFIX}{hash}"))
                .key(SESSIONS_ZSET)
                .arg(self.ttl_ms)
                .arg(&hash)
                .arg(BOT_KEY_PREFIX)
                .invoke(c)
        })?;
        stored.map_or(Ok(None), |stored| self.local_bot(&hash, stored))
    }

    fn remove(&self, id: &SessionId) -> Result<Option<Arc<Bot>>, StoreError> {
        let hash = self.key.session_hash(id.as_str());
        let stored: Option<Stored> = self.pool.run(|c| {
            self.remove
                .key(format!("{SESSION_KEY_PREFIX}{hash}"))
                .key(SESSIONS_ZSET)
                .arg(&hash)
                .arg(BOT_KEY_PREFIX)
                .invoke(c)
        })?;
        stored.map_or(Ok(None), |stored| self.local_bot(&hash, stored))
    }

    /// Counted in the bot's index by expiry, against Redis's own clock (the
    /// one the scripts stamp them with).
    fn sessions_of(&self, bot: &Arc<Bot>) -> Result<usize, StoreError> {
        let bot_hash = self.bot_hash(bot);
        self.pool.run(|c| {
            redis::Script::new(
                "local t = redis.call('TIME') \
                 local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
                 return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')",
            )
            .key(format!("{BOT_KEY_PREFIX}{bot_hash}"))
            .invoke(c)
        })
    }

    fn remove_bot(&self, bot: &Arc<Bot>) -> Result<Vec<String>, StoreError> {
        let bot_hash = self.bot_hash(bot);
        self.cache.lock().remove(&bot_hash);
        self.pool.run(|c| {
            self.remove_bot
                .key(format!("{BOT_KEY_PREFIX}{bot_hash}"))
                .key(SESSIONS_ZSET)
                .arg(SESSION_KEY_PREFIX)
                .invoke(c)
        })
    }

    /// Redis expires sessions by itself; this only drops bot entries this
    /// instance has not used for a while.
    fn sweep(&self) -> Vec<(String, Arc<Bot>)> {
        self.cache
            .lock()
            .retain(|_, cached| cached.used.elapsed() < BOT_CACHE_IDLE);
        Vec::new()
    }

    fn len(&self) -> usize {
        self.pool
            .run(|c| redis::cmd("ZCARD").arg(SESSIONS_ZSET).query::<usize>(c))
            .unwrap_or(0)
    }

    fn health(&self) -> Result<(), StoreError> {
        self.pool
            .run(|c| redis::cmd("PING").query::<String>(c))
            .map(drop)
    }
}
