//! contract: API.md "Routes": guilds, members, channels, messages, healthz,
//! with pagination checked exactly against the fake's data.

mod support;

use support::world::*;
use support::{Fake, Service};

fn setup() -> (Fake, Service, String) {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let session = service.session(TOKEN);
    fake.reset();
    (fake, service, session)
}

fn descending(mut ids: Vec<u64>) -> Vec<u64> {
    ids.reverse();
    ids
}

#[test]
fn healthz_is_ok_without_a_session() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let reply = service.request("GET", "/healthz", &[], None);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), serde_json::json!({"status": "ok"}));
}

#[test]
fn guilds_returns_the_bots_partial_guilds() {
    let (_fake, service, session) = setup();
    let reply = service.get("/api/guilds", &session);
    assert_eq!(reply.status, 200);
    let guilds = reply.json();
    assert_eq!(guilds.as_array().unwrap().len(), 1);
    assert_eq!(guilds[0]["id"], GUILD);
    assert_eq!(guilds[0]["name"], "Test Guild");
}

#[test]
fn guilds_pages_past_200_without_duplicates() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let session = service.session(BUSY_TOKEN);
    let ids = service.get("/api/guilds", &session).ids();
    assert_eq!(ids.len(), 451);
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 451, "no guild twice");
}

#[test]
fn members_default_limit_is_1000() {
    let (fake, service, session) = setup();
    let ids = service.get("/api/members", &session).ids();
    assert_eq!(ids, fake.member_ids(GUILD)[..1000]);
}

#[test]
fn members_always_send_limit_to_discord() {
    let (fake, service, session) = setup();
    service.get(&format!("/api/members?guildId={GUILD}&limit=7"), &session);
    assert_eq!(
        fake.targets(),
        vec![format!("/api/v10/guilds/{GUILD}/members?limit=7")]
    );
}

#[test]
fn members_limit_2500_pages_by_after_with_none_twice_and_none_skipped() {
    let (fake, service, session) = setup();
    let ids = service
        .get(
            &format!("/api/members?guildId={GUILD}&limit=2500"),
            &session,
        )
        .ids();
    assert_eq!(ids, fake.member_ids(GUILD));
    let pages: Vec<String> = fake
        .targets()
        .into_iter()
        .filter(|t| t.contains("/members"))
        .collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert!(pages[1].contains("after="), "{pages:?}");
}

#[test]
fn members_after_returns_greater_user_ids_only() {
    let (fake, service, session) = setup();
    let all = fake.member_ids(GUILD);
    let cursor = all[1499];
    let ids = service
        .get(&format!("/api/members?limit=1500&after={cursor}"), &session)
        .ids();
    assert_eq!(ids, all[1500..]);
}

#[test]
fn members_guild_id_is_optional_when_the_bot_is_in_one_guild() {
    let (fake, service, session) = setup();
    let ids = service.get("/api/members?limit=5", &session).ids();
    assert_eq!(ids, fake.member_ids(GUILD)[..5]);
}

#[test]
fn members_without_guild_id_for_a_bot_in_several_guilds_is_400_naming_guild_id() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let session = service.session(MULTI_TOKEN);
    let reply = service.get("/api/members", &session);
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("guildId"), "{}", reply.text);
}

#[test]
fn members_without_guild_id_for_a_bot_in_no_guild_is_404() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let session = service.session(LONELY_TOKEN);
    assert_eq!(service.get("/api/members", &session).status, 404);
    assert_eq!(service.get("/api/channels", &session).status, 404);
}

#[test]
fn members_refused_by_discord_is_403_naming_the_intent() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let session = service.session(MULTI_TOKEN);
    let reply = service.get(&format!("/api/members?guildId={GUILD}"), &session);
    assert_eq!(reply.status, 403);
    assert!(reply.error().contains("Server Members"), "{}", reply.text);
    assert_eq!(reply.json()["code"], 50001);
}

#[test]
fn members_limit_outside_1_to_10000_is_400() {
    let (fake, service, session) = setup();
    for limit in ["0", "10001", "abc", "-1", "1.5"] {
        let reply = service.get(&format!("/api/members?limit={limit}"), &session);
        assert_eq!(reply.status, 400, "limit={limit}");
        assert!(reply.error().contains("limit"));
    }
    assert!(fake.targets().is_empty());
}

#[test]
fn unknown_guild_is_404() {
    let (_fake, service, session) = setup();
    let reply = service.get("/api/channels?guildId=123", &session);
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["code"], 10004);
}

#[test]
fn channels_returns_the_guilds_channels_as_discord_sent_them() {
    let (fake, service, session) = setup();
    let reply = service.get("/api/channels", &session);
    assert_eq!(reply.status, 200);
    let channels = reply.json();
    let names: Vec<&str> = channels
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"general"), "{names:?}");
    // Byte for byte what Discord answered.
    let mut direct = support::agent()
        .get(&format!("{}/guilds/{GUILD}/channels", fake.api_url()))
        .header("Authorization", format!("Bot {TOKEN}"))
        .call()
        .unwrap();
    assert_eq!(reply.text, direct.body_mut().read_to_string().unwrap());
}

