//! Property tests for the sans-IO protocol core (`silverback::proto`).
//!
//! - Encoder to decoder: any sequence of text and binary messages, fragmented at
//!   any byte (empty fragments included), with pings and pongs between the
//!   fragments, from either role, fed to the decoder in input chunks of any size,
//!   decodes to the same messages and control frames in the same order.
//! - Frame headers: encode then parse gives the header back; parse of any bytes
//!   does not panic and asks for more bytes on every truncated header.
//! - Decoder on arbitrary input: no panic, a well-formed event sequence, and an
//!   error with the close code its kind calls for.
//! - `Utf8Validator` fed any bytes in any split agrees with `std::str::from_utf8`
//!   and reports an error in the chunk where the input first becomes invalid.
//! - `apply_mask` agrees with `apply_mask_bytewise`.
//! - `CloseFrame` encode then parse gives the code back and the reason cut to at
//!   most 123 bytes on a character boundary.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use silverback::proto::close::{CloseFrameError, MAX_REASON_LEN};
use silverback::proto::decoder::MAX_CONTROL_PAYLOAD;
use silverback::proto::encoder::encode_frame;
use silverback::proto::frame::{FrameHeader, MAX_HEADER_LEN, RSV1};
use silverback::proto::mask::{apply_mask, apply_mask_bytewise};
use silverback::proto::utf8::{self, Utf8Validator};
use silverback::proto::{CloseCode, CloseFrame, Decoder, Event, MessageType, OpCode, ProtocolError, Role};

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// An event with its payload copied out, and with consecutive data chunks
/// merged, so that event lists can be compared independently of how the input
/// was chunked.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Start { kind: MessageType, compressed: bool },
    Data(Vec<u8>),
    End,
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<CloseFrame>),
}

/// Appends `event` to `seen`, merging it into the previous entry when both are data.
fn push_seen(seen: &mut Vec<Seen>, event: Seen) {
    if let Seen::Data(bytes) = &event {
        if bytes.is_empty() {
            return;
        }
        if let Some(Seen::Data(prev)) = seen.last_mut() {
            prev.extend_from_slice(bytes);
            return;
        }
    }
    seen.push(event);
}

fn to_seen(event: Event) -> Seen {
    match event {
        Event::Start { kind, compressed } => Seen::Start { kind, compressed },
        Event::Data(chunk) => Seen::Data(chunk.to_vec()),
        Event::End => Seen::End,
        Event::Ping(payload) => Seen::Ping(payload.to_vec()),
        Event::Pong(payload) => Seen::Pong(payload.to_vec()),
        Event::Close(frame) => Seen::Close(frame),
        Event::Message { .. } => unreachable!("expanded by push_expanded"),
    }
}

/// The result of running a decoder over a whole input.
struct Decoded {
    /// Every event, as returned.
    events: Vec<Event>,
    /// The error that stopped decoding, if any.
    error: Option<ProtocolError>,
    /// Bytes left in the buffer when the input ran out (or at the error).
    leftover: usize,
    decoder: Decoder,
}

/// Feeds `input` to `decoder` in chunks whose sizes cycle through `chunks`
/// (each at least 1 byte), draining all events after every chunk.
fn decode_chunked(mut decoder: Decoder, input: &[u8], chunks: &[usize]) -> Decoded {
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut pos = 0;
    let mut next = 0;
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(event)) => push_expanded(&mut events, event),
                Ok(None) => break,
                Err(error) => return Decoded { events, error: Some(error), leftover: buf.len(), decoder },
            }
        }
        if pos == input.len() {
            return Decoded { events, error: None, leftover: buf.len(), decoder };
        }
        let size = chunks.get(next % chunks.len().max(1)).copied().unwrap_or(input.len()).max(1);
        let end = pos.saturating_add(size).min(input.len());
        buf.extend_from_slice(&input[pos..end]);
        pos = end;
        next += 1;
    }
}

/// Appends `event`, spelling a one-step `Message` event as the `Start`,
/// `Data` and `End` it stands for, so that event lists compare the same
/// however the input was chunked.
fn push_expanded(events: &mut Vec<Event>, event: Event) {
    match event {
        Event::Message { kind, data } => {
            events.push(Event::Start { kind, compressed: false });
            if !data.is_empty() {
                events.push(Event::Data(data));
            }
            events.push(Event::End);
        }
        other => events.push(other),
    }
}

