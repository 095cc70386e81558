//! Codec configuration records and NAL framing: AVC/HEVC records with their SPS, AAC
//! AudioSpecificConfig, length-prefixed and Annex B NAL units.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_codec::{aac, avc, hevc, nal};

fuzz_target!(|data: &[u8]| {
    let rec = Bytes::copy_from_slice(data);
    if let Ok(c) = avc::AvcConfig::parse(&rec) {
        let _ = c.dimensions();
        let _ = c.codec_string();
    }
    if let Ok(c) = hevc::HevcConfig::parse(&rec) {
        let _ = c.dimensions();
        let _ = c.codec_string();
    }
    let _ = avc::sps_dimensions(data);
    let _ = hevc::sps_dimensions(data);
    if let Ok(a) = aac::AudioSpecificConfig::parse(data) {
        let _ = a.codec_string();
        let _ = a.adts_header(data.len());
    }
    let ls = data.first().map_or(4, |b| b % 4 + 1);
    for codec in [nal::NalCodec::H264, nal::NalCodec::H265] {
        let _ = nal::is_keyframe(codec, data, ls);
        let _ = nal::avcc_to_annexb(codec, data, ls, &[Bytes::from_static(b"\x67\x42")], true);
    }
    let n = nal::iter_annexb(data).count();
    assert!(n <= data.len());
    let _ = nal::annexb_to_avcc(data);
});
