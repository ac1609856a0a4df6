//! The server's side of the opening handshake on arbitrary bytes: a
//! `HeadReader` for the request head, `validate_request`, `same_origin` and
//! `requested_subprotocols` on whatever parsed, and a `ServerHandshake` fed
//! the same bytes whole and one byte at a time. Nothing panics; a complete
//! head is never found in a strict prefix of itself; the handshake decides
//! the same however the bytes are cut; a valid request yields the accept
//! value of its one key, and the 101 the server writes for it passes the
//! client's `validate_response`; every refusal's response parses back.
//!
//! Input: byte 0 is the header limit (0–63), the rest is the request.
#![no_main]

use http::{header, HeaderMap, Method, Version};
use libfuzzer_sys::fuzz_target;
use silverback::proto::client_handshake::validate_response;
use silverback::proto::handshake::{
    accept_key, is_valid_key, is_websocket_upgrade, requested_subprotocols, same_origin, validate_request,
};
use silverback::proto::head::{HeadLimits, HeadReader};
use silverback::proto::server_handshake::{Refusal, ServerHandshake, ServerPolicy, ServerStep};

fuzz_target!(|data: &[u8]| {
    let Some((&limit, raw)) = data.split_first() else { return };
    let limits = HeadLimits { max_bytes: 16 * 1024, max_headers: usize::from(limit % 64) };
    let policy = ServerPolicy { check_origin: Some(std::sync::Arc::new(|_| true)), ..ServerPolicy::default() };

    // Whole, and byte by byte: the same decision.
    let whole = ServerHandshake::new(&policy, limits, |_| Ok(HeaderMap::new())).receive(raw);
    let mut handshake = ServerHandshake::new(&policy, limits, |_| Ok(HeaderMap::new()));
    let mut by_byte = ServerStep::NeedMore;
    for byte in raw {
        by_byte = handshake.receive(std::slice::from_ref(byte));
        if !matches!(by_byte, ServerStep::NeedMore) {
            break;
        }
    }
    match (&whole, &by_byte) {
        (ServerStep::NeedMore, ServerStep::NeedMore) => {}
        (ServerStep::Accept(a), ServerStep::Accept(b)) => {
            assert_eq!(a.response_bytes(), b.response_bytes());
            assert!(b.early.is_empty());
        }
        (ServerStep::Reject(a), ServerStep::Reject(b)) => assert_eq!(a.rejection, b.rejection),
        (a, b) => panic!("fed whole: {a:?}; fed byte by byte: {b:?}"),
    }
    if let ServerStep::Reject(refusal) = &whole {
        assert!(refusal.rejection.status.is_client_error(), "{:?}", refusal.rejection.status);
        check_error_response(refusal);
    }

    let head = match HeadReader::new(limits).receive_request(raw) {
        Ok(Some(head)) => head,
        Ok(None) | Err(_) => return,
    };
    let head_len = raw.len() - head.rest.len();
    assert!(head.message.headers().len() <= limits.max_headers);
    assert!(
        !matches!(HeadReader::new(limits).receive_request(&raw[..head_len - 1]), Ok(Some(_))),
        "a strict prefix of the head parsed as complete"
    );

    let request = head.message;
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
            // first subprotocol asked for chosen when it can be.
            let key = keys[0].to_str().expect("base64 is ASCII");
            let offered: Vec<String> = protocols.iter().map(|p| p.to_string()).collect();
            let policy = ServerPolicy {
                subprotocols: offered.iter().take(1).cloned().collect(),
                check_origin: Some(std::sync::Arc::new(|_| true)),
                ..ServerPolicy::default()
            };
            let step = ServerHandshake::new(&policy, limits, |_| Ok(HeaderMap::new())).receive(raw);
            let ServerStep::Accept(accepted) = step else { panic!("a valid request was refused: {step:?}") };
            let bytes = accepted.response_bytes();
            let response = HeadReader::new(limits).receive_response(&bytes).expect("our own 101 parses");
            let response = response.expect("complete");
            assert!(response.rest.is_empty());
            assert_eq!(
                validate_response(&response.message, key, &offered),
                Ok(accepted.protocol.clone()),
                "the client rejects the server's answer"
            );
        }
        Err(rejection) => {
            assert!(rejection.status.is_client_error(), "{:?}", rejection.status);
            check_error_response(&policy.refuse(rejection));
        }
    }
});

/// The error response the server would send parses back with its status and body.
fn check_error_response(refusal: &Refusal) {
    let bytes = refusal.response_bytes();
    let limits = HeadLimits { max_bytes: bytes.len(), max_headers: 16 };
    let head = HeadReader::new(limits).receive_response(&bytes).expect("our own error response parses");
    let head = head.expect("complete");
    assert_eq!(head.message.status(), refusal.rejection.status);
    assert_eq!(&head.rest[..], &refusal.response.body()[..]);
}
