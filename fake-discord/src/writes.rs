//! Discord's write routes: send, edit and delete messages, bulk delete,
//! reactions, typing and opening DMs.
//!
//! Why it exists: a service that writes to Discord must be tested against
//! Discord's write rules (validation errors, permissions, nonce dedup, emoji
//! encoding, message age rules), not against whatever it believes them to
//! be. Sources, as summarised with line numbers in `shared/WRITES-NOTES.md`:
//! - `resources/message.mdx` "Create Message" (fields, 2000 characters,
//!   "at least one of content, embeds, sticker_ids, components, files, or
//!   poll", `nonce` ≤ 25 characters, `enforce_nonce` dedup per author),
//!   "Edit Message" (only the author edits content; files are appended;
//!   v10 `attachments` lists what to keep), "Delete Message", "Bulk Delete
//!   Messages" (2-100 ids, none older than 2 weeks, no duplicates), the
//!   reaction routes (emoji "must be URL Encoded or the request will fail
//!   with 10014: Unknown Emoji"; custom emoji as `name:id`);
//! - `resources/user.mdx` "Create DM" (returns the existing channel);
//! - `resources/channel.mdx` "Trigger Typing Indicator" (204);
//! - `reference.mdx` "Uploading Files" (multipart, `payload_json`,
//!   `files[n]`, 10 MiB per file by default);
//! - `topics/opcodes-and-status-codes.mdx` (every JSON error code used here);
//! - the OpenAPI spec (operation ids in `Route::allows`, status 200/204,
//!   `nonce` int64 or string of ≤ 25, `embeds` ≤ 10, `sticker_ids` ≤ 3,
//!   `components` ≤ 40, `attachments` ≤ 10);
//! - the `enforce_nonce` behaviour from the change log (2024-02-12) and
//!   the staff answers in discord-api-docs PR #6647: a duplicate returns the
//!   original message; a duplicate of a deleted message answers 404 10008.
//!
//! Every performed write also publishes its Gateway dispatch (MESSAGE_CREATE,
//! MESSAGE_UPDATE, MESSAGE_DELETE, MESSAGE_DELETE_BULK,
//! MESSAGE_REACTION_ADD/REMOVE, TYPING_START; `events/gateway-events.mdx`
//! L1116-1490 for their fields) to every bot in the channel's guild, or to
//! the DM's bot, while the state lock is still held, so dispatches leave in
//! the order the writes happened. A nonce duplicate, a reaction already
//! there or already gone changes nothing and publishes nothing.
//!
//! Invariant: each route does its checks and its change under the state
//! lock (`state.rs`), in the order Discord documents or, where it does not,
//! the order listed in README.md: path ids, channel (404/403/400), message
//! (404), ownership (403), body (400/413), then the change. Bodies are
//! parsed before the lock is taken, so a large upload never blocks others.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::api::{self, ApiError, FormErrors, Route, parse_snowflake, path_id};
use crate::gateway::payloads::{bot_member, message_event, reaction_emoji};
use crate::gateway::{Event, Sink};
use crate::http::Request;
use crate::multipart;
use crate::state::{Dm, Inner, Store, Stored};
use crate::timefmt::{iso8601, snowflake_unix_ms, unix_now_ms};
use crate::world::{Access, Bot, Channel, Guild, World};

/// message.mdx: `content` "up to 2000 characters" (SPEC says 4000; the
/// documented limit is what Discord enforces for bots).
pub const MAX_CONTENT_CHARS: usize = 2000;
/// message.mdx / SPEC: `nonce` string of up to 25 characters.
const MAX_NONCE_CHARS: usize = 25;
/// reference.mdx: up to 10 files per message (error 30015).
const MAX_FILES: usize = 10;
/// SPEC `maxItems` of the array fields of `MessageCreateRequest`.
const ARRAY_LIMITS: [(&str, usize); 4] = [
    ("embeds", 10),
    ("sticker_ids", 3),
    ("components", 40),
    ("attachments", 10),
];
/// message.mdx "Bulk Delete Messages": between 2 and 100 ids.
const BULK_MIN: usize = 2;
const BULK_MAX: usize = 100;
/// Bulk delete refuses messages older than two weeks (50034); the same age
/// splits message deletes into buckets.
pub const TWO_WEEKS_MS: u64 = 14 * 86_400_000;
/// Delete buckets, from discord-api-docs issue #8330 (WRITES-NOTES §2).
const YOUNG_MS: u64 = 10_000;
/// message.mdx "Message Flags" that a create or edit may set:
/// SUPPRESS_EMBEDS, SUPPRESS_NOTIFICATIONS, IS_VOICE_MESSAGE, IS_COMPONENTS_V2.
const SETTABLE_FLAGS: u64 = (1 << 2) | (1 << 12) | (1 << 13) | (1 << 15);
/// The 22 low bits of a snowflake.
const LOW_BITS: u64 = (1 << 22) - 1;

/// Sizes and windows of the write side (command-line flags).
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Sends and edits per channel per `send_window` (`--send-limit`).
    pub send_limit: u32,
    pub send_window: Duration,
    /// One reaction change per channel per this (`--reaction-window-ms`).
    pub reaction_window: Duration,
    /// How long an enforced nonce deduplicates (`--nonce-window-ms`).
    pub nonce_window: Duration,
    /// Largest file in an upload (`--max-file-bytes`, 413 50045 above).
    pub max_file_bytes: usize,
    /// Largest request body (`--max-request-bytes`, 413 40005 above).
    pub max_request_bytes: usize,
}

/// A successful write's answer.
#[derive(Debug)]
pub enum Reply {
    /// 200 with a JSON body.
    Json(Value),
    /// 204 No Content.
    Empty,
}

