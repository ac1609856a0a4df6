//! The async connection: [`Conn`], its halves and its handle.
//!
//! A [`Conn`] is a [`ReadHalf`] and a [`WriteHalf`] over one stream. Use it
//! whole from one task, or [`Conn::split`] it so that one task reads while
//! another writes: the type system then guarantees gorilla's rule of "one
//! concurrent reader and one concurrent writer". A [`Handle`] sends control
//! frames and closes from anywhere.
//!
//! # Writing from several tasks
//!
//! Every frame is queued whole before any of it is written, and bytes leave
//! only from the front of that one queue, so frames from different tasks
//! never interleave and a frame is never cut short by another. Whichever
//! task needs bytes to move writes them — the writer waiting for its
//! message, a [`Handle`], the keepalive task, or the reader before it waits
//! for input — and each is woken by the connection, not by the stream, so a
//! write never waits for a wake-up that went to another task.
//!
//! # Cancel safety
//!
//! Reads are cancel-safe: dropping [`ReadHalf::read_message`] (in a
//! `select!`, say) loses nothing, and the next call goes on with the
//! message. A write dropped before its frame was queued sends nothing; one
//! dropped after sends its frame whole, with the next write, flush or read
//! — it never leaves half a frame followed by something else. A control
//! frame from [`Handle::write_control`] that still waits behind other frames
//! when its future is dropped is taken back. Each method's documentation
//! says what dropping it does.

mod handle;
mod join;
#[cfg(feature = "json")]
mod json;
mod keepalive;
mod park;
mod read;
mod shared;
#[cfg(feature = "futures")]
mod streams;
mod wake;
mod write;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

pub use crate::config::{
    CompressionLevel, Config, DEFAULT_BUFFER_SIZE, DEFAULT_CLOSE_TIMEOUT, DEFAULT_COMPRESSION_LEVEL,
    DEFAULT_MAX_FRAGMENTS, DEFAULT_PONG_TIMEOUT, DEFAULT_READ_LIMIT,
};
pub use crate::handlers::{
    default_close_handler, default_ping_handler, default_pong_handler, CloseHandler, ControlContext, PingPongHandler,
};
pub use crate::message::{Message, MessageType};
pub use crate::prepared::PreparedMessage;
pub use handle::Handle;
pub use join::{join_messages, JoinMessages};
pub use read::{MessageReader, ReadHalf};
pub use shared::Stream;
pub use write::{MessageWriter, WriteHalf};

use crate::error::{CloseError, Result};
use crate::proto::{CloseFrame, Role};
use shared::Shared;

/// A WebSocket connection over any tokio stream.
///
/// Obtained from [`crate::Upgrader::accept`], [`crate::Upgrader::upgrade`] or
/// [`Conn::from_raw`] (for a stream whose handshake was done elsewhere).
pub struct Conn<S: Stream> {
    read: ReadHalf<S>,
    write: WriteHalf<S>,
}

impl<S: Stream> fmt::Debug for Conn<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").field("read", &self.read).field("write", &self.write).finish()
    }
}

impl<S: Stream> Conn<S> {
    /// Wraps a stream on which the opening handshake has already taken place.
    /// `early` holds bytes read past the handshake, which are WebSocket data.
    pub fn from_raw(stream: S, role: Role, config: Config, subprotocol: Option<String>, early: BytesMut) -> Self {
        let keepalive = config.ping_interval.map(|interval| (interval, config.pong_timeout));
        let shared = Shared::new(stream, role, &config, subprotocol);
        if let Some((interval, pong_timeout)) = keepalive {
            keepalive::spawn(&shared, interval, pong_timeout);
        }
        let write = WriteHalf::new(shared.clone(), &config);
        let read = ReadHalf::new(shared, &config, early, write.sender.parker());
        Conn { read, write }
    }

    /// Reads the next whole data message; see [`ReadHalf::read_message`].
    /// Cancel-safe.
    pub async fn read_message(&mut self) -> Result<Message> {
        self.read.read_message().await
    }

    /// Whether the connection holds compression state right now; see
    /// [`ReadHalf::holds_compression_state`].
    pub fn holds_compression_state(&self) -> bool {
        self.read.holds_compression_state()
    }

    /// Streams the next data message; see [`ReadHalf::next_reader`].
    /// Cancel-safe.
    pub async fn next_reader(&mut self) -> Result<(MessageType, MessageReader<'_, S>)> {
        self.read.next_reader().await
    }

    /// Sends a whole message; see [`WriteHalf::write_message`] (also for
    /// what dropping the future does).
    pub async fn write_message(&mut self, kind: impl Into<MessageType>, data: impl AsRef<[u8]>) -> Result<()> {
        self.write.write_message(kind, data).await
    }

    /// Buffers a message to send with the next write, flush, or read that
    /// would wait; see [`WriteHalf::feed_message`] (also for cancel safety).
    pub async fn feed_message(&mut self, kind: impl Into<MessageType>, data: impl AsRef<[u8]>) -> Result<()> {
        self.write.feed_message(kind, data).await
    }

