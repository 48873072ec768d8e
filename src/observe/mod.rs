//! observe: what the service tells its operator: Prometheus metrics
//! (`metrics`) and log lines (`logging`).
//!
//! Owns: the process-wide metric registry and the logger, with its buffer
//! and flush thread.
//!
//! Architecture invariants: imports nothing from the rest of the crate, so
//! every layer may report through it; no metric label and no log line
//! carries a token, a full session ID or a client's path (labels are route
//! templates and status classes); the logger never admits another crate's
//! records (ureq's trace lines carried the token).

pub mod logging;
pub mod metrics;
