//! The load generator. Runs on a tokio current-thread runtime (one core);
//! every echoed payload is compared byte for byte with what was sent.
//!
//! Results go to stdout as `RESULT key=value` lines, anomalies that did not
//! stop the run as `NOTE ...` lines; a failed run exits non-zero.

mod broadcast;
mod http2;
mod libs;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::{flag_value, has_flag};
use ws::{OP_BINARY, OP_CLOSE, OP_TEXT};

pub const USAGE: &str = "client options:
  --raw               plain TCP, no WebSocket framing (small, large, latency)
  --deflate           offer permessage-deflate and compress every message
  --connections N     small: 100, large: 4, idle: 10000
  --streams N         http2: WebSockets on the one HTTP/2 connection (16)
  --depth D           messages in flight per connection or stream (small, http2: 8)
  --seconds T         measured time (small, large, http2, handshakes: 5)
  --warmup S          unmeasured time before it (small, large, http2: 0.5)
  --size B            payload bytes (small, latency, http2: 32; large: 1048576)
  --count N           latency: round trips measured (20000)
  --workers W         handshakes: concurrent workers (4)
  --server-pid P      the server process: its VmRSS (idle, required) and CPU time (others)
  --no-echo           idle: connections only handshake (default: one echo each, then idle)
  --lib L             client: the client library measured (silverback, tokio-tungstenite, fastwebsockets, yawc)
  broadcast:          --connections subscribers (1000), --depth messages in flight per subscriber (8),
                      --size (32), --seconds, --warmup; --server-pid required (VmRSS, CPU)";

/// Bounds each connection's setup (TCP connect and WebSocket handshake; for
/// http2, the connection and all its WebSockets).
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds the close handshake at the end of a connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
struct Opts {
    addr: SocketAddr,
    raw: bool,
    deflate: bool,
    connections: usize,
    streams: usize,
    depth: usize,
    seconds: f64,
    warmup: f64,
    size: usize,
    count: usize,
    workers: usize,
    server_pid: Option<u32>,
    echo: bool,
}

