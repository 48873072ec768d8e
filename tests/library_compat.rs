//! contract: API.md "Discord passthrough": a real Discord library works
//! unchanged against `/api/discord` with a session ID as its bot token.
//!
//! `@discordjs/rest` (pinned in tests/compat/package.json, test-only) runs
//! tests/compat/djs.mjs under Node.js against the real binary and the fake
//! Discord: it reads, sends and reacts, and prints what it got as one JSON
//! line. Each test runs it once and checks one behaviour, on the library's
//! side and on what the fake Discord saw. Node.js and
//! `npm ci --prefix tests/compat` are required: without them these tests
//! fail, they do not skip.

mod support;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::world::*;
use support::{Fake, Service};

/// The script may take this long, Node.js start-up included.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

const CONTENT: &str = "hello from discord.js";

struct Run {
    fake: Fake,
    /// Kept alive until the test has read the fake's log.
    _service: Service,
    /// The script's one line of output.
    out: Value,
}

fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/compat")
}

fn require_node_and_modules() {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        node.is_ok_and(|s| s.success()),
        "Node.js (`node`) is not on PATH: install Node.js >= 18, then \
         run `npm ci --prefix tests/compat`"
    );
    let module = compat_dir().join("node_modules/@discordjs/rest/package.json");
    assert!(
        module.exists(),
        "{} is missing: run `npm ci --prefix tests/compat`",
        module.display()
    );
}

/// Starts the fake and the service, logs in, forgets the login's requests,
/// then runs the library with the session as its token against GENERAL.
fn run_library() -> Run {
    require_node_and_modules();
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let session = service.session(TOKEN);
    fake.reset();

    let mut child = Command::new("node")
        .arg(compat_dir().join("djs.mjs"))
        .env("DJS_API", service.url("/api/discord"))
        .env("DJS_TOKEN", &session)
        .env("DJS_CHANNEL", GENERAL)
        .current_dir(compat_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node tests/compat/djs.mjs");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if started.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "djs.mjs ran over {SCRIPT_TIMEOUT:?} and was killed; it printed: {} {}",
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    assert!(
        status.success(),
        "@discordjs/rest failed against the passthrough ({status}):\n{stdout}\n{stderr}\n\
         the fake Discord saw: {:#?}",
        fake.requests()
    );
    let line = stdout.lines().last().unwrap_or_default();
    let out = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("djs.mjs did not print JSON ({e}): {stdout:?} {stderr:?}"));
    Run {
        fake,
        _service: service,
        out,
    }
}

#[test]
fn the_library_reads_two_messages_with_its_own_query() {
    let run = run_library();
    assert_eq!(run.out["read"]["status"], 200, "{}", run.out);
    assert_eq!(run.out["read"]["count"], 2, "{}", run.out);
    let reads = run
        .fake
        .requests_to("GET", &format!("/channels/{GENERAL}/messages"));
    assert_eq!(reads.len(), 1, "{reads:#?}");
    assert_eq!(
        reads[0]["target"],
        format!("/api/v10/channels/{GENERAL}/messages?limit=2")
    );
    assert_eq!(reads[0]["status"], 200);
}

#[test]
fn the_library_sends_a_message_once() {
    let run = run_library();
    assert_eq!(run.out["sent"]["status"], 200, "{}", run.out);
    assert_eq!(run.out["sent"]["content"], CONTENT);
    assert_eq!(run.out["sent"]["channel_id"], GENERAL);
    let created = run.fake.created_messages(GENERAL);
    assert_eq!(created.len(), 1, "{created:#?}");
    assert_eq!(created[0]["content"], CONTENT);
    assert_eq!(created[0]["id"], run.out["sent"]["id"]);
}

#[test]
fn the_library_reacts_with_its_emoji_encoded_once() {
    let run = run_library();
    assert_eq!(run.out["reacted"]["status"], 204, "{}", run.out);
    let id = run.out["sent"]["id"].as_str().expect("a sent message id");
    let puts = run.fake.requests_to("PUT", "/reactions/");
    assert_eq!(puts.len(), 1, "{puts:#?}");
    assert_eq!(
        puts[0]["target"],
        format!("/api/v10/channels/{GENERAL}/messages/{id}/reactions/%F0%9F%91%8D/@me")
    );
    assert_eq!(puts[0]["status"], 204);
}

#[test]
fn the_session_never_reaches_discord_only_the_bots_token_does() {
    let run = run_library();
    assert_eq!(run.out["me"]["status"], 200, "{}", run.out);
    assert_eq!(run.out["me"]["id"], BOT_ID);
    let seen = run.fake.requests();
    // The read, the send, the reaction and `users/@me`, at least.
    assert!(seen.len() >= 4, "{seen:#?}");
    for request in &seen {
        assert_eq!(request["authorization_scheme_ok"], true, "{request:#}");
        assert_eq!(request["bot_id"], BOT_ID, "{request:#}");
    }
}
