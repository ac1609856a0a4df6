//! The client: [`Dialer`] and [`connect`].
//!
//! A dial parses the URL (before any connection is made), opens a TCP
//! connection (directly, through a custom connect function, or through an HTTP
//! `CONNECT` or SOCKS5 proxy), adds TLS for `wss://`, and runs the opening
//! handshake, all within the handshake timeout.

mod cookies;
mod proxy;
mod stream;
mod target;
#[cfg(feature = "tls")]
mod tls;

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use cookies::{CookieJar, MemoryCookieJar};
pub use proxy::Proxy;
pub use stream::{AsyncStream, BoxedStream, ClientStream};
#[cfg(feature = "tls")]
pub use tls::TlsRoots;

use crate::conn::{Config, Conn, Stream};
use crate::error::{Error, Result};
use crate::handshake_io::read_head;
use crate::proto::client_handshake::{self, ClientError, ClientHandshake, RequestParts};
use crate::proto::extensions::DeflateConfig;
use crate::proto::head::HeadLimits;
use crate::proto::Role;
use target::Target;

/// Opens the transport to a host and port: the target, or the proxy when one
/// is used. Returns any stream.
pub type ConnectFn =
    Arc<dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = io::Result<BoxedStream>> + Send>> + Send + Sync>;

/// The default handshake timeout of a [`Dialer`], as gorilla's `DefaultDialer`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(45);
/// The largest handshake response head a client reads.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024;
/// The default bound on the number of handshake response headers.
pub const DEFAULT_MAX_RESPONSE_HEADERS: usize = 64;

/// Opens client connections (gorilla's `Dialer`). Cheap to clone and safe to
/// share.
///
/// ```no_run
/// # async fn run() -> Result<(), silverback::Error> {
/// use std::time::Duration;
/// use silverback::{Dialer, MessageType};
///
/// let dialer = Dialer::new().subprotocols(["chat"]).handshake_timeout(Some(Duration::from_secs(10)));
/// let (mut conn, response) = dialer.connect("wss://example.com/socket").await?;
/// println!("connected: {}, protocol {:?}", response.status(), conn.subprotocol());
/// conn.write_message(MessageType::Text, "hello").await?;
/// let reply = conn.read_message().await?;
/// println!("{:?}", reply.as_text());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Dialer {
    config: Config,
    connect: Option<ConnectFn>,
    proxy: Proxy,
    #[cfg(feature = "tls")]
    tls: TlsRoots,
    handshake_timeout: Option<Duration>,
    subprotocols: Vec<String>,
    headers: HeaderMap,
    compression: Option<DeflateConfig>,
    jar: Option<Arc<dyn CookieJar>>,
    max_response_bytes: usize,
    max_response_headers: usize,
}

impl Default for Dialer {
    /// gorilla's `DefaultDialer`: proxy from the environment, 45 s handshake timeout.
    fn default() -> Self {
        Dialer {
            config: Config::default(),
            connect: None,
            proxy: Proxy::FromEnvironment,
            #[cfg(feature = "tls")]
            tls: TlsRoots::default(),
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            subprotocols: Vec::new(),
            headers: HeaderMap::new(),
            compression: None,
            jar: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_response_headers: DEFAULT_MAX_RESPONSE_HEADERS,
        }
    }
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer")
            .field("config", &self.config)
            .field("custom_connect", &self.connect.is_some())
            .field("proxy", &self.proxy)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("subprotocols", &self.subprotocols)
            .field("headers", &self.headers)
            .field("compression", &self.compression)
            .field("cookie_jar", &self.jar.is_some())
            .finish()
    }
}

/// Dials `url` with [`Dialer::default`].
pub async fn connect(url: &str) -> Result<(Conn<ClientStream>, Response<()>)> {
    Dialer::default().connect(url).await
}

impl Dialer {
    fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    crate::config::connection_options!();

    /// A dialer with the defaults of [`Dialer::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the transport with `connect` instead of a TCP connection. With a
    /// proxy, it is asked for the proxy's address.
    pub fn connect_fn<F, Fut>(mut self, connect: F) -> Self
    where
        F: Fn(String, u16) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<BoxedStream>> + Send + 'static,
    {
        self.connect = Some(Arc::new(move |host, port| Box::pin(connect(host, port))));
        self
    }

