//! The rules of the opening handshake (RFC 6455 §4) that both sides share or
//! that a server applies to a request: keys, header tokens, subprotocol
//! choice, the origin policy and the request checks.
//!
//! The handshakes themselves are [`super::server_handshake::ServerHandshake`]
//! and [`super::client_handshake::ClientHandshake`].

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName};
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

/// Whether `request` asks for a WebSocket: over HTTP/1.1, a `Connection`
/// header with the `upgrade` token and an `Upgrade` header with the
/// `websocket` token; over HTTP/2, an extended CONNECT (RFC 8441) whose
/// `:protocol` is `websocket` (a [`Protocol`] extension, or hyper's).
pub fn is_websocket_upgrade<B>(request: &Request<B>) -> bool {
    (header_has_token(request.headers(), header::CONNECTION, "upgrade")
        && header_has_token(request.headers(), header::UPGRADE, "websocket"))
        || is_extended_connect(request)
}

/// The `:protocol` pseudo-header of an HTTP/2 extended CONNECT request
/// (RFC 8441 §4), carried as a request extension: a driver that hands an
/// HTTP/2 request to [`super::server_handshake::ServerPolicy::answer`] puts
/// it there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol(pub String);

/// The `:protocol` of an extended CONNECT request, if it has one.
fn connect_protocol<B>(request: &Request<B>) -> Option<&str> {
    if let Some(Protocol(protocol)) = request.extensions().get::<Protocol>() {
        return Some(protocol);
    }
    #[cfg(feature = "hyper")]
    if let Some(protocol) = request.extensions().get::<hyper::ext::Protocol>() {
        return Some(protocol.as_str());
    }
    None
}

/// Whether `request` is an HTTP/2 extended CONNECT for a WebSocket.
pub fn is_extended_connect<B>(request: &Request<B>) -> bool {
    request.method() == Method::CONNECT
        && request.version() == Version::HTTP_2
        && connect_protocol(request).is_some_and(|p| p.eq_ignore_ascii_case("websocket"))
}

/// Checks an HTTP/2 extended CONNECT request (RFC 8441 §5): `:protocol`
/// is `websocket` (400 otherwise) and `Sec-WebSocket-Version` is 13 (426).
/// There is no key and no `Upgrade`: the stream is the WebSocket.
pub fn validate_extended_connect<B>(request: &Request<B>) -> Result<(), Rejection> {
    if !is_extended_connect(request) {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "an HTTP/2 WebSocket is an extended CONNECT with ':protocol' websocket",
        ));
    }
    if !header_has_token(request.headers(), header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(Rejection::new(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported version: 13 not found in 'Sec-WebSocket-Version' header",
        ));
    }
    Ok(())
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
pub(crate) fn take_response_subprotocol(extra: &mut HeaderMap, request: &HeaderMap) -> Result<Option<String>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
}
