//! discord: everything about talking to Discord's REST API on behalf of a
//! bot: the calls (`route`), the client that sends them (`client`) over our
//! own pooled TCP (`transport`), the bot entries that hold tokens (`bots`),
//! Discord's rate limits (`ratelimit`, and the seam to the cluster's shared
//! ones, `cluster`), the host's invalid-request budget (`guard`, and the
//! refusals answered again without asking, `refusals`), Discord's
//! IDs (`snowflake`), percent-encoding (`percent`) and how a call fails
//! (`error`). `gateway` is Discord's other side: one WebSocket connection
//! per (bot, shard) on a thread of its own, passing dispatches to an
//! `EventSink` it defines.
//!
//! Owns: every Discord URL, every token, every rate-limit decision.
//!
//! Architecture invariants:
//! - imports nothing from `api`, `http`, `store` or `config`: it knows no
//!   HTTP status of ours, no session and no command line (`main` hands it
//!   numbers). Shared state reaches it through traits it defines
//!   (`cluster::ClusterLimiter`, `guard::SharedCount`);
//! - only `route` knows Discord paths, and a `Route` holds `Snowflake`s and
//!   integers only, so client text never reaches a URL;
//! - a token leaves `bots` only as the `Authorization` header `client`
//!   sends, as the `token` of the Gateway's Identify and Resume (never
//!   logged), and as the bytes `store` seals (never in clear at rest);
//! - a request is sent again only as its `write::Resend` allows: a write
//!   whose answer was lost is re-sent only when sending twice cannot do
//!   twice (PUT, DELETE, a message with a nonce); otherwise the outcome is
//!   reported unknown, never guessed.

pub mod bots;
pub mod catalog;
pub mod client;
pub mod cluster;
pub mod emoji;
pub mod error;
pub mod gateway;
pub mod guard;
pub mod percent;
pub mod ratelimit;
pub mod refusals;
pub mod route;
pub mod singleflight;
pub mod snowflake;
pub mod transport;
pub mod write;

pub use client::{Discord, USER_AGENT};
pub use error::Error;
pub use route::{Cursor, GUILDS_PAGE, MEMBERS_PAGE, MESSAGES_PAGE, Route};
pub use snowflake::Snowflake;
pub use write::{Body, Outgoing, Reply, Resend};
