//! The server handshake over raw TCP: every refusal status, origin policy,
//! timeouts, subprotocols, callbacks, early data; and the request helpers.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use silverback::{Error, MessageType, Rejection, Upgrader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `raw` to an `upgrader` and returns the response and what `accept` returned.
async fn refused(upgrader: Upgrader, raw: impl FnOnce(SocketAddr) -> Vec<u8>) -> (HttpResponse, Error) {
    let (addr, server) = spawn_accept(upgrader).await;
    let response = http_exchange(addr, &raw(addr)).await;
    match within(server).await.unwrap() {
        Ok(_) => panic!("the handshake should have been refused: {response:?}"),
        Err(e) => (response, e),
    }
}

/// A good request without header `name`.
fn without(addr: SocketAddr, name: &str) -> Vec<u8> {
    let headers: Vec<_> = good_headers(addr).into_iter().filter(|(n, _)| n != name).collect();
    request_with("GET", &headers).into_bytes()
}

/// A good request with header `name` set to `value`.
fn with(addr: SocketAddr, name: &str, value: &str) -> Vec<u8> {
    let mut headers: Vec<_> = good_headers(addr).into_iter().filter(|(n, _)| n != name).collect();
    headers.push((name.into(), value.into()));
    request_with("GET", &headers).into_bytes()
}

fn assert_refused(response: &HttpResponse, error: &Error, status: u16) {
    assert_eq!(response.status, status, "{response:?}");
    match error {
        Error::RequestRefused { status: got, reason } => {
            assert_eq!(got.as_u16(), status);
            assert!(!reason.is_empty());
            // The default response carries the reason as its body.
            assert!(String::from_utf8_lossy(&response.body).contains(reason.as_str()), "{response:?}");
        }
        other => panic!("expected Error::RequestRefused, got {other:?}"),
    }
    assert_eq!(response.header("sec-websocket-version"), Some("13"));
    assert_eq!(response.header("content-length"), Some(response.body.len().to_string().as_str()));
}

#[tokio::test]
async fn missing_connection_upgrade_is_400() {
    let (response, error) = refused(Upgrader::new(), |addr| without(addr, "Connection")).await;
    assert_refused(&response, &error, 400);
    let (response, error) = refused(Upgrader::new(), |addr| with(addr, "Connection", "keep-alive")).await;
    assert_refused(&response, &error, 400);
}

#[tokio::test]
async fn missing_upgrade_websocket_is_426() {
    let (response, error) = refused(Upgrader::new(), |addr| without(addr, "Upgrade")).await;
    assert_refused(&response, &error, 426);
    let (response, error) = refused(Upgrader::new(), |addr| with(addr, "Upgrade", "h2c")).await;
    assert_refused(&response, &error, 426);
}

#[tokio::test]
async fn post_is_405() {
    let (response, error) =
        refused(Upgrader::new(), |addr| request_with("POST", &good_headers(addr)).into_bytes()).await;
    assert_refused(&response, &error, 405);
}

#[tokio::test]
async fn wrong_version_is_426_naming_version_13() {
    let (response, error) = refused(Upgrader::new(), |addr| with(addr, "Sec-WebSocket-Version", "8")).await;
    assert_refused(&response, &error, 426);
    assert_eq!(response.header_all("sec-websocket-version"), vec!["13"]);
    let (response, error) = refused(Upgrader::new(), |addr| without(addr, "Sec-WebSocket-Version")).await;
    assert_refused(&response, &error, 426);
}

#[tokio::test]
async fn bad_key_is_400() {
    for key in ["", "dGhlIHNhbXBsZSBub25jZQ", "AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "!!!!!!!!!!!!!!!!!!!!!!=="] {
        let (response, error) = refused(Upgrader::new(), |addr| with(addr, "Sec-WebSocket-Key", key)).await;
        assert_refused(&response, &error, 400);
    }
    let (response, error) = refused(Upgrader::new(), |addr| without(addr, "Sec-WebSocket-Key")).await;
    assert_refused(&response, &error, 400);
}

#[tokio::test]
async fn missing_host_is_400() {
    let (response, error) = refused(Upgrader::new(), |addr| without(addr, "Host")).await;
    assert_refused(&response, &error, 400);
}

#[tokio::test]
async fn http_1_0_is_400() {
    let (response, error) = refused(Upgrader::new(), |addr| {
        String::from_utf8(without(addr, "__none__")).unwrap().replacen("HTTP/1.1", "HTTP/1.0", 1).into_bytes()
    })
    .await;
    assert_refused(&response, &error, 400);
}

