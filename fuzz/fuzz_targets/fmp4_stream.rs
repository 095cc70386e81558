//! fMP4 read as one byte stream, as the transcoder reads its encoder's VP9/AV1 output: the
//! input pushed in reads of varying size; tracks and frames or a clean error, never a panic,
//! never a box buffered past its bound.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_container::fmp4_demux::Fmp4StreamDemuxer;

fuzz_target!(|data: &[u8]| {
    // The first byte sets the size of the reads.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let mut d = Fmp4StreamDemuxer::new();
    let mut out = Vec::new();
    for c in rest.chunks(n as usize + 1) {
        if d.push(c, &mut out).is_err() {
            return;
        }
        out.clear();
    }
});
