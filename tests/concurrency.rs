//! Split halves used from separate tasks, handles from a third task, reunite.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use silverback::{CloseCode, CloseFrame, Conn, Error, MessageType, Upgrader};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test]
async fn split_halves_in_two_tasks_with_a_handle_in_a_third() {
    let (ping_now_tx, ping_now_rx) = oneshot::channel::<()>();
    let (addr, server) = spawn_server(Upgrader::new(), |conn| async move {
        let handle = conn.handle();
        let (mut read, mut write) = conn.split();
        let (tx, mut rx) = mpsc::channel(16);
        let reader = tokio::spawn(async move {
            loop {
                match read.read_message().await {
                    Ok(msg) => tx.send(msg).await.unwrap(),
                    Err(e) => return (e, read),
                }
            }
        });
        let writer = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                write.write_message(msg.kind, &msg.data).await.unwrap();
            }
            // The reader ended on the peer's close, whose echo went out.
            let late = write.write_text("late").await;
            (late, write)
        });
        let pinger = tokio::spawn(async move {
            ping_now_rx.await.unwrap();
            handle.write_control(MessageType::Ping, b"from-handle", None).await
        });
        let (end, read) = reader.await.unwrap();
        let (late, write) = writer.await.unwrap();
        let ping = pinger.await.unwrap();
        (end, late, ping, Conn::reunite(read, write).is_ok())
    })
    .await;

    let mut raw = RawClient::connect(addr).await;
    // The writer task is idle: the pong comes from the read half.
    raw.send_frame(true, PING, b"auto").await;
    let pong = raw.frame().await;
    assert_eq!((pong.opcode, pong.payload.as_slice()), (PONG, &b"auto"[..]));
    raw.send_frame(true, TEXT, b"echo me").await;
    assert_eq!(raw.message().await, (TEXT, b"echo me".to_vec(), 1));
    ping_now_tx.send(()).unwrap();
    let ping = raw.frame().await;
    assert_eq!((ping.opcode, ping.payload.as_slice()), (PING, &b"from-handle"[..]));
    raw.send_close(1000, "bye").await;
    assert_eq!(raw.read_close().await, Some((1000, String::new())));
    raw.expect_eof().await;

    let (end, late, ping, reunited) = within(server).await.unwrap();
    assert!(end.is_close(&[CloseCode::NORMAL]), "{end:?}");
    assert!(matches!(late, Err(Error::CloseSent)), "{late:?}");
    ping.unwrap();
    assert!(reunited);
}

