//! client: the client for Discord's REST API: sends the bot's token,
//! honours the bot's rate limits, turns Discord's answers into bodies or
//! `discord::Error`s.
//!
//! Architecture invariants:
//! - it sends only what a `Route` (built from `Snowflake`s and integers
//!   only) says, so client text never reaches a URL;
//! - a request is sent again at most once after a failure, and a write
//!   whose answer was lost only when its `Resend` says sending twice cannot
//!   do twice (PUT, DELETE, a message with its nonce); otherwise the outcome
//!   is reported unknown (`Error::OutcomeUnknown`);
//! - bodies are returned as Discord's bytes, never re-serialised, so objects
//!   reach the client exactly as Discord sent them; a 2xx body must look
//!   like a JSON document (`looks_like_json`: its outer brackets, not a full
//!   parse) or it is retried as a bad answer;
//! - no error or log line carries the token (ureq errors do not include
//!   request headers, and we never format the `Authorization` value).

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::discord::Error;
use crate::discord::bots::Bot;
use crate::discord::cluster::{Admission, Answer, ClusterLimiter, Ticket};
use crate::discord::guard::InvalidRequests;
use crate::discord::ratelimit::{Clock, Observed, RouteKey, Slot};
use crate::discord::refusals::{Refused, Verdict};
use crate::discord::route::Route;
use crate::discord::transport;
use crate::discord::write::{Outgoing, Reply, Resend};
use crate::observe::metrics;

/// Discord requires `DiscordBot ($url, $versionNumber)`; other agents "may be
/// blocked" by Cloudflare (`reference.mdx`, "User Agent").
pub const USER_AGENT: &str = concat!(
    "DiscordBot (",
    env!("CARGO_PKG_REPOSITORY"),
    ", ",
    env!("CARGO_PKG_VERSION"),
    ")"
);
/// Largest Discord body we read: a page of 1000 members is about 0.5 MiB,
/// 100 messages with embeds a few MiB.
const MAX_DISCORD_BODY: u64 = 16 * 1024 * 1024;
/// The longest we spend opening a connection, within the upstream timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pooled connections older than this are not reused: NATs and firewalls
/// silently drop idle sockets (ureq #772), and a dead one costs a timeout.
const MAX_IDLE_AGE: Duration = Duration::from_secs(10);
/// Per pooled connection, and there is one per worker: what we send (a GET
/// head of a few hundred bytes) and what we read through (Discord's response
/// head, then the body in chunks). With a 16 KiB input buffer a 25 KB page
/// takes two `recv` calls instead of one, and each pooled connection holds
/// 18 KiB instead of 36: `make bench` B peak RSS 29 -> 25.5 MiB, for one
/// system call more per request in A (6.2 -> 7.2).
const OUTPUT_BUFFER: usize = 2 * 1024;
const INPUT_BUFFER: usize = 16 * 1024;
/// Discord's response heads are a few KiB; anything larger is refused. A
/// head must fit the input buffer whole.
const MAX_RESPONSE_HEAD: usize = INPUT_BUFFER;
/// Why a request waiting on this service's own view of the limits gives up.
const AT_LIMIT: &str =
    "this bot is at Discord's rate limit for this route; retry after the given time";
/// How long the host waits after an edge 429 that names no `Retry-After`.
const EDGE_BLOCK_UNSAID: Duration = Duration::from_secs(60);
/// Discord's JSON codes for a guild or channel the bot cannot see at all
/// (`opcodes-and-status-codes`): refusals worth remembering.
const UNKNOWN_CHANNEL: u64 = 10003;
const UNKNOWN_GUILD: u64 = 10004;
/// 429s answered in a row before we give the client Discord's wait instead.
const MAX_429_RETRIES: u32 = 3;

