//! The `client` scenario: the client library is what is measured.
//!
//! The `small` scenario's load (C connections, D text messages of 32 bytes in
//! flight on each, a new one sent for every echo) driven by a WebSocket
//! client library instead of this crate's own framing, against one fixed
//! server (`run.sh` uses silverback's echo server on CPU 0). The client runs
//! on this process's current-thread runtime, so its CPU time per message is
//! the library's cost per message sent and received, plus the loop below.
//!
//! Every library runs over a plain `TcpStream` with `TCP_NODELAY`, opened
//! here, and does its own client handshake on it. Each connection is one
//! task written the library's fastest idiomatic way:
//!
//! - `silverback`: `Dialer::connect_on`, then `read_message` and a
//!   `feed_message` for each echo (fed messages leave together when the next
//!   read would wait, as in its README's echo loop);
//! - `tokio-tungstenite` and `yawc`: their `Stream` and `Sink`: wait for one
//!   message, take the ones already there without waiting, `feed` a new one
//!   for each, then `flush` (what `StreamExt::forward` does, without the lock
//!   that `split` adds);
//! - `fastwebsockets`: `handshake::client` (on hyper, its only client
//!   handshake) and a `FragmentCollector`: `read_frame`, then `write_frame`
//!   for each echo, which writes it at once (it has no way to batch).
//!
//! Every echo is compared byte for byte with what was sent; a connection
//! ends with its library's close handshake.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};

use super::{report_cpu, text_payload, CpuSample, Opts, CLOSE_TIMEOUT, SETUP_TIMEOUT};
use crate::flag_value;

/// The client libraries this scenario can drive.
pub const LIBS: &[&str] = &["silverback", "tokio-tungstenite", "fastwebsockets", "yawc"];

/// Echoes received by all connections so far (sampled at both ends of the
/// measured window).
static RECEIVED: AtomicU64 = AtomicU64::new(0);
/// Set at the end of the measured window: connections stop sending new
/// messages, wait for the echoes still in flight, and close.
static STOP: AtomicBool = AtomicBool::new(false);

/// Runs the scenario with the library named by `--lib`.
pub async fn run(opts: &Opts, args: &[String]) -> Result<(), String> {
    let lib: String = flag_value(args, "--lib")?.ok_or_else(|| format!("client needs --lib, one of {LIBS:?}"))?;
    if !LIBS.contains(&lib.as_str()) {
        return Err(format!("unknown client library {lib:?}, one of {LIBS:?}"));
    }
    if opts.raw || opts.deflate {
        return Err("client: no --raw or --deflate variant".into());
    }
    let n = opts.connections;
    let gate = Arc::new(Semaphore::new(100));
    let (ready_tx, mut ready_rx) = mpsc::channel(n);
    let (start_tx, start_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(n);
    for id in 0..n as u64 {
        let ctx = Ctx {
            addr: opts.addr,
            id,
            depth: opts.depth,
            size: opts.size,
            gate: gate.clone(),
            ready: ready_tx.clone(),
            start: start_rx.clone(),
        };
        tasks.push(match lib.as_str() {
            "silverback" => tokio::spawn(silverback_conn(ctx)),
            "tokio-tungstenite" => tokio::spawn(tungstenite_conn(ctx)),
            "fastwebsockets" => tokio::spawn(fastwebsockets_conn(ctx)),
            _ => tokio::spawn(yawc_conn(ctx)),
        });
    }
    drop(ready_tx);
    for _ in 0..n {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(format!("client ({lib}): connection setup: {e}")),
            None => return Err(format!("client ({lib}): a connection task ended during setup")),
        }
    }
    start_tx.send_replace(true);
    tokio::time::sleep(Duration::from_secs_f64(opts.warmup)).await;
    let cpu_before = CpuSample::now(opts.server_pid);
    let received_before = RECEIVED.load(Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(opts.seconds)).await;
    let cpu_after = CpuSample::now(opts.server_pid);
    let counted = RECEIVED.load(Relaxed) - received_before;
    STOP.store(true, Relaxed);

    let mut first_error = None;
    let mut notes = Vec::new();
    for t in tasks {
        match t.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(Some(note)) => notes.push(note),
            Ok(None) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(format!("client ({lib}): {e}"));
    }
    if let Some(first) = notes.first() {
        println!("NOTE close ({lib}): {} of {n} connections did not close cleanly; first: {first}", notes.len());
    }
    let window = (cpu_after.at - cpu_before.at).as_secs_f64();
    let rate = counted as f64 / window;
    println!(
        "client ({lib}): {n} connections x {} in flight, {} B text: {rate:.0} msg/s ({counted} in {window:.1} s; {} echoes verified)",
        opts.depth,
        opts.size,
        RECEIVED.load(Relaxed)
    );
    println!("RESULT msgs_per_s={rate:.0}");
    if let (Some(b), Some(a)) = (cpu_before.client, cpu_after.client) {
        if counted > 0 {
            let per = (a - b) * 1e6 / counted as f64;
            println!("client CPU per message: {per:.3} us");
            println!("RESULT client_cpu_us_per_msg={per:.3}");
        }
    }
    report_cpu("server_cpu_us_per_msg", "message", &cpu_before, &cpu_after, counted as f64);
    Ok(())
}

