//! One WebSocket endpoint as a sans-IO state machine: bytes in, events
//! out; calls to send, bytes to write; time as data.
//!
//! ```text
//!   receive_into / receive_eof ──► Connection ──► next_event (messages, control frames)
//!   send_message / send_control ──►            ──► data_to_send / sent / flushed
//!   close / reply                ──►            ──► should_close_transport
//!   handle_timeout(now)          ──►            ──► poll_timeout
//! ```
//!
//! It owns the decoder and the compression state of both directions, the
//! close handshake (who started it, the 1005 rule, what is owed), failing
//! the connection with the right code, the queue of frames to write with
//! every send-side rule, and the timers: keepalive pings and their pong
//! deadline, the wait for the peer's close, and the wait for a final close
//! frame to leave. It has no clock (time comes in as `now`), no I/O and no
//! randomness (client masking keys come from a source the driver gives it).
//!
//! Control frames are reported, not answered: the driver runs its handlers
//! (gorilla's ping, pong and close handlers) and answers through
//! [`Connection::reply`], so a custom handler decides what is sent. The
//! default answers are [`Connection::reply`] with a pong of the same payload
//! and, for a close, [`Connection::reply`] with a close of the same code.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::close::{closed_by_peer, failing_close, CloseFrame};
use super::decoder::{Decoder, Event as Decoded};
use super::deflate::Inflater;
use super::encoder::encode_frame;
use super::frame::RSV1;
use super::keepalive::{Due, Keepalive};
use super::outbox::{control_frame, Origin, Outbox};
use super::sender::{is_valid_control, Fragments, Sender};
use super::{MessageType, OpCode, ProtocolError, Role};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::prepared::PreparedMessage;

/// How long a close frame that ends the connection (an answer to the peer's
/// close, or the one that fails the connection) may take to leave before
/// the transport is closed anyway.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// What the peer sent, as the core reports it.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A whole data message that arrived in one step.
    Message(MessageType, BytesMut),
    /// A data message starts; its payload follows as [`Event::Data`], then [`Event::End`].
    Start(MessageType),
    /// The next piece of the current message's payload (validated, inflated).
    Data(BytesMut),
    /// The current message is complete.
    End,
    /// A ping: answer it with [`Connection::reply`] (a pong) unless a handler decides otherwise.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer's close frame (`None` when it carried no code). Every later
    /// [`Connection::next_event`] returns [`Error::Closed`]; answer with
    /// [`Connection::reply`] (a close) to complete the handshake.
    Close(Option<CloseFrame>),
}

/// The core of one connection. See the module documentation.
pub struct Connection {
    role: Role,
    decoder: Decoder,
    input: BytesMut,
    read_buffer_size: usize,
    outbox: Outbox,
    sender: Sender,
    /// The streamed message being sent, and its next fragment's payload.
    streaming: Option<(Fragments, BytesMut)>,
    write_buffer_size: usize,
    /// The permanent read error: every later `next_event` returns it.
    error: Option<Error>,
    close_received: bool,
    /// The connection failed: the transport closes once the close frame is out.
    failed: bool,
    /// When the transport is closed whatever else happens.
    deadline: Option<Instant>,
    /// The deadline passed, or keepalive expired: close the transport now.
    transport_done: bool,
    close_timeout: Duration,
    keepalive: Option<Keepalive>,
    mask: Box<dyn FnMut() -> [u8; 4] + Send>,
    /// With compression context takeover and parking on: when to park.
    park: Option<ParkClock>,
}

