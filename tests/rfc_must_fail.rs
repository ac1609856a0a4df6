//! Every rule of RFC 6455 and RFC 7692 that says an endpoint MUST fail (or
//! refuse, or decline), one test per rule, each named after the rule and its
//! section.
//!
//! Each test talks raw bytes to a live silverback endpoint over loopback: a
//! silverback server fed by a hand-written client, or a silverback client
//! (`Dialer`) fed by a hand-written server. It checks what goes on the wire
//! (the HTTP status of a refused handshake, the close code of a failed
//! connection) and that the silverback side then closes the TCP connection
//! by itself: the silverback connection is kept alive by the test until the
//! raw peer has seen EOF, so the EOF comes from the library, not from a drop.
//!
//! Before each framing violation, one valid message is echoed, so that the
//! close is known to answer the violation and not something earlier.

mod common;

use std::future::Future;
use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::BytesMut;
use common::*;
use sha1::{Digest, Sha1};
use silverback::proto::ProtocolError;
use silverback::{CloseCode, DeflateConfig, Dialer, Error, Proxy, Upgrader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------
// permessage-deflate by hand (RFC 7692 §7.2), with flate2 directly

/// The trailer of a sync flush, left off on the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Compresses `data` as one message with a fresh context.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::fast(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, flate2::FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&TAIL), "a sync flush ends with 00 00 ff ff");
    out.truncate(out.len() - TAIL.len());
    out
}

/// Inflates one message compressed with a fresh context.
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = flate2::Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(64 * 1024);
    d.decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync).unwrap();
    out
}

/// The offer that makes a silverback server with compression enabled agree.
const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate\r\n";

/// A masked frame with the whole first byte given (FIN, RSV, opcode).
fn masked_b0(b0: u8, payload: &[u8]) -> Vec<u8> {
    frame_b0(b0, payload, Some(MASK))
}

// ---------------------------------------------------------------------------
// A silverback server and a raw client

/// Connects a raw client to a silverback server built with `upgrader`,
/// sending `extra` request headers; echoes one valid message; sends
/// `violation`; and checks that the server answers with a close frame whose
/// code is in `codes`, then closes the TCP connection by itself. Returns the
/// error the server's read ended with (checked to be the same protocol error
/// on a second read) and the `101` response.
async fn server_fails(
    upgrader: Upgrader,
    extra: &str,
    violation: &[u8],
    codes: &[u16],
) -> (ProtocolError, HttpResponse) {
    let (addr, server) = spawn_server(upgrader, |mut conn| async move {
        let first = loop {
            match conn.read_message().await {
                Ok(msg) => {
                    if let Err(e) = conn.write_message(msg.kind, &msg.data).await {
                        break e;
                    }
                }
                Err(e) => break e,
            }
        };
        let second = conn.read_message().await;
        // The connection is handed back alive: any EOF the client saw came
        // from the library.
        (first, second, conn)
    })
    .await;
    let (mut raw, response) = RawClient::connect_with(addr, extra).await;

    raw.send_frame(true, TEXT, b"alive").await;
    let echo = raw.frame().await;
    assert_eq!((echo.opcode, echo.fin, echo.masked), (TEXT, true, false), "{echo:?}");
    let data = if echo.rsv & 0b100 != 0 { inflate(&echo.payload) } else { echo.payload.clone() };
    assert_eq!(data, b"alive", "the valid message before the violation must be echoed");

    raw.send(violation).await;
    // Answers to the valid frames that lead up to the violation (echoes,
    // pongs) come first.
    let close = loop {
        let frame = raw.frame().await;
        if ![TEXT, BINARY, CONT, PONG].contains(&frame.opcode) {
            break frame;
        }
    };
    assert_eq!(close.opcode, CLOSE, "expected a close frame after the violation, got {close:?}");
    assert!(close.fin && !close.masked && close.rsv == 0, "{close:?}");
    let (code, reason) = close.close().expect("a failing close frame must carry a status code");
    assert!(codes.contains(&code), "close code {code}, expected one of {codes:?}");
    // The server closes the TCP connection itself (RFC 6455 §7.1.7).
    raw.expect_eof().await;

    let (first, second, conn) = within(server).await.unwrap();
    drop(conn);
    let violation = match first {
        Error::Protocol(e) => e,
        other => panic!("the server's read must fail with a protocol error, got {other:?}"),
    };
    assert_eq!(violation.close_code(), CloseCode(code), "{violation:?}");
    assert_eq!(reason, violation.close_reason(), "the close frame names the violation");
    match second {
        Err(Error::Protocol(again)) => assert_eq!(again, violation, "read errors are permanent"),
        other => panic!("a second read must return the same error, got {other:?}"),
    }
    (violation, response)
}

/// [`server_fails`] with a default upgrader and no extra headers, for a 1002.
async fn server_fails_1002(violation: &[u8]) -> ProtocolError {
    server_fails(Upgrader::new(), "", violation, &[1002]).await.0
}

/// A server with permessage-deflate agreed, for [`server_fails`].
async fn deflate_server_fails(violation: &[u8], codes: &[u16]) -> ProtocolError {
    let (e, response) = server_fails(Upgrader::new().enable_compression(true), OFFER, violation, codes).await;
    assert_eq!(response.header("sec-websocket-extensions"), Some("permessage-deflate"), "{response:?}");
    e
}

// ---------------------------------------------------------------------------
// Refused handshakes

