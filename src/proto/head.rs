//! An HTTP/1.1 head (request or response line and headers) arriving in
//! pieces: the one reader both opening handshakes and the proxy tunnel use.
//!
//! A [`HeadReader`] takes bytes as they come, says when the head is complete,
//! holds it to a size and a header-count bound, and hands back whatever was
//! received past the head (the peer's first WebSocket bytes, sent early).

use std::fmt;

use bytes::BytesMut;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

/// The reason phrase of a parsed response's status line, kept in its
/// extensions (for messages that quote the peer's own words).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReasonPhrase(pub(crate) String);

/// Bounds on a head being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    /// The most bytes the head (start line and headers, with the blank line
    /// that ends it) may take.
    pub max_bytes: usize,
    /// The most header fields it may hold.
    pub max_headers: usize,
}

/// Why a head could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadError {
    /// More than [`HeadLimits::max_bytes`] arrived without the head ending.
    TooLarge,
    /// More than [`HeadLimits::max_headers`] header fields.
    TooManyHeaders,
    /// Not an HTTP/1.x head; says what is wrong.
    Malformed(String),
}

/// A complete head, parsed, with the bytes that followed it.
#[derive(Debug)]
pub struct Head<T> {
    /// The request or response, with an empty body.
    pub message: T,
    /// Bytes received after the head.
    pub rest: BytesMut,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge => f.write_str("head too large"),
            HeadError::TooManyHeaders => f.write_str("too many headers"),
            HeadError::Malformed(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for HeadError {}

/// Collects the bytes of one HTTP head (see the [module docs](self)).
#[derive(Debug)]
pub struct HeadReader {
    buf: BytesMut,
    limits: HeadLimits,
    errors_at_end: bool,
}

impl HeadReader {
    /// A reader for one head within `limits`.
    pub fn new(limits: HeadLimits) -> Self {
        HeadReader { buf: BytesMut::new(), limits, errors_at_end: false }
    }

    /// Reports a malformed head only once its end (an empty line) has
    /// arrived, or as [`HeadError::TooLarge`] when the bound comes first: a
    /// peer that is not speaking HTTP is then told apart from one that
    /// floods, as a proxy's reply is judged.
    pub fn errors_at_end(mut self) -> Self {
        self.errors_at_end = true;
        self
    }

    /// How many more bytes may belong to the head: a driver that reads no
    /// more than this never takes bytes past the size bound off its stream.
    pub fn room(&self) -> usize {
        self.limits.max_bytes.saturating_sub(self.buf.len())
    }

    /// Takes `data` and tries to parse a request head; `Ok(None)` until it is
    /// complete.
    pub fn receive_request(&mut self, data: &[u8]) -> Result<Option<Head<Request<()>>>, HeadError> {
        self.receive(data, parse_request_head)
    }

    /// Takes `data` and tries to parse a response head; `Ok(None)` until it
    /// is complete.
    pub fn receive_response(&mut self, data: &[u8]) -> Result<Option<Head<Response<()>>>, HeadError> {
        self.receive(data, parse_response_head)
    }

    fn receive<T>(&mut self, data: &[u8], parse: Parse<T>) -> Result<Option<Head<T>>, HeadError> {
        self.buf.extend_from_slice(data);
        // Only the first `max_bytes` can hold the head, however the bytes
        // were cut into pieces.
        let window = &self.buf[..self.buf.len().min(self.limits.max_bytes)];
        let parsed = match parse(window, self.limits.max_headers) {
            Err(_) if self.errors_at_end && !window.windows(4).any(|w| w == b"\r\n\r\n") => Ok(None),
            parsed => parsed,
        };
        match parsed? {
            Some((message, head_len)) => {
                let rest = self.buf.split_off(head_len);
                self.buf.clear();
                Ok(Some(Head { message, rest }))
            }
            None if self.buf.len() >= self.limits.max_bytes => Err(HeadError::TooLarge),
            None => Ok(None),
        }
    }
}

/// A head parser: the message and the head's length, `Ok(None)` while incomplete.
type Parse<T> = fn(&[u8], usize) -> Result<Option<(T, usize)>, HeadError>;

/// Runs `parse` with room for `max_headers` headers: on the stack up to 128,
/// on the heap beyond.
fn with_header_storage<'b, R>(max_headers: usize, parse: impl FnOnce(&mut [httparse::Header<'b>]) -> R) -> R {
    let mut on_stack: [httparse::Header<'b>; 128] = [httparse::EMPTY_HEADER; 128];
    if max_headers <= on_stack.len() {
        parse(&mut on_stack[..max_headers])
    } else {
        parse(&mut vec![httparse::EMPTY_HEADER; max_headers])
    }
}

fn parse_error(e: httparse::Error, what: &str) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        e => HeadError::Malformed(format!("malformed HTTP {what}: {e}")),
    }
}

fn append_headers(
    headers: &mut http::HeaderMap,
    parsed: &[httparse::Header<'_>],
    bad: impl Fn(&str) -> HeadError,
) -> Result<(), HeadError> {
    for h in parsed {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad("header value"))?;
        headers.append(name, value);
    }
    Ok(())
}

