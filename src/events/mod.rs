//! events: what the bots' Gateway connections deliver, kept per bot in a
//! ring (`ring`) that every stream of the bot reads (API.md, "Events").
//!
//! Owns: event IDs, the envelope and SSE frame of each event, which bots
//! have subscribers; what of them survives a restart (`checkpoint`) and how
//! instances share them (`cluster`).
//!
//! Architecture invariants:
//! - imports only `discord` and `observe`: it knows no HTTP request, status
//!   or session (`api` checks those and hands it a bot);
//! - one Gateway connection per bot, started by its first subscriber and
//!   closed (resumably) `IDLE_CLOSE` after its last;
//! - an event is rendered once, into the frame every stream writes;
//! - Discord's `d` reaches streams as Discord's bytes, never re-serialised.

pub mod checkpoint;
pub mod cluster;
pub mod ring;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;

use crate::discord::bots::Bot;
use crate::discord::gateway::{
    BotGateway, Dispatch, EventSink, GatewayStatus, Marker, ResumeState,
};
use crate::observe::metrics;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use checkpoint::{Checkpoints, NoCheckpoints, Saved};
pub use cluster::{Entry, Position, Published, Relay, spawn_cluster};
pub use ring::{Frame, Read, Ring};

/// API.md: the Gateway "closes 15 minutes after the last [subscriber] is
/// gone": each start costs one of the day's 1,000 session starts.
pub const IDLE_CLOSE: Duration = Duration::from_secs(15 * 60);

/// Starts a bot's Gateway connection, delivering to the sink and resuming
/// the sessions given (`main` wires it to `BotGateway::start` with the
/// Discord client and the options).
pub type Starter =
    Box<dyn Fn(Arc<Bot>, Arc<dyn EventSink>, Vec<ResumeState>) -> BotGateway + Send + Sync>;

/// Every bot with a ring: created with its first subscriber, and its
/// Gateway connection, started then.
pub struct Events {
    bots: Mutex<HashMap<u64, Arc<BotEvents>>>,
    starter: Starter,
    idle_close: Duration,
    checkpoints: Arc<dyn Checkpoints>,
    /// Held through a checkpoint pass and through `stop_all`, so a pass
    /// never overwrites the exact checkpoint a graceful stop wrote.
    checkpointing: Mutex<bool>,
    /// With `--redis-url`: the cluster's leases and shared streams.
    relay: Option<Arc<dyn Relay>>,
}

impl Events {
    pub fn new(starter: Starter, idle_close: Duration) -> Events {
        Events {
            bots: Mutex::default(),
            starter,
            idle_close,
            checkpoints: Arc::new(NoCheckpoints),
            checkpointing: Mutex::new(false),
            relay: None,
        }
    }

    /// Shares each bot's Gateway connection and events with every instance
    /// of the cluster (`cluster`); call `spawn_cluster` to run it.
    pub fn with_relay(mut self, relay: Arc<dyn Relay>) -> Events {
        self.relay = Some(relay);
        self
    }

    /// Keeps each bot's last event ID and Gateway sessions in `checkpoints`
    /// (see `checkpoint`); call `checkpoint` every `checkpoint::EVERY`.
    pub fn with_checkpoints(mut self, checkpoints: Arc<dyn Checkpoints>) -> Events {
        self.checkpoints = checkpoints;
        self
    }

    /// The bot's events, made on first use, continuing from its checkpoint.
    pub fn bot(&self, bot_id: u64) -> Arc<BotEvents> {
        let Some(relay) = &self.relay else {
            // Under the lock: a checkpoint is taken once (it marks itself
            // unclean); one local SQLite read and write, once per bot.
            let mut bots = self.bots.lock();
            return Arc::clone(bots.entry(bot_id).or_insert_with(|| {
                let saved = self.checkpoints.take(bot_id);
                Arc::new(BotEvents::new(bot_id, saved))
            }));
        };
        if let Some(events) = self.bots.lock().get(&bot_id) {
            return Arc::clone(events);
        }
        // Outside the lock: reading what the stream keeps is a round trip
        // to Redis no other bot should wait for. Two first uses may both
        // read; the first into the map is kept.
        let made = BotEvents::shared(bot_id, &**relay);
        Arc::clone(self.bots.lock().entry(bot_id).or_insert(made))
    }

