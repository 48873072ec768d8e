//! server: the HTTP/1.1 front. Reads requests off sockets under hard limits and
//! runs the handler for each complete request, at most `workers` at once.
//!
//! Shape: one accept thread; one thread per open connection (capped by
//! `max_connections`) that reads, parses and writes bytes, and runs the
//! handler itself once it holds one of `workers` permits. Idle and slow
//! clients hold no permit while they dawdle, so they cannot keep other
//! clients from being answered. Running the handler on the thread that read
//! the request, instead of handing it to a pool thread and waiting for the
//! answer, saves two thread wake-ups per request (`make bench`: the hand-off
//! was the largest cost in the profile). Why not a server crate: see
//! ARCHITECTURE.md ("The HTTP front").
//!
//! Architecture invariants:
//! - no buffer grows past its limit: a head is refused past `MAX_HEAD`, a body
//!   past what the handler allows for it (`Handler::body_limit`: `MAX_BODY`
//!   unless it says otherwise) is refused from its `Content-Length` before
//!   any of it is read, and nothing else is buffered;
//! - every read and write has a deadline (`client_timeout`; a body over
//!   `MAX_BODY` gets more, in proportion to its size: `body_deadline`);
//! - responses on a connection are written in request order (pipelining);
//! - this module knows HTTP framing, not routes, sessions or Discord.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::observe::metrics;

/// Request line plus headers. API.md: "over 16 KiB gets 431".
pub const MAX_HEAD: usize = 16 * 1024;
/// Request body. API.md: "Request bodies over 64 KiB get 413".
pub const MAX_BODY: usize = 64 * 1024;
/// Headers per request; more is treated like an oversized head.
const MAX_HEADERS: usize = 64;
/// A connection thread parses bytes and runs the handler (ureq, TLS,
/// serde_json with its 128-level recursion limit). Only touched pages are
/// resident: a few KiB for a connection that never ran a request, about 41
/// KB once one has (ureq's frames), whatever this is.
const CONNECTION_STACK: usize = 512 * 1024;
/// After refusing a request whose body we will not read, we read and discard
/// at most this much (for at most `LINGER`) before closing, so the client sees
/// our answer instead of a reset.
const LINGER_BYTES: usize = 256 * 1024;
const LINGER: Duration = Duration::from_secs(2);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 8 * 1024;
/// A body over `MAX_BODY` (an upload) is read straight into its own buffer,
/// which grows this much at a time: what it holds is what arrived, so a
/// client that declares 25 MiB and sends little costs little.
const LARGE_READ: usize = 64 * 1024;
/// The slowest upload a client may send, in bytes per second, on average
/// (see `body_deadline`).
const UPLOAD_FLOOR_RATE: u64 = 64 * 1024;
/// How long the accept loop backs off when `accept` fails (EMFILE and kin),
/// instead of spinning or dying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Why the front turned a request away itself, before or instead of the
/// handler. The handler decides what the answer looks like (`refuse`); the
/// front knows only why.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The head is malformed; the text says how.
    BadRequest(String),
    /// The request carried `Transfer-Encoding`; only `Content-Length` bodies
    /// are read.
    LengthRequired,
    /// The declared body is over `limit` bytes; refused before it is read.
    PayloadTooLarge { limit: usize },
    /// The request line and headers are over `limit` bytes.
    HeadTooLarge { limit: usize },
    /// `max_connections` connections are open already.
    TooManyConnections,
    /// The handler (or `admit`) panicked; the panic hook logged where.
    Panicked,
}

/// A complete request as the handler sees it.
#[derive(Debug)]
pub struct Request {
    /// The method, the target and every header name and value, back to
    /// back; the ranges below point into it. Two allocations per request
    /// instead of two per header (`make bench`: a tenth of the allocations
    /// per request).
    text: String,
    method: Range<usize>,
    target: Range<usize>,
    headers: Vec<(Range<usize>, Range<usize>)>,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
    /// When the request was fully read: waits (for a bot's place, for a
    /// worker, for rate limits) are budgeted from here, together.
    pub received: Instant,
}

