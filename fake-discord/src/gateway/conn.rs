//! One Gateway WebSocket connection: handshake, Hello, then a loop that
//! reads the client's payloads and writes what the hub queued for it.
//!
//! Why it exists: the protocol's per-connection rules live here. Sources
//! (discord-api-docs @ c98d64bc):
//! - `events/gateway.mdx`: Hello first with `heartbeat_interval` (L125-140);
//!   each Heartbeat answered with op 11 (L157-165); "If your app fails to
//!   send a heartbeat event in time, your connection will be closed and you
//!   will be forced to Resume" (L146); 120 payloads per connection per 60 s,
//!   "immediately disconnected" above (L507, close 4008); payloads over 4096
//!   bytes close 4002 (L52); identify concurrency gets op 9 (L183, L509);
//!   hitting the session-start limit terminates all sessions and resets the
//!   token (L188);
//! - `events/gateway-events.mdx` "Reconnect": op 7 may come "even
//!   before/in place of receiving a Hello", and "a few seconds after" the
//!   server may close (L483);
//! - `topics/opcodes-and-status-codes.mdx` L36-51 for every close code.
//!
//! Choices where the docs are silent (README "Gateway"): a missed heartbeat
//! closes with 4000 after `interval * 1.5 + 1 s` without one and keeps the
//! session resumable; op 7 is followed by a 4000 close after 5 s unless the
//! client closes first; ops 3, 4, 8, 31 and 43 are accepted and ignored.
//!
//! Invariant: this thread is the only one touching the socket. It polls the
//! socket with a short read timeout and drains its [`Out`] channel between
//! reads; tungstenite keeps partial frames across the timeouts.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::handshake::server::{Request, Response};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Error as WsError, Message, WebSocket};

use super::compress::ZlibStream;
use super::hub::{IdentifyRefusal, Out, RECONNECT_GRACE, ResumeOutcome, Via, op_payload};
use super::identify::{self, Refusal};
use super::tls::{Stream, Tls};
use crate::app::App;

/// How long a read waits before the thread looks at its channel.
const POLL: Duration = Duration::from_millis(10);
/// The read timeout while frames are still queued: just a look.
const PEEK: Duration = Duration::from_micros(1);
/// Frames written between two reads, so a burst cannot keep the client's
/// heartbeats unread past their deadline.
const FRAMES_PER_READ: usize = 256;
/// How long the WebSocket handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the client's close frame after sending ours.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// gateway.mdx L507: 120 payloads per connection per 60 s.
const SEND_LIMIT: usize = 120;
const SEND_WINDOW: Duration = Duration::from_secs(60);
/// Largest inbound message tungstenite accepts; anything over 4096 bytes is
/// closed with 4002 anyway, this only bounds memory.
const MAX_INBOUND: usize = 1 << 20;

/// Accepts Gateway connections on `listener` forever, one thread each;
/// with `tls`, each speaks TLS first (`wss://`).
pub fn serve(listener: TcpListener, app: Arc<App>, via: Via, tls: Option<Tls>) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let app = Arc::clone(&app);
                let tls = tls.clone();
                let spawned = thread::Builder::new()
                    .name("fake-discord-gateway".into())
                    .spawn(move || handle(stream, &app, via, tls.as_ref()));
                if let Err(e) = spawned {
                    eprintln!("fake-discord: cannot spawn gateway thread: {e}");
                }
            }
            Err(e) => {
                eprintln!("fake-discord: gateway accept failed: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// What the loop does after a payload.
enum Flow {
    Continue,
    Closed,
}

struct Conn<'a> {
    app: &'a App,
    id: u64,
    ws: WebSocket<Stream>,
    zlib: Option<ZlibStream>,
    rx: Receiver<Out>,
    /// Arrival times of the client's payloads in the last 60 s.
    sends: VecDeque<Instant>,
    /// When a missing heartbeat closes the connection.
    heartbeat_deadline: Instant,
    /// When an announced close (after op 7) happens.
    close_at: Option<Instant>,
    /// Whether the read timeout is [`PEEK`] (frames still queued).
    peeking: bool,
}

fn handle(stream: TcpStream, app: &App, via: Via, tls: Option<&Tls>) {
    if via == Via::Resume && app.gateway.resume_down() {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let configured = stream
        .set_nodelay(true)
        .and_then(|_| stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)))
        .and_then(|_| stream.set_write_timeout(Some(WRITE_TIMEOUT)));
    if configured.is_err() {
        return;
    }
    let Ok(stream) = Stream::accept(stream, tls) else {
        return;
    };
    let mut target = String::new();
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .max_message_size(Some(MAX_INBOUND))
        .max_frame_size(Some(MAX_INBOUND));
    // The callback's error type is tungstenite's, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        target = req.uri().to_string();
        Ok(resp)
    };
    let Ok(ws) = tungstenite::accept_hdr_with_config(stream, callback, Some(config)) else {
        return;
    };
    if ws.get_ref().tcp().set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let parsed = identify::query(query);
    let (tx, rx) = mpsc::channel();
    let (id, reconnect_first) =
        app.gateway
            .register(via, tx, parsed.as_ref().copied().unwrap_or(false));
    let mut conn = Conn {
        app,
        id,
        ws,
        zlib: None,
        rx,
        sends: VecDeque::new(),
        heartbeat_deadline: Instant::now() + heartbeat_grace(app),
        close_at: None,
        peeking: false,
    };
    match parsed {
        Err(r) => conn.close(r.code, &r.reason),
        Ok(compress) => {
            if compress {
                conn.zlib = Some(ZlibStream::new());
            }
            let first = if reconnect_first {
                conn.close_at = Some(Instant::now() + RECONNECT_GRACE);
                op_payload(7, Value::Null)
            } else {
                let interval = app.gateway.options.heartbeat_interval.as_millis() as u64;
                op_payload(10, json!({ "heartbeat_interval": interval }))
            };
            if conn.send(&first).is_err() {
                conn.gone(None);
                return;
            }
            conn.run();
        }
    }
}