/// Sends `raw(addr)` to a silverback server and checks that it is refused with
/// `status`, without a `Sec-WebSocket-Accept`, and that the server then
/// closes the connection (the response is read up to EOF). Returns the response.
async fn refused(upgrader: Upgrader, raw: impl FnOnce(SocketAddr) -> Vec<u8>, status: u16) -> HttpResponse {
    let (addr, server) = spawn_accept(upgrader).await;
    let request = raw(addr);
    let response = http_exchange(addr, &request).await;
    assert_eq!(response.status, status, "request {:?} got {response:?}", String::from_utf8_lossy(&request));
    assert!(response.header("sec-websocket-accept").is_none(), "{response:?}");
    match within(server).await.unwrap() {
        Err(Error::RequestRefused { status: got, .. }) => assert_eq!(got.as_u16(), status),
        Err(other) => panic!("expected Error::RequestRefused, got {other:?}"),
        Ok(_) => panic!("the handshake was accepted: {:?}", String::from_utf8_lossy(&request)),
    }
    response
}

/// A valid request without header `name`.
fn without(addr: SocketAddr, name: &str) -> Vec<u8> {
    let headers: Vec<_> = good_headers(addr).into_iter().filter(|(n, _)| n != name).collect();
    request_with("GET", &headers).into_bytes()
}

/// A valid request with header `name` set to `value` (replacing it).
fn with(addr: SocketAddr, name: &str, value: &str) -> Vec<u8> {
    let mut headers: Vec<_> = good_headers(addr).into_iter().filter(|(n, _)| n != name).collect();
    headers.push((name.into(), value.into()));
    request_with("GET", &headers).into_bytes()
}

/// A valid request with a second header `name: value` added.
fn with_extra(addr: SocketAddr, name: &str, value: &str) -> Vec<u8> {
    let mut headers = good_headers(addr);
    headers.push((name.into(), value.into()));
    request_with("GET", &headers).into_bytes()
}

/// Checks that the request is accepted (a positive control for the refusals).
async fn accepted(upgrader: Upgrader, raw: impl FnOnce(SocketAddr) -> Vec<u8>) {
    let (addr, server) = spawn_echo_server(upgrader).await;
    let (mut client, _) = RawClient::handshake(addr, &raw(addr)).await;
    client.send_frame(true, TEXT, b"ok").await;
    assert_eq!(client.message().await.1, b"ok");
    drop(client);
    drop(within(server).await.unwrap());
}

// ---------------------------------------------------------------------------
// A raw server and a silverback client

/// A request head as the raw server read it.
struct Head {
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn key(&self) -> &str {
        self.header("sec-websocket-key").expect("the client sent no Sec-WebSocket-Key")
    }
}

/// `Sec-WebSocket-Accept` for `key`, computed here (RFC 6455 §1.3), not by the library.
fn accept_for(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    BASE64.encode(sha.finalize())
}

/// A `101` response for `key` with `extra` header lines (each ending in CRLF).
fn switching(key: &str, extra: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{extra}\r\n",
        accept_for(key)
    )
}

/// Accepts one TCP connection, reads the request head and runs `f` with it,
/// the stream and the bytes read past the head.
async fn raw_server<F, Fut, T>(f: F) -> (SocketAddr, JoinHandle<T>)
where
    F: FnOnce(Head, TcpStream, BytesMut) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (listener, addr) = listen().await;
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let text = read_head(&mut stream, &mut buf).await;
        let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
        let request_line = lines.next().unwrap();
        assert!(request_line.starts_with("GET ") && request_line.ends_with(" HTTP/1.1"), "{request_line}");
        let headers = lines
            .map(|l| {
                let (name, value) = l.split_once(':').unwrap();
                (name.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        f(Head { headers }, stream, buf).await
    });
    (addr, task)
}

/// The next frame from a client, or `None` at EOF (a reset counts as EOF).
async fn next_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Frame> {
    within(async {
        loop {
            if let Some(frame) = parse_frame(buf) {
                return Some(frame);
            }
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => {
                    assert!(buf.is_empty(), "the client's stream ended inside a frame");
                    return None;
                }
                Ok(_) => {}
            }
        }
    })
    .await
}

fn dialer() -> Dialer {
    Dialer::new().proxy(Proxy::None).handshake_timeout(Some(LIMIT))
}

