//! store: what the service remembers about its clients: sessions behind the
//! `SessionStore` seam (`memory`: this process only; `durable`: memory
//! written through to an SQLite file in `--data-dir`; `redis`: shared by
//! every instance), and the sealing that keeps secrets useless at rest
//! (`seal`).
//! The cluster's shared Discord limits live here too
//! (`redis::cluster`), because they are Redis state, behind the trait
//! `discord::cluster` defines.
//!
//! Owns: session IDs, their expiry and `--max-sessions`; every byte written
//! to Redis.
//!
//! Architecture invariants:
//! - imports nothing from `api` or `http`: it knows no request, status code
//!   or JSON body; `api::error` turns a `StoreError` into one;
//! - a session holds nothing but its bot (`Arc<Bot>`) and its last use;
//! - nothing leaves this process in clear: a session ID is stored only as
//!   a keyed hash, a token only sealed (`seal`), in Redis as on disk;
//! - a request's session lookup reads memory only, never the disk;
//! - a full session ID is never logged, only `SessionId::prefix`.

pub mod durable;
pub mod idempotency;
pub mod memory;
pub mod redis;
pub mod seal;
pub mod sessions;
pub mod tickets;

pub use durable::DurableStore;
pub use memory::MemoryStore;
pub use sessions::{SessionId, SessionStore, StoreError};
