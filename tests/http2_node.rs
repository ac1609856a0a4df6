//! WebSockets over HTTP/2 (RFC 8441) against an independent peer: Node's
//! own `http2` module, driven by tests/interop/h2_peer.js, which writes the
//! WebSocket framing and permessage-deflate out itself on Node's `zlib`
//! (no npm package). Both directions:
//!
//!   - `silverback_client_*`: silverback's `Dialer` (h2c with prior
//!     knowledge, or TLS with ALPN `h2`) against the script's echo server,
//!     which answers extended CONNECTs with 200, negotiates subprotocols and
//!     permessage-deflate (each message on its own, or with context
//!     takeover), echoes every message (fragmented when large, with a ping
//!     between fragments) and reports what it saw;
//!   - `node_client_*`: the script's client, on one HTTP/2 session, opens
//!     several WebSockets at once on a hyper server that upgrades with
//!     silverback's `Upgrader` and echoes; the script checks every echo,
//!     pong and close, and the server checks that every request came over
//!     HTTP/2.
//!
//! Node is required: without it these tests fail with a message saying so
//! (CI installs it); they never skip.

#![cfg(feature = "hyper")]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, StatusCode, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use silverback::{
    ClientStream, CloseCode, CloseError, CloseFrame, Conn, Dialer, Error, Http2Mode, Message, MessageType, Proxy,
    Upgrader,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Upper bound for any single step; only reached when something hangs.
const STEP: Duration = Duration::from_secs(30);
const NODE_HINT: &str = "tests/http2_node.rs needs Node.js (18 or later) as `node` on PATH \
                         (CI installs it); these tests fail rather than skip without it";

/// Awaits `f` for at most [`STEP`].
async fn within<T, E: fmt::Display>(what: &str, f: impl Future<Output = Result<T, E>>) -> Result<T, String> {
    match tokio::time::timeout(STEP, f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no result within {STEP:?}")),
    }
}

// ---------------------------------------------------------------------------
// The Node process
// ---------------------------------------------------------------------------

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("interop")
}

/// A running tests/interop/h2_peer.js. Killed when dropped.
struct Node {
    what: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Lines read while looking for another tag, in order.
    backlog: VecDeque<String>,
    transcript: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Node {
    /// Starts the script with `args` and checks that it runs on Node 18 or later.
    async fn spawn(what: impl Into<String>, args: &[&str]) -> Node {
        let what = what.into();
        let dir = interop_dir();
        let mut command = Command::new("node");
        command
            .arg(dir.join("h2_peer.js"))
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| panic!("{what}: cannot run `node` ({e}): {NODE_HINT}"));
        let transcript = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (log_out, log_err) = (transcript.clone(), transcript.clone());
        let readers = vec![
            tokio::spawn(async move {
                let mut stdout = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = stdout.next_line().await {
                    log_out.lock().unwrap().push(format!("stdout: {line}"));
                    let _ = tx.send(line);
                }
            }),
            tokio::spawn(async move {
                let mut stderr = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = stderr.next_line().await {
                    log_err.lock().unwrap().push(format!("stderr: {line}"));
                }
            }),
        ];
        let mut node = Node { what, child, lines, backlog: VecDeque::new(), transcript, readers };
        let peer = node.next("PEER").await;
        let major = peer
            .strip_prefix("node-http2 node v")
            .and_then(|version| version.split('.').next())
            .and_then(|major| major.parse::<u32>().ok());
        match major {
            Some(major) if major >= 18 => {}
            _ => node.fail(&format!("unexpected PEER line {peer:?}: {NODE_HINT}")).await,
        }
        node
    }

    /// The rest of the next line tagged `tag`.
    async fn next(&mut self, tag: &str) -> String {
        self.next_where(tag, |_| true).await
    }

    /// The rest of the next line tagged `tag` whose rest satisfies `want`;
    /// other lines wait in the backlog for their turn. An `ERROR` or `FAIL`
    /// line fails the test at once.
    async fn next_where(&mut self, tag: &str, want: impl Fn(&str) -> bool) -> String {
        let matches = |line: &str| {
            let rest = line.strip_prefix(tag)?;
            let rest = if rest.is_empty() { rest } else { rest.strip_prefix(' ')? };
            want(rest).then(|| rest.to_owned())
        };
        if let Some(i) = self.backlog.iter().position(|line| matches(line).is_some()) {
            let line = self.backlog.remove(i).expect("a line at this index");
            return matches(&line).expect("it matched");
        }
        let deadline = Instant::now() + STEP;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Err(_) => return self.fail(&format!("no matching {tag} line within {STEP:?}")).await,
                Ok(None) => return self.fail(&format!("the output ended before a matching {tag} line")).await,
                Ok(Some(line)) => line,
            };
            self.check_line(&line).await;
            if let Some(rest) = matches(&line) {
                return rest;
            }
            self.backlog.push_back(line);
        }
    }

    async fn check_line(&mut self, line: &str) {
        if line.starts_with("ERROR ") || line.starts_with("FAIL ") {
            self.fail(&format!("the peer reports {line:?}")).await
        }
    }

    /// Moves what was printed so far into the backlog (checking it).
    async fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.check_line(&line).await;
            self.backlog.push_back(line);
        }
    }

    /// The lines tagged `tag` printed so far, left in the backlog.
    async fn seen(&mut self, tag: &str) -> Vec<String> {
        self.drain().await;
        let prefix = format!("{tag} ");
        self.backlog.iter().filter_map(|line| line.strip_prefix(&prefix)).map(str::to_owned).collect()
    }

    /// Waits for the script to exit by itself.
    async fn wait_exit(&mut self) -> ExitStatus {
        match tokio::time::timeout(STEP * 2, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => self.fail(&format!("waiting for node: {e}")).await,
            Err(_) => self.fail(&format!("node did not exit within {:?}", STEP * 2)).await,
        }
    }

    /// Ends a server script, after checking that it reported no error.
    async fn stop(mut self) {
        // Give it a moment to report the end of what just closed.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.drain().await;
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(STEP, self.child.wait()).await;
    }

    /// Panics with `why`, what the test is, and everything the script said.
    async fn fail<T>(&mut self, why: &str) -> T {
        // Give the script a moment to report its side.
        let _ = tokio::time::timeout(Duration::from_millis(500), self.child.wait()).await;
        for reader in &mut self.readers {
            let _ = tokio::time::timeout(Duration::from_millis(500), reader).await;
        }
        let transcript = self.transcript.lock().unwrap().join("\n  ");
        panic!("{}: {why}\n  --- h2_peer.js output ---\n  {transcript}", self.what)
    }

    /// The value, or the test fails with the error and the transcript.
    async fn check<T>(&mut self, result: Result<T, String>) -> T {
        match result {
            Ok(value) => value,
            Err(why) => self.fail(&why).await,
        }
    }

    async fn step<T, E: fmt::Display>(&mut self, what: &str, f: impl Future<Output = Result<T, E>>) -> T {
        let result = within(what, f).await;
        self.check(result).await
    }
}

