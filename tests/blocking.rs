//! The blocking connection over real sockets, against tungstenite's
//! blocking client as an independent peer.
#![cfg(feature = "blocking")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use silverback::blocking::{self, Conn};
use silverback::{CloseCode, CloseFrame, Error, MessageType, Upgrader};
use tungstenite::Message as WsMessage;

/// Accepts one connection with `upgrader` and runs `serve` on the blocking
/// connection in a thread; returns the URL and the thread.
fn serve<T: Send + 'static>(
    upgrader: Upgrader,
    serve: impl FnOnce(Conn<TcpStream>) -> T + Send + 'static,
) -> (String, thread::JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        serve(blocking::accept(&upgrader, stream).expect("handshake"))
    });
    (url, server)
}

type Peer = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

fn peer(url: &str) -> Peer {
    let (ws, _) = tungstenite::connect(url).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    ws
}

fn echo(mut conn: Conn<TcpStream>) -> Error {
    loop {
        match conn.read_message() {
            Ok(msg) => {
                if let Err(e) = conn.write_message(msg.kind, &msg.data) {
                    return e;
                }
            }
            Err(e) => return e,
        }
    }
}

#[test]
fn messages_of_every_size_are_echoed() {
    let (url, server) = serve(Upgrader::new(), echo);
    let mut ws = peer(&url);
    let sizes = [0usize, 1, 125, 126, 65_535, 65_536, 300_000];
    for &size in &sizes {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        ws.send(WsMessage::binary(data.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), WsMessage::binary(data), "{size} bytes");
    }
    ws.send(WsMessage::text("héllo")).unwrap();
    assert_eq!(ws.read().unwrap(), WsMessage::text("héllo"));
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    let end = server.join().unwrap();
    assert!(end.is_close(&[CloseCode::NO_STATUS_RECEIVED]), "{end:?}");
}

#[test]
fn pings_are_answered_and_streamed_messages_cross_in_fragments() {
    let (url, server) = serve(Upgrader::new().write_buffer_size(1000), |mut conn| {
        let (kind, mut reader) = conn.next_reader().unwrap();
        let mut data = Vec::new();
        reader.read_to_end(&mut data).unwrap();
        let mut writer = conn.next_writer(kind).unwrap();
        for chunk in data.chunks(300) {
            writer.write_all(chunk).unwrap();
        }
        writer.close().unwrap();
        conn.read_message()
    });
    let mut ws = peer(&url);
    ws.send(WsMessage::Ping("are you there".into())).unwrap();
    let text = "streamed ".repeat(400);
    ws.send(WsMessage::text(text.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), WsMessage::Pong("are you there".into()));
    assert_eq!(ws.read().unwrap(), WsMessage::text(text));
    ws.send(WsMessage::text("last")).unwrap();
    let last = server.join().unwrap().unwrap();
    assert_eq!((last.kind, &last.data[..]), (MessageType::Text, &b"last"[..]));
}

#[test]
fn the_server_runs_the_close_handshake() {
    let (url, server) = serve(Upgrader::new(), |mut conn| {
        conn.write_text("before").unwrap();
        let closed = conn.close(CloseFrame::new(CloseCode::GOING_AWAY, "restart"));
        let after = conn.write_text("after");
        (closed, after)
    });
    let mut ws = peer(&url);
    assert_eq!(ws.read().unwrap(), WsMessage::text("before"));
    match ws.read().unwrap() {
        WsMessage::Close(Some(frame)) => {
            assert_eq!((u16::from(frame.code), frame.reason.as_str()), (1001, "restart"));
        }
        other => panic!("expected a close, got {other:?}"),
    }
    // tungstenite answers the close as it reads on.
    while ws.read().is_ok() {}
    let (closed, after) = server.join().unwrap();
    closed.unwrap();
    assert!(matches!(after, Err(Error::CloseSent)), "{after:?}");
}

