//! The send side's message rules: which data messages are compressed, how
//! their frames are marked, how a streamed message is cut into fragments,
//! and the limits on control frames. What this decides is handed to the
//! [`Outbox`](super::outbox::Outbox) as whole frames; this module does no I/O.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;

use super::decoder::MAX_CONTROL_PAYLOAD;
use super::deflate::Deflater;
use super::extensions::DeflateParams;
use super::frame::RSV1;
use super::{MessageType, OpCode, Role};
use crate::CompressionLevel;

/// Whether a control frame may be sent: RFC 6455 §5.5, a control frame
/// carries at most 125 bytes.
pub(crate) fn is_valid_control(opcode: OpCode, len: usize) -> bool {
    opcode.is_control() && len as u64 <= MAX_CONTROL_PAYLOAD
}

/// The compression choices of one connection's sending side.
#[derive(Debug)]
pub(crate) struct Sender {
    /// Present when permessage-deflate was agreed (behind a lock that only
    /// an idle connection's reader ever contends for, to park it: see
    /// [`Sender::parker`]).
    deflater: Option<Arc<Mutex<Deflater>>>,
    /// The compressor can compress (its window is not 8 bits).
    can_compress: bool,
    /// The compressor keeps its context between messages.
    takeover: bool,
    compress: bool,
    threshold: usize,
    /// Reused for compressed payloads.
    scratch: BytesMut,
}

#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
impl Sender {
    /// The sending side of `role` under the agreed `deflate` parameters.
    pub(crate) fn new(role: Role, deflate: Option<DeflateParams>, level: CompressionLevel, threshold: usize) -> Self {
        let deflater = deflate.map(|params| {
            // Our side of the agreement: the window we may use, and whether
            // the peer lets us keep our context between messages.
            let (bits, resets) = match role {
                Role::Server => (params.server_max_window_bits, params.server_no_context_takeover),
                Role::Client => (params.client_max_window_bits, params.client_no_context_takeover),
            };
            Arc::new(Mutex::new(Deflater::new(level, bits, resets)))
        });
        let (can_compress, takeover) = match deflater.as_deref().map(lock_shared) {
            Some(d) => (d.can_compress(), !d.no_context_takeover()),
            None => (false, false),
        };
        Sender { deflater, can_compress, takeover, compress: true, threshold, scratch: BytesMut::new() }
    }

    /// Whether permessage-deflate was agreed.
    pub(crate) fn compression_negotiated(&self) -> bool {
        self.deflater.is_some()
    }

    pub(crate) fn set_compression(&mut self, enable: bool) {
        self.compress = enable;
    }

    pub(crate) fn set_level(&mut self, level: CompressionLevel) {
        if let Some(mut deflater) = lock(&self.deflater) {
            deflater.set_level(level);
        }
    }

    /// The compressor, shared, when it keeps its context between messages:
    /// whoever notices the connection idle may park it
    /// ([`Deflater::park_if_idle`]; try the lock, never wait on it).
    pub(crate) fn parker(&self) -> Option<Arc<Mutex<Deflater>>> {
        self.deflater.as_ref().filter(|_| self.can_compress && self.takeover).cloned()
    }

    pub(crate) fn set_threshold(&mut self, bytes: usize) {
        self.threshold = bytes;
    }

    /// Parks the compressor if it keeps its context and was not used since
    /// the last call or [`Sender::start_idle`] (see
    /// [`Deflater::park_if_idle`]); returns whether it still holds a state.
    pub(crate) fn park_if_idle(&self) -> bool {
        match lock(&self.deflater).filter(|_| self.takeover) {
            Some(mut deflater) => {
                deflater.park_if_idle();
                deflater.holds_state()
            }
            None => false,
        }
    }

    /// Starts an idle period for the compressor.
    pub(crate) fn start_idle(&self) {
        if let Some(mut deflater) = lock(&self.deflater) {
            deflater.start_idle();
        }
    }

    /// Whether the compressor keeps its context and holds a state now.
    pub(crate) fn holds_state(&self) -> bool {
        self.takeover && lock(&self.deflater).is_some_and(|d| d.holds_state())
    }

