//! The blocking dial: [`connect`] and [`connect_on`] with a [`Dialer`].
//!
//! The dialer decides everything that needs no I/O (the request, the proxy,
//! what the proxy and the server answer, the TLS configuration); this file
//! moves the bytes over `std` streams and keeps the handshake timeout, as one
//! deadline from which every socket timeout is computed.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::Response;

use super::conn::{Conn, Transport};
use super::head_io::read_head;
use super::proxy::tunnel;
use crate::dial::{Answer, Dialer, ProxyKind, Target, BODY_EXCERPT_TIME};
use crate::error::{Error, Result};
use crate::proto::client_handshake::ClientHandshake;
use crate::proto::Role;

/// TLS over TCP, or over TLS to an `https://` proxy.
#[cfg(feature = "rustls")]
type TlsStream = rustls::StreamOwned<rustls::ClientConnection, ClientStream>;

/// A stream a [`TlsConnect`] returns: any `Read + Write + Send`.
pub trait ReadWrite: Read + Write + Send {}

impl<T: Read + Write + Send> ReadWrite for T {}

/// The caller's own TLS step for the blocking dial (gorilla's
/// `NetDialTLSContext`; the async API's is [`crate::dial::TlsConnect`]),
/// set with [`Dialer::blocking_tls_connector`]: wraps the stream the dial
/// opened — to the server, or a tunnel through a proxy — in TLS made by the
/// caller (another TLS library, client certificates, certificate pinning).
///
/// Closures `Fn(&str, ClientStream) -> io::Result<Box<dyn ReadWrite>>`
/// implement it. `host` is the URL's host (the proxy's host for the TLS to
/// an `https://` proxy), for the server name and the certificate check. The
/// socket's read and write timeouts are set from the handshake timeout while
/// it runs. An error fails the dial with [`Error::Tls`], the error as the
/// cause's source.
pub trait TlsConnect: Send + Sync + 'static {
    /// Runs the TLS handshake over `stream` and returns the encrypted stream.
    fn connect(&self, host: &str, stream: ClientStream) -> io::Result<Box<dyn ReadWrite>>;
}

impl<F> TlsConnect for F
where
    F: Fn(&str, ClientStream) -> io::Result<Box<dyn ReadWrite>> + Send + Sync + 'static,
{
    fn connect(&self, host: &str, stream: ClientStream) -> io::Result<Box<dyn ReadWrite>> {
        self(host, stream)
    }
}

impl Dialer {
    /// Makes TLS with `connector` instead of the built-in rustls in the
    /// blocking dial ([`connect`], [`connect_with`]), for `wss://` and for
    /// `https://` proxies; the dialer's [`crate::TlsRoots`] are then unused.
    /// Proxies still apply: the connector gets the tunnel. The async
    /// [`Dialer::connect`] uses [`Dialer::tls_connector`] instead.
    ///
    /// ```no_run
    /// # #[cfg(feature = "rustls")]
    /// # fn run(config: std::sync::Arc<rustls::ClientConfig>) -> Result<(), silverback::Error> {
    /// use silverback::blocking::{ClientStream, ReadWrite};
    /// use silverback::Dialer;
    ///
    /// // `config` has a client certificate, say.
    /// let dialer = Dialer::new().blocking_tls_connector(move |host: &str, stream: ClientStream| {
    ///     let name = rustls::pki_types::ServerName::try_from(host.to_owned())
    ///         .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    ///     let mut tls = rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    ///     let mut stream = stream;
    ///     while tls.is_handshaking() {
    ///         tls.complete_io(&mut stream)?;
    ///     }
    ///     Ok(Box::new(rustls::StreamOwned::new(tls, stream)) as Box<dyn ReadWrite>)
    /// });
    /// let (conn, _) = silverback::blocking::connect(&dialer, "wss://example.com/")?;
    /// # Ok(()) }
    /// ```
    pub fn blocking_tls_connector(mut self, connector: impl TlsConnect) -> Self {
        self.blocking_tls = Some(std::sync::Arc::new(connector));
        self
    }
}

