//! contract: API.md "Events", `GET /api/events`, against the real binary
//! and the fake Discord's Gateway, one behaviour per test.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::world::*;
use support::{Fake, Service};

/// The fake's Gateway beats fast, so tests do not wait for Discord's 41 s.
const FAKE_FLAGS: &[&str] = &["--gateway-heartbeat-ms", "500"];

/// One SSE frame as a client reads it.
#[derive(Debug, Clone)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: Option<Value>,
}

/// An open `GET /api/events`, read line by line.
struct Stream {
    reader: BufReader<TcpStream>,
    status: u16,
    headers: Vec<(String, String)>,
}

impl Stream {
    fn open(service: &Service, query: &str, headers: &[(&str, &str)]) -> Stream {
        let mut socket = TcpStream::connect(&service.addr).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = format!("GET /api/events{query} HTTP/1.1\r\nHost: test\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        socket.write_all(head.as_bytes()).unwrap();
        let mut reader = BufReader::new(socket);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            let (name, value) = trimmed.split_once(':').unwrap();
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        Stream {
            reader,
            status,
            headers,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next frame (comments and `retry:` skipped), or `None` when the
    /// stream ended or nothing came within `wait`.
    fn next(&mut self, wait: Duration) -> Option<Frame> {
        self.reader.get_ref().set_read_timeout(Some(wait)).unwrap();
        let mut frame = Frame {
            id: None,
            event: None,
            data: None,
        };
        let mut line = String::new();
        loop {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if frame.id.is_some() || frame.event.is_some() {
                    return Some(frame);
                }
                continue;
            }
            if line.starts_with(':') || line.starts_with("retry:") {
                continue;
            }
            let (field, value) = line.split_once(": ").unwrap_or((line, ""));
            match field {
                "id" => frame.id = Some(value.to_string()),
                "event" => frame.event = Some(value.to_string()),
                "data" => frame.data = Some(serde_json::from_str(value).expect("data is JSON")),
                _ => {}
            }
        }
    }

    /// Frames until one of type `kind`, which is returned.
    fn until(&mut self, kind: &str, within: Duration) -> Frame {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(frame) = self.next(deadline - Instant::now())
                && frame.event.as_deref() == Some(kind)
            {
                return frame;
            }
        }
        panic!("no {kind} within {within:?}");
    }
}

type Setup = support::Logged;

fn setup(flags: &[&str]) -> Setup {
    Setup::start(&standard(), FAKE_FLAGS, flags)
}

impl Setup {
    fn stream(&self, query: &str) -> Stream {
        Stream::open(&self.service, query, &[("Authorization", &self.session)])
    }

    fn send(&self, content: &str) -> String {
        let reply = self.service.send_message(&self.session, content, None);
        assert_eq!(reply.status, 201, "{reply:?}");
        reply.json()["id"].as_str().unwrap().to_string()
    }
}

#[test]
fn a_stream_is_event_stream_without_caching_or_buffering() {
    let s = setup(&[]);
    let stream = s.stream("");
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.header("cache-control"), Some("no-store"));
    assert_eq!(stream.header("x-accel-buffering"), Some("no"));
}

#[test]
fn a_stream_without_a_session_is_401() {
    let s = setup(&[]);
    let stream = Stream::open(&s.service, "", &[]);
    assert_eq!(stream.status, 401);
}

#[test]
fn a_message_sent_arrives_as_message_create_with_discords_data() {
    let s = setup(&[]);
    let mut stream = s.stream("");
    stream.until("gateway.ready", Duration::from_secs(10));
    let id = s.send("hello stream");
    let frame = stream.until("MESSAGE_CREATE", Duration::from_secs(5));
    let envelope = frame.data.unwrap();
    assert_eq!(envelope["type"], "MESSAGE_CREATE");
    assert_eq!(envelope["botId"], BOT_ID);
    assert_eq!(envelope["data"]["id"], id);
    assert_eq!(envelope["data"]["content"], "hello stream");
    assert_eq!(Some(envelope["id"].as_str().unwrap()), frame.id.as_deref());
}

