//! cluster: one Gateway connection per bot across every instance that
//! shares a Redis (`--redis-url`), and every event seen by every instance's
//! streams, once and in order (issue #13, "Cluster").
//!
//! How: the instance that holds the bot's lease (a Redis key with a fencing
//! number, renewed every `TICK`, lost after `LEASE_TTL`) runs the Gateway
//! and publishes each dispatch into the bot's Redis Stream through a script
//! that checks the fence and drops a sequence not newer than the last one
//! published for the shard. Every instance, the holder included, reads the
//! stream (`reader`) into its local ring, so IDs and order are the same
//! everywhere. The stream also keeps the published sequence per shard: the
//! instance that takes over resumes from there, so a failover loses nothing
//! Discord still replays and publishes nothing twice.
//!
//! Invariants:
//! - a publish that fails poisons its publisher: nothing after it is
//!   published (a later sequence would hide the lost one), the Gateway is
//!   stopped resumably and the lease given up, so the next holder resumes
//!   from the last sequence that reached Redis;
//! - a holder whose renewal fails stops its Gateway at once; the fence in
//!   the script already refuses what it might still publish;
//! - the Gateway runs while any instance has a subscriber (`want`), and
//!   closes `IDLE_CLOSE` after the last is gone, cluster-wide.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::discord::gateway::{Dispatch, EventSink, Marker, ResumeState};

use super::{BotEvents, Events, close_in_background, observe_marker, spawn_loop};

/// How long a lease outlives its holder's last renewal: a dead holder's
/// bot is taken over after at most this plus one `TICK`.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// How often leases are renewed, wanted bots claimed and sessions saved.
pub const TICK: Duration = Duration::from_secs(1);

/// How long one read of the streams blocks when nothing arrives.
pub const READ_WAIT: Duration = Duration::from_millis(500);

/// The stream keeps about as many events as a ring (`ring::MAX_EVENTS`).
pub const STREAM_LEN: usize = super::ring::MAX_EVENTS;

/// One event as the Redis Stream holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    pub kind: String,
    pub shard: [u16; 2],
    pub guild_id: Option<u64>,
    pub channel_id: Option<u64>,
    pub marker: bool,
    /// RFC 3339, set once by the publisher, so every instance's envelope
    /// is the same bytes.
    pub received_at: String,
    /// Discord's `d` (a marker's details), unchanged.
    pub data: String,
}

/// What a publish carries besides the entry's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position<'a> {
    /// A dispatch with Discord's sequence in its shard's session: dropped
    /// when not newer than the last published.
    Seq(u64),
    /// A new session (READY): kept, with the sequence it starts at, in the
    /// same step as the marker, so the next holder resumes exactly what
    /// was published of it.
    Ready(&'a ResumeState),
    /// A marker that does not move the sequence.
    None,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    Id(u64),
    /// Already published (a replay after a failover).
    Duplicate,
    /// The lease is another's now: this publisher must stop.
    Fenced,
}

