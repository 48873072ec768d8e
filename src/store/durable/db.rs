//! db: the SQLite file of `--data-dir` (`state.db`), its numbered
//! migrations, and the few statements the durable store runs.
//!
//! The schema, version 1 (`MIGRATIONS[0]`):
//!
//! | table | key | holds |
//! |---|---|---|
//! | `meta` | `key` | `key_check`: a keyed digest that tells whether the sealing key is the one the data was written with |
//! | `bots` | `bot` = HMAC(bot subkey, token) | the token sealed (ChaCha20-Poly1305, bound to `bot`), the bot's id and name |
//! | `sessions` | `session` = HMAC(session subkey, session ID) | its `bot`, the ID's 6-character log prefix, creation and last use (Unix ms) |
//!
//! Version 2 (`MIGRATIONS[1]`) adds `idempotency`: keyed by the bot's
//! Discord ID and SHA-256 of the `Idempotency-Key`, the record
//! (`store::idempotency::Record::encode`: request digest, nonce, state,
//! the answer) and its creation time, for expiry.
//!
//! Version 3 (`MIGRATIONS[2]`) adds `gateway`: per bot's Discord ID, the
//! events' checkpoint (`events::checkpoint`): the last event ID, whether a
//! graceful stop wrote it, and the shards' Gateway sessions (session ID,
//! sequence, resume URL) sealed as JSON, bound to the bot.
//!
//! What later features add, each in a migration of its own and keyed the
//! same way (by `bot`, never by a token or a session ID):
//! webhook subscriptions (`bot`, URL, the secret sealed like a token) and
//! their deliveries (pending and past, with attempts).
//!
//! Architecture invariants: no value here is a secret in clear (tokens are
//! sealed, session IDs digested); migrations only add, and run in order in
//! one transaction each, with `PRAGMA user_version` as the version; a file
//! from a newer version is refused, never changed.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use crate::store::StoreError;
use crate::store::memory::Digest;

/// Each entry takes the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE bots (
    bot BLOB PRIMARY KEY,
    sealed_token BLOB NOT NULL,
    bot_id TEXT NOT NULL,
    username TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE sessions (
    session BLOB PRIMARY KEY,
    bot BLOB NOT NULL REFERENCES bots(bot) ON DELETE CASCADE,
    prefix TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    last_used_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_by_bot ON sessions(bot);
",
    r"
CREATE TABLE idempotency (
    bot INTEGER NOT NULL,
    key_hash BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (bot, key_hash)
) WITHOUT ROWID;
CREATE INDEX idempotency_by_age ON idempotency(created_ms);
",
    r"
CREATE TABLE gateway (
    bot INTEGER PRIMARY KEY,
    last_id INTEGER NOT NULL,
    clean INTEGER NOT NULL,
    sealed_resume BLOB NOT NULL
);
",
];

/// How long a statement waits for the file's lock (only this process
/// writes, but a backup tool may read).
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// A bot as stored.
pub struct StoredBot {
    pub bot: Digest,
    pub sealed_token: Vec<u8>,
    pub bot_id: String,
    pub username: String,
}

/// A session as stored.
pub struct StoredSession {
    pub session: Digest,
    pub bot: Digest,
    pub prefix: String,
    pub last_used_ms: i64,
}

pub struct Database {
    conn: Connection,
}

