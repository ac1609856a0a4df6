//! The client's connection against our own server (`Upgrader::accept`) over
//! loopback TCP: messages, control frames and handlers, the close handshake
//! from either side, the read limit, and concurrent use.

mod client_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client_support::*;
use silverback::{ClientStream, CloseCode, CloseFrame, Conn, Error, MessageType, PingPongHandler, Upgrader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn client(addr: std::net::SocketAddr) -> Conn<ClientStream> {
    within(dialer().connect(&ws_url(addr, "/"))).await.unwrap().0
}

/// A pong or ping handler that records payloads and does nothing else.
fn recorder() -> (PingPongHandler, Arc<Mutex<Vec<Vec<u8>>>>) {
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let record = seen.clone();
    let handler: PingPongHandler = Arc::new(move |payload, _ctx| {
        record.lock().unwrap().push(payload.to_vec());
        Ok(())
    });
    (handler, seen)
}

fn close_of(e: &Error) -> (CloseCode, String) {
    let close = e.close_error().unwrap_or_else(|| panic!("expected a close, got {e:?}"));
    (close.code, close.reason.clone())
}

// ---------------------------------------------------------------------------
// Messages

#[tokio::test]
async fn echo_text_binary_and_large_messages() {
    let (addr, server) = spawn_server(Upgrader::new(), echo).await;
    let mut conn = client(addr).await;
    assert_eq!(conn.role(), silverback::Role::Client);

    let every_byte: Vec<u8> = (0..=255u8).collect();
    let large: Vec<u8> = (0..5_000_000u32).map(|i| (i % 241) as u8).collect();
    conn.write_text("héllo, wörld ✓").await.unwrap();
    conn.write_binary(&every_byte).await.unwrap();
    conn.write_text("").await.unwrap();
    conn.write_message(MessageType::Binary, &large).await.unwrap();

    let m = within(conn.read_message()).await.unwrap();
    assert_eq!(m.as_text(), Some("héllo, wörld ✓"));
    let m = within(conn.read_message()).await.unwrap();
    assert_eq!((m.kind, &m.data[..]), (MessageType::Binary, &every_byte[..]));
    let m = within(conn.read_message()).await.unwrap();
    assert_eq!((m.kind, m.data.len()), (MessageType::Text, 0));
    let m = within(conn.read_message()).await.unwrap();
    assert_eq!(m.kind, MessageType::Binary);
    assert!(m.data == large, "large message corrupted");

    within(conn.close(CloseFrame::new(CloseCode::NORMAL, ""))).await.unwrap();
    assert!(within(server).await.unwrap().is_close(&[CloseCode::NORMAL]));
}

#[tokio::test]
async fn streamed_messages_both_ways() {
    let (addr, server) = spawn_server(Upgrader::new().write_buffer_size(1000), |mut conn| async move {
        // Receive a fragmented message whole, answer with a streamed one.
        let msg = conn.read_message().await.unwrap();
        let mut writer = conn.next_writer(MessageType::Text).await.unwrap();
        writer.write_all(&msg.data).await.unwrap();
        writer.write_all(b" (echoed)").await.unwrap();
        writer.close().await.unwrap();
        echo(conn).await
    })
    .await;
    let (mut conn, _) = within(dialer().write_buffer_size(700).connect(&ws_url(addr, "/"))).await.unwrap();
    let text = "streamed ".repeat(1000);
    let mut writer = conn.next_writer(MessageType::Text).await.unwrap();
    for chunk in text.as_bytes().chunks(333) {
        writer.write_all(chunk).await.unwrap();
    }
    writer.close().await.unwrap();

    let (kind, mut reader) = within(conn.next_reader()).await.unwrap();
    assert_eq!(kind, MessageType::Text);
    let mut received = Vec::new();
    within(reader.read_to_end(&mut received)).await.unwrap();
    assert_eq!(received, format!("{text} (echoed)").into_bytes());
    drop(conn);
    within(server).await.unwrap();
}

// ---------------------------------------------------------------------------
// Control frames and handlers

#[tokio::test]
async fn client_ping_is_answered_and_pong_handler_runs() {
    let (addr, _server) = spawn_server(Upgrader::new(), echo).await;
    let mut conn = client(addr).await;
    let (pong_handler, pongs) = recorder();
    conn.set_pong_handler(Some(pong_handler));
    conn.write_control(MessageType::Ping, "are you there?", None).await.unwrap();
    conn.write_text("after the ping").await.unwrap();
    // The server answered the ping before echoing the text; reading runs the handler.
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("after the ping"));
    assert_eq!(*pongs.lock().unwrap(), vec![b"are you there?".to_vec()]);
}

