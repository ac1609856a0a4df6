//! The server's opening handshake over a blocking stream.

use std::io;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use http::{HeaderMap, Request};

use super::conn::{Conn, Transport};
use crate::error::{Error, Result};
use crate::proto::handshake::Rejection;
use crate::proto::server_handshake::{Accepted, ServerHandshake, ServerStep};
use crate::proto::Role;
use crate::upgrade::{handshake_error, Upgrader, REFUSAL_LINGER_BYTES, REFUSAL_LINGER_TIME};

/// Reads the opening handshake from `stream`, answers it by `upgrader`'s
/// options (origin policy, subprotocols, compression, limits) within its
/// handshake timeout, and returns the connection. A bad request is answered
/// with its status and a plain-text reason, the stream is shut down (after
/// discarding what the client still sends, for at most 1 s and 64 KiB) and
/// [`Error::RequestRefused`] returned. The blocking counterpart of
/// [`Upgrader::accept`](crate::Upgrader).
pub fn accept<S: Transport>(upgrader: &Upgrader, stream: S) -> Result<Conn<S>> {
    accept_with(upgrader, stream, |_| Ok(HeaderMap::new()))
}

/// Like [`accept`], with a callback that sees the request before it is
/// accepted and returns extra response headers or a rejection (see
/// `Upgrader::accept_with`).
pub fn accept_with<S, F>(upgrader: &Upgrader, mut stream: S, callback: F) -> Result<Conn<S>>
where
    S: Transport,
    F: FnOnce(&Request<()>) -> std::result::Result<HeaderMap, Rejection>,
{
    let deadline = upgrader.accept_timeout().map(|limit| Instant::now() + limit);
    let mut handshake = ServerHandshake::new(upgrader.policy(), upgrader.head_limits(), callback);
    let outcome = match read_request(&mut stream, &mut handshake, deadline) {
        Ok(ServerStep::Accept(accepted)) => {
            answer(&mut stream, &accepted.response_bytes(), deadline).map(|()| accepted).map_err(timeout_or_io)
        }
        Ok(ServerStep::Reject(refusal)) => {
            if answer(&mut stream, &refusal.response_bytes(), deadline).is_ok() {
                linger(&mut stream);
            }
            Err(handshake_error(refusal))
        }
        Ok(ServerStep::NeedMore) => Err(Error::Io(io::ErrorKind::UnexpectedEof.into())),
        Err(e) => Err(timeout_or_io(e)),
    };
    let accepted: Accepted = match outcome {
        Ok(accepted) => accepted,
        Err(e) => {
            let _ = stream.shutdown(Shutdown::Both);
            return Err(e);
        }
    };
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    let config = upgrader.config_for(&accepted);
    Ok(Conn::from_raw(stream, Role::Server, config, accepted.protocol, &accepted.early))
}

/// Reads the request head into `handshake` until it decides; `NeedMore`
/// when the stream ends first.
fn read_request<S, F>(
    stream: &mut S,
    handshake: &mut ServerHandshake<'_, F>,
    deadline: Option<Instant>,
) -> io::Result<ServerStep>
where
    S: Transport,
    F: FnOnce(&Request<()>) -> std::result::Result<HeaderMap, Rejection>,
{
    let mut buf = [0u8; 1024];
    loop {
        stream.set_read_timeout(remaining(deadline)?)?;
        // Never more than the head may take, so nothing past its bound is
        // taken off the stream; one byte when it has no room, to be refused.
        let want = handshake.room().clamp(1, buf.len());
        let n = match stream.read(&mut buf[..want]) {
            Ok(0) => return Ok(ServerStep::NeedMore),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        match handshake.receive(&buf[..n]) {
            ServerStep::NeedMore => {}
            decided => return Ok(decided),
        }
    }
}

/// Shuts down the write side after a refusal's response, then reads and
/// discards what the client still sends until it closes, within the bounds
/// of the async accept: closing with unread bytes would make the kernel
/// send a TCP reset that can destroy the response.
fn linger<S: Transport>(stream: &mut S) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + REFUSAL_LINGER_TIME;
    let mut buf = [0u8; 4096];
    let mut left = REFUSAL_LINGER_BYTES;
    while left > 0 {
        let Ok(Some(timeout)) = remaining(Some(deadline)) else { return };
        if stream.set_read_timeout(Some(timeout)).is_err() {
            return;
        }
        let want = left.min(buf.len());
        match stream.read(&mut buf[..want]) {
            Ok(0) => return,
            Ok(n) => left -= n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn answer<S: Transport>(stream: &mut S, response: &[u8], deadline: Option<Instant>) -> io::Result<()> {
    stream.set_write_timeout(remaining(deadline)?)?;
    stream.write_all(response)?;
    stream.flush()
}

/// The time left until `deadline`, as a socket timeout; an error once it passed.
fn remaining(deadline: Option<Instant>) -> io::Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some(at) => match at.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(io::ErrorKind::TimedOut.into()),
        },
    }
}

fn timeout_or_io(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::Timeout,
        _ => Error::Io(e),
    }
}
