//! Reading an HTTP head off a stream into a sans-IO reader: the one async
//! loop under the server's accept, the client's dial and the proxy tunnel,
//! and the [`ReceiveHead`] trait it feeds, which the blocking loop
//! (`crate::blocking::head_io`) feeds too.

#[cfg(feature = "tokio")]
use std::io;

use http::{HeaderMap, Request, Response};
#[cfg(feature = "tokio")]
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::proto::client_handshake::{ClientAccepted, ClientError, ClientHandshake};
use crate::proto::handshake::Rejection;
use crate::proto::head::{Head, HeadError, HeadReader};
use crate::proto::server_handshake::{Accepted, Refusal, ServerHandshake, ServerStep};

/// Something that takes the bytes of an HTTP head until it has an answer.
pub(crate) trait ReceiveHead {
    /// The answer once the head is complete (or found bad).
    type Output;
    /// The most bytes the head may still take.
    fn room(&self) -> usize;
    /// Takes `data`; `None` while more is needed.
    fn receive(&mut self, data: &[u8]) -> Option<Self::Output>;
}

/// Reads from `stream` into `reader` until it answers, at most `chunk` bytes
/// at a time and never more than its room. `Ok(None)` when the stream ends
/// first.
#[cfg(feature = "tokio")]
pub(crate) async fn read_head<S, R>(stream: &mut S, reader: &mut R, chunk: usize) -> io::Result<Option<R::Output>>
where
    S: AsyncRead + Unpin,
    R: ReceiveHead,
{
    let mut buf = [0u8; 1024];
    loop {
        // A reader with no room left has answered already; one byte makes it
        // say so.
        let want = reader.room().clamp(1, chunk.clamp(1, buf.len()));
        let n = stream.read(&mut buf[..want]).await?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(output) = reader.receive(&buf[..n]) {
            return Ok(Some(output));
        }
    }
}

impl<F> ReceiveHead for ServerHandshake<'_, F>
where
    F: FnOnce(&Request<()>) -> Result<HeaderMap, Rejection>,
{
    type Output = Result<Accepted, Refusal>;

    fn room(&self) -> usize {
        ServerHandshake::room(self)
    }

    fn receive(&mut self, data: &[u8]) -> Option<Self::Output> {
        match ServerHandshake::receive(self, data) {
            ServerStep::NeedMore => None,
            ServerStep::Accept(accepted) => Some(Ok(accepted)),
            ServerStep::Reject(refusal) => Some(Err(refusal)),
        }
    }
}

impl ReceiveHead for ClientHandshake {
    type Output = Result<ClientAccepted, ClientError>;

    fn room(&self) -> usize {
        ClientHandshake::room(self)
    }

    fn receive(&mut self, data: &[u8]) -> Option<Self::Output> {
        ClientHandshake::receive(self, data).transpose()
    }
}

/// A response head on its own (a proxy's reply to `CONNECT`).
impl ReceiveHead for HeadReader {
    type Output = Result<Head<Response<()>>, HeadError>;

    fn room(&self) -> usize {
        HeadReader::room(self)
    }

    fn receive(&mut self, data: &[u8]) -> Option<Self::Output> {
        self.receive_response(data).transpose()
    }
}
