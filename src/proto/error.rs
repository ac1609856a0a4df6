//! Protocol violations and the close code each one calls for.

use std::fmt;

use super::CloseCode;

/// A violation of RFC 6455 by the peer. Each variant maps to the close code
/// that the connection is failed with ([`ProtocolError::close_code`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An opcode from the reserved ranges 3–7 or 11–15 (RFC 6455 §5.2).
    ReservedOpcode(u8),
    /// A 64-bit payload length with its most significant bit set (RFC 6455 §5.2).
    LengthTopBit,
    /// RSV bits set that no negotiated extension gives a meaning to (RFC 6455 §5.2).
    ReservedBits(u8),
    /// A server received an unmasked frame (RFC 6455 §5.1).
    UnmaskedFrame,
    /// A client received a masked frame (RFC 6455 §5.1).
    MaskedFrame,
    /// A control frame longer than 125 bytes (RFC 6455 §5.5).
    ControlFrameTooLong(u64),
    /// A control frame without FIN (RFC 6455 §5.5: control frames are never fragmented).
    FragmentedControlFrame,
    /// A continuation frame with no fragmented message open (RFC 6455 §5.4).
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is still open (RFC 6455 §5.4).
    ExpectedContinuation,
    /// A text message, or a close reason, that is not UTF-8 (RFC 6455 §8.1).
    InvalidUtf8,
    /// A close frame with a one-byte payload (RFC 6455 §5.5.1).
    CloseFrameTooShort,
    /// A close frame with a code that may not be sent (RFC 6455 §7.4).
    InvalidCloseCode(u16),
    /// A compressed message whose data cannot be inflated (RFC 7692 §6.2).
    InvalidCompressedData(String),
    /// A frame longer than the frame size limit.
    FrameTooBig {
        /// The frame's payload length.
        size: u64,
        /// The limit in force.
        limit: u64,
    },
    /// A message split into more frames than allowed (a flood of fragments).
    TooManyFragments {
        /// The limit in force.
        limit: u32,
    },
    /// A message longer than the read limit.
    MessageTooBig {
        /// The size the message reached, in bytes.
        size: u64,
        /// The limit in force.
        limit: u64,
    },
}

impl ProtocolError {
    /// The close code to fail the connection with: 1007 for bad UTF-8, 1009 for
    /// an over-limit message or frame, 1008 for too many fragments, 1002 for
    /// everything else.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 => CloseCode::INVALID_FRAME_PAYLOAD_DATA,
            ProtocolError::MessageTooBig { .. } | ProtocolError::FrameTooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            ProtocolError::TooManyFragments { .. } => CloseCode::POLICY_VIOLATION,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// The short reason sent in the close frame that fails the connection,
    /// so that the peer can tell what it did wrong: ASCII, well under the
    /// 123 bytes a close reason may take, and without the variable details
    /// of the [`fmt::Display`] text.
    pub fn close_reason(&self) -> &'static str {
        match self {
            ProtocolError::ReservedOpcode(_) => "reserved opcode",
            ProtocolError::LengthTopBit => "invalid payload length",
            ProtocolError::ReservedBits(_) => "reserved bits set",
            ProtocolError::UnmaskedFrame => "unmasked frame from client",
            ProtocolError::MaskedFrame => "masked frame from server",
            ProtocolError::ControlFrameTooLong(_) => "control frame too long",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::UnexpectedContinuation => "unexpected continuation frame",
            ProtocolError::ExpectedContinuation => "expected continuation frame",
            ProtocolError::InvalidUtf8 => "invalid UTF-8",
            ProtocolError::CloseFrameTooShort => "close frame too short",
            ProtocolError::InvalidCloseCode(_) => "invalid close code",
            ProtocolError::InvalidCompressedData(_) => "invalid compressed data",
            ProtocolError::FrameTooBig { .. } => "frame too big",
            ProtocolError::TooManyFragments { .. } => "too many fragments",
            ProtocolError::MessageTooBig { .. } => "message too big",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedOpcode(op) => write!(f, "reserved opcode {op}"),
            ProtocolError::LengthTopBit => f.write_str("64-bit payload length has its top bit set"),
            ProtocolError::ReservedBits(bits) => write!(f, "reserved bits set without an extension (RSV={bits:03b})"),
            ProtocolError::UnmaskedFrame => f.write_str("client frame is not masked"),
            ProtocolError::MaskedFrame => f.write_str("server frame is masked"),
            ProtocolError::ControlFrameTooLong(len) => write!(f, "control frame payload of {len} bytes exceeds 125"),
            ProtocolError::FragmentedControlFrame => f.write_str("control frame is fragmented (FIN not set)"),
            ProtocolError::UnexpectedContinuation => f.write_str("continuation frame without a message to continue"),
            ProtocolError::ExpectedContinuation => f.write_str("new data frame inside a fragmented message"),
            ProtocolError::InvalidUtf8 => f.write_str("invalid UTF-8 in text message or close reason"),
            ProtocolError::CloseFrameTooShort => f.write_str("close frame payload of one byte"),
            ProtocolError::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            ProtocolError::FrameTooBig { size, limit } => {
                write!(f, "frame of {size} bytes exceeds the frame size limit of {limit}")
            }
            ProtocolError::TooManyFragments { limit } => write!(f, "message split into more than {limit} frames"),
            ProtocolError::InvalidCompressedData(why) => write!(f, "invalid compressed data: {why}"),
            ProtocolError::MessageTooBig { size, limit } => {
                write!(f, "message of at least {size} bytes exceeds the read limit of {limit}")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_reason_is_short_ascii() {
        let all = [
            ProtocolError::ReservedOpcode(3),
            ProtocolError::LengthTopBit,
            ProtocolError::ReservedBits(4),
            ProtocolError::UnmaskedFrame,
            ProtocolError::MaskedFrame,
            ProtocolError::ControlFrameTooLong(126),
            ProtocolError::FragmentedControlFrame,
            ProtocolError::UnexpectedContinuation,
            ProtocolError::ExpectedContinuation,
            ProtocolError::InvalidUtf8,
            ProtocolError::CloseFrameTooShort,
            ProtocolError::InvalidCloseCode(1005),
            ProtocolError::InvalidCompressedData("bad".into()),
            ProtocolError::FrameTooBig { size: 2, limit: 1 },
            ProtocolError::TooManyFragments { limit: 1 },
            ProtocolError::MessageTooBig { size: 2, limit: 1 },
        ];
        for violation in all {
            let reason = violation.close_reason();
            assert!(!reason.is_empty() && reason.len() <= 123 && reason.is_ascii(), "{violation:?}: {reason:?}");
        }
    }
}