#[tokio::test]
async fn cross_origin_is_403() {
    let (response, error) = refused(Upgrader::new(), |addr| with(addr, "Origin", "http://evil.example")).await;
    assert_refused(&response, &error, 403);
    // Same host, other port: another origin.
    let (response, error) = refused(Upgrader::new(), |addr| {
        let origin = format!("http://{}:{}", addr.ip(), addr.port().wrapping_add(1));
        with(addr, "Origin", &origin)
    })
    .await;
    assert_refused(&response, &error, 403);
    let (response, error) = refused(Upgrader::new(), |addr| with(addr, "Origin", "null")).await;
    assert_refused(&response, &error, 403);
}

#[tokio::test]
async fn same_origin_is_accepted() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let (mut raw, _) = RawClient::connect_with(addr, &format!("Origin: http://{addr}\r\n")).await;
    raw.send_frame(true, TEXT, b"same origin").await;
    assert_eq!(raw.message().await.1, b"same origin");
    drop(raw);
    drop(within(server).await.unwrap());
}

#[tokio::test]
async fn custom_check_origin_decides() {
    let allow_example = || {
        Upgrader::new().check_origin(|req: &Request<()>| {
            req.headers().get("origin").is_some_and(|o| o == "https://app.example") && req.uri().path() == "/chat"
        })
    };
    // Cross-origin but allowed.
    let (addr, server) = spawn_echo_server(allow_example()).await;
    let (mut raw, _) = RawClient::connect_with(addr, "Origin: https://app.example\r\n").await;
    raw.send_frame(true, TEXT, b"allowed").await;
    assert_eq!(raw.message().await.1, b"allowed");
    drop(raw);
    drop(within(server).await.unwrap());
    // Same-origin but refused by the custom check.
    let (response, error) = refused(allow_example(), |addr| with(addr, "Origin", &format!("http://{addr}"))).await;
    assert_refused(&response, &error, 403);
}

#[tokio::test]
async fn too_many_headers_is_431() {
    let upgrader = Upgrader::new().max_headers(8);
    let (response, error) = refused(upgrader, |addr| {
        let mut headers = good_headers(addr);
        for i in 0..10 {
            headers.push((format!("X-Extra-{i}"), "v".into()));
        }
        request_with("GET", &headers).into_bytes()
    })
    .await;
    assert_refused(&response, &error, 431);
}

#[tokio::test]
async fn too_large_head_is_431() {
    let upgrader = Upgrader::new().max_request_bytes(1024);
    let (response, error) = refused(upgrader, |addr| {
        // Exactly 1024 bytes of a head that is not finished yet.
        let mut head = String::from_utf8(without(addr, "__none__")).unwrap();
        head.truncate(head.len() - 2);
        head.push_str("X-Padding: ");
        while head.len() < 1024 {
            head.push('a');
        }
        head.into_bytes()
    })
    .await;
    assert_refused(&response, &error, 431);
}

#[tokio::test]
async fn a_large_head_under_the_bound_is_accepted() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let padding = "a".repeat(8000);
    let (mut raw, _) = RawClient::connect_with(addr, &format!("X-Padding: {padding}\r\n")).await;
    raw.send_frame(true, BINARY, b"ok").await;
    assert_eq!(raw.message().await.1, b"ok");
    drop(raw);
    drop(within(server).await.unwrap());
}

#[tokio::test]
async fn garbage_is_400() {
    let (response, error) = refused(Upgrader::new(), |_| b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec()).await;
    assert_refused(&response, &error, 400);
    let (response, error) = refused(Upgrader::new(), |_| b"GET / FTP/9\r\n\r\n".to_vec()).await;
    assert_refused(&response, &error, 400);
}

#[tokio::test]
async fn handshake_timeout_on_a_silent_client() {
    let upgrader = Upgrader::new().handshake_timeout(Some(Duration::from_millis(200)));
    let (addr, server) = spawn_accept(upgrader).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let result = within(server).await.unwrap();
    assert!(matches!(result, Err(Error::Timeout)), "{:?}", result.map(|_| ()));
    // The server gave up on the stream.
    let mut buf = Vec::new();
    assert_eq!(within(stream.read_to_end(&mut buf)).await.unwrap(), 0);
}

#[tokio::test]
async fn handshake_timeout_on_a_client_that_stops_mid_request() {
    let upgrader = Upgrader::new().handshake_timeout(Some(Duration::from_millis(200)));
    let (addr, server) = spawn_accept(upgrader).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = request(addr, "");
    stream.write_all(&head.as_bytes()[..head.len() / 2]).await.unwrap();
    let result = within(server).await.unwrap();
    assert!(matches!(result, Err(Error::Timeout)), "{:?}", result.map(|_| ()));
}