#[tokio::test]
async fn server_ping_is_answered_by_the_default_handler() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        let (pong_handler, pongs) = recorder();
        conn.set_pong_handler(Some(pong_handler));
        // Through a handle: `Conn` is not `Sync`, so the future of `Conn::write_control`
        // (a `&self` method) is not `Send` and cannot be awaited in a spawned task.
        conn.handle().write_control(MessageType::Ping, "from the server", None).await.unwrap();
        conn.write_text("ping sent").await.unwrap();
        let reply = conn.read_message().await.unwrap();
        let pongs = pongs.lock().unwrap().clone();
        (reply, pongs)
    })
    .await;
    let mut conn = client(addr).await;
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("ping sent"));
    conn.write_text("done").await.unwrap();
    let (reply, pongs) = within(server).await.unwrap();
    assert_eq!(reply.as_text(), Some("done"));
    assert_eq!(pongs, vec![b"from the server".to_vec()]);
}

#[tokio::test]
async fn custom_client_ping_handler() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        let (pong_handler, pongs) = recorder();
        conn.set_pong_handler(Some(pong_handler));
        conn.handle().write_control(MessageType::Ping, "42", None).await.unwrap();
        conn.write_text("go").await.unwrap();
        let reply = conn.read_message().await.unwrap();
        let pongs = pongs.lock().unwrap().clone();
        (reply, pongs)
    })
    .await;
    let mut conn = client(addr).await;
    let pings: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let record = pings.clone();
    conn.set_ping_handler(Some(Arc::new(move |payload, ctx| {
        record.lock().unwrap().push(payload.to_vec());
        let mut answer = b"custom-".to_vec();
        answer.extend_from_slice(payload);
        ctx.pong(answer);
        Ok(())
    })));
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("go"));
    conn.write_text("back").await.unwrap();
    let (reply, pongs) = within(server).await.unwrap();
    assert_eq!(reply.as_text(), Some("back"));
    assert_eq!(*pings.lock().unwrap(), vec![b"42".to_vec()]);
    assert_eq!(pongs, vec![b"custom-42".to_vec()]);
}

#[tokio::test]
async fn oversized_control_frames_are_refused() {
    let (addr, _server) = spawn_server(Upgrader::new(), echo).await;
    let mut conn = client(addr).await;
    let result = conn.write_control(MessageType::Ping, [0u8; 126], None).await;
    assert!(matches!(result, Err(Error::InvalidControlFrame)), "{result:?}");
    let result = conn.write_control(MessageType::Text, "not control", None).await;
    assert!(matches!(result, Err(Error::InvalidControlFrame)), "{result:?}");
    // The connection is still fine.
    conn.write_control(MessageType::Ping, [0u8; 125], None).await.unwrap();
    conn.write_text("still here").await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("still here"));
}

// ---------------------------------------------------------------------------
// Closing

#[tokio::test]
async fn close_handshake_started_by_the_client() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        let read = conn.read_message().await.unwrap_err();
        let write = conn.write_text("too late").await;
        (read, write)
    })
    .await;
    let mut conn = client(addr).await;
    let handle = conn.handle();
    let started = Instant::now();
    within(conn.close(CloseFrame::new(CloseCode::NORMAL, "bye"))).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "close waited for its timeout: {:?}", started.elapsed());
    assert!(handle.is_close_sent() && handle.is_close_received());

    let (read, write) = within(server).await.unwrap();
    assert_eq!(close_of(&read), (CloseCode::NORMAL, "bye".to_owned()));
    assert!(matches!(write, Err(Error::CloseSent)), "the server echoed the close: {write:?}");

    let after = conn.write_text("after close").await;
    assert!(matches!(after, Err(Error::CloseSent)), "{after:?}");
    assert!(within(conn.read_message()).await.is_err());
}