/// The mask a frame from `sender` carries: clients mask, servers do not.
fn mask_for(sender: Role, key: [u8; 4]) -> Option<[u8; 4]> {
    match sender {
        Role::Client => Some(key),
        Role::Server => None,
    }
}

/// The role that reads what `sender` writes.
fn peer(sender: Role) -> Role {
    match sender {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    }
}

/// The longest prefix of `reason` that fits in `MAX_REASON_LEN` bytes and ends
/// on a character boundary, computed character by character.
fn truncated_reason(reason: &str) -> String {
    let mut out = String::new();
    for c in reason.chars() {
        if out.len() + c.len_utf8() > MAX_REASON_LEN {
            break;
        }
        out.push(c);
    }
    out
}

fn is_allowed_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Sorted cut positions in `0..=len` from arbitrary indices; repeats give empty pieces.
fn cut_points(indices: &[Index], len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = indices.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// `[0, cuts.., len]`, the bounds of the pieces that `cuts` splits `0..len` into.
fn piece_bounds(cuts: &[usize], len: usize) -> Vec<usize> {
    let mut bounds = Vec::with_capacity(cuts.len() + 2);
    bounds.push(0);
    bounds.extend_from_slice(cuts);
    bounds.push(len);
    bounds
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

fn any_opcode() -> impl Strategy<Value = OpCode> {
    prop_oneof![
        Just(OpCode::Continuation),
        Just(OpCode::Text),
        Just(OpCode::Binary),
        Just(OpCode::Close),
        Just(OpCode::Ping),
        Just(OpCode::Pong),
    ]
}

/// UTF-8 text of up to 400 characters, mostly ASCII or mostly not.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![vec(any::<char>(), 0..400).prop_map(String::from_iter), "[a-zA-Z0-9 ]{0,800}", "[a-zé€😀 ]{0,300}",]
}

fn allowed_close_code() -> impl Strategy<Value = u16> {
    prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999]
}

#[derive(Clone, Debug)]
struct Control {
    /// Ping or pong.
    opcode: OpCode,
    payload: Vec<u8>,
    key: [u8; 4],
}

fn control() -> impl Strategy<Value = Control> {
    (prop_oneof![Just(OpCode::Ping), Just(OpCode::Pong)], vec(any::<u8>(), 0..=125), any::<[u8; 4]>())
        .prop_map(|(opcode, payload, key)| Control { opcode, payload, key })
}

#[derive(Clone, Debug)]
struct Message {
    kind: MessageType,
    payload: Vec<u8>,
    /// Sorted fragment boundaries inside the payload; repeats give empty fragments.
    cuts: Vec<usize>,
    /// `controls[i]` is sent after fragment `i` (for every fragment but the last).
    controls: Vec<Vec<Control>>,
    /// The masking key of fragment `i` is `keys[i % keys.len()]`.
    keys: Vec<[u8; 4]>,
}

fn message() -> impl Strategy<Value = Message> {
    let payload = prop_oneof![
        text().prop_map(|t| (MessageType::Text, t.into_bytes())),
        vec(any::<u8>(), 0..2048).prop_map(|b| (MessageType::Binary, b)),
    ];
    (payload, vec(any::<Index>(), 0..8), vec(vec(control(), 0..3), 8), vec(any::<[u8; 4]>(), 1..9)).prop_map(
        |((kind, payload), cuts, controls, keys)| {
            let cuts = cut_points(&cuts, payload.len());
            Message { kind, payload, cuts, controls, keys }
        },
    )
}

#[derive(Clone, Debug)]
enum Item {
    Message(Message),
    Control(Control),
}

#[derive(Clone, Debug)]
struct Conversation {
    sender: Role,
    items: Vec<Item>,
    /// A close frame to end with: code, reason and masking key.
    close: Option<(u16, String, [u8; 4])>,
    /// Input chunk sizes for the decoder, used in turn.
    chunks: Vec<usize>,
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        vec(1usize..=16, 1..16),
        vec(1usize..=300, 1..16),
        Just(vec![1]),
        Just(vec![usize::MAX]), // all at once
    ]
}

