//! The client's side of the opening handshake on arbitrary bytes:
//! `parse_response`, then `validate_response` against a fixed key and one of
//! a few subprotocol offers. Nothing panics; a complete head is never found in
//! a strict prefix of itself; an accepted response really is a 101 with the
//! right accept value, and the subprotocol it returns was offered.
//!
//! Input: byte 0 is the header limit (0–63), byte 1 picks the offer, the rest
//! is the response.
#![no_main]

use http::{header, StatusCode};
use libfuzzer_sys::fuzz_target;
use silverback::proto::client_handshake::{body_excerpt, parse_response, validate_response};
use silverback::proto::handshake::{accept_key, header_has_token};

/// The key of RFC 6455 §1.3; its accept value is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

const OFFERS: [&[&str]; 4] = [&[], &["chat"], &["chat", "superchat"], &["v1.example", "v2.example", "chat"]];

fuzz_target!(|data: &[u8]| {
    let [limit, offer, raw @ ..] = data else { return };
    let max_headers = usize::from(limit % 64);
    let offered: Vec<String> = OFFERS[usize::from(offer % 4)].iter().map(|s| s.to_string()).collect();
    let parsed = match parse_response(raw, max_headers) {
        Ok(Some(parsed)) => parsed,
        Ok(None) | Err(_) => return,
    };
    assert!(parsed.head_len <= raw.len());
    assert!(parsed.response.headers().len() <= max_headers);
    if parsed.head_len > 0 {
        assert!(
            !matches!(parse_response(&raw[..parsed.head_len - 1], max_headers), Ok(Some(_))),
            "a strict prefix of the head parsed as complete"
        );
    }
    let head = parse_response(&raw[..parsed.head_len], max_headers).expect("the head alone").expect("complete");
    assert_eq!(head.head_len, parsed.head_len);
    assert_eq!(head.response.status(), parsed.response.status());
    assert!(body_excerpt(&raw[parsed.head_len..]).len() <= 1024);

    let response = parsed.response;
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
        Err(reason) => assert!(!reason.is_empty()),
    }
});