/// Dials `url` (`ws://` or `wss://`) with `dialer` and runs the opening
/// handshake; returns the connection and the server's `101` response.
///
/// As the async [`Dialer::connect`]: the proxy (HTTP `CONNECT`, also inside
/// TLS to an `https://` proxy, SOCKS5, or a [`crate::Proxy::custom`] choice),
/// TLS for `wss://` (feature `rustls`), the dialer's request headers,
/// subprotocols, compression offer and cookies, and the same errors. The
/// handshake timeout bounds the TCP connect (each resolved address in turn),
/// the proxy, TLS and the handshake; the name lookup is left to the system
/// resolver. The stream's timeouts are cleared before the connection is
/// handed over.
///
/// ```no_run
/// # fn run() -> Result<(), silverback::Error> {
/// use silverback::{Dialer, MessageType};
///
/// let dialer = Dialer::new().subprotocols(["chat"]);
/// let (mut conn, response) = silverback::blocking::connect(&dialer, "ws://example.com/socket")?;
/// println!("connected: {}, protocol {:?}", response.status(), conn.subprotocol());
/// conn.write_message(MessageType::Text, "hello")?;
/// let reply = conn.read_message()?;
/// println!("{:?}", reply.as_text());
/// # Ok(()) }
/// ```
pub fn connect(dialer: &Dialer, url: &str) -> Result<(Conn<ClientStream>, Response<()>)> {
    let target = Target::parse(url)?;
    let request = dialer.request(&target)?;
    let deadline = Deadline::after(dialer.handshake_timeout);
    let dial = open(dialer, &target, deadline).and_then(|stream| handshake(dialer, stream, &target, request, deadline));
    deadline.judge(dial)
}

/// Dials as [`connect`] with what `request` says for this call alone, as
/// the async `Dialer::connect_with`: its URI (an absolute `ws://` or
/// `wss://` URL) is dialed, its headers are added to the dialer's, and its
/// `Sec-WebSocket-Protocol` header (comma-separated names) replaces the
/// dialer's subprotocol offer. The method must be `GET`; the handshake's
/// own headers (`Upgrade`, `Connection`, `Sec-WebSocket-Key`,
/// `Sec-WebSocket-Version`, `Sec-WebSocket-Extensions`) fail the dial with
/// [`Error::InvalidRequest`] before connecting.
pub fn connect_with(dialer: &Dialer, request: http::Request<()>) -> Result<(Conn<ClientStream>, Response<()>)> {
    let (dialer, url) = dialer.per_call(request)?;
    connect(&dialer, &url)
}

/// Runs the opening handshake for `url` over a stream that is already
/// connected (gorilla's `NewClient`); no proxy or TLS is added. The
/// handshake timeout bounds it through the stream's timeouts, which are
/// cleared afterwards; without one they are left as they are.
pub fn connect_on<S: Transport>(dialer: &Dialer, stream: S, url: &str) -> Result<(Conn<S>, Response<()>)> {
    let target = Target::parse(url)?;
    let request = dialer.request(&target)?;
    let deadline = Deadline::after(dialer.handshake_timeout);
    deadline.judge(handshake(dialer, stream, &target, request, deadline))
}

/// Opens the transport to `target`: TCP to it or to its proxy, the tunnel,
/// and TLS for `wss://`.
fn open(dialer: &Dialer, target: &Target, deadline: Deadline) -> Result<ClientStream> {
    // The async hooks cannot run here; ignoring them would dial otherwise
    // than the caller asked (without its certificate pinning, say).
    #[cfg(feature = "tokio")]
    if dialer.connect.is_some() {
        return Err(Error::InvalidRequest(
            "Dialer::connect_fn is async: the blocking dial cannot use it (see blocking::connect_on)".into(),
        ));
    }
    let stream = match dialer.proxy.resolve(target)? {
        Some(server) => {
            server.check(target)?;
            let tcp = ClientStream::tcp(connect_tcp(&server.host, server.port, deadline)?);
            let mut stream = match server.kind {
                // TLS to the proxy, checked for the proxy's name; the tunnel
                // runs inside it.
                ProxyKind::HttpsConnect => secure(dialer, &server.host, tcp, deadline)?,
                _ => tcp,
            };
            tunnel(&mut Timed::new(&mut stream, deadline), &server, target)?;
            stream
        }
        None => ClientStream::tcp(connect_tcp(&target.host, target.port, deadline)?),
    };
    if target.tls {
        return secure(dialer, &target.host, stream, deadline);
    }
    Ok(stream)
}

/// TLS for `host` over `stream`: the caller's [`TlsConnect`], or rustls.
fn secure(dialer: &Dialer, host: &str, stream: ClientStream, deadline: Deadline) -> Result<ClientStream> {
    if let Some(connector) = &dialer.blocking_tls {
        let tcp = stream.tcp_stream().try_clone()?;
        let left = deadline.left()?;
        tcp.set_read_timeout(left)?;
        tcp.set_write_timeout(left)?;
        let secured =
            connector.connect(host, stream).map_err(|e| Error::Tls(crate::error::Cause::with_source("", e)))?;
        return Ok(ClientStream { inner: Inner::Custom { stream: secured, tcp } });
    }
    #[cfg(feature = "tokio")]
    if dialer.tls_connector.is_some() {
        return Err(Error::InvalidRequest(
            "Dialer::tls_connector is async: the blocking dial uses Dialer::blocking_tls_connector".into(),
        ));
    }
    #[cfg(feature = "rustls")]
    return tls_connect(dialer, host, stream, deadline).map(ClientStream::tls);
    #[cfg(not(feature = "rustls"))]
    {
        let _ = (host, stream, deadline);
        Err(Error::InvalidUrl(
            "wss:// and https:// proxies need the `rustls` feature or Dialer::blocking_tls_connector".into(),
        ))
    }
}

