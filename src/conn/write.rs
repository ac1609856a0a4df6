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

use super::shared::{Shared, Stream};
use super::{Handle, MessageType};
use crate::error::{Error, Result};
use crate::proto::decoder::MAX_CONTROL_PAYLOAD;
use crate::proto::{CloseFrame, MessageKind, OpCode};

type Send_ = Pin<Box<dyn Future<Output = (BytesMut, Result<()>)> + Send + Sync>>;

/// A streamed message that has been started and not finished.
struct OpenMessage {
    /// The opcode of the next frame: the message's own, then continuation.
    opcode: OpCode,
    buf: BytesMut,
    sending: Option<Send_>,
    /// A fragment failed: the message cannot be completed.
    failed: Option<Error>,
}

/// The sending half of a connection (see [`crate::Conn::split`]).
pub struct WriteHalf<S: Stream> {
    pub(crate) shared: Arc<Shared<S>>,
    deadline: Option<Instant>,
    open: Option<OpenMessage>,
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
        WriteHalf { shared, deadline: None, open: None }
    }

    /// Sends a whole message as one frame. Control types (close, ping, pong)
    /// are allowed and limited to 125 bytes. After a close frame was sent, by
    /// any route, every write fails with [`Error::CloseSent`]. A failed write
    /// (including a passed deadline) fails every later write.
    ///
    /// Text is sent as given: the application must make it valid UTF-8.
    pub async fn write_message(&mut self, kind: impl Into<MessageType>, data: impl AsRef<[u8]>) -> Result<()> {
        let kind = kind.into();
        let data = data.as_ref();
        self.finish_open().await?;
        if kind.is_control() && data.len() as u64 > MAX_CONTROL_PAYLOAD {
            return Err(Error::InvalidControlFrame);
        }
        self.shared.write_frame(kind.opcode(), true, 0, data, self.deadline).await
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
        self.open = Some(OpenMessage {
            opcode: kind.opcode(),
            buf: BytesMut::with_capacity(capacity),
            sending: None,
            failed: None,
        });
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
        let _ = self.finish_open().await;
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
    shared.write_frame(kind.opcode(), true, 0, data, deadline).await
}

fn start_fragment<S: Stream>(shared: &Arc<Shared<S>>, open: &mut OpenMessage, fin: bool, deadline: Option<Instant>) {
    let shared = shared.clone();
    let opcode = open.opcode;
    open.opcode = OpCode::Continuation;
    let buf = std::mem::take(&mut open.buf);
    open.sending = Some(Box::pin(async move {
        let result = shared.write_frame(opcode, fin, 0, &buf, deadline).await;
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
