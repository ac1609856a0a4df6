//! The async dial (feature `tokio`): [`connect`], [`Dialer::connect`],
//! [`Dialer::connect_on`] and custom connect functions.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::proxy::ProxyKind;
use super::stream::{BoxedStream, ClientStream};
use super::target::Target;
use super::{tunnel, Answer, Dialer, BODY_EXCERPT_TIME};
use crate::conn::{Conn, Stream};
use crate::error::{Error, Result};
use crate::handshake_io::read_head;
use crate::proto::client_handshake::ClientHandshake;
use crate::proto::Role;

#[cfg(feature = "hyper")]
pub(crate) use super::http2::Alpn;
#[cfg(feature = "hyper")]
use super::http2::Http2Mode;

/// What a TLS dial offers by ALPN (nothing without HTTP/2 support).
#[cfg(not(feature = "hyper"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alpn {
    None,
}

#[cfg(not(feature = "hyper"))]
impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

/// Opens the transport to a host and port: the target, or the proxy when one
/// is used. Returns any stream.
pub type ConnectFn =
    Arc<dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = io::Result<BoxedStream>> + Send>> + Send + Sync>;

/// Dials `url` with [`Dialer::from_env`] (gorilla's `DefaultDialer`: the
/// proxy from the environment, a 45 s handshake timeout).
pub async fn connect(url: &str) -> Result<(Conn<ClientStream>, Response<()>)> {
    Dialer::from_env().connect(url).await
}

impl Dialer {
    /// Opens the transport with `connect` instead of a TCP connection. With a
    /// proxy, it is asked for the proxy's address. Async dials only.
    pub fn connect_fn<F, Fut>(mut self, connect: F) -> Self
    where
        F: Fn(String, u16) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<BoxedStream>> + Send + 'static,
    {
        self.connect = Some(Arc::new(move |host, port| Box::pin(connect(host, port))));
        self
    }

    /// Dials `url` (`ws://` or `wss://`) and runs the opening handshake.
    /// Returns the connection and the server's `101` response.
    ///
    /// Cancel safety: not cancel-safe; dropped part way, the connection
    /// being opened is dropped.
    pub async fn connect(&self, url: &str) -> Result<(Conn<ClientStream>, Response<()>)> {
        let target = Target::parse(url)?;
        let request = self.request(&target)?;
        // Boxed, so that the short-lived dialing state does not stay in the
        // caller's future for the life of the connection.
        let dial = Box::pin(async {
            #[cfg(feature = "hyper")]
            if let Some(answer) = self.dial_http2(&target).await? {
                return answer;
            }
            let stream = self.open(&target, Alpn::None).await?;
            self.handshake(stream, &target, request).await
        });
        match self.handshake_timeout {
            Some(limit) => tokio::time::timeout(limit, dial).await.unwrap_or(Err(Error::Timeout)),
            None => dial.await,
        }
    }

    /// Dials as [`Dialer::connect`] with what `request` says for this call
    /// alone: its URI (an absolute `ws://` or `wss://` URL) is dialed, its
    /// headers are added to the dialer's, and a `Sec-WebSocket-Protocol`
    /// header in it (one or more, comma-separated names) replaces the
    /// dialer's subprotocol offer (the names of all such headers, in
    /// order). The request's method must be `GET`; its version is not
    /// used. The headers the handshake writes itself are refused as with
    /// [`Dialer::header`]: `Upgrade`, `Connection`, `Sec-WebSocket-Key`,
    /// `Sec-WebSocket-Version` and `Sec-WebSocket-Extensions` fail the dial
    /// with [`Error::InvalidRequest`] before connecting.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), silverback::Error> {
    /// let dialer = silverback::Dialer::new();
    /// let request = http::Request::get("wss://example.com/chat")
    ///     .header("Authorization", "Bearer abc")
    ///     .header("Sec-WebSocket-Protocol", "chat.v2, chat.v1")
    ///     .body(())
    ///     .unwrap();
    /// let (conn, _) = dialer.connect_with(request).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Cancel safety: as [`Dialer::connect`].
    pub async fn connect_with(&self, request: http::Request<()>) -> Result<(Conn<ClientStream>, Response<()>)> {
        let (dialer, url) = self.per_call(request)?;
        dialer.connect(&url).await
    }

