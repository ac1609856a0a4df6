//! Helpers shared by the integration tests: loopback servers, a raw-bytes
//! WebSocket client with hand-written frames, and ready-made peers
//! (tokio-tungstenite, or silverback itself in the client role).

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use silverback::{Config, Conn, Role, Upgrader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The key of RFC 6455 §1.3 and its accept value.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// The masking key of every frame the raw client sends.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

pub const CONT: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// Upper bound for any single step of a test; only reached when something hangs.
pub const LIMIT: Duration = Duration::from_secs(5);

/// Awaits `f`, failing the test if it takes longer than [`LIMIT`].
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("step did not finish in time")
}

pub async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Spawns a task that accepts one TCP connection and runs `upgrader.accept` on it.
pub async fn spawn_accept(upgrader: Upgrader) -> (SocketAddr, JoinHandle<silverback::Result<Conn<TcpStream>>>) {
    let (listener, addr) = listen().await;
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        upgrader.accept(stream).await
    });
    (addr, task)
}

/// Spawns a server that accepts one WebSocket connection and runs `f` on it.
pub async fn spawn_server<F, Fut, T>(upgrader: Upgrader, f: F) -> (SocketAddr, JoinHandle<T>)
where
    F: FnOnce(Conn<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (listener, addr) = listen().await;
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let conn = upgrader.accept(stream).await.expect("handshake failed");
        f(conn).await
    });
    (addr, task)
}

/// A server that echoes every message until the connection ends; returns the
/// error that ended it.
pub async fn spawn_echo_server(upgrader: Upgrader) -> (SocketAddr, JoinHandle<silverback::Error>) {
    spawn_server(upgrader, |mut conn| async move {
        loop {
            let msg = match conn.read_message().await {
                Ok(msg) => msg,
                Err(e) => return e,
            };
            if let Err(e) = conn.write_message(msg.kind, &msg.data).await {
                return e;
            }
        }
    })
    .await
}

/// The headers of a valid opening handshake, in order.
pub fn good_headers(addr: SocketAddr) -> Vec<(String, String)> {
    vec![
        ("Host".into(), addr.to_string()),
        ("Upgrade".into(), "websocket".into()),
        ("Connection".into(), "Upgrade".into()),
        ("Sec-WebSocket-Key".into(), KEY.into()),
        ("Sec-WebSocket-Version".into(), "13".into()),
    ]
}

/// A request head with `method` and `headers`.
pub fn request_with(method: &str, headers: &[(String, String)]) -> String {
    let mut out = format!("{method} /chat?room=1 HTTP/1.1\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out
}

/// A valid request head with `extra` header lines (each ending in CRLF).
pub fn request(addr: SocketAddr, extra: &str) -> String {
    let mut head = request_with("GET", &good_headers(addr));
    head.truncate(head.len() - 2);
    head.push_str(extra);
    head.push_str("\r\n");
    head
}

/// Encodes a frame. `b0` is the first byte (FIN, RSV and opcode).
pub fn frame_b0(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![b0];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked frame, as a client sends it.
pub fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_b0((u8::from(fin) << 7) | opcode, payload, Some(MASK))
}

/// A close payload: code and reason.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(reason);
    out
}

/// A frame read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The code and reason of a close frame (`None` for an empty payload).
    pub fn close(&self) -> Option<(u16, String)> {
        assert_eq!(self.opcode, CLOSE, "not a close frame: {self:?}");
        if self.payload.is_empty() {
            return None;
        }
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        Some((code, String::from_utf8(self.payload[2..].to_vec()).unwrap()))
    }
}

/// Parses one frame from the front of `buf`, if it is all there.
pub fn parse_frame(buf: &mut BytesMut) -> Option<Frame> {
    if buf.len() < 2 {
        return None;
    }
    let b0 = buf[0];
    let b1 = buf[1];
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            (u64::from_be_bytes(buf[2..10].try_into().unwrap()), 10)
        }
        n => (u64::from(n), 2),
    };
    let key = if masked {
        if buf.len() < at + 4 {
            return None;
        }
        let key: [u8; 4] = buf[at..at + 4].try_into().unwrap();
        at += 4;
        Some(key)
    } else {
        None
    };
    let len = usize::try_from(len).unwrap();
    if buf.len() < at + len {
        return None;
    }
    buf.advance(at);
    let mut payload = buf.split_to(len).to_vec();
    if let Some(key) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Some(Frame { fin: b0 & 0x80 != 0, rsv: (b0 >> 4) & 7, opcode: b0 & 0x0f, masked, payload })
}

/// Reads an HTTP response head from `stream`; returns it as text and keeps
/// what follows it in `buf`.
pub async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut) -> String {
    within(async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = buf.split_to(end + 4);
                return String::from_utf8(head.to_vec()).unwrap();
            }
            let n = stream.read_buf(buf).await.unwrap();
            assert!(n > 0, "EOF inside the response head: {:?}", String::from_utf8_lossy(buf));
        }
    })
    .await
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn parse(head: &str, body: Vec<u8>) -> Self {
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
        let status = parts.next().unwrap().parse().unwrap();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(':').unwrap();
                (name.trim().to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        HttpResponse { status, headers, body }
    }

    /// The values of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }
}

/// Sends `raw` on a fresh connection to `addr` and reads the whole response,
/// up to EOF (the server closes the connection after refusing).
pub async fn http_exchange(addr: SocketAddr, raw: &[u8]) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut buf = BytesMut::new();
    let head = read_head(&mut stream, &mut buf).await;
    within(async {
        loop {
            let n = stream.read_buf(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
        }
    })
    .await;
    HttpResponse::parse(&head, buf.to_vec())
}

