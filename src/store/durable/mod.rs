//! durable: sessions that survive a restart (`--data-dir`): the memory store,
//! written through to an SQLite file in the directory.
//!
//! Requests are served from memory, as without a directory: a lookup never
//! reads the file. A login writes its session (and its bot, the token
//! sealed) before the client gets the ID; a logout deletes it before the
//! client hears so; expiry deletes what the sweeper ends. Last-use times are
//! written in batches every `FLUSH_EVERY` and at shutdown, so a crash can
//! shorten a session's idle clock by that much, and loses no session and no
//! logout. A power cut can lose the last commits (`db`: WAL with
//! `synchronous = NORMAL`).
//!
//! At start-up every stored session comes back, its bot's token unsealed
//! once per bot, so all of a bot's sessions share one bot entry and one rate
//! limiter again; sessions idle past the timeout are deleted instead.
//!
//! Secrets at rest: the file holds sealed tokens and digests of session IDs
//! only; the key is `--session-key`, or `secret.key` beside the file (mode
//! 0600). A copy of the file alone calls nothing.
//!
//! Architecture invariants: a failed write answers 503 and changes nothing
//! in memory (a login that was not written gives no session; a logout that
//! was not written keeps the session, so it cannot come back after a
//! restart); nothing at start-up deletes data it cannot read, it refuses to
//! start instead.

mod db;
mod dir;

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::discord::bots::{Bot, BotRegistry, Identity, Token};
use crate::discord::gateway::ResumeState;
use crate::events::{Checkpoints, Saved};
use crate::store::idempotency::{self, Claimed, Finished, IdempotencyStore, KeyScope, Record};
use crate::store::memory::{Digest, Known, MemoryStore, unix_ms};
use crate::store::seal::SessionKey;
use crate::store::sessions::{SessionId, SessionStore, StoreError};
use db::{Database, StoredBot, StoredSession};
use dir::DataDir;

/// How often last-use times go to disk: what a crash can take off a
/// session's idle clock.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// How far each flush of last uses looks back before the previous one.
const FLUSH_OVERLAP_MS: i64 = 1_000;
/// While writes fail, `/healthz` tries one at most this often.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// What the key check digests: tells the key the data was sealed with.
const KEY_CHECK: &str = "discord-bot-backend key check v1";

pub struct DurableStore {
    memory: MemoryStore,
    db: Mutex<Database>,
    key: SessionKey,
    /// The memory store's clock at the last flush of last-use times.
    flushed: Mutex<i64>,
    /// Why writes fail, while they do, and when that was last checked.
    broken: Mutex<Option<(String, Instant)>>,
    _dir: DataDir,
}

impl DurableStore {
    /// Opens `dir` and brings back its sessions; every refusal is one line
    /// that says what to do, and leaves the files as they were.
    pub fn open(
        dir: &Path,
        given_key: Option<SessionKey>,
        bots: &BotRegistry,
        memory: MemoryStore,
        idle_timeout: Duration,
    ) -> Result<Arc<DurableStore>, String> {
        let data_dir = DataDir::open(dir)?;
        let db_path = data_dir.database();
        let db = Database::open(&db_path)?;
        let stored_check = db.key_check()?;
        let key = data_dir.key(given_key, stored_check.is_some())?;
        let check = key.session_digest(KEY_CHECK);
        match stored_check {
            Some(stored) if stored != check => {
                return Err(format!(
                    "the sessions in {} were sealed with another key: start with the \
                     --session-key (or secret.key) they were written with; nothing was changed",
                    db_path.display()
                ));
            }
            Some(_) => {}
            None => db.set_key_check(&check)?,
        }
        let store = DurableStore {
            memory,
            db: Mutex::new(db),
            key,
            flushed: Mutex::new(0),
            broken: Mutex::new(None),
            _dir: data_dir,
        };
        store.restore(bots, idle_timeout)?;
        let store = Arc::new(store);
        spawn_flusher(Arc::downgrade(&store));
        Ok(store)
    }

