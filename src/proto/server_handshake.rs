//! The server's side of the opening handshake (RFC 6455 §4.2) as a sans-IO
//! object: request bytes in, a decision and the response bytes out.
//!
//! A [`ServerPolicy`] holds what a server accepts (subprotocols, compression,
//! the origin policy, how a refusal is answered). [`ServerPolicy::answer`]
//! decides on a request that is already parsed (as hyper hands one over);
//! a [`ServerHandshake`] reads the request head from raw bytes first, within
//! [`HeadLimits`], and then decides the same way. Either way the decision is
//! an [`Accepted`], with the `101` response, or a [`Refusal`], with the
//! error response; both can be written out as bytes.
//!
//! ```
//! use http::HeaderMap;
//! use silverback::proto::head::HeadLimits;
//! use silverback::proto::server_handshake::{ServerHandshake, ServerPolicy, ServerStep};
//!
//! let policy = ServerPolicy { subprotocols: vec!["chat".into()], ..ServerPolicy::default() };
//! let limits = HeadLimits { max_bytes: 4096, max_headers: 32 };
//! let mut handshake = ServerHandshake::new(&policy, limits, |_| Ok(HeaderMap::new()));
//! let request = "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
//!                Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!                Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n";
//! let (first, second) = request.as_bytes().split_at(20);
//! assert!(matches!(handshake.receive(first), ServerStep::NeedMore));
//! let ServerStep::Accept(accepted) = handshake.receive(second) else { panic!() };
//! assert_eq!(accepted.protocol.as_deref(), Some("chat"));
//! assert!(accepted.response_bytes().starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
//! ```

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use super::extensions::{self, is_token, DeflateConfig, DeflateParams};
use super::handshake::{
    requested_subprotocols, same_origin, select_subprotocol, take_response_subprotocol, validate_extended_connect,
    validate_request, Rejection,
};
use super::head::{HeadError, HeadLimits, HeadReader};

/// Decides whether a request's origin is acceptable.
pub type CheckOrigin = Arc<dyn Fn(&Request<()>) -> bool + Send + Sync>;

/// Builds the HTTP response for a refused handshake.
pub type ErrorResponder = Arc<dyn Fn(&Rejection) -> Response<Bytes> + Send + Sync>;

/// Chooses the subprotocol for one request from the ones the client offered
/// (valid names only, in the client's order): `None` answers without one.
/// The choice must be one of the offered names, or the handshake is refused
/// with 500.
pub type SubprotocolSelector = Arc<dyn Fn(&Request<()>, &[&str]) -> Option<String> + Send + Sync>;

/// Decides permessage-deflate for one request: `None` declines it, `Some`
/// negotiates within that configuration.
pub type CompressionSelector = Arc<dyn Fn(&Request<()>) -> Option<DeflateConfig> + Send + Sync>;

/// What a server accepts, as plain data and closures.
#[derive(Clone, Default)]
pub struct ServerPolicy {
    /// The subprotocols spoken: the first of the client's list that is also
    /// in this one is chosen.
    pub subprotocols: Vec<String>,
    /// Chooses the subprotocol per request; when set, it replaces
    /// [`ServerPolicy::subprotocols`]. Called only when the client offered
    /// at least one valid subprotocol name.
    pub select_subprotocol: Option<SubprotocolSelector>,
    /// permessage-deflate, when it may be negotiated.
    pub compression: Option<DeflateConfig>,
    /// Decides permessage-deflate per request; when set, it replaces
    /// [`ServerPolicy::compression`].
    pub compression_for: Option<CompressionSelector>,
    /// The origin policy; `None` is the same-origin default
    /// ([`super::handshake::same_origin`]).
    pub check_origin: Option<CheckOrigin>,
    /// Builds the response for a refusal; `None` answers with the status,
    /// `Sec-WebSocket-Version: 13` and the reason as a plain-text body.
    pub error: Option<ErrorResponder>,
}

impl fmt::Debug for ServerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerPolicy")
            .field("subprotocols", &self.subprotocols)
            .field("custom_select_subprotocol", &self.select_subprotocol.is_some())
            .field("compression", &self.compression)
            .field("custom_compression_for", &self.compression_for.is_some())
            .field("custom_check_origin", &self.check_origin.is_some())
            .field("custom_error", &self.error.is_some())
            .finish()
    }
}