/// Dials a raw server that answers with `respond(head)`, and checks that the
/// dial fails and that the client then closes the TCP connection without
/// sending anything after its request. Returns the dial's error.
async fn client_refuses<F>(dialer: Dialer, respond: F) -> Error
where
    F: FnOnce(&Head) -> String + Send + 'static,
{
    let (addr, server) = raw_server(move |head, mut stream, _| async move {
        let response = respond(&head);
        stream.write_all(response.as_bytes()).await.unwrap();
        let mut rest = Vec::new();
        let end = within(stream.read_to_end(&mut rest)).await;
        (response, end.map(|_| ()), rest)
    })
    .await;
    let err = match within(dialer.connect(&format!("ws://{addr}/"))).await {
        Ok((conn, response)) => {
            drop(conn);
            panic!("the client accepted the handshake response {response:?}");
        }
        Err(e) => e,
    };
    let (response, end, rest) = within(server).await.unwrap();
    assert!(rest.is_empty(), "the client sent {rest:?} after refusing {response:?}");
    if let Err(e) = end {
        // An abortive close still closes the connection.
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    err
}

/// [`client_refuses`], for a refusal of the handshake response itself.
async fn client_bad_handshake<F>(dialer: Dialer, respond: F) -> String
where
    F: FnOnce(&Head) -> String + Send + 'static,
{
    match client_refuses(dialer, respond).await {
        Error::BadResponse { reason, .. } => reason,
        other => panic!("expected Error::BadResponse, got {other:?}"),
    }
}

/// Dials a raw server that accepts with `extra` response headers, echoes the
/// client's first message, then sends `violation`. Checks that the client
/// answers with a masked close frame whose code is in `codes`, then closes
/// the TCP connection itself (the connection is alive meanwhile), and that
/// its read fails with a protocol error, which is returned.
async fn client_fails(dialer: Dialer, extra: &'static str, violation: Vec<u8>, codes: &[u16]) -> ProtocolError {
    let (addr, server) = raw_server(move |head, mut stream, mut buf| async move {
        stream.write_all(switching(head.key(), extra).as_bytes()).await.unwrap();
        let hello = next_frame(&mut stream, &mut buf).await.expect("no message from the client");
        assert!(hello.masked && hello.fin && hello.opcode == TEXT, "{hello:?}");
        // Echo it as it came (compressed or not), unmasked.
        let b0 = 0x80 | (hello.rsv << 4) | TEXT;
        stream.write_all(&frame_b0(b0, &hello.payload, None)).await.unwrap();
        stream.write_all(&violation).await.unwrap();
        let close = next_frame(&mut stream, &mut buf).await;
        let after = next_frame(&mut stream, &mut buf).await;
        (close, after)
    })
    .await;
    let (mut conn, _) = within(dialer.connect(&format!("ws://{addr}/"))).await.unwrap();
    within(conn.write_text("alive")).await.unwrap();
    let echo = within(conn.read_message()).await.unwrap();
    assert_eq!(echo.data, &b"alive"[..]);
    let err = within(conn.read_message()).await.unwrap_err();
    let (close, after) = within(server).await.unwrap();
    let close = close.expect("the client closed the connection without a close frame");
    assert_eq!(close.opcode, CLOSE, "{close:?}");
    assert!(close.masked, "a client's close frame must be masked: {close:?}");
    let (code, reason) = close.close().expect("a failing close frame must carry a status code");
    assert!(codes.contains(&code), "close code {code}, expected one of {codes:?}");
    assert!(after.is_none(), "the client must close the connection after its close frame: {after:?}");
    drop(conn);
    match err {
        Error::Protocol(e) => {
            assert_eq!(e.close_code(), CloseCode(code), "{e:?}");
            assert_eq!(reason, e.close_reason(), "the close frame names the violation");
            e
        }
        other => panic!("the client's read must fail with a protocol error, got {other:?}"),
    }
}

// ===========================================================================
// RFC 6455 §4.2.1: the server refuses a handshake that is not a valid
// WebSocket opening handshake

#[tokio::test]
async fn rfc6455_4_2_1_1_method_must_be_get() {
    for method in ["POST", "PUT", "DELETE", "get", "CONNECT"] {
        let response = refused(
            Upgrader::new(),
            |addr| {
                let mut head = request_with(method, &good_headers(addr));
                if method == "CONNECT" {
                    head = head.replace("CONNECT /chat?room=1", &format!("CONNECT {addr}"));
                }
                head.into_bytes()
            },
            405,
        )
        .await;
        assert_eq!(response.header("sec-websocket-version"), Some("13"));
    }
}

#[tokio::test]
async fn rfc6455_4_2_1_1_http_version_must_be_at_least_1_1() {
    refused(
        Upgrader::new(),
        |addr| String::from_utf8(without(addr, "none")).unwrap().replacen("HTTP/1.1", "HTTP/1.0", 1).into_bytes(),
        400,
    )
    .await;
}

#[tokio::test]
async fn rfc6455_4_2_1_1_request_must_be_http() {
    for garbage in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
        b"GET / FTP/9\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
    ] {
        refused(Upgrader::new(), |_| garbage.to_vec(), 400).await;
    }
}

#[tokio::test]
async fn rfc6455_4_2_1_2_host_header_required() {
    refused(Upgrader::new(), |addr| without(addr, "Host"), 400).await;
    refused(Upgrader::new(), |addr| with_extra(addr, "Host", "other.example"), 400).await;
}

#[tokio::test]
async fn rfc6455_4_2_1_3_upgrade_websocket_required() {
    refused(Upgrader::new(), |addr| without(addr, "Upgrade"), 426).await;
    for value in ["h2c", "websocket2", "web socket", ""] {
        refused(Upgrader::new(), |addr| with(addr, "Upgrade", value), 426).await;
    }
    // The token is matched without regard to case, in a list.
    accepted(Upgrader::new(), |addr| with(addr, "Upgrade", "WebSocket")).await;
    accepted(Upgrader::new(), |addr| with(addr, "Upgrade", "foo/2, websocket")).await;
}

#[tokio::test]
async fn rfc6455_4_2_1_4_connection_upgrade_required() {
    refused(Upgrader::new(), |addr| without(addr, "Connection"), 400).await;
    for value in ["keep-alive", "upgraded", "close", ""] {
        refused(Upgrader::new(), |addr| with(addr, "Connection", value), 400).await;
    }
    accepted(Upgrader::new(), |addr| with(addr, "Connection", "keep-alive, UPGRADE")).await;
}

#[tokio::test]
async fn rfc6455_4_2_1_5_key_must_be_base64_of_16_bytes() {
    refused(Upgrader::new(), |addr| without(addr, "Sec-WebSocket-Key"), 400).await;
    for key in [
        "",
        // 15 and 17 bytes.
        "AAAAAAAAAAAAAAAAAAAA",
        "AAAAAAAAAAAAAAAAAAAAAAA=",
        // 16 bytes, without the padding.
        "dGhlIHNhbXBsZSBub25jZQ",
        "!!!!!!!!!!!!!!!!!!!!!!==",
        "dGhlIHNhbXBsZSBub25jZQ== x",
    ] {
        refused(Upgrader::new(), |addr| with(addr, "Sec-WebSocket-Key", key), 400).await;
    }
    // Two keys.
    refused(Upgrader::new(), |addr| with_extra(addr, "Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="), 400).await;
}