/// What the cluster's events need from the shared store (`store::redis`
/// implements it). Errors are reasons for logs; they never name a key.
pub trait Relay: Send + Sync {
    /// Takes the bot's lease if nobody holds it: its fencing number.
    fn acquire(&self, bot: u64) -> Result<Option<u64>, String>;
    /// Extends the lease; false when it is no longer this fence's.
    fn renew(&self, bot: u64, fence: u64) -> Result<bool, String>;
    /// Gives the lease up, if still this fence's.
    fn release(&self, bot: u64, fence: u64);
    /// The shards' sessions to resume, each at the last sequence published.
    fn sessions(&self, bot: u64) -> Result<Vec<ResumeState>, String>;
    /// The bot is gone for good: its sessions are not to be resumed.
    fn forget_sessions(&self, bot: u64);
    fn publish(
        &self,
        bot: u64,
        fence: u64,
        entry: &Entry,
        at: Position,
    ) -> Result<Published, String>;
    /// What the bot's stream keeps, oldest first.
    fn backfill(&self, bot: u64) -> Result<Vec<Entry>, String>;
    /// Entries after each `(bot, last ID)`, waiting up to `wait` for one.
    fn read(&self, after: &[(u64, u64)], wait: Duration) -> Result<Vec<(u64, Entry)>, String>;
    /// This instance has subscribers of these bots (for `TICK` × 3).
    fn want(&self, bots: &[u64]) -> Result<(), String>;
    /// Whether any instance has a subscriber of the bot.
    fn wanted(&self, bot: u64) -> Result<bool, String>;
    /// The holder's Gateway state (`GET /api/gateway`'s JSON), for the
    /// other instances, if still the fence's; it lapses with the lease.
    fn share_status(&self, bot: u64, fence: u64, status: &str) -> Result<(), String>;
    /// The state the holder shared last, if any holder is alive.
    fn status(&self, bot: u64) -> Result<Option<String>, String>;
    /// Asks the holder, wherever it is, to close the bot's Gateway for
    /// good (its last session logged out).
    fn mark_gone(&self, bot: u64);
    /// Whether the bot was marked gone; clears the mark.
    fn take_gone(&self, bot: u64) -> bool;
}

/// The holder's sink: the Gateway's dispatches and markers go to Redis,
/// not to the local ring (the reader brings them back like everyone's).
pub(super) struct Publisher {
    pub(super) events: Arc<BotEvents>,
    pub(super) relay: Arc<dyn Relay>,
    pub(super) fence: u64,
    /// Set by a failed or fenced publish: nothing more is published.
    pub(super) poisoned: AtomicBool,
    /// When the lease was last renewed (or taken): past `LEASE_TTL` minus
    /// `SAFETY` without a renewal, another instance may hold it already.
    pub(super) renewed_at: parking_lot::Mutex<Instant>,
}

/// How long before the lease could lapse in Redis the holder gives up on
/// its own, whatever Redis says (or does not say) in time.
const SAFETY: Duration = Duration::from_secs(3);

impl Publisher {
    pub(super) fn poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst) || self.overdue()
    }

    /// The lease has gone too long without a renewal to count on it.
    fn overdue(&self) -> bool {
        self.renewed_at.lock().elapsed() >= LEASE_TTL - SAFETY
    }

    /// After its Gateway stopped resumably: gives the lease up, so the next
    /// holder need not wait for it to run out (the sessions are kept).
    pub(super) fn hand_over(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
        self.relay.release(self.events.bot_id, self.fence);
    }

    fn publish(&self, entry: &Entry, at: Position<'_>) {
        if self.poisoned() {
            return;
        }
        match self
            .relay
            .publish(self.events.bot_id, self.fence, entry, at)
        {
            Ok(Published::Id(_) | Published::Duplicate) => {}
            Ok(Published::Fenced) => {
                log::warn!(
                    "bot {}: another instance holds the Gateway now; this one stops publishing",
                    self.events.bot_id
                );
                self.poisoned.store(true, Ordering::SeqCst);
            }
            Err(reason) => {
                log::warn!(
                    "bot {}: an event could not be published to Redis ({reason}); the Gateway \
                     stops and is resumed from the last event published",
                    self.events.bot_id
                );
                self.poisoned.store(true, Ordering::SeqCst);
            }
        }
    }
}

impl EventSink for Publisher {
    fn dispatch(&self, event: &Dispatch<'_>) {
        crate::observe::metrics::global().gateway_events.inc();
        let entry = Entry {
            id: 0,
            kind: event.kind.to_string(),
            shard: event.shard,
            guild_id: event.guild_id,
            channel_id: event.channel_id,
            marker: false,
            received_at: super::now_rfc3339(),
            data: event.data.get().to_string(),
        };
        self.publish(&entry, Position::Seq(event.session_seq));
    }