#[tokio::test]
async fn client_eof_during_handshake_is_an_error() {
    let (addr, server) = spawn_accept(Upgrader::new()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    stream.shutdown().await.unwrap();
    let result = within(server).await.unwrap();
    assert!(result.is_err());
}

#[tokio::test]
async fn subprotocol_client_order_wins() {
    let upgrader = Upgrader::new().subprotocols(["superchat", "chat", "v2"]);
    let (addr, server) = spawn_server(upgrader, |conn| async move { conn.subprotocol().map(str::to_owned) }).await;
    let (_raw, response) = RawClient::connect_with(
        addr,
        "Sec-WebSocket-Protocol: x-unknown, chat\r\nSec-WebSocket-Protocol: superchat\r\n",
    )
    .await;
    assert_eq!(response.header_all("sec-websocket-protocol"), vec!["chat"]);
    assert_eq!(within(server).await.unwrap().as_deref(), Some("chat"));
}

#[tokio::test]
async fn subprotocol_none_in_common_means_no_header() {
    let upgrader = Upgrader::new().subprotocols(["chat"]);
    let (addr, server) = spawn_server(upgrader, |conn| async move { conn.subprotocol().map(str::to_owned) }).await;
    let (_raw, response) = RawClient::connect_with(addr, "Sec-WebSocket-Protocol: mqtt, wamp\r\n").await;
    assert!(response.header("sec-websocket-protocol").is_none(), "{response:?}");
    assert_eq!(within(server).await.unwrap(), None);

    // A server with no subprotocols answers none either.
    let (addr, server) =
        spawn_server(Upgrader::new(), |conn| async move { conn.subprotocol().map(str::to_owned) }).await;
    let (_raw, response) = RawClient::connect_with(addr, "Sec-WebSocket-Protocol: chat\r\n").await;
    assert!(response.header("sec-websocket-protocol").is_none(), "{response:?}");
    assert_eq!(within(server).await.unwrap(), None);
}

#[tokio::test]
async fn accept_with_adds_headers_and_sees_the_request() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut seen = None;
        let conn = Upgrader::new()
            .accept_with(stream, |req| {
                seen = Some((req.uri().to_string(), req.headers().get("cookie").cloned()));
                let mut extra = HeaderMap::new();
                extra.insert("x-session", HeaderValue::from_static("42"));
                extra.insert("set-cookie", HeaderValue::from_static("a=b"));
                Ok(extra)
            })
            .await
            .unwrap();
        (seen, conn)
    });
    let (_raw, response) = RawClient::connect_with(addr, "Cookie: token=abc\r\n").await;
    assert_eq!(response.header("x-session"), Some("42"));
    assert_eq!(response.header("set-cookie"), Some("a=b"));
    let (seen, _conn) = within(server).await.unwrap();
    assert_eq!(seen, Some(("/chat?room=1".to_string(), Some(HeaderValue::from_static("token=abc")))));
}

#[tokio::test]
async fn accept_with_can_reject() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        Upgrader::new()
            .accept_with(stream, |_| Err(Rejection::new(StatusCode::UNAUTHORIZED, "no token")))
            .await
            .map(|_| ())
    });
    let response = http_exchange(addr, request(addr, "").as_bytes()).await;
    let error = within(server).await.unwrap().unwrap_err();
    assert_refused(&response, &error, 401);
    assert_eq!(response.body, b"no token\n");
}

#[tokio::test]
async fn accept_with_callback_is_not_called_for_a_bad_request() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut called = false;
        let result = Upgrader::new()
            .accept_with(stream, |_| {
                called = true;
                Ok(HeaderMap::new())
            })
            .await;
        (called, result.is_err())
    });
    let response = http_exchange(addr, &without(addr, "Upgrade")).await;
    assert_eq!(response.status, 426);
    assert_eq!(within(server).await.unwrap(), (false, true));
}

#[tokio::test]
async fn bytes_sent_with_the_request_are_the_first_message() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut raw = request(addr, "").into_bytes();
    raw.extend(masked(true, TEXT, b"early bird"));
    raw.extend(masked(false, BINARY, b"frag"));
    raw.extend(masked(true, CONT, b"mented"));
    let (mut client, _) = RawClient::handshake(addr, &raw).await;
    assert_eq!(client.message().await, (TEXT, b"early bird".to_vec(), 1));
    assert_eq!(client.message().await, (BINARY, b"fragmented".to_vec(), 1));
    drop(client);
    drop(within(server).await.unwrap());
}

