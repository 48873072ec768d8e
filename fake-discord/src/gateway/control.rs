//! The Gateway's control API under `/_fake/gateway/`: inject dispatches,
//! act on live connections, read statistics, reset.
//!
//! Why it exists: a client test must make Discord misbehave on cue (op 7,
//! op 9, close codes, zombie connections, a resume URL that is down) and
//! then assert what the client did (identifies, resumes, heartbeats, close
//! codes). README.md "Gateway control API" documents every shape; keep the
//! two in step.
//!
//! Invariant: like the rest of `/_fake/`, nothing here is logged or rate
//! limited, and reading stats changes nothing but expiring dead sessions.

use serde_json::{Value, json};

use super::hub::{Action, Event, Target};
use crate::app::App;
use crate::http::{Request, Response};
use crate::world::Bot;

/// Most dispatches one `POST /_fake/gateway/dispatch` may ask for.
const MAX_BURST: u64 = 1_000_000;

/// Handles `/_fake/gateway/{rest}`.
pub fn handle(app: &App, req: &Request, rest: &[&str]) -> Response {
    match (req.method.as_str(), rest) {
        ("POST", ["dispatch"]) => with_body(req, |b| dispatch(app, &b)),
        ("POST", ["command"]) => with_body(req, |b| command(app, &b)),
        ("GET", ["stats"]) => ok(app.gateway.stats(&app.world)),
        ("POST", ["reset"]) => {
            app.gateway.reset();
            ok(json!({ "ok": true }))
        }
        (_, ["dispatch"] | ["command"] | ["stats"] | ["reset"]) => {
            Response::json(405, &json!({ "error": "method not allowed" }))
        }
        _ => error(404, "unknown control route"),
    }
}

fn ok(body: Value) -> Response {
    Response::json(200, &body)
}

fn error(status: u16, message: &str) -> Response {
    Response::json(status, &json!({ "error": message }))
}

fn with_body(req: &Request, f: impl FnOnce(Value) -> Result<Value, (u16, String)>) -> Response {
    let body = match serde_json::from_slice::<Value>(&req.body) {
        Ok(b) if b.is_object() => b,
        _ => return error(400, "body must be a JSON object"),
    };
    match f(body) {
        Ok(v) => ok(v),
        Err((status, message)) => error(status, &message),
    }
}

fn bad(message: impl Into<String>) -> (u16, String) {
    (400, message.into())
}

/// A snowflake given as a string or a number.
fn snowflake(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// The bot named by `bot_id` or `token`; `Ok(None)` when neither is given.
fn bot<'a>(app: &'a App, body: &Value) -> Result<Option<&'a Bot>, (u16, String)> {
    if let Some(token) = body.get("token").filter(|t| !t.is_null()) {
        let token = token
            .as_str()
            .ok_or_else(|| bad("token must be a string"))?;
        return app
            .world
            .bot_by_token(token)
            .map(Some)
            .ok_or((404, "unknown token".into()));
    }
    match body.get("bot_id").filter(|b| !b.is_null()) {
        None => Ok(None),
        Some(v) => {
            let id = snowflake(v).ok_or_else(|| bad("bot_id must be a snowflake"))?;
            app.world
                .bots()
                .iter()
                .find(|b| b.id == id)
                .map(Some)
                .ok_or((404, "unknown bot_id".into()))
        }
    }
}

