//! The fan-out hub (`silverback::fanout`): many subscribers over in-memory
//! pipes with small buffers and over loopback TCP.
//!
//! - Every subscriber gets every message, in order; with many publishers at
//!   once, each publisher's messages in its order.
//! - A subscriber that never reads holds up nobody, and what is kept for it
//!   stays bounded, under each policy: drop (it loses messages), close (it
//!   gets 1008 after what was written), wait (the publisher waits no longer
//!   than the timeout).
//! - Unsubscribing and a connection that goes away remove the subscriber.
//! - Compressed (with and without context takeover) and uncompressed
//!   subscribers of one hub each get valid messages.
//! - A writer's batches mix frames that fit its write buffer with larger
//!   ones, compressed with plain, and pings; and publishers, pings from
//!   other tasks and subscribers joining and leaving race over small pipes:
//!   every message arrives whole, each publisher's in order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use silverback::fanout::{Delivery, Hub, SlowPolicy, Subscription};
use silverback::{
    CloseCode, Config, Conn, DeflateConfig, Dialer, Error, MessageType, PreparedMessage, Proxy, ReadHalf, Role,
    Upgrader,
};
use tokio::io::DuplexStream;

/// A long wait: only reached when something is broken.
const PATIENT: SlowPolicy = SlowPolicy::Wait(Duration::from_secs(30));

/// A server/client pair over an in-memory pipe of `buffer` bytes each way.
fn pair(buffer: usize) -> (Conn<DuplexStream>, Conn<DuplexStream>) {
    let (a, b) = tokio::io::duplex(buffer);
    let server = Conn::from_raw(a, Role::Server, Config::default(), None, Default::default());
    let client = Conn::from_raw(b, Role::Client, Config::default(), None, Default::default());
    (server, client)
}

/// Keeps reading a server's read half (so that pings and the peer's close
/// are seen) until it fails.
fn drain_reads(mut read: ReadHalf<DuplexStream>) {
    tokio::spawn(async move { while read.read_message().await.is_ok() {} });
}

/// Subscribes the server side of a new pair; returns the client side. The
/// server's read half is dropped, so that the client sees the end of the
/// connection once the hub's writer is done with it.
fn subscriber(hub: &Hub, buffer: usize, policy: SlowPolicy) -> (Subscription, Conn<DuplexStream>) {
    let (server, client) = pair(buffer);
    let (_, write) = server.split();
    (hub.subscribe(write, policy), client)
}

/// As [`subscriber`], with the server's read half kept reading (for the
/// close handshake).
fn reading_subscriber(hub: &Hub, buffer: usize, policy: SlowPolicy) -> (Subscription, Conn<DuplexStream>) {
    let (server, client) = pair(buffer);
    let (read, write) = server.split();
    drain_reads(read);
    (hub.subscribe(write, policy), client)
}

fn text(i: usize) -> String {
    format!("message {i:06}")
}

/// Reads messages until the connection ends; returns them and the error it ended with.
async fn read_all<S: silverback::Stream>(client: &mut Conn<S>) -> (Vec<String>, Error) {
    let mut got = Vec::new();
    loop {
        match within(client.read_message()).await {
            Ok(m) => got.push(String::from_utf8(m.data.to_vec()).unwrap()),
            Err(e) => return (got, e),
        }
    }
}

/// Reads `n` text messages.
async fn read_n<S: silverback::Stream>(client: &mut Conn<S>, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let m = within(client.read_message()).await.unwrap();
        assert_eq!(m.kind, MessageType::Text);
        got.push(String::from_utf8(m.data.to_vec()).unwrap());
    }
    got
}

/// Whether `got` is a strictly increasing run of `text(i)` messages.
fn increasing(got: &[String]) -> bool {
    got.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test]
