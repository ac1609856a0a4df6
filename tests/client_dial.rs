//! The client's dial and opening handshake over real loopback sockets: URLs,
//! the request it sends, every way a server's response can be refused,
//! timeouts, masking, cookies and subprotocols.

mod client_support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::BytesMut;
use client_support::*;
use futures_util::StreamExt;
use http::header::{HeaderName, HeaderValue};
use silverback::dial::BoxedStream;
use silverback::{CloseCode, CloseFrame, CookieJar, Error, MemoryCookieJar, MessageType, Upgrader};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Dials a raw server that answers with `response(request)`; returns the result
/// and the request the server saw.
async fn dial_against<F>(
    dialer: silverback::Dialer,
    response: F,
) -> (silverback::Result<(silverback::Conn<silverback::ClientStream>, http::Response<()>)>, RawRequest)
where
    F: Fn(&RawRequest) -> Vec<u8> + Send + Sync + 'static,
{
    let (addr, mut requests) = spawn_responder(response).await;
    let result = within(dialer.connect(&ws_url(addr, "/ws"))).await;
    let request = within(requests.recv()).await.expect("the server saw no request");
    (result, request)
}

/// The refusal of a dial whose response was bad: reason and response.
fn bad_handshake<T: std::fmt::Debug>(result: silverback::Result<T>) -> (String, http::Response<bytes::Bytes>) {
    match result {
        Err(Error::BadResponse { reason, response }) => (reason, *response),
        other => panic!("expected Error::BadResponse, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// URLs

#[tokio::test]
async fn default_port_and_host_header_of_ws_urls() {
    let (addr, mut requests) = spawn_accepting_raw().await;
    let cases = [
        ("ws://example.test/", ("example.test", 80), "example.test", "/"),
        ("ws://example.test", ("example.test", 80), "example.test", "/"),
        ("ws://example.test:80/a", ("example.test", 80), "example.test", "/a"),
        ("ws://EXAMPLE.test:8080/b/c?x=1", ("example.test", 8080), "example.test:8080", "/b/c?x=1"),
        ("ws://127.0.0.1:80/", ("127.0.0.1", 80), "127.0.0.1", "/"),
        ("ws://[::1]/v6", ("::1", 80), "[::1]", "/v6"),
        ("ws://[::1]:8080/v6", ("::1", 8080), "[::1]:8080", "/v6"),
    ];
    for (url, (host, port), host_header, resource) in cases {
        let redirect = Redirect::default();
        let dialer = redirect.install(dialer(), addr);
        let (conn, response) = within(dialer.connect(url)).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(response.status(), 101);
        assert_eq!(redirect.asked(), vec![(host.to_owned(), port)], "{url}");
        let request = within(requests.recv()).await.unwrap();
        assert_eq!(request.request_line, format!("GET {resource} HTTP/1.1"), "{url}");
        assert_eq!(request.all("Host"), vec![host_header], "{url}");
        drop(conn);
    }
}

#[tokio::test]
async fn direct_dial_sends_host_with_port() {
    let (addr, mut requests) = spawn_accepting_raw().await;
    let (conn, _) = within(dialer().connect(&format!("ws://localhost:{}/", addr.port()))).await.unwrap();
    let request = within(requests.recv()).await.unwrap();
    assert_eq!(request.header("Host"), Some(format!("localhost:{}", addr.port()).as_str()));
    let tcp_peer = conn.remote_addr().unwrap();
    assert_eq!(tcp_peer.port(), addr.port());
    assert!(conn.local_addr().unwrap().ip().is_loopback());
}

#[tokio::test]
async fn ipv6_literal_with_path_and_query() {
    let listener = TcpListener::bind("[::1]:0").await.expect("IPv6 loopback ([::1]) is not available");
    let port = listener.local_addr().unwrap().port();
    let mut requests = spawn_accepting_raw_on(listener).await;
    let url = format!("ws://[::1]:{port}/path/to?q=1&r=a%20b");
    let (conn, response) = within(dialer().connect(&url)).await.unwrap();
    assert_eq!(response.status(), 101);
    let request = within(requests.recv()).await.unwrap();
    assert_eq!(request.request_line, "GET /path/to?q=1&r=a%20b HTTP/1.1");
    assert_eq!(request.header("Host"), Some(format!("[::1]:{port}").as_str()));
    assert_eq!(conn.remote_addr().unwrap(), format!("[::1]:{port}").parse::<std::net::SocketAddr>().unwrap());
}

#[tokio::test]
async fn userinfo_is_sent_as_basic_authorization() {
    let (addr, mut requests) = spawn_accepting_raw().await;
    let url = format!("ws://al%40ice:s3cr%3At@127.0.0.1:{}/private", addr.port());
    let _conn = within(dialer().connect(&url)).await.unwrap();
    let request = within(requests.recv()).await.unwrap();
    let expected = format!("Basic {}", BASE64.encode("al@ice:s3cr:t"));
    assert_eq!(request.all("Authorization"), vec![expected.as_str()]);
    // The userinfo is not part of the request target or the Host header.
    assert_eq!(request.request_line, "GET /private HTTP/1.1");
    assert_eq!(request.header("Host"), Some(format!("127.0.0.1:{}", addr.port()).as_str()));

    // An Authorization header set on the dialer wins over the userinfo.
    let d = dialer().header(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer xyz"));
    let _conn = within(d.connect(&url)).await.unwrap();
    let request = within(requests.recv()).await.unwrap();
    assert_eq!(request.all("Authorization"), vec!["Bearer xyz"]);

    // A user without a password.
    let url = format!("ws://bob@127.0.0.1:{}/", addr.port());
    let _conn = within(dialer().connect(&url)).await.unwrap();
    let request = within(requests.recv()).await.unwrap();
    assert_eq!(request.header("Authorization"), Some(format!("Basic {}", BASE64.encode("bob:")).as_str()));
}

#[tokio::test]
async fn invalid_urls_fail_before_any_connection() {
    let (listener, addr) = listen().await;
    let port = addr.port();
    let calls = Arc::new(AtomicUsize::new(0));
    let counting = {
        let calls = calls.clone();
        dialer().connect_fn(move |_host, _port| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let stream = TcpStream::connect(addr).await?;
                Ok(Box::new(stream) as BoxedStream)
            }
        })
    };
    let bad = [
        format!("http://127.0.0.1:{port}/"),
        format!("https://127.0.0.1:{port}/"),
        format!("ftp://127.0.0.1:{port}/"),
        format!("wsx://127.0.0.1:{port}/"),
        format!("socks5://127.0.0.1:{port}/"),
        format!("127.0.0.1:{port}"),
        format!("ws//127.0.0.1:{port}/"),
        "ws://".to_owned(),
        String::new(),
        format!("ws://127.0.0.1:{port}/#fragment"),
    ];
    for url in &bad {
        let direct = within(dialer().connect(url)).await;
        assert!(matches!(direct, Err(Error::InvalidUrl(_))), "{url:?}: {direct:?}");
        let custom = within(counting.connect(url)).await;
        assert!(matches!(custom, Err(Error::InvalidUrl(_))), "{url:?}: {custom:?}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "connect_fn was called for an invalid URL");
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "a connection was made for an invalid URL: {accepted:?}");
}

#[tokio::test]
async fn reserved_request_headers_fail_before_any_connection() {
    let (listener, addr) = listen().await;
    for (name, value) in [
        ("upgrade", "websocket"),
        ("connection", "close"),
        ("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAA=="),
        ("sec-websocket-version", "8"),
        ("sec-websocket-extensions", "permessage-deflate"),
    ] {
        let d = dialer().header(HeaderName::from_static(name), HeaderValue::from_static(value));
        let result = within(d.connect(&ws_url(addr, "/"))).await;
        assert!(matches!(result, Err(Error::InvalidRequest(_))), "{name}: {result:?}");
    }
    let d = dialer()
        .subprotocols(["chat"])
        .header(HeaderName::from_static("sec-websocket-protocol"), HeaderValue::from_static("chat"));
    let result = within(d.connect(&ws_url(addr, "/"))).await;
    assert!(matches!(result, Err(Error::InvalidRequest(_))), "{result:?}");
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "a connection was made for an invalid request");
}

#[tokio::test]
async fn custom_headers_are_sent() {
    let (addr, mut requests) = spawn_accepting_raw().await;
    let d = dialer()
        .header(http::header::ORIGIN, HeaderValue::from_static("https://app.example"))
        .header(HeaderName::from_static("x-trace"), HeaderValue::from_static("one"))
        .header(HeaderName::from_static("x-trace"), HeaderValue::from_static("two"))
        .header(http::header::HOST, HeaderValue::from_static("virtual.example"));
    let _conn = within(d.connect(&ws_url(addr, "/"))).await.unwrap();
    let request = within(requests.recv()).await.unwrap();
    assert_eq!(request.header("Origin"), Some("https://app.example"));
    assert_eq!(request.all("X-Trace"), vec!["one", "two"]);
    assert_eq!(request.all("Host"), vec!["virtual.example"], "a Host header set on the dialer replaces the URL's");
}

// ---------------------------------------------------------------------------
// The request

#[tokio::test]
async fn request_has_the_handshake_headers_and_a_fresh_key_each_dial() {
    let (addr, mut requests) = spawn_accepting_raw().await;
    let d = dialer();
    let mut keys = Vec::new();
    for _ in 0..3 {
        let (_conn, response) = within(d.connect(&ws_url(addr, "/chat"))).await.unwrap();
        let request = within(requests.recv()).await.unwrap();
        assert_eq!(request.request_line, "GET /chat HTTP/1.1");
        assert!(request.header("Upgrade").unwrap().eq_ignore_ascii_case("websocket"));
        assert!(request.header("Connection").unwrap().to_ascii_lowercase().contains("upgrade"));
        assert_eq!(request.header("Sec-WebSocket-Version"), Some("13"));
        assert_eq!(request.header("Sec-WebSocket-Protocol"), None, "no subprotocols offered");
        assert_eq!(request.header("Sec-WebSocket-Extensions"), None, "no extensions offered");
        let key = request.key().to_owned();
        let decoded = BASE64.decode(&key).unwrap_or_else(|e| panic!("key {key:?} is not base64: {e}"));
        assert_eq!(decoded.len(), 16, "key {key:?} does not encode 16 bytes");
        assert_eq!(
            response.headers().get("sec-websocket-accept").unwrap().to_str().unwrap(),
            accept_key(&key),
            "the response returned is the server's"
        );
        keys.push(key);
    }
    let distinct: HashSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "keys were reused: {keys:?}");
}

#[tokio::test]
async fn every_client_frame_is_masked_with_varying_keys() {
    let (frames_tx, mut frames_rx) = tokio::sync::mpsc::unbounded_channel();
    let (addr, _requests) = spawn_raw(move |request, mut stream| {
        let frames_tx = frames_tx.clone();
        async move {
            stream.write_all(switching(request.key(), "").as_bytes()).await.unwrap();
            let mut buf = BytesMut::new();
            while let Some(frame) = read_frame(&mut stream, &mut buf).await {
                let is_close = frame.opcode == CLOSE;
                let _ = frames_tx.send(frame);
                if is_close {
                    stream.write_all(&server_frame(CLOSE, &close_payload(1000, ""))).await.unwrap();
                    break;
                }
            }
        }
    })
    .await;

    let (mut conn, _) = within(dialer().write_buffer_size(512).connect(&ws_url(addr, "/"))).await.unwrap();
    let large: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let medium: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    conn.write_text("hello").await.unwrap();
    conn.write_binary(&medium).await.unwrap();
    conn.write_binary(&large).await.unwrap();
    conn.write_text("").await.unwrap();
    conn.write_control(MessageType::Ping, "ping!", None).await.unwrap();
    conn.write_control(MessageType::Pong, "pong!", None).await.unwrap();
    {
        let mut writer = conn.next_writer(MessageType::Text).await.unwrap();
        writer.write_all(&[b'z'; 1500]).await.unwrap();
        writer.close().await.unwrap();
    }
    within(conn.close(CloseFrame::new(CloseCode::NORMAL, "done"))).await.unwrap();

    let mut frames = Vec::new();
    while let Some(frame) = within(frames_rx.recv()).await {
        let is_close = frame.opcode == CLOSE;
        frames.push(frame);
        if is_close {
            break;
        }
    }
    let (first, rest) = frames.split_at(6);
    let expected: [(u8, &[u8]); 6] =
        [(TEXT, b"hello"), (BINARY, &medium), (BINARY, &large), (TEXT, b""), (PING, b"ping!"), (PONG, b"pong!")];
    for (frame, (opcode, payload)) in first.iter().zip(expected) {
        assert_eq!((frame.opcode, frame.fin, frame.rsv), (opcode, true, 0));
        assert_eq!(frame.payload, payload, "opcode {opcode}");
    }
    // The streamed message came in several fragments, then the close.
    let (close, fragments) = rest.split_last().unwrap();
    assert!(fragments.len() >= 2, "expected fragments, got {}", fragments.len());
    assert_eq!(fragments[0].opcode, TEXT);
    assert!(fragments[1..].iter().all(|f| f.opcode == 0));
    assert!(fragments.last().unwrap().fin && fragments[..fragments.len() - 1].iter().all(|f| !f.fin));
    assert_eq!(fragments.iter().flat_map(|f| f.payload.clone()).collect::<Vec<u8>>(), vec![b'z'; 1500]);
    assert_eq!(close.opcode, CLOSE);
    assert_eq!(close.payload, close_payload(1000, "done"));

    for frame in &frames {
        let key = frame.mask.unwrap_or_else(|| panic!("unmasked client frame: {frame:?}"));
        if key != [0; 4] && !frame.payload.is_empty() {
            assert_ne!(frame.wire, frame.payload, "the payload went out in clear");
        }
    }
    let keys: HashSet<[u8; 4]> = frames.iter().filter_map(|f| f.mask).collect();
    assert_eq!(keys.len(), frames.len(), "masking keys repeat across {} frames", frames.len());
}

// ---------------------------------------------------------------------------
// The response

#[tokio::test]
async fn non_101_status_is_a_bad_handshake_with_status_headers_and_body() {
    let (result, _) = dial_against(dialer(), |_| {
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Why: not-today\r\nContent-Length: 15\r\n\r\nyou shall not\r\n"
            .to_vec()
    })
    .await;
    let (reason, response) = bad_handshake(result);
    assert!(reason.contains("403"), "{reason}");
    assert_eq!(response.status(), 403);
    assert_eq!(response.headers()["x-why"], "not-today");
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(&response.body()[..], b"you shall not\r\n");
}

#[tokio::test]
async fn refusal_body_arriving_after_the_head_is_kept() {
    let (addr, _requests) = spawn_raw(|_request, mut stream| async move {
        stream
            .write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic\r\nContent-Length: 12\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(b"login first!").await.unwrap();
        drain(&mut stream).await;
    })
    .await;
    let result = within(dialer().connect(&ws_url(addr, "/"))).await;
    let err = result.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("401"), "{err}");
    let (_, response) = bad_handshake(result);
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Basic");
    assert_eq!(&response.body()[..], b"login first!");
}

