//! What the halves of a connection share: the stream, the write queue
//! ([`Outbox`]), the close flags, and the one way bytes reach the stream.
//!
//! The stream sits behind a plain mutex held only for one non-blocking poll,
//! so a reader waiting for input never blocks a writer. Writing is done under
//! the outbox's plain mutex, by whichever task needs bytes to move — a
//! writer waiting for its frame, the reader before it waits for input, a
//! handle, the keepalive task — and always from the front of the one queue,
//! with the connection's own waker ([`WriteWakers`]). No lock is held across
//! an await, so no task can hold up another by being slow or by being
//! dropped, and no wake-up is lost to another task polling the stream.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::keepalive::KeepaliveState;
use super::wake::{StreamCx, WriteWakers};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::pool::BufferPool;
use crate::proto::encoder::{encode_frame, encode_header};
use crate::proto::mask::apply_mask;
use crate::proto::outbox::{control_frame, ControlId, Origin, Outbox};
use crate::proto::{OpCode, Role};

/// Unmasked payloads at least this large are written straight from the
/// caller's slice while the stream takes them (a vectored write after the
/// header); only what it does not take is copied into the queue.
const VECTORED_THRESHOLD: usize = 16 * 1024;

/// Masked payloads at least this large are masked into the queue a piece of
/// this size at a time while the stream takes them.
const MASK_CHUNK: usize = 64 * 1024;

/// The most released write buffers each thread keeps for reuse, so that a
/// connection that goes idle between bursts does not allocate for every burst.
const SPARE_WRITE_BUFFERS: usize = 16;

thread_local! {
    static SPARES: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A spare write buffer of `size` bytes from this thread, if one is kept.
fn spare_write_buffer(size: usize) -> Option<BytesMut> {
    SPARES.with(|spares| {
        let mut spares = spares.try_borrow_mut().ok()?;
        let at = spares.iter().rposition(|buf| buf.capacity() == size)?;
        Some(spares.swap_remove(at))
    })
}

/// Keeps an empty write buffer for the next connection on this thread to
/// need one, or frees it when enough are kept already (or it has grown).
fn keep_spare_write_buffer(mut buf: BytesMut, size: usize) {
    buf.clear();
    // Takes back the room in front left by partial writes (no allocation:
    // the buffer is empty and its own).
    buf.reserve(size);
    if buf.capacity() != size {
        return;
    }
    SPARES.with(|spares| {
        if let Ok(mut spares) = spares.try_borrow_mut() {
            if spares.len() < SPARE_WRITE_BUFFERS {
                spares.push(buf);
            }
        }
    });
}

/// A fresh, unpredictable masking key from the thread's cryptographically
/// secure generator: one 32-bit draw (a random `[u8; 4]` would take four,
/// one per byte).
fn mask_key() -> [u8; 4] {
    rand::random::<u32>().to_ne_bytes()
}

/// The bounds a stream must meet to carry a connection.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A data frame to queue.
#[derive(Clone, Copy)]
pub(crate) struct Frame<'a> {
    pub(crate) opcode: OpCode,
    pub(crate) fin: bool,
    pub(crate) rsv: u8,
    pub(crate) payload: &'a [u8],
}

/// Whether a queued data frame is written at once or waits for more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Written now, with everything queued before it.
    Now,
    /// Left in the buffer until it fills, a write, a flush, or the reader
    /// waits for input.
    Feed,
}

/// What became of a data frame handed to [`Shared::queue_frame`].
#[derive(Debug)]
pub(crate) enum Queued {
    /// Written and flushed, or (fed) in the buffer with nothing to wait for.
    Done,
    /// Queued; out once everything up to this position is flushed.
    Waiting(u64),
    /// Not queued: the buffer is full; wait with [`Shared::poll_room`].
    NoRoom,
}

