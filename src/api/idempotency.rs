//! idempotency: the `Idempotency-Key` of a write as API.md's "Never twice"
//! states it: parsed, claimed in the store, the request run at most once,
//! its answer kept and replayed.
//!
//! Architecture invariant: a write with a key reaches Discord only after
//! `IdempotencyStore::claim` said `Fresh` or `Resume`; a replay, a 409 and a
//! 422 never reach it.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;
use crate::http::server::{Request, Response};
use crate::store::idempotency::{
    Answer, Claimed, Fingerprint, Finished, IdempotencyStore, KeyScope,
};

/// API.md: "1 to 255 characters of `A-Za-z0-9_.:-`".
const MAX_KEY_LEN: usize = 255;
/// Discord takes a nonce of at most 25 characters (message.mdx).
const NONCE_LEN: usize = 24;

/// A key made up here when the client sent none: 21 URL-safe characters,
/// 126 random bits.
pub(super) fn mint_key() -> String {
    nanoid::nanoid!()
}

/// The request's `Idempotency-Key`, without its optional double quotes.
pub(super) fn key_of(request: &Request) -> Result<Option<String>, ApiError> {
    let mut values = request.header_values("idempotency-key");
    let Some(raw) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            "`Idempotency-Key` is given more than once",
        ));
    }
    let raw = raw.trim();
    let key = raw
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(raw);
    let valid = (1..=MAX_KEY_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if !valid {
        return Err(ApiError::bad_request(
            "`Idempotency-Key` must be 1 to 255 characters of A-Z, a-z, 0-9, `_`, `.`, `:` and \
             `-`, optionally in double quotes",
        ));
    }
    Ok(Some(key.to_string()))
}

/// What makes two requests "the same request" for a key: method, route,
/// IDs and body (API.md: a different one is 422).
pub(super) fn fingerprint(request: &Request, body: &[u8]) -> Fingerprint {
    let mut hash = Sha256::new();
    for part in [
        request.method().as_bytes(),
        request.path().as_bytes(),
        request.query().as_bytes(),
        body,
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut fingerprint = Fingerprint::default();
    let len = fingerprint.len();
    fingerprint.copy_from_slice(&digest[..len]);
    fingerprint
}

/// The nonce of a message send: derived from the bot, the channel (or the
/// DM's user) and the key under a secret of this process, so it names
/// neither the key nor anything guessable, and differs per channel
/// (Discord scopes nonces to the author, not the channel: WRITES-NOTES
/// §3.1). The record keeps it, so every retry sends the first one.
pub(super) fn nonce(secret: &[u8; 32], bot: u64, target: u64, key: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"discord-bot-backend nonce v1");
    mac.update(&bot.to_be_bytes());
    mac.update(&target.to_be_bytes());
    mac.update(key.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut hex = crate::store::seal::hex(&digest);
    hex.truncate(NONCE_LEN);
    hex
}

/// How a keyed write runs.
pub(super) struct Keyed<'a> {
    pub(super) store: &'a dyn IdempotencyStore,
    pub(super) scope: KeyScope<'a>,
    pub(super) fingerprint: Fingerprint,
    /// The nonce to use if the key is new.
    pub(super) nonce: String,
    pub(super) lease: Duration,
    /// A message send: sending again with its nonce cannot duplicate.
    pub(super) resendable: bool,
}

/// Runs `write` (given the nonce to send) at most once for the key: the
/// first request runs it and its answer is kept; the same request again
/// gets that answer, marked replayed; a request still running, 409; a
/// different one, 422.
pub(super) fn run_once(
    keyed: Keyed<'_>,
    write: impl FnOnce(&str) -> Result<Response, ApiError>,
) -> Result<Response, ApiError> {
    let claimed = keyed
        .store
        .claim(keyed.scope, &keyed.fingerprint, &keyed.nonce, keyed.lease)?;
    let nonce = match claimed {
        Claimed::Fresh { nonce } => nonce,
        Claimed::Resume { nonce } if keyed.resendable => nonce,
        // Its instance died while it ran, and only a message send can be
        // sent again safely, within Discord's nonce window.
        Claimed::Resume { .. } | Claimed::Abandoned => {
            let unknown = ApiError::OutcomeUnknown {
                timeout: false,
                retry_safe: false,
                detail: "the instance running it stopped".into(),
            };
            finish(&keyed, &unknown.to_response(), false);
            return Err(unknown);
        }
        Claimed::Running { retry_after } => {
            count("in_use");
            return Err(ApiError::KeyInUse { retry_after });
        }
        Claimed::Mismatch => {
            count("reused");
            return Err(ApiError::KeyReused);
        }
        Claimed::Replay(answer) => {
            count("replay");
            return Ok(replayed(answer));
        }
    };
    let result = write(&nonce);
    match &result {
        Ok(response) => finish(&keyed, response, false),
        Err(error) if reached_discord(error) => {
            let unknown = matches!(
                error,
                ApiError::OutcomeUnknown { .. } | ApiError::Performed { .. }
            );
            let resendable = unknown && keyed.resendable;
            // What a later request with this key gets once it may not be
            // sent again: the same answer, saying so.
            let kept = match error {
                ApiError::OutcomeUnknown {
                    timeout, detail, ..
                } => ApiError::OutcomeUnknown {
                    timeout: *timeout,
                    retry_safe: false,
                    detail: detail.clone(),
                },
                ApiError::Performed { .. } => ApiError::Performed { retry_safe: false },
                other => other.clone(),
            };
            finish(&keyed, &kept.to_response(), resendable);
        }
        Err(_) => keyed.store.release(keyed.scope),
    }
    result.map_err(|error| match error {
        ApiError::OutcomeUnknown {
            timeout, detail, ..
        } => ApiError::OutcomeUnknown {
            timeout,
            retry_safe: keyed.resendable,
            detail,
        },
        ApiError::Performed { .. } => ApiError::Performed {
            retry_safe: keyed.resendable,
        },
        other => other,
    })
}

