//! protocol: the Gateway's JSON envelope, read and written.
//!
//! Why it exists: a dispatch's `d` is what clients want, byte for byte, so
//! we parse only the envelope (`op`, `s`, `t`) and keep `d` as Discord's
//! bytes (`RawValue`), plus the two ids the stream's filters need. Parsing
//! all of `d` would cost a tree per event and change nothing we pass on.
//!
//! Invariant: the payloads built here that carry the token (Identify,
//! Resume) are `String`s handed to the socket and nothing else; their
//! builders take the token as an argument and no type here derives `Debug`
//! over it.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Gateway opcodes we send or act on (`opcodes-and-status-codes.mdx`).
pub const OP_DISPATCH: u8 = 0;
pub const OP_HEARTBEAT: u8 = 1;
pub const OP_IDENTIFY: u8 = 2;
pub const OP_RESUME: u8 = 6;
pub const OP_RECONNECT: u8 = 7;
pub const OP_INVALID_SESSION: u8 = 9;
pub const OP_HELLO: u8 = 10;
pub const OP_HEARTBEAT_ACK: u8 = 11;

/// What Discord accepts from a client in one payload (GW L52); larger
/// closes the connection with 4002.
pub const MAX_SEND: usize = 4096;

/// One received payload: `d` borrowed from the message's bytes.
#[derive(Deserialize)]
pub struct Envelope<'a> {
    pub op: u8,
    #[serde(default)]
    pub s: Option<u64>,
    #[serde(borrow, default)]
    pub t: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub d: Option<&'a RawValue>,
}

impl<'a> Envelope<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Envelope<'a>, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Hello's `d`.
#[derive(Deserialize)]
pub struct Hello {
    pub heartbeat_interval: u64,
}

/// The two fields of READY's `d` we keep; everything else in it (guild
/// stubs, the user) is skipped, not built.
#[derive(Deserialize)]
pub struct Ready {
    pub session_id: String,
    pub resume_gateway_url: String,
}

/// The ids a dispatch is filtered by, picked out of `d` without parsing
/// the rest into values.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub guild_id: Option<u64>,
    pub channel_id: Option<u64>,
}

/// Top-level id fields of `d`, raw, so a number, a string or something
/// else never fails the pick-out.
#[derive(Deserialize, Default)]
struct RawIds<'a> {
    #[serde(borrow, default)]
    guild_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channel_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// `guild_id` and `channel_id` of a dispatch. For the events about a guild
/// or a channel itself (GUILD_CREATE, CHANNEL_UPDATE, THREAD_DELETE…) the
/// object's own `id` is that id, so a filter on a guild also sees the
/// guild's own events.
pub fn ids(kind: &str, d: &RawValue) -> Ids {
    if !d.get().starts_with('{') {
        // serde would read a struct from an array too.
        return Ids::default();
    }
    let raw: RawIds = serde_json::from_str(d.get()).unwrap_or_default();
    let own = raw.id.and_then(snowflake);
    let is_guild = matches!(kind, "GUILD_CREATE" | "GUILD_UPDATE" | "GUILD_DELETE");
    let is_channel = matches!(
        kind,
        "CHANNEL_CREATE"
            | "CHANNEL_UPDATE"
            | "CHANNEL_DELETE"
            | "THREAD_CREATE"
            | "THREAD_UPDATE"
            | "THREAD_DELETE"
    );
    Ids {
        guild_id: raw
            .guild_id
            .and_then(snowflake)
            .or(if is_guild { own } else { None }),
        channel_id: raw
            .channel_id
            .and_then(snowflake)
            .or(if is_channel { own } else { None }),
    }
}

/// A snowflake as Discord writes it (a string of digits), or a bare number.
fn snowflake(raw: &RawValue) -> Option<u64> {
    let text = raw.get();
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
        .parse()
        .ok()
}

