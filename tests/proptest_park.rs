//! Property tests for parked compression states (permessage-deflate with
//! context takeover, RFC 7692 §7.2.1): a parked state keeps only its window
//! and is restored from it as a preset dictionary.
//!
//! - An inflater parked before any messages of a random sequence gives the
//!   same output as one never parked.
//! - A compressor parked before random messages makes payloads that a
//!   never-parked inflater turns back into exactly the input. The bytes
//!   themselves may differ from an unparked compressor's: after a restore,
//!   zlib's match finder knows every string of the window, where the running
//!   compressor had skipped some (`parked_output_may_differ_in_bytes` shows
//!   such a case), so only the inflated data is the same.
//! - A peer that ends messages with a final block (BFINAL) and refers back
//!   into the window in the next message is inflated correctly.
//!
//! Windows of 9 to 15 bits, levels 1 and 9.

use bytes::BytesMut;
use flate2::{Compress, Compression, FlushCompress};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;
use silverback::proto::deflate::{Deflater, Inflater};

/// Payloads up to 40 000 bytes (beyond the largest window, so that windows
/// wrap): random, of a small alphabet, repeats of a short unit, or slices of
/// a shared text (so that messages refer back to each other).
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..=2000),
        vec(0u8..4, 0..=4000),
        (vec(any::<u8>(), 1..=64), 0usize..=700).prop_map(|(unit, n)| unit.repeat(n)),
        (0usize..30_000, 0usize..=10_000).prop_map(|(start, len)| corpus()[start..start + len].to_vec()),
    ]
}

/// A text with long repeats at every distance.
fn corpus() -> Vec<u8> {
    let words = ["alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta ", "eta ", "theta "];
    let mut out = Vec::with_capacity(40_000);
    let mut x = 12345u32;
    while out.len() < 40_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        out.extend_from_slice(words[(x >> 16) as usize % words.len()].as_bytes());
    }
    out
}

fn window_bits() -> impl Strategy<Value = u8> {
    9u8..=15
}

fn level() -> impl Strategy<Value = u32> {
    prop_oneof![Just(1u32), Just(9u32)]
}

fn config() -> Config {
    Config { cases: 96, failure_persistence: None, ..Config::default() }
}

fn inflate(inflater: &mut Inflater, wire: &[u8]) -> Result<Vec<u8>, TestCaseError> {
    let mut out = BytesMut::new();
    let mut rest = wire;
    while !rest.is_empty() {
        let used = inflater.inflate(rest, &mut out, 1 << 14).map_err(|e| TestCaseError::fail(e.0))?;
        rest = &rest[used..];
    }
    while !inflater.finish(&mut out, 1 << 14).map_err(|e| TestCaseError::fail(e.0))? {}
    Ok(out.to_vec())
}

fn compress(deflater: &mut Deflater, data: &[u8]) -> Vec<u8> {
    let mut wire = BytesMut::new();
    deflater.compress_message(data, &mut wire);
    wire.to_vec()
}

/// A message as a peer sends it when it ends the stream with a final block
/// (zlib's `Z_FINISH`), its context being the window it had before.
fn finished(context: &[u8], data: &[u8], bits: u8, level: u32) -> Vec<u8> {
    let mut c = Compress::new_with_window_bits(Compression::new(level), false, bits);
    let window = 1usize << bits;
    if !context.is_empty() {
        c.set_dictionary(&context[context.len().saturating_sub(window)..]).unwrap();
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 1024);
    let status = c.compress_vec(data, &mut out, FlushCompress::Finish).unwrap();
    assert_eq!(status, flate2::Status::StreamEnd);
    out
}

/// A message as a peer sends it when it ends it with a sync flush (the
/// usual way), its context being the window it had before.
fn flushed(context: &[u8], data: &[u8], bits: u8, level: u32) -> Vec<u8> {
    let mut c = Compress::new_with_window_bits(Compression::new(level), false, bits);
    let window = 1usize << bits;
    if !context.is_empty() {
        c.set_dictionary(&context[context.len().saturating_sub(window)..]).unwrap();
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 1024);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    if out.is_empty() {
        out.push(0);
    }
    out
}

