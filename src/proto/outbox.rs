//! The write side's queue: whole frames, in the order they go out.
//!
//! Every frame a connection sends is encoded whole into one buffer before
//! any of it is written, and the stream takes bytes only from the front of
//! that buffer. Whoever writes — a writer, the reader before it waits, a
//! handle, the keepalive task — writes the same bytes in the same order, so
//! frames never interleave, and a write whose future is dropped half way
//! leaves the rest of its frame queued for the next one to finish.
//!
//! Control frames wait in a small queue of their own until the buffer has
//! room, which lets a late control frame be withdrawn (its deadline passed
//! behind a large message) and lets the reader's pongs be coalesced while the
//! peer does not read (RFC 6455 §5.5.3 allows answering the latest ping
//! only), so the queue stays bounded whatever the peer sends.
//!
//! Positions are counted in bytes since the start of the connection: a frame
//! is out when the stream has taken, and flushed, everything up to its end.
//! This module does no I/O: a driver moves the bytes.

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};

use crate::error::Error;
use crate::proto::encoder::encode_frame;
use crate::proto::OpCode;

/// A control frame waiting for room in the buffer, encoded.
struct Control {
    id: u64,
    frame: Vec<u8>,
}

/// The control frames of an [`Outbox`].
#[derive(Default)]
struct Controls {
    /// Waiting for room in the buffer, in order.
    waiting: VecDeque<Control>,
    /// In the buffer, by id, with their end position.
    handed: VecDeque<(u64, u64)>,
    next_id: u64,
    /// The reader's pong that still waits in `waiting`.
    reader_pong: Option<u64>,
}

impl Controls {
    fn clear(&mut self) {
        self.waiting.clear();
        self.handed.clear();
        self.reader_pong = None;
    }
}

/// Who queues a control frame, which decides what happens to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The application (a handle, the keepalive task): refused after a close.
    User,
    /// The reader answering a ping: replaces its earlier pong while that one
    /// still waits, and is dropped silently after a close.
    ReaderPong,
}

/// How a queued control frame can be waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ControlId(u64);

/// The queue. See the module documentation.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Encoded frames the stream has not taken; the first may be taken in part.
    pub(crate) buf: Option<BytesMut>,
    queued: u64,
    written: u64,
    /// `written` when the stream last finished a flush.
    flushed: u64,
    /// Made at the first control frame: most connections send few, and
    /// every idle one holds an `Outbox`.
    controls: Option<Box<Controls>>,
    close_queued: bool,
    /// The first write failure; every later write returns it again.
    error: Option<Error>,
    shut_down: bool,
    /// Moves whenever something that waiters look at changes.
    progress: u64,
}

// Parts of the queue only the async driver uses.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
impl Outbox {
    /// The error a new frame would fail with, if any: after a close
    /// nothing more may be sent.
    #[inline]
    pub(crate) fn refusal(&self) -> Option<Error> {
        if self.is_open() {
            return None;
        }
        self.refusal_error()
    }

    /// The write side failed or was shut down.
    #[inline]
    pub(crate) fn has_failed(&self) -> bool {
        self.error.is_some() || self.shut_down
    }

    /// Nothing stops a new frame: no failure, no close, no shutdown.
    #[inline]
    pub(crate) fn is_open(&self) -> bool {
        self.error.is_none() && !self.close_queued && !self.shut_down
    }

    fn refusal_error(&self) -> Option<Error> {
        if let Some(e) = &self.error {
            return Some(e.replay());
        }
        if self.close_queued {
            return Some(Error::CloseSent);
        }
        if self.shut_down {
            return Some(Error::Io(std::io::ErrorKind::NotConnected.into()));
        }
        None
    }

    /// The permanent failure, if any (not counting a close).
    pub(crate) fn failure(&self) -> Option<Error> {
        match &self.error {
            Some(e) => Some(e.replay()),
            None if self.shut_down && self.close_queued => Some(Error::CloseSent),
            None if self.shut_down => Some(Error::Io(std::io::ErrorKind::NotConnected.into())),
            None => None,
        }
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    /// Bytes waiting in the buffer.
    #[inline]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.as_ref().map_or(0, BytesMut::len)
    }

    /// Nothing waits to be written or flushed.
    pub(crate) fn is_idle(&self) -> bool {
        self.buffered() == 0 && !self.controls_wait() && self.flushed == self.written
    }

    /// The end position of everything queued so far.
    pub(crate) fn queued(&self) -> u64 {
        self.queued
    }

    /// Everything up to `end` has been written and flushed.
    pub(crate) fn is_flushed(&self, end: u64) -> bool {
        self.flushed >= end
    }

    pub(crate) fn progress(&self) -> u64 {
        self.progress
    }