#[tokio::test]
async fn concurrent_writer_handle_and_reader_never_interleave_frames() {
    const MESSAGES: usize = 200;
    const SERVER_PINGS: usize = 100;
    const CLIENT_MESSAGES: usize = 50;
    let message = |i: usize| -> Vec<u8> {
        let mut data = pattern(10_000 + i);
        data[0] = i as u8;
        data
    };
    let (addr, server) = spawn_server(Upgrader::new(), move |conn| async move {
        let handle = conn.handle();
        let (mut read, mut write) = conn.split();
        let reader = tokio::spawn(async move {
            let mut texts = 0;
            loop {
                match read.read_message().await {
                    Ok(msg) => {
                        assert_eq!(msg.data, format!("client {texts}").as_bytes());
                        texts += 1;
                    }
                    Err(e) => return (texts, e),
                }
            }
        });
        let writer = tokio::spawn(async move {
            for i in 0..MESSAGES {
                write.write_binary(message(i)).await.unwrap();
            }
            write
        });
        let pinger = tokio::spawn(async move {
            for i in 0..SERVER_PINGS {
                handle.ping(format!("p{i}")).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        pinger.await.unwrap();
        let _write = writer.await.unwrap();
        reader.await.unwrap()
    })
    .await;

    let ws = tungstenite_client(addr).await;
    let (mut sink, mut stream) = ws.split();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let sender = tokio::spawn(async move {
        for i in 0..CLIENT_MESSAGES {
            sink.send(WsMessage::Ping(Bytes::from(format!("c{i}")))).await.unwrap();
            sink.send(WsMessage::text(format!("client {i}"))).await.unwrap();
        }
        done_rx.await.unwrap();
        sink.send(WsMessage::Close(None)).await.unwrap();
        sink
    });
    let (mut data, mut pings, mut pongs) = (0, 0, 0);
    let mut done_tx = Some(done_tx);
    while let Some(msg) = within(stream.next()).await {
        match msg.unwrap() {
            WsMessage::Binary(bytes) => {
                assert!(bytes == message(data), "message {data} corrupted");
                data += 1;
            }
            WsMessage::Ping(payload) => {
                assert_eq!(payload, format!("p{pings}").as_bytes());
                pings += 1;
            }
            WsMessage::Pong(payload) => {
                assert_eq!(payload, format!("c{pongs}").as_bytes());
                pongs += 1;
            }
            WsMessage::Close(_) => break,
            other => panic!("unexpected {other:?}"),
        }
        if (data, pings, pongs) == (MESSAGES, SERVER_PINGS, CLIENT_MESSAGES) {
            if let Some(tx) = done_tx.take() {
                tx.send(()).unwrap();
            }
        }
    }
    assert_eq!((data, pings, pongs), (MESSAGES, SERVER_PINGS, CLIENT_MESSAGES));
    drop(within(sender).await.unwrap());
    let (texts, end) = within(server).await.unwrap();
    assert_eq!(texts, CLIENT_MESSAGES);
    assert!(end.is_close(&[CloseCode::NO_STATUS_RECEIVED]), "{end:?}");
}

#[tokio::test]
async fn control_frames_may_interleave_with_an_open_streamed_message() {
    let (addr, server) = spawn_server(Upgrader::new().write_buffer_size(1024), |mut conn| async move {
        let handle = conn.handle();
        let mut writer = conn.next_writer(MessageType::Binary).await.unwrap();
        writer.write_all(&pattern(1500)).await.unwrap();
        handle.ping("between").await.unwrap();
        writer.close().await.unwrap();
        conn
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    let first = raw.frame().await;
    assert_eq!((first.opcode, first.fin, first.payload.len()), (BINARY, false, 1024));
    let ping = raw.frame().await;
    assert_eq!((ping.opcode, ping.payload.as_slice()), (PING, &b"between"[..]));
    let last = raw.frame().await;
    assert_eq!((last.opcode, last.fin), (CONT, true));
    let mut data = first.payload;
    data.extend_from_slice(&last.payload);
    assert!(data == pattern(1500));
    drop(within(server).await.unwrap());
}

#[tokio::test]
async fn handle_close_completes_while_the_read_half_reads() {
    let (addr, server) = spawn_server(Upgrader::new(), |conn| async move {
        let handle = conn.handle();
        let (mut read, write) = conn.split();
        let reader = tokio::spawn(async move { (read.read_message().await, read) });
        let closed = handle.close(CloseFrame::new(CloseCode::NORMAL, "from handle")).await;
        let (end, _read) = reader.await.unwrap();
        (closed, end, handle.is_close_sent(), handle.is_close_received(), write)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    assert_eq!(raw.read_close().await, Some((1000, "from handle".to_string())));
    raw.send_close(1000, "ok").await;
    raw.expect_eof().await;
    let (closed, end, sent, received, _write) = within(server).await.unwrap();
    closed.unwrap();
    assert!(end.unwrap_err().is_close(&[CloseCode::NORMAL]));
    assert!(sent && received);
}

#[tokio::test]
async fn write_half_close_runs_the_handshake() {
    let (addr, server) = spawn_server(Upgrader::new(), |conn| async move {
        let (mut read, mut write) = conn.split();
        let reader = tokio::spawn(async move { read.read_message().await });
        let closed = write.close(CloseFrame::new(4000u16, "half")).await;
        let end = reader.await.unwrap();
        (closed, end, write)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    assert_eq!(raw.read_close().await, Some((4000, "half".to_string())));
    raw.send_close(4000, "").await;
    raw.expect_eof().await;
    let (closed, end, _write) = within(server).await.unwrap();
    closed.unwrap();
    assert!(end.unwrap_err().is_close(&[CloseCode(4000)]));
}

#[tokio::test]
async fn control_write_timeout_behind_a_blocked_writer_is_not_permanent() {
    let (start_reading_tx, start_reading_rx) = oneshot::channel::<()>();
    let big = pattern(32 << 20);
    let sent = big.clone();
    let (addr, server) = spawn_server(Upgrader::new(), |conn| async move {
        let handle = conn.handle();
        let (read, mut write) = conn.split();
        let mut blocked = Box::pin(write.write_binary(&sent));
        // The write takes the frame lock at once and then blocks on the full socket.
        assert!(tokio::time::timeout(Duration::from_millis(100), blocked.as_mut()).await.is_err());
        let waited =
            handle.write_control(MessageType::Ping, b"waited", Some(Instant::now() + Duration::from_millis(100))).await;
        start_reading_tx.send(()).unwrap();
        blocked.await.unwrap();
        let after = handle.ping("after").await;
        (waited, after, read, write)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    within(start_reading_rx).await.unwrap();
    let (opcode, data, _) = raw.message().await;
    assert_eq!(opcode, BINARY);
    assert!(data == big);
    let ping = raw.frame().await;
    assert_eq!((ping.opcode, ping.payload.as_slice()), (PING, &b"after"[..]));
    let (waited, after, _read, _write) = within(server).await.unwrap();
    assert!(matches!(waited, Err(Error::Timeout)), "{waited:?}");
    after.unwrap();
}

#[tokio::test]
async fn reunite_only_joins_halves_of_one_connection() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let upgrader = Upgrader::new();
        let mut conns = Vec::new();
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            conns.push(upgrader.accept(stream).await.unwrap());
        }
        let b = conns.pop().unwrap();
        let a = conns.pop().unwrap();
        let (a_read, a_write) = a.split();
        let (b_read, b_write) = b.split();
        let (a_read, b_write) = match Conn::reunite(a_read, b_write) {
            Ok(_) => panic!("halves of different connections must not be reunited"),
            Err(halves) => halves,
        };
        let (b_read, a_write) = Conn::<TcpStream>::reunite(b_read, a_write).unwrap_err();
        let mut a = Conn::reunite(a_read, a_write).unwrap();
        let mut b = Conn::reunite(b_read, b_write).unwrap();
        for conn in [&mut a, &mut b] {
            let msg = conn.read_message().await.unwrap();
            conn.write_message(msg.kind, &msg.data).await.unwrap();
        }
        (a, b)
    });
    let mut first = RawClient::connect(addr).await;
    let mut second = RawClient::connect(addr).await;
    first.send_frame(true, TEXT, b"to a").await;
    second.send_frame(true, TEXT, b"to b").await;
    assert_eq!(first.message().await.1, b"to a");
    assert_eq!(second.message().await.1, b"to b");
    drop(within(server).await.unwrap());
}

#[tokio::test]
async fn conn_futures_are_send() {
    // Every other future of the API can be awaited inside `tokio::spawn`;
    // these must be too (gorilla: WriteControl and Close from any goroutine).
    let (mut conn, _raw) = connected(Upgrader::new()).await;
    let handle = conn.handle();
    assert!(probe(&handle.write_control(MessageType::Ping, b"", None)).is_send());
    assert!(probe(&conn.read_message()).is_send());
    assert!(probe(&conn.write_text("x")).is_send());
    let control = probe(&conn.write_control(MessageType::Ping, b"", None)).is_send();
    let close_now = probe(&conn.close_now()).is_send();
    let (read, write) = conn.split();
    let half_control = probe(&write.write_control(MessageType::Ping, b"", None)).is_send();
    assert!(
        control && close_now && half_control,
        "futures that are not Send: Conn::write_control={} Conn::close_now={} WriteHalf::write_control={}",
        !control,
        !close_now,
        !half_control
    );
    drop((read, write));
}

/// Splits `conn` and starts writing 32 MiB from a task on a peer that does not
/// read, so the write half stays blocked in the middle of a frame. Returns once
/// the write is under way, with the read half and the writer task.
async fn block_the_writer(
    conn: Conn<TcpStream>,
) -> (silverback::ReadHalf<TcpStream>, tokio::task::JoinHandle<silverback::Result<()>>) {
    let (read, mut write) = conn.split();
    let (started_tx, started_rx) = oneshot::channel();
    let writer = tokio::spawn(async move {
        let data = vec![0x5a; 32 << 20];
        let mut blocked = Box::pin(write.write_binary(&data));
        let early = tokio::time::timeout(Duration::from_millis(100), blocked.as_mut()).await;
        assert!(early.is_err(), "the socket buffers never filled up");
        started_tx.send(()).unwrap();
        blocked.await
    });
    within(started_rx).await.unwrap();
    (read, writer)
}

/// A bound well above what these operations need when they work.
const PROMPT: Duration = Duration::from_millis(1000);

#[tokio::test]
async fn handle_close_now_does_not_wait_for_a_blocked_writer() {
    let (conn, _raw) = connected(Upgrader::new()).await;
    let handle = conn.handle();
    let (_read, writer) = block_the_writer(conn).await;
    let closed = tokio::time::timeout(PROMPT, handle.close_now()).await;
    assert!(closed.is_ok(), "close_now (gorilla's Close) must not wait behind a blocked write");
    let write = tokio::time::timeout(PROMPT, writer).await.expect("the blocked write should fail").unwrap();
    assert!(write.is_err());
}

#[tokio::test]
async fn handle_close_returns_within_the_close_timeout_despite_a_blocked_writer() {
    let (conn, _raw) = connected(Upgrader::new().close_timeout(Duration::from_millis(300))).await;
    let handle = conn.handle();
    let (_read, _writer) = block_the_writer(conn).await;
    let closed = tokio::time::timeout(PROMPT, handle.close(CloseFrame::new(CloseCode::NORMAL, ""))).await;
    assert!(closed.is_ok(), "Handle::close must return within the close timeout");
}

#[tokio::test]
async fn protocol_error_is_returned_even_while_the_writer_is_blocked() {
    let (conn, mut raw) = connected(Upgrader::new()).await;
    let (mut read, _writer) = block_the_writer(conn).await;
    // An unmasked frame: the read must fail the connection and return. The
    // close frame cannot go out (the writer holds the socket); the reader gives
    // up on it after its reply timeout (1 s).
    raw.send(&frame_b0(0x81, b"unmasked", None)).await;
    let read = tokio::time::timeout(Duration::from_millis(1800), read.read_message()).await;
    let err = read.expect("the read must return, not wait for the blocked writer").unwrap_err();
    assert!(matches!(err, Error::Protocol(silverback::proto::ProtocolError::UnmaskedFrame)), "{err:?}");
}

#[tokio::test]
async fn close_now_ends_a_read_waiting_in_another_task() {
    // The peer stays connected and silent: only this side can end the read.
    let (conn, _raw) = connected(Upgrader::new()).await;
    let handle = conn.handle();
    let (mut read, _write) = conn.split();
    let reader = tokio::spawn(async move { read.read_message().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!reader.is_finished(), "nothing arrived: the read must be waiting");
    handle.close_now().await;
    let read = tokio::time::timeout(PROMPT, reader).await.expect("close_now must end the waiting read").unwrap();
    match read {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted, "{e}"),
        other => panic!("expected an aborted read, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unanswered_close_ends_a_read_waiting_in_another_task() {
    let (conn, mut raw) = connected(Upgrader::new().close_timeout(Duration::from_millis(200))).await;
    let handle = conn.handle();
    let (mut read, _write) = conn.split();
    let reader = tokio::spawn(async move { read.read_message().await });
    let closed = within(handle.close(CloseFrame::new(CloseCode::NORMAL, "bye"))).await;
    // The close frame went out; the peer never answers it.
    assert_eq!(raw.read_close().await, Some((1000, "bye".to_string())));
    assert!(closed.is_ok(), "{closed:?}");
    let read = tokio::time::timeout(PROMPT, reader).await.expect("the read must end with the handshake").unwrap();
    assert!(read.is_err(), "{read:?}");
}
