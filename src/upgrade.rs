//! The server side of the opening handshake: [`Upgrader`].
//!
//! Two ways in. [`Upgrader::accept`] takes a raw stream (a `TcpStream`, a TLS
//! stream), reads and checks the HTTP/1.1 request itself within the handshake
//! timeout, and answers it. [`Upgrader::upgrade`] serves a request that hyper
//! 1.x (or a framework on it) has already parsed: it returns the `101`
//! response for hyper to send, and a future that yields the [`Conn`] once hyper
//! hands over the upgraded stream.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
#[cfg(feature = "tokio")]
use http::header::HeaderMap;
use http::{Request, Response};
#[cfg(feature = "tokio")]
use tokio::io::AsyncWriteExt;

use crate::config::Config;
#[cfg(feature = "tokio")]
use crate::conn::{Conn, Stream};
use crate::error::Error;
#[cfg(feature = "tokio")]
use crate::error::Result;
#[cfg(feature = "tokio")]
use crate::handshake_io::read_head;
use crate::proto::extensions::DeflateConfig;
use crate::proto::handshake::Rejection;
use crate::proto::head::HeadLimits;
#[cfg(feature = "tokio")]
use crate::proto::server_handshake::ServerHandshake;
use crate::proto::server_handshake::{Accepted, Refusal, ServerPolicy};
#[cfg(feature = "tokio")]
use crate::proto::Role;

pub use crate::proto::server_handshake::{CheckOrigin, CompressionSelector, ErrorResponder, SubprotocolSelector};

/// The default time [`Upgrader::accept`] allows for the whole handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default bound on the request head (request line and headers), in bytes.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024;
/// The default bound on the number of request headers.
pub const DEFAULT_MAX_HEADERS: usize = 64;

/// Upgrades HTTP requests to WebSocket connections (gorilla's `Upgrader`).
///
/// Cheap to clone and safe to share between tasks.
///
/// ```no_run
/// # async fn run() -> Result<(), silverback::Error> {
/// use silverback::Upgrader;
///
/// let upgrader = Upgrader::new().subprotocols(["chat"]);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// loop {
///     let (stream, _) = listener.accept().await?;
///     let upgrader = upgrader.clone();
///     tokio::spawn(async move {
///         let mut conn = upgrader.accept(stream).await?;
///         while let Ok(msg) = conn.read_message().await {
///             conn.write_message(msg.kind, &msg.data).await?;
///         }
///         Ok::<_, silverback::Error>(())
///     });
/// }
/// # }
/// ```
///
/// Cloning is cheap (the options are shared), so each connection's task can
/// hold its own `Upgrader`; changing a clone's options leaves the others as
/// they were.
#[derive(Clone, Default)]
pub struct Upgrader {
    options: Arc<UpgraderOptions>,
}

#[derive(Clone)]
struct UpgraderOptions {
    config: Config,
    policy: ServerPolicy,
    handshake_timeout: Option<Duration>,
    max_request_bytes: usize,
    max_headers: usize,
}

impl Default for UpgraderOptions {
    fn default() -> Self {
        UpgraderOptions {
            config: Config::default(),
            policy: ServerPolicy::default(),
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

impl fmt::Debug for Upgrader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgrader")
            .field("config", &self.options.config)
            .field("subprotocols", &self.options.policy.subprotocols)
            .field("custom_select_subprotocol", &self.options.policy.select_subprotocol.is_some())
            .field("custom_compression_for", &self.options.policy.compression_for.is_some())
            .field("custom_error", &self.options.policy.error.is_some())
            .field("custom_check_origin", &self.options.policy.check_origin.is_some())
            .field("compression", &self.options.policy.compression)
            .field("handshake_timeout", &self.options.handshake_timeout)
            .field("max_request_bytes", &self.options.max_request_bytes)
            .field("max_headers", &self.options.max_headers)
            .finish()
    }
}

impl Upgrader {
    /// The options, to change: copied first if other clones share them.
    fn options_mut(&mut self) -> &mut UpgraderOptions {
        Arc::make_mut(&mut self.options)
    }

