//! Parking over real connections: idle connections with permessage-deflate
//! context takeover free their compression states and keep exchanging
//! compressed messages afterwards (tokio's paused clock, in-memory streams),
//! and a peer that ends a message with a final block (BFINAL) may refer
//! back into it in the next message.

use std::time::Duration;

use bytes::BytesMut;
use flate2::{Compress, Compression, FlushCompress};
use silverback::proto::encoder::encode_frame;
use silverback::proto::extensions::DeflateParams;
use silverback::proto::frame::RSV1;
use silverback::proto::OpCode;
use silverback::{Config, Conn, MessageType, Role};
use tokio::io::{AsyncWriteExt, DuplexStream};

fn config(park_after: Option<Duration>) -> Config {
    let mut config = Config::default();
    config.deflate = Some(DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    });
    config.compression_park_after = park_after;
    config
}

fn pair(park_after: Option<Duration>) -> (Conn<DuplexStream>, Conn<DuplexStream>) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let server = Conn::from_raw(a, Role::Server, config(park_after), None, BytesMut::new());
    let client = Conn::from_raw(b, Role::Client, config(park_after), None, BytesMut::new());
    (server, client)
}

fn text(round: usize) -> String {
    format!("round {round}: the same long sentence that every message repeats, so that it refers back. ").repeat(4)
}

