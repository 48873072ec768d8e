//! handler: the API as the HTTP front sees it (`http::server::Handler`):
//! admission before a worker is taken, dispatch to the endpoint, session
//! checks, and the one log line and metrics sample per request.
//!
//! Order of decisions, as API.md requires: CORS preflight, then routing (404,
//! 405), then the session (401), then the query and body (400), then Discord.
//! Every response, error or not, leaves through `finish`, which adds CORS
//! headers and writes the one log line per request.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::auth::login_token;
use crate::api::error::ApiError;
use crate::api::events;
use crate::api::passthrough::{self, RouteGroups};
use crate::api::query::Query;
use crate::api::reads::{self, Call};
use crate::api::routes::{Endpoint, OPENAPI, preflight_methods, resolve, route_label};
use crate::api::tickets;
use crate::api::writes::{WriteSettings, Writer, known_id};
use crate::discord::Discord;
use crate::discord::bots::{Bot, BotRegistry};
use crate::discord::catalog::Found;
use crate::discord::guard::{InvalidRequests, LoginThrottle};
use crate::discord::ratelimit::{GatePass, InFlightGate};
use crate::http::clients::{ClientKey, ClientLimiter, TrustedProxies, limit_address};
use crate::http::cors::Cors;
use crate::http::server::{Handler, Refusal, Request, Response, Ticket};
use crate::observe::metrics;
use crate::store::tickets::TicketStore;
use crate::store::{SessionId, SessionStore, StoreError};

/// Request targets are cut to this many characters in logs.
const LOG_TARGET_MAX: usize = 256;

/// The application: everything a request needs.
pub struct Api {
    pub store: Arc<dyn SessionStore>,
    pub bots: Arc<BotRegistry>,
    pub discord: Arc<Discord>,
    pub cors: Cors,
    /// `--max-ratelimit-wait`: the most one client request may wait, in
    /// total, on Discord's rate limits and on its bot's in-flight cap.
    pub max_wait: Duration,
    pub invalid: Arc<InvalidRequests>,
    pub logins: LoginThrottle,
    /// `--login-rate-limit`: logins per minute per client IP, valid or not.
    pub login_rate: ClientLimiter,
    /// Incoming request limits per client IP and per session.
    pub clients: ClientLimiter,
    pub proxies: TrustedProxies,
    pub writes: WriteSettings,
    /// Every bot's events, as its Gateway connection delivers them.
    pub events: Arc<crate::events::Events>,
    /// Single-use stream tickets.
    pub tickets: Arc<dyn TicketStore>,
    /// `--discord-routes`: what the passthrough serves.
    pub discord_routes: RouteGroups,
}

/// What a handler learned that the log line needs.
pub(super) struct Context {
    pub(super) started: Instant,
    pub(super) session_prefix: Option<String>,
}

impl Context {
    /// From when the request was read, so the log shows the whole time and
    /// the wait budget covers queueing too.
    fn new(request: Option<&Request>) -> Self {
        Context {
            started: request.map_or_else(Instant::now, |r| r.received),
            session_prefix: None,
        }
    }
}

/// A session `admit` found is trusted by the handler only this soon after:
/// one found before a wait (for the bot's in-flight place, or a permit) is
/// looked up again, so a logout during the wait takes effect.
const ADMITTED_FRESH: Duration = Duration::from_millis(20);

/// What `admit` learned about the request's session, handed to `handle`, so
/// the session is looked up once per request (one Redis round trip with a
/// shared store).
enum Admitted {
    /// The live session and its bot, when they were found, and the bot's
    /// in-flight place when the request will call Discord.
    Session {
        session: SessionId,
        bot: Arc<Bot>,
        found: Instant,
        _place: Option<GatePass>,
    },
    /// The store could not answer: the handler says 503 at once instead of
    /// waiting on it a second time.
    StoreDown(StoreError),
    /// A login's bot entry and its in-flight place, held until the answer.
    Login { _bot: Arc<Bot>, _place: GatePass },
}

impl Handler for Api {
    fn handle(&self, request: &Request, ticket: Option<&Ticket>) -> Response {
        let admitted = ticket.and_then(|t| t.downcast_ref::<Admitted>());
        let mut context = Context::new(Some(request));
        let response = match self.dispatch(request, admitted, &mut context) {
            Ok(response) => response,
            Err(error) => error.to_response(),
        };
        self.finish(Some(request), response, &context)
    }

    fn refuse(&self, request: Option<&Request>, why: Refusal) -> Response {
        self.refuse_with(request, why.into())
    }

