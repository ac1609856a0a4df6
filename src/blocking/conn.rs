//! The blocking connection: [`Conn`] over a `std::io` stream, driving the
//! sans-IO [`Connection`] core.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
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
pub struct Conn<S: Transport> {
    stream: S,
    core: Connection,
    subprotocol: Option<String>,
    handlers: Handlers,
    read_deadline: Option<Instant>,
    write_deadline: Option<Instant>,
    /// A streamed read under way: the rest of its message is skipped by the next read.
    reading: bool,
    /// The stream was shut down.
    shut: bool,
    /// The read timeout set on the stream, to skip needless system calls.
    read_timeout: Option<Option<Duration>>,
}

impl<S: Transport> fmt::Debug for Conn<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").field("core", &self.core).field("subprotocol", &self.subprotocol).finish()
    }
}

impl<S: Transport> Conn<S> {
    /// Wraps a stream on which the opening handshake has already taken place.
    /// `early` holds bytes read past the handshake, which are WebSocket data.
    pub fn from_raw(stream: S, role: Role, config: Config, subprotocol: Option<String>, early: &[u8]) -> Self {
        let mask: Box<dyn FnMut() -> [u8; 4] + Send> = Box::new(rand::random);
        let mut core = Connection::new(role, &config, Instant::now(), mask);
        core.receive_data(early);
        Conn {
            stream,
            core,
            subprotocol,
            handlers: Handlers::default(),
            read_deadline: None,
            write_deadline: None,
            reading: false,
            shut: false,
            read_timeout: None,
        }
    }

