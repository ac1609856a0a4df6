//! Property tests for permessage-deflate (RFC 7692) in the sans-IO core.
//!
//! - `Deflater` to `Inflater`: any sequence of text and binary messages
//!   (binary up to 4 KiB), in any mode (context takeover or not, window of
//!   9 to 15 bits, level −2 (Huffman only) to 9), compressed whole or streamed in pieces,
//!   inflated from input pieces of any size with any output bound, gives the
//!   messages back; no call returns more than its bound.
//! - `Decoder` with an `Inflater`: the same messages, compressed (RSV1 on
//!   the first frame) or not, fragmented at any byte, pings between
//!   fragments, either role's masking, fed in chunks of any size, decode to
//!   the same messages, inflated data in chunks of at most
//!   `MAX_INFLATED_CHUNK`.
//! - Empty messages anywhere in such a sequence.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use silverback::proto::decoder::MAX_INFLATED_CHUNK;
use silverback::proto::deflate::{Deflater, Inflater};
use silverback::proto::encoder::encode_frame;
use silverback::proto::frame::RSV1;
use silverback::proto::{Decoder, Event, MessageType, OpCode, Role};

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// What both ends agreed for one direction, and the sender's level.
#[derive(Clone, Copy, Debug)]
struct Mode {
    no_context_takeover: bool,
    window_bits: u8,
    level: i32,
}

fn mode() -> impl Strategy<Value = Mode> {
    (any::<bool>(), 9u8..=15, -2i32..=9).prop_map(|(no_context_takeover, window_bits, level)| Mode {
        no_context_takeover,
        window_bits,
        level,
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Msg {
    kind: MessageType,
    data: Vec<u8>,
}

/// Binary payloads of `min..=4096` bytes: random, of a small alphabet, or
/// repeats of a short unit (so that both stored and Huffman blocks, and
/// long back-references, occur).
fn binary(min: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), min..=4096),
        vec(0u8..4, min..=4096),
        (vec(any::<u8>(), 1..=64), 0usize..=200).prop_map(move |(unit, n)| {
            let mut data = unit.repeat(n.max(min));
            data.truncate(4096);
            data
        }),
    ]
}

fn text(min: usize) -> impl Strategy<Value = String> {
    let min_chars = min.min(1);
    prop_oneof![
        vec(any::<char>(), min_chars..300).prop_map(String::from_iter),
        "[a-z ]{1,1000}",
        "[a-zé€😀 ]{1,300}",
        "(hello wörld ){1,50}",
    ]
    .prop_filter("at least `min` bytes", move |s| s.len() >= min)
}

/// A text or binary message of at least `min` bytes.
fn message(min: usize) -> impl Strategy<Value = Msg> {
    prop_oneof![
        binary(min).prop_map(|data| Msg { kind: MessageType::Binary, data }),
        text(min).prop_map(|s| Msg { kind: MessageType::Text, data: s.into_bytes() }),
    ]
}

/// Words of a small vocabulary, for messages that repeat each other.
fn sentence(words: &[usize]) -> Vec<u8> {
    const VOCABULARY: [&str; 12] = [
        "alpha ", "bravo ", "charlie ", "delta ", "echo ", "foxtrot ", "golf ", "hotel ", "india ", "juliet ", "kilo ",
        "lima ",
    ];
    words.iter().flat_map(|&w| VOCABULARY[w].bytes()).collect()
}

/// Messages among which empty ones are frequent.
fn message_or_empty() -> impl Strategy<Value = Msg> {
    prop_oneof![
        1 => message(0),
        1 => Just(Msg { kind: MessageType::Text, data: Vec::new() }),
        1 => Just(Msg { kind: MessageType::Binary, data: Vec::new() }),
    ]
}

