//! `futures` [`Stream`](futures_core::Stream) and [`Sink`] for [`Conn`] and its
//! halves (feature `futures`).
//!
//! The stream yields whole data messages, as [`ReadHalf::read_message`]
//! does, and ends when the peer closes the connection normally (codes 1000,
//! 1001 or none); any other end is yielded as one error before the stream
//! ends. The sink feeds messages as [`WriteHalf::feed_message`] does and
//! writes them out on `poll_flush`; `poll_close` runs the close handshake.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Instant;

use futures_core::stream::FusedStream;
use futures_sink::Sink;

use super::shared::{poll_timed, Frame, Mode, Shared, Stream, Timer};
use super::{Conn, Message, ReadHalf, WriteHalf};
use crate::error::{Error, Result};
use crate::proto::outbox::{ControlId, Origin};
use crate::proto::sender::is_valid_control;
use crate::proto::{CloseCode, CloseFrame, MessageType, OpCode};

/// Whether a read error is the peer's normal close, which ends the stream
/// without an error.
fn is_normal_close(error: &Error) -> bool {
    error.is_close(&[CloseCode::NORMAL, CloseCode::GOING_AWAY, CloseCode::NO_STATUS_RECEIVED])
}

impl<S: Stream> ReadHalf<S> {
    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        if self.stream_ended {
            return Poll::Ready(None);
        }
        match ready!(self.poll_read_message(cx)) {
            Ok(message) => Poll::Ready(Some(Ok(message))),
            Err(e) => {
                self.stream_ended = true;
                Poll::Ready(if is_normal_close(&e) { None } else { Some(Err(e)) })
            }
        }
    }
}

/// Whole data messages, as [`ReadHalf::read_message`] returns them.
///
/// Control frames are handled by the handlers on the way, as with
/// `read_message`. The stream ends (`None`) when the peer closes the
/// connection with 1000, 1001 or no code ([`ReadHalf::close_error`] tells
/// which); any other end — another close code, a protocol violation, an I/O
/// error, a deadline — is yielded once as an error, and then the stream ends.
///
/// Cancel safety: `poll_next` keeps what arrived of a message across polls,
/// so `next()` may be dropped (by `select!` or a timeout) without loss.
impl<S: Stream> futures_core::Stream for ReadHalf<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_stream(cx)
    }
}

impl<S: Stream> FusedStream for ReadHalf<S> {
    fn is_terminated(&self) -> bool {
        self.stream_ended
    }
}

/// The stream of the read half; see the impl on [`ReadHalf`]. Messages
/// that the sink's `poll_close` read while it waited for the peer's close
/// come first.
impl<S: Stream> futures_core::Stream for Conn<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Conn { read, write } = self.get_mut();
        let Some(state) = write.sink.as_deref_mut() else {
            return read.poll_stream(cx);
        };
        if let Some(message) = state.stash.pop_front() {
            return Poll::Ready(Some(Ok(message)));
        }
        let polled = read.poll_stream(cx);
        // The stream and a close under way (from another task, through a
        // `StreamExt::split`) read the same stream, whose wake-up goes to
        // the last task that polled it: each wakes the other.
        if let Some(waker) = state.close_waker.take() {
            waker.wake();
        }
        if polled.is_pending() && !state.stream_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            state.stream_waker = Some(cx.waker().clone());
        }
        polled
    }
}

impl<S: Stream> FusedStream for Conn<S> {
    fn is_terminated(&self) -> bool {
        self.read.stream_ended
    }
}

/// What a half keeps between the sink's calls (boxed, made on first use).
#[derive(Default)]
pub(crate) struct SinkState {
    /// A message accepted by `start_send` while a streamed message was
    /// open, not yet queued.
    pending: Option<Message>,
    /// A control frame sent through the sink that is not out yet, and
    /// whether it is a close (never taken back).
    control: Option<(ControlId, bool)>,
    /// The queue position a flush under way waits for.
    flush_end: Option<u64>,
    /// The write deadline.
    timer: Timer,
    /// The close handshake, once `poll_close` started it.
    close: Option<Closing>,
    /// Messages a [`Conn`]'s `poll_close` read while it waited for the
    /// peer's close, for its stream (at most [`STASH_MESSAGES`] and
    /// [`STASH_BYTES`]; more are dropped).
    stash: VecDeque<Message>,
    /// The tasks polling a [`Conn`]'s stream and its `poll_close`.
    stream_waker: Option<Waker>,
    close_waker: Option<Waker>,
}

