//! The `http2` scenario: several WebSockets on one HTTP/2 connection
//! (RFC 8441), small messages echoed as in `small`.
//!
//! HTTP/2 is spoken with the `h2` crate (the HTTP/2 implementation under
//! hyper, on which every server of this scenario runs); the WebSocket side is
//! the load generator's own, as over HTTP/1.1: each stream opens with an
//! extended CONNECT (`:protocol` websocket, `Sec-WebSocket-Version: 13`) that
//! must be answered `200`, then carries masked frames, and every echo is
//! compared byte for byte with what was sent. No WebSocket library is used,
//! so no server is measured against its own client.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::ws::{self, OP_CLOSE, OP_TEXT};
use super::{close_text, report_cpu, text_payload, CpuSample, Opts, CLOSE_TIMEOUT, SETUP_TIMEOUT};

/// Flow-control windows the client advertises (hyper's server defaults).
const WINDOW: u32 = 1 << 20;

/// One WebSocket on a stream of the HTTP/2 connection.
struct WsStream {
    id: u64,
    send: SendStream<Bytes>,
    recv: RecvStream,
    reader: ws::Reader,
    encoder: ws::Encoder,
}

impl WsStream {
    /// Queues `data` on the stream (h2 sends it as flow control allows; what
    /// is in flight is bounded by the depth).
    fn write(&mut self, data: Vec<u8>) -> Result<(), String> {
        self.send.send_data(Bytes::from(data), false).map_err(|e| format!("stream {}: send: {e}", self.id))
    }

    /// Waits for the next DATA of the stream and hands it to the reader; the
    /// end of the stream is an error here.
    async fn fill(&mut self) -> Result<(), String> {
        match self.recv.data().await {
            Some(Ok(data)) => {
                self.reader.push(&data);
                let _ = self.recv.flow_control().release_capacity(data.len());
                Ok(())
            }
            Some(Err(e)) => Err(format!("stream {}: {e}", self.id)),
            None => Err(format!("stream {}: ended by the server", self.id)),
        }
    }

    /// Closes as over TCP: a close frame, the server's close frame, then the
    /// end of the server's side of the stream (END_STREAM, the HTTP/2 form of
    /// closing TCP, RFC 8441 §5.1); then ends ours. A note when the server did
    /// not complete that within CLOSE_TIMEOUT.
    async fn close(mut self) -> Option<String> {
        let mut frame = Vec::new();
        let _ = self.encoder.encode(OP_CLOSE, &1000u16.to_be_bytes(), &mut frame);
        let exchange = async {
            self.write(frame)?;
            let mut got_close = false;
            loop {
                loop {
                    match self.reader.next()? {
                        Some(m) if m.opcode == OP_CLOSE => got_close = true,
                        Some(_) if got_close => return Err("data after the server's close frame".to_string()),
                        Some(_) => {}
                        None => break,
                    }
                }
                match self.recv.data().await {
                    Some(Ok(data)) => {
                        self.reader.push(&data);
                        let _ = self.recv.flow_control().release_capacity(data.len());
                    }
                    None if got_close => return Ok(()),
                    None => return Err("no close frame from the server before the end of the stream".to_string()),
                    Some(Err(e)) if got_close => return Err(format!("stream reset instead of ended after close: {e}")),
                    Some(Err(e)) => return Err(format!("no close frame from the server: {e}")),
                }
            }
        };
        let note = match tokio::time::timeout(CLOSE_TIMEOUT, exchange).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("close handshake not completed within {CLOSE_TIMEOUT:?}")),
        };
        // Our side ends too (the stream is then closed both ways).
        if self.send.send_data(Bytes::new(), true).is_err() {
            self.send.send_reset(h2::Reason::CANCEL);
        }
        note
    }
}

/// The socket under h2. When h2 is done with it (after its GOAWAY), it is
/// not closed at once but read until the server closes it, within
/// CLOSE_TIMEOUT, as the HTTP/1.1 connections wait for the server to close
/// TCP: frames the server still sends (a RST_STREAM after a stream's end, its
/// own GOAWAY) are then read, not answered with a TCP reset that would fail
/// the server's last writes. `done` tells when that is over.
struct Linger {
    stream: Option<TcpStream>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

impl Drop for Linger {
    fn drop(&mut self) {
        let (Some(mut stream), Some(done)) = (self.stream.take(), self.done.take()) else { return };
        // Outside the runtime (it is shutting down), the socket just closes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let drain = async {
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) => return Ok(()),
                        Ok(_) => {}
                        Err(e) => return Err(format!("read after GOAWAY: {e}")),
                    }
                }
            };
            let result = tokio::time::timeout(CLOSE_TIMEOUT, drain)
                .await
                .unwrap_or_else(|_| Err(format!("the server did not close the connection within {CLOSE_TIMEOUT:?}")));
            let _ = done.send(result);
        });
    }
}

