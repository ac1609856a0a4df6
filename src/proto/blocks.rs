//! DEFLATE blocks written here rather than by zlib (RFC 1951), for two
//! cases zlib serves badly:
//!
//! - Huffman only (compression level −2, zlib's `Z_HUFFMAN_ONLY`, which
//!   flate2 cannot select): every byte a literal. No byte refers back to
//!   earlier data, so this suits a sender with or without context takeover
//!   and holds no window.
//! - A whole message compressed afresh (no context takeover) at level 1:
//!   zlib must reset its state for each such message, which clears about
//!   200 KiB and costs far more than compressing a small message. Here a
//!   greedy single-probe LZ77 pass runs over the message with a hash table
//!   shared by the thread, whose stale entries are told apart by position
//!   rather than cleared.
//!
//! Each block goes out with the smallest of its own Huffman codes (§3.2.7),
//! the fixed codes (§3.2.6) or stored (§3.2.4).

use std::cell::RefCell;

use bytes::{BufMut, BytesMut};

/// The most input coded in one block: small enough for its code to follow
/// changes in the data, large enough for its header not to matter.
const BLOCK: usize = 16 * 1024;
/// Longest literal/length and distance code.
const MAX_BITS: u8 = 15;
/// Longest code length code.
const MAX_CL_BITS: u8 = 7;
/// The order in which the code length code's lengths are sent.
const CL_ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
/// The literal/length symbol that ends a block.
const END_OF_BLOCK: usize = 256;
/// Literal/length symbols: 256 literals, the end of block, 29 length codes.
const LIT_LEN: usize = 286;
/// Distance symbols.
const DISTANCES: usize = 30;
/// The farthest a match may reach back.
const MAX_DISTANCE: usize = 32 * 1024;
const MIN_MATCH: usize = 4;
const MAX_MATCH: usize = 258;
/// A token is a literal byte, or this flag with the match's length (bits
/// 16–24) and distance (bits 0–15).
const MATCH: u32 = 1 << 31;
/// Blocks of tokens for less input than this use the fixed codes (or are
/// stored), never a code of their own.
const DYNAMIC_MIN: usize = 512;
/// The most input coded per pass of the match finder (see
/// `BlockEncoder::with_history`).
const PIECE: usize = 128 * 1024;
/// Bits of the thread's match-finding hash table.
const HASH_BITS: u32 = 14;

/// Writes DEFLATE blocks; carries the bits that do not yet fill a byte
/// from one piece of a message to the next.
#[derive(Debug, Default)]
pub(crate) struct BlockEncoder {
    bits: u64,
    count: u32,
}

/// What a block codes: bytes as literals only, or tokens.
#[derive(Clone, Copy)]
enum Symbols<'a> {
    Literals(&'a [u8]),
    Tokens(&'a [u32]),
}

/// How often each symbol occurs in a block, and the extra bits its lengths
/// and distances carry.
struct Counts {
    lit_len: [u32; LIT_LEN],
    dist: [u32; DISTANCES],
    extra_bits: u64,
}

impl Counts {
    fn new() -> Self {
        Counts { lit_len: [0; LIT_LEN], dist: [0; DISTANCES], extra_bits: 0 }
    }
}

/// One run-length coded entry of the code lengths (RFC 1951 §3.2.7): a code
/// length code symbol, and its extra bits' value and number.
#[derive(Clone, Copy)]
struct Run {
    symbol: u8,
    extra: u8,
    extra_bits: u8,
}

/// The thread's match finder state: positions by hash, as offsets into a
/// running count of the bytes the thread has compressed this way, and the
/// tokens of the block being built.
struct Finder {
    table: Box<[u32]>,
    /// The running count at the start of the current message: entries below
    /// it belong to earlier messages.
    base: u32,
    tokens: Vec<u32>,
    /// A connection's history and the input that follows it, end to end.
    joined: Vec<u8>,
}

impl Finder {
    fn new() -> Self {
        Finder { table: vec![0; 1 << HASH_BITS].into_boxed_slice(), base: 1, tokens: Vec::new(), joined: Vec::new() }
    }
}

/// Runs `f` with the thread's match finder (or, should it be in use, a
/// new one).
fn with_finder<R>(f: impl FnOnce(&mut Finder) -> R) -> R {
    FINDER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut finder) => f(finder.get_or_insert_with(Finder::new)),
        Err(_) => f(&mut Finder::new()),
    })
}

thread_local! {
    static FINDER: RefCell<Option<Finder>> = const { RefCell::new(None) };
}