pub(crate) struct Shared<S> {
    pub(crate) role: Role,
    pub(crate) settings: Settings,
    pub(crate) subprotocol: Option<String>,
    stream: Mutex<S>,
    outbox: Mutex<Outbox>,
    wakers: WriteWakers,
    close_sent: AtomicBool,
    close_received: AtomicBool,
    shut_down: AtomicBool,
    shutdown_done: AtomicBool,
    /// Why reads were ended from this side, if they were (a [`ReadEnd`]
    /// plus one; zero while they were not).
    reads_ended: AtomicU8,
    /// The reader's waker while it waits for input.
    reader: Mutex<Option<Waker>>,
    /// Present when keepalive pings are on.
    pub(crate) keepalive: Option<Arc<KeepaliveState>>,
    _drop_signal: Option<DropSignal>,
}

/// What a connection's halves still need of its [`Config`] once they are
/// built; the rest (limits, compression) went into their decoder and sender.
/// Kept small: every idle connection holds one.
pub(crate) struct Settings {
    pub(crate) read_buffer_size: usize,
    pub(crate) write_buffer_size: usize,
    pub(crate) write_buffer_pool: Option<Arc<dyn BufferPool>>,
    pub(crate) close_timeout: Duration,
}

impl Settings {
    fn new(config: &Config) -> Self {
        Settings {
            read_buffer_size: config.read_buffer_size,
            write_buffer_size: config.write_buffer_size,
            write_buffer_pool: config.write_buffer_pool.clone(),
            close_timeout: config.close_timeout,
        }
    }
}

