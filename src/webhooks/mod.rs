//! webhooks: a bot's events POSTed to HTTPS endpoints its sessions
//! registered (API.md, "Webhooks"; issue 14), for receivers that cannot hold
//! a stream open.
//!
//! Owns: how a delivery is signed (`sign`: Standard Webhooks headers and
//! `whsec_` secrets) and where one may go (`ssrf`: the address policy, the
//! URL check, the checking resolver and the agent deliveries use). The
//! webhook subscriptions, the delivery queue with its retries and the
//! delivery log will live here too, reaching the store and the events
//! through traits this folder defines.
//!
//! Architecture invariants:
//! - imports nothing from `api`, `http`, `store`, `events`, `discord` or
//!   `config`: it knows no HTTP status of ours, no session, no Discord call
//!   and no command line (`main` hands it the allow list and the flags);
//! - never connects to an address [`ssrf::allowed`] refused: every delivery
//!   goes through [`ssrf::delivery_agent`], whose resolver returns checked
//!   addresses only, follows no redirect and uses no proxy;
//! - never sends a Discord token anywhere, and never writes a webhook secret
//!   to a log, an error or a `Debug` (only [`sign::Secret::reveal`] shows
//!   one, for the answer that hands it to its owner and for the store to
//!   seal);
//! - never signs anything but the exact bytes it sends.

pub mod sign;
pub mod ssrf;

// Full paths, the way files inside `discord/` name their siblings.
pub use crate::webhooks::sign::{Headers, Keys, MessageId, Secret, SecretError};
pub use crate::webhooks::ssrf::{Cidr, CidrError, Refusal, Target, check_url, delivery_agent};