#[tokio::test]
async fn early_bytes_reach_a_silverback_connection_read_directly() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move { conn.read_message().await }).await;
    let mut raw = request(addr, "").into_bytes();
    raw.extend(masked(true, BINARY, &[1, 2, 3]));
    let (_client, _) = RawClient::handshake(addr, &raw).await;
    let msg = within(server).await.unwrap().unwrap();
    assert_eq!((msg.kind, &msg.data[..]), (MessageType::Binary, &[1u8, 2, 3][..]));
}

#[tokio::test]
async fn custom_error_responder() {
    let upgrader = Upgrader::new().error(|rejection: &Rejection| {
        let mut response = Response::new(Bytes::from(format!("custom: {}", rejection.status.as_u16())));
        *response.status_mut() = rejection.status;
        response.headers_mut().insert("x-custom", HeaderValue::from_static("yes"));
        response
    });
    let (response, error) = refused(upgrader, |addr| with(addr, "Origin", "http://evil.example")).await;
    assert_eq!(response.status, 403);
    assert_eq!(response.header("x-custom"), Some("yes"));
    assert_eq!(response.body, b"custom: 403");
    assert!(matches!(error, Error::RequestRefused { status, .. } if status == StatusCode::FORBIDDEN));
}

#[tokio::test]
async fn the_accept_key_is_computed_from_the_client_key() {
    let (addr, server) = spawn_accept(Upgrader::new()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let headers: Vec<_> = good_headers(addr)
        .into_iter()
        .map(|(n, v)| if n == "Sec-WebSocket-Key" { (n, "AQIDBAUGBwgJCgsMDQ4PEA==".to_string()) } else { (n, v) })
        .collect();
    stream.write_all(request_with("GET", &headers).as_bytes()).await.unwrap();
    let mut buf = BytesMut::new();
    let head = read_head(&mut stream, &mut buf).await;
    let response = HttpResponse::parse(&head, Vec::new());
    assert_eq!(response.status, 101);
    assert_eq!(response.header("upgrade").map(str::to_ascii_lowercase).as_deref(), Some("websocket"));
    assert_eq!(response.header("connection").map(str::to_ascii_lowercase).as_deref(), Some("upgrade"));
    // base64(sha1(key + GUID)), computed independently.
    assert_eq!(response.header("sec-websocket-accept"), Some("C/0nmHhBztSRGR1CwL6Tf4ZjwpY="));
    within(server).await.unwrap().unwrap();
}

#[test]
fn is_websocket_upgrade_helper() {
    let request = |pairs: &[(&str, &str)]| {
        let mut builder = Request::builder().uri("/");
        for (k, v) in pairs {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap()
    };
    assert!(silverback::is_websocket_upgrade(&request(&[("Connection", "Upgrade"), ("Upgrade", "websocket")])));
    assert!(silverback::is_websocket_upgrade(&request(&[
        ("Connection", "keep-alive, UPGRADE"),
        ("Upgrade", "WebSocket")
    ])));
    assert!(!silverback::is_websocket_upgrade(&request(&[("Upgrade", "websocket")])));
    assert!(!silverback::is_websocket_upgrade(&request(&[("Connection", "Upgrade")])));
    assert!(!silverback::is_websocket_upgrade(&request(&[("Connection", "Upgrade"), ("Upgrade", "h2c")])));
    assert!(!silverback::is_websocket_upgrade(&request(&[])));
}

#[test]
fn subprotocols_helper() {
    let request = Request::builder()
        .header("Sec-WebSocket-Protocol", "chat, superchat")
        .header("Sec-WebSocket-Protocol", " v2 ,,")
        .body(Vec::<u8>::new())
        .unwrap();
    assert_eq!(silverback::subprotocols(&request), vec!["chat", "superchat", "v2"]);
    let none = Request::builder().body(()).unwrap();
    assert!(silverback::subprotocols(&none).is_empty());
}

#[tokio::test]
async fn compression_offers_are_declined_by_default() {
    for upgrader in [Upgrader::new(), Upgrader::new().enable_compression(false)] {
        let (addr, server) = spawn_echo_server(upgrader).await;
        let (mut raw, response) =
            RawClient::connect_with(addr, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
                .await;
        assert!(response.header("sec-websocket-extensions").is_none(), "{response:?}");
        raw.send_frame(true, TEXT, b"plain").await;
        assert_eq!(raw.message().await, (TEXT, b"plain".to_vec(), 1));
        // Without the extension, RSV1 is a protocol error.
        raw.send(&frame_b0(0xC1, b"x", Some(MASK))).await;
        let (code, _) = raw.read_close().await.unwrap();
        assert_eq!(code, 1002);
        raw.expect_eof().await;
        let end = within(server).await.unwrap();
        assert!(matches!(end, Error::Protocol(_)), "{end:?}");
    }
}
