//! write: one request to Discord as a value, for any method: what
//! `Discord::call` sends, and what it may do when the answer is lost.
//!
//! Why a value and not a method per verb: the rate limits, the refusal
//! cache, the host guard and the re-send rule are the same for every call;
//! only the method, the body and the re-send rule differ.
//!
//! Architecture invariant: `path` is always built by this service from
//! validated parts (`route`, `catalog`), never copied from a client.

use crate::discord::client::{Failure, Stage};
use crate::discord::error::Error;
use crate::discord::ratelimit::RouteKey;

/// May a request that failed be sent again? (API.md, "Never twice".)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// A GET: again once after a 5xx or a dropped connection; a timeout is
    /// answered 504 at once.
    Read,
    /// Sending twice cannot do twice: a PUT, a DELETE, or a message send
    /// that carries a nonce with `enforce_nonce`. Again once whenever the
    /// answer was lost.
    Idempotent,
    /// Any other write: again only when Discord never had the request.
    NotSentOnly,
}

impl Resend {
    pub(crate) fn allows(self, failure: &Failure) -> bool {
        match (self, failure.stage) {
            (_, Stage::NotSent) => true,
            (Resend::Read, Stage::Lost { timeout }) => !timeout,
            (Resend::Read, Stage::Answered(_)) => true,
            (Resend::Idempotent, Stage::Lost { .. }) => true,
            (Resend::Idempotent | Resend::NotSentOnly, Stage::Answered(_)) => false,
            (Resend::NotSentOnly, Stage::Lost { .. }) => false,
        }
    }
}

/// A request body: its content type and bytes, sent byte for byte again
/// on a re-send.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

/// One request to Discord.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub method: &'static str,
    /// Path and query below the API base.
    pub path: String,
    /// The rate-limit identity of the call.
    pub key: RouteKey,
    pub body: Option<Body<'a>>,
    /// `X-Audit-Log-Reason`, already percent-encoded.
    pub audit_reason: Option<&'a str>,
    pub resend: Resend,
    /// Hand Discord's status, body and rate-limit headers back as they
    /// are, whatever the status (the passthrough), instead of turning
    /// refusals into `Error`s.
    pub keep_headers: bool,
}

impl<'a> Outgoing<'a> {
    pub fn read(path: String, key: RouteKey) -> Outgoing<'a> {
        Outgoing {
            method: "GET",
            path,
            key,
            body: None,
            audit_reason: None,
            resend: Resend::Read,
            keep_headers: false,
        }
    }

    /// The request head ureq sends.
    pub(crate) fn head(&self, url: &str, authorization: String) -> ureq::http::request::Builder {
        let mut builder = ureq::http::Request::builder()
            .method(self.method)
            .uri(url)
            .header("Authorization", authorization);
        if let Some(body) = &self.body {
            builder = builder.header("Content-Type", body.content_type);
        }
        if let Some(reason) = self.audit_reason {
            builder = builder.header("X-Audit-Log-Reason", reason);
        }
        builder
    }

    /// The body bytes to send: none for GET and DELETE without one; PUT,
    /// POST and PATCH always send one (empty when there is none: Discord
    /// wants `Content-Length: 0`).
    pub(crate) fn body_bytes(&self) -> Option<&'a [u8]> {
        match (self.body, self.method) {
            (Some(body), _) => Some(body.bytes),
            (None, "GET" | "DELETE") => None,
            (None, _) => Some(&[]),
        }
    }
}

/// Discord's answer to a call: status, body and (with `keep_headers`) its
/// rate-limit headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Error {
    /// Whether the request was stopped before it reached Discord: by the
    /// rate limits (ours, or Discord's 429: "a 429 means the request was
    /// not performed"), the host guard, the cluster's limits, or a refusal
    /// given again from the cache.
    pub(crate) fn refused_before_sending(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. }
                | Error::HostBlocked { .. }
                | Error::HeldBack
                | Error::ClusterUnreachable(_)
                | Error::Forbidden { cached: true, .. }
                | Error::NotFound { cached: true, .. }
        )
    }
}
