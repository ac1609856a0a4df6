//! Protocol violations written as raw bytes: each fails the connection with
//! the close code RFC 6455 calls for, and the read returns `Error::Protocol`.

mod common;

use common::*;
use silverback::proto::ProtocolError;
use silverback::{CloseCode, Error, Upgrader};

/// Sends `bytes` after the handshake and checks that the server answers with a
/// close frame carrying `code`, then ends the connection, and that its read
/// fails with a protocol error accepted by `expected`, permanently.
async fn violation(bytes: Vec<u8>, code: u16, expected: fn(&ProtocolError) -> bool) {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        let first = loop {
            match conn.read_message().await {
                Ok(msg) => conn.write_message(msg.kind, &msg.data).await.unwrap(),
                Err(e) => break e,
            }
        };
        let second = conn.read_message().await.unwrap_err();
        // Keep the connection open until the client has read everything.
        (first, second, conn)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    raw.send(&bytes).await;
    // Echoes of valid messages sent before the violation come first.
    let close = loop {
        let frame = raw.frame().await;
        if frame.opcode != TEXT && frame.opcode != BINARY {
            break frame;
        }
    };
    assert_eq!(close.opcode, CLOSE, "expected a close frame, got {close:?}");
    let (got, _reason) = close.close().expect("the close frame must carry a code");
    assert_eq!(got, code);
    raw.expect_eof().await;
    let (first, second, _conn) = within(server).await.unwrap();
    match &first {
        Error::Protocol(e) => {
            assert!(expected(e), "unexpected violation {e:?}");
            assert_eq!(e.close_code(), CloseCode(code));
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(matches!((&first, &second), (Error::Protocol(a), Error::Protocol(b)) if a == b), "{second:?}");
}

fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

#[tokio::test]
async fn unmasked_client_frame_is_1002() {
    violation(frame_b0(0x81, b"hello", None), 1002, |e| *e == ProtocolError::UnmaskedFrame).await;
}

#[tokio::test]
async fn reserved_data_opcode_is_1002() {
    violation(frame_b0(0x83, b"x", Some(MASK)), 1002, |e| *e == ProtocolError::ReservedOpcode(3)).await;
}

#[tokio::test]
async fn reserved_control_opcode_is_1002() {
    violation(frame_b0(0x8B, b"", Some(MASK)), 1002, |e| *e == ProtocolError::ReservedOpcode(0xB)).await;
}

#[tokio::test]
async fn rsv1_without_extension_is_1002() {
    violation(frame_b0(0xC1, b"x", Some(MASK)), 1002, |e| *e == ProtocolError::ReservedBits(0b100)).await;
}

#[tokio::test]
async fn rsv2_and_rsv3_are_1002() {
    violation(frame_b0(0xA2, b"x", Some(MASK)), 1002, |e| *e == ProtocolError::ReservedBits(0b010)).await;
    violation(frame_b0(0x92, b"x", Some(MASK)), 1002, |e| *e == ProtocolError::ReservedBits(0b001)).await;
}

#[tokio::test]
async fn fragmented_control_frame_is_1002() {
    violation(masked(false, PING, b"p"), 1002, |e| *e == ProtocolError::FragmentedControlFrame).await;
}

#[tokio::test]
async fn oversize_control_frame_is_1002() {
    violation(masked(true, PING, &[0; 126]), 1002, |e| *e == ProtocolError::ControlFrameTooLong(126)).await;
}

#[tokio::test]
async fn continuation_without_a_start_is_1002() {
    violation(masked(true, CONT, b"x"), 1002, |e| *e == ProtocolError::UnexpectedContinuation).await;
}

#[tokio::test]
async fn continuation_after_a_complete_message_is_1002() {
    let bytes = concat(&[masked(true, TEXT, b"complete"), masked(true, CONT, b"x")]);
    violation(bytes, 1002, |e| *e == ProtocolError::UnexpectedContinuation).await;
}

#[tokio::test]
async fn new_data_frame_inside_a_fragmented_message_is_1002() {
    let bytes = concat(&[masked(false, TEXT, b"part"), masked(true, BINARY, b"new")]);
    violation(bytes, 1002, |e| *e == ProtocolError::ExpectedContinuation).await;
}

#[tokio::test]
async fn length_with_top_bit_is_1002() {
    let mut bytes = vec![0x82, 0x80 | 127];
    bytes.extend_from_slice(&(1u64 << 63).to_be_bytes());
    bytes.extend_from_slice(&MASK);
    violation(bytes, 1002, |e| *e == ProtocolError::LengthTopBit).await;
}

#[tokio::test]
async fn invalid_close_codes_are_1002() {
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        let bytes = masked(true, CLOSE, &close_payload(code, b""));
        violation(bytes, 1002, |e| matches!(e, ProtocolError::InvalidCloseCode(_))).await;
    }
}

#[tokio::test]
async fn one_byte_close_payload_is_1002() {
    violation(masked(true, CLOSE, &[0x03]), 1002, |e| *e == ProtocolError::CloseFrameTooShort).await;
}

#[tokio::test]
async fn invalid_utf8_text_is_1007() {
    violation(masked(true, TEXT, b"ok \xff"), 1007, |e| *e == ProtocolError::InvalidUtf8).await;
    // A surrogate and an overlong encoding.
    violation(masked(true, TEXT, b"\xed\xa0\x80"), 1007, |e| *e == ProtocolError::InvalidUtf8).await;
    violation(masked(true, TEXT, b"\xc0\xaf"), 1007, |e| *e == ProtocolError::InvalidUtf8).await;
}

#[tokio::test]
async fn invalid_utf8_across_fragments_is_1007() {
    // A two-byte lead in the first fragment, a non-continuation byte in the next.
    let bytes = concat(&[masked(false, TEXT, b"ab\xce"), masked(true, CONT, b"Acd")]);
    violation(bytes, 1007, |e| *e == ProtocolError::InvalidUtf8).await;
}

#[tokio::test]
async fn text_ending_inside_a_character_is_1007() {
    let bytes = concat(&[masked(false, TEXT, b"euro: "), masked(true, CONT, b"\xe2\x82")]);
    violation(bytes, 1007, |e| *e == ProtocolError::InvalidUtf8).await;
}

#[tokio::test]
async fn invalid_utf8_close_reason_is_1007() {
    violation(masked(true, CLOSE, &close_payload(1000, b"bad \xff")), 1007, |e| *e == ProtocolError::InvalidUtf8).await;
}

#[tokio::test]
async fn binary_is_not_checked_as_utf8() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_frame(true, BINARY, b"\xff\xfe").await;
    assert_eq!(raw.message().await, (BINARY, b"\xff\xfe".to_vec(), 1));
    raw.send_close(1000, "").await;
    assert_eq!(raw.read_close().await, Some((1000, String::new())));
    raw.expect_eof().await;
    assert!(within(server).await.unwrap().is_close(&[CloseCode::NORMAL]));
}