/// `POST /_fake/gateway/dispatch`.
fn dispatch(app: &App, body: &Value) -> Result<Value, (u16, String)> {
    let bot = bot(app, body)?.ok_or_else(|| bad("bot_id or token is required"))?;
    let t = body
        .get("t")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("t (a non-empty string) is required"))?;
    let d = body.get("d").cloned().unwrap_or_else(|| json!({}));
    let guild_id = match body.get("guild_id").filter(|g| !g.is_null()) {
        Some(g) => Some(snowflake(g).ok_or_else(|| bad("guild_id must be a snowflake"))?),
        None => d.get("guild_id").and_then(snowflake),
    };
    let count = match body.get("count") {
        None | Some(Value::Null) => 1,
        Some(c) => c
            .as_u64()
            .filter(|c| (1..=MAX_BURST).contains(c))
            .ok_or_else(|| bad(format!("count must be an integer from 1 to {MAX_BURST}")))?,
    };
    let event = Event {
        t: t.to_string(),
        d,
        guild_id,
        bots: vec![bot.id],
    };
    let mut dispatched = 0;
    for _ in 0..count {
        dispatched += app.gateway.deliver(&event);
    }
    Ok(json!({ "dispatched": dispatched, "count": count }))
}

/// `POST /_fake/gateway/command`.
fn command(app: &App, body: &Value) -> Result<Value, (u16, String)> {
    let action = body
        .get("action")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("action (a string) is required"))?;
    let target = Target {
        bot: bot(app, body)?.map(|b| b.id),
        shard: match body.get("shard").filter(|s| !s.is_null()) {
            Some(s) => Some(
                s.as_u64()
                    .and_then(|s| u32::try_from(s).ok())
                    .ok_or_else(|| bad("shard must be a shard id"))?,
            ),
            None => None,
        },
        session_id: match body.get("session_id").filter(|s| !s.is_null()) {
            Some(s) => Some(
                s.as_str()
                    .ok_or_else(|| bad("session_id must be a string"))?
                    .to_string(),
            ),
            None => None,
        },
    };
    let flag = |key: &str, default: bool| match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(format!("{key} must be a boolean"))),
    };
    let act = match action {
        "reconnect" => Action::Reconnect,
        "invalid_session" => Action::InvalidSession {
            resumable: flag("resumable", false)?,
        },
        "close" => {
            let code = body
                .get("code")
                .and_then(Value::as_u64)
                .filter(|c| (1000..=4999).contains(c) && !matches!(c, 1004..=1006 | 1015))
                .ok_or_else(|| bad("code must be a close code from 1000 to 4999"))?;
            let reason = body
                .get("reason")
                .and_then(Value::as_str)
                .map_or_else(|| default_reason(code as u16).to_string(), str::to_string);
            Action::Close {
                code: code as u16,
                reason,
            }
        }
        "zombie" => Action::Zombie(flag("on", true)?),
        "request_heartbeat" => Action::RequestHeartbeat,
        "drop" => Action::Drop,
        "reconnect_before_hello" => {
            let count = body
                .get("count")
                .map_or(Some(1), Value::as_u64)
                .and_then(|c| u32::try_from(c).ok())
                .ok_or_else(|| bad("count must be a non-negative integer"))?;
            app.gateway.arm_reconnect_before_hello(count);
            return Ok(json!({ "armed": count }));
        }
        "expire_sessions" => {
            return Ok(json!({ "sessions": app.gateway.expire_sessions(&target) }));
        }
        "resume_url" => {
            let up = flag("up", true)?;
            app.gateway.set_resume_down(!up);
            return Ok(json!({ "resume_url_up": up }));
        }
        other => return Err(bad(format!("unknown action {other:?}"))),
    };
    Ok(json!({ "connections": app.gateway.command(&target, &act) }))
}

/// The description of a close code (opcodes-and-status-codes.mdx L36-51).
pub fn default_reason(code: u16) -> &'static str {
    match code {
        4000 => "Unknown error",
        4001 => "Unknown opcode",
        4002 => "Decode error",
        4003 => "Not authenticated",
        4004 => "Authentication failed",
        4005 => "Already authenticated",
        4007 => "Invalid seq",
        4008 => "Rate limited",
        4009 => "Session timed out",
        4010 => "Invalid shard",
        4011 => "Sharding required",
        4012 => "Invalid API version",
        4013 => "Invalid intent(s)",
        4014 => "Disallowed intent(s)",
        _ => "",
    }
}
