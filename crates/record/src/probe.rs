//! Reads a recording file back: its initialization segment, and its fragments with their times,
//! sizes and random-access flags, up to the last complete one. The catalog uses it to rebuild
//! itself and to repair a file a crash left mid-fragment; playback uses it to cut ranges.
//!
//! fMP4 boxes are decoded with `mp4-atom`; MPEG-TS files are read for their first and last
//! presentation times only.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::time::Duration;

use mp4_atom::{Header, Moof, Moov, ReadAtom, ReadFrom, TrunSamples};
use sluice_container::fmp4_demux::MAX_SAMPLES;

use crate::Format;

/// Boxes larger than this are not read into memory (a `moov` or `moof` is a few KB).
const MAX_META_BOX: usize = 16 << 20;
const SAMPLE_NON_SYNC: u32 = 0x0001_0000;

/// One `moof`+`mdat` pair.
#[derive(Debug, Clone, PartialEq)]
pub struct FragmentInfo {
    /// Byte offset of the `moof` and length of `moof`+`mdat`.
    pub offset: u64,
    pub len: u64,
    /// Start and duration in seconds from the file's first sample (the reference track: the
    /// first video track, else the first track).
    pub start: f64,
    pub duration: f64,
    /// Starts with a keyframe.
    pub independent: bool,
}

/// What a recording file holds.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub format: Format,
    /// fMP4: the `ftyp`+`moov` bytes (the duration field of `mehd` zeroed, so two files of the
    /// same stream have equal inits).
    pub init: Vec<u8>,
    /// Duration of the media, in seconds.
    pub duration: f64,
    /// fMP4: every complete fragment, in file order (empty when only the header was read).
    pub fragments: Vec<FragmentInfo>,
    /// Bytes up to the end of the last complete fragment (or of the header when there is none).
    pub good_len: u64,
    /// The file's length on disk.
    pub file_len: u64,
    /// The header carries the final duration (the writer closed the file).
    pub complete: bool,
    /// fMP4: offset of `mehd`'s 64-bit duration field (ms), when the file has one.
    pub mehd_at: Option<u64>,
    /// fMP4: per track id, its timescale; the reference track first.
    pub timescales: Vec<(u32, u32)>,
}

impl FileInfo {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.max(0.0))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a recording: {0}")]
    Invalid(String),
}

/// Reads `file`. With `fragments` false, a complete fMP4 file is read for its header only (the
/// duration comes from `mehd`); an incomplete one is always walked.
pub fn probe(file: &mut File, format: Format, fragments: bool) -> Result<FileInfo, ProbeError> {
    match format {
        Format::Fmp4 => probe_fmp4(file, fragments),
        Format::MpegTs => probe_ts(file),
    }
}

fn invalid(e: impl std::fmt::Display) -> ProbeError {
    ProbeError::Invalid(e.to_string())
}

/// Reads one box header at the current position: (kind, header length, body length); `None` at
/// the end of the file or on a header cut short.
fn next_header(file: &mut File, pos: u64, file_len: u64) -> Result<Option<(Header, u64, u64)>, ProbeError> {
    if file_len.saturating_sub(pos) < 8 {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(pos))?;
    let mut head = [0u8; 16];
    let n = (file_len - pos).min(16) as usize;
    file.read_exact(&mut head[..n])?;
    let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
    let (hlen, total) = match size32 {
        1 if n >= 16 => (16, u64::from_be_bytes(head[8..16].try_into().unwrap_or([0; 8]))),
        1 => return Ok(None),
        0 => (8, file_len - pos),
        s => (8, s),
    };
    if total < hlen {
        return Err(invalid(format!("box at {pos} has a bad size {total}")));
    }
    file.seek(SeekFrom::Start(pos))?;
    let header = Header::read_from(file).map_err(invalid)?;
    Ok(Some((header, hlen, total - hlen)))
}

