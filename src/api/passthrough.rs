//! passthrough: `/api/discord/v10/<path>`, Discord's REST API with the
//! session in place of the token (API.md, "Discord passthrough"), so a
//! Discord library pointed at this service works unchanged.
//!
//! Architecture invariants:
//! - the path is matched as sent, before any decoding, against the table
//!   generated from Discord's spec (`discord::catalog`), and the URL Discord
//!   gets is rebuilt from the validated parts: nothing of the client's path,
//!   query or headers is copied, except a JSON body and
//!   `X-Audit-Log-Reason`;
//! - writes go through the same limiter, idempotency and re-send rules as
//!   the routes of Writing (`writes`);
//! - Discord's answers come back unchanged with its `X-RateLimit-*`
//!   headers; the service's own errors carry Discord's shape too.

use std::borrow::Cow;

use serde_json::Value;

use crate::api::error::ApiError;
use crate::api::idempotency::{key_of, mint_key};
use crate::api::writes::{JSON, Writer, is_json, passthrough_audit_reason};
use crate::discord::catalog::{self, BodyKind, Found, Group, Method, Refused, Value as Param};
use crate::discord::route::WriteRoute;
use crate::discord::{Body, Outgoing, Reply, Resend, Snowflake};
use crate::http::server::{Request, Response};

/// Where the passthrough lives; the version is pinned.
pub(super) const PREFIX: &str = "/api/discord/";
const VERSIONED: &str = "/api/discord/v10";
const NOT_ALLOWED: &str = "not an allowed Discord route";

/// `--discord-routes`: the route groups the passthrough serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteGroups(u8);

impl RouteGroups {
    /// `none`, or a comma-separated list of `read`, `messaging`,
    /// `moderation`, `admin`.
    pub fn parse(text: &str) -> Result<RouteGroups, String> {
        if text.trim() == "none" {
            return Ok(RouteGroups(0));
        }
        let mut bits = 0;
        for name in text.split(',').map(str::trim) {
            let group = Group::parse(name).ok_or_else(|| {
                format!("unknown route group `{name}`: expected read, messaging, moderation, admin or none")
            })?;
            bits |= 1 << group as u8;
        }
        Ok(RouteGroups(bits))
    }

    fn serves(self, group: Group) -> bool {
        group != Group::Never && self.0 & (1 << group as u8) != 0
    }
}

/// The operations whose body is a message: the rules of Writing apply to
/// it (default `allowed_mentions`, uploads, the nonce of a send). A thread
/// started with a message (a forum post) carries it in `message`.
const CREATE_MESSAGE: &str = "create_message";
const CREATE_THREAD: &str = "create_thread";
fn is_message(operation_id: &str) -> bool {
    matches!(
        operation_id,
        CREATE_MESSAGE | "update_message" | CREATE_THREAD
    )
}

/// Whether a request may bring an upload: a message operation of the
/// passthrough (its group is checked when it is routed).
pub(super) fn takes_upload(request: &Request) -> bool {
    request
        .path()
        .strip_prefix(VERSIONED)
        .and_then(|rest| catalog::find(request.method(), rest).ok())
        .is_some_and(|found| is_message(found.op.operation_id))
}

/// Routing, before the session is checked: the operation, or 400 (a path
/// that cannot be a Discord path), 404 (no allowed operation) or 403 (its
/// group is turned off).
pub(super) fn route<'a>(
    method: &str,
    path: &'a str,
    groups: RouteGroups,
) -> Result<Found<'a>, ApiError> {
    let rest = path
        .strip_prefix(VERSIONED)
        .filter(|rest| rest.starts_with('/'))
        .ok_or_else(|| ApiError::not_found(NOT_ALLOWED))?;
    let found = match catalog::find(method, rest) {
        Ok(found) => found,
        Err(Refused::Malformed(why)) => {
            return Err(ApiError::bad_request(format!("not a Discord path: {why}")));
        }
        Err(Refused::NotFound | Refused::MethodNotAllowed { .. }) => {
            return Err(ApiError::not_found(NOT_ALLOWED));
        }
    };
    let group = found.op.group;
    if group == Group::Never {
        return Err(ApiError::not_found(NOT_ALLOWED));
    }
    if !groups.serves(group) {
        return Err(ApiError::Forbidden {
            message: format!(
                "the `{}` route group is turned off on this service (--discord-routes)",
                group.name()
            ),
            code: None,
            cached: false,
        });
    }
    Ok(found)
}