/// Tells the keepalive task, if any, that the connection is gone.
struct DropSignal(Arc<KeepaliveState>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.connection_dropped();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks can only come from the stream's own
    // poll methods; the state is still the best there is.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<S: Stream> Shared<S> {
    pub(crate) fn new(stream: S, role: Role, config: &Config, subprotocol: Option<String>) -> Arc<Self> {
        let keepalive = config.ping_interval.map(|_| Arc::<KeepaliveState>::default());
        Arc::new(Shared {
            role,
            settings: Settings::new(config),
            subprotocol,
            stream: Mutex::new(stream),
            // The write buffer is taken at the first write.
            outbox: Mutex::new(Outbox::default()),
            wakers: WriteWakers::default(),
            close_sent: AtomicBool::new(false),
            close_received: AtomicBool::new(false),
            shut_down: AtomicBool::new(false),
            shutdown_done: AtomicBool::new(false),
            reads_ended: AtomicU8::new(0),
            reader: Mutex::new(None),
            _drop_signal: keepalive.clone().map(DropSignal),
            keepalive,
        })
    }

    pub(crate) fn stream(&self) -> MutexGuard<'_, S> {
        lock(&self.stream)
    }

    pub(crate) fn into_stream(self) -> S {
        self.stream.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream()).poll_read(cx, buf)
    }

    /// A fresh masking key for each client frame (RFC 6455 §5.3).
    fn mask_key(&self) -> Option<[u8; 4]> {
        matches!(self.role, Role::Client).then(mask_key)
    }

    /// The write buffer's size: fed frames wait until this much is buffered,
    /// and a frame is queued only while less than this waits before it.
    fn limit(&self) -> usize {
        self.settings.write_buffer_size.max(1)
    }

    /// Runs `f` on the outbox with the stream's write waker, then wakes the
    /// waiting tasks if anything they wait on changed.
    fn with_outbox<R>(&self, f: impl FnOnce(&mut Outbox, &mut StreamCx<'_>) -> R) -> R {
        let mut stream_cx = StreamCx::new(&self.wakers);
        let (result, moved) = {
            let mut outbox = lock(&self.outbox);
            let before = outbox.progress();
            let result = f(&mut outbox, &mut stream_cx);
            (result, outbox.progress() != before)
        };
        if moved {
            self.wakers.wake_all();
        }
        result
    }

    /// [`Shared::with_outbox`] for a wait: when `f` is not ready, the task is
    /// registered to be woken at the next change.
    fn poll_outbox<T>(
        &self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut Outbox, &mut StreamCx<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let epoch = self.wakers.epoch();
        let polled = self.with_outbox(f);
        if polled.is_pending() && self.wakers.register(cx.waker(), epoch) {
            // Something changed while we looked (possibly our own progress):
            // look again soon rather than risk sleeping through it.
            cx.waker().wake_by_ref();
        }
        polled
    }

    /// Writes queued bytes while the stream takes them, passing waiting
    /// control frames into the queue as room frees up, then flushes the
    /// stream. Ready when everything is out (or the write side failed).
    fn pump(&self, outbox: &mut Outbox, cx: &mut StreamCx<'_>) -> Poll<()> {
        if outbox.failure().is_some() {
            return Poll::Ready(());
        }
        let limit = self.limit();
        loop {
            outbox.hand_controls(limit, || self.new_write_buffer());
            match self.write_some(outbox, cx) {
                Some(Poll::Ready(())) => {}
                Some(Poll::Pending) => return Poll::Pending,
                None => break,
            }
            if outbox.failure().is_some() {
                return Poll::Ready(());
            }
        }
        if let Some(buf) = outbox.take_empty_buffer() {
            self.release_buffer(buf);
        }
        if outbox.needs_flush() {
            match cx.poll(|cx| Pin::new(&mut *self.stream()).poll_flush(cx)) {
                Poll::Ready(Ok(())) => outbox.flushed_all(),
                Poll::Ready(Err(e)) => outbox.fail(Error::Io(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }

    /// One write of the queue's front bytes: `None` when the queue is empty.
    fn write_some(&self, outbox: &mut Outbox, cx: &mut StreamCx<'_>) -> Option<Poll<()>> {
        let polled = {
            let buf = outbox.buf.as_ref().filter(|buf| !buf.is_empty())?;
            cx.poll(|cx| Pin::new(&mut *self.stream()).poll_write(cx, buf))
        };
        Some(match polled {
            Poll::Ready(Ok(0)) => {
                outbox.fail(Error::Io(io::ErrorKind::WriteZero.into()));
                Poll::Ready(())
            }
            Poll::Ready(Ok(n)) => {
                outbox.consumed(n);
                Poll::Ready(())
            }
            Poll::Ready(Err(e)) => {
                outbox.fail(Error::Io(e));
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        })
    }

    /// Whether a data frame of `len` payload bytes may join the queue now.
    fn has_room(&self, outbox: &Outbox, mode: Mode, len: usize) -> bool {
        let buffered = outbox.buffered();
        buffered == 0
            || match mode {
                Mode::Now => buffered < self.limit(),
                // The frame header is at most 14 bytes.
                Mode::Feed => buffered + len + 14 < self.limit(),
            }
    }

    /// Waits until a data frame of `len` payload bytes may be queued (what
    /// waits before it is written out meanwhile), or the write side fails.
    /// Nothing is queued, so dropping this wait has no effect.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>, mode: Mode, len: usize) -> Poll<Result<()>> {
        self.poll_outbox(cx, |outbox, stream_cx| {
            if let Some(e) = outbox.refusal() {
                return Poll::Ready(Err(e));
            }
            if !self.has_room(outbox, mode, len) {
                let _ = self.pump(outbox, stream_cx);
            }
            if let Some(e) = outbox.refusal() {
                return Poll::Ready(Err(e));
            }
            if self.has_room(outbox, mode, len) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
    }

    /// Queues a whole data frame — after the control frames that wait —
    /// and writes what the stream takes now when `mode` says so or the
    /// buffer is full. Without `force`, a frame that does not fit is refused
    /// with [`Queued::NoRoom`]; `force` is for a caller that just waited for
    /// room and has committed to the frame (compressed it).
    pub(crate) fn queue_frame(&self, frame: Frame<'_>, mode: Mode, force: bool) -> Result<Queued> {
        // The hot path: the step under the lock returns a small value, and
        // the error (rare, and large) is made after it.
        let queued = self.with_outbox(|outbox, cx| {
            if !outbox.is_open() {
                return None;
            }
            let len = frame.payload.len();
            if !force && !self.has_room(outbox, mode, len) {
                return Some(Queued::NoRoom);
            }
            let limit = self.limit();
            outbox.hand_controls(limit, || self.new_write_buffer());
            let write = mode == Mode::Now || outbox.buffered() + len + 14 >= limit;
            let end = if write && len >= VECTORED_THRESHOLD {
                self.queue_large(outbox, cx, frame)
            } else {
                self.append_frame(outbox, frame)
            };
            if !write {
                return Some(Queued::Done);
            }
            let _ = self.pump(outbox, cx);
            if outbox.has_failed() {
                return None;
            }
            Some(if outbox.is_flushed(end) { Queued::Done } else { Queued::Waiting(end) })
        });
        match queued {
            Some(queued) => Ok(queued),
            None => Err(self.refusal().unwrap_or(Error::CloseSent)),
        }
    }

    /// Appends a whole frame to the outbox's buffer (masked for a client);
    /// returns the queue's end after it.
    #[inline]
    fn append_frame(&self, outbox: &mut Outbox, frame: Frame<'_>) -> u64 {
        let key = self.mask_key();
        outbox.append(
            || self.new_write_buffer(),
            |buf| encode_frame(buf, frame.opcode, frame.fin, frame.rsv, key, frame.payload),
        )
    }

    /// Feeds whole data frames, in order, while each fits in the write
    /// buffer without a write (after the control frames that wait), all
    /// under one lock; returns how many were queued. Nothing is written
    /// here: the first frame that does not fit is left to the caller, who
    /// queues it the usual way (waiting for room).
    pub(crate) fn feed_frames<'a>(&self, frames: impl Iterator<Item = Frame<'a>>) -> Result<usize> {
        let fed = self.with_outbox(|outbox, _| {
            if !outbox.is_open() {
                return None;
            }
            let limit = self.limit();
            outbox.hand_controls(limit, || self.new_write_buffer());
            let mut fed = 0;
            for frame in frames {
                if outbox.buffered() + frame.payload.len() + 14 >= limit {
                    break;
                }
                self.append_frame(outbox, frame);
                fed += 1;
            }
            Some(fed)
        });
        fed.ok_or_else(|| self.refusal().unwrap_or(Error::CloseSent))
    }

    /// Queues a large frame, writing as much of it as the stream takes
    /// straight from `frame.payload` (unmasked) or masked a piece at a time;
    /// what the stream does not take is copied into the queue whole, so that
    /// the frame is complete there before anything else can follow it.
    fn queue_large(&self, outbox: &mut Outbox, cx: &mut StreamCx<'_>, frame: Frame<'_>) -> u64 {
        let Frame { opcode, fin, rsv, payload } = frame;
        let key = self.mask_key();
        let make = || self.new_write_buffer();
        outbox.append(make, |buf| encode_header(buf, opcode, fin, rsv, key, payload.len() as u64));
        let Some(key) = key else {
            let mut rest = payload;
            while !rest.is_empty() && outbox.failure().is_none() {
                let polled = {
                    let head = outbox.buf.as_deref().unwrap_or_default();
                    let bufs = [IoSlice::new(head), IoSlice::new(rest)];
                    cx.poll(|cx| Pin::new(&mut *self.stream()).poll_write_vectored(cx, &bufs))
                        .map_ok(|n| (n, head.len()))
                };
                match polled {
                    Poll::Ready(Ok((0, _))) => outbox.fail(Error::Io(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok((n, head))) => {
                        let from_head = n.min(head);
                        outbox.consumed(from_head);
                        outbox.wrote_directly(n - from_head);
                        rest = &rest[n - from_head..];
                    }
                    Poll::Ready(Err(e)) => outbox.fail(Error::Io(e)),
                    Poll::Pending => break,
                }
            }
            if outbox.failure().is_some() {
                return outbox.queued();
            }
            return outbox.append(make, |buf| buf.extend_from_slice(rest));
        };
        let mut offset = 0;
        let mut done = 0;
        let mut stream_takes = true;
        while done < payload.len() {
            let piece = if stream_takes { MASK_CHUNK.min(payload.len() - done) } else { payload.len() - done };
            outbox.append(make, |buf| {
                let start = buf.len();
                buf.extend_from_slice(&payload[done..done + piece]);
                offset = apply_mask(&mut buf[start..], key, offset);
            });
            done += piece;
            while stream_takes && done < payload.len() {
                match self.write_some(outbox, cx) {
                    Some(Poll::Ready(())) if outbox.failure().is_some() => return outbox.queued(),
                    Some(Poll::Ready(())) => {}
                    Some(Poll::Pending) => stream_takes = false,
                    None => break,
                }
            }
        }
        outbox.queued()
    }

    /// Waits until everything up to position `end` is written and flushed.
    /// Dropping this wait leaves the bytes queued: the next write, flush or
    /// read finishes them.
    /// Bytes that are out count as written even when the write side failed
    /// or was shut down after them.
    pub(crate) fn poll_flushed(&self, cx: &mut Context<'_>, end: u64) -> Poll<Result<()>> {
        self.poll_outbox(cx, |outbox, stream_cx| {
            if outbox.is_flushed(end) {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = outbox.failure() {
                return Poll::Ready(Err(e));
            }
            let _ = self.pump(outbox, stream_cx);
            if let Some(e) = outbox.failure() {
                return Poll::Ready(Err(e));
            }
            if outbox.is_flushed(end) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
    }

    /// The position after everything queued so far.
    pub(crate) fn queued(&self) -> u64 {
        lock(&self.outbox).queued()
    }

    /// Writes what waits without waiting, for the reader about to wait for
    /// input: the peer may be waiting for it. When the stream is full the
    /// task is registered to be woken as it drains, so that the reader goes
    /// on writing while it waits; an idle connection gives its buffer back.
    pub(crate) fn poll_write_idle(&self, cx: &mut Context<'_>) {
        let _ = self.poll_outbox(cx, |outbox, stream_cx| {
            if outbox.is_idle() {
                if let Some(buf) = outbox.take_empty_buffer() {
                    self.release_buffer(buf);
                }
                return Poll::Ready(());
            }
            self.pump(outbox, stream_cx)
        });
    }

    /// Waits until nothing is left to write (or the write side failed).
    pub(crate) fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_outbox(cx, |outbox, stream_cx| {
            if outbox.failure().is_some() || outbox.is_idle() {
                return Poll::Ready(());
            }
            self.pump(outbox, stream_cx)
        })
    }

    /// Queues a control frame of at most 125 bytes and writes what the
    /// stream takes now. A close frame is queued once: `Err(CloseSent)` after.
    pub(crate) fn queue_control(&self, origin: Origin, opcode: OpCode, payload: &[u8]) -> Result<ControlId> {
        let frame = control_frame(opcode, payload, self.mask_key());
        let close = opcode == OpCode::Close;
        let id = self.with_outbox(|outbox, cx| {
            let id = outbox.queue_control(origin, close, frame)?;
            let _ = self.pump(outbox, cx);
            Ok::<_, Error>(id)
        })?;
        if close {
            self.close_sent.store(true, Ordering::Release);
        }
        Ok(id)
    }

    /// Waits until the control frame `id` is written and flushed.
    pub(crate) fn poll_control(&self, cx: &mut Context<'_>, id: ControlId) -> Poll<Result<()>> {
        self.poll_outbox(cx, |outbox, stream_cx| {
            if !outbox.is_control_out(id) {
                let _ = self.pump(outbox, stream_cx);
            }
            if outbox.is_control_out(id) {
                return Poll::Ready(Ok(()));
            }
            match outbox.failure() {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            }
        })
    }

    /// Takes back a control frame that is still waiting for room; false
    /// when it is in the queue already.
    pub(crate) fn withdraw(&self, id: ControlId) -> bool {
        lock(&self.outbox).withdraw(id)
    }

    /// Fails the write side for good with `error` (a deadline that passed
    /// while a frame was under way): what waits is dropped.
    pub(crate) fn fail_writes(&self, error: Error) {
        self.with_outbox(|outbox, _| outbox.fail(error));
    }

    /// The error the next data frame would fail with, if any.
    pub(crate) fn refusal(&self) -> Option<Error> {
        lock(&self.outbox).refusal()
    }

    /// Hands back an empty write buffer: a connection holds one only while
    /// frames wait in it.
    fn release_buffer(&self, buf: BytesMut) {
        match &self.settings.write_buffer_pool {
            Some(pool) => {
                let mut buf = buf;
                buf.clear();
                pool.put(buf)
            }
            None => keep_spare_write_buffer(buf, self.settings.write_buffer_size),
        }
    }

    /// A write buffer from the pool, or from this thread's spares, or a new one.
    fn new_write_buffer(&self) -> BytesMut {
        let size = self.settings.write_buffer_size;
        match &self.settings.write_buffer_pool {
            Some(pool) => pool.get(),
            None => spare_write_buffer(size),
        }
        .unwrap_or_else(|| BytesMut::with_capacity(size))
    }

    /// Ends reads from this side: the reader, waiting or not, fails with
    /// the error `why` stands for instead of waiting for the peer.
    pub(crate) fn end_reads(&self, why: ReadEnd) {
        let _ = self.reads_ended.compare_exchange(0, why as u8 + 1, Ordering::AcqRel, Ordering::Acquire);
        if let Some(waker) = lock(&self.reader).take() {
            waker.wake();
        }
    }

    /// The error reads fail with once they were ended from this side.
    pub(crate) fn reads_ended(&self) -> Option<Error> {
        match self.reads_ended.load(Ordering::Acquire) {
            0 => None,
            1 => Some(ReadEnd::Closed.error()),
            _ => Some(ReadEnd::Keepalive.error()),
        }
    }

    /// Remembers the reader's waker so that [`Shared::end_reads`] can wake it.
    pub(crate) fn register_reader(&self, waker: &Waker) {
        let mut slot = lock(&self.reader);
        match slot.as_ref() {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// A close frame has been queued (it leaves after what was queued before it).
    pub(crate) fn close_sent(&self) -> bool {
        self.close_sent.load(Ordering::Acquire)
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    pub(crate) fn close_received(&self) -> bool {
        self.close_received.load(Ordering::Acquire)
    }

    pub(crate) fn mark_close_received(&self) {
        self.close_received.store(true, Ordering::Release);
        self.wakers.wake_all();
    }

    /// Waits until the reader has seen the peer's close frame, or `deadline`.
    pub(crate) async fn wait_close_received(&self, deadline: Instant) {
        let _ = tokio::time::timeout_at(deadline.into(), self.until_close_received()).await;
    }

    /// Waits until the reader has seen the peer's close frame.
    pub(crate) async fn until_close_received(&self) {
        std::future::poll_fn(|cx| {
            let epoch = self.wakers.epoch();
            if self.close_received() {
                return Poll::Ready(());
            }
            if self.wakers.register(cx.waker(), epoch) {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        })
        .await
    }

    /// Shuts down the write direction of the stream (a TCP FIN). What still
    /// waits to be written is dropped and later writes fail; it never waits
    /// behind a writer, whose peer may not be reading.
    pub(crate) fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.shut_down.store(true, Ordering::Release);
        self.poll_outbox(cx, |outbox, stream_cx| {
            if !outbox.is_shut_down() {
                outbox.shut_down();
            }
            if self.shutdown_done.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            let polled = stream_cx.poll(|cx| Pin::new(&mut *self.stream()).poll_shutdown(cx));
            if polled.is_ready() {
                self.shutdown_done.store(true, Ordering::Release);
            }
            polled.map(|_| ())
        })
    }

    /// [`Shared::poll_shutdown`] as a future.
    pub(crate) async fn shutdown(&self) {
        std::future::poll_fn(|cx| self.poll_shutdown(cx)).await
    }

    /// Ends the connection from this side at once (gorilla's `Close`): the
    /// write direction is shut down and a reader waiting in another task
    /// fails instead of waiting for the peer.
    pub(crate) async fn close_now(&self) {
        self.end_reads(ReadEnd::Closed);
        self.shutdown().await;
    }

    /// The end of a close handshake started here: the stream is shut down,
    /// and when the peer's close never came, reads end too.
    pub(crate) async fn finish_close(&self) {
        std::future::poll_fn(|cx| self.poll_finish_close(cx)).await
    }

    /// [`Shared::finish_close`] in poll form.
    pub(crate) fn poll_finish_close(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.close_received() {
            self.end_reads(ReadEnd::Closed);
        }
        self.poll_shutdown(cx)
    }

    /// Queues a close frame unless one was queued already, and waits until
    /// it is out or `deadline` passes (then it stays queued).
    pub(crate) async fn send_close(&self, payload: &[u8], deadline: Instant) -> Result<()> {
        let id = match self.queue_control(Origin::User, OpCode::Close, payload) {
            Ok(id) => id,
            Err(Error::CloseSent) => return Ok(()),
            Err(e) => return Err(e),
        };
        let wait = std::future::poll_fn(|cx| self.poll_control(cx, id));
        tokio::time::timeout_at(deadline.into(), wait).await.unwrap_or(Err(Error::Timeout))
    }
}

/// Why reads were ended from this side of the connection.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ReadEnd {
    /// `close_now`, or a close handshake the peer did not answer in time.
    Closed = 0,
    /// A keepalive ping went unanswered.
    Keepalive = 1,
}

impl ReadEnd {
    fn error(self) -> Error {
        match self {
            ReadEnd::Closed => {
                Error::Io(io::Error::new(io::ErrorKind::ConnectionAborted, "the connection was closed on this side"))
            }
            ReadEnd::Keepalive => Error::KeepaliveTimeout,
        }
    }
}

/// Polls `f`, bounded by a write deadline: when `timer` fires first, the
/// write side fails for good with [`Error::Timeout`] (a frame may be under
/// way).
pub(crate) fn poll_timed<S: Stream>(
    shared: &Shared<S>,
    timer: &mut Timer,
    cx: &mut Context<'_>,
    f: impl FnOnce(&mut Context<'_>) -> Poll<Result<()>>,
) -> Poll<Result<()>> {
    if let Poll::Ready(result) = f(cx) {
        return Poll::Ready(result);
    }
    ready!(timer.poll(cx));
    shared.fail_writes(Error::Timeout);
    Poll::Ready(Err(Error::Timeout))
}

/// A deadline as a pollable timer, made only when a wait comes to it.
#[derive(Debug, Default)]
pub(crate) struct Timer {
    at: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timer {
    pub(crate) fn new(at: Option<Instant>) -> Self {
        Timer { at, sleep: None }
    }

    /// Moves the deadline (a no-op when it is unchanged).
    pub(crate) fn set(&mut self, at: Option<Instant>) {
        if self.at != at {
            *self = Timer::new(at);
        }
    }

    /// Ready once the deadline has passed; never without one.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.at else { return Poll::Pending };
        if Instant::now() >= at {
            return Poll::Ready(());
        }
        self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at.into()))).as_mut().poll(cx)
    }
}
