//! permessage-deflate (RFC 7692) over loopback TCP.
//!
//! - Negotiation, server side: hand-written requests to an `Upgrader` and the
//!   exact `Sec-WebSocket-Extensions` it answers (§7.1), invalid offers
//!   skipped (§5), no header when nothing acceptable is offered or
//!   compression is off.
//! - Negotiation, client side: a raw server answering hand-written `101`s to
//!   a `Dialer`; the offers it sends, and every response RFC 7692 §7 says a
//!   client must refuse.
//! - Round trips silverback client <-> silverback server in every mode, seen
//!   on the wire through a tap proxy that parses the frames each way: RSV1,
//!   sizes of repeated messages with and without context takeover, windows.
//! - Violations: RSV1 on control / continuation frames or without
//!   negotiation (1002), corrupt deflate data (1002), compressed text that is
//!   not UTF-8 once inflated (1007), a decompression bomb against a 1 MiB
//!   read limit (1009, bounded memory and time).
//! - Streaming (next_reader / next_writer), the compression controls, and
//!   `PreparedMessage`.
//!
//! A raw peer compresses and inflates with silverback's own
//! `proto::deflate::{Deflater, Inflater}`.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use silverback::proto::decoder::MAX_INFLATED_CHUNK;
use silverback::proto::deflate::{Deflater, Inflater};
use silverback::proto::handshake::accept_key;
use silverback::proto::ProtocolError;
use silverback::{
    ClientStream, CloseCode, CloseFrame, Conn, DeflateConfig, Dialer, Error, MessageType, PreparedMessage, Proxy,
    Upgrader,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The trailer a sync flush ends with, removed on the wire (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
const RSV1: u8 = 0b100;
/// First byte of a final, compressed frame: FIN | RSV1.
const FIN_RSV1: u8 = 0x80 | 0x40;

/// Tests that move many megabytes take this shared; the decompression bomb
/// takes it exclusively, so that its memory measurement sees only itself.
static HEAVY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A dialer that never consults the environment's proxy settings.
fn dialer() -> Dialer {
    Dialer::new().proxy(Proxy::None).handshake_timeout(Some(LIMIT))
}

fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/chat")
}

/// Compresses one whole message as a permessage-deflate sender does.
fn deflate(deflater: &mut Deflater, data: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    deflater.compress_message(data, &mut out);
    out.to_vec()
}

/// Inflates one message's payload (as sent: without the trailer).
fn inflate(inflater: &mut Inflater, mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = BytesMut::new();
    while !data.is_empty() {
        let before = out.len();
        let used = inflater.inflate(data, &mut out, 1 << 20).map_err(|e| e.0)?;
        assert!(used > 0 || out.len() > before, "the inflater made no progress");
        data = &data[used..];
    }
    while !inflater.finish(&mut out, 1 << 20).map_err(|e| e.0)? {}
    Ok(out.to_vec())
}

/// Deterministic, incompressible bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// `n` bytes repeating every 61 bytes: compressible with any window.
fn short_period(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 61) as u8).collect()
}

/// Deterministic lower-case text with no long repeats inside it.
fn noise_text(n: usize, seed: u64) -> String {
    noise(n, seed).into_iter().map(|b| char::from(b'a' + b % 26)).collect()
}

/// The `Sec-WebSocket-Extensions` request lines for `offers`.
fn offer_lines(offers: &[&str]) -> String {
    offers.iter().map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n")).collect()
}

/// Hand-written request with `offers` to `upgrader`: the response's
/// extension headers, the server connection and the raw client.
async fn negotiate(upgrader: Upgrader, offers: &[&str]) -> (Vec<String>, Conn<TcpStream>, RawClient) {
    let (addr, server) = spawn_accept(upgrader).await;
    let (raw, response) = RawClient::connect_with(addr, &offer_lines(offers)).await;
    let conn = within(server).await.unwrap().expect("handshake failed");
    let headers = response.header_all("sec-websocket-extensions").into_iter().map(str::to_owned).collect();
    (headers, conn, raw)
}

/// The value of `name` in a parameter list such as
/// `permessage-deflate; client_max_window_bits=10`.
fn param(header: &str, name: &str) -> Option<Option<String>> {
    header.split(';').skip(1).map(str::trim).find_map(|p| match p.split_once('=') {
        Some((k, v)) if k.trim() == name => Some(Some(v.trim().trim_matches('"').to_owned())),
        None if p == name => Some(None),
        _ => None,
    })
}

/// A raw client that negotiated permessage-deflate with a silverback server
/// and compresses / inflates with silverback's `Deflater` / `Inflater`.
struct DeflateClient {
    raw: RawClient,
    deflater: Deflater,
    inflater: Inflater,
    /// The server's `Sec-WebSocket-Extensions`.
    accepted: String,
}

impl DeflateClient {
    async fn connect(addr: SocketAddr, offer: &str) -> Self {
        let (raw, response) = RawClient::connect_with(addr, &offer_lines(&[offer])).await;
        let accepted = response.header("sec-websocket-extensions").expect("compression was not accepted").to_owned();
        let window = param(&accepted, "client_max_window_bits").flatten().map_or(15, |v| v.parse().unwrap());
        let deflater = Deflater::new(6, window, param(&accepted, "client_no_context_takeover").is_some());
        let inflater = Inflater::new(param(&accepted, "server_no_context_takeover").is_some());
        DeflateClient { raw, deflater, inflater, accepted }
    }

    /// Sends `data` compressed, as one frame.
    async fn send(&mut self, opcode: u8, data: &[u8]) {
        let payload = deflate(&mut self.deflater, data);
        self.raw.send(&frame_b0(FIN_RSV1 | opcode, &payload, Some(MASK))).await;
    }

    /// Reads one data message: its opcode, payload (inflated when RSV1 was
    /// set on its first frame) and frames as they were on the wire.
    async fn recv(&mut self) -> (u8, Vec<u8>, Vec<Frame>) {
        let mut frames = vec![self.raw.frame().await];
        while !frames.last().unwrap().fin {
            frames.push(self.raw.frame().await);
        }
        let first = &frames[0];
        assert!(first.opcode == TEXT || first.opcode == BINARY, "not a data frame: {first:?}");
        for next in &frames[1..] {
            assert_eq!(next.opcode, CONT, "{next:?}");
            assert_eq!(next.rsv, 0, "RSV1 is for the first frame only (RFC 7692 §6.1): {next:?}");
        }
        let wire: Vec<u8> = frames.iter().flat_map(|f| f.payload.iter().copied()).collect();
        let data = if first.rsv & RSV1 != 0 { inflate(&mut self.inflater, &wire).unwrap() } else { wire };
        (first.opcode, data, frames)
    }
}

/// A server connection and a compressing raw client connected to it.
async fn deflate_connected(upgrader: Upgrader, offer: &str) -> (Conn<TcpStream>, DeflateClient) {
    let (addr, server) = spawn_accept(upgrader).await;
    let client = DeflateClient::connect(addr, offer).await;
    let conn = within(server).await.unwrap().expect("handshake failed");
    (conn, client)
}

/// A server that echoes until an error, and returns it with the connection
/// (kept open, so that the client can still read what was sent).
async fn echo_until_error(upgrader: Upgrader) -> (SocketAddr, JoinHandle<(Error, Conn<TcpStream>)>) {
    spawn_server(upgrader, |mut conn| async move {
        loop {
            match conn.read_message().await {
                Ok(msg) => conn.write_message(msg.kind, &msg.data).await.unwrap(),
                Err(e) => return (e, conn),
            }
        }
    })
    .await
}

/// One frame as seen by the tap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Wire {
    fin: bool,
    rsv: u8,
    opcode: u8,
    len: usize,
}

type WireLog = Arc<Mutex<Vec<Wire>>>;

/// A TCP proxy to `target` for one connection that records every frame each
/// way (after the HTTP heads): client to server, server to client.
async fn spawn_tap(target: SocketAddr) -> (SocketAddr, WireLog, WireLog) {
    let (listener, addr) = listen().await;
    let (up, down) = (WireLog::default(), WireLog::default());
    let (u, d) = (up.clone(), down.clone());
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(target).await.unwrap();
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::spawn(pump(client_read, server_write, u));
        tokio::spawn(pump(server_read, client_write, d));
    });
    (addr, up, down)
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, log: WireLog) {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut parse = BytesMut::new();
    let mut in_head = true;
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        parse.extend_from_slice(&chunk[..n]);
        if in_head {
            if let Some(end) = parse.windows(4).position(|w| w == b"\r\n\r\n") {
                let _ = parse.split_to(end + 4);
                in_head = false;
            }
        }
        if !in_head {
            while let Some(frame) = parse_frame(&mut parse) {
                let wire = Wire { fin: frame.fin, rsv: frame.rsv, opcode: frame.opcode, len: frame.payload.len() };
                log.lock().unwrap().push(wire);
            }
        }
        // Recorded before it is forwarded: a peer that has read a frame finds it in the log.
        if to.write_all(&chunk[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The data frames (text, binary, continuation) of a log.
fn data_frames(log: &WireLog) -> Vec<Wire> {
    log.lock().unwrap().iter().copied().filter(|w| w.opcode <= BINARY).collect()
}

/// A raw server that answers one handshake with a valid `101` carrying
/// `extensions` (one header line each); returns the request head it read,
/// the stream and the bytes after the head.
async fn spawn_raw_server(extensions: &[&str]) -> (SocketAddr, JoinHandle<(String, TcpStream, BytesMut)>) {
    let lines: String = extensions.iter().map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n")).collect();
    let (listener, addr) = listen().await;
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let head = read_head(&mut stream, &mut buf).await;
        let key = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .expect("no Sec-WebSocket-Key")
            .to_owned();
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n{lines}\r\n",
            accept_key(key.as_bytes())
        );
        stream.write_all(response.as_bytes()).await.unwrap();
        (head, stream, buf)
    });
    (addr, task)
}

