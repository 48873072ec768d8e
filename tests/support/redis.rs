//! A real `redis-server` for the cluster tests: a free loopback port, no
//! persistence (`--save "" --appendonly no`), its own temp dir, killed when
//! dropped. It can be stopped and started again on the same port, to test
//! what the service does while Redis is down.
//!
//! Where `redis-server` is not installed, `RedisServer::start_or_skip`
//! prints one loud line naming the test and how to install it, and the test
//! returns: `make test` passes on a machine without Redis, and `.ci/run`
//! installs it so CI always runs these tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long redis-server may take to answer PING after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// `--session-key` the tests give every instance.
pub const SESSION_KEY: &str = "5f0e1d2c3b4a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// A fresh redis-server, or `None` (after one loud line naming the
    /// test, which libtest runs on a thread of its name) when it is not
    /// installed.
    pub fn start_or_skip() -> Option<RedisServer> {
        if !installed() {
            let thread = std::thread::current();
            let test = thread.name().unwrap_or("a Redis test");
            // Straight to the stderr handle: libtest captures `eprintln!`
            // of passing tests, and this line must be seen.
            let _ = writeln!(
                std::io::stderr().lock(),
                "!!!!! SKIPPED {test}: redis-server is not on PATH; install it with \
                 `apt-get install -y redis-server` to run the Redis cluster tests !!!!!"
            );
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("dbb-redis-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir,
        };
        server.start();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Service flags that put an instance on this Redis.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--redis-url".into(),
            self.url(),
            "--session-key".into(),
            SESSION_KEY.into(),
        ]
    }

    /// Starts redis-server on `self.port` and waits until it answers PING.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer PING within {START_TIMEOUT:?}");
    }

    /// Kills redis-server (its data goes with it: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap()
    }

    /// Every key and everything it holds, as bytes: GET for strings,
    /// HGETALL for hashes, SMEMBERS for sets, ZRANGE for sorted sets,
    /// XRANGE (as text) for streams.
    pub fn dump(&self) -> Vec<(String, Vec<Vec<u8>>)> {
        let mut c = self.connection();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
        keys.into_iter()
            .map(|key| {
                let kind: String = redis::cmd("TYPE").arg(&key).query(&mut c).unwrap();
                let values: Vec<Vec<u8>> = match kind.as_str() {
                    "string" => vec![redis::cmd("GET").arg(&key).query(&mut c).unwrap()],
                    "hash" => redis::cmd("HGETALL").arg(&key).query(&mut c).unwrap(),
                    "set" => redis::cmd("SMEMBERS").arg(&key).query(&mut c).unwrap(),
                    "zset" => redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .query(&mut c)
                        .unwrap(),
                    "stream" => {
                        let entries: redis::Value = redis::cmd("XRANGE")
                            .arg(&key)
                            .arg("-")
                            .arg("+")
                            .query(&mut c)
                            .unwrap();
                        vec![format!("{entries:?}").into_bytes()]
                    }
                    other => panic!("unexpected Redis type {other} for {key}"),
                };
                (key, values)
            })
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