fn probe_fmp4(file: &mut File, walk: bool) -> Result<FileInfo, ProbeError> {
    let file_len = file.metadata()?.len();
    let mut pos = 0u64;
    let mut init = Vec::new();
    let mut moov: Option<Moov> = None;
    let mut mehd_at = None;
    let mut mehd_ms = 0u64;
    // Header: ftyp then moov (other boxes before the first moof are kept in the init too).
    while let Some((header, hlen, blen)) = next_header(file, pos, file_len)? {
        let kind = header.kind.to_string();
        if kind == "moof" || kind == "mdat" {
            break;
        }
        let end = pos.saturating_add(hlen).saturating_add(blen);
        if end > file_len || blen as usize > MAX_META_BOX {
            return Err(invalid("the header is cut short"));
        }
        file.seek(SeekFrom::Start(pos))?;
        let mut bytes = vec![0u8; (hlen + blen) as usize];
        file.read_exact(&mut bytes)?;
        if kind == "moov" {
            let m = Moov::read_atom(&header, &mut std::io::Cursor::new(&bytes[hlen as usize..]))
                .map_err(|e| invalid(format!("moov: {e}")))?;
            if let Some(at) = find_mehd(&bytes) {
                mehd_ms = u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
                bytes[at..at + 8].fill(0);
                mehd_at = Some(init.len() as u64 + at as u64);
            }
            moov = Some(m);
        }
        init.extend_from_slice(&bytes);
        pos = end;
    }
    let moov = moov.ok_or_else(|| invalid("no moov box"))?;
    // The reference track: the first video track (a `vmhd` media header), else the first.
    let mut timescales: Vec<(u32, u32)> = moov
        .trak
        .iter()
        .map(|t| (t.tkhd.track_id, t.mdia.mdhd.timescale.max(1)))
        .collect();
    if let Some(v) = moov.trak.iter().position(|t| t.mdia.minf.vmhd.is_some()) {
        let t = timescales.remove(v);
        timescales.insert(0, t);
    }
    let trex: Vec<(u32, u32, u32)> = moov
        .mvex
        .as_ref()
        .map(|m| {
            m.trex
                .iter()
                .map(|t| (t.track_id, t.default_sample_duration, t.default_sample_flags))
                .collect()
        })
        .unwrap_or_default();
    let header_len = pos;
    let mut info = FileInfo {
        format: Format::Fmp4,
        init,
        duration: mehd_ms as f64 / 1000.0,
        fragments: Vec::new(),
        good_len: header_len,
        file_len,
        complete: mehd_ms > 0,
        mehd_at,
        timescales,
    };
    if info.complete && !walk {
        return Ok(info);
    }
    let Some(&(ref_id, ref_scale)) = info.timescales.first() else {
        return Err(invalid("no track"));
    };
    let mut first: Option<u64> = None;
    let mut end_max = 0f64;
    // Fragments: moof then mdat; a pair cut short ends the walk.
    while let Some((header, hlen, blen)) = next_header(file, pos, file_len)? {
        let kind = header.kind.to_string();
        let end = pos.saturating_add(hlen).saturating_add(blen);
        if end > file_len {
            break;
        }
        if kind != "moof" {
            // Anything else between fragments (free, mfra, ...) is skipped.
            pos = end;
            info.good_len = end.max(info.good_len);
            continue;
        }
        if blen as usize > MAX_META_BOX {
            break;
        }
        file.seek(SeekFrom::Start(pos + hlen))?;
        let mut body = vec![0u8; blen as usize];
        file.read_exact(&mut body)?;
        let Ok(moof) = Moof::read_atom(&header, &mut std::io::Cursor::new(&body[..])) else {
            break;
        };
        // Its mdat must be complete too.
        let Some((mh, mhlen, mblen)) = next_header(file, end, file_len)? else {
            break;
        };
        let frag_end = end.saturating_add(mhlen).saturating_add(mblen);
        if mh.kind.to_string() != "mdat" || frag_end > file_len {
            break;
        }
        let mut start = None;
        let mut dur_ref = 0f64;
        let mut independent = true;
        let mut samples = 0usize;
        for traf in &moof.traf {
            let id = traf.tfhd.track_id;
            let scale = info
                .timescales
                .iter()
                .find(|(t, _)| *t == id)
                .map_or(1, |(_, s)| *s) as f64;
            let (tdur, tflags) = trex
                .iter()
                .find(|(t, _, _)| *t == id)
                .map_or((0, 0), |(_, d, f)| (*d, *f));
            let def_dur = traf.tfhd.default_sample_duration.unwrap_or(tdur);
            let def_flags = traf.tfhd.default_sample_flags.unwrap_or(tflags);
            let base = traf.tfdt.as_ref().map_or(0, |t| t.base_media_decode_time);
            let mut ticks = 0u64;
            let mut first_flags = None;
            for run in &traf.trun {
                samples += run.samples.len();
                match &run.samples {
                    // No per-sample fields: a count, not walked (it may say four billion).
                    TrunSamples::Inherited {
                        count,
                        first_flags: f,
                    } => {
                        if *count > 0 && first_flags.is_none() {
                            first_flags = Some(f.unwrap_or(def_flags));
                        }
                        ticks = ticks.saturating_add(u64::from(*count) * u64::from(def_dur));
                    }
                    TrunSamples::Explicit(entries) => {
                        for e in entries {
                            if first_flags.is_none() {
                                first_flags = Some(e.flags.unwrap_or(def_flags));
                            }
                            ticks = ticks.saturating_add(u64::from(e.duration.unwrap_or(def_dur)));
                        }
                    }
                }
            }
            let t_end = base.saturating_add(ticks) as f64 / scale;
            if id == ref_id {
                let f = *first.get_or_insert(base);
                start = Some(base.saturating_sub(f) as f64 / ref_scale as f64);
                dur_ref = ticks as f64 / ref_scale as f64;
                independent = first_flags.is_none_or(|f| f & SAMPLE_NON_SYNC == 0);
            }
            let f = first.map_or(0.0, |f| f as f64 / ref_scale as f64);
            end_max = end_max.max(t_end - f);
        }
        if samples > MAX_SAMPLES {
            // Not a fragment we wrote (nor one a reader would take): the good data ends here.
            break;
        }
        let start = start.unwrap_or_else(|| info.fragments.last().map_or(0.0, |f| f.start + f.duration));
        info.fragments.push(FragmentInfo {
            offset: pos,
            len: frag_end - pos,
            start,
            duration: dur_ref,
            independent,
        });
        pos = frag_end;
        info.good_len = frag_end;
    }
    let walked = info.fragments.last().map_or(0.0, |f| {
        (f.start + f.duration).max(end_max.min(f.start + f.duration + 1.0))
    });
    if !info.complete {
        info.duration = walked;
    }
    Ok(info)
}

