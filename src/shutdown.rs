//! Graceful shutdown of a server's connections: [`Shutdown`].

use std::collections::HashMap;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::conn::{Conn, Handle, Stream};
use crate::error::Error;
use crate::proto::CloseFrame;

/// Ends a server's connections gracefully: stops the accept loop, sends
/// every live connection a close frame (1001 "going away" or 1012 "service
/// restart", say), waits for their close handshakes up to a deadline, and
/// shuts down the connections that did not answer in time.
///
/// Each connection registers with [`Shutdown::track`] (or
/// [`Shutdown::watch`]), which costs a map entry and returns a
/// [`ShutdownGuard`]; the entry goes when the guard is dropped, so keep the
/// guard next to the connection. The accept loop waits on
/// [`Shutdown::started`] beside `accept` and stops when it is ready.
///
/// [`Shutdown::shutdown`] closes connections through their [`Handle`]s: the
/// application's own reader loop goes on as usual and sees the close
/// handshake as any close — its read returns [`Error::Closed`] with the
/// peer's answer — and the handshake counts as complete when that reader
/// has seen the peer's close frame. A connection whose reader is not
/// reading, or whose peer does not answer, is shut down at the deadline
/// (as by [`Handle::close_now`]: its read fails) and counted as dropped.
///
/// Connections tracked after the shutdown started are sent the same close
/// frame at once and waited for like the others until the deadline; those
/// tracked after [`Shutdown::shutdown`] returned are shut down at once,
/// without a close frame.
///
/// Needs a tokio runtime: each connection's handshake is waited for in a
/// task of its own.
///
/// ```no_run
/// use std::time::Duration;
/// use silverback::{CloseCode, CloseFrame, Shutdown, Upgrader};
///
/// # async fn run() -> Result<(), silverback::Error> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// let upgrader = Upgrader::new();
/// let shutdown = Shutdown::new();
///
/// let accept_loop = {
///     let shutdown = shutdown.clone();
///     tokio::spawn(async move {
///         loop {
///             let (stream, _) = tokio::select! {
///                 accepted = listener.accept() => match accepted {
///                     Ok(accepted) => accepted,
///                     Err(_) => continue,
///                 },
///                 _ = shutdown.started() => break, // stop accepting
///             };
///             let (upgrader, shutdown) = (upgrader.clone(), shutdown.clone());
///             tokio::spawn(async move {
///                 let Ok(mut conn) = upgrader.accept(stream).await else { return };
///                 let _guard = shutdown.watch(&conn); // deregisters when dropped
///                 // The usual reader loop: a shutdown ends it with Error::Closed.
///                 while let Ok(msg) = conn.read_message().await {
///                     if conn.write_message(msg.kind, &msg.data).await.is_err() {
///                         break;
///                     }
///                 }
///             });
///         }
///     })
/// };
///
/// tokio::signal::ctrl_c().await?;
/// let frame = CloseFrame::new(CloseCode::GOING_AWAY, "server shutting down");
/// let report = shutdown.shutdown(frame, Duration::from_secs(5)).await;
/// println!("{} closed cleanly, {} dropped", report.closed, report.dropped);
/// let _ = accept_loop.await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

/// How the connections fared in a [`Shutdown::shutdown`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections whose close handshake completed before the deadline.
    pub closed: usize,
    /// Connections still open at the deadline, shut down without waiting
    /// longer.
    pub dropped: usize,
    /// Connections that ended before the deadline without completing the
    /// handshake: the close frame could not be written, or the application
    /// dropped the connection first.
    pub failed: usize,
}

impl ShutdownReport {
    /// Every connection the shutdown dealt with.
    pub fn total(&self) -> usize {
        self.closed + self.dropped + self.failed
    }
}

/// Keeps a connection registered with a [`Shutdown`]; dropping it
/// deregisters the connection. Keep it as long as the connection.
#[must_use = "the connection is deregistered when the guard is dropped"]
pub struct ShutdownGuard {
    inner: Arc<Inner>,
    slot: Arc<Slot>,
}