impl BlockEncoder {
    /// Codes `input` as literals only, as part of the current message,
    /// appending to `out`. With `end`, ends the message with a sync flush
    /// (an empty stored block, whose `00 00 ff ff` the caller removes).
    pub(crate) fn huffman_only(&mut self, input: &[u8], out: &mut BytesMut, end: bool) {
        for block in input.chunks(BLOCK) {
            let mut counts = Counts::new();
            for &byte in block {
                counts.lit_len[usize::from(byte)] += 1;
            }
            self.block(out, block, Symbols::Literals(block), &mut counts);
        }
        if end {
            self.sync_flush(out);
        }
    }

    /// Compresses `message`, a whole message, with no reference to anything
    /// before it and no distance above `max_distance`, ending with a sync
    /// flush.
    pub(crate) fn fresh_message(&mut self, message: &[u8], out: &mut BytesMut, max_distance: usize) {
        self.with_history(&[], max_distance, message, out, true);
    }

    /// Compresses `input` as part of the current message, with matches that
    /// may reach `window` bytes back, into `history` (what was sent before:
    /// what the peer's window holds) as well as into `input`. With `end`,
    /// ends the message with a sync flush. The history is all a connection
    /// keeps; the match finder is rebuilt from it each time. The input is
    /// taken `PIECE` bytes at a time, each after the window that precedes
    /// it, so that the thread's buffer stays small whatever the message.
    pub(crate) fn with_history(&mut self, history: &[u8], window: usize, input: &[u8], out: &mut BytesMut, end: bool) {
        let window = window.min(MAX_DISTANCE);
        with_finder(|finder| {
            let mut joined = std::mem::take(&mut finder.joined);
            joined.clear();
            joined.extend_from_slice(&history[history.len().saturating_sub(window)..]);
            for piece in input.chunks(PIECE) {
                let start = joined.len();
                joined.extend_from_slice(piece);
                self.lz77(finder, &joined, start, out, window);
                joined.drain(..joined.len().saturating_sub(window));
            }
            finder.joined = joined;
        });
        if end {
            self.sync_flush(out);
        }
    }

    /// Codes `data[start..]` in blocks, with matches that may reach back
    /// into `data[..start]`, already sent.
    fn lz77(&mut self, finder: &mut Finder, data: &[u8], start: usize, out: &mut BytesMut, max_distance: usize) {
        // `data` is at most a window and a piece: positions fit in a u32.
        let len = data.len() as u32;
        if u32::MAX - finder.base <= len + 1 {
            finder.table.fill(0);
            finder.base = 1;
        }
        let base = finder.base;
        finder.base += len + 1;
        let table = &mut finder.table;
        let tokens = &mut finder.tokens;
        tokens.clear();
        // What was sent before: found by later matches, not coded.
        for i in 0..start.min(data.len().saturating_sub(MIN_MATCH - 1)) {
            table[hash(&data[i..i + MIN_MATCH])] = base + i as u32;
        }
        let mut counts = Counts::new();
        let (mut i, mut block_start) = (start, start);
        while i < data.len() {
            if i - block_start >= BLOCK {
                self.block(out, &data[block_start..i], Symbols::Tokens(tokens), &mut counts);
                tokens.clear();
                counts = Counts::new();
                block_start = i;
            }
            let Some(word) = data.get(i..i + MIN_MATCH) else {
                literal(tokens, &mut counts, data[i]);
                i += 1;
                continue;
            };
            let slot = hash(word);
            let candidate = table[slot];
            table[slot] = base + i as u32;
            if candidate >= base {
                let from = (candidate - base) as usize;
                let distance = i - from;
                if distance <= max_distance && data[from..from + MIN_MATCH] == data[i..i + MIN_MATCH] {
                    let len = match_length(data, from, i);
                    push_match(tokens, &mut counts, len, distance);
                    i += len;
                    continue;
                }
            }
            literal(tokens, &mut counts, data[i]);
            i += 1;
        }
        if block_start < data.len() {
            self.block(out, &data[block_start..], Symbols::Tokens(tokens), &mut counts);
        }
    }

    /// Forgets bits of an unfinished message.
    pub(crate) fn reset(&mut self) {
        *self = BlockEncoder::default();
    }

    /// BFINAL 0, BTYPE 00, then LEN 0 and NLEN 0xffff from a byte boundary.
    fn sync_flush(&mut self, out: &mut BytesMut) {
        self.put(out, 0, 3);
        self.align(out);
        out.put_slice(&[0x00, 0x00, 0xff, 0xff]);
    }