#[tokio::test]
async fn close_handshake_started_by_the_server() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        let started = Instant::now();
        let result = conn.close(CloseFrame::new(CloseCode::GOING_AWAY, "maintenance")).await;
        (result, started.elapsed())
    })
    .await;
    let mut conn = client(addr).await;
    let err = within(conn.read_message()).await.unwrap_err();
    assert_eq!(close_of(&err), (CloseCode::GOING_AWAY, "maintenance".to_owned()));
    assert!(err.is_close(&[CloseCode::GOING_AWAY]));
    assert!(!err.is_unexpected_close(&[CloseCode::NORMAL, CloseCode::GOING_AWAY]));
    // The error is permanent.
    let again = within(conn.read_message()).await.unwrap_err();
    assert_eq!(close_of(&again), (CloseCode::GOING_AWAY, "maintenance".to_owned()));

    let (result, took) = within(server).await.unwrap();
    result.unwrap();
    assert!(took < Duration::from_secs(2), "the client did not answer the close: {took:?}");
    let handle = conn.handle();
    assert!(handle.is_close_received() && handle.is_close_sent());
    assert!(matches!(conn.write_text("x").await, Err(Error::CloseSent)));
}

#[tokio::test]
async fn custom_close_handler_on_the_client() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        conn.handle()
            .write_control(MessageType::Close, CloseFrame::new(CloseCode(4000), "custom").encode(), None)
            .await
            .unwrap();
        conn.read_message().await.unwrap_err()
    })
    .await;
    let mut conn = client(addr).await;
    let seen: Arc<Mutex<Option<(u16, String)>>> = Arc::default();
    let record = seen.clone();
    conn.set_close_handler(Some(Arc::new(move |frame, ctx| {
        let frame = frame.unwrap();
        *record.lock().unwrap() = Some((frame.code.0, frame.reason.clone()));
        ctx.close(Some(CloseFrame::new(CloseCode(4001), "acknowledged")));
        Ok(())
    })));
    let err = within(conn.read_message()).await.unwrap_err();
    assert_eq!(close_of(&err), (CloseCode(4000), "custom".to_owned()));
    assert_eq!(*seen.lock().unwrap(), Some((4000, "custom".to_owned())));
    let server_saw = within(server).await.unwrap();
    assert_eq!(close_of(&server_saw), (CloseCode(4001), "acknowledged".to_owned()));
}

#[tokio::test]
async fn server_dropping_the_connection_is_abnormal_closure() {
    let (addr, server) = spawn_server(Upgrader::new(), |conn| async move {
        conn.handle().close_now().await;
    })
    .await;
    let mut conn = client(addr).await;
    within(server).await.unwrap();
    let err = within(conn.read_message()).await.unwrap_err();
    assert_eq!(close_of(&err).0, CloseCode::ABNORMAL_CLOSURE);
    assert!(err.is_unexpected_close(&[CloseCode::NORMAL]));
}

#[tokio::test]
async fn read_deadline_on_a_quiet_connection() {
    let (addr, _server) = spawn_server(Upgrader::new(), |conn| async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(conn);
    })
    .await;
    let mut conn = client(addr).await;
    conn.set_read_deadline(Some(Instant::now() + Duration::from_millis(150)));
    let started = Instant::now();
    let err = within(conn.read_message()).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

// ---------------------------------------------------------------------------
// Read limit

#[tokio::test]
async fn read_limit_set_on_the_dialer_closes_with_1009() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        conn.write_binary(vec![1u8; 1024]).await.unwrap();
        conn.write_binary(vec![2u8; 1025]).await.unwrap();
        conn.read_message().await.unwrap_err()
    })
    .await;
    let (mut conn, _) = within(dialer().read_limit(Some(1024)).connect(&ws_url(addr, "/"))).await.unwrap();
    assert_eq!(conn.reader().read_limit(), Some(1024));
    assert_eq!(within(conn.read_message()).await.unwrap().data.len(), 1024, "a message at the limit is fine");
    let err = within(conn.read_message()).await.unwrap_err();
    assert!(err.is_read_limit(), "{err:?}");
    assert!(within(conn.read_message()).await.unwrap_err().is_read_limit(), "the error is permanent");
    let server_saw = within(server).await.unwrap();
    assert_eq!(close_of(&server_saw).0, CloseCode::MESSAGE_TOO_BIG);
}

#[tokio::test]
async fn read_limit_set_on_the_connection() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        conn.write_text("x".repeat(100)).await.unwrap();
        conn.read_message().await.unwrap_err()
    })
    .await;
    let mut conn = client(addr).await;
    conn.set_read_limit(Some(99));
    let err = within(conn.read_message()).await.unwrap_err();
    assert!(err.is_read_limit(), "{err:?}");
    assert_eq!(close_of(&within(server).await.unwrap()).0, CloseCode::MESSAGE_TOO_BIG);
}

// ---------------------------------------------------------------------------
// Concurrency

