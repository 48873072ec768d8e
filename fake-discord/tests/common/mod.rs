//! The harness `fidelity.rs` and `writes.rs` share: start the real binary
//! on a free port, talk to it over real HTTP (or a raw socket), and read
//! the answers back. It knows nothing of either file's world: each file
//! keeps its own `world()` with the ids its tests name, and a one-line
//! `Fake::start` that passes it to [`Fake::with_world`].
//!
//! Each integration test file is its own crate and uses only part of this
//! module, so the rest would be flagged as dead code in the other.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

/// The two bots both worlds declare. Bot A is the one the short helpers
/// ([`Fake::a`], [`Fake::call`], [`Fake::send`]) act as.
pub const TOKEN_A: &str = "token-alpha";
pub const TOKEN_B: &str = "token-beta";
pub const BOT_A: &str = "81384788765712384";
pub const BOT_B: &str = "81384788765712385";

/// Generous limits so tests not about rate limiting never meet a 429.
pub const NO_PRESSURE: &[&str] = &[
    "--route-limit",
    "10000",
    "--global-limit",
    "10000",
    "--send-limit",
    "10000",
];

/// For tests of semantics where even the 1-per-window reaction bucket
/// would get in the way.
pub const NO_LIMITS: &[&str] = &["--no-ratelimit"];

/// Numbers the temp dirs, so fakes started in parallel by one test binary
/// never share a world file.
static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A running fake; killed (and its temp dir removed) on drop, so a failing
/// test leaves no process behind.
pub struct Fake {
    child: Child,
    /// `http://127.0.0.1:PORT`, as the binary announced it.
    pub base: String,
    dir: PathBuf,
    /// An agent without a timeout that reports 4xx/5xx as responses.
    pub agent: ureq::Agent,
}

/// A response reduced to what the tests look at, so an assertion can
/// print the body it failed on.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    /// The first header called `name`, whatever its case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body when it is not, since every
    /// test that asks expects JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A request body and its Content-Type.
pub enum Body<'a> {
    None,
    Json(Value),
    /// Bytes sent as they are under the given Content-Type, for bodies
    /// that are not (valid) JSON.
    Raw(&'a str, Vec<u8>),
}

/// An agent that hands back error statuses as responses (the tests assert
/// on them) and gives up after `timeout`: `Some` only for tests of faults
/// that hang.
pub fn agent(timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(timeout)
        .build()
        .into()
}

/// Reads a ureq response into a [`Resp`].
pub fn convert(mut r: ureq::http::Response<ureq::Body>) -> Resp {
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    Resp {
        status: r.status().as_u16(),
        headers,
        body: r.body_mut().read_to_string().unwrap(),
    }
}

