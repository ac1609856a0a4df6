//! `join_messages`: successive messages as one `AsyncRead`, read as lines.

mod common;

use common::*;
use futures_util::SinkExt;
use silverback::{join_messages, CloseCode, CloseFrame, MessageType, Upgrader};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as TCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as TCloseFrame;
use tokio_tungstenite::tungstenite::Message as TMessage;

#[tokio::test]
async fn messages_become_lines_until_a_normal_close() {
    let (addr, server) = spawn_server(Upgrader::new(), |conn| async move {
        let mut lines = BufReader::new(join_messages(conn, b"\n")).lines();
        let mut got = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            got.push(line);
        }
        got
    })
    .await;
    let mut ws = tungstenite_client(addr).await;
    for text in ["alpha", "", "beta gamma", "ünïcödé ✓"] {
        ws.send(TMessage::text(text)).await.unwrap();
    }
    // Binary messages join the stream too.
    ws.send(TMessage::binary(b"bytes".to_vec())).await.unwrap();
    ws.close(None).await.unwrap();
    let got = within(server).await.unwrap();
    assert_eq!(got, ["alpha", "", "beta gamma", "ünïcödé ✓", "bytes"]);
}

#[tokio::test]
async fn fragmented_messages_and_a_longer_terminator() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        let mut joined = String::new();
        join_messages(&mut conn, b"\r\n").read_to_string(&mut joined).await.unwrap();
        // The connection is still there for its close state.
        (joined, conn.close_error().map(|c| c.code))
    })
    .await;
    let mut config = silverback::Config::default();
    config.write_buffer_size = 7;
    let mut client = silverback_client_with(addr, config).await;
    // Streamed: several fragments of 7 bytes each.
    let mut writer = client.next_writer(MessageType::Text).await.unwrap();
    writer.write_all(b"a message in many fragments").await.unwrap();
    writer.close().await.unwrap();
    client.write_text("two\nlines").await.unwrap();
    client.write_message(MessageType::Ping, b"ping between").await.unwrap();
    client.write_text("last").await.unwrap();
    client.close(CloseFrame::new(CloseCode::GOING_AWAY, "")).await.unwrap();
    let (joined, code) = within(server).await.unwrap();
    assert_eq!(joined, "a message in many fragments\r\ntwo\nlines\r\nlast\r\n");
    assert_eq!(code, Some(CloseCode::GOING_AWAY));
}

#[tokio::test]
async fn other_closes_are_errors() {
    let (addr, server) = spawn_server(Upgrader::new(), |conn| async move {
        let (read, _write) = conn.split();
        let mut lines = BufReader::new(join_messages(read, b"\n")).lines();
        let first = lines.next_line().await.unwrap();
        (first, lines.next_line().await)
    })
    .await;
    let mut ws = tungstenite_client(addr).await;
    ws.send(TMessage::text("one")).await.unwrap();
    ws.close(Some(TCloseFrame { code: TCloseCode::Error, reason: "broken".into() })).await.unwrap();
    let (first, second) = within(server).await.unwrap();
    assert_eq!(first.as_deref(), Some("one"));
    let e = second.unwrap_err();
    assert!(e.to_string().contains("1011"), "{e}");
}

#[tokio::test]
async fn a_connection_that_ends_without_a_close_is_an_error() {
    let (addr, server) = spawn_server(Upgrader::new(), |conn| async move {
        let mut joined = Vec::new();
        let result = join_messages(conn, b"|").read_to_end(&mut joined).await;
        (joined, result)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_frame(true, TEXT, b"x").await;
    drop(raw);
    let (joined, result) = within(server).await.unwrap();
    assert_eq!(joined, b"x|");
    assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
}
