//! What an idle connection costs in memory, counted by a counting allocator
//! (exact, not timed): the heap a server keeps per connection once the
//! handshake and a first echo are over, and the size of the futures a
//! connection's task holds while it waits.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Duration;

use silverback::{Conn, MessageType, Upgrader};
use tokio::net::{TcpListener, TcpStream};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Relaxed);
        LIVE_BLOCKS.fetch_add(1, Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The echo loop of the README.
async fn echo(upgrader: Upgrader, stream: TcpStream) -> silverback::Result<()> {
    let mut conn = upgrader.accept(stream).await?;
    loop {
        let msg = conn.read_message().await?;
        conn.feed_message(msg.kind, &msg.data).await?;
    }
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Opens a connection with blocking std sockets (so that the client side
/// allocates nothing in the measured window), sends one masked "hi" and
/// reads its echo.
fn open_and_echo(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(REQUEST).unwrap();
    let mut head = [0u8; 512];
    let mut len = 0;
    while !head[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut head[len..]).unwrap();
        assert!(n > 0, "server closed during the handshake");
        len += n;
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s.write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]).unwrap();
    let mut reply = [0u8; 4];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [0x81, 0x02, b'h', b'i']);
    s
}

#[test]
fn an_idle_connection_keeps_under_2_kib_of_heap_in_4_blocks() {
    const CONNECTIONS: usize = 200;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let addr = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upgrader = Upgrader::new();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(echo(upgrader.clone(), stream));
            }
        });
        addr
    });
    // Warm up: thread-local scratch space, tokio's slabs, the first spare
    // write buffer.
    let mut clients: Vec<_> = (0..20).map(|_| open_and_echo(addr)).collect();
    clients.reserve(CONNECTIONS);
    std::thread::sleep(Duration::from_millis(100));

    let (bytes_before, blocks_before) = (LIVE_BYTES.load(Relaxed), LIVE_BLOCKS.load(Relaxed));
    for _ in 0..CONNECTIONS {
        clients.push(open_and_echo(addr));
    }
    // Let every server task reach its idle wait.
    std::thread::sleep(Duration::from_millis(200));
    let bytes = (LIVE_BYTES.load(Relaxed) - bytes_before) as f64 / CONNECTIONS as f64;
    let blocks = (LIVE_BLOCKS.load(Relaxed) - blocks_before) as f64 / CONNECTIONS as f64;
    // The task (its future holds the connection), the connection's shared
    // state, and tokio's registration of the socket.
    assert!(bytes <= 2048.0, "{bytes:.0} bytes of heap per idle connection");
    assert!(blocks <= 4.0, "{blocks:.2} heap blocks per idle connection");
    drop(clients);
    runtime.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn the_futures_a_connection_task_holds_stay_small() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();

        assert!(std::mem::size_of::<Upgrader>() <= 16, "Upgrader is {} bytes", std::mem::size_of::<Upgrader>());
        let echo_task = echo(Upgrader::new(), server);
        let size = std::mem::size_of_val(&echo_task);
        assert!(size <= 1024, "the echo task's future is {size} bytes");
        drop(echo_task);

        let mut conn = Conn::from_raw(client, silverback::Role::Client, Default::default(), None, Default::default());
        assert!(std::mem::size_of_val(&conn) <= 512, "Conn is {} bytes", std::mem::size_of_val(&conn));
        let read = std::mem::size_of_val(&conn.read_message());
        let feed = std::mem::size_of_val(&conn.feed_message(MessageType::Text, "x"));
        let write = std::mem::size_of_val(&conn.write_message(MessageType::Text, "x"));
        let flush = std::mem::size_of_val(&conn.flush());
        let close = std::mem::size_of_val(&conn.close(silverback::CloseFrame::new(silverback::CloseCode::NORMAL, "")));
        for (name, size) in [
            ("read_message", read),
            ("feed_message", feed),
            ("write_message", write),
            ("flush", flush),
            ("close", close),
        ] {
            assert!(size <= 320, "the {name} future is {size} bytes");
        }
    });
}
