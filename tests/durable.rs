//! contract: API.md "Running", `--data-dir`: "with it, a restart loses no
//! session"; issue #11. Each test has a data directory of its own under
//! the system's temporary directory, removed when it ends.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::world::*;
use support::{Fake, Service};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh data directory path (not yet made: the service makes it).
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("dbb-data-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        DataDir(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// Every byte of every file in the directory.
    fn all_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(&self.0).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                bytes.extend(std::fs::read(&path).unwrap());
            }
        }
        bytes
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn with_dir<'a>(dir: &'a DataDir, more: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec!["--data-dir", dir.arg()];
    flags.extend_from_slice(more);
    flags
}

fn guilds(service: &Service, session: &str) -> u16 {
    service.get("/api/guilds", session).status
}

/// Stops the service with `signal` and waits for it to be gone.
fn stop(mut service: Service, signal: &str) {
    service.signal(signal);
    assert!(
        service.wait_exit(Duration::from_secs(15)).is_some(),
        "the service did not exit on {signal}"
    );
}

/// Runs the binary expecting it to refuse to start: its exit status and
/// its stderr lines (the logger's time and level stripped).
fn refused(flags: &[&str]) -> (std::process::ExitStatus, Vec<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_discord-bot-backend"))
        .args(["--port", "0", "--discord-api", "http://127.0.0.1:9/api/v10"])
        .args(flags)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("[INFO]"))
        .map(str::to_string)
        .collect();
    (out.status, lines)
}

/// The binary refuses to start with one line, which names `needle`.
fn assert_refused(flags: &[&str], needle: &str) {
    let (status, lines) = refused(flags);
    assert!(!status.success(), "it started");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(needle), "{lines:?}");
}

fn bots_metric(service: &Service) -> String {
    service
        .request("GET", "/metrics", &[], None)
        .text
        .lines()
        .find(|l| l.starts_with("dbb_bots "))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_session_works_after_a_graceful_restart_and_its_bot_keeps_one_limiter() {
    let fake = Fake::start(&standard());
    let dir = DataDir::new("sigterm");
    let service = Service::start(&fake, &with_dir(&dir, &[]));
    let first = service.session(TOKEN);
    let second = service.session(TOKEN);
    stop(service, "TERM");
    let service = Service::start(&fake, &with_dir(&dir, &[]));
    assert_eq!(guilds(&service, &first), 200);
    assert_eq!(guilds(&service, &second), 200);
    assert_eq!(
        bots_metric(&service),
        "dbb_bots 1",
        "one bot entry for both sessions"
    );
    assert!(
        service.logs().contains("2 sessions of 1 bots restored"),
        "{}",
        service.logs()
    );
}

#[test]
fn a_session_survives_a_crash() {
    let fake = Fake::start(&standard());
    let dir = DataDir::new("sigkill");
    let service = Service::start(&fake, &with_dir(&dir, &[]));
    let session = service.session(TOKEN);
    assert_eq!(guilds(&service, &session), 200);
    stop(service, "KILL");
    let service = Service::start(&fake, &with_dir(&dir, &[]));
    assert_eq!(guilds(&service, &session), 200);
}

#[test]
fn a_logout_survives_a_restart() {
    let fake = Fake::start(&standard());
    let dir = DataDir::new("logout");
    let service = Service::start(&fake, &with_dir(&dir, &[]));
    let gone = service.session(TOKEN);
    let kept = service.session(TOKEN);
    assert_eq!(service.logout(&gone).status, 200);
    stop(service, "KILL");
    let service = Service::start(&fake, &with_dir(&dir, &[]));
    assert_eq!(guilds(&service, &gone), 401);
    assert_eq!(guilds(&service, &kept), 200);
}

#[test]
fn expiry_survives_a_restart() {
    let fake = Fake::start(&standard());
    let dir = DataDir::new("expiry");
    let timeout = ["--session-idle-timeout", "2"];
    let service = Service::start(&fake, &with_dir(&dir, &timeout));
    let session = service.session(TOKEN);
    stop(service, "TERM");
    std::thread::sleep(Duration::from_millis(2200));
    let service = Service::start(&fake, &with_dir(&dir, &timeout));
    assert_eq!(
        guilds(&service, &session),
        401,
        "idle past the timeout while down"
    );
}

#[test]
fn restored_sessions_count_toward_max_sessions() {
    let fake = Fake::start(&standard());
    let dir = DataDir::new("max");
    let max = ["--max-sessions", "2"];
    let service = Service::start(&fake, &with_dir(&dir, &max));
    service.session(TOKEN);
    service.session(MULTI_TOKEN);
    stop(service, "TERM");
    let service = Service::start(&fake, &with_dir(&dir, &max));
    assert_eq!(service.login(TOKEN).status, 503);
}

#[test]
fn the_files_hold_no_token_and_no_session_id_in_clear() {
    let fake = Fake::start(&standard());
    let dir = DataDir::new("secrets");
    let service = Service::start(&fake, &with_dir(&dir, &[]));
    let session = service.session(TOKEN);
    assert_eq!(guilds(&service, &session), 200);
    stop(service, "TERM");
    let bytes = dir.all_bytes();
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains("TestBot"), "the scan sees the files' text");
    assert!(!contains(TOKEN), "the token is on disk in clear");
    assert!(!contains(&session), "the session ID is on disk in clear");
    assert!(
        !contains(&session[..12]),
        "part of the session ID is on disk in clear"
    );
}

#[test]
fn a_second_instance_on_the_same_directory_is_refused_naming_it() {
    let fake = Fake::start(&standard());
    let dir = DataDir::new("twice");
    let _first = Service::start(&fake, &with_dir(&dir, &[]));
    assert_refused(&with_dir(&dir, &[]), "in use");
    assert_refused(&with_dir(&dir, &[]), dir.arg());
}