#[tokio::test]
async fn rfc6455_4_2_1_6_version_must_be_13_else_426_with_version_header() {
    let check = |response: HttpResponse| {
        // RFC 6455 §4.4: the refusal says which version the server speaks.
        assert_eq!(response.header_all("sec-websocket-version"), vec!["13"], "{response:?}");
    };
    check(refused(Upgrader::new(), |addr| without(addr, "Sec-WebSocket-Version"), 426).await);
    for version in ["8", "12", "14", "13x", "", "0"] {
        check(refused(Upgrader::new(), |addr| with(addr, "Sec-WebSocket-Version", version), 426).await);
    }
}

#[tokio::test]
async fn rfc6455_4_2_2_server_must_not_select_an_unoffered_subprotocol() {
    let upgrader = Upgrader::new().subprotocols(["chat"]);
    let (addr, server) = spawn_echo_server(upgrader).await;
    let (raw, response) = RawClient::connect_with(addr, "Sec-WebSocket-Protocol: other, v2\r\n").await;
    assert!(response.header("sec-websocket-protocol").is_none(), "{response:?}");
    drop(raw);
    drop(within(server).await.unwrap());
    let (addr, server) = spawn_echo_server(Upgrader::new().subprotocols(["chat"])).await;
    let (raw, response) = RawClient::connect_with(addr, "").await;
    assert!(response.header("sec-websocket-protocol").is_none(), "{response:?}");
    drop(raw);
    drop(within(server).await.unwrap());
}

// ===========================================================================
// RFC 6455 §5: framing, on the server

#[tokio::test]
async fn rfc6455_5_1_server_must_close_on_unmasked_frame() {
    for frame in [
        frame_b0(0x81, b"unmasked text", None),
        frame_b0(0x82, b"unmasked binary", None),
        frame_b0(0x89, b"unmasked ping", None),
        frame_b0(0x88, &close_payload(1000, b""), None),
        frame_b0(0x01, b"unmasked first fragment", None),
    ] {
        assert_eq!(server_fails_1002(&frame).await, ProtocolError::UnmaskedFrame);
    }
}

#[tokio::test]
async fn rfc6455_5_2_reserved_opcode() {
    for opcode in (0x3..=0x7).chain(0xB..=0xF) {
        let e = server_fails_1002(&masked_b0(0x80 | opcode, b"x")).await;
        assert_eq!(e, ProtocolError::ReservedOpcode(opcode));
    }
    // Also in the middle of a fragmented message.
    let bytes = [masked(false, TEXT, b"part"), masked_b0(0x83, b"x")].concat();
    assert_eq!(server_fails_1002(&bytes).await, ProtocolError::ReservedOpcode(3));
}

#[tokio::test]
async fn rfc6455_5_2_rsv_bits_without_extension() {
    for (b0, rsv) in [(0xC1, 0b100), (0xA1, 0b010), (0x91, 0b001), (0xF2, 0b111), (0xC9, 0b100), (0xA8, 0b010)] {
        let payload = if b0 & 0x0f == CLOSE { close_payload(1000, b"") } else { b"x".to_vec() };
        let e = server_fails_1002(&masked_b0(b0, &payload)).await;
        assert_eq!(e, ProtocolError::ReservedBits(rsv), "first byte {b0:#04x}");
    }
    // RSV1 on a continuation.
    let bytes = [masked(false, TEXT, b"part"), masked_b0(0xC0, b"rest")].concat();
    assert_eq!(server_fails_1002(&bytes).await, ProtocolError::ReservedBits(0b100));
}

#[tokio::test]
async fn rfc6455_5_2_length_top_bit() {
    for opcode in [BINARY, TEXT] {
        let mut bytes = vec![0x80 | opcode, 0x80 | 127];
        bytes.extend_from_slice(&(1u64 << 63).to_be_bytes());
        bytes.extend_from_slice(&MASK);
        assert_eq!(server_fails_1002(&bytes).await, ProtocolError::LengthTopBit);
        let mut bytes = vec![0x80 | opcode, 0x80 | 127];
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        bytes.extend_from_slice(&MASK);
        assert_eq!(server_fails_1002(&bytes).await, ProtocolError::LengthTopBit);
    }
}

#[tokio::test]
async fn rfc6455_5_4_control_frames_must_not_be_fragmented() {
    for opcode in [PING, PONG, CLOSE] {
        let payload = if opcode == CLOSE { close_payload(1000, b"") } else { b"p".to_vec() };
        let e = server_fails_1002(&masked(false, opcode, &payload)).await;
        assert_eq!(e, ProtocolError::FragmentedControlFrame);
    }
    // Inside a fragmented data message, where control frames may appear whole.
    let bytes = [masked(false, TEXT, b"part"), masked(false, PING, b"p")].concat();
    assert_eq!(server_fails_1002(&bytes).await, ProtocolError::FragmentedControlFrame);
}

#[tokio::test]
async fn rfc6455_5_5_control_payload_over_125() {
    for opcode in [PING, PONG, CLOSE] {
        let payload = if opcode == CLOSE { close_payload(1000, &[b'r'; 124]) } else { vec![b'p'; 126] };
        assert_eq!(payload.len(), 126);
        let e = server_fails_1002(&masked(true, opcode, &payload)).await;
        assert_eq!(e, ProtocolError::ControlFrameTooLong(126));
    }
    // A 64-bit length: refused on the header alone, before any payload.
    let mut header = vec![0x80 | PING, 0x80 | 127];
    header.extend_from_slice(&65536u64.to_be_bytes());
    header.extend_from_slice(&MASK);
    assert_eq!(server_fails_1002(&header).await, ProtocolError::ControlFrameTooLong(65536));
}

