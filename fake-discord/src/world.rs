//! The fake's data model: bots, guilds, channels, members and messages.
//!
//! Why it exists: tests need a Discord whose contents are big enough to page
//! through (thousands of members, hundreds of guilds) yet fully predictable.
//! A world is described by a small JSON file (or the built-in demo world) and
//! expanded once at start-up into sorted id vectors. Objects are rendered from
//! those ids on demand (see `api.rs`), so a million messages cost 8 MB.
//!
//! Invariants:
//! - the world is immutable after [`World::build`]; mutable test state
//!   (revocations, faults, rate limits, and everything write routes change,
//!   in `state.rs`) lives elsewhere;
//! - every id vector is strictly increasing, and generated ids are
//!   deterministic: the same world file always yields the same ids;
//! - generated snowflakes are real snowflakes: their top 42 bits are the
//!   milliseconds since Discord's epoch, which is also the timestamp we
//!   report for the object.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// Milliseconds in a (365-day) year, for spreading generated ids over time.
const YEAR_MS: u64 = 365 * 86_400_000;
/// Generated members' accounts were created over this span, from 2015 on.
const MEMBER_SPAN_MS: u64 = 8 * YEAR_MS;
/// Generated messages are spread over this span after the channel's creation.
const MESSAGE_SPAN_MS: u64 = 2 * YEAR_MS;
/// Extra guilds are created over this span after the bot's creation.
const EXTRA_GUILD_SPAN_MS: u64 = YEAR_MS;
/// The low 22 bits of a snowflake: worker, process and increment.
const SNOWFLAKE_LOW_MASK: u64 = (1 << 22) - 1;

/// What a bot may do in a channel, mirroring Discord's permission outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// VIEW_CHANNEL and READ_MESSAGE_HISTORY: messages are listed.
    Full,
    /// VIEW_CHANNEL without READ_MESSAGE_HISTORY: Discord answers 200 `[]`.
    NoHistory,
    /// No VIEW_CHANNEL: Discord answers 403 Missing Access (50001).
    None,
    /// VIEW_CHANNEL and READ_MESSAGE_HISTORY without SEND_MESSAGES (or any
    /// other write permission): reads work, every write answers 403 Missing
    /// Permissions (50013).
    ReadOnly,
}

impl Access {
    fn parse(s: &str) -> Option<Access> {
        match s {
            "full" => Some(Access::Full),
            "no_history" => Some(Access::NoHistory),
            "none" => Some(Access::None),
            "read_only" => Some(Access::ReadOnly),
            _ => None,
        }
    }

    /// The spelling used in world files.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Full => "full",
            Access::NoHistory => "no_history",
            Access::None => "none",
            Access::ReadOnly => "read_only",
        }
    }
}

/// A bot account and the token that authenticates it.
#[derive(Debug)]
pub struct Bot {
    pub token: String,
    pub id: u64,
    pub username: String,
    /// Whether the GUILD_MEMBERS privileged intent is enabled in the portal.
    pub members_intent: bool,
    /// Guilds the bot is in (listed and generated), ascending.
    pub guilds: Vec<u64>,
    /// The privileged Gateway intents enabled for the bot's application in
    /// the Developer Portal, as intent bits (`GUILD_MEMBERS` 1 << 1,
    /// `GUILD_PRESENCES` 1 << 8, `MESSAGE_CONTENT` 1 << 15); see
    /// `gateway/intents.rs`.
    pub privileged_intents: u64,
    /// `shards` of `GET /gateway/bot`, when the world file sets it.
    pub shards: Option<u32>,
}

impl Bot {
    /// Whether the bot is a member of `guild_id`.
    pub fn in_guild(&self, guild_id: u64) -> bool {
        self.guilds.binary_search(&guild_id).is_ok()
    }
}

/// A guild channel and its message history.
#[derive(Debug)]
pub struct Channel {
    pub id: u64,
    pub name: String,
    /// Discord channel type (0 text, 2 voice, 4 category, 5 announcement, …).
    pub kind: u64,
    pub access: Access,
    /// Position among the guild's channels (its index in the world file).
    pub position: usize,
    /// Message ids, ascending (oldest first).
    pub message_ids: Vec<u64>,
}

/// A guild with its members and channels.
#[derive(Debug)]
pub struct Guild {
    pub id: u64,
    pub name: String,
    /// Members' user ids, ascending.
    pub member_ids: Vec<u64>,
    pub channels: Vec<Channel>,
}