fn conversation() -> impl Strategy<Value = Conversation> {
    let item = prop_oneof![3 => message().prop_map(Item::Message), 1 => control().prop_map(Item::Control)];
    (
        prop_oneof![Just(Role::Client), Just(Role::Server)],
        vec(item, 0..6),
        prop::option::of((allowed_close_code(), text(), any::<[u8; 4]>())),
        chunk_sizes(),
    )
        .prop_map(|(sender, items, close, chunks)| Conversation { sender, items, close, chunks })
}

/// Encodes `conv` as its sender would, and lists the events a reader must see.
fn encode_conversation(conv: &Conversation) -> (Vec<u8>, Vec<Seen>) {
    let mut out = BytesMut::new();
    let mut expected = Vec::new();
    let send_control = |out: &mut BytesMut, expected: &mut Vec<Seen>, c: &Control| {
        encode_frame(out, c.opcode, true, 0, mask_for(conv.sender, c.key), &c.payload);
        expected.push(match c.opcode {
            OpCode::Ping => Seen::Ping(c.payload.clone()),
            _ => Seen::Pong(c.payload.clone()),
        });
    };
    for item in &conv.items {
        match item {
            Item::Control(c) => send_control(&mut out, &mut expected, c),
            Item::Message(m) => {
                expected.push(Seen::Start { kind: m.kind, compressed: false });
                let bounds = piece_bounds(&m.cuts, m.payload.len());
                let fragments = bounds.len() - 1;
                for i in 0..fragments {
                    let fragment = &m.payload[bounds[i]..bounds[i + 1]];
                    let opcode = if i == 0 { m.kind.opcode() } else { OpCode::Continuation };
                    let fin = i + 1 == fragments;
                    let key = m.keys[i % m.keys.len()];
                    encode_frame(&mut out, opcode, fin, 0, mask_for(conv.sender, key), fragment);
                    push_seen(&mut expected, Seen::Data(fragment.to_vec()));
                    if !fin {
                        for c in m.controls.get(i).into_iter().flatten() {
                            send_control(&mut out, &mut expected, c);
                        }
                    }
                }
                expected.push(Seen::End);
            }
        }
    }
    if let Some((code, reason, key)) = &conv.close {
        let payload = CloseFrame::new(*code, reason.as_str()).encode();
        encode_frame(&mut out, OpCode::Close, true, 0, mask_for(conv.sender, *key), &payload);
        expected.push(Seen::Close(Some(CloseFrame::new(*code, truncated_reason(reason)))));
    }
    (out.to_vec(), expected)
}

/// One frame-shaped piece of hostile input: a header with fields drawn at
/// random (reserved opcodes and wrong masking included), a payload that may not
/// match the announced length, or plain junk.
#[derive(Clone, Debug)]
enum RawPiece {
    Frame {
        fin: bool,
        rsv: u8,
        /// Any 4-bit value; reserved ones included.
        opcode: u8,
        /// Set the mask bit the wrong way for the reader's role.
        wrong_mask: bool,
        key: [u8; 4],
        payload: Vec<u8>,
        /// When set, the header announces this length instead of the payload's.
        announced_len: Option<u64>,
    },
    Junk(Vec<u8>),
}

fn raw_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..200),
        3 => text().prop_map(String::into_bytes),
        2 => (any::<u16>(), "[a-z]{0,10}").prop_map(|(code, reason)| {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice(reason.as_bytes());
            p
        }),
        1 => (allowed_close_code(), vec(any::<u8>(), 0..6)).prop_map(|(code, reason)| {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice(&reason);
            p
        }),
        1 => vec(any::<u8>(), 126..400),
    ]
}

fn raw_piece() -> impl Strategy<Value = RawPiece> {
    let opcode = prop_oneof![12 => prop_oneof![Just(0u8), Just(1), Just(2), Just(8), Just(9), Just(10)], 1 => 0u8..16];
    let frame = (
        prop::bool::weighted(0.7),
        prop_oneof![8 => Just(0u8), 1 => 0u8..8],
        opcode,
        prop::bool::weighted(0.05),
        any::<[u8; 4]>(),
        raw_payload(),
        prop::option::weighted(
            0.1,
            prop_oneof![0u64..300, Just(u64::MAX), Just(1 << 63), Just((1 << 63) - 1), Just(70_000)],
        ),
    )
        .prop_map(|(fin, rsv, opcode, wrong_mask, key, payload, announced_len)| RawPiece::Frame {
            fin,
            rsv,
            opcode,
            wrong_mask,
            key,
            payload,
            announced_len,
        });
    prop_oneof![10 => frame, 1 => vec(any::<u8>(), 0..20).prop_map(RawPiece::Junk)]
}

