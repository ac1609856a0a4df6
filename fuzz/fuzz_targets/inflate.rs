//! permessage-deflate compression.
//!
//! Byte 0, bit 0 picks the mode.
//!
//! Inflate (bit 0 clear): an `Inflater` on arbitrary bytes never panics, and
//! every `inflate` / `finish` call appends at most `max_out` bytes; a call that
//! does not fill `max_out` has taken all its input (the decoder relies on it
//! to make progress). Bit 1: no context takeover. Bytes 1–2: `max_out - 1`
//! (u16 LE). Bytes 3–4: length of the first message (u16 LE; the rest is the
//! second message). Byte 5: input piece size (0: whole). Then the data.
//!
//! Round trip (bit 0 set): `Deflater` then `Inflater` gives every message back,
//! whatever the level, window (9–15 bits), context takeover and the way input
//! and output are cut. Bit 1: no context takeover. Bit 2: the inflater keeps
//! its context even so. Bit 3: `Deflater::reset` between messages. Byte 1:
//! level (`b % 12 - 2`: −2 to 9). Byte 2: window bits. Bytes 3–4: `max_out - 1`. Byte 5: compress piece
//! size, byte 6: inflate piece size (0: whole). Byte 7: if not 0, the level is
//! set to `(b - 1) % 12 - 2` after the first message. Byte 8: the separator of the
//! messages in the rest.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use silverback::proto::deflate::{Deflater, Inflater};

/// Inflated bytes worth producing for one input; more only slows the fuzzer.
const OUTPUT_CAP: usize = 4 << 20;

fuzz_target!(|data: &[u8]| {
    match data.first() {
        Some(b) if b & 1 == 0 => inflate_arbitrary(data),
        Some(_) => round_trip(data),
        None => {}
    }
});

fn pieces(data: &[u8], size: u8) -> impl Iterator<Item = &[u8]> {
    let size = if size == 0 { data.len().max(1) } else { usize::from(size) };
    data.chunks(size)
}

/// Inflates `input` (one message's compressed data, cut into pieces), calling
/// `sink` with each call's output. `Err` when the data is corrupt; `Ok(false)`
/// when the output cap was reached first.
fn inflate_message(
    inflater: &mut Inflater,
    input: &[u8],
    piece: u8,
    max_out: usize,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<bool, String> {
    let mut total = 0;
    let mut out = BytesMut::new();
    for mut rest in pieces(input, piece) {
        while !rest.is_empty() {
            out.clear();
            let used = inflater.inflate(rest, &mut out, max_out).map_err(|e| e.0)?;
            assert!(used <= rest.len());
            assert!(out.len() <= max_out, "inflate gave {} bytes for max_out {max_out}", out.len());
            if out.len() < max_out {
                assert_eq!(used, rest.len(), "output room left, yet input left unused");
            }
            sink(&out);
            total += out.len();
            if total > OUTPUT_CAP {
                return Ok(false);
            }
            rest = &rest[used..];
        }
    }
    loop {
        out.clear();
        let done = inflater.finish(&mut out, max_out).map_err(|e| e.0)?;
        assert!(out.len() <= max_out, "finish gave {} bytes for max_out {max_out}", out.len());
        if !done {
            assert_eq!(out.len(), max_out, "finish not done with output room left");
        }
        sink(&out);
        total += out.len();
        if done {
            return Ok(true);
        }
        if total > OUTPUT_CAP {
            return Ok(false);
        }
    }
}

fn inflate_arbitrary(data: &[u8]) {
    let [flags, m0, m1, l0, l1, piece, rest @ ..] = data else { return };
    let max_out = usize::from(u16::from_le_bytes([*m0, *m1])) + 1;
    let first = usize::from(u16::from_le_bytes([*l0, *l1])).min(rest.len());
    let mut inflater = Inflater::new(flags & 2 != 0);
    for message in [&rest[..first], &rest[first..]] {
        match inflate_message(&mut inflater, message, *piece, max_out, &mut |_| {}) {
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
    }
}

fn round_trip(data: &[u8]) {
    let [flags, level, bits, m0, m1, deflate_piece, inflate_piece, new_level, sep, rest @ ..] = data else {
        return;
    };
    let no_takeover = flags & 2 != 0;
    let inflater_no_takeover = no_takeover && flags & 4 == 0;
    let window_bits = 9 + bits % 7;
    let max_out = usize::from(u16::from_le_bytes([*m0, *m1])) + 1;
    let mut deflater = Deflater::new(i32::from(level % 12) - 2, window_bits, no_takeover);
    assert!(deflater.can_compress());
    let mut inflater = Inflater::new(inflater_no_takeover);

    for (i, message) in rest.split(|b| b == sep).take(16).enumerate() {
        if i == 1 && *new_level != 0 {
            deflater.set_level(i32::from((new_level - 1) % 12) - 2);
        }
        if i > 0 && flags & 8 != 0 {
            deflater.reset();
        }
        let mut wire = BytesMut::new();
        let mut parts = pieces(message, *deflate_piece).peekable();
        if parts.peek().is_none() {
            deflater.compress(&[], &mut wire, true);
        }
        while let Some(part) = parts.next() {
            deflater.compress(part, &mut wire, parts.peek().is_none());
        }

        let mut back = Vec::with_capacity(message.len());
        let done = inflate_message(&mut inflater, &wire, *inflate_piece, max_out, &mut |out| {
            back.extend_from_slice(out);
            assert!(back.len() <= message.len(), "message {i}: inflated more than was compressed");
        });
        assert_eq!(done, Ok(true), "message {i} of {} bytes: compressed {wire:02x?}", message.len());
        assert!(back == message, "message {i} of {} bytes comes back different", message.len());
    }
}
