//! The write side's state and the lock that orders writers.
//!
//! Frames from different tasks must never interleave on the wire, and a frame
//! may take many awaits to write, so writing needs an asynchronous lock. But
//! most writes in a busy connection are small frames appended to the write
//! buffer, and a reader flushing that buffer before it waits for input; both
//! are done without waiting. So the state sits in a plain mutex, held only for
//! a few non-blocking steps, and a `busy` flag in it marks a writer that holds
//! the sink across awaits. Only that writer touches the buffer while the flag
//! is up; the quick paths see it and step aside. Waiting writers park on a
//! [`Notify`] and are woken one at a time as the flag comes down.

use std::sync::{Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::sync::Notify;

use crate::error::Error;

/// Write-side state.
pub(crate) struct Sink {
    /// Bytes of whole frames waiting to be written (fed frames).
    pub(crate) buf: Option<BytesMut>,
    /// The first write failure; every later write returns it again.
    pub(crate) error: Option<Error>,
}

struct State {
    sink: Sink,
    /// A writer holds the sink across awaits.
    busy: bool,
    /// Writers waiting for `busy` to come down.
    waiting: usize,
}

/// The sink and its writers' queue.
pub(crate) struct SinkLock {
    state: Mutex<State>,
    released: Notify,
}

impl SinkLock {
    pub(crate) fn new(sink: Sink) -> Self {
        SinkLock { state: Mutex::new(State { sink, busy: false, waiting: 0 }), released: Notify::new() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing run under this lock can panic half-way through a change.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the sink now, unless a writer holds it.
    pub(crate) fn try_with<R>(&self, f: impl FnOnce(&mut Sink) -> R) -> Option<R> {
        let mut state = self.state();
        if state.busy {
            return None;
        }
        Some(f(&mut state.sink))
    }

    /// Waits until no other writer holds the sink, and takes it.
    pub(crate) async fn acquire(&self) -> Writer<'_> {
        loop {
            // Created before the check, so a release in between is not missed
            // (`notify_one` leaves a permit when nobody is parked yet).
            let released = self.released.notified();
            {
                let mut state = self.state();
                if !state.busy {
                    state.busy = true;
                    return Writer { lock: self };
                }
                state.waiting += 1;
            }
            let _waiting = Waiting(self);
            released.await;
        }
    }
}

/// Counts a parked writer, until it wakes up or is cancelled.
struct Waiting<'a>(&'a SinkLock);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.state().waiting -= 1;
    }
}

/// The right to write, held across awaits; released on drop.
pub(crate) struct Writer<'a> {
    lock: &'a SinkLock,
}

impl Writer<'_> {
    /// Runs `f` on the sink.
    pub(crate) fn with<R>(&mut self, f: impl FnOnce(&mut Sink) -> R) -> R {
        f(&mut self.lock.state().sink)
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        let wake = {
            let mut state = self.lock.state();
            state.busy = false;
            state.waiting > 0
        };
        if wake {
            // A woken writer that is cancelled before it runs passes the
            // notification on to the next one.
            self.lock.released.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn lock() -> Arc<SinkLock> {
        Arc::new(SinkLock::new(Sink { buf: None, error: None }))
    }

    #[tokio::test]
    async fn the_quick_path_steps_aside_while_a_writer_holds_the_sink() {
        let lock = lock();
        assert_eq!(lock.try_with(|_| 1), Some(1));
        let writer = lock.acquire().await;
        assert_eq!(lock.try_with(|_| 1), None);
        drop(writer);
        assert_eq!(lock.try_with(|_| 1), Some(1));
    }

    #[tokio::test]
    async fn writers_take_turns() {
        let lock = lock();
        let first = lock.acquire().await;
        let waiter = tokio::spawn({
            let lock = lock.clone();
            async move {
                let mut writer = lock.acquire().await;
                writer.with(|sink| sink.buf = Some(BytesMut::from(&b"second"[..])));
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the second writer must wait for the first");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").expect("no panic");
        assert_eq!(lock.try_with(|sink| sink.buf.clone()), Some(Some(BytesMut::from(&b"second"[..]))));
    }

    #[tokio::test]
    async fn a_cancelled_waiter_does_not_strand_the_next_one() {
        let lock = lock();
        let first = lock.acquire().await;
        // Parks, then is cancelled after the release has picked it.
        let cancelled = tokio::spawn({
            let lock = lock.clone();
            async move {
                let _ = tokio::time::timeout(Duration::from_millis(50), lock.acquire()).await;
            }
        });
        let patient = tokio::spawn({
            let lock = lock.clone();
            async move {
                drop(lock.acquire().await);
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        cancelled.await.expect("no panic");
        tokio::time::timeout(Duration::from_secs(5), patient).await.expect("not stranded").expect("no panic");
        assert_eq!(lock.state().waiting, 0);
        assert!(!lock.state().busy);
    }
}