/// Op 1: `d` is the last sequence number received, or null before any.
pub fn heartbeat(seq: Option<u64>) -> String {
    match seq {
        Some(seq) => format!(r#"{{"op":1,"d":{seq}}}"#),
        None => r#"{"op":1,"d":null}"#.to_string(),
    }
}

/// An outgoing payload: its opcode and its `d`.
#[derive(Serialize)]
struct Payload<D> {
    op: u8,
    d: D,
}

/// Who we say we are in Identify's `properties` (EV L71-99).
const CLIENT_NAME: &str = "discord-bot-backend";

/// Op 2. `large_threshold` is Discord's minimum, 50: we keep no member
/// lists, so the fewer offline members a GUILD_CREATE carries, the better.
/// `compress` is false: payload compression and `zlib-stream` exclude each
/// other (GW L511-533), and we use the transport's.
pub fn identify(token: &str, intents: u64, shard: [u16; 2]) -> String {
    #[derive(Serialize)]
    struct Properties {
        os: &'static str,
        browser: &'static str,
        device: &'static str,
    }
    #[derive(Serialize)]
    struct D<'a> {
        token: &'a str,
        intents: u64,
        properties: Properties,
        compress: bool,
        large_threshold: u8,
        shard: [u16; 2],
    }
    serde_json::to_string(&Payload {
        op: OP_IDENTIFY,
        d: D {
            token,
            intents,
            properties: Properties {
                os: std::env::consts::OS,
                browser: CLIENT_NAME,
                device: CLIENT_NAME,
            },
            compress: false,
            large_threshold: 50,
            shard,
        },
    })
    .expect("an identify payload always serialises")
}

/// Op 6 (EV L135-162).
pub fn resume(token: &str, session_id: &str, seq: u64) -> String {
    #[derive(Serialize)]
    struct D<'a> {
        token: &'a str,
        session_id: &'a str,
        seq: u64,
    }
    serde_json::to_string(&Payload {
        op: OP_RESUME,
        d: D {
            token,
            session_id,
            seq,
        },
    })
    .expect("a resume payload always serialises")
}

/// Any other command (presence update, request guild members…), as
/// another thread hands it to the connection.
pub fn command(op: u8, d: &RawValue) -> String {
    format!(r#"{{"op":{op},"d":{}}}"#, d.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dispatch_keeps_d_as_discords_bytes() {
        let bytes = br#"{"t":"MESSAGE_CREATE","s":7,"op":0,"d":{"content":"a \"b\"","guild_id":"5","channel_id":"6","nested":{"guild_id":"9"}}}"#;
        let env = Envelope::parse(bytes).unwrap();
        assert_eq!(env.op, 0);
        assert_eq!(env.s, Some(7));
        assert_eq!(env.t.as_deref(), Some("MESSAGE_CREATE"));
        let d = env.d.unwrap();
        assert_eq!(
            d.get(),
            r#"{"content":"a \"b\"","guild_id":"5","channel_id":"6","nested":{"guild_id":"9"}}"#
        );
        assert_eq!(
            ids("MESSAGE_CREATE", d),
            Ids {
                guild_id: Some(5),
                channel_id: Some(6)
            }
        );
    }

    #[test]
    fn non_dispatches_have_null_s_t_and_maybe_d() {
        let env = Envelope::parse(br#"{"op":11,"d":null,"s":null,"t":null}"#).unwrap();
        assert_eq!(
            (env.op, env.s, env.t.is_none(), env.d.is_none()),
            (11, None, true, true)
        );
        let env = Envelope::parse(br#"{"op":9,"d":true}"#).unwrap();
        assert_eq!(env.d.unwrap().get(), "true");
    }

    #[test]
    fn a_guild_or_channel_event_is_filtered_by_its_own_id() {
        let d = RawValue::from_string(r#"{"id":"42","name":"x"}"#.into()).unwrap();
        assert_eq!(ids("GUILD_CREATE", &d).guild_id, Some(42));
        assert_eq!(ids("CHANNEL_CREATE", &d).channel_id, Some(42));
        assert_eq!(ids("MESSAGE_CREATE", &d), Ids::default());
        let odd = RawValue::from_string(r#"[1,2]"#.into()).unwrap();
        assert_eq!(ids("MESSAGE_CREATE", &odd), Ids::default());
    }

    #[test]
    fn identify_and_resume_escape_what_they_carry() {
        let p = identify("to\"ken", 513, [1, 2]);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["op"], 2);
        assert_eq!(v["d"]["token"], "to\"ken");
        assert_eq!(v["d"]["shard"], serde_json::json!([1, 2]));
        assert_eq!(v["d"]["properties"]["browser"], CLIENT_NAME);
        let v: serde_json::Value = serde_json::from_str(&resume("t", "s1", 9)).unwrap();
        assert_eq!(v["d"]["seq"], 9);
        assert_eq!(heartbeat(None), r#"{"op":1,"d":null}"#);
        assert_eq!(heartbeat(Some(3)), r#"{"op":1,"d":3}"#);
    }
}