impl Writer<'_> {
    /// Sends the operation to Discord and hands its answer back unchanged.
    pub(super) fn passthrough(&self, found: &Found<'_>) -> Result<Response, ApiError> {
        let op = found.op;
        let query = catalog::query(op, self.request.query())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut path = found.discord_path();
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query);
        }
        let is_send = op.operation_id == CREATE_MESSAGE;
        // A message (JSON or an upload) gets the rules of Writing; any other
        // body is JSON, passed as sent once it parses.
        let message = if is_message(op.operation_id) {
            Some(self.message_body(true, op.operation_id == CREATE_THREAD)?)
        } else {
            None
        };
        let body = match message {
            None => self.passthrough_body(op.body)?,
            Some(_) => None,
        };
        let key = match (op.method, key_of(self.request)?) {
            (Method::Post | Method::Patch, Some(key)) => Some(key),
            (Method::Post, None) if is_send => Some(mint_key()),
            _ => None,
        };
        // A library's own nonce is kept as sent (API.md); without one, the
        // service's makes the send safe to repeat.
        let fields = message.as_ref().map(|m| m.fields());
        let client_nonce = fields.is_some_and(|f| f.contains_key("nonce"));
        let resendable = is_send
            && (!client_nonce
                || fields.and_then(|f| f.get("enforce_nonce")) == Some(&Value::Bool(true)));
        let resend = match op.method {
            Method::Get => Resend::Read,
            Method::Put | Method::Delete => Resend::Idempotent,
            _ if resendable => Resend::Idempotent,
            _ => Resend::NotSentOnly,
        };
        let target = found.top_level_id().unwrap_or(0);
        let result = self.once(key.as_deref(), target, resendable, |nonce| {
            let encoded = message.as_ref().map(|message| {
                if is_send && !client_nonce {
                    message.encode(&[("nonce", nonce.into()), ("enforce_nonce", true.into())])
                } else {
                    message.encode(&[])
                }
            });
            let body = match &encoded {
                Some(encoded) => Some(encoded.body()),
                None => body.map(|bytes| Body {
                    content_type: JSON,
                    bytes,
                }),
            };
            let reason = passthrough_audit_reason(self.request)?;
            let outgoing = Outgoing {
                method: op.method.as_str(),
                path,
                key: rate_limit_key(found),
                body,
                audit_reason: reason.as_deref(),
                resend,
                keep_headers: true,
            };
            let reply = self
                .call
                .discord
                .call(self.call.bot, &outgoing, self.call.deadline)?;
            Ok(answer(reply))
        });
        match (&key, is_send) {
            // Every answer of a send names its key, errors too: it is what
            // makes retrying an unknown outcome safe.
            (Some(key), true) => {
                let mut response = result.unwrap_or_else(|error| discord_shaped(&error));
                response.header("Idempotency-Key", key.clone());
                Ok(response)
            }
            _ => result,
        }
    }

    /// The request body, as the operation takes it: none, or JSON.
    fn passthrough_body(&self, kind: BodyKind) -> Result<Option<&[u8]>, ApiError> {
        let body = &self.request.body[..];
        if body.is_empty() {
            return Ok(None);
        }
        if kind == BodyKind::None {
            return Err(ApiError::bad_request("this Discord route takes no body"));
        }
        if !is_json(self.request) {
            return Err(ApiError::UnsupportedMediaType(
                "send the body as `Content-Type: application/json`",
            ));
        }
        serde_json::from_slice::<serde::de::IgnoredAny>(body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
        Ok(Some(body))
    }
}

/// The operation's rate-limit identity, with Discord's two known quirks
/// (`WriteRoute::key`): reactions share a bucket per channel, and message
/// deletes are bucketed by the message's age.
fn rate_limit_key(found: &Found<'_>) -> crate::discord::ratelimit::RouteKey {
    let snowflake = |name| match found.param(name) {
        Some(Param::Snowflake(id)) => Some(*id),
        _ => None,
    };
    let (Some(channel), Some(message)) = (snowflake("channel_id"), snowflake("message_id")) else {
        return found.route_key();
    };
    match found.op.operation_id {
        "delete_message" => WriteRoute::DeleteMessage { channel, message }.key(),
        id if id.contains("reaction") && found.op.method != Method::Get => WriteRoute::Reaction {
            channel,
            message,
            emoji: "",
            user: None::<Snowflake>,
            add: true,
        }
        .key(),
        _ => found.route_key(),
    }
}

/// Discord's answer as the client gets it: status, body and rate-limit
/// headers unchanged.
fn answer(reply: Reply) -> Response {
    let mut response = if reply.body.is_empty() {
        Response::empty(reply.status)
    } else {
        Response::json(reply.status, reply.body)
    };
    for (name, value) in reply.headers {
        if let Some(name) = RATE_LIMIT_HEADERS
            .iter()
            .find(|known| known.eq_ignore_ascii_case(&name))
        {
            response.header(name, value);
        }
    }
    response
}

