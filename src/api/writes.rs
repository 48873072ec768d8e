//! writes: the routes of API.md's "Writing": messages (send, edit, delete,
//! bulk delete), reactions, DMs and typing, each turned into one
//! `WriteRoute` (two for a DM) and run at most once per `Idempotency-Key`.
//!
//! Architecture invariants:
//! - a message send always carries a nonce with `enforce_nonce`, so a
//!   re-send (ours or the client's, with the returned key) cannot post
//!   twice; a client's own `nonce` or `enforce_nonce` is refused, in a JSON
//!   body and in an upload's `payload_json` alike;
//! - what reaches Discord is built from validated parts: IDs, an encoded
//!   emoji, a body that parsed as a JSON object (with our additions), an
//!   upload that parsed strictly (`multipart`) with only its `payload_json`
//!   replaced, an audit reason we percent-encoded;
//! - at most `UPLOAD_SLOTS` uploads are read or answered at once, each
//!   held at most twice (as received, and rewritten), so memory stays
//!   bounded by about 2 × `UPLOAD_SLOTS` × `--max-upload-bytes`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::api::error::ApiError;
use crate::api::idempotency::{Keyed, fingerprint, key_of, mint_key, nonce, run_once};
use crate::api::multipart::{self, Form};
use crate::api::passthrough;
use crate::api::query::Query;
use crate::api::reads::Call;
use crate::api::routes::{Endpoint, resolve};
use crate::discord::emoji::Emoji;
use crate::discord::percent;
use crate::discord::route::{WriteRoute, age};
use crate::discord::{Body, Outgoing, Reply, Snowflake};
use crate::http::server::{BodyAllowance, MAX_BODY, Request, Response};
use crate::store::idempotency::{IdempotencyStore, KeyScope};

/// API.md, bulk delete: "2 to 100 distinct IDs, none older than 14 days".
const BULK_MIN: usize = 2;
const BULK_MAX: usize = 100;
const BULK_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 60 * 60);
/// `X-Audit-Log-Reason`: "1 to 512 characters" (API.md; audit-log.mdx).
const AUDIT_REASON_MAX: usize = 512;
/// DM channels remembered per (bot, user), so a DM costs one call, not
/// two; past this many the map starts over.
const MAX_DM_CHANNELS: usize = 10_000;
pub(super) const JSON: &str = "application/json";
const MULTIPART: &str = "multipart/form-data";
/// API.md: "at most 4 uploads are read at once (more get 503 with
/// `Retry-After`)". Each may hold twice `--max-upload-bytes`.
pub const UPLOAD_SLOTS: usize = 4;
/// `--max-upload-bytes`' default: Discord's largest message request, 25 MiB
/// (message.mdx).
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 26_214_400;
/// What a 503 for busy upload slots tells the client to wait: uploads end
/// in seconds on a fast link, and the client has sent little if anything.
const UPLOAD_RETRY_AFTER: &str = "1";

/// `--default-allowed-mentions`: what a message without `allowed_mentions`
/// gets, so relayed text cannot ping `@everyone` or a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultMentions {
    /// `{"parse": ["users"]}`: user mentions ping, nothing else.
    Users,
    /// `{"parse": []}`: nothing pings.
    Nothing,
    /// Add nothing: Discord's own default (users, roles and everyone).
    Discord,
}

impl DefaultMentions {
    pub fn parse(text: &str) -> Result<DefaultMentions, String> {
        match text {
            "users" => Ok(DefaultMentions::Users),
            "none" => Ok(DefaultMentions::Nothing),
            "discord" => Ok(DefaultMentions::Discord),
            _ => Err("expected `users`, `none` or `discord`".into()),
        }
    }

    /// Adds the default to a message body that has no `allowed_mentions`;
    /// an explicit value, even `{}`, is left as sent.
    pub fn apply(self, body: &mut Map<String, Value>) {
        let parse: &[&str] = match self {
            DefaultMentions::Users => &["users"],
            DefaultMentions::Nothing => &[],
            DefaultMentions::Discord => return,
        };
        body.entry("allowed_mentions")
            .or_insert_with(|| serde_json::json!({ "parse": parse }));
    }
}

