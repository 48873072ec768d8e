//! The control API under `/_fake/`: fault injection, token revocation,
//! observation and ground truth for tests.
//!
//! Why it exists: an end-to-end test must arrange Discord's misbehaviour and
//! then check what the service sent, without knowing how the fake generates
//! its ids. README.md documents every route; keep the two in step.
//!
//! Invariant: control requests are never logged, never rate limited and never
//! consume faults, so observing the fake does not change what it observes.

use std::sync::PoisonError;

use serde_json::{Value, json};

use crate::app::App;
use crate::faults::Fault;
use crate::http::{Request, Response};

/// Dispatches a control request; `rest` is the path after `/_fake`.
pub fn handle(app: &App, req: &Request, rest: &str) -> Response {
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let method = req.method.as_str();
    match (method, segments.as_slice()) {
        ("POST", ["faults"]) => add_fault(app, req),
        ("GET", ["faults"]) => ok(Value::Array(
            app.faults.pending().iter().map(Fault::to_json).collect(),
        )),
        ("POST", ["revoke"]) => revoke(app, req),
        ("GET", ["requests"]) => match since(req) {
            Ok(since) => ok(app.recorder.requests_json(since)),
            Err(e) => bad_request(&e),
        },
        ("GET", ["stats"]) => ok(stats(app)),
        (_, ["gateway", rest @ ..]) => crate::gateway::control::handle(app, req, rest),
        ("POST", ["reset"]) => {
            app.reset();
            ok(json!({ "ok": true }))
        }
        ("GET", ["world"]) => ok(world_json(app)),
        ("GET", ["messages"]) => match query_id(req, "channel_id") {
            Ok(channel) => ok(created_messages(app, channel)),
            Err(e) => bad_request(&e),
        },
        ("GET", ["reactions"]) => {
            match query_id(req, "channel_id").and_then(|c| Ok((c, query_id(req, "message_id")?))) {
                Ok((channel, message)) => ok(reactions(app, channel, message)),
                Err(e) => bad_request(&e),
            }
        }
        ("GET", ["channels", id, "message_ids"]) => {
            match id.parse().ok().and_then(|id| app.world.channel(id)) {
                Some((_, c)) => ok(id_strings(&c.message_ids)),
                None => not_found("unknown channel"),
            }
        }
        ("GET", ["guilds", id, "member_ids"]) => {
            match id.parse().ok().and_then(|id| app.world.guild(id)) {
                Some(g) => ok(id_strings(&g.member_ids)),
                None => not_found("unknown guild"),
            }
        }
        (
            _,
            ["faults"]
            | ["revoke"]
            | ["requests"]
            | ["stats"]
            | ["reset"]
            | ["world"]
            | ["messages"]
            | ["reactions"]
            | ["channels", _, "message_ids"]
            | ["guilds", _, "member_ids"],
        ) => Response::json(405, &json!({ "error": "method not allowed" })),
        _ => not_found("unknown control route"),
    }
}

fn ok(body: Value) -> Response {
    Response::json(200, &body)
}

fn bad_request(message: &str) -> Response {
    Response::json(400, &json!({ "error": message }))
}

fn not_found(message: &str) -> Response {
    Response::json(404, &json!({ "error": message }))
}

fn json_body(req: &Request) -> Result<Value, String> {
    serde_json::from_slice(&req.body).map_err(|e| format!("body must be a JSON object: {e}"))
}

/// `POST /_fake/faults`.
fn add_fault(app: &App, req: &Request) -> Response {
    match json_body(req).and_then(|body| Fault::from_json(&body)) {
        Ok(fault) => {
            let echo = fault.to_json();
            app.faults.push(fault);
            ok(json!({ "queued": echo }))
        }
        Err(e) => bad_request(&e),
    }
}

/// `POST /_fake/revoke`.
fn revoke(app: &App, req: &Request) -> Response {
    let body = match json_body(req) {
        Ok(b) => b,
        Err(e) => return bad_request(&e),
    };
    let Some(token) = body.get("token").and_then(Value::as_str) else {
        return bad_request("\"token\" (string) is required");
    };
    let Some(bot) = app.world.bot_by_token(token) else {
        return not_found("unknown token");
    };
    app.revoked
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(token.to_string());
    ok(json!({ "revoked": true, "bot_id": bot.id.to_string() }))
}

