//! The blocking connection: [`Conn`] over a `std::io` stream, driving the
//! sans-IO [`Connection`] core.
//!
//! The rules for reading (handlers, replies, timers, what happens after an
//! error) are written once, in [`Reading`], over a [`Link`]: how the driver
//! reaches the core and the stream. A [`Conn`] owns both ([`Owned`]); the
//! halves of a split connection share them (`super::split`).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::DerefMut;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::handlers::{CloseHandler, ControlContext, Handlers, PingPongHandler};
use crate::proto::connection::Event;
use crate::proto::{CloseFrame, Connection, MessageType, Role};
use crate::{Message, PreparedMessage};

/// What a blocking connection needs of its stream besides `Read` and
/// `Write`: timeouts (for deadlines and keepalive) and a shutdown.
///
/// Implemented for `TcpStream`, Unix sockets, and rustls streams over them.
pub trait Transport: Read + Write {
    /// Bounds the next reads (`None`: wait as long as it takes).
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Bounds the next writes (`None`: wait as long as it takes).
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Shuts the transport down in the given direction(s).
    fn shutdown(&mut self, how: Shutdown) -> io::Result<()>;
}

impl Transport for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }
    fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        TcpStream::shutdown(self, how)
    }
}

#[cfg(unix)]
impl Transport for std::os::unix::net::UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_write_timeout(self, timeout)
    }
    fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        std::os::unix::net::UnixStream::shutdown(self, how)
    }
}

/// rustls streams over a transport: the TLS close_notify goes out before
/// the transport's own shutdown.
#[cfg(feature = "rustls")]
macro_rules! tls_transport {
    ($side:ty) => {
        impl<T: Transport> Transport for rustls::StreamOwned<$side, T> {
            fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
                self.sock.set_read_timeout(timeout)
            }
            fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
                self.sock.set_write_timeout(timeout)
            }
            fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
                self.conn.send_close_notify();
                let _ = self.flush();
                self.sock.shutdown(how)
            }
        }
    };
}

#[cfg(feature = "rustls")]
tls_transport!(rustls::ClientConnection);
#[cfg(feature = "rustls")]
tls_transport!(rustls::ServerConnection);

/// A transport that can be opened a second time onto the same socket, so
/// that one thread reads while others write ([`Conn::split`]).
///
/// Implemented for `TcpStream` and Unix sockets. A TLS stream cannot be
/// divided this way: its reads and writes share one TLS state.
pub trait Split: Transport + Sized {
    /// Another handle onto the same socket (`TcpStream::try_clone`).
    fn try_clone(&self) -> io::Result<Self>;
}

impl Split for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
}

#[cfg(unix)]
impl Split for std::os::unix::net::UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        std::os::unix::net::UnixStream::try_clone(self)
    }
}

/// How a blocking driver reaches the core and the stream.
pub(crate) trait Link {
    /// The core, for one short step (a lock held only while it lives).
    fn core(&mut self) -> impl DerefMut<Target = Connection> + '_;
    /// Reads more input into the core, waiting at most `timeout`.
    fn receive(&mut self, timeout: Option<Duration>) -> io::Result<usize>;
    /// Writes what the core has to send, bounded by `deadline`. `owed`:
    /// a reply the reader owes, which need not wait for a writer busy
    /// elsewhere (that writer sends it with its own frames).
    fn write_out(&mut self, deadline: Option<Instant>, owed: bool) -> Result<()>;
    /// After a read error: sends what is owed within the reply timeout, and
    /// shuts the transport's write side when the core says so.
    fn settle(&mut self);
}

/// The read side of a driver: handlers, deadlines and the rules for reading
/// over any [`Link`].
pub(crate) struct Reading {
    pub(crate) handlers: Handlers,
    pub(crate) read_deadline: Option<Instant>,
    /// Bounds the replies the reader sends (the write deadline of its connection).
    pub(crate) reply_deadline: Option<Instant>,
    /// A streamed read under way: the rest of its message is skipped by the next read.
    pub(crate) streaming: bool,
}

