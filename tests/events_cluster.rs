//! contract: API.md "Events": "With `--redis-url`, exactly one instance
//! holds a bot's Gateway connection; streams on any instance get every
//! event once, in order", and "the loss of the instance holding it resumes
//! the Gateway session" (issue #13, "Cluster"). Each test starts a real
//! `redis-server` (skipped with one loud line where it is not installed),
//! the fake Discord with its Gateway, and two instances.

#[path = "support/redis.rs"]
mod redis_server;
mod support;

use std::time::{Duration, Instant};

use serde_json::json;

use redis_server::RedisServer;
use support::sse::{Frame, Stream};
use support::world::*;
use support::{Fake, Service};

const FAKE_FLAGS: &[&str] = &["--gateway-heartbeat-ms", "500"];

fn instance(fake: &Fake, redis: &RedisServer) -> Service {
    let flags = redis.flags();
    let all: Vec<&str> = flags.iter().map(String::as_str).collect();
    Service::start(fake, &all)
}

/// A Redis, the fake Discord, two instances and a session of the bot.
struct Cluster {
    redis: RedisServer,
    fake: Fake,
    a: Service,
    b: Service,
    session: String,
}

impl Cluster {
    /// `None` (after one loud line) where redis-server is not installed.
    fn start() -> Option<Cluster> {
        let redis = RedisServer::start_or_skip()?;
        let fake = Fake::start_with(&standard(), FAKE_FLAGS);
        let (a, b) = (instance(&fake, &redis), instance(&fake, &redis));
        let session = a.session(TOKEN);
        Some(Cluster {
            redis,
            fake,
            a,
            b,
            session,
        })
    }
}

/// A stream on `service` that has seen the Gateway ready.
fn ready(service: &Service, session: &str) -> Stream {
    let mut stream = open(service, session, None);
    stream.until("gateway.ready", Duration::from_secs(10));
    stream
}

fn open(service: &Service, session: &str, last: Option<&str>) -> Stream {
    let mut headers = vec![("Authorization", session)];
    if let Some(last) = last {
        headers.push(("Last-Event-ID", last));
    }
    Stream::open(service, "", &headers)
}

fn bot_stats(fake: &Fake) -> serde_json::Value {
    fake.gateway_stats()["bots"][BOT_ID].clone()
}

/// The next `count` MESSAGE_CREATE frames (markers skipped).
fn messages(stream: &mut Stream, count: usize, within: Duration) -> Vec<Frame> {
    let mut out = Vec::new();
    while out.len() < count {
        out.push(stream.until("MESSAGE_CREATE", within));
    }
    out
}

fn contents(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            f.data.as_ref().unwrap()["data"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn ids(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| f.id.clone().unwrap()).collect()
}

fn dispatch_numbered(fake: &Fake, range: std::ops::Range<usize>) {
    for n in range {
        fake.gateway_dispatch(
            BOT_ID,
            "MESSAGE_CREATE",
            json!({ "content": n.to_string() }),
        );
    }
}

fn numbers(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| n.to_string()).collect()
}

#[test]
fn two_instances_share_one_gateway_connection_and_their_streams_get_every_event_in_order() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let Cluster {
        fake,
        a,
        b,
        session,
        ..
    } = &cluster;
    let mut on_a = open(a, session, None);
    let mut on_b = open(b, session, None);
    on_a.until("gateway.ready", Duration::from_secs(10));
    dispatch_numbered(fake, 0..20);
    let (seen_a, seen_b) = (
        messages(&mut on_a, 20, Duration::from_secs(5)),
        messages(&mut on_b, 20, Duration::from_secs(5)),
    );
    assert_eq!(contents(&seen_a), numbers(0..20));
    assert_eq!(ids(&seen_a), ids(&seen_b), "the same IDs on every instance");
    let stats = bot_stats(fake);
    assert_eq!(stats["connections_open"], 1, "{stats}");
    assert_eq!(stats["identifies"], 1, "{stats}");
}

#[test]
fn a_last_event_id_from_one_instance_resumes_on_the_other() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let Cluster {
        fake,
        a,
        b,
        session,
        ..
    } = &cluster;
    let mut on_a = ready(a, session);
    dispatch_numbered(fake, 0..3);
    let seen = messages(&mut on_a, 3, Duration::from_secs(5));
    drop(on_a);
    dispatch_numbered(fake, 3..6);
    // Let them reach the stream while no client reads.
    std::thread::sleep(Duration::from_millis(500));
    let last = seen[0].id.clone().unwrap();
    let mut on_b = open(b, session, Some(&last));
    let first = on_b.next(Duration::from_secs(5)).expect("a frame");
    assert_ne!(first.event.as_deref(), Some("stream.gap"), "{first:?}");
    let mut rest = vec![first];
    rest.extend(messages(&mut on_b, 4, Duration::from_secs(5)));
    assert_eq!(contents(&rest), numbers(1..6));
}