/// Answers a matched, authenticated, rate-limit-admitted write.
#[allow(clippy::too_many_arguments)]
pub fn handle(
    world: &World,
    store: &Store,
    sink: &dyn Sink,
    opts: &WriteOptions,
    route: &Route,
    req: &Request,
    bot: &Bot,
    now: Instant,
) -> Result<Reply, ApiError> {
    match (route, req.method.as_str()) {
        (Route::ChannelMessages(c), "POST") => {
            create_message(world, store, sink, opts, c, req, bot, now)
        }
        (Route::ChannelMessage(c, m), "PATCH") => {
            edit_message(world, store, sink, opts, c, m, req, bot)
        }
        (Route::ChannelMessage(c, m), "DELETE") => {
            let mut inner = store.lock();
            let dest = writable(world, &inner, bot, c)?;
            let id = find_message(&dest, &inner, m)?.0;
            inner.deleted.insert(id);
            inner.reactions.remove(&id);
            let d = json!({ "id": id.to_string(), "channel_id": dest.id.to_string() });
            emit(sink, world, &dest, "MESSAGE_DELETE", d);
            Ok(Reply::Empty)
        }
        (Route::BulkDelete(c), _) => bulk_delete(world, store, sink, c, req, bot),
        (
            Route::Reaction {
                channel,
                message,
                emoji,
                user,
            },
            method,
        ) => {
            let mut inner = store.lock();
            let dest = writable(world, &inner, bot, channel)?;
            let id = find_message(&dest, &inner, message)?.0;
            let emoji = decode_emoji(emoji)?;
            let user = if user == "@me" {
                bot.id
            } else {
                path_id("user_id", user)?
            };
            let message_author = inner.messages.get(&id).map(|m| m.author);
            let reactions = inner.reactions.entry(id).or_default();
            let changed = if method == "PUT" {
                reactions.entry(emoji.clone()).or_default().insert(user)
            } else if let Some(users) = reactions.get_mut(&emoji) {
                let removed = users.remove(&user);
                if users.is_empty() {
                    reactions.remove(&emoji);
                }
                removed
            } else {
                false
            };
            if changed {
                let mut d = json!({
                    "user_id": user.to_string(),
                    "channel_id": dest.id.to_string(),
                    "message_id": id.to_string(),
                    "emoji": reaction_emoji(&emoji),
                    "burst": false,
                    "type": 0,
                });
                let t = if method == "PUT" {
                    d["burst_colors"] = json!([]);
                    if let Some(a) = message_author {
                        d["message_author_id"] = json!(a.to_string());
                    }
                    if let Some((guild, _)) = dest.generated {
                        let mut member = bot_member(guild.id);
                        member["user"] = author(bot);
                        d["member"] = member;
                    }
                    "MESSAGE_REACTION_ADD"
                } else {
                    "MESSAGE_REACTION_REMOVE"
                };
                emit(sink, world, &dest, t, d);
            }
            Ok(Reply::Empty)
        }
        (Route::Typing(c), _) => {
            let inner = store.lock();
            let dest = writable(world, &inner, bot, c)?;
            let mut d = json!({
                "channel_id": dest.id.to_string(),
                "user_id": bot.id.to_string(),
                "timestamp": unix_now_ms() / 1000,
            });
            if let Some((guild, _)) = dest.generated {
                let mut member = bot_member(guild.id);
                member["user"] = author(bot);
                d["member"] = member;
            }
            emit(sink, world, &dest, "TYPING_START", d);
            Ok(Reply::Empty)
        }
        (Route::DmChannels, _) => open_dm(world, store, req, bot),
        _ => Err(ApiError::method_not_allowed()),
    }
}

// --- Gateway events -----------------------------------------------------------

/// Publishes a dispatch about a write in `dest` to the Gateway: to every
/// bot in the channel's guild (with `guild_id` added to `d`), or to the bot
/// of a DM (no `guild_id`, so shard 0 and the DIRECT_* intents).
fn emit(sink: &dyn Sink, world: &World, dest: &Dest, t: &str, mut d: Value) {
    let (guild_id, bots) = match (dest.generated, dest.dm) {
        (Some((guild, _)), _) => (
            Some(guild.id),
            world
                .bots()
                .iter()
                .filter(|b| b.in_guild(guild.id))
                .map(|b| b.id)
                .collect(),
        ),
        (None, Some(dm)) => (None, vec![dm.bot]),
        (None, None) => return,
    };
    if let Some(g) = guild_id
        && d.get("guild_id").is_none()
    {
        d["guild_id"] = json!(g.to_string());
    }
    sink.publish(Event {
        t: t.to_string(),
        d,
        guild_id,
        bots,
    });
}

/// MESSAGE_CREATE / MESSAGE_UPDATE for a message written in `dest`.
fn emit_message(sink: &dyn Sink, world: &World, dest: &Dest, t: &str, message: &Value) {
    let guild = dest.generated.map(|(g, _)| g.id);
    let mut d = message_event(message, guild, dest.kind);
    if t == "MESSAGE_UPDATE" {
        // gateway-events.mdx "Message Update": tts is always false.
        d["tts"] = json!(false);
    }
    emit(sink, world, dest, t, d);
}

// --- Channels and messages ----------------------------------------------------

/// The channel a write targets.
struct Dest<'w> {
    id: u64,
    /// Discord channel type (1 for a DM).
    kind: u64,
    /// The world's channel and guild, for guild channels.
    generated: Option<(&'w Guild, &'w Channel)>,
    /// The DM, for DM channels.
    dm: Option<Dm>,
}