impl Reading {
    pub(crate) fn new() -> Self {
        Reading { handlers: Handlers::default(), read_deadline: None, reply_deadline: None, streaming: false }
    }

    /// The next whole data message.
    pub(crate) fn read_message(&mut self, link: &mut impl Link) -> Result<Message> {
        let mut message: Option<(MessageType, BytesMut)> = None;
        loop {
            match self.next_data(link)? {
                Event::Message(kind, data) => return Ok(Message { kind, data: data.freeze() }),
                Event::Start(kind) => message = Some((kind, BytesMut::new())),
                Event::Data(chunk) => {
                    if let Some((_, data)) = &mut message {
                        data.extend_from_slice(&chunk);
                    }
                }
                Event::End => {
                    if let Some((kind, data)) = message.take() {
                        return Ok(Message { kind, data: data.freeze() });
                    }
                }
                _ => {}
            }
        }
    }

    /// The start of the next data message: its type, and its payload when
    /// it came whole (`None`: it follows as data events).
    pub(crate) fn next_start(&mut self, link: &mut impl Link) -> Result<(MessageType, Option<Bytes>)> {
        loop {
            match self.next_data(link)? {
                Event::Message(kind, data) => return Ok((kind, Some(data.freeze()))),
                Event::Start(kind) => {
                    self.streaming = true;
                    return Ok((kind, None));
                }
                _ => {}
            }
        }
    }

    /// The next piece of a streamed message; `None` at its end.
    pub(crate) fn next_chunk(&mut self, link: &mut impl Link) -> Result<Option<Bytes>> {
        while self.streaming {
            match self.next_data(link)? {
                Event::Data(data) if !data.is_empty() => return Ok(Some(data.freeze())),
                Event::End => self.streaming = false,
                _ => {}
            }
        }
        Ok(None)
    }

    /// The next data event, with control frames handled and time kept.
    fn next_data(&mut self, link: &mut impl Link) -> Result<Event> {
        loop {
            let event = link.core().next_event(Instant::now());
            match event {
                Ok(Some(Event::Ping(payload))) => {
                    let handler = self.handlers.ping.clone();
                    self.run_handler(link, |ctx| handler(&payload, ctx))?;
                }
                Ok(Some(Event::Pong(payload))) => {
                    let handler = self.handlers.pong.clone();
                    self.run_handler(link, |ctx| handler(&payload, ctx))?;
                }
                Ok(Some(Event::Close(frame))) => {
                    let handler = self.handlers.close.clone();
                    self.run_handler(link, |ctx| handler(frame.as_ref(), ctx))?;
                }
                Ok(Some(event)) => return Ok(event),
                Ok(None) => {
                    // About to wait for input: what is owed goes out first.
                    if let Err(e) = link.write_out(self.reply_deadline, true) {
                        link.settle();
                        return Err(e);
                    }
                    self.fill(link)?;
                }
                Err(e) => {
                    link.settle();
                    return Err(e);
                }
            }
        }
    }