type Dialed = silverback::Result<(Conn<ClientStream>, http::Response<()>)>;

/// Dials a raw server answering with `extensions`; the result, and the
/// server's side (request head, stream, bytes after the head).
async fn dial_raw(dialer: Dialer, extensions: &[&str]) -> (Dialed, (String, TcpStream, BytesMut)) {
    let (addr, server) = spawn_raw_server(extensions).await;
    let result = within(dialer.connect(&url(addr))).await;
    let server = within(server).await.unwrap();
    (result, server)
}

/// Reads one frame from a raw server-side stream (client frames are masked).
async fn server_read_frame(stream: &mut TcpStream, buf: &mut BytesMut) -> Frame {
    within(async {
        loop {
            if let Some(frame) = parse_frame(buf) {
                return frame;
            }
            assert!(stream.read_buf(buf).await.unwrap() > 0, "EOF");
        }
    })
    .await
}

fn vm_status(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

// ---------------------------------------------------------------------------
// Negotiation, server side
// ---------------------------------------------------------------------------

#[tokio::test]
async fn upgrader_answers_each_offer_with_the_exact_parameters() {
    let cases: &[(&[&str], &str)] = &[
        (&["permessage-deflate"], "permessage-deflate"),
        // Without a value: the client could take a limit, we need none.
        (&["permessage-deflate; client_max_window_bits"], "permessage-deflate"),
        // With a value: the server may echo it (RFC 7692 §7.1.2.2).
        (&["permessage-deflate; client_max_window_bits=10"], "permessage-deflate; client_max_window_bits=10"),
        (&["permessage-deflate; client_max_window_bits=15"], "permessage-deflate; client_max_window_bits=15"),
        // server_max_window_bits must be answered with a value <= the offered one (§7.1.2.1),
        // 15 included: a client that asked for it refuses a response without it.
        (&["permessage-deflate; server_max_window_bits=10"], "permessage-deflate; server_max_window_bits=10"),
        (&["permessage-deflate; server_max_window_bits=15"], "permessage-deflate; server_max_window_bits=15"),
        (&["permessage-deflate; server_no_context_takeover"], "permessage-deflate; server_no_context_takeover"),
        (&["permessage-deflate; client_no_context_takeover"], "permessage-deflate; client_no_context_takeover"),
        (
            &["permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=12"],
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=12",
        ),
        // A quoted value whose content is a token is valid (RFC 6455 §9.1).
        (&["permessage-deflate; server_max_window_bits=\"11\""], "permessage-deflate; server_max_window_bits=11"),
        // Spacing does not matter.
        (&["permessage-deflate ;  server_no_context_takeover "], "permessage-deflate; server_no_context_takeover"),
        // What browsers send.
        (
            &["permessage-deflate; client_max_window_bits, x-webkit-deflate-frame"],
            "permessage-deflate",
        ),
        // An unknown extension first is skipped.
        (&["x-foo; bar=1, permessage-deflate; server_max_window_bits=12"], "permessage-deflate; server_max_window_bits=12"),
    ];
    for (offers, expected) in cases {
        let (headers, conn, _raw) = negotiate(Upgrader::new().enable_compression(true), offers).await;
        assert_eq!(headers, vec![expected.to_string()], "offers {offers:?}");
        assert!(conn.compression_negotiated(), "{offers:?}");
    }
}

#[tokio::test]
async fn upgrader_skips_invalid_offers_and_accepts_the_next_one() {
    let invalid = [
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=010",
        "permessage-deflate; client_max_window_bits=0x0f",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=true",
        "permessage-deflate; unknown_param",
        "permessage-deflate; unknown_param=1",
        "permessage-deflate; server_max_window_bits=\"7\"",
        "permessage-deflate; server_max_window_bits=\"010\"",
        "permessage-deflate; server_max_window_bits=\"1 0\"",
        "permessage-deflate; client_max_window_bits=\"16\"",
        "permessage-deflate; server_max_window_bits=\"10",
    ];
    let fallback = "permessage-deflate; client_no_context_takeover";
    for first in invalid {
        // In one header value (an unterminated quote would swallow the rest)...
        if first.matches('"').count() % 2 == 0 {
            let one = format!("{first}, {fallback}");
            let (headers, conn, _raw) = negotiate(Upgrader::new().enable_compression(true), &[&one]).await;
            assert_eq!(headers, vec![fallback.to_string()], "offer {one:?}");
            assert!(conn.compression_negotiated());
        }
        // ...and in two header lines.
        let (headers, _conn, _raw) = negotiate(Upgrader::new().enable_compression(true), &[first, fallback]).await;
        assert_eq!(headers, vec![fallback.to_string()], "offers {first:?} then {fallback:?}");
    }
}

#[tokio::test]
async fn only_invalid_offers_mean_no_extension_and_an_uncompressed_connection() {
    let offers = [
        "permessage-deflate; server_max_window_bits=7, permessage-deflate; foo, permessage-deflate; \
         server_no_context_takeover; server_no_context_takeover",
        "x-webkit-deflate-frame",
    ];
    let (addr, server) = echo_until_error(Upgrader::new().enable_compression(true)).await;
    let (mut raw, response) = RawClient::connect_with(addr, &offer_lines(&offers)).await;
    assert_eq!(response.header("sec-websocket-extensions"), None, "{response:?}");
    raw.send_frame(true, TEXT, b"plain text").await;
    let echo = raw.frame().await;
    assert_eq!((echo.opcode, echo.rsv, echo.payload.as_slice()), (TEXT, 0, &b"plain text"[..]));
    // RSV1 means nothing on this connection.
    raw.send(&frame_b0(FIN_RSV1 | TEXT, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], Some(MASK))).await;
    assert_eq!(raw.read_close().await, Some((1002, "reserved bits set".to_owned())));
    let (err, conn) = within(server).await.unwrap();
    assert!(!conn.compression_negotiated());
    assert!(matches!(err, Error::Protocol(ProtocolError::ReservedBits(4))), "{err:?}");
}

#[tokio::test]
async fn upgrader_without_compression_answers_no_extension() {
    let offers = ["permessage-deflate; client_max_window_bits"];
    for upgrader in [Upgrader::new(), Upgrader::new().enable_compression(true).enable_compression(false)] {
        let (headers, conn, mut raw) = negotiate(upgrader, &offers).await;
        assert!(headers.is_empty(), "{headers:?}");
        assert!(!conn.compression_negotiated());
        let mut conn = conn;
        conn.write_text("x".repeat(500)).await.unwrap();
        let frame = raw.frame().await;
        assert_eq!((frame.rsv, frame.payload.len()), (0, 500));
    }
}

#[tokio::test]
async fn upgrader_config_sets_parameters_and_limits_the_client_window() {
    let limited = DeflateConfig { client_max_window_bits: 10, ..Default::default() };
    let cases: &[(&[&str], Option<&str>)] = &[
        // A client that cannot be told a window limit is declined...
        (&["permessage-deflate"], None),
        (&["permessage-deflate; server_no_context_takeover"], None),
        // ...unless a later offer allows one.
        (
            &["permessage-deflate, permessage-deflate; client_max_window_bits"],
            Some("permessage-deflate; client_max_window_bits=10"),
        ),
        (&["permessage-deflate; client_max_window_bits"], Some("permessage-deflate; client_max_window_bits=10")),
        (&["permessage-deflate; client_max_window_bits=12"], Some("permessage-deflate; client_max_window_bits=10")),
        (&["permessage-deflate; client_max_window_bits=9"], Some("permessage-deflate; client_max_window_bits=9")),
    ];
    for (offers, expected) in cases {
        let (headers, conn, _raw) = negotiate(Upgrader::new().compression(limited), offers).await;
        let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(headers, expected, "offers {offers:?}");
        assert_eq!(conn.compression_negotiated(), !expected.is_empty());
    }

    // The server's own demands are added even when not offered (§7.1.1, §7.1.2.1).
    let strict = DeflateConfig {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 12,
        client_max_window_bits: 15,
    };
    let (headers, _conn, _raw) = negotiate(Upgrader::new().compression(strict), &["permessage-deflate"]).await;
    assert_eq!(
        headers,
        vec!["permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12"]
    );
    // The smaller of the two server windows wins.
    let (headers, _conn, _raw) =
        negotiate(Upgrader::new().compression(strict), &["permessage-deflate; server_max_window_bits=9"]).await;
    assert_eq!(
        headers,
        vec!["permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"]
    );
}

// ---------------------------------------------------------------------------
// Negotiation, client side
// ---------------------------------------------------------------------------

fn request_extensions(head: &str) -> Vec<&str> {
    head.split("\r\n").filter_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: ")).collect()
}