impl Database {
    /// Opens (or makes) the file and brings its schema up to date. Every
    /// error is one line that names the file and what to do.
    pub fn open(path: &Path) -> Result<Database, String> {
        let shown = path.display();
        let unusable = |e: rusqlite::Error| {
            format!(
                "{shown} is not a usable SQLite database ({e}): restore it from a backup or \
                 move it away; nothing was changed"
            )
        };
        // Made owner-only before SQLite sees it (an empty file is an empty
        // database); SQLite gives its -wal and -shm files the same mode.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("cannot open {shown}: {e}"))?;
        let conn = Connection::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(unusable)?;
        // Reading the schema is the first read: a file that is not SQLite
        // fails here, before anything is written to it.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(unusable)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(format!(
                "{shown} was written by a newer discord-bot-backend (schema {version}; this one \
                 knows up to {known}): run that version or a newer one; nothing was changed"
            ));
        }
        // WAL: readers never wait for the writer, and a crash loses no
        // committed write. NORMAL syncs at checkpoints, not at each commit:
        // a crash of the process loses nothing, a power cut the last
        // commits at most (the file stays consistent either way); logouts
        // sync at once (`delete_sessions_synced`).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(unusable)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(unusable)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(unusable)?;
        let mut db = Database { conn };
        for (at, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            db.migrate(at as i64 + 1, migration)
                .map_err(|e| format!("cannot update the schema of {shown}: {e}"))?;
        }
        Ok(db)
    }

    fn migrate(&mut self, to: i64, sql: &str) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", to)?;
        tx.commit()
    }

    /// The key check stored at the first start, if any: whether the file
    /// holds data sealed with some key.
    pub fn key_check(&self) -> Result<Option<Vec<u8>>, String> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'key_check'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| format!("cannot read the database: {e}"))
    }

    pub fn set_key_check(&self, check: &[u8]) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('key_check', ?1)",
                params![check],
            )
            .map(drop)
            .map_err(|e| format!("cannot write the database: {e}"))
    }

    pub fn bots(&self) -> Result<Vec<StoredBot>, String> {
        self.read_all(
            "SELECT bot, sealed_token, bot_id, username FROM bots",
            |row| {
                Ok(StoredBot {
                    bot: digest(row.get(0)?),
                    sealed_token: row.get(1)?,
                    bot_id: row.get(2)?,
                    username: row.get(3)?,
                })
            },
        )
    }

    pub fn sessions(&self) -> Result<Vec<StoredSession>, String> {
        self.read_all(
            "SELECT session, bot, prefix, last_used_ms FROM sessions",
            |row| {
                Ok(StoredSession {
                    session: digest(row.get(0)?),
                    bot: digest(row.get(1)?),
                    prefix: row.get(2)?,
                    last_used_ms: row.get(3)?,
                })
            },
        )
    }

    fn read_all<T>(
        &self,
        sql: &str,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, String> {
        self.conn
            .prepare(sql)
            .and_then(|mut statement| statement.query_map([], row)?.collect())
            .map_err(|e| format!("cannot read the database: {e}"))
    }

    /// A login: the bot (sealed token kept if the bot is known) and the
    /// session, in one transaction.
    pub fn save_session(
        &mut self,
        bot: &StoredBot,
        session: &StoredSession,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(unwritable)?;
        tx.execute(
            "INSERT INTO bots (bot, sealed_token, bot_id, username) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (bot) DO UPDATE SET bot_id = excluded.bot_id, username = excluded.username",
            params![&bot.bot[..], bot.sealed_token, bot.bot_id, bot.username],
        )
        .map_err(unwritable)?;
        tx.execute(
            "INSERT INTO sessions (session, bot, prefix, created_ms, last_used_ms)
             VALUES (?1, ?2, ?3, ?4, ?4)",
            params![&session.session[..], &bot.bot[..], session.prefix, now_ms],
        )
        .map_err(unwritable)?;
        tx.commit().map_err(unwritable)
    }

    pub fn delete_sessions(&mut self, sessions: &[Digest]) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(unwritable)?;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM sessions WHERE session = ?1")
                .map_err(unwritable)?;
            for session in sessions {
                delete.execute(params![&session[..]]).map_err(unwritable)?;
            }
        }
        tx.commit().map_err(unwritable)
    }

    /// A logout: deleted and synced to the disk before it is answered, so
    /// not even a power cut brings the session back (other writes sync at
    /// checkpoints only).
    pub fn delete_sessions_synced(&mut self, sessions: &[Digest]) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(unwritable)?;
        let deleted = self.delete_sessions(sessions);
        let restored = self.conn.pragma_update(None, "synchronous", "NORMAL");
        deleted?;
        restored.map_err(unwritable)
    }

    /// An idempotency record, if one is stored.
    pub fn idempotency(
        &self,
        bot: u64,
        key_hash: &[u8; 32],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .prepare_cached("SELECT record FROM idempotency WHERE bot = ?1 AND key_hash = ?2")
            .and_then(|mut select| {
                select
                    .query_row(params![bot as i64, &key_hash[..]], |row| row.get(0))
                    .optional()
            })
            .map_err(unwritable)
    }

    pub fn put_idempotency(
        &mut self,
        bot: u64,
        key_hash: &[u8; 32],
        created_ms: i64,
        record: &[u8],
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO idempotency (bot, key_hash, created_ms, record) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (bot, key_hash) DO UPDATE SET created_ms = excluded.created_ms,
                 record = excluded.record",
            )
            .and_then(|mut put| put.execute(params![bot as i64, &key_hash[..], created_ms, record]))
            .map(drop)
            .map_err(unwritable)
    }

    pub fn delete_idempotency(&mut self, bot: u64, key_hash: &[u8; 32]) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM idempotency WHERE bot = ?1 AND key_hash = ?2",
                params![bot as i64, &key_hash[..]],
            )
            .map(drop)
            .map_err(unwritable)
    }

    /// Deletes the records created before `before_ms`; returns how many.
    pub fn expire_idempotency(&mut self, before_ms: i64) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM idempotency WHERE created_ms < ?1",
                params![before_ms],
            )
            .map_err(unwritable)
    }

    /// The bot's events checkpoint: `(last_id, clean, sealed_resume)`.
    pub fn checkpoint(&self, bot: u64) -> Result<Option<(u64, bool, Vec<u8>)>, StoreError> {
        self.conn
            .prepare_cached("SELECT last_id, clean, sealed_resume FROM gateway WHERE bot = ?1")
            .and_then(|mut select| {
                select
                    .query_row(params![bot as i64], |row| {
                        Ok((row.get::<_, i64>(0)? as u64, row.get(1)?, row.get(2)?))
                    })
                    .optional()
            })
            .map_err(unwritable)
    }

    pub fn put_checkpoint(
        &mut self,
        bot: u64,
        last_id: u64,
        clean: bool,
        sealed_resume: &[u8],
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO gateway (bot, last_id, clean, sealed_resume) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (bot) DO UPDATE SET last_id = excluded.last_id,
                 clean = excluded.clean, sealed_resume = excluded.sealed_resume",
            )
            .and_then(|mut put| {
                put.execute(params![bot as i64, last_id as i64, clean, sealed_resume])
            })
            .map(drop)
            .map_err(unwritable)
    }

    /// A bot whose token Discord rejected: it and its sessions go.
    pub fn delete_bot(&mut self, bot: &Digest) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM bots WHERE bot = ?1", params![&bot[..]])
            .map(drop)
            .map_err(unwritable)
    }

    /// Bots no session holds any more: their sealed tokens need not stay.
    pub fn delete_unused_bots(&mut self) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM bots WHERE NOT EXISTS
                 (SELECT 1 FROM sessions WHERE sessions.bot = bots.bot)",
                [],
            )
            .map_err(unwritable)
    }

    /// Last uses kept in memory since the last flush.
    pub fn touch(&mut self, used: &[(Digest, i64)]) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(unwritable)?;
        {
            let mut update = tx
                .prepare_cached(
                    "UPDATE sessions SET last_used_ms = ?2
                     WHERE session = ?1 AND last_used_ms < ?2",
                )
                .map_err(unwritable)?;
            for (session, at) in used {
                update
                    .execute(params![&session[..], at])
                    .map_err(unwritable)?;
            }
        }
        tx.commit().map_err(unwritable)
    }

    /// A write that changes nothing visible, to see whether writes work
    /// again (`/healthz` after a full disk).
    pub fn probe(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('probe', zeroblob(64))
                 ON CONFLICT (key) DO UPDATE SET value = zeroblob(64)",
                [],
            )
            .map(drop)
            .map_err(unwritable)
    }

    /// Refuses every write, as a file turned read-only would (tests).
    #[cfg(test)]
    pub fn refuse_writes(&self, refuse: bool) {
        self.conn.pragma_update(None, "query_only", refuse).unwrap();
    }

    /// Caps the file at its current size, as a full disk would (tests).
    #[cfg(test)]
    pub fn fill_up(&self, full: bool) {
        let pages: i64 = self
            .conn
            .query_row("PRAGMA page_count", [], |row| row.get(0))
            .unwrap();
        let cap = if full { pages } else { 1 << 30 };
        self.conn
            .pragma_update(None, "max_page_count", cap)
            .unwrap();
    }
}

