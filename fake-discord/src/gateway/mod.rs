//! A fake Discord Gateway: the WebSocket side of Discord, for testing a
//! Gateway client against Discord's documented protocol rather than its
//! own idea of it.
//!
//! Sources: `developers/events/gateway.mdx`, `developers/events/gateway-events.mdx`,
//! `developers/topics/opcodes-and-status-codes.mdx` and
//! `developers/resources/application.mdx` of discord/discord-api-docs @
//! c98d64bc (the version `shared/GATEWAY-NOTES.md` cites by line), and the
//! OpenAPI spec for the REST shapes. Each module cites the lines it follows.
//!
//! Layout (one concern each):
//! - `hub`: connections, sessions, sequence numbers, replay buffers,
//!   budgets, identify buckets, stats; the [`Sink`] REST writes publish to;
//! - `conn`: one thread per WebSocket connection (tungstenite, blocking);
//! - `identify`: what is checked in the query and the client's payloads,
//!   with the close code of each refusal;
//! - `intents`: intent bits, event → intent routing, MESSAGE_CONTENT;
//! - `payloads`: READY, GUILD_CREATE and message-event bodies;
//! - `compress`: zlib-stream;
//! - `rest`: `GET /gateway`, `/gateway/bot`, `/applications/@me`;
//! - `control`: `/_fake/gateway/…`;
//! - `tls`: `wss://` on both listeners when given a certificate.
//!
//! Listeners: the Gateway does not share the REST listener. `main.rs` binds
//! two more loopback sockets on `--host`: the one `GET /gateway(/bot)`
//! names as `url`, and a second one READY names as `resume_gateway_url`,
//! so a test can tell whether a client resumed on the URL Discord asked
//! for (gateway.mdx L259), and can take that one down on its own. Both
//! speak the same protocol, and both speak TLS (`wss://` URLs) when
//! `--gateway-tls-cert` and `--gateway-tls-key` are given.

pub mod compress;
pub mod conn;
pub mod control;
pub mod hub;
pub mod identify;
pub mod intents;
pub mod payloads;
pub mod rest;
pub mod tls;

pub use hub::{Event, Gateway, GatewayOptions, Sink, Via};
