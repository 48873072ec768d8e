//! reads: the read endpoints (guilds, channels, members, messages): query
//! parameters to `Route`s, Discord's pages to one answer.
//!
//! Architecture invariant: Discord's objects reach the client as the exact
//! bytes Discord sent; pages are joined, sorted and de-duplicated by id
//! without re-serialising an object.

use std::time::Instant;

use serde_json::value::RawValue;

use crate::api::auth::DiscordUser;
use crate::api::error::ApiError;
use crate::api::query::Query;
use crate::discord::bots::Bot;
use crate::discord::{Cursor, Discord, GUILDS_PAGE, MEMBERS_PAGE, MESSAGES_PAGE, Route, Snowflake};
use crate::http::server::Response;

/// API.md: members `limit` 1 to 10000, default 1000.
const MEMBERS_LIMIT_MAX: u16 = 10_000;
const MEMBERS_LIMIT_DEFAULT: u16 = 1000;
/// API.md: messages `limit` 1 to 1000, default 100.
const MESSAGES_LIMIT_MAX: u16 = 1000;
const MESSAGES_LIMIT_DEFAULT: u16 = 100;
/// Guild pages we follow before stopping: 100 × 200 = 20,000 guilds, far
/// beyond what one unsharded bot can be in.
const MAX_GUILD_PAGES: usize = 100;
/// One client request's access to Discord: which bot, and until when the
/// request may wait on rate limits (one budget for all its pages).
pub(super) struct Call<'a> {
    pub(super) discord: &'a Discord,
    pub(super) bot: &'a Bot,
    pub(super) deadline: Instant,
}

impl Call<'_> {
    pub(super) fn get(&self, route: Route) -> Result<Vec<u8>, ApiError> {
        Ok(self.discord.get(self.bot, route, self.deadline)?)
    }
}

pub(super) fn guilds(call: &Call) -> Result<Response, ApiError> {
    let mut pages = Vec::new();
    let mut after = None;
    for _ in 0..MAX_GUILD_PAGES {
        let page = call.get(Route::CurrentUserGuilds {
            after,
            limit: GUILDS_PAGE,
        })?;
        let items = parse_page(&page, |item| item_id(item, "id"))?;
        let full = items.len() == usize::from(GUILDS_PAGE);
        after = items.iter().map(|(id, _)| *id).max();
        drop(items);
        pages.push(page);
        if !full {
            break;
        }
    }
    if pages.len() == 1 {
        return Ok(Response::json(200, pages.pop().unwrap_or_default()));
    }
    let mut items = Vec::new();
    for page in &pages {
        items.extend(parse_page(page, |item| item_id(item, "id"))?);
    }
    Ok(Response::json(200, join(items.iter().map(|(_, raw)| *raw))))
}

/// The guild a request is about: `guildId`, or the bot's only guild.
fn guild(call: &Call, query: &Query) -> Result<Snowflake, ApiError> {
    if let Some(guild) = query.snowflake("guildId")? {
        return Ok(guild);
    }
    let page = call.get(Route::CurrentUserGuilds {
        after: None,
        limit: GUILDS_PAGE,
    })?;
    let guilds = parse_page(&page, |item| item_id(item, "id"))?;
    match guilds.as_slice() {
        [] => Err(ApiError::not_found("the bot is in no guild")),
        [(only, _)] => Ok(*only),
        several => Err(ApiError::bad_request(format!(
            "`guildId` is required: the bot is in {}{} guilds",
            several.len(),
            if several.len() == usize::from(GUILDS_PAGE) {
                " or more"
            } else {
                ""
            }
        ))),
    }
}

pub(super) fn channels(call: &Call, query: &Query) -> Result<Response, ApiError> {
    let guild = guild(call, query)?;
    let body = call.get(Route::GuildChannels { guild })?;
    Ok(Response::json(200, body))
}

pub(super) fn members(call: &Call, query: &Query) -> Result<Response, ApiError> {
    let limit = query.integer("limit", 1..=MEMBERS_LIMIT_MAX, MEMBERS_LIMIT_DEFAULT)?;
    let mut after = query.snowflake("after")?;
    let guild = guild(call, query)?;
    let fetch = |after, limit| {
        call.get(Route::GuildMembers {
            guild,
            after,
            limit,
        })
        .map_err(members_hint)
    };
    if limit <= MEMBERS_PAGE {
        return Ok(Response::json(200, fetch(after, limit)?));
    }
    let mut pages = Vec::new();
    let mut left = limit;
    while left > 0 {
        let want = left.min(MEMBERS_PAGE);
        let page = fetch(after, want)?;
        let items = parse_page(&page, member_id)?;
        let got = items.len();
        after = items.iter().map(|(id, _)| *id).max().or(after);
        drop(items);
        pages.push(page);
        if got < usize::from(want) {
            break;
        }
        left -= want;
    }
    let mut items = Vec::new();
    for page in &pages {
        items.extend(parse_page(page, member_id)?);
    }
    // Discord pages ascend by user id; keep that, and never repeat one.
    items.sort_by_key(|(id, _)| *id);
    items.dedup_by_key(|(id, _)| *id);
    Ok(Response::json(200, join(items.iter().map(|(_, raw)| *raw))))
}

