//! Discord REST routes: matching, query validation and response bodies.
//!
//! Why it exists: this is where Discord's documented semantics live, so it is
//! the file to read when the service and the fake disagree. Sources:
//! `resources/user.mdx` (Get Current User, Get Current User Guilds),
//! `resources/guild.mdx` (List Guild Members, Get Guild Channels),
//! `resources/message.mdx` (Get Channel Messages),
//! `topics/opcodes-and-status-codes.mdx` (JSON error codes) and the OpenAPI
//! spec (parameter ranges, error shapes).
//!
//! Invariant: a read is a pure function of the world, the write state
//! (`state.rs`: created and deleted messages), the authenticated bot and the
//! query string. Write routes live in `writes.rs`. Authentication, rate
//! limiting, faults and logging happen in `app.rs`.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use crate::state::{Inner, Store};
use crate::timefmt::{iso8601, snowflake_unix_ms};
use crate::world::{Access, Bot, Channel, Guild, World};

/// `GET /channels/{id}/messages`: `limit` bounds and default.
const MESSAGES_LIMIT: (i64, i64, i64) = (1, 100, 50);
/// `GET /guilds/{id}/members`: `limit` bounds and default.
const MEMBERS_LIMIT: (i64, i64, i64) = (1, 1000, 1);
/// `GET /users/@me/guilds`: `limit` bounds and default.
const GUILDS_LIMIT: (i64, i64, i64) = (1, 200, 200);
/// Permissions string reported for the bot in every guild (a typical bot
/// invite: view channels, read history, send messages, …).
const GUILD_PERMISSIONS: &str = "104324673";
/// How many members take turns authoring a channel's messages.
const AUTHORS_PER_CHANNEL: usize = 10;
/// Discord's real "Deleted User" id, used as the author when a guild has no
/// members to attribute messages to.
const DELETED_USER_ID: u64 = 456_226_577_798_135_808;

/// Bucket of `POST /channels/{id}/messages` and `PATCH …/messages/{id}`.
pub const SEND_BUCKET: &str = "3b9e0c7f5a2d4e18b6c1f0a9d7e3524c";
/// Bucket of `DELETE …/messages/{id}` for a message younger than 10 s (and
/// for unknown messages).
pub const DELETE_YOUNG_BUCKET: &str = "a1d4c7e02b5f8e3690c3f6a9d2e5b817";
/// Bucket of `DELETE …/messages/{id}` for a message younger than 14 days.
pub const DELETE_RECENT_BUCKET: &str = "5e8b1d4a7c0f3e6920b5d8a1c4f7e03b";
/// Bucket of `DELETE …/messages/{id}` for a message 14 days old or older.
pub const DELETE_OLD_BUCKET: &str = "c9f2a5d8e1b4c7f03a6d9e2b5c8f1a47";
/// Bucket shared by `PUT` and `DELETE` on reactions.
pub const REACTION_BUCKET: &str = "f4a7d0c3e6b9f2a5d8c1e4b7a0d3f6c9";

/// A Discord route this fake serves. Path ids are kept as received; they are
/// validated when the route is handled, as Discord does (400 50035).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    CurrentUser,
    CurrentUserGuilds,
    GuildMembers(String),
    GuildChannels(String),
    /// `GET` lists, `POST` creates.
    ChannelMessages(String),
    /// `/channels/{c}/messages/{m}`: `PATCH` edits, `DELETE` deletes.
    ChannelMessage(String, String),
    /// `/channels/{c}/messages/bulk-delete`.
    BulkDelete(String),
    /// `/channels/{c}/messages/{m}/reactions/{emoji}/{user}`; `emoji` is the
    /// raw (still percent-encoded) segment, `user` is `@me` or an id.
    Reaction {
        channel: String,
        message: String,
        emoji: String,
        user: String,
    },
    /// `/channels/{c}/typing`.
    Typing(String),
    /// `/users/@me/channels`: open a DM.
    DmChannels,
    /// `/gateway`: the Gateway URL, no auth (gateway.mdx "Get Gateway").
    Gateway,
    /// `/gateway/bot`: URL, shards, session start limit.
    GatewayBot,
    /// `/applications/@me`: the bot's application.
    CurrentApplication,
}

