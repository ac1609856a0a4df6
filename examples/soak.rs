//! Soak benchmark: connection churn in one process, watched for growth.
//!
//! A silverback echo server listens on 127.0.0.1 (an ephemeral port); a
//! driver keeps a number of client connections churning against it for a
//! while. Each connection is dialed, exchanges a few messages (some of them
//! compressed with `--deflate`), idles for a random while, and ends in one of
//! three ways: a clean close handshake, an abrupt drop of the connection, or
//! `Handle::close_now`. It is then replaced at once.
//!
//! Every second one line is printed: elapsed time, open client connections,
//! connections so far, the process's resident memory (VmRSS) and its open
//! file descriptors. At the end, the averages of the first and last tenth of
//! the samples taken after a warm-up (the ramp to full load and the
//! allocator's first growth; 5 s by default, `--warmup 0` compares the whole
//! run) are compared: memory and descriptors should be flat (within 10%).
//! The driver keeps churning half a second past the last sample, so that the
//! last sample sees full load.
//!
//! Every connection uses two descriptors of this process (client and server
//! side). The number of connections is capped by the soft descriptor limit;
//! raise it first for thousands of connections:
//!
//! ```text
//! ulimit -n 65536
//! cargo run --release --example soak -- --duration 60 --connections 1000 [--deflate]
//! ```
//!
//! Options: `--duration SECONDS` (default 30), `--connections N` (default
//! 2000), `--idle-ms MS` (longest idle time, default 1000), `--warmup
//! SECONDS` (default 5, at most half the run), `--deflate`.
//!
//! Only 127.0.0.1 is used. Every loop is bounded: the run by its duration,
//! each connection's life by a time limit, each server connection by an idle
//! timeout and a message count, the final drain by a time limit.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use silverback::{CloseCode, CloseFrame, Dialer, MessageType, Proxy, Upgrader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// Bounds on everything that could otherwise run on.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The most one connection's whole life may take, idle time included.
const LIFE_LIMIT: Duration = Duration::from_secs(30);
/// A server connection that hears nothing for this long is dropped.
const SERVER_IDLE: Duration = Duration::from_secs(15);
/// The most messages a server connection echoes.
const SERVER_MAX_MESSAGES: usize = 1000;
/// The most connections one driver slot opens (far above what time allows).
const SLOT_MAX_ROUNDS: u64 = 10_000_000;
/// How long the end of the run may take to drain.
const DRAIN_LIMIT: Duration = Duration::from_secs(40);
/// Descriptors kept aside for the runtime, stdio and the listener.
const RESERVED_FDS: usize = 128;
/// The listener's accept queue: the first burst of dials arrives at once
/// (`TcpListener::bind` uses 128, and overflowing it delays dials by a
/// second-long SYN retry).
const BACKLOG: u32 = 4096;
/// How long the driver goes on after the last sample.
const TAIL: Duration = Duration::from_millis(500);

struct Args {
    duration: u64,
    connections: usize,
    idle_ms: u64,
    warmup: u64,
    deflate: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { duration: 30, connections: 2000, idle_ms: 1000, warmup: 5, deflate: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("{name}: not a number: {v}"))
        };
        match arg.as_str() {
            "--duration" | "-d" => args.duration = value("--duration")?.max(1),
            "--connections" | "-c" => args.connections = value("--connections")?.max(1) as usize,
            "--idle-ms" => args.idle_ms = value("--idle-ms")?,
            "--warmup" => args.warmup = value("--warmup")?,
            "--deflate" => args.deflate = true,
            "--help" | "-h" => {
                return Err(
                    "usage: soak [--duration SECONDS] [--connections N] [--idle-ms MS] [--warmup SECONDS] [--deflate]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    Ok(args)
}

/// The soft limit on open descriptors, from /proc/self/limits.
fn soft_fd_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// Resident memory in KiB, from /proc/self/status.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// xorshift64*: enough randomness for a load mix, and `Send`.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        if n == 0 {
            0
        } else {
            x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        }
    }
}

#[derive(Default)]
struct Stats {
    /// Client connections dialed and not yet ended.
    open: AtomicUsize,
    /// Client connections dialed so far.
    total: AtomicU64,
    server_open: AtomicUsize,
    messages: AtomicU64,
    dial_errors: AtomicU64,
    exchange_errors: AtomicU64,
    mismatches: AtomicU64,
    stuck: AtomicU64,
    clean: AtomicU64,
    dropped: AtomicU64,
    close_now: AtomicU64,
}