/// Resolves a channel the bot may write to: 50035 for a bad id, 404 10003
/// unknown, 403 50001 when it cannot see it (not in the guild, access
/// `none`, another bot's DM), 403 50013 when it can see but not write
/// (access `read_only`).
fn writable<'w>(
    world: &'w World,
    inner: &Inner,
    bot: &Bot,
    raw: &str,
) -> Result<Dest<'w>, ApiError> {
    let id = path_id("channel_id", raw)?;
    if let Some((guild, chan)) = world.channel(id) {
        if !bot.in_guild(guild.id) || chan.access == Access::None {
            return Err(ApiError::missing_access());
        }
        if chan.access == Access::ReadOnly {
            return Err(ApiError::missing_permissions());
        }
        return Ok(Dest {
            id,
            kind: chan.kind,
            generated: Some((guild, chan)),
            dm: None,
        });
    }
    match inner.dms.get(&id) {
        Some(dm) if dm.bot == bot.id => Ok(Dest {
            id,
            kind: 1,
            generated: None,
            dm: Some(*dm),
        }),
        Some(_) => Err(ApiError::missing_access()),
        None => Err(ApiError::unknown_channel()),
    }
}

/// Whether messages can be sent to the channel: 50008 for voice and
/// category channels, 40058 for forum and media channels (post a thread
/// instead), 50007 when the DM recipient does not accept the bot's DMs.
fn sendable(world: &World, dest: &Dest) -> Result<(), ApiError> {
    match dest.kind {
        2 | 4 => {
            return Err(ApiError::new(
                400,
                "Cannot send messages in a non-text channel",
                50008,
            ));
        }
        15 | 16 => {
            return Err(ApiError::new(
                400,
                "Cannot send a message in a forum channel",
                40058,
            ));
        }
        _ => {}
    }
    if let Some(dm) = dest.dm
        && world.dm_closed(dm.recipient)
    {
        return Err(ApiError::new(
            403,
            "Cannot send messages to this user",
            50007,
        ));
    }
    Ok(())
}

/// Who wrote a message the fake knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Generated with the world (a guild member wrote it).
    Generated,
    /// Created through the API by this bot id.
    Created(u64),
}

/// A live message of the channel: 50035 for a bad id, else 404 10008 when
/// it is unknown, in another channel, or deleted.
fn find_message(dest: &Dest, inner: &Inner, raw: &str) -> Result<(u64, Origin), ApiError> {
    let id = path_id("message_id", raw)?;
    message_origin(dest.id, dest.generated.map(|(_, c)| c), inner, id)
        .map(|o| (id, o))
        .ok_or_else(ApiError::unknown_message)
}

fn message_origin(
    channel_id: u64,
    generated: Option<&Channel>,
    inner: &Inner,
    id: u64,
) -> Option<Origin> {
    if inner.deleted.contains(&id) {
        return None;
    }
    if generated.is_some_and(|c| c.message_ids.binary_search(&id).is_ok()) {
        return Some(Origin::Generated);
    }
    inner
        .messages
        .get(&id)
        .filter(|m| m.channel_id == channel_id)
        .map(|m| Origin::Created(m.author))
}

/// The bucket of `DELETE /channels/{c}/messages/{m}`, by the message's age
/// from its snowflake (discord-api-docs issue #8330): younger than 10 s
/// `5 per 1 s`, younger than 14 days `3 per 333 ms`, older `30 per 4 s`.
/// An unknown message (a 404) lands in the young bucket.
pub fn delete_bucket(
    world: &World,
    store: &Store,
    raw_channel: &str,
    raw_message: &str,
    now_ms: u64,
) -> (&'static str, u32, Duration) {
    let young = (api::DELETE_YOUNG_BUCKET, 5, Duration::from_millis(1000));
    let (Some(c), Some(m)) = (parse_snowflake(raw_channel), parse_snowflake(raw_message)) else {
        return young;
    };
    let generated = world.channel(c).map(|(_, chan)| chan);
    if message_origin(c, generated, &store.lock(), m).is_none() {
        return young;
    }
    let age = now_ms.saturating_sub(snowflake_unix_ms(m));
    if age < YOUNG_MS {
        young
    } else if age < TWO_WEEKS_MS {
        (api::DELETE_RECENT_BUCKET, 3, Duration::from_millis(333))
    } else {
        (api::DELETE_OLD_BUCKET, 30, Duration::from_millis(4000))
    }
}

// --- Bodies -------------------------------------------------------------------

/// A file part of an upload.
struct Upload {
    /// The part name, `files[n]`.
    name: String,
    filename: String,
    content_type: Option<String>,
    size: usize,
}

/// A parsed request body: the JSON parameters and any files.
struct Payload {
    fields: Map<String, Value>,
    files: Vec<Upload>,
}

/// 50109 (opcodes-and-status-codes.mdx).
fn invalid_json() -> ApiError {
    ApiError::new(400, "The request body contains invalid JSON.", 50109)
}

/// A 50035 with one error at the top of the tree.
fn top_level_error(code: &str, message: String) -> ApiError {
    let mut e = FormErrors::default();
    e.add("_errors", code, message);
    e.finish().expect_err("one error was added")
}

/// A JSON body must be an object.
fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(bytes).map_err(|_| invalid_json())? {
        Value::Object(map) => Ok(map),
        _ => Err(top_level_error(
            "DICT_TYPE_CONVERT",
            "Only dictionaries may be used in a DictType".into(),
        )),
    }
}

