//! The one error type of the crate.

use std::error::Error as StdError;
use std::sync::Arc;
use std::{fmt, io};

use http::StatusCode;

use crate::proto::{CloseCode, ProtocolError};

/// A close frame received from the peer, or an abnormal end of the connection,
/// as returned by the read methods once the connection is closing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseError {
    /// The peer's status code; 1005 when its close frame had none, 1006 when the
    /// connection ended without a close frame.
    pub code: CloseCode,
    /// The peer's reason, possibly empty.
    pub reason: String,
}

impl fmt::Display for CloseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "websocket: close {}", self.code)?;
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

impl StdError for CloseError {}

/// Everything that can go wrong in silverback.
///
/// Inspect with the `is_*` methods or by matching. Read errors are permanent:
/// once a read method fails, every later read returns the same error.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    Io(io::Error),
    /// The peer broke the protocol; the connection was failed with
    /// [`ProtocolError::close_code`] (1002, 1007 or 1009).
    Protocol(ProtocolError),
    /// The connection is closed: the peer sent a close frame (its code and
    /// reason are here) or the stream ended without one (code 1006).
    Closed(CloseError),
    /// A write after this side sent a close frame.
    CloseSent,
    /// A read or write deadline passed.
    Timeout,
    /// This server refused a client's opening handshake (a bad request, a
    /// foreign origin, a callback's rejection); the HTTP status it answered
    /// with is kept. The client-side counterpart is [`Error::BadResponse`].
    RequestRefused {
        /// The HTTP status of the refusal.
        status: StatusCode,
        /// Why the handshake failed.
        reason: String,
    },
    /// A control frame of more than 125 bytes, or a data type given to a
    /// control-frame method.
    InvalidControlFrame,
    /// A message writer was used after it was finished.
    WriterClosed,
    /// A URL that cannot be dialed (not `ws://` or `wss://`, no host, …); no
    /// connection was made.
    InvalidUrl(String),
    /// A handshake request that cannot be sent as configured (a header the
    /// handshake sets itself, say).
    InvalidRequest(String),
    /// The server's handshake response is not HTTP.
    InvalidResponse(String),
    /// The server answered our opening handshake, but not with a valid `101`
    /// (gorilla's `ErrBadHandshake`). The response carries the status, the
    /// headers and up to 1 KiB of the body. The server-side counterpart is
    /// [`Error::RequestRefused`].
    BadResponse {
        /// What was wrong.
        reason: String,
        /// The server's response.
        response: Box<http::Response<bytes::Bytes>>,
    },
    /// The proxy refused the tunnel or did not speak its protocol; an I/O
    /// failure during the proxy's handshake is the cause's source.
    Proxy(Cause),
    /// The TLS handshake or configuration failed; the cause's source is the
    /// TLS library's error (a `rustls::Error`, or the `io::Error` that
    /// carries one).
    Tls(Cause),
    /// A keepalive ping got no pong in time: the peer is gone.
    KeepaliveTimeout,
    /// A WebSocket over HTTP/2 (RFC 8441) could not be opened: the server
    /// did not choose `h2` by ALPN, did not enable the extended CONNECT
    /// protocol, or the HTTP/2 connection failed (hyper's error is then the
    /// cause's source).
    Http2(Cause),
    /// A message could not be encoded or decoded as JSON (feature `json`);
    /// the cause's source is the `serde_json::Error`.
    Json(Cause),
}

/// What lies beneath an [`Error::Tls`], [`Error::Proxy`], [`Error::Http2`] or [`Error::Json`]:
/// what failed, in words, and the error that made it fail when there is one
/// (its [`StdError::source`], also reachable with [`Cause::downcast_ref`]).
///
/// Cheap to clone: the source is shared.
#[derive(Clone)]
pub struct Cause {
    context: String,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

// Made only by the dialers and JSON, which a build may leave out.
#[cfg_attr(not(any(feature = "tokio", feature = "blocking")), allow(dead_code))]
impl Cause {
    /// A cause with no underlying error.
    pub(crate) fn new(context: impl Into<String>) -> Self {
        Cause { context: context.into(), source: None }
    }

    /// A cause made by `source`, described by `context` (which may be empty).
    pub(crate) fn with_source(context: impl Into<String>, source: impl StdError + Send + Sync + 'static) -> Self {
        Cause { context: context.into(), source: Some(Arc::new(source)) }
    }

    /// A cause made by an error that is already boxed (a caller's).
    pub(crate) fn with_boxed_source(context: impl Into<String>, source: Box<dyn StdError + Send + Sync>) -> Self {
        Cause { context: context.into(), source: Some(Arc::from(source)) }
    }

