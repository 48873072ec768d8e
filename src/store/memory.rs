//! memory: the sessions every request is served from, in this process: a
//! `parking_lot` read-write lock around a map of session ID → bot.
//!
//! With `--data-dir`, `durable` restores sessions into it at start-up. The
//! database holds only a keyed digest of each session ID (`seal`), so a
//! restored session is known by its digest until its client presents the
//! ID again: a lookup that misses the ID map digests the ID once and, on a
//! match, moves the session over. Sessions made since the start are found
//! by ID alone, so the usual lookup costs no digest.
//!
//! Architecture invariants:
//! - a session holds nothing but an `Arc<Bot>` and its last-use time;
//! - a lookup takes the read lock only (last use is an atomic), so concurrent
//!   requests do not serialise on the map;
//! - how many sessions each bot holds changes only with the maps, under the
//!   same lock (`--max-sessions-per-bot`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;

use crate::discord::bots::Bot;
use crate::store::seal::SessionKey;
use crate::store::sessions::{SessionId, SessionStore, StoreError};

/// A session ID's keyed digest (`SessionKey::session_digest`): what the
/// database knows a session by.
pub type Digest = [u8; 32];

struct Entry {
    bot: Arc<Bot>,
    /// Milliseconds since the store's epoch; negative for a session
    /// restored with idle time from before this process started.
    last_used: AtomicI64,
}

/// A session restored from disk, known by its digest until it is used.
struct Restored {
    entry: Entry,
    prefix: String,
}

/// The sessions, and how many each bot holds, changed only together.
#[derive(Default)]
struct Sessions {
    map: HashMap<SessionId, Entry>,
    restored: HashMap<Digest, Restored>,
    /// By the bot entry's address, stable while a session holds it; a bot
    /// with no session has no entry here.
    per_bot: HashMap<usize, u32>,
}

fn bot_key(bot: &Arc<Bot>) -> usize {
    Arc::as_ptr(bot) as usize
}

impl Sessions {
    fn len(&self) -> usize {
        self.map.len() + self.restored.len()
    }

    fn count(&mut self, bot: &Arc<Bot>) {
        *self.per_bot.entry(bot_key(bot)).or_default() += 1;
    }

    fn insert(&mut self, id: SessionId, entry: Entry) {
        self.count(&entry.bot);
        self.map.insert(id, entry);
    }

    fn remove(&mut self, id: &SessionId) -> Option<Entry> {
        let entry = self.map.remove(id)?;
        forget(&mut self.per_bot, &entry.bot);
        Some(entry)
    }

    fn remove_restored(&mut self, digest: &Digest) -> Option<Restored> {
        let restored = self.restored.remove(digest)?;
        forget(&mut self.per_bot, &restored.entry.bot);
        Some(restored)
    }

