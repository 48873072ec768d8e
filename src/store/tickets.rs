//! tickets: stream tickets (`POST /api/events/tickets`), behind a seam so
//! a ticket made on one instance of a cluster opens a stream on any other
//! (`redis::tickets`); `MemoryTickets` is this process only.
//!
//! Invariants: a ticket is spent by its first use, expired or not; it
//! lives `LIFETIME`; the memory store holds at most `MAX_TICKETS` (expired
//! ones are swept as new ones are made).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::store::{SessionId, StoreError};

/// API.md: "single use, 60 seconds".
pub const LIFETIME: Duration = Duration::from_secs(60);
/// Bounds the map: one client cannot grow it without end.
const MAX_TICKETS: usize = 100_000;

pub trait TicketStore: Send + Sync {
    /// A new ticket for `session`; `None` when too many are live.
    fn issue(&self, session: &SessionId) -> Result<Option<String>, StoreError>;
    /// The ticket's session, once.
    fn redeem(&self, ticket: &str) -> Result<Option<SessionId>, StoreError>;
}

/// A ticket: 32 characters of nanoid's alphabet (190 bits).
pub fn new_ticket() -> String {
    nanoid::nanoid!(32)
}

#[derive(Default)]
pub struct MemoryTickets {
    live: Mutex<HashMap<String, (SessionId, Instant)>>,
}

impl TicketStore for MemoryTickets {
    fn issue(&self, session: &SessionId) -> Result<Option<String>, StoreError> {
        let now = Instant::now();
        let mut live = self.live.lock();
        if live.len() >= MAX_TICKETS {
            live.retain(|_, (_, expires)| *expires > now);
            if live.len() >= MAX_TICKETS {
                return Ok(None);
            }
        }
        let ticket = new_ticket();
        live.insert(ticket.clone(), (session.clone(), now + LIFETIME));
        Ok(Some(ticket))
    }

    fn redeem(&self, ticket: &str) -> Result<Option<SessionId>, StoreError> {
        let Some((session, expires)) = self.live.lock().remove(ticket) else {
            return Ok(None);
        };
        Ok((expires > Instant::now()).then_some(session))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SessionId {
        SessionId::parse("V1StGXR8_Z5jdHi6B-myT").unwrap()
    }

    #[test]
    fn a_ticket_works_once() {
        let tickets = MemoryTickets::default();
        let ticket = tickets.issue(&session()).unwrap().unwrap();
        assert_eq!(tickets.redeem(&ticket).unwrap(), Some(session()));
        assert_eq!(tickets.redeem(&ticket).unwrap(), None);
        assert_eq!(tickets.redeem("never-issued").unwrap(), None);
    }
}
