//! The `d` of the dispatches the fake builds itself: READY, GUILD_CREATE,
//! and the extras MESSAGE_CREATE/UPDATE carry over a plain message object.
//!
//! Why it exists: a client parses these, so their shape follows the docs
//! (discord-api-docs @ c98d64bc, `developers/events/gateway-events.mdx`):
//! - READY (L458-475): `v`, `user`, `guilds` (unavailable guilds),
//!   `session_id`, `resume_gateway_url`, `shard?`, `application {id, flags}`;
//! - GUILD_CREATE (L726-762): a guild object plus `joined_at`, `large`,
//!   `unavailable`, `member_count`, `voice_states`, `members`, `channels`,
//!   `threads`, `presences`, `stage_instances`, `guild_scheduled_events`,
//!   `soundboard_sounds`. Without GUILD_PRESENCES `members` holds only the
//!   bot (and users in voice, of which the fake has none), so the fake
//!   always sends just the bot;
//! - MESSAGE_CREATE (L1122-1134): a message plus `guild_id?`, `member?`,
//!   `channel_type?`; MESSAGE_UPDATE the same, `tts` always false.

use serde_json::{Value, json};

use super::intents;
use crate::api;
use crate::timefmt::{iso8601, snowflake_unix_ms};
use crate::world::{Bot, Guild};

/// The API version this fake serves (`?v=`).
pub const API_VERSION: u64 = 10;

/// When the bot joined a guild: a day after the guild was created.
fn joined_at(guild_id: u64) -> String {
    iso8601(snowflake_unix_ms(guild_id) + 86_400_000)
}

/// The partial application of READY: `id` (the bot's id, as for every bot
/// created since 2016) and `flags`.
pub fn application(bot: &Bot) -> Value {
    json!({
        "id": bot.id.to_string(),
        "flags": intents::application_flags(bot.privileged_intents, bot.guilds.len()),
    })
}

/// READY's `d` for a session on `guilds` (already the shard's).
pub fn ready(
    bot: &Bot,
    guilds: &[u64],
    session_id: &str,
    resume_url: &str,
    shard: Option<[u32; 2]>,
) -> Value {
    let unavailable: Vec<Value> = guilds
        .iter()
        .map(|g| json!({ "id": g.to_string(), "unavailable": true }))
        .collect();
    let mut d = json!({
        "v": API_VERSION,
        "user": api::bot_user(bot),
        "guilds": unavailable,
        "session_id": session_id,
        "session_type": "normal",
        "resume_gateway_url": resume_url,
        "application": application(bot),
        "private_channels": [],
        "relationships": [],
        "presences": [],
        "user_settings": {},
        "guild_join_requests": [],
        "geo_ordered_rtc_regions": [],
    });
    if let Some(shard) = shard {
        d["shard"] = json!(shard);
    }
    d
}

/// The bot as a guild member (partial: what MESSAGE_CREATE's `member` and
/// GUILD_CREATE's `members` carry).
pub fn bot_member(guild_id: u64) -> Value {
    json!({
        "roles": [],
        "nick": null,
        "avatar": null,
        "banner": null,
        "joined_at": joined_at(guild_id),
        "premium_since": null,
        "deaf": false,
        "mute": false,
        "flags": 0,
        "pending": false,
        "communication_disabled_until": null,
    })
}

/// GUILD_CREATE's `d`: the guild, available, with its channels and the
/// bot as its only listed member.
pub fn guild_create(bot: &Bot, guild: &Guild, large_threshold: u64) -> Value {
    let channels: Vec<Value> = guild
        .channels
        .iter()
        .map(|c| {
            let mut ch = api::channel(guild, c);
            if let Some(map) = ch.as_object_mut() {
                map.remove("guild_id");
            }
            ch
        })
        .collect();
    let mut me = bot_member(guild.id);
    me["user"] = api::bot_user(bot);
    let member_count = guild.member_ids.len() + 1;
    let mut g = json!({
        "id": guild.id.to_string(),
        "name": guild.name,
        "icon": null,
        "splash": null,
        "discovery_splash": null,
        "owner_id": guild.member_ids.first().map_or(bot.id, |m| *m).to_string(),
        "afk_channel_id": null,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": [{
            "id": guild.id.to_string(), "name": "@everyone", "color": 0, "colors": {
                "primary_color": 0, "secondary_color": null, "tertiary_color": null},
            "hoist": false, "icon": null, "unicode_emoji": null, "position": 0,
            "permissions": "104324673", "managed": false, "mentionable": false, "flags": 0,
        }],
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "application_id": null,
        "system_channel_id": null,
        "system_channel_flags": 0,
        "rules_channel_id": null,
        "max_members": 500_000,
        "vanity_url_code": null,
        "description": null,
        "banner": null,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "preferred_locale": "en-US",
        "public_updates_channel_id": null,
        "nsfw_level": 0,
        "premium_progress_bar_enabled": false,
        "safety_alerts_channel_id": null,
    });
    let extra = json!({
        "joined_at": joined_at(guild.id),
        "large": member_count as u64 > large_threshold,
        "unavailable": false,
        "member_count": member_count,
        "voice_states": [],
        "members": [me],
        "channels": channels,
        "threads": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    });
    if let (Some(map), Value::Object(extra)) = (g.as_object_mut(), extra) {
        map.extend(extra);
    }
    g
}

/// MESSAGE_CREATE / MESSAGE_UPDATE `d`: the message object plus
/// `channel_type`, and in a guild `guild_id` and the author's `member`.
pub fn message_event(message: &Value, guild_id: Option<u64>, channel_type: u64) -> Value {
    let mut d = message.clone();
    d["channel_type"] = json!(channel_type);
    if let Some(g) = guild_id {
        d["guild_id"] = json!(g.to_string());
        d["member"] = bot_member(g);
    }
    d
}

/// The partial emoji of a reaction event: `{"id": null, "name": "👍"}` for
/// a Unicode emoji, `{"id", "name", "animated": false}` for `name:id`.
pub fn reaction_emoji(decoded: &str) -> Value {
    match decoded.split_once(':') {
        Some((name, id)) => json!({ "id": id, "name": name, "animated": false }),
        None => json!({ "id": null, "name": decoded }),
    }
}