/// An accepted handshake: what was agreed and the response (`101`, or `200`
/// over HTTP/2).
#[derive(Debug)]
pub struct Accepted {
    /// The chosen subprotocol.
    pub protocol: Option<String>,
    /// The agreed permessage-deflate parameters, when compression is on.
    pub deflate: Option<DeflateParams>,
    /// The `101 Switching Protocols` response (`200` over HTTP/2), with
    /// every header to send.
    pub response: Response<()>,
    /// Bytes the client sent after its request head (WebSocket frames sent
    /// early); empty when the request came already parsed.
    pub early: BytesMut,
}

impl Accepted {
    /// The response as the exact bytes to write.
    pub fn response_bytes(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(256);
        write_head(&mut out, self.response.status(), self.response.headers());
        out.put_slice(b"\r\n");
        out
    }
}

/// A refused handshake: why, and the error response.
#[derive(Debug)]
pub struct Refusal {
    /// The status and the plain-text reason.
    pub rejection: Rejection,
    /// The error response (built by [`ServerPolicy::error`] when set).
    pub response: Response<Bytes>,
}

impl Refusal {
    /// The response as the exact bytes to write. Every error response says
    /// which WebSocket version the server speaks (RFC 6455 §4.4), has a
    /// `Content-Length` and ends the connection.
    pub fn response_bytes(&self) -> BytesMut {
        let (headers, body) = (self.response.headers(), self.response.body());
        let mut out = BytesMut::with_capacity(256 + body.len());
        write_head(&mut out, self.response.status(), headers);
        if !headers.contains_key(header::SEC_WEBSOCKET_VERSION) {
            out.put_slice(b"Sec-WebSocket-Version: 13\r\n");
        }
        if !headers.contains_key(header::CONTENT_LENGTH) {
            out.put_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        out.put_slice(b"Connection: close\r\n\r\n");
        out.put_slice(body);
        out
    }
}

impl ServerPolicy {
    /// Decides on a parsed request: checks it (RFC 6455 §4.2.1, or RFC 8441
    /// for an HTTP/2 extended CONNECT, then the origin policy), picks the
    /// subprotocol and compression (by the per-request selectors when set:
    /// the one decision for raw streams, hyper and axum alike), then asks
    /// `callback` for extra response
    /// headers or a rejection. An HTTP/1.1 request is answered with `101`;
    /// an HTTP/2 one with `200`, and its request carries the `:protocol` as a
    /// [`super::handshake::Protocol`] extension and its authority as `Host`.
    ///
    /// The callback's headers may choose the subprotocol with a
    /// `Sec-WebSocket-Protocol` naming one the client requested; they may
    /// not hold a header the handshake writes itself (`Upgrade`,
    /// `Connection`, `Sec-WebSocket-Accept`, `Sec-WebSocket-Extensions`).
    /// Breaking either rule is refused with 500.
    // Decided once per connection: the size of the refusal costs nothing.
    #[allow(clippy::result_large_err)]
    pub fn answer<F>(&self, request: &Request<()>, callback: F) -> Result<Accepted, Refusal>
    where
        F: FnOnce(&Request<()>) -> Result<HeaderMap, Rejection>,
    {
        self.decide(request, callback).map_err(|rejection| self.refuse(rejection))
    }

    fn decide<F>(&self, request: &Request<()>, callback: F) -> Result<Accepted, Rejection>
    where
        F: FnOnce(&Request<()>) -> Result<HeaderMap, Rejection>,
    {
        let headers = request.headers();
        // HTTP/2 (RFC 8441): the stream of an extended CONNECT is the
        // WebSocket, answered with 200 and no key.
        let http2 = request.method() == Method::CONNECT && request.version() == Version::HTTP_2;
        let accept = if http2 {
            validate_extended_connect(request)?;
            None
        } else {
            Some(validate_request(request.method(), request.version(), headers)?.accept)
        };
        let origin_ok = match &self.check_origin {
            Some(check) => check(request),
            None => same_origin(headers),
        };
        if !origin_ok {
            return Err(Rejection::new(StatusCode::FORBIDDEN, "request origin not allowed by Upgrader.check_origin"));
        }
        let internal = |reason: String| Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, reason);
        let ours = match &self.compression_for {
            Some(decide) => decide(request),
            None => self.compression,
        };
        let negotiated = ours.and_then(|ours| {
            let offers = headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS).iter();
            extensions::server_negotiate_response(offers.filter_map(|v| v.to_str().ok()), &ours)
        });
        let mut protocol = self.choose_subprotocol(request)?;

