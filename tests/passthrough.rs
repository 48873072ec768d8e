//! contract: API.md "Discord passthrough", `/api/discord/v10/<path>`,
//! against the real binary and the fake Discord, one behaviour per test.

mod support;

use serde_json::{Value, json};
use support::Reply;
use support::world::*;

type Setup = support::Logged;

fn setup(flags: &[&str]) -> Setup {
    Setup::start(&standard(), &[], flags)
}

impl Setup {
    /// A request as a Discord library sends it: `Bot <token>`, with the
    /// session as the token.
    fn discord(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let path = format!("/api/discord/v10{path}");
        self.request_as(
            &format!("Bot {}", self.session),
            method,
            &path,
            headers,
            body,
        )
    }

    fn reached_discord(&self) -> usize {
        self.fake.requests().len()
    }
}

#[test]
fn a_read_comes_back_as_discord_answered_it_with_its_rate_limit_headers() {
    let s = setup(&[]);
    let reply = s.discord(
        "GET",
        &format!("/channels/{GENERAL}/messages?limit=2"),
        &[],
        None,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json().as_array().unwrap().len(), 2);
    assert!(reply.header("x-ratelimit-bucket").is_some(), "{reply:?}");
    assert!(reply.header("x-ratelimit-remaining").is_some());
    assert_eq!(
        s.fake.requests()[0]["target"],
        format!("/api/v10/channels/{GENERAL}/messages?limit=2")
    );
}

#[test]
fn a_session_is_accepted_bare_bearer_or_as_a_bot_token() {
    let s = setup(&[]);
    let path = "/api/discord/v10/users/@me";
    for auth in [
        s.session.clone(),
        format!("Bearer {}", s.session),
        format!("Bot {}", s.session),
    ] {
        let reply = s
            .service
            .request("GET", path, &[("Authorization", &auth)], None);
        assert_eq!(reply.status, 200, "{auth}: {reply:?}");
        assert_eq!(reply.json()["id"], BOT_ID);
    }
}

#[test]
fn discords_refusal_comes_back_unchanged() {
    let s = setup(&[]);
    let reply = s.discord("GET", "/channels/123/messages", &[], None);
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(
        reply.json(),
        json!({"message": "Unknown Channel", "code": 10003})
    );
}

#[test]
fn a_message_sent_through_it_gets_a_nonce_and_the_default_allowed_mentions() {
    let s = setup(&[]);
    let reply = s.discord(
        "POST",
        &format!("/channels/{GENERAL}/messages"),
        &[],
        Some(&json!({"content": "via a library"})),
    );
    assert_eq!(reply.status, 200, "Discord's own status: {reply:?}");
    assert!(reply.header("idempotency-key").is_some());
    let created = s.fake.created_messages(GENERAL);
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["enforce_nonce"], true);
    assert!(created[0]["nonce"].is_string());
    assert_eq!(created[0]["allowed_mentions"], json!({"parse": ["users"]}));
}