impl Route {
    /// Matches a path relative to `/api/v10` (starting with `/`).
    pub fn parse(path: &str) -> Option<Route> {
        let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        let id = |s: &str| (!s.is_empty()).then(|| s.to_string());
        match segments.as_slice() {
            ["users", "@me"] => Some(Route::CurrentUser),
            ["users", "@me", "guilds"] => Some(Route::CurrentUserGuilds),
            ["guilds", g, "members"] => id(g).map(Route::GuildMembers),
            ["guilds", g, "channels"] => id(g).map(Route::GuildChannels),
            ["users", "@me", "channels"] => Some(Route::DmChannels),
            ["channels", c, "messages"] => id(c).map(Route::ChannelMessages),
            ["channels", c, "messages", "bulk-delete"] => id(c).map(Route::BulkDelete),
            ["channels", c, "messages", m] => Some(Route::ChannelMessage(id(c)?, id(m)?)),
            ["channels", c, "messages", m, "reactions", e, u] => Some(Route::Reaction {
                channel: id(c)?,
                message: id(m)?,
                emoji: id(e)?,
                user: id(u)?,
            }),
            ["channels", c, "typing"] => id(c).map(Route::Typing),
            ["gateway"] => Some(Route::Gateway),
            ["gateway", "bot"] => Some(Route::GatewayBot),
            ["applications", "@me"] => Some(Route::CurrentApplication),
            _ => None,
        }
    }

    /// The methods a route serves (SPEC operations: get/create message,
    /// update/delete message, bulk_delete_messages, the three reaction
    /// operations, trigger_typing_indicator, create_dm).
    pub fn allows(&self, method: &str) -> bool {
        match self {
            Route::CurrentUser
            | Route::CurrentUserGuilds
            | Route::GuildMembers(_)
            | Route::GuildChannels(_)
            | Route::Gateway
            | Route::GatewayBot
            | Route::CurrentApplication => method == "GET",
            Route::ChannelMessages(_) => matches!(method, "GET" | "POST"),
            Route::ChannelMessage(..) => matches!(method, "PATCH" | "DELETE"),
            Route::Reaction { user, .. } if user == "@me" => matches!(method, "PUT" | "DELETE"),
            Route::Reaction { .. } => method == "DELETE",
            Route::BulkDelete(_) | Route::Typing(_) | Route::DmChannels => method == "POST",
        }
    }

    /// The route's opaque `X-RateLimit-Bucket` for `method`. `/users/@me`
    /// and `/users/@me/guilds` deliberately share one, so clients that key
    /// buckets by path instead of by hash get caught. Sends and edits share
    /// [`SEND_BUCKET`]; a message delete is bucketed by the message's age,
    /// which `app.rs` decides ([`DELETE_YOUNG_BUCKET`] is returned here).
    pub fn bucket_hash(&self, method: &str) -> &'static str {
        match self {
            Route::CurrentUser | Route::CurrentUserGuilds => "8f3c2a71d0b94e5c6a1f7e2d9b4c0a35",
            Route::GuildMembers(_) => "c41e9b7a2f6d3058e1a4b9c7d2f60e18",
            Route::GuildChannels(_) => "5a0d7e3c9f1b4826d7e0a3c5b9f14d62",
            Route::ChannelMessages(_) if method == "POST" => SEND_BUCKET,
            Route::ChannelMessages(_) => "e7b2f4a90c3d6185b2e9f7a4c0d3168b",
            Route::ChannelMessage(..) if method == "DELETE" => DELETE_YOUNG_BUCKET,
            Route::ChannelMessage(..) => SEND_BUCKET,
            Route::BulkDelete(_) => "7d0a3e6b9c2f5a8d1e4b7c0f3a6d9e25",
            Route::Reaction { .. } => REACTION_BUCKET,
            Route::Typing(_) => "2c5f8b1e4a7d0c3f6e9b2a5d8c1f4e70",
            Route::DmChannels => "96e3c0f7a4d1b8e5c2f9a6d3b0e7c4a1",
            Route::Gateway => "0b6e1d4a9c2f7e3058d1b4a7c0e3f692",
            Route::GatewayBot => "d8a1c4f7e0b3a6d9c2f5e8b1a4d7c0f3",
            Route::CurrentApplication => "47c0f3a6d9e2b5c8f1a4d7e0b3c6f9a2",
        }
    }

    /// The top-level resource id that splits the bucket (guild or channel).
    pub fn top_level(&self) -> Option<&str> {
        match self {
            Route::CurrentUser
            | Route::CurrentUserGuilds
            | Route::DmChannels
            | Route::Gateway
            | Route::GatewayBot
            | Route::CurrentApplication => None,
            Route::GuildMembers(id)
            | Route::GuildChannels(id)
            | Route::ChannelMessages(id)
            | Route::ChannelMessage(id, _)
            | Route::BulkDelete(id)
            | Route::Typing(id)
            | Route::Reaction { channel: id, .. } => Some(id),
        }
    }
}

