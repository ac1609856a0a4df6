//! silverback: WebSocket (RFC 6455) for tokio, with the API of Go's
//! gorilla/websocket in Rust form.
//!
//! # Overview
//!
//! A [`Conn`] is one WebSocket connection. A server gets one from an
//! [`Upgrader`], either on a raw stream ([`Upgrader::accept`]) or from a hyper
//! request ([`Upgrader::upgrade`]):
//!
//! ```no_run
//! # async fn run() -> Result<(), silverback::Error> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
//! let upgrader = silverback::Upgrader::new();
//! let (stream, _) = listener.accept().await?;
//! let mut conn = upgrader.accept(stream).await?;
//! loop {
//!     let msg = conn.read_message().await?;
//!     conn.write_message(msg.kind, &msg.data).await?;
//! }
//! # }
//! ```
//!
//! Messages can also be streamed: [`Conn::next_reader`] returns an
//! [`tokio::io::AsyncRead`] over one message, and [`Conn::next_writer`] an
//! [`tokio::io::AsyncWrite`] that sends fragments and is finished by
//! [`MessageWriter::close`].
//!
//! With the `futures` feature (on by default) a [`Conn`] and its halves are
//! also a `futures::Stream` of whole messages and a `futures::Sink` of
//! [`Message`]s; the stream ends when the peer closes normally, and closing
//! the sink runs the close handshake:
//!
//! ```no_run
//! # #[cfg(feature = "futures")]
//! # async fn run(conn: silverback::Conn<tokio::net::TcpStream>) -> Result<(), silverback::Error> {
//! use futures_util::StreamExt;
//! let (read, write) = conn.split();
//! read.forward(write).await // an echo, until the peer closes
//! # }
//! ```
//!
//! # Layers
//!
//! ```text
//!   upgrade (server handshake)
//!          |
//!   conn: Conn over tokio AsyncRead + AsyncWrite (buffers, deadlines, handlers, close)
//!          |
//!   proto: sans-IO core (frames, masking, UTF-8, close codes, both opening handshakes)
//! ```
//!
//! Every protocol rule lives once, in [`proto`], which knows nothing of
//! sockets or time.
//!
//! # Data messages
//!
//! Text messages are UTF-8, binary messages are opaque. Received text is
//! validated (incrementally, across fragments): invalid text fails the
//! connection with close code 1007. Sent text is not checked; sending valid
//! UTF-8 is the application's job.
//!
//! # Control messages
//!
//! Received pings, pongs and closes go to handlers that run inside the read
//! methods. The defaults answer a ping with a pong, ignore pongs, and echo a
//! close's status code. The application must keep reading for them to run.
//! A close from the peer ends reads with [`Error::Closed`]. [`Conn::close`]
//! runs the close handshake from this side with a bounded wait.
//!
//! # Concurrency
//!
//! [`Conn::split`] gives a [`ReadHalf`] and a [`WriteHalf`] for two tasks; the
//! borrow checker enforces one reader and one writer. A [`Handle`], cloneable,
//! sends control frames and closes from anywhere, concurrently with both.
//!
//! # Graceful shutdown
//!
//! A [`Shutdown`] tracks a server's connections: its accept loop stops on
//! [`Shutdown::started`], and [`Shutdown::shutdown`] sends every connection
//! a close frame (1001 or 1012, say), waits for the handshakes up to a
//! deadline and shuts down the rest, reporting how many closed cleanly.
//!
//! # Origin considerations
//!
//! Browsers let any page open a WebSocket to any host. Unless told otherwise
//! with [`Upgrader::check_origin`], the upgrader refuses (403) a request whose
//! `Origin` header names another host than its `Host` header.
//!
//! # Buffers and limits
//!
//! Read and write buffers (4 KiB by default) reduce system calls; they do not
//! limit message size. A [`BufferPool`] lets connections share write buffers.
//! Each connection has a read limit (64 MiB by default): a larger message fails
//! the connection with close code 1009.
//!
//! # Clients
//!
//! [`Dialer`] (or [`connect`] with gorilla's `DefaultDialer` settings) opens
//! `ws://` and `wss://` connections, directly or through HTTP CONNECT and
//! SOCKS5 proxies, and checks the server's response against RFC 6455 before
//! it hands over the [`Conn`]. A refused handshake is
//! [`Error::BadResponse`], with the server's status, headers and the start
//! of its body.
//!
//! # HTTP/2 and axum
//!
//! WebSockets also run on streams of an HTTP/2 connection (RFC 8441). A
//! server gets them from hyper ([`Upgrader::upgrade`] takes an extended
//! CONNECT as it takes an HTTP/1.1 upgrade, on a server built with
//! `enable_connect_protocol()`) or from axum (the `axum` feature's
//! `silverback::axum::WebSocketUpgrade`); a client asks for them with
//! `Dialer::http2` (`Http2Mode::Prefer` or `Only`), or opens several on
//! one connection with `Dialer::connect_http2` (feature `hyper`).
//!
//! # Compression
//!
//! permessage-deflate (RFC 7692) is off by default; turn it on with
//! [`Upgrader::enable_compression`] or [`Dialer::enable_compression`], or set
//! its parameters with a [`DeflateConfig`]. Context takeover is used whenever
//! both sides allow it. Received messages are inflated as they are read and
//! held to the read limit by their inflated size. [`Conn::enable_write_compression`],
//! [`Conn::set_compression_level`] (gorilla's levels, −2 to 9: see
//! [`CompressionLevel`]) and a size threshold control what is sent
//! compressed; a [`PreparedMessage`] compresses a broadcast once.
//!
//! # Fan-out
//!
//! A [`fanout::Hub`] sends each message to many connections: it is framed
//! (and compressed, per negotiated variant) once, shared by every
//! subscriber's writer task, and a subscriber that falls behind is handled by
//! its [`fanout::SlowPolicy`] (drop, close, or wait a bounded time) without
//! holding up the others.
//!
//! # Batching writes
//!
//! [`Conn::write_message`] sends at once. [`Conn::feed_message`] only adds the
//! message to the write buffer; fed messages leave together with the next
//! write, a [`Conn::flush`], or as soon as the connection's reader is about to
//! wait for input, so an echo or request/response loop batches its replies
//! without ever leaving one behind.
//!
//! # Errors
//!
//! One [`Error`] type. Protocol violations by the peer close the connection
//! with 1002, 1007 or 1009 and return [`Error::Protocol`]. Read errors are
//! permanent; writes after a close was sent fail with [`Error::CloseSent`].
//! No input makes the library panic.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "blocking")]
pub mod blocking;
mod config;
#[cfg(feature = "tokio")]
pub mod conn;
#[cfg(any(feature = "tokio", feature = "blocking"))]
pub mod dial;
mod error;
#[cfg(feature = "tokio")]
pub mod fanout;
mod handlers;
#[cfg(any(feature = "tokio", feature = "blocking"))]
mod handshake_io;
mod message;
mod pool;
mod prepared;
pub mod proto;
#[cfg(feature = "tokio")]
mod shutdown;
pub mod upgrade;