/// An `OPEN` line of the script's server.
#[derive(Debug, PartialEq, Eq)]
struct Opened {
    scheme: String,
    authority: String,
    protocol: String,
    ext: String,
}

/// A `CLOSED` line of the script's server.
#[derive(Debug, PartialEq, Eq)]
struct Closed {
    code: u16,
    by: String,
    messages: usize,
    compressed: usize,
    /// The most frames one received message came in.
    frames: usize,
    fragmented: usize,
    pings: usize,
    pongs: usize,
    /// The payload bytes of the last message that repeated the one before.
    repeat: usize,
    reason: String,
}

/// Parses the rest of a `CLOSED <path> ...` line, after the path.
fn parse_closed(rest: &str) -> Option<Closed> {
    let (code, rest) = rest.split_once(' ')?;
    let (fields, reason) = rest.split_once(" reason=")?;
    let mut closed = Closed {
        code: code.parse().ok()?,
        by: String::new(),
        messages: 0,
        compressed: 0,
        frames: 0,
        fragmented: 0,
        pings: 0,
        pongs: 0,
        repeat: 0,
        reason: reason.to_owned(),
    };
    for field in fields.split(' ') {
        let (name, value) = field.split_once('=')?;
        let count = || value.parse::<usize>().ok();
        match name {
            "by" => closed.by = value.to_owned(),
            "messages" => closed.messages = count()?,
            "compressed" => closed.compressed = count()?,
            "frames" => closed.frames = count()?,
            "fragmented" => closed.fragmented = count()?,
            "pings" => closed.pings = count()?,
            "pongs" => closed.pongs = count()?,
            "repeat" => closed.repeat = count()?,
            _ => return None,
        }
    }
    Some(closed)
}

impl Node {
    /// Starts the script's echo server; its port.
    async fn server(what: impl Into<String>, args: &[&str]) -> (Node, u16) {
        let mut all = vec!["server"];
        all.extend_from_slice(args);
        let mut node = Node::spawn(what, &all).await;
        let ready = node.next("READY").await;
        match ready.parse() {
            Ok(port) => (node, port),
            Err(_) => node.fail(&format!("READY {ready:?} is no port")).await,
        }
    }

    /// The `OPEN` line for `path`: the request's `:scheme` and
    /// `:authority`, the chosen subprotocol and the extension answer.
    async fn opened(&mut self, path: &str) -> Opened {
        let prefix = format!("{path} ");
        let rest = self.next_where("OPEN", |rest| rest.starts_with(&prefix)).await;
        let parsed = (|| {
            let rest = rest[prefix.len()..].strip_prefix("scheme=")?;
            let (scheme, rest) = rest.split_once(" authority=")?;
            let (authority, rest) = rest.split_once(" protocol=")?;
            let (protocol, ext) = rest.split_once(" ext=")?;
            Some(Opened {
                scheme: scheme.to_owned(),
                authority: authority.to_owned(),
                protocol: protocol.to_owned(),
                ext: ext.to_owned(),
            })
        })();
        match parsed {
            Some(parsed) => parsed,
            None => self.fail(&format!("cannot read OPEN {rest:?}")).await,
        }
    }

    /// Checks that `path`'s stream ended in order: END_STREAM from the
    /// client, no RST_STREAM (RFC 8441 §5).
    async fn ended_in_order(&mut self, path: &str) {
        let prefix = format!("{path} ");
        let rest = self.next_where("ENDED", |rest| rest.starts_with(&prefix)).await;
        if &rest[prefix.len()..] != "fin=true rst=0" {
            self.fail(&format!("{path}: the stream did not end with END_STREAM alone: ENDED {rest}")).await
        }
    }

    /// The `CLOSED` line for `path`.
    async fn closed(&mut self, path: &str) -> Closed {
        let prefix = format!("{path} ");
        let rest = self.next_where("CLOSED", |rest| rest.starts_with(&prefix)).await;
        match parse_closed(&rest[prefix.len()..]) {
            Some(closed) => closed,
            None => self.fail(&format!("cannot read CLOSED {rest:?}")).await,
        }
    }
}

// ---------------------------------------------------------------------------
// What silverback's client sends
// ---------------------------------------------------------------------------

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

fn random_bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut rng = XorShift32(seed);
    (0..n).map(|_| (rng.next() >> 24) as u8).collect()
}

/// About 200 KiB of compressible text, not all ASCII.
fn big_text() -> String {
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 200 * 1024 {
        text.push_str(&format!("{i:05} the quick brown fox jumps over the lazy dog; ünïcödé ✓ 🦀\n"));
        i += 1;
    }
    text
}

const SMALL: &str = "context takeover: the same small message, sent again and again";

/// The messages echoed one by one: every frame length encoding (7, 16 and
/// 64 bits, at their edges), empty ones, large ones (> 64 KiB), and small
/// repeated ones (which a context taken over compresses to a few bytes).
fn sequence() -> Vec<Message> {
    let mut seq = vec![
        Message::text("Hello over HTTP/2! ünïcödé ✓ 🦀"),
        Message::binary((0..=255u8).collect::<Vec<u8>>()),
        Message::text(""),
        Message::binary(Vec::new()),
        Message::binary(random_bytes(125, 1)),
        Message::binary(random_bytes(126, 2)),
        Message::binary(random_bytes(65535, 3)),
        Message::binary(random_bytes(65536, 4)),
        Message::text(big_text()),
        Message::binary(random_bytes(100 * 1024, 0x9E37_79B9)),
    ];
    seq.extend((0..6).map(|_| Message::text(SMALL)));
    seq
}

