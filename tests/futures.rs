//! `futures` Stream and Sink for `Conn`, `ReadHalf` and `WriteHalf`, driven
//! with `StreamExt`/`SinkExt` as applications do: `forward`, `split`,
//! `select`, `send_all`; the stream's end on a normal and an abnormal close;
//! cancel safety of `next()`; control messages through the sink; the close
//! handshake from `close()`; the write deadline; and the sink under
//! backpressure over a small pipe while other tasks write.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{masked, parse_frame, BINARY, CLOSE, PING, TEXT};
use futures_util::stream::{self, FusedStream};
use futures_util::{SinkExt, StreamExt};
use silverback::{CloseCode, CloseFrame, Config, Conn, DeflateParams, Error, Message, MessageType, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The bound on any one step; only reached when something hangs.
const STEP: Duration = Duration::from_secs(5);

async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(STEP, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: still pending after {STEP:?}"),
    }
}

fn deflate() -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    }
}

/// A server and a client over an in-memory pipe of `size` bytes.
fn pair(size: usize, compress: bool) -> (Conn<DuplexStream>, Conn<DuplexStream>) {
    let (a, b) = tokio::io::duplex(size);
    let mut config = Config::default();
    config.deflate = compress.then(deflate);
    let server = Conn::from_raw(a, Role::Server, config.clone(), None, BytesMut::new());
    let client = Conn::from_raw(b, Role::Client, config, None, BytesMut::new());
    (server, client)
}

/// A message of `len` bytes whose content depends on `seed`.
fn message(seed: usize, len: usize) -> Message {
    if seed % 2 == 0 {
        let text: String = (0..len).map(|i| (b'a' + ((i + seed) % 26) as u8) as char).collect();
        Message::text(text)
    } else {
        Message::binary((0..len).map(|i| (i * 7 + seed) as u8).collect::<Vec<u8>>())
    }
}

#[tokio::test]
async fn the_stream_yields_messages_and_ends_on_a_normal_close() {
    let (mut server, mut client) = pair(1 << 16, false);
    let sender = tokio::spawn(async move {
        for i in 0..3 {
            server.write_text(format!("m{i}")).await.unwrap();
        }
        server.close(CloseFrame::new(CloseCode::GOING_AWAY, "bye")).await
    });
    let got: Vec<Message> = bounded("read to the end", (&mut client).map(Result::unwrap).collect()).await;
    assert_eq!(got, vec![Message::text("m0"), Message::text("m1"), Message::text("m2")]);
    assert!(client.is_terminated());
    assert!(bounded("after the end", client.next()).await.is_none());
    let close = client.close_error().expect("the peer's close is kept");
    assert_eq!((close.code, close.reason.as_str()), (CloseCode::GOING_AWAY, "bye"));
    bounded("server close", sender).await.unwrap().unwrap();
}

