//! The Gateway's shared state: live connections, sessions with their
//! sequence numbers and replay buffers, each bot's session-start budget and
//! identify buckets, and the counters behind `GET /_fake/gateway/stats`.
//!
//! Why it exists: events come from many threads (REST writes, the control
//! API) and must reach the right sessions in one order per session, be kept
//! for Resume while a session is disconnected, and be counted. Rules and
//! their sources (discord-api-docs @ c98d64bc, `developers/events/`):
//! - `s` increases per session; Resume replays every dispatch after `seq`,
//!   in order, then RESUMED (gateway.mdx L255-265);
//! - a session survives a disconnect "for a few minutes" unless the client
//!   closed with 1000/1001 (gateway.mdx L240-242): `--gateway-session-ttl-ms`;
//! - events without a `guild_id` go to shard 0, others to
//!   `(guild_id >> 22) % num_shards` (gateway.mdx "Sharding", L612-633);
//! - identify concurrency: one IDENTIFY per bucket `shard_id %
//!   max_concurrency` per 5 s, more gets op 9 (gateway.mdx L509, L644-647);
//! - session starts: `total` per `reset_after` window, decremented by each
//!   accepted IDENTIFY, never by RESUME (gateway.mdx L188, L770-779).
//!
//! Invariants:
//! - one lock guards everything; a dispatch is numbered, buffered and queued
//!   to its connection under it, so a connection's channel carries a
//!   session's frames in `s` order, replays included;
//! - lock order: the write state (`state.rs`) before this lock; this module
//!   never takes another lock while holding its own;
//! - a connection's thread owns its socket; everything else talks to it
//!   through its channel ([`Out`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc::Sender;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::intents;
use super::payloads;
use crate::world::{Bot, World};

/// Dispatches kept per session for Resume; an older `seq` gets op 9.
pub const REPLAY_LIMIT: usize = 10_000;
/// Close records kept for stats.
const CLOSE_LOG: usize = 1000;
/// gateway.mdx L509: identify concurrency is counted per 5 seconds.
pub const IDENTIFY_WINDOW: Duration = Duration::from_secs(5);
/// gateway-events.mdx "Reconnect": "A few seconds after the reconnect event
/// is dispatched, the connection may be closed by the server."
pub const RECONNECT_GRACE: Duration = Duration::from_secs(5);

/// Gateway settings from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayOptions {
    /// `heartbeat_interval` of Hello (`--gateway-heartbeat-ms`).
    pub heartbeat_interval: Duration,
    /// `max_concurrency` (`--gateway-max-concurrency`).
    pub max_concurrency: u32,
    /// `session_start_limit.total` (`--gateway-session-total`).
    pub session_total: u32,
    /// Length of the session-start window (`--gateway-session-reset-ms`).
    pub session_reset: Duration,
    /// Guilds one shard may hold before 4011 (`--gateway-guilds-per-shard`).
    pub guilds_per_shard: usize,
    /// How long a disconnected session stays resumable
    /// (`--gateway-session-ttl-ms`).
    pub session_ttl: Duration,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            heartbeat_interval: Duration::from_millis(41_250),
            max_concurrency: 1,
            session_total: 1000,
            session_reset: Duration::from_millis(86_400_000),
            guilds_per_shard: 2500,
            session_ttl: Duration::from_millis(180_000),
        }
    }
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The `url` of `GET /gateway(/bot)`.
    Gateway,
    /// The `resume_gateway_url` of READY.
    Resume,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Gateway => "gateway",
            Via::Resume => "resume",
        }
    }
}

/// What other threads ask a connection's thread to do.
#[derive(Debug)]
pub enum Out {
    /// Send this payload (compressed by the connection if it asked).
    Frame(String),
    /// Close with this code and reason.
    Close(u16, String),
    /// Close with 4000 after this long unless the client closes first.
    CloseLater(Duration),
    /// Drop the TCP connection without a close frame.
    Drop,
}

