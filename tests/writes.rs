//! contract: API.md "Writing" and "Never twice: idempotency", against the
//! real binary and the fake Discord, one behaviour per test.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::world::*;
use support::{Fake, Reply, Service};

const READ_ONLY: &str = "700000000000000009";
const DM_USER: &str = "600000000000000001";
const DM_CLOSED_USER: &str = "600000000000000002";

/// The standard world plus a channel the bot may read but not write to,
/// and a user whose DMs are closed.
fn world() -> Value {
    let mut world = standard();
    world["guilds"][0]["channels"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": READ_ONLY, "name": "announcements", "type": 0, "message_count": 3, "access": "read_only"}));
    world["dm_closed_users"] = json!([DM_CLOSED_USER]);
    world
}

type Setup = support::Logged;

fn setup(flags: &[&str]) -> Setup {
    Setup::start(&world(), &[], flags)
}

impl Setup {
    fn send(&self, content: &str, headers: &[(&str, &str)]) -> Reply {
        self.write(
            "POST",
            &format!("/api/messages?channelId={GENERAL}"),
            headers,
            Some(&json!({ "content": content })),
        )
    }

    fn created(&self) -> Vec<Value> {
        self.fake.created_messages(GENERAL)
    }

    fn sends_seen(&self) -> usize {
        self.fake
            .requests_to("POST", &format!("/channels/{GENERAL}/messages"))
            .len()
    }
}

/// A message ID made now, as Discord would.
fn fresh_id(n: u64) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    (((ms - 1_420_070_400_000) << 22) + n).to_string()
}

#[test]
fn sending_a_message_answers_201_with_discords_message_and_a_key() {
    let s = setup(&[]);
    let reply = s.send("hello", &[]);
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.json()["content"], "hello");
    assert_eq!(reply.json()["channel_id"], GENERAL);
    let key = reply.header("idempotency-key").expect("a key is returned");
    assert!(!key.is_empty());
    assert_eq!(s.created().len(), 1);
}

#[test]
fn a_send_carries_a_derived_nonce_with_enforce_nonce_never_the_key() {
    let s = setup(&[]);
    let reply = s.send("hello", &[("Idempotency-Key", "order-17")]);
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.header("idempotency-key"), Some("order-17"));
    let created = s.created();
    let nonce = created[0]["nonce"].as_str().expect("a nonce was sent");
    assert!((1..=25).contains(&nonce.len()), "{nonce}");
    assert!(!nonce.contains("order-17"));
    assert_eq!(created[0]["enforce_nonce"], true);
}

#[test]
fn a_message_without_allowed_mentions_gets_the_default() {
    let s = setup(&[]);
    assert_eq!(s.send("@everyone hi", &[]).status, 201);
    assert_eq!(
        s.created()[0]["allowed_mentions"],
        json!({"parse": ["users"]})
    );
}

#[test]
fn an_explicit_allowed_mentions_is_sent_unchanged() {
    let s = setup(&[]);
    let body = json!({"content": "hi", "allowed_mentions": {}});
    let reply = s.write(
        "POST",
        &format!("/api/messages?channelId={GENERAL}"),
        &[],
        Some(&body),
    );
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(s.created()[0]["allowed_mentions"], json!({}));
}

#[test]
fn default_allowed_mentions_discord_adds_nothing() {
    let s = setup(&["--default-allowed-mentions", "discord"]);
    assert_eq!(s.send("hi", &[]).status, 201);
    assert_eq!(s.created()[0]["allowed_mentions"], Value::Null);
}

#[test]
fn a_client_nonce_is_refused_and_never_reaches_discord() {
    let s = setup(&[]);
    for field in ["nonce", "enforce_nonce"] {
        let body = json!({"content": "hi", field: "1"});
        let reply = s.write(
            "POST",
            &format!("/api/messages?channelId={GENERAL}"),
            &[],
            Some(&body),
        );
        assert_eq!(reply.status, 400, "{reply:?}");
        assert!(reply.error().contains(field));
    }
    assert_eq!(s.sends_seen(), 0);
}

