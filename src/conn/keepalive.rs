//! Keepalive: a ping every interval, and the connection ended when no pong
//! comes back in time.
//!
//! Chat servers written with gorilla each carry this loop by hand. Here it
//! is a setting ([`crate::Config::ping_interval`]): a small task per
//! connection sends the pings; the reader counts the pongs. When a pong is
//! late, the task records the failure, wakes the reader (which then returns
//! [`crate::Error::KeepaliveTimeout`]) and shuts the stream down. The task
//! holds only a weak reference between rounds, so a dropped connection ends
//! it (after at most one pong timeout).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use super::shared::{Shared, Stream};
use crate::proto::OpCode;

/// What the keepalive task and the reader share.
#[derive(Debug, Default)]
pub(crate) struct KeepaliveState {
    /// Pongs received so far.
    pongs: AtomicU64,
    /// Woken at each pong.
    pong_notify: tokio::sync::Notify,
    /// A pong was late: the connection is dead.
    expired: AtomicBool,
    /// The reader's waker while it waits for input.
    reader: Mutex<Option<Waker>>,
}

impl KeepaliveState {
    pub(crate) fn pong_received(&self) {
        self.pongs.fetch_add(1, Ordering::AcqRel);
        self.pong_notify.notify_waiters();
    }

    pub(crate) fn expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }

    /// Remembers the reader's waker so that an expiry can wake it.
    pub(crate) fn register_reader(&self, waker: &Waker) {
        if let Ok(mut slot) = self.reader.lock() {
            match slot.as_ref() {
                Some(current) if current.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
    }

    fn expire(&self) {
        self.expired.store(true, Ordering::Release);
        if let Some(waker) = self.reader.lock().ok().and_then(|mut slot| slot.take()) {
            waker.wake();
        }
    }
}

/// Starts the keepalive task of a connection, when a tokio runtime is running.
pub(crate) fn spawn<S: Stream>(shared: &Arc<Shared<S>>, interval: Duration, pong_timeout: Duration) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(run(Arc::downgrade(shared), interval, pong_timeout));
    }
}

async fn run<S: Stream>(shared: Weak<Shared<S>>, interval: Duration, pong_timeout: Duration) {
    let mut seq: u64 = 0;
    loop {
        tokio::time::sleep(interval).await;
        let Some(conn) = shared.upgrade() else { return };
        if conn.close_sent() || conn.close_received() || conn.is_shut_down() {
            return;
        }
        let before = conn.keepalive.pongs.load(Ordering::Acquire);
        seq += 1;
        let deadline = Instant::now() + pong_timeout;
        if conn.write_frame(OpCode::Ping, true, 0, &seq.to_be_bytes(), Some(deadline)).await.is_err() {
            return;
        }
        // Wait for a pong; the connection is held for at most the pong timeout.
        let answered = {
            let state = &conn.keepalive;
            let wait = async {
                loop {
                    let notified = state.pong_notify.notified();
                    if state.pongs.load(Ordering::Acquire) != before {
                        return;
                    }
                    notified.await;
                }
            };
            tokio::time::timeout_at(deadline.into(), wait).await.is_ok()
        };
        if !answered && !conn.close_received() {
            conn.keepalive.expire();
            conn.shutdown().await;
            return;
        }
    }
}