/// Messages of [`sequence`] that the script echoes in fragments (> 16 KiB),
/// plus the streamed one.
const FRAGMENTED_ECHOES: usize = 5;

fn describe(message: &Message) -> String {
    format!("{:?} of {} bytes", message.kind, message.data.len())
}

/// What is wrong with `echo`, the echo of `sent`.
fn differs(sent: &Message, echo: &Message) -> Option<String> {
    if sent == echo {
        return None;
    }
    let first = sent.data.iter().zip(echo.data.iter()).position(|(a, b)| a != b);
    let at = first.unwrap_or(sent.data.len().min(echo.data.len()));
    Some(format!("the echo is a {} and differs (first difference at byte {at})", describe(echo)))
}

/// Sends everything and checks every echo: the [`sequence`], a message
/// streamed through a `MessageWriter` in many fragments, and a `please ping`
/// that has the script ping first (answered while reading the echo).
/// Returns how many messages were sent.
async fn echo_all(conn: &mut Conn<ClientStream>, ping: &str) -> Result<usize, String> {
    let mut sent = 0;
    for (i, message) in sequence().iter().enumerate() {
        let what = format!("message {i} ({})", describe(message));
        within(&format!("writing {what}"), conn.write_message(message.kind, &message.data)).await?;
        sent += 1;
        let echo = within(&format!("reading the echo of {what}"), conn.read_message()).await?;
        if let Some(why) = differs(message, &echo) {
            return Err(format!("{what}: {why}"));
        }
    }

    let mut streamed = String::new();
    while streamed.len() < 50 * 1024 {
        streamed.push_str(&format!("line {:05} of a message written in pieces\n", streamed.len()));
    }
    {
        let mut writer = within("starting the streamed message", conn.next_writer(MessageType::Text)).await?;
        for piece in streamed.as_bytes().chunks(1000) {
            within("writing a piece of the streamed message", writer.write_all(piece)).await?;
        }
        within("finishing the streamed message", writer.close()).await?;
    }
    sent += 1;
    let echo = within("reading the echo of the streamed message", conn.read_message()).await?;
    if let Some(why) = differs(&Message::text(streamed.as_str()), &echo) {
        return Err(format!("the streamed message: {why}"));
    }

    let please = format!("please ping {ping}");
    within("writing the ping request", conn.write_text(&please)).await?;
    sent += 1;
    let echo = within("reading the echo of the ping request", conn.read_message()).await?;
    if echo.as_text() != Some(please.as_str()) {
        return Err(format!("the echo of {please:?} is a {}", describe(&echo)));
    }
    Ok(sent)
}

/// Closes with 1000 and checks that the server's close said 1000 too.
async fn close_normally(conn: &mut Conn<ClientStream>) -> Result<(), String> {
    within("closing", conn.close(CloseFrame::new(CloseCode::NORMAL, "done"))).await?;
    match conn.close_error() {
        Some(CloseError { code: CloseCode::NORMAL, .. }) => Ok(()),
        other => Err(format!("the server answered the close with {other:?}, not 1000")),
    }
}

/// How silverback's client compressed, as the script's server agreed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    Plain,
    /// Each message on its own (`client_no_context_takeover`).
    Afresh,
    /// With the context of the messages before.
    Takeover,
}

/// Checks the script's account of a WebSocket that [`echo_all`] and
/// [`close_normally`] ran on: every message arrived (compressed or not as
/// agreed), every ping got its pong, the close was 1000. The sixth copy of
/// the small message tells whether the context was kept.
async fn check_closed(node: &mut Node, path: &str, sent: usize, how: Sent) {
    let closed = node.closed(path).await;
    let expected = Closed {
        code: 1000,
        by: "client".to_owned(),
        messages: sent,
        compressed: if how == Sent::Plain { 0 } else { sent },
        frames: closed.frames,
        fragmented: FRAGMENTED_ECHOES,
        pings: FRAGMENTED_ECHOES + 1,
        pongs: FRAGMENTED_ECHOES + 1,
        repeat: closed.repeat,
        reason: "done".to_owned(),
    };
    if closed != expected {
        return node.fail(&format!("{path}: the script saw {closed:?}, expected {expected:?}")).await;
    }
    node.ended_in_order(path).await;
    // The streamed message came in fragments.
    if closed.frames < 2 {
        return node.fail(&format!("{path}: no message came in more than one frame: {closed:?}")).await;
    }
    // 62 bytes: a few against the kept context, 40 or more afresh.
    let repeat_fits = match how {
        Sent::Plain => closed.repeat == SMALL.len(),
        Sent::Afresh => closed.repeat >= 30,
        Sent::Takeover => (1..=16).contains(&closed.repeat),
    };
    if !repeat_fits {
        let repeat = closed.repeat;
        node.fail(&format!("{path}: sent {how:?}, the 6th small message took {repeat} bytes on the wire")).await
    }
}

fn dialer() -> Dialer {
    Dialer::new().proxy(Proxy::None).handshake_timeout(Some(STEP))
}

// ---------------------------------------------------------------------------
// silverback's client, Node's server
// ---------------------------------------------------------------------------