#[tokio::test]
async fn large_refusal_body_is_cut_to_an_excerpt() {
    let (result, _) = dial_against(dialer(), |_| {
        let body = vec![b'x'; 5000];
        let mut out =
            format!("HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        out.extend_from_slice(&body);
        out
    })
    .await;
    let (_, response) = bad_handshake(result);
    assert_eq!(response.status(), 500);
    assert_eq!(response.body().len(), 1024);
}

#[tokio::test]
async fn redirect_is_reported_with_its_location() {
    let (result, _) = dial_against(dialer(), |_| {
        b"HTTP/1.1 302 Found\r\nLocation: ws://elsewhere.test/new-home\r\nContent-Length: 0\r\n\r\n".to_vec()
    })
    .await;
    let (reason, response) = bad_handshake(result);
    assert!(reason.contains("ws://elsewhere.test/new-home"), "{reason}");
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "ws://elsewhere.test/new-home");
}

#[tokio::test]
async fn response_without_upgrade_websocket_is_refused() {
    for upgrade in ["", "Upgrade: h2c\r\n"] {
        let upgrade = upgrade.to_owned();
        let (result, _) = dial_against(dialer(), move |r| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\n{upgrade}Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(r.key())
            )
            .into_bytes()
        })
        .await;
        let (reason, response) = bad_handshake(result);
        assert!(reason.contains("Upgrade"), "{reason}");
        assert_eq!(response.status(), 101);
    }
}