#[tokio::test]
async fn rfc6455_5_4_continuation_without_start() {
    assert_eq!(server_fails_1002(&masked(true, CONT, b"x")).await, ProtocolError::UnexpectedContinuation);
    assert_eq!(server_fails_1002(&masked(false, CONT, b"x")).await, ProtocolError::UnexpectedContinuation);
    // After a message that was complete.
    let bytes = [masked(false, TEXT, b"a"), masked(true, CONT, b"b"), masked(true, CONT, b"c")].concat();
    let (e, _) = server_fails(Upgrader::new(), "", &bytes, &[1002]).await;
    assert_eq!(e, ProtocolError::UnexpectedContinuation);
}

#[tokio::test]
async fn rfc6455_5_4_data_frame_inside_fragmented_message() {
    for (first, second) in [(TEXT, TEXT), (TEXT, BINARY), (BINARY, TEXT), (BINARY, BINARY)] {
        let bytes = [masked(false, first, b"part"), masked(true, second, b"new")].concat();
        assert_eq!(server_fails_1002(&bytes).await, ProtocolError::ExpectedContinuation);
    }
    // With a (valid) ping between the fragments.
    let bytes = [masked(false, TEXT, b"part"), masked(true, PING, b""), masked(true, TEXT, b"new")].concat();
    assert_eq!(server_fails_1002(&bytes).await, ProtocolError::ExpectedContinuation);
}

#[tokio::test]
async fn rfc6455_5_5_1_close_one_byte_payload() {
    for byte in [0x03, 0x00, 0xff] {
        let e = server_fails_1002(&masked(true, CLOSE, &[byte])).await;
        assert_eq!(e, ProtocolError::CloseFrameTooShort);
    }
}

#[tokio::test]
async fn rfc6455_5_5_1_invalid_utf8_close_reason() {
    for reason in [&b"bad \xff"[..], b"\xed\xa0\x80", b"\xc0\xaf", b"cut \xe2\x82"] {
        let bytes = masked(true, CLOSE, &close_payload(1000, reason));
        let (e, _) = server_fails(Upgrader::new(), "", &bytes, &[1007]).await;
        assert_eq!(e, ProtocolError::InvalidUtf8);
    }
}

#[tokio::test]
async fn rfc6455_5_5_1_close_must_be_answered_then_tcp_closed() {
    // Not a failure: the control case for the tests above. A valid close is
    // echoed with its code (and no error code), then the server closes TCP.
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_close(4001, "done").await;
    assert_eq!(raw.read_close().await, Some((4001, String::new())));
    raw.expect_eof().await;
    assert!(within(server).await.unwrap().is_close(&[CloseCode(4001)]));
}

#[tokio::test]
async fn rfc6455_7_4_1_reserved_close_codes() {
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        let e = server_fails_1002(&masked(true, CLOSE, &close_payload(code, b""))).await;
        assert_eq!(e, ProtocolError::InvalidCloseCode(code));
    }
}

#[tokio::test]
async fn rfc6455_8_1_invalid_utf8_text() {
    let single: [&[u8]; 6] = [
        b"ok \xff",
        // Overlong, surrogate, beyond U+10FFFF.
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        // A stray continuation byte; a message ending inside a character.
        b"\x80abc",
        b"euro \xe2\x82",
    ];
    for text in single {
        let (e, _) = server_fails(Upgrader::new(), "", &masked(true, TEXT, text), &[1007]).await;
        assert_eq!(e, ProtocolError::InvalidUtf8, "{text:?}");
    }
    // Across fragments: a lead byte, then a non-continuation byte.
    let bytes = [masked(false, TEXT, b"ab\xce"), masked(true, CONT, b"Acd")].concat();
    assert_eq!(server_fails(Upgrader::new(), "", &bytes, &[1007]).await.0, ProtocolError::InvalidUtf8);
    // A fragmented message that ends inside a character.
    let bytes = [masked(false, TEXT, b"euro: "), masked(true, CONT, b"\xe2\x82")].concat();
    assert_eq!(server_fails(Upgrader::new(), "", &bytes, &[1007]).await.0, ProtocolError::InvalidUtf8);
    // A character split between fragments is fine: the control case.
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut raw = RawClient::connect(addr).await;
    raw.send(&[masked(false, TEXT, b"\xe2"), masked(true, CONT, b"\x82\xac")].concat()).await;
    assert_eq!(raw.message().await, (TEXT, "€".as_bytes().to_vec(), 1));
    drop(raw);
    drop(within(server).await.unwrap());
}

#[tokio::test]
async fn rfc6455_8_1_invalid_utf8_in_compressed_text() {
    // RFC 7692 §6: the UTF-8 rule applies to the decompressed data.
    let bytes = masked_b0(0xC1, &deflate(b"ok \xff ok"));
    assert_eq!(deflate_server_fails(&bytes, &[1007]).await, ProtocolError::InvalidUtf8);
}

// ===========================================================================
// RFC 7692: permessage-deflate, on the server

#[tokio::test]
async fn rfc7692_6_1_rsv1_on_control_frame() {
    for (opcode, payload) in [(PING, b"p".to_vec()), (PONG, b"p".to_vec()), (CLOSE, close_payload(1000, b""))] {
        let e = deflate_server_fails(&masked_b0(0xC0 | opcode, &payload), &[1002]).await;
        assert_eq!(e, ProtocolError::ReservedBits(0b100));
    }
}