/// Connects to each address `host` resolves to in turn, until one answers.
fn connect_tcp(host: &str, port: u16, deadline: Deadline) -> Result<TcpStream> {
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        let attempt = match deadline.left()? {
            Some(left) => TcpStream::connect_timeout(&addr, left),
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    let none = || io::Error::new(io::ErrorKind::NotFound, format!("no address found for {host:?}"));
    Err(Error::Io(last.unwrap_or_else(none)))
}

#[cfg(feature = "rustls")]
fn tls_connect(dialer: &Dialer, host: &str, mut tcp: ClientStream, deadline: Deadline) -> Result<TlsStream> {
    let config = crate::dial::client_config(&dialer.tls)?;
    let name = crate::dial::server_name(host)?;
    let mut tls =
        rustls::ClientConnection::new(config, name).map_err(|e| Error::Tls(crate::error::Cause::with_source("", e)))?;
    let mut io = Timed::new(&mut tcp, deadline);
    while tls.is_handshaking() {
        match tls.complete_io(&mut io) {
            Ok((0, 0)) if tls.is_handshaking() => {
                return Err(Error::Tls(crate::error::Cause::new("the TLS handshake stalled")))
            }
            Ok(_) => {}
            Err(e) => return Err(Error::Tls(crate::error::Cause::with_source("", e))),
        }
    }
    Ok(rustls::StreamOwned::new(tls, tcp))
}

/// Sends the request, reads and judges the response, and hands the stream,
/// its timeouts cleared, to a [`Conn`].
fn handshake<S: Transport>(
    dialer: &Dialer,
    mut stream: S,
    target: &Target,
    mut request: ClientHandshake,
    deadline: Deadline,
) -> Result<(Conn<S>, Response<()>)> {
    let answer = {
        let mut io = Timed::new(&mut stream, deadline);
        io.write_all(request.request_bytes())?;
        io.flush()?;
        let outcome = read_head(&mut io, &mut request, usize::MAX)?;
        dialer.answer(target, outcome)?
    };
    match answer {
        Answer::Accepted { config, protocol, response, early } => {
            if deadline.0.is_some() {
                stream.set_read_timeout(None)?;
                stream.set_write_timeout(None)?;
            }
            Ok((Conn::from_raw(stream, Role::Client, config, protocol, &early), response))
        }
        Answer::Refused(mut refusal) => {
            let want = refusal.body_wanted();
            let brief = Deadline(Some(
                deadline.0.map_or(Instant::now() + BODY_EXCERPT_TIME, |at| at.min(Instant::now() + BODY_EXCERPT_TIME)),
            ));
            read_body_excerpt(&mut Timed::new(&mut stream, brief), want, &mut refusal.body);
            Err(refusal.into_error())
        }
    }
}

/// Reads a refusal's body until it holds `want` bytes or the stream stops.
fn read_body_excerpt(stream: &mut impl Read, want: usize, body: &mut BytesMut) {
    let mut buf = [0u8; 1024];
    while body.len() < want {
        let room = (want - body.len()).min(buf.len());
        match stream.read(&mut buf[..room]) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// When the dial must be over, if ever.
#[derive(Clone, Copy, Debug)]
struct Deadline(Option<Instant>);

impl Deadline {
    fn after(timeout: Option<Duration>) -> Self {
        Deadline(timeout.map(|t| Instant::now() + t))
    }

    /// The time left (`None`: no bound), or a timeout error once it is over.
    fn left(self) -> io::Result<Option<Duration>> {
        match self.0 {
            None => Ok(None),
            Some(at) => match at.checked_duration_since(Instant::now()) {
                // Socket timeouts cannot be zero; under a millisecond is rounded up.
                Some(left) if !left.is_zero() => Ok(Some(left.max(Duration::from_millis(1)))),
                _ => Err(io::ErrorKind::TimedOut.into()),
            },
        }
    }

    fn passed(self) -> bool {
        self.0.is_some_and(|at| Instant::now() >= at)
    }

    /// A dial that failed once its time was up failed for that reason,
    /// whatever step it was at (as the async dial's outer timeout decides).
    fn judge<T>(self, result: Result<T>) -> Result<T> {
        match result {
            Err(_) if self.passed() => Err(Error::Timeout),
            other => other,
        }
    }
}

/// A stream whose every read and write waits no longer than the deadline:
/// the socket's timeout is set to the time left before each call.
struct Timed<'a, S: Transport> {
    stream: &'a mut S,
    deadline: Deadline,
}

impl<'a, S: Transport> Timed<'a, S> {
    fn new(stream: &'a mut S, deadline: Deadline) -> Self {
        Timed { stream, deadline }
    }

    /// Runs `op` with the timeout `set` to the time left, again after a wake
    /// before the deadline, until it succeeds, fails otherwise, or time is up.
    fn run<T>(
        &mut self,
        set: fn(&S, Option<Duration>) -> io::Result<()>,
        mut op: impl FnMut(&mut S) -> io::Result<T>,
    ) -> io::Result<T> {
        if self.deadline.0.is_none() {
            return op(self.stream);
        }
        loop {
            set(self.stream, self.deadline.left()?)?;
            match op(self.stream) {
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                other => return other,
            }
        }
    }
}

impl<S: Transport> Read for Timed<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.run(S::set_read_timeout, |s| s.read(buf))
    }
}