pub use config::{
    CompressionLevel, Config, DEFAULT_BUFFER_SIZE, DEFAULT_CLOSE_TIMEOUT, DEFAULT_COMPRESSION_LEVEL,
    DEFAULT_COMPRESSION_PARK_AFTER, DEFAULT_MAX_FRAGMENTS, DEFAULT_PONG_TIMEOUT, DEFAULT_READ_LIMIT,
};
#[cfg(feature = "tokio")]
pub use conn::{
    join_messages, Addrs, Conn, Handle, JoinMessages, MessageReader, MessageWriter, ReadHalf, SocketAddrs, Stream,
    WriteHalf,
};
#[cfg(all(feature = "rustls", any(feature = "tokio", feature = "blocking")))]
pub use dial::TlsRoots;
#[cfg(feature = "tokio")]
pub use dial::{connect, ClientStream};
#[cfg(any(feature = "tokio", feature = "blocking"))]
pub use dial::{CookieJar, Dialer, MemoryCookieJar, Proxy};
#[cfg(feature = "hyper")]
pub use dial::{Http2Connection, Http2Mode};
pub use error::{Cause, CloseError, Error, Result};
pub use handlers::{
    default_close_handler, default_ping_handler, default_pong_handler, CloseHandler, ControlContext, PingPongHandler,
};
pub use message::{Message, MessageType};
pub use pool::{BufferPool, SimpleBufferPool};
pub use prepared::PreparedMessage;
pub use proto::extensions::{DeflateConfig, DeflateParams};
pub use proto::handshake::{is_websocket_upgrade, Rejection};
pub use proto::{CloseCode, CloseFrame, Role};
#[cfg(feature = "tokio")]
pub use shutdown::{Shutdown, ShutdownGuard, ShutdownReport};
pub use upgrade::Upgrader;
#[cfg(feature = "hyper")]
pub use upgrade::{UpgradeRefused, UpgradedStream, Upgrading};

/// The subprotocols a client asks for in `request`, in its order.
pub fn subprotocols<B>(request: &http::Request<B>) -> Vec<&str> {
    proto::handshake::requested_subprotocols(request.headers())
}

/// Guides that go beyond the reference: how to move a program over from
/// another library.
pub mod guide {
    /// Porting from Go's gorilla/websocket: every identifier, the idioms, and
    /// what differs on purpose.
    #[cfg_attr(
        all(feature = "tokio", feature = "hyper"),
        doc = include_str!("../docs/porting-from-gorilla.md")
    )]
    pub mod porting_from_gorilla {}
}

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
