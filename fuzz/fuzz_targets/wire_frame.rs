//! The worker wire: `modeld::wire::Frame::decode(body)`. Never panics (a hostile or
//! corrupt body is an error), and a decoded frame encodes and decodes back to itself.
//! The one-thread worker's reader (`read_decoded_blocking`, which decodes straight from
//! the socket) agrees with it on every body: the same frame, or an error for both.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modeld::wire::Frame;

fuzz_target!(|data: &[u8]| {
    let framed = [&(data.len() as u32).to_le_bytes()[..], data].concat();
    let streamed = modeld::wire::read_decoded_blocking(&mut std::io::BufReader::with_capacity(64, &framed[..]));
    match (Frame::decode(data), &streamed) {
        (Ok(frame), Ok(Some(read))) => assert_eq!(&frame, read, "read from a stream"),
        (Err(_), Err(_)) => {}
        (decoded, read) => panic!("decode gave {decoded:?}, the stream reader {read:?}"),
    }
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
