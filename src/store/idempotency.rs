//! idempotency: what an `Idempotency-Key` remembers, so a write is done at
//! most once however often it is sent (API.md, "Never twice").
//!
//! A key belongs to a bot (its Discord user ID), not to a session: every
//! session of the bot, on every instance, shares it. Its record holds the
//! request's fingerprint (method, route, IDs and body, hashed), the nonce a
//! message send carries, and where the request stands: running (a lease,
//! so a crashed instance cannot hold a key forever), answered (the answer
//! to give again), or unknown (the answer was lost after sending).
//!
//! Architecture invariants: `claim` is atomic per key (two instances never
//! both get `Fresh` for one key); a record lives `RETENTION` from its first
//! claim, then the key is new again; nothing here knows HTTP beyond a
//! status number and the body bytes to replay.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;

use crate::store::memory::unix_ms;
use crate::store::sessions::StoreError;

/// API.md: "They are kept 24 hours."
pub const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How long after an unknown outcome a message send may be sent again with
/// its nonce: Discord deduplicates nonces "within the past few minutes"
/// (message.mdx, `enforce_nonce`), a window it does not state; this stays
/// well inside it.
pub const NONCE_WINDOW: Duration = Duration::from_secs(60);

/// Whose key: the bot's Discord user ID, and the key as the client sent it.
#[derive(Debug, Clone, Copy)]
pub struct KeyScope<'a> {
    pub bot: u64,
    pub key: &'a str,
}

/// An answer as the client gets it again: status and JSON body (empty for
/// a 204).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What the first request with a key became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// A definite answer (success or Discord's refusal): replayed as is.
    Answered(Answer),
    /// Sent, and the answer lost. A `resendable` one (a message send with
    /// its nonce) is sent again when its key comes back within
    /// `NONCE_WINDOW`; after that, or when not resendable, `answer` is
    /// given again.
    Unknown { answer: Answer, resendable: bool },
}

/// What a request with a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The key is new (or expired): run the request, with this nonce.
    Fresh { nonce: String },
    /// The key's message send ended unknown moments ago: send it again
    /// with the same nonce, and Discord drops it if the first got through.
    Resume { nonce: String },
    /// A request with this key is running; try again after the lease.
    Running { retry_after: Duration },
    /// Answered before: give this again.
    Replay(Answer),
    /// The key was used for a different request.
    Mismatch,
}

/// Where idempotency records live: this process, the embedded database, or
/// Redis (shared by every instance).
pub trait IdempotencyStore: Send + Sync {
    /// Claims `scope` for a request with this fingerprint: atomically
    /// starts it (with `nonce`, or the nonce stored before) under a lease,
    /// or says why not.
    fn claim(
        &self,
        scope: KeyScope<'_>,
        fingerprint: &[u8; 32],
        nonce: &str,
        lease: Duration,
    ) -> Result<Claimed, StoreError>;

    /// Records what the claimed request became.
    fn finish(&self, scope: KeyScope<'_>, finished: Finished) -> Result<(), StoreError>;

    /// Forgets a claim whose request never reached Discord (refused here,
    /// or rate limited past its wait budget): the client may simply retry.
    fn release(&self, scope: KeyScope<'_>);
}

/// Where one key's request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Running { until_ms: i64 },
    Done(Finished),
}

/// One key's record, as every store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub fingerprint: [u8; 32],
    pub nonce: String,
    pub created_ms: i64,
    /// When the latest outcome became known (for `NONCE_WINDOW`).
    pub finished_ms: i64,
    pub state: State,
}

