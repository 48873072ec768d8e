//! The request pipeline: the one place that knows the order in which Discord
//! applies its checks, and the glue between the world, the limiter, the
//! fault queue and the request log.
//!
//! Why it exists: the order matters to clients. For a request under
//! `/api/v10` the fake does, in order:
//! 1. take a queued fault (it replaces the answer, except `latency`);
//! 2. match the route (404, then 405 for another method);
//! 3. authenticate `Authorization: Bot <token>` (401);
//! 4. rate-limit: global per bot, then the route bucket (429);
//! 5. answer: reads from the world and the write state (`api`), writes
//!    change the write state (`writes`) (200, 204, 400, 403, 404, 413);
//! 6. count the answer toward the IP's invalid requests (`edge`).
//!
//! A body larger than `--max-request-bytes` is refused with 413 40005 from
//! its `Content-Length` before routing, without being read (message.mdx:
//! "The maximum request size when sending a message is 25 MiB").
//!
//! Write routes have their own buckets (WRITES-NOTES §1.8, §2): sends and
//! edits share one per channel (`--send-limit` per `--send-window-ms`),
//! reaction PUT and DELETE share one per channel (1 per
//! `--reaction-window-ms`), and deletes are bucketed by the message's age.
//!
//! Every step's outcome is logged once, before any deliberate delay, so the
//! log shows requests in arrival order even while their answers are delayed.
//!
//! Invariants: no lock is held while sleeping (latency, hang), and locks
//! are taken through `PoisonError::into_inner`: a panicking request is
//! answered 500 by `http.rs` and must not wedge every later request.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::api::{self, ApiError, REACTION_BUCKET, Route, SEND_BUCKET};
use crate::control;
use crate::edge::{BANNED_BODY, BanRule, Edge};
use crate::faults::{DEFAULT_HANG, Fault, FaultKind, FaultQueue};
use crate::gateway::{self, Gateway};
use crate::http::{Handler, Outcome, Request, Response};
use crate::observe::{MAX_LOGGED_BODY, Record, Recorder, fnv1a_hex};
use crate::ratelimit::{BucketSpec, BucketState, Decision, Limiter, Limits};
use crate::state::Store;
use crate::timefmt::{ceil_ms, secs_3dp, unix_now_ms};
use crate::world::{Bot, World};
use crate::writes::{self, Reply, WriteOptions};

/// Prefix of every Discord route.
pub const API_PREFIX: &str = "/api/v10";
/// Prefix of the control API.
pub const CONTROL_PREFIX: &str = "/_fake";

/// Runtime options that shape answers.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// `None` disables rate limiting (and its headers) entirely.
    pub limits: Option<Limits>,
    /// Fixed delay added to every Discord-route answer.
    pub latency: Duration,
    /// Up to this much random delay before a Discord-route request is
    /// processed, as if the network held it on its way: Discord counts a
    /// request when it arrives, not when the client sent it.
    pub jitter: Duration,
    /// When Cloudflare bans an IP for invalid requests.
    pub ban_rule: BanRule,
    /// Write-route limits and sizes.
    pub writes: WriteOptions,
}

/// Everything the handlers share.
pub struct App {
    pub world: World,
    pub options: Options,
    pub limiter: Option<Limiter>,
    pub faults: FaultQueue,
    pub recorder: Recorder,
    /// Tokens revoked through the control API.
    pub revoked: Mutex<HashSet<String>>,
    pub edge: Edge,
    /// What write routes changed.
    pub store: Store,
    /// The Gateway's sessions and connections; REST writes publish to it.
    pub gateway: Gateway,
}

impl App {
    pub fn new(world: World, options: Options, start: Instant, gateway: Gateway) -> App {
        App {
            world,
            options,
            limiter: options.limits.map(Limiter::new),
            faults: FaultQueue::default(),
            recorder: Recorder::new(start),
            revoked: Mutex::new(HashSet::new()),
            edge: Edge::new(options.ban_rule),
            store: Store::default(),
            gateway,
        }
    }