impl Fake {
    /// Writes `world` to a temp dir and starts the binary on port 0 with
    /// it and `args`. Returns once the binary has printed its address, so
    /// the first request never races the listener.
    pub fn with_world(world: &Value, args: &[&str]) -> Fake {
        let dir = std::env::temp_dir().join(format!(
            "fake-discord-{}-{}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let world_path = dir.join("world.json");
        std::fs::write(&world_path, world.to_string()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fake-discord"))
            .args(["--port", "0", "--world", world_path.to_str().unwrap()])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("fake-discord listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Fake {
            child,
            base,
            dir,
            agent: agent(None),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `host:port`, for tests that write raw bytes to a socket.
    pub fn addr(&self) -> String {
        self.base.strip_prefix("http://").unwrap().to_string()
    }

    /// The one way a Discord request is built: `/api/v10{path}` through
    /// `agent`, as bot `token` (no Authorization when `None`). The helpers
    /// below only fill in defaults.
    pub fn request(
        &self,
        agent: &ureq::Agent,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Body,
        headers: &[(&str, &str)],
    ) -> Result<Resp, ureq::Error> {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(&format!("/api/v10{path}")));
        if let Some(t) = token {
            b = b.header("Authorization", format!("Bot {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let r = match body {
            // An empty body on GET/DELETE; `Content-Length: 0` elsewhere.
            Body::None if matches!(method, "GET" | "DELETE") => agent.run(b.body(()).unwrap()),
            Body::None => agent.run(b.body(Vec::new()).unwrap()),
            Body::Json(v) => agent.run(
                b.header("Content-Type", "application/json")
                    .body(v.to_string())
                    .unwrap(),
            ),
            Body::Raw(ct, bytes) => agent.run(b.header("Content-Type", ct).body(bytes).unwrap()),
        };
        r.map(convert)
    }

    /// GET `/api/v10{path}` through `agent`; an `Err` is what fault tests
    /// of hangs and drops expect.
    pub fn get_with(
        &self,
        agent: &ureq::Agent,
        path: &str,
        token: Option<&str>,
    ) -> Result<Resp, ureq::Error> {
        self.request(agent, "GET", path, token, Body::None, &[])
    }

    /// GET `/api/v10{path}` as bot `token` (no Authorization when `None`).
    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.get_with(&self.agent, path, token).unwrap()
    }

    /// GET `/api/v10{path}` as bot A.
    pub fn a(&self, path: &str) -> Resp {
        self.get(path, Some(TOKEN_A))
    }

    /// A Discord request as bot `token` through `agent`.
    pub fn call_with(
        &self,
        agent: &ureq::Agent,
        method: &str,
        path: &str,
        token: &str,
        body: Body,
        headers: &[(&str, &str)],
    ) -> Result<Resp, ureq::Error> {
        self.request(agent, method, path, Some(token), body, headers)
    }

    /// A Discord request as bot A.
    pub fn call(&self, method: &str, path: &str, body: Body) -> Resp {
        self.call_with(&self.agent, method, path, TOKEN_A, body, &[])
            .unwrap()
    }

    /// Create Message in `channel` as bot A.
    pub fn send(&self, channel: &str, body: Value) -> Resp {
        self.call(
            "POST",
            &format!("/channels/{channel}/messages"),
            Body::Json(body),
        )
    }

    /// GET on the control API (`/_fake/…`), which must answer 200.
    pub fn control_get(&self, path: &str) -> Value {
        let r = convert(self.agent.get(self.url(path)).call().unwrap());
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.json()
    }

    pub fn control_post(&self, path: &str, body: Value) -> Resp {
        convert(
            self.agent
                .post(self.url(path))
                .header("Content-Type", "application/json")
                .send(body.to_string())
                .unwrap(),
        )
    }

    /// Arms a fault (see `/_fake/faults`); it must be accepted.
    pub fn fault(&self, body: Value) {
        let r = self.control_post("/_fake/faults", body);
        assert_eq!(r.status, 200, "{}", r.body);
    }

    /// A control-API list of ids.
    pub fn ids(&self, path: &str) -> Vec<String> {
        strings(&self.control_get(path))
    }

    /// The ids of the messages the world generated in `channel`.
    pub fn generated_ids(&self, channel: &str) -> Vec<String> {
        self.ids(&format!("/_fake/channels/{channel}/message_ids"))
    }

    /// The messages the fake holds for `channel`, written ones included.
    pub fn stored(&self, channel: &str) -> Vec<Value> {
        self.control_get(&format!("/_fake/messages?channel_id={channel}"))
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn reactions(&self, channel: &str, message: &str) -> Value {
        self.control_get(&format!(
            "/_fake/reactions?channel_id={channel}&message_id={message}"
        ))
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A JSON array of strings.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Asserts Discord's error shape: `status` with `{"message", "code"}`.
pub fn assert_error(r: &Resp, status: u16, message: &str, code: u64) {
    assert_eq!(r.status, status, "{}", r.body);
    let body = r.json();
    assert_eq!(body["message"], message, "{}", r.body);
    assert_eq!(body["code"], code, "{}", r.body);
}

/// Asserts a 50035 with an error listed under `field`.
pub fn assert_form_error(r: &Resp, field: &str, code: &str) {
    assert_error(r, 400, "Invalid Form Body", 50035);
    let errors = &r.json()["errors"][field]["_errors"];
    assert!(
        errors.as_array().is_some_and(|e| e
            .iter()
            .any(|x| x["code"] == code && x["message"].is_string())),
        "{}",
        r.body
    );
}

/// Sends raw bytes and returns what the server wrote before closing (or
/// within `wait`). For requests ureq cannot be made to send: a target with
/// raw UTF-8, or a head whose promised body never comes.
pub fn raw_exchange(addr: &str, request: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