#[test]
fn the_same_key_and_request_again_replays_the_answer_without_discord() {
    let s = setup(&[]);
    let first = s.send("once", &[("Idempotency-Key", "k-1")]);
    assert_eq!(first.status, 201);
    let again = s.send("once", &[("Idempotency-Key", "\"k-1\"")]);
    assert_eq!(again.status, 201, "{again:?}");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json(), first.json());
    assert_eq!(s.sends_seen(), 1);
}

#[test]
fn the_same_key_with_a_different_body_is_422_and_never_reaches_discord() {
    let s = setup(&[]);
    assert_eq!(s.send("one", &[("Idempotency-Key", "k-2")]).status, 201);
    let other = s.send("two", &[("Idempotency-Key", "k-2")]);
    assert_eq!(other.status, 422, "{other:?}");
    assert_eq!(s.sends_seen(), 1);
}

#[test]
fn keys_belong_to_the_bot_and_every_session_shares_them() {
    let s = setup(&[]);
    assert_eq!(s.send("shared", &[("Idempotency-Key", "k-3")]).status, 201);
    let other_session = s.service.session(TOKEN);
    let reply = s.service.request(
        "POST",
        &format!("/api/messages?channelId={GENERAL}"),
        &[
            ("Authorization", &other_session),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", "k-3"),
        ],
        Some(&json!({"content": "shared"}).to_string()),
    );
    assert_eq!(reply.status, 201);
    assert_eq!(reply.header("idempotent-replayed"), Some("true"));
    assert_eq!(s.sends_seen(), 1);
}

#[test]
fn a_malformed_idempotency_key_is_400() {
    let s = setup(&[]);
    for bad in ["has space", "ключ", &"k".repeat(256)] {
        let reply = s.send("x", &[("Idempotency-Key", bad)]);
        assert_eq!(reply.status, 400, "{bad}: {reply:?}");
    }
    assert_eq!(s.sends_seen(), 0);
}

#[test]
fn two_concurrent_requests_with_one_key_reach_discord_once() {
    let s = setup(&[]);
    s.fake
        .fault(json!({"kind": "latency", "ms": 400, "path_contains": "/messages"}));
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let a = scope.spawn(|| s.send("race", &[("Idempotency-Key", "k-race")]).status);
        std::thread::sleep(Duration::from_millis(100));
        let b = scope.spawn(|| s.send("race", &[("Idempotency-Key", "k-race")]).status);
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    assert_eq!(
        statuses,
        vec![201, 409],
        "the second one finds the key in use"
    );
    assert_eq!(s.sends_seen(), 1);
}

#[test]
fn a_key_in_use_answers_409_with_retry_after() {
    let s = setup(&[]);
    s.fake
        .fault(json!({"kind": "latency", "ms": 400, "path_contains": "/messages"}));
    std::thread::scope(|scope| {
        scope.spawn(|| s.send("slow", &[("Idempotency-Key", "k-409")]));
        std::thread::sleep(Duration::from_millis(100));
        let busy = s.send("slow", &[("Idempotency-Key", "k-409")]);
        assert_eq!(busy.status, 409, "{busy:?}");
        assert!(busy.header("retry-after").is_some());
    });
}

#[test]
fn a_send_done_by_discord_whose_answer_hangs_exists_once_after_the_client_retries() {
    let s = setup(&["--upstream-timeout", "400"]);
    // Both the service's own re-send and the first attempt hang after the
    // fake stored the message.
    s.fake.fault(
        json!({"kind": "write_then_hang", "ms": 1500, "count": 2, "path_contains": "/messages"}),
    );
    let first = s.send("exactly once", &[]);
    assert_eq!(first.status, 504, "{first:?}");
    assert_eq!(first.json()["outcome"], "unknown");
    assert_eq!(first.json()["retrySafe"], true);
    let key = first.header("idempotency-key").unwrap().to_string();
    let retry = s.send("exactly once", &[("Idempotency-Key", &key)]);
    assert_eq!(retry.status, 201, "{retry:?}");
    let created = s.created();
    assert_eq!(created.len(), 1, "one message: {created:?}");
    assert_eq!(retry.json()["id"], created[0]["id"]);
}

