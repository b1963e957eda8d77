//! The worker wire: `modeld::wire::Frame::decode(body)`. Never panics (a hostile or
//! corrupt body is an error), and a decoded frame encodes and decodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modeld::wire::Frame;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = Frame::decode(data) else { return };
    let encoded = frame.encode();
    let len = u32::from_le_bytes(encoded[..4].try_into().unwrap()) as usize;
    assert_eq!(len, encoded.len() - 4, "length prefix of {frame:?}");
    match Frame::decode(&encoded[4..]) {
        Ok(again) => assert_eq!(again, frame, "round trip"),
        Err(e) => panic!("{frame:?} re-encoded does not decode: {e}"),
    }
    // Encoding is a function of the frame: the second encoding is the first.
    assert_eq!(Frame::decode(&encoded[4..]).unwrap().encode(), encoded);
});