    /// Which proxy to use; the default reads the environment.
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = proxy;
        self
    }

    /// Where TLS trust comes from for `wss://`: bundled roots (default), the
    /// platform's, or a complete `rustls::ClientConfig`.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, roots: TlsRoots) -> Self {
        self.tls = roots;
        self
    }

    /// Bounds the whole dial (connect, proxy, TLS, handshake); `None` removes the bound.
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The largest handshake response head read (default 16 KiB).
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes.max(256);
        self
    }

    /// The most handshake response headers accepted (default 64); more fail
    /// the dial with [`Error::InvalidResponse`].
    pub fn max_response_headers(mut self, count: usize) -> Self {
        self.max_response_headers = count.max(1);
        self
    }

    /// Subprotocols to offer, in order of preference. The server's choice must
    /// be one of them. Each name must be an RFC 7230 token (visible ASCII, no
    /// separators such as spaces, commas or quotes) and offered once; the dial
    /// fails with [`Error::InvalidRequest`] before connecting otherwise.
    pub fn subprotocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a request header (`Origin`, `Authorization`, …). The handshake's
    /// own headers may not be set this way; the dial fails if they are. A
    /// `Host` header replaces the URL's host in the request: it must be one
    /// host with an optional port, given once, or the dial fails with
    /// [`Error::InvalidRequest`] before connecting.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Offers permessage-deflate (RFC 7692): first with context takeover
    /// both ways, then, for servers that accept only that, without it on the
    /// client's side. Off by default.
    pub fn enable_compression(mut self, enable: bool) -> Self {
        self.compression = enable.then(|| self.compression.unwrap_or_default());
        self
    }

    /// Offers permessage-deflate with these limits (context takeover and
    /// window sizes in each direction).
    pub fn compression(mut self, config: DeflateConfig) -> Self {
        self.compression = Some(config);
        self
    }

    /// Stores cookies from handshake responses and sends them on later dials.
    /// A `Cookie` value from the jar that cannot be a header value (a control
    /// character) fails the dial with [`Error::InvalidRequest`] before
    /// connecting.
    pub fn cookie_jar(mut self, jar: Arc<dyn CookieJar>) -> Self {
        self.jar = Some(jar);
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
            let stream = self.open(&target).await?;
            self.handshake(stream, &target, request).await
        });
        match self.handshake_timeout {
            Some(limit) => tokio::time::timeout(limit, dial).await.unwrap_or(Err(Error::Timeout)),
            None => dial.await,
        }
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

    /// Builds and checks the whole handshake request for `target`, before
    /// any connection is made: nothing a caller gives (subprotocols, headers,
    /// `Host`, cookies from the jar) can add a header or break a line.
    fn request(&self, target: &Target) -> Result<ClientHandshake> {
        let invalid = Error::InvalidRequest;
        client_handshake::check_subprotocols(&self.subprotocols).map_err(invalid)?;
        let mut headers = self.headers.clone();
        let mut hosts = headers.get_all(header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (None, _) => target.host_header.clone(),
            (Some(host), None) => {
                let host = host.to_str().map_err(|_| invalid(format!("invalid Host {host:?}: not visible ASCII")))?;
                client_handshake::check_host(host).map_err(invalid)?;
                host.to_owned()
            }
            (Some(_), Some(_)) => return Err(invalid("more than one Host header".into())),
        };
        headers.remove(header::HOST);
        if let Some(auth) = &target.basic_auth {
            if !headers.contains_key(header::AUTHORIZATION) {
                let value = HeaderValue::from_str(auth)
                    .map_err(|_| invalid("the URL's user information cannot be sent as Authorization".into()))?;
                headers.insert(header::AUTHORIZATION, value);
            }
        }
        if let Some(cookies) = self.jar.as_ref().and_then(|jar| jar.cookies(&target.http_url())) {
            // The value is not repeated in the error: it may be a secret.
            let value = HeaderValue::from_str(&cookies).map_err(|_| {
                invalid("the cookie jar gave a Cookie value with a control character; it cannot be sent".into())
            })?;
            headers.append(header::COOKIE, value);
        }
        let key = BASE64.encode(rand::random::<[u8; 16]>());
        let parts = RequestParts {
            resource: &target.resource,
            host: &host,
            key: &key,
            subprotocols: &self.subprotocols,
            compression: self.compression,
            headers: &headers,
        };
        let limits = HeadLimits { max_bytes: self.max_response_bytes, max_headers: self.max_response_headers };
        ClientHandshake::new(&parts, limits).map_err(invalid)
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

    async fn open(&self, target: &Target) -> Result<ClientStream> {
        let mut stream = match self.proxy.resolve(target)? {
            Some(server) => {
                server.check(target)?;
                let mut stream = self.open_transport(&server.host, server.port).await?;
                proxy::tunnel(&mut stream, &server, target).await?;
                stream
            }
            None => self.open_transport(&target.host, target.port).await?,
        };
        if target.tls {
            #[cfg(feature = "tls")]
            {
                let config = tls::client_config(&self.tls)?;
                stream = tls::connect(config, &target.host, stream.into_boxed()).await?;
            }
            #[cfg(not(feature = "tls"))]
            {
                let _ = &mut stream;
                return Err(Error::InvalidUrl("wss:// needs the `tls` feature".into()));
            }
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
        let outcome = read_head(&mut stream, &mut handshake, usize::MAX)
            .await?
            .ok_or_else(|| Error::InvalidResponse("connection closed before the handshake response".into()))?;
        match outcome {
            Ok(accepted) => {
                self.store_cookies(target, &accepted.response);
                let mut config = self.config.clone();
                config.deflate = accepted.deflate;
                let conn = Conn::from_raw(stream, Role::Client, config, accepted.protocol, accepted.early);
                Ok((conn, accepted.response))
            }
            Err(ClientError::BadResponse { reason, response, mut body }) => {
                self.store_cookies(target, &response);
                read_body_excerpt(&mut stream, &response, &mut body).await;
                let (parts, ()) = (*response).into_parts();
                let body = client_handshake::body_excerpt(&body);
                Err(Error::BadResponse { reason, response: Box::new(Response::from_parts(parts, body)) })
            }
            Err(ClientError::InvalidResponse(reason)) => Err(Error::InvalidResponse(reason)),
        }
    }

    /// Gives the cookies a handshake response sets to the jar, if any.
    fn store_cookies(&self, target: &Target, response: &Response<()>) {
        let Some(jar) = &self.jar else { return };
        let set: Vec<&str> =
            response.headers().get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
        if !set.is_empty() {
            jar.set_cookies(&target.http_url(), &set);
        }
    }
}

/// Reads up to 1 KiB of a refusal's body (as far as `Content-Length` says),
/// briefly: the excerpt is for the error message only.
async fn read_body_excerpt<S: Stream>(stream: &mut S, response: &Response<()>, body: &mut BytesMut) {
    let length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let want = length.min(1024);
    let read = async {
        while body.len() < want {
            body.reserve(want - body.len());
            match stream.read_buf(body).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), read).await;
}
