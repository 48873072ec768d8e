//! route: every Discord call this service makes, as a value: the reads
//! (`Route`) and the writes of API.md's "Writing" (`WriteRoute`). Only these
//! know Discord's paths, and they are built from `Snowflake`s, integers and
//! an emoji already encoded by `emoji`, so client text never reaches a URL.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::discord::ratelimit::RouteKey;
use crate::discord::snowflake::Snowflake;
use crate::discord::write::Resend;

/// Discord's epoch, in Unix milliseconds: a snowflake's top 42 bits count
/// from it (`reference.mdx`, "Snowflakes").
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// Discord's page sizes.
pub const GUILDS_PAGE: u16 = 200;
pub const MEMBERS_PAGE: u16 = 1000;
pub const MESSAGES_PAGE: u16 = 100;

/// A message-list cursor; Discord takes at most one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    Before(Snowflake),
    After(Snowflake),
    Around(Snowflake),
}

/// Every Discord call this service makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    CurrentUser,
    CurrentUserGuilds {
        after: Option<Snowflake>,
        limit: u16,
    },
    GuildMembers {
        guild: Snowflake,
        after: Option<Snowflake>,
        limit: u16,
    },
    GuildChannels {
        guild: Snowflake,
    },
    ChannelMessages {
        channel: Snowflake,
        cursor: Option<Cursor>,
        limit: u16,
    },
    /// `GET /gateway/bot`: the Gateway URL, the recommended shard count and
    /// the bot's session-start budget (`discord::gateway`).
    GatewayBot,
    /// `GET /applications/@me`: the bot's application, whose `flags` say
    /// which privileged intents are enabled (`--gateway-intents auto`).
    CurrentApplication,
}

impl Route {
    /// The path and query below the API base. Every value interpolated here
    /// is a `Snowflake` or an integer.
    pub(super) fn path(&self) -> String {
        match *self {
            Route::CurrentUser => "/users/@me".into(),
            Route::CurrentUserGuilds { after, limit } => match after {
                Some(after) => format!("/users/@me/guilds?limit={limit}&after={after}"),
                None => format!("/users/@me/guilds?limit={limit}"),
            },
            Route::GuildMembers {
                guild,
                after,
                limit,
            } => match after {
                Some(after) => format!("/guilds/{guild}/members?limit={limit}&after={after}"),
                None => format!("/guilds/{guild}/members?limit={limit}"),
            },
            Route::GuildChannels { guild } => format!("/guilds/{guild}/channels"),
            Route::ChannelMessages {
                channel,
                cursor,
                limit,
            } => {
                let base = format!("/channels/{channel}/messages?limit={limit}");
                match cursor {
                    None => base,
                    Some(Cursor::Before(id)) => format!("{base}&before={id}"),
                    Some(Cursor::After(id)) => format!("{base}&after={id}"),
                    Some(Cursor::Around(id)) => format!("{base}&around={id}"),
                }
            }
            Route::GatewayBot => "/gateway/bot".into(),
            Route::CurrentApplication => "/applications/@me".into(),
        }
    }

    /// The rate-limit identity of this call: template plus top-level id.
    pub fn key(&self) -> RouteKey {
        let (template, top_level) = match *self {
            Route::CurrentUser => ("GET /users/@me", None),
            Route::CurrentUserGuilds { .. } => ("GET /users/@me/guilds", None),
            Route::GuildMembers { guild, .. } => ("GET /guilds/:guild_id/members", Some(guild)),
            Route::GuildChannels { guild } => ("GET /guilds/:guild_id/channels", Some(guild)),
            Route::ChannelMessages { channel, .. } => {
                ("GET /channels/:channel_id/messages", Some(channel))
            }
            Route::GatewayBot => ("GET /gateway/bot", None),
            Route::CurrentApplication => ("GET /applications/@me", None),
        };
        RouteKey {
            template,
            top_level: top_level.map(Snowflake::get),
        }
    }
}

/// Every write this service makes on a route of API.md's "Writing".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteRoute<'a> {
    CreateMessage {
        channel: Snowflake,
    },
    EditMessage {
        channel: Snowflake,
        message: Snowflake,
    },
    DeleteMessage {
        channel: Snowflake,
        message: Snowflake,
    },
    BulkDelete {
        channel: Snowflake,
    },
    /// Add (`add`) or remove a reaction: the bot's own (`user: None`) or a
    /// user's. `emoji` is the path segment `emoji::Emoji::encoded` made.
    Reaction {
        channel: Snowflake,
        message: Snowflake,
        emoji: &'a str,
        user: Option<Snowflake>,
        add: bool,
    },
    /// Open (or get) the DM channel with a user.
    OpenDm,
    Typing {
        channel: Snowflake,
    },
}