/// The media type of the request, lowercase, without parameters.
fn mime(req: &Request) -> String {
    req.header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Parses a JSON or multipart body (reference.mdx "Uploading Files").
/// Any other Content-Type is 50035 ("invalid Content-Type" is one of the
/// documented causes of 50035).
fn parse_payload(req: &Request, max_file_bytes: usize) -> Result<Payload, ApiError> {
    match mime(req).as_str() {
        "application/json" => Ok(Payload {
            fields: json_object(&req.body)?,
            files: Vec::new(),
        }),
        "multipart/form-data" => parse_multipart(req, max_file_bytes),
        _ => Err(top_level_error(
            "CONTENT_TYPE_INVALID",
            "Expected \"Content-Type\" header to be one of {'application/json', \
             'multipart/form-data'}."
                .into(),
        )),
    }
}

fn multipart_invalid(problem: impl Into<String>) -> ApiError {
    top_level_error("MULTIPART_INVALID", problem.into())
}

/// A multipart upload: more than 10 files is 400 30015, a file over the
/// per-file limit 413 50045; the parameters come from `payload_json` (or,
/// without it, from the other text parts, as strings).
fn parse_multipart(req: &Request, max_file_bytes: usize) -> Result<Payload, ApiError> {
    let content_type = req.header("content-type").unwrap_or("");
    let boundary = multipart::boundary(content_type)
        .ok_or_else(|| multipart_invalid("the Content-Type has no boundary"))?;
    let parts = multipart::parse(&req.body, &boundary).map_err(multipart_invalid)?;
    let mut payload_json = None;
    let mut loose = Map::new();
    let mut files = Vec::new();
    for part in &parts {
        if part.name == "payload_json" {
            payload_json = Some(part.data);
        } else if part.filename.is_some() || part.name.starts_with("files[") {
            let filename = part
                .filename
                .clone()
                .filter(|f| !f.is_empty())
                .ok_or_else(|| {
                    multipart_invalid(format!("file part {:?} has no filename", part.name))
                })?;
            files.push(Upload {
                name: part.name.clone(),
                filename,
                content_type: part.content_type.clone(),
                size: part.data.len(),
            });
        } else {
            loose.insert(
                part.name.clone(),
                Value::String(String::from_utf8_lossy(part.data).into_owned()),
            );
        }
    }
    if files.len() > MAX_FILES {
        return Err(ApiError::new(
            400,
            "Maximum number of attachments in a message reached (10)",
            30015,
        ));
    }
    if files.iter().any(|f| f.size > max_file_bytes) {
        return Err(ApiError::new(
            413,
            "File uploaded exceeds the maximum size",
            50045,
        ));
    }
    let fields = match payload_json {
        Some(bytes) => json_object(bytes)?,
        None => loose,
    };
    Ok(Payload { fields, files })
}

/// The nonce of a request body (JSON or `payload_json`), for the request
/// log; `None` when absent, null or unreadable.
pub fn logged_nonce(req: &Request) -> Option<Value> {
    let fields = match mime(req).as_str() {
        "application/json" => serde_json::from_slice::<Value>(&req.body).ok()?,
        "multipart/form-data" => {
            let boundary = multipart::boundary(req.header("content-type")?)?;
            let parts = multipart::parse(&req.body, &boundary).ok()?;
            match parts.iter().find(|p| p.name == "payload_json") {
                Some(p) => serde_json::from_slice::<Value>(p.data).ok()?,
                None => Value::String(
                    parts
                        .iter()
                        .find(|p| p.name == "nonce")
                        .map(|p| String::from_utf8_lossy(p.data).into_owned())?,
                ),
            }
        }
        _ => return None,
    };
    match fields {
        Value::String(nonce) => Some(Value::String(nonce)),
        Value::Object(map) => map.get("nonce").filter(|n| !n.is_null()).cloned(),
        _ => None,
    }
}

/// Checks field types and sizes of a create or edit (message.mdx, SPEC),
/// adding every problem to the 50035 tree.
fn validate(fields: &Map<String, Value>, e: &mut FormErrors) {
    match fields.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.chars().count() > MAX_CONTENT_CHARS => e.add(
            "content",
            "BASE_TYPE_MAX_LENGTH",
            format!("Must be {MAX_CONTENT_CHARS} or fewer in length."),
        ),
        Some(Value::String(_)) => {}
        Some(v) => e.add(
            "content",
            "BASE_TYPE_STRING",
            format!("Could not interpret \"{v}\" as string."),
        ),
    }
    match fields.get("nonce") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.chars().count() > MAX_NONCE_CHARS => e.add(
            "nonce",
            "BASE_TYPE_MAX_LENGTH",
            format!("Must be {MAX_NONCE_CHARS} or fewer in length."),
        ),
        Some(Value::String(_)) => {}
        Some(Value::Number(n)) if n.as_i64().is_some() => {}
        Some(_) => e.add(
            "nonce",
            "NONCE_TYPE_INVALID",
            "Must be an integer or a string of 25 or fewer characters.".into(),
        ),
    }
    for key in ["tts", "enforce_nonce"] {
        if let Some(v) = fields.get(key)
            && !v.is_null()
            && !v.is_boolean()
        {
            e.add(
                key,
                "BASE_TYPE_BOOLEAN",
                "Must be either true or false.".into(),
            );
        }
    }
    if let Some(v) = fields.get("flags")
        && !v.is_null()
        && !v.is_u64()
    {
        e.add(
            "flags",
            "NUMBER_TYPE_COERCE",
            format!("Value \"{v}\" is not int."),
        );
    }
    if let Some(v) = fields.get("allowed_mentions")
        && !v.is_null()
        && !v.is_object()
    {
        e.add(
            "allowed_mentions",
            "DICT_TYPE_CONVERT",
            "Only dictionaries may be used in a DictType".into(),
        );
    }
    for (key, max) in ARRAY_LIMITS {
        match fields.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.len() > max => e.add(
                key,
                "BASE_TYPE_MAX_LENGTH",
                format!("Must be {max} or fewer in length."),
            ),
            Some(Value::Array(_)) => {}
            Some(_) => e.add(key, "BASE_TYPE_LIST", "Must be a list.".into()),
        }
    }
}