#[test]
fn a_libraries_own_nonce_is_kept_as_sent() {
    let s = setup(&[]);
    let body = json!({"content": "hi", "nonce": "1234567890", "enforce_nonce": true});
    let reply = s.discord(
        "POST",
        &format!("/channels/{GENERAL}/messages"),
        &[],
        Some(&body),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(s.fake.created_messages(GENERAL)[0]["nonce"], "1234567890");
}

#[test]
fn an_idempotency_key_replays_through_it_too() {
    let s = setup(&[]);
    let path = format!("/channels/{GENERAL}/messages");
    let body = json!({"content": "once"});
    let first = s.discord("POST", &path, &[("Idempotency-Key", "pt-1")], Some(&body));
    let again = s.discord("POST", &path, &[("Idempotency-Key", "pt-1")], Some(&body));
    assert_eq!(first.status, 200);
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(s.fake.created_messages(GENERAL).len(), 1);
}

#[test]
fn a_reaction_goes_through_with_its_emoji_encoded_once() {
    let s = setup(&[]);
    let sent = s.discord(
        "POST",
        &format!("/channels/{GENERAL}/messages"),
        &[],
        Some(&json!({"content": "x"})),
    );
    let id = sent.json()["id"].as_str().unwrap().to_string();
    let reply = s.discord(
        "PUT",
        &format!("/channels/{GENERAL}/messages/{id}/reactions/%F0%9F%91%8D/@me"),
        &[],
        None,
    );
    assert_eq!(reply.status, 204, "{reply:?}");
    let put = s.fake.requests_to("PUT", "/reactions/");
    assert!(
        put[0]["target"]
            .as_str()
            .unwrap()
            .ends_with("/reactions/%F0%9F%91%8D/@me")
    );
}

#[test]
fn hostile_paths_are_refused_and_reach_no_one() {
    let s = setup(&[]);
    let hostile = [
        format!("/channels/{GENERAL}/../../guilds/{GUILD}/channels"),
        format!("/channels/{GENERAL}/%2e%2e/messages"),
        format!("/channels/{GENERAL}%2Fmessages"),
        format!("/channels/{GENERAL}/messages%5C"),
        format!("/channels/{GENERAL}/messages%00"),
        format!("/channels//{GENERAL}/messages"),
        format!("/channels/{GENERAL}/messages/"),
        "/channels/é/messages".to_string(),
        "/USERS/@me".to_string(),
        "/users/@ME".to_string(),
        format!("/channels/{GENERAL}/messages?limit=2&evil=1"),
        format!("/channels/{GENERAL}/messages?limit=abc"),
        format!("/channels/{GENERAL}/messages?limit=2%26evil%3D1"),
    ];
    for path in &hostile {
        let reply = s.discord("GET", path, &[], None);
        assert!(
            reply.status == 400 || reply.status == 404,
            "{path}: {reply:?}"
        );
        assert!(
            reply.json()["message"].is_string(),
            "{path}: Discord's shape"
        );
    }
    assert_eq!(s.reached_discord(), 0, "{:?}", s.fake.targets());
}

#[test]
fn never_served_routes_are_404_not_an_allowed_discord_route() {
    let s = setup(&["--discord-routes", "read,messaging,moderation,admin"]);
    for (method, path) in [
        ("PATCH", "/applications/@me"),
        ("GET", "/gateway/bot"),
        ("PATCH", "/users/@me"),
        ("POST", "/webhooks/1/abc"),
        ("POST", "/interactions/1/abc/callback"),
        ("DELETE", "/users/@me/guilds/1"),
        ("GET", "/oauth2/applications/@me"),
    ] {
        let reply = s.discord(method, path, &[], None);
        assert_eq!(reply.status, 404, "{method} {path}: {reply:?}");
        assert_eq!(reply.error(), "not an allowed Discord route");
    }
    assert_eq!(s.reached_discord(), 0);
}

#[test]
fn a_route_of_a_disabled_group_is_403_naming_the_group() {
    let s = setup(&[]);
    let reply = s.discord("PUT", &format!("/guilds/{GUILD}/bans/1"), &[], None);
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(reply.error().contains("`moderation`"), "{reply:?}");
    let none = setup(&["--discord-routes", "none"]);
    let reply = none.discord("GET", "/users/@me", &[], None);
    assert_eq!(reply.status, 403);
    assert!(reply.error().contains("`read`"));
    assert_eq!(s.reached_discord() + none.reached_discord(), 0);
}

#[test]
fn routing_comes_before_the_session() {
    let s = setup(&[]);
    let reply = s
        .service
        .request("PATCH", "/api/discord/v10/applications/@me", &[], None);
    assert_eq!(reply.status, 404);
    let reply = s
        .service
        .request("GET", "/api/discord/v10/users/@me", &[], None);
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["code"], 0);
    assert!(reply.json()["message"].is_string());
}