/// The shared Discord client: one pooled agent for every bot and worker.
pub struct Discord {
    agent: ureq::Agent,
    base: String,
    clock: Arc<dyn Clock>,
    invalid: Arc<InvalidRequests>,
    /// `--refusal-cache-ms`: how long a 403 (or 404 of an unknown guild or
    /// channel) is answered again without asking (`refusals`).
    refusal_cache: Duration,
    /// The limits shared with other instances (`--redis-url`); checked
    /// after the local limiter, right before sending.
    cluster: Option<Arc<dyn ClusterLimiter>>,
}

impl Discord {
    /// `base` is the API root without a trailing slash; `pool` is how many
    /// idle connections to keep (the worker count: ureq keeps only 3 per host
    /// by default, and every other call would pay a new TLS handshake).
    pub fn new(
        base: &str,
        upstream_timeout: Duration,
        pool: usize,
        clock: Arc<dyn Clock>,
        invalid: Arc<InvalidRequests>,
        refusal_cache: Duration,
    ) -> Discord {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(upstream_timeout))
            .timeout_connect(Some(CONNECT_TIMEOUT.min(upstream_timeout)))
            // The phase of a timeout says whether Discord may have acted
            // (`write`): each phase gets a little less than the whole
            // budget, so the phase, not the global timeout, is what expires
            // when one step hangs; the global still bounds them together.
            .timeout_send_request(Some(phase_timeout(upstream_timeout)))
            .timeout_send_body(Some(phase_timeout(upstream_timeout)))
            .timeout_recv_response(Some(phase_timeout(upstream_timeout)))
            .timeout_recv_body(Some(phase_timeout(upstream_timeout)))
            .max_idle_connections(pool)
            .max_idle_connections_per_host(pool)
            .max_idle_age(MAX_IDLE_AGE)
            // A redirect would carry the bot token to wherever it points.
            .max_redirects(0)
            // ureq keeps two 128 KiB buffers per pooled connection; with a
            // connection per worker that was 64 MiB at 256 workers (`make
            // bench`). Our requests are a few hundred bytes and Discord's
            // response heads a few KiB.
            .output_buffer_size(OUTPUT_BUFFER)
            .input_buffer_size(INPUT_BUFFER)
            .max_response_header_size(MAX_RESPONSE_HEAD)
            .user_agent(USER_AGENT)
            .build();
        let agent =
            ureq::Agent::with_parts(config, transport::connector(), CachingResolver::default());
        Discord {
            agent,
            base: base.to_string(),
            clock,
            invalid,
            refusal_cache,
            cluster: None,
        }
    }

    /// Also keeps each bot's limits across the instances sharing `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<dyn ClusterLimiter>) -> Discord {
        self.cluster = Some(cluster);
        self
    }

    /// Waits for the cluster's admission (when there is a cluster), never
    /// past `deadline`.
    fn cluster_admit(
        &self,
        bot: &Bot,
        route: RouteKey,
        deadline: Instant,
    ) -> Result<Option<Ticket>, Error> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        loop {
            let admission = cluster
                .admit(bot, route)
                .map_err(|unreachable| Error::ClusterUnreachable(unreachable.0))?;
            match admission {
                Admission::Go(ticket) => return Ok(Some(ticket)),
                Admission::Wait(wait) => {
                    if self.clock.now() + wait > deadline {
                        return Err(Error::RateLimited {
                            message: AT_LIMIT,
                            retry_after: wait,
                        });
                    }
                    std::thread::sleep(wait);
                }
            }
        }
    }

    /// GETs a route for a bot (`call` with a read), returning Discord's
    /// JSON body.
    pub fn get(&self, bot: &Bot, route: Route, deadline: Instant) -> Result<Vec<u8>, Error> {
        let outgoing = Outgoing::read(route.path(), route.key());
        self.call(bot, &outgoing, deadline).map(|reply| reply.body)
    }

    /// Sends one request for a bot: answers a refusal Discord gave lately
    /// itself (`refusals`), waits for the bot's rate limits and for a host
    /// block to end (never past `deadline`, the client request's wait
    /// budget), retries a 429 when Discord's wait ends before the deadline,
    /// and re-sends at most once after a failure, as `outgoing.resend`
    /// allows (API.md, "Never twice").
    pub fn call(
        &self,
        bot: &Bot,
        outgoing: &Outgoing<'_>,
        deadline: Instant,
    ) -> Result<Reply, Error> {
        let result = self.call_once(bot, outgoing, deadline);
        if outgoing.method != "GET" {
            metrics::global()
                .writes
                .with_label_values(&[outgoing.key.template, write_outcome(&result)])
                .inc();
        }
        result
    }

    fn call_once(
        &self,
        bot: &Bot,
        outgoing: &Outgoing<'_>,
        deadline: Instant,
    ) -> Result<Reply, Error> {
        let mut lost = None;
        match self.attempts(bot, outgoing, deadline, &mut lost) {
            // The first attempt was sent and its answer lost; the re-send
            // was then refused here (rate limits, the host guard, a cached
            // refusal) or by a 429, so it never went: the first attempt's
            // unknown outcome is the answer, not the refusal, or a client
            // would take the write as not done.
            Err(error) if error.refused_before_sending() => match lost {
                Some(first) if first.stage != Stage::NotSent => {
                    Err(first.into_error(outgoing.resend))
                }
                _ => Err(error),
            },
            result => result,
        }
    }

    /// `call`'s attempts: the first, and at most one re-send, whose first
    /// failure is left in `lost`.
    fn attempts(
        &self,
        bot: &Bot,
        outgoing: &Outgoing<'_>,
        deadline: Instant,
        lost: &mut Option<Failure>,
    ) -> Result<Reply, Error> {
        let key = outgoing.key;
        let url = format!("{}{}", self.base, outgoing.path);
        let mut rate_limited = 0;
        loop {
            if bot.is_rejected() {
                return Err(Error::TokenRejected);
            }
            let asked = self.clock.now();
            self.not_refused_before(bot, key, asked)?;
            let _host_probe = match self.invalid.host_admit(asked) {
                Ok(probe) => probe,
                Err(wait) => {
                    if asked + wait > deadline {
                        metrics::global()
                            .refused_locally
                            .with_label_values(&["host_blocked"])
                            .inc();
                        return Err(Error::HostBlocked { retry_after: wait });
                    }
                    std::thread::sleep(wait);
                    continue;
                }
            };
            let slot = bot
                .limiter
                .acquire(key, &*self.clock, deadline)
                .map_err(|too_long| Error::RateLimited {
                    message: AT_LIMIT,
                    retry_after: too_long.wait,
                })?;
            let ticket = match self.cluster_admit(bot, key, deadline) {
                Ok(ticket) => ticket,
                Err(error) => {
                    bot.limiter.abandon(slot, self.clock.now());
                    return Err(error);
                }
            };
            metrics::global()
                .ratelimit_wait
                .observe((self.clock.now() - asked).as_secs_f64());
            let failure = match self.send(bot, &url, outgoing, slot, ticket) {
                Outcome::Done(Err(Error::NotFound {
                    message,
                    code,
                    cached,
                })) if lost.is_some() && outgoing.method == "DELETE" => {
                    // Gone, perhaps by the first attempt: say so, without
                    // inventing a 204 (WRITES-NOTES §7.3).
                    return Err(Error::NotFound {
                        message: format!(
                            "{message} (already gone: the first attempt, whose answer was \
                             lost, may have done it)"
                        ),
                        code,
                        cached,
                    });
                }
                Outcome::Done(result) => return result,
                Outcome::RateLimited { retry_after, host } => {
                    rate_limited += 1;
                    let fits = self.clock.now() + retry_after <= deadline;
                    if host && !fits {
                        return Err(Error::HostBlocked { retry_after });
                    }
                    if !fits || rate_limited > MAX_429_RETRIES {
                        return Err(Error::RateLimited {
                            message: "rate limited by Discord; retry after the given time",
                            retry_after,
                        });
                    }
                    continue;
                }
                Outcome::Failed(failure) => failure,
            };
            if lost.is_some() || !outgoing.resend.allows(&failure) {
                return Err(failure.into_error(outgoing.resend));
            }
            log::debug!("re-sending {} once after: {}", key.template, failure.error);
            *lost = Some(failure);
        }
    }

    /// Answers the call here when Discord refused it lately, or holds it
    /// back when the host is past its invalid-request threshold and it was
    /// refused last time.
    fn not_refused_before(&self, bot: &Bot, key: RouteKey, now: Instant) -> Result<(), Error> {
        let verdict = bot.refusals.check(key, now, self.refusal_cache, || {
            self.invalid.over_threshold(now)
        });
        let (reason, error) = match verdict {
            Verdict::Send => return Ok(()),
            Verdict::HoldBack => ("held_back", Error::HeldBack),
            Verdict::Cached(refused) => ("cached", refused_error(refused, true)),
        };
        metrics::global()
            .refused_locally
            .with_label_values(&[reason])
            .inc();
        Err(error)
    }

    fn send(
        &self,
        bot: &Bot,
        url: &str,
        outgoing: &Outgoing<'_>,
        slot: Slot<'_>,
        ticket: Option<Ticket>,
    ) -> Outcome {
        let record = |answer: Answer<'_>| {
            if let (Some(cluster), Some(ticket)) = (&self.cluster, &ticket) {
                cluster.record(ticket, answer);
            }
        };
        let head = outgoing.head(url, bot.token().authorization());
        let sent = match outgoing.body_bytes() {
            None => head.body(()).map(|r| self.agent.run(r)),
            Some(bytes) => head.body(bytes).map(|r| self.agent.run(r)),
        }
        .unwrap_or_else(|e| Err(ureq::Error::from(e)));
        let mut response = match sent {
            Ok(response) => response,
            Err(err) => {
                metrics::global().observe_discord(slot_route(&slot), None);
                bot.limiter.abandon(slot, self.clock.now());
                record(Answer::Lost);
                return Outcome::Failed(transport_failure(&err, "Discord is unreachable"));
            }
        };
        let status = response.status().as_u16();
        metrics::global().observe_discord(slot_route(&slot), Some(status));
        let seen = Observed::from_headers(|name| {
            response.headers().get(name).and_then(|v| v.to_str().ok())
        });
        let headers = if outgoing.keep_headers {
            rate_limit_headers(response.headers())
        } else {
            Vec::new()
        };
        let body = read_body(response.body_mut());
        let now = self.clock.now();
        if InvalidRequests::counts(status, seen.scope.as_deref()) {
            self.invalid.record(now);
        }
        if status == 429 {
            // Cloudflare's page: read whole, not JSON, and none of Discord's
            // headers. A 429 whose body was cut off is Discord's.
            let from_edge = matches!(&body, Ok(body) if !looks_like_json(body))
                && seen.bucket.is_none()
                && seen.scope.is_none()
                && seen.remaining.is_none();
            if from_edge {
                return self.edge_refused(bot, slot, &seen, now, record);
            }
            self.invalid.host_answered();
            let body = body.unwrap_or_default();
            let retry_after = retry_after(&body, &seen);
            let error = discord_error(&body);
            let global = error.global;
            let scope = if global {
                "global"
            } else {
                match seen.scope.as_deref() {
                    Some("shared") => "shared",
                    Some("global") => "global",
                    _ => "user",
                }
            };
            metrics::global()
                .discord_429s
                .with_label_values(&[scope])
                .inc();
            let route = slot_route(&slot);
            let stopped = bot
                .limiter
                .rate_limited(slot, &seen, retry_after, global, now);
            // The scope and code say which limit it was (20028: a channel's
            // write limit); whether 20028 comes with scope `shared` is not
            // documented (WRITES-NOTES §1.8), so both are logged.
            use crate::discord::ratelimit::Stopped;
            let held = match stopped {
                Stopped::Bot => "every route of the bot",
                Stopped::Bucket => "the route's bucket",
                Stopped::Route => "this route and resource only (a sub-limit)",
            };
            log::warn!(
                "Discord 429 on {route} (bucket {}, scope {}, code {}, remaining {}, global \
                 {global}): {held} waits {:.3}s",
                seen.bucket.as_deref().unwrap_or("-"),
                seen.scope.as_deref().unwrap_or("-"),
                error
                    .code
                    .map_or_else(|| "-".to_string(), |code| code.to_string()),
                seen.remaining
                    .map_or_else(|| "-".to_string(), |left| left.to_string()),
                retry_after.as_secs_f64()
            );
            record(Answer::RateLimited {
                retry_after,
                global,
            });
            return Outcome::RateLimited {
                retry_after,
                host: false,
            };
        }
        let key = slot.route();
        self.invalid.host_answered();
        bot.limiter.complete(slot, &seen, now);
        record(Answer::Answered {
            seen: &seen,
            success: (200..300).contains(&status),
        });
        let body = match body {
            Ok(body) => body,
            // The status line came: Discord acted on the request.
            Err(err) if (200..300).contains(&status) => {
                return Outcome::Failed(Failure::answered(status, describe(&err)));
            }
            Err(err) => {
                return Outcome::Failed(Failure::lost(
                    format!("Discord's answer was cut off ({})", describe(&err)),
                    false,
                ));
            }
        };
        let reply = |body| Reply {
            status,
            body,
            headers,
        };
        match status {
            204 => {
                bot.refusals.answered(key);
                Outcome::Done(Ok(reply(Vec::new())))
            }
            200..=299 if looks_like_json(&body) => {
                bot.refusals.answered(key);
                Outcome::Done(Ok(reply(body)))
            }
            200..=299 => {
                Outcome::Failed(Failure::answered(status, "a body that is not JSON".into()))
            }
            401 => {
                bot.mark_rejected();
                Outcome::Done(Err(Error::TokenRejected))
            }
            403 | 404 => {
                let e = discord_error(&body);
                let refused = Refused {
                    status,
                    message: if status == 403 {
                        format!(
                            "Discord refused the bot access: {}",
                            e.message_or("Missing Access")
                        )
                    } else {
                        format!("Discord says: {}", e.message_or("Not Found"))
                    },
                    code: e.code,
                };
                // A 404 is remembered only for what will not come back in
                // seconds: an unknown guild or channel.
                if status == 403 || matches!(e.code, Some(UNKNOWN_CHANNEL | UNKNOWN_GUILD)) {
                    bot.refusals.refused(key, refused.clone(), now);
                }
                if outgoing.keep_headers {
                    return Outcome::Done(Ok(reply(body)));
                }
                Outcome::Done(Err(refused_error(refused, false)))
            }
            500..=599 => {
                Outcome::Failed(Failure::lost(format!("Discord answered {status}"), false))
            }
            _ if outgoing.keep_headers => Outcome::Done(Ok(reply(body))),
            400..=499 => Outcome::Done(Err(Error::Rejected {
                status,
                body: discord_error_body(&body),
            })),
            _ => {
                let e = discord_error(&body);
                Outcome::Done(Err(Error::BadAnswer(format!(
                    "Discord answered {status} unexpectedly: {}",
                    e.message_or("no message")
                ))))
            }
        }
    }
}

