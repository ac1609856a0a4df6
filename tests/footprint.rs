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
        let _ = THREAD_ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
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

/// The counts are process-wide: the tests that read them run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
fn an_idle_connection_keeps_under_1_5_kib_of_heap_in_3_blocks() {
    let _serial = serial();
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
    assert!(bytes <= 1536.0, "{bytes:.0} bytes of heap per idle connection");
    assert!(blocks <= 3.0, "{blocks:.2} heap blocks per idle connection");
    drop(clients);
    runtime.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn the_futures_a_connection_task_holds_stay_small() {
    let _serial = serial();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();

        assert!(std::mem::size_of::<Upgrader>() <= 16, "Upgrader is {} bytes", std::mem::size_of::<Upgrader>());
        let echo_task = echo(Upgrader::new(), server);
        let size = std::mem::size_of_val(&echo_task);
        assert!(size <= 704, "the echo task's future is {size} bytes");
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

thread_local! {
    /// Allocations made by this thread (the tests' runtimes run on it).
    static THREAD_ALLOCATIONS: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

/// Counts the allocations this thread makes while `f` runs.
fn allocations_during<R>(f: impl FnOnce() -> R) -> (R, isize) {
    let before = THREAD_ALLOCATIONS.with(|count| count.get());
    let result = f();
    (result, THREAD_ALLOCATIONS.with(|count| count.get()) - before)
}

/// Sends `warm_up` 32-byte text messages each way a caller can
/// (`write_message`, and `feed_message` with one `flush`), then `messages`
/// more each way; returns the allocations this thread made after the
/// warm-up.
fn sending_allocations(
    runtime: &tokio::runtime::Runtime,
    conn: &mut Conn<TcpStream>,
    payload: [u8; 32],
    warm_up: usize,
    messages: usize,
) -> isize {
    runtime.block_on(async {
        for _ in 0..warm_up {
            conn.write_message(MessageType::Text, payload).await.unwrap();
            conn.feed_message(MessageType::Text, payload).await.unwrap();
        }
        conn.flush().await.unwrap();
    });
    let ((), writes) = allocations_during(|| {
        runtime.block_on(async {
            for _ in 0..messages {
                conn.write_message(MessageType::Text, payload).await.unwrap();
            }
        })
    });
    let ((), feeds) = allocations_during(|| {
        runtime.block_on(async {
            for _ in 0..messages {
                conn.feed_message(MessageType::Text, payload).await.unwrap();
            }
            conn.flush().await.unwrap();
        })
    });
    writes + feeds
}

/// Reads one text message per entry of `expected`, checking each; returns
/// how many were read and the allocations this thread made meanwhile.
fn receiving_allocations(
    runtime: &tokio::runtime::Runtime,
    conn: &mut Conn<TcpStream>,
    expected: &[String],
) -> (usize, isize) {
    allocations_during(|| {
        runtime.block_on(async {
            let mut received = 0;
            for text in expected {
                let msg = conn.read_message().await.unwrap();
                assert_eq!(msg.kind, MessageType::Text);
                assert_eq!(msg.data, text.as_bytes());
                received += 1;
            }
            received
        })
    })
}

/// A server-side connection over loopback, and the peer's blocking socket.
fn server_conn(runtime: &tokio::runtime::Runtime) -> (Conn<TcpStream>, std::net::TcpStream) {
    runtime.block_on(async {
        // Room for every frame in flight (each small write costs the socket
        // far more than its bytes), so that no write meets backpressure.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(8 << 20).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        (Conn::from_raw(stream, silverback::Role::Server, Default::default(), None, Default::default()), peer)
    })
}

#[test]
fn sending_small_messages_allocates_nothing_once_warm() {
    let _serial = serial();
    const MESSAGES: usize = 1000;
    const WARM_UP: usize = 200;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (mut conn, mut peer) = server_conn(&runtime);
    // The peer drains everything on its own thread, into a stack buffer.
    let frame_len = 2 + 32;
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut left = (MESSAGES + WARM_UP) * frame_len * 2;
        while left > 0 {
            left -= peer.read(&mut buf[..left.min(4096)]).unwrap();
        }
    });
    let payload = [b'x'; 32];
    // Warm-up: spare write buffers, the stream's registration.
    let count = sending_allocations(&runtime, &mut conn, payload, WARM_UP, MESSAGES);
    reader.join().unwrap();
    // At most tokio's own list of deferred wake-ups, made afresh in each
    // `block_on` when the task's budget runs out.
    assert!(count <= 1, "{count} allocations for {} messages sent", 2 * MESSAGES);
}

#[test]
fn receiving_pipelined_messages_allocates_per_read_not_per_message() {
    let _serial = serial();
    const MESSAGES: usize = 1000;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (mut conn, mut peer) = server_conn(&runtime);
    let key = [1u8, 2, 3, 4];
    let mut frames = Vec::new();
    for i in 0..MESSAGES {
        let text = format!("message {i:>24}");
        frames.extend_from_slice(&[0x81, 0x80 | text.len() as u8]);
        frames.extend_from_slice(&key);
        frames.extend(text.bytes().enumerate().map(|(j, b)| b ^ key[j % 4]));
    }
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("message {i:>24}")).collect();
    peer.write_all(&frames).unwrap();
    let (received, count) = receiving_allocations(&runtime, &mut conn, &expected);
    assert_eq!(received, MESSAGES);
    // Each read (up to 4 KiB, about 120 of these frames) takes one buffer
    // and one shared-ownership record for the messages split from it; a
    // frame cut by the end of a read moves to a buffer of its own.
    assert!(count <= MESSAGES as isize / 10, "{count} allocations for {MESSAGES} messages received");
}