/// Serializes hostile pieces for a reader playing `reader`.
fn raw_bytes(pieces: &[RawPiece], reader: Role) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        match piece {
            RawPiece::Junk(bytes) => out.extend_from_slice(bytes),
            RawPiece::Frame { fin, rsv, opcode, wrong_mask, key, payload, announced_len } => {
                let masked = (reader == Role::Server) != *wrong_mask;
                let len = announced_len.unwrap_or(payload.len() as u64);
                out.push((u8::from(*fin) << 7) | (rsv << 4) | opcode);
                let mask_bit = if masked { 0x80 } else { 0 };
                match len {
                    0..=125 => out.push(mask_bit | len as u8),
                    126..=0xffff => {
                        out.push(mask_bit | 126);
                        out.extend_from_slice(&(len as u16).to_be_bytes());
                    }
                    _ => {
                        out.push(mask_bit | 127);
                        out.extend_from_slice(&len.to_be_bytes());
                    }
                }
                if masked {
                    out.extend_from_slice(key);
                }
                let body = out.len();
                out.extend_from_slice(payload);
                if masked {
                    apply_mask_bytewise(&mut out[body..], *key, 0);
                }
            }
        }
    }
    out
}

/// Byte strings that exercise UTF-8 validation: valid text, valid text with a
/// damaged byte or cut short, arbitrary bytes, and concatenations of valid and
/// invalid sequences of every length.
fn utf8_input() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: &[&[u8]] = &[
        b"a",
        b"hello ",
        "é".as_bytes(),
        "€".as_bytes(),
        "😀".as_bytes(),
        "\u{10ffff}".as_bytes(),
        "\u{d7ff}".as_bytes(),
        "\u{e000}".as_bytes(),
        b"\x80",
        b"\xbf",
        b"\xc0\x80",
        b"\xc1\xbf",
        b"\xc2",
        b"\xe0\x80\x80",
        b"\xe0\xa0",
        b"\xe2\x82",
        b"\xed\xa0\x80",
        b"\xed\xbf\xbf",
        b"\xef\xbf",
        b"\xf0\x80\x80\x80",
        b"\xf0\x90\x80",
        b"\xf4\x8f\xbf",
        b"\xf4\x90\x80\x80",
        b"\xf5\x80\x80\x80",
        b"\xf8\x88\x80\x80\x80",
        b"\xfe",
        b"\xff",
    ];
    prop_oneof![
        text().prop_map(String::into_bytes),
        (text(), any::<Index>(), any::<u8>()).prop_map(|(t, at, byte)| {
            let mut bytes = t.into_bytes();
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            bytes
        }),
        (text(), any::<Index>()).prop_map(|(t, at)| {
            let mut bytes = t.into_bytes();
            bytes.truncate(at.index(bytes.len() + 1));
            bytes
        }),
        vec(any::<u8>(), 0..256),
        vec(prop::sample::select(PIECES), 0..40).prop_map(|pieces| pieces.concat()),
    ]
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    /// Messages and control frames survive encoding, any fragmentation, either
    /// role's masking and any input chunking, in order.
    #[test]
    fn encoded_conversation_decodes_to_the_same_messages(conv in conversation()) {
        let (bytes, expected) = encode_conversation(&conv);
        let decoded = decode_chunked(Decoder::new(peer(conv.sender)), &bytes, &conv.chunks);
        prop_assert_eq!(decoded.error, None);
        prop_assert_eq!(decoded.leftover, 0);
        prop_assert!(!decoded.decoder.in_message());
        prop_assert_eq!(decoded.decoder.payload_remaining(), 0);
        let mut seen = Vec::new();
        for event in decoded.events {
            if let Event::Data(chunk) = &event {
                prop_assert!(!chunk.is_empty(), "empty data event");
            }
            push_seen(&mut seen, to_seen(event));
        }
        prop_assert_eq!(seen, expected);
    }

    /// Any header encodes in the shortest form and parses back to itself; every
    /// strict prefix of it asks for more bytes; trailing bytes are not read.
    #[test]
    fn frame_header_encode_parse_round_trip(
        fin in any::<bool>(),
        rsv in 0u8..8,
        opcode in any_opcode(),
        mask in prop::option::of(any::<[u8; 4]>()),
        payload_len in prop_oneof![
            0u64..=125,
            126u64..=0xffff,
            0x1_0000u64..(1 << 63),
            Just(125u64), Just(126), Just(0xffff), Just(0x1_0000), Just((1 << 63) - 1),
        ],
        trailing in vec(any::<u8>(), 0..16),
    ) {
        let header = FrameHeader { fin, rsv, opcode, mask, payload_len };
        let mut out = Vec::new();
        header.encode(&mut out);
        let len_bytes = match payload_len {
            0..=125 => 0,
            126..=0xffff => 2,
            _ => 8,
        };
        prop_assert_eq!(out.len(), 2 + len_bytes + if mask.is_some() { 4 } else { 0 });
        prop_assert_eq!(out.len(), header.encoded_len());
        prop_assert!(out.len() <= MAX_HEADER_LEN);
        prop_assert_eq!(FrameHeader::parse(&out), Ok(Some((header, out.len()))));
        for cut in 0..out.len() {
            prop_assert_eq!(FrameHeader::parse(&out[..cut]), Ok(None), "cut at {}", cut);
        }
        let header_len = out.len();
        out.extend_from_slice(&trailing);
        prop_assert_eq!(FrameHeader::parse(&out), Ok(Some((header, header_len))));
    }

    /// Parsing any bytes does not panic, and the outcome is consistent with the
    /// bits that were read.
    #[test]
    fn frame_header_parse_of_any_bytes(bytes in vec(any::<u8>(), 0..(MAX_HEADER_LEN + 4))) {
        let result = FrameHeader::parse(&bytes);
        if bytes.len() < 2 {
            prop_assert_eq!(result, Ok(None));
            return Ok(());
        }
        let nibble = bytes[0] & 0x0f;
        if OpCode::from_u8(nibble).is_none() {
            prop_assert_eq!(result, Err(ProtocolError::ReservedOpcode(nibble)));
            return Ok(());
        }
        let masked = bytes[1] & 0x80 != 0;
        let len_bytes = match bytes[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let needed = 2 + len_bytes + if masked { 4 } else { 0 };
        if len_bytes == 8 && bytes.len() >= 10 && bytes[2] & 0x80 != 0 {
            prop_assert_eq!(result, Err(ProtocolError::LengthTopBit));
            return Ok(());
        }
        if bytes.len() < needed {
            prop_assert_eq!(result, Ok(None));
            return Ok(());
        }
        let (header, n) = result.expect("a complete header parses").expect("a complete header is not short");
        prop_assert_eq!(n, needed);
        prop_assert_eq!(header.fin, bytes[0] & 0x80 != 0);
        prop_assert_eq!(header.rsv, (bytes[0] >> 4) & 0x7);
        prop_assert_eq!(header.opcode.as_u8(), nibble);
        prop_assert_eq!(header.mask.is_some(), masked);
        let expected_len = match len_bytes {
            0 => u64::from(bytes[1] & 0x7f),
            2 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
            _ => u64::from_be_bytes(bytes[2..10].try_into().unwrap()),
        };
        prop_assert_eq!(header.payload_len, expected_len);
        if let Some(key) = header.mask {
            prop_assert_eq!(&key[..], &bytes[2 + len_bytes..needed]);
        }
        // Every shorter prefix asks for more bytes.
        for cut in 0..n {
            prop_assert_eq!(FrameHeader::parse(&bytes[..cut]), Ok(None), "cut at {}", cut);
        }
        // Re-encoding gives the same bytes when the input used the shortest length form.
        if header.encoded_len() == n {
            let mut out = Vec::new();
            header.encode(&mut out);
            prop_assert_eq!(&out[..], &bytes[..n]);
        }
    }

    /// A decoder fed hostile input in any chunking does not panic, emits a
    /// well-formed event sequence, and stops with an error whose close code
    /// matches its kind. The outcome does not depend on the chunking.
    #[test]
    fn decoder_on_arbitrary_input(
        reader in prop_oneof![Just(Role::Client), Just(Role::Server)],
        input in prop_oneof![
            4 => vec(raw_piece(), 0..8).prop_map(|pieces| (pieces, Vec::new())),
            1 => vec(any::<u8>(), 0..512).prop_map(|junk| (Vec::new(), junk)),
        ],
        limit in prop::option::weighted(0.3, 0u64..600),
        extension_rsv in prop_oneof![3 => Just(0u8), 1 => Just(RSV1)],
        chunks in chunk_sizes(),
    ) {
        let (pieces, junk) = input;
        let mut bytes = raw_bytes(&pieces, reader);
        bytes.extend_from_slice(&junk);
        let new_decoder = || {
            let mut d = Decoder::new(reader);
            d.set_max_message_size(limit);
            d.set_extension_rsv(extension_rsv);
            d
        };
        let chunked = decode_chunked(new_decoder(), &bytes, &chunks);
        check_event_sequence(&chunked.events, limit)?;
        if let Some(error) = &chunked.error {
            check_error(error, reader, limit)?;
        }

        // The same input in one piece stops at the same place for the same reason.
        let whole = decode_chunked(new_decoder(), &bytes, &[usize::MAX]);
        check_event_sequence(&whole.events, limit)?;
        prop_assert_eq!(&chunked.error, &whole.error);
        // Control events match exactly. A message that fails is announced by a
        // `Start` when it arrives in pieces and not when it arrives whole (the
        // one-step path checks it first), so after an error only the control
        // events are compared.
        let failed = chunked.error.is_some();
        let not_data = |events: &[Event]| -> Vec<Seen> {
            events
                .iter()
                .filter(|e| !matches!(e, Event::Data(_)))
                .filter(|e| !(failed && matches!(e, Event::Start { .. } | Event::End)))
                .map(|e| to_seen(clone_event(e)))
                .collect()
        };
        prop_assert_eq!(not_data(&chunked.events), not_data(&whole.events));
        if chunked.error.is_none() {
            let merged = |events: Vec<Event>| {
                let mut seen = Vec::new();
                for e in events {
                    push_seen(&mut seen, to_seen(e));
                }
                seen
            };
            prop_assert_eq!(chunked.leftover, whole.leftover);
            prop_assert_eq!(merged(chunked.events), merged(whole.events));
        }
    }

    /// Validation in pieces agrees with `std::str::from_utf8` on the whole, and
    /// fails in the piece that holds the first byte after which no valid
    /// continuation exists.
    #[test]
    fn utf8_validator_agrees_with_std(bytes in utf8_input(), cuts in vec(any::<Index>(), 0..8)) {
        let std_result = std::str::from_utf8(&bytes);
        prop_assert_eq!(utf8::validate(&bytes).is_ok(), std_result.is_ok());

        // The shortest prefix that no continuation can make valid.
        let first_invalid_prefix = match std_result {
            Err(e) => (e.valid_up_to() + 1..=bytes.len())
                .find(|&p| matches!(std::str::from_utf8(&bytes[..p]), Err(e) if e.error_len().is_some())),
            Ok(_) => None,
        };

        let bounds = piece_bounds(&cut_points(&cuts, bytes.len()), bytes.len());
        let mut v = Utf8Validator::new();
        let mut failed_at = None;
        for w in bounds.windows(2) {
            if v.feed(&bytes[w[0]..w[1]]).is_err() {
                failed_at = Some(w);
                break;
            }
        }
        match (first_invalid_prefix, failed_at) {
            (Some(p), Some(w)) => {
                // The failing piece is the one that holds byte `p - 1`.
                prop_assert!(w[0] < p && p <= w[1],
                    "failed on piece {:?}, input first invalid at prefix {}", w, p);
            }
            (Some(p), None) => prop_assert!(false, "no error reported; input first invalid at prefix {}", p),
            (None, Some(w)) => prop_assert!(false, "error on piece {:?} of an input that is a valid prefix", w),
            (None, None) => {
                prop_assert_eq!(v.finish().is_ok(), std_result.is_ok());
                // finish resets the validator for the next message.
                prop_assert_eq!(v.feed("ok é".as_bytes()), Ok(()));
                prop_assert_eq!(v.finish(), Ok(()));
            }
        }
    }

    /// The word-at-a-time mask equals the bytewise definition, returns the next
    /// offset, and gives the same result when applied piece by piece.
    #[test]
    fn apply_mask_matches_bytewise(
        data in prop_oneof![vec(any::<u8>(), 0..64), vec(any::<u8>(), 0..2048)],
        key in any::<[u8; 4]>(),
        offset in prop_oneof![0usize..16, any::<u32>().prop_map(|o| o as usize)],
        cuts in vec(any::<Index>(), 0..6),
    ) {
        let mut fast = data.clone();
        let mut slow = data.clone();
        prop_assert_eq!(apply_mask(&mut fast, key, offset), offset + data.len());
        prop_assert_eq!(apply_mask_bytewise(&mut slow, key, offset), offset + data.len());
        prop_assert_eq!(&fast, &slow);

        let mut pieces = data.clone();
        let bounds = piece_bounds(&cut_points(&cuts, data.len()), data.len());
        let mut next = offset;
        for w in bounds.windows(2) {
            next = apply_mask(&mut pieces[w[0]..w[1]], key, next);
        }
        prop_assert_eq!(next, offset + data.len());
        prop_assert_eq!(&pieces, &fast);

        // Masking is its own inverse.
        apply_mask(&mut fast, key, offset);
        prop_assert_eq!(fast, data);
    }

    /// The same agreement for offsets near `usize::MAX`, where the returned
    /// offset wraps. Only `offset % 4` selects the key byte, and 2^64 is a
    /// multiple of 4, so wrapping does not change which key byte applies.
    #[test]
    fn apply_mask_matches_bytewise_at_any_offset(
        data in vec(any::<u8>(), 0..64),
        key in any::<[u8; 4]>(),
        offset in prop_oneof![any::<usize>(), (0usize..64).prop_map(|d| usize::MAX - d)],
    ) {
        let mut fast = data.clone();
        let mut slow = data.clone();
        let next_fast = apply_mask(&mut fast, key, offset);
        let next_slow = apply_mask_bytewise(&mut slow, key, offset);
        prop_assert_eq!(next_fast, offset.wrapping_add(data.len()));
        prop_assert_eq!(next_slow, next_fast);
        prop_assert_eq!(fast, slow);
    }

    /// A close frame with an allowed code parses back to the same code and the
    /// reason cut to at most 123 bytes on a character boundary.
    #[test]
    fn close_frame_encode_parse_round_trip(code in allowed_close_code(), reason in text()) {
        let frame = CloseFrame::new(code, reason.as_str());
        let payload = frame.encode();
        let expected_reason = truncated_reason(&reason);
        prop_assert!(payload.len() <= MAX_CONTROL_PAYLOAD as usize);
        prop_assert_eq!(payload.len(), 2 + expected_reason.len());
        prop_assert_eq!(&payload[..2], &code.to_be_bytes()[..]);
        prop_assert!(reason.starts_with(&expected_reason));
        if reason.len() > MAX_REASON_LEN {
            // A character is at most 4 bytes, so at most 3 bytes are lost to the boundary.
            prop_assert!(expected_reason.len() > MAX_REASON_LEN - 4);
        } else {
            prop_assert_eq!(&expected_reason, &reason);
        }
        prop_assert_eq!(CloseFrame::parse(&payload), Ok(Some(CloseFrame::new(code, expected_reason))));
    }

    /// Codes that may not be sent encode as an empty payload, which parses as
    /// "no status"; parsing any bytes does not panic and follows RFC 6455 §5.5.1.
    #[test]
    fn close_frame_codes_and_arbitrary_payloads(code in any::<u16>(), reason in "[a-z]{0,10}", payload in vec(any::<u8>(), 0..130)) {
        let encoded = CloseFrame::new(code, reason).encode();
        prop_assert_eq!(encoded.is_empty(), !is_allowed_close_code(code));
        prop_assert_eq!(CloseCode(code).is_allowed_on_wire(), is_allowed_close_code(code));
        if encoded.is_empty() {
            prop_assert_eq!(CloseFrame::parse(&encoded), Ok(None));
        }

        let expected = match payload.as_slice() {
            [] => Ok(None),
            [_] => Err(CloseFrameError::TooShort),
            [hi, lo, rest @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                if !is_allowed_close_code(code) {
                    Err(CloseFrameError::InvalidCode(code))
                } else {
                    match std::str::from_utf8(rest) {
                        Ok(text) => Ok(Some(CloseFrame::new(code, text))),
                        Err(_) => Err(CloseFrameError::InvalidReason),
                    }
                }
            }
        };
        prop_assert_eq!(CloseFrame::parse(&payload), expected);
    }
}