    /// One block of `raw`, coded as `symbols` (which `counts` counted).
    fn block(&mut self, out: &mut BytesMut, raw: &[u8], symbols: Symbols<'_>, counts: &mut Counts) {
        counts.lit_len[END_OF_BLOCK] = 1;
        // The block's size in bits with the fixed codes and stored; for a
        // small block of tokens, one of these is sent: building a code of
        // its own costs more time than its few bytes of gain are worth.
        let fixed_bits =
            3 + bits_of(&counts.lit_len, &FIXED_LENGTHS) + bits_of(&counts.dist, &[5; DISTANCES]) + counts.extra_bits;
        let pad = u64::from((8 - (self.count + 3) % 8) % 8);
        let stored_bits = 3 + pad + 32 + 8 * raw.len() as u64;
        if raw.len() < DYNAMIC_MIN && matches!(symbols, Symbols::Tokens(_)) {
            if stored_bits <= fixed_bits {
                self.stored(out, raw);
            } else {
                self.fixed(out, symbols);
            }
            return;
        }
        let mut lengths = [0u8; LIT_LEN];
        code_lengths(&counts.lit_len, MAX_BITS, &mut lengths);
        let mut dist_lengths = [0u8; DISTANCES];
        code_lengths(&counts.dist, MAX_BITS, &mut dist_lengths);
        let hlit = lengths.iter().rposition(|&l| l != 0).map_or(257, |last| (last + 1).max(257));
        let hdist = dist_lengths.iter().rposition(|&l| l != 0).map_or(1, |last| last + 1);

        // Both codes' lengths, as one run-length coded sequence.
        let mut all = [0u8; LIT_LEN + DISTANCES];
        all[..hlit].copy_from_slice(&lengths[..hlit]);
        all[hlit..hlit + hdist].copy_from_slice(&dist_lengths[..hdist]);
        let mut runs = [Run { symbol: 0, extra: 0, extra_bits: 0 }; LIT_LEN + DISTANCES];
        let made = run_lengths(&all[..hlit + hdist], &mut runs);
        let runs = &runs[..made];
        let mut cl_freq = [0u32; 19];
        for run in runs {
            cl_freq[usize::from(run.symbol)] += 1;
        }
        let mut cl_lengths = [0u8; 19];
        code_lengths(&cl_freq, MAX_CL_BITS, &mut cl_lengths);
        let hclen = CL_ORDER.iter().rposition(|&s| cl_lengths[s] != 0).map_or(4, |last| (last + 1).max(4));

        // The block's size with its own codes; the smallest of the three is sent.
        let header_bits = 3
            + 5
            + 5
            + 4
            + 3 * hclen as u64
            + runs.iter().map(|r| u64::from(cl_lengths[usize::from(r.symbol)]) + u64::from(r.extra_bits)).sum::<u64>();
        let dynamic_bits =
            header_bits + bits_of(&counts.lit_len, &lengths) + bits_of(&counts.dist, &dist_lengths) + counts.extra_bits;
        if stored_bits <= dynamic_bits.min(fixed_bits) {
            self.stored(out, raw);
            return;
        }
        if fixed_bits <= dynamic_bits {
            self.fixed(out, symbols);
            return;
        }

        let mut codes = [0u16; LIT_LEN];
        canonical_codes(&lengths, &mut codes);
        let mut dist_codes = [0u16; DISTANCES];
        canonical_codes(&dist_lengths, &mut dist_codes);
        let mut cl_codes = [0u16; 19];
        canonical_codes(&cl_lengths, &mut cl_codes);
        // BFINAL 0, BTYPE 10 (dynamic codes), HLIT, HDIST, HCLEN.
        self.put(out, 0b100, 3);
        self.put(out, (hlit - 257) as u32, 5);
        self.put(out, (hdist - 1) as u32, 5);
        self.put(out, (hclen - 4) as u32, 4);
        for &symbol in &CL_ORDER[..hclen] {
            self.put(out, u32::from(cl_lengths[symbol]), 3);
        }
        for run in runs {
            let symbol = usize::from(run.symbol);
            self.put(out, u32::from(cl_codes[symbol]), u32::from(cl_lengths[symbol]));
            if run.extra_bits > 0 {
                self.put(out, u32::from(run.extra), u32::from(run.extra_bits));
            }
        }
        self.symbols(out, symbols, (&lengths, &codes), (&dist_lengths, &dist_codes));
    }

    /// A stored block of `raw` (BFINAL 0, BTYPE 00, LEN, NLEN, the bytes).
    fn stored(&mut self, out: &mut BytesMut, raw: &[u8]) {
        self.put(out, 0, 3);
        self.align(out);
        let len = raw.len() as u16;
        out.put_u16_le(len);
        out.put_u16_le(!len);
        out.put_slice(raw);
    }

    /// A block with the fixed codes (BFINAL 0, BTYPE 01).
    fn fixed(&mut self, out: &mut BytesMut, symbols: Symbols<'_>) {
        self.put(out, 0b010, 3);
        self.symbols(out, symbols, (&FIXED_LENGTHS, &FIXED_CODES), (&[5; DISTANCES], &FIXED_DISTANCE_CODES));
    }

