//! contract: API.md "Events", `GET /api/events`, against the real binary
//! and the fake Discord's Gateway, one behaviour per test.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::sse::{Frame, Stream};
use support::world::*;
use support::{Fake, Service};

/// The fake's Gateway beats fast, so tests do not wait for Discord's 41 s.
const FAKE_FLAGS: &[&str] = &["--gateway-heartbeat-ms", "500"];

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

/// Events in bursts of this many: the fake's Gateway sends them back to
/// back.
const BURST: usize = 1_000;
/// Bytes of text in each event's `d`: about 1.2 KB a frame, so 50,000
/// events are 60 MB through the service, and a stream that queued them for
/// a client that stopped reading would show in its RSS beside the ring's
/// 12 MB.
const PADDING: usize = 1_000;
/// The ring keeps the bot's last 10,000 events (API.md).
const KEPT: u64 = 10_000;

/// Makes the fake Gateway send the bot `count` copies of one dispatch.
fn inject(fake: &Fake, kind: &str, d: &Value, count: usize) {
    let body = json!({"bot_id": BOT_ID, "t": kind, "d": d, "count": count});
    let mut reply = support::agent()
        .post(&format!("http://{}/_fake/gateway/dispatch", fake.addr))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("the fake's control API");
    let answer: Value = serde_json::from_str(&reply.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(answer["dispatched"], count, "{answer}");
}

/// The event ID of a frame, as a number.
fn id_of(frame: &Frame) -> u64 {
    frame
        .id
        .as_deref()
        .and_then(|id| id.parse().ok())
        .expect("an id")
}

/// A stream whose client reads through a 4 KiB receive buffer, so the
/// service's writes to it block soon after the client stops reading.
fn small_buffer_stream(s: &Setup, flags: &[(&str, &str)]) -> Stream {
    let addr: std::net::SocketAddr = s.service.addr.parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut headers = vec![("Authorization", s.session.as_str())];
    headers.extend_from_slice(flags);
    Stream::over(socket.into(), "", &headers)
}

/// Two streams of the bot from its `gateway.ready` on: the first, with a
/// small receive buffer, is where the caller stops reading; the second is
/// read by `flood`. Also the ready marker's ID.
fn two_streams(s: &Setup) -> (Stream, Stream, u64) {
    let mut stalled = small_buffer_stream(s, &[]);
    let ready = id_of(&stalled.until("gateway.ready", Duration::from_secs(10)));
    let mut reading = s.stream(&format!("?lastEventId={}", ready - 1));
    let again = reading
        .next(Duration::from_secs(5))
        .expect("the ready marker");
    assert_eq!(id_of(&again), ready);
    (stalled, reading, ready)
}

/// What a flood saw.
struct Flood {
    /// The last event ID the reading stream got.
    last: u64,
    took: Duration,
    /// The longest the injector waited for the reading stream to catch up.
    slowest: Duration,
}

/// Pushes `total` events through the fake's Gateway in bursts while
/// `reading` (whose last frame was `after`) is read on a thread of its own,
/// as fast as it comes; returns once it has read them all. Panics if it
/// misses or repeats an ID, gets a burst out of order, or stalls.
fn flood(s: &Setup, mut reading: Stream, after: u64, total: usize) -> Flood {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let reader = std::thread::spawn(move || {
        let (mut last, mut burst) = (after, 0);
        while counter.load(Ordering::SeqCst) < total {
            let frame = reading
                .next(Duration::from_secs(10))
                .expect("the reading stream ended or stalled");
            let id = id_of(&frame);
            assert_eq!(id, last + 1, "a gap or a repeat after {last}: {frame:?}");
            last = id;
            if frame.event.as_deref() == Some("MESSAGE_CREATE") {
                let this = frame.data.unwrap()["data"]["nonce"].as_u64().unwrap();
                assert!(this >= burst, "burst {this} after {burst}");
                burst = this;
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
        last
    });
    let padding = "x".repeat(PADDING);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for burst in 0..total / BURST {
        // At most four bursts ahead of the reading stream, so it never falls
        // out of the ring: only a stream that stopped reading may.
        let waiting = Instant::now();
        while seen.load(Ordering::SeqCst) + 4 * BURST < burst * BURST {
            assert!(!reader.is_finished(), "the reading stream failed");
            assert!(
                waiting.elapsed() < Duration::from_secs(30),
                "the reading stream fell behind"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        slowest = slowest.max(waiting.elapsed());
        let d = json!({"id": burst.to_string(), "channel_id": GENERAL, "guild_id": GUILD,
                       "author": {"id": BOT_ID}, "content": padding, "nonce": burst});
        inject(&s.fake, "MESSAGE_CREATE", &d, BURST);
    }
    let last = reader
        .join()
        .expect("the reading stream got every event, in order");
    Flood {
        last,
        took: started.elapsed(),
        slowest,
    }
}

#[test]
fn a_reader_that_stops_reading_while_50000_events_pass_costs_bounded_memory() {
    let s = setup(&[]);
    let (_stalled, reading, ready) = two_streams(&s);
    let before_kib = s.service.rss_kib();
    let flood = flood(&s, reading, ready, 50_000);
    let asked = Instant::now();
    assert!(s.service.is_healthy());
    let health = asked.elapsed();
    let after_kib = s.service.rss_kib();
    eprintln!(
        "50,000 events in {:?} (longest wait for the reading stream {:?}); /healthz in \
         {health:?}; VmRSS {before_kib} KiB -> {after_kib} KiB",
        flood.took, flood.slowest
    );
    assert!(health < Duration::from_secs(1), "/healthz took {health:?}");
    // The ring's 10,000 frames are 12 MiB, the stalled stream's batch at
    // most 256 KiB, the kernel holds what it wrote; 24 MiB leaves the
    // allocator room, and is a third of what keeping the flood would cost.
    assert!(
        after_kib.saturating_sub(before_kib) < 24 * 1024,
        "VmRSS grew from {before_kib} KiB to {after_kib} KiB"
    );
}

#[test]
fn a_reader_too_slow_gets_stream_overflow_and_its_reconnect_loses_nothing_still_kept() {
    // The client resumes reading within --client-timeout, the deadline of
    // each write: past it, a client that reads nothing is dropped unsent.
    let s = setup(&["--client-timeout", "120000"]);
    let (mut stalled, reading, ready) = two_streams(&s);
    let flood = flood(&s, reading, ready, 2 * KEPT as usize);

    let frames = stalled.rest(Duration::from_secs(10));
    let (overflow, written) = frames.split_last().expect("frames after the stall");
    assert_eq!(
        overflow.event.as_deref(),
        Some("stream.overflow"),
        "{overflow:?}"
    );
    for (n, frame) in written.iter().enumerate() {
        assert_eq!(
            id_of(frame),
            ready + 1 + n as u64,
            "written before it stalled, in order"
        );
    }
    assert!(
        written.len() < KEPT as usize,
        "{} frames written",
        written.len()
    );

    let resume = overflow.id.clone().unwrap();
    let mut again = Stream::open(
        &s.service,
        "",
        &[("Authorization", &s.session), ("Last-Event-ID", &resume)],
    );
    let mut id = id_of(overflow);
    while id < flood.last {
        let frame = again
            .next(Duration::from_secs(5))
            .expect("every kept event");
        assert_eq!(
            id_of(&frame),
            id + 1,
            "no gap marker, nothing missed: {frame:?}"
        );
        id += 1;
    }
    assert_eq!(
        flood.last - id_of(overflow),
        KEPT,
        "from the oldest kept on"
    );
}
