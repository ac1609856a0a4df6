//! permessage-deflate compression (RFC 7692 §7.2): raw DEFLATE, each message
//! ended with a sync flush whose trailing `00 00 ff ff` is removed on the wire.
//!
//! Window sizes: zlib's raw deflate cannot compress with an 8-bit window (it
//! silently uses 9, and a peer that asked for 8 could then fail to inflate),
//! so a sender whose agreed window is 8 bits sends its messages uncompressed,
//! which RFC 7692 allows message by message. Inflation always uses the full
//! 15-bit window, which reads any stream whatever window it was made with.
//!
//! Memory: a 15-bit deflate state is about 256 KiB and an inflate state about
//! 40 KiB. With context takeover a connection must keep them between
//! messages; without it, they are dropped after each message and made anew.
//!
//! Some messages are not compressed by zlib (see `proto::blocks`): those at
//! level −2 (Huffman only); at level 1, whole messages without context
//! takeover, for which resetting a zlib state costs more than the
//! compression itself, and messages under context takeover with a 9-bit
//! window, for which a 512-byte copy of the window replaces zlib's state of
//! about 200 KiB.

use bytes::{BufMut, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::blocks::BlockEncoder;
use crate::CompressionLevel;

/// The trailer of a sync flush, removed from each message on the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The most output produced per call into zlib.
const MAX_STEP: usize = 64 * 1024;

thread_local! {
    /// Output space for zlib, shared by every connection on the thread, so
    /// that no connection keeps (or zero-fills) room of its own.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Idle compressors kept per thread for connections without context
/// takeover, so that they neither hold one each nor build one per message.
const POOL_SIZE: usize = 4;

type PooledCompressor = (u32, u8, Compress);

thread_local! {
    static COMPRESSORS: std::cell::RefCell<Vec<PooledCompressor>> = const { std::cell::RefCell::new(Vec::new()) };
    static DECOMPRESSORS: std::cell::RefCell<Vec<Decompress>> = const { std::cell::RefCell::new(Vec::new()) };
}

type Pool<T> = std::thread::LocalKey<std::cell::RefCell<Vec<T>>>;

fn take_pooled<T>(pool: &'static Pool<T>, matches: impl Fn(&T) -> bool) -> Option<T> {
    pool.with(|cell| {
        let mut pool = cell.try_borrow_mut().ok()?;
        let at = pool.iter().position(matches)?;
        Some(pool.swap_remove(at))
    })
}

fn put_pooled<T>(pool: &'static Pool<T>, item: T) {
    pool.with(|cell| {
        if let Ok(mut pool) = cell.try_borrow_mut() {
            if pool.len() < POOL_SIZE {
                pool.push(item);
            }
        }
    });
}

fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Vec::new()),
    })
}

/// The largest window, in bits, for which level 1 under context takeover
/// is coded by `proto::blocks` from a copy of the window rather than by
/// zlib: zlib keeps about 200 KiB of state whatever the window, and slides
/// a small window often.
const SMALL_WINDOW_BITS: u8 = 9;

/// The deflate stream could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InflateError(pub String);

/// Compresses outgoing messages.
pub struct Deflater {
    state: Option<Compress>,
    /// Writes what zlib is not used for (see `proto::blocks`): level −2
    /// (Huffman only), which zlib's level settings cannot express; at level
    /// 1, whole messages compressed afresh, and every message under context
    /// takeover with a window of at most `SMALL_WINDOW_BITS`.
    blocks: BlockEncoder,
    /// With context takeover and a small window at level 1: the last bytes
    /// compressed, as many as the window holds.
    history: Vec<u8>,
    /// A message is being compressed in pieces.
    in_message: bool,
    level: CompressionLevel,
    window_bits: u8,
    no_context_takeover: bool,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("level", &self.level)
            .field("window_bits", &self.window_bits)
            .field("no_context_takeover", &self.no_context_takeover)
            .field("holds_state", &self.state.is_some())
            .finish()
    }
}