#[tokio::test]
async fn split_halves_in_two_tasks() {
    let (addr, server) = spawn_server(Upgrader::new(), echo).await;
    let conn = client(addr).await;
    let handle = conn.handle();
    let (mut read, mut write) = conn.split();
    const N: usize = 200;

    let writer = tokio::spawn(async move {
        for i in 0..N {
            let payload = if i % 10 == 0 { vec![i as u8; 70_000] } else { format!("message {i}").into_bytes() };
            let kind = if i % 10 == 0 { MessageType::Binary } else { MessageType::Text };
            write.write_message(kind, payload).await.unwrap();
        }
        write
    });
    // A third task pings while the writer writes.
    let pinger = tokio::spawn(async move {
        for i in 0..20 {
            handle.write_control(MessageType::Ping, format!("p{i}"), None).await.unwrap();
            tokio::task::yield_now().await;
        }
    });
    let reader = tokio::spawn(async move {
        for i in 0..N {
            let msg = read.read_message().await.unwrap();
            if i % 10 == 0 {
                assert_eq!(msg.data.len(), 70_000);
                assert!(msg.data.iter().all(|&b| b == i as u8));
            } else {
                assert_eq!(msg.as_text(), Some(format!("message {i}").as_str()));
            }
        }
        read
    });
    let write = within(writer).await.unwrap();
    within(pinger).await.unwrap();
    let read = within(reader).await.unwrap();

    let mut conn = Conn::reunite(read, write).expect("halves of one connection");
    within(conn.close(CloseFrame::new(CloseCode::NORMAL, "all done"))).await.unwrap();
    let ended = within(server).await.unwrap();
    assert!(ended.is_close(&[CloseCode::NORMAL]), "{ended:?}");
}

#[tokio::test]
async fn halves_of_different_connections_do_not_reunite() {
    let (a, _sa) = spawn_server(Upgrader::new(), echo).await;
    let (b, _sb) = spawn_server(Upgrader::new(), echo).await;
    let (read_a, _write_a) = client(a).await.split();
    let (_read_b, write_b) = client(b).await.split();
    assert!(Conn::reunite(read_a, write_b).is_err());
}

#[tokio::test]
async fn handle_write_control_from_another_task() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        let (ping_handler, pings) = recorder();
        // Record, then answer as the default handler would.
        let default = silverback::conn::default_ping_handler();
        conn.set_ping_handler(Some(Arc::new(move |payload, ctx| {
            ping_handler(payload, ctx)?;
            default(payload, ctx)
        })));
        let ended = echo(conn).await;
        let pings = pings.lock().unwrap().clone();
        (ended, pings)
    })
    .await;
    let mut conn = client(addr).await;
    let (pong_handler, pongs) = recorder();
    conn.set_pong_handler(Some(pong_handler));

    let handle = conn.handle();
    let deadline = Some(Instant::now() + Duration::from_secs(2));
    within(tokio::spawn(async move { handle.write_control(MessageType::Ping, "from another task", deadline).await }))
        .await
        .unwrap()
        .unwrap();
    conn.write_text("sync").await.unwrap();
    assert_eq!(within(conn.read_message()).await.unwrap().as_text(), Some("sync"));
    assert_eq!(*pongs.lock().unwrap(), vec![b"from another task".to_vec()]);

    // Closing through a handle from another task ends the read blocked here.
    let handle = conn.handle();
    let closer = tokio::spawn(async move { handle.close(CloseFrame::new(CloseCode::NORMAL, "from the handle")).await });
    let err = within(conn.read_message()).await.unwrap_err();
    assert_eq!(close_of(&err).0, CloseCode::NORMAL, "the server echoed our close");
    within(closer).await.unwrap().unwrap();

    let (ended, pings) = within(server).await.unwrap();
    assert_eq!(pings, vec![b"from another task".to_vec()]);
    assert_eq!(close_of(&ended), (CloseCode::NORMAL, "from the handle".to_owned()));
}

#[tokio::test]
async fn into_inner_gives_back_the_client_stream() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let conn = Upgrader::new().accept(stream).await.unwrap();
        let mut raw: TcpStream = conn.into_inner().expect("no handle alive");
        let mut buf = [0u8; 5];
        raw.read_exact(&mut buf).await.unwrap();
        buf
    });
    let conn = client(addr).await;
    let handle = conn.handle();
    let conn = conn.into_inner().expect_err("a handle is alive");
    drop(handle);
    let mut stream = conn.into_inner().expect("no handle alive");
    assert!(stream.as_tcp().is_some());
    stream.write_all(b"plain").await.unwrap();
    assert_eq!(&within(server).await.unwrap(), b"plain");
}
