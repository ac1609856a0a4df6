//! A split blocking connection used from several threads at once, against
//! tungstenite's blocking client: a writer blocked by a peer that does not
//! read must not stop the reader, replies owed by the reader must not be
//! lost, frames from the writer and the handles must not interleave, and a
//! handle must be able to end a read blocked in another thread.
#![cfg(feature = "blocking")]

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use silverback::blocking::{self, Conn};
use silverback::{CloseCode, CloseFrame, Error, MessageType, Upgrader};
use tungstenite::Message as WsMessage;

type Peer = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

/// A listener and the URL to dial it.
fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    (listener, url)
}

fn accept(listener: &TcpListener, upgrader: &Upgrader) -> Conn<TcpStream> {
    let (stream, _) = listener.accept().unwrap();
    blocking::accept(upgrader, stream).expect("handshake")
}

/// A client whose socket takes in little before the application reads:
/// a fixed small receive buffer (no autotuning), so that a server writing
/// to it blocks early and stays blocked.
fn slow_peer(url: &str) -> tungstenite::WebSocket<TcpStream> {
    let addr: std::net::SocketAddr = url.trim_start_matches("ws://").trim_end_matches('/').parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tungstenite::client(url, stream).unwrap().0
}

fn peer(url: &str, read_timeout: Duration) -> Peer {
    let (ws, _) = tungstenite::connect(url).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(read_timeout)).unwrap();
    }
    ws
}

/// The payload of the writer's `i`th message: its index, then a pattern.
fn payload(i: u32, len: usize) -> Vec<u8> {
    let mut data = i.to_be_bytes().to_vec();
    data.extend((0..len - 4).map(|j| (j as u32).wrapping_mul(31).wrapping_add(i) as u8));
    data
}

const MESSAGES: u32 = 600;
const SIZE: usize = 40_000;
const PEER_TEXTS: usize = 20;
const PEER_PINGS: usize = 50;
const HANDLE_PINGS: usize = 40;

#[test]
fn a_writer_blocked_by_the_peer_does_not_stop_the_reader_and_nothing_is_lost() {
    let (listener, url) = listen();
    let (texts_seen, texts_seen_rx) = mpsc::channel();
    let server = thread::spawn(move || {
        let conn = accept(&listener, &Upgrader::new());
        let (mut read, mut write) = conn.split().unwrap();
        let written = Arc::new(AtomicU32::new(0));
        let progress = written.clone();
        // Far more than the socket buffers hold: the writer blocks until the
        // peer reads, which it does only once the reader has seen its texts.
        let writer = thread::spawn(move || {
            for i in 0..MESSAGES {
                write.write_binary(payload(i, SIZE))?;
                progress.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, Error>(write)
        });
        let pingers: Vec<_> = (0..2)
            .map(|t| {
                let handle = read.handle();
                thread::spawn(move || {
                    for i in 0..HANDLE_PINGS {
                        handle.ping(format!("h{t}-{i}"))?;
                    }
                    Ok::<_, Error>(())
                })
            })
            .collect();
        let mut texts = 0;
        let end = loop {
            match read.read_message() {
                Ok(m) => {
                    assert_eq!(m.as_text(), Some(format!("text {texts}").as_str()));
                    texts += 1;
                    if texts == PEER_TEXTS {
                        texts_seen.send(written.load(Ordering::SeqCst)).unwrap();
                    }
                }
                Err(e) => break e,
            }
        };
        let write = writer.join().unwrap().expect("every write completes");
        for pinger in pingers {
            pinger.join().unwrap().expect("every handle ping completes");
        }
        (texts, end, write)
    });

    let mut ws = slow_peer(&url);
    // Give the server's writer time to fill the socket buffers and block;
    // then the reader must answer pings and read while it stays blocked.
    thread::sleep(Duration::from_millis(300));
    for i in 0..PEER_PINGS.max(PEER_TEXTS) {
        if i < PEER_PINGS {
            ws.send(WsMessage::Ping(format!("c{i}").into_bytes().into())).unwrap();
        }
        if i < PEER_TEXTS {
            ws.send(WsMessage::text(format!("text {i}"))).unwrap();
        }
        thread::sleep(Duration::from_millis(2));
    }
    // The server's writer is blocked on us now; its reader must still read.
    let written = texts_seen_rx.recv_timeout(Duration::from_secs(10)).expect("the reader went on");
    assert!(written < MESSAGES, "the writer was not held up by the peer ({written} written): the test proves nothing");

    let mut next = 0;
    let mut pongs = Vec::new();
    let mut pings = 0;
    let last_pong = format!("c{}", PEER_PINGS - 1).into_bytes();
    while next < MESSAGES || pongs.last() != Some(&last_pong) || pings < 2 * HANDLE_PINGS {
        match ws.read().expect("a whole stream of frames") {
            WsMessage::Binary(data) => {
                assert_eq!(data, payload(next, SIZE), "message {next}");
                next += 1;
            }
            WsMessage::Pong(data) => pongs.push(data.to_vec()),
            WsMessage::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // A pong may stand for the pings before it (RFC 6455 §5.5.3), in order.
    let mut last = None;
    for pong in &pongs {
        let i: usize = std::str::from_utf8(&pong[1..]).unwrap().parse().unwrap();
        assert!(last.is_none_or(|l| i > l), "pongs out of order: {pongs:?}");
        last = Some(i);
    }
    ws.close(None).unwrap();
    while let Ok(frame) = ws.read() {
        assert!(!matches!(frame, WsMessage::Binary(_) | WsMessage::Ping(_)), "more than was sent: {frame:?}");
    }
    let (texts, end, _write) = server.join().unwrap();
    assert_eq!(texts, PEER_TEXTS);
    assert!(end.is_close(&[CloseCode::NO_STATUS_RECEIVED]), "{end:?}");
}

#[test]
fn close_now_from_a_handle_ends_a_read_blocked_in_another_thread() {
    let (listener, url) = listen();
    let server = thread::spawn(move || {
        let (mut read, mut write) = accept(&listener, &Upgrader::new()).split().unwrap();
        let handle = write.handle();
        let closer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(150));
            handle.close_now();
        });
        let start = Instant::now();
        let result = read.read_message();
        let elapsed = start.elapsed();
        closer.join().unwrap();
        (result, elapsed, write.write_text("after"))
    });
    // A peer that neither writes nor closes.
    let ws = peer(&url, Duration::from_secs(10));
    let (result, elapsed, after) = server.join().unwrap();
    assert!(result.is_err(), "{result:?}");
    assert!(elapsed < Duration::from_secs(3), "the read waited for the peer: {elapsed:?}");
    assert!(after.is_err(), "a write after close_now: {after:?}");
    drop(ws);
}

