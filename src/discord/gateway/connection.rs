//! connection: one shard's thread: connect, Hello, Identify or Resume,
//! dispatches, and every way a connection ends.
//!
//! Why it exists: a WebSocket has one owner. This thread owns the socket
//! and runs one loop: read with a short timeout, then send what is due
//! (heartbeats, the Identify the queue allows, commands from the inbox
//! within the send limit). Other threads reach it only through its inbox.
//!
//! The states (published in the shard's slot for `status`):
//! `Connecting` (TCP, handshake, Hello, Identify) or `Resuming` (Resume
//! sent) → `Ready` (READY or RESUMED) → on any end: `Backoff` → again, or
//! `Failed` (never again), or `Idle` (stopped). How each end is handled:
//! - op 7 (any time, even before Hello), a zombie, op 9 `d: true`: close
//!   4000 and resume at once (identify if there is no session);
//! - op 9 `d: false`: forget the session (and its resume URL), wait 1-5 s,
//!   identify;
//! - close 4004, 4010, 4012, 4013, 4014: `Marker::Failed` with a reason a
//!   person can act on; 4004 also marks the bot rejected for REST;
//! - close 4011: the bot reshards (`Shared::reshard`);
//! - close 4003, 4007, 4009: the session is gone (OC), identify after
//!   backoff; any other close or a dropped socket: resume after backoff;
//! - a connection to the resume URL that fails drops that URL: the session
//!   is resumed on the base URL instead (GW L231-234).
//!
//! Invariants: outgoing payloads (Identify and Resume carry the token) are
//! never logged; the sink is called on this thread, in Discord's order, and
//! a dispatch whose `s` is not after the last one delivered in the session
//! is not delivered twice.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{WebSocket, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes};

use super::heartbeat::{Beat, Heartbeat};
use super::identify::Turn;
use super::inflate::Inflater;
use super::protocol::{self, Envelope};
use super::ratelimit::SendLimiter;
use super::tls::{self, Stream, Target};
use super::{Dispatch, Marker, ResumeState, ShardHandle, Shared, State, backoff, intents};

/// What other threads ask of a shard.
pub(crate) enum Command {
    /// A payload for Discord (already checked against `MAX_SEND`).
    Send(String),
    /// Close with this code and end the thread.
    Stop { code: u16 },
}

/// Commands waiting for the send limit, at most; more are dropped (with a
/// warning): a caller flooding a shard must not grow its memory.
const MAX_PENDING: usize = 1000;
/// How long a close waits for the server's close frame.
const CLOSE_LINGER: Duration = Duration::from_millis(500);
/// A read timeout is re-set only when it moves by more than this: each
/// `setsockopt` is a system call.
const TIMEOUT_SLACK: Duration = Duration::from_millis(20);
/// A connection that stayed ready this long resets the backoff.
const STABLE: Duration = Duration::from_secs(60);
/// After this long without a message, the zlib-stream inflater is parked:
/// its 32 KiB window kept compressed, its tables freed (`inflate`). Long
/// enough that a bot's bursts stay on a live inflater (a park and its
/// undoing cost about 60 µs), short next to the 41 s between heartbeat
/// ACKs, which are all an idle bot receives.
const PARK_AFTER: Duration = Duration::from_secs(10);
/// The connecting thread's stack: a TLS handshake with certificate
/// verification needs a few tens of KiB; only touched pages cost memory.
const HANDSHAKE_STACK: usize = 256 * 1024;

/// The session being kept: what Resume needs.
struct Session {
    id: String,
    /// READY's `resume_gateway_url`; dropped after a connection to it fails.
    resume_url: Option<String>,
    seq: u64,
}

/// How a connection ended, and what comes next.
enum Next {
    Stop,
    Reconnect(Wait),
    Fail { code: Option<u16>, reason: String },
    Reshard,
}

enum Wait {
    /// Expected (op 7, zombie, op 9 `d: true`): at once the first time.
    Soon,
    /// Full-jitter backoff.
    Backoff,
    /// Op 9 `d: false`: a uniform wait in this range.
    Between(Duration, Duration),
}

pub(crate) struct Runner {
    handle: Arc<ShardHandle>,
    inbox: Receiver<Command>,
    session: Option<Session>,
    /// Reconnections since the last stable ready connection.
    attempt: u32,
    pending: VecDeque<String>,
    inflater: Option<Inflater>,
    /// How the current connection ended: the close code either side sent.
    end_code: Option<u16>,
}