#[test]
fn filters_keep_only_the_named_types_but_markers_always_pass() {
    let s = setup(&[]);
    let mut stream = s.stream("?types=MESSAGE_DELETE");
    stream.until("gateway.ready", Duration::from_secs(10));
    let id = s.send("filtered");
    let delete = s.service.request(
        "DELETE",
        &format!("/api/messages?channelId={GENERAL}&messageId={id}"),
        &[("Authorization", &s.session)],
        None,
    );
    assert_eq!(delete.status, 204);
    let frame = stream.next(Duration::from_secs(5)).expect("a frame");
    assert_eq!(frame.event.as_deref(), Some("MESSAGE_DELETE"), "{frame:?}");
}

#[test]
fn a_reconnect_with_last_event_id_gets_every_event_after_it_once() {
    let s = setup(&[]);
    let mut first = s.stream("");
    first.until("gateway.ready", Duration::from_secs(10));
    s.send("one");
    let seen = first.until("MESSAGE_CREATE", Duration::from_secs(5));
    drop(first);
    s.send("two");
    s.send("three");
    let last = seen.id.unwrap();
    let mut again = Stream::open(
        &s.service,
        "",
        &[("Authorization", &s.session), ("Last-Event-ID", &last)],
    );
    let mut contents = Vec::new();
    while contents.len() < 2 {
        let frame = again.until("MESSAGE_CREATE", Duration::from_secs(5));
        contents.push(frame.data.unwrap()["data"]["content"].clone());
    }
    assert_eq!(contents, vec![json!("two"), json!("three")]);
}

#[test]
fn an_id_never_issued_gets_a_gap_marker_first() {
    let s = setup(&[]);
    let mut stream = Stream::open(
        &s.service,
        "?lastEventId=999999",
        &[("Authorization", &s.session)],
    );
    let frame = stream.next(Duration::from_secs(5)).expect("a frame");
    assert_eq!(frame.event.as_deref(), Some("stream.gap"), "{frame:?}");
}

#[test]
fn a_logout_ends_the_sessions_streams_within_a_second() {
    let s = setup(&[]);
    let mut stream = s.stream("");
    stream.until("gateway.ready", Duration::from_secs(10));
    assert_eq!(s.service.logout(&s.session).status, 200);
    let started = Instant::now();
    while stream.next(Duration::from_secs(3)).is_some() {}
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn one_gateway_connection_per_bot_whatever_the_number_of_streams() {
    let s = setup(&[]);
    let other = s.service.session(TOKEN);
    let mut streams: Vec<Stream> = (0..3).map(|_| s.stream("")).collect();
    streams.push(Stream::open(&s.service, "", &[("Authorization", &other)]));
    streams[0].until("gateway.ready", Duration::from_secs(10));
    let stats = s.fake.gateway_stats();
    assert_eq!(stats["bots"][BOT_ID]["connections_open"], 1, "{stats}");
    assert_eq!(stats["bots"][BOT_ID]["identifies"], 1, "{stats}");
}

#[test]
fn the_gateway_is_idle_until_a_stream_starts_it_then_ready() {
    let s = setup(&[]);
    let idle = s.service.get("/api/gateway", &s.session);
    assert_eq!(idle.status, 200, "{idle:?}");
    assert_eq!(idle.json()["state"], "idle");
    assert_eq!(idle.json()["subscribers"]["streams"], 0);
    let mut stream = s.stream("");
    stream.until("gateway.ready", Duration::from_secs(10));
    let ready = s.service.get("/api/gateway", &s.session).json();
    assert_eq!(ready["state"], "ready", "{ready}");
    assert_eq!(ready["subscribers"]["streams"], 1);
    assert!(
        ready["intents"]
            .as_array()
            .unwrap()
            .contains(&json!("MESSAGE_CONTENT")),
        "auto takes the privileged intents the application has: {ready}"
    );
}

#[test]
fn a_privileged_intent_the_application_lacks_fails_with_a_reason_to_act_on() {
    let fake = Fake::start_with(
        &{
            let mut world = standard();
            world["bots"][0]["privileged_intents"] = json!(["GUILD_MEMBERS"]);
            world
        },
        FAKE_FLAGS,
    );
    let service = Service::start(
        &fake,
        &["--gateway-intents", "GUILDS,GUILD_MESSAGES,MESSAGE_CONTENT"],
    );
    let session = service.session(TOKEN);
    let mut stream = Stream::open(&service, "", &[("Authorization", &session)]);
    let failed = stream.until("gateway.failed", Duration::from_secs(10));
    let data = &failed.data.unwrap()["data"];
    assert_eq!(data["code"], 4014, "{data}");
    assert!(
        data["reason"].as_str().unwrap().contains("MESSAGE_CONTENT"),
        "{data}"
    );
    let status = service.get("/api/gateway", &session).json();
    assert_eq!(status["state"], "failed", "{status}");
}

#[test]
fn a_ticket_opens_one_stream_once_and_never_reaches_a_log_line() {
    let s = setup(&[]);
    let reply = s.service.request(
        "POST",
        "/api/events/tickets",
        &[("Authorization", &s.session)],
        None,
    );
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.json()["expiresIn"], 60);
    let ticket = reply.json()["ticket"].as_str().unwrap().to_string();
    let mut stream = Stream::open(&s.service, &format!("?ticket={ticket}"), &[]);
    assert_eq!(stream.status, 200);
    stream.until("gateway.ready", Duration::from_secs(10));
    let again = Stream::open(&s.service, &format!("?ticket={ticket}"), &[]);
    assert_eq!(again.status, 401, "a ticket works once");
    assert!(s.service.wait_for_log("ticket=<redacted>"));
    assert!(!s.service.logs().contains(&ticket), "{}", s.service.logs());
}

