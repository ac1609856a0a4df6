//! `FrameHeader::parse` on arbitrary bytes: never panics, reports only what the
//! bytes say, and a parsed header re-encodes (shortest form) and parses back
//! identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use silverback::proto::frame::MAX_HEADER_LEN;
use silverback::proto::{FrameHeader, OpCode, ProtocolError};

fuzz_target!(|data: &[u8]| {
    match FrameHeader::parse(data) {
        Ok(Some((header, len))) => {
            assert!((2..=MAX_HEADER_LEN).contains(&len), "header length {len}");
            assert!(len <= data.len());
            assert!(header.rsv <= 0b111);
            assert_eq!(header.payload_len >> 63, 0, "64-bit length with the top bit accepted");
            assert_eq!(header.fin, data[0] & 0x80 != 0);
            assert_eq!(header.opcode.as_u8(), data[0] & 0x0f);
            assert_eq!(header.mask.is_some(), data[1] & 0x80 != 0);
            if let Some(key) = header.mask {
                assert_eq!(key[..], data[len - 4..len]);
            }

            // Every strict prefix of the header asks for more bytes.
            for cut in 0..len {
                assert_eq!(FrameHeader::parse(&data[..cut]), Ok(None), "prefix of {cut} bytes");
            }

            // Re-encode: the shortest form, which parses back to the same header.
            let mut out = Vec::new();
            header.encode(&mut out);
            assert_eq!(out.len(), header.encoded_len());
            assert!(out.len() <= len, "re-encoding is longer than the input");
            if out.len() == len {
                // Same length form: the bytes are the input's.
                assert_eq!(out[..], data[..len]);
            }
            assert_eq!(FrameHeader::parse(&out), Ok(Some((header, out.len()))));
            // Trailing payload bytes do not change the parse.
            out.extend_from_slice(&data[len..]);
            assert_eq!(FrameHeader::parse(&out), Ok(Some((header, header.encoded_len()))));
        }
        Ok(None) => {
            // Only a header cut short: fewer bytes than its length form needs.
            if data.len() >= 2 {
                let len_bytes = match data[1] & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                let mask_bytes = if data[1] & 0x80 != 0 { 4 } else { 0 };
                assert!(data.len() < 2 + len_bytes + mask_bytes, "complete header reported as incomplete");
            }
        }
        Err(ProtocolError::ReservedOpcode(op)) => {
            assert_eq!(op, data[0] & 0x0f);
            assert!(OpCode::from_u8(op).is_none());
        }
        Err(ProtocolError::LengthTopBit) => {
            assert_eq!(data[1] & 0x7f, 127);
            assert!(data.len() >= 10 && data[2] & 0x80 != 0);
        }
        Err(other) => panic!("unexpected error from FrameHeader::parse: {other:?}"),
    }
});
