//! checkpoint: what a bot's events leave for the next run of the service,
//! so a restart resumes the Gateway session (free) instead of identifying
//! (one of the day's 1,000 session starts), and event IDs keep increasing.
//!
//! The seam: `events` says what to keep (`Saved`), a store keeps it
//! (`--data-dir`: SQLite; Redis: shared); without either nothing is kept.
//!
//! Why a `clean` flag: after a graceful stop the saved last ID is exact and
//! IDs continue right after it, so a client's `Last-Event-ID` still means
//! the same event and its stream resumes with nothing missed or repeated.
//! After a crash the last checkpoint (at most `EVERY` old) is behind what
//! streams were sent; IDs then jump by `CRASH_SKIP`, so no ID is ever given
//! to two events, and a reconnecting client is told `stream.gap`.

use std::time::Duration;

use crate::discord::gateway::ResumeState;

/// How often running bots are checkpointed.
pub const EVERY: Duration = Duration::from_secs(1);

/// How far IDs jump after a crash: more events than any bot receives
/// between two checkpoints, so nothing issued before the crash is reused.
pub const CRASH_SKIP: u64 = 1 << 32;

/// One bot's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The last event ID given (0: none).
    pub last_id: u64,
    /// Written by a graceful stop: `last_id` is exact.
    pub clean: bool,
    /// The shards' Gateway sessions, to resume.
    pub resume: Vec<ResumeState>,
}

impl Saved {
    /// The ID the bot's next event gets.
    pub fn next_id(&self) -> u64 {
        if self.clean {
            self.last_id.saturating_add(1)
        } else {
            self.last_id.saturating_add(CRASH_SKIP) + 1
        }
    }
}

/// Where checkpoints are kept. Failures are logged by the implementation:
/// a lost checkpoint costs a session start, never an event.
pub trait Checkpoints: Send + Sync {
    /// The bot's checkpoint; the store's copy becomes unclean at once, at
    /// the ID this run starts from: a crash before the next checkpoint
    /// must skip past what this run may give.
    fn take(&self, bot_id: u64) -> Option<Saved>;
    /// Replaces the bot's checkpoint.
    fn save(&self, bot_id: u64, saved: &Saved);
}

/// No store: nothing survives the process.
pub struct NoCheckpoints;

impl Checkpoints for NoCheckpoints {
    fn take(&self, _: u64) -> Option<Saved> {
        None
    }

    fn save(&self, _: u64, _: &Saved) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_graceful_stop_ids_continue_right_after_the_last() {
        let saved = Saved {
            last_id: 41,
            clean: true,
            resume: Vec::new(),
        };
        assert_eq!(saved.next_id(), 42);
    }

    #[test]
    fn after_a_crash_ids_skip_past_anything_given_since_the_checkpoint() {
        let saved = Saved {
            last_id: 41,
            clean: false,
            resume: Vec::new(),
        };
        assert_eq!(saved.next_id(), 42 + CRASH_SKIP);
    }
}