/// What each connection's task is given.
struct Ctx {
    addr: SocketAddr,
    id: u64,
    depth: usize,
    size: usize,
    /// Bounds the handshakes in progress at once.
    gate: Arc<Semaphore>,
    /// Told once the connection is set up (or failed to be).
    ready: mpsc::Sender<Result<(), String>>,
    /// Becomes true when every connection is set up.
    start: watch::Receiver<bool>,
}

impl Ctx {
    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Connects and runs `handshake` on the stream, at most SETUP_TIMEOUT,
    /// then reports to the harness and waits for the start.
    async fn setup<C, F>(&mut self, handshake: impl FnOnce(TcpStream, String) -> F) -> Result<C, String>
    where
        F: std::future::Future<Output = Result<C, String>>,
    {
        let url = self.url();
        let addr = self.addr;
        let opened = {
            let _permit = self.gate.acquire().await.map_err(|e| e.to_string())?;
            tokio::time::timeout(SETUP_TIMEOUT, async {
                let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
                stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
                handshake(stream, url).await
            })
            .await
            .unwrap_or_else(|_| Err("connection setup timed out".into()))
        };
        let _ = self.ready.send(opened.as_ref().map(|_| ()).map_err(Clone::clone)).await;
        let conn = opened?;
        self.start.wait_for(|started| *started).await.map_err(|e| e.to_string())?;
        Ok(conn)
    }
}

/// The payloads one connection sends and expects back, in order: the
/// `small` scenario's (`text_payload`), whose sequence number is counted up
/// in place, so that the loop itself costs little beside the library.
struct Echoes {
    id: u64,
    sent: u64,
    received: u64,
    payload: Vec<u8>,
    expected: Vec<u8>,
}

/// Where `text_payload` writes the sequence number's 12 decimal digits.
const SEQ_DIGITS: std::ops::Range<usize> = 9..21;

/// Adds one to the decimal number in `digits` (it wraps at 10^12, as
/// `text_payload`'s zero-padded digits do).
fn increment(digits: &mut [u8]) {
    for d in digits.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            return;
        }
    }
}

impl Echoes {
    fn new(ctx: &Ctx) -> Self {
        let mut payload = vec![0; ctx.size];
        text_payload(&mut payload, ctx.id, 0);
        let expected = payload.clone();
        Echoes { id: ctx.id, sent: 0, received: 0, payload, expected }
    }

    /// Rewrites `buf` (which holds message `seq - 1`) to message `seq`.
    fn advance(buf: &mut [u8], id: u64, seq: u64) {
        if seq == 0 {
            return;
        }
        if buf.len() >= SEQ_DIGITS.end {
            increment(&mut buf[SEQ_DIGITS]);
        } else {
            text_payload(buf, id, seq);
        }
    }

    /// The next message to send, in `scratch` (for fastwebsockets, which
    /// masks it in place).
    fn next_in<'a>(&mut self, scratch: &'a mut [u8]) -> &'a mut [u8] {
        scratch.copy_from_slice(self.next_ref());
        scratch
    }

    /// The next message to send, for the libraries that copy it.
    fn next_ref(&mut self) -> &[u8] {
        Self::advance(&mut self.payload, self.id, self.sent);
        self.sent += 1;
        &self.payload
    }

    /// The next message as a `&str`, for the libraries whose text messages
    /// are strings (the payload is ASCII).
    fn next_str(&mut self) -> Result<&str, String> {
        std::str::from_utf8(self.next_ref()).map_err(|e| e.to_string())
    }

    /// Checks an echo against what was sent; true when a new message should
    /// be sent for it (the measured window has not ended).
    fn check(&mut self, data: &[u8]) -> Result<bool, String> {
        Self::advance(&mut self.expected, self.id, self.received);
        if data != &self.expected[..] {
            return Err(format!(
                "connection {}: echo {} differs: got {:?}, sent {:?}",
                self.id,
                self.received,
                String::from_utf8_lossy(data),
                String::from_utf8_lossy(&self.expected)
            ));
        }
        self.received += 1;
        RECEIVED.fetch_add(1, Relaxed);
        Ok(!STOP.load(Relaxed))
    }

    /// Whether every message sent has been echoed.
    fn done(&self) -> bool {
        self.received == self.sent
    }
}

