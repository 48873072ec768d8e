//! sessions: session ID → bot, behind the `SessionStore` trait so another
//! store (Redis) can replace the in-memory one without touching the routes.
//!
//! Architecture invariants:
//! - a session holds nothing but an `Arc<Bot>` and its last-use time;
//! - a lookup takes the read lock only (last use is an atomic), so concurrent
//!   requests do not serialise on the map;
//! - the full session ID is never logged: use `SessionId::prefix`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

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
}

struct Entry {
    bot: Arc<Bot>,
    /// Milliseconds since the store's epoch.
    last_used: AtomicU64,
}

/// The embedded store: a `parking_lot` read-write lock around a map.
pub struct MemoryStore {
    sessions: RwLock<Sessions>,
    max_sessions: usize,
    max_per_bot: u32,
    idle_timeout: Duration,
    epoch: Instant,
}

/// The sessions, and how many each bot holds (for `--max-sessions-per-bot`),
/// changed only together.
#[derive(Default)]
struct Sessions {
    map: HashMap<SessionId, Entry>,
    /// By the bot entry's address, stable while a session holds it; a bot
    /// with no session has no entry here.
    per_bot: HashMap<usize, u32>,
}

fn bot_key(bot: &Arc<Bot>) -> usize {
    Arc::as_ptr(bot) as usize
}

impl Sessions {
    fn insert(&mut self, id: SessionId, entry: Entry) {
        *self.per_bot.entry(bot_key(&entry.bot)).or_default() += 1;
        self.map.insert(id, entry);
    }

    fn remove(&mut self, id: &SessionId) -> Option<Entry> {
        let entry = self.map.remove(id)?;
        forget(&mut self.per_bot, &entry.bot);
        Some(entry)
    }

    fn retain(&mut self, mut keep: impl FnMut(&SessionId, &Entry) -> bool) {
        let per_bot = &mut self.per_bot;
        self.map.retain(|id, entry| {
            let kept = keep(id, entry);
            if !kept {
                forget(per_bot, &entry.bot);
            }
            kept
        });
    }

    fn of_bot(&self, bot: &Arc<Bot>) -> u32 {
        self.per_bot.get(&bot_key(bot)).copied().unwrap_or(0)
    }
}

fn forget(per_bot: &mut HashMap<usize, u32>, bot: &Arc<Bot>) {
    let key = bot_key(bot);
    if let Some(count) = per_bot.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            per_bot.remove(&key);
        }
    }
}

