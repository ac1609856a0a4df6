//! The client's side of the opening handshake (RFC 6455 §4.1): writing the
//! request and checking the server's response.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};

use super::extensions::is_token;
use super::handshake::{accept_key, header_has_token, is_valid_key};

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
    /// The `Sec-WebSocket-Extensions` offer, if any.
    pub extensions: Option<&'a str>,
    /// Any other headers (cookies, authorization, origin, user headers).
    pub headers: &'a HeaderMap,
}

/// Checks subprotocol names for a request: each an RFC 7230 token (so it
/// can neither break the header nor be confused with the list's commas and
/// spaces), none repeated (RFC 6455 §4.1).
pub fn check_subprotocols(protocols: &[String]) -> Result<(), String> {
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
pub fn check_host(host: &str) -> Result<(), String> {
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
    if let Some(extensions) = parts.extensions {
        if !is_field_value(extensions.as_bytes()) {
            return Err(format!("invalid Sec-WebSocket-Extensions offer {extensions:?}"));
        }
    }
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

/// Writes the handshake request, after checking every part of it (see
/// [`check_subprotocols`] and [`check_host`]; the resource must be a path and
/// query of visible ASCII; header values may hold no control character but
/// tab; `headers` may not hold `Host` or a header the handshake writes
/// itself). On an error nothing is written.
pub fn write_request(dst: &mut BytesMut, parts: &RequestParts<'_>) -> Result<(), String> {
    check_request(parts)?;
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
    if let Some(extensions) = parts.extensions {
        dst.put_slice(b"Sec-WebSocket-Extensions: ");
        dst.put_slice(extensions.as_bytes());
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

/// A parsed response head.
#[derive(Debug)]
pub struct ParsedResponse {
    /// Status and headers, with an empty body.
    pub response: Response<()>,
    /// How many bytes the head took.
    pub head_len: usize,
}

/// Parses an HTTP/1.1 response head from the start of `buf`; `Ok(None)` when
/// it is not complete yet.
pub fn parse_response(buf: &[u8], max_headers: usize) -> Result<Option<ParsedResponse>, String> {
    // Up to 128 headers are parsed on the stack; more need the heap.
    let mut on_stack = [httparse::EMPTY_HEADER; 128];
    let mut on_heap = Vec::new();
    let storage: &mut [httparse::Header<'_>] = if max_headers <= on_stack.len() {
        &mut on_stack[..max_headers]
    } else {
        on_heap.resize(max_headers, httparse::EMPTY_HEADER);
        &mut on_heap
    };
    let mut parsed = httparse::Response::new(storage);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed HTTP response: {e}")),
    };
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| "malformed HTTP response: status".to_owned())?;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| "malformed HTTP response: header name")?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| "malformed HTTP response: header value")?;
        response.headers_mut().append(name, value);
    }
    Ok(Some(ParsedResponse { response, head_len }))
}

/// Checks a `101` response against the request (RFC 6455 §4.1, items 1–6 of
/// the client's validation) and returns the subprotocol the server chose.
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
    let mut protocols = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter();
    let protocol = match (protocols.next(), protocols.next()) {
        (None, _) => None,
        (Some(value), None) => {
            let value = value.to_str().map_err(|_| "invalid 'Sec-WebSocket-Protocol' in the response")?.trim();
            if !offered.iter().any(|p| p == value) {
                return Err(format!("the server chose subprotocol {value:?}, which was not offered"));
            }
            Some(value.to_owned())
        }
        (Some(_), Some(_)) => return Err("more than one 'Sec-WebSocket-Protocol' in the response".into()),
    };
    Ok(protocol)
}

