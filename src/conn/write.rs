//! The write half: whole messages ([`WriteHalf::write_message`]), streamed
//! messages ([`WriteHalf::next_writer`]) and control frames.
//!
//! Every send goes through the connection's queue (see `outbox.rs`): a
//! frame is queued whole, in one step, and then waited for. A send dropped
//! before its frame was queued has no effect; one dropped after leaves the
//! frame queued, to be finished by the next write, flush or read. Nothing
//! that changes what goes on the wire (compression included) happens before
//! the step that queues the frame.

use crate::config::Config;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;

use super::shared::{poll_timed, Frame, Mode, Queued, Shared, Stream, Timer};
use super::{Handle, PreparedMessage};
use crate::error::{Error, Result};
use crate::proto::frame::RSV1;
use crate::proto::outbox::{ControlId, Origin};
use crate::proto::sender::{is_valid_control, Fragments, Sender};
use crate::proto::{CloseFrame, MessageType, OpCode};

/// A streamed message that has been started and not finished.
pub(super) struct OpenMessage {
    /// Which frame comes next, and whether the last was queued.
    fragments: Fragments,
    /// The next fragment's payload.
    buf: BytesMut,
    /// The end position of a queued fragment that is not out yet.
    in_flight: Option<u64>,
    /// A fragment failed: the message cannot be completed.
    failed: Option<Error>,
    timer: Timer,
}

/// The sending half of a connection (see [`crate::Conn::split`]).
pub struct WriteHalf<S: Stream> {
    pub(crate) shared: Arc<Shared<S>>,
    pub(super) deadline: Option<Instant>,
    /// The message being streamed by a [`MessageWriter`] (boxed: rare, and
    /// the half is part of every connection's state).
    pub(super) open: Option<Box<OpenMessage>>,
    /// Which messages are compressed, and the compressor.
    pub(super) sender: Sender,
    /// What the `futures` sink keeps between calls.
    #[cfg(feature = "futures")]
    pub(super) sink: Option<Box<super::streams::SinkState>>,
}

/// A [`WriteHalf`] without its reference to the connection.
pub(super) struct Detached {
    deadline: Option<Instant>,
    open: Option<Box<OpenMessage>>,
    sender: Sender,
    #[cfg(feature = "futures")]
    sink: Option<Box<super::streams::SinkState>>,
}

impl<S: Stream> fmt::Debug for WriteHalf<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteHalf")
            .field("role", &self.shared.role)
            .field("deadline", &self.deadline)
            .field("message_open", &self.open.is_some())
            .finish()
    }
}

/// Waits for `f`, bounded by a write deadline: when it passes, the write
/// side fails for good with [`Error::Timeout`] (a frame may be under way).
async fn wait<S: Stream>(
    shared: &Shared<S>,
    timer: &mut Timer,
    mut f: impl FnMut(&mut Context<'_>) -> Poll<Result<()>>,
) -> Result<()> {
    poll_fn(|cx| poll_timed(shared, timer, cx, &mut f)).await
}

/// Waits until everything up to `end` is out: polled in place (no
/// allocation) without a deadline, boxed with its timer otherwise.
async fn flushed<S: Stream>(shared: &Shared<S>, deadline: Option<Instant>, end: u64) -> Result<()> {
    if deadline.is_none() {
        return poll_fn(|cx| shared.poll_flushed(cx, end)).await;
    }
    Box::pin(async {
        let mut timer = Timer::new(deadline);
        wait(shared, &mut timer, |cx| shared.poll_flushed(cx, end)).await
    })
    .await
}

/// Queues one final data frame, waiting for room first, and (unless it was
/// only fed) waits until it is out.
async fn deliver<S: Stream>(shared: &Shared<S>, deadline: Option<Instant>, frame: Frame<'_>, mode: Mode) -> Result<()> {
    let mut timer = Timer::new(deadline);
    loop {
        match shared.queue_frame(frame, mode, false)? {
            Queued::Done => return Ok(()),
            Queued::Waiting(end) => return wait(shared, &mut timer, |cx| shared.poll_flushed(cx, end)).await,
            Queued::NoRoom => {
                wait(shared, &mut timer, |cx| shared.poll_room(cx, mode, frame.payload.len())).await?;
            }
        }
    }
}

/// A control frame waited for; dropped before it went into the queue, it
/// is taken back (close frames excepted: a close is never taken back).
struct ControlWait<'a, S: Stream> {
    shared: &'a Shared<S>,
    id: ControlId,
    keep: bool,
}