/// How many messages that arrive during the close handshake are kept for
/// the stream, and how many bytes of them.
const STASH_MESSAGES: usize = 64;
const STASH_BYTES: usize = 1 << 20;

impl SinkState {
    fn stash(&mut self, message: Message) {
        let bytes: usize = self.stash.iter().map(|m| m.data.len()).sum();
        if self.stash.len() < STASH_MESSAGES && bytes + message.data.len() <= STASH_BYTES {
            self.stash.push_back(message);
        }
        if let Some(waker) = self.stream_waker.take() {
            waker.wake();
        }
    }
}

/// The steps of the sink's close handshake.
struct Closing {
    step: CloseStep,
    /// The close timeout, from the first `poll_close`.
    timer: Timer,
    /// Why the close frame could not be sent.
    failed: Option<Error>,
}

enum CloseStep {
    /// Write out what the sink holds.
    Flush,
    /// Queue the close frame (unless one was sent) and wait until it is out.
    Send(Option<ControlId>),
    /// Wait for the peer's close: read and discard (a whole [`Conn`]), or
    /// wait for the read half in another task to see it.
    AwaitPeer(Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>),
    /// Shut the stream down.
    Finish,
    Done,
}

impl<S: Stream> WriteHalf<S> {
    /// Runs `f` on the sink's state, made on first use.
    fn with_sink<R>(&mut self, f: impl FnOnce(&mut Self, &mut SinkState) -> R) -> R {
        let mut state = self.sink.take().unwrap_or_default();
        let result = f(self, &mut state);
        self.sink = Some(state);
        result
    }

    /// Queues what the sink holds (a message that had to wait for a
    /// streamed message to end) and waits for a control frame sent through
    /// the sink to leave.
    fn poll_sink_drive(&mut self, cx: &mut Context<'_>, state: &mut SinkState) -> Poll<Result<()>> {
        state.timer.set(self.deadline);
        if self.open.is_some() {
            // A streamed message left unfinished ends before anything else.
            ready!(self.poll_finish(cx, true)).map_err(Error::from)?;
        }
        if let Some(message) = state.pending.take() {
            self.queue_data(&message)?;
        }
        if let Some((id, is_close)) = state.control {
            let shared = &*self.shared;
            let result = match shared.poll_control(cx, id) {
                Poll::Ready(result) => result,
                Poll::Pending => {
                    ready!(state.timer.poll(cx));
                    if is_close || !shared.withdraw(id) {
                        shared.fail_writes(Error::Timeout);
                    }
                    Err(Error::Timeout)
                }
            };
            state.control = None;
            result?;
        }
        Poll::Ready(Ok(()))
    }

    /// What the sink holds is queued, and the write buffer has room.
    fn poll_sink_ready(&mut self, cx: &mut Context<'_>, state: &mut SinkState) -> Poll<Result<()>> {
        ready!(self.poll_sink_drive(cx, state))?;
        let shared = &*self.shared;
        poll_timed(shared, &mut state.timer, cx, |cx| shared.poll_room(cx, Mode::Feed, 0))
    }

    /// Takes a message from `start_send`: a control frame is queued to go
    /// ahead of data not yet queued, a data message is queued as one fed
    /// frame (compressed as the connection's settings say) — unless a
    /// streamed message is still open, when it waits for the next
    /// `poll_ready` or `poll_flush`.
    fn sink_send(&mut self, state: &mut SinkState, message: Message) -> Result<()> {
        if state.close.is_some() {
            return Err(Error::CloseSent);
        }
        // The `Sink` contract: `poll_ready` returned Ready before each `start_send`.
        if state.pending.is_some() || state.control.is_some() {
            return Err(Error::InvalidRequest("start_send without poll_ready".into()));
        }
        if message.kind.is_control() {
            let id = self.shared.queue_control(Origin::User, message.kind.opcode(), &message.data)?;
            state.control = Some((id, message.kind == MessageType::Close));
            return Ok(());
        }
        if self.open.is_some() {
            state.pending = Some(message);
            return Ok(());
        }
        self.queue_data(&message)
    }