        let mut extra = callback(request)?;
        if extra.contains_key(header::SEC_WEBSOCKET_EXTENSIONS) {
            return Err(internal("extensions are negotiated by the upgrader, not by response headers".into()));
        }
        for name in [header::UPGRADE, header::CONNECTION, header::SEC_WEBSOCKET_ACCEPT] {
            if extra.contains_key(&name) {
                return Err(internal(format!("the handshake writes '{name}' itself; it cannot be a response header")));
            }
        }
        if let Some(chosen) = take_response_subprotocol(&mut extra, headers).map_err(internal)? {
            protocol = Some(chosen);
        }

        // The one place the response is put together, for raw streams and
        // hyper alike: 101 with the accept key, or 200 over HTTP/2.
        let mut response = Response::new(());
        if accept.is_some() {
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        }
        let out = response.headers_mut();
        if let Some(accept) = accept {
            out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            if let Ok(value) = HeaderValue::from_str(&accept) {
                out.insert(header::SEC_WEBSOCKET_ACCEPT, value);
            }
        }
        if let Some(value) = protocol.as_deref().and_then(|p| HeaderValue::from_str(p).ok()) {
            out.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        let mut last = None;
        for (name, value) in extra {
            // `None` repeats the previous name (a header given more than once).
            if let Some(name) = name {
                last = Some(name);
            }
            if let Some(name) = &last {
                out.append(name, value);
            }
        }
        let (deflate, extensions) = negotiated.map_or((None, None), |(params, header)| (Some(params), Some(header)));
        if let Some(value) = extensions.and_then(|value| HeaderValue::from_str(&value).ok()) {
            out.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
        Ok(Accepted { protocol, deflate, response, early: BytesMut::new() })
    }

    /// The subprotocol for `request`: by [`ServerPolicy::select_subprotocol`]
    /// when set (a choice the client did not offer is refused with 500),
    /// else the first of the client's that [`ServerPolicy::subprotocols`]
    /// holds.
    fn choose_subprotocol(&self, request: &Request<()>) -> Result<Option<String>, Rejection> {
        let headers = request.headers();
        let Some(select) = &self.select_subprotocol else {
            return Ok(select_subprotocol(headers, &self.subprotocols).map(str::to_owned));
        };
        let offered: Vec<&str> = requested_subprotocols(headers).into_iter().filter(|p| is_token(p)).collect();
        if offered.is_empty() {
            return Ok(None);
        }
        match select(request, &offered) {
            Some(chosen) if !offered.contains(&chosen.as_str()) => Err(Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the subprotocol selector chose {chosen:?}, which the client did not offer"),
            )),
            chosen => Ok(chosen),
        }
    }

    /// The refusal for `rejection`, with its response.
    pub fn refuse(&self, rejection: Rejection) -> Refusal {
        let response = match &self.error {
            Some(responder) => responder(&rejection),
            None => {
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
        };
        Refusal { rejection, response }
    }
}

/// What feeding bytes to a [`ServerHandshake`] gave.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerStep {
    /// The request head is not complete yet: feed more.
    NeedMore,
    /// Accepted: write [`Accepted::response_bytes`], then speak WebSocket.
    Accept(Accepted),
    /// Refused: write [`Refusal::response_bytes`] and close.
    Reject(Refusal),
}

/// The server's opening handshake on raw bytes (see the [module docs](self)).
///
/// `F` is the per-request callback of [`ServerPolicy::answer`]; it runs once,
/// on a request that passed the checks.
pub struct ServerHandshake<'p, F> {
    policy: &'p ServerPolicy,
    head: HeadReader,
    /// `None` once the handshake is decided.
    callback: Option<F>,
}