#[test]
fn a_handle_runs_the_close_handshake_while_the_reader_reads() {
    let (listener, url) = listen();
    let server = thread::spawn(move || {
        let (mut read, write) = accept(&listener, &Upgrader::new()).split().unwrap();
        let handle = write.handle();
        let reader = thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                match read.read_message() {
                    Ok(m) => seen.push(m.as_text().unwrap().to_owned()),
                    Err(e) => return (seen, e),
                }
            }
        });
        thread::sleep(Duration::from_millis(100));
        let start = Instant::now();
        let closed = handle.close(CloseFrame::new(CloseCode::GOING_AWAY, "restart"));
        let took = start.elapsed();
        let sent = handle.is_close_sent();
        let received = handle.is_close_received();
        (closed, took, sent, received, reader.join().unwrap(), write)
    });
    let mut ws = peer(&url, Duration::from_secs(10));
    ws.send(WsMessage::text("one")).unwrap();
    match ws.read().unwrap() {
        WsMessage::Close(Some(frame)) => {
            assert_eq!((u16::from(frame.code), frame.reason.as_str()), (1001, "restart"));
        }
        other => panic!("expected a close, got {other:?}"),
    }
    // tungstenite answers the close as it reads on.
    while ws.read().is_ok() {}
    let (closed, took, sent, received, (seen, end), mut write) = server.join().unwrap();
    closed.unwrap();
    assert!(took < Duration::from_secs(4), "the close waited out its timeout: {took:?}");
    assert!(sent && received);
    assert_eq!(seen, ["one"]);
    assert!(end.is_close(&[CloseCode::GOING_AWAY]), "the peer echoed our code: {end:?}");
    assert!(matches!(write.write_text("late"), Err(Error::CloseSent)));
}

#[test]
fn streamed_writes_and_control_frames_from_handles_do_not_interleave_inside_a_frame() {
    let (listener, url) = listen();
    let server = thread::spawn(move || {
        let upgrader = Upgrader::new().write_buffer_size(512);
        let (mut read, mut write) = accept(&listener, &upgrader).split().unwrap();
        let handles: Vec<_> = (0..3)
            .map(|t| {
                let handle = write.handle();
                thread::spawn(move || {
                    for i in 0..100 {
                        handle.write_control(MessageType::Pong, format!("{t}:{i}"), None).unwrap();
                    }
                })
            })
            .collect();
        for m in 0..20u8 {
            let mut writer = write.next_writer(MessageType::Binary).unwrap();
            for _ in 0..40 {
                std::io::Write::write_all(&mut writer, &[m; 100]).unwrap();
            }
            writer.close().unwrap();
        }
        for handle in handles {
            handle.join().unwrap();
        }
        write.write_text("done").unwrap();
        read.read_message()
    });
    let mut ws = peer(&url, Duration::from_secs(10));
    let mut messages = 0u8;
    let mut pongs = 0;
    loop {
        match ws.read().unwrap() {
            WsMessage::Binary(data) => {
                assert_eq!(data.len(), 4000);
                assert!(data.iter().all(|&b| b == messages), "message {messages} mixed with another");
                messages += 1;
            }
            WsMessage::Pong(_) => pongs += 1,
            WsMessage::Text(t) if t.as_str() == "done" => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((messages, pongs), (20, 300));
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    let end = server.join().unwrap();
    assert!(matches!(end, Err(Error::Closed(_))), "{end:?}");
}