    /// Queues a data message as one fed frame, over the write buffer's
    /// limit if need be (`poll_ready` waited for room).
    fn queue_data(&mut self, message: &Message) -> Result<()> {
        let data = &message.data[..];
        let frame = Frame { opcode: message.kind.opcode(), fin: true, rsv: 0, payload: data };
        if !self.sender.compresses(data.len()) {
            return self.shared.queue_frame(frame, Mode::Feed, true).map(drop);
        }
        let (rsv, payload) = self.sender.message(data);
        let queued = self.shared.queue_frame(Frame { rsv, payload, ..frame }, Mode::Feed, true);
        if queued.is_err() {
            self.sender.message_lost();
        }
        queued.map(drop)
    }

    /// Queues what the sink holds and waits until everything queued is out.
    fn poll_sink_flush(&mut self, cx: &mut Context<'_>, state: &mut SinkState) -> Poll<Result<()>> {
        ready!(self.poll_sink_drive(cx, state))?;
        let shared = &*self.shared;
        let end = *state.flush_end.get_or_insert_with(|| shared.queued());
        let result = ready!(poll_timed(shared, &mut state.timer, cx, |cx| shared.poll_flushed(cx, end)));
        state.flush_end = None;
        Poll::Ready(result)
    }

    /// The close handshake: write out what the sink holds, send a normal
    /// close (unless a close was sent), wait up to the close timeout for the
    /// peer's close — reading and discarding through `read` when it is
    /// given, else for the read half to see it — and shut the stream down.
    fn poll_sink_close(
        &mut self,
        cx: &mut Context<'_>,
        state: &mut SinkState,
        read: Option<&mut ReadHalf<S>>,
    ) -> Poll<Result<()>> {
        let close_timeout = self.shared.settings.close_timeout;
        let mut closing = state.close.take().unwrap_or_else(|| Closing {
            step: CloseStep::Flush,
            timer: Timer::new(Some(Instant::now() + close_timeout)),
            failed: None,
        });
        let polled = self.poll_close_steps(cx, state, &mut closing, read);
        state.close = Some(closing);
        polled
    }

    fn poll_close_steps(
        &mut self,
        cx: &mut Context<'_>,
        state: &mut SinkState,
        closing: &mut Closing,
        mut read: Option<&mut ReadHalf<S>>,
    ) -> Poll<Result<()>> {
        let shared = self.shared.clone();
        loop {
            match &mut closing.step {
                CloseStep::Flush => {
                    if let Err(e) = ready!(self.poll_sink_flush(cx, state)) {
                        closing.failed = Some(e);
                        closing.step = CloseStep::Finish;
                    } else {
                        closing.step = CloseStep::Send(None);
                    }
                }
                CloseStep::Send(id) => {
                    let id = match *id {
                        Some(id) => id,
                        None => match shared.queue_control(Origin::User, OpCode::Close, &normal_close()) {
                            Ok(new) => {
                                closing.step = CloseStep::Send(Some(new));
                                new
                            }
                            Err(Error::CloseSent) => {
                                closing.step = CloseStep::AwaitPeer(None);
                                continue;
                            }
                            Err(e) => {
                                closing.failed = Some(e);
                                closing.step = CloseStep::Finish;
                                continue;
                            }
                        },
                    };
                    let sent = match shared.poll_control(cx, id) {
                        Poll::Ready(result) => result,
                        Poll::Pending => {
                            ready!(closing.timer.poll(cx));
                            Err(Error::Timeout)
                        }
                    };
                    closing.step = match sent {
                        Ok(()) => CloseStep::AwaitPeer(None),
                        Err(e) => {
                            closing.failed = Some(e);
                            CloseStep::Finish
                        }
                    };
                }
                CloseStep::AwaitPeer(wait) => {
                    let peer_done = match read.as_deref_mut() {
                        Some(read) => poll_until_peer_close(read, state, cx).is_ready(),
                        None => wait
                            .get_or_insert_with(|| Box::pin(wait_close_received(shared.clone())))
                            .as_mut()
                            .poll(cx)
                            .is_ready(),
                    };
                    if !peer_done {
                        ready!(closing.timer.poll(cx));
                    }
                    closing.step = CloseStep::Finish;
                }
                CloseStep::Finish => {
                    ready!(shared.poll_finish_close(cx));
                    closing.step = CloseStep::Done;
                }
                CloseStep::Done => {
                    return Poll::Ready(match &closing.failed {
                        Some(e) => Err(e.replay()),
                        None => Ok(()),
                    });
                }
            }
        }
    }
}

