//! Write-route tests: each test starts the real binary with a small world
//! and checks one Discord write rule (or one control-API promise) over real
//! HTTP. The comment above each test names its source; the summaries with
//! line numbers are in `shared/WRITES-NOTES.md`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use common::{
    BOT_A, BOT_B, Body, Fake, NO_LIMITS, NO_PRESSURE, TOKEN_A, TOKEN_B, agent, assert_error,
    raw_exchange,
};

const G1: &str = "613425648685547541";
/// Text channel with 5 generated (old) messages.
const C1: &str = "613425648685547550";
/// Second text channel.
const C2: &str = "613425648685547551";
const C_READ_ONLY: &str = "613425648685547552";
const C_NONE: &str = "613425648685547553";
const C_VOICE: &str = "613425648685547554";
const C_UNKNOWN: &str = "613425648685547599";
/// A user who does not accept DMs from bots.
const CLOSED_USER: &str = "300000000000000001";
const OPEN_USER: &str = "300000000000000002";
const THUMBS_UP: &str = "%F0%9F%91%8D";

fn world() -> Value {
    json!({
        "bots": [
            {"token": TOKEN_A, "id": BOT_A, "username": "Alpha", "guilds": [G1]},
            {"token": TOKEN_B, "id": BOT_B, "username": "Beta", "guilds": [G1]}
        ],
        "guilds": [
            {"id": G1, "name": "One", "member_count": 20, "channels": [
                {"id": C1, "name": "general", "message_count": 5},
                {"id": C2, "name": "second"},
                {"id": C_READ_ONLY, "name": "announcements", "access": "read_only", "message_count": 2},
                {"id": C_NONE, "name": "secret", "access": "none"},
                {"id": C_VOICE, "name": "Lounge", "type": 2}
            ]}
        ],
        "dm_closed_users": [CLOSED_USER]
    })
}

impl Fake {
    /// Starts the fake on this file's world: every test here names its
    /// ids, so the shared harness takes the world from each file.
    fn start(args: &[&str]) -> Fake {
        Fake::with_world(&world(), args)
    }

