//! discord-bot-backend: run many Discord bots behind one REST API.
//!
//! Clients log in with a bot token and get a session ID; the service keeps the
//! token, calls Discord's REST API for them within the bot's rate limits, and
//! returns Discord's JSON. `ARCHITECTURE.md` has the map; the HTTP contract is
//! `API.md` in the shared docs. `main.rs` wires these modules together.

pub mod bots;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod cors;
pub mod discord;
pub mod error;
pub mod guard;
pub mod logging;
pub mod metrics;
pub mod query;
pub mod ratelimit;
pub mod redis_store;
pub mod routes;
pub mod seal;
pub mod server;
pub mod sessions;
pub mod snowflake;
pub mod transport;
