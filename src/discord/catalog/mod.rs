//! catalog: the Discord REST operations the passthrough
//! (`/api/discord/v10/...`) may forward, and the matcher that turns a
//! client's raw path into one of them.
//!
//! The table (`table.rs`) is generated from Discord's OpenAPI description by
//! `scripts/gen_discord_routes.py` and committed; `tests/catalog.rs` fails when
//! it differs from the script's output, so a spec update is a reviewed diff and
//! the binary carries no spec.
//!
//! Invariants:
//! - the raw path is checked before anything is decoded: dot segments, empty
//!   segments, encoded separators, backslashes, control and non-ASCII bytes
//!   are refused, never normalised (WRITES-NOTES §5.2: every normalisation is
//!   a way out of the `/api/v10` prefix with the bot's token attached);
//! - a `Found` holds validated values only (snowflakes as integers, emoji as
//!   `Emoji`, codes in a safe charset), and `discord_path` rebuilds the path
//!   from them: no byte of the client's path is copied into the Discord URL
//!   unless it passed a charset check;
//! - `query` likewise rebuilds the query string from typed values of declared
//!   parameters only;
//! - the catalog knows no HTTP status and no configuration: it says which
//!   operation and group a request is; the caller decides what to answer.

mod query;
#[rustfmt::skip]
mod table;

use std::fmt::{self, Write};

use crate::discord::emoji::Emoji;
use crate::discord::percent::hex;
use crate::discord::ratelimit::RouteKey;
use crate::discord::snowflake::Snowflake;

pub use query::{QueryError, query};
pub use table::{INDEX, MAX_PARAMS, OPERATIONS, TEMPLATES};

/// Longest raw path accepted, in bytes (WRITES-NOTES §7.5). Discord's
/// longest template with 20-digit ids and a 64-byte emoji fits in ~300.
pub const MAX_PATH_BYTES: usize = 512;

/// Most segments a raw path may have (WRITES-NOTES §7.5); the longest
/// template in v10 has 7.
pub const MAX_SEGMENTS: usize = 12;

/// The methods Discord's REST API uses; anything else is never forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// In `Allow` order.
    pub const ALL: [Method; 5] = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
    ];

    /// Exact, upper-case: HTTP methods are case-sensitive (RFC 9110 §9.1).
    pub fn parse(text: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Which `--discord-routes` setting serves an operation (API.md, "Discord
/// passthrough"). The rules are in `scripts/gen_discord_routes.py`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// Never served, whatever the configuration: application, OAuth2,
    /// interaction-callback, Gateway and webhook-token routes, and changes
    /// to the bot's own user. In the table so that they are refused by
    /// decision, not by accident.
    Never,
    /// Reads, except those that return secrets such as webhook tokens.
    Read,
    /// Messages, reactions, pins, threads, typing, polls, opening DMs.
    Messaging,
    /// Members' roles, nicknames, timeouts, kicks, bans.
    Moderation,
    /// The rest of guild, channel, role, emoji and webhook management.
    Admin,
}

impl Group {
    /// The groups `--discord-routes` can enable, in documentation order.
    pub const SERVABLE: [Group; 4] = [
        Group::Read,
        Group::Messaging,
        Group::Moderation,
        Group::Admin,
    ];

    /// The name in `--discord-routes` and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Group::Never => "never",
            Group::Read => "read",
            Group::Messaging => "messaging",
            Group::Moderation => "moderation",
            Group::Admin => "admin",
        }
    }

    /// One of `read`, `messaging`, `moderation`, `admin`. `never` is not a
    /// group anyone can turn on, so it does not parse.
    pub fn parse(text: &str) -> Option<Group> {
        Group::SERVABLE.into_iter().find(|g| g.name() == text)
    }
}

