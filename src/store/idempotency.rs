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

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, RandomState};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::store::memory::unix_ms;
use crate::store::sessions::StoreError;

/// API.md: "They are kept 24 hours."
pub const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How long after its first claim a message send may be sent again with its
/// nonce: Discord deduplicates nonces "within the past few minutes"
/// (message.mdx, `enforce_nonce`), a window it does not state; this stays
/// well inside it, counted from the first send, however many re-sends
/// there were.
pub const NONCE_WINDOW: Duration = Duration::from_secs(60);

/// What identifies a request for its key: a digest of method, route, IDs
/// and body. 128 bits: an accidental match is out of reach, and 100,000
/// keys fit the memory budget (`make bench-writes`).
pub type Fingerprint = [u8; 16];

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
    /// It was running on an instance that is gone, and Discord's nonce
    /// window is over: its outcome is unknown for good.
    Abandoned,
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
        fingerprint: &Fingerprint,
        nonce: &str,
        lease: Duration,
    ) -> Result<Claimed, StoreError>;

    /// Records what the claimed request became.
    fn finish(&self, scope: KeyScope<'_>, finished: Finished) -> Result<(), StoreError>;

    /// Forgets a claim whose request never reached Discord (refused here,
    /// or rate limited past its wait budget): the client may simply retry.
    fn release(&self, scope: KeyScope<'_>);
}

/// Discord takes a nonce of at most 25 characters; kept inline, so a
/// record costs no allocation beyond its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nonce {
    bytes: [u8; 25],
    len: u8,
}

impl Nonce {
    /// The first 25 bytes of `text`, cut at a character boundary.
    pub fn new(text: &str) -> Nonce {
        let mut len = text.len().min(25);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0; 25];
        bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        Nonce {
            bytes,
            len: len as u8,
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

/// Where one key's request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Running,
    Answered,
    /// Unknown, and a message send: resent with its nonce within the
    /// window.
    UnknownResendable,
}

/// One key's record, as every store keeps it: flat, so 100,000 of them
/// fit 16 MiB in memory (`make bench-writes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    fingerprint: Fingerprint,
    nonce: Nonce,
    /// When the key was first claimed: it lives `RETENTION` from here.
    pub created_ms: i64,
    /// While running, when its lease ends; after, when it finished (the
    /// start of `NONCE_WINDOW`).
    at_ms: i64,
    kind: Kind,
    status: u16,
    body: Box<[u8]>,
}

impl Record {
    fn running(fingerprint: Fingerprint, nonce: Nonce, created_ms: i64, until_ms: i64) -> Record {
        Record {
            fingerprint,
            nonce,
            created_ms,
            at_ms: until_ms,
            kind: Kind::Running,
            status: 0,
            body: Box::default(),
        }
    }

    /// The record once `finished`, at `now_ms`.
    pub fn finished(&self, finished: Finished, now_ms: i64) -> Record {
        let (kind, answer) = match finished {
            Finished::Answered(answer) => (Kind::Answered, answer),
            Finished::Unknown {
                answer,
                resendable: true,
            } => (Kind::UnknownResendable, answer),
            // Replayed like an answer: it is the answer to give.
            Finished::Unknown {
                answer,
                resendable: false,
            } => (Kind::Answered, answer),
        };
        Record {
            at_ms: now_ms,
            kind,
            status: answer.status,
            body: answer.body.into_boxed_slice(),
            ..self.clone()
        }
    }

    fn answer(&self) -> Answer {
        Answer {
            status: self.status,
            body: self.body.to_vec(),
        }
    }

    /// Whether the record is past `RETENTION` at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        now_ms - self.created_ms >= RETENTION.as_millis() as i64
    }

    /// Bytes it holds, for the memory budget.
    fn weight(&self) -> usize {
        std::mem::size_of::<(MemoryKey, Record)>() + self.body.len()
    }

    /// The record as bytes, for the stores that keep it outside this
    /// process: fingerprint, times, state, status, nonce, body.
    pub fn encode(&self) -> Vec<u8> {
        let nonce = self.nonce.as_str().as_bytes();
        let mut out = Vec::with_capacity(36 + nonce.len() + self.body.len());
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.at_ms.to_be_bytes());
        out.push(match self.kind {
            Kind::Running => 0,
            Kind::Answered => 1,
            Kind::UnknownResendable => 2,
        });
        out.extend_from_slice(&self.status.to_be_bytes());
        out.push(nonce.len() as u8);
        out.extend_from_slice(nonce);
        out.extend_from_slice(&self.body);
        out
    }

    /// The record from `encode`'s bytes; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let fingerprint: Fingerprint = bytes.get(..16)?.try_into().ok()?;
        let int = |at: usize| -> Option<i64> {
            Some(i64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let (created_ms, at_ms) = (int(16)?, int(24)?);
        let kind = match *bytes.get(32)? {
            0 => Kind::Running,
            1 => Kind::Answered,
            2 => Kind::UnknownResendable,
            _ => return None,
        };
        let status = u16::from_be_bytes(bytes.get(33..35)?.try_into().ok()?);
        let nonce_len = usize::from(*bytes.get(35)?);
        let nonce = std::str::from_utf8(bytes.get(36..36 + nonce_len)?).ok()?;
        Some(Record {
            fingerprint,
            nonce: Nonce::new(nonce),
            created_ms,
            at_ms,
            kind,
            status,
            body: bytes[36 + nonce_len..].into(),
        })
    }
}