    /// `POST /_fake/reset`: back to the state at start-up (the world stays).
    pub fn reset(&self) {
        self.faults.clear();
        self.recorder.reset();
        self.edge.reset();
        self.store.reset();
        self.gateway.reset_counters();
        if let Some(limiter) = &self.limiter {
            limiter.reset();
        }
        self.revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Revokes a token, as `POST /_fake/revoke` does (also the Gateway's
    /// token reset when the session budget runs out).
    pub fn revoke(&self, token: &str) {
        self.revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.to_string());
    }

    /// The bot a token authenticates, unless revoked.
    pub fn authenticate(&self, token: Option<&str>) -> Option<&Bot> {
        let bot = self.world.bot_by_token(token?)?;
        let revoked = self
            .revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&bot.token);
        (!revoked).then_some(bot)
    }

    /// Handles one request that is not for the control API.
    fn discord(&self, req: &Request) -> Outcome {
        if !self.options.jitter.is_zero() {
            thread::sleep(random_below(self.options.jitter));
        }
        let authorization = req.header("authorization");
        let token = authorization.and_then(|h| h.strip_prefix("Bot "));
        let scheme_ok = token.is_some_and(|t| !t.is_empty() && !t.contains(char::is_whitespace));
        let bot = self.authenticate(token.filter(|_| scheme_ok));
        let reason = req.header("x-audit-log-reason");
        let mut record = Record {
            method: req.method.clone(),
            target: req.target.clone(),
            bot_id: bot.map(|b| b.id),
            user_agent: req.header("user-agent").map(str::to_string),
            authorization_scheme_ok: scheme_ok,
            headers: req
                .headers
                .iter()
                .map(|(k, _)| k.to_ascii_lowercase())
                .collect(),
            content_type: req.header("content-type").map(str::to_string),
            body_len: req.body.len(),
            body_hash: fnv1a_hex(&req.body),
            body: (req.body.len() <= MAX_LOGGED_BODY)
                .then(|| String::from_utf8(req.body.clone()).ok())
                .flatten(),
            audit_log_reason: reason.map(str::to_string),
            audit_log_reason_decoded: reason.map(writes::decode_audit_reason),
            nonce: writes::logged_nonce(req),
            ..Record::default()
        };

        let path = req.path();
        let in_api = path
            .strip_prefix(API_PREFIX)
            .filter(|rest| rest.starts_with('/'));
        let fault = in_api.and_then(|_| self.faults.take(&req.target));
        record.fault = fault.as_ref().map(|f| f.kind.name());
        let route = in_api.and_then(Route::parse);
        let now = Instant::now();
        if in_api.is_some()
            && let Some(left) = self.edge.banned_for(req.peer, now)
        {
            record.status = Some(429);
            self.recorder.record(record);
            return Outcome::Respond(cloudflare_429(ceil_ms(left)));
        }

        let mut delay = self.options.latency;
        let response = match &fault {
            Some(f) if f.kind == FaultKind::Hang => {
                self.recorder.record(record);
                thread::sleep(f.ms.map_or(DEFAULT_HANG, Duration::from_millis));
                return Outcome::Close;
            }
            Some(f) if f.kind == FaultKind::Drop => {
                self.recorder.record(record);
                return Outcome::Close;
            }
            Some(f)
                if matches!(
                    f.kind,
                    FaultKind::WriteThenHang | FaultKind::WriteThenDrop | FaultKind::WriteThen502
                ) =>
            {
                // The request is performed for real; only its answer is lost.
                let _performed = self.answer(req, route.as_ref(), bot, now);
                if f.kind == FaultKind::WriteThen502 {
                    record.status = Some(502);
                    self.recorder.record(record);
                    if !delay.is_zero() {
                        thread::sleep(delay);
                    }
                    return Outcome::Respond(Response::json(
                        502,
                        &json!({ "message": "502 Bad Gateway", "code": 0 }),
                    ));
                }
                self.recorder.record(record);
                if f.kind == FaultKind::WriteThenHang {
                    thread::sleep(f.ms.map_or(DEFAULT_HANG, Duration::from_millis));
                }
                return Outcome::Close;
            }
            Some(f) if !f.kind.performs_request() => {
                let resp = self.injected(f, req, route.as_ref(), bot, now);
                if let (Some(limiter), Some(bot)) = (&self.limiter, bot)
                    && resp.status != 429
                {
                    limiter.note_global(&bot.token, now);
                }
                resp
            }
            _ => {
                if let Some(f) = &fault {
                    delay += Duration::from_millis(f.ms.unwrap_or(0));
                }
                self.answer(req, route.as_ref(), bot, now)
            }
        };

        record.status = Some(response.status);
        record.scope = response.header("X-RateLimit-Scope").map(str::to_string);
        if fault
            .as_ref()
            .is_none_or(|f| f.kind != FaultKind::Cloudflare429)
        {
            self.edge
                .record(req.peer, response.status, record.scope.as_deref(), now);
        }
        self.recorder.record(record);
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        Outcome::Respond(response)
    }