    /// Sends every fed message now; see [`WriteHalf::flush`].
    pub async fn flush(&mut self) -> Result<()> {
        self.write.flush().await
    }

    /// Sends a text message; see [`WriteHalf::write_message`].
    pub async fn write_text(&mut self, text: impl AsRef<str>) -> Result<()> {
        self.write.write_text(text).await
    }

    /// Sends a binary message; see [`WriteHalf::write_message`].
    pub async fn write_binary(&mut self, data: impl AsRef<[u8]>) -> Result<()> {
        self.write.write_binary(data).await
    }

    /// Sends a prepared message; see [`WriteHalf::write_prepared`].
    pub async fn write_prepared(&mut self, message: &PreparedMessage) -> Result<()> {
        self.write.write_prepared(message).await
    }

    /// Feeds a prepared message; see [`WriteHalf::feed_prepared`].
    pub async fn feed_prepared(&mut self, message: &PreparedMessage) -> Result<()> {
        self.write.feed_prepared(message).await
    }

    /// Whether permessage-deflate was agreed.
    pub fn compression_negotiated(&self) -> bool {
        self.write.compression_negotiated()
    }

    /// Turns compression of later messages on or off; see
    /// [`WriteHalf::enable_write_compression`].
    pub fn enable_write_compression(&mut self, enable: bool) {
        self.write.enable_write_compression(enable);
    }

    /// Sets the compression level (−2..=9); see [`WriteHalf::set_compression_level`].
    pub fn set_compression_level(&mut self, level: impl Into<CompressionLevel>) -> Result<()> {
        self.write.set_compression_level(level)
    }

    /// Messages shorter than `bytes` go uncompressed.
    pub fn set_compression_threshold(&mut self, bytes: usize) {
        self.write.set_compression_threshold(bytes);
    }

    /// Streams a message out; see [`WriteHalf::next_writer`].
    pub async fn next_writer(&mut self, kind: MessageType) -> Result<MessageWriter<'_, S>> {
        self.write.next_writer(kind).await
    }

    /// Sends a control frame; see [`Handle::write_control`].
    pub async fn write_control(
        &self,
        kind: MessageType,
        data: impl AsRef<[u8]>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        self.write.write_control(kind, data, deadline).await
    }

    /// Runs the whole close handshake: sends `frame` (unless a close was sent
    /// already), reads and discards until the peer's close arrives or the close
    /// timeout passes, then shuts the stream down.
    ///
    /// Cancel safety: once polled, the close frame is queued and is sent
    /// whole even if the future is dropped; calling `close` again goes on
    /// with the handshake (the frame is not sent twice). Messages read while
    /// waiting for the peer's close are discarded.
    pub async fn close(&mut self, frame: CloseFrame) -> Result<()> {
        // Boxed: the handshake's timers would otherwise make the future of
        // every task that closes its connection larger for its whole life.
        Box::pin(self.close_handshake(frame)).await
    }

    async fn close_handshake(&mut self, frame: CloseFrame) -> Result<()> {
        let deadline = Instant::now() + self.write.shared.settings.close_timeout;
        let sent = self.write.shared.send_close(&frame.encode(), deadline).await;
        if sent.is_ok() && self.read.error().is_none() {
            let _ = tokio::time::timeout_at(deadline.into(), self.read.drain_until_closed()).await;
        }
        self.write.shared.finish_close().await;
        sent
    }

    /// Shuts the stream down at once, without a close frame (gorilla's
    /// `Close`). What waits to be written is dropped; later writes fail, and
    /// so do reads, without waiting for the peer (see [`Handle::close_now`]). Cancel-safe: the write side
    /// is closed for writing from the first poll.
    pub async fn close_now(&self) {
        self.write.shared.close_now().await;
    }

    /// Splits into a read half and a write half, for use from two tasks.
    pub fn split(self) -> (ReadHalf<S>, WriteHalf<S>) {
        (self.read, self.write)
    }

    /// Joins halves split from the same connection; gives them back otherwise.
    // The halves come back by value on failure, as `into_inner`'s conn does.
    #[allow(clippy::result_large_err)]
    pub fn reunite(read: ReadHalf<S>, write: WriteHalf<S>) -> std::result::Result<Self, (ReadHalf<S>, WriteHalf<S>)> {
        if Arc::ptr_eq(&read.shared, &write.shared) {
            Ok(Conn { read, write })
        } else {
            Err((read, write))
        }
    }

    /// A handle that sends control frames and closes from any task.
    pub fn handle(&self) -> Handle<S> {
        self.write.handle()
    }

    /// The read half, for its settings (limits, deadline, handlers).
    pub fn reader(&mut self) -> &mut ReadHalf<S> {
        &mut self.read
    }

    /// The write half, for its settings (deadline).
    pub fn writer(&mut self) -> &mut WriteHalf<S> {
        &mut self.write
    }

    /// Sets the read limit; see [`ReadHalf::set_read_limit`].
    pub fn set_read_limit(&mut self, limit: Option<u64>) {
        self.read.set_read_limit(limit);
    }

    /// Sets the read deadline; see [`ReadHalf::set_read_deadline`].
    pub fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        self.read.set_read_deadline(deadline);
    }

    /// Sets the write deadline; see [`WriteHalf::set_write_deadline`].
    pub fn set_write_deadline(&mut self, deadline: Option<Instant>) {
        self.write.set_write_deadline(deadline);
    }

    /// Sets the ping handler; see [`ReadHalf::set_ping_handler`].
    pub fn set_ping_handler(&mut self, handler: Option<PingPongHandler>) {
        self.read.set_ping_handler(handler);
    }

    /// Sets the pong handler; see [`ReadHalf::set_pong_handler`].
    pub fn set_pong_handler(&mut self, handler: Option<PingPongHandler>) {
        self.read.set_pong_handler(handler);
    }

    /// Sets the close handler; see [`ReadHalf::set_close_handler`].
    pub fn set_close_handler(&mut self, handler: Option<CloseHandler>) {
        self.read.set_close_handler(handler);
    }

    /// How the connection was closed; see [`ReadHalf::close_error`].
    pub fn close_error(&self) -> Option<&CloseError> {
        self.read.close_error()
    }

    /// Whether this end is the server or the client.
    pub fn role(&self) -> Role {
        self.write.shared.role
    }

    /// The subprotocol agreed in the handshake.
    pub fn subprotocol(&self) -> Option<&str> {
        self.write.shared.subprotocol.as_deref()
    }

    /// Runs `f` on the underlying stream (to ask it for its addresses or
    /// its TLS state, say). The stream is shared by both halves, so it is
    /// lent for the call only; reading or writing it directly corrupts the
    /// connection.
    pub fn with_stream<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.write.shared.stream())
    }

    /// The underlying stream, when no [`Handle`] is alive. Bytes already read
    /// into the connection's buffer are lost.
    #[allow(clippy::result_large_err)]
    pub fn into_inner(self) -> std::result::Result<S, Self> {
        // The two halves hold one reference each; anything more is a handle
        // or a reply still in flight.
        if Arc::strong_count(&self.write.shared) != 2 {
            return Err(self);
        }
        let Conn { read, write } = self;
        let (shared, rest) = write.detach();
        drop(shared);
        // Only the read half's reference is left, unless the keepalive task
        // holds one for a moment: then the connection is handed back whole.
        read.try_into_stream().map_err(|read| {
            let shared = read.shared.clone();
            Conn { read, write: WriteHalf::rejoin(shared, rest) }
        })
    }
}

