//! The client's side of the opening handshake (RFC 6455 §4.1) as a sans-IO
//! object: a [`ClientHandshake`] gives the request bytes to send, takes the
//! server's response bytes as they arrive, and checks the response.
//!
//! ```
//! use http::HeaderMap;
//! use silverback::proto::client_handshake::{ClientHandshake, RequestParts};
//! use silverback::proto::head::HeadLimits;
//!
//! let headers = HeaderMap::new();
//! let parts = RequestParts {
//!     resource: "/chat",
//!     host: "example.com",
//!     key: "dGhlIHNhbXBsZSBub25jZQ==",
//!     subprotocols: &[],
//!     compression: None,
//!     headers: &headers,
//! };
//! let limits = HeadLimits { max_bytes: 4096, max_headers: 32 };
//! let mut handshake = ClientHandshake::new(&parts, limits).unwrap();
//! assert!(handshake.request_bytes().starts_with(b"GET /chat HTTP/1.1\r\n"));
//! let response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
//!                  Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
//! assert!(handshake.receive(&response[..30]).unwrap().is_none());
//! let accepted = handshake.receive(&response[30..]).unwrap().unwrap();
//! assert_eq!(accepted.response.status(), 101);
//! ```

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use super::extensions::{self, is_token, DeflateConfig, DeflateParams};
use super::handshake::{accept_key, header_has_token, is_valid_key, Protocol};
use super::head::{HeadError, HeadLimits, HeadReader};
use crate::error::Error;

/// Request headers the handshake writes itself; a caller may not set them.
pub const RESERVED_HEADERS: [HeaderName; 5] = [
    header::UPGRADE,
    header::CONNECTION,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_EXTENSIONS,
];

/// What goes into a handshake request.
#[derive(Debug)]
pub struct RequestParts<'a> {
    /// Path and query of the resource, e.g. `/chat?room=1`.
    pub resource: &'a str,
    /// The `Host` header value (host, and port when not the scheme's default).
    pub host: &'a str,
    /// The `Sec-WebSocket-Key` value.
    pub key: &'a str,
    /// Subprotocols offered, in order of preference.
    pub subprotocols: &'a [String],
    /// permessage-deflate to offer, if any.
    pub compression: Option<DeflateConfig>,
    /// Any other headers (cookies, authorization, origin, user headers).
    pub headers: &'a HeaderMap,
}

/// Checks subprotocol names for a request: each an RFC 7230 token (so it
/// can neither break the header nor be confused with the list's commas and
/// spaces), none repeated (RFC 6455 §4.1).
pub(crate) fn check_subprotocols(protocols: &[String]) -> Result<(), String> {
    for (i, protocol) in protocols.iter().enumerate() {
        if !is_token(protocol) {
            return Err(format!(
                "invalid subprotocol name {protocol:?}: a name must be a non-empty token of visible ASCII \
                 characters other than separators such as spaces, commas, quotes and semicolons"
            ));
        }
        if protocols[..i].contains(protocol) {
            return Err(format!("subprotocol {protocol:?} is offered twice"));
        }
    }
    Ok(())
}

/// Checks a `Host` value: a host, with an optional port, and nothing else
/// (no user information, path, space or control character).
pub(crate) fn check_host(host: &str) -> Result<(), String> {
    // RFC 3986 §3.2.2–3.2.3: `[IPv6]`, or a name or IPv4 address, then
    // optionally `:port`.
    let is_name_byte = |b: u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b);
    let (host_ok, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, port)) => (ip.parse::<std::net::Ipv6Addr>().is_ok(), port),
            None => (false, ""),
        },
        None => {
            let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
            (!name.is_empty() && name.bytes().all(is_name_byte), &host[name.len()..])
        }
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok());
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!("invalid Host {host:?}: expected a host name or address with an optional port"))
    }
}

/// Whether `value` can be written as a header field value as it is: no
/// control character but tab, so that it cannot end its line (RFC 7230 §3.2).
fn is_field_value(value: &[u8]) -> bool {
    value.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Checks every part of a request before anything is written: what the
/// request line and each header would carry must stay on its own line and
/// mean what it says.
fn check_request(parts: &RequestParts<'_>) -> Result<(), String> {
    // origin-form (RFC 7230 §5.3.1): visible ASCII only, so no space or line
    // break can end the request line early.
    if !parts.resource.starts_with('/') || !parts.resource.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("invalid request target {:?}: expected a path and query of visible ASCII", parts.resource));
    }
    check_host(parts.host)?;
    if !is_valid_key(parts.key.as_bytes()) {
        return Err("invalid Sec-WebSocket-Key: expected 16 bytes in base64".into());
    }
    check_subprotocols(parts.subprotocols)?;
    let own = RESERVED_HEADERS
        .iter()
        .chain([&header::HOST])
        .chain((!parts.subprotocols.is_empty()).then_some(&header::SEC_WEBSOCKET_PROTOCOL));
    for name in own {
        if parts.headers.contains_key(name) {
            return Err(format!("duplicate header not allowed: {name}"));
        }
    }
    for (name, value) in parts.headers {
        if !is_field_value(value.as_bytes()) {
            return Err(format!("the value of header {name} has a control character"));
        }
    }
    Ok(())
}