    /// A subscriber of the bot's events for as long as the guard lives; the
    /// first one starts the bot's Gateway connection.
    pub fn subscribe(&self, bot: &Arc<Bot>, bot_id: u64) -> (Arc<BotEvents>, Subscriber) {
        let events = self.bot(bot_id);
        let subscriber = events.subscribe();
        if let Some(relay) = &self.relay {
            *events.bot.lock() = Some(Arc::clone(bot));
            self.claim(relay, &events);
            return (events, subscriber);
        }
        let mut gateway = events.gateway.lock();
        if gateway.is_none() {
            let sink: Arc<dyn EventSink> = Arc::clone(&events) as _;
            let resume = std::mem::take(&mut *events.resume.lock());
            *gateway = Some((self.starter)(Arc::clone(bot), sink, resume));
        }
        drop(gateway);
        (events, subscriber)
    }

    /// The bot's Gateway state as `GET /api/gateway` shows it: this
    /// instance's connection, or in a cluster the holder's (shared each
    /// tick); `None` when no instance runs it.
    pub fn gateway_status(&self, events: &BotEvents) -> Option<serde_json::Value> {
        if let Some(status) = events.gateway_status() {
            return serde_json::to_value(status).ok();
        }
        let shared = self.relay.as_ref()?.status(events.bot_id);
        let shared = shared.unwrap_or_else(|reason| {
            log::warn!(
                "cannot read the Gateway state of bot {}: {reason}",
                events.bot_id
            );
            None
        });
        serde_json::from_str(&shared?).ok()
    }

    /// Closes (resumably, with 4000) the Gateway connections of bots
    /// without a subscriber for `idle_close`. Called by the sweeper.
    pub fn sweep(&self) {
        if self.relay.is_some() {
            // Cluster-wide idleness is the ticker's (`cluster_tick`).
            return;
        }
        let bots: Vec<Arc<BotEvents>> = self.bots.lock().values().cloned().collect();
        for events in bots {
            let idle = events
                .idle_since
                .lock()
                .is_some_and(|since| since.elapsed() >= self.idle_close);
            if idle && events.subscribers() == 0 {
                // The lock is held through the stop, so a subscriber that
                // comes meanwhile waits and resumes what it leaves.
                let mut gateway = events.gateway.lock();
                if let Some(stopping) = gateway.take() {
                    log::info!(
                        "Gateway of bot {} closed: no subscriber for {} s",
                        events.bot_id,
                        self.idle_close.as_secs()
                    );
                    // Kept for the next subscriber (and the checkpoint):
                    // resuming is free while Discord still allows it.
                    *events.resume.lock() = stopping.stop(false);
                }
                drop(gateway);
                *events.idle_since.lock() = None;
            }
        }
    }

    /// The bot is gone for good (its last session logged out, or Discord
    /// rejected its token): its Gateway connection closes with 1000, so
    /// Discord shows it offline, on a thread of its own (closing waits for
    /// the shards).
    pub fn bot_gone(&self, bot_id: u64) {
        let events = self.bots.lock().get(&bot_id).cloned();
        if let Some(relay) = &self.relay {
            // The holder may be another instance: it sees the mark at its
            // next tick.
            relay.mark_gone(bot_id);
            if let Some(events) = events {
                events.bot.lock().take();
            }
            return;
        }
        let Some(events) = events else {
            return;
        };
        events.resume.lock().clear();
        if let Some(gateway) = events.gateway.lock().take() {
            log::info!("Gateway of bot {bot_id} closed: the bot has no session left");
            close_in_background(bot_id, move || drop(gateway.stop(true)));
        }
    }

    /// Saves what changed of each bot's checkpoint since the last pass.
    pub fn checkpoint(&self) {
        let stopped = self.checkpointing.lock();
        if *stopped {
            return;
        }
        let bots: Vec<Arc<BotEvents>> = self.bots.lock().values().cloned().collect();
        for events in bots {
            let resume = match events.gateway.lock().as_ref() {
                Some(gateway) => gateway.sessions(),
                None => events.resume.lock().clone(),
            };
            events.save(&*self.checkpoints, resume, false);
        }
        drop(stopped);
    }