/// The idle clock that parks compression states (see
/// [`Config::compression_park_after`]): armed when [`Connection::next_event`]
/// needs more input while a state is held, checked by [`Connection::handle_timeout`].
#[derive(Debug)]
struct ParkClock {
    after: Duration,
    at: Option<Instant>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("buffered_in", &self.input.len())
            .field("buffered_out", &self.outbox.buffered())
            .field("error", &self.error)
            .field("close_received", &self.close_received)
            .field("close_sent", &self.is_close_sent())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The core of a connection whose opening handshake agreed `config`
    /// (limits, compression, keepalive). `now` starts the keepalive clock;
    /// `mask` supplies a fresh, unpredictable masking key for every client
    /// frame (RFC 6455 §5.3; never called for a server).
    pub fn new(role: Role, config: &Config, now: Instant, mask: Box<dyn FnMut() -> [u8; 4] + Send>) -> Self {
        let mut decoder = Decoder::new(role);
        decoder.set_max_message_size(config.read_limit);
        decoder.set_max_frame_size(config.max_frame_size);
        decoder.set_max_fragments(config.max_fragments);
        if let Some(params) = &config.deflate {
            // The peer's side of the agreement says whether it keeps its context.
            let (peer_resets, peer_bits) = match role {
                Role::Server => (params.client_no_context_takeover, params.client_max_window_bits),
                Role::Client => (params.server_no_context_takeover, params.server_max_window_bits),
            };
            decoder.set_inflater(Some(Inflater::with_window_bits(peer_resets, peer_bits)));
        }
        let sender =
            Sender::new(role, config.deflate, config.compression_level.clamped(), config.compression_threshold);
        // Either direction keeping its context has a state worth parking.
        let takes_over = config.deflate.is_some_and(|p| !p.client_no_context_takeover || !p.server_no_context_takeover);
        let park = config
            .compression_park_after
            .filter(|after| takes_over && !after.is_zero())
            .map(|after| ParkClock { after, at: None });
        let keepalive = config.ping_interval.map(|interval| Keepalive::new(interval, config.pong_timeout, now));
        Connection {
            role,
            decoder,
            input: BytesMut::new(),
            read_buffer_size: config.read_buffer_size.max(64),
            outbox: Outbox::default(),
            sender,
            streaming: None,
            write_buffer_size: config.write_buffer_size.max(1),
            error: None,
            close_received: false,
            failed: false,
            deadline: None,
            transport_done: false,
            close_timeout: config.close_timeout,
            keepalive,
            mask,
            park,
        }
    }

    /// Waiting for input with a compression state held: from now on, an
    /// idle period parks it.
    fn arm_park(&mut self, now: Instant) {
        if let Some(park) = &mut self.park {
            if park.at.is_none() && (self.decoder.inflater_holds_state() || self.sender.holds_state()) {
                self.decoder.start_idle();
                self.sender.start_idle();
                park.at = Some(now + park.after);
            }
        }
    }

    /// Whether zlib state is held for compression right now: false without
    /// compression and while an idle connection has its states parked (see
    /// [`Config::compression_park_after`]).
    pub fn holds_compression_state(&self) -> bool {
        self.decoder.inflater_holds_state() || self.sender.holds_state()
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// How long [`Connection::close`] gives the peer to answer.
    pub fn close_timeout(&self) -> Duration {
        self.close_timeout
    }

    /// How much input [`Connection::receive_into`] asks for at least.
    pub fn read_buffer_size(&self) -> usize {
        self.read_buffer_size
    }

    /// Whether permessage-deflate was agreed.
    pub fn compression_negotiated(&self) -> bool {
        self.sender.compression_negotiated()
    }

    /// Turns compression of later data messages on or off.
    pub fn set_compression(&mut self, enable: bool) {
        self.sender.set_compression(enable);
    }

    /// Sets the compression level of later messages (the nearest valid one;
    /// see [`crate::CompressionLevel`]).
    pub fn set_compression_level(&mut self, level: impl Into<crate::CompressionLevel>) {
        self.sender.set_level(level.into().clamped());
    }

    /// Sets the largest message accepted; `None` removes the limit.
    pub fn set_read_limit(&mut self, limit: Option<u64>) {
        self.decoder.set_max_message_size(limit);
    }

    /// The write side failed for good (the transport failed, or a write
    /// deadline passed while a frame was under way): nothing more is sent.
    pub fn fail_writes(&mut self, error: Error) {
        self.outbox.fail(error);
    }

    // ---- input ----------------------------------------------------------

    /// Bytes that arrived before the connection began (read past the
    /// opening handshake).
    pub fn receive_data(&mut self, data: &[u8]) {
        self.input.extend_from_slice(data);
    }

    /// Lets `read` fill the input buffer's free room (at least the read
    /// buffer size, more inside a large frame) and keeps what it read.
    /// Returns what `read` returned: the number of bytes, 0 at the end of input.
    pub fn receive_into<E>(
        &mut self,
        read: impl FnOnce(&mut [u8]) -> std::result::Result<usize, E>,
    ) -> std::result::Result<usize, E> {
        let remaining = self.decoder.payload_remaining().min(1 << 20) as usize;
        let want = self.read_buffer_size.max(remaining);
        let start = self.input.len();
        self.input.resize(start + want, 0);
        let result = read(&mut self.input[start..]);
        let n = *result.as_ref().unwrap_or(&0);
        self.input.truncate(start + n.min(want));
        result
    }

    /// The peer closed its side of the transport (no more input).
    pub fn receive_eof(&mut self) {
        if self.error.is_none() {
            self.error = Some(Error::abnormal_closure());
        }
    }

    /// The next event in what has arrived, `Ok(None)` when more input is
    /// needed. Errors are permanent: a violation of the protocol fails the
    /// connection (RFC 6455 §7.1.7) — the close frame with the code it
    /// calls for is queued, and the transport is to be closed once it is
    /// out — and every later call returns the same error; so does a close
    /// received, after its [`Event::Close`].
    pub fn next_event(&mut self, now: Instant) -> Result<Option<Event>> {
        if let Some(e) = &self.error {
            return Err(e.replay());
        }
        let decoded = match self.decoder.decode(&mut self.input) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => {
                self.arm_park(now);
                return Ok(None);
            }
            Err(violation) => return Err(self.fail(violation, now)),
        };
        Ok(Some(match decoded {
            Decoded::Message { kind, data } => Event::Message(kind, data),
            Decoded::Start { kind, .. } => Event::Start(kind),
            Decoded::Data(data) => Event::Data(data),
            Decoded::End => Event::End,
            Decoded::Ping(payload) => Event::Ping(payload),
            Decoded::Pong(payload) => {
                if let Some(keepalive) = &mut self.keepalive {
                    keepalive.pong_received();
                }
                Event::Pong(payload)
            }
            Decoded::Close(frame) => {
                self.close_received = true;
                self.error = Some(closed_by_peer(frame.as_ref()));
                // Our close (sent before, or the answer the driver queues
                // next) gets a bounded time to leave.
                self.arm(now + REPLY_TIMEOUT);
                Event::Close(frame)
            }
        }))
    }