#[tokio::test]
async fn response_without_connection_upgrade_is_refused() {
    for connection in ["", "Connection: keep-alive\r\n"] {
        let connection = connection.to_owned();
        let (result, _) = dial_against(dialer(), move |r| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n{connection}Sec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(r.key())
            )
            .into_bytes()
        })
        .await;
        let (reason, _) = bad_handshake(result);
        assert!(reason.contains("Connection"), "{reason}");
    }
}

#[tokio::test]
async fn wrong_or_missing_accept_is_refused() {
    // The accept value of another key (RFC 6455's example).
    let (result, _) = dial_against(dialer(), |_| {
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n".to_vec()
    })
    .await;
    let (reason, _) = bad_handshake(result);
    assert!(reason.contains("Sec-WebSocket-Accept"), "{reason}");

    // The key echoed back instead of its hash.
    let (result, _) = dial_against(dialer(), |r| {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            r.key()
        )
        .into_bytes()
    })
    .await;
    let (reason, _) = bad_handshake(result);
    assert!(reason.contains("Sec-WebSocket-Accept"), "{reason}");

    let (result, _) = dial_against(dialer(), |_| {
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec()
    })
    .await;
    let (reason, _) = bad_handshake(result);
    assert!(reason.contains("Sec-WebSocket-Accept"), "{reason}");
}

