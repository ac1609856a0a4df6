//! Huffman-only DEFLATE (compression level −2, zlib's `Z_HUFFMAN_ONLY`):
//! every byte goes out as a literal, coded with a Huffman code built for its
//! block (RFC 1951 §3.2.7), or in a stored block when that is smaller. No
//! byte refers back to earlier data, so the encoder keeps no history: it
//! suits a sender with or without context takeover and holds no window.

use bytes::{BufMut, BytesMut};

/// The most input coded with one block's code: small enough for the code to
/// follow changes in the data, large enough for its header not to matter.
const BLOCK: usize = 16 * 1024;
/// Longest literal/length code (RFC 1951 §3.2.7).
const MAX_BITS: u8 = 15;
/// Longest code length code.
const MAX_CL_BITS: u8 = 7;
/// The order in which the code length code's lengths are sent.
const CL_ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
/// The literal/length symbol that ends a block.
const END_OF_BLOCK: usize = 256;
/// Literal/length symbols sent: the 256 literals and the end of block.
const LITERALS: usize = 257;
/// Distance code lengths sent: two codes of one bit. No distance is ever
/// used, but a complete code is what every inflater accepts (zlib's own
/// deflate sends the same).
const DISTANCES: [u8; 2] = [1, 1];

/// Codes Huffman-only blocks; carries the bits that do not yet fill a byte
/// from one piece of a message to the next.
#[derive(Debug, Default)]
pub(crate) struct HuffmanEncoder {
    bits: u64,
    count: u32,
}

/// One run-length coded entry of the code lengths (RFC 1951 §3.2.7): a code
/// length code symbol, and its extra bits' value and number.
#[derive(Clone, Copy)]
struct Run {
    symbol: u8,
    extra: u8,
    extra_bits: u8,
}

impl HuffmanEncoder {
    /// Codes `input` as part of the current message, appending to `out`.
    /// With `end`, ends the message with a sync flush (an empty stored
    /// block, whose `00 00 ff ff` the caller removes).
    pub(crate) fn compress(&mut self, input: &[u8], out: &mut BytesMut, end: bool) {
        for block in input.chunks(BLOCK) {
            self.block(block, out);
        }
        if end {
            // BFINAL 0, BTYPE 00, then LEN 0 and NLEN 0xffff from a byte boundary.
            self.put(out, 0, 3);
            self.align(out);
            out.put_slice(&[0x00, 0x00, 0xff, 0xff]);
        }
    }

    /// Forgets bits of an unfinished message.
    pub(crate) fn reset(&mut self) {
        *self = HuffmanEncoder::default();
    }

    fn block(&mut self, data: &[u8], out: &mut BytesMut) {
        let mut freq = [0u32; LITERALS];
        for &byte in data {
            freq[usize::from(byte)] += 1;
        }
        freq[END_OF_BLOCK] = 1;
        let mut lengths = [0u8; LITERALS];
        code_lengths(&freq, MAX_BITS, &mut lengths);

        // Both codes' lengths, as one run-length coded sequence.
        let mut all = [0u8; LITERALS + DISTANCES.len()];
        all[..LITERALS].copy_from_slice(&lengths);
        all[LITERALS..].copy_from_slice(&DISTANCES);
        let mut runs = [Run { symbol: 0, extra: 0, extra_bits: 0 }; LITERALS + DISTANCES.len()];
        let count = run_lengths(&all, &mut runs);
        let runs = &runs[..count];
        let mut cl_freq = [0u32; 19];
        for run in runs {
            cl_freq[usize::from(run.symbol)] += 1;
        }
        let mut cl_lengths = [0u8; 19];
        code_lengths(&cl_freq, MAX_CL_BITS, &mut cl_lengths);
        let hclen = CL_ORDER.iter().rposition(|&s| cl_lengths[s] != 0).map_or(4, |last| (last + 1).max(4));

        // The block's size in bits three ways: dynamic codes, the fixed
        // codes (RFC 1951 §3.2.6: literals 0–143 in 8 bits, 144–255 in 9,
        // the end of block in 7), stored (3 header bits, the padding to a
        // byte, LEN and NLEN, the bytes). The smallest is sent.
        let header_bits = 3
            + 5
            + 5
            + 4
            + 3 * hclen as u64
            + runs.iter().map(|r| u64::from(cl_lengths[usize::from(r.symbol)]) + u64::from(r.extra_bits)).sum::<u64>();
        let dynamic_bits = header_bits + bits_of(&freq, &lengths);
        let fixed_bits = 3 + bits_of(&freq, &FIXED_LENGTHS);
        let pad = u64::from((8 - (self.count + 3) % 8) % 8);
        let stored_bits = 3 + pad + 32 + 8 * data.len() as u64;
        if stored_bits <= dynamic_bits.min(fixed_bits) {
            self.put(out, 0, 3);
            self.align(out);
            let len = data.len() as u16;
            out.put_u16_le(len);
            out.put_u16_le(!len);
            out.put_slice(data);
            return;
        }
        if fixed_bits <= dynamic_bits {
            // BFINAL 0, BTYPE 01 (fixed codes).
            self.put(out, 0b010, 3);
            self.literals(out, data, &FIXED_LENGTHS, &FIXED_CODES);
            return;
        }

        let mut codes = [0u16; LITERALS];
        canonical_codes(&lengths, &mut codes);
        let mut cl_codes = [0u16; 19];
        canonical_codes(&cl_lengths, &mut cl_codes);
        // BFINAL 0, BTYPE 10 (dynamic codes), HLIT, HDIST, HCLEN.
        self.put(out, 0b100, 3);
        self.put(out, (LITERALS - 257) as u32, 5);
        self.put(out, (DISTANCES.len() - 1) as u32, 5);
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
        self.literals(out, data, &lengths, &codes);
    }