/// What every write needs besides the request.
pub struct WriteSettings {
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// The secret message nonces are derived under (`idempotency::nonce`).
    pub nonce_secret: [u8; 32],
    pub default_mentions: DefaultMentions,
    /// How long a key stays claimed by a running request: past it, the
    /// request's instance is presumed dead.
    pub lease: Duration,
    /// `--max-upload-bytes`: the largest multipart body of a message route.
    pub max_upload_bytes: usize,
    /// Upload slots taken (`UploadSlot`s alive).
    uploads: Arc<AtomicUsize>,
    dm_channels: Mutex<HashMap<(u64, u64), Snowflake>>,
}

impl WriteSettings {
    /// `nonce_secret`: shared by every instance that shares the store (and
    /// kept across restarts with `--data-dir`), else one is drawn for this
    /// process.
    pub fn new(
        idempotency: Arc<dyn IdempotencyStore>,
        nonce_secret: Option<[u8; 32]>,
        default_mentions: DefaultMentions,
        lease: Duration,
    ) -> WriteSettings {
        let nonce_secret = nonce_secret.unwrap_or_else(|| {
            let mut secret = [0u8; 32];
            getrandom(&mut secret);
            secret
        });
        WriteSettings {
            idempotency,
            nonce_secret,
            default_mentions,
            lease,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            uploads: Arc::default(),
            dm_channels: Mutex::default(),
        }
    }

    pub fn with_max_upload_bytes(mut self, bytes: usize) -> WriteSettings {
        self.max_upload_bytes = bytes;
        self
    }

    /// What the front may read of an upload declaring `declared` bytes:
    /// `--max-upload-bytes` and an upload slot held until it is answered;
    /// `None` when every slot is taken. One too large takes no slot: the
    /// front refuses it unread.
    pub(super) fn upload_allowance(&self, declared: usize) -> Option<BodyAllowance> {
        if declared > self.max_upload_bytes {
            return Some(BodyAllowance::up_to(self.max_upload_bytes));
        }
        self.uploads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |taken| {
                (taken < UPLOAD_SLOTS).then_some(taken + 1)
            })
            .ok()?;
        Some(BodyAllowance {
            limit: self.max_upload_bytes,
            hold: Some(Box::new(UploadSlot(Arc::clone(&self.uploads)))),
        })
    }
}

/// One of the `UPLOAD_SLOTS`, given back when the request is answered.
struct UploadSlot(Arc<AtomicUsize>);

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a request is an upload: `multipart/form-data` on a message
/// route (API.md: "on the message routes only").
pub(super) fn is_upload(request: &Request) -> bool {
    matches!(request.method(), "POST" | "PATCH")
        && media_type(request).eq_ignore_ascii_case(MULTIPART)
        && match resolve(request.method(), request.path()) {
            Ok(Endpoint::SendMessage | Endpoint::EditMessage | Endpoint::SendDm) => true,
            Ok(Endpoint::Passthrough) => passthrough::takes_upload(request),
            _ => false,
        }
}

/// The 503 for an upload that finds every slot taken, with its
/// `Retry-After`.
pub(super) fn uploads_busy(mut refused: impl FnMut(ApiError) -> Response) -> Response {
    let mut response = refused(ApiError::Unavailable(format!(
        "{UPLOAD_SLOTS} uploads are being received already; retry shortly"
    )));
    response.header("Retry-After", UPLOAD_RETRY_AFTER);
    response
}

/// A message's body as the client sent it, checked: a JSON object, or an
/// upload and its `payload_json` (`{}` when it has none).
pub(super) enum MessageBody<'r> {
    Json(Map<String, Value>),
    Upload {
        form: Form<'r>,
        payload: Map<String, Value>,
    },
}

/// A body as Discord gets it.
pub(super) struct Encoded {
    content_type: String,
    bytes: Vec<u8>,
}

impl Encoded {
    pub(super) fn body(&self) -> Body<'_> {
        Body {
            content_type: &self.content_type,
            bytes: &self.bytes,
        }
    }
}

impl MessageBody<'_> {
    /// The message's JSON fields (`payload_json`'s for an upload).
    pub(super) fn fields(&self) -> &Map<String, Value> {
        match self {
            MessageBody::Json(fields)
            | MessageBody::Upload {
                payload: fields, ..
            } => fields,
        }
    }

    /// The bytes to send, with `added` fields in the JSON (a send's nonce).
    /// Built once per request: the client's re-send of a send is a new
    /// request, and ours sends these same bytes again.
    pub(super) fn encode(&self, added: &[(&str, Value)]) -> Encoded {
        let (fields, form) = match self {
            MessageBody::Json(fields) => (fields, None),
            MessageBody::Upload { form, payload } => (payload, Some(form)),
        };
        let mut fields = fields.clone();
        for (name, value) in added {
            fields.insert((*name).into(), value.clone());
        }
        let json = serde_json::to_vec(&fields).expect("a JSON map always serializes");
        match form {
            None => Encoded {
                content_type: JSON.into(),
                bytes: json,
            },
            Some(form) => Encoded {
                content_type: form.content_type(),
                bytes: form.with_payload(&json),
            },
        }
    }
}

