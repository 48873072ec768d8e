//! idempotency: `Idempotency-Key` records in Redis, so every instance
//! sees every key and two instances never both send one request.
//!
//! A claim is a Redis transaction (WATCH the key, read the record, decide
//! with `store::idempotency::decide`, write it in MULTI/EXEC): if another
//! instance wrote the key in between, EXEC fails and the claim is decided
//! again on what that instance wrote. Records expire with the key (Redis
//! TTL = what is left of `RETENTION`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use redis::Commands;
use sha2::{Digest, Sha256};

use crate::store::StoreError;
use crate::store::idempotency::{self, Claimed, Finished, IdempotencyStore, KeyScope, Record};
use crate::store::memory::unix_ms;
use crate::store::redis::RedisPool;
use crate::store::seal::hex;

const KEY_PREFIX: &str = "dbb:idem:";

pub struct RedisIdempotency {
    pool: Arc<RedisPool>,
}

impl RedisIdempotency {
    pub fn new(pool: Arc<RedisPool>) -> RedisIdempotency {
        RedisIdempotency { pool }
    }
}

/// The Redis key of a record: the bot's ID and SHA-256 of the client's key,
/// so Redis holds no client text.
fn redis_key(scope: KeyScope<'_>) -> String {
    format!(
        "{KEY_PREFIX}{}:{}",
        scope.bot,
        hex(&Sha256::digest(scope.key.as_bytes()))
    )
}

/// Milliseconds the record has left to live.
fn ttl_ms(record: &Record, now_ms: i64) -> u64 {
    let left = record.created_ms + idempotency::RETENTION.as_millis() as i64 - now_ms;
    left.max(1) as u64
}

fn read(con: &mut redis::Connection, key: &str, now_ms: i64) -> redis::RedisResult<Option<Record>> {
    let bytes: Option<Vec<u8>> = con.get(key)?;
    Ok(bytes
        .and_then(|b| Record::decode(&b))
        .filter(|record| !record.expired(now_ms)))
}

impl IdempotencyStore for RedisIdempotency {
    fn claim(
        &self,
        scope: KeyScope<'_>,
        fingerprint: &idempotency::Fingerprint,
        nonce: &str,
        lease: Duration,
    ) -> Result<Claimed, StoreError> {
        let key = redis_key(scope);
        self.pool.run(|con| {
            redis::transaction(con, &[&key], |con, pipe| {
                let now_ms = unix_ms(SystemTime::now());
                let existing = read(con, &key, now_ms)?;
                let (record, claimed) =
                    idempotency::decide(existing.as_ref(), fingerprint, nonce, lease, now_ms);
                let Some(record) = record else {
                    return Ok(Some(claimed));
                };
                let written: Option<()> = pipe
                    .pset_ex(&key, record.encode(), ttl_ms(&record, now_ms))
                    .ignore()
                    .query(con)?;
                Ok(written.map(|()| claimed))
            })
        })
    }

    fn finish(&self, scope: KeyScope<'_>, finished: Finished) -> Result<(), StoreError> {
        let key = redis_key(scope);
        self.pool.run(|con| {
            let now_ms = unix_ms(SystemTime::now());
            let Some(record) = read(con, &key, now_ms)? else {
                return Ok(());
            };
            let record = record.finished(finished, now_ms);
            con.pset_ex(&key, record.encode(), ttl_ms(&record, now_ms))
        })
    }

    fn release(&self, scope: KeyScope<'_>) {
        let key = redis_key(scope);
        if let Err(e) = self.pool.run(|con| con.del::<_, ()>(&key)) {
            log::warn!("cannot release an idempotency key: {e:?}");
        }
    }
}
