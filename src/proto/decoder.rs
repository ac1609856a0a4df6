//! The read side of the protocol: bytes in, validated events out.
//!
//! [`Decoder::decode`] takes bytes from the front of a buffer and returns one
//! [`Event`] at a time. Data payloads are delivered as they arrive, in chunks
//! split off the buffer without copying and unmasked in place, so a message is
//! never held whole unless the caller chooses to. Control frames (at most 125
//! bytes) are delivered whole. Every rule of RFC 6455 §5 about what a peer may
//! send is checked here; a violation is returned as a [`ProtocolError`] that
//! names the close code to fail the connection with.

use bytes::{Buf, Bytes, BytesMut};

use super::close::{CloseFrame, CloseFrameError};
use super::deflate::Inflater;
use super::frame::{FrameHeader, RSV1};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;
use super::{MessageType, OpCode, ProtocolError, Role};

/// RFC 6455 §5.5: control frames carry at most 125 payload bytes.
pub const MAX_CONTROL_PAYLOAD: u64 = 125;

/// What the decoder found next in the byte stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A data message starts. Its payload follows as [`Event::Data`] chunks,
    /// then [`Event::End`].
    Start {
        /// Text or binary.
        kind: MessageType,
        /// RSV1 was set on the first frame (the message is compressed, when
        /// permessage-deflate is negotiated).
        compressed: bool,
    },
    /// The next chunk of the open message's payload, unmasked. Text has been
    /// checked as UTF-8 up to here (when the message is not compressed).
    Data(BytesMut),
    /// The open message is complete.
    End,
    /// A whole message that arrived in one frame already in the buffer
    /// (uncompressed, unmasked, validated): the same as `Start`, one `Data`
    /// and `End`, in one step.
    Message {
        /// Text or binary.
        kind: MessageType,
        /// The payload.
        data: BytesMut,
    },
    /// A ping with its payload.
    Ping(Bytes),
    /// A pong with its payload.
    Pong(Bytes),
    /// A close frame; `None` when it carried no status code.
    Close(Option<CloseFrame>),
}

/// State of the data message being received.
#[derive(Debug)]
struct OpenMessage {
    kind: MessageType,
    compressed: bool,
    /// Payload bytes announced by the frame headers so far.
    size: u64,
    /// Frames received so far.
    frames: u32,
    /// Bytes produced by inflation so far (compressed messages).
    inflated: u64,
    utf8: Option<Utf8Validator>,
}

/// The payload of a data frame still to be delivered.
#[derive(Debug)]
struct PayloadState {
    fin: bool,
    mask: Option<[u8; 4]>,
    remaining: u64,
    mask_offset: usize,
    /// All the message's compressed data has been inflated (final frame only).
    inflated_all: bool,
}

/// The largest chunk of inflated data one event carries.
pub const MAX_INFLATED_CHUNK: usize = 64 * 1024;

/// Parses and validates the frames a peer sends.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    max_message_size: Option<u64>,
    max_frame_size: Option<u64>,
    max_fragments: Option<u32>,
    extension_rsv: u8,
    message: Option<OpenMessage>,
    payload: Option<PayloadState>,
    /// Boxed: most connections never compress, and the decoder is part of
    /// every connection's state.
    inflater: Option<Box<Inflater>>,
    /// Compressed input taken from the buffer but not inflated yet.
    pending: BytesMut,
    /// The last inflation filled its output: the inflater may hold more.
    output_full: bool,
}

impl Decoder {
    /// A decoder for an endpoint playing `role`: a server expects masked frames,
    /// a client unmasked ones.
    pub fn new(role: Role) -> Self {
        Decoder {
            role,
            max_message_size: None,
            max_frame_size: None,
            max_fragments: None,
            extension_rsv: 0,
            message: None,
            payload: None,
            inflater: None,
            pending: BytesMut::new(),
            output_full: false,
        }
    }

    /// Sets the largest message accepted, summed over its frames; `None` means
    /// no limit. A larger message fails with [`ProtocolError::MessageTooBig`]
    /// as soon as a frame header announces it.
    pub fn set_max_message_size(&mut self, limit: Option<u64>) {
        self.max_message_size = limit;
    }

    /// The largest message accepted.
    pub fn max_message_size(&self) -> Option<u64> {
        self.max_message_size
    }

    /// Sets the largest frame payload accepted (`None`: only the message
    /// limit applies). A larger frame fails with [`ProtocolError::FrameTooBig`].
    pub fn set_max_frame_size(&mut self, limit: Option<u64>) {
        self.max_frame_size = limit;
    }

