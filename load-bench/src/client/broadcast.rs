//! The broadcast scenario: one publisher, N subscribers, every message sent
//! to everyone (the servers of `server <impl> <addr> --broadcast`).
//!
//! The publisher sends binary messages stamped with their send time and
//! keeps at most `--depth` messages per subscriber in flight (counted from
//! the deliveries seen so far), so the load is as high as the server can
//! take without queues growing: deliveries per second, and the delivery
//! latency (from the stamp to the read that brought the message) at that
//! load. Before measuring, the publisher sends sync messages until every
//! subscriber has received one (so that every subscription is in place).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use super::ws::OP_BINARY;
use super::{open_many, report_cpu, vm_rss_kib, Conn, CpuSample, Opts, Proto, SETUP_TIMEOUT};

/// The first payload byte: what the message is for.
const SYNC: u8 = 0;
const WARMUP: u8 = 1;
const MEASURED: u8 = 2;

/// What the subscribers' reader tasks and the publisher share.
#[derive(Default)]
struct Shared {
    /// Subscribers that have received a message.
    ready: AtomicUsize,
    /// Deliveries of warm-up and measured messages.
    delivered: AtomicU64,
    /// Wakes the publisher when deliveries were counted.
    progress: Notify,
    /// Latencies of measured deliveries, in nanoseconds.
    latencies: Mutex<Vec<u64>>,
}

/// Nanoseconds since the first call (the stamps' clock).
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub async fn run(opts: &Opts) -> Result<(), String> {
    let pid = opts.server_pid.ok_or("broadcast needs --server-pid")?;
    if opts.raw || opts.deflate {
        return Err("broadcast has no --raw or --deflate variant".into());
    }
    let n = opts.connections;
    now_ns();
    let rss_before = vm_rss_kib(pid)?;
    let shared = Arc::new(Shared::default());

    // The publisher first: it receives its own messages too, and reads them
    // off in a task of its own so that the server never waits for it.
    let publisher = Conn::open(opts, u64::MAX).await?;
    let Conn { stream, proto: Proto::Ws { mut reader, mut encoder } } = publisher else {
        return Err("broadcast: the publisher has no WebSocket framing".into());
    };
    let (mut read_half, mut write_half) = stream.into_split();
    let mut tasks = vec![tokio::spawn(async move {
        loop {
            while reader.next()?.is_some() {}
            reader.buf.reserve(8192);
            reader.fill(&mut read_half).await?;
        }
    })];
    let subscribers = open_many(opts, n, 100).await?;
    for conn in subscribers {
        tasks.push(tokio::spawn(subscriber(conn, shared.clone())));
    }

    let mut payload = vec![0u8; opts.size];
    let mut out = Vec::new();
    // Sync: until every subscriber has had a message; another is sent only
    // when the last brought no one new (so that a slow server does not get a
    // backlog of them).
    let sync_deadline = Instant::now() + SETUP_TIMEOUT;
    let mut last_ready = usize::MAX;
    while shared.ready.load(Ordering::Relaxed) < n {
        if Instant::now() >= sync_deadline {
            abort(tasks);
            return Err(format!(
                "broadcast: {} of {n} subscribers received nothing within {SETUP_TIMEOUT:?}",
                n - shared.ready.load(Ordering::Relaxed)
            ));
        }
        let ready = shared.ready.load(Ordering::Relaxed);
        if ready == last_ready || last_ready == usize::MAX {
            out.clear();
            payload[0] = SYNC;
            encoder.encode(OP_BINARY, &payload, &mut out)?;
            write_half.write_all(&out).await.map_err(|e| format!("publisher: {e}"))?;
        }
        last_ready = ready;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let window = opts.depth as u64 * n as u64;
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(opts.warmup);
    let end = measure_from + Duration::from_secs_f64(opts.seconds);
    let mut phase = WARMUP;
    let mut sent = 0u64;
    let (mut delivered_before, mut cpu_before) = (0, CpuSample::now(Some(pid)));
    let mut measured_at = start;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if phase == WARMUP && now >= measure_from {
            phase = MEASURED;
            cpu_before = CpuSample::now(Some(pid));
            delivered_before = shared.delivered.load(Ordering::Relaxed);
            measured_at = Instant::now();
        }
        let in_flight = sent * n as u64 - shared.delivered.load(Ordering::Relaxed);
        let room = (window.saturating_sub(in_flight)) / n as u64;
        if room == 0 {
            let _ = tokio::time::timeout_at(end.into(), shared.progress.notified()).await;
            continue;
        }
        out.clear();
        for _ in 0..room {
            payload[0] = phase;
            payload[1..9].copy_from_slice(&now_ns().to_le_bytes());
            encoder.encode(OP_BINARY, &payload, &mut out)?;
        }
        write_half.write_all(&out).await.map_err(|e| format!("publisher: {e}"))?;
        sent += room;
    }
    let cpu_after = CpuSample::now(Some(pid));
    let delivered = shared.delivered.load(Ordering::Relaxed) - delivered_before;
    let window_secs = (cpu_after.at - measured_at).as_secs_f64();
    let rss_after = vm_rss_kib(pid)?;

    // What is still on its way, briefly, to see whether any was lost.
    let expected = sent * n as u64;
    let drain_until = Instant::now() + Duration::from_secs(2);
    while shared.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        let _ = tokio::time::timeout_at(drain_until.into(), shared.progress.notified()).await;
    }
    let missing = expected - shared.delivered.load(Ordering::Relaxed).min(expected);
    abort(tasks);

    if delivered == 0 {
        return Err("broadcast: nothing was delivered in the measured window".into());
    }
    // Every measured message's deliveries, also those that came after the window.
    let mut latencies = std::mem::take(&mut *shared.latencies.lock().unwrap());
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    let rate = delivered as f64 / window_secs;
    println!(
        "broadcast: {n} subscribers, {} B, {} in flight each: {rate:.0} deliveries/s ({:.0} messages/s); server VmRSS {rss_before} KiB -> {rss_after} KiB",
        opts.size,
        opts.depth,
        rate / n as f64,
    );
    if missing > 0 {
        println!("NOTE broadcast: {missing} of {expected} deliveries had not arrived 2 s after the window");
    }
    println!("RESULT deliveries_per_s={rate:.0}");
    if latencies.is_empty() {
        println!("NOTE broadcast: no message sent in the measured window arrived: no latency figures");
    } else {
        println!("latency: {} deliveries, p50 {:.1} us, p99 {:.1} us", latencies.len(), pct(0.5), pct(0.99));
        println!("RESULT p50_us={:.1}", pct(0.5));
        println!("RESULT p99_us={:.1}", pct(0.99));
    }
    println!("RESULT rss_mib={:.1}", rss_after as f64 / 1024.0);
    report_cpu("cpu_us_per_delivery", "delivery", &cpu_before, &cpu_after, delivered as f64);
    Ok(())
}