    /// Runs a handler and sends the replies it asked for.
    fn run_handler(
        &mut self,
        link: &mut impl Link,
        handler: impl FnOnce(&mut ControlContext<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut replies = Vec::new();
        let mut deadline = self.read_deadline;
        let result = handler(&mut ControlContext { replies: &mut replies, read_deadline: &mut deadline });
        self.read_deadline = deadline;
        if !replies.is_empty() {
            let mut core = link.core();
            for (opcode, payload) in replies {
                core.reply(opcode, &payload);
            }
            drop(core);
            // Sent at once, so that each ping gets its own pong and a pong
            // leaves before the messages written after this read.
            if let Err(e) = link.write_out(self.reply_deadline, true) {
                link.settle();
                return Err(e);
            }
        }
        result
    }

    /// Reads more input, waiting at most until the read deadline or the
    /// core's next timer; a timer is handled on the way.
    fn fill(&mut self, link: &mut impl Link) -> Result<()> {
        loop {
            let now = Instant::now();
            if self.read_deadline.is_some_and(|at| now >= at) {
                return Err(Error::Timeout);
            }
            let timer = link.core().poll_timeout();
            if timer.is_some_and(|at| now >= at) {
                let mut core = link.core();
                core.handle_timeout(now);
                let done = core.should_close_transport();
                drop(core);
                if done {
                    link.settle();
                }
                return Ok(());
            }
            let wake = match (self.read_deadline, timer) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = wake.map(|at| at.saturating_duration_since(now).max(Duration::from_millis(1)));
            match link.receive(timeout) {
                Ok(0) => {
                    link.core().receive_eof();
                    return Ok(());
                }
                Ok(_) => return Ok(()),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }
}

/// The link of an unsplit [`Conn`]: it owns the core and the stream.
pub(crate) struct Owned<S> {
    pub(crate) stream: S,
    pub(crate) core: Connection,
    /// The stream was shut down.
    shut: bool,
    /// The read timeout set on the stream, to skip needless system calls.
    read_timeout: Option<Option<Duration>>,
}

impl<S: Transport> Link for Owned<S> {
    fn core(&mut self) -> impl DerefMut<Target = Connection> + '_ {
        &mut self.core
    }

    fn receive(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        if self.read_timeout != Some(timeout) {
            self.stream.set_read_timeout(timeout)?;
            self.read_timeout = Some(timeout);
        }
        let stream = &mut self.stream;
        self.core.receive_into(|buf| stream.read(buf))
    }

    fn write_out(&mut self, deadline: Option<Instant>, _owed: bool) -> Result<()> {
        let mut wrote = false;
        loop {
            let data = self.core.data_to_send();
            if data.is_empty() {
                break;
            }
            let written = write_some(&mut self.stream, data, deadline);
            match written {
                Ok(n) => {
                    self.core.sent(n);
                    wrote = true;
                }
                Err(e) => return Err(fail_writes(&mut self.core, e)),
            }
        }
        if wrote {
            self.stream.flush().map_err(|e| fail_writes(&mut self.core, Error::Io(e)))?;
            self.core.flushed();
        }
        Ok(())
    }

    fn settle(&mut self) {
        if self.shut {
            return;
        }
        let limit = Instant::now() + crate::proto::connection::REPLY_TIMEOUT;
        let _ = self.write_out(Some(limit), true);
        if self.core.should_close_transport() || self.core.is_close_received() {
            self.shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
    }
}

/// One write of `data` within `deadline` (`Interrupted` is retried): how
/// much was written, or why nothing could be.
pub(crate) fn write_some<W: Transport + ?Sized>(
    stream: &mut W,
    data: &[u8],
    deadline: Option<Instant>,
) -> Result<usize> {
    loop {
        let timeout = match deadline {
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Err(Error::Timeout),
            },
            None => None,
        };
        stream.set_write_timeout(timeout)?;
        match stream.write(data) {
            Ok(0) => return Err(Error::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(Error::Timeout)
            }
            Err(e) => return Err(Error::Io(e)),
        }
    }
}

/// A write failed or passed its deadline (a frame may be cut): every later
/// write fails too.
pub(crate) fn fail_writes(core: &mut Connection, error: Error) -> Error {
    core.fail_writes(error.replay());
    error
}

/// Where a streamed read finds its next piece ([`MessageReader`]).
pub(crate) trait ChunkSource {
    fn next_chunk(&mut self) -> Result<Option<Bytes>>;
}

/// Where a streamed write sends its pieces ([`MessageWriter`]).
pub(crate) trait FragmentSink {
    /// Adds data to the message and sends the fragments it fills.
    fn stream(&mut self, data: &[u8]) -> Result<usize>;
    /// Sends what is buffered as the final fragment.
    fn finish(&mut self) -> Result<()>;
    /// Sends what was queued.
    fn flush(&mut self) -> Result<()>;
}

/// A WebSocket connection over a blocking stream, for a thread per
/// connection.
///
/// The methods mirror the async [`crate::Conn`]: whole and streamed
/// messages ([`Conn::next_reader`] is an [`io::Read`], [`Conn::next_writer`]
/// an [`io::Write`]), control frames and their handlers, the read limit,
/// deadlines, keepalive and the close handshake. Every write goes out
/// before the call returns.
///
/// Keepalive pings (and the wait for the peer's close) run on the socket's
/// read timeout while a read is under way: a connection that is read in a
/// loop, as every connection must be for its control frames, keeps its
/// keepalive without a thread of its own.
///
/// To write from other threads while one thread reads (a chat server's
/// broadcast, say), [`Conn::split`] it: a [`ReadHalf`](super::ReadHalf), a
/// [`WriteHalf`](super::WriteHalf) and any number of
/// [`Handle`](super::Handle)s for control frames and closing.
pub struct Conn<S: Transport> {
    pub(crate) link: Owned<S>,
    pub(crate) reading: Reading,
    pub(crate) write_deadline: Option<Instant>,
    pub(crate) subprotocol: Option<String>,
}

impl<S: Transport> fmt::Debug for Conn<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").field("core", &self.link.core).field("subprotocol", &self.subprotocol).finish()
    }
}