    /// The write side failed for good: drops what waits.
    pub(crate) fn fail(&mut self, error: Error) {
        if self.error.is_none() {
            self.error = Some(error);
        }
        self.discard();
    }

    /// The stream is being shut down: nothing more is written.
    pub(crate) fn shut_down(&mut self) {
        self.shut_down = true;
        self.discard();
    }

    fn discard(&mut self) {
        if let Some(buf) = &mut self.buf {
            buf.clear();
        }
        if let Some(controls) = &mut self.controls {
            controls.clear();
        }
        self.progress += 1;
    }

    /// Appends to the buffer with `encode`, which returns how many bytes it
    /// added; `make` supplies a buffer when there is none. Returns the end
    /// position of what was added.
    pub(crate) fn append(&mut self, make: impl FnOnce() -> BytesMut, encode: impl FnOnce(&mut BytesMut)) -> u64 {
        let buf = self.buf.get_or_insert_with(make);
        let before = buf.len();
        encode(buf);
        self.queued += (buf.len() - before) as u64;
        self.queued
    }

    /// Counts bytes that went to the stream straight from the caller's
    /// payload, without passing through the buffer (they were queued and
    /// written at once).
    pub(crate) fn wrote_directly(&mut self, n: usize) {
        self.queued += n as u64;
        self.written += n as u64;
        self.progress += 1;
    }

    /// The stream took `n` bytes from the front of the buffer.
    pub(crate) fn consumed(&mut self, n: usize) {
        if let Some(buf) = &mut self.buf {
            if n >= buf.len() {
                buf.clear();
            } else {
                buf.advance(n);
            }
        }
        self.written += n as u64;
        self.progress += 1;
    }

    /// Written bytes need a stream flush.
    pub(crate) fn needs_flush(&self) -> bool {
        self.flushed < self.written
    }

    /// The stream finished a flush of everything written so far.
    pub(crate) fn flushed_all(&mut self) {
        self.flushed = self.written;
        if let Some(controls) = &mut self.controls {
            while controls.handed.front().is_some_and(|&(_, end)| end <= self.flushed) {
                controls.handed.pop_front();
            }
        }
        self.progress += 1;
    }

    /// Queues a control frame (`frame` is encoded already). `Ok(None)`: a
    /// reader's pong after a close, dropped; or one that replaced the
    /// earlier pong, which is then waited for under its id.
    pub(crate) fn queue_control(&mut self, origin: Origin, close: bool, frame: Vec<u8>) -> Result<ControlId, Error> {
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let controls = self.controls.get_or_insert_with(Box::default);
        if origin == Origin::ReaderPong {
            if let Some(id) = controls.reader_pong {
                if let Some(waiting) = controls.waiting.iter_mut().find(|c| c.id == id) {
                    waiting.frame = frame;
                    return Ok(ControlId(id));
                }
            }
        }
        let id = controls.next_id;
        controls.next_id += 1;
        controls.waiting.push_back(Control { id, frame });
        if origin == Origin::ReaderPong {
            controls.reader_pong = Some(id);
        }
        if close {
            self.close_queued = true;
        }
        Ok(ControlId(id))
    }

    /// Moves waiting control frames into the buffer while it holds less than
    /// `room` bytes. Called only between whole frames.
    #[inline]
    pub(crate) fn hand_controls(&mut self, room: usize, make: impl Fn() -> BytesMut) {
        if self.controls_wait() {
            self.hand_waiting_controls(room, make);
        }
    }

    /// Control frames wait for room.
    #[inline]
    fn controls_wait(&self) -> bool {
        self.controls.as_ref().is_some_and(|controls| !controls.waiting.is_empty())
    }

    fn hand_waiting_controls(&mut self, room: usize, make: impl Fn() -> BytesMut) {
        let Some(mut controls) = self.controls.take() else { return };
        while self.buffered() < room {
            let Some(control) = controls.waiting.pop_front() else { break };
            if controls.reader_pong == Some(control.id) {
                controls.reader_pong = None;
            }
            let end = self.append(&make, |buf| buf.extend_from_slice(&control.frame));
            controls.handed.push_back((control.id, end));
        }
        self.controls = Some(controls);
    }

    /// The control frame `id` has been written and flushed.
    pub(crate) fn is_control_out(&self, id: ControlId) -> bool {
        let Some(controls) = &self.controls else { return true };
        let waiting = controls.waiting.front().is_some_and(|c| c.id <= id.0);
        let in_buffer = controls.handed.front().is_some_and(|&(first, _)| first <= id.0);
        !waiting && !in_buffer
    }

    /// Takes back a control frame that is still waiting for room; false when
    /// it is in the buffer already (or out).
    pub(crate) fn withdraw(&mut self, id: ControlId) -> bool {
        let Some(controls) = &mut self.controls else { return false };
        let Some(at) = controls.waiting.iter().position(|c| c.id == id.0) else { return false };
        controls.waiting.remove(at);
        if controls.reader_pong == Some(id.0) {
            controls.reader_pong = None;
        }
        true
    }

