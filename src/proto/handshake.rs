//! The pure parts of the opening handshake (RFC 6455 §4): parsing the client's
//! request, deciding whether to accept it, and writing the server's response.
//!
//! The I/O around these (reading the request off a socket within a timeout,
//! serving it through hyper) lives in [`crate::upgrade`].

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use sha1::{Digest, Sha1};

use super::extensions::is_token;

/// RFC 6455 §1.3: the GUID appended to the client's key.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(WEBSOCKET_GUID);
    BASE64.encode(sha1.finalize())
}

/// Whether `key` is the base64 encoding of 16 bytes (RFC 6455 §4.1).
pub fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24 && BASE64.decode(key).is_ok_and(|raw| raw.len() == 16)
}

/// Whether any `name` header holds `token` in its comma-separated list,
/// compared without regard to ASCII case (RFC 7230 §7, RFC 6455 §4.2.1).
pub fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether `request` asks to upgrade to WebSocket: a `Connection` header with
/// the `upgrade` token and an `Upgrade` header with the `websocket` token.
pub fn is_websocket_upgrade<B>(request: &Request<B>) -> bool {
    header_has_token(request.headers(), header::CONNECTION, "upgrade")
        && header_has_token(request.headers(), header::UPGRADE, "websocket")
}

/// The subprotocols the client asks for, in its order of preference, from
/// every `Sec-WebSocket-Protocol` header (empty items dropped).
pub fn requested_subprotocols(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

/// The subprotocol to answer with: the first of the client's requested ones
/// (in its order) that is in `supported`. Only an RFC 7230 token can be
/// chosen, so an entry of `supported` that is not one never is, and nothing
/// but a token the client sent reaches the response.
pub fn select_subprotocol<'a>(headers: &'a HeaderMap, supported: &[String]) -> Option<&'a str> {
    requested_subprotocols(headers)
        .into_iter()
        .find(|wanted| is_token(wanted) && supported.iter().any(|ours| ours == wanted))
}

/// Takes a `Sec-WebSocket-Protocol` out of the response headers a server
/// callback gave, and checks that it names one subprotocol, a token the
/// client requested in `request`. `Ok(None)` when there is none; `Err` says
/// why it cannot be answered.
pub fn take_response_subprotocol(extra: &mut HeaderMap, request: &HeaderMap) -> Result<Option<String>, String> {
    let mut values = extra.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
    let chosen = match (values.next(), values.next()) {
        (None, _) => return Ok(None),
        (Some(_), Some(_)) => return Err("more than one 'Sec-WebSocket-Protocol' in the response headers".into()),
        (Some(value), None) => value,
    };
    let chosen = match chosen.to_str() {
        Ok(text) if is_token(text) => text.to_owned(),
        _ => return Err(format!("the response's 'Sec-WebSocket-Protocol' {chosen:?} is not one subprotocol name")),
    };
    if !requested_subprotocols(request).contains(&chosen.as_str()) {
        return Err(format!("the response's 'Sec-WebSocket-Protocol' {chosen:?} was not requested by the client"));
    }
    extra.remove(header::SEC_WEBSOCKET_PROTOCOL);
    Ok(Some(chosen))
}

/// The safe default origin policy: accept when there is no `Origin` header,
/// or when the host of the `Origin` URL equals the `Host` header (ASCII case
/// ignored, port included). `Origin: null` and unparsable origins are refused.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some((_scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Drop any userinfo, which is not part of the host.
    let authority = authority.rsplit('@').next().unwrap_or_default();
    authority.as_bytes().eq_ignore_ascii_case(host.as_bytes())
}

/// Why a handshake request was refused, with the HTTP status to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The status of the error response.
    pub status: StatusCode,
    /// A human-readable reason, sent as the response body by default.
    pub reason: String,
}

impl Rejection {
    /// A rejection with `status` and `reason`.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Rejection { status, reason: reason.into() }
    }
}

/// What a valid request asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidRequest {
    /// The `Sec-WebSocket-Accept` value to answer with.
    pub accept: String,
}