/// A Discord error response: HTTP status plus `{"message", "code", "errors"?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub body: Value,
}

impl ApiError {
    pub fn new(status: u16, message: &str, code: u64) -> ApiError {
        ApiError {
            status,
            body: json!({ "message": message, "code": code }),
        }
    }

    /// Missing, malformed, unknown or revoked token.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "401: Unauthorized", 0)
    }

    /// No such route.
    pub fn not_found() -> ApiError {
        ApiError::new(404, "404: Not Found", 0)
    }

    /// Known route, other method.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(405, "405: Method Not Allowed", 0)
    }

    /// 10004: the guild does not exist.
    pub fn unknown_guild() -> ApiError {
        ApiError::new(404, "Unknown Guild", 10004)
    }

    /// 10003: the channel does not exist.
    pub fn unknown_channel() -> ApiError {
        ApiError::new(404, "Unknown Channel", 10003)
    }

    /// 50001: the bot cannot see the resource (not a member, no VIEW_CHANNEL,
    /// or the GUILD_MEMBERS intent is off).
    pub fn missing_access() -> ApiError {
        ApiError::new(403, "Missing Access", 50001)
    }

    /// 10008: the message does not exist (or was deleted).
    pub fn unknown_message() -> ApiError {
        ApiError::new(404, "Unknown Message", 10008)
    }

    /// 50013: the bot can see the resource but lacks the permission.
    pub fn missing_permissions() -> ApiError {
        ApiError::new(403, "Missing Permissions", 50013)
    }
}

/// Collects per-field validation errors into Discord's 50035 error tree:
/// `{"errors": {"limit": {"_errors": [{"code", "message"}]}}}`.
#[derive(Default)]
pub struct FormErrors(Map<String, Value>);

impl FormErrors {
    /// Adds an error under `field` (`"_errors"` itself for the top level).
    pub fn add(&mut self, field: &str, code: &str, message: String) {
        if field == "_errors" {
            let entry = self
                .0
                .entry("_errors".to_string())
                .or_insert_with(|| json!([]));
            entry
                .as_array_mut()
                .expect("_errors is an array")
                .push(json!({ "code": code, "message": message }));
            return;
        }
        let entry = self.0.entry(field.to_string()).or_insert_with(|| json!({}));
        entry
            .as_object_mut()
            .expect("a field's errors are an object")
            .entry("_errors")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("_errors is an array")
            .push(json!({ "code": code, "message": message }));
    }

    /// Adds an error under `field.index` (an array item).
    pub fn add_item(&mut self, field: &str, index: usize, code: &str, message: String) {
        let entry = self.0.entry(field.to_string()).or_insert_with(|| json!({}));
        entry[index.to_string()] = json!({ "_errors": [{ "code": code, "message": message }] });
    }

