//! Close payloads. `CloseFrame::parse` on arbitrary bytes never panics and
//! accepts exactly: nothing, or a wire-allowed code with a UTF-8 reason. What
//! it accepts encodes back to the same bytes (a longer reason is cut at a
//! character boundary to fit 125 bytes), and any `CloseFrame` built from the
//! input encodes to a payload that parses back to it, reason cut to fit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use silverback::proto::close::{CloseFrameError, MAX_REASON_LEN};
use silverback::proto::{CloseCode, CloseFrame};

fn encode_round_trips(frame: &CloseFrame) {
    let payload = frame.encode();
    assert!(payload.len() <= 125);
    if !frame.code.is_allowed_on_wire() {
        assert!(payload.is_empty(), "code {} encoded", frame.code.0);
        return;
    }
    let back = CloseFrame::parse(&payload).expect("our own payload parses").expect("a code was sent");
    assert_eq!(back.code, frame.code);
    // The reason sent is the longest prefix of at most 123 bytes ending on a
    // character boundary (so at least 120 bytes of a longer reason).
    assert!(frame.reason.starts_with(&back.reason));
    if frame.reason.len() <= MAX_REASON_LEN {
        assert_eq!(back.reason, frame.reason);
    } else {
        assert!(back.reason.len() > MAX_REASON_LEN - 4, "reason cut to {} bytes", back.reason.len());
    }
    let _ = frame.to_string();
}

fuzz_target!(|data: &[u8]| {
    match CloseFrame::parse(data) {
        Ok(None) => assert!(data.is_empty()),
        Ok(Some(frame)) => {
            assert_eq!(frame.code.0, u16::from_be_bytes([data[0], data[1]]));
            assert!(frame.code.is_allowed_on_wire());
            assert_eq!(frame.reason.as_bytes(), &data[2..]);
            if data.len() <= 125 {
                assert_eq!(frame.encode()[..], data[..], "a valid payload does not encode back to itself");
            }
            encode_round_trips(&frame);
        }
        Err(CloseFrameError::TooShort) => assert_eq!(data.len(), 1),
        Err(CloseFrameError::InvalidCode(code)) => {
            assert_eq!(code, u16::from_be_bytes([data[0], data[1]]));
            assert!(!CloseCode(code).is_allowed_on_wire());
        }
        Err(CloseFrameError::InvalidReason) => {
            assert!(CloseCode(u16::from_be_bytes([data[0], data[1]])).is_allowed_on_wire());
            assert!(std::str::from_utf8(&data[2..]).is_err());
        }
    }

    // Any frame: the code from the first two bytes, the reason from the rest.
    if let [hi, lo, reason @ ..] = data {
        let frame = CloseFrame::new(u16::from_be_bytes([*hi, *lo]), String::from_utf8_lossy(reason));
        encode_round_trips(&frame);
    }
});
