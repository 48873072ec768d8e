//! Test fixtures: the real service binary and the project's fake Discord,
//! each started on a free loopback port and killed when dropped.
//!
//! `Fake::start(world)` → a fake Discord serving `world` (see
//! fake-discord/README.md); `Service::start(&fake, &[flags])` → the service
//! pointed at it. Every test gets its own pair, so tests never share state.
#![allow(dead_code)]

pub mod sse;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long a child may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

fn unique_path(stem: &str) -> PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!("dbb-test-{}-{n}-{stem}", std::process::id()))
}

/// Reads a child's output on a thread, keeping every line, and reports the
/// first `listening on http://…` address it sees.
fn capture(
    stream: impl Read + Send + 'static,
    sink: Arc<Mutex<String>>,
    paused: Arc<AtomicBool>,
) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            // A paused reader leaves the pipe to fill up, like a log
            // shipper that stalled.
            while paused.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                break;
            }
            // Kept before the address is reported, so a test that starts
            // once the line is seen also finds it in the logs.
            sink.lock().unwrap().push_str(&line);
            if let Some(at) = line.find("listening on http://") {
                // The address ends where the line or, in JSON logs, the
                // message string does.
                let addr: String = line[at + "listening on http://".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit() || ".:[]".contains(*c))
                    .collect();
                let _ = tx.send(addr);
            }
            line.clear();
        }
    });
    rx
}

fn wait_listening(rx: &std::sync::mpsc::Receiver<String>, child: &mut Child, what: &str) -> String {
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = child.kill();
            panic!("{what} did not print its listening line within {START_TIMEOUT:?}");
        }
    }
}

/// The fake Discord binary, built by `cargo test --workspace` next to ours.
fn fake_binary() -> PathBuf {
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop(); // deps/
    dir.pop(); // debug/ or release/
    let path = dir.join("fake-discord");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "fake-discord"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build -p fake-discord");
        assert!(status.success(), "building fake-discord failed");
    }
    path
}

/// The fake's flags for Discord's real limits: 5 per second per channel
/// route, 50 per second per bot.
pub const DISCORD_LIMITS: &[&str] = &[
    "--route-limit",
    "5",
    "--route-window-ms",
    "1000",
    "--global-limit",
    "50",
];

pub struct Fake {
    child: Child,
    pub addr: String,
    world_file: PathBuf,
    agent: ureq::Agent,
}

impl Fake {
    pub fn start(world: &Value) -> Fake {
        Fake::start_with(world, &[])
    }

    pub fn start_with(world: &Value, args: &[&str]) -> Fake {
        let world_file = unique_path("world.json");
        std::fs::write(&world_file, serde_json::to_vec(world).unwrap()).unwrap();
        let mut child = Command::new(fake_binary())
            .args(["--host", "127.0.0.1", "--port", "0", "--world"])
            .arg(&world_file)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fake-discord");
        let rx = capture(child.stdout.take().unwrap(), Arc::default(), Arc::default());
        let addr = wait_listening(&rx, &mut child, "fake-discord");
        Fake {
            child,
            addr,
            world_file,
            agent: agent(),
        }
    }

    pub fn api_url(&self) -> String {
        format!("http://{}/api/v10", self.addr)
    }

    fn control(&self, path: &str) -> String {
        format!("http://{}/_fake/{path}", self.addr)
    }

    /// Dispatches `t` with data `d` to the bot's Gateway sessions, live or
    /// resumable (fake-discord/README.md, "Gateway").
    pub fn gateway_dispatch(&self, bot_id: &str, t: &str, d: Value) {
        let body = json!({ "bot_id": bot_id, "t": t, "d": d });
        let status = self.post(&self.control("gateway/dispatch"), &body);
        assert_eq!(status, 200, "dispatch not accepted: {body}");
    }

    /// Queues a fault (see fake-discord/README.md, "Fault injection").
    pub fn fault(&self, spec: Value) {
        let status = self.post(&self.control("faults"), &spec);
        assert!((200..300).contains(&status), "fault not accepted: {spec}");
    }

    pub fn revoke(&self, token: &str) {
        let status = self.post(&self.control("revoke"), &json!({ "token": token }));
        assert!((200..300).contains(&status));
    }

    fn post(&self, url: &str, body: &Value) -> u16 {
        let r = self
            .agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap();
        r.status().as_u16()
    }

