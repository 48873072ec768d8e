//! contract: issue #5, "Metrics": `GET /metrics` is a Prometheus text scrape
//! whose counters move with client requests and Discord calls, labelled by
//! route template, never by a raw ID or a token.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;
use support::world::*;
use support::{Fake, Service};

fn scrape(service: &Service) -> Scrape {
    let reply = service.request("GET", "/metrics", &[], None);
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for line in reply.text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "not a sample line: {line:?}"
        );
    }
    Scrape::parse(reply.text.lines().map(|l| Ok(l.to_string()))).expect("a valid scrape")
}

fn samples<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples(scrape, metric, labels)
        .iter()
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

#[test]
fn a_scrape_parses_and_client_request_counters_move() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let session = service.session(TOKEN);
    let guilds = [("route", "/api/guilds"), ("status", "200")];
    let before = value(&scrape(&service), "dbb_requests_total", &guilds);
    for _ in 0..3 {
        assert_eq!(service.get("/api/guilds", &session).status, 200);
    }
    let after = scrape(&service);
    assert_eq!(value(&after, "dbb_requests_total", &guilds) - before, 3.0);
    assert!(
        value(
            &after,
            "dbb_request_duration_seconds_count",
            &[("route", "/api/guilds")]
        ) >= 3.0
    );
}

#[test]
fn discord_calls_are_counted_by_route_template_and_status() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let session = service.session(TOKEN);
    service.get(&format!("/api/channels?guildId={GUILD}"), &session);
    let text = scrape(&service);
    assert_eq!(
        value(
            &text,
            "dbb_discord_requests_total",
            &[
                ("route", "GET /guilds/:guild_id/channels"),
                ("status", "200")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "dbb_discord_requests_total",
            &[("route", "GET /users/@me"), ("status", "200")]
        ),
        1.0,
        "the login's token check"
    );
}

#[test]
fn discord_429s_are_counted_by_scope_and_waits_are_timed() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let session = service.session(TOKEN);
    fake.fault(json!({"kind": "shared_429", "count": 1, "retry_after": 0.2}));
    let reply = service.get(&format!("/api/channels?guildId={GUILD}"), &session);
    assert_eq!(reply.status, 200, "{}", reply.text);
    let text = scrape(&service);
    assert_eq!(
        value(&text, "dbb_discord_429_total", &[("scope", "shared")]),
        1.0
    );
    assert!(value(&text, "dbb_ratelimit_wait_seconds_count", &[]) >= 2.0);
    let waited = value(&text, "dbb_ratelimit_wait_seconds_sum", &[]);
    assert!(waited >= 0.15, "waited {waited}s for the shared 429");
}

#[test]
fn sessions_bots_and_worker_gauges_are_reported() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    service.session(TOKEN);
    service.session(TOKEN);
    service.session(MULTI_TOKEN);
    let text = scrape(&service);
    assert_eq!(value(&text, "dbb_sessions", &[]), 3.0);
    assert_eq!(value(&text, "dbb_bots", &[]), 2.0);
    assert_eq!(value(&text, "dbb_invalid_requests_window", &[]), 0.0);
    assert_eq!(
        value(&text, "dbb_workers_busy", &[]),
        1.0,
        "the scrape itself"
    );
    assert_eq!(value(&text, "dbb_requests_queued", &[]), 0.0);
}

#[test]
fn rejected_logins_move_the_invalid_request_window() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    assert_eq!(service.login("MTA5.not-a-real-token.Qq_q").status, 401);
    assert_eq!(
        value(&scrape(&service), "dbb_invalid_requests_window", &[]),
        1.0
    );
}

#[test]
fn labels_never_carry_ids_paths_or_tokens() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let session = service.session(TOKEN);
    service.get(&format!("/api/messages?channelId={GENERAL}"), &session);
    service.get("/api/no-such-route/12345678901234567", &session);
    service.request("DELETE", "/coffee", &[], None);
    let reply = service.request("GET", "/metrics", &[], None);
    for secret in [
        TOKEN,
        session.as_str(),
        GENERAL,
        GUILD,
        "no-such-route",
        "coffee",
        "DELETE",
    ] {
        assert!(!reply.text.contains(secret), "scrape shows {secret}");
    }
    let text = scrape(&service);
    assert_eq!(
        value(
            &text,
            "dbb_requests_total",
            &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
}

fn send(service: &Service, session: &str, key: &str, content: &str) -> u16 {
    service.send_message(session, content, Some(key)).status
}

#[test]
fn writes_are_counted_by_route_and_outcome_and_replays_by_result() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &["--upstream-timeout", "300"]);
    let session = service.session(TOKEN);
    let route = ("route", "POST /channels/:channel_id/messages");
    assert_eq!(send(&service, &session, "m-1", "a"), 201);
    assert_eq!(send(&service, &session, "m-1", "a"), 201);
    assert_eq!(send(&service, &session, "m-1", "b"), 422);
    fake.fault(json!({"kind": "write_then_hang", "ms": 1000, "count": 2}));
    assert_eq!(send(&service, &session, "m-2", "c"), 504);
    let after = scrape(&service);
    let count = |metric, labels: &[(&str, &str)]| value(&after, metric, labels);
    assert_eq!(
        count("dbb_discord_writes_total", &[route, ("outcome", "done")]),
        1.0
    );
    assert_eq!(
        count("dbb_discord_writes_total", &[route, ("outcome", "unknown")]),
        1.0
    );
    assert_eq!(count("dbb_idempotency_total", &[("result", "replay")]), 1.0);
    assert_eq!(count("dbb_idempotency_total", &[("result", "reused")]), 1.0);
}