/// A segment of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    /// Compared byte for byte: `@me` is not `@ME`.
    Lit(&'static str),
    Param(PathParam),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathParam {
    /// The spec's name (`channel_id`).
    pub name: &'static str,
    pub kind: PathKind,
}

/// What a path parameter may hold. Each kind has a charset with no separator
/// and no `%`, so a matched value can go into a URL only as validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// 1 to 20 ASCII digits that fit a u64 (`Snowflake::parse`).
    Snowflake,
    /// Percent-decoded once, then `Emoji::parse`; re-encoded by us.
    Emoji,
    /// Invite and guild-template codes: `[A-Za-z0-9-]{1,32}`.
    Code,
    /// Webhook and interaction tokens, activity instance ids:
    /// `[A-Za-z0-9_-]{1,256}`. Only never-group routes have them.
    Opaque,
    /// A small integer (`answer_id`, 1 to 10), ASCII digits.
    Int { min: u32, max: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryParam {
    pub name: &'static str,
    pub kind: QueryKind,
    /// Given empty counts as missing (API.md, Conventions).
    pub required: bool,
}

/// A query parameter's type, from the spec's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Snowflake,
    /// `true`/`false`/`1`/`0`, sent as `true`/`false`.
    Boolean,
    /// ASCII digits, in range, sent without leading zeros.
    Integer {
        min: u64,
        max: u64,
    },
    /// An integer enumeration (reaction type, audit-log action type).
    IntOneOf(&'static [u32]),
    /// Free text, bounded in characters; no control characters.
    Text {
        min_len: u16,
        max_len: Option<u16>,
    },
    /// A string enumeration, compared exactly.
    OneOf(&'static [&'static str]),
    /// RFC 3339 (`format: date-time`), as JavaScript's `toISOString` sends it.
    DateTime,
    /// The parameter repeated (`a=1&a=2`, OpenAPI's default `form` style),
    /// each value of `item`'s kind.
    List {
        item: &'static QueryKind,
        max_items: u16,
        unique: bool,
    },
    /// Snowflakes, comma-delimited or repeated, sent comma-delimited as
    /// Discord documents (`sku_ids`, `include_roles`).
    SnowflakeCsv {
        max_items: u16,
    },
}

/// Which request bodies an operation takes; the caller answers 415 to the
/// others. Form-urlencoded, which the spec lists on a few routes, is never
/// forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Json,
    Multipart,
    JsonOrMultipart,
}

/// One operation of Discord's API that accepts a bot token.
#[derive(Debug, PartialEq, Eq)]
pub struct Operation {
    pub method: Method,
    /// The spec's path template (`/channels/{channel_id}/messages`).
    pub template: &'static str,
    /// Method and template as the rate limiter keys routes
    /// (`POST /channels/:channel_id/messages`, the form `Route::key` uses),
    /// so a call through the passthrough and the same call through a
    /// first-class route share a bucket before Discord names it.
    pub route_key: &'static str,
    pub operation_id: &'static str,
    pub group: Group,
    pub segments: &'static [Seg],
    /// Every query parameter the spec declares; no other is forwarded.
    pub query: &'static [QueryParam],
    pub body: BodyKind,
}

/// A validated path parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Snowflake(Snowflake),
    Emoji(Emoji),
    Int(u32),
    /// A `Code` or `Opaque` segment, borrowed from the raw path: its charset
    /// check leaves nothing to encode.
    Text(&'a str),
}

impl fmt::Display for Value<'_> {
    /// The canonical path segment.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Snowflake(id) => write!(f, "{id}"),
            Value::Emoji(emoji) => f.write_str(&emoji.encoded()),
            Value::Int(n) => write!(f, "{n}"),
            Value::Text(text) => f.write_str(text),
        }
    }
}

/// A request matched to an operation, with its path parameters validated.
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    pub op: &'static Operation,
    params: [Value<'a>; MAX_PARAMS],
    len: u8,
}

impl<'a> Found<'a> {
    /// The path parameters in template order.
    pub fn params(&self) -> &[Value<'a>] {
        &self.params[..usize::from(self.len)]
    }