/// Whether an error is Discord's answer (or its loss) rather than a refusal
/// before sending: only those are kept for the key; after the others the
/// client may simply send again.
fn reached_discord(error: &ApiError) -> bool {
    match error {
        ApiError::DiscordRejected { .. }
        | ApiError::OutcomeUnknown { .. }
        | ApiError::Performed { .. } => true,
        ApiError::Forbidden { cached, .. } | ApiError::NotFound { cached, .. } => !cached,
        _ => false,
    }
}

/// Keeps the answer for the key: to replay, or (`resend`: a message send
/// whose outcome is unknown) to give once the nonce window is over, the
/// send going again with its nonce until then.
fn finish(keyed: &Keyed<'_>, response: &Response, resend: bool) {
    let answer = Answer {
        status: response.status,
        body: response.body.clone(),
    };
    let finished = if resend {
        Finished::Unknown {
            answer,
            resendable: true,
        }
    } else {
        Finished::Answered(answer)
    };
    if let Err(e) = keyed.store.finish(keyed.scope, finished) {
        // The write is done; only its replay is lost. The lease runs out
        // and a retry is then resumed (message sends) or reported unknown.
        log::warn!("cannot record the answer of an idempotent write: {e:?}");
    }
}

fn count(result: &'static str) {
    crate::observe::metrics::global()
        .idempotency
        .with_label_values(&[result])
        .inc();
}

/// A kept answer given again.
fn replayed(answer: Answer) -> Response {
    let mut response = if answer.status == 204 {
        Response::no_content()
    } else {
        Response::json(answer.status, answer.body)
    };
    response.header("Idempotent-Replayed", "true");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_key(value: &str) -> Request {
        Request::for_test("POST", "/api/messages", &[("Idempotency-Key", value)], b"")
    }

    #[test]
    fn a_key_may_be_quoted_and_the_quotes_are_not_part_of_it() {
        assert_eq!(
            key_of(&with_key("\"abc-1\"")).unwrap().as_deref(),
            Some("abc-1")
        );
        assert_eq!(
            key_of(&with_key("a.b:c_d-E9")).unwrap().as_deref(),
            Some("a.b:c_d-E9")
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in ["", "\"\"", "a b", "a/b", "é", &"k".repeat(256), "\"abc"] {
            assert!(key_of(&with_key(bad)).is_err(), "{bad:?}");
        }
        assert!(key_of(&with_key(&"k".repeat(255))).is_ok());
    }

    #[test]
    fn nonces_fit_discord_and_differ_by_channel_and_key() {
        let secret = [7; 32];
        let a = nonce(&secret, 1, 2, "k");
        assert_eq!(a.len(), NONCE_LEN);
        assert_ne!(a, nonce(&secret, 1, 3, "k"));
        assert_ne!(a, nonce(&secret, 1, 2, "k2"));
        assert_eq!(a, nonce(&secret, 1, 2, "k"));
        assert!(!a.contains('k'));
    }

    #[test]
    fn the_fingerprint_covers_route_ids_and_body() {
        let request = |target| Request::for_test("POST", target, &[], b"");
        let base = fingerprint(&request("/api/messages?channelId=1"), b"{}");
        assert_ne!(
            base,
            fingerprint(&request("/api/messages?channelId=2"), b"{}")
        );
        assert_ne!(
            base,
            fingerprint(&request("/api/messages?channelId=1"), b"{ }")
        );
        assert_eq!(
            base,
            fingerprint(&request("/api/messages?channelId=1"), b"{}")
        );
    }
}