    /// The block's symbols with the given codes, then the end of block.
    fn symbols(
        &mut self,
        out: &mut BytesMut,
        symbols: Symbols<'_>,
        (lengths, codes): (&[u8; LIT_LEN], &[u16; LIT_LEN]),
        (dist_lengths, dist_codes): (&[u8; DISTANCES], &[u16; DISTANCES]),
    ) {
        match symbols {
            Symbols::Literals(bytes) => {
                for &byte in bytes {
                    let s = usize::from(byte);
                    self.put(out, u32::from(codes[s]), u32::from(lengths[s]));
                }
            }
            Symbols::Tokens(tokens) => {
                for &token in tokens {
                    if token & MATCH == 0 {
                        let s = token as usize;
                        self.put(out, u32::from(codes[s]), u32::from(lengths[s]));
                        continue;
                    }
                    let (symbol, extra_bits, extra) = length_code((token >> 16) as usize & 0x1ff);
                    self.put(out, u32::from(codes[symbol]), u32::from(lengths[symbol]));
                    self.put(out, extra, extra_bits);
                    let (symbol, extra_bits, extra) = distance_code(token as usize & 0xffff);
                    self.put(out, u32::from(dist_codes[symbol]), u32::from(dist_lengths[symbol]));
                    self.put(out, extra, extra_bits);
                }
            }
        }
        self.put(out, u32::from(codes[END_OF_BLOCK]), u32::from(lengths[END_OF_BLOCK]));
    }

    /// Appends the `n` (at most 16) low bits of `value`, least significant first.
    fn put(&mut self, out: &mut BytesMut, value: u32, n: u32) {
        self.bits |= u64::from(value) << self.count;
        self.count += n;
        if self.count >= 32 {
            out.put_u32_le(self.bits as u32);
            self.bits >>= 32;
            self.count -= 32;
        }
    }

    /// Writes out every pending bit, the last byte padded with zero bits.
    fn align(&mut self, out: &mut BytesMut) {
        while self.count > 0 {
            out.put_u8(self.bits as u8);
            self.bits >>= 8;
            self.count = self.count.saturating_sub(8);
        }
        self.bits = 0;
    }
}

