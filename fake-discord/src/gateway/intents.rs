//! Gateway intents: which bits exist, which are privileged, which intent
//! each dispatch needs, and what MESSAGE_CONTENT hides.
//!
//! Why it exists: a client must be tested against Discord's filtering, not
//! its own idea of it: a session receives only the events of the intents it
//! identified with, and without MESSAGE_CONTENT the message fields that
//! carry user input arrive empty. Sources (discord-api-docs @ c98d64bc,
//! `developers/events/gateway.mdx`):
//! - "List of Intents" (L281-427): the bits and the events of each; "Any
//!   events *not* listed means it's not associated with an intent and will
//!   always be sent";
//! - "Privileged Intents" (L443-471): GUILD_PRESENCES, GUILD_MEMBERS,
//!   MESSAGE_CONTENT; a privileged bit that is not enabled closes 4014, an
//!   invalid bit closes 4013 (L302);
//! - "Message Content Intent" (L485-500): `content`, `embeds`,
//!   `attachments`, `components` and `poll` are empty without it, except
//!   in the app's own messages, in DMs and where the app is mentioned;
//! - `resources/application.mdx` L160-167: the application flags that say
//!   which privileged intents are enabled (`GATEWAY_*` for apps in 100 or
//!   more servers, `GATEWAY_*_LIMITED` below that).

use serde_json::Value;

pub const GUILDS: u64 = 1 << 0;
pub const GUILD_MEMBERS: u64 = 1 << 1;
pub const GUILD_MODERATION: u64 = 1 << 2;
pub const GUILD_EXPRESSIONS: u64 = 1 << 3;
pub const GUILD_INTEGRATIONS: u64 = 1 << 4;
pub const GUILD_WEBHOOKS: u64 = 1 << 5;
pub const GUILD_INVITES: u64 = 1 << 6;
pub const GUILD_VOICE_STATES: u64 = 1 << 7;
pub const GUILD_PRESENCES: u64 = 1 << 8;
pub const GUILD_MESSAGES: u64 = 1 << 9;
pub const GUILD_MESSAGE_REACTIONS: u64 = 1 << 10;
pub const GUILD_MESSAGE_TYPING: u64 = 1 << 11;
pub const DIRECT_MESSAGES: u64 = 1 << 12;
pub const DIRECT_MESSAGE_REACTIONS: u64 = 1 << 13;
pub const DIRECT_MESSAGE_TYPING: u64 = 1 << 14;
pub const MESSAGE_CONTENT: u64 = 1 << 15;
pub const GUILD_SCHEDULED_EVENTS: u64 = 1 << 16;
pub const AUTO_MODERATION_CONFIGURATION: u64 = 1 << 20;
pub const AUTO_MODERATION_EXECUTION: u64 = 1 << 21;
pub const GUILD_MESSAGE_POLLS: u64 = 1 << 24;
pub const DIRECT_MESSAGE_POLLS: u64 = 1 << 25;

/// Every documented intent bit; any other bit closes 4013.
pub const VALID: u64 = GUILDS
    | GUILD_MEMBERS
    | GUILD_MODERATION
    | GUILD_EXPRESSIONS
    | GUILD_INTEGRATIONS
    | GUILD_WEBHOOKS
    | GUILD_INVITES
    | GUILD_VOICE_STATES
    | GUILD_PRESENCES
    | GUILD_MESSAGES
    | GUILD_MESSAGE_REACTIONS
    | GUILD_MESSAGE_TYPING
    | DIRECT_MESSAGES
    | DIRECT_MESSAGE_REACTIONS
    | DIRECT_MESSAGE_TYPING
    | MESSAGE_CONTENT
    | GUILD_SCHEDULED_EVENTS
    | AUTO_MODERATION_CONFIGURATION
    | AUTO_MODERATION_EXECUTION
    | GUILD_MESSAGE_POLLS
    | DIRECT_MESSAGE_POLLS;

/// The privileged bits (gateway.mdx "Privileged Intents").
pub const PRIVILEGED: u64 = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT;

/// The intent bit of a privileged intent name as world files spell it.
pub fn privileged_bit(name: &str) -> Option<u64> {
    match name {
        "GUILD_MEMBERS" => Some(GUILD_MEMBERS),
        "GUILD_PRESENCES" => Some(GUILD_PRESENCES),
        "MESSAGE_CONTENT" => Some(MESSAGE_CONTENT),
        _ => None,
    }
}

