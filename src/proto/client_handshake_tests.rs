//! Unit tests of the client handshake.

use super::*;
use crate::proto::head::parse_response_head;
use http::HeaderValue;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn response(lines: &str) -> Response<()> {
    parse_response_head(format!("{lines}\r\n\r\n").as_bytes(), 32).unwrap().unwrap().0
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
            compression: None,
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
    RequestParts { resource: "/", host: "example.com", key: KEY, subprotocols: protocols, compression: None, headers }
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

const LIMITS: HeadLimits = HeadLimits { max_bytes: 1024, max_headers: 16 };

fn handshake(protocols: &[String], compression: Option<DeflateConfig>) -> ClientHandshake {
    let headers = HeaderMap::new();
    let parts = RequestParts { compression, ..parts(protocols, &headers) };
    ClientHandshake::new(&parts, LIMITS).unwrap()
}

fn bad_reason(result: Result<Option<ClientAccepted>, ClientError>) -> String {
    match result {
        Err(ClientError::BadResponse { reason, .. }) => reason,
        other => panic!("expected a bad handshake, got {other:?}"),
    }
}

#[test]
fn the_request_carries_the_offer() {
    let ours = DeflateConfig::default();
    let client = handshake(&["chat".into()], Some(ours));
    let text = std::str::from_utf8(client.request_bytes()).unwrap();
    assert!(text.starts_with("GET / HTTP/1.1\r\nHost: example.com\r\n"), "{text}");
    assert!(text.contains(&format!("Sec-WebSocket-Key: {KEY}\r\n")), "{text}");
    assert!(text.contains(&format!("Sec-WebSocket-Extensions: {}\r\n", extensions::client_offers(&ours))), "{text}");
    let headers = HeaderMap::new();
    let bad = RequestParts { host: "a b", ..parts(&[], &headers) };
    assert!(ClientHandshake::new(&bad, LIMITS).is_err());
}

#[test]
fn response_byte_by_byte_then_early_data() {
    let raw = format!("{GOOD}\r\n\r\n\x01\x02hi");
    let head_len = raw.len() - 4;
    let mut client = handshake(&[], None);
    for (i, byte) in raw.as_bytes()[..head_len - 1].iter().enumerate() {
        assert!(client.receive(&[*byte]).unwrap().is_none(), "byte {i}");
    }
    let accepted = client.receive(&raw.as_bytes()[head_len - 1..]).unwrap().unwrap();
    assert_eq!(&accepted.early[..], b"\x01\x02hi");
    assert_eq!(accepted.response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!((accepted.protocol, accepted.deflate), (None, None));
    assert_eq!(client.room(), 0);
    assert!(matches!(client.receive(b"x"), Err(ClientError::InvalidResponse(_))));
}

#[test]
fn response_split_across_reads() {
    let raw = format!("{GOOD}\r\nSec-WebSocket-Protocol: chat\r\n\r\nEARLY");
    for cut in 1..raw.len() - 5 {
        let mut client = handshake(&["chat".into()], None);
        assert!(client.receive(&raw.as_bytes()[..cut]).unwrap().is_none(), "cut {cut}");
        let accepted = client.receive(&raw.as_bytes()[cut..]).unwrap().unwrap();
        assert_eq!(accepted.protocol.as_deref(), Some("chat"));
        assert_eq!(&accepted.early[..], b"EARLY");
    }
}

#[test]
fn each_bad_response_is_a_bad_handshake() {
    let cases = [
        (GOOD.replace("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="), "does not match"),
        (GOOD.replace("Upgrade: websocket\r\n", ""), "Upgrade"),
        (GOOD.replace("Connection: Upgrade\r\n", ""), "Connection"),
        (format!("{GOOD}\r\nSec-WebSocket-Protocol: other"), "not offered"),
        (format!("{GOOD}\r\nSec-WebSocket-Extensions: permessage-deflate"), "not offered"),
    ];
    for (raw, expected) in cases {
        let reason = bad_reason(handshake(&["chat".into()], None).receive(format!("{raw}\r\n\r\n").as_bytes()));
        assert!(reason.contains(expected), "{raw:?}: {reason}");
    }
    // An extension other than the one offered, or a bad answer to the offer.
    for answer in ["x-other", "permessage-deflate; server_max_window_bits=16", "permessage-deflate; bogus"] {
        let raw = format!("{GOOD}\r\nSec-WebSocket-Extensions: {answer}\r\n\r\n");
        let reason = bad_reason(handshake(&[], Some(DeflateConfig::default())).receive(raw.as_bytes()));
        assert!(!reason.is_empty(), "{answer}");
    }
}

#[test]
fn a_refusal_keeps_the_response_and_the_start_of_its_body() {
    let raw = "HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\nSet-Cookie: a=1\r\n\r\nno way\n";
    match handshake(&[], None).receive(raw.as_bytes()) {
        Err(ClientError::BadResponse { reason, response, body }) => {
            assert!(reason.contains("403"), "{reason}");
            assert_eq!(response.headers()[header::SET_COOKIE], "a=1");
            assert_eq!(&body[..], b"no way\n");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn deflate_is_agreed() {
    let raw = format!("{GOOD}\r\nSec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n\r\n");
    let accepted = handshake(&[], Some(DeflateConfig::default())).receive(raw.as_bytes()).unwrap().unwrap();
    let params = accepted.deflate.expect("agreed");
    assert!(params.client_no_context_takeover && !params.server_no_context_takeover);
}

#[test]
fn not_http_or_too_large_is_an_invalid_response() {
    let garbage = handshake(&[], None).receive(b"SSH-2.0-OpenSSH_9.6\r\n\r\n");
    assert!(matches!(garbage, Err(ClientError::InvalidResponse(_))), "{garbage:?}");
    let mut client = handshake(&[], None);
    let mut raw = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
    for i in 0..10 {
        raw.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(120)).as_bytes());
    }
    let mut outcome = Ok(None);
    for chunk in raw.chunks(64) {
        outcome = client.receive(chunk);
        if !matches!(outcome, Ok(None)) {
            break;
        }
    }
    match outcome {
        Err(ClientError::InvalidResponse(reason)) => assert!(reason.contains("too large"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let many: String = (0..20).map(|i| format!("X-{i}: v\r\n")).collect();
    let too_many = handshake(&[], None).receive(format!("{GOOD}\r\n{many}\r\n").as_bytes());
    assert!(matches!(too_many, Err(ClientError::InvalidResponse(_))), "{too_many:?}");
}