impl Request {
    /// Header values are decoded once, here; invalid UTF-8 becomes U+FFFD.
    fn new<'a>(
        method: &str,
        target: &str,
        headers: impl ExactSizeIterator<Item = (&'a str, &'a [u8])> + Clone,
        peer: SocketAddr,
    ) -> Self {
        // Raw lengths: exact unless a value needed U+FFFD, when the String grows.
        let length = method.len()
            + target.len()
            + headers
                .clone()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>();
        let mut text = String::with_capacity(length);
        let mut append = |part: &str| {
            text.push_str(part);
            text.len() - part.len()..text.len()
        };
        let method = append(method);
        let target = append(target);
        let mut ranges = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            ranges.push((append(name), append(&String::from_utf8_lossy(value))));
        }
        Request {
            text,
            method,
            target,
            headers: ranges,
            body: Vec::new(),
            peer,
            received: Instant::now(),
        }
    }

    pub fn method(&self) -> &str {
        &self.text[self.method.clone()]
    }

    /// Path and query exactly as sent.
    pub fn target(&self) -> &str {
        &self.text[self.target.clone()]
    }

    /// Every header, in order.
    fn headers(&self) -> impl DoubleEndedIterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .map(|(n, v)| (&self.text[n.clone()], &self.text[v.clone()]))
    }

    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every value of a header that may be sent on several lines, in order.
    pub fn header_values<'a>(
        &'a self,
        name: &'a str,
    ) -> impl DoubleEndedIterator<Item = &'a str> + 'a {
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn path(&self) -> &str {
        let target = self.target();
        target.split_once('?').map_or(target, |(p, _)| p)
    }

    pub fn query(&self) -> &str {
        self.target().split_once('?').map_or("", |(_, q)| q)
    }

    /// A request from 127.0.0.1, for unit tests and `benches/micro.rs`.
    #[doc(hidden)]
    pub fn for_test(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Self {
        let mut request = Request::new(
            method,
            target,
            headers.iter().map(|(n, v)| (*n, v.as_bytes())),
            SocketAddr::from(([127, 0, 0, 1], 1)),
        );
        request.body = body.to_vec();
        request
    }
}

/// A response: every body this service writes is JSON, except the
/// Prometheus scrape, or empty for 204.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// A body written after the head for as long as it lasts (an event
    /// stream), instead of `body`.
    pub stream: Option<Streaming>,
}

/// What writes a streamed body: it runs on the connection's thread after
/// the worker permit is given back, so an open stream holds no worker, and
/// it ends when it returns (the connection is then closed).
pub trait StreamBody: Send {
    fn run(self: Box<Self>, out: &mut StreamOut<'_>);
}

/// Where a streamed body goes: the client's socket, each write bounded by
/// `--client-timeout` (a client that stops reading is dropped), and whether
/// the server is stopping (streams end then).
pub struct StreamOut<'a> {
    stream: &'a mut TcpStream,
    stopping: &'a AtomicBool,
}

impl StreamOut<'_> {
    /// Whether the server is shutting down: the stream should end.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

impl Write for StreamOut<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.stream.write(bytes)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.stream.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// A `StreamBody` a `Response` can carry (it is `Clone` and `PartialEq`
/// like the rest of it: by identity).
#[derive(Clone)]
pub struct Streaming(Arc<Mutex<Option<Box<dyn StreamBody>>>>);

impl Streaming {
    fn take(&self) -> Option<Box<dyn StreamBody>> {
        self.0.lock().take()
    }
}

impl PartialEq for Streaming {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Streaming")
    }
}

impl Response {
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Response::typed(status, "application/json", body)
    }

    pub fn typed(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        Response {
            status,
            headers: vec![("Content-Type", content_type.into())],
            body,
            stream: None,
        }
    }

    /// A 200 whose body `body` writes for as long as it lasts; the
    /// connection closes after it.
    pub fn streaming(content_type: &'static str, body: Box<dyn StreamBody>) -> Self {
        Response {
            stream: Some(Streaming(Arc::new(Mutex::new(Some(body))))),
            ..Response::typed(200, content_type, Vec::new())
        }
    }

    /// 204: a CORS preflight answer.
    pub fn no_content() -> Self {
        Response::empty(204)
    }

    /// A status with no body (204, or a passthrough's empty answer).
    pub fn empty(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            stream: None,
        }
    }

    pub fn header(&mut self, name: &'static str, value: impl Into<String>) {
        self.headers.push((name, value.into()));
    }

    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Held while a request is worked on; dropped once its answer is ready.