    /// Sends `content` to C1 and returns the created message.
    fn create(&self, content: &str) -> Value {
        let r = self.send(C1, json!({ "content": content }));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// A snowflake minted `age_ms` ago.
fn snowflake_aged(age_ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    ((now - age_ms - 1_420_070_400_000) << 22).to_string()
}

/// A multipart body with an optional `payload_json` and `files[n]` parts.
fn multipart(payload: Option<Value>, files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "fake-discord-test-boundary";
    let mut body = Vec::new();
    if let Some(p) = payload {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"payload_json\"\r\n\
                 Content-Type: application/json\r\n\r\n{p}\r\n"
            )
            .as_bytes(),
        );
    }
    for (i, (name, data)) in files.iter().enumerate() {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"files[{i}]\"; \
                 filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

// --- Create Message (message.mdx "Create Message") -------------------------

// 200 (not 201, SPEC create_message) with a message object; the message is
// listed by GET …/messages (newest first) and by the control API.
#[test]
fn send_and_read_back() {
    let fake = Fake::start(NO_PRESSURE);
    let r = fake.send(
        C1,
        json!({"content": "hello", "tts": false, "embeds": [{"title": "t"}],
               "allowed_mentions": {"parse": []}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let m = r.json();
    assert_eq!(m["content"], "hello");
    assert_eq!(m["channel_id"], C1);
    assert_eq!(m["author"]["id"], BOT_A);
    assert_eq!(m["author"]["bot"], true);
    assert_eq!(m["type"], 0);
    assert_eq!(m["pinned"], false);
    assert!(m["edited_timestamp"].is_null());
    assert_eq!(m["embeds"][0]["title"], "t");
    assert_eq!(m["attachments"], json!([]));
    assert!(m.get("nonce").is_none());
    // The id is a snowflake of now.
    let id: u64 = id_of(&m).parse().unwrap();
    let minted = (id >> 22) + 1_420_070_400_000;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(now.abs_diff(minted) < 5_000);

    let page = fake
        .call(
            "GET",
            &format!("/channels/{C1}/messages?limit=2"),
            Body::None,
        )
        .json();
    assert_eq!(page[0]["id"], m["id"]);
    assert_eq!(page[0]["content"], "hello");
    assert_eq!(page[1]["content"], "message 5");

    let stored = fake.stored(C1);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], m["id"]);
    assert_eq!(stored[0]["allowed_mentions"], json!({"parse": []}));
    assert_eq!(stored[0]["enforce_nonce"], false);
}

// message.mdx "Allowed Mentions": absent means users and everyone are parsed.
#[test]
fn allowed_mentions_decides_mentions() {
    let fake = Fake::start(NO_PRESSURE);
    let content = "hi @everyone <@300000000000000002>";
    let m = fake.send(C1, json!({ "content": content })).json();
    assert_eq!(m["mention_everyone"], true);
    assert_eq!(m["mentions"][0]["id"], OPEN_USER);
    let m = fake
        .send(
            C1,
            json!({ "content": content, "allowed_mentions": {"parse": ["users"]} }),
        )
        .json();
    assert_eq!(m["mention_everyone"], false);
    assert_eq!(m["mentions"].as_array().unwrap().len(), 1);
    assert!(fake.stored(C1)[0]["allowed_mentions"].is_null());
}

// change-log 2024-02-12 / message.mdx `enforce_nonce`: the same author and
// nonce return the original message and create nothing, in any channel.
#[test]
fn nonce_dedup_with_enforce_nonce_returns_the_same_id() {
    let fake = Fake::start(NO_PRESSURE);
    let body = json!({"content": "once", "nonce": "n-1", "enforce_nonce": true});
    let first = fake.send(C1, body.clone());
    assert_eq!(first.status, 200, "{}", first.body);
    let again = fake.send(C1, body.clone());
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(again.json()["nonce"], "n-1");
    // Scoped to the author, not the channel.
    let elsewhere = fake.send(C2, body);
    assert_eq!(elsewhere.json()["id"], first.json()["id"]);
    assert_eq!(fake.stored(C1).len(), 1);
    assert_eq!(fake.stored(C2).len(), 0);
    // An integer nonce works the same way.
    let int = json!({"content": "int", "nonce": 12345, "enforce_nonce": true});
    let a = fake.send(C1, int.clone()).json();
    let b = fake.send(C1, int).json();
    assert_eq!(a["id"], b["id"]);
    assert_eq!(a["nonce"], 12345);
}

#[test]
fn without_enforce_nonce_a_repeated_nonce_makes_two_messages() {
    let fake = Fake::start(NO_PRESSURE);
    let body = json!({"content": "twice", "nonce": "n-2"});
    let a = fake.send(C1, body.clone()).json();
    let b = fake.send(C1, body).json();
    assert_ne!(a["id"], b["id"]);
    assert_eq!(fake.stored(C1).len(), 2);
}

#[test]
fn enforce_nonce_expires_after_the_window() {
    let mut args = NO_PRESSURE.to_vec();
    args.extend(["--nonce-window-ms", "200"]);
    let fake = Fake::start(&args);
    let body = json!({"content": "x", "nonce": "n-3", "enforce_nonce": true});
    let a = fake.send(C1, body.clone()).json();
    std::thread::sleep(Duration::from_millis(300));
    let b = fake.send(C1, body).json();
    assert_ne!(a["id"], b["id"]);
}

// PR #6647 (staff): a retry with the nonce of a deleted message is 404.
#[test]
fn nonce_of_a_deleted_message_is_404_10008() {
    let fake = Fake::start(NO_PRESSURE);
    let body = json!({"content": "gone", "nonce": "n-4", "enforce_nonce": true});
    let m = fake.send(C1, body.clone()).json();
    let r = fake.call(
        "DELETE",
        &format!("/channels/{C1}/messages/{}", id_of(&m)),
        Body::None,
    );
    assert_eq!(r.status, 204);
    assert_error(&fake.send(C1, body), 404, "Unknown Message", 10008);
    assert!(fake.stored(C1).is_empty());
}

#[test]
fn empty_message_is_400_50006() {
    let fake = Fake::start(NO_PRESSURE);
    for body in [
        json!({}),
        json!({"content": ""}),
        json!({"embeds": [], "nonce": "x"}),
    ] {
        assert_error(
            &fake.send(C1, body),
            400,
            "Cannot send an empty message",
            50006,
        );
    }
}

// message.mdx: content up to 2000 characters; reference.mdx error format.
#[test]
fn content_over_2000_is_50035_with_an_error_tree() {
    let fake = Fake::start(NO_PRESSURE);
    assert_eq!(
        fake.send(C1, json!({"content": "é".repeat(2000)})).status,
        200
    );
    let r = fake.send(C1, json!({"content": "x".repeat(2001)}));
    assert_error(&r, 400, "Invalid Form Body", 50035);
    assert_eq!(
        r.json()["errors"],
        json!({"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                                         "message": "Must be 2000 or fewer in length."}]}})
    );
    let r = fake.send(C1, json!({"content": "x", "nonce": "n".repeat(26)}));
    assert_error(&r, 400, "Invalid Form Body", 50035);
    assert!(r.json()["errors"]["nonce"]["_errors"].is_array());
}

#[test]
fn invalid_json_is_50109_and_other_content_types_are_50035() {
    let fake = Fake::start(NO_PRESSURE);
    let path = format!("/channels/{C1}/messages");
    let r = fake.call(
        "POST",
        &path,
        Body::Raw("application/json", b"{\"content\": ".to_vec()),
    );
    assert_error(&r, 400, "The request body contains invalid JSON.", 50109);
    let r = fake.call(
        "POST",
        &path,
        Body::Raw("text/plain", b"content=hi".to_vec()),
    );
    assert_error(&r, 400, "Invalid Form Body", 50035);
    assert!(r.json()["errors"]["_errors"][0]["code"].is_string());
}

// --- Channel access and types ----------------------------------------------

// permissions.mdx: a channel the bot sees but may not write to is 50013;
// reads still work there.
#[test]
fn read_only_channel_reads_but_every_write_is_403_50013() {
    let fake = Fake::start(NO_PRESSURE);
    let list = fake.call(
        "GET",
        &format!("/channels/{C_READ_ONLY}/messages"),
        Body::None,
    );
    assert_eq!(list.status, 200);
    let existing = id_of(&list.json()[0]);
    let writes = [
        fake.send(C_READ_ONLY, json!({"content": "x"})),
        fake.call(
            "DELETE",
            &format!("/channels/{C_READ_ONLY}/messages/{existing}"),
            Body::None,
        ),
        fake.call(
            "PUT",
            &format!("/channels/{C_READ_ONLY}/messages/{existing}/reactions/{THUMBS_UP}/@me"),
            Body::None,
        ),
        fake.call(
            "POST",
            &format!("/channels/{C_READ_ONLY}/typing"),
            Body::None,
        ),
    ];
    for r in &writes {
        assert_error(r, 403, "Missing Permissions", 50013);
    }
}

#[test]
fn channel_none_is_50001_unknown_is_10003_voice_is_50008() {
    let fake = Fake::start(NO_PRESSURE);
    let body = json!({"content": "x"});
    assert_error(
        &fake.send(C_NONE, body.clone()),
        403,
        "Missing Access",
        50001,
    );
    assert_error(
        &fake.send(C_UNKNOWN, body.clone()),
        404,
        "Unknown Channel",
        10003,
    );
    assert_error(
        &fake.send(C_VOICE, body),
        400,
        "Cannot send messages in a non-text channel",
        50008,
    );
}

// --- DMs (user.mdx "Create DM") ------------------------------------------------

fn open_dm(fake: &Fake, user: &str) -> Value {
    let r = fake.call(
        "POST",
        "/users/@me/channels",
        Body::Json(json!({ "recipient_id": user })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn dm_channel_id_is_stable_and_sending_works() {
    let fake = Fake::start(NO_PRESSURE);
    let dm = open_dm(&fake, OPEN_USER);
    assert_eq!(dm["type"], 1);
    assert_eq!(dm["recipients"][0]["id"], OPEN_USER);
    assert_eq!(open_dm(&fake, OPEN_USER)["id"], dm["id"]);
    let channel = dm["id"].as_str().unwrap();
    let m = fake.send(channel, json!({"content": "psst"}));
    assert_eq!(m.status, 200, "{}", m.body);
    assert_eq!(fake.stored(channel).len(), 1);
    // After a reset the same recipient still gets the same channel.
    fake.control_post("/_fake/reset", json!({}));
    assert_eq!(open_dm(&fake, OPEN_USER)["id"], dm["id"]);
    assert!(fake.stored(channel).is_empty());
    let r = fake.call(
        "POST",
        "/users/@me/channels",
        Body::Json(json!({"recipient_id": "bob"})),
    );
    assert_error(&r, 400, "Invalid Form Body", 50035);
    assert!(r.json()["errors"]["recipient_id"].is_object());
}

// opcodes 50007: "Cannot send messages to this user" (DMs closed).
#[test]
fn dm_to_a_closed_user_is_403_50007() {
    let fake = Fake::start(NO_PRESSURE);
    let dm = open_dm(&fake, CLOSED_USER);
    let r = fake.send(dm["id"].as_str().unwrap(), json!({"content": "hi"}));
    assert_error(&r, 403, "Cannot send messages to this user", 50007);
}

// --- Edit and delete (message.mdx) --------------------------------------------

#[test]
fn edit_own_message_sets_edited_timestamp_and_others_are_50005() {
    let fake = Fake::start(NO_PRESSURE);
    let m = fake.create("before");
    let path = format!("/channels/{C1}/messages/{}", id_of(&m));
    let r = fake.call("PATCH", &path, Body::Json(json!({"content": "after"})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["content"], "after");
    assert!(r.json()["edited_timestamp"].is_string());
    assert_eq!(fake.stored(C1)[0]["content"], "after");
    let generated = fake.generated_ids(C1)[0].clone();
    let r = fake.call(
        "PATCH",
        &format!("/channels/{C1}/messages/{generated}"),
        Body::Json(json!({"content": "hijack"})),
    );
    assert_error(
        &r,
        403,
        "Cannot edit a message authored by another user",
        50005,
    );
    let r = fake.call(
        "PATCH",
        &format!("/channels/{C1}/messages/{}", snowflake_aged(1000)),
        Body::Json(json!({"content": "x"})),
    );
    assert_error(&r, 404, "Unknown Message", 10008);
}

#[test]
fn delete_is_204_then_404_and_generated_messages_leave_the_listing() {
    let fake = Fake::start(NO_PRESSURE);
    let m = fake.create("bye");
    let path = format!("/channels/{C1}/messages/{}", id_of(&m));
    assert_eq!(fake.call("DELETE", &path, Body::None).status, 204);
    assert_error(
        &fake.call("DELETE", &path, Body::None),
        404,
        "Unknown Message",
        10008,
    );
    let generated = fake.generated_ids(C1);
    let newest = generated.last().unwrap();
    let r = fake.call(
        "DELETE",
        &format!("/channels/{C1}/messages/{newest}"),
        Body::None,
    );
    assert_eq!(r.status, 204);
    let page = fake
        .call("GET", &format!("/channels/{C1}/messages"), Body::None)
        .json();
    let listed: Vec<String> = page.as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(listed.len(), 4);
    assert!(!listed.contains(newest));
    assert!(!listed.contains(&id_of(&m)));
}

// discord-api-docs #8330: delete buckets by message age; a 404 lands in
// the young bucket.
#[test]
fn delete_age_buckets_have_distinct_hashes() {
    let fake = Fake::start(NO_PRESSURE);
    let young = fake.create("new");
    let old = fake.generated_ids(C1)[0].clone();
    let del = |id: &str| {
        fake.call(
            "DELETE",
            &format!("/channels/{C1}/messages/{id}"),
            Body::None,
        )
    };
    let y = del(&id_of(&young));
    let o = del(&old);
    let missing = del(&snowflake_aged(3 * 86_400_000));
    assert_eq!((y.status, o.status, missing.status), (204, 204, 404));
    assert_eq!(y.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(o.header("x-ratelimit-limit"), Some("30"));
    assert_ne!(
        y.header("x-ratelimit-bucket"),
        o.header("x-ratelimit-bucket")
    );
    assert_eq!(
        missing.header("x-ratelimit-bucket"),
        y.header("x-ratelimit-bucket")
    );
    assert_eq!(missing.header("x-ratelimit-remaining"), Some("3"));
}

// message.mdx "Bulk Delete Messages".
#[test]
fn bulk_delete_rules() {
    let fake = Fake::start(NO_PRESSURE);
    let path = format!("/channels/{C1}/messages/bulk-delete");
    let bulk = |ids: Value| fake.call("POST", &path, Body::Json(json!({ "messages": ids })));
    let a = id_of(&fake.create("a"));
    let b = id_of(&fake.create("b"));
    let r = bulk(json!([a]));
    assert_error(&r, 400, "Invalid Form Body", 50035);
    assert!(r.json()["errors"]["messages"]["_errors"].is_array());
    let many: Vec<String> = (0..101).map(|i| snowflake_aged(1000 + i)).collect();
    assert_error(&bulk(json!(many)), 400, "Invalid Form Body", 50035);
    assert_error(&bulk(json!([a, a])), 400, "Invalid Form Body", 50035);
    let old = fake.generated_ids(C1)[0].clone();
    assert_error(
        &bulk(json!([a, old])),
        400,
        "You can only bulk delete messages that are under 14 days old.",
        50034,
    );
    // Unknown ids are fine and count toward the 2..100.
    let unknown = snowflake_aged(86_400_000);
    assert_eq!(bulk(json!([a, b, unknown])).status, 204);
    assert!(fake.stored(C1).is_empty());
    assert_eq!(bulk(json!([unknown, snowflake_aged(5000)])).status, 204);
}

#[test]
fn typing_is_204() {
    let fake = Fake::start(NO_PRESSURE);
    let r = fake.call("POST", &format!("/channels/{C1}/typing"), Body::None);
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
}

// --- Reactions (message.mdx "Create Reaction") ------------------------------

#[test]
fn reaction_with_percent_encoded_emoji_is_204_and_recorded() {
    let fake = Fake::start(NO_LIMITS);
    let m = id_of(&fake.create("react to me"));
    let base = format!("/channels/{C1}/messages/{m}/reactions");
    assert_eq!(
        fake.call("PUT", &format!("{base}/{THUMBS_UP}/@me"), Body::None)
            .status,
        204
    );
    assert_eq!(fake.reactions(C1, &m), json!({"👍": [BOT_A]}));
    assert_eq!(
        fake.call("DELETE", &format!("{base}/{THUMBS_UP}/@me"), Body::None)
            .status,
        204
    );
    assert_eq!(fake.reactions(C1, &m), json!({}));
    let unknown = fake.call(
        "PUT",
        &format!(
            "/channels/{C1}/messages/{}/reactions/{THUMBS_UP}/@me",
            snowflake_aged(1)
        ),
        Body::None,
    );
    assert_error(&unknown, 404, "Unknown Message", 10008);
}

#[test]
fn reaction_custom_emoji_name_id_is_accepted_raw_or_encoded() {
    let fake = Fake::start(NO_LIMITS);
    let m = id_of(&fake.create("custom"));
    let base = format!("/channels/{C1}/messages/{m}/reactions");
    for emoji in ["blob:123456789012345678", "blob%3A123456789012345678"] {
        let r = fake.call("PUT", &format!("{base}/{emoji}/@me"), Body::None);
        assert_eq!(r.status, 204, "{emoji}: {}", r.body);
    }
    assert_eq!(
        fake.reactions(C1, &m),
        json!({"blob:123456789012345678": [BOT_A]})
    );
}

#[test]
fn reaction_with_double_encoded_emoji_is_10014() {
    let fake = Fake::start(NO_LIMITS);
    let m = id_of(&fake.create("x"));
    for emoji in ["%25F0%259F%2591%258D", "thumbsup"] {
        let r = fake.call(
            "PUT",
            &format!("/channels/{C1}/messages/{m}/reactions/{emoji}/@me"),
            Body::None,
        );
        assert_error(&r, 400, "Unknown Emoji", 10014);
    }
}

#[test]
fn reaction_with_raw_utf8_emoji_is_10014() {
    let fake = Fake::start(NO_LIMITS);
    let m = id_of(&fake.create("x"));
    let request = format!(
        "PUT /api/v10/channels/{C1}/messages/{m}/reactions/👍/@me HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bot {TOKEN_A}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let out = raw_exchange(&fake.addr(), request.as_bytes(), Duration::from_secs(5));
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("\"code\":10014"), "{out}");
}

// discord-api-docs #182, nirn `reactions/!modify`: PUT and DELETE share one
// bucket per channel, 1 per 250 ms.
#[test]
fn reactions_put_and_delete_share_one_bucket() {
    let fake = Fake::start(&["--route-limit", "10000", "--global-limit", "10000"]);
    let m = id_of(&fake.create("x"));
    let path = format!("/channels/{C1}/messages/{m}/reactions/{THUMBS_UP}/@me");
    let put = fake.call("PUT", &path, Body::None);
    assert_eq!(put.status, 204);
    assert_eq!(put.header("x-ratelimit-limit"), Some("1"));
    assert_eq!(put.header("x-ratelimit-remaining"), Some("0"));
    let del = fake.call("DELETE", &path, Body::None);
    assert_eq!(del.status, 429);
    assert_eq!(del.header("x-ratelimit-scope"), Some("user"));
    assert_eq!(
        del.header("x-ratelimit-bucket"),
        put.header("x-ratelimit-bucket")
    );
    let retry_after = del.json()["retry_after"].as_f64().unwrap();
    assert!(retry_after > 0.0 && retry_after <= 0.25, "{retry_after}");
    std::thread::sleep(Duration::from_secs_f64(retry_after));
    assert_eq!(fake.call("DELETE", &path, Body::None).status, 204);
}

// --- Send bucket (WRITES-NOTES §1.8: 5 per 5 s per channel, create and edit) --

#[test]
fn send_bucket_is_honest_5_then_429_with_retry_after() {
    let fake = Fake::start(&["--route-limit", "10000", "--global-limit", "10000"]);
    let mut remaining = Vec::new();
    let mut last = None;
    for i in 0..4 {
        let r = fake.send(C1, json!({"content": format!("m{i}")}));
        assert_eq!(r.status, 200);
        remaining.push(r.header("x-ratelimit-remaining").unwrap().to_string());
        last = Some(r.json());
    }
    // An edit counts against the same bucket.
    let edit = fake.call(
        "PATCH",
        &format!("/channels/{C1}/messages/{}", id_of(last.as_ref().unwrap())),
        Body::Json(json!({"content": "edited"})),
    );
    assert_eq!(edit.status, 200);
    remaining.push(edit.header("x-ratelimit-remaining").unwrap().to_string());
    assert_eq!(remaining, ["4", "3", "2", "1", "0"]);
    let r = fake.send(C1, json!({"content": "one too many"}));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-ratelimit-scope"), Some("user"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
    let retry_after = r.json()["retry_after"].as_f64().unwrap();
    assert!(retry_after > 4.0 && retry_after <= 5.0, "{retry_after}");
    assert_eq!(r.header("retry-after"), Some("5"));
    // Another channel has its own bucket with the same hash.
    let other = fake.send(C2, json!({"content": "fine"}));
    assert_eq!(other.status, 200);
    assert_eq!(
        other.header("x-ratelimit-bucket"),
        r.header("x-ratelimit-bucket")
    );
    assert_eq!(fake.stored(C1).len(), 4);
}

// --- Faults -------------------------------------------------------------------

#[test]
fn write_then_502_performs_the_write() {
    let fake = Fake::start(NO_PRESSURE);
    fake.fault(json!({"kind": "write_then_502"}));
    let body = json!({"content": "maybe", "nonce": "n-5", "enforce_nonce": true});
    let r = fake.send(C1, body.clone());
    assert_error(&r, 502, "502 Bad Gateway", 0);
    let stored = fake.stored(C1);
    assert_eq!(stored.len(), 1);
    // The retry with the same nonce gets the message that was created.
    let retry = fake.send(C1, body);
    assert_eq!(retry.json()["id"], stored[0]["id"]);
    assert_eq!(fake.stored(C1).len(), 1);
}

#[test]
fn write_then_drop_performs_the_write() {
    let fake = Fake::start(NO_PRESSURE);
    let m = fake.create("doomed");
    fake.fault(json!({"kind": "write_then_drop"}));
    let r = fake.call_with(
        &agent(None),
        "DELETE",
        &format!("/channels/{C1}/messages/{}", id_of(&m)),
        TOKEN_A,
        Body::None,
        &[],
    );
    assert!(r.is_err());
    assert!(fake.stored(C1).is_empty());
    let log = fake.control_get("/_fake/requests");
    let last = log.as_array().unwrap().last().unwrap();
    assert!(last["status"].is_null());
    assert_eq!(last["fault"], "write_then_drop");
}

#[test]
fn write_then_hang_performs_the_write() {
    let fake = Fake::start(NO_PRESSURE);
    fake.fault(json!({"kind": "write_then_hang", "ms": 2000}));
    let r = fake.call_with(
        &agent(Some(Duration::from_millis(400))),
        "POST",
        &format!("/channels/{C1}/messages"),
        TOKEN_A,
        Body::Json(json!({"content": "slow"})),
        &[],
    );
    assert!(r.is_err());
    assert_eq!(fake.stored(C1).len(), 1);
    assert_eq!(fake.stored(C1)[0]["content"], "slow");
}

// discord-api-docs PR #8290: the channel write limit, code 20028.
#[test]
fn sublimit_429_shape_and_headers() {
    let fake = Fake::start(&["--route-limit", "10000", "--global-limit", "10000"]);
    fake.create("first");
    fake.fault(json!({"kind": "sublimit_429"}));
    let r = fake.send(C1, json!({"content": "second"}));
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json(),
        json!({"message": "The write action you are performing on the channel has hit the write rate limit.",
               "retry_after": 0.3, "global": false, "code": 20028})
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-ratelimit-scope"), Some("shared"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("4"));
    // The bucket was not consumed, nothing was created, nothing counted.
    let next = fake.send(C1, json!({"content": "second"}));
    assert_eq!(next.header("x-ratelimit-remaining"), Some("3"));
    assert_eq!(
        next.header("x-ratelimit-bucket"),
        r.header("x-ratelimit-bucket")
    );
    assert_eq!(fake.stored(C1).len(), 2);
    let stats = fake.control_get("/_fake/stats");
    assert_eq!(stats["invalid_requests"]["counted"], 0);
    fake.fault(json!({"kind": "sublimit_429", "retry_after": 582}));
    let r = fake.send(C1, json!({"content": "third"}));
    assert_eq!(r.json()["retry_after"], 582.0);
    assert_eq!(r.header("retry-after"), Some("582"));
}

// --- Uploads (reference.mdx "Uploading Files") --------------------------------

#[test]
fn multipart_with_payload_json_and_files_creates_attachments() {
    let fake = Fake::start(NO_PRESSURE);
    let (ct, body) = multipart(
        Some(
            json!({"content": "files", "nonce": "up-1", "enforce_nonce": true,
                    "attachments": [{"id": 0, "description": "first"}]}),
        ),
        &[("a.txt", b"hello"), ("b.bin", &[0u8, 159, 146, 150])],
    );
    let path = format!("/channels/{C1}/messages");
    let r = fake.call("POST", &path, Body::Raw(&ct, body.clone()));
    assert_eq!(r.status, 200, "{}", r.body);
    let m = r.json();
    assert_eq!(m["content"], "files");
    let att = m["attachments"].as_array().unwrap();
    assert_eq!(att.len(), 2);
    assert_eq!(att[0]["filename"], "a.txt");
    assert_eq!(att[0]["size"], 5);
    assert_eq!(att[0]["description"], "first");
    assert_eq!(att[0]["content_type"], "application/octet-stream");
    assert_eq!(att[1]["size"], 4);
    // The same upload again is deduplicated, attachment ids included.
    let again = fake.call("POST", &path, Body::Raw(&ct, body)).json();
    assert_eq!(again["id"], m["id"]);
    assert_eq!(again["attachments"][0]["id"], att[0]["id"]);
    let log = fake.control_get("/_fake/requests");
    assert_eq!(log[0]["nonce"], "up-1");
    assert_eq!(log[0]["body_hash"], log[1]["body_hash"]);
    assert!(
        log[0]["body"].is_null(),
        "binary bodies are not logged as text"
    );
}

#[test]
fn multipart_with_11_files_is_30015_and_a_file_part_needs_a_filename() {
    let fake = Fake::start(NO_PRESSURE);
    let files: Vec<(&str, &[u8])> = (0..11).map(|_| ("f.txt", &b"x"[..])).collect();
    let (ct, body) = multipart(Some(json!({"content": "many"})), &files);
    let path = format!("/channels/{C1}/messages");
    let r = fake.call("POST", &path, Body::Raw(&ct, body));
    assert_error(
        &r,
        400,
        "Maximum number of attachments in a message reached (10)",
        30015,
    );
    let ct = "multipart/form-data; boundary=B";
    let body = b"--B\r\nContent-Disposition: form-data; name=\"files[0]\"\r\n\r\nx\r\n--B--\r\n";
    let r = fake.call("POST", &path, Body::Raw(ct, body.to_vec()));
    assert_error(&r, 400, "Invalid Form Body", 50035);
    assert!(fake.stored(C1).is_empty());
}

#[test]
fn file_over_max_file_bytes_is_413_50045() {
    let mut args = NO_PRESSURE.to_vec();
    args.extend(["--max-file-bytes", "1000"]);
    let fake = Fake::start(&args);
    let big = vec![b'x'; 1001];
    let (ct, body) = multipart(Some(json!({"content": "big"})), &[("big.txt", &big)]);
    let r = fake.call(
        "POST",
        &format!("/channels/{C1}/messages"),
        Body::Raw(&ct, body),
    );
    assert_error(&r, 413, "File uploaded exceeds the maximum size", 50045);
}

// message.mdx: "The maximum request size when sending a message is 25 MiB";
// the fake decides from Content-Length and never reads the body.
#[test]
fn request_over_max_request_bytes_is_413_40005_without_reading_the_body() {
    let mut args = NO_PRESSURE.to_vec();
    args.extend(["--max-request-bytes", "1000"]);
    let fake = Fake::start(&args);
    let head = format!(
        "POST /api/v10/channels/{C1}/messages HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bot {TOKEN_A}\r\nContent-Type: application/json\r\n\
         Content-Length: 50000000\r\n\r\n"
    );
    // Only the head is sent: the answer must come anyway.
    let out = raw_exchange(&fake.addr(), head.as_bytes(), Duration::from_secs(5));
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("\"code\":40005"), "{out}");
    assert!(out.contains("Request entity too large"), "{out}");
    let log = fake.control_get("/_fake/requests");
    assert_eq!(log[0]["status"], 413);
    assert_eq!(log[0]["body_len"], 0);
}

// --- Observation --------------------------------------------------------------

#[test]
fn request_log_records_headers_body_nonce_and_audit_reason() {
    let fake = Fake::start(NO_PRESSURE);
    let body = json!({"content": "logged", "nonce": 42});
    let r = fake
        .call_with(
            &fake.agent,
            "POST",
            &format!("/channels/{C1}/messages"),
            TOKEN_A,
            Body::Json(body.clone()),
            &[("X-Audit-Log-Reason", "spam%20cleanup%20%E2%9C%93")],
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let e = &fake.control_get("/_fake/requests")[0];
    let headers: Vec<&str> = e["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(headers.contains(&"authorization"), "{headers:?}");
    assert!(headers.contains(&"x-audit-log-reason"), "{headers:?}");
    assert!(headers.iter().all(|h| *h == h.to_ascii_lowercase()));
    assert_eq!(e["content_type"], "application/json");
    let raw = body.to_string();
    assert_eq!(e["body_len"], raw.len());
    assert_eq!(e["body"], raw);
    assert_eq!(e["body_hash"].as_str().unwrap().len(), 16);
    assert_eq!(e["nonce"], 42);
    assert_eq!(e["audit_log_reason"], "spam%20cleanup%20%E2%9C%93");
    assert_eq!(e["audit_log_reason_decoded"], "spam cleanup ✓");
    let get = fake.call("GET", "/users/@me", Body::None);
    assert_eq!(get.status, 200);
    let e = &fake.control_get("/_fake/requests")[1];
    assert!(e["audit_log_reason"].is_null());
    assert!(e["nonce"].is_null());
    assert_eq!(e["body_len"], 0);
}

#[test]
fn reset_clears_messages_deletions_reactions_and_nonces() {
    let fake = Fake::start(NO_PRESSURE);
    let body = json!({"content": "x", "nonce": "n-6", "enforce_nonce": true});
    let m = fake.send(C1, body.clone()).json();
    let old = fake.generated_ids(C1)[0].clone();
    fake.call(
        "DELETE",
        &format!("/channels/{C1}/messages/{old}"),
        Body::None,
    );
    let other = fake.generated_ids(C1)[1].clone();
    let reacted = fake.call(
        "PUT",
        &format!("/channels/{C1}/messages/{other}/reactions/{THUMBS_UP}/@me"),
        Body::None,
    );
    assert_eq!(reacted.status, 204);
    assert_eq!(fake.reactions(C1, &other), json!({"👍": [BOT_A]}));
    fake.control_post("/_fake/reset", json!({}));
    assert!(fake.stored(C1).is_empty());
    assert_eq!(fake.reactions(C1, &other), json!({}));
    let page = fake
        .call("GET", &format!("/channels/{C1}/messages"), Body::None)
        .json();
    assert_eq!(page.as_array().unwrap().len(), 5);
    assert_ne!(fake.send(C1, body).json()["id"], m["id"]);
}