    fn config_mut(&mut self) -> &mut Config {
        &mut self.options_mut().config
    }

    crate::config::connection_options!();

    /// An upgrader with the defaults: 4 KiB buffers, no subprotocols, the
    /// same-origin policy, a 10 s handshake timeout for [`Upgrader::accept`],
    /// a 64 MiB read limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// The subprotocols this server speaks. The first protocol in the client's
    /// list that is also in this one is chosen; none in common means no
    /// `Sec-WebSocket-Protocol` in the response. Only RFC 7230 tokens (the
    /// names a client may send) can be chosen: any other entry never is.
    /// To decide per request, see [`Upgrader::select_subprotocol`].
    pub fn subprotocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.options_mut().policy.subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Chooses the subprotocol per request, in place of the fixed list of
    /// [`Upgrader::subprotocols`]: `select` sees the request (path, query,
    /// headers) and the subprotocols the client offered, in its order (only
    /// valid names; it is not called when the client offered none), and
    /// returns the one to answer with, or `None` for no
    /// `Sec-WebSocket-Protocol` in the response. A choice the client did not
    /// offer is never sent: the handshake is refused with 500 instead.
    /// Applies to [`Upgrader::accept`], [`Upgrader::upgrade`] (hyper) and the
    /// axum extractor alike;
    /// [`Conn::subprotocol`](crate::Conn::subprotocol) reports the choice.
    ///
    /// ```
    /// use silverback::Upgrader;
    ///
    /// // `/ws?v=2` prefers the newer protocol; other paths take the client's first.
    /// let upgrader = Upgrader::new().select_subprotocol(|request, offered| {
    ///     let wanted = if request.uri().query() == Some("v=2") { "chat.v2" } else { "chat.v1" };
    ///     offered.iter().find(|p| **p == wanted).or(offered.first()).map(|p| p.to_string())
    /// });
    /// ```
    pub fn select_subprotocol<F, P>(mut self, select: F) -> Self
    where
        F: Fn(&Request<()>, &[&str]) -> Option<P> + Send + Sync + 'static,
        P: Into<String>,
    {
        self.options_mut().policy.select_subprotocol =
            Some(Arc::new(move |request: &Request<()>, offered: &[&str]| select(request, offered).map(Into::into)));
        self
    }

    /// Decides permessage-deflate per request, in place of
    /// [`Upgrader::compression`] / [`Upgrader::enable_compression`]: `decide`
    /// sees the request and returns `None` to decline compression for it, or
    /// the configuration to negotiate with (window bits, context takeover) —
    /// say, off for a user agent with a broken implementation, or small
    /// windows for mobile clients. A client that offers no compression gets
    /// none either way. Applies to [`Upgrader::accept`], [`Upgrader::upgrade`]
    /// (hyper) and the axum extractor alike.
    ///
    /// ```
    /// use silverback::{DeflateConfig, Upgrader};
    ///
    /// let upgrader = Upgrader::new().compression_for(|request| {
    ///     let agent = request.headers().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("");
    ///     if agent.contains("BrokenDeflate/1.0") {
    ///         None
    ///     } else if agent.contains("Mobile") {
    ///         Some(DeflateConfig { server_max_window_bits: 10, client_max_window_bits: 10, ..Default::default() })
    ///     } else {
    ///         Some(DeflateConfig::default())
    ///     }
    /// });
    /// ```
    pub fn compression_for<F>(mut self, decide: F) -> Self
    where
        F: Fn(&Request<()>) -> Option<DeflateConfig> + Send + Sync + 'static,
    {
        self.options_mut().policy.compression_for = Some(Arc::new(decide));
        self
    }

    /// Builds the HTTP response for a refused handshake. The default answers
    /// with the status, `Sec-WebSocket-Version: 13` and the reason as a
    /// plain-text body.
    pub fn error<F>(mut self, responder: F) -> Self
    where
        F: Fn(&Rejection) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.options_mut().policy.error = Some(Arc::new(responder));
        self
    }

