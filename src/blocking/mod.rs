//! The blocking API (feature `blocking`): the same connection over
//! `std::io` streams, for a thread per connection.
//!
//! [`Conn`] drives the same sans-IO core ([`crate::proto::Connection`]) as
//! the async [`crate::Conn`], so every protocol rule — validation, the close
//! handshake, compression with context takeover, keepalive — is the same.
//! Reads block the calling thread; each write goes out before it returns.
//! Deadlines and keepalive use the stream's timeouts ([`Transport`]).
//!
//! One thread per connection is the model: a server accepts on one thread
//! and hands each connection to a thread of its own. When other threads
//! must write to it too (a broadcast), [`Conn::split`] gives a
//! [`ReadHalf`] for the connection's thread, a [`WriteHalf`], and
//! [`Handle`]s for control frames and closing from anywhere.

mod conn;
mod dial;
mod head_io;
mod proxy;
mod split;
mod upgrade;

pub use crate::upgrade::Upgrader;
pub use conn::{Conn, MessageReader, MessageWriter, Split, Transport};
pub use dial::{connect, connect_on, connect_with, ClientStream, ReadWrite, TlsConnect};
pub use split::{Handle, ReadHalf, WriteHalf};
pub use upgrade::{accept, accept_with};
