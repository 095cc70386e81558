//! AMF0 decoding; whatever decodes must encode and decode back to the same values.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_container::amf0::{decode_all, encode_all};

fuzz_target!(|data: &[u8]| {
    if let Ok(values) = decode_all(data) {
        let again = decode_all(&encode_all(&values)).expect("re-encoded AMF0 decodes");
        // NaN numbers compare unequal; compare the encodings instead.
        assert_eq!(encode_all(&again), encode_all(&values));
    }
});
