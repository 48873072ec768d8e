//! A small blocking HTTP/1.1 server: one thread per connection.
//!
//! Why it exists: the fake must run without an async runtime and must be able
//! to misbehave on purpose (hang, drop the connection) in ways a framework
//! would not allow. It speaks just enough HTTP/1.1 for a pooling client such
//! as ureq: keep-alive by default, `Connection: close` honoured, HTTP/1.0
//! closes unless it asks for keep-alive, `Content-Length` bodies only,
//! pipelined requests are answered in order.
//!
//! Invariants:
//! - a request head larger than [`MAX_HEAD`] is refused with 431 and not
//!   buffered;
//! - a body larger than [`Handler::max_body`] is never read: the request is
//!   handed over with an empty body and `body_omitted` set (so the handler
//!   can answer Discord's 413 from the declared `Content-Length`), and the
//!   connection is closed after the answer;
//! - an idle or slow connection holds its thread for at most [`READ_TIMEOUT`];
//! - a panicking handler costs one 500 response, never the process.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::timefmt;

/// Largest accepted request head (request line plus headers), in bytes.
pub const MAX_HEAD: usize = 16 * 1024;
/// Default largest request body, in bytes (Discord's 25 MiB request limit).
pub const MAX_BODY: usize = 25 * 1024 * 1024;
/// Most header fields accepted in one request.
const MAX_HEADERS: usize = 64;
/// How long a connection may stay silent (idle keep-alive or a stalled send).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a write may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a refused connection's remaining input is drained before closing.
const LINGER: Duration = Duration::from_millis(500);
/// At most this much input is drained from a refused connection.
const MAX_LINGER_BYTES: usize = 256 * 1024;
/// Bytes read from the socket per `read` call.
const READ_CHUNK: usize = 64 * 1024;

/// One parsed request.
#[derive(Debug)]
pub struct Request {
    /// The connecting address; Cloudflare's ban is per IP.
    pub peer: std::net::IpAddr,
    pub method: String,
    /// Request target exactly as received (path and query).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The declared `Content-Length` of a body that was too large to read
    /// (then `body` is empty and the connection closes after the answer).
    pub body_omitted: Option<usize>,
}

impl Request {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query string without `?`, or "".
    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }
}

/// A response to write; `Content-Length`, `Date` and `Connection` are added
/// by the server.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response (`Content-Type: application/json`).
    pub fn json(status: u16, body: &serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the handler wants done with a request.
#[derive(Debug)]
pub enum Outcome {
    /// Write this response (the connection may stay open).
    Respond(Response),
    /// Close the connection without writing anything.
    Close,
}

/// Application logic plugged into the server. Called on the connection's
/// thread; it may block (sleep) to simulate latency.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &Request) -> Outcome;

    /// Largest body read; a larger one is left unread (see `body_omitted`).
    fn max_body(&self) -> usize {
        MAX_BODY
    }
}