/// Parses a request head from the start of `buf`: the request and the
/// head's length, or `Ok(None)` when it is not complete yet.
pub(super) fn parse_request_head(buf: &[u8], max_headers: usize) -> Result<Option<(Request<()>, usize)>, HeadError> {
    with_header_storage(max_headers, |storage| {
        let mut parsed = httparse::Request::new(storage);
        let head_len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(parse_error(e, "request")),
        };
        let bad = |what: &str| HeadError::Malformed(format!("malformed HTTP request: {what}"));
        let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes()).map_err(|_| bad("method"))?;
        let version = match parsed.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        let mut builder = Request::builder().method(method).uri(parsed.path.unwrap_or("/")).version(version);
        let headers = builder.headers_mut().ok_or_else(|| bad("request target"))?;
        append_headers(headers, parsed.headers, bad)?;
        let request = builder.body(()).map_err(|_| bad("request target"))?;
        Ok(Some((request, head_len)))
    })
}

/// Parses a response head from the start of `buf`: the response and the
/// head's length, or `Ok(None)` when it is not complete yet.
pub(super) fn parse_response_head(buf: &[u8], max_headers: usize) -> Result<Option<(Response<()>, usize)>, HeadError> {
    with_header_storage(max_headers, |storage| {
        let mut parsed = httparse::Response::new(storage);
        let head_len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(parse_error(e, "response")),
        };
        let bad = |what: &str| HeadError::Malformed(format!("malformed HTTP response: {what}"));
        let status = parsed.code.and_then(|code| StatusCode::from_u16(code).ok()).ok_or_else(|| bad("status"))?;
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        if let Some(reason) = parsed.reason.filter(|r| !r.is_empty()) {
            response.extensions_mut().insert(ReasonPhrase(reason.to_owned()));
        }
        append_headers(response.headers_mut(), parsed.headers, bad)?;
        Ok(Some((response, head_len)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits { max_bytes: 256, max_headers: 8 };

    #[test]
    fn byte_by_byte_then_the_rest() {
        let raw = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nEARLY";
        let head_len = raw.len() - 5;
        let mut reader = HeadReader::new(LIMITS);
        for (i, byte) in raw[..head_len - 1].iter().enumerate() {
            assert!(reader.receive_request(&[*byte]).unwrap().is_none(), "byte {i}");
        }
        let head = reader.receive_request(&raw[head_len - 1..]).unwrap().unwrap();
        assert_eq!(head.message.uri().path(), "/a");
        assert_eq!(&head.rest[..], b"EARLY");
    }

    #[test]
    fn size_bound_holds_however_the_bytes_are_cut() {
        let mut raw = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        raw.resize(300, b'a');
        raw.extend_from_slice(b"\r\n\r\n");
        // All at once, or in pieces: the head does not fit in 256 bytes.
        assert_eq!(HeadReader::new(LIMITS).receive_response(&raw).unwrap_err(), HeadError::TooLarge);
        let mut reader = HeadReader::new(LIMITS);
        let mut result = Ok(None);
        for chunk in raw.chunks(7) {
            result = reader.receive_response(chunk);
            if !matches!(result, Ok(None)) {
                break;
            }
        }
        assert_eq!(result.unwrap_err(), HeadError::TooLarge);
        // A head of exactly the bound is fine, with more bytes after it.
        let exact = HeadLimits { max_bytes: 19, max_headers: 8 };
        let head = HeadReader::new(exact).receive_response(b"HTTP/1.1 200 OK\r\n\r\nmore").unwrap().unwrap();
        assert_eq!(&head.rest[..], b"more");
        let mut reader = HeadReader::new(exact);
        assert_eq!(reader.room(), 19);
        assert!(reader.receive_response(b"HTTP/1.1 ").unwrap().is_none());
        assert_eq!(reader.room(), 10);
    }

    #[test]
    fn header_count_and_garbage() {
        let many: String = (0..9).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(HeadReader::new(LIMITS).receive_request(raw.as_bytes()).unwrap_err(), HeadError::TooManyHeaders);
        assert!(matches!(
            HeadReader::new(LIMITS).receive_request(b"\x16\x03\x01garbage\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(HeadReader::new(LIMITS).receive_response(b"SSH-2.0-x\r\n\r\n"), Err(HeadError::Malformed(_))));
        // Judged whole: garbage waits for its end, a flood is too large.
        let mut reader = HeadReader::new(LIMITS).errors_at_end();
        assert!(reader.receive_response(b"SSH-2.0-x\r\n").unwrap().is_none());
        assert!(matches!(reader.receive_response(b"\r\n"), Err(HeadError::Malformed(_))));
        let mut reader = HeadReader::new(LIMITS).errors_at_end();
        let mut result = Ok(None);
        for _ in 0..30 {
            result = reader.receive_response(b"xxxxxxxxxx\r\n");
            if !matches!(result, Ok(None)) {
                break;
            }
        }
        assert_eq!(result.unwrap_err(), HeadError::TooLarge);
        // More than 128 headers are allowed when asked for.
        let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        let limits = HeadLimits { max_bytes: 1 << 16, max_headers: 200 };
        let head = HeadReader::new(limits).receive_response(raw.as_bytes()).unwrap().unwrap();
        assert_eq!(head.message.headers().len(), 200);
    }
}
