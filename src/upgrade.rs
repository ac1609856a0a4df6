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

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::conn::{Config, Conn, Stream};
use crate::error::{Error, Result};
use crate::proto::extensions::{self, DeflateConfig, DeflateParams};
use crate::proto::handshake::{self, Rejection};
use crate::proto::Role;

/// Decides whether a request's origin is acceptable.
pub type CheckOrigin = Arc<dyn Fn(&Request<()>) -> bool + Send + Sync>;

/// Builds the HTTP response for a refused handshake.
pub type ErrorResponder = Arc<dyn Fn(&Rejection) -> Response<Bytes> + Send + Sync>;

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
    subprotocols: Vec<String>,
    error: Option<ErrorResponder>,
    check_origin: Option<CheckOrigin>,
    compression: Option<DeflateConfig>,
    handshake_timeout: Option<Duration>,
    max_request_bytes: usize,
    max_headers: usize,
}

impl Default for UpgraderOptions {
    fn default() -> Self {
        UpgraderOptions {
            config: Config::default(),
            subprotocols: Vec::new(),
            error: None,
            check_origin: None,
            compression: None,
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
            .field("subprotocols", &self.options.subprotocols)
            .field("custom_error", &self.options.error.is_some())
            .field("custom_check_origin", &self.options.check_origin.is_some())
            .field("compression", &self.options.compression)
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
    pub fn subprotocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.options_mut().subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Builds the HTTP response for a refused handshake. The default answers
    /// with the status, `Sec-WebSocket-Version: 13` and the reason as a
    /// plain-text body.
    pub fn error<F>(mut self, responder: F) -> Self
    where
        F: Fn(&Rejection) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.options_mut().error = Some(Arc::new(responder));
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
        self.options_mut().check_origin = Some(Arc::new(check));
        self
    }

    /// Accepts permessage-deflate (RFC 7692) when a client offers it, with
    /// context takeover both ways when the client allows it and 32 KiB
    /// windows. Off by default.
    pub fn enable_compression(mut self, enable: bool) -> Self {
        let options = self.options_mut();
        options.compression = enable.then(|| options.compression.unwrap_or_default());
        self
    }

    /// Accepts permessage-deflate with these limits: ask for no context
    /// takeover or smaller windows in either direction (less memory per
    /// connection, a lower ratio).
    pub fn compression(mut self, config: DeflateConfig) -> Self {
        self.options_mut().compression = Some(config);
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

    /// Reads the opening handshake from `stream`, answers it, and returns the
    /// connection. A bad request is answered with 400, 403, 405, 426 or 431 and
    /// a plain-text reason, then the stream is shut down and
    /// [`Error::Handshake`] returned. Bytes the client sends right after its
    /// request are kept for the connection.
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
    /// answers 500 and fails with [`Error::Handshake`].
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
            Ok((decision, early)) => {
                let mut config = self.options.config.clone();
                config.deflate = decision.deflate;
                Ok(Conn::from_raw(stream, Role::Server, config, decision.protocol, early))
            }
            Err(e) => {
                let _ = stream.shutdown().await;
                Err(e)
            }
        }
    }

    async fn handshake<S, F>(&self, stream: &mut S, callback: F) -> Result<(Decision, BytesMut)>
    where
        S: Stream,
        F: FnOnce(&Request<()>) -> std::result::Result<HeaderMap, Rejection>,
    {
        let mut buf = BytesMut::with_capacity(1024);
        let parsed = loop {
            match handshake::parse_request(&buf, self.options.max_headers) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) if buf.len() >= self.options.max_request_bytes => {
                    let rejection =
                        Rejection::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large");
                    return Err(self.refuse(stream, rejection).await);
                }
                Ok(None) => {}
                Err(rejection) => return Err(self.refuse(stream, rejection).await),
            }
            buf.reserve(1024);
            let room = self.options.max_request_bytes - buf.len();
            let n = (&mut *stream).take(room as u64).read_buf(&mut buf).await?;
            if n == 0 {
                return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        };
        let early = buf.split_off(parsed.head_len);
        let request = parsed.request;
        let decision = self.decide(&request).and_then(|mut decision| {
            let mut extra = callback(&request)?;
            let internal = |reason: String| Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, reason);
            if extra.contains_key(header::SEC_WEBSOCKET_EXTENSIONS) {
                return Err(internal("extensions are negotiated by the upgrader, not by response headers".into()));
            }
            for name in [header::UPGRADE, header::CONNECTION, header::SEC_WEBSOCKET_ACCEPT] {
                if extra.contains_key(&name) {
                    return Err(internal(format!(
                        "the handshake writes '{name}' itself; it cannot be a response header"
                    )));
                }
            }
            if let Some(chosen) =
                handshake::take_response_subprotocol(&mut extra, request.headers()).map_err(internal)?
            {
                decision.protocol = Some(chosen);
            }
            if let Some(value) = decision.extensions_header() {
                extra.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
            }
            Ok((decision, extra))
        });
        match decision {
            Ok((decision, extra)) => {
                let mut response = BytesMut::with_capacity(256);
                handshake::write_switching_response(
                    &mut response,
                    &decision.accept,
                    decision.protocol.as_deref(),
                    &extra,
                );
                stream.write_all(&response).await?;
                stream.flush().await?;
                Ok((decision, early))
            }
            Err(rejection) => Err(self.refuse(stream, rejection).await),
        }
    }

    /// Checks a request and picks its subprotocol and compression, or says why not.
    fn decide(&self, request: &Request<()>) -> std::result::Result<Decision, Rejection> {
        let valid = handshake::validate_request(request.method(), request.version(), request.headers())?;
        let origin_ok = match &self.options.check_origin {
            Some(check) => check(request),
            None => handshake::same_origin(request.headers()),
        };
        if !origin_ok {
            return Err(Rejection::new(StatusCode::FORBIDDEN, "request origin not allowed by Upgrader.check_origin"));
        }
        let negotiated = self.options.compression.as_ref().and_then(|ours| {
            let offers = request.headers().get_all(header::SEC_WEBSOCKET_EXTENSIONS).iter();
            extensions::server_negotiate_response(offers.filter_map(|v| v.to_str().ok()), ours)
        });
        let (deflate, extensions) = negotiated.map_or((None, None), |(params, header)| (Some(params), Some(header)));
        let protocol = handshake::select_subprotocol(request.headers(), &self.options.subprotocols).map(str::to_owned);
        Ok(Decision { accept: valid.accept, protocol, deflate, extensions })
    }

    /// The response for a refused handshake.
    fn rejection_response(&self, rejection: &Rejection) -> Response<Bytes> {
        if let Some(responder) = &self.options.error {
            return responder(rejection);
        }
        let mut response = Response::new(Bytes::from(format!("{}\n", rejection.reason)));
        *response.status_mut() = rejection.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        if rejection.status == StatusCode::UPGRADE_REQUIRED {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        response
    }

    /// Answers a refused handshake on a raw stream; returns the error to report.
    async fn refuse<S: Stream>(&self, stream: &mut S, rejection: Rejection) -> Error {
        let response = self.rejection_response(&rejection);
        let mut out = BytesMut::with_capacity(256);
        handshake::write_error_response(&mut out, response.status(), response.headers(), response.body());
        let _ = stream.write_all(&out).await;
        let _ = stream.flush().await;
        Error::Handshake { status: rejection.status, reason: rejection.reason }
    }
}