/// What `admit` learned about a request, handed to `handle` (the handler
/// downcasts it to its own type).
pub type Ticket = Box<dyn std::any::Any + Send>;

/// What the front calls, all on the connection's thread. `handle` runs
/// holding one of the `workers` permits; `refuse` answers requests the front
/// turns away itself (too large, malformed, overloaded). `request` is `None`
/// when the head was unreadable.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: &Request, ticket: Option<&Ticket>) -> Response;
    fn refuse(&self, request: Option<&Request>, why: Refusal) -> Response;
    /// Runs before the request waits for a permit, and may block for a
    /// bounded time: a place to make a flood wait without holding permits
    /// other clients need. `Err` is written as the answer.
    fn admit(&self, _request: &Request) -> Result<Option<Ticket>, Response> {
        Ok(None)
    }
    /// Runs once the head is read, before any of the body is (`declared` is
    /// its `Content-Length`): routes that take large bodies say so here, so
    /// every other request stays bounded by `MAX_BODY`. `Err` is written as
    /// the answer and the connection closed, the body unread.
    fn body_limit(&self, _head: &Request, _declared: usize) -> Result<BodyAllowance, Response> {
        Ok(BodyAllowance::default())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection idle, or stalled mid-request, this long is closed.
    pub client_timeout: Duration,
    /// Open connections at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Requests running the handler at once (`--workers`).
    pub workers: usize,
}

/// How much body the front may read for a request, decided from its head.
pub struct BodyAllowance {
    /// The most bytes of body; a larger `Content-Length` is refused (413)
    /// before any of it is read.
    pub limit: usize,
    /// What the handler reserved for the request (an upload slot), kept
    /// until it is answered, or dropped with a refusal.
    pub hold: Option<Box<dyn std::any::Any + Send>>,
}

impl BodyAllowance {
    pub fn up_to(limit: usize) -> BodyAllowance {
        BodyAllowance { limit, hold: None }
    }
}

impl Default for BodyAllowance {
    fn default() -> Self {
        BodyAllowance::up_to(MAX_BODY)
    }
}

/// The `workers` permits: how many requests run the handler at once.
/// A mutex and condvar rather than a channel or semaphore crate: channels
/// spin and `sched_yield` before parking, which with hundreds of threads on
/// two cores cost a fifth of all CPU (perf, `make bench`).
struct Permits {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Permits {
    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock();
        if *free == 0 {
            let queued = &metrics::global().queued;
            queued.inc();
            while *free == 0 {
                self.freed.wait(&mut free);
            }
            queued.dec();
        }
        *free -= 1;
        metrics::global().workers_busy.inc();
        Permit { permits: self }
    }
}

struct Permit<'a> {
    permits: &'a Permits,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        metrics::global().workers_busy.dec();
        *self.permits.free.lock() += 1;
        self.permits.freed.notify_one();
    }
}

struct Shared {
    handler: Arc<dyn Handler>,
    limits: Limits,
    permits: Permits,
    stopping: AtomicBool,
    /// Requests read but not yet fully answered; shutdown waits for 0.
    in_flight: AtomicUsize,
    connections: AtomicUsize,
}

/// A running server. Dropping it does not stop it; call `shutdown`.
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    accept_thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// Binds, starts the workers and the accept loop, and returns at once.
    pub fn start(addr: &str, limits: Limits, handler: Arc<dyn Handler>) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            handler,
            limits,
            permits: Permits {
                free: Mutex::new(limits.workers),
                freed: Condvar::new(),
            },
            stopping: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept_loop(listener, accept_shared))?;
        Ok(Server {
            shared,
            local_addr,
            accept_thread: Some(accept_thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, then waits up to `grace` for in-flight requests to be
    /// answered. Returns how many were still in flight when it gave up.
    pub fn shutdown(mut self, grace: Duration) -> usize {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // The accept loop is blocked in accept(); a connection wakes it.
        let _ = TcpStream::connect_timeout(&self.local_addr, Duration::from_secs(1));
        if let Some(accept) = self.accept_thread.take() {
            let _ = accept.join();
        }
        let deadline = Instant::now() + grace;
        loop {
            let left = self.shared.in_flight.load(Ordering::SeqCst);
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                log::warn!("accept failed: {err}");
                thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        if shared.connections.fetch_add(1, Ordering::SeqCst) >= shared.limits.max_connections {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            refuse_connection(stream, &shared);
            continue;
        }
        let conn_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                Connection::new(stream, &conn_shared).serve();
                conn_shared.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(err) = spawned {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            log::warn!("cannot start a connection thread: {err}");
        }
    }
}

/// Over the connection cap: say so and close, from the accept thread. The
/// answer is small enough to fit the socket buffer, so this never blocks.
fn refuse_connection(mut stream: TcpStream, shared: &Shared) {
    let response = shared.handler.refuse(None, Refusal::TooManyConnections);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = write_response(&mut stream, &response, false, false);
}

/// The time left before `deadline`; none left means the client is too slow.
fn time_left(deadline: Instant) -> Result<Duration, ReadError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ReadError::Gone);
    }
    Ok(left)
}