#[tokio::test]
async fn subprotocol_not_offered_is_refused() {
    // Offered chat, server says other.
    let (result, request) = dial_against(dialer().subprotocols(["chat", "v2"]), |r| {
        switching(r.key(), "Sec-WebSocket-Protocol: other\r\n").into_bytes()
    })
    .await;
    assert_eq!(request.header("Sec-WebSocket-Protocol"), Some("chat, v2"));
    let (reason, response) = bad_handshake(result);
    assert!(reason.contains("other"), "{reason}");
    assert_eq!(response.headers()["sec-websocket-protocol"], "other");

    // Nothing offered, server picks one anyway.
    let (result, request) =
        dial_against(dialer(), |r| switching(r.key(), "Sec-WebSocket-Protocol: chat\r\n").into_bytes()).await;
    assert_eq!(request.header("Sec-WebSocket-Protocol"), None);
    let (reason, _) = bad_handshake(result);
    assert!(reason.contains("chat"), "{reason}");
}

#[tokio::test]
async fn extension_not_offered_is_refused() {
    let (result, request) = dial_against(dialer(), |r| {
        switching(r.key(), "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n").into_bytes()
    })
    .await;
    assert_eq!(request.header("Sec-WebSocket-Extensions"), None);
    let (reason, response) = bad_handshake(result);
    assert!(reason.contains("extension"), "{reason}");
    assert_eq!(response.status(), 101);
}

