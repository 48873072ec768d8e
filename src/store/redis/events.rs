//! store::redis::events: the cluster's Gateway leases and shared event
//! streams (`events::cluster` says why and how; this is the Redis side).
//!
//! Redis data layout, per bot's Discord ID:
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `dbb:gw:<bot>:lease` | string | the holder's fencing number | `LEASE_TTL` after the last renewal |
//! | `dbb:gw:<bot>:fence` | string | the last fencing number given | `KEEP` after the last |
//! | `dbb:gw:<bot>:pos` | hash | `last`: the last event ID; `p:<shard>`: the last sequence published | `KEEP` after the last event |
//! | `dbb:gw:<bot>:events` | stream | entries `0-<event ID>`: `k` type, `s` shard, `g`/`c` guild and channel, `m` marker, `t` received at, `d` data; trimmed to about `STREAM_LEN` | `KEEP` after the last event |
//! | `dbb:gw:<bot>:sessions` | hash | per shard ID, its Gateway session (ID, resume URL, shard count), sealed to the bot; written with its READY marker | `KEEP` after the last event |
//! | `dbb:gw:<bot>:want` | zset | instances with a subscriber, scored by when that lapses (ms) | with its last member |
//! | `dbb:gw:<bot>:status` | string | the holder's Gateway state, as `GET /api/gateway` shows it | with the lease |
//! | `dbb:gw:<bot>:gone` | string | the bot's last session logged out | `LEASE_TTL` × 2 |
//!
//! Every write that only the holder may make is a script that checks the
//! fence first, so an instance that lost its lease (paused, partitioned)
//! changes nothing.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::{Connection, Script, Value};

use crate::discord::gateway::ResumeState;
use crate::events::cluster::{LEASE_TTL, STREAM_LEN, TICK, unix_ms};
use crate::events::{Entry, Position, Published, Relay};
use crate::store::redis::RedisPool;
use crate::store::seal::SessionKey;

const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[3])
local fence = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], fence, 'PX', ARGV[1])
return fence
";

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
";

/// KEYS: lease, pos, events, sessions. ARGV: fence, position (`seq`,
/// `ready`, `none`), shard, sequence, stream length, the entry's fields,
/// then (`ready`) the sealed session. -1: fenced out; 0: a sequence
/// already published; else the event ID.
const PUBLISH: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local field = 'p:' .. ARGV[3]
if ARGV[2] == 'seq' then
  local last = tonumber(redis.call('HGET', KEYS[2], field) or '0')
  if tonumber(ARGV[4]) <= last then return 0 end
  redis.call('HSET', KEYS[2], field, ARGV[4])
elseif ARGV[2] == 'ready' then
  redis.call('HSET', KEYS[2], field, ARGV[4])
  redis.call('HSET', KEYS[4], ARGV[3], ARGV[13])
  redis.call('EXPIRE', KEYS[4], ARGV[14])
end
local id = redis.call('HINCRBY', KEYS[2], 'last', 1)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '0-' .. id,
  'k', ARGV[6], 's', ARGV[7], 'g', ARGV[8], 'c', ARGV[9], 'm', ARGV[10],
  't', ARGV[11], 'd', ARGV[12])
redis.call('EXPIRE', KEYS[2], ARGV[14])
redis.call('EXPIRE', KEYS[3], ARGV[14])
redis.call('EXPIRE', KEYS[4], ARGV[14])
return id
";

const SHARE_STATUS: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
";

/// How long a bot's stream, its positions and sessions outlive its last
/// event. After that its IDs start again at 1: a client's older
/// `Last-Event-ID` is then past the last one given, and told of a gap.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many entries one read brings at most.
const READ_COUNT: usize = 1000;

pub struct RedisRelay {
    pool: Arc<RedisPool>,
    key: SessionKey,
    /// Names this instance in `want`.
    instance: String,
    /// The reader's own connection: its reads block longer than the pool's
    /// timeout allows.
    reader: Mutex<Option<Connection>>,
    acquire: Script,
    renew: Script,
    release: Script,
    publish: Script,
    share_status: Script,
}

fn key(bot: u64, what: &str) -> String {
    format!("dbb:gw:{bot}:{what}")
}

impl RedisRelay {
    pub fn new(pool: Arc<RedisPool>, key: SessionKey) -> RedisRelay {
        RedisRelay {
            pool,
            key,
            instance: nanoid::nanoid!(12),
            reader: Mutex::new(None),
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            publish: Script::new(PUBLISH),
            share_status: Script::new(SHARE_STATUS),
        }
    }

