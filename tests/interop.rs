//! Interop with independent implementations, in both directions and in every
//! permessage-deflate mode: Python `websockets` and Node `ws`, pinned in
//! tests/interop/requirements.txt and tests/interop/package.json and installed
//! by scripts/interop-deps.sh (the tests fail, never skip, without them).
//!
//! For each (peer, mode):
//!   - `silverback_client_*`: a silverback `Dialer` talks to the peer's echo
//!     server (tests/interop/peer.{py,js} `server`) and checks every echo;
//!   - `silverback_server_*`: the peer's client (`client`) talks to a
//!     silverback `Upgrader` echoing on a loopback listener; the peer checks
//!     the echoes and must exit 0, and silverback checks what it received.
//!
//! Both check the negotiated `Sec-WebSocket-Extensions` against the mode, and
//! silverback's side counts the bytes on the wire: a compressible message must
//! travel compressed each way, and the last of a run of repeated small
//! messages must be tiny exactly when its sender may keep its context.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::SEC_WEBSOCKET_EXTENSIONS;
use silverback::dial::BoxedStream;
use silverback::{CloseFrame, DeflateConfig, DeflateParams, Dialer, Error, Message, MessageType, Proxy, Upgrader};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Upper bound for any single step; only reached when something hangs.
const STEP: Duration = Duration::from_secs(20);
const DEPS_HINT: &str = "run scripts/interop-deps.sh to install the interop peers";

// ---------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    None,
    Default,
    ServerNoContextTakeover,
    ClientNoContextTakeover,
    BothNoContextTakeover,
    ServerWindow10,
    ClientWindow10,
    /// `server_max_window_bits=15` named by the peer: offered by its client,
    /// sent unasked by its server. silverback runs with the defaults, which
    /// agree to the same parameters.
    ServerWindow15,
    /// The peer's default mode, silverback compressing at level −2
    /// (Huffman only: literals, no string matching) under context takeover.
    HuffmanOnly,
}

impl Mode {
    /// The MODE argument of the peers.
    fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Default => "default",
            Mode::ServerNoContextTakeover => "server_no_context_takeover",
            Mode::ClientNoContextTakeover => "client_no_context_takeover",
            Mode::BothNoContextTakeover => "both_no_context_takeover",
            Mode::ServerWindow10 => "server_window_10",
            Mode::ClientWindow10 => "client_window_10",
            Mode::ServerWindow15 => "server_window_15",
            Mode::HuffmanOnly => "default",
        }
    }

    /// silverback's configuration, on either side; `None`: no compression.
    fn config(self) -> Option<DeflateConfig> {
        let default = DeflateConfig::default();
        Some(match self {
            Mode::None => return None,
            Mode::Default => default,
            Mode::ServerNoContextTakeover => DeflateConfig { server_no_context_takeover: true, ..default },
            Mode::ClientNoContextTakeover => DeflateConfig { client_no_context_takeover: true, ..default },
            Mode::BothNoContextTakeover => {
                DeflateConfig { server_no_context_takeover: true, client_no_context_takeover: true, ..default }
            }
            Mode::ServerWindow10 => DeflateConfig { server_max_window_bits: 10, ..default },
            Mode::ClientWindow10 => DeflateConfig { client_max_window_bits: 10, ..default },
            Mode::ServerWindow15 | Mode::HuffmanOnly => default,
        })
    }

    /// The parameters both sides must agree on.
    fn expected(self) -> Option<DeflateParams> {
        self.config().map(|c| DeflateParams {
            server_no_context_takeover: c.server_no_context_takeover,
            client_no_context_takeover: c.client_no_context_takeover,
            server_max_window_bits: c.server_max_window_bits,
            client_max_window_bits: c.client_max_window_bits,
        })
    }

    fn dialer(self) -> Dialer {
        let dialer = Dialer::new().proxy(Proxy::None).handshake_timeout(Some(STEP));
        match self {
            Mode::None => dialer,
            // The everyday switch, rather than the equivalent config.
            Mode::Default => dialer.enable_compression(true),
            Mode::HuffmanOnly => dialer.enable_compression(true).compression_level(-2),
            _ => dialer.compression(self.config().unwrap()),
        }
    }

    fn upgrader(self) -> Upgrader {
        let upgrader = Upgrader::new().handshake_timeout(Some(STEP));
        match self {
            Mode::None => upgrader,
            Mode::Default => upgrader.enable_compression(true),
            Mode::HuffmanOnly => upgrader.enable_compression(true).compression_level(-2),
            _ => upgrader.compression(self.config().unwrap()),
        }
    }
}