impl fmt::Debug for ShutdownGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownGuard").field("id", &self.slot.id).finish()
    }
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        self.inner.state().conns.remove(&self.slot.id);
        self.slot.gone.store(true, Ordering::Release);
        self.slot.gone_signal.notify_one();
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state();
        f.debug_struct("Shutdown")
            .field("tracked", &state.conns.len())
            .field("started", &!matches!(state.phase, Phase::Running))
            .finish()
    }
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// Woken when the shutdown starts.
    start: Notify,
    /// Woken when the last connection being closed is done.
    done: Notify,
}

#[derive(Default)]
struct State {
    conns: HashMap<u64, Arc<Slot>>,
    next_id: u64,
    phase: Phase,
    /// Connections being closed.
    pending: usize,
    report: ShutdownReport,
}

#[derive(Default)]
enum Phase {
    #[default]
    Running,
    Closing {
        payload: Bytes,
        deadline: Instant,
    },
    Done,
}

/// One tracked connection.
struct Slot {
    id: u64,
    conn: Box<dyn Closable>,
    /// The guard was dropped.
    gone: AtomicBool,
    gone_signal: Notify,
}

type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What the shutdown needs of a connection, whatever its stream.
trait Closable: Send + Sync + 'static {
    fn queue_close(&self, payload: &[u8]) -> crate::Result<()>;
    fn is_close_received(&self) -> bool;
    fn until_close_received(&self) -> BoxFuture<'_>;
    fn close_now(&self) -> BoxFuture<'_>;
}

impl<S: Stream> Closable for Handle<S> {
    fn queue_close(&self, payload: &[u8]) -> crate::Result<()> {
        Handle::queue_close(self, payload)
    }
    fn is_close_received(&self) -> bool {
        Handle::is_close_received(self)
    }
    fn until_close_received(&self) -> BoxFuture<'_> {
        Box::pin(Handle::until_close_received(self))
    }
    fn close_now(&self) -> BoxFuture<'_> {
        Box::pin(Handle::close_now(self))
    }
}

