//! The client: [`Dialer`], and with the async API [`connect`].
//!
//! A dial parses the URL (before any connection is made), opens a TCP
//! connection (directly, through a custom connect function, or through an HTTP
//! `CONNECT` or SOCKS5 proxy), adds TLS for `wss://`, and runs the opening
//! handshake, all within the handshake timeout.
//!
//! A [`Dialer`] holds the settings and everything that needs no I/O: the URL,
//! the choice of proxy, the request (with cookies from the jar), what the
//! proxies are told and what their replies mean, the TLS configuration, and
//! what the server's response means. The async dial (feature `tokio`,
//! [`Dialer::connect`]) and the blocking one (feature `blocking`,
//! `silverback::blocking::connect`) only move bytes and keep time.

#[cfg(feature = "tokio")]
mod connect;
mod cookies;
#[cfg(feature = "hyper")]
mod http2;
mod proxy;
mod socks5;
#[cfg(feature = "tokio")]
mod stream;
mod target;
#[cfg(feature = "rustls")]
mod tls;
#[cfg(feature = "tokio")]
mod tls_connect;
#[cfg(feature = "tokio")]
mod tunnel;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Response;

#[cfg(feature = "tokio")]
pub use connect::{connect, ConnectFn};
pub use cookies::{CookieJar, MemoryCookieJar};
#[cfg(feature = "hyper")]
pub use http2::{Http2Connection, Http2Mode};
pub use proxy::{BoxError, Proxy, ProxyFn};
#[cfg(feature = "tokio")]
pub use stream::{AsyncStream, BoxedStream, ClientStream};
#[cfg(feature = "rustls")]
pub use tls::{AcceptAnyCertificate, TlsRoots};
#[cfg(feature = "tokio")]
pub use tls_connect::{BoxFuture, TlsConnect};

#[cfg(feature = "blocking")]
pub(crate) use proxy::{connect_reply, connect_reply_reader, connect_request, ProxyKind, ProxyServer};
#[cfg(feature = "blocking")]
pub(crate) use socks5::{io_failure as socks5_io_failure, Socks5};
pub(crate) use target::Target;
#[cfg(all(feature = "blocking", feature = "rustls"))]
pub(crate) use tls::{client_config, server_name};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::proto::client_handshake::{self, ClientAccepted, ClientError, ClientHandshake, RequestParts};
use crate::proto::extensions::DeflateConfig;
use crate::proto::head::HeadLimits;

/// The default handshake timeout of a [`Dialer`], as gorilla's `DefaultDialer`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(45);
/// The largest handshake response head a client reads.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024;
/// The default bound on the number of handshake response headers.
pub const DEFAULT_MAX_RESPONSE_HEADERS: usize = 64;

/// Opens client connections (gorilla's `Dialer`). Cheap to clone and safe to
/// share.
///
/// The same dialer serves the async API ([`Dialer::connect`], feature
/// `tokio`) and the blocking one (`silverback::blocking::connect`, feature
/// `blocking`).
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
    pub(crate) config: Config,
    #[cfg(feature = "tokio")]
    pub(crate) connect: Option<ConnectFn>,
    #[cfg(feature = "tokio")]
    pub(crate) tls_connector: Option<tls_connect::TlsConnector>,
    #[cfg(feature = "blocking")]
    pub(crate) blocking_tls: Option<Arc<dyn crate::blocking::TlsConnect>>,
    pub(crate) proxy: Proxy,
    #[cfg(feature = "rustls")]
    pub(crate) tls: TlsRoots,
    pub(crate) handshake_timeout: Option<Duration>,
    subprotocols: Vec<String>,
    headers: HeaderMap,
    compression: Option<DeflateConfig>,
    jar: Option<Arc<dyn CookieJar>>,
    max_response_bytes: usize,
    max_response_headers: usize,
    #[cfg(feature = "hyper")]
    http2: Http2Mode,
}