#[tokio::test]
async fn tolerant_parsing_of_a_valid_response() {
    // Token lists and odd case are fine.
    let (result, _) = dial_against(dialer(), |r| {
        format!(
            "HTTP/1.1 101 Web Socket Protocol Handshake\r\nupgrade: WebSocket\r\nCONNECTION: keep-alive, Upgrade\r\nsec-websocket-accept: {}\r\nServer: raw\r\n\r\n",
            accept_key(r.key())
        )
        .into_bytes()
    })
    .await;
    let (_conn, response) = result.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["server"], "raw");
}

#[tokio::test]
async fn garbage_or_no_response_is_an_invalid_response() {
    let (result, _) = dial_against(dialer(), |_| b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()).await;
    assert!(matches!(result, Err(Error::InvalidResponse(_))), "{result:?}");

    let (addr, _requests) = spawn_raw(|_request, stream| async move { drop(stream) }).await;
    let result = within(dialer().connect(&ws_url(addr, "/"))).await;
    assert!(matches!(result, Err(Error::InvalidResponse(_)) | Err(Error::Io(_))), "{result:?}");
}

#[tokio::test]
async fn oversized_response_head_is_refused() {
    let (result, _) = dial_against(dialer(), |_| {
        let mut out = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
        for i in 0..2000 {
            out.extend_from_slice(format!("X-Filler-{i}: aaaaaaaaaaaaaaaaaaaa\r\n").as_bytes());
        }
        out
    })
    .await;
    assert!(matches!(result, Err(Error::InvalidResponse(_))), "{result:?}");
}

