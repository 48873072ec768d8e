//! routes: the API of `API.md`: which path and method does what, session
//! checks, and the handlers that turn a client request into Discord calls.
//!
//! Order of decisions, as API.md requires: CORS preflight, then routing (404,
//! 405), then the session (401), then the query and body (400), then Discord.
//! Every response, error or not, leaves through `finish`, which adds CORS
//! headers and writes the one log line per request.
//!
//! Architecture invariants: routes never call ureq or build a Discord URL
//! (that is `discord`); they never pick an error status (that is `error`).

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use crate::bots::{Bot, BotRegistry, Identity, Token};
use crate::clients::{ClientKey, ClientLimiter, TrustedProxies, limit_address};
use crate::cors::Cors;
use crate::discord::{Cursor, Discord, GUILDS_PAGE, MEMBERS_PAGE, MESSAGES_PAGE, Route};
use crate::error::ApiError;
use crate::guard::{InvalidRequests, LoginThrottle};
use crate::metrics;
use crate::query::{Query, printable};
use crate::ratelimit::{GatePass, InFlightGate};
use crate::server::{Handler, Request, Response, Ticket};
use crate::sessions::{SessionId, SessionStore, StoreError};
use crate::snowflake::Snowflake;

/// API.md: members `limit` 1 to 10000, default 1000.
const MEMBERS_LIMIT_MAX: u16 = 10_000;
const MEMBERS_LIMIT_DEFAULT: u16 = 1000;
/// API.md: messages `limit` 1 to 1000, default 100.
const MESSAGES_LIMIT_MAX: u16 = 1000;
const MESSAGES_LIMIT_DEFAULT: u16 = 100;
/// Guild pages we follow before stopping: 100 × 200 = 20,000 guilds, far
/// beyond what one unsharded bot can be in.
const MAX_GUILD_PAGES: usize = 100;
/// Request targets are cut to this many characters in logs.
const LOG_TARGET_MAX: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Login,
    Logout,
    Guilds,
    Members,
    Channels,
    Messages,
    Healthz,
    OpenApi,
    Metrics,
}

/// The route table: path, the method it serves, and what it is.
const ROUTES: &[(&str, &str, Endpoint)] = &[
    ("/api/auth/login", "POST", Endpoint::Login),
    ("/api/auth/logout", "POST", Endpoint::Logout),
    ("/api/guilds", "GET", Endpoint::Guilds),
    ("/api/members", "GET", Endpoint::Members),
    ("/api/channels", "GET", Endpoint::Channels),
    ("/api/messages", "GET", Endpoint::Messages),
    ("/api/openapi.json", "GET", Endpoint::OpenApi),
    ("/healthz", "GET", Endpoint::Healthz),
    ("/metrics", "GET", Endpoint::Metrics),
];

/// This service's own API as an OpenAPI 3.1 document, served as is.
/// `tests/openapi.rs` checks it against [`route_table`].
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every (method, path) the router serves, CORS preflights aside: what the
/// OpenAPI document must describe, no more and no less.
pub fn route_table() -> impl Iterator<Item = (&'static str, &'static str)> {
    ROUTES.iter().map(|(path, method, _)| (*method, *path))
}

/// The `Allow` header for a known path: its method, plus the CORS preflight
/// on `/api/` paths.
fn allow_header(method: &str, path: &str) -> &'static str {
    match (method, path.starts_with("/api/")) {
        ("POST", true) => "POST, OPTIONS",
        ("GET", true) => "GET, OPTIONS",
        _ => "GET",
    }
}

/// The metrics label of a path: its route, or one label for every path that
/// is not a route, so clients cannot create series.
fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map_or("unmatched", |(p, _, _)| p)
}

fn resolve(method: &str, path: &str) -> Result<Endpoint, ApiError> {
    let (_, served, endpoint) = ROUTES
        .iter()
        .find(|(p, _, _)| *p == path)
        .ok_or_else(|| ApiError::not_found(format!("no such route: {}", printable(path))))?;
    if method == *served {
        Ok(*endpoint)
    } else {
        Err(ApiError::MethodNotAllowed {
            allow: allow_header(served, path),
        })
    }
}

/// The application: everything a request needs.
pub struct Api {
    pub store: Arc<dyn SessionStore>,
    pub bots: Arc<BotRegistry>,
    pub discord: Discord,
    pub cors: Cors,
    /// `--max-ratelimit-wait`: the most one client request may wait, in
    /// total, on Discord's rate limits and on its bot's in-flight cap.
    pub max_wait: Duration,
    pub invalid: Arc<InvalidRequests>,
    pub logins: LoginThrottle,
    /// Incoming request limits per client IP and per session.
    pub clients: ClientLimiter,
    pub proxies: TrustedProxies,
}

