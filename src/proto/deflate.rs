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
//! window, for which the window's copy (below) replaces zlib's state of
//! about 200 KiB.
//!
//! Parking: with context takeover, each side also keeps a copy of its
//! window — the last `2^window_bits` bytes of what it compressed, or of what
//! it inflated (one buffer of exactly that size, filled by a
//! copy of at most the message or the window per message). An idle
//! connection can then free its zlib states ([`Deflater::park`],
//! [`Inflater::park`]) and hold only the windows (at most 64 KiB, against
//! about 300 KiB of zlib state at 15 bits); the next message restores the
//! state from its window as a preset dictionary. Context takeover is exactly
//! this sliding window (RFC 7692 §7.2.1), so the peer cannot tell. After a
//! restore the compressed bytes may differ from those an unparked
//! compressor would have made (zlib's match finder then knows every string
//! of the window, where the running one skipped some), but they inflate to
//! the same data; the inflated output is identical either way.
//!
//! The same mechanism carries a peer's context across a final (BFINAL)
//! block: the stream ends there, but under context takeover the next
//! message may still refer back into the window, so the next stream starts
//! with the window as its dictionary.

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

/// A copy of the sliding window: the last `size` bytes pushed, kept in one
/// buffer that never grows past `size` (allocated at the first push and
/// grown by doubling; a window of size 0 keeps nothing and costs nothing).
#[derive(Default)]
struct Window {
    buf: Vec<u8>,
    size: usize,
    /// Once full, where the oldest byte is (the buffer is a ring).
    start: usize,
}

impl Window {
    fn new(size: usize) -> Self {
        Window { buf: Vec::new(), size, start: 0 }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends `data`, of which only the last `size` bytes can matter.
    fn push(&mut self, data: &[u8]) {
        if self.size == 0 || data.is_empty() {
            return;
        }
        let mut data = &data[data.len().saturating_sub(self.size)..];
        if self.buf.len() < self.size {
            // Grown by doubling up to exactly `size`: a connection of small
            // messages keeps a small window.
            let want = (self.buf.len() + data.len()).min(self.size);
            if want > self.buf.capacity() {
                let grown = (self.buf.capacity() * 2).max(want).min(self.size);
                self.buf.reserve_exact(grown - self.buf.len());
            }
            let n = (self.size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        while !data.is_empty() {
            let n = (self.size - self.start).min(data.len());
            self.buf[self.start..self.start + n].copy_from_slice(&data[..n]);
            self.start = (self.start + n) % self.size;
            data = &data[n..];
        }
    }

    /// The window's bytes in order, oldest first.
    fn contiguous(&mut self) -> &[u8] {
        self.buf.rotate_left(self.start);
        self.start = 0;
        &self.buf
    }

    /// Forgets the bytes (the buffer is kept for reuse).
    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }
}

/// What parking needs to know of a compressor or a decompressor besides its
/// state: whether a message is under way, and whether it was used in the
/// current idle period.
#[derive(Debug, Default)]
struct Activity {
    /// A message is under way (its end not compressed or inflated yet).
    in_message: bool,
    /// Used since the idle period began.
    used: bool,
}

impl Activity {
    /// Whether a state may be freed now: only with context takeover (the
    /// window then restores it) and between messages.
    fn may_park(&self, no_context_takeover: bool) -> bool {
        !no_context_takeover && !self.in_message
    }

    /// Ends an idle period and begins the next: whether nothing used the
    /// state during it.
    fn idle_period_ended(&mut self) -> bool {
        !std::mem::take(&mut self.used)
    }
}

/// The largest window, in bits, for which level 1 under context takeover
/// is coded by `proto::blocks` from the window's copy rather than by zlib:
/// zlib keeps about 200 KiB of state whatever the window, and slides a
/// small window often.
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
    level: CompressionLevel,
    window_bits: u8,
    no_context_takeover: bool,
    /// With context takeover, what the peer's window holds of our stream.
    window: Window,
    activity: Activity,
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
        let window = if no_context_takeover || window_bits < 9 { 0 } else { 1 << window_bits.min(15) };
        Deflater {
            state: None,
            blocks: BlockEncoder::default(),
            level: level.into().clamped(),
            window_bits,
            no_context_takeover,
            window: Window::new(window),
            activity: Activity::default(),
        }
    }

    /// Frees the compression state between messages, keeping only the
    /// window (context takeover only; a no-op otherwise and while a message
    /// is under way). The next message restores the state from the window.
    /// Returns whether a state was freed.
    pub fn park(&mut self) -> bool {
        self.activity.may_park(self.no_context_takeover) && self.state.take().is_some()
    }

    /// Starts an idle period: [`Deflater::park_if_idle`] parks unless the
    /// compressor is used from now on.
    pub fn start_idle(&mut self) {
        self.activity.used = false;
    }