impl Default for Dialer {
    /// The same as [`Dialer::new`]: no proxy, 45 s handshake timeout.
    fn default() -> Self {
        Dialer {
            config: Config::default(),
            #[cfg(feature = "tokio")]
            connect: None,
            #[cfg(feature = "tokio")]
            tls_connector: None,
            #[cfg(feature = "blocking")]
            blocking_tls: None,
            proxy: Proxy::None,
            #[cfg(feature = "rustls")]
            tls: TlsRoots::default(),
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            subprotocols: Vec::new(),
            headers: HeaderMap::new(),
            compression: None,
            jar: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_response_headers: DEFAULT_MAX_RESPONSE_HEADERS,
            #[cfg(feature = "hyper")]
            http2: Http2Mode::Off,
        }
    }
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("Dialer");
        f.field("config", &self.config);
        #[cfg(feature = "tokio")]
        f.field("custom_connect", &self.connect.is_some()).field("custom_tls", &self.tls_connector.is_some());
        #[cfg(feature = "blocking")]
        f.field("custom_blocking_tls", &self.blocking_tls.is_some());
        f.field("proxy", &self.proxy)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("subprotocols", &self.subprotocols)
            .field("headers", &self.headers)
            .field("compression", &self.compression)
            .field("cookie_jar", &self.jar.is_some())
            .finish()
    }
}

impl Dialer {
    fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    crate::config::connection_options!();

    /// A dialer that connects directly (no proxy, whatever the environment
    /// says), with a handshake timeout of 45 s ([`DEFAULT_HANDSHAKE_TIMEOUT`])
    /// and no other timeout; the same as [`Dialer::default`]. For gorilla's
    /// `DefaultDialer`, which takes its proxy from the environment, use
    /// [`Dialer::from_env`].
    pub fn new() -> Self {
        Self::default()
    }

    /// gorilla's `DefaultDialer`: [`Dialer::new`] with the proxy taken from
    /// the environment ([`Proxy::FromEnvironment`]: `HTTPS_PROXY`,
    /// `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`) and a 45 s handshake timeout.
    /// [`connect`](crate::connect) dials with it.
    pub fn from_env() -> Self {
        Self::new().proxy(Proxy::FromEnvironment)
    }