/// The names of the privileged bits set in `bits`, for messages and stats.
pub fn privileged_names(bits: u64) -> Vec<&'static str> {
    [
        (GUILD_MEMBERS, "GUILD_MEMBERS"),
        (GUILD_PRESENCES, "GUILD_PRESENCES"),
        (MESSAGE_CONTENT, "MESSAGE_CONTENT"),
    ]
    .into_iter()
    .filter(|(bit, _)| bits & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

/// Application flags for the enabled privileged intents
/// (application.mdx L160-167). Discord sets the `_LIMITED` flag for an app
/// in under 100 servers (the portal toggle) and the full one for a verified
/// app in 100 or more; the fake decides by the bot's guild count.
pub fn application_flags(privileged: u64, guild_count: usize) -> u64 {
    let large = guild_count >= 100;
    let pick = |full: u64, limited: u64| if large { full } else { limited };
    let mut flags = 0;
    if privileged & GUILD_PRESENCES != 0 {
        flags |= pick(1 << 12, 1 << 13);
    }
    if privileged & GUILD_MEMBERS != 0 {
        flags |= pick(1 << 14, 1 << 15);
    }
    if privileged & MESSAGE_CONTENT != 0 {
        flags |= pick(1 << 18, 1 << 19);
    }
    flags
}

/// The intent a dispatch needs, from the "List of Intents": `None` for an
/// event that is always sent. `in_guild` tells the guild and DM variants
/// of message, reaction, typing and poll events apart (a `guild_id` is
/// present on the guild ones).
pub fn required(t: &str, in_guild: bool) -> Option<u64> {
    let pair = |guild: u64, dm: u64| Some(if in_guild { guild } else { dm });
    match t {
        "GUILD_CREATE"
        | "GUILD_UPDATE"
        | "GUILD_DELETE"
        | "GUILD_ROLE_CREATE"
        | "GUILD_ROLE_UPDATE"
        | "GUILD_ROLE_DELETE"
        | "CHANNEL_CREATE"
        | "CHANNEL_UPDATE"
        | "CHANNEL_DELETE"
        | "THREAD_CREATE"
        | "THREAD_UPDATE"
        | "THREAD_DELETE"
        | "THREAD_LIST_SYNC"
        | "THREAD_MEMBER_UPDATE"
        | "THREAD_MEMBERS_UPDATE"
        | "STAGE_INSTANCE_CREATE"
        | "STAGE_INSTANCE_UPDATE"
        | "STAGE_INSTANCE_DELETE"
        | "VOICE_CHANNEL_STATUS_UPDATE"
        | "VOICE_CHANNEL_START_TIME_UPDATE" => Some(GUILDS),
        "CHANNEL_PINS_UPDATE" => pair(GUILDS, DIRECT_MESSAGES),
        "GUILD_MEMBER_ADD" | "GUILD_MEMBER_UPDATE" | "GUILD_MEMBER_REMOVE" => Some(GUILD_MEMBERS),
        "GUILD_AUDIT_LOG_ENTRY_CREATE" | "GUILD_BAN_ADD" | "GUILD_BAN_REMOVE" => {
            Some(GUILD_MODERATION)
        }
        "GUILD_EMOJIS_UPDATE"
        | "GUILD_STICKERS_UPDATE"
        | "GUILD_SOUNDBOARD_SOUND_CREATE"
        | "GUILD_SOUNDBOARD_SOUND_UPDATE"
        | "GUILD_SOUNDBOARD_SOUND_DELETE"
        | "GUILD_SOUNDBOARD_SOUNDS_UPDATE" => Some(GUILD_EXPRESSIONS),
        "GUILD_INTEGRATIONS_UPDATE"
        | "INTEGRATION_CREATE"
        | "INTEGRATION_UPDATE"
        | "INTEGRATION_DELETE" => Some(GUILD_INTEGRATIONS),
        "WEBHOOKS_UPDATE" => Some(GUILD_WEBHOOKS),
        "INVITE_CREATE" | "INVITE_DELETE" => Some(GUILD_INVITES),
        "VOICE_CHANNEL_EFFECT_SEND" | "VOICE_STATE_UPDATE" => Some(GUILD_VOICE_STATES),
        "PRESENCE_UPDATE" => Some(GUILD_PRESENCES),
        "MESSAGE_CREATE" | "MESSAGE_UPDATE" | "MESSAGE_DELETE" => {
            pair(GUILD_MESSAGES, DIRECT_MESSAGES)
        }
        "MESSAGE_DELETE_BULK" => Some(GUILD_MESSAGES),
        "MESSAGE_REACTION_ADD"
        | "MESSAGE_REACTION_REMOVE"
        | "MESSAGE_REACTION_REMOVE_ALL"
        | "MESSAGE_REACTION_REMOVE_EMOJI" => {
            pair(GUILD_MESSAGE_REACTIONS, DIRECT_MESSAGE_REACTIONS)
        }
        "TYPING_START" => pair(GUILD_MESSAGE_TYPING, DIRECT_MESSAGE_TYPING),
        "GUILD_SCHEDULED_EVENT_CREATE"
        | "GUILD_SCHEDULED_EVENT_UPDATE"
        | "GUILD_SCHEDULED_EVENT_DELETE"
        | "GUILD_SCHEDULED_EVENT_USER_ADD"
        | "GUILD_SCHEDULED_EVENT_USER_REMOVE" => Some(GUILD_SCHEDULED_EVENTS),
        "AUTO_MODERATION_RULE_CREATE"
        | "AUTO_MODERATION_RULE_UPDATE"
        | "AUTO_MODERATION_RULE_DELETE" => Some(AUTO_MODERATION_CONFIGURATION),
        "AUTO_MODERATION_ACTION_EXECUTION" => Some(AUTO_MODERATION_EXECUTION),
        "MESSAGE_POLL_VOTE_ADD" | "MESSAGE_POLL_VOTE_REMOVE" => {
            pair(GUILD_MESSAGE_POLLS, DIRECT_MESSAGE_POLLS)
        }
        _ => None,
    }
}

/// Whether a session with `intents`, of bot `bot_id`, receives `t` with
/// data `d`. GUILD_MEMBER_UPDATE about the bot itself is sent without
/// GUILD_MEMBERS (gateway.mdx "Caveats", L437).
pub fn wants(intents: u64, t: &str, d: &Value, in_guild: bool, bot_id: u64) -> bool {
    if t == "GUILD_MEMBER_UPDATE" && id_at(d, &["user", "id"]) == Some(bot_id) {
        return true;
    }
    required(t, in_guild).is_none_or(|bit| intents & bit != 0)
}

/// The message fields MESSAGE_CONTENT guards (gateway.mdx L489).
const CONTENT_FIELDS: [&str; 5] = ["content", "embeds", "attachments", "components", "poll"];

/// `d` as a session without MESSAGE_CONTENT sees it: for MESSAGE_CREATE
/// and MESSAGE_UPDATE in a guild, from another author, not mentioning the
/// bot, the guarded fields are emptied (`""`, `[]`; `poll` removed).
/// Returns `None` when nothing changes.
pub fn without_content(t: &str, d: &Value, in_guild: bool, bot_id: u64) -> Option<Value> {
    if !matches!(t, "MESSAGE_CREATE" | "MESSAGE_UPDATE") || !in_guild {
        return None;
    }
    if id_at(d, &["author", "id"]) == Some(bot_id) {
        return None;
    }
    let mentioned = d
        .get("mentions")
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|u| id_at(u, &["id"]) == Some(bot_id)));
    if mentioned {
        return None;
    }
    let mut out = d.clone();
    let map = out.as_object_mut()?;
    for field in CONTENT_FIELDS {
        match field {
            "content" if map.contains_key(field) => {
                map.insert(field.into(), Value::String(String::new()));
            }
            "poll" => {
                map.remove(field);
            }
            _ if map.contains_key(field) => {
                map.insert(field.into(), Value::Array(Vec::new()));
            }
            _ => {}
        }
    }
    Some(out)
}