    /// The real answer: route, auth, rate limit, world.
    fn answer(
        &self,
        req: &Request,
        route: Option<&Route>,
        bot: Option<&Bot>,
        now: Instant,
    ) -> Response {
        if req.body_omitted.is_some() {
            return error(ApiError::new(413, "Request entity too large", 40005));
        }
        let Some(route) = route else {
            return error(ApiError::not_found());
        };
        if !route.allows(&req.method) {
            return error(ApiError::method_not_allowed());
        }
        // gateway.mdx "Get Gateway": "This endpoint does not require
        // authentication."
        if *route == Route::Gateway {
            return Response::json(200, &gateway::rest::gateway(&self.gateway));
        }
        let Some(bot) = bot else {
            return error(ApiError::unauthorized());
        };
        let Some(limiter) = &self.limiter else {
            return self.respond(route, req, bot, now);
        };
        let spec = self.bucket(limiter, route, &req.method);
        match limiter.check_spec(&bot.token, spec, route.top_level(), now) {
            Decision::Allowed(state) => {
                with_bucket_headers(self.respond(route, req, bot, now), state, spec.hash)
            }
            Decision::RouteLimited(state) => user_429(state, spec.hash),
            Decision::GlobalLimited { retry_after } => global_429(ceil_ms(retry_after)),
        }
    }

    /// The answer of an admitted request: a read or a write.
    fn respond(&self, route: &Route, req: &Request, bot: &Bot, now: Instant) -> Response {
        match route {
            Route::GatewayBot => {
                return Response::json(200, &gateway::rest::gateway_bot(&self.gateway, bot));
            }
            Route::CurrentApplication => {
                return Response::json(200, &gateway::rest::application(bot));
            }
            _ => {}
        }
        if req.method == "GET" {
            return result(api::handle(
                route,
                &self.world,
                &self.store,
                bot,
                req.query(),
            ));
        }
        let w = &self.options.writes;
        match writes::handle(
            &self.world,
            &self.store,
            &self.gateway,
            w,
            route,
            req,
            bot,
            now,
        ) {
            Ok(Reply::Json(body)) => Response::json(200, &body),
            Ok(Reply::Empty) => Response {
                status: 204,
                headers: Vec::new(),
                body: Vec::new(),
            },
            Err(e) => error(e),
        }
    }

    /// The bucket a request on `route` with `method` counts against.
    fn bucket(&self, limiter: &Limiter, route: &Route, method: &str) -> BucketSpec {
        let w = &self.options.writes;
        match (route, method) {
            (Route::ChannelMessages(_), "POST") | (Route::ChannelMessage(..), "PATCH") => {
                BucketSpec {
                    hash: SEND_BUCKET,
                    limit: w.send_limit,
                    window: w.send_window,
                }
            }
            (Route::Reaction { .. }, _) => BucketSpec {
                hash: REACTION_BUCKET,
                limit: 1,
                window: w.reaction_window,
            },
            (Route::ChannelMessage(c, m), "DELETE") => {
                let (hash, limit, window) =
                    writes::delete_bucket(&self.world, &self.store, c, m, unix_now_ms());
                BucketSpec {
                    hash,
                    limit,
                    window,
                }
            }
            _ => limiter.route_spec(route.bucket_hash(method)),
        }
    }

