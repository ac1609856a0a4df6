//! Keepalive: pings at an interval, a dead peer detected by a missing pong.

use std::sync::Arc;
use std::time::{Duration, Instant};

use silverback::{Error, MessageType, Role, Upgrader};
use tokio::net::{TcpListener, TcpStream};

async fn server(upgrader: Upgrader) -> (std::net::SocketAddr, tokio::task::JoinHandle<(Result<(), Error>, Duration)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = upgrader.accept(stream).await.unwrap();
        let start = Instant::now();
        loop {
            match conn.read_message().await {
                Ok(msg) => conn.write_message(msg.kind, &msg.data).await.unwrap(),
                Err(e) => return (Err(e), start.elapsed()),
            }
        }
    });
    (addr, task)
}

async fn client(addr: std::net::SocketAddr) -> silverback::Conn<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let dialer = silverback::Dialer::new().proxy(silverback::Proxy::None);
    let (conn, _) = dialer.connect_on(stream, &format!("ws://{addr}/")).await.unwrap();
    conn
}

#[tokio::test]
async fn a_peer_that_answers_pings_stays_connected() {
    let upgrader =
        Upgrader::new().ping_interval(Some(Duration::from_millis(50))).pong_timeout(Duration::from_millis(200));
    let (addr, _server) = server(upgrader).await;
    let mut conn = client(addr).await;
    let pings = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = pings.clone();
    conn.set_ping_handler(Some(Arc::new(move |payload, ctx| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ctx.pong(bytes::Bytes::copy_from_slice(payload));
        Ok(())
    })));
    // Keep reading for 600 ms: several keepalive rounds pass.
    let deadline = Instant::now() + Duration::from_millis(600);
    while Instant::now() < deadline {
        conn.write_message(MessageType::Text, "still here").await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(2), conn.read_message()).await.unwrap().unwrap();
        assert_eq!(echo.as_text(), Some("still here"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pings.load(std::sync::atomic::Ordering::SeqCst) >= 4, "expected several keepalive pings");
}

#[tokio::test]
async fn a_peer_that_never_pongs_is_ended_with_a_keepalive_timeout() {
    let upgrader =
        Upgrader::new().ping_interval(Some(Duration::from_millis(50))).pong_timeout(Duration::from_millis(150));
    let (addr, server) = server(upgrader).await;
    // A client that completes the handshake and then neither reads nor answers.
    let stream = TcpStream::connect(addr).await.unwrap();
    let dialer = silverback::Dialer::new().proxy(silverback::Proxy::None);
    let (_silent, _) = dialer.connect_on(stream, &format!("ws://{addr}/")).await.unwrap();
    let (result, elapsed) = tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
    assert!(matches!(result, Err(Error::KeepaliveTimeout)), "{result:?}");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[tokio::test]
async fn keepalive_on_the_client_side_too() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A server that accepts and then goes silent without reading.
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let conn = Upgrader::new().accept(stream).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(conn);
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    let dialer = silverback::Dialer::new()
        .proxy(silverback::Proxy::None)
        .ping_interval(Some(Duration::from_millis(50)))
        .pong_timeout(Duration::from_millis(150));
    let (mut conn, _) = dialer.connect_on(stream, &format!("ws://{addr}/")).await.unwrap();
    assert_eq!(conn.role(), Role::Client);
    let result = tokio::time::timeout(Duration::from_secs(2), conn.read_message()).await.unwrap();
    assert!(matches!(result, Err(Error::KeepaliveTimeout)), "{result:?}");
    // The error is permanent.
    assert!(matches!(conn.read_message().await, Err(Error::KeepaliveTimeout)));
    server.abort();
}