    /// Closes every Gateway connection, resumably, and checkpoints each bot
    /// exactly (shutdown): the next run resumes the sessions and continues
    /// the IDs.
    pub fn stop_all(&self) {
        let mut stopped = self.checkpointing.lock();
        *stopped = true;
        let bots: Vec<Arc<BotEvents>> = self.bots.lock().values().cloned().collect();
        if self.relay.is_some() {
            // Handed over at once: another instance resumes without
            // waiting for the lease to run out.
            for events in bots {
                if let Some(publisher) = events.publisher.lock().take() {
                    if let Some(gateway) = events.gateway.lock().take() {
                        gateway.stop(false);
                    }
                    publisher.hand_over();
                }
            }
            return;
        }
        for events in bots {
            let gateway = events.gateway.lock().take();
            let resume = match gateway {
                Some(gateway) => gateway.stop(false),
                None => std::mem::take(&mut *events.resume.lock()),
            };
            events.save(&*self.checkpoints, resume, true);
        }
    }
}

/// Runs `pass` on a named thread for as long as it returns true.
fn spawn_loop(name: &str, mut pass: impl FnMut() -> bool + Send + 'static) {
    let run = move || while pass() {};
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(run) {
        log::error!("cannot start the {name} thread: {e}");
    }
}

/// Closing a Gateway waits for its shards: never on a thread that serves
/// others.
fn close_in_background(bot_id: u64, close: impl FnOnce() + Send + 'static) {
    let closing = std::thread::Builder::new()
        .name("gateway-close".into())
        .spawn(close);
    if let Err(e) = closing {
        log::warn!("cannot close the Gateway of bot {bot_id}: {e}");
    }
}

/// Checkpoints every bot each `checkpoint::EVERY` until `events` is gone.
pub fn spawn_checkpointer(events: std::sync::Weak<Events>) {
    spawn_loop("checkpoints", move || {
        std::thread::sleep(checkpoint::EVERY);
        match events.upgrade() {
            Some(events) => {
                events.checkpoint();
                true
            }
            None => false,
        }
    });
}

/// One bot's events: its ring, its subscribers and its Gateway connection.
pub struct BotEvents {
    pub bot_id: u64,
    bot_text: Box<str>,
    pub ring: Ring,
    subscribers: AtomicUsize,
    gateway: Mutex<Option<BotGateway>>,
    /// Sessions for the next start of the Gateway: from the checkpoint, or
    /// from an idle close.
    resume: Mutex<Vec<ResumeState>>,
    /// What was last saved, so an unchanged bot costs no write.
    saved: Mutex<Option<Saved>>,
    /// In a cluster: the bot (its token), to start the Gateway when this
    /// instance wins the lease, while it has subscribers here.
    bot: Mutex<Option<Arc<Bot>>>,
    /// In a cluster, while this instance holds the bot's lease.
    publisher: Mutex<Option<Arc<cluster::Publisher>>>,
    /// Since when no subscriber has been left (`Events::sweep`).
    idle_since: Mutex<Option<Instant>>,
}

impl BotEvents {
    fn new(bot_id: u64, saved: Option<Saved>) -> BotEvents {
        if let Some(saved) = &saved {
            log::info!(
                "events of bot {bot_id} continue from ID {} ({}), {} Gateway session(s) to resume",
                saved.next_id(),
                if saved.clean {
                    "after a graceful stop"
                } else {
                    "after a crash: streams that reconnect are told of a gap"
                },
                saved.resume.len()
            );
        }
        BotEvents {
            bot_id,
            bot_text: bot_id.to_string().into(),
            ring: Ring::new(saved.as_ref().map_or(1, Saved::next_id)),
            subscribers: AtomicUsize::new(0),
            gateway: Mutex::new(None),
            resume: Mutex::new(saved.map(|s| s.resume).unwrap_or_default()),
            saved: Mutex::new(None),
            bot: Mutex::new(None),
            publisher: Mutex::new(None),
            idle_since: Mutex::new(None),
        }
    }