    /// `Err` with the 50035 tree when any error was added.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(ApiError {
            status: 400,
            body: json!({
                "message": "Invalid Form Body",
                "code": 50035,
                "errors": Value::Object(self.0),
            }),
        })
    }
}

/// Decoded query parameters in order of appearance.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Query {
        Query(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    /// The first value given for `name`.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An integer parameter within `(min, max, default)`.
    fn int(&self, name: &str, (min, max, default): (i64, i64, i64), e: &mut FormErrors) -> i64 {
        let Some(raw) = self.get(name) else {
            return default;
        };
        match raw.parse::<i64>() {
            Err(_) => {
                e.add(
                    name,
                    "NUMBER_TYPE_COERCE",
                    format!("Value \"{raw}\" is not int."),
                );
                default
            }
            Ok(n) if n < min => {
                e.add(
                    name,
                    "NUMBER_TYPE_MIN",
                    format!("Int should be greater than or equal to {min}."),
                );
                default
            }
            Ok(n) if n > max => {
                e.add(
                    name,
                    "NUMBER_TYPE_MAX",
                    format!("Int should be less than or equal to {max}."),
                );
                default
            }
            Ok(n) => n,
        }
    }

    /// An optional snowflake parameter.
    fn snowflake(&self, name: &str, e: &mut FormErrors) -> Option<u64> {
        let raw = self.get(name)?;
        let parsed = parse_snowflake(raw);
        if parsed.is_none() {
            e.add(
                name,
                "NUMBER_TYPE_COERCE",
                format!("Value \"{raw}\" is not snowflake."),
            );
        }
        parsed
    }

    /// An optional boolean parameter (`true`/`false`, `1`/`0`, any case).
    fn boolean(&self, name: &str, e: &mut FormErrors) -> bool {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(_) => {
                e.add(
                    name,
                    "BASE_TYPE_BOOLEAN",
                    "Value must be one of {True, False}.".to_string(),
                );
                false
            }
        }
    }
}

