//! Messages encoded once and sent to many connections.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

use crate::message::MessageType;
use crate::proto::deflate::Deflater;

/// A message prepared for sending to many connections (gorilla's
/// `PreparedMessage`): a broadcast compresses its payload once per
/// compression variant (window size and level) instead of once per
/// connection. Send it with [`crate::WriteHalf::write_prepared`].
///
/// A compressed variant is made without reference to earlier messages, so it
/// suits connections with or without context takeover; a connection that
/// keeps its context starts it afresh after sending one.
pub struct PreparedMessage {
    kind: MessageType,
    data: Bytes,
    compressed: Mutex<HashMap<(u8, crate::CompressionLevel), Bytes>>,
}

impl fmt::Debug for PreparedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedMessage").field("kind", &self.kind).field("len", &self.data.len()).finish()
    }
}

impl PreparedMessage {
    /// Prepares a message of type `kind`.
    pub fn new(kind: MessageType, data: impl Into<Bytes>) -> Self {
        PreparedMessage { kind, data: data.into(), compressed: Mutex::new(HashMap::new()) }
    }

    /// The message type.
    pub fn kind(&self) -> MessageType {
        self.kind
    }

    /// The uncompressed payload.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The payload compressed with `window_bits` and `level`, made on first use.
    pub(crate) fn compressed(&self, window_bits: u8, level: crate::CompressionLevel) -> Bytes {
        let make = || {
            let mut out = BytesMut::new();
            Deflater::new(level, window_bits, true).compress_message(&self.data, &mut out);
            out.freeze()
        };
        match self.compressed.lock() {
            Ok(mut cache) => cache.entry((window_bits, level)).or_insert_with(make).clone(),
            Err(_) => make(),
        }
    }
}