/// 32 random bytes from the OS, through the AEAD crate's generator (already
/// in the tree for sealing).
fn getrandom(out: &mut [u8; 32]) {
    use chacha20poly1305::aead::{Generate, Key};
    let key = Key::<chacha20poly1305::ChaCha20Poly1305>::generate();
    out.copy_from_slice(&key);
}

/// The bot's Discord ID, which keys, events and the Gateway are kept by;
/// a 503 in the moment before a login has learnt it.
pub(super) fn known_id(bot: &crate::discord::bots::Bot) -> Result<u64, ApiError> {
    bot.discord_id()
        .ok_or_else(|| ApiError::Unavailable("the bot's identity is not known yet".into()))
}

/// One write request being answered.
pub(super) struct Writer<'a> {
    pub(super) call: &'a Call<'a>,
    pub(super) request: &'a Request,
    pub(super) settings: &'a WriteSettings,
    pub(super) query: &'a Query<'a>,
}

impl Writer<'_> {
    /// The bot's Discord ID: idempotency keys belong to it.
    fn bot_id(&self) -> Result<u64, ApiError> {
        known_id(self.call.bot)
    }

    fn send(&self, route: WriteRoute<'_>, body: Option<Body<'_>>) -> Result<Reply, ApiError> {
        let reason = audit_reason(self.request)?;
        let outgoing = Outgoing {
            method: route.method(),
            path: route.path(),
            key: route.key(),
            body,
            audit_reason: reason.as_deref(),
            resend: route.resend(),
            keep_headers: false,
        };
        Ok(self
            .call
            .discord
            .call(self.call.bot, &outgoing, self.call.deadline)?)
    }

    /// A write Discord answers with 204: its status seen is success enough
    /// (a lost empty body loses nothing).
    fn send_no_content(
        &self,
        route: WriteRoute<'_>,
        body: Option<Body<'_>>,
    ) -> Result<Response, ApiError> {
        match self.send(route, body) {
            Ok(_) => Ok(Response::no_content()),
            Err(ApiError::Performed { .. }) => Ok(Response::no_content()),
            Err(e) => Err(e),
        }
    }

    /// Runs `write` once per `Idempotency-Key` when the client sent one
    /// (POST and PATCH), or simply runs it.
    pub(super) fn once(
        &self,
        key: Option<&str>,
        target: u64,
        resendable: bool,
        write: impl FnOnce(&str) -> Result<Response, ApiError>,
    ) -> Result<Response, ApiError> {
        let Some(key) = key else {
            return write("");
        };
        let bot = self.bot_id()?;
        let keyed = Keyed {
            store: &*self.settings.idempotency,
            scope: KeyScope { bot, key },
            fingerprint: fingerprint(self.request, &self.request.body),
            nonce: nonce(&self.settings.nonce_secret, bot, target, key),
            lease: self.settings.lease,
            resendable,
        };
        run_once(keyed, write)
    }

    /// The message body of a send or an edit, JSON or an upload, with the
    /// default `allowed_mentions`. A client's `nonce` is refused on the
    /// routes of Writing (the service sets it) and kept on the passthrough
    /// (`keep_nonce`: Discord libraries send their own).
    /// `starter`: the message is the body's `message` field (a forum post:
    /// a thread and its first message).
    pub(super) fn message_body(
        &self,
        keep_nonce: bool,
        starter: bool,
    ) -> Result<MessageBody<'_>, ApiError> {
        let (mut fields, form) = if media_type(self.request).eq_ignore_ascii_case(MULTIPART) {
            let content_type = self.request.header("content-type").unwrap_or("");
            let form = multipart::parse(content_type, &self.request.body)?;
            let fields = match form.payload() {
                // The JSON bound holds for the JSON inside an upload too.
                Some(json) if json.len() > MAX_BODY => {
                    return Err(ApiError::bad_request(format!(
                        "`payload_json` is over {MAX_BODY} bytes, the bound of JSON bodies"
                    )));
                }
                Some(json) => parse_object(json, "`payload_json`")?,
                None => Map::new(),
            };
            (fields, Some(form))
        } else if is_json(self.request) {
            (json_object(self.request)?, None)
        } else {
            return Err(ApiError::UnsupportedMediaType(
                "send the message as `Content-Type: application/json`, or with files as \
                 `multipart/form-data` (a `payload_json` part and `files[n]` parts)",
            ));
        };
        for field in ["nonce", "enforce_nonce"] {
            if fields.contains_key(field) && !keep_nonce {
                return Err(ApiError::bad_request(format!(
                    "`{field}` is set by this service (see Idempotency-Key); leave it out"
                )));
            }
        }
        match (starter, fields.get_mut("message")) {
            (false, _) => self.settings.default_mentions.apply(&mut fields),
            (true, Some(Value::Object(message))) => self.settings.default_mentions.apply(message),
            (true, _) => {}
        }
        Ok(match form {
            Some(form) => MessageBody::Upload {
                form,
                payload: fields,
            },
            None => MessageBody::Json(fields),
        })
    }

    /// Sends a message with its nonce and `enforce_nonce`: Discord returns
    /// the first message for a nonce it has seen instead of posting again.
    fn post_message(
        &self,
        channel: Snowflake,
        body: &MessageBody<'_>,
        nonce: &str,
    ) -> Result<Response, ApiError> {
        let encoded = body.encode(&[("nonce", nonce.into()), ("enforce_nonce", true.into())]);
        let reply = self.send(WriteRoute::CreateMessage { channel }, Some(encoded.body()))?;
        Ok(Response::json(201, reply.body))
    }

    pub(super) fn send_message(&self) -> Result<Response, ApiError> {
        let key = key_of(self.request)?.unwrap_or_else(mint_key);
        let result = self
            .query
            .required_snowflake("channelId")
            .and_then(|channel| {
                let body = self.message_body(false, false)?;
                self.once(Some(&key), channel.get(), true, |nonce| {
                    self.post_message(channel, &body, nonce)
                })
            });
        Ok(with_key(result, &key))
    }

    pub(super) fn send_dm(&self) -> Result<Response, ApiError> {
        let key = key_of(self.request)?.unwrap_or_else(mint_key);
        let result = self.query.required_snowflake("userId").and_then(|user| {
            let body = self.message_body(false, false)?;
            self.once(Some(&key), user.get(), true, |nonce| {
                let channel = self.dm_channel(user)?;
                self.post_message(channel, &body, nonce)
            })
        });
        Ok(with_key(result, &key))
    }

    /// The DM channel with `user`: remembered, else opened (Discord returns
    /// the existing one: user.mdx, "Create DM").
    fn dm_channel(&self, user: Snowflake) -> Result<Snowflake, ApiError> {
        let index = (self.bot_id()?, user.get());
        if let Some(channel) = self.settings.dm_channels.lock().get(&index) {
            return Ok(*channel);
        }
        let body = serde_json::to_vec(&serde_json::json!({ "recipient_id": user.to_string() }))
            .expect("a JSON value always serializes");
        let reply = self.send(
            WriteRoute::OpenDm,
            Some(Body {
                content_type: JSON,
                bytes: &body,
            }),
        )?;
        #[derive(serde::Deserialize)]
        struct Channel {
            id: String,
        }
        let channel = serde_json::from_slice::<Channel>(&reply.body)
            .ok()
            .and_then(|c| Snowflake::parse(&c.id))
            .ok_or_else(|| ApiError::BadGateway("Discord's DM channel has no valid id".into()))?;
        let mut channels = self.settings.dm_channels.lock();
        if channels.len() >= MAX_DM_CHANNELS {
            channels.clear();
        }
        channels.insert(index, channel);
        Ok(channel)
    }

    pub(super) fn edit_message(&self) -> Result<Response, ApiError> {
        let channel = self.query.required_snowflake("channelId")?;
        let message = self.query.required_snowflake("messageId")?;
        let body = self.message_body(false, false)?;
        let key = key_of(self.request)?;
        self.once(key.as_deref(), channel.get(), false, |_| {
            let encoded = body.encode(&[]);
            let reply = self.send(
                WriteRoute::EditMessage { channel, message },
                Some(encoded.body()),
            )?;
            Ok(Response::json(200, reply.body))
        })
    }

    pub(super) fn delete_message(&self) -> Result<Response, ApiError> {
        let channel = self.query.required_snowflake("channelId")?;
        let message = self.query.required_snowflake("messageId")?;
        self.send_no_content(WriteRoute::DeleteMessage { channel, message }, None)
    }

    pub(super) fn bulk_delete(&self) -> Result<Response, ApiError> {
        let channel = self.query.required_snowflake("channelId")?;
        let ids = bulk_ids(&json_object(self.request)?, SystemTime::now())?;
        let body = serde_json::to_vec(&serde_json::json!({
            "messages": ids.iter().map(ToString::to_string).collect::<Vec<_>>()
        }))
        .expect("a JSON value always serializes");
        let key = key_of(self.request)?;
        self.once(key.as_deref(), channel.get(), false, |_| {
            self.send_no_content(
                WriteRoute::BulkDelete { channel },
                Some(Body {
                    content_type: JSON,
                    bytes: &body,
                }),
            )
        })
    }

    pub(super) fn reaction(&self, add: bool) -> Result<Response, ApiError> {
        let channel = self.query.required_snowflake("channelId")?;
        let message = self.query.required_snowflake("messageId")?;
        let user = self.query.snowflake("userId")?;
        if add && user.is_some() {
            return Err(ApiError::bad_request(
                "`userId` applies only to removing a reaction: the bot adds its own",
            ));
        }
        let emoji = self
            .query
            .text("emoji")
            .ok_or_else(|| ApiError::bad_request("`emoji` is required"))?;
        let emoji = Emoji::parse(emoji).ok_or_else(|| {
            ApiError::bad_request(
                "`emoji` must be a Unicode emoji (like 👍) or a custom emoji as `name:id`",
            )
        })?;
        let encoded = emoji.encoded();
        self.send_no_content(
            WriteRoute::Reaction {
                channel,
                message,
                emoji: &encoded,
                user,
                add,
            },
            None,
        )
    }

    pub(super) fn typing(&self) -> Result<Response, ApiError> {
        let channel = self.query.required_snowflake("channelId")?;
        let key = key_of(self.request)?;
        self.once(key.as_deref(), channel.get(), false, |_| {
            self.send_no_content(WriteRoute::Typing { channel }, None)
        })
    }
}

