//! contract: issue #5, "Abuse protection": a token bucket per client IP and
//! per session (`--client-rate-limit`, `--client-burst`) answers 429 with
//! `Retry-After`; `X-Forwarded-For` counts only from `--trusted-proxies`.

mod support;

use support::world::*;
use support::{Fake, Reply, Service};

/// One request a second, three at once.
const SLOW: &[&str] = &["--client-rate-limit", "1", "--client-burst", "3"];

fn guilds_from(service: &Service, session: &str, forwarded_for: Option<&str>) -> Reply {
    let mut headers = vec![("Authorization", session)];
    if let Some(address) = forwarded_for {
        headers.push(("X-Forwarded-For", address));
    }
    service.request("GET", "/api/guilds", &headers, None)
}

fn assert_limited(reply: &Reply) {
    assert_eq!(reply.status, 429, "{}", reply.text);
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert!(
        reply.error().contains("too many requests"),
        "{}",
        reply.text
    );
}

#[test]
fn an_address_past_its_burst_gets_429_with_retry_after() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, SLOW);
    for _ in 0..3 {
        assert_eq!(service.get("/api/guilds", "not-a-session").status, 401);
    }
    assert_limited(&service.get("/api/guilds", "not-a-session"));
}

#[test]
fn the_bucket_refills_at_the_configured_rate() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, SLOW);
    for _ in 0..3 {
        service.get("/api/guilds", "x");
    }
    assert_eq!(service.get("/api/guilds", "x").status, 429);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(service.get("/api/guilds", "x").status, 401);
}

#[test]
fn forwarded_for_from_an_untrusted_peer_does_not_escape_the_limit() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, SLOW);
    for n in 0..3 {
        let address = format!("198.51.100.{n}");
        guilds_from(&service, "x", Some(&address));
    }
    assert_limited(&guilds_from(&service, "x", Some("198.51.100.99")));
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_address_has_its_own_bucket() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[SLOW, &["--trusted-proxies", "127.0.0.1"]].concat());
    for _ in 0..3 {
        guilds_from(&service, "x", Some("198.51.100.1"));
    }
    assert_limited(&guilds_from(&service, "x", Some("198.51.100.1")));
    assert_eq!(guilds_from(&service, "x", Some("198.51.100.2")).status, 401);
}

#[test]
fn one_session_is_limited_across_addresses() {
    let fake = Fake::start(&standard());
    let service = Service::start(
        &fake,
        &[SLOW, &["--trusted-proxies", "127.0.0.0/8"]].concat(),
    );
    let login = service.request(
        "POST",
        "/api/auth/login",
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", "203.0.113.200"),
        ],
        Some(&serde_json::json!({ "token": TOKEN }).to_string()),
    );
    let session = login.json()["sessionId"].as_str().unwrap().to_string();
    for n in 0..3 {
        let reply = guilds_from(&service, &session, Some(&format!("203.0.113.{n}")));
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    assert_limited(&guilds_from(&service, &session, Some("203.0.113.50")));
}

#[test]
fn health_checks_and_scrapes_are_answered_while_an_address_is_limited() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, SLOW);
    for _ in 0..4 {
        service.get("/api/guilds", "x");
    }
    assert_eq!(service.get("/api/guilds", "x").status, 429);
    assert_eq!(service.get("/healthz", "").status, 200);
    let scrape = service.get("/metrics", "");
    assert_eq!(scrape.status, 200);
    assert!(
        scrape
            .text
            .lines()
            .any(|l| l.starts_with("dbb_client_rate_limited_total{by=\"ip\"}")),
        "{}",
        scrape.text
    );
}

#[test]
fn failed_logins_are_throttled_per_forwarded_address_behind_a_trusted_proxy() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &["--trusted-proxies", "127.0.0.1"]);
    let login_from = |address: &str| {
        service.request(
            "POST",
            "/api/auth/login",
            &[
                ("Content-Type", "application/json"),
                ("X-Forwarded-For", address),
            ],
            Some(r#"{"token": "MTA5.wrong-token.Qq_q"}"#),
        )
    };
    for _ in 0..5 {
        assert_eq!(login_from("192.0.2.10").status, 401);
    }
    assert_eq!(login_from("192.0.2.10").status, 429);
    assert_eq!(
        login_from("192.0.2.11").status,
        401,
        "another client is not throttled"
    );
}

#[test]
fn zero_turns_the_client_limit_off() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &["--client-rate-limit", "0", "--client-burst", "1"]);
    for _ in 0..20 {
        assert_eq!(service.get("/api/guilds", "x").status, 401);
    }
}

#[test]
fn every_forwarded_for_line_counts_so_a_client_line_cannot_hide_the_proxys() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[SLOW, &["--trusted-proxies", "127.0.0.1"]].concat());
    let with_two_lines = |spoofed: &str| {
        service.request(
            "GET",
            "/api/guilds",
            &[
                ("Authorization", "x"),
                ("X-Forwarded-For", spoofed),
                ("X-Forwarded-For", "203.0.113.7"),
            ],
            None,
        )
    };
    for n in 0..3 {
        assert_eq!(with_two_lines(&format!("10.0.0.{n}")).status, 401);
    }
    assert_limited(&with_two_lines("10.0.0.99"));
}
