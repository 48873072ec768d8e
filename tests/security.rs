//! contract: API.md "Security" and "Logging": tokens never leave the service,
//! session IDs appear in logs only as a 6-character prefix.

mod support;

use serde_json::json;
use support::world::*;
use support::{Fake, Reply, Service};

/// Exercises every route, success and failure, and returns every reply.
fn exercise(fake: &Fake, service: &Service) -> Vec<Reply> {
    let mut replies = vec![service.login(TOKEN), service.login(&format!("Bot {TOKEN}"))];
    let session = replies[0].json()["sessionId"].as_str().unwrap().to_string();
    for path in [
        "/api/guilds".to_string(),
        "/api/members?limit=3".into(),
        "/api/channels".into(),
        format!("/api/messages?channelId={GENERAL}&limit=150"),
        format!("/api/messages?channelId={SECRET}"),
        "/api/messages?channelId=1".into(),
        "/api/messages?channelId=../x".into(),
    ] {
        replies.push(service.get(&path, &session));
    }
    let bot = format!("Bot {session}");
    let json_body = json!({"content": "hello"}).to_string();
    for (method, path, auth, body) in [
        (
            "POST",
            format!("/api/messages?channelId={GENERAL}"),
            session.as_str(),
            Some(json_body.as_str()),
        ),
        (
            "POST",
            format!("/api/messages?channelId={SECRET}"),
            session.as_str(),
            Some(json_body.as_str()),
        ),
        (
            "POST",
            format!("/api/messages?channelId={GENERAL}"),
            session.as_str(),
            Some("{"),
        ),
        (
            "PUT",
            format!("/api/reactions?channelId={GENERAL}&messageId=1&emoji=%F0%9F%91%8D"),
            session.as_str(),
            None,
        ),
        (
            "GET",
            "/api/discord/v10/users/@me".to_string(),
            bot.as_str(),
            None,
        ),
        (
            "POST",
            format!("/api/discord/v10/channels/{GENERAL}/messages"),
            bot.as_str(),
            Some(json_body.as_str()),
        ),
        (
            "GET",
            "/api/discord/v10/channels/1/../2".to_string(),
            bot.as_str(),
            None,
        ),
    ] {
        replies.push(service.request(
            method,
            &path,
            &[
                ("Authorization", auth),
                ("Content-Type", "application/json"),
            ],
            body,
        ));
    }
    fake.fault(json!({"kind": "status_500", "count": 2}));
    replies.push(service.get("/api/channels", &session));
    fake.fault(json!({"kind": "user_429", "count": 1, "retry_after": 60.0}));
    replies.push(service.get("/api/channels", &session));
    replies.push(service.login("MTA5.bad-token.Xx_x"));
    fake.revoke(TOKEN);
    replies.push(service.get("/api/guilds", &session));
    replies.push(service.logout(&session));
    replies
}

#[test]
fn a_bot_token_never_appears_in_a_response_header_body_or_log() {
    let fake = Fake::start(&standard());
    let service = Service::start(
        &fake,
        &["--log-level", "trace", "--max-ratelimit-wait", "100"],
    );
    let replies = exercise(&fake, &service);
    let secret = TOKEN.split('.').nth(1).unwrap();
    for reply in &replies {
        assert!(
            !reply.text.contains(secret),
            "token in body: {}",
            reply.text
        );
        for (name, value) in &reply.headers {
            assert!(!value.contains(secret), "token in header {name}");
        }
    }
    assert!(
        service.wait_for_log("POST /api/auth/logout"),
        "logging works"
    );
    let logs = service.logs();
    assert!(!logs.contains(secret), "token in logs:\n{logs}");
    assert!(
        !logs.contains("bad-token"),
        "rejected token in logs:\n{logs}"
    );
}

#[test]
fn logs_show_a_session_id_only_as_its_first_6_characters() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &["--log-level", "trace"]);
    let session = service.session(TOKEN);
    service.get("/api/guilds", &session);
    service.get("/api/guilds", &format!("Bearer {session}"));
    service.logout(&session);
    assert!(service.wait_for_log("logged out"));
    let logs = service.logs();
    assert!(
        !logs.contains(&session[..7]),
        "more than 6 characters logged:\n{logs}"
    );
    assert!(
        logs.contains(&format!("session={}", &session[..6])),
        "{logs}"
    );
}

#[test]
fn one_log_line_per_request_with_method_path_query_status_and_duration() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let session = service.session(TOKEN);
    service.get("/api/members?limit=2", &session);
    assert!(service.wait_for_log("GET /api/members?limit=2 200"));
    let line = service
        .logs()
        .lines()
        .find(|l| l.contains("GET /api/members?limit=2 200"))
        .unwrap()
        .to_string();
    assert!(line.contains("[INFO]"), "{line}");
    assert!(line.contains("ms"), "{line}");
    assert!(
        line.contains(&format!("session={}", &session[..6])),
        "{line}"
    );
}

#[test]
fn a_client_cannot_forge_log_lines() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let reply = support::raw_exchange(
        &service.addr,
        b"GET /x%0d%0a\x1b[31mFAKE HTTP/1.1\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(3),
    );
    assert!(reply.starts_with("HTTP/1.1 4"), "{reply}");
    assert!(service.wait_for_log(" 400 "), "{}", service.logs());
    assert!(!service.logs().contains('\x1b'));
}

#[test]
fn json_logs_are_one_object_per_line_with_the_request_fields() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &["--log-format", "json"]);
    let session = service.session(TOKEN);
    service.get("/api/members?limit=2", &session);
    assert!(service.wait_for_log("GET /api/members?limit=2 200"));
    let lines: Vec<serde_json::Value> = service
        .logs()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let request = lines
        .iter()
        .find(|l| l["target"] == "/api/members?limit=2")
        .expect("the request line");
    assert_eq!(request["level"], "INFO");
    assert_eq!(request["method"], "GET");
    assert_eq!(request["status"], 200);
    assert!(request["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(request["session"], &session[..6]);
    assert!(request["time"].as_str().unwrap().ends_with('Z'));
    let created = format!("session {} created for bot {BOT_ID}", &session[..6]);
    assert!(
        lines
            .iter()
            .any(|l| l["message"].as_str().unwrap().starts_with(&created)),
        "the session line is an object too"
    );
}

#[test]
fn json_logs_never_carry_a_token_or_a_whole_session_id() {
    let fake = Fake::start(&standard());
    let service = Service::start(
        &fake,
        &[
            "--log-format",
            "json",
            "--log-level",
            "trace",
            "--max-ratelimit-wait",
            "100",
        ],
    );
    let replies = exercise(&fake, &service);
    let session = replies[0].json()["sessionId"].as_str().unwrap().to_string();
    assert!(service.wait_for_log("/api/auth/logout"), "logging works");
    let logs = service.logs();
    assert!(
        !logs.contains(TOKEN.split('.').nth(1).unwrap()),
        "token in logs"
    );
    assert!(!logs.contains("bad-token"), "rejected token in logs");
    assert!(!logs.contains(&session[..7]), "session ID in logs");
}
