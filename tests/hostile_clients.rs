//! contract: API.md "Limits against hostile clients", and issue #2's list of
//! hostile-client tests. Real sockets; every wait is bounded. After each
//! attack the service must answer normally with its memory bounded.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::world::*;
use support::{Fake, Service, raw_exchange, read_until_close};

/// Resident memory the service may reach under any of these attacks.
const RSS_BOUND_KIB: u64 = 96 * 1024;
/// A normal client must be answered within this, whatever else goes on.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

fn setup(flags: &[&str]) -> (Fake, Service) {
    // This process holds thousands of sockets in some tests.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, flags);
    (fake, service)
}

/// The service answers a normal request quickly and its memory is bounded.
fn assert_still_serving(service: &Service) {
    let started = Instant::now();
    assert!(service.is_healthy(), "service stopped answering");
    assert!(
        started.elapsed() < ANSWER_WITHIN,
        "answered in {:?}",
        started.elapsed()
    );
    let rss = service.rss_kib();
    eprintln!("RSS after attack: {rss} KiB");
    assert!(rss < RSS_BOUND_KIB, "RSS {rss} KiB");
}

fn connect(service: &Service) -> TcpStream {
    let stream = TcpStream::connect(&service.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

#[test]
fn a_huge_declared_content_length_without_a_body_gets_413() {
    let (_fake, service) = setup(&[]);
    let reply = raw_exchange(
        &service.addr,
        b"POST /api/auth/login HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000000\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("\"error\""), "{reply}");
    assert_still_serving(&service);
}

#[test]
fn a_declared_100_kb_body_never_sent_on_64_connections_gets_413_at_once() {
    let (_fake, service) = setup(&[]);
    let mut streams: Vec<TcpStream> = (0..64).map(|_| connect(&service)).collect();
    for s in &mut streams {
        s.write_all(b"POST /api/auth/login HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
            .unwrap();
    }
    let started = Instant::now();
    for s in &mut streams {
        let reply = read_until_close(s, Duration::from_secs(5));
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_still_serving(&service);
}

#[test]
fn bodies_declared_within_the_limit_but_never_sent_do_not_block_others_and_are_closed() {
    let (_fake, service) = setup(&["--client-timeout", "1500"]);
    let mut streams: Vec<TcpStream> = (0..64).map(|_| connect(&service)).collect();
    for s in &mut streams {
        s.write_all(b"POST /api/auth/login HTTP/1.1\r\nHost: t\r\nContent-Length: 60000\r\n\r\n{")
            .unwrap();
    }
    assert_still_serving(&service);
    let started = Instant::now();
    for s in &mut streams {
        let _ = read_until_close(s, Duration::from_secs(5));
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(4), "closed after {waited:?}");
}

#[test]
fn a_64_mib_header_line_without_newline_is_cut_off_early() {
    let (_fake, service) = setup(&[]);
    let mut stream = connect(&service);
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nX-Long: ")
        .unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 64 * 1024 * 1024 {
        match stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent < 64 * 1024 * 1024, "the server read all 64 MiB");
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    // Either a 431 made it through before the reset, or nothing did.
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
        "{reply}"
    );
    assert_still_serving(&service);
}

#[test]
fn a_head_over_16_kib_gets_431() {
    let (_fake, service) = setup(&[]);
    let mut request = b"GET /healthz HTTP/1.1\r\n".to_vec();
    for n in 0..40 {
        request.extend_from_slice(format!("X-Pad-{n}: {}\r\n", "b".repeat(500)).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let reply = raw_exchange(&service.addr, &request, Duration::from_secs(5));
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert_still_serving(&service);
}

#[test]
fn five_hundred_slowloris_connections_neither_block_others_nor_stay_open() {
    let (_fake, service) = setup(&["--client-timeout", "2000"]);
    let mut streams: Vec<TcpStream> = (0..500).map(|_| connect(&service)).collect();
    for s in &mut streams {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .unwrap();
    }
    for _ in 0..3 {
        assert_still_serving(&service);
    }
    let started = Instant::now();
    for s in &mut streams {
        let _ = read_until_close(s, Duration::from_secs(6));
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "slow connections closed after {waited:?}"
    );
    assert_still_serving(&service);
}

#[test]
fn a_client_dribbling_bytes_is_closed_at_the_timeout_for_the_whole_request() {
    let (_fake, service) = setup(&["--client-timeout", "1000"]);
    let mut stream = connect(&service);
    let started = Instant::now();
    let mut closed = false;
    // One byte every 200 ms never trips a per-read timeout; the whole-request
    // deadline must still close the connection.
    for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if stream.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let rest = read_until_close(&mut stream, Duration::from_secs(2));
    assert!(closed || rest.is_empty(), "{rest}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn two_thousand_idle_keep_alive_connections_do_not_block_others() {
    let (_fake, service) = setup(&[]);
    let mut streams = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let mut s = connect(&service);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        streams.push(s);
    }
    for s in &mut streams {
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    for _ in 0..3 {
        assert_still_serving(&service);
    }
    drop(streams);
    assert_still_serving(&service);
}

#[test]
fn fifty_pipelined_requests_are_answered_in_order() {
    let (_fake, service) = setup(&[]);
    let mut batch = Vec::new();
    for n in 0..50 {
        let path = if n % 2 == 0 {
            "/healthz".to_string()
        } else {
            format!("/api/nope-{n}")
        };
        batch.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    let mut stream = connect(&service);
    stream.write_all(&batch).unwrap();
    let mut data = Vec::new();
    let mut answers: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while answers.len() < 50 && Instant::now() < deadline {
        let mut buf = [0u8; 16 * 1024];
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} answers", answers.len());
        data.extend_from_slice(&buf[..n]);
        while let Some((answer, used)) = split_response(&data) {
            answers.push(answer);
            data.drain(..used);
        }
    }
    assert_eq!(answers.len(), 50);
    for (n, answer) in answers.iter().enumerate() {
        if n % 2 == 0 {
            assert!(
                answer.starts_with("HTTP/1.1 200") && answer.contains("\"ok\""),
                "{n}: {answer}"
            );
        } else {
            assert!(
                answer.starts_with("HTTP/1.1 404") && answer.contains(&format!("nope-{n}\"")),
                "{n}: {answer}"
            );
        }
    }
}

/// One complete response off the front of `data`, by its Content-Length.
fn split_response(data: &[u8]) -> Option<(String, usize)> {
    let text = String::from_utf8_lossy(data);
    let head_end = text.find("\r\n\r\n")? + 4;
    let length: usize = text[..head_end]
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))?
        .trim()
        .parse()
        .ok()?;
    if data.len() < head_end + length {
        return None;
    }
    Some((
        String::from_utf8_lossy(&data[..head_end + length]).into_owned(),
        head_end + length,
    ))
}

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[test]
fn random_bytes_as_requests_never_take_the_server_down() {
    let (_fake, service) = setup(&["--client-timeout", "1000"]);
    let mut rng = XorShift(0x9e3779b97f4a7c15);
    for round in 0..200 {
        let len = 1 + (rng.next() % 4096) as usize;
        let mut bytes = rng.bytes(len);
        if round % 2 == 0 {
            bytes.extend_from_slice(b"\r\n\r\n");
        }
        let reply = raw_exchange(&service.addr, &bytes, Duration::from_secs(3));
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 4") || reply.starts_with("HTTP/1.0 4"),
            "round {round}: {reply}"
        );
    }
    assert_still_serving(&service);
}

#[test]
fn random_bodies_headers_and_queries_get_4xx_and_the_server_stays_up() {
    let (fake, service) = setup(&[]);
    let session = service.session(TOKEN);
    fake.reset();
    let mut rng = XorShift(0x2545f4914f6cdd1d);
    let paths = [
        "/api/members",
        "/api/channels",
        "/api/messages",
        "/api/auth/login",
        "/api/guilds",
    ];
    let names = [
        "guildId",
        "channelId",
        "limit",
        "before",
        "after",
        "around",
        "x",
        "",
    ];
    let junk = [
        "",
        "%",
        "%zz",
        "%00",
        "..",
        "-",
        "1e9",
        "99999999999999999999999",
        "\u{1F600}",
        "1&1",
        "a=b=c",
    ];
    for round in 0..300 {
        let path = rng.pick(&paths);
        let mut query = String::new();
        for _ in 0..(rng.next() % 4) {
            query.push_str(&format!(
                "{}={}&",
                rng.pick(&names),
                urlish(rng.pick(&junk))
            ));
        }
        let body_len = (rng.next() % 300) as usize;
        let body = String::from_utf8_lossy(&rng.bytes(body_len)).into_owned();
        let method = if path.contains("auth") { "POST" } else { "GET" };
        let auth = if round % 3 == 0 {
            "garbage".to_string()
        } else {
            session.clone()
        };
        let reply = service.request(
            method,
            &format!("{path}?{query}"),
            &[
                ("Authorization", &auth),
                ("X-Junk", rng.pick(&junk).trim_start_matches('\u{1F600}')),
            ],
            Some(&body),
        );
        assert!(
            (200..500).contains(&reply.status) && reply.status != 500,
            "round {round}: {path}?{query} → {} {}",
            reply.status,
            reply.text
        );
        assert!(!reply.error().is_empty() || reply.status == 200);
    }
    assert_still_serving(&service);
}

fn urlish(text: &str) -> String {
    text.replace('\u{1F600}', "%F0%9F%98%80")
}