/// The decision every store makes the same way, given the record it holds
/// for the key (already dropped when older than `RETENTION`): the new
/// record to store, if any, and the answer to the claim.
pub fn decide(
    existing: Option<&Record>,
    fingerprint: &Fingerprint,
    nonce: &str,
    lease: Duration,
    now_ms: i64,
) -> (Option<Record>, Claimed) {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let until = now_ms.saturating_add(lease_ms);
    let Some(record) = existing else {
        let nonce = Nonce::new(nonce);
        return (
            Some(Record::running(*fingerprint, nonce, now_ms, until)),
            Claimed::Fresh {
                nonce: nonce.as_str().to_string(),
            },
        );
    };
    if record.fingerprint != *fingerprint {
        return (None, Claimed::Mismatch);
    }
    let resume = || {
        (
            Some(Record::running(
                record.fingerprint,
                record.nonce,
                record.created_ms,
                until,
            )),
            Claimed::Resume {
                nonce: record.nonce.as_str().to_string(),
            },
        )
    };
    let in_window = now_ms - record.created_ms < NONCE_WINDOW.as_millis() as i64;
    match record.kind {
        Kind::Running if record.at_ms > now_ms => (
            None,
            Claimed::Running {
                retry_after: Duration::from_millis((record.at_ms - now_ms).clamp(1, 1000) as u64),
            },
        ),
        // The instance running it is gone, and with it the outcome: a
        // message send may go again with its nonce while Discord still
        // knows it; anything else is reported unknown by the caller
        // (`Resume` carries the nonce, and only message sends use one).
        Kind::Running if in_window => resume(),
        Kind::Running => (None, Claimed::Abandoned),
        Kind::UnknownResendable if in_window => resume(),
        Kind::Answered | Kind::UnknownResendable => (None, Claimed::Replay(record.answer())),
    }
}

/// Upper bound on the bytes of records kept in memory; past it the oldest
/// tenth of the finished ones goes (a message send still has Discord's
/// nonce, derived from its key). Memory mode is one process without a
/// disk; `--data-dir` and `--redis-url` keep every record its 24 hours.
const MAX_MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// How often memory is swept of records past `RETENTION`.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// A record's key in memory: 128 bits of (bot, key) under two SipHash keys
/// drawn at start, so the map holds no client text, every key costs 16
/// bytes however long, and no client can aim a key at another's. SipHash,
/// not SHA-256: a replay is a lookup, and SHA-256 was half its time
/// (`make bench-micro`, `idempotency`).
type MemoryKey = u128;

/// Records in this process only (no `--data-dir`, no `--redis-url`).
pub struct MemoryIdempotency {
    inner: Mutex<Memory>,
    hashers: (RandomState, RandomState),
}

impl MemoryIdempotency {
    fn memory_key(&self, scope: KeyScope<'_>) -> MemoryKey {
        let high = self.hashers.0.hash_one((scope.bot, scope.key));
        let low = self.hashers.1.hash_one((scope.bot, scope.key));
        u128::from(high) << 64 | u128::from(low)
    }
}

/// The map's own hasher: its keys are already keyed SipHash digests, so
/// hashing them again would only spend time.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64;
    }
}

struct Memory {
    records: HashMap<MemoryKey, Record, BuildHasherDefault<Prehashed>>,
    bytes: usize,
    /// When it was last swept (Unix ms: the clock the claim already read).
    swept_ms: i64,
}

impl Default for MemoryIdempotency {
    fn default() -> Self {
        MemoryIdempotency {
            inner: Mutex::new(Memory {
                records: HashMap::default(),
                bytes: 0,
                swept_ms: unix_ms(SystemTime::now()),
            }),
            hashers: (RandomState::new(), RandomState::new()),
        }
    }
}

