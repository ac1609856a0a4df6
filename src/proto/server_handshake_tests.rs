//! Unit tests of the server handshake, without sockets.

use super::*;
use crate::proto::head::parse_response_head;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const LIMITS: HeadLimits = HeadLimits { max_bytes: 1024, max_headers: 16 };

type Callback = fn(&Request<()>) -> Result<HeaderMap, Rejection>;

fn nothing(_: &Request<()>) -> Result<HeaderMap, Rejection> {
    Ok(HeaderMap::new())
}

/// A good request with `extra` header lines (each ending in CRLF).
fn request(extra: &str) -> String {
    format!(
        "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

fn step(policy: &ServerPolicy, raw: &[u8], callback: Callback) -> ServerStep {
    ServerHandshake::new(policy, LIMITS, callback).receive(raw)
}

fn accepted(policy: &ServerPolicy, raw: &str) -> Accepted {
    match step(policy, raw.as_bytes(), nothing) {
        ServerStep::Accept(accepted) => accepted,
        other => panic!("expected an accept, got {other:?}"),
    }
}

fn refused(policy: &ServerPolicy, raw: &str, callback: Callback) -> Refusal {
    match step(policy, raw.as_bytes(), callback) {
        ServerStep::Reject(refusal) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn byte_by_byte_then_early_data() {
    let policy = ServerPolicy::default();
    let raw = format!("{}\x01\x00early", request(""));
    let head_len = raw.len() - 7;
    let mut handshake = ServerHandshake::new(&policy, LIMITS, nothing);
    for (i, byte) in raw.as_bytes()[..head_len - 1].iter().enumerate() {
        assert!(matches!(handshake.receive(&[*byte]), ServerStep::NeedMore), "byte {i}");
        assert_eq!(handshake.room(), LIMITS.max_bytes - i - 1);
    }
    let ServerStep::Accept(accepted) = handshake.receive(&raw.as_bytes()[head_len - 1..]) else { panic!() };
    assert_eq!(&accepted.early[..], b"\x01\x00early");
    assert_eq!(handshake.room(), 0);
    // Decided once: more bytes are refused.
    assert!(matches!(handshake.receive(b"x"), ServerStep::Reject(r) if r.rejection.status == 500));
}

#[test]
fn head_split_across_reads() {
    let policy = ServerPolicy::default();
    let raw = format!("{}EARLY", request(""));
    for cut in 1..raw.len() - 5 {
        let mut handshake = ServerHandshake::new(&policy, LIMITS, nothing);
        assert!(matches!(handshake.receive(&raw.as_bytes()[..cut]), ServerStep::NeedMore), "cut {cut}");
        let ServerStep::Accept(accepted) = handshake.receive(&raw.as_bytes()[cut..]) else { panic!("cut {cut}") };
        assert_eq!(&accepted.early[..], b"EARLY");
    }
}

#[test]
fn the_101() {
    let accepted = accepted(&ServerPolicy::default(), &request(""));
    assert_eq!((&accepted.protocol, &accepted.deflate), (&None, &None));
    assert_eq!(accepted.response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(accepted.response.headers()[header::SEC_WEBSOCKET_ACCEPT], ACCEPT);
    let bytes = accepted.response_bytes();
    assert_eq!(
        text(&bytes),
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
        )
    );
    let (parsed, len) = parse_response_head(&bytes, 16).unwrap().unwrap();
    assert_eq!(len, bytes.len());
    assert_eq!(parsed.headers(), accepted.response.headers());
}

#[test]
fn limits_are_431() {
    let policy = ServerPolicy::default();
    let filler: String = (0..20).map(|i| format!("X-Filler-{i}: {}\r\n", "a".repeat(60))).collect();
    let refusal = refused(&policy, &request(&filler), nothing);
    assert_eq!(refusal.rejection.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(refusal.rejection.reason, "request head too large");
    // In pieces too: the refusal comes once the bound is reached.
    let raw = request(&filler);
    let mut handshake = ServerHandshake::new(&policy, LIMITS, nothing);
    let mut outcome = ServerStep::NeedMore;
    let mut fed = 0;
    for chunk in raw.as_bytes().chunks(100) {
        fed += chunk.len();
        outcome = handshake.receive(chunk);
        if !matches!(outcome, ServerStep::NeedMore) {
            break;
        }
    }
    assert!(matches!(outcome, ServerStep::Reject(r) if r.rejection.status == 431));
    assert!((LIMITS.max_bytes..LIMITS.max_bytes + 100).contains(&fed), "{fed}");

    let many: String = (0..12).map(|i| format!("X-{i}: v\r\n")).collect();
    let refusal = refused(&policy, &request(&many), nothing);
    assert_eq!(refusal.rejection.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(refusal.rejection.reason, "too many request headers");
}

#[test]
fn every_rejection_status() {
    let policy = ServerPolicy::default();
    let good = request("");
    let cases: Vec<(String, u16)> = vec![
        ("\x16\x03\x01garbage\r\n\r\n".into(), 400),
        (good.replace("keep-alive, Upgrade", "keep-alive"), 400),
        (good.replace("Upgrade: websocket", "Upgrade: h2c"), 426),
        (good.replace("GET", "POST"), 405),
        (good.replace("HTTP/1.1", "HTTP/1.0"), 400),
        (good.replace("Host: example.com\r\n", ""), 400),
        (good.replace("Host: example.com\r\n", "Host: a\r\nHost: b\r\n"), 400),
        (good.replace("Version: 13", "Version: 8"), 426),
        (good.replace(KEY, "c2hvcnQ="), 400),
        (request(&format!("Sec-WebSocket-Key: {KEY}\r\n")), 400),
        (request("Origin: https://evil.example\r\n"), 403),
    ];
    for (raw, status) in cases {
        let refusal = refused(&policy, &raw, nothing);
        assert_eq!(refusal.rejection.status, status, "{raw:?}: {}", refusal.rejection.reason);
        assert_eq!(refusal.response.status(), status);
        let bytes = text(&refusal.response_bytes());
        assert!(bytes.starts_with(&format!("HTTP/1.1 {status} ")), "{bytes}");
        assert!(bytes.contains("Sec-WebSocket-Version: 13\r\n"), "{bytes}");
        assert!(bytes.contains("Connection: close\r\n"), "{bytes}");
        assert!(bytes.ends_with(&format!("\r\n\r\n{}\n", refusal.rejection.reason)), "{bytes}");
        if status == 426 {
            assert!(bytes.contains("Upgrade: websocket\r\n"), "{bytes}");
        }
    }
}

#[test]
fn origin_policy_can_be_replaced() {
    let policy = ServerPolicy { check_origin: Some(Arc::new(|_| true)), ..ServerPolicy::default() };
    accepted(&policy, &request("Origin: https://evil.example\r\n"));
    let policy = ServerPolicy { check_origin: Some(Arc::new(|_| false)), ..ServerPolicy::default() };
    assert_eq!(refused(&policy, &request(""), nothing).rejection.status, 403);
    accepted(&ServerPolicy::default(), &request("Origin: http://example.com\r\n"));
}

#[test]
fn the_callback_adds_headers_chooses_or_rejects() {
    let policy = ServerPolicy { subprotocols: vec!["chat".into()], ..ServerPolicy::default() };
    let raw = request("Sec-WebSocket-Protocol: chat, v2\r\n");
    let add = |_: &Request<()>| {
        let mut extra = HeaderMap::new();
        extra.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        extra.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        extra.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("v2"));
        Ok(extra)
    };
    let ServerStep::Accept(accepted) = step(&policy, raw.as_bytes(), add) else { panic!() };
    assert_eq!(accepted.protocol.as_deref(), Some("v2"));
    let bytes = text(&accepted.response_bytes());
    assert!(bytes.contains("set-cookie: a=1\r\nset-cookie: b=2\r\n"), "{bytes}");
    assert_eq!(bytes.matches("Sec-WebSocket-Protocol: v2\r\n").count(), 1, "{bytes}");

    let unauthorized: Callback = |_| Err(Rejection::new(StatusCode::UNAUTHORIZED, "no token"));
    let refusal = refused(&policy, &raw, unauthorized);
    assert_eq!((refusal.rejection.status.as_u16(), refusal.rejection.reason.as_str()), (401, "no token"));
    // Not called for a request that fails the checks.
    let never: Callback = |_| panic!("called");
    assert_eq!(refused(&policy, &raw.replace("GET", "PUT"), never).rejection.status, 405);

    let bad_headers: [Callback; 5] = [
        |_| Ok(HeaderMap::from_iter([(header::UPGRADE, HeaderValue::from_static("x"))])),
        |_| Ok(HeaderMap::from_iter([(header::CONNECTION, HeaderValue::from_static("x"))])),
        |_| Ok(HeaderMap::from_iter([(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static("x"))])),
        |_| Ok(HeaderMap::from_iter([(header::SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_static("x"))])),
        |_| Ok(HeaderMap::from_iter([(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("mqtt"))])),
    ];
    for callback in bad_headers {
        assert_eq!(refused(&policy, &raw, callback).rejection.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}

#[test]
fn negotiation() {
    let policy = ServerPolicy {
        subprotocols: vec!["v2".into(), "chat".into()],
        compression: Some(DeflateConfig::default()),
        ..ServerPolicy::default()
    };
    let raw = request(
        "Sec-WebSocket-Protocol: chat, v2\r\n\
         Sec-WebSocket-Extensions: x-unknown, permessage-deflate; client_max_window_bits\r\n",
    );
    let agreed = accepted(&policy, &raw);
    assert_eq!(agreed.protocol.as_deref(), Some("chat"), "the client's order wins");
    let params = agreed.deflate.expect("deflate agreed");
    assert!(!params.server_no_context_takeover && !params.client_no_context_takeover);
    let bytes = text(&agreed.response_bytes());
    assert!(bytes.contains("Sec-WebSocket-Protocol: chat\r\n"), "{bytes}");
    assert!(bytes.contains("Sec-WebSocket-Extensions: permessage-deflate"), "{bytes}");

    // Compression off: the offer is ignored; no subprotocol in common: none.
    let plain = accepted(&ServerPolicy::default(), &raw);
    assert_eq!((&plain.protocol, &plain.deflate), (&None, &None));
    assert!(!text(&plain.response_bytes()).contains("Sec-WebSocket-Extensions"));
}

#[test]
fn per_request_selectors_see_the_request() {
    let policy = ServerPolicy {
        subprotocols: vec!["never".into()],
        select_subprotocol: Some(Arc::new(|request, offered| {
            assert_eq!(offered, ["chat", "v2"], "valid names, in the client's order");
            request.headers().get("x-pick").map(|v| v.to_str().unwrap().to_owned())
        })),
        compression: None,
        compression_for: Some(Arc::new(|request| {
            let agent = request.headers().get(header::USER_AGENT).map(|v| v.as_bytes());
            (agent != Some(b"broken")).then(|| DeflateConfig { server_max_window_bits: 9, ..DeflateConfig::default() })
        })),
        ..ServerPolicy::default()
    };
    let offers = "Sec-WebSocket-Protocol: chat, a b, v2\r\nSec-WebSocket-Extensions: permessage-deflate\r\n";

    let agreed = accepted(&policy, &request(&format!("{offers}X-Pick: v2\r\n")));
    assert_eq!(agreed.protocol.as_deref(), Some("v2"));
    assert_eq!(agreed.deflate.map(|d| d.server_max_window_bits), Some(9));
    let bytes = text(&agreed.response_bytes());
    assert!(bytes.contains("Sec-WebSocket-Protocol: v2\r\n"), "{bytes}");
    assert!(bytes.contains("server_max_window_bits=9"), "{bytes}");

    let agreed = accepted(&policy, &request(&format!("{offers}User-Agent: broken\r\n")));
    assert_eq!((&agreed.protocol, &agreed.deflate), (&None, &None), "the selector may choose none");
    let bytes = text(&agreed.response_bytes());
    assert!(!bytes.contains("Sec-WebSocket-Protocol") && !bytes.contains("Sec-WebSocket-Extensions"), "{bytes}");

    for unoffered in ["mqtt", "a b", "chat, v2"] {
        let refusal = refused(&policy, &request(&format!("{offers}X-Pick: {unoffered}\r\n")), nothing);
        assert_eq!(refusal.rejection.status, StatusCode::INTERNAL_SERVER_ERROR, "{unoffered}");
        assert!(refusal.rejection.reason.contains("did not offer"), "{}", refusal.rejection.reason);
    }
}

#[test]
fn a_parsed_request_gets_the_same_answer() {
    let policy = ServerPolicy {
        subprotocols: vec!["chat".into()],
        compression: Some(DeflateConfig::default()),
        ..ServerPolicy::default()
    };
    let raw = request("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n");
    let (parsed, _) = crate::proto::head::parse_request_head(raw.as_bytes(), 16).unwrap().unwrap();
    let direct = policy.answer(&parsed, nothing).unwrap();
    let fed = accepted(&policy, &raw);
    assert_eq!(direct.response.headers(), fed.response.headers());
    assert_eq!(direct.response_bytes(), fed.response_bytes());
    assert_eq!((direct.protocol, direct.deflate), (fed.protocol, fed.deflate));
}

#[test]
fn a_custom_error_response_is_written_as_given() {
    let policy = ServerPolicy {
        error: Some(Arc::new(|rejection: &Rejection| {
            let mut response = Response::new(Bytes::from_static(b"{}"));
            *response.status_mut() = rejection.status;
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        })),
        ..ServerPolicy::default()
    };
    let refusal = refused(&policy, &request("").replace("GET", "POST"), nothing);
    let bytes = text(&refusal.response_bytes());
    assert!(bytes.starts_with("HTTP/1.1 405 Method Not Allowed\r\ncontent-type: application/json\r\n"), "{bytes}");
    assert!(bytes.contains("Content-Length: 2\r\n"), "{bytes}");
    assert!(bytes.ends_with("\r\n\r\n{}"), "{bytes}");
}

#[test]
fn header_values_cannot_split_a_line() {
    let mut headers = HeaderMap::new();
    headers.insert("x-tab", HeaderValue::from_static("a\tb"));
    headers.insert("x-obs", HeaderValue::from_bytes(b"a\xffb").unwrap());
    let mut out = BytesMut::new();
    write_head(&mut out, StatusCode::OK, &headers);
    assert_eq!(&out[..], b"HTTP/1.1 200 OK\r\nx-tab: a b\r\nx-obs: a\xffb\r\n");
}

/// An HTTP/2 extended CONNECT request (RFC 8441) as a driver hands it over.
fn connect_request(protocol: Option<&str>, headers: &[(&str, &str)]) -> Request<()> {
    let mut request = Request::new(());
    *request.method_mut() = http::Method::CONNECT;
    *request.version_mut() = http::Version::HTTP_2;
    *request.uri_mut() = "https://example.com/chat".parse().unwrap();
    request.headers_mut().insert(header::HOST, HeaderValue::from_static("example.com"));
    for (name, value) in headers {
        request.headers_mut().append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    if let Some(protocol) = protocol {
        request.extensions_mut().insert(crate::proto::handshake::Protocol(protocol.into()));
    }
    request
}

#[test]
fn an_extended_connect_is_answered_with_200_and_the_same_negotiation() {
    let policy = ServerPolicy {
        subprotocols: vec!["chat".into()],
        compression: Some(DeflateConfig::default()),
        ..ServerPolicy::default()
    };
    let request = connect_request(
        Some("websocket"),
        &[
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "other, chat"),
            ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits"),
            ("origin", "https://example.com"),
        ],
    );
    let accepted = policy.answer(&request, nothing).unwrap();
    assert_eq!(accepted.response.status(), StatusCode::OK);
    let headers = accepted.response.headers();
    for name in [header::UPGRADE, header::CONNECTION, header::SEC_WEBSOCKET_ACCEPT] {
        assert!(!headers.contains_key(&name), "{name} in an HTTP/2 answer");
    }
    assert_eq!(accepted.protocol.as_deref(), Some("chat"));
    assert_eq!(headers[header::SEC_WEBSOCKET_PROTOCOL], "chat");
    assert!(accepted.deflate.is_some());
    assert!(headers[header::SEC_WEBSOCKET_EXTENSIONS].to_str().unwrap().starts_with("permessage-deflate"));
}

#[test]
fn an_extended_connect_is_checked_like_an_upgrade() {
    let policy = ServerPolicy::default();
    let version = [("sec-websocket-version", "13")];
    let no_protocol = policy.answer(&connect_request(None, &version), nothing).unwrap_err();
    assert_eq!(no_protocol.rejection.status, StatusCode::BAD_REQUEST);
    let other = policy.answer(&connect_request(Some("webtransport"), &version), nothing).unwrap_err();
    assert_eq!(other.rejection.status, StatusCode::BAD_REQUEST);
    let no_version = policy.answer(&connect_request(Some("websocket"), &[]), nothing).unwrap_err();
    assert_eq!(no_version.rejection.status, StatusCode::UPGRADE_REQUIRED);
    let foreign = [("sec-websocket-version", "13"), ("origin", "https://evil.example")];
    let origin = policy.answer(&connect_request(Some("websocket"), &foreign), nothing).unwrap_err();
    assert_eq!(origin.rejection.status, StatusCode::FORBIDDEN);
    // A CONNECT over HTTP/1.1 is no WebSocket request.
    let mut h1 = connect_request(Some("websocket"), &version);
    *h1.version_mut() = http::Version::HTTP_11;
    assert_eq!(policy.answer(&h1, nothing).unwrap_err().rejection.status, StatusCode::BAD_REQUEST);
}
