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
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, ShutdownHandle,
    Transport,
};

/// How far a socket timeout may be from the time actually left.
const TIMEOUT_SLACK: Duration = Duration::from_millis(20);

/// Opens plain TCP connections; the first link of the connector chain.
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
fn connect(details: &ConnectionDetails) -> Result<TcpStream, Error> {
    let budget = details.timeout.not_zero().map(|t| *t);
    let started = std::time::Instant::now();
    let mut last = None;
    for addr in details.addrs.iter() {
        let attempt = match budget {
            Some(budget) => {
                let left = budget.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(Error::Timeout(details.timeout.reason));
                }
                TcpStream::connect_timeout(addr, left)
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
        apply_timeout(
            &self.stream,
            &mut self.read_timeout,
            time_left(timeout)?,
            TcpStream::set_read_timeout,
        )?;
        self.probe_due = false;
        let read = loop {
            match (&*self.stream).read(self.buffers.input_append_buf()) {
                // A signal, not the peer: ureq's budget still bounds the call,
                // and the socket timeout each read.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
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
    use ureq::unversioned::resolver::DefaultResolver;

    /// What the test server does once it has answered.
    #[derive(Clone, Copy)]
    enum After {
        KeepOpen,
        Close,
        /// Sends bytes nobody asked for, a moment after the answer.
        Babble,
    }

    /// A loopback server answering each request with a 2-byte JSON body,
    /// then doing `after`; counts the connections it accepted.
    fn server(after: After) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut reader = io::BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut line = String::new();
                        while line != "\r\n" {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                        }
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
                        match after {
                            After::KeepOpen => {}
                            After::Close => return,
                            After::Babble => {
                                std::thread::sleep(Duration::from_millis(10));
                                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n");
                            }
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::with_parts(
            ureq::Agent::config_builder().build(),
            TcpConnector.chain(ureq::unversioned::transport::RustlsConnector::default()),
            DefaultResolver::default(),
        )
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
        let (url, accepted) = server(After::KeepOpen);
        let agent = agent();
        for _ in 0..3 {
            assert_eq!(get(&agent, &url), "{}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// Two calls, the second once whatever `after` does has reached our
    /// socket; returns how many connections the server saw.
    fn connections_for_two_calls(after: After) -> usize {
        let (url, accepted) = server(after);
        let agent = agent();
        assert_eq!(get(&agent, &url), "{}");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(get(&agent, &url), "{}");
        accepted.load(Ordering::SeqCst)
    }

    #[test]
    fn a_pooled_connection_the_server_closed_is_not_used_again() {
        assert_eq!(connections_for_two_calls(After::Close), 2);
    }

    #[test]
    fn a_pooled_connection_with_bytes_nobody_asked_for_is_not_used_again() {
        assert_eq!(connections_for_two_calls(After::Babble), 2);
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