/// Reads a `Sec-WebSocket-Extensions` value (or `none`) on its own, without
/// silverback's parser: RFC 7692 defaults for what is left out.
fn parse_extensions(value: &str) -> Result<Option<DeflateParams>, String> {
    if value == "none" {
        return Ok(None);
    }
    if value.contains(',') {
        return Err(format!("more than one extension accepted: {value:?}"));
    }
    let mut parts = value.split(';').map(str::trim);
    if parts.next() != Some("permessage-deflate") {
        return Err(format!("not permessage-deflate: {value:?}"));
    }
    let mut params = DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    };
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (part, None),
        };
        let bits = |v: &str| v.parse::<u8>().ok().filter(|b| (8..=15).contains(b));
        match (name, value.map(|v| (v, bits(v)))) {
            ("server_no_context_takeover", None) => params.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => params.client_no_context_takeover = true,
            ("server_max_window_bits", Some((_, Some(b)))) => params.server_max_window_bits = b,
            ("client_max_window_bits", Some((_, Some(b)))) => params.client_max_window_bits = b,
            _ => return Err(format!("unexpected parameter {part:?} in {value:?}")),
        }
    }
    Ok(Some(params))
}

// ---------------------------------------------------------------------------
// The message sequence (the same as in tests/interop/peer.py and peer.js)
// ---------------------------------------------------------------------------

const WORDS: [&str; 32] = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliett",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "ünïcödé",
    "naïve",
    "café",
    "smørrebrød",
    "✓",
    "🦀",
];
const SMALL: &str = "context takeover: the same small message, sent again and again";
/// Index of the ~200 KiB compressible text.
const BIG_TEXT: usize = 4;
/// Indexes of the last of 12 repeated small texts, and of 12 binaries.
const LAST_SMALL: [usize; 2] = [17, 29];
const COUNT: usize = 31;

struct XorShift32(u32);

impl XorShift32 {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

/// About 200 KiB: numbered lines (compressible in any window), then a
/// 4000-byte block of random words repeated, whose matches lie 4 KiB back,
/// beyond a 10-bit window: a sender that compresses with a larger window than
/// agreed makes the peer's inflater fail.
fn big_text() -> String {
    let mut text = String::new();
    for i in 0..1422 {
        text.push_str(&format!("{i:05} the quick brown fox jumps over the lazy dog; ünïcödé ✓ 🦀\n"));
    }
    let mut rng = XorShift32(0x1234567);
    let mut block = String::new();
    while block.len() < 4000 {
        block.push_str(WORDS[rng.next() as usize % WORDS.len()]);
        block.push(' ');
    }
    text + &block.repeat(25)
}

fn random_bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut rng = XorShift32(seed);
    (0..n).map(|_| (rng.next() >> 24) as u8).collect()
}

fn messages() -> Vec<Message> {
    let mut seq = vec![
        Message::text("Hello, silverback! ünïcödé ✓ 🦀"),
        Message::binary((0..=255u8).collect::<Vec<u8>>()),
        Message::text(""),
        Message::binary(Vec::new()),
        Message::text(big_text()),
        Message::binary(random_bytes(100 * 1024, 0x9E37_79B9)),
    ];
    seq.extend((0..12).map(|_| Message::text(SMALL)));
    seq.extend((0..12).map(|_| Message::binary(SMALL.as_bytes().to_vec())));
    seq.push(Message::text("bye"));
    assert_eq!(seq.len(), COUNT);
    seq
}

