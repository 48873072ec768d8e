//! Fidelity tests: each test starts the real binary on a free port with a
//! small world file and checks one Discord rule (or one control-API promise)
//! over real HTTP. Test names say which rule; the comment above each cites
//! the Discord document it comes from.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{
    BOT_A, BOT_B, Fake, NO_PRESSURE, Resp, TOKEN_A, TOKEN_B, agent, assert_error,
    assert_form_error, convert,
};

/// Guild with both bots, 2500 members, three channels.
const G1: &str = "613425648685547541";
/// Guild with bot A only.
const G2: &str = "613425648685547542";
/// Guild no bot is in.
const G3: &str = "613425648685547543";
/// Text channel in G1 with 250 messages.
const C1: &str = "613425648685547550";
/// Channel in G1 the bots cannot see.
const C_NONE: &str = "613425648685547551";
/// Channel in G1 without READ_MESSAGE_HISTORY.
const C_NO_HISTORY: &str = "613425648685547552";
/// Second text channel in G1 (12 messages).
const C4: &str = "613425648685547553";
/// Channel in G3.
const C_OTHER: &str = "613425648685547560";

fn world() -> Value {
    json!({
        "bots": [
            {"token": TOKEN_A, "id": BOT_A, "username": "Alpha", "guilds": [G1, G2], "extra_guilds": 250},
            {"token": TOKEN_B, "id": BOT_B, "username": "Beta", "members_intent": false, "guilds": [G1]}
        ],
        "guilds": [
            {"id": G1, "name": "One", "member_count": 2500, "channels": [
                {"id": C1, "name": "general", "type": 0, "message_count": 250},
                {"id": C_NONE, "name": "secret", "access": "none", "message_count": 5},
                {"id": C_NO_HISTORY, "name": "no-history", "access": "no_history", "message_count": 5},
                {"id": C4, "name": "second", "message_count": 12}
            ]},
            {"id": G2, "name": "Two", "member_count": 3},
            {"id": G3, "name": "Three", "member_count": 4, "channels": [
                {"id": C_OTHER, "name": "elsewhere", "message_count": 3}
            ]}
        ]
    })
}

impl Fake {
    /// Starts the fake on this file's world: every test here names its
    /// ids, so the shared harness takes the world from each file.
    fn start(args: &[&str]) -> Fake {
        Fake::with_world(&world(), args)
    }
}