    /// Runs on the connection thread, so what it refuses never takes a
    /// worker: first the client limits (per IP, then per live session),
    /// then, for requests that will call Discord for a bot, a place in that
    /// bot's in-flight gate, so a flood for one bot waits without holding
    /// workers other bots need.
    fn admit(&self, request: &Request) -> Result<Option<Ticket>, Response> {
        let endpoint = resolve(request.method(), request.path());
        if matches!(endpoint, Ok(Endpoint::Healthz | Endpoint::Metrics)) {
            // Probes and scrapes stay answerable while a client floods.
            return Ok(None);
        }
        let now = Instant::now();
        let ip = self.client_ip(request);
        self.within_client_limit(request, &self.clients, ClientKey::Ip(ip), "ip", now)?;
        if endpoint == Ok(Endpoint::Login) {
            return self.admit_login(request, ClientKey::Ip(ip), now);
        }
        let Some(session) = request
            .header("authorization")
            .and_then(|header| SessionId::parse(presented_session(header, request.path())))
        else {
            return Ok(None);
        };
        let bot = match self.store.get(&session) {
            Ok(Some(bot)) => bot,
            Ok(None) => return Ok(None),
            Err(down) => return Ok(Some(Box::new(Admitted::StoreDown(down)))),
        };
        let key = self.clients.session_key(session.as_str());
        self.within_client_limit(request, &self.clients, key, "session", now)?;
        if !endpoint.is_ok_and(Endpoint::calls_discord) {
            return Ok(Some(Box::new(Admitted::Session {
                session,
                bot,
                found: now,
                _place: None,
            })));
        }
        let place = self.enter_gate(request, &bot)?;
        Ok(Some(Box::new(Admitted::Session {
            session,
            bot,
            found: now,
            _place: Some(place),
        })))
    }

    /// Uploads may be `--max-upload-bytes` and take one of the upload
    /// slots while read and answered; everything else keeps the 64 KiB
    /// bound. The session is checked first, so clients without one cannot
    /// hold the slots; the front writes a refusal and closes, body unread.
    fn body_limit(
        &self,
        head: &Request,
        declared: usize,
    ) -> Result<crate::http::server::BodyAllowance, Response> {
        if !crate::api::writes::is_upload(head) {
            return Ok(Default::default());
        }
        if let Err(error) = self.authenticate(head) {
            return Err(self.refuse_with(Some(head), error));
        }
        self.writes
            .upload_allowance(declared)
            .ok_or_else(|| crate::api::writes::uploads_busy(|e| self.refuse_with(Some(head), e)))
    }
}

impl Api {
    /// A login takes its bot's in-flight place like any call to Discord, so
    /// a flood of logins with one token waits here, on connection threads,
    /// instead of holding the workers other bots need; and a client IP logs
    /// in at most `--login-rate-limit` times a minute. A body that names no
    /// usable token is left to the handler, which says what is wrong.
    fn admit_login(
        &self,
        request: &Request,
        ip: ClientKey,
        now: Instant,
    ) -> Result<Option<Ticket>, Response> {
        self.within_client_limit(request, &self.login_rate, ip, "login", now)?;
        let Ok(token) = login_token(&request.body) else {
            return Ok(None);
        };
        if self.bots.was_rejected(&token) {
            return Ok(None);
        }
        let bot = self.bots.get_or_create(token);
        let place = self.enter_gate(request, &bot)?;
        Ok(Some(Box::new(Admitted::Login {
            _bot: bot,
            _place: place,
        })))
    }

    /// A place in the bot's in-flight gate, waited for until the request's
    /// wait budget ends.
    fn enter_gate(&self, request: &Request, bot: &Arc<Bot>) -> Result<GatePass, Response> {
        let owner: Arc<dyn AsRef<InFlightGate> + Send + Sync> = Arc::clone(bot) as _;
        InFlightGate::enter(owner, request.received + self.max_wait).ok_or_else(|| {
            self.refuse_with(
                Some(request),
                ApiError::RateLimited {
                    message: "too many requests for this bot are in progress; retry shortly".into(),
                    retry_after: Duration::from_secs(1),
                },
            )
        })
    }

