//! Close semantics under faults: peers that vanish, reset, half-close, stop
//! reading, trickle their handshake or send too much of it. Each fault must
//! surface as a clear error within a bounded time, and leak nothing: every
//! test runs the fault [`N`] times and checks that the open file descriptors
//! of the process and the runtime's alive tasks come back to where they were.
//!
//! The descriptor count is process-wide, so the tests run one at a time, each
//! on its own current-thread runtime made after it holds the lock.

mod common;

use std::future::Future;
use std::io::ErrorKind;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use silverback::{CloseCode, CloseFrame, Conn, Dialer, Error, Proxy, Upgrader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How many connections go through each fault for the leak check.
const N: usize = 200;
/// How many of them run at once.
const BATCH: usize = 50;
/// Descriptors the count may differ by (none are expected).
const FD_MARGIN: usize = 2;
/// How long the counts may take to come back after the last connection.
const SETTLE: Duration = Duration::from_millis(500);

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `test` alone, on a fresh current-thread runtime.
fn serial<F: Future>(test: F) -> F::Output {
    let _alone = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(test)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

/// Waits up to [`SETTLE`] for the descriptors and tasks to come back to
/// `(fds, tasks)`; panics with what is left otherwise.
async fn settles_to(what: &str, fds: usize, tasks: usize) {
    let start = Instant::now();
    loop {
        let (now_fds, now_tasks) = (open_fds(), alive_tasks());
        if now_fds <= fds + FD_MARGIN && now_tasks <= tasks {
            return;
        }
        if start.elapsed() > SETTLE {
            panic!("{what}: leaked after {SETTLE:?}: open fds {fds} -> {now_fds}, alive tasks {tasks} -> {now_tasks}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `fault` once (lazily made runtime state is not a leak), takes the
/// counts, runs it [`N`] more times ([`BATCH`] at a time, each in its own
/// task), and checks that the counts come back.
async fn no_leak<F, Fut>(what: &str, fault: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(fault()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (fds, tasks) = (open_fds(), alive_tasks());
    let mut done = 0;
    while done < N {
        let mut batch = tokio::task::JoinSet::new();
        for _ in done..(done + BATCH).min(N) {
            batch.spawn(fault());
        }
        while let Some(result) = batch.join_next().await {
            // A panic in one run (a failed assertion) fails the test.
            if let Err(e) = result {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        done += BATCH;
    }
    settles_to(what, fds, tasks).await;
}

fn is_abnormal_closure(e: &Error) -> bool {
    matches!(e, Error::Closed(c) if c.code == CloseCode::ABNORMAL_CLOSURE)
}

fn is_reset(e: &Error) -> bool {
    matches!(e, Error::Io(io) if matches!(io.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe))
}

/// Reads `stream` to its end; a reset counts as an end. Returns what was read.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    within(async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return,
                Ok(n) => data.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => return,
                Err(e) => panic!("unexpected read error {e}"),
            }
        }
    })
    .await;
    data
}

// ---------------------------------------------------------------------------
// A peer that vanishes

async fn server_sees_a_vanished_client() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut raw = RawClient::connect(addr).await;
    raw.send_frame(true, TEXT, b"hello").await;
    assert_eq!(raw.message().await.1, b"hello");
    drop(raw);
    let end = within(server).await.unwrap();
    assert!(is_abnormal_closure(&end), "a client gone without a close frame is 1006: {end:?}");
}

#[test]
fn peer_vanishes_server_read_is_1006() {
    serial(no_leak("vanished client", server_sees_a_vanished_client));
}

async fn client_sees_a_vanished_server() {
    let (addr, server) = spawn_server(Upgrader::new(), |conn| async move { drop(conn) }).await;
    let dialer = Dialer::new().proxy(Proxy::None).handshake_timeout(Some(LIMIT));
    let (mut conn, _) = within(dialer.connect(&format!("ws://{addr}/"))).await.unwrap();
    within(server).await.unwrap();
    let end = within(conn.read_message()).await.unwrap_err();
    assert!(is_abnormal_closure(&end), "a server gone without a close frame is 1006: {end:?}");
    // Permanent, and writes do not hang either.
    assert!(is_abnormal_closure(&within(conn.read_message()).await.unwrap_err()));
    let _ = within(conn.write_text("after")).await;
}

#[test]
fn peer_vanishes_client_read_is_1006() {
    serial(no_leak("vanished server", client_sees_a_vanished_server));
}

async fn vanish_while_we_wait_for_the_close() {
    // The close timeout is long: the close must not wait for it once the
    // peer is known to be gone.
    let upgrader = Upgrader::new().close_timeout(Duration::from_secs(2));
    let (addr, server) = spawn_server(upgrader, |mut conn| async move {
        let start = Instant::now();
        let result = conn.close(CloseFrame::new(CloseCode::NORMAL, "bye")).await;
        (result, start.elapsed())
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    assert_eq!(raw.read_close().await, Some((1000, "bye".to_owned())));
    drop(raw);
    let (result, elapsed) = within(server).await.unwrap();
    result.unwrap();
    assert!(elapsed < Duration::from_millis(500), "close waited {elapsed:?} for a peer that had gone");
}

#[test]
fn peer_vanishes_during_the_close_handshake_close_returns_at_once() {
    serial(no_leak("vanished during close", vanish_while_we_wait_for_the_close));
}

// ---------------------------------------------------------------------------
// A peer that never answers our close

const CLOSE_TIMEOUT: Duration = Duration::from_millis(100);

async fn close_against_a_silent_peer() {
    let upgrader = Upgrader::new().close_timeout(CLOSE_TIMEOUT);
    let (addr, server) = spawn_server(upgrader, |mut conn| async move {
        let start = Instant::now();
        let result = conn.close(CloseFrame::new(CloseCode::GOING_AWAY, "")).await;
        (result, start.elapsed(), conn)
    })
    .await;
    let mut raw = RawClient::connect(addr).await;
    assert_eq!(raw.read_close().await, Some((1001, String::new())));
    // No answer, but the server closes the socket by itself.
    raw.expect_eof().await;
    let (result, elapsed, conn) = within(server).await.unwrap();
    result.unwrap();
    assert!(elapsed >= CLOSE_TIMEOUT - Duration::from_millis(5), "gave up early: {elapsed:?}");
    assert!(elapsed < CLOSE_TIMEOUT + Duration::from_millis(400), "close took {elapsed:?}");
    drop(conn);
    drop(raw);
}

#[test]
fn peer_never_answers_close_returns_within_close_timeout() {
    serial(no_leak("silent peer on close", close_against_a_silent_peer));
}

// ---------------------------------------------------------------------------
// Resets

async fn reset_in_the_middle_of_a_frame() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut raw = RawClient::connect(addr).await;
    let frame = masked(true, BINARY, &pattern(2000));
    raw.send(&frame[..700]).await;
    raw.stream.set_zero_linger().unwrap();
    drop(raw);
    let end = within(server).await.unwrap();
    assert!(is_reset(&end) || is_abnormal_closure(&end), "expected an I/O reset or 1006, got {end:?}");
}

#[test]
fn reset_mid_frame_is_io_error_or_1006() {
    serial(no_leak("reset mid-frame", reset_in_the_middle_of_a_frame));
}

async fn reset_while_we_write() {
    let (mut conn, client) = small_buffer_pair(Upgrader::new()).await;
    let writer = tokio::spawn(async move {
        let block = pattern(64 << 10);
        let mut writes = 0usize;
        let end = loop {
            if let Err(e) = conn.write_binary(&block).await {
                break e;
            }
            writes += 1;
            assert!(writes < 1000, "the socket buffers never filled up");
        };
        (end, conn)
    });
    // The peer does not read: the writer blocks; then the peer resets.
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!writer.is_finished(), "the write should be blocked");
    client.set_zero_linger().unwrap();
    drop(client);
    let (end, mut conn) = within(writer).await.unwrap();
    assert!(is_reset(&end), "a write to a reset connection is an I/O error: {end:?}");
    let start = Instant::now();
    let closed = within(conn.close(CloseFrame::new(CloseCode::NORMAL, ""))).await;
    assert!(closed.is_err(), "{closed:?}");
    assert!(start.elapsed() < Duration::from_millis(500), "close after a reset took {:?}", start.elapsed());
}

#[test]
fn reset_while_writing_is_io_error() {
    serial(no_leak("reset while writing", reset_while_we_write));
}

// ---------------------------------------------------------------------------
// A half-closed stream

async fn half_close_in_the_middle_of_a_frame() {
    let (addr, server) = spawn_echo_server(Upgrader::new()).await;
    let mut raw = RawClient::connect(addr).await;
    let frame = masked(true, TEXT, b"half of this frame is never sent");
    raw.send(&frame[..frame.len() / 2]).await;
    raw.stream.shutdown().await.unwrap();
    let end = within(server).await.unwrap();
    assert!(is_abnormal_closure(&end), "EOF inside a frame is 1006: {end:?}");
    // Our side may still read: the server sent nothing and closed.
    let rest = read_until_closed(&mut raw.stream).await;
    assert!(rest.is_empty(), "the server sent {rest:?} to a half-closed peer");
}

#[test]
fn half_closed_mid_frame_is_1006() {
    serial(no_leak("half-close mid-frame", half_close_in_the_middle_of_a_frame));
}

// ---------------------------------------------------------------------------
// A peer that stops reading

/// A silverback server connection and a raw client whose socket buffers are
/// small, so that writes to a client that does not read block quickly.
async fn small_buffer_pair(upgrader: Upgrader) -> (Conn<TcpStream>, TcpStream) {
    let socket = TcpSocket::new_v4().unwrap();
    // Accepted sockets inherit the listener's buffer sizes.
    socket.set_send_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpSocket::new_v4().unwrap();
    client.set_recv_buffer_size(4096).unwrap();
    let mut client = within(client.connect(addr)).await.unwrap();
    let (server, _) = within(listener.accept()).await.unwrap();
    client.write_all(request(addr, "").as_bytes()).await.unwrap();
    let conn = within(upgrader.accept(server)).await.unwrap();
    let mut buf = BytesMut::new();
    let head = read_head(&mut client, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    (conn, client)
}

const WRITE_DEADLINE: Duration = Duration::from_millis(100);

async fn write_deadline_against_a_stalled_reader() {
    let (mut conn, client) = small_buffer_pair(Upgrader::new().close_timeout(Duration::from_secs(2))).await;
    let block = pattern(64 << 10);
    let start = Instant::now();
    conn.set_write_deadline(Some(start + WRITE_DEADLINE));
    let mut writes = 0;
    let end = within(async {
        loop {
            if let Err(e) = conn.write_binary(&block).await {
                break e;
            }
            writes += 1;
            assert!(writes < 1000, "the socket buffers never filled up");
        }
    })
    .await;
    let elapsed = start.elapsed();
    assert!(matches!(end, Error::Timeout), "{end:?}");
    assert!(elapsed < WRITE_DEADLINE + Duration::from_millis(400), "the deadline fired after {elapsed:?}");
    // Permanent; and a close does not wait for the close timeout behind it.
    conn.set_write_deadline(None);
    assert!(matches!(within(conn.write_text("x")).await, Err(Error::Timeout)));
    let start = Instant::now();
    let closed = within(conn.close(CloseFrame::new(CloseCode::NORMAL, ""))).await;
    assert!(closed.is_err(), "the close frame cannot have been sent: {closed:?}");
    assert!(start.elapsed() < Duration::from_millis(500), "close took {:?}", start.elapsed());
    drop(conn);
    drop(client);
}

#[test]
fn stalled_reader_write_deadline_is_timeout() {
    serial(no_leak("write deadline", write_deadline_against_a_stalled_reader));
}

async fn close_now_against_a_stalled_reader() {
    let (conn, client) = small_buffer_pair(Upgrader::new()).await;
    let handle = conn.handle();
    let (read, mut write) = conn.split();
    let writer = tokio::spawn(async move {
        let block = pattern(64 << 10);
        let mut writes = 0usize;
        let end = loop {
            if let Err(e) = write.write_binary(&block).await {
                break e;
            }
            writes += 1;
            assert!(writes < 1000, "the socket buffers never filled up");
        };
        (end, write)
    });
    // The writer is blocked for good: there is no deadline.
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!writer.is_finished(), "the write should be blocked");
    let start = Instant::now();
    within(handle.close_now()).await;
    let (end, write) = within(writer).await.unwrap();
    assert!(start.elapsed() < Duration::from_millis(500), "the writer took {:?} to notice", start.elapsed());
    assert!(matches!(end, Error::Io(_)), "a write on a stream shut down under it is an I/O error: {end:?}");
    assert!(within(handle.ping(b"")).await.is_err());
    drop((read, write, handle));
    drop(client);
}

#[test]
fn stalled_reader_without_deadline_is_ended_by_close_now() {
    serial(no_leak("close_now on a blocked writer", close_now_against_a_stalled_reader));
}

// ---------------------------------------------------------------------------
// Handshake faults

const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(150);

async fn slowloris() {
    let upgrader = Upgrader::new().handshake_timeout(Some(HANDSHAKE_TIMEOUT));
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let start = Instant::now();
        let result = upgrader.accept(stream).await.map(drop);
        (result, start.elapsed())
    });
    let mut stream = within(TcpStream::connect(addr)).await.unwrap();
    let head = request(addr, "");
    // One byte every 20 ms: the whole head would take seconds.
    for byte in head.as_bytes() {
        if server.is_finished() || stream.write_all(std::slice::from_ref(byte)).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (result, elapsed) = within(server).await.unwrap();
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(elapsed >= HANDSHAKE_TIMEOUT - Duration::from_millis(5), "timed out early: {elapsed:?}");
    assert!(elapsed < HANDSHAKE_TIMEOUT + Duration::from_millis(400), "timed out late: {elapsed:?}");
    // Nothing was answered, and the server closed the connection.
    let rest = read_until_closed(&mut stream).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

#[test]
fn slowloris_handshake_times_out() {
    serial(no_leak("slowloris", slowloris));
}

const MAX_REQUEST_BYTES: usize = 1024;

/// Sends `head` to a server with a 1 KiB request bound, and checks the 431.
async fn oversized_head(head: String) {
    let upgrader = Upgrader::new().max_request_bytes(MAX_REQUEST_BYTES).max_headers(16);
    let (addr, server) = spawn_accept(upgrader).await;
    let mut stream = within(TcpStream::connect(addr)).await.unwrap();
    // The server may stop reading (and close) before all is written.
    let _ = stream.write_all(head.replace("{addr}", &addr.to_string()).as_bytes()).await;
    let response = read_until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 431 "), "expected a 431, got {text:?}");
    match within(server).await.unwrap() {
        Err(Error::RequestRefused { status, .. }) => assert_eq!(status.as_u16(), 431),
        other => panic!("expected a refused handshake, got {:?}", other.map(drop)),
    }
}

fn big_head(padding: usize) -> String {
    let mut head = "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n".to_owned();
    head.push_str(&format!("Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"));
    head.push_str(&format!("X-Padding: {}\r\n\r\n", "a".repeat(padding)));
    head
}

#[test]
fn oversized_request_head_is_431() {
    serial(async {
        // Complete heads of 2, 4 and 16 KiB; a head that never ends.
        oversized_head(big_head(2 << 10)).await;
        oversized_head(big_head(16 << 10)).await;
        let mut endless = big_head(4 << 10);
        endless.truncate(endless.len() - 4);
        oversized_head(endless).await;
        // Too many headers.
        let many: String = (0..40).map(|i| format!("X-{i}: v\r\n")).collect();
        oversized_head(big_head(0).replace("X-Padding: \r\n", &many)).await;
        no_leak("oversized head", || oversized_head(big_head(4 << 10))).await;
    });
}

// ---------------------------------------------------------------------------
// Keepalive

async fn vanish_with_a_ping_outstanding() {
    let upgrader = Upgrader::new().ping_interval(Some(Duration::from_millis(20))).pong_timeout(Duration::from_secs(2));
    let (addr, server) = spawn_server(upgrader, |mut conn| async move { conn.read_message().await }).await;
    let mut raw = RawClient::connect(addr).await;
    let ping = raw.frame().await;
    assert_eq!(ping.opcode, PING, "{ping:?}");
    // Never answered: the peer is gone.
    drop(raw);
    let end = within(server).await.unwrap().unwrap_err();
    assert!(is_abnormal_closure(&end), "{end:?}");
    // The application has dropped the connection: its socket and its
    // keepalive task must go now, not when the pong timeout ends.
}

#[test]
fn keepalive_dropped_connection_releases_socket_and_task() {
    serial(async {
        let (fds, tasks) = (open_fds(), alive_tasks());
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..BATCH {
            batch.spawn(vanish_with_a_ping_outstanding());
        }
        while let Some(result) = batch.join_next().await {
            result.unwrap();
        }
        settles_to("keepalive with a ping outstanding", fds, tasks).await;
    });
}