#[tokio::test]
async fn an_abnormal_close_is_yielded_once_as_an_error() {
    let (mut server, mut client) = pair(1 << 16, false);
    let closer = tokio::spawn(async move {
        server.write_binary(b"last").await.unwrap();
        server.close(CloseFrame::new(CloseCode::INTERNAL_SERVER_ERROR, "oops")).await
    });
    assert_eq!(bounded("message", client.next()).await.unwrap().unwrap(), Message::binary(&b"last"[..]));
    match bounded("the close", client.next()).await {
        Some(Err(e)) => assert!(e.is_close(&[CloseCode::INTERNAL_SERVER_ERROR]), "{e:?}"),
        other => panic!("expected the close as an error, got {other:?}"),
    }
    assert!(bounded("after the error", client.next()).await.is_none());
    assert!(client.is_terminated());
    bounded("server close", closer).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_stream_that_breaks_off_yields_the_error() {
    let (a, mut raw) = tokio::io::duplex(1 << 16);
    let mut server = Conn::from_raw(a, Role::Server, Config::default(), None, BytesMut::new());
    raw.write_all(&masked(true, TEXT, b"hello")).await.unwrap();
    // An unmasked frame from a client: a protocol violation.
    raw.write_all(&[0x81, 0x01, b'x']).await.unwrap();
    assert_eq!(bounded("first", server.next()).await.unwrap().unwrap(), Message::text("hello"));
    match bounded("violation", server.next()).await {
        Some(Err(Error::Protocol(_))) => {}
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(server.next().await.is_none());
    // The violation was answered with 1002.
    let mut buf = BytesMut::new();
    let close = loop {
        if let Some(frame) = parse_frame(&mut buf) {
            break frame;
        }
        let mut chunk = [0u8; 256];
        let n = bounded("the close frame", raw.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "no close frame before EOF");
        buf.extend_from_slice(&chunk[..n]);
    };
    assert_eq!(close.opcode, CLOSE);
    assert_eq!(close.close().unwrap().0, 1002);
}

#[tokio::test]
async fn send_all_delivers_every_message_in_order_with_compression() {
    let (mut server, mut client) = pair(4096, true);
    assert!(client.writer().compression_negotiated());
    let sent: Vec<Message> = (0..400).map(|i| message(i, (i * 37) % 3000)).collect();
    let expected = sent.clone();
    let reader = tokio::spawn(async move {
        let got: Vec<Message> = (&mut server).take(400).map(Result::unwrap).collect().await;
        (got, server)
    });
    let mut items = stream::iter(sent.into_iter().map(Ok));
    bounded("send_all", client.send_all(&mut items)).await.unwrap();
    let (got, _server) = bounded("read all", reader).await.unwrap();
    assert_eq!(got.len(), expected.len());
    for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(a, b, "message {i}");
    }
}

#[tokio::test]
async fn forward_echoes_and_ends_when_the_client_closes() {
    let (server, mut client) = pair(8192, true);
    let echo = tokio::spawn(async move {
        let (read, write) = server.split();
        read.forward(write).await
    });
    for i in 0..200 {
        let m = message(i, i * 101 % 20_000);
        bounded("send", client.send(m.clone())).await.unwrap();
        assert_eq!(bounded("echo", client.next()).await.unwrap().unwrap(), m, "message {i}");
    }
    // The whole connection's close: it reads until the peer's close itself.
    bounded("client close", SinkExt::close(&mut client)).await.unwrap();
    let ended = bounded("forward ends", echo).await.unwrap();
    assert!(ended.is_ok(), "forward ended with {ended:?}");
    assert_eq!(client.close_error().map(|c| c.code), Some(CloseCode::NORMAL));
    assert!(client.send(Message::text("late")).await.is_err());
}

#[tokio::test]
async fn closing_a_whole_conn_reads_the_peer_close_itself_and_keeps_what_came() {
    let (server, mut client) = pair(1 << 16, false);
    let echo = tokio::spawn(async move {
        let (read, write) = server.split();
        read.forward(write).await
    });
    let sent: Vec<Message> = (0..10).map(|i| message(i, 100)).collect();
    for m in &sent {
        client.feed(m.clone()).await.unwrap();
    }
    // Nothing reads the client's stream: its close reads the echoes and the
    // peer's close itself, well before the close timeout (5 s, the bound).
    bounded("close", SinkExt::close(&mut client)).await.unwrap();
    let rest: Vec<Message> = bounded("rest", (&mut client).map(Result::unwrap).collect()).await;
    assert_eq!(rest, sent, "the echoes that came during the close are kept");
    assert_eq!(client.close_error().map(|c| c.code), Some(CloseCode::NORMAL));
    bounded("echo ends", echo).await.unwrap().unwrap();
}

#[tokio::test]
async fn futures_split_halves_work_from_two_tasks() {
    let (server, client) = pair(1024, false);
    let echo = tokio::spawn(async move {
        let (read, write) = server.split();
        read.forward(write).await
    });
    // `StreamExt::split`, not the inherent `Conn::split`: a sink and a stream.
    let (mut sink, mut stream) = StreamExt::split(client);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(m) = stream.next().await {
            got.push(m.unwrap());
        }
        got
    });
    let sent: Vec<Message> = (0..300).map(|i| message(i, 500 + i)).collect();
    for m in &sent {
        bounded("send", sink.feed(m.clone())).await.unwrap();
    }
    bounded("flush", sink.flush()).await.unwrap();
    // Close from the sink half while the stream half reads: the reader sees
    // every echo, then the end of the stream.
    bounded("close", SinkExt::close(&mut sink)).await.unwrap();
    let got = bounded("reader ends", reader).await.unwrap();
    assert_eq!(got, sent);
    bounded("echo ends", echo).await.unwrap().unwrap();
}

