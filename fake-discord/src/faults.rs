//! Queued fault injection for Discord-route requests.
//!
//! Why it exists: the service must survive Discord's bad days (5xx, hung or
//! dropped connections, HTML error pages, unexpected 429s). Tests queue a
//! fault through the control API; the next matching requests get it instead
//! of (or, for `latency`, in addition to) the real answer.
//!
//! The `write_then_*` kinds model the ambiguous outcome of a write: Discord
//! performed it, but the client never learns (a timeout, a reset, a 502 from
//! a proxy). They are what `enforce_nonce` exists for (WRITES-NOTES §3.6).
//! `sublimit_429` is the channel-wide write limit, code 20028
//! (discord-api-docs PR #8290).
//!
//! Invariant: faults are consumed in the order they were queued; a request
//! consumes at most one fault (the first queued one whose `path_contains`
//! matches), and a fault with `count` N is applied to exactly N requests.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};

/// How long a `hang` lasts when the fault gives no `ms`.
pub const DEFAULT_HANG: Duration = Duration::from_secs(60);
/// `retry_after` of injected 429s when the fault gives none, in seconds.
pub const DEFAULT_RETRY_AFTER: f64 = 1.0;
/// `retry_after` of `sublimit_429` when the fault gives none: the value in
/// Discord's 20028 example (discord-api-docs PR #8290).
pub const SUBLIMIT_RETRY_AFTER: f64 = 0.3;

/// The misbehaviours the fake can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Status500,
    Status502,
    Status503,
    Hang,
    Drop,
    NotJson,
    Latency,
    Shared429,
    User429,
    Global429,
    /// Cloudflare's 429 in front of Discord: HTML, only `Retry-After`.
    Cloudflare429,
    /// The request is performed, then the connection hangs.
    WriteThenHang,
    /// The request is performed, then the connection is closed unanswered.
    WriteThenDrop,
    /// The request is performed, then a 502 is answered.
    WriteThen502,
    /// The channel's shared write limit (20028), scope `shared`.
    Sublimit429,
}

impl FaultKind {
    /// Every kind, for error messages and the README.
    pub const ALL: [FaultKind; 15] = [
        FaultKind::Status500,
        FaultKind::Status502,
        FaultKind::Status503,
        FaultKind::Hang,
        FaultKind::Drop,
        FaultKind::NotJson,
        FaultKind::Latency,
        FaultKind::Shared429,
        FaultKind::User429,
        FaultKind::Global429,
        FaultKind::Cloudflare429,
        FaultKind::WriteThenHang,
        FaultKind::WriteThenDrop,
        FaultKind::WriteThen502,
        FaultKind::Sublimit429,
    ];

    /// The kind's name in the control API.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Status500 => "status_500",
            FaultKind::Status502 => "status_502",
            FaultKind::Status503 => "status_503",
            FaultKind::Hang => "hang",
            FaultKind::Drop => "drop",
            FaultKind::NotJson => "not_json",
            FaultKind::Latency => "latency",
            FaultKind::Shared429 => "shared_429",
            FaultKind::User429 => "user_429",
            FaultKind::Global429 => "global_429",
            FaultKind::Cloudflare429 => "cloudflare_429",
            FaultKind::WriteThenHang => "write_then_hang",
            FaultKind::WriteThenDrop => "write_then_drop",
            FaultKind::WriteThen502 => "write_then_502",
            FaultKind::Sublimit429 => "sublimit_429",
        }
    }

    /// Whether the real request is performed before the fault strikes.
    pub fn performs_request(self) -> bool {
        matches!(
            self,
            FaultKind::Latency
                | FaultKind::WriteThenHang
                | FaultKind::WriteThenDrop
                | FaultKind::WriteThen502
        )
    }

    fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One queued fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Requests this fault still applies to.
    pub remaining: u64,
    /// Applies only to requests whose target contains this substring.
    pub path_contains: Option<String>,
    /// Duration for `hang`, `write_then_hang` and `latency`.
    pub ms: Option<u64>,
    /// `retry_after` seconds for the injected 429 kinds.
    pub retry_after: Option<f64>,
}