#[test]
fn a_send_whose_connection_drops_is_resent_once_with_the_same_nonce() {
    let s = setup(&[]);
    s.fake
        .fault(json!({"kind": "write_then_drop", "path_contains": "/messages"}));
    let reply = s.send("dropped", &[]);
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(s.created().len(), 1);
    let sends = s.fake.requests_to("POST", "/messages");
    assert_eq!(sends.len(), 2);
    assert_eq!(sends[0]["nonce"], sends[1]["nonce"]);
}

#[test]
fn an_edit_whose_answer_is_lost_is_not_resent_and_says_unknown() {
    let s = setup(&[]);
    let sent = s.send("before", &[]).json();
    let id = sent["id"].as_str().unwrap();
    s.fake
        .fault(json!({"kind": "write_then_502", "path_contains": "/messages/"}));
    let path = format!("/api/messages?channelId={GENERAL}&messageId={id}");
    let body = json!({"content": "after"});
    let edit = s.write(
        "PATCH",
        &path,
        &[("Idempotency-Key", "edit-1")],
        Some(&body),
    );
    assert_eq!(edit.status, 502, "{edit:?}");
    assert_eq!(edit.json()["outcome"], "unknown");
    assert_eq!(edit.json()["retrySafe"], false);
    assert_eq!(s.fake.requests_to("PATCH", id).len(), 1);
    let again = s.write(
        "PATCH",
        &path,
        &[("Idempotency-Key", "edit-1")],
        Some(&body),
    );
    assert_eq!(again.status, 502);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(s.fake.requests_to("PATCH", id).len(), 1);
}

#[test]
fn discords_400_comes_back_with_its_code_and_errors_tree() {
    let s = setup(&[]);
    let reply = s.send(&"x".repeat(2001), &[]);
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.json()["code"], 50035);
    assert!(reply.json()["errors"]["content"].is_object(), "{reply:?}");
}

#[test]
fn an_empty_message_is_discords_50006() {
    let s = setup(&[]);
    let reply = s.write(
        "POST",
        &format!("/api/messages?channelId={GENERAL}"),
        &[],
        Some(&json!({})),
    );
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.json()["code"], 50006);
}

#[test]
fn a_body_that_is_not_json_is_415() {
    let s = setup(&[]);
    let reply = s.service.request(
        "POST",
        &format!("/api/messages?channelId={GENERAL}"),
        &[
            ("Authorization", &s.session),
            ("Content-Type", "text/plain"),
        ],
        Some("hi"),
    );
    assert_eq!(reply.status, 415, "{reply:?}");
}

#[test]
fn editing_a_message_answers_200_with_the_edited_message() {
    let s = setup(&[]);
    let id = s.send("v1", &[]).json()["id"].as_str().unwrap().to_string();
    let reply = s.write(
        "PATCH",
        &format!("/api/messages?channelId={GENERAL}&messageId={id}"),
        &[],
        Some(&json!({"content": "v2"})),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["content"], "v2");
}

#[test]
fn deleting_a_message_answers_204_and_an_unknown_one_404_with_discords_code() {
    let s = setup(&[]);
    let id = s.send("bye", &[]).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/messages?channelId={GENERAL}&messageId={id}");
    let reply = s.write("DELETE", &path, &[], None);
    assert_eq!(reply.status, 204, "{reply:?}");
    assert!(s.created().is_empty());
    let again = s.write("DELETE", &path, &[], None);
    assert_eq!(again.status, 404, "{again:?}");
    assert_eq!(again.json()["code"], 10008);
}