/// The whole fake Discord: immutable once built.
#[derive(Debug)]
pub struct World {
    bots: Vec<Bot>,
    bot_by_token: HashMap<String, usize>,
    guilds: Vec<Guild>,
    guild_by_id: HashMap<u64, usize>,
    channel_by_id: HashMap<u64, (usize, usize)>,
    /// Users whose DMs are closed to bots (`dm_closed_users`): sending to
    /// their DM channel answers 403 50007.
    dm_closed_users: HashSet<u64>,
}

/// A bot as described in a world file, before expansion.
#[derive(Debug, Clone)]
pub struct BotSpec {
    pub token: String,
    pub id: u64,
    pub username: String,
    pub members_intent: bool,
    pub guilds: Vec<u64>,
    pub extra_guilds: usize,
    /// Privileged intent bits enabled in the portal.
    pub privileged_intents: u64,
    pub shards: Option<u32>,
}

/// A guild as described in a world file, before expansion.
#[derive(Debug, Clone)]
pub struct GuildSpec {
    pub id: u64,
    pub name: String,
    pub member_count: usize,
    pub channels: Vec<ChannelSpec>,
}

/// A channel as described in a world file, before expansion.
#[derive(Debug, Clone)]
pub struct ChannelSpec {
    pub id: u64,
    pub name: String,
    pub kind: u64,
    pub message_count: usize,
    pub access: Access,
}

/// SplitMix64: a tiny, well-distributed deterministic generator. Ids must be
/// irregularly spaced (so clients cannot guess them) yet reproducible.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `count` strictly increasing snowflakes whose timestamps start after
/// `start_ms` (Discord-epoch ms) and spread over about `span_ms`. Each step
/// advances the timestamp by at least 1 ms, which keeps the sequence strictly
/// increasing whatever the random low bits are.
fn snowflake_series(seed: u64, start_ms: u64, count: usize, span_ms: u64) -> Vec<u64> {
    let mut rng = SplitMix(seed);
    let max_gap = (2 * span_ms / count.max(1) as u64).max(2);
    let mut ts = start_ms;
    (0..count)
        .map(|_| {
            ts += 1 + rng.next() % (max_gap - 1);
            (ts << 22) | (rng.next() & SNOWFLAKE_LOW_MASK)
        })
        .collect()
}

/// Generated members for a guild: user ids spread over Discord's history.
fn member_ids(guild_id: u64, count: usize) -> Vec<u64> {
    snowflake_series(guild_id ^ 0x6d65_6d62, 86_400_000, count, MEMBER_SPAN_MS)
}

/// Generated message ids for a channel: after the channel's creation.
fn message_ids(channel_id: u64, count: usize) -> Vec<u64> {
    snowflake_series(
        channel_id ^ 0x6d73_6773,
        channel_id >> 22,
        count,
        MESSAGE_SPAN_MS,
    )
}

impl World {
    /// Expands specs into a world, checking references and uniqueness.
    pub fn build(bot_specs: Vec<BotSpec>, guild_specs: Vec<GuildSpec>) -> Result<World, String> {
        let mut guilds = Vec::new();
        let mut guild_by_id = HashMap::new();
        let mut channel_by_id = HashMap::new();
        for spec in guild_specs {
            if guild_by_id.insert(spec.id, guilds.len()).is_some() {
                return Err(format!("duplicate guild id {}", spec.id));
            }
            let mut channels = Vec::new();
            for (position, c) in spec.channels.into_iter().enumerate() {
                if channel_by_id
                    .insert(c.id, (guilds.len(), channels.len()))
                    .is_some()
                {
                    return Err(format!("duplicate channel id {}", c.id));
                }
                channels.push(Channel {
                    id: c.id,
                    name: c.name,
                    kind: c.kind,
                    access: c.access,
                    position,
                    message_ids: message_ids(c.id, c.message_count),
                });
            }
            guilds.push(Guild {
                id: spec.id,
                name: spec.name,
                member_ids: member_ids(spec.id, spec.member_count),
                channels,
            });
        }

        let mut bots = Vec::new();
        let mut bot_by_token = HashMap::new();
        for spec in bot_specs {
            if bot_by_token
                .insert(spec.token.clone(), bots.len())
                .is_some()
            {
                return Err(format!("duplicate bot token for bot {}", spec.id));
            }
            let mut member_of: HashSet<u64> = HashSet::new();
            for g in &spec.guilds {
                if !guild_by_id.contains_key(g) {
                    return Err(format!("bot {} lists unknown guild {g}", spec.id));
                }
                member_of.insert(*g);
            }
            let extra = snowflake_series(
                spec.id ^ 0x6775_696c,
                (spec.id >> 22) + 1,
                spec.extra_guilds,
                EXTRA_GUILD_SPAN_MS,
            );
            for (k, id) in extra.into_iter().enumerate() {
                if guild_by_id.insert(id, guilds.len()).is_some() {
                    return Err(format!(
                        "generated guild id {id} for bot {} collides; change the bot id",
                        spec.id
                    ));
                }
                guilds.push(Guild {
                    id,
                    name: format!("{} extra guild {}", spec.username, k + 1),
                    member_ids: member_ids(id, 1),
                    channels: Vec::new(),
                });
                member_of.insert(id);
            }
            let mut guild_list: Vec<u64> = member_of.into_iter().collect();
            guild_list.sort_unstable();
            bots.push(Bot {
                token: spec.token,
                id: spec.id,
                username: spec.username,
                members_intent: spec.members_intent,
                guilds: guild_list,
                privileged_intents: spec.privileged_intents,
                shards: spec.shards,
            });
        }
        Ok(World {
            bots,
            bot_by_token,
            guilds,
            guild_by_id,
            channel_by_id,
            dm_closed_users: HashSet::new(),
        })
    }

