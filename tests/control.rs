//! Control frames: ping, pong and close handlers, control-frame writes and
//! their limits, writes after a close was sent.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use silverback::{CloseCode, CloseFrame, Error, MessageType, Upgrader};

#[tokio::test]
async fn default_ping_handler_answers_with_the_same_payload() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut raw = RawClient::connect(addr).await;
    for payload in [&b"abc"[..], b"", &[0xffu8; 125][..]] {
        raw.send_frame(true, PING, payload).await;
        let pong = raw.frame().await;
        assert!(pong.fin && !pong.masked);
        assert_eq!(pong.opcode, PONG);
        assert_eq!(pong.payload, payload);
    }
    // The connection still works for data.
    raw.send_frame(true, TEXT, b"after").await;
    assert_eq!(raw.message().await.1, b"after");
    raw.send_close(1000, "").await;
    assert_eq!(raw.read_close().await, Some((1000, String::new())));
    raw.expect_eof().await;
    assert!(within(server).await.unwrap().is_close(&[CloseCode::NORMAL]));
}

#[tokio::test]
async fn custom_ping_handler_replaces_the_default() {
    let seen = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let record = seen.clone();
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        conn.set_ping_handler(Some(Arc::new(move |payload: &[u8], ctx: &mut silverback::ControlContext<'_>| {
            record.lock().unwrap().push(payload.to_vec());
            let mut reply = b"custom-".to_vec();
            reply.extend_from_slice(payload);
            ctx.pong(reply);
            Ok(())
        })));
        let msg = conn.read_message().await.unwrap();
        // A handler that sends nothing: no pong at all.
        conn.set_ping_handler(Some(Arc::new(|_: &[u8], _: &mut silverback::ControlContext<'_>| Ok(()))));
        conn.write_message(msg.kind, &msg.data).await.unwrap();
        let msg = conn.read_message().await.unwrap();
        conn.write_message(msg.kind, &msg.data).await.unwrap();
        // Back to the default.
        conn.set_ping_handler(None);
        let msg = conn.read_message().await.unwrap();
        conn.write_message(msg.kind, &msg.data).await.unwrap();
        conn
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_frame(true, PING, b"x").await;
    raw.send_frame(true, TEXT, b"one").await;
    let pong = raw.frame().await;
    assert_eq!((pong.opcode, pong.payload.as_slice()), (PONG, &b"custom-x"[..]));
    assert_eq!(raw.message().await.1, b"one");

    raw.send_frame(true, PING, b"ignored").await;
    raw.send_frame(true, TEXT, b"two").await;
    // The next frame is the echo: the silent handler sent no pong first.
    assert_eq!(raw.message().await.1, b"two");

    raw.send_frame(true, PING, b"again").await;
    raw.send_frame(true, TEXT, b"three").await;
    let pong = raw.frame().await;
    assert_eq!((pong.opcode, pong.payload.as_slice()), (PONG, &b"again"[..]));
    assert_eq!(raw.message().await.1, b"three");

    drop(within(server).await.unwrap());
    assert_eq!(*seen.lock().unwrap(), vec![b"x".to_vec()]);
}

#[tokio::test]
async fn pong_handler_is_called_and_can_end_the_read_through_its_deadline() {
    let seen = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let record = seen.clone();
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        conn.set_pong_handler(Some(Arc::new(move |payload: &[u8], ctx: &mut silverback::ControlContext<'_>| {
            record.lock().unwrap().push(payload.to_vec());
            assert_eq!(ctx.read_deadline(), None);
            ctx.set_read_deadline(Some(Instant::now()));
            Ok(())
        })));
        let first = conn.read_message().await;
        let second = conn.read_message().await;
        (first, second, conn)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_frame(true, PONG, b"keepalive").await;
    let (first, second, _conn) = within(server).await.unwrap();
    assert!(matches!(first, Err(Error::Timeout)), "{first:?}");
    assert!(first.unwrap_err().is_timeout());
    assert!(matches!(second, Err(Error::Timeout)), "{second:?}");
    assert_eq!(*seen.lock().unwrap(), vec![b"keepalive".to_vec()]);
}

#[tokio::test]
async fn pong_handler_can_extend_the_read_deadline() {
    // The keepalive pattern: a short read deadline, a ping, and a pong
    // handler that pushes the deadline away when the pong comes back.
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        let initial = Instant::now() + Duration::from_millis(400);
        conn.set_read_deadline(Some(initial));
        conn.set_pong_handler(Some(Arc::new(move |payload: &[u8], ctx: &mut silverback::ControlContext<'_>| {
            assert_eq!(payload, b"hb");
            assert_eq!(ctx.read_deadline(), Some(initial));
            ctx.set_read_deadline(Some(Instant::now() + LIMIT));
            Ok(())
        })));
        conn.handle().ping("hb").await.unwrap();
        let msg = conn.read_message().await;
        (msg, conn)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    let ping = raw.frame().await;
    assert_eq!((ping.opcode, ping.payload.as_slice()), (PING, &b"hb"[..]));
    raw.send_frame(true, PONG, b"hb").await;
    // Outlive the initial deadline before sending data.
    tokio::time::sleep(Duration::from_millis(700)).await;
    raw.send_frame(true, TEXT, b"still here").await;
    let (msg, _conn) = within(server).await.unwrap();
    assert_eq!(msg.unwrap().data, &b"still here"[..]);
}

