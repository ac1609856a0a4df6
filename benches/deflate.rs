//! permessage-deflate throughput (MB/s) and ratio per mode.
//!
//! `cargo bench --bench deflate` prints, before the criterion runs, the
//! compressed size of a sequence of chat-like JSON messages in each mode, so
//! the ratio can be read next to the speed.

use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use silverback::proto::deflate::{Deflater, Inflater};

/// A day of a chat room: small JSON messages that repeat their structure.
fn messages() -> Vec<Vec<u8>> {
    (0..200)
        .map(|i| {
            format!(
                "{{\"type\":\"message\",\"room\":\"general\",\"user\":\"user{}\",\"id\":{},\"text\":\"hello number {} from the load test, how are you today?\"}}",
                i % 17,
                1_000_000 + i,
                i
            )
            .into_bytes()
        })
        .collect()
}

const MODES: [(&str, u8, bool); 4] =
    [("takeover-w15", 15, false), ("takeover-w12", 12, false), ("takeover-w9", 9, false), ("no-takeover", 15, true)];

fn compress_all(msgs: &[Vec<u8>], bits: u8, no_takeover: bool) -> Vec<BytesMut> {
    let mut deflater = Deflater::new(1, bits, no_takeover);
    msgs.iter()
        .map(|m| {
            let mut out = BytesMut::new();
            deflater.compress_message(m, &mut out);
            out
        })
        .collect()
}

fn report_ratios(msgs: &[Vec<u8>]) {
    let raw: usize = msgs.iter().map(Vec::len).sum();
    println!("permessage-deflate ratio over {} messages ({raw} bytes), level 1:", msgs.len());
    for (name, bits, no_takeover) in MODES {
        let wire: usize = compress_all(msgs, bits, no_takeover).iter().map(BytesMut::len).sum();
        println!("  {name:<14} {wire:>7} bytes  ratio {:.2}", raw as f64 / wire as f64);
    }
}

fn bench(c: &mut Criterion) {
    let msgs = messages();
    report_ratios(&msgs);
    let raw: usize = msgs.iter().map(Vec::len).sum();

    let mut group = c.benchmark_group("deflate");
    group.throughput(Throughput::Bytes(raw as u64));
    group.measurement_time(Duration::from_secs(2)).sample_size(20);
    for (name, bits, no_takeover) in MODES {
        group.bench_function(BenchmarkId::new("compress", name), |b| {
            b.iter(|| compress_all(&msgs, bits, no_takeover));
        });
        let wire = compress_all(&msgs, bits, no_takeover);
        group.bench_function(BenchmarkId::new("decompress", name), |b| {
            b.iter(|| {
                let mut inflater = Inflater::new(no_takeover);
                let mut out = BytesMut::new();
                for m in &wire {
                    out.clear();
                    let mut rest = &m[..];
                    while !rest.is_empty() {
                        let used = inflater.inflate(rest, &mut out, 1 << 20).expect("valid deflate data");
                        rest = &rest[used..];
                    }
                    while !inflater.finish(&mut out, 1 << 20).expect("valid deflate data") {}
                }
                out.len()
            });
        });
    }
    group.finish();

    // A large, compressible message: throughput of the streaming path.
    let big: Vec<u8> = msgs.concat().repeat(20);
    let mut group = c.benchmark_group("deflate-large");
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.measurement_time(Duration::from_secs(2)).sample_size(20);
    group.bench_function("compress-1-message", |b| {
        b.iter(|| {
            let mut out = BytesMut::new();
            Deflater::new(1, 15, true).compress_message(&big, &mut out);
            out.len()
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
