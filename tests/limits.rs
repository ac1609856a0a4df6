//! Read limits and read/write deadlines.

mod common;

use std::time::{Duration, Instant};

use common::*;
use silverback::proto::ProtocolError;
use silverback::{CloseCode, Error, MessageType, Upgrader};

/// Reads twice and returns both results, keeping the connection alive.
async fn two_reads(upgrader: Upgrader) -> (std::net::SocketAddr, tokio::task::JoinHandle<(Error, Error, impl Send)>) {
    spawn_server(upgrader, |mut conn| async move {
        let mut echoed = 0;
        let first = loop {
            match conn.read_message().await {
                Ok(msg) => {
                    conn.write_message(msg.kind, &msg.data).await.unwrap();
                    echoed += 1;
                }
                Err(e) => break e,
            }
        };
        let second = conn.read_message().await.unwrap_err();
        (first, second, (conn, echoed))
    })
    .await
}

#[tokio::test]
async fn over_limit_message_fails_with_1009_permanently() {
    let (addr, server) = two_reads(Upgrader::new().read_limit(Some(1000))).await;
    let mut raw = RawClient::connect(addr).await;
    // Exactly at the limit is fine.
    raw.send_frame(true, BINARY, &pattern(1000)).await;
    assert!(raw.message().await.1 == pattern(1000));
    raw.send_frame(true, BINARY, &pattern(1001)).await;
    assert_eq!(raw.read_close().await, Some((1009, "message too big".to_owned())));
    raw.expect_eof().await;
    let (first, second, _) = within(server).await.unwrap();
    assert!(first.is_read_limit(), "{first:?}");
    assert!(matches!(first, Error::Protocol(ref e) if e.close_code() == CloseCode::MESSAGE_TOO_BIG));
    assert!(second.is_read_limit(), "the error is permanent: {second:?}");
}

#[tokio::test]
async fn read_limit_counts_the_whole_fragmented_message() {
    let (addr, server) = two_reads(Upgrader::new().read_limit(Some(1000))).await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_frame(false, TEXT, &[b'a'; 600]).await;
    raw.send_frame(true, CONT, &[b'b'; 600]).await;
    assert_eq!(raw.read_close().await, Some((1009, "message too big".to_owned())));
    raw.expect_eof().await;
    let (first, second, _) = within(server).await.unwrap();
    assert!(matches!(first, Error::Protocol(ProtocolError::MessageTooBig { limit: 1000, .. })), "{first:?}");
    assert!(second.is_read_limit());
}

#[tokio::test]
async fn set_read_limit_applies_to_the_next_message() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        assert_eq!(conn.reader().read_limit(), Some(silverback::conn::DEFAULT_READ_LIMIT));
        let msg = conn.read_message().await.unwrap();
        conn.set_read_limit(Some(10));
        conn.write_message(msg.kind, &msg.data).await.unwrap();
        let err = conn.read_message().await.unwrap_err();
        (err, conn)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_frame(true, TEXT, &[b'x'; 100]).await;
    assert_eq!(raw.message().await.1.len(), 100);
    raw.send_frame(true, TEXT, &[b'x'; 11]).await;
    assert_eq!(raw.read_close().await, Some((1009, "message too big".to_owned())));
    let (err, _conn) = within(server).await.unwrap();
    assert!(err.is_read_limit(), "{err:?}");
}

#[tokio::test]
async fn no_read_limit_accepts_large_messages() {
    let (addr, server) = spawn_echo_server(Upgrader::new().read_limit(None)).await;
    let mut client = silverback_client(addr).await;
    client.set_read_limit(None);
    let data = pattern(3 << 20);
    within(client.write_binary(&data)).await.unwrap();
    assert!(within(client.read_message()).await.unwrap().data == data);
    drop(client);
    assert!(within(server).await.unwrap().is_close(&[CloseCode::ABNORMAL_CLOSURE]));
}

#[tokio::test]
async fn read_deadline_times_out_permanently() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        conn.set_read_deadline(Some(Instant::now() + Duration::from_millis(100)));
        assert!(conn.reader().read_deadline().is_some());
        let first = conn.read_message().await;
        // Data that arrives after the timeout does not undo it.
        conn.write_text("timed out").await.unwrap();
        let second = conn.read_message().await;
        (first, second, conn)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    assert_eq!(raw.message().await.1, b"timed out");
    raw.send_frame(true, TEXT, b"too late").await;
    let (first, second, _conn) = within(server).await.unwrap();
    let first = first.unwrap_err();
    assert!(matches!(first, Error::Timeout), "{first:?}");
    assert!(first.is_timeout());
    assert!(matches!(second, Err(Error::Timeout)), "{second:?}");
}