    /// A bot's events in a cluster: its ring starts with what the shared
    /// stream keeps, and IDs are the stream's.
    fn shared(bot_id: u64, relay: &dyn Relay) -> Arc<BotEvents> {
        let kept = relay.backfill(bot_id).unwrap_or_else(|reason| {
            log::warn!("cannot read the kept events of bot {bot_id}: {reason}");
            Vec::new()
        });
        let mut events = BotEvents::new(bot_id, None);
        let first = kept.first().map_or(1, |e| e.id);
        // The wait covers the stream's read (`READ_WAIT`) and a round trip.
        events.ring = Ring::shared(first, cluster::READ_WAIT * 2);
        for entry in &kept {
            events.push_entry(entry);
        }
        Arc::new(events)
    }

    /// An event from the shared stream into the ring.
    fn push_entry(&self, entry: &Entry) {
        self.ring.push_at(
            entry.id,
            &entry.kind,
            entry.guild_id,
            entry.channel_id,
            entry.marker,
            |id| {
                self.render(
                    id,
                    &entry.kind,
                    entry.shard,
                    &entry.received_at,
                    &entry.data,
                )
            },
        );
    }

    /// An event's SSE frame: its envelope, with `data` spliced in as is.
    fn render(&self, id: u64, kind: &str, shard: [u16; 2], received: &str, data: &str) -> Vec<u8> {
        frame(
            id,
            kind,
            &envelope(id, kind, &self.bot_text, shard, received, data),
        )
    }

    /// Saves the checkpoint when it differs from the last one saved.
    fn save(&self, checkpoints: &dyn Checkpoints, resume: Vec<ResumeState>, clean: bool) {
        let saved = Saved {
            last_id: self.ring.last_id(),
            clean,
            resume,
        };
        let mut last = self.saved.lock();
        if last.as_ref() != Some(&saved) {
            checkpoints.save(self.bot_id, &saved);
            *last = Some(saved);
        }
    }

    /// The Gateway connection's state, for `GET /api/gateway`; `None` when
    /// it is not running.
    pub fn gateway_status(&self) -> Option<GatewayStatus> {
        self.gateway.lock().as_ref().map(BotGateway::status)
    }

    /// A Gateway dispatch: `data` is Discord's `d`, as it came.
    pub fn dispatch(
        &self,
        shard: [u16; 2],
        kind: &str,
        data: &str,
        guild_id: Option<u64>,
        channel_id: Option<u64>,
    ) -> u64 {
        let received = now_rfc3339();
        self.ring.push(kind, guild_id, channel_id, false, |id| {
            self.render(id, kind, shard, &received, data)
        })
    }

    /// A marker (`gateway.ready`, `gateway.disconnected`, …): reaches every
    /// stream whatever its filters. `data` is a JSON object of details.
    pub fn marker(&self, kind: &str, shard: [u16; 2], data: &serde_json::Value) -> u64 {
        let (data, received) = (data.to_string(), now_rfc3339());
        self.ring.push(kind, None, None, true, |id| {
            self.render(id, kind, shard, &received, &data)
        })
    }

    /// A marker for one stream only (`stream.gap`, `stream.overflow`): not
    /// kept, with the ID the stream continues from.
    pub fn stream_marker(&self, id: u64, kind: &str, data: &serde_json::Value) -> Vec<u8> {
        self.render(id, kind, [0, 1], &now_rfc3339(), &data.to_string())
    }

    /// Counts a subscriber for as long as the guard lives.
    pub fn subscribe(self: &Arc<Self>) -> Subscriber {
        self.subscribers.fetch_add(1, Ordering::SeqCst);
        *self.idle_since.lock() = None;
        Subscriber(Arc::clone(self))
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::SeqCst)
    }
}

/// A stream's hold on its bot's events.
pub struct Subscriber(Arc<BotEvents>);

impl Drop for Subscriber {
    fn drop(&mut self) {
        if self.0.subscribers.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.0.idle_since.lock() = Some(Instant::now());
        }
    }
}