impl<S: Transport> Conn<S> {
    /// Wraps a stream on which the opening handshake has already taken place.
    /// `early` holds bytes read past the handshake, which are WebSocket data.
    pub fn from_raw(stream: S, role: Role, config: Config, subprotocol: Option<String>, early: &[u8]) -> Self {
        // One 32-bit draw per key (a random `[u8; 4]` would take four).
        let mask: Box<dyn FnMut() -> [u8; 4] + Send> = Box::new(|| rand::random::<u32>().to_ne_bytes());
        let mut core = Connection::new(role, &config, Instant::now(), mask);
        core.receive_data(early);
        Conn {
            link: Owned { stream, core, shut: false, read_timeout: None },
            reading: Reading::new(),
            write_deadline: None,
            subprotocol,
        }
    }

    /// Reads the next whole data message. Control frames that arrive first
    /// go to the handlers; a close from the peer ends in [`Error::Closed`].
    /// Every error is permanent.
    pub fn read_message(&mut self) -> Result<Message> {
        self.reading.read_message(&mut self.link)
    }

    /// Starts reading the next data message: its type and an [`io::Read`]
    /// of its payload. What is left of a previous streamed message is skipped.
    pub fn next_reader(&mut self) -> Result<(MessageType, MessageReader<'_>)> {
        let (kind, whole) = self.reading.next_start(&mut self.link)?;
        Ok((kind, MessageReader::new(self, whole)))
    }

    /// Sends a whole message as one frame; control types (close, ping,
    /// pong) are allowed and limited to 125 bytes. After a close frame was
    /// sent every write fails with [`Error::CloseSent`]; a write that fails
    /// (or passes its deadline) fails every later write.
    pub fn write_message(&mut self, kind: impl Into<MessageType>, data: impl AsRef<[u8]>) -> Result<()> {
        self.link.core.send_message(kind.into().opcode(), data.as_ref())?;
        self.link.write_out(self.write_deadline, false)
    }

    /// Sends a text message.
    pub fn write_text(&mut self, text: impl AsRef<str>) -> Result<()> {
        self.write_message(MessageType::Text, text.as_ref())
    }

    /// Sends a binary message.
    pub fn write_binary(&mut self, data: impl AsRef<[u8]>) -> Result<()> {
        self.write_message(MessageType::Binary, data)
    }

    /// Sends a [`PreparedMessage`]: compressed once per compression variant
    /// and shared by every connection that sends it.
    pub fn write_prepared(&mut self, message: &PreparedMessage) -> Result<()> {
        self.link.core.send_prepared(message)?;
        self.link.write_out(self.write_deadline, false)
    }