    /// The built-in world used without `--world` (documented in README.md).
    pub fn demo() -> World {
        let guild = GuildSpec {
            id: 200_000_000_000_000_001,
            name: "Demo Guild".into(),
            member_count: 25,
            channels: vec![
                ChannelSpec {
                    id: 200_000_000_000_000_002,
                    name: "general".into(),
                    kind: 0,
                    message_count: 120,
                    access: Access::Full,
                },
                ChannelSpec {
                    id: 200_000_000_000_000_003,
                    name: "random".into(),
                    kind: 0,
                    message_count: 7,
                    access: Access::Full,
                },
                ChannelSpec {
                    id: 200_000_000_000_000_004,
                    name: "Lounge".into(),
                    kind: 2,
                    message_count: 0,
                    access: Access::Full,
                },
            ],
        };
        let bot = BotSpec {
            token: "demo-bot-token".into(),
            id: 100_000_000_000_000_001,
            username: "DemoBot".into(),
            members_intent: true,
            guilds: vec![guild.id],
            extra_guilds: 0,
            privileged_intents: crate::gateway::intents::GUILD_MEMBERS
                | crate::gateway::intents::MESSAGE_CONTENT,
            shards: None,
        };
        World::build(vec![bot], vec![guild]).expect("the demo world is valid")
    }

