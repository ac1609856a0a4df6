//! A blocking connection divided between threads ([`Conn::split`]): one
//! thread reads while others write and close.
//!
//! The core sits behind a lock held only for short steps, never across a
//! read or a write of the socket. The socket's write side has its own lock:
//! whoever holds it writes everything the core has to send, its own frames
//! and those of the others, in the order the core queued them. A reply the
//! reader owes (a pong, the close echo) does not wait for that lock: when a
//! writer holds it, the writer sends the reply with its own frames. The
//! reader reads through its own handle onto the socket, without a lock.

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::ops::DerefMut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use super::conn::{
    fail_writes, write_some, ChunkSource, Conn, FragmentSink, Link, MessageReader, MessageWriter, Reading, Split,
    Transport,
};
use crate::error::{Error, Result};
use crate::handlers::{CloseHandler, PingPongHandler};
use crate::proto::connection::REPLY_TIMEOUT;
use crate::proto::{CloseFrame, Connection, MessageType, Role};
use crate::{Message, PreparedMessage};

/// The most bytes a writer takes from the core at a time.
const WRITE_CHUNK: usize = 64 * 1024;

/// What the halves and handles of one connection share.
struct Shared<S> {
    core: Mutex<Connection>,
    /// Signalled when the reader's reads end (the peer's close, or an error).
    reads_ended: Condvar,
    /// The reader's reads ended.
    reads_over: AtomicBool,
    /// The socket's write side, and a buffer for the bytes being written.
    output: Mutex<Output<S>>,
    /// A handle onto the socket for shutting it down without waiting for a
    /// writer that is blocked.
    ender: Mutex<S>,
    role: Role,
    subprotocol: Option<String>,
    close_timeout: Duration,
}