    fn dispatch(
        &self,
        request: &Request,
        admitted: Option<&Admitted>,
        context: &mut Context,
    ) -> Result<Response, ApiError> {
        let path = request.path();
        if request.method() == "OPTIONS" && path.starts_with("/api/") {
            return Ok(self.cors.preflight(preflight_methods(path)));
        }
        let endpoint = resolve(request.method(), path)?;
        if endpoint == Endpoint::Healthz {
            self.store.health()?;
            return Ok(json_response(200, &serde_json::json!({"status": "ok"})));
        }
        if endpoint == Endpoint::OpenApi {
            return Ok(Response::json(200, OPENAPI.as_bytes().to_vec()));
        }
        if endpoint == Endpoint::Metrics {
            return Ok(self.scrape());
        }
        if endpoint == Endpoint::Login {
            return self.login(request, context);
        }
        if endpoint == Endpoint::Passthrough {
            // Its errors are Discord's shape (API.md), routing's included.
            return Ok(
                passthrough::route(request.method(), path, self.discord_routes)
                    .and_then(|found| {
                        self.with_session(request, admitted, context, endpoint, Some(&found))
                    })
                    .unwrap_or_else(|error| passthrough::discord_shaped(&error)),
            );
        }
        self.with_session(request, admitted, context, endpoint, None)
    }

    /// The endpoints that need the request's session: everything but
    /// probes, the document and login. `found` is the passthrough's
    /// operation, already routed.
    fn with_session(
        &self,
        request: &Request,
        admitted: Option<&Admitted>,
        context: &mut Context,
        endpoint: Endpoint,
        found: Option<&Found<'_>>,
    ) -> Result<Response, ApiError> {
        let (session, bot) = self.session_of(request, admitted)?;
        context.session_prefix = Some(session.prefix().to_string());
        // The passthrough checks its query against Discord's operation.
        let query = match found {
            Some(_) => Query::default(),
            None => Query::parse(request.query())?,
        };
        let call = Call {
            discord: &self.discord,
            bot: &bot,
            deadline: context.started + self.max_wait,
        };
        let writer = Writer {
            call: &call,
            request,
            settings: &self.writes,
            query: &query,
        };
        let result = match endpoint {
            Endpoint::Logout => self.logout(&session),
            Endpoint::SendMessage => writer.send_message(),
            Endpoint::EditMessage => writer.edit_message(),
            Endpoint::DeleteMessage => writer.delete_message(),
            Endpoint::BulkDelete => writer.bulk_delete(),
            Endpoint::AddReaction => writer.reaction(true),
            Endpoint::RemoveReaction => writer.reaction(false),
            Endpoint::SendDm => writer.send_dm(),
            Endpoint::Typing => writer.typing(),
            Endpoint::Guilds => reads::guilds(&call),
            Endpoint::Members => reads::members(&call, &query),
            Endpoint::Channels => reads::channels(&call, &query),
            Endpoint::Messages => reads::messages(&call, &query),
            Endpoint::Events => self.events_stream(request, &session, &bot, &query),
            Endpoint::Gateway => self.gateway_status(&bot),
            Endpoint::Ticket => match self.tickets.issue(&session)? {
                Some(ticket) => Ok(json_response(
                    201,
                    &serde_json::json!({ "ticket": ticket, "expiresIn": tickets::LIFETIME.as_secs() }),
                )),
                None => Err(ApiError::Unavailable(
                    "too many stream tickets are waiting to be used; retry shortly".into(),
                )),
            },
            Endpoint::Passthrough => match found {
                Some(found) => writer.passthrough(found),
                None => unreachable!("the passthrough is routed first"),
            },
            Endpoint::Login | Endpoint::Healthz | Endpoint::OpenApi | Endpoint::Metrics => {
                unreachable!("answered without a session")
            }
        };
        if result == Err(ApiError::TokenRejected) || bot.is_rejected() {
            self.end_bot(&bot);
        }
        result
    }

    /// `GET /api/events`: the bot's events from its ring, as a stream that
    /// ends within a second of its session's end.
    fn events_stream(
        &self,
        request: &Request,
        session: &SessionId,
        bot: &Arc<Bot>,
        query: &Query,
    ) -> Result<Response, ApiError> {
        let filters = events::Filters::parse(query)?;
        let (bot_events, subscriber) = self.events.subscribe(bot, known_id(bot)?);
        let (store, session) = (Arc::clone(&self.store), session.clone());
        Ok(events::EventStream {
            bot: bot_events,
            _subscriber: subscriber,
            filters,
            last_seen: events::last_event_id(request, query),
            alive: Box::new(move || matches!(store.get(&session), Ok(Some(_)))),
        }
        .response())
    }