#[tokio::test]
async fn dialer_offers_with_and_without_client_context_takeover() {
    let (result, (head, ..)) = dial_raw(dialer().enable_compression(true), &["permessage-deflate"]).await;
    result.unwrap();
    assert_eq!(
        request_extensions(&head),
        vec![
            "permessage-deflate; client_max_window_bits, permessage-deflate; client_no_context_takeover; client_max_window_bits"
        ],
        "{head}"
    );

    let config = DeflateConfig {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 10,
        client_max_window_bits: 12,
    };
    let (result, (head, ..)) = dial_raw(
        dialer().compression(config),
        &["permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"],
    )
    .await;
    result.unwrap();
    assert_eq!(
        request_extensions(&head),
        vec![
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
        ]
    );

    let (result, (head, ..)) = dial_raw(dialer(), &[]).await;
    assert!(!result.unwrap().0.compression_negotiated());
    assert!(request_extensions(&head).is_empty(), "{head}");
    let (result, (head, ..)) = dial_raw(dialer().enable_compression(true).enable_compression(false), &[]).await;
    result.unwrap();
    assert!(request_extensions(&head).is_empty(), "{head}");
}

#[tokio::test]
async fn dialer_accepts_valid_responses() {
    let valid = [
        "permessage-deflate",
        "permessage-deflate; client_no_context_takeover",
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; server_max_window_bits=9",
        "permessage-deflate; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=\"12\"",
        "permessage-deflate;server_no_context_takeover; client_max_window_bits=15",
    ];
    for response in valid {
        let (result, _server) = dial_raw(dialer().enable_compression(true), &[response]).await;
        let (conn, resp) = result.unwrap_or_else(|e| panic!("{response}: {e}"));
        assert!(conn.compression_negotiated(), "{response}");
        assert_eq!(resp.headers().get("sec-websocket-extensions").unwrap(), response);
    }
}

#[tokio::test]
async fn dialer_exchanges_compressed_messages_with_a_raw_server() {
    let (result, (_, mut stream, mut buf)) = dial_raw(dialer().enable_compression(true), &["permessage-deflate"]).await;
    let (mut conn, _) = result.unwrap();
    // RFC 7692 §7.2.3.1 and §7.2.3.2: "Hello", then "Hello" again referring to the first.
    stream.write_all(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).await.unwrap();
    stream.write_all(&[0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00]).await.unwrap();
    for _ in 0..2 {
        let msg = within(conn.read_message()).await.unwrap();
        assert_eq!(msg.as_text(), Some("Hello"));
    }
    // The client compresses, with context takeover (none was asked for).
    let mut inflater = Inflater::new(false);
    let mut sizes = Vec::new();
    for _ in 0..3 {
        conn.write_text("Hello, Hello, Hello").await.unwrap();
        let frame = server_read_frame(&mut stream, &mut buf).await;
        assert!(frame.masked && frame.fin);
        assert_eq!((frame.opcode, frame.rsv), (TEXT, RSV1));
        assert_eq!(inflate(&mut inflater, &frame.payload).unwrap(), b"Hello, Hello, Hello");
        sizes.push(frame.payload.len());
    }
    assert!(sizes[1] < sizes[0] && sizes[2] < sizes[0], "context takeover should shrink repeats: {sizes:?}");
}

#[tokio::test]
async fn dialer_follows_the_parameters_of_the_response() {
    // client_no_context_takeover in the response: every message compressed afresh.
    let (result, (_, mut stream, mut buf)) =
        dial_raw(dialer().enable_compression(true), &["permessage-deflate; client_no_context_takeover"]).await;
    let (mut conn, _) = result.unwrap();
    let mut payloads = Vec::new();
    for _ in 0..3 {
        conn.write_text("Hello, Hello, Hello").await.unwrap();
        let frame = server_read_frame(&mut stream, &mut buf).await;
        assert_eq!(frame.rsv, RSV1);
        assert_eq!(inflate(&mut Inflater::new(true), &frame.payload).unwrap(), b"Hello, Hello, Hello");
        payloads.push(frame.payload);
    }
    assert!(payloads.iter().all(|p| *p == payloads[0]), "{payloads:?}");

    // client_max_window_bits=8 in the response: the client cannot compress, and sends plain frames.
    let config = DeflateConfig { client_max_window_bits: 8, ..Default::default() };
    let (result, (head, mut stream, mut buf)) =
        dial_raw(dialer().compression(config), &["permessage-deflate; client_max_window_bits=8"]).await;
    assert!(request_extensions(&head)[0].starts_with("permessage-deflate; client_max_window_bits=8"), "{head}");
    let (mut conn, _) = result.unwrap();
    assert!(conn.compression_negotiated());
    conn.write_text("Hello, Hello, Hello").await.unwrap();
    let frame = server_read_frame(&mut stream, &mut buf).await;
    assert_eq!((frame.rsv, frame.payload.as_slice()), (0, &b"Hello, Hello, Hello"[..]));
    // It still inflates what the server compresses.
    stream.write_all(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("Hello"));
}

#[tokio::test]
async fn dialer_refuses_responses_that_break_rfc_7692() {
    let default = DeflateConfig::default();
    let window_10 = DeflateConfig { server_max_window_bits: 10, client_max_window_bits: 10, ..Default::default() };
    let cases: &[(DeflateConfig, &[&str])] = &[
        (default, &["permessage-deflate; foo"]),
        (default, &["permessage-deflate; foo=1"]),
        (default, &["permessage-deflate; server_no_context_takeover; server_no_context_takeover"]),
        (default, &["permessage-deflate; client_no_context_takeover; client_no_context_takeover"]),
        (default, &["permessage-deflate; server_max_window_bits=9; server_max_window_bits=9"]),
        (default, &["permessage-deflate; server_no_context_takeover=1"]),
        // Windows out of range or larger than offered.
        (default, &["permessage-deflate; server_max_window_bits=16"]),
        (default, &["permessage-deflate; server_max_window_bits=7"]),
        (default, &["permessage-deflate; server_max_window_bits=09"]),
        (default, &["permessage-deflate; server_max_window_bits"]),
        (window_10, &["permessage-deflate; server_max_window_bits=11"]),
        (window_10, &["permessage-deflate; server_max_window_bits=15"]),
        // client_max_window_bits without a value, or larger than offered.
        (default, &["permessage-deflate; client_max_window_bits"]),
        (window_10, &["permessage-deflate; server_max_window_bits=10; client_max_window_bits"]),
        (window_10, &["permessage-deflate; server_max_window_bits=10; client_max_window_bits=11"]),
        (default, &["permessage-deflate; client_max_window_bits=16"]),
        // Extensions that were not offered, or more than one.
        (default, &["x-webkit-deflate-frame"]),
        (default, &["deflate-frame"]),
        (default, &["permessage-deflate, permessage-deflate"]),
        (default, &["permessage-deflate", "permessage-deflate"]),
        (default, &["permessage-deflate, x-foo"]),
        (default, &["x-foo", "permessage-deflate"]),
        (default, &["permessage-deflate; server_max_window_bits=\"1 0\""]),
    ];
    for (config, response) in cases {
        let (result, _server) = dial_raw(dialer().compression(*config), response).await;
        match result {
            Err(Error::BadResponse { reason, response: resp }) => {
                assert_eq!(resp.status(), 101, "{response:?}");
                assert!(!reason.is_empty());
            }
            other => panic!("{response:?} with {config:?}: expected BadResponse, got {:?}", other.map(|(_, r)| r)),
        }
    }
}

#[tokio::test]
async fn dialer_without_compression_refuses_any_extension() {
    for response in [&["permessage-deflate"][..], &["permessage-deflate; client_max_window_bits=10"], &["x-foo"]] {
        let (result, _server) = dial_raw(dialer(), response).await;
        assert!(matches!(result, Err(Error::BadResponse { .. })), "{response:?}: {:?}", result.map(|(_, r)| r));
    }
}

#[tokio::test]
async fn client_without_negotiation_fails_rsv1_with_1002() {
    let (result, (_, mut stream, mut buf)) = dial_raw(dialer().enable_compression(true), &[]).await;
    let (mut conn, _) = result.unwrap();
    assert!(!conn.compression_negotiated());
    stream.write_all(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).await.unwrap();
    let err = within(conn.read_message()).await.unwrap_err();
    assert!(matches!(err, Error::Protocol(ProtocolError::ReservedBits(4))), "{err:?}");
    let close = server_read_frame(&mut stream, &mut buf).await;
    assert_eq!(close.close(), Some((1002, "reserved bits set".to_owned())));
}

// ---------------------------------------------------------------------------
// Round trips in every mode
// ---------------------------------------------------------------------------

/// What a mode should lead to.
struct Expect {
    header: &'static str,
    client_takeover: bool,
    server_takeover: bool,
    client_window: u8,
    server_window: u8,
}