/// One client request's access to Discord: which bot, and until when the
/// request may wait on rate limits (one budget for all its pages).
struct Call<'a> {
    discord: &'a Discord,
    bot: &'a Bot,
    deadline: Instant,
}

impl Call<'_> {
    fn get(&self, route: Route) -> Result<Vec<u8>, ApiError> {
        self.discord.get(self.bot, route, self.deadline)
    }
}

/// What a handler learned that the log line needs.
struct Context {
    started: Instant,
    session_prefix: Option<String>,
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

    fn refuse(&self, request: Option<&Request>, error: ApiError) -> Response {
        if error == ApiError::Internal {
            log::error!("internal error while answering a request (see the panic above)");
        }
        self.finish(request, error.to_response(), &Context::new(request))
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
        self.within_client_limit(request, ClientKey::Ip(ip), "ip", now)?;
        let Some(session) = request
            .header("authorization")
            .and_then(|header| SessionId::parse(presented_session(header)))
        else {
            return Ok(None);
        };
        let bot = match self.store.get(&session) {
            Ok(Some(bot)) => bot,
            Ok(None) => return Ok(None),
            Err(down) => return Ok(Some(Box::new(Admitted::StoreDown(down)))),
        };
        let key = self.clients.session_key(session.as_str());
        self.within_client_limit(request, key, "session", now)?;
        let calls_discord = matches!(
            endpoint,
            Ok(Endpoint::Guilds | Endpoint::Members | Endpoint::Channels | Endpoint::Messages)
        );
        if !calls_discord {
            return Ok(Some(Box::new(Admitted::Session {
                session,
                bot,
                found: now,
                _place: None,
            })));
        }
        let owner: Arc<dyn AsRef<InFlightGate> + Send + Sync> = Arc::clone(&bot) as _;
        match InFlightGate::enter(owner, request.received + self.max_wait) {
            Some(place) => Ok(Some(Box::new(Admitted::Session {
                session,
                bot,
                found: now,
                _place: Some(place),
            }))),
            None => Err(self.refuse(
                Some(request),
                ApiError::RateLimited {
                    message: "too many requests for this bot are in progress; retry shortly".into(),
                    retry_after: Duration::from_secs(1),
                },
            )),
        }
    }
}

impl Api {
    fn dispatch(
        &self,
        request: &Request,
        admitted: Option<&Admitted>,
        context: &mut Context,
    ) -> Result<Response, ApiError> {
        let path = request.path();
        if request.method() == "OPTIONS" && path.starts_with("/api/") {
            return Ok(self.cors.preflight());
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
        let (session, bot) = match admitted {
            Some(Admitted::Session {
                session,
                bot,
                found,
                ..
            }) if found.elapsed() < ADMITTED_FRESH => {
                self.check_bot(session.clone(), Arc::clone(bot))?
            }
            Some(Admitted::StoreDown(down)) => return Err(down.clone().into()),
            _ => self.authenticate(request)?,
        };
        context.session_prefix = Some(session.prefix().to_string());
        let query = Query::parse(request.query())?;
        let call = Call {
            discord: &self.discord,
            bot: &bot,
            deadline: context.started + self.max_wait,
        };
        let result = match endpoint {
            Endpoint::Logout => self.logout(&session),
            Endpoint::Guilds => guilds(&call),
            Endpoint::Members => members(&call, &query),
            Endpoint::Channels => channels(&call, &query),
            Endpoint::Messages => messages(&call, &query),
            Endpoint::Login | Endpoint::Healthz | Endpoint::OpenApi | Endpoint::Metrics => {
                unreachable!("answered above")
            }
        };
        if result == Err(ApiError::TokenRejected) {
            self.end_bot(&bot);
        }
        result
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
        let (method, target) = (log_safe(method), log_safe(target));
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
        };
        Response::typed(
            200,
            metrics::CONTENT_TYPE,
            metrics::global().render(&snapshot),
        )
    }

    /// The client's address as the limits see it (IPv6 per /64), through
    /// `--trusted-proxies` only.
    fn client_ip(&self, request: &Request) -> std::net::IpAddr {
        let forwarded_for = request.header_values("x-forwarded-for");
        limit_address(self.proxies.client_ip(request.peer.ip(), forwarded_for))
    }

