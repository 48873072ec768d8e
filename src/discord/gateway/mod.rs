//! gateway: one bot's Discord Gateway connections, one thread per shard.
//!
//! Why it exists: clients want Discord's events as they happen, and one
//! Gateway session per bot (not per client) is what Discord's budgets allow:
//! 1000 session starts a day, 120 sends a minute per connection
//! (`../shared/GATEWAY-NOTES.md` §0, §6). `BotGateway::start` fetches
//! `GET /gateway/bot` (and, for `--gateway-intents auto`,
//! `GET /applications/@me`) through `Discord::get` with the bot, inside its
//! REST rate limits, then runs each shard on a thread of its own
//! (`connection`): blocking reads with a short timeout, so heartbeats,
//! commands from other threads (a channel) and reads share one loop and one
//! socket owner. Dispatches go to an `EventSink` as Discord's `d` bytes.
//!
//! The modules, one concern each: `connection` (a shard's thread and its
//! state machine), `protocol` (the envelope), `heartbeat` (schedule and
//! zombie detection), `identify` (the identify queue and session-start
//! reserve), `intents` (names ↔ bits, `auto`), `ratelimit` (120/60 s with
//! room for heartbeats), `inflate` (zlib-stream), `tls` (TCP with a timeout,
//! rustls for wss), `backoff` (full jitter).
//!
//! Architecture invariants:
//! - no async runtime: threads, a channel per shard, a condvar for stop;
//! - the token goes out only inside Identify and Resume, and outgoing
//!   payloads are never logged or put in an error; `ResumeState`'s `Debug`
//!   shows a prefix of the session ID only;
//! - a close code that forbids reconnecting (4004, 4010, 4012-4014) or a
//!   session-start budget under the reserve ends the shard in
//!   `Marker::Failed` with a reason a person can act on, never retried;
//! - every bound is a named constant or a `GatewayConfig` field with its
//!   default: memory per idle connection is the read buffer (16 KiB), the
//!   inflater and the thread's touched stack.

mod backoff;
mod connection;
pub mod heartbeat;
pub mod identify;
pub mod inflate;
pub mod intents;
pub mod protocol;
pub mod ratelimit;
pub mod tls;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::discord::bots::Bot;
use crate::discord::client::Discord;
use crate::discord::error::Error;
use crate::discord::route::Route;

pub use identify::SessionStartLimit;
pub use intents::Intents;

use connection::{Command, Runner};
use identify::IdentifyQueue;

/// Where dispatches and connection markers go. Called on the shard's
/// thread, in Discord's order: it should return quickly (hand the event to
/// a ring), or heartbeats wait behind it. A cluster's sink makes one Redis
/// call per event, bounded by `--redis-timeout`: the price of publishing in
/// order before the next event is read.
pub trait EventSink: Send + Sync {
    /// One dispatch: `data` is Discord's `d`, unchanged bytes.
    fn dispatch(&self, event: &Dispatch<'_>);
    /// A connection event: ready (new session), resumed, disconnected
    /// (close code), failed (will not reconnect, with a reason a person can
    /// act on).
    fn marker(&self, marker: &Marker);
}

/// One Gateway dispatch, borrowed from the received message.
#[derive(Debug)]
pub struct Dispatch<'a> {
    /// `[shard_id, num_shards]`.
    pub shard: [u16; 2],
    /// Discord's `t`, e.g. `MESSAGE_CREATE`.
    pub kind: &'a str,
    /// Discord's `d`, as sent.
    pub data: &'a RawValue,
    /// `d.guild_id` (or the guild's own `id` for GUILD_CREATE/UPDATE/DELETE).
    pub guild_id: Option<u64>,
    /// `d.channel_id` (or the channel's own `id` for CHANNEL_*/THREAD_*).
    pub channel_id: Option<u64>,
    /// Discord's `s`: increases within a session, restarts with a new one
    /// (after `Marker::Ready`).
    pub session_seq: u64,
}

