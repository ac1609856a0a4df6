//! Keepalive: a ping every interval, and the connection ended when no pong
//! comes back in time.
//!
//! Chat servers written with gorilla each carry this loop by hand. Here it
//! is a setting ([`crate::Config::ping_interval`]): a small task per
//! connection sends the pings; the reader counts the pongs. When a pong is
//! late, the task records the failure, wakes the reader (which then returns
//! [`crate::Error::KeepaliveTimeout`]) and shuts the stream down.
//!
//! The task holds the connection only for the moment it writes a ping; while
//! it waits it holds just the small state below, and dropping the connection
//! wakes it so that it ends at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::shared::{ReadEnd, Shared, Stream};
use crate::proto::keepalive::{Due, Keepalive};
use crate::proto::outbox::Origin;
use crate::proto::OpCode;

/// What the keepalive task and the connection share.
#[derive(Debug, Default)]
pub(crate) struct KeepaliveState {
    /// Pongs received so far.
    pongs: AtomicU64,
    /// The connection is gone.
    dropped: AtomicBool,
    /// Wakes the task at each pong and when the connection is dropped.
    wake: Notify,
}

impl KeepaliveState {
    pub(crate) fn pong_received(&self) {
        self.pongs.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_waiters();
    }

    /// Called when the connection is dropped: ends the task.
    pub(crate) fn connection_dropped(&self) {
        self.dropped.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    fn is_dropped(&self) -> bool {
        self.dropped.load(Ordering::Acquire)
    }

    /// Waits until `done()` holds or `deadline` passes; true when it holds.
    async fn wait_until(&self, deadline: Instant, done: impl Fn() -> bool) -> bool {
        let wait = async {
            loop {
                // Created before the check, so a wake in between is not lost.
                let woken = self.wake.notified();
                if done() {
                    return;
                }
                woken.await;
            }
        };
        let _ = tokio::time::timeout_at(deadline.into(), wait).await;
        done()
    }
}

/// Starts the keepalive task of a connection, when a tokio runtime is running.
pub(crate) fn spawn<S: Stream>(shared: &Arc<Shared<S>>, interval: Duration, pong_timeout: Duration) {
    if let (Ok(runtime), Some(state)) = (tokio::runtime::Handle::try_current(), &shared.keepalive) {
        runtime.spawn(run(Arc::downgrade(shared), state.clone(), interval, pong_timeout));
    }
}

async fn run<S: Stream>(
    shared: Weak<Shared<S>>,
    state: Arc<KeepaliveState>,
    interval: Duration,
    pong_timeout: Duration,
) {
    // The timing rules are the core's; this task only sleeps and acts.
    let mut timer = Keepalive::new(interval, pong_timeout, Instant::now());
    let mut pongs = state.pongs.load(Ordering::Acquire);
    loop {
        let seen = pongs;
        state
            .wait_until(timer.poll_timeout(), || state.pongs.load(Ordering::Acquire) != seen || state.is_dropped())
            .await;
        if state.is_dropped() {
            return;
        }
        pongs = state.pongs.load(Ordering::Acquire);
        if pongs != seen {
            timer.pong_received();
        }
        match timer.on_timeout(Instant::now()) {
            Due::Nothing => {}
            Due::Ping(seq) => {
                let Some(conn) = shared.upgrade() else { return };
                if conn.close_sent() || conn.close_received() || conn.is_shut_down() {
                    return;
                }
                let Ok(ping) = conn.queue_control(Origin::User, OpCode::Ping, &seq.to_be_bytes()) else { return };
                // Drive the ping out: the connection may have no other
                // writer. A ping that cannot leave before its pong is due
                // ends the connection at the deadline below.
                let sent = std::future::poll_fn(|cx| conn.poll_control(cx, ping));
                if let Ok(Err(_)) = tokio::time::timeout_at(timer.poll_timeout().into(), sent).await {
                    return;
                }
            }
            Due::Expired => {
                let Some(conn) = shared.upgrade() else { return };
                if !conn.close_received() {
                    conn.end_reads(ReadEnd::Keepalive);
                    conn.shutdown().await;
                }
                return;
            }
        }
    }
}