    fn run<T>(
        &self,
        call: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, String> {
        self.pool.run(call).map_err(|e| format!("{e:?}"))
    }
}

/// What a bot's sealed sessions are bound to.
fn sessions_context(bot: u64) -> Vec<u8> {
    format!("redis:gateway:{bot}").into_bytes()
}

impl Relay for RedisRelay {
    fn acquire(&self, bot: u64) -> Result<Option<u64>, String> {
        let fence: u64 = self.run(|c| {
            self.acquire
                .key(key(bot, "lease"))
                .key(key(bot, "fence"))
                .key(key(bot, "gone"))
                .arg(LEASE_TTL.as_millis() as u64)
                .arg(KEEP.as_secs())
                .invoke(c)
        })?;
        Ok((fence > 0).then_some(fence))
    }

    fn renew(&self, bot: u64, fence: u64) -> Result<bool, String> {
        let renewed: u8 = self.run(|c| {
            self.renew
                .key(key(bot, "lease"))
                .arg(fence)
                .arg(LEASE_TTL.as_millis() as u64)
                .invoke(c)
        })?;
        Ok(renewed == 1)
    }

    fn release(&self, bot: u64, fence: u64) {
        let released: Result<u8, String> =
            self.run(|c| self.release.key(key(bot, "lease")).arg(fence).invoke(c));
        if let Err(reason) = released {
            log::warn!("cannot give up the Gateway lease of bot {bot} ({reason}): it runs out");
        }
    }

    fn sessions(&self, bot: u64) -> Result<Vec<ResumeState>, String> {
        type Fields<T> = Vec<(String, T)>;
        let (sealed, positions): (Fields<Vec<u8>>, Fields<String>) = self.run(|c| {
            redis::pipe()
                .hgetall(key(bot, "sessions"))
                .hgetall(key(bot, "pos"))
                .query(c)
        })?;
        let mut sessions = Vec::new();
        for (shard, sealed) in sealed {
            let opened = self
                .key
                .open(&sealed, &sessions_context(bot))
                .and_then(|json| serde_json::from_slice::<ResumeState>(&json).ok());
            let Some(mut session) = opened else {
                log::warn!("a Gateway session kept for bot {bot} does not open with this key");
                continue;
            };
            // Resume from what reached the stream: Discord replays the rest.
            let field = format!("p:{shard}");
            if let Some(seq) = positions
                .iter()
                .find(|(f, _)| *f == field)
                .and_then(|(_, seq)| seq.parse().ok())
            {
                session.seq = seq;
            }
            sessions.push(session);
        }
        Ok(sessions)
    }

    fn forget_sessions(&self, bot: u64) {
        let deleted: Result<u8, String> =
            self.run(|c| redis::cmd("DEL").arg(key(bot, "sessions")).query(c));
        if let Err(reason) = deleted {
            log::warn!("cannot forget the Gateway sessions of bot {bot}: {reason}");
        }
    }

    fn publish(
        &self,
        bot: u64,
        fence: u64,
        entry: &Entry,
        at: Position<'_>,
    ) -> Result<Published, String> {
        let (mode, seq, sealed) = match at {
            Position::Seq(seq) => ("seq", seq, Vec::new()),
            Position::Ready(session) => {
                let json = serde_json::to_vec(session).unwrap_or_default();
                (
                    "ready",
                    session.seq,
                    self.key.seal(&json, &sessions_context(bot)),
                )
            }
            Position::None => ("none", 0, Vec::new()),
        };
        let id: i64 = self.run(|c| {
            self.publish
                .key(key(bot, "lease"))
                .key(key(bot, "pos"))
                .key(key(bot, "events"))
                .key(key(bot, "sessions"))
                .arg(fence)
                .arg(mode)
                .arg(entry.shard[0])
                .arg(seq)
                .arg(STREAM_LEN)
                .arg(&entry.kind)
                .arg(format!("{}/{}", entry.shard[0], entry.shard[1]))
                .arg(entry.guild_id.map_or(String::new(), |g| g.to_string()))
                .arg(entry.channel_id.map_or(String::new(), |c| c.to_string()))
                .arg(if entry.marker { "1" } else { "0" })
                .arg(&entry.received_at)
                .arg(&entry.data)
                .arg(&sealed)
                .arg(KEEP.as_secs())
                .invoke(c)
        })?;
        Ok(match id {
            -1 => Published::Fenced,
            0 => Published::Duplicate,
            id => Published::Id(id as u64),
        })
    }

    fn backfill(&self, bot: u64) -> Result<Vec<Entry>, String> {
        let reply: Value = self.run(|c| {
            redis::cmd("XRANGE")
                .arg(key(bot, "events"))
                .arg("-")
                .arg("+")
                .query(c)
        })?;
        Ok(entries(&reply))
    }

