//! The write half: whole messages ([`WriteHalf::write_message`]), streamed
//! messages ([`WriteHalf::next_writer`]) and control frames.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncWrite;

use super::shared::{Shared, Stream, TrySend};
use super::{Handle, MessageType, PreparedMessage};
use crate::error::{Error, Result};
use crate::proto::decoder::MAX_CONTROL_PAYLOAD;
use crate::proto::deflate::Deflater;
use crate::proto::frame::RSV1;
use crate::proto::{CloseFrame, MessageKind, OpCode, Role};

type Send_ = Pin<Box<dyn Future<Output = (BytesMut, Result<()>)> + Send + Sync>>;

/// A streamed message that has been started and not finished.
struct OpenMessage {
    /// The opcode of the next frame: the message's own, then continuation.
    opcode: OpCode,
    buf: BytesMut,
    /// The message is compressed as it is written.
    compressed: bool,
    /// The compressor's final flush is in `buf` (compressed messages).
    flushed: bool,
    sending: Option<Send_>,
    /// A fragment failed: the message cannot be completed.
    failed: Option<Error>,
}

/// The sending half of a connection (see [`crate::Conn::split`]).
pub struct WriteHalf<S: Stream> {
    pub(crate) shared: Arc<Shared<S>>,
    deadline: Option<Instant>,
    /// The message being streamed by a [`MessageWriter`] (boxed, like the
    /// deflater: rare, and the half is part of every connection's state).
    open: Option<Box<OpenMessage>>,
    /// Present when permessage-deflate was agreed.
    deflater: Option<Box<Deflater>>,
    compress: bool,
    threshold: usize,
    /// Reused for compressed payloads.
    scratch: BytesMut,
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

impl<S: Stream> WriteHalf<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        let deflater = shared.config.deflate.map(|params| {
            let (bits, resets) = match shared.role {
                Role::Server => (params.server_max_window_bits, params.server_no_context_takeover),
                Role::Client => (params.client_max_window_bits, params.client_no_context_takeover),
            };
            Box::new(Deflater::new(shared.config.compression_level, bits, resets))
        });
        let threshold = shared.config.compression_threshold;
        WriteHalf { shared, deadline: None, open: None, deflater, compress: true, threshold, scratch: BytesMut::new() }
    }

    /// The compressor to use for a data message of `len` bytes, if any.
    fn deflater_for(&mut self, len: usize) -> Option<&mut Deflater> {
        let wanted = self.compress && len >= self.threshold;
        self.deflater.as_deref_mut().filter(|d| wanted && d.can_compress())
    }

    /// Whether permessage-deflate was agreed for this connection.
    pub fn compression_negotiated(&self) -> bool {
        self.deflater.is_some()
    }

    /// Turns compression of later data messages on or off (on by default;
    /// no effect when compression was not agreed).
    pub fn enable_write_compression(&mut self, enable: bool) {
        self.compress = enable;
    }

    /// Sets the compression level, 0 (none) to 9 (best), for later messages.
    pub fn set_compression_level(&mut self, level: u32) -> Result<()> {
        if level > 9 {
            return Err(Error::InvalidRequest(format!("compression level {level} is not in 0..=9")));
        }
        if let Some(deflater) = &mut self.deflater {
            deflater.set_level(level);
        }
        Ok(())
    }

    /// Data messages shorter than `bytes` are sent uncompressed.
    pub fn set_compression_threshold(&mut self, bytes: usize) {
        self.threshold = bytes;
    }

    /// Sends a [`PreparedMessage`]: its frame payload is made once per
    /// compression variant and shared by every connection that sends it.
    pub async fn write_prepared(&mut self, message: &PreparedMessage) -> Result<()> {
        let kind = message.kind();
        if kind.is_control() {
            return self.write_message(kind, message.data()).await;
        }
        if self.open.is_some() {
            Box::pin(self.finish_open()).await?;
        }
        let len = message.data().len();
        let Some(deflater) = self.deflater_for(len) else {
            return deliver(&self.shared, self.deadline, kind.opcode(), 0, message.data(), true).await;
        };
        let payload = message.compressed(deflater.window_bits(), deflater.level());
        // The peer's window now holds bytes our compressor never saw: start
        // afresh so later messages refer only to what follows.
        if !deflater.no_context_takeover() {
            deflater.reset();
        }
        deliver(&self.shared, self.deadline, kind.opcode(), RSV1, &payload, true).await
    }

    /// Sends a whole message as one frame. Control types (close, ping, pong)
    /// are allowed and limited to 125 bytes. After a close frame was sent, by
    /// any route, every write fails with [`Error::CloseSent`]. A failed write
    /// (including a passed deadline) fails every later write.
    ///
    /// Text is sent as given: the application must make it valid UTF-8.
    pub async fn write_message(&mut self, kind: impl Into<MessageType>, data: impl AsRef<[u8]>) -> Result<()> {
        let (kind, data) = (kind.into(), data.as_ref());
        if self.is_plain(kind, data) {
            let shared = &self.shared;
            match poll_fn(|cx| Poll::Ready(shared.try_send(cx, kind.opcode(), 0, data))).await {
                TrySend::Done(result) => return result,
                TrySend::Buffered => return finish_flush(shared, self.deadline).await,
                TrySend::NotTaken => {}
            }
        }
        Box::pin(self.send_message(kind, data, true)).await
    }

    /// Adds a message to the write buffer without sending it yet, so that
    /// messages written back to back leave in one system call. Fed messages
    /// go out with the next [`WriteHalf::write_message`] or
    /// [`WriteHalf::flush`], when the buffer fills, or as soon as the read
    /// side of the connection is about to wait for input — so an echo loop of
    /// `read_message` and `feed_message` batches its replies and never
    /// leaves one behind while it waits.
    pub async fn feed_message(&mut self, kind: impl Into<MessageType>, data: impl AsRef<[u8]>) -> Result<()> {
        let (kind, data) = (kind.into(), data.as_ref());
        if self.is_plain(kind, data) {
            let shared = &self.shared;
            if let Some(result) = shared.try_feed(kind.opcode(), 0, data) {
                return result;
            }
            // The buffer is full: write it out, and feed again.
            if shared.has_pending() {
                finish_flush(shared, self.deadline).await?;
                if let Some(result) = shared.try_feed(kind.opcode(), 0, data) {
                    return result;
                }
            }
        }
        Box::pin(self.send_message(kind, data, false)).await
    }

    /// Whether a message goes out as it is, in one frame: no streamed
    /// message is open, it is not to be compressed, and it is a valid size.
    /// Such a message can take the quick path (see [`deliver`]).
    fn is_plain(&self, kind: MessageType, data: &[u8]) -> bool {
        let compress = !kind.is_control() && self.deflater.is_some() && self.compress && data.len() >= self.threshold;
        let valid = !kind.is_control() || data.len() as u64 <= MAX_CONTROL_PAYLOAD;
        self.open.is_none() && !compress && valid
    }

    /// Sends every fed message now.
    pub async fn flush(&mut self) -> Result<()> {
        finish_flush(&self.shared, self.deadline).await
    }

    /// Sends (`now`) or feeds one whole message, as one frame.
    async fn send_message(&mut self, kind: MessageType, data: &[u8], now: bool) -> Result<()> {
        if self.open.is_some() {
            Box::pin(self.finish_open()).await?;
        }
        if kind.is_control() && data.len() as u64 > MAX_CONTROL_PAYLOAD {
            return Err(Error::InvalidControlFrame);
        }
        let wanted = !kind.is_control() && self.compress && data.len() >= self.threshold;
        let (rsv, payload): (u8, &[u8]) = match self.deflater.as_deref_mut().filter(|d| wanted && d.can_compress()) {
            Some(deflater) => {
                self.scratch.clear();
                deflater.compress_message(data, &mut self.scratch);
                (RSV1, &self.scratch)
            }
            None => (0, data),
        };
        let result = deliver(&self.shared, self.deadline, kind.opcode(), rsv, payload, now).await;
        if result.is_err() && rsv == RSV1 {
            if let Some(deflater) = &mut self.deflater {
                // The message may not have gone out, but the compressor saw it.
                deflater.reset();
            }
        }
        result
    }

    /// Sends a text message.
    pub async fn write_text(&mut self, text: impl AsRef<str>) -> Result<()> {
        self.write_message(MessageType::Text, text.as_ref()).await
    }

    /// Sends a binary message.
    pub async fn write_binary(&mut self, data: impl AsRef<[u8]>) -> Result<()> {
        self.write_message(MessageType::Binary, data).await
    }

    /// Sends a control frame with its own `deadline`, which bounds both the
    /// wait behind other writers and the write.
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
    /// dropped unfinished is completed by the next write on this half.
    pub async fn next_writer(&mut self, kind: MessageKind) -> Result<MessageWriter<'_, S>> {
        self.finish_open().await?;
        if let Some(e) = self.shared.sticky_error().await {
            return Err(e);
        }
        let capacity = self.shared.config.write_buffer_size.max(1);
        // Streamed messages are compressed whatever their length: it is not known yet.
        let compressed = self.deflater_for(usize::MAX).is_some();
        self.open = Some(Box::new(OpenMessage {
            opcode: kind.opcode(),
            buf: BytesMut::with_capacity(capacity),
            compressed,
            flushed: false,
            sending: None,
            failed: None,
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

    /// Drives the fragment being sent, then sends what is buffered, with FIN
    /// when `fin`. With `fin`, the message is then over.
    fn poll_finish(&mut self, cx: &mut Context<'_>, fin: bool) -> Poll<io::Result<()>> {
        let Some(open) = &mut self.open else {
            return Poll::Ready(Err(Error::WriterClosed.into()));
        };
        let mut result = ready!(poll_sending(open, cx));
        if result.is_ok() && fin && open.compressed && !open.flushed {
            if let Some(deflater) = &mut self.deflater {
                deflater.compress(&[], &mut open.buf, true);
            }
            open.flushed = true;
        }
        if result.is_ok() && (fin || !open.buf.is_empty()) {
            start_fragment(&self.shared, open, fin, self.deadline);
            result = ready!(poll_sending(open, cx));
        }
        // A finished message, or one that can no longer be finished, is over.
        if fin || result.is_err() {
            self.open = None;
        }
        Poll::Ready(result)
    }
}

pub(crate) async fn write_control<S: Stream>(
    shared: &Shared<S>,
    kind: MessageType,
    data: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    if !kind.is_control() || data.len() as u64 > MAX_CONTROL_PAYLOAD {
        return Err(Error::InvalidControlFrame);
    }
    deliver(shared, deadline, kind.opcode(), 0, data, true).await
}

/// Waits until what the write buffer holds has been written: for `flush`,
/// for a full buffer, or after the stream took only part of it (it is full
/// itself, or the task used up its tokio budget). Without a deadline and
/// while no other writer holds the sink, this polls the write-out in place;
/// otherwise it goes the general way, boxed.
async fn finish_flush<S: Stream>(shared: &Shared<S>, deadline: Option<Instant>) -> Result<()> {
    if deadline.is_none() {
        let quick = poll_fn(|cx| match shared.poll_flush_quick(cx) {
            Some(Poll::Ready(result)) => Poll::Ready(Some(result)),
            Some(Poll::Pending) => Poll::Pending,
            None => Poll::Ready(None),
        })
        .await;
        if let Some(result) = quick {
            return result;
        }
    }
    Box::pin(shared.flush_pending(deadline)).await
}

/// Sends (`now`) or feeds one final frame. The common case takes no wait and
/// no allocation: the frame is appended to the write buffer and, when
/// sending, the stream takes it at once. Everything else (a busy sink, a full
/// buffer or socket, a large payload, a close frame) goes the general way,
/// boxed, so that the futures callers keep in their tasks stay small.
async fn deliver<S: Stream>(
    shared: &Shared<S>,
    deadline: Option<Instant>,
    opcode: OpCode,
    rsv: u8,
    payload: &[u8],
    now: bool,
) -> Result<()> {
    let attempt = if now {
        poll_fn(|cx| Poll::Ready(shared.try_send(cx, opcode, rsv, payload))).await
    } else {
        shared.try_feed(opcode, rsv, payload).map_or(TrySend::NotTaken, TrySend::Done)
    };
    match attempt {
        TrySend::Done(result) => result,
        TrySend::Buffered => finish_flush(shared, deadline).await,
        TrySend::NotTaken => Box::pin(shared.send_frame(opcode, rsv, payload, deadline, now)).await,
    }
}

fn start_fragment<S: Stream>(shared: &Arc<Shared<S>>, open: &mut OpenMessage, fin: bool, deadline: Option<Instant>) {
    let shared = shared.clone();
    let opcode = open.opcode;
    // RFC 7692 §6: RSV1 marks the first frame of a compressed message only.
    let rsv = if open.compressed && opcode != OpCode::Continuation { RSV1 } else { 0 };
    open.opcode = OpCode::Continuation;
    let buf = std::mem::take(&mut open.buf);
    open.sending = Some(Box::pin(async move {
        let result = shared.write_frame(opcode, fin, rsv, &buf, deadline).await;
        (buf, result)
    }));
}

fn poll_sending(open: &mut OpenMessage, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    if let Some(e) = &open.failed {
        return Poll::Ready(Err(e.replay().into()));
    }
    if let Some(sending) = &mut open.sending {
        let (mut buf, result) = ready!(sending.as_mut().poll(cx));
        open.sending = None;
        buf.clear();
        open.buf = buf;
        if let Err(e) = result {
            open.failed = Some(e.replay());
            return Poll::Ready(Err(e.into()));
        }
    }
    Poll::Ready(Ok(()))
}

/// Writes one message in fragments (an [`AsyncWrite`]); see
/// [`WriteHalf::next_writer`].
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
    pub async fn close(self) -> Result<()> {
        poll_fn(|cx| self.half.poll_finish(cx, true)).await.map_err(Error::from)
    }
}

impl<S: Stream> AsyncWrite for MessageWriter<'_, S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let half = &mut *self.half;
        let capacity = half.shared.config.write_buffer_size.max(1);
        let Some(open) = &mut half.open else {
            return Poll::Ready(Err(Error::WriterClosed.into()));
        };
        ready!(poll_sending(open, cx))?;
        if open.buf.len() >= capacity {
            start_fragment(&half.shared, open, false, half.deadline);
            ready!(poll_sending(open, cx))?;
        }
        if open.compressed {
            let n = data.len().min(capacity);
            if let Some(deflater) = &mut half.deflater {
                deflater.compress(&data[..n], &mut open.buf, false);
            }
            return Poll::Ready(Ok(n));
        }
        let n = data.len().min(capacity - open.buf.len());
        open.buf.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.half.poll_finish(cx, false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.half.poll_finish(cx, true)
    }
}
