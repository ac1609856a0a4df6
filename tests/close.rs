//! The closing handshake, from either side, and abrupt ends.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use silverback::{CloseCode, CloseFrame, Error, Upgrader};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsCloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test]
async fn close_initiated_by_us_raw_peer() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        let result = conn.close(CloseFrame::new(CloseCode::NORMAL, "bye")).await;
        let read = conn.read_message().await;
        let write = conn.write_text("late").await;
        (result, read, write, conn)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    assert_eq!(raw.read_close().await, Some((1000, "bye".to_string())));
    raw.send_close(1000, "ack").await;
    raw.expect_eof().await;
    let (result, read, write, _conn) = within(server).await.unwrap();
    result.unwrap();
    let read = read.unwrap_err();
    assert!(read.is_close(&[CloseCode::NORMAL]), "{read:?}");
    assert_eq!(read.close_error().unwrap().reason, "ack");
    assert!(matches!(write, Err(Error::CloseSent)), "{write:?}");
}

#[tokio::test]
async fn close_initiated_by_us_tungstenite_peer() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        conn.close(CloseFrame::new(CloseCode::GOING_AWAY, "shutting down")).await
    })
    .await;
    let mut ws = tungstenite_client(addr).await;
    let msg = within(ws.next()).await.unwrap().unwrap();
    match msg {
        WsMessage::Close(Some(frame)) => {
            assert_eq!(frame.code, WsCloseCode::Away);
            assert_eq!(frame.reason.as_str(), "shutting down");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    // tungstenite answers the close itself; the stream then ends.
    let rest = within(ws.next()).await;
    assert!(rest.is_none() || matches!(rest, Some(Err(_))), "{rest:?}");
    within(server).await.unwrap().unwrap();
}

#[tokio::test]
async fn close_initiated_by_the_peer() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_frame(true, TEXT, b"hi").await;
    assert_eq!(raw.message().await.1, b"hi");
    raw.send_close(1001, "going").await;
    assert_eq!(raw.read_close().await, Some((1001, String::new())));
    raw.expect_eof().await;
    let end = within(server).await.unwrap();
    match end {
        Error::Closed(close) => {
            assert_eq!(close.code, CloseCode::GOING_AWAY);
            assert_eq!(close.reason, "going");
        }
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[tokio::test]
async fn close_initiated_by_a_tungstenite_peer() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut ws = tungstenite_client(addr).await;
    within(ws.send(WsMessage::text("x"))).await.unwrap();
    assert_eq!(within(ws.next()).await.unwrap().unwrap(), WsMessage::text("x"));
    within(ws.close(Some(WsCloseFrame { code: WsCloseCode::Library(4000), reason: "app done".into() }))).await.unwrap();
    let echo = within(ws.next()).await.unwrap().unwrap();
    match echo {
        WsMessage::Close(Some(frame)) => assert_eq!(frame.code, WsCloseCode::Library(4000)),
        other => panic!("expected the close echo, got {other:?}"),
    }
    let end = within(server).await.unwrap();
    assert!(end.is_close(&[CloseCode(4000)]), "{end:?}");
    assert_eq!(end.close_error().unwrap().reason, "app done");
}

#[tokio::test]
async fn close_against_a_silent_peer_returns_after_the_close_timeout() {
    let (addr, server) =
        spawn_server(Upgrader::new().close_timeout(Duration::from_millis(300)), |mut conn| async move {
            let result = conn.close(CloseFrame::new(CloseCode::NORMAL, "")).await;
            let write = conn.write_binary(b"late").await;
            (result, write, conn)
        })
        .await;
    let mut raw = RawClient::connect(addr).await;
    assert_eq!(raw.read_close().await, Some((1000, String::new())));
    // No answer: the server gives up and shuts the socket down by itself.
    raw.expect_eof().await;
    let (result, write, _conn) = within(server).await.unwrap();
    result.unwrap();
    assert!(matches!(write, Err(Error::CloseSent)), "{write:?}");
}

#[tokio::test]
async fn close_now_ends_the_connection_without_a_close_frame() {
    // Awaited in the test's own task: the `close_now` future is not `Send`
    // (see concurrency.rs, conn_futures_are_send).
    let (mut conn, mut raw) = connected(Upgrader::new()).await;
    within(conn.close_now()).await;
    raw.expect_eof().await;
    assert!(within(conn.write_text("x")).await.is_err());
    assert!(!conn.handle().is_close_sent());
}

#[tokio::test]
async fn handle_close_now_ends_the_connection() {
    let (conn, mut raw) = connected(Upgrader::new()).await;
    let handle = conn.handle();
    let reader = tokio::spawn(async move {
        let mut conn = conn;
        let end = conn.read_message().await;
        (end, conn)
    });
    within(handle.close_now()).await;
    raw.expect_eof().await;
    // The peer's end of the stream ends the read.
    drop(raw);
    let (end, _conn) = within(reader).await.unwrap();
    assert!(end.is_err());
}

#[tokio::test]
async fn silverback_to_silverback_close_handshake() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut client = silverback_client(addr).await;
    within(client.write_text("ping")).await.unwrap();
    assert_eq!(within(client.read_message()).await.unwrap().data, &b"ping"[..]);
    within(client.close(CloseFrame::new(3001u16, "client done"))).await.unwrap();
    let end = within(server).await.unwrap();
    assert!(end.is_close(&[CloseCode(3001)]), "{end:?}");
    assert_eq!(end.close_error().unwrap().reason, "client done");
    let after = within(client.read_message()).await.unwrap_err();
    assert!(after.is_close(&[CloseCode(3001)]), "the client saw the echo: {after:?}");
}