/// How one connection's close ended.
enum Outcome {
    Closed,
    Dropped,
    Failed,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Shutdown {
    /// A shutdown with no connections, not started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a connection by its [`Handle`] until the returned guard is
    /// dropped. After the shutdown started, the connection is sent the
    /// shutdown's close frame at once and waited for like the others (when
    /// called inside a tokio runtime); after [`Shutdown::shutdown`]
    /// returned, it is shut down at once, without a close frame.
    pub fn track<S: Stream>(&self, handle: Handle<S>) -> ShutdownGuard {
        let mut state = self.inner.state();
        let id = state.next_id;
        state.next_id += 1;
        let slot =
            Arc::new(Slot { id, conn: Box::new(handle), gone: AtomicBool::new(false), gone_signal: Notify::new() });
        state.conns.insert(id, slot.clone());
        let runtime = tokio::runtime::Handle::try_current();
        match (&state.phase, runtime) {
            (Phase::Running, _) => {}
            (Phase::Closing { payload, deadline }, Ok(runtime)) => {
                let (payload, deadline) = (payload.clone(), *deadline);
                state.pending += 1;
                runtime.spawn(close_one(self.inner.clone(), slot.clone(), payload, deadline));
            }
            (Phase::Done, Ok(runtime)) => {
                let slot = slot.clone();
                runtime.spawn(async move { slot.conn.close_now().await });
            }
            // Outside a runtime nothing can be waited for: the close frame
            // is queued, and goes out with the connection's next write or read.
            (Phase::Closing { payload, .. }, Err(_)) => {
                let _ = slot.conn.queue_close(payload);
            }
            (Phase::Done, Err(_)) => {}
        }
        drop(state);
        ShutdownGuard { inner: self.inner.clone(), slot }
    }

    /// Registers `conn`; see [`Shutdown::track`].
    pub fn watch<S: Stream>(&self, conn: &Conn<S>) -> ShutdownGuard {
        self.track(conn.handle())
    }

    /// How many connections are registered now.
    pub fn len(&self) -> usize {
        self.inner.state().conns.len()
    }

    /// True when no connection is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once [`Shutdown::shutdown`] was called.
    pub fn is_started(&self) -> bool {
        !matches!(self.inner.state().phase, Phase::Running)
    }

    /// Ready once [`Shutdown::shutdown`] was called: for an accept loop to
    /// `select!` on beside `accept`, to stop accepting. Cancel-safe.
    pub async fn started(&self) {
        loop {
            let notified = self.inner.start.notified();
            if self.is_started() {
                return;
            }
            notified.await;
        }
    }

    /// Closes every registered connection: sends each `frame` (a
    /// connection that sent a close already is only waited for), waits up
    /// to `timeout` for the close handshakes, then shuts down those still
    /// open. Returns once every connection is accounted for, within the
    /// timeout. A second call starts nothing new: it waits for the first
    /// and returns the same report.
    ///
    /// Must run inside a tokio runtime.
    pub async fn shutdown(&self, frame: CloseFrame, timeout: Duration) -> ShutdownReport {
        let deadline = Instant::now() + timeout;
        {
            let mut state = self.inner.state();
            if let Phase::Running = state.phase {
                let payload = frame.encode();
                state.phase = Phase::Closing { payload: payload.clone(), deadline };
                let slots: Vec<_> = state.conns.values().cloned().collect();
                state.pending += slots.len();
                for slot in slots {
                    tokio::spawn(close_one(self.inner.clone(), slot, payload.clone(), deadline));
                }
                self.inner.start.notify_waiters();
            }
        }
        loop {
            let notified = self.inner.done.notified();
            {
                let mut state = self.inner.state();
                if state.pending == 0 {
                    state.phase = Phase::Done;
                    return state.report;
                }
            }
            notified.await;
        }
    }
}

/// Sends one connection the close frame and waits for its handshake, the
/// end of its guard, or the deadline; then records how it went.
async fn close_one(inner: Arc<Inner>, slot: Arc<Slot>, payload: Bytes, deadline: Instant) {
    let outcome = close_slot(&slot, &payload, deadline).await;
    drop(slot);
    let mut state = inner.state();
    match outcome {
        Outcome::Closed => state.report.closed += 1,
        Outcome::Dropped => state.report.dropped += 1,
        Outcome::Failed => state.report.failed += 1,
    }
    state.pending -= 1;
    if state.pending == 0 {
        inner.done.notify_waiters();
    }
}

async fn close_slot(slot: &Slot, payload: &[u8], deadline: Instant) -> Outcome {
    let conn = &*slot.conn;
    match conn.queue_close(payload) {
        Ok(()) | Err(Error::CloseSent) => {}
        Err(_) => {
            shut_now(conn).await;
            return Outcome::Failed;
        }
    }
    let mut received = conn.until_close_received();
    let mut gone = pin!(slot.gone_signal.notified());
    let mut timer = pin!(tokio::time::sleep_until(deadline.into()));
    let ended = poll_fn(|cx| {
        if received.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Outcome::Closed);
        }
        if slot.gone.load(Ordering::Acquire) || gone.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Outcome::Failed);
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Outcome::Dropped);
        }
        Poll::Pending
    })
    .await;
    drop(received);
    match ended {
        Outcome::Closed => Outcome::Closed,
        _ if conn.is_close_received() => Outcome::Closed,
        Outcome::Failed => Outcome::Failed,
        Outcome::Dropped => {
            shut_now(conn).await;
            Outcome::Dropped
        }
    }
}

/// Shuts a connection down without waiting on its stream: reads end at
/// once, and a stream that cannot shut down at once is left to finish when
/// the application drops the connection.
async fn shut_now(conn: &dyn Closable) {
    let _ = tokio::time::timeout(Duration::ZERO, conn.close_now()).await;
}