#[test]
fn bulk_delete_rules_are_checked_before_discord_is_asked() {
    let s = setup(&[]);
    let path = format!("/api/messages/bulk-delete?channelId={GENERAL}");
    let one = json!({"messages": [fresh_id(1)]});
    let many = json!({"messages": (0..101).map(fresh_id).collect::<Vec<_>>()});
    let twice = json!({"messages": [fresh_id(1), fresh_id(1)]});
    let old = json!({"messages": [fresh_id(1), "100000000000000000"]});
    for body in [one, many, twice, old] {
        let reply = s.write("POST", &path, &[], Some(&body));
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
    }
    assert!(s.fake.requests_to("POST", "bulk-delete").is_empty());
}

#[test]
fn bulk_delete_of_young_messages_answers_204() {
    let s = setup(&[]);
    let a = s.send("a", &[]).json()["id"].as_str().unwrap().to_string();
    let b = s.send("b", &[]).json()["id"].as_str().unwrap().to_string();
    let reply = s.write(
        "POST",
        &format!("/api/messages/bulk-delete?channelId={GENERAL}"),
        &[],
        Some(&json!({"messages": [a, b]})),
    );
    assert_eq!(reply.status, 204, "{reply:?}");
    assert!(s.created().is_empty());
}

#[test]
fn a_unicode_reaction_is_encoded_exactly_once() {
    let s = setup(&[]);
    let id = s.send("react to me", &[]).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = s.write(
        "PUT",
        &format!("/api/reactions?channelId={GENERAL}&messageId={id}&emoji=%F0%9F%91%8D"),
        &[],
        None,
    );
    assert_eq!(reply.status, 204, "{reply:?}");
    let puts = s.fake.requests_to("PUT", "/reactions/");
    assert!(
        puts[0]["target"]
            .as_str()
            .unwrap()
            .contains("/reactions/%F0%9F%91%8D/@me"),
        "{puts:?}"
    );
    assert_eq!(puts[0]["status"], 204);
}

#[test]
fn a_custom_emoji_reaction_is_name_and_id_and_can_be_removed() {
    let s = setup(&[]);
    let id = s.send("custom", &[]).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path =
        format!("/api/reactions?channelId={GENERAL}&messageId={id}&emoji=party:123456789012345678");
    assert_eq!(s.write("PUT", &path, &[], None).status, 204);
    let removed = s.write("DELETE", &path, &[], None);
    assert_eq!(removed.status, 204, "{removed:?}");
}

#[test]
fn an_emoji_that_is_not_one_is_400_and_never_reaches_discord() {
    let s = setup(&[]);
    for bad in ["abc", "%25F0%259F", "a%20b", ""] {
        let path = format!("/api/reactions?channelId={GENERAL}&messageId=1&emoji={bad}");
        assert_eq!(s.write("PUT", &path, &[], None).status, 400, "{bad}");
    }
    assert!(s.fake.requests_to("PUT", "/reactions/").is_empty());
}

#[test]
fn a_dm_opens_the_channel_and_sends_with_201() {
    let s = setup(&[]);
    let reply = s.write(
        "POST",
        &format!("/api/dm?userId={DM_USER}"),
        &[],
        Some(&json!({"content": "psst"})),
    );
    assert_eq!(reply.status, 201, "{reply:?}");
    assert!(reply.header("idempotency-key").is_some());
    assert_eq!(s.fake.requests_to("POST", "/users/@me/channels").len(), 1);
    let again = s.write(
        "POST",
        &format!("/api/dm?userId={DM_USER}"),
        &[],
        Some(&json!({"content": "again"})),
    );
    assert_eq!(again.status, 201);
    assert_eq!(
        s.fake.requests_to("POST", "/users/@me/channels").len(),
        1,
        "the DM channel is remembered"
    );
}

#[test]
fn a_dm_to_a_user_with_closed_dms_is_403_50007_and_answered_locally_after() {
    let s = setup(&[]);
    let path = format!("/api/dm?userId={DM_CLOSED_USER}");
    let first = s.write("POST", &path, &[], Some(&json!({"content": "hi"})));
    assert_eq!(first.status, 403, "{first:?}");
    assert_eq!(first.json()["code"], 50007);
    let second = s.write("POST", &path, &[], Some(&json!({"content": "hi"})));
    assert_eq!(second.status, 403);
    assert_eq!(second.json()["cached"], true);
    let sends = s
        .fake
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST" && r["target"].as_str().unwrap().ends_with("/messages"))
        .count();
    assert_eq!(sends, 1);
}