    /// Keeps the sessions `keep` says yes to; the others go to `ended`.
    fn retain(&mut self, ended: &mut Vec<Ended>, mut keep: impl FnMut(&Entry) -> bool) {
        let per_bot = &mut self.per_bot;
        self.map.retain(|id, entry| {
            let kept = keep(entry);
            if !kept {
                forget(per_bot, &entry.bot);
                ended.push(Ended {
                    key: Known::Id(id.clone()),
                    prefix: id.prefix().to_string(),
                    bot: Arc::clone(&entry.bot),
                });
            }
            kept
        });
        self.restored.retain(|digest, restored| {
            let kept = keep(&restored.entry);
            if !kept {
                forget(per_bot, &restored.entry.bot);
                ended.push(Ended {
                    key: Known::Digest(*digest),
                    prefix: restored.prefix.clone(),
                    bot: Arc::clone(&restored.entry.bot),
                });
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

/// How a session is known: by its ID, or (restored, not used since) only
/// by its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    Id(SessionId),
    Digest(Digest),
}

/// A session that ended (expired, or its bot's token was rejected).
pub struct Ended {
    pub key: Known,
    pub prefix: String,
    pub bot: Arc<Bot>,
}

pub struct MemoryStore {
    sessions: RwLock<Sessions>,
    max_sessions: usize,
    max_per_bot: u32,
    idle_timeout: Duration,
    epoch: Instant,
    /// The epoch as Unix milliseconds, to tell the database when a session
    /// was last used.
    epoch_unix_ms: i64,
    /// Set once sessions are restored: digests a presented ID to find one.
    digests: OnceLock<SessionKey>,
}

impl MemoryStore {
    pub fn new(max_sessions: usize, max_per_bot: u32, idle_timeout: Duration) -> Self {
        MemoryStore {
            sessions: RwLock::new(Sessions::default()),
            max_sessions,
            max_per_bot,
            idle_timeout,
            epoch: Instant::now(),
            epoch_unix_ms: unix_ms(SystemTime::now()),
            digests: OnceLock::new(),
        }
    }

    fn now_ms(&self) -> i64 {
        self.epoch.elapsed().as_millis() as i64
    }

    fn is_expired(&self, entry: &Entry, now_ms: i64) -> bool {
        let idle = now_ms.saturating_sub(entry.last_used.load(Ordering::Relaxed));
        idle >= self.idle_timeout.as_millis() as i64
    }

    /// Adds a session from disk, idle for `idle` already. `key` digests the
    /// IDs clients will present; it is the one the digest was made with.
    pub fn restore(
        &self,
        key: &SessionKey,
        digest: Digest,
        bot: Arc<Bot>,
        prefix: String,
        idle: Duration,
    ) {
        let _ = self.digests.set(key.clone());
        let entry = Entry {
            bot,
            last_used: AtomicI64::new(self.now_ms() - idle.as_millis() as i64),
        };
        let mut sessions = self.sessions.write();
        sessions.count(&entry.bot);
        sessions.restored.insert(digest, Restored { entry, prefix });
    }

    /// Ends a session, however it is known.
    pub fn remove_known(&self, key: &Known) -> Option<Arc<Bot>> {
        let mut sessions = self.sessions.write();
        match key {
            Known::Id(id) => sessions.remove(id).map(|entry| entry.bot),
            Known::Digest(digest) => sessions.remove_restored(digest).map(|r| r.entry.bot),
        }
    }

    /// Ends the sessions idle past the timeout, with how each was known.
    pub fn sweep_ended(&self) -> Vec<Ended> {
        let now = self.now_ms();
        let mut ended = Vec::new();
        // Check under the read lock first: most sweeps find nothing.
        {
            let sessions = self.sessions.read();
            let any = sessions.map.values().any(|e| self.is_expired(e, now))
                || sessions
                    .restored
                    .values()
                    .any(|r| self.is_expired(&r.entry, now));
            if !any {
                return ended;
            }
        }
        self.sessions
            .write()
            .retain(&mut ended, |entry| !self.is_expired(entry, now));
        ended
    }

    /// Sessions used at or after `since` (this store's milliseconds), with
    /// their last use as Unix milliseconds: what a durable store writes out.
    pub fn used_since(&self, since: i64) -> Vec<(SessionId, i64)> {
        self.sessions
            .read()
            .map
            .iter()
            .filter_map(|(id, entry)| {
                let last_used = entry.last_used.load(Ordering::Relaxed);
                (last_used >= since).then(|| (id.clone(), self.epoch_unix_ms + last_used))
            })
            .collect()
    }

    /// This store's clock, for `used_since`.
    pub fn clock_ms(&self) -> i64 {
        self.now_ms()
    }

    /// The session in the ID map, refreshing its last use: `None` when the
    /// ID is not there, `Some(None)` when it has expired.
    fn in_map(&self, sessions: &Sessions, id: &SessionId) -> Option<Option<Arc<Bot>>> {
        let entry = sessions.map.get(id)?;
        let now = self.now_ms();
        if self.is_expired(entry, now) {
            return Some(None);
        }
        entry.last_used.store(now, Ordering::Relaxed);
        Some(Some(Arc::clone(&entry.bot)))
    }

    /// A restored session presented by its ID: moved into the ID map, so it
    /// is digested once. The digest is made and looked up under the read
    /// lock: a made-up ID costs no write lock, however many there are.
    fn adopt(&self, id: &SessionId) -> Option<Arc<Bot>> {
        let digest = self.digests.get()?.session_digest(id.as_str());
        if !self.sessions.read().restored.contains_key(&digest) {
            // Not restored, or adopted a moment ago by a request racing
            // this one.
            return self.in_map(&self.sessions.read(), id).flatten();
        }
        let mut sessions = self.sessions.write();
        let Some(restored) = sessions.restored.remove(&digest) else {
            return self.in_map(&sessions, id).flatten();
        };
        let now = self.now_ms();
        if self.is_expired(&restored.entry, now) {
            sessions.restored.insert(digest, restored);
            return None;
        }
        restored.entry.last_used.store(now, Ordering::Relaxed);
        let bot = Arc::clone(&restored.entry.bot);
        // Counted already, as restored.
        sessions.map.insert(id.clone(), restored.entry);
        Some(bot)
    }
}

/// Unix milliseconds of a wall-clock time (0 before 1970, which no clock
/// this runs on shows).
pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl SessionStore for MemoryStore {
    fn create(&self, bot: Arc<Bot>) -> Result<SessionId, StoreError> {
        let mut sessions = self.sessions.write();
        let full = |s: &Sessions| s.len() >= self.max_sessions;
        let bot_full = |s: &Sessions| s.of_bot(&bot) >= self.max_per_bot;
        if full(&sessions) || bot_full(&sessions) {
            // Make room from expired sessions the sweeper has not reached yet.
            let now = self.now_ms();
            sessions.retain(&mut Vec::new(), |entry| !self.is_expired(entry, now));
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
            last_used: AtomicI64::new(self.now_ms()),
        };
        sessions.insert(id.clone(), entry);
        Ok(id)
    }

    fn get(&self, id: &SessionId) -> Result<Option<Arc<Bot>>, StoreError> {
        let sessions = self.sessions.read();
        if let Some(found) = self.in_map(&sessions, id) {
            return Ok(found);
        }
        let maybe_restored = !sessions.restored.is_empty();
        drop(sessions);
        Ok(if maybe_restored { self.adopt(id) } else { None })
    }

    fn remove(&self, id: &SessionId) -> Result<Option<Arc<Bot>>, StoreError> {
        if let Some(bot) = self.remove_known(&Known::Id(id.clone())) {
            return Ok(Some(bot));
        }
        let restored = self
            .digests
            .get()
            .map(|key| Known::Digest(key.session_digest(id.as_str())));
        Ok(restored.and_then(|known| self.remove_known(&known)))
    }

    fn sessions_of(&self, bot: &Arc<Bot>) -> Result<usize, StoreError> {
        Ok(self.sessions.read().of_bot(bot) as usize)
    }

    fn remove_bot(&self, bot: &Arc<Bot>) -> Result<Vec<String>, StoreError> {
        let mut ended = Vec::new();
        self.sessions
            .write()
            .retain(&mut ended, |entry| !Arc::ptr_eq(&entry.bot, bot));
        Ok(ended.into_iter().map(|e| e.prefix).collect())
    }

    fn sweep(&self) -> Vec<(String, Arc<Bot>)> {
        self.sweep_ended()
            .into_iter()
            .map(|e| (e.prefix, e.bot))
            .collect()
    }

    fn len(&self) -> usize {
        self.sessions.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discord::bots::{BotRegistry, Token};

    fn bot(registry: &BotRegistry, token: &str) -> Arc<Bot> {
        registry.get_or_create(Token::parse(token).unwrap())
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

    const KEY: &str = "5f0e1d2c3b4a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    #[test]
    fn a_restored_session_is_found_by_its_id_and_then_without_a_digest() {
        let registry = BotRegistry::new(50, 8);
        let key = SessionKey::parse(KEY).unwrap();
        let store = MemoryStore::new(10, 10, Duration::from_secs(60));
        let id = SessionId::generate();
        let a = bot(&registry, "a");
        store.restore(
            &key,
            key.session_digest(id.as_str()),
            Arc::clone(&a),
            id.prefix().into(),
            Duration::from_secs(5),
        );
        assert_eq!(store.len(), 1);
        assert!(store.get(&SessionId::generate()).unwrap().is_none());
        assert!(Arc::ptr_eq(&store.get(&id).unwrap().unwrap(), &a));
        assert!(
            store.sessions.read().restored.is_empty(),
            "moved to the ID map"
        );
        assert_eq!(store.len(), 1);
        assert!(store.remove(&id).unwrap().is_some());
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn requests_racing_to_present_a_restored_id_all_find_the_session() {
        let registry = BotRegistry::new(50, 8);
        let key = SessionKey::parse(KEY).unwrap();
        for _ in 0..200 {
            let store = MemoryStore::new(10, 10, Duration::from_secs(60));
            let id = SessionId::generate();
            store.restore(
                &key,
                key.session_digest(id.as_str()),
                bot(&registry, "a"),
                id.prefix().into(),
                Duration::ZERO,
            );
            std::thread::scope(|scope| {
                let found: Vec<_> = (0..4)
                    .map(|_| scope.spawn(|| store.get(&id).unwrap().is_some()))
                    .collect();
                for found in found {
                    assert!(found.join().unwrap(), "a racing lookup missed the session");
                }
            });
        }
    }

    #[test]
    fn a_restored_session_keeps_its_idle_time_and_expires_on_it() {
        let registry = BotRegistry::new(50, 8);
        let key = SessionKey::parse(KEY).unwrap();
        let store = MemoryStore::new(10, 10, Duration::from_millis(300));
        let id = SessionId::generate();
        store.restore(
            &key,
            key.session_digest(id.as_str()),
            bot(&registry, "a"),
            id.prefix().into(),
            Duration::from_millis(250),
        );
        std::thread::sleep(Duration::from_millis(100));
        assert!(store.get(&id).unwrap().is_none(), "idle 350 ms of 300");
        let ended = store.sweep_ended();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].key, Known::Digest(key.session_digest(id.as_str())));
    }

    #[test]
    fn restored_sessions_count_toward_both_limits() {
        let registry = BotRegistry::new(50, 8);
        let key = SessionKey::parse(KEY).unwrap();
        let store = MemoryStore::new(3, 2, Duration::from_secs(60));
        let a = bot(&registry, "a");
        for n in 0..2u8 {
            store.restore(
                &key,
                [n; 32],
                Arc::clone(&a),
                "prefix".into(),
                Duration::ZERO,
            );
        }
        assert_eq!(
            store.create(Arc::clone(&a)),
            Err(StoreError::BotFull { limit: 2 })
        );
        store.create(bot(&registry, "b")).unwrap();
        assert_eq!(store.create(bot(&registry, "c")), Err(StoreError::Full));
    }
}