impl Discord {
    /// A 429 that is not Discord's JSON comes from Discord's edge
    /// (Cloudflare): the host's IP is refused, for every bot, until its
    /// `Retry-After`. The bucket learned nothing.
    fn edge_refused(
        &self,
        bot: &Bot,
        slot: Slot<'_>,
        seen: &Observed,
        now: Instant,
        record: impl Fn(Answer<'_>),
    ) -> Outcome {
        let retry_after = seen.retry_after.unwrap_or(EDGE_BLOCK_UNSAID);
        metrics::global()
            .discord_429s
            .with_label_values(&["cloudflare"])
            .inc();
        log::warn!(
            "Discord's edge (Cloudflare) answered 429 without Discord's JSON on {}: every bot \
             of this host waits {:.0}s before calling Discord again",
            slot_route(&slot),
            retry_after.as_secs_f64()
        );
        self.invalid.block_host(now + retry_after);
        bot.limiter.abandon(slot, now);
        record(Answer::Lost);
        Outcome::RateLimited {
            retry_after,
            host: true,
        }
    }
}

/// A write's outcome, for `dbb_discord_writes_total`.
fn write_outcome(result: &Result<Reply, Error>) -> &'static str {
    match result {
        Ok(reply) if (200..300).contains(&reply.status) => "done",
        Ok(_)
        | Err(
            Error::Rejected { .. }
            | Error::Forbidden { .. }
            | Error::NotFound { .. }
            | Error::TokenRejected,
        ) => "refused",
        Err(Error::OutcomeUnknown { .. }) => "unknown",
        Err(Error::Performed { .. }) => "done_body_lost",
        Err(
            Error::RateLimited { .. }
            | Error::HostBlocked { .. }
            | Error::HeldBack
            | Error::ClusterUnreachable(_),
        ) => "not_sent",
        Err(Error::BadAnswer(_) | Error::Timeout) => "failed",
    }
}