#[tokio::test]
async fn rfc7692_6_1_rsv1_on_continuation() {
    let compressed = deflate(b"a compressed message in two fragments");
    let (a, b) = compressed.split_at(compressed.len() / 2);
    let bytes = [masked_b0(0x41, a), masked_b0(0xC0, b)].concat();
    assert_eq!(deflate_server_fails(&bytes, &[1002]).await, ProtocolError::ReservedBits(0b100));
    // The same message with RSV1 on the first frame only is valid: the control case.
    let (addr, server) = spawn_echo_server(Upgrader::new().enable_compression(true)).await;
    let (mut raw, _) = RawClient::connect_with(addr, OFFER).await;
    raw.send(&[masked_b0(0x41, a), masked_b0(0x80, b)].concat()).await;
    let echo = raw.frame().await;
    assert_eq!(echo.rsv, 0b100);
    assert_eq!(inflate(&echo.payload), b"a compressed message in two fragments");
    drop(raw);
    drop(within(server).await.unwrap());
}

#[tokio::test]
async fn rfc7692_6_1_rsv2_rsv3_stay_reserved() {
    for b0 in [0xA1, 0x91, 0xE1] {
        let e = deflate_server_fails(&masked_b0(b0, &deflate(b"x")), &[1002]).await;
        assert!(matches!(e, ProtocolError::ReservedBits(_)), "{e:?}");
    }
}

#[tokio::test]
async fn rfc7692_6_rsv1_without_negotiation() {
    let frame = masked_b0(0xC1, &deflate(b"compressed"));
    // Compression off, offer made.
    let (e, response) = server_fails(Upgrader::new(), OFFER, &frame, &[1002]).await;
    assert!(response.header("sec-websocket-extensions").is_none(), "{response:?}");
    assert_eq!(e, ProtocolError::ReservedBits(0b100));
    // Compression on, no offer.
    let (e, response) = server_fails(Upgrader::new().enable_compression(true), "", &frame, &[1002]).await;
    assert!(response.header("sec-websocket-extensions").is_none(), "{response:?}");
    assert_eq!(e, ProtocolError::ReservedBits(0b100));
    // Compression on, another extension offered.
    let (e, response) = server_fails(
        Upgrader::new().enable_compression(true),
        "Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n",
        &frame,
        &[1002],
    )
    .await;
    assert!(response.header("sec-websocket-extensions").is_none(), "{response:?}");
    assert_eq!(e, ProtocolError::ReservedBits(0b100));
}

#[tokio::test]
async fn rfc7692_7_1_invalid_offer_params_declined() {
    let frame = masked_b0(0xC1, &deflate(b"compressed"));
    for offer in [
        // A parameter not defined for an offer.
        "permessage-deflate; foo",
        "permessage-deflate; foo=1",
        // Invalid values.
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=true",
        // The same parameter twice.
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits=10; client_max_window_bits=11",
    ] {
        let extra = format!("Sec-WebSocket-Extensions: {offer}\r\n");
        let (e, response) = server_fails(Upgrader::new().enable_compression(true), &extra, &frame, &[1002]).await;
        // Declined: the handshake goes on without the extension (RFC 7692 §5)...
        assert!(response.header("sec-websocket-extensions").is_none(), "{offer}: {response:?}");
        // ... so RSV1 stays reserved.
        assert_eq!(e, ProtocolError::ReservedBits(0b100), "{offer}");
    }
    // An invalid offer followed by a valid one: the valid one is accepted.
    let (addr, server) = spawn_echo_server(Upgrader::new().enable_compression(true)).await;
    let (raw, response) =
        RawClient::connect_with(addr, "Sec-WebSocket-Extensions: permessage-deflate; foo, permessage-deflate\r\n")
            .await;
    assert_eq!(response.header("sec-websocket-extensions"), Some("permessage-deflate"));
    drop(raw);
    drop(within(server).await.unwrap());
}

#[tokio::test]
async fn rfc7692_7_1_2_1_server_window_not_larger_than_offered() {
    let (addr, server) = spawn_echo_server(Upgrader::new().enable_compression(true)).await;
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n";
    let (mut raw, response) = RawClient::connect_with(addr, offer).await;
    assert_eq!(response.header("sec-websocket-extensions"), Some("permessage-deflate; server_max_window_bits=10"));
    raw.send_frame(true, TEXT, &[b'z'; 4000]).await;
    let echo = raw.frame().await;
    assert_eq!(inflate(&echo.payload), vec![b'z'; 4000]);
    drop(raw);
    drop(within(server).await.unwrap());
}

#[tokio::test]
async fn rfc7692_7_1_2_2_client_window_only_if_offered() {
    // A server that needs to limit the client's window cannot do so unless
    // the client offered client_max_window_bits: it must decline.
    let config = DeflateConfig { client_max_window_bits: 10, ..Default::default() };
    let (addr, server) = spawn_echo_server(Upgrader::new().compression(config)).await;
    let (raw, response) = RawClient::connect_with(addr, OFFER).await;
    let ext = response.header("sec-websocket-extensions").unwrap_or_default().to_owned();
    assert!(!ext.contains("client_max_window_bits"), "{response:?}");
    drop(raw);
    drop(within(server).await.unwrap());
    // With the parameter offered, the limit is given.
    let (addr, server) = spawn_echo_server(Upgrader::new().compression(config)).await;
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let (raw, response) = RawClient::connect_with(addr, offer).await;
    assert_eq!(response.header("sec-websocket-extensions"), Some("permessage-deflate; client_max_window_bits=10"));
    drop(raw);
    drop(within(server).await.unwrap());
}

