//! FLV tag bodies as RTMP carries them: video (classic and enhanced) and audio.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_container::flv;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let _ = flv::parse_video(&body);
    let _ = flv::parse_audio(&body);
});