async fn every_subscriber_gets_every_message_in_order() {
    let hub = Hub::with_capacity(8);
    let mut readers = Vec::new();
    let mut subs = Vec::new();
    for _ in 0..20 {
        let (sub, mut client) = subscriber(&hub, 512, PATIENT);
        subs.push(sub);
        readers.push(tokio::spawn(async move { read_n(&mut client, 300).await }));
    }
    assert_eq!(hub.len(), 20);
    for i in 0..300 {
        let d = within(hub.publish(MessageType::Text, text(i))).await;
        assert_eq!(d, Delivery { queued: 20, dropped: 0, closed: 0 });
    }
    let expected: Vec<String> = (0..300).map(text).collect();
    for r in readers {
        assert_eq!(r.await.unwrap(), expected);
    }
}

#[tokio::test]
async fn binary_and_prepared_messages_are_shared() {
    let hub = Hub::new();
    let (_s1, mut c1) = subscriber(&hub, 4096, PATIENT);
    let (_s2, mut c2) = subscriber(&hub, 4096, PATIENT);
    let prepared = Arc::new(PreparedMessage::new(MessageType::Binary, vec![7u8; 100_000]));
    assert_eq!(within(hub.publish_prepared(prepared.clone())).await.queued, 2);
    for client in [&mut c1, &mut c2] {
        let m = within(client.read_message()).await.unwrap();
        assert_eq!(m.kind, MessageType::Binary);
        assert_eq!(&m.data[..], prepared.data());
    }
}

#[tokio::test]
async fn a_slow_subscriber_loses_messages_under_drop_and_holds_up_nobody() {
    let hub = Hub::with_capacity(4);
    let (slow_sub, mut slow) = subscriber(&hub, 256, SlowPolicy::Drop);
    let mut readers = Vec::new();
    let mut subs = Vec::new();
    for _ in 0..5 {
        let (sub, mut client) = subscriber(&hub, 256, PATIENT);
        subs.push(sub);
        readers.push(tokio::spawn(async move { read_n(&mut client, 500).await }));
    }
    let mut dropped = 0;
    for i in 0..500 {
        let d = within(hub.publish(MessageType::Text, text(i))).await;
        assert_eq!(d.queued + d.dropped, 6);
        dropped += d.dropped;
    }
    let expected: Vec<String> = (0..500).map(text).collect();
    for r in readers {
        assert_eq!(r.await.unwrap(), expected, "a fast subscriber missed messages");
    }
    assert!(dropped > 0, "the slow subscriber never fell behind");
    // Unsubscribed, it gets what was queued for it, then the connection ends.
    drop(slow_sub);
    let (got, _) = read_all(&mut slow).await;
    assert_eq!(got.len(), 500 - dropped, "it gets exactly what was not dropped");
    assert!(got.len() < 100, "far more was kept for it than the queue holds: {}", got.len());
    assert!(increasing(&got));
    assert_eq!(got[0], text(0));
}