    /// Decides which origins may connect (false → 403). The default refuses a
    /// request whose `Origin` header is present and names another host than
    /// `Host`, which stops other sites' pages from using a browser's
    /// credentials against this server.
    pub fn check_origin<F>(mut self, check: F) -> Self
    where
        F: Fn(&Request<()>) -> bool + Send + Sync + 'static,
    {
        self.options_mut().policy.check_origin = Some(Arc::new(check));
        self
    }

    /// Accepts permessage-deflate (RFC 7692) when a client offers it, with
    /// context takeover both ways when the client allows it and 32 KiB
    /// windows. Off by default. To decide per request, see
    /// [`Upgrader::compression_for`].
    pub fn enable_compression(mut self, enable: bool) -> Self {
        let policy = &mut self.options_mut().policy;
        policy.compression = enable.then(|| policy.compression.unwrap_or_default());
        self
    }

    /// Accepts permessage-deflate with these limits: ask for no context
    /// takeover or smaller windows in either direction (less memory per
    /// connection, a lower ratio).
    pub fn compression(mut self, config: DeflateConfig) -> Self {
        self.options_mut().policy.compression = Some(config);
        self
    }

    /// Bounds the whole handshake of [`Upgrader::accept`], from the first byte
    /// read to the response written; `None` removes the bound.
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options_mut().handshake_timeout = timeout;
        self
    }

    /// The largest request head [`Upgrader::accept`] reads (431 beyond).
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.options_mut().max_request_bytes = bytes.max(64);
        self
    }

    /// The most request headers [`Upgrader::accept`] accepts (431 beyond).
    pub fn max_headers(mut self, count: usize) -> Self {
        self.options_mut().max_headers = count.max(1);
        self
    }

    /// The server's handshake rules, for the blocking accept.
    #[cfg_attr(not(feature = "blocking"), allow(dead_code))]
    pub(crate) fn policy(&self) -> &ServerPolicy {
        &self.options.policy
    }

    /// The bounds on the request head.
    #[cfg_attr(not(feature = "blocking"), allow(dead_code))]
    pub(crate) fn head_limits(&self) -> HeadLimits {
        HeadLimits { max_bytes: self.options.max_request_bytes, max_headers: self.options.max_headers }
    }

    /// How long an accept may take.
    #[cfg_attr(not(feature = "blocking"), allow(dead_code))]
    pub(crate) fn accept_timeout(&self) -> Option<Duration> {
        self.options.handshake_timeout
    }

    /// The settings of a connection accepted with `accepted`.
    #[cfg_attr(not(feature = "blocking"), allow(dead_code))]
    pub(crate) fn config_for(&self, accepted: &Accepted) -> Config {
        let mut config = self.options.config.clone();
        config.deflate = accepted.deflate;
        config
    }
}

#[cfg(feature = "tokio")]
impl Upgrader {
    /// Reads the opening handshake from `stream`, answers it, and returns the
    /// connection. A bad request is answered with 400, 403, 405, 426 or 431 and
    /// a plain-text reason, then the stream is shut down and
    /// [`Error::RequestRefused`] returned — after reading and discarding what
    /// the client still sends until it closes (at most 1 s and 64 KiB), so
    /// that the response is not lost to a TCP reset. Bytes the client sends
    /// right after its request are kept for the connection.
    ///
    /// Cancel safety: not cancel-safe; dropped part way, the stream (and
    /// the handshake with it) is dropped.
    pub async fn accept<S: Stream>(&self, stream: S) -> Result<Conn<S>> {
        self.accept_with(stream, |_| Ok(HeaderMap::new())).await
    }

