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
        ("POST", ["reset"]) => {
            app.reset();
            ok(json!({ "ok": true }))
        }
        ("GET", ["world"]) => ok(world_json(app)),
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
    json!({ "bots": bots, "guilds": guilds })
}
