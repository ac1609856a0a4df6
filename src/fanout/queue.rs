//! One subscriber's queue: a bounded list of shared messages behind a plain
//! mutex, with the writer task's waker and its stop signal in the same
//! place, so that a publish touches one small allocation per subscriber.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use crate::prepared::PreparedMessage;
use crate::proto::CloseFrame;

/// Why a message was not queued.
pub(super) enum Refused {
    /// The queue is full.
    Full,
    /// The writer task has ended, or the subscriber left.
    Gone,
}

/// What the writer task is to do next.
pub(super) enum Next {
    /// Write these (moved into the caller's batch).
    Messages,
    /// Close the connection with this frame.
    Stop(CloseFrame),
    /// The subscriber left and everything queued was taken: end.
    End,
}

struct State {
    items: VecDeque<Arc<PreparedMessage>>,
    /// The writer task, while it waits.
    waker: Option<Waker>,
    /// No more messages will come (unsubscribed, or the writer ended).
    closed: bool,
    /// The connection is to be closed with this frame.
    stop: Option<CloseFrame>,
}

pub(super) struct Queue {
    state: Mutex<State>,
    capacity: usize,
    /// Publishers waiting for room ([`crate::fanout::SlowPolicy::Wait`]).
    waiting: AtomicUsize,
    room: Notify,
}

impl Queue {
    pub(super) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Queue {
            state: Mutex::new(State { items: VecDeque::new(), waker: None, closed: false, stop: None }),
            capacity,
            waiting: AtomicUsize::new(0),
            room: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing that can panic runs under this lock.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `message` unless the queue is full or closed.
    pub(super) fn push(&self, message: &Arc<PreparedMessage>) -> Result<(), Refused> {
        let waker = {
            let mut state = self.state();
            if state.closed || state.stop.is_some() {
                return Err(Refused::Gone);
            }
            if state.items.len() >= self.capacity {
                return Err(Refused::Full);
            }
            state.items.push_back(message.clone());
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Waits up to `deadline` for room, then queues `message`.
    pub(super) async fn push_waiting(
        &self,
        message: &Arc<PreparedMessage>,
        deadline: tokio::time::Instant,
    ) -> Result<(), Refused> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let result = tokio::time::timeout_at(deadline, async {
            loop {
                let notified = self.room.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                match self.push(message) {
                    Err(Refused::Full) => notified.await,
                    done => return done,
                }
            }
        })
        .await
        .unwrap_or(Err(Refused::Full));
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        result
    }

    /// Tells the writer task to close the connection with `frame`; later
    /// messages are refused.
    pub(super) fn stop(&self, frame: CloseFrame) {
        let waker = {
            let mut state = self.state();
            state.stop = Some(frame);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        self.room.notify_waiters();
    }

    /// No more messages will be queued: the writer task ends once it has
    /// written what is queued.
    pub(super) fn close(&self) {
        let waker = {
            let mut state = self.state();
            state.closed = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        self.room.notify_waiters();
    }

    /// The writer's next step: a stop first, then up to `max` messages
    /// moved into `batch`, then the end.
    pub(super) fn poll_next(
        &self,
        cx: &mut Context<'_>,
        batch: &mut Vec<Arc<PreparedMessage>>,
        max: usize,
    ) -> Poll<Next> {
        let next = {
            let mut state = self.state();
            if let Some(frame) = state.stop.take() {
                state.closed = true;
                state.items.clear();
                Next::Stop(frame)
            } else if !state.items.is_empty() {
                let n = state.items.len().min(max);
                batch.extend(state.items.drain(..n));
                Next::Messages
            } else if state.closed {
                Next::End
            } else {
                register(&mut state.waker, cx.waker());
                return Poll::Pending;
            }
        };
        if matches!(next, Next::Messages) && self.waiting.load(Ordering::Acquire) > 0 {
            self.room.notify_waiters();
        }
        Poll::Ready(next)
    }

    /// Whether the writer is told to stop (taking the frame); registers the
    /// task to be woken when it is.
    pub(super) fn poll_stop(&self, cx: &mut Context<'_>) -> Poll<CloseFrame> {
        let mut state = self.state();
        if let Some(frame) = state.stop.take() {
            state.closed = true;
            state.items.clear();
            return Poll::Ready(frame);
        }
        register(&mut state.waker, cx.waker());
        Poll::Pending
    }
}

fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(current) if current.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}
