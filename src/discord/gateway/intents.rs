//! intents: Gateway intent names ↔ bits, and what `auto` means.
//!
//! Why it exists: `--gateway-intents` takes names (people read them, Discord
//! takes bits), `auto` is decided from the application's flags, and a 4014
//! close must name the privileged intent a person has to switch on.
//! Source: `events/gateway.mdx` "List of Intents" (GW L311-427) and
//! `resources/application.mdx` "Application Flags" (APP L160-167).

/// Every intent Discord documents, with its bit.
pub const ALL: &[(&str, u32)] = &[
    ("GUILDS", 0),
    ("GUILD_MEMBERS", 1),
    ("GUILD_MODERATION", 2),
    ("GUILD_EXPRESSIONS", 3),
    ("GUILD_INTEGRATIONS", 4),
    ("GUILD_WEBHOOKS", 5),
    ("GUILD_INVITES", 6),
    ("GUILD_VOICE_STATES", 7),
    ("GUILD_PRESENCES", 8),
    ("GUILD_MESSAGES", 9),
    ("GUILD_MESSAGE_REACTIONS", 10),
    ("GUILD_MESSAGE_TYPING", 11),
    ("DIRECT_MESSAGES", 12),
    ("DIRECT_MESSAGE_REACTIONS", 13),
    ("DIRECT_MESSAGE_TYPING", 14),
    ("MESSAGE_CONTENT", 15),
    ("GUILD_SCHEDULED_EVENTS", 16),
    ("AUTO_MODERATION_CONFIGURATION", 20),
    ("AUTO_MODERATION_EXECUTION", 21),
    ("GUILD_MESSAGE_POLLS", 24),
    ("DIRECT_MESSAGE_POLLS", 25),
];

/// Intents a bot may use only once they are switched on for its
/// application in the Developer Portal (GW L443-467).
pub const PRIVILEGED: u64 = 1 << 1 | 1 << 8 | 1 << 15;
const GUILD_MEMBERS: u64 = 1 << 1;
const MESSAGE_CONTENT: u64 = 1 << 15;

/// Application flags that say a privileged intent is enabled: the full bit
/// (verified apps, 100+ guilds) or its `_LIMITED` twin.
const APP_GUILD_MEMBERS: u64 = 1 << 14 | 1 << 15;
const APP_MESSAGE_CONTENT: u64 = 1 << 18 | 1 << 19;

/// `--gateway-intents`: `auto`, or the names to identify with, exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intents {
    /// Every non-privileged intent, plus GUILD_MEMBERS and MESSAGE_CONTENT
    /// when the application has them enabled; GUILD_PRESENCES never (it is
    /// the noisiest, and a person should ask for it by name).
    Auto,
    Names(Vec<String>),
}

impl Intents {
    /// Parses the flag's value: `auto`, or names separated by commas (case
    /// and spaces do not matter). An unknown name is an error naming it.
    pub fn parse(text: &str) -> Result<Intents, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Intents::Auto);
        }
        let mut names = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let upper = name.to_ascii_uppercase();
            if bit(&upper).is_none() {
                return Err(format!(
                    "unknown Gateway intent `{name}`; known: auto, or any of {}",
                    ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ));
            }
            if !names.contains(&upper) {
                names.push(upper);
            }
        }
        if names.is_empty() {
            return Err("no Gateway intent named: give `auto` or a list of names".into());
        }
        Ok(Intents::Names(names))
    }

    /// The bits to identify with. `app_flags` is the application's
    /// `flags`; `Auto` needs it (without it, no privileged intent).
    pub fn bits(&self, app_flags: Option<u64>) -> u64 {
        match self {
            Intents::Names(names) => names.iter().filter_map(|n| bit(n)).sum(),
            Intents::Auto => {
                let flags = app_flags.unwrap_or(0);
                let mut bits = all_bits() & !PRIVILEGED;
                if flags & APP_GUILD_MEMBERS != 0 {
                    bits |= GUILD_MEMBERS;
                }
                if flags & APP_MESSAGE_CONTENT != 0 {
                    bits |= MESSAGE_CONTENT;
                }
                bits
            }
        }
    }
}

fn bit(name: &str) -> Option<u64> {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, shift)| 1u64 << shift)
}

fn all_bits() -> u64 {
    ALL.iter().map(|(_, shift)| 1u64 << shift).sum()
}

/// The names of the bits set, in Discord's order.
pub fn names(bits: u64) -> Vec<&'static str> {
    ALL.iter()
        .filter(|(_, shift)| bits & (1 << shift) != 0)
        .map(|(n, _)| *n)
        .collect()
}

/// The privileged intents among `bits` that the application's flags do not
/// show enabled; all privileged ones asked for when the flags are unknown
/// (or show them all enabled: Discord knows better than our copy).
pub fn refused_privileged(bits: u64, app_flags: Option<u64>) -> Vec<&'static str> {
    let asked = bits & PRIVILEGED;
    let enabled = app_flags.map_or(0, |flags| {
        let mut on = 0;
        if flags & APP_GUILD_MEMBERS != 0 {
            on |= GUILD_MEMBERS;
        }
        if flags & APP_MESSAGE_CONTENT != 0 {
            on |= MESSAGE_CONTENT;
        }
        if flags & (1 << 12 | 1 << 13) != 0 {
            on |= 1 << 8;
        }
        on
    });
    match asked & !enabled {
        0 => names(asked),
        missing => names(missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_to_bits() {
        let i = Intents::parse("guilds, GUILD_MESSAGES,guild_messages").unwrap();
        assert_eq!(
            i,
            Intents::Names(vec!["GUILDS".into(), "GUILD_MESSAGES".into()])
        );
        assert_eq!(i.bits(None), 1 | 1 << 9);
        assert_eq!(names(1 | 1 << 9), ["GUILDS", "GUILD_MESSAGES"]);
    }

    #[test]
    fn an_unknown_name_is_named_in_the_error() {
        let err = Intents::parse("GUILDS,GUILD_MESAGES").unwrap_err();
        assert!(err.contains("`GUILD_MESAGES`"), "{err}");
        assert!(Intents::parse(" , ").is_err());
        assert_eq!(Intents::parse("AUTO").unwrap(), Intents::Auto);
    }

    #[test]
    fn auto_adds_only_the_privileged_intents_the_application_enabled() {
        let none = Intents::Auto.bits(Some(0));
        assert_eq!(none & PRIVILEGED, 0);
        assert_ne!(none & 1 << 9, 0);
        // MESSAGE_CONTENT_LIMITED and GUILD_MEMBERS (full), presences enabled too.
        let some = Intents::Auto.bits(Some(1 << 19 | 1 << 14 | 1 << 12));
        assert_eq!(some & PRIVILEGED, GUILD_MEMBERS | MESSAGE_CONTENT);
    }

    #[test]
    fn a_4014_names_the_intent_not_enabled() {
        let asked = Intents::parse("GUILDS,MESSAGE_CONTENT,GUILD_MEMBERS")
            .unwrap()
            .bits(None);
        assert_eq!(
            refused_privileged(asked, Some(1 << 15)),
            ["MESSAGE_CONTENT"]
        );
        assert_eq!(
            refused_privileged(asked, None),
            ["GUILD_MEMBERS", "MESSAGE_CONTENT"]
        );
    }
}