#[tokio::test]
async fn rfc7692_8_corrupt_deflate_fails() {
    // Neither RFC names the code: 1007 (data inconsistent with the message)
    // and 1002 (protocol error) are both accepted.
    for corrupt in [
        // BTYPE 11 (reserved).
        vec![0xff, 0xff, 0xff, 0xff],
        // A stored block whose NLEN is not the complement of LEN.
        vec![0x00, 0x05, 0x00, 0x00, 0x00, b'h', b'e', b'l', b'l', b'o'],
        // A fixed-Huffman block with a distance beyond the start of the data.
        vec![0x03, 0x02, 0x00],
    ] {
        for opcode in [TEXT, BINARY] {
            let e = deflate_server_fails(&masked_b0(0xC0 | opcode, &corrupt), &[1002, 1007]).await;
            assert!(matches!(e, ProtocolError::InvalidCompressedData(_)), "{corrupt:?}: {e:?}");
        }
    }
}

// ===========================================================================
// RFC 6455 §4.1: the client fails the connection on a bad handshake response

#[tokio::test]
async fn rfc6455_4_1_client_must_fail_on_non_101_status() {
    for status in ["200 OK", "400 Bad Request", "403 Forbidden", "426 Upgrade Required"] {
        let reason = client_bad_handshake(dialer(), move |head| {
            switching(head.key(), "")
                .replacen("101 Switching Protocols", status, 1)
                .replace("\r\n\r\n", "\r\nContent-Length: 0\r\n\r\n")
        })
        .await;
        assert!(reason.contains("101"), "{reason}");
    }
}

#[tokio::test]
async fn rfc6455_4_1_client_must_fail_on_missing_upgrade() {
    for replacement in ["", "Upgrade: h2c\r\n", "Upgrade: websocket2\r\n"] {
        client_bad_handshake(dialer(), move |head| {
            switching(head.key(), "").replace("Upgrade: websocket\r\n", replacement)
        })
        .await;
    }
}

#[tokio::test]
async fn rfc6455_4_1_client_must_fail_on_missing_connection_upgrade() {
    for replacement in ["", "Connection: keep-alive\r\n", "Connection: close\r\n"] {
        client_bad_handshake(dialer(), move |head| {
            switching(head.key(), "").replace("Connection: Upgrade\r\n", replacement)
        })
        .await;
    }
}

#[tokio::test]
async fn rfc6455_4_1_client_must_fail_on_bad_accept() {
    // Missing.
    client_bad_handshake(dialer(), |head| {
        let good = switching(head.key(), "");
        good.replace(&format!("Sec-WebSocket-Accept: {}\r\n", accept_for(head.key())), "")
    })
    .await;
    // The key echoed, the accept of another key, the RFC's example, a hash without the GUID.
    type Wrong = fn(&str) -> String;
    let wrong: [Wrong; 4] = [
        |key| key.to_owned(),
        |_| accept_for("AAAAAAAAAAAAAAAAAAAAAA=="),
        |_| "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned(),
        |key| BASE64.encode(Sha1::digest(key.as_bytes())),
    ];
    for make in wrong {
        client_bad_handshake(dialer(), move |head| {
            switching(head.key(), "").replace(&accept_for(head.key()), &make(head.key()))
        })
        .await;
    }
    // Two accept headers, the first wrong.
    client_bad_handshake(dialer(), |head| {
        let good = switching(head.key(), "");
        good.replace("Sec-WebSocket-Accept:", "Sec-WebSocket-Accept: AAAA\r\nSec-WebSocket-Accept:")
    })
    .await;
}

#[tokio::test]
async fn rfc6455_4_1_client_must_fail_on_duplicate_accept_header() {
    // RFC 6455 §11.3.3: the header MUST NOT appear more than once; read as
    // one list (RFC 7230 §3.2.2), two values are not the expected one.
    client_bad_handshake(dialer(), |head| switching(head.key(), "Sec-WebSocket-Accept: AAAA\r\n")).await;
}

#[tokio::test]
async fn rfc6455_4_1_client_must_fail_on_unoffered_extension() {
    // Nothing offered.
    let reason = client_bad_handshake(dialer(), |head| {
        switching(head.key(), "Sec-WebSocket-Extensions: permessage-deflate\r\n")
    })
    .await;
    assert!(reason.contains("extension"), "{reason}");
    // permessage-deflate offered, something else accepted.
    client_bad_handshake(dialer().enable_compression(true), |head| {
        switching(head.key(), "Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n")
    })
    .await;
}

#[tokio::test]
async fn rfc6455_4_1_client_must_fail_on_unoffered_subprotocol() {
    // Offered chat, got other.
    client_bad_handshake(dialer().subprotocols(["chat"]), |head| {
        switching(head.key(), "Sec-WebSocket-Protocol: other\r\n")
    })
    .await;
    // Offered nothing, got chat.
    client_bad_handshake(dialer(), |head| switching(head.key(), "Sec-WebSocket-Protocol: chat\r\n")).await;
    // Two of them.
    client_bad_handshake(dialer().subprotocols(["chat", "v2"]), |head| {
        switching(head.key(), "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: v2\r\n")
    })
    .await;
    // A list instead of one choice.
    client_bad_handshake(dialer().subprotocols(["chat", "v2"]), |head| {
        switching(head.key(), "Sec-WebSocket-Protocol: chat, v2\r\n")
    })
    .await;
}

