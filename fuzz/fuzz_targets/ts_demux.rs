//! MPEG-TS demuxing of arbitrary bytes, fed in SRT-sized pieces: frames or a clean error,
//! never a panic, and never more buffered than the demuxer's limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_container::ts_demux::TsDemuxer;

fuzz_target!(|data: &[u8]| {
    let mut d = TsDemuxer::new();
    let mut out = Vec::new();
    let step = data.first().map_or(1316, |b| (*b as usize % 7 + 1) * 188);
    for piece in data.chunks(step) {
        if d.push(piece, &mut out).is_err() {
            return;
        }
        out.clear();
    }
});