#[test]
fn a_ticket_needs_a_session_to_be_made() {
    let s = setup(&[]);
    let reply = s.service.request("POST", "/api/events/tickets", &[], None);
    assert_eq!(reply.status, 401, "{reply:?}");
}

/// The close codes the fake received from this bot's connections.
fn closes_received(fake: &Fake) -> Vec<u64> {
    fake.gateway_stats()["bots"][BOT_ID]["close_codes_received"]
        .as_array()
        .map(|codes| codes.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

#[test]
fn the_last_sessions_logout_closes_the_gateway_with_1000() {
    let s = setup(&[]);
    let mut stream = s.stream("");
    stream.until("gateway.ready", Duration::from_secs(10));
    assert_eq!(s.service.logout(&s.session).status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !closes_received(&s.fake).contains(&1000) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(closes_received(&s.fake), vec![1000]);
}

#[test]
fn a_logout_while_the_bot_has_another_session_keeps_the_gateway() {
    let s = setup(&[]);
    let other = s.service.session(TOKEN);
    let mut stream = Stream::open(&s.service, "", &[("Authorization", &other)]);
    stream.until("gateway.ready", Duration::from_secs(10));
    assert_eq!(s.service.logout(&s.session).status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(closes_received(&s.fake).is_empty());
    assert_eq!(
        s.fake.gateway_stats()["bots"][BOT_ID]["connections_open"],
        1
    );
}

#[test]
fn gateway_sessions_and_events_are_counted_in_metrics() {
    let s = setup(&[]);
    let mut stream = s.stream("");
    stream.until("gateway.ready", Duration::from_secs(10));
    s.send("counted");
    stream.until("MESSAGE_CREATE", Duration::from_secs(5));
    let scrape = s.service.request("GET", "/metrics", &[], None).text;
    assert!(
        scrape.contains(r#"dbb_gateway_connection_changes_total{change="ready",code="none"} 1"#),
        "{scrape}"
    );
    let events: f64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("dbb_gateway_events_total "))
        .expect("the events counter")
        .parse()
        .unwrap();
    assert!(
        events >= 2.0,
        "GUILD_CREATE and MESSAGE_CREATE at least: {events}"
    );
}
