//! sign: Standard Webhooks signatures (spec v1.0.0, symmetric `v1`), so a
//! receiver can check a delivery with any Standard Webhooks library instead
//! of code of ours.
//!
//! A signature is `v1,` and the base64 HMAC-SHA256, under the webhook's
//! secret, of `{webhook-id}.{webhook-timestamp}.{body}`: the exact bytes
//! sent, never a re-serialisation.
//!
//! Invariants:
//! - a secret's bytes leave a [`Secret`] only as the `whsec_` text of
//!   [`Secret::reveal`] (shown once to the owner, sealed by the store) and
//!   inside an HMAC; `Debug` shows its length, never its bytes, and there is
//!   no `Display`;
//! - a [`MessageId`] never holds a `.`, so the signed content splits in one
//!   way only: bytes cannot move between the ID and the body under the same
//!   signature.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header carrying the event's ID, the same on every attempt: the
/// receiver's key for dropping duplicates.
pub const HEADER_ID: &str = "webhook-id";
/// The header carrying this attempt's time, in Unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying one signature per active secret, space-separated.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// What every secret's text starts with, so a reader (and a secret scanner)
/// can tell it from other base64.
const SECRET_PREFIX: &str = "whsec_";
/// The spec's range: under 24 bytes the key is weak; past 64 (SHA-256's
/// block) HMAC hashes the key down to 32 bytes first, so length adds nothing.
const SECRET_MIN_BYTES: usize = 24;
const SECRET_MAX_BYTES: usize = 64;
/// What we generate: as many bits as the HMAC-SHA256 tag the secret keys,
/// so guessing the key is never easier than guessing a tag.
const SECRET_GENERATED_BYTES: usize = 32;

/// How long a replaced secret keeps signing after a rotation: a receiver
/// has a day to switch to the new one without rejecting a delivery.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 60 * 60);

/// How far from now a timestamp may be and still verify: the reference
/// libraries' five minutes either way, which absorbs clock skew while still
/// bounding replays of a captured delivery.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// An event ID can be our ring's or a test event's; 256 bytes is far more
/// than either and keeps a header line small.
const MAX_ID_LEN: usize = 256;

/// A webhook's signing key. Deliberately opaque.
pub struct Secret {
    bytes: Vec<u8>,
}

impl Secret {
    /// A fresh secret from the operating system's generator (through the
    /// AEAD crate's, already in the tree for sealing).
    pub fn generate() -> Secret {
        use chacha20poly1305::aead::Generate;
        let bytes = <[u8; SECRET_GENERATED_BYTES]>::generate();
        Secret {
            bytes: bytes.to_vec(),
        }
    }

    /// Reads `whsec_<base64>`, as generated here or by any Standard Webhooks
    /// implementation (the store's sealed copy, an operator's import). The
    /// error says what is wrong without quoting the text, which may be a
    /// real secret with a typo.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        if encoded.is_empty() {
            return Err(SecretError::Empty);
        }
        let bytes = BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        if bytes.len() < SECRET_MIN_BYTES {
            return Err(SecretError::TooShort(bytes.len()));
        }
        if bytes.len() > SECRET_MAX_BYTES {
            return Err(SecretError::TooLong(bytes.len()));
        }
        Ok(Secret { bytes })
    }

    /// The `whsec_` text: only for the one answer that shows a new secret to
    /// its owner, and for the store, which seals it before it rests anywhere.
    pub fn reveal(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.bytes))
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn signature(&self, id: &MessageId, timestamp: u64, body: &[u8]) -> String {
        let timestamp = timestamp.to_string();
        let tag = self
            .mac(id.as_str(), &timestamp, body)
            .finalize()
            .into_bytes();
        format!("v1,{}", BASE64.encode(tag))
    }

    /// The HMAC over the signed content, not yet finalised, so the verifier
    /// can compare in constant time. The timestamp is text because a
    /// receiver signs the header as it came, not a number re-printed.
    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.bytes).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes, redacted>)", self.bytes.len())
    }
}