/// One WebSocket with `Http2Mode::Only` over h2c: subprotocol, extension
/// answer, every echo, the script's ping, and the close handshake.
/// `extra`: more options for the script's server.
async fn silverback_client(deflate: &str, answer: &str, how: Sent, extra: &[&str]) {
    let what = format!("silverback client -> node http2 server, deflate {deflate} {extra:?}");
    let mut args = vec!["--protocols", "chat", "--deflate", deflate];
    args.extend_from_slice(extra);
    let (mut node, port) = Node::server(what, &args).await;
    let compression = deflate != "none";
    let d = dialer().http2(Http2Mode::Only).subprotocols(["other", "chat"]).enable_compression(compression);
    // The script names a WebSocket by its `:path`, query included.
    let path = format!("/echo/{deflate}?query=1");
    let url = format!("ws://127.0.0.1:{port}{path}");
    let (mut conn, response) = node.step("dialing", d.connect(&url)).await;

    let opened = node.opened(&path).await;
    let header = |name| response.headers().get(name).map(|v| v.to_str().unwrap_or("<not text>").to_owned());
    let seen = (
        response.status(),
        conn.with_stream(|s| s.is_http2() && !s.is_tls()),
        conn.subprotocol().map(str::to_owned),
        header("sec-websocket-protocol"),
        conn.compression_negotiated(),
        header("sec-websocket-extensions"),
    );
    let expected = (
        StatusCode::OK,
        true,
        Some("chat".to_owned()),
        Some("chat".to_owned()),
        compression,
        compression.then(|| answer.to_owned()),
    );
    let script_expected = Opened {
        scheme: "http".to_owned(),
        authority: format!("127.0.0.1:{port}"),
        protocol: "chat".to_owned(),
        ext: if compression { answer } else { "none" }.to_owned(),
    };
    if seen != expected || opened != script_expected {
        return node
            .fail(&format!(
                "the handshake: silverback saw {seen:?}, expected {expected:?}; \
                 the script saw {opened:?}, expected {script_expected:?}"
            ))
            .await;
    }

    let result = echo_all(&mut conn, "over h2c").await;
    let sent = node.check(result).await;
    node.next_where("PONG", |rest| rest == format!("{path} over h2c")).await;
    let result = close_normally(&mut conn).await;
    node.check(result).await;
    check_closed(&mut node, &path, sent, how).await;
    let sessions = node.seen("SESSION").await;
    if sessions != ["1"] {
        return node.fail(&format!("expected one HTTP/2 session, the script saw {sessions:?}")).await;
    }
    node.stop().await;
}

#[tokio::test]
async fn silverback_client_h2c_to_node_server() {
    silverback_client("none", "", Sent::Plain, &[]).await;
}

#[tokio::test]
async fn silverback_client_h2c_to_node_server_compressed_without_context_takeover() {
    let answer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    silverback_client("no-takeover", answer, Sent::Afresh, &[]).await;
}

#[tokio::test]
async fn silverback_client_h2c_to_node_server_compressed_with_context_takeover() {
    silverback_client("takeover", "permessage-deflate", Sent::Takeover, &[]).await;
}

/// Node lets the client send 1000 bytes on a stream before each
/// WINDOW_UPDATE: every large message waits on flow control many times.
#[tokio::test]
async fn silverback_client_h2c_to_node_server_with_a_small_flow_control_window() {
    silverback_client("none", "", Sent::Plain, &["--window", "1000"]).await;
}

/// `connect_http2`, then several WebSockets opened at once on the one
/// connection and used at once, then one more after they all closed.
#[tokio::test]
async fn silverback_client_opens_several_websockets_on_one_node_connection() {
    const ROOMS: usize = 6;
    let what = "silverback client, several WebSockets on one connection -> node http2 server";
    let (mut node, port) = Node::server(what, &["--deflate", "takeover"]).await;
    let base = format!("ws://127.0.0.1:{port}");
    let http2 = node.step("connect_http2", dialer().enable_compression(true).connect_http2(&base)).await;
    // Opened at once, from as many tasks, and used at once.
    let mut tasks = Vec::new();
    for i in 0..ROOMS {
        let (http2, path) = (http2.clone(), format!("/room/{i}"));
        let url = format!("{base}{path}");
        tasks.push(tokio::spawn(async move {
            let fail = |e: String| format!("{path}: {e}");
            let (mut conn, _) = within("opening", http2.open(&url)).await.map_err(fail)?;
            if !conn.with_stream(|s| s.is_http2()) || !conn.compression_negotiated() {
                return Err(fail("not HTTP/2, or not compressed".to_owned()));
            }
            let sent = echo_all(&mut conn, &format!("room {i}")).await.map_err(fail)?;
            close_normally(&mut conn).await.map_err(fail)?;
            Ok::<_, String>((path, sent))
        }));
    }
    for task in tasks {
        let result = within("a WebSocket's task", task).await.and_then(|r| r);
        let (path, sent) = node.check(result).await;
        check_closed(&mut node, &path, sent, Sent::Takeover).await;
    }
    for i in 0..ROOMS {
        node.next_where("PONG", |rest| rest == format!("/room/{i} room {i}")).await;
    }
    if http2.is_closed() {
        return node.fail("the HTTP/2 connection closed with its WebSockets").await;
    }
    let (mut conn, _) = node.step("opening one more", http2.open(&format!("{base}/late"))).await;
    let echo = node
        .step("echoing on it", async {
            conn.write_text("late").await?;
            conn.read_message().await
        })
        .await;
    if echo.as_text() != Some("late") {
        return node.fail(&format!("the late WebSocket echoed a {}", describe(&echo))).await;
    }
    let result = close_normally(&mut conn).await;
    node.check(result).await;
    let sessions = node.seen("SESSION").await;
    if sessions != ["1"] {
        return node.fail(&format!("expected one HTTP/2 session, the script saw {sessions:?}")).await;
    }
    node.stop().await;
}

/// Node starts the close handshake; silverback answers it.
#[tokio::test]
async fn silverback_client_answers_a_close_from_node() {
    let (mut node, port) = Node::server("node http2 server closes first", &["--deflate", "no-takeover"]).await;
    let d = dialer().http2(Http2Mode::Only).enable_compression(true);
    let (mut conn, _) = node.step("dialing", d.connect(&format!("ws://127.0.0.1:{port}/bye"))).await;
    node.step("asking for the close", conn.write_text("please close")).await;
    match tokio::time::timeout(STEP, conn.read_message()).await {
        Ok(Err(Error::Closed(CloseError { code: CloseCode::NORMAL, reason }))) if reason == "server bye" => {}
        other => return node.fail(&format!("expected the server's close 1000, got {other:?}")).await,
    }
    let closed = node.closed("/bye").await;
    if (closed.code, closed.by.as_str(), closed.messages) != (1000, "server", 1) {
        return node.fail(&format!("the script saw {closed:?}")).await;
    }
    node.ended_in_order("/bye").await;
    node.stop().await;
}

