//! Data messages over loopback TCP: echo with independent and silverback
//! peers, fragmented input, streamed reading and writing, write buffer pools.

mod common;

use std::sync::Arc;

use common::*;
use futures_util::{SinkExt, StreamExt};
use silverback::{CloseCode, CloseFrame, MessageType, SimpleBufferPool, Upgrader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test]
async fn echo_with_tungstenite_small_empty_and_one_mib() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut ws = tungstenite_client(addr).await;
    let cases = vec![
        WsMessage::text("hello, wörld"),
        WsMessage::text(""),
        WsMessage::binary(vec![0u8, 1, 2, 255]),
        WsMessage::binary(Vec::new()),
        WsMessage::binary(pattern(1 << 20)),
        WsMessage::text(text_of(1 << 20)),
    ];
    for msg in cases {
        within(ws.send(msg.clone())).await.unwrap();
        let echoed = within(ws.next()).await.expect("stream ended").unwrap();
        assert_eq!(echoed, msg);
    }
    within(ws.close(None)).await.unwrap();
    let end = within(server).await.unwrap();
    assert!(end.is_close(&[CloseCode::NO_STATUS_RECEIVED]), "{end:?}");
}

#[tokio::test]
async fn echo_with_a_silverback_client() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut client = silverback_client(addr).await;
    assert_eq!(client.role(), silverback::Role::Client);
    let cases: Vec<(MessageType, Vec<u8>)> = vec![
        (MessageType::Text, b"hi".to_vec()),
        (MessageType::Text, Vec::new()),
        (MessageType::Binary, Vec::new()),
        (MessageType::Binary, vec![7; 125]),
        (MessageType::Binary, vec![8; 126]),
        (MessageType::Binary, vec![9; 65536]),
        (MessageType::Binary, pattern(1 << 20)),
        (MessageType::Text, text_of(1 << 20).into_bytes()),
    ];
    for (kind, data) in cases {
        within(client.write_message(kind, &data)).await.unwrap();
        let msg = within(client.read_message()).await.unwrap();
        assert_eq!(msg.kind, kind);
        assert_eq!(msg.data.len(), data.len());
        assert!(msg.data == data, "payload of {} bytes differs", data.len());
    }
    within(client.close(CloseFrame::new(CloseCode::NORMAL, "done"))).await.unwrap();
    let end = within(server).await.unwrap();
    let close = end.close_error().expect("server should end with a close");
    assert_eq!(close.code, CloseCode::NORMAL);
    assert_eq!(close.reason, "done");
}

#[tokio::test]
async fn fragmented_messages_from_the_peer_are_reassembled() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut raw = RawClient::connect(addr).await;

    // Text in three fragments, with a ping and an empty continuation between
    // them, and a two-byte character split across a fragment boundary.
    raw.send_frame(false, TEXT, b"H\xc3").await;
    raw.send_frame(true, PING, b"mid").await;
    raw.send_frame(false, CONT, b"").await;
    raw.send_frame(false, CONT, b"\xa9l").await;
    raw.send_frame(true, CONT, b"lo").await;
    let pong = raw.frame().await;
    assert_eq!((pong.opcode, pong.payload.as_slice()), (PONG, &b"mid"[..]));
    let (opcode, data, _) = raw.message().await;
    assert_eq!(opcode, TEXT);
    assert_eq!(String::from_utf8(data).unwrap(), "Héllo");

    // Binary in fragments of 100 000 bytes.
    let big = pattern(300_000);
    let chunks: Vec<&[u8]> = big.chunks(100_000).collect();
    raw.send_frame(false, BINARY, chunks[0]).await;
    raw.send_frame(false, CONT, chunks[1]).await;
    raw.send_frame(true, CONT, chunks[2]).await;
    let (opcode, data, _) = raw.message().await;
    assert_eq!(opcode, BINARY);
    assert!(data == big);

    raw.send_close(1000, "").await;
    assert_eq!(raw.read_close().await, Some((1000, String::new())));
    raw.expect_eof().await;
    assert!(within(server).await.unwrap().is_close(&[CloseCode::NORMAL]));
}