/// Why a text is not a webhook secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    MissingPrefix,
    /// Nothing follows `whsec_`.
    Empty,
    /// What follows `whsec_` is not standard, padded base64.
    NotBase64,
    /// The key decodes to fewer than 24 bytes.
    TooShort(usize),
    /// The key decodes to more than 64 bytes.
    TooLong(usize),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::MissingPrefix => {
                write!(f, "a webhook secret starts with `{SECRET_PREFIX}`")
            }
            SecretError::Empty => {
                write!(f, "the webhook secret has nothing after `{SECRET_PREFIX}`")
            }
            SecretError::NotBase64 => write!(
                f,
                "what follows `{SECRET_PREFIX}` is not standard base64 (A-Z, a-z, 0-9, `+`, `/`, `=` padding)"
            ),
            SecretError::TooShort(n) => write!(
                f,
                "the webhook secret is {n} bytes; at least {SECRET_MIN_BYTES} are needed"
            ),
            SecretError::TooLong(n) => write!(
                f,
                "the webhook secret is {n} bytes; at most {SECRET_MAX_BYTES} are allowed"
            ),
        }
    }
}

impl std::error::Error for SecretError {}

/// The `webhook-id` of a delivery: the event's ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageId(String);

impl MessageId {
    /// Visible ASCII (it goes into a header) without `.` (it is the first
    /// field of the signed content, see the module's invariants).
    pub fn parse(id: &str) -> Result<MessageId, &'static str> {
        if id.is_empty() {
            return Err("a webhook-id must not be empty");
        }
        if id.len() > MAX_ID_LEN {
            return Err("a webhook-id is at most 256 bytes");
        }
        if !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a webhook-id is visible ASCII only");
        }
        if id.contains('.') {
            return Err("a webhook-id must not contain `.`, the signed content's separator");
        }
        Ok(MessageId(id.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A webhook's secrets: the current one, and for [`ROTATION_OVERLAP`] after
/// a rotation the one it replaced, so both sign until receivers switch.
#[derive(Debug)]
pub struct Keys {
    pub current: Secret,
    pub previous: Option<Previous>,
}

/// A replaced secret and when it stops signing.
#[derive(Debug)]
pub struct Previous {
    pub secret: Secret,
    /// Unix seconds; from then on only the current secret signs.
    pub until: u64,
}

impl Keys {
    pub fn new(current: Secret) -> Keys {
        Keys {
            current,
            previous: None,
        }
    }

    /// Makes `new` current; the old current signs too until a day from
    /// `now`. A secret replaced earlier is dropped even if its day has not
    /// passed: two rotations in a day mean the owner wants the oldest gone.
    pub fn rotate(&mut self, new: Secret, now: u64) {
        let old = std::mem::replace(&mut self.current, new);
        self.previous = Some(Previous {
            secret: old,
            until: now.saturating_add(ROTATION_OVERLAP.as_secs()),
        });
    }

    /// The secrets that sign at `now`: the current one first.
    pub fn signing(&self, now: u64) -> impl Iterator<Item = &Secret> {
        let previous = self
            .previous
            .as_ref()
            .filter(|p| now < p.until)
            .map(|p| &p.secret);
        std::iter::once(&self.current).chain(previous)
    }

    /// The three Standard Webhooks headers of one attempt made at
    /// `timestamp` (Unix seconds): each attempt is signed anew, since the
    /// timestamp changes and receivers reject old ones.
    pub fn headers(&self, id: &MessageId, timestamp: u64, body: &[u8]) -> Headers {
        let signature = self
            .signing(timestamp)
            .map(|secret| secret.signature(id, timestamp, body))
            .collect::<Vec<_>>()
            .join(" ");
        Headers {
            id: id.as_str().to_string(),
            timestamp: timestamp.to_string(),
            signature,
        }
    }
}

/// The values of the three `webhook-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
}

impl Headers {
    /// Name and value of each header, for the request builder.
    pub fn pairs(&self) -> [(&'static str, &str); 3] {
        [
            (HEADER_ID, &self.id),
            (HEADER_TIMESTAMP, &self.timestamp),
            (HEADER_SIGNATURE, &self.signature),
        ]
    }
}

/// Unix seconds now; a clock before 1970 reads as 0 rather than panicking
/// in a delivery thread.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why a delivery does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// `webhook-timestamp` is not a whole number of seconds.
    BadTimestamp,
    /// The timestamp is further in the past than the tolerance.
    TooOld,
    /// The timestamp is further in the future than the tolerance.
    TooNew,
    /// No `v1` signature in the header matches this secret.
    NoMatch,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VerifyError::BadTimestamp => "webhook-timestamp is not Unix seconds",
            VerifyError::TooOld => "webhook-timestamp is too far in the past",
            VerifyError::TooNew => "webhook-timestamp is too far in the future",
            VerifyError::NoMatch => "no v1 signature matches the secret",
        })
    }
}

