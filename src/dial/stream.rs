//! The stream under a client connection: plain TCP, TLS, or the caller's own.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Any stream a custom connect function returns.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncStream for T {}

/// A boxed stream from a custom connect function.
pub type BoxedStream = Box<dyn AsyncStream>;

/// The stream of a connection opened by [`crate::Dialer`].
pub struct ClientStream {
    inner: Inner,
    /// A stream of an HTTP/2 connection (RFC 8441).
    http2: bool,
    /// An HTTP/2 stream whose connection is encrypted.
    http2_tls: bool,
}

enum Inner {
    Tcp(TcpStream),
    Boxed(BoxedStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<BoxedStream>>),
}

impl fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner {
            Inner::Tcp(_) => "tcp",
            Inner::Boxed(_) => "custom",
            #[cfg(feature = "tls")]
            Inner::Tls(_) => "tls",
        };
        f.debug_struct("ClientStream").field("kind", &kind).field("http2", &self.http2).finish()
    }
}

impl ClientStream {
    pub(crate) fn tcp(stream: TcpStream) -> Self {
        ClientStream { inner: Inner::Tcp(stream), http2: false, http2_tls: false }
    }

    pub(crate) fn boxed(stream: BoxedStream) -> Self {
        ClientStream { inner: Inner::Boxed(stream), http2: false, http2_tls: false }
    }

    /// A WebSocket on a stream of an HTTP/2 connection.
    #[cfg(feature = "hyper")]
    pub(crate) fn http2(stream: BoxedStream, tls: bool) -> Self {
        ClientStream { inner: Inner::Boxed(stream), http2: true, http2_tls: tls }
    }

    /// True for a WebSocket carried by a stream of an HTTP/2 connection
    /// (RFC 8441).
    pub fn is_http2(&self) -> bool {
        self.http2
    }

    #[cfg(feature = "tls")]
    pub(crate) fn tls(stream: tokio_rustls::client::TlsStream<BoxedStream>) -> Self {
        ClientStream { inner: Inner::Tls(Box::new(stream)), http2: false, http2_tls: false }
    }

    /// Turns a plain stream into a boxed one, for layering TLS on it.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn into_boxed(self) -> BoxedStream {
        match self.inner {
            Inner::Tcp(s) => Box::new(s),
            Inner::Boxed(s) => s,
            #[cfg(feature = "tls")]
            Inner::Tls(s) => Box::new(s),
        }
    }

    /// The TCP stream, when the connection is plain TCP.
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match &self.inner {
            Inner::Tcp(s) => Some(s),
            _ => None,
        }
    }

    /// Whether TLS settled on HTTP/2 (ALPN `h2`).
    #[cfg(feature = "hyper")]
    pub(crate) fn alpn_is_h2(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Inner::Tls(s) = &self.inner {
            return s.get_ref().1.alpn_protocol() == Some(b"h2");
        }
        false
    }

    /// True when the connection is encrypted with TLS.
    pub fn is_tls(&self) -> bool {
        if self.http2_tls {
            return true;
        }
        #[cfg(feature = "tls")]
        if let Inner::Tls(_) = &self.inner {
            return true;
        }
        false
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.get_mut().inner {
            Inner::Tcp($s) => $e,
            Inner::Boxed($s) => $e,
            #[cfg(feature = "tls")]
            Inner::Tls($s) => $e,
        }
    };
}

impl AsyncRead for ClientStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Tcp(s) => s.is_write_vectored(),
            Inner::Boxed(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Inner::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

impl crate::conn::SocketAddrs for ClientStream {
    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match &self.inner {
            Inner::Tcp(s) => s.local_addr(),
            _ => Err(io::Error::new(io::ErrorKind::Unsupported, "address not known for this stream")),
        }
    }

    fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        match &self.inner {
            Inner::Tcp(s) => s.peer_addr(),
            _ => Err(io::Error::new(io::ErrorKind::Unsupported, "address not known for this stream")),
        }
    }
}