    fn restore(&self, bots: &BotRegistry, idle_timeout: Duration) -> Result<(), String> {
        let mut db = self.db.lock();
        let mut by_digest = std::collections::HashMap::new();
        for stored in db.bots()? {
            let token = self
                .key
                .open(&stored.sealed_token, &token_context(&stored.bot))
                .and_then(|plain| String::from_utf8(plain).ok())
                .and_then(|text| Token::parse(&text).ok())
                .ok_or("a sealed token in the database does not open with this key: start with the key it was written with; nothing was changed")?;
            let bot = bots.get_or_create(token);
            bot.set_identity(Identity {
                id: stored.bot_id,
                username: stored.username,
            });
            by_digest.insert(stored.bot, bot);
        }
        let now = unix_ms(SystemTime::now());
        let mut expired = Vec::new();
        let mut restored = 0;
        for session in db.sessions()? {
            let idle =
                Duration::from_millis(now.saturating_sub(session.last_used_ms).max(0) as u64);
            match by_digest.get(&session.bot) {
                Some(bot) if idle < idle_timeout => {
                    self.memory.restore(
                        &self.key,
                        session.session,
                        Arc::clone(bot),
                        session.prefix,
                        idle,
                    );
                    restored += 1;
                }
                _ => expired.push(session.session),
            }
        }
        // Only what has expired by its own clock goes: nothing unreadable.
        if let Err(e) = db
            .delete_sessions(&expired)
            .and_then(|()| db.delete_unused_bots().map(drop))
        {
            log::warn!(
                "cannot delete {} expired sessions at start: {e:?}",
                expired.len()
            );
        }
        log::info!(
            "{restored} sessions of {} bots restored from the data directory ({} had expired)",
            by_digest.len(),
            expired.len()
        );
        Ok(())
    }

    /// Runs a write; a failure is remembered for `/healthz` until a write
    /// works again.
    fn write<T>(
        &self,
        op: impl FnOnce(&mut Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = op(&mut self.db.lock());
        let mut broken = self.broken.lock();
        match &result {
            Ok(_) => {
                if broken.take().is_some() {
                    log::info!("the database takes writes again");
                }
            }
            Err(StoreError::Unavailable(reason)) => {
                if broken.is_none() {
                    log::error!("{reason}: logins, logouts and expiry answer 503 until it can");
                }
                *broken = Some((reason.clone(), Instant::now()));
            }
            Err(_) => {}
        }
        result
    }

    fn digest(&self, known: &Known) -> Digest {
        match known {
            Known::Id(id) => self.key.session_digest(id.as_str()),
            Known::Digest(digest) => *digest,
        }
    }

    fn bot_digest(&self, bot: &Bot) -> Digest {
        self.key.bot_digest(bot.token().authorization().as_bytes())
    }

    /// The secret message nonces are derived under: from the data's key,
    /// so a send retried after a restart carries the first one's nonce.
    pub fn nonce_secret(&self) -> [u8; 32] {
        self.key.nonce_secret()
    }

    /// Writes the last uses since the previous flush.
    fn flush_last_use(&self) {
        let since = *self.flushed.lock();
        // A lookup reads the clock and stores its reading a moment later, so
        // the next flush looks back a second before this one's reading (the
        // update is idempotent: it only moves a last use forward).
        let now = self.memory.clock_ms() - FLUSH_OVERLAP_MS;
        let used: Vec<(Digest, i64)> = self
            .memory
            .used_since(since)
            .into_iter()
            .map(|(id, at)| (self.key.session_digest(id.as_str()), at))
            .collect();
        if used.is_empty() || self.write(|db| db.touch(&used)).is_ok() {
            *self.flushed.lock() = now;
        }
        let retention = idempotency::RETENTION.as_millis() as i64;
        let before = unix_ms(SystemTime::now()) - retention;
        if let Err(e) = self.write(|db| db.expire_idempotency(before)) {
            log::warn!("cannot delete expired idempotency records: {e:?}");
        }
    }
}

/// The events' checkpoints: read once per bot when its events are first
/// used, written at most once a second per bot while they change.
impl Checkpoints for DurableStore {
    fn take(&self, bot_id: u64) -> Option<Saved> {
        let stored = self.write(|db| {
            let stored = db.checkpoint(bot_id)?;
            if let Some((last_id, clean, sealed)) = &stored {
                // From now on IDs up to where this run starts may be given:
                // a crash before the next checkpoint must skip past them
                // too, so the row says so at once.
                let taken = Saved {
                    last_id: *last_id,
                    clean: *clean,
                    resume: Vec::new(),
                };
                db.put_checkpoint(bot_id, taken.next_id() - 1, false, sealed)?;
            }
            Ok(stored)
        });
        let (last_id, clean, sealed) = match stored {
            Ok(stored) => stored?,
            Err(e) => {
                log::warn!("cannot read the events checkpoint of bot {bot_id}: {e:?}");
                return None;
            }
        };
        let resume = self
            .key
            .open(&sealed, &checkpoint_context(bot_id))
            .and_then(|json| serde_json::from_slice::<Vec<ResumeState>>(&json).ok())
            .unwrap_or_else(|| {
                log::warn!("the Gateway sessions kept for bot {bot_id} do not open: identifying");
                Vec::new()
            });
        Some(Saved {
            last_id,
            clean,
            resume,
        })
    }