#[tokio::test]
async fn cleared_read_deadline_does_not_fire() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        conn.set_read_deadline(Some(Instant::now() + Duration::from_millis(100)));
        conn.set_read_deadline(None);
        conn.write_text("ready").await.unwrap();
        conn.read_message().await
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    assert_eq!(raw.message().await.1, b"ready");
    tokio::time::sleep(Duration::from_millis(300)).await;
    raw.send_frame(true, TEXT, b"late but fine").await;
    assert_eq!(within(server).await.unwrap().unwrap().data, &b"late but fine"[..]);
}

#[tokio::test]
async fn write_deadline_against_a_peer_that_never_reads() {
    // The peer completes the handshake and then never reads.
    let (mut conn, raw) = connected(Upgrader::new()).await;
    conn.set_write_deadline(Some(Instant::now() + Duration::from_millis(300)));
    assert!(conn.writer().write_deadline().is_some());
    let chunk = pattern(1 << 20);
    let mut sent = 0;
    let err = within(async {
        loop {
            match conn.write_binary(&chunk).await {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 1000, "the socket buffers never filled up");
        }
    })
    .await;
    assert!(matches!(err, Error::Timeout), "{err:?}");
    assert!(err.is_timeout());
    // Later writes fail too, even with the deadline cleared.
    conn.set_write_deadline(None);
    let later = within(conn.write_text("x")).await;
    assert!(matches!(later, Err(Error::Timeout)), "writes after a write timeout must fail: {later:?}");
    let control = within(conn.write_control(MessageType::Ping, b"", None)).await;
    assert!(control.is_err(), "{control:?}");
    let ping = within(conn.handle().ping(b"")).await;
    assert!(ping.is_err(), "{ping:?}");
    drop(raw);
}

#[tokio::test]
async fn dialer_bounds_the_response_header_count() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request).await;
        let many: String = (0..20).map(|i| format!("X-Filler-{i}: v\r\n")).collect();
        let response = format!("HTTP/1.1 101 Switching Protocols\r\n{many}\r\n");
        let _ = stream.write_all(response.as_bytes()).await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    });
    let dialer = silverback::Dialer::new().proxy(silverback::Proxy::None).max_response_headers(8);
    let err = dialer.connect(&format!("ws://{addr}/")).await.unwrap_err();
    assert!(matches!(err, silverback::Error::InvalidResponse(_)), "{err:?}");
}

/// A server with `upgrader` and a silverback client; returns the close code
/// the client sees after sending what `send` sends.
async fn close_code_after<F, Fut>(upgrader: Upgrader, dialer: silverback::Dialer, send: F) -> silverback::CloseCode
where
    F: FnOnce(silverback::Conn<tokio::net::TcpStream>) -> Fut,
    Fut: std::future::Future<Output = silverback::Conn<tokio::net::TcpStream>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = upgrader.accept(stream).await.unwrap();
        while conn.read_message().await.is_ok() {}
    });
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, _) = dialer.connect_on(stream, &format!("ws://{addr}/")).await.unwrap();
    let mut client = send(client).await;
    let err =
        tokio::time::timeout(std::time::Duration::from_secs(2), client.read_message()).await.unwrap().unwrap_err();
    err.close_error().map(|c| c.code).expect("a close frame from the server")
}

#[tokio::test]
async fn too_many_fragments_close_with_1008() {
    let upgrader = Upgrader::new().max_fragments(Some(5));
    // A 10-byte write buffer makes a streamed 200-byte message 20 fragments.
    let dialer = silverback::Dialer::new().proxy(silverback::Proxy::None).write_buffer_size(10);
    let code = close_code_after(upgrader, dialer, |mut client| async move {
        let mut writer = client.next_writer(silverback::MessageType::Binary).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut writer, &[1u8; 200]).await.unwrap();
        let _ = writer.close().await;
        client
    })
    .await;
    assert_eq!(code, silverback::CloseCode::POLICY_VIOLATION);
}

#[tokio::test]
async fn a_frame_over_the_frame_size_limit_closes_with_1009() {
    let upgrader = Upgrader::new().max_frame_size(Some(100));
    let dialer = silverback::Dialer::new().proxy(silverback::Proxy::None);
    let code = close_code_after(upgrader, dialer, |mut client| async move {
        client.write_message(silverback::MessageType::Binary, [1u8; 100]).await.unwrap();
        client.write_message(silverback::MessageType::Binary, [1u8; 101]).await.unwrap();
        client
    })
    .await;
    assert_eq!(code, silverback::CloseCode::MESSAGE_TOO_BIG);
}
