//! The write side of the protocol: frames out.
//!
//! Masking keys come from the caller, so this module has no randomness of its
//! own; the connection layer draws a fresh key per client frame.

use bytes::{BufMut, BytesMut};

use super::frame::FrameHeader;
use super::mask::apply_mask;
use super::OpCode;

/// Test support (for the benchmarks and property tests), not part of the
/// API: a connection encodes its frames through [`super::Connection`].
///
/// Appends one whole frame to `dst`: the header, then `payload`, masked with
/// `mask` when one is given (client frames, RFC 6455 §5.3).
#[doc(hidden)]
pub fn encode_frame(dst: &mut BytesMut, opcode: OpCode, fin: bool, rsv: u8, mask: Option<[u8; 4]>, payload: &[u8]) {
    if let (Some(key), 0..=SMALL_MASKED) = (mask, payload.len()) {
        // A small client frame: header and payload are assembled and masked
        // on the stack, then appended with one copy.
        let mut frame = [0u8; 6 + SMALL_MASKED];
        frame[0] = (u8::from(fin) << 7) | ((rsv & 0x7) << 4) | opcode.as_u8();
        frame[1] = 0x80 | payload.len() as u8;
        frame[2..6].copy_from_slice(&key);
        let end = 6 + payload.len();
        frame[6..end].copy_from_slice(payload);
        apply_mask(&mut frame[6..end], key, 0);
        dst.put_slice(&frame[..end]);
        return;
    }
    if mask.is_none() && payload.len() <= SMALL_MASKED {
        // A small server frame: a two-byte header, then the payload.
        let first = (u8::from(fin) << 7) | ((rsv & 0x7) << 4) | opcode.as_u8();
        dst.reserve(2 + payload.len());
        dst.extend_from_slice(&[first, payload.len() as u8]);
        dst.extend_from_slice(payload);
        return;
    }
    let header = FrameHeader { fin, rsv, opcode, mask, payload_len: payload.len() as u64 };
    dst.reserve(header.encoded_len() + payload.len());
    header.encode(dst);
    let start = dst.len();
    dst.put_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut dst[start..], key, 0);
    }
}

/// The largest payload of [`encode_frame`]'s short paths (a masked frame
/// assembled on the stack, an unmasked one with a two-byte header): one whose
/// length fits the header's 7-bit form.
const SMALL_MASKED: usize = 125;

/// Appends only a frame header to `dst`, for a payload that is sent separately
/// (a vectored write of a large unmasked payload).
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) fn encode_header(
    dst: &mut BytesMut,
    opcode: OpCode,
    fin: bool,
    rsv: u8,
    mask: Option<[u8; 4]>,
    payload_len: u64,
) {
    FrameHeader { fin, rsv, opcode, mask, payload_len }.encode(dst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_masked_hello() {
        let mut out = BytesMut::new();
        encode_frame(&mut out, OpCode::Text, true, 0, Some([0x37, 0xfa, 0x21, 0x3d]), b"Hello");
        assert_eq!(&out[..], &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn small_frames_match_the_general_encoding() {
        for mask in [Some([0x37, 0xfa, 0x21, 0x3d]), None] {
            for len in [0, 1, 3, 4, 5, 31, 32, 33, 124, 125, 126, 127, 300] {
                let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
                for (opcode, fin, rsv) in [(OpCode::Text, true, 0), (OpCode::Binary, false, 4), (OpCode::Ping, true, 0)]
                {
                    let mut fast = BytesMut::from(&b"prefix"[..]);
                    encode_frame(&mut fast, opcode, fin, rsv, mask, &payload);
                    let mut general = BytesMut::from(&b"prefix"[..]);
                    FrameHeader { fin, rsv, opcode, mask, payload_len: len as u64 }.encode(&mut general);
                    let start = general.len();
                    general.extend_from_slice(&payload);
                    if let Some(key) = mask {
                        apply_mask(&mut general[start..], key, 0);
                    }
                    assert_eq!(fast, general, "length {len}, {opcode:?}, mask {mask:?}");
                }
            }
        }
    }

    #[test]
    fn rfc_unmasked_fragments() {
        let mut out = BytesMut::new();
        encode_frame(&mut out, OpCode::Text, false, 0, None, b"Hel");
        encode_frame(&mut out, OpCode::Continuation, true, 0, None, b"lo");
        assert_eq!(&out[..], &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);
    }
}