#[test]
fn refusals_answered_again_without_discord_are_counted() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let session = service.session(TOKEN);
    for _ in 0..2 {
        let reply = service.get(&format!("/api/messages?channelId={SECRET}"), &session);
        assert_eq!(reply.status, 403);
    }
    let after = scrape(&service);
    assert_eq!(
        value(
            &after,
            "dbb_discord_calls_refused_locally_total",
            &[("reason", "cached")]
        ),
        1.0
    );
}

/// The fake's Gateway beats every half second, so an ACK comes within a
/// second of READY, not Discord's 41 s.
const FAST_HEARTBEATS: &[&str] = &["--gateway-heartbeat-ms", "500"];

/// An open `GET /api/events` of `session`, read until `shards` shards
/// are ready (one `gateway.ready` each); the stream, and so the bot's
/// Gateway, stays open while the reader lives.
fn stream_until_ready(service: &Service, session: &str, shards: usize) -> BufReader<TcpStream> {
    let mut socket = TcpStream::connect(&service.addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = format!("GET /api/events HTTP/1.1\r\nHost: t\r\nAuthorization: {session}\r\n\r\n");
    socket.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(socket);
    let mut ready = 0;
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready < shards {
        // A keep-alive comment comes every 15 s: the read timeout alone
        // would never end the wait.
        assert!(
            Instant::now() < deadline,
            "{ready} of {shards} shards ready in 20 s"
        );
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended");
        if line.trim_end() == "event: gateway.ready" {
            ready += 1;
        }
    }
    reader
}

/// Scrapes until `done` holds, for up to 5 s; the last scrape.
fn scrape_until(service: &Service, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(service);
        if done(&text) || Instant::now() >= deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many observations of a histogram fell at or under `le` seconds.
fn bucket(scrape: &Scrape, metric: &str, le: f64) -> f64 {
    samples(scrape, metric, &[])
        .iter()
        .filter_map(|s| match &s.value {
            Value::Histogram(buckets) => buckets.iter().find(|b| b.less_than == le),
            _ => None,
        })
        .map(|b| b.count)
        .sum()
}

#[test]
fn heartbeat_acks_are_timed_once_a_stream_connects_the_gateway() {
    let fake = Fake::start_with(&standard(), FAST_HEARTBEATS);
    let service = Service::start(&fake, &[]);
    let session = service.session(TOKEN);
    let _stream = stream_until_ready(&service, &session, 1);
    let metric = "dbb_gateway_heartbeat_latency_seconds";
    let text = scrape_until(&service, |t| {
        value(t, &format!("{metric}_count"), &[]) >= 1.0
    });
    let acks = value(&text, &format!("{metric}_count"), &[]);
    assert!(acks >= 1.0, "no ACK timed within 5 s of READY");
    let mean = value(&text, &format!("{metric}_sum"), &[]) / acks;
    assert!(mean < 0.25, "{mean} s from heartbeat to ACK on loopback");
    assert_eq!(
        bucket(&text, metric, 0.25),
        acks,
        "every ACK under 250 ms on loopback"
    );
}

#[test]
fn a_shard_waiting_for_its_identify_turn_is_timed() {
    // Two shards in one identify bucket: the second identifies 5 s after
    // the first (Discord's window).
    let mut world = standard();
    world["bots"][1]["shards"] = json!(2);
    let fake = Fake::start_with(&world, FAST_HEARTBEATS);
    let service = Service::start(&fake, &[]);
    let session = service.session(MULTI_TOKEN);
    let _stream = stream_until_ready(&service, &session, 2);
    let text = scrape(&service);
    let metric = "dbb_gateway_identify_wait_seconds";
    assert_eq!(value(&text, &format!("{metric}_count"), &[]), 2.0);
    assert_eq!(bucket(&text, metric, 0.1), 1.0, "the first shard at once");
    let waited = value(&text, &format!("{metric}_sum"), &[]);
    assert!(
        (4.5..7.0).contains(&waited),
        "the second shard waited {waited} s for a 5 s window"
    );
}

#[test]
fn shards_are_counted_by_state_once_a_stream_connects_the_gateway() {
    let fake = Fake::start_with(&standard(), FAST_HEARTBEATS);
    let service = Service::start(&fake, &[]);
    let session = service.session(TOKEN);
    let before = scrape(&service);
    for state in ["ready", "connecting", "resuming", "backoff", "failed"] {
        assert_eq!(
            value(&before, "dbb_gateway_shards", &[("state", state)]),
            0.0,
            "{state} shown, and 0, before any Gateway runs"
        );
    }
    let _stream = stream_until_ready(&service, &session, 1);
    let after = scrape(&service);
    let shards = |state| value(&after, "dbb_gateway_shards", &[("state", state)]);
    assert_eq!(shards("ready"), 1.0);
    assert_eq!(
        shards("connecting") + shards("resuming") + shards("backoff") + shards("failed"),
        0.0
    );
}
