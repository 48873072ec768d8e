//! contract: API.md "Conventions" (JSON everywhere, routing before
//! authentication, 404/405/413, snowflake validation) and "CORS".

mod support;

use support::world::*;
use support::{Fake, Service};

fn setup(flags: &[&str]) -> (Fake, Service) {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, flags);
    (fake, service)
}

#[test]
fn errors_are_json_objects_with_an_error_string() {
    let (_fake, service) = setup(&[]);
    for reply in [
        service.request("GET", "/nope", &[], None),
        service.request("DELETE", "/api/guilds", &[], None),
        service.request("GET", "/api/guilds", &[], None),
        service.post_json("/api/auth/login", "{"),
    ] {
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{reply:?}"
        );
        assert!(!reply.error().is_empty(), "{reply:?}");
    }
}

#[test]
fn unknown_path_is_404_before_the_session_is_checked() {
    let (_fake, service) = setup(&[]);
    let reply = service.request("GET", "/api/unknown", &[], None);
    assert_eq!(reply.status, 404);
    assert_eq!(
        service.request("GET", "/api/guilds/", &[], None).status,
        404
    );
}

#[test]
fn wrong_method_is_405_with_allow_before_the_session_is_checked() {
    let (_fake, service) = setup(&[]);
    let reply = service.request("POST", "/api/guilds", &[], Some("{}"));
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, OPTIONS"));
    let reply = service.request("GET", "/api/auth/login", &[], None);
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST, OPTIONS"));
    let reply = service.request("PUT", "/healthz", &[], None);
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET"));
}

#[test]
fn body_over_64_kib_is_413() {
    let (fake, service) = setup(&[]);
    let body = format!(r#"{{"token": "{}"}}"#, "a".repeat(70 * 1024));
    let reply = service.post_json("/api/auth/login", &body);
    assert_eq!(reply.status, 413);
    assert!(fake.targets().is_empty());
}

#[test]
fn body_of_exactly_64_kib_is_read() {
    let (_fake, service) = setup(&[]);
    let mut body = String::from(r#"{"token": "x", "pad": ""#);
    body.push_str(&"a".repeat(64 * 1024 - body.len() - 2));
    body.push_str("\"}");
    assert_eq!(body.len(), 64 * 1024);
    assert_eq!(service.post_json("/api/auth/login", &body).status, 401);
}

#[test]
fn invalid_ids_are_400_and_never_reach_discord() {
    let (fake, service) = setup(&[]);
    let session = service.session(TOKEN);
    fake.reset();
    let attacks = [
        "..%2F..%2Fusers%2F%40me",
        "%2e%2e",
        "../",
        "1%3Fa%3Db",
        "1%23x",
        "1%2F2",
        "123456789012345678901",
        "18446744073709551616",
        "-1",
        "+1",
        "%201",
        "1e3",
        "abc",
    ];
    let templates = [
        "/api/members?guildId={}",
        "/api/members?guildId=1&after={}",
        "/api/channels?guildId={}",
        "/api/messages?channelId={}",
        "/api/messages?channelId=1&before={}",
        "/api/messages?channelId=1&after={}",
        "/api/messages?channelId=1&around={}",
    ];
    for template in templates {
        for attack in attacks {
            let path = template.replace("{}", attack);
            let reply = service.get(&path, &session);
            assert_eq!(reply.status, 400, "{path}: {}", reply.text);
        }
    }
    assert!(
        fake.targets().is_empty(),
        "reached Discord: {:?}",
        fake.targets()
    );
}

#[test]
fn the_largest_u64_is_a_valid_id() {
    let (fake, service) = setup(&[]);
    let session = service.session(TOKEN);
    let reply = service.get("/api/messages?channelId=18446744073709551615", &session);
    assert_eq!(reply.status, 404);
    assert!(
        fake.targets()
            .iter()
            .any(|t| t.contains("/channels/18446744073709551615/messages"))
    );
}

#[test]
fn cors_allows_any_origin_by_default_on_errors_too() {
    let (_fake, service) = setup(&[]);
    let reply = service.request(
        "GET",
        "/api/guilds",
        &[("Origin", "https://app.example")],
        None,
    );
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
}

#[test]
fn cors_echoes_a_listed_origin_with_vary() {
    let (_fake, service) = setup(&["--cors-origins", "https://a.example,https://b.example"]);
    let reply = service.request("GET", "/healthz", &[("Origin", "https://b.example")], None);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://b.example")
    );
    assert_eq!(reply.header("vary"), Some("Origin"));
}

#[test]
fn cors_gives_a_disallowed_origin_no_cors_headers() {
    let (_fake, service) = setup(&["--cors-origins", "https://a.example"]);
    let reply = service.request(
        "GET",
        "/healthz",
        &[("Origin", "https://evil.example")],
        None,
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("access-control-allow-origin"), None);
}

#[test]
fn every_answer_to_an_allowed_origin_exposes_the_headers_api_md_lists() {
    let (_fake, service) = setup(&[]);
    for path in ["/healthz", "/api/guilds"] {
        let reply = service.request("GET", path, &[("Origin", "https://app.example")], None);
        assert_eq!(
            reply.header("access-control-expose-headers"),
            Some("Retry-After, Idempotency-Key, Idempotent-Replayed"),
            "{path}"
        );
    }
}

#[test]
fn options_on_any_api_path_is_a_preflight_without_session() {
    let (_fake, service) = setup(&[]);
    // API.md: "`Access-Control-Allow-Methods` (the path's methods)".
    for (path, methods) in [
        ("/api/guilds", "GET, OPTIONS"),
        ("/api/auth/login", "POST, OPTIONS"),
        ("/api/messages", "GET, POST, PATCH, DELETE, OPTIONS"),
        ("/api/anything", "GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    ] {
        let reply = service.request(
            "OPTIONS",
            path,
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "GET"),
            ],
            None,
        );
        assert_eq!(reply.status, 204, "{path}");
        assert_eq!(reply.header("access-control-allow-methods"), Some(methods));
        let headers = reply.header("access-control-allow-headers").unwrap();
        // API.md: "at least `Authorization, Content-Type, Idempotency-Key,
        // Last-Event-ID, X-Audit-Log-Reason`".
        for needed in [
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "Last-Event-ID",
            "X-Audit-Log-Reason",
        ] {
            assert!(headers.contains(needed), "{needed} missing from {headers}");
        }
        assert!(reply.header("access-control-max-age").is_some());
        assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    }
}
