//! seal: what keeps a Redis dump useless to whoever holds it.
//!
//! Several instances share sessions through Redis, so Redis must hold what a
//! request needs: which bot a session belongs to, and that bot's token. A
//! dump of Redis (a backup, a replica, a snapshot left on a disk) must not
//! let anyone call Discord or the API. So, under the `--session-key` every
//! instance shares:
//!
//! - a token is *sealed* with ChaCha20-Poly1305 (an AEAD: a changed byte is
//!   refused, not decrypted to garbage), a fresh random 96-bit nonce each
//!   time, stored as `nonce || ciphertext`;
//! - a session ID is stored only as HMAC-SHA256(session subkey, ID): a
//!   lookup recomputes it, and the stored value cannot be presented back;
//! - a bot's index key is HMAC-SHA256(bot subkey, token): it groups a bot's
//!   sessions without naming the token.
//!
//! The three subkeys are derived from the one key with HMAC and distinct
//! labels, so no key does two jobs.
//!
//! Architecture invariants: no key, subkey, token or plaintext is ever
//! formatted (`SessionKey`'s `Debug` is redacted); opening never panics on
//! hostile input.

use std::fmt;

use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Nonce length of ChaCha20-Poly1305.
const NONCE_LEN: usize = 12;
/// Bound to every sealed token: a sealed value from another use of the key
/// (should there ever be one) does not open as a token.
const TOKEN_AAD: &[u8] = b"discord-bot-backend token v1";

/// The 32-byte `--session-key`, and the subkeys derived from it.
#[derive(Clone)]
pub struct SessionKey {
    cipher: ChaCha20Poly1305,
    session: [u8; 32],
    bot: [u8; 32],
    nonce: [u8; 32],
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

impl PartialEq for SessionKey {
    /// Keys are compared by a derived value, never shown; for config tests.
    fn eq(&self, other: &Self) -> bool {
        self.session == other.session
    }
}

impl SessionKey {
    /// Parses 64 hex characters (32 bytes), e.g. `openssl rand -hex 32`.
    pub fn parse(text: &str) -> Result<SessionKey, String> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(
                "expected 64 hex characters (32 bytes), e.g. from `openssl rand -hex 32`".into(),
            );
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("checked hex");
        }
        Ok(SessionKey::from_bytes(&key))
    }

    fn from_bytes(key: &[u8; 32]) -> SessionKey {
        let seal = derive(key, b"seal");
        SessionKey {
            cipher: ChaCha20Poly1305::new(&Key::from(seal)),
            session: derive(key, b"session"),
            bot: derive(key, b"bot"),
            nonce: derive(key, b"nonce"),
        }
    }

    /// The secret message nonces are derived under: the same on every
    /// instance that shares the key, so a send retried on another instance
    /// carries the first one's nonce.
    pub fn nonce_secret(&self) -> [u8; 32] {
        self.nonce
    }

    /// Seals a secret: `nonce || ciphertext+tag`, bound to `context` (what
    /// the secret belongs to), so a sealed value copied to another place
    /// does not open there.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let aad = [TOKEN_AAD, context].concat();
        let nonce = Nonce::generate();
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any message shorter than 256 GiB");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what `seal` made under the same key; `None` for anything else
    /// (another key, a changed byte, a truncated value).
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Option<Vec<u8>> {
        let aad = [TOKEN_AAD, context].concat();
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).ok()?;
        self.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()
    }

    /// The Redis name of a session ID: hex HMAC-SHA256 under the session
    /// subkey.
    pub fn session_hash(&self, session_id: &str) -> String {
        hex(&self.session_digest(session_id))
    }

    /// HMAC-SHA256 of a session ID under the session subkey: how the
    /// embedded database knows a session.
    pub fn session_digest(&self, session_id: &str) -> [u8; 32] {
        mac(&self.session, session_id.as_bytes())
    }

    /// HMAC-SHA256 of a token under the bot subkey: how the embedded
    /// database knows a bot.
    pub fn bot_digest(&self, token_secret: &[u8]) -> [u8; 32] {
        mac(&self.bot, token_secret)
    }

    /// The Redis name of a bot: hex HMAC-SHA256 of its token under the bot
    /// subkey (the same on every instance, unlike `BotRegistry`'s
    /// per-process fingerprint).
    pub fn bot_hash(&self, token_secret: &[u8]) -> String {
        hex(&self.bot_digest(token_secret))
    }
}

fn mac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn derive(key: &[u8; 32], label: &[u8]) -> [u8; 32] {
    mac(key, label)
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn key_must_be_64_hex_characters() {
        assert!(SessionKey::parse(KEY).is_ok());
        assert!(SessionKey::parse(&KEY[..62]).is_err());
        assert!(SessionKey::parse(&KEY.replace('0', "g")).is_err());
    }

    #[test]
    fn sealed_opens_with_the_key_and_hides_the_plaintext() {
        let key = SessionKey::parse(KEY).unwrap();
        let a = key.seal(b"Bot secret-token", b"here");
        let b = key.seal(b"Bot secret-token", b"here");
        assert_ne!(a, b, "a fresh nonce each time");
        assert!(!a.windows(6).any(|w| w == b"secret"));
        assert_eq!(key.open(&a, b"here").unwrap(), b"Bot secret-token");
    }

    #[test]
    fn tampered_truncated_or_foreign_values_do_not_open() {
        let key = SessionKey::parse(KEY).unwrap();
        let other = SessionKey::parse(&KEY.replace('1', "2")).unwrap();
        let mut sealed = key.seal(b"token", b"here");
        assert!(other.open(&sealed, b"here").is_none());
        assert!(key.open(&sealed[..5], b"here").is_none());
        assert!(
            key.open(&sealed, b"elsewhere").is_none(),
            "bound to its context"
        );
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(key.open(&sealed, b"here").is_none());
    }

    #[test]
    fn hashes_are_keyed_and_distinct_per_use() {
        let key = SessionKey::parse(KEY).unwrap();
        let other = SessionKey::parse(&KEY.replace('1', "2")).unwrap();
        let h = key.session_hash("V1StGXR8_Z5jdHi6B-myT");
        assert_eq!(h.len(), 64);
        assert_ne!(h, other.session_hash("V1StGXR8_Z5jdHi6B-myT"));
        assert_ne!(h, key.bot_hash(b"V1StGXR8_Z5jdHi6B-myT"));
        assert!(!format!("{key:?}").contains("0001"));
    }
}