/// Runs `close` within CLOSE_TIMEOUT; a failure is a note, not an error.
async fn close_note<F: std::future::Future<Output = Result<(), String>>>(close: F) -> Option<String> {
    match tokio::time::timeout(CLOSE_TIMEOUT, close).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(format!("close handshake not completed within {CLOSE_TIMEOUT:?}")),
    }
}

// ------------------------------------------------------------------ silverback

async fn silverback_conn(mut ctx: Ctx) -> Result<Option<String>, String> {
    use silverback::{CloseCode, CloseFrame, Dialer, MessageType};
    let mut conn = ctx
        .setup(|stream, url| async move {
            let (conn, _response) = Dialer::new().connect_on(stream, &url).await.map_err(|e| e.to_string())?;
            Ok(conn)
        })
        .await?;
    let err = |e: silverback::Error| e.to_string();
    let mut echoes = Echoes::new(&ctx);
    for _ in 0..ctx.depth {
        conn.feed_message(MessageType::Text, echoes.next_ref()).await.map_err(err)?;
    }
    conn.flush().await.map_err(err)?;
    while !echoes.done() {
        let msg = conn.read_message().await.map_err(err)?;
        if msg.kind != MessageType::Text {
            return Err(format!("echo of type {:?} instead of text", msg.kind));
        }
        if echoes.check(&msg.data)? {
            // Leaves with the others fed meanwhile when the next read waits.
            conn.feed_message(MessageType::Text, echoes.next_ref()).await.map_err(err)?;
        }
    }
    Ok(close_note(async { conn.close(CloseFrame::new(CloseCode::NORMAL, "")).await.map_err(err) }).await)
}

// ----------------------------------------------------------- tokio-tungstenite

