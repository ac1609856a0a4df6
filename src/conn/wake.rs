//! One waker for the stream's write direction, fanned out to every task that
//! waits on the write side.
//!
//! A tokio stream keeps a single waker per direction: the last task to poll
//! it for writing is the one woken when it can take more. Several tasks wait
//! on the write side of a connection (a writer for its frame to leave, the
//! reader for its replies, a handle, the keepalive task), so the stream is
//! only ever polled with the connection's own [`WriteWakers`] waker, and the
//! tasks register with it instead. Any progress wakes them all; each checks
//! its own condition and parks again if it is not met.
//!
//! A task registers after it found its condition unmet, so a wake in between
//! would be missed; the epoch closes that gap: a waiter reads it before it
//! looks, and when it has moved by the time the waiter is registered, the
//! waiter asks to be polled again instead of parking.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

/// The tasks waiting on a connection's write side.
#[derive(Debug, Default)]
pub(crate) struct WriteWakers {
    /// Moves at every wake.
    epoch: AtomicU64,
    /// `waiting` is not empty (read without the lock, set under it).
    any: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
}

impl WriteWakers {
    /// A new set, and the waker to poll the stream with.
    pub(crate) fn new() -> (Arc<Self>, Waker) {
        let wakers = Arc::new(WriteWakers::default());
        let waker = Waker::from(wakers.clone());
        (wakers, waker)
    }

    /// The current epoch: read it before checking a condition.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(SeqCst)
    }

    /// Registers `waker` to be woken at the next wake. True when a wake
    /// happened since `epoch` was read: the caller must then look again.
    pub(crate) fn register(&self, waker: &Waker, epoch: u64) -> bool {
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if !waiting.iter().any(|w| w.will_wake(waker)) {
                waiting.push(waker.clone());
            }
            self.any.store(true, SeqCst);
        }
        self.epoch.load(SeqCst) != epoch
    }

    /// Wakes every registered task.
    pub(crate) fn wake_all(&self) {
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

impl Wake for WriteWakers {
    fn wake(self: Arc<Self>) {
        self.wake_all();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all();
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
        let (wakers, stream_waker) = WriteWakers::new();
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
        let (wakers, stream_waker) = WriteWakers::new();
        let (_a, wa) = counter();
        let epoch = wakers.epoch();
        stream_waker.wake_by_ref();
        assert!(wakers.register(&wa, epoch), "the waiter must look again");
    }
}
