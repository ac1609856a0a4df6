//! The server's side of the opening handshake on arbitrary bytes:
//! `parse_request`, then `validate_request`, `same_origin` and
//! `requested_subprotocols` on whatever parsed. Nothing panics; a complete
//! head is never found in a strict prefix of itself; a valid request yields
//! the accept value of its one key; and the 101 response the server would
//! write for it passes the client's `validate_response`.
//!
//! Input: byte 0 is the header limit (0–63), the rest is the request.
#![no_main]

use bytes::BytesMut;
use http::{header, HeaderMap, Method, Version};
use libfuzzer_sys::fuzz_target;
use silverback::proto::client_handshake::{parse_response, validate_response};
use silverback::proto::handshake::{
    accept_key, is_valid_key, is_websocket_upgrade, parse_request, requested_subprotocols, same_origin,
    validate_request, write_error_response, write_switching_response,
};

fuzz_target!(|data: &[u8]| {
    let Some((&limit, raw)) = data.split_first() else { return };
    let max_headers = usize::from(limit % 64);
    let parsed = match parse_request(raw, max_headers) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return,
        Err(rejection) => {
            assert!(rejection.status.is_client_error(), "{:?}", rejection.status);
            check_error_response(rejection.status, rejection.reason.as_bytes());
            return;
        }
    };
    assert!(parsed.head_len <= raw.len());
    assert!(parsed.request.headers().len() <= max_headers);
    if parsed.head_len > 0 {
        assert!(
            !matches!(parse_request(&raw[..parsed.head_len - 1], max_headers), Ok(Some(_))),
            "a strict prefix of the head parsed as complete"
        );
    }
    let head = parse_request(&raw[..parsed.head_len], max_headers).expect("the head alone").expect("complete");
    assert_eq!(head.head_len, parsed.head_len);

    let request = parsed.request;
    let headers = request.headers();
    let _ = same_origin(headers);
    let protocols = requested_subprotocols(headers);
    for p in &protocols {
        assert!(!p.is_empty() && !p.contains(',') && p.trim() == *p, "subprotocol {p:?}");
    }

    match validate_request(request.method(), request.version(), headers) {
        Ok(valid) => {
            assert!(is_websocket_upgrade(&request));
            assert_eq!(request.method(), Method::GET);
            assert!(request.version() >= Version::HTTP_11);
            let keys: Vec<_> = headers.get_all(header::SEC_WEBSOCKET_KEY).iter().collect();
            assert_eq!(keys.len(), 1);
            assert!(is_valid_key(keys[0].as_bytes()));
            assert_eq!(valid.accept, accept_key(keys[0].as_bytes()));
            assert_eq!(valid.accept.len(), 28);

            // What the server writes back passes the client's checks, with the
            // first subprotocol asked for chosen (a tab in it would be written
            // as a space, so such a name cannot round-trip).
            let key = keys[0].to_str().expect("base64 is ASCII");
            let offered: Vec<String> = protocols.iter().map(|p| p.to_string()).collect();
            let chosen = protocols.first().copied().filter(|p| !p.contains('\t'));
            let mut out = BytesMut::new();
            write_switching_response(&mut out, &valid.accept, chosen, &HeaderMap::new());
            let response = parse_response(&out, 16).expect("our own 101 parses").expect("complete");
            assert_eq!(response.head_len, out.len());
            assert_eq!(
                validate_response(&response.response, key, &offered),
                Ok(chosen.map(str::to_owned)),
                "the client rejects the server's answer"
            );
        }
        Err(rejection) => {
            assert!(rejection.status.is_client_error(), "{:?}", rejection.status);
            check_error_response(rejection.status, rejection.reason.as_bytes());
        }
    }
});

/// The error response the server would send parses back with its status and body.
fn check_error_response(status: http::StatusCode, body: &[u8]) {
    let mut out = BytesMut::new();
    write_error_response(&mut out, status, &HeaderMap::new(), body);
    let response = parse_response(&out, 16).expect("our own error response parses").expect("complete");
    assert_eq!(response.response.status(), status);
    assert_eq!(&out[response.head_len..], body);
}