/// A refusal as the error the client gets.
fn refused_error(refused: Refused, cached: bool) -> Error {
    let Refused {
        status,
        code,
        message,
    } = refused;
    if status == 403 {
        Error::Forbidden {
            message,
            code,
            cached,
        }
    } else {
        Error::NotFound {
            message,
            code,
            cached,
        }
    }
}

/// The whole body, up to `MAX_DISCORD_BODY`, read into one allocation of
/// its announced length: growing a `Vec` by doubling was ten reallocations
/// and 50 KB of copying per 25 KB page (perf: realloc and memmove, `make
/// bench`), and left a third of the last capacity unused. What is reserved
/// up front is capped, so a length is not believed before the bytes come.
fn read_body(body: &mut ureq::Body) -> Result<Vec<u8>, ureq::Error> {
    const RESERVE_AT_MOST: u64 = 1024 * 1024;
    let announced = body.content_length().unwrap_or(0).min(RESERVE_AT_MOST);
    let mut bytes = Vec::with_capacity(announced as usize);
    body.with_config()
        .limit(MAX_DISCORD_BODY)
        .reader()
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Whether a 2xx body is a JSON document, by its outer brackets.
///
/// Discord's non-JSON answers are whole HTML pages (Cloudflare) and cut-off
/// bodies, which ureq already reports against the body's length. A full
/// parse of every 25 KB page, only to throw it away, was a tenth of the
/// service's CPU per request (perf, `make bench`); pages that are merged are
/// still fully parsed by the routes.
fn looks_like_json(body: &[u8]) -> bool {
    let trimmed = body.trim_ascii();
    matches!(
        (trimmed.first(), trimmed.last()),
        (Some(b'['), Some(b']')) | (Some(b'{'), Some(b'}'))
    )
}

/// How far a request got before the transport failed: nothing was sent
/// (no connection, or the request not yet whole: Discord cannot act on a
/// request it has not fully received), or it was sent and the answer is
/// lost (WRITES-NOTES §3.6).
fn transport_failure(err: &ureq::Error, what: &str) -> Failure {
    use ureq::Timeout as T;
    let detail = format!("{what} ({})", describe(err));
    match err {
        ureq::Error::Timeout(T::Resolve | T::Connect | T::SendRequest | T::SendBody)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound => Failure::not_sent(detail),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            Failure::not_sent(detail)
        }
        ureq::Error::Timeout(_) => Failure::lost(detail, true),
        _ => Failure::lost(detail, false),
    }
}