#[test]
fn a_write_refused_for_missing_permissions_is_403_and_answered_locally_after() {
    let s = setup(&[]);
    let path = format!("/api/messages?channelId={READ_ONLY}");
    let first = s.write("POST", &path, &[], Some(&json!({"content": "hi"})));
    assert_eq!(first.status, 403, "{first:?}");
    assert_eq!(first.json()["code"], 50013);
    let second = s.write("POST", &path, &[], Some(&json!({"content": "hi"})));
    assert_eq!(second.status, 403);
    assert_eq!(second.json()["cached"], true);
    assert_eq!(s.fake.requests_to("POST", READ_ONLY).len(), 1);
}

#[test]
fn typing_answers_204() {
    let s = setup(&[]);
    let reply = s.write(
        "POST",
        &format!("/api/typing?channelId={GENERAL}"),
        &[],
        None,
    );
    assert_eq!(reply.status, 204, "{reply:?}");
    assert_eq!(s.fake.requests_to("POST", "/typing").len(), 1);
}

#[test]
fn an_audit_log_reason_is_percent_encoded_for_discord() {
    let s = setup(&[]);
    let id = s.send("to delete", &[]).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reason = "spam: «bad» link\u{1F6AB}";
    let reply = s.write(
        "DELETE",
        &format!("/api/messages?channelId={GENERAL}&messageId={id}"),
        &[("X-Audit-Log-Reason", reason)],
        None,
    );
    assert_eq!(reply.status, 204, "{reply:?}");
    let delete = &s.fake.requests_to("DELETE", &id)[0];
    assert_eq!(delete["audit_log_reason_decoded"], reason);
    assert!(delete["audit_log_reason"].as_str().unwrap().is_ascii());
}

#[test]
fn an_audit_log_reason_over_512_characters_is_400() {
    let s = setup(&[]);
    let reply = s.write(
        "DELETE",
        &format!("/api/messages?channelId={GENERAL}&messageId=1"),
        &[("X-Audit-Log-Reason", &"r".repeat(513))],
        None,
    );
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(s.fake.requests_to("DELETE", "/messages/").is_empty());
}