pub(super) fn messages(call: &Call, query: &Query) -> Result<Response, ApiError> {
    let channel = query.required_snowflake("channelId")?;
    let limit = query.integer("limit", 1..=MESSAGES_LIMIT_MAX, MESSAGES_LIMIT_DEFAULT)?;
    let cursors = [
        query.snowflake("before")?.map(Cursor::Before),
        query.snowflake("after")?.map(Cursor::After),
        query.snowflake("around")?.map(Cursor::Around),
    ];
    let mut given = cursors.into_iter().flatten();
    let cursor = given.next();
    if given.next().is_some() {
        return Err(ApiError::bad_request(
            "give at most one of `before`, `after` and `around`",
        ));
    }
    if matches!(cursor, Some(Cursor::Around(_))) && limit > MESSAGES_PAGE {
        return Err(ApiError::bad_request(
            "`around` works only with `limit` up to 100",
        ));
    }
    let fetch = |cursor, limit| {
        call.get(Route::ChannelMessages {
            channel,
            cursor,
            limit,
        })
    };
    if limit <= MESSAGES_PAGE {
        return Ok(Response::json(200, fetch(cursor, limit)?));
    }
    // Page away from the cursor: back in time from `before` (or now),
    // forward in time from `after`.
    let forward = matches!(cursor, Some(Cursor::After(_)));
    let mut cursor = cursor;
    let mut pages = Vec::new();
    let mut left = limit;
    while left > 0 {
        let want = left.min(MESSAGES_PAGE);
        let page = fetch(cursor, want)?;
        let items = parse_page(&page, |item| item_id(item, "id"))?;
        let got = items.len();
        let ids = items.iter().map(|(id, _)| *id);
        let next = if forward { ids.max() } else { ids.min() };
        drop(items);
        pages.push(page);
        match next {
            Some(id) if got == usize::from(want) => {
                cursor = Some(if forward {
                    Cursor::After(id)
                } else {
                    Cursor::Before(id)
                });
            }
            _ => break,
        }
        left -= want;
    }
    let mut items = Vec::new();
    for page in &pages {
        items.extend(parse_page(page, |item| item_id(item, "id"))?);
    }
    // Newest first, as Discord orders a page; ids are time-ordered.
    items.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    items.dedup_by_key(|(id, _)| *id);
    Ok(Response::json(200, join(items.iter().map(|(_, raw)| *raw))))
}

/// On the members route a 403 is usually the Server Members intent: say so.
fn members_hint(error: ApiError) -> ApiError {
    match error {
        ApiError::Forbidden {
            message,
            code,
            cached,
        } => ApiError::Forbidden {
            message: format!(
                "{message}. Listing members needs the Server Members privileged intent: enable it \
                 for this bot in the Discord Developer Portal (Bot > Privileged Gateway Intents)"
            ),
            code,
            cached,
        },
        other => other,
    }
}

/// A page of Discord objects, each kept as its exact bytes, with its id.
fn parse_page(
    page: &[u8],
    id_of: impl Fn(&RawValue) -> Option<Snowflake>,
) -> Result<Vec<(Snowflake, &RawValue)>, ApiError> {
    let items: Vec<&RawValue> = serde_json::from_slice(page).map_err(|_| {
        ApiError::BadGateway("Discord answered with something other than a list".into())
    })?;
    items
        .into_iter()
        .map(|raw| {
            id_of(raw).map(|id| (id, raw)).ok_or_else(|| {
                ApiError::BadGateway("Discord sent an object without a valid id".into())
            })
        })
        .collect()
}

fn item_id(item: &RawValue, field: &str) -> Option<Snowflake> {
    let value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(item.get()).ok()?;
    Snowflake::parse(value.get(field)?.as_str()?)
}

fn member_id(item: &RawValue) -> Option<Snowflake> {
    #[derive(serde::Deserialize)]
    struct Member {
        user: DiscordUser,
    }
    let member: Member = serde_json::from_str(item.get()).ok()?;
    Snowflake::parse(&member.user.id)
}

/// `[a,b,c]` from the exact bytes of each object.
fn join<'a>(items: impl Iterator<Item = &'a RawValue>) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(b'[');
    for (n, item) in items.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.get().as_bytes());
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_objects_byte_for_byte() {
        let page = br#"[{"id":"2", "x" : 1},{"id":"1","y":[ ]}]"#;
        let items = parse_page(page, |i| item_id(i, "id")).unwrap();
        assert_eq!(
            join(items.iter().map(|(_, r)| *r)),
            br#"[{"id":"2", "x" : 1},{"id":"1","y":[ ]}]"#
        );
    }
}