/// Streams that know their socket addresses.
pub trait SocketAddrs {
    /// The local address.
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
    /// The peer's address.
    fn peer_addr(&self) -> std::io::Result<SocketAddr>;
}

impl SocketAddrs for tokio::net::TcpStream {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        tokio::net::TcpStream::local_addr(self)
    }
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        tokio::net::TcpStream::peer_addr(self)
    }
}

/// The two addresses of an accepted connection, for a stream that cannot
/// tell them itself: a server built on hyper (or axum) inserts them into each
/// request's extensions, and [`crate::Upgrader::upgrade`] carries them to the
/// upgraded connection, whose [`Conn::local_addr`] and [`Conn::remote_addr`]
/// then answer.
///
/// ```
/// # async fn run() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let client = tokio::net::TcpStream::connect(listener.local_addr()?);
/// let (stream, _) = listener.accept().await?;
/// let addrs = silverback::Addrs::of(&stream)?;
/// // In the service: request.extensions_mut().insert(addrs);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Addrs {
    /// This end's address.
    pub local: SocketAddr,
    /// The peer's address.
    pub peer: SocketAddr,
}

impl Addrs {
    /// The addresses of `stream`.
    pub fn of(stream: &impl SocketAddrs) -> std::io::Result<Addrs> {
        Ok(Addrs { local: stream.local_addr()?, peer: stream.peer_addr()? })
    }
}

#[cfg(feature = "tls")]
impl<T: SocketAddrs> SocketAddrs for tokio_rustls::server::TlsStream<T> {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.get_ref().0.local_addr()
    }
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        self.get_ref().0.peer_addr()
    }
}

#[cfg(feature = "tls")]
impl<T: SocketAddrs> SocketAddrs for tokio_rustls::client::TlsStream<T> {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.get_ref().0.local_addr()
    }
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        self.get_ref().0.peer_addr()
    }
}

#[cfg(feature = "tls")]
impl<T: SocketAddrs> SocketAddrs for tokio_rustls::TlsStream<T> {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.get_ref().0.local_addr()
    }
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        self.get_ref().0.peer_addr()
    }
}

#[cfg(feature = "hyper")]
impl<T: SocketAddrs> SocketAddrs for hyper_util::rt::TokioIo<T> {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner().local_addr()
    }
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner().peer_addr()
    }
}

impl<S: Stream + SocketAddrs> Conn<S> {
    /// The local socket address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.with_stream(|s| s.local_addr())
    }

    /// The peer's socket address.
    pub fn remote_addr(&self) -> std::io::Result<SocketAddr> {
        self.with_stream(|s| s.peer_addr())
    }
}