    /// A path parameter by its spec name.
    pub fn param(&self, name: &str) -> Option<&Value<'a>> {
        self.op
            .segments
            .iter()
            .filter_map(|s| match s {
                Seg::Param(p) => Some(p.name),
                Seg::Lit(_) => None,
            })
            .zip(self.params())
            .find_map(|(n, v)| (n == name).then_some(v))
    }

    /// The path to send Discord (below `/api/v10`), rebuilt from the template
    /// and the validated values, never copied from the request.
    pub fn discord_path(&self) -> String {
        let mut out = String::with_capacity(self.op.template.len() + 32);
        let mut values = self.params().iter();
        for seg in self.op.segments {
            out.push('/');
            match seg {
                Seg::Lit(text) => out.push_str(text),
                Seg::Param(_) => match values.next() {
                    Some(Value::Emoji(emoji)) => emoji.write_encoded(&mut out),
                    // Writing to a String cannot fail.
                    Some(value) => drop(write!(out, "{value}")),
                    None => {}
                },
            }
        }
        out
    }

    /// The id Discord scopes this route's rate limit by: the first
    /// `channel_id`, `guild_id` or `webhook_id` of the template (Discord's
    /// "top-level resources", rate-limits.mdx).
    pub fn top_level_id(&self) -> Option<u64> {
        self.op
            .segments
            .iter()
            .filter_map(|s| match s {
                Seg::Param(p) => Some(p.name),
                Seg::Lit(_) => None,
            })
            .zip(self.params())
            .find_map(|(name, value)| match (name, value) {
                ("channel_id" | "guild_id" | "webhook_id", Value::Snowflake(id)) => Some(id.get()),
                _ => None,
            })
    }

    /// The rate limiter's key for this call before Discord names its bucket.
    pub fn route_key(&self) -> RouteKey {
        RouteKey {
            template: self.op.route_key,
            top_level: self.top_level_id(),
        }
    }
}

/// Why a path is not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The path is malformed or hostile (dot segments, encoded separators, a
    /// bad parameter...): the caller answers 400 with this reason.
    Malformed(&'static str),
    /// No operation has this path: 404.
    NotFound,
    /// Operations have this path, none with this method: 405, with `allow`
    /// (`GET, PATCH`) as the `Allow` header.
    MethodNotAllowed { allow: String },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Malformed(reason) => f.write_str(reason),
            Refused::NotFound => f.write_str("not an allowed Discord route"),
            Refused::MethodNotAllowed { allow } => {
                write!(
                    f,
                    "method not allowed on this Discord route; allowed: {allow}"
                )
            }
        }
    }
}

impl std::error::Error for Refused {}