/// One connection's state.
struct Conn {
    ws: WebSocket<Stream>,
    heartbeat: Option<Heartbeat>,
    limiter: SendLimiter,
    /// READY or RESUMED seen on this connection.
    ready: Option<Instant>,
    /// Waiting for the identify queue.
    identify_wanted: bool,
    read_timeout: Duration,
    hello_deadline: Instant,
    /// When the last message arrived (or the connection opened).
    heard: Instant,
}

impl Runner {
    /// `inflate_max`: with compression, the inflated-size cap. The
    /// inflater allocates nothing until the first message, and its
    /// backend (zlib-rs) builds its state in place: an inflater made on the
    /// shard's thread (on connecting, on unparking) touches little of its
    /// stack, whose pages stay resident for the connection's life.
    pub(crate) fn new(
        handle: Arc<ShardHandle>,
        inbox: Receiver<Command>,
        resume: Option<ResumeState>,
        inflate_max: Option<usize>,
    ) -> Runner {
        Runner {
            handle,
            inbox,
            session: resume.map(|r| Session {
                id: r.session_id,
                resume_url: Some(r.resume_url).filter(|u| !u.is_empty()),
                seq: r.seq,
            }),
            attempt: 0,
            pending: VecDeque::new(),
            inflater: inflate_max.map(Inflater::new),
            end_code: None,
        }
    }

    fn shard(&self) -> [u16; 2] {
        self.handle.shard
    }

    fn set_state(&self, state: State) {
        self.handle.slot.lock().state = state;
    }

    /// Publishes the session for `status` and `stop`.
    fn publish_session(&self) {
        let state = self.session.as_ref().map(|s| ResumeState {
            shard: self.shard(),
            session_id: s.id.clone(),
            resume_url: s.resume_url.clone().unwrap_or_default(),
            seq: s.seq,
        });
        self.handle.slot.lock().session = state;
    }