/// The `since` query parameter of `GET /_fake/requests` (default 0).
fn since(req: &Request) -> Result<u64, String> {
    for pair in req.query().split('&') {
        if let Some(v) = pair.strip_prefix("since=") {
            return v
                .parse()
                .map_err(|_| "since must be a non-negative integer".to_string());
        }
    }
    Ok(0)
}

/// A required snowflake query parameter.
fn query_id(req: &Request, name: &str) -> Result<u64, String> {
    req.query()
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .ok_or_else(|| format!("{name} is required"))?
        .parse()
        .map_err(|_| format!("{name} must be a snowflake"))
}

/// `GET /_fake/messages?channel_id=`: messages created through the API in
/// the channel and not deleted, oldest first, each with the
/// `allowed_mentions` and `enforce_nonce` it was sent with.
fn created_messages(app: &App, channel: u64) -> Value {
    let inner = app.store.lock();
    Value::Array(
        inner
            .live_in(channel)
            .map(|(_, stored)| {
                let mut m = stored.message.clone();
                m["allowed_mentions"] = stored.allowed_mentions.clone();
                m["enforce_nonce"] = json!(stored.enforce_nonce);
                m
            })
            .collect(),
    )
}

/// `GET /_fake/reactions?channel_id=&message_id=`: emoji → user ids. The
/// channel is checked for API-created messages; generated messages are not
/// tied to a channel here (their ids are unique across the world).
fn reactions(app: &App, channel: u64, message: u64) -> Value {
    let inner = app.store.lock();
    let foreign = inner
        .messages
        .get(&message)
        .is_some_and(|m| m.channel_id != channel);
    let mut out = serde_json::Map::new();
    if !foreign && let Some(by_emoji) = inner.reactions.get(&message) {
        for (emoji, users) in by_emoji {
            out.insert(
                emoji.clone(),
                id_strings(&users.iter().copied().collect::<Vec<_>>()),
            );
        }
    }
    Value::Object(out)
}

/// `GET /_fake/stats`: the request log's counts and the edge's.
fn stats(app: &App) -> Value {
    let mut stats = app.recorder.stats_json();
    let (in_window, counted, bans) = app.edge.stats(std::time::Instant::now());
    stats["invalid_requests"] = json!({
        "in_window": in_window,
        "counted": counted,
        "bans": bans,
    });
    stats
}

fn id_strings(ids: &[u64]) -> Value {
    Value::Array(ids.iter().map(|id| json!(id.to_string())).collect())
}

/// `GET /_fake/world`: a summary of bots, guilds and channels.
fn world_json(app: &App) -> Value {
    let bots: Vec<Value> = app
        .world
        .bots()
        .iter()
        .map(|b| {
            json!({
                "token": b.token,
                "id": b.id.to_string(),
                "username": b.username,
                "members_intent": b.members_intent,
                "privileged_intents": crate::gateway::intents::privileged_names(b.privileged_intents),
                "shards": crate::gateway::rest::recommended_shards(
                    b,
                    app.gateway.options.guilds_per_shard,
                ),
                "guilds": id_strings(&b.guilds),
            })
        })
        .collect();
    let guilds: Vec<Value> = app
        .world
        .guilds()
        .iter()
        .map(|g| {
            let channels: Vec<Value> = g
                .channels
                .iter()
                .map(|c| {
                    json!({
                        "id": c.id.to_string(),
                        "name": c.name,
                        "type": c.kind,
                        "message_count": c.message_ids.len(),
                        "access": c.access.as_str(),
                    })
                })
                .collect();
            json!({
                "id": g.id.to_string(),
                "name": g.name,
                "member_count": g.member_ids.len(),
                "channels": channels,
            })
        })
        .collect();
    json!({
        "bots": bots,
        "guilds": guilds,
        "dm_closed_users": id_strings(&app.world.dm_closed_users()),
    })
}
