//! inflate: `zlib-stream` transport compression (GW L547-551).
//!
//! Why it exists: with `compress=zlib-stream` every message Discord sends is
//! a piece of one deflate stream kept for the whole connection; a message
//! is complete when the bytes so far end with `00 00 ff ff` (a sync flush).
//! One inflater per connection, reset on every new connection (the server
//! starts a new stream); the dictionary it keeps is what makes small
//! messages cheap on the wire.
//!
//! Why it parks: the dictionary is the last 32 KiB of inflated output
//! (deflate's back-references reach that far), and an inflater holds it
//! plus its tables, about 43 KiB, however rarely its bot hears anything.
//! Most bots are quiet most of the time, so an idle connection keeps the
//! same 32 KiB as a small raw-deflate stream instead (`park`), typically a
//! few KiB of Discord's JSON. A sync flush leaves the stream on a byte
//! boundary between blocks, and the only state carried across it is that
//! window, so a fresh raw inflater that has inflated the parked stream (its
//! output is the window, discarded) continues Discord's stream exactly
//! where the old one stopped. While live, the same window is kept beside
//! the inflater (`History`): that is what parking compresses.
//!
//! Invariants: the inflated size of one message is capped (`max`), because
//! tungstenite's `max_message_size` only bounds the compressed bytes and a
//! few KiB can inflate to gigabytes; buffers grown by a large message
//! (READY, a big GUILD_CREATE) are given back afterwards, so an idle
//! connection does not keep a burst's memory; a parked stream inflates back
//! to exactly the window it was made from (checked, else `Corrupt`).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use parking_lot::Mutex;

/// The zlib sync-flush marker that ends each message.
const SUFFIX: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Buffers larger than this are freed after use; below it they are kept,
/// so ordinary events reuse them.
const KEEP: usize = 16 * 1024;
/// First output allocation, then doubled as needed.
const FIRST_OUT: usize = 1024;
/// Deflate's window: how far back a message may refer.
const WINDOW: usize = 32 * 1024;

pub struct Inflater {
    stream: Stream,
    /// Compressed bytes of a message split over several WebSocket messages.
    pending: Vec<u8>,
    out: Vec<u8>,
    history: History,
    max: usize,
}

enum Stream {
    /// A new connection: nothing received, nothing allocated.
    Start,
    Live(Decompress),
    /// Idle: the window as a raw-deflate stream (see the module doc).
    Parked(Vec<u8>),
}

#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// The message inflates past `max` bytes.
    TooLarge,
    /// The stream is not valid zlib.
    Corrupt,
}

impl Inflater {
    pub fn new(max: usize) -> Inflater {
        Inflater {
            stream: Stream::Start,
            pending: Vec::new(),
            out: Vec::new(),
            history: History::default(),
            max,
        }
    }

    /// A new connection: a new stream.
    pub fn reset(&mut self) {
        self.stream = Stream::Start;
        self.pending = Vec::new();
        self.out = Vec::new();
        self.history = History::default();
    }

    /// Takes one binary WebSocket message; returns the inflated payload once
    /// a whole one has arrived.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<&[u8]>, InflateError> {
        if self.out.capacity() > KEEP {
            self.out = Vec::new();
        }
        if self.pending.capacity() > KEEP && self.pending.is_empty() {
            self.pending = Vec::new();
        }
        // Almost every message is whole: inflate it in place, no copy.
        let whole = self.pending.is_empty() && bytes.ends_with(&SUFFIX);
        if !whole {
            self.pending.extend_from_slice(bytes);
            if self.pending.len() > self.max {
                self.pending = Vec::new();
                return Err(InflateError::TooLarge);
            }
            if !self.pending.ends_with(&SUFFIX) {
                return Ok(None);
            }
        }
        let zlib = live(&mut self.stream, &mut self.history)?;
        let input = if whole { bytes } else { &self.pending[..] };
        let result = inflate(zlib, input, &mut self.out, self.max);
        self.pending.clear();
        result?;
        self.history.append(&self.out);
        Ok(Some(&self.out[..]))
    }

    /// Keeps the stream as a small raw-deflate copy of its window and frees
    /// the inflater and the buffers; the next `push` brings it back. Does
    /// nothing in the middle of a message, or before the first one.
    pub fn park(&mut self) {
        if !matches!(self.stream, Stream::Live(_)) || !self.pending.is_empty() {
            return;
        }
        let Some(parked) = self.history.deflate() else {
            return;
        };
        self.stream = Stream::Parked(parked);
        self.history = History::default();
        self.out = Vec::new();
        self.pending = Vec::new();
        give_back();
    }

    /// Whether the stream is parked.
    pub fn parked(&self) -> bool {
        matches!(self.stream, Stream::Parked(_))
    }
}

