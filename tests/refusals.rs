//! A refused handshake on a raw stream lets the client read the whole
//! response even when it sent more than the server read: the server shuts
//! down its write side and discards what still comes (within bounds) before
//! it closes, instead of closing with unread bytes, which makes the kernel
//! send a TCP reset that can destroy the response.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use silverback::{Error, Upgrader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes past what the server reads: more than its 16 KiB head bound or its
/// 1 KiB reads, less than it discards after refusing.
const EXTRA: usize = 40 * 1024;

/// A request head whose one header makes it `size` bytes long (too large
/// for the default bound of 16 KiB), never ended.
fn oversized_head(addr: SocketAddr, size: usize) -> Vec<u8> {
    let mut head = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX-Filler: ").into_bytes();
    head.resize(size, b'a');
    head
}

/// A complete request that is refused (no `Upgrade`: 426), followed by
/// `EXTRA` bytes of what would be frames.
fn refused_request_then_data(addr: SocketAddr) -> Vec<u8> {
    let headers: Vec<_> = good_headers(addr).into_iter().filter(|(name, _)| name != "Upgrade").collect();
    let mut raw = request_with("GET", &headers).into_bytes();
    raw.extend(masked(true, BINARY, &pattern(EXTRA)));
    raw
}

/// The refusal's body: a page larger than the kernel sends before the
/// client reads, so that part of it is still in the server's send queue
/// when the server closes (a reset would discard it).
const PAGE: usize = 1 << 20;

/// An upgrader that refuses with a large page.
fn upgrader() -> Upgrader {
    Upgrader::new().error(|rejection| {
        let mut page = format!("{}\n", rejection.reason).into_bytes();
        page.resize(PAGE, b'.');
        let mut response = http::Response::new(bytes::Bytes::from(page));
        *response.status_mut() = rejection.status;
        response
    })
}

/// Sends `raw` in one go from a client with a small receive buffer, waits
/// a little (the server has answered and moved on), then reads the response
/// up to the end of the stream: every read must succeed, the last with the
/// end of the stream, not a reset.
async fn send_and_read_all(addr: SocketAddr, raw: Vec<u8>) -> Result<HttpResponse, std::io::Error> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(&raw).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut buf = BytesMut::new();
    within(async {
        while read.read_buf(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await?;
    drop(write);
    Ok(parse(&buf))
}

fn parse(raw: &[u8]) -> HttpResponse {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole response head") + 4;
    HttpResponse::parse(std::str::from_utf8(&raw[..end]).unwrap(), raw[end..].to_vec())
}

fn assert_whole(response: &HttpResponse, status: u16) {
    assert_eq!(response.status, status, "{:?}", response.headers);
    let length: usize = response.header("content-length").unwrap().parse().unwrap();
    assert_eq!(response.body.len(), length, "the whole body");
}

#[tokio::test]
async fn an_oversized_head_is_answered_431_and_the_answer_arrives_whole() {
    for _ in 0..5 {
        let (addr, server) = spawn_accept(upgrader()).await;
        let response = send_and_read_all(addr, oversized_head(addr, 16 * 1024 + EXTRA)).await;
        let response = response.expect("the response was lost to a reset");
        assert_whole(&response, 431);
        let refused = within(server).await.unwrap();
        assert!(matches!(refused, Err(Error::RequestRefused { .. })), "{:?}", refused.map(|_| ()));
    }
}

#[tokio::test]
async fn a_refused_request_followed_by_data_gets_its_whole_answer() {
    for _ in 0..5 {
        let (addr, server) = spawn_accept(upgrader()).await;
        let response = send_and_read_all(addr, refused_request_then_data(addr)).await;
        let response = response.expect("the response was lost to a reset");
        assert_whole(&response, 426);
        assert!(String::from_utf8_lossy(&response.body[..200]).contains("'Upgrade'"));
        assert!(within(server).await.unwrap().is_err());
    }
}

#[tokio::test]
async fn the_discarding_is_bounded_in_time() {
    // A client that sends a bad request and then neither closes nor sends.
    let (addr, server) = spawn_accept(Upgrader::new()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&refused_request_then_data(addr)[..200]).await.unwrap();
    let started = Instant::now();
    let mut buf = BytesMut::new();
    let head = read_head(&mut stream, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    let refused = within(server).await.unwrap();
    assert!(refused.is_err());
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(3), "the server waited {waited:?} for a silent client");
    drop(stream);
}

#[tokio::test]
async fn the_discarding_is_bounded_in_size() {
    // A client that keeps sending: the server gives up after a bounded amount.
    let (addr, server) = spawn_accept(Upgrader::new()).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (_read, mut write) = stream.into_split();
    let flood = tokio::spawn(async move {
        let mut raw = refused_request_then_data(addr);
        raw.truncate(200);
        let _ = write.write_all(&raw).await;
        let chunk = vec![0u8; 64 * 1024];
        while write.write_all(&chunk).await.is_ok() {}
    });
    let started = Instant::now();
    let refused = within(server).await.unwrap();
    assert!(refused.is_err());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    flood.abort();
}

#[cfg(feature = "blocking")]
#[test]
fn blocking_accept_lets_the_client_read_a_refusal_whole() {
    use std::io::{Read, Write};

    for _ in 0..3 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            silverback::blocking::accept(&upgrader(), stream).map(|_| ())
        });
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut stream: std::net::TcpStream = socket.into();
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        stream.write_all(&oversized_head(addr, 16 * 1024 + EXTRA)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("the response was lost to a reset");
        assert_whole(&parse(&raw), 431);
        drop(stream);
        assert!(matches!(server.join().unwrap(), Err(Error::RequestRefused { .. })));
    }
}