#[tokio::test]
async fn response_trickling_in_byte_by_byte() {
    let (addr, _requests) = spawn_raw(|request, mut stream| async move {
        stream.set_nodelay(true).unwrap();
        let mut bytes = switching(request.key(), "X-Slow: yes\r\n").into_bytes();
        bytes.extend_from_slice(&server_frame(TEXT, b"slow"));
        for byte in bytes {
            stream.write_all(&[byte]).await.unwrap();
            stream.flush().await.unwrap();
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        drain(&mut stream).await;
    })
    .await;
    let (mut conn, response) = within(dialer().connect(&ws_url(addr, "/"))).await.unwrap();
    assert_eq!(response.headers()["x-slow"], "yes");
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("slow"));
}

#[tokio::test]
async fn connect_on_an_existing_stream() {
    let (addr, mut requests) = spawn_raw(|request, mut stream| async move {
        let mut out = switching(request.key(), "").into_bytes();
        out.extend_from_slice(&server_frame(TEXT, b"hello over connect_on"));
        stream.write_all(&out).await.unwrap();
        drain(&mut stream).await;
    })
    .await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut conn, response) = within(dialer().connect_on(stream, "ws://name.test:8000/on?x=1")).await.unwrap();
    assert_eq!(response.status(), 101);
    let request = within(requests.recv()).await.unwrap();
    assert_eq!(request.request_line, "GET /on?x=1 HTTP/1.1");
    assert_eq!(request.header("Host"), Some("name.test:8000"));
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("hello over connect_on"));
    assert_eq!(conn.remote_addr().unwrap(), addr, "the caller's own stream is used");

    let stream = TcpStream::connect(addr).await.unwrap();
    let result = within(dialer().connect_on(stream, "http://name.test/")).await;
    assert!(matches!(result, Err(Error::InvalidUrl(_))), "{result:?}");
}

