//! What the Gateway checks in what clients send: the connection's query
//! string, the payload envelope, IDENTIFY and RESUME.
//!
//! Why it exists: each refusal has its own close code, and clients decide
//! from the code whether to reconnect, so the code must be Discord's.
//! Sources (discord-api-docs @ c98d64bc):
//! - `topics/opcodes-and-status-codes.mdx` L36-51, the close codes: 4001
//!   unknown opcode or "an invalid payload for an opcode", 4002 decode
//!   error, 4003 not authenticated, 4004 authentication failed, 4005
//!   already authenticated, 4010 invalid shard, 4011 sharding required,
//!   4012 invalid API version, 4013 invalid intents, 4014 disallowed
//!   intents;
//! - `events/gateway.mdx`: the query (`v`, `encoding` json|etf, `compress`
//!   zlib-stream|zstd-stream, L110-121), payloads over 4096 bytes close
//!   4002 (L52), intents (L281-302), 2500 guilds per shard (L612);
//! - `events/gateway-events.mdx` "Identify" (L71-133) and "Resume"
//!   (L135-162) for the fields.
//!
//! The order of the IDENTIFY checks is the one `shared/GATEWAY-NOTES.md`
//! §5.1 item 4 proposes (Discord documents the codes, not their order):
//! token, intents, privileged intents, shard, sharding required; the
//! concurrency bucket and the session budget come after (`hub.rs`).

use serde_json::Value;

use super::hub::shard_of;
use super::intents;
use crate::world::{Bot, World};

/// gateway.mdx L52: "Must not exceed 4096 bytes".
pub const MAX_PAYLOAD: usize = 4096;

/// A close the client earned: code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: String,
}

fn refuse(code: u16, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

/// The connection's query: whether zlib-stream was asked for.
///
/// `v` must be 10 (the version this fake serves; anything else, or none,
/// closes 4012). `encoding` must be `json` or absent (Discord's default);
/// `etf` is valid on Discord but not served here, so it closes 4002 like
/// any other value the fake cannot encode. `compress` must be absent or
/// `zlib-stream`; `zstd-stream` is not served (4002 as well).
pub fn query(raw: &str) -> Result<bool, Refusal> {
    let mut v = None;
    let mut encoding = None;
    let mut compress = None;
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match k {
            "v" => &mut v,
            "encoding" => &mut encoding,
            "compress" => &mut compress,
            _ => continue,
        };
        slot.get_or_insert(val.to_string());
    }
    if v.as_deref() != Some("10") {
        return Err(refuse(4012, "Invalid API version"));
    }
    match encoding.as_deref() {
        None | Some("json") => {}
        Some(other) => return Err(refuse(4002, format!("Unsupported encoding {other:?}"))),
    }
    match compress.as_deref() {
        None => Ok(false),
        Some("zlib-stream") => Ok(true),
        Some(other) => Err(refuse(4002, format!("Unsupported compression {other:?}"))),
    }
}

/// A parsed payload envelope: `op` and `d`.
pub fn envelope(bytes: &[u8]) -> Result<(u64, Value), Refusal> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(refuse(4002, "Payload too large"));
    }
    let v: Value =
        serde_json::from_slice(bytes).map_err(|_| refuse(4002, "Error while decoding payload."))?;
    let op = v
        .get("op")
        .and_then(Value::as_u64)
        .ok_or_else(|| refuse(4002, "Error while decoding payload."))?;
    Ok((op, v.get("d").cloned().unwrap_or(Value::Null)))
}

/// Opcodes a client may send (opcodes-and-status-codes.mdx L14-28): 1
/// Heartbeat, 2 Identify, 3 Presence Update, 4 Voice State Update, 6
/// Resume, 8 Request Guild Members, 31 Request Soundboard Sounds, 43
/// Request Channel Info.
pub fn known_send_op(op: u64) -> bool {
    matches!(op, 1 | 2 | 3 | 4 | 6 | 8 | 31 | 43)
}

/// A heartbeat's `d`: the last sequence number or null; anything else is an
/// invalid payload for the opcode (4001).
pub fn heartbeat(d: &Value) -> Result<(), Refusal> {
    if d.is_null() || d.is_u64() {
        Ok(())
    } else {
        Err(refuse(4001, "Invalid heartbeat payload"))
    }
}

/// A valid IDENTIFY.
#[derive(Debug)]
pub struct Identify<'w> {
    pub bot: &'w Bot,
    pub intents: u64,
    pub shard: Option<[u32; 2]>,
    pub large_threshold: u64,
}

/// The token of an IDENTIFY or RESUME, if it is a string.
pub fn token(d: &Value) -> Option<&str> {
    d.get("token").and_then(Value::as_str)
}