fn ids_of(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn member_ids_of(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"]["id"].as_str().unwrap().to_string())
        .collect()
}

fn reversed(v: &[String]) -> Vec<String> {
    v.iter().rev().cloned().collect()
}

// --- Defaults (message.mdx, guild.mdx, user.mdx) -------------------------

// message.mdx "Get Channel Messages": limit default 50, newest to oldest.
#[test]
fn messages_default_limit_is_50_newest_first() {
    let fake = Fake::start(NO_PRESSURE);
    let all = fake.ids(&format!("/_fake/channels/{C1}/message_ids"));
    assert_eq!(all.len(), 250);
    let r = fake.a(&format!("/channels/{C1}/messages"));
    assert_eq!(r.status, 200);
    assert_eq!(ids_of(&r.json()), reversed(&all[200..]));
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
}

// guild.mdx "List Guild Members": limit default 1, after default 0.
#[test]
fn members_default_limit_is_1_lowest_user_id() {
    let fake = Fake::start(NO_PRESSURE);
    let all = fake.ids(&format!("/_fake/guilds/{G1}/member_ids"));
    let r = fake.a(&format!("/guilds/{G1}/members"));
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(member_ids_of(&body), vec![all[0].clone()]);
    let m = &body[0];
    for key in ["nick", "avatar", "premium_since"] {
        assert!(m[key].is_null(), "{key}");
    }
    assert_eq!(m["roles"], json!([]));
    assert_eq!(m["user"]["discriminator"], "0");
    assert!(m["joined_at"].as_str().unwrap().ends_with("+00:00"));
}

// user.mdx "Get Current User Guilds": limit default 200, ascending ids.
#[test]
fn current_user_guilds_default_limit_is_200_ascending() {
    let fake = Fake::start(NO_PRESSURE);
    let first = fake.a("/users/@me/guilds").json();
    let ids = ids_of(&first);
    assert_eq!(ids.len(), 200);
    let nums: Vec<u64> = ids.iter().map(|s| s.parse().unwrap()).collect();
    assert!(nums.windows(2).all(|w| w[0] < w[1]));
    assert!(first[0].get("approximate_member_count").is_none());
    assert!(first[0]["permissions"].is_string());
    // 250 extra guilds + G1 + G2 = 252: the next page after the last id has 52.
    let next = fake
        .a(&format!("/users/@me/guilds?after={}", ids[199]))
        .json();
    assert_eq!(next.as_array().unwrap().len(), 52);
}

// user.mdx: before returns the ids nearest below the cursor, still ascending.
#[test]
fn current_user_guilds_before_takes_nearest_lower_ids_ascending() {
    let fake = Fake::start(NO_PRESSURE);
    let all = ids_of(&fake.a("/users/@me/guilds?limit=200").json());
    let page = fake.a(&format!("/users/@me/guilds?before={}&limit=3", all[10]));
    assert_eq!(ids_of(&page.json()), all[7..10].to_vec());
}

// user.mdx: with_counts adds approximate member and presence counts.
#[test]
fn current_user_guilds_with_counts_adds_approximate_counts() {
    let fake = Fake::start(NO_PRESSURE);
    let body = fake
        .a(&format!(
            "/users/@me/guilds?with_counts=true&after={}&limit=1",
            G1.parse::<u64>().unwrap() - 1
        ))
        .json();
    assert_eq!(body[0]["id"], G1);
    assert_eq!(body[0]["approximate_member_count"], 2500);
    assert!(body[0]["approximate_presence_count"].is_u64());
}

// --- Message cursors (message.mdx) ---------------------------------------

// Paging back with before = oldest id of the previous page covers every
// message exactly once.
#[test]
fn messages_before_pages_back_through_history_without_gaps() {
    let fake = Fake::start(NO_PRESSURE);
    let all = fake.ids(&format!("/_fake/channels/{C1}/message_ids"));
    let mut seen = Vec::new();
    let mut page = ids_of(&fake.a(&format!("/channels/{C1}/messages?limit=100")).json());
    while !page.is_empty() {
        seen.extend(page.iter().cloned());
        let oldest = page.last().unwrap().clone();
        page = ids_of(
            &fake
                .a(&format!(
                    "/channels/{C1}/messages?limit=100&before={oldest}"
                ))
                .json(),
        );
    }
    assert_eq!(seen, reversed(&all));
}

// after returns the messages right after the cursor (the oldest ones above
// it), ordered newest first like every other mode.
#[test]
fn messages_after_returns_the_next_oldest_newest_first() {
    let fake = Fake::start(NO_PRESSURE);
    let all = fake.ids(&format!("/_fake/channels/{C1}/message_ids"));
    let r = fake.a(&format!(
        "/channels/{C1}/messages?after={}&limit=10",
        all[20]
    ));
    assert_eq!(ids_of(&r.json()), reversed(&all[21..31]));
    // after=0 is "the beginning of time" (reference.mdx).
    let r = fake.a(&format!("/channels/{C1}/messages?after=0&limit=3"));
    assert_eq!(ids_of(&r.json()), reversed(&all[0..3]));
}

// around: limit/2 older, the message itself, the rest newer; newest first.
#[test]
fn messages_around_centres_on_the_given_id() {
    let fake = Fake::start(NO_PRESSURE);
    let all = fake.ids(&format!("/_fake/channels/{C1}/message_ids"));
    let r = fake.a(&format!(
        "/channels/{C1}/messages?around={}&limit=6",
        all[100]
    ));
    assert_eq!(ids_of(&r.json()), reversed(&all[97..103]));
    let body = r.json();
    assert_eq!(body[2]["content"], "message 101");
    assert_eq!(body[2]["channel_id"], C1);
}

// message.mdx: "around, before and after are mutually exclusive".
#[test]
fn messages_cursors_are_mutually_exclusive_50035() {
    let fake = Fake::start(NO_PRESSURE);
    let r = fake.a(&format!("/channels/{C1}/messages?before=5&after=1"));
    assert_form_error(&r, "after", "PARAM_MUTUALLY_EXCLUSIVE");
}

// message.mdx "Message Object": the fields a client relies on.
#[test]
fn message_objects_look_like_discord_messages() {
    let fake = Fake::start(NO_PRESSURE);
    let m = &fake.a(&format!("/channels/{C4}/messages?limit=1")).json()[0];
    assert_eq!(m["content"], "message 12");
    assert_eq!(m["type"], 0);
    assert!(m["author"]["id"].is_string());
    assert!(m["edited_timestamp"].is_null());
    for key in ["mentions", "mention_roles", "attachments", "embeds"] {
        assert_eq!(m[key], json!([]), "{key}");
    }
    for key in ["tts", "mention_everyone", "pinned"] {
        assert_eq!(m[key], false, "{key}");
    }
    // The timestamp agrees with the snowflake: (id >> 22) ms after 2015.
    let id: u64 = m["id"].as_str().unwrap().parse().unwrap();
    let ts = m["timestamp"].as_str().unwrap();
    assert!(ts.ends_with("+00:00") && ts.contains('T'), "{ts}");
    let years_after_2015 = (id >> 22) / (365 * 86_400_000);
    assert!(
        ts.starts_with(&(2015 + years_after_2015).to_string())
            || ts.starts_with(&(2016 + years_after_2015).to_string()),
        "{ts}"
    );
}

// --- Members (guild.mdx) -------------------------------------------------

// after = highest user id of the previous page; pages cover the guild once.
#[test]
fn members_after_pages_through_the_whole_guild() {
    let fake = Fake::start(NO_PRESSURE);
    let all = fake.ids(&format!("/_fake/guilds/{G1}/member_ids"));
    let mut seen: Vec<String> = Vec::new();
    let mut after = "0".to_string();
    loop {
        let page = member_ids_of(
            &fake
                .a(&format!("/guilds/{G1}/members?limit=1000&after={after}"))
                .json(),
        );
        seen.extend(page.iter().cloned());
        if page.len() < 1000 {
            break;
        }
        after = page.last().unwrap().clone();
    }
    assert_eq!(seen, all);
}

// gateway.mdx "HTTP Restrictions": without the GUILD_MEMBERS intent the route
// is refused.
#[test]
fn members_without_the_members_intent_is_403_50001() {
    let fake = Fake::start(NO_PRESSURE);
    let r = fake.get(&format!("/guilds/{G1}/members?limit=10"), Some(TOKEN_B));
    assert_error(&r, 403, "Missing Access", 50001);
}

// --- Validation (OpenAPI parameter schemas, reference.mdx errors) ---------

#[test]
fn limit_out_of_range_or_not_integer_is_50035() {
    let fake = Fake::start(NO_PRESSURE);
    let cases = [
        (
            format!("/channels/{C1}/messages?limit=0"),
            "NUMBER_TYPE_MIN",
        ),
        (
            format!("/channels/{C1}/messages?limit=101"),
            "NUMBER_TYPE_MAX",
        ),
        (
            format!("/guilds/{G1}/members?limit=1001"),
            "NUMBER_TYPE_MAX",
        ),
        ("/users/@me/guilds?limit=201".to_string(), "NUMBER_TYPE_MAX"),
        (
            "/users/@me/guilds?limit=ten".to_string(),
            "NUMBER_TYPE_COERCE",
        ),
    ];
    for (path, code) in cases {
        assert_form_error(&fake.a(&path), "limit", code);
    }
}

#[test]
fn non_snowflake_ids_are_50035() {
    let fake = Fake::start(NO_PRESSURE);
    let r = fake.a(&format!("/channels/{C1}/messages?before=abc"));
    assert_form_error(&r, "before", "NUMBER_TYPE_COERCE");
    let r = fake.a(&format!("/guilds/{G1}/members?after=-1"));
    assert_form_error(&r, "after", "NUMBER_TYPE_COERCE");
    let r = fake.a("/channels/general/messages");
    assert_form_error(&r, "channel_id", "NUMBER_TYPE_COERCE");
}

// --- Errors (opcodes-and-status-codes.mdx) ---------------------------------

#[test]
fn missing_or_malformed_authorization_is_401_code_0() {
    let fake = Fake::start(NO_PRESSURE);
    assert_error(&fake.get("/users/@me", None), 401, "401: Unauthorized", 0);
    assert_error(
        &fake.get("/users/@me", Some("no-such-token")),
        401,
        "401: Unauthorized",
        0,
    );
    let r = convert(
        fake.agent
            .get(fake.url("/api/v10/users/@me"))
            .header("Authorization", format!("Bearer {TOKEN_A}"))
            .call()
            .unwrap(),
    );
    assert_error(&r, 401, "401: Unauthorized", 0);
    let log = fake.control_get("/_fake/requests");
    assert_eq!(log[2]["authorization_scheme_ok"], false);
    assert_eq!(log[1]["authorization_scheme_ok"], true);
    assert!(log[1]["bot_id"].is_null());
}

#[test]
fn revoked_token_gets_401_everywhere() {
    let fake = Fake::start(NO_PRESSURE);
    assert_eq!(fake.a("/users/@me").status, 200);
    let r = fake.control_post("/_fake/revoke", json!({"token": TOKEN_A}));
    assert_eq!(r.status, 200);
    assert_error(&fake.a("/users/@me"), 401, "401: Unauthorized", 0);
    assert_error(
        &fake.a(&format!("/channels/{C1}/messages")),
        401,
        "401: Unauthorized",
        0,
    );
    assert_eq!(fake.get("/users/@me", Some(TOKEN_B)).status, 200);
    // Reset clears revocations.
    fake.control_post("/_fake/reset", json!({}));
    assert_eq!(fake.a("/users/@me").status, 200);
}

#[test]
fn unknown_guild_is_404_10004_and_foreign_guild_is_403_50001() {
    let fake = Fake::start(NO_PRESSURE);
    let r = fake.a("/guilds/1234567/channels");
    assert_error(&r, 404, "Unknown Guild", 10004);
    let r = fake.a("/guilds/1234567/members?limit=5");
    assert_error(&r, 404, "Unknown Guild", 10004);
    let r = fake.a(&format!("/guilds/{G3}/channels"));
    assert_error(&r, 403, "Missing Access", 50001);
    let r = fake.a(&format!("/guilds/{G3}/members"));
    assert_error(&r, 403, "Missing Access", 50001);
}

// message.mdx: without READ_MESSAGE_HISTORY "no messages will be returned".
#[test]
fn channel_access_unknown_404_none_403_no_history_empty() {
    let fake = Fake::start(NO_PRESSURE);
    assert_error(
        &fake.a("/channels/999/messages"),
        404,
        "Unknown Channel",
        10003,
    );
    assert_error(
        &fake.a(&format!("/channels/{C_NONE}/messages")),
        403,
        "Missing Access",
        50001,
    );
    assert_error(
        &fake.a(&format!("/channels/{C_OTHER}/messages")),
        403,
        "Missing Access",
        50001,
    );
    let r = fake.a(&format!("/channels/{C_NO_HISTORY}/messages"));
    assert_eq!((r.status, r.json()), (200, json!([])));
}

#[test]
fn unknown_route_is_404_and_wrong_method_is_405() {
    let fake = Fake::start(NO_PRESSURE);
    assert_error(&fake.a("/users/@me/nothing"), 404, "404: Not Found", 0);
    let r = convert(
        fake.agent
            .delete(fake.url("/api/v10/users/@me"))
            .header("Authorization", format!("Bot {TOKEN_A}"))
            .call()
            .unwrap(),
    );
    assert_error(&r, 405, "405: Method Not Allowed", 0);
}

#[test]
fn guild_channels_are_discord_channel_objects() {
    let fake = Fake::start(NO_PRESSURE);
    let body = fake.a(&format!("/guilds/{G1}/channels")).json();
    assert_eq!(ids_of(&body), vec![C1, C_NONE, C_NO_HISTORY, C4]);
    let c = &body[0];
    assert_eq!(c["guild_id"], G1);
    assert_eq!(c["type"], 0);
    assert_eq!(c["permission_overwrites"], json!([]));
    assert_eq!(c["nsfw"], false);
    let last = fake.ids(&format!("/_fake/channels/{C1}/message_ids"));
    assert_eq!(c["last_message_id"], json!(last.last().unwrap()));
}

#[test]
fn current_user_is_the_bot() {
    let fake = Fake::start(NO_PRESSURE);
    let me = fake.a("/users/@me").json();
    assert_eq!(me["id"], BOT_A);
    assert_eq!(me["username"], "Alpha");
    assert_eq!(me["bot"], true);
    assert_eq!(me["discriminator"], "0");
}

// --- Rate limits (rate-limits.mdx) -----------------------------------------

// "Header Format": every answer carries the bucket headers; Remaining falls.
#[test]
fn ratelimit_headers_present_and_remaining_decreases() {
    let fake = Fake::start(&["--route-limit", "3", "--route-window-ms", "1000"]);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = fake.a(&format!("/channels/{C1}/messages?limit=1"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        let reset_after: f64 = r
            .header("x-ratelimit-reset-after")
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset_after > 0.0 && reset_after <= 1.0);
        let reset = r.header("x-ratelimit-reset").unwrap();
        assert_eq!(reset.split('.').nth(1).map(str::len), Some(3), "{reset}");
        assert!(!r.header("x-ratelimit-bucket").unwrap().is_empty());
        assert!(r.header("x-ratelimit-scope").is_none());
        remaining.push(r.header("x-ratelimit-remaining").unwrap().to_string());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
}

// "Exceeding A Rate Limit": float retry_after, whole-second Retry-After,
// scope user, Remaining 0; the refused request is not counted.
#[test]
fn exhausted_bucket_is_429_with_float_retry_after_and_user_scope() {
    let fake = Fake::start(&["--route-limit", "2", "--route-window-ms", "700"]);
    let path = format!("/guilds/{G1}/channels");
    fake.a(&path);
    fake.a(&path);
    let r = fake.a(&path);
    assert_eq!(r.status, 429);
    let body = r.json();
    assert_eq!(body["message"], "You are being rate limited.");
    assert_eq!(body["global"], false);
    let retry_after = body["retry_after"].as_f64().unwrap();
    assert!(retry_after > 0.0 && retry_after <= 0.7, "{retry_after}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-ratelimit-scope"), Some("user"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(r.header("x-ratelimit-global").is_none());
    std::thread::sleep(Duration::from_secs_f64(retry_after));
    let r = fake.a(&path);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("1"));
    let stats = fake.control_get("/_fake/stats");
    assert_eq!(stats["rate_limited"]["user"], 1);
    assert_eq!(stats["by_status"]["429"], 1);
}

// "Top-level resources": two channels are limited independently.
#[test]
fn buckets_are_split_by_top_level_resource() {
    let fake = Fake::start(&["--route-limit", "1"]);
    assert_eq!(fake.a(&format!("/channels/{C1}/messages")).status, 200);
    assert_eq!(fake.a(&format!("/channels/{C1}/messages")).status, 429);
    let r = fake.a(&format!("/channels/{C4}/messages"));
    assert_eq!(r.status, 200);
    // Same hash: X-RateLimit-Bucket excludes the top-level resource.
    let r1 = fake.a(&format!("/channels/{C1}/messages"));
    assert_eq!(
        r1.header("x-ratelimit-bucket"),
        r.header("x-ratelimit-bucket")
    );
    // And another bot has its own buckets.
    assert_eq!(
        fake.get(&format!("/channels/{C1}/messages"), Some(TOKEN_B))
            .status,
        200
    );
}

// "shared limits are marked by X-RateLimit-Bucket": /users/@me and
// /users/@me/guilds share one bucket.
#[test]
fn current_user_routes_share_one_bucket_hash() {
    let fake = Fake::start(&["--route-limit", "2"]);
    let me = fake.a("/users/@me");
    let guilds = fake.a("/users/@me/guilds");
    assert_eq!(
        me.header("x-ratelimit-bucket"),
        guilds.header("x-ratelimit-bucket")
    );
    assert_eq!(guilds.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(fake.a("/users/@me").status, 429);
}

// "Global Rate Limit": at most N requests per bot per second.
#[test]
fn global_limit_is_429_with_global_headers() {
    let fake = Fake::start(&["--global-limit", "3", "--route-limit", "100"]);
    for c in [C1, C4, C_NO_HISTORY] {
        assert_eq!(
            fake.a(&format!("/channels/{c}/messages?limit=1")).status,
            200
        );
    }
    let r = fake.a(&format!("/guilds/{G1}/channels"));
    assert_eq!(r.status, 429);
    let body = r.json();
    assert_eq!(body["global"], true);
    assert!(body["retry_after"].as_f64().unwrap() > 0.0);
    assert_eq!(r.header("x-ratelimit-global"), Some("true"));
    assert_eq!(r.header("x-ratelimit-scope"), Some("global"));
    assert_eq!(r.header("retry-after"), Some("1"));
    // Another bot is not affected.
    assert_eq!(fake.get("/users/@me", Some(TOKEN_B)).status, 200);
    let stats = fake.control_get("/_fake/stats");
    assert_eq!(stats["rate_limited"]["global"], 1);
    assert_eq!(stats["max_in_any_second"][BOT_A], 3);
}

#[test]
fn no_ratelimit_flag_removes_limits_and_headers() {
    let fake = Fake::start(&["--no-ratelimit", "--route-limit", "1"]);
    for _ in 0..3 {
        let r = fake.a("/users/@me");
        assert_eq!(r.status, 200);
        assert!(r.header("x-ratelimit-bucket").is_none());
    }
}

// --- Faults ------------------------------------------------------------------

#[test]
fn fault_status_5xx_bodies() {
    let fake = Fake::start(NO_PRESSURE);
    for kind in ["status_500", "status_502", "status_503"] {
        fake.fault(json!({"kind": kind}));
    }
    assert_eq!(fake.a("/users/@me").status, 500);
    let r = fake.a("/users/@me");
    assert_eq!(r.status, 502);
    assert!(r.json()["message"].as_str().unwrap().contains("gateway"));
    assert_eq!(fake.a("/users/@me").status, 503);
    assert_eq!(fake.a("/users/@me").status, 200);
}

#[test]
fn fault_count_and_path_filter() {
    let fake = Fake::start(NO_PRESSURE);
    fake.fault(json!({"kind": "status_500", "count": 2, "path_contains": "/messages"}));
    assert_eq!(fake.a("/users/@me").status, 200);
    assert_eq!(fake.a(&format!("/channels/{C1}/messages")).status, 500);
    assert_eq!(fake.a(&format!("/channels/{C4}/messages")).status, 500);
    assert_eq!(fake.a(&format!("/channels/{C1}/messages")).status, 200);
    assert_eq!(fake.control_get("/_fake/faults"), json!([]));
}

#[test]
fn fault_hang_never_answers() {
    let fake = Fake::start(NO_PRESSURE);
    fake.fault(json!({"kind": "hang", "ms": 1500}));
    let started = Instant::now();
    let r = fake.get_with(
        &agent(Some(Duration::from_millis(300))),
        "/users/@me",
        Some(TOKEN_A),
    );
    assert!(r.is_err());
    assert!(started.elapsed() < Duration::from_millis(1000));
    let log = fake.control_get("/_fake/requests");
    assert!(log[0]["status"].is_null());
    assert_eq!(log[0]["fault"], "hang");
}

#[test]
fn fault_drop_closes_without_response() {
    let fake = Fake::start(NO_PRESSURE);
    fake.fault(json!({"kind": "drop"}));
    assert!(
        fake.get_with(&agent(None), "/users/@me", Some(TOKEN_A))
            .is_err()
    );
    assert_eq!(fake.a("/users/@me").status, 200);
    assert_eq!(fake.control_get("/_fake/stats")["no_response"], 1);
}

#[test]
fn fault_not_json_is_200_html() {
    let fake = Fake::start(NO_PRESSURE);
    fake.fault(json!({"kind": "not_json"}));
    let r = fake.a("/users/@me");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(serde_json::from_str::<Value>(&r.body).is_err());
}

#[test]
fn fault_latency_delays_the_real_answer() {
    let fake = Fake::start(NO_PRESSURE);
    fake.fault(json!({"kind": "latency", "ms": 300}));
    let started = Instant::now();
    let r = fake.a("/users/@me");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.json()["id"], BOT_A);
}

#[test]
fn latency_flag_delays_every_answer() {
    let fake = Fake::start(&["--latency-ms", "150"]);
    let started = Instant::now();
    assert_eq!(fake.a("/users/@me").status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

// rate-limits.mdx "Example Exceeded Resource Rate Limit Response".
#[test]
fn fault_shared_429_uses_shared_scope_and_given_retry_after() {
    let fake = Fake::start(NO_PRESSURE);
    fake.fault(json!({"kind": "shared_429", "retry_after": 2.5}));
    let r = fake.a(&format!("/channels/{C1}/messages"));
    assert_eq!(r.status, 429);
    let body = r.json();
    assert_eq!(body["retry_after"], 2.5);
    assert_eq!(body["global"], false);
    assert_eq!(r.header("retry-after"), Some("3"));
    assert_eq!(r.header("x-ratelimit-scope"), Some("shared"));
    assert_ne!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        fake.control_get("/_fake/stats")["rate_limited"]["shared"],
        1
    );
}

#[test]
fn fault_user_429_looks_like_an_exhausted_bucket() {
    let fake = Fake::start(NO_PRESSURE);
    fake.fault(json!({"kind": "user_429", "retry_after": 0.25}));
    let r = fake.a(&format!("/guilds/{G1}/channels"));
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["retry_after"], 0.25);
    assert_eq!(r.json()["global"], false);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-ratelimit-scope"), Some("user"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("x-ratelimit-reset-after"), Some("0.250"));
    assert!(r.header("x-ratelimit-bucket").is_some());
}

#[test]
fn fault_global_429_has_global_headers() {
    let fake = Fake::start(NO_PRESSURE);
    fake.fault(json!({"kind": "global_429", "retry_after": 1.2}));
    let r = fake.a("/users/@me");
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["global"], true);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(r.header("x-ratelimit-global"), Some("true"));
    assert_eq!(r.header("x-ratelimit-scope"), Some("global"));
}

#[test]
fn fault_with_unknown_kind_is_rejected() {
    let fake = Fake::start(NO_PRESSURE);
    let r = fake.control_post("/_fake/faults", json!({"kind": "meteor"}));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("meteor"));
}

