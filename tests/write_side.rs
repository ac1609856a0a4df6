//! The write side when several tasks share one stream, when the stream is
//! full, and when futures are dropped part-way: every write finishes once the
//! peer reads, streamed messages end with exactly one final frame, a dropped
//! write never lets later bytes into the middle of its frame, a dropped read
//! loses nothing, and a read deadline holds while fed frames wait. Ends with a
//! stress run of every kind of writer at once.

mod common;

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{masked, parse_frame, pattern, Frame, BINARY, CLOSE, CONT, PING, PONG, TEXT};
use silverback::{CloseCode, CloseFrame, Config, Conn, Error, MessageType, PreparedMessage, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpSocket, TcpStream};

/// The bound on any one step; only reached when something hangs.
const STEP: Duration = Duration::from_secs(3);

/// Awaits `f`, failing the test with `what` if it is still pending after [`STEP`].
async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(STEP, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: still pending after {STEP:?}"),
    }
}

/// A data message as the peer sees it: opcode and payload.
type Msg = (u8, Vec<u8>);

fn kind_of(opcode: u8) -> MessageType {
    match opcode {
        TEXT => MessageType::Text,
        BINARY => MessageType::Binary,
        other => panic!("not a data opcode: {other}"),
    }
}

fn message_kind_of(opcode: u8) -> MessageType {
    match opcode {
        TEXT => MessageType::Text,
        _ => MessageType::Binary,
    }
}

fn opcode_of(kind: MessageType) -> u8 {
    match kind {
        MessageType::Text => TEXT,
        MessageType::Binary => BINARY,
        other => panic!("not a data message: {other:?}"),
    }
}

/// `n` bytes of pattern that start with `tag`, so that messages of equal
/// length still differ.
fn tagged(tag: &str, n: usize) -> Vec<u8> {
    let mut data = pattern(n.max(tag.len()));
    data[..tag.len()].copy_from_slice(tag.as_bytes());
    data
}

/// `n` bytes of ASCII text that start with `tag`.
fn text(tag: &str, n: usize) -> Vec<u8> {
    let mut data: Vec<u8> = (0..n.max(tag.len())).map(|i| b'a' + (i % 26) as u8).collect();
    data[..tag.len()].copy_from_slice(tag.as_bytes());
    data
}

/// Short descriptions of messages, for assertion messages.
fn describe(messages: &[Msg]) -> Vec<String> {
    messages
        .iter()
        .map(|(opcode, data)| {
            let head = String::from_utf8_lossy(&data[..data.len().min(12)]).into_owned();
            format!("{}({} bytes, {head:?}…)", if *opcode == TEXT { "text" } else { "binary" }, data.len())
        })
        .collect()
}

fn server(io: DuplexStream, config: Config) -> Conn<DuplexStream> {
    Conn::from_raw(io, Role::Server, config, None, BytesMut::new())
}

fn client(io: DuplexStream) -> Conn<DuplexStream> {
    Conn::from_raw(io, Role::Client, Config::default(), None, BytesMut::new())
}

/// A configuration whose close handshake gives up quickly on a peer that
/// does not answer.
fn quick_close() -> Config {
    let mut config = Config::default();
    config.close_timeout = Duration::from_millis(300);
    config
}

fn with_keepalive(interval: Duration) -> Config {
    let mut config = quick_close();
    config.ping_interval = Some(interval);
    config
}

fn normal_close() -> CloseFrame {
    CloseFrame::new(CloseCode::NORMAL, "")
}

/// Polls `fut` up to `polls` times, yielding between polls so that the other
/// tasks (the peer) run, then drops it. Its output, if it finished.
async fn poll_then_drop<F: Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = pin!(fut);
    for _ in 0..polls {
        if let Poll::Ready(out) = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
            return Some(out);
        }
        tokio::task::yield_now().await;
    }
    None
}

// ---------------------------------------------------------------------------
// A raw peer that reads frame by frame and checks every one.

/// The client end of a connection, read as raw frames.
struct RawPeer<S> {
    io: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawPeer<S> {
    fn new(io: S) -> Self {
        RawPeer { io, buf: BytesMut::new() }
    }

    /// The next frame; `Ok(None)` at EOF between frames, an error at EOF
    /// inside one or for a length no frame may have.
    async fn next_frame(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            if self.buf.len() >= 3 && self.buf[1] & 0x7f == 127 && self.buf[2] & 0x80 != 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "64-bit length with the top bit set"));
            }
            if let Some(frame) = parse_frame(&mut self.buf) {
                return Ok(Some(frame));
            }
            self.buf.reserve(16 * 1024);
            if self.io.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// Everything a server sent, as its peer saw it.
#[derive(Debug, Default)]
struct Transcript {
    /// Whole data messages, in order.
    messages: Vec<Msg>,
    pings: Vec<Vec<u8>>,
    /// The status code of the close frame, once one came (`Some(None)`: no code).
    close: Option<Option<u16>>,
    /// The first frame that broke the protocol, described.
    fault: Option<String>,
    /// The stream ended inside a frame or a fragmented message.
    cut: bool,
}

impl Transcript {
    fn fault_free(&self, case: &str) {
        if let Some(fault) = &self.fault {
            panic!(
                "{case}: the peer received an invalid frame: {fault} (messages before it: {:?})",
                describe(&self.messages)
            );
        }
    }
}

