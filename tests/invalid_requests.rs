//! contract: API.md, "Talking to Discord": "Discord bans an IP after 10,000
//! invalid requests (401, 403, 429 other than `shared`) in 10 minutes: the
//! service counts them, answers repeated identical refusals itself for a
//! while, and stops logging in new tokens before the limit"; and a 429 is
//! waited out by "the `Retry-After` header or `retry_after` field", a
//! Cloudflare 429 (HTML, `Retry-After` only) for every bot of the host.
//! Issue #17, parts 1 and 2. The fake enforces the ban as Discord does
//! (scaled down with `--invalid-limit`), so these tests show none happens.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::world::*;
use support::{Fake, Service};

/// Discord's ban, scaled down: 10 invalid answers ban the fake's caller.
const BAN_AT_10: &[&str] = &["--invalid-limit", "10"];

fn members_calls(fake: &Fake) -> usize {
    fake.targets()
        .iter()
        .filter(|t| t.contains("/members"))
        .count()
}

fn bans(fake: &Fake) -> u64 {
    fake.stats()["invalid_requests"]["bans"].as_u64().unwrap()
}

#[test]
fn a_repeated_403_is_answered_from_the_cache_with_discords_code() {
    let fake = Fake::start_with(&standard(), BAN_AT_10);
    let service = Service::start(&fake, &["--invalid-request-threshold", "5"]);
    let session = service.session(MULTI_TOKEN);
    let path = format!("/api/members?guildId={GUILD}");
    let first = service.get(&path, &session);
    assert_eq!(first.status, 403, "{}", first.text);
    assert_eq!(first.json()["code"], 50001);
    assert!(first.json().get("cached").is_none(), "{}", first.text);
    for _ in 0..19 {
        let again = service.get(&path, &session);
        assert_eq!(again.status, 403, "{}", again.text);
        assert_eq!(again.json()["code"], 50001);
        assert_eq!(again.json()["cached"], true);
        assert!(again.error().contains("Server Members"), "{}", again.text);
    }
    assert_eq!(
        members_calls(&fake),
        1,
        "only the first 403 reached Discord"
    );
    assert_eq!(bans(&fake), 0);
}

#[test]
fn the_cache_is_per_route_and_resource_so_other_calls_still_go_out() {
    let fake = Fake::start_with(&standard(), BAN_AT_10);
    let service = Service::start(&fake, &[]);
    let session = service.session(MULTI_TOKEN);
    let secret = format!("/api/messages?channelId={SECRET}");
    assert_eq!(service.get(&secret, &session).status, 403);
    let general = format!("/api/messages?channelId={GENERAL}");
    assert_eq!(service.get(&general, &session).status, 200);
    assert_eq!(service.get(&secret, &session).json()["cached"], true);
    let count = |needle: &str| fake.targets().iter().filter(|t| t.contains(needle)).count();
    assert_eq!(count(SECRET), 1);
    assert_eq!(count(GENERAL), 1);
}

#[test]
fn a_cached_refusal_expires_so_a_permission_granted_works_again() {
    let fake = Fake::start_with(&standard(), BAN_AT_10);
    let service = Service::start(&fake, &["--refusal-cache-ms", "300"]);
    let session = service.session(MULTI_TOKEN);
    let path = format!("/api/members?guildId={GUILD}");
    assert_eq!(service.get(&path, &session).status, 403);
    assert_eq!(service.get(&path, &session).json()["cached"], true);
    std::thread::sleep(Duration::from_millis(400));
    let asked_again = service.get(&path, &session);
    assert_eq!(asked_again.status, 403);
    assert!(asked_again.json().get("cached").is_none());
    assert_eq!(members_calls(&fake), 2);
}

