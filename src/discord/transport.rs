//! transport: the TCP connections under ureq's pool, with a third of the
//! system calls per Discord call of ureq's own TCP transport.
//!
//! ureq's transport probes a pooled connection by switching its socket to
//! non-blocking, reading, and switching back (three calls), both when the
//! connection goes back to the pool and when it is taken out, and it sets
//! the socket's read and write timeouts before each call, because the time
//! left of a call's budget is never the same twice. That was 10 of the 16
//! system calls per client request (`strace -c`, `make bench`). Here:
//!
//! - a connection is probed with one `recv(MSG_PEEK | MSG_DONTWAIT)`, and
//!   only when taken from the pool. The probe ureq makes as the connection
//!   goes back, right after its body was read to the end, is skipped: bytes
//!   or a close arriving after it are what the next probe finds;
//! - a socket timeout is set again only when the time left differs from the
//!   one set by more than `TIMEOUT_SLACK`, so a wait may end that much early
//!   or late, against budgets of seconds.
//!
//! TLS is ureq's own (`RustlsConnector`), chained on top of this, as in
//! ureq's default chain. This is ureq's `unversioned` API, hence the `~3.5`
//! pin in Cargo.toml.

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use ureq::Error;
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    RustlsConnector, ShutdownHandle, Transport,
};

/// How far a socket timeout may be from the time actually left.
const TIMEOUT_SLACK: Duration = Duration::from_millis(20);
/// The least time one address of several is given to connect.
const MIN_CONNECT_ATTEMPT: Duration = Duration::from_millis(10);

/// The chain every Discord call goes through: as ureq's default chain,
/// without SOCKS. A CONNECT proxy from the configuration (ureq reads
/// `HTTPS_PROXY` and kin) first, then our TCP link, then ureq's TLS.
pub fn connector() -> impl Connector {
    ConnectProxyConnector::default()
        .chain(TcpConnector)
        .chain(RustlsConnector::default())
}

/// Opens plain TCP connections.
#[derive(Debug, Default)]
pub struct TcpConnector;

impl<In: Transport> Connector<In> for TcpConnector {
    type Out = Either<In, TcpTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, Error> {
        if let Some(chained) = chained {
            return Ok(Some(Either::A(chained)));
        }
        let stream = Arc::new(connect(details)?);
        let handle: Arc<dyn ShutdownHandle> = stream.clone();
        (details.register_shutdown)(Arc::downgrade(&handle))?;
        let config = details.config;
        Ok(Some(Either::B(TcpTransport {
            stream,
            buffers: LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size()),
            read_timeout: None,
            write_timeout: None,
            probe_due: false,
        })))
    }
}

/// Tries each resolved address in turn within the call's connect budget.
/// Each but the last gets half of what is left: an address that swallows
/// packets (a host without an IPv6 route, say) must not spend the whole
/// budget that the next address needed.
fn connect(details: &ConnectionDetails) -> Result<TcpStream, Error> {
    let budget = details.timeout.not_zero().map(|t| *t);
    let started = std::time::Instant::now();
    let count = details.addrs.len();
    let mut last = None;
    for (index, addr) in details.addrs.iter().enumerate() {
        let attempt = match budget {
            Some(budget) => {
                let left = budget.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(Error::Timeout(details.timeout.reason));
                }
                TcpStream::connect_timeout(addr, attempt_budget(left, index, count))
            }
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(stream) => {
                if details.config.no_delay() {
                    stream.set_nodelay(true)?;
                }
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                last = Some(Error::Timeout(details.timeout.reason));
            }
            Err(e) => last = Some(Error::Io(e)),
        }
    }
    Err(last.unwrap_or_else(|| Error::Io(io::ErrorKind::AddrNotAvailable.into())))
}

#[derive(Debug)]
pub struct TcpTransport {
    /// Shared with the agent's shutdown handle, which may shut it down from
    /// another thread.
    stream: Arc<TcpStream>,
    buffers: LazyBuffers,
    /// The socket timeouts as last set.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// False right after I/O: the first `is_open` after it is ureq's probe
    /// as the connection goes back to the pool.
    probe_due: bool,
}