pub fn main(args: &[String]) -> Result<(), String> {
    let [scenario, addr, ..] = args else { return Err(format!("client needs <scenario> <addr>\n{USAGE}")) };
    let addr: SocketAddr = addr.parse().map_err(|e| format!("bad address {addr:?}: {e}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr}: this load generator only targets loopback addresses"));
    }
    let scenario = scenario.as_str();
    let opts = Opts {
        addr,
        raw: has_flag(args, "--raw"),
        deflate: has_flag(args, "--deflate"),
        connections: flag_value(args, "--connections")?.unwrap_or(match scenario {
            "large" => 4,
            "idle" => 10_000,
            "broadcast" => 1000,
            _ => 100,
        }),
        streams: flag_value(args, "--streams")?.unwrap_or(16),
        depth: flag_value(args, "--depth")?.unwrap_or(8),
        seconds: flag_value(args, "--seconds")?.unwrap_or(5.0),
        warmup: flag_value(args, "--warmup")?.unwrap_or(0.5),
        size: flag_value(args, "--size")?.unwrap_or(if scenario == "large" { 1 << 20 } else { 32 }),
        count: flag_value(args, "--count")?.unwrap_or(20_000),
        workers: flag_value(args, "--workers")?.unwrap_or(4),
        server_pid: flag_value(args, "--server-pid")?,
        echo: !has_flag(args, "--no-echo"),
    };
    if opts.raw && opts.deflate {
        return Err("--raw and --deflate exclude each other".into());
    }
    if opts.raw && matches!(scenario, "idle" | "handshakes" | "http2") {
        return Err(format!("{scenario} has no raw TCP variant"));
    }
    if !(opts.seconds > 0.0 && opts.seconds <= 600.0 && opts.warmup >= 0.0 && opts.warmup <= 60.0) {
        return Err("--seconds must be in (0, 600], --warmup in [0, 60]".into());
    }
    if opts.size < 8 || opts.size > 64 << 20 || opts.depth == 0 || opts.connections == 0 || opts.workers == 0 {
        return Err("--size must be in [8, 64 MiB]; --depth, --connections, --workers at least 1".into());
    }
    if opts.streams == 0 || opts.streams > 1000 {
        return Err("--streams must be in [1, 1000]".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    // Every scenario is bounded in time by its own parameters; this bounds the
    // whole run in case a server stops answering.
    let limit = Duration::from_secs_f64(opts.seconds + opts.warmup + 120.0);
    runtime.block_on(async {
        let run = async {
            match scenario {
                "small" => small(&opts).await,
                "large" => large(&opts).await,
                "latency" => latency(&opts).await,
                "idle" => idle(&opts).await,
                "handshakes" => handshakes(&opts).await,
                "http2" => http2::run(&opts).await,
                "client" => libs::run(&opts, args).await,
                "broadcast" => broadcast::run(&opts).await,
                other => Err(format!("unknown scenario {other:?}")),
            }
        };
        tokio::time::timeout(limit, run).await.map_err(|_| format!("{scenario}: did not finish within {limit:?}"))?
    })
}

// ------------------------------------------------------------------ payloads

/// Writes `value` in decimal, zero-padded to `out.len()` digits (low digits kept).
fn write_digits(out: &mut [u8], mut value: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// The text payload of message `seq` on connection `conn`: ASCII, distinct per
/// message, e.g. `c000042 m000000000123 .........`.
fn text_payload(out: &mut [u8], conn: u64, seq: u64) {
    let mut head = [0u8; 22];
    head[0] = b'c';
    write_digits(&mut head[1..7], conn);
    head[7] = b' ';
    head[8] = b'm';
    write_digits(&mut head[9..21], seq);
    head[21] = b' ';
    let n = head.len().min(out.len());
    out[..n].copy_from_slice(&head[..n]);
    out[n..].fill(b'.');
}

/// The binary payload of the large scenario: pseudo-random bytes, the first 8
/// replaced by a per-message sequence number.
fn binary_base(size: usize) -> Vec<u8> {
    let mut state = 0x5EED_u64;
    let mut v = Vec::with_capacity(size + 8);
    while v.len() < size {
        v.extend_from_slice(&ws::splitmix64(&mut state).to_le_bytes());
    }
    v.truncate(size);
    v
}

// ---------------------------------------------------------------- connections

/// One client connection, WebSocket or raw TCP.
struct Conn {
    stream: TcpStream,
    proto: Proto,
}

// One per connection and never moved in a hot path: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Proto {
    Raw { buf: BytesMut, pending: usize },
    Ws { reader: ws::Reader, encoder: ws::Encoder },
}

impl Conn {
    async fn open(opts: &Opts, id: u64) -> Result<Conn, String> {
        let setup = async {
            let mut stream = TcpStream::connect(opts.addr).await.map_err(|e| format!("connect: {e}"))?;
            stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
            let mut buf = BytesMut::with_capacity(16 * 1024);
            let proto = if opts.raw {
                Proto::Raw { buf, pending: 0 }
            } else {
                let host = opts.addr.to_string();
                let seed = id.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ std::process::id() as u64;
                let deflate = ws::handshake(&mut stream, &host, seed, opts.deflate, &mut buf).await?;
                // A fixed masking key per connection.
                let mut state = seed ^ 0xA5A5;
                let key = (ws::splitmix64(&mut state) as u32).to_le_bytes();
                Proto::Ws { reader: ws::Reader::new(buf, key, deflate), encoder: ws::Encoder::new(key, deflate) }
            };
            Ok(Conn { stream, proto })
        };
        tokio::time::timeout(SETUP_TIMEOUT, setup).await.map_err(|_| "connection setup timed out".to_string())?
    }

    async fn write_all(&mut self, buf: &[u8]) -> Result<(), String> {
        self.stream.write_all(buf).await.map_err(|e| format!("write: {e}"))
    }

    async fn fill(&mut self) -> Result<(), String> {
        self.proto.fill(&mut self.stream).await
    }

    /// Closes as a client should: a close frame, the server's close frame,
    /// then the server's end of stream. Returns a note when the server did not
    /// complete that within CLOSE_TIMEOUT.
    async fn close(mut self) -> Option<String> {
        let Proto::Ws { reader, encoder } = &mut self.proto else {
            let _ = self.stream.shutdown().await;
            return None;
        };
        let mut frame = Vec::new();
        // An empty close payload would be allowed too; 1000 is the common case.
        let _ = encoder.encode(OP_CLOSE, &1000u16.to_be_bytes(), &mut frame);
        let exchange = async {
            self.stream.write_all(&frame).await.map_err(|e| format!("writing close: {e}"))?;
            let mut got_close = false;
            loop {
                loop {
                    match reader.next()? {
                        Some(m) if m.opcode == OP_CLOSE => got_close = true,
                        Some(_) => {}
                        None => break,
                    }
                }
                let mut byte = [0u8; 1];
                let filled = if got_close {
                    // After the close frame only the end of stream may come.
                    match self.stream.read(&mut byte).await {
                        Ok(0) => return Ok(()),
                        Ok(_) => return Err("data after the server's close frame".to_string()),
                        Err(e) => Err(format!("read: {e}")),
                    }
                } else {
                    reader.fill(&mut self.stream).await
                };
                if let Err(e) = filled {
                    return Err(if got_close {
                        format!("error instead of end of stream after close: {e}")
                    } else {
                        format!("no close frame from the server: {e}")
                    });
                }
            }
        };
        match tokio::time::timeout(CLOSE_TIMEOUT, exchange).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("close handshake not completed within {CLOSE_TIMEOUT:?}")),
        }
    }
}