    fn fail(&mut self, violation: ProtocolError, now: Instant) -> Error {
        let _ = self.queue_control(Origin::User, OpCode::Close, &failing_close(&violation));
        self.error = Some(Error::Protocol(violation));
        self.failed = true;
        self.arm(now + REPLY_TIMEOUT);
        Error::Protocol(match &self.error {
            Some(Error::Protocol(v)) => v.clone(),
            _ => unreachable!("set just above"),
        })
    }

    fn arm(&mut self, at: Instant) {
        self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
    }

    // ---- output ---------------------------------------------------------

    /// Sends a whole data message, or a control frame (at most 125 bytes).
    /// Compressed when compression was agreed and the message is long
    /// enough. After a close was sent every send fails with [`Error::CloseSent`].
    pub fn send_message(&mut self, opcode: OpCode, data: &[u8]) -> Result<()> {
        if opcode.is_control() {
            return self.send_control(opcode, data);
        }
        if self.streaming.is_some() {
            return Err(Error::InvalidRequest("a streamed message is still open".into()));
        }
        if let Some(e) = self.outbox.refusal() {
            return Err(e);
        }
        let key = self.mask_key();
        self.hand_controls();
        let (rsv, payload) = self.sender.message(data);
        let make = || BytesMut::with_capacity(payload.len() + 14);
        self.outbox.append(make, |buf| encode_frame(buf, opcode, true, rsv, key, payload));
        Ok(())
    }

    /// Sends a [`PreparedMessage`]: its payload compressed once per
    /// compression variant and shared by every connection that sends it.
    pub fn send_prepared(&mut self, message: &PreparedMessage) -> Result<()> {
        let opcode = message.kind().opcode();
        if opcode.is_control() {
            return self.send_control(opcode, message.data());
        }
        let Some((window_bits, level)) = self.sender.prepared_variant(message.data().len()) else {
            return self.send_message(opcode, message.data());
        };
        if let Some(e) = self.outbox.refusal() {
            return Err(e);
        }
        let payload = message.compressed(window_bits, level);
        let key = self.mask_key();
        self.hand_controls();
        let make = || BytesMut::with_capacity(payload.len() + 14);
        self.outbox.append(make, |buf| encode_frame(buf, opcode, true, RSV1, key, &payload));
        self.sender.prepared_sent();
        Ok(())
    }