/// A change of a shard's connection, for the stream's `gateway.*` markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// A new session (READY): events before it may be missing. `session`
    /// is what resumes it, at READY's sequence.
    Ready {
        shard: [u16; 2],
        session: ResumeState,
    },
    /// The session was resumed: every event in between was replayed.
    Resumed { shard: [u16; 2] },
    /// A connection that was ready ended; `code` is the close code, `None`
    /// when the socket dropped without one.
    Disconnected { shard: [u16; 2], code: Option<u16> },
    /// The shard will not reconnect.
    Failed {
        shard: [u16; 2],
        code: Option<u16>,
        reason: String,
    },
}

/// How a bot's Gateway connections behave. `Default` is Discord's rules;
/// tests shrink the waits.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `--gateway-intents`. Defaults to `Auto`.
    pub intents: Intents,
    /// `zlib-stream` transport compression. Defaults to true: Discord's
    /// JSON shrinks several times, and the inflater's memory is bounded.
    pub compress: bool,
    /// TCP connect, TLS and WebSocket handshake, each; also the socket's
    /// write timeout. Defaults to 10 s (twilight's).
    pub connect_timeout: Duration,
    /// How long to wait for Hello after connecting. Defaults to 60 s
    /// (@discordjs/ws).
    pub hello_timeout: Duration,
    /// Full-jitter backoff between failed connections: base and cap.
    /// Default 1 s and 60 s.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Wait before identifying after op 9 `d: false`: a uniform time in this
    /// range. Defaults to 1-5 s (EV "Invalid Session").
    pub invalid_session_wait: (Duration, Duration),
    /// One identify per `max_concurrency` bucket per this long. Defaults to
    /// 5 s (GW L509); never shorter against Discord.
    pub identify_spacing: Duration,
    /// The longest a shard's loop blocks in a read: how soon it sees a
    /// command or a stop. Defaults to 250 ms.
    pub poll: Duration,
    /// tungstenite's read buffer per connection (allocated and zeroed
    /// eagerly). Defaults to 4 KiB: 128 KiB, tungstenite's default, was
    /// 261 KiB RSS per idle connection against 146 KiB (GATEWAY-NOTES §4.5),
    /// and rustls hands tungstenite a TLS connection's plaintext 4 KiB at a
    /// time anyway (benches/RESULTS.md, "Events").
    pub read_buffer: usize,
    /// Largest message, compressed and inflated. Defaults to 128 MiB (a
    /// big bot's READY and GUILD_CREATEs are tens of MiB).
    pub max_message: usize,
    /// Wait budget of each REST call (`GET /gateway/bot`,
    /// `GET /applications/@me`). Defaults to 10 s.
    pub rest_budget: Duration,
    /// `stop`'s longest wait for the shards to close. Defaults to 3 s.
    pub stop_wait: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            intents: Intents::Auto,
            compress: true,
            connect_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(60),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            invalid_session_wait: (Duration::from_secs(1), Duration::from_secs(5)),
            identify_spacing: identify::SPACING,
            poll: Duration::from_millis(250),
            read_buffer: 4 * 1024,
            max_message: 128 * 1024 * 1024,
            rest_budget: Duration::from_secs(10),
            stop_wait: Duration::from_secs(3),
        }
    }
}

/// What a later `start` needs to resume a shard's session instead of
/// identifying (a restart, a handover).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumeState {
    pub shard: [u16; 2],
    pub session_id: String,
    pub resume_url: String,
    pub seq: u64,
}

impl fmt::Debug for ResumeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A session ID with the token resumes the session; alone it is not
        // a secret, but a prefix is all a log needs.
        let prefix: String = self.session_id.chars().take(6).collect();
        f.debug_struct("ResumeState")
            .field("shard", &self.shard)
            .field("session_id", &format_args!("{prefix}…"))
            .field("resume_url", &self.resume_url)
            .field("seq", &self.seq)
            .finish()
    }
}

