//! Shared by `decoder_server` and `decoder_client`: a `Decoder` with an
//! arbitrary configuration, fed an arbitrary byte stream in arbitrary chunks,
//! with every event checked against a model of what the decoder may emit.
//!
//! Input layout (`CONFIG_LEN` bytes of configuration, then the stream):
//!
//! | byte   | meaning                                                            |
//! |--------|--------------------------------------------------------------------|
//! | 0      | flags: bit 0 read limit, bit 1 inflater, bit 2 inflater without    |
//! |        | context takeover, bit 3 fragment limit, bit 4 frame size limit,   |
//! |        | bit 5 override the extension RSV bits with byte 1,                 |
//! |        | bit 6 try `decode_message` before each `decode`                    |
//! | 1      | RSV bits for the override (low 3 bits)                             |
//! | 2..5   | read limit, u24 little-endian                                      |
//! | 5..7   | fragment limit, u16 little-endian                                  |
//! | 7..10  | frame size limit, u24 little-endian                                |
//! | 10..14 | chunk sizes, cycled (0: the whole rest of the stream at once)      |
//!
//! Properties checked:
//! - `decode` and `decode_message` never panic, and `decode_message`
//!   consumes nothing when it returns no message;
//! - `Data` only inside a message, `Start` and the one-step `Message` only
//!   outside one, `End` closes it, and `in_message` / `open_message` agree
//!   with the events;
//! - text data is valid UTF-8 as far as it goes (fail fast) and complete at
//!   `End`, checked with `std::str::from_utf8` as an independent oracle;
//! - ping and pong payloads are at most 125 bytes, close frames carry only
//!   wire-allowed codes and a reason of at most 123 bytes;
//! - the data of a message never adds up to more than the read limit;
//! - an inflated chunk is at most `MAX_INFLATED_CHUNK` bytes;
//! - `Start { compressed: true }` only when RSV1 is accepted;
//! - chunking does not matter: the same stream fed whole gives the same
//!   events (adjacent `Data` merged, `Message` read as `Start`, `Data`,
//!   `End`) and fails if and only if the chunked run fails.

use bytes::BytesMut;
use silverback::proto::close::MAX_REASON_LEN;
use silverback::proto::decoder::{MAX_CONTROL_PAYLOAD, MAX_INFLATED_CHUNK};
use silverback::proto::deflate::Inflater;
use silverback::proto::frame::RSV1;
use silverback::proto::{CloseFrame, Decoder, Event, MessageType, ProtocolError, Role};

pub const CONFIG_LEN: usize = 14;

#[derive(Clone, Copy, Debug)]
struct Config {
    read_limit: Option<u64>,
    inflater: Option<bool>,
    max_fragments: Option<u32>,
    max_frame_size: Option<u64>,
    rsv_override: Option<u8>,
    whole_messages_first: bool,
    chunks: [u8; 4],
}

impl Config {
    fn from_bytes(b: &[u8; CONFIG_LEN]) -> Config {
        let u24 = |i: usize| u64::from(b[i]) | u64::from(b[i + 1]) << 8 | u64::from(b[i + 2]) << 16;
        let flags = b[0];
        Config {
            read_limit: (flags & 1 != 0).then(|| u24(2)),
            inflater: (flags & 2 != 0).then_some(flags & 4 != 0),
            max_fragments: (flags & 8 != 0).then(|| u32::from(u16::from_le_bytes([b[5], b[6]]))),
            max_frame_size: (flags & 16 != 0).then(|| u24(7)),
            rsv_override: (flags & 32 != 0).then_some(b[1] & 0x7),
            whole_messages_first: flags & 64 != 0,
            chunks: [b[10], b[11], b[12], b[13]],
        }
    }

    fn decoder(&self, role: Role) -> Decoder {
        let mut d = Decoder::new(role);
        d.set_max_message_size(self.read_limit);
        d.set_max_frame_size(self.max_frame_size);
        d.set_max_fragments(self.max_fragments);
        d.set_inflater(self.inflater.map(Inflater::new));
        if let Some(bits) = self.rsv_override {
            d.set_extension_rsv(bits);
        }
        d
    }

    fn extension_rsv(&self) -> u8 {
        match (self.rsv_override, self.inflater) {
            (Some(bits), _) => bits,
            (None, Some(_)) => RSV1,
            (None, None) => 0,
        }
    }
}

/// An event with its data copied out, adjacent data merged.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// A message starts (its compression flag is checked, not compared: a
    /// one-step `Message` event does not carry it).
    Start(MessageType),
    Data(Vec<u8>),
    End,
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<CloseFrame>),
}

struct Open {
    kind: MessageType,
    compressed: bool,
    size: u64,
    /// An unfinished UTF-8 sequence at the end of the text so far.
    utf8_tail: Vec<u8>,
}

struct Checker {
    config: Config,
    open: Option<Open>,
    seen: Vec<Seen>,
}