#[tokio::test]
async fn default_close_handler_echoes_the_code() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        let first = conn.read_message().await;
        let again = conn.read_message().await;
        (first, again, conn.handle().is_close_sent(), conn.handle().is_close_received())
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_close(4001, "bye now").await;
    let echo = raw.read_close().await;
    assert_eq!(echo, Some((4001, String::new())), "the default handler echoes the code with no reason");
    raw.expect_eof().await;
    let (first, again, sent, received) = within(server).await.unwrap();
    let close = first.unwrap_err();
    assert!(close.is_close(&[CloseCode(4001)]));
    assert_eq!(close.close_error().unwrap().reason, "bye now");
    assert!(again.unwrap_err().is_close(&[CloseCode(4001)]), "read errors are permanent");
    assert!(sent && received);
}

#[tokio::test]
async fn default_close_handler_answers_an_empty_close_with_an_empty_close() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_frame(true, CLOSE, b"").await;
    assert_eq!(raw.read_close().await, None);
    raw.expect_eof().await;
    let end = within(server).await.unwrap();
    assert!(end.is_close(&[CloseCode::NO_STATUS_RECEIVED]), "{end:?}");
}

#[tokio::test]
async fn custom_close_handler_replaces_the_echo() {
    let seen = Arc::new(Mutex::new(None::<Option<CloseFrame>>));
    let record = seen.clone();
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        conn.set_close_handler(Some(Arc::new(
            move |frame: Option<&CloseFrame>, ctx: &mut silverback::ControlContext<'_>| {
                *record.lock().unwrap() = Some(frame.cloned());
                ctx.close(Some(CloseFrame::new(CloseCode::NORMAL, "custom reply")));
                Ok(())
            },
        )));
        let end = conn.read_message().await;
        (end, conn)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_close(1001, "going").await;
    assert_eq!(raw.read_close().await, Some((1000, "custom reply".to_string())));
    raw.expect_eof().await;
    let (end, _conn) = within(server).await.unwrap();
    let end = end.unwrap_err();
    assert!(end.is_close(&[CloseCode::GOING_AWAY]), "{end:?}");
    assert_eq!(end.close_error().unwrap().reason, "going");
    assert_eq!(*seen.lock().unwrap(), Some(Some(CloseFrame::new(1001u16, "going"))));
}

#[tokio::test]
async fn control_frames_are_limited_to_125_bytes() {
    // `Conn::write_control` is awaited in the test's own task: its future is
    // not `Send` (see concurrency.rs, conn_futures_are_send).
    let (mut conn, mut raw) = connected(Upgrader::new()).await;
    let too_long = vec![b'x'; 126];
    let invalid = |r: silverback::Result<()>| matches!(r, Err(Error::InvalidControlFrame));
    assert!(invalid(conn.write_control(MessageType::Ping, &too_long, None).await));
    assert!(invalid(conn.handle().write_control(MessageType::Pong, &too_long, None).await));
    assert!(invalid(conn.handle().write_control(MessageType::Close, &too_long, None).await));
    assert!(invalid(conn.handle().ping(&too_long).await));
    assert!(invalid(conn.write_message(MessageType::Ping, &too_long).await));
    // A data type is not a control frame.
    assert!(invalid(conn.write_control(MessageType::Text, b"x", None).await));
    assert!(invalid(conn.handle().write_control(MessageType::Binary, b"x", None).await));
    // None of those was permanent: 125 bytes go out.
    within(conn.write_control(MessageType::Ping, vec![b'p'; 125], None)).await.unwrap();
    within(conn.write_control(MessageType::Pong, b"po", Some(Instant::now() + LIMIT))).await.unwrap();
    within(conn.write_message(MessageType::Ping, b"via write_message")).await.unwrap();
    within(conn.write_text("data")).await.unwrap();
    assert!(!conn.handle().is_close_sent());

    let ping = raw.frame().await;
    assert_eq!((ping.opcode, ping.payload.len()), (PING, 125));
    let pong = raw.frame().await;
    assert_eq!((pong.opcode, pong.payload.as_slice()), (PONG, &b"po"[..]));
    let ping = raw.frame().await;
    assert_eq!((ping.opcode, ping.payload.as_slice()), (PING, &b"via write_message"[..]));
    assert_eq!(raw.message().await.1, b"data");
}

