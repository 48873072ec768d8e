//! http: the HTTP/1.1 front: sockets, framing, limits (`server`); who a
//! client is and how fast it may ask (`clients`); which browser origins may
//! read answers (`cors`).
//!
//! Owns: every socket a client opens, every byte read from or written to
//! one, the `--workers` permits, and every bound on a client's request (head,
//! body, time).
//!
//! Architecture invariants:
//! - imports nothing from `api`, `store` or `discord`: the front knows HTTP,
//!   not routes, sessions or Discord. It hands a complete `Request` to a
//!   `server::Handler` and writes the `Response` it gets back; when it turns
//!   a request away itself it says why (`server::Refusal`) and the handler
//!   writes the answer, so a 413 looks like any other error of the API;
//! - no buffer grows past its limit and every read and write has a deadline.

pub mod clients;
pub mod cors;
pub mod server;