/// Reads until the read side ends (the peer's close, or an error), keeping
/// the messages that arrive for the stream.
fn poll_until_peer_close<S: Stream>(read: &mut ReadHalf<S>, state: &mut SinkState, cx: &mut Context<'_>) -> Poll<()> {
    loop {
        if read.error().is_some() {
            if let Some(waker) = state.stream_waker.take() {
                waker.wake();
            }
            return Poll::Ready(());
        }
        match read.poll_read_message(cx) {
            Poll::Ready(Ok(message)) => state.stash(message),
            Poll::Ready(Err(_)) => {}
            Poll::Pending => {
                if !state.close_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    state.close_waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
        }
    }
}

/// The payload of the sink's close frame.
fn normal_close() -> bytes::Bytes {
    CloseFrame::new(CloseCode::NORMAL, "").encode()
}

/// Waits (without a bound) until the read half has seen the peer's close.
async fn wait_close_received<S: Stream>(shared: Arc<Shared<S>>) {
    shared.until_close_received().await;
}

/// Messages are fed, as with [`WriteHalf::feed_message`], and leave on
/// `poll_flush` (or when the write buffer fills, or when the read side
/// waits for input). Control messages (ping, pong, close; at most 125
/// bytes) go out ahead of data not yet queued; `start_send` refuses a larger
/// one with [`Error::InvalidControlFrame`].
///
/// `poll_close` writes out what is held, sends a normal close (1000) unless a
/// close was sent already, waits up to the close timeout for the read half
/// (in another task) to receive the peer's close, and shuts the stream down.
///
/// `poll_ready` waits for room in the write buffer; `start_send` then
/// queues the message whole (compressing it if so agreed), so a message the
/// sink accepted is on its way, in order, and never cut short or mixed with
/// another frame. The write deadline bounds every wait.
impl<S: Stream> Sink<Message> for WriteHalf<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().with_sink(|half, state| half.poll_sink_ready(cx, state))
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<()> {
        if message.kind.is_control() && !is_valid_control(message.kind.opcode(), message.data.len()) {
            return Err(Error::InvalidControlFrame);
        }
        self.get_mut().with_sink(|half, state| half.sink_send(state, message))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().with_sink(|half, state| half.poll_sink_flush(cx, state))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().with_sink(|half, state| half.poll_sink_close(cx, state, None))
    }
}

/// The sink of the write half (see the impl on [`WriteHalf`]), except that
/// `poll_close` runs the whole close handshake itself: it reads until the
/// peer's close arrives (up to the close timeout), so it completes even when
/// nothing else reads. Messages that arrive meanwhile are kept for the
/// stream (up to 64 messages and 1 MiB; more are dropped), so a stream
/// polled from another task — after `StreamExt::split` — still sees them.
impl<S: Stream> Sink<Message> for Conn<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<()> {
        Pin::new(&mut self.get_mut().write).start_send(message)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let Conn { read, write } = self.get_mut();
        write.with_sink(|half, state| half.poll_sink_close(cx, state, Some(read)))
    }
}