#[tokio::test]
async fn writes_after_a_close_frame_fail_with_close_sent() {
    let (mut conn, mut raw) = connected(Upgrader::new()).await;
    let handle = conn.handle();
    assert!(!handle.is_close_sent());
    let close = CloseFrame::new(CloseCode::NORMAL, "bye").encode();
    within(conn.write_control(MessageType::Close, close, None)).await.unwrap();
    assert!(handle.is_close_sent());
    let mut errors = vec![
        within(conn.write_text("late")).await.unwrap_err(),
        within(conn.write_binary(b"late")).await.unwrap_err(),
        within(conn.write_message(MessageType::Pong, b"late")).await.unwrap_err(),
        within(conn.write_control(MessageType::Ping, b"late", None)).await.unwrap_err(),
        within(conn.write_control(MessageType::Close, b"", None)).await.unwrap_err(),
        within(handle.ping(b"late")).await.unwrap_err(),
        within(handle.write_control(MessageType::Pong, b"late", None)).await.unwrap_err(),
    ];
    errors.push(within(conn.next_writer(MessageType::Text)).await.unwrap_err());
    for e in errors {
        assert!(matches!(e, Error::CloseSent), "{e:?}");
    }

    assert_eq!(raw.read_close().await, Some((1000, "bye".to_string())));
    raw.send_close(1000, "").await;
    // The peer's answer completes the handshake.
    let end = within(conn.read_message()).await.unwrap_err();
    assert!(end.is_close(&[CloseCode::NORMAL]), "{end:?}");
    raw.expect_eof().await;
}

#[tokio::test]
async fn close_sent_through_write_message_also_stops_writes() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        conn.write_message(MessageType::Close, CloseFrame::new(CloseCode::GOING_AWAY, "").encode()).await.unwrap();
        let text = conn.write_text("late").await;
        let ping = conn.handle().ping("late").await;
        (text, ping, conn)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    assert_eq!(raw.read_close().await, Some((1001, String::new())));
    let (text, ping, conn) = within(server).await.unwrap();
    assert!(matches!(text, Err(Error::CloseSent)), "{text:?}");
    assert!(matches!(ping, Err(Error::CloseSent)), "{ping:?}");
    drop(conn);
    raw.expect_eof().await;
}

#[tokio::test]
async fn handler_replies_are_cut_to_125_bytes() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        conn.set_ping_handler(Some(Arc::new(|_: &[u8], ctx: &mut silverback::ControlContext<'_>| {
            ctx.pong(vec![b'l'; 300]);
            ctx.ping(vec![b'i'; 200]);
            Ok(())
        })));
        conn.read_message().await.map(|m| m.data)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_frame(true, PING, b"").await;
    let pong = raw.frame().await;
    assert_eq!((pong.opcode, pong.payload.len()), (PONG, 125));
    let ping = raw.frame().await;
    assert_eq!((ping.opcode, ping.payload.len()), (PING, 125));
    raw.send_frame(true, TEXT, b"end").await;
    assert_eq!(within(server).await.unwrap().unwrap(), &b"end"[..]);
}

#[tokio::test]
async fn pings_between_fragments_are_answered_while_streaming() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        let (_, mut reader) = conn.next_reader().await.unwrap();
        let mut data = Vec::new();
        while let Some(chunk) = reader.next_chunk().await.unwrap() {
            data.extend_from_slice(&chunk);
        }
        drop(reader);
        (data, conn)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_frame(false, BINARY, b"one ").await;
    raw.send_frame(true, PING, b"between").await;
    // The pong arrives while the message is still open.
    let pong = raw.frame().await;
    assert_eq!((pong.opcode, pong.payload.as_slice()), (PONG, &b"between"[..]));
    raw.send_frame(true, CONT, b"two").await;
    let (data, _conn) = within(server).await.unwrap();
    assert_eq!(data, b"one two");
}

/// A control write whose deadline has already passed fails at once with a
/// timeout and queues nothing; the connection is unharmed (gorilla's
/// `WriteControl`).
#[tokio::test]
async fn write_control_with_a_past_deadline_fails_at_once() {
    let (addr, accepted) = spawn_accept(Upgrader::new()).await;
    let mut raw = RawClient::connect(addr).await;
    let mut conn = within(accepted).await.unwrap().unwrap();
    let handle = conn.handle();
    let past = Instant::now() - Duration::from_millis(1);
    for kind in [MessageType::Ping, MessageType::Pong, MessageType::Close] {
        assert!(matches!(conn.write_control(kind, b"x", Some(past)).await, Err(Error::Timeout)), "{kind:?}");
        assert!(matches!(handle.write_control(kind, b"x", Some(past)).await, Err(Error::Timeout)), "{kind:?}");
    }
    assert!(matches!(handle.write_control(MessageType::Ping, b"now", Some(Instant::now())).await, Err(Error::Timeout)));
    // An invalid frame is still refused as such.
    assert!(matches!(
        handle.write_control(MessageType::Ping, [0u8; 126], Some(past)).await,
        Err(Error::InvalidControlFrame)
    ));
    // Nothing went out, no close was queued, and writes still work.
    assert!(!handle.is_close_sent());
    handle.write_control(MessageType::Ping, b"later", Some(Instant::now() + LIMIT)).await.unwrap();
    conn.write_text("data").await.unwrap();
    let first = raw.frame().await;
    assert_eq!((first.opcode, first.payload.as_slice()), (PING, &b"later"[..]));
    assert_eq!(raw.message().await.1, b"data");
}