/// Why reading a request stopped.
enum ReadError {
    /// The peer closed, the connection stalled past the timeout, or the
    /// socket failed: close without answering.
    Gone,
    /// Answer with this error, then close.
    Refuse(Refusal, Option<Box<Request>>),
    /// Answer with the handler's own refusal (`body_limit`), then close.
    Answer(Box<Response>),
}

struct Connection<'a> {
    stream: TcpStream,
    shared: &'a Shared,
    peer: SocketAddr,
    /// Bytes read but not yet consumed: at most one head plus one body, plus
    /// whatever of the next pipelined request arrived with them.
    buf: Vec<u8>,
    /// The socket's read timeout as last set.
    read_timeout: Option<Duration>,
}

/// What the head said about framing and the connection.
struct Head {
    request: Request,
    head_len: usize,
    body_len: usize,
    keep_alive: bool,
    http10: bool,
    expect_continue: bool,
    /// Bytes of `buf` the request still occupies, drained once it is
    /// answered (a large body was moved out of `buf` already).
    buffered: usize,
    /// Kept until the request is answered (`BodyAllowance::hold`).
    hold: Option<Box<dyn std::any::Any + Send>>,
}

impl<'a> Connection<'a> {
    fn new(stream: TcpStream, shared: &'a Shared) -> Self {
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(shared.limits.client_timeout));
        Connection {
            stream,
            shared,
            peer,
            buf: Vec::new(),
            read_timeout: None,
        }
    }

    fn serve(mut self) {
        loop {
            let head = match self.read_request() {
                Ok(head) => head,
                Err(ReadError::Gone) => return,
                Err(ReadError::Refuse(error, request)) => {
                    let response = self.shared.handler.refuse(request.as_deref(), error);
                    let _ = write_response(&mut self.stream, &response, false, false);
                    self.linger_close();
                    return;
                }
                Err(ReadError::Answer(response)) => {
                    let _ = write_response(&mut self.stream, &response, false, false);
                    self.linger_close();
                    return;
                }
            };
            let consumed = head.buffered;
            let hold = head.hold;
            let mut keep_alive = head.keep_alive;
            self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
            // A panic in admit is a 500, as in handle, and the counters stay
            // right.
            let admitted = catch_unwind(AssertUnwindSafe(|| {
                self.shared.handler.admit(&head.request)
            }))
            .unwrap_or_else(|_| {
                Err(self
                    .shared
                    .handler
                    .refuse(Some(&head.request), Refusal::Panicked))
            });
            let response = match admitted {
                Ok(ticket) => {
                    let response = self.dispatch(head.request, ticket.as_ref());
                    drop(ticket);
                    response
                }
                Err(refusal) => refusal,
            };
            drop(hold);
            self.buf.drain(..consumed);
            if self.shared.stopping.load(Ordering::SeqCst) {
                keep_alive = false;
            }
            if let Some(body) = response.stream.as_ref().and_then(Streaming::take) {
                self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                self.stream_body(&response, body);
                return;
            }
            let written = write_response(&mut self.stream, &response, keep_alive, head.http10);
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            if written.is_err() || !keep_alive {
                let _ = self.stream.shutdown(Shutdown::Both);
                return;
            }
            // Keep memory per idle connection small after a large request.
            if self.buf.is_empty() && self.buf.capacity() > 4096 {
                self.buf = Vec::new();
            }
        }
    }

    /// Writes a streamed response: the head (no length: the body ends when
    /// the connection closes), then the body for as long as it runs, then
    /// closes. Counted out of `in_flight` already: shutdown does not wait
    /// for streams, which end when they see it.
    fn stream_body(&mut self, response: &Response, body: Box<dyn StreamBody>) {
        let head = encode_head(response, false, false);
        if self.stream.write_all(&head).is_ok() {
            let _ = self.stream.set_read_timeout(None);
            catch_unwind(AssertUnwindSafe(|| {
                body.run(&mut StreamOut {
                    stream: &mut self.stream,
                    stopping: &self.shared.stopping,
                });
            }))
            .unwrap_or_else(|_| log::error!("an event stream panicked (see above); closed"));
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Runs the handler under a permit; a panic in it is answered 500 and
    /// this connection lives on (the panic hook has logged where).
    fn dispatch(&self, request: Request, ticket: Option<&Ticket>) -> Response {
        let _permit = self.shared.permits.acquire();
        catch_unwind(AssertUnwindSafe(|| {
            self.shared.handler.handle(&request, ticket)
        }))
        .unwrap_or_else(|_| {
            self.shared
                .handler
                .refuse(Some(&request), Refusal::Panicked)
        })
    }

    /// Reads one request (head, then body) into `buf`, with `client_timeout`
    /// as the budget for the whole request once its first byte arrived.
    fn read_request(&mut self) -> Result<Head, ReadError> {
        let timeout = self.shared.limits.client_timeout;
        // Idle wait for the first byte of the next request.
        if self.buf.is_empty() {
            self.read_more(timeout)?;
        }
        let deadline = Instant::now() + timeout;
        let mut scanned = 0;
        let head = loop {
            // Only parse once the blank line is here: a client dribbling one
            // byte at a time must not make us re-parse 16 KiB per byte.
            if let Some(end) = find_head_end(&self.buf, scanned) {
                if end > MAX_HEAD {
                    return Err(ReadError::Refuse(
                        Refusal::HeadTooLarge { limit: MAX_HEAD },
                        None,
                    ));
                }
                break self.parse_head(end)?;
            }
            scanned = self.buf.len().saturating_sub(3);
            if self.buf.len() >= MAX_HEAD {
                return Err(ReadError::Refuse(
                    Refusal::HeadTooLarge { limit: MAX_HEAD },
                    None,
                ));
            }
            self.read_more(time_left(deadline)?)?;
        };
        if head.expect_continue && self.buf.len() < head.head_len + head.body_len {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(|_| ReadError::Gone)?;
        }
        let mut head = head;
        if head.body_len > MAX_BODY {
            let deadline = body_deadline(deadline, head.body_len);
            head.request.body = self.read_large_body(head.head_len, head.body_len, deadline)?;
            head.buffered = 0;
        } else {
            while self.buf.len() < head.head_len + head.body_len {
                self.read_more(time_left(deadline)?)?;
            }
            head.request.body = self.buf[head.head_len..head.head_len + head.body_len].to_vec();
        }
        head.request.received = Instant::now();
        Ok(head)
    }

    /// A body over `MAX_BODY` (an upload the handler allowed), read into a
    /// buffer of its own instead of `buf`: copying megabytes out of `buf`
    /// would hold the body twice, and `buf` would keep the capacity for the
    /// connection's life. Each read still waits at most `client_timeout`,
    /// so a stalled upload is closed as soon as any other request.
    fn read_large_body(
        &mut self,
        head_len: usize,
        body_len: usize,
        deadline: Instant,
    ) -> Result<Vec<u8>, ReadError> {
        let arrived = (self.buf.len() - head_len).min(body_len);
        let mut body = Vec::with_capacity(body_len);
        body.extend_from_slice(&self.buf[head_len..head_len + arrived]);
        self.buf.drain(..head_len + arrived);
        let stall = self.shared.limits.client_timeout;
        while body.len() < body_len {
            let wait = time_left(deadline)?.min(stall);
            if self.read_timeout != Some(wait) {
                self.stream
                    .set_read_timeout(Some(wait))
                    .map_err(|_| ReadError::Gone)?;
                self.read_timeout = Some(wait);
            }
            let filled = body.len();
            body.resize(filled + (body_len - filled).min(LARGE_READ), 0);
            match self.stream.read(&mut body[filled..]) {
                Ok(0) => return Err(ReadError::Gone),
                Ok(n) => body.truncate(filled + n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => body.truncate(filled),
                Err(_) => return Err(ReadError::Gone),
            }
        }
        Ok(body)
    }

    /// One `read` into `buf`, waiting at most `wait`, never past `MAX_HEAD +
    /// MAX_BODY` in total. Reads into a stack buffer and copies what arrived:
    /// zero-filling a 16 KiB `Vec` region before each read cost more than the
    /// copy.
    fn read_more(&mut self, wait: Duration) -> Result<(), ReadError> {
        // The idle wait between requests is always the same: setting it
        // again was a system call per request.
        if self.read_timeout != Some(wait) {
            self.stream
                .set_read_timeout(Some(wait))
                .map_err(|_| ReadError::Gone)?;
            self.read_timeout = Some(wait);
        }
        let mut chunk = [0u8; READ_CHUNK];
        let room = (MAX_HEAD + MAX_BODY)
            .saturating_sub(self.buf.len())
            .clamp(1, READ_CHUNK);
        match self.stream.read(&mut chunk[..room]) {
            Ok(0) => Err(ReadError::Gone),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(_) => Err(ReadError::Gone),
        }
    }

    fn parse_head(&self, end: usize) -> Result<Head, ReadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let head_len = match parsed.parse(&self.buf[..end]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return Err(malformed("incomplete request head"));
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ReadError::Refuse(
                    Refusal::HeadTooLarge { limit: MAX_HEAD },
                    None,
                ));
            }
            Err(err) => return Err(malformed(&format!("malformed request: {err}"))),
        };
        let http10 = parsed.version == Some(0);
        let request = Request::new(
            parsed.method.unwrap_or_default(),
            parsed.path.unwrap_or_default(),
            parsed.headers.iter().map(|h| (h.name, h.value)),
            self.peer,
        );
        let connection = request.header("connection").unwrap_or("");
        let has_token = |t: &str| {
            connection
                .split(',')
                .any(|c| c.trim().eq_ignore_ascii_case(t))
        };
        let keep_alive = if http10 {
            has_token("keep-alive")
        } else {
            !has_token("close")
        };
        if request.header("transfer-encoding").is_some() {
            return Err(ReadError::Refuse(
                Refusal::LengthRequired,
                Some(Box::new(request)),
            ));
        }
        let body_len = match content_length(&request) {
            Ok(n) => n,
            Err(error) => return Err(ReadError::Refuse(error, Some(Box::new(request)))),
        };
        // A panic here is a 500, as in admit and handle.
        let allowed = catch_unwind(AssertUnwindSafe(|| {
            self.shared.handler.body_limit(&request, body_len)
        }));
        let allowance = match allowed {
            Ok(Ok(allowance)) => allowance,
            Ok(Err(response)) => return Err(ReadError::Answer(Box::new(response))),
            Err(_) => {
                return Err(ReadError::Refuse(
                    Refusal::Panicked,
                    Some(Box::new(request)),
                ));
            }
        };
        if body_len > allowance.limit {
            return Err(ReadError::Refuse(
                Refusal::PayloadTooLarge {
                    limit: allowance.limit,
                },
                Some(Box::new(request)),
            ));
        }
        let expect_continue = request
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        Ok(Head {
            request,
            head_len,
            body_len,
            keep_alive,
            http10,
            expect_continue,
            buffered: head_len + body_len,
            hold: allowance.hold,
        })
    }

    /// Close after refusing a request whose rest we did not read: stop
    /// writing, discard a bounded amount of what the client is still sending,
    /// then close. Closing at once would make the kernel reset the connection
    /// and the client could lose our answer.
    fn linger_close(mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let _ = self.stream.set_read_timeout(Some(LINGER));
        let deadline = Instant::now() + LINGER;
        let mut scratch = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES && Instant::now() < deadline {
            match self.stream.read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    }
}