    fn marker(&self, marker: &Marker) {
        let (kind, shard, data) = observe_marker(marker);
        let entry = Entry {
            id: 0,
            kind: kind.to_string(),
            shard,
            guild_id: None,
            channel_id: None,
            marker: true,
            received_at: super::now_rfc3339(),
            data: data.to_string(),
        };
        let at = match marker {
            Marker::Ready { session, .. } => Position::Ready(session),
            _ => Position::None,
        };
        self.publish(&entry, at);
    }
}

/// The cluster's side of `Events`: claiming leases, keeping them, reading
/// the shared streams.
impl Events {
    /// Takes the bot's lease if nobody holds it, and starts its Gateway
    /// publishing to the shared stream.
    pub(super) fn claim(&self, relay: &Arc<dyn Relay>, events: &Arc<BotEvents>) {
        let mut publisher = events.publisher.lock();
        if publisher.is_some() {
            return;
        }
        let Some(bot) = events.bot.lock().clone() else {
            return;
        };
        let fence = match relay.acquire(events.bot_id) {
            Ok(Some(fence)) => fence,
            Ok(None) => return,
            Err(reason) => {
                log::warn!(
                    "cannot claim the Gateway of bot {}: {reason}",
                    events.bot_id
                );
                return;
            }
        };
        let resume = relay.sessions(events.bot_id).unwrap_or_else(|reason| {
            log::warn!(
                "cannot read the Gateway sessions of bot {} ({reason}): identifying",
                events.bot_id
            );
            Vec::new()
        });
        log::info!(
            "this instance holds the Gateway of bot {} (fence {fence}; {} session(s) to resume)",
            events.bot_id,
            resume.len()
        );
        let sink = Arc::new(Publisher {
            events: Arc::clone(events),
            relay: Arc::clone(relay),
            fence,
            poisoned: AtomicBool::new(false),
            renewed_at: parking_lot::Mutex::new(Instant::now()),
        });
        let gateway = (self.starter)(bot, Arc::clone(&sink) as _, resume);
        *events.gateway.lock() = Some(gateway);
        *publisher = Some(sink);
    }

    /// One pass of the cluster's ticker: says which bots this instance
    /// wants, keeps the leases it holds, claims those it wants.
    pub fn cluster_tick(&self) {
        let Some(relay) = &self.relay else {
            return;
        };
        if *self.checkpointing.lock() {
            return;
        }
        let bots: Vec<Arc<BotEvents>> = self.bots.lock().values().cloned().collect();
        // Before any Redis call (each may take `--redis-timeout`): a lease
        // that may have lapsed stops its Gateway now, not after the others'
        // turns.
        for events in &bots {
            let overdue = events.publisher.lock().clone().filter(|p| p.overdue());
            if let Some(publisher) = overdue {
                self.keep(relay, events, &publisher);
            }
        }
        let wanted: Vec<u64> = bots
            .iter()
            .filter(|e| e.subscribers() > 0)
            .map(|e| e.bot_id)
            .collect();
        if let Err(reason) = relay.want(&wanted) {
            log::warn!("cannot tell the cluster which bots this instance wants: {reason}");
        }
        for events in bots {
            let held = events.publisher.lock().clone();
            match held {
                Some(publisher) => self.keep(relay, &events, &publisher),
                None if events.subscribers() > 0 => self.claim(relay, &events),
                None => {}
            }
        }
    }