    /// Reads the next whole data message. Control frames that arrive first
    /// go to the handlers; a close from the peer ends in [`Error::Closed`].
    /// Every error is permanent.
    pub fn read_message(&mut self) -> Result<Message> {
        let mut message: Option<(MessageType, BytesMut)> = None;
        loop {
            match self.next_data()? {
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

    /// Starts reading the next data message: its type and an [`io::Read`]
    /// of its payload. What is left of a previous streamed message is skipped.
    pub fn next_reader(&mut self) -> Result<(MessageType, MessageReader<'_, S>)> {
        loop {
            match self.next_data()? {
                Event::Message(kind, data) => {
                    return Ok((kind, MessageReader { conn: self, chunk: data.freeze(), done: true }))
                }
                Event::Start(kind) => {
                    self.reading = true;
                    return Ok((kind, MessageReader { conn: self, chunk: Bytes::new(), done: false }));
                }
                _ => {}
            }
        }
    }

    /// The next data event, with control frames handled and time kept.
    fn next_data(&mut self) -> Result<Event> {
        loop {
            match self.core.next_event(Instant::now()) {
                Ok(Some(Event::Ping(payload))) => {
                    let handler = self.handlers.ping.clone();
                    self.run_handler(|ctx| handler(&payload, ctx))?;
                }
                Ok(Some(Event::Pong(payload))) => {
                    let handler = self.handlers.pong.clone();
                    self.run_handler(|ctx| handler(&payload, ctx))?;
                }
                Ok(Some(Event::Close(frame))) => {
                    let handler = self.handlers.close.clone();
                    self.run_handler(|ctx| handler(frame.as_ref(), ctx))?;
                }
                Ok(Some(event)) => return Ok(event),
                Ok(None) => {
                    // About to wait for input: what is owed goes out first.
                    if let Err(e) = self.write_out(self.write_deadline) {
                        self.settle();
                        return Err(e);
                    }
                    self.fill()?;
                }
                Err(e) => {
                    self.settle();
                    return Err(e);
                }
            }
        }
    }

    /// Runs a handler and queues the replies it asked for.
    fn run_handler(&mut self, handler: impl FnOnce(&mut ControlContext<'_>) -> Result<()>) -> Result<()> {
        let mut replies = Vec::new();
        let mut deadline = self.read_deadline;
        let result = handler(&mut ControlContext { replies: &mut replies, read_deadline: &mut deadline });
        self.read_deadline = deadline;
        let replied = !replies.is_empty();
        for (opcode, payload) in replies {
            self.core.reply(opcode, &payload);
        }
        // Nobody else holds the write side: the reader sends what it owes at
        // once, so that each ping gets its own pong and a pong leaves before
        // the messages written after this read.
        if replied {
            if let Err(e) = self.write_out(self.write_deadline) {
                self.settle();
                return Err(e);
            }
        }
        result
    }

    /// After a read error: sends what is owed (the close frame) as far as
    /// the stream takes it within the reply timeout, and closes the
    /// transport when the core says so.
    fn settle(&mut self) {
        if self.shut {
            return;
        }
        let limit = Instant::now() + crate::proto::connection::REPLY_TIMEOUT;
        let _ = self.write_out(Some(limit));
        if self.core.should_close_transport() || self.core.is_close_received() {
            self.shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
    }

    /// Reads more input, waiting at most until the read deadline or the
    /// core's next timer; a timer is handled on the way.
    fn fill(&mut self) -> Result<()> {
        loop {
            let now = Instant::now();
            if self.read_deadline.is_some_and(|at| now >= at) {
                return Err(Error::Timeout);
            }
            if self.core.poll_timeout().is_some_and(|at| now >= at) {
                self.core.handle_timeout(now);
                if self.core.should_close_transport() {
                    self.settle();
                }
                return Ok(());
            }
            let wake = match (self.read_deadline, self.core.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = wake.map(|at| at.saturating_duration_since(now).max(Duration::from_millis(1)));
            if self.read_timeout != Some(timeout) {
                self.stream.set_read_timeout(timeout)?;
                self.read_timeout = Some(timeout);
            }
            let stream = &mut self.stream;
            match self.core.receive_into(|buf| stream.read(buf)) {
                Ok(0) => {
                    self.core.receive_eof();
                    return Ok(());
                }
                Ok(_) => return Ok(()),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    /// Writes everything the core has to send, bounded by `deadline`; a
    /// deadline that passes fails later writes too (a frame may be cut).
    fn write_out(&mut self, deadline: Option<Instant>) -> Result<()> {
        let mut wrote = false;
        loop {
            let data = self.core.data_to_send();
            if data.is_empty() {
                break;
            }
            let timeout = match deadline {
                Some(at) => match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Err(self.fail_writes(Error::Timeout)),
                },
                None => None,
            };
            self.stream.set_write_timeout(timeout)?;
            match self.stream.write(data) {
                Ok(0) => return Err(self.fail_writes(Error::Io(io::ErrorKind::WriteZero.into()))),
                Ok(n) => {
                    self.core.sent(n);
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(self.fail_writes(Error::Timeout))
                }
                Err(e) => return Err(self.fail_writes(Error::Io(e))),
            }
        }
        if wrote {
            self.stream.flush().map_err(|e| self.fail_writes(Error::Io(e)))?;
            self.core.flushed();
        }
        Ok(())
    }

    fn fail_writes(&mut self, error: Error) -> Error {
        self.core.fail_writes(error.replay());
        error
    }

    /// Sends a whole message as one frame; control types (close, ping,
    /// pong) are allowed and limited to 125 bytes. After a close frame was
    /// sent every write fails with [`Error::CloseSent`]; a write that fails
    /// (or passes its deadline) fails every later write.
    pub fn write_message(&mut self, kind: impl Into<MessageType>, data: impl AsRef<[u8]>) -> Result<()> {
        self.core.send_message(kind.into().opcode(), data.as_ref())?;
        self.write_out(self.write_deadline)
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
        self.core.send_prepared(message)?;
        self.write_out(self.write_deadline)
    }

    /// Sends a control frame with its own `deadline` for the write.
    pub fn write_control(
        &mut self,
        kind: MessageType,
        data: impl AsRef<[u8]>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        self.core.send_control(kind.opcode(), data.as_ref())?;
        self.write_out(deadline)
    }

    /// Starts a message written piece by piece through the returned
    /// [`io::Write`]; a fragment leaves each time the write buffer fills.
    /// Finish it with [`MessageWriter::close`]; dropped unfinished, it is
    /// finished with what was written.
    pub fn next_writer(&mut self, kind: MessageType) -> Result<MessageWriter<'_, S>> {
        self.core.begin_message(kind)?;
        Ok(MessageWriter { conn: self, closed: false })
    }

    /// Runs the whole close handshake: sends `frame` (unless a close was
    /// sent already), reads and discards until the peer's close arrives or
    /// the close timeout passes, then shuts the stream down.
    pub fn close(&mut self, frame: CloseFrame) -> Result<()> {
        let sent = match self.core.close(&frame, Instant::now()) {
            Err(Error::CloseSent) => Ok(()),
            other => other,
        }
        .and_then(|()| self.write_out(self.write_deadline));
        if sent.is_ok() {
            while !self.core.should_close_transport() {
                if self.next_data().is_err() {
                    break;
                }
            }
        }
        self.shut = true;
        let _ = self.stream.shutdown(Shutdown::Write);
        sent
    }

    /// Ends the connection at once, without a close frame (gorilla's
    /// `Close`): the stream is shut down in both directions.
    pub fn close_now(&mut self) {
        self.shut = true;
        self.core.fail_writes(Error::Io(io::ErrorKind::NotConnected.into()));
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Whether permessage-deflate was agreed.
    pub fn compression_negotiated(&self) -> bool {
        self.core.compression_negotiated()
    }

    /// Turns compression of later messages on or off.
    pub fn enable_write_compression(&mut self, enable: bool) {
        self.core.set_compression(enable);
    }

    /// Sets the compression level (0–9) of later messages.
    pub fn set_compression_level(&mut self, level: u32) -> Result<()> {
        if level > 9 {
            return Err(Error::InvalidRequest(format!("compression level {level} is not in 0..=9")));
        }
        self.core.set_compression_level(level);
        Ok(())
    }

    /// Sets the largest message accepted; `None` removes the limit.
    pub fn set_read_limit(&mut self, limit: Option<u64>) {
        self.core.set_read_limit(limit);
    }

    /// Sets the time after which a waiting read fails with [`Error::Timeout`].
    pub fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        self.read_deadline = deadline;
    }

    /// Sets the time after which a write fails with [`Error::Timeout`], for good.
    pub fn set_write_deadline(&mut self, deadline: Option<Instant>) {
        self.write_deadline = deadline;
    }

    /// Sets the handler for received pings; `None` restores the default (a pong).
    pub fn set_ping_handler(&mut self, handler: Option<PingPongHandler>) {
        self.handlers.ping = handler.unwrap_or_else(crate::handlers::default_ping_handler);
    }

    /// Sets the handler for received pongs; `None` restores the default (nothing).
    pub fn set_pong_handler(&mut self, handler: Option<PingPongHandler>) {
        self.handlers.pong = handler.unwrap_or_else(crate::handlers::default_pong_handler);
    }

    /// Sets the handler for a received close; `None` restores the default
    /// (echo the code).
    pub fn set_close_handler(&mut self, handler: Option<CloseHandler>) {
        self.handlers.close = handler.unwrap_or_else(crate::handlers::default_close_handler);
    }

    /// Whether this end is the server or the client.
    pub fn role(&self) -> Role {
        self.core.role()
    }

    /// The subprotocol agreed in the handshake.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// True once a close frame was sent.
    pub fn is_close_sent(&self) -> bool {
        self.core.is_close_sent()
    }

    /// The underlying stream. Reading or writing it directly corrupts the
    /// connection.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The underlying stream, mutably; see [`Conn::get_ref`].
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The underlying stream; bytes already read into the connection are lost.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

impl Conn<TcpStream> {
    /// The local socket address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// The peer's socket address.
    pub fn remote_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }
}

/// Streams the payload of one data message (an [`io::Read`]), ending at the
/// message's end; control frames between its fragments are handled.
pub struct MessageReader<'a, S: Transport> {
    conn: &'a mut Conn<S>,
    chunk: Bytes,
    done: bool,
}

impl<S: Transport> fmt::Debug for MessageReader<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageReader").field("buffered", &self.chunk.len()).field("done", &self.done).finish()
    }
}

impl<S: Transport> Read for MessageReader<'_, S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() && !self.done {
            match self.conn.next_data().map_err(io::Error::from)? {
                Event::Data(data) => self.chunk = data.freeze(),
                Event::End => {
                    self.done = true;
                    self.conn.reading = false;
                }
                _ => {}
            }
        }
        let n = self.chunk.len().min(out.len());
        out[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Writes one message in fragments (an [`io::Write`]); see [`Conn::next_writer`].
pub struct MessageWriter<'a, S: Transport> {
    conn: &'a mut Conn<S>,
    closed: bool,
}

impl<S: Transport> fmt::Debug for MessageWriter<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageWriter").field("closed", &self.closed).finish()
    }
}

impl<S: Transport> MessageWriter<'_, S> {
    /// Sends what is buffered as the final frame, completing the message.
    pub fn close(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.conn.core.finish_message()?;
        self.conn.write_out(self.conn.write_deadline)
    }
}

impl<S: Transport> Write for MessageWriter<'_, S> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(Error::WriterClosed.into());
        }
        let n = self.conn.core.stream(data)?;
        self.conn.write_out(self.conn.write_deadline)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(self.conn.write_out(self.conn.write_deadline)?)
    }
}

impl<S: Transport> Drop for MessageWriter<'_, S> {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
