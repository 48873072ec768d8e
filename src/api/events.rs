//! events: `GET /api/events`, a bot's events as a Server-Sent Events stream
//! (API.md, "Events"): filters, `Last-Event-ID` resume, markers, keep-alive
//! comments, and the end of the stream when its session ends.
//!
//! The stream runs on its connection's thread after the handler returned
//! (`http::server::StreamBody`), so it holds no worker; it reads the bot's
//! ring, where each event is a frame rendered once.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::api::error::ApiError;
use crate::api::query::Query;
use crate::events::{BotEvents, Frame, Read, Subscriber};
use crate::http::server::{Request, Response, StreamBody, StreamOut};

/// API.md: "A comment line at least every 15 seconds keeps idle streams
/// open".
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How often a stream looks at its session and at shutdown: "Logout or
/// expiry of the session ends its streams within a second".
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Frames written per read of the ring: one write of many frames, not one
/// per frame, and a bound on what a stream holds.
const BATCH: usize = 256;
/// Bytes of frames a stream takes per read of the ring (at least one
/// frame). A stream whose client stopped reading sits in a blocked write
/// holding its batch while the ring drops those frames: without this, 256
/// large frames (a big guild's GUILD_CREATE) each, for every stalled
/// client, on top of the ring's 64 MiB.
const BATCH_BYTES: usize = 256 * 1024;
/// Reconnection delay a browser's `EventSource` uses (`retry:`).
const RETRY_MS: u32 = 3000;
/// Event type names: Discord's dispatch names are upper case and `_`.
const MAX_TYPES: usize = 64;

/// What a stream sends: every marker, and the events its filters let
/// through.
pub(super) struct Filters {
    types: Option<HashSet<String>>,
    guild: Option<u64>,
    channel: Option<u64>,
}

impl Filters {
    pub(super) fn parse(query: &Query) -> Result<Filters, ApiError> {
        let types = match query.text("types") {
            None => None,
            Some(list) => {
                let names: HashSet<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect();
                let valid = names.len() <= MAX_TYPES
                    && names.iter().all(|n| {
                        n.len() <= 64 && n.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                    });
                if !valid {
                    return Err(ApiError::bad_request(
                        "`types` must be a comma-separated list of Discord dispatch names such as \
                         MESSAGE_CREATE,MESSAGE_DELETE",
                    ));
                }
                Some(names)
            }
        };
        Ok(Filters {
            types,
            guild: query.snowflake("guildId")?.map(|id| id.get()),
            channel: query.snowflake("channelId")?.map(|id| id.get()),
        })
    }

    fn passes(&self, frame: &Frame) -> bool {
        if frame.marker {
            return true;
        }
        self.types.as_ref().is_none_or(|t| t.contains(&*frame.kind))
            && self.guild.is_none_or(|g| frame.guild_id == Some(g))
            && self.channel.is_none_or(|c| frame.channel_id == Some(c))
    }
}

/// The ID a reconnecting client last saw: `Last-Event-ID`, or
/// `lastEventId=` (what an `EventSource` cannot send as a header).
/// Anything that is not one of ours counts as an ID never issued.
pub(super) fn last_event_id(request: &Request, query: &Query) -> Option<Option<u64>> {
    let raw = request
        .header("last-event-id")
        .or_else(|| query.text("lastEventId"))?;
    Some(raw.trim().parse().ok())
}

/// One open stream.
pub(super) struct EventStream {
    pub(super) bot: Arc<BotEvents>,
    pub(super) _subscriber: Subscriber,
    pub(super) filters: Filters,
    /// `Some`: the client reconnected with this ID (`None` inside: not one
    /// of ours).
    pub(super) last_seen: Option<Option<u64>>,
    /// Whether the stream's session is still live.
    pub(super) alive: Box<dyn Fn() -> bool + Send>,
}

impl EventStream {
    pub(super) fn response(self) -> Response {
        let mut response = Response::streaming("text/event-stream", Box::new(self));
        response.header("Cache-Control", "no-store");
        response.header("X-Accel-Buffering", "no");
        response
    }
}

