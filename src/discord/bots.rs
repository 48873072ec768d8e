//! bots: one entry per bot token, shared by every session of that bot.
//!
//! A `Bot` holds the token, the identity Discord reported for it, and its
//! rate-limit state, so all sessions of one bot share one set of limits.
//!
//! Architecture invariants:
//! - in clear, the token leaves this module only as the `Authorization`
//!   header value `client` sends; with `--redis-url`, `store::redis` takes
//!   the same bytes to seal them, and never writes them in clear. `Token`
//!   has no `Display`, no `Serialize`, and its `Debug` prints
//!   `Token(<redacted>)`, so no format string can leak it;
//! - the registry holds `Weak` references: a bot lives exactly as long as a
//!   session (or an in-flight login) holds it, and `sweep` drops dead entries.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::discord::Error;
use crate::discord::Snowflake;
use crate::discord::ratelimit::{BotLimiter, InFlightGate};
use crate::discord::refusals::Refusals;
use crate::discord::singleflight::SingleFlight;

/// How long a token Discord rejected is refused without asking Discord:
/// rejected tokens do not come back, and each retry would count toward the
/// host's invalid-request limit.
const REJECTED_TTL: Duration = Duration::from_secs(3600);
/// Rejected-token fingerprints kept at most.
const MAX_REJECTED: usize = 100_000;

/// A bot token. Deliberately opaque.
pub struct Token(String);

impl Token {
    /// Validates and normalises what a client sent at login: a leading `Bot `
    /// is stripped; empty, whitespace, control and non-ASCII characters are
    /// refused. Discord tokens are visible ASCII, and anything else cannot
    /// go into an HTTP header (schemathesis found `"é"` answered 502).
    pub fn parse(raw: &str) -> Result<Token, &'static str> {
        let token = raw.strip_prefix("Bot ").unwrap_or(raw);
        if token.is_empty() {
            return Err("`token` must not be empty");
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "`token` must be visible ASCII: no whitespace, control or non-ASCII characters",
            );
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err("`token` is too long to be a Discord bot token");
        }
        Ok(Token(token.to_string()))
    }

    /// `Bot <token>`, for Discord's `Authorization` header only.
    pub fn authorization(&self) -> String {
        format!("Bot {}", self.0)
    }
}

/// Discord tokens are about 70 characters; anything far longer is not one,
/// and we refuse to copy it around.
const MAX_TOKEN_LEN: usize = 512;

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Who the bot is, as `GET /users/@me` said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    pub username: String,
}

pub struct Bot {
    token: Token,
    identity: RwLock<Identity>,
    /// Set once Discord answers 401 for this token: it is never sent again,
    /// and the registry forgets the entry so the next login starts afresh.
    rejected: AtomicBool,
    pub limiter: BotLimiter,
    pub in_flight: InFlightGate,
    /// What Discord refused this bot lately, answered here for a while.
    pub refusals: Refusals,
    /// Logins' `GET /users/@me`: one in flight, its answer shared.
    pub current_user: SingleFlight<Result<Vec<u8>, Error>>,
}

impl AsRef<InFlightGate> for Bot {
    fn as_ref(&self) -> &InFlightGate {
        &self.in_flight
    }
}

impl Bot {
    pub fn token(&self) -> &Token {
        &self.token
    }

    pub fn identity(&self) -> Identity {
        self.identity.read().clone()
    }

    /// The bot's Discord user ID, once `GET /users/@me` (or the store)
    /// said it: what idempotency keys, events and the Gateway are kept by.
    pub fn discord_id(&self) -> Option<u64> {
        Snowflake::parse(&self.identity.read().id).map(Snowflake::get)
    }

    pub fn set_identity(&self, identity: Identity) {
        *self.identity.write() = identity;
    }

    pub fn is_rejected(&self) -> bool {
        self.rejected.load(Ordering::SeqCst)
    }

    pub fn mark_rejected(&self) {
        self.rejected.store(true, Ordering::SeqCst);
    }
}

impl fmt::Debug for Bot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let identity = self.identity.read();
        write!(f, "Bot({} {})", identity.id, identity.username)
    }
}

/// Token → bot, so a second login with the same token joins the first bot's
/// limits instead of starting a parallel set.
///
/// Keyed by the token's keyed fingerprint, not a second copy of the token:
/// one fewer copy of the secret, and about 100 bytes less per bot. A lookup
/// checks the bot's own token, so even a fingerprint collision can never
/// hand one token's bot to another.
pub struct BotRegistry {
    bots: Mutex<HashMap<u64, Weak<Bot>>>,
    /// Fingerprints (keyed hashes, not tokens) of tokens Discord rejected.
    rejected: Mutex<HashMap<u64, Instant>>,
    fingerprint_key: std::collections::hash_map::RandomState,
    global_per_second: u32,
    max_in_flight: usize,
}

