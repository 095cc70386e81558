//! The `Range` header of a segment request (`crates/server/src/range.rs`, included as it is):
//! never a panic, never a range outside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/server/src/range.rs"]
mod range;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let v = String::from_utf8_lossy(&data[2..]);
    if let range::RangeAsk::Range(a, b) = range::byte_range(&v, len) {
        assert!(a < b && b <= len);
    }
});
