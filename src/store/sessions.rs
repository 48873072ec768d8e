//! sessions: what a session is (`SessionId`), the `SessionStore` seam every
//! store implements (`memory`, `durable`, `redis`), how a store fails
//! (`StoreError`), and the sweeper that ends idle sessions.
//!
//! Architecture invariant: the full session ID is never logged: use
//! `SessionId::prefix`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::discord::bots::{Bot, BotRegistry};

/// Length of a session ID: 21 characters of nanoid's 64-letter alphabet is
/// 126 bits of randomness.
const SESSION_ID_LEN: usize = 21;
/// Characters of a session ID that logs may show.
const LOG_PREFIX_LEN: usize = 6;

/// A session ID: a bearer credential. Held inline, not on the heap: one
/// allocation fewer per session (the session map is most of the memory of
/// 10,000 sessions).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId([u8; SESSION_ID_LEN]);

impl SessionId {
    pub(crate) fn generate() -> SessionId {
        SessionId::parse(&nanoid::nanoid!(SESSION_ID_LEN)).expect("nanoid makes valid IDs")
    }

    /// Accepts what a client presented, if it could be a session ID at all:
    /// 21 characters of nanoid's alphabet. Anything else cannot match and is
    /// not worth a lookup.
    pub fn parse(text: &str) -> Option<SessionId> {
        let bytes: [u8; SESSION_ID_LEN] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            .then_some(SessionId(bytes))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("parse admits ASCII only")
    }

    /// The part of the ID that logs may show.
    pub fn prefix(&self) -> &str {
        &self.as_str()[..LOG_PREFIX_LEN]
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({}…)", self.prefix())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// `--max-sessions` sessions exist already.
    Full,
    /// The bot has `--max-sessions-per-bot` sessions already.
    BotFull { limit: u32 },
    /// The store cannot be reached (a shared store that is down); the
    /// reason is safe to show a client: it names no key and no secret.
    Unavailable(String),
}

/// Where sessions live. Implementations must be safe to call from every
/// worker at once.
pub trait SessionStore: Send + Sync {
    /// Creates a session for this bot, or refuses when full.
    fn create(&self, bot: Arc<Bot>) -> Result<SessionId, StoreError>;
    /// The session's bot, refreshing its last use; `None` when unknown or
    /// idle past the timeout (an expired session is never served, even
    /// before the sweeper removes it).
    fn get(&self, id: &SessionId) -> Result<Option<Arc<Bot>>, StoreError>;
    /// Ends a session at once; returns its bot if it existed.
    fn remove(&self, id: &SessionId) -> Result<Option<Arc<Bot>>, StoreError>;
    /// Ends every session of this bot (Discord rejected its token).
    /// Returns the ended sessions' log prefixes.
    fn remove_bot(&self, bot: &Arc<Bot>) -> Result<Vec<String>, StoreError>;
    /// How many live sessions the bot has (on every instance): when none is
    /// left, its Gateway connection closes for good.
    fn sessions_of(&self, bot: &Arc<Bot>) -> Result<usize, StoreError>;
    /// Removes sessions idle past the timeout; returns them for logging.
    /// A store whose entries expire by themselves returns nothing.
    fn sweep(&self) -> Vec<(String, Arc<Bot>)>;
    /// Sessions held (for metrics; a shared store may answer from a recent
    /// count).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether the store can serve requests now (`/healthz`).
    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Writes out what is kept only in memory for now (last-use times), at
    /// shutdown.
    fn flush(&self) {}
}

/// Removes expired sessions, bots without sessions and their idle rate-limit
/// buckets (and runs `also`), every `every`, so memory does not grow with
/// dead sessions.
pub fn spawn_sweeper(
    store: Arc<dyn SessionStore>,
    bots: Arc<BotRegistry>,
    also: impl Fn() + Send + 'static,
    every: Duration,
) {
    let sweep = move || loop {
        std::thread::sleep(every);
        for (prefix, bot) in store.sweep() {
            let identity = bot.identity();
            log::info!(
                "session {prefix} expired for bot {} ({})",
                identity.id,
                identity.username
            );
        }
        bots.sweep();
        also();
    };
    if let Err(err) = std::thread::Builder::new()
        .name("sweeper".into())
        .spawn(sweep)
    {
        log::error!("cannot start the session sweeper: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ids_are_21_nanoid_characters_and_unique() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_eq!(a.as_str().len(), 21);
        assert!(SessionId::parse(a.as_str()).is_some());
        assert_ne!(a, b);
    }

    #[test]
    fn debug_shows_only_the_prefix() {
        let id = SessionId::generate();
        let shown = format!("{id:?}");
        assert!(!shown.contains(id.as_str()));
        assert!(shown.contains(id.prefix()));
    }
}
