//! Benchmarks of the sans-IO protocol core: header parsing, decoding, masking,
//! UTF-8 validation and frame encoding. Every benchmark reports throughput in
//! bytes: wire bytes (headers included) for header parsing and decoding,
//! payload bytes for masking, validation and encoding.
//!
//! Run with `cargo bench --bench proto`; add `-- --quick` for a shorter run or a
//! name filter such as `-- mask`.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use silverback::proto::encoder::encode_frame;
use silverback::proto::frame::FrameHeader;
use silverback::proto::mask::{apply_mask, apply_mask_bytewise};
use silverback::proto::utf8::Utf8Validator;
use silverback::proto::{Decoder, Event, OpCode, Role};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// A group with short runs (20 samples over 2 s), so that the whole suite
/// finishes in a few minutes.
fn short_group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    group
}

/// Deterministic filler bytes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// `len` bytes of printable ASCII.
fn ascii_text(len: usize) -> Vec<u8> {
    (0..len).map(|i| b' ' + (i % 95) as u8).collect()
}

/// `len` bytes of text mixing 1-, 2-, 3- and 4-byte characters, padded with
/// ASCII to the exact length.
fn mixed_text(len: usize) -> Vec<u8> {
    const SAMPLE: &str = "Hello, κόσμε! Grüße — 日本語のテキスト 😀🎉 naïve café ";
    let mut out = String::with_capacity(len);
    'fill: loop {
        for c in SAMPLE.chars() {
            if out.len() + c.len_utf8() > len {
                break 'fill;
            }
            out.push(c);
        }
    }
    while out.len() < len {
        out.push('.');
    }
    out.into_bytes()
}

/// Frames with small payloads (0 to 32 bytes), masked, as a client sends them.
fn small_frames(count: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    let payload = pattern(32);
    for i in 0..count {
        encode_frame(&mut out, OpCode::Binary, true, 0, Some(KEY), &payload[..i % 33]);
    }
    out.to_vec()
}

fn bench_header_parse(c: &mut Criterion) {
    let buf = small_frames(4096);
    let mut group = short_group(c, "frame_header");
    group.throughput(Throughput::Bytes(buf.len() as u64));
    group.bench_function("parse_4096_small_frames", |b| {
        b.iter(|| {
            let buf = black_box(&buf[..]);
            let mut pos = 0;
            let mut frames = 0usize;
            while let Ok(Some((header, header_len))) = FrameHeader::parse(&buf[pos..]) {
                pos += header_len + header.payload_len as usize;
                frames += 1;
            }
            assert_eq!(pos, buf.len());
            frames
        })
    });
    group.finish();
}

/// Decodes every event in `buf` and returns the payload bytes seen.
fn decode_all(decoder: &mut Decoder, buf: &mut BytesMut) -> usize {
    let mut bytes = 0;
    while let Some(event) = decoder.decode(buf).expect("valid input") {
        if let Event::Data(chunk) = event {
            bytes += chunk.len();
        }
    }
    bytes
}

fn bench_decoder(c: &mut Criterion) {
    let mut group = short_group(c, "decoder");

    let text = ascii_text(32);
    let mut frames = BytesMut::new();
    for _ in 0..4096 {
        encode_frame(&mut frames, OpCode::Text, true, 0, Some(KEY), &text);
    }
    group.throughput(Throughput::Bytes(frames.len() as u64));
    group.bench_function("server_4096_masked_text_frames_32B", |b| {
        b.iter_batched(
            || frames.clone(),
            |mut buf| {
                let mut decoder = Decoder::new(Role::Server);
                // The buffer is returned so that freeing it is not timed.
                (decode_all(&mut decoder, &mut buf), buf)
            },
            BatchSize::LargeInput,
        )
    });

    let mut big = BytesMut::new();
    encode_frame(&mut big, OpCode::Binary, true, 0, Some(KEY), &pattern(MIB));
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("server_masked_binary_frame_1MiB", |b| {
        b.iter_batched(
            || big.clone(),
            |mut buf| {
                let mut decoder = Decoder::new(Role::Server);
                // The buffer is returned so that freeing it is not timed.
                (decode_all(&mut decoder, &mut buf), buf)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn bench_mask(c: &mut Criterion) {
    let mut group = short_group(c, "mask");
    for (label, size) in [("32B", 32), ("1KiB", KIB), ("64KiB", 64 * KIB), ("1MiB", MIB)] {
        let mut data = pattern(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("apply_mask", label), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut data), black_box(KEY), black_box(1)))
        });
        group.bench_with_input(BenchmarkId::new("apply_mask_bytewise", label), &size, |b, _| {
            b.iter(|| apply_mask_bytewise(black_box(&mut data), black_box(KEY), black_box(1)))
        });
    }
    group.finish();
}

fn bench_utf8(c: &mut Criterion) {
    let mut group = short_group(c, "utf8");
    let inputs = [
        ("ascii", "1KiB", ascii_text(KIB)),
        ("ascii", "1MiB", ascii_text(MIB)),
        ("mixed", "1KiB", mixed_text(KIB)),
        ("mixed", "1MiB", mixed_text(MIB)),
    ];
    for (kind, label, input) in &inputs {
        assert!(std::str::from_utf8(input).is_ok());
        group.throughput(Throughput::Bytes(input.len() as u64));
        let id = format!("{kind}_{label}");
        group.bench_with_input(BenchmarkId::new("validator_feed", &id), input, |b, input| {
            b.iter(|| {
                let mut v = Utf8Validator::new();
                v.feed(black_box(input)).unwrap();
                v.finish().unwrap();
            })
        });
        group.bench_with_input(BenchmarkId::new("std_from_utf8", &id), input, |b, input| {
            b.iter(|| std::str::from_utf8(black_box(input)).is_ok())
        });
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut group = short_group(c, "encode_frame");
    for (label, size) in [("32B", 32), ("64KiB", 64 * KIB)] {
        let payload = pattern(size);
        for (mode, mask) in [("unmasked", None), ("masked", Some(KEY))] {
            let mut dst = BytesMut::with_capacity(size + 14);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new(mode, label), &payload, |b, payload| {
                b.iter(|| {
                    dst.clear();
                    encode_frame(&mut dst, OpCode::Binary, true, 0, black_box(mask), black_box(payload));
                    dst.len()
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = bench_header_parse, bench_decoder, bench_mask, bench_utf8, bench_encode
}
criterion_main!(benches);