    /// The response for an injected fault other than hang, drop and latency.
    fn injected(
        &self,
        fault: &Fault,
        req: &Request,
        route: Option<&Route>,
        bot: Option<&Bot>,
        now: Instant,
    ) -> Response {
        let retry_ms = ((fault.retry_after_secs() * 1000.0).ceil() as u64).max(1);
        let spec = match (route, &self.limiter) {
            (Some(r), Some(l)) => Some(self.bucket(l, r, &req.method)),
            _ => None,
        };
        // The route's real bucket, not consumed: what Discord's shared 429s
        // carry (its Remaining is not 0).
        let peeked = |resp: Response| match (spec, bot, &self.limiter, route) {
            (Some(spec), Some(b), Some(l), Some(r)) => {
                let state = l.peek(&b.token, spec, r.top_level(), now);
                with_bucket_headers(resp, state, spec.hash)
            }
            _ => resp,
        };
        match fault.kind {
            FaultKind::Status500 => Response::json(
                500,
                &json!({ "message": "500: Internal Server Error", "code": 0 }),
            ),
            FaultKind::Status502 => Response::json(
                502,
                &json!({
                    "message": "There was not a gateway available to process your request. Wait a bit and retry.",
                    "code": 0,
                }),
            ),
            FaultKind::Status503 => Response::json(
                503,
                &json!({ "message": "503: Service Unavailable", "code": 0 }),
            ),
            FaultKind::NotJson => Response {
                status: 200,
                headers: vec![("Content-Type".into(), "text/html; charset=UTF-8".into())],
                body: NOT_JSON_BODY.as_bytes().to_vec(),
            },
            FaultKind::User429 => {
                let limit = match (spec, route) {
                    (Some(spec), _) => spec.limit,
                    _ => self.options.limits.map_or(1, |l| l.route_limit),
                };
                let state = BucketState {
                    limit,
                    remaining: 0,
                    reset_after: Duration::from_millis(retry_ms),
                };
                match route {
                    Some(r) => user_429(
                        state,
                        spec.map_or_else(|| r.bucket_hash(&req.method), |s| s.hash),
                    ),
                    None => rate_limited(LIMITED_MESSAGE, retry_ms, false, "user"),
                }
            }
            // Like Discord's example: the bucket headers describe the
            // route's own (not exhausted) bucket and disagree with
            // retry_after, which is the value to trust.
            FaultKind::Shared429 => peeked(rate_limited(SHARED_MESSAGE, retry_ms, false, "shared")),
            // The channel's write limit (discord-api-docs PR #8290): code
            // 20028, retry_after 0.3 by default; the bucket still has room.
            FaultKind::Sublimit429 => {
                let resp = Response::json(
                    429,
                    &json!({
                        "message": SUBLIMIT_MESSAGE,
                        "retry_after": retry_ms as f64 / 1000.0,
                        "global": false,
                        "code": 20028,
                    }),
                )
                .with_header("Retry-After", retry_ms.div_ceil(1000).to_string())
                .with_header("X-RateLimit-Scope", "shared");
                peeked(resp)
            }
            FaultKind::Global429 => global_429(retry_ms),
            FaultKind::Cloudflare429 => cloudflare_429(retry_ms),
            FaultKind::Hang
            | FaultKind::Drop
            | FaultKind::Latency
            | FaultKind::WriteThenHang
            | FaultKind::WriteThenDrop
            | FaultKind::WriteThen502 => {
                unreachable!("handled by the caller")
            }
        }
    }
}