/// Why an IDENTIFY that passed validation did not start a session.
#[derive(Debug, PartialEq, Eq)]
pub enum IdentifyRefusal {
    /// Another identify of the bucket within 5 s: op 9 `d: false`.
    Concurrency,
    /// No session start left: the token is reset (gateway.mdx L188).
    Exhausted,
}

/// How a RESUME ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// Replayed this many dispatches, then RESUMED.
    Resumed(usize),
    /// Unknown, expired, invalidated, another bot's, or too old to replay:
    /// op 9 `d: false`.
    Invalid,
    /// `seq` is beyond the last dispatch: close 4007 (Invalid `seq`).
    BadSeq,
}

/// A dispatch produced by a REST write or the control API.
#[derive(Debug, Clone)]
pub struct Event {
    pub t: String,
    pub d: Value,
    /// Routes the event to a shard; `None` means shard 0 (and DM intents).
    pub guild_id: Option<u64>,
    /// The bots whose sessions receive it.
    pub bots: Vec<u64>,
}

/// Where events produced by REST writes go (`writes.rs` calls it under the
/// write-state lock, so events leave in the order the writes happened).
pub trait Sink {
    fn publish(&self, event: Event);
}

#[derive(Debug)]
struct ConnEntry {
    via: Via,
    tx: Sender<Out>,
    compress: bool,
    opened: Instant,
    /// Set by IDENTIFY or RESUME (and kept after op 9, for stats).
    bot: Option<u64>,
    /// The attached session; `None` until authenticated, and again after
    /// op 9.
    session: Option<String>,
    shard: Option<[u32; 2]>,
    intents: u64,
    zombie: bool,
    heartbeats: u64,
    last_heartbeat_d: Value,
    last_s: Option<u64>,
}

#[derive(Debug)]
struct Session {
    bot: u64,
    shard: [u32; 2],
    intents: u64,
    seq: u64,
    buffer: VecDeque<(u64, String)>,
    conn: Option<u64>,
    disconnected_at: Option<Instant>,
    resumable: bool,
    via: Via,
}

#[derive(Debug, Default)]
struct Budget {
    used: u32,
    window_start: Option<Instant>,
}

#[derive(Debug, Default, Clone)]
struct Counters {
    identify_attempts: u64,
    identifies: u64,
    identifies_refused: u64,
    resumes: u64,
    resumes_via_resume_url: u64,
    resumes_failed: u64,
    heartbeats: u64,
    heartbeat_acks: u64,
    dispatches: u64,
    invalid_sessions: u64,
}

#[derive(Debug)]
struct CloseRecord {
    at: Duration,
    conn: u64,
    bot: Option<u64>,
    shard: Option<[u32; 2]>,
    code: Option<u16>,
    by: &'static str,
}

#[derive(Debug, Default)]
struct Hub {
    conns: BTreeMap<u64, ConnEntry>,
    sessions: HashMap<String, Session>,
    budgets: HashMap<u64, Budget>,
    identified_at: HashMap<(u64, u32), Instant>,
    counters: BTreeMap<u64, Counters>,
    totals: Counters,
    closes: VecDeque<CloseRecord>,
    next_conn: u64,
    next_session: u64,
    reconnect_before_hello: u32,
    resume_down: bool,
}

/// The Gateway: options, its two URLs and the shared state.
pub struct Gateway {
    pub options: GatewayOptions,
    /// `url` of `GET /gateway(/bot)`: `ws://HOST:PORT`.
    pub url: String,
    /// `resume_gateway_url` of READY: another listener, `ws://HOST:PORT2`.
    pub resume_url: String,
    start: Instant,
    hub: Mutex<Hub>,
}

/// Which connections a control command targets; unset fields match all.
#[derive(Debug, Default, Clone)]
pub struct Target {
    pub bot: Option<u64>,
    pub shard: Option<u32>,
    pub session_id: Option<String>,
}

/// A command on live connections (`POST /_fake/gateway/command`).
#[derive(Debug, Clone)]
pub enum Action {
    Reconnect,
    InvalidSession { resumable: bool },
    Close { code: u16, reason: String },
    Zombie(bool),
    RequestHeartbeat,
    Drop,
}

