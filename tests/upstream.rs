//! contract: API.md "Talking to Discord": headers sent, error mapping,
//! retries, timeouts and 429 handling, against the fake's injected faults.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::world::*;
use support::{Fake, Service};

fn setup(flags: &[&str]) -> (Fake, Service, String) {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, flags);
    let session = service.session(TOKEN);
    fake.reset();
    (fake, service, session)
}

fn channels(service: &Service, session: &str) -> support::Reply {
    service.get(&format!("/api/channels?guildId={GUILD}"), session)
}

#[test]
fn discord_calls_carry_the_bot_token_and_a_discordbot_user_agent() {
    let (fake, service, session) = setup(&[]);
    channels(&service, &session);
    let request = &fake.requests()[0];
    assert_eq!(request["authorization_scheme_ok"], true);
    assert_eq!(request["bot_id"], BOT_ID);
    let agent = request["user_agent"].as_str().unwrap();
    assert!(
        agent.starts_with("DiscordBot (https://") && agent.ends_with(')'),
        "{agent}"
    );
}

#[test]
fn a_discord_5xx_is_retried_once_for_a_get() {
    let (fake, service, session) = setup(&[]);
    fake.fault(json!({"kind": "status_500", "count": 1}));
    assert_eq!(channels(&service, &session).status, 200);
    assert_eq!(fake.targets().len(), 2);
}

#[test]
fn a_discord_5xx_twice_is_502() {
    let (fake, service, session) = setup(&[]);
    fake.fault(json!({"kind": "status_502", "count": 2}));
    let reply = channels(&service, &session);
    assert_eq!(reply.status, 502);
    assert_eq!(fake.targets().len(), 2, "retried once, not more");
}

#[test]
fn a_dropped_connection_is_retried_once() {
    let (fake, service, session) = setup(&[]);
    fake.fault(json!({"kind": "drop", "count": 1}));
    assert_eq!(channels(&service, &session).status, 200);
}

#[test]
fn a_connection_dropped_twice_is_502() {
    let (fake, service, session) = setup(&[]);
    fake.fault(json!({"kind": "drop", "count": 2}));
    assert_eq!(channels(&service, &session).status, 502);
}

#[test]
fn a_body_that_is_not_json_is_502() {
    let (fake, service, session) = setup(&[]);
    fake.fault(json!({"kind": "not_json", "count": 2}));
    let reply = channels(&service, &session);
    assert_eq!(reply.status, 502);
    assert!(reply.error().contains("not JSON"), "{}", reply.text);
}

#[test]
fn discord_hanging_past_the_upstream_timeout_is_504() {
    let (fake, service, session) = setup(&["--upstream-timeout", "500"]);
    fake.fault(json!({"kind": "hang", "count": 1, "ms": 5000}));
    let started = Instant::now();
    let reply = channels(&service, &session);
    assert_eq!(reply.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn discord_unreachable_is_502() {
    // Port 9 (discard) on loopback: nothing listens there in a test sandbox.
    let service = Service::start_at("http://127.0.0.1:9/api/v10", &[]);
    let reply = service.login(TOKEN);
    assert_eq!(reply.status, 502);
    assert!(reply.error().contains("unreachable"), "{}", reply.text);
}

#[test]
fn a_429_within_the_wait_budget_is_waited_out_and_retried() {
    let (fake, service, session) = setup(&[]);
    fake.fault(json!({"kind": "user_429", "count": 1, "retry_after": 0.4}));
    let started = Instant::now();
    assert_eq!(channels(&service, &session).status, 200);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(fake.targets().len(), 2);
}

#[test]
fn a_429_beyond_the_wait_budget_is_429_with_retry_after_rounded_up() {
    let (fake, service, session) = setup(&["--max-ratelimit-wait", "1000"]);
    fake.fault(json!({"kind": "user_429", "count": 1, "retry_after": 7.2}));
    let started = Instant::now();
    let reply = channels(&service, &session);
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("8"));
    assert!(started.elapsed() < Duration::from_secs(2), "did not wait");
    // The bucket stays blocked: the next call is refused without asking Discord.
    let reply = channels(&service, &session);
    assert_eq!(reply.status, 429);
    assert_eq!(fake.targets().len(), 1);
}

#[test]
fn a_global_429_holds_every_route_of_that_bot() {
    let (fake, service, session) = setup(&["--max-ratelimit-wait", "500"]);
    fake.fault(json!({"kind": "global_429", "count": 1, "retry_after": 3.0}));
    assert_eq!(channels(&service, &session).status, 429);
    let reply = service.get(&format!("/api/messages?channelId={GENERAL}"), &session);
    assert_eq!(reply.status, 429);
    assert_eq!(fake.targets().len(), 1);
}

#[test]
fn paging_waits_for_the_route_bucket_instead_of_drawing_429s() {
    let (fake, service, session) = setup(&[]);
    // 1000 messages = 10 pages against a fake allowing 5 per second per channel.
    let reply = service.get(
        &format!("/api/messages?channelId={GENERAL}&limit=1000"),
        &session,
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.ids().len(), 1000);
    assert_eq!(
        fake.stats()["by_status"]["429"],
        serde_json::Value::Null,
        "{}",
        fake.stats()
    );
}