/// Checks the sizes of the frames of a repeated message of `len` bytes sent
/// by one side: smaller after the first with context takeover when the
/// window reaches back over a whole message, never smaller when it cannot
/// (the agreed window is honoured), all the same without takeover.
fn check_repeats(what: &str, frames: &[Wire], len: usize, compresses: bool, takeover: bool, window: u8) {
    let sizes: Vec<usize> = frames.iter().map(|w| w.len).collect();
    if !compresses {
        assert!(frames.iter().all(|w| w.rsv == 0 && w.len == len), "{what}: sent uncompressed: {frames:?}");
        return;
    }
    assert!(frames.iter().all(|w| w.rsv == RSV1), "{what}: {frames:?}");
    // zlib finds matches up to the window size minus 262 bytes back.
    let reachable = (1usize << window) - 262;
    if takeover && len < reachable {
        assert!(sizes[1..].iter().all(|&s| s * 4 < sizes[0]), "{what}: takeover should shrink repeats: {sizes:?}");
    } else if takeover {
        assert!(
            sizes[1..].iter().all(|&s| s * 10 >= sizes[0] * 9),
            "{what}: a {window}-bit window cannot reach {len} bytes back: {sizes:?}"
        );
    } else {
        assert!(sizes.iter().all(|&s| s == sizes[0]), "{what}: no takeover, every repeat the same: {sizes:?}");
    }
}

/// Messages written back to back before their echoes are read.
const BURST: u32 = 100;

async fn round_trip(dialer: Dialer, upgrader: Upgrader, expect: Expect) {
    let _heavy = HEAVY.read().await;
    let (server_addr, server) = spawn_echo_server(upgrader).await;
    let (tap, up, down) = spawn_tap(server_addr).await;
    let (mut conn, response) = within(dialer.connect(&url(tap))).await.unwrap();
    let accepted: Vec<_> = response.headers().get_all("sec-websocket-extensions").iter().collect();
    assert_eq!(accepted, vec![expect.header]);
    assert!(conn.compression_negotiated());

    // 1 MiB messages, except where a side compresses with a window of 10
    // bits or less: zlib then slides its hash table every few hundred bytes,
    // which takes seconds per MiB in a debug build.
    let big = if expect.client_window.min(expect.server_window) <= 10 { 192 << 10 } else { 1 << 20 };
    let small_repeat = noise_text(200, 1);
    let wide_repeat = noise(3000, 2);
    let mut messages: Vec<(MessageType, Vec<u8>)> = vec![
        (MessageType::Text, b"Hello".to_vec()),
        (MessageType::Binary, pattern(1000)),
        (MessageType::Text, Vec::new()),
        (MessageType::Binary, Vec::new()),
        (MessageType::Text, text_of(big).into_bytes()),
        (MessageType::Binary, short_period(big)),
        (MessageType::Binary, noise(20_000, 3)),
    ];
    let singles = messages.len();
    messages.extend((0..10).map(|_| (MessageType::Text, small_repeat.clone().into_bytes())));
    messages.extend((0..3).map(|_| (MessageType::Binary, wide_repeat.clone())));
    for (kind, data) in &messages {
        within(conn.write_message(*kind, data)).await.unwrap();
        let echo = within(conn.read_message()).await.unwrap();
        assert_eq!(echo.kind, *kind);
        assert!(echo.data == data[..], "echo of a {} byte {kind:?} message differs", data.len());
    }
    // Many messages back to back, read after.
    for i in 0..BURST {
        conn.write_text(format!("message number {i} {small_repeat}")).await.unwrap();
    }
    for i in 0..BURST {
        let echo = within(conn.read_message()).await.unwrap();
        assert_eq!(echo.as_text(), Some(format!("message number {i} {small_repeat}").as_str()));
    }
    within(conn.close(CloseFrame::new(CloseCode::NORMAL, ""))).await.unwrap();
    let end = within(server).await.unwrap();
    assert!(end.is_close(&[CloseCode::NORMAL]), "{end:?}");

    let (up, down) = (data_frames(&up), data_frames(&down));
    assert_eq!(up.len(), messages.len() + BURST as usize, "one frame per message: {up:?}");
    assert_eq!(down.len(), messages.len() + BURST as usize);
    let client_compresses = expect.client_window >= 9;
    let server_compresses = expect.server_window >= 9;
    let sides = [
        ("client", &up, client_compresses, expect.client_window),
        ("server", &down, server_compresses, expect.server_window),
    ];
    for (what, frames, compresses, window) in sides {
        for (wire, (kind, data)) in frames.iter().zip(&messages) {
            assert!(wire.fin);
            assert_eq!(wire.opcode, kind.opcode().as_u8());
            assert_eq!(wire.rsv, if compresses { RSV1 } else { 0 }, "{what}: {wire:?}");
            if !compresses {
                assert_eq!(wire.len, data.len());
            }
        }
        if compresses {
            // The large messages travelled much smaller.
            let sizes: Vec<usize> = frames[..singles].iter().map(|w| w.len).collect();
            assert!(sizes[4] < big / 4 && sizes[5] < big / 4, "{what} ({window} bits): {sizes:?}");
        }
    }
    let repeats = singles..singles + 10;
    let wide = singles + 10..singles + 13;
    let c = (client_compresses, expect.client_takeover, expect.client_window);
    let s = (server_compresses, expect.server_takeover, expect.server_window);
    check_repeats("client small", &up[repeats.clone()], 200, c.0, c.1, c.2);
    check_repeats("server small", &down[repeats], 200, s.0, s.1, s.2);
    check_repeats("client wide", &up[wide.clone()], 3000, c.0, c.1, c.2);
    check_repeats("server wide", &down[wide], 3000, s.0, s.1, s.2);
}

fn expect(header: &'static str) -> Expect {
    Expect { header, client_takeover: true, server_takeover: true, client_window: 15, server_window: 15 }
}

#[tokio::test]
async fn round_trip_default_context_takeover_both_ways() {
    round_trip(
        dialer().enable_compression(true),
        Upgrader::new().enable_compression(true),
        expect("permessage-deflate"),
    )
    .await;
}

#[tokio::test]
async fn round_trip_explicit_15_bit_windows() {
    let config = DeflateConfig { server_max_window_bits: 15, client_max_window_bits: 15, ..Default::default() };
    round_trip(dialer().compression(config), Upgrader::new().compression(config), expect("permessage-deflate")).await;
}

#[tokio::test]
async fn round_trip_server_no_context_takeover() {
    let config = DeflateConfig { server_no_context_takeover: true, ..Default::default() };
    round_trip(
        dialer().enable_compression(true),
        Upgrader::new().compression(config),
        Expect { server_takeover: false, ..expect("permessage-deflate; server_no_context_takeover") },
    )
    .await;
}

#[tokio::test]
async fn round_trip_client_no_context_takeover() {
    let config = DeflateConfig { client_no_context_takeover: true, ..Default::default() };
    round_trip(
        dialer().compression(config),
        Upgrader::new().enable_compression(true),
        Expect { client_takeover: false, ..expect("permessage-deflate; client_no_context_takeover") },
    )
    .await;
}