    /// `GET /api/gateway`: the bot's Gateway connection as API.md shapes it;
    /// `idle` while no subscriber has started it.
    fn gateway_status(&self, bot: &Arc<Bot>) -> Result<Response, ApiError> {
        let events = self.events.bot(known_id(bot)?);
        let mut status = match self.events.gateway_status(&events) {
            Some(status) => status,
            None => serde_json::json!({
                "state": "idle", "intents": [], "shards": [], "sessionAgeSeconds": null,
                "lastSequence": null, "heartbeatLatencyMs": null, "lastCloseCode": null,
                "sessionStartsRemaining": null,
            }),
        };
        status["subscribers"] = serde_json::json!({
            "streams": events.subscribers(),
            "webhooks": 0,
        });
        Ok(json_response(200, &status))
    }

    /// The request's live session and its bot: the one `admit` found when
    /// that was a moment ago, else looked up now.
    fn session_of(
        &self,
        request: &Request,
        admitted: Option<&Admitted>,
    ) -> Result<(SessionId, Arc<Bot>), ApiError> {
        match admitted {
            Some(Admitted::Session {
                session,
                bot,
                found,
                ..
            }) if found.elapsed() < ADMITTED_FRESH => {
                self.check_bot(session.clone(), Arc::clone(bot))
            }
            Some(Admitted::StoreDown(down)) => Err(down.clone().into()),
            _ => self.authenticate(request),
        }
    }

    /// Answers with an error without running an endpoint: what the front
    /// refused, and what `admit` turns away.
    fn refuse_with(&self, request: Option<&Request>, error: ApiError) -> Response {
        if error == ApiError::Internal {
            log::error!("internal error while answering a request (see the panic above)");
        }
        let response = match request {
            Some(r) if r.path().starts_with(passthrough::PREFIX) => {
                passthrough::discord_shaped(&error)
            }
            _ => error.to_response(),
        };
        self.finish(request, response, &Context::new(request))
    }

    /// Adds CORS headers and writes the request's log line.
    fn finish(
        &self,
        request: Option<&Request>,
        mut response: Response,
        context: &Context,
    ) -> Response {
        let origin = request.and_then(|r| r.header("origin"));
        self.cors.apply(origin, &mut response);
        let (method, target) = request.map_or(("-", "-"), |r| (r.method(), r.target()));
        let elapsed = context.started.elapsed();
        metrics::global().observe_request(
            method,
            request.map_or("unmatched", |r| route_label(r.path())),
            response.status,
            elapsed,
        );
        if !log::log_enabled!(log::Level::Info) {
            return response;
        }
        let target = tickets::redact(target);
        let target = passthrough::without_tokens(&target);
        let (method, target) = (log_safe(method), log_safe(&target));
        let duration_ms = (elapsed.as_secs_f64() * 10_000.0).round() / 10.0;
        let session = context.session_prefix.as_deref().unwrap_or("-");
        log::info!(
            method = &*method, target = &*target, status = response.status,
            duration_ms = duration_ms, session = session;
            "{method} {target} {} {duration_ms:.1}ms session={session}",
            response.status,
        );
        response
    }

    fn scrape(&self) -> Response {
        let snapshot = metrics::Snapshot {
            sessions: self.store.len(),
            bots: self.bots.len(),
            invalid_requests: self.invalid.count(Instant::now()),
            invalid_threshold: self.invalid.threshold(),
        };
        Response::typed(
            200,
            metrics::CONTENT_TYPE,
            metrics::global().render(&snapshot),
        )
    }

    /// The client's address as the limits see it (IPv6 per /64), through
    /// `--trusted-proxies` only.
    pub(super) fn client_ip(&self, request: &Request) -> std::net::IpAddr {
        let forwarded_for = request.header_values("x-forwarded-for");
        limit_address(self.proxies.client_ip(request.peer.ip(), forwarded_for))
    }

    fn within_client_limit(
        &self,
        request: &Request,
        limiter: &ClientLimiter,
        key: ClientKey,
        by: &str,
        now: Instant,
    ) -> Result<(), Response> {
        limiter.check(key, now).map_err(|wait| {
            metrics::global()
                .client_limited
                .with_label_values(&[by])
                .inc();
            self.refuse_with(
                Some(request),
                ApiError::RateLimited {
                    message: match by {
                        "login" => {
                            "too many logins from this address; retry after the given \
                                    time (--login-rate-limit)"
                        }
                        "session" => {
                            "too many requests from this session; slow down (--client-rate-limit)"
                        }
                        _ => "too many requests from this address; slow down (--client-rate-limit)",
                    }
                    .into(),
                    retry_after: wait,
                },
            )
        })
    }