/// Every answer of the message send routes names its key, made up or the
/// client's, so an unknown outcome can be retried safely.
fn with_key(result: Result<Response, ApiError>, key: &str) -> Response {
    let mut response = result.unwrap_or_else(|error| error.to_response());
    response.header("Idempotency-Key", key);
    response
}

/// The Content-Type without its parameters.
fn media_type(request: &Request) -> &str {
    let content_type = request.header("content-type").unwrap_or("");
    content_type.split(';').next().unwrap_or("").trim()
}

/// The request body as a JSON object.
fn json_object(request: &Request) -> Result<Map<String, Value>, ApiError> {
    if !is_json(request) {
        return Err(ApiError::UnsupportedMediaType(
            "send the body as `Content-Type: application/json`",
        ));
    }
    parse_object(&request.body, "the body")
}

/// `bytes` as a JSON object; `what` names them in the error.
pub(super) fn parse_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(format!(
            "{what} must be a JSON object"
        ))),
        Err(e) => Err(ApiError::bad_request(format!(
            "{what} is not valid JSON: {e}"
        ))),
    }
}

/// `X-Audit-Log-Reason`, checked and percent-encoded for Discord (every
/// byte but unreserved characters, as discord.js and twilight do: this
/// also keeps CR and LF out of the header).
fn audit_reason(request: &Request) -> Result<Option<String>, ApiError> {
    let Some(reason) = request.header("x-audit-log-reason") else {
        return Ok(None);
    };
    check_reason(reason)?;
    Ok(Some(percent::encode(reason)))
}

