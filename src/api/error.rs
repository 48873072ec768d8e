//! error: the one error type of the API, and the only place that maps an error
//! to an HTTP status and a JSON body.
//!
//! Architecture invariant: no other module picks an error status. Handlers
//! return `Result<Response, ApiError>`; what the HTTP front refuses
//! (`Refusal`), what a Discord call fails with (`discord::Error`) and what the
//! session store fails with (`StoreError`) become an `ApiError` here, so a
//! 413 written before a body is read looks exactly like a 400 written by a
//! handler.

use std::fmt;
use std::time::Duration;

use crate::discord;
use crate::http::server::{Refusal, Response};
use crate::store::StoreError;

/// Discord's codes for an upload too large: the request (40005) or a file
/// (50045); API.md makes both a 413.
const TOO_LARGE: u64 = 40005;
const FILE_TOO_LARGE: u64 = 50045;

/// Everything that can go wrong while answering a client, each variant with
/// the situation that produces it.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// The client sent something malformed: bad JSON, a missing or invalid
    /// field or query parameter. The text names the field and what is wrong.
    BadRequest(String),
    /// No session on an authenticated route, or one that is unknown, expired
    /// or logged out.
    Unauthorized(&'static str),
    /// Discord answered 401 for the bot's token: at login the token is wrong;
    /// later the token was reset or the bot deleted, and its sessions ended.
    TokenRejected,
    /// Discord refused the bot access (403): a missing permission, or on the
    /// members route the Server Members privileged intent.
    /// `cached` when the service gave Discord's earlier answer again
    /// without asking (API.md: "answers repeated identical refusals itself
    /// for a while"); the body then carries `"cached": true`.
    Forbidden {
        message: String,
        code: Option<u64>,
        cached: bool,
    },
    /// An unknown route, or Discord said the guild or channel does not exist.
    NotFound {
        message: String,
        code: Option<u64>,
        cached: bool,
    },
    /// A known path with a method it does not serve. `allow` lists the methods
    /// it does serve, for the `Allow` header.
    MethodNotAllowed { allow: &'static str },
    /// The request carried `Transfer-Encoding`, which this service does not
    /// accept on requests; every client library can send `Content-Length`.
    LengthRequired,
    /// The declared body is over the limit; refused before it is read.
    PayloadTooLarge { limit: usize },
    /// The request line and headers are over the limit.
    HeadTooLarge { limit: usize },
    /// Rate limited, by Discord beyond the wait budget or by this service.
    /// `retry_after` is exact; the `Retry-After` header rounds it up.
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    /// A bug in this service, such as a handler panic. Details go to the log,
    /// never to the client.
    Internal,
    /// Discord was unreachable, answered 5xx, or sent a body that is not JSON.
    BadGateway(String),
    /// Overloaded, the session store is full, or the service is shutting down.
    Unavailable(String),
    /// Discord did not answer within `--upstream-timeout`.
    GatewayTimeout,
    /// Discord refused a write as malformed: its 400 (413 when the upload
    /// was too large), with Discord's `code` and `errors` tree.
    DiscordRejected {
        status: u16,
        rejection: discord::error::Rejection,
    },
    /// A write was sent and Discord's answer lost: 504 after a timeout,
    /// else 502, with `"outcome": "unknown"` and whether sending it again
    /// with the same `Idempotency-Key` is safe.
    OutcomeUnknown {
        timeout: bool,
        retry_safe: bool,
        detail: String,
    },
    /// Discord did the write (its status came) but the body of its answer
    /// was lost: 502 with `"outcome": "succeeded"`.
    Performed { retry_safe: bool },
    /// The `Idempotency-Key` belongs to a request still running (409).
    KeyInUse { retry_after: Duration },
    /// The `Idempotency-Key` was used for a different request (422).
    KeyReused,
    /// A body of a content type the route does not take (415).
    UnsupportedMediaType(&'static str),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::NotFound {
            message: message.into(),
            code: None,
            cached: false,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) | ApiError::TokenRejected => 401,
            ApiError::Forbidden { .. } => 403,
            ApiError::NotFound { .. } => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::LengthRequired => 411,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::HeadTooLarge { .. } => 431,
            ApiError::RateLimited { .. } => 429,
            ApiError::Internal => 500,
            ApiError::BadGateway(_) => 502,
            ApiError::Unavailable(_) => 503,
            ApiError::GatewayTimeout => 504,
            ApiError::DiscordRejected { status, rejection } => {
                if *status == 413 || matches!(rejection.code, Some(TOO_LARGE | FILE_TOO_LARGE)) {
                    413
                } else {
                    400
                }
            }
            ApiError::OutcomeUnknown { timeout: true, .. } => 504,
            ApiError::OutcomeUnknown { .. } | ApiError::Performed { .. } => 502,
            ApiError::KeyInUse { .. } => 409,
            ApiError::KeyReused => 422,
            ApiError::UnsupportedMediaType(_) => 415,
        }
    }

    /// Discord's JSON error code, when Discord produced this error.
    fn discord_code(&self) -> Option<u64> {
        match self {
            ApiError::Forbidden { code, .. } | ApiError::NotFound { code, .. } => *code,
            ApiError::DiscordRejected { rejection, .. } => rejection.code,
            _ => None,
        }
    }

    /// The response the client gets: `{"error": ...}` plus `code` (Discord's
    /// error code) and `cached` where they apply, `Allow` on a 405 and
    /// `Retry-After` (seconds) on a 429.
    pub fn to_response(&self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), self.to_string().into());
        if let Some(code) = self.discord_code() {
            body.insert("code".into(), code.into());
        }
        if let ApiError::Forbidden { cached: true, .. } | ApiError::NotFound { cached: true, .. } =
            self
        {
            body.insert("cached".into(), true.into());
        }
        match self {
            ApiError::DiscordRejected { rejection, .. } => {
                if let Some(errors) = &rejection.errors {
                    body.insert("errors".into(), errors.clone());
                }
            }
            ApiError::OutcomeUnknown { retry_safe, .. } => {
                body.insert("outcome".into(), "unknown".into());
                body.insert("retrySafe".into(), (*retry_safe).into());
            }
            ApiError::Performed { retry_safe } => {
                body.insert("outcome".into(), "succeeded".into());
                body.insert("retrySafe".into(), (*retry_safe).into());
            }
            _ => {}
        }
        let mut response = Response::json(
            self.status(),
            serde_json::to_vec(&body).expect("a JSON map always serializes"),
        );
        match self {
            ApiError::MethodNotAllowed { allow } => response.header("Allow", *allow),
            ApiError::RateLimited { retry_after, .. } | ApiError::KeyInUse { retry_after } => {
                response.header("Retry-After", retry_after_header(*retry_after).to_string())
            }
            _ => {}
        }
        response
    }
}