    fn authenticate(&self, request: &Request) -> Result<(SessionId, Arc<Bot>), ApiError> {
        let session = match request.header("authorization") {
            Some(header) => SessionId::parse(presented_session(header, request.path()))
                .ok_or(ApiError::Unauthorized("invalid session ID; log in again"))?,
            None => self.ticket_session(request)?,
        };
        let bot = self.store.get(&session)?.ok_or(ApiError::Unauthorized(
            "unknown or expired session; log in again",
        ))?;
        self.check_bot(session, bot)
    }

    /// The session of a stream ticket (`GET /api/events?ticket=`), spent
    /// by this use.
    fn ticket_session(&self, request: &Request) -> Result<SessionId, ApiError> {
        const MISSING: &str =
            "missing Authorization header; send the session ID from /api/auth/login";
        if request.path() != "/api/events" {
            return Err(ApiError::Unauthorized(MISSING));
        }
        let query = Query::parse(request.query())?;
        let ticket = query
            .text("ticket")
            .ok_or(ApiError::Unauthorized(MISSING))?;
        self.tickets.redeem(ticket)?.ok_or(ApiError::Unauthorized(
            "unknown, used or expired stream ticket; ask POST /api/events/tickets for a new one",
        ))
    }

    /// A session whose bot's token Discord rejected ends here.
    fn check_bot(
        &self,
        session: SessionId,
        bot: Arc<Bot>,
    ) -> Result<(SessionId, Arc<Bot>), ApiError> {
        if bot.is_rejected() {
            self.end_bot(&bot);
            return Err(ApiError::TokenRejected);
        }
        Ok((session, bot))
    }

    /// Discord rejected the bot's token: end every session of that bot.
    pub(super) fn end_bot(&self, bot: &Arc<Bot>) {
        self.bots.remember_rejected(bot);
        let identity = bot.identity();
        if let Some(id) = bot.discord_id() {
            self.events.bot_gone(id);
        }
        match self.store.remove_bot(bot) {
            Ok(ended) => {
                for prefix in ended {
                    log::info!(
                        "session {prefix} ended: Discord rejected the token of bot {} ({})",
                        identity.id,
                        identity.username
                    );
                }
            }
            // Its sessions stay, but the bot is marked rejected: each is
            // refused (401) and ended when next presented.
            Err(e) => log::warn!(
                "cannot end the sessions of bot {} whose token Discord rejected: {e:?}",
                identity.id
            ),
        }
    }
}

/// The session ID in an `Authorization` value: bare, or after `Bearer `;
/// under `/api/discord/` also after `Bot `, as Discord libraries send
/// their "token".
fn presented_session<'a>(header: &'a str, path: &str) -> &'a str {
    let header = header.trim();
    match header.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(("Bot", rest)) if path.starts_with(passthrough::PREFIX) => rest.trim(),
        _ => header,
    }
}

pub(super) fn json_response(status: u16, value: &serde_json::Value) -> Response {
    Response::json(
        status,
        serde_json::to_vec(value).expect("a JSON value always serializes"),
    )
}

/// The request target as logs may show it: bounded, and with control and
/// non-ASCII bytes escaped so a client cannot forge log lines. Every request
/// is logged, so the usual target is borrowed as it is (building it char by
/// char was a third of all allocations per request: `make bench`, perf).
fn log_safe(target: &str) -> Cow<'_, str> {
    if target.len() <= LOG_TARGET_MAX && target.bytes().all(|b| b.is_ascii_graphic()) {
        return Cow::Borrowed(target);
    }
    let mut out = String::with_capacity(LOG_TARGET_MAX + 16);
    for b in target.bytes().take(LOG_TARGET_MAX) {
        if b.is_ascii_graphic() {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    if target.len() > LOG_TARGET_MAX {
        out.push('…');
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_cannot_be_forged() {
        assert_eq!(log_safe("/a\r\nINFO fake"), "/a\\x0d\\x0aINFO\\x20fake");
    }

    #[test]
    fn logged_targets_escape_each_byte_of_non_ascii_and_are_bounded() {
        assert_eq!(log_safe("/é"), "/\\xc3\\xa9");
        let long = format!("/{}", "a".repeat(LOG_TARGET_MAX));
        let logged = log_safe(&long);
        assert_eq!(logged.len(), LOG_TARGET_MAX + '…'.len_utf8());
        assert!(logged.ends_with('…'));
        assert!(matches!(log_safe("/api/guilds?x=1"), Cow::Borrowed(_)));
    }
}