struct Output<S> {
    stream: S,
    buf: Vec<u8>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<S: Transport> Shared<S> {
    /// Writes what the core has to send. `wait`: wait for the write side
    /// when another thread holds it (else leave the bytes to that thread).
    fn pump(&self, deadline: Option<Instant>, mut wait: bool) -> Result<()> {
        loop {
            let mut output = if wait {
                lock(&self.output)
            } else {
                match self.output.try_lock() {
                    Ok(output) => output,
                    Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                    Err(TryLockError::WouldBlock) => return Ok(()),
                }
            };
            let result = self.drain(&mut output, deadline);
            drop(output);
            result?;
            // Frames queued by a thread that found the write side taken just
            // before it was let go are this thread's to send.
            if lock(&self.core).data_to_send().is_empty() {
                return Ok(());
            }
            wait = false;
        }
    }

    fn drain(&self, output: &mut Output<S>, deadline: Option<Instant>) -> Result<()> {
        let mut wrote = false;
        loop {
            {
                let mut core = lock(&self.core);
                let data = core.data_to_send();
                if data.is_empty() {
                    break;
                }
                output.buf.clear();
                output.buf.extend_from_slice(&data[..data.len().min(WRITE_CHUNK)]);
            }
            let mut at = 0;
            while at < output.buf.len() {
                match write_some(&mut output.stream, &output.buf[at..], deadline) {
                    Ok(n) => {
                        at += n;
                        lock(&self.core).sent(n);
                    }
                    Err(e) => return Err(fail_writes(&mut lock(&self.core), e)),
                }
            }
            wrote = true;
        }
        if wrote {
            if let Err(e) = output.stream.flush() {
                return Err(fail_writes(&mut lock(&self.core), Error::Io(e)));
            }
            lock(&self.core).flushed();
        }
        Ok(())
    }

    /// Shuts the socket down without waiting for a writer.
    fn shutdown(&self, how: Shutdown) {
        let _ = lock(&self.ender).shutdown(how);
    }

    fn close_now(&self) {
        lock(&self.core).fail_writes(Error::Io(io::ErrorKind::NotConnected.into()));
        self.shutdown(Shutdown::Both);
    }

    fn write_control(&self, kind: MessageType, data: &[u8], deadline: Option<Instant>) -> Result<()> {
        if super::conn::deadline_passed(kind, data, deadline) {
            return Err(Error::Timeout);
        }
        lock(&self.core).send_control(kind.opcode(), data)?;
        self.pump(deadline, true)
    }

    /// The close handshake from a writing thread: our close goes out, the
    /// reader is given the close timeout to see the peer's, then the socket
    /// is shut down.
    fn close(&self, frame: &CloseFrame, write_deadline: Option<Instant>) -> Result<()> {
        let now = Instant::now();
        let limit = now + self.close_timeout;
        let sent = match lock(&self.core).close(frame, now) {
            Err(Error::CloseSent) => Ok(()),
            other => other,
        };
        let deadline = Some(write_deadline.map_or(limit, |d| d.min(limit)));
        let sent = sent.and_then(|()| self.pump(deadline, true));
        let mut core = lock(&self.core);
        while sent.is_ok() && !core.is_close_received() && !self.reads_over.load(Ordering::Acquire) {
            let Some(left) = limit.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else { break };
            core = self.reads_ended.wait_timeout(core, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        let answered = core.is_close_received();
        if !answered {
            core.fail_writes(Error::Io(io::ErrorKind::ConnectionAborted.into()));
        }
        drop(core);
        // The peer answered: our side is done writing. It did not: reads end too.
        self.shutdown(if answered { Shutdown::Write } else { Shutdown::Both });
        sent
    }
}

/// The reader's link: the shared core and its own handle onto the socket.
struct ReadLink<S> {
    shared: Arc<Shared<S>>,
    input: S,
    scratch: Vec<u8>,
    read_timeout: Option<Option<Duration>>,
    settled: bool,
}

impl<S: Transport> Link for ReadLink<S> {
    fn core(&mut self) -> impl DerefMut<Target = Connection> + '_ {
        lock(&self.shared.core)
    }

    fn receive(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        if self.read_timeout != Some(timeout) {
            self.input.set_read_timeout(timeout)?;
            self.read_timeout = Some(timeout);
        }
        // Read without the lock: writers go on while the reader waits.
        let n = self.input.read(&mut self.scratch)?;
        if n > 0 {
            lock(&self.shared.core).receive_data(&self.scratch[..n]);
        }
        Ok(n)
    }

    fn write_out(&mut self, deadline: Option<Instant>, owed: bool) -> Result<()> {
        self.shared.pump(deadline, !owed)
    }

    fn settle(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        let shared = &*self.shared;
        // Under the core's lock, so that a closing thread that has just
        // looked does not miss it.
        let core = lock(&shared.core);
        shared.reads_over.store(true, Ordering::Release);
        shared.reads_ended.notify_all();
        drop(core);
        // What is owed (the close frame) gets the reply timeout to leave,
        // from this thread or from a writer that holds the write side.
        let limit = Instant::now() + REPLY_TIMEOUT;
        let _ = shared.pump(Some(limit), false);
        let mut core = lock(&shared.core);
        while !core.is_drained() && Instant::now() < limit {
            drop(core);
            std::thread::sleep(Duration::from_millis(5));
            let _ = shared.pump(Some(limit), false);
            core = lock(&shared.core);
        }
        let drained = core.is_drained();
        let done = core.should_close_transport() || core.is_close_received();
        if !drained {
            core.fail_writes(Error::Timeout);
        }
        drop(core);
        if !drained {
            shared.shutdown(Shutdown::Both);
        } else if done {
            shared.shutdown(Shutdown::Write);
        }
    }
}

impl<S: Split> Conn<S> {
    /// Divides the connection into a [`ReadHalf`] for one thread and a
    /// [`WriteHalf`] for another (gorilla's one concurrent reader and one
    /// concurrent writer), plus [`Handle`]s from either for control frames
    /// and closing from any thread. Handlers, deadlines and what was
    /// already read carry over.
    ///
    /// The reader still answers pings and the close handshake: a pong goes
    /// out at once when no writer is busy, else with that writer's frames.
    /// It fails when the socket cannot be opened a second time.
    pub fn split(self) -> Result<(ReadHalf<S>, WriteHalf<S>)> {
        let Conn { link, reading, write_deadline, subprotocol } = self;
        let input = link.stream.try_clone()?;
        let ender = link.stream.try_clone()?;
        let core = link.core;
        let role = core.role();
        let close_timeout = core.close_timeout();
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            reads_ended: Condvar::new(),
            reads_over: AtomicBool::new(false),
            output: Mutex::new(Output { stream: link.stream, buf: Vec::new() }),
            ender: Mutex::new(ender),
            role,
            subprotocol,
            close_timeout,
        });
        let scratch = vec![0; lock(&shared.core).read_buffer_size()];
        let read = ReadHalf {
            link: ReadLink { shared: shared.clone(), input, scratch, read_timeout: None, settled: false },
            reading,
        };
        Ok((read, WriteHalf { shared, write_deadline }))
    }
}