#[test]
fn messages_require_channel_id() {
    let (_fake, service, session) = setup();
    for path in ["/api/messages", "/api/messages?channelId="] {
        let reply = service.get(path, &session);
        assert_eq!(reply.status, 400);
        assert!(reply.error().contains("channelId"));
    }
}

#[test]
fn messages_default_to_the_100_newest_newest_first() {
    let (fake, service, session) = setup();
    let ids = service
        .get(&format!("/api/messages?channelId={GENERAL}"), &session)
        .ids();
    let all = fake.message_ids(GENERAL);
    assert_eq!(ids, descending(all[all.len() - 100..].to_vec()));
}

#[test]
fn messages_limit_250_pages_back_with_none_twice_and_none_skipped() {
    let (fake, service, session) = setup();
    let ids = service
        .get(
            &format!("/api/messages?channelId={GENERAL}&limit=250"),
            &session,
        )
        .ids();
    let all = fake.message_ids(GENERAL);
    assert_eq!(ids, descending(all[all.len() - 250..].to_vec()));
}

#[test]
fn messages_limit_1000_before_a_cursor_pages_back_from_it() {
    let (fake, service, session) = setup();
    let all = fake.message_ids(GENERAL);
    let cursor = all[1100];
    let ids = service
        .get(
            &format!("/api/messages?channelId={GENERAL}&limit=1000&before={cursor}"),
            &session,
        )
        .ids();
    assert_eq!(ids, descending(all[100..1100].to_vec()));
}

#[test]
fn messages_after_a_cursor_are_the_ones_right_after_it_newest_first() {
    let (fake, service, session) = setup();
    let all = fake.message_ids(GENERAL);
    let cursor = all[99];
    let ids = service
        .get(
            &format!("/api/messages?channelId={GENERAL}&limit=350&after={cursor}"),
            &session,
        )
        .ids();
    assert_eq!(ids, descending(all[100..450].to_vec()));
}

#[test]
fn messages_after_near_the_end_returns_what_exists() {
    let (fake, service, session) = setup();
    let all = fake.message_ids(GENERAL);
    let cursor = all[all.len() - 150];
    let ids = service
        .get(
            &format!("/api/messages?channelId={GENERAL}&limit=1000&after={cursor}"),
            &session,
        )
        .ids();
    assert_eq!(ids, descending(all[all.len() - 149..].to_vec()));
}

#[test]
fn messages_of_a_short_channel_stop_at_its_beginning() {
    let (fake, service, session) = setup();
    let ids = service
        .get(
            &format!("/api/messages?channelId={QUIET}&limit=500"),
            &session,
        )
        .ids();
    assert_eq!(ids, descending(fake.message_ids(QUIET)));
}

#[test]
fn messages_around_a_cursor_pass_through_one_page() {
    let (fake, service, session) = setup();
    let all = fake.message_ids(GENERAL);
    let reply = service.get(
        &format!(
            "/api/messages?channelId={GENERAL}&limit=10&around={}",
            all[500]
        ),
        &session,
    );
    assert_eq!(reply.status, 200);
    assert!(reply.ids().contains(&all[500]));
    assert_eq!(fake.targets().len(), 1);
}

#[test]
fn messages_around_with_limit_over_100_is_400() {
    let (fake, service, session) = setup();
    let reply = service.get(
        &format!("/api/messages?channelId={GENERAL}&limit=101&around=5"),
        &session,
    );
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("around"));
    assert!(fake.targets().is_empty());
}

#[test]
fn messages_with_two_cursors_is_400() {
    let (_fake, service, session) = setup();
    let reply = service.get(
        &format!("/api/messages?channelId={GENERAL}&before=5&after=3"),
        &session,
    );
    assert_eq!(reply.status, 400);
}

#[test]
fn messages_limit_outside_1_to_1000_is_400() {
    let (_fake, service, session) = setup();
    for limit in ["0", "1001"] {
        let reply = service.get(
            &format!("/api/messages?channelId={GENERAL}&limit={limit}"),
            &session,
        );
        assert_eq!(reply.status, 400, "limit={limit}");
    }
}

#[test]
fn messages_of_an_unknown_channel_is_404() {
    let (_fake, service, session) = setup();
    let reply = service.get("/api/messages?channelId=42", &session);
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["code"], 10003);
}

#[test]
fn messages_of_a_channel_the_bot_cannot_see_is_403() {
    let (_fake, service, session) = setup();
    let reply = service.get(&format!("/api/messages?channelId={SECRET}"), &session);
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["code"], 50001);
}

#[test]
fn messages_without_read_history_is_an_empty_list() {
    let (_fake, service, session) = setup();
    let reply = service.get(&format!("/api/messages?channelId={NO_HISTORY}"), &session);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), serde_json::json!([]));
}

#[test]
fn an_empty_optional_parameter_counts_as_absent() {
    let (fake, service, session) = setup();
    let reply = service.get(
        &format!("/api/messages?channelId={GENERAL}&before=&limit=5"),
        &session,
    );
    assert_eq!(reply.status, 200);
    assert_eq!(
        fake.targets(),
        vec![format!("/api/v10/channels/{GENERAL}/messages?limit=5")]
    );
}