    /// Sets the most frames one message may be split into (`None`: no limit),
    /// which bounds floods of tiny or empty fragments. More fail with
    /// [`ProtocolError::TooManyFragments`].
    pub fn set_max_fragments(&mut self, limit: Option<u32>) {
        self.max_fragments = limit;
    }

    /// Declares the RSV bits that a negotiated extension gives a meaning to
    /// (`RSV1` for permessage-deflate). They are accepted on the first frame of
    /// a data message only (RFC 7692 §6.1); anywhere else they are violations.
    pub fn set_extension_rsv(&mut self, bits: u8) {
        self.extension_rsv = bits & 0x7;
    }

    /// Enables permessage-deflate on the read side: RSV1 marks a compressed
    /// message, which is inflated before it is delivered, UTF-8 checked after
    /// inflation, and held to the read limit by its inflated size.
    pub fn set_inflater(&mut self, inflater: Option<Inflater>) {
        self.extension_rsv = if inflater.is_some() { RSV1 } else { 0 };
        self.inflater = inflater.map(Box::new);
    }

    /// Starts an idle period for the inflater: a later
    /// [`Decoder::park_if_idle`] frees its state unless it is used before.
    pub fn start_idle(&mut self) {
        if let Some(inflater) = &mut self.inflater {
            inflater.start_idle();
        }
    }

    /// Frees the inflater's state if it was not used since the last call (or
    /// [`Decoder::start_idle`]) and no message is under way; see
    /// [`Inflater::park`]. Returns whether the inflater still holds a state.
    pub fn park_if_idle(&mut self) -> bool {
        match &mut self.inflater {
            Some(inflater) => {
                inflater.park_if_idle();
                inflater.holds_state()
            }
            None => false,
        }
    }

    /// Whether the inflater holds a state that parking could free.
    pub fn inflater_holds_state(&self) -> bool {
        self.inflater.as_ref().is_some_and(|i| i.holds_state())
    }

    /// True while a data message has started and not yet ended.
    pub fn in_message(&self) -> bool {
        self.message.is_some()
    }