    /// Sends a control frame (close, ping or pong) of at most 125 bytes; a
    /// close frame starts the close handshake's wait (see [`Connection::close`]).
    pub fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<()> {
        if !is_valid_control(opcode, payload.len()) {
            return Err(Error::InvalidControlFrame);
        }
        self.queue_control(Origin::User, opcode, payload)
    }

    /// Starts the close handshake: queues a close frame and gives the peer
    /// the close timeout to answer, after which the transport is to be closed.
    pub fn close(&mut self, frame: &CloseFrame, now: Instant) -> Result<()> {
        self.queue_control(Origin::User, OpCode::Close, &frame.encode())?;
        if !self.close_received {
            self.arm(now + self.close_timeout);
        }
        Ok(())
    }

    /// Queues a handler's answer to a control frame: a pong replaces an
    /// earlier one that has not left yet (RFC 6455 §5.5.3), and an answer
    /// that can no longer be sent (after our close) is dropped.
    pub fn reply(&mut self, opcode: OpCode, payload: &[u8]) {
        if !is_valid_control(opcode, payload.len()) {
            return;
        }
        let origin = if opcode == OpCode::Pong { Origin::ReaderPong } else { Origin::User };
        let _ = self.queue_control(origin, opcode, payload);
    }

    fn queue_control(&mut self, origin: Origin, opcode: OpCode, payload: &[u8]) -> Result<()> {
        let frame = control_frame(opcode, payload, self.mask_key());
        self.outbox.queue_control(origin, opcode == OpCode::Close, frame)?;
        // Into the buffer at once while it has room: a control frame waits
        // (and a pong may be replaced by a later one) only while the peer
        // does not take what was sent before it.
        self.hand_controls();
        Ok(())
    }

    /// Moves waiting control frames into the buffer, between whole frames,
    /// while it holds less than the write buffer size.
    fn hand_controls(&mut self) {
        let room = self.write_buffer_size;
        self.outbox.hand_controls(room, || BytesMut::with_capacity(room));
    }

    fn mask_key(&mut self) -> Option<[u8; 4]> {
        matches!(self.role, Role::Client).then(|| (self.mask)())
    }

    /// Starts a message sent in pieces ([`Connection::stream`], then
    /// [`Connection::finish_message`]); a fragment leaves each time the
    /// write buffer size is reached.
    pub fn begin_message(&mut self, kind: MessageType) -> Result<()> {
        if kind.is_control() {
            return Err(Error::InvalidControlFrame);
        }
        if let Some(e) = self.outbox.refusal() {
            return Err(e);
        }
        if self.streaming.is_none() {
            self.streaming = Some((self.sender.begin(kind), BytesMut::new()));
        }
        Ok(())
    }