/// Accepts connections forever, one thread each. Accept errors (for example
/// running out of file descriptors) are reported and retried, never fatal.
pub fn serve(listener: TcpListener, handler: Arc<dyn Handler>) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let handler = Arc::clone(&handler);
                let spawned = thread::Builder::new()
                    .name("fake-discord-conn".into())
                    .spawn(move || serve_connection(stream, handler.as_ref()));
                if let Err(e) = spawned {
                    eprintln!("fake-discord: cannot spawn connection thread: {e}");
                }
            }
            Err(e) => {
                eprintln!("fake-discord: accept failed: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Why reading a request stopped.
enum ReadError {
    /// Clean end of stream between requests, timeout or socket error.
    Gone,
    /// The peer sent something we refuse; answer with this status and close.
    Reject(u16, &'static str),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Gone
    }
}

fn serve_connection(mut stream: TcpStream, handler: &dyn Handler) {
    let configured = stream
        .set_nodelay(true)
        .and_then(|_| stream.set_read_timeout(Some(READ_TIMEOUT)))
        .and_then(|_| stream.set_write_timeout(Some(WRITE_TIMEOUT)));
    if configured.is_err() {
        return;
    }
    // Bytes received but not yet consumed; may hold a pipelined next request.
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        let (req, keep_alive) = match read_request(&mut stream, &mut buf, handler.max_body()) {
            Ok(r) => r,
            Err(ReadError::Gone) => return,
            Err(ReadError::Reject(status, message)) => {
                let body = serde_json::json!({ "message": message, "code": 0 });
                let _ = write_response(&mut stream, &Response::json(status, &body), false);
                lingering_close(stream);
                return;
            }
        };
        let outcome =
            catch_unwind(AssertUnwindSafe(|| handler.handle(&req))).unwrap_or_else(|_| {
                let body =
                    serde_json::json!({ "message": "500: Internal Server Error", "code": 0 });
                Outcome::Respond(Response::json(500, &body))
            });
        match outcome {
            Outcome::Respond(resp) if req.body_omitted.is_some() => {
                // The unread body is still on its way: answer, then drain
                // briefly so the answer is not destroyed by a reset.
                let _ = write_response(&mut stream, &resp, false);
                lingering_close(stream);
                return;
            }
            Outcome::Respond(resp) => {
                if write_response(&mut stream, &resp, keep_alive).is_err() || !keep_alive {
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
            }
            Outcome::Close => {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Closes after an error response while the peer may still be sending.
/// Closing a socket with unread input makes the kernel send RST, which can
/// destroy the response before the client reads it; so stop writing, then
/// discard input for a short while before closing.
fn lingering_close(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let mut sink = [0u8; READ_CHUNK];
    let mut discarded = 0;
    while discarded < MAX_LINGER_BYTES {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => discarded += n,
        }
    }
}

/// Reads more bytes into `buf`; `Gone` on end of stream.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), ReadError> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = stream.read(&mut chunk)?;
    if n == 0 {
        return Err(ReadError::Gone);
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Reads one request (head and body) and whether to keep the connection open
/// afterwards. Consumes exactly that request's bytes from `buf`.
fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    max_body: usize,
) -> Result<(Request, bool), ReadError> {
    let head_len = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() >= MAX_HEAD {
            return Err(ReadError::Reject(
                431,
                "431: Request Header Fields Too Large",
            ));
        }
        fill(stream, buf)?;
    };
    if head_len > MAX_HEAD {
        return Err(ReadError::Reject(
            431,
            "431: Request Header Fields Too Large",
        ));
    }

    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    match parsed.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ReadError::Reject(
                431,
                "431: Request Header Fields Too Large",
            ));
        }
        Ok(httparse::Status::Partial) | Err(_) => {
            return Err(ReadError::Reject(400, "400: Bad Request"));
        }
    }
    let method = parsed.method.unwrap_or_default().to_string();
    let target = parsed.path.unwrap_or_default().to_string();
    let http11 = parsed.version == Some(1);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut req = Request {
        peer: stream
            .peer_addr()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip()),
        method,
        target,
        headers,
        body: Vec::new(),
        body_omitted: None,
    };

    let connection = req.header("connection").unwrap_or("").to_ascii_lowercase();
    let keep_alive = if http11 {
        !connection.contains("close")
    } else {
        connection.contains("keep-alive")
    };
    if req.header("transfer-encoding").is_some() {
        return Err(ReadError::Reject(
            501,
            "501: Transfer-Encoding is not supported; send Content-Length",
        ));
    }
    let body_len = match req.header("content-length") {
        None => 0,
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| ReadError::Reject(400, "400: Bad Request"))?,
    };
    if body_len > max_body {
        buf.drain(..head_len);
        req.body_omitted = Some(body_len);
        return Ok((req, false));
    }
    if body_len > 0
        && req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        && buf.len() == head_len
    {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    while buf.len() < head_len + body_len {
        fill(stream, buf)?;
    }
    req.body = buf[head_len..head_len + body_len].to_vec();
    buf.drain(..head_len + body_len);
    Ok((req, keep_alive))
}

/// Standard reason phrase for the statuses this server produces.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

fn write_response(stream: &mut TcpStream, resp: &Response, keep_alive: bool) -> io::Result<()> {
    let mut out = Vec::with_capacity(256 + resp.body.len());
    write!(out, "HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status))?;
    write!(
        out,
        "Date: {}\r\n",
        timefmt::http_date(timefmt::unix_now_ms())
    )?;
    for (name, value) in &resp.headers {
        write!(out, "{name}: {value}\r\n")?;
    }
    write!(out, "Content-Length: {}\r\n", resp.body.len())?;
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&resp.body);
    stream.write_all(&out)?;
    stream.flush()
}