impl Memory {
    /// Drops what is past `RETENTION` (once a minute: a scan of every
    /// record), and the oldest tenth while over the byte budget.
    fn tidy(&mut self, now_ms: i64) {
        if now_ms - self.swept_ms >= SWEEP_EVERY.as_millis() as i64 {
            self.swept_ms = now_ms;
            self.records.retain(|_, record| !record.expired(now_ms));
            self.bytes = self.records.values().map(Record::weight).sum();
        }
        if self.bytes > MAX_MEMORY_BYTES {
            // A running request's claim is never dropped: that would let a
            // second request with its key run beside it.
            let mut created: Vec<i64> = self
                .records
                .values()
                .filter(|r| r.kind != Kind::Running)
                .map(|r| r.created_ms)
                .collect();
            if created.is_empty() {
                return;
            }
            let tenth = created.len() / 10;
            let (_, cutoff, _) = created.select_nth_unstable(tenth);
            let cutoff = *cutoff;
            let before = self.records.len();
            self.records
                .retain(|_, record| record.kind == Kind::Running || record.created_ms > cutoff);
            self.bytes = self.records.values().map(Record::weight).sum();
            log::warn!(
                "idempotency records in memory passed {} MiB: the oldest {} (of {before}) were \
                 dropped before their 24 hours; with --data-dir or --redis-url they are kept",
                MAX_MEMORY_BYTES >> 20,
                before - self.records.len()
            );
        }
    }

    fn put(&mut self, key: MemoryKey, record: Record) {
        self.bytes += record.weight();
        if let Some(old) = self.records.insert(key, record) {
            self.bytes -= old.weight();
        }
    }
}

impl IdempotencyStore for MemoryIdempotency {
    fn claim(
        &self,
        scope: KeyScope<'_>,
        fingerprint: &Fingerprint,
        nonce: &str,
        lease: Duration,
    ) -> Result<Claimed, StoreError> {
        let now_ms = unix_ms(SystemTime::now());
        let key = self.memory_key(scope);
        let mut memory = self.inner.lock();
        memory.tidy(now_ms);
        let existing = memory.records.get(&key).filter(|r| !r.expired(now_ms));
        let (record, claimed) = decide(existing, fingerprint, nonce, lease, now_ms);
        if let Some(record) = record {
            memory.put(key, record);
        }
        Ok(claimed)
    }

    fn finish(&self, scope: KeyScope<'_>, finished: Finished) -> Result<(), StoreError> {
        let now_ms = unix_ms(SystemTime::now());
        let key = self.memory_key(scope);
        let mut memory = self.inner.lock();
        if let Some(record) = memory.records.get(&key) {
            let record = record.finished(finished, now_ms);
            memory.put(key, record);
        }
        Ok(())
    }