impl Record {
    /// The record as bytes, for the stores that keep it outside this
    /// process: fingerprint, times, state, status, nonce, body.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, until_ms, answer) = match &self.state {
            State::Running { until_ms } => (0u8, *until_ms, None),
            State::Done(Finished::Answered(a)) => (1, 0, Some(a)),
            State::Done(Finished::Unknown {
                answer,
                resendable: true,
            }) => (2, 0, Some(answer)),
            State::Done(Finished::Unknown {
                answer,
                resendable: false,
            }) => (3, 0, Some(answer)),
        };
        let body = answer.map_or(&[][..], |a| &a.body[..]);
        let mut out = Vec::with_capacity(70 + self.nonce.len() + body.len());
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.finished_ms.to_be_bytes());
        out.extend_from_slice(&until_ms.to_be_bytes());
        out.push(tag);
        out.extend_from_slice(&answer.map_or(0, |a| a.status).to_be_bytes());
        out.push(self.nonce.len().min(255) as u8);
        out.extend_from_slice(&self.nonce.as_bytes()[..self.nonce.len().min(255)]);
        out.extend_from_slice(body);
        out
    }

    /// The record from `encode`'s bytes; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let fingerprint: [u8; 32] = bytes.get(..32)?.try_into().ok()?;
        let int = |at: usize| -> Option<i64> {
            Some(i64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let (created_ms, finished_ms, until_ms) = (int(32)?, int(40)?, int(48)?);
        let tag = *bytes.get(56)?;
        let status = u16::from_be_bytes(bytes.get(57..59)?.try_into().ok()?);
        let nonce_len = usize::from(*bytes.get(59)?);
        let nonce = std::str::from_utf8(bytes.get(60..60 + nonce_len)?).ok()?;
        let answer = || Answer {
            status,
            body: bytes[60 + nonce_len..].to_vec(),
        };
        let state = match tag {
            0 => State::Running { until_ms },
            1 => State::Done(Finished::Answered(answer())),
            2 | 3 => State::Done(Finished::Unknown {
                answer: answer(),
                resendable: tag == 2,
            }),
            _ => return None,
        };
        Some(Record {
            fingerprint,
            nonce: nonce.to_string(),
            created_ms,
            finished_ms,
            state,
        })
    }

    /// Whether the record is past `RETENTION` at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        now_ms - self.created_ms >= RETENTION.as_millis() as i64
    }

    /// The record once `finished`, at `now_ms`.
    pub fn finished(&self, finished: Finished, now_ms: i64) -> Record {
        Record {
            finished_ms: now_ms,
            state: State::Done(finished),
            ..self.clone()
        }
    }
}

/// The decision every store makes the same way, given the record it holds
/// for the key (already dropped when older than `RETENTION`): the new
/// record to store, if any, and the answer to the claim.
pub fn decide(
    existing: Option<&Record>,
    fingerprint: &[u8; 32],
    nonce: &str,
    lease: Duration,
    now_ms: i64,
) -> (Option<Record>, Claimed) {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let running = |nonce: &str, created_ms| Record {
        fingerprint: *fingerprint,
        nonce: nonce.to_string(),
        created_ms,
        finished_ms: now_ms,
        state: State::Running {
            until_ms: now_ms.saturating_add(lease_ms),
        },
    };
    let Some(record) = existing else {
        return (
            Some(running(nonce, now_ms)),
            Claimed::Fresh {
                nonce: nonce.to_string(),
            },
        );
    };
    if record.fingerprint != *fingerprint {
        return (None, Claimed::Mismatch);
    }
    let window_ms = NONCE_WINDOW.as_millis() as i64;
    match &record.state {
        State::Running { until_ms } if *until_ms > now_ms => (
            None,
            Claimed::Running {
                retry_after: Duration::from_millis((until_ms - now_ms).clamp(1, 1000) as u64),
            },
        ),
        // The instance running it is gone, and with it the outcome: a
        // message send may go again with its nonce; anything else is
        // reported unknown by the caller (`Resume` carries the nonce, and
        // only message sends use one).
        State::Running { .. } => (
            Some(running(&record.nonce, record.created_ms)),
            Claimed::Resume {
                nonce: record.nonce.clone(),
            },
        ),
        State::Done(Finished::Answered(answer)) => (None, Claimed::Replay(answer.clone())),
        State::Done(Finished::Unknown {
            resendable: true, ..
        }) if now_ms - record.finished_ms < window_ms => (
            Some(running(&record.nonce, record.created_ms)),
            Claimed::Resume {
                nonce: record.nonce.clone(),
            },
        ),
        State::Done(Finished::Unknown { answer, .. }) => (None, Claimed::Replay(answer.clone())),
    }
}

