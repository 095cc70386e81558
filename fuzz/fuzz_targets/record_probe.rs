//! A recording file read back (catalog scan, repair, playback): whatever bytes are on disk,
//! `probe` returns what it can read or an error, never panics or allocates without bound.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use sluice_record::probe::probe;
use sluice_record::Format;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("sluice-fuzz-probe-{}", std::process::id()));
    let Ok(mut f) = std::fs::File::create(&path) else { return };
    if f.write_all(data).is_err() {
        return;
    }
    drop(f);
    for format in [Format::Fmp4, Format::MpegTs] {
        if let Ok(mut f) = std::fs::File::open(&path) {
            let _ = probe(&mut f, format, true);
        }
    }
});