    /// Reads and builds a world file.
    pub fn load(path: &str) -> Result<World, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
        World::from_json(&text).map_err(|e| format!("{path}: {e}"))
    }

    /// Parses the world-file format (see README.md) and builds the world.
    pub fn from_json(text: &str) -> Result<World, String> {
        let root: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let mut bots = Vec::new();
        for (i, b) in array(&root, "bots", "world")?.iter().enumerate() {
            let at = format!("bots[{i}]");
            let (members_intent, privileged_intents) = privileged(b, &at)?;
            let shards = match count(b, "shards", &at)? {
                None => None,
                Some(n) if (1..=u32::MAX as usize).contains(&n) => Some(n as u32),
                Some(_) => return Err(format!("{at}.shards must be at least 1")),
            };
            bots.push(BotSpec {
                token: string(b, "token", &at)?.ok_or(format!("{at}.token is required"))?,
                id: snowflake(b, "id", &at)?.ok_or(format!("{at}.id is required"))?,
                username: string(b, "username", &at)?.unwrap_or_else(|| format!("Bot{i}")),
                members_intent,
                privileged_intents,
                shards,
                guilds: array(b, "guilds", &at)?
                    .iter()
                    .map(|g| {
                        parse_snowflake(g).ok_or(format!("{at}.guilds: {g} is not a snowflake"))
                    })
                    .collect::<Result<_, _>>()?,
                extra_guilds: count(b, "extra_guilds", &at)?.unwrap_or(0),
            });
        }
        let mut guilds = Vec::new();
        for (i, g) in array(&root, "guilds", "world")?.iter().enumerate() {
            let at = format!("guilds[{i}]");
            let mut channels = Vec::new();
            for (j, c) in array(g, "channels", &at)?.iter().enumerate() {
                let at = format!("{at}.channels[{j}]");
                let access = match string(c, "access", &at)? {
                    None => Access::Full,
                    Some(s) => Access::parse(&s).ok_or(format!(
                        "{at}.access must be \"full\", \"no_history\", \"read_only\" or \"none\""
                    ))?,
                };
                channels.push(ChannelSpec {
                    id: snowflake(c, "id", &at)?.ok_or(format!("{at}.id is required"))?,
                    name: string(c, "name", &at)?.unwrap_or_else(|| format!("channel-{j}")),
                    kind: count(c, "type", &at)?.unwrap_or(0) as u64,
                    message_count: count(c, "message_count", &at)?.unwrap_or(0),
                    access,
                });
            }
            guilds.push(GuildSpec {
                id: snowflake(g, "id", &at)?.ok_or(format!("{at}.id is required"))?,
                name: string(g, "name", &at)?.unwrap_or_else(|| format!("Guild {i}")),
                member_count: count(g, "member_count", &at)?.unwrap_or(1),
                channels,
            });
        }
        let mut world = World::build(bots, guilds)?;
        for (i, u) in array(&root, "dm_closed_users", "world")?.iter().enumerate() {
            let id = parse_snowflake(u)
                .ok_or(format!("dm_closed_users[{i}]: {u} is not a snowflake"))?;
            world.dm_closed_users.insert(id);
        }
        Ok(world)
    }

    /// The bot a token authenticates, if any (revocation is checked elsewhere).
    pub fn bot_by_token(&self, token: &str) -> Option<&Bot> {
        self.bot_by_token.get(token).map(|&i| &self.bots[i])
    }

    pub fn bots(&self) -> &[Bot] {
        &self.bots
    }

    pub fn guilds(&self) -> &[Guild] {
        &self.guilds
    }

    pub fn guild(&self, id: u64) -> Option<&Guild> {
        self.guild_by_id.get(&id).map(|&i| &self.guilds[i])
    }

    /// Whether `user_id` has closed DMs to bots (`dm_closed_users`).
    pub fn dm_closed(&self, user_id: u64) -> bool {
        self.dm_closed_users.contains(&user_id)
    }

    /// `dm_closed_users`, ascending.
    pub fn dm_closed_users(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.dm_closed_users.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The first guild (in world order) that has `user_id` as a generated
    /// member, and the member's index there; names users in DMs and mentions.
    pub fn member(&self, user_id: u64) -> Option<(&Guild, usize)> {
        self.guilds.iter().find_map(|g| {
            g.member_ids
                .binary_search(&user_id)
                .ok()
                .map(|index| (g, index))
        })
    }

    /// A channel and the guild it belongs to.
    pub fn channel(&self, id: u64) -> Option<(&Guild, &Channel)> {
        self.channel_by_id.get(&id).map(|&(g, c)| {
            let guild = &self.guilds[g];
            (guild, &guild.channels[c])
        })
    }
}

/// `members_intent` and `privileged_intents` of a bot, which describe the
/// same portal switch for GUILD_MEMBERS and so must agree. Either one given
/// decides it; neither means both privileged intents a bot backend needs
/// (GUILD_MEMBERS, MESSAGE_CONTENT) are on, as in the demo world;
/// GUILD_PRESENCES is on only when listed.
fn privileged(b: &Value, at: &str) -> Result<(bool, u64), String> {
    use crate::gateway::intents::{GUILD_MEMBERS, MESSAGE_CONTENT, privileged_bit};
    let members = boolean(b, "members_intent", at)?;
    let listed = match b.get("privileged_intents") {
        None | Some(Value::Null) => None,
        Some(_) => {
            let mut bits = 0;
            for name in array(b, "privileged_intents", at)? {
                let bit = name.as_str().and_then(privileged_bit).ok_or(format!(
                    "{at}.privileged_intents: {name} is not one of \"GUILD_MEMBERS\", \
                     \"GUILD_PRESENCES\", \"MESSAGE_CONTENT\""
                ))?;
                bits |= bit;
            }
            Some(bits)
        }
    };
    match (members, listed) {
        (None, None) => Ok((true, GUILD_MEMBERS | MESSAGE_CONTENT)),
        (Some(m), None) => Ok((m, if m { GUILD_MEMBERS } else { 0 } | MESSAGE_CONTENT)),
        (None, Some(bits)) => Ok((bits & GUILD_MEMBERS != 0, bits)),
        (Some(m), Some(bits)) if m == (bits & GUILD_MEMBERS != 0) => Ok((m, bits)),
        (Some(_), Some(_)) => Err(format!(
            "{at}.members_intent disagrees with GUILD_MEMBERS in {at}.privileged_intents"
        )),
    }
}