/// Matches a request to an operation. `raw_path` is the path as the client
/// sent it after `/api/discord/v10`, starting with `/`, not decoded.
///
/// The operation's group is not checked here: a never-group or disabled
/// operation is still `Found`, so the caller can say which group it is in.
pub fn find<'a>(method: &str, raw_path: &'a str) -> Result<Found<'a>, Refused> {
    let (segments, count) = split(raw_path)?;
    let segments = &segments[..count];
    let method = Method::parse(method);
    let Some(&(_, _, start, end)) = INDEX
        .iter()
        .find(|(first, n, _, _)| usize::from(*n) == count && literal_matches(first, segments[0]))
    else {
        return Err(Refused::NotFound);
    };

    let mut found: Option<Found<'a>> = None;
    let mut scratch = [Value::Int(0); MAX_PARAMS];
    let mut allow = 0u8;
    let mut invalid: Option<&'static str> = None;
    for &(first_op, end_op) in &TEMPLATES[usize::from(start)..usize::from(end)] {
        let same = &OPERATIONS[usize::from(first_op)..usize::from(end_op)];
        match bind(same[0].segments, segments, &mut scratch) {
            Bound::Mismatch => {}
            Bound::Invalid(reason) => {
                invalid.get_or_insert(reason);
            }
            Bound::Values(len) => {
                for op in same {
                    allow |= op.method.bit();
                    if found.is_none() && Some(op.method) == method {
                        found = Some(Found {
                            op,
                            params: scratch,
                            len,
                        });
                    }
                }
            }
        }
    }
    match (found, allow, invalid) {
        (Some(found), _, _) => Ok(found),
        (None, 0, Some(reason)) => Err(Refused::Malformed(reason)),
        (None, 0, None) => Err(Refused::NotFound),
        (None, allow, _) => Err(Refused::MethodNotAllowed {
            allow: Method::ALL
                .into_iter()
                .filter(|m| allow & m.bit() != 0)
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Checks the raw path and splits it into segments, without decoding.
fn split(raw: &str) -> Result<([&str; MAX_SEGMENTS], usize), Refused> {
    if raw.len() > MAX_PATH_BYTES {
        return Err(Refused::Malformed(
            "the Discord path is longer than 512 bytes",
        ));
    }
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(Refused::Malformed("the Discord path must start with `/`"));
    };
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            0x80.. => {
                return Err(Refused::Malformed(
                    "non-ASCII byte in the Discord path (percent-encode it)",
                ));
            }
            0..0x20 | 0x7f => {
                return Err(Refused::Malformed("control character in the Discord path"));
            }
            b'\\' => return Err(Refused::Malformed("backslash in the Discord path")),
            b'?' | b'#' => return Err(Refused::Malformed("`?` or `#` inside the Discord path")),
            b'%' => {
                let decoded = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| Some(hex(h[0])? << 4 | hex(h[1])?))
                    .ok_or(Refused::Malformed(
                        "malformed percent-escape in the Discord path",
                    ))?;
                if matches!(decoded, b'/' | b'.' | b'\\' | 0) {
                    return Err(Refused::Malformed(
                        "encoded `/`, `.`, `\\` or NUL in the Discord path",
                    ));
                }
                i += 3;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let mut segments = [""; MAX_SEGMENTS];
    let mut count = 0;
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Err(Refused::Malformed(
                "empty segment in the Discord path (`//` or a trailing `/`)",
            ));
        }
        if segment == "." || segment == ".." {
            return Err(Refused::Malformed(
                "`.` or `..` segment in the Discord path",
            ));
        }
        if count == MAX_SEGMENTS {
            return Err(Refused::Malformed(
                "the Discord path has more than 12 segments",
            ));
        }
        segments[count] = segment;
        count += 1;
    }
    Ok((segments, count))
}

/// Whether a raw segment is the literal, percent-escapes decoded once:
/// libraries encode `@` (discord.js's `Routes.user('@me')` sends
/// `/users/%40me`), and Discord decodes it. The escapes that could change
/// the path's shape were refused by `split`; the URL Discord gets is
/// rebuilt from the template's literal, not from this segment.
fn literal_matches(literal: &str, raw: &str) -> bool {
    if !raw.contains('%') {
        return literal == raw;
    }
    let (mut raw, mut literal) = (raw.as_bytes(), literal.as_bytes());
    while let Some((&b, rest)) = raw.split_first() {
        let (byte, rest) = match (b, rest) {
            (b'%', [h, l, rest @ ..]) => match (hex(*h), hex(*l)) {
                (Some(h), Some(l)) => (h << 4 | l, rest),
                _ => return false,
            },
            _ => (b, rest),
        };
        match literal.split_first() {
            Some((&expected, tail)) if expected == byte => literal = tail,
            _ => return false,
        }
        raw = rest;
    }
    literal.is_empty()
}

enum Bound {
    /// A literal differs: another template's business.
    Mismatch,
    /// The literals match and a parameter is invalid.
    Invalid(&'static str),
    /// Every parameter is valid; this many were written to `out`.
    Values(u8),
}

/// Binds a path to a template of the same length, writing the parameters'
/// values to `out` (a buffer the caller reuses, so a miss costs no copy).
fn bind<'a>(template: &[Seg], segments: &[&'a str], out: &mut [Value<'a>; MAX_PARAMS]) -> Bound {
    // Literals first: most templates of a run fail there, before any
    // parameter is parsed.
    for (seg, raw) in template.iter().zip(segments) {
        if let Seg::Lit(text) = seg
            && !literal_matches(text, raw)
        {
            return Bound::Mismatch;
        }
    }
    let mut len = 0;
    for (seg, raw) in template.iter().zip(segments) {
        let Seg::Param(param) = seg else { continue };
        match param_value(param.kind, raw) {
            Ok(value) => {
                out[len] = value;
                len += 1;
            }
            Err(reason) => return Bound::Invalid(reason),
        }
    }
    Bound::Values(len as u8)
}