/// The hash table slot of the first `MIN_MATCH` bytes of `word`.
fn hash(word: &[u8]) -> usize {
    let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
    (word.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
}

fn literal(tokens: &mut Vec<u32>, counts: &mut Counts, byte: u8) {
    tokens.push(u32::from(byte));
    counts.lit_len[usize::from(byte)] += 1;
}

fn push_match(tokens: &mut Vec<u32>, counts: &mut Counts, len: usize, distance: usize) {
    tokens.push(MATCH | (len as u32) << 16 | distance as u32);
    let (symbol, len_extra, _) = length_code(len);
    let (dist_symbol, dist_extra, _) = distance_code(distance);
    counts.lit_len[symbol] += 1;
    counts.dist[dist_symbol] += 1;
    counts.extra_bits += u64::from(len_extra + dist_extra);
}

/// How far the bytes at `at` repeat those at `from` (at least
/// `MIN_MATCH`, which the caller checked), up to `MAX_MATCH`.
fn match_length(data: &[u8], from: usize, at: usize) -> usize {
    let max = MAX_MATCH.min(data.len() - at);
    let mut len = MIN_MATCH;
    while len + 8 <= max {
        let a = u64::from_le_bytes(data[from + len..from + len + 8].try_into().unwrap_or([0; 8]));
        let b = u64::from_le_bytes(data[at + len..at + len + 8].try_into().unwrap_or([0; 8]));
        if a != b {
            return len + ((a ^ b).trailing_zeros() / 8) as usize;
        }
        len += 8;
    }
    while len < max && data[from + len] == data[at + len] {
        len += 1;
    }
    len
}

/// The length symbol (257–285) of a match of `len` (3–258) bytes, its
/// extra bits' number and value (RFC 1951 §3.2.5).
fn length_code(len: usize) -> (usize, u32, u32) {
    if len == MAX_MATCH {
        return (285, 0, 0);
    }
    let l = (len - 3) as u32;
    if l < 8 {
        return (257 + l as usize, 0, 0);
    }
    let top = 31 - l.leading_zeros();
    let symbol = 257 + 4 * (top - 1) + ((l >> (top - 2)) & 3);
    (symbol as usize, top - 2, l & ((1 << (top - 2)) - 1))
}

/// The distance symbol (0–29) of a distance of 1–32768, its extra bits'
/// number and value (RFC 1951 §3.2.5).
fn distance_code(distance: usize) -> (usize, u32, u32) {
    let d = (distance - 1) as u32;
    if d < 4 {
        return (d as usize, 0, 0);
    }
    let top = 31 - d.leading_zeros();
    let symbol = 2 * top + ((d >> (top - 1)) & 1);
    (symbol as usize, top - 1, d & ((1 << (top - 1)) - 1))
}

/// The fixed literal/length code's lengths (RFC 1951 §3.2.6).
const FIXED_LENGTHS: [u8; LIT_LEN] = {
    let mut lengths = [8u8; LIT_LEN];
    let mut i = 0;
    while i < LIT_LEN {
        lengths[i] = match i {
            0..=143 => 8,
            144..=255 => 9,
            256..=279 => 7,
            _ => 8,
        };
        i += 1;
    }
    lengths
};

/// The fixed literal/length code's codes, bit-reversed for sending.
const FIXED_CODES: [u16; LIT_LEN] = {
    let mut codes = [0u16; LIT_LEN];
    let mut i = 0;
    while i < LIT_LEN {
        let (code, bits) = match i {
            0..=143 => (0b0011_0000 + i as u16, 8),
            144..=255 => (0b1_1001_0000 + (i - 144) as u16, 9),
            256..=279 => ((i - 256) as u16, 7),
            _ => (0b1100_0000 + (i - 280) as u16, 8),
        };
        codes[i] = code.reverse_bits() >> (16 - bits);
        i += 1;
    }
    codes
};

/// The fixed distance code: five bits, bit-reversed for sending.
const FIXED_DISTANCE_CODES: [u16; DISTANCES] = {
    let mut codes = [0u16; DISTANCES];
    let mut i = 0;
    while i < DISTANCES {
        codes[i] = (i as u16).reverse_bits() >> 11;
        i += 1;
    }
    codes
};

/// The coded size, in bits, of symbols seen `freq` times with `lengths`.
fn bits_of<const N: usize>(freq: &[u32; N], lengths: &[u8; N]) -> u64 {
    freq.iter().zip(lengths).map(|(&f, &l)| u64::from(f) * u64::from(l)).sum()
}

/// Writes into `lengths` Huffman code lengths for symbols seen `freq`
/// times, none longer than `limit`. At least two symbols get a code, so
/// that the code is complete.
fn code_lengths<const N: usize>(freq: &[u32; N], limit: u8, lengths: &mut [u8; N]) {
    let mut weights = *freq;
    let used = weights.iter().filter(|&&w| w > 0).count();
    for w in weights.iter_mut().filter(|w| **w == 0).take(2usize.saturating_sub(used)) {
        *w = 1;
    }
    loop {
        huffman_lengths(&weights, lengths);
        if lengths.iter().all(|&l| l <= limit) {
            return;
        }
        // Too deep: flatten the weights and build again. Each round halves
        // the spread; equal weights give a code of depth ⌈log2 n⌉.
        for w in weights.iter_mut().filter(|w| **w > 0) {
            *w = (*w >> 1) | 1;
        }
    }
}

/// Writes into `lengths` unlimited Huffman code lengths for the non-zero
/// `weights` (at least two), with the two-queue method: the leaves sorted
/// by weight in one queue, the merged nodes (made in order of weight) in
/// the other.
fn huffman_lengths<const N: usize>(weights: &[u32; N], lengths: &mut [u8; N]) {
    // Weight and symbol in one sortable key: weights count the symbols of
    // one block (at most `BLOCK` + 1 of them, or 19 code length symbols),
    // so they fit in 22 bits above the symbol's 10.
    let mut leaves = [0u32; N];
    let mut n = 0;
    for (symbol, &w) in weights.iter().enumerate() {
        if w > 0 {
            leaves[n] = w.min(MAX_WEIGHT) << 10 | symbol as u32;
            n += 1;
        }
    }
    let leaves = &mut leaves[..n];
    leaves.sort_unstable();
    // Node i < N is leaf i (in sorted order); node N + j is merge j.
    let mut merged = [0u32; N];
    let mut parent = [[0u16; N]; 2];
    let weight = |node: usize, merged: &[u32; N]| if node < N { leaves[node] >> 10 } else { merged[node - N] };
    let (mut next_leaf, mut next_merge, mut made) = (0, 0, 0);
    while made + 1 < n {
        let mut pick = [0usize; 2];
        for slot in &mut pick {
            let take_leaf =
                next_leaf < n && (next_merge >= made || weight(next_leaf, &merged) <= weight(N + next_merge, &merged));
            if take_leaf {
                *slot = next_leaf;
                next_leaf += 1;
            } else {
                *slot = N + next_merge;
                next_merge += 1;
            }
        }
        merged[made] = weight(pick[0], &merged).saturating_add(weight(pick[1], &merged));
        for node in pick {
            parent[node / N][node % N] = made as u16;
        }
        made += 1;
    }
    // Depths top-down from the root, the last merge.
    let mut depth = [0u8; N];
    for j in (0..made.saturating_sub(1)).rev() {
        depth[j] = depth[usize::from(parent[1][j])].saturating_add(1);
    }
    lengths.fill(0);
    for (i, leaf) in leaves.iter().enumerate() {
        lengths[(leaf & 0x3ff) as usize] = depth[usize::from(parent[0][i])].saturating_add(1);
    }
}

/// The largest weight a sort key holds.
const MAX_WEIGHT: u32 = (1 << 22) - 1;

/// Writes into `codes` the canonical codes (RFC 1951 §3.2.2) of `lengths`,
/// bit-reversed for sending least significant bit first.
fn canonical_codes(lengths: &[u8], codes: &mut [u16]) {
    let mut count = [0u16; 16];
    for &l in lengths {
        if l > 0 {
            count[usize::from(l)] += 1;
        }
    }
    let mut next = [0u16; 16];
    let mut code = 0u16;
    for bits in 1..16 {
        code = (code + count[bits - 1]) << 1;
        next[bits] = code;
    }
    for (out, &l) in codes.iter_mut().zip(lengths) {
        *out = 0;
        if l > 0 {
            *out = next[usize::from(l)].reverse_bits() >> (16 - l);
            next[usize::from(l)] += 1;
        }
    }
}

/// Writes into `runs` the code length sequence, run-length coded with
/// symbols 16 (repeat the previous length 3–6 times), 17 (3–10 zeros) and
/// 18 (11–138 zeros); returns how many runs it wrote (never more than
/// there are lengths).
fn run_lengths(lengths: &[u8], runs: &mut [Run]) -> usize {
    let plain = |symbol| Run { symbol, extra: 0, extra_bits: 0 };
    let mut made = 0;
    let mut push = |run| {
        runs[made] = run;
        made += 1;
    };
    let mut i = 0;
    while i < lengths.len() {
        let length = lengths[i];
        let mut n = lengths[i..].iter().take_while(|&&l| l == length).count();
        i += n;
        if length == 0 {
            while n >= 11 {
                let k = n.min(138);
                push(Run { symbol: 18, extra: (k - 11) as u8, extra_bits: 7 });
                n -= k;
            }
            if n >= 3 {
                push(Run { symbol: 17, extra: (n - 3) as u8, extra_bits: 3 });
                n = 0;
            }
        } else {
            push(plain(length));
            n -= 1;
            while n >= 3 {
                let k = n.min(6);
                push(Run { symbol: 16, extra: (k - 3) as u8, extra_bits: 2 });
                n -= k;
            }
        }
        for _ in 0..n {
            push(plain(length));
        }
    }
    made
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn encode(pieces: &[&[u8]]) -> Vec<u8> {
        let mut encoder = BlockEncoder::default();
        let mut out = BytesMut::new();
        for (i, piece) in pieces.iter().enumerate() {
            encoder.huffman_only(piece, &mut out, i + 1 == pieces.len());
        }
        assert!(out.ends_with(&[0x00, 0x00, 0xff, 0xff]), "ends with a sync flush");
        out.to_vec()
    }

    fn fresh(data: &[u8], max_distance: usize) -> Vec<u8> {
        let mut out = BytesMut::new();
        BlockEncoder::default().fresh_message(data, &mut out, max_distance);
        assert!(out.ends_with(&[0x00, 0x00, 0xff, 0xff]), "ends with a sync flush");
        out.to_vec()
    }

    fn inflate(data: &[u8]) -> Vec<u8> {
        inflate_with_window(data, 15)
    }

    /// Inflates with a `bits` window: a distance beyond it is an error.
    fn inflate_with_window(data: &[u8], bits: u8) -> Vec<u8> {
        let mut inflater = Decompress::new_with_window_bits(false, bits);
        let mut out = Vec::new();
        loop {
            out.reserve(64 * 1024);
            let used = inflater.total_in() as usize;
            let status = inflater.decompress_vec(&data[used..], &mut out, FlushDecompress::Sync).unwrap();
            assert_ne!(status, flate2::Status::StreamEnd, "no final block");
            if inflater.total_in() as usize == data.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }

    fn round_trip(data: &[u8]) -> Vec<u8> {
        let coded = encode(&[data]);
        assert_eq!(inflate(&coded), data);
        coded
    }

    /// A deterministic byte stream with a skewed distribution.
    fn skewed(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly a handful of letters, sometimes anything.
                if x % 8 == 0 {
                    (x >> 8) as u8
                } else {
                    b"etaoin "[(x >> 16) as usize % 7]
                }
            })
            .collect()
    }

    #[test]
    fn round_trips_empty_single_and_every_byte() {
        assert_eq!(round_trip(b""), [0x00, 0x00, 0x00, 0xff, 0xff]);
        round_trip(b"a");
        round_trip(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        round_trip(&(0..=255u8).collect::<Vec<_>>());
        round_trip(&(0..=255u8).cycle().take(100_000).collect::<Vec<_>>());
        round_trip(&skewed(200_000, 7));
    }

    #[test]
    fn only_literals_no_back_references() {
        // Repetitive text that any LZ77 coder shrinks a hundredfold: coded
        // byte by byte it keeps at least one bit per byte.
        let data = b"abc".repeat(10_000);
        let coded = round_trip(&data);
        assert!(coded.len() >= data.len() / 8, "{} bytes", coded.len());
        assert!(coded.len() < data.len() / 3, "entropy coded: {} bytes", coded.len());
    }

    #[test]
    fn incompressible_data_is_stored() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..50_000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect();
        let coded = round_trip(&data);
        // Stored blocks cost 5 bytes per 16 KiB, plus the sync flush.
        assert!(coded.len() <= data.len() + 5 * 4 + 5, "{} bytes", coded.len());
    }

    #[test]
    fn deep_codes_are_limited_to_15_bits() {
        // Fibonacci counts make an unlimited Huffman code about 25 levels deep.
        let mut data = Vec::new();
        let (mut a, mut b) = (1usize, 1usize);
        for symbol in 0..25u8 {
            data.extend(std::iter::repeat(symbol).take(a));
            (a, b) = (b, a + b);
        }
        let mut freq = [0u32; LIT_LEN];
        for &byte in &data {
            freq[usize::from(byte)] += 1;
        }
        let mut lengths = [0u8; LIT_LEN];
        huffman_lengths(&freq, &mut lengths);
        assert!(lengths.iter().any(|&l| l > MAX_BITS), "the test needs a deep code");
        code_lengths(&freq, MAX_BITS, &mut lengths);
        assert!(lengths.iter().all(|&l| l <= MAX_BITS));
        // Still a complete prefix code: the Kraft sum is exactly one.
        let kraft: u64 = lengths.iter().filter(|&&l| l > 0).map(|&l| 1u64 << (MAX_BITS - l)).sum();
        assert_eq!(kraft, 1 << MAX_BITS);
        round_trip(&data);
    }

    #[test]
    fn pieces_of_a_message_and_successive_messages_share_one_stream() {
        let data = skewed(70_000, 3);
        let mut encoder = BlockEncoder::default();
        let mut stream = BytesMut::new();
        let mut expect = Vec::new();
        for (i, chunk) in data.chunks(9_999).enumerate() {
            encoder.huffman_only(chunk, &mut stream, i % 3 == 2);
            expect.extend_from_slice(chunk);
        }
        encoder.huffman_only(b"", &mut stream, true);
        assert_eq!(inflate(&stream), expect);
    }

    #[test]
    fn short_text_takes_the_fixed_code_when_smaller() {
        // Too short for a dynamic code's header to pay: BTYPE 01.
        let coded = round_trip(b"hi there");
        assert_eq!(coded[0] & 0b111, 0b010, "{coded:x?}");
        // Bytes above 143 cost 9 bits in the fixed code; a longer text of
        // few symbols gets its own code: BTYPE 10.
        let coded = round_trip(&"ééééé àààà ".repeat(40).into_bytes());
        assert_eq!(coded[0] & 0b111, 0b100, "{coded:x?}");
    }

    #[test]
    fn run_lengths_expand_to_the_lengths() {
        let lengths: Vec<u8> = [0u8; 140]
            .iter()
            .chain(&[5; 9])
            .chain(&[0; 12])
            .chain(&[3; 2])
            .chain(&[0; 4])
            .chain(&[7; 4])
            .copied()
            .collect();
        let mut expanded = Vec::new();
        let mut runs = [Run { symbol: 0, extra: 0, extra_bits: 0 }; 200];
        let count = run_lengths(&lengths, &mut runs);
        for run in &runs[..count] {
            match run.symbol {
                16 => {
                    let last = *expanded.last().unwrap();
                    expanded.extend(std::iter::repeat(last).take(3 + usize::from(run.extra)));
                }
                17 => expanded.extend(std::iter::repeat(0).take(3 + usize::from(run.extra))),
                18 => expanded.extend(std::iter::repeat(0).take(11 + usize::from(run.extra))),
                l => expanded.push(l),
            }
        }
        assert_eq!(expanded, lengths);
    }

    #[test]
    fn fresh_messages_round_trip() {
        for data in [
            Vec::new(),
            b"a".to_vec(),
            b"abc".to_vec(),
            b"abcd".to_vec(),
            b"abcdabcd".to_vec(),
            vec![7u8; 1000],
            b"{\"type\":\"message\",\"room\":\"general\",\"user\":\"user3\",\"text\":\"hello\"}".to_vec(),
            (0..=255u8).cycle().take(70_000).collect(),
            skewed(100_000, 11),
            b"the quick brown fox jumps over the lazy dog ".repeat(3000),
        ] {
            assert_eq!(inflate(&fresh(&data, 32768)), data, "{} bytes", data.len());
        }
    }

    #[test]
    fn long_input_is_taken_in_pieces_that_see_the_window_before_them() {
        // Several pieces: matches cross the pieces' edges, none beyond the window.
        let data = b"the quick brown fox jumps over the lazy dog ".repeat(10_000);
        for window in [512, 32768] {
            let mut out = BytesMut::new();
            let mut encoder = BlockEncoder::default();
            encoder.with_history(&[], window, &data[..200_000], &mut out, false);
            encoder.with_history(&data[200_000 - window..200_000], window, &data[200_000..], &mut out, true);
            assert_eq!(inflate(&out), data);
            assert!(out.len() < data.len() / 50, "window {window}: {} bytes", out.len());
            let (longest, _) = last_block_distances();
            assert!(longest <= window);
        }
        // The thread's buffer holds a window and a piece, not the input.
        FINDER.with(|cell| assert!(cell.borrow().as_ref().unwrap().joined.capacity() <= 2 * (32768 + PIECE)));
    }

    #[test]
    fn fresh_messages_use_back_references() {
        let data = b"the quick brown fox jumps over the lazy dog ".repeat(100);
        let coded = fresh(&data, 32768);
        assert!(coded.len() < data.len() / 20, "{} bytes of {}", coded.len(), data.len());
        // Messages of the same thread do not refer to each other: each
        // inflates alone, the first as well as the second.
        let again = fresh(&data, 32768);
        assert_eq!(again, coded);
        assert_eq!(inflate(&again), data);
    }

    /// The longest distance among the thread's last block's matches, and
    /// how many matches it has.
    fn last_block_distances() -> (usize, usize) {
        FINDER.with(|cell| {
            let finder = cell.borrow();
            let tokens = &finder.as_ref().unwrap().tokens;
            let matches = tokens.iter().filter(|&&t| t & MATCH != 0);
            (matches.clone().map(|&t| (t & 0xffff) as usize).max().unwrap_or(0), matches.count())
        })
    }

    #[test]
    fn fresh_matches_stay_within_the_window() {
        // Noise a little longer than the window, repeated: every copy lies
        // just beyond a 9-bit window (zlib's inflater would read it anyway,
        // so the tokens are checked).
        for bits in 9..=15 {
            let window = 1usize << bits;
            let data = skewed(window + 37, bits as u64).repeat(3);
            let coded = fresh(&data, window);
            assert_eq!(inflate(&coded), data);
            let (longest, count) = last_block_distances();
            assert!(longest <= window, "{bits} bits: a distance of {longest}");
            assert!(count > 0);
        }

        // A 700-byte unit repeated: the nearest earlier copy is 700 bytes
        // back, beyond a 9-bit window (512 bytes).
        let unit = skewed(700, 5);
        let data = unit.repeat(20);
        let small = fresh(&data, 512);
        assert_eq!(inflate_with_window(&small, 9), data);
        let wide = fresh(&data, 32768);
        assert!(wide.len() < small.len() / 4, "{} against {}", wide.len(), small.len());
    }

    #[test]
    fn length_and_distance_codes_match_the_rfc_tables() {
        // RFC 1951 §3.2.5: (symbol, extra bits, base) for some lengths and distances.
        for (len, want) in
            [(3, (257, 0, 0)), (10, (264, 0, 0)), (11, (265, 1, 0)), (12, (265, 1, 1)), (13, (266, 1, 0))]
        {
            assert_eq!(length_code(len), want, "length {len}");
        }
        for (len, want) in [(227, (284, 5, 0)), (257, (284, 5, 30)), (258, (285, 0, 0)), (35, (273, 3, 0))] {
            assert_eq!(length_code(len), want, "length {len}");
        }
        for (d, want) in
            [(1, (0, 0, 0)), (4, (3, 0, 0)), (5, (4, 1, 0)), (6, (4, 1, 1)), (7, (5, 1, 0)), (9, (6, 2, 0))]
        {
            assert_eq!(distance_code(d), want, "distance {d}");
        }
        for (d, want) in [(24577, (29, 13, 0)), (32768, (29, 13, 8191)), (16385, (28, 13, 0)), (257, (16, 7, 0))] {
            assert_eq!(distance_code(d), want, "distance {d}");
        }
    }
}