fn describe(kind: MessageType, data: &[u8]) -> String {
    format!("{kind:?} of {} bytes", data.len())
}

/// Why `got` is not `want`, if it is not.
fn difference(want: &Message, got: &Message) -> Option<String> {
    if want == got {
        return None;
    }
    let first = want.data.iter().zip(got.data.iter()).position(|(a, b)| a != b);
    Some(format!(
        "expected {}, got {} (first difference at byte {})",
        describe(want.kind, &want.data),
        describe(got.kind, &got.data),
        first.map_or_else(|| "end".to_owned(), |i| i.to_string()),
    ))
}

// ---------------------------------------------------------------------------
// Wire accounting
// ---------------------------------------------------------------------------

/// Bytes read and written through a [`Counted`] stream.
#[derive(Clone, Default)]
struct Counters {
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl Counters {
    fn read(&self) -> u64 {
        self.read.load(Ordering::SeqCst)
    }
    fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }
}

struct Counted<S> {
    inner: S,
    counters: Counters,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.counters.read.fetch_add((buf.filled().len() - before) as u64, Ordering::SeqCst);
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = poll {
            self.counters.written.fetch_add(n as u64, Ordering::SeqCst);
        }
        poll
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            self.counters.written.fetch_add(n as u64, Ordering::SeqCst);
        }
        poll
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Bytes on the wire for one message of the sequence, as silverback saw them:
/// what it wrote (its own copy or echo) and what it read (the peer's).
#[derive(Clone, Copy, Debug)]
struct Wire {
    sent: u64,
    received: u64,
}