#[tokio::test]
async fn violation_in_a_streamed_message_fails_the_reader() {
    let (addr, server) = spawn_server(Upgrader::new(), |mut conn| async move {
        let (_, mut reader) = conn.next_reader().await.unwrap();
        let first = reader.next_chunk().await;
        let second = reader.next_chunk().await;
        drop(reader);
        let after = conn.read_message().await;
        (first, second, after, conn)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_frame(false, TEXT, b"valid").await;
    raw.send_frame(true, CONT, b"\xff").await;
    let (code, _) = raw.read_close().await.unwrap();
    assert_eq!(code, 1007);
    raw.expect_eof().await;
    let (first, second, after, _conn) = within(server).await.unwrap();
    assert_eq!(first.unwrap().unwrap(), &b"valid"[..]);
    assert!(matches!(second, Err(Error::Protocol(ProtocolError::InvalidUtf8))), "{second:?}");
    assert!(matches!(after, Err(Error::Protocol(ProtocolError::InvalidUtf8))), "{after:?}");
}

/// A silverback client over a plain TCP pair, and the raw server end.
async fn client_pair() -> (silverback::Conn<tokio::net::TcpStream>, RawClient) {
    let (listener, addr) = listen().await;
    let client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let conn = silverback::Conn::from_raw(
        client,
        silverback::Role::Client,
        silverback::Config::default(),
        None,
        bytes::BytesMut::new(),
    );
    (conn, RawClient { stream: server, buf: bytes::BytesMut::new() })
}

#[tokio::test]
async fn client_frames_are_masked() {
    let (mut conn, mut server) = client_pair().await;
    within(conn.write_text("first")).await.unwrap();
    within(conn.write_text("first")).await.unwrap();
    within(conn.handle().ping("p")).await.unwrap();
    let mut frames = Vec::new();
    for _ in 0..3 {
        let frame = server.frame().await;
        assert!(frame.masked, "client frames must be masked: {frame:?}");
        frames.push(frame);
    }
    assert_eq!(frames[0].payload, b"first");
    assert_eq!(frames[1].payload, b"first");
    assert_eq!((frames[2].opcode, frames[2].payload.as_slice()), (PING, &b"p"[..]));
}

#[tokio::test]
async fn client_mask_keys_differ_between_frames() {
    use tokio::io::AsyncReadExt;
    let (mut conn, mut server) = client_pair().await;
    within(conn.write_binary([0u8; 8])).await.unwrap();
    within(conn.write_binary([0u8; 8])).await.unwrap();
    // Two frames of 2 header + 4 key + 8 payload bytes; zero payloads show the key.
    let mut wire = [0u8; 28];
    within(server.stream.read_exact(&mut wire)).await.unwrap();
    assert_eq!(wire[1], 0x88);
    assert_eq!(wire[15], 0x88);
    let (first, second) = (&wire[2..6], &wire[16..20]);
    assert_eq!(&wire[6..10], first);
    assert_ne!(first, second, "every frame needs a fresh masking key");
}

#[tokio::test]
async fn masked_server_frame_fails_a_client_with_1002() {
    let (mut conn, mut server) = client_pair().await;
    server.send(&masked(true, TEXT, b"masked by the server")).await;
    let err = within(conn.read_message()).await.unwrap_err();
    assert!(matches!(err, Error::Protocol(ProtocolError::MaskedFrame)), "{err:?}");
    let close = server.frame().await;
    assert!(close.masked, "the client's close must be masked");
    assert_eq!(close.close(), Some((1002, "masked frame from server".to_owned())));
    server.expect_eof().await;
}