impl StreamBody for EventStream {
    fn run(self: Box<Self>, out: &mut StreamOut<'_>) {
        let _ = self.stream(out);
    }
}

impl EventStream {
    fn stream(&self, out: &mut StreamOut<'_>) -> std::io::Result<()> {
        out.write_all(format!("retry: {RETRY_MS}\n\n").as_bytes())?;
        let ring = &self.bot.ring;
        let mut cursor = match self.last_seen {
            None => ring.last_id(),
            Some(seen) => match seen.map_or(Err(ring.last_id()), |seen| ring.start(Some(seen))) {
                Ok(cursor) => cursor,
                Err(resume_at) => {
                    let data = json!({"lastEventId": seen.map(|s| s.to_string()), "resumedAfter": resume_at.to_string()});
                    out.write_all(&self.bot.stream_marker(resume_at, "stream.gap", &data))?;
                    resume_at
                }
            },
        };
        let mut written = Instant::now();
        let mut checked = Instant::now();
        loop {
            if out.stopping() {
                return Ok(());
            }
            if checked.elapsed() >= CHECK_EVERY {
                checked = Instant::now();
                if !(self.alive)() {
                    return Ok(());
                }
            }
            match ring.read(cursor, BATCH, CHECK_EVERY) {
                Read::Gap { resume_at } => {
                    // Events were dropped before this client read them: it
                    // reads too slowly. It reconnects with Last-Event-ID.
                    let data = json!({"resumeAfter": cursor.to_string()});
                    let _ =
                        out.write_all(&self.bot.stream_marker(resume_at, "stream.overflow", &data));
                    return Ok(());
                }
                Read::Frames(frames) if frames.is_empty() => {
                    if written.elapsed() >= KEEPALIVE {
                        out.write_all(b": keep-alive\n\n")?;
                        written = Instant::now();
                    }
                }
                Read::Frames(mut frames) => {
                    frames.truncate(within_budget(&frames));
                    cursor = frames.last().map_or(cursor, |f| f.id);
                    let batch: Vec<std::io::IoSlice<'_>> = frames
                        .iter()
                        .filter(|f| self.filters.passes(f))
                        .map(|f| std::io::IoSlice::new(&f.bytes))
                        .collect();
                    if !batch.is_empty() {
                        write_all_vectored(out, batch)?;
                        written = Instant::now();
                    }
                }
            }
        }
    }
}

/// How many of `frames`, from the first, fit in `BATCH_BYTES`; never 0,
/// so a frame larger than the budget still goes out, alone.
fn within_budget(frames: &[Arc<Frame>]) -> usize {
    let mut bytes = 0;
    let fit = frames
        .iter()
        .take_while(|f| {
            bytes += f.bytes.len();
            bytes <= BATCH_BYTES
        })
        .count();
    fit.max(1)
}

/// Writes every slice, in as few system calls as the socket takes.
fn write_all_vectored(
    out: &mut impl Write,
    mut slices: Vec<std::io::IoSlice<'_>>,
) -> std::io::Result<()> {
    let mut parts = &mut slices[..];
    while !parts.is_empty() {
        match out.write_vectored(parts) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Read, Ring};

    fn frames(sizes: &[usize]) -> Vec<Arc<Frame>> {
        let ring = Ring::new(1);
        for &size in sizes {
            ring.push("MESSAGE_CREATE", None, None, false, |_| vec![b'x'; size]);
        }
        match ring.read(0, BATCH, Duration::ZERO) {
            Read::Frames(frames) => frames,
            Read::Gap { .. } => unreachable!("nothing dropped"),
        }
    }

    #[test]
    fn a_batch_holds_at_most_its_byte_budget() {
        let small = frames(&[100 * 1024, 100 * 1024, 100 * 1024]);
        assert_eq!(within_budget(&small), 2);
    }

    #[test]
    fn a_frame_over_the_budget_still_goes_alone() {
        let large = frames(&[BATCH_BYTES * 2, 10]);
        assert_eq!(within_budget(&large), 1);
    }
}