/// The live inflater, made or brought back from the parked window.
fn live<'a>(
    stream: &'a mut Stream,
    history: &mut History,
) -> Result<&'a mut Decompress, InflateError> {
    *stream = match std::mem::replace(stream, Stream::Start) {
        Stream::Live(zlib) => Stream::Live(zlib),
        Stream::Start => Stream::Live(Decompress::new(true)),
        Stream::Parked(window) => {
            let mut zlib = Decompress::new(false);
            history.restore(&mut zlib, &window)?;
            Stream::Live(zlib)
        }
    };
    match stream {
        Stream::Live(zlib) => Ok(zlib),
        _ => unreachable!("made live above"),
    }
}

/// glibc keeps freed memory inside its arenas, resident, unless it lies at
/// an arena's top: what parking frees would stay in RSS. `malloc_trim`
/// hands the free pages back; it walks every arena, so at most once a
/// second, by whichever shard parks first.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back() {
    use std::time::{Duration, Instant};
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    let Some(mut last) = LAST.try_lock() else {
        return;
    };
    if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
        return;
    }
    *last = Some(Instant::now());
    // SAFETY: malloc_trim takes no pointer and only releases pages of
    // chunks that are already free.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back() {}

/// The last `WINDOW` bytes of inflated output, in a ring.
#[derive(Default)]
struct History {
    buf: Vec<u8>,
    /// Where the next byte goes once `buf` is full (the oldest byte).
    head: usize,
}

impl History {
    fn append(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(WINDOW)..];
        if self.buf.capacity() < WINDOW {
            self.buf.reserve_exact(WINDOW - self.buf.len());
        }
        let room = WINDOW - self.buf.len();
        let (fill, rest) = bytes.split_at(bytes.len().min(room));
        self.buf.extend_from_slice(fill);
        let mut rest = rest;
        while !rest.is_empty() {
            let n = rest.len().min(WINDOW - self.head);
            self.buf[self.head..self.head + n].copy_from_slice(&rest[..n]);
            self.head = (self.head + n) % WINDOW;
            rest = &rest[n..];
        }
    }

    /// Oldest first.
    fn parts(&self) -> (&[u8], &[u8]) {
        let (newer, older) = self.buf.split_at(self.head);
        (older, newer)
    }

    /// The window as raw deflate, ending in a sync flush (byte-aligned, so
    /// Discord's next block follows it directly).
    fn deflate(&self) -> Option<Vec<u8>> {
        // One compressor for the whole process: about 300 KiB of tables
        // made once, not per park on every shard's thread (the allocator
        // would keep the freed blocks around); parking is rare and short.
        static PARKER: Mutex<Option<Compress>> = Mutex::new(None);
        let mut parker = PARKER.lock();
        let compress = parker.get_or_insert_with(|| Compress::new(Compression::fast(), false));
        compress.reset();
        let (older, newer) = self.parts();
        let mut out = Vec::with_capacity(self.buf.len() / 4 + 64);
        for (part, flush) in [(older, FlushCompress::None), (newer, FlushCompress::Sync)] {
            let mut input = part;
            loop {
                let before = compress.total_in();
                // Not expected with in-memory buffers; the stream stays live.
                compress.compress_vec(input, &mut out, flush).ok()?;
                input = &input[(compress.total_in() - before) as usize..];
                let flushed = !matches!(flush, FlushCompress::Sync) || out.ends_with(&SUFFIX);
                if input.is_empty() && flushed && out.len() < out.capacity() {
                    break;
                }
                out.reserve(out.capacity().max(256));
            }
        }
        out.shrink_to_fit();
        Some(out)
    }

    /// Inflates a parked window into a fresh raw inflater and this ring.
    fn restore(&mut self, zlib: &mut Decompress, window: &[u8]) -> Result<(), InflateError> {
        // One byte of room past the window, so a full window ends with
        // room to spare and anything longer is caught.
        let mut buf = Vec::with_capacity(WINDOW + 1);
        inflate(zlib, window, &mut buf, WINDOW + 1).map_err(|_| InflateError::Corrupt)?;
        if buf.len() > WINDOW {
            return Err(InflateError::Corrupt);
        }
        *self = History::default();
        self.append(&buf);
        Ok(())
    }
}