    fn get_json(&self, path: &str) -> Value {
        let mut r = self.agent.get(&self.control(path)).call().unwrap();
        let text = r.body_mut().read_to_string().unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("fake /_fake/{path}: {e}: {text}"))
    }

    /// Every Discord-route request the fake received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.get_json("requests")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The request targets (path and query) the fake received.
    pub fn targets(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| r["target"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub fn stats(&self) -> Value {
        self.get_json("stats")
    }

    /// The fake Gateway's counters (fake-discord/README.md, "Gateway").
    pub fn gateway_stats(&self) -> Value {
        self.get_json("gateway/stats")
    }

    pub fn reset(&self) {
        self.agent
            .post(&self.control("reset"))
            .send_empty()
            .unwrap();
    }

    fn ids(&self, path: &str) -> Vec<u64> {
        let ids = self.get_json(path);
        ids.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().parse().unwrap())
            .collect()
    }

    /// All message ids of a channel, ascending.
    pub fn message_ids(&self, channel: &str) -> Vec<u64> {
        self.ids(&format!("channels/{channel}/message_ids"))
    }

    /// The messages created through the API in a channel and not deleted,
    /// oldest first, as the fake keeps them (with the `allowed_mentions`
    /// and `enforce_nonce` it received).
    pub fn created_messages(&self, channel: &str) -> Vec<Value> {
        self.get_json(&format!("messages?channel_id={channel}"))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The requests the fake received with this method whose target
    /// contains `path`.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["method"] == method && r["target"].as_str().unwrap_or("").contains(path))
            .collect()
    }

    /// All member user ids of a guild, ascending.
    pub fn member_ids(&self, guild: &str) -> Vec<u64> {
        self.ids(&format!("guilds/{guild}/member_ids"))
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.world_file);
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// An answer from the service.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The ids of a JSON array of objects, in order (`user.id` for members).
    pub fn ids(&self) -> Vec<u64> {
        self.json()
            .as_array()
            .unwrap_or_else(|| panic!("not an array: {}", self.text))
            .iter()
            .map(|item| {
                let id = item.get("id").or_else(|| item.pointer("/user/id")).unwrap();
                id.as_str().unwrap().parse().unwrap()
            })
            .collect()
    }
}

pub struct Service {
    child: Child,
    pub addr: String,
    logs: Arc<Mutex<String>>,
    log_reader_paused: Arc<AtomicBool>,
    agent: ureq::Agent,
}

impl Service {
    pub fn start(fake: &Fake, flags: &[&str]) -> Service {
        Service::start_at(&fake.api_url(), flags)
    }

    pub fn start_env(fake: &Fake, flags: &[&str], envs: &[(&str, &str)]) -> Service {
        Service::spawn(&fake.api_url(), flags, envs)
    }

    pub fn start_at(discord_api: &str, flags: &[&str]) -> Service {
        Service::spawn(discord_api, flags, &[])
    }