    fn save(&self, bot_id: u64, saved: &Saved) {
        let json = serde_json::to_vec(&saved.resume).unwrap_or_default();
        let sealed = self.key.seal(&json, &checkpoint_context(bot_id));
        if let Err(e) =
            self.write(|db| db.put_checkpoint(bot_id, saved.last_id, saved.clean, &sealed))
        {
            log::warn!("cannot save the events checkpoint of bot {bot_id}: {e:?}");
        }
    }
}

/// What a bot's sealed Gateway sessions are bound to: its row.
fn checkpoint_context(bot_id: u64) -> Vec<u8> {
    format!("db:gateway:{bot_id}").into_bytes()
}

/// What a sealed token is bound to: its bot's row.
fn token_context(bot: &Digest) -> Vec<u8> {
    [b"db:bot:".as_slice(), bot].concat()
}

fn spawn_flusher(store: Weak<DurableStore>) {
    let flush = move || {
        loop {
            std::thread::sleep(FLUSH_EVERY);
            match store.upgrade() {
                Some(store) => store.flush_last_use(),
                None => return,
            }
        }
    };
    if let Err(err) = std::thread::Builder::new()
        .name("last-use-flush".into())
        .spawn(flush)
    {
        log::error!("cannot start the last-use flusher: {err}; last uses go to disk at sweeps");
    }
}

/// SHA-256 of an `Idempotency-Key`: the database holds no client text.
fn key_hash(key: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// Idempotency records go to the database before the request they claim
/// reaches Discord, so a crash after sending leaves a claim whose lease
/// runs out: the retry is then resumed with the same nonce, not sent anew.
impl IdempotencyStore for DurableStore {
    fn claim(
        &self,
        scope: KeyScope<'_>,
        fingerprint: &idempotency::Fingerprint,
        nonce: &str,
        lease: Duration,
    ) -> Result<Claimed, StoreError> {
        let hash = key_hash(scope.key);
        let now_ms = unix_ms(SystemTime::now());
        self.write(|db| {
            let existing = db
                .idempotency(scope.bot, &hash)?
                .and_then(|bytes| Record::decode(&bytes))
                .filter(|record| !record.expired(now_ms));
            let (record, claimed) =
                idempotency::decide(existing.as_ref(), fingerprint, nonce, lease, now_ms);
            if let Some(record) = record {
                db.put_idempotency(scope.bot, &hash, record.created_ms, &record.encode())?;
            }
            Ok(claimed)
        })
    }

    fn finish(&self, scope: KeyScope<'_>, finished: Finished) -> Result<(), StoreError> {
        let hash = key_hash(scope.key);
        let now_ms = unix_ms(SystemTime::now());
        self.write(|db| {
            let Some(record) = db
                .idempotency(scope.bot, &hash)?
                .and_then(|bytes| Record::decode(&bytes))
            else {
                return Ok(());
            };
            let record = record.finished(finished, now_ms);
            db.put_idempotency(scope.bot, &hash, record.created_ms, &record.encode())
        })
    }

    fn release(&self, scope: KeyScope<'_>) {
        let hash = key_hash(scope.key);
        if let Err(e) = self.write(|db| db.delete_idempotency(scope.bot, &hash)) {
            log::warn!("cannot release an idempotency key: {e:?}");
        }
    }
}

impl SessionStore for DurableStore {
    fn create(&self, bot: Arc<Bot>) -> Result<SessionId, StoreError> {
        let id = self.memory.create(Arc::clone(&bot))?;
        let bot_digest = self.bot_digest(&bot);
        let identity = bot.identity();
        let stored_bot = StoredBot {
            bot: bot_digest,
            sealed_token: self.key.seal(
                bot.token().authorization().as_bytes(),
                &token_context(&bot_digest),
            ),
            bot_id: identity.id,
            username: identity.username,
        };
        let session = StoredSession {
            session: self.key.session_digest(id.as_str()),
            bot: bot_digest,
            prefix: id.prefix().to_string(),
            last_used_ms: 0,
        };
        let now = unix_ms(SystemTime::now());
        if let Err(e) = self.write(|db| db.save_session(&stored_bot, &session, now)) {
            // Not on disk, so not given out.
            self.memory.remove_known(&Known::Id(id));
            return Err(e);
        }
        Ok(id)
    }

    fn get(&self, id: &SessionId) -> Result<Option<Arc<Bot>>, StoreError> {
        self.memory.get(id)
    }

    fn remove(&self, id: &SessionId) -> Result<Option<Arc<Bot>>, StoreError> {
        // Gone from disk first: a logout that was not written must not
        // come back after a restart.
        let digest = self.key.session_digest(id.as_str());
        self.write(|db| db.delete_sessions_synced(&[digest]))?;
        self.memory.remove(id)
    }

    fn sessions_of(&self, bot: &Arc<Bot>) -> Result<usize, StoreError> {
        self.memory.sessions_of(bot)
    }

    fn remove_bot(&self, bot: &Arc<Bot>) -> Result<Vec<String>, StoreError> {
        let digest = self.bot_digest(bot);
        self.write(|db| db.delete_bot(&digest))?;
        self.memory.remove_bot(bot)
    }

    fn sweep(&self) -> Vec<(String, Arc<Bot>)> {
        let ended = self.memory.sweep_ended();
        if !ended.is_empty() {
            let digests: Vec<Digest> = ended.iter().map(|e| self.digest(&e.key)).collect();
            // Left on disk, they are deleted at the next start, by the same
            // clock.
            let _ = self.write(|db| {
                db.delete_sessions(&digests)?;
                db.delete_unused_bots().map(drop)
            });
        }
        ended.into_iter().map(|e| (e.prefix, e.bot)).collect()
    }

    fn len(&self) -> usize {
        self.memory.len()
    }

    fn health(&self) -> Result<(), StoreError> {
        match &*self.broken.lock() {
            None => return Ok(()),
            Some((reason, checked)) if checked.elapsed() < PROBE_EVERY => {
                return Err(StoreError::Unavailable(reason.clone()));
            }
            Some(_) => {}
        }
        self.write(Database::probe)
    }

    fn flush(&self) {
        self.flush_last_use();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "5f0e1d2c3b4a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
    const TOKEN: &str = "MTA0.durable-test-token.Xy_z";
    const TIMEOUT: Duration = Duration::from_secs(60);

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("dbb-durable-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn open(dir: &Path, registry: &BotRegistry) -> Result<Arc<DurableStore>, String> {
        DurableStore::open(
            dir,
            Some(SessionKey::parse(KEY).unwrap()),
            registry,
            MemoryStore::new(100, 100, TIMEOUT),
            TIMEOUT,
        )
    }

    #[test]
    fn a_full_disk_answers_503_gives_no_session_and_heals_by_itself() {
        let dir = scratch("full");
        let registry = BotRegistry::new(50, 8);
        let store = open(&dir, &registry).unwrap();
        let bot = registry.get_or_create(Token::parse(TOKEN).unwrap());
        store.create(Arc::clone(&bot)).unwrap();
        store.db.lock().fill_up(true);
        let mut refused = None;
        for _ in 0..200 {
            if let Err(e) = store.create(Arc::clone(&bot)) {
                refused = Some(e);
                break;
            }
        }
        let Some(StoreError::Unavailable(reason)) = refused else {
            panic!("every login was written to a full file");
        };
        assert!(reason.contains("disk is full"), "{reason}");
        let held = store.len();
        assert!(store.health().is_err(), "/healthz says 503");
        store.db.lock().fill_up(false);
        std::thread::sleep(PROBE_EVERY);
        store.health().unwrap();
        store.create(Arc::clone(&bot)).unwrap();
        assert_eq!(store.len(), held + 1);
    }

    #[test]
    fn a_logout_that_cannot_be_written_keeps_the_session() {
        let dir = scratch("logout");
        let registry = BotRegistry::new(50, 8);
        let store = open(&dir, &registry).unwrap();
        let bot = registry.get_or_create(Token::parse(TOKEN).unwrap());
        let id = store.create(bot).unwrap();
        store.db.lock().refuse_writes(true);
        assert!(store.remove(&id).is_err());
        assert!(store.get(&id).unwrap().is_some(), "still served");
    }
}