#[tokio::test]
async fn rfc7692_7_client_rejects_unoffered_params() {
    for response in [
        // Not defined for a response, or malformed.
        "permessage-deflate; foo",
        "permessage-deflate; server_no_context_takeover=1",
        // The client offered client_max_window_bits without a value; a
        // response must give one.
        "permessage-deflate; client_max_window_bits",
        // Invalid values.
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=08",
        // Repeated.
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        // Accepted twice.
        "permessage-deflate, permessage-deflate",
    ] {
        let reason = client_bad_handshake(dialer().enable_compression(true), move |head| {
            switching(head.key(), &format!("Sec-WebSocket-Extensions: {response}\r\n"))
        })
        .await;
        assert!(reason.contains("permessage-deflate"), "{response}: {reason}");
    }
    // A window larger than the one offered; a requested no-context-takeover dropped.
    let config = DeflateConfig { server_max_window_bits: 10, server_no_context_takeover: true, ..Default::default() };
    for response in [
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=12",
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover",
    ] {
        client_bad_handshake(dialer().compression(config), move |head| {
            switching(head.key(), &format!("Sec-WebSocket-Extensions: {response}\r\n"))
        })
        .await;
    }
}

// ===========================================================================
// RFC 6455 §5 and RFC 7692 §6: framing, on the client

#[tokio::test]
async fn rfc6455_5_1_client_must_close_on_masked_frame() {
    for b0 in [0x81, 0x82, 0x89] {
        let e = client_fails(dialer(), "", masked_b0(b0, b"masked by the server"), &[1002]).await;
        assert_eq!(e, ProtocolError::MaskedFrame);
    }
}

#[tokio::test]
async fn rfc6455_5_2_client_reserved_opcode() {
    for opcode in [0x3, 0x7, 0xB, 0xF] {
        let e = client_fails(dialer(), "", frame_b0(0x80 | opcode, b"x", None), &[1002]).await;
        assert_eq!(e, ProtocolError::ReservedOpcode(opcode));
    }
}

#[tokio::test]
async fn rfc6455_5_2_client_rsv_bits_without_extension() {
    for (b0, rsv) in [(0xA1, 0b010), (0x91, 0b001), (0xC9, 0b100)] {
        let e = client_fails(dialer(), "", frame_b0(b0, b"x", None), &[1002]).await;
        assert_eq!(e, ProtocolError::ReservedBits(rsv));
    }
}

#[tokio::test]
async fn rfc6455_5_4_client_fragmentation_rules() {
    let e = client_fails(dialer(), "", frame_b0(0x09, b"p", None), &[1002]).await;
    assert_eq!(e, ProtocolError::FragmentedControlFrame);
    let e = client_fails(dialer(), "", frame_b0(0x80, b"x", None), &[1002]).await;
    assert_eq!(e, ProtocolError::UnexpectedContinuation);
    let bytes = [frame_b0(0x01, b"a", None), frame_b0(0x82, b"b", None)].concat();
    assert_eq!(client_fails(dialer(), "", bytes, &[1002]).await, ProtocolError::ExpectedContinuation);
}

#[tokio::test]
async fn rfc6455_5_5_client_control_payload_over_125() {
    let e = client_fails(dialer(), "", frame_b0(0x89, &[0; 126], None), &[1002]).await;
    assert_eq!(e, ProtocolError::ControlFrameTooLong(126));
}

#[tokio::test]
async fn rfc6455_7_4_1_client_reserved_close_codes() {
    for code in [0u16, 1005, 1006, 1015, 5000] {
        let e = client_fails(dialer(), "", frame_b0(0x88, &close_payload(code, b""), None), &[1002]).await;
        assert_eq!(e, ProtocolError::InvalidCloseCode(code));
    }
    let e = client_fails(dialer(), "", frame_b0(0x88, &[0x03], None), &[1002]).await;
    assert_eq!(e, ProtocolError::CloseFrameTooShort);
}

#[tokio::test]
async fn rfc6455_8_1_client_invalid_utf8_text() {
    let e = client_fails(dialer(), "", frame_b0(0x81, b"bad \xff", None), &[1007]).await;
    assert_eq!(e, ProtocolError::InvalidUtf8);
    let e = client_fails(dialer(), "", frame_b0(0x88, &close_payload(1000, b"\xff"), None), &[1007]).await;
    assert_eq!(e, ProtocolError::InvalidUtf8);
}

#[tokio::test]
async fn rfc7692_6_client_rsv1_without_negotiation() {
    let frame = frame_b0(0xC1, &deflate(b"compressed"), None);
    assert_eq!(client_fails(dialer(), "", frame.clone(), &[1002]).await, ProtocolError::ReservedBits(0b100));
    // Offered, but the server did not accept it.
    let e = client_fails(dialer().enable_compression(true), "", frame, &[1002]).await;
    assert_eq!(e, ProtocolError::ReservedBits(0b100));
}

#[tokio::test]
async fn rfc7692_6_1_client_rsv1_on_control_or_continuation() {
    let agreed = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    let e = client_fails(dialer().enable_compression(true), agreed, frame_b0(0xC9, b"p", None), &[1002]).await;
    assert_eq!(e, ProtocolError::ReservedBits(0b100));
    let compressed = deflate(b"two fragments");
    let (a, b) = compressed.split_at(compressed.len() / 2);
    let bytes = [frame_b0(0x41, a, None), frame_b0(0xC0, b, None)].concat();
    let e = client_fails(dialer().enable_compression(true), agreed, bytes, &[1002]).await;
    assert_eq!(e, ProtocolError::ReservedBits(0b100));
}

#[tokio::test]
async fn rfc7692_8_client_corrupt_deflate_fails() {
    let agreed = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    let e =
        client_fails(dialer().enable_compression(true), agreed, frame_b0(0xC2, &[0xff; 4], None), &[1002, 1007]).await;
    assert!(matches!(e, ProtocolError::InvalidCompressedData(_)), "{e:?}");
}