/// What the bot's Gateway connection delivers goes into its ring: each
/// dispatch as an event, each change of the connection as a marker.
impl EventSink for BotEvents {
    fn dispatch(&self, event: &Dispatch<'_>) {
        metrics::global().gateway_events.inc();
        BotEvents::dispatch(
            self,
            event.shard,
            event.kind,
            event.data.get(),
            event.guild_id,
            event.channel_id,
        );
    }

    fn marker(&self, marker: &Marker) {
        let (kind, shard, data) = observe_marker(marker);
        BotEvents::marker(self, kind, shard, &data);
    }
}

/// Counts a Gateway marker in the metrics, and gives its stream marker:
/// type, shard and details.
fn observe_marker(marker: &Marker) -> (&'static str, [u16; 2], serde_json::Value) {
    let (change, code) = match marker {
        Marker::Ready { .. } => ("ready", None),
        Marker::Resumed { .. } => ("resumed", None),
        Marker::Disconnected { code, .. } => ("disconnected", *code),
        Marker::Failed { code, .. } => ("failed", *code),
    };
    metrics::global().observe_gateway(change, code);
    {
        match marker {
            Marker::Ready { shard, .. } => ("gateway.ready", *shard, json!({})),
            Marker::Resumed { shard } => ("gateway.resumed", *shard, json!({})),
            Marker::Disconnected { shard, code } => {
                ("gateway.disconnected", *shard, json!({ "code": code }))
            }
            Marker::Failed {
                shard,
                code,
                reason,
            } => (
                "gateway.failed",
                *shard,
                json!({ "code": code, "reason": reason }),
            ),
        }
    }
}

/// Now, as the envelope's `receivedAt`.
fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// The envelope of API.md: `{"id", "type", "botId", "shard", "receivedAt",
/// "data"}`, with `data` spliced in as Discord's bytes.
fn envelope(id: u64, kind: &str, bot: &str, shard: [u16; 2], received: &str, data: &str) -> String {
    let kind = serde_json::to_string(kind).unwrap_or_default();
    format!(
        r#"{{"id":"{id}","type":{kind},"botId":"{bot}","shard":[{},{}],"receivedAt":"{received}","data":{data}}}"#,
        shard[0], shard[1]
    )
}

/// The SSE frame: one `data:` line (the envelope is one line of JSON).
fn frame(id: u64, kind: &str, envelope: &str) -> Vec<u8> {
    let kind: String = kind.chars().filter(|c| !c.is_control()).collect();
    format!("id: {id}\nevent: {kind}\ndata: {envelope}\n\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Events {
        Events::new(
            Box::new(|_, _, _| unreachable!("no Gateway in unit tests")),
            IDLE_CLOSE,
        )
    }

    #[test]
    fn a_dispatch_is_one_frame_with_discords_data_unchanged() {
        let events = events();
        let bot = events.bot(42);
        let id = bot.dispatch(
            [0, 1],
            "MESSAGE_CREATE",
            r#"{"content":"hi" }"#,
            Some(1),
            Some(2),
        );
        let Read::Frames(frames) = bot.ring.read(id - 1, 10, std::time::Duration::ZERO) else {
            panic!("a gap")
        };
        let text = std::str::from_utf8(&frames[0].bytes).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("id: 1"));
        assert_eq!(lines.next(), Some("event: MESSAGE_CREATE"));
        let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
        assert!(data.ends_with(r#""data":{"content":"hi" }}"#), "{data}");
        let envelope: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(envelope["id"], "1");
        assert_eq!(envelope["botId"], "42");
        assert_eq!(envelope["shard"], serde_json::json!([0, 1]));
        assert!(text.ends_with("\n\n"));
    }

    #[test]
    fn subscribers_are_counted_while_their_guard_lives() {
        let events = events();
        let bot = events.bot(1);
        let first = bot.subscribe();
        let second = bot.subscribe();
        assert_eq!(bot.subscribers(), 2);
        drop(first);
        drop(second);
        assert_eq!(bot.subscribers(), 0);
        assert!(Arc::ptr_eq(&bot, &events.bot(1)));
    }
}