impl<F> fmt::Debug for ServerHandshake<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandshake")
            .field("policy", self.policy)
            .field("head", &self.head)
            .field("decided", &self.callback.is_none())
            .finish()
    }
}

impl<'p, F> ServerHandshake<'p, F>
where
    F: FnOnce(&Request<()>) -> Result<HeaderMap, Rejection>,
{
    /// A handshake that reads a request head within `limits` and answers it
    /// by `policy` and `callback`.
    pub fn new(policy: &'p ServerPolicy, limits: HeadLimits, callback: F) -> Self {
        ServerHandshake { policy, head: HeadReader::new(limits), callback: Some(callback) }
    }

    /// How many more bytes the request head may take (0 once decided): a
    /// driver that reads no more than this takes nothing past the bound off
    /// its stream.
    pub fn room(&self) -> usize {
        if self.callback.is_some() {
            self.head.room()
        } else {
            0
        }
    }

    /// Takes the next bytes from the client. A head too large or with too
    /// many headers is refused with 431, one that is not HTTP with 400; bytes
    /// after the head are kept as [`Accepted::early`]. Once decided, the
    /// handshake refuses any further bytes with 500.
    pub fn receive(&mut self, data: &[u8]) -> ServerStep {
        let Some(callback) = self.callback.take() else {
            let rejection = Rejection::new(StatusCode::INTERNAL_SERVER_ERROR, "the handshake is already decided");
            return ServerStep::Reject(self.policy.refuse(rejection));
        };
        let too_large = |reason: &str| Rejection::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, reason);
        let rejection = match self.head.receive_request(data) {
            Ok(None) => {
                self.callback = Some(callback);
                return ServerStep::NeedMore;
            }
            Ok(Some(head)) => {
                return match self.policy.answer(&head.message, callback) {
                    Ok(accepted) => ServerStep::Accept(Accepted { early: head.rest, ..accepted }),
                    Err(refusal) => ServerStep::Reject(refusal),
                }
            }
            Err(HeadError::TooLarge) => too_large("request head too large"),
            Err(HeadError::TooManyHeaders) => too_large("too many request headers"),
            Err(HeadError::Malformed(reason)) => Rejection::new(StatusCode::BAD_REQUEST, reason),
        };
        ServerStep::Reject(self.policy.refuse(rejection))
    }
}

/// Writes a status line and headers (without the blank line that ends the
/// head). The WebSocket headers get their usual spelling; control characters
/// in values become spaces, so that no value can end its line.
fn write_head(dst: &mut BytesMut, status: StatusCode, headers: &HeaderMap) {
    dst.put_slice(b"HTTP/1.1 ");
    dst.put_slice(status.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(status.canonical_reason().unwrap_or("Error").as_bytes());
    dst.put_slice(b"\r\n");
    for (name, value) in headers {
        dst.put_slice(spelling(name).as_bytes());
        dst.put_slice(b": ");
        dst.extend(value.as_bytes().iter().map(|&b| if b < 0x20 || b == 0x7f { b' ' } else { b }));
        dst.put_slice(b"\r\n");
    }
}

fn spelling(name: &HeaderName) -> &str {
    const USUAL: [(HeaderName, &str); 6] = [
        (header::UPGRADE, "Upgrade"),
        (header::CONNECTION, "Connection"),
        (header::SEC_WEBSOCKET_ACCEPT, "Sec-WebSocket-Accept"),
        (header::SEC_WEBSOCKET_PROTOCOL, "Sec-WebSocket-Protocol"),
        (header::SEC_WEBSOCKET_EXTENSIONS, "Sec-WebSocket-Extensions"),
        (header::SEC_WEBSOCKET_VERSION, "Sec-WebSocket-Version"),
    ];
    USUAL.iter().find(|(usual, _)| usual == name).map_or(name.as_str(), |(_, spelled)| *spelled)
}

#[cfg(test)]
#[path = "server_handshake_tests.rs"]
mod tests;