/// Upper bound on the bytes of replayable answers kept in memory; past it
/// the oldest records go first (a message send still has Discord's nonce).
const MAX_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// Records in this process only (no `--data-dir`, no `--redis-url`).
#[derive(Default)]
pub struct MemoryIdempotency {
    inner: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    records: HashMap<(u64, Box<str>), Record>,
    /// Keys in the order they were created: expiry and eviction pop the
    /// front.
    order: VecDeque<(i64, u64, Box<str>)>,
    bytes: usize,
}

fn record_bytes(record: &Record) -> usize {
    let body = match &record.state {
        State::Done(Finished::Answered(a) | Finished::Unknown { answer: a, .. }) => a.body.len(),
        State::Running { .. } => 0,
    };
    body + record.nonce.len() + std::mem::size_of::<Record>()
}

impl Memory {
    fn expire(&mut self, now_ms: i64) {
        let retention = RETENTION.as_millis() as i64;
        while let Some((created, bot, key)) = self.order.front() {
            let expired = now_ms - created >= retention;
            if !expired && self.bytes <= MAX_MEMORY_BYTES {
                break;
            }
            let index = (*bot, key.clone());
            // A record re-created since has a later entry of its own.
            if let Some(record) = self.records.get(&index)
                && record.created_ms == *created
            {
                self.bytes -= record_bytes(record);
                self.records.remove(&index);
            }
            self.order.pop_front();
        }
    }

    fn put(&mut self, index: (u64, Box<str>), record: Record) {
        let is_new = !self.records.contains_key(&index);
        if is_new {
            self.order
                .push_back((record.created_ms, index.0, index.1.clone()));
        }
        self.bytes += record_bytes(&record);
        if let Some(old) = self.records.insert(index, record) {
            self.bytes -= record_bytes(&old);
        }
    }
}

impl IdempotencyStore for MemoryIdempotency {
    fn claim(
        &self,
        scope: KeyScope<'_>,
        fingerprint: &[u8; 32],
        nonce: &str,
        lease: Duration,
    ) -> Result<Claimed, StoreError> {
        let now_ms = unix_ms(std::time::SystemTime::now());
        let mut memory = self.inner.lock();
        memory.expire(now_ms);
        let index = (scope.bot, Box::<str>::from(scope.key));
        let (record, claimed) = decide(
            memory.records.get(&index),
            fingerprint,
            nonce,
            lease,
            now_ms,
        );
        if let Some(record) = record {
            memory.put(index, record);
        }
        Ok(claimed)
    }

    fn finish(&self, scope: KeyScope<'_>, finished: Finished) -> Result<(), StoreError> {
        let now_ms = unix_ms(std::time::SystemTime::now());
        let mut memory = self.inner.lock();
        let index = (scope.bot, Box::<str>::from(scope.key));
        if let Some(record) = memory.records.get(&index) {
            let record = record.finished(finished, now_ms);
            memory.put(index, record);
        }
        Ok(())
    }

    fn release(&self, scope: KeyScope<'_>) {
        let mut memory = self.inner.lock();
        let index = (scope.bot, Box::<str>::from(scope.key));
        if let Some(record) = memory.records.remove(&index) {
            memory.bytes -= record_bytes(&record);
        }
    }
}

impl MemoryIdempotency {
    /// Records held.
    pub fn len(&self) -> usize {
        self.inner.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    fn scope(key: &str) -> KeyScope<'_> {
        KeyScope { bot: 1, key }
    }

    fn answer(status: u16) -> Answer {
        Answer {
            status,
            body: b"{}".to_vec(),
        }
    }

    #[test]
    fn a_new_key_is_fresh_and_then_running() {
        let store = MemoryIdempotency::default();
        let claimed = store.claim(scope("k"), &[1; 32], "n1", LEASE).unwrap();
        assert_eq!(claimed, Claimed::Fresh { nonce: "n1".into() });
        let again = store.claim(scope("k"), &[1; 32], "n2", LEASE).unwrap();
        assert!(matches!(again, Claimed::Running { .. }), "{again:?}");
    }