/// Checks a request against RFC 6455 §4.2.1, in the order gorilla/websocket
/// uses so that the status a client sees is the same: `Connection` (400),
/// `Upgrade` (426), method (405), HTTP version and `Host` (400),
/// `Sec-WebSocket-Version` (426), `Sec-WebSocket-Key` (400). The origin policy
/// is applied by the caller, which owns it.
pub fn validate_request(method: &Method, version: Version, headers: &HeaderMap) -> Result<ValidRequest, Rejection> {
    const NOT_WEBSOCKET: &str = "the client is not using the websocket protocol";
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            format!("{NOT_WEBSOCKET}: 'upgrade' token not found in 'Connection' header"),
        ));
    }
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err(Rejection::new(
            StatusCode::UPGRADE_REQUIRED,
            format!("{NOT_WEBSOCKET}: 'websocket' token not found in 'Upgrade' header"),
        ));
    }
    if method != Method::GET {
        return Err(Rejection::new(StatusCode::METHOD_NOT_ALLOWED, "request method is not GET"));
    }
    if version < Version::HTTP_11 {
        return Err(Rejection::new(StatusCode::BAD_REQUEST, "the HTTP version must be at least 1.1"));
    }
    if headers.get_all(header::HOST).iter().count() != 1 {
        return Err(Rejection::new(StatusCode::BAD_REQUEST, "exactly one 'Host' header is required"));
    }
    if !header_has_token(headers, header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(Rejection::new(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported version: 13 not found in 'Sec-WebSocket-Version' header",
        ));
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) if is_valid_key(key.as_bytes()) => key,
        _ => {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "'Sec-WebSocket-Key' header must be one base64 encoded 16-byte value",
            ))
        }
    };
    Ok(ValidRequest { accept: accept_key(key.as_bytes()) })
}

/// The outcome of [`parse_request`] on a complete request head.
#[derive(Debug)]
pub struct ParsedRequest {
    /// The request line and headers, with an empty body.
    pub request: Request<()>,
    /// How many bytes of the input the head took; anything after it is
    /// WebSocket data the client sent early.
    pub head_len: usize,
}

/// Parses an HTTP/1.1 request head from the start of `buf`.
///
/// `Ok(None)` means the head is not complete yet. `max_headers` bounds the
/// header count (more gives 431).
pub fn parse_request(buf: &[u8], max_headers: usize) -> Result<Option<ParsedRequest>, Rejection> {
    // Up to 128 headers are parsed on the stack; more need the heap.
    let mut on_stack = [httparse::EMPTY_HEADER; 128];
    let mut on_heap = Vec::new();
    let storage: &mut [httparse::Header<'_>] = if max_headers <= on_stack.len() {
        &mut on_stack[..max_headers]
    } else {
        on_heap.resize(max_headers, httparse::EMPTY_HEADER);
        &mut on_heap
    };
    let mut parsed = httparse::Request::new(storage);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Rejection::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many request headers"))
        }
        Err(e) => return Err(Rejection::new(StatusCode::BAD_REQUEST, format!("malformed HTTP request: {e}"))),
    };
    let bad = |what: &str| Rejection::new(StatusCode::BAD_REQUEST, format!("malformed HTTP request: {what}"));
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes()).map_err(|_| bad("method"))?;
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut builder = Request::builder().method(method).uri(parsed.path.unwrap_or("/")).version(version);
    let headers = builder.headers_mut().ok_or_else(|| bad("request target"))?;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad("header value"))?;
        headers.append(name, value);
    }
    let request = builder.body(()).map_err(|_| bad("request target"))?;
    Ok(Some(ParsedRequest { request, head_len }))
}

/// Writes the `101 Switching Protocols` response, with the chosen subprotocol
/// and any extra headers (control characters in their values, and in
/// `accept` and `subprotocol`, become spaces, so a header cannot be split).
pub fn write_switching_response(dst: &mut BytesMut, accept: &str, subprotocol: Option<&str>, extra: &HeaderMap) {
    dst.put_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    put_header(dst, b"Sec-WebSocket-Accept", accept.as_bytes());
    if let Some(protocol) = subprotocol {
        put_header(dst, b"Sec-WebSocket-Protocol", protocol.as_bytes());
    }
    for (name, value) in extra {
        put_header(dst, name.as_str().as_bytes(), value.as_bytes());
    }
    dst.put_slice(b"\r\n");
}