impl Fault {
    /// Parses a control-API fault body (see README.md).
    pub fn from_json(body: &Value) -> Result<Fault, String> {
        let kind_name = body
            .get("kind")
            .and_then(Value::as_str)
            .ok_or("\"kind\" (string) is required")?;
        let kind = FaultKind::parse(kind_name).ok_or_else(|| {
            let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
            format!(
                "unknown kind {kind_name:?}; expected one of {}",
                names.join(", ")
            )
        })?;
        let count = match body.get("count") {
            None | Some(Value::Null) => 1,
            Some(v) => v
                .as_u64()
                .filter(|&n| n >= 1)
                .ok_or("\"count\" must be an integer >= 1")?,
        };
        let path_contains = match body.get("path_contains") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("\"path_contains\" must be a string".into()),
        };
        let ms = match body.get("ms") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or("\"ms\" must be a non-negative integer")?),
        };
        let retry_after = match body.get("retry_after") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .filter(|f| f.is_finite() && *f > 0.0)
                    .ok_or("\"retry_after\" must be a positive number")?,
            ),
        };
        Ok(Fault {
            kind,
            remaining: count,
            path_contains,
            ms,
            retry_after,
        })
    }

    /// The queued fault as JSON (for `GET /_fake/faults`).
    pub fn to_json(&self) -> Value {
        json!({
            "kind": self.kind.name(),
            "remaining": self.remaining,
            "path_contains": self.path_contains,
            "ms": self.ms,
            "retry_after": self.retry_after,
        })
    }

    /// `retry_after` for injected 429s.
    pub fn retry_after_secs(&self) -> f64 {
        self.retry_after
            .unwrap_or(if self.kind == FaultKind::Sublimit429 {
                SUBLIMIT_RETRY_AFTER
            } else {
                DEFAULT_RETRY_AFTER
            })
    }
}

/// The FIFO of pending faults.
#[derive(Debug, Default)]
pub struct FaultQueue {
    queue: Mutex<Vec<Fault>>,
}

impl FaultQueue {
    pub fn push(&self, fault: Fault) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(fault);
    }

    pub fn clear(&self) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub fn pending(&self) -> Vec<Fault> {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Consumes one application of the first fault matching `target`.
    pub fn take(&self, target: &str) -> Option<Fault> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let index = queue.iter().position(|f| {
            f.path_contains
                .as_deref()
                .is_none_or(|needle| target.contains(needle))
        })?;
        let fault = &mut queue[index];
        fault.remaining -= 1;
        let taken = fault.clone();
        if fault.remaining == 0 {
            queue.remove(index);
        }
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_count_times_in_queue_order_with_filters() {
        let q = FaultQueue::default();
        q.push(Fault::from_json(&json!({"kind": "drop", "path_contains": "/guilds/"})).unwrap());
        q.push(Fault::from_json(&json!({"kind": "status_500", "count": 2})).unwrap());
        assert_eq!(
            q.take("/api/v10/users/@me").unwrap().kind,
            FaultKind::Status500
        );
        assert_eq!(
            q.take("/api/v10/guilds/1/members").unwrap().kind,
            FaultKind::Drop
        );
        assert_eq!(
            q.take("/api/v10/guilds/1/members").unwrap().kind,
            FaultKind::Status500
        );
        assert!(q.take("/api/v10/users/@me").is_none());
    }

    #[test]
    fn rejects_bad_bodies() {
        assert!(Fault::from_json(&json!({"kind": "explode"})).is_err());
        assert!(Fault::from_json(&json!({"kind": "hang", "count": 0})).is_err());
        assert!(Fault::from_json(&json!({"kind": "user_429", "retry_after": -1})).is_err());
    }

    #[test]
    fn sublimit_defaults_to_discords_example_retry_after() {
        let f = Fault::from_json(&json!({"kind": "sublimit_429"})).unwrap();
        assert_eq!(f.retry_after_secs(), SUBLIMIT_RETRY_AFTER);
        let f = Fault::from_json(&json!({"kind": "write_then_502"})).unwrap();
        assert!(f.kind.performs_request());
    }
}