fn param_value(kind: PathKind, raw: &str) -> Result<Value<'_>, &'static str> {
    match kind {
        PathKind::Snowflake => Snowflake::parse(raw)
            .map(Value::Snowflake)
            .ok_or("a Discord ID in the path is not 1 to 20 digits that fit an unsigned 64-bit integer"),
        PathKind::Emoji => decode_emoji(raw).map(Value::Emoji).ok_or(
            "invalid emoji: a percent-encoded Unicode emoji, encoded once, or a custom emoji `name:id`",
        ),
        PathKind::Code => (!raw.is_empty()
            && raw.len() <= 32
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .then_some(Value::Text(raw))
        .ok_or("an invite or template code in the path is not 1 to 32 letters, digits or `-`"),
        PathKind::Opaque => (!raw.is_empty()
            && raw.len() <= 256
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then_some(Value::Text(raw))
        .ok_or("a token in the path has characters other than letters, digits, `-` and `_`"),
        PathKind::Int { min, max } => (!raw.is_empty() && raw.len() <= 10 && raw.bytes().all(|b| b.is_ascii_digit()))
            .then(|| raw.parse::<u32>().ok())
            .flatten()
            .filter(|n| (min..=max).contains(n))
            .map(Value::Int)
            .ok_or("a number in the path is out of range"),
    }
}

/// Percent-decodes an emoji segment exactly once, on the stack (a valid one
/// is at most `emoji::MAX_UNICODE_BYTES` decoded), and parses it. A `%` that
/// survives decoding means the client encoded twice; `Emoji::parse` refuses
/// it like any ASCII punctuation.
fn decode_emoji(raw: &str) -> Option<Emoji> {
    let mut buf = [0u8; crate::discord::emoji::MAX_UNICODE_BYTES];
    let mut len = 0;
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = if bytes[i] == b'%' {
            // `split` has checked every escape.
            let h = bytes.get(i + 1..i + 3)?;
            i += 3;
            hex(h[0])? << 4 | hex(h[1])?
        } else {
            i += 1;
            bytes[i - 1]
        };
        *buf.get_mut(len)? = b;
        len += 1;
    }
    Emoji::parse(std::str::from_utf8(&buf[..len]).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_cover_the_table_one_run_each() {
        let mut next = 0;
        for &(start, end) in &TEMPLATES {
            assert_eq!(usize::from(start), next);
            let run = &OPERATIONS[usize::from(start)..usize::from(end)];
            assert!(run.iter().all(|op| op.template == run[0].template));
            next = usize::from(end);
        }
        assert_eq!(next, OPERATIONS.len());
    }

    #[test]
    fn index_covers_every_template_under_its_shape() {
        let mut next = 0;
        for &(first, count, start, end) in &INDEX {
            assert_eq!(usize::from(start), next);
            for &(op, _) in &TEMPLATES[usize::from(start)..usize::from(end)] {
                let segments = OPERATIONS[usize::from(op)].segments;
                assert_eq!(segments[0], Seg::Lit(first));
                assert_eq!(segments.len(), usize::from(count));
            }
            next = usize::from(end);
        }
        assert_eq!(next, TEMPLATES.len());
    }

    #[test]
    fn group_names_round_trip_and_never_does_not_parse() {
        for g in Group::SERVABLE {
            assert_eq!(Group::parse(g.name()), Some(g));
        }
        assert_eq!(Group::parse("never"), None);
        assert_eq!(Group::parse("READ"), None);
    }
}