/// A snowflake is an unsigned 64-bit integer written in decimal.
pub fn parse_snowflake(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// Decodes `%XX` escapes and `+` (as a space) in a query component.
/// Malformed escapes are kept literally.
fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Validates a path id; Discord answers 400 50035 for non-snowflakes.
pub fn path_id(field: &str, raw: &str) -> Result<u64, ApiError> {
    let mut e = FormErrors::default();
    match parse_snowflake(raw) {
        Some(id) => Ok(id),
        None => {
            e.add(
                field,
                "NUMBER_TYPE_COERCE",
                format!("Value \"{raw}\" is not snowflake."),
            );
            Err(e.finish().expect_err("one error was added"))
        }
    }
}

/// Answers a matched, authenticated, rate-limit-admitted `GET`.
pub fn handle(
    route: &Route,
    world: &World,
    store: &Store,
    bot: &Bot,
    query: &str,
) -> Result<Value, ApiError> {
    let query = Query::parse(query);
    match route {
        Route::CurrentUser => Ok(bot_user(bot)),
        Route::CurrentUserGuilds => current_user_guilds(world, bot, &query),
        Route::GuildMembers(id) => guild_members(world, bot, id, &query),
        Route::GuildChannels(id) => guild_channels(world, bot, id),
        Route::ChannelMessages(id) => channel_messages(world, &store.lock(), bot, id, &query),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The bot's own user object (`GET /users/@me`).
pub fn bot_user(bot: &Bot) -> Value {
    json!({
        "id": bot.id.to_string(),
        "username": bot.username,
        "global_name": null,
        "avatar": null,
        "discriminator": "0",
        "public_flags": 0,
        "flags": 0,
        "bot": true,
        "banner": null,
        "accent_color": null,
        "avatar_decoration_data": null,
        "mfa_enabled": false,
        "locale": "en-US",
        "premium_type": 0,
        "email": null,
        "verified": true,
    })
}

/// `GET /users/@me/guilds`: ascending ids; `after` takes the first `limit`
/// ids above it, `before` the `limit` ids nearest below it. With both, ids
/// strictly between them are paged as with `after`.
fn current_user_guilds(world: &World, bot: &Bot, q: &Query) -> Result<Value, ApiError> {
    let mut e = FormErrors::default();
    let limit = q.int("limit", GUILDS_LIMIT, &mut e) as usize;
    let before = q.snowflake("before", &mut e);
    let after = q.snowflake("after", &mut e);
    let with_counts = q.boolean("with_counts", &mut e);
    e.finish()?;

    let ids = &bot.guilds;
    let lo = after.map_or(0, |a| ids.partition_point(|&id| id <= a));
    let hi = before.map_or(ids.len(), |b| ids.partition_point(|&id| id < b));
    let range = if lo >= hi {
        &ids[0..0]
    } else if before.is_some() && after.is_none() {
        &ids[hi.saturating_sub(limit)..hi]
    } else {
        &ids[lo..hi.min(lo + limit)]
    };
    let guilds = range
        .iter()
        .filter_map(|&id| world.guild(id))
        .map(|g| {
            let mut obj = json!({
                "id": g.id.to_string(),
                "name": g.name,
                "icon": null,
                "banner": null,
                "owner": false,
                "permissions": GUILD_PERMISSIONS,
                "features": [],
            });
            if with_counts {
                let members = g.member_ids.len();
                obj["approximate_member_count"] = json!(members);
                obj["approximate_presence_count"] = json!(members / 3);
            }
            obj
        })
        .collect();
    Ok(Value::Array(guilds))
}

/// Looks up a guild the bot can see.
fn visible_guild<'w>(world: &'w World, bot: &Bot, id: u64) -> Result<&'w Guild, ApiError> {
    let guild = world.guild(id).ok_or_else(ApiError::unknown_guild)?;
    if !bot.in_guild(id) {
        return Err(ApiError::missing_access());
    }
    Ok(guild)
}

/// `GET /guilds/{id}/members`: user ids above `after`, ascending, first `limit`.
fn guild_members(world: &World, bot: &Bot, raw_id: &str, q: &Query) -> Result<Value, ApiError> {
    let id = path_id("guild_id", raw_id)?;
    let mut e = FormErrors::default();
    let limit = q.int("limit", MEMBERS_LIMIT, &mut e) as usize;
    let after = q.snowflake("after", &mut e).unwrap_or(0);
    e.finish()?;
    let guild = visible_guild(world, bot, id)?;
    if !bot.members_intent {
        return Err(ApiError::missing_access());
    }
    let start = guild.member_ids.partition_point(|&m| m <= after);
    let end = guild.member_ids.len().min(start + limit);
    Ok(Value::Array(
        (start..end).map(|i| member(guild, i)).collect(),
    ))
}

/// The user object of the guild's `index`-th member (by ascending id).
pub fn member_user(guild: &Guild, index: usize) -> Value {
    let n = index + 1;
    json!({
        "id": guild.member_ids[index].to_string(),
        "username": format!("member{n}"),
        "global_name": format!("Member {n}"),
        "avatar": null,
        "discriminator": "0",
        "public_flags": 0,
        "flags": 0,
        "bot": false,
        "banner": null,
        "accent_color": null,
        "avatar_decoration_data": null,
    })
}

/// A guild member object.
fn member(guild: &Guild, index: usize) -> Value {
    let user_created = snowflake_unix_ms(guild.member_ids[index]);
    let joined = user_created.max(snowflake_unix_ms(guild.id)) + 60_000 * (index as u64 + 1);
    json!({
        "user": member_user(guild, index),
        "nick": null,
        "avatar": null,
        "banner": null,
        "roles": [],
        "joined_at": iso8601(joined),
        "premium_since": null,
        "deaf": false,
        "mute": false,
        "flags": 0,
        "pending": false,
        "communication_disabled_until": null,
    })
}

/// `GET /guilds/{id}/channels`.
fn guild_channels(world: &World, bot: &Bot, raw_id: &str) -> Result<Value, ApiError> {
    let guild = visible_guild(world, bot, path_id("guild_id", raw_id)?)?;
    Ok(Value::Array(
        guild.channels.iter().map(|c| channel(guild, c)).collect(),
    ))
}

/// A guild channel object.
pub fn channel(guild: &Guild, c: &Channel) -> Value {
    let mut obj = json!({
        "id": c.id.to_string(),
        "type": c.kind,
        "guild_id": guild.id.to_string(),
        "name": c.name,
        "position": c.position,
        "flags": 0,
        "permission_overwrites": [],
        "nsfw": false,
        "parent_id": null,
        "topic": null,
        "last_message_id": c.message_ids.last().map(u64::to_string),
        "rate_limit_per_user": 0,
    });
    if c.kind == 2 || c.kind == 13 {
        obj["bitrate"] = json!(64000);
        obj["user_limit"] = json!(0);
        obj["rtc_region"] = Value::Null;
    }
    obj
}

/// `GET /channels/{id}/messages`. Every mode returns newest first:
/// - none: the `limit` newest;
/// - `before`: the `limit` newest with id < before;
/// - `after`: the `limit` oldest with id > after (the page right after the
///   cursor), still newest first;
/// - `around`: up to `limit / 2` messages older than the id, the message
///   itself if it exists, and up to `limit - limit / 2 - 1` (or `limit -
///   limit / 2` when the id is not a message) newer ones. A short side is not
///   topped up from the other side.
fn channel_messages(
    world: &World,
    store: &Inner,
    bot: &Bot,
    raw_id: &str,
    q: &Query,
) -> Result<Value, ApiError> {
    let id = path_id("channel_id", raw_id)?;
    let mut e = FormErrors::default();
    let limit = q.int("limit", MESSAGES_LIMIT, &mut e) as usize;
    let around = q.snowflake("around", &mut e);
    let before = q.snowflake("before", &mut e);
    let after = q.snowflake("after", &mut e);
    let cursors: Vec<&str> = ["around", "before", "after"]
        .into_iter()
        .filter(|c| q.get(c).is_some())
        .collect();
    if cursors.len() > 1 {
        for c in &cursors {
            e.add(
                c,
                "PARAM_MUTUALLY_EXCLUSIVE",
                "Only one of around, before and after may be passed.".to_string(),
            );
        }
    }
    e.finish()?;

    let channel = match world.channel(id) {
        Some((guild, chan)) => {
            if !bot.in_guild(guild.id) || chan.access == Access::None {
                return Err(ApiError::missing_access());
            }
            if chan.access == Access::NoHistory {
                return Ok(Value::Array(Vec::new()));
            }
            Some((guild, chan))
        }
        None => match store.dms.get(&id) {
            Some(dm) if dm.bot == bot.id => None,
            Some(_) => return Err(ApiError::missing_access()),
            None => return Err(ApiError::unknown_channel()),
        },
    };
    let ids = listed_ids(channel.map(|(_, c)| c), id, store);
    let ids: &[u64] = &ids;
    let (start, end) = if let Some(b) = before {
        let end = ids.partition_point(|&m| m < b);
        (end.saturating_sub(limit), end)
    } else if let Some(a) = after {
        let start = ids.partition_point(|&m| m <= a);
        (start, ids.len().min(start + limit))
    } else if let Some(x) = around {
        let pivot = ids.partition_point(|&m| m < x);
        let present = usize::from(ids.get(pivot) == Some(&x));
        let older = limit / 2;
        let newer = limit - older - present;
        (
            pivot.saturating_sub(older),
            ids.len().min(pivot + present + newer),
        )
    } else {
        (ids.len().saturating_sub(limit), ids.len())
    };
    Ok(Value::Array(
        ids[start..end]
            .iter()
            .rev()
            .filter_map(|&m| render(channel, store, m))
            .collect(),
    ))
}

/// The ids `GET …/messages` pages through: generated and created messages,
/// ascending, without deleted ones. Borrows the generated ids when the
/// channel has no writes, so reading a million-message channel stays cheap.
fn listed_ids<'a>(chan: Option<&'a Channel>, id: u64, store: &Inner) -> Cow<'a, [u64]> {
    let generated: &[u64] = chan.map_or(&[], |c| &c.message_ids);
    let created = store.by_channel.get(&id);
    if created.is_none() && store.deleted.is_empty() {
        return Cow::Borrowed(generated);
    }
    let mut ids: Vec<u64> = generated
        .iter()
        .chain(created.into_iter().flatten())
        .copied()
        .filter(|m| !store.deleted.contains(m))
        .collect();
    ids.sort_unstable();
    Cow::Owned(ids)
}