/// The answer headers handed on (`Response` names are static).
const RATE_LIMIT_HEADERS: &[&str] = &[
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Reset-After",
    "X-RateLimit-Bucket",
    "X-RateLimit-Scope",
    "X-RateLimit-Global",
    "Retry-After",
];

/// A passthrough target as logs may show it: a webhook's or an
/// interaction's token (`/webhooks/{id}/{token}`, `/interactions/{id}/{token}`)
/// is a secret of Discord's, and libraries send such paths here although
/// they are never served.
pub(super) fn without_tokens(target: &str) -> Cow<'_, str> {
    if !target.starts_with(PREFIX)
        || !(target.contains("/webhooks/") || target.contains("/interactions/"))
    {
        return Cow::Borrowed(target);
    }
    let (path, query) = target
        .split_once('?')
        .map_or((target, None), |(p, q)| (p, Some(q)));
    let segments: Vec<&str> = path.split('/').collect();
    let mut out = String::with_capacity(target.len());
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        let token = i >= 2 && matches!(segments[i - 2], "webhooks" | "interactions");
        out.push_str(if token { "<token>" } else { segment });
    }
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Cow::Owned(out)
}

/// An error of the service's own, in Discord's shape as well as ours
/// (`error`, `message`, `code`), so a Discord library reports it; a 429
/// also gets `retry_after` and `global`, which libraries wait on.
pub(super) fn discord_shaped(error: &ApiError) -> Response {
    let mut response = error.to_response();
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&response.body) else {
        return response;
    };
    let text = body.get("error").cloned().unwrap_or_default();
    body.insert("message".into(), text);
    body.entry("code").or_insert(0.into());
    if let ApiError::RateLimited { retry_after, .. } = error {
        body.insert("retry_after".into(), retry_after.as_secs_f64().into());
        body.insert("global".into(), false.into());
    }
    response.body = serde_json::to_vec(&body).expect("a JSON map always serializes");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_groups_parse_lists_and_none() {
        let groups = RouteGroups::parse("read, messaging").unwrap();
        assert!(groups.serves(Group::Read) && groups.serves(Group::Messaging));
        assert!(!groups.serves(Group::Admin) && !groups.serves(Group::Never));
        assert!(!RouteGroups::parse("none").unwrap().serves(Group::Read));
        assert!(RouteGroups::parse("read,never").is_err());
        assert!(RouteGroups::parse("everything").is_err());
    }

    #[test]
    fn routing_refuses_what_is_no_allowed_operation() {
        let groups = RouteGroups::parse("read,messaging").unwrap();
        let status = |method, path| match route(method, path, groups) {
            Ok(_) => 200,
            Err(e) => e.status(),
        };
        assert_eq!(status("GET", "/api/discord/v10/channels/1/messages"), 200);
        assert_eq!(status("GET", "/api/discord/v9/channels/1/messages"), 404);
        assert_eq!(status("PATCH", "/api/discord/v10/applications/@me"), 404);
        assert_eq!(status("GET", "/api/discord/v10/channels/1/../2"), 400);
        assert_eq!(status("PUT", "/api/discord/v10/guilds/1/bans/2"), 403);
        assert_eq!(status("GET", "/api/discord/v10/nope"), 404);
    }

    #[test]
    fn webhook_and_interaction_tokens_never_reach_a_log_line() {
        assert_eq!(
            without_tokens("/api/discord/v10/webhooks/1/s3cr3t/messages/2?wait=true"),
            "/api/discord/v10/webhooks/1/<token>/messages/2?wait=true"
        );
        assert_eq!(
            without_tokens("/api/discord/v10/interactions/1/aW50/callback"),
            "/api/discord/v10/interactions/1/<token>/callback"
        );
        assert!(matches!(
            without_tokens("/api/discord/v10/channels/1/webhooks"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            without_tokens("/api/discord/v10/channels/1/webhooks"),
            "/api/discord/v10/channels/1/webhooks"
        );
    }

    #[test]
    fn service_errors_carry_discords_shape() {
        let limited = ApiError::RateLimited {
            message: "slow down".into(),
            retry_after: std::time::Duration::from_millis(1500),
        };
        let body: Value = serde_json::from_slice(&discord_shaped(&limited).body).unwrap();
        assert_eq!(body["message"], "slow down");
        assert_eq!(body["error"], "slow down");
        assert_eq!(body["retry_after"], 1.5);
        assert_eq!(body["global"], false);
        assert_eq!(body["code"], 0);
    }
}
