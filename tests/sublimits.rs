//! contract: API.md, "Talking to Discord": "A 429 that arrives while the
//! bucket still had room (a sub-limit) holds back only the requests it
//! concerns", and `shared` 429s are not invalid requests. Issue #12, item 3.
//! The fake's `sublimit_429` is Discord's channel write limit (code 20028,
//! scope `shared`, bucket headers that show room); it does not use the bucket.

mod support;

use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value as Sample};
use serde_json::{Value, json};
use support::world::*;
use support::{Reply, Service};

type Setup = support::Logged;

fn setup() -> Setup {
    Setup::start(&standard(), &[], &[])
}

impl Setup {
    fn send(&self, channel: &str, content: &str) -> Reply {
        self.write(
            "POST",
            &format!("/api/messages?channelId={channel}"),
            &[],
            Some(&json!({ "content": content })),
        )
    }

    fn edit(&self, channel: &str, message: &str, content: &str) -> Reply {
        self.write(
            "PATCH",
            &format!("/api/messages?channelId={channel}&messageId={message}"),
            &[],
            Some(&json!({ "content": content })),
        )
    }

    /// The next send to `channel` meets the channel's write limit.
    fn sublimit(&self, channel: &str, retry_after: f64) {
        self.fake.fault(json!({
            "kind": "sublimit_429",
            "retry_after": retry_after,
            "path_contains": format!("/channels/{channel}/messages"),
        }));
    }

    /// The sends to `channel` Discord received, in order.
    fn sends(&self, channel: &str) -> Vec<Value> {
        self.fake
            .requests_to("POST", &format!("/channels/{channel}/messages"))
    }

    /// Waits until Discord has answered a send to `channel` with 429.
    fn wait_for_sublimit(&self, channel: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.sends(channel).iter().any(|r| r["status"] == 429) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no 429 reached the send to {channel}");
    }
}

fn metric(service: &Service, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = service.request("GET", "/metrics", &[], None).text;
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("a valid scrape");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => *v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn a_send_that_meets_a_sub_limit_is_sent_again_after_its_retry_after_and_succeeds() {
    let s = setup();
    s.sublimit(GENERAL, 0.3);
    let started = Instant::now();
    let reply = s.send(GENERAL, "hello");
    assert_eq!(reply.status, 201, "{reply:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let sends = s.sends(GENERAL);
    let statuses: Vec<&Value> = sends.iter().map(|r| &r["status"]).collect();
    // Discord answers a send 200; the service's client gets 201.
    assert_eq!(statuses, [429, 200], "{sends:?}");
    assert_eq!(sends[0]["fault"], "sublimit_429");
    let apart = sends[1]["at_ms"].as_u64().unwrap() - sends[0]["at_ms"].as_u64().unwrap();
    assert!(apart >= 300, "sent again {apart} ms after the 429");
    assert_eq!(s.fake.created_messages(GENERAL).len(), 1);
}

#[test]
fn while_one_channels_sends_are_held_another_channels_send_does_not_wait() {
    let s = setup();
    // Both channels' buckets known, so the hash is shared and learned.
    assert_eq!(s.send(GENERAL, "first").status, 201);
    assert_eq!(s.send(QUIET, "first").status, 201);
    let hold = Duration::from_secs(2);
    s.sublimit(GENERAL, hold.as_secs_f64());
    std::thread::scope(|scope| {
        let held = scope.spawn(|| {
            let started = Instant::now();
            (s.send(GENERAL, "held"), started.elapsed())
        });
        s.wait_for_sublimit(GENERAL);
        let started = Instant::now();
        let other = s.send(QUIET, "not held");
        let waited = started.elapsed();
        assert_eq!(other.status, 201, "{other:?}");
        assert!(waited < hold / 2, "the other channel waited {waited:?}");
        let (reply, elapsed) = held.join().unwrap();
        assert_eq!(reply.status, 201, "{reply:?}");
        assert!(elapsed >= hold, "sent again after {elapsed:?}");
    });
}

#[test]
fn while_a_channels_sends_are_held_an_edit_in_its_bucket_goes_through() {
    let s = setup();
    // A send and an edit teach the service that they share one bucket.
    let id = s.send(GENERAL, "v1").json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(s.edit(GENERAL, &id, "v2").status, 200);
    let hold = Duration::from_secs(2);
    s.sublimit(GENERAL, hold.as_secs_f64());
    std::thread::scope(|scope| {
        let held = scope.spawn(|| s.send(GENERAL, "held"));
        s.wait_for_sublimit(GENERAL);
        let started = Instant::now();
        let edit = s.edit(GENERAL, &id, "v3");
        let waited = started.elapsed();
        assert_eq!(edit.status, 200, "{edit:?}");
        assert!(waited < hold / 2, "the edit waited {waited:?}");
        assert_eq!(held.join().unwrap().status, 201);
    });
}

#[test]
fn a_sub_limit_longer_than_the_wait_budget_is_429_at_once_and_holds_only_its_channel() {
    let s = setup();
    s.sublimit(GENERAL, 582.0);
    let started = Instant::now();
    let limited = s.send(GENERAL, "too soon");
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(limited.header("retry-after"), Some("582"));
    assert!(started.elapsed() < Duration::from_secs(2));
    // The channel is held here, without asking Discord again; the margin
    // the limiter adds to Discord's wait may round the answer up a second.
    let again = s.send(GENERAL, "still too soon");
    assert_eq!(again.status, 429, "{again:?}");
    let retry_after: u64 = again.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (582..=583).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(s.sends(GENERAL).len(), 1, "held back, not sent");
    let started = Instant::now();
    let other = s.send(QUIET, "elsewhere");
    assert_eq!(other.status, 201, "{other:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        s.service.wait_for_log("code 20028"),
        "the 429's code is logged"
    );
}

#[test]
fn shared_429s_do_not_count_as_invalid_requests() {
    let s = setup();
    for n in 0..3 {
        s.sublimit(GENERAL, 0.1);
        let reply = s.send(GENERAL, &format!("message {n}"));
        assert_eq!(reply.status, 201, "{reply:?}");
    }
    assert_eq!(
        metric(&s.service, "dbb_discord_429_total", &[("scope", "shared")]),
        3.0
    );
    assert_eq!(metric(&s.service, "dbb_invalid_requests_window", &[]), 0.0);
    assert_eq!(s.fake.stats()["invalid_requests"]["counted"], 0);
}