impl<S: Stream> Drop for ControlWait<'_, S> {
    fn drop(&mut self) {
        if !self.keep {
            self.shared.withdraw(self.id);
        }
    }
}

impl<S: Stream> WriteHalf<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>, config: &Config) -> Self {
        let sender =
            Sender::new(shared.role, config.deflate, config.compression_level.clamped(), config.compression_threshold);
        WriteHalf {
            shared,
            deadline: None,
            open: None,
            sender,
            #[cfg(feature = "futures")]
            sink: None,
        }
    }

    /// Gives up this half's reference to the connection, keeping the rest
    /// to be put back with [`WriteHalf::rejoin`].
    pub(super) fn detach(self) -> (Arc<Shared<S>>, Detached) {
        let WriteHalf {
            shared,
            deadline,
            open,
            sender,
            #[cfg(feature = "futures")]
            sink,
        } = self;
        let rest = Detached {
            deadline,
            open,
            sender,
            #[cfg(feature = "futures")]
            sink,
        };
        (shared, rest)
    }

    /// The half [`WriteHalf::detach`] took apart, on `shared` again.
    pub(super) fn rejoin(shared: Arc<Shared<S>>, rest: Detached) -> Self {
        let Detached {
            deadline,
            open,
            sender,
            #[cfg(feature = "futures")]
            sink,
        } = rest;
        WriteHalf {
            shared,
            deadline,
            open,
            sender,
            #[cfg(feature = "futures")]
            sink,
        }
    }

    /// Whether permessage-deflate was agreed for this connection.
    pub fn compression_negotiated(&self) -> bool {
        self.sender.compression_negotiated()
    }

    /// Turns compression of later data messages on or off (on by default;
    /// no effect when compression was not agreed).
    pub fn enable_write_compression(&mut self, enable: bool) {
        self.sender.set_compression(enable);
    }

    /// Sets the compression level for later messages, in gorilla's range:
    /// −2 (Huffman only), −1 (default), 0 (none) to 9 (best); see
    /// [`crate::CompressionLevel`]. A level outside it is refused with
    /// [`Error::InvalidRequest`] and changes nothing.
    pub fn set_compression_level(&mut self, level: impl Into<crate::CompressionLevel>) -> Result<()> {
        let level = level.into().check()?;
        self.sender.set_level(level);
        Ok(())
    }

    /// Data messages shorter than `bytes` are sent uncompressed.
    pub fn set_compression_threshold(&mut self, bytes: usize) {
        self.sender.set_threshold(bytes);
    }

    /// Sends a [`PreparedMessage`]: its frame payload is made once per
    /// compression variant and shared by every connection that sends it.
    ///
    /// Cancel safety: as [`WriteHalf::write_message`].
    pub async fn write_prepared(&mut self, message: &PreparedMessage) -> Result<()> {
        self.send_prepared(message, Mode::Now).await
    }

    /// Adds a [`PreparedMessage`] to the write buffer without sending it
    /// yet, as [`WriteHalf::feed_message`] does for a message: several fed
    /// back to back leave together with the next write or
    /// [`WriteHalf::flush`] (or when the buffer fills), in one system call.
    ///
    /// Cancel safety: as [`WriteHalf::write_message`].
    pub async fn feed_prepared(&mut self, message: &PreparedMessage) -> Result<()> {
        self.send_prepared(message, Mode::Feed).await
    }

    /// Sends (`Mode::Now`) or feeds a prepared message, as one frame.
    async fn send_prepared(&mut self, message: &PreparedMessage, mode: Mode) -> Result<()> {
        let kind = message.kind();
        if kind.is_control() {
            return self.write_message(kind, message.data()).await;
        }
        if self.open.is_some() {
            Box::pin(self.finish_open()).await?;
        }
        let len = message.data().len();
        let frame = Frame { opcode: kind.opcode(), fin: true, rsv: 0, payload: message.data() };
        let Some((window_bits, level)) = self.sender.prepared_variant(len) else {
            return deliver(&self.shared, self.deadline, frame, mode).await;
        };
        let mut timer = Timer::new(self.deadline);
        let shared = &*self.shared;
        wait(shared, &mut timer, |cx| shared.poll_room(cx, mode, len)).await?;
        let payload = message.compressed(window_bits, level);
        let queued = shared.queue_frame(Frame { rsv: RSV1, payload: &payload, ..frame }, mode, true);
        self.sender.prepared_sent();
        match queued? {
            Queued::Waiting(end) => wait(shared, &mut timer, |cx| shared.poll_flushed(cx, end)).await,
            Queued::Done | Queued::NoRoom => Ok(()),
        }
    }

    /// Sends `messages` (the fan-out's batch) back to back and waits until
    /// they are written: as [`WriteHalf::feed_prepared`] for each and a
    /// [`WriteHalf::flush`], but the data frames that fit in the write
    /// buffer go into it under one lock. `payloads` is scratch space for
    /// compressed payloads, kept by the caller between batches.
    pub(crate) async fn write_prepared_batch(
        &mut self,
        messages: &[Arc<PreparedMessage>],
        payloads: &mut Vec<(u8, Bytes)>,
    ) -> Result<()> {
        let mut rest = messages;
        while let Some((first, after)) = rest.split_first() {
            let fed = if self.open.is_none() { self.feed_prepared_now(rest, payloads)? } else { 0 };
            if fed == 0 {
                // A control message, a frame larger than the buffer's room,
                // or a streamed message to finish first: the usual way.
                self.feed_prepared(first).await?;
                rest = after;
            } else {
                rest = &rest[fed..];
            }
        }
        self.flush().await
    }

    /// Feeds the data messages at the start of `messages` that fit in the
    /// write buffer now, under one lock; returns how many.
    fn feed_prepared_now(
        &mut self,
        messages: &[Arc<PreparedMessage>],
        payloads: &mut Vec<(u8, Bytes)>,
    ) -> Result<usize> {
        let data = messages.iter().take_while(|message| !message.kind().is_control());
        let frame = |message: &PreparedMessage, rsv, payload| Frame {
            opcode: message.kind().opcode(),
            fin: true,
            rsv,
            payload,
        };
        if !self.sender.compresses(usize::MAX) {
            return self.shared.feed_frames(data.map(|message| frame(message, 0, message.data())));
        }
        // Compressed payloads are made (or found made) before the lock.
        payloads.clear();
        payloads.extend(data.map(|message| match self.sender.prepared_variant(message.data().len()) {
            Some((window_bits, level)) => (RSV1, message.compressed(window_bits, level)),
            None => (0, message.data().clone()),
        }));
        let frames = messages.iter().zip(payloads.iter());
        let fed = self.shared.feed_frames(frames.map(|(message, (rsv, payload))| frame(message, *rsv, payload)))?;
        if payloads[..fed].iter().any(|(rsv, _)| *rsv != 0) {
            // As `send_prepared`: the peer's window now holds bytes our own
            // compressor never saw.
            self.sender.prepared_sent();
        }
        payloads.clear();
        Ok(fed)
    }

    /// Sends a whole message as one frame and waits until it is written.
    /// Control types (close, ping, pong) are allowed and limited to 125
    /// bytes. After a close frame was sent, by any route, every write fails
    /// with [`Error::CloseSent`]. A write that fails, or whose deadline
    /// passes, fails every later write.
    ///
    /// Text is sent as given: the application must make it valid UTF-8.
    ///
    /// Cancel safety: dropped before its frame was queued (while earlier
    /// frames fill the write buffer), the message is not sent; dropped
    /// after, it is sent whole, by the next write, flush or read of this
    /// connection. Its frame is never cut short or mixed with another's.
    pub async fn write_message(&mut self, kind: impl Into<MessageType>, data: impl AsRef<[u8]>) -> Result<()> {
        let (kind, data) = (kind.into(), data.as_ref());
        if self.is_plain(kind, data) {
            let frame = Frame { opcode: kind.opcode(), fin: true, rsv: 0, payload: data };
            match self.shared.queue_frame(frame, Mode::Now, false)? {
                Queued::Done => return Ok(()),
                Queued::Waiting(end) => return flushed(&self.shared, self.deadline, end).await,
                Queued::NoRoom => {}
            }
        }
        Box::pin(self.send_message(kind, data, Mode::Now)).await
    }

    /// Adds a message to the write buffer without sending it yet, so that
    /// messages written back to back leave in one system call. Fed messages
    /// go out with the next [`WriteHalf::write_message`] or
    /// [`WriteHalf::flush`], when the buffer fills, or as soon as the read
    /// side of the connection is about to wait for input — so an echo loop of
    /// `read_message` and `feed_message` batches its replies and never
    /// leaves one behind while it waits.
    ///
    /// Cancel safety: as [`WriteHalf::write_message`].
    pub async fn feed_message(&mut self, kind: impl Into<MessageType>, data: impl AsRef<[u8]>) -> Result<()> {
        let (kind, data) = (kind.into(), data.as_ref());
        if self.is_plain(kind, data) && !kind.is_control() {
            loop {
                // Made afresh each time round, so that it is not part of the future.
                let frame = Frame { opcode: kind.opcode(), fin: true, rsv: 0, payload: data };
                match self.shared.queue_frame(frame, Mode::Feed, false)? {
                    Queued::Done => return Ok(()),
                    // The buffer filled up and is being written out (boxed:
                    // a slow path, kept out of every task's size).
                    Queued::Waiting(end) => return Box::pin(flushed(&self.shared, self.deadline, end)).await,
                    // Full: write it out (in place, without a deadline), then feed.
                    Queued::NoRoom if self.deadline.is_none() => {
                        let shared = &*self.shared;
                        poll_fn(|cx| shared.poll_room(cx, Mode::Feed, data.len())).await?;
                    }
                    Queued::NoRoom => break,
                }
            }
        }
        Box::pin(self.send_message(kind, data, Mode::Feed)).await
    }

    /// Whether a message goes out as it is, in one frame: no streamed
    /// message is open, it is not to be compressed, and it is a valid size.
    fn is_plain(&self, kind: MessageType, data: &[u8]) -> bool {
        self.open.is_none() && !kind.is_control() && !self.sender.compresses(data.len())
    }

    /// Sends every fed message now.
    ///
    /// Cancel safety: dropping it leaves the fed messages queued, to leave
    /// with the next write, flush or read.
    pub async fn flush(&mut self) -> Result<()> {
        let (shared, mut timer) = (&*self.shared, Timer::new(self.deadline));
        let end = shared.queued();
        wait(shared, &mut timer, |cx| shared.poll_flushed(cx, end)).await
    }

    /// Sends (`Mode::Now`) or feeds one whole message, as one frame.
    async fn send_message(&mut self, kind: MessageType, data: &[u8], mode: Mode) -> Result<()> {
        if self.open.is_some() {
            Box::pin(self.finish_open()).await?;
        }
        if kind.is_control() {
            return write_control(&self.shared, kind, data, self.deadline).await;
        }
        let frame = Frame { opcode: kind.opcode(), fin: true, rsv: 0, payload: data };
        if !self.sender.compresses(data.len()) {
            return deliver(&self.shared, self.deadline, frame, mode).await;
        }
        let shared = &*self.shared;
        let mut timer = Timer::new(self.deadline);
        // Wait for room before compressing: the compressor must see only
        // what is sure to be sent.
        wait(shared, &mut timer, |cx| shared.poll_room(cx, mode, data.len())).await?;
        let (rsv, payload) = self.sender.message(data);
        match shared.queue_frame(Frame { rsv, payload, ..frame }, mode, true) {
            Err(e) => {
                self.sender.message_lost();
                Err(e)
            }
            Ok(Queued::Waiting(end)) => wait(shared, &mut timer, |cx| shared.poll_flushed(cx, end)).await,
            Ok(Queued::Done | Queued::NoRoom) => Ok(()),
        }
    }

    /// Sends a text message; see [`WriteHalf::write_message`].
    pub async fn write_text(&mut self, text: impl AsRef<str>) -> Result<()> {
        self.write_message(MessageType::Text, text.as_ref()).await
    }

    /// Sends a binary message; see [`WriteHalf::write_message`].
    pub async fn write_binary(&mut self, data: impl AsRef<[u8]>) -> Result<()> {
        self.write_message(MessageType::Binary, data).await
    }

    /// Sends a control frame with its own `deadline`; see
    /// [`Handle::write_control`] (also for cancel safety).
    pub async fn write_control(
        &self,
        kind: MessageType,
        data: impl AsRef<[u8]>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        write_control(&self.shared, kind, data.as_ref(), deadline).await
    }

    /// Starts a message that is written piece by piece through the returned
    /// [`AsyncWrite`]: each time the write buffer fills, a fragment goes out.
    /// Finish it with [`MessageWriter::close`] (or `shutdown`). A writer
    /// dropped unfinished is completed by the next write on this half: the
    /// message then ends with what was written to it.
    ///
    /// Cancel safety: dropped while it waits for a message dropped
    /// unfinished before it, that message's last fragment is queued whole
    /// or not at all; no new message is started.
    pub async fn next_writer(&mut self, kind: MessageType) -> Result<MessageWriter<'_, S>> {
        if kind.is_control() {
            return Err(Error::InvalidControlFrame);
        }
        self.finish_open().await?;
        if let Some(e) = self.shared.refusal() {
            return Err(e);
        }
        let capacity = self.shared.settings.write_buffer_size.max(1);
        self.open = Some(Box::new(OpenMessage {
            fragments: self.sender.begin(kind),
            buf: BytesMut::with_capacity(capacity),
            in_flight: None,
            failed: None,
            timer: Timer::new(self.deadline),
        }));
        Ok(MessageWriter { half: self })
    }

    /// Sets the time after which a write fails with [`Error::Timeout`]; the
    /// failure is permanent for writes. `None` clears it.
    pub fn set_write_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// The write deadline in force.
    pub fn write_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Starts the close handshake: sends a close frame with `code` and
    /// `reason`, waits (up to the close timeout) for the reader to receive the
    /// peer's close, then shuts the stream down. The read half must be read
    /// for the peer's close to be seen.
    ///
    /// Cancel safety: as [`Handle::close`].
    pub async fn close(&mut self, frame: CloseFrame) -> Result<()> {
        let _ = Box::pin(self.finish_open()).await;
        self.handle().close(frame).await
    }

    /// A handle that can send control frames and close from any task.
    pub fn handle(&self) -> Handle<S> {
        Handle::new(self.shared.clone())
    }

    /// The subprotocol agreed in the handshake.
    pub fn subprotocol(&self) -> Option<&str> {
        self.shared.subprotocol.as_deref()
    }

    /// Completes a message whose writer was dropped unfinished.
    async fn finish_open(&mut self) -> Result<()> {
        if self.open.is_none() {
            return Ok(());
        }
        poll_fn(|cx| self.poll_finish(cx, true)).await.map_err(Error::from)
    }

    /// Waits for the fragment under way, then queues what is buffered as a
    /// fragment — the final one when `fin` — and waits for it. With `fin`,
    /// the message is then over.
    pub(super) fn poll_finish(&mut self, cx: &mut Context<'_>, fin: bool) -> Poll<io::Result<()>> {
        let Some(open) = &mut self.open else {
            return Poll::Ready(Err(Error::WriterClosed.into()));
        };
        open.timer.set(self.deadline);
        let mut result = ready!(open.poll_in_flight(&self.shared, cx));
        if result.is_ok() && fin && !open.fragments.is_finished() {
            self.sender.end_stream(&mut open.fragments, &mut open.buf);
            result = ready!(open.poll_fragment(&self.shared, cx, true));
        } else if result.is_ok() && !fin && !open.buf.is_empty() {
            result = ready!(open.poll_fragment(&self.shared, cx, false));
        }
        // A finished message, or one that can no longer be finished, is over.
        if fin || result.is_err() {
            self.open = None;
        }
        Poll::Ready(result)
    }
}

