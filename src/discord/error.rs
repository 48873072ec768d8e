//! error: how a call to Discord can fail, in Discord's terms. `api::error`
//! turns each into a status and a JSON body; this module picks none.

use std::fmt;
use std::time::Duration;

const HELD_BACK: &str = "this host is close to Discord's limit of 10,000 invalid requests per \
     10 minutes, and Discord refused this call last time: it is not sent again for now; retry \
     in a few minutes";
const HOST_BLOCKED: &str = "Discord's edge (Cloudflare) is refusing this host's requests for \
     every bot; retry after the given time";

/// Why `Discord::call` returned no answer. Every text is one a client may read:
/// none carries the token, a URL or a session.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Discord answered 401 for the bot's token (now or before): the token
    /// was reset or the bot deleted.
    TokenRejected,
    /// The bot is at a rate limit whose wait ends after the request's wait
    /// budget, or Discord kept answering 429. `retry_after` is exact.
    RateLimited {
        message: &'static str,
        retry_after: Duration,
    },
    /// Discord answered 403: a missing permission or privileged intent.
    /// `code` is Discord's JSON error code; `cached` when this is Discord's
    /// earlier answer, given again without asking (`refusals`).
    Forbidden {
        message: String,
        code: Option<u64>,
        cached: bool,
    },
    /// Discord answered 404: the guild or channel is unknown to the bot.
    NotFound {
        message: String,
        code: Option<u64>,
        cached: bool,
    },
    /// The host is past `--invalid-request-threshold`, and Discord refused
    /// this call last time: it is not sent.
    HeldBack,
    /// Discord's edge (Cloudflare) refuses every request from this host
    /// until `retry_after` from now: no bot sends before.
    HostBlocked { retry_after: Duration },
    /// Discord was unreachable, answered 5xx or an unexpected status, or
    /// sent a body that is not JSON.
    BadAnswer(String),
    /// Discord did not answer within `--upstream-timeout`.
    Timeout,
    /// The limits shared with other instances could not be checked, so the
    /// request was not sent.
    ClusterUnreachable(String),
    /// Discord refused a write as malformed (a 400 and kin), with its
    /// reasons: the client's to fix.
    Rejected { status: u16, body: Rejection },
    /// A write was sent and its answer lost (`timeout`: none came in time),
    /// and it may not be sent again: Discord may or may not have acted.
    /// `retry_safe` when sending it again cannot do it twice (its
    /// `Resend::Idempotent`: a PUT, a DELETE, a message with its nonce).
    OutcomeUnknown {
        timeout: bool,
        retry_safe: bool,
        detail: String,
    },
    /// Discord answered a write with this 2xx status, then its body was
    /// lost: the write was done.
    Performed { status: u16 },
}

/// What Discord said when it refused a request: its message (bounded), JSON
/// error code and `errors` tree (Discord's field-by-field reasons).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub message: String,
    pub code: Option<u64>,
    pub errors: Option<serde_json::Value>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TokenRejected => f.write_str("Discord rejected the bot token"),
            Error::RateLimited { message, .. } => f.write_str(message),
            Error::Forbidden { message, .. }
            | Error::NotFound { message, .. }
            | Error::BadAnswer(message) => f.write_str(message),
            Error::Timeout => f.write_str("Discord did not answer within the upstream timeout"),
            Error::HeldBack => f.write_str(HELD_BACK),
            Error::HostBlocked { .. } => f.write_str(HOST_BLOCKED),
            Error::ClusterUnreachable(reason) => {
                write!(f, "the shared rate limits are unavailable ({reason})")
            }
            Error::Rejected { body, .. } => {
                write!(f, "Discord refused the request: {}", body.message)
            }
            Error::OutcomeUnknown { detail, .. } => f.write_str(detail),
            Error::Performed { status } => {
                write!(f, "Discord answered {status}, then its answer was lost")
            }
        }
    }
}