impl Deflater {
    /// A compressor at `level` (the nearest valid one; see
    /// [`CompressionLevel`]) for messages sent with at most `window_bits`
    /// (8–15) of window, keeping its context between messages unless
    /// `no_context_takeover`.
    pub fn new(level: impl Into<CompressionLevel>, window_bits: u8, no_context_takeover: bool) -> Self {
        Deflater {
            state: None,
            blocks: BlockEncoder::default(),
            history: Vec::new(),
            in_message: false,
            level: level.into().clamped(),
            window_bits,
            no_context_takeover,
        }
    }

    /// Whether messages can be compressed at all (not with an 8-bit window).
    pub fn can_compress(&self) -> bool {
        self.window_bits >= 9
    }

    /// Sets the compression level (the nearest valid one) for later messages.
    pub fn set_level(&mut self, level: impl Into<CompressionLevel>) {
        let level = level.into().clamped();
        if level != self.level {
            self.level = level;
            // A new compressor at the new level from the next message on. Its
            // context starts empty, which is always safe: later messages then
            // refer only to what follows (the peer's window still holds more).
            // This matters after Huffman-only messages too, which the zlib
            // context never saw, and for the history of the small-window
            // coder, which did not see messages compressed by zlib.
            self.state = None;
            self.history = Vec::new();
        }
    }

    /// The compression level.
    pub fn level(&self) -> CompressionLevel {
        self.level
    }

    /// The window this side compresses with, in bits.
    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// Whether the context is dropped after each message.
    pub fn no_context_takeover(&self) -> bool {
        self.no_context_takeover
    }

    fn state(&mut self) -> &mut Compress {
        let (level, bits) = (self.level.zlib_level(), self.window_bits.clamp(9, 15));
        let pooled = self.no_context_takeover;
        self.state.get_or_insert_with(|| {
            pooled
                .then(|| take_pooled(&COMPRESSORS, |c| c.0 == level && c.1 == bits).map(|c| c.2))
                .flatten()
                .unwrap_or_else(|| Compress::new_with_window_bits(Compression::new(level), false, bits))
        })
    }

    /// Compresses `input` as part of the current message, appending to `out`.
    /// With `end`, finishes the message: sync flush, trailer removed, and the
    /// context dropped when it is not taken over.
    pub fn compress(&mut self, input: &[u8], out: &mut BytesMut, end: bool) {
        let begin = out.len();
        let whole = end && !self.in_message;
        self.in_message = !end;
        let window = 1 << self.window_bits.clamp(9, 15);
        let fastest = self.level == CompressionLevel::FASTEST;
        if self.level == CompressionLevel::HUFFMAN_ONLY {
            self.blocks.huffman_only(input, out, end);
        } else if fastest && !self.no_context_takeover && self.window_bits <= SMALL_WINDOW_BITS {
            self.blocks.with_history(&mut self.history, window, input, out, end);
        } else if fastest && self.no_context_takeover && whole {
            self.blocks.fresh_message(input, out, window);
        } else {
            self.zlib_compress(input, out, end);
        }
        if end {
            if out.ends_with(&TAIL) {
                out.truncate(out.len() - TAIL.len());
            }
            // zlib makes nothing for a second sync flush with no input in
            // between (an empty message after another message). An empty
            // payload is not a valid message: send the empty stored block's
            // first byte, which the receiver's appended trailer completes
            // (RFC 7692 §7.2.3.6).
            if out.len() == begin {
                out.put_u8(0x00);
            }
        }
    }