impl OpenMessage {
    /// Waits until the last queued fragment is out.
    fn poll_in_flight<S: Stream>(&mut self, shared: &Shared<S>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = &self.failed {
            return Poll::Ready(Err(e.replay().into()));
        }
        if let Some(end) = self.in_flight {
            let result = match shared.poll_flushed(cx, end) {
                Poll::Ready(result) => result,
                Poll::Pending => {
                    ready!(self.timer.poll(cx));
                    shared.fail_writes(Error::Timeout);
                    Err(Error::Timeout)
                }
            };
            self.in_flight = None;
            if let Err(e) = result {
                self.failed = Some(e.replay());
                return Poll::Ready(Err(e.into()));
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Queues `buf` as the next fragment (once there is room) and waits for it.
    fn poll_fragment<S: Stream>(
        &mut self,
        shared: &Shared<S>,
        cx: &mut Context<'_>,
        fin: bool,
    ) -> Poll<io::Result<()>> {
        let room = match shared.poll_room(cx, Mode::Now, self.buf.len()) {
            Poll::Ready(result) => result,
            Poll::Pending => {
                ready!(self.timer.poll(cx));
                shared.fail_writes(Error::Timeout);
                Err(Error::Timeout)
            }
        };
        let (opcode, rsv) = self.fragments.next();
        let frame = Frame { opcode, fin, rsv, payload: &self.buf };
        match room.and_then(|()| shared.queue_frame(frame, Mode::Now, true)) {
            Ok(queued) => {
                self.fragments.queued(fin);
                self.buf.clear();
                if let Queued::Waiting(end) = queued {
                    self.in_flight = Some(end);
                }
                self.poll_in_flight(shared, cx)
            }
            Err(e) => {
                self.failed = Some(e.replay());
                Poll::Ready(Err(e.into()))
            }
        }
    }
}

/// Queues a control frame and waits until it is out. A `deadline` that has
/// already passed fails at once with [`Error::Timeout`], queueing nothing
/// (gorilla's `WriteControl`). `deadline` bounds the wait: passed while the frame still waits for room it is taken back and
/// the failure is not permanent; passed once it is in the queue, the write
/// side fails for good.
pub(crate) async fn write_control<S: Stream>(
    shared: &Shared<S>,
    kind: MessageType,
    data: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    let opcode = kind.opcode();
    if !is_valid_control(opcode, data.len()) {
        return Err(Error::InvalidControlFrame);
    }
    if deadline.is_some_and(|at| at <= Instant::now()) {
        return Err(Error::Timeout);
    }
    let id = shared.queue_control(Origin::User, opcode, data)?;
    let mut pending = ControlWait { shared, id, keep: opcode == OpCode::Close };
    let mut timer = Timer::new(deadline);
    poll_fn(|cx| {
        if let Poll::Ready(result) = shared.poll_control(cx, id) {
            pending.keep = true;
            return Poll::Ready(result);
        }
        ready!(timer.poll(cx));
        if pending.keep || !shared.withdraw(id) {
            shared.fail_writes(Error::Timeout);
        }
        pending.keep = true;
        Poll::Ready(Err(Error::Timeout))
    })
    .await
}

/// Writes one message in fragments (an [`AsyncWrite`]); see
/// [`WriteHalf::next_writer`].
///
/// Cancel safety: a fragment is queued whole; a `write`, `flush` or
/// `shutdown` dropped while it waits leaves it queued, and the next call
/// (or the next write on the half, if the writer is dropped) goes on from
/// there. Each message gets exactly one final frame.
pub struct MessageWriter<'a, S: Stream> {
    half: &'a mut WriteHalf<S>,
}

impl<S: Stream> fmt::Debug for MessageWriter<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageWriter").finish_non_exhaustive()
    }
}

impl<S: Stream> MessageWriter<'_, S> {
    /// Sends what is buffered as the final frame, completing the message.
    ///
    /// Cancel safety: the final frame is queued whole, once; dropped after
    /// that, the message is complete on the wire when the queue drains (the
    /// next write, flush or read of the connection drains it).
    pub async fn close(self) -> Result<()> {
        poll_fn(|cx| self.half.poll_finish(cx, true)).await.map_err(Error::from)
    }
}

impl<S: Stream> AsyncWrite for MessageWriter<'_, S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let half = &mut *self.half;
        let capacity = half.shared.settings.write_buffer_size.max(1);
        let Some(open) = &mut half.open else {
            return Poll::Ready(Err(Error::WriterClosed.into()));
        };
        if open.fragments.is_finished() {
            return Poll::Ready(Err(Error::WriterClosed.into()));
        }
        open.timer.set(half.deadline);
        ready!(open.poll_in_flight(&half.shared, cx))?;
        if open.buf.len() >= capacity {
            ready!(open.poll_fragment(&half.shared, cx, false))?;
        }
        Poll::Ready(Ok(half.sender.stream(&open.fragments, data, &mut open.buf, capacity)))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.half.poll_finish(cx, false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.half.poll_finish(cx, true)
    }
}