#[test]
fn past_the_threshold_calls_refused_before_are_held_back() {
    let fake = Fake::start_with(&standard(), BAN_AT_10);
    let service = Service::start(
        &fake,
        &[
            "--invalid-request-threshold",
            "3",
            "--refusal-cache-ms",
            "200",
        ],
    );
    let session = service.session(MULTI_TOKEN);
    let refused = [
        format!("/api/members?guildId={GUILD}"),
        format!("/api/messages?channelId={SECRET}"),
        format!("/api/members?guildId={OTHER_GUILD}"),
    ];
    for path in &refused {
        assert_eq!(service.get(path, &session).status, 403, "{path}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = fake.targets().len();
    for path in &refused {
        let held = service.get(path, &session);
        assert_eq!(held.status, 503, "{path}: {}", held.text);
        assert!(held.error().contains("invalid requests"), "{}", held.text);
    }
    assert_eq!(fake.targets().len(), before, "held back, not sent");
    // A call Discord answers normally is not held back.
    let channels = service.get(&format!("/api/channels?guildId={GUILD}"), &session);
    assert_eq!(channels.status, 200, "{}", channels.text);
    assert_eq!(bans(&fake), 0);
}

#[test]
fn a_client_hammering_forbidden_routes_never_gets_the_host_banned() {
    let fake = Fake::start_with(&standard(), BAN_AT_10);
    let service = Service::start(&fake, &["--invalid-request-threshold", "5"]);
    let session = service.session(MULTI_TOKEN);
    let paths = [
        format!("/api/members?guildId={GUILD}"),
        format!("/api/members?guildId={OTHER_GUILD}"),
        format!("/api/messages?channelId={SECRET}"),
    ];
    for round in 0..50 {
        for path in &paths {
            let reply = service.get(path, &session);
            assert!(
                [403, 503].contains(&reply.status),
                "round {round} {path}: {}",
                reply.text
            );
        }
    }
    assert_eq!(bans(&fake), 0);
    assert!(
        fake.stats()["invalid_requests"]["counted"]
            .as_u64()
            .unwrap()
            <= 5,
        "{}",
        fake.stats()
    );
    // The rest of the API works.
    let session = service.session(TOKEN);
    assert_eq!(service.get("/api/guilds", &session).status, 200);
}

#[test]
fn a_warning_and_the_threshold_metric_tell_the_operator_before_the_limit() {
    let fake = Fake::start_with(&standard(), BAN_AT_10);
    let service = Service::start(&fake, &["--invalid-request-threshold", "4"]);
    let session = service.session(MULTI_TOKEN);
    assert_eq!(
        service
            .get(&format!("/api/members?guildId={GUILD}"), &session)
            .status,
        403
    );
    assert_eq!(
        service
            .get(&format!("/api/messages?channelId={SECRET}"), &session)
            .status,
        403
    );
    assert!(
        service.wait_for_log("invalid Discord requests"),
        "no warning at half the threshold"
    );
    let scrape = service.request("GET", "/metrics", &[], None).text;
    assert!(
        scrape.contains("dbb_invalid_requests_threshold 4"),
        "{scrape}"
    );
    assert!(scrape.contains("dbb_invalid_requests_window 2"), "{scrape}");
}

#[test]
fn a_cloudflare_429_stops_every_bot_of_the_host_until_its_retry_after() {
    let fake = Fake::start_with(&standard(), BAN_AT_10);
    let service = Service::start(&fake, &[]);
    let alpha = service.session(TOKEN);
    let multi = service.session(MULTI_TOKEN);
    fake.fault(json!({"kind": "cloudflare_429", "retry_after": 30}));
    let limited = service.get("/api/guilds", &alpha);
    assert_eq!(limited.status, 429, "{}", limited.text);
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (29..=31).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert!(limited.error().contains("Cloudflare"), "{}", limited.text);
    let before = fake.targets().len();
    let other_bot = service.get(&format!("/api/channels?guildId={GUILD}"), &multi);
    assert_eq!(other_bot.status, 429, "{}", other_bot.text);
    assert!(other_bot.header("retry-after").is_some());
    assert_eq!(
        fake.targets().len(),
        before,
        "no bot sends while the host is stopped"
    );
}

#[test]
fn a_short_cloudflare_429_is_waited_out_within_the_budget() {
    let fake = Fake::start_with(&standard(), BAN_AT_10);
    let service = Service::start(&fake, &[]);
    let session = service.session(TOKEN);
    fake.fault(json!({"kind": "cloudflare_429", "retry_after": 1}));
    let started = Instant::now();
    let reply = service.get("/api/guilds", &session);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(started.elapsed() >= Duration::from_millis(900));
}
