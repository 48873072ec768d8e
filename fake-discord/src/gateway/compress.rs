//! `compress=zlib-stream` transport compression.
//!
//! Why it exists: clients that ask for it must inflate every message
//! through one context kept for the whole connection, buffering until a
//! message ends with the `Z_SYNC_FLUSH` suffix `00 00 ff ff`
//! (discord-api-docs @ c98d64bc, `developers/events/gateway.mdx`
//! "zlib-stream", L547-551). So the fake keeps one deflate stream (zlib
//! header) per connection and ends each payload with a sync flush; each
//! payload goes out as one binary WebSocket message.

use flate2::{Compress, Compression, FlushCompress};

/// One connection's deflate stream.
pub struct ZlibStream(Compress);

impl ZlibStream {
    pub fn new() -> ZlibStream {
        ZlibStream(Compress::new(Compression::default(), true))
    }

    /// Compresses one payload and sync-flushes, so the output ends with
    /// `00 00 ff ff` and inflates to exactly `input` given everything sent
    /// before it on this stream.
    pub fn compress(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        let start = self.0.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let done = (self.0.total_in() - start) as usize;
            self.0
                .compress_vec(&input[done..], &mut out, FlushCompress::Sync)
                .expect("deflating into a growing buffer cannot fail");
            let done = (self.0.total_in() - start) as usize;
            // Finished when all input is in and deflate left room unused
            // (it had nothing more to write).
            if done == input.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    #[test]
    fn each_payload_ends_with_the_sync_suffix_and_round_trips() {
        let mut z = ZlibStream::new();
        let mut inflate = Decompress::new(true);
        for text in ["{\"op\":10}", &"x".repeat(100_000), "{\"op\":11}"] {
            let packed = z.compress(text.as_bytes());
            assert!(packed.ends_with(&[0, 0, 0xff, 0xff]));
            let mut out = Vec::with_capacity(text.len() + 64);
            inflate
                .decompress_vec(&packed, &mut out, FlushDecompress::Sync)
                .unwrap();
            assert_eq!(out, text.as_bytes());
        }
    }
}
