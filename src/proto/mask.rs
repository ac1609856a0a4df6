//! Payload masking (RFC 6455 §5.3): `byte[i] ^= key[(offset + i) % 4]`.
//!
//! This is the hottest loop of the read path of a server and the write path of a
//! client, so it works a machine word at a time: the key is rotated to the
//! current offset, widened to 64 bits, and XORed into the payload eight bytes per
//! step. The loop is written without `unsafe`; the compiler turns the
//! fixed-size chunk loop into unaligned vector loads and stores.

/// Masks (or unmasks: the operation is its own inverse) `data` in place with
/// `key`, as if `offset` payload bytes had already been processed with the same
/// key. Returns the offset to pass for the bytes that follow, so a payload that
/// arrives in pieces can be unmasked piece by piece.
#[inline]
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let shift = offset & 3;
    let rotated = [key[shift], key[(shift + 1) & 3], key[(shift + 2) & 3], key[(shift + 3) & 3]];
    // The key repeated twice, in memory order, so that XOR with a native-endian
    // load of eight payload bytes masks each byte with the right key byte.
    let wide = u64::from_ne_bytes([
        rotated[0], rotated[1], rotated[2], rotated[3], rotated[0], rotated[1], rotated[2], rotated[3],
    ]);

    let mut blocks = data.chunks_exact_mut(32);
    for block in &mut blocks {
        for lane in block.chunks_exact_mut(8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(lane);
            let masked = u64::from_ne_bytes(word) ^ wide;
            lane.copy_from_slice(&masked.to_ne_bytes());
        }
    }
    let rest = blocks.into_remainder();
    let mut lanes = rest.chunks_exact_mut(8);
    for lane in &mut lanes {
        let mut word = [0u8; 8];
        word.copy_from_slice(lane);
        let masked = u64::from_ne_bytes(word) ^ wide;
        lane.copy_from_slice(&masked.to_ne_bytes());
    }
    for (i, byte) in lanes.into_remainder().iter_mut().enumerate() {
        *byte ^= rotated[i & 3];
    }
    offset.wrapping_add(data.len())
}

/// The plain byte-at-a-time definition, kept as the reference the fast loop is
/// tested and benchmarked against.
#[doc(hidden)]
pub fn apply_mask_bytewise(data: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= key[offset.wrapping_add(i) & 3];
    }
    offset.wrapping_add(data.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_bytewise_definition_for_all_sizes_and_offsets() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..80 {
            for offset in 0..8 {
                let original: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut fast = original.clone();
                let mut slow = original.clone();
                assert_eq!(apply_mask(&mut fast, key, offset), offset + len);
                apply_mask_bytewise(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn masking_twice_restores_the_payload() {
        let key = [1, 2, 3, 4];
        let original = b"Hello, WebSocket masking!".to_vec();
        let mut data = original.clone();
        apply_mask(&mut data, key, 0);
        assert_ne!(data, original);
        apply_mask(&mut data, key, 0);
        assert_eq!(data, original);
    }

    #[test]
    fn resumes_across_split_pieces() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        let original: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, key, 0);
        let mut pieces = original.clone();
        let mut offset = 0;
        for piece in pieces.chunks_mut(13) {
            offset = apply_mask(piece, key, offset);
        }
        assert_eq!(whole, pieces);
    }

    #[test]
    fn rfc_example_unmasks_hello() {
        // RFC 6455 §5.7: a masked "Hello" from a client.
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }
}