/// Reads everything the server sends until EOF, checking each frame against
/// RFC 6455 (server frames: unmasked, no RSV bits, data fragments in order,
/// control frames whole), and answers a close frame with a close frame.
/// After the first fault it only drains.
async fn record<S: AsyncRead + AsyncWrite + Unpin>(io: S) -> Transcript {
    let mut peer = RawPeer::new(io);
    let mut t = Transcript::default();
    let mut open: Option<Msg> = None;
    loop {
        let frame = match peer.next_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                t.cut |= open.is_some();
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                t.fault.get_or_insert_with(|| e.to_string());
                peer.buf.clear();
                let mut sink = [0u8; 4096];
                while matches!(peer.io.read(&mut sink).await, Ok(n) if n > 0) {}
                break;
            }
            Err(_) => {
                t.cut = true;
                break;
            }
        };
        if t.fault.is_some() {
            continue;
        }
        let summary = format!("opcode {} fin {} {} bytes", frame.opcode, frame.fin, frame.payload.len());
        let fault = if frame.masked {
            Some(format!("a masked frame ({summary})"))
        } else if frame.rsv != 0 {
            Some(format!("RSV bits {} ({summary})", frame.rsv))
        } else if t.close.is_some() {
            Some(format!("a frame after the close frame ({summary})"))
        } else {
            match frame.opcode {
                TEXT | BINARY if open.is_some() => Some(format!("a new message inside a fragmented one ({summary})")),
                TEXT | BINARY if frame.fin => {
                    t.messages.push((frame.opcode, frame.payload));
                    None
                }
                TEXT | BINARY => {
                    open = Some((frame.opcode, frame.payload));
                    None
                }
                CONT => match open.as_mut() {
                    None => Some(format!("a continuation frame outside any message ({summary})")),
                    Some((_, data)) => {
                        data.extend_from_slice(&frame.payload);
                        if frame.fin {
                            t.messages.extend(open.take());
                        }
                        None
                    }
                },
                PING | PONG | CLOSE if !frame.fin || frame.payload.len() > 125 => {
                    Some(format!("a fragmented or oversized control frame ({summary})"))
                }
                PING => {
                    t.pings.push(frame.payload);
                    None
                }
                PONG => None,
                CLOSE if frame.payload.len() == 1 => Some("a close frame with a 1-byte payload".to_string()),
                CLOSE => {
                    let code =
                        (frame.payload.len() >= 2).then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                    t.close = Some(code);
                    let _ = peer.io.write_all(&masked(true, CLOSE, &frame.payload)).await;
                    None
                }
                other => Some(format!("reserved opcode {other} ({summary})")),
            }
        };
        if fault.is_some() {
            t.fault = fault;
        }
    }
    t
}

// ---------------------------------------------------------------------------
// Lost wake-ups: a write must finish once the peer has read its bytes, even
// when other tasks wrote to the stream while it waited.

#[tokio::test]
async fn a_write_finishes_when_the_read_half_replies_to_a_ping_while_it_waits() {
    let (io, peer_io) = tokio::io::duplex(64);
    let (mut read, mut write) = server(io, Config::default()).split();
    let reader = tokio::spawn(async move {
        loop {
            if let Err(e) = read.read_message().await {
                return e;
            }
        }
    });
    let data = tagged("a frame larger than the pipe", 200);
    let sent = data.clone();
    let writer = tokio::spawn(async move { write.write_binary(&sent).await });
    // The writer has filled the pipe and waits for room.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!writer.is_finished(), "200 bytes cannot fit in a 64-byte pipe that nobody reads");

    let mut peer = RawPeer::new(peer_io);
    peer.io.write_all(&masked(true, PING, b"are you there")).await.unwrap();
    // The read half answers, and its pong waits for room too.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (mut binary, mut pong) = (None, None);
    bounded("the peer reading the binary frame and the pong", async {
        while binary.is_none() || pong.is_none() {
            let frame = peer.next_frame().await.unwrap().expect("the server ended the stream");
            match frame.opcode {
                BINARY => binary = Some(frame),
                PONG => pong = Some(frame),
                other => panic!("unexpected frame {other}"),
            }
        }
    })
    .await;
    let binary = binary.unwrap();
    assert!(binary.fin && binary.payload == data, "the binary frame arrived altered");
    assert_eq!(pong.unwrap().payload, b"are you there");

    let written = tokio::time::timeout(STEP, writer)
        .await
        .expect("write_binary is still pending although the peer has read every byte of its frame")
        .unwrap();
    written.unwrap();
    reader.abort();
}