/// Whole seconds for a `Retry-After` header: rounded up, and never 0, so a
/// client that waits what it is told is not refused again.
pub fn retry_after_header(wait: Duration) -> u64 {
    let millis = wait.as_millis() as u64;
    millis.div_ceil(1000).max(1)
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::BadRequest(message) => f.write_str(message),
            ApiError::Unauthorized(message) => f.write_str(message),
            ApiError::TokenRejected => {
                f.write_str("Discord rejected the bot token; log in again with a valid token")
            }
            ApiError::Forbidden { message, .. } => f.write_str(message),
            ApiError::NotFound { message, .. } => f.write_str(message),
            ApiError::MethodNotAllowed { allow } => {
                write!(f, "method not allowed on this path; allowed: {allow}")
            }
            ApiError::LengthRequired => f.write_str(
                "request bodies must be sent with Content-Length, not Transfer-Encoding",
            ),
            ApiError::PayloadTooLarge { limit } => {
                write!(f, "request body too large; the limit is {limit} bytes")
            }
            ApiError::HeadTooLarge { limit } => {
                write!(
                    f,
                    "request line and headers too large; the limit is {limit} bytes"
                )
            }
            ApiError::RateLimited { message, .. } => f.write_str(message),
            ApiError::Internal => f.write_str("internal error; it has been logged"),
            ApiError::BadGateway(message) => f.write_str(message),
            ApiError::Unavailable(message) => f.write_str(message),
            ApiError::GatewayTimeout => {
                f.write_str("Discord did not answer within the upstream timeout")
            }
            ApiError::DiscordRejected { rejection, .. } => {
                write!(f, "Discord refused the request: {}", rejection.message)
            }
            ApiError::OutcomeUnknown {
                timeout,
                retry_safe,
                detail,
            } => {
                if *timeout {
                    f.write_str("Discord did not answer in time")?;
                } else {
                    write!(f, "Discord's answer was lost ({detail})")?;
                }
                f.write_str("; the write may or may not have been done")?;
                if *retry_safe {
                    f.write_str(": send it again with the same Idempotency-Key")
                } else {
                    f.write_str(
                        ": check Discord's state before doing it again, with a new Idempotency-Key",
                    )
                }
            }
            ApiError::Performed { .. } => f.write_str(
                "Discord did the write, but its answer was lost on the way; look the result up \
                 in Discord",
            ),
            ApiError::KeyInUse { .. } => f.write_str(
                "a request with this Idempotency-Key is still running; retry after the given time",
            ),
            ApiError::KeyReused => f.write_str(
                "this Idempotency-Key was used for a different request (method, route, IDs or \
                 body); use a new key",
            ),
            ApiError::UnsupportedMediaType(message) => f.write_str(message),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::Unavailable(match error {
            StoreError::Full => "the session limit is reached; try again later or ask the \
                                 operator to raise --max-sessions"
                .into(),
            StoreError::BotFull { limit } => format!(
                "this bot token has {limit} sessions already, the most --max-sessions-per-bot \
                 allows; log out sessions it no longer needs, or ask the operator to raise it"
            ),
            StoreError::Unavailable(reason) => {
                format!("the session store is unavailable ({reason}); retry shortly")
            }
        })
    }
}