/// The first bytes of a refusal's body, kept with the error (at most 1 KiB).
pub fn body_excerpt(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(&bytes[..bytes.len().min(1024)])
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn response(lines: &str) -> Response<()> {
        parse_response(format!("{lines}\r\n\r\n").as_bytes(), 32).unwrap().unwrap().response
    }

    const GOOD: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    #[test]
    fn writes_the_request() {
        let mut out = BytesMut::new();
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://x"));
        let protocols = vec!["chat".to_owned(), "v2".to_owned()];
        write_request(
            &mut out,
            &RequestParts {
                resource: "/a?b=1",
                host: "[::1]:9001",
                key: KEY,
                subprotocols: &protocols,
                extensions: None,
                headers: &headers,
            },
        )
        .unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("GET /a?b=1 HTTP/1.1\r\nHost: [::1]:9001\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: chat, v2\r\n"));
        assert!(text.contains("origin: http://x\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    fn parts<'a>(protocols: &'a [String], headers: &'a HeaderMap) -> RequestParts<'a> {
        RequestParts {
            resource: "/",
            host: "example.com",
            key: KEY,
            subprotocols: protocols,
            extensions: None,
            headers,
        }
    }

    #[test]
    fn refuses_each_part_that_would_break_the_request_and_writes_nothing() {
        let none = HeaderMap::new();
        let good: Vec<String> = vec!["chat".into()];
        let mut with_host = HeaderMap::new();
        with_host.insert(header::HOST, HeaderValue::from_static("other.example"));
        let mut with_key = HeaderMap::new();
        with_key.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static(KEY));
        let mut with_protocol = HeaderMap::new();
        with_protocol.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("chat"));
        let mut with_obs = HeaderMap::new();
        with_obs.insert("x-obs", HeaderValue::from_bytes(b"a\xffb").unwrap());
        let protocols = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<String>>();
        let bad_protocols = [
            protocols(&["chat\r\nX-Injected: 1"]),
            protocols(&[""]),
            protocols(&["a b"]),
            protocols(&["a,b"]),
            protocols(&["\"chat\""]),
            protocols(&["chat;v=1"]),
            protocols(&["caf\u{e9}"]),
            protocols(&["chat", "chat"]),
        ];
        let mut cases: Vec<RequestParts<'_>> = bad_protocols.iter().map(|p| parts(p, &none)).collect();
        for resource in ["/a b", "/a\r\nX-Injected: 1", "", "a", "/\u{e9}", "/\x7f"] {
            cases.push(RequestParts { resource, ..parts(&good, &none) });
        }
        for host in ["", "a b", "h\r\nX-Injected: 1", "user@h", "h/path", "h\t", "h:port"] {
            cases.push(RequestParts { host, ..parts(&good, &none) });
        }
        cases.push(RequestParts { key: "k\r\nX-Injected: 1", ..parts(&good, &none) });
        cases.push(RequestParts { extensions: Some("permessage-deflate\r\nX-Injected: 1"), ..parts(&good, &none) });
        cases.push(parts(&good, &with_host));
        cases.push(parts(&good, &with_key));
        cases.push(parts(&good, &with_protocol));
        for case in &cases {
            let mut out = BytesMut::new();
            assert!(write_request(&mut out, case).is_err(), "{case:?}");
            assert!(out.is_empty(), "{case:?}");
        }
        // obs-text and tab are legal in a field value; the header is written as given.
        with_obs.insert("x-tab", HeaderValue::from_static("a\tb"));
        let mut out = BytesMut::new();
        write_request(&mut out, &parts(&good, &with_obs)).unwrap();
        let has = |line: &[u8]| out.windows(line.len()).any(|w| w == line);
        assert!(has(b"\r\nx-obs: a\xffb\r\n"), "{out:?}");
        assert!(has(b"\r\nx-tab: a\tb\r\n"), "{out:?}");
        // Sec-WebSocket-Protocol given as a header is allowed when no subprotocols are.
        assert!(write_request(&mut BytesMut::new(), &parts(&[], &with_protocol)).is_ok());
    }

    #[test]
    fn hosts() {
        for good in ["example.com", "example.com:8080", "[::1]", "[::1]:9001", "127.0.0.1:80", "xn--caf-dma.example"] {
            assert_eq!(check_host(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ":80",
            "h:",
            "h:port",
            "h:70000",
            "h:+80",
            "[::1",
            "[nope]",
            "[::1]x",
            "a:b:c",
            "h/p",
            "h?q",
            "h#f",
            "u@h",
            "h h",
            "h\t",
            "h\r\nX: 1",
            "caf\u{e9}",
        ] {
            assert!(check_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn accepts_a_good_response_with_extra_tokens() {
        let r = response(&GOOD.replace("Connection: Upgrade", "Connection: keep-alive, Upgrade"));
        assert_eq!(validate_response(&r, KEY, &[]), Ok(None));
    }

    #[test]
    fn rejects_each_bad_response() {
        let cases = [
            GOOD.replace("101 Switching Protocols", "200 OK"),
            GOOD.replace("Upgrade: websocket\r\n", ""),
            GOOD.replace("Connection: Upgrade\r\n", ""),
            GOOD.replace("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            format!("{GOOD}\r\nSec-WebSocket-Protocol: other"),
        ];
        for case in cases {
            assert!(validate_response(&response(&case), KEY, &["chat".into()]).is_err(), "{case}");
        }
    }

    #[test]
    fn reports_where_a_redirect_points() {
        let r = response("HTTP/1.1 302 Found\r\nLocation: ws://elsewhere/");
        let err = validate_response(&r, KEY, &[]).unwrap_err();
        assert!(err.contains("ws://elsewhere/"), "{err}");
    }

    #[test]
    fn returns_the_offered_protocol_chosen() {
        let r = response(&format!("{GOOD}\r\nSec-WebSocket-Protocol: chat"));
        assert_eq!(validate_response(&r, KEY, &["v1".into(), "chat".into()]), Ok(Some("chat".into())));
    }
}