    /// Like [`Upgrader::accept`], with a callback that sees the request
    /// (path, cookies, authorization) before it is accepted and returns extra
    /// response headers, or a rejection to answer instead.
    ///
    /// A `Sec-WebSocket-Protocol` among the headers chooses the subprotocol in
    /// place of [`Upgrader::subprotocols`]: it must name one subprotocol that
    /// the client requested. The headers the handshake writes itself
    /// (`Upgrade`, `Connection`, `Sec-WebSocket-Accept`,
    /// `Sec-WebSocket-Extensions`) may not be given. Breaking either rule
    /// answers 500 and fails with [`Error::RequestRefused`].
    ///
    /// Cancel safety: as [`Upgrader::accept`].
    pub async fn accept_with<S, F>(&self, stream: S, callback: F) -> Result<Conn<S>>
    where
        S: Stream,
        F: FnOnce(&Request<()>) -> std::result::Result<HeaderMap, Rejection>,
    {
        // The handshake's state is large and short-lived: boxed, it is freed
        // when the handshake ends instead of staying in the caller's future
        // (often the task that serves the connection for its whole life).
        Box::pin(self.upgrade_stream(stream, callback)).await
    }

    async fn upgrade_stream<S, F>(&self, mut stream: S, callback: F) -> Result<Conn<S>>
    where
        S: Stream,
        F: FnOnce(&Request<()>) -> std::result::Result<HeaderMap, Rejection>,
    {
        let handshake = self.handshake(&mut stream, callback);
        let outcome = match self.options.handshake_timeout {
            Some(limit) => tokio::time::timeout(limit, handshake).await.unwrap_or(Err(Error::Timeout)),
            None => handshake.await,
        };
        match outcome {
            Ok(accepted) => Ok(self.conn(stream, accepted)),
            Err(e @ Error::RequestRefused { .. }) => {
                linger(&mut stream).await;
                Err(e)
            }
            Err(e) => {
                let _ = stream.shutdown().await;
                Err(e)
            }
        }
    }

    /// Reads the request into the sans-IO handshake and writes its answer.
    async fn handshake<S, F>(&self, stream: &mut S, callback: F) -> Result<Accepted>
    where
        S: Stream,
        F: FnOnce(&Request<()>) -> std::result::Result<HeaderMap, Rejection>,
    {
        let limits = HeadLimits { max_bytes: self.options.max_request_bytes, max_headers: self.options.max_headers };
        let mut handshake = ServerHandshake::new(&self.options.policy, limits, callback);
        match read_head(stream, &mut handshake, usize::MAX).await? {
            None => Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Some(Ok(accepted)) => {
                stream.write_all(&accepted.response_bytes()).await?;
                stream.flush().await?;
                Ok(accepted)
            }
            Some(Err(refusal)) => {
                let _ = stream.write_all(&refusal.response_bytes()).await;
                let _ = stream.flush().await;
                Err(handshake_error(refusal))
            }
        }
    }

    /// The connection over `stream` once `accepted` is answered.
    fn conn<S: Stream>(&self, stream: S, accepted: Accepted) -> Conn<S> {
        let config = self.config_for(&accepted);
        Conn::from_raw(stream, Role::Server, config, accepted.protocol, accepted.early)
    }
}

/// How long a refused handshake goes on reading (and discarding) what the
/// client still sends, after its response: see `linger`.
#[cfg_attr(not(any(feature = "tokio", feature = "blocking")), allow(dead_code))]
pub(crate) const REFUSAL_LINGER_TIME: Duration = Duration::from_secs(1);
/// How many bytes a refused handshake reads and discards at most.
#[cfg_attr(not(any(feature = "tokio", feature = "blocking")), allow(dead_code))]
pub(crate) const REFUSAL_LINGER_BYTES: usize = 64 * 1024;

/// Ends a refused handshake gently: shuts down the write side after the
/// error response, then reads and discards what the client still sends
/// until it closes, for at most [`REFUSAL_LINGER_TIME`] and
/// [`REFUSAL_LINGER_BYTES`]. Closing a socket with unread bytes makes the
/// kernel answer with a TCP reset, which can destroy the response before
/// the client has read it (the rest of a request too large, frames sent
/// right after the request).
#[cfg(feature = "tokio")]
async fn linger<S: Stream>(stream: &mut S) {
    use tokio::io::AsyncReadExt;

    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut left = REFUSAL_LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut buf[..left.min(4096)]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n,
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER_TIME, drain).await;
}