/// Whether the request's body is declared JSON.
pub(super) fn is_json(request: &Request) -> bool {
    media_type(request).eq_ignore_ascii_case(JSON)
}

/// `X-Audit-Log-Reason` on the passthrough: a value already
/// percent-encoded, as Discord libraries send it, is passed as sent (once
/// its decoded text passes the same checks); anything else is encoded
/// here.
pub(super) fn passthrough_audit_reason(request: &Request) -> Result<Option<String>, ApiError> {
    let Some(reason) = request.header("x-audit-log-reason") else {
        return Ok(None);
    };
    let encoded = reason.bytes().all(|b| percent::unreserved(b) || b == b'%');
    let decoded = encoded
        .then(|| percent::decode(reason, false).ok())
        .flatten();
    match decoded {
        Some(text) => {
            check_reason(&text)?;
            Ok(Some(reason.to_string()))
        }
        None => audit_reason(request),
    }
}

fn check_reason(reason: &str) -> Result<(), ApiError> {
    let chars = reason.chars().count();
    if !(1..=AUDIT_REASON_MAX).contains(&chars) || reason.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "`X-Audit-Log-Reason` must be 1 to 512 characters, without control characters",
        ));
    }
    Ok(())
}

/// The IDs of a bulk delete, checked as Discord would before asking it:
/// 2 to 100, distinct, none older than 14 days (from the snowflakes).
fn bulk_ids(body: &Map<String, Value>, now: SystemTime) -> Result<Vec<Snowflake>, ApiError> {
    let list = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("`messages` (an array of message IDs) is required"))?;
    if !(BULK_MIN..=BULK_MAX).contains(&list.len()) {
        return Err(ApiError::bad_request(format!(
            "`messages` must hold {BULK_MIN} to {BULK_MAX} message IDs; it holds {}",
            list.len()
        )));
    }
    let mut ids = Vec::with_capacity(list.len());
    for item in list {
        let id = item.as_str().and_then(Snowflake::parse).ok_or_else(|| {
            ApiError::bad_request("`messages` must hold message IDs as strings of digits")
        })?;
        if ids.contains(&id) {
            return Err(ApiError::bad_request(format!(
                "`messages` lists {id} twice"
            )));
        }
        if age(id, now) >= BULK_MAX_AGE {
            return Err(ApiError::bad_request(format!(
                "message {id} is older than 14 days: Discord bulk-deletes only younger messages; \
                 delete it on its own"
            )));
        }
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mentions_fill_only_an_absent_field() {
        let mut empty = Map::new();
        DefaultMentions::Users.apply(&mut empty);
        assert_eq!(
            empty["allowed_mentions"],
            serde_json::json!({"parse": ["users"]})
        );
        let mut explicit: Map<String, Value> =
            serde_json::from_str(r#"{"allowed_mentions": {}}"#).unwrap();
        DefaultMentions::Users.apply(&mut explicit);
        assert_eq!(explicit["allowed_mentions"], serde_json::json!({}));
        let mut none = Map::new();
        DefaultMentions::Nothing.apply(&mut none);
        assert_eq!(none["allowed_mentions"], serde_json::json!({"parse": []}));
        let mut discord = Map::new();
        DefaultMentions::Discord.apply(&mut discord);
        assert!(discord.is_empty());
    }

    #[test]
    fn audit_reasons_are_percent_encoded_and_bounded() {
        let with = |reason: &str| {
            audit_reason(&Request::for_test(
                "DELETE",
                "/",
                &[("X-Audit-Log-Reason", reason)],
                b"",
            ))
        };
        assert_eq!(with("spam bot é").unwrap().unwrap(), "spam%20bot%20%C3%A9");
        assert!(with(&"é".repeat(512)).is_ok());
        assert!(with(&"é".repeat(513)).is_err());
        assert!(with("a\u{7}b").is_err());
    }

    #[test]
    fn bulk_delete_ids_are_checked_before_discord_is_asked() {
        let now = SystemTime::now();
        let fresh = |n: u64| {
            let ms = now
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            ((ms - 1_420_070_400_000) << 22) + n
        };
        let body = |ids: Vec<String>| -> Map<String, Value> {
            serde_json::from_value(serde_json::json!({ "messages": ids })).unwrap()
        };
        let ok = body(vec![fresh(1).to_string(), fresh(2).to_string()]);
        assert_eq!(bulk_ids(&ok, now).unwrap().len(), 2);
        assert!(bulk_ids(&body(vec![fresh(1).to_string()]), now).is_err());
        let many = (0..101).map(|n| fresh(n).to_string()).collect();
        assert!(bulk_ids(&body(many), now).is_err());
        let twice = body(vec![fresh(1).to_string(), fresh(1).to_string()]);
        assert!(bulk_ids(&twice, now).is_err());
        let old = body(vec![fresh(1).to_string(), "1".into()]);
        assert!(
            bulk_ids(&old, now)
                .unwrap_err()
                .to_string()
                .contains("14 days")
        );
    }
}
