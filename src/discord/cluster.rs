//! cluster: the seam through which `client` asks the other instances before
//! it sends (`--redis-url`). Each instance orders its own requests with its
//! local `ratelimit::BotLimiter`; two instances serving one bot would each
//! allow the full limit, so right before a request leaves, `client` also asks
//! a `ClusterLimiter` and tells it how the request ended.
//!
//! The implementation lives with the shared state it keeps
//! (`store::redis::cluster`); this module only says what the check is, so
//! `discord` needs nothing from `store`.

use std::time::Duration;

use crate::discord::bots::Bot;
use crate::discord::ratelimit::{Observed, RouteKey};

/// What the cluster says about sending one request now.
#[derive(Debug)]
pub enum Admission {
    /// Send it; report what Discord said with `record`.
    Go(Ticket),
    /// Ask again after this long.
    Wait(Duration),
}

/// The cluster's record of one admitted request. Only the limiter that
/// issued it reads its fields; `client` hands it back unread.
#[derive(Debug)]
pub struct Ticket {
    /// Where the limiter keeps the request's bucket.
    pub route_key: String,
    pub mode: Mode,
    /// For a known bucket: what the shared count left after this request.
    pub left: i64,
    /// Where the request's entry in the bot's global log is, and the entry.
    pub log_key: String,
    pub log_entry: String,
}

/// How the cluster admitted a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The bucket was unknown or expired: the one request sent to learn it.
    Probe,
    /// Counted down from the bucket's known `remaining`.
    Known,
    /// The route's answers carried no rate-limit headers.
    Unlimited,
}

/// How a request admitted by the cluster ended.
pub enum Answer<'a> {
    /// Discord answered (not 429), with these headers; `success` for a 2xx.
    Answered { seen: &'a Observed, success: bool },
    /// A 429: for the route (`global` false) or the whole bot.
    RateLimited { retry_after: Duration, global: bool },
    /// No answer (timeout, dropped connection).
    Lost,
}

/// The shared state could not be asked (Redis is down); the request is not
/// sent. The text is a reason a client may read: it names no key or URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreachable(pub String);

/// The cluster-wide check `client` makes right before sending.
pub trait ClusterLimiter: Send + Sync {
    fn admit(&self, bot: &Bot, route: RouteKey) -> Result<Admission, Unreachable>;
    fn record(&self, ticket: &Ticket, answer: Answer<'_>);
}
