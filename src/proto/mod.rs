//! The sans-IO protocol core: bytes in, events out; messages in, bytes out.
//!
//! Nothing here touches a socket, a task or a clock. The async [`crate::Conn`]
//! drives this core over tokio I/O; every protocol rule lives here once.
//!
//! - [`frame`]: frame header parse and encode.
//! - [`mask`]: payload masking.
//! - [`utf8`]: incremental UTF-8 validation.
//! - [`close`]: close codes and close frames.
//! - [`connection`]: one endpoint as a state machine, built on the rest.
//! - [`decoder`]: the read side, a validating state machine.
//! - [`encoder`]: the write side.
//! - [`head`]: an HTTP/1.1 head read from bytes as they arrive.
//! - [`handshake`]: the rules of the opening handshake (keys, tokens, origin).
//! - [`server_handshake`]: the server side of the opening handshake.
//! - [`client_handshake`]: the client side of the opening handshake.

mod blocks;
pub mod client_handshake;
pub mod close;
pub mod connection;
pub mod decoder;
pub mod deflate;
pub mod encoder;
mod error;
pub mod extensions;
pub mod frame;
pub mod handshake;
pub mod head;
pub(crate) mod keepalive;
pub mod mask;
mod opcode;
pub(crate) mod outbox;
pub(crate) mod sender;
pub mod server_handshake;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use connection::Connection;
pub use decoder::{Decoder, Event};
pub use error::ProtocolError;
pub use frame::FrameHeader;
pub use opcode::OpCode;

/// Which end of the connection this endpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepted the connection: receives masked frames, sends unmasked ones.
    Server,
    /// Opened the connection: sends masked frames, receives unmasked ones.
    Client,
}

/// The type of a message (gorilla's `TextMessage`, `BinaryMessage`,
/// `CloseMessage`, `PingMessage`, `PongMessage`). Messages received whole
/// or streamed are text or binary; the control types are for writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// A UTF-8 text data message.
    Text,
    /// A binary data message.
    Binary,
    /// A close control message; its payload is a [`CloseFrame`] encoding.
    Close,
    /// A ping control message.
    Ping,
    /// A pong control message.
    Pong,
}

impl MessageType {
    /// The opcode of the (first) frame of such a message.
    pub fn opcode(self) -> OpCode {
        match self {
            MessageType::Text => OpCode::Text,
            MessageType::Binary => OpCode::Binary,
            MessageType::Close => OpCode::Close,
            MessageType::Ping => OpCode::Ping,
            MessageType::Pong => OpCode::Pong,
        }
    }

    /// True for close, ping and pong.
    pub fn is_control(self) -> bool {
        self.opcode().is_control()
    }
}