/// The offset, in a `moov` box's bytes, of `mvex/mehd`'s 64-bit duration (version 1 only).
fn find_mehd(moov: &[u8]) -> Option<usize> {
    let mut at = 8;
    while at + 8 <= moov.len() {
        let size = u32::from_be_bytes(moov[at..at + 4].try_into().ok()?) as usize;
        let kind = &moov[at + 4..at + 8];
        if size < 8 || at + size > moov.len() {
            return None;
        }
        if kind == b"mvex" {
            let mut m = at + 8;
            while m + 8 <= at + size {
                let s = u32::from_be_bytes(moov[m..m + 4].try_into().ok()?) as usize;
                if s < 8 || m + s > at + size {
                    return None;
                }
                if &moov[m + 4..m + 8] == b"mehd" && moov[m + 8] == 1 && s >= 20 {
                    return Some(m + 12);
                }
                m += s;
            }
            return None;
        }
        at += size;
    }
    None
}

/// An MPEG-TS recording: its duration from the first and last PTS of its first elementary
/// stream; `good_len` cut to whole packets.
fn probe_ts(file: &mut File) -> Result<FileInfo, ProbeError> {
    let file_len = file.metadata()?.len();
    let good_len = file_len - file_len % 188;
    let window = 188 * 2048u64;
    let mut head = vec![0u8; window.min(good_len) as usize];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut head)?;
    if head.first().is_some_and(|b| *b != 0x47) {
        return Err(invalid("not an MPEG-TS file"));
    }
    let first = pts_list(&head).first().copied();
    let tail_start = good_len.saturating_sub(window);
    let mut tail = vec![0u8; (good_len - tail_start) as usize];
    file.seek(SeekFrom::Start(tail_start))?;
    file.read_exact(&mut tail)?;
    let pid = first.map(|(p, _)| p);
    let last = pts_list(&tail)
        .into_iter()
        .filter(|(p, _)| Some(*p) == pid)
        .map(|(_, t)| t)
        .next_back();
    let duration = match (first, last) {
        (Some((_, a)), Some(b)) => (b.wrapping_sub(a) & ((1 << 33) - 1)) as f64 / 90_000.0,
        _ => 0.0,
    };
    Ok(FileInfo {
        format: Format::MpegTs,
        init: Vec::new(),
        duration,
        fragments: Vec::new(),
        good_len,
        file_len,
        complete: true,
        mehd_at: None,
        timescales: Vec::new(),
    })
}