/// The reading half of a split blocking connection (see [`Conn::split`]).
pub struct ReadHalf<S: Split> {
    link: ReadLink<S>,
    reading: Reading,
}

impl<S: Split> fmt::Debug for ReadHalf<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadHalf").field("role", &self.link.shared.role).finish_non_exhaustive()
    }
}

impl<S: Split> ReadHalf<S> {
    /// Reads the next whole data message; see [`Conn::read_message`].
    pub fn read_message(&mut self) -> Result<Message> {
        self.reading.read_message(&mut self.link)
    }

    /// Starts reading the next data message; see [`Conn::next_reader`].
    pub fn next_reader(&mut self) -> Result<(MessageType, MessageReader<'_>)> {
        let (kind, whole) = self.reading.next_start(&mut self.link)?;
        Ok((kind, MessageReader::new(self, whole)))
    }

    /// Sets the largest message accepted; `None` removes the limit.
    pub fn set_read_limit(&mut self, limit: Option<u64>) {
        lock(&self.link.shared.core).set_read_limit(limit);
    }

    /// Sets the time after which a waiting read fails with [`Error::Timeout`].
    pub fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        self.reading.read_deadline = deadline;
    }

    /// Bounds each reply the reader sends itself (a pong, the close echo)
    /// when the socket does not take it; `None` (the default) waits as long
    /// as it takes. A reply that passes it fails the write side for good.
    pub fn set_reply_deadline(&mut self, deadline: Option<Instant>) {
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

    /// A handle for control frames and closing from any thread.
    pub fn handle(&self) -> Handle<S> {
        Handle { shared: self.link.shared.clone() }
    }

    /// The subprotocol agreed in the handshake.
    pub fn subprotocol(&self) -> Option<&str> {
        self.link.shared.subprotocol.as_deref()
    }
}

impl<S: Split> ChunkSource for ReadHalf<S> {
    fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>> {
        self.reading.next_chunk(&mut self.link)
    }
}

/// The writing half of a split blocking connection (see [`Conn::split`]).
/// Every write goes out before the call returns.
pub struct WriteHalf<S: Split> {
    shared: Arc<Shared<S>>,
    write_deadline: Option<Instant>,
}

impl<S: Split> fmt::Debug for WriteHalf<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteHalf").field("role", &self.shared.role).finish_non_exhaustive()
    }
}

impl<S: Split> WriteHalf<S> {
    /// Sends a whole message; see [`Conn::write_message`].
    pub fn write_message(&mut self, kind: impl Into<MessageType>, data: impl AsRef<[u8]>) -> Result<()> {
        lock(&self.shared.core).send_message(kind.into().opcode(), data.as_ref())?;
        self.shared.pump(self.write_deadline, true)
    }

    /// Sends a text message.
    pub fn write_text(&mut self, text: impl AsRef<str>) -> Result<()> {
        self.write_message(MessageType::Text, text.as_ref())
    }

    /// Sends a binary message.
    pub fn write_binary(&mut self, data: impl AsRef<[u8]>) -> Result<()> {
        self.write_message(MessageType::Binary, data)
    }

    /// Sends a [`PreparedMessage`]; see [`Conn::write_prepared`].
    pub fn write_prepared(&mut self, message: &PreparedMessage) -> Result<()> {
        lock(&self.shared.core).send_prepared(message)?;
        self.shared.pump(self.write_deadline, true)
    }

    /// Sends a control frame with its own `deadline` for the write.
    pub fn write_control(
        &mut self,
        kind: MessageType,
        data: impl AsRef<[u8]>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        self.shared.write_control(kind, data.as_ref(), deadline)
    }