    /// Decodes the next event from the front of `buf`, consuming the bytes it
    /// used. `Ok(None)` means more input is needed; nothing that would be needed
    /// again is lost. After an error the connection must be failed: the decoder
    /// is not meant to be used again.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, ProtocolError> {
        loop {
            if self.payload.is_some() {
                let compressed = self.inflater.is_some() && self.message.as_ref().is_some_and(|m| m.compressed);
                let step = if compressed { self.compressed_payload(buf)? } else { self.plain_payload(buf)? };
                match step {
                    Step::Event(event) => return Ok(Some(event)),
                    Step::NeedMore => return Ok(None),
                    Step::Continue => continue,
                }
            }

            let Some((header, header_len)) = FrameHeader::parse(buf)? else {
                return Ok(None);
            };
            self.check_header(&header)?;
            if header.opcode.is_control() {
                return self.decode_control(buf, header, header_len);
            }
            if self.is_whole_message(&header, header_len, buf) {
                let (kind, data) = self.take_whole_message(&header, header_len, buf)?;
                return Ok(Some(Event::Message { kind, data }));
            }
            buf.advance(header_len);
            let started = self.begin_data_frame(&header)?;
            self.payload = Some(PayloadState {
                fin: header.fin,
                mask: header.mask,
                remaining: header.payload_len,
                mask_offset: 0,
                inflated_all: false,
            });
            if let Some(event) = started {
                return Ok(Some(event));
            }
        }
    }

    /// Decodes the next frame only if it is a whole message: a final,
    /// uncompressed data frame that opens a message and has arrived entirely.
    /// Consumes nothing and returns `Ok(None)` otherwise (including when a
    /// control frame or part of a message comes first), so that the caller
    /// can go on with [`Decoder::decode`]. The errors are those `decode`
    /// would report for the same frame.
    pub fn decode_message(&mut self, buf: &mut BytesMut) -> Result<Option<(MessageType, BytesMut)>, ProtocolError> {
        if self.payload.is_some() || self.message.is_some() {
            return Ok(None);
        }
        if let Some(short) = self.short_frame(buf) {
            return short.map(Some);
        }
        let Some((header, header_len)) = FrameHeader::parse(buf)? else {
            return Ok(None);
        };
        if header.opcode.is_control() || !self.is_whole_message(&header, header_len, buf) {
            return Ok(None);
        }
        self.check_header(&header)?;
        self.take_whole_message(&header, header_len, buf).map(Some)
    }

    /// The most common frame of all, decoded without the general header
    /// parse: a final text or binary frame without RSV bits, with a payload
    /// of at most 125 bytes (the header's 7-bit length), masked as the role
    /// requires and all arrived. `None` for anything else, consuming
    /// nothing; the caller has checked that no message is under way.
    #[inline]
    fn short_frame(&self, buf: &mut BytesMut) -> Option<Result<(MessageType, BytesMut), ProtocolError>> {
        let (&b0, &b1) = (buf.first()?, buf.get(1)?);
        let kind = match b0 {
            0x81 => MessageType::Text,
            0x82 => MessageType::Binary,
            _ => return None,
        };
        let masked = b1 & 0x80 != 0;
        let len = usize::from(b1 & 0x7f);
        if len > 125 || masked != (self.role == Role::Server) {
            return None;
        }
        let header_len = if masked { 6 } else { 2 };
        if buf.len() < header_len + len {
            return None;
        }
        let key = masked.then(|| [buf[2], buf[3], buf[4], buf[5]]);
        let header = FrameHeader { fin: true, rsv: 0, opcode: kind.opcode(), mask: key, payload_len: len as u64 };
        if let Err(e) = self.check_sizes(&header, header.payload_len) {
            return Some(Err(e));
        }
        buf.advance(header_len);
        let mut data = buf.split_to(len);
        if let Some(key) = key {
            apply_mask(&mut data, key, 0);
        }
        if kind == MessageType::Text && super::utf8::validate(&data).is_err() {
            return Some(Err(ProtocolError::InvalidUtf8));
        }
        Some(Ok((kind, data)))
    }

    /// Whether the frame whose header is at the front of `buf` is a whole
    /// message: final, uncompressed, opening a message, all arrived.
    fn is_whole_message(&self, header: &FrameHeader, header_len: usize, buf: &BytesMut) -> bool {
        let plain = !(self.inflater.is_some() && header.rsv & RSV1 != 0);
        let arrived = (buf.len() - header_len) as u64 >= header.payload_len;
        header.fin
            && plain
            && arrived
            && self.message.is_none()
            && matches!(header.opcode, OpCode::Text | OpCode::Binary)
    }

    /// Takes a whole message (see [`Decoder::is_whole_message`]) out of
    /// `buf`: the common case of a small message, without the streaming states.
    fn take_whole_message(
        &mut self,
        header: &FrameHeader,
        header_len: usize,
        buf: &mut BytesMut,
    ) -> Result<(MessageType, BytesMut), ProtocolError> {
        self.check_sizes(header, header.payload_len)?;
        buf.advance(header_len);
        // The payload has arrived (`is_whole_message`), so its length fits in
        // `buf.len()` and the cast cannot truncate.
        let mut data = buf.split_to(header.payload_len as usize);
        if let Some(key) = header.mask {
            apply_mask(&mut data, key, 0);
        }
        let kind = if header.opcode == OpCode::Text { MessageType::Text } else { MessageType::Binary };
        if kind == MessageType::Text {
            super::utf8::validate(&data).map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok((kind, data))
    }

    /// Delivers the payload of an uncompressed data frame as it arrives.
    fn plain_payload(&mut self, buf: &mut BytesMut) -> Result<Step, ProtocolError> {
        let Some(payload) = &mut self.payload else { return Ok(Step::Continue) };
        if payload.remaining > 0 {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            let chunk = take_payload(payload, buf);
            if let Some(utf8) = self.message.as_mut().and_then(|m| m.utf8.as_mut()) {
                utf8.feed(&chunk).map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            return Ok(Step::Event(Event::Data(chunk)));
        }
        let fin = payload.fin;
        self.payload = None;
        if fin {
            self.end_message()?;
            return Ok(Step::Event(Event::End));
        }
        Ok(Step::Continue)
    }

    /// Inflates the payload of a compressed message's frame as it arrives,
    /// in chunks of at most [`MAX_INFLATED_CHUNK`] bytes.
    fn compressed_payload(&mut self, buf: &mut BytesMut) -> Result<Step, ProtocolError> {
        let (Some(payload), Some(inflater)) = (&mut self.payload, &mut self.inflater) else {
            return Ok(Step::Continue);
        };
        let corrupt = |e: super::deflate::InflateError| ProtocolError::InvalidCompressedData(e.0);
        let mut out = BytesMut::new();
        if !self.pending.is_empty() || self.output_full {
            // Input left over, or output the inflater still holds: deliver it
            // before asking for more input.
            let used = inflater.inflate(&self.pending, &mut out, MAX_INFLATED_CHUNK).map_err(corrupt)?;
            let _ = self.pending.split_to(used);
        } else if payload.remaining > 0 {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            let mut chunk = take_payload(payload, buf);
            let used = inflater.inflate(&chunk, &mut out, MAX_INFLATED_CHUNK).map_err(corrupt)?;
            if used < chunk.len() {
                self.pending = chunk.split_off(used);
            }
        } else if !payload.fin {
            self.payload = None;
            return Ok(Step::Continue);
        } else if !payload.inflated_all {
            payload.inflated_all = inflater.finish(&mut out, MAX_INFLATED_CHUNK).map_err(corrupt)?;
        } else {
            self.payload = None;
            self.end_message()?;
            return Ok(Step::Event(Event::End));
        }
        self.output_full = out.len() >= MAX_INFLATED_CHUNK;
        if out.is_empty() {
            return Ok(Step::Continue);
        }
        if let Some(message) = &mut self.message {
            message.inflated += out.len() as u64;
            if let Some(limit) = self.max_message_size {
                if message.inflated > limit {
                    return Err(ProtocolError::MessageTooBig { size: message.inflated, limit });
                }
            }
            if let Some(utf8) = &mut message.utf8 {
                utf8.feed(&out).map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        }
        Ok(Step::Event(Event::Data(out)))
    }

    fn end_message(&mut self) -> Result<(), ProtocolError> {
        if let Some(mut message) = self.message.take() {
            if let Some(utf8) = &mut message.utf8 {
                utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        }
        Ok(())
    }

    /// The rules that need only the header (RFC 6455 §5.1, §5.2, §5.5).
    fn check_header(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        let allowed = match header.opcode {
            OpCode::Text | OpCode::Binary => self.extension_rsv,
            // RFC 7692 §6.1: RSV1 belongs to the first frame of a message only.
            _ => self.extension_rsv & !RSV1,
        };
        if header.rsv & !allowed != 0 {
            return Err(ProtocolError::ReservedBits(header.rsv));
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if header.opcode.is_control() {
            if !header.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if header.payload_len > MAX_CONTROL_PAYLOAD {
                return Err(ProtocolError::ControlFrameTooLong(header.payload_len));
            }
        }
        Ok(())
    }

    /// Opens or continues a data message (RFC 6455 §5.4) and applies the read
    /// limit. Returns the `Start` event for the first frame of a message.
    fn begin_data_frame(&mut self, header: &FrameHeader) -> Result<Option<Event>, ProtocolError> {
        match (header.opcode, &self.message) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
        }
        let size_so_far = self.message.as_ref().map_or(0, |m| m.size);
        self.check_sizes(header, size_so_far.saturating_add(header.payload_len))?;
        let max_fragments = self.max_fragments;
        match (header.opcode, &mut self.message) {
            (OpCode::Continuation, Some(message)) => {
                message.size = message.size.saturating_add(header.payload_len);
                message.frames = message.frames.saturating_add(1);
                if let Some(limit) = max_fragments {
                    if message.frames > limit {
                        return Err(ProtocolError::TooManyFragments { limit });
                    }
                }
                Ok(None)
            }
            (OpCode::Continuation, None) | (_, Some(_)) => Ok(None),
            (opcode, None) => {
                let kind = if opcode == OpCode::Text { MessageType::Text } else { MessageType::Binary };
                let compressed = header.rsv & RSV1 != 0;
                // Compressed text is validated after inflation.
                let utf8 = (kind == MessageType::Text).then(Utf8Validator::new);
                self.message =
                    Some(OpenMessage { kind, compressed, size: header.payload_len, frames: 1, inflated: 0, utf8 });
                Ok(Some(Event::Start { kind, compressed }))
            }
        }
    }

    /// Applies the frame-size limit to `header` and the read limit to
    /// `message_size`, the size of its message so far including this frame.
    fn check_sizes(&self, header: &FrameHeader, message_size: u64) -> Result<(), ProtocolError> {
        if let Some(limit) = self.max_frame_size {
            if header.payload_len > limit {
                return Err(ProtocolError::FrameTooBig { size: header.payload_len, limit });
            }
        }
        match self.max_message_size {
            Some(limit) if message_size > limit => Err(ProtocolError::MessageTooBig { size: message_size, limit }),
            _ => Ok(()),
        }
    }

    /// Decodes a whole control frame, or waits until it has all arrived.
    fn decode_control(
        &mut self,
        buf: &mut BytesMut,
        header: FrameHeader,
        header_len: usize,
    ) -> Result<Option<Event>, ProtocolError> {
        // At most 125 bytes (checked), so the cast cannot truncate.
        let frame_len = header_len + header.payload_len as usize;
        if buf.len() < frame_len {
            return Ok(None);
        }
        let mut frame = buf.split_to(frame_len);
        let mut payload = frame.split_off(header_len);
        if let Some(key) = header.mask {
            apply_mask(&mut payload, key, 0);
        }
        Ok(Some(match header.opcode {
            OpCode::Ping => Event::Ping(payload.freeze()),
            OpCode::Pong => Event::Pong(payload.freeze()),
            _ => Event::Close(CloseFrame::parse(&payload).map_err(|e| match e {
                CloseFrameError::TooShort => ProtocolError::CloseFrameTooShort,
                CloseFrameError::InvalidCode(code) => ProtocolError::InvalidCloseCode(code),
                CloseFrameError::InvalidReason => ProtocolError::InvalidUtf8,
            })?),
        }))
    }

    /// Payload bytes of the current data frame that have not arrived yet.
    pub fn payload_remaining(&self) -> u64 {
        self.payload.as_ref().map_or(0, |p| p.remaining)
    }

    /// The kind and compression flag of the open message.
    pub fn open_message(&self) -> Option<(MessageType, bool)> {
        self.message.as_ref().map(|m| (m.kind, m.compressed))
    }
}

/// What handling a frame's payload led to.
enum Step {
    Event(Event),
    NeedMore,
    Continue,
}

/// Splits the next available piece of the current frame's payload off the
/// buffer, unmasked.
fn take_payload(payload: &mut PayloadState, buf: &mut BytesMut) -> BytesMut {
    // Bounded by `buf.len()`, so the cast cannot truncate.
    let take = payload.remaining.min(buf.len() as u64) as usize;
    let mut chunk = buf.split_to(take);
    if let Some(key) = payload.mask {
        payload.mask_offset = apply_mask(&mut chunk, key, payload.mask_offset);
    }
    payload.remaining -= take as u64;
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::encoder::encode_frame;

    fn frame(opcode: OpCode, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_frame(&mut out, opcode, fin, 0, mask, payload);
        out.to_vec()
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<Vec<Event>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut events = Vec::new();
        while let Some(event) = decoder.decode(&mut buf)? {
            events.push(event);
        }
        Ok(events)
    }

    const KEY: Option<[u8; 4]> = Some([1, 2, 3, 4]);

    #[test]
    fn decode_message_takes_a_whole_message_and_nothing_else() {
        let mut d = Decoder::new(Role::Server);
        let mut bytes = frame(OpCode::Binary, true, b"one", KEY);
        bytes.extend(frame(OpCode::Ping, true, b"p", KEY));
        bytes.extend(frame(OpCode::Text, false, b"frag", KEY));
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(d.decode_message(&mut buf), Ok(Some((MessageType::Binary, BytesMut::from(&b"one"[..])))));
        // A control frame first: nothing is consumed, decode() gets it.
        let before = buf.len();
        assert_eq!(d.decode_message(&mut buf), Ok(None));
        assert_eq!(buf.len(), before);
        assert_eq!(d.decode(&mut buf), Ok(Some(Event::Ping(Bytes::from_static(b"p")))));
        // The first fragment of a message is not a whole message either.
        assert_eq!(d.decode_message(&mut buf), Ok(None));
        assert!(matches!(d.decode(&mut buf), Ok(Some(Event::Start { kind: MessageType::Text, .. }))));
    }

    #[test]
    fn decode_message_waits_for_the_whole_payload() {
        let mut d = Decoder::new(Role::Server);
        let bytes = frame(OpCode::Text, true, b"hello", KEY);
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert_eq!(d.decode_message(&mut buf), Ok(None));
        assert_eq!(buf.len(), bytes.len() - 1);
        buf.extend_from_slice(&bytes[bytes.len() - 1..]);
        assert_eq!(d.decode_message(&mut buf), Ok(Some((MessageType::Text, BytesMut::from(&b"hello"[..])))));
        assert!(buf.is_empty());
    }

    #[test]
    fn decode_message_reports_the_errors_decode_would() {
        let decoder = |limit| {
            let mut d = Decoder::new(Role::Server);
            d.set_max_message_size(limit);
            d
        };
        for (limit, bytes) in [
            (None, frame(OpCode::Text, true, &[0xff, 0xfe], KEY)),
            (None, frame(OpCode::Binary, true, b"x", None)),
            (Some(2), frame(OpCode::Binary, true, b"abc", KEY)),
        ] {
            let fast = decoder(limit).decode_message(&mut BytesMut::from(&bytes[..]));
            let general = decoder(limit).decode(&mut BytesMut::from(&bytes[..]));
            assert!(fast.is_err(), "{fast:?}");
            assert_eq!(fast.err(), general.err());
        }
    }

    #[test]
    fn decode_message_agrees_with_decode_on_every_first_byte() {
        // Every first header byte, lengths around the short form's edge,
        // masked or not, for both roles, with and without a message or frame
        // size limit, whole or one byte short, valid or invalid UTF-8:
        // whatever `decode_message` takes, `decode` takes the same way; what
        // it refuses, `decode` refuses alike; what it leaves, it leaves
        // untouched.
        for role in [Role::Server, Role::Client] {
            for (limit, frame_limit) in [(None, None), (Some(4), None), (None, Some(4))] {
                for b0 in 0..=255u8 {
                    for len in [0usize, 1, 5, 125, 126] {
                        for (masked, payload_byte, cut) in
                            [(true, b'a', 0), (false, b'a', 0), (true, 0xff, 0), (false, 0xff, 0), (true, b'a', 1)]
                        {
                            let mut bytes = vec![b0];
                            if len < 126 {
                                bytes.push(u8::from(masked) << 7 | len as u8);
                            } else {
                                bytes.push(u8::from(masked) << 7 | 126);
                                bytes.extend((len as u16).to_be_bytes());
                            }
                            if masked {
                                bytes.extend([0, 0, 0, 0]);
                            }
                            bytes.extend(std::iter::repeat_n(payload_byte, len));
                            bytes.truncate(bytes.len() - cut);
                            let decoder = || {
                                let mut d = Decoder::new(role);
                                d.set_max_message_size(limit);
                                d.set_max_frame_size(frame_limit);
                                d
                            };
                            let mut fast_buf = BytesMut::from(&bytes[..]);
                            let fast = decoder().decode_message(&mut fast_buf);
                            let mut general_buf = BytesMut::from(&bytes[..]);
                            let general = decoder().decode(&mut general_buf);
                            let case = format!(
                                "{role:?} {limit:?} {frame_limit:?} {b0:#x} {len} {masked} {payload_byte} {cut}"
                            );
                            match fast {
                                Ok(Some((kind, data))) => {
                                    assert_eq!(general, Ok(Some(Event::Message { kind, data })), "{case}");
                                    assert_eq!(fast_buf, general_buf, "{case}");
                                }
                                Err(e) => assert_eq!(general, Err(e), "{case}"),
                                Ok(None) => assert_eq!(fast_buf.len(), bytes.len(), "{case}"),
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_whole_masked_text_frame_is_one_message_event() {
        let mut d = Decoder::new(Role::Server);
        let events = decode_all(&mut d, &frame(OpCode::Text, true, b"hello", KEY)).unwrap();
        assert_eq!(events, vec![Event::Message { kind: MessageType::Text, data: BytesMut::from(&b"hello"[..]) }]);
        assert!(!d.in_message());
    }

    #[test]
    fn a_frame_still_arriving_becomes_start_data_end() {
        let bytes = frame(OpCode::Text, true, b"hello", KEY);
        let mut d = Decoder::new(Role::Server);
        let mut buf = BytesMut::from(&bytes[..8]);
        let mut events = Vec::new();
        while let Some(event) = d.decode(&mut buf).unwrap() {
            events.push(event);
        }
        buf.extend_from_slice(&bytes[8..]);
        while let Some(event) = d.decode(&mut buf).unwrap() {
            events.push(event);
        }
        assert_eq!(
            events,
            vec![
                Event::Start { kind: MessageType::Text, compressed: false },
                Event::Data(BytesMut::from(&b"he"[..])),
                Event::Data(BytesMut::from(&b"llo"[..])),
                Event::End
            ]
        );
    }

    #[test]
    fn fragments_with_an_interleaved_ping_are_reassembled_in_order() {
        let mut bytes = frame(OpCode::Binary, false, b"ab", None);
        bytes.extend(frame(OpCode::Ping, true, b"p", None));
        bytes.extend(frame(OpCode::Continuation, false, b"", None));
        bytes.extend(frame(OpCode::Continuation, true, b"cd", None));
        let mut d = Decoder::new(Role::Client);
        let events = decode_all(&mut d, &bytes).unwrap();
        assert_eq!(
            events,
            vec![
                Event::Start { kind: MessageType::Binary, compressed: false },
                Event::Data(BytesMut::from(&b"ab"[..])),
                Event::Ping(Bytes::from_static(b"p")),
                Event::Data(BytesMut::from(&b"cd"[..])),
                Event::End
            ]
        );
    }

    #[test]
    fn byte_at_a_time_input_gives_the_same_message() {
        let bytes = frame(OpCode::Text, true, "héllo wörld".as_bytes(), KEY);
        let mut d = Decoder::new(Role::Server);
        let mut buf = BytesMut::new();
        let mut text = Vec::new();
        let mut ended = false;
        for b in bytes {
            buf.extend_from_slice(&[b]);
            while let Some(event) = d.decode(&mut buf).unwrap() {
                match event {
                    Event::Data(chunk) => text.extend_from_slice(&chunk),
                    Event::End => ended = true,
                    _ => {}
                }
            }
        }
        assert!(ended);
        assert_eq!(text, "héllo wörld".as_bytes());
    }

    #[test]
    fn masking_rules_depend_on_the_role() {
        let unmasked = frame(OpCode::Text, true, b"x", None);
        let masked = frame(OpCode::Text, true, b"x", KEY);
        assert_eq!(decode_all(&mut Decoder::new(Role::Server), &unmasked), Err(ProtocolError::UnmaskedFrame));
        assert_eq!(decode_all(&mut Decoder::new(Role::Client), &masked), Err(ProtocolError::MaskedFrame));
    }

    #[test]
    fn reserved_bits_fail_unless_an_extension_claims_rsv1_on_a_first_frame() {
        let mut rsv1 = frame(OpCode::Text, true, b"", None);
        rsv1[0] |= 0x40;
        assert_eq!(decode_all(&mut Decoder::new(Role::Client), &rsv1), Err(ProtocolError::ReservedBits(4)));
        let mut d = Decoder::new(Role::Client);
        d.set_extension_rsv(RSV1);
        let events = decode_all(&mut d, &rsv1).unwrap();
        assert!(matches!(events[0], Event::Message { kind: MessageType::Text, .. }), "{events:?}");

        let mut ping = frame(OpCode::Ping, true, b"", None);
        ping[0] |= 0x40;
        let mut d = Decoder::new(Role::Client);
        d.set_extension_rsv(RSV1);
        assert_eq!(decode_all(&mut d, &ping), Err(ProtocolError::ReservedBits(4)));

        let mut bytes = frame(OpCode::Binary, false, b"a", None);
        let mut cont = frame(OpCode::Continuation, true, b"b", None);
        cont[0] |= 0x40;
        bytes.extend(cont);
        let mut d = Decoder::new(Role::Client);
        d.set_extension_rsv(RSV1);
        assert_eq!(decode_all(&mut d, &bytes), Err(ProtocolError::ReservedBits(4)));

        let mut rsv2 = frame(OpCode::Binary, true, b"", None);
        rsv2[0] |= 0x20;
        let mut d = Decoder::new(Role::Client);
        d.set_extension_rsv(RSV1);
        assert_eq!(decode_all(&mut d, &rsv2), Err(ProtocolError::ReservedBits(2)));
    }

    #[test]
    fn control_frame_rules() {
        let long_ping = frame(OpCode::Ping, true, &[0; 126], None);
        assert_eq!(
            decode_all(&mut Decoder::new(Role::Client), &long_ping),
            Err(ProtocolError::ControlFrameTooLong(126))
        );
        let max_ping = frame(OpCode::Ping, true, &[7; 125], None);
        assert_eq!(
            decode_all(&mut Decoder::new(Role::Client), &max_ping).unwrap(),
            vec![Event::Ping(Bytes::from(vec![7; 125]))]
        );
        let fragmented = frame(OpCode::Pong, false, b"", None);
        assert_eq!(
            decode_all(&mut Decoder::new(Role::Client), &fragmented),
            Err(ProtocolError::FragmentedControlFrame)
        );
    }

    #[test]
    fn a_partial_control_frame_is_not_consumed() {
        let ping = frame(OpCode::Ping, true, b"abc", KEY);
        let mut d = Decoder::new(Role::Server);
        let mut buf = BytesMut::from(&ping[..ping.len() - 1]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), ping.len() - 1);
        buf.extend_from_slice(&ping[ping.len() - 1..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(Event::Ping(Bytes::from_static(b"abc")))));
        assert!(buf.is_empty());
    }

    #[test]
    fn fragmentation_rules() {
        let cont = frame(OpCode::Continuation, true, b"x", None);
        assert_eq!(decode_all(&mut Decoder::new(Role::Client), &cont), Err(ProtocolError::UnexpectedContinuation));
        let mut bytes = frame(OpCode::Text, false, b"a", None);
        bytes.extend(frame(OpCode::Text, true, b"b", None));
        assert_eq!(decode_all(&mut Decoder::new(Role::Client), &bytes), Err(ProtocolError::ExpectedContinuation));
    }

    #[test]
    fn invalid_utf8_fails_fast_and_across_fragments() {
        let bad = frame(OpCode::Text, false, b"ok\xff", None);
        assert_eq!(decode_all(&mut Decoder::new(Role::Client), &bad), Err(ProtocolError::InvalidUtf8));
        // A character split across two frames is fine...
        let mut split = frame(OpCode::Text, false, b"\xce", None);
        split.extend(frame(OpCode::Continuation, true, b"\xba", None));
        assert!(decode_all(&mut Decoder::new(Role::Client), &split).is_ok());
        // ...but a message may not end inside one.
        let truncated = frame(OpCode::Text, true, b"\xce", None);
        assert_eq!(decode_all(&mut Decoder::new(Role::Client), &truncated), Err(ProtocolError::InvalidUtf8));
        // Binary messages are not checked.
        let binary = frame(OpCode::Binary, true, b"\xff", None);
        assert!(decode_all(&mut Decoder::new(Role::Client), &binary).is_ok());
    }

    #[test]
    fn close_frames_are_validated() {
        let d = || Decoder::new(Role::Client);
        assert_eq!(decode_all(&mut d(), &frame(OpCode::Close, true, b"", None)).unwrap(), vec![Event::Close(None)]);
        assert_eq!(
            decode_all(&mut d(), &frame(OpCode::Close, true, b"\x03\xe8bye", None)).unwrap(),
            vec![Event::Close(Some(CloseFrame::new(1000u16, "bye")))]
        );
        assert_eq!(
            decode_all(&mut d(), &frame(OpCode::Close, true, b"\x03", None)),
            Err(ProtocolError::CloseFrameTooShort)
        );
        assert_eq!(
            decode_all(&mut d(), &frame(OpCode::Close, true, b"\x03\xee", None)),
            Err(ProtocolError::InvalidCloseCode(1006))
        );
        assert_eq!(
            decode_all(&mut d(), &frame(OpCode::Close, true, b"\x03\xe8\xff", None)),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn the_read_limit_counts_every_fragment_and_fails_at_the_header() {
        let mut d = Decoder::new(Role::Client);
        d.set_max_message_size(Some(4));
        let ok = frame(OpCode::Binary, true, b"abcd", None);
        assert!(decode_all(&mut d, &ok).is_ok());
        let mut bytes = frame(OpCode::Binary, false, b"abc", None);
        bytes.extend(frame(OpCode::Continuation, true, b"de", None));
        let err = decode_all(&mut d, &bytes).unwrap_err();
        assert_eq!(err, ProtocolError::MessageTooBig { size: 5, limit: 4 });
        assert_eq!(err.close_code(), crate::proto::CloseCode::MESSAGE_TOO_BIG);
        // A header alone announcing too much fails before any payload arrives.
        let mut d = Decoder::new(Role::Client);
        d.set_max_message_size(Some(1000));
        let header = [0x82, 0x7f, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(matches!(decode_all(&mut d, &header), Err(ProtocolError::MessageTooBig { .. })));
    }

    #[test]
    fn frame_size_and_fragment_count_limits() {
        let mut d = Decoder::new(Role::Client);
        d.set_max_frame_size(Some(3));
        let err = decode_all(&mut d, &frame(OpCode::Binary, true, b"abcd", None)).unwrap_err();
        assert_eq!(err, ProtocolError::FrameTooBig { size: 4, limit: 3 });
        assert_eq!(err.close_code(), crate::proto::CloseCode::MESSAGE_TOO_BIG);

        let mut d = Decoder::new(Role::Client);
        d.set_max_fragments(Some(3));
        let mut bytes = frame(OpCode::Text, false, b"", None);
        bytes.extend(frame(OpCode::Continuation, false, b"", None));
        bytes.extend(frame(OpCode::Continuation, true, b"", None));
        assert!(decode_all(&mut d, &bytes).is_ok());
        let mut flood = frame(OpCode::Text, false, b"", None);
        for _ in 0..3 {
            flood.extend(frame(OpCode::Continuation, false, b"", None));
        }
        let err = decode_all(&mut d, &flood).unwrap_err();
        assert_eq!(err, ProtocolError::TooManyFragments { limit: 3 });
        assert_eq!(err.close_code(), crate::proto::CloseCode::POLICY_VIOLATION);
    }

    #[test]
    fn empty_messages_and_empty_fragments() {
        let mut d = Decoder::new(Role::Client);
        let events = decode_all(&mut d, &frame(OpCode::Text, true, b"", None)).unwrap();
        assert_eq!(events, vec![Event::Message { kind: MessageType::Text, data: BytesMut::new() }]);
        assert!(!d.in_message());
    }
}