impl MemoryStore {
    pub fn new(max_sessions: usize, max_per_bot: u32, idle_timeout: Duration) -> Self {
        MemoryStore {
            sessions: RwLock::new(Sessions::default()),
            max_sessions,
            max_per_bot,
            idle_timeout,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn is_expired(&self, entry: &Entry, now_ms: u64) -> bool {
        let idle = now_ms.saturating_sub(entry.last_used.load(Ordering::Relaxed));
        idle >= self.idle_timeout.as_millis() as u64
    }
}

impl SessionStore for MemoryStore {
    fn create(&self, bot: Arc<Bot>) -> Result<SessionId, StoreError> {
        let mut sessions = self.sessions.write();
        let full = |s: &Sessions| s.map.len() >= self.max_sessions;
        let bot_full = |s: &Sessions| s.of_bot(&bot) >= self.max_per_bot;
        if full(&sessions) || bot_full(&sessions) {
            // Make room from expired sessions the sweeper has not reached yet.
            let now = self.now_ms();
            sessions.retain(|_, entry| !self.is_expired(entry, now));
            if full(&sessions) {
                return Err(StoreError::Full);
            }
            if bot_full(&sessions) {
                return Err(StoreError::BotFull {
                    limit: self.max_per_bot,
                });
            }
        }
        let id = SessionId::generate();
        let entry = Entry {
            bot,
            last_used: AtomicU64::new(self.now_ms()),
        };
        sessions.insert(id.clone(), entry);
        Ok(id)
    }

    fn get(&self, id: &SessionId) -> Result<Option<Arc<Bot>>, StoreError> {
        let sessions = self.sessions.read();
        let Some(entry) = sessions.map.get(id) else {
            return Ok(None);
        };
        let now = self.now_ms();
        if self.is_expired(entry, now) {
            return Ok(None);
        }
        entry.last_used.store(now, Ordering::Relaxed);
        Ok(Some(Arc::clone(&entry.bot)))
    }

    fn remove(&self, id: &SessionId) -> Result<Option<Arc<Bot>>, StoreError> {
        Ok(self.sessions.write().remove(id).map(|entry| entry.bot))
    }

    fn remove_bot(&self, bot: &Arc<Bot>) -> Result<Vec<String>, StoreError> {
        let mut ended = Vec::new();
        self.sessions.write().retain(|id, entry| {
            let keep = !Arc::ptr_eq(&entry.bot, bot);
            if !keep {
                ended.push(id.prefix().to_string());
            }
            keep
        });
        Ok(ended)
    }

    fn sweep(&self) -> Vec<(String, Arc<Bot>)> {
        let now = self.now_ms();
        let mut expired = Vec::new();
        // Check under the read lock first: most sweeps find nothing.
        if !self
            .sessions
            .read()
            .map
            .values()
            .any(|e| self.is_expired(e, now))
        {
            return expired;
        }
        self.sessions.write().retain(|id, entry| {
            let keep = !self.is_expired(entry, now);
            if !keep {
                expired.push((id.prefix().to_string(), Arc::clone(&entry.bot)));
            }
            keep
        });
        expired
    }

    fn len(&self) -> usize {
        self.sessions.read().map.len()
    }
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
    use crate::discord::bots::Token;

    fn bot(registry: &BotRegistry, token: &str) -> Arc<Bot> {
        registry.get_or_create(Token::parse(token).unwrap())
    }

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

    #[test]
    fn store_refuses_past_max_sessions() {
        let registry = BotRegistry::new(50, 8);
        let store = MemoryStore::new(2, 10, Duration::from_secs(60));
        store.create(bot(&registry, "a")).unwrap();
        store.create(bot(&registry, "a")).unwrap();
        assert_eq!(store.create(bot(&registry, "a")), Err(StoreError::Full));
    }

    #[test]
    fn store_refuses_a_bot_past_its_share_and_counts_what_ends() {
        let registry = BotRegistry::new(50, 8);
        let store = MemoryStore::new(10, 2, Duration::from_secs(60));
        let a = bot(&registry, "a");
        let first = store.create(Arc::clone(&a)).unwrap();
        store.create(Arc::clone(&a)).unwrap();
        assert_eq!(
            store.create(Arc::clone(&a)),
            Err(StoreError::BotFull { limit: 2 })
        );
        store.create(bot(&registry, "b")).unwrap();
        store.remove(&first).unwrap();
        store.create(Arc::clone(&a)).unwrap();
        assert_eq!(store.remove_bot(&a).unwrap().len(), 2);
        store.create(Arc::clone(&a)).unwrap();
    }

    #[test]
    fn expired_sessions_are_not_served_and_are_swept() {
        let registry = BotRegistry::new(50, 8);
        let store = MemoryStore::new(10, 10, Duration::from_millis(20));
        let id = store.create(bot(&registry, "a")).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert!(store.get(&id).unwrap().is_none());
        assert_eq!(store.sweep().len(), 1);
        assert!(store.is_empty());
        assert_eq!(registry.sweep(), 0, "the bot goes with its last session");
    }

    #[test]
    fn remove_bot_ends_only_that_bots_sessions() {
        let registry = BotRegistry::new(50, 8);
        let store = MemoryStore::new(10, 10, Duration::from_secs(60));
        let a = bot(&registry, "a");
        store.create(Arc::clone(&a)).unwrap();
        store.create(Arc::clone(&a)).unwrap();
        let other = store.create(bot(&registry, "b")).unwrap();
        assert_eq!(store.remove_bot(&a).unwrap().len(), 2);
        assert!(store.get(&other).unwrap().is_some());
        assert_eq!(store.len(), 1);
    }
}