/// A server socket and its peer over loopback, each with 4 KiB socket buffers.
async fn small_buffer_tcp_pair() -> (TcpStream, TcpStream) {
    let listening = TcpSocket::new_v4().unwrap();
    listening.set_send_buffer_size(4096).unwrap();
    listening.set_recv_buffer_size(4096).unwrap();
    listening.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = listening.listen(1).unwrap();
    let connecting = TcpSocket::new_v4().unwrap();
    connecting.set_send_buffer_size(4096).unwrap();
    connecting.set_recv_buffer_size(4096).unwrap();
    let (peer, accepted) = tokio::join!(connecting.connect(listener.local_addr().unwrap()), listener.accept());
    (accepted.unwrap().0, peer.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_over_tcp_all_finish_when_the_peer_pings_while_the_socket_is_full() {
    const MESSAGES: usize = 200;
    let (stream, peer_stream) = small_buffer_tcp_pair().await;
    let (mut read, mut write) = Conn::from_raw(stream, Role::Server, Config::default(), None, BytesMut::new()).split();
    let reader = tokio::spawn(async move {
        loop {
            if let Err(e) = read.read_message().await {
                return e;
            }
        }
    });
    let done = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let done = done.clone();
        async move {
            for i in 0..MESSAGES {
                write.write_binary(tagged(&format!("message {i}"), 3000)).await.unwrap();
                done.fetch_add(1, Ordering::Release);
            }
        }
    });

    let mut peer = RawPeer::new(peer_stream);
    let mut received = 0;
    let mut pinged = false;
    while received < MESSAGES {
        let frame = match tokio::time::timeout(STEP, peer.next_frame()).await {
            Ok(frame) => frame.unwrap().expect("the server ended the stream"),
            Err(_) => panic!(
                "nothing more arrived for {STEP:?}: {} of {MESSAGES} writes finished, {received} messages received",
                done.load(Ordering::Acquire)
            ),
        };
        match frame.opcode {
            BINARY => {
                assert!(frame.payload == tagged(&format!("message {received}"), 3000), "message {received} altered");
                received += 1;
            }
            PONG => assert_eq!(frame.payload, b"ping"),
            other => panic!("unexpected frame {other}"),
        }
        if received == 20 && !pinged {
            // Stop reading until the socket is full and the writer waits,
            // then ping: the read half's pong meets the full socket too.
            pinged = true;
            tokio::time::sleep(Duration::from_millis(100)).await;
            peer.io.write_all(&masked(true, PING, b"ping")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A slow reader.
        if received % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    bounded("the writer task", writer).await.unwrap();
    reader.abort();
}

#[tokio::test]
async fn writes_all_finish_while_keepalive_pings_share_a_full_pipe() {
    const MESSAGES: usize = 200;
    let (io, peer_io) = tokio::io::duplex(4096);
    let mut conn = server(io, with_keepalive(Duration::from_millis(20)));
    let peer = tokio::spawn(async move {
        // The peer starts reading late: meanwhile the writer and the
        // keepalive pings both wait for room.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut peer = RawPeer::new(peer_io);
        let mut received = 0;
        while received < MESSAGES {
            let Ok(frame) = tokio::time::timeout(STEP, peer.next_frame()).await else {
                return received;
            };
            let frame = frame.unwrap().expect("the server ended the stream");
            if frame.opcode == BINARY {
                assert!(frame.payload == tagged(&format!("message {received}"), 3000), "message {received} altered");
                received += 1;
            }
        }
        received
    });
    let mut done = 0;
    let writes = tokio::time::timeout(STEP, async {
        for i in 0..MESSAGES {
            conn.write_binary(tagged(&format!("message {i}"), 3000)).await.unwrap();
            done += 1;
        }
    })
    .await;
    assert!(writes.is_ok(), "only {done} of {MESSAGES} writes finished; the rest waited forever");
    assert_eq!(bounded("the peer", peer).await.unwrap(), MESSAGES);
}

// ---------------------------------------------------------------------------
// Streamed messages: exactly the frames of each message, one FIN each.

/// The streamed messages of the tests below: sizes from below one fragment
/// to many fragments, text and binary.
fn streamed_messages(count: usize) -> Vec<Msg> {
    (0..count)
        .map(|i| {
            let size = 50 + (i * 613) % 9000;
            match i % 3 {
                0 => (TEXT, text(&format!("streamed {i}"), size)),
                _ => (BINARY, tagged(&format!("streamed {i}"), size)),
            }
        })
        .collect()
}

async fn stream_message(conn: &mut Conn<DuplexStream>, (opcode, data): &Msg, shutdown: bool) -> silverback::Result<()> {
    let mut writer = conn.next_writer(message_kind_of(*opcode)).await?;
    writer.write_all(data).await?;
    if shutdown {
        writer.shutdown().await?;
        Ok(())
    } else {
        writer.close().await
    }
}

#[tokio::test]
async fn a_streamed_message_closed_over_a_full_pipe_ends_with_exactly_one_final_frame() {
    let messages = streamed_messages(30);
    let (io, peer_io) = tokio::io::duplex(64);
    let mut config = quick_close();
    config.write_buffer_size = 1024;
    let mut conn = server(io, config);
    let peer = tokio::spawn(record(peer_io));
    for (i, message) in messages.iter().enumerate() {
        bounded(&format!("streaming message {i}"), stream_message(&mut conn, message, false)).await.unwrap();
    }
    bounded("the close handshake", conn.close(normal_close())).await.unwrap();
    drop(conn);
    let t = bounded("the peer", peer).await.unwrap();
    t.fault_free("streamed messages over a 64-byte pipe");
    assert!(!t.cut, "the stream ended inside a frame");
    assert!(t.messages == messages, "the peer received {:?}", describe(&t.messages));
    assert_eq!(t.close, Some(Some(1000)));
}

#[tokio::test]
async fn a_streamed_message_shut_down_over_a_full_pipe_reaches_a_silverback_client_intact() {
    let messages = streamed_messages(30);
    let (io, peer_io) = tokio::io::duplex(64);
    let mut config = quick_close();
    config.write_buffer_size = 1024;
    let mut conn = server(io, config);
    let peer = tokio::spawn(async move {
        let mut peer = client(peer_io);
        let mut received = Vec::new();
        loop {
            match peer.read_message().await {
                Ok(msg) => received.push((opcode_of(msg.kind), msg.data.to_vec())),
                Err(e) => return (received, e),
            }
        }
    });
    let mut failed = None;
    for (i, message) in messages.iter().enumerate() {
        if let Err(e) = bounded(&format!("streaming message {i}"), stream_message(&mut conn, message, true)).await {
            failed = Some((i, e));
            break;
        }
    }
    let _ = bounded("the close handshake", conn.close(normal_close())).await;
    drop(conn);
    let (received, end) = bounded("the client", peer).await.unwrap();
    assert!(
        end.is_close(&[CloseCode::NORMAL]),
        "the client ended with {end:?} after {} of {} messages",
        received.len(),
        messages.len()
    );
    assert!(received == messages, "the client received {:?}", describe(&received));
    assert!(failed.is_none(), "a streamed write failed: {failed:?}");
}

#[tokio::test]
async fn streamed_messages_without_backpressure_and_with_keepalive_each_end_with_one_final_frame() {
    // The pipe never fills; what keeps a final fragment from leaving at once
    // is the keepalive ping holding the stream, or the task's I/O budget.
    let messages: Vec<Msg> = (0..400).map(|i| (BINARY, tagged(&format!("streamed {i}"), 100 + i))).collect();
    let (io, peer_io) = tokio::io::duplex(1 << 20);
    let mut conn = server(io, with_keepalive(Duration::from_millis(1)));
    let peer = tokio::spawn(record(peer_io));
    for (i, message) in messages.iter().enumerate() {
        bounded(&format!("streaming message {i}"), stream_message(&mut conn, message, false)).await.unwrap();
    }
    bounded("the close handshake", conn.close(normal_close())).await.unwrap();
    drop(conn);
    let t = bounded("the peer", peer).await.unwrap();
    t.fault_free("streamed messages with keepalive");
    assert!(!t.cut, "the stream ended inside a frame");
    assert!(t.messages == messages, "the peer received {} messages: {:?}", t.messages.len(), describe(&t.messages));
    assert_eq!(t.close, Some(Some(1000)));
}

// ---------------------------------------------------------------------------
// A write dropped in the middle of its frame.

#[tokio::test]
async fn a_write_dropped_mid_frame_never_lets_a_later_payload_pass_for_frames() {
    const PIPE: usize = 64;
    let (io, peer_io) = tokio::io::duplex(PIPE);
    let mut conn = server(io, quick_close());
    // A relay sends a large message to a client that reads slowly, under a
    // timeout that cuts it off.
    let large = tagged("large", 100_000);
    let cut = tokio::time::timeout(Duration::from_millis(50), conn.write_binary(&large)).await;
    assert!(cut.is_err(), "100 kB cannot go through a 64-byte pipe that nobody reads");
    // The pipe holds the frame's 10-byte header and the start of its payload;
    // the client expects this many more payload bytes.
    let owed = large.len() - (PIPE - 10);
    // Content from elsewhere, built so that if its frame (10-byte header)
    // followed the cut one directly, the client's count of owed bytes would
    // end just before a text frame of its own.
    let injected = [&[0x81u8, 5][..], b"HACK!"].concat();
    let mut content = pattern(owed - 10);
    content.extend_from_slice(&injected);

    let peer = tokio::spawn(async move {
        let mut peer = client(peer_io);
        let mut received = Vec::new();
        loop {
            match peer.read_message().await {
                Ok(msg) => received.push((opcode_of(msg.kind), msg.data.to_vec())),
                Err(e) => return (received, e),
            }
        }
    });
    let later = bounded("the later write", conn.write_binary(&content)).await;
    let closed = bounded("the close handshake", conn.close(normal_close())).await;
    drop(conn);
    let (received, end) = bounded("the client", peer).await.unwrap();

    assert!(
        !received.iter().any(|(_, data)| data == b"HACK!"),
        "the client decoded bytes of a message's payload as a message of its own: {:?}",
        describe(&received)
    );
    let whole = [(BINARY, large), (BINARY, content)];
    match later {
        Ok(()) => {
            assert!(
                received == whole || received == whole[1..],
                "the client received {:?}, not the messages sent (the cut one whole or absent, then the later one)",
                describe(&received)
            );
            closed.unwrap();
            assert!(end.is_close(&[CloseCode::NORMAL]), "the client ended with {end:?}");
        }
        Err(_) => assert!(
            received.is_empty() || received == whole[..1],
            "the later write failed, yet the client received {:?}",
            describe(&received)
        ),
    }
}

// ---------------------------------------------------------------------------
// Reads.

#[tokio::test]
async fn a_read_deadline_ends_a_read_while_fed_frames_wait_for_a_peer_that_does_not_read() {
    for write_deadline in [true, false] {
        let (io, _peer_io) = tokio::io::duplex(64);
        let mut conn = server(io, Config::default());
        conn.feed_message(MessageType::Binary, pattern(2000)).await.unwrap();
        let start = Instant::now();
        conn.set_read_deadline(Some(start + Duration::from_millis(200)));
        if write_deadline {
            conn.set_write_deadline(Some(start + Duration::from_millis(200)));
        }
        let read = tokio::time::timeout(Duration::from_secs(1), conn.read_message()).await.unwrap_or_else(|_| {
            panic!("read_message ignored its 200 ms read deadline for 1 s (write deadline set: {write_deadline})")
        });
        assert!(matches!(read, Err(Error::Timeout)), "{read:?}");
    }
}

#[tokio::test]
async fn a_read_message_dropped_between_fragments_loses_nothing() {
    let (io, mut peer) = tokio::io::duplex(4096);
    let mut conn = server(io, Config::default());
    peer.write_all(&masked(false, TEXT, b"hello, ")).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(100), conn.read_message()).await;
    assert!(early.is_err(), "only the first fragment has arrived: {early:?}");
    peer.write_all(&masked(true, CONT, b"world")).await.unwrap();
    peer.write_all(&masked(true, TEXT, b"next")).await.unwrap();
    let msg = bounded("the next read", conn.read_message()).await.unwrap();
    assert_eq!(msg.data, "hello, world", "the next read must return the whole message");
    let next = bounded("the read after it", conn.read_message()).await.unwrap();
    assert_eq!(next.data, "next");
}

#[tokio::test]
async fn a_read_message_dropped_inside_a_large_frame_loses_nothing() {
    let (io, mut peer) = tokio::io::duplex(256 * 1024);
    let mut conn = server(io, Config::default());
    let data = tagged("one large frame", 100_000);
    let frame = masked(true, BINARY, &data);
    peer.write_all(&frame[..30_000]).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(100), conn.read_message()).await;
    assert!(early.is_err(), "only part of the frame has arrived: {early:?}");
    peer.write_all(&frame[30_000..]).await.unwrap();
    peer.write_all(&masked(true, TEXT, b"next")).await.unwrap();
    let msg = bounded("the next read", conn.read_message()).await.unwrap();
    assert!(msg.data == data, "the next read returned {} bytes, not the whole 100000-byte message", msg.data.len());
    let next = bounded("the read after it", conn.read_message()).await.unwrap();
    assert_eq!(next.data, "next");
}

// ---------------------------------------------------------------------------
// Cancellation: every write dropped at every point where it can be pending.

/// An operation to drop part-way.
enum Op {
    /// `write_message`.
    Write(Msg),
    /// `write_binary`.
    Binary(Vec<u8>),
    /// `feed_message` of each, in turn.
    Feed(Vec<Msg>),
    /// `flush`, after these were fed.
    Flush(Vec<Msg>),
    /// `write_prepared`.
    Prepared(Msg),
    /// A ping from a `Handle`.
    Control(Vec<u8>),
    /// `next_writer`, `write_all` in pieces of this size, `close`.
    Stream(Msg, usize),
}

impl Op {
    /// The data messages the operation sends.
    fn messages(&self) -> Vec<Msg> {
        match self {
            Op::Write(msg) | Op::Prepared(msg) | Op::Stream(msg, _) => vec![msg.clone()],
            Op::Binary(data) => vec![(BINARY, data.clone())],
            Op::Feed(msgs) | Op::Flush(msgs) => msgs.clone(),
            Op::Control(_) => Vec::new(),
        }
    }

    /// Whether `got` is what the peer may see of `sent`, one of the
    /// operation's messages: `sent` itself, or for a streamed message, the
    /// part written before the drop (the next write ends a message whose
    /// writer was dropped unfinished).
    fn delivered(&self, got: &Msg, sent: &Msg) -> bool {
        match self {
            Op::Stream(..) => got.0 == sent.0 && sent.1.starts_with(&got.1),
            _ => got == sent,
        }
    }
}

async fn run_op(conn: &mut Conn<DuplexStream>, op: &Op) -> silverback::Result<()> {
    match op {
        Op::Write((opcode, data)) => conn.write_message(kind_of(*opcode), data).await,
        Op::Binary(data) => conn.write_binary(data).await,
        Op::Feed(msgs) => {
            for (opcode, data) in msgs {
                conn.feed_message(kind_of(*opcode), data).await?;
            }
            Ok(())
        }
        Op::Flush(_) => conn.flush().await,
        Op::Prepared((opcode, data)) => {
            conn.write_prepared(&PreparedMessage::new(kind_of(*opcode), Bytes::from(data.clone()))).await
        }
        Op::Control(payload) => conn.handle().write_control(MessageType::Ping, payload, None).await,
        Op::Stream((opcode, data), piece) => {
            let mut writer = conn.next_writer(message_kind_of(*opcode)).await?;
            for chunk in data.chunks(*piece) {
                writer.write_all(chunk).await?;
            }
            writer.close().await
        }
    }
}

/// The messages written after the dropped operation: whole, fed, and (over
/// pipes that pass it quickly) one large enough to skip the write buffer.
fn later_messages(pipe: usize) -> Vec<Msg> {
    let mut later = vec![(TEXT, text("later whole", 40)), (BINARY, tagged("later fed", 150))];
    if pipe >= 100 {
        later.push((TEXT, text("later large", 17_000)));
    }
    later
}

async fn write_later(conn: &mut Conn<DuplexStream>, later: &[Msg]) -> silverback::Result<()> {
    for (i, (opcode, data)) in later.iter().enumerate() {
        if i == 1 {
            conn.feed_message(kind_of(*opcode), data).await?;
        } else {
            conn.write_message(kind_of(*opcode), data).await?;
        }
    }
    Ok(())
}

/// Runs `op` over a pipe of `pipe` bytes, dropped after `polls` polls, then
/// writes [`later_messages`] and closes; checks what the peer received.
/// True when the operation finished within its polls.
async fn cancel_write(name: &str, op: &Op, pipe: usize, polls: usize, deadline: bool) -> bool {
    let case = format!("{name} over a {pipe}-byte pipe, dropped after {polls} poll(s)");
    let (io, peer_io) = tokio::io::duplex(pipe);
    let mut config = quick_close();
    config.write_buffer_size = 4096;
    let mut conn = server(io, config);
    if deadline {
        conn.set_write_deadline(Some(Instant::now() + Duration::from_secs(3600)));
    }
    let peer = tokio::spawn(record(peer_io));
    if let Op::Flush(fed) = op {
        for (opcode, data) in fed {
            conn.feed_message(kind_of(*opcode), data).await.unwrap();
        }
    }
    let outcome = poll_then_drop(run_op(&mut conn, op), polls).await;
    let mut failed = matches!(outcome, Some(Err(_)));
    let later = later_messages(pipe);
    failed |= bounded(&format!("{case}: the later writes"), write_later(&mut conn, &later)).await.is_err();
    failed |= bounded(&format!("{case}: the close handshake"), conn.close(normal_close())).await.is_err();
    drop(conn);
    let t = bounded(&format!("{case}: the peer"), peer).await.unwrap();

    t.fault_free(&case);
    assert!(
        failed || !t.cut,
        "{case}: the stream ended inside a frame, yet no write failed (the peer decoded {:?})",
        describe(&t.messages)
    );
    let dropped = op.messages();
    let fits = (0..=dropped.len()).any(|j| {
        t.messages.len() >= j
            && t.messages[..j].iter().zip(&dropped[..j]).all(|(got, sent)| op.delivered(got, sent))
            && {
                let rest = &t.messages[j..];
                if failed {
                    rest.len() <= later.len() && rest == &later[..rest.len()]
                } else {
                    rest == later
                }
            }
    });
    assert!(
        fits,
        "{case}: the peer received {:?}; expected the dropped operation's {:?} (each whole or absent; a streamed one \
         may end early) then {:?}{}",
        describe(&t.messages),
        describe(&dropped),
        describe(&later),
        if failed { " (or a part of them: a write failed)" } else { "" }
    );
    if let Op::Control(payload) = op {
        assert!(t.pings.is_empty() || t.pings == [payload.clone()], "{case}: the peer received pings {:?}", t.pings);
    }
    if !failed {
        assert_eq!(t.close, Some(Some(1000)), "{case}: the close frame");
    }
    outcome.is_some()
}

/// Drops `op` after 0, 1, 2, … polls, up to the poll that finishes it (or
/// `max_polls`), over each pipe size.
async fn sweep_writes(name: &str, op: Op, pipes: &[usize], max_polls: usize, deadline: bool) {
    for &pipe in pipes {
        for polls in 0..=max_polls {
            if cancel_write(name, &op, pipe, polls, deadline).await {
                break;
            }
        }
    }
}

#[tokio::test]
async fn dropping_write_message_at_any_point_sends_it_whole_or_not_at_all() {
    let small = (TEXT, text("small whole", 100));
    sweep_writes("write_message of 100 bytes", Op::Write(small.clone()), &[1, 7], 120, false).await;
    sweep_writes("write_message of 100 bytes, write deadline set", Op::Write(small), &[7], 30, true).await;
    let medium = (BINARY, tagged("medium whole", 6000));
    sweep_writes("write_message of 6000 bytes", Op::Write(medium.clone()), &[257], 40, false).await;
    sweep_writes("write_message of 6000 bytes, write deadline set", Op::Write(medium), &[257], 40, true).await;
    let large = tagged("large whole", 100_000);
    sweep_writes("write_binary of 100 kB", Op::Binary(large.clone()), &[4099], 40, false).await;
    sweep_writes("write_binary of 100 kB, cut in its header", Op::Binary(large.clone()), &[5], 2, false).await;
    sweep_writes("write_binary of 100 kB, write deadline set", Op::Binary(large), &[4099], 40, true).await;
}

#[tokio::test]
async fn dropping_feed_message_at_any_point_sends_each_message_whole_or_not_at_all() {
    let fed: Vec<Msg> = (0..5).map(|i| (BINARY, tagged(&format!("fed {i}"), 1500))).collect();
    sweep_writes("feed_message of 5 × 1500 bytes", Op::Feed(fed), &[257], 40, false).await;
    let large = vec![(BINARY, tagged("fed large", 100_000))];
    sweep_writes("feed_message of 100 kB", Op::Feed(large), &[4099], 40, false).await;
}

#[tokio::test]
async fn dropping_flush_at_any_point_sends_each_fed_message_whole_or_not_at_all() {
    let fed: Vec<Msg> = (0..3).map(|i| (TEXT, text(&format!("fed {i}"), 1000))).collect();
    sweep_writes("flush of 3 fed messages", Op::Flush(fed.clone()), &[3, 257], 40, false).await;
    sweep_writes("flush of 3 fed messages, write deadline set", Op::Flush(fed), &[3, 257], 40, true).await;
}

#[tokio::test]
async fn dropping_write_prepared_at_any_point_sends_it_whole_or_not_at_all() {
    let small = (TEXT, text("prepared small", 300));
    sweep_writes("write_prepared of 300 bytes", Op::Prepared(small), &[7], 60, false).await;
    let large = (BINARY, tagged("prepared large", 50_000));
    sweep_writes("write_prepared of 50 kB", Op::Prepared(large), &[4099], 20, false).await;
}

#[tokio::test]
async fn dropping_a_handle_write_control_at_any_point_sends_it_whole_or_not_at_all() {
    let payload = b"a ping from a handle, long enough to take several polls".to_vec();
    sweep_writes("Handle::write_control", Op::Control(payload), &[1, 5], 80, false).await;
}

#[tokio::test]
async fn dropping_a_streamed_message_at_any_point_never_breaks_the_framing() {
    let small = (TEXT, text("streamed small", 300));
    sweep_writes("next_writer + write_all + close of 300 bytes", Op::Stream(small, 100), &[7], 60, false).await;
    let large = (BINARY, tagged("streamed large", 12_000));
    sweep_writes("next_writer + write_all + close of 12 kB", Op::Stream(large, 1000), &[1021], 40, false).await;
}

#[tokio::test]
async fn dropping_conn_close_at_any_point_then_closing_again_sends_one_whole_close_frame() {
    for pipe in [1, 2, 3] {
        for polls in 0..=8 {
            let case = format!("Conn::close over a {pipe}-byte pipe, dropped after {polls} poll(s)");
            let (io, peer_io) = tokio::io::duplex(pipe);
            let mut conn = server(io, quick_close());
            let peer = tokio::spawn(record(peer_io));
            let first = poll_then_drop(conn.close(normal_close()), polls).await;
            let second = bounded(&format!("{case}: the second close"), conn.close(normal_close())).await;
            drop(conn);
            let t = bounded(&format!("{case}: the peer"), peer).await.unwrap();
            t.fault_free(&case);
            assert!(t.messages.is_empty(), "{case}: data messages {:?}", describe(&t.messages));
            assert!(!t.cut, "{case}: the stream ended inside the close frame (second close: {second:?})");
            assert_eq!(t.close, Some(Some(1000)), "{case}: the close frame (second close: {second:?})");
            if first.is_some() {
                break;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Cancellation: reads dropped at every point where they can be pending.

/// What the peer sends for the read tests, as bytes, and the messages in it:
/// a text message in three fragments with a ping between, a large frame, a
/// binary message in two fragments, a short text, and a last one.
fn read_script() -> (Vec<u8>, Vec<Msg>) {
    let large = tagged("large frame", 20_000);
    let halves = tagged("two halves", 6000);
    let mut bytes = Vec::new();
    bytes.extend(masked(false, TEXT, b"part one, "));
    bytes.extend(masked(true, PING, b"between"));
    bytes.extend(masked(false, CONT, b"part two, "));
    bytes.extend(masked(true, CONT, b"part three"));
    bytes.extend(masked(true, BINARY, &large));
    bytes.extend(masked(false, BINARY, &halves[..3000]));
    bytes.extend(masked(true, CONT, &halves[3000..]));
    bytes.extend(masked(true, TEXT, b"short"));
    bytes.extend(masked(true, TEXT, b"last"));
    let messages = vec![
        (TEXT, b"part one, part two, part three".to_vec()),
        (BINARY, large),
        (BINARY, halves),
        (TEXT, b"short".to_vec()),
        (TEXT, b"last".to_vec()),
    ];
    (bytes, messages)
}

/// A server over a pipe of `pipe` bytes whose peer sends [`read_script`] and
/// drains what the server sends back.
fn scripted_server(pipe: usize) -> (Conn<DuplexStream>, Vec<Msg>) {
    let (io, peer_io) = tokio::io::duplex(pipe);
    let (bytes, messages) = read_script();
    let (mut from_server, mut to_server) = tokio::io::split(peer_io);
    tokio::spawn(async move {
        let mut sink = vec![0u8; 4096];
        while matches!(from_server.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    tokio::spawn(async move {
        // Dropping this half afterwards leaves the stream open: the other
        // half still holds it.
        let _ = to_server.write_all(&bytes).await;
    });
    (server(io, Config::default()), messages)
}

fn as_msg(msg: silverback::Message) -> Msg {
    (opcode_of(msg.kind), msg.data.to_vec())
}

/// Reads until the script's last message (or as many messages as it has).
async fn read_rest(conn: &mut Conn<DuplexStream>, got: &mut Vec<Msg>, expected: &[Msg], case: &str) {
    while got.len() < expected.len() && got.last() != expected.last() {
        got.push(as_msg(bounded(&format!("{case}: a later read"), conn.read_message()).await.unwrap()));
    }
}

#[tokio::test]
async fn dropping_read_message_at_any_point_loses_nothing() {
    // For each message of the script, over a pipe that makes it arrive in
    // several pieces: the reads before it complete, the one for it is dropped.
    for (skip, pipe) in [(0, 7), (1, 509), (2, 509), (3, 3)] {
        for polls in 0..=60 {
            let case = format!("read_message over a {pipe}-byte pipe, dropped after {polls} poll(s) on message {skip}");
            let (mut conn, expected) = scripted_server(pipe);
            let mut got = Vec::new();
            for _ in 0..skip {
                got.push(as_msg(bounded(&case, conn.read_message()).await.unwrap()));
            }
            let outcome = poll_then_drop(conn.read_message(), polls).await;
            let finished = outcome.is_some();
            got.extend(outcome.map(|read| as_msg(read.unwrap())));
            read_rest(&mut conn, &mut got, &expected, &case).await;
            assert!(got == expected, "{case}: the reads returned {:?}", describe(&got));
            if finished {
                break;
            }
        }
    }
}

#[tokio::test]
async fn dropping_next_reader_or_its_reads_at_any_point_loses_nothing() {
    for (skip, pipe) in [(0, 7), (1, 509), (2, 509)] {
        for polls in 0..=60 {
            let case = format!("a read of a MessageReader over a {pipe}-byte pipe, dropped after {polls} poll(s)");
            let (mut conn, expected) = scripted_server(pipe);
            let mut got = Vec::new();
            for _ in 0..skip {
                got.push(as_msg(bounded(&case, conn.read_message()).await.unwrap()));
            }
            let (kind, mut reader) = bounded(&case, conn.next_reader()).await.unwrap();
            let mut data = Vec::new();
            let mut piece = [0u8; 100];
            let outcome = poll_then_drop(reader.read(&mut piece), polls).await;
            let finished = outcome.is_some();
            if let Some(n) = outcome {
                data.extend_from_slice(&piece[..n.unwrap()]);
            }
            bounded(&format!("{case}: reading the rest"), reader.read_to_end(&mut data)).await.unwrap();
            got.push((opcode_of(kind), data));
            read_rest(&mut conn, &mut got, &expected, &case).await;
            assert!(got == expected, "{case}: the reads returned {:?}", describe(&got));
            if finished {
                break;
            }
        }
    }
    for (skip, pipe) in [(0, 7), (1, 509)] {
        for polls in 0..=60 {
            let case = format!("next_reader over a {pipe}-byte pipe, dropped after {polls} poll(s)");
            let (mut conn, expected) = scripted_server(pipe);
            let mut got = Vec::new();
            for _ in 0..skip {
                got.push(as_msg(bounded(&case, conn.read_message()).await.unwrap()));
            }
            let outcome = poll_then_drop(conn.next_reader(), polls).await;
            let finished = outcome.is_some();
            if let Some(started) = outcome {
                let (kind, mut reader) = started.unwrap();
                let mut data = Vec::new();
                bounded(&format!("{case}: reading the message"), reader.read_to_end(&mut data)).await.unwrap();
                got.push((opcode_of(kind), data));
            }
            read_rest(&mut conn, &mut got, &expected, &case).await;
            assert!(got == expected, "{case}: the reads returned {:?}", describe(&got));
            if finished {
                break;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Stress: every kind of writer at once.

/// How a message of the stress run is sent.
#[derive(Clone, Copy, Debug)]
enum Route {
    Whole,
    Fed,
    Streamed,
    Large,
}

fn stress_plan() -> Vec<(Route, Msg)> {
    (0..36)
        .map(|i| {
            let tag = format!("stress {i}");
            match i % 6 {
                0 => (Route::Whole, (TEXT, text(&tag, 20 + i * 7))),
                1 | 4 => (Route::Fed, (BINARY, tagged(&tag, 300 + i * 50))),
                2 => (Route::Streamed, (BINARY, tagged(&tag, 5000 + i * 100))),
                3 => (Route::Whole, (BINARY, tagged(&tag, 6000))),
                _ if i % 12 == 5 => (Route::Large, (BINARY, tagged(&tag, 100_000 + i))),
                _ => (Route::Streamed, (TEXT, text(&tag, 700))),
            }
        })
        .collect()
}

/// How far a stress round got: messages written, messages received.
#[derive(Default)]
struct Progress {
    written: AtomicUsize,
    received: AtomicUsize,
}

async fn stress_round(round: usize, progress: Arc<Progress>) {
    let plan = stress_plan();
    let expected: Vec<Msg> = plan.iter().map(|(_, msg)| msg.clone()).collect();
    let (io, peer_io) = tokio::io::duplex(256);
    let mut config = Config::default();
    config.ping_interval = Some(Duration::from_millis(1));
    config.close_timeout = Duration::from_secs(2);
    let conn = server(io, config);

    let peer = tokio::spawn({
        let progress = progress.clone();
        async move {
            let mut peer = client(peer_io);
            let mut received = Vec::new();
            loop {
                match peer.read_message().await {
                    Ok(msg) => received.push(as_msg(msg)),
                    Err(e) => return (received, e),
                }
                progress.received.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let pinger = conn.handle();
    let ponger = conn.handle();
    let (mut read, mut write) = conn.split();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The server reads (the pongs) until told to stop; the peer sends no data.
    let reader = tokio::spawn(async move {
        tokio::select! {
            biased;
            _ = stop_rx => (read, None),
            msg = read.read_message() => (read, Some(msg)),
        }
    });
    let pings = tokio::spawn(async move {
        for i in 0..100 {
            pinger.write_control(MessageType::Ping, format!("ping {i}"), None).await?;
            tokio::task::yield_now().await;
        }
        Ok::<(), Error>(())
    });
    let pongs = tokio::spawn(async move {
        for i in 0..100 {
            ponger.write_control(MessageType::Pong, format!("pong {i}"), None).await?;
            tokio::task::yield_now().await;
        }
        Ok::<(), Error>(())
    });
    let writer = tokio::spawn(async move {
        let mut result = Ok(());
        for (i, (route, (opcode, data))) in plan.iter().enumerate() {
            let kind = kind_of(*opcode);
            let sent = match route {
                Route::Whole | Route::Large => write.write_message(kind, data).await,
                Route::Fed if i % 3 == 0 => match write.feed_message(kind, data).await {
                    Ok(()) => write.flush().await,
                    failed => failed,
                },
                Route::Fed => write.feed_message(kind, data).await,
                Route::Streamed => {
                    async {
                        let mut writer = write.next_writer(message_kind_of(*opcode)).await?;
                        for chunk in data.chunks(700) {
                            writer.write_all(chunk).await?;
                        }
                        writer.close().await
                    }
                    .await
                }
            };
            if let Err(e) = sent {
                result = Err(format!("message {i} ({route:?}): {e:?}"));
                break;
            }
            progress.written.fetch_add(1, Ordering::Relaxed);
        }
        if result.is_ok() {
            result = write.flush().await.map_err(|e| format!("the last flush: {e:?}"));
        }
        (write, result)
    });

    let (write, written) = writer.await.unwrap();
    let pinged = pings.await.unwrap();
    let ponged = pongs.await.unwrap();
    let _ = stop_tx.send(());
    let (read, server_read) = reader.await.unwrap();
    let mut conn = Conn::reunite(read, write).unwrap();
    let closed = conn.close(normal_close()).await;
    drop(conn);
    let (received, end) = peer.await.unwrap();

    for (i, (got, want)) in received.iter().zip(&expected).enumerate() {
        assert!(
            got == want,
            "round {round}: message {i} is {:?}, not {:?}",
            describe(std::slice::from_ref(got)),
            describe(std::slice::from_ref(want))
        );
    }
    assert!(
        end.is_close(&[CloseCode::NORMAL]),
        "round {round}: the peer ended with {end:?} after {} of {} messages",
        received.len(),
        expected.len()
    );
    assert_eq!(received.len(), expected.len(), "round {round}: the number of messages the peer received");
    assert!(written.is_ok(), "round {round}: a write failed: {written:?}");
    assert!(pinged.is_ok() && ponged.is_ok(), "round {round}: a control write failed: {pinged:?} {ponged:?}");
    assert!(server_read.is_none(), "round {round}: the server read {server_read:?}");
    assert!(closed.is_ok(), "round {round}: the close handshake: {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_writer_at_once_delivers_every_message_intact_and_in_order() {
    let total = stress_plan().len();
    for round in 0..30 {
        let progress = Arc::new(Progress::default());
        if tokio::time::timeout(Duration::from_secs(8), stress_round(round, progress.clone())).await.is_err() {
            panic!(
                "round {round} did not finish in 8 s: {} of {total} messages written, {} received",
                progress.written.load(Ordering::Relaxed),
                progress.received.load(Ordering::Relaxed)
            );
        }
    }
}
