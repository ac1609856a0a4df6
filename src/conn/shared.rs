//! The state both halves of a connection share: the stream itself and the
//! right to write frames.
//!
//! The stream sits behind a plain mutex that is held only for the length of
//! one non-blocking `poll_read` or `poll_write`, so a reader waiting for input
//! never blocks a writer. Whole frames are written under the async [`Sink`]
//! lock, so frames from different tasks (a data message and a pong, say) never
//! interleave their bytes.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::config::Config;
use super::keepalive::KeepaliveState;
use super::sink::{Sink, SinkLock};
use crate::error::{Error, Result};
use crate::proto::encoder::{encode_frame, encode_header};
use crate::proto::{OpCode, Role};

/// Payloads at least this large are written with a vectored write instead of
/// being copied into the write buffer (unmasked frames only).
const VECTORED_THRESHOLD: usize = 16 * 1024;

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

/// How an attempt to send a frame without waiting went.
pub(crate) enum TrySend {
    /// Sent, or failed for good.
    Done(Result<()>),
    /// In the write buffer, which the stream did not take all of yet: finish
    /// with [`Shared::flush_pending`].
    Buffered,
    /// Nothing done: take the general path.
    NotTaken,
}

/// A frame to write: opcode, FIN, RSV bits, payload.
type Frame<'a> = (OpCode, bool, u8, &'a [u8]);

/// The bounds a stream must meet to carry a connection.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

pub(crate) struct Shared<S> {
    pub(crate) role: Role,
    pub(crate) config: Config,
    pub(crate) subprotocol: Option<String>,
    stream: Mutex<S>,
    sink: SinkLock,
    close_sent: AtomicBool,
    close_received: AtomicBool,
    close_received_notify: Notify,
    shut_down: AtomicBool,
    /// Fed frames wait in the sink's buffer.
    pending: AtomicBool,
    /// Present when keepalive pings are on.
    pub(crate) keepalive: Option<Arc<KeepaliveState>>,
    _drop_signal: Option<DropSignal>,
}