/// Node resets the WebSocket's stream (RST_STREAM): reads end with an error
/// at once, and the connection carries on for the other WebSockets.
#[tokio::test]
async fn silverback_client_sees_node_reset_the_stream() {
    let (mut node, port) = Node::server("node http2 server resets a stream", &[]).await;
    let base = format!("ws://127.0.0.1:{port}");
    let http2 = node.step("connect_http2", dialer().connect_http2(&base)).await;
    let (mut doomed, _) = node.step("opening /doomed", http2.open(&format!("{base}/doomed"))).await;
    let (mut other, _) = node.step("opening /other", http2.open(&format!("{base}/other"))).await;
    node.step("asking for the reset", doomed.write_text("please reset")).await;
    node.next_where("RESET", |rest| rest == "/doomed").await;
    match tokio::time::timeout(STEP, doomed.read_message()).await {
        Ok(Err(Error::Io(_) | Error::Closed(CloseError { code: CloseCode::ABNORMAL_CLOSURE, .. }))) => {}
        other => return node.fail(&format!("reading the reset stream: expected an error, got {other:?}")).await,
    }
    if doomed.write_text("after the reset").await.is_ok() && doomed.flush().await.is_ok() {
        // A write may be taken before the reset is seen; a read must not.
        if let Ok(Ok(message)) = tokio::time::timeout(STEP, doomed.read_message()).await {
            return node.fail(&format!("a message after the reset: {}", describe(&message))).await;
        }
    }
    let echo = node
        .step("echoing on the other stream", async {
            other.write_text("still here").await?;
            other.read_message().await
        })
        .await;
    if echo.as_text() != Some("still here") {
        return node.fail("the other WebSocket's echo differs").await;
    }
    let result = close_normally(&mut other).await;
    node.check(result).await;
    node.stop().await;
}