    /// Sends a control frame with its own `deadline` for the write. A
    /// deadline already past fails at once with [`Error::Timeout`] and sends
    /// nothing.
    pub fn write_control(
        &mut self,
        kind: MessageType,
        data: impl AsRef<[u8]>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        if deadline_passed(kind, data.as_ref(), deadline) {
            return Err(Error::Timeout);
        }
        self.link.core.send_control(kind.opcode(), data.as_ref())?;
        self.link.write_out(deadline, false)
    }

    /// Starts a message written piece by piece through the returned
    /// [`io::Write`]; a fragment leaves each time the write buffer fills.
    /// Finish it with [`MessageWriter::close`]; dropped unfinished, it is
    /// finished with what was written.
    pub fn next_writer(&mut self, kind: MessageType) -> Result<MessageWriter<'_>> {
        self.link.core.begin_message(kind)?;
        Ok(MessageWriter::new(self))
    }

    /// Runs the whole close handshake: sends `frame` (unless a close was
    /// sent already), reads and discards until the peer's close arrives or
    /// the close timeout passes, then shuts the stream down.
    pub fn close(&mut self, frame: CloseFrame) -> Result<()> {
        let sent = match self.link.core.close(&frame, Instant::now()) {
            Err(Error::CloseSent) => Ok(()),
            other => other,
        }
        .and_then(|()| self.link.write_out(self.write_deadline, false));
        if sent.is_ok() {
            while !self.link.core.should_close_transport() {
                if self.reading.next_data(&mut self.link).is_err() {
                    break;
                }
            }
        }
        self.link.shut = true;
        let _ = self.link.stream.shutdown(Shutdown::Write);
        sent
    }

    /// Ends the connection at once, without a close frame (gorilla's
    /// `Close`): the stream is shut down in both directions.
    pub fn close_now(&mut self) {
        self.link.shut = true;
        self.link.core.fail_writes(Error::Io(io::ErrorKind::NotConnected.into()));
        let _ = self.link.stream.shutdown(Shutdown::Both);
    }

    /// Whether permessage-deflate was agreed.
    pub fn compression_negotiated(&self) -> bool {
        self.link.core.compression_negotiated()
    }

    /// Turns compression of later messages on or off.
    pub fn enable_write_compression(&mut self, enable: bool) {
        self.link.core.set_compression(enable);
    }

    /// Sets the compression level of later messages: −2 (Huffman only),
    /// −1 (default) or 0–9; others are refused (see
    /// [`crate::CompressionLevel`]).
    pub fn set_compression_level(&mut self, level: impl Into<crate::CompressionLevel>) -> Result<()> {
        let level = level.into().check()?;
        self.link.core.set_compression_level(level);
        Ok(())
    }

    /// Sets the largest message accepted; `None` removes the limit.
    pub fn set_read_limit(&mut self, limit: Option<u64>) {
        self.link.core.set_read_limit(limit);
    }

    /// Sets the time after which a waiting read fails with [`Error::Timeout`].
    pub fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        self.reading.read_deadline = deadline;
    }

    /// Sets the time after which a write fails with [`Error::Timeout`], for good.
    pub fn set_write_deadline(&mut self, deadline: Option<Instant>) {
        self.write_deadline = deadline;
        self.reading.reply_deadline = deadline;
    }

    /// Sets the handler for received pings; `None` restores the default (a pong).
    pub fn set_ping_handler(&mut self, handler: Option<PingPongHandler>) {
        self.reading.handlers.set_ping(handler);
    }

    /// Sets the handler for received pongs; `None` restores the default (nothing).
    pub fn set_pong_handler(&mut self, handler: Option<PingPongHandler>) {
        self.reading.handlers.set_pong(handler);
    }

    /// Sets the handler for a received close; `None` restores the default
    /// (echo the code).
    pub fn set_close_handler(&mut self, handler: Option<CloseHandler>) {
        self.reading.handlers.set_close(handler);
    }

    /// Whether this end is the server or the client.
    pub fn role(&self) -> Role {
        self.link.core.role()
    }

    /// The subprotocol agreed in the handshake.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// True once a close frame was sent.
    pub fn is_close_sent(&self) -> bool {
        self.link.core.is_close_sent()
    }

    /// The underlying stream. Reading or writing it directly corrupts the
    /// connection.
    pub fn get_ref(&self) -> &S {
        &self.link.stream
    }

    /// The underlying stream, mutably; see [`Conn::get_ref`].
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.link.stream
    }

    /// The underlying stream; bytes already read into the connection are lost.
    pub fn into_inner(self) -> S {
        self.link.stream
    }
}