#[test]
fn a_read_deadline_ends_a_quiet_read() {
    let (url, server) = serve(Upgrader::new(), |mut conn| {
        conn.set_read_deadline(Some(Instant::now() + Duration::from_millis(150)));
        let start = Instant::now();
        let result = conn.read_message();
        (result, start.elapsed())
    });
    let _ws = peer(&url);
    let (result, elapsed) = server.join().unwrap();
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(elapsed >= Duration::from_millis(140) && elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn keepalive_pings_while_reading_and_ends_a_peer_that_does_not_answer() {
    let upgrader =
        Upgrader::new().ping_interval(Some(Duration::from_millis(50))).pong_timeout(Duration::from_millis(200));
    let (url, server) = serve(upgrader, |mut conn| {
        let start = Instant::now();
        (conn.read_message(), start.elapsed())
    });
    // A raw peer that completes the handshake and then never reads.
    let stream = TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches('/')).unwrap();
    let mut raw = stream.try_clone().unwrap();
    raw.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let (result, elapsed) = server.join().unwrap();
    assert!(matches!(result, Err(Error::KeepaliveTimeout)), "{result:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    drop(stream);
}

#[test]
fn a_protocol_violation_is_answered_with_its_close_code() {
    let (url, server) = serve(Upgrader::new(), |mut conn| conn.read_message());
    let mut raw = TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches('/')).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    // An unmasked frame from a client: RFC 6455 §5.1, 1002.
    raw.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    let result = server.join().unwrap();
    assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");
    let mut all = Vec::new();
    raw.read_to_end(&mut all).unwrap();
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let reason = b"unmasked frame from client";
    let close = &all[head_end..];
    assert_eq!(close[..4], [0x88, 2 + reason.len() as u8, 0x03, 0xea], "close 1002, then the end of the stream");
    assert_eq!(&close[4..], reason, "with a reason naming the violation");
}

#[test]
fn writes_after_close_now_fail() {
    let (url, server) = serve(Upgrader::new(), |mut conn| {
        conn.close_now();
        conn.write_message(MessageType::Text, "x")
    });
    let mut ws = peer(&url);
    assert!(ws.read().is_err());
    assert!(server.join().unwrap().is_err());
}

#[test]
fn accept_refuses_a_cross_origin_request_and_agrees_on_a_subprotocol() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let upgrader = Upgrader::new().subprotocols(["chat", "superchat"]).enable_compression(true);
    let server = thread::spawn(move || {
        let mut results = Vec::new();
        for _ in 0..2 {
            let (stream, _) = listener.accept().unwrap();
            results.push(
                blocking::accept(&upgrader, stream)
                    .map(|conn| (conn.subprotocol().map(str::to_owned), conn.compression_negotiated())),
            );
        }
        results
    });
    let exchange = |extra: &str| {
        let mut raw = TcpStream::connect(addr).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        raw.write_all(request.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && raw.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    };
    let refused = exchange("Origin: http://evil.example\r\n");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let accepted =
        exchange("Sec-WebSocket-Protocol: superchat, chat\r\nSec-WebSocket-Extensions: permessage-deflate\r\n");
    assert!(accepted.starts_with("HTTP/1.1 101"), "{accepted}");
    assert!(accepted.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{accepted}");
    assert!(accepted.contains("Sec-WebSocket-Protocol: superchat"), "{accepted}");
    let results = server.join().unwrap();
    assert!(
        matches!(&results[0], Err(Error::RequestRefused { status, .. }) if status.as_u16() == 403),
        "{:?}",
        results[0]
    );
    assert_eq!(results[1].as_ref().unwrap(), &(Some("superchat".to_owned()), true));
}

#[test]
fn accept_gives_up_on_a_client_that_never_finishes_its_request() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let upgrader = Upgrader::new().handshake_timeout(Some(Duration::from_millis(200)));
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let start = Instant::now();
        (blocking::accept(&upgrader, stream).map(|_| ()), start.elapsed())
    });
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let (result, elapsed) = server.join().unwrap();
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

/// A control write whose deadline has already passed fails at once with a
/// timeout and sends nothing; the connection goes on working.
#[test]
fn write_control_with_a_past_deadline_fails_at_once() {
    let (url, server) = serve(Upgrader::new(), |mut conn| {
        let past = Instant::now() - Duration::from_millis(1);
        assert!(matches!(conn.write_control(MessageType::Ping, b"x", Some(past)), Err(Error::Timeout)));
        assert!(matches!(conn.write_control(MessageType::Close, b"", Some(past)), Err(Error::Timeout)));
        conn.write_text("still open").unwrap();
        let (_read, write) = conn.split().unwrap();
        let handle = write.handle();
        assert!(matches!(handle.write_control(MessageType::Ping, b"x", Some(past)), Err(Error::Timeout)));
        handle.write_control(MessageType::Ping, b"late", Some(Instant::now() + Duration::from_secs(5))).unwrap();
    });
    let mut ws = peer(&url);
    assert_eq!(ws.read().unwrap(), WsMessage::text("still open"));
    assert_eq!(ws.read().unwrap(), WsMessage::Ping(b"late".to_vec().into()));
    server.join().unwrap();
}

/// The blocking connection takes gorilla's whole range of compression
/// levels and refuses what lies outside it.
#[test]
fn compression_levels_cover_gorillas_range() {
    let (url, server) = serve(Upgrader::new().enable_compression(true), |mut conn| {
        for level in [-3, 10] {
            assert!(matches!(conn.set_compression_level(level), Err(Error::InvalidRequest(_))), "{level}");
        }
        for level in -2..=9 {
            conn.set_compression_level(level).unwrap();
            conn.write_text(format!("level {level} ").repeat(200)).unwrap();
        }
        let (_read, mut write) = conn.split().unwrap();
        assert!(write.set_compression_level(-3).is_err());
        write.set_compression_level(silverback::CompressionLevel::HUFFMAN_ONLY).unwrap();
        write.write_text("split").unwrap();
    });
    let dialer = silverback::Dialer::new().enable_compression(true);
    let (mut client, _) = blocking::connect(&dialer, &url).unwrap();
    assert!(client.compression_negotiated());
    for level in -2..=9 {
        assert_eq!(client.read_message().unwrap().data, format!("level {level} ").repeat(200).as_bytes());
    }
    assert_eq!(client.read_message().unwrap().data, &b"split"[..]);
    server.join().unwrap();
}
