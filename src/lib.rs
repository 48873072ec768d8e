//! discord-bot-backend: run many Discord bots behind one REST API.
//!
//! Clients log in with a bot token and get a session ID; the service keeps the
//! token, calls Discord's REST API for them within the bot's rate limits, and
//! returns Discord's JSON. `ARCHITECTURE.md` has the map; the HTTP contract is
//! `API.md` in the shared docs. `main.rs` wires these modules together.
//!
//! The folders are layers, each importing only from those listed after it:
//! `api` (routes and handlers) → `http` (the HTTP/1.1 front), `store`
//! (sessions, Redis) and `events` (what the Gateway delivers) → `discord` (the REST client, its limits and bots) →
//! `observe` (metrics, logging). `config` sits beside `main` and may import
//! any of them; none imports it.

pub mod api;
pub mod config;
pub mod discord;
pub mod events;
pub mod http;
pub mod observe;
pub mod store;
pub mod webhooks;