impl Transport for TcpTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        let timeout = timeout.for_write();
        apply_timeout(
            &self.stream,
            &mut self.write_timeout,
            time_left(timeout)?,
            TcpStream::set_write_timeout,
        )?;
        self.probe_due = false;
        let output = &self.buffers.output()[..amount];
        (&*self.stream)
            .write_all(output)
            .map_err(|e| io_error(e, timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        let timeout = timeout.for_read();
        let left = time_left(timeout)?;
        apply_timeout(
            &self.stream,
            &mut self.read_timeout,
            left,
            TcpStream::set_read_timeout,
        )?;
        self.probe_due = false;
        let started = std::time::Instant::now();
        let read = loop {
            match (&*self.stream).read(self.buffers.input_append_buf()) {
                // A signal, not the peer. Linux does not restart a read that
                // has a timeout; read again with what is left of it.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    let rest = left.map(|l| l.saturating_sub(started.elapsed()));
                    if rest.is_some_and(|r| r.is_zero()) {
                        return Err(Error::Timeout(timeout.reason));
                    }
                    apply_timeout(
                        &self.stream,
                        &mut self.read_timeout,
                        rest,
                        TcpStream::set_read_timeout,
                    )?;
                }
                other => break other,
            }
        };
        let amount = read.map_err(|e| io_error(e, timeout))?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        if !std::mem::replace(&mut self.probe_due, true) {
            return true;
        }
        let mut byte = [MaybeUninit::<u8>::uninit()];
        let peeked = socket2::SockRef::from(&*self.stream)
            .recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT);
        // Nothing to read is the one healthy answer: a byte is a response
        // nobody asked for, 0 is the server's close, any error a dead socket.
        matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// The socket timeout for an I/O step, `None` when the call has no budget.
fn time_left(timeout: NextTimeout) -> Result<Option<Duration>, Error> {
    if timeout.after.is_zero() {
        return Err(Error::Timeout(timeout.reason));
    }
    Ok(timeout.not_zero().map(|t| *t))
}

/// The time address `index` of `count` gets to connect, of `left`.
fn attempt_budget(left: Duration, index: usize, count: usize) -> Duration {
    if index + 1 == count {
        left
    } else {
        (left / 2).max(MIN_CONNECT_ATTEMPT).min(left)
    }
}