impl Linger {
    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.stream.as_mut().expect("the stream is only taken on drop"))
    }
}

impl AsyncRead for Linger {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for Linger {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().stream().poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_shutdown(cx)
    }
}

/// The running HTTP/2 connection: its task, and the end of its socket.
struct Driver {
    task: tokio::task::JoinHandle<Result<(), h2::Error>>,
    closed: oneshot::Receiver<Result<(), String>>,
}

/// Connects, runs HTTP/2's handshake and waits for the server's SETTINGS: a
/// PING is answered only after them (a server's SETTINGS is its first frame),
/// so once its PONG is in, they are known.
async fn connect(addr: SocketAddr) -> Result<(SendRequest<Bytes>, Driver), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let (done, closed) = oneshot::channel();
    let stream = Linger { stream: Some(stream), done: Some(done) };
    let (send, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .handshake::<_, Bytes>(stream)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let mut ping = connection.ping_pong().ok_or("HTTP/2: no ping handle")?;
    let driver = Driver { task: tokio::spawn(connection), closed };
    ping.ping(h2::Ping::opaque()).await.map_err(|e| format!("HTTP/2: no answer to a PING: {e}"))?;
    let send = send.ready().await.map_err(|e| format!("HTTP/2: {e}"))?;
    if !send.is_extended_connect_protocol_enabled() {
        return Err("the server did not enable the extended CONNECT protocol (SETTINGS_ENABLE_CONNECT_PROTOCOL)".into());
    }
    Ok((send, driver))
}

