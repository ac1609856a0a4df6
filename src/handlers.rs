//! Handlers for received control frames, run inside the read methods.
//!
//! A handler cannot write to the connection itself (it runs inside a read
//! call); instead it asks for replies through its [`ControlContext`], and the
//! reader sends them, in order, before it reads any further. The defaults are
//! gorilla/websocket's: answer a ping with a pong carrying the same payload,
//! ignore pongs, echo a close frame's status code.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use bytes::Bytes;

use crate::error::Result;
use crate::proto::{CloseFrame, OpCode};

/// What a control-frame handler may do: queue replies and move the read deadline.
pub struct ControlContext<'a> {
    pub(crate) replies: &'a mut Vec<(OpCode, Bytes)>,
    pub(crate) read_deadline: &'a mut Option<Instant>,
}

impl ControlContext<'_> {
    /// Sends a pong with `payload` (at most 125 bytes; longer is cut).
    pub fn pong(&mut self, payload: impl Into<Bytes>) {
        self.replies.push((OpCode::Pong, truncate(payload.into())));
    }

    /// Sends a ping with `payload` (at most 125 bytes; longer is cut).
    pub fn ping(&mut self, payload: impl Into<Bytes>) {
        self.replies.push((OpCode::Ping, truncate(payload.into())));
    }

    /// Sends a close frame (once the close handshake is answered this way,
    /// the reader shuts the stream down after sending it).
    pub fn close(&mut self, frame: Option<CloseFrame>) {
        let payload = frame.map(|f| f.encode()).unwrap_or_default();
        self.replies.push((OpCode::Close, payload));
    }

    /// Sets the read deadline of the connection (`None` clears it), as a pong
    /// handler of a keepalive loop does.
    pub fn set_read_deadline(&mut self, deadline: Option<Instant>) {
        *self.read_deadline = deadline;
    }

    /// The read deadline in force.
    pub fn read_deadline(&self) -> Option<Instant> {
        *self.read_deadline
    }
}

fn truncate(mut payload: Bytes) -> Bytes {
    payload.truncate(125);
    payload
}

/// Runs for each ping or pong received, with its payload.
pub type PingPongHandler = Arc<dyn Fn(&[u8], &mut ControlContext<'_>) -> Result<()> + Send + Sync>;

/// Runs for a received close frame (`None` when it carried no status code).
pub type CloseHandler = Arc<dyn Fn(Option<&CloseFrame>, &mut ControlContext<'_>) -> Result<()> + Send + Sync>;

/// The default ping handler: a pong with the same payload.
pub fn default_ping_handler() -> PingPongHandler {
    static HANDLER: LazyLock<PingPongHandler> = LazyLock::new(|| {
        Arc::new(|payload, ctx| {
            ctx.pong(Bytes::copy_from_slice(payload));
            Ok(())
        })
    });
    HANDLER.clone()
}

/// The default pong handler: nothing.
pub fn default_pong_handler() -> PingPongHandler {
    static HANDLER: LazyLock<PingPongHandler> = LazyLock::new(|| Arc::new(|_, _| Ok(())));
    HANDLER.clone()
}

/// The default close handler: a close frame with the same code and an empty
/// reason (an empty payload when the peer sent no code).
pub fn default_close_handler() -> CloseHandler {
    static HANDLER: LazyLock<CloseHandler> = LazyLock::new(|| {
        Arc::new(|frame, ctx| {
            ctx.close(frame.map(|f| CloseFrame::new(f.code, "")));
            Ok(())
        })
    });
    HANDLER.clone()
}

#[derive(Clone)]
#[cfg_attr(not(any(feature = "tokio", feature = "blocking")), allow(dead_code))]
pub(crate) struct Handlers {
    pub(crate) ping: PingPongHandler,
    pub(crate) pong: PingPongHandler,
    pub(crate) close: CloseHandler,
}

#[cfg(any(feature = "tokio", feature = "blocking"))]
impl Handlers {
    /// Sets the ping handler; `None` restores the default.
    pub(crate) fn set_ping(&mut self, handler: Option<PingPongHandler>) {
        self.ping = handler.unwrap_or_else(default_ping_handler);
    }

    /// Sets the pong handler; `None` restores the default.
    pub(crate) fn set_pong(&mut self, handler: Option<PingPongHandler>) {
        self.pong = handler.unwrap_or_else(default_pong_handler);
    }

    /// Sets the close handler; `None` restores the default.
    pub(crate) fn set_close(&mut self, handler: Option<CloseHandler>) {
        self.close = handler.unwrap_or_else(default_close_handler);
    }
}

impl Default for Handlers {
    fn default() -> Self {
        Handlers { ping: default_ping_handler(), pong: default_pong_handler(), close: default_close_handler() }
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handlers { .. }")
    }
}