/// The per-phase timeouts: a little under the whole budget, so a hang is
/// reported with its phase (`Discord::new`).
fn phase_timeout(upstream: Duration) -> Duration {
    const MARGIN: Duration = Duration::from_millis(25);
    if upstream > MARGIN * 2 {
        upstream - MARGIN
    } else {
        upstream / 2
    }
}

/// Discord's `X-RateLimit-*` and `Retry-After` answer headers, for the
/// passthrough to hand on.
fn rate_limit_headers(headers: &ureq::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            name.starts_with("x-ratelimit-") || name == "retry-after"
        })
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
        .collect()
}

fn slot_route(slot: &Slot) -> &'static str {
    slot.route().template
}

/// How long a resolved Discord address is reused before asking again.
const RESOLVE_TTL: Duration = Duration::from_secs(60);

/// Resolves each host once a minute instead of once per request.
///
/// ureq resolves before it looks in its connection pool, and when a timeout
/// is set its resolver runs each lookup on a new thread; `make bench` showed
/// one thread spawned per Discord call (`strace -c`: 928 `clone3` for 961
/// requests). Misses still go through ureq's resolver, with its timeout.
/// This is ureq's `unversioned` API, hence the `~3.5` pin in Cargo.toml.
#[derive(Debug, Default)]
struct CachingResolver {
    inner: ureq::unversioned::resolver::DefaultResolver,
    cache: parking_lot::Mutex<
        std::collections::HashMap<
            String,
            (Instant, ureq::unversioned::resolver::ResolvedSocketAddrs),
        >,
    >,
}