/// The state of a bot's Gateway, or of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Fetching `/gateway/bot`, connecting, or identifying.
    Connecting,
    Ready,
    /// Connected again, Resume sent, RESUMED not yet received.
    Resuming,
    /// Waiting before the next connection attempt.
    Backoff,
    /// Will not reconnect (`Marker::Failed`).
    Failed,
    /// Stopped.
    Idle,
}

/// One shard in `GatewayStatus`.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    pub state: State,
    /// The last `s` received in the current session.
    pub sequence: Option<u64>,
}

/// `GET /api/gateway`'s Gateway part (API.md).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    pub state: State,
    pub intents: Vec<&'static str>,
    pub shards: Vec<ShardStatus>,
    /// Since the oldest shard's READY (or resume into it).
    pub session_age_seconds: Option<u64>,
    pub last_sequence: Option<u64>,
    /// The slowest shard's last heartbeat → ACK.
    pub heartbeat_latency_ms: Option<u64>,
    pub last_close_code: Option<u16>,
    pub session_starts_remaining: Option<u32>,
    /// Why the Gateway failed, when `state` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One bot's Gateway: its shards' threads and what they share.
pub struct BotGateway {
    shared: Arc<Shared>,
}

/// What the shards of one bot share.
pub(crate) struct Shared {
    discord: Arc<Discord>,
    bot: Arc<Bot>,
    config: GatewayConfig,
    sink: Arc<dyn EventSink>,
    queue: IdentifyQueue,
    inner: Mutex<Inner>,
    /// Set by `stop` (under `inner`'s lock, so no shard starts after it).
    stopping: AtomicBool,
    /// Wakes a sleeping launcher on stop.
    stop_signal: Condvar,
    /// Live threads of this bot (launchers and shards); `stop` waits for 0.
    threads: Mutex<usize>,
    threads_done: Condvar,
}

struct Inner {
    /// Bumped at each (re)launch; a shard of an older one may not reshard.
    generation: u64,
    /// `url` of `GET /gateway/bot`.
    url: String,
    /// Identify's intents, once known, and the application's flags.
    intents: Option<u64>,
    app_flags: Option<u64>,
    starts_known: bool,
    /// Before the shards run: fetching, backing off, or failed.
    launch: State,
    failure: Option<String>,
    shards: Vec<Arc<ShardHandle>>,
    /// Resume states not yet handed to a shard.
    pending_resume: Vec<ResumeState>,
}

/// A shard as other threads see it: its inbox and its published state.
pub(crate) struct ShardHandle {
    shard: [u16; 2],
    inbox: Mutex<Sender<Command>>,
    slot: Mutex<Slot>,
}

/// What a shard publishes about itself.
#[derive(Debug)]
struct Slot {
    state: State,
    session: Option<ResumeState>,
    ready_since: Option<Instant>,
    latency: Option<Duration>,
    last_close: Option<(Option<u16>, Instant)>,
    failure: Option<String>,
}

/// A command could not be queued for a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Over Discord's 4096 bytes: it would close the connection (4002).
    TooLarge,
    /// Heartbeat, Identify and Resume are the connection's own.
    Reserved,
    /// No such shard, or it has stopped.
    NoShard,
}