    fn within_client_limit(
        &self,
        request: &Request,
        key: ClientKey,
        by: &str,
        now: Instant,
    ) -> Result<(), Response> {
        self.clients.check(key, now).map_err(|wait| {
            metrics::global()
                .client_limited
                .with_label_values(&[by])
                .inc();
            self.refuse(
                Some(request),
                ApiError::RateLimited {
                    message: format!(
                        "too many requests from this {}; slow down (--client-rate-limit)",
                        if by == "ip" { "address" } else { "session" }
                    ),
                    retry_after: wait,
                },
            )
        })
    }

    fn authenticate(&self, request: &Request) -> Result<(SessionId, Arc<Bot>), ApiError> {
        let header = request
            .header("authorization")
            .ok_or(ApiError::Unauthorized(
                "missing Authorization header; send the session ID from /api/auth/login",
            ))?;
        let session = SessionId::parse(presented_session(header))
            .ok_or(ApiError::Unauthorized("invalid session ID; log in again"))?;
        let bot = self.store.get(&session)?.ok_or(ApiError::Unauthorized(
            "unknown or expired session; log in again",
        ))?;
        self.check_bot(session, bot)
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
    fn end_bot(&self, bot: &Arc<Bot>) {
        self.bots.remember_rejected(bot);
        let identity = bot.identity();
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

    fn login(&self, request: &Request, context: &mut Context) -> Result<Response, ApiError> {
        let ip = self.client_ip(request);
        let now = Instant::now();
        if let Err(wait) = self.logins.check(ip, now) {
            return Err(ApiError::RateLimited {
                message: "too many failed logins from this address; retry after the given time"
                    .into(),
                retry_after: wait,
            });
        }
        let body: serde_json::Value = serde_json::from_slice(&request.body).map_err(|_| {
            ApiError::bad_request("body must be JSON like {\"token\": \"<bot token>\"}")
        })?;
        let raw = match body.get("token") {
            None => return Err(ApiError::bad_request("`token` is required")),
            Some(serde_json::Value::String(raw)) => raw,
            Some(_) => return Err(ApiError::bad_request("`token` must be a string")),
        };
        let token = Token::parse(raw).map_err(ApiError::bad_request)?;
        if self.bots.was_rejected(&token) {
            // Asking Discord again would only add to the host's invalid count.
            self.logins.record_failure(ip, now);
            return Err(ApiError::TokenRejected);
        }
        if !self.bots.is_live(&token) && self.invalid.over_threshold(now) {
            return Err(ApiError::Unavailable(
                "this host is close to Discord's limit of 10,000 invalid requests per 10 minutes; \
                 logins with new tokens are paused, retry in a few minutes"
                    .into(),
            ));
        }
        let bot = self.bots.get_or_create(token);
        let call = Call {
            discord: &self.discord,
            bot: &bot,
            deadline: context.started + self.max_wait,
        };
        let me = call.get(Route::CurrentUser).inspect_err(|e| {
            if *e == ApiError::TokenRejected {
                self.logins.record_failure(ip, now);
                self.end_bot(&bot);
            }
        })?;
        let identity: DiscordUser = serde_json::from_slice(&me).map_err(|_| {
            ApiError::BadGateway("Discord's /users/@me answer has no user id".into())
        })?;
        let identity = Identity {
            id: identity.id,
            username: identity.username,
        };
        bot.set_identity(identity.clone());
        let session = self.store.create(Arc::clone(&bot))?;
        context.session_prefix = Some(session.prefix().to_string());
        log::info!(
            "session {} created for bot {} ({})",
            session.prefix(),
            identity.id,
            identity.username
        );
        Ok(json_response(
            200,
            &serde_json::json!({
                "sessionId": session.as_str(),
                "message": "Logged in successfully",
                "bot": {"id": identity.id, "username": identity.username},
            }),
        ))
    }

    fn logout(&self, session: &SessionId) -> Result<Response, ApiError> {
        let bot = self.store.remove(session)?.ok_or(ApiError::Unauthorized(
            "unknown or expired session; log in again",
        ))?;
        let identity = bot.identity();
        log::info!(
            "session {} logged out for bot {} ({})",
            session.prefix(),
            identity.id,
            identity.username
        );
        Ok(json_response(
            200,
            &serde_json::json!({"message": "Logged out successfully"}),
        ))
    }
}

fn guilds(call: &Call) -> Result<Response, ApiError> {
    let mut pages = Vec::new();
    let mut after = None;
    for _ in 0..MAX_GUILD_PAGES {
        let page = call.get(Route::CurrentUserGuilds {
            after,
            limit: GUILDS_PAGE,
        })?;
        let items = parse_page(&page, |item| item_id(item, "id"))?;
        let full = items.len() == usize::from(GUILDS_PAGE);
        after = items.iter().map(|(id, _)| *id).max();
        drop(items);
        pages.push(page);
        if !full {
            break;
        }
    }
    if pages.len() == 1 {
        return Ok(Response::json(200, pages.pop().unwrap_or_default()));
    }
    let mut items = Vec::new();
    for page in &pages {
        items.extend(parse_page(page, |item| item_id(item, "id"))?);
    }
    Ok(Response::json(200, join(items.iter().map(|(_, raw)| *raw))))
}

/// The guild a request is about: `guildId`, or the bot's only guild.
fn guild(call: &Call, query: &Query) -> Result<Snowflake, ApiError> {
    if let Some(guild) = query.snowflake("guildId")? {
        return Ok(guild);
    }
    let page = call.get(Route::CurrentUserGuilds {
        after: None,
        limit: GUILDS_PAGE,
    })?;
    let guilds = parse_page(&page, |item| item_id(item, "id"))?;
    match guilds.as_slice() {
        [] => Err(ApiError::not_found("the bot is in no guild")),
        [(only, _)] => Ok(*only),
        several => Err(ApiError::bad_request(format!(
            "`guildId` is required: the bot is in {}{} guilds",
            several.len(),
            if several.len() == usize::from(GUILDS_PAGE) {
                " or more"
            } else {
                ""
            }
        ))),
    }
}

fn channels(call: &Call, query: &Query) -> Result<Response, ApiError> {
    let guild = guild(call, query)?;
    let body = call.get(Route::GuildChannels { guild })?;
    Ok(Response::json(200, body))
}

fn members(call: &Call, query: &Query) -> Result<Response, ApiError> {
    let limit = query.integer("limit", 1..=MEMBERS_LIMIT_MAX, MEMBERS_LIMIT_DEFAULT)?;
    let mut after = query.snowflake("after")?;
    let guild = guild(call, query)?;
    let fetch = |after, limit| {
        call.get(Route::GuildMembers {
            guild,
            after,
            limit,
        })
        .map_err(members_hint)
    };
    if limit <= MEMBERS_PAGE {
        return Ok(Response::json(200, fetch(after, limit)?));
    }
    let mut pages = Vec::new();
    let mut left = limit;
    while left > 0 {
        let want = left.min(MEMBERS_PAGE);
        let page = fetch(after, want)?;
        let items = parse_page(&page, member_id)?;
        let got = items.len();
        after = items.iter().map(|(id, _)| *id).max().or(after);
        drop(items);
        pages.push(page);
        if got < usize::from(want) {
            break;
        }
        left -= want;
    }
    let mut items = Vec::new();
    for page in &pages {
        items.extend(parse_page(page, member_id)?);
    }
    // Discord pages ascend by user id; keep that, and never repeat one.
    items.sort_by_key(|(id, _)| *id);
    items.dedup_by_key(|(id, _)| *id);
    Ok(Response::json(200, join(items.iter().map(|(_, raw)| *raw))))
}

fn messages(call: &Call, query: &Query) -> Result<Response, ApiError> {
    let channel = query.required_snowflake("channelId")?;
    let limit = query.integer("limit", 1..=MESSAGES_LIMIT_MAX, MESSAGES_LIMIT_DEFAULT)?;
    let cursors = [
        query.snowflake("before")?.map(Cursor::Before),
        query.snowflake("after")?.map(Cursor::After),
        query.snowflake("around")?.map(Cursor::Around),
    ];
    let mut given = cursors.into_iter().flatten();
    let cursor = given.next();
    if given.next().is_some() {
        return Err(ApiError::bad_request(
            "give at most one of `before`, `after` and `around`",
        ));
    }
    if matches!(cursor, Some(Cursor::Around(_))) && limit > MESSAGES_PAGE {
        return Err(ApiError::bad_request(
            "`around` works only with `limit` up to 100",
        ));
    }
    let fetch = |cursor, limit| {
        call.get(Route::ChannelMessages {
            channel,
            cursor,
            limit,
        })
    };
    if limit <= MESSAGES_PAGE {
        return Ok(Response::json(200, fetch(cursor, limit)?));
    }
    // Page away from the cursor: back in time from `before` (or now),
    // forward in time from `after`.
    let forward = matches!(cursor, Some(Cursor::After(_)));
    let mut cursor = cursor;
    let mut pages = Vec::new();
    let mut left = limit;
    while left > 0 {
        let want = left.min(MESSAGES_PAGE);
        let page = fetch(cursor, want)?;
        let items = parse_page(&page, |item| item_id(item, "id"))?;
        let got = items.len();
        let ids = items.iter().map(|(id, _)| *id);
        let next = if forward { ids.max() } else { ids.min() };
        drop(items);
        pages.push(page);
        match next {
            Some(id) if got == usize::from(want) => {
                cursor = Some(if forward {
                    Cursor::After(id)
                } else {
                    Cursor::Before(id)
                });
            }
            _ => break,
        }
        left -= want;
    }
    let mut items = Vec::new();
    for page in &pages {
        items.extend(parse_page(page, |item| item_id(item, "id"))?);
    }
    // Newest first, as Discord orders a page; ids are time-ordered.
    items.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    items.dedup_by_key(|(id, _)| *id);
    Ok(Response::json(200, join(items.iter().map(|(_, raw)| *raw))))
}

/// The session ID in an `Authorization` value: bare, or after `Bearer `.
fn presented_session(header: &str) -> &str {
    let header = header.trim();
    match header.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => header,
    }
}

/// On the members route a 403 is usually the Server Members intent: say so.
fn members_hint(error: ApiError) -> ApiError {
    match error {
        ApiError::Forbidden { message, code } => ApiError::Forbidden {
            message: format!(
                "{message}. Listing members needs the Server Members privileged intent: enable it \
                 for this bot in the Discord Developer Portal (Bot > Privileged Gateway Intents)"
            ),
            code,
        },
        other => other,
    }
}

#[derive(serde::Deserialize)]
struct DiscordUser {
    id: String,
    username: String,
}

/// A page of Discord objects, each kept as its exact bytes, with its id.
fn parse_page(
    page: &[u8],
    id_of: impl Fn(&RawValue) -> Option<Snowflake>,
) -> Result<Vec<(Snowflake, &RawValue)>, ApiError> {
    let items: Vec<&RawValue> = serde_json::from_slice(page).map_err(|_| {
        ApiError::BadGateway("Discord answered with something other than a list".into())
    })?;
    items
        .into_iter()
        .map(|raw| {
            id_of(raw).map(|id| (id, raw)).ok_or_else(|| {
                ApiError::BadGateway("Discord sent an object without a valid id".into())
            })
        })
        .collect()
}

fn item_id(item: &RawValue, field: &str) -> Option<Snowflake> {
    let value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(item.get()).ok()?;
    Snowflake::parse(value.get(field)?.as_str()?)
}

fn member_id(item: &RawValue) -> Option<Snowflake> {
    #[derive(serde::Deserialize)]
    struct Member {
        user: DiscordUser,
    }
    let member: Member = serde_json::from_str(item.get()).ok()?;
    Snowflake::parse(&member.user.id)
}

/// `[a,b,c]` from the exact bytes of each object.
fn join<'a>(items: impl Iterator<Item = &'a RawValue>) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(b'[');
    for (n, item) in items.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.get().as_bytes());
    }
    out.push(b']');
    out
}

fn json_response(status: u16, value: &serde_json::Value) -> Response {
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
    fn unknown_path_is_404_and_wrong_method_is_405_with_allow() {
        assert!(matches!(
            resolve("GET", "/api/nope"),
            Err(ApiError::NotFound { .. })
        ));
        assert_eq!(
            resolve("GET", "/api/auth/login"),
            Err(ApiError::MethodNotAllowed {
                allow: "POST, OPTIONS"
            })
        );
        assert_eq!(
            resolve("DELETE", "/api/guilds"),
            Err(ApiError::MethodNotAllowed {
                allow: "GET, OPTIONS"
            })
        );
        assert_eq!(resolve("GET", "/api/guilds"), Ok(Endpoint::Guilds));
    }

    #[test]
    fn join_keeps_objects_byte_for_byte() {
        let page = br#"[{"id":"2", "x" : 1},{"id":"1","y":[ ]}]"#;
        let items = parse_page(page, |i| item_id(i, "id")).unwrap();
        assert_eq!(
            join(items.iter().map(|(_, r)| *r)),
            br#"[{"id":"2", "x" : 1},{"id":"1","y":[ ]}]"#
        );
    }

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