    /// What failed, without the underlying error's own message.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The underlying error as a `T`, when it is one. An `io::Error` that
    /// wraps a `T` (as TLS streams report TLS failures) is looked through.
    pub fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        let source: &(dyn StdError + 'static) = self.source.as_deref()?;
        if let Some(found) = source.downcast_ref::<T>() {
            return Some(found);
        }
        source.downcast_ref::<io::Error>()?.get_ref()?.downcast_ref::<T>()
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.source, self.context.is_empty()) {
            (Some(source), true) => source.fmt(f),
            (Some(source), false) => write!(f, "{}: {source}", self.context),
            (None, _) => f.write_str(&self.context),
        }
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Cause");
        d.field("context", &self.context);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for Cause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn StdError + 'static))
    }
}

/// The result type of silverback.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the peer closed the connection with one of `codes`.
    pub fn is_close(&self, codes: &[CloseCode]) -> bool {
        matches!(self, Error::Closed(e) if codes.contains(&e.code))
    }

    /// True when the connection closed with a code that is not in `expected`
    /// (1006 on an abrupt end counts as unexpected unless listed).
    pub fn is_unexpected_close(&self, expected: &[CloseCode]) -> bool {
        matches!(self, Error::Closed(e) if !expected.contains(&e.code))
    }

    /// The close details when the connection was closed.
    pub fn close_error(&self) -> Option<&CloseError> {
        match self {
            Error::Closed(e) => Some(e),
            _ => None,
        }
    }

    /// True when a message exceeded the read limit (the connection was closed with 1009).
    pub fn is_read_limit(&self) -> bool {
        matches!(self, Error::Protocol(ProtocolError::MessageTooBig { .. }))
    }

    /// The server's response when the handshake was refused.
    pub fn handshake_response(&self) -> Option<&http::Response<bytes::Bytes>> {
        match self {
            Error::BadResponse { response, .. } => Some(response),
            _ => None,
        }
    }

    /// True when a deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout | Error::KeepaliveTimeout)
            || matches!(self, Error::Io(e) if e.kind() == io::ErrorKind::TimedOut)
    }

    /// A copy of this error, for errors that must be returned again (reads
    /// after a failure). An I/O error is copied as its kind and message.
    pub(crate) fn replay(&self) -> Error {
        match self {
            Error::Io(e) => Error::Io(io::Error::new(e.kind(), e.to_string())),
            Error::Protocol(e) => Error::Protocol(e.clone()),
            Error::Closed(e) => Error::Closed(e.clone()),
            Error::CloseSent => Error::CloseSent,
            Error::Timeout => Error::Timeout,
            Error::RequestRefused { status, reason } => {
                Error::RequestRefused { status: *status, reason: reason.clone() }
            }
            Error::InvalidControlFrame => Error::InvalidControlFrame,
            Error::WriterClosed => Error::WriterClosed,
            Error::InvalidUrl(s) => Error::InvalidUrl(s.clone()),
            Error::InvalidRequest(s) => Error::InvalidRequest(s.clone()),
            Error::InvalidResponse(s) => Error::InvalidResponse(s.clone()),
            Error::BadResponse { reason, response } => {
                let mut copy = http::Response::new(response.body().clone());
                *copy.status_mut() = response.status();
                *copy.headers_mut() = response.headers().clone();
                Error::BadResponse { reason: reason.clone(), response: Box::new(copy) }
            }
            Error::Proxy(c) => Error::Proxy(c.clone()),
            Error::Http2(c) => Error::Http2(c.clone()),
            Error::Tls(c) => Error::Tls(c.clone()),
            Error::KeepaliveTimeout => Error::KeepaliveTimeout,
            Error::Json(c) => Error::Json(c.clone()),
        }
    }

    /// The 1006 error for a stream that ended without a close frame.
    pub(crate) fn abnormal_closure() -> Error {
        Error::Closed(CloseError { code: CloseCode::ABNORMAL_CLOSURE, reason: "unexpected EOF".into() })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "websocket: i/o error: {e}"),
            Error::Protocol(e) => write!(f, "websocket: protocol error: {e} (closed with {})", e.close_code()),
            Error::Closed(e) => e.fmt(f),
            Error::CloseSent => f.write_str("websocket: close sent"),
            Error::Timeout => f.write_str("websocket: deadline exceeded"),
            Error::RequestRefused { status, reason } => write!(f, "websocket: bad handshake ({status}): {reason}"),
            Error::InvalidControlFrame => f.write_str("websocket: invalid control frame"),
            Error::WriterClosed => f.write_str("websocket: write closed"),
            Error::InvalidUrl(s) => write!(f, "websocket: invalid URL {s}"),
            Error::InvalidRequest(s) => write!(f, "websocket: invalid request: {s}"),
            Error::InvalidResponse(s) => write!(f, "websocket: invalid handshake response: {s}"),
            Error::BadResponse { reason, response } => {
                write!(f, "websocket: bad handshake: {reason} (status {})", response.status())
            }
            Error::Proxy(s) => write!(f, "websocket: proxy: {s}"),
            Error::Http2(s) => write!(f, "websocket: HTTP/2: {s}"),
            Error::Tls(s) => write!(f, "websocket: tls: {s}"),
            Error::KeepaliveTimeout => f.write_str("websocket: keepalive timeout: no pong from the peer"),
            Error::Json(s) => write!(f, "websocket: json: {s}"),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Protocol(e) => Some(e),
            // The cause's own source: its words are already in this error's message.
            Error::Proxy(c) | Error::Tls(c) | Error::Http2(c) | Error::Json(c) => c.source(),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    /// Wraps an I/O error, unwrapping an [`Error`] that went through
    /// `io::Error` (as errors of [`crate::MessageReader`] and
    /// [`crate::MessageWriter`] do) back into itself.
    fn from(e: io::Error) -> Self {
        if !e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            return Error::Io(e);
        }
        let kind = e.kind();
        match e.into_inner().map(|inner| inner.downcast::<Error>()) {
            Some(Ok(inner)) => *inner,
            _ => Error::Io(kind.into()),
        }
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            Error::Timeout => io::Error::new(io::ErrorKind::TimedOut, e),
            Error::Closed(ref c) if c.code == CloseCode::ABNORMAL_CLOSURE => {
                io::Error::new(io::ErrorKind::UnexpectedEof, e)
            }
            Error::Protocol(_) => io::Error::new(io::ErrorKind::InvalidData, e),
            other => io::Error::other(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_error_formats_like_gorilla() {
        let e = CloseError { code: CloseCode::NORMAL, reason: "bye".into() };
        assert_eq!(e.to_string(), "websocket: close 1000 (normal): bye");
        let e = CloseError { code: CloseCode(4000), reason: String::new() };
        assert_eq!(e.to_string(), "websocket: close 4000");
    }

    #[test]
    fn close_predicates() {
        let e = Error::Closed(CloseError { code: CloseCode::GOING_AWAY, reason: String::new() });
        assert!(e.is_close(&[CloseCode::NORMAL, CloseCode::GOING_AWAY]));
        assert!(!e.is_unexpected_close(&[CloseCode::GOING_AWAY]));
        assert!(e.is_unexpected_close(&[CloseCode::NORMAL]));
        assert!(!Error::CloseSent.is_close(&[CloseCode::NORMAL]));
        assert!(!Error::CloseSent.is_unexpected_close(&[]));
    }

    #[test]
    fn replay_keeps_the_kind() {
        let e = Error::Io(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
        match e.replay() {
            Error::Io(copy) => assert_eq!(copy.kind(), io::ErrorKind::ConnectionReset),
            other => panic!("unexpected {other:?}"),
        }
        assert!(Error::Protocol(ProtocolError::MessageTooBig { size: 2, limit: 1 }).replay().is_read_limit());
    }

    #[test]
    fn causes_keep_their_source() {
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
        let e = Error::Proxy(Cause::with_source("SOCKS5 proxy: connection failed", reset));
        assert_eq!(e.to_string(), "websocket: proxy: SOCKS5 proxy: connection failed: reset by peer");
        let source = e.source().expect("the I/O error is the source");
        assert_eq!(source.downcast_ref::<io::Error>().map(io::Error::kind), Some(io::ErrorKind::ConnectionReset));
        let Error::Proxy(cause) = e.replay() else { panic!("replay changed the variant") };
        assert_eq!(cause.context(), "SOCKS5 proxy: connection failed");
        assert!(cause.downcast_ref::<io::Error>().is_some());

        // An error carried inside an io::Error is found through it.
        let inner =
            io::Error::new(io::ErrorKind::InvalidData, CloseError { code: CloseCode::NORMAL, reason: "x".into() });
        let cause = Cause::with_source("", inner);
        assert_eq!(cause.downcast_ref::<CloseError>().map(|c| c.code), Some(CloseCode::NORMAL));
        assert_eq!(cause.to_string(), "websocket: close 1000 (normal): x");

        let plain = Error::Tls(Cause::new("the TLS handshake stalled"));
        assert!(plain.source().is_none());
        assert_eq!(plain.to_string(), "websocket: tls: the TLS handshake stalled");
    }
}