/// Checks that compression happened, and context takeover exactly where it
/// was agreed. `silverback_is_client` tells who sent what.
fn check_wire(mode: Mode, silverback_is_client: bool, wires: &[Wire]) -> Result<(), String> {
    let seq = messages();
    let big = seq[BIG_TEXT].data.len() as u64;
    let wire = wires[BIG_TEXT];
    let Some(params) = mode.expected() else {
        if wire.sent < big || wire.received < big {
            return Err(format!("without compression the {big}-byte text took {wire:?} bytes on the wire"));
        }
        return Ok(());
    };
    if mode == Mode::HuffmanOnly {
        // Byte frequencies alone shrink the text, to well above what string
        // matching gets; repeats of a small message are coded afresh each time.
        if wire.sent >= big * 3 / 4 || wire.sent <= big / 4 {
            return Err(format!("Huffman-only coding of the {big}-byte text took {} bytes on the wire", wire.sent));
        }
        let repeat = wires[LAST_SMALL[0]].sent;
        if repeat < 30 {
            return Err(format!("a small message repeated took {repeat} bytes: Huffman only refers back"));
        }
    } else if wire.sent >= big / 2 {
        return Err(format!("silverback did not compress the {big}-byte text: {} bytes on the wire", wire.sent));
    }
    if wire.received >= big / 2 {
        return Err(format!("the peer did not compress the {big}-byte text: {} bytes on the wire", wire.received));
    }
    let (silverback_takeover, peer_takeover) = if silverback_is_client {
        (!params.client_no_context_takeover, !params.server_no_context_takeover)
    } else {
        (!params.server_no_context_takeover, !params.client_no_context_takeover)
    };
    for index in LAST_SMALL {
        let len = seq[index].data.len();
        let wire = wires[index];
        let sides = [("silverback", silverback_takeover, wire.sent), ("the peer", peer_takeover, wire.received)];
        let sides = if mode == Mode::HuffmanOnly { &sides[1..] } else { &sides[..] };
        for &(who, takeover, bytes) in sides {
            // A 62-byte message already sent 11 times compresses to a few bytes
            // against the kept context (plus 2 to 6 bytes of frame header);
            // compressed afresh it needs 40 or more.
            if takeover && bytes > 16 {
                return Err(format!(
                    "message {index} ({len} bytes, the 12th repeat): {who} may keep its compression context \
                     but sent {bytes} bytes on the wire; the context was not taken over"
                ));
            }
            if !takeover && bytes < 30 {
                return Err(format!(
                    "message {index} ({len} bytes, the 12th repeat): {who} agreed to no context takeover \
                     but sent only {bytes} bytes on the wire"
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Peer processes
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum PeerKind {
    Python,
    Node,
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn interop_dir() -> PathBuf {
    manifest_dir().join("tests").join("interop")
}

impl PeerKind {
    fn library(self) -> &'static str {
        match self {
            PeerKind::Python => "python websockets",
            PeerKind::Node => "node ws",
        }
    }

    /// The version pinned in tests/interop.
    fn pinned(self) -> String {
        match self {
            PeerKind::Python => {
                let path = interop_dir().join("requirements.txt");
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                text.lines()
                    .find_map(|line| line.trim().strip_prefix("websockets=="))
                    .unwrap_or_else(|| panic!("{} pins no websockets==VERSION", path.display()))
                    .trim()
                    .to_owned()
            }
            PeerKind::Node => {
                let path = interop_dir().join("package.json");
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let after = text.split_once("\"ws\"").map(|(_, rest)| rest);
                after
                    .and_then(|rest| rest.split('"').nth(1))
                    .unwrap_or_else(|| panic!("{} pins no \"ws\" version", path.display()))
                    .to_owned()
            }
        }
    }

    /// The command that runs the peer script, after checking that its
    /// interpreter and library are installed.
    fn command(self) -> Command {
        let dir = interop_dir();
        let mut command = match self {
            PeerKind::Python => {
                let venv = std::env::var_os("KOSOKU_VENV").map_or_else(|| PathBuf::from(".venv"), PathBuf::from);
                let python = manifest_dir().join(venv).join("bin").join("python");
                assert!(python.exists(), "{} does not exist: {DEPS_HINT}", python.display());
                let mut command = Command::new(python);
                command.arg("-u").arg(dir.join("peer.py"));
                command
            }
            PeerKind::Node => {
                let ws = dir.join("node_modules").join("ws").join("package.json");
                assert!(ws.exists(), "{} does not exist: {DEPS_HINT}", ws.display());
                let mut command = Command::new("node");
                command.arg(dir.join("peer.js"));
                command
            }
        };
        command.current_dir(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        command
    }
}

/// A running peer script. Killed when dropped.
struct Peer {
    what: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    transcript: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Peer {
    /// Starts `kind`'s script with `args` and checks its library version.
    async fn spawn(kind: PeerKind, args: &[&str], what: String) -> Peer {
        let mut child = kind.command().args(args).spawn().unwrap_or_else(|e| {
            panic!("{what}: cannot start the {} peer ({e}); is its interpreter installed? {DEPS_HINT}", kind.library())
        });
        let transcript = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::unbounded_channel();
        let mut readers = Vec::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let log = transcript.clone();
        readers.push(tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                log.lock().unwrap().push(format!("stdout: {line}"));
                let _ = tx.send(line);
            }
        }));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = transcript.clone();
        readers.push(tokio::spawn(async move {
            let mut stderr = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = stderr.next_line().await {
                log.lock().unwrap().push(format!("stderr: {line}"));
            }
        }));
        let mut peer = Peer { what, child, lines, transcript, readers };
        let pinned = kind.pinned();
        match peer.next_line("PEER").await {
            Ok(version) if version.split_whitespace().nth(1) == Some(pinned.as_str()) => {}
            Ok(version) => peer.fail(&format!("the peer runs {version}, but {pinned} is pinned: {DEPS_HINT}")).await,
            Err(why) => peer.fail(&format!("the {} peer did not start ({why}): {DEPS_HINT}", kind.library())).await,
        }
        peer
    }

    /// The rest of the next stdout line, which must start with `tag`.
    async fn next_line(&mut self, tag: &str) -> Result<String, String> {
        match tokio::time::timeout(STEP, self.lines.recv()).await {
            Err(_) => Err(format!("no {tag} line within {STEP:?}")),
            Ok(None) => Err(format!("the peer's output ended before a {tag} line")),
            Ok(Some(line)) => match line.strip_prefix(tag) {
                Some(rest) if rest.is_empty() || rest.starts_with(' ') => Ok(rest.trim_start().to_owned()),
                _ => Err(format!("expected a {tag} line, got {line:?}")),
            },
        }
    }

    async fn expect_line(&mut self, tag: &str) -> String {
        match self.next_line(tag).await {
            Ok(rest) => rest,
            Err(why) => self.fail(&why).await,
        }
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        match tokio::time::timeout(STEP, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => self.fail(&format!("waiting for the peer: {e}")).await,
            Err(_) => self.fail(&format!("the peer did not exit within {STEP:?}")).await,
        }
    }

    /// Panics with `why`, the test's description and everything the peer said.
    /// Generic so that it fits anywhere: `return peer.fail(..).await;` in a
    /// statement, or as a match arm of any type.
    async fn fail<T>(&mut self, why: &str) -> T {
        // Give the peer a moment to report its side (an ERROR line, a trace).
        let _ = tokio::time::timeout(Duration::from_millis(500), self.child.wait()).await;
        for reader in &mut self.readers {
            let _ = tokio::time::timeout(Duration::from_millis(500), reader).await;
        }
        let transcript = self.transcript.lock().unwrap().join("\n  ");
        panic!("{}: {why}\n  --- peer output ---\n  {transcript}", self.what)
    }

    /// Awaits a silverback step, failing the test on an error or after [`STEP`].
    async fn step<T, E: fmt::Display>(&mut self, step: &str, f: impl Future<Output = Result<T, E>>) -> T {
        match tokio::time::timeout(STEP, f).await {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => self.fail(&format!("{step}: {e}")).await,
            Err(_) => self.fail(&format!("{step}: no result within {STEP:?}")).await,
        }
    }
}

/// Checks an extensions header against the mode.
fn check_extensions(value: &str, mode: Mode) -> Result<(), String> {
    let got = parse_extensions(value)?;
    if mode == Mode::ServerWindow15 && !value.contains("server_max_window_bits=15") {
        return Err(format!("mode {} expects server_max_window_bits=15 named in {value:?}", mode.name()));
    }
    if got != mode.expected() {
        return Err(format!(
            "negotiated Sec-WebSocket-Extensions {value:?} means {got:?}; mode {} expects {:?}",
            mode.name(),
            mode.expected()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The two directions
// ---------------------------------------------------------------------------

/// A silverback client against the peer's echo server.
async fn silverback_client(kind: PeerKind, mode: Mode) {
    let what = format!("silverback client -> {} server, mode {}", kind.library(), mode.name());
    let mut peer = Peer::spawn(kind, &["server", "0", mode.name()], what).await;
    let port = peer.expect_line("READY").await;
    let url = format!("ws://127.0.0.1:{port}/");

    let counters = Counters::default();
    let dial_counters = counters.clone();
    let dialer = mode.dialer().connect_fn(move |host, port| {
        let counters = dial_counters.clone();
        async move {
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(Counted { inner: stream, counters }) as BoxedStream)
        }
    });
    let (mut conn, response) = peer.step("dial", dialer.connect(&url)).await;

    let received: Vec<&str> =
        response.headers().get_all(SEC_WEBSOCKET_EXTENSIONS).iter().map(|v| v.to_str().unwrap_or("<bad>")).collect();
    let received = if received.is_empty() { "none".to_owned() } else { received.join(", ") };
    let sent = peer.expect_line("EXT").await;
    if received != sent {
        return peer
            .fail(&format!("silverback read Sec-WebSocket-Extensions {received:?}, the peer sent {sent:?}"))
            .await;
    }
    if let Err(why) = check_extensions(&sent, mode) {
        return peer.fail(&why).await;
    }
    if conn.compression_negotiated() != mode.expected().is_some() {
        let negotiated = conn.compression_negotiated();
        return peer.fail(&format!("compression_negotiated() is {negotiated} after {sent:?}")).await;
    }

    let mut wires = Vec::new();
    for (i, msg) in messages().iter().enumerate() {
        let (read, written) = (counters.read(), counters.written());
        let step = format!("message {i} ({})", describe(msg.kind, &msg.data));
        peer.step(&format!("writing {step}"), conn.write_message(msg.kind, &msg.data)).await;
        let sent = counters.written() - written;
        let echo = peer.step(&format!("reading the echo of {step}"), conn.read_message()).await;
        if let Some(why) = difference(msg, &echo) {
            return peer.fail(&format!("the echo of {step} differs: {why}")).await;
        }
        wires.push(Wire { sent, received: counters.read() - read });
    }
    peer.step("closing", conn.close(CloseFrame::new(1000u16, "done"))).await;
    let closed = peer.expect_line("CLOSED").await;
    if !closed.starts_with("1000") {
        return peer.fail(&format!("the peer saw the close as {closed:?}, not 1000")).await;
    }
    if let Err(why) = check_wire(mode, true, &wires) {
        return peer.fail(&format!("{why}\n  wire bytes per message: {wires:?}")).await;
    }
}

/// What the silverback echo server saw.
struct Served {
    negotiated: bool,
    received: Vec<Message>,
    wires: Vec<Wire>,
    end: Error,
}

/// The peer's client against a silverback echo server.
async fn silverback_server(kind: PeerKind, mode: Mode) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upgrader = mode.upgrader();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
        stream.set_nodelay(true).map_err(|e| format!("set_nodelay: {e}"))?;
        let counters = Counters::default();
        let stream = Counted { inner: stream, counters: counters.clone() };
        let mut conn = upgrader.accept(stream).await.map_err(|e| format!("handshake: {e}"))?;
        let negotiated = conn.compression_negotiated();
        let (mut received, mut wires) = (Vec::new(), Vec::new());
        loop {
            let (read, written) = (counters.read(), counters.written());
            let msg = match conn.read_message().await {
                Ok(msg) => msg,
                Err(end) => return Ok::<_, String>(Served { negotiated, received, wires, end }),
            };
            let read = counters.read() - read;
            let i = received.len();
            conn.write_message(msg.kind, &msg.data)
                .await
                .map_err(|e| format!("echoing message {i} ({}): {e}", describe(msg.kind, &msg.data)))?;
            wires.push(Wire { sent: counters.written() - written, received: read });
            received.push(msg);
        }
    });

    let what = format!("{} client -> silverback server, mode {}", kind.library(), mode.name());
    let url = format!("ws://{addr}/");
    let mut peer = Peer::spawn(kind, &["client", &url, mode.name()], what).await;
    let ext = peer.expect_line("EXT").await;
    if let Err(why) = check_extensions(&ext, mode) {
        return peer.fail(&why).await;
    }
    let status = peer.wait_exit().await;
    if !status.success() {
        return peer.fail(&format!("the peer client failed ({status})")).await;
    }
    let ok = peer.expect_line("OK").await;
    if ok != format!("{COUNT} messages") {
        return peer.fail(&format!("the peer reports {ok:?}, expected {COUNT} messages")).await;
    }

    let served = match peer.step("the silverback server task", server).await {
        Ok(served) => served,
        Err(why) => peer.fail(&format!("silverback server: {why}")).await,
    };
    if served.negotiated != mode.expected().is_some() {
        return peer.fail(&format!("compression_negotiated() is {} after {ext:?}", served.negotiated)).await;
    }
    if !matches!(&served.end, Error::Closed(close) if close.code.0 == 1000) {
        return peer
            .fail(&format!("the silverback server's reads ended with {:?}, not a 1000 close", served.end))
            .await;
    }
    let want = messages();
    if served.received.len() != want.len() {
        return peer.fail(&format!("silverback received {} messages, not {}", served.received.len(), want.len())).await;
    }
    for (i, (want, got)) in want.iter().zip(&served.received).enumerate() {
        if let Some(why) = difference(want, got) {
            return peer.fail(&format!("message {i} as silverback received it: {why}")).await;
        }
    }
    if let Err(why) = check_wire(mode, false, &served.wires) {
        return peer.fail(&format!("{why}\n  wire bytes per message: {:?}", served.wires)).await;
    }
}

// ---------------------------------------------------------------------------
// The matrix: one module per mode, four tests in each
// ---------------------------------------------------------------------------

macro_rules! interop_tests {
    ($($module:ident => $mode:expr;)*) => {$(
        mod $module {
            use super::*;

            #[tokio::test]
            async fn silverback_client_python_server() {
                silverback_client(PeerKind::Python, $mode).await;
            }

            #[tokio::test]
            async fn silverback_server_python_client() {
                silverback_server(PeerKind::Python, $mode).await;
            }

            #[tokio::test]
            async fn silverback_client_node_server() {
                silverback_client(PeerKind::Node, $mode).await;
            }

            #[tokio::test]
            async fn silverback_server_node_client() {
                silverback_server(PeerKind::Node, $mode).await;
            }
        }
    )*};
}

interop_tests! {
    none => Mode::None;
    default => Mode::Default;
    server_no_context_takeover => Mode::ServerNoContextTakeover;
    client_no_context_takeover => Mode::ClientNoContextTakeover;
    both_no_context_takeover => Mode::BothNoContextTakeover;
    server_window_10 => Mode::ServerWindow10;
    client_window_10 => Mode::ClientWindow10;
    huffman_only => Mode::HuffmanOnly;
}

/// `server_max_window_bits=15` (RFC 7692 §7.1.2.1): a server accepts an offer
/// of it only by answering with it, even at the default value, and
/// websockets refuses a response that leaves it out; a server may also send
/// it unasked, and a client must take it. Python only: peer.js has no such
/// mode.
mod server_window_15 {
    use super::*;

    #[tokio::test]
    async fn silverback_client_python_server() {
        silverback_client(PeerKind::Python, Mode::ServerWindow15).await;
    }

    #[tokio::test]
    async fn silverback_server_python_client() {
        silverback_server(PeerKind::Python, Mode::ServerWindow15).await;
    }
}

#[test]
fn extension_header_reading() {
    assert_eq!(parse_extensions("none"), Ok(None));
    assert_eq!(parse_extensions("permessage-deflate"), Ok(Mode::Default.expected()));
    assert_eq!(
        parse_extensions("permessage-deflate; client_no_context_takeover; server_no_context_takeover"),
        Ok(Mode::BothNoContextTakeover.expected())
    );
    assert_eq!(
        parse_extensions("permessage-deflate; server_max_window_bits=\"10\""),
        Ok(Mode::ServerWindow10.expected())
    );
    assert_eq!(
        parse_extensions("permessage-deflate; client_max_window_bits=10; server_max_window_bits=15"),
        Ok(Mode::ClientWindow10.expected())
    );
    assert_eq!(parse_extensions("permessage-deflate; server_max_window_bits=15"), Ok(Mode::ServerWindow15.expected()));
    for bad in ["permessage-deflate; client_max_window_bits", "x-webkit-deflate-frame", "permessage-deflate, x"] {
        assert!(parse_extensions(bad).is_err(), "{bad}");
    }
}