    /// The compressor for a data message of `len` bytes, if it is to be
    /// compressed (a window of 8 bits cannot be compressed with).
    fn deflater_for(&mut self, len: usize) -> Option<MutexGuard<'_, Deflater>> {
        let wanted = self.compress && len >= self.threshold;
        lock(&self.deflater).filter(|_| wanted && self.can_compress)
    }

    /// Whether a data message of `len` bytes goes out compressed.
    pub(crate) fn compresses(&self, len: usize) -> bool {
        self.compress && len >= self.threshold && self.can_compress
    }

    /// The RSV bits and payload of a whole data message's one frame:
    /// compressed (RSV1, RFC 7692 §6) or as given. Call it only once the
    /// frame is sure to be queued: the compressor's context moves on.
    pub(crate) fn message<'a>(&'a mut self, data: &'a [u8]) -> (u8, &'a [u8]) {
        if !self.compresses(data.len()) {
            return (0, data);
        }
        let Some(mut deflater) = lock(&self.deflater) else { return (0, data) };
        self.scratch.clear();
        deflater.compress_message(data, &mut self.scratch);
        (RSV1, &self.scratch)
    }

    /// A compressed message could not be queued after all: the compressor
    /// saw what the peer never will, so its context starts afresh.
    pub(crate) fn message_lost(&mut self) {
        if let Some(mut deflater) = lock(&self.deflater) {
            deflater.reset();
        }
    }

    /// The compression variant (window bits, level) a prepared message of
    /// `len` bytes is to be sent with, if compressed.
    pub(crate) fn prepared_variant(&mut self, len: usize) -> Option<(u8, CompressionLevel)> {
        self.deflater_for(len).map(|d| (d.window_bits(), d.level()))
    }

    /// A payload compressed elsewhere (a prepared message) was queued: the
    /// peer's window now holds bytes our compressor never saw, so a context
    /// kept between messages starts afresh and later messages refer only to
    /// what follows.
    pub(crate) fn prepared_sent(&mut self) {
        if let Some(mut deflater) = lock(&self.deflater) {
            if self.takeover {
                deflater.reset();
            }
        }
    }

    /// Starts a streamed message. Streamed messages are compressed whatever
    /// their length: it is not known yet.
    pub(crate) fn begin(&mut self, kind: MessageType) -> Fragments {
        let compressed = self.deflater_for(usize::MAX).is_some();
        Fragments { opcode: kind.opcode(), compressed, flushed: false, finished: false }
    }

    /// Adds up to `room` bytes of `data` to a streamed message's next
    /// fragment in `buf`, compressed when the message is; returns how many
    /// bytes of `data` were taken.
    pub(crate) fn stream(&mut self, fragments: &Fragments, data: &[u8], buf: &mut BytesMut, room: usize) -> usize {
        match lock(&self.deflater).filter(|_| fragments.compressed) {
            Some(mut deflater) => {
                let n = data.len().min(room.max(1));
                deflater.compress(&data[..n], buf, false);
                n
            }
            None => {
                let n = data.len().min(room.saturating_sub(buf.len()));
                buf.extend_from_slice(&data[..n]);
                n
            }
        }
    }

    /// Completes a compressed streamed message's data in `buf` (once).
    pub(crate) fn end_stream(&mut self, fragments: &mut Fragments, buf: &mut BytesMut) {
        if fragments.compressed && !fragments.flushed {
            if let Some(mut deflater) = lock(&self.deflater) {
                deflater.compress(&[], buf, true);
            }
            fragments.flushed = true;
        }
    }
}

fn lock_shared(deflater: &Mutex<Deflater>) -> MutexGuard<'_, Deflater> {
    // Nothing panics while holding it; the state is still the best there is.
    deflater.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock(deflater: &Option<Arc<Mutex<Deflater>>>) -> Option<MutexGuard<'_, Deflater>> {
    deflater.as_deref().map(lock_shared)
}

/// Where a streamed message stands: which opcode its next frame carries,
/// whether it is compressed, and whether its final frame was queued.
#[derive(Debug)]
pub(crate) struct Fragments {
    opcode: OpCode,
    compressed: bool,
    flushed: bool,
    finished: bool,
}

#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
impl Fragments {
    /// The opcode and RSV bits of the next fragment: the message's own
    /// opcode first, continuation after; RSV1 marks the first frame of a
    /// compressed message only (RFC 7692 §6).
    pub(crate) fn next(&self) -> (OpCode, u8) {
        let rsv = if self.compressed && self.opcode != OpCode::Continuation { RSV1 } else { 0 };
        (self.opcode, rsv)
    }

    /// The next fragment was queued.
    pub(crate) fn queued(&mut self, fin: bool) {
        self.opcode = OpCode::Continuation;
        self.finished |= fin;
    }

    /// The final fragment is queued: the message is whole.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::deflate::Inflater;

    fn params() -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }

    #[test]
    fn control_frames_are_limited_to_125_bytes() {
        assert!(is_valid_control(OpCode::Ping, 125));
        assert!(!is_valid_control(OpCode::Close, 126));
        assert!(!is_valid_control(OpCode::Text, 1), "not a control frame");
    }

    #[test]
    fn messages_below_the_threshold_or_without_agreement_go_as_they_are() {
        let mut plain = Sender::new(Role::Server, None, CompressionLevel::new(1), 0);
        assert_eq!(plain.message(b"hello"), (0, &b"hello"[..]));
        let mut sender = Sender::new(Role::Server, Some(params()), CompressionLevel::new(1), 10);
        assert!(!sender.compresses(9) && sender.compresses(10));
        assert_eq!(sender.message(b"short"), (0, &b"short"[..]));
        sender.set_compression(false);
        assert!(!sender.compresses(1000));
    }

    #[test]
    fn compressed_messages_carry_rsv1_and_inflate_back() {
        let mut sender = Sender::new(Role::Client, Some(params()), CompressionLevel::new(1), 0);
        let mut inflater = Inflater::new(false);
        for text in ["hello hello hello", "hello again, hello"] {
            let (rsv, payload) = sender.message(text.as_bytes());
            assert_eq!(rsv, RSV1);
            let mut out = BytesMut::new();
            inflater.inflate(payload, &mut out, usize::MAX).unwrap();
            inflater.finish(&mut out, usize::MAX).unwrap();
            assert_eq!(&out[..], text.as_bytes());
        }
    }

    #[test]
    fn a_streamed_message_marks_only_its_first_frame() {
        let mut sender = Sender::new(Role::Server, Some(params()), CompressionLevel::new(1), 1000);
        let mut fragments = sender.begin(MessageType::Text);
        assert_eq!(fragments.next(), (OpCode::Text, RSV1), "streamed messages are compressed whatever their size");
        fragments.queued(false);
        assert_eq!(fragments.next(), (OpCode::Continuation, 0));
        assert!(!fragments.is_finished());
        fragments.queued(true);
        assert!(fragments.is_finished());
        let mut plain = Sender::new(Role::Server, None, CompressionLevel::new(1), 0);
        let mut buf = BytesMut::new();
        let plain_fragments = plain.begin(MessageType::Binary);
        assert_eq!(plain.stream(&plain_fragments, b"abcdef", &mut buf, 4), 4);
        assert_eq!(&buf[..], b"abcd");
    }
}