#[tokio::test]
async fn a_slow_subscriber_is_closed_with_its_code() {
    let hub = Hub::with_capacity(4);
    let (slow_sub, mut slow) = reading_subscriber(&hub, 256, SlowPolicy::Close(CloseCode::POLICY_VIOLATION));
    let (_fast_sub, mut fast) = subscriber(&hub, 256, PATIENT);
    let fast_reader = tokio::spawn(async move { read_all(&mut fast).await });
    let mut sent = 0;
    let mut closed = 0;
    while closed == 0 {
        assert!(sent < 10_000, "the slow subscriber was never closed");
        let d = within(hub.publish(MessageType::Text, text(sent))).await;
        closed += d.closed;
        sent += 1;
    }
    assert_eq!(closed, 1);
    assert!(!slow_sub.is_subscribed());
    assert_eq!(hub.len(), 1);
    // After what was written before the close, it gets the close frame.
    let (got, error) = read_all(&mut slow).await;
    assert!(error.is_close(&[CloseCode::POLICY_VIOLATION]), "{error:?}");
    assert!(got.len() < sent && increasing(&got));
    // Later messages still reach the other one.
    for i in sent..sent + 10 {
        assert_eq!(within(hub.publish(MessageType::Text, text(i))).await.queued, 1);
    }
    drop(_fast_sub);
    let (got, _) = fast_reader.await.unwrap();
    assert_eq!(got, (0..sent + 10).map(text).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_slow_subscriber_under_wait_bounds_the_publisher() {
    let hub = Hub::with_capacity(2);
    let (slow_sub, mut slow) = subscriber(&hub, 128, SlowPolicy::Wait(Duration::from_millis(2)));
    let mut dropped = 0;
    for i in 0..200 {
        // Each publish returns: the wait is bounded.
        let d = within(hub.publish(MessageType::Text, text(i))).await;
        assert_eq!(d.queued + d.dropped, 1);
        dropped += d.dropped;
    }
    assert!(dropped > 0);
    assert!(slow_sub.is_subscribed(), "waiting does not remove the subscriber");
    drop(slow_sub);
    let (got, _) = read_all(&mut slow).await;
    assert_eq!(got.len(), 200 - dropped);
    assert!(got.len() < 100 && increasing(&got));
}

#[tokio::test]
async fn unsubscribe_and_a_lost_connection_remove_the_subscriber() {
    let hub = Hub::new();
    let (kept, mut kept_client) = subscriber(&hub, 4096, PATIENT);
    let (leaving, mut leaving_client) = subscriber(&hub, 4096, PATIENT);
    let (lost, lost_client) = subscriber(&hub, 4096, PATIENT);
    assert_eq!(hub.len(), 3);
    assert_eq!(within(hub.publish(MessageType::Text, text(0))).await.queued, 3);

    leaving.unsubscribe();
    assert_eq!(hub.len(), 2);
    // What was queued before is delivered; nothing after.
    let (got, _) = read_all(&mut leaving_client).await;
    assert_eq!(got, vec![text(0)]);

    drop(lost_client);
    let mut i = 1;
    while lost.is_subscribed() {
        within(hub.publish(MessageType::Text, text(i))).await;
        i += 1;
        tokio::task::yield_now().await;
        assert!(i < 100_000, "a subscriber whose connection is gone stayed");
    }
    assert_eq!(hub.len(), 1);
    assert!(kept.is_subscribed());
    assert_eq!(read_n(&mut kept_client, i).await, (0..i).map(text).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_publishers_at_once() {
    let hub = Hub::with_capacity(16);
    let mut readers = Vec::new();
    let mut subs = Vec::new();
    const PUBLISHERS: usize = 8;
    const EACH: usize = 100;
    for _ in 0..6 {
        let (sub, mut client) = subscriber(&hub, 1024, PATIENT);
        subs.push(sub);
        readers.push(tokio::spawn(async move { read_n(&mut client, PUBLISHERS * EACH).await }));
    }
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let hub = hub.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let d = within(hub.publish(MessageType::Text, format!("p{p} {i:04}"))).await;
                    assert_eq!(d.queued, 6);
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    for r in readers {
        let got = r.await.unwrap();
        for p in 0..PUBLISHERS {
            let mine: Vec<&String> = got.iter().filter(|m| m.starts_with(&format!("p{p} "))).collect();
            let expected: Vec<String> = (0..EACH).map(|i| format!("p{p} {i:04}")).collect();
            assert_eq!(mine, expected.iter().collect::<Vec<_>>(), "publisher {p}'s messages out of order or lost");
        }
    }
}

#[tokio::test]
async fn compressed_and_plain_subscribers_share_one_hub() {
    let (listener, addr) = listen().await;
    let hub = Hub::new();
    let server_hub = hub.clone();
    let server = tokio::spawn(async move {
        let upgrader = Upgrader::new().enable_compression(true);
        let mut subs = Vec::new();
        for _ in 0..3 {
            let (stream, _) = listener.accept().await.unwrap();
            let conn = upgrader.accept(stream).await.unwrap();
            let (mut read, write) = conn.split();
            tokio::spawn(async move { while read.read_message().await.is_ok() {} });
            subs.push((write.compression_negotiated(), server_hub.subscribe(write, PATIENT)));
        }
        subs
    });
    let url = format!("ws://{addr}/");
    let dialer = Dialer::new().proxy(Proxy::None);
    let takeover = dialer.clone().enable_compression(true);
    let no_takeover = dialer.clone().compression(DeflateConfig {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        ..DeflateConfig::default()
    });
    let mut clients = Vec::new();
    for d in [takeover, no_takeover, dialer] {
        let (conn, _) = within(d.connect(&url)).await.unwrap();
        clients.push(conn);
    }
    let subs = within(server).await.unwrap();
    let negotiated: Vec<bool> = subs.iter().map(|(c, _)| *c).collect();
    assert_eq!(negotiated, [true, true, false]);
    let messages: Vec<String> =
        (0..50).map(|i| format!("{} {}", text(i), "all work and no play ".repeat(20))).collect();
    for m in &messages {
        let d = within(hub.publish(MessageType::Text, m.clone())).await;
        assert_eq!(d.queued, 3);
    }
    for client in &mut clients {
        assert_eq!(read_n(client, messages.len()).await, messages);
    }
    drop(subs);
}

#[tokio::test]
async fn fed_prepared_messages_leave_with_the_flush_in_order() {
    let (server, mut client) = pair(64 * 1024);
    let (_read, mut write) = server.split();
    let messages: Vec<PreparedMessage> =
        (0..10).map(|i| PreparedMessage::new(MessageType::Text, text(i).into_bytes())).collect();
    for m in &messages {
        within(write.feed_prepared(m)).await.unwrap();
    }
    within(write.flush()).await.unwrap();
    assert_eq!(read_n(&mut client, 10).await, (0..10).map(text).collect::<Vec<_>>());
}

/// A server/client pair over a small pipe with a small write buffer, with
/// or without compression (context takeover both ways, a threshold that
/// leaves short messages plain).
fn small_buffer_pair(compressed: bool) -> (Conn<DuplexStream>, Conn<DuplexStream>) {
    let (a, b) = tokio::io::duplex(2048);
    let deflate = compressed.then_some(silverback::DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    });
    let mut server_config = Config::default();
    server_config.write_buffer_size = 1024;
    server_config.compression_threshold = 100;
    server_config.deflate = deflate;
    let mut client_config = Config::default();
    client_config.deflate = deflate;
    let server = Conn::from_raw(a, Role::Server, server_config, None, Default::default());
    let client = Conn::from_raw(b, Role::Client, client_config, None, Default::default());
    (server, client)
}

#[tokio::test]
async fn batches_of_every_size_arrive_whole_and_in_order() {
    // Messages queued faster than a small pipe takes them: the writer gets
    // them in batches that mix frames that fit the write buffer with frames
    // larger than it, compressed ones with plain ones, and a ping.
    for compressed in [false, true] {
        let hub = Hub::with_capacity(1000);
        let (server, mut client) = small_buffer_pair(compressed);
        let (read, write) = server.split();
        drain_reads(read);
        let _sub = hub.subscribe(write, PATIENT);
        let sizes = [0, 1, 99, 100, 125, 126, 700, 1010, 1500, 5000, 70_000];
        let mut sent = Vec::new();
        for i in 0..300 {
            let size = sizes[i % sizes.len()];
            let body: String = format!("{i}:{}", "abcdefghij".repeat(size / 10 + 1))[..size.max(4)].to_owned();
            if i == 150 {
                // A ping among the data messages: answered by the client's
                // reader with a pong, and not a data message.
                assert_eq!(within(hub.publish(MessageType::Ping, &b"mid"[..])).await.queued, 1);
            }
            let delivery = within(hub.publish(MessageType::Text, body.clone())).await;
            assert_eq!(delivery, Delivery { queued: 1, dropped: 0, closed: 0 }, "message {i}");
            sent.push(body);
        }
        let got = within(read_n(&mut client, sent.len())).await;
        for (i, (got, sent)) in got.iter().zip(&sent).enumerate() {
            assert!(got == sent, "message {i} (compressed: {compressed}): {} bytes, sent {}", got.len(), sent.len());
        }
    }
}

/// The publisher and number of a stress message (`"p{p} {i:04} …"`).
fn stamp(m: &str) -> (usize, usize) {
    let mut words = m.split(' ');
    let p = words.next().unwrap()[1..].parse().unwrap();
    let i = words.next().unwrap().parse().unwrap();
    (p, i)
}

/// Whether each publisher's messages in `got` come in increasing order,
/// and, with `all`, whether every one of its `each` messages is there.
fn in_order(got: &[String], publishers: usize, each: usize, all: bool) -> bool {
    let mut next = vec![0usize; publishers];
    for m in got {
        let (p, i) = stamp(m);
        if i < next[p] || (all && i != next[p]) {
            return false;
        }
        next[p] = i + 1;
    }
    !all || next.iter().all(|&n| n == each)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishers_pings_and_churn_race_over_small_pipes() {
    // Six publishers at once, messages of 1 to 1 500 bytes over pipes of
    // 300 bytes with 512-byte write buffers (so batches mix the fast and the
    // usual way), pings sent from other tasks into the same connections,
    // and subscribers joining and leaving throughout. Nothing hangs, nobody
    // sees a publisher's messages out of order, and the waiting subscribers
    // get every message.
    const PUBLISHERS: usize = 6;
    const EACH: usize = 200;
    let hub = Hub::with_capacity(32);
    let small = |hub: &Hub, policy: SlowPolicy, keep_reading: bool| {
        let (a, b) = tokio::io::duplex(300);
        let mut config = Config::default();
        config.write_buffer_size = 512;
        let server = Conn::from_raw(a, Role::Server, config, None, Default::default());
        let client = Conn::from_raw(b, Role::Client, Config::default(), None, Default::default());
        let (read, write) = server.split();
        let handle = read.handle();
        if keep_reading {
            drain_reads(read);
        }
        (hub.subscribe(write, policy), handle, client)
    };
    let mut waiting = Vec::new();
    let mut handles = Vec::new();
    let mut subs = Vec::new();
    for _ in 0..4 {
        let (sub, handle, mut client) = small(&hub, PATIENT, true);
        subs.push(sub);
        handles.push(handle);
        waiting.push(tokio::spawn(async move { read_n(&mut client, PUBLISHERS * EACH).await }));
    }
    let mut dropping = Vec::new();
    for _ in 0..4 {
        let (sub, _, mut client) = small(&hub, SlowPolicy::Drop, false);
        subs.push(sub);
        dropping.push(tokio::spawn(async move { read_all(&mut client).await.0 }));
    }
    let pinger = tokio::spawn(async move {
        for round in 0..50u32 {
            for handle in &handles {
                // A ping that cannot leave in time is moot; the connection goes on.
                let _ = handle.write_control(MessageType::Ping, &round.to_be_bytes(), None).await;
            }
            tokio::task::yield_now().await;
        }
    });
    let churn_hub = hub.clone();
    let churn = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..30 {
            let (sub, _, mut client) = small(&churn_hub, SlowPolicy::Drop, false);
            let reader = tokio::spawn(async move { read_all(&mut client).await.0 });
            tokio::task::yield_now().await;
            drop(sub);
            seen.push(within(reader).await.unwrap());
        }
        seen
    });
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let hub = hub.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let size = 1 + (i * 37 + p * 101) % 1500;
                    let body = format!("p{p} {i:04} {}", "x".repeat(size));
                    within(hub.publish(MessageType::Text, body)).await;
                }
            })
        })
        .collect();
    for publisher in publishers {
        within(publisher).await.unwrap();
    }
    within(pinger).await.unwrap();
    for reader in waiting {
        let got = within(reader).await.unwrap();
        assert!(in_order(&got, PUBLISHERS, EACH, true), "a waiting subscriber lost or reordered messages");
    }
    // The rest end when their subscriptions go.
    drop(subs);
    for reader in dropping {
        let got = within(reader).await.unwrap();
        assert!(in_order(&got, PUBLISHERS, EACH, false), "a dropping subscriber got messages out of order");
    }
    for got in within(churn).await.unwrap() {
        assert!(in_order(&got, PUBLISHERS, EACH, false), "a passing subscriber got messages out of order");
    }
}
