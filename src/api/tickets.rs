//! tickets: `POST /api/events/tickets`, a stream ticket for a client that
//! cannot send headers (a browser's `EventSource`): single use, 60 seconds,
//! never logged (API.md, "Events").
//!
//! Why not the session ID in the URL: URLs end up in logs, history and
//! proxies; a ticket found there is already spent or expired.
//!
//! Invariants: at most `MAX_TICKETS` live at once (expired ones are swept
//! as new ones are made); a ticket is taken out of the map when used, so a
//! second use finds nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::store::SessionId;

/// API.md: "single use, 60 seconds".
pub const LIFETIME: Duration = Duration::from_secs(60);
/// Bounds the map: one client cannot grow it without end.
const MAX_TICKETS: usize = 100_000;

#[derive(Default)]
pub struct Tickets {
    live: Mutex<HashMap<String, (SessionId, Instant)>>,
}

impl Tickets {
    /// A new ticket for `session`, or `None` when too many are live.
    pub fn issue(&self, session: SessionId) -> Option<String> {
        let now = Instant::now();
        let mut live = self.live.lock();
        if live.len() >= MAX_TICKETS {
            live.retain(|_, (_, expires)| *expires > now);
            if live.len() >= MAX_TICKETS {
                return None;
            }
        }
        let ticket = nanoid::nanoid!(32);
        live.insert(ticket.clone(), (session, now + LIFETIME));
        Some(ticket)
    }

    /// The ticket's session, once: the ticket is spent whether or not it
    /// had expired.
    pub fn redeem(&self, ticket: &str) -> Option<SessionId> {
        let (session, expires) = self.live.lock().remove(ticket)?;
        (expires > Instant::now()).then_some(session)
    }
}

/// A request target as logs may show it: the value of `ticket=` replaced
/// (API.md, "Logging": "with `ticket` redacted").
pub fn redact(target: &str) -> std::borrow::Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return target.into();
    };
    if !query.split('&').any(|pair| pair.starts_with("ticket=")) {
        return target.into();
    }
    let query: Vec<&str> = query
        .split('&')
        .map(|pair| {
            if pair.starts_with("ticket=") {
                "ticket=<redacted>"
            } else {
                pair
            }
        })
        .collect();
    format!("{path}?{}", query.join("&")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SessionId {
        SessionId::parse("V1StGXR8_Z5jdHi6B-myT").unwrap()
    }

    #[test]
    fn a_ticket_works_once() {
        let tickets = Tickets::default();
        let ticket = tickets.issue(session()).unwrap();
        assert_eq!(tickets.redeem(&ticket), Some(session()));
        assert_eq!(tickets.redeem(&ticket), None);
        assert_eq!(tickets.redeem("never-issued"), None);
    }

    #[test]
    fn tickets_are_redacted_from_logged_targets() {
        assert_eq!(
            redact("/api/events?types=A&ticket=s3cr3t&guildId=1"),
            "/api/events?types=A&ticket=<redacted>&guildId=1"
        );
        assert_eq!(redact("/api/events?types=A"), "/api/events?types=A");
        assert_eq!(redact("/api/events"), "/api/events");
    }
}
