//! The request log and statistics behind `GET /_fake/requests` and
//! `GET /_fake/stats`.
//!
//! Why it exists: end-to-end tests assert on what the service actually sent
//! (headers, cursors, pacing), which only the server side can see.
//!
//! Invariants:
//! - entries are appended under one lock and stamped inside it, so `at_ms`
//!   never decreases along the log and sequence numbers are dense;
//! - statistics are kept incrementally and stay exact after the log reaches
//!   [`MAX_LOG_ENTRIES`] (later entries are then counted, not stored).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Entries kept for `GET /_fake/requests`; enough for any test, bounded for
/// long benchmarks.
pub const MAX_LOG_ENTRIES: usize = 500_000;
/// The window of `max_in_any_second`.
const SECOND: Duration = Duration::from_secs(1);

/// Bodies up to this size are kept in the log as text (when UTF-8).
pub const MAX_LOGGED_BODY: usize = 64 * 1024;

/// What is known about a request when it is answered (or deliberately not).
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub method: String,
    pub target: String,
    pub bot_id: Option<u64>,
    pub user_agent: Option<String>,
    pub authorization_scheme_ok: bool,
    /// `None` when the connection was hung up or dropped without a response.
    pub status: Option<u16>,
    /// `X-RateLimit-Scope` of a 429.
    pub scope: Option<String>,
    /// Name of the injected fault, if any.
    pub fault: Option<&'static str>,
    /// Lowercase names of every request header, in order.
    pub headers: Vec<String>,
    pub content_type: Option<String>,
    /// Body bytes received (0 when an oversize body was not read).
    pub body_len: usize,
    /// FNV-1a 64 of the body, 16 hex digits.
    pub body_hash: String,
    /// The body when UTF-8 and at most [`MAX_LOGGED_BODY`] bytes.
    pub body: Option<String>,
    /// `X-Audit-Log-Reason` as received, and percent-decoded once.
    pub audit_log_reason: Option<String>,
    pub audit_log_reason_decoded: Option<String>,
    /// `nonce` from the JSON body or `payload_json`.
    pub nonce: Option<Value>,
}

/// FNV-1a, 64 bits, as 16 lowercase hex digits: enough to tell whether two
/// uploads were byte-identical.
pub fn fnv1a_hex(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    at: Duration,
    record: Record,
}

#[derive(Debug, Default)]
struct Inner {
    entries: Vec<Entry>,
    total: u64,
    by_status: BTreeMap<u16, u64>,
    no_response: u64,
    limited: BTreeMap<String, u64>,
    /// Per bot: times of non-429 answers in the trailing second, and the most
    /// ever seen in one such window.
    windows: HashMap<u64, (VecDeque<Duration>, u64)>,
}

/// The shared recorder.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    inner: Mutex<Inner>,
}

impl Recorder {
    /// `start` is the process start; `at_ms` counts from it.
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            start,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Clears the log and all statistics (`at_ms` keeps counting from start).
    pub fn reset(&self) {
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner) = Inner::default();
    }

    /// Appends a request to the log and updates the statistics.
    pub fn record(&self, record: Record) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let at = self.start.elapsed();
        inner.total += 1;
        match record.status {
            Some(status) => *inner.by_status.entry(status).or_default() += 1,
            None => inner.no_response += 1,
        }
        if let Some(scope) = &record.scope {
            *inner.limited.entry(scope.clone()).or_default() += 1;
        }
        if let (Some(bot), Some(status)) = (record.bot_id, record.status)
            && status != 429
        {
            let (recent, max) = inner.windows.entry(bot).or_default();
            while recent.front().is_some_and(|&t| at - t >= SECOND) {
                recent.pop_front();
            }
            recent.push_back(at);
            *max = (*max).max(recent.len() as u64);
        }
        let seq = inner.total - 1;
        if inner.entries.len() < MAX_LOG_ENTRIES {
            inner.entries.push(Entry { seq, at, record });
        }
    }

    /// `GET /_fake/requests`: entries with `seq >= since`, in arrival order.
    pub fn requests_json(&self, since: u64) -> Value {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let start = inner.entries.partition_point(|e| e.seq < since);
        Value::Array(
            inner.entries[start..]
                .iter()
                .map(|e| {
                    let r = &e.record;
                    json!({
                        "seq": e.seq,
                        "method": r.method,
                        "target": r.target,
                        "bot_id": r.bot_id.map(|id| id.to_string()),
                        "user_agent": r.user_agent,
                        "authorization_scheme_ok": r.authorization_scheme_ok,
                        "status": r.status,
                        "at_ms": e.at.as_millis() as u64,
                        "scope": r.scope,
                        "fault": r.fault,
                        "headers": r.headers,
                        "content_type": r.content_type,
                        "body_len": r.body_len,
                        "body_hash": r.body_hash,
                        "body": r.body,
                        "audit_log_reason": r.audit_log_reason,
                        "audit_log_reason_decoded": r.audit_log_reason_decoded,
                        "nonce": r.nonce,
                    })
                })
                .collect(),
        )
    }

    /// `GET /_fake/stats`.
    pub fn stats_json(&self) -> Value {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let by_status: serde_json::Map<String, Value> = inner
            .by_status
            .iter()
            .map(|(s, n)| (s.to_string(), json!(n)))
            .collect();
        let mut rate_limited = json!({ "user": 0, "global": 0, "shared": 0 });
        for (scope, n) in &inner.limited {
            rate_limited[scope.as_str()] = json!(n);
        }
        let max_in_any_second: serde_json::Map<String, Value> = inner
            .windows
            .iter()
            .map(|(bot, (_, max))| (bot.to_string(), json!(max)))
            .collect();
        json!({
            "requests": inner.total,
            "by_status": by_status,
            "no_response": inner.no_response,
            "rate_limited": rate_limited,
            "max_in_any_second": max_in_any_second,
            "log_entries": inner.entries.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(bot: u64, status: u16, scope: Option<&str>) -> Record {
        Record {
            method: "GET".into(),
            target: "/api/v10/users/@me".into(),
            bot_id: Some(bot),
            user_agent: Some("test".into()),
            authorization_scheme_ok: true,
            status: Some(status),
            scope: scope.map(str::to_string),
            ..Record::default()
        }
    }

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(fnv1a_hex(b""), "cbf29ce484222325");
        assert_eq!(fnv1a_hex(b"a"), "af63dc4c8601ec8c");
    }

    #[test]
    fn counts_statuses_scopes_and_busiest_second() {
        let r = Recorder::new(Instant::now());
        r.record(record(1, 200, None));
        r.record(record(1, 200, None));
        r.record(record(1, 429, Some("user")));
        r.record(record(2, 404, None));
        let stats = r.stats_json();
        assert_eq!(stats["requests"], 4);
        assert_eq!(stats["by_status"]["200"], 2);
        assert_eq!(stats["rate_limited"]["user"], 1);
        assert_eq!(stats["max_in_any_second"]["1"], 2);
        assert_eq!(stats["max_in_any_second"]["2"], 1);
        let log = r.requests_json(2);
        assert_eq!(log.as_array().unwrap().len(), 2);
        assert_eq!(log[0]["scope"], "user");
    }
}