impl Proto {
    /// Appends one message (a frame, or the bare payload for raw TCP).
    fn encode(&mut self, opcode: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        match self {
            Proto::Raw { .. } => {
                out.extend_from_slice(payload);
                Ok(())
            }
            Proto::Ws { encoder, reader } => {
                out.append(&mut reader.control_out);
                encoder.encode(opcode, payload, out)
            }
        }
    }

    async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<(), String> {
        match self {
            Proto::Raw { buf, pending } => {
                buf.advance(std::mem::take(pending));
                if buf.capacity() - buf.len() < 8192 {
                    buf.reserve(64 * 1024);
                }
                match r.read_buf(buf).await {
                    Ok(0) => Err("connection closed by the server".into()),
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("read: {e}")),
                }
            }
            Proto::Ws { reader, .. } => reader.fill(r).await,
        }
    }

    /// The next echoed message, if whole in the buffer: for raw TCP the next
    /// `len` bytes; for WebSocket the next data message, which must have
    /// `opcode`. A close from the server is an error here.
    fn next(&mut self, opcode: u8, len: usize) -> Result<Option<&[u8]>, String> {
        match self {
            Proto::Raw { buf, pending } => {
                buf.advance(std::mem::take(pending));
                if buf.len() < len {
                    buf.reserve(len - buf.len());
                    return Ok(None);
                }
                *pending = len;
                Ok(Some(&buf[..len]))
            }
            Proto::Ws { reader, .. } => match reader.next()? {
                None => Ok(None),
                Some(m) if m.opcode == OP_CLOSE => Err(format!("server sent a close frame: {:?}", close_text(m.data))),
                Some(m) if m.opcode != opcode => Err(format!("echo has opcode {} instead of {opcode}", m.opcode)),
                Some(m) => Ok(Some(m.data)),
            },
        }
    }
}

fn close_text(data: &[u8]) -> String {
    match data {
        [a, b, reason @ ..] => format!("{} {}", u16::from_be_bytes([*a, *b]), String::from_utf8_lossy(reason)),
        _ => "no status".into(),
    }
}