impl Conn<TcpStream> {
    /// The local socket address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.link.stream.local_addr()
    }

    /// The peer's socket address.
    pub fn remote_addr(&self) -> io::Result<SocketAddr> {
        self.link.stream.peer_addr()
    }
}

impl<S: Transport> ChunkSource for Conn<S> {
    fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        self.reading.next_chunk(&mut self.link)
    }
}

impl<S: Transport> FragmentSink for Conn<S> {
    fn stream(&mut self, data: &[u8]) -> Result<usize> {
        let n = self.link.core.stream(data)?;
        self.link.write_out(self.write_deadline, false)?;
        Ok(n)
    }

    fn finish(&mut self) -> Result<()> {
        self.link.core.finish_message()?;
        self.link.write_out(self.write_deadline, false)
    }

    fn flush(&mut self) -> Result<()> {
        self.link.write_out(self.write_deadline, false)
    }
}

/// Streams the payload of one data message (an [`io::Read`]), ending at the
/// message's end; control frames between its fragments are handled.
pub struct MessageReader<'a> {
    source: &'a mut dyn ChunkSource,
    chunk: Bytes,
    done: bool,
}

impl<'a> MessageReader<'a> {
    /// A reader of the message that `source` just started; `whole` is its
    /// payload when it came in one piece.
    pub(crate) fn new(source: &'a mut dyn ChunkSource, whole: Option<Bytes>) -> Self {
        let done = whole.is_some();
        MessageReader { source, chunk: whole.unwrap_or_default(), done }
    }
}

impl fmt::Debug for MessageReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageReader").field("buffered", &self.chunk.len()).field("done", &self.done).finish()
    }
}

impl Read for MessageReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() && !self.done {
            match self.source.next_chunk().map_err(io::Error::from)? {
                Some(data) => self.chunk = data,
                None => self.done = true,
            }
        }
        let n = self.chunk.len().min(out.len());
        out[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Writes one message in fragments (an [`io::Write`]); see [`Conn::next_writer`].
pub struct MessageWriter<'a> {
    sink: &'a mut dyn FragmentSink,
    closed: bool,
}

impl<'a> MessageWriter<'a> {
    pub(crate) fn new(sink: &'a mut dyn FragmentSink) -> Self {
        MessageWriter { sink, closed: false }
    }
}

impl fmt::Debug for MessageWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageWriter").field("closed", &self.closed).finish()
    }
}

impl MessageWriter<'_> {
    /// Sends what is buffered as the final frame, completing the message.
    pub fn close(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.sink.finish()
    }
}

impl Write for MessageWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(Error::WriterClosed.into());
        }
        Ok(self.sink.stream(data)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(self.sink.flush()?)
    }
}

impl Drop for MessageWriter<'_> {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Whether a valid control frame's `deadline` has already passed: it then
/// fails at once, before anything is queued (gorilla's `WriteControl`).
pub(super) fn deadline_passed(kind: MessageType, data: &[u8], deadline: Option<Instant>) -> bool {
    crate::proto::sender::is_valid_control(kind.opcode(), data.len()) && deadline.is_some_and(|at| at <= Instant::now())
}
