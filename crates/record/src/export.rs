//! Cutting recordings: a time range of one path's fMP4 segment files as one fragmented MP4 that
//! a `<video>` tag plays and seeks in (`/get`), or as the keyframe-aligned media segments of an
//! HLS VOD playlist (`/vod.m3u8`). Planned from the catalog and the files' `moof` boxes only.
//!
//! Media data is never held in memory: an [`Export`] is a layout (a small header in memory, then
//! each fragment as a place in a file) from which any byte range of the output is read on
//! demand, so its length is known before the first byte and `Range` requests cost nothing more.
//!
//! Files are opened only through the caller's [`Opener`] (the server's refuses symlinks) and
//! only for catalog entries: nothing a client sends ever names a file.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mp4_atom::{Decode, Encode, Moof, Moov, SegmentReference, Sidx};

use crate::probe::{probe, FileInfo, FragmentInfo};

mod progressive;
use crate::{Format, SegmentEntry};
pub use progressive::Progressive;

/// Opens a catalog file for reading.
pub type Opener = Arc<dyn Fn(&Path) -> io::Result<File> + Send + Sync>;

/// A `moof` larger than this is refused (the recorder's are a few KB).
const MAX_MOOF: u64 = 4 << 20;
/// `sample_is_non_sync_sample` in a sample's flags (ISO/IEC 14496-12 8.8.3.1).
const SAMPLE_NON_SYNC: u32 = 0x0001_0000;
/// A `sidx` holds at most this many references (its count is 16 bits).
const MAX_REFS: usize = 65_535;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Nothing recorded in the range.
    #[error("{0}")]
    NotFound(String),
    /// Recorded in a form this cannot cut (MPEG-TS files).
    #[error("{0}")]
    Unsupported(String),
    #[error("reading {file}: {err}")]
    Io { file: String, err: io::Error },
    /// A file on disk is not what the catalog says it is.
    #[error("recording {file}: {reason}")]
    Invalid { file: String, reason: String },
}

fn io_err(file: &Path, err: io::Error) -> ExportError {
    ExportError::Io {
        file: file.display().to_string(),
        err,
    }
}