    fn zlib_compress(&mut self, mut input: &[u8], out: &mut BytesMut, end: bool) {
        let flush = if end { FlushCompress::Sync } else { FlushCompress::None };
        let state = self.state();
        with_scratch(|scratch| loop {
            scratch.clear();
            scratch.reserve((input.len() / 2).clamp(256, MAX_STEP));
            let room = scratch.capacity();
            let before_in = state.total_in();
            let status = state.compress_vec(input, scratch, flush);
            out.extend_from_slice(scratch);
            input = &input[(state.total_in() - before_in) as usize..];
            // Done once all input is taken and the output was not cut short.
            if status.is_err() || (input.is_empty() && scratch.len() < room) {
                break;
            }
        });
        if end && self.no_context_takeover {
            // Back to the thread's pool, reset, for the next message of any
            // connection with the same settings.
            if let Some(mut state) = self.state.take() {
                state.reset();
                let bits = self.window_bits.clamp(9, 15);
                put_pooled(&COMPRESSORS, (self.level.zlib_level(), bits, state));
            }
        }
    }

    /// Drops the context (after a message compressed elsewhere was sent, so
    /// that later messages never refer to bytes the peer saw in another order).
    pub fn reset(&mut self) {
        if let Some(state) = &mut self.state {
            state.reset();
        }
        self.blocks.reset();
        self.history = Vec::new();
        self.in_message = false;
    }

    /// Compresses one whole message.
    pub fn compress_message(&mut self, input: &[u8], out: &mut BytesMut) {
        self.compress(input, out, true);
    }
}

/// Inflates incoming compressed messages.
pub struct Inflater {
    state: Option<Decompress>,
    no_context_takeover: bool,
    /// How much of the trailer has been fed at the end of the current message.
    tail_fed: usize,
    /// The peer ended the deflate stream with a final block (RFC 7692
    /// §7.2.3.3): the rest of this message is ignored and the next message
    /// starts a new stream.
    stream_ended: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("no_context_takeover", &self.no_context_takeover)
            .field("holds_state", &self.state.is_some())
            .finish()
    }
}

impl Inflater {
    /// A decompressor; with `no_context_takeover` the peer resets its context
    /// after each message, so ours is dropped too.
    pub fn new(no_context_takeover: bool) -> Self {
        Inflater { state: None, no_context_takeover, tail_fed: 0, stream_ended: false }
    }

    fn state(&mut self) -> &mut Decompress {
        let pooled = self.no_context_takeover;
        self.state.get_or_insert_with(|| {
            pooled
                .then(|| take_pooled(&DECOMPRESSORS, |_| true))
                .flatten()
                .unwrap_or_else(|| Decompress::new_with_window_bits(false, 15))
        })
    }

    /// Inflates from `input`, appending at most `max_out` bytes to `out`.
    /// Returns how many input bytes were used; call again with the rest once
    /// the output has been taken.
    pub fn inflate(&mut self, input: &[u8], out: &mut BytesMut, max_out: usize) -> Result<usize, InflateError> {
        let (used, _) = self.run(input, out, max_out)?;
        Ok(used)
    }

    /// Feeds the message's removed trailer and finishes the message. Returns
    /// `false` while output is still pending (call again after taking it).
    pub fn finish(&mut self, out: &mut BytesMut, max_out: usize) -> Result<bool, InflateError> {
        if self.stream_ended {
            self.stream_ended = false;
            self.tail_fed = 0;
            self.state = None;
            return Ok(true);
        }
        while self.tail_fed < TAIL.len() {
            let (used, full) = self.run(&TAIL[self.tail_fed..], out, max_out)?;
            self.tail_fed += used;
            if full {
                return Ok(false);
            }
        }
        // Drain whatever the trailer released.
        let (_, full) = self.run(&[], out, max_out)?;
        if full {
            return Ok(false);
        }
        self.tail_fed = 0;
        if self.no_context_takeover {
            if let Some(mut state) = self.state.take() {
                state.reset(false);
                put_pooled(&DECOMPRESSORS, state);
            }
        }
        Ok(true)
    }