#[tokio::test(start_paused = true)]
async fn idle_connections_park_and_keep_talking() {
    let (mut server, mut client) = pair(Some(Duration::from_secs(1)));
    for round in 0..4 {
        client.write_message(MessageType::Text, text(round)).await.unwrap();
        let got = server.read_message().await.unwrap();
        assert_eq!(got.data, text(round).as_bytes());
        server.write_message(MessageType::Binary, text(round + 100)).await.unwrap();
        let got = client.read_message().await.unwrap();
        assert_eq!(got.data, text(round + 100).as_bytes());
        assert!(server.holds_compression_state() && client.holds_compression_state());

        // Both sides wait for input past the threshold.
        tokio::select! {
            _ = server.read_message() => panic!("no message was sent"),
            _ = client.read_message() => panic!("no message was sent"),
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        assert!(!server.holds_compression_state(), "round {round}: the server parked");
        assert!(!client.holds_compression_state(), "round {round}: the client parked");
    }
}

#[tokio::test(start_paused = true)]
async fn a_busy_connection_is_not_parked() {
    let (mut server, mut client) = pair(Some(Duration::from_secs(10)));
    for round in 0..30 {
        client.write_message(MessageType::Text, text(round)).await.unwrap();
        tokio::select! {
            got = server.read_message() => assert_eq!(got.unwrap().data, text(round).as_bytes()),
            _ = client.read_message() => panic!("no message was sent"),
        }
        // One second between messages: never a whole idle period.
        tokio::select! {
            _ = server.read_message() => panic!("no message was sent"),
            _ = client.read_message() => panic!("no message was sent"),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        assert!(server.holds_compression_state(), "round {round}");
    }
}

#[tokio::test(start_paused = true)]
async fn no_parking_when_turned_off() {
    let (mut server, mut client) = pair(None);
    client.write_message(MessageType::Text, text(0)).await.unwrap();
    server.read_message().await.unwrap();
    tokio::select! {
        _ = server.read_message() => panic!("no message was sent"),
        _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
    }
    assert!(server.holds_compression_state());
}

#[tokio::test(start_paused = true)]
async fn split_halves_park_the_write_side_too() {
    let (server, mut client) = pair(Some(Duration::from_secs(1)));
    let (mut read, mut write) = server.split();
    for round in 0..3 {
        write.write_message(MessageType::Text, text(round)).await.unwrap();
        assert_eq!(client.read_message().await.unwrap().data, text(round).as_bytes());
        client.write_message(MessageType::Text, text(round + 7)).await.unwrap();
        assert_eq!(read.read_message().await.unwrap().data, text(round + 7).as_bytes());
        tokio::select! {
            _ = read.read_message() => panic!("no message was sent"),
            _ = client.read_message() => panic!("no message was sent"),
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        assert!(!read.holds_compression_state(), "round {round}: both states parked");
    }
}

/// A client frame (masked) carrying `payload`, compressed (RSV1).
fn compressed_frame(payload: &[u8]) -> BytesMut {
    let mut frame = BytesMut::new();
    encode_frame(&mut frame, OpCode::Text, true, RSV1, Some([1, 2, 3, 4]), payload);
    frame
}

#[tokio::test]
async fn a_final_block_keeps_the_peers_window() {
    let (a, mut peer) = tokio::io::duplex(1 << 20);
    let mut server = Conn::from_raw(a, Role::Server, config(None), None, BytesMut::new());
    let first = text(1);
    let second = format!("{}{}", text(1), "and a tail");
    // The first message ends its stream with a final block.
    let mut c = Compress::new_with_window_bits(Compression::new(6), false, 15);
    let mut wire = Vec::with_capacity(4096);
    c.compress_vec(first.as_bytes(), &mut wire, FlushCompress::Finish).unwrap();
    peer.write_all(&compressed_frame(&wire)).await.unwrap();
    // The second refers back into the first.
    let mut c = Compress::new_with_window_bits(Compression::new(6), false, 15);
    c.set_dictionary(first.as_bytes()).unwrap();
    let mut wire = Vec::with_capacity(4096);
    c.compress_vec(second.as_bytes(), &mut wire, FlushCompress::Sync).unwrap();
    wire.truncate(wire.len() - 4);
    assert!(wire.len() < 30, "the second message refers back: {} bytes", wire.len());
    peer.write_all(&compressed_frame(&wire)).await.unwrap();

    assert_eq!(server.read_message().await.unwrap().data, first.as_bytes());
    assert_eq!(server.read_message().await.unwrap().data, second.as_bytes());
}

// ---------------------------------------------------------------------------
// The sans-IO core (under the blocking API): the same clock among its timers
// ---------------------------------------------------------------------------

use silverback::proto::connection::Event;
use silverback::proto::Connection;
use std::time::Instant;

fn core(role: Role, now: Instant) -> Connection {
    Connection::new(role, &config(Some(Duration::from_secs(2))), now, Box::new(|| [9, 8, 7, 6]))
}

/// Moves what `from` has to send into `to`, and returns the message `to`
/// then delivers.
fn deliver(from: &mut Connection, to: &mut Connection, now: Instant) -> Vec<u8> {
    let bytes = from.data_to_send().to_vec();
    from.sent(bytes.len());
    to.receive_data(&bytes);
    let mut message = Vec::new();
    loop {
        match to.next_event(now).unwrap() {
            Some(Event::Message(_, data)) => return data.to_vec(),
            Some(Event::Start(_)) => {}
            Some(Event::Data(data)) => message.extend_from_slice(&data),
            Some(Event::End) => return message,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

#[test]
fn the_core_parks_through_its_timers_and_keeps_talking() {
    let start = Instant::now();
    let mut server = core(Role::Server, start);
    let mut client = core(Role::Client, start);
    let mut now = start;
    for round in 0..4 {
        client.send_message(OpCode::Text, text(round).as_bytes()).unwrap();
        assert_eq!(deliver(&mut client, &mut server, now), text(round).as_bytes());
        server.send_message(OpCode::Binary, text(round + 50).as_bytes()).unwrap();
        assert_eq!(deliver(&mut server, &mut client, now), text(round + 50).as_bytes());
        for conn in [&mut server, &mut client] {
            // Waiting for input arms the clock.
            assert!(conn.next_event(now).unwrap().is_none());
            assert!(conn.holds_compression_state());
            let at = conn.poll_timeout().expect("the park clock is armed");
            assert_eq!(at, now + Duration::from_secs(2));
            conn.handle_timeout(at);
            assert!(!conn.holds_compression_state(), "round {round}: parked");
            assert_eq!(conn.poll_timeout(), None, "nothing left to park");
        }
        now += Duration::from_secs(3);
    }
}

#[test]
fn the_core_leaves_a_state_used_in_the_period() {
    let now = Instant::now();
    let mut server = core(Role::Server, now);
    let mut client = core(Role::Client, now);
    client.send_message(OpCode::Text, text(0).as_bytes()).unwrap();
    deliver(&mut client, &mut server, now);
    assert!(server.next_event(now).unwrap().is_none());
    let at = server.poll_timeout().unwrap();
    // A message inflated within the period: not parked, checked again later.
    client.send_message(OpCode::Text, text(1).as_bytes()).unwrap();
    deliver(&mut client, &mut server, now + Duration::from_secs(1));
    server.handle_timeout(at);
    assert!(server.holds_compression_state());
    let next = server.poll_timeout().unwrap();
    assert!(next > at);
    server.handle_timeout(next);
    assert!(!server.holds_compression_state());
}