#[tokio::test]
async fn next_reader_streams_a_large_message_and_skips_unread_rest() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        // 1. A 3 MiB message, read chunk by chunk.
        let (kind, mut reader) = conn.next_reader().await.unwrap();
        assert_eq!(kind, MessageType::Binary);
        let mut chunks = 0;
        let mut first = Vec::new();
        while let Some(chunk) = reader.next_chunk().await.unwrap() {
            chunks += 1;
            first.extend_from_slice(&chunk);
        }
        assert_eq!(reader.next_chunk().await.unwrap(), None);
        drop(reader);
        // 2. A text message through AsyncRead with a small buffer.
        let (kind, mut reader) = conn.next_reader().await.unwrap();
        assert_eq!(kind, MessageType::Text);
        let mut second = Vec::new();
        let mut small = [0u8; 1000];
        loop {
            let n = reader.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            second.extend_from_slice(&small[..n]);
        }
        drop(reader);
        // 3. A message read only in part: the next reader starts at message 4.
        let (_, mut reader) = conn.next_reader().await.unwrap();
        let mut head = [0u8; 10];
        reader.read_exact(&mut head).await.unwrap();
        drop(reader);
        let (kind, mut reader) = conn.next_reader().await.unwrap();
        let mut fourth = Vec::new();
        reader.read_to_end(&mut fourth).await.unwrap();
        drop(reader);
        conn.write_text("done").await.unwrap();
        (chunks, first, second, head, kind, fourth)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    let first = pattern(3 << 20);
    let parts: Vec<&[u8]> = first.chunks(1 << 20).collect();
    raw.send_frame(false, BINARY, parts[0]).await;
    raw.send_frame(false, CONT, parts[1]).await;
    raw.send_frame(true, CONT, parts[2]).await;
    let second = text_of(50_000);
    raw.send_frame(true, TEXT, second.as_bytes()).await;
    raw.send_frame(true, BINARY, &pattern(200_000)).await;
    raw.send_frame(true, BINARY, b"fourth message").await;
    let (_, done, _) = raw.message().await;
    assert_eq!(done, b"done");

    let (chunks, got_first, got_second, head, kind, fourth) = within(server).await.unwrap();
    assert!(chunks > 1, "a 3 MiB message should arrive in several chunks, got {chunks}");
    assert!(got_first == first);
    assert_eq!(String::from_utf8(got_second).unwrap(), second);
    assert_eq!(head.as_slice(), &pattern(10)[..]);
    assert_eq!(kind, MessageType::Binary);
    assert_eq!(fourth, b"fourth message");
}