    pub(crate) fn run(mut self, shared: Arc<Shared>) {
        loop {
            if shared.stopping() {
                // Stopped while not connected: nothing to close.
                self.stop_requested();
                self.set_state(State::Idle);
                return;
            }
            let base = shared.inner.lock().url.clone();
            let via_resume_url = self.session.as_ref().and_then(|s| s.resume_url.clone());
            let url = via_resume_url.clone().unwrap_or(base);
            self.set_state(if self.session.is_some() {
                State::Resuming
            } else {
                State::Connecting
            });
            let next = match self.connect(&shared, &url) {
                Ok(ws) => self.converse(&shared, ws),
                Err(why) => {
                    log::info!(
                        "gateway of bot {} shard {:?}: cannot connect: {why}",
                        shared.bot_label(),
                        self.shard()
                    );
                    if via_resume_url.is_some()
                        && let Some(session) = &mut self.session
                    {
                        // GW L231-234: the resume URL failed; the session
                        // may still resume on the base URL.
                        session.resume_url = None;
                    }
                    Next::Reconnect(Wait::Backoff)
                }
            };
            self.publish_session();
            match next {
                Next::Stop => {
                    self.set_state(State::Idle);
                    return;
                }
                Next::Fail { code, reason } => {
                    log::warn!(
                        "gateway of bot {} shard {:?} failed: {reason}",
                        shared.bot_label(),
                        self.shard()
                    );
                    if code == Some(4004) {
                        shared.bot.mark_rejected();
                    }
                    self.session = None;
                    self.publish_session();
                    {
                        let mut slot = self.handle.slot.lock();
                        slot.state = State::Failed;
                        slot.failure = Some(reason.clone());
                        slot.ready_since = None;
                    }
                    shared.sink.marker(&Marker::Failed {
                        shard: self.shard(),
                        code,
                        reason,
                    });
                    return;
                }
                Next::Reshard => {
                    self.set_state(State::Connecting);
                    shared.reshard(self.shard()[1]);
                    return;
                }
                Next::Reconnect(wait) => {
                    let config = &shared.config;
                    let delay = match wait {
                        Wait::Soon if self.attempt == 0 => Duration::ZERO,
                        Wait::Soon | Wait::Backoff => backoff::full_jitter(
                            self.attempt,
                            config.backoff_base,
                            config.backoff_cap,
                        ),
                        Wait::Between(low, high) => backoff::between(low, high),
                    };
                    self.attempt = self.attempt.saturating_add(1);
                    if !delay.is_zero() {
                        self.set_state(State::Backoff);
                        if self.sleep(delay) {
                            self.set_state(State::Idle);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Whether a Stop is waiting in the inbox (consumed if so).
    fn stop_requested(&mut self) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(Command::Stop { code }) => {
                    if code == 1000 {
                        self.session = None;
                        self.publish_session();
                    }
                    return true;
                }
                Ok(Command::Send(payload)) => self.queue(payload),
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
    }

    fn queue(&mut self, payload: String) {
        if self.pending.len() < MAX_PENDING {
            self.pending.push_back(payload);
        } else {
            log::warn!(
                "gateway shard {:?}: {MAX_PENDING} commands already wait for the send limit; \
                 one more dropped",
                self.shard()
            );
        }
    }

    /// Sleeps `wait`, still taking commands; true when told to stop.
    fn sleep(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.inbox.recv_timeout(left) {
                Ok(Command::Stop { code }) => {
                    if code == 1000 {
                        self.session = None;
                        self.publish_session();
                    }
                    return true;
                }
                Ok(Command::Send(payload)) => self.queue(payload),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return false,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return true,
            }
        }
    }

    /// TCP (with a timeout), TLS for wss, the WebSocket handshake.
    fn connect(&mut self, shared: &Shared, url: &str) -> Result<Conn, String> {
        let config = &shared.config;
        let target = Target::parse(url)?;
        let query = if self.inflater.is_some() {
            "v=10&encoding=json&compress=zlib-stream"
        } else {
            "v=10&encoding=json"
        };
        let request = if url.contains('?') {
            format!("{url}&{query}")
        } else {
            format!("{}/?{query}", url.trim_end_matches('/'))
        };
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(config.read_buffer)
            // Our payloads are a few hundred bytes and each is flushed at
            // once: no write buffer to keep.
            .write_buffer_size(0)
            .max_message_size(Some(config.max_message))
            .max_frame_size(Some(config.max_message));
        let timeout = config.connect_timeout;
        let handshake = move || {
            let stream = tls::connect(&target, timeout).map_err(|e| describe(&e))?;
            let (ws, _response) = tungstenite::client::client_with_config(
                request,
                stream,
                Some(ws_config),
            )
            .map_err(|e| match e {
                tungstenite::HandshakeError::Interrupted(_) => "handshake timed out".to_string(),
                tungstenite::HandshakeError::Failure(e) => {
                    format!("handshake failed: {}", kind(&e))
                }
            })?;
            Ok::<_, String>(ws)
        };
        // The TLS handshake (certificate parsing and checks, key exchange)
        // is the deepest this connection's work goes on a stack. On a
        // short-lived thread of its own, glibc gives those pages back when
        // it ends (all but 16 KiB below where it stopped); on this one they
        // would stay resident for the connection's whole life, idle or not
        // (benches/RESULTS.md, "Events").
        let ws = std::thread::Builder::new()
            .name("gw-connect".into())
            .stack_size(HANDSHAKE_STACK)
            .spawn(handshake)
            .map_err(|e| format!("cannot start a connecting thread: {e}"))?
            .join()
            .map_err(|_| "the connecting thread panicked".to_string())??;
        if let Some(inflater) = &mut self.inflater {
            // The server starts a new zlib stream on each connection.
            inflater.reset();
        }
        let now = Instant::now();
        Ok(Conn {
            ws,
            heartbeat: None,
            limiter: SendLimiter::new(Duration::from_secs(41)),
            ready: None,
            identify_wanted: false,
            read_timeout: config.connect_timeout,
            hello_deadline: now + config.hello_timeout,
            heard: now,
        })
    }

    /// Runs one connection until it ends.
    fn converse(&mut self, shared: &Shared, mut conn: Conn) -> Next {
        self.end_code = None;
        let mut inflater = self.inflater.take();
        let next = self.converse_with(shared, &mut conn, inflater.as_mut());
        self.inflater = inflater;
        if let Some(ready) = conn.ready {
            if ready.elapsed() >= STABLE {
                self.attempt = 0;
            }
            if !matches!(next, Next::Stop) {
                shared.sink.marker(&Marker::Disconnected {
                    shard: self.shard(),
                    code: self.end_code,
                });
            }
        }
        next
    }

    fn converse_with(
        &mut self,
        shared: &Shared,
        conn: &mut Conn,
        mut inflater: Option<&mut Inflater>,
    ) -> Next {
        loop {
            let now = Instant::now();
            if let Some(next) = self.take_commands(conn) {
                return next;
            }
            if conn.heartbeat.is_none() && now >= conn.hello_deadline {
                log::info!(
                    "gateway of bot {} shard {:?}: no Hello within {:?}",
                    shared.bot_label(),
                    self.shard(),
                    shared.config.hello_timeout
                );
                return Next::Reconnect(Wait::Backoff);
            }
            let mut wake = now + shared.config.poll;
            if let Some(next) = self.due_sends(shared, conn, now, &mut wake) {
                return next;
            }
            let timeout = wake
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            if timeout.abs_diff(conn.read_timeout) > TIMEOUT_SLACK || timeout < conn.read_timeout {
                if conn
                    .ws
                    .get_ref()
                    .tcp()
                    .set_read_timeout(Some(timeout))
                    .is_err()
                {
                    return self.lost(None);
                }
                conn.read_timeout = timeout;
            }
            let message = match conn.ws.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if conn.heard.elapsed() >= PARK_AFTER
                        && let Some(inflater) = inflater.as_deref_mut()
                    {
                        inflater.park();
                    }
                    continue;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return self.closed(shared, None);
                }
                Err(e) => {
                    log::info!(
                        "gateway of bot {} shard {:?}: connection lost: {}",
                        shared.bot_label(),
                        self.shard(),
                        kind(&e)
                    );
                    return self.lost(None);
                }
            };
            let quiet = conn.heard.elapsed() >= PARK_AFTER;
            conn.heard = Instant::now();
            let next = match message {
                Message::Text(text) => self.on_payload(shared, conn, text.as_bytes()),
                Message::Binary(bytes) => match inflater.as_deref_mut() {
                    Some(inflater) => match inflater.push(&bytes) {
                        Ok(Some(payload)) => {
                            let next = self.on_payload(shared, conn, payload);
                            if quiet {
                                // A lone message after a quiet spell (a
                                // heartbeat ACK, most often): park again
                                // at once rather than for PARK_AFTER.
                                inflater.park();
                            }
                            next
                        }
                        Ok(None) => None,
                        Err(e) => {
                            log::warn!(
                                "gateway of bot {} shard {:?}: cannot inflate a message: {e:?}",
                                shared.bot_label(),
                                self.shard()
                            );
                            self.close(conn, 4000, Duration::ZERO);
                            Some(Next::Reconnect(Wait::Backoff))
                        }
                    },
                    None => self.on_payload(shared, conn, &bytes),
                },
                Message::Close(frame) => {
                    let code = frame.map(|f| u16::from(f.code));
                    // tungstenite queued our reply; send it.
                    let _ = conn.ws.flush();
                    Some(self.closed(shared, code))
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                    // A ping's pong is queued; it goes out with the next
                    // read or write.
                    None
                }
            };
            if let Some(next) = next {
                return next;
            }
        }
    }

    /// Drains the inbox: stop, or commands to queue.
    fn take_commands(&mut self, conn: &mut Conn) -> Option<Next> {
        loop {
            match self.inbox.try_recv() {
                Ok(Command::Send(payload)) => self.queue(payload),
                Ok(Command::Stop { code }) => {
                    self.close(conn, code, CLOSE_LINGER);
                    if code == 1000 {
                        self.session = None;
                    }
                    return Some(Next::Stop);
                }
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => {
                    self.close(conn, 4000, CLOSE_LINGER);
                    return Some(Next::Stop);
                }
            }
        }
    }

    /// Sends what is due at `now` (a heartbeat, Identify, queued commands)
    /// and moves `wake` to when the next thing will be.
    fn due_sends(
        &mut self,
        shared: &Shared,
        conn: &mut Conn,
        now: Instant,
        wake: &mut Instant,
    ) -> Option<Next> {
        if conn.heartbeat.is_some() {
            match conn.heartbeat.as_ref().and_then(|h| h.due(now)) {
                Some(Beat::Zombie) => {
                    log::info!(
                        "gateway of bot {} shard {:?}: nothing received since the last heartbeat; \
                         reconnecting",
                        shared.bot_label(),
                        self.shard()
                    );
                    self.close(conn, 4000, Duration::ZERO);
                    return Some(Next::Reconnect(Wait::Soon));
                }
                Some(Beat::Send) => match conn.limiter.heartbeat(now) {
                    Ok(()) => {
                        let seq = self.session.as_ref().map(|s| s.seq);
                        if send(conn, protocol::heartbeat(seq)).is_err() {
                            return Some(self.lost(None));
                        }
                        if let Some(heartbeat) = &mut conn.heartbeat {
                            heartbeat.sent(now, true);
                            *wake = (*wake).min(heartbeat.next());
                        }
                    }
                    // Only when the server asked for many heartbeats: the
                    // window's oldest send frees a slot.
                    Err(free) => *wake = (*wake).min(free),
                },
                None => {
                    if let Some(heartbeat) = &conn.heartbeat {
                        *wake = (*wake).min(heartbeat.next());
                    }
                }
            }
        }
        if conn.identify_wanted {
            match shared.queue.turn(self.shard()[0], now) {
                Turn::Go => {
                    conn.identify_wanted = false;
                    let Some(intents) = shared.inner.lock().intents else {
                        return Some(Next::Fail {
                            code: None,
                            reason: "the bot's intents are unknown".into(),
                        });
                    };
                    let token = shared.bot.token().authorization();
                    // `authorization` is `Bot <token>`; Identify takes the
                    // token alone.
                    let token = token.strip_prefix("Bot ").unwrap_or(&token);
                    let payload = protocol::identify(token, intents, self.shard());
                    let _ = conn.limiter.command(now);
                    if send(conn, payload).is_err() {
                        return Some(self.lost(None));
                    }
                }
                Turn::Wait(at) => *wake = (*wake).min(at),
                Turn::Refused(reason) => {
                    self.close(conn, 4000, CLOSE_LINGER);
                    return Some(Next::Fail { code: None, reason });
                }
            }
        }
        while conn.ready.is_some() && !self.pending.is_empty() {
            match conn.limiter.command(now) {
                Ok(()) => {
                    let payload = self.pending.pop_front().unwrap_or_default();
                    if send(conn, payload).is_err() {
                        return Some(self.lost(None));
                    }
                }
                Err(free) => {
                    *wake = (*wake).min(free);
                    break;
                }
            }
        }
        None
    }

    /// One payload from Discord.
    fn on_payload(&mut self, shared: &Shared, conn: &mut Conn, bytes: &[u8]) -> Option<Next> {
        let envelope = match Envelope::parse(bytes) {
            Ok(envelope) => envelope,
            Err(e) => {
                log::warn!(
                    "gateway of bot {} shard {:?}: a payload that is not the Gateway's JSON: {e}",
                    shared.bot_label(),
                    self.shard()
                );
                return None;
            }
        };
        let now = Instant::now();
        if let Some(heartbeat) = &mut conn.heartbeat {
            heartbeat.heard();
        }
        match envelope.op {
            protocol::OP_DISPATCH => self.on_dispatch(shared, conn, &envelope, now),
            protocol::OP_HELLO => {
                let interval = envelope
                    .d
                    .and_then(|d| serde_json::from_str::<protocol::Hello>(d.get()).ok())
                    .map_or(Duration::from_secs(41), |h| {
                        Duration::from_millis(h.heartbeat_interval.max(1))
                    });
                conn.heartbeat = Some(Heartbeat::new(interval, now, backoff::fraction()));
                conn.limiter = SendLimiter::new(interval);
                match &self.session {
                    Some(session) => {
                        let token = shared.bot.token().authorization();
                        let token = token.strip_prefix("Bot ").unwrap_or(&token);
                        let payload = protocol::resume(token, &session.id, session.seq);
                        let _ = conn.limiter.command(now);
                        if send(conn, payload).is_err() {
                            return Some(self.lost(None));
                        }
                        self.set_state(State::Resuming);
                    }
                    None => conn.identify_wanted = true,
                }
                None
            }
            protocol::OP_HEARTBEAT_ACK => {
                if let Some(heartbeat) = &mut conn.heartbeat {
                    heartbeat.ack(now);
                    self.handle.slot.lock().latency = heartbeat.latency();
                }
                None
            }
            protocol::OP_HEARTBEAT => {
                // Discord asks for one now (GW L175).
                if conn.limiter.heartbeat(now).is_ok() {
                    let seq = self.session.as_ref().map(|s| s.seq);
                    if send(conn, protocol::heartbeat(seq)).is_err() {
                        return Some(self.lost(None));
                    }
                    if let Some(heartbeat) = &mut conn.heartbeat {
                        heartbeat.sent(now, false);
                    }
                }
                None
            }
            protocol::OP_RECONNECT => {
                log::debug!(
                    "gateway of bot {} shard {:?}: Discord asked to reconnect",
                    shared.bot_label(),
                    self.shard()
                );
                self.close(conn, 4000, Duration::ZERO);
                Some(Next::Reconnect(Wait::Soon))
            }
            protocol::OP_INVALID_SESSION => {
                let resumable = envelope.d.is_some_and(|d| d.get() == "true");
                self.close(conn, 4000, Duration::ZERO);
                if resumable && self.session.is_some() {
                    return Some(Next::Reconnect(Wait::Soon));
                }
                log::info!(
                    "gateway of bot {} shard {:?}: session invalidated; identifying again",
                    shared.bot_label(),
                    self.shard()
                );
                // GW L271: a new session, on the base URL.
                self.session = None;
                let (low, high) = shared.config.invalid_session_wait;
                Some(Next::Reconnect(Wait::Between(low, high)))
            }
            _ => None,
        }
    }

    fn on_dispatch(
        &mut self,
        shared: &Shared,
        conn: &mut Conn,
        envelope: &Envelope<'_>,
        now: Instant,
    ) -> Option<Next> {
        let (Some(kind), Some(seq)) = (envelope.t.as_deref(), envelope.s) else {
            return None;
        };
        let shard = self.shard();
        match kind {
            "READY" => {
                let ready = envelope
                    .d
                    .and_then(|d| serde_json::from_str::<protocol::Ready>(d.get()).ok());
                let Some(ready) = ready else {
                    log::warn!("gateway shard {shard:?}: a READY without a session");
                    return None;
                };
                self.session = Some(Session {
                    id: ready.session_id,
                    resume_url: Some(ready.resume_gateway_url),
                    seq,
                });
                self.handle.slot.lock().ready_since = Some(now);
                self.became_ready(conn, now);
                log::info!(
                    "gateway of bot {} shard {shard:?}: ready (new session)",
                    shared.bot_label()
                );
                // `became_ready` published it: the marker carries the
                // session, so a cluster saves it with the sequence it
                // starts at.
                let session = self.handle.slot.lock().session.clone();
                if let Some(session) = session {
                    shared.sink.marker(&Marker::Ready { shard, session });
                }
            }
            "RESUMED" => {
                if let Some(session) = &mut self.session {
                    session.seq = session.seq.max(seq);
                }
                self.became_ready(conn, now);
                log::debug!(
                    "gateway of bot {} shard {shard:?}: resumed",
                    shared.bot_label()
                );
                shared.sink.marker(&Marker::Resumed { shard });
            }
            _ => {
                let Some(session) = &mut self.session else {
                    return None;
                };
                if seq <= session.seq {
                    // Already delivered in this session.
                    return None;
                }
                session.seq = seq;
                let data = envelope.d?;
                let ids = protocol::ids(kind, data);
                shared.sink.dispatch(&Dispatch {
                    shard,
                    kind,
                    data,
                    guild_id: ids.guild_id,
                    channel_id: ids.channel_id,
                    session_seq: seq,
                });
                if let Some(published) = &mut self.handle.slot.lock().session {
                    published.seq = seq;
                }
            }
        }
        None
    }

    fn became_ready(&mut self, conn: &mut Conn, now: Instant) {
        conn.ready = Some(now);
        self.publish_session();
        let mut slot = self.handle.slot.lock();
        slot.state = State::Ready;
        slot.ready_since.get_or_insert(now);
        slot.failure = None;
    }

    /// The socket ended without a close frame.
    fn lost(&mut self, code: Option<u16>) -> Next {
        self.end_code = code;
        self.handle.slot.lock().last_close = Some((code, Instant::now()));
        Next::Reconnect(Wait::Backoff)
    }

    /// We close the connection with `code`.
    fn close(&mut self, conn: &mut Conn, code: u16, linger: Duration) {
        self.end_code = Some(code);
        self.handle.slot.lock().last_close = Some((Some(code), Instant::now()));
        close(conn, code, linger);
    }

    /// Discord closed the connection with `code`.
    fn closed(&mut self, shared: &Shared, code: Option<u16>) -> Next {
        self.end_code = code;
        self.handle.slot.lock().last_close = Some((code, Instant::now()));
        let shard = self.shard();
        log::info!(
            "gateway of bot {} shard {shard:?}: closed by Discord ({})",
            shared.bot_label(),
            code.map_or("no code".to_string(), |c| c.to_string())
        );
        let fail = |reason: String| Next::Fail { code, reason };
        match code {
            Some(4004) => fail(
                "Discord rejected the bot's token (close 4004): it was reset or the bot was \
                 deleted; log in again with the bot's current token"
                    .into(),
            ),
            Some(4010) => fail(format!(
                "Discord refused shard {shard:?} (close 4010 invalid shard); report this as a bug"
            )),
            Some(4012) => fail(
                "Discord refused Gateway API version 10 (close 4012); this build of the service \
                 is out of date"
                    .into(),
            ),
            Some(4013) => {
                let bits = shared.inner.lock().intents.unwrap_or(0);
                fail(format!(
                    "Discord refused the intents {} (close 4013 invalid intents); fix \
                     --gateway-intents",
                    intents::names(bits).join(", ")
                ))
            }
            Some(4014) => {
                let (bits, flags) = {
                    let inner = shared.inner.lock();
                    (inner.intents.unwrap_or(0), inner.app_flags)
                };
                let refused = intents::refused_privileged(bits, flags);
                fail(format!(
                    "Discord refused the privileged intent {} (close 4014 disallowed intents): \
                     enable it in the Discord Developer Portal, on the application's Bot page \
                     (Privileged Gateway Intents), or leave it out of --gateway-intents",
                    if refused.is_empty() {
                        "asked for".to_string()
                    } else {
                        refused.join(", ")
                    }
                ))
            }
            Some(4011) => Next::Reshard,
            Some(4003 | 4007 | 4009) => {
                // OC: the session is invalid; a new one is needed.
                self.session = None;
                Next::Reconnect(Wait::Backoff)
            }
            _ => Next::Reconnect(Wait::Backoff),
        }
    }
}

/// Sends one payload, flushed. Never logs it: Identify and Resume carry the
/// token.
fn send(conn: &mut Conn, payload: String) -> Result<(), ()> {
    if payload.len() > protocol::MAX_SEND {
        log::warn!(
            "gateway: a {}-byte payload not sent (Discord's limit is {})",
            payload.len(),
            protocol::MAX_SEND
        );
        return Ok(());
    }
    conn.ws
        .send(Message::Text(Utf8Bytes::from(payload)))
        .map_err(|_| ())
}

/// Sends a close frame with `code`, then waits up to `linger` for the
/// server's, so a clean close is seen as one by Discord.
fn close(conn: &mut Conn, code: u16, linger: Duration) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::default(),
    };
    if conn.ws.close(Some(frame)).is_err() || conn.ws.flush().is_err() || linger.is_zero() {
        return;
    }
    let deadline = Instant::now() + linger;
    let _ = conn
        .ws
        .get_ref()
        .tcp()
        .set_read_timeout(Some(Duration::from_millis(50)));
    while Instant::now() < deadline {
        match conn.ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// A token-free description of an I/O error.
fn describe(e: &io::Error) -> String {
    format!("{:?}", e.kind())
}

/// A token-free description of a WebSocket error (its text can hold a
/// URL, never a payload we sent, but the kind is all a log needs).
fn kind(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Io(io) => describe(io),
        tungstenite::Error::Capacity(_) => "message too large".into(),
        tungstenite::Error::Protocol(p) => format!("protocol: {p}"),
        tungstenite::Error::Http(r) => format!("HTTP {}", r.status()),
        tungstenite::Error::Tls(_) => "TLS error".into(),
        tungstenite::Error::Url(_) => "bad URL".into(),
        _ => "WebSocket error".into(),
    }
}