#[tokio::test]
async fn round_trip_no_context_takeover_either_way() {
    let config =
        DeflateConfig { server_no_context_takeover: true, client_no_context_takeover: true, ..Default::default() };
    round_trip(
        dialer().enable_compression(true),
        Upgrader::new().compression(config),
        Expect {
            client_takeover: false,
            server_takeover: false,
            ..expect("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        },
    )
    .await;
}

#[tokio::test]
async fn round_trip_server_window_9() {
    let config = DeflateConfig { server_max_window_bits: 9, ..Default::default() };
    round_trip(
        dialer().enable_compression(true),
        Upgrader::new().compression(config),
        Expect { server_window: 9, ..expect("permessage-deflate; server_max_window_bits=9") },
    )
    .await;
}

#[tokio::test]
async fn round_trip_server_window_10_asked_by_the_client() {
    let config = DeflateConfig { server_max_window_bits: 10, ..Default::default() };
    round_trip(
        dialer().compression(config),
        Upgrader::new().enable_compression(true),
        Expect { server_window: 10, ..expect("permessage-deflate; server_max_window_bits=10") },
    )
    .await;
}

#[tokio::test]
async fn round_trip_client_window_9_announced_by_the_client() {
    let config = DeflateConfig { client_max_window_bits: 9, ..Default::default() };
    round_trip(
        dialer().compression(config),
        Upgrader::new().enable_compression(true),
        Expect { client_window: 9, ..expect("permessage-deflate; client_max_window_bits=9") },
    )
    .await;
}

#[tokio::test]
async fn round_trip_client_window_10_set_by_the_server() {
    let config = DeflateConfig { client_max_window_bits: 10, ..Default::default() };
    round_trip(
        dialer().enable_compression(true),
        Upgrader::new().compression(config),
        Expect { client_window: 10, ..expect("permessage-deflate; client_max_window_bits=10") },
    )
    .await;
}

#[tokio::test]
async fn round_trip_server_window_8_sends_uncompressed() {
    let config = DeflateConfig { server_max_window_bits: 8, ..Default::default() };
    round_trip(
        dialer().enable_compression(true),
        Upgrader::new().compression(config),
        Expect { server_window: 8, ..expect("permessage-deflate; server_max_window_bits=8") },
    )
    .await;
}

#[tokio::test]
async fn round_trip_client_window_8_sends_uncompressed() {
    let config = DeflateConfig { client_max_window_bits: 8, ..Default::default() };
    round_trip(
        dialer().compression(config),
        Upgrader::new().enable_compression(true),
        Expect { client_window: 8, ..expect("permessage-deflate; client_max_window_bits=8") },
    )
    .await;
}

// ---------------------------------------------------------------------------
// Violations
// ---------------------------------------------------------------------------

const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// A compressing raw client against a server that echoes until an error.
async fn violation_setup() -> (DeflateClient, JoinHandle<(Error, Conn<TcpStream>)>) {
    let (addr, server) = echo_until_error(Upgrader::new().enable_compression(true)).await;
    let client = DeflateClient::connect(addr, OFFER).await;
    assert_eq!(client.accepted, "permessage-deflate");
    (client, server)
}

/// Reads the close frame the server failed the connection with; the code.
async fn failed_with(client: &mut DeflateClient) -> u16 {
    let (code, reason) = client.raw.read_close().await.expect("close frame without a code");
    assert!(!reason.is_empty() && reason.is_ascii(), "a short reason names the violation: {reason:?}");
    client.raw.expect_eof().await;
    code
}

#[tokio::test]
async fn rsv1_on_a_control_frame_fails_with_1002() {
    for opcode in [PING, PONG, CLOSE] {
        let (mut client, server) = violation_setup().await;
        client.send(TEXT, b"fine").await;
        assert_eq!(client.recv().await.1, b"fine");
        let payload = if opcode == CLOSE { close_payload(1000, b"") } else { b"x".to_vec() };
        client.raw.send(&frame_b0(FIN_RSV1 | opcode, &payload, Some(MASK))).await;
        assert_eq!(failed_with(&mut client).await, 1002, "opcode {opcode}");
        let (err, _) = within(server).await.unwrap();
        assert!(matches!(err, Error::Protocol(ProtocolError::ReservedBits(4))), "{err:?}");
    }
}

#[tokio::test]
async fn rsv1_on_a_continuation_frame_fails_with_1002() {
    let (mut client, server) = violation_setup().await;
    let payload = deflate(&mut client.deflater, b"split compressed message");
    let (a, b) = payload.split_at(payload.len() / 2);
    client.raw.send(&frame_b0(0x40 | TEXT, a, Some(MASK))).await;
    client.raw.send(&frame_b0(FIN_RSV1 | CONT, b, Some(MASK))).await;
    assert_eq!(failed_with(&mut client).await, 1002);
    let (err, _) = within(server).await.unwrap();
    assert!(matches!(err, Error::Protocol(ProtocolError::ReservedBits(4))), "{err:?}");

    // The same message without RSV1 on the continuation is fine.
    let (mut client, _server) = violation_setup().await;
    let payload = deflate(&mut client.deflater, b"split compressed message");
    let (a, b) = payload.split_at(payload.len() / 2);
    client.raw.send(&frame_b0(0x40 | TEXT, a, Some(MASK))).await;
    client.raw.send(&frame_b0(0x80 | CONT, b, Some(MASK))).await;
    assert_eq!(client.recv().await.1, b"split compressed message");
}

#[tokio::test]
async fn rsv1_without_negotiation_fails_with_1002() {
    // Compression enabled on the server, but not offered by the client.
    let (addr, server) = echo_until_error(Upgrader::new().enable_compression(true)).await;
    let mut raw = RawClient::connect(addr).await;
    raw.send(&frame_b0(FIN_RSV1 | TEXT, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], Some(MASK))).await;
    assert_eq!(raw.read_close().await, Some((1002, "reserved bits set".to_owned())));
    let (err, conn) = within(server).await.unwrap();
    assert!(!conn.compression_negotiated());
    assert!(matches!(err, Error::Protocol(ProtocolError::ReservedBits(4))), "{err:?}");

    // Offered by the client, but compression off on the server.
    let (addr, server) = echo_until_error(Upgrader::new()).await;
    let (mut raw, response) = RawClient::connect_with(addr, &offer_lines(&[OFFER])).await;
    assert_eq!(response.header("sec-websocket-extensions"), None);
    raw.send(&frame_b0(FIN_RSV1 | BINARY, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], Some(MASK))).await;
    assert_eq!(raw.read_close().await, Some((1002, "reserved bits set".to_owned())));
    let (err, _) = within(server).await.unwrap();
    assert!(matches!(err, Error::Protocol(ProtocolError::ReservedBits(4))), "{err:?}");
}

#[tokio::test]
async fn corrupt_deflate_data_fails_with_1002() {
    let corrupt: Vec<Vec<u8>> = vec![
        // Reserved block type 11.
        vec![0xff; 16],
        vec![0x07, 0x00],
        // A stored block whose length and its complement disagree.
        vec![0x00, 0x05, 0x00, 0x00, 0x00, b'h', b'e', b'l', b'l', b'o'],
        // RFC 7692 §7.2.3.2's second "Hello" refers to 5 bytes back: with no
        // earlier message, that distance is too far back.
        vec![0xf2, 0x00, 0x11, 0x00, 0x00],
    ];
    for payload in corrupt {
        let (mut client, server) = violation_setup().await;
        client.raw.send(&frame_b0(FIN_RSV1 | BINARY, &payload, Some(MASK))).await;
        assert_eq!(failed_with(&mut client).await, 1002, "{payload:02x?}");
        let (err, _) = within(server).await.unwrap();
        assert!(matches!(err, Error::Protocol(ProtocolError::InvalidCompressedData(_))), "{payload:02x?}: {err:?}");
        assert_eq!(
            match &err {
                Error::Protocol(e) => e.close_code(),
                _ => unreachable!(),
            },
            CloseCode::PROTOCOL_ERROR
        );
    }

    // Corruption after a valid message, in the second fragment of a message:
    // the first fragment ends a block (sync flush kept), the second starts
    // one of the reserved type 11.
    let (mut client, server) = violation_setup().await;
    client.send(BINARY, &pattern(5000)).await;
    assert_eq!(client.recv().await.1, pattern(5000));
    let mut good = deflate(&mut client.deflater, &noise_text(2000, 9).into_bytes());
    good.extend_from_slice(&TAIL);
    client.raw.send(&frame_b0(0x40 | BINARY, &good, Some(MASK))).await;
    client.raw.send(&frame_b0(0x80 | CONT, &[0xff; 8], Some(MASK))).await;
    assert_eq!(failed_with(&mut client).await, 1002);
    let (err, _) = within(server).await.unwrap();
    assert!(matches!(err, Error::Protocol(ProtocolError::InvalidCompressedData(_))), "{err:?}");
}

/// RFC 7692 §7.2.3.3: a sender may end a message with a DEFLATE block with
/// BFINAL set, followed by an empty stored block header byte; the receiver
/// appends 00 00 ff ff and inflates as usual.
#[tokio::test]
async fn a_message_ending_in_a_final_deflate_block_is_valid() {
    let (mut client, server) = violation_setup().await;
    client.raw.send(&frame_b0(FIN_RSV1 | TEXT, &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00], Some(MASK))).await;
    // A next message that refers to nothing before it.
    client.raw.send(&frame_b0(FIN_RSV1 | TEXT, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], Some(MASK))).await;
    for _ in 0..2 {
        let frame = client.raw.frame().await;
        if frame.opcode == CLOSE {
            let (err, _) = within(server).await.unwrap();
            panic!("the RFC 7692 §7.2.3.3 payload was refused with {:?}: {err:?}", frame.close());
        }
        assert_eq!((frame.opcode, frame.rsv, frame.fin), (TEXT, RSV1, true));
        assert_eq!(inflate(&mut client.inflater, &frame.payload).unwrap(), b"Hello");
    }
}

#[tokio::test]
async fn compressed_text_that_is_not_utf8_fails_with_1007() {
    for bad in [&b"ok \xff ok"[..], b"\xc3\x28", b"\xed\xa0\x80", b"valid then invalid \xf8\x88\x80\x80\x80"] {
        let (mut client, server) = violation_setup().await;
        client.send(TEXT, bad).await;
        assert_eq!(failed_with(&mut client).await, 1007, "{bad:02x?}");
        let (err, _) = within(server).await.unwrap();
        assert!(matches!(err, Error::Protocol(ProtocolError::InvalidUtf8)), "{err:?}");
    }
    // Invalid UTF-8 in a compressed *binary* message is fine.
    let (mut client, _server) = violation_setup().await;
    client.send(BINARY, b"ok \xff ok").await;
    assert_eq!(client.recv().await.1, b"ok \xff ok");
}

#[tokio::test]
async fn compressed_text_ending_inside_a_character_fails_with_1007() {
    // Split characters across fragments of a compressed message are fine...
    let (mut client, _server) = violation_setup().await;
    let text = "€𝄞é".repeat(50);
    let payload = deflate(&mut client.deflater, text.as_bytes());
    let mut first = true;
    for (i, piece) in payload.chunks(3).enumerate() {
        let fin = (i + 1) * 3 >= payload.len();
        let b0 = (u8::from(fin) << 7) | if first { 0x40 | TEXT } else { CONT };
        client.raw.send(&frame_b0(b0, piece, Some(MASK))).await;
        first = false;
    }
    assert_eq!(client.recv().await.1, text.as_bytes());

    // ...but the message may not end inside one.
    for cut in [&"€".as_bytes()[..2], &"𝄞".as_bytes()[..3], b"abc\xc3"] {
        let (mut client, server) = violation_setup().await;
        client.send(TEXT, cut).await;
        assert_eq!(failed_with(&mut client).await, 1007, "{cut:02x?}");
        let (err, _) = within(server).await.unwrap();
        assert!(matches!(err, Error::Protocol(ProtocolError::InvalidUtf8)), "{err:?}");
    }
}