impl BotGateway {
    /// Starts the bot's Gateway in the background: fetches what it needs
    /// over REST (retrying with backoff), then one thread per shard. A
    /// shard with a `resume` entry resumes that session instead of
    /// identifying; a complete set of them also fixes the shard count
    /// (resuming is free, identifying is not).
    pub fn start(
        discord: Arc<Discord>,
        bot: Arc<Bot>,
        config: GatewayConfig,
        sink: Arc<dyn EventSink>,
        resume: Vec<ResumeState>,
    ) -> BotGateway {
        let intents = match &config.intents {
            Intents::Names(_) => Some(config.intents.bits(None)),
            Intents::Auto => None,
        };
        let shared = Arc::new(Shared {
            discord,
            bot,
            queue: IdentifyQueue::new(config.identify_spacing),
            config,
            sink,
            inner: Mutex::new(Inner {
                generation: 0,
                url: String::new(),
                intents,
                app_flags: None,
                starts_known: false,
                launch: State::Connecting,
                failure: None,
                shards: Vec::new(),
                pending_resume: resume,
            }),
            stopping: AtomicBool::new(false),
            stop_signal: Condvar::new(),
            threads: Mutex::new(0),
            threads_done: Condvar::new(),
        });
        heartbeat::watch_shards(&shared);
        Shared::launch(&shared, 0, None);
        BotGateway { shared }
    }

    /// The Gateway's state, for `GET /api/gateway`.
    pub fn status(&self) -> GatewayStatus {
        self.shared.status()
    }

    /// The shards' sessions as they stand, for a checkpoint: what `stop`
    /// would return, without stopping.
    pub fn sessions(&self) -> Vec<ResumeState> {
        self.shared.sessions()
    }

    /// Queues a command (op 3 presence, op 8 request guild members…) for a
    /// shard; it goes out within the connection's send limit, once the
    /// shard is ready. Refused at once when Discord would refuse it.
    pub fn send(&self, shard: u16, op: u8, d: &RawValue) -> Result<(), SendError> {
        use protocol::{OP_HEARTBEAT, OP_IDENTIFY, OP_RESUME};
        if matches!(op, OP_HEARTBEAT | OP_IDENTIFY | OP_RESUME) {
            return Err(SendError::Reserved);
        }
        let payload = protocol::command(op, d);
        if payload.len() > protocol::MAX_SEND {
            return Err(SendError::TooLarge);
        }
        let handle = self
            .shared
            .inner
            .lock()
            .shards
            .iter()
            .find(|h| h.shard[0] == shard)
            .cloned()
            .ok_or(SendError::NoShard)?;
        let sent = handle.inbox.lock().send(Command::Send(payload));
        sent.map_err(|_| SendError::NoShard)
    }

    /// Closes every shard: `for_good` with 1000 (the bot is gone: Discord
    /// ends the session and shows the bot offline), else 4000 so the
    /// session stays resumable; returns what a later `start` needs to
    /// resume (nothing when `for_good`). Waits at most
    /// `GatewayConfig::stop_wait`; a shard still connecting then closes on
    /// its own, and its last known session is returned.
    pub fn stop(self, for_good: bool) -> Vec<ResumeState> {
        self.shared.stop(for_good);
        let deadline = Instant::now() + self.shared.config.stop_wait;
        let mut threads = self.shared.threads.lock();
        while *threads > 0 {
            if self
                .shared
                .threads_done
                .wait_until(&mut threads, deadline)
                .timed_out()
            {
                break;
            }
        }
        drop(threads);
        if for_good {
            return Vec::new();
        }
        self.shared.sessions()
    }
}

impl Drop for BotGateway {
    /// A gateway dropped without `stop` still closes its shards (resumably).
    fn drop(&mut self) {
        if !self.shared.stopping.load(Ordering::SeqCst) {
            self.shared.stop(false);
        }
    }
}

/// `GET /gateway/bot`'s answer.
#[derive(Debug, serde::Deserialize)]
struct GatewayBot {
    url: String,
    shards: u16,
    session_start_limit: SessionStartLimit,
}

/// `GET /applications/@me`: only `flags`.
#[derive(Debug, serde::Deserialize)]
struct Application {
    #[serde(default)]
    flags: Option<u64>,
}

/// Keeps `Shared::threads` counting a thread until it ends, panic or not.
struct ThreadGuard(Arc<Shared>);

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        let mut threads = self.0.threads.lock();
        *threads -= 1;
        self.0.threads_done.notify_all();
    }
}