/// Writes the handshake request, after checking every part of it. On an
/// error nothing is written.
fn write_request(dst: &mut BytesMut, parts: &RequestParts<'_>) -> Result<(), String> {
    check_request(parts)?;
    let offer = parts.compression.as_ref().map(extensions::client_offers);
    dst.put_slice(b"GET ");
    dst.put_slice(parts.resource.as_bytes());
    dst.put_slice(b" HTTP/1.1\r\nHost: ");
    dst.put_slice(parts.host.as_bytes());
    dst.put_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    dst.put_slice(parts.key.as_bytes());
    dst.put_slice(b"\r\nSec-WebSocket-Version: 13\r\n");
    if !parts.subprotocols.is_empty() {
        dst.put_slice(b"Sec-WebSocket-Protocol: ");
        dst.put_slice(parts.subprotocols.join(", ").as_bytes());
        dst.put_slice(b"\r\n");
    }
    if let Some(offer) = offer {
        dst.put_slice(b"Sec-WebSocket-Extensions: ");
        dst.put_slice(offer.as_bytes());
        dst.put_slice(b"\r\n");
    }
    for (name, value) in parts.headers {
        dst.put_slice(name.as_str().as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
    dst.put_slice(b"\r\n");
    Ok(())
}

/// Checks a `101` response against the request (RFC 6455 §4.1, items 1–6 of
/// the client's validation) and returns the subprotocol the server chose.
#[doc(hidden)]
pub fn validate_response<B>(response: &Response<B>, key: &str, offered: &[String]) -> Result<Option<String>, String> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let mut reason = format!("expected status 101, got {}", response.status());
        if response.status().is_redirection() {
            if let Some(location) = response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()) {
                reason.push_str(&format!("; the server redirects to {location} (redirects are not followed)"));
            }
        }
        return Err(reason);
    }
    let headers = response.headers();
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err("'Upgrade: websocket' missing from the response".into());
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err("'Connection: Upgrade' missing from the response".into());
    }
    let expected = accept_key(key.as_bytes());
    // RFC 6455 §11.3.3: the header appears at most once.
    let mut accepts = headers.get_all(header::SEC_WEBSOCKET_ACCEPT).iter();
    match (accepts.next(), accepts.next()) {
        (Some(accept), None) if accept.as_bytes() == expected.as_bytes() => {}
        (Some(_), Some(_)) => return Err("more than one 'Sec-WebSocket-Accept' in the response".into()),
        (Some(_), None) => return Err("'Sec-WebSocket-Accept' does not match the key".into()),
        (None, _) => return Err("'Sec-WebSocket-Accept' missing from the response".into()),
    }
    chosen_subprotocol(headers, offered)
}

/// The subprotocol a response chose: at most one, and one that was offered.
fn chosen_subprotocol(headers: &HeaderMap, offered: &[String]) -> Result<Option<String>, String> {
    let mut protocols = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
    match (protocols.next(), protocols.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => {
            let value = value.to_str().map_err(|_| "invalid 'Sec-WebSocket-Protocol' in the response")?.trim();
            if !offered.iter().any(|p| p == value) {
                return Err(format!("the server chose subprotocol {value:?}, which was not offered"));
            }
            Ok(Some(value.to_owned()))
        }
        (Some(_), Some(_)) => Err("more than one 'Sec-WebSocket-Protocol' in the response".into()),
    }
}

/// The permessage-deflate parameters a response agreed to: only what was
/// offered (RFC 6455 §4.1, item 5).
fn agreed_deflate(headers: &HeaderMap, offered: Option<&DeflateConfig>) -> Result<Option<DeflateParams>, String> {
    let accepted: Vec<&str> =
        headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS).iter().filter_map(|v| v.to_str().ok()).collect();
    match (offered, accepted.is_empty()) {
        (_, true) => Ok(None),
        (Some(ours), false) => extensions::client_accept(&accepted.join(", "), ours)
            .map(Some)
            .map_err(|why| format!("invalid permessage-deflate response: {why}")),
        (None, false) => Err(format!("the server accepted an extension that was not offered: {}", accepted.join(", "))),
    }
}