impl BotRegistry {
    /// `global_per_second`: each bot's global limit; `max_in_flight`: how
    /// many of one bot's requests may be worked on at once.
    pub fn new(global_per_second: u32, max_in_flight: usize) -> Self {
        BotRegistry {
            bots: Mutex::new(HashMap::new()),
            rejected: Mutex::new(HashMap::new()),
            fingerprint_key: Default::default(),
            global_per_second,
            max_in_flight,
        }
    }

    fn fingerprint(&self, token: &Token) -> u64 {
        self.fingerprint_key.hash_one(&token.0)
    }

    /// Whether Discord rejected this token within the last hour.
    pub fn was_rejected(&self, token: &Token) -> bool {
        let fingerprint = self.fingerprint(token);
        self.rejected
            .lock()
            .get(&fingerprint)
            .is_some_and(|at| at.elapsed() < REJECTED_TTL)
    }

    /// Remembers that Discord rejected this bot's token.
    pub fn remember_rejected(&self, bot: &Bot) {
        let fingerprint = self.fingerprint(&bot.token);
        let mut rejected = self.rejected.lock();
        if rejected.len() >= MAX_REJECTED {
            rejected.retain(|_, at| at.elapsed() < REJECTED_TTL);
            if rejected.len() >= MAX_REJECTED {
                rejected.clear();
            }
        }
        rejected.insert(fingerprint, Instant::now());
    }

    /// Whether a live bot with a session holds this token: a login with it
    /// is very likely to succeed.
    pub fn is_live(&self, token: &Token) -> bool {
        self.live(token)
            .is_some_and(|bot| !bot.is_rejected() && !bot.identity().id.is_empty())
    }

    /// The bot entry holding exactly this token, if one is alive.
    fn live(&self, token: &Token) -> Option<Arc<Bot>> {
        self.bots
            .lock()
            .get(&self.fingerprint(token))
            .and_then(Weak::upgrade)
            .filter(|bot| bot.token.0 == token.0)
    }

    /// The live bot for this token, or a new one. A bot whose token Discord
    /// rejected is replaced, so a fresh login gets one fresh attempt.
    pub fn get_or_create(&self, token: Token) -> Arc<Bot> {
        let key = self.fingerprint(&token);
        let mut bots = self.bots.lock();
        if let Some(bot) = bots.get(&key).and_then(Weak::upgrade)
            && bot.token.0 == token.0
            && !bot.is_rejected()
        {
            return bot;
        }
        let bot = Arc::new(Bot {
            token,
            identity: RwLock::new(Identity::default()),
            rejected: AtomicBool::new(false),
            limiter: BotLimiter::new(self.global_per_second),
            in_flight: InFlightGate::new(self.max_in_flight),
            refusals: Refusals::default(),
            current_user: SingleFlight::default(),
        });
        bots.insert(key, Arc::downgrade(&bot));
        bot
    }

    /// Bots with at least one live session.
    pub fn len(&self) -> usize {
        self.bots
            .lock()
            .values()
            .filter(|bot| bot.strong_count() > 0)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops entries whose bot has no session left, and idle rate-limit
    /// buckets of the others. Returns how many bots remain.
    pub fn sweep(&self) -> usize {
        let mut bots = self.bots.lock();
        bots.retain(|_, bot| bot.strong_count() > 0);
        let live: Vec<Arc<Bot>> = bots.values().filter_map(Weak::upgrade).collect();
        drop(bots);
        self.rejected
            .lock()
            .retain(|_, at| at.elapsed() < REJECTED_TTL);
        let now = std::time::Instant::now();
        for bot in &live {
            bot.limiter.sweep(now);
        }
        live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_prefix_is_stripped_once() {
        let t = Token::parse("Bot abc.def").unwrap();
        assert_eq!(t.authorization(), "Bot abc.def");
        // Only one prefix is stripped; what is left has a space, so it is refused.
        assert!(Token::parse("Bot Bot x").is_err());
    }

    #[test]
    fn empty_whitespace_control_and_non_ascii_characters_are_refused() {
        for bad in [
            "", "Bot ", "a b", "a\tb", "a\u{0}b", "a\nb", "a\u{a0}b", "é", "Bot é", "😀",
        ] {
            assert!(Token::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = Token::parse("secret-token").unwrap();
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[test]
    fn same_token_shares_one_bot_until_the_last_holder_is_gone() {
        let registry = BotRegistry::new(50, 8);
        let a = registry.get_or_create(Token::parse("t1").unwrap());
        let b = registry.get_or_create(Token::parse("Bot t1").unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        assert_eq!(registry.sweep(), 0);
    }

    #[test]
    fn a_rejected_bot_is_replaced_on_next_login() {
        let registry = BotRegistry::new(50, 8);
        let a = registry.get_or_create(Token::parse("t1").unwrap());
        a.mark_rejected();
        let b = registry.get_or_create(Token::parse("t1").unwrap());
        assert!(!Arc::ptr_eq(&a, &b));
    }
}
