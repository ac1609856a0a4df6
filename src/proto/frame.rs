//! Frame headers: parse and encode (RFC 6455 §5.2).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```

use bytes::BufMut;

use super::{OpCode, ProtocolError};

/// The largest header: 2 fixed bytes, 8 length bytes, 4 mask bytes.
pub const MAX_HEADER_LEN: usize = 14;

/// The RSV1 bit as it appears in [`FrameHeader::rsv`] (claimed by permessage-deflate).
pub const RSV1: u8 = 0b100;
/// The RSV2 bit as it appears in [`FrameHeader::rsv`].
pub const RSV2: u8 = 0b010;
/// The RSV3 bit as it appears in [`FrameHeader::rsv`].
pub const RSV3: u8 = 0b001;

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the last frame of its message.
    pub fin: bool,
    /// The three reserved bits, RSV1 as the highest (`0b100`).
    pub rsv: u8,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// The masking key, present on frames sent by a client.
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Parses a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header (nothing
    /// is consumed; call again with more bytes), or the header and its length in
    /// bytes. Fails on a reserved opcode or a 64-bit length with its top bit set
    /// (RFC 6455 §5.2). Non-minimal length encodings are accepted, as the RFC
    /// does not forbid them for receivers.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, rest @ ..] = buf else {
            return Ok(None);
        };
        let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0f))?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, len_bytes) = match b1 & 0x7f {
            126 => match rest {
                [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
                _ => return Ok(None),
            },
            127 => match rest.get(..8) {
                Some(bytes) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(bytes);
                    let len = u64::from_be_bytes(be);
                    if len >> 63 != 0 {
                        return Err(ProtocolError::LengthTopBit);
                    }
                    (len, 8)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 0),
        };
        let mut header_len = 2 + len_bytes;
        let mask = if masked {
            match rest.get(len_bytes..len_bytes + 4) {
                Some(key) => {
                    header_len += 4;
                    Some([key[0], key[1], key[2], key[3]])
                }
                None => return Ok(None),
            }
        } else {
            None
        };
        let header = FrameHeader { fin: b0 & 0x80 != 0, rsv: (b0 >> 4) & 0x7, opcode, mask, payload_len };
        Ok(Some((header, header_len)))
    }

    /// The number of bytes [`FrameHeader::encode`] writes for this header.
    pub fn encoded_len(&self) -> usize {
        let len_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xffff => 2,
            _ => 8,
        };
        2 + len_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Writes the header with the shortest length encoding.
    pub fn encode(&self, out: &mut impl BufMut) {
        // Built on the stack and written with one call: a few `put_u8` calls
        // each check the buffer's room, which shows on small frames.
        let mut header = [0u8; MAX_HEADER_LEN];
        header[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut len = match self.payload_len {
            short @ 0..=125 => {
                header[1] = mask_bit | short as u8;
                2
            }
            medium @ 126..=0xffff => {
                header[1] = mask_bit | 126;
                header[2..4].copy_from_slice(&(medium as u16).to_be_bytes());
                4
            }
            long => {
                header[1] = mask_bit | 127;
                header[2..10].copy_from_slice(&long.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            header[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        out.put_slice(&header[..len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(opcode: OpCode, len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader { fin: true, rsv: 0, opcode, mask, payload_len: len }
    }

    #[test]
    fn encodes_each_length_form_at_its_boundaries() {
        for (len, expected_len) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (1 << 40, 10)] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let h = header(OpCode::Binary, len, mask);
                let mut out = Vec::new();
                h.encode(&mut out);
                let extra = if mask.is_some() { 4 } else { 0 };
                assert_eq!(out.len(), expected_len + extra);
                assert_eq!(h.encoded_len(), out.len());
                assert_eq!(FrameHeader::parse(&out), Ok(Some((h, out.len()))));
            }
        }
    }

    #[test]
    fn rfc_examples_parse() {
        // RFC 6455 §5.7: unmasked "Hello", masked "Hello", 256-byte and 64 KiB binary frames.
        let (h, n) = FrameHeader::parse(&[0x81, 0x05, b'H']).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode, h.payload_len, h.mask, n), (true, OpCode::Text, 5, None, 2));
        let (h, n) = FrameHeader::parse(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d]).unwrap().unwrap();
        assert_eq!((h.mask, n), (Some([0x37, 0xfa, 0x21, 0x3d]), 6));
        let (h, _) = FrameHeader::parse(&[0x82, 0x7e, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!(h.payload_len, 256);
        let (h, _) = FrameHeader::parse(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]).unwrap().unwrap();
        assert_eq!(h.payload_len, 65536);
    }

    #[test]
    fn incomplete_headers_ask_for_more_at_every_cut() {
        let mut full = Vec::new();
        header(OpCode::Binary, 70000, Some([9, 8, 7, 6])).encode(&mut full);
        for cut in 0..full.len() {
            assert_eq!(FrameHeader::parse(&full[..cut]), Ok(None), "cut {cut}");
        }
        assert!(FrameHeader::parse(&full).unwrap().is_some());
    }

    #[test]
    fn rejects_reserved_opcodes_and_a_64_bit_length_with_the_top_bit() {
        assert_eq!(FrameHeader::parse(&[0x83, 0x00]), Err(ProtocolError::ReservedOpcode(3)));
        assert_eq!(FrameHeader::parse(&[0x8b, 0x00]), Err(ProtocolError::ReservedOpcode(11)));
        let huge = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::parse(&huge), Err(ProtocolError::LengthTopBit));
    }

    #[test]
    fn keeps_fin_and_rsv_bits() {
        let (h, _) = FrameHeader::parse(&[0x71, 0x00]).unwrap().unwrap();
        assert!(!h.fin);
        assert_eq!(h.rsv, RSV1 | RSV2 | RSV3);
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(out, [0x71, 0x00]);
    }

    #[test]
    fn accepts_non_minimal_lengths() {
        let (h, n) = FrameHeader::parse(&[0x82, 0x7e, 0x00, 0x02]).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (2, 4));
    }
}
