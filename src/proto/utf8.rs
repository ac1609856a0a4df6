//! Incremental UTF-8 validation of text messages (RFC 6455 §8.1).
//!
//! A text message may be split across frames and reads at any byte, so a
//! character can straddle two chunks. [`Utf8Validator`] checks each chunk as it
//! arrives with the SIMD validator of `simdutf8`, carrying at most three bytes of
//! an unfinished character to the next chunk. Invalid input is reported as soon
//! as it is seen (fail fast), not only at the end of the message.

use simdutf8::compat::from_utf8;

/// The longest UTF-8 sequence.
const MAX_CHAR: usize = 4;

/// The input is not UTF-8 (RFC 6455 §8.1: fail the connection with 1007).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Validates a text message fed in chunks.
#[derive(Clone, Debug, Default)]
pub struct Utf8Validator {
    /// The start of a character whose remaining bytes have not arrived yet.
    partial: [u8; MAX_CHAR],
    partial_len: usize,
}

/// The total length of the sequence that starts with `lead`, or `None` for a
/// byte that cannot start one.
fn sequence_len(lead: u8) -> Option<usize> {
    match lead {
        0x00..=0x7f => Some(1),
        0xc2..=0xdf => Some(2),
        0xe0..=0xef => Some(3),
        0xf0..=0xf4 => Some(4),
        _ => None,
    }
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next chunk of the message.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            let need = sequence_len(self.partial[0]).ok_or(InvalidUtf8)?;
            let take = (need - self.partial_len).min(chunk.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&chunk[..take]);
            self.partial_len += take;
            chunk = &chunk[take..];
            match from_utf8(&self.partial[..self.partial_len]) {
                Ok(_) => self.partial_len = 0,
                // Still short of a whole character, but a valid prefix so far.
                Err(e) if e.error_len().is_none() => {
                    debug_assert!(chunk.is_empty());
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                // An unfinished character at the very end: keep it for the next chunk.
                let tail = &chunk[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len();
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Checks that the message did not end inside a character, and resets the
    /// validator for the next message.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let incomplete = self.partial_len > 0;
        self.partial_len = 0;
        if incomplete {
            Err(InvalidUtf8)
        } else {
            Ok(())
        }
    }
}

/// Validates a whole text payload at once.
pub fn validate(bytes: &[u8]) -> Result<(), InvalidUtf8> {
    // Short text is mostly ASCII, checked a word at a time faster than the
    // general validator gets going.
    if bytes.len() < 64 && bytes.is_ascii() {
        return Ok(());
    }
    simdutf8::basic::from_utf8(bytes).map(|_| ()).map_err(|_| InvalidUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(bytes: &[u8], piece: usize) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        for chunk in bytes.chunks(piece.max(1)) {
            v.feed(chunk)?;
        }
        v.finish()
    }

    #[test]
    fn valid_text_passes_whatever_the_split() {
        let text = "κόσμε — hello — 𝄞 — ünïcödé — 日本語".as_bytes();
        for piece in 1..=text.len() {
            assert_eq!(feed_split(text, piece), Ok(()), "piece {piece}");
        }
    }

    #[test]
    fn an_invalid_byte_fails_at_once() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"abc\xffdef"), Err(InvalidUtf8));
    }

    #[test]
    fn invalid_sequences_fail_whatever_the_split() {
        let cases: &[&[u8]] = &[
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", // surrogate
            b"\xf4\x90\x80\x80",                                               // > U+10FFFF
            b"\xc0\xaf",                                                       // overlong
            b"\xe0\x80\xaf",                                                   // overlong
            b"\x80",                                                           // lone continuation
            b"\xf8\x88\x80\x80\x80",                                           // 5-byte form
        ];
        for case in cases {
            for piece in 1..=case.len() {
                assert_eq!(feed_split(case, piece), Err(InvalidUtf8), "{case:x?} / {piece}");
            }
        }
    }

    #[test]
    fn a_message_that_ends_inside_a_character_fails() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok\xe2\x82"), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
        // The validator is reusable after finish.
        assert_eq!(v.feed(b"fresh"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn an_impossible_continuation_fails_before_the_character_completes() {
        // 0xed 0xa0 starts a surrogate: invalid as soon as the second byte arrives.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xed"), Ok(()));
        assert_eq!(v.feed(b"\xa0"), Err(InvalidUtf8));
    }
}