fn clone_event(event: &Event) -> Event {
    match event {
        Event::Start { kind, compressed } => Event::Start { kind: *kind, compressed: *compressed },
        Event::Data(chunk) => Event::Data(chunk.clone()),
        Event::End => Event::End,
        Event::Ping(p) => Event::Ping(p.clone()),
        Event::Pong(p) => Event::Pong(p.clone()),
        Event::Close(f) => Event::Close(f.clone()),
        Event::Message { kind, data } => Event::Message { kind: *kind, data: data.clone() },
    }
}

/// Checks that `events` follow the message grammar: data only inside a message,
/// no empty data chunks, control payloads of at most 125 bytes, text that is a
/// valid UTF-8 prefix while open and valid UTF-8 when ended, and messages within
/// the read limit.
fn check_event_sequence(events: &[Event], limit: Option<u64>) -> Result<(), TestCaseError> {
    let mut open: Option<(MessageType, bool, Vec<u8>)> = None;
    for event in events {
        match event {
            Event::Start { kind, compressed } => {
                prop_assert!(open.is_none(), "start inside a message");
                open = Some((*kind, *compressed, Vec::new()));
            }
            Event::Data(chunk) => {
                prop_assert!(!chunk.is_empty(), "empty data event");
                let Some((kind, compressed, data)) = &mut open else {
                    return Err(TestCaseError::fail("data outside a message"));
                };
                data.extend_from_slice(chunk);
                if let Some(limit) = limit {
                    prop_assert!(data.len() as u64 <= limit, "message over the limit delivered");
                }
                if *kind == MessageType::Text && !*compressed {
                    let ok_so_far = match std::str::from_utf8(data) {
                        Ok(_) => true,
                        Err(e) => e.error_len().is_none(),
                    };
                    prop_assert!(ok_so_far, "invalid UTF-8 delivered as text");
                }
            }
            Event::End => {
                let Some((kind, compressed, data)) = open.take() else {
                    return Err(TestCaseError::fail("end outside a message"));
                };
                if kind == MessageType::Text && !compressed {
                    prop_assert!(std::str::from_utf8(&data).is_ok(), "text message ended inside a character");
                }
            }
            Event::Ping(p) | Event::Pong(p) => prop_assert!(p.len() as u64 <= MAX_CONTROL_PAYLOAD),
            Event::Close(Some(frame)) => {
                prop_assert!(frame.code.is_allowed_on_wire());
                prop_assert!(frame.reason.len() <= MAX_REASON_LEN);
            }
            Event::Close(None) => {}
            Event::Message { .. } => return Err(TestCaseError::fail("unexpanded message event")),
        }
    }
    Ok(())
}

