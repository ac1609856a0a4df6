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
    if target.tls && cfg!(not(feature = "rustls")) {
        return Err(Error::InvalidUrl("wss:// needs the `rustls` feature".into()));
    }
    let stream = match dialer.proxy.resolve(target)? {
        Some(server) => {
            server.check(target)?;
            let tcp = connect_tcp(&server.host, server.port, deadline)?;
            let mut stream = match server.kind {
                // TLS to the proxy, checked for the proxy's name; the tunnel
                // runs inside it.
                #[cfg(feature = "rustls")]
                ProxyKind::HttpsConnect => {
                    ClientStream::tls(tls_connect(dialer, &server.host, ClientStream::tcp(tcp), deadline)?)
                }
                #[cfg(not(feature = "rustls"))]
                ProxyKind::HttpsConnect => {
                    return Err(Error::InvalidUrl("https:// proxies need the `rustls` feature".into()))
                }
                _ => ClientStream::tcp(tcp),
            };
            tunnel(&mut Timed::new(&mut stream, deadline), &server, target)?;
            stream
        }
        None => ClientStream::tcp(connect_tcp(&target.host, target.port, deadline)?),
    };
    #[cfg(feature = "rustls")]
    if target.tls {
        return tls_connect(dialer, &target.host, stream, deadline).map(ClientStream::tls);
    }
    Ok(stream)
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
        }
    }

    /// The TLS session, when the connection is encrypted (its protocol
    /// version, the server's certificates, …): the one with the server for
    /// `wss://`, the one with the proxy for `ws://` through an `https://`
    /// proxy.
    #[cfg(feature = "rustls")]
    pub fn tls_connection(&self) -> Option<&rustls::ClientConnection> {
        match &self.inner {
            Inner::Tcp(_) => None,
            Inner::Tls(s) => Some(&s.conn),
        }
    }

    /// True when the connection is encrypted with TLS.
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
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Tcp(s) => s.write(buf),
            #[cfg(feature = "rustls")]
            Inner::Tls(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Tcp(s) => s.write_vectored(bufs),
            #[cfg(feature = "rustls")]
            Inner::Tls(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Tcp(s) => s.flush(),
            #[cfg(feature = "rustls")]
            Inner::Tls(s) => s.flush(),
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
        }
    }
}