// ---------------------------------------------------------------------------
// Decompression bomb
// ---------------------------------------------------------------------------

/// A compressed message of at most `max_len` bytes that inflates to about
/// 1 GiB of zeros (as much as deflate's ~1:1030 ratio allows in `max_len`).
/// Made of byte-aligned blocks: the first inflates to 1 MiB of zeros; each
/// copy of the second to 1 MiB more, referring only to earlier zeros.
/// Returns the payload and its inflated size.
fn zero_bomb(max_len: usize) -> (Vec<u8>, u64) {
    let zeros = vec![0u8; 1 << 20];
    let mut deflater = Deflater::new(9, 15, false);
    let mut first = BytesMut::new();
    deflater.compress(&zeros, &mut first, true);
    first.extend_from_slice(&TAIL);
    let mut block = BytesMut::new();
    deflater.compress(&zeros, &mut block, true);
    block.extend_from_slice(&TAIL);

    // The construction is sound: first + 2 blocks inflate to 3 MiB of zeros.
    let mut check = first.to_vec();
    check.extend_from_slice(&block);
    check.extend_from_slice(&block[..block.len() - TAIL.len()]);
    let inflated = inflate(&mut Inflater::new(true), &check).unwrap();
    assert!(inflated.len() == 3 << 20 && inflated.iter().all(|&b| b == 0));

    let copies = ((max_len - first.len() + TAIL.len()) / block.len()).min(1023);
    let mut bomb = Vec::with_capacity(first.len() + copies * block.len());
    bomb.extend_from_slice(&first);
    for _ in 0..copies {
        bomb.extend_from_slice(&block);
    }
    bomb.truncate(bomb.len() - TAIL.len());
    assert!(bomb.len() <= max_len);
    (bomb, (copies as u64 + 1) << 20)
}

#[tokio::test]
async fn decompression_bomb_fails_with_1009_in_bounded_memory_and_time() {
    const READ_LIMIT: u64 = 1 << 20;
    let _exclusive = HEAVY.write().await;
    let (bomb, inflated) = zero_bomb(READ_LIMIT as usize);
    assert!(inflated >= 900 << 20, "the bomb inflates to {inflated} bytes");
    assert!(bomb.len() as u64 <= READ_LIMIT, "the compressed frame itself is within the read limit");
    let frame = frame_b0(FIN_RSV1 | BINARY, &bomb, Some(MASK));

    let (addr, server) = echo_until_error(Upgrader::new().enable_compression(true).read_limit(Some(READ_LIMIT))).await;
    let client = DeflateClient::connect(addr, OFFER).await;
    let RawClient { stream, mut buf } = client.raw;
    let (mut read, mut write) = stream.into_split();

    // Reset the peak resident size to the current one, if the kernel allows.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = vm_status("VmRSS:");
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        // The server stops reading once it fails the connection.
        let _ = write.write_all(&frame).await;
        write
    });
    let close = within(async {
        loop {
            if let Some(frame) = parse_frame(&mut buf) {
                return frame;
            }
            assert!(read.read_buf(&mut buf).await.unwrap() > 0, "EOF before the close frame");
        }
    })
    .await;
    let elapsed = started.elapsed();
    assert_eq!(close.close(), Some((1009, "message too big".to_owned())));
    let (err, _conn) = within(server).await.unwrap();
    assert!(err.is_read_limit(), "{err:?}");
    match err {
        Error::Protocol(ProtocolError::MessageTooBig { size, limit }) => {
            assert_eq!(limit, READ_LIMIT);
            assert!(size > READ_LIMIT && size <= READ_LIMIT + MAX_INFLATED_CHUNK as u64, "inflated {size} bytes");
        }
        other => panic!("{other:?}"),
    }
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}: the bomb was inflated too far");
    let peak = vm_status("VmHWM:");
    let rss_after = vm_status("VmRSS:");
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let grown = after.saturating_sub(before);
        assert!(grown < 64 << 20, "resident memory grew by {} MiB", grown >> 20);
        if let Some(peak) = peak {
            let peak_growth = peak.saturating_sub(before);
            assert!(peak_growth < 64 << 20, "peak resident memory grew by {} MiB", peak_growth >> 20);
        }
    }
    drop(read);
    writer.abort();
}

// ---------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------

#[tokio::test]
async fn next_reader_yields_a_compressed_5_mib_message_in_bounded_chunks() {
    let _heavy = HEAVY.read().await;
    let data = short_period(5 << 20);
    let expected = data.clone();
    let (server_addr, server) = spawn_server(Upgrader::new().enable_compression(true), |mut conn| async move {
        let mut sizes = Vec::new();
        let mut got = Vec::new();
        {
            let (kind, mut reader) = conn.next_reader().await.unwrap();
            assert_eq!(kind, MessageType::Binary);
            while let Some(chunk) = reader.next_chunk().await.unwrap() {
                sizes.push(chunk.len());
                got.extend_from_slice(&chunk);
            }
        }
        // And through AsyncRead, a compressed text message.
        let mut text = String::new();
        {
            let (kind, mut reader) = conn.next_reader().await.unwrap();
            assert_eq!(kind, MessageType::Text);
            reader.read_to_string(&mut text).await.unwrap();
        }
        (sizes, got, text, conn)
    })
    .await;
    let (tap, up, _down) = spawn_tap(server_addr).await;
    let (mut conn, _) = within(dialer().enable_compression(true).connect(&url(tap))).await.unwrap();
    within(conn.write_binary(&data)).await.unwrap();
    let text = text_of(1 << 20);
    within(conn.write_text(&text)).await.unwrap();
    let (sizes, got, got_text, _server_conn) = within(server).await.unwrap();
    assert!(got == expected, "the message differs");
    assert!(got_text == text);
    let largest = sizes.iter().copied().max().unwrap();
    assert!(largest <= MAX_INFLATED_CHUNK && largest <= 64 * 1024, "a chunk of {largest} bytes");
    assert!(sizes.len() >= (5 << 20) / (64 * 1024), "{} chunks", sizes.len());
    let up = data_frames(&up);
    assert_eq!(up.len(), 2);
    assert_eq!(up[0].rsv, RSV1);
    assert!(up[0].len < 1 << 20, "compressed to {} bytes", up[0].len);
}

/// A server that streams `data` with next_writer in pieces, then a short
/// text; `fragment` is its write buffer size.
async fn streaming_server(data: Vec<u8>, fragment: usize) -> (SocketAddr, JoinHandle<Conn<TcpStream>>) {
    let upgrader = Upgrader::new().enable_compression(true).write_buffer_size(fragment);
    spawn_server(upgrader, move |mut conn| async move {
        {
            let mut writer = conn.next_writer(MessageType::Binary).await.unwrap();
            for piece in data.chunks(10_000) {
                writer.write_all(piece).await.unwrap();
            }
            writer.close().await.unwrap();
        }
        conn.write_text("after the stream").await.unwrap();
        // A short streamed message is compressed too, whatever the threshold.
        conn.set_compression_threshold(1000);
        {
            let mut writer = conn.next_writer(MessageType::Text).await.unwrap();
            writer.write_all(b"tiny").await.unwrap();
            writer.close().await.unwrap();
        }
        conn
    })
    .await
}

#[tokio::test]
async fn next_writer_sends_fragments_with_rsv1_on_the_first_only() {
    let mut data = noise(200_000, 5);
    data.extend(pattern(300_000));
    let (addr, server) = streaming_server(data.clone(), 4096).await;
    let mut client = DeflateClient::connect(addr, OFFER).await;
    let (opcode, got, frames) = client.recv().await;
    assert_eq!(opcode, BINARY);
    assert!(got == data, "the streamed message differs");
    assert!(frames.len() >= 10, "{} fragments", frames.len());
    assert_eq!(frames[0].rsv, RSV1);
    assert!(frames[1..].iter().all(|f| f.rsv == 0 && f.opcode == CONT));
    // The compression context carries on into the next message.
    let (opcode, got, frames) = client.recv().await;
    assert_eq!((opcode, got.as_slice(), frames[0].rsv), (TEXT, &b"after the stream"[..], RSV1));
    let (opcode, got, frames) = client.recv().await;
    assert_eq!((opcode, got.as_slice(), frames[0].rsv), (TEXT, &b"tiny"[..], RSV1));
    within(server).await.unwrap();
}

#[tokio::test]
async fn a_streamed_compressed_message_is_reassembled_by_a_silverback_client() {
    let mut data = noise(100_000, 6);
    data.extend(text_of(400_000).into_bytes());
    let (server_addr, server) = streaming_server(data.clone(), 1000).await;
    let (tap, _up, down) = spawn_tap(server_addr).await;
    let (mut conn, _) = within(dialer().enable_compression(true).connect(&url(tap))).await.unwrap();
    let msg = within(conn.read_message()).await.unwrap();
    assert_eq!(msg.kind, MessageType::Binary);
    assert!(msg.data == data, "the streamed message differs");
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("after the stream"));
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("tiny"));
    within(server).await.unwrap();
    let down = data_frames(&down);
    let fragments = down.len() - 2;
    assert!(fragments >= 10, "{down:?}");
    assert_eq!(down[0].rsv, RSV1);
    assert!(down[1..fragments].iter().all(|w| w.rsv == 0 && w.opcode == CONT) && down[fragments - 1].fin, "{down:?}");
}