    /// Every byte of `data` with its code, then the end of block.
    fn literals(&mut self, out: &mut BytesMut, data: &[u8], lengths: &[u8; LITERALS], codes: &[u16; LITERALS]) {
        for &byte in data {
            let symbol = usize::from(byte);
            self.put(out, u32::from(codes[symbol]), u32::from(lengths[symbol]));
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

/// The fixed literal/length code's lengths for the literals and the end of
/// block (RFC 1951 §3.2.6).
const FIXED_LENGTHS: [u8; LITERALS] = {
    let mut lengths = [8u8; LITERALS];
    let mut i = 144;
    while i < 256 {
        lengths[i] = 9;
        i += 1;
    }
    lengths[END_OF_BLOCK] = 7;
    lengths
};

/// The fixed code's codes, bit-reversed for sending.
const FIXED_CODES: [u16; LITERALS] = {
    // Canonical codes: 7-bit codes from 0 (the end of block is the first
    // 7-bit symbol), 8-bit from 0b0011_0000, 9-bit from 0b1_1001_0000.
    let mut codes = [0u16; LITERALS];
    let mut i = 0;
    while i < LITERALS {
        let (code, bits) = match i {
            0..=143 => (0b0011_0000 + i as u16, 8),
            144..=255 => (0b1_1001_0000 + (i - 144) as u16, 9),
            _ => (0, 7),
        };
        codes[i] = code.reverse_bits() >> (16 - bits);
        i += 1;
    }
    codes
};

/// The coded size, in bits, of symbols seen `freq` times with `lengths`.
fn bits_of(freq: &[u32; LITERALS], lengths: &[u8; LITERALS]) -> u64 {
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
    // Weight and symbol in one sortable key (a block holds at most 64 KiB,
    // so a weight fits in the high 32 bits).
    let mut leaves = [0u64; N];
    let mut n = 0;
    for (symbol, &w) in weights.iter().enumerate() {
        if w > 0 {
            leaves[n] = u64::from(w) << 32 | symbol as u64;
            n += 1;
        }
    }
    let leaves = &mut leaves[..n];
    leaves.sort_unstable();
    // Node i < N is leaf i (in sorted order); node N + j is merge j.
    let mut merged = [0u64; N];
    let mut parent = [[0u16; N]; 2];
    let weight = |node: usize, merged: &[u64; N]| if node < N { leaves_weight(leaves, node) } else { merged[node - N] };
    let (mut next_leaf, mut next_merge, mut made) = (0, 0, 0);
    while made < n - 1 {
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
        merged[made] = weight(pick[0], &merged) + weight(pick[1], &merged);
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
        lengths[(leaf & 0xffff) as usize] = depth[usize::from(parent[0][i])].saturating_add(1);
    }
}

fn leaves_weight(leaves: &[u64], i: usize) -> u64 {
    leaves[i] >> 32
}

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
        let mut encoder = HuffmanEncoder::default();
        let mut out = BytesMut::new();
        for (i, piece) in pieces.iter().enumerate() {
            encoder.compress(piece, &mut out, i + 1 == pieces.len());
        }
        assert!(out.ends_with(&[0x00, 0x00, 0xff, 0xff]), "ends with a sync flush");
        out.to_vec()
    }

    fn inflate(data: &[u8]) -> Vec<u8> {
        let mut inflater = Decompress::new(false);
        let mut out = Vec::with_capacity(data.len() * 8 + 1024);
        let status = inflater.decompress_vec(data, &mut out, FlushDecompress::Sync).unwrap();
        assert_ne!(status, flate2::Status::StreamEnd, "no final block");
        assert_eq!(inflater.total_in() as usize, data.len(), "all input used");
        out
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
        let mut freq = [0u32; LITERALS];
        for &byte in &data {
            freq[usize::from(byte)] += 1;
        }
        let mut lengths = [0u8; LITERALS];
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
        let mut encoder = HuffmanEncoder::default();
        let mut stream = BytesMut::new();
        let mut expect = Vec::new();
        for (i, chunk) in data.chunks(9_999).enumerate() {
            encoder.compress(chunk, &mut stream, i % 3 == 2);
            expect.extend_from_slice(chunk);
        }
        encoder.compress(b"", &mut stream, true);
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
}
