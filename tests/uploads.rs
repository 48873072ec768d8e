//! contract: API.md "Writing" (uploads) and "Limits against hostile
//! clients" for uploads, issue 12 item 4: `multipart/form-data` on the
//! message routes, at most 10 files and `--max-upload-bytes`, at most 4 read
//! at once, refused from `Content-Length` before reading, re-sent byte for
//! byte, and memory bounded. Against the real binary and the fake Discord,
//! over raw sockets so what is (not) sent is under the test's control.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::read_until_close;
use support::world::*;

const BOUNDARY: &str = "dbb-upload-7Hq2";
const MIB: usize = 1024 * 1024;

type Setup = support::Logged;

fn setup_with(fake_flags: &[&str], flags: &[&str]) -> Setup {
    Setup::start(&standard(), fake_flags, flags)
}

fn setup(flags: &[&str]) -> Setup {
    setup_with(&[], flags)
}

/// A file's bytes: every byte value, in a pattern that does not repeat
/// with a short period.
fn file_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// A `multipart/form-data` body as clients build it.
fn form(payload: Option<&str>, files: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(payload) = payload {
        out.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"payload_json\"\r\n\
                 Content-Type: application/json\r\n\r\n{payload}\r\n"
            )
            .as_bytes(),
        );
    }
    for (name, filename, data) in files {
        out.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                 filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// FNV-1a 64, as the fake logs `body_hash`.
fn fnv1a(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn parse(raw: &str) -> Answer {
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {raw:?}"));
        Answer {
            status,
            head: head.to_string(),
            body: body.to_string(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

impl Setup {
    /// The request head of an upload to `path`, declaring `length` bytes.
    fn head(&self, method: &str, path: &str, length: usize, extra: &str) -> String {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\n\
             Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
             Content-Length: {length}\r\nConnection: close\r\n{extra}\r\n",
            self.session
        )
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.service.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream
    }

    /// Sends a whole upload and reads the answer.
    fn upload_to(&self, method: &str, path: &str, body: &[u8]) -> Answer {
        let mut stream = self.connect();
        let _ = stream.write_all(self.head(method, path, body.len(), "").as_bytes());
        // A refusal may close before the body is in; the answer is read anyway.
        let _ = stream.write_all(body);
        Answer::parse(&read_until_close(&mut stream, Duration::from_secs(60)))
    }

    fn upload(&self, body: &[u8]) -> Answer {
        self.upload_to("POST", &format!("/api/messages?channelId={GENERAL}"), body)
    }

    fn sends_seen(&self) -> Vec<Value> {
        self.fake
            .requests_to("POST", &format!("/channels/{GENERAL}/messages"))
    }
}

#[test]
fn an_upload_with_two_files_is_sent_byte_for_byte_and_discord_stores_both() {
    let s = setup(&[]);
    let (a, b) = (file_bytes(1000, 1), file_bytes(70_000, 2));
    let body = form(
        Some(r#"{"content":"two files"}"#),
        &[("files[0]", "a.bin", &a), ("files[1]", "b.bin", &b)],
    );
    let answer = s.upload(&body);
    assert_eq!(answer.status, 201, "{answer:?}");
    assert!(answer.header("idempotency-key").is_some());
    let sizes = |message: &Value| -> Vec<u64> {
        message["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["size"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(sizes(&answer.json()), [1000, 70_000]);
    let created = s.fake.created_messages(GENERAL);
    assert_eq!(created.len(), 1);
    assert_eq!(sizes(&created[0]), [1000, 70_000]);
    assert_eq!(created[0]["content"], "two files");
    assert_eq!(created[0]["enforce_nonce"], true);
    assert_eq!(created[0]["allowed_mentions"], json!({"parse": ["users"]}));
    // Only payload_json changed: rebuilt with what the service added, the
    // body hashes to what Discord received.
    let sends = s.sends_seen();
    assert_eq!(sends.len(), 1);
    let nonce = sends[0]["nonce"].as_str().expect("a nonce was sent");
    let payload = json!({
        "content": "two files",
        "allowed_mentions": {"parse": ["users"]},
        "nonce": nonce,
        "enforce_nonce": true,
    });
    let expected = form(
        Some(&payload.to_string()),
        &[("files[0]", "a.bin", &a), ("files[1]", "b.bin", &b)],
    );
    assert_eq!(sends[0]["body_len"], expected.len());
    assert_eq!(sends[0]["body_hash"], fnv1a(&expected));
    assert_eq!(
        sends[0]["content_type"],
        format!("multipart/form-data; boundary={BOUNDARY}")
    );
}

#[test]
fn an_upload_without_payload_json_gets_one_and_edits_and_dms_take_uploads() {
    let s = setup(&[]);
    let file = file_bytes(5000, 3);
    let sent = s.upload(&form(None, &[("files[0]", "only.bin", &file)]));
    assert_eq!(sent.status, 201, "{sent:?}");
    let id = sent.json()["id"].as_str().unwrap().to_string();
    assert_eq!(s.sends_seen()[0]["nonce"].as_str().map(str::len), Some(24));
    let edited = s.upload_to(
        "PATCH",
        &format!("/api/messages?channelId={GENERAL}&messageId={id}"),
        &form(
            Some(r#"{"content":"edited"}"#),
            &[("files[1]", "more.bin", &file[..10])],
        ),
    );
    assert_eq!(edited.status, 200, "{edited:?}");
    assert_eq!(edited.json()["content"], "edited");
    assert_eq!(edited.json()["attachments"].as_array().unwrap().len(), 2);
    let dm = s.upload_to(
        "POST",
        "/api/dm?userId=600000000000000001",
        &form(Some(r#"{"content":"dm"}"#), &[("files[0]", "d.bin", &file)]),
    );
    assert_eq!(dm.status, 201, "{dm:?}");
    assert_eq!(dm.json()["attachments"][0]["size"], 5000);
}

#[test]
fn eleven_files_are_400_and_nothing_reaches_discord() {
    let s = setup(&[]);
    let files: Vec<(String, Vec<u8>)> = (0..11)
        .map(|n| (format!("files[{n}]"), file_bytes(100, n as u8)))
        .collect();
    let parts: Vec<(&str, &str, &[u8])> = files
        .iter()
        .map(|(name, data)| (name.as_str(), "f.bin", data.as_slice()))
        .collect();
    let answer = s.upload(&form(Some(r#"{"content":"x"}"#), &parts));
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("at most 10 files")
    );
    assert!(s.fake.requests().is_empty(), "{:?}", s.fake.requests());
    // Ten are fine.
    let answer = s.upload(&form(Some(r#"{"content":"x"}"#), &parts[..10]));
    assert_eq!(answer.status, 201, "{answer:?}");
}

#[test]
fn malformed_uploads_and_uploads_elsewhere_are_refused_before_discord() {
    let s = setup(&[]);
    let mut cut = form(Some(r#"{"content":"x"}"#), &[("files[0]", "a", b"abc")]);
    cut.truncate(cut.len() - 10);
    assert_eq!(s.upload(&cut).status, 400);
    let other = form(Some("{}"), &[("file", "a", b"abc")]);
    assert_eq!(s.upload(&other).status, 400);
    let not_json = form(Some("{"), &[("files[0]", "a", b"abc")]);
    assert_eq!(s.upload(&not_json).status, 400);
    // Not a message route: JSON only, and 64 KiB.
    let bulk = s.upload_to(
        "POST",
        &format!("/api/messages/bulk-delete?channelId={GENERAL}"),
        &form(Some("{}"), &[]),
    );
    assert_eq!(bulk.status, 415, "{bulk:?}");
    assert!(s.fake.requests().is_empty(), "{:?}", s.fake.requests());
}

#[test]
fn a_client_nonce_in_payload_json_is_400_and_never_reaches_discord() {
    let s = setup(&[]);
    for payload in [
        r#"{"content":"x","nonce":"mine"}"#,
        r#"{"content":"x","enforce_nonce":false}"#,
    ] {
        let answer = s.upload(&form(Some(payload), &[("files[0]", "a", b"abc")]));
        assert_eq!(answer.status, 400, "{answer:?}");
        assert!(answer.json()["error"].as_str().unwrap().contains("nonce"));
    }
    assert!(s.fake.requests().is_empty());
}

#[test]
fn a_content_length_over_max_upload_bytes_is_413_before_the_body_is_sent() {
    let s = setup(&["--max-upload-bytes", "1048576"]);
    let mut stream = s.connect();
    let path = format!("/api/messages?channelId={GENERAL}");
    // The head only: the answer must come without the body.
    stream
        .write_all(s.head("POST", &path, MIB + 1, "").as_bytes())
        .unwrap();
    let started = Instant::now();
    let answer = Answer::parse(&read_until_close(&mut stream, Duration::from_secs(10)));
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        answer.json()["error"].as_str().unwrap().contains("1048576"),
        "{answer:?}"
    );
    // At the limit it is read (and here answered by the parser).
    let mut stream = s.connect();
    stream
        .write_all(s.head("POST", &path, MIB, "").as_bytes())
        .unwrap();
    stream.write_all(&vec![b'x'; MIB]).unwrap();
    let answer = Answer::parse(&read_until_close(&mut stream, Duration::from_secs(10)));
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(s.fake.requests().is_empty());
}

#[test]
fn the_default_limit_is_25_mib_and_json_bodies_keep_64_kib() {
    let s = setup(&[]);
    let path = format!("/api/messages?channelId={GENERAL}");
    let refused = |head: String| {
        let mut stream = s.connect();
        stream.write_all(head.as_bytes()).unwrap();
        Answer::parse(&read_until_close(&mut stream, Duration::from_secs(10)))
    };
    let answer = refused(s.head("POST", &path, 26_214_401, ""));
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(answer.body.contains("26214400"), "{answer:?}");
    let json_head = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 65537\r\n\r\n",
        s.session
    );
    let answer = refused(json_head);
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(answer.body.contains("65536"), "{answer:?}");
    // Without a live session an upload gets no slot and no large body.
    let anonymous = s
        .head("POST", &path, 2 * MIB, "")
        .replace(&s.session, "not-a-session");
    assert_eq!(refused(anonymous).status, 401);
    assert!(s.fake.requests().is_empty());
}

#[test]
fn a_fifth_concurrent_upload_is_503_with_retry_after_and_slow_ones_finish() {
    let s = setup(&[]);
    let path = format!("/api/messages?channelId={GENERAL}");
    let bodies: Vec<Vec<u8>> = (0..4)
        .map(|n| {
            form(
                Some(&format!(r#"{{"content":"slow {n}"}}"#)),
                &[("files[0]", "s.bin", &file_bytes(MIB, n))],
            )
        })
        .collect();
    // Four uploads send their head and a little of the body, then stall.
    let mut slow: Vec<TcpStream> = bodies
        .iter()
        .map(|body| {
            let mut stream = s.connect();
            stream
                .write_all(s.head("POST", &path, body.len(), "").as_bytes())
                .unwrap();
            stream.write_all(&body[..1024]).unwrap();
            stream
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let fifth = s.upload(&form(
        Some(r#"{"content":"fifth"}"#),
        &[("files[0]", "f", b"x")],
    ));
    assert_eq!(fifth.status, 503, "{fifth:?}");
    assert_eq!(fifth.header("retry-after"), Some("1"));
    // A JSON send is not an upload and goes through.
    let json_body = r#"{"content":"json"}"#;
    let mut stream = s.connect();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{json_body}",
        s.session,
        json_body.len()
    )
    .unwrap();
    let json = Answer::parse(&read_until_close(&mut stream, Duration::from_secs(10)));
    assert_eq!(json.status, 201, "{json:?}");
    // The slow ones finish, and their slots are free again.
    for (stream, body) in slow.iter_mut().zip(&bodies) {
        stream.write_all(&body[1024..]).unwrap();
    }
    for stream in &mut slow {
        let answer = Answer::parse(&read_until_close(stream, Duration::from_secs(30)));
        assert_eq!(answer.status, 201, "{answer:?}");
    }
    let after = s.upload_to(
        "POST",
        &format!("/api/messages?channelId={QUIET}"),
        &form(Some(r#"{"content":"after"}"#), &[("files[0]", "f", b"x")]),
    );
    assert_eq!(after.status, 201, "{after:?}");
}

/// Sends `body` after `head` in 16 KiB pieces, one every `pause`; the
/// answer, or "" when the service closed without one.
fn dribble(s: &Setup, body: &[u8], pause: Duration) -> String {
    let mut stream = s.connect();
    let path = format!("/api/messages?channelId={GENERAL}");
    stream
        .write_all(s.head("POST", &path, body.len(), "").as_bytes())
        .unwrap();
    for piece in body.chunks(16 * 1024) {
        thread::sleep(pause);
        if stream.write_all(piece).is_err() {
            break;
        }
    }
    read_until_close(&mut stream, Duration::from_secs(10))
}

#[test]
fn a_slow_upload_gets_time_in_proportion_to_its_size_and_no_more() {
    // 1 s + 192 KiB at 64 KiB/s = 4 s for the whole request.
    let s = setup(&["--client-timeout", "1000"]);
    let empty = form(Some("{}"), &[("files[0]", "slow.bin", b"")]);
    let file = file_bytes(192 * 1024 - empty.len(), 9);
    let body = form(Some("{}"), &[("files[0]", "slow.bin", &file)]);
    // 12 pieces 250 ms apart: 3 s, three times --client-timeout, in time.
    let answer = Answer::parse(&dribble(&s, &body, Duration::from_millis(250)));
    assert_eq!(answer.status, 201, "{answer:?}");
    // 600 ms apart: every read within --client-timeout, but 7 s in all.
    let started = Instant::now();
    let answer = dribble(&s, &body, Duration::from_millis(600));
    let elapsed = started.elapsed();
    assert_eq!(answer, "", "closed without an answer");
    assert!(
        elapsed > Duration::from_millis(3500) && elapsed < Duration::from_secs(6),
        "closed after {elapsed:?}"
    );
    assert_eq!(s.sends_seen().len(), 1);
}

#[test]
fn an_upload_whose_answer_is_dropped_is_resent_byte_identical_and_exists_once() {
    let s = setup(&[]);
    s.fake
        .fault(json!({"kind": "write_then_drop", "path_contains": "/messages"}));
    let (a, b) = (file_bytes(200_000, 4), file_bytes(3, 5));
    let body = form(
        Some(r#"{"content":"dropped"}"#),
        &[("files[0]", "a.bin", &a), ("files[7]", "b.bin", &b)],
    );
    let answer = s.upload(&body);
    assert_eq!(answer.status, 201, "{answer:?}");
    let sends = s.sends_seen();
    assert_eq!(sends.len(), 2, "{sends:?}");
    assert_eq!(sends[0]["fault"], "write_then_drop");
    assert_eq!(sends[0]["body_hash"], sends[1]["body_hash"]);
    assert_eq!(sends[0]["body_len"], sends[1]["body_len"]);
    assert_eq!(sends[0]["nonce"], sends[1]["nonce"]);
    let created = s.fake.created_messages(GENERAL);
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["attachments"].as_array().unwrap().len(), 2);
    assert_eq!(answer.json()["id"], created[0]["id"]);
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn memory_stays_bounded_during_four_concurrent_25_mib_uploads() {
    const UPLOAD: usize = 25 * MIB;
    let s = setup_with(
        &[
            "--max-file-bytes",
            "30000000",
            "--max-request-bytes",
            "30000000",
        ],
        &[
            "--upstream-timeout",
            "30000",
            "--max-ratelimit-wait",
            "60000",
        ],
    );
    let baseline = s.service.rss_kib();
    // Each upload is one file filling 25 MiB with its parts.
    let bodies: Vec<Arc<Vec<u8>>> = (0..4)
        .map(|n| {
            let payload = format!(r#"{{"content":"big {n}"}}"#);
            let empty = form(Some(&payload), &[("files[0]", "big.bin", b"")]);
            let file = file_bytes(UPLOAD - empty.len(), n);
            Arc::new(form(Some(&payload), &[("files[0]", "big.bin", &file)]))
        })
        .collect();
    assert!(bodies.iter().all(|b| b.len() == UPLOAD));
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (Arc::clone(&peak), Arc::clone(&done), s.service.pid());
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(status_kib(pid, "VmRSS:"), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let start = Arc::new(Barrier::new(4));
    let started = Instant::now();
    let answers: Vec<Answer> = thread::scope(|scope| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|body| {
                let (s, start) = (&s, Arc::clone(&start));
                scope.spawn(move || {
                    start.wait();
                    s.upload(body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    for answer in &answers {
        assert_eq!(answer.status, 201, "{answer:?}");
        let size = answer.json()["attachments"][0]["size"].as_u64().unwrap();
        assert!(size > (UPLOAD - 1024) as u64, "{size}");
    }
    let peak = peak.load(Ordering::SeqCst);
    let high_water = status_kib(s.service.pid(), "VmHWM:");
    let bound = baseline + (4 * UPLOAD / 1024) as u64 * 5 / 2;
    eprintln!(
        "4 concurrent 25 MiB uploads in {:?}: baseline RSS {baseline} KiB, peak RSS sampled \
         {peak} KiB, VmHWM {high_water} KiB, bound {bound} KiB",
        started.elapsed()
    );
    assert!(
        high_water < bound,
        "VmHWM {high_water} KiB over {bound} KiB"
    );
    assert!(peak < bound, "RSS {peak} KiB over {bound} KiB");
}