/// A snowflake found by following `path` (string or number).
pub fn id_at(v: &Value, path: &[&str]) -> Option<u64> {
    let leaf = path.iter().try_fold(v, |v, k| v.get(k))?;
    match leaf {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_follow_the_guild_count() {
        let both = GUILD_MEMBERS | MESSAGE_CONTENT;
        assert_eq!(application_flags(both, 1), (1 << 15) | (1 << 19));
        assert_eq!(application_flags(both, 100), (1 << 14) | (1 << 18));
        assert_eq!(application_flags(GUILD_PRESENCES, 5), 1 << 13);
        assert_eq!(application_flags(0, 5), 0);
    }

    #[test]
    fn events_route_by_intent() {
        assert_eq!(required("MESSAGE_CREATE", true), Some(GUILD_MESSAGES));
        assert_eq!(required("MESSAGE_CREATE", false), Some(DIRECT_MESSAGES));
        assert_eq!(required("READY", true), None);
        let me = json!({"user": {"id": "5"}});
        assert!(wants(0, "GUILD_MEMBER_UPDATE", &me, true, 5));
        assert!(!wants(0, "GUILD_MEMBER_UPDATE", &me, true, 6));
        assert!(wants(0, "INTERACTION_CREATE", &json!({}), true, 6));
    }

    #[test]
    fn content_is_hidden_except_own_and_mentions() {
        let m = json!({"author": {"id": "1"}, "content": "hi", "embeds": [{}],
                       "attachments": [{}], "components": [{}], "poll": {}, "mentions": []});
        let hidden = without_content("MESSAGE_CREATE", &m, true, 9).unwrap();
        assert_eq!(hidden["content"], "");
        assert_eq!(hidden["embeds"], json!([]));
        assert!(hidden.get("poll").is_none());
        assert!(without_content("MESSAGE_CREATE", &m, true, 1).is_none());
        assert!(without_content("MESSAGE_CREATE", &m, false, 9).is_none());
        let mut mention = m.clone();
        mention["mentions"] = json!([{"id": "9"}]);
        assert!(without_content("MESSAGE_CREATE", &mention, true, 9).is_none());
    }
}
