//! A cloneable handle for control frames and closing, usable from any task.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use super::shared::{Shared, Stream};
use super::write::write_control;
use super::MessageType;
use crate::error::Result;
use crate::proto::outbox::Origin;
use crate::proto::{CloseFrame, OpCode};

/// Sends control frames and closes the connection from any task, while other
/// tasks read and write (gorilla's "`Close` and `WriteControl` may be called
/// concurrently with all other methods").
pub struct Handle<S: Stream> {
    shared: Arc<Shared<S>>,
}

impl<S: Stream> Clone for Handle<S> {
    fn clone(&self) -> Self {
        Handle { shared: self.shared.clone() }
    }
}

impl<S: Stream> fmt::Debug for Handle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").field("role", &self.shared.role).finish_non_exhaustive()
    }
}

impl<S: Stream> Handle<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        Handle { shared }
    }

    /// Sends a close, ping or pong frame of at most 125 bytes and waits
    /// until it is written. Control frames go ahead of data messages that
    /// have not been queued yet, but never into the middle of a frame.
    /// A `deadline` already past fails at once with [`crate::Error::Timeout`]
    /// and sends nothing; the connection is unaffected.
    /// `deadline` bounds the wait: when it passes while the frame still
    /// waits behind other frames, the frame is taken back and the failure
    /// is not permanent; once the frame is under way, it is.
    ///
    /// Cancel safety: dropped before its frame was queued behind the others,
    /// the frame is not sent; after, it is sent whole. A close frame is
    /// always sent once queued.
    pub async fn write_control(
        &self,
        kind: MessageType,
        data: impl AsRef<[u8]>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        write_control(&self.shared, kind, data.as_ref(), deadline).await
    }

    /// Sends a ping; see [`Handle::write_control`] (also for cancel safety).
    pub async fn ping(&self, data: impl AsRef<[u8]>) -> Result<()> {
        self.write_control(MessageType::Ping, data, None).await
    }

    /// Runs the close handshake from this side: sends `frame` (unless a close
    /// was sent already), waits up to the close timeout for the reader to see
    /// the peer's close, then shuts the stream down. When the peer's close
    /// did not come in time, reads end too, as with [`Handle::close_now`].
    ///
    /// Cancel safety: once polled, the close frame is queued and is sent
    /// whole even if the future is dropped; the stream is then not shut
    /// down until `close` or `close_now` is called again (or the read half
    /// sees the peer's close, which completes the handshake).
    pub async fn close(&self, frame: CloseFrame) -> Result<()> {
        // Boxed, so that the callers' futures do not carry the timers.
        Box::pin(async {
            let deadline = Instant::now() + self.shared.settings.close_timeout;
            let sent = self.shared.send_close(&frame.encode(), deadline).await;
            if sent.is_ok() {
                self.shared.wait_close_received(deadline).await;
            }
            self.shared.finish_close().await;
            sent
        })
        .await
    }

    /// Shuts the stream down at once, without a close frame (gorilla's
    /// `Conn.Close`). Writes fail, and reads — including one waiting in
    /// another task — end with an I/O error of kind `ConnectionAborted`,
    /// without waiting for the peer. Cancel-safe: the
    /// write side is closed for writing from the first poll.
    pub async fn close_now(&self) {
        self.shared.close_now().await;
    }

    /// Queues a close frame with `payload` without waiting for it to leave;
    /// `Err(CloseSent)` when a close was queued already.
    pub(crate) fn queue_close(&self, payload: &[u8]) -> Result<()> {
        self.shared.queue_control(Origin::User, OpCode::Close, payload).map(|_| ())
    }

    /// Waits until the reader has seen the peer's close frame.
    pub(crate) async fn until_close_received(&self) {
        self.shared.until_close_received().await
    }

    /// True once a close frame has been sent (or queued behind frames
    /// still being written).
    pub fn is_close_sent(&self) -> bool {
        self.shared.close_sent()
    }

    /// True once the peer's close frame has been received.
    pub fn is_close_received(&self) -> bool {
        self.shared.close_received()
    }

    /// The subprotocol agreed in the handshake.
    pub fn subprotocol(&self) -> Option<&str> {
        self.shared.subprotocol.as_deref()
    }
}