    fn spawn(discord_api: &str, flags: &[&str], envs: &[(&str, &str)]) -> Service {
        let mut child = Command::new(env!("CARGO_BIN_EXE_discord-bot-backend"))
            .envs(envs.iter().copied())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--discord-api",
                discord_api,
            ])
            .args(["--max-ratelimit-wait", "5000", "--upstream-timeout", "3000"])
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start discord-bot-backend");
        let logs = Arc::new(Mutex::new(String::new()));
        let log_reader_paused = Arc::new(AtomicBool::new(false));
        let _ = capture(
            child.stdout.take().unwrap(),
            Arc::clone(&logs),
            Arc::default(),
        );
        let rx = capture(
            child.stderr.take().unwrap(),
            Arc::clone(&logs),
            Arc::clone(&log_reader_paused),
        );
        let addr = wait_listening(&rx, &mut child, "discord-bot-backend");
        Service {
            child,
            addr,
            logs,
            log_reader_paused,
            agent: agent(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(body.unwrap_or("").to_string()).unwrap();
        let mut response = self.agent.run(request).expect("service answered");
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        Reply {
            status: response.status().as_u16(),
            headers,
            text: response.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    pub fn get(&self, path: &str, session: &str) -> Reply {
        self.request("GET", path, &[("Authorization", session)], None)
    }

    pub fn post_json(&self, path: &str, body: &str) -> Reply {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(body),
        )
    }

    pub fn login(&self, token: &str) -> Reply {
        self.post_json("/api/auth/login", &json!({ "token": token }).to_string())
    }

    /// `POST /api/messages` to the standard world's general channel, with
    /// an `Idempotency-Key` when given.
    pub fn send_message(&self, session: &str, content: &str, key: Option<&str>) -> Reply {
        let mut headers = vec![
            ("Authorization", session),
            ("Content-Type", "application/json"),
        ];
        if let Some(key) = key {
            headers.push(("Idempotency-Key", key));
        }
        self.request(
            "POST",
            &format!("/api/messages?channelId={}", world::GENERAL),
            &headers,
            Some(&json!({ "content": content }).to_string()),
        )
    }

    pub fn logout(&self, session: &str) -> Reply {
        self.request(
            "POST",
            "/api/auth/logout",
            &[("Authorization", session)],
            None,
        )
    }

    /// Logs in and returns the session ID, failing the test otherwise.
    pub fn session(&self, token: &str) -> String {
        let reply = self.login(token);
        assert_eq!(reply.status, 200, "login failed: {}", reply.text);
        reply.json()["sessionId"].as_str().unwrap().to_string()
    }

    /// Stops (or resumes) reading the service's stderr, so its pipe fills
    /// up as with a stalled log shipper.
    pub fn pause_log_reader(&self, paused: bool) {
        self.log_reader_paused.store(paused, Ordering::SeqCst);
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until the logs contain `needle` (log lines are written after
    /// the response is sent).
    pub fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the service process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; `None` if it is still running after
    /// `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The service answers /healthz with 200 on a fresh connection.
    pub fn is_healthy(&self) -> bool {
        raw_exchange(
            &self.addr,
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .starts_with("HTTP/1.1 200")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes on a new connection and returns everything read until the
/// server closes or `timeout` passes.
pub fn raw_exchange(addr: &str, bytes: &[u8], timeout: Duration) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    let _ = stream.write_all(bytes);
    // Nothing more will come: let the server see end-of-input at once.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    read_until_close(&mut stream, timeout)
}

pub fn read_until_close(stream: &mut TcpStream, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fake Discord, the service in front of it, and a session of
/// `world::TOKEN`, with the fake's log cleared after the login: where the
/// write tests start.
pub struct Logged {
    pub fake: Fake,
    pub service: Service,
    pub session: String,
}

impl Logged {
    pub fn start(world: &Value, fake_args: &[&str], flags: &[&str]) -> Logged {
        let fake = Fake::start_with(world, fake_args);
        let service = Service::start(&fake, flags);
        let session = service.session(world::TOKEN);
        fake.reset();
        Logged {
            fake,
            service,
            session,
        }
    }

    /// A request with `Authorization: <authorization>` (and
    /// `Content-Type: application/json` when there is a JSON body), then
    /// `headers`.
    pub fn request_as(
        &self,
        authorization: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let mut all = vec![("Authorization", authorization)];
        if body.is_some() {
            all.push(("Content-Type", "application/json"));
        }
        all.extend_from_slice(headers);
        let text = body.map(Value::to_string);
        self.service.request(method, path, &all, text.as_deref())
    }

    /// A request with the session.
    pub fn write(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        self.request_as(&self.session, method, path, headers, body)
    }
}

/// Standard test world: ids are fixed so tests can name them.
pub mod world {
    use serde_json::{Value, json};

    pub const TOKEN: &str = "MTA0.test-bot-token.Xy_z";
    pub const BOT_ID: &str = "900000000000000001";
    pub const GUILD: &str = "800000000000000001";
    pub const GENERAL: &str = "700000000000000001";
    pub const QUIET: &str = "700000000000000002";
    pub const SECRET: &str = "700000000000000003";
    pub const NO_HISTORY: &str = "700000000000000004";

    /// Second bot: several guilds, members intent off.
    pub const MULTI_TOKEN: &str = "MTA1.multi-guild-token.Ab_c";
    pub const MULTI_ID: &str = "900000000000000002";
    pub const OTHER_GUILD: &str = "800000000000000002";

    /// Third bot: in no guild.
    pub const LONELY_TOKEN: &str = "MTA2.lonely-token.Qq_q";

    /// Fourth bot: in 450 guilds, for paging /users/@me/guilds.
    pub const BUSY_TOKEN: &str = "MTA3.busy-token.Zz_z";

    pub fn standard() -> Value {
        json!({
            "bots": [
                {"token": TOKEN, "id": BOT_ID, "username": "TestBot", "members_intent": true, "guilds": [GUILD]},
                {"token": MULTI_TOKEN, "id": MULTI_ID, "username": "MultiBot", "members_intent": false, "guilds": [GUILD, OTHER_GUILD]},
                {"token": LONELY_TOKEN, "id": "900000000000000003", "username": "LonelyBot", "guilds": []},
                {"token": BUSY_TOKEN, "id": "900000000000000004", "username": "BusyBot", "guilds": [GUILD], "extra_guilds": 450}
            ],
            "guilds": [
                {"id": GUILD, "name": "Test Guild", "member_count": 2500, "channels": [
                    {"id": GENERAL, "name": "general", "type": 0, "message_count": 1250},
                    {"id": QUIET, "name": "quiet", "type": 0, "message_count": 30},
                    {"id": SECRET, "name": "secret", "type": 0, "message_count": 10, "access": "none"},
                    {"id": NO_HISTORY, "name": "no-history", "type": 0, "message_count": 10, "access": "no_history"}
                ]},
                {"id": OTHER_GUILD, "name": "Other Guild", "member_count": 5, "channels": []}
            ]
        })
    }
}