    /// Starts a message written piece by piece; see [`Conn::next_writer`].
    pub fn next_writer(&mut self, kind: MessageType) -> Result<MessageWriter<'_>> {
        lock(&self.shared.core).begin_message(kind)?;
        Ok(MessageWriter::new(self))
    }

    /// Runs the close handshake from this side: see [`Handle::close`].
    pub fn close(&mut self, frame: CloseFrame) -> Result<()> {
        self.shared.close(&frame, self.write_deadline)
    }

    /// Ends the connection at once, without a close frame; see [`Handle::close_now`].
    pub fn close_now(&mut self) {
        self.shared.close_now();
    }

    /// Sets the time after which a write fails with [`Error::Timeout`], for good.
    pub fn set_write_deadline(&mut self, deadline: Option<Instant>) {
        self.write_deadline = deadline;
    }

    /// Whether permessage-deflate was agreed.
    pub fn compression_negotiated(&self) -> bool {
        lock(&self.shared.core).compression_negotiated()
    }

    /// Turns compression of later messages on or off.
    pub fn enable_write_compression(&mut self, enable: bool) {
        lock(&self.shared.core).set_compression(enable);
    }

    /// Sets the compression level of later messages: −2 (Huffman only),
    /// −1 (default) or 0–9; others are refused (see
    /// [`crate::CompressionLevel`]).
    pub fn set_compression_level(&mut self, level: impl Into<crate::CompressionLevel>) -> Result<()> {
        let level = level.into().check()?;
        lock(&self.shared.core).set_compression_level(level);
        Ok(())
    }

    /// A handle for control frames and closing from any thread.
    pub fn handle(&self) -> Handle<S> {
        Handle { shared: self.shared.clone() }
    }

    /// The subprotocol agreed in the handshake.
    pub fn subprotocol(&self) -> Option<&str> {
        self.shared.subprotocol.as_deref()
    }
}

impl<S: Split> FragmentSink for WriteHalf<S> {
    fn stream(&mut self, data: &[u8]) -> Result<usize> {
        let n = lock(&self.shared.core).stream(data)?;
        self.shared.pump(self.write_deadline, true)?;
        Ok(n)
    }

    fn finish(&mut self) -> Result<()> {
        lock(&self.shared.core).finish_message()?;
        self.shared.pump(self.write_deadline, true)
    }

    fn flush(&mut self) -> Result<()> {
        self.shared.pump(self.write_deadline, true)
    }
}

/// Sends control frames and closes a split connection from any thread
/// (gorilla's "`Close` and `WriteControl` may be called concurrently with
/// all other methods"). Cheap to clone.
pub struct Handle<S: Split> {
    shared: Arc<Shared<S>>,
}

impl<S: Split> Clone for Handle<S> {
    fn clone(&self) -> Self {
        Handle { shared: self.shared.clone() }
    }
}

impl<S: Split> fmt::Debug for Handle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").field("role", &self.shared.role).finish_non_exhaustive()
    }
}

impl<S: Split> Handle<S> {
    /// Sends a close, ping or pong frame of at most 125 bytes, between
    /// whole frames of the writers, and returns once it is written.
    /// `deadline` bounds the write; passing it fails the write side for good.
    pub fn write_control(&self, kind: MessageType, data: impl AsRef<[u8]>, deadline: Option<Instant>) -> Result<()> {
        self.shared.write_control(kind, data.as_ref(), deadline)
    }

    /// Sends a ping; see [`Handle::write_control`].
    pub fn ping(&self, data: impl AsRef<[u8]>) -> Result<()> {
        self.write_control(MessageType::Ping, data, None)
    }

    /// Runs the close handshake from this side: sends `frame` (unless a
    /// close was sent already), waits up to the close timeout for the reader
    /// to see the peer's close, then shuts the socket down. When the peer's
    /// close does not come in time, reads end too, as with
    /// [`Handle::close_now`]. The read half must be read for the peer's
    /// close to be seen.
    pub fn close(&self, frame: CloseFrame) -> Result<()> {
        self.shared.close(&frame, None)
    }

    /// Shuts the socket down at once, without a close frame (gorilla's
    /// `Conn.Close`): writes fail, and a read blocked in another thread
    /// returns with an error without waiting for the peer.
    pub fn close_now(&self) {
        self.shared.close_now();
    }

    /// True once a close frame has been sent (or queued).
    pub fn is_close_sent(&self) -> bool {
        lock(&self.shared.core).is_close_sent()
    }

    /// True once the peer's close frame has been received.
    pub fn is_close_received(&self) -> bool {
        lock(&self.shared.core).is_close_received()
    }

    /// The subprotocol agreed in the handshake.
    pub fn subprotocol(&self) -> Option<&str> {
        self.shared.subprotocol.as_deref()
    }
}
