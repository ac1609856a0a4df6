//! Helpers for the client integration tests (`tests/client_*.rs`): loopback
//! servers (silverback's own, raw hand-written ones, tokio-rustls), frame
//! parsing on the server side, fake proxies, and guards for real proxy
//! processes (tinyproxy, microsocks).

#![allow(dead_code)]

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::{Buf, BytesMut};
use sha1::{Digest, Sha1};
use silverback::dial::BoxedStream;
use silverback::{Conn, Dialer, Proxy, Upgrader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// Upper bound for any single step of a test; only reached when something hangs.
pub const LIMIT: Duration = Duration::from_secs(3);

/// Awaits `f`, failing the test if it takes longer than [`LIMIT`].
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("step did not finish in time")
}

/// A dialer that never consults the environment and gives up after [`LIMIT`].
pub fn dialer() -> Dialer {
    Dialer::new().proxy(Proxy::None).handshake_timeout(Some(LIMIT))
}

pub async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

pub fn ws_url(addr: SocketAddr, path: &str) -> String {
    format!("ws://{addr}{path}")
}

/// A `connect_fn` target: remembers every (host, port) it is asked for and
/// connects to `addr` instead.
#[derive(Clone, Default)]
pub struct Redirect {
    pub asked: Arc<Mutex<Vec<(String, u16)>>>,
}

impl Redirect {
    pub fn asked(&self) -> Vec<(String, u16)> {
        self.asked.lock().unwrap().clone()
    }

    /// Installs itself on `dialer`, sending every connection to `addr`.
    pub fn install(&self, dialer: Dialer, addr: SocketAddr) -> Dialer {
        let asked = self.asked.clone();
        dialer.connect_fn(move |host, port| {
            asked.lock().unwrap().push((host, port));
            async move {
                let stream = TcpStream::connect(addr).await?;
                Ok(Box::new(stream) as BoxedStream)
            }
        })
    }
}

// ---------------------------------------------------------------------------
// silverback servers

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
        let conn = upgrader.accept(stream).await.expect("server handshake failed");
        f(conn).await
    });
    (addr, task)
}

/// Echoes every message of one connection until it ends; returns the error that ended it.
pub async fn echo(mut conn: Conn<TcpStream>) -> silverback::Error {
    loop {
        let msg = match conn.read_message().await {
            Ok(msg) => msg,
            Err(e) => return e,
        };
        if let Err(e) = conn.write_message(msg.kind, &msg.data).await {
            return e;
        }
    }
}

/// A silverback echo server for any number of connections; each connection's
/// peer address is sent on the channel.
pub async fn spawn_echo_server_multi(upgrader: Upgrader) -> (SocketAddr, mpsc::UnboundedReceiver<SocketAddr>) {
    let (listener, addr) = listen().await;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else { return };
            let _ = tx.send(peer);
            let upgrader = upgrader.clone();
            tokio::spawn(async move {
                if let Ok(conn) = upgrader.accept(stream).await {
                    echo(conn).await;
                }
            });
        }
    });
    (addr, rx)
}

// ---------------------------------------------------------------------------
// Raw HTTP

/// A request head as a raw server read it.
#[derive(Clone, Debug)]
pub struct RawRequest {
    pub request_line: String,
    pub headers: Vec<(String, String)>,
    /// Bytes read past the head.
    pub rest: Vec<u8>,
}

