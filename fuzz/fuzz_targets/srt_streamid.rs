//! SRT streamid parsing: any string gives a request or a clear refusal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_srt::StreamId;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(id) = StreamId::parse(&s) {
        assert!(!id.path.is_empty());
        assert!(id.path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
    }
});
