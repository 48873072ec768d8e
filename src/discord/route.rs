//! route: every Discord call this service makes, as a value. Only `Route`
//! knows Discord's paths, and it is built from `Snowflake`s and integers
//! only, so client text never reaches a URL.

use crate::discord::ratelimit::RouteKey;
use crate::discord::snowflake::Snowflake;

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
        };
        RouteKey {
            template,
            top_level: top_level.map(Snowflake::get),
        }
    }
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
    }

    #[test]
    fn top_level_id_is_part_of_the_rate_limit_key() {
        let a = Route::GuildChannels { guild: id(1) }.key();
        let b = Route::GuildChannels { guild: id(2) }.key();
        assert_eq!(a.template, b.template);
        assert_ne!(a, b);
    }
}