/// A client-side connection made by the client's opening handshake
/// (`Dialer::connect_on`) over loopback, and the server's blocking socket,
/// whose handshake a thread of its own answers by hand.
fn client_conn(runtime: &tokio::runtime::Runtime) -> (Conn<TcpStream>, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        // Byte by byte, so that nothing after the request is taken.
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "client closed during the handshake");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-key"))
            .expect("no Sec-WebSocket-Key")
            .1
            .trim();
        let accept = silverback::proto::handshake::accept_key(key.as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        s.write_all(response.as_bytes()).unwrap();
        s
    });
    let conn = runtime.block_on(async {
        // Room for every frame in flight, as for the server's test above.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(8 << 20).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let url = format!("ws://{addr}/");
        let (conn, response) = silverback::Dialer::new().connect_on(stream, &url).await.unwrap();
        assert_eq!(response.status(), 101);
        conn
    });
    assert_eq!(conn.role(), silverback::Role::Client);
    (conn, server.join().unwrap())
}

/// Parses client frames (text, FIN, masked, 7-bit length): their masking
/// keys and unmasked payloads.
fn masked_frames(mut bytes: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert_eq!(bytes[0], 0x81, "a text frame with FIN");
        assert!(bytes[1] & 0x80 != 0, "a client frame must be masked");
        let len = (bytes[1] & 0x7f) as usize;
        assert!(len < 126);
        let key = [bytes[2], bytes[3], bytes[4], bytes[5]];
        let payload = bytes[6..6 + len].iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
        frames.push((key, payload));
        bytes = &bytes[6 + len..];
    }
    frames
}

#[test]
fn a_client_sending_small_masked_messages_allocates_nothing_once_warm() {
    let _serial = serial();
    const MESSAGES: usize = 1000;
    const WARM_UP: usize = 200;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (mut conn, mut peer) = client_conn(&runtime);
    // The server side keeps everything on its own thread (its allocations
    // are not this thread's), to check the frames afterwards.
    let frame_len = 2 + 4 + 32;
    let total = (MESSAGES + WARM_UP) * frame_len * 2;
    let reader = std::thread::spawn(move || {
        let mut all = vec![0u8; total];
        peer.read_exact(&mut all).unwrap();
        all
    });
    let payload = [b'x'; 32];
    // Warm-up: spare write buffers, the stream's registration, the
    // thread's random number generator for the masking keys.
    let count = sending_allocations(&runtime, &mut conn, payload, WARM_UP, MESSAGES);
    let frames = masked_frames(&reader.join().unwrap());
    assert_eq!(frames.len(), 2 * (MESSAGES + WARM_UP));
    assert!(frames.iter().all(|(_, p)| p[..] == payload[..]), "a payload was not masked right");
    // A fresh key for every frame (RFC 6455 §5.3): a repeat among 2400
    // random 32-bit keys is unlikely (p ≈ 0.07%), two repeats far less.
    let mut keys: Vec<[u8; 4]> = frames.iter().map(|(k, _)| *k).collect();
    keys.sort_unstable();
    keys.dedup();
    assert!(keys.len() + 2 >= frames.len(), "masking keys repeat: {} distinct of {}", keys.len(), frames.len());
    // At most tokio's own list of deferred wake-ups, made afresh in each
    // `block_on` when the task's budget runs out.
    assert!(count <= 1, "{count} allocations for {} masked messages sent", 2 * MESSAGES);
}

#[test]
fn a_client_receiving_pipelined_messages_allocates_per_read_not_per_message() {
    let _serial = serial();
    const MESSAGES: usize = 1000;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (mut conn, mut peer) = client_conn(&runtime);
    // Server frames: unmasked.
    let mut frames = Vec::new();
    for i in 0..MESSAGES {
        let text = format!("message {i:>24}");
        frames.extend_from_slice(&[0x81, text.len() as u8]);
        frames.extend_from_slice(text.as_bytes());
    }
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("message {i:>24}")).collect();
    peer.write_all(&frames).unwrap();
    let (received, count) = receiving_allocations(&runtime, &mut conn, &expected);
    assert_eq!(received, MESSAGES);
    // As for the server: each read (up to 4 KiB, about 120 of these frames)
    // takes one buffer and one shared-ownership record for the messages
    // split from it; a frame cut by the end of a read moves to a buffer of
    // its own.
    assert!(count <= MESSAGES as isize / 10, "{count} allocations for {MESSAGES} messages received");
}