#[test]
fn kill_9_of_the_holder_the_other_resumes_and_its_streams_miss_nothing() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let Cluster {
        fake,
        a,
        b,
        session,
        ..
    } = &mut cluster;
    let _on_a = ready(a, session);
    let mut on_b = open(b, session, None);
    dispatch_numbered(fake, 0..5);
    messages(&mut on_b, 5, Duration::from_secs(5));
    assert!(
        a.wait_for_log("this instance holds the Gateway"),
        "A's stream came first, so A holds it"
    );
    a.signal("KILL");
    a.wait_exit(Duration::from_secs(5));
    dispatch_numbered(fake, 5..10);
    let started = Instant::now();
    let mut after = Vec::new();
    while after.len() < 5 && started.elapsed() < Duration::from_secs(30) {
        match on_b.next(Duration::from_secs(30) - started.elapsed()) {
            Some(f) if f.event.as_deref() == Some("MESSAGE_CREATE") => after.push(f),
            Some(f) => eprintln!("marker {f:?}"),
            None => break,
        }
    }
    if after.len() < 5 {
        panic!(
            "B: {}\nfake: {}\nafter: {after:?}",
            b.logs(),
            fake.gateway_stats()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took over within 30 s"
    );
    assert_eq!(
        contents(&after),
        numbers(5..10),
        "nothing lost, nothing twice"
    );
    assert!(b.wait_for_log("this instance holds the Gateway"));
    let stats = bot_stats(fake);
    assert_eq!(stats["identifies"], 1, "resumed, not identified: {stats}");
    assert_eq!(stats["connections_open"], 1, "{stats}");
}

#[test]
fn a_graceful_stop_of_the_holder_hands_the_gateway_over_at_once() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let Cluster {
        fake,
        a,
        b,
        session,
        ..
    } = &mut cluster;
    let _on_a = ready(a, session);
    let mut on_b = open(b, session, None);
    a.signal("TERM");
    a.wait_exit(Duration::from_secs(15));
    let started = Instant::now();
    on_b.until("gateway.resumed", Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not left to the lease's expiry: {:?}",
        started.elapsed()
    );
    let stats = bot_stats(fake);
    assert_eq!(stats["identifies"], 1, "{stats}");
}

#[test]
fn the_last_sessions_logout_on_another_instance_closes_the_gateway_with_1000() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let Cluster {
        fake,
        a,
        b,
        session,
        ..
    } = &cluster;
    let _on_a = ready(a, session);
    assert_eq!(b.logout(session).status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let closes = loop {
        let closes = bot_stats(fake)["close_codes_received"].clone();
        if closes.as_array().is_some_and(|c| !c.is_empty()) || Instant::now() > deadline {
            break closes;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        closes,
        json!([1000]),
        "the bot is gone for good: offline at once"
    );
}

#[test]
fn a_ticket_made_on_one_instance_opens_a_stream_on_the_other_once() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let Cluster { a, b, session, .. } = &cluster;
    let reply = a.request(
        "POST",
        "/api/events/tickets",
        &[("Authorization", session)],
        None,
    );
    assert_eq!(reply.status, 201, "{reply:?}");
    let ticket = reply.json()["ticket"].as_str().unwrap().to_string();
    let dump = format!("{:?}", cluster.redis.dump());
    assert!(
        !dump.contains(&ticket) && !dump.contains(session.as_str()),
        "neither in clear"
    );
    let query = format!("?ticket={ticket}");
    let mut on_b = Stream::open(b, &query, &[]);
    assert_eq!(on_b.status, 200);
    on_b.until("gateway.ready", Duration::from_secs(10));
    assert_eq!(
        Stream::open(a, &query, &[]).status,
        401,
        "a ticket works once"
    );
}

#[test]
fn every_instance_reports_the_holders_gateway_state() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let Cluster { a, b, session, .. } = &cluster;
    let _on_a = ready(a, session);
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let status = b.get("/api/gateway", session).json();
        if status["state"] == "ready" || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["state"], "ready", "{status}");
    assert_eq!(status["shards"][0]["state"], "ready", "{status}");
}