/// How long after Hello or a heartbeat the next one may take.
fn heartbeat_grace(app: &App) -> Duration {
    let interval = app.gateway.options.heartbeat_interval;
    interval + interval / 2 + Duration::from_secs(1)
}

impl Conn<'_> {
    fn run(&mut self) {
        loop {
            let mut written = 0;
            let backlog = loop {
                if written == FRAMES_PER_READ {
                    break true;
                }
                written += 1;
                match self.rx.try_recv() {
                    Ok(Out::Frame(frame)) => {
                        if self.send(&frame).is_err() {
                            return self.gone(None);
                        }
                    }
                    Ok(Out::Close(code, reason)) => return self.close(code, &reason),
                    Ok(Out::CloseLater(after)) => {
                        let at = Instant::now() + after;
                        self.close_at = Some(self.close_at.map_or(at, |t| t.min(at)));
                    }
                    Ok(Out::Drop) => {
                        let _ = self.ws.get_ref().tcp().shutdown(Shutdown::Both);
                        return self.gone(None);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break false,
                }
            };
            if backlog != self.peeking {
                let timeout = if backlog { PEEK } else { POLL };
                if self
                    .ws
                    .get_ref()
                    .tcp()
                    .set_read_timeout(Some(timeout))
                    .is_err()
                {
                    return self.gone(None);
                }
                self.peeking = backlog;
            }
            let now = Instant::now();
            if self.close_at.is_some_and(|t| now >= t) {
                return self.close(4000, "Reconnect");
            }
            if now >= self.heartbeat_deadline {
                return self.close(4000, "Heartbeat timed out");
            }
            let flow = match self.ws.read() {
                Ok(Message::Text(text)) => self.payload(text.as_bytes()),
                Ok(Message::Binary(bytes)) => self.payload(&bytes),
                Ok(Message::Close(frame)) => {
                    let code = frame.map(|f| u16::from(f.code));
                    self.drain();
                    self.app.gateway.unregister(self.id, code, None);
                    Flow::Closed
                }
                Ok(_) => Flow::Continue,
                Err(WsError::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    Flow::Continue
                }
                Err(WsError::Capacity(_)) => {
                    self.close(4002, "Payload too large");
                    Flow::Closed
                }
                Err(_) => {
                    self.gone(None);
                    Flow::Closed
                }
            };
            if let Flow::Closed = flow {
                return;
            }
        }
    }

    /// Sends one payload, compressed when the client asked for zlib-stream.
    fn send(&mut self, text: &str) -> Result<(), WsError> {
        let message = match &mut self.zlib {
            Some(z) => Message::Binary(z.compress(text.as_bytes()).into()),
            None => Message::Text(text.to_string().into()),
        };
        self.ws.send(message)
    }

    /// The connection ended without a close handshake of ours.
    fn gone(&mut self, client_code: Option<u16>) {
        self.app.gateway.unregister(self.id, client_code, None);
    }

    /// Reads until the peer's close completes (or [`CLOSE_WAIT`] passes).
    fn drain(&mut self) {
        let until = Instant::now() + CLOSE_WAIT;
        while Instant::now() < until {
            match self.ws.read() {
                Ok(_) => {}
                Err(WsError::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    let _ = self.ws.flush();
                }
                Err(_) => break,
            }
        }
    }

    /// Closes with `code`, waits briefly for the client's answer, and
    /// tells the hub.
    fn close(&mut self, code: u16, reason: &str) {
        let mut reason = reason.to_string();
        while reason.len() > 120 {
            reason.pop();
        }
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        if self.ws.close(Some(frame)).is_ok() {
            self.drain();
        }
        self.app.gateway.unregister(self.id, None, Some(code));
    }

    fn refuse(&mut self, r: Refusal) -> Flow {
        self.close(r.code, &r.reason);
        Flow::Closed
    }

    /// One payload from the client.
    fn payload(&mut self, bytes: &[u8]) -> Flow {
        let now = Instant::now();
        self.sends.push_back(now);
        while self
            .sends
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= SEND_WINDOW)
        {
            self.sends.pop_front();
        }
        if self.sends.len() > SEND_LIMIT {
            return self.refuse(Refusal {
                code: 4008,
                reason: "Rate limited.".into(),
            });
        }
        let (op, d) = match identify::envelope(bytes) {
            Ok(e) => e,
            Err(r) => return self.refuse(r),
        };
        if !identify::known_send_op(op) {
            return self.refuse(Refusal {
                code: 4001,
                reason: "Unknown opcode.".into(),
            });
        }
        let gateway = &self.app.gateway;
        let authenticated = gateway.authenticated(self.id);
        match op {
            1 => {
                if let Err(r) = identify::heartbeat(&d) {
                    return self.refuse(r);
                }
                self.heartbeat_deadline = now + heartbeat_grace(self.app);
                if gateway.heartbeat(self.id, &d)
                    && self.send(&op_payload(11, Value::Null)).is_err()
                {
                    self.gone(None);
                    return Flow::Closed;
                }
                Flow::Continue
            }
            2 | 6 if authenticated => self.refuse(Refusal {
                code: 4005,
                reason: "Already authenticated.".into(),
            }),
            2 => self.identify(&d),
            6 => self.resume(&d),
            _ if !authenticated => self.refuse(Refusal {
                code: 4003,
                reason: "Not authenticated.".into(),
            }),
            _ => Flow::Continue,
        }
    }

    fn identify(&mut self, d: &Value) -> Flow {
        let app = self.app;
        let gateway = &app.gateway;
        let hint = identify::token(d)
            .and_then(|t| app.world.bot_by_token(t))
            .map(|b| b.id);
        gateway.note_identify_attempt(self.id, hint);
        let checked = identify::identify(
            d,
            &app.world,
            |t| app.authenticate(Some(t)),
            gateway.options.guilds_per_shard,
        );
        let id = match checked {
            Ok(id) => id,
            Err(r) => return self.refuse(r),
        };
        match gateway.start_session(
            self.id,
            &app.world,
            id.bot,
            id.shard,
            id.intents,
            id.large_threshold,
        ) {
            Ok(_) => Flow::Continue,
            Err(IdentifyRefusal::Concurrency) => {
                if self.send(&op_payload(9, json!(false))).is_err() {
                    self.gone(None);
                    return Flow::Closed;
                }
                Flow::Continue
            }
            Err(IdentifyRefusal::Exhausted) => {
                // gateway.mdx L188: every session ends and the token is reset.
                app.revoke(&id.bot.token);
                gateway.close_bot(id.bot.id, 4004, "Authentication failed.");
                self.refuse(Refusal {
                    code: 4004,
                    reason: "Authentication failed.".into(),
                })
            }
        }
    }

    fn resume(&mut self, d: &Value) -> Flow {
        let app = self.app;
        let (token, sid, seq) = match identify::resume(d) {
            Ok(r) => r,
            Err(r) => return self.refuse(r),
        };
        let Some(bot) = app.authenticate(Some(token)) else {
            return self.refuse(Refusal {
                code: 4004,
                reason: "Authentication failed.".into(),
            });
        };
        match app.gateway.resume(self.id, bot.id, sid, seq) {
            ResumeOutcome::Resumed(_) => Flow::Continue,
            ResumeOutcome::Invalid => {
                app.gateway.note_invalid_session(Some(bot.id));
                if self.send(&op_payload(9, json!(false))).is_err() {
                    self.gone(None);
                    return Flow::Closed;
                }
                Flow::Continue
            }
            ResumeOutcome::BadSeq => self.refuse(Refusal {
                code: 4007,
                reason: "Invalid seq.".into(),
            }),
        }
    }
}
