//! Any bytes as a signed vouch or signed response: decoding and `verify_strict` never panic,
//! and nothing verifies under a key that never signed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vouchnet_protocol::codec::decode;
use vouchnet_protocol::identity::DeviceKeypair;
use vouchnet_protocol::messages::{SignedResponse, SignedVouch};
use vouchnet_protocol::Limits;

fuzz_target!(|data: &[u8]| {
    let key = DeviceKeypair::from_seed(&[7; 32]).public();
    let limits = Limits::default();
    if let Ok(v) = decode::<SignedVouch>(data, &limits) {
        assert!(v.verify(&key).is_err());
        let _ = v.decode_unverified();
    }
    if let Ok(r) = decode::<SignedResponse>(data, &limits) {
        assert!(r.verify(&key).is_err());
    }
});
