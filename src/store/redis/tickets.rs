//! store::redis::tickets: stream tickets shared by every instance, so a
//! browser whose ticket request and stream land on different instances
//! behind a load balancer still gets its stream.
//!
//! `dbb:ticket:<HMAC(ticket)>` holds the session ID sealed to that key, for
//! `LIFETIME`; redeeming is one script that reads and deletes it, so two
//! instances never both accept one ticket. Neither the ticket nor the
//! session ID is in Redis in clear.

use std::sync::Arc;

use redis::Script;

use crate::store::redis::RedisPool;
use crate::store::seal::SessionKey;
use crate::store::tickets::{LIFETIME, TicketStore, new_ticket};
use crate::store::{SessionId, StoreError};

const TAKE: &str = r"
local value = redis.call('GET', KEYS[1])
if value then redis.call('DEL', KEYS[1]) end
return value
";

pub struct RedisTickets {
    pool: Arc<RedisPool>,
    key: SessionKey,
    take: Script,
}

impl RedisTickets {
    pub fn new(pool: Arc<RedisPool>, key: SessionKey) -> RedisTickets {
        RedisTickets {
            pool,
            key,
            take: Script::new(TAKE),
        }
    }

    fn redis_key(&self, ticket: &str) -> String {
        format!("dbb:ticket:{}", self.key.session_hash(ticket))
    }
}

impl TicketStore for RedisTickets {
    fn issue(&self, session: &SessionId) -> Result<Option<String>, StoreError> {
        let ticket = new_ticket();
        let name = self.redis_key(&ticket);
        let sealed = self.key.seal(session.as_str().as_bytes(), name.as_bytes());
        self.pool.run(|c| {
            redis::cmd("SET")
                .arg(&name)
                .arg(sealed)
                .arg("PX")
                .arg(LIFETIME.as_millis() as u64)
                .query::<()>(c)
        })?;
        Ok(Some(ticket))
    }

    fn redeem(&self, ticket: &str) -> Result<Option<SessionId>, StoreError> {
        let name = self.redis_key(ticket);
        let sealed: Option<Vec<u8>> = self.pool.run(|c| self.take.key(&name).invoke(c))?;
        Ok(sealed
            .and_then(|sealed| self.key.open(&sealed, name.as_bytes()))
            .and_then(|plain| String::from_utf8(plain).ok())
            .and_then(|text| SessionId::parse(&text)))
    }
}