    fn release(&self, scope: KeyScope<'_>) {
        let key = self.memory_key(scope);
        let mut memory = self.inner.lock();
        if let Some(record) = memory.records.remove(&key) {
            memory.bytes -= record.weight();
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
        let claimed = store.claim(scope("k"), &[1; 16], "n1", LEASE).unwrap();
        assert_eq!(claimed, Claimed::Fresh { nonce: "n1".into() });
        let again = store.claim(scope("k"), &[1; 16], "n2", LEASE).unwrap();
        assert!(matches!(again, Claimed::Running { .. }), "{again:?}");
    }

    #[test]
    fn an_answered_key_replays_and_a_different_request_is_a_mismatch() {
        let store = MemoryIdempotency::default();
        store.claim(scope("k"), &[1; 16], "n", LEASE).unwrap();
        store
            .finish(scope("k"), Finished::Answered(answer(201)))
            .unwrap();
        assert_eq!(
            store.claim(scope("k"), &[1; 16], "n", LEASE).unwrap(),
            Claimed::Replay(answer(201))
        );
        assert_eq!(
            store.claim(scope("k"), &[2; 16], "n", LEASE).unwrap(),
            Claimed::Mismatch
        );
    }

    #[test]
    fn keys_belong_to_one_bot() {
        let store = MemoryIdempotency::default();
        store.claim(scope("k"), &[1; 16], "n", LEASE).unwrap();
        let other = KeyScope { bot: 2, key: "k" };
        assert!(matches!(
            store.claim(other, &[9; 16], "n", LEASE).unwrap(),
            Claimed::Fresh { .. }
        ));
    }

    #[test]
    fn an_unknown_message_send_resumes_with_its_nonce_within_the_window() {
        let store = MemoryIdempotency::default();
        store.claim(scope("k"), &[1; 16], "first", LEASE).unwrap();
        let unknown = Finished::Unknown {
            answer: answer(504),
            resendable: true,
        };
        store.finish(scope("k"), unknown).unwrap();
        assert_eq!(
            store.claim(scope("k"), &[1; 16], "second", LEASE).unwrap(),
            Claimed::Resume {
                nonce: "first".into()
            }
        );
    }

    #[test]
    fn an_unknown_write_that_cannot_be_resent_replays_its_answer() {
        let store = MemoryIdempotency::default();
        store.claim(scope("k"), &[1; 16], "n", LEASE).unwrap();
        let unknown = Finished::Unknown {
            answer: answer(502),
            resendable: false,
        };
        store.finish(scope("k"), unknown).unwrap();
        assert_eq!(
            store.claim(scope("k"), &[1; 16], "n", LEASE).unwrap(),
            Claimed::Replay(answer(502))
        );
    }

    fn record(kind: Kind, at_ms: i64) -> Record {
        Record {
            fingerprint: [1; 16],
            nonce: Nonce::new("n"),
            created_ms: 0,
            at_ms,
            kind,
            status: 504,
            body: b"{}".to_vec().into_boxed_slice(),
        }
    }

    #[test]
    fn past_the_nonce_window_an_unknown_send_replays_instead_of_resending() {
        // Finished a moment ago, but first sent a window ago.
        let late = NONCE_WINDOW.as_millis() as i64 + 1;
        let unknown = record(Kind::UnknownResendable, late - 5);
        let (_, claimed) = decide(Some(&unknown), &[1; 16], "x", LEASE, late);
        assert_eq!(claimed, Claimed::Replay(answer(504)));
    }

    #[test]
    fn an_expired_lease_resumes_with_the_stored_nonce() {
        let running = record(Kind::Running, 5);
        let (stored, claimed) = decide(Some(&running), &[1; 16], "x", LEASE, 6);
        assert_eq!(claimed, Claimed::Resume { nonce: "n".into() });
        assert_eq!(stored.unwrap().kind, Kind::Running);
    }

    #[test]
    fn a_claim_abandoned_past_the_nonce_window_is_not_resumed() {
        let late = NONCE_WINDOW.as_millis() as i64 + 1;
        let running = record(Kind::Running, 5);
        let (stored, claimed) = decide(Some(&running), &[1; 16], "x", LEASE, late);
        assert_eq!(claimed, Claimed::Abandoned);
        assert_eq!(stored, None);
    }

    #[test]
    fn records_survive_encoding_in_every_state() {
        for kind in [Kind::Running, Kind::Answered, Kind::UnknownResendable] {
            let original = Record {
                nonce: Nonce::new("0123456789abcdef01234567"),
                ..record(kind, 3)
            };
            assert_eq!(Record::decode(&original.encode()), Some(original));
        }
        assert_eq!(Record::decode(b"short"), None);
    }

    #[test]
    fn a_nonce_keeps_at_most_25_bytes_on_a_character_boundary() {
        assert_eq!(Nonce::new("abc").as_str(), "abc");
        assert_eq!(Nonce::new(&"x".repeat(30)).as_str().len(), 25);
        assert_eq!(
            Nonce::new(&format!("{}é", "x".repeat(24))).as_str().len(),
            24
        );
    }

    #[test]
    fn a_record_is_small_enough_for_100000_keys_in_16_mib() {
        // hashbrown holds 131,072 buckets for 100,000 keys: key, record and
        // a control byte each.
        let per_bucket = std::mem::size_of::<(MemoryKey, Record)>() + 1;
        assert!(131_072 * per_bucket < 16 * 1024 * 1024, "{per_bucket} B");
    }

    #[test]
    fn a_record_is_kept_24_hours_from_its_first_claim() {
        let day = RETENTION.as_millis() as i64;
        let answered = record(Kind::Answered, 0);
        assert!(!answered.expired(day - 1));
        assert!(answered.expired(day));
        // Expired records are dropped before `decide` sees them: the key
        // is new again.
        let (_, claimed) = decide(None, &[2; 16], "n", LEASE, day);
        assert!(matches!(claimed, Claimed::Fresh { .. }));
    }

    #[test]
    fn a_released_key_is_new_again() {
        let store = MemoryIdempotency::default();
        store.claim(scope("k"), &[1; 16], "n", LEASE).unwrap();
        store.release(scope("k"));
        assert!(matches!(
            store.claim(scope("k"), &[2; 16], "n", LEASE).unwrap(),
            Claimed::Fresh { .. }
        ));
        assert_eq!(store.len(), 1);
    }
}