/// Node closes the session gracefully (GOAWAY): the open WebSocket goes on
/// to its close, a new one is refused with an HTTP/2 error, and the
/// connection ends.
#[tokio::test]
async fn silverback_client_follows_a_goaway_from_node() {
    let (mut node, port) = Node::server("node http2 server sends GOAWAY", &[]).await;
    let base = format!("ws://127.0.0.1:{port}");
    let http2 = node.step("connect_http2", dialer().connect_http2(&base)).await;
    let (mut conn, _) = node.step("opening /first", http2.open(&format!("{base}/first"))).await;
    let echo = node
        .step("asking for the GOAWAY", async {
            conn.write_text("please goaway").await?;
            conn.read_message().await
        })
        .await;
    if echo.as_text() != Some("please goaway") {
        return node.fail("the echo of the GOAWAY request differs").await;
    }
    node.next_where("GOAWAY", |rest| rest == "/first").await;
    // The GOAWAY was sent before the echo: the client has it.
    match tokio::time::timeout(STEP, http2.open(&format!("{base}/second"))).await {
        Ok(Err(Error::Http2(_))) => {}
        other => return node.fail(&format!("opening after the GOAWAY: expected Error::Http2, got {other:?}")).await,
    }
    let result = echo_all(&mut conn, "after goaway").await;
    let sent = node.check(result).await;
    let result = close_normally(&mut conn).await;
    node.check(result).await;
    check_closed(&mut node, "/first", sent + 1, Sent::Plain).await;
    let deadline = Instant::now() + STEP;
    while !http2.is_closed() {
        if Instant::now() > deadline {
            return node.fail("the connection is still open after the GOAWAY and its last stream").await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.stop().await;
}

/// Node sends a message and a ping right behind its 200, in the same tick,
/// before the client says anything: the message is the first read, the
/// ping is answered; on a fresh connection and on a shared one.
#[tokio::test]
async fn silverback_client_reads_what_node_sends_right_behind_the_200() {
    for deflate in ["none", "takeover"] {
        let what = format!("node http2 server greets, deflate {deflate}");
        let (mut node, port) = Node::server(what, &["--greet", "--deflate", deflate]).await;
        let d = dialer().enable_compression(deflate != "none");
        let base = format!("ws://127.0.0.1:{port}");
        let http2 = node.step("connect_http2", d.connect_http2(&base)).await;
        for i in 0..6 {
            let path = format!("/greet/{i}");
            let url = format!("{base}{path}");
            // Every other one on its own connection.
            let (mut conn, _) = if i % 2 == 0 {
                node.step(&format!("dialing {path}"), d.clone().http2(Http2Mode::Only).connect(&url)).await
            } else {
                node.step(&format!("opening {path}"), http2.open(&url)).await
            };
            let greeting = node.step(&format!("{path}: reading the greeting"), conn.read_message()).await;
            if greeting.as_text() != Some(format!("welcome to {path}").as_str()) {
                return node.fail(&format!("{path}: the first message is a {}", describe(&greeting))).await;
            }
            let echo = node
                .step(&format!("{path}: echoing"), async {
                    conn.write_text("hi").await?;
                    conn.read_message().await
                })
                .await;
            if echo.as_text() != Some("hi") {
                return node.fail(&format!("{path}: the echo differs")).await;
            }
            let result = close_normally(&mut conn).await;
            node.check(result).await;
            let closed = node.closed(&path).await;
            let counts = (closed.code, closed.messages, closed.pings, closed.pongs);
            if counts != (1000, 1, 1, 1) {
                return node.fail(&format!("{path}: the script saw {closed:?}")).await;
            }
            node.ended_in_order(&path).await;
        }
        node.stop().await;
    }
}

/// Node answers 200 with a subprotocol or an extension that was not
/// offered: the client refuses the WebSocket (RFC 6455 §4.1, as over
/// HTTP/1.1).
#[tokio::test]
async fn silverback_client_refuses_an_answer_it_did_not_ask_for() {
    let cases: [(&[&str], Dialer, &str); 3] = [
        (&["--force-protocol", "nope"], dialer().subprotocols(["chat"]), "a subprotocol not offered"),
        (&["--force-protocol", "nope"], dialer(), "a subprotocol when none was offered"),
        (&["--force-extension", "permessage-deflate"], dialer(), "an extension not offered"),
    ];
    for (args, d, what) in cases {
        let (mut node, port) = Node::server(format!("node http2 server answers {what}"), args).await;
        let url = format!("ws://127.0.0.1:{port}/forced");
        match tokio::time::timeout(STEP, d.http2(Http2Mode::Only).connect(&url)).await {
            Ok(Err(Error::BadResponse { response, .. })) if response.status() == StatusCode::OK => {}
            other => return node.fail(&format!("{what}: expected Error::BadResponse, got {other:?}")).await,
        }
        node.stop().await;
    }
}

/// A status other than 200 is a refusal, with its status and body.
#[tokio::test]
async fn silverback_client_sees_node_refuse_an_extended_connect() {
    let (mut node, port) = Node::server("node http2 server refuses", &[]).await;
    let d = dialer().http2(Http2Mode::Only);
    match tokio::time::timeout(STEP, d.connect(&format!("ws://127.0.0.1:{port}/refuse/403"))).await {
        Ok(Err(Error::BadResponse { response, .. })) => {
            let body = String::from_utf8_lossy(response.body()).into_owned();
            if response.status() != StatusCode::FORBIDDEN || !body.contains("refused by node") {
                return node.fail(&format!("the refusal: {} {body:?}", response.status())).await;
            }
        }
        other => return node.fail(&format!("expected Error::BadResponse, got {other:?}")).await,
    }
    node.stop().await;
}

/// Node's HTTP/2 server without SETTINGS_ENABLE_CONNECT_PROTOCOL: nothing
/// can be opened, and the error says HTTP/2.
#[tokio::test]
async fn silverback_client_refuses_a_node_server_without_extended_connect() {
    let (mut node, port) = Node::server("node http2 server without extended CONNECT", &["--no-connect-protocol"]).await;
    let url = format!("ws://127.0.0.1:{port}/");
    match tokio::time::timeout(STEP, dialer().http2(Http2Mode::Only).connect(&url)).await {
        Ok(Err(Error::Http2(cause))) if cause.to_string().contains("extended CONNECT") => {}
        other => return node.fail(&format!("connect: expected Error::Http2, got {other:?}")).await,
    }
    match tokio::time::timeout(STEP, dialer().connect_http2(&url)).await {
        Ok(Err(Error::Http2(_))) => {}
        other => return node.fail(&format!("connect_http2: expected Error::Http2, got {other:?}")).await,
    }
    if !node.seen("OPEN").await.is_empty() {
        return node.fail("a WebSocket was opened").await;
    }
    node.stop().await;
}

// ---------------------------------------------------------------------------
// Node's client, silverback's server
// ---------------------------------------------------------------------------

/// What the silverback server saw.
#[derive(Debug)]
enum Seen {
    Request { version: Version, method: Method, protocol: Option<String>, path: String },
    Ended { path: String, negotiated: bool, subprotocol: Option<String>, messages: usize, end: Error },
}

struct Server {
    addr: SocketAddr,
    /// TCP connections accepted.
    accepts: Arc<AtomicUsize>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

/// A hyper server (HTTP/1.1 and HTTP/2, extended CONNECT enabled) that
/// upgrades with `upgrader` and echoes; with `tls`, behind rustls offering
/// `h2` by ALPN.
async fn spawn_server(upgrader: Upgrader, tls: Option<Acceptor>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let (tx, seen) = mpsc::unbounded_channel();
    let counted = accepts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let (upgrader, tx, tls) = (upgrader.clone(), tx.clone(), tls.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (upgrader, tx) = (upgrader.clone(), tx.clone());
                    async move {
                        let path = request.uri().path().to_owned();
                        let protocol =
                            request.extensions().get::<hyper::ext::Protocol>().map(|p| p.as_str().to_owned());
                        let _ = tx.send(Seen::Request {
                            version: request.version(),
                            method: request.method().clone(),
                            protocol,
                            path: path.clone(),
                        });
                        Ok::<_, Infallible>(match upgrader.upgrade(request) {
                            Ok((response, upgrading)) => {
                                tokio::spawn(async move {
                                    let mut conn = match upgrading.await {
                                        Ok(conn) => conn,
                                        Err(end) => {
                                            let (negotiated, subprotocol, messages) = (false, None, 0);
                                            let _ =
                                                tx.send(Seen::Ended { path, negotiated, subprotocol, messages, end });
                                            return;
                                        }
                                    };
                                    let negotiated = conn.compression_negotiated();
                                    let subprotocol = conn.subprotocol().map(str::to_owned);
                                    let mut messages = 0;
                                    // Under /greet, a message first, right after the upgrade.
                                    let greeted = if path.starts_with("/greet/") {
                                        conn.write_text(format!("welcome to {path}")).await
                                    } else {
                                        Ok(())
                                    };
                                    let end = loop {
                                        if let Err(end) = &greeted {
                                            break Error::InvalidRequest(format!("greeting: {end}"));
                                        }
                                        let message = match conn.read_message().await {
                                            Ok(message) => message,
                                            Err(end) => break end,
                                        };
                                        messages += 1;
                                        if let Err(end) = conn.write_message(message.kind, &message.data).await {
                                            break end;
                                        }
                                    };
                                    let _ = tx.send(Seen::Ended { path, negotiated, subprotocol, messages, end });
                                });
                                response
                            }
                            Err(refused) => refused.response,
                        })
                    }
                });
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http2().enable_connect_protocol();
                match tls {
                    #[cfg(feature = "tls")]
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else { return };
                        let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
                    }
                    #[cfg(not(feature = "tls"))]
                    Some(never) => match never {},
                    None => {
                        let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    });
    Server { addr, accepts, seen }
}

#[cfg(feature = "tls")]
type Acceptor = tokio_rustls::TlsAcceptor;
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
enum Acceptor {}

/// The cases the script's client reports for each WebSocket.
const CLIENT_CASES: [&str; 22] = [
    "open",
    "text",
    "binary",
    "empty-text",
    "empty-binary",
    "binary-125",
    "binary-126",
    "binary-65535",
    "binary-65536",
    "large-text",
    "large-binary",
    "small-0",
    "small-1",
    "small-2",
    "small-3",
    "small-4",
    "small-5",
    "context-takeover",
    "fragmented",
    "ping",
    "close",
    "end",
];

/// A run of the script's client against a silverback server.
struct NodeClient {
    /// The script's permessage-deflate mode.
    deflate: &'static str,
    /// Checks silverback's `Sec-WebSocket-Extensions` answer.
    answer: fn(&str) -> bool,
    /// TLS (ALPN `h2`) with this acceptor; the certificate's file for Node.
    tls: Option<(Acceptor, PathBuf)>,
    /// The server sends a message first, which the script must read before
    /// its first echo.
    greet: bool,
    /// The script's SETTINGS_INITIAL_WINDOW_SIZE.
    window: Option<u32>,
}

impl NodeClient {
    fn new(deflate: &'static str, answer: fn(&str) -> bool) -> Self {
        NodeClient { deflate, answer, tls: None, greet: false, window: None }
    }
}

async fn node_client(run: NodeClient) {
    const STREAMS: usize = 3;
    let NodeClient { deflate, answer, tls, greet, window } = run;
    let upgrader = Upgrader::new().subprotocols(["chat"]).enable_compression(deflate != "none");
    let (acceptor, ca) = tls.unzip();
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let mut server = spawn_server(upgrader, acceptor).await;
    let base = if greet { "/greet" } else { "/node" };
    let url = format!("{scheme}://{}{base}", server.addr);
    let streams = STREAMS.to_string();
    let mut args = vec![
        "client",
        &url,
        "--streams",
        &streams,
        "--protocols",
        "other,chat",
        "--expect-protocol",
        "chat",
        "--deflate",
        deflate,
    ];
    let ca = ca.map(|path| path.to_string_lossy().into_owned());
    if let Some(ca) = &ca {
        args.extend(["--ca", ca]);
    }
    if greet {
        args.push("--greeted");
    }
    let window = window.map(|w| w.to_string());
    if let Some(window) = &window {
        args.extend(["--window", window]);
    }
    let what = format!("node http2 client -> silverback server ({scheme}), deflate {deflate}");
    let mut node = Node::spawn(what, &args).await;

    let done = node.next("DONE").await;
    let status = node.wait_exit().await;
    if !status.success() {
        return node.fail(&format!("the script failed ({status})")).await;
    }
    let messages = done
        .strip_prefix(&format!("{STREAMS} streams "))
        .and_then(|rest| rest.strip_suffix(" messages"))
        .and_then(|n| n.parse::<usize>().ok());
    let Some(messages) = messages else {
        return node.fail(&format!("cannot read DONE {done:?}")).await;
    };
    let ok = node.seen("OK").await;
    for case in ["settings", "refused-version", "refused-protocol", "refused-plain-connect", "abort"] {
        if !ok.iter().any(|line| line == case) {
            return node.fail(&format!("no OK {case}")).await;
        }
    }
    for i in 0..STREAMS {
        for case in CLIENT_CASES.iter().chain(greet.then_some(&"greeting")) {
            let line = format!("ws{i} {case}");
            if !ok.contains(&line) {
                return node.fail(&format!("no OK {line}")).await;
            }
        }
    }
    for ext in node.seen("EXT").await {
        let (_, answer_seen) = ext.split_once(' ').unwrap_or((&ext, ""));
        if !answer(answer_seen) {
            return node.fail(&format!("silverback answered Sec-WebSocket-Extensions {answer_seen:?}")).await;
        }
    }

    // The server's side: every request over HTTP/2, on one connection.
    let mut requests = Vec::new();
    let mut ended = Vec::new();
    while ended.len() < STREAMS + 1 {
        match within("the server's account", async { server.seen.recv().await.ok_or("the server stopped") }).await {
            Ok(Seen::Request { version, method, protocol, path }) => requests.push((version, method, protocol, path)),
            Ok(Seen::Ended { path, negotiated, subprotocol, messages, end }) => {
                ended.push((path, negotiated, subprotocol, messages, end))
            }
            Err(why) => return node.fail(&why).await,
        }
    }
    while let Ok(Seen::Request { version, method, protocol, path }) = server.seen.try_recv() {
        requests.push((version, method, protocol, path));
    }
    // (:protocol, path) of each: every request an HTTP/2 CONNECT.
    let mut seen: Vec<(Option<&str>, &str)> = requests
        .iter()
        .filter(|(version, method, _, _)| (version, method) == (&Version::HTTP_2, &Method::CONNECT))
        .map(|(_, _, protocol, path)| (protocol.as_deref(), path.as_str()))
        .collect();
    seen.sort_unstable();
    let ws: Vec<String> = (0..STREAMS).map(|i| format!("{base}/ws{i}")).collect();
    let mut expected: Vec<(Option<&str>, &str)> = ws.iter().map(|path| (Some("websocket"), path.as_str())).collect();
    let abort = format!("{base}/abort");
    expected.push((Some("websocket"), &abort));
    expected.push((Some("websocket"), "/wrong-version"));
    expected.push((Some("not-websocket"), "/wrong-protocol"));
    expected.sort_unstable();
    // The plain CONNECT has an authority and no path.
    let plain = seen.iter().position(|(protocol, _)| protocol.is_none());
    if let Some(i) = plain {
        seen.remove(i);
    }
    if plain.is_none() || seen.len() + 1 != requests.len() || seen != expected {
        return node.fail(&format!("the server saw the requests {requests:?}")).await;
    }
    // The aborted one ends (with an error), the others close normally.
    let aborted = ended.iter().position(|(path, ..)| *path == abort);
    let Some(aborted) = aborted.map(|i| ended.remove(i)) else {
        return node.fail(&format!("the aborted WebSocket did not end: {ended:?}")).await;
    };
    match &aborted {
        (_, _, _, 0, Error::Io(_) | Error::Closed(CloseError { code: CloseCode::ABNORMAL_CLOSURE, .. })) => {}
        _ => return node.fail(&format!("the aborted WebSocket ended as {aborted:?}")).await,
    }
    for (path, negotiated, subprotocol, count, end) in &ended {
        let closed_normally =
            matches!(end, Error::Closed(CloseError { code: CloseCode::NORMAL, reason }) if reason == "done");
        if *negotiated != (deflate != "none")
            || subprotocol.as_deref() != Some("chat")
            || *count != messages
            || !closed_normally
        {
            let seen = (negotiated, subprotocol, count, end);
            return node
                .fail(&format!("{path}: the server saw (compression, subprotocol, messages, end) {seen:?}"))
                .await;
        }
    }
    let accepts = server.accepts.load(Ordering::SeqCst);
    if accepts != 1 {
        return node.fail(&format!("{accepts} TCP connections; the script uses one HTTP/2 session")).await;
    }
}

#[tokio::test]
async fn node_client_h2c_to_silverback_server() {
    node_client(NodeClient::new("none", |answer| answer == "none")).await;
}

/// The script lets the server send 1000 bytes on a stream before each
/// WINDOW_UPDATE: every large echo waits on flow control many times.
#[tokio::test]
async fn node_client_h2c_to_silverback_server_with_a_small_flow_control_window() {
    node_client(NodeClient { window: Some(1000), ..NodeClient::new("none", |answer| answer == "none") }).await;
}

#[tokio::test]
async fn node_client_h2c_to_silverback_server_compressed_without_context_takeover() {
    let both = |answer: &str| {
        let params: Vec<&str> = answer.split(';').map(str::trim).collect();
        params.first() == Some(&"permessage-deflate")
            && params.contains(&"server_no_context_takeover")
            && params.contains(&"client_no_context_takeover")
    };
    node_client(NodeClient::new("no-takeover", both)).await;
}

#[tokio::test]
async fn node_client_h2c_to_silverback_server_compressed_with_context_takeover() {
    let takeover = |answer: &str| {
        let params: Vec<&str> = answer.split(';').map(str::trim).collect();
        params.first() == Some(&"permessage-deflate") && !params.iter().any(|p| p.ends_with("no_context_takeover"))
    };
    node_client(NodeClient::new("takeover", takeover)).await;
}

/// The server sends a message right after the upgrade, before the script's
/// first frame.
#[tokio::test]
async fn node_client_reads_a_greeting_from_silverback_server() {
    node_client(NodeClient { greet: true, ..NodeClient::new("takeover", |answer| answer == "permessage-deflate") })
        .await;
}

// ---------------------------------------------------------------------------
// TLS with ALPN h2, both ways
// ---------------------------------------------------------------------------

#[cfg(feature = "tls")]
mod tls {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ClientConfig, RootCertStore, ServerConfig};

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A self-signed certificate for 127.0.0.1 and localhost.
    pub struct Cert {
        pub der: CertificateDer<'static>,
        key: Vec<u8>,
        /// PEM files of the certificate and its key, for Node.
        pub cert_file: PathBuf,
        pub key_file: PathBuf,
    }

    pub fn cert() -> Cert {
        static N: AtomicUsize = AtomicUsize::new(0);
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("rcgen failed");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "http2_node-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_file, certified.cert.pem()).unwrap();
        std::fs::write(&key_file, certified.key_pair.serialize_pem()).unwrap();
        Cert { der: certified.cert.der().clone(), key: certified.key_pair.serialize_der(), cert_file, key_file }
    }

    impl Cert {
        /// A TLS acceptor with this certificate, offering only `h2` by ALPN.
        pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
            let mut config = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![self.der.clone()], key)
                .unwrap();
            config.alpn_protocols = vec![b"h2".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        }

        /// A client configuration trusting this certificate alone.
        pub fn trusted(&self) -> Arc<ClientConfig> {
            let mut roots = RootCertStore::empty();
            roots.add(self.der.clone()).unwrap();
            let config = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        }
    }

    /// The files go with the certificate, even when the test fails.
    impl Drop for Cert {
        fn drop(&mut self) {
            if let Some(dir) = self.cert_file.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// `wss://` to Node's TLS server: `Only` and `Prefer` both pick `h2` by ALPN.
#[cfg(feature = "tls")]
#[tokio::test]
async fn silverback_client_wss_to_node_tls_server() {
    let cert = tls::cert();
    let (cert_file, key_file) = (cert.cert_file.to_string_lossy(), cert.key_file.to_string_lossy());
    let args = ["--tls", &cert_file, &key_file, "--protocols", "chat", "--deflate", "takeover"];
    let (mut node, port) = Node::server("silverback client -> node http2 TLS server", &args).await;
    let roots = silverback::TlsRoots::Config(cert.trusted());
    for (mode, path) in [(Http2Mode::Only, "/tls/only"), (Http2Mode::Prefer, "/tls/prefer")] {
        let d = dialer().tls(roots.clone()).http2(mode).enable_compression(true).subprotocols(["chat"]);
        let (mut conn, _) = node.step("dialing", d.connect(&format!("wss://127.0.0.1:{port}{path}"))).await;
        if !conn.with_stream(|s| s.is_http2() && s.is_tls()) || conn.subprotocol() != Some("chat") {
            return node.fail(&format!("{path}: not HTTP/2 over TLS with subprotocol chat")).await;
        }
        let opened = node.opened(path).await;
        if (opened.scheme.as_str(), opened.authority.as_str()) != ("https", &format!("127.0.0.1:{port}")) {
            return node.fail(&format!("{path}: the script saw {opened:?}")).await;
        }
        let result = echo_all(&mut conn, path).await;
        let sent = node.check(result).await;
        let result = close_normally(&mut conn).await;
        node.check(result).await;
        check_closed(&mut node, path, sent, Sent::Takeover).await;
    }
    node.stop().await;
}

/// Node's client over TLS (ALPN h2) to silverback's server.
#[cfg(feature = "tls")]
#[tokio::test]
async fn node_client_tls_to_silverback_server() {
    let cert = tls::cert();
    let tls = Some((cert.acceptor(), cert.cert_file.clone()));
    node_client(NodeClient { tls, ..NodeClient::new("takeover", |answer| answer.starts_with("permessage-deflate")) })
        .await;
}

#[test]
fn closed_lines_parse() {
    let line =
        "1000 by=client messages=18 compressed=18 frames=13 fragmented=6 pings=6 pongs=6 repeat=9 reason=done, too";
    let closed = parse_closed(line).unwrap();
    assert_eq!((closed.code, closed.messages, closed.frames, closed.pongs, closed.repeat), (1000, 18, 13, 6, 9));
    assert_eq!(closed.reason, "done, too");
    assert_eq!(parse_closed("1000 by=client nonsense reason="), None);
}