#[test]
fn the_clients_host_cookie_and_authorization_never_reach_discord() {
    let s = setup(&[]);
    let reply = s.discord(
        "GET",
        "/users/@me",
        &[
            ("Cookie", "secret=1"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Custom", "1"),
        ],
        None,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = &s.fake.requests()[0];
    let headers: Vec<&str> = seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    for absent in ["cookie", "x-forwarded-for", "x-custom"] {
        assert!(
            !headers.contains(&absent),
            "{absent} reached Discord: {headers:?}"
        );
    }
    assert_eq!(seen["bot_id"], BOT_ID, "the bot's token, not the session");
    assert_eq!(seen["authorization_scheme_ok"], true);
}

#[test]
fn a_wrong_method_under_the_passthrough_is_405() {
    let s = setup(&[]);
    let reply = s.discord("HEAD", "/users/@me", &[], None);
    assert_eq!(reply.status, 405);
    assert_eq!(
        reply.header("allow"),
        Some("GET, POST, PUT, PATCH, DELETE, OPTIONS")
    );
}

#[test]
fn a_429_made_by_the_service_has_discords_shape() {
    let s = setup(&["--client-rate-limit", "1", "--client-burst", "1"]);
    let mut limited = None;
    for _ in 0..5 {
        let reply = s.discord("GET", "/users/@me", &[], None);
        if reply.status == 429 {
            limited = Some(reply);
            break;
        }
    }
    let reply = limited.expect("the client limit answers 429");
    assert!(reply.header("retry-after").is_some());
    let body = reply.json();
    assert!(body["retry_after"].as_f64().unwrap() > 0.0, "{body}");
    assert_eq!(body["global"], false);
    assert!(body["message"].is_string());
}

#[test]
fn a_declared_query_parameter_is_validated_and_sent_canonically() {
    let s = setup(&[]);
    let reply = s.discord(
        "GET",
        &format!("/guilds/{GUILD}/members?limit=5&after=0"),
        &[],
        None,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let target = s.fake.requests()[0]["target"].as_str().unwrap().to_string();
    assert!(
        target.contains("limit=5") && target.contains("after=0"),
        "{target}"
    );
    let bad = s.discord(
        "GET",
        &format!("/guilds/{GUILD}/members?limit=1001"),
        &[],
        None,
    );
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_eq!(s.fake.requests().len(), 1);
}

#[test]
fn an_audit_log_reason_a_library_encoded_is_passed_as_sent() {
    let s = setup(&[]);
    let sent = s.discord(
        "POST",
        &format!("/channels/{GENERAL}/messages"),
        &[],
        Some(&json!({"content": "x"})),
    );
    let id = sent.json()["id"].as_str().unwrap().to_string();
    let encoded = "spam%20%C2%ABlink%C2%BB";
    let reply = s.discord(
        "DELETE",
        &format!("/channels/{GENERAL}/messages/{id}"),
        &[("X-Audit-Log-Reason", encoded)],
        None,
    );
    assert_eq!(reply.status, 204, "{reply:?}");
    let delete = &s.fake.requests_to("DELETE", &id)[0];
    assert_eq!(delete["audit_log_reason"], encoded);
    assert_eq!(delete["audit_log_reason_decoded"], "spam «link»");
}

#[test]
fn an_upload_goes_through_with_the_services_nonce_in_its_payload() {
    let s = setup(&[]);
    let boundary = "pt-upload-1";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"payload_json\"\r\n\
         Content-Type: application/json\r\n\r\n{{\"content\": \"with a file\"}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"files[0]\"; filename=\"a.txt\"\r\n\
         Content-Type: text/plain\r\n\r\nhello file\r\n--{boundary}--\r\n"
    );
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let auth = format!("Bot {}", s.session);
    let reply = s.service.request(
        "POST",
        &format!("/api/discord/v10/channels/{GENERAL}/messages"),
        &[("Authorization", &auth), ("Content-Type", &content_type)],
        Some(&body),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let created = s.fake.created_messages(GENERAL);
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["attachments"][0]["size"], 10);
    assert_eq!(created[0]["enforce_nonce"], true);
    assert_eq!(created[0]["allowed_mentions"], json!({"parse": ["users"]}));
}

#[test]
fn an_upload_to_a_route_that_takes_none_is_415() {
    let s = setup(&[]);
    let auth = format!("Bot {}", s.session);
    let reply = s.service.request(
        "POST",
        &format!("/api/discord/v10/channels/{GENERAL}/typing"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "multipart/form-data; boundary=x"),
        ],
        Some("--x--\r\n"),
    );
    assert!(matches!(reply.status, 400 | 415), "{reply:?}");
    assert_eq!(s.reached_discord(), 0);
}

#[test]
fn a_send_that_fails_still_names_its_key() {
    let s = setup(&["--upstream-timeout", "400"]);
    s.fake.fault(
        json!({"kind": "write_then_hang", "ms": 1500, "count": 2, "path_contains": "/messages"}),
    );
    let reply = s.discord(
        "POST",
        &format!("/channels/{GENERAL}/messages"),
        &[],
        Some(&json!({"content": "slow"})),
    );
    assert_eq!(reply.status, 504, "{reply:?}");
    assert_eq!(reply.json()["retrySafe"], true);
    let key = reply
        .header("idempotency-key")
        .expect("the key to retry with")
        .to_string();
    let retry = s.discord(
        "POST",
        &format!("/channels/{GENERAL}/messages"),
        &[("Idempotency-Key", &key)],
        Some(&json!({"content": "slow"})),
    );
    assert_eq!(retry.status, 200, "{retry:?}");
    assert_eq!(s.fake.created_messages(GENERAL).len(), 1);
}

#[test]
fn a_forum_posts_starter_message_gets_the_default_allowed_mentions() {
    let s = setup(&[]);
    let body = json!({"name": "a thread", "message": {"content": "@everyone look"}});
    let _ = s.discord(
        "POST",
        &format!("/channels/{GENERAL}/threads"),
        &[],
        Some(&body),
    );
    let sent = &s.fake.requests_to("POST", "/threads")[0];
    let forwarded: Value = serde_json::from_str(sent["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        forwarded["message"]["allowed_mentions"],
        json!({"parse": ["users"]})
    );
    assert!(forwarded.get("allowed_mentions").is_none());
}

#[test]
fn webhook_and_interaction_tokens_in_a_path_are_not_logged() {
    let s = setup(&[]);
    for path in [
        "/webhooks/1/w3bh00k-s3cr3t",
        "/interactions/1/int3r-s3cr3t/callback",
    ] {
        let reply = s.discord("POST", path, &[], Some(&json!({})));
        assert_eq!(reply.status, 404, "{path}: {reply:?}");
    }
    assert!(
        s.service
            .wait_for_log("/api/discord/v10/interactions/1/<token>/callback")
    );
    let logs = s.service.logs();
    assert!(!logs.contains("s3cr3t"), "{logs}");
}