    /// Returns (input used, output limit reached).
    fn run(&mut self, input: &[u8], out: &mut BytesMut, max_out: usize) -> Result<(usize, bool), InflateError> {
        if self.stream_ended {
            return Ok((input.len(), false));
        }
        let state = self.state();
        let mut used = 0;
        let mut room = max_out;
        let mut ended = false;
        let result = with_scratch(|scratch| {
            while room > 0 {
                scratch.clear();
                // Reserved up to `room`; the scratch may hold more, so cap it.
                scratch.reserve(room.min(MAX_STEP));
                let step = scratch.capacity().min(room);
                let before_in = state.total_in();
                let status = if step < scratch.capacity() {
                    let mut bounded = Vec::with_capacity(step);
                    let status = state.decompress_vec(&input[used..], &mut bounded, FlushDecompress::Sync);
                    scratch.extend_from_slice(&bounded);
                    status
                } else {
                    state.decompress_vec(&input[used..], scratch, FlushDecompress::Sync)
                };
                let produced = scratch.len();
                out.extend_from_slice(scratch);
                used += (state.total_in() - before_in) as usize;
                room -= produced;
                match status {
                    // A final block (RFC 7692 §7.2.3.3): the message's data
                    // ends here; what follows in it (an empty block's header)
                    // is ignored.
                    Ok(Status::StreamEnd) => {
                        ended = true;
                        return Ok((input.len(), false));
                    }
                    Err(e) => return Err(InflateError(e.to_string())),
                    // Output space left over: all the input that can be used was used.
                    Ok(_) if produced < step => return Ok((used, false)),
                    Ok(_) => {}
                }
            }
            Ok((used, true))
        });
        if ended {
            self.stream_ended = true;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate_all(inflater: &mut Inflater, data: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        let mut rest = data;
        while !rest.is_empty() {
            let used = inflater.inflate(rest, &mut out, 1 << 20).unwrap();
            rest = &rest[used..];
        }
        while !inflater.finish(&mut out, 1 << 20).unwrap() {}
        out.to_vec()
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 7692 §7.2.3.1: "Hello" compressed.
        let mut inflater = Inflater::new(false);
        assert_eq!(inflate_all(&mut inflater, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]), b"Hello");
        // §7.2.3.2: the second "Hello" with context takeover refers to the first.
        assert_eq!(inflate_all(&mut inflater, &[0xf2, 0x00, 0x11, 0x00, 0x00]), b"Hello");
    }

    #[test]
    fn round_trip_with_and_without_context_takeover() {
        for no_takeover in [false, true] {
            let mut deflater = Deflater::new(6, 15, no_takeover);
            let mut inflater = Inflater::new(no_takeover);
            let mut sizes = Vec::new();
            for _ in 0..3 {
                let msg = b"the quick brown fox jumps over the lazy dog ".repeat(20);
                let mut wire = BytesMut::new();
                deflater.compress_message(&msg, &mut wire);
                assert!(!wire.ends_with(&TAIL));
                sizes.push(wire.len());
                assert_eq!(inflate_all(&mut inflater, &wire), msg);
            }
            if no_takeover {
                assert_eq!(sizes[0], sizes[2]);
            } else {
                assert!(sizes[2] < sizes[0], "context takeover should shrink repeats: {sizes:?}");
            }
        }
    }

    #[test]
    fn streaming_compression_in_pieces() {
        let msg: Vec<u8> = (0..100_000u32).map(|i| (i % 97) as u8).collect();
        let mut deflater = Deflater::new(1, 10, false);
        let mut wire = BytesMut::new();
        for piece in msg.chunks(7000) {
            deflater.compress(piece, &mut wire, false);
        }
        deflater.compress(&[], &mut wire, true);
        let mut inflater = Inflater::new(false);
        assert_eq!(inflate_all(&mut inflater, &wire), msg);
    }

    #[test]
    fn output_is_bounded_per_call() {
        let msg = vec![b'a'; 1 << 20];
        let mut deflater = Deflater::new(9, 15, false);
        let mut wire = BytesMut::new();
        deflater.compress_message(&msg, &mut wire);
        assert!(wire.len() < 5000);
        let mut inflater = Inflater::new(false);
        let mut out = BytesMut::new();
        let used = inflater.inflate(&wire, &mut out, 1000).unwrap();
        assert_eq!(out.len(), 1000);
        assert!(used <= wire.len());
    }

    #[test]
    fn a_final_block_ends_the_message_and_the_next_starts_afresh() {
        // RFC 7692 §7.2.3.3: "Hello" in a block with BFINAL set, then an empty block.
        let mut inflater = Inflater::new(false);
        assert_eq!(inflate_all(&mut inflater, &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]), b"Hello");
        assert_eq!(inflate_all(&mut inflater, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]), b"Hello");
    }

    #[test]
    fn a_level_change_applies_to_the_next_message() {
        let msg = b"abcdefgh".repeat(2000);
        let mut deflater = Deflater::new(6, 15, false);
        let mut inflater = Inflater::new(false);
        let mut wire = BytesMut::new();
        deflater.compress_message(&msg, &mut wire);
        assert!(wire.len() < 1000);
        assert_eq!(inflate_all(&mut inflater, &wire), msg);
        deflater.set_level(0);
        let mut stored = BytesMut::new();
        deflater.compress_message(&msg, &mut stored);
        assert!(stored.len() >= msg.len(), "level 0 stores: {}", stored.len());
        assert_eq!(inflate_all(&mut inflater, &stored), msg);
    }

    #[test]
    fn corrupt_data_is_an_error() {
        let mut inflater = Inflater::new(false);
        let mut out = BytesMut::new();
        assert!(inflater.inflate(&[0xff, 0xff, 0xff, 0xff, 0xff], &mut out, 1 << 20).is_err());
    }

    #[test]
    fn empty_messages_after_others_with_context_takeover() {
        // A sync flush with no new input makes no output in zlib: the empty
        // message must still be a valid deflate payload.
        let mut deflater = Deflater::new(1, 15, false);
        let mut inflater = Inflater::new(false);
        for msg in [&b"hello"[..], b"", b"", b"x", b"", b"hello"] {
            let mut wire = BytesMut::new();
            deflater.compress_message(msg, &mut wire);
            assert!(!wire.is_empty(), "an empty payload for {msg:?}");
            assert_eq!(inflate_all(&mut inflater, &wire), msg, "after {wire:x?}");
        }
    }

    #[test]
    fn window_of_8_bits_is_not_compressed() {
        assert!(!Deflater::new(1, 8, false).can_compress());
        assert!(Deflater::new(1, 9, false).can_compress());
    }

    #[test]
    fn huffman_only_messages_mix_with_other_levels_under_context_takeover() {
        // The peer keeps one window across every message. Messages at level
        // −2 never refer back; a zlib level after them starts a fresh context
        // (the zlib state did not see them), so every message still inflates.
        let text = b"The quick brown fox jumps over the lazy dog. ".repeat(200);
        for no_takeover in [false, true] {
            let mut deflater = Deflater::new(6, 15, no_takeover);
            let mut inflater = Inflater::new(no_takeover);
            let mut sizes = Vec::new();
            for level in [6, -2, -2, 6, 1, -2, 9, 6] {
                deflater.set_level(level);
                assert_eq!(deflater.level().get(), level);
                for msg in [&text[..], b"", &text[..100]] {
                    let mut wire = BytesMut::new();
                    deflater.compress_message(msg, &mut wire);
                    assert_eq!(inflate_all(&mut inflater, &wire), msg, "level {level}, takeover {}", !no_takeover);
                    if msg.len() == text.len() {
                        sizes.push((level, wire.len()));
                    }
                }
            }
            // Literals only: far larger than any string-matching level, yet
            // well under the input (the text uses few distinct bytes).
            for &(level, size) in &sizes {
                if level == -2 {
                    assert!(size > text.len() / 3 && size < text.len() * 3 / 4, "{sizes:?}");
                } else {
                    assert!(size < text.len() / 20, "{sizes:?}");
                }
            }
        }
    }
}
