//! fMP4/CMAF demuxing of arbitrary bytes, as an HLS pull feeds it: the input split into an
//! initialization segment and media segments; tracks and frames or a clean error, never a
//! panic, never a sample outside its segment.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_container::fmp4_demux::Fmp4Demuxer;

fuzz_target!(|data: &[u8]| {
    // The first two bytes say where the init ends; the rest is cut into segments at 'SEG!'.
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = (u16::from_be_bytes(*head) as usize).min(rest.len());
    let (init, media) = rest.split_at(split);
    let mut d = Fmp4Demuxer::new();
    let mut out = Vec::new();
    if d.handle_init(init, &mut out).is_err() {
        return;
    }
    let media = Bytes::copy_from_slice(media);
    let mut from = 0;
    while from <= media.len() {
        let end = media[from..]
            .windows(4)
            .position(|w| w == b"SEG!")
            .map_or(media.len(), |p| from + p);
        let _ = d.handle_segment(&media.slice(from..end), &mut out);
        out.clear();
        from = end + 4;
    }
});
