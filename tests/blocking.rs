//! The blocking connection over real sockets, against tungstenite's
//! blocking client as an independent peer.
#![cfg(feature = "blocking")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use silverback::blocking::Conn;
use silverback::proto::handshake::accept_key;
use silverback::{CloseCode, CloseFrame, Config, Error, MessageType, Role};
use tungstenite::Message as WsMessage;

/// Accepts one connection, answers its opening handshake by hand and runs
/// `serve` on the blocking connection in a thread; returns the URL and the thread.
fn serve<T: Send + 'static>(
    config: Config,
    serve: impl FnOnce(Conn<TcpStream>) -> T + Send + 'static,
) -> (String, thread::JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|line| {
                line.strip_prefix("Sec-WebSocket-Key: ").or_else(|| line.strip_prefix("sec-websocket-key: "))
            })
            .expect("a key")
            .trim()
            .to_string();
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(key.as_bytes())
        );
        stream.write_all(response.as_bytes()).unwrap();
        serve(Conn::from_raw(stream, Role::Server, config, None, &[]))
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
    let (url, server) = serve(Config::default(), echo);
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
    let mut config = Config::default();
    config.write_buffer_size = 1000;
    let (url, server) = serve(config, |mut conn| {
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
    let (url, server) = serve(Config::default(), |mut conn| {
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
    let (url, server) = serve(Config::default(), |mut conn| {
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
    let mut config = Config::default();
    config.ping_interval = Some(Duration::from_millis(50));
    config.pong_timeout = Duration::from_millis(200);
    let (url, server) = serve(config, |mut conn| {
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
    let (url, server) = serve(Config::default(), |mut conn| conn.read_message());
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
    assert_eq!(&all[head_end..], [0x88, 0x02, 0x03, 0xea], "close 1002, then the end of the stream");
}

#[test]
fn writes_after_close_now_fail() {
    let (url, server) = serve(Config::default(), |mut conn| {
        conn.close_now();
        conn.write_message(MessageType::Text, "x")
    });
    let mut ws = peer(&url);
    assert!(ws.read().is_err());
    assert!(server.join().unwrap().is_err());
}