/// Parses a snowflake given as a decimal string (Discord's form) or a number.
fn parse_snowflake(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn array<'a>(v: &'a Value, key: &str, at: &str) -> Result<&'a [Value], String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(format!("{at}.{key} must be an array")),
    }
}

fn string(v: &Value, key: &str, at: &str) -> Result<Option<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{at}.{key} must be a string")),
    }
}

fn snowflake(v: &Value, key: &str, at: &str) -> Result<Option<u64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => parse_snowflake(x)
            .map(Some)
            .ok_or(format!("{at}.{key} must be a snowflake string")),
    }
}

fn boolean(v: &Value, key: &str, at: &str) -> Result<Option<bool>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("{at}.{key} must be a boolean")),
    }
}

fn count(v: &Value, key: &str, at: &str) -> Result<Option<usize>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or(format!("{at}.{key} must be a non-negative integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_is_strictly_increasing_and_deterministic() {
        for count in [0, 1, 25, 5000] {
            let a = snowflake_series(7, 1000, count, YEAR_MS);
            assert_eq!(a, snowflake_series(7, 1000, count, YEAR_MS));
            assert_eq!(a.len(), count);
            assert!(a.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn demo_world_matches_the_readme() {
        let w = World::demo();
        let bot = w.bot_by_token("demo-bot-token").unwrap();
        assert_eq!(bot.id, 100_000_000_000_000_001);
        let (guild, general) = w.channel(200_000_000_000_000_002).unwrap();
        assert_eq!(guild.member_ids.len(), 25);
        assert_eq!(general.message_ids.len(), 120);
        assert!(bot.in_guild(guild.id));
    }

    #[test]
    fn world_file_defaults_and_extra_guilds() {
        let w = World::from_json(
            r#"{"bots":[{"token":"t","id":"81384788765712384","guilds":["1"],"extra_guilds":3}],
                "guilds":[{"id":"1","channels":[{"id":"2","access":"none"}]}]}"#,
        )
        .unwrap();
        let bot = w.bot_by_token("t").unwrap();
        assert_eq!(bot.guilds.len(), 4);
        assert!(bot.members_intent);
        assert_eq!(w.channel(2).unwrap().1.access, Access::None);
        assert!(!w.dm_closed(7));
        assert_eq!(w.guild(1).unwrap().member_ids.len(), 1);
    }

    #[test]
    fn read_only_access_and_dm_closed_users() {
        let w = World::from_json(
            r#"{"dm_closed_users":["42", 43],
                "guilds":[{"id":"1","channels":[{"id":"2","access":"read_only"}]}]}"#,
        )
        .unwrap();
        assert_eq!(w.channel(2).unwrap().1.access, Access::ReadOnly);
        assert!(w.dm_closed(42) && w.dm_closed(43) && !w.dm_closed(44));
        assert_eq!(w.dm_closed_users(), vec![42, 43]);
    }

    #[test]
    fn privileged_intents_and_members_intent_agree() {
        use crate::gateway::intents::{GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT};
        let bot = |extra: &str| {
            World::from_json(&format!(r#"{{"bots":[{{"token":"t","id":"5"{extra}}}]}}"#)).map(|w| {
                let b = w.bot_by_token("t").unwrap();
                (b.members_intent, b.privileged_intents, b.shards)
            })
        };
        assert_eq!(bot(""), Ok((true, GUILD_MEMBERS | MESSAGE_CONTENT, None)));
        assert_eq!(
            bot(r#","members_intent":false"#),
            Ok((false, MESSAGE_CONTENT, None))
        );
        assert_eq!(
            bot(r#","privileged_intents":["GUILD_PRESENCES"],"shards":3"#),
            Ok((false, GUILD_PRESENCES, Some(3)))
        );
        assert!(bot(r#","members_intent":true,"privileged_intents":[]"#).is_err());
        assert!(bot(r#","privileged_intents":["GUILDS"]"#).is_err());
        assert!(bot(r#","shards":0"#).is_err());
    }

    #[test]
    fn rejects_unknown_guild_reference() {
        let err = World::from_json(r#"{"bots":[{"token":"t","id":"5","guilds":["9"]}]}"#);
        assert!(err.unwrap_err().contains("unknown guild 9"));
    }
}