    /// Takes the buffer when it is empty, so that an idle connection holds none.
    pub(crate) fn take_empty_buffer(&mut self) -> Option<BytesMut> {
        if self.buf.as_ref().is_some_and(BytesMut::is_empty) {
            self.buf.take()
        } else {
            None
        }
    }
}

/// Encodes a control frame for [`Outbox::queue_control`].
pub(crate) fn control_frame(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut frame = BytesMut::with_capacity(payload.len() + 14);
    encode_frame(&mut frame, opcode, true, 0, mask, payload);
    frame.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_buf() -> BytesMut {
        BytesMut::with_capacity(64)
    }

    fn ping(n: u8) -> Vec<u8> {
        control_frame(OpCode::Ping, &[n], None)
    }

    /// Takes what the "stream" would write: the whole buffer, flushed.
    fn write_all(outbox: &mut Outbox) -> Vec<u8> {
        let out = outbox.buf.as_ref().map(|b| b.to_vec()).unwrap_or_default();
        outbox.consumed(out.len());
        outbox.flushed_all();
        out
    }

    #[test]
    fn frames_leave_in_the_order_they_were_queued() {
        let mut outbox = Outbox::default();
        let first = outbox.append(new_buf, |b| encode_frame(b, OpCode::Text, true, 0, None, b"one"));
        let id = outbox.queue_control(Origin::User, false, ping(1)).unwrap();
        outbox.hand_controls(4096, new_buf);
        let second = outbox.append(new_buf, |b| encode_frame(b, OpCode::Text, true, 0, None, b"two"));
        assert!(!outbox.is_flushed(first) && !outbox.is_control_out(id));
        let wire = write_all(&mut outbox);
        assert_eq!(wire, [&[0x81, 3][..], b"one", &[0x89, 1, 1], &[0x81, 3], b"two"].concat());
        assert!(outbox.is_flushed(second) && outbox.is_control_out(id) && outbox.is_idle());
    }

    #[test]
    fn control_frames_wait_for_room_and_can_be_withdrawn_until_then() {
        let mut outbox = Outbox::default();
        outbox.append(new_buf, |b| b.extend_from_slice(&[0u8; 100]));
        let late = outbox.queue_control(Origin::User, false, ping(1)).unwrap();
        let kept = outbox.queue_control(Origin::User, false, ping(2)).unwrap();
        outbox.hand_controls(100, new_buf);
        assert_eq!(outbox.buffered(), 100, "no room: the control frames wait");
        assert!(outbox.withdraw(late));
        outbox.consumed(60);
        outbox.hand_controls(100, new_buf);
        assert!(!outbox.withdraw(kept), "in the buffer: too late to take back");
        assert_eq!(outbox.buffered(), 43);
        write_all(&mut outbox);
        assert!(outbox.is_control_out(kept));
    }

    #[test]
    fn the_readers_pongs_are_coalesced_while_they_wait() {
        let mut outbox = Outbox::default();
        outbox.append(new_buf, |b| b.extend_from_slice(&[0u8; 10]));
        let first = outbox.queue_control(Origin::ReaderPong, false, control_frame(OpCode::Pong, b"1", None)).unwrap();
        let second = outbox.queue_control(Origin::ReaderPong, false, control_frame(OpCode::Pong, b"2", None)).unwrap();
        assert_eq!(first, second, "the later pong takes the waiting one's place");
        outbox.hand_controls(4096, new_buf);
        let third = outbox.queue_control(Origin::ReaderPong, false, control_frame(OpCode::Pong, b"3", None)).unwrap();
        assert_ne!(second, third, "a pong in the buffer is not replaced");
        outbox.hand_controls(4096, new_buf);
        let wire = write_all(&mut outbox);
        assert_eq!(&wire[10..], [&[0x8a, 1][..], b"2", &[0x8a, 1], b"3"].concat());
    }

    #[test]
    fn nothing_is_queued_after_a_close_or_a_failure() {
        let mut outbox = Outbox::default();
        outbox.queue_control(Origin::User, true, control_frame(OpCode::Close, &[3, 232], None)).unwrap();
        assert!(matches!(outbox.queue_control(Origin::User, false, ping(1)), Err(Error::CloseSent)));
        assert!(matches!(outbox.refusal(), Some(Error::CloseSent)));
        let mut failed = Outbox::default();
        failed.append(new_buf, |b| b.extend_from_slice(b"partial"));
        failed.fail(Error::Timeout);
        assert_eq!(failed.buffered(), 0, "what waited is dropped");
        assert!(matches!(failed.refusal(), Some(Error::Timeout)));
        assert!(matches!(failed.failure(), Some(Error::Timeout)));
    }
}