    #[test]
    fn an_answered_key_replays_and_a_different_request_is_a_mismatch() {
        let store = MemoryIdempotency::default();
        store.claim(scope("k"), &[1; 32], "n", LEASE).unwrap();
        store
            .finish(scope("k"), Finished::Answered(answer(201)))
            .unwrap();
        assert_eq!(
            store.claim(scope("k"), &[1; 32], "n", LEASE).unwrap(),
            Claimed::Replay(answer(201))
        );
        assert_eq!(
            store.claim(scope("k"), &[2; 32], "n", LEASE).unwrap(),
            Claimed::Mismatch
        );
    }

    #[test]
    fn keys_belong_to_one_bot() {
        let store = MemoryIdempotency::default();
        store.claim(scope("k"), &[1; 32], "n", LEASE).unwrap();
        let other = KeyScope { bot: 2, key: "k" };
        assert!(matches!(
            store.claim(other, &[9; 32], "n", LEASE).unwrap(),
            Claimed::Fresh { .. }
        ));
    }

    #[test]
    fn an_unknown_message_send_resumes_with_its_nonce_within_the_window() {
        let store = MemoryIdempotency::default();
        store.claim(scope("k"), &[1; 32], "first", LEASE).unwrap();
        let unknown = Finished::Unknown {
            answer: answer(504),
            resendable: true,
        };
        store.finish(scope("k"), unknown).unwrap();
        assert_eq!(
            store.claim(scope("k"), &[1; 32], "second", LEASE).unwrap(),
            Claimed::Resume {
                nonce: "first".into()
            }
        );
    }

    #[test]
    fn an_unknown_write_that_cannot_be_resent_replays_its_answer() {
        let store = MemoryIdempotency::default();
        store.claim(scope("k"), &[1; 32], "n", LEASE).unwrap();
        let unknown = Finished::Unknown {
            answer: answer(502),
            resendable: false,
        };
        store.finish(scope("k"), unknown).unwrap();
        assert_eq!(
            store.claim(scope("k"), &[1; 32], "n", LEASE).unwrap(),
            Claimed::Replay(answer(502))
        );
    }

    #[test]
    fn past_the_nonce_window_an_unknown_send_replays_instead_of_resending() {
        let record = Record {
            fingerprint: [1; 32],
            nonce: "n".into(),
            created_ms: 0,
            finished_ms: 0,
            state: State::Done(Finished::Unknown {
                answer: answer(504),
                resendable: true,
            }),
        };
        let late = NONCE_WINDOW.as_millis() as i64 + 1;
        let (_, claimed) = decide(Some(&record), &[1; 32], "x", LEASE, late);
        assert_eq!(claimed, Claimed::Replay(answer(504)));
    }

    #[test]
    fn an_expired_lease_resumes_with_the_stored_nonce() {
        let record = Record {
            fingerprint: [1; 32],
            nonce: "n".into(),
            created_ms: 0,
            finished_ms: 0,
            state: State::Running { until_ms: 5 },
        };
        let (stored, claimed) = decide(Some(&record), &[1; 32], "x", LEASE, 6);
        assert_eq!(claimed, Claimed::Resume { nonce: "n".into() });
        assert!(matches!(stored.unwrap().state, State::Running { .. }));
    }

    #[test]
    fn records_survive_encoding_in_every_state() {
        let base = Record {
            fingerprint: [3; 32],
            nonce: "abc".into(),
            created_ms: 1,
            finished_ms: 2,
            state: State::Running { until_ms: 3 },
        };
        let states = [
            State::Running { until_ms: 3 },
            State::Done(Finished::Answered(answer(201))),
            State::Done(Finished::Unknown {
                answer: answer(504),
                resendable: true,
            }),
            State::Done(Finished::Unknown {
                answer: answer(502),
                resendable: false,
            }),
        ];
        for state in states {
            let record = Record {
                state,
                ..base.clone()
            };
            assert_eq!(Record::decode(&record.encode()), Some(record));
        }
        assert_eq!(Record::decode(b"short"), None);
    }

    #[test]
    fn a_released_key_is_new_again() {
        let store = MemoryIdempotency::default();
        store.claim(scope("k"), &[1; 32], "n", LEASE).unwrap();
        store.release(scope("k"));
        assert!(matches!(
            store.claim(scope("k"), &[2; 32], "n", LEASE).unwrap(),
            Claimed::Fresh { .. }
        ));
        assert_eq!(store.len(), 1);
    }
}