/// The first bytes of a refusal's body, kept with the error (at most 1 KiB).
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) fn body_excerpt(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(&bytes[..bytes.len().min(1024)])
}

/// The client's opening handshake (see the [module docs](self)).
pub struct ClientHandshake {
    key: String,
    subprotocols: Vec<String>,
    compression: Option<DeflateConfig>,
    request: Bytes,
    head: HeadReader,
    done: bool,
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("subprotocols", &self.subprotocols)
            .field("compression", &self.compression)
            .field("head", &self.head)
            .field("done", &self.done)
            .finish()
    }
}

/// An accepted handshake, as the client sees it.
#[derive(Debug)]
pub struct ClientAccepted {
    /// The subprotocol the server chose (one of those offered).
    pub protocol: Option<String>,
    /// The agreed permessage-deflate parameters, when the server accepted
    /// the offer.
    pub deflate: Option<DeflateParams>,
    /// The server's `101` response.
    pub response: Response<()>,
    /// Bytes received after the response head (WebSocket frames the server
    /// sent at once).
    pub early: BytesMut,
}

/// Why a client handshake failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The response is not an HTTP head, or not within the limits.
    InvalidResponse(String),
    /// The server answered, but did not accept the handshake as requested:
    /// not a `101`, a wrong `Sec-WebSocket-Accept`, a subprotocol or
    /// extension that was not offered, and so on.
    BadResponse {
        /// What was wrong.
        reason: String,
        /// The server's response head.
        response: Box<Response<()>>,
        /// Bytes received after the head: the start of a refusal's body.
        /// Empty when the refusal is about the extensions of a `101`.
        body: BytesMut,
    },
}

impl ClientHandshake {
    /// Checks every part of the request (subprotocols must be distinct
    /// RFC 7230 tokens; the host a host name, an IPv4 address or a bracketed
    /// IPv6 one, with an optional port; the resource must be a path and query
    /// of visible ASCII; header values may hold no control character but tab; `headers`
    /// may not hold `Host` or a header the handshake writes itself) and
    /// writes it. The response head will be read within `limits`. A part
    /// that breaks these rules is an [`Error::InvalidRequest`] saying which.
    pub fn new(parts: &RequestParts<'_>, limits: HeadLimits) -> Result<Self, Error> {
        let mut request = BytesMut::with_capacity(256);
        write_request(&mut request, parts).map_err(Error::InvalidRequest)?;
        Ok(ClientHandshake {
            key: parts.key.to_owned(),
            subprotocols: parts.subprotocols.to_vec(),
            compression: parts.compression,
            request: request.freeze(),
            head: HeadReader::new(limits),
            done: false,
        })
    }

    /// The request head to send.
    pub fn request_bytes(&self) -> &[u8] {
        &self.request
    }

    /// How many more bytes the response head may take (0 once complete).
    pub fn room(&self) -> usize {
        if self.done {
            0
        } else {
            self.head.room()
        }
    }

    /// Takes the next bytes of the server's response: `Ok(None)` until its
    /// head is complete, then the agreed parameters or why the handshake
    /// failed. Once complete, any further bytes are an error.
    pub fn receive(&mut self, data: &[u8]) -> Result<Option<ClientAccepted>, ClientError> {
        if self.done {
            return Err(ClientError::InvalidResponse("the handshake is already complete".into()));
        }
        let head = match self.head.receive_response(data) {
            Ok(None) => return Ok(None),
            Ok(Some(head)) => head,
            Err(e) => {
                self.done = true;
                return Err(ClientError::InvalidResponse(match e {
                    HeadError::TooLarge => "handshake response head too large".into(),
                    HeadError::TooManyHeaders => "malformed HTTP response: too many headers".into(),
                    HeadError::Malformed(reason) => reason,
                }));
            }
        };
        self.done = true;
        let (response, early) = (head.message, head.rest);
        let protocol = match validate_response(&response, &self.key, &self.subprotocols) {
            Ok(protocol) => protocol,
            Err(reason) => return Err(ClientError::BadResponse { reason, response: Box::new(response), body: early }),
        };
        match agreed_deflate(response.headers(), self.compression.as_ref()) {
            Ok(deflate) => Ok(Some(ClientAccepted { protocol, deflate, response, early })),
            Err(reason) => {
                Err(ClientError::BadResponse { reason, response: Box::new(response), body: BytesMut::new() })
            }
        }
    }
}