/// (PID, PTS) of each PES start in whole 188-byte packets of `buf`.
fn pts_list(buf: &[u8]) -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    for p in buf.chunks_exact(188) {
        if p[0] != 0x47 || p[1] & 0x40 == 0 {
            continue;
        }
        let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
        if pid == 0 || pid == 0x1fff {
            continue;
        }
        let mut i = 4;
        if p[3] & 0x20 != 0 {
            i += 1 + p[4] as usize;
        }
        if p[3] & 0x10 == 0 || i + 14 > 188 {
            continue;
        }
        let pes = &p[i..];
        if pes[..3] != [0, 0, 1] || pes[7] & 0x80 == 0 {
            continue;
        }
        let t = &pes[9..14];
        let pts = ((t[0] as u64 >> 1) & 0x07) << 30
            | (t[1] as u64) << 22
            | ((t[2] as u64) >> 1) << 15
            | (t[3] as u64) << 7
            | (t[4] as u64) >> 1;
        out.push((pid, pts));
    }
    out
}

/// Whether an I/O error means the disk is full, over quota or failing (recording pauses and
/// retries) rather than something about one file.
pub fn is_disk_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == 28 /* ENOSPC */ || code == 122 /* EDQUOT */ || code == 5 /* EIO */
    ) || e.kind() == io::ErrorKind::StorageFull
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;
    use sluice_container::fmp4::Fmp4Writer;
    use sluice_container::segmenter::{Segmenter, SegmenterConfig, SegmenterOutput};
    use sluice_media::{CodecId, Frame, Track, CLOCK_RATE};
    use std::io::Write;
    use std::time::SystemTime;

    /// Regression (cargo fuzz, record_probe): a file that made `probe` spin past libFuzzer's
    /// 25 s timeout. Whatever is on disk, probing ends at once.
    #[test]
    fn a_hostile_file_is_probed_in_bounded_time() {
        let data = include_bytes!("../testdata/fuzz-probe-timeout.mp4");
        let path = std::env::temp_dir().join(format!("sluice-probe-timeout-{}", std::process::id()));
        std::fs::write(&path, data).unwrap();
        let start = std::time::Instant::now();
        for format in [Format::Fmp4, Format::MpegTs] {
            let mut f = File::open(&path).unwrap();
            let _ = probe(&mut f, format, true);
        }
        let _ = std::fs::remove_file(&path);
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    }

    /// Regression (cargo fuzz, record_probe): a box whose 64-bit size is near u64::MAX made
    /// its end overflow (a panic in debug builds). It is a header cut short.
    #[test]
    fn a_box_size_near_the_u64_limit_is_an_error() {
        let data = include_bytes!("../testdata/fuzz-probe-u64-box.mp4");
        let path = std::env::temp_dir().join(format!("sluice-probe-u64-{}", std::process::id()));
        std::fs::write(&path, data).unwrap();
        let mut f = File::open(&path).unwrap();
        assert!(probe(&mut f, Format::Fmp4, true).is_err());
        let _ = std::fs::remove_file(&path);
    }

    /// A recording of `seconds` of Opus (20 ms frames) in 1 s fragments, as the recorder
    /// writes it: file init, then the parts. Returns the bytes and the init's mehd offset.
    pub(crate) fn recording(seconds: i64) -> (Vec<u8>, usize) {
        let track = Track::audio(1, CodecId::Opus, Bytes::new(), 48_000, 2);
        let (init, mehd) = Fmp4Writer::new(std::slice::from_ref(&track)).unwrap().file_init();
        let mut cfg =
            SegmenterConfig::new(Format::Fmp4, Duration::from_secs(3600)).with_parts(Duration::from_secs(1));
        cfg.segment_bytes = false;
        cfg.zero_based = true;
        let mut seg = Segmenter::new(cfg);
        seg.start(&[track]).unwrap();
        let step = CLOCK_RATE / 50;
        let mut out = init.to_vec();
        for i in 0..seconds * 50 {
            let t = 1_000_000 + i * step;
            seg.push_frame(
                &Frame::new(1, t, t, true, Bytes::from(vec![0xf8; 60])),
                SystemTime::now(),
            );
        }
        seg.finish();
        while let Some(o) = seg.poll_output() {
            if let SegmenterOutput::Part(p) = o {
                out.extend_from_slice(&p.bytes);
            }
        }
        (out, mehd)
    }

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let h = f.reopen().unwrap();
        (f, h)
    }

    #[test]
    fn reads_fragments_and_duration() {
        let (bytes, mehd) = recording(5);
        let (_f, mut h) = file_with(&bytes);
        let info = probe(&mut h, Format::Fmp4, true).unwrap();
        assert!(!info.complete, "no duration in the header yet");
        assert_eq!(info.fragments.len(), 5);
        assert!((info.duration - 5.0).abs() < 0.021, "{}", info.duration);
        assert_eq!(info.fragments[0].start, 0.0);
        assert!(info.fragments.iter().all(|f| f.independent));
        assert_eq!(info.good_len, bytes.len() as u64);
        assert_eq!(info.mehd_at, Some(mehd as u64));
        // Once the header has the duration, a header read is enough.
        let mut done = bytes.clone();
        done[mehd..mehd + 8].copy_from_slice(&5000u64.to_be_bytes());
        let (_g, mut h) = file_with(&done);
        let info = probe(&mut h, Format::Fmp4, false).unwrap();
        assert!(info.complete && info.fragments.is_empty());
        assert_eq!(info.duration, 5.0);
    }

    /// A file cut anywhere (a crash mid-write) reads up to its last whole fragment, never fails
    /// past its header and never panics.
    #[test]
    fn a_file_cut_anywhere_reads_to_its_last_whole_fragment() {
        let (bytes, _) = recording(3);
        let (_f, mut h) = file_with(&bytes);
        let full = probe(&mut h, Format::Fmp4, true).unwrap();
        let header = full.fragments[0].offset as usize;
        let mut last = 0;
        for cut in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
            let (_f, mut h) = file_with(&bytes[..cut]);
            match probe(&mut h, Format::Fmp4, true) {
                Ok(info) => {
                    assert!(cut >= header, "header cut at {cut} read as valid");
                    let n = info.fragments.len();
                    assert!(n >= last, "cut at {cut}: {n} fragments after {last}");
                    let whole = full
                        .fragments
                        .iter()
                        .filter(|f| f.offset + f.len <= cut as u64)
                        .count();
                    assert_eq!(n, whole, "cut at {cut}");
                    assert!(info.good_len <= cut as u64);
                    last = n;
                }
                Err(_) => assert!(cut < header, "cut at {cut} past the header failed"),
            }
        }
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for data in [
            &b""[..],
            b"garbage garbage garbage",
            &[0, 0, 0, 1, b'm', b'o', b'o', b'v'],
            &[0xff; 64],
        ] {
            let (_f, mut h) = file_with(data);
            assert!(probe(&mut h, Format::Fmp4, true).is_err());
        }
    }
}