/// The error a refused handshake fails with.
#[cfg_attr(not(any(feature = "tokio", feature = "blocking")), allow(dead_code))]
pub(crate) fn handshake_error(refusal: Refusal) -> Error {
    Error::RequestRefused { status: refusal.rejection.status, reason: refusal.rejection.reason }
}

#[cfg(feature = "hyper")]
mod hyper_support {
    use std::future::Future;
    use std::io;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http::header::{HeaderMap, HeaderValue, HOST};
    use http::{Extensions, Method, Request, Response, Uri, Version};
    use http_body_util::Full;
    use hyper::upgrade::{OnUpgrade, Upgraded};
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::Upgrader;
    use crate::conn::{Addrs, Conn, SocketAddrs};
    use crate::error::{Error, Result};
    use crate::proto::handshake::Protocol;

    /// The stream of a connection upgraded through hyper: hyper's upgraded
    /// connection, and the [`Addrs`] the request carried in its extensions,
    /// if any (hyper does not know the socket's addresses; the server that
    /// accepted the connection does).
    #[derive(Debug)]
    pub struct UpgradedStream {
        io: TokioIo<Upgraded>,
        addrs: Option<Addrs>,
    }

    impl UpgradedStream {
        /// Wraps a connection hyper upgraded (a client's, say), with the
        /// addresses to report, if known.
        pub fn new(upgraded: Upgraded, addrs: Option<Addrs>) -> Self {
            UpgradedStream { io: TokioIo::new(upgraded), addrs }
        }

        /// hyper's upgraded connection.
        pub fn get_ref(&self) -> &Upgraded {
            self.io.inner()
        }

        /// The addresses the request carried, if it did.
        pub fn addrs(&self) -> Option<Addrs> {
            self.addrs
        }

        /// hyper's upgraded connection, taken out.
        pub fn into_inner(self) -> Upgraded {
            self.io.into_inner()
        }
    }

    impl AsyncRead for UpgradedStream {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for UpgradedStream {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.io).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.io.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    impl SocketAddrs for UpgradedStream {
        fn local_addr(&self) -> io::Result<SocketAddr> {
            self.addrs.map(|a| a.local).ok_or_else(no_addrs)
        }

        fn peer_addr(&self) -> io::Result<SocketAddr> {
            self.addrs.map(|a| a.peer).ok_or_else(no_addrs)
        }
    }

    fn no_addrs() -> io::Error {
        io::Error::new(io::ErrorKind::Unsupported, "the upgraded request carried no silverback::Addrs extension")
    }

    /// A refused upgrade: the response to send back, and why.
    #[derive(Debug)]
    pub struct UpgradeRefused {
        /// The error response for hyper to send.
        pub response: Response<Full<Bytes>>,
        /// The reason, as an [`Error::RequestRefused`].
        pub error: Error,
    }

    /// Resolves to the [`Conn`] once hyper has sent the `101` response and
    /// handed over the stream.
    ///
    /// Cancel safety: dropping it drops the upgraded stream (the client sees
    /// the connection end).
    pub struct Upgrading {
        inner: Pin<Box<dyn Future<Output = Result<Conn<UpgradedStream>>> + Send>>,
    }

    impl std::fmt::Debug for Upgrading {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Upgrading")
        }
    }

