//! store::redis: the state several instances share (`--redis-url`):
//! sessions (`sessions`), `Idempotency-Key` records (`idempotency`), the
//! cluster's Discord rate limits and invalid-request count (`cluster`), and
//! its Gateway leases and event streams (`events`) and stream tickets
//! (`tickets`), over one pool of
//! blocking connections.
//!
//! Architecture invariants: Redis never sees a token or a session ID in
//! clear (`seal`); no log line or error names a key, a token or the Redis URL
//! (it may carry a password); every call is bounded by `--redis-timeout`, and
//! a failure is `StoreError::Unavailable` (503), never a hang or a panic.

pub mod cluster;
pub mod events;
pub mod idempotency;
pub mod sessions;
pub mod tickets;

pub use cluster::{RedisInvalidCount, RedisLimiter};
pub use events::RedisRelay;
pub use idempotency::RedisIdempotency;
pub use sessions::RedisStore;
pub use tickets::RedisTickets;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::{Connection, RedisError, RedisResult};

use crate::store::StoreError;

/// Idle connections kept for reuse: enough for every worker that may be
/// talking to Redis at once, so the common case opens none.
const MAX_IDLE_CONNECTIONS: usize = 512;

/// A small pool of blocking Redis connections: each worker takes one for a
/// call and gives it back, so 256 workers do not queue on one socket.
/// A connection that failed is dropped, and the next call opens a new one:
/// that is how the service recovers by itself when Redis comes back.
pub struct RedisPool {
    client: redis::Client,
    idle: Mutex<Vec<Connection>>,
    timeout: Duration,
    down: AtomicBool,
}

impl RedisPool {
    /// Checks the URL; connects lazily, so the service starts even while
    /// Redis is down (and says so on /healthz).
    pub fn new(url: &str, timeout: Duration) -> Result<RedisPool, String> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("--redis-url is not a usable Redis URL ({})", e.category()))?;
        Ok(RedisPool {
            client,
            idle: Mutex::new(Vec::new()),
            timeout,
            down: AtomicBool::new(false),
        })
    }

    fn connect(&self) -> RedisResult<Connection> {
        let connection = self.client.get_connection_with_timeout(self.timeout)?;
        connection.set_read_timeout(Some(self.timeout))?;
        connection.set_write_timeout(Some(self.timeout))?;
        Ok(connection)
    }

    /// A connection of its own for a command that blocks up to `wait`
    /// (a stream read): its read timeout is `wait` plus the usual one.
    pub fn dedicated(&self, wait: Duration) -> RedisResult<Connection> {
        let connection = self.connect()?;
        connection.set_read_timeout(Some(self.timeout + wait))?;
        Ok(connection)
    }

    /// Runs `call` on a pooled connection. Transport failures drop the
    /// connection and become `StoreError::Unavailable` with a reason a
    /// client may read.
    pub fn run<T>(
        &self,
        call: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle.lock().pop();
        let result = match pooled {
            Some(connection) => Ok(connection),
            None => self.connect(),
        }
        .and_then(|mut connection| call(&mut connection).map(|value| (value, connection)));
        match result {
            Ok((value, connection)) => {
                let mut idle = self.idle.lock();
                if idle.len() < MAX_IDLE_CONNECTIONS {
                    idle.push(connection);
                }
                drop(idle);
                if self.down.swap(false, Ordering::Relaxed) {
                    log::info!("Redis is reachable again");
                }
                Ok(value)
            }
            Err(err) => {
                let reason = describe(&err);
                if is_transport(&err) {
                    // Every pooled connection likely shares the fault.
                    self.idle.lock().clear();
                    if !self.down.swap(true, Ordering::Relaxed) {
                        log::warn!("Redis is unreachable: {reason}");
                    }
                } else {
                    log::warn!("Redis refused a command: {reason}");
                }
                Err(StoreError::Unavailable(reason))
            }
        }
    }
}

fn is_transport(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
}

/// A reason for clients and logs; it names no key, value or URL.
fn describe(err: &RedisError) -> String {
    if err.is_timeout() {
        "Redis did not answer in time".into()
    } else if err.is_connection_refusal() {
        "Redis refused the connection".into()
    } else if is_transport(err) {
        "the connection to Redis failed".into()
    } else {
        format!("Redis error: {}", err.category())
    }
}