/// Writes an error response with a plain-text body; every error response says
/// which WebSocket version the server speaks (RFC 6455 §4.4).
pub fn write_error_response(dst: &mut BytesMut, status: StatusCode, headers: &HeaderMap, body: &[u8]) {
    dst.put_slice(b"HTTP/1.1 ");
    dst.put_slice(status.as_str().as_bytes());
    dst.put_u8(b' ');
    dst.put_slice(status.canonical_reason().unwrap_or("Error").as_bytes());
    dst.put_slice(b"\r\n");
    for (name, value) in headers {
        put_header(dst, name.as_str().as_bytes(), value.as_bytes());
    }
    if !headers.contains_key(header::SEC_WEBSOCKET_VERSION) {
        dst.put_slice(b"Sec-WebSocket-Version: 13\r\n");
    }
    if !headers.contains_key(header::CONTENT_LENGTH) {
        dst.put_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    dst.put_slice(b"Connection: close\r\n\r\n");
    dst.put_slice(body);
}

fn put_header(dst: &mut BytesMut, name: &[u8], value: &[u8]) {
    dst.put_slice(name);
    dst.put_slice(b": ");
    dst.extend(value.iter().map(|&b| if b < 0x20 || b == 0x7f { b' ' } else { b }));
    dst.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("Host", "example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "keep-alive, Upgrade"),
            ("Sec-WebSocket-Key", KEY),
            ("Sec-WebSocket-Version", "13"),
        ]
    }

    #[test]
    fn rfc_accept_key() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn key_must_be_16_bytes_of_base64() {
        assert!(is_valid_key(KEY.as_bytes()));
        assert!(!is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!is_valid_key(b"AAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
        assert!(!is_valid_key(b"!!!!!!!!!!!!!!!!!!!!!!=="));
    }

    #[test]
    fn a_good_request_is_accepted() {
        let ok = validate_request(&Method::GET, Version::HTTP_11, &headers(&good())).unwrap();
        assert_eq!(ok.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn each_bad_request_gets_its_status() {
        let without =
            |name: &str| -> HeaderMap { headers(&good().into_iter().filter(|(k, _)| *k != name).collect::<Vec<_>>()) };
        let check = |method: Method, version: Version, h: HeaderMap, status: StatusCode| {
            let err = validate_request(&method, version, &h).unwrap_err();
            assert_eq!(err.status, status, "{}", err.reason);
        };
        check(Method::GET, Version::HTTP_11, without("Connection"), StatusCode::BAD_REQUEST);
        check(Method::GET, Version::HTTP_11, without("Upgrade"), StatusCode::UPGRADE_REQUIRED);
        check(Method::POST, Version::HTTP_11, headers(&good()), StatusCode::METHOD_NOT_ALLOWED);
        check(Method::GET, Version::HTTP_10, headers(&good()), StatusCode::BAD_REQUEST);
        check(Method::GET, Version::HTTP_11, without("Host"), StatusCode::BAD_REQUEST);
        check(Method::GET, Version::HTTP_11, without("Sec-WebSocket-Version"), StatusCode::UPGRADE_REQUIRED);
        let mut v8 = without("Sec-WebSocket-Version");
        v8.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        check(Method::GET, Version::HTTP_11, v8, StatusCode::UPGRADE_REQUIRED);
        check(Method::GET, Version::HTTP_11, without("Sec-WebSocket-Key"), StatusCode::BAD_REQUEST);
        let mut two_keys = headers(&good());
        two_keys.append(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static(KEY));
        check(Method::GET, Version::HTTP_11, two_keys, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn tokens_are_matched_in_lists_without_case() {
        let h = headers(&[("Connection", "keep-alive,  UPGRADE "), ("Upgrade", "x-websocket")]);
        assert!(header_has_token(&h, header::CONNECTION, "upgrade"));
        assert!(!header_has_token(&h, header::UPGRADE, "websocket"));
    }

    #[test]
    fn origin_policy() {
        assert!(same_origin(&headers(&[("Host", "a.example:8080")])));
        assert!(same_origin(&headers(&[("Host", "A.example:8080"), ("Origin", "https://a.EXAMPLE:8080")])));
        assert!(!same_origin(&headers(&[("Host", "a.example:8080"), ("Origin", "https://a.example")])));
        assert!(!same_origin(&headers(&[("Host", "a.example"), ("Origin", "https://evil.example")])));
        assert!(!same_origin(&headers(&[("Host", "a.example"), ("Origin", "null")])));
    }

    #[test]
    fn subprotocols_in_client_order() {
        let h = headers(&[("Sec-WebSocket-Protocol", "chat, ,superchat"), ("Sec-WebSocket-Protocol", "v2")]);
        assert_eq!(requested_subprotocols(&h), vec!["chat", "superchat", "v2"]);
    }

    #[test]
    fn only_a_requested_token_is_selected() {
        let ours = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let h = headers(&[("Sec-WebSocket-Protocol", "a b, \"chat\", chat;v=1, v2, chat")]);
        assert_eq!(select_subprotocol(&h, &ours(&["chat"])), Some("chat"));
        assert_eq!(select_subprotocol(&h, &ours(&["v2", "chat"])), Some("v2"), "the client's order wins");
        for never in ["a b", "\"chat\"", "chat;v=1", "chat\r\nX-Injected: 1", ""] {
            assert_eq!(select_subprotocol(&h, &ours(&[never])), None, "{never:?}");
        }
        assert_eq!(select_subprotocol(&headers(&[]), &ours(&["chat"])), None);
    }

    #[test]
    fn a_response_subprotocol_must_be_one_requested_token() {
        let request = headers(&[("Sec-WebSocket-Protocol", "chat, v2, a b")]);
        let mut extra = headers(&[("Sec-WebSocket-Protocol", "v2"), ("X-Other", "1")]);
        assert_eq!(take_response_subprotocol(&mut extra, &request), Ok(Some("v2".to_owned())));
        assert!(!extra.contains_key(header::SEC_WEBSOCKET_PROTOCOL), "taken out, to be written once");
        assert!(extra.contains_key("x-other"));
        assert_eq!(take_response_subprotocol(&mut extra, &request), Ok(None));
        for bad in [
            vec![("Sec-WebSocket-Protocol", "mqtt")],
            vec![("Sec-WebSocket-Protocol", "chat, v2")],
            vec![("Sec-WebSocket-Protocol", "a b")],
            vec![("Sec-WebSocket-Protocol", "")],
            vec![("Sec-WebSocket-Protocol", "chat"), ("Sec-WebSocket-Protocol", "v2")],
        ] {
            let mut extra = headers(&bad);
            assert!(take_response_subprotocol(&mut extra, &request).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parse_request_waits_for_the_whole_head_and_reports_its_length() {
        let raw = format!("GET /chat?x=1 HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: {KEY}\r\n\r\nEXTRA");
        for cut in 0..raw.len() - 5 {
            assert!(parse_request(&raw.as_bytes()[..cut], 16).unwrap().is_none(), "cut {cut}");
        }
        let parsed = parse_request(raw.as_bytes(), 16).unwrap().unwrap();
        assert_eq!(parsed.head_len, raw.len() - 5);
        assert_eq!(parsed.request.uri().path(), "/chat");
        assert_eq!(parsed.request.uri().query(), Some("x=1"));
        assert_eq!(parsed.request.headers()[header::HOST], "h");
    }

    #[test]
    fn parse_request_bounds_headers_and_rejects_garbage() {
        let many: String = (0..20).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_request(raw.as_bytes(), 8).unwrap_err().status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(parse_request(b"\x16\x03\x01garbage\r\n\r\n", 8).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn responses_are_well_formed_and_cannot_be_split() {
        let mut out = BytesMut::new();
        let extra = headers(&[("Set-Cookie", "a=b")]);
        write_switching_response(&mut out, "abc=", Some("chat"), &extra);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: abc=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(text.contains("set-cookie: a=b\r\n"));
        assert!(text.ends_with("\r\n\r\n"));

        // Called directly with strings that would split a header: each stays on its line.
        let mut out = BytesMut::new();
        write_switching_response(&mut out, "abc=\r\nX-A: 1", Some("chat\r\nX-B: 2"), &HeaderMap::new());
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(text.matches("\r\n").count(), 6, "{text:?}");
        assert!(text.contains("Sec-WebSocket-Accept: abc=  X-A: 1\r\n"), "{text:?}");
        assert!(text.contains("Sec-WebSocket-Protocol: chat  X-B: 2\r\n"), "{text:?}");

        let mut out = BytesMut::new();
        write_error_response(&mut out, StatusCode::FORBIDDEN, &HeaderMap::new(), b"no");
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("Content-Length: 2\r\n"));
        assert!(text.ends_with("\r\n\r\nno"));
    }
}