// --- Observation -------------------------------------------------------------

#[test]
fn request_log_records_target_user_agent_bot_and_status() {
    let fake = Fake::start(NO_PRESSURE);
    let target = format!("/api/v10/channels/{C1}/messages?limit=5&before=99999999999999999999");
    convert(
        fake.agent
            .get(fake.url(&target))
            .header("Authorization", format!("Bot {TOKEN_A}"))
            .header("User-Agent", "DiscordBot (https://example.test, 1.0)")
            .call()
            .unwrap(),
    );
    fake.get("/users/@me", None);
    let log = fake.control_get("/_fake/requests");
    assert_eq!(log.as_array().unwrap().len(), 2);
    let e = &log[0];
    assert_eq!(e["method"], "GET");
    assert_eq!(e["target"], target);
    assert_eq!(e["bot_id"], BOT_A);
    assert_eq!(e["user_agent"], "DiscordBot (https://example.test, 1.0)");
    assert_eq!(e["authorization_scheme_ok"], true);
    assert_eq!(e["status"], 400); // 20 digits overflow u64: not a snowflake
    assert!(e["scope"].is_null());
    assert!(e["at_ms"].is_u64());
    assert_eq!(log[1]["status"], 401);
    assert!(log[1]["bot_id"].is_null());
    assert_eq!(
        fake.control_get("/_fake/requests?since=1")
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn reset_clears_log_stats_faults_and_buckets() {
    let fake = Fake::start(&["--route-limit", "1"]);
    fake.a("/users/@me");
    assert_eq!(fake.a("/users/@me").status, 429);
    fake.fault(json!({"kind": "status_500"}));
    let r = fake.control_post("/_fake/reset", json!({}));
    assert_eq!(r.status, 200);
    assert_eq!(fake.control_get("/_fake/requests"), json!([]));
    assert_eq!(fake.control_get("/_fake/stats")["requests"], 0);
    assert_eq!(fake.a("/users/@me").status, 200);
}

#[test]
fn world_summary_lists_bots_guilds_and_channels() {
    let fake = Fake::start(NO_PRESSURE);
    let w = fake.control_get("/_fake/world");
    assert_eq!(w["bots"][0]["token"], TOKEN_A);
    assert_eq!(w["bots"][0]["guilds"].as_array().unwrap().len(), 252);
    assert_eq!(w["guilds"][0]["channels"][0]["message_count"], 250);
}

// --- HTTP/1.1 behaviour ----------------------------------------------------

fn raw_request(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bot {TOKEN_A}\r\nUser-Agent: raw\r\n{extra}\r\n"
    )
}

#[test]
fn keep_alive_serves_pipelined_requests_and_honours_connection_close() {
    let fake = Fake::start(NO_PRESSURE);
    let addr = fake.base.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = raw_request("/api/v10/users/@me", "")
        + &raw_request("/api/v10/users/@me", "Connection: close\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap(); // ends because the server closes
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(out.contains("Connection: close"));
}

#[test]
fn oversized_head_is_431() {
    let fake = Fake::start(NO_PRESSURE);
    let addr = fake.base.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let big = format!("X-Big: {}\r\n", "a".repeat(17 * 1024));
    let _ = s.write_all(raw_request("/api/v10/users/@me", &big).as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
}

// --- The invalid-request ban (rate-limits.mdx "Invalid Request Limit") ----

/// Cloudflare's answer: a 429 in HTML with `Retry-After` and nothing of
/// Discord's (no JSON, no `X-RateLimit-*`).
fn assert_cloudflare_429(r: &Resp) {
    assert_eq!(r.status, 429);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(
        serde_json::from_str::<Value>(&r.body).is_err(),
        "{}",
        r.body
    );
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert!(
        r.headers
            .iter()
            .all(|(k, _)| !k.to_ascii_lowercase().starts_with("x-ratelimit")),
        "{:?}",
        r.headers
    );
}

#[test]
fn invalid_requests_past_the_limit_ban_the_ip_for_every_bot() {
    let mut args = NO_PRESSURE.to_vec();
    args.extend(["--invalid-limit", "3", "--ban-ms", "60000"]);
    let fake = Fake::start(&args);
    let members = format!("/guilds/{G1}/members?limit=10");
    for _ in 0..3 {
        assert_eq!(fake.get(&members, Some(TOKEN_B)).status, 403);
    }
    // The third 403 was the limit: the IP is banned, whatever the bot.
    assert_cloudflare_429(&fake.a("/users/@me"));
    assert_cloudflare_429(&fake.get(&members, Some(TOKEN_B)));
    let stats = fake.control_get("/_fake/stats");
    assert_eq!(stats["invalid_requests"]["bans"], 1);
    assert_eq!(stats["invalid_requests"]["counted"], 3);
}

#[test]
fn a_ban_ends_after_its_time() {
    let mut args = NO_PRESSURE.to_vec();
    args.extend(["--invalid-limit", "1", "--ban-ms", "300"]);
    let fake = Fake::start(&args);
    assert_eq!(fake.get("/users/@me", Some("not-a-token")).status, 401);
    assert_cloudflare_429(&fake.a("/users/@me"));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(fake.a("/users/@me").status, 200);
}

#[test]
fn shared_429s_and_404s_do_not_count_toward_the_ban() {
    let mut args = NO_PRESSURE.to_vec();
    args.extend(["--invalid-limit", "2"]);
    let fake = Fake::start(&args);
    fake.fault(json!({"kind": "shared_429", "count": 3}));
    for _ in 0..3 {
        assert_eq!(fake.a(&format!("/channels/{C1}/messages")).status, 429);
    }
    for _ in 0..3 {
        assert_eq!(fake.a("/guilds/613425648685547599/channels").status, 404);
    }
    assert_eq!(fake.a(&format!("/channels/{C1}/messages")).status, 200);
    assert_eq!(
        fake.control_get("/_fake/stats")["invalid_requests"]["bans"],
        0
    );
}

#[test]
fn fault_cloudflare_429_is_html_with_only_retry_after() {
    let fake = Fake::start(NO_PRESSURE);
    fake.fault(json!({"kind": "cloudflare_429", "retry_after": 2.5}));
    let r = fake.a("/users/@me");
    assert_cloudflare_429(&r);
    assert_eq!(r.header("retry-after"), Some("3"));
    assert_eq!(fake.a("/users/@me").status, 200);
}