// ---------------------------------------------------------------------------
// Controls
// ---------------------------------------------------------------------------

#[tokio::test]
async fn enable_write_compression_turns_rsv1_off_and_on() {
    let (mut conn, mut client) = deflate_connected(Upgrader::new().enable_compression(true), OFFER).await;
    let msg = noise_text(1000, 7);
    conn.write_text(&msg).await.unwrap();
    let (_, got, frames) = client.recv().await;
    assert_eq!((got.as_slice(), frames[0].rsv), (msg.as_bytes(), RSV1));
    let first_size = frames[0].payload.len();

    conn.enable_write_compression(false);
    conn.write_text(&msg).await.unwrap();
    let (_, got, frames) = client.recv().await;
    assert_eq!((got.as_slice(), frames[0].rsv), (msg.as_bytes(), 0));
    assert_eq!(frames[0].payload, msg.as_bytes(), "sent as is");
    let mut writer = conn.next_writer(MessageType::Binary).await.unwrap();
    writer.write_all(msg.as_bytes()).await.unwrap();
    writer.close().await.unwrap();
    let (_, got, frames) = client.recv().await;
    assert_eq!((got.as_slice(), frames[0].rsv), (msg.as_bytes(), 0));
    // Reading is not affected.
    client.send(TEXT, msg.as_bytes()).await;
    assert_eq!(within(conn.read_message()).await.unwrap().data, msg.as_bytes());

    conn.enable_write_compression(true);
    conn.write_text(&msg).await.unwrap();
    let (_, got, frames) = client.recv().await;
    assert_eq!((got.as_slice(), frames[0].rsv), (msg.as_bytes(), RSV1));
    // The context from the first compressed message is still there.
    assert!(frames[0].payload.len() * 4 < first_size, "{} vs {first_size}", frames[0].payload.len());
}

#[tokio::test]
async fn compression_threshold_leaves_short_messages_uncompressed() {
    let (mut conn, mut client) = deflate_connected(Upgrader::new().enable_compression(true), OFFER).await;
    conn.set_compression_threshold(100);
    for (len, rsv) in [(50, 0), (99, 0), (100, RSV1), (200, RSV1), (0, 0), (150, RSV1), (10, 0)] {
        let msg = "a".repeat(len);
        conn.write_text(&msg).await.unwrap();
        let (_, got, frames) = client.recv().await;
        assert_eq!(got, msg.as_bytes());
        assert_eq!(frames[0].rsv, rsv, "{len} bytes");
    }
    conn.set_compression_threshold(0);
    conn.write_binary(b"").await.unwrap();
    assert_eq!(client.recv().await.2[0].rsv, RSV1);

    // Set on the Upgrader and on the Dialer.
    let (mut conn, mut client) =
        deflate_connected(Upgrader::new().enable_compression(true).compression_threshold(100), OFFER).await;
    for (len, rsv) in [(50, 0), (200, RSV1)] {
        conn.write_binary(vec![7u8; len]).await.unwrap();
        assert_eq!(client.recv().await.2[0].rsv, rsv, "{len} bytes");
    }
    let (server_addr, _server) = spawn_echo_server(Upgrader::new().enable_compression(true)).await;
    let (tap, up, _down) = spawn_tap(server_addr).await;
    let (mut conn, _) =
        within(dialer().enable_compression(true).compression_threshold(100).connect(&url(tap))).await.unwrap();
    for len in [50, 200] {
        conn.write_binary(vec![7u8; len]).await.unwrap();
        assert_eq!(within(conn.read_message()).await.unwrap().data.len(), len);
    }
    let rsv: Vec<u8> = data_frames(&up).iter().map(|w| w.rsv).collect();
    assert_eq!(rsv, vec![0, RSV1]);
}

#[tokio::test]
async fn compression_level_is_checked() {
    let (mut conn, mut client) = deflate_connected(Upgrader::new().enable_compression(true), OFFER).await;
    assert!(matches!(conn.set_compression_level(10), Err(Error::InvalidRequest(_))));
    assert!(conn.set_compression_level(u32::MAX).is_err());
    let msg = text_of(20_000);
    for level in (0..=9).rev() {
        conn.set_compression_level(level).unwrap_or_else(|e| panic!("level {level}: {e}"));
        conn.write_text(&msg).await.unwrap();
        let (_, got, frames) = client.recv().await;
        assert!(got == msg.as_bytes(), "level {level}");
        assert_eq!(frames[0].rsv, RSV1);
    }
    // The peer keeps reading what the client compresses meanwhile.
    client.send(TEXT, msg.as_bytes()).await;
    assert!(within(conn.read_message()).await.unwrap().data == msg.as_bytes());

    // Without compression the level is still checked, and harmless.
    let (mut plain, _raw) = connected(Upgrader::new()).await;
    assert!(plain.set_compression_level(10).is_err());
    plain.set_compression_level(5).unwrap();
}

/// Sends `msg` at each level in turn; the compressed sizes.
async fn sizes_at_levels(
    conn: &mut Conn<TcpStream>,
    client: &mut DeflateClient,
    msg: &str,
    levels: &[u32],
) -> Vec<usize> {
    let mut sizes = Vec::new();
    for &level in levels {
        conn.set_compression_level(level).unwrap();
        conn.write_text(msg).await.unwrap();
        let (_, got, frames) = client.recv().await;
        assert!(got == msg.as_bytes(), "level {level}");
        assert_eq!(frames[0].rsv, RSV1);
        sizes.push(frames[0].payload.len());
    }
    sizes
}

#[tokio::test]
async fn compression_level_applies_to_later_messages_without_context_takeover() {
    let offer = "permessage-deflate; server_no_context_takeover";
    let (mut conn, mut client) = deflate_connected(Upgrader::new().enable_compression(true), offer).await;
    let msg = text_of(20_000);
    let sizes = sizes_at_levels(&mut conn, &mut client, &msg, &[1, 0, 9, 0]).await;
    // Level 0 stores (larger than the message); the others compress.
    assert!(sizes[0] < msg.len() / 4 && sizes[2] < msg.len() / 4, "{sizes:?}");
    assert!(sizes[1] >= msg.len() && sizes[3] >= msg.len(), "{sizes:?}");

    // The level set on a Dialer applies to the client's messages.
    for level in [0, 9] {
        let (server_addr, _server) = spawn_echo_server(Upgrader::new().enable_compression(true)).await;
        let (tap, up, _down) = spawn_tap(server_addr).await;
        let dialer = dialer().enable_compression(true).compression_level(level);
        let (mut conn, _) = within(dialer.connect(&url(tap))).await.unwrap();
        conn.write_text(&msg).await.unwrap();
        assert!(within(conn.read_message()).await.unwrap().data == msg.as_bytes());
        let sent = data_frames(&up)[0];
        assert_eq!(sent.rsv, RSV1);
        if level == 0 {
            assert!(sent.len >= msg.len(), "level 0 stores: {sent:?}");
        } else {
            assert!(sent.len < msg.len() / 4, "level {level}: {sent:?}");
        }
    }
}

/// `set_compression_level` promises "later messages"; with context
/// takeover a level change must not wait for a new context.
#[tokio::test]
async fn compression_level_applies_to_later_messages_with_context_takeover() {
    let msg = text_of(20_000);
    // Starting at the default level 1: level 0 must then store.
    let (mut conn, mut client) = deflate_connected(Upgrader::new().enable_compression(true), OFFER).await;
    let sizes = sizes_at_levels(&mut conn, &mut client, &msg, &[1, 0]).await;
    assert!(sizes[0] < msg.len() / 4, "{sizes:?}");
    assert!(sizes[1] >= msg.len(), "level 0 after level 1 still compressed: {sizes:?}");
    // Starting at level 0: level 6 must then compress.
    let upgrader = Upgrader::new().enable_compression(true).compression_level(0);
    let (mut conn, mut client) = deflate_connected(upgrader, OFFER).await;
    let sizes = sizes_at_levels(&mut conn, &mut client, &msg, &[0, 6]).await;
    assert!(sizes[0] >= msg.len(), "{sizes:?}");
    assert!(sizes[1] < msg.len() / 4, "level 6 after level 0 still stored: {sizes:?}");
}