/// Opens `n` connections, at most `parallel` handshakes at a time.
async fn open_many(opts: &Opts, n: usize, parallel: usize) -> Result<Vec<Conn>, String> {
    let gate = Arc::new(Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(n);
    for id in 0..n {
        let gate = gate.clone();
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            Conn::open(&opts, id as u64).await
        }));
    }
    let mut conns = Vec::with_capacity(n);
    let mut first_error = None;
    for task in tasks {
        match task.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(c) => conns.push(c),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => Ok(conns),
        Some(e) => Err(format!("{} of {n} connections failed; first error: {e}", n - conns.len())),
    }
}

/// Closes every connection; reports how many did not close cleanly.
async fn close_all(conns: Vec<Conn>) {
    let total = conns.len();
    let gate = Arc::new(Semaphore::new(500));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire().await;
                c.close().await
            })
        })
        .collect();
    let mut unclean = 0;
    let mut first = None;
    for t in tasks {
        if let Ok(Some(note)) = t.await {
            unclean += 1;
            first.get_or_insert(note);
        }
    }
    if let Some(first) = first {
        println!("NOTE close: {unclean} of {total} connections did not close cleanly; first: {first}");
    }
}

fn mode(opts: &Opts) -> &'static str {
    match (opts.raw, opts.deflate) {
        (true, _) => "raw TCP",
        (false, true) => "WebSocket + permessage-deflate",
        (false, false) => "WebSocket",
    }
}

// ---------------------------------------------------------------- scenarios

