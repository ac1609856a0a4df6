//! Measures the compression state a connection holds between messages, per
//! permessage-deflate mode, as resident memory per connection: while the
//! zlib states are held (a connection between messages), and once they are
//! parked (a connection idle past `compression_park_after`: only the copies
//! of the windows are kept).
//!
//! ```text
//! cargo run --release --example deflate_memory
//! ```
//!
//! With real connections: start `echo_server` (compression on, parking
//! after the default 10 s), then
//!
//! ```text
//! cargo run --release --example deflate_memory -- --clients ws://127.0.0.1:9001 1000 SERVER_PID
//! ```
//!
//! opens that many compressed connections that each exchange one message
//! and then stay idle, and prints the server's resident memory before, once
//! they are all open, and after the idle threshold has passed.
//!
//! Parked figures are in steady state: each connection is parked after its
//! message, so the next reuses the memory freed (as on a server whose idle
//! connections park while others are opened).

use bytes::BytesMut;
use silverback::proto::deflate::{Deflater, Inflater};

const CONNECTIONS: usize = 2000;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Keeps `CONNECTIONS` compressor/decompressor pairs alive after one message
/// each (parked after it, with `park`), and returns the resident memory they
/// add, per pair, in KiB.
fn measure(window_bits: u8, no_context_takeover: bool, park: bool, full: bool) -> f64 {
    // 472 bytes, or (`full`) 40 KiB: more than the largest window.
    let repeat = if full { 700 } else { 8 };
    let message = b"{\"type\":\"tick\",\"symbol\":\"ABC\",\"price\":101.25,\"size\":300}".repeat(repeat);
    let before = rss_kib();
    let mut held = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut deflater = Deflater::new(1, window_bits, no_context_takeover);
        let mut inflater = Inflater::with_window_bits(no_context_takeover, window_bits);
        let mut wire = BytesMut::new();
        deflater.compress_message(&message, &mut wire);
        let mut out = BytesMut::new();
        let _ = inflater.inflate(&wire, &mut out, 1 << 20);
        while !inflater.finish(&mut out, 1 << 20).unwrap_or(true) {}
        if park {
            deflater.park();
            inflater.park();
        }
        held.push((deflater, inflater));
    }
    let after = rss_kib();
    drop(held);
    (after.saturating_sub(before)) as f64 / CONNECTIONS as f64
}

/// Each figure comes from a process of its own (this program, run with the
/// mode as arguments), so that memory freed by one measurement does not
/// hide the growth of the next.
fn measured_apart(bits: u8, no_takeover: bool, park: bool, full: bool) -> f64 {
    let exe = std::env::current_exe().expect("the path of this program");
    let out = std::process::Command::new(exe)
        .args([bits.to_string(), no_takeover.to_string(), park.to_string(), full.to_string()])
        .output()
        .expect("a measuring process");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(f64::NAN)
}

/// The resident memory of process `pid`, in KiB.
fn rss_of(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Opens `n` compressed connections to `url`, one echoed message each, and
/// reports the server's memory while they stay idle.
fn clients(url: &str, n: usize, pid: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let before = rss_of(pid);
        let message = b"{\"type\":\"tick\",\"symbol\":\"ABC\",\"price\":101.25,\"size\":300}".repeat(8);
        let dialer = silverback::Dialer::new().enable_compression(true);
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let (mut conn, _) = dialer.connect(url).await.expect("a connection");
            conn.write_message(silverback::MessageType::Binary, &message).await.expect("a write");
            let echo = conn.read_message().await.expect("the echo");
            assert_eq!(&echo.data[..], &message[..]);
            held.push(conn);
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let open = rss_of(pid);
        println!("server RSS: {before} KiB before, {open} KiB with {n} connections open after one message each");
        println!("  {:.1} KiB per connection", open.saturating_sub(before) as f64 / n as f64);
        let wait = silverback::DEFAULT_COMPRESSION_PARK_AFTER * 2 + std::time::Duration::from_secs(3);
        tokio::time::sleep(wait).await;
        let idle = rss_of(pid);
        println!("server RSS after {} s idle: {idle} KiB", wait.as_secs());
        println!("  {:.1} KiB per connection", idle.saturating_sub(before) as f64 / n as f64);
        drop(held);
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, url, n, pid] = args.as_slice() {
        if flag == "--clients" {
            clients(url, n.parse().unwrap_or(1000), pid);
            return;
        }
    }
    if let [bits, no_takeover, park, full] = args.as_slice() {
        let bits = bits.parse().unwrap_or(15);
        println!("{:.1}", measure(bits, no_takeover == "true", park == "true", full == "true"));
        return;
    }
    println!("| mode | KiB per connection (deflate + inflate state), between messages | idle, parked |");
    println!("|---|---|---|");
    for (name, bits, no_takeover, full) in [
        ("context takeover, window 15, a 472-byte message", 15, false, false),
        ("context takeover, window 15, a 40 KiB message (windows full)", 15, false, true),
        ("context takeover, window 12, a 472-byte message", 12, false, false),
        ("context takeover, window 9, a 472-byte message", 9, false, false),
        ("no context takeover", 15, true, false),
    ] {
        let held = measured_apart(bits, no_takeover, false, full);
        let parked = measured_apart(bits, no_takeover, true, full);
        println!("| {name} | {held:.1} | {parked:.1} |");
    }
}