/// An empty message compressed with context takeover, right after another
/// message, must still be a valid permessage-deflate payload (RFC 7692
/// §7.2.1: at least the header bits of the empty stored block whose last
/// four octets were removed; the receiver appends 00 00 ff ff).
#[tokio::test]
async fn empty_messages_are_valid_compressed_payloads_in_every_mode() {
    let configs = [
        DeflateConfig::default(),
        DeflateConfig { server_no_context_takeover: true, ..Default::default() },
        DeflateConfig { client_no_context_takeover: true, ..Default::default() },
        DeflateConfig { server_max_window_bits: 9, client_max_window_bits: 10, ..Default::default() },
        DeflateConfig { server_max_window_bits: 8, client_max_window_bits: 8, ..Default::default() },
    ];
    for config in configs {
        let (addr, server) = echo_until_error(Upgrader::new().compression(config)).await;
        let (tap, up, down) = spawn_tap(addr).await;
        let (mut conn, _) = within(dialer().compression(config).connect(&url(tap))).await.unwrap();
        let messages: [(MessageType, &[u8]); 6] = [
            (MessageType::Text, b"Hello"),
            (MessageType::Text, b""),
            (MessageType::Binary, b""),
            (MessageType::Binary, b"bytes"),
            (MessageType::Binary, b""),
            (MessageType::Text, b"Hello"),
        ];
        for (kind, data) in messages {
            conn.write_message(kind, data).await.unwrap();
            match within(conn.read_message()).await {
                Ok(echo) => assert_eq!((echo.kind, echo.data.as_ref()), (kind, data), "{config:?}"),
                Err(e) => {
                    let (server_err, _) = within(server).await.unwrap();
                    panic!(
                        "{config:?}: echo of {data:?} failed: {e:?}; server: {server_err:?}; \
                         client frames {:?}, server frames {:?}",
                        data_frames(&up),
                        data_frames(&down)
                    );
                }
            }
        }
        // A streamed message with nothing written, after a compressed one.
        conn.next_writer(MessageType::Binary).await.unwrap().close().await.unwrap();
        let echo = within(conn.read_message()).await.unwrap_or_else(|e| panic!("{config:?}: streamed empty: {e:?}"));
        assert_eq!((echo.kind, echo.data.len()), (MessageType::Binary, 0));
        // Compressed empty messages carry at least one octet.
        for (frames, window) in
            [(data_frames(&up), config.client_max_window_bits), (data_frames(&down), config.server_max_window_bits)]
        {
            for (i, wire) in frames.iter().enumerate() {
                if window >= 9 {
                    assert!(wire.rsv == RSV1 && wire.len > 0, "{config:?}: frame {i}: {wire:?}");
                }
            }
        }
        conn.close(CloseFrame::new(CloseCode::NORMAL, "")).await.unwrap();
    }
}

#[tokio::test]
async fn prepared_message_reaches_every_kind_of_connection_intact() {
    let offers = [
        OFFER,
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=8",
    ];
    let upgrader = Upgrader::new().enable_compression(true);
    let prepared = PreparedMessage::new(MessageType::Text, text_of(8000));
    let before = noise_text(3000, 10);
    let after = noise_text(3000, 11);
    let mut prepared_payloads = Vec::new();
    for offer in offers {
        let (mut conn, mut client) = deflate_connected(upgrader.clone(), offer).await;
        let window_8 = offer.ends_with("=8");
        let window_15_takeover = offer == OFFER;
        let no_takeover = offer.contains("server_no_context_takeover");
        conn.write_text(&before).await.unwrap();
        conn.write_prepared(&prepared).await.unwrap();
        conn.write_text(&after).await.unwrap();
        conn.write_text(&after).await.unwrap();
        conn.write_prepared(&prepared).await.unwrap();
        conn.write_text(&before).await.unwrap();
        conn.write_prepared(&prepared).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..7 {
            got.push(client.recv().await);
        }
        let texts: Vec<&[u8]> = got
            .iter()
            .map(|(op, data, _)| {
                assert_eq!(*op, TEXT);
                data.as_slice()
            })
            .collect();
        let p = prepared.data().as_ref();
        let expected = vec![before.as_bytes(), p, after.as_bytes(), after.as_bytes(), p, before.as_bytes(), p];
        assert!(
            texts == expected,
            "{offer}: got messages of {:?} bytes",
            texts.iter().map(|t| t.len()).collect::<Vec<_>>()
        );
        let rsv = if window_8 { 0 } else { RSV1 };
        assert!(got.iter().all(|(_, _, frames)| frames[0].rsv == rsv), "{offer}");
        if window_15_takeover {
            // Context takeover carries on after a prepared message.
            let (a1, a2) = (got[2].2[0].payload.len(), got[3].2[0].payload.len());
            assert!(a2 * 4 < a1, "{offer}: {a1} then {a2}");
        } else if no_takeover {
            assert!(got[2].2[0].payload == got[3].2[0].payload, "{offer}");
        }
        prepared_payloads.push(got[1].2[0].payload.clone());
        // The same compressed bytes each time on one connection.
        assert!(got[1].2[0].payload == got[4].2[0].payload, "{offer}");
        assert!(got[1].2[0].payload == got[6].2[0].payload, "{offer}");
        // And the connection still reads.
        client.send(BINARY, &pattern(3000)).await;
        assert!(within(conn.read_message()).await.unwrap().data == pattern(3000));
    }
    // Takeover or not, the same window and level share one compressed variant.
    assert!(prepared_payloads[0] == prepared_payloads[1]);
    assert!(prepared_payloads[2] != prepared_payloads[0], "a 10-bit window makes its own variant");
    assert!(prepared_payloads[3] == prepared.data().as_ref(), "uncompressed with an 8-bit window");

    // A silverback client sends it too, and reads it from a silverback server.
    let (addr, _server) = spawn_echo_server(Upgrader::new().enable_compression(true)).await;
    let (mut conn, _) = within(dialer().enable_compression(true).connect(&url(addr))).await.unwrap();
    for _ in 0..2 {
        conn.write_prepared(&prepared).await.unwrap();
        assert_eq!(within(conn.read_message()).await.unwrap().data, prepared.data());
        conn.write_text(&after).await.unwrap();
        assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some(after.as_str()));
    }
}

/// Every level of gorilla's range (−2 Huffman only, −1 default, 0–9)
/// round-trips between a silverback client and server, each compressing at
/// that level, through a tap that sees the frames' sizes.
#[tokio::test]
async fn every_gorilla_compression_level_round_trips() {
    let text = text_of(20_000);
    let binary = noise(5_000, 7);
    let mut sizes = Vec::new();
    for level in -2..=9 {
        let upgrader = Upgrader::new().enable_compression(true).compression_level(level);
        let (server_addr, _server) = spawn_echo_server(upgrader).await;
        let (tap, up, down) = spawn_tap(server_addr).await;
        let (mut conn, _) = within(dialer().enable_compression(true).connect(&url(tap))).await.unwrap();
        conn.set_compression_level(level).unwrap();
        conn.write_text(&text).await.unwrap();
        assert!(within(conn.read_message()).await.unwrap().data == text.as_bytes(), "level {level}");
        conn.write_binary(&binary).await.unwrap();
        assert!(within(conn.read_message()).await.unwrap().data == binary, "level {level}");
        for (side, log) in [("client", &up), ("server", &down)] {
            let sent = data_frames(log)[0];
            assert_eq!(sent.rsv, RSV1, "{side} at level {level}");
            if level == 0 {
                assert!(sent.len >= text.len(), "{side}: level 0 stores: {sent:?}");
            } else if level == -2 {
                // Literals only: the repeating text shrinks by its byte
                // frequencies alone, nowhere near what string matching gets.
                assert!(sent.len > text.len() / 4 && sent.len < text.len() * 3 / 4, "{side}: huffman only: {sent:?}");
            } else {
                assert!(sent.len < text.len() / 4, "{side} at level {level}: {sent:?}");
            }
        }
        sizes.push((level, data_frames(&up)[0].len));
        conn.close(CloseFrame::new(CloseCode::NORMAL, "")).await.unwrap();
    }
    // The default is level 6; Huffman only does no string matching.
    let size = |level: i32| sizes.iter().find(|s| s.0 == level).unwrap().1;
    assert_eq!(size(-1), size(6), "{sizes:?}");
    assert!(size(-2) > 10 * size(1), "{sizes:?}");
    assert_eq!(silverback::CompressionLevel::DEFAULT.get(), -1);
}

/// Levels outside −2..=9 are refused, and leave the level as it was; a
/// builder takes the nearest valid level.
#[tokio::test]
async fn invalid_compression_levels_are_refused() {
    let (mut conn, mut client) = deflate_connected(Upgrader::new().enable_compression(true), OFFER).await;
    let msg = text_of(20_000);
    conn.set_compression_level(0).unwrap();
    for level in [-3, 10, i32::MIN, i32::MAX] {
        let refused = conn.set_compression_level(level);
        assert!(matches!(refused, Err(Error::InvalidRequest(ref m)) if m.contains("-2..=9")), "{level}: {refused:?}");
    }
    assert!(conn.set_compression_level(u32::MAX).is_err());
    assert!(conn.set_compression_level(silverback::CompressionLevel::new(-3)).is_err());
    // Still level 0: the message is stored.
    conn.write_text(&msg).await.unwrap();
    let (_, got, frames) = client.recv().await;
    assert!(got == msg.as_bytes());
    assert!(frames[0].payload.len() >= msg.len(), "{}", frames[0].payload.len());
    for level in [silverback::CompressionLevel::HUFFMAN_ONLY, silverback::CompressionLevel::DEFAULT] {
        conn.set_compression_level(level).unwrap();
    }
    assert_eq!(silverback::CompressionLevel::new(42).clamped(), silverback::CompressionLevel::BEST);
    assert_eq!(silverback::CompressionLevel::new(-42).clamped(), silverback::CompressionLevel::HUFFMAN_ONLY);

    // A builder clamps: 42 compresses as 9.
    let (server_addr, _server) = spawn_echo_server(Upgrader::new().enable_compression(true)).await;
    let (tap, up, _down) = spawn_tap(server_addr).await;
    let (mut conn, _) =
        within(dialer().enable_compression(true).compression_level(42).connect(&url(tap))).await.unwrap();
    conn.write_text(&msg).await.unwrap();
    assert!(within(conn.read_message()).await.unwrap().data == msg.as_bytes());
    assert!(data_frames(&up)[0].len < msg.len() / 4);
}