impl Checker {
    fn event(&mut self, decoder: &Decoder, event: Event) {
        match event {
            Event::Start { kind, compressed } => {
                assert!(self.open.is_none(), "Start inside a message");
                if compressed {
                    assert!(self.config.extension_rsv() & RSV1 != 0, "compressed message without RSV1 negotiated");
                }
                self.open = Some(Open { kind, compressed, size: 0, utf8_tail: Vec::new() });
                self.seen.push(Seen::Start(kind));
            }
            Event::Message { kind, data } => {
                // The same as Start, Data and End in one step.
                assert!(self.open.is_none(), "Message inside a message");
                self.open = Some(Open { kind, compressed: false, size: 0, utf8_tail: Vec::new() });
                self.seen.push(Seen::Start(kind));
                self.data(&data);
                self.end();
            }
            Event::Data(chunk) => self.data(&chunk),
            Event::End => self.end(),
            Event::Ping(payload) => {
                assert!(payload.len() as u64 <= MAX_CONTROL_PAYLOAD);
                self.seen.push(Seen::Ping(payload.to_vec()));
            }
            Event::Pong(payload) => {
                assert!(payload.len() as u64 <= MAX_CONTROL_PAYLOAD);
                self.seen.push(Seen::Pong(payload.to_vec()));
            }
            Event::Close(frame) => {
                if let Some(frame) = &frame {
                    assert!(frame.code.is_allowed_on_wire(), "close code {} accepted", frame.code.0);
                    assert!(frame.reason.len() <= MAX_REASON_LEN);
                }
                self.seen.push(Seen::Close(frame));
            }
        }
        assert_eq!(decoder.in_message(), self.open.is_some());
        assert_eq!(decoder.open_message(), self.open.as_ref().map(|o| (o.kind, o.compressed)));
    }

    fn data(&mut self, chunk: &[u8]) {
        let open = self.open.as_mut().expect("Data outside a message");
        open.size += chunk.len() as u64;
        if let Some(limit) = self.config.read_limit {
            assert!(open.size <= limit, "message of {} bytes delivered past the read limit {limit}", open.size);
        }
        if open.compressed && self.config.inflater.is_some() {
            assert!(chunk.len() <= MAX_INFLATED_CHUNK, "inflated chunk of {} bytes", chunk.len());
        }
        if open.kind == MessageType::Text {
            let mut text = std::mem::take(&mut open.utf8_tail);
            text.extend_from_slice(chunk);
            match std::str::from_utf8(&text) {
                Ok(_) => {}
                Err(e) => {
                    assert!(e.error_len().is_none(), "invalid UTF-8 delivered in a text message: {e}");
                    let tail = &text[e.valid_up_to()..];
                    assert!(tail.len() < 4);
                    open.utf8_tail = tail.to_vec();
                }
            }
        }
        if chunk.is_empty() {
            return;
        }
        match self.seen.last_mut() {
            Some(Seen::Data(data)) => data.extend_from_slice(chunk),
            _ => self.seen.push(Seen::Data(chunk.to_vec())),
        }
    }

    fn end(&mut self) {
        let open = self.open.take().expect("End outside a message");
        assert!(open.utf8_tail.is_empty(), "text message ends inside a UTF-8 sequence");
        self.seen.push(Seen::End);
    }
}

/// Decodes `stream` fed in pieces of the given sizes (cycled; 0 = all the rest).
fn run(config: Config, role: Role, stream: &[u8], sizes: &[u8]) -> (Vec<Seen>, Result<(), ProtocolError>) {
    let mut decoder = config.decoder(role);
    let mut checker = Checker { config, open: None, seen: Vec::new() };
    let mut buf = BytesMut::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let size = match sizes[i % sizes.len()] {
            0 => rest.len(),
            n => usize::from(n).min(rest.len()),
        };
        i += 1;
        buf.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        loop {
            if config.whole_messages_first {
                let before = buf.len();
                match decoder.decode_message(&mut buf) {
                    Ok(Some((kind, data))) => {
                        checker.event(&decoder, Event::Message { kind, data });
                        continue;
                    }
                    Ok(None) => assert_eq!(buf.len(), before, "decode_message consumed input and gave no message"),
                    Err(e) => return (checker.seen, Err(e)),
                }
            }
            match decoder.decode(&mut buf) {
                Ok(Some(event)) => checker.event(&decoder, event),
                Ok(None) => break,
                Err(e) => return (checker.seen, Err(e)),
            }
        }
    }
    (checker.seen, Ok(()))
}

pub fn check(role: Role, data: &[u8]) {
    let Some((config, stream)) = data.split_first_chunk::<CONFIG_LEN>() else {
        return;
    };
    let config = Config::from_bytes(config);
    let (chunked, chunked_result) = run(config, role, stream, &config.chunks);
    let (whole, whole_result) = run(config, role, stream, &[0]);
    assert_eq!(chunked_result.is_err(), whole_result.is_err(), "chunked: {chunked_result:?}, whole: {whole_result:?}");
    if chunked_result.is_ok() && chunked != whole {
        let at = chunked.iter().zip(&whole).take_while(|(a, b)| a == b).count();
        panic!(
            "chunked and whole input give different events from event {at} on:\n  chunked: {}\n  whole:   {}",
            describe(&chunked[at..]),
            describe(&whole[at..])
        );
    }
    // Error values must at least name a close code.
    if let Err(e) = chunked_result {
        let _ = (e.close_code(), e.to_string());
    }
}

/// A short description of events, data abbreviated.
fn describe(events: &[Seen]) -> String {
    let short = |d: &[u8]| {
        let head: Vec<u8> = d.iter().copied().take(16).collect();
        format!("{} bytes {head:02x?}{}", d.len(), if d.len() > 16 { ".." } else { "" })
    };
    let list: Vec<String> = events
        .iter()
        .take(8)
        .map(|e| match e {
            Seen::Data(d) => format!("Data({})", short(d)),
            Seen::Ping(d) => format!("Ping({})", short(d)),
            Seen::Pong(d) => format!("Pong({})", short(d)),
            other => format!("{other:?}"),
        })
        .collect();
    format!("[{}{}]", list.join(", "), if events.len() > 8 { ", .." } else { "" })
}
