//! The read half: drives the [`Decoder`] over the stream, runs the control
//! handlers, and hands data messages to the application whole
//! ([`ReadHalf::read_message`]) or streamed ([`ReadHalf::next_reader`]).

use crate::config::Config;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;

use super::park::Park;
use super::shared::{Shared, Stream, Timer};
use super::{Handle, Message};
use crate::error::{CloseError, Error, Result};
use crate::handlers::{
    default_close_handler, default_ping_handler, default_pong_handler, CloseHandler, ControlContext, Handlers,
    PingPongHandler,
};
use crate::proto::close::{closed_by_peer, failing_close};
use crate::proto::connection::REPLY_TIMEOUT;
use crate::proto::deflate::{Deflater, Inflater};
use crate::proto::outbox::Origin;
use crate::proto::{CloseFrame, Decoder, Event, MessageType, OpCode, ProtocolError, Role};

/// A message's bytes are copied out of the read buffer when that buffer's
/// allocation is larger than this and more than four times the message:
/// a small message kept by the application then does not keep a buffer
/// that grew for a large frame.
const PIN_LIMIT: usize = 64 * 1024;

/// The most the reader reserves ahead for a frame whose payload is still
/// arriving. Up to this size a frame's payload lands in one allocation, so
/// `read_message` joins its pieces without copying; a larger one is joined
/// from pieces of this size. (Untouched reserved pages cost no memory.)
const MAX_RESERVE: u64 = 1 << 20;

/// Frames at least this large are read into room reserved for them.
const LARGE_FRAME: usize = 64 * 1024;

/// How a message begins.
enum Begin {
    Streamed(MessageType),
    Whole(MessageType, BytesMut),
}

/// What the read loop hands up to the message-level methods.
pub(crate) enum DataEvent {
    Start(MessageType),
    /// A whole message in one step.
    Whole(MessageType, BytesMut),
    Data(BytesMut),
    End,
}

/// The receiving half of a connection (see [`crate::Conn::split`]).
///
/// Replies that the protocol obliges (pong, close echo) are still sent from
/// here, through the shared write side, while the [`crate::WriteHalf`] is used
/// from another task.
pub struct ReadHalf<S: Stream> {
    pub(crate) shared: Arc<Shared<S>>,
    buf: BytesMut,
    decoder: Decoder,
    /// The permanent error: once set, every read returns it again.
    error: Option<Error>,
    /// The read deadline's timer (which also holds the deadline).
    sleep: Option<Pin<Box<Sleep>>>,
    /// `None` while every handler is the default (boxed: most connections
    /// keep the defaults, and every idle one holds this).
    handlers: Option<Box<Handlers>>,
    /// The type of the message `read_message` is putting together, and what
    /// arrived of it (`assembled`), kept here so that a dropped call loses
    /// nothing.
    assembling: Option<MessageType>,
    assembled: BytesMut,
    /// The size of the allocation behind `buf`, as far as it is known.
    buf_alloc: usize,
    /// Our close frame is queued: wait (up to this timer) for it to leave,
    /// then shut the stream down.
    closing: Option<Box<Timer>>,
    /// With compression context takeover, what parks the compression states
    /// while the connection is idle.
    park: Option<Box<Park>>,
    /// The `futures` stream has returned its last item.
    #[cfg(feature = "futures")]
    pub(super) stream_ended: bool,
}

impl<S: Stream> fmt::Debug for ReadHalf<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadHalf")
            .field("role", &self.shared.role)
            .field("buffered", &self.buf.len())
            .field("error", &self.error)
            .finish()
    }
}