    impl Future for Upgrading {
        type Output = Result<Conn<UpgradedStream>>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            self.inner.as_mut().poll(cx)
        }
    }

    impl Upgrader {
        /// Upgrades a request served by hyper 1.x: an HTTP/1.1 upgrade, or an
        /// HTTP/2 extended CONNECT (RFC 8441) on a connection whose server
        /// was built with `enable_connect_protocol()`. Returns the response to
        /// send (`101`, or `200` over HTTP/2) and a future of the connection
        /// (spawn it: it completes only after the response has gone out), or
        /// the error response to send. Subprotocols, compression and every
        /// other option apply alike over both versions.
        ///
        /// ```no_run
        /// use bytes::Bytes;
        /// use http_body_util::Full;
        /// use hyper::{body::Incoming, Request, Response};
        /// use silverback::Upgrader;
        ///
        /// async fn serve(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
        ///     match Upgrader::new().upgrade(req) {
        ///         Ok((response, upgrading)) => {
        ///             tokio::spawn(async move {
        ///                 let Ok(mut conn) = upgrading.await else { return };
        ///                 while let Ok(msg) = conn.read_message().await {
        ///                     if conn.write_message(msg.kind, &msg.data).await.is_err() {
        ///                         break;
        ///                     }
        ///                 }
        ///             });
        ///             Ok(response)
        ///         }
        ///         Err(refused) => Ok(refused.response),
        ///     }
        /// }
        /// ```
        #[allow(clippy::result_large_err)]
        pub fn upgrade<B>(
            &self,
            mut request: Request<B>,
        ) -> std::result::Result<(Response<Full<Bytes>>, Upgrading), UpgradeRefused> {
            let head = request_head(
                request.method(),
                request.uri(),
                request.version(),
                request.headers(),
                request.extensions(),
            );
            let on_upgrade = hyper::upgrade::on(&mut request);
            self.upgrade_head(&head, on_upgrade)
        }

        /// Decides on a request `head`; accepted, the connection comes from
        /// `on_upgrade` once the response has gone out.
        #[allow(clippy::result_large_err)]
        pub(crate) fn upgrade_head(
            &self,
            head: &Request<()>,
            on_upgrade: OnUpgrade,
        ) -> std::result::Result<(Response<Full<Bytes>>, Upgrading), UpgradeRefused> {
            let mut accepted = match self.options.policy.answer(head, |_| Ok(http::HeaderMap::new())) {
                Ok(accepted) => accepted,
                Err(refusal) => {
                    let (parts, body) = refusal.response.into_parts();
                    return Err(UpgradeRefused {
                        response: Response::from_parts(parts, Full::new(body)),
                        error: Error::RequestRefused {
                            status: refusal.rejection.status,
                            reason: refusal.rejection.reason,
                        },
                    });
                }
            };
            let (parts, ()) = std::mem::take(&mut accepted.response).into_parts();
            let response = Response::from_parts(parts, Full::new(Bytes::new()));
            let upgrader = self.clone();
            let addrs = head.extensions().get::<Addrs>().copied();
            let upgrading = Upgrading {
                inner: Box::pin(async move {
                    let upgraded = on_upgrade.await.map_err(|e| Error::Io(std::io::Error::other(e)))?;
                    Ok(upgrader.conn(UpgradedStream { io: TokioIo::new(upgraded), addrs }, accepted))
                }),
            };
            Ok((response, upgrading))
        }
    }

    /// The head of a request as the handshake sees it: over HTTP/2, the
    /// `:protocol` pseudo-header becomes a [`Protocol`] extension and the
    /// `:authority` the `Host` header.
    pub(crate) fn request_head(
        method: &Method,
        uri: &Uri,
        version: Version,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Request<()> {
        let mut head = Request::new(());
        *head.method_mut() = method.clone();
        *head.uri_mut() = uri.clone();
        *head.version_mut() = version;
        *head.headers_mut() = headers.clone();
        if let Some(protocol) = extensions.get::<hyper::ext::Protocol>() {
            head.extensions_mut().insert(Protocol(protocol.as_str().to_owned()));
        }
        if let Some(addrs) = extensions.get::<Addrs>() {
            head.extensions_mut().insert(*addrs);
        }
        if !head.headers().contains_key(HOST) {
            let authority = uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
            if let Some(authority) = authority {
                head.headers_mut().insert(HOST, authority);
            }
        }
        head
    }
}

#[cfg(feature = "axum")]
pub(crate) use hyper_support::request_head;
#[cfg(feature = "hyper")]
pub use hyper_support::{UpgradeRefused, UpgradedStream, Upgrading};