    /// Runs the opening handshake for `url` over a stream that is already
    /// connected (gorilla's `NewClient`); no proxy or TLS is added.
    ///
    /// Cancel safety: not cancel-safe; dropped part way, `stream` is dropped.
    pub async fn connect_on<S: Stream>(&self, stream: S, url: &str) -> Result<(Conn<S>, Response<()>)> {
        let target = Target::parse(url)?;
        let request = self.request(&target)?;
        let handshake = Box::pin(self.handshake(stream, &target, request));
        match self.handshake_timeout {
            Some(limit) => tokio::time::timeout(limit, handshake).await.unwrap_or(Err(Error::Timeout)),
            None => handshake.await,
        }
    }

    async fn open_transport(&self, host: &str, port: u16) -> Result<ClientStream> {
        match &self.connect {
            Some(connect) => Ok(ClientStream::boxed(connect(host.to_owned(), port).await?)),
            None => {
                let stream = TcpStream::connect((host, port)).await?;
                let _ = stream.set_nodelay(true);
                Ok(ClientStream::tcp(stream))
            }
        }
    }

    /// Dials as the HTTP/2 mode says: `Some` with the outcome when the
    /// dial was made (over HTTP/2, or over HTTP/1.1 on a connection that
    /// ALPN settled), `None` to dial over HTTP/1.1 as usual.
    #[cfg(feature = "hyper")]
    async fn dial_http2(&self, target: &Target) -> Result<Option<Result<(Conn<ClientStream>, Response<()>)>>> {
        let alpn = match (self.http2, target.tls) {
            (Http2Mode::Off, _) | (Http2Mode::Prefer, false) => return Ok(None),
            (Http2Mode::Prefer, true) => Alpn::H2OrHttp1,
            (Http2Mode::Only, _) => Alpn::H2,
        };
        let stream = self.open(target, alpn).await?;
        if target.tls && !stream.alpn_is_h2() {
            if self.http2 == Http2Mode::Only {
                return Err(Error::Http2(crate::error::Cause::new("the server did not choose h2 by ALPN")));
            }
            // The server chose HTTP/1.1 on this connection.
            return Ok(Some(self.handshake(stream, target, self.request(target)?).await));
        }
        match self.start_http2(stream, target).await? {
            Some(connection) => Ok(Some(connection.open_target(target).await)),
            None if self.http2 == Http2Mode::Only => Err(super::http2::no_extended_connect()),
            // HTTP/2 without WebSockets: HTTP/1.1 on a new connection.
            None => {
                let stream = self.open(target, Alpn::None).await?;
                Ok(Some(self.handshake(stream, target, self.request(target)?).await))
            }
        }
    }

    pub(crate) async fn open(&self, target: &Target, alpn: Alpn) -> Result<ClientStream> {
        let mut stream = match self.proxy.resolve(target)? {
            Some(server) => {
                server.check(target)?;
                let mut stream = self.open_transport(&server.host, server.port).await?;
                if server.kind == ProxyKind::HttpsConnect {
                    // TLS to the proxy, checked for the proxy's name; the
                    // tunnel runs inside it.
                    stream = self.wrap_tls(&server.host, stream, &[]).await?;
                }
                tunnel::tunnel(&mut stream, &server, target).await?;
                stream
            }
            None => self.open_transport(&target.host, target.port).await?,
        };
        if target.tls {
            stream = self.wrap_tls(&target.host, stream, &alpn.protocols()).await?;
        }
        Ok(stream)
    }

    async fn handshake<S: Stream>(
        &self,
        mut stream: S,
        target: &Target,
        mut handshake: ClientHandshake,
    ) -> Result<(Conn<S>, Response<()>)> {
        stream.write_all(handshake.request_bytes()).await?;
        stream.flush().await?;
        let outcome = read_head(&mut stream, &mut handshake, usize::MAX).await?;
        match self.answer(target, outcome)? {
            Answer::Accepted { config, protocol, response, early } => {
                Ok((Conn::from_raw(stream, Role::Client, config, protocol, early), response))
            }
            Answer::Refused(mut refusal) => {
                let want = refusal.body_wanted();
                read_body_excerpt(&mut stream, want, &mut refusal.body).await;
                Err(refusal.into_error())
            }
        }
    }
}

/// Reads a refusal's body until it holds `want` bytes, briefly: the excerpt
/// is for the error message only.
async fn read_body_excerpt<S: Stream>(stream: &mut S, want: usize, body: &mut BytesMut) {
    let read = async {
        while body.len() < want {
            body.reserve(want - body.len());
            match stream.read_buf(body).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(BODY_EXCERPT_TIME, read).await;
}
