//! [`join_messages`]: successive messages as one byte stream.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

use super::read::{DataEvent, ReadHalf};
use super::{Conn, Stream};
use crate::proto::CloseCode;

/// Joins the data messages received on `source` into one [`AsyncRead`],
/// with `terminator` after each message (gorilla's `JoinMessages`). Turned
/// into lines by tokio's `AsyncBufReadExt::lines` over a `BufReader`, say.
///
/// `source` is a [`Conn`] or a [`ReadHalf`], owned or borrowed mutably.
/// Control frames are handled as by the read methods while it reads. The
/// reader ends (EOF) when the peer closes normally (1000, 1001, or a close
/// frame without a code); any other end — another close code, a protocol
/// violation, an I/O error — is a read error.
///
/// ```no_run
/// # async fn run(conn: silverback::Conn<tokio::net::TcpStream>) -> std::io::Result<()> {
/// use tokio::io::{AsyncBufReadExt, BufReader};
/// let mut lines = BufReader::new(silverback::join_messages(conn, b"\n")).lines();
/// while let Some(line) = lines.next_line().await? {
///     println!("{line}");
/// }
/// # Ok(())
/// # }
/// ```
pub fn join_messages<S: Stream, R: AsMut<ReadHalf<S>>>(source: R, terminator: &[u8]) -> JoinMessages<S, R> {
    JoinMessages {
        source,
        terminator: Bytes::copy_from_slice(terminator),
        chunk: BytesMut::new(),
        term_left: 0,
        in_message: false,
        started: false,
        done: false,
        _stream: PhantomData,
    }
}

/// The reader made by [`join_messages`].
pub struct JoinMessages<S: Stream, R = ReadHalf<S>> {
    source: R,
    terminator: Bytes,
    /// Received message bytes not yet read out.
    chunk: BytesMut,
    /// How much of the terminator is still to be read out.
    term_left: usize,
    /// A streamed message is under way.
    in_message: bool,
    /// The first read took over what a dropped `read_message` had begun.
    started: bool,
    /// The peer closed normally: EOF.
    done: bool,
    _stream: PhantomData<fn() -> S>,
}

impl<S: Stream, R> fmt::Debug for JoinMessages<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinMessages")
            .field("terminator", &self.terminator)
            .field("buffered", &self.chunk.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<S: Stream, R> JoinMessages<S, R> {
    /// The connection (or half) read from.
    pub fn into_inner(self) -> R {
        self.source
    }
}

impl<S: Stream, R: AsMut<ReadHalf<S>> + Unpin> AsyncRead for JoinMessages<S, R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.started {
            this.started = true;
            if let Some(begun) = this.source.as_mut().take_assembling() {
                this.chunk = begun;
                this.in_message = true;
            }
        }
        loop {
            if !this.chunk.is_empty() {
                let n = this.chunk.len().min(out.remaining());
                out.put_slice(&this.chunk.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.term_left > 0 {
                let from = this.terminator.len() - this.term_left;
                let n = this.term_left.min(out.remaining());
                out.put_slice(&this.terminator.slice(from..from + n));
                this.term_left -= n;
                return Poll::Ready(Ok(()));
            }
            if this.done || out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.source.as_mut().poll_event(cx)) {
                Ok(DataEvent::Start(_)) => this.in_message = true,
                Ok(DataEvent::Whole(_, data)) => {
                    this.chunk = data;
                    this.term_left = this.terminator.len();
                }
                Ok(DataEvent::Data(data)) => {
                    if this.in_message {
                        this.chunk = data;
                    }
                }
                Ok(DataEvent::End) => {
                    if std::mem::take(&mut this.in_message) {
                        this.term_left = this.terminator.len();
                    }
                }
                Err(e) if e.is_close(&[CloseCode::NORMAL, CloseCode::GOING_AWAY, CloseCode::NO_STATUS_RECEIVED]) => {
                    this.done = true;
                }
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }
}

impl<S: Stream> AsMut<ReadHalf<S>> for ReadHalf<S> {
    fn as_mut(&mut self) -> &mut ReadHalf<S> {
        self
    }
}

impl<S: Stream> AsMut<ReadHalf<S>> for Conn<S> {
    fn as_mut(&mut self) -> &mut ReadHalf<S> {
        self.reader()
    }
}