impl Handler for App {
    fn max_body(&self) -> usize {
        self.options.writes.max_request_bytes
    }

    fn handle(&self, req: &Request) -> Outcome {
        let path = req.path();
        match path.strip_prefix(CONTROL_PREFIX) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                Outcome::Respond(control::handle(self, req, rest))
            }
            _ => self.discord(req),
        }
    }
}

/// 429 message for user and global limits (rate-limits.mdx examples).
const LIMITED_MESSAGE: &str = "You are being rate limited.";
/// 429 message for shared (per-resource) limits.
const SHARED_MESSAGE: &str = "The resource is being rate limited.";
/// 429 message of the channel write limit, code 20028 (PR #8290).
const SUBLIMIT_MESSAGE: &str =
    "The write action you are performing on the channel has hit the write rate limit.";

/// What an HTML error page from a proxy in front of Discord looks like.
const NOT_JSON_BODY: &str = "<!DOCTYPE html>\n<html><head><title>Error</title></head>\
<body><h1>Something went wrong</h1><p>This is not JSON.</p></body></html>\n";

fn error(e: ApiError) -> Response {
    Response::json(e.status, &e.body)
}

fn result(r: Result<serde_json::Value, ApiError>) -> Response {
    match r {
        Ok(body) => Response::json(200, &body),
        Err(e) => error(e),
    }
}

/// Adds the five `X-RateLimit-*` headers describing `state`.
fn with_bucket_headers(resp: Response, state: BucketState, hash: &str) -> Response {
    let reset_after_ms = ceil_ms(state.reset_after);
    resp.with_header("X-RateLimit-Limit", state.limit.to_string())
        .with_header("X-RateLimit-Remaining", state.remaining.to_string())
        .with_header(
            "X-RateLimit-Reset",
            secs_3dp(unix_now_ms() + reset_after_ms),
        )
        .with_header("X-RateLimit-Reset-After", secs_3dp(reset_after_ms))
        .with_header("X-RateLimit-Bucket", hash)
}

/// A 429 body and `Retry-After` (whole seconds, rounded up) plus the scope.
fn rate_limited(message: &str, retry_ms: u64, global: bool, scope: &str) -> Response {
    Response::json(
        429,
        &json!({
            "message": message,
            "retry_after": retry_ms as f64 / 1000.0,
            "global": global,
        }),
    )
    .with_header("Retry-After", retry_ms.div_ceil(1000).to_string())
    .with_header("X-RateLimit-Scope", scope)
}

/// An exhausted route bucket.
fn user_429(state: BucketState, hash: &str) -> Response {
    let retry_ms = ceil_ms(state.reset_after).max(1);
    with_bucket_headers(
        rate_limited(LIMITED_MESSAGE, retry_ms, false, "user"),
        state,
        hash,
    )
}

/// The bot's global limit; Discord sends no bucket headers with it.
fn global_429(retry_ms: u64) -> Response {
    rate_limited(LIMITED_MESSAGE, retry_ms.max(1), true, "global")
        .with_header("X-RateLimit-Global", "true")
}

/// Cloudflare's answer to a banned IP: HTML and `Retry-After` (whole
/// seconds, rounded up) only.
fn cloudflare_429(retry_ms: u64) -> Response {
    Response {
        status: 429,
        headers: vec![
            ("Content-Type".into(), "text/html; charset=UTF-8".into()),
            (
                "Retry-After".into(),
                retry_ms.div_ceil(1000).max(1).to_string(),
            ),
        ],
        body: BANNED_BODY.as_bytes().to_vec(),
    }
}

/// A random duration in `[0, max]`, from a per-thread xorshift seeded by the
/// clock and the thread: tests need spread, not cryptography.
fn random_below(max: Duration) -> Duration {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let nanos = unix_now_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let id = format!("{:?}", thread::current().id());
            id.bytes().fold(nanos | 1, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3))
        });
    }
    let next = STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    });
    let max_us = max.as_micros() as u64;
    Duration::from_micros(next % (max_us + 1))
}