    fn read(&self, after: &[(u64, u64)], wait: Duration) -> Result<Vec<(u64, Entry)>, String> {
        let mut reader = self.reader.lock();
        if reader.is_none() {
            *reader = Some(
                self.pool
                    .dedicated(wait)
                    .map_err(|e| format!("cannot connect to Redis: {}", e.category()))?,
            );
        }
        let connection = reader.as_mut().expect("connected above");
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS");
        for (bot, _) in after {
            command.arg(key(*bot, "events"));
        }
        for (_, last) in after {
            command.arg(format!("0-{last}"));
        }
        let reply: Value = match command.query(connection) {
            Ok(reply) => reply,
            Err(e) => {
                *reader = None;
                return Err(format!("Redis: {}", e.category()));
            }
        };
        let mut out = Vec::new();
        for (stream, items) in streams(&reply) {
            let Some(bot) = stream
                .strip_prefix("dbb:gw:")
                .and_then(|rest| rest.strip_suffix(":events"))
                .and_then(|id| id.parse().ok())
            else {
                continue;
            };
            out.extend(entries(items).into_iter().map(|entry| (bot, entry)));
        }
        Ok(out)
    }

    fn want(&self, bots: &[u64]) -> Result<(), String> {
        if bots.is_empty() {
            return Ok(());
        }
        let now = unix_ms();
        let until = now + (TICK * 3).as_millis() as i64;
        self.run(|c| {
            let mut pipe = redis::pipe();
            for bot in bots {
                let want = key(*bot, "want");
                pipe.cmd("ZREMRANGEBYSCORE")
                    .arg(&want)
                    .arg("-inf")
                    .arg(now)
                    .ignore()
                    .zadd(&want, &self.instance, until)
                    .ignore()
                    .cmd("PEXPIREAT")
                    .arg(&want)
                    .arg(until)
                    .ignore();
            }
            pipe.query::<()>(c)
        })
    }

    fn wanted(&self, bot: u64) -> Result<bool, String> {
        let count: u64 = self.run(|c| {
            redis::cmd("ZCOUNT")
                .arg(key(bot, "want"))
                .arg(unix_ms())
                .arg("+inf")
                .query(c)
        })?;
        Ok(count > 0)
    }

    fn share_status(&self, bot: u64, fence: u64, status: &str) -> Result<(), String> {
        let _: u8 = self.run(|c| {
            self.share_status
                .key(key(bot, "lease"))
                .key(key(bot, "status"))
                .arg(fence)
                .arg(status)
                .arg(LEASE_TTL.as_millis() as u64)
                .invoke(c)
        })?;
        Ok(())
    }

    fn status(&self, bot: u64) -> Result<Option<String>, String> {
        self.run(|c| redis::cmd("GET").arg(key(bot, "status")).query(c))
    }

    fn mark_gone(&self, bot: u64) {
        let marked: Result<(), String> = self.run(|c| {
            redis::cmd("SET")
                .arg(key(bot, "gone"))
                .arg(1)
                .arg("PX")
                .arg((LEASE_TTL * 2).as_millis() as u64)
                .query(c)
        });
        if let Err(reason) = marked {
            log::warn!("cannot tell the cluster bot {bot} is gone: {reason}");
        }
    }

    fn take_gone(&self, bot: u64) -> bool {
        let taken: Result<u8, String> =
            self.run(|c| redis::cmd("DEL").arg(key(bot, "gone")).query(c));
        taken == Ok(1)
    }
}

/// `XREAD`'s reply: `(stream key, its entries)`, as RESP2 arrays or RESP3
/// maps; nothing on a timeout.
fn streams(reply: &Value) -> Vec<(String, &Value)> {
    let pairs: Vec<(&Value, &Value)> = match reply {
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => Some((&pair[0], &pair[1])),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(name, items)| Some((text(name)?, items)))
        .collect()
}

/// Stream entries `[[id, [field, value, …]], …]`; an entry that is not
/// ours is skipped.
fn entries(reply: &Value) -> Vec<Entry> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items.iter().filter_map(entry).collect()
}

fn entry(item: &Value) -> Option<Entry> {
    let Value::Array(parts) = item else {
        return None;
    };
    let [id, Value::Array(fields)] = parts.as_slice() else {
        return None;
    };
    let id: u64 = text(id)?.strip_prefix("0-")?.parse().ok()?;
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|pair| text(&pair[0]).as_deref() == Some(name))
            .and_then(|pair| pair.get(1))
            .and_then(text)
    };
    let (shard, count) = field("s")?
        .split_once('/')
        .map(|(a, b)| (a.to_string(), b.to_string()))?;
    Some(Entry {
        id,
        kind: field("k")?,
        shard: [shard.parse().ok()?, count.parse().ok()?],
        guild_id: field("g").and_then(|g| g.parse().ok()),
        channel_id: field("c").and_then(|c| c.parse().ok()),
        marker: field("m").as_deref() == Some("1"),
        received_at: field("t")?,
        data: field("d")?,
    })
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}