impl ureq::unversioned::resolver::Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map_or("", |a| a.as_str())
        );
        if let Some((at, addrs)) = self.cache.lock().get(&key)
            && at.elapsed() < RESOLVE_TTL
        {
            return Ok(addrs.clone());
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        self.cache
            .lock()
            .insert(key, (Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

enum Outcome {
    Done(Result<Reply, Error>),
    /// Sent or not, there is no answer to give: `call` decides whether to
    /// send again.
    Failed(Failure),
    /// A 429: Discord's for the bot or a route, or (`host`) its edge's for
    /// the whole host.
    RateLimited {
        retry_after: Duration,
        host: bool,
    },
}

/// A request that got no usable answer, and how far it got.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) stage: Stage,
    pub(crate) error: String,
}

/// How far a failed request got: what decides whether it may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Discord never had the whole request: sending again cannot duplicate.
    NotSent,
    /// Sent, and the answer lost (a timeout while waiting when `timeout`, a
    /// dropped connection, a 5xx): Discord may or may not have acted.
    Lost { timeout: bool },
    /// Discord answered this 2xx status, then the body was lost: it acted.
    Answered(u16),
}

impl Failure {
    fn not_sent(error: String) -> Failure {
        Failure {
            stage: Stage::NotSent,
            error,
        }
    }

    fn lost(error: String, timeout: bool) -> Failure {
        Failure {
            stage: Stage::Lost { timeout },
            error,
        }
    }

    fn answered(status: u16, what: String) -> Failure {
        Failure {
            stage: Stage::Answered(status),
            error: format!("Discord answered {status} but its body was lost: {what}"),
        }
    }

    /// The error a client gets once no more re-sends are allowed.
    fn into_error(self, resend: Resend) -> Error {
        match (resend, self.stage) {
            (Resend::Read, Stage::Lost { timeout: true }) => Error::Timeout,
            (Resend::Read, _) => Error::BadAnswer(format!("{}; try again shortly", self.error)),
            (_, Stage::Answered(status)) => Error::Performed { status },
            (_, Stage::Lost { timeout }) => Error::OutcomeUnknown {
                timeout,
                retry_safe: resend == Resend::Idempotent,
                detail: self.error,
            },
            (_, Stage::NotSent) => Error::BadAnswer(format!("{}; try again shortly", self.error)),
        }
    }
}

/// The fields of Discord's error bodies we use.
#[derive(Debug, Default, serde::Deserialize)]
struct DiscordError {
    message: Option<String>,
    code: Option<u64>,
    retry_after: Option<f64>,
    #[serde(default)]
    global: bool,
}

impl DiscordError {
    fn message_or(&self, fallback: &str) -> String {
        let text = self.message.as_deref().unwrap_or(fallback);
        // Discord's own text, bounded, so a strange body cannot flood a reply.
        text.chars().take(200).collect()
    }
}

fn discord_error(body: &[u8]) -> DiscordError {
    serde_json::from_slice(body).unwrap_or_default()
}

/// Discord's refusal (a 400 and kin) as the client gets it: its `message`,
/// `code` and `errors` tree, and nothing else it might carry.
fn discord_error_body(body: &[u8]) -> crate::discord::error::Rejection {
    #[derive(serde::Deserialize, Default)]
    struct Full {
        message: Option<String>,
        code: Option<u64>,
        errors: Option<serde_json::Value>,
    }
    let full: Full = serde_json::from_slice(body).unwrap_or_default();
    crate::discord::error::Rejection {
        message: full
            .message
            .map(|m| m.chars().take(200).collect())
            .unwrap_or_else(|| "no message".into()),
        code: full.code,
        errors: full.errors,
    }
}

/// Discord's wait: the body's `retry_after` (exact float seconds), else the
/// `Retry-After` header (whole seconds), else the bucket's reset, else one
/// second. Capped at a day so a garbled value
/// cannot overflow an `Instant`.
fn retry_after(body: &[u8], seen: &Observed) -> Duration {
    discord_error(body)
        .retry_after
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
        .or(seen.retry_after)
        .or(seen.reset_after)
        .unwrap_or(Duration::from_secs(1))
}

/// A short, token-free description of a transport error.
fn describe(err: &ureq::Error) -> String {
    match err {
        ureq::Error::Io(io) => format!("{:?}", io.kind()),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::BodyExceedsLimit(_) => "body too large".into(),
        ureq::Error::Protocol(_) => "protocol error".into(),
        ureq::Error::Tls(_) => "TLS error".into(),
        _ => "transport error".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_prefers_the_exact_body_value() {
        let seen = Observed {
            reset_after: Some(Duration::from_secs(9)),
            ..Observed::default()
        };
        let body =
            br#"{"message":"You are being rate limited.","retry_after":64.57,"global":false}"#;
        assert_eq!(retry_after(body, &seen), Duration::from_secs_f64(64.57));
        assert_eq!(retry_after(b"nope", &seen), Duration::from_secs(9));
    }

    #[test]
    fn retry_after_reads_the_header_when_the_body_has_none() {
        let seen = Observed {
            retry_after: Some(Duration::from_secs(7)),
            reset_after: Some(Duration::from_secs(9)),
            ..Observed::default()
        };
        assert_eq!(retry_after(b"<html>", &seen), Duration::from_secs(7));
        let body = br#"{"message":"You are being rate limited.","retry_after":6.5,"global":false}"#;
        assert_eq!(retry_after(body, &seen), Duration::from_secs_f64(6.5));
    }

    #[test]
    fn json_documents_are_told_from_html_and_cut_off_bodies() {
        assert!(looks_like_json(b" [{\"id\": \"1\"}]\n"));
        assert!(looks_like_json(b"{}"));
        assert!(!looks_like_json(b"<!DOCTYPE html><html></html>"));
        assert!(!looks_like_json(b"[{\"id\": \"1\"}, {\"id"));
        assert!(!looks_like_json(b""));
        assert!(!looks_like_json(b"[}"));
    }

    #[test]
    fn user_agent_has_discords_form() {
        assert!(USER_AGENT.starts_with("DiscordBot (https://"));
        assert!(USER_AGENT.ends_with(&format!(", {})", env!("CARGO_PKG_VERSION"))));
    }
}