impl<S: Stream> ReadHalf<S> {
    pub(crate) fn new(
        shared: Arc<Shared<S>>,
        config: &Config,
        early: BytesMut,
        deflater: Option<Arc<std::sync::Mutex<Deflater>>>,
    ) -> Self {
        let mut takes_over = false;
        let mut decoder = Decoder::new(shared.role);
        decoder.set_max_message_size(config.read_limit);
        decoder.set_max_frame_size(config.max_frame_size);
        decoder.set_max_fragments(config.max_fragments);
        if let Some(params) = &config.deflate {
            // The peer's side of the agreement says whether it keeps its context.
            let (peer_resets, peer_bits) = match shared.role {
                Role::Server => (params.client_no_context_takeover, params.client_max_window_bits),
                Role::Client => (params.server_no_context_takeover, params.server_max_window_bits),
            };
            decoder.set_inflater(Some(Inflater::with_window_bits(peer_resets, peer_bits)));
            takes_over = !peer_resets;
        }
        let park = Park::new(config.compression_park_after, takes_over, deflater);
        ReadHalf {
            shared,
            buf_alloc: early.capacity(),
            buf: early,
            decoder,
            error: None,
            sleep: None,
            handlers: None,
            assembling: None,
            assembled: BytesMut::new(),
            closing: None,
            park,
            #[cfg(feature = "futures")]
            stream_ended: false,
        }
    }

    /// The stream, when this half holds the connection's last reference;
    /// otherwise the half, unchanged.
    #[allow(clippy::result_large_err)]
    pub(super) fn try_into_stream(self) -> std::result::Result<S, Self> {
        let ReadHalf {
            shared,
            buf,
            decoder,
            error,
            sleep,
            handlers,
            assembling,
            assembled,
            buf_alloc,
            closing,
            park,
            #[cfg(feature = "futures")]
            stream_ended,
        } = self;
        match Arc::try_unwrap(shared) {
            Ok(shared) => Ok(shared.into_stream()),
            Err(shared) => Err(ReadHalf {
                shared,
                buf,
                decoder,
                error,
                sleep,
                handlers,
                assembling,
                assembled,
                buf_alloc,
                closing,
                park,
                #[cfg(feature = "futures")]
                stream_ended,
            }),
        }
    }

    /// Reads the next whole data message. Control frames that arrive first are
    /// handled by the handlers. A close from the peer ends in
    /// [`Error::Closed`]; every error is permanent.
    ///
    /// Cancel safety: this method is cancel-safe. Dropped before it returns
    /// (a `select!` with a timer, say), it loses nothing: what arrived of a
    /// message is kept, and the next call goes on with it.
    pub async fn read_message(&mut self) -> Result<Message> {
        poll_fn(|cx| self.poll_read_message(cx)).await
    }

