//! metrics: the counters, histograms and gauges of `GET /metrics`, in the
//! Prometheus text format (the `prometheus` crate, without its protobuf
//! feature).
//!
//! One process-wide set, like the logger: the server, the Discord client and
//! the routes record into it without it being threaded through every call.
//! Gauges that are a count of something another module owns (sessions,
//! bots, the invalid-request window) are read at scrape time from that
//! module, not mirrored here.
//!
//! Invariant: every label value is from a fixed set (route templates, status
//! codes, scope names), never a raw path, ID or token, so a client cannot
//! grow the series count and a scrape never shows a secret. Templates name
//! their parameters `:like_this`, not `{like_this}`: braces inside label
//! values are legal, but trip regex-based scrape parsers.

use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Request latencies span a cached 1 ms answer to a 10 s rate-limit wait.
/// A heartbeat's ACK spans the same: a millisecond on loopback, a few
/// hundred across the world, seconds from a Gateway about to be a zombie.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Identify turns come 5 s apart per `max_concurrency` bucket, so the
/// last shard of a bot with 1,000 shards in 16 buckets waits over 5
/// minutes; a first shard, nothing.
const IDENTIFY_BUCKETS: &[f64] = &[0.1, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// The shard states `dbb_gateway_shards` counts; a stopped (idle) shard is
/// not counted.
pub const SHARD_STATES: [&str; 5] = ["ready", "connecting", "resuming", "backoff", "failed"];

/// A bot's Gateway as a scrape sees it: the state of each of its shards,
/// named as in `SHARD_STATES` (others are not counted).
///
/// Why read at scrape time rather than kept in gauges moved on each
/// transition: a shard changes state in a dozen places, and a gauge that
/// misses one (or a thread that dies between an increment and its
/// decrement) is wrong until the process restarts; a count read from the
/// shards cannot drift.
pub trait ShardStates: Send + Sync {
    fn shard_states(&self) -> Vec<&'static str>;
}

pub struct Metrics {
    registry: Registry,
    /// Client requests by method, route template and status.
    pub requests: IntCounterVec,
    /// Client request latency by route template, from the moment it was read.
    pub latency: HistogramVec,
    /// Discord calls by route template and status ("error" when no answer).
    pub discord_calls: IntCounterVec,
    /// Discord 429s by scope: global, user, shared.
    pub discord_429s: IntCounterVec,
    /// Time a Discord call waited for the bot's rate limits before sending.
    pub ratelimit_wait: Histogram,
    /// Requests a worker is running now.
    pub workers_busy: IntGauge,
    /// Requests read and waiting for a worker.
    pub queued: IntGauge,
    /// Client requests refused by the per-IP or per-session limit.
    pub client_limited: IntCounterVec,
    /// Log lines dropped because stderr did not take them fast enough.
    pub log_lines_dropped: IntCounter,
    /// Discord calls answered here instead of being sent, by reason: a
    /// refusal Discord gave lately (`cached`), one held back past the
    /// invalid-request threshold (`held_back`), a host Discord's edge
    /// refuses (`host_blocked`).
    pub refused_locally: IntCounterVec,
    /// Writes sent to Discord (any method but GET), by route template and
    /// outcome: `done`, `refused` (Discord said no), `unknown` (sent, answer
    /// lost), `done_body_lost`, `not_sent` (rate limits, host guard),
    /// `failed` (Discord unreachable).
    pub writes: IntCounterVec,
    /// Requests answered again from an `Idempotency-Key`'s record (`replay`),
    /// or refused for it: running (`in_use`, 409) or another request
    /// (`reused`, 422). Discord was asked for none of them.
    pub idempotency: IntCounterVec,
    /// Gateway dispatches received, all bots.
    pub gateway_events: IntCounter,
    /// Gateway connection changes: `ready` (a new session), `resumed`,
    /// `disconnected` and `failed`, by close code (`none` without one).
    pub gateway_changes: IntCounterVec,
    /// Heartbeat to its ACK, each ACK of every shard.
    gateway_heartbeat: Histogram,
    /// How long a shard waited for its turn to identify (0 when it had it
    /// at once), each identify.
    gateway_identify_wait: Histogram,
    /// The Gateways whose shards a scrape counts, while they live.
    gateways: Mutex<Vec<Weak<dyn ShardStates>>>,
}

/// Gauges owned elsewhere, read when a scrape is rendered.
pub struct Snapshot {
    pub sessions: usize,
    pub bots: usize,
    pub invalid_requests: u64,
    pub invalid_threshold: u64,
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("dbb_requests_total", "Client requests answered."),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "dbb_request_duration_seconds",
                "Time from reading a client request to answering it.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let discord_calls = IntCounterVec::new(
            Opts::new("dbb_discord_requests_total", "Calls to Discord's API."),
            &["route", "status"],
        )
        .expect("valid metric");
        let discord_429s = IntCounterVec::new(
            Opts::new("dbb_discord_429_total", "429 answers from Discord."),
            &["scope"],
        )
        .expect("valid metric");
        let ratelimit_wait = Histogram::with_opts(
            HistogramOpts::new(
                "dbb_ratelimit_wait_seconds",
                "Time a Discord call waited for its bot's rate limits.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let workers_busy =
            IntGauge::new("dbb_workers_busy", "Workers running a request.").expect("valid metric");
        let queued = IntGauge::new("dbb_requests_queued", "Requests waiting for a worker.")
            .expect("valid metric");
        let client_limited = IntCounterVec::new(
            Opts::new(
                "dbb_client_rate_limited_total",
                "Client requests refused with 429 by the incoming rate limits.",
            ),
            &["by"],
        )
        .expect("valid metric");
        let log_lines_dropped = IntCounter::new(
            "dbb_log_lines_dropped_total",
            "Log lines dropped because stderr was not read fast enough.",
        )
        .expect("valid metric");
        let refused_locally = IntCounterVec::new(
            Opts::new(
                "dbb_discord_calls_refused_locally_total",
                "Discord calls answered by the service instead of being sent, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let writes = IntCounterVec::new(
            Opts::new(
                "dbb_discord_writes_total",
                "Writes to Discord, by route and outcome (unknown: sent and the answer lost).",
            ),
            &["route", "outcome"],
        )
        .expect("valid metric");
        let idempotency = IntCounterVec::new(
            Opts::new(
                "dbb_idempotency_total",
                "Requests answered from an Idempotency-Key without Discord: replay, in_use, reused.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let gateway_events = IntCounter::new(
            "dbb_gateway_events_total",
            "Gateway dispatches received, all bots.",
        )
        .expect("valid metric");
        let gateway_changes = IntCounterVec::new(
            Opts::new(
                "dbb_gateway_connection_changes_total",
                "Gateway connections that became ready (a new session), resumed, disconnected \
                 or failed, by Discord's close code.",
            ),
            &["change", "code"],
        )
        .expect("valid metric");
        let gateway_heartbeat = Histogram::with_opts(
            HistogramOpts::new(
                "dbb_gateway_heartbeat_latency_seconds",
                "Time from a Gateway heartbeat to Discord's ACK, every shard of every bot.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let gateway_identify_wait = Histogram::with_opts(
            HistogramOpts::new(
                "dbb_gateway_identify_wait_seconds",
                "Time a shard waited in its bot's identify queue (max_concurrency, 5 s apart) \
                 before sending Identify.",
            )
            .buckets(IDENTIFY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(gateway_events.clone()),
            Box::new(gateway_changes.clone()),
            Box::new(gateway_heartbeat.clone()),
            Box::new(gateway_identify_wait.clone()),
            Box::new(writes.clone()),
            Box::new(idempotency.clone()),
            Box::new(latency.clone()),
            Box::new(discord_calls.clone()),
            Box::new(discord_429s.clone()),
            Box::new(ratelimit_wait.clone()),
            Box::new(workers_busy.clone()),
            Box::new(queued.clone()),
            Box::new(client_limited.clone()),
            Box::new(log_lines_dropped.clone()),
            Box::new(refused_locally.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        Metrics {
            registry,
            requests,
            latency,
            discord_calls,
            discord_429s,
            ratelimit_wait,
            workers_busy,
            queued,
            client_limited,
            log_lines_dropped,
            refused_locally,
            writes,
            idempotency,
            gateway_events,
            gateway_changes,
            gateway_heartbeat,
            gateway_identify_wait,
            gateways: Mutex::new(Vec::new()),
        }
    }

    /// A heartbeat was ACKed `latency` after it went out.
    pub fn observe_heartbeat_latency(&self, latency: Duration) {
        self.gateway_heartbeat.observe(latency.as_secs_f64());
    }

    /// A shard identifies after waiting `waited` for its turn.
    pub fn observe_identify_wait(&self, waited: Duration) {
        self.gateway_identify_wait.observe(waited.as_secs_f64());
    }

    /// Counts `gateway`'s shards in every scrape until it is dropped.
    pub fn watch_shards(&self, gateway: Weak<dyn ShardStates>) {
        let mut gateways = self.gateways.lock();
        gateways.retain(|g| g.strong_count() > 0);
        gateways.push(gateway);
    }

    /// `dbb_gateway_shards`: every live Gateway's shards by state, each
    /// state present (0 when none).
    fn shard_gauges(&self) -> Vec<prometheus::proto::MetricFamily> {
        let live: Vec<Arc<dyn ShardStates>> = {
            let mut gateways = self.gateways.lock();
            gateways.retain(|g| g.strong_count() > 0);
            gateways.iter().filter_map(Weak::upgrade).collect()
        };
        // Asked outside the lock: a Gateway's states take its own locks.
        let mut counts = [0i64; SHARD_STATES.len()];
        for state in live.iter().flat_map(|g| g.shard_states()) {
            if let Some(i) = SHARD_STATES.iter().position(|s| *s == state) {
                counts[i] += 1;
            }
        }
        let gauges = IntGaugeVec::new(
            Opts::new(
                "dbb_gateway_shards",
                "Gateway shards of all bots by state (ready, connecting, resuming, backoff, \
                 failed).",
            ),
            &["state"],
        )
        .expect("valid metric");
        for (state, count) in SHARD_STATES.iter().zip(counts) {
            gauges.with_label_values(&[state]).set(count);
        }
        prometheus::core::Collector::collect(&gauges)
    }

    /// A Gateway connection change; `code` is Discord's close code. Codes
    /// are a small set (Discord's 4000-4014, WebSocket's 1000-1015);
    /// anything else is counted as `other`, so no label is unbounded.
    pub fn observe_gateway(&self, change: &'static str, code: Option<u16>) {
        let code = match code {
            None => "none".to_string(),
            Some(code @ (1000..=1015 | 4000..=4014)) => code.to_string(),
            Some(_) => "other".to_string(),
        };
        self.gateway_changes
            .with_label_values(&[change, &code])
            .inc();
    }

    pub fn observe_request(&self, method: &str, route: &'static str, status: u16, took: Duration) {
        self.requests
            .with_label_values(&[method_label(method), route, status_label(status)])
            .inc();
        self.latency
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    pub fn observe_discord(&self, route: &'static str, status: Option<u16>) {
        let status = status.map_or("error", status_label);
        self.discord_calls.with_label_values(&[route, status]).inc();
    }

    /// The scrape: this set plus the gauges of `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> Vec<u8> {
        let mut families = self.registry.gather();
        for (name, help, value) in [
            ("dbb_sessions", "Live sessions.", snapshot.sessions as i64),
            (
                "dbb_bots",
                "Bots with at least one session.",
                snapshot.bots as i64,
            ),
            (
                "dbb_invalid_requests_window",
                "Invalid Discord requests (401, 403, non-shared 429) in the last 10 minutes.",
                snapshot.invalid_requests as i64,
            ),
            (
                "dbb_invalid_requests_threshold",
                "--invalid-request-threshold: past it, calls likely to be invalid are refused.",
                snapshot.invalid_threshold as i64,
            ),
        ] {
            let gauge = IntGauge::new(name, help).expect("valid metric");
            gauge.set(value);
            families.extend(prometheus::core::Collector::collect(&gauge));
        }
        families.extend(self.shard_gauges());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::with_capacity(8 * 1024);
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("encoding into a Vec cannot fail");
        out
    }
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

/// Unknown methods share one label, so a client cannot invent series.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "OPTIONS" => "OPTIONS",
        "HEAD" => "HEAD",
        _ => "other",
    }
}

fn status_label(status: u16) -> &'static str {
    const LABELS: &[(u16, &str)] = &[
        (200, "200"),
        (204, "204"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (408, "408"),
        (411, "411"),
        (413, "413"),
        (429, "429"),
        (431, "431"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    LABELS
        .iter()
        .find(|(code, _)| *code == status)
        .map_or("other", |(_, label)| label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn a_scrape_shows_recorded_requests_and_snapshot_gauges() {
        let metrics = Metrics::new();
        metrics.observe_request("GET", "/api/guilds", 200, Duration::from_millis(3));
        metrics.observe_request("BREW", "unmatched", 418, Duration::from_millis(1));
        let text = String::from_utf8(metrics.render(&Snapshot {
            sessions: 7,
            bots: 2,
            invalid_requests: 11,
            invalid_threshold: 8000,
        }))
        .unwrap();
        assert_eq!(
            sample_value(
                &text,
                r#"dbb_requests_total{method="GET",route="/api/guilds",status="200"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample_value(
                &text,
                r#"dbb_requests_total{method="other",route="unmatched",status="other"}"#
            ),
            Some(1.0)
        );
        assert_eq!(sample_value(&text, "dbb_sessions"), Some(7.0));
        assert_eq!(
            sample_value(&text, "dbb_invalid_requests_window"),
            Some(11.0)
        );
    }

    struct Shards(Vec<&'static str>);

    impl ShardStates for Shards {
        fn shard_states(&self) -> Vec<&'static str> {
            self.0.clone()
        }
    }

    fn render(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render(&Snapshot {
            sessions: 0,
            bots: 0,
            invalid_requests: 0,
            invalid_threshold: 8000,
        }))
        .unwrap()
    }

    #[test]
    fn shards_are_counted_by_state_while_their_gateway_lives() {
        let metrics = Metrics::new();
        let one: Arc<dyn ShardStates> = Arc::new(Shards(vec!["ready", "ready", "backoff"]));
        let two: Arc<dyn ShardStates> = Arc::new(Shards(vec!["ready", "idle"]));
        metrics.watch_shards(Arc::downgrade(&one));
        metrics.watch_shards(Arc::downgrade(&two));
        let text = render(&metrics);
        let count =
            |state: &str| sample_value(&text, &format!(r#"dbb_gateway_shards{{state="{state}"}}"#));
        assert_eq!(count("ready"), Some(3.0));
        assert_eq!(count("backoff"), Some(1.0));
        assert_eq!(count("failed"), Some(0.0), "every state is shown");
        assert_eq!(count("idle"), None, "a stopped shard is not counted");
        drop(one);
        let text = render(&metrics);
        assert_eq!(
            sample_value(&text, r#"dbb_gateway_shards{state="ready"}"#),
            Some(1.0)
        );
        assert_eq!(
            metrics.gateways.lock().len(),
            1,
            "a dropped Gateway is forgotten"
        );
    }

    #[test]
    fn unknown_statuses_and_methods_share_one_label() {
        assert_eq!(status_label(299), "other");
        assert_eq!(method_label("PROPFIND"), "other");
        assert_eq!(status_label(429), "429");
    }
}