/// A launcher's stack (the handshake threads use the same size).
const STACK: usize = 256 * 1024;

/// A shard thread's stack: only touched pages cost memory. A size no
/// short-lived thread uses, so a shard never gets an exited launcher's or
/// handshake's cached stack with its pages already resident (4.6 KiB per
/// idle connection, benches/RESULTS.md).
const SHARD_STACK: usize = 1024 * 1024;

impl Shared {
    /// Runs `f` on a new thread counted in `threads`.
    fn spawn(
        self: &Arc<Self>,
        name: String,
        stack: usize,
        f: impl FnOnce(Arc<Shared>) + Send + 'static,
    ) {
        *self.threads.lock() += 1;
        let guard = ThreadGuard(Arc::clone(self));
        let spawned = std::thread::Builder::new()
            .name(name)
            .stack_size(stack)
            .spawn(move || {
                let shared = Arc::clone(&guard.0);
                f(shared);
                drop(guard);
            });
        if let Err(e) = spawned {
            // The guard went down with the closure and counted it off.
            log::error!("cannot start a Gateway thread: {e}");
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn bot_label(&self) -> String {
        let id = self.bot.identity().id;
        if id.is_empty() { "?".into() } else { id }
    }

    /// Starts a launcher: fetches what the shards need, then starts them.
    /// `previous` is the shard count a 4011 asked to grow.
    fn launch(self: &Arc<Self>, generation: u64, previous: Option<u16>) {
        self.spawn("gw-launch".into(), STACK, move |shared| {
            shared.run_launcher(generation, previous)
        });
    }

    /// Sleeps `wait` unless stopped first; true when stopped.
    fn sleep_unless_stopped(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut inner = self.inner.lock();
        while !self.stopping() {
            if self
                .stop_signal
                .wait_until(&mut inner, deadline)
                .timed_out()
            {
                break;
            }
        }
        self.stopping()
    }

    fn launch_state(&self, state: State, failure: Option<String>) {
        let mut inner = self.inner.lock();
        inner.launch = state;
        inner.failure = failure;
    }

    /// Fails the whole gateway before any shard runs.
    fn launch_failed(&self, reason: String) {
        log::warn!("gateway of bot {}: {reason}", self.bot_label());
        self.launch_state(State::Failed, Some(reason.clone()));
        self.sink.marker(&Marker::Failed {
            shard: [0, 1],
            code: None,
            reason,
        });
    }

    /// GETs a route with retries: `None` when stopped or failed for good.
    fn fetch<T: serde::de::DeserializeOwned>(&self, route: Route) -> Option<T> {
        let mut attempt = 0;
        loop {
            if self.stopping() {
                return None;
            }
            let deadline = Instant::now() + self.config.rest_budget;
            let wait = match self.discord.get(&self.bot, route, deadline) {
                Ok(body) => match serde_json::from_slice(&body) {
                    Ok(answer) => return Some(answer),
                    Err(e) => {
                        log::warn!(
                            "gateway of bot {}: {} answered what we cannot read: {e}",
                            self.bot_label(),
                            route.key().template
                        );
                        None
                    }
                },
                Err(Error::TokenRejected) => {
                    self.launch_failed(
                        "Discord rejected the bot's token (401): it was reset or the bot was \
                         deleted; log in again with the bot's current token"
                            .into(),
                    );
                    return None;
                }
                Err(Error::RateLimited { retry_after, .. })
                | Err(Error::HostBlocked { retry_after }) => Some(retry_after),
                Err(e) => {
                    log::warn!(
                        "gateway of bot {}: {} failed: {e}",
                        self.bot_label(),
                        route.key().template
                    );
                    None
                }
            };
            let wait = wait.unwrap_or_else(|| {
                backoff::full_jitter(attempt, self.config.backoff_base, self.config.backoff_cap)
            });
            attempt += 1;
            self.launch_state(State::Backoff, None);
            if self.sleep_unless_stopped(wait) {
                return None;
            }
            self.launch_state(State::Connecting, None);
        }
    }

    fn run_launcher(self: Arc<Self>, generation: u64, previous: Option<u16>) {
        let Some(info) = self.fetch::<GatewayBot>(Route::GatewayBot) else {
            return;
        };
        self.queue.update(info.session_start_limit, Instant::now());
        let needs_flags =
            matches!(self.config.intents, Intents::Auto) && self.inner.lock().app_flags.is_none();
        if needs_flags {
            let Some(app) = self.fetch::<Application>(Route::CurrentApplication) else {
                return;
            };
            let mut inner = self.inner.lock();
            inner.app_flags = Some(app.flags.unwrap_or(0));
            inner.intents = Some(self.config.intents.bits(app.flags));
        }
        let mut inner = self.inner.lock();
        inner.url = info.url;
        inner.starts_known = true;
        let resume = std::mem::take(&mut inner.pending_resume);
        // A complete set of sessions fixes the count: resuming them all is
        // free, and any count is valid to Discord (GW L636).
        let resumed_count = resume
            .first()
            .map(|r| r.shard[1])
            .filter(|&n| (0..n).all(|i| resume.iter().any(|r| r.shard == [i, n])));
        let count = match (previous, resumed_count) {
            (Some(before), _) if info.shards <= before => {
                drop(inner);
                self.launch_failed(format!(
                    "Discord closed a shard with 4011 (sharding required), but GET /gateway/bot \
                     still recommends {} shard(s) for {before} running; the bot's guilds may be \
                     changing fast: start its events again in a few minutes",
                    info.shards
                ));
                return;
            }
            (Some(_), _) => info.shards,
            (None, Some(n)) => n,
            (None, None) => info.shards.max(1),
        };
        if self.stopping() || inner.generation != generation {
            inner.pending_resume = resume;
            return;
        }
        inner.launch = State::Connecting;
        let mut handles = Vec::with_capacity(usize::from(count));
        for id in 0..count {
            let shard = [id, count];
            let session = resume.iter().find(|r| r.shard == shard).cloned();
            let (tx, rx) = std::sync::mpsc::channel();
            let handle = Arc::new(ShardHandle {
                shard,
                inbox: Mutex::new(tx),
                slot: Mutex::new(Slot {
                    state: State::Connecting,
                    session: session.clone(),
                    ready_since: None,
                    latency: None,
                    last_close: None,
                    failure: None,
                }),
            });
            handles.push(Arc::clone(&handle));
            let inflate_max = self.config.compress.then_some(self.config.max_message);
            let runner = Runner::new(handle, rx, session, inflate_max);
            self.spawn(format!("gw-{id}"), SHARD_STACK, move |shared| {
                runner.run(shared)
            });
        }
        inner.shards = handles;
    }

    /// A shard was closed with 4011: close the others and start again with
    /// the count `GET /gateway/bot` now recommends. Only the first shard of
    /// a generation to ask does it.
    fn reshard(self: &Arc<Self>, count: u16) {
        let mut inner = self.inner.lock();
        if self.stopping() || inner.shards.first().is_none_or(|h| h.shard[1] != count) {
            return;
        }
        inner.generation += 1;
        let generation = inner.generation;
        // Their sessions are of the old count and will not be resumed.
        for handle in std::mem::take(&mut inner.shards) {
            let _ = handle.inbox.lock().send(Command::Stop { code: 1000 });
        }
        inner.launch = State::Connecting;
        drop(inner);
        self.launch(generation, Some(count));
    }

    /// Each shard's session, and those not yet handed to a shard.
    fn sessions(&self) -> Vec<ResumeState> {
        let inner = self.inner.lock();
        let mut states: Vec<ResumeState> = inner
            .shards
            .iter()
            .filter_map(|h| h.slot.lock().session.clone())
            .collect();
        states.extend(inner.pending_resume.iter().cloned());
        states
    }

    fn stop(&self, for_good: bool) {
        let inner = self.inner.lock();
        self.stopping.store(true, Ordering::SeqCst);
        self.stop_signal.notify_all();
        let code = if for_good { 1000 } else { 4000 };
        for handle in &inner.shards {
            let _ = handle.inbox.lock().send(Command::Stop { code });
        }
    }

    fn status(&self) -> GatewayStatus {
        let inner = self.inner.lock();
        let now = Instant::now();
        let mut shards = Vec::with_capacity(inner.shards.len());
        let mut age: Option<Duration> = None;
        let mut latency: Option<Duration> = None;
        let mut last_close: Option<(Option<u16>, Instant)> = None;
        let mut failure = inner.failure.clone();
        for handle in &inner.shards {
            let slot = handle.slot.lock();
            shards.push(ShardStatus {
                state: slot.state,
                sequence: slot.session.as_ref().map(|s| s.seq),
            });
            if let Some(since) = slot.ready_since {
                age = age.max(Some(now.saturating_duration_since(since)));
            }
            latency = latency.max(slot.latency);
            if let Some(close) = slot.last_close
                && last_close.is_none_or(|(_, at)| close.1 > at)
            {
                last_close = Some(close);
            }
            if failure.is_none() {
                failure.clone_from(&slot.failure);
            }
        }
        let state = if inner.launch == State::Failed {
            State::Failed
        } else if shards.is_empty() {
            if self.stopping() {
                State::Idle
            } else {
                inner.launch
            }
        } else if shards.iter().any(|s| s.state == State::Failed) {
            State::Failed
        } else if shards.iter().all(|s| s.state == State::Ready) {
            State::Ready
        } else if shards.iter().any(|s| s.state == State::Backoff) {
            State::Backoff
        } else if shards.iter().any(|s| s.state == State::Resuming) {
            State::Resuming
        } else if shards.iter().all(|s| s.state == State::Idle) {
            State::Idle
        } else {
            State::Connecting
        };
        GatewayStatus {
            state,
            intents: inner.intents.map(intents::names).unwrap_or_default(),
            session_age_seconds: age.map(|a| a.as_secs()),
            last_sequence: shards.iter().filter_map(|s| s.sequence).max(),
            shards,
            heartbeat_latency_ms: latency.map(|l| l.as_millis() as u64),
            last_close_code: last_close.and_then(|(code, _)| code),
            session_starts_remaining: inner.starts_known.then(|| self.queue.remaining()),
            reason: if state == State::Failed {
                failure
            } else {
                None
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_state_debug_shows_only_a_prefix_of_the_session() {
        let state = ResumeState {
            shard: [0, 1],
            session_id: "0123456789abcdef0123456789abcdef".into(),
            resume_url: "wss://gateway-us-east1-b.discord.gg".into(),
            seq: 42,
        };
        let text = format!("{state:?}");
        assert!(text.contains("012345…"), "{text}");
        assert!(!text.contains("0123456789abcdef"), "{text}");
    }

    #[test]
    fn status_serialises_as_the_contract_says() {
        let status = GatewayStatus {
            state: State::Ready,
            intents: vec!["GUILDS"],
            shards: vec![ShardStatus {
                state: State::Ready,
                sequence: Some(3),
            }],
            session_age_seconds: Some(1),
            last_sequence: Some(3),
            heartbeat_latency_ms: Some(2),
            last_close_code: None,
            session_starts_remaining: Some(999),
            reason: None,
        };
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"state": "ready", "intents": ["GUILDS"],
                "shards": [{"state": "ready", "sequence": 3}], "sessionAgeSeconds": 1,
                "lastSequence": 3, "heartbeatLatencyMs": 2, "lastCloseCode": null,
                "sessionStartsRemaining": 999})
        );
    }
}
