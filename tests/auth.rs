//! contract: API.md "POST /api/auth/login", "POST /api/auth/logout",
//! "Conventions" (sessions), and issue #2 item 4 (sessions).

mod support;

use std::time::Duration;

use serde_json::json;
use support::world::*;
use support::{Fake, Service};

fn setup(flags: &[&str]) -> (Fake, Service) {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, flags);
    (fake, service)
}

#[test]
fn login_returns_200_with_session_id_message_and_bot() {
    let (_fake, service) = setup(&[]);
    let reply = service.login(TOKEN);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["message"], "Logged in successfully");
    assert_eq!(body["bot"], json!({"id": BOT_ID, "username": "TestBot"}));
    let id = body["sessionId"].as_str().unwrap();
    assert!(id.len() >= 21, "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    );
}

#[test]
fn login_checks_the_token_with_users_me() {
    let (fake, service) = setup(&[]);
    service.session(TOKEN);
    assert_eq!(fake.targets(), vec!["/api/v10/users/@me"]);
}

#[test]
fn login_strips_a_leading_bot_prefix() {
    let (_fake, service) = setup(&[]);
    assert_eq!(service.login(&format!("Bot {TOKEN}")).status, 200);
}

#[test]
fn login_refuses_every_malformed_body_with_400() {
    let (fake, service) = setup(&[]);
    let cases = [
        ("not json", "not JSON"),
        ("{}", "token missing"),
        (r#"{"token": 5}"#, "token not a string"),
        (r#"{"token": null}"#, "token null"),
        (r#"{"token": ""}"#, "token empty"),
        (r#"{"token": "Bot "}"#, "token only the prefix"),
        (r#"{"token": "abc def"}"#, "token with a space"),
        (r#"{"token": "abc\tdef"}"#, "token with a tab"),
        (r#"{"token": "abc\u0000def"}"#, "token with a NUL"),
        (r#"{"token": "abc\ndef"}"#, "token with a newline"),
        (r#"{"token": "é"}"#, "token with a non-ASCII letter"),
        (r#"{"token": "Bot 😀"}"#, "token with an emoji"),
        ("[1,2]", "body not an object"),
    ];
    for (body, what) in cases {
        let reply = service.post_json("/api/auth/login", body);
        assert_eq!(reply.status, 400, "{what}: {}", reply.text);
        assert!(!reply.error().is_empty(), "{what}");
    }
    assert!(
        fake.targets().is_empty(),
        "no malformed login reached Discord"
    );
}

#[test]
fn login_with_a_token_discord_rejects_is_401() {
    let (_fake, service) = setup(&[]);
    let reply = service.login("MTA5.unknown-token.Nn_n");
    assert_eq!(reply.status, 401);
    assert!(reply.error().contains("rejected"), "{}", reply.text);
}

#[test]
fn login_beyond_max_sessions_is_503() {
    let (_fake, service) = setup(&["--max-sessions", "2"]);
    service.session(TOKEN);
    service.session(TOKEN);
    let reply = service.login(TOKEN);
    assert_eq!(reply.status, 503);
    assert!(reply.error().contains("session limit"), "{}", reply.text);
}

#[test]
fn several_sessions_may_share_one_bot_token() {
    let (_fake, service) = setup(&[]);
    let a = service.session(TOKEN);
    let b = service.session(TOKEN);
    assert_ne!(a, b);
    assert_eq!(service.get("/api/guilds", &a).status, 200);
    assert_eq!(service.get("/api/guilds", &b).status, 200);
}

#[test]
fn logout_answers_200_and_the_session_is_gone_at_once() {
    let (_fake, service) = setup(&[]);
    let session = service.session(TOKEN);
    let reply = service.logout(&session);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"message": "Logged out successfully"}));
    assert_eq!(service.get("/api/guilds", &session).status, 401);
}

#[test]
fn logout_without_a_valid_session_is_401() {
    let (_fake, service) = setup(&[]);
    let reply = service.request("POST", "/api/auth/logout", &[], None);
    assert_eq!(reply.status, 401);
    let reply = service.request(
        "POST",
        "/api/auth/logout",
        &[("Authorization", "x".repeat(21).as_str())],
        None,
    );
    assert_eq!(reply.status, 401);
}

#[test]
fn bearer_prefix_is_accepted() {
    let (_fake, service) = setup(&[]);
    let session = service.session(TOKEN);
    assert_eq!(
        service
            .get("/api/guilds", &format!("Bearer {session}"))
            .status,
        200
    );
    assert_eq!(
        service
            .get("/api/guilds", &format!("bearer {session}"))
            .status,
        200
    );
}

#[test]
fn missing_or_unknown_session_is_401() {
    let (fake, service) = setup(&[]);
    assert_eq!(service.request("GET", "/api/guilds", &[], None).status, 401);
    assert_eq!(
        service.get("/api/guilds", "AAAAAAAAAAAAAAAAAAAAA").status,
        401
    );
    assert_eq!(service.get("/api/guilds", "short").status, 401);
    assert_eq!(
        service.get("/api/guilds", TOKEN).status,
        401,
        "a bot token is not a session"
    );
    assert!(fake.targets().is_empty());
}

#[test]
fn session_idle_past_the_timeout_expires_and_is_logged() {
    let (_fake, service) = setup(&["--session-idle-timeout", "1"]);
    let session = service.session(TOKEN);
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(service.get("/api/guilds", &session).status, 401);
    assert!(service.wait_for_log(&format!(
        "session {} expired for bot {BOT_ID} (TestBot)",
        &session[..6]
    )));
}

#[test]
fn use_keeps_a_session_alive() {
    let (_fake, service) = setup(&["--session-idle-timeout", "1"]);
    let session = service.session(TOKEN);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(service.get("/api/guilds", &session).status, 200);
    }
}

#[test]
fn token_rejected_by_discord_ends_every_session_of_that_bot() {
    let (fake, service) = setup(&[]);
    let a = service.session(TOKEN);
    let b = service.session(TOKEN);
    let other = service.session(MULTI_TOKEN);
    fake.revoke(TOKEN);
    let reply = service.get("/api/guilds", &a);
    assert_eq!(reply.status, 401);
    assert!(reply.error().contains("log in again"), "{}", reply.text);
    let before = fake.targets().len();
    assert_eq!(service.get("/api/guilds", &b).status, 401);
    assert_eq!(
        fake.targets().len(),
        before,
        "a rejected token is not sent again"
    );
    assert_eq!(service.get("/api/guilds", &other).status, 200);
}

#[test]
fn session_events_are_logged_with_bot_id_and_name() {
    let (_fake, service) = setup(&[]);
    let session = service.session(TOKEN);
    service.logout(&session);
    let prefix = &session[..6];
    assert!(service.wait_for_log(&format!(
        "session {prefix} created for bot {BOT_ID} (TestBot)"
    )));
    assert!(service.wait_for_log(&format!(
        "session {prefix} logged out for bot {BOT_ID} (TestBot)"
    )));
}

#[test]
fn logout_also_ends_a_request_still_waiting_for_its_turn() {
    // --workers 2: one request of a bot in progress at a time.
    let (fake, service) = setup(&["--workers", "2"]);
    let session = service.session(TOKEN);
    fake.fault(serde_json::json!({"kind": "latency", "count": 1, "ms": 1500}));
    std::thread::scope(|scope| {
        let slow = scope.spawn(|| service.get("/api/guilds", &session).status);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let waiting = scope.spawn(|| service.get("/api/guilds", &session));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let out = service.logout(&session);
        assert_eq!(out.status, 200, "{}", out.text);
        assert_eq!(slow.join().unwrap(), 200, "already with Discord");
        let waited = waiting.join().unwrap();
        assert_eq!(waited.status, 401, "{}", waited.text);
    });
}
