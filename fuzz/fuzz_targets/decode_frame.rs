//! Any bytes given to the frame decoder: no panic, and whatever decodes re-encodes to a
//! frame that decodes to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vouchnet_protocol::{Frame, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(frame) = Frame::decode(data, &limits) {
        let again = Frame::decode(&frame.encode(), &limits).expect("re-encoded frame decodes");
        assert_eq!(again, frame);
    }
});