proptest! {
    #![proptest_config(config())]

    /// Inflating with parks between messages gives what inflating without
    /// them gives: the messages.
    #[test]
    fn a_parked_inflater_inflates_the_same(
        bits in window_bits(),
        level in level(),
        messages in vec((payload(), any::<bool>()), 1..8),
    ) {
        let mut deflater = Deflater::new(level, bits, false);
        let mut plain = Inflater::with_window_bits(false, bits);
        let mut parked = Inflater::with_window_bits(false, bits);
        for (i, (data, park)) in messages.iter().enumerate() {
            let wire = compress(&mut deflater, data);
            if *park {
                parked.park();
                prop_assert!(!parked.holds_state());
            }
            let a = inflate(&mut plain, &wire)?;
            let b = inflate(&mut parked, &wire)?;
            prop_assert!(a == *data, "message {}: the unparked inflater", i);
            prop_assert!(b == a, "message {}: {} bytes parked, {} unparked", i, b.len(), a.len());
        }
    }

    /// A compressor parked between messages makes payloads that an
    /// independent, never-parked inflater turns back into the input.
    #[test]
    fn a_parked_deflater_makes_a_valid_stream(
        bits in window_bits(),
        level in level(),
        messages in vec((payload(), any::<bool>()), 1..8),
    ) {
        let mut parked = Deflater::new(level, bits, false);
        let mut inflater = Inflater::with_window_bits(false, bits);
        for (i, (data, park)) in messages.iter().enumerate() {
            if *park {
                parked.park();
                prop_assert!(!parked.holds_state());
            }
            let wire = compress(&mut parked, data);
            let back = inflate(&mut inflater, &wire)?;
            prop_assert!(back == *data, "message {}: {} bytes in, {} out", i, data.len(), back.len());
        }
    }

    /// Messages ended with a final block, each referring back into what came
    /// before, inflate correctly, with or without parks between them.
    #[test]
    fn final_blocks_keep_the_window(
        bits in window_bits(),
        level in level(),
        messages in vec((payload(), any::<bool>(), any::<bool>()), 1..6),
    ) {
        let mut inflater = Inflater::with_window_bits(false, bits);
        let mut context = Vec::new();
        for (i, (data, final_block, park)) in messages.iter().enumerate() {
            if *park {
                inflater.park();
            }
            let wire = if *final_block {
                finished(&context, data, bits, level)
            } else {
                flushed(&context, data, bits, level)
            };
            let back = inflate(&mut inflater, &wire)?;
            prop_assert!(back == *data, "message {} ({}): {} bytes in, {} out", i, final_block, data.len(), back.len());
            context.extend_from_slice(data);
        }
    }
}

/// Whether the bytes a parked compressor makes match an unparked one's
/// depends on zlib's match finder; this shows that they can differ, which is
/// why the properties above compare inflated data.
#[test]
fn parked_output_may_differ_in_bytes() {
    let text = corpus();
    let mut differ = 0;
    for level in [1, 9] {
        for bits in 9..=15u8 {
            let mut plain = Deflater::new(level, bits, false);
            let mut parked = Deflater::new(level, bits, false);
            let mut inflater = Inflater::with_window_bits(false, bits);
            for i in 0..6 {
                let data = &text[i * 3000..i * 3000 + 2500];
                let a = compress(&mut plain, data);
                parked.park();
                let b = compress(&mut parked, data);
                differ += usize::from(a != b);
                assert_eq!(inflate(&mut inflater, &b).unwrap(), data);
            }
        }
    }
    // Seen with zlib-rs: 36 of the 84 differ.
    assert!(differ > 0, "every payload was byte-identical after a restore: the module docs can say so");
}