    /// [`ReadHalf::read_message`] in poll form.
    pub(crate) fn poll_read_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message>> {
        // The common case, done without waiting: a whole message is buffered.
        if self.assembling.is_none() && self.closing.is_none() && self.error.is_none() {
            match self.decoder.decode_message(&mut self.buf) {
                Ok(Some((kind, data))) => return Poll::Ready(Ok(self.message(kind, data))),
                Ok(None) => {}
                // Reported by the general path below, after the close frame.
                Err(violation) => self.fail(violation),
            }
        }
        self.poll_message(cx)
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message>> {
        loop {
            match ready!(self.poll_event(cx))? {
                DataEvent::Whole(kind, data) => return Poll::Ready(Ok(self.message(kind, data))),
                DataEvent::Start(kind) => self.assembling = Some(kind),
                // Pieces of one frame are adjacent in the read buffer, so
                // joining them is free; other pieces are copied. Without a
                // message under way, these are the rest of one whose
                // `MessageReader` was dropped: skipped.
                DataEvent::Data(chunk) => {
                    if self.assembling.is_some() {
                        self.assembled.unsplit(chunk);
                    }
                }
                DataEvent::End => {
                    if let Some(kind) = self.assembling.take() {
                        let data = std::mem::take(&mut self.assembled);
                        return Poll::Ready(Ok(self.message(kind, data)));
                    }
                }
            }
        }
    }

    /// A message handed to the application, copied out of a read buffer
    /// much larger than itself (see [`PIN_LIMIT`]).
    #[inline]
    fn message(&self, kind: MessageType, data: BytesMut) -> Message {
        let data = if self.buf_alloc > PIN_LIMIT && data.len() < self.buf_alloc / 4 {
            Bytes::copy_from_slice(&data)
        } else {
            data.freeze()
        };
        Message { kind, data }
    }

    /// Starts reading the next data message and returns its type and a reader
    /// that streams its payload without holding it whole. Whatever is left of
    /// a previous streamed message is skipped first; a message that a
    /// dropped [`ReadHalf::read_message`] had begun is continued.
    ///
    /// Cancel safety: this method is cancel-safe.
    pub async fn next_reader(&mut self) -> Result<(MessageType, MessageReader<'_, S>)> {
        if let Some(kind) = self.assembling.take() {
            let chunk = std::mem::take(&mut self.assembled);
            return Ok((kind, MessageReader { half: self, chunk, done: false }));
        }
        Ok(match self.next_start().await? {
            Begin::Whole(kind, chunk) => (kind, MessageReader { half: self, chunk, done: true }),
            Begin::Streamed(kind) => (kind, MessageReader { half: self, chunk: BytesMut::new(), done: false }),
        })
    }

    /// Waits for the next message to begin, skipping what is left of the
    /// previous one.
    async fn next_start(&mut self) -> Result<Begin> {
        poll_fn(|cx| loop {
            match ready!(self.poll_event(cx))? {
                DataEvent::Start(kind) => return Poll::Ready(Ok(Begin::Streamed(kind))),
                DataEvent::Whole(kind, data) => return Poll::Ready(Ok(Begin::Whole(kind, data))),
                DataEvent::Data(_) | DataEvent::End => {}
            }
        })
        .await
    }

    /// Sets the largest message accepted, in bytes; `None` removes the limit.
    /// A larger message fails the connection with 1009 and
    /// [`Error::is_read_limit`].
    pub fn set_read_limit(&mut self, limit: Option<u64>) {
        self.decoder.set_max_message_size(limit);
    }

    /// The read limit in force.
    pub fn read_limit(&self) -> Option<u64> {
        self.decoder.max_message_size()
    }

    /// Sets the time after which a waiting read fails with [`Error::Timeout`]
    /// (permanently); `None` clears it.
    pub fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        self.sleep = deadline.map(|at| Box::pin(tokio::time::sleep_until(at.into())));
    }

    /// Whether the connection holds compression state (zlib's) right now:
    /// false without compression, and while an idle connection with context
    /// takeover has its states parked (see
    /// [`crate::Config::compression_park_after`]). The compressor is seen
    /// from here only when it keeps its context.
    pub fn holds_compression_state(&self) -> bool {
        self.decoder.inflater_holds_state() || self.park.as_ref().is_some_and(|park| park.deflater_holds_state())
    }

    /// The read deadline in force.
    pub fn read_deadline(&self) -> Option<Instant> {
        self.sleep.as_ref().map(|sleep| sleep.deadline().into_std())
    }

    /// Sets the handler for received pings; `None` restores the default (reply
    /// with a pong carrying the same payload).
    pub fn set_ping_handler(&mut self, handler: Option<PingPongHandler>) {
        self.handlers.get_or_insert_with(Box::default).set_ping(handler);
    }

    /// The handler for received pings.
    pub fn ping_handler(&self) -> PingPongHandler {
        self.handlers.as_ref().map_or_else(default_ping_handler, |h| h.ping.clone())
    }

    /// Sets the handler for received pongs; `None` restores the default (do nothing).
    pub fn set_pong_handler(&mut self, handler: Option<PingPongHandler>) {
        self.handlers.get_or_insert_with(Box::default).set_pong(handler);
    }

    /// The handler for received pongs.
    pub fn pong_handler(&self) -> PingPongHandler {
        self.handlers.as_ref().map_or_else(default_pong_handler, |h| h.pong.clone())
    }

    /// Sets the handler for a received close frame; `None` restores the default
    /// (echo the status code). The read that received the close still returns
    /// [`Error::Closed`] after the handler ran, unless the handler failed.
    pub fn set_close_handler(&mut self, handler: Option<CloseHandler>) {
        self.handlers.get_or_insert_with(Box::default).set_close(handler);
    }