/// A WebSocket client made of raw bytes: hand-written frames out, frames
/// parsed by hand in.
pub struct RawClient {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

impl RawClient {
    /// Connects and completes a default handshake.
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::connect_with(addr, "").await.0
    }

    /// Connects with `extra` request header lines; asserts a `101` and returns its head.
    pub async fn connect_with(addr: SocketAddr, extra: &str) -> (Self, HttpResponse) {
        Self::handshake(addr, request(addr, extra).as_bytes()).await
    }

    /// Sends `raw` (a request head, possibly followed by frames) and expects a `101`.
    pub async fn handshake(addr: SocketAddr, raw: &[u8]) -> (Self, HttpResponse) {
        let mut stream = within(TcpStream::connect(addr)).await.unwrap();
        stream.write_all(raw).await.unwrap();
        let mut buf = BytesMut::new();
        let head = read_head(&mut stream, &mut buf).await;
        let response = HttpResponse::parse(&head, Vec::new());
        assert_eq!(response.status, 101, "{head}");
        assert_eq!(response.header("sec-websocket-accept"), Some(ACCEPT));
        (RawClient { stream, buf }, response)
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        within(self.stream.write_all(bytes)).await.unwrap();
    }

    /// Sends one masked frame.
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send(&masked(fin, opcode, payload)).await;
    }

    /// Sends a masked close frame with `code` and `reason`.
    pub async fn send_close(&mut self, code: u16, reason: &str) {
        self.send_frame(true, CLOSE, &close_payload(code, reason.as_bytes())).await;
    }

    /// The next frame, or `None` at a clean EOF between frames.
    pub async fn read_frame(&mut self) -> Option<Frame> {
        within(async {
            loop {
                if let Some(frame) = parse_frame(&mut self.buf) {
                    return Some(frame);
                }
                let n = self.stream.read_buf(&mut self.buf).await.expect("read from the server failed");
                if n == 0 {
                    assert!(self.buf.is_empty(), "EOF inside a frame");
                    return None;
                }
            }
        })
        .await
    }

    /// The next frame, which must be there.
    pub async fn frame(&mut self) -> Frame {
        self.read_frame().await.expect("the server closed the connection")
    }

    /// Reads one whole data message (frames until FIN, skipping nothing):
    /// returns its opcode and payload, and the number of frames it took.
    pub async fn message(&mut self) -> (u8, Vec<u8>, usize) {
        let first = self.frame().await;
        assert!(first.opcode == TEXT || first.opcode == BINARY, "not a data frame: {first:?}");
        assert!(!first.masked, "server frames must not be masked");
        let mut data = first.payload;
        let mut frames = 1;
        let mut fin = first.fin;
        while !fin {
            let next = self.frame().await;
            assert_eq!(next.opcode, CONT, "expected a continuation: {next:?}");
            assert!(!next.masked);
            data.extend_from_slice(&next.payload);
            frames += 1;
            fin = next.fin;
        }
        (first.opcode, data, frames)
    }

    /// Reads the next frame, which must be a close; returns its code and reason.
    pub async fn read_close(&mut self) -> Option<(u16, String)> {
        let frame = self.frame().await;
        assert_eq!(frame.opcode, CLOSE, "expected a close frame, got {frame:?}");
        assert!(frame.fin && !frame.masked);
        frame.close()
    }

    /// Asserts that the server closed the connection: no more frames, then EOF.
    pub async fn expect_eof(&mut self) {
        let next = self.read_frame().await;
        assert!(next.is_none(), "expected EOF, got {next:?}");
    }
}

/// A silverback connection in the client role, after a hand-written handshake.
pub async fn silverback_client(addr: SocketAddr) -> Conn<TcpStream> {
    silverback_client_with(addr, Config::default()).await
}

pub async fn silverback_client_with(addr: SocketAddr, config: Config) -> Conn<TcpStream> {
    let RawClient { stream, buf } = RawClient::connect(addr).await;
    Conn::from_raw(stream, Role::Client, config, None, buf)
}

pub type WsClient = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A tokio-tungstenite client connected to `addr`.
pub async fn tungstenite_client(addr: SocketAddr) -> WsClient {
    let tcp = within(TcpStream::connect(addr)).await.unwrap();
    let (ws, response) = within(tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)).await.unwrap();
    assert_eq!(response.status(), 101);
    ws
}

/// `n` bytes of a repeating pattern.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// `n` bytes of valid text with multi-byte characters.
pub fn text_of(n: usize) -> String {
    let mut s = String::with_capacity(n + 4);
    let mut i = 0usize;
    while s.len() < n {
        s.push(match i % 5 {
            0 => 'a',
            1 => 'é',
            2 => '€',
            3 => '𝄞',
            _ => ' ',
        });
        i += 1;
    }
    s
}

/// A server connection and a raw client connected to it, both owned by the
/// calling task (for `Conn` methods whose futures cannot be spawned).
pub async fn connected(upgrader: Upgrader) -> (Conn<TcpStream>, RawClient) {
    let (addr, server) = spawn_accept(upgrader).await;
    let raw = RawClient::connect(addr).await;
    let conn = within(server).await.unwrap().expect("handshake failed");
    (conn, raw)
}

/// Tells at run time whether a type is `Send` (inherent methods win over
/// trait methods when their bounds hold).
pub struct Probe<T>(std::marker::PhantomData<T>);

pub fn probe<T>(_: &T) -> Probe<T> {
    Probe(std::marker::PhantomData)
}

pub trait NotSend {
    fn is_send(&self) -> bool {
        false
    }
}

impl<T> NotSend for Probe<T> {}

impl<T: Send> Probe<T> {
    pub fn is_send(&self) -> bool {
        true
    }
}