/// The client's handshake over HTTP/2 (RFC 8441): the extended CONNECT
/// request to send on a new stream of a connection whose server enabled
/// the extended CONNECT protocol, and the check of the server's answer.
///
/// ```
/// use http::{HeaderMap, Response, StatusCode};
/// use silverback::proto::client_handshake::{Http2Handshake, RequestParts};
///
/// let headers = HeaderMap::new();
/// let subprotocols = ["chat".to_string()];
/// let parts = RequestParts {
///     resource: "/chat",
///     host: "example.com",
///     key: "dGhlIHNhbXBsZSBub25jZQ==",
///     subprotocols: &subprotocols,
///     compression: None,
///     headers: &headers,
/// };
/// let handshake = Http2Handshake::new(&parts, "https").unwrap();
/// let request = handshake.request();
/// assert_eq!(request.method(), http::Method::CONNECT);
/// assert_eq!(request.uri(), "https://example.com/chat");
/// let mut response = Response::new(());
/// response.headers_mut().insert("sec-websocket-protocol", "chat".parse().unwrap());
/// assert_eq!(handshake.check(response).unwrap().protocol.as_deref(), Some("chat"));
/// ```
#[derive(Debug)]
pub struct Http2Handshake {
    subprotocols: Vec<String>,
    compression: Option<DeflateConfig>,
    request: Request<()>,
}

impl Http2Handshake {
    /// Checks the parts as [`ClientHandshake::new`] does and builds the
    /// request: `CONNECT` with `:protocol` websocket (a [`Protocol`]
    /// extension for the driver to map to its HTTP/2 library's), the
    /// `:scheme` given (`https` or `http`), `:authority` from `host`, and
    /// the same `Sec-WebSocket-*` offers as over HTTP/1.1, without a key.
    pub fn new(parts: &RequestParts<'_>, scheme: &str) -> Result<Self, Error> {
        check_request(parts).map_err(Error::InvalidRequest)?;
        let uri = format!("{scheme}://{}{}", parts.host, parts.resource)
            .parse::<http::Uri>()
            .map_err(|e| Error::InvalidRequest(format!("invalid request target: {e}")))?;
        let mut request = Request::new(());
        *request.method_mut() = Method::CONNECT;
        *request.version_mut() = Version::HTTP_2;
        *request.uri_mut() = uri;
        request.extensions_mut().insert(Protocol("websocket".into()));
        let headers = request.headers_mut();
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        let invalid = |what: &str| Error::InvalidRequest(format!("invalid {what} header value"));
        if !parts.subprotocols.is_empty() {
            let value = HeaderValue::from_str(&parts.subprotocols.join(", ")).map_err(|_| invalid("subprotocol"))?;
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        if let Some(offer) = parts.compression.as_ref().map(extensions::client_offers) {
            headers.insert(
                header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_str(&offer).map_err(|_| invalid("extension"))?,
            );
        }
        for (name, value) in parts.headers {
            headers.append(name, value.clone());
        }
        Ok(Http2Handshake { subprotocols: parts.subprotocols.to_vec(), compression: parts.compression, request })
    }

    /// The request to send (a copy).
    pub fn request(&self) -> Request<()> {
        let mut request = Request::new(());
        *request.method_mut() = self.request.method().clone();
        *request.version_mut() = self.request.version();
        *request.uri_mut() = self.request.uri().clone();
        *request.headers_mut() = self.request.headers().clone();
        request.extensions_mut().insert(Protocol("websocket".into()));
        request
    }

    /// Checks the server's answer: a 2xx status (RFC 8441 §5: the stream is
    /// then the WebSocket), at most one subprotocol, one that was offered,
    /// and only the extension offered.
    pub fn check(&self, response: Response<()>) -> Result<ClientAccepted, ClientError> {
        let refuse = |reason: String, response: Response<()>| ClientError::BadResponse {
            reason,
            response: Box::new(response),
            body: BytesMut::new(),
        };
        if !response.status().is_success() {
            let reason = format!("expected status 200, got {}", response.status());
            return Err(refuse(reason, response));
        }
        let agreed = chosen_subprotocol(response.headers(), &self.subprotocols)
            .and_then(|protocol| Ok((protocol, agreed_deflate(response.headers(), self.compression.as_ref())?)));
        match agreed {
            Ok((protocol, deflate)) => Ok(ClientAccepted { protocol, deflate, response, early: BytesMut::new() }),
            Err(reason) => Err(refuse(reason, response)),
        }
    }
}

#[cfg(test)]
#[path = "client_handshake_tests.rs"]
mod tests;