/// Opens WebSocket `id` on a new stream.
async fn open(send: &SendRequest<Bytes>, opts: &Opts, id: u64) -> Result<WsStream, String> {
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{}/", opts.addr))
        .header("sec-websocket-version", "13");
    if opts.deflate {
        request = request.header("sec-websocket-extensions", "permessage-deflate");
    }
    let mut request = request.body(()).map_err(|e| format!("request: {e}"))?;
    request.extensions_mut().insert(h2::ext::Protocol::from_static("websocket"));
    let mut send = send.clone().ready().await.map_err(|e| format!("HTTP/2: {e}"))?;
    let (response, stream) = send.send_request(request, false).map_err(|e| format!("extended CONNECT: {e}"))?;
    let response = response.await.map_err(|e| format!("extended CONNECT: {e}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("extended CONNECT answered {}", response.status()));
    }
    let mut deflate = None;
    for value in response.headers().get_all("sec-websocket-extensions") {
        let value = value.to_str().map_err(|_| "extended CONNECT: extension header is not text".to_string())?;
        if !opts.deflate || deflate.is_some() {
            return Err(format!("extended CONNECT: unrequested extension {value:?}"));
        }
        deflate = Some(ws::parse_deflate_response(value)?);
    }
    if opts.deflate && deflate.is_none() {
        return Err("extended CONNECT: server declined permessage-deflate".into());
    }
    let seed = id.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ std::process::id() as u64;
    let mut state = seed ^ 0xA5A5;
    let key = (ws::splitmix64(&mut state) as u32).to_le_bytes();
    Ok(WsStream {
        id,
        send: stream,
        recv: response.into_body(),
        reader: ws::Reader::new(bytes::BytesMut::with_capacity(16 * 1024), key, deflate),
        encoder: ws::Encoder::new(key, deflate),
    })
}

/// `--streams` WebSockets on one HTTP/2 connection, each keeping `--depth`
/// small text messages in flight.
pub async fn run(opts: &Opts) -> Result<(), String> {
    let setup = async {
        let (send, driver) = connect(opts.addr).await?;
        if send.current_max_send_streams() < opts.streams {
            return Err(format!(
                "the server allows {} concurrent streams, fewer than --streams {}",
                send.current_max_send_streams(),
                opts.streams
            ));
        }
        let mut streams = Vec::with_capacity(opts.streams);
        for id in 0..opts.streams as u64 {
            streams.push(open(&send, opts, id).await.map_err(|e| format!("WebSocket {id}: {e}"))?);
        }
        Ok((send, driver, streams))
    };
    let (send, driver, streams) =
        tokio::time::timeout(SETUP_TIMEOUT, setup).await.map_err(|_| "http2: setup timed out".to_string())??;

    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(opts.warmup);
    let deadline = measure_from + Duration::from_secs_f64(opts.seconds);
    let tasks: Vec<_> =
        streams.into_iter().map(|s| tokio::spawn(echo(s, opts.depth, opts.size, measure_from, deadline))).collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = CpuSample::now(opts.server_pid);
    tokio::time::sleep_until(deadline.into()).await;
    let cpu_after = CpuSample::now(opts.server_pid);
    let (mut counted, mut total) = (0u64, 0u64);
    let mut first_error = None;
    let mut closing = Vec::new();
    for t in tasks {
        match t.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((c, n, s)) => {
                counted += c;
                total += n;
                closing.push(s);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }

    // Close every WebSocket, then the connection (h2 sends GOAWAY once the
    // last handle and stream are gone).
    let closes: Vec<_> = closing.into_iter().map(|s| tokio::spawn(s.close())).collect();
    let (mut unclean, mut first_unclean) = (0, None);
    let closed = closes.len();
    for c in closes {
        if let Ok(Some(note)) = c.await {
            unclean += 1;
            first_unclean.get_or_insert(note);
        }
    }
    if let Some(first) = first_unclean {
        println!("NOTE close: {unclean} of {closed} WebSockets did not close cleanly; first: {first}");
    }
    drop(send);
    match tokio::time::timeout(CLOSE_TIMEOUT, driver.task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => println!("NOTE close: the HTTP/2 connection ended with an error: {e}"),
        Ok(Err(e)) => println!("NOTE close: the HTTP/2 connection task failed: {e}"),
        Err(_) => println!("NOTE close: the HTTP/2 connection did not end within {CLOSE_TIMEOUT:?}"),
    }
    // The task ended (or was given up): its socket is read until the server
    // closes it.
    match tokio::time::timeout(CLOSE_TIMEOUT * 2, driver.closed).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => println!("NOTE close: {e}"),
        Ok(Err(_)) | Err(_) => println!("NOTE close: the HTTP/2 connection's socket was not closed by the server"),
    }
    if let Some(e) = first_error {
        return Err(format!("http2: {e}"));
    }

    let rate = counted as f64 / opts.seconds;
    println!(
        "http2 ({} over HTTP/2): {} streams on one connection x {} in flight, {} B text: {rate:.0} msg/s ({counted} in {:.1} s; {total} echoes verified)",
        if opts.deflate { "WebSocket + permessage-deflate" } else { "WebSocket" },
        opts.streams,
        opts.depth,
        opts.size,
        opts.seconds
    );
    println!("RESULT msgs_per_s={rate:.0}");
    report_cpu("cpu_us_per_msg", "message", &cpu_before, &cpu_after, counted as f64);
    Ok(())
}

/// As `small_conn`: returns (messages received in the measured window, all
/// messages received, the stream).
async fn echo(
    mut s: WsStream,
    depth: usize,
    size: usize,
    measure_from: Instant,
    deadline: Instant,
) -> Result<(u64, u64, WsStream), String> {
    let id = s.id;
    let mut payload = vec![0u8; size];
    let mut expected = vec![0u8; size];
    let (mut sent, mut received, mut counted) = (0u64, 0u64, 0u64);
    let mut out = Vec::with_capacity(depth * (size + 16));
    for _ in 0..depth {
        text_payload(&mut payload, id, sent);
        s.encoder.encode(OP_TEXT, &payload, &mut out)?;
        sent += 1;
    }
    s.write(out)?;
    loop {
        s.fill().await?;
        let now = Instant::now();
        let mut got = 0u64;
        loop {
            let data = match s.reader.next()? {
                None => break,
                Some(m) if m.opcode == OP_CLOSE => {
                    return Err(format!("stream {id}: server sent a close frame: {:?}", close_text(m.data)))
                }
                Some(m) if m.opcode != OP_TEXT => {
                    return Err(format!("stream {id}: echo has opcode {} instead of {OP_TEXT}", m.opcode))
                }
                Some(m) => m.data,
            };
            text_payload(&mut expected, id, received);
            if data != &expected[..] {
                return Err(format!(
                    "stream {id}: echo {received} differs: got {:?}, sent {:?}",
                    String::from_utf8_lossy(data),
                    String::from_utf8_lossy(&expected)
                ));
            }
            received += 1;
            got += 1;
        }
        if now >= measure_from && now < deadline {
            counted += got;
        }
        let mut out = std::mem::take(&mut s.reader.control_out);
        if now < deadline {
            out.reserve(got as usize * (size + 16));
            for _ in 0..got {
                text_payload(&mut payload, id, sent);
                s.encoder.encode(OP_TEXT, &payload, &mut out)?;
                sent += 1;
            }
        } else if received == sent {
            if !out.is_empty() {
                s.write(out)?;
            }
            return Ok((counted, received, s));
        }
        if !out.is_empty() {
            s.write(out)?;
        }
    }
}