    /// The handler for a received close frame.
    pub fn close_handler(&self) -> CloseHandler {
        self.handlers.as_ref().map_or_else(default_close_handler, |h| h.close.clone())
    }

    /// A handle that can send control frames and close the connection from any task.
    pub fn handle(&self) -> Handle<S> {
        Handle::new(self.shared.clone())
    }

    /// The subprotocol agreed in the handshake.
    pub fn subprotocol(&self) -> Option<&str> {
        self.shared.subprotocol.as_deref()
    }

    /// How the connection was closed, once reads ended with a close: the
    /// peer's code and reason (1005 when its close had no code, 1006 when
    /// the stream ended without a close frame). `None` while reads go on and
    /// after reads ended otherwise (see the error they returned).
    pub fn close_error(&self) -> Option<&CloseError> {
        self.error.as_ref().and_then(Error::close_error)
    }

    /// What a dropped `read_message` had received of a message, if it
    /// left one under way: the caller goes on with the rest.
    pub(crate) fn take_assembling(&mut self) -> Option<BytesMut> {
        self.assembling.take().map(|_| std::mem::take(&mut self.assembled))
    }

    /// The permanent read error, once there is one.
    pub(crate) fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// Reads and discards until the peer's close frame (or any error) arrives.
    pub(crate) async fn drain_until_closed(&mut self) {
        poll_fn(|cx| self.poll_drain(cx)).await;
    }

