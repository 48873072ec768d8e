//! The REST side of the Gateway: `GET /gateway`, `GET /gateway/bot` and
//! `GET /applications/@me`.
//!
//! Why it exists: a client learns the WebSocket URL, its shard count, its
//! session-start budget and which privileged intents it may ask for over
//! REST before it connects. Sources (discord-api-docs @ c98d64bc):
//! - `events/gateway.mdx` "Get Gateway" (no auth, `{url}`), "Get Gateway
//!   Bot" (bot auth; `url`, `shards`, `session_start_limit {total,
//!   remaining, reset_after, max_concurrency}`, L717-779);
//! - `resources/application.mdx` "Get Current Application" and the
//!   application flags (L160-167); the OpenAPI spec's
//!   `PrivateApplicationResponse` for the required fields.

use serde_json::{Value, json};

use super::hub::Gateway;
use super::intents;
use crate::api;
use crate::world::Bot;

/// Discord's rough guide: about one shard per 1000 guilds; never fewer than
/// `--gateway-guilds-per-shard` would require. A world file's `shards`
/// wins.
pub fn recommended_shards(bot: &Bot, guilds_per_shard: usize) -> u32 {
    if let Some(n) = bot.shards {
        return n;
    }
    let per = guilds_per_shard.clamp(1, 1000);
    bot.guilds.len().div_ceil(per).max(1) as u32
}

/// `GET /gateway`.
pub fn gateway(gw: &Gateway) -> Value {
    json!({ "url": gw.url })
}

/// `GET /gateway/bot`.
pub fn gateway_bot(gw: &Gateway, bot: &Bot) -> Value {
    json!({
        "url": gw.url,
        "shards": recommended_shards(bot, gw.options.guilds_per_shard),
        "session_start_limit": gw.session_start_limit(bot.id),
    })
}

/// `GET /applications/@me`: the bot's application; `flags` says which
/// privileged intents are enabled.
pub fn application(bot: &Bot) -> Value {
    let mut owner = api::bot_user(bot);
    if let Some(map) = owner.as_object_mut() {
        for private in ["mfa_enabled", "locale", "premium_type", "email", "verified"] {
            map.remove(private);
        }
        map.insert("id".into(), json!((bot.id ^ 0x5a5a).to_string()));
        map.insert("username".into(), json!(format!("{}-owner", bot.username)));
        map.insert("bot".into(), json!(false));
    }
    let mut bot_user = api::bot_user(bot);
    if let Some(map) = bot_user.as_object_mut() {
        for private in ["mfa_enabled", "locale", "premium_type", "email", "verified"] {
            map.remove(private);
        }
    }
    let flags = intents::application_flags(bot.privileged_intents, bot.guilds.len());
    json!({
        "id": bot.id.to_string(),
        "name": bot.username,
        "icon": null,
        "description": "",
        "type": null,
        "bot": bot_user,
        "bot_public": true,
        "bot_require_code_grant": false,
        "verify_key": format!("{:064x}", u128::from(bot.id) * 0x9E37_79B9_7F4A_7C15),
        "flags": flags,
        "flags_new": flags.to_string(),
        "redirect_uris": [],
        "interactions_endpoint_url": null,
        "role_connections_verification_url": null,
        "owner": owner,
        "team": null,
        "approximate_guild_count": bot.guilds.len(),
        "approximate_user_install_count": 0,
        "approximate_user_authorization_count": 0,
        "explicit_content_filter": 0,
        "eligible_oauth2_scopes": ["bot", "applications.commands"],
        "tags": [],
        "event_webhooks_url": null,
        "event_webhooks_status": 1,
        "event_webhooks_types": [],
    })
}
