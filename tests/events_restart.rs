//! contract: API.md "Events": "A restart ... resumes the Gateway session
//! when Discord still allows it", and event IDs that stay meaningful across
//! a restart with `--data-dir` (issue #13), against the real binary and the
//! fake Discord's Gateway.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use support::sse::Stream;
use support::world::*;
use support::{Fake, Service};

/// The fake's Gateway beats fast, so tests do not wait for Discord's 41 s.
const FAKE_FLAGS: &[&str] = &["--gateway-heartbeat-ms", "500"];

/// A data directory of the test's own, removed when it ends.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let path = std::env::temp_dir().join(format!("dbb-events-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        DataDir(path)
    }

    fn flags(&self) -> Vec<&str> {
        vec!["--data-dir", self.0.to_str().unwrap()]
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stop(mut service: Service, signal: &str) {
    service.signal(signal);
    assert!(
        service.wait_exit(Duration::from_secs(15)).is_some(),
        "the service did not exit on {signal}"
    );
}

fn bot_stats(fake: &Fake) -> serde_json::Value {
    fake.gateway_stats()["bots"][BOT_ID].clone()
}

/// A running service with a stream that has seen one MESSAGE_CREATE:
/// returns the service, its session and that event's ID.
fn streaming(fake: &Fake, dir: &DataDir) -> (Service, String, String) {
    let service = Service::start(fake, &dir.flags());
    let session = service.session(TOKEN);
    let mut stream = Stream::open(&service, "", &[("Authorization", &session)]);
    stream.until("gateway.ready", Duration::from_secs(10));
    fake.gateway_dispatch(BOT_ID, "MESSAGE_CREATE", json!({"content": "before"}));
    let seen = stream.until("MESSAGE_CREATE", Duration::from_secs(5));
    (service, session, seen.id.unwrap())
}

/// Stops `service` with `signal`, dispatches "while down", starts it again
/// on the same directory and reconnects a stream with `Last-Event-ID`.
fn restart(
    fake: &Fake,
    dir: &DataDir,
    service: Service,
    signal: &str,
    session: &str,
    last: &str,
) -> (Service, Stream) {
    stop(service, signal);
    fake.gateway_dispatch(BOT_ID, "MESSAGE_CREATE", json!({"content": "while down"}));
    let service = Service::start(fake, &dir.flags());
    let stream = Stream::open(
        &service,
        "",
        &[("Authorization", session), ("Last-Event-ID", last)],
    );
    (service, stream)
}

#[test]
fn after_a_graceful_restart_the_gateway_resumes_and_ids_continue_with_nothing_missed() {
    let fake = Fake::start_with(&standard(), FAKE_FLAGS);
    let dir = DataDir::new("graceful");
    let (service, session, last) = streaming(&fake, &dir);
    let (_service, mut stream) = restart(&fake, &dir, service, "TERM", &session, &last);
    let mut frames = Vec::new();
    while frames.len() < 2 {
        let frame = stream.next(Duration::from_secs(10)).expect("a frame");
        frames.push(frame);
    }
    let kinds: Vec<_> = frames.iter().map(|f| f.event.clone().unwrap()).collect();
    assert!(
        kinds.contains(&"gateway.resumed".into()) && !kinds.contains(&"stream.gap".into()),
        "{frames:?}"
    );
    let missed = frames
        .iter()
        .find(|f| f.event.as_deref() == Some("MESSAGE_CREATE"))
        .expect("the event sent while the service was down");
    assert_eq!(
        missed.data.as_ref().unwrap()["data"]["content"],
        "while down"
    );
    let ids: Vec<u64> = frames
        .iter()
        .map(|f| f.id.as_ref().unwrap().parse().unwrap())
        .collect();
    let last: u64 = last.parse().unwrap();
    assert!(
        ids.iter().all(|&id| id > last && id <= last + 2),
        "IDs continue right after {last}: {ids:?}"
    );
    let stats = bot_stats(&fake);
    assert_eq!(stats["identifies"], 1, "resumed, not identified: {stats}");
    assert_eq!(stats["resumes"], 1, "{stats}");
}

#[test]
fn after_a_crash_the_gateway_resumes_and_a_stream_is_told_of_a_gap_with_ids_never_reused() {
    let fake = Fake::start_with(&standard(), FAKE_FLAGS);
    let dir = DataDir::new("crash");
    let (service, session, last) = streaming(&fake, &dir);
    // A checkpoint a second old at most holds the session.
    std::thread::sleep(Duration::from_millis(1500));
    let (_service, mut stream) = restart(&fake, &dir, service, "KILL", &session, &last);
    let first = stream.next(Duration::from_secs(10)).expect("a frame");
    assert_eq!(first.event.as_deref(), Some("stream.gap"), "{first:?}");
    let missed = stream.until("MESSAGE_CREATE", Duration::from_secs(10));
    assert_eq!(missed.data.unwrap()["data"]["content"], "while down");
    let id: u64 = missed.id.unwrap().parse().unwrap();
    assert!(id > last.parse::<u64>().unwrap() + (1 << 32), "{id}");
    let stats = bot_stats(&fake);
    assert_eq!(stats["identifies"], 1, "resumed, not identified: {stats}");
}

#[test]
fn the_gateway_sessions_are_kept_sealed_on_disk() {
    let fake = Fake::start_with(&standard(), FAKE_FLAGS);
    let dir = DataDir::new("sealed");
    let (service, _, _) = streaming(&fake, &dir);
    stop(service, "TERM");
    let sessions = fake.gateway_stats()["sessions"].clone();
    let ids: Vec<String> = sessions
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["session_id"].as_str().map(str::to_string))
        .collect();
    assert!(!ids.is_empty(), "the fake names its sessions: {sessions}");
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&dir.0).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    for id in ids {
        assert!(!text.contains(&id), "a Gateway session in clear on disk");
    }
}