#[test]
fn a_corrupt_database_is_refused_at_start_and_left_as_it_was() {
    let dir = DataDir::new("corrupt");
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("state.db");
    std::fs::write(&file, b"not a database at all ".repeat(300)).unwrap();
    let before = std::fs::read(&file).unwrap();
    assert_refused(&with_dir(&dir, &[]), "not a usable SQLite database");
    assert!(
        std::fs::read(&file).unwrap() == before,
        "the file was changed"
    );
}

#[test]
fn a_wrong_key_is_refused_at_start_and_nothing_changes() {
    let fake = Fake::start(&standard());
    let dir = DataDir::new("wrong-key");
    let service = Service::start(&fake, &with_dir(&dir, &[]));
    let session = service.session(TOKEN);
    stop(service, "TERM");
    let other = "00".repeat(32);
    assert_refused(&with_dir(&dir, &["--session-key", &other]), "another key");
    // SQLite may fold its write-ahead log into the file on closing it; what
    // matters is that the data is all there for the right key.
    let service = Service::start(&fake, &with_dir(&dir, &[]));
    assert_eq!(
        guilds(&service, &session),
        200,
        "the right key still opens it"
    );
}

#[test]
fn a_missing_key_file_is_refused_and_not_replaced() {
    let fake = Fake::start(&standard());
    let dir = DataDir::new("missing-key");
    let service = Service::start(&fake, &with_dir(&dir, &[]));
    service.session(TOKEN);
    stop(service, "TERM");
    let key = std::fs::read(dir.0.join("secret.key")).unwrap();
    std::fs::remove_file(dir.0.join("secret.key")).unwrap();
    assert_refused(&with_dir(&dir, &[]), "secret.key is missing");
    assert!(!dir.0.join("secret.key").exists(), "no new key was made");
    std::fs::write(dir.0.join("secret.key"), key).unwrap();
}

#[test]
fn an_unusable_data_dir_is_refused_at_start_with_one_line() {
    // A directory cannot be made under a regular file, whoever runs this
    // (a read-only mode would not stop root).
    let dir = DataDir::new("unusable");
    std::fs::write(&dir.0, b"a file, not a directory").unwrap();
    let below = dir.0.join("data");
    assert_refused(
        &["--data-dir", below.to_str().unwrap()],
        "cannot create --data-dir",
    );
    let _ = std::fs::remove_file(&dir.0);
}

#[test]
fn a_sessions_last_use_reaches_the_disk_so_use_keeps_it_alive_across_a_restart() {
    let fake = Fake::start(&standard());
    let dir = DataDir::new("last-use");
    let timeout = ["--session-idle-timeout", "2"];
    let service = Service::start(&fake, &with_dir(&dir, &timeout));
    let logged_in = std::time::Instant::now();
    let session = service.session(TOKEN);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(guilds(&service, &session), 200);
    stop(service, "TERM");
    // 2.3 s after the login, 0.8 s after the last use.
    std::thread::sleep(
        (logged_in + Duration::from_millis(2300))
            .saturating_duration_since(std::time::Instant::now()),
    );
    let service = Service::start(&fake, &with_dir(&dir, &timeout));
    assert_eq!(
        guilds(&service, &session),
        200,
        "expired by the login's time"
    );
}

fn send_with_key(service: &Service, session: &str, key: &str) -> support::Reply {
    service.send_message(session, "kept across restarts", Some(key))
}

#[test]
fn an_idempotency_key_answered_before_a_crash_is_replayed_after_it() {
    let fake = Fake::start(&standard());
    let dir = DataDir::new("idem-crash");
    let service = Service::start(&fake, &with_dir(&dir, &[]));
    let session = service.session(TOKEN);
    let first = send_with_key(&service, &session, "restart-1");
    assert_eq!(first.status, 201, "{}", first.text);
    stop(service, "KILL");
    let service = Service::start(&fake, &with_dir(&dir, &[]));
    let again = send_with_key(&service, &session, "restart-1");
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json(), first.json());
    assert_eq!(fake.created_messages(GENERAL).len(), 1);
}

#[test]
fn a_send_claimed_before_a_crash_is_resumed_with_its_nonce_after_it() {
    let fake = Fake::start(&standard());
    let dir = DataDir::new("idem-claimed");
    // The lease (wait budget + 4 upstream timeouts + 5 s = 6.3 s) runs out
    // quickly.
    let flags = ["--upstream-timeout", "300", "--max-ratelimit-wait", "100"];
    let service = Service::start(&fake, &with_dir(&dir, &flags));
    let session = service.session(TOKEN);
    fake.fault(
        serde_json::json!({"kind": "write_then_hang", "ms": 30000, "path_contains": "/messages"}),
    );
    std::thread::scope(|scope| {
        let pending = scope.spawn(|| send_with_key(&service, &session, "crash-1").status);
        // The fake has stored the message; the service is waiting for it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while fake.created_messages(GENERAL).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        service.signal("KILL");
        let _ = pending.join();
    });
    let service = Service::start(&fake, &with_dir(&dir, &flags));
    let during_lease = send_with_key(&service, &session, "crash-1");
    assert_eq!(during_lease.status, 409, "{}", during_lease.text);
    // Retried as a client told to wait would, until the lease is over.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let after = loop {
        std::thread::sleep(Duration::from_millis(500));
        let reply = send_with_key(&service, &session, "crash-1");
        if reply.status != 409 || std::time::Instant::now() > deadline {
            break reply;
        }
    };
    assert_eq!(after.status, 201, "{}", after.text);
    let created = fake.created_messages(GENERAL);
    assert_eq!(created.len(), 1, "one message: {created:?}");
    assert_eq!(after.json()["id"], created[0]["id"]);
}
