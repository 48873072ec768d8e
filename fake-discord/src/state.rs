//! The mutable part of the fake Discord: what write routes changed.
//!
//! Why it exists: the world (`world.rs`) is immutable and generated; writes
//! need somewhere to keep messages created through the API, deletions (of
//! created and of generated messages), reactions, the nonces Discord
//! deduplicates on, and opened DM channels. Tests read all of it through the
//! control API, and `POST /_fake/reset` clears it.
//!
//! Invariants:
//! - one lock guards everything, and a write route does its whole
//!   check-then-change under it, so two concurrent sends with the same
//!   enforced nonce create exactly one message;
//! - ids minted here are real snowflakes (current time in the top 42 bits)
//!   and strictly increasing, so created messages sort after older ones;
//! - a deleted message stays in `messages` (flagged through `deleted`), so a
//!   nonce that points at it can answer 404 10008 as Discord does.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::timefmt::DISCORD_EPOCH_MS;

/// When the nonce map grows past this many entries, expired ones are swept.
const NONCE_SWEEP_THRESHOLD: usize = 4096;

/// A message created through `POST /channels/{id}/messages`.
#[derive(Debug, Clone)]
pub struct Stored {
    pub channel_id: u64,
    /// The bot that created it; only it may edit the content.
    pub author: u64,
    /// The message object as returned to the client.
    pub message: Value,
    /// `allowed_mentions` as received (null when absent), for the control API.
    pub allowed_mentions: Value,
    pub enforce_nonce: bool,
}

/// Where a bot's nonce points, and since when.
#[derive(Debug, Clone, Copy)]
pub struct NonceEntry {
    pub message_id: u64,
    pub at: Instant,
}

/// A DM channel opened with `POST /users/@me/channels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dm {
    pub bot: u64,
    pub recipient: u64,
}

/// Everything the write routes change.
#[derive(Debug, Default)]
pub struct Inner {
    /// Created messages by id (deleted ones included).
    pub messages: HashMap<u64, Stored>,
    /// Created message ids per channel, ascending (deleted ones included).
    pub by_channel: HashMap<u64, Vec<u64>>,
    /// Deleted message ids, created or generated.
    pub deleted: HashSet<u64>,
    /// Per message: emoji (decoded) → user ids that reacted with it.
    pub reactions: HashMap<u64, BTreeMap<String, BTreeSet<u64>>>,
    /// (bot id, nonce as a string) → the message created with it.
    pub nonces: HashMap<(u64, String), NonceEntry>,
    /// DM channels by channel id.
    pub dms: HashMap<u64, Dm>,
    /// The last id minted, to keep ids strictly increasing.
    last_id: u64,
}

impl Inner {
    /// A fresh snowflake for the Unix time `now_ms`: strictly greater than
    /// every id minted before.
    pub fn next_id(&mut self, now_ms: u64) -> u64 {
        let candidate = (now_ms.saturating_sub(DISCORD_EPOCH_MS) << 22) | (1 << 17);
        self.last_id = candidate.max(self.last_id + 1);
        self.last_id
    }

    /// Stores a created message.
    pub fn insert(&mut self, id: u64, stored: Stored) {
        self.by_channel
            .entry(stored.channel_id)
            .or_default()
            .push(id);
        self.messages.insert(id, stored);
    }

    /// The live (not deleted) created messages of a channel, oldest first.
    pub fn live_in(&self, channel_id: u64) -> impl Iterator<Item = (u64, &Stored)> {
        self.by_channel
            .get(&channel_id)
            .into_iter()
            .flatten()
            .filter(|id| !self.deleted.contains(id))
            .filter_map(|id| self.messages.get(id).map(|m| (*id, m)))
    }

    /// The message a bot's nonce points at, if used within `window`.
    pub fn nonce(&self, bot: u64, nonce: &str, window: Duration, now: Instant) -> Option<u64> {
        self.nonces
            .get(&(bot, nonce.to_string()))
            .filter(|e| now.saturating_duration_since(e.at) < window)
            .map(|e| e.message_id)
    }

    /// Remembers a nonce unless an unexpired use of it is already known
    /// (Discord returns "that message", the first one, on a duplicate).
    pub fn remember_nonce(
        &mut self,
        bot: u64,
        nonce: &str,
        message_id: u64,
        window: Duration,
        now: Instant,
    ) {
        if self.nonces.len() > NONCE_SWEEP_THRESHOLD {
            self.nonces
                .retain(|_, e| now.saturating_duration_since(e.at) < window);
        }
        let entry = self
            .nonces
            .entry((bot, nonce.to_string()))
            .or_insert(NonceEntry {
                message_id,
                at: now,
            });
        if now.saturating_duration_since(entry.at) >= window {
            *entry = NonceEntry {
                message_id,
                at: now,
            };
        }
    }
}

/// The shared, lock-guarded state.
#[derive(Debug, Default)]
pub struct Store {
    inner: Mutex<Inner>,
}

impl Store {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `POST /_fake/reset`: forget every write.
    pub fn reset(&self) {
        *self.lock() = Inner::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_snowflakes_of_now_and_strictly_increasing() {
        let mut inner = Inner::default();
        let now = 1_700_000_000_000;
        let a = inner.next_id(now);
        let b = inner.next_id(now);
        assert!(b > a);
        assert_eq!((a >> 22) + DISCORD_EPOCH_MS, now);
    }

    #[test]
    fn a_nonce_points_at_its_first_message_until_the_window_ends() {
        let mut inner = Inner::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        inner.remember_nonce(1, "n", 100, w, t0);
        inner.remember_nonce(1, "n", 200, w, t0 + Duration::from_secs(1));
        assert_eq!(
            inner.nonce(1, "n", w, t0 + Duration::from_secs(2)),
            Some(100)
        );
        assert_eq!(inner.nonce(2, "n", w, t0), None);
        assert_eq!(inner.nonce(1, "n", w, t0 + w), None);
        inner.remember_nonce(1, "n", 300, w, t0 + w);
        assert_eq!(inner.nonce(1, "n", w, t0 + w), Some(300));
    }
}