/// What the server answers to an acceptable request.
struct Decision {
    accept: String,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
    /// The `Sec-WebSocket-Extensions` answer that goes with `deflate`.
    extensions: Option<String>,
}

impl Decision {
    fn extensions_header(&self) -> Option<HeaderValue> {
        self.extensions.as_deref().and_then(|value| HeaderValue::from_str(value).ok())
    }
}

#[cfg(feature = "hyper")]
mod hyper_support {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::{Bytes, BytesMut};
    use http::header::{self, HeaderValue};
    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use hyper::upgrade::Upgraded;
    use hyper_util::rt::TokioIo;

    use super::Upgrader;
    use crate::conn::Conn;
    use crate::error::{Error, Result};
    use crate::proto::Role;

    /// The stream of a connection upgraded through hyper.
    pub type UpgradedStream = TokioIo<Upgraded>;

    /// A refused upgrade: the response to send back, and why.
    #[derive(Debug)]
    pub struct Rejected {
        /// The error response for hyper to send.
        pub response: Response<Full<Bytes>>,
        /// The reason, as an [`Error::Handshake`].
        pub error: Error,
    }

    /// Resolves to the [`Conn`] once hyper has sent the `101` response and
    /// handed over the stream.
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
        /// Upgrades a request served by hyper 1.x. Returns the `101` response
        /// to send and a future of the connection (spawn it: it completes only
        /// after the response has gone out), or the error response to send.
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
        ///         Err(rejected) => Ok(rejected.response),
        ///     }
        /// }
        /// ```
        #[allow(clippy::result_large_err)]
        pub fn upgrade<B>(
            &self,
            mut request: Request<B>,
        ) -> std::result::Result<(Response<Full<Bytes>>, Upgrading), Rejected> {
            let head = {
                let mut head = Request::new(());
                *head.method_mut() = request.method().clone();
                *head.uri_mut() = request.uri().clone();
                *head.version_mut() = request.version();
                *head.headers_mut() = request.headers().clone();
                head
            };
            let decision = match self.decide(&head) {
                Ok(decision) => decision,
                Err(rejection) => {
                    let (parts, body) = self.rejection_response(&rejection).into_parts();
                    return Err(Rejected {
                        response: Response::from_parts(parts, Full::new(body)),
                        error: Error::Handshake { status: rejection.status, reason: rejection.reason },
                    });
                }
            };
            let on_upgrade = hyper::upgrade::on(&mut request);
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = response.headers_mut();
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            if let Ok(value) = HeaderValue::from_str(&decision.accept) {
                headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
            }
            if let Some(value) = decision.protocol.as_deref().and_then(|p| HeaderValue::from_str(p).ok()) {
                headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
            }
            if let Some(value) = decision.extensions_header() {
                headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
            }
            let mut config = self.options.config.clone();
            config.deflate = decision.deflate;
            let protocol = decision.protocol;
            let upgrading = Upgrading {
                inner: Box::pin(async move {
                    let upgraded = on_upgrade.await.map_err(|e| Error::Io(std::io::Error::other(e)))?;
                    Ok(Conn::from_raw(TokioIo::new(upgraded), Role::Server, config, protocol, BytesMut::new()))
                }),
            };
            Ok((response, upgrading))
        }
    }
}

#[cfg(feature = "hyper")]
pub use hyper_support::{Rejected, UpgradedStream, Upgrading};