/// Sorted cut positions in `0..=len`; repeats give empty pieces.
fn cut_points(indices: &[Index], len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = indices.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// The pieces of `data` between `cuts`.
fn pieces<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(data.len());
    bounds.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

fn config() -> Config {
    // No regression files next to the tests.
    Config { cases: 128, failure_persistence: None, ..Config::default() }
}

// ---------------------------------------------------------------------------
// Deflater to Inflater
// ---------------------------------------------------------------------------

/// Compresses one message, whole or streamed in the pieces `cuts` make.
fn compress(deflater: &mut Deflater, data: &[u8], streamed: Option<&[usize]>) -> BytesMut {
    let mut wire = BytesMut::new();
    match streamed {
        None => deflater.compress_message(data, &mut wire),
        Some(cuts) => {
            for piece in pieces(data, cuts) {
                deflater.compress(piece, &mut wire, false);
            }
            deflater.compress(&[], &mut wire, true);
        }
    }
    wire
}

/// Inflates one message's payload from input pieces whose sizes cycle
/// through `sizes`, each call allowed the next bound of `max_outs`.
fn inflate_in_pieces(
    inflater: &mut Inflater,
    wire: &[u8],
    sizes: &[usize],
    max_outs: &[usize],
) -> Result<Vec<u8>, TestCaseError> {
    let mut out = BytesMut::new();
    let mut pos = 0;
    let mut call = 0usize;
    while pos < wire.len() {
        let size = sizes[call % sizes.len()];
        let max_out = max_outs[call % max_outs.len()];
        call += 1;
        let end = (pos + size).min(wire.len());
        let before = out.len();
        let used = inflater
            .inflate(&wire[pos..end], &mut out, max_out)
            .map_err(|e| TestCaseError::fail(format!("inflate failed at {pos}: {}", e.0)))?;
        prop_assert!(used <= end - pos);
        prop_assert!(out.len() - before <= max_out, "{} bytes out with a bound of {max_out}", out.len() - before);
        prop_assert!(used > 0 || out.len() > before, "no progress at input byte {pos}");
        pos += used;
        prop_assert!(call < 1_000_000);
    }
    loop {
        let max_out = max_outs[call % max_outs.len()];
        call += 1;
        let before = out.len();
        let done =
            inflater.finish(&mut out, max_out).map_err(|e| TestCaseError::fail(format!("finish failed: {}", e.0)))?;
        prop_assert!(out.len() - before <= max_out);
        if done {
            break;
        }
        prop_assert!(out.len() > before, "finish made no progress");
    }
    Ok(out.to_vec())
}

fn check_round_trip(
    mode: Mode,
    messages: &[Msg],
    streamed: &[Option<Vec<Index>>],
    sizes: &[usize],
    max_outs: &[usize],
) -> Result<(), TestCaseError> {
    let mut deflater = Deflater::new(mode.level, mode.window_bits, mode.no_context_takeover);
    let mut inflater = Inflater::new(mode.no_context_takeover);
    for (i, msg) in messages.iter().enumerate() {
        let cuts = streamed[i % streamed.len()].as_ref().map(|idx| cut_points(idx, msg.data.len()));
        let wire = compress(&mut deflater, &msg.data, cuts.as_deref());
        prop_assert!(!wire.is_empty(), "message {i}: a compressed payload is never empty (RFC 7692 §7.2.1)");
        let back = inflate_in_pieces(&mut inflater, &wire, sizes, max_outs)
            .map_err(|e| TestCaseError::fail(format!("message {i} of {} bytes: {e}", msg.data.len())))?;
        prop_assert!(back == msg.data, "message {i}: {} bytes in, {} out", msg.data.len(), back.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Compress, then inflate in random input pieces with random output
    /// bounds: the messages come back, in every mode.
    #[test]
    fn deflate_then_inflate_in_any_pieces(
        mode in mode(),
        messages in vec(message(1), 1..8),
        streamed in vec(proptest::option::of(vec(any::<Index>(), 0..6)), 1..4),
        sizes in vec(1usize..400, 1..6),
        max_outs in vec(prop_oneof![1usize..16, 1usize..5000, Just(1 << 20)], 1..6),
    ) {
        check_round_trip(mode, &messages, &streamed, &sizes, &max_outs)?;
    }

    /// Without context takeover, each message compresses the same whatever
    /// came before it.
    #[test]
    fn without_context_takeover_messages_are_independent(
        mode in mode(),
        first in message(1),
        second in message(1),
    ) {
        let mode = Mode { no_context_takeover: true, ..mode };
        let mut deflater = Deflater::new(mode.level, mode.window_bits, true);
        let alone = compress(&mut deflater, &second.data, None);
        let mut deflater = Deflater::new(mode.level, mode.window_bits, true);
        let _ = compress(&mut deflater, &first.data, None);
        let after = compress(&mut deflater, &second.data, None);
        prop_assert!(alone == after);
        // And a fresh inflater reads it.
        let back = inflate_in_pieces(&mut Inflater::new(true), &after, &[1 << 20], &[1 << 20])?;
        prop_assert!(back == second.data);
    }

    /// Level 1 with context takeover and a 9-bit window is coded
    /// from a copy of the window: every message, whole or streamed in
    /// pieces, still refers to exactly what the peer's window holds, also
    /// when levels change between messages.
    #[test]
    fn small_windows_at_level_one_keep_their_context(
        window_bits in 9u8..=10,
        messages in vec(prop_oneof![
            3 => vec(0usize..12, 0..60).prop_map(|words| Msg { kind: MessageType::Text, data: sentence(&words) }),
            1 => message_or_empty(),
        ], 1..12),
        streamed in vec(proptest::option::of(vec(any::<Index>(), 0..6)), 1..4),
        sizes in vec(1usize..400, 1..4),
        switch in proptest::option::of((0usize..12, -2i32..=9)),
    ) {
        let mode = Mode { no_context_takeover: false, window_bits, level: 1 };
        let Some((at, level)) = switch else {
            return check_round_trip(mode, &messages, &streamed, &sizes, &[1 << 20]);
        };
        // The same, with the level set to `level` before message `at` and
        // back to 1 after it.
        let mut deflater = Deflater::new(1, window_bits, false);
        let mut inflater = Inflater::new(false);
        for (i, msg) in messages.iter().enumerate() {
            deflater.set_level(if i == at { level } else { 1 });
            let cuts = streamed[i % streamed.len()].as_ref().map(|idx| cut_points(idx, msg.data.len()));
            let wire = compress(&mut deflater, &msg.data, cuts.as_deref());
            let back = inflate_in_pieces(&mut inflater, &wire, &sizes, &[1 << 20])?;
            prop_assert!(back == msg.data, "message {i}");
        }
    }

    /// Empty messages anywhere in a sequence are compressed to a valid
    /// payload and inflated back to nothing.
    #[test]
    fn empty_messages_round_trip_in_any_sequence(
        mode in mode(),
        messages in vec(message_or_empty(), 1..8),
        streamed in vec(proptest::option::of(vec(any::<Index>(), 0..3)), 1..4),
    ) {
        check_round_trip(mode, &messages, &streamed, &[1 << 20], &[1 << 20])?;
    }
}

// ---------------------------------------------------------------------------
// Decoder with an Inflater
// ---------------------------------------------------------------------------

/// One message as the encoder sends it.
#[derive(Clone, Debug)]
struct Planned {
    msg: Msg,
    /// Sent with RSV1, compressed.
    compressed: bool,
    /// Fragment boundaries in the payload as sent.
    cuts: Vec<Index>,
    /// A ping after each fragment but the last (by position).
    pings: Vec<bool>,
}

fn planned(min: usize) -> impl Strategy<Value = Planned> {
    (message(min), prop::bool::weighted(0.8), vec(any::<Index>(), 0..5), vec(any::<bool>(), 0..5))
        .prop_map(|(msg, compressed, cuts, pings)| Planned { msg, compressed, cuts, pings })
}

fn peer(sender: Role) -> Role {
    match sender {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    }
}

/// What the decoder gave for one message.
#[derive(Debug, PartialEq, Eq)]
struct Got {
    kind: MessageType,
    compressed: bool,
    data: Vec<u8>,
}

fn check_decoder(
    sender: Role,
    mode: Mode,
    plan: &[Planned],
    chunks: &[usize],
    key: [u8; 4],
) -> Result<(), TestCaseError> {
    let mask = (sender == Role::Client).then_some(key);
    let mut deflater = Deflater::new(mode.level, mode.window_bits, mode.no_context_takeover);
    let mut wire = BytesMut::new();
    let mut pings_sent = 0;
    for p in plan {
        let payload =
            if p.compressed { compress(&mut deflater, &p.msg.data, None).to_vec() } else { p.msg.data.clone() };
        let cuts = cut_points(&p.cuts, payload.len());
        let frags = pieces(&payload, &cuts);
        for (j, frag) in frags.iter().enumerate() {
            let first = j == 0;
            let last = j + 1 == frags.len();
            let opcode = if first { p.msg.kind.opcode() } else { OpCode::Continuation };
            let rsv = if first && p.compressed { RSV1 } else { 0 };
            encode_frame(&mut wire, opcode, last, rsv, mask, frag);
            if !last && p.pings.get(j).copied().unwrap_or(false) {
                encode_frame(&mut wire, OpCode::Ping, true, 0, mask, b"ping");
                pings_sent += 1;
            }
        }
    }

    let mut decoder = Decoder::new(peer(sender));
    decoder.set_inflater(Some(Inflater::new(mode.no_context_takeover)));
    let mut got: Vec<Got> = Vec::new();
    let mut open: Option<Got> = None;
    let mut pings = 0;
    let mut buf = BytesMut::new();
    let mut pos = 0;
    let mut call = 0;
    loop {
        loop {
            let event = decoder.decode(&mut buf).map_err(|e| TestCaseError::fail(format!("decode: {e:?}")))?;
            let Some(event) = event else { break };
            match event {
                Event::Start { kind, compressed } => {
                    prop_assert!(open.is_none(), "a message started inside another");
                    open = Some(Got { kind, compressed, data: Vec::new() });
                }
                Event::Data(chunk) => {
                    let Some(message) = open.as_mut() else {
                        return Err(TestCaseError::fail("data outside a message"));
                    };
                    if message.compressed {
                        prop_assert!(chunk.len() <= MAX_INFLATED_CHUNK, "an inflated chunk of {} bytes", chunk.len());
                    }
                    message.data.extend_from_slice(&chunk);
                }
                Event::End => match open.take() {
                    Some(message) => got.push(message),
                    None => return Err(TestCaseError::fail("end outside a message")),
                },
                Event::Message { kind, data } => {
                    prop_assert!(open.is_none());
                    got.push(Got { kind, compressed: false, data: data.to_vec() });
                }
                Event::Ping(payload) => {
                    prop_assert_eq!(payload.as_ref(), b"ping");
                    pings += 1;
                }
                other => return Err(TestCaseError::fail(format!("unexpected event {other:?}"))),
            }
        }
        if pos == wire.len() {
            break;
        }
        let size = chunks[call % chunks.len()];
        call += 1;
        let end = (pos + size).min(wire.len());
        buf.extend_from_slice(&wire[pos..end]);
        pos = end;
    }
    prop_assert!(open.is_none(), "a message was left open");
    prop_assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    prop_assert_eq!(pings, pings_sent);
    let expected: Vec<Got> =
        plan.iter().map(|p| Got { kind: p.msg.kind, compressed: p.compressed, data: p.msg.data.clone() }).collect();
    prop_assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        prop_assert_eq!(g.kind, e.kind, "message {}", i);
        prop_assert_eq!(g.compressed, e.compressed, "message {}", i);
        prop_assert!(g.data == e.data, "message {}: {} bytes expected, {} decoded", i, e.data.len(), g.data.len());
    }
    Ok(())
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Client), Just(Role::Server)]
}