/// Checks an IDENTIFY's `d`. `known` resolves a token to its bot (`None`
/// for unknown or revoked tokens).
pub fn identify<'w>(
    d: &Value,
    world: &'w World,
    known: impl Fn(&str) -> Option<&'w Bot>,
    guilds_per_shard: usize,
) -> Result<Identify<'w>, Refusal> {
    if !d.is_object() || !d.get("properties").is_some_and(Value::is_object) {
        return Err(refuse(4001, "Invalid identify payload"));
    }
    let bot = token(d)
        .and_then(known)
        .ok_or_else(|| refuse(4004, "Authentication failed."))?;
    let intents = d
        .get("intents")
        .and_then(Value::as_u64)
        .filter(|i| i & !intents::VALID == 0)
        .ok_or_else(|| refuse(4013, "Invalid intent(s)."))?;
    let missing = intents & intents::PRIVILEGED & !bot.privileged_intents;
    if missing != 0 {
        return Err(refuse(
            4014,
            format!(
                "Disallowed intent(s): {} not enabled for this application.",
                intents::privileged_names(missing).join(", ")
            ),
        ));
    }
    let shard = match d.get("shard") {
        None | Some(Value::Null) => None,
        Some(s) => {
            let pair = s
                .as_array()
                .filter(|a| a.len() == 2)
                .and_then(|a| Some([a[0].as_u64()?, a[1].as_u64()?]))
                .filter(|[id, n]| *n >= 1 && id < n && *n <= u64::from(u32::MAX))
                .ok_or_else(|| refuse(4010, "Invalid shard."))?;
            Some([pair[0] as u32, pair[1] as u32])
        }
    };
    let [id, n] = shard.unwrap_or([0, 1]);
    let handled = bot
        .guilds
        .iter()
        .filter(|g| world.guild(**g).is_some() && shard_of(Some(**g), n) == id)
        .count();
    if handled > guilds_per_shard {
        return Err(refuse(4011, "Sharding required."));
    }
    let large_threshold = d
        .get("large_threshold")
        .and_then(Value::as_u64)
        .map_or(50, |t| t.clamp(50, 250));
    Ok(Identify {
        bot,
        intents,
        shard,
        large_threshold,
    })
}

/// A RESUME's `d`: token, session id and seq (4001 when malformed).
pub fn resume(d: &Value) -> Result<(&str, &str, u64), Refusal> {
    let bad = || refuse(4001, "Invalid resume payload");
    let token = token(d).ok_or_else(bad)?;
    let sid = d
        .get("session_id")
        .and_then(Value::as_str)
        .ok_or_else(bad)?;
    let seq = match d.get("seq") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_u64().ok_or_else(bad)?,
    };
    Ok((token, sid, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_rules() {
        assert_eq!(query("v=10&encoding=json"), Ok(false));
        assert_eq!(query("v=10&encoding=json&compress=zlib-stream"), Ok(true));
        assert_eq!(query("v=10"), Ok(false));
        assert_eq!(query("v=9&encoding=json").unwrap_err().code, 4012);
        assert_eq!(query("encoding=json").unwrap_err().code, 4012);
        assert_eq!(query("v=10&encoding=etf").unwrap_err().code, 4002);
        assert_eq!(query("v=10&compress=zstd-stream").unwrap_err().code, 4002);
    }

    #[test]
    fn identify_checks_in_order() {
        let w = World::demo();
        let known = |t: &str| w.bot_by_token(t);
        let ok = json!({"token": "demo-bot-token", "intents": 513, "properties": {}});
        let id = identify(&ok, &w, known, 2500).unwrap();
        assert_eq!((id.intents, id.shard), (513, None));
        let code = |d: Value| identify(&d, &w, known, 2500).unwrap_err().code;
        assert_eq!(
            code(json!({"token": "x", "intents": 1, "properties": {}})),
            4004
        );
        assert_eq!(
            code(json!({"token": "demo-bot-token", "properties": {}})),
            4013
        );
        assert_eq!(
            code(json!({"token": "demo-bot-token", "intents": 1 << 17, "properties": {}})),
            4013
        );
        assert_eq!(
            code(json!({"token": "demo-bot-token", "intents": 1 << 8, "properties": {}})),
            4014
        );
        assert_eq!(
            code(
                json!({"token": "demo-bot-token", "intents": 1, "properties": {}, "shard": [1, 1]})
            ),
            4010
        );
        assert_eq!(identify(&ok, &w, known, 0).unwrap_err().code, 4011);
        assert_eq!(code(json!({"token": "demo-bot-token", "intents": 1})), 4001);
    }
}