/// A non-dispatch payload: `s` and `t` are null (gateway-events.mdx
/// "Payload Structure").
pub fn op_payload(op: u8, d: Value) -> String {
    json!({ "op": op, "d": d, "s": null, "t": null }).to_string()
}

impl Gateway {
    pub fn new(options: GatewayOptions, url: String, resume_url: String, start: Instant) -> Self {
        Gateway {
            options,
            url,
            resume_url,
            start,
            hub: Mutex::new(Hub::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn since_start(&self) -> Duration {
        self.start.elapsed()
    }

    /// Registers a new connection; returns its id and whether it must get
    /// op 7 in place of Hello (armed through the control API).
    pub fn register(&self, via: Via, tx: Sender<Out>, compress: bool) -> (u64, bool) {
        let mut hub = self.lock();
        hub.next_conn += 1;
        let id = hub.next_conn;
        hub.conns.insert(
            id,
            ConnEntry {
                via,
                tx,
                compress,
                opened: Instant::now(),
                bot: None,
                session: None,
                shard: None,
                intents: 0,
                zombie: false,
                heartbeats: 0,
                last_heartbeat_d: Value::Null,
                last_s: None,
            },
        );
        let early = hub.reconnect_before_hello > 0;
        if early {
            hub.reconnect_before_hello -= 1;
        }
        (id, early)
    }

    /// Whether the resume listener refuses connections (control API).
    pub fn resume_down(&self) -> bool {
        self.lock().resume_down
    }

    /// Whether the connection has a session attached.
    pub fn authenticated(&self, conn: u64) -> bool {
        self.lock()
            .conns
            .get(&conn)
            .is_some_and(|c| c.session.is_some())
    }

    /// The connection is gone. `client_code` is the close code the client
    /// sent (1000/1001 end the session, gateway.mdx L240); `server_code`
    /// the one the fake sent (4003, 4004, 4007 and 4009 end it: "this
    /// session has been invalidated", "start a new session").
    pub fn unregister(&self, conn: u64, client_code: Option<u16>, server_code: Option<u16>) {
        let at = self.since_start();
        let mut hub = self.lock();
        let Some(entry) = hub.conns.remove(&conn) else {
            return;
        };
        let (by, code) = match (server_code, client_code) {
            (Some(c), _) => ("server", Some(c)),
            (None, Some(c)) => ("client", Some(c)),
            (None, None) => ("none", None),
        };
        hub.closes.push_back(CloseRecord {
            at,
            conn,
            bot: entry.bot,
            shard: entry.shard,
            code,
            by,
        });
        while hub.closes.len() > CLOSE_LOG {
            hub.closes.pop_front();
        }
        let ends = matches!(client_code, Some(1000 | 1001))
            || matches!(server_code, Some(4003 | 4004 | 4007 | 4009));
        if let Some(sid) = entry.session
            && let Some(s) = hub.sessions.get_mut(&sid)
            && s.conn == Some(conn)
        {
            s.conn = None;
            s.disconnected_at = Some(Instant::now());
            if ends {
                s.resumable = false;
            }
        }
    }

    /// A heartbeat arrived; returns whether to ACK it (not in zombie mode).
    pub fn heartbeat(&self, conn: u64, d: &Value) -> bool {
        let mut hub = self.lock();
        let Some(entry) = hub.conns.get_mut(&conn) else {
            return false;
        };
        entry.heartbeats += 1;
        entry.last_heartbeat_d = d.clone();
        let ack = !entry.zombie;
        let bot = entry.bot;
        let count = |c: &mut Counters| {
            c.heartbeats += 1;
            if ack {
                c.heartbeat_acks += 1;
            }
        };
        count(&mut hub.totals);
        if let Some(bot) = bot {
            count(hub.counters.entry(bot).or_default());
        }
        ack
    }

    /// Counts an IDENTIFY payload, valid or not; a known token names the
    /// connection's bot (so a refusal's close code is counted for it).
    pub fn note_identify_attempt(&self, conn: u64, bot: Option<u64>) {
        let mut hub = self.lock();
        if let Some(c) = hub.conns.get_mut(&conn)
            && c.session.is_none()
            && bot.is_some()
        {
            c.bot = bot;
        }
        hub.totals.identify_attempts += 1;
        if let Some(bot) = bot {
            hub.counters.entry(bot).or_default().identify_attempts += 1;
        }
    }

    /// `session_start_limit` for `GET /gateway/bot`.
    pub fn session_start_limit(&self, bot: u64) -> Value {
        let mut hub = self.lock();
        let (remaining, reset_after) = budget(&mut hub, &self.options, bot, Instant::now());
        json!({
            "total": self.options.session_total,
            "remaining": remaining,
            "reset_after": reset_after.as_millis() as u64,
            "max_concurrency": self.options.max_concurrency,
        })
    }

    /// Starts a session for a validated IDENTIFY: checks the bucket and the
    /// budget, then queues READY and one GUILD_CREATE per guild of the shard
    /// (with GUILDS) to the connection. Returns the session id.
    pub fn start_session(
        &self,
        conn: u64,
        world: &World,
        bot: &Bot,
        shard: Option<[u32; 2]>,
        intents: u64,
        large_threshold: u64,
    ) -> Result<String, IdentifyRefusal> {
        let now = Instant::now();
        let opts = self.options;
        let mut hub = self.lock();
        let [shard_id, shard_count] = shard.unwrap_or([0, 1]);
        let bucket = shard_id % opts.max_concurrency.max(1);
        if hub
            .identified_at
            .get(&(bot.id, bucket))
            .is_some_and(|t| now.saturating_duration_since(*t) < IDENTIFY_WINDOW)
        {
            hub.totals.identifies_refused += 1;
            hub.counters.entry(bot.id).or_default().identifies_refused += 1;
            hub.totals.invalid_sessions += 1;
            hub.counters.entry(bot.id).or_default().invalid_sessions += 1;
            return Err(IdentifyRefusal::Concurrency);
        }
        let (remaining, _) = budget(&mut hub, &opts, bot.id, now);
        if remaining == 0 {
            return Err(IdentifyRefusal::Exhausted);
        }
        let b = hub.budgets.entry(bot.id).or_default();
        b.used += 1;
        b.window_start.get_or_insert(now);
        hub.identified_at.insert((bot.id, bucket), now);
        hub.totals.identifies += 1;
        hub.counters.entry(bot.id).or_default().identifies += 1;

        hub.next_session += 1;
        let sid = session_id(bot.id, hub.next_session);
        let via = hub.conns.get(&conn).map_or(Via::Gateway, |c| c.via);
        hub.sessions.insert(
            sid.clone(),
            Session {
                bot: bot.id,
                shard: [shard_id, shard_count],
                intents,
                seq: 0,
                buffer: VecDeque::new(),
                conn: Some(conn),
                disconnected_at: None,
                resumable: true,
                via,
            },
        );
        if let Some(c) = hub.conns.get_mut(&conn) {
            c.bot = Some(bot.id);
            c.session = Some(sid.clone());
            c.shard = Some([shard_id, shard_count]);
            c.intents = intents;
        }
        let guilds: Vec<u64> = bot
            .guilds
            .iter()
            .copied()
            .filter(|g| shard_of(Some(*g), shard_count) == shard_id)
            .collect();
        let ready = payloads::ready(bot, &guilds, &sid, &self.resume_url, shard);
        dispatch(&mut hub, &sid, "READY", ready);
        if intents & intents::GUILDS != 0 {
            for g in guilds {
                if let Some(guild) = world.guild(g) {
                    let d = payloads::guild_create(bot, guild, large_threshold);
                    dispatch(&mut hub, &sid, "GUILD_CREATE", d);
                }
            }
        }
        Ok(sid)
    }

    /// A RESUME for bot `bot`: replays what the session missed, then
    /// RESUMED, all queued to `conn`.
    pub fn resume(&self, conn: u64, bot: u64, session_id: &str, seq: u64) -> ResumeOutcome {
        let now = Instant::now();
        let ttl = self.options.session_ttl;
        let mut hub = self.lock();
        expire(&mut hub, ttl, now);
        let via = hub.conns.get(&conn).map_or(Via::Gateway, |c| c.via);
        let outcome = match hub.sessions.get(session_id) {
            Some(s) if s.bot == bot && s.resumable => {
                let oldest = s.buffer.front().map_or(s.seq + 1, |(n, _)| *n);
                if seq > s.seq {
                    ResumeOutcome::BadSeq
                } else if seq + 1 < oldest {
                    ResumeOutcome::Invalid
                } else {
                    ResumeOutcome::Resumed(s.buffer.iter().filter(|(n, _)| *n > seq).count())
                }
            }
            _ => ResumeOutcome::Invalid,
        };
        let counters = |c: &mut Counters| match outcome {
            ResumeOutcome::Resumed(_) => {
                c.resumes += 1;
                if via == Via::Resume {
                    c.resumes_via_resume_url += 1;
                }
            }
            _ => c.resumes_failed += 1,
        };
        counters(&mut hub.totals);
        counters(hub.counters.entry(bot).or_default());
        if let Some(c) = hub.conns.get_mut(&conn) {
            c.bot = Some(bot);
        }
        if !matches!(outcome, ResumeOutcome::Resumed(_)) {
            return outcome;
        }
        // Take the session over from any connection still holding it.
        let s = hub.sessions.get_mut(session_id).expect("checked above");
        let previous = s.conn.replace(conn);
        s.disconnected_at = None;
        s.via = via;
        let replay: Vec<(u64, String)> =
            s.buffer.iter().filter(|(n, _)| *n > seq).cloned().collect();
        let (shard, intents) = (s.shard, s.intents);
        if let Some(old) = previous.filter(|old| *old != conn)
            && let Some(entry) = hub.conns.get_mut(&old)
        {
            entry.session = None;
            let _ = entry.tx.send(Out::Close(
                4000,
                "session resumed on another connection".into(),
            ));
        }
        if let Some(c) = hub.conns.get_mut(&conn) {
            c.session = Some(session_id.to_string());
            c.shard = Some(shard);
            c.intents = intents;
            for (n, frame) in replay {
                c.last_s = Some(n);
                let _ = c.tx.send(Out::Frame(frame));
            }
        }
        dispatch(&mut hub, session_id, "RESUMED", Value::Null);
        outcome
    }

    /// Sends `event` to every live or resumable session of its bots on the
    /// event's shard whose intents want it; returns the dispatches made.
    pub fn deliver(&self, event: &Event) -> usize {
        let now = Instant::now();
        let mut hub = self.lock();
        expire(&mut hub, self.options.session_ttl, now);
        let in_guild = event.guild_id.is_some();
        let mut targets: Vec<(String, u64, u64)> = hub
            .sessions
            .iter()
            .filter(|(_, s)| (s.conn.is_some() || s.resumable) && event.bots.contains(&s.bot))
            .filter(|(_, s)| shard_of(event.guild_id, s.shard[1]) == s.shard[0])
            .filter(|(_, s)| intents::wants(s.intents, &event.t, &event.d, in_guild, s.bot))
            .map(|(id, s)| (id.clone(), s.bot, s.intents))
            .collect();
        targets.sort();
        for (sid, bot, intents) in &targets {
            let d = if intents & intents::MESSAGE_CONTENT == 0 {
                intents::without_content(&event.t, &event.d, in_guild, *bot)
                    .unwrap_or_else(|| event.d.clone())
            } else {
                event.d.clone()
            };
            dispatch(&mut hub, sid, &event.t, d);
        }
        targets.len()
    }

    /// Closes every connection of `bot` with `code` and ends its sessions
    /// (the token reset of an exhausted budget).
    pub fn close_bot(&self, bot: u64, code: u16, reason: &str) {
        let mut hub = self.lock();
        for c in hub.conns.values().filter(|c| c.bot == Some(bot)) {
            let _ = c.tx.send(Out::Close(code, reason.to_string()));
        }
        for s in hub.sessions.values_mut().filter(|s| s.bot == bot) {
            s.resumable = false;
        }
    }

    /// Runs a control command on the matching connections; returns how
    /// many it reached.
    pub fn command(&self, target: &Target, action: &Action) -> usize {
        let mut hub = self.lock();
        let ids: Vec<u64> = hub
            .conns
            .iter()
            .filter(|(_, c)| target.bot.is_none_or(|b| c.bot == Some(b)))
            .filter(|(_, c)| {
                target
                    .shard
                    .is_none_or(|s| c.shard.is_some_and(|x| x[0] == s))
            })
            .filter(|(_, c)| {
                target
                    .session_id
                    .as_ref()
                    .is_none_or(|sid| c.session.as_ref() == Some(sid))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            let Some(c) = hub.conns.get_mut(id) else {
                continue;
            };
            match action {
                Action::Reconnect => {
                    let _ = c.tx.send(Out::Frame(op_payload(7, Value::Null)));
                    let _ = c.tx.send(Out::CloseLater(RECONNECT_GRACE));
                }
                Action::InvalidSession { resumable } => {
                    let _ = c.tx.send(Out::Frame(op_payload(9, json!(resumable))));
                    let sid = c.session.take();
                    let bot = c.bot;
                    if let Some(s) = sid.and_then(|sid| hub.sessions.get_mut(&sid)) {
                        s.conn = None;
                        s.disconnected_at = Some(Instant::now());
                        s.resumable &= *resumable;
                    }
                    hub.totals.invalid_sessions += 1;
                    if let Some(bot) = bot {
                        hub.counters.entry(bot).or_default().invalid_sessions += 1;
                    }
                }
                Action::Close { code, reason } => {
                    let _ = c.tx.send(Out::Close(*code, reason.clone()));
                }
                Action::Zombie(on) => c.zombie = *on,
                Action::RequestHeartbeat => {
                    let _ = c.tx.send(Out::Frame(op_payload(1, Value::Null)));
                }
                Action::Drop => {
                    let _ = c.tx.send(Out::Drop);
                }
            }
        }
        ids.len()
    }

    /// Makes the matching sessions unresumable; returns how many.
    pub fn expire_sessions(&self, target: &Target) -> usize {
        let mut hub = self.lock();
        let mut n = 0;
        for (id, s) in hub.sessions.iter_mut() {
            if target.bot.is_none_or(|b| s.bot == b)
                && target.shard.is_none_or(|x| s.shard[0] == x)
                && target.session_id.as_ref().is_none_or(|sid| sid == id)
                && s.resumable
            {
                s.resumable = false;
                n += 1;
            }
        }
        n
    }

    /// Arms op 7 in place of Hello for the next `count` connections.
    pub fn arm_reconnect_before_hello(&self, count: u32) {
        self.lock().reconnect_before_hello = count;
    }

    /// Makes the resume listener drop (or again accept) connections.
    pub fn set_resume_down(&self, down: bool) {
        self.lock().resume_down = down;
    }

    /// A payload sent to the connection outside a session (op 9 after a
    /// refused identify counts as an invalid session).
    pub fn note_invalid_session(&self, bot: Option<u64>) {
        let mut hub = self.lock();
        hub.totals.invalid_sessions += 1;
        if let Some(bot) = bot {
            hub.counters.entry(bot).or_default().invalid_sessions += 1;
        }
    }

    /// `POST /_fake/reset`: counters, budgets, identify buckets and the
    /// close log; live connections and sessions stay.
    pub fn reset_counters(&self) {
        let mut hub = self.lock();
        hub.counters.clear();
        hub.totals = Counters::default();
        hub.budgets.clear();
        hub.identified_at.clear();
        hub.closes.clear();
        hub.reconnect_before_hello = 0;
        hub.resume_down = false;
    }

    /// `POST /_fake/gateway/reset`: also closes every connection with 4000
    /// and forgets every session.
    pub fn reset(&self) {
        self.reset_counters();
        let mut hub = self.lock();
        for c in hub.conns.values() {
            let _ = c.tx.send(Out::Close(4000, "reset".into()));
        }
        hub.sessions.clear();
    }

    /// `GET /_fake/gateway/stats`.
    pub fn stats(&self, world: &World) -> Value {
        let now = Instant::now();
        let opts = self.options;
        let mut hub = self.lock();
        expire(&mut hub, opts.session_ttl, now);
        let counters_json = |c: &Counters| {
            json!({
                "identify_attempts": c.identify_attempts,
                "identifies": c.identifies,
                "identifies_refused": c.identifies_refused,
                "resumes": c.resumes,
                "resumes_via_resume_url": c.resumes_via_resume_url,
                "resumes_failed": c.resumes_failed,
                "heartbeats": c.heartbeats,
                "heartbeat_acks": c.heartbeat_acks,
                "dispatches": c.dispatches,
                "invalid_sessions": c.invalid_sessions,
            })
        };
        let mut bots = serde_json::Map::new();
        for bot in world.bots() {
            let mut v = counters_json(&hub.counters.get(&bot.id).cloned().unwrap_or_default());
            let mut by_shard: BTreeMap<String, u64> = BTreeMap::new();
            let mut open = 0;
            for c in hub.conns.values().filter(|c| c.bot == Some(bot.id)) {
                if c.session.is_some() {
                    open += 1;
                    let shard = c.shard.map_or(0, |s| s[0]);
                    *by_shard.entry(shard.to_string()).or_default() += 1;
                }
            }
            let (remaining, reset_after) = budget(&mut hub, &opts, bot.id, now);
            let closes: Vec<Value> = hub
                .closes
                .iter()
                .filter(|r| r.bot == Some(bot.id))
                .filter_map(|r| r.code.map(|code| json!({ "code": code, "by": r.by })))
                .collect();
            v["connections_open"] = json!(open);
            v["by_shard"] = json!(by_shard);
            v["session_start_limit"] = json!({
                "total": opts.session_total,
                "remaining": remaining,
                "reset_after": reset_after.as_millis() as u64,
                "max_concurrency": opts.max_concurrency,
            });
            v["close_codes_sent"] = json!(
                closes
                    .iter()
                    .filter(|c| c["by"] == "server")
                    .map(|c| c["code"].clone())
                    .collect::<Vec<_>>()
            );
            v["close_codes_received"] = json!(
                closes
                    .iter()
                    .filter(|c| c["by"] == "client")
                    .map(|c| c["code"].clone())
                    .collect::<Vec<_>>()
            );
            bots.insert(bot.id.to_string(), v);
        }
        let connections: Vec<Value> = hub
            .conns
            .iter()
            .map(|(id, c)| {
                json!({
                    "id": id,
                    "via": c.via.as_str(),
                    "compress": c.compress.then_some("zlib-stream"),
                    "bot_id": c.bot.map(|b| b.to_string()),
                    "authenticated": c.session.is_some(),
                    "session_id": c.session,
                    "shard": c.shard,
                    "intents": c.intents,
                    "zombie": c.zombie,
                    "heartbeats": c.heartbeats,
                    "last_heartbeat_d": c.last_heartbeat_d,
                    "last_s": c.last_s,
                    "age_ms": now.saturating_duration_since(c.opened).as_millis() as u64,
                })
            })
            .collect();
        let mut sessions: Vec<Value> = hub
            .sessions
            .iter()
            .map(|(id, s)| {
                json!({
                    "session_id": id,
                    "bot_id": s.bot.to_string(),
                    "shard": s.shard,
                    "intents": s.intents,
                    "seq": s.seq,
                    "buffered": s.buffer.len(),
                    "connected": s.conn.is_some(),
                    "resumable": s.resumable,
                    "via": s.via.as_str(),
                })
            })
            .collect();
        sessions.sort_by(|a, b| a["session_id"].as_str().cmp(&b["session_id"].as_str()));
        let closes: Vec<Value> = hub
            .closes
            .iter()
            .map(|r| {
                json!({
                    "at_ms": r.at.as_millis() as u64,
                    "conn": r.conn,
                    "bot_id": r.bot.map(|b| b.to_string()),
                    "shard": r.shard,
                    "code": r.code,
                    "by": r.by,
                })
            })
            .collect();
        let mut total = counters_json(&hub.totals);
        total["connections_open"] = json!(hub.conns.len());
        total["bots"] = Value::Object(bots);
        total["connections"] = json!(connections);
        total["sessions"] = json!(sessions);
        total["closes"] = json!(closes);
        total["resume_url_up"] = json!(!hub.resume_down);
        total["reconnect_before_hello"] = json!(hub.reconnect_before_hello);
        total
    }
}

impl Sink for Gateway {
    fn publish(&self, event: Event) {
        self.deliver(&event);
    }
}

/// The shard an event for `guild_id` goes to (gateway.mdx L612-633).
pub fn shard_of(guild_id: Option<u64>, shard_count: u32) -> u32 {
    match guild_id {
        Some(g) => ((g >> 22) % u64::from(shard_count.max(1))) as u32,
        None => 0,
    }
}

/// Numbers, buffers and queues one dispatch of session `sid`.
fn dispatch(hub: &mut Hub, sid: &str, t: &str, d: Value) {
    let Some(s) = hub.sessions.get_mut(sid) else {
        return;
    };
    s.seq += 1;
    let n = s.seq;
    let frame = json!({ "op": 0, "s": n, "t": t, "d": d }).to_string();
    s.buffer.push_back((n, frame.clone()));
    while s.buffer.len() > REPLAY_LIMIT {
        s.buffer.pop_front();
    }
    let (bot, conn) = (s.bot, s.conn);
    if let Some(c) = conn.and_then(|c| hub.conns.get_mut(&c)) {
        c.last_s = Some(n);
        let _ = c.tx.send(Out::Frame(frame));
    }
    hub.totals.dispatches += 1;
    hub.counters.entry(bot).or_default().dispatches += 1;
}

/// Forgets sessions disconnected for longer than `ttl`, and unresumable
/// ones without a connection.
fn expire(hub: &mut Hub, ttl: Duration, now: Instant) {
    hub.sessions.retain(|_, s| match s.disconnected_at {
        Some(at) => s.resumable && now.saturating_duration_since(at) < ttl,
        None => true,
    });
}

/// A bot's remaining session starts and the time to the window's reset.
fn budget(hub: &mut Hub, opts: &GatewayOptions, bot: u64, now: Instant) -> (u32, Duration) {
    let b = hub.budgets.entry(bot).or_default();
    if let Some(start) = b.window_start
        && now.saturating_duration_since(start) >= opts.session_reset
    {
        *b = Budget::default();
    }
    let reset_after = match b.window_start {
        Some(start) => opts
            .session_reset
            .saturating_sub(now.saturating_duration_since(start)),
        None => opts.session_reset,
    };
    (opts.session_total.saturating_sub(b.used), reset_after)
}

/// A fresh session id: 32 hex digits, unique per process.
fn session_id(bot: u64, n: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = bot ^ n.rotate_left(32) ^ nanos;
    let mut mix = || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    format!("{:016x}{:016x}", mix(), mix() ^ n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_follow_the_formula() {
        assert_eq!(shard_of(None, 4), 0);
        let g = 613_425_648_685_547_541_u64;
        assert_eq!(shard_of(Some(g), 3), ((g >> 22) % 3) as u32);
        assert_eq!(shard_of(Some(g), 1), 0);
    }

    #[test]
    fn session_ids_differ() {
        assert_ne!(session_id(1, 1), session_id(1, 2));
        assert_eq!(session_id(1, 1).len(), 32);
    }
}
