//! Messages as the application sees them.

use std::fmt;

use bytes::Bytes;

use crate::proto::{MessageKind, OpCode};

/// Every message type an application can write (gorilla's `TextMessage`,
/// `BinaryMessage`, `CloseMessage`, `PingMessage`, `PongMessage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// A UTF-8 text data message.
    Text,
    /// A binary data message.
    Binary,
    /// A close control message; its payload is a [`crate::CloseFrame`] encoding.
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

impl From<MessageKind> for MessageType {
    fn from(kind: MessageKind) -> Self {
        match kind {
            MessageKind::Text => MessageType::Text,
            MessageKind::Binary => MessageType::Binary,
        }
    }
}

/// A whole data message received from the peer.
///
/// Text messages have been validated as UTF-8 before they are returned.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Text or binary.
    pub kind: MessageKind,
    /// The payload. A message shares the read buffer it came in (no copy),
    /// so holding it keeps that buffer allocated — but never a buffer much
    /// larger than itself: a message of less than a quarter of a read buffer
    /// that grew past 64 KiB (for a large frame) is copied out of it. A
    /// small message thus keeps at most 64 KiB, and usually the read buffer
    /// size (4 KiB by default), allocated; copy it
    /// (`Bytes::copy_from_slice`) to keep many for long.
    pub data: Bytes,
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<String>) -> Self {
        Message { kind: MessageKind::Text, data: Bytes::from(text.into()) }
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Message { kind: MessageKind::Binary, data: data.into() }
    }

    /// True for a text message.
    pub fn is_text(&self) -> bool {
        self.kind == MessageKind::Text
    }

    /// The payload as text, for a text message (always valid UTF-8 when the
    /// message came from a connection); `None` for binary or invalid data.
    pub fn as_text(&self) -> Option<&str> {
        match self.kind {
            MessageKind::Text => simdutf8::basic::from_utf8(&self.data).ok(),
            MessageKind::Binary => None,
        }
    }

    /// The payload.
    pub fn into_data(self) -> Bytes {
        self.data
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_text() {
            Some(text) if text.len() <= 64 => write!(f, "Text({text:?})"),
            _ => write!(f, "{:?}({} bytes)", self.kind, self.data.len()),
        }
    }
}