impl<S: Transport> Write for Timed<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.run(S::set_write_timeout, |s| s.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.run(S::set_write_timeout, |s| s.flush())
    }
}

/// The stream of a connection opened by [`connect`]: TCP, or TLS over TCP
/// for `wss://` (or over TLS to an `https://` proxy).
pub struct ClientStream {
    inner: Inner,
}

enum Inner {
    Tcp(TcpStream),
    #[cfg(feature = "rustls")]
    Tls(Box<TlsStream>),
    /// A [`TlsConnect`]'s stream, and its socket (for addresses, timeouts
    /// and shutdown).
    Custom {
        stream: Box<dyn ReadWrite>,
        tcp: TcpStream,
    },
}

impl fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_tls() { "tls" } else { "tcp" };
        f.debug_struct("ClientStream").field("kind", &kind).field("peer", &self.peer_addr().ok()).finish()
    }
}

impl ClientStream {
    fn tcp(stream: TcpStream) -> Self {
        ClientStream { inner: Inner::Tcp(stream) }
    }

    #[cfg(feature = "rustls")]
    fn tls(stream: TlsStream) -> Self {
        ClientStream { inner: Inner::Tls(Box::new(stream)) }
    }

    /// The TCP stream under the connection (under TLS too): to the server,
    /// or to the proxy when one is used. Reading or writing it directly
    /// corrupts the connection.
    pub fn tcp_stream(&self) -> &TcpStream {
        match &self.inner {
            Inner::Tcp(s) => s,
            #[cfg(feature = "rustls")]
            Inner::Tls(s) => s.get_ref().tcp_stream(),
            Inner::Custom { tcp, .. } => tcp,
        }
    }

    /// The TLS session, when the connection is encrypted by the built-in
    /// rustls (its protocol version, the server's certificates, …): the one
    /// with the server for `wss://`, the one with the proxy for `ws://`
    /// through an `https://` proxy. `None` under a [`TlsConnect`]'s TLS.
    #[cfg(feature = "rustls")]
    pub fn tls_connection(&self) -> Option<&rustls::ClientConnection> {
        match &self.inner {
            Inner::Tls(s) => Some(&s.conn),
            _ => None,
        }
    }

    /// True when the connection is encrypted with TLS (the built-in one or
    /// a [`TlsConnect`]'s).
    pub fn is_tls(&self) -> bool {
        !matches!(self.inner, Inner::Tcp(_))
    }

    /// The local socket address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp_stream().local_addr()
    }

    /// The address of the TCP peer: the server, or the proxy when one is used.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp_stream().peer_addr()
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Tcp(s) => s.read(buf),
            #[cfg(feature = "rustls")]
            Inner::Tls(s) => s.read(buf),
            Inner::Custom { stream, .. } => stream.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Tcp(s) => s.write(buf),
            #[cfg(feature = "rustls")]
            Inner::Tls(s) => s.write(buf),
            Inner::Custom { stream, .. } => stream.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Tcp(s) => s.write_vectored(bufs),
            #[cfg(feature = "rustls")]
            Inner::Tls(s) => s.write_vectored(bufs),
            Inner::Custom { stream, .. } => stream.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Tcp(s) => s.flush(),
            #[cfg(feature = "rustls")]
            Inner::Tls(s) => s.flush(),
            Inner::Custom { stream, .. } => stream.flush(),
        }
    }
}

impl Transport for ClientStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp_stream().set_read_timeout(timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp_stream().set_write_timeout(timeout)
    }

    fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        match &mut self.inner {
            Inner::Tcp(s) => Transport::shutdown(s, how),
            #[cfg(feature = "rustls")]
            Inner::Tls(s) => Transport::shutdown(&mut **s, how),
            Inner::Custom { stream, tcp } => {
                let _ = stream.flush();
                tcp.shutdown(how)
            }
        }
    }
}