fn non_empty_array(v: Option<&Value>) -> bool {
    v.and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

/// message.mdx: at least one of content, embeds, sticker_ids, components,
/// files or poll (a forward needs only `message_reference`).
fn is_empty_create(fields: &Map<String, Value>, files: usize) -> bool {
    let content = fields
        .get("content")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    let forward = fields
        .get("message_reference")
        .and_then(|r| r.get("type"))
        .and_then(Value::as_u64)
        == Some(1);
    !(content
        || files > 0
        || forward
        || ["embeds", "sticker_ids", "components"]
            .iter()
            .any(|k| non_empty_array(fields.get(*k)))
        || fields.get("poll").is_some_and(Value::is_object))
}

fn empty_message() -> ApiError {
    ApiError::new(400, "Cannot send an empty message", 50006)
}

/// The string Discord deduplicates a nonce by (an integer and its decimal
/// string are the same nonce).
fn nonce_key(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

// --- Message objects ----------------------------------------------------------

/// The bot as a message author (the public part of `GET /users/@me`).
fn author(bot: &Bot) -> Value {
    let mut user = api::bot_user(bot);
    if let Some(map) = user.as_object_mut() {
        for private in ["mfa_enabled", "locale", "premium_type", "email", "verified"] {
            map.remove(private);
        }
    }
    user
}

/// A user object for any id: a generated member's, or a generic one.
fn user_object(world: &World, id: u64) -> Value {
    match world.member(id) {
        Some((guild, index)) => api::member_user(guild, index),
        None => json!({
            "id": id.to_string(),
            "username": format!("user{}", id % 10_000),
            "global_name": null,
            "avatar": null,
            "discriminator": "0",
            "public_flags": 0,
            "flags": 0,
            "bot": false,
            "banner": null,
            "accent_color": null,
            "avatar_decoration_data": null,
        }),
    }
}

/// `mention_everyone` and `mentions` as Discord derives them from content
/// and `allowed_mentions` (message.mdx "Allowed Mentions": absent means
/// users, roles and everyone are parsed for a bot's message; `users` lists
/// only those ids). `@everyone` has no effect outside a guild.
fn mentions(world: &World, dest: &Dest, content: &str, allowed: Option<&Value>) -> (bool, Value) {
    let (everyone_ok, users_ok, listed) = match allowed.filter(|a| a.is_object()) {
        None => (true, true, Vec::new()),
        Some(a) => {
            let parse: Vec<&str> = a
                .get("parse")
                .and_then(Value::as_array)
                .map(|p| p.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let listed = a
                .get("users")
                .and_then(Value::as_array)
                .map(|u| u.iter().filter_map(value_snowflake).collect())
                .unwrap_or_default();
            (
                parse.contains(&"everyone"),
                parse.contains(&"users"),
                listed,
            )
        }
    };
    let everyone = everyone_ok
        && dest.generated.is_some()
        && (content.contains("@everyone") || content.contains("@here"));
    let mut ids: Vec<u64> = Vec::new();
    for piece in content.split("<@").skip(1) {
        let piece = piece.strip_prefix('!').unwrap_or(piece);
        if let Some((raw, _)) = piece.split_once('>')
            && let Some(id) = parse_snowflake(raw)
            && (users_ok || listed.contains(&id))
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    let users = ids.into_iter().map(|id| user_object(world, id)).collect();
    (everyone, Value::Array(users))
}

/// A snowflake given as a JSON string or number.
fn value_snowflake(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => parse_snowflake(s),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// An attachment object for an uploaded file (SPEC `MessageAttachmentResponse`
/// requires id, filename, size, url, proxy_url).
fn attachment(id: u64, channel: u64, file: &Upload, fields: &Map<String, Value>) -> Value {
    let url = format!(
        "https://cdn.discordapp.com/attachments/{channel}/{id}/{}",
        file.filename
    );
    let mut a = json!({
        "id": id.to_string(),
        "filename": file.filename,
        "size": file.size,
        "url": url,
        "proxy_url": url.replace("cdn.discordapp.com", "media.discordapp.net"),
    });
    if let Some(ct) = &file.content_type {
        a["content_type"] = json!(ct);
    }
    // payload_json `attachments[].id` is the `n` of `files[n]`.
    let n = file
        .name
        .strip_prefix("files[")
        .and_then(|r| r.strip_suffix(']'));
    let described = fields
        .get("attachments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|d| {
            d.get("id")
                .is_some_and(|i| Some(i.to_string().trim_matches('"')) == n)
        })
        .and_then(|d| d.get("description"))
        .filter(|d| d.is_string());
    if let Some(d) = described {
        a["description"] = d.clone();
    }
    a
}

/// `fields[key]` as an array, or `[]`.
fn array_or_empty(fields: &Map<String, Value>, key: &str) -> Value {
    fields
        .get(key)
        .filter(|v| v.is_array())
        .cloned()
        .unwrap_or_else(|| json!([]))
}

/// A new message object (message.mdx "Message Object").
fn message_object(
    world: &World,
    bot: &Bot,
    dest: &Dest,
    id: u64,
    fields: &Map<String, Value>,
    attachments: Vec<Value>,
) -> Value {
    let content = fields
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let (mention_everyone, mentions) =
        mentions(world, dest, &content, fields.get("allowed_mentions"));
    let flags = fields.get("flags").and_then(Value::as_u64).unwrap_or(0) & SETTABLE_FLAGS;
    let mut m = json!({
        "type": 0,
        "id": id.to_string(),
        "channel_id": dest.id.to_string(),
        "author": author(bot),
        "content": content,
        "timestamp": iso8601(snowflake_unix_ms(id)),
        "edited_timestamp": null,
        "tts": fields.get("tts").and_then(Value::as_bool).unwrap_or(false),
        "mention_everyone": mention_everyone,
        "mentions": mentions,
        "mention_roles": [],
        "attachments": attachments,
        "embeds": array_or_empty(fields, "embeds"),
        "components": array_or_empty(fields, "components"),
        "pinned": false,
        "flags": flags,
    });
    if let Some(nonce) = fields.get("nonce").filter(|n| !n.is_null()) {
        m["nonce"] = nonce.clone();
    }
    m
}

// --- Routes -------------------------------------------------------------------

/// `POST /channels/{id}/messages`.
#[allow(clippy::too_many_arguments)]
fn create_message(
    world: &World,
    store: &Store,
    sink: &dyn Sink,
    opts: &WriteOptions,
    raw_channel: &str,
    req: &Request,
    bot: &Bot,
    now: Instant,
) -> Result<Reply, ApiError> {
    let payload = parse_payload(req, opts.max_file_bytes);
    let mut inner = store.lock();
    let dest = writable(world, &inner, bot, raw_channel)?;
    sendable(world, &dest)?;
    let Payload { fields, files } = payload?;
    let mut e = FormErrors::default();
    validate(&fields, &mut e);
    e.finish()?;
    if is_empty_create(&fields, files.len()) {
        return Err(empty_message());
    }
    let nonce = nonce_key(fields.get("nonce"));
    let enforce = fields.get("enforce_nonce") == Some(&Value::Bool(true));
    // Dedup is per author ("the same sender"), whatever the channel.
    if enforce
        && let Some(n) = &nonce
        && let Some(original) = inner.nonce(bot.id, n, opts.nonce_window, now)
    {
        if inner.deleted.contains(&original) {
            return Err(ApiError::unknown_message());
        }
        if let Some(stored) = inner.messages.get(&original) {
            return Ok(Reply::Json(stored.message.clone()));
        }
    }
    let now_ms = unix_now_ms();
    let id = inner.next_id(now_ms);
    let attachments = files
        .iter()
        .map(|f| attachment(inner.next_id(now_ms), dest.id, f, &fields))
        .collect();
    let message = message_object(world, bot, &dest, id, &fields, attachments);
    inner.insert(
        id,
        Stored {
            channel_id: dest.id,
            author: bot.id,
            message: message.clone(),
            allowed_mentions: fields
                .get("allowed_mentions")
                .cloned()
                .unwrap_or(Value::Null),
            enforce_nonce: enforce,
        },
    );
    if let Some(n) = nonce {
        inner.remember_nonce(bot.id, &n, id, opts.nonce_window, now);
    }
    emit_message(sink, world, &dest, "MESSAGE_CREATE", &message);
    Ok(Reply::Json(message))
}

/// `PATCH /channels/{id}/messages/{id}`: only the author may edit content,
/// embeds, components and attachments (message.mdx "Edit Message"); new
/// files are appended, and `attachments`, when given, lists the old ones
/// to keep.
#[allow(clippy::too_many_arguments)]
fn edit_message(
    world: &World,
    store: &Store,
    sink: &dyn Sink,
    opts: &WriteOptions,
    raw_channel: &str,
    raw_message: &str,
    req: &Request,
    bot: &Bot,
) -> Result<Reply, ApiError> {
    let payload = parse_payload(req, opts.max_file_bytes);
    let mut inner = store.lock();
    let dest = writable(world, &inner, bot, raw_channel)?;
    let (id, origin) = find_message(&dest, &inner, raw_message)?;
    if origin != Origin::Created(bot.id) {
        return Err(ApiError::new(
            403,
            "Cannot edit a message authored by another user",
            50005,
        ));
    }
    let Payload { fields, files } = payload?;
    let mut e = FormErrors::default();
    validate(&fields, &mut e);
    e.finish()?;
    let Some(mut stored) = inner.messages.get(&id).cloned() else {
        return Err(ApiError::unknown_message());
    };
    let m = &mut stored.message;
    if let Some(content) = fields.get("content") {
        m["content"] = json!(content.as_str().unwrap_or(""));
    }
    for key in ["embeds", "components"] {
        if fields.contains_key(key) {
            m[key] = array_or_empty(&fields, key);
        }
    }
    if let Some(flags) = fields.get("flags").and_then(Value::as_u64) {
        let kept = m["flags"].as_u64().unwrap_or(0) & (1 << 15);
        m["flags"] = json!((flags & SETTABLE_FLAGS) | kept);
    }
    if let Some(keep) = fields.get("attachments").and_then(Value::as_array) {
        let keep: Vec<String> = keep
            .iter()
            .filter_map(|a| {
                a.get("id")
                    .map(|i| i.to_string().trim_matches('"').to_string())
            })
            .collect();
        if let Some(old) = m["attachments"].as_array_mut() {
            old.retain(|a| {
                a["id"]
                    .as_str()
                    .is_some_and(|i| keep.iter().any(|k| k == i))
            });
        }
    }
    let now_ms = unix_now_ms();
    for file in &files {
        let added = attachment(inner.next_id(now_ms), dest.id, file, &fields);
        if let Some(list) = m["attachments"].as_array_mut() {
            list.push(added);
        }
    }
    if fields.contains_key("allowed_mentions") {
        stored.allowed_mentions = fields["allowed_mentions"].clone();
    }
    let m = &mut stored.message;
    let content = m["content"].as_str().unwrap_or("").to_string();
    // Without allowed_mentions an edit re-parses with the defaults
    // (message.mdx "Edit Message").
    let (everyone, users) = mentions(world, &dest, &content, fields.get("allowed_mentions"));
    m["mention_everyone"] = json!(everyone);
    m["mentions"] = users;
    let has = |k: &str| m[k].as_array().is_some_and(|a| !a.is_empty());
    if content.is_empty() && !has("embeds") && !has("components") && !has("attachments") {
        return Err(empty_message());
    }
    m["edited_timestamp"] = json!(iso8601(now_ms));
    let answer = m.clone();
    inner.messages.insert(id, stored);
    emit_message(sink, world, &dest, "MESSAGE_UPDATE", &answer);
    Ok(Reply::Json(answer))
}

/// `POST /channels/{id}/messages/bulk-delete` (message.mdx "Bulk Delete
/// Messages"): 2-100 distinct ids, none older than 2 weeks (50034); unknown
/// ids are accepted and count toward the 2-100. Guild channels only.
fn bulk_delete(
    world: &World,
    store: &Store,
    sink: &dyn Sink,
    raw_channel: &str,
    req: &Request,
    bot: &Bot,
) -> Result<Reply, ApiError> {
    let payload = parse_payload(req, 0);
    let mut inner = store.lock();
    let dest = writable(world, &inner, bot, raw_channel)?;
    if dest.dm.is_some() {
        return Err(ApiError::new(
            400,
            "Cannot execute action on this channel type",
            50024,
        ));
    }
    let fields = payload?.fields;
    let mut e = FormErrors::default();
    let mut ids = Vec::new();
    match fields.get("messages") {
        None | Some(Value::Null) => e.add(
            "messages",
            "BASE_TYPE_REQUIRED",
            "This field is required".into(),
        ),
        Some(Value::Array(items)) => {
            if items.len() < BULK_MIN {
                e.add(
                    "messages",
                    "BASE_TYPE_MIN_LENGTH",
                    format!("Must be {BULK_MIN} or more in length."),
                );
            } else if items.len() > BULK_MAX {
                e.add(
                    "messages",
                    "BASE_TYPE_MAX_LENGTH",
                    format!("Must be {BULK_MAX} or fewer in length."),
                );
            }
            for (i, item) in items.iter().enumerate() {
                match value_snowflake(item) {
                    Some(id) => ids.push(id),
                    None => e.add_item(
                        "messages",
                        i,
                        "NUMBER_TYPE_COERCE",
                        format!(
                            "Value \"{}\" is not snowflake.",
                            item.to_string().trim_matches('"')
                        ),
                    ),
                }
            }
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                e.add(
                    "messages",
                    "DUPLICATE_VALUE",
                    "Message ids must be unique.".into(),
                );
            }
        }
        Some(_) => e.add("messages", "BASE_TYPE_LIST", "Must be a list.".into()),
    }
    e.finish()?;
    let now_ms = unix_now_ms();
    if ids
        .iter()
        .any(|&id| now_ms.saturating_sub(snowflake_unix_ms(id)) >= TWO_WEEKS_MS)
    {
        return Err(ApiError::new(
            400,
            "You can only bulk delete messages that are under 14 days old.",
            50034,
        ));
    }
    let generated = dest.generated.map(|(_, c)| c);
    let mut gone = Vec::new();
    for id in ids {
        if message_origin(dest.id, generated, &inner, id).is_some() {
            inner.deleted.insert(id);
            inner.reactions.remove(&id);
            gone.push(json!(id.to_string()));
        }
    }
    if !gone.is_empty() {
        let d = json!({ "ids": gone, "channel_id": dest.id.to_string() });
        emit(sink, world, &dest, "MESSAGE_DELETE_BULK", d);
    }
    Ok(Reply::Empty)
}

/// Decodes the `{emoji}` path segment exactly once (message.mdx "Create
/// Reaction": the emoji "must be URL Encoded or the request will fail with
/// 10014: Unknown Emoji"). Raw non-ASCII bytes, a malformed escape, a `%`
/// left after decoding (double encoding), or something that is neither a
/// custom emoji `name:id` nor a Unicode emoji answer 400 10014.
pub fn decode_emoji(raw: &str) -> Result<String, ApiError> {
    let unknown = || ApiError::new(400, "Unknown Emoji", 10014);
    if !raw.is_ascii() {
        return Err(unknown());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or_else(unknown)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| unknown())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).map_err(|_| unknown())?;
    if decoded.contains('%') || !(is_custom_emoji(&decoded) || is_unicode_emoji(&decoded)) {
        return Err(unknown());
    }
    Ok(decoded)
}

/// `name:id`: a custom emoji name (2-32 of `[A-Za-z0-9_]`) and a snowflake.
fn is_custom_emoji(s: &str) -> bool {
    s.split_once(':').is_some_and(|(name, id)| {
        (2..=32).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && parse_snowflake(id).is_some()
    })
}

/// A plausible Unicode emoji: a keycap (`[0-9#*]` + U+FE0F/U+20E3), or a
/// sequence of characters from the emoji blocks (pictographs, symbols,
/// regional indicators, ZWJ, variation selectors, tags). The fake does not
/// carry Unicode's emoji list; this is the shape test, not the list.
fn is_unicode_emoji(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if matches!(first, '0'..='9' | '#' | '*') {
        let rest: Vec<char> = chars.collect();
        return !rest.is_empty() && rest.iter().all(|c| matches!(*c, '\u{FE0F}' | '\u{20E3}'));
    }
    let emoji_char = |c: char| {
        matches!(c as u32,
            0xA9 | 0xAE | 0x200D | 0x203C..=0x3299 | 0xFE0F
            | 0x1F000..=0x1FAFF | 0xE0020..=0xE007F)
    };
    s.len() <= 64 && !matches!(first, '\u{200D}' | '\u{FE0F}') && s.chars().all(emoji_char)
}

/// `POST /users/@me/channels` (user.mdx "Create DM"): 200 with the DM
/// channel; the same recipient always gets the same channel.
fn open_dm(world: &World, store: &Store, req: &Request, bot: &Bot) -> Result<Reply, ApiError> {
    let fields = parse_payload(req, 0)?.fields;
    let mut e = FormErrors::default();
    let recipient = match fields.get("recipient_id") {
        None | Some(Value::Null) => {
            e.add(
                "recipient_id",
                "BASE_TYPE_REQUIRED",
                "This field is required".into(),
            );
            None
        }
        Some(v) => {
            let id = value_snowflake(v);
            if id.is_none() {
                e.add(
                    "recipient_id",
                    "NUMBER_TYPE_COERCE",
                    format!(
                        "Value \"{}\" is not snowflake.",
                        v.to_string().trim_matches('"')
                    ),
                );
            }
            id
        }
    };
    e.finish()?;
    let recipient = recipient.expect("validated above");
    let id = dm_channel_id(world, bot.id, recipient);
    let mut inner = store.lock();
    inner.dms.insert(
        id,
        Dm {
            bot: bot.id,
            recipient,
        },
    );
    let last = inner.live_in(id).last().map(|(m, _)| m.to_string());
    Ok(Reply::Json(json!({
        "id": id.to_string(),
        "type": 1,
        "last_message_id": last,
        "flags": 0,
        "recipients": [user_object(world, recipient)],
    })))
}

/// The DM channel id of (bot, user): deterministic, a snowflake minted just
/// after the younger of the two accounts, never a world channel or guild id.
pub fn dm_channel_id(world: &World, bot: u64, user: u64) -> u64 {
    let mut h = (bot ^ user.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 31;
    let ts = (bot >> 22).max(user >> 22) + 1;
    loop {
        let id = (ts << 22) | (h & LOW_BITS);
        if world.channel(id).is_none() && world.guild(id).is_none() && id != bot && id != user {
            return id;
        }
        h = h.wrapping_add(1);
    }
}

/// Percent-decodes an `X-Audit-Log-Reason` once (audit-log.mdx: "1-512
/// URL-encoded UTF-8 characters"); malformed escapes stay as they are.
pub fn decode_audit_reason(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| raw.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_is_decoded_exactly_once() {
        assert_eq!(decode_emoji("%F0%9F%91%8D").unwrap(), "👍");
        assert_eq!(
            decode_emoji("blob:123456789012345678").unwrap(),
            "blob:123456789012345678"
        );
        assert_eq!(
            decode_emoji("blob%3A123456789012345678").unwrap(),
            "blob:123456789012345678"
        );
        assert_eq!(
            decode_emoji("1%EF%B8%8F%E2%83%A3").unwrap(),
            "1\u{FE0F}\u{20E3}"
        );
        assert_eq!(
            decode_emoji("%F0%9F%8F%B3%EF%B8%8F%E2%80%8D%F0%9F%8C%88").unwrap(),
            "🏳️‍🌈"
        );
        for bad in [
            "👍",
            "%25F0%259F%2591%258D",
            "thumbsup",
            "%F0%9F",
            "%zz",
            "a:1",
            "%C3%A9",
        ] {
            assert_eq!(decode_emoji(bad).unwrap_err().body["code"], 10014, "{bad}");
        }
    }

    #[test]
    fn audit_reason_is_decoded_once() {
        assert_eq!(decode_audit_reason("a%20b%2520%E2%9C%93+"), "a b%20✓+");
        assert_eq!(decode_audit_reason("100%"), "100%");
    }

    #[test]
    fn dm_channel_ids_are_stable_and_distinct() {
        let w = World::demo();
        let a = dm_channel_id(&w, 100_000_000_000_000_001, 5_000_000_000_000_000);
        assert_eq!(
            a,
            dm_channel_id(&w, 100_000_000_000_000_001, 5_000_000_000_000_000)
        );
        assert_ne!(
            a,
            dm_channel_id(&w, 100_000_000_000_000_001, 5_000_000_000_000_001)
        );
        assert!(w.channel(a).is_none());
    }

    #[test]
    fn delete_buckets_follow_the_message_age() {
        let w = World::demo();
        let store = Store::default();
        let now_ms = unix_now_ms();
        let minted = |age: u64| (now_ms - age - crate::timefmt::DISCORD_EPOCH_MS) << 22;
        let (young, recent) = (minted(1_000), minted(86_400_000));
        for id in [young, recent] {
            store.lock().insert(
                id,
                Stored {
                    channel_id: 200_000_000_000_000_002,
                    author: 1,
                    message: json!({}),
                    allowed_mentions: Value::Null,
                    enforce_nonce: false,
                },
            );
        }
        let c = "200000000000000002";
        let bucket = |id: u64| delete_bucket(&w, &store, c, &id.to_string(), now_ms);
        assert_eq!(bucket(young).0, api::DELETE_YOUNG_BUCKET);
        assert_eq!(
            bucket(recent),
            (api::DELETE_RECENT_BUCKET, 3, Duration::from_millis(333))
        );
        let generated = w.channel(200_000_000_000_000_002).unwrap().1.message_ids[0];
        assert_eq!(
            bucket(generated),
            (api::DELETE_OLD_BUCKET, 30, Duration::from_millis(4000))
        );
        // Unknown or deleted: the young bucket.
        assert_eq!(bucket(minted(5 * 86_400_000)).0, api::DELETE_YOUNG_BUCKET);
        store.lock().deleted.insert(recent);
        assert_eq!(bucket(recent).0, api::DELETE_YOUNG_BUCKET);
    }

    #[test]
    fn empty_and_oversized_creates_are_refused() {
        let f = |v: Value| v.as_object().unwrap().clone();
        assert!(is_empty_create(&f(json!({"content": ""})), 0));
        assert!(!is_empty_create(&f(json!({})), 1));
        assert!(!is_empty_create(&f(json!({"embeds": [{"title": "x"}]})), 0));
        let mut e = FormErrors::default();
        validate(
            &f(json!({"content": "x".repeat(2001), "nonce": "y".repeat(26)})),
            &mut e,
        );
        let err = e.finish().unwrap_err();
        assert_eq!(
            err.body["errors"]["content"]["_errors"][0]["code"],
            "BASE_TYPE_MAX_LENGTH"
        );
        assert!(err.body["errors"]["nonce"].is_object());
    }
}
