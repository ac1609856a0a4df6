//! Measures the compression state a connection holds between messages, per
//! permessage-deflate mode, as resident memory per connection.
//!
//! ```text
//! cargo run --release --example deflate_memory
//! ```

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
/// each, and returns the resident memory they add, per pair, in KiB.
fn measure(window_bits: u8, no_context_takeover: bool) -> f64 {
    let message = b"{\"type\":\"tick\",\"symbol\":\"ABC\",\"price\":101.25,\"size\":300}".repeat(8);
    let before = rss_kib();
    let mut held = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut deflater = Deflater::new(1, window_bits, no_context_takeover);
        let mut inflater = Inflater::new(no_context_takeover);
        let mut wire = BytesMut::new();
        deflater.compress_message(&message, &mut wire);
        let mut out = BytesMut::new();
        let _ = inflater.inflate(&wire, &mut out, 1 << 20);
        while !inflater.finish(&mut out, 1 << 20).unwrap_or(true) {}
        held.push((deflater, inflater));
    }
    let after = rss_kib();
    drop(held);
    (after.saturating_sub(before)) as f64 / CONNECTIONS as f64
}

fn main() {
    println!("| mode | KiB per connection (deflate + inflate state) |");
    println!("|---|---|");
    for (name, bits, no_takeover) in [
        ("context takeover, window 15", 15, false),
        ("context takeover, window 12", 12, false),
        ("context takeover, window 9", 9, false),
        ("no context takeover", 15, true),
    ] {
        println!("| {name} | {:.1} |", measure(bits, no_takeover));
    }
}