    /// [`Deflater::park`] if nothing was compressed since the previous call
    /// or [`Self::start_idle`] (call it once per idle period: a compressor in use is left alone).
    pub fn park_if_idle(&mut self) -> bool {
        self.activity.idle_period_ended() && self.park()
    }

    /// Whether the compression state is held (not parked, not yet made).
    pub fn holds_state(&self) -> bool {
        self.state.is_some()
    }

    /// A new compression state whose context is the window.
    fn restored(&mut self) -> Compress {
        let bits = self.window_bits.clamp(9, 15);
        let mut state = Compress::new_with_window_bits(Compression::new(self.level.zlib_level()), false, bits);
        // Should this fail, the state starts empty: later messages then
        // refer only to what follows, which is always valid.
        if state.set_dictionary(self.window.contiguous()).is_err() {
            state.reset();
        }
        state
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
            // A new compressor at the new level from the next message on,
            // its context restored from the window's copy (which every kind
            // of message goes into, whoever compressed it), or empty without
            // context takeover.
            self.state = None;
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
        if self.state.is_none() && !self.window.is_empty() {
            self.state = Some(self.restored());
        }
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
        let whole = end && !self.activity.in_message;
        self.activity.in_message = !end;
        self.activity.used = true;
        let window = 1 << self.window_bits.clamp(9, 15);
        let fastest = self.level == CompressionLevel::FASTEST;
        if self.level == CompressionLevel::HUFFMAN_ONLY {
            self.blocks.huffman_only(input, out, end);
        } else if fastest && !self.no_context_takeover && self.window_bits <= SMALL_WINDOW_BITS {
            self.blocks.with_history(self.window.contiguous(), window, input, out, end);
        } else if fastest && self.no_context_takeover && whole {
            self.blocks.fresh_message(input, out, window);
        } else {
            self.zlib_compress(input, out, end);
        }
        // What the peer's window holds once it inflates this (after the
        // compressing: a restore in `state` starts from the window before it).
        self.window.push(input);
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
        self.window.clear();
        self.blocks.reset();
        self.activity.in_message = false;
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
    /// With context takeover, the last bytes inflated: the context a
    /// restored state (after parking or a final block) starts from.
    window: Window,
    activity: Activity,
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
        Self::with_window_bits(no_context_takeover, 15)
    }

    /// A decompressor for a peer that compresses with at most `window_bits`
    /// (8–15) of window: with context takeover, that much of the output is
    /// kept for restoring the context (at least 9 bits' worth: zlib
    /// compresses with 9 when asked for 8).
    pub fn with_window_bits(no_context_takeover: bool, window_bits: u8) -> Self {
        let window = if no_context_takeover { 0 } else { 1 << window_bits.clamp(9, 15) };
        Inflater {
            state: None,
            no_context_takeover,
            tail_fed: 0,
            stream_ended: false,
            window: Window::new(window),
            activity: Activity::default(),
        }
    }

    /// Frees the decompression state between messages, keeping only the
    /// window (context takeover only; a no-op otherwise and while a message
    /// is under way). The next message restores the state from the window.
    /// Returns whether a state was freed.
    pub fn park(&mut self) -> bool {
        self.activity.may_park(self.no_context_takeover) && self.state.take().is_some()
    }

    /// Starts an idle period: [`Inflater::park_if_idle`] parks unless the
    /// decompressor is used from now on.
    pub fn start_idle(&mut self) {
        self.activity.used = false;
    }

    /// [`Inflater::park`] if nothing was inflated since the previous call
    /// or [`Self::start_idle`] (call it once per idle period: a decompressor in use is left alone).
    pub fn park_if_idle(&mut self) -> bool {
        self.activity.idle_period_ended() && self.park()
    }

    /// Whether the decompression state is held (not parked, not yet made).
    pub fn holds_state(&self) -> bool {
        self.state.is_some()
    }

    fn state(&mut self) -> &mut Decompress {
        if self.state.is_none() && !self.window.is_empty() {
            let mut state = Decompress::new_with_window_bits(false, 15);
            // A raw stream takes its dictionary before any input. Should
            // this fail, a message referring back fails as corrupt.
            if state.set_dictionary(self.window.contiguous()).is_err() {
                state.reset(false);
            }
            self.state = Some(state);
        }
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
        self.activity.in_message = true;
        self.activity.used = true;
        let (used, _) = self.run(input, out, max_out)?;
        Ok(used)
    }

