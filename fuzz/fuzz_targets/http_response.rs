//! The client's side of the opening handshake on arbitrary bytes: a
//! `HeadReader` for the response head, `validate_response` against a fixed
//! key and one of a few subprotocol offers, and a `ClientHandshake` fed the
//! same bytes whole and one byte at a time. Nothing panics; a complete head
//! is never found in a strict prefix of itself; the handshake decides the
//! same however the bytes are cut; an accepted response really is a 101 with
//! the right accept value, and the subprotocol it returns was offered.
//!
//! Input: byte 0 is the header limit (0–63), byte 1 picks the offer, the rest
//! is the response.
#![no_main]

use http::{header, HeaderMap, StatusCode};
use libfuzzer_sys::fuzz_target;
use silverback::proto::client_handshake::{validate_response, ClientError, ClientHandshake, RequestParts};
use silverback::proto::handshake::{accept_key, header_has_token};
use silverback::proto::head::{HeadLimits, HeadReader};

/// The key of RFC 6455 §1.3; its accept value is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

const OFFERS: [&[&str]; 4] = [&[], &["chat"], &["chat", "superchat"], &["v1.example", "v2.example", "chat"]];

fuzz_target!(|data: &[u8]| {
    let [limit, offer, raw @ ..] = data else { return };
    let limits = HeadLimits { max_bytes: 16 * 1024, max_headers: usize::from(limit % 64) };
    let offered: Vec<String> = OFFERS[usize::from(offer % 4)].iter().map(|s| s.to_string()).collect();

    let headers = HeaderMap::new();
    let parts = RequestParts {
        resource: "/",
        host: "example.com",
        key: KEY,
        subprotocols: &offered,
        compression: None,
        headers: &headers,
    };
    let whole = ClientHandshake::new(&parts, limits).expect("a valid request").receive(raw);
    let mut client = ClientHandshake::new(&parts, limits).expect("a valid request");
    let mut by_byte = Ok(None);
    for byte in raw {
        by_byte = client.receive(std::slice::from_ref(byte));
        if !matches!(by_byte, Ok(None)) {
            break;
        }
    }
    match (&whole, &by_byte) {
        (Ok(None), Ok(None)) => {}
        (Ok(Some(a)), Ok(Some(b))) => {
            assert_eq!((&a.protocol, a.response.headers()), (&b.protocol, b.response.headers()))
        }
        (Err(ClientError::InvalidResponse(_)), Err(ClientError::InvalidResponse(_))) => {}
        (Err(ClientError::BadResponse { reason: a, .. }), Err(ClientError::BadResponse { reason: b, .. })) => {
            assert_eq!(a, b)
        }
        (a, b) => panic!("fed whole: {a:?}; fed byte by byte: {b:?}"),
    }

    let head = match HeadReader::new(limits).receive_response(raw) {
        Ok(Some(head)) => head,
        Ok(None) | Err(_) => return,
    };
    let head_len = raw.len() - head.rest.len();
    assert!(head.message.headers().len() <= limits.max_headers);
    assert!(
        !matches!(HeadReader::new(limits).receive_response(&raw[..head_len - 1]), Ok(Some(_))),
        "a strict prefix of the head parsed as complete"
    );

    let response = head.message;
    match validate_response(&response, KEY, &offered) {
        Ok(protocol) => {
            assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
            let headers = response.headers();
            assert!(header_has_token(headers, header::UPGRADE, "websocket"));
            assert!(header_has_token(headers, header::CONNECTION, "upgrade"));
            assert_eq!(headers[header::SEC_WEBSOCKET_ACCEPT].as_bytes(), accept_key(KEY.as_bytes()).as_bytes());
            if let Some(protocol) = protocol {
                assert!(offered.contains(&protocol), "subprotocol {protocol:?} was not offered");
            }
        }
        Err(reason) => {
            assert!(!reason.is_empty());
            assert!(matches!(whole, Err(ClientError::BadResponse { .. })), "{whole:?}");
        }
    }
});