/// A listed message: generated from the world or stored by a write.
fn render(channel: Option<(&Guild, &Channel)>, store: &Inner, id: u64) -> Option<Value> {
    if let Some((guild, chan)) = channel
        && let Ok(index) = chan.message_ids.binary_search(&id)
    {
        return Some(message(guild, chan, index));
    }
    store.messages.get(&id).map(|m| m.message.clone())
}

/// The channel's `index`-th message (0 = oldest); its content is
/// `"message {index + 1}"`.
fn message(guild: &Guild, chan: &Channel, index: usize) -> Value {
    let id = chan.message_ids[index];
    let author = if guild.member_ids.is_empty() {
        json!({
            "id": DELETED_USER_ID.to_string(),
            "username": "Deleted User",
            "global_name": null,
            "avatar": null,
            "discriminator": "0",
            "public_flags": 0,
            "flags": 0,
        })
    } else {
        let pool = guild.member_ids.len().min(AUTHORS_PER_CHANNEL);
        member_user(guild, (index * 7 + chan.position) % pool)
    };
    json!({
        "type": 0,
        "id": id.to_string(),
        "channel_id": chan.id.to_string(),
        "author": author,
        "content": format!("message {}", index + 1),
        "timestamp": iso8601(snowflake_unix_ms(id)),
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "components": [],
        "pinned": false,
        "flags": 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &Value) -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn routes_parse() {
        assert_eq!(Route::parse("/users/@me"), Some(Route::CurrentUser));
        assert_eq!(
            Route::parse("/channels/5/messages"),
            Some(Route::ChannelMessages("5".into()))
        );
        assert_eq!(Route::parse("/channels//messages"), None);
        assert_eq!(Route::parse("/users/@me/"), None);
        assert_eq!(
            Route::parse("/channels/5/messages/bulk-delete"),
            Some(Route::BulkDelete("5".into()))
        );
        assert_eq!(
            Route::parse("/channels/5/messages/6/reactions/%F0%9F%91%8D/@me"),
            Some(Route::Reaction {
                channel: "5".into(),
                message: "6".into(),
                emoji: "%F0%9F%91%8D".into(),
                user: "@me".into(),
            })
        );
        let own = Route::parse("/channels/5/messages/6/reactions/x/@me").unwrap();
        assert!(own.allows("PUT") && own.allows("DELETE") && !own.allows("GET"));
        let other = Route::parse("/channels/5/messages/6/reactions/x/7").unwrap();
        assert!(!other.allows("PUT") && other.allows("DELETE"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn around_centres_on_the_message() {
        let w = World::demo();
        let bot = w.bot_by_token("demo-bot-token").unwrap();
        let all = &w.channel(200_000_000_000_000_002).unwrap().1.message_ids;
        let q = format!("around={}&limit=5", all[60]);
        let page = handle(
            &Route::ChannelMessages("200000000000000002".into()),
            &w,
            &Store::default(),
            bot,
            &q,
        )
        .unwrap();
        let mut expected: Vec<u64> = all[58..63].to_vec();
        expected.reverse();
        assert_eq!(ids(&page), expected);
    }
}
