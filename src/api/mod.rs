//! api: the service's HTTP API of `API.md`: the route table (`routes`), the
//! handler the front calls (`handler`), the endpoints by resource (`auth`,
//! `reads`, `writes`, and Discord's own API behind `passthrough`), the
//! `Idempotency-Key` rules (`idempotency`), upload bodies (`multipart`), query parsing (`query`), the one error type (`error`) and the
//! OpenAPI document (`openapi.json`).
//!
//! Owns: every path, every status code and every JSON body the service
//! writes.
//!
//! Architecture invariants:
//! - the only layer that sees all the others: it turns a `Request` into
//!   `Route`s for `discord` and sessions in `store`, and nothing below
//!   imports it;
//! - never calls ureq or builds a Discord URL (that is `discord::route`);
//! - only `error` picks an error status: endpoints return `ApiError`, and
//!   the lower layers' errors are converted there.

pub mod auth;
pub mod error;
pub mod events;
pub mod handler;
pub mod idempotency;
pub mod multipart;
pub mod passthrough;
pub mod query;
pub mod reads;
pub mod routes;
pub mod tickets;
pub mod writes;

pub use error::ApiError;
pub use handler::Api;
pub use routes::{OPENAPI, route_table};