/// Sets a socket timeout (`set`), unless the one set is within the slack.
fn apply_timeout(
    stream: &TcpStream,
    current: &mut Option<Duration>,
    wanted: Option<Duration>,
    set: fn(&TcpStream, Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    if needs_update(*current, wanted) {
        set(stream, wanted)?;
        *current = wanted;
    }
    Ok(())
}

fn needs_update(set: Option<Duration>, wanted: Option<Duration>) -> bool {
    match (set, wanted) {
        (Some(set), Some(wanted)) => set.abs_diff(wanted) > TIMEOUT_SLACK,
        (set, wanted) => set != wanted,
    }
}

/// A socket timeout is the call's timeout; the rest are I/O errors.
fn io_error(e: io::Error, timeout: NextTimeout) -> Error {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::Timeout(timeout.reason),
        _ => Error::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use ureq::unversioned::resolver::DefaultResolver;

    /// What the test server does to a connection it has answered, once the
    /// test says go.
    #[derive(Clone, Copy)]
    enum After {
        KeepOpen,
        Close,
        /// Sends bytes nobody asked for.
        Babble,
    }

    struct TestServer {
        url: String,
        accepted: Arc<AtomicUsize>,
        go: mpsc::Sender<()>,
        done: mpsc::Receiver<()>,
    }

    /// Reads one request head; false once the peer has gone.
    fn read_head(reader: &mut impl BufRead) -> Option<String> {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return None;
            }
            head.push_str(&line);
            if line == "\r\n" {
                return Some(head);
            }
        }
    }

    /// A loopback server answering each request with a 2-byte JSON body;
    /// counts the connections it accepted.
    fn server(after: After) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let (go, go_rx) = mpsc::channel();
        let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
        let (done_tx, done) = mpsc::channel();
        let count = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (go_rx, done_tx) = (Arc::clone(&go_rx), done_tx.clone());
                std::thread::spawn(move || {
                    let mut reader = io::BufReader::new(stream.try_clone().unwrap());
                    while read_head(&mut reader).is_some() {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
                        if matches!(after, After::KeepOpen) || go_rx.lock().unwrap().recv().is_err()
                        {
                            continue;
                        }
                        if matches!(after, After::Babble) {
                            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n");
                        } else {
                            let _ = stream.shutdown(std::net::Shutdown::Both);
                        }
                        let _ = done_tx.send(());
                    }
                });
            }
        });
        TestServer {
            url,
            accepted,
            go,
            done,
        }
    }

    fn agent(config: ureq::config::Config) -> ureq::Agent {
        ureq::Agent::with_parts(config, connector(), DefaultResolver::default())
    }

    fn get(agent: &ureq::Agent, url: &str) -> String {
        agent
            .get(url)
            .call()
            .expect("answered")
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    #[test]
    fn a_pooled_connection_is_reused() {
        let server = server(After::KeepOpen);
        let agent = agent(ureq::config::Config::default());
        for _ in 0..3 {
            assert_eq!(get(&agent, &server.url), "{}");
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }

    /// Two calls; between them, once the first connection is back in the
    /// pool, the server does `after` to it. Returns how many connections the
    /// server saw.
    fn connections_for_two_calls(after: After) -> usize {
        let server = server(after);
        let agent = agent(ureq::config::Config::default());
        assert_eq!(get(&agent, &server.url), "{}");
        server.go.send(()).unwrap();
        server.done.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(get(&agent, &server.url), "{}");
        server.accepted.load(Ordering::SeqCst)
    }

    #[test]
    fn a_pooled_connection_the_server_closed_is_not_used_again() {
        assert_eq!(connections_for_two_calls(After::Close), 2);
    }

    #[test]
    fn a_pooled_connection_with_bytes_nobody_asked_for_is_not_used_again() {
        assert_eq!(connections_for_two_calls(After::Babble), 2);
    }

    /// A CONNECT proxy on loopback: tunnels each connection to the target
    /// its request names; counts the tunnels.
    fn connect_proxy() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let tunnels = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&tunnels);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let count = Arc::clone(&count);
                std::thread::spawn(move || {
                    let mut reader = io::BufReader::new(client.try_clone().unwrap());
                    let Some(head) = read_head(&mut reader) else {
                        return;
                    };
                    let Some(target) = head
                        .strip_prefix("CONNECT ")
                        .and_then(|rest| rest.split(' ').next())
                    else {
                        return;
                    };
                    let mut upstream = TcpStream::connect(target).unwrap();
                    count.fetch_add(1, Ordering::SeqCst);
                    client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .unwrap();
                    let mut back = upstream.try_clone().unwrap();
                    let mut to_client = client.try_clone().unwrap();
                    std::thread::spawn(move || io::copy(&mut back, &mut to_client));
                    let _ = io::copy(&mut reader, &mut upstream);
                });
            }
        });
        (url, tunnels)
    }

    #[test]
    fn a_configured_connect_proxy_carries_the_calls() {
        let server = server(After::KeepOpen);
        let (proxy, tunnels) = connect_proxy();
        let config = ureq::Agent::config_builder()
            .proxy(Some(ureq::Proxy::new(&proxy).unwrap()))
            .build();
        assert_eq!(get(&agent(config), &server.url), "{}");
        assert_eq!(tunnels.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn each_address_but_the_last_gets_half_the_connect_time_left() {
        let five = Duration::from_secs(5);
        assert_eq!(attempt_budget(five, 0, 3), five / 2);
        assert_eq!(attempt_budget(five, 2, 3), five);
        assert_eq!(attempt_budget(five, 0, 1), five);
        let tiny = Duration::from_millis(4);
        assert_eq!(attempt_budget(tiny, 0, 2), tiny, "never more than is left");
    }

    #[test]
    fn a_timeout_is_set_again_only_past_the_slack() {
        let s = Some(Duration::from_secs(10));
        assert!(!needs_update(s, Some(Duration::from_millis(9_990))));
        assert!(needs_update(s, Some(Duration::from_millis(9_900))));
        assert!(needs_update(s, None));
        assert!(needs_update(None, s));
        assert!(!needs_update(None, None));
    }
}