impl WriteRoute<'_> {
    pub fn method(&self) -> &'static str {
        match self {
            WriteRoute::CreateMessage { .. }
            | WriteRoute::BulkDelete { .. }
            | WriteRoute::OpenDm
            | WriteRoute::Typing { .. } => "POST",
            WriteRoute::EditMessage { .. } => "PATCH",
            WriteRoute::DeleteMessage { .. } => "DELETE",
            WriteRoute::Reaction { add: true, .. } => "PUT",
            WriteRoute::Reaction { add: false, .. } => "DELETE",
        }
    }

    /// The path below the API base, from validated parts only.
    pub fn path(&self) -> String {
        match *self {
            WriteRoute::CreateMessage { channel } => format!("/channels/{channel}/messages"),
            WriteRoute::EditMessage { channel, message }
            | WriteRoute::DeleteMessage { channel, message } => {
                format!("/channels/{channel}/messages/{message}")
            }
            WriteRoute::BulkDelete { channel } => {
                format!("/channels/{channel}/messages/bulk-delete")
            }
            WriteRoute::Reaction {
                channel,
                message,
                emoji,
                user,
                ..
            } => match user {
                None => format!("/channels/{channel}/messages/{message}/reactions/{emoji}/@me"),
                Some(user) => {
                    format!("/channels/{channel}/messages/{message}/reactions/{emoji}/{user}")
                }
            },
            WriteRoute::OpenDm => "/users/@me/channels".into(),
            WriteRoute::Typing { channel } => format!("/channels/{channel}/typing"),
        }
    }

    /// The rate-limit identity. Two are Discord's own quirks (WRITES-NOTES
    /// §2): adding and removing reactions share one bucket per channel,
    /// and a message delete's bucket depends on the message's age.
    pub fn key(&self) -> RouteKey {
        let (template, top_level) = match *self {
            WriteRoute::CreateMessage { channel } => {
                ("POST /channels/:channel_id/messages", Some(channel))
            }
            WriteRoute::EditMessage { channel, .. } => (
                "PATCH /channels/:channel_id/messages/:message_id",
                Some(channel),
            ),
            WriteRoute::DeleteMessage { channel, message } => {
                let template = match age(message, SystemTime::now()) {
                    age if age < Duration::from_secs(10) => {
                        "DELETE /channels/:channel_id/messages/:message_id (under 10 s old)"
                    }
                    age if age < Duration::from_secs(14 * 24 * 60 * 60) => {
                        "DELETE /channels/:channel_id/messages/:message_id (under 14 days old)"
                    }
                    _ => "DELETE /channels/:channel_id/messages/:message_id (older)",
                };
                (template, Some(channel))
            }
            WriteRoute::BulkDelete { channel } => (
                "POST /channels/:channel_id/messages/bulk-delete",
                Some(channel),
            ),
            WriteRoute::Reaction { channel, .. } => (
                "PUT|DELETE /channels/:channel_id/messages/:message_id/reactions",
                Some(channel),
            ),
            WriteRoute::OpenDm => ("POST /users/@me/channels", None),
            WriteRoute::Typing { channel } => ("POST /channels/:channel_id/typing", Some(channel)),
        };
        RouteKey {
            template,
            top_level: top_level.map(Snowflake::get),
        }
    }

    /// What may be sent again after a lost answer (API.md, "Never
    /// twice"): PUTs and DELETEs, and a message send (it carries a nonce
    /// with `enforce_nonce`).
    pub fn resend(&self) -> Resend {
        match self {
            WriteRoute::CreateMessage { .. }
            | WriteRoute::DeleteMessage { .. }
            | WriteRoute::Reaction { .. } => Resend::Idempotent,
            _ => Resend::NotSentOnly,
        }
    }
}

/// How old a snowflake is at `now` (zero for one from the future).
pub fn age(id: Snowflake, now: SystemTime) -> Duration {
    let created_ms = (id.get() >> 22) + DISCORD_EPOCH_MS;
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Duration::from_millis(now_ms.saturating_sub(created_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> Snowflake {
        Snowflake::parse(&n.to_string()).unwrap()
    }

    #[test]
    fn routes_build_discord_paths_from_validated_values() {
        assert_eq!(
            Route::ChannelMessages {
                channel: id(5),
                cursor: Some(Cursor::Before(id(9))),
                limit: 100
            }
            .path(),
            "/channels/5/messages?limit=100&before=9"
        );
        assert_eq!(
            Route::GuildMembers {
                guild: id(1),
                after: None,
                limit: 1000
            }
            .path(),
            "/guilds/1/members?limit=1000"
        );
        assert_eq!(
            Route::CurrentUserGuilds {
                after: Some(id(3)),
                limit: 200
            }
            .path(),
            "/users/@me/guilds?limit=200&after=3"
        );
        assert_eq!(Route::GatewayBot.path(), "/gateway/bot");
        assert_eq!(Route::CurrentApplication.path(), "/applications/@me");
    }

    fn snowflake_at(unix_ms: u64) -> Snowflake {
        id((unix_ms - DISCORD_EPOCH_MS) << 22)
    }

    #[test]
    fn message_deletes_are_keyed_by_the_messages_age() {
        let now = SystemTime::now();
        let now_ms = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let key = |ms_ago: u64| {
            WriteRoute::DeleteMessage {
                channel: id(1),
                message: snowflake_at(now_ms - ms_ago),
            }
            .key()
            .template
        };
        let day = 24 * 60 * 60 * 1000;
        assert!(key(1_000).contains("under 10 s"));
        assert!(key(60_000).contains("under 14 days"));
        assert!(key(15 * day).contains("older"));
    }

    #[test]
    fn adding_and_removing_a_reaction_share_one_bucket_per_channel() {
        let react = |add, message| WriteRoute::Reaction {
            channel: id(1),
            message: id(message),
            emoji: "%F0%9F%91%8D",
            user: None,
            add,
        };
        assert_eq!(react(true, 5).key(), react(false, 6).key());
        assert_eq!(react(true, 5).method(), "PUT");
        assert_eq!(
            react(false, 5).path(),
            "/channels/1/messages/5/reactions/%F0%9F%91%8D/@me"
        );
    }

    #[test]
    fn top_level_id_is_part_of_the_rate_limit_key() {
        let a = Route::GuildChannels { guild: id(1) }.key();
        let b = Route::GuildChannels { guild: id(2) }.key();
        assert_eq!(a.template, b.template);
        assert_ne!(a, b);
    }
}
