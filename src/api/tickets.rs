//! tickets: `POST /api/events/tickets`, a stream ticket for a client that
//! cannot send headers (a browser's `EventSource`): single use, 60 seconds,
//! never logged (API.md, "Events").
//!
//! Why not the session ID in the URL: URLs end up in logs, history and
//! proxies; a ticket found there is already spent or expired.
//!
//! The tickets themselves live in the store (`store::tickets`), so any
//! instance of a cluster redeems them; this is how logs show them.

pub use crate::store::tickets::LIFETIME;

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
