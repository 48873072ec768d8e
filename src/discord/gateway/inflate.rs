//! inflate: `zlib-stream` transport compression (GW L547-551).
//!
//! Why it exists: with `compress=zlib-stream` every message Discord sends is
//! a piece of one deflate stream kept for the whole connection; a message
//! is complete when the bytes so far end with `00 00 ff ff` (a sync flush).
//! One inflater per connection, reset on every new connection (the server
//! starts a new stream); the dictionary it keeps is what makes small
//! messages cheap on the wire.
//!
//! Invariants: the inflated size of one message is capped (`max`), because
//! tungstenite's `max_message_size` only bounds the compressed bytes and a
//! few KiB can inflate to gigabytes; buffers grown by a large message
//! (READY, a big GUILD_CREATE) are given back afterwards, so an idle
//! connection does not keep a burst's memory.

use flate2::{Decompress, FlushDecompress, Status};

/// The zlib sync-flush marker that ends each message.
const SUFFIX: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Buffers larger than this are freed after use; below it they are kept,
/// so ordinary events reuse them.
const KEEP: usize = 16 * 1024;
/// First output allocation, then doubled as needed.
const FIRST_OUT: usize = 1024;

pub struct Inflater {
    zlib: Decompress,
    /// Compressed bytes of a message split over several WebSocket messages.
    pending: Vec<u8>,
    out: Vec<u8>,
    max: usize,
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
            zlib: Decompress::new(true),
            pending: Vec::new(),
            out: Vec::new(),
            max,
        }
    }

    /// A new connection: a new stream.
    pub fn reset(&mut self) {
        self.zlib.reset(true);
        self.pending = Vec::new();
        self.out = Vec::new();
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
        let input = if self.pending.is_empty() && bytes.ends_with(&SUFFIX) {
            bytes
        } else {
            self.pending.extend_from_slice(bytes);
            if self.pending.len() > self.max {
                self.pending = Vec::new();
                return Err(InflateError::TooLarge);
            }
            if !self.pending.ends_with(&SUFFIX) {
                return Ok(None);
            }
            &self.pending[..]
        };
        let result = inflate(&mut self.zlib, input, &mut self.out, self.max);
        self.pending.clear();
        result.map(|()| Some(&self.out[..]))
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
}