#[test]
fn sixteen_threads_sending_to_one_channel_all_succeed_with_at_most_one_429() {
    let fake = Fake::start_with(&world(), &["--send-window-ms", "1000"]);
    let service = Service::start(&fake, &[]);
    let session = service.session(TOKEN);
    fake.reset();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|n| {
                let (service, session) = (&service, &session);
                scope.spawn(move || {
                    service
                        .request(
                            "POST",
                            &format!("/api/messages?channelId={GENERAL}"),
                            &[
                                ("Authorization", session),
                                ("Content-Type", "application/json"),
                            ],
                            Some(&json!({"content": format!("n{n}")}).to_string()),
                        )
                        .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|&s| s == 201), "{statuses:?}");
    assert_eq!(fake.created_messages(GENERAL).len(), 16);
    let limited = fake
        .requests()
        .iter()
        .filter(|r| r["status"] == 429)
        .count();
    assert!(limited <= 1, "{limited} upstream 429s");
}

#[test]
fn a_write_without_a_session_is_401_and_an_unknown_method_405() {
    let s = setup(&[]);
    let reply = s.service.request(
        "POST",
        &format!("/api/messages?channelId={GENERAL}"),
        &[("Content-Type", "application/json")],
        Some("{}"),
    );
    assert_eq!(reply.status, 401);
    let reply = s.write("PUT", "/api/messages", &[], None);
    assert_eq!(reply.status, 405);
    assert_eq!(
        reply.header("allow"),
        Some("GET, POST, PATCH, DELETE, OPTIONS")
    );
}

#[test]
fn an_edit_without_allowed_mentions_gets_the_default_too() {
    let s = setup(&[]);
    let id = s.send("v1", &[]).json()["id"].as_str().unwrap().to_string();
    let path = format!("/api/messages?channelId={GENERAL}&messageId={id}");
    let reply = s.write(
        "PATCH",
        &path,
        &[],
        Some(&json!({"content": "@everyone v2"})),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let patch = &s.fake.requests_to("PATCH", &id)[0];
    let sent: Value = serde_json::from_str(patch["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["allowed_mentions"], json!({"parse": ["users"]}));
}

#[test]
fn a_reaction_whose_answer_is_lost_is_sent_once_more() {
    let s = setup(&[]);
    let id = s.send("react", &[]).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.fake
        .fault(json!({"kind": "write_then_drop", "path_contains": "/reactions/"}));
    let reply = s.write(
        "PUT",
        &format!("/api/reactions?channelId={GENERAL}&messageId={id}&emoji=%F0%9F%91%8D"),
        &[],
        None,
    );
    assert_eq!(reply.status, 204, "{reply:?}");
    // The re-send may first meet the reaction bucket the lost attempt used
    // (1 per 250 ms), and wait it out.
    let puts: Vec<Value> = s
        .fake
        .requests_to("PUT", "/reactions/")
        .into_iter()
        .filter(|r| r["status"] != 429)
        .collect();
    assert_eq!(puts.len(), 2, "{puts:?}");
}

#[test]
fn a_delete_whose_answer_is_lost_is_sent_once_more_and_says_it_may_be_gone() {
    let s = setup(&[]);
    let id = s.send("delete me", &[]).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.fake
        .fault(json!({"kind": "write_then_drop", "path_contains": &id}));
    let reply = s.write(
        "DELETE",
        &format!("/api/messages?channelId={GENERAL}&messageId={id}"),
        &[],
        None,
    );
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(reply.json()["code"], 10008);
    assert!(reply.error().contains("already gone"), "{reply:?}");
    assert_eq!(s.fake.requests_to("DELETE", &id).len(), 2);
    assert!(s.created().is_empty());
}

#[test]
fn a_resend_refused_by_the_rate_limits_still_reports_the_first_attempts_unknown_outcome() {
    let s = setup(&["--upstream-timeout", "400"]);
    // The first attempt is done and hangs; the re-send meets a 429 longer
    // than the wait budget, so it is never sent.
    s.fake
        .fault(json!({"kind": "write_then_hang", "ms": 1500, "path_contains": "/messages"}));
    s.fake
        .fault(json!({"kind": "user_429", "retry_after": 60.0, "path_contains": "/messages"}));
    let reply = s.send("maybe sent", &[]);
    assert_eq!(reply.status, 504, "{reply:?}");
    assert_eq!(reply.json()["outcome"], "unknown");
    assert_eq!(reply.json()["retrySafe"], true);
    assert_eq!(s.created().len(), 1);
}

#[test]
fn a_send_refused_as_malformed_still_names_its_key() {
    let s = setup(&[]);
    let reply = s.write(
        "POST",
        &format!("/api/messages?channelId={GENERAL}"),
        &[],
        Some(&json!({"content": "x", "nonce": "mine"})),
    );
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.header("idempotency-key").is_some(), "{reply:?}");
}

#[test]
fn a_reaction_whose_outcome_stays_unknown_is_safe_to_retry() {
    let s = setup(&["--upstream-timeout", "400"]);
    let id = s.send("react", &[]).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.fake.fault(
        json!({"kind": "write_then_hang", "ms": 1500, "count": 2, "path_contains": "/reactions/"}),
    );
    let reply = s.write(
        "PUT",
        &format!("/api/reactions?channelId={GENERAL}&messageId={id}&emoji=%F0%9F%91%8D"),
        &[],
        None,
    );
    assert_eq!(reply.status, 504, "{reply:?}");
    assert_eq!(reply.json()["retrySafe"], true);
}