fn abort(tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>) {
    for task in tasks {
        task.abort();
    }
}

/// Reads one subscriber's messages: counts deliveries, records latencies.
async fn subscriber(mut conn: Conn, shared: Arc<Shared>) -> Result<(), String> {
    let Proto::Ws { reader, .. } = &mut conn.proto else {
        return Err("broadcast: a subscriber has no WebSocket framing".into());
    };
    let mut ready = false;
    let mut latencies = Vec::new();
    loop {
        let now = now_ns();
        let mut got = 0;
        let mut synced = false;
        while let Some(m) = reader.next()? {
            if m.opcode != OP_BINARY || m.data.len() < 9 {
                return Err(format!("broadcast: unexpected message (opcode {}, {} B)", m.opcode, m.data.len()));
            }
            match m.data[0] {
                SYNC => synced = true,
                WARMUP => got += 1,
                _ => {
                    got += 1;
                    let stamp = u64::from_le_bytes(m.data[1..9].try_into().unwrap());
                    latencies.push(now.saturating_sub(stamp));
                }
            }
        }
        if !ready && (synced || got > 0) {
            ready = true;
            shared.ready.fetch_add(1, Ordering::Relaxed);
        }
        if got > 0 {
            shared.delivered.fetch_add(got, Ordering::Relaxed);
            shared.progress.notify_one();
        }
        if !latencies.is_empty() {
            shared.latencies.lock().unwrap().append(&mut latencies);
        }
        // Keeps the buffer at its size (the shared fill would grow it to
        // 64 KiB, for ten thousand connections).
        reader.buf.reserve(8192);
        reader.fill(&mut conn.stream).await?;
    }
}