/// Counts a client connection as open for as long as it lives, however it ends.
struct Open<'a>(&'a Stats);

impl<'a> Open<'a> {
    fn new(stats: &'a Stats) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        stats.total.fetch_add(1, Ordering::Relaxed);
        Open(stats)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(listener: TcpListener, upgrader: Upgrader, stats: Arc<Stats>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(echo(upgrader.clone(), stream, stats.clone()));
            }
            Err(e) => {
                // Out of descriptors, most likely: back off a little.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn echo(upgrader: Upgrader, stream: TcpStream, stats: Arc<Stats>) {
    let Ok(mut conn) = upgrader.accept(stream).await else { return };
    stats.server_open.fetch_add(1, Ordering::Relaxed);
    for _ in 0..SERVER_MAX_MESSAGES {
        conn.set_read_deadline(Some(Instant::now() + SERVER_IDLE));
        let Ok(msg) = conn.read_message().await else { break };
        if conn.write_message(msg.kind, &msg.data).await.is_err() {
            break;
        }
    }
    drop(conn);
    stats.server_open.fetch_sub(1, Ordering::Relaxed);
}

fn payload(rng: &mut Rng, len: usize, text: bool) -> Vec<u8> {
    if text {
        let word = ["soak ", "churn ", "echo ", "deflate ", "silverback "][rng.below(5) as usize];
        word.repeat(len / word.len() + 1).into_bytes()[..len].to_vec()
    } else {
        let seed = rng.below(256) as u8;
        (0..len).map(|i| seed.wrapping_add((i % 61) as u8)).collect()
    }
}

/// One connection's life: dial, exchange, idle, end.
async fn life(dialer: &Dialer, url: &str, rng: &mut Rng, end: Instant, idle_ms: u64, deflate: bool, stats: &Stats) {
    let mut conn = match dialer.connect(url).await {
        Ok((conn, _)) => conn,
        Err(e) => {
            if stats.dial_errors.fetch_add(1, Ordering::Relaxed) < 5 {
                eprintln!("dial: {e}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            return;
        }
    };
    let _open = Open::new(stats);
    for _ in 0..1 + rng.below(4) {
        let text = rng.below(2) == 0;
        let len = 16 + rng.below(4000) as usize;
        let data = payload(rng, len, text);
        if deflate {
            conn.enable_write_compression(rng.below(2) == 0);
        }
        let kind = if text { MessageType::Text } else { MessageType::Binary };
        if conn.write_message(kind, &data).await.is_err() {
            stats.exchange_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match conn.read_message().await {
            Ok(msg) if msg.data == data && (msg.kind == MessageType::Text) == text => {
                stats.messages.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {
                stats.mismatches.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                stats.exchange_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    let idle = Duration::from_millis(rng.below(idle_ms + 1));
    tokio::time::sleep_until((Instant::now() + idle).min(end).into()).await;
    match rng.below(3) {
        0 => {
            let _ = conn.close(CloseFrame::new(CloseCode::NORMAL, "")).await;
            stats.clean.fetch_add(1, Ordering::Relaxed);
        }
        1 => {
            drop(conn);
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            conn.handle().close_now().await;
            drop(conn);
            stats.close_now.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn slot(id: u64, dialer: Dialer, url: Arc<str>, end: Instant, idle_ms: u64, deflate: bool, stats: Arc<Stats>) {
    let mut rng = Rng::new(id + 1);
    let mut rounds = 0;
    while Instant::now() < end && rounds < SLOT_MAX_ROUNDS {
        rounds += 1;
        let one = life(&dialer, &url, &mut rng, end, idle_ms, deflate, &stats);
        if tokio::time::timeout(LIFE_LIMIT, one).await.is_err() {
            stats.stuck.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Sample {
    rss_kib: u64,
    fds: usize,
}

fn average(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    samples.iter().map(f).sum::<f64>() / samples.len().max(1) as f64
}

fn compare(name: &str, unit: &str, first: f64, last: f64) -> bool {
    let change = if first > 0.0 { (last - first) / first * 100.0 } else { 0.0 };
    let flat = change.abs() <= 10.0;
    println!(
        "{name:>4}: first 10% avg {first:.1}{unit}, last 10% avg {last:.1}{unit} ({change:+.1}%): {}",
        if flat { "flat" } else { "NOT flat" }
    );
    flat
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(soft) = soft_fd_limit() {
        // Two descriptors per connection, and room for the ones closing
        // while their replacements open.
        let cap = soft.saturating_sub(RESERVED_FDS) * 2 / 5;
        if args.connections > cap {
            eprintln!(
                "the soft descriptor limit is {soft}: capping at {cap} connections (raise it with `ulimit -n 65536`)"
            );
            args.connections = cap.max(1);
        }
    }

    args.warmup = args.warmup.min(args.duration / 2);
    let stats = Arc::new(Stats::default());
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind("127.0.0.1:0".parse().expect("address")).expect("bind 127.0.0.1:0");
    let listener = socket.listen(BACKLOG).expect("listen");
    let addr = listener.local_addr().expect("local address");
    let upgrader = Upgrader::new()
        .enable_compression(args.deflate)
        .handshake_timeout(Some(HANDSHAKE_TIMEOUT))
        .close_timeout(CLOSE_TIMEOUT);
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(serve(listener, upgrader, stats.clone(), stop_rx));

    let dialer = Dialer::new()
        .proxy(Proxy::None)
        .enable_compression(args.deflate)
        .handshake_timeout(Some(HANDSHAKE_TIMEOUT))
        .close_timeout(CLOSE_TIMEOUT);
    let url: Arc<str> = format!("ws://{addr}/soak").into();
    println!(
        "soak: {} s, {} connections, idle up to {} ms, deflate {}, server {addr}; at start rss {} KiB, fds {}",
        args.duration,
        args.connections,
        args.idle_ms,
        if args.deflate { "on" } else { "off" },
        rss_kib(),
        open_fds()
    );

    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration) + TAIL;
    let mut slots = tokio::task::JoinSet::new();
    for id in 0..args.connections as u64 {
        slots.spawn(slot(id, dialer.clone(), url.clone(), end, args.idle_ms, args.deflate, stats.clone()));
    }

    let mut samples = Vec::with_capacity(args.duration as usize);
    let mut tick = tokio::time::interval_at((start + Duration::from_secs(1)).into(), Duration::from_secs(1));
    for _ in 0..args.duration {
        tick.tick().await;
        let sample = Sample { rss_kib: rss_kib(), fds: open_fds() };
        println!(
            "t={:>4}s open={:>6} total={:>9} rss={:>8} KiB fds={:>6}",
            start.elapsed().as_secs(),
            stats.open.load(Ordering::Relaxed),
            stats.total.load(Ordering::Relaxed),
            sample.rss_kib,
            sample.fds
        );
        samples.push(sample);
    }

    // The slots stop dialing at `end`; each life is bounded by LIFE_LIMIT.
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        while slots.join_next().await.is_some() {}
        while stats.server_open.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok();
    let _ = stop_tx.send(true);
    let _ = server.await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let s = &*stats;
    let total = s.total.load(Ordering::Relaxed);
    println!(
        "summary: {} s, {} connection slots, {} connections ({:.0}/s), {} messages echoed",
        args.duration,
        args.connections,
        total,
        total as f64 / args.duration as f64,
        s.messages.load(Ordering::Relaxed)
    );
    println!(
        "   ends: clean close {}, dropped {}, close_now {}; errors: dial {}, exchange {}, mismatched echo {}, stuck {}",
        s.clean.load(Ordering::Relaxed),
        s.dropped.load(Ordering::Relaxed),
        s.close_now.load(Ordering::Relaxed),
        s.dial_errors.load(Ordering::Relaxed),
        s.exchange_errors.load(Ordering::Relaxed),
        s.mismatches.load(Ordering::Relaxed),
        s.stuck.load(Ordering::Relaxed)
    );
    let steady = &samples[(args.warmup as usize).min(samples.len().saturating_sub(1))..];
    let tenth = (steady.len() / 10).max(1);
    let (first, last) = (&steady[..tenth.min(steady.len())], &steady[steady.len().saturating_sub(tenth)..]);
    println!(
        "  flat?: samples t={}..{} s (after a {} s warm-up), first and last {tenth} each",
        args.warmup + 1,
        args.duration,
        args.warmup
    );
    let rss_flat = compare("rss", " KiB", average(first, |s| s.rss_kib as f64), average(last, |s| s.rss_kib as f64));
    let fds_flat = compare("fds", "", average(first, |s| s.fds as f64), average(last, |s| s.fds as f64));
    println!(
        "  after: drained {}, open {} (server side {}), rss {} KiB, fds {}",
        if drained { "yes" } else { "NO (timed out)" },
        s.open.load(Ordering::Relaxed),
        s.server_open.load(Ordering::Relaxed),
        rss_kib(),
        open_fds()
    );
    if rss_flat && fds_flat && drained {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