    /// Reads and discards until the read side ends (the peer's close, or
    /// any error).
    pub(crate) fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if ready!(self.poll_event(cx)).is_err() {
                return Poll::Ready(());
            }
        }
    }

    /// The read loop: returns the next data event, handling control frames,
    /// sending obliged replies and failing the connection on violations.
    pub(crate) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<DataEvent>> {
        loop {
            if self.closing.is_some() {
                ready!(self.poll_closing(cx));
            }
            if let Some(e) = &self.error {
                return Poll::Ready(Err(e.replay()));
            }
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(Event::Start { kind, .. })) => {
                    // Make room for the rest of the frame next to what has
                    // arrived of it, so that its pieces stay adjacent.
                    let rest = self.decoder.payload_remaining().min(MAX_RESERVE) as usize;
                    if rest >= LARGE_FRAME && rest > self.buf.len() {
                        let additional = rest - self.buf.len();
                        self.reserve(additional);
                    }
                    return Poll::Ready(Ok(DataEvent::Start(kind)));
                }
                Ok(Some(Event::Data(chunk))) => return Poll::Ready(Ok(DataEvent::Data(chunk))),
                Ok(Some(Event::End)) => return Poll::Ready(Ok(DataEvent::End)),
                Ok(Some(Event::Message { kind, data })) => return Poll::Ready(Ok(DataEvent::Whole(kind, data))),
                Ok(Some(Event::Ping(payload))) => {
                    let handler = self.handlers.as_ref().map_or_else(default_ping_handler, |h| h.ping.clone());
                    self.run_handler(false, |ctx| handler(&payload, ctx));
                }
                Ok(Some(Event::Pong(payload))) => {
                    if let Some(keepalive) = &self.shared.keepalive {
                        keepalive.pong_received();
                    }
                    let handler = self.handlers.as_ref().map_or_else(default_pong_handler, |h| h.pong.clone());
                    self.run_handler(false, |ctx| handler(&payload, ctx));
                }
                Ok(Some(Event::Close(frame))) => self.on_close(frame),
                Ok(None) => match self.poll_fill(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => self.error = Some(e),
                    Poll::Pending => {
                        // About to wait for input: first send what was fed
                        // (the peer may be waiting for it), and go on
                        // sending it as the stream drains while we wait.
                        self.shared.poll_write_idle(cx);
                        return Poll::Pending;
                    }
                },
                Err(violation) => self.fail(violation),
            }
        }
    }

    fn on_close(&mut self, frame: Option<CloseFrame>) {
        self.shared.mark_close_received();
        let closed = closed_by_peer(frame.as_ref());
        let handler = self.handlers.as_ref().map_or_else(default_close_handler, |h| h.close.clone());
        self.run_handler(true, |ctx| handler(frame.as_ref(), ctx));
        self.error.get_or_insert(closed);
    }

    /// Runs a handler and queues the replies it asked for. After a close
    /// frame (`closing`), the stream is shut down once our close has gone
    /// out: the close handshake is then complete (RFC 6455 §7.1.1).
    fn run_handler(&mut self, closing: bool, handler: impl FnOnce(&mut ControlContext<'_>) -> Result<()>) {
        let mut replies = Vec::new();
        let before = self.read_deadline();
        let mut deadline = before;
        let result = handler(&mut ControlContext { replies: &mut replies, read_deadline: &mut deadline });
        if deadline != before {
            self.set_read_deadline(deadline);
        }
        if let Err(e) = result {
            self.error = Some(e);
        }
        for (opcode, payload) in replies {
            // Replies are queued, not waited for: the reader goes on reading.
            // A pong may replace an earlier one that could not leave yet; a
            // reply after our close, or after the write side failed, is moot.
            let origin = if opcode == OpCode::Pong { Origin::ReaderPong } else { Origin::User };
            let _ = self.shared.queue_control(origin, opcode, &payload);
        }
        if closing && self.shared.close_sent() {
            self.start_closing();
        }
    }

    /// Fails the connection (RFC 6455 §7.1.7): send a close frame with the
    /// code the violation calls for, then shut the stream down.
    fn fail(&mut self, violation: ProtocolError) {
        let _ = self.shared.queue_control(Origin::User, OpCode::Close, &failing_close(&violation));
        self.error = Some(Error::Protocol(violation));
        self.start_closing();
    }

    /// Arranges for the stream to be shut down once our close frame is out,
    /// or after [`REPLY_TIMEOUT`] (or the read deadline) if it cannot leave.
    fn start_closing(&mut self) {
        let mut at = Instant::now() + REPLY_TIMEOUT;
        if let Some(deadline) = self.read_deadline() {
            at = at.min(deadline);
        }
        self.closing = Some(Box::new(Timer::new(Some(at))));
    }

    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(timer) = &mut self.closing {
            if self.shared.poll_drained(cx).is_pending() {
                ready!(timer.poll(cx));
            }
            ready!(self.shared.poll_shutdown(cx));
            self.closing = None;
        }
        Poll::Ready(())
    }

    /// Reserves room in the read buffer, keeping track of the allocation
    /// behind it.
    fn reserve(&mut self, additional: usize) {
        let before = self.buf.as_ptr();
        self.buf.reserve(additional);
        self.buf_alloc = if self.buf.as_ptr() != before {
            // Moved: to a new allocation, or to the start of its own.
            self.buf.capacity()
        } else {
            self.buf_alloc.max(self.buf.capacity())
        };
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if let Some(e) = self.shared.reads_ended() {
            return Poll::Ready(Err(e));
        }
        let remaining = self.decoder.payload_remaining();
        let want = if remaining >= LARGE_FRAME as u64 {
            // Inside a large frame: read at most its rest, into the room kept for it.
            remaining.min(MAX_RESERVE) as usize
        } else {
            self.shared.settings.read_buffer_size.max(remaining as usize).max(64)
        };
        let polled = if self.buf.is_empty() && remaining == 0 {
            // Nothing buffered: read into one of the thread's spare buffers,
            // and give it back if nothing came, so that a connection waiting
            // for input holds no read buffer of its own.
            let spare = take_spare_read_buffer(std::mem::take(&mut self.buf));
            let empty = std::mem::replace(&mut self.buf, spare);
            self.reserve(want);
            let mut reader = SharedReader(&*self.shared);
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut reader), cx, &mut self.buf);
            if !matches!(read, Poll::Ready(Ok(n)) if n > 0) {
                keep_spare_read_buffer(std::mem::replace(&mut self.buf, empty));
            }
            read
        } else {
            self.reserve(want);
            let mut reader = SharedReader(&*self.shared);
            tokio_util::io::poll_read_buf(Pin::new(&mut reader), cx, &mut self.buf)
        };
        match polled {
            Poll::Ready(Ok(0)) => Poll::Ready(Err(Error::abnormal_closure())),
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(Error::Io(e))),
            Poll::Pending => {
                self.shared.register_reader(cx.waker());
                // Ended between the check above and the registration.
                if let Some(e) = self.shared.reads_ended() {
                    return Poll::Ready(Err(e));
                }
                if let Some(park) = &mut self.park {
                    park.poll(cx, &mut self.decoder);
                }
                self.poll_deadline(cx)
            }
        }
    }

    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match &mut self.sleep {
            Some(sleep) => match sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(Error::Timeout)),
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }
}

