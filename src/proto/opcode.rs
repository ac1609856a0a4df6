//! Frame opcodes (RFC 6455 §5.2, §11.8).

use std::fmt;

/// The 4-bit opcode of a WebSocket frame.
///
/// Reserved opcodes (3–7, 11–15) are not representable: [`OpCode::from_u8`]
/// returns `None` for them and the decoder fails the connection with 1002.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// `0x0`: continues a fragmented data message.
    Continuation,
    /// `0x1`: first frame of a text message.
    Text,
    /// `0x2`: first frame of a binary message.
    Binary,
    /// `0x8`: close control frame.
    Close,
    /// `0x9`: ping control frame.
    Ping,
    /// `0xA`: pong control frame.
    Pong,
}

impl OpCode {
    /// Decodes the low four bits of a frame's first byte. Reserved values give `None`.
    pub fn from_u8(bits: u8) -> Option<OpCode> {
        match bits {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// The wire value of this opcode.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// True for close, ping and pong (RFC 6455 §5.5: opcodes with the high bit set).
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

impl fmt::Display for OpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            OpCode::Continuation => "continuation",
            OpCode::Text => "text",
            OpCode::Binary => "binary",
            OpCode::Close => "close",
            OpCode::Ping => "ping",
            OpCode::Pong => "pong",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_defined_opcode_round_trips_and_reserved_ones_are_rejected() {
        for bits in 0u8..16 {
            match OpCode::from_u8(bits) {
                Some(op) => assert_eq!(op.as_u8(), bits),
                None => assert!(matches!(bits, 3..=7 | 11..=15), "{bits} wrongly rejected"),
            }
        }
    }

    #[test]
    fn control_opcodes_are_the_high_half() {
        assert!(OpCode::Close.is_control());
        assert!(OpCode::Ping.is_control());
        assert!(OpCode::Pong.is_control());
        assert!(!OpCode::Text.is_control());
        assert!(!OpCode::Binary.is_control());
        assert!(!OpCode::Continuation.is_control());
    }
}
