//! `Sec-WebSocket-Extensions` parsing and permessage-deflate negotiation on
//! arbitrary header text and configurations.
//!
//! Input: bytes 0–2 the server's `DeflateConfig`, bytes 3–5 the client's
//! (flags: bit 0 server_no_context_takeover, bit 1 client_no_context_takeover;
//! then the server and client window bits: a byte below 0x80 maps to 8–15,
//! one from 0x80 up gives `b & 0x7f`, possibly out of range), then the header
//! text (lines are separate header values for `server_negotiate`).
//!
//! Never panics, whatever the configuration. With window bits in 8–15
//! (which `DeflateConfig` documents):
//! - whatever `parse` accepts is made of tokens, names lowercased;
//! - parameters agreed by `server_negotiate` never exceed the server's
//!   configuration, and their `Display` string is accepted by `client_accept`
//!   with the matching configuration, giving the same parameters back;
//! - the client's own offers are always accepted by a server, and the
//!   server's answer by the client, both ending with the same parameters;
//! - parameters accepted by `client_accept` never exceed what the client
//!   offered, and re-serialised are accepted again unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use silverback::proto::extensions::{
    client_accept, client_offers, parse, server_negotiate, DeflateConfig, DeflateParams, PERMESSAGE_DEFLATE,
};

fn config(b: &[u8]) -> DeflateConfig {
    let bits = |b: u8| if b < 0x80 { 8 + b % 8 } else { b & 0x7f };
    DeflateConfig {
        server_no_context_takeover: b[0] & 1 != 0,
        client_no_context_takeover: b[0] & 2 != 0,
        server_max_window_bits: bits(b[1]),
        client_max_window_bits: bits(b[2]),
    }
}

fn in_range(c: &DeflateConfig) -> bool {
    (8..=15).contains(&c.server_max_window_bits) && (8..=15).contains(&c.client_max_window_bits)
}

/// The configuration that asks for exactly `p`.
fn matching(p: &DeflateParams) -> DeflateConfig {
    DeflateConfig {
        server_no_context_takeover: p.server_no_context_takeover,
        client_no_context_takeover: p.client_no_context_takeover,
        server_max_window_bits: p.server_max_window_bits,
        client_max_window_bits: p.client_max_window_bits,
    }
}

/// `p` stays within what `c` allows.
fn within(p: &DeflateParams, c: &DeflateConfig) {
    assert!((8..=15).contains(&p.server_max_window_bits), "{p:?}");
    assert!((8..=15).contains(&p.client_max_window_bits), "{p:?}");
    assert!(p.server_max_window_bits <= c.server_max_window_bits, "{p:?} exceeds {c:?}");
    assert!(p.client_max_window_bits <= c.client_max_window_bits, "{p:?} exceeds {c:?}");
    assert!(!c.server_no_context_takeover || p.server_no_context_takeover, "{p:?} drops {c:?}");
    assert!(!c.client_no_context_takeover || p.client_no_context_takeover, "{p:?} drops {c:?}");
}

/// The response header for `p` is one well-formed permessage-deflate element
/// that a client asking for exactly `p` accepts as `p`, and that a server
/// configured as `p` accepts as an offer, agreeing on `p` again.
fn response_round_trips(p: &DeflateParams) {
    let text = p.to_string();
    let parsed = parse(&text);
    assert_eq!(parsed.len(), 1, "{text:?}");
    assert_eq!(parsed[0].as_ref().map(|e| e.name.as_str()), Ok(PERMESSAGE_DEFLATE), "{text:?}");
    let exact = matching(p);
    assert_eq!(client_accept(&text, &exact), Ok(*p), "{text:?}");
    assert_eq!(server_negotiate([text.as_str()], &exact), Some(*p), "{text:?}");
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let server = config(&data[0..3]);
    let client = config(&data[3..6]);
    let text = String::from_utf8_lossy(&data[6..]);
    let checked = in_range(&server) && in_range(&client);

    for ext in parse(&text).into_iter().flatten() {
        assert!(is_token(&ext.name) && ext.name == ext.name.to_ascii_lowercase(), "{ext:?}");
        for (key, value) in &ext.params {
            assert!(is_token(key) && *key == key.to_ascii_lowercase(), "{ext:?}");
            if let Some(value) = value {
                assert!(is_token(value), "{ext:?}");
            }
        }
    }

    // The server, on arbitrary offers.
    let agreed = server_negotiate(text.lines(), &server);
    if checked {
        if let Some(p) = agreed {
            within(&p, &server);
            response_round_trips(&p);
        }
    }

    // The client, on an arbitrary response.
    let accepted = client_accept(&text, &client);
    if checked {
        if let Ok(p) = accepted {
            within(&p, &client);
            assert_eq!(client_accept(&p.to_string(), &client), Ok(p), "re-serialised {p:?}");
        }
    }

    // A client and a server, each with its own configuration.
    let offers = client_offers(&client);
    assert!(parse(&offers).iter().all(Result::is_ok), "{offers:?}");
    let agreed = server_negotiate([offers.as_str()], &server);
    if checked {
        let p = agreed.unwrap_or_else(|| panic!("{server:?} declines {offers:?}"));
        within(&p, &server);
        within(&p, &client);
        assert_eq!(client_accept(&p.to_string(), &client), Ok(p), "{client:?} offered {offers:?}, got {p}");
    }
});