/// When reading a body over `MAX_BODY` must end: the request's deadline
/// (`client_timeout` from its first byte) plus its size at
/// `UPLOAD_FLOOR_RATE`, 64 KiB/s: 400 s more for 25 MiB. A fixed deadline
/// would either refuse honest uploads from slow links or let a 64 KiB
/// request dawdle for minutes. 64 KiB/s (about 0.5 Mbit/s) is below the
/// upload rate of a weak mobile link, and a client that slow cannot hold
/// much: at most the handler's few upload slots, each a connection thread
/// and the bytes that arrived, never a worker.
fn body_deadline(deadline: Instant, body_len: usize) -> Instant {
    let seconds = body_len as f64 / UPLOAD_FLOOR_RATE as f64;
    deadline + Duration::from_secs_f64(seconds)
}

fn malformed(message: &str) -> ReadError {
    ReadError::Refuse(Refusal::BadRequest(message.to_string()), None)
}

/// The declared body length: absent means 0; several differing values or a
/// non-number are refused (request smuggling starts with ambiguous framing).
fn content_length(request: &Request) -> Result<usize, Refusal> {
    let mut found: Option<u64> = None;
    for value in request.header_values("content-length") {
        let value = value.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Refusal::BadRequest("invalid Content-Length".into()));
        }
        // Too many digits for u64 is certainly too large.
        let n = value.parse::<u64>().unwrap_or(u64::MAX);
        if found.is_some_and(|f| f != n) {
            return Err(Refusal::BadRequest(
                "conflicting Content-Length headers".into(),
            ));
        }
        found = Some(n);
    }
    let n = found.unwrap_or(0);
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// The end of the head (just past the blank line), searching from `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// The bytes of a response, head and body in one buffer so it leaves in one
/// write.
/// Writes head and body in one `writev`, so a large body is not copied
/// behind its head first.
fn write_response(
    stream: &mut TcpStream,
    response: &Response,
    keep_alive: bool,
    http10: bool,
) -> io::Result<()> {
    let head = encode_head(response, keep_alive, http10);
    let mut parts = [io::IoSlice::new(&head), io::IoSlice::new(&response.body)];
    let mut parts = &mut parts[..];
    while !parts.is_empty() {
        match stream.write_vectored(parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn encode_head(response: &Response, keep_alive: bool, http10: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
    let _ = write!(
        out,
        "{version} {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if response.status != 204 && response.stream.is_none() {
        let _ = write!(out, "Content-Length: {}\r\n", response.body.len());
    }
    match (keep_alive, http10) {
        (false, _) => out.extend_from_slice(b"Connection: close\r\n"),
        (true, true) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        (true, false) => {}
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_is_found_with_crlf_and_bare_lf() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nrest", 0), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
    }

    #[test]
    fn conflicting_content_lengths_are_refused() {
        let req = Request::for_test(
            "POST",
            "/",
            &[("Content-Length", "5"), ("content-length", "6")],
            b"",
        );
        assert!(content_length(&req).is_err());
    }

    #[test]
    fn huge_content_length_is_not_an_error_but_huge() {
        let req = Request::for_test(
            "POST",
            "/",
            &[("Content-Length", "1000000000000000000000")],
            b"",
        );
        assert!(content_length(&req).unwrap() > MAX_BODY);
    }

    struct Panicky;

    impl Handler for Panicky {
        fn handle(&self, request: &Request, _: Option<&Ticket>) -> Response {
            if request.path() == "/panic" {
                panic!("handler bug");
            }
            Response::json(200, b"{}".to_vec())
        }
        fn refuse(&self, _: Option<&Request>, why: Refusal) -> Response {
            let status = if why == Refusal::Panicked { 500 } else { 400 };
            Response::json(status, b"{}".to_vec())
        }
    }

    #[test]
    fn a_handler_panic_is_a_500_and_the_worker_lives_on() {
        let limits = Limits {
            client_timeout: Duration::from_secs(5),
            max_connections: 8,
            workers: 1,
        };
        let server = Server::start("127.0.0.1:0", limits, Arc::new(Panicky)).unwrap();
        let exchange = |path: &str| {
            let mut stream = TcpStream::connect(server.local_addr()).unwrap();
            write!(stream, "GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
            let mut reply = String::new();
            stream.read_to_string(&mut reply).unwrap();
            reply
        };
        assert!(exchange("/panic").starts_with("HTTP/1.1 500"));
        // The only worker survived.
        assert!(exchange("/ok").starts_with("HTTP/1.1 200"));
        assert_eq!(server.shutdown(Duration::from_secs(1)), 0);
    }

    #[test]
    fn connection_close_is_announced() {
        let bytes = encode_head(&Response::json(200, b"{}".to_vec()), false, false);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.contains("Content-Length: 2\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