impl std::error::Error for VerifyError {}

/// Checks a delivery the way a receiver's Standard Webhooks library does, so
/// our own tests can hold deliveries to the spec: the timestamp within
/// `tolerance` of `now` (both directions), then any `v1` signature matching
/// in constant time. Other schemes in the header (`v1a,…`) are skipped, as
/// the spec asks.
pub fn verify(
    secret: &Secret,
    headers: &Headers,
    body: &[u8],
    now: u64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let timestamp: u64 = headers
        .timestamp
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    let tolerance = tolerance.as_secs();
    if timestamp.saturating_add(tolerance) < now {
        return Err(VerifyError::TooOld);
    }
    if timestamp > now.saturating_add(tolerance) {
        return Err(VerifyError::TooNew);
    }
    let expected = secret.mac(&headers.id, &headers.timestamp, body);
    let matched = headers
        .signature
        .split(' ')
        .filter_map(|one| one.strip_prefix("v1,"))
        .filter_map(|encoded| BASE64.decode(encoded).ok())
        .any(|tag| expected.clone().verify_slice(&tag).is_ok());
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's reference library's `test_sign` vector (EVENTS-NOTES.md §1.1).
    const SPEC_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SPEC_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SPEC_TIMESTAMP: u64 = 1_649_367_553;
    const SPEC_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SPEC_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn id(text: &str) -> MessageId {
        MessageId::parse(text).unwrap()
    }

    fn spec_keys() -> Keys {
        Keys::new(Secret::parse(SPEC_SECRET).unwrap())
    }

    #[test]
    fn signs_the_spec_test_vector_exactly() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        assert_eq!(
            secret.signature(&id(SPEC_ID), SPEC_TIMESTAMP, SPEC_BODY),
            SPEC_SIGNATURE
        );
    }

    #[test]
    fn headers_carry_the_id_the_timestamp_and_the_spec_signature() {
        let headers = spec_keys().headers(&id(SPEC_ID), SPEC_TIMESTAMP, SPEC_BODY);
        assert_eq!(
            headers.pairs(),
            [
                ("webhook-id", SPEC_ID),
                ("webhook-timestamp", "1649367553"),
                ("webhook-signature", SPEC_SIGNATURE),
            ]
        );
    }

    #[test]
    fn the_spec_vector_verifies_within_the_tolerance() {
        let headers = spec_keys().headers(&id(SPEC_ID), SPEC_TIMESTAMP, SPEC_BODY);
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let now = SPEC_TIMESTAMP + DEFAULT_TOLERANCE.as_secs();
        assert_eq!(
            verify(&secret, &headers, SPEC_BODY, now, DEFAULT_TOLERANCE),
            Ok(())
        );
    }

    #[test]
    fn a_generated_secret_reads_back_as_the_same_key() {
        let secret = Secret::generate();
        let again = Secret::parse(&secret.reveal()).unwrap();
        let (id, body) = (id("1"), b"{}");
        assert_eq!(
            again.signature(&id, 7, body),
            secret.signature(&id, 7, body)
        );
    }

    #[test]
    fn a_generated_secret_is_whsec_and_32_bytes() {
        let text = Secret::generate().reveal();
        let encoded = text.strip_prefix("whsec_").unwrap();
        assert_eq!(
            BASE64.decode(encoded).unwrap().len(),
            SECRET_GENERATED_BYTES
        );
    }

    #[test]
    fn two_generated_secrets_differ() {
        assert_ne!(Secret::generate().reveal(), Secret::generate().reveal());
    }

    #[test]
    fn parse_names_what_is_wrong() {
        let key = |n: usize| format!("whsec_{}", BASE64.encode(vec![7u8; n]));
        let cases = [
            (
                "C2FVsBQIhrscChlQIMV+b5sSYspob7oD".to_string(),
                SecretError::MissingPrefix,
            ),
            (
                "WHSEC_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".to_string(),
                SecretError::MissingPrefix,
            ),
            ("whsec_".to_string(), SecretError::Empty),
            (
                "whsec_C2FVsBQIhrscChlQIMV-b5sSYspob7oD".to_string(),
                SecretError::NotBase64,
            ),
            (
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7o".to_string(),
                SecretError::NotBase64,
            ),
            (key(23), SecretError::TooShort(23)),
            (key(65), SecretError::TooLong(65)),
        ];
        for (text, error) in cases {
            assert_eq!(Secret::parse(&text).unwrap_err(), error, "{text}");
        }
        assert!(Secret::parse(&key(24)).is_ok());
        assert!(Secret::parse(&key(64)).is_ok());
    }

    #[test]
    fn a_parse_error_never_quotes_the_text() {
        let text = "whsec_C2FVsBQIhrscChlQIMV-b5sSYspob7oD";
        let error = Secret::parse(text).unwrap_err();
        assert!(!format!("{error} {error:?}").contains("C2FVsBQI"));
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let mut keys = spec_keys();
        keys.rotate(Secret::generate(), 0);
        let new = keys.current.reveal();
        let shown = format!("{keys:?} {:?} {keys:#?}", keys.current);
        assert!(!shown.contains("C2FVsBQI"), "{shown}");
        assert!(!shown.contains(&new["whsec_".len()..]), "{shown}");
        assert!(!shown.contains("whsec_"), "{shown}");
    }

    #[test]
    fn rotation_signs_with_both_secrets_and_each_verifies() {
        let mut keys = spec_keys();
        keys.rotate(Secret::generate(), 1_000);
        let headers = keys.headers(&id("42"), 1_000, b"{}");
        let signatures: Vec<&str> = headers.signature.split(' ').collect();
        assert_eq!(signatures.len(), 2);
        for secret in [&keys.current, &keys.previous.as_ref().unwrap().secret] {
            assert_eq!(
                verify(secret, &headers, b"{}", 1_000, DEFAULT_TOLERANCE),
                Ok(())
            );
        }
    }

    #[test]
    fn rotation_signs_with_the_new_secret_first() {
        let mut keys = spec_keys();
        keys.rotate(Secret::generate(), 1_000);
        let headers = keys.headers(&id("42"), 1_000, b"{}");
        let first = headers.signature.split(' ').next().unwrap();
        assert_eq!(first, keys.current.signature(&id("42"), 1_000, b"{}"));
    }

    #[test]
    fn the_replaced_secret_stops_signing_after_a_day() {
        let mut keys = spec_keys();
        keys.rotate(Secret::generate(), 1_000);
        let day = ROTATION_OVERLAP.as_secs();
        assert_eq!(keys.signing(1_000 + day - 1).count(), 2);
        assert_eq!(keys.signing(1_000 + day).count(), 1);
        let headers = keys.headers(&id("42"), 1_000 + day, b"{}");
        let old = Secret::parse(SPEC_SECRET).unwrap();
        let checked = verify(&old, &headers, b"{}", 1_000 + day, DEFAULT_TOLERANCE);
        assert_eq!(checked, Err(VerifyError::NoMatch));
    }

    #[test]
    fn a_second_rotation_drops_the_oldest_secret() {
        let mut keys = spec_keys();
        keys.rotate(Secret::generate(), 1_000);
        keys.rotate(Secret::generate(), 1_001);
        let headers = keys.headers(&id("42"), 1_001, b"{}");
        assert_eq!(headers.signature.split(' ').count(), 2);
        let oldest = Secret::parse(SPEC_SECRET).unwrap();
        let checked = verify(&oldest, &headers, b"{}", 1_001, DEFAULT_TOLERANCE);
        assert_eq!(checked, Err(VerifyError::NoMatch));
    }

    #[test]
    fn a_tampered_body_fails() {
        let headers = spec_keys().headers(&id(SPEC_ID), SPEC_TIMESTAMP, SPEC_BODY);
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let tampered = br#"{"email":"evil@example.com","username":"test_user"}"#;
        let checked = verify(
            &secret,
            &headers,
            tampered,
            SPEC_TIMESTAMP,
            DEFAULT_TOLERANCE,
        );
        assert_eq!(checked, Err(VerifyError::NoMatch));
    }

    #[test]
    fn a_tampered_timestamp_fails() {
        let mut headers = spec_keys().headers(&id(SPEC_ID), SPEC_TIMESTAMP, SPEC_BODY);
        headers.timestamp = (SPEC_TIMESTAMP + 1).to_string();
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let checked = verify(
            &secret,
            &headers,
            SPEC_BODY,
            SPEC_TIMESTAMP,
            DEFAULT_TOLERANCE,
        );
        assert_eq!(checked, Err(VerifyError::NoMatch));
    }

    #[test]
    fn a_tampered_id_fails() {
        let mut headers = spec_keys().headers(&id(SPEC_ID), SPEC_TIMESTAMP, SPEC_BODY);
        headers.id = "msg_other".into();
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let checked = verify(
            &secret,
            &headers,
            SPEC_BODY,
            SPEC_TIMESTAMP,
            DEFAULT_TOLERANCE,
        );
        assert_eq!(checked, Err(VerifyError::NoMatch));
    }

    #[test]
    fn another_secret_fails() {
        let headers = spec_keys().headers(&id(SPEC_ID), SPEC_TIMESTAMP, SPEC_BODY);
        let checked = verify(
            &Secret::generate(),
            &headers,
            SPEC_BODY,
            SPEC_TIMESTAMP,
            DEFAULT_TOLERANCE,
        );
        assert_eq!(checked, Err(VerifyError::NoMatch));
    }

    #[test]
    fn a_timestamp_outside_the_tolerance_fails_either_way() {
        let headers = spec_keys().headers(&id(SPEC_ID), SPEC_TIMESTAMP, SPEC_BODY);
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let five_min = DEFAULT_TOLERANCE.as_secs();
        let at = |now| verify(&secret, &headers, SPEC_BODY, now, DEFAULT_TOLERANCE);
        assert_eq!(at(SPEC_TIMESTAMP + five_min + 1), Err(VerifyError::TooOld));
        assert_eq!(at(SPEC_TIMESTAMP - five_min - 1), Err(VerifyError::TooNew));
        assert_eq!(at(SPEC_TIMESTAMP - five_min), Ok(()));
    }

    #[test]
    fn a_timestamp_that_is_not_seconds_fails() {
        let mut headers = spec_keys().headers(&id(SPEC_ID), SPEC_TIMESTAMP, SPEC_BODY);
        headers.timestamp = "1649367553.0".into();
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let checked = verify(
            &secret,
            &headers,
            SPEC_BODY,
            SPEC_TIMESTAMP,
            DEFAULT_TOLERANCE,
        );
        assert_eq!(checked, Err(VerifyError::BadTimestamp));
    }

    #[test]
    fn verify_skips_other_schemes_and_garbage_before_a_match() {
        let mut headers = spec_keys().headers(&id(SPEC_ID), SPEC_TIMESTAMP, SPEC_BODY);
        headers.signature = format!("v1a,AAAA v1,not-base64 v1,AAAA {SPEC_SIGNATURE}");
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let checked = verify(
            &secret,
            &headers,
            SPEC_BODY,
            SPEC_TIMESTAMP,
            DEFAULT_TOLERANCE,
        );
        assert_eq!(checked, Ok(()));
    }

    #[test]
    fn a_message_id_refuses_dots_blanks_and_invisible_bytes() {
        for bad in ["", "a.b", "a b", "a\nb", "é", &"x".repeat(MAX_ID_LEN + 1)] {
            assert!(MessageId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(MessageId::parse("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk").is_ok());
    }
}