    /// Feeds the message's removed trailer and finishes the message. Returns
    /// `false` while output is still pending (call again after taking it).
    pub fn finish(&mut self, out: &mut BytesMut, max_out: usize) -> Result<bool, InflateError> {
        if self.stream_ended {
            self.stream_ended = false;
            self.tail_fed = 0;
            // With context takeover the next message may refer back into
            // the window: its stream starts from the window (see `state`).
            self.state = None;
            self.activity.in_message = false;
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
        self.activity.in_message = false;
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
        let begin = out.len();
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
        self.window.push(&out[begin..]);
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

    /// One message as a peer would send it that ends its stream with a
    /// final block (`Finish`), compressed with `dictionary` as its context.
    fn finished_message(dictionary: &[u8], data: &[u8], bits: u8) -> Vec<u8> {
        let mut c = Compress::new_with_window_bits(Compression::new(6), false, bits);
        if !dictionary.is_empty() {
            c.set_dictionary(dictionary).unwrap();
        }
        let mut out = Vec::with_capacity(data.len() + 1024);
        assert_eq!(c.compress_vec(data, &mut out, FlushCompress::Finish).unwrap(), Status::StreamEnd);
        out
    }

    #[test]
    fn after_a_final_block_the_next_message_may_refer_to_the_window() {
        let first = b"a message that the next one repeats, word for word. ".repeat(3);
        let second = first.clone();
        let wire1 = finished_message(&[], &first, 15);
        let wire2 = finished_message(&first, &second, 15);
        assert!(wire2.len() < 20, "the second message refers back: {} bytes", wire2.len());
        let mut inflater = Inflater::new(false);
        assert_eq!(inflate_all(&mut inflater, &wire1), first);
        assert_eq!(inflate_all(&mut inflater, &wire2), second);
        // And a third, after a sync-flushed message, still sees both.
        let mut c = Compress::new_with_window_bits(Compression::new(6), false, 15);
        c.set_dictionary(&[first.as_slice(), &second].concat()).unwrap();
        let mut wire3 = Vec::with_capacity(1024);
        c.compress_vec(b"word for word", &mut wire3, FlushCompress::Sync).unwrap();
        wire3.truncate(wire3.len() - 4);
        assert_eq!(inflate_all(&mut inflater, &wire3), b"word for word");
    }

    #[test]
    fn a_small_window_is_enough_after_a_final_block() {
        let first: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let second = first[first.len() - 400..].to_vec();
        let wire1 = finished_message(&[], &first, 9);
        let wire2 = finished_message(&first, &second, 9);
        let mut inflater = Inflater::with_window_bits(false, 9);
        assert_eq!(inflate_all(&mut inflater, &wire1), first);
        assert_eq!(inflate_all(&mut inflater, &wire2), second);
        assert_eq!(inflater.window.buf.len(), 512);
    }

    #[test]
    fn parked_states_are_restored_from_the_window() {
        let mut deflater = Deflater::new(1, 15, false);
        let mut inflater = Inflater::new(false);
        let msg: Vec<u8> = (0..2000u32).map(|i| (i.wrapping_mul(i).wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut first = BytesMut::new();
        deflater.compress_message(&msg, &mut first);
        assert_eq!(inflate_all(&mut inflater, &first), msg);
        assert!(deflater.park() && inflater.park());
        assert!(!deflater.holds_state() && !inflater.holds_state());
        let mut second = BytesMut::new();
        deflater.compress_message(&msg, &mut second);
        assert!(second.len() < first.len() / 4, "the restored context is used: {} bytes", second.len());
        assert_eq!(inflate_all(&mut inflater, &second), msg);
    }

    #[test]
    fn nothing_is_parked_mid_message_or_without_context_takeover() {
        let mut deflater = Deflater::new(1, 15, false);
        let mut wire = BytesMut::new();
        deflater.compress(b"part", &mut wire, false);
        assert!(!deflater.park());
        deflater.compress(b"", &mut wire, true);
        assert!(!deflater.park_if_idle(), "used since the last check");
        assert!(deflater.park_if_idle());
        let mut inflater = Inflater::new(false);
        let mut out = BytesMut::new();
        inflater.inflate(&wire[..2], &mut out, 1 << 20).unwrap();
        assert!(!inflater.park());
        let mut plain = Deflater::new(1, 15, true);
        plain.compress_message(b"x", &mut BytesMut::new());
        assert!(!plain.park());
        assert_eq!(plain.window.buf.capacity(), 0);
        assert_eq!(Inflater::new(true).window.size, 0);
    }

    #[test]
    fn the_window_keeps_exactly_the_last_bytes() {
        let mut window = Window::new(8);
        window.push(b"abc");
        assert_eq!(window.contiguous(), b"abc");
        window.push(b"defghij");
        assert_eq!(window.contiguous(), b"cdefghij");
        window.push(b"kl");
        window.push(b"m");
        assert_eq!(window.contiguous(), b"fghijklm");
        window.push(b"0123456789abcdef");
        assert_eq!(window.contiguous(), b"89abcdef");
        assert_eq!(window.buf.capacity(), 8);
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