#[tokio::test]
async fn eof_without_close_frame_is_abnormal_closure() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let raw = RawClient::connect(addr).await;
    drop(raw);
    let end = within(server).await.unwrap();
    assert!(end.is_close(&[CloseCode::ABNORMAL_CLOSURE]), "{end:?}");
    assert!(end.is_unexpected_close(&[CloseCode::NORMAL]));
}

#[tokio::test]
async fn close_reason_is_cut_to_fit_a_control_frame() {
    let (addr, server) =
        spawn_server(Upgrader::new().close_timeout(Duration::from_millis(300)), |mut conn| async move {
            conn.close(CloseFrame::new(CloseCode::NORMAL, "é".repeat(100))).await
        })
        .await;
    let mut raw = RawClient::connect(addr).await;
    let frame = raw.frame().await;
    assert_eq!(frame.opcode, CLOSE);
    assert!(frame.payload.len() <= 125, "{} bytes", frame.payload.len());
    let (code, reason) = frame.close().unwrap();
    assert_eq!(code, 1000);
    assert!("é".repeat(100).starts_with(&reason) && !reason.is_empty());
    raw.send_close(1000, "").await;
    raw.expect_eof().await;
    within(server).await.unwrap().unwrap();
}

#[tokio::test]
async fn close_discards_data_that_arrives_before_the_answer() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        let result = conn.close(CloseFrame::new(CloseCode::NORMAL, "")).await;
        let after = conn.read_message().await;
        (result, after, conn)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    assert_eq!(raw.read_close().await, Some((1000, String::new())));
    raw.send_frame(true, TEXT, b"in flight").await;
    raw.send_frame(true, PING, b"in flight").await;
    raw.send_close(1000, "answer").await;
    // Whatever the server sends now (no pong is required), it ends with EOF.
    while let Some(frame) = raw.read_frame().await {
        assert_ne!(frame.opcode, TEXT, "{frame:?}");
    }
    let (result, after, _conn) = within(server).await.unwrap();
    result.unwrap();
    let after = after.unwrap_err();
    assert!(after.is_close(&[CloseCode::NORMAL]), "{after:?}");
    assert_eq!(after.close_error().unwrap().reason, "answer");
}

#[tokio::test]
async fn eof_inside_a_frame_is_abnormal_closure() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut raw = RawClient::connect(addr).await;
    let frame = masked(true, BINARY, &pattern(1000));
    raw.send(&frame[..500]).await;
    raw.stream.shutdown().await.unwrap();
    let end = within(server).await.unwrap();
    assert!(end.is_close(&[CloseCode::ABNORMAL_CLOSURE]), "{end:?}");
}

#[tokio::test]
async fn close_in_the_middle_of_a_fragmented_message() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_frame(false, TEXT, b"half a mess").await;
    raw.send_close(1001, "").await;
    assert_eq!(raw.read_close().await, Some((1001, String::new())));
    raw.expect_eof().await;
    assert!(within(server).await.unwrap().is_close(&[CloseCode::GOING_AWAY]));
}