#[tokio::test]
async fn bytes_right_after_the_101_are_the_first_messages() {
    let (result, _) = dial_against(dialer(), |r| {
        let mut out = switching(r.key(), "").into_bytes();
        out.extend_from_slice(&server_frame(TEXT, b"early bird"));
        out.extend_from_slice(&server_frame(BINARY, &[1, 2, 3]));
        out
    })
    .await;
    let (mut conn, _) = result.unwrap();
    let first = within(conn.read_message()).await.unwrap();
    assert_eq!(first.as_text(), Some("early bird"));
    let second = within(conn.read_message()).await.unwrap();
    assert_eq!((second.kind, &second.data[..]), (MessageType::Binary, &[1u8, 2, 3][..]));
}

// ---------------------------------------------------------------------------
// Timeouts

#[tokio::test]
async fn handshake_timeout_against_a_silent_server() {
    let (listener, addr) = listen().await;
    let (hold_tx, mut hold_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let _ = hold_tx.send(stream);
        }
    });
    let d = dialer().handshake_timeout(Some(Duration::from_millis(300)));
    let started = Instant::now();
    let result = within(d.connect(&ws_url(addr, "/"))).await;
    let elapsed = started.elapsed();
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(result.unwrap_err().is_timeout());
    assert!(elapsed >= Duration::from_millis(250), "gave up too early: {elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    assert!(hold_rx.try_recv().is_ok(), "the TCP connection was made");
}

#[tokio::test]
async fn handshake_timeout_against_a_server_that_stops_mid_response() {
    let (addr, _requests) = spawn_raw(|_request, mut stream| async move {
        stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n").await.unwrap();
        drain(&mut stream).await;
    })
    .await;
    let d = dialer().handshake_timeout(Some(Duration::from_millis(300)));
    let started = Instant::now();
    let result = within(d.connect(&ws_url(addr, "/"))).await;
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));
}

// ---------------------------------------------------------------------------
// Cookies

// tungstenite's handshake callback returns its large error response by value.
#[allow(clippy::result_large_err)]
#[tokio::test]
async fn cookie_jar_round_trip_with_tungstenite_server() {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    let (listener, addr) = listen().await;
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let server_seen = seen.clone();
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((stream, _)) = listener.accept().await else { return };
            let seen = server_seen.clone();
            tokio::spawn(async move {
                let callback = move |request: &Request, mut response: Response| {
                    let cookie = request.headers().get("cookie").map(|v| v.to_str().unwrap().to_owned());
                    seen.lock().unwrap().push(cookie);
                    if n == 0 {
                        let headers = response.headers_mut();
                        headers.append("set-cookie", "session=abc123; Path=/; HttpOnly".parse().unwrap());
                        headers.append("set-cookie", "elsewhere=1; Path=/other".parse().unwrap());
                    }
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });

    let jar = Arc::new(MemoryCookieJar::new());
    let d = dialer().cookie_jar(jar.clone());
    let url = ws_url(addr, "/chat");
    let (first, _) = within(d.connect(&url)).await.unwrap();
    drop(first);
    let stored = jar.cookies(&url::Url::parse(&format!("http://{addr}/chat")).unwrap());
    assert_eq!(stored.as_deref(), Some("session=abc123"));
    let (second, _) = within(d.connect(&url)).await.unwrap();
    drop(second);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![None, Some("session=abc123".to_owned())]);
}

#[tokio::test]
async fn cookie_jar_round_trip_with_raw_server() {
    let (addr, mut requests) = spawn_responder(|r| {
        let extra = if r.header("Cookie").is_none() { "Set-Cookie: token=t1; Path=/\r\n" } else { "" };
        switching(r.key(), extra).into_bytes()
    })
    .await;
    let d = dialer().cookie_jar(Arc::new(MemoryCookieJar::new()));
    let _first = within(d.connect(&ws_url(addr, "/a"))).await.unwrap();
    let _second = within(d.connect(&ws_url(addr, "/b"))).await.unwrap();
    let first = within(requests.recv()).await.unwrap();
    let second = within(requests.recv()).await.unwrap();
    assert_eq!(first.header("Cookie"), None);
    assert_eq!(second.all("Cookie"), vec!["token=t1"]);
    // Without a jar, nothing is sent.
    let _third = within(dialer().connect(&ws_url(addr, "/c"))).await.unwrap();
    assert_eq!(within(requests.recv()).await.unwrap().header("Cookie"), None);
}