impl From<Refusal> for ApiError {
    fn from(why: Refusal) -> ApiError {
        match why {
            Refusal::BadRequest(message) => ApiError::BadRequest(message),
            Refusal::LengthRequired => ApiError::LengthRequired,
            Refusal::PayloadTooLarge { limit } => ApiError::PayloadTooLarge { limit },
            Refusal::HeadTooLarge { limit } => ApiError::HeadTooLarge { limit },
            Refusal::TooManyConnections => {
                ApiError::Unavailable("too many open connections; try again shortly".into())
            }
            Refusal::Panicked => ApiError::Internal,
        }
    }
}

impl From<discord::Error> for ApiError {
    fn from(error: discord::Error) -> ApiError {
        match error {
            discord::Error::TokenRejected => ApiError::TokenRejected,
            discord::Error::RateLimited {
                message,
                retry_after,
            } => ApiError::RateLimited {
                message: message.into(),
                retry_after,
            },
            discord::Error::Forbidden {
                message,
                code,
                cached,
            } => ApiError::Forbidden {
                message,
                code,
                cached,
            },
            discord::Error::NotFound {
                message,
                code,
                cached,
            } => ApiError::NotFound {
                message,
                code,
                cached,
            },
            held @ discord::Error::HeldBack => ApiError::Unavailable(held.to_string()),
            blocked @ discord::Error::HostBlocked { retry_after } => ApiError::RateLimited {
                message: blocked.to_string(),
                retry_after,
            },
            discord::Error::BadAnswer(message) => ApiError::BadGateway(message),
            discord::Error::Timeout => ApiError::GatewayTimeout,
            // The shared limits live in the same Redis as the sessions.
            discord::Error::ClusterUnreachable(reason) => StoreError::Unavailable(reason).into(),
            discord::Error::Rejected { status, body } => ApiError::DiscordRejected {
                status,
                rejection: body,
            },
            discord::Error::OutcomeUnknown {
                timeout,
                retry_safe,
                detail,
            } => ApiError::OutcomeUnknown {
                timeout,
                retry_safe,
                detail,
            },
            discord::Error::Performed { .. } => ApiError::Performed { retry_safe: false },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(err: &ApiError) -> serde_json::Value {
        serde_json::from_slice(&err.to_response().body).unwrap()
    }

    #[test]
    fn every_error_is_a_json_object_with_an_error_string() {
        let all = [
            ApiError::bad_request("x"),
            ApiError::Unauthorized("x"),
            ApiError::TokenRejected,
            ApiError::Forbidden {
                message: "x".into(),
                code: Some(50001),
                cached: true,
            },
            ApiError::not_found("x"),
            ApiError::MethodNotAllowed { allow: "GET" },
            ApiError::LengthRequired,
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::HeadTooLarge { limit: 1 },
            ApiError::RateLimited {
                message: "x".into(),
                retry_after: Duration::from_millis(1),
            },
            ApiError::Internal,
            ApiError::BadGateway("x".into()),
            ApiError::Unavailable("x".into()),
            ApiError::GatewayTimeout,
            ApiError::DiscordRejected {
                status: 400,
                rejection: discord::error::Rejection {
                    message: "x".into(),
                    code: Some(50035),
                    errors: None,
                },
            },
            ApiError::OutcomeUnknown {
                timeout: true,
                retry_safe: true,
                detail: "x".into(),
            },
            ApiError::Performed { retry_safe: false },
            ApiError::KeyInUse {
                retry_after: Duration::from_secs(1),
            },
            ApiError::KeyReused,
            ApiError::UnsupportedMediaType("x"),
        ];
        for err in all {
            let response = err.to_response();
            assert_eq!(response.status, err.status());
            assert!(body(&err)["error"].is_string(), "{err:?}");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_header(Duration::from_millis(64_570)), 65);
        assert_eq!(retry_after_header(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_header(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_header(Duration::ZERO), 1);
    }

    #[test]
    fn discord_code_is_passed_on() {
        let err = ApiError::Forbidden {
            message: "no".into(),
            code: Some(50013),
            cached: false,
        };
        assert_eq!(body(&err)["code"], 50013);
        assert!(body(&err).get("cached").is_none());
    }

    #[test]
    fn a_refusal_given_again_without_asking_discord_says_cached() {
        let err = ApiError::Forbidden {
            message: "no".into(),
            code: Some(50001),
            cached: true,
        };
        assert_eq!(body(&err)["cached"], true);
        assert_eq!(body(&err)["code"], 50001);
    }
}