    /// Adds `data` to the streamed message; returns how much was taken (all
    /// of it, in as many fragments as it fills).
    pub fn stream(&mut self, mut data: &[u8]) -> Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            let Some((fragments, buf)) = &mut self.streaming else { return Err(Error::WriterClosed) };
            if buf.len() >= self.write_buffer_size {
                self.fragment(false)?;
                continue;
            }
            let n = self.sender.stream(fragments, data, buf, self.write_buffer_size);
            data = &data[n..];
        }
        Ok(total)
    }

    /// Sends what the streamed message holds as its final fragment.
    pub fn finish_message(&mut self) -> Result<()> {
        let Some((fragments, buf)) = &mut self.streaming else { return Err(Error::WriterClosed) };
        self.sender.end_stream(fragments, buf);
        let result = self.fragment(true);
        self.streaming = None;
        result
    }

    fn fragment(&mut self, fin: bool) -> Result<()> {
        let key = self.mask_key();
        let Some((fragments, buf)) = &mut self.streaming else { return Err(Error::WriterClosed) };
        if let Some(e) = self.outbox.refusal() {
            return Err(e);
        }
        let (opcode, rsv) = fragments.next();
        let room = self.write_buffer_size;
        self.outbox.hand_controls(room, || BytesMut::with_capacity(room));
        let make = || BytesMut::with_capacity(buf.len() + 14);
        self.outbox.append(make, |out| encode_frame(out, opcode, fin, rsv, key, buf));
        fragments.queued(fin);
        buf.clear();
        Ok(())
    }

    /// The bytes to write next (control frames join as room frees up); call
    /// [`Connection::sent`] with how many were written.
    pub fn data_to_send(&mut self) -> &[u8] {
        self.hand_controls();
        self.outbox.buf.as_deref().unwrap_or_default()
    }

    /// `n` bytes from [`Connection::data_to_send`] were written.
    pub fn sent(&mut self, n: usize) {
        self.outbox.consumed(n);
        if let Some(buf) = self.outbox.take_empty_buffer() {
            // Kept while small, so that steady sending does not allocate.
            if buf.capacity() <= 4 * self.write_buffer_size {
                self.outbox.buf = Some(buf);
            }
        }
    }

    /// Everything written so far was flushed by the transport.
    pub fn flushed(&mut self) {
        self.outbox.flushed_all();
    }

    /// Nothing waits to be written.
    pub fn is_drained(&self) -> bool {
        self.outbox.is_idle()
    }

    /// Whether the driver should close the transport now: the close
    /// handshake is complete and our close is out (or the connection failed
    /// and its close frame is out), or a deadline passed.
    pub fn should_close_transport(&self) -> bool {
        if self.transport_done {
            return true;
        }
        let finished = self.failed || (self.close_received && self.is_close_sent());
        finished && self.outbox.is_idle()
    }

    /// A close frame was sent (or queued).
    pub fn is_close_sent(&self) -> bool {
        matches!(self.outbox.refusal(), Some(Error::CloseSent))
    }

    /// The peer's close frame arrived.
    pub fn is_close_received(&self) -> bool {
        self.close_received
    }

    // ---- time -----------------------------------------------------------

    /// When [`Connection::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let keepalive = self.keepalive.as_ref().filter(|_| !self.transport_done && self.error.is_none());
        let keepalive = keepalive.map(Keepalive::poll_timeout);
        let at = match (self.deadline.filter(|_| !self.transport_done), keepalive) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let park = self.park.as_ref().and_then(|park| park.at).filter(|_| self.error.is_none());
        match (at, park) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Lets time pass: sends a keepalive ping when one is due, ends the
    /// connection when a pong is late (reads then fail with
    /// [`Error::KeepaliveTimeout`]), and gives up on the close handshake
    /// when its wait is over; parks the compression states of a connection
    /// idle for a period (see [`Config::compression_park_after`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(park) = &mut self.park {
            if park.at.is_some_and(|at| now >= at) {
                // What was used in the period is left for the next one.
                let held = self.decoder.park_if_idle() | self.sender.park_if_idle();
                park.at = held.then(|| now + park.after);
            }
        }
        if self.deadline.is_some_and(|at| now >= at) {
            self.deadline = None;
            self.transport_done = true;
            if self.error.is_none() {
                self.error = Some(Error::Io(std::io::ErrorKind::ConnectionAborted.into()));
            }
        }
        let Some(keepalive) = &mut self.keepalive else { return };
        if self.error.is_some() || self.transport_done {
            return;
        }
        match keepalive.on_timeout(now) {
            Due::Expired => {
                self.error = Some(Error::KeepaliveTimeout);
                self.transport_done = true;
            }
            Due::Ping(seq) => {
                let _ = self.queue_control(Origin::User, OpCode::Ping, &seq.to_be_bytes());
            }
            Due::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::CloseCode;

    fn config() -> Config {
        Config::default()
    }

    fn server(config: &Config, now: Instant) -> Connection {
        Connection::new(Role::Server, config, now, Box::new(|| unreachable!("a server does not mask")))
    }

    fn client(config: &Config, now: Instant) -> Connection {
        let mut n = 0u8;
        Connection::new(
            Role::Client,
            config,
            now,
            Box::new(move || {
                n = n.wrapping_add(1);
                [n, 2, 3, 4]
            }),
        )
    }

    /// Moves everything `from` has to send into `to`, as a transport would.
    fn transfer(from: &mut Connection, to: &mut Connection) {
        loop {
            let bytes = from.data_to_send().to_vec();
            if bytes.is_empty() {
                return;
            }
            from.sent(bytes.len());
            from.flushed();
            to.receive_data(&bytes);
        }
    }

    fn events(conn: &mut Connection, now: Instant) -> Vec<Result<Event>> {
        let mut out = Vec::new();
        loop {
            match conn.next_event(now) {
                Ok(Some(event)) => out.push(Ok(event)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    #[test]
    fn messages_cross_between_two_cores_in_both_directions() {
        let now = Instant::now();
        let (mut c, mut s) = (client(&config(), now), server(&config(), now));
        c.send_message(OpCode::Text, b"hello").unwrap();
        transfer(&mut c, &mut s);
        assert!(matches!(&events(&mut s, now)[..], [Ok(Event::Message(MessageType::Text, d))] if d == "hello"));
        s.send_message(OpCode::Binary, &[7; 300]).unwrap();
        transfer(&mut s, &mut c);
        assert!(
            matches!(&events(&mut c, now)[..], [Ok(Event::Message(MessageType::Binary, d))] if d[..] == [7u8; 300])
        );
    }

    #[test]
    fn compressed_messages_keep_their_context_across_messages() {
        let now = Instant::now();
        let mut config = config();
        config.deflate = Some(crate::proto::extensions::DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        });
        let (mut c, mut s) = (client(&config, now), server(&config, now));
        for _ in 0..3 {
            c.send_message(OpCode::Text, b"the same words again and again").unwrap();
        }
        let wire = c.data_to_send().to_vec();
        assert_eq!(wire[0] & 0x40, 0x40, "RSV1 marks a compressed message");
        transfer(&mut c, &mut s);
        let got = events(&mut s, now);
        assert_eq!(got.len(), 9, "{got:?}");
        let mut text = Vec::new();
        for event in got {
            if let Ok(Event::Data(data)) = event {
                text.extend_from_slice(&data);
            }
        }
        assert_eq!(text, b"the same words again and again".repeat(3));
    }

    #[test]
    fn a_violation_fails_the_connection_with_its_code_and_then_the_transport_closes() {
        let now = Instant::now();
        let mut s = server(&config(), now);
        // An unmasked frame from a client: RFC 6455 §5.1, 1002.
        s.receive_data(&[0x81, 0x02, b'h', b'i']);
        let err = s.next_event(now).unwrap_err();
        assert!(matches!(err, Error::Protocol(ProtocolError::UnmaskedFrame)), "{err:?}");
        assert!(matches!(s.next_event(now), Err(Error::Protocol(_))), "the failure is permanent");
        assert!(!s.should_close_transport(), "the close frame has not left yet");
        let wire = s.data_to_send().to_vec();
        let reason = b"unmasked frame from client";
        assert_eq!(wire[..4], [0x88, 2 + reason.len() as u8, 0x03, 0xea], "close 1002");
        assert_eq!(&wire[4..], reason, "with a reason naming the violation");
        s.sent(wire.len());
        s.flushed();
        assert!(s.should_close_transport());
    }

    #[test]
    fn a_failing_connection_closes_its_transport_after_the_reply_timeout_if_its_close_cannot_leave() {
        let now = Instant::now();
        let mut s = server(&config(), now);
        s.receive_data(&[0x81, 0x02, b'h', b'i']);
        let _ = s.next_event(now);
        assert_eq!(s.poll_timeout(), Some(now + REPLY_TIMEOUT));
        s.handle_timeout(now + REPLY_TIMEOUT);
        assert!(s.should_close_transport());
    }

    #[test]
    fn the_close_handshake_started_by_the_peer() {
        let now = Instant::now();
        let (mut c, mut s) = (client(&config(), now), server(&config(), now));
        c.close(&CloseFrame::new(CloseCode::NORMAL, "bye"), now).unwrap();
        assert!(matches!(c.send_message(OpCode::Text, b"late"), Err(Error::CloseSent)));
        transfer(&mut c, &mut s);
        let got = events(&mut s, now);
        assert!(matches!(&got[0], Ok(Event::Close(Some(f))) if *f == CloseFrame::new(CloseCode::NORMAL, "bye")));
        assert!(matches!(&got[1], Err(Error::Closed(e)) if e.code == CloseCode::NORMAL));
        // The default close handler's answer: the same code.
        s.reply(OpCode::Close, &CloseFrame::new(CloseCode::NORMAL, "").encode());
        assert!(!s.should_close_transport(), "the answer is still to leave");
        transfer(&mut s, &mut c);
        assert!(s.should_close_transport(), "answered: the server closes the transport");
        let got = events(&mut c, now);
        assert!(matches!(&got[0], Ok(Event::Close(Some(f))) if f.code == CloseCode::NORMAL));
        assert!(c.should_close_transport());
    }

    #[test]
    fn a_close_without_a_code_is_reported_as_1005() {
        let now = Instant::now();
        let mut c = client(&config(), now);
        c.receive_data(&[0x88, 0x00]);
        let got = events(&mut c, now);
        assert!(matches!(&got[0], Ok(Event::Close(None))));
        assert!(matches!(&got[1], Err(Error::Closed(e)) if e.code == CloseCode::NO_STATUS_RECEIVED));
    }

    #[test]
    fn an_unanswered_close_gives_up_after_the_close_timeout() {
        let now = Instant::now();
        let mut config = config();
        config.close_timeout = Duration::from_secs(3);
        let mut s = server(&config, now);
        s.close(&CloseFrame::new(CloseCode::GOING_AWAY, ""), now).unwrap();
        let n = s.data_to_send().len();
        s.sent(n);
        s.flushed();
        assert!(!s.should_close_transport());
        assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(3)));
        s.handle_timeout(now + Duration::from_secs(2));
        assert!(!s.should_close_transport());
        s.handle_timeout(now + Duration::from_secs(3));
        assert!(s.should_close_transport());
        assert!(s.next_event(now).is_err(), "reads end with the handshake");
    }

    #[test]
    fn keepalive_pings_on_time_and_ends_a_connection_whose_pong_is_late() {
        let start = Instant::now();
        let mut config = config();
        config.ping_interval = Some(Duration::from_secs(10));
        config.pong_timeout = Duration::from_secs(2);
        let (mut c, mut s) = (client(&Config::default(), start), server(&config, start));
        assert_eq!(s.poll_timeout(), Some(start + Duration::from_secs(10)));
        let t1 = start + Duration::from_secs(10);
        s.handle_timeout(t1);
        assert_eq!(s.data_to_send(), [0x89, 8, 0, 0, 0, 0, 0, 0, 0, 1], "ping 1");
        assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(2)), "the pong deadline");
        transfer(&mut s, &mut c);
        let Ok(Event::Ping(payload)) = c.next_event(t1).unwrap().ok_or(()) else { panic!("no ping") };
        c.reply(OpCode::Pong, &payload);
        transfer(&mut c, &mut s);
        assert!(matches!(s.next_event(t1), Ok(Some(Event::Pong(_)))));
        assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(10)), "answered: the next ping");
        let t2 = t1 + Duration::from_secs(10);
        s.handle_timeout(t2);
        s.handle_timeout(t2 + Duration::from_secs(2));
        assert!(s.should_close_transport());
        assert!(matches!(s.next_event(t2), Err(Error::KeepaliveTimeout)));
    }

    #[test]
    fn the_readers_pongs_coalesce_while_the_transport_does_not_take_them() {
        let now = Instant::now();
        let mut s = server(&config(), now);
        s.send_message(OpCode::Binary, &vec![0; 5000]).unwrap();
        for payload in [b"1", b"2", b"3"] {
            s.reply(OpCode::Pong, payload);
        }
        let len = s.data_to_send().len();
        s.sent(len);
        let wire = s.data_to_send().to_vec();
        assert_eq!(wire, [0x8a, 1, b'3'], "only the latest pong is owed");
    }

    #[test]
    fn a_streamed_message_leaves_in_fragments_of_the_write_buffer_size() {
        let now = Instant::now();
        let mut config = config();
        config.write_buffer_size = 4;
        let (mut s, mut c) = (server(&config, now), client(&Config::default(), now));
        s.begin_message(MessageType::Text).unwrap();
        assert_eq!(s.stream(b"hello world").unwrap(), 11);
        s.send_control(OpCode::Ping, b"between").unwrap();
        s.finish_message().unwrap();
        transfer(&mut s, &mut c);
        let got = events(&mut c, now);
        let mut text = Vec::new();
        let mut pings = 0;
        for event in got {
            match event.unwrap() {
                Event::Data(d) => text.extend_from_slice(&d),
                Event::Ping(_) => pings += 1,
                _ => {}
            }
        }
        assert_eq!((text.as_slice(), pings), (&b"hello world"[..], 1));
        assert!(matches!(s.send_control(OpCode::Ping, &[0; 126]), Err(Error::InvalidControlFrame)));
    }
}