impl RawRequest {
    pub fn parse(head: &[u8], rest: Vec<u8>) -> RawRequest {
        let text = String::from_utf8(head.to_vec()).expect("request head is not UTF-8");
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap().to_owned();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(':').unwrap_or_else(|| panic!("bad header line {l:?}"));
                (name.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        RawRequest { request_line, headers, rest }
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every header called `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub fn key(&self) -> &str {
        self.header("Sec-WebSocket-Key").expect("no Sec-WebSocket-Key in the request")
    }
}

/// Reads an HTTP head (up to the blank line); `None` if the stream ends first.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Option<RawRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some(RawRequest::parse(&buf[..end], rest));
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `Sec-WebSocket-Accept` for `key`, computed here (RFC 6455 §4.2.2), not by the library.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    BASE64.encode(sha.finalize())
}

/// A correct `101` response for `key`, with `extra` header lines (each ending in CRLF).
pub fn switching(key: &str, extra: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{extra}\r\n",
        accept_key(key)
    )
}

/// Spawns a raw server for any number of connections: for each one it reads
/// the request head, reports it on the channel, and runs `after` on the stream.
pub async fn spawn_raw_on<F, Fut>(listener: TcpListener, after: F) -> mpsc::UnboundedReceiver<RawRequest>
where
    F: Fn(RawRequest, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let after = Arc::new(after);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            let after = after.clone();
            tokio::spawn(async move {
                if let Some(request) = read_head(&mut stream).await {
                    let _ = tx.send(request.clone());
                    after(request, stream).await;
                }
            });
        }
    });
    rx
}

/// Like [`spawn_raw_on`], on a fresh loopback port.
pub async fn spawn_raw<F, Fut>(after: F) -> (SocketAddr, mpsc::UnboundedReceiver<RawRequest>)
where
    F: Fn(RawRequest, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (listener, addr) = listen().await;
    (addr, spawn_raw_on(listener, after).await)
}

/// Writes `response` (made from the request), then keeps the connection open
/// until the client goes away.
pub async fn spawn_responder<F>(response: F) -> (SocketAddr, mpsc::UnboundedReceiver<RawRequest>)
where
    F: Fn(&RawRequest) -> Vec<u8> + Send + Sync + 'static,
{
    let response = Arc::new(response);
    spawn_raw(move |request, mut stream| {
        let bytes = response(&request);
        async move {
            let _ = stream.write_all(&bytes).await;
            drain(&mut stream).await;
        }
    })
    .await
}

/// A raw server that accepts every handshake correctly and then discards input.
pub async fn spawn_accepting_raw_on(listener: TcpListener) -> mpsc::UnboundedReceiver<RawRequest> {
    spawn_raw_on(listener, |request, mut stream| async move {
        let _ = stream.write_all(switching(request.key(), "").as_bytes()).await;
        drain(&mut stream).await;
    })
    .await
}

pub async fn spawn_accepting_raw() -> (SocketAddr, mpsc::UnboundedReceiver<RawRequest>) {
    let (listener, addr) = listen().await;
    (addr, spawn_accepting_raw_on(listener).await)
}

/// Reads and discards until the peer closes (or 10 s pass).
pub async fn drain<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Frames as a raw server sees them

/// A frame read by a raw server, with its payload unmasked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    /// The payload as it was on the wire (masked).
    pub wire: Vec<u8>,
    /// The payload after unmasking.
    pub payload: Vec<u8>,
}

/// Reads one frame; `None` when the stream ends first.
pub async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> Option<RawFrame> {
    loop {
        if let Some((frame, used)) = parse_frame(buf) {
            buf.advance(used);
            return Some(frame);
        }
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

fn parse_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (b0, b1) = (buf[0], buf[1]);
    let mut at = 2;
    let len = match b1 & 0x7f {
        126 => {
            let bytes = buf.get(2..4)?;
            at = 4;
            u64::from(u16::from_be_bytes([bytes[0], bytes[1]]))
        }
        127 => {
            let bytes = buf.get(2..10)?;
            at = 10;
            u64::from_be_bytes(bytes.try_into().unwrap())
        }
        n => u64::from(n),
    };
    let mask = if b1 & 0x80 != 0 {
        let key: [u8; 4] = buf.get(at..at + 4)?.try_into().unwrap();
        at += 4;
        Some(key)
    } else {
        None
    };
    let end = at + usize::try_from(len).unwrap();
    let wire = buf.get(at..end)?.to_vec();
    let payload = match mask {
        Some(key) => wire.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect(),
        None => wire.clone(),
    };
    Some((RawFrame { fin: b0 & 0x80 != 0, rsv: (b0 >> 4) & 0x7, opcode: b0 & 0x0f, mask, wire, payload }, end))
}

/// An unmasked, final frame as a server sends it.
pub fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// A close frame payload: code and reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(reason.as_bytes());
    out
}

// ---------------------------------------------------------------------------
// Fake proxies

/// What a fake proxy does with each connection.
#[derive(Clone, Debug)]
pub enum FakeProxy {
    /// Read the request head, answer `reply`, then connect to the target named
    /// by the CONNECT line (or to `upstream` when given) and relay bytes.
    Tunnel { reply: Vec<u8>, upstream: Option<SocketAddr> },
    /// Read the request head, answer `reply`, close.
    ReplyAndClose(Vec<u8>),
    /// Read whatever comes first, write `reply`, keep writing it until the client goes.
    Flood(Vec<u8>),
    /// Read whatever comes first, then close (a FIN, no reply).
    ReadThenClose,
}

/// A running fake proxy: its address, the request heads it received (for
/// HTTP), and how many connections it accepted.
pub struct FakeProxyServer {
    pub addr: SocketAddr,
    pub heads: Arc<Mutex<Vec<RawRequest>>>,
    pub connections: Arc<AtomicUsize>,
}

impl FakeProxyServer {
    pub fn heads(&self) -> Vec<RawRequest> {
        self.heads.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

pub async fn spawn_fake_proxy(behaviour: FakeProxy) -> FakeProxyServer {
    let (listener, addr) = listen().await;
    let heads = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let server = FakeProxyServer { addr, heads: heads.clone(), connections: connections.clone() };
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            connections.fetch_add(1, Ordering::SeqCst);
            let heads = heads.clone();
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                match behaviour {
                    FakeProxy::ReadThenClose => {
                        let mut first = [0u8; 512];
                        let _ = stream.read(&mut first).await;
                        let _ = stream.shutdown().await;
                        // Keep the socket until the client is gone, so that it sees a clean end.
                        drain(&mut stream).await;
                    }
                    FakeProxy::ReplyAndClose(reply) => {
                        if let Some(head) = read_head(&mut stream).await {
                            heads.lock().unwrap().push(head);
                        }
                        let _ = stream.write_all(&reply).await;
                        let _ = stream.shutdown().await;
                        drain(&mut stream).await;
                    }
                    FakeProxy::Flood(reply) => {
                        let mut first = [0u8; 512];
                        let _ = stream.read(&mut first).await;
                        let deadline = Instant::now() + Duration::from_secs(5);
                        while Instant::now() < deadline && stream.write_all(&reply).await.is_ok() {}
                    }
                    FakeProxy::Tunnel { reply, upstream } => {
                        let Some(head) = read_head(&mut stream).await else { return };
                        let target = head.request_line.split(' ').nth(1).unwrap_or_default().to_owned();
                        let rest = head.rest.clone();
                        heads.lock().unwrap().push(head);
                        let upstream = match upstream {
                            Some(addr) => TcpStream::connect(addr).await,
                            None => TcpStream::connect(target.as_str()).await,
                        };
                        let Ok(mut upstream) = upstream else { return };
                        if stream.write_all(&reply).await.is_err() {
                            return;
                        }
                        if !rest.is_empty() && upstream.write_all(&rest).await.is_err() {
                            return;
                        }
                        let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
                    }
                }
            });
        }
    });
    server
}

/// Relays bytes both ways until either side ends.
pub async fn relay<A, B>(mut a: A, mut b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
}

// ---------------------------------------------------------------------------
// Real proxy processes

/// A proxy program running on a loopback port, killed when dropped.
pub struct ProxyProcess {
    pub name: &'static str,
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
}

impl ProxyProcess {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// What the program wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the program now and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn scratch_dir(name: &str) -> PathBuf {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "silverback-client-{name}-{}-{}-{nanos}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `program` with the arguments made for a port (a few tries, in case
/// the free port was taken in between), and waits until it accepts connections.
fn start_process(
    name: &'static str,
    program: &str,
    install_hint: &str,
    args: impl Fn(u16, &std::path::Path) -> Vec<String>,
) -> ProxyProcess {
    let mut last_log = String::new();
    for _ in 0..3 {
        let dir = scratch_dir(name);
        let port = free_port();
        let log = dir.join("output.log");
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = match Command::new(program)
            .args(args(port, &dir))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("`{program}` is not installed but this test needs it ({install_hint}): {e}")
            }
            Err(e) => panic!("could not start `{program}`: {e}"),
        };
        let mut process = ProxyProcess { name, port, child: Some(child), dir, log };
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if std::net::TcpStream::connect_timeout(&process.addr(), Duration::from_millis(200)).is_ok() {
                return process;
            }
            let exited = process.child.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                last_log = process.log();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("`{program}` did not start listening; its output:\n{last_log}")
}

/// A tinyproxy (HTTP CONNECT proxy) on a free loopback port, optionally with
/// basic authentication. It logs every request at level Info.
pub fn start_tinyproxy(basic_auth: Option<(&str, &str)>) -> ProxyProcess {
    let auth = basic_auth.map(|(u, p)| format!("BasicAuth {u} {p}\n")).unwrap_or_default();
    start_process("tinyproxy", "tinyproxy", "apt-get install tinyproxy", move |port, dir| {
        let config = dir.join("tinyproxy.conf");
        let mut file = std::fs::File::create(&config).unwrap();
        // No ConnectPort line: CONNECT to any port is allowed.
        write!(
            file,
            "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 30\nMaxClients 50\nLogLevel Info\n{auth}"
        )
        .unwrap();
        vec!["-d".into(), "-c".into(), config.display().to_string()]
    })
}

/// A microsocks (SOCKS5 proxy) on a free loopback port, optionally requiring
/// a username and password.
pub fn start_microsocks(auth: Option<(&str, &str)>) -> ProxyProcess {
    let auth: Vec<String> = auth.map(|(u, p)| vec!["-u".into(), u.into(), "-P".into(), p.into()]).unwrap_or_default();
    start_process("microsocks", "microsocks", "apt-get install microsocks", move |port, _| {
        let mut args = vec!["-i".to_owned(), "127.0.0.1".to_owned(), "-p".to_owned(), port.to_string()];
        args.extend(auth.iter().cloned());
        args
    })
}

// ---------------------------------------------------------------------------
// TLS

#[cfg(feature = "tls")]
pub mod tls {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ClientConfig, RootCertStore, ServerConfig};
    use tokio_rustls::TlsAcceptor;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A self-signed certificate for `names`, and a TLS acceptor serving it.
    pub fn self_signed(names: &[&str]) -> (TlsAcceptor, CertificateDer<'static>) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let certified = rcgen::generate_simple_self_signed(names).expect("rcgen failed");
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        (TlsAcceptor::from(Arc::new(config)), cert)
    }

    /// A client configuration that trusts `cert` and nothing else.
    pub fn trusting(cert: &CertificateDer<'static>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// A silverback echo server over TLS (any number of connections), on 127.0.0.1.
/// Each accepted connection's request path is sent on the channel.
#[cfg(feature = "tls")]
pub async fn spawn_tls_echo_server(
    acceptor: tokio_rustls::TlsAcceptor,
) -> (SocketAddr, mpsc::UnboundedReceiver<RawRequestInfo>) {
    let (listener, addr) = listen().await;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(stream).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        let _ =
                            tx.send(RawRequestInfo { peer, host: None, path: None, tls_error: Some(e.to_string()) });
                        return;
                    }
                };
                let info = Arc::new(Mutex::new(None));
                let seen = info.clone();
                let accepted = Upgrader::new()
                    .accept_with(tls, move |request| {
                        let host = request.headers().get("host").and_then(|h| h.to_str().ok()).map(str::to_owned);
                        *seen.lock().unwrap() = Some((host, request.uri().to_string()));
                        Ok(http::HeaderMap::new())
                    })
                    .await;
                let (host, path) = info.lock().unwrap().take().unzip();
                let _ = tx.send(RawRequestInfo { peer, host: host.flatten(), path, tls_error: None });
                if let Ok(mut conn) = accepted {
                    while let Ok(msg) = conn.read_message().await {
                        if conn.write_message(msg.kind, &msg.data).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// What a TLS test server saw of one connection.
#[derive(Clone, Debug)]
pub struct RawRequestInfo {
    pub peer: SocketAddr,
    pub host: Option<String>,
    pub path: Option<String>,
    /// Set when the TLS handshake failed.
    pub tls_error: Option<String>,
}
