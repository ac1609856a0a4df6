//! One waker for the stream's write direction, fanned out to every task that
//! waits on the write side.
//!
//! A tokio stream keeps a single waker per direction: the last task to poll
//! it for writing is the one woken when it can take more. Several tasks wait
//! on the write side of a connection (a writer for its frame to leave, the
//! reader for its replies, a handle, the keepalive task), so the stream is
//! only ever left waiting with the connection's own waker, and the tasks
//! register with [`WriteWakers`] instead. Any progress wakes them all; each
//! checks its own condition and parks again if it is not met.
//!
//! A task registers after it found its condition unmet, so a wake in between
//! would be missed; the epoch closes that gap: a waiter reads it before it
//! looks, and when it has moved by the time the waiter is registered, the
//! waiter asks to be polled again instead of parking.
//!
//! The same wakers serve a wait for the peer's close frame.
//!
//! Most connections never wait on their write side: the set of waiters and
//! the stream's waker are made at the first wait ([`StreamCx`] polls the
//! stream with a no-op waker first), so that an idle connection does not
//! carry them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

/// The tasks waiting on a connection's write side.
#[derive(Debug, Default)]
pub(crate) struct WriteWakers {
    /// Moves at every wake made through [`WriteWakers::wake_all`].
    epoch: AtomicU64,
    /// Made at the first registration or stream wait.
    set: OnceLock<Arc<WaiterSet>>,
}

/// The registered tasks; also the stream's waker.
#[derive(Debug, Default)]
struct WaiterSet {
    /// Moves at every wake, from the stream or from a task.
    epoch: AtomicU64,
    /// `waiting` is not empty (read without the lock, set under it).
    any: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
}

/// What a waiter read before it looked: see [`WriteWakers::epoch`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epoch(u64, u64);

impl WriteWakers {
    /// The current epoch: read it before checking a condition.
    pub(crate) fn epoch(&self) -> Epoch {
        let set = self.set.get().map_or(0, |set| set.epoch.load(SeqCst));
        Epoch(self.epoch.load(SeqCst), set)
    }

    fn set(&self) -> &Arc<WaiterSet> {
        self.set.get_or_init(Arc::default)
    }

    /// Registers `waker` to be woken at the next wake. True when a wake
    /// happened since `epoch` was read: the caller must then look again.
    pub(crate) fn register(&self, waker: &Waker, epoch: Epoch) -> bool {
        let set = self.set();
        {
            let mut waiting = set.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if !waiting.iter().any(|w| w.will_wake(waker)) {
                waiting.push(waker.clone());
            }
            set.any.store(true, SeqCst);
        }
        // A set made since `epoch` was read started at zero.
        self.epoch.load(SeqCst) != epoch.0 || set.epoch.load(SeqCst) != epoch.1
    }

    /// Wakes every registered task.
    pub(crate) fn wake_all(&self) {
        self.epoch.fetch_add(1, SeqCst);
        if let Some(set) = self.set.get() {
            set.wake_all();
        }
    }

    /// The waker the stream is left waiting with.
    fn stream_waker(&self) -> Waker {
        Waker::from(self.set().clone())
    }
}

impl WaiterSet {
    fn wake_all(&self) {
        self.epoch.fetch_add(1, SeqCst);
        if !self.any.load(SeqCst) {
            return;
        }
        // Woken outside the lock, a few at a time, so that the list keeps
        // its allocation.
        loop {
            let mut batch: [Option<Waker>; 4] = Default::default();
            let more = {
                let mut waiting = self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                for slot in &mut batch {
                    *slot = waiting.pop();
                }
                if waiting.is_empty() {
                    self.any.store(false, SeqCst);
                }
                !waiting.is_empty()
            };
            for waker in batch.into_iter().flatten() {
                waker.wake();
            }
            if !more {
                return;
            }
        }
    }
}

impl Wake for WaiterSet {
    fn wake(self: Arc<Self>) {
        self.wake_all();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all();
    }
}

/// A waker that does nothing (`Waker::noop` needs a newer Rust than ours).
static NOOP: LazyLock<Waker> = LazyLock::new(|| Waker::from(Arc::new(Noop)));

struct Noop;

impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// How the write side polls its stream: with a no-op waker first, and, when
/// the stream is not ready, once more with the connection's own waker, which
/// the stream then keeps. Polling again after `Pending` is always allowed,
/// and the stream only ever waits with the connection's waker.
pub(crate) struct StreamCx<'a> {
    wakers: &'a WriteWakers,
    /// Made at the first `Pending` of this step.
    waker: Option<Waker>,
}

impl<'a> StreamCx<'a> {
    pub(crate) fn new(wakers: &'a WriteWakers) -> Self {
        StreamCx { wakers, waker: None }
    }

    /// Runs one poll of the stream.
    pub(crate) fn poll<T>(&mut self, mut f: impl FnMut(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        if self.waker.is_none() {
            let polled = f(&mut Context::from_waker(&NOOP));
            if polled.is_ready() {
                return polled;
            }
        }
        let waker = self.waker.get_or_insert_with(|| self.wakers.stream_waker());
        f(&mut Context::from_waker(waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        (count, waker)
    }

    #[test]
    fn every_registered_task_is_woken_once() {
        let wakers = WriteWakers::default();
        let stream_waker = wakers.stream_waker();
        let (a, wa) = counter();
        let (b, wb) = counter();
        let epoch = wakers.epoch();
        assert!(!wakers.register(&wa, epoch));
        assert!(!wakers.register(&wb, epoch));
        assert!(!wakers.register(&wa, epoch), "registering twice keeps one entry");
        stream_waker.wake_by_ref();
        assert_eq!((a.0.load(SeqCst), b.0.load(SeqCst)), (1, 1));
        stream_waker.wake_by_ref();
        assert_eq!((a.0.load(SeqCst), b.0.load(SeqCst)), (1, 1), "a wake drains the set");
    }

    #[test]
    fn a_wake_between_looking_and_registering_is_reported() {
        let wakers = WriteWakers::default();
        let stream_waker = wakers.stream_waker();
        let (_a, wa) = counter();
        let epoch = wakers.epoch();
        stream_waker.wake_by_ref();
        assert!(wakers.register(&wa, epoch), "the waiter must look again");
    }
}