fn invalid(file: &Path, reason: impl std::fmt::Display) -> ExportError {
    ExportError::Invalid {
        file: file.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The identifier of a catalog segment in URLs: its start in microseconds since 1970.
pub fn segment_id(entry: &SegmentEntry) -> u64 {
    entry
        .start
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// The fragments of one file that fall in a range.
#[derive(Debug, Clone)]
pub struct FilePart {
    pub entry: SegmentEntry,
    pub info: Arc<FileInfo>,
    /// Index in `info.fragments` of the first fragment used (an independent one).
    pub first: usize,
    /// One past the last fragment used.
    pub end: usize,
}

impl FilePart {
    pub fn fragments(&self) -> &[FragmentInfo] {
        &self.info.fragments[self.first..self.end]
    }
}

/// The files and fragments covering a range, in order; every file has the same init.
#[derive(Debug, Clone)]
pub struct Plan {
    pub parts: Vec<FilePart>,
    /// The range's start.
    pub from: SystemTime,
}

/// Reads `file` and its fragments.
pub fn probe_file(entry: &SegmentEntry, open: &Opener) -> Result<FileInfo, ExportError> {
    let mut f = open(&entry.file).map_err(|e| io_err(&entry.file, e))?;
    probe(&mut f, entry.format, true).map_err(|e| invalid(&entry.file, e))
}

/// What [`probe_file`] read of completed files, so the media requests of an HLS playlist do not
/// walk a whole segment file each (an hour-long file has 3,600 fragments). Bounded: emptied when
/// full. Files being written are never kept (they grow).
#[derive(Default)]
pub struct ProbeCache {
    files: parking_lot::Mutex<std::collections::HashMap<(std::path::PathBuf, u64), Arc<FileInfo>>>,
}

impl ProbeCache {
    const MAX: usize = 256;

    pub fn new() -> Self {
        Self::default()
    }

    /// [`probe_file`], or what it read before.
    pub fn probe(&self, entry: &SegmentEntry, open: &Opener) -> Result<Arc<FileInfo>, ExportError> {
        let key = (entry.file.clone(), entry.bytes);
        if let Some(info) = self.files.lock().get(&key) {
            return Ok(info.clone());
        }
        let info = Arc::new(probe_file(entry, open)?);
        if entry.complete && !entry.writing {
            let mut files = self.files.lock();
            if files.len() >= Self::MAX {
                files.clear();
            }
            files.insert(key, info.clone());
        }
        Ok(info)
    }
}

/// The fragments of `segments` (the catalog's, oldest first) covering `[from, to)`: from the
/// independent fragment at or before `from` to the fragment holding `to`. A file whose init
/// differs from the first one's (a codec change) ends the plan.
pub fn plan(
    segments: &[SegmentEntry],
    from: SystemTime,
    to: SystemTime,
    open: &Opener,
    cache: &ProbeCache,
) -> Result<Plan, ExportError> {
    let mut parts: Vec<FilePart> = Vec::new();
    for entry in segments {
        if entry.format != Format::Fmp4 {
            if parts.is_empty() {
                return Err(ExportError::Unsupported(
                    "this range is recorded in MPEG-TS, which cannot be cut yet: only fMP4 recordings can"
                        .into(),
                ));
            }
            break;
        }
        if entry.start >= to {
            break;
        }
        let info = cache.probe(entry, open)?;
        if let Some(p) = parts.first() {
            if p.info.init != info.init {
                break;
            }
        }
        let frags = &info.fragments;
        // Seconds into the file of the range's start (0 when the file starts later).
        let offset = from.duration_since(entry.start).unwrap_or_default().as_secs_f64();
        let first = frags
            .iter()
            .enumerate()
            .filter(|(_, f)| f.independent && f.start <= offset + 1e-3)
            .map(|(i, _)| i)
            .next_back()
            .or_else(|| frags.iter().position(|f| f.independent));
        let Some(first) = first else {
            continue;
        };
        let end = first
            + frags[first..]
                .iter()
                .take_while(|f| entry.start + Duration::from_secs_f64(f.start.max(0.0)) < to)
                .count();
        if end > first {
            parts.push(FilePart {
                entry: entry.clone(),
                info,
                first,
                end,
            });
        }
    }
    if parts.is_empty() {
        return Err(ExportError::NotFound("no recording in this range".into()));
    }
    Ok(Plan { parts, from })
}

impl Plan {
    /// Moves the first file's first fragment up to the one holding the keyframe at or before the
    /// range's start (that fragment may begin with frames that need earlier ones: a player
    /// decoding from its keyframe drops them). For HLS, whose segments are whole fragments.
    pub fn start_at_keyframe(&mut self, open: &Opener) -> Result<(), ExportError> {
        let part = &mut self.parts[0];
        let path = part.entry.file.clone();
        let Some(&(ref_id, ref_scale)) = part.info.timescales.first() else {
            return Ok(());
        };
        let trex = trex_of(&part.info.init).map_err(|e| invalid(&path, e))?;
        let file = open(&path).map_err(|e| io_err(&path, e))?;
        let offset = self
            .from
            .duration_since(part.entry.start)
            .unwrap_or_default()
            .as_secs_f64();
        part.first = keyframe_at(&file, &path, part, offset, ref_id, ref_scale, &trex)?.0;
        Ok(())
    }
}

/// One fragment of the output.
#[derive(Debug, Clone)]
struct OutFragment {
    part: u32,
    /// Where the fragment starts in its file, its `moof` length and its whole length (in the
    /// output).
    src: u64,
    moof_len: u32,
    len: u64,
    /// Where it starts in the output.
    out: u64,
    /// The first fragment, cut to start at the keyframe at or before the range's start.
    trimmed: Option<Box<Trimmed>>,
}

/// A fragment cut at a sample: its new `moof` and `mdat` header, and where the kept samples'
/// bytes lie in the file, in `mdat` order.
#[derive(Debug, Clone)]
struct Trimmed {
    head: Vec<u8>,
    pieces: Vec<(u64, u64)>,
}

/// A range as one fragmented MP4: `ftyp`+`moov` of the first file (durations set), a `sidx` per
/// track indexing every fragment (when each starts with a keyframe), then the fragments with
/// their decode times moved so the timeline runs from 0 without a break across files, and their
/// sequence numbers increasing.
pub struct Export {
    head: Vec<u8>,
    frags: Vec<OutFragment>,
    files: Vec<std::path::PathBuf>,
    /// Per part, per track: ticks added to its `tfdt`s.
    shifts: Vec<Vec<(u32, i64)>>,
    len: u64,
    duration: f64,
    open: Opener,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("len", &self.len)
            .field("fragments", &self.frags.len())
            .field("duration", &self.duration)
            .finish()
    }
}

/// Ticks per track, of one fragment.
type TrackTicks = Vec<(u32, u64)>;

/// Defaults of a track from `mvex/trex`: (track, sample duration, size, flags).
type Trex = (u32, u32, u32, u32);

/// The `moof` of a fragment: its bytes and what they decode to.
fn load_moof(file: &File, path: &Path, frag: &FragmentInfo) -> Result<(Vec<u8>, Moof), ExportError> {
    let mut head = [0u8; 8];
    file.read_exact_at(&mut head, frag.offset)
        .map_err(|e| io_err(path, e))?;
    let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
    if &head[4..8] != b"moof" || !(8..=MAX_MOOF).contains(&size) || size > frag.len {
        return Err(invalid(path, format!("no moof at {}", frag.offset)));
    }
    let mut bytes = vec![0u8; size as usize];
    file.read_exact_at(&mut bytes, frag.offset)
        .map_err(|e| io_err(path, e))?;
    let moof = Moof::decode(&mut bytes.as_slice()).map_err(|e| invalid(path, format!("moof: {e}")))?;
    Ok((bytes, moof))
}

/// One sample of a track fragment: its decode time (ticks), duration, size, flags.
struct SampleAt {
    dts: u64,
    duration: u32,
    size: u32,
    flags: u32,
    /// Composition offset.
    cts: i64,
}

/// The samples of `traf`, each run's in order, with the defaults of `tfhd` and `trex` applied.
fn samples_of(traf: &mp4_atom::Traf, trex: &[Trex]) -> Vec<Vec<SampleAt>> {
    let id = traf.tfhd.track_id;
    let t = trex.iter().find(|t| t.0 == id).copied().unwrap_or((id, 0, 0, 0));
    let dur = traf.tfhd.default_sample_duration.unwrap_or(t.1);
    let size = traf.tfhd.default_sample_size.unwrap_or(t.2);
    let flags = traf.tfhd.default_sample_flags.unwrap_or(t.3);
    let mut dts = traf.tfdt.as_ref().map_or(0, |t| t.base_media_decode_time);
    traf.trun
        .iter()
        .map(|run| {
            run.samples
                .iter()
                // What `probe` accepts (a fragment it walked); a bound, whatever the count says.
                .take(sluice_container::fmp4_demux::MAX_SAMPLES)
                .map(|e| {
                    let s = SampleAt {
                        dts,
                        duration: e.duration.unwrap_or(dur),
                        size: e.size.unwrap_or(size),
                        flags: e.flags.unwrap_or(flags),
                        cts: e.cts.unwrap_or(0),
                    };
                    dts += s.duration as u64;
                    s
                })
                .collect()
        })
        .collect()
}

/// A fragment's reference track's decode time, and each track's ticks.
fn times_of(moof: &Moof, ref_id: u32, trex: &[Trex]) -> (u64, Vec<(u32, u64)>) {
    let mut dts = 0;
    let mut ticks = Vec::new();
    for traf in &moof.traf {
        let runs = samples_of(traf, trex);
        ticks.push((
            traf.tfhd.track_id,
            runs.iter().flatten().map(|s| s.duration as u64).sum(),
        ));
        if traf.tfhd.track_id == ref_id {
            dts = traf.tfdt.as_ref().map_or(0, |t| t.base_media_decode_time);
        }
    }
    (dts, ticks)
}

/// The keyframe of the reference track at or before `offset` seconds into the file, among
/// `part`'s fragments: (fragment index, sample index in the reference track).
fn keyframe_at(
    file: &File,
    path: &Path,
    part: &FilePart,
    offset: f64,
    ref_id: u32,
    ref_scale: u32,
    trex: &[Trex],
) -> Result<(usize, usize), ExportError> {
    let mut best = (part.first, 0);
    for i in part.first..part.end {
        let frag = &part.info.fragments[i];
        if frag.start > offset + 1e-3 {
            break;
        }
        let (_, moof) = load_moof(file, path, frag)?;
        let Some(traf) = moof.traf.iter().find(|t| t.tfhd.track_id == ref_id) else {
            continue;
        };
        let base = traf.tfdt.as_ref().map_or(0, |t| t.base_media_decode_time);
        for (j, s) in samples_of(traf, trex).iter().flatten().enumerate() {
            let t = frag.start + (s.dts - base) as f64 / ref_scale as f64;
            if t > offset + 1e-3 {
                break;
            }
            if s.flags & SAMPLE_NON_SYNC == 0 {
                best = (i, j);
            }
        }
    }
    Ok(best)
}

/// `frag` without the reference track's samples before `cut`, nor the other tracks' samples
/// decoded before it: a new `moof` (encoded with `mp4-atom`), an `mdat` header, and the file
/// ranges of the kept samples. Returns it with its `moof` length, the reference track's decode
/// time and each track's ticks.
fn trim(
    moof: &Moof,
    frag: &FragmentInfo,
    cut: usize,
    timescales: &[(u32, u32)],
    trex: &[Trex],
    path: &Path,
) -> Result<(Trimmed, u32, u64, TrackTicks), ExportError> {
    let (ref_id, ref_scale) = timescales[0];
    let ref_traf = moof
        .traf
        .iter()
        .find(|t| t.tfhd.track_id == ref_id)
        .ok_or_else(|| invalid(path, "no reference track in a fragment"))?;
    let cut_dts = samples_of(ref_traf, trex)
        .iter()
        .flatten()
        .nth(cut)
        .map(|s| s.dts)
        .ok_or_else(|| invalid(path, "cut past the fragment"))?;
    let cut_secs = cut_dts as f64 / ref_scale as f64;
    let mut out = moof.clone();
    out.traf.clear();
    // (file offset, length, traf, trun) of each kept run's bytes.
    let mut pieces: Vec<(u64, u64, usize, usize)> = Vec::new();
    let mut ref_dts = 0;
    let mut ticks: Vec<(u32, u64)> = Vec::new();
    let mut prev_end = frag.offset;
    for (ti, traf) in moof.traf.iter().enumerate() {
        let id = traf.tfhd.track_id;
        let scale = timescales.iter().find(|t| t.0 == id).map_or(1, |t| t.1).max(1) as f64;
        let base = match traf.tfhd.base_data_offset {
            Some(b) => b,
            None if traf.tfhd.default_base_is_moof || ti == 0 => frag.offset,
            None => prev_end,
        };
        let runs = samples_of(traf, trex);
        let mut pos = base;
        let mut index = 0usize;
        let mut new_traf = traf.clone();
        new_traf.trun.clear();
        new_traf.tfhd.base_data_offset = None;
        new_traf.tfhd.default_base_is_moof = true;
        let mut first_kept = None;
        let mut kept_ticks = 0u64;
        for (run, samples) in traf.trun.iter().zip(&runs) {
            if let Some(o) = run.data_offset {
                pos = base
                    .checked_add_signed(o as i64)
                    .ok_or_else(|| invalid(path, "bad data offset"))?;
            }
            let mut kept: Vec<mp4_atom::TrunEntry> = Vec::new();
            let (mut src, mut len) = (None, 0u64);
            for (e, s) in run.samples.iter().zip(samples) {
                let keep = if id == ref_id {
                    index >= cut
                } else {
                    s.dts as f64 / scale >= cut_secs - 1e-6
                };
                if keep {
                    first_kept.get_or_insert(s.dts);
                    kept_ticks += s.duration as u64;
                    src.get_or_insert(pos);
                    len += s.size as u64;
                    kept.push(e);
                }
                pos += s.size as u64;
                index += 1;
            }
            if let (Some(src), false) = (src, kept.is_empty()) {
                let samples = match &run.samples {
                    mp4_atom::TrunSamples::Inherited { .. } => mp4_atom::TrunSamples::Inherited {
                        count: kept.len() as u32,
                        first_flags: kept[0].flags,
                    },
                    mp4_atom::TrunSamples::Explicit(_) => mp4_atom::TrunSamples::Explicit(kept),
                };
                pieces.push((src, len, out.traf.len(), new_traf.trun.len()));
                new_traf.trun.push(mp4_atom::Trun {
                    data_offset: Some(0),
                    samples,
                });
            }
        }
        prev_end = pos;
        let Some(first) = first_kept else {
            continue;
        };
        new_traf.tfdt = Some(mp4_atom::Tfdt {
            base_media_decode_time: first,
        });
        if id == ref_id {
            ref_dts = first;
        }
        ticks.push((id, kept_ticks));
        out.traf.push(new_traf);
    }
    // The kept bytes go in the order they had in the file (the writer interleaves tracks).
    pieces.sort_by_key(|p| p.0);
    let encode = |m: &Moof| -> Result<Vec<u8>, ExportError> {
        let mut b = Vec::new();
        m.encode(&mut b)
            .map_err(|e| invalid(path, format!("moof: {e}")))?;
        Ok(b)
    };
    let moof_len = encode(&out)?.len() as u64;
    let mut at = moof_len + 8;
    for p in &pieces {
        out.traf[p.2].trun[p.3].data_offset =
            Some(i32::try_from(at).map_err(|_| invalid(path, "fragment too large"))?);
        at += p.1;
    }
    let mut head = encode(&out)?;
    let mdat_len = u32::try_from(at - moof_len).map_err(|_| invalid(path, "fragment too large"))?;
    head.extend_from_slice(&mdat_len.to_be_bytes());
    head.extend_from_slice(b"mdat");
    Ok((
        Trimmed {
            head,
            pieces: pieces.iter().map(|p| (p.0, p.1)).collect(),
        },
        moof_len as u32,
        ref_dts,
        ticks,
    ))
}

/// Walks the boxes of `buf[from..to]`: (kind, start, size).
fn children(buf: &[u8], from: usize, to: usize) -> impl Iterator<Item = ([u8; 4], usize, usize)> + '_ {
    let mut at = from;
    std::iter::from_fn(move || {
        if at + 8 > to {
            return None;
        }
        let size = u32::from_be_bytes(buf[at..at + 4].try_into().ok()?) as usize;
        if size < 8 || at + size > to {
            return None;
        }
        let kind: [u8; 4] = buf[at + 4..at + 8].try_into().ok()?;
        let item = (kind, at, size);
        at += size;
        Some(item)
    })
}

/// Rewrites a `moof` in place: its sequence number, and each track fragment's decode time moved
/// by its track's shift. In place, so the box keeps its size and every sample data offset stays
/// true (re-encoding could change sizes, and would drop boxes the encoder does not know).
fn patch_moof(moof: &mut [u8], seq: u32, shifts: &[(u32, i64)]) -> Result<(), String> {
    let len = moof.len();
    let kids: Vec<_> = children(moof, 8, len).collect();
    for (kind, at, size) in kids {
        match &kind {
            b"mfhd" if size >= 16 => moof[at + 12..at + 16].copy_from_slice(&seq.to_be_bytes()),
            b"traf" => {
                let mut track = None;
                let boxes: Vec<_> = children(moof, at + 8, at + size).collect();
                for (k, a, s) in boxes {
                    match &k {
                        b"tfhd" if s >= 16 => {
                            track = Some(u32::from_be_bytes(
                                moof[a + 12..a + 16].try_into().unwrap_or([0; 4]),
                            ));
                        }
                        b"tfdt" if s >= 16 => {
                            let shift = track
                                .and_then(|t| shifts.iter().find(|(id, _)| *id == t))
                                .map_or(0, |(_, s)| *s);
                            if moof[a + 8] == 1 && s >= 20 {
                                let old =
                                    u64::from_be_bytes(moof[a + 12..a + 20].try_into().unwrap_or([0; 8]));
                                let new = (old as i64).saturating_add(shift).max(0) as u64;
                                moof[a + 12..a + 20].copy_from_slice(&new.to_be_bytes());
                            } else {
                                let old =
                                    u32::from_be_bytes(moof[a + 12..a + 16].try_into().unwrap_or([0; 4]));
                                let new = (old as i64).saturating_add(shift).max(0);
                                let new =
                                    u32::try_from(new).map_err(|_| "a 32-bit tfdt overflows".to_owned())?;
                                moof[a + 12..a + 16].copy_from_slice(&new.to_be_bytes());
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Sets the duration fields of an init (`ftyp`+`moov`): `mvhd` and `mvex/mehd`, in the movie
/// timescale, in place.
fn patch_init(init: &mut [u8], mehd_at: Option<u64>, seconds: f64) -> Result<(), String> {
    let len = init.len();
    let moov = children(init, 0, len)
        .find(|(k, _, _)| k == b"moov")
        .ok_or("no moov")?;
    let (_, at, size) = moov;
    let parsed = Moov::decode(&mut &init[at..at + size]).map_err(|e| format!("moov: {e}"))?;
    let scale = parsed.mvhd.timescale.max(1) as f64;
    let ticks = (seconds * scale).round() as u64;
    let mvhd = children(init, at + 8, at + size).find(|(k, _, _)| k == b"mvhd");
    if let Some((_, m, s)) = mvhd {
        if init[m + 8] == 1 && s >= 40 {
            init[m + 32..m + 40].copy_from_slice(&ticks.to_be_bytes());
        } else if s >= 28 {
            let t = u32::try_from(ticks).unwrap_or(u32::MAX);
            init[m + 24..m + 28].copy_from_slice(&t.to_be_bytes());
        }
    }
    if let Some(m) = mehd_at.map(|m| m as usize).filter(|m| m + 8 <= len) {
        init[m..m + 8].copy_from_slice(&ticks.to_be_bytes());
    }
    Ok(())
}

impl Export {
    /// Lays out the output of `plan`: reads every used `moof` once (for decode times and
    /// durations), none of the media data. The first fragment is cut to start at the keyframe at
    /// or before the range's start.
    pub fn new(plan: Plan, open: Opener) -> Result<Export, ExportError> {
        let first = &plan.parts[0];
        let path0 = &first.entry.file;
        let &(ref_id, ref_scale) = first
            .info
            .timescales
            .first()
            .ok_or_else(|| invalid(path0, "no track"))?;
        let trex = trex_of(&first.info.init).map_err(|e| invalid(path0, e))?;
        let mut frags = Vec::new();
        let mut shifts = Vec::new();
        let mut files = Vec::new();
        // (each track's ticks, independent) per output fragment, for the sidx.
        let mut index: Vec<(Vec<(u32, u64)>, bool)> = Vec::new();
        // Where the next file starts on the output timeline, in reference ticks.
        let mut out_ticks: u64 = 0;
        let mut pos: u64 = 0;
        for (pi, part) in plan.parts.iter().enumerate() {
            let path = &part.entry.file;
            let file = open(path).map_err(|e| io_err(path, e))?;
            let (from, cut) = if pi == 0 {
                let offset = plan
                    .from
                    .duration_since(part.entry.start)
                    .unwrap_or_default()
                    .as_secs_f64();
                keyframe_at(&file, path, part, offset, ref_id, ref_scale, &trex)?
            } else {
                (part.first, 0)
            };
            let mut shift_ref: Option<i64> = None;
            for i in from..part.end {
                let frag = &part.info.fragments[i];
                let (bytes, moof) = load_moof(&file, path, frag)?;
                let (out, dts, ticks) = if i == from && cut > 0 {
                    let (t, moof_len, dts, ticks) =
                        trim(&moof, frag, cut, &part.info.timescales, &trex, path)?;
                    let len = t.head.len() as u64 + t.pieces.iter().map(|p| p.1).sum::<u64>();
                    let f = OutFragment {
                        part: pi as u32,
                        src: frag.offset,
                        moof_len,
                        len,
                        out: pos,
                        trimmed: Some(Box::new(t)),
                    };
                    (f, dts, ticks)
                } else {
                    let (dts, ticks) = times_of(&moof, ref_id, &trex);
                    let f = OutFragment {
                        part: pi as u32,
                        src: frag.offset,
                        moof_len: bytes.len() as u32,
                        len: frag.len,
                        out: pos,
                        trimmed: None,
                    };
                    (f, dts, ticks)
                };
                if shift_ref.is_none() {
                    shift_ref = Some(out_ticks as i64 - dts as i64);
                }
                out_ticks += ticks.iter().find(|t| t.0 == ref_id).map_or(0, |t| t.1);
                index.push((ticks, frag.independent || i == from));
                pos += out.len;
                frags.push(out);
            }
            let shift_ref = shift_ref.unwrap_or(0);
            // Every track moves by the same time, so audio stays with video.
            let shift: Vec<(u32, i64)> = part
                .info
                .timescales
                .iter()
                .map(|&(id, scale)| {
                    let s = shift_ref as i128 * scale as i128 / ref_scale.max(1) as i128;
                    (id, s as i64)
                })
                .collect();
            shifts.push(shift);
            files.push(path.clone());
        }
        let duration = out_ticks as f64 / ref_scale.max(1) as f64;
        let mut head = first.info.init.clone();
        patch_init(&mut head, first.info.mehd_at, duration).map_err(|e| invalid(path0, e))?;
        // A sidx only when every fragment starts with a keyframe: Chromium and ffmpeg seek to a
        // reference's first byte and decode from there, so a reference starting mid-GOP fails
        // to decode (Chromium: PIPELINE_ERROR_DECODE). Without one they seek correctly from the
        // moofs' per-sample keyframe flags. The recorder cuts fragments on time, so its files
        // have a keyframe-started fragment only where the GOP and the part line up.
        if index.iter().all(|(_, sap)| *sap) {
            head.extend_from_slice(
                &sidx(&first.info.timescales, &index, &frags).map_err(|e| invalid(path0, e))?,
            );
        }
        let head_len = head.len() as u64;
        for f in &mut frags {
            f.out += head_len;
        }
        Ok(Export {
            len: head_len + pos,
            head,
            frags,
            files,
            shifts,
            duration,
            open,
        })
    }

    /// Length of the whole output, in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Duration of the output, in seconds.
    pub fn duration(&self) -> f64 {
        self.duration
    }

    /// A reader of the output's bytes `[from, to)`.
    pub fn reader(self: &Arc<Self>, from: u64, to: u64) -> ExportReader {
        ExportReader {
            export: self.clone(),
            pos: from.min(self.len),
            end: to.min(self.len),
            file: None,
            moof: None,
        }
    }
}

/// The `sidx` boxes of the output, one per track (the reference track's first; ffmpeg seeks
/// wrongly in the other tracks when only one has an index): one reference per fragment, or per
/// run of fragments when there are more than a `sidx` holds.
fn sidx(
    tracks: &[(u32, u32)],
    index: &[(Vec<(u32, u64)>, bool)],
    frags: &[OutFragment],
) -> Result<Vec<u8>, String> {
    // One reference per fragment (ffmpeg seeks wrongly in references of several fragments),
    // merged by twos while there are more than a `sidx` holds.
    let mut runs: Vec<std::ops::Range<usize>> = (0..index.len()).map(|i| i..i + 1).collect();
    while runs.len() > MAX_REFS {
        runs = runs.chunks(2).map(|c| c[0].start..c[c.len() - 1].end).collect();
    }
    let mut boxes: Vec<Sidx> = tracks
        .iter()
        .map(|&(id, scale)| {
            let references = runs
                .iter()
                .map(|r| {
                    let ticks: u64 = index[r.clone()]
                        .iter()
                        .map(|(t, _)| t.iter().find(|t| t.0 == id).map_or(0, |t| t.1))
                        .sum();
                    let size: u64 = frags[r.clone()].iter().map(|f| f.len).sum();
                    let sap = index[r.start].1;
                    SegmentReference {
                        reference_type: false,
                        referenced_size: size.min(0x7fff_ffff) as u32,
                        subsegment_duration: ticks.min(u32::MAX as u64) as u32,
                        starts_with_sap: sap,
                        sap_type: if sap { 1 } else { 0 },
                        sap_delta_time: 0,
                    }
                })
                .collect();
            Sidx {
                reference_id: id,
                timescale: scale,
                earliest_presentation_time: 0,
                first_offset: 0,
                references,
            }
        })
        .collect();
    // Each box's offsets count from its own end: past the boxes after it.
    let encode = |b: &Sidx| -> Result<Vec<u8>, String> {
        let mut v = Vec::new();
        b.encode(&mut v).map_err(|e| format!("sidx: {e}"))?;
        Ok(v)
    };
    let sizes: Vec<u64> = boxes
        .iter()
        .map(|b| encode(b).map(|v| v.len() as u64))
        .collect::<Result<_, _>>()?;
    for (i, b) in boxes.iter_mut().enumerate() {
        b.first_offset = sizes[i + 1..].iter().sum();
    }
    let mut out = Vec::new();
    for b in &boxes {
        out.extend_from_slice(&encode(b)?);
    }
    Ok(out)
}

/// The `mvex/trex` defaults of an init.
fn trex_of(init: &[u8]) -> Result<Vec<Trex>, String> {
    let (_, at, size) = children(init, 0, init.len())
        .find(|(k, _, _)| k == b"moov")
        .ok_or("no moov")?;
    let moov = Moov::decode(&mut &init[at..at + size]).map_err(|e| format!("moov: {e}"))?;
    Ok(moov
        .mvex
        .map(|m| {
            m.trex
                .iter()
                .map(|t| {
                    (
                        t.track_id,
                        t.default_sample_duration,
                        t.default_sample_size,
                        t.default_sample_flags,
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Reads a byte range of an [`Export`]: the header from memory, each `moof` read and patched,
/// each `mdat` read straight from its file. Blocking; memory is one `moof` and the caller's
/// buffer.
pub struct ExportReader {
    export: Arc<Export>,
    pos: u64,
    end: u64,
    file: Option<(u32, File)>,
    moof: Option<(usize, Vec<u8>)>,
}

impl ExportReader {
    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    fn file(&mut self, part: u32) -> io::Result<&File> {
        if self.file.as_ref().is_none_or(|(p, _)| *p != part) {
            let path = &self.export.files[part as usize];
            self.file = Some((part, (self.export.open)(path)?));
        }
        match &self.file {
            Some((_, f)) => Ok(f),
            None => Err(io::Error::other("no file")),
        }
    }
}

impl Read for ExportReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        let ex = self.export.clone();
        let head_len = ex.head.len() as u64;
        if self.pos < head_len {
            let from = self.pos as usize;
            let n = want.min(ex.head.len() - from);
            buf[..n].copy_from_slice(&ex.head[from..from + n]);
            self.pos += n as u64;
            return Ok(n);
        }
        let i = ex.frags.partition_point(|f| f.out <= self.pos) - 1;
        let f = &ex.frags[i];
        // The fragment's head (its moof, patched; with the mdat header when cut), then its
        // media bytes as they lie in the file.
        if self.moof.as_ref().is_none_or(|(j, _)| *j != i) {
            let mut head = match &f.trimmed {
                Some(t) => t.head.clone(),
                None => {
                    let mut m = vec![0u8; f.moof_len as usize];
                    self.file(f.part)?.read_exact_at(&mut m, f.src)?;
                    m
                }
            };
            patch_moof(
                &mut head[..f.moof_len as usize],
                i as u32 + 1,
                &ex.shifts[f.part as usize],
            )
            .map_err(io::Error::other)?;
            self.moof = Some((i, head));
        }
        let head = match &self.moof {
            Some((_, m)) => m,
            None => return Err(io::Error::other("no moof")),
        };
        let local = self.pos - f.out;
        let n = if local < head.len() as u64 {
            let n = want.min(head.len() - local as usize);
            buf[..n].copy_from_slice(&head[local as usize..local as usize + n]);
            n
        } else {
            let mut at = local - head.len() as u64;
            let single = [(f.src + f.moof_len as u64, f.len - f.moof_len as u64)];
            let pieces: &[(u64, u64)] = match &f.trimmed {
                Some(t) => &t.pieces,
                None => &single,
            };
            let mut src = None;
            for &(off, len) in pieces {
                if at < len {
                    src = Some((off + at, len - at));
                    break;
                }
                at -= len;
            }
            let (off, left) = src.ok_or_else(|| io::Error::other("read past a fragment"))?;
            let n = want.min(left as usize);
            self.file(f.part)?.read_exact_at(&mut buf[..n], off)?;
            n
        };
        self.pos += n as u64;
        Ok(n)
    }
}

/// One media segment of an HLS VOD playlist: fragments `[from, to)` of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct HlsSegment {
    pub from: usize,
    pub to: usize,
    /// Seconds.
    pub duration: f64,
}

/// A file's fragments grouped into media segments of at least `min` seconds. The first one starts
/// on an independent fragment; the others may not (the recorder cuts fragments on time, not on
/// keyframes), which hls.js and MSE handle by decoding from the next keyframe after a seek.
pub fn hls_segments(part: &FilePart, min: f64) -> Vec<HlsSegment> {
    let mut out: Vec<HlsSegment> = Vec::new();
    for (i, f) in part.fragments().iter().enumerate() {
        let i = part.first + i;
        match out.last_mut() {
            Some(s) if s.duration < min => {
                s.to = i + 1;
                s.duration += f.duration;
            }
            _ => out.push(HlsSegment {
                from: i,
                to: i + 1,
                duration: f.duration,
            }),
        }
    }
    out
}

/// Where fragments `[from, to)` of a file lie: (offset, length); `None` when out of range.
pub fn fragment_range(info: &FileInfo, from: usize, to: usize) -> Option<(u64, u64)> {
    if from >= to || to > info.fragments.len() {
        return None;
    }
    let a = info.fragments[from].offset;
    let last = &info.fragments[to - 1];
    Some((a, last.offset + last.len - a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_moof_moves_decode_times_and_sequence() {
        // moof { mfhd(seq 7), traf { tfhd(track 2), tfdt v1 (1000) } }
        let mut moof = Vec::new();
        moof.extend_from_slice(&[0, 0, 0, 68, b'm', b'o', b'o', b'f']);
        moof.extend_from_slice(&[0, 0, 0, 16, b'm', b'f', b'h', b'd', 0, 0, 0, 0, 0, 0, 0, 7]);
        moof.extend_from_slice(&[0, 0, 0, 44, b't', b'r', b'a', b'f']);
        moof.extend_from_slice(&[0, 0, 0, 16, b't', b'f', b'h', b'd', 0, 2, 0, 0, 0, 0, 0, 2]);
        moof.extend_from_slice(&[0, 0, 0, 20, b't', b'f', b'd', b't', 1, 0, 0, 0]);
        moof.extend_from_slice(&1000u64.to_be_bytes());
        assert_eq!(moof.len(), 68);
        patch_moof(&mut moof, 3, &[(2, -400), (1, 5)]).unwrap();
        assert_eq!(&moof[20..24], &3u32.to_be_bytes());
        assert_eq!(&moof[60..68], &600u64.to_be_bytes());
        patch_moof(&mut moof, 3, &[(2, -10_000)]).unwrap();
        assert_eq!(&moof[60..68], &0u64.to_be_bytes(), "clamped at 0");
        // Garbage sizes end the walk, never panic.
        let mut bad = moof.clone();
        bad[24..28].copy_from_slice(&[0xff; 4]);
        patch_moof(&mut bad, 1, &[]).unwrap();
    }

    #[test]
    fn hls_segments_last_two_seconds() {
        let frag = |i: usize, independent| FragmentInfo {
            offset: i as u64 * 100,
            len: 100,
            start: i as f64,
            duration: 1.0,
            independent,
        };
        let info = FileInfo {
            format: Format::Fmp4,
            init: Vec::new(),
            duration: 7.0,
            fragments: (0..7).map(|i| frag(i, i % 2 == 0 || i == 5)).collect(),
            good_len: 700,
            file_len: 700,
            complete: true,
            mehd_at: None,
            timescales: vec![(1, 90_000)],
        };
        let part = FilePart {
            entry: SegmentEntry {
                file: "/r/a.mp4".into(),
                start: SystemTime::UNIX_EPOCH,
                duration: Duration::from_secs(7),
                bytes: 700,
                format: Format::Fmp4,
                complete: true,
                writing: false,
            },
            info: Arc::new(info.clone()),
            first: 0,
            end: 7,
        };
        let segs = hls_segments(&part, 2.0);
        let bounds: Vec<(usize, usize)> = segs.iter().map(|s| (s.from, s.to)).collect();
        assert_eq!(bounds, vec![(0, 2), (2, 4), (4, 6), (6, 7)]);
        assert_eq!(fragment_range(&info, 2, 4), Some((200, 200)));
        assert_eq!(fragment_range(&info, 4, 8), None);
        assert_eq!(fragment_range(&info, 3, 3), None);
    }

    #[test]
    fn sidx_per_track_counts_offsets_past_the_later_boxes() {
        let frag = |out, len| OutFragment {
            part: 0,
            src: 0,
            moof_len: 8,
            len,
            out,
            trimmed: None,
        };
        let frags = vec![frag(0, 100), frag(100, 200), frag(300, 50)];
        let index: Vec<(TrackTicks, bool)> = (0..3)
            .map(|i| (vec![(1, 90_000 + i), (2, 48_000)], true))
            .collect();
        let bytes = sidx(&[(1, 90_000), (2, 48_000)], &index, &frags).unwrap();
        let mut buf = bytes.as_slice();
        let video = Sidx::decode(&mut buf).unwrap();
        let audio = Sidx::decode(&mut buf).unwrap();
        assert!(buf.is_empty());
        assert_eq!((video.reference_id, video.timescale), (1, 90_000));
        assert_eq!(video.first_offset, bytes.len() as u64 / 2, "past the audio sidx");
        assert_eq!(audio.first_offset, 0);
        let sizes: Vec<u32> = video.references.iter().map(|r| r.referenced_size).collect();
        assert_eq!(sizes, vec![100, 200, 50]);
        let ticks: Vec<u32> = video.references.iter().map(|r| r.subsegment_duration).collect();
        assert_eq!(ticks, vec![90_000, 90_001, 90_002]);
        assert!(audio
            .references
            .iter()
            .all(|r| r.subsegment_duration == 48_000 && r.starts_with_sap));
    }

    /// A recording file as the recorder writes it: `seconds` of Opus (20 ms frames, every one a
    /// sync sample) in 1 s fragments, decode times from 0.
    fn opus_file(dir: &Path, name: &str, seconds: i64) -> std::path::PathBuf {
        use bytes::Bytes;
        use sluice_container::fmp4::Fmp4Writer;
        use sluice_container::segmenter::{Segmenter, SegmenterConfig, SegmenterOutput};
        use sluice_media::{CodecId, Frame, Track, CLOCK_RATE};
        let track = Track::audio(1, CodecId::Opus, Bytes::new(), 48_000, 2);
        let (init, _) = Fmp4Writer::new(std::slice::from_ref(&track)).unwrap().file_init();
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
                &Frame::new(1, t, t, true, Bytes::from(vec![i as u8; 60])),
                SystemTime::now(),
            );
        }
        seg.finish();
        while let Some(o) = seg.poll_output() {
            if let SegmenterOutput::Part(p) = o {
                out.extend_from_slice(&p.bytes);
            }
        }
        let file = dir.join(name);
        std::fs::write(&file, out).unwrap();
        file
    }

    fn entry(file: std::path::PathBuf, start_s: u64, seconds: u64) -> SegmentEntry {
        SegmentEntry {
            bytes: std::fs::metadata(&file).unwrap().len(),
            file,
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(start_s),
            duration: Duration::from_secs(seconds),
            format: Format::Fmp4,
            complete: true,
            writing: false,
        }
    }

    /// Two 3 s files cut from 1.5 s for 3 s: one file starting at the sample at 1.5 s, its
    /// timeline continuous from 0 across the files, a sidx (every fragment starts with a sync
    /// sample), the same bytes whatever the read size; and as a progressive MP4.
    #[test]
    fn export_spans_files_from_the_sample_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let segs = vec![
            entry(opus_file(dir.path(), "a.mp4", 3), 1000, 3),
            entry(opus_file(dir.path(), "b.mp4", 3), 1003, 3),
        ];
        let open: Opener = Arc::new(|p: &Path| File::open(p));
        let t = |s: f64| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s);
        let plan = plan(&segs, t(1001.5), t(1004.5), &open, &ProbeCache::new()).unwrap();
        assert_eq!(plan.parts.len(), 2);
        let init = plan.parts[0].info.init.clone();
        let export = Arc::new(Export::new(plan, open.clone()).unwrap());
        // From 1.5 s into a.mp4 to the end of b.mp4's fragment holding 1.5 s.
        assert!((export.duration() - 3.5).abs() < 0.021, "{}", export.duration());
        let mut all = Vec::new();
        export.reader(0, export.len()).read_to_end(&mut all).unwrap();
        assert_eq!(all.len() as u64, export.len());
        let mut small = Vec::new();
        let mut r = export.reader(0, export.len());
        let mut buf = [0u8; 7];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            small.extend_from_slice(&buf[..n]);
        }
        assert_eq!(small, all);
        let mut tail = Vec::new();
        export.reader(1000, export.len()).read_to_end(&mut tail).unwrap();
        assert_eq!(tail, all[1000..]);
        assert!(children(&all, 0, all.len()).any(|(k, _, _)| &k == b"sidx"));
        let out = dir.path().join("out.mp4");
        std::fs::write(&out, &all).unwrap();
        let info = probe(&mut File::open(&out).unwrap(), Format::Fmp4, true).unwrap();
        assert_eq!(info.fragments.len(), 4, "{:?}", info.fragments);
        let mut at = 0.0;
        for f in &info.fragments {
            assert!((f.start - at).abs() < 1e-6, "fragment at {} after {at}", f.start);
            at += f.duration;
        }
        assert!((at - 3.5).abs() < 0.021);
        // The first sample is the one at 1.5 s (a.mp4's samples carry their index as data).
        let first = &info.fragments[0];
        let moof = Moof::decode(&mut &all[first.offset as usize..]).unwrap();
        let data_at = first.offset as usize + moof.traf[0].trun[0].data_offset.unwrap() as usize;
        assert_eq!(all[data_at], 75, "1.5 s is the 75th 20 ms frame");

        let mp4 = Arc::new(Progressive::new(&export, &init).unwrap());
        let mut prog = Vec::new();
        mp4.reader(0, mp4.len()).read_to_end(&mut prog).unwrap();
        let kinds: Vec<[u8; 4]> = children(&prog, 0, prog.len()).map(|(k, _, _)| k).collect();
        assert_eq!(kinds, [*b"ftyp", *b"moov", *b"mdat"]);
        let (_, at, size) = children(&prog, 0, prog.len()).nth(1).unwrap();
        let moov = Moov::decode(&mut &prog[at..at + size]).unwrap();
        let stbl = &moov.trak[0].mdia.minf.stbl;
        let samples: u32 = stbl.stts.entries.iter().map(|e| e.sample_count).sum();
        assert_eq!(samples, 175, "3.5 s of 20 ms frames");
        let co = &stbl.co64.as_ref().unwrap().entries;
        assert_eq!(prog[co[0] as usize], 75);
    }
}