async fn tungstenite_conn(mut ctx: Ctx) -> Result<Option<String>, String> {
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = ctx
        .setup(|stream, url| async move {
            let (ws, _response) = tokio_tungstenite::client_async(url, stream).await.map_err(|e| e.to_string())?;
            Ok(ws)
        })
        .await?;
    let mut echoes = Echoes::new(&ctx);
    for _ in 0..ctx.depth {
        ws.feed(Message::text(echoes.next_str()?.to_owned())).await.map_err(|e| e.to_string())?;
    }
    ws.flush().await.map_err(|e| e.to_string())?;
    // One echo: checked, and a new message fed for it.
    async fn take(
        ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
        echoes: &mut Echoes,
        item: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), String> {
        match item {
            Some(Ok(Message::Text(text))) => {
                if echoes.check(text.as_bytes())? {
                    ws.feed(Message::text(echoes.next_str()?.to_owned())).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            // Answered by the library.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
            Some(Ok(other)) => Err(format!("unexpected message {other:?}")),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("connection closed by the server".into()),
        }
    }
    while !echoes.done() {
        let item = ws.next().await;
        take(&mut ws, &mut echoes, item).await?;
        // The echoes already read or in the socket, without waiting.
        while !echoes.done() {
            let Some(item) = ws.next().now_or_never() else { break };
            take(&mut ws, &mut echoes, item).await?;
        }
        ws.flush().await.map_err(|e| e.to_string())?;
    }
    Ok(close_note(async {
        ws.close(None).await.map_err(|e| e.to_string())?;
        // Until the server's close frame (then the stream ends).
        while let Some(item) = ws.next().await {
            match item {
                Ok(Message::Close(_)) => {}
                Ok(_) => {}
                Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    })
    .await)
}

// -------------------------------------------------------------- fastwebsockets

/// hyper's client connection task (the handshake's) on tokio.
struct SpawnExecutor;

impl<Fut> hyper::rt::Executor<Fut> for SpawnExecutor
where
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    fn execute(&self, fut: Fut) {
        tokio::spawn(fut);
    }
}

async fn fastwebsockets_conn(mut ctx: Ctx) -> Result<Option<String>, String> {
    use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
    let addr = ctx.addr;
    let mut ws = ctx
        .setup(|stream, _url| async move {
            let request = http::Request::builder()
                .method("GET")
                .uri("/")
                .header("Host", addr.to_string())
                .header("Upgrade", "websocket")
                .header("Connection", "upgrade")
                .header("Sec-WebSocket-Key", fastwebsockets::handshake::generate_key())
                .header("Sec-WebSocket-Version", "13")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .map_err(|e| e.to_string())?;
            let (ws, _response) =
                fastwebsockets::handshake::client(&SpawnExecutor, request, stream).await.map_err(|e| e.to_string())?;
            Ok(FragmentCollector::new(ws))
        })
        .await?;
    let err = |e: fastwebsockets::WebSocketError| e.to_string();
    let mut echoes = Echoes::new(&ctx);
    let mut scratch = vec![0u8; ctx.size];
    for _ in 0..ctx.depth {
        ws.write_frame(Frame::text(Payload::BorrowedMut(echoes.next_in(&mut scratch)))).await.map_err(err)?;
    }
    while !echoes.done() {
        let frame = ws.read_frame().await.map_err(err)?;
        match frame.opcode {
            OpCode::Text => {
                if echoes.check(&frame.payload)? {
                    ws.write_frame(Frame::text(Payload::BorrowedMut(echoes.next_in(&mut scratch))))
                        .await
                        .map_err(err)?;
                }
            }
            // Answered by the library (auto pong).
            OpCode::Ping | OpCode::Pong => {}
            other => return Err(format!("unexpected frame {other:?}")),
        }
    }
    Ok(close_note(async {
        ws.write_frame(Frame::close(1000, b"")).await.map_err(err)?;
        loop {
            let frame = ws.read_frame().await.map_err(err)?;
            if frame.opcode == OpCode::Close {
                return Ok(());
            }
        }
    })
    .await)
}

// ------------------------------------------------------------------------ yawc

async fn yawc_conn(mut ctx: Ctx) -> Result<Option<String>, String> {
    use yawc::{close::CloseCode, Frame, OpCode, Options, WebSocket};
    let mut ws = ctx
        .setup(|stream, url| async move {
            let url: url::Url = url.parse().map_err(|e: url::ParseError| e.to_string())?;
            // As the yawc server: UTF-8 validated, 64 MiB messages.
            let options = Options::default().with_utf8().with_max_payload_read(64 << 20);
            WebSocket::handshake(url, stream, options).await.map_err(|e| e.to_string())
        })
        .await?;
    let mut echoes = Echoes::new(&ctx);
    for _ in 0..ctx.depth {
        ws.feed(Frame::text(bytes::Bytes::copy_from_slice(echoes.next_ref()))).await.map_err(|e| e.to_string())?;
    }
    ws.flush().await.map_err(|e| e.to_string())?;
    async fn take(ws: &mut WebSocket<TcpStream>, echoes: &mut Echoes, item: Option<Frame>) -> Result<(), String> {
        let Some(frame) = item else { return Err("connection closed by the server".into()) };
        match frame.opcode() {
            OpCode::Text => {
                if echoes.check(frame.payload())? {
                    ws.feed(Frame::text(bytes::Bytes::copy_from_slice(echoes.next_ref())))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            // Answered by the library.
            OpCode::Ping | OpCode::Pong => Ok(()),
            other => Err(format!("unexpected frame {other:?}")),
        }
    }
    while !echoes.done() {
        let item = ws.next().await;
        take(&mut ws, &mut echoes, item).await?;
        while !echoes.done() {
            let Some(item) = ws.next().now_or_never() else { break };
            take(&mut ws, &mut echoes, item).await?;
        }
        ws.flush().await.map_err(|e| e.to_string())?;
    }
    Ok(close_note(async {
        ws.send(Frame::close(CloseCode::Normal, [])).await.map_err(|e| e.to_string())?;
        while let Some(frame) = ws.next().await {
            if frame.opcode() == OpCode::Close {
                return Ok(());
            }
        }
        Err("no close frame from the server".into())
    })
    .await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_in_place_gives_the_small_scenarios_payloads() {
        for (id, size) in [(7u64, 32usize), (12345, 64), (3, 8)] {
            let mut buf = vec![0u8; size];
            text_payload(&mut buf, id, 0);
            let mut fresh = vec![0u8; size];
            for seq in (0..3000u64).chain([999_999_999_998, 999_999_999_999, 1_000_000_000_000]) {
                if seq == 999_999_999_998 {
                    text_payload(&mut buf, id, seq);
                } else {
                    Echoes::advance(&mut buf, id, seq);
                }
                text_payload(&mut fresh, id, seq);
                assert_eq!(buf, fresh, "id {id}, size {size}, seq {seq}");
            }
        }
    }
}