    /// Which proxy to use: none for [`Dialer::new`], the environment's for
    /// [`Dialer::from_env`].
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = proxy;
        self
    }

    /// Where TLS trust comes from for `wss://`: bundled roots (default), the
    /// platform's, or a complete `rustls::ClientConfig`.
    #[cfg(feature = "rustls")]
    pub fn tls(mut self, roots: TlsRoots) -> Self {
        self.tls = roots;
        self
    }

    /// Bounds the whole dial (connect, proxy, TLS, handshake); `None` removes
    /// the bound. The blocking dial does not bound the name lookup, which
    /// the system resolver times itself.
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
    /// own headers (`Upgrade`, `Connection`, `Sec-WebSocket-Key`,
    /// `Sec-WebSocket-Version`, `Sec-WebSocket-Extensions`, and
    /// `Sec-WebSocket-Protocol` when subprotocols are offered) may not be
    /// set this way; the dial fails with [`Error::InvalidRequest`] if they
    /// are. A
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

    /// Whether WebSockets go over HTTP/2 (RFC 8441); see [`Http2Mode`]. Off
    /// by default. [`Dialer::connect_http2`] opens an HTTP/2 connection
    /// for several WebSockets whatever this says. Async dials only.
    #[cfg(feature = "hyper")]
    pub fn http2(mut self, mode: Http2Mode) -> Self {
        self.http2 = mode;
        self
    }

    /// The dialer and URL of one call of `connect_with`: see
    /// [`Dialer::connect_with`] and `blocking::connect_with`.
    #[cfg_attr(not(any(feature = "tokio", feature = "blocking")), allow(dead_code))]
    pub(crate) fn per_call(&self, request: http::Request<()>) -> Result<(Dialer, String)> {
        let (parts, ()) = request.into_parts();
        if parts.method != http::Method::GET {
            return Err(Error::InvalidRequest(format!("a WebSocket request is a GET, not {}", parts.method)));
        }
        let url = parts.uri.to_string();
        let mut dialer = self.clone();
        let mut headers = parts.headers;
        let offered: Vec<HeaderValue> = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().cloned().collect();
        if !offered.is_empty() {
            headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
            let mut protocols = Vec::new();
            for value in &offered {
                let value = value
                    .to_str()
                    .map_err(|_| Error::InvalidRequest("Sec-WebSocket-Protocol is not visible ASCII".into()))?;
                protocols.extend(value.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned));
            }
            dialer.subprotocols = protocols;
        }
        let mut last = None;
        for (name, value) in headers {
            // `into_iter` names only the first of several values.
            let name = name.or(last.take()).expect("a header map's first entry has a name");
            dialer.headers.append(name.clone(), value);
            last = Some(name);
        }
        Ok((dialer, url))
    }

    /// Builds and checks the whole handshake request for `target`, before
    /// any connection is made: nothing a caller gives (subprotocols, headers,
    /// `Host`, cookies from the jar) can add a header or break a line.
    pub(crate) fn request(&self, target: &Target) -> Result<ClientHandshake> {
        let (host, headers) = self.request_headers(target)?;
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
        ClientHandshake::new(&parts, limits)
    }

    /// The same request for a stream of an HTTP/2 connection (RFC 8441).
    #[cfg(feature = "hyper")]
    pub(crate) fn http2_request(&self, target: &Target) -> Result<client_handshake::Http2Handshake> {
        let (host, headers) = self.request_headers(target)?;
        // Checked like the HTTP/1.1 request's; HTTP/2 sends no key.
        let key = BASE64.encode([0u8; 16]);
        let parts = RequestParts {
            resource: &target.resource,
            host: &host,
            key: &key,
            subprotocols: &self.subprotocols,
            compression: self.compression,
            headers: &headers,
        };
        client_handshake::Http2Handshake::new(&parts, if target.tls { "https" } else { "http" })
    }

    /// The `Host` value and the other headers of a request for `target`:
    /// the dialer's headers, `Authorization` from the URL, cookies from
    /// the jar.
    fn request_headers(&self, target: &Target) -> Result<(String, HeaderMap)> {
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
        Ok((host, headers))
    }

    /// What the server's response means, once its head was read (`None`:
    /// the stream ended first). The cookies it sets go to the jar, whether
    /// it accepts or refuses.
    pub(crate) fn answer(
        &self,
        target: &Target,
        outcome: Option<Result<ClientAccepted, ClientError>>,
    ) -> Result<Answer> {
        let outcome =
            outcome.ok_or_else(|| Error::InvalidResponse("connection closed before the handshake response".into()))?;
        match outcome {
            Ok(accepted) => {
                self.store_cookies(target, &accepted.response);
                let mut config = self.config.clone();
                config.deflate = accepted.deflate;
                Ok(Answer::Accepted {
                    config,
                    protocol: accepted.protocol,
                    response: accepted.response,
                    early: accepted.early,
                })
            }
            Err(ClientError::BadResponse { reason, response, body }) => {
                self.store_cookies(target, &response);
                Ok(Answer::Refused(Refusal { reason, response, body }))
            }
            Err(ClientError::InvalidResponse(reason)) => Err(Error::InvalidResponse(reason)),
        }
    }

    /// Gives the cookies a handshake response sets to the jar, if any.
    pub(crate) fn store_cookies(&self, target: &Target, response: &Response<()>) {
        let Some(jar) = &self.jar else { return };
        let set: Vec<&str> =
            response.headers().get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
        if !set.is_empty() {
            jar.set_cookies(&target.http_url(), &set);
        }
    }
}

/// A handshake response, judged.
// Made once per dial and taken apart at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Answer {
    /// The server accepted: the connection's settings (with the agreed
    /// compression), its subprotocol, the `101` response and the bytes that
    /// came after it.
    Accepted { config: Config, protocol: Option<String>, response: Response<()>, early: BytesMut },
    /// The server refused.
    Refused(Refusal),
}

/// A refused handshake, before the start of its body is read.
pub(crate) struct Refusal {
    reason: String,
    response: Box<Response<()>>,
    /// The body's bytes received so far.
    pub(crate) body: BytesMut,
}

impl Refusal {
    /// How much of the body to read for the error (as far as
    /// `Content-Length` says, at most 1 KiB). The driver reads briefly
    /// (about a second): the excerpt is for the error message only.
    pub(crate) fn body_wanted(&self) -> usize {
        let length = self
            .response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        length.min(1024)
    }

    /// The dial's error: [`Error::BadResponse`] with the start of the body.
    pub(crate) fn into_error(self) -> Error {
        let (parts, ()) = (*self.response).into_parts();
        let body: Bytes = client_handshake::body_excerpt(&self.body);
        Error::BadResponse { reason: self.reason, response: Box::new(Response::from_parts(parts, body)) }
    }
}

/// How long a driver reads the start of a refused handshake's body.
pub(crate) const BODY_EXCERPT_TIME: Duration = Duration::from_secs(1);
