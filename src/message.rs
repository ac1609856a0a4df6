//! Messages as the application sees them.

use std::fmt;

use bytes::Bytes;

pub use crate::proto::MessageType;

/// A whole data message received from the peer.
///
/// Text messages have been validated as UTF-8 before they are returned.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Text or binary.
    pub kind: MessageType,
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
        Message { kind: MessageType::Text, data: Bytes::from(text.into()) }
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Message { kind: MessageType::Binary, data: data.into() }
    }

    /// True for a text message.
    pub fn is_text(&self) -> bool {
        self.kind == MessageType::Text
    }

    /// The payload as text, for a text message (always valid UTF-8 when the
    /// message came from a connection); `None` for binary or invalid data.
    pub fn as_text(&self) -> Option<&str> {
        match self.kind {
            MessageType::Text => simdutf8::basic::from_utf8(&self.data).ok(),
            _ => None,
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