#[tokio::test]
async fn next_writer_sends_several_fragments() {
    let data = pattern(5000);
    let sent = data.clone();
    let (addr, server) = spawn_server(Upgrader::new().write_buffer_size(1024), |mut conn| async move {
        let mut writer = conn.next_writer(MessageType::Binary).await.unwrap();
        writer.write_all(&sent).await.unwrap();
        writer.close().await.unwrap();
        conn
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    let (opcode, got, frames) = raw.message().await;
    assert_eq!(opcode, BINARY);
    assert!(frames >= 2, "expected several fragments, got {frames}");
    assert!(got == data);
    drop(within(server).await.unwrap());
}

#[tokio::test]
async fn next_writer_text_is_intact_for_tungstenite() {
    let text = text_of(20_000);
    let sent = text.clone();
    let (addr, server) = spawn_server(Upgrader::new().write_buffer_size(512), |mut conn| async move {
        let mut writer = conn.next_writer(MessageType::Text).await.unwrap();
        // Odd-sized pieces, so characters are split across fragments.
        for piece in sent.as_bytes().chunks(333) {
            writer.write_all(piece).await.unwrap();
        }
        writer.close().await.unwrap();
        conn.read_message().await
    })
    .await;
    let mut ws = tungstenite_client(addr).await;
    let msg = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(msg, WsMessage::text(text));
    within(ws.close(None)).await.unwrap();
    assert!(within(server).await.unwrap().unwrap_err().is_close(&[CloseCode::NO_STATUS_RECEIVED]));
}

#[tokio::test]
async fn message_writer_flush_sends_a_fragment_without_ending_the_message() {
    let (flushed_tx, flushed_rx) = oneshot::channel::<()>();
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        let mut writer = conn.next_writer(MessageType::Text).await.unwrap();
        writer.write_all(b"ab").await.unwrap();
        writer.flush().await.unwrap();
        flushed_rx.await.unwrap();
        writer.write_all(b"cd").await.unwrap();
        writer.close().await.unwrap();
        conn
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    let first = raw.frame().await;
    assert_eq!((first.fin, first.opcode, first.payload.as_slice()), (false, TEXT, &b"ab"[..]));
    flushed_tx.send(()).unwrap();
    let last = raw.frame().await;
    assert_eq!((last.fin, last.opcode, last.payload.as_slice()), (true, CONT, &b"cd"[..]));
    drop(within(server).await.unwrap());
}

#[tokio::test]
async fn dropped_writer_is_completed_before_the_next_message() {
    let first = text_of(3000);
    let sent = first.clone();
    let (addr, server) = spawn_server(Upgrader::new().write_buffer_size(1024), |mut conn| async move {
        {
            // Dropped unfinished at the end of this block.
            let mut writer = conn.next_writer(MessageType::Text).await.unwrap();
            writer.write_all(sent.as_bytes()).await.unwrap();
        }
        conn.write_text("second").await.unwrap();
        {
            let mut writer = conn.next_writer(MessageType::Binary).await.unwrap();
            writer.write_all(b"third").await.unwrap();
        }
        let mut writer = conn.next_writer(MessageType::Binary).await.unwrap();
        writer.write_all(b"fourth").await.unwrap();
        writer.close().await.unwrap();
        conn
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    let (opcode, data, frames) = raw.message().await;
    assert_eq!(opcode, TEXT);
    assert!(frames >= 2, "the first message should have been fragmented");
    assert_eq!(String::from_utf8(data).unwrap(), first);
    let (opcode, data, _) = raw.message().await;
    assert_eq!((opcode, data.as_slice()), (TEXT, &b"second"[..]));
    let (opcode, data, _) = raw.message().await;
    assert_eq!((opcode, data.as_slice()), (BINARY, &b"third"[..]));
    let (opcode, data, _) = raw.message().await;
    assert_eq!((opcode, data.as_slice()), (BINARY, &b"fourth"[..]));
    drop(within(server).await.unwrap());
}

#[tokio::test]
async fn write_buffer_pool_gets_the_buffer_back_after_a_write() {
    let pool = Arc::new(SimpleBufferPool::new(4));
    let server_pool = pool.clone();
    let (addr, server) = spawn_server(Upgrader::new().write_buffer_pool(pool.clone()), |mut conn| async move {
        assert_eq!(server_pool.idle(), 0, "no buffer is taken before the first write");
        conn.write_text("pooled").await.unwrap();
        let after_small = server_pool.idle();
        conn.write_binary(pattern(100_000)).await.unwrap();
        let after_large = server_pool.idle();
        let mut writer = conn.next_writer(MessageType::Binary).await.unwrap();
        writer.write_all(&pattern(10_000)).await.unwrap();
        writer.close().await.unwrap();
        (after_small, after_large, server_pool.idle(), conn)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    assert_eq!(raw.message().await.1, b"pooled");
    assert!(raw.message().await.1 == pattern(100_000));
    assert!(raw.message().await.1 == pattern(10_000));
    let (after_small, after_large, after_stream, _conn) = within(server).await.unwrap();
    assert!(after_small > 0, "the buffer should be back in the pool");
    assert!(after_large > 0);
    assert!(after_stream > 0);
    assert!(pool.idle() <= 4);
}

#[tokio::test]
async fn socket_addresses_and_stream_access() {
    let (addr, server) = spawn_server(Upgrader::new(), |conn| async move {
        let local = conn.local_addr().unwrap();
        let remote = conn.remote_addr().unwrap();
        let via_ref = conn.with_stream(|s| s.peer_addr()).unwrap();
        assert_eq!(conn.role(), silverback::Role::Server);
        (local, remote, via_ref, conn.into_inner().is_ok())
    })
    .await;
    let raw = RawClient::connect(addr).await;
    let (local, remote, via_ref, unwrapped) = within(server).await.unwrap();
    assert_eq!(local, addr);
    assert_eq!(remote, raw.stream.local_addr().unwrap());
    assert_eq!(via_ref, remote);
    assert!(unwrapped, "into_inner should succeed without handles");
}

#[tokio::test]
async fn into_inner_needs_every_handle_gone() {
    let (conn, _raw) = connected(Upgrader::new()).await;
    let handle = conn.handle();
    let conn = match conn.into_inner() {
        Ok(_) => panic!("a live handle must keep the connection together"),
        Err(conn) => conn,
    };
    drop(handle);
    let stream = conn.into_inner().expect("no handle left");
    assert!(stream.peer_addr().is_ok());
}

#[tokio::test]
async fn message_writer_close_after_a_close_was_sent_is_close_sent() {
    // A close frame goes out (from a handle) while a streamed message is open:
    // finishing the message is a write after close, and fails as such.
    let (mut conn, mut raw) = connected(Upgrader::new()).await;
    let handle = conn.handle();
    let mut writer = within(conn.next_writer(MessageType::Text)).await.unwrap();
    writer.write_all(b"unfinished").await.unwrap();
    within(handle.write_control(silverback::MessageType::Close, CloseFrame::new(CloseCode::NORMAL, "").encode(), None))
        .await
        .unwrap();
    let finished = within(writer.close()).await;
    assert!(matches!(finished, Err(silverback::Error::CloseSent)), "MessageWriter::close: {finished:?}");
    let later = within(conn.write_text("later")).await;
    assert!(matches!(later, Err(silverback::Error::CloseSent)), "write_text after it: {later:?}");
    assert_eq!(raw.read_close().await, Some((1000, String::new())));
}

#[tokio::test]
async fn dropped_writer_completion_after_a_close_was_sent_is_close_sent() {
    let (mut conn, mut raw) = connected(Upgrader::new()).await;
    {
        // Dropped unfinished at the end of this block.
        let mut writer = within(conn.next_writer(MessageType::Binary)).await.unwrap();
        writer.write_all(b"abandoned").await.unwrap();
    }
    within(conn.handle().write_control(silverback::MessageType::Close, b"", None)).await.unwrap();
    let next = within(conn.write_binary(b"next")).await;
    assert!(matches!(next, Err(silverback::Error::CloseSent)), "write_binary: {next:?}");
    let again = within(conn.write_binary(b"again")).await;
    assert!(matches!(again, Err(silverback::Error::CloseSent)), "second write_binary: {again:?}");
    assert_eq!(raw.read_close().await, None);
}

#[tokio::test]
async fn message_writer_write_timeout_is_permanent_and_a_timeout() {
    // The peer never reads, so the streamed message blocks and the deadline passes.
    let (mut conn, _raw) = connected(Upgrader::new().write_buffer_size(1 << 20)).await;
    conn.set_write_deadline(Some(std::time::Instant::now() + std::time::Duration::from_millis(300)));
    let chunk = pattern(1 << 20);
    let mut writer = within(conn.next_writer(MessageType::Binary)).await.unwrap();
    let failed = within(async {
        for _ in 0..1000 {
            if let Err(e) = writer.write_all(&chunk).await {
                return e;
            }
        }
        panic!("the socket buffers never filled up");
    })
    .await;
    assert_eq!(failed.kind(), std::io::ErrorKind::TimedOut, "{failed:?}");
    let finished = within(writer.close()).await;
    assert!(finished.as_ref().is_err_and(silverback::Error::is_timeout), "MessageWriter::close: {finished:?}");
    let later = within(conn.write_text("later")).await;
    assert!(later.as_ref().is_err_and(silverback::Error::is_timeout), "write_text: {later:?}");
    let next = within(conn.next_writer(MessageType::Text)).await.map(|_| ());
    assert!(next.as_ref().is_err_and(silverback::Error::is_timeout), "next_writer: {next:?}");
}
