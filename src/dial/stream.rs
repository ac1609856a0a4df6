//! The stream under a client connection: plain TCP, TLS, or the caller's own.

use std::fmt;
use std::io;
use std::net::SocketAddr;
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
///
/// Its addresses ([`crate::SocketAddrs`], and so [`crate::Conn::local_addr`]
/// and [`crate::Conn::remote_addr`]) are those of the TCP connection the
/// dialer opened, under any TLS and tunnel: to the server, or to the proxy
/// when one is used. A stream from a custom connect function
/// ([`crate::Dialer::connect_fn`]) or of an HTTP/2 connection has none
/// (an `Unsupported` error).
pub struct ClientStream {
    inner: Inner,
    /// A stream of an HTTP/2 connection (RFC 8441).
    http2: bool,
    /// Encrypted by something other than `Inner`'s own TLS: a custom TLS
    /// connector, or the TLS of an HTTP/2 connection.
    tls_outside: bool,
    /// The local and peer addresses of the TCP connection, when known.
    addrs: Option<(SocketAddr, SocketAddr)>,
}

enum Inner {
    Tcp(TcpStream),
    Boxed(BoxedStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<BoxedStream>>),
    /// native-tls by default (with rustls built in, native-tls is used
    /// through a connector only).
    #[cfg(feature = "native-tls")]
    #[cfg_attr(feature = "tls", allow(dead_code))]
    NativeTls(Box<tokio_native_tls::TlsStream<BoxedStream>>),
}

impl fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner {
            Inner::Tcp(_) => "tcp",
            Inner::Boxed(_) => "custom",
            #[cfg(feature = "tls")]
            Inner::Tls(_) => "tls",
            #[cfg(feature = "native-tls")]
            Inner::NativeTls(_) => "native-tls",
        };
        f.debug_struct("ClientStream").field("kind", &kind).field("http2", &self.http2).finish()
    }
}

impl ClientStream {
    fn new(inner: Inner) -> Self {
        ClientStream { inner, http2: false, tls_outside: false, addrs: None }
    }

    pub(crate) fn tcp(stream: TcpStream) -> Self {
        let addrs = stream.local_addr().ok().zip(stream.peer_addr().ok());
        ClientStream { addrs, ..Self::new(Inner::Tcp(stream)) }
    }

    pub(crate) fn boxed(stream: BoxedStream) -> Self {
        Self::new(Inner::Boxed(stream))
    }

    /// A WebSocket on a stream of an HTTP/2 connection.
    #[cfg(feature = "hyper")]
    pub(crate) fn http2(stream: BoxedStream, tls: bool) -> Self {
        ClientStream { http2: true, tls_outside: tls, ..Self::new(Inner::Boxed(stream)) }
    }

    /// The addresses of the TCP connection under this stream, for a stream
    /// layered on it.
    pub(crate) fn addrs(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.addrs
    }

    /// A stream encrypted by a custom TLS connector, over a connection with
    /// these addresses.
    pub(crate) fn custom_tls(stream: BoxedStream, addrs: Option<(SocketAddr, SocketAddr)>) -> Self {
        ClientStream { tls_outside: true, addrs, ..Self::new(Inner::Boxed(stream)) }
    }

    /// A stream encrypted with native-tls.
    #[cfg(feature = "native-tls")]
    #[cfg_attr(feature = "tls", allow(dead_code))]
    pub(crate) fn native_tls(
        stream: tokio_native_tls::TlsStream<BoxedStream>,
        addrs: Option<(SocketAddr, SocketAddr)>,
    ) -> Self {
        ClientStream { addrs, ..Self::new(Inner::NativeTls(Box::new(stream))) }
    }

    /// True for a WebSocket carried by a stream of an HTTP/2 connection
    /// (RFC 8441).
    pub fn is_http2(&self) -> bool {
        self.http2
    }

    #[cfg(feature = "tls")]
    pub(crate) fn tls(
        stream: tokio_rustls::client::TlsStream<BoxedStream>,
        addrs: Option<(SocketAddr, SocketAddr)>,
    ) -> Self {
        ClientStream { addrs, ..Self::new(Inner::Tls(Box::new(stream))) }
    }

    /// Turns a stream into a boxed one, for layering TLS on it.
    pub(crate) fn into_boxed(self) -> BoxedStream {
        match self.inner {
            Inner::Tcp(s) => Box::new(s),
            Inner::Boxed(s) => s,
            #[cfg(feature = "tls")]
            Inner::Tls(s) => Box::new(s),
            #[cfg(feature = "native-tls")]
            Inner::NativeTls(s) => Box::new(s),
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

    /// True when the connection is encrypted with TLS (rustls,
    /// native-tls, or a custom TLS connector).
    pub fn is_tls(&self) -> bool {
        if self.tls_outside {
            return true;
        }
        match &self.inner {
            #[cfg(feature = "tls")]
            Inner::Tls(_) => true,
            #[cfg(feature = "native-tls")]
            Inner::NativeTls(_) => true,
            _ => false,
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.get_mut().inner {
            Inner::Tcp($s) => $e,
            Inner::Boxed($s) => $e,
            #[cfg(feature = "tls")]
            Inner::Tls($s) => $e,
            #[cfg(feature = "native-tls")]
            Inner::NativeTls($s) => $e,
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
            #[cfg(feature = "native-tls")]
            Inner::NativeTls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// The addresses of the TCP connection the dialer opened (to the server,
/// or to the proxy), under any TLS or tunnel.
impl crate::conn::SocketAddrs for ClientStream {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.addrs.map(|(local, _)| local).ok_or_else(unknown_addr)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.addrs.map(|(_, peer)| peer).ok_or_else(unknown_addr)
    }
}

fn unknown_addr() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "address not known for this stream")
}