#[tokio::test]
async fn select_merges_two_connections() {
    let (mut s1, c1) = pair(4096, false);
    let (mut s2, c2) = pair(4096, true);
    let writers = tokio::spawn(async move {
        for i in 0..50 {
            s1.write_text(format!("one {i}")).await.unwrap();
            s2.write_text(format!("two {i}")).await.unwrap();
        }
        let a = s1.close(CloseFrame::new(CloseCode::NORMAL, ""));
        let b = s2.close(CloseFrame::new(CloseCode::NORMAL, ""));
        let (a, b) = tokio::join!(a, b);
        a.and(b)
    });
    let merged: Vec<String> =
        bounded("merged", stream::select(c1, c2).map(|m| m.unwrap().as_text().unwrap().to_owned()).collect()).await;
    assert_eq!(merged.len(), 100);
    for source in ["one", "two"] {
        let mine: Vec<&String> = merged.iter().filter(|m| m.starts_with(source)).collect();
        let expected: Vec<String> = (0..50).map(|i| format!("{source} {i}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>(), "order of {source}");
    }
    bounded("writers", writers).await.unwrap().unwrap();
}

#[tokio::test]
async fn next_is_cancel_safe() {
    let (a, mut raw) = tokio::io::duplex(1 << 16);
    let mut server = Conn::from_raw(a, Role::Server, Config::default(), None, BytesMut::new());
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let frame = masked(true, BINARY, &payload);
    // Half of a fragmented message, then half of its last frame.
    let first = masked(false, BINARY, &payload[..4000]);
    let last = masked(true, 0, &payload[4000..]);
    raw.write_all(&first).await.unwrap();
    raw.write_all(&last[..1000]).await.unwrap();
    for _ in 0..3 {
        let cut = tokio::time::timeout(Duration::from_millis(30), server.next()).await;
        assert!(cut.is_err(), "a message was returned before it was whole");
    }
    raw.write_all(&last[1000..]).await.unwrap();
    raw.write_all(&frame).await.unwrap();
    let whole = bounded("whole", server.next()).await.unwrap().unwrap();
    assert_eq!(whole, Message::binary(payload.clone()));
    let again = bounded("second", server.next()).await.unwrap().unwrap();
    assert_eq!(again, Message::binary(payload));
}

#[tokio::test]
async fn control_messages_go_through_the_sink() {
    let (a, mut raw) = tokio::io::duplex(1 << 16);
    let mut server = Conn::from_raw(a, Role::Server, Config::default(), None, BytesMut::new());
    server.send(Message::text("before")).await.unwrap();
    server.send(Message { kind: MessageType::Ping, data: Bytes::from_static(b"are you there") }).await.unwrap();
    let too_long = Message { kind: MessageType::Ping, data: Bytes::from(vec![0u8; 126]) };
    assert!(matches!(server.send(too_long).await, Err(Error::InvalidControlFrame)));
    server.send(Message::binary(&b"after"[..])).await.unwrap();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    while frames.len() < 3 {
        if let Some(frame) = parse_frame(&mut buf) {
            frames.push((frame.opcode, frame.payload));
            continue;
        }
        let mut chunk = [0u8; 256];
        let n = bounded("frames", raw.read(&mut chunk)).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(
        frames,
        vec![(TEXT, b"before".to_vec()), (PING, b"are you there".to_vec()), (BINARY, b"after".to_vec())]
    );
}

#[tokio::test]
async fn closing_the_write_half_runs_the_handshake_with_the_reader_elsewhere() {
    let (server, mut client) = pair(4096, false);
    let (mut read, mut write) = server.split();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while let Some(m) = read.next().await {
            m.unwrap();
            n += 1;
        }
        (n, read.close_error().map(|c| c.code))
    });
    bounded("send", write.send(Message::text("one"))).await.unwrap();
    client.send(Message::text("to the server")).await.unwrap();
    assert_eq!(bounded("client reads", client.next()).await.unwrap().unwrap(), Message::text("one"));
    // The client keeps reading: it sees the close, answers, and its stream ends.
    let client_side = tokio::spawn(async move {
        let rest: Vec<_> = client.by_ref().collect().await;
        (rest.len(), client.close_error().map(|c| c.code))
    });
    let started = Instant::now();
    bounded("close", SinkExt::close(&mut write)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(4), "the close waited for its timeout");
    assert_eq!(bounded("reader", reader).await.unwrap(), (1, Some(CloseCode::NORMAL)));
    assert_eq!(bounded("client", client_side).await.unwrap(), (0, Some(CloseCode::NORMAL)));
    assert!(matches!(write.send(Message::text("late")).await, Err(Error::CloseSent)));
}

#[tokio::test]
async fn the_write_deadline_bounds_the_sink() {
    // The peer never reads: the pipe fills.
    let (server, _client) = pair(1024, false);
    let (_read, mut write) = server.split();
    write.set_write_deadline(Some(Instant::now() + Duration::from_millis(200)));
    let mut items = stream::iter((0..1000).map(|i| Ok(message(i, 4000))));
    let result = bounded("send_all", write.send_all(&mut items)).await;
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(write.send(Message::text("after")).await.is_err(), "a timed-out write side stays failed");
}

/// The sink over a 64-byte pipe, racing a Handle that pings, while the peer
/// reads slowly and writes to us: every message arrives whole and in order,
/// and no call hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_under_backpressure_with_other_writers() {
    for compress in [false, true] {
        let (server, mut client) = pair(64, compress);
        let (mut read, mut write) = server.split();
        let handle = write.handle();
        let pinger = tokio::spawn(async move {
            for i in 0..100u32 {
                handle.ping(i.to_be_bytes()).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let server_reader = tokio::spawn(async move {
            let mut n = 0;
            while let Some(m) = read.next().await {
                assert_eq!(m.unwrap(), Message::text(format!("from the client {n}")));
                n += 1;
            }
            n
        });
        let sent: Vec<Message> = (0..200).map(|i| message(i, 3000)).collect();
        let expected = sent.clone();
        let writer = tokio::spawn(async move {
            let mut items = stream::iter(sent.into_iter().map(Ok));
            write.send_all(&mut items).await.unwrap();
            pinger.await.unwrap();
            SinkExt::close(&mut write).await.unwrap();
        });
        let mut got = Vec::new();
        let mut i = 0;
        while let Some(m) = bounded("client reads", client.next()).await {
            got.push(m.unwrap());
            if i < 20 {
                client.send(Message::text(format!("from the client {i}"))).await.unwrap();
                i += 1;
            }
            if got.len() % 16 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert_eq!(got.len(), expected.len(), "compress={compress}");
        assert!(got == expected, "messages differ (compress={compress})");
        bounded("writer", writer).await.unwrap();
        assert_eq!(bounded("server reader", server_reader).await.unwrap(), 20);
    }
}