proptest! {
    #![proptest_config(config())]

    /// Compressed (RSV1 on the first frame) and plain messages, fragmented
    /// anywhere, with pings between fragments, fed in any chunks: the
    /// decoder inflates them back, in bounded chunks.
    #[test]
    fn decoder_inflates_fragmented_compressed_messages(
        sender in role(),
        mode in mode(),
        plan in vec(planned(1), 1..8),
        chunks in vec(prop_oneof![1usize..8, 1usize..2000, Just(1 << 20)], 1..6),
        key in any::<[u8; 4]>(),
    ) {
        check_decoder(sender, mode, &plan, &chunks, key)?;
    }

}

proptest! {
    #![proptest_config(Config { cases: 24, ..config() })]

    /// Large compressible messages come out of the decoder in chunks of at
    /// most `MAX_INFLATED_CHUNK`, however much input is available at once.
    #[test]
    fn decoder_bounds_inflated_chunks(
        sender in role(),
        mode in mode(),
        window_bits in 12u8..=15,
        unit in vec(any::<u8>(), 1..40),
        len in 100_000usize..300_000,
        cuts in vec(any::<Index>(), 0..3),
    ) {
        let mut data = unit.repeat(len / unit.len() + 1);
        data.truncate(len);
        let plan = [Planned {
            msg: Msg { kind: MessageType::Binary, data },
            compressed: true,
            cuts,
            pings: vec![true; 3],
        }];
        let mode = Mode { level: mode.level.max(1), window_bits, ..mode };
        check_decoder(sender, mode, &plan, &[1 << 22], [1, 2, 3, 4])?;
    }
}
