//! What a received message keeps allocated, counted by a counting allocator:
//! a small message the application holds on to must not keep alive the large
//! read buffer that earlier, larger messages were read into.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::SeqCst};
use std::time::Duration;

use bytes::BytesMut;
use common::{masked, pattern, BINARY, CONT, TEXT};
use silverback::{Config, Conn, Message, Role};
use tokio::io::AsyncWriteExt;

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, SeqCst);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, SeqCst);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most heap a kept 2-byte message may hold.
const BOUND: isize = 64 * 1024;

/// A server reads `count` large messages of `size` bytes (each in
/// `fragments` frames), dropping each, then a 2-byte text message, which it
/// returns. Everything runs on a thread of its own, so that what the
/// connection and the runtime keep per thread is freed when it ends: then only
/// the returned message holds memory of theirs.
fn read_large_then_small(count: usize, size: usize, fragments: usize) -> Message {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let mut bytes = Vec::new();
            let data = pattern(size);
            for _ in 0..count {
                let pieces: Vec<&[u8]> = data.chunks(size.div_ceil(fragments)).collect();
                for (i, piece) in pieces.iter().enumerate() {
                    let opcode = if i == 0 { BINARY } else { CONT };
                    bytes.extend(masked(i + 1 == pieces.len(), opcode, piece));
                }
            }
            bytes.extend(masked(true, TEXT, b"hi"));
            // The peer is faster than the server: most of it waits in the pipe.
            let (io, mut peer) = tokio::io::duplex(4 << 20);
            let mut conn = Conn::from_raw(io, Role::Server, Config::default(), None, BytesMut::new());
            let sender = tokio::spawn(async move {
                peer.write_all(&bytes).await.unwrap();
                peer
            });
            let step = Duration::from_secs(10);
            for i in 0..count {
                let large = tokio::time::timeout(step, conn.read_message()).await.expect("a large message").unwrap();
                assert!(large.data == data, "large message {i} altered");
            }
            let small = tokio::time::timeout(step, conn.read_message()).await.expect("the small message").unwrap();
            assert_eq!(small.data, "hi");
            drop(sender.await.unwrap());
            drop(conn);
            small
        })
    })
    .join()
    .unwrap()
}

/// The heap that `message` alone keeps allocated.
fn held_by(message: Message) -> isize {
    let with_message = LIVE_BYTES.load(SeqCst);
    drop(message);
    with_message - LIVE_BYTES.load(SeqCst)
}

#[test]
fn a_small_kept_message_does_not_pin_the_read_buffer_of_large_messages() {
    let cases = [
        ("after 1 MiB messages in one frame each", read_large_then_small(3, 1 << 20, 1)),
        ("after 1 MiB messages in two frames each", read_large_then_small(3, 1 << 20, 2)),
        ("after a 3 MiB message in one frame", read_large_then_small(1, 3 << 20, 1)),
    ];
    let held: Vec<(&str, isize)> = cases.into_iter().map(|(name, message)| (name, held_by(message))).collect();
    assert!(
        held.iter().all(|&(_, bytes)| bytes <= BOUND),
        "bytes of heap a kept 2-byte message holds (at most {BOUND} expected): {held:?}"
    );
}
