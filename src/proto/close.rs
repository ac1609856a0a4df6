//! Close codes and close frames (RFC 6455 §5.5.1, §7.4).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::utf8;

/// A close status code (RFC 6455 §7.4).
///
/// Any `u16` can be held, so codes from the registry that this crate does not
/// name and the 3000–4999 ranges for libraries and applications are kept as
/// they are. [`CloseCode::is_allowed_on_wire`] tells which codes may appear in a
/// close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no status code was present. Never sent; reported locally.
    pub const NO_STATUS_RECEIVED: CloseCode = CloseCode(1005);
    /// 1006: the connection ended without a close frame. Never sent; reported locally.
    pub const ABNORMAL_CLOSURE: CloseCode = CloseCode(1006);
    /// 1007: a message's data did not match its type (for example, text that is not UTF-8).
    pub const INVALID_FRAME_PAYLOAD_DATA: CloseCode = CloseCode(1007);
    /// 1008: a message broke the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message was too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected the server to negotiate an extension.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_SERVER_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway or proxy received an invalid response upstream.
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1015: the TLS handshake failed. Never sent; reported locally.
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// Whether this code may appear in a close frame (RFC 6455 §7.4.1, §7.4.2 and the IANA
    /// registry): 1000–1003, 1007–1014 and 3000–4999. 1004, 1005, 1006 and 1015 are
    /// reserved or local-only; everything else below 3000 is unassigned.
    pub fn is_allowed_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// A short description of a registered code.
    pub fn description(self) -> Option<&'static str> {
        Some(match self.0 {
            1000 => "normal",
            1001 => "going away",
            1002 => "protocol error",
            1003 => "unsupported data",
            1005 => "no status",
            1006 => "abnormal closure",
            1007 => "invalid payload data",
            1008 => "policy violation",
            1009 => "message too big",
            1010 => "mandatory extension missing",
            1011 => "internal server error",
            1012 => "service restart",
            1013 => "try again later",
            1014 => "bad gateway",
            1015 => "TLS handshake error",
            _ => return None,
        })
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.description() {
            Some(text) => write!(f, "{} ({})", self.0, text),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Why a received close payload is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseFrameError {
    /// A one-byte payload: too short for a code (RFC 6455 §5.5.1). Close with 1002.
    TooShort,
    /// A code that may not be sent on the wire. Close with 1002.
    InvalidCode(u16),
    /// The reason is not UTF-8 (RFC 6455 §5.5.1). Close with 1007.
    InvalidReason,
}

/// The payload of a close frame: a status code and a UTF-8 reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason, at most 123 bytes on the wire.
    pub reason: String,
}

/// The longest reason that fits a control frame: 125 bytes less the two code bytes.
pub const MAX_REASON_LEN: usize = 123;

impl CloseFrame {
    /// A close frame with the given code and reason.
    pub fn new(code: impl Into<CloseCode>, reason: impl Into<String>) -> Self {
        CloseFrame { code: code.into(), reason: reason.into() }
    }

    /// Parses a received close payload. An empty payload carries no code and
    /// gives `Ok(None)`; the receiver reports 1005 for it.
    pub fn parse(payload: &[u8]) -> Result<Option<CloseFrame>, CloseFrameError> {
        match payload {
            [] => Ok(None),
            [_] => Err(CloseFrameError::TooShort),
            [hi, lo, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                if !code.is_allowed_on_wire() {
                    return Err(CloseFrameError::InvalidCode(code.0));
                }
                utf8::validate(reason).map_err(|_| CloseFrameError::InvalidReason)?;
                // Validated just above, so this conversion does not fail.
                let reason = String::from_utf8_lossy(reason).into_owned();
                Ok(Some(CloseFrame { code, reason }))
            }
        }
    }

    /// Encodes the payload to send: the code in network order, then the reason,
    /// cut at a character boundary so the whole fits in 125 bytes. Codes that may
    /// not be sent (1005, 1006, 1015, …) give an empty payload, as gorilla's
    /// `FormatCloseMessage` does for 1005.
    pub fn encode(&self) -> Bytes {
        if !self.code.is_allowed_on_wire() {
            return Bytes::new();
        }
        let mut end = self.reason.len().min(MAX_REASON_LEN);
        while !self.reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut out = BytesMut::with_capacity(2 + end);
        out.put_u16(self.code.0);
        out.put_slice(&self.reason.as_bytes()[..end]);
        out.freeze()
    }
}

impl fmt::Display for CloseFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.reason)
        }
    }
}

/// The code a received close frame reports: RFC 6455 §7.1.5, a close
/// without a code is reported as 1005 (no status received).
pub(crate) fn received_code(frame: Option<&CloseFrame>) -> CloseCode {
    frame.map_or(CloseCode::NO_STATUS_RECEIVED, |f| f.code)
}

/// What every read reports once the peer's close frame has arrived.
pub(crate) fn closed_by_peer(frame: Option<&CloseFrame>) -> crate::error::Error {
    crate::error::Error::Closed(crate::error::CloseError {
        code: received_code(frame),
        reason: frame.map(|f| f.reason.clone()).unwrap_or_default(),
    })
}

/// The close frame that fails the connection for `violation` (RFC 6455
/// §7.1.7): its code and a short reason naming the violation.
pub(crate) fn failing_close(violation: &super::ProtocolError) -> bytes::Bytes {
    CloseFrame::new(violation.close_code(), violation.close_reason()).encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_follow_the_registry() {
        for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999] {
            assert!(CloseCode(code).is_allowed_on_wire(), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!CloseCode(code).is_allowed_on_wire(), "{code}");
        }
    }

    #[test]
    fn parse_accepts_empty_and_valid_payloads() {
        assert_eq!(CloseFrame::parse(&[]), Ok(None));
        assert_eq!(CloseFrame::parse(&[0x03, 0xe8]), Ok(Some(CloseFrame::new(1000u16, ""))));
        assert_eq!(CloseFrame::parse(b"\x0f\xa0bye \xc3\xa9"), Ok(Some(CloseFrame::new(4000u16, "bye é"))));
    }

    #[test]
    fn parse_rejects_bad_payloads() {
        assert_eq!(CloseFrame::parse(&[0x03]), Err(CloseFrameError::TooShort));
        assert_eq!(CloseFrame::parse(&[0x03, 0xed]), Err(CloseFrameError::InvalidCode(1005)));
        assert_eq!(CloseFrame::parse(&[0x00, 0x00]), Err(CloseFrameError::InvalidCode(0)));
        assert_eq!(CloseFrame::parse(b"\x03\xe8\xff"), Err(CloseFrameError::InvalidReason));
    }

    #[test]
    fn encode_truncates_long_reasons_on_a_char_boundary() {
        let long = "é".repeat(100); // 200 bytes
        let payload = CloseFrame::new(1000u16, long).encode();
        assert!(payload.len() <= 125);
        assert_eq!(payload.len(), 2 + 122);
        let parsed = CloseFrame::parse(&payload).unwrap().unwrap();
        assert_eq!(parsed.reason, "é".repeat(61));
    }

    #[test]
    fn local_only_codes_encode_as_empty() {
        assert!(CloseFrame::new(CloseCode::NO_STATUS_RECEIVED, "x").encode().is_empty());
        assert!(CloseFrame::new(CloseCode::ABNORMAL_CLOSURE, "").encode().is_empty());
    }

    #[test]
    fn display_names_registered_codes() {
        assert_eq!(CloseFrame::new(1000u16, "bye").to_string(), "1000 (normal): bye");
        assert_eq!(CloseFrame::new(4000u16, "").to_string(), "4000");
    }
}