// ---------------------------------------------------------------------------
// Subprotocols

#[tokio::test]
async fn subprotocol_negotiated_with_our_upgrader() {
    let (addr, server) = spawn_server(Upgrader::new().subprotocols(["v2", "v1"]), |conn| async move {
        conn.subprotocol().map(str::to_owned)
    })
    .await;
    let (conn, response) = within(dialer().subprotocols(["v1", "v2"]).connect(&ws_url(addr, "/"))).await.unwrap();
    assert_eq!(conn.subprotocol(), Some("v1"), "the client's first choice that the server speaks");
    assert_eq!(response.headers()["sec-websocket-protocol"], "v1");
    assert_eq!(within(server).await.unwrap().as_deref(), Some("v1"));

    // No protocol in common: the connection has none.
    let (addr, server) =
        spawn_server(Upgrader::new().subprotocols(["x"]), |conn| async move { conn.subprotocol().map(str::to_owned) })
            .await;
    let (conn, response) = within(dialer().subprotocols(["v1"]).connect(&ws_url(addr, "/"))).await.unwrap();
    assert_eq!(conn.subprotocol(), None);
    assert!(response.headers().get("sec-websocket-protocol").is_none());
    assert_eq!(within(server).await.unwrap(), None);
}

// ---------------------------------------------------------------------------
// Top-level connect

#[tokio::test]
async fn top_level_connect_function() {
    let (addr, server) = spawn_server(Upgrader::new(), echo).await;
    let (mut conn, response) = within(silverback::connect(&ws_url(addr, "/echo"))).await.unwrap();
    assert_eq!(response.status(), 101);
    conn.write_text("via silverback::connect").await.unwrap();
    let reply = within(conn.read_message()).await.unwrap();
    assert_eq!(reply.as_text(), Some("via silverback::connect"));
    within(conn.close(CloseFrame::new(CloseCode::NORMAL, ""))).await.unwrap();
    let ended = within(server).await.unwrap();
    assert!(ended.is_close(&[CloseCode::NORMAL]), "{ended:?}");
}

#[tokio::test]
async fn connect_fn_can_supply_any_stream() {
    // An in-memory duplex stream, served by our upgrader.
    let d = dialer().connect_fn(|host, port| async move {
        assert_eq!((host.as_str(), port), ("in-memory.test", 80));
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            if let Ok(mut conn) = Upgrader::new().accept(server).await {
                while let Ok(msg) = conn.read_message().await {
                    if conn.write_message(msg.kind, &msg.data).await.is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Box::new(client) as BoxedStream)
    });
    let (mut conn, _) = within(d.connect("ws://in-memory.test/")).await.unwrap();
    assert!(!conn.with_stream(|s| s.is_tls()));
    assert!(conn.with_stream(|s| s.as_tcp().is_none()));
    conn.write_binary([9u8, 8, 7]).await.unwrap();
    assert_eq!(&within(conn.read_message()).await.unwrap().data[..], &[9, 8, 7]);

    // A connect function's error is the dial's error.
    let failing = dialer().connect_fn(|_, _| async {
        Err::<BoxedStream, _>(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "nope"))
    });
    let result = within(failing.connect("ws://in-memory.test/")).await;
    assert!(matches!(&result, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused), "{result:?}");
}

#[tokio::test]
async fn connection_refused_is_an_io_error() {
    let (listener, addr) = listen().await;
    drop(listener);
    let result = within(dialer().connect(&ws_url(addr, "/"))).await;
    assert!(matches!(&result, Err(Error::Io(_))), "{result:?}");
}