/// Tells the keepalive task, if any, that the connection is gone.
struct DropSignal(Arc<KeepaliveState>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.connection_dropped();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding this lock can only come from the stream's own
    // poll method; the stream is still the best state we have.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<S: Stream> Shared<S> {
    pub(crate) fn new(stream: S, role: Role, config: Config, subprotocol: Option<String>) -> Arc<Self> {
        let keepalive = config.ping_interval.map(|_| Arc::<KeepaliveState>::default());
        // The write buffer is taken at the first write.
        let buf = None;
        Arc::new(Shared {
            role,
            config,
            subprotocol,
            stream: Mutex::new(stream),
            sink: SinkLock::new(Sink { buf, error: None }),
            close_sent: AtomicBool::new(false),
            close_received: AtomicBool::new(false),
            close_received_notify: Notify::new(),
            shut_down: AtomicBool::new(false),
            pending: AtomicBool::new(false),
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

    fn poll_write(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.stream()).poll_write(cx, data)
    }

    fn poll_write_vectored(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.stream()).poll_write_vectored(cx, bufs)
    }

    async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = poll_fn(|cx| self.poll_write(cx, data)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[n..];
        }
        Ok(())
    }

    /// Writes `head` then `body` with as few system calls as the stream allows.
    async fn write_all_vectored(&self, mut head: &[u8], mut body: &[u8]) -> io::Result<()> {
        while !head.is_empty() {
            let n = poll_fn(|cx| self.poll_write_vectored(cx, &[IoSlice::new(head), IoSlice::new(body)])).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_head = n.min(head.len());
            head = &head[from_head..];
            body = &body[n - from_head..];
        }
        self.write_all(body).await
    }

    async fn flush(&self) -> io::Result<()> {
        poll_fn(|cx| Pin::new(&mut *self.stream()).poll_flush(cx)).await
    }

    /// A keepalive ping went unanswered.
    pub(crate) fn keepalive_expired(&self) -> bool {
        self.keepalive.as_ref().is_some_and(|k| k.expired())
    }

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
        self.close_received_notify.notify_waiters();
    }

    /// Waits until the reader has seen the peer's close frame, or `deadline`.
    pub(crate) async fn wait_close_received(&self, deadline: Instant) {
        let wait = async {
            loop {
                let notified = self.close_received_notify.notified();
                if self.close_received() {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout_at(deadline.into(), wait).await;
    }

    /// Writes one frame, after any frames fed before it. `deadline` bounds
    /// both the wait for the sink lock and the write itself; a timeout during
    /// the write poisons the sink, since a frame may have gone out in part.
    pub(crate) async fn write_frame(
        &self,
        opcode: OpCode,
        fin: bool,
        rsv: u8,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<()> {
        self.frame(Some((opcode, fin, rsv, payload)), deadline, true).await
    }

    /// Writes one final frame now, or (`now` false) adds it to the write
    /// buffer without sending it unless the buffer is full: the general path,
    /// waiting for the sink, after [`Shared::try_feed`] or
    /// [`Shared::try_send`] did not take the frame. Fed frames leave with the
    /// next write, a flush, or when the reader is about to wait for input.
    pub(crate) async fn send_frame(
        &self,
        opcode: OpCode,
        rsv: u8,
        payload: &[u8],
        deadline: Option<Instant>,
        now: bool,
    ) -> Result<()> {
        self.frame(Some((opcode, true, rsv, payload)), deadline, now).await
    }

    /// Feeds a small data frame without waiting: when the sink is free and the
    /// frame fits under the feed limit, it is appended to the write buffer
    /// right here. `None` means the caller must take the general path.
    pub(crate) fn try_feed(&self, opcode: OpCode, rsv: u8, payload: &[u8]) -> Option<Result<()>> {
        if opcode == OpCode::Close || payload.len() >= VECTORED_THRESHOLD {
            return None;
        }
        self.sink
            .try_with(|sink| {
                if let Some(e) = self.unwritable(sink) {
                    return Some(Err(e));
                }
                if self.close_sent() {
                    return Some(Err(Error::CloseSent));
                }
                let buf = sink.buf.get_or_insert_with(|| self.new_write_buffer());
                // The frame header is at most 14 bytes.
                if buf.len() + payload.len() + 14 >= self.feed_limit() {
                    return None;
                }
                match self.role {
                    Role::Server => encode_frame(buf, opcode, true, rsv, None, payload),
                    Role::Client => {
                        let key: [u8; 4] = rand::random();
                        encode_header(buf, opcode, true, rsv, Some(key), payload.len() as u64);
                        let start = buf.len();
                        buf.extend_from_slice(payload);
                        crate::proto::mask::apply_mask(&mut buf[start..], key, 0);
                    }
                }
                self.pending.store(true, Ordering::Release);
                Some(Ok(()))
            })
            .flatten()
    }

    /// Hands back an empty write buffer: a connection holds one only while
    /// frames wait in it.
    fn release_buffer(&self, buf: BytesMut) {
        match &self.config.write_buffer_pool {
            Some(pool) => pool.put(buf),
            None => keep_spare_write_buffer(buf, self.config.write_buffer_size),
        }
    }

    /// A write buffer from the pool, or from this thread's spares, or a new one.
    fn new_write_buffer(&self) -> BytesMut {
        let size = self.config.write_buffer_size;
        match &self.config.write_buffer_pool {
            Some(pool) => pool.get(),
            None => spare_write_buffer(size),
        }
        .unwrap_or_else(|| BytesMut::with_capacity(size))
    }

    /// Fed frames wait until this many bytes are buffered: the write
    /// buffer's size, so that it never grows for small frames.
    fn feed_limit(&self) -> usize {
        self.config.write_buffer_size
    }

    /// Tries to send every fed frame without waiting: `Ready` when they all
    /// went out (or the write failed, which the next write reports), `Pending`
    /// when the caller must finish the job with [`Shared::flush_pending`]
    /// (the sink is busy, or the stream took only part). The written part is
    /// removed from the buffer either way.
    pub(crate) fn try_flush_pending(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self.poll_flush_quick(cx) {
            Some(Poll::Ready(_)) => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }

    /// Polls the write-out of fed frames while no other writer holds the
    /// sink: the waker is registered with the stream when it is full. `None`
    /// when another writer holds the sink (nothing registered: use
    /// [`Shared::flush_pending`]).
    pub(crate) fn poll_flush_quick(&self, cx: &mut Context<'_>) -> Option<Poll<Result<()>>> {
        self.sink.try_with(|sink| self.flush_now(sink, cx))
    }

    /// Sends a small final frame without waiting: appends it to the write
    /// buffer (after what was fed) and has the stream take it all at once.
    pub(crate) fn try_send(&self, cx: &mut Context<'_>, opcode: OpCode, rsv: u8, payload: &[u8]) -> TrySend {
        match self.try_feed(opcode, rsv, payload) {
            None => TrySend::NotTaken,
            Some(Err(e)) => TrySend::Done(Err(e)),
            Some(Ok(())) => match self.poll_flush_quick(cx) {
                Some(Poll::Ready(result)) => TrySend::Done(result),
                _ => TrySend::Buffered,
            },
        }
    }

    /// Writes out the write buffer without waiting; see [`Shared::try_flush_pending`].
    /// A permanent write error is reported even when nothing waits, as the
    /// general path does.
    fn flush_now(&self, sink: &mut Sink, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Some(e) = self.unwritable(sink) {
            return Poll::Ready(Err(e));
        }
        if !self.has_pending() {
            return Poll::Ready(Ok(()));
        }
        let Some(buf) = sink.buf.as_mut() else { return Poll::Ready(Ok(())) };
        let mut failed = None;
        let mut written = 0;
        while written < buf.len() {
            match self.poll_write(cx, &buf[written..]) {
                Poll::Ready(Ok(0)) => {
                    failed = Some(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                Poll::Pending => {
                    bytes::Buf::advance(buf, written);
                    return Poll::Pending;
                }
            }
        }
        if failed.is_none() {
            match Pin::new(&mut *self.stream()).poll_flush(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => failed = Some(e),
                Poll::Pending => return Poll::Pending,
            }
        }
        buf.clear();
        self.pending.store(false, Ordering::Release);
        if let Some(buf) = sink.buf.take() {
            self.release_buffer(buf);
        }
        match failed {
            Some(e) => {
                let error = Error::Io(e);
                let result = Err(error.replay());
                sink.error = Some(error);
                Poll::Ready(result)
            }
            None => Poll::Ready(Ok(())),
        }
    }

    /// Sends every frame fed so far.
    pub(crate) async fn flush_pending(&self, deadline: Option<Instant>) -> Result<()> {
        self.frame(None, deadline, true).await
    }

    /// True when fed frames wait in the write buffer.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    async fn frame(&self, frame: Option<Frame<'_>>, deadline: Option<Instant>, now: bool) -> Result<()> {
        let mut writer = match deadline {
            None => self.sink.acquire().await,
            Some(at) => tokio::time::timeout_at(at.into(), self.sink.acquire()).await.map_err(|_| Error::Timeout)?,
        };
        if let Some(e) = writer.with(|sink| self.unwritable(sink)) {
            return Err(e);
        }
        if frame.is_none() && !self.has_pending() {
            return Ok(());
        }
        if let Some((opcode, ..)) = frame {
            if self.close_sent() {
                return Err(Error::CloseSent);
            }
            if opcode == OpCode::Close {
                self.close_sent.store(true, Ordering::Release);
            }
        }
        let mut buf = writer.with(|sink| sink.buf.take()).unwrap_or_else(|| self.new_write_buffer());
        let write = self.send(&mut buf, frame, now);
        let result = match deadline {
            None => write.await.map_err(Error::Io),
            Some(at) => match tokio::time::timeout_at(at.into(), write).await {
                Ok(r) => r.map_err(Error::Io),
                Err(_) => Err(Error::Timeout),
            },
        };
        if result.is_err() {
            buf.clear();
        }
        self.pending.store(!buf.is_empty(), Ordering::Release);
        writer.with(|sink| {
            if buf.is_empty() {
                self.release_buffer(buf);
            } else {
                sink.buf = Some(buf);
            }
            if let Err(e) = &result {
                sink.error = Some(e.replay());
            }
        });
        result
    }

    /// Appends `frame` after what `buf` already holds and writes it all out,
    /// unless `now` is false and the buffer still has room.
    async fn send(&self, buf: &mut BytesMut, frame: Option<Frame<'_>>, now: bool) -> io::Result<()> {
        let feed_limit = self.feed_limit();
        if let Some((opcode, fin, rsv, payload)) = frame {
            match self.role {
                Role::Server if payload.len() >= VECTORED_THRESHOLD => {
                    encode_header(buf, opcode, fin, rsv, None, payload.len() as u64);
                    self.write_all_vectored(buf, payload).await?;
                    buf.clear();
                    return self.flush().await;
                }
                Role::Server => encode_frame(buf, opcode, fin, rsv, None, payload),
                Role::Client => {
                    // RFC 6455 §5.3: a fresh, unpredictable key for every frame.
                    let key: [u8; 4] = rand::random();
                    let chunk = self.config.write_buffer_size.max(1024);
                    encode_header(buf, opcode, fin, rsv, Some(key), payload.len() as u64);
                    let mut offset = 0;
                    for piece in payload.chunks(chunk) {
                        let start = buf.len();
                        buf.extend_from_slice(piece);
                        offset = crate::proto::mask::apply_mask(&mut buf[start..], key, offset);
                        if buf.len() >= feed_limit.max(chunk) {
                            self.write_all(buf).await?;
                            buf.clear();
                        }
                    }
                }
            }
        }
        if buf.is_empty() || (!now && buf.len() < feed_limit) {
            return Ok(());
        }
        self.write_all(buf).await?;
        buf.clear();
        self.flush().await
    }

    /// Drops the write buffer while nothing waits in it (the connection is
    /// idle); the next write takes a new one. With a pool it is already back.
    pub(crate) fn release_write_buffer(&self) {
        self.sink.try_with(|sink| {
            if sink.buf.as_ref().is_some_and(|buf| buf.is_empty()) {
                if let Some(buf) = sink.buf.take() {
                    self.release_buffer(buf);
                }
            }
        });
    }

    /// The error the next write would fail with, if any.
    pub(crate) async fn sticky_error(&self) -> Option<Error> {
        let mut writer = self.sink.acquire().await;
        writer.with(|sink| self.write_error(sink)).or_else(|| self.close_sent().then_some(Error::CloseSent))
    }

    /// The permanent write error, if there is one; what was fed is then
    /// dropped, since it can no longer go out.
    fn unwritable(&self, sink: &mut Sink) -> Option<Error> {
        let error = self.write_error(sink)?;
        if let Some(buf) = &mut sink.buf {
            buf.clear();
        }
        self.pending.store(false, Ordering::Release);
        Some(error)
    }

    /// The permanent write error: the first failure, or the stream being shut down.
    fn write_error(&self, sink: &Sink) -> Option<Error> {
        match &sink.error {
            Some(e) => Some(e.replay()),
            None if self.shut_down.load(Ordering::Acquire) => {
                Some(if self.close_sent() { Error::CloseSent } else { Error::Io(io::ErrorKind::NotConnected.into()) })
            }
            None => None,
        }
    }

    /// Shuts down the write direction of the stream (a TCP FIN), once. It
    /// does not wait for the sink lock, so a writer blocked on a peer that does
    /// not read cannot hold it up; later writes fail.
    pub(crate) async fn shutdown(&self) {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = poll_fn(|cx| Pin::new(&mut *self.stream()).poll_shutdown(cx)).await;
    }

    /// Sends a close frame unless one was sent already.
    pub(crate) async fn send_close(&self, payload: &[u8], deadline: Option<Instant>) -> Result<()> {
        match self.write_frame(OpCode::Close, true, 0, payload, deadline).await {
            Err(Error::CloseSent) => Ok(()),
            other => other,
        }
    }
}