    /// Renews a held lease, or lets the Gateway go: the lease was lost, a
    /// publish failed, the bot is gone, or no instance wants it any more.
    fn keep(&self, relay: &Arc<dyn Relay>, events: &Arc<BotEvents>, publisher: &Arc<Publisher>) {
        let bot_id = events.bot_id;
        let renewed = !publisher.poisoned() && relay.renew(bot_id, publisher.fence) == Ok(true);
        if renewed {
            *publisher.renewed_at.lock() = Instant::now();
        }
        let gone = renewed && relay.take_gone(bot_id);
        let idle = renewed && !gone && {
            let wanted = relay.wanted(bot_id).unwrap_or(true);
            let mut since = events.idle_since.lock();
            if wanted {
                *since = None;
                false
            } else {
                since.get_or_insert_with(Instant::now).elapsed() >= self.idle_close
            }
        };
        if renewed && !gone && !idle {
            let status = events.gateway.lock().as_ref().map(|g| g.status());
            if let Some(status) = status
                && let Err(reason) = relay.share_status(
                    bot_id,
                    publisher.fence,
                    &serde_json::to_string(&status).unwrap_or_default(),
                )
            {
                log::warn!("cannot share the Gateway state of bot {bot_id}: {reason}");
            }
            return;
        }
        // Nothing more is published from here on, whatever the Gateway
        // still receives.
        publisher.poisoned.store(true, Ordering::SeqCst);
        // Both under the publisher's lock, so a claim in between cannot
        // install a Gateway this then stops.
        let mut held = events.publisher.lock();
        held.take();
        let gateway = events.gateway.lock().take();
        drop(held);
        let Some(gateway) = gateway else {
            return;
        };
        let publisher = Arc::clone(publisher);
        if !renewed {
            log::warn!(
                "bot {bot_id}: the Gateway lease could not be kept; its connection closes \
                 (resumable) for the instance that takes over"
            );
            // Given up too, when it is still ours (a failed publish), so
            // the next holder need not wait for it to run out.
            close_in_background(bot_id, move || {
                gateway.stop(false);
                publisher.relay.release(bot_id, publisher.fence);
            });
        } else if gone {
            log::info!("Gateway of bot {bot_id} closed: the bot has no session left");
            close_in_background(bot_id, move || {
                gateway.stop(true);
                publisher.relay.forget_sessions(bot_id);
                publisher.relay.release(bot_id, publisher.fence);
            });
        } else {
            log::info!(
                "Gateway of bot {bot_id} closed: no subscriber on any instance for {} s",
                self.idle_close.as_secs()
            );
            *events.idle_since.lock() = None;
            close_in_background(bot_id, move || {
                gateway.stop(false);
                publisher.hand_over();
            });
        }
    }

    /// One read of the shared streams into the local rings; waits up to
    /// `READ_WAIT` for something to arrive.
    pub fn cluster_read(&self) {
        let Some(relay) = &self.relay else {
            return;
        };
        let bots = self.bots.lock().clone();
        if bots.is_empty() {
            std::thread::sleep(READ_WAIT);
            return;
        }
        let after: Vec<(u64, u64)> = bots
            .values()
            .map(|e| (e.bot_id, e.ring.last_id()))
            .collect();
        match relay.read(&after, READ_WAIT) {
            Ok(entries) => {
                for (bot_id, entry) in entries {
                    if let Some(events) = bots.get(&bot_id) {
                        events.push_entry(&entry);
                    }
                }
            }
            Err(reason) => {
                log::warn!("cannot read the cluster's events: {reason}");
                std::thread::sleep(TICK);
            }
        }
    }
}

/// Runs the cluster's ticker and reader until `events` is gone; nothing
/// without a relay.
pub fn spawn_cluster(events: std::sync::Weak<Events>) {
    if events.upgrade().is_none_or(|e| e.relay.is_none()) {
        return;
    }
    let ticker = events.clone();
    spawn_loop("cluster-leases", move || match ticker.upgrade() {
        Some(events) => {
            events.cluster_tick();
            drop(events);
            std::thread::sleep(TICK);
            true
        }
        None => false,
    });
    spawn_loop("cluster-events", move || match events.upgrade() {
        Some(events) => {
            events.cluster_read();
            true
        }
        None => false,
    });
}

/// Milliseconds since the Unix epoch, for lease and interest deadlines.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