fn digest(bytes: Vec<u8>) -> Digest {
    let mut out = [0u8; 32];
    if bytes.len() == 32 {
        out.copy_from_slice(&bytes);
    }
    out
}

/// A failed write, as clients and `/healthz` see it: what is wrong, not
/// where.
fn unwritable(error: rusqlite::Error) -> StoreError {
    let reason = match error.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => "the disk is full".to_string(),
        Some(ErrorCode::ReadOnly) => "it is read-only".to_string(),
        Some(ErrorCode::CannotOpen | ErrorCode::SystemIoFailure) => {
            "the disk failed a read or write".to_string()
        }
        _ => error.to_string(),
    };
    StoreError::Unavailable(format!("the database cannot be written: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("dbb-db-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("state.db")
    }

    fn bot(n: u8) -> StoredBot {
        StoredBot {
            bot: [n; 32],
            sealed_token: vec![n; 40],
            bot_id: format!("9000{n}"),
            username: format!("bot{n}"),
        }
    }

    fn session(n: u8, bot: u8) -> StoredSession {
        StoredSession {
            session: [n; 32],
            bot: [bot; 32],
            prefix: "abcdef".into(),
            last_used_ms: 0,
        }
    }

    #[test]
    fn sessions_and_bots_round_trip_and_a_bot_takes_its_sessions_with_it() {
        let path = scratch("round-trip");
        let mut db = Database::open(&path).unwrap();
        db.save_session(&bot(1), &session(10, 1), 1_000).unwrap();
        db.save_session(&bot(1), &session(11, 1), 2_000).unwrap();
        db.touch(&[([10; 32], 5_000)]).unwrap();
        drop(db);
        let mut db = Database::open(&path).unwrap();
        assert_eq!(db.bots().unwrap().len(), 1);
        let sessions = db.sessions().unwrap();
        assert_eq!(sessions.len(), 2);
        let touched = sessions.iter().find(|s| s.session == [10; 32]).unwrap();
        assert_eq!(touched.last_used_ms, 5_000);
        db.delete_bot(&[1; 32]).unwrap();
        assert!(db.sessions().unwrap().is_empty());
    }

    #[test]
    fn the_database_and_its_log_are_readable_by_the_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let path = scratch("mode");
        let mut db = Database::open(&path).unwrap();
        db.save_session(&bot(1), &session(1, 1), 1).unwrap();
        for file in [path.clone(), path.with_extension("db-wal")] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
    }

    #[test]
    fn a_file_from_a_newer_version_is_refused_and_left_alone() {
        let path = scratch("newer");
        drop(Database::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let before = std::fs::read(&path).unwrap();
        let Err(refused) = Database::open(&path) else {
            panic!("opened a newer schema");
        };
        assert!(refused.contains("newer"), "{refused}");
        assert!(
            std::fs::read(&path).unwrap() == before,
            "the file was changed"
        );
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
        let path = scratch("corrupt");
        std::fs::write(&path, b"this is not a database, just bytes ".repeat(200)).unwrap();
        let before = std::fs::read(&path).unwrap();
        let Err(refused) = Database::open(&path) else {
            panic!("opened garbage");
        };
        assert!(
            refused.contains("not a usable SQLite database"),
            "{refused}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_full_disk_fails_writes_with_a_reason_and_they_work_again_after() {
        let path = scratch("full");
        let mut db = Database::open(&path).unwrap();
        db.fill_up(true);
        let mut failed = None;
        for n in 0..200 {
            if let Err(e) = db.save_session(&bot(n), &session(n, n), 1) {
                failed = Some(e);
                break;
            }
        }
        let Some(StoreError::Unavailable(reason)) = failed else {
            panic!("a capped file took every write");
        };
        assert!(reason.contains("disk is full"), "{reason}");
        assert!(db.probe().is_err() || db.save_session(&bot(201), &session(201, 201), 1).is_err());
        db.fill_up(false);
        db.save_session(&bot(202), &session(202, 202), 1).unwrap();
        db.probe().unwrap();
    }
}