/// Inflates `input` (whole messages of the stream) into `out`, growing it
/// up to `max` bytes.
fn inflate(
    zlib: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<(), InflateError> {
    out.clear();
    let mut rest = input;
    loop {
        if out.len() == out.capacity() {
            if out.len() >= max {
                return Err(InflateError::TooLarge);
            }
            let grow = out.capacity().max(FIRST_OUT);
            out.reserve(grow.min(max - out.len()));
        }
        let before = zlib.total_in();
        let produced = out.len();
        let status = zlib
            .decompress_vec(rest, out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        let used = (zlib.total_in() - before) as usize;
        rest = &rest[used..];
        let room = out.len() < out.capacity();
        if (rest.is_empty() && room) || status == Status::StreamEnd {
            return Ok(());
        }
        if used == 0 && out.len() == produced && room {
            // No progress with room to spare: the input is not zlib.
            return Err(InflateError::Corrupt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// A server's side of zlib-stream: one compressor, each message sync-flushed.
    fn deflate(c: &mut Compress, msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(msg.len() + 64);
        let mut input = msg;
        loop {
            let before = c.total_in();
            c.compress_vec(input, &mut out, FlushCompress::Sync)
                .unwrap();
            input = &input[(c.total_in() - before) as usize..];
            if input.is_empty() && out.ends_with(&SUFFIX) {
                return out;
            }
            out.reserve(out.capacity().max(64));
        }
    }

    #[test]
    fn messages_of_one_stream_inflate_in_order_even_when_split() {
        let mut c = Compress::new(Compression::default(), true);
        let mut i = Inflater::new(1 << 20);
        let hello = br#"{"op":10,"d":{"heartbeat_interval":41250}}"#;
        assert_eq!(i.push(&deflate(&mut c, hello)).unwrap().unwrap(), hello);
        let big: Vec<u8> = (0..50_000).map(|n| b'a' + (n % 23) as u8).collect();
        let z = deflate(&mut c, &big);
        let (a, b) = z.split_at(z.len() / 2);
        assert_eq!(i.push(a).unwrap(), None);
        assert_eq!(i.push(b).unwrap().unwrap(), &big[..]);
        assert_eq!(i.push(&deflate(&mut c, b"{}")).unwrap().unwrap(), b"{}");
    }

    #[test]
    fn the_inflated_size_is_capped() {
        let mut c = Compress::new(Compression::default(), true);
        let mut i = Inflater::new(10_000);
        let bomb = vec![b'x'; 1_000_000];
        assert_eq!(i.push(&deflate(&mut c, &bomb)), Err(InflateError::TooLarge));
    }

    #[test]
    fn garbage_is_refused_and_reset_starts_a_new_stream() {
        let mut i = Inflater::new(1 << 20);
        assert_eq!(
            i.push(&[1, 2, 3, 0, 0, 0xff, 0xff]),
            Err(InflateError::Corrupt)
        );
        i.reset();
        let mut c = Compress::new(Compression::default(), true);
        assert_eq!(i.push(&deflate(&mut c, b"ok")).unwrap().unwrap(), b"ok");
    }

    /// Gateway-like JSON: repeated keys (back-references into the window)
    /// and varying values, `n` bytes or so.
    fn event(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut text = String::from("{\"t\":\"MESSAGE_CREATE\",\"d\":{\"content\":\"");
        while text.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let words = [
                "guild_id",
                "channel_id",
                "author",
                "hello",
                "world",
                "12345",
            ];
            text.push_str(words[(x % 6) as usize]);
            text.push(' ');
        }
        text.push_str("\"}}");
        text.into_bytes()
    }

    #[test]
    fn a_parked_stream_goes_on_exactly_where_it_stopped() {
        let mut c = Compress::new(Compression::default(), true);
        let mut i = Inflater::new(1 << 22);
        i.park();
        assert!(!i.parked(), "nothing to park before the first message");
        // Sizes around the window and the ring's wrap; park at irregular
        // points, twice in a row too.
        let sizes = [40, 900, 5_000, 31_000, 33_000, 70_000, 120, 16_384, 7, 300];
        for (n, size) in sizes.iter().cycle().take(60).enumerate() {
            let msg = event(n as u64, *size);
            let z = deflate(&mut c, &msg);
            assert_eq!(i.push(&z).unwrap().unwrap(), &msg[..], "message {n}");
            if n % 3 != 1 {
                i.park();
                assert!(i.parked());
            }
            if n % 7 == 0 {
                i.park();
            }
        }
    }

    #[test]
    fn a_message_split_across_a_park_attempt_is_not_parked() {
        let mut c = Compress::new(Compression::default(), true);
        let mut i = Inflater::new(1 << 20);
        let first = event(1, 2_000);
        assert_eq!(
            i.push(&deflate(&mut c, &first)).unwrap().unwrap(),
            &first[..]
        );
        let msg = event(2, 3_000);
        let z = deflate(&mut c, &msg);
        let (a, b) = z.split_at(z.len() / 2);
        assert_eq!(i.push(a).unwrap(), None);
        i.park();
        assert!(!i.parked());
        assert_eq!(i.push(b).unwrap().unwrap(), &msg[..]);
    }

    #[test]
    fn a_parked_window_is_small() {
        let mut c = Compress::new(Compression::default(), true);
        let mut i = Inflater::new(1 << 20);
        for n in 0..20 {
            let msg = event(n, 4_000);
            i.push(&deflate(&mut c, &msg)).unwrap();
        }
        i.park();
        let Stream::Parked(window) = &i.stream else {
            panic!("not parked")
        };
        assert!(window.len() < WINDOW / 4, "{} bytes", window.len());
    }
}