/// The most emptied read buffers each thread keeps for reuse.
const SPARE_READ_BUFFERS: usize = 16;

thread_local! {
    static READ_SPARES: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A read buffer for a connection that has none buffered: one of this
/// thread's spares if there is one (else `empty`, which may still share the
/// allocation of messages already handed out; `reserve` then reclaims it or
/// allocates afresh).
///
/// A spare is an emptied buffer whose messages may still be alive: when they
/// have all been dropped, `reserve` takes its whole allocation back without
/// allocating; otherwise it allocates a new one and leaves the old to them.
fn take_spare_read_buffer(empty: BytesMut) -> BytesMut {
    READ_SPARES.with(|spares| spares.try_borrow_mut().ok().and_then(|mut spares| spares.pop())).unwrap_or(empty)
}

/// Keeps an emptied read buffer for the next read on this thread, or drops it
/// when enough are kept.
fn keep_spare_read_buffer(buf: BytesMut) {
    if !buf.is_empty() {
        return;
    }
    READ_SPARES.with(|spares| {
        if let Ok(mut spares) = spares.try_borrow_mut() {
            if spares.len() < SPARE_READ_BUFFERS {
                spares.push(buf);
            }
        }
    });
}

struct SharedReader<'a, S>(&'a Shared<S>);

impl<S: Stream> AsyncRead for SharedReader<'_, S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.0.poll_read(cx, buf)
    }
}

/// Streams the payload of one data message (an [`AsyncRead`]), ending at the
/// message's end. Control frames that arrive between its fragments are handled
/// while reading. Text is UTF-8 checked as it goes: invalid data fails the
/// read and the connection (1007).
pub struct MessageReader<'a, S: Stream> {
    half: &'a mut ReadHalf<S>,
    chunk: BytesMut,
    done: bool,
}

impl<S: Stream> fmt::Debug for MessageReader<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageReader").field("buffered", &self.chunk.len()).field("done", &self.done).finish()
    }
}

impl<S: Stream> MessageReader<'_, S> {
    /// Reads the next piece of the payload, as it arrived; `None` at the end of
    /// the message. Avoids the copy that [`AsyncRead`] makes. Cancel-safe.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if !self.chunk.is_empty() {
            return Ok(Some(std::mem::take(&mut self.chunk).freeze()));
        }
        poll_fn(|cx| self.poll_chunk(cx)).await.map(|c| c.map(BytesMut::freeze))
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<BytesMut>>> {
        while !self.done {
            match ready!(self.half.poll_event(cx))? {
                DataEvent::Data(chunk) if chunk.is_empty() => {}
                DataEvent::Data(chunk) => return Poll::Ready(Ok(Some(chunk))),
                DataEvent::End => self.done = true,
                DataEvent::Start(_) | DataEvent::Whole(..) => {}
            }
        }
        Poll::Ready(Ok(None))
    }
}

impl<S: Stream> AsyncRead for MessageReader<'_, S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.chunk.is_empty() {
            match ready!(this.poll_chunk(cx)) {
                Ok(Some(chunk)) => this.chunk = chunk,
                Ok(None) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        let n = this.chunk.len().min(out.remaining());
        out.put_slice(&this.chunk.split_to(n));
        Poll::Ready(Ok(()))
    }
}