/// Many connections, several small text messages in flight on each.
async fn small(opts: &Opts) -> Result<(), String> {
    let conns = open_many(opts, opts.connections, 100).await?;
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(opts.warmup);
    let deadline = measure_from + Duration::from_secs_f64(opts.seconds);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(id, conn)| {
            let (depth, size) = (opts.depth, opts.size);
            tokio::spawn(small_conn(conn, id as u64, depth, size, measure_from, deadline))
        })
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = CpuSample::now(opts.server_pid);
    tokio::time::sleep_until(deadline.into()).await;
    let cpu_after = CpuSample::now(opts.server_pid);
    let (mut counted, mut total) = (0u64, 0u64);
    let mut first_error = None;
    let mut closing = Vec::new();
    for t in tasks {
        match t.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((c, n, conn)) => {
                counted += c;
                total += n;
                closing.push(conn);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    close_all(closing).await;
    if let Some(e) = first_error {
        return Err(format!("small: {e}"));
    }
    let rate = counted as f64 / opts.seconds;
    println!(
        "small ({}): {} connections x {} in flight, {} B text: {rate:.0} msg/s ({counted} in {:.1} s; {total} echoes verified)",
        mode(opts),
        opts.connections,
        opts.depth,
        opts.size,
        opts.seconds
    );
    println!("RESULT msgs_per_s={rate:.0}");
    report_cpu("cpu_us_per_msg", "message", &cpu_before, &cpu_after, counted as f64);
    Ok(())
}

/// Returns (messages received in the measured window, all messages received, the connection).
async fn small_conn(
    mut conn: Conn,
    id: u64,
    depth: usize,
    size: usize,
    measure_from: Instant,
    deadline: Instant,
) -> Result<(u64, u64, Conn), String> {
    let mut out = Vec::with_capacity(depth * (size + 16));
    let mut payload = vec![0u8; size];
    let mut expected = vec![0u8; size];
    let (mut sent, mut received, mut counted) = (0u64, 0u64, 0u64);
    for _ in 0..depth {
        text_payload(&mut payload, id, sent);
        conn.proto.encode(OP_TEXT, &payload, &mut out)?;
        sent += 1;
    }
    conn.write_all(&out).await?;
    loop {
        out.clear();
        conn.fill().await?;
        let now = Instant::now();
        let mut got = 0u64;
        while let Some(data) = conn.proto.next(OP_TEXT, size)? {
            text_payload(&mut expected, id, received);
            if data != &expected[..] {
                return Err(format!(
                    "connection {id}: echo {received} differs: got {:?}, sent {:?}",
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
        if now < deadline {
            for _ in 0..got {
                text_payload(&mut payload, id, sent);
                conn.proto.encode(OP_TEXT, &payload, &mut out)?;
                sent += 1;
            }
        } else if received == sent {
            return Ok((counted, received, conn));
        }
        if let Proto::Ws { reader, .. } = &mut conn.proto {
            out.append(&mut reader.control_out);
        }
        if !out.is_empty() {
            conn.write_all(&out).await?;
        }
    }
}

/// A few connections echoing large binary messages, one in flight each.
async fn large(opts: &Opts) -> Result<(), String> {
    let conns = open_many(opts, opts.connections, 16).await?;
    let base = Arc::new(binary_base(opts.size));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(opts.warmup);
    let deadline = measure_from + Duration::from_secs_f64(opts.seconds);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(id, conn)| tokio::spawn(large_conn(conn, id as u64, base.clone(), measure_from, deadline)))
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = CpuSample::now(opts.server_pid);
    tokio::time::sleep_until(deadline.into()).await;
    let cpu_after = CpuSample::now(opts.server_pid);
    let (mut bytes, mut messages) = (0u64, 0u64);
    let mut first_error = None;
    let mut closing = Vec::new();
    for t in tasks {
        match t.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((b, m, conn)) => {
                bytes += b;
                messages += m;
                closing.push(conn);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    close_all(closing).await;
    if let Some(e) = first_error {
        return Err(format!("large: {e}"));
    }
    let gib = bytes as f64 / opts.seconds / (1u64 << 30) as f64;
    println!(
        "large ({}): {} connections x {} B binary, one in flight: {gib:.3} GiB/s echoed ({messages} messages verified)",
        mode(opts),
        opts.connections,
        opts.size
    );
    println!("RESULT gib_per_s={gib:.3}");
    report_cpu("cpu_us_per_msg", "message", &cpu_before, &cpu_after, bytes as f64 / opts.size as f64);
    Ok(())
}

/// Returns (payload bytes echoed in the measured window, messages verified, the connection).
async fn large_conn(
    mut conn: Conn,
    id: u64,
    base: Arc<Vec<u8>>,
    measure_from: Instant,
    deadline: Instant,
) -> Result<(u64, u64, Conn), String> {
    let size = base.len();
    // The frame is built once and only its sequence number is rewritten per
    // message (masked in place), unless it is compressed, then it is rebuilt.
    let mut frame = Vec::with_capacity(size + 16);
    conn.proto.encode(OP_BINARY, &base, &mut frame)?;
    let compressing = matches!(&conn.proto, Proto::Ws { encoder, .. } if encoder.compressing());
    let (offset, key) = match &conn.proto {
        Proto::Raw { .. } => (0, [0u8; 4]),
        Proto::Ws { encoder, .. } => (ws::client_header_len(size), encoder.key),
    };
    let mut payload = if compressing { (*base).clone() } else { Vec::new() };
    let (mut bytes, mut messages) = (0u64, 0u64);
    let mut seq = id << 40;
    while Instant::now() < deadline {
        let seq_bytes = seq.to_le_bytes();
        if compressing {
            payload[..8].copy_from_slice(&seq_bytes);
            frame.clear();
            conn.proto.encode(OP_BINARY, &payload, &mut frame)?;
        } else {
            for (i, b) in seq_bytes.iter().enumerate() {
                frame[offset + i] = b ^ key[i % 4];
            }
        }
        // Write and read at once: a server may echo before it has read all.
        let Conn { stream, proto } = &mut conn;
        if let Proto::Ws { reader, .. } = proto {
            if !reader.control_out.is_empty() {
                stream.write_all(&std::mem::take(&mut reader.control_out)).await.map_err(|e| e.to_string())?;
            }
        }
        let (mut rd, mut wr) = stream.split();
        let write = async { wr.write_all(&frame).await.map_err(|e| format!("write: {e}")) };
        let read = async {
            loop {
                if let Some(data) = proto.next(OP_BINARY, size)? {
                    if data.len() != size || data[..8] != seq_bytes || data[8..] != base[8..] {
                        return Err(format!("connection {id}: echo of message {seq:#x} differs from what was sent"));
                    }
                    return Ok(());
                }
                proto.fill(&mut rd).await?;
            }
        };
        let (w, r) = tokio::join!(write, read);
        w?;
        r?;
        let now = Instant::now();
        if now >= measure_from && now < deadline {
            bytes += size as u64;
        }
        messages += 1;
        seq += 1;
    }
    Ok((bytes, messages, conn))
}

/// One connection, one small message at a time.
async fn latency(opts: &Opts) -> Result<(), String> {
    let mut conn = Conn::open(opts, 0).await?;
    let warmup = (opts.count / 20).max(100);
    let mut samples = Vec::with_capacity(opts.count);
    let mut payload = vec![0u8; opts.size];
    let mut out = Vec::with_capacity(opts.size + 16);
    let mut cpu_before = CpuSample::now(opts.server_pid);
    for seq in 0..(warmup + opts.count) as u64 {
        text_payload(&mut payload, 0, seq);
        out.clear();
        conn.proto.encode(OP_TEXT, &payload, &mut out)?;
        let t0 = Instant::now();
        conn.write_all(&out).await?;
        loop {
            if let Some(data) = conn.proto.next(OP_TEXT, opts.size)? {
                if data != &payload[..] {
                    return Err(format!("latency: echo {seq} differs from what was sent"));
                }
                break;
            }
            conn.fill().await?;
        }
        if seq >= warmup as u64 {
            samples.push(t0.elapsed());
        }
        if seq + 1 == warmup as u64 {
            cpu_before = CpuSample::now(opts.server_pid);
        }
    }
    let cpu_after = CpuSample::now(opts.server_pid);
    if let Some(note) = conn.close().await {
        println!("NOTE close: {note}");
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64 * 1e6;
    println!(
        "latency ({}): {} round trips of {} B: p50 {:.1} us, p99 {:.1} us, mean {mean:.1} us, max {:.1} us",
        mode(opts),
        samples.len(),
        opts.size,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!("RESULT p50_us={:.1}", pct(0.5));
    println!("RESULT p99_us={:.1}", pct(0.99));
    report_cpu("cpu_us_per_rt", "round trip", &cpu_before, &cpu_after, samples.len() as f64);
    Ok(())
}

fn vm_rss_kib(pid: u32) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// CPU time so far of a process (user + system, all threads, exited ones
/// included), from /proc/<pid>/stat, in seconds. USER_HZ is 100 on Linux's
/// common architectures, so the resolution is 10 ms.
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses: state is field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// CPU times of the server (when its pid is known) and of this client.
struct CpuSample {
    at: Instant,
    server: Option<f64>,
    client: Option<f64>,
}

impl CpuSample {
    fn now(server_pid: Option<u32>) -> Self {
        CpuSample {
            at: Instant::now(),
            server: server_pid.and_then(|p| cpu_secs(&p.to_string())),
            client: cpu_secs("self"),
        }
    }
}

/// Prints the server's CPU time per operation over a measured window, and how
/// busy each side was (a client near 100% means the figure is client-bound).
fn report_cpu(key: &str, what: &str, before: &CpuSample, after: &CpuSample, ops: f64) {
    let window = (after.at - before.at).as_secs_f64();
    if let (Some(b), Some(a)) = (before.client, after.client) {
        let pct = (a - b) / window * 100.0;
        println!("client CPU: {pct:.0}% of one core over {window:.1} s");
        println!("RESULT client_cpu_pct={pct:.0}");
    }
    if let (Some(b), Some(a)) = (before.server, after.server) {
        let pct = (a - b) / window * 100.0;
        println!("server CPU: {pct:.0}% of one core over {window:.1} s");
        println!("RESULT server_cpu_pct={pct:.0}");
        if ops > 0.0 {
            let per = (a - b) * 1e6 / ops;
            println!("server CPU per {what}: {per:.2} us");
            println!("RESULT {key}={per:.2}");
        }
    }
}

/// Many open, idle connections: the server's resident memory per connection.
async fn idle(opts: &Opts) -> Result<(), String> {
    let pid = opts.server_pid.ok_or("idle needs --server-pid")?;
    let before = vm_rss_kib(pid)?;
    let mut conns = open_many(opts, opts.connections, 100).await?;
    if opts.echo {
        // One small echo per connection, so that buffers a server allocates on
        // first use are counted; then every connection stays idle.
        let mut payload = [0u8; 32];
        let mut out = Vec::new();
        for (id, conn) in conns.iter_mut().enumerate() {
            text_payload(&mut payload, id as u64, 0);
            out.clear();
            conn.proto.encode(OP_TEXT, &payload, &mut out)?;
            conn.write_all(&out).await?;
        }
        for (id, conn) in conns.iter_mut().enumerate() {
            text_payload(&mut payload, id as u64, 0);
            let wait = async {
                loop {
                    if let Some(data) = conn.proto.next(OP_TEXT, 32)? {
                        return if data == &payload[..] { Ok(()) } else { Err(format!("idle: echo on {id} differs")) };
                    }
                    conn.fill().await?;
                }
            };
            tokio::time::timeout(SETUP_TIMEOUT, wait).await.map_err(|_| format!("idle: no echo on {id}"))??;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = vm_rss_kib(pid)?;
    let n = conns.len();
    close_all(conns).await;
    let per = (after as f64 - before as f64) / n as f64;
    println!(
        "idle: {n} connections{}: server VmRSS {before} KiB -> {after} KiB, {per:.2} KiB per connection",
        if opts.echo { " (one 32 B echo each, then idle)" } else { " (handshake only)" }
    );
    println!("RESULT kib_per_conn={per:.2}");
    Ok(())
}

/// Connections that do the opening handshake and close, from several workers.
async fn handshakes(opts: &Opts) -> Result<(), String> {
    let cpu_before = CpuSample::now(opts.server_pid);
    let deadline = Instant::now() + Duration::from_secs_f64(opts.seconds);
    let tasks: Vec<_> = (0..opts.workers)
        .map(|w| {
            let opts = opts.clone();
            tokio::spawn(async move {
                let (mut done, mut errors, mut unclean) = (0u64, 0u64, 0u64);
                let mut first_error = None;
                let mut first_unclean = None;
                let mut id = (w as u64) << 32;
                while Instant::now() < deadline {
                    id += 1;
                    match Conn::open(&opts, id).await {
                        Ok(conn) => {
                            if let Some(note) = conn.close().await {
                                unclean += 1;
                                first_unclean.get_or_insert(note);
                            }
                            done += 1;
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                            // Do not spin on a refused connection.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                (done, errors, unclean, first_error, first_unclean)
            })
        })
        .collect();
    let start = deadline - Duration::from_secs_f64(opts.seconds);
    let (mut done, mut errors, mut unclean) = (0u64, 0u64, 0u64);
    let (mut first_error, mut first_unclean) = (None, None);
    for t in tasks {
        let (d, e, u, fe, fu) = t.await.map_err(|e| e.to_string())?;
        done += d;
        errors += e;
        unclean += u;
        if let Some(fe) = fe {
            first_error.get_or_insert(fe);
        }
        if let Some(fu) = fu {
            first_unclean.get_or_insert(fu);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_after = CpuSample::now(opts.server_pid);
    let rate = done as f64 / elapsed;
    println!(
        "handshakes: {} workers, connect + upgrade + close handshake: {rate:.0} per second ({done} in {elapsed:.1} s)",
        opts.workers
    );
    if let Some(fu) = first_unclean {
        println!("NOTE close: {unclean} of {done} connections did not close cleanly; first: {fu}");
    }
    if let Some(fe) = first_error {
        println!("NOTE handshakes: {errors} connections failed; first: {fe}");
        if errors * 100 > done {
            return Err(format!("handshakes: {errors} failures against {done} successes; first: {fe}"));
        }
    }
    println!("RESULT handshakes_per_s={rate:.0}");
    report_cpu("cpu_us_per_handshake", "handshake", &cpu_before, &cpu_after, done as f64);
    Ok(())
}