/// Checks that `error` is one a reader playing `reader` can raise, and that its
/// close code is 1007 for bad UTF-8, 1009 for an over-limit message and 1002
/// for everything else.
fn check_error(error: &ProtocolError, reader: Role, limit: Option<u64>) -> Result<(), TestCaseError> {
    let expected = match error {
        ProtocolError::InvalidUtf8 => CloseCode::INVALID_FRAME_PAYLOAD_DATA,
        ProtocolError::MessageTooBig { size, limit: reported } => {
            prop_assert_eq!(Some(*reported), limit);
            prop_assert!(size > reported);
            CloseCode::MESSAGE_TOO_BIG
        }
        ProtocolError::UnmaskedFrame => {
            prop_assert_eq!(reader, Role::Server);
            CloseCode::PROTOCOL_ERROR
        }
        ProtocolError::MaskedFrame => {
            prop_assert_eq!(reader, Role::Client);
            CloseCode::PROTOCOL_ERROR
        }
        ProtocolError::ReservedOpcode(op) => {
            prop_assert!(OpCode::from_u8(*op).is_none());
            CloseCode::PROTOCOL_ERROR
        }
        ProtocolError::ControlFrameTooLong(len) => {
            prop_assert!(*len > MAX_CONTROL_PAYLOAD);
            CloseCode::PROTOCOL_ERROR
        }
        _ => CloseCode::PROTOCOL_ERROR,
    };
    prop_assert_eq!(error.close_code(), expected);
    Ok(())
}
