//! Fragmented MP4 / CMAF reading (ISO/IEC 14496-12, ISO/IEC 23000-19) into core tracks and
//! frames: an initialization segment (`ftyp` + `moov`: each `trak`'s sample entry, timescale and
//! edit list) gives the [`Track`]s, and each media segment (`moof` + `mdat` pairs, with `styp`,
//! `sidx`, `prft`, `emsg` ... skipped) gives [`Frame`]s on the core clock, in decode order.
//!
//! Boxes are decoded with `mp4-atom`, which bounds what it allocates by the bytes it is given;
//! what this module adds is bounded too: a sample is a slice of the segment (no copy unless NAL
//! lengths must be rewritten), a segment holds at most [`MAX_SAMPLES`] samples, and every
//! sample must lie inside the segment.
//!
//! Timing: a sample's decode time is the track fragment's `tfdt` (or, without one, the end of
//! the track's previous fragment) plus the durations before it (`trun`, else `tfhd`'s default,
//! else `trex`'s), its presentation time that plus its composition offset; the edit list moves
//! both (an empty edit delays the track, the first real edit's `media_time` is where its
//! presentation starts: how ffmpeg lines up a B-frame delay or audio priming), as ffmpeg's own
//! reader does. Times are converted from the track's timescale with exact integer arithmetic
//! from absolute values, so rounding never accumulates, and start at 0 with the first frame of
//! the stream (one origin for every track, so A/V sync is kept).

use bytes::{BufMut, Bytes, BytesMut};
use mp4_atom::{Atom, Codec, Moof, Moov, Traf, Trak};
use sluice_codec::aac::AudioSpecificConfig;
use sluice_codec::avc::AvcConfig;
use sluice_codec::hevc::HevcConfig;
use sluice_media::{CodecId, Frame, MediaKind, Track, TrackId, CLOCK_RATE};

use crate::ts_demux::DemuxEvent;
use crate::Error;

/// Largest initialization segment read (a `moov` of a few tracks is a few KB).
pub const MAX_INIT: usize = 4 << 20;
/// Most samples one media segment may hold (a 10 s segment at 120 fps with 48 kHz AAC holds
/// under 1 700); more is refused rather than turned into millions of frames.
pub const MAX_SAMPLES: usize = 100_000;
/// Most tracks read from one initialization segment.
const MAX_TRACKS: usize = 16;
/// `sample_is_non_sync_sample` in the sample flags (ISO/IEC 14496-12 §8.8.3.1).
const SAMPLE_NON_SYNC: u32 = 0x0001_0000;

/// One track of the source, as its initialization segment describes it.
#[derive(Debug, Clone)]
struct Trk {
    mp4_id: u32,
    track: Track,
    timescale: u32,
    /// From the edit list, in core ticks: added to every time.
    offset: i64,
    /// NAL length field size of H.264/H.265 samples (the core wants 4).
    nal_length: u8,
    /// From `trex`.
    default_duration: u32,
    default_size: u32,
    default_flags: u32,
    /// Decode time (timescale units) where the track's next fragment starts, without a `tfdt`.
    next_dts: Option<i64>,
}

/// Demuxes an fMP4 stream delivered as an initialization segment and media segments.
#[derive(Debug, Default)]
pub struct Fmp4Demuxer {
    tracks: Vec<Trk>,
    /// The stream's zero, in core ticks (the first frame's decode time).
    origin: Option<i64>,
}

impl Fmp4Demuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an initialization segment has been read.
    pub fn has_init(&self) -> bool {
        !self.tracks.is_empty()
    }

    /// Reads an initialization segment and appends [`DemuxEvent::Tracks`]. A second one
    /// replaces the first (its tracks are announced again; times keep the same origin).
    pub fn handle_init(&mut self, init: &[u8], out: &mut Vec<DemuxEvent>) -> Result<(), Error> {
        if init.len() > MAX_INIT {
            return Err(err(format!("an initialization segment of {} bytes", init.len())));
        }
        let mut buf = init;
        let mut moov = None;
        while !buf.is_empty() {
            let (kind, body, rest) = next_box(buf)?;
            if kind == *b"moov" {
                let m = Moov::decode_body(&mut &*body).map_err(|e| err(format!("moov: {e}")))?;
                moov = Some(m);
            } else if kind == *b"moof" || kind == *b"mdat" {
                return Err(err(
                    "a media segment where the initialization segment was expected",
                ));
            }
            buf = rest;
        }
        let moov = moov.ok_or_else(|| err("no moov box in the initialization segment"))?;
        let mut tracks = Vec::new();
        let mut skipped = Vec::new();
        for trak in &moov.trak {
            if tracks.len() == MAX_TRACKS {
                break;
            }
            match track(trak, tracks.len() as TrackId, moov.mvhd.timescale) {
                Ok(Some(mut t)) => {
                    if let Some(trex) = moov
                        .mvex
                        .as_ref()
                        .and_then(|m| m.trex.iter().find(|x| x.track_id == t.mp4_id))
                    {
                        t.default_duration = trex.default_sample_duration;
                        t.default_size = trex.default_sample_size;
                        t.default_flags = trex.default_sample_flags;
                    }
                    tracks.push(t);
                }
                Ok(None) => {}
                Err(e) => skipped.push(e),
            }
        }
        if tracks.is_empty() {
            let why = if skipped.is_empty() {
                "no audio or video track".to_owned()
            } else {
                skipped.join("; ")
            };
            return Err(err(format!("no track we can read: {why}")));
        }
        out.push(DemuxEvent::Tracks(
            tracks.iter().map(|t| t.track.clone()).collect(),
        ));
        self.tracks = tracks;
        Ok(())
    }

    /// Demuxes one media segment (any number of `moof` + `mdat` pairs) and appends its frames in
    /// decode order. `segment` is shared: the frames' payloads are slices of it.
    pub fn handle_segment(&mut self, segment: &Bytes, out: &mut Vec<DemuxEvent>) -> Result<(), Error> {
        if self.tracks.is_empty() {
            return Err(err("a media segment before the initialization segment"));
        }
        let mut frames: Vec<Frame> = Vec::new();
        let mut pos = 0usize;
        let mut moofs = 0usize;
        while pos < segment.len() {
            let (kind, body, rest) = next_box(&segment[pos..])?;
            let end = segment.len() - rest.len();
            if kind == *b"moof" {
                let moof = Moof::decode_body(&mut &*body).map_err(|e| err(format!("moof: {e}")))?;
                self.fragment(&moof, segment, pos, &mut frames)?;
                moofs += 1;
            } else if kind == *b"moov" {
                return Err(err(
                    "an initialization segment where a media segment was expected",
                ));
            }
            pos = end;
        }
        if moofs == 0 {
            return Err(err("a media segment without any moof box"));
        }
        // Tracks come one after the other in a fragment: the publisher wants them interleaved.
        frames.sort_by_key(|f| f.dts);
        if let (None, Some(first)) = (self.origin, frames.first()) {
            self.origin = Some(first.dts);
        }
        let origin = self.origin.unwrap_or(0);
        for mut f in frames {
            let (Some(dts), Some(pts)) = (f.dts.checked_sub(origin), f.pts.checked_sub(origin)) else {
                return Err(err("a sample time out of range"));
            };
            (f.dts, f.pts) = (dts, pts);
            out.push(DemuxEvent::Frame(f));
        }
        Ok(())
    }

    /// The samples of one `moof` (at `moof_at` in `seg`), appended to `frames`.
    fn fragment(
        &mut self,
        moof: &Moof,
        seg: &Bytes,
        moof_at: usize,
        frames: &mut Vec<Frame>,
    ) -> Result<(), Error> {
        // Where the previous track fragment's data ended: the base of the next one when it has
        // neither a base offset nor default-base-is-moof (§8.8.7.1).
        let mut data_end = moof_at as u64;
        for traf in &moof.traf {
            let Some(ti) = self.tracks.iter().position(|t| t.mp4_id == traf.tfhd.track_id) else {
                continue; // A track we do not read.
            };
            data_end = self.traf(ti, traf, seg, moof_at, data_end, frames)?;
        }
        Ok(())
    }

    fn traf(
        &mut self,
        ti: usize,
        traf: &Traf,
        seg: &Bytes,
        moof_at: usize,
        prev_end: u64,
        frames: &mut Vec<Frame>,
    ) -> Result<u64, Error> {
        let t = &self.tracks[ti];
        let tfhd = &traf.tfhd;
        let base = match (tfhd.base_data_offset, tfhd.default_base_is_moof) {
            // Offsets are from the start of the resource, here the segment.
            (Some(b), _) => b,
            (None, true) => moof_at as u64,
            (None, false) => prev_end,
        };
        let mut dts = match &traf.tfdt {
            Some(tfdt) => {
                i64::try_from(tfdt.base_media_decode_time).map_err(|_| err("a tfdt decode time past 2^63"))?
            }
            None => t.next_dts.unwrap_or(0),
        };
        let default_duration = tfhd.default_sample_duration.unwrap_or(t.default_duration);
        let default_size = tfhd.default_sample_size.unwrap_or(t.default_size);
        let default_flags = tfhd.default_sample_flags.unwrap_or(t.default_flags);
        let mut at = base;
        let mut walked = 0usize;
        for (i, trun) in traf.trun.iter().enumerate() {
            if let Some(off) = trun.data_offset {
                at = base
                    .checked_add_signed(off as i64)
                    .ok_or_else(|| err("a trun data offset before the segment"))?;
            } else if i == 0 {
                at = base;
            }
            for s in trun.samples.iter() {
                // Every sample counts, empty ones too: a run without per-sample fields is a
                // bare count (up to four billion), not data.
                walked += 1;
                if frames.len() >= MAX_SAMPLES || walked > MAX_SAMPLES {
                    return Err(err(format!("more than {MAX_SAMPLES} samples in one segment")));
                }
                let size = s.size.unwrap_or(default_size) as u64;
                let duration = s.duration.unwrap_or(default_duration) as i64;
                let flags = s.flags.unwrap_or(default_flags);
                let cts = s.cts.unwrap_or(0);
                let start = usize::try_from(at).ok().filter(|&a| a <= seg.len());
                let end = at.checked_add(size).and_then(|e| usize::try_from(e).ok());
                let (Some(start), Some(end)) = (start, end.filter(|&e| e <= seg.len())) else {
                    return Err(err(format!(
                        "track {}: a sample of {size} bytes at {at} lies outside the segment ({} bytes)",
                        t.mp4_id,
                        seg.len()
                    )));
                };
                at += size;
                if size > 0 {
                    let data = payload(t, seg.slice(start..end))?;
                    let key = t.track.kind() == MediaKind::Audio || flags & SAMPLE_NON_SYNC == 0;
                    let d = ticks(dts, t.timescale).saturating_add(t.offset);
                    let p = ticks(dts.saturating_add(cts), t.timescale).saturating_add(t.offset);
                    frames.push(Frame::new(t.track.id, d, p, key, data));
                }
                dts = dts.saturating_add(duration);
            }
        }
        self.tracks[ti].next_dts = Some(dts);
        Ok(at)
    }
}

/// Largest box [`Fmp4StreamDemuxer`] waits for (an `mdat` of one frame of a few Mb/s video is
/// tens of KB; a 4K keyframe a few MB).
pub const MAX_STREAM_BOX: usize = 32 << 20;

/// Reads a fragmented MP4 written as one byte stream, as ffmpeg writes it on a pipe (`-f mp4
/// -movflags empty_moov+delay_moov+default_base_moof`): `ftyp` + `moov` give the tracks, then each `moof`
/// with the `mdat` after it is a media segment for [`Fmp4Demuxer`]; `styp`, `sidx`, `free`,
/// `mfra` ... are skipped. Bytes are pushed as they come; a box is kept until it is whole, and a
/// box larger than [`MAX_STREAM_BOX`] ends the stream with an error.
#[derive(Debug, Default)]
pub struct Fmp4StreamDemuxer {
    demux: Fmp4Demuxer,
    buf: BytesMut,
    /// The `ftyp` seen before the `moov`.
    ftyp: Option<Bytes>,
}

impl Fmp4StreamDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The timestamp subtracted from every frame's (the stream's first decode time, in core
    /// ticks), once known: a frame's time in the stream is its own plus this.
    pub fn base(&self) -> Option<i64> {
        self.demux.origin
    }

    /// Reads `data`, the next bytes of the stream, appending what it completes to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<DemuxEvent>) -> Result<(), Error> {
        self.buf.extend_from_slice(data);
        loop {
            let Some((kind, size)) = box_header(&self.buf)? else {
                return Ok(());
            };
            // A media segment is a moof and the mdat after it, taken whole (its samples are
            // slices of it).
            let take = if kind == *b"moof" {
                let Some((next, mdat)) = box_header(self.buf.get(size..).unwrap_or(&[]))? else {
                    return Ok(());
                };
                if next != *b"mdat" {
                    return Err(err(format!(
                        "a moof followed by {} instead of its mdat",
                        String::from_utf8_lossy(&next).escape_debug()
                    )));
                }
                size + mdat
            } else {
                size
            };
            if take > MAX_STREAM_BOX {
                return Err(err(format!("a media segment of {take} bytes")));
            }
            if self.buf.len() < take {
                self.buf.reserve(take - self.buf.len());
                return Ok(());
            }
            let b = self.buf.split_to(take).freeze();
            match &kind {
                b"ftyp" => self.ftyp = Some(b),
                b"moov" => {
                    let mut init = self.ftyp.take().map(|f| f.to_vec()).unwrap_or_default();
                    init.extend_from_slice(&b);
                    self.demux.handle_init(&init, out)?;
                }
                b"moof" => self.demux.handle_segment(&b, out)?,
                b"mdat" => return Err(err("an mdat without its moof")),
                _ => {}
            }
        }
    }
}

/// The type and whole size of the box `buf` starts with, once its header is there.
fn box_header(buf: &[u8]) -> Result<Option<([u8; 4], usize)>, Error> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let size32 = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as u64;
    let kind = [buf[4], buf[5], buf[6], buf[7]];
    let (header, total) = match size32 {
        0 => return Err(err("a box that runs to the end of a stream")),
        1 => {
            let Some(large) = buf.get(8..16) else {
                return Ok(None);
            };
            (16, u64::from_be_bytes(large.try_into().unwrap_or([0; 8])))
        }
        s => (8, s),
    };
    if total < header {
        return Err(err(format!("a box of {total} bytes, less than its header")));
    }
    if total > MAX_STREAM_BOX as u64 {
        return Err(err(format!(
            "a {} box of {total} bytes",
            String::from_utf8_lossy(&kind).escape_debug()
        )));
    }
    Ok(Some((kind, total as usize)))
}

fn err(msg: impl Into<String>) -> Error {
    Error::Fmp4(msg.into())
}

/// One box read from a buffer: its type, its body and what follows it.
type RawBox<'a> = ([u8; 4], &'a [u8], &'a [u8]);

/// The next box of `buf`.
fn next_box(buf: &[u8]) -> Result<RawBox<'_>, Error> {
    if buf.len() < 8 {
        return Err(err(format!("{} stray bytes where a box was expected", buf.len())));
    }
    let size32 = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as u64;
    let kind = [buf[4], buf[5], buf[6], buf[7]];
    let (header, total) = match size32 {
        // To the end of the resource.
        0 => (8, buf.len() as u64),
        1 => {
            let Some(large) = buf.get(8..16) else {
                return Err(err("a box header cut short"));
            };
            (16, u64::from_be_bytes(large.try_into().unwrap_or([0; 8])))
        }
        s => (8, s),
    };
    if total < header || total > buf.len() as u64 {
        return Err(err(format!(
            "a {} box of {total} bytes in {} bytes (not an fMP4 stream, or cut short)",
            String::from_utf8_lossy(&kind).escape_debug(),
            buf.len()
        )));
    }
    let total = total as usize;
    Ok((kind, &buf[header as usize..total], &buf[total..]))
}

/// Converts `t` in `timescale` units to core ticks (exact: from the absolute value).
fn ticks(t: i64, timescale: u32) -> i64 {
    let v = t as i128 * CLOCK_RATE as i128 / timescale.max(1) as i128;
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// The core's form of a sample: H.264/H.265 NAL units with 4-byte lengths; the rest as is.
fn payload(t: &Trk, data: Bytes) -> Result<Bytes, Error> {
    if !matches!(t.track.codec, CodecId::H264 | CodecId::H265) || t.nal_length == 4 {
        return Ok(data);
    }
    let n = t.nal_length as usize;
    let mut out = BytesMut::with_capacity(data.len() + data.len() / 4);
    let mut rest = &data[..];
    while !rest.is_empty() {
        if rest.len() < n {
            return Err(err("a NAL unit length cut short"));
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| a << 8 | b as usize);
        rest = &rest[n..];
        if len > rest.len() {
            return Err(err("a NAL unit longer than its sample"));
        }
        out.put_u32(len as u32);
        out.put_slice(&rest[..len]);
        rest = &rest[len..];
    }
    Ok(out.freeze())
}

/// The core track of a `trak`: `Ok(None)` for tracks that are not audio or video (text, ...).
fn track(trak: &Trak, id: TrackId, movie_timescale: u32) -> Result<Option<Trk>, String> {
    let mp4_id = trak.tkhd.track_id;
    let timescale = trak.mdia.mdhd.timescale;
    let handler = &trak.mdia.hdlr.handler;
    if *handler != mp4_atom::FourCC::new(b"vide") && *handler != mp4_atom::FourCC::new(b"soun") {
        return Ok(None);
    }
    if timescale == 0 {
        return Err(format!("track {mp4_id}: timescale 0"));
    }
    let Some(codec) = trak.mdia.minf.stbl.stsd.codecs.first() else {
        return Err(format!("track {mp4_id}: no sample entry"));
    };
    let encode = |a: &dyn Fn(&mut Vec<u8>) -> mp4_atom::Result<()>| -> Result<Bytes, String> {
        let mut v = Vec::new();
        a(&mut v).map_err(|e| format!("track {mp4_id}: {e}"))?;
        Ok(Bytes::from(v))
    };
    let video = |codec, config: Bytes, w: u16, h: u16| Track::video(id, codec, config, w as u32, h as u32);
    let mut nal_length = 4;
    let track = match codec {
        Codec::Avc1(mp4_atom::Avc1 { visual, avcc, .. })
        | Codec::Avc3(mp4_atom::Avc3 { visual, avcc, .. }) => {
            nal_length = avcc.length_size;
            let mut c = avcc.clone();
            c.length_size = 4;
            let config = encode(&|v| c.encode_body(v))?;
            let mut t = video(CodecId::H264, config, visual.width, visual.height);
            if t.width == 0 || t.height == 0 {
                if let Ok((w, h)) = AvcConfig::parse(&t.config).and_then(|c| c.dimensions()) {
                    (t.width, t.height) = (w, h);
                }
            }
            t
        }
        Codec::Hvc1(mp4_atom::Hvc1 { visual, hvcc, .. })
        | Codec::Hev1(mp4_atom::Hev1 { visual, hvcc, .. }) => {
            nal_length = hvcc.length_size_minus_one + 1;
            let mut c = hvcc.clone();
            c.length_size_minus_one = 3;
            let config = encode(&|v| c.encode_body(v))?;
            let mut t = video(CodecId::H265, config, visual.width, visual.height);
            if t.width == 0 || t.height == 0 {
                if let Ok((w, h)) = HevcConfig::parse(&t.config).and_then(|c| c.dimensions()) {
                    (t.width, t.height) = (w, h);
                }
            }
            t
        }
        Codec::Av01(a) => video(
            CodecId::Av1,
            encode(&|v| a.av1c.encode_body(v))?,
            a.visual.width,
            a.visual.height,
        ),
        Codec::Vp09(a) => video(
            CodecId::Vp9,
            encode(&|v| a.vpcc.encode_body(v))?,
            a.visual.width,
            a.visual.height,
        ),
        Codec::Mp4a(a) => {
            let dc = &a.esds.es_desc.dec_config;
            match dc.object_type_indication {
                // MPEG-4 AAC, MPEG-2 AAC (Main, LC, SSR).
                0x40 | 0x66..=0x68 => {
                    let asc = dc
                        .dec_specific
                        .as_ref()
                        .map(|d| d.raw.clone())
                        .filter(|r| !r.is_empty())
                        .ok_or_else(|| format!("track {mp4_id}: AAC without an AudioSpecificConfig"))?;
                    let parsed =
                        AudioSpecificConfig::parse(&asc).map_err(|e| format!("track {mp4_id}: {e}"))?;
                    Track::audio(
                        id,
                        CodecId::Aac,
                        Bytes::from(asc),
                        parsed.sample_rate,
                        parsed.channels,
                    )
                }
                0x69 | 0x6b => Track::audio(
                    id,
                    CodecId::Mp3,
                    Bytes::new(),
                    a.audio.sample_rate.integer() as u32,
                    a.audio.channel_count.min(255) as u8,
                ),
                o => {
                    return Err(format!(
                        "track {mp4_id}: mp4a object type {o:#x} is not AAC or MP3"
                    ))
                }
            }
        }
        Codec::Mp3(a) => Track::audio(
            id,
            CodecId::Mp3,
            Bytes::new(),
            a.audio.sample_rate.integer() as u32,
            a.audio.channel_count.min(255) as u8,
        ),
        Codec::Opus(a) => {
            let d = &a.dops;
            Track::audio(id, CodecId::Opus, opus_head(d), 48_000, d.output_channel_count)
        }
        Codec::Unknown(kind, _) => {
            return Err(format!("track {mp4_id}: sample entry {kind} is not supported"))
        }
        other => {
            let name = format!("{other:?}");
            let name = name.split('(').next().unwrap_or("?").to_ascii_lowercase();
            return Err(format!("track {mp4_id}: sample entry {name} is not supported"));
        }
    };
    if !(1..=4).contains(&nal_length) || nal_length == 3 {
        return Err(format!("track {mp4_id}: NAL length size {nal_length}"));
    }
    // Empty edits (in the movie's timescale) delay the track; the first real edit says where
    // in the media its presentation starts (§8.6.6).
    let mut offset = 0i64;
    if let Some(elst) = trak.edts.as_ref().and_then(|e| e.elst.as_ref()) {
        for e in &elst.entries {
            let dur = i64::try_from(e.segment_duration).unwrap_or(i64::MAX);
            match e.media_time {
                None => offset = offset.saturating_add(ticks(dur, movie_timescale)),
                Some(t) => {
                    let t = i64::try_from(t).unwrap_or(i64::MAX);
                    offset = offset.saturating_sub(ticks(t, timescale));
                    break;
                }
            }
        }
    }
    Ok(Some(Trk {
        mp4_id,
        track,
        timescale,
        offset,
        nal_length,
        default_duration: 0,
        default_size: 0,
        default_flags: 0,
        next_dts: None,
    }))
}

/// The `OpusHead` (RFC 7845 §5.1, little-endian) the core carries, from a `dOps` box (big-endian).
fn opus_head(d: &mp4_atom::Dops) -> Bytes {
    let mut h = BytesMut::with_capacity(32);
    h.put_slice(b"OpusHead");
    h.put_u8(1);
    h.put_u8(d.output_channel_count);
    h.put_u16_le(d.pre_skip);
    h.put_u32_le(d.input_sample_rate);
    h.put_i16_le(d.output_gain);
    match &d.channel_mapping {
        Some(m) => {
            h.put_u8(m.family);
            h.put_u8(m.stream_count);
            h.put_u8(m.coupled_count);
            h.put_slice(&m.channel_mapping);
        }
        None => h.put_u8(0),
    }
    h.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (cargo fuzz, fmp4_demux and fmp4_stream): sample times far apart made
    /// the shift to the stream's origin overflow (a panic in debug builds). The input is the
    /// fuzz target's: two bytes saying where the init ends, then segments cut at `SEG!`.
    #[test]
    fn extreme_sample_times_are_an_error_not_a_panic() {
        let data = include_bytes!("../testdata/fuzz-demux-time-overflow.bin");
        let (head, rest) = data.split_at(2);
        let split = (u16::from_be_bytes([head[0], head[1]]) as usize).min(rest.len());
        let (init, media) = rest.split_at(split);
        let mut d = Fmp4Demuxer::new();
        let mut out = Vec::new();
        d.handle_init(init, &mut out).expect("the init is well formed");
        let media = Bytes::copy_from_slice(media);
        let mut from = 0;
        while from <= media.len() {
            let end = media[from..]
                .windows(4)
                .position(|w| w == b"SEG!")
                .map_or(media.len(), |p| from + p);
            let _ = d.handle_segment(&media.slice(from..end), &mut out);
            from = end + 4;
        }
    }

    /// A run without per-sample fields is a bare count: four billion empty samples are
    /// refused at the segment's sample limit, not walked one by one (an HLS pull of a hostile
    /// origin). Made from a real segment whose first run says so.
    #[test]
    fn a_huge_sample_count_is_refused_quickly() {
        use mp4_atom::{Decode, Encode};
        let init = include_bytes!("../testdata/ffmpeg_hls_fmp4_h264_aac_init.mp4");
        let seg0 = include_bytes!("../testdata/ffmpeg_hls_fmp4_h264_aac_seg0.m4s");
        let mut buf = &seg0[..];
        let mut boxes = Vec::new();
        while !buf.is_empty() {
            boxes.push(mp4_atom::Any::decode(&mut buf).unwrap());
        }
        for b in &mut boxes {
            if let mp4_atom::Any::Moof(m) = b {
                let t = &mut m.traf[0];
                t.tfhd.default_sample_size = Some(0);
                t.trun.truncate(1);
                t.trun[0].samples = mp4_atom::TrunSamples::Inherited {
                    count: u32::MAX,
                    first_flags: None,
                };
            }
        }
        let mut seg = Vec::new();
        for b in &boxes {
            b.encode(&mut seg).unwrap();
        }
        let mut d = Fmp4Demuxer::new();
        let mut ev = Vec::new();
        d.handle_init(init, &mut ev).unwrap();
        let start = std::time::Instant::now();
        let r = d.handle_segment(&Bytes::from(seg), &mut ev);
        assert!(r.is_err(), "{:?}", ev.len());
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
    use crate::fmp4::{Fmp4Writer, Fragment};
    use proptest::prelude::*;

    fn avc_track() -> Track {
        let rec = Bytes::from_static(include_bytes!("../../codec/testdata/ffmpeg_x264_640x360.avcc"));
        Track::video(0, CodecId::H264, rec, 640, 360)
    }

    fn hevc_track() -> Track {
        let rec = Bytes::from_static(include_bytes!("../../codec/testdata/ffmpeg_x265_640x360.hvcc"));
        Track::video(0, CodecId::H265, rec, 640, 360)
    }

    fn aac_track() -> Track {
        Track::audio(1, CodecId::Aac, Bytes::from_static(&[0x11, 0x90]), 48_000, 2)
    }

    fn opus_track() -> Track {
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 2]);
        head.extend_from_slice(&312u16.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&[0, 0, 0]);
        Track::audio(1, CodecId::Opus, Bytes::from(head), 48_000, 2)
    }

    fn split(events: Vec<DemuxEvent>) -> (Vec<Vec<Track>>, Vec<Frame>) {
        let mut tracks = Vec::new();
        let mut frames = Vec::new();
        for e in events {
            match e {
                DemuxEvent::Tracks(t) => tracks.push(t),
                DemuxEvent::Frame(f) => frames.push(f),
            }
        }
        (tracks, frames)
    }

    /// A sample with a 4-byte NAL length (any bytes for audio).
    fn nal(len: usize, seed: u8) -> Bytes {
        let mut v = (len as u32).to_be_bytes().to_vec();
        v.extend((0..len).map(|i| seed.wrapping_add(i as u8)));
        Bytes::from(v)
    }

    /// Video at 30 fps with B-frame-like offsets and a keyframe every 10, audio every 1024
    /// samples at 48 kHz (1920 ticks: exact in both timescales), in fragments of 15 video frames.
    fn av_frames(n: usize) -> Vec<Frame> {
        let mut out = Vec::new();
        for i in 0..n {
            let dts = i as i64 * 3000;
            let cts = if i % 10 == 0 { 0 } else { 6000 };
            out.push(Frame::new(0, dts, dts + cts, i % 10 == 0, nal(20 + i, i as u8)));
        }
        for i in 0..(n * 3000 / 1920) {
            let t = i as i64 * 1920;
            out.push(Frame::new(1, t, t, true, Bytes::from(vec![i as u8; 7 + i % 5])));
        }
        out
    }

    fn write(tracks: &[Track], frames: &[Frame], per: i64) -> (Bytes, Vec<Bytes>) {
        let mut w = Fmp4Writer::new(tracks).unwrap();
        let mut segs = Vec::new();
        let end = frames.iter().map(|f| f.dts).max().unwrap_or(0) + 1;
        let mut from = 0;
        while from < end {
            let mut frag = Fragment::default();
            let within: Vec<&Frame> = frames
                .iter()
                .filter(|f| f.dts >= from && f.dts < from + per)
                .collect();
            for f in &within {
                frag.push(f);
            }
            if !frag.is_empty() {
                let next = |t: TrackId| {
                    frames
                        .iter()
                        .filter(|f| f.track == t && f.dts >= from + per)
                        .map(|f| f.dts)
                        .min()
                };
                segs.push(w.fragment(&frag, &next));
            }
            from += per;
        }
        (w.init(), segs)
    }

    fn roundtrip(tracks: &[Track], frames: &[Frame]) {
        let (init, segs) = write(tracks, frames, 45_000);
        let mut d = Fmp4Demuxer::new();
        let mut ev = Vec::new();
        d.handle_init(&init, &mut ev).unwrap();
        for s in &segs {
            d.handle_segment(s, &mut ev).unwrap();
        }
        let (announced, got) = split(ev);
        assert_eq!(announced, vec![tracks.to_vec()]);
        let mut want = frames.to_vec();
        want.sort_by_key(|f| (f.dts, f.track));
        let mut got = got;
        got.sort_by_key(|f| (f.dts, f.track));
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                (g.track, g.dts, g.pts, g.keyframe, &g.data),
                (w.track, w.dts, w.pts, w.keyframe, &w.data),
            );
        }
    }

    #[test]
    fn our_h264_aac_fragments_read_back() {
        roundtrip(&[avc_track(), aac_track()], &av_frames(60));
    }

    #[test]
    fn our_h265_opus_fragments_read_back() {
        roundtrip(&[hevc_track(), opus_track()], &av_frames(45));
    }

    #[test]
    fn frames_come_in_decode_order() {
        let (init, segs) = write(&[avc_track(), aac_track()], &av_frames(30), 90_000);
        let mut d = Fmp4Demuxer::new();
        let mut ev = Vec::new();
        d.handle_init(&init, &mut ev).unwrap();
        d.handle_segment(&segs[0], &mut ev).unwrap();
        let (_, frames) = split(ev);
        assert!(frames.windows(2).all(|w| w[0].dts <= w[1].dts));
        assert!(frames.iter().any(|f| f.track == 1) && frames.iter().any(|f| f.track == 0));
    }

    /// ffmpeg 5.1 `-f hls -hls_segment_type fmp4`: x264 with B-frames (an edit list with an empty
    /// edit), AAC mono; ffprobe reads the same file with video at dts 0 / pts 0.2 and audio from
    /// 0.178 s, 10 video and 39 audio packets in the first segment.
    #[test]
    fn ffmpeg_cmaf_h264_aac() {
        let init = include_bytes!("../testdata/ffmpeg_hls_fmp4_h264_aac_init.mp4");
        let seg0 = Bytes::from_static(include_bytes!("../testdata/ffmpeg_hls_fmp4_h264_aac_seg0.m4s"));
        let seg1 = Bytes::from_static(include_bytes!("../testdata/ffmpeg_hls_fmp4_h264_aac_seg1.m4s"));
        let mut d = Fmp4Demuxer::new();
        let mut ev = Vec::new();
        d.handle_init(init, &mut ev).unwrap();
        d.handle_segment(&seg0, &mut ev).unwrap();
        let (tracks, frames) = split(std::mem::take(&mut ev));
        let t = &tracks[0];
        assert_eq!((t[0].codec, t[0].width, t[0].height), (CodecId::H264, 96, 64));
        assert!(AvcConfig::parse(&t[0].config).is_ok());
        assert_eq!(
            (t[1].codec, t[1].sample_rate, t[1].channels),
            (CodecId::Aac, 48_000, 1)
        );
        let video: Vec<&Frame> = frames.iter().filter(|f| f.track == 0).collect();
        let audio: Vec<&Frame> = frames.iter().filter(|f| f.track == 1).collect();
        assert_eq!((video.len(), audio.len()), (10, 39));
        assert!(video[0].keyframe && !video[1].keyframe);
        assert_eq!((video[0].dts, video[0].pts), (0, 18_000));
        assert_eq!(video[1].dts, 9_000);
        assert_eq!(audio[0].dts, 16_020);
        // Samples are NAL units with 4-byte lengths that add up to the sample.
        for f in &video {
            let mut rest = &f.data[..];
            while !rest.is_empty() {
                let n = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                rest = &rest[4 + n..];
            }
        }
        d.handle_segment(&seg1, &mut ev).unwrap();
        let (_, next) = split(ev);
        let v1: Vec<&Frame> = next.iter().filter(|f| f.track == 0).collect();
        assert_eq!(v1[0].dts, 90_000, "the second segment continues the timeline");
        assert!(v1[0].keyframe);
    }

    /// The same with x265 (`hvc1`) and Opus.
    #[test]
    fn ffmpeg_cmaf_h265_opus() {
        let init = include_bytes!("../testdata/ffmpeg_hls_fmp4_h265_opus_init.mp4");
        let seg0 = Bytes::from_static(include_bytes!("../testdata/ffmpeg_hls_fmp4_h265_opus_seg0.m4s"));
        let mut d = Fmp4Demuxer::new();
        let mut ev = Vec::new();
        d.handle_init(init, &mut ev).unwrap();
        d.handle_segment(&seg0, &mut ev).unwrap();
        let (tracks, frames) = split(ev);
        let t = &tracks[0];
        assert_eq!((t[0].codec, t[0].width, t[0].height), (CodecId::H265, 96, 64));
        assert!(HevcConfig::parse(&t[0].config).is_ok());
        assert_eq!(
            (t[1].codec, t[1].sample_rate, t[1].channels),
            (CodecId::Opus, 48_000, 2)
        );
        assert_eq!(&t[1].config[..8], b"OpusHead");
        let video = frames.iter().filter(|f| f.track == 0).count();
        let audio = frames.iter().filter(|f| f.track == 1).count();
        assert_eq!((video, audio), (10, 51));
        assert!(frames.iter().find(|f| f.track == 0).unwrap().keyframe);
    }

    #[test]
    fn two_byte_nal_lengths_become_four() {
        let t = Trk {
            mp4_id: 1,
            track: avc_track(),
            timescale: 90_000,
            offset: 0,
            nal_length: 2,
            default_duration: 0,
            default_size: 0,
            default_flags: 0,
            next_dts: None,
        };
        let out = payload(&t, Bytes::from_static(&[0, 2, 0x65, 1, 0, 1, 0x06])).unwrap();
        assert_eq!(&out[..], &[0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x06]);
        assert!(payload(&t, Bytes::from_static(&[0, 9, 0x65])).is_err());
    }

    #[test]
    fn bad_input_is_refused() {
        let mut d = Fmp4Demuxer::new();
        let mut ev = Vec::new();
        let (init, segs) = write(&[avc_track(), aac_track()], &av_frames(15), 45_000);
        // Media before the initialization segment, and the other way round.
        assert!(d.handle_segment(&segs[0], &mut ev).is_err());
        assert!(d.handle_init(&segs[0], &mut ev).is_err());
        assert!(d.handle_init(b"<html>not a video</html>", &mut ev).is_err());
        d.handle_init(&init, &mut ev).unwrap();
        assert!(d.handle_segment(&init, &mut ev).is_err());
        assert!(d
            .handle_segment(&Bytes::from_static(&[0x47; 188 * 3]), &mut ev)
            .is_err());
        // A segment whose mdat is cut: its samples point past the end.
        let cut = segs[0].slice(..segs[0].len() - 10);
        let mut patched = cut.to_vec();
        let mdat = patched.windows(4).position(|w| w == b"mdat").unwrap() - 4;
        let n = (patched.len() - mdat) as u32;
        patched[mdat..mdat + 4].copy_from_slice(&n.to_be_bytes());
        let e = d.handle_segment(&Bytes::from(patched), &mut ev).unwrap_err();
        assert!(e.to_string().contains("outside the segment"), "{e}");
    }

    #[test]
    fn a_segment_cut_anywhere_never_panics() {
        let (init, segs) = write(&[avc_track(), aac_track()], &av_frames(15), 45_000);
        for cut in 0..segs[0].len() {
            let mut d = Fmp4Demuxer::new();
            let mut ev = Vec::new();
            d.handle_init(&init, &mut ev).unwrap();
            let _ = d.handle_segment(&segs[0].slice(..cut), &mut ev);
        }
        for cut in 0..init.len() {
            let _ = Fmp4Demuxer::new().handle_init(&init[..cut], &mut Vec::new());
        }
    }

    /// ffmpeg 5.1 writing fragmented MP4 on a pipe (`-f mp4 -movflags
    /// empty_moov+delay_moov+default_base_moof -frag_duration 1`), as the transcoder reads its VP9 and AV1
    /// renditions; ffprobe counts 30 video packets (2 keyframes) and 48 AAC packets in the VP9
    /// file, 30 packets in the AV1 one.
    #[test]
    fn ffmpeg_fmp4_on_a_pipe_vp9_and_av1() {
        for (file, codec, audio) in [
            (
                &include_bytes!("../testdata/ffmpeg_pipe_fmp4_vp9_aac.mp4")[..],
                CodecId::Vp9,
                48,
            ),
            (
                &include_bytes!("../testdata/ffmpeg_pipe_fmp4_av1.mp4")[..],
                CodecId::Av1,
                0,
            ),
        ] {
            // Whatever the size of the reads, the same frames.
            let mut results = Vec::new();
            for chunk in [1, 7, 4096, file.len()] {
                let mut d = Fmp4StreamDemuxer::new();
                let mut ev = Vec::new();
                for c in file.chunks(chunk) {
                    d.push(c, &mut ev).unwrap();
                }
                let (tracks, frames) = split(ev);
                assert_eq!(tracks.len(), 1);
                let t = &tracks[0];
                assert_eq!((t[0].codec, t[0].width, t[0].height), (codec, 96, 64));
                assert!(!t[0].config.is_empty());
                let video: Vec<&Frame> = frames.iter().filter(|f| f.track == 0).collect();
                assert_eq!(video.len(), 30, "{codec:?}");
                assert_eq!(video.iter().filter(|f| f.keyframe).count(), 2, "{codec:?}");
                assert_eq!(frames[0].dts, 0);
                assert_eq!(
                    video[15].dts - video[0].dts,
                    45_000,
                    "{codec:?}: half a second in"
                );
                assert_eq!(frames.len() - video.len(), audio, "{codec:?}");
                assert!(d.buf.is_empty());
                results.push(
                    frames
                        .iter()
                        .map(|f| (f.track, f.dts, f.data.clone()))
                        .collect::<Vec<_>>(),
                );
            }
            assert!(results.windows(2).all(|w| w[0] == w[1]));
        }
    }

    #[test]
    fn a_bad_stream_is_refused() {
        let file = include_bytes!("../testdata/ffmpeg_pipe_fmp4_vp9_aac.mp4");
        let mut ev = Vec::new();
        // An mdat with no moof before it.
        let mut d = Fmp4StreamDemuxer::new();
        assert!(d.push(b"\0\0\0\x10mdat01234567", &mut ev).is_err());
        // A box that runs to the end of the stream, one smaller than its header, a huge one.
        assert!(Fmp4StreamDemuxer::new().push(b"\0\0\0\0moov", &mut ev).is_err());
        assert!(Fmp4StreamDemuxer::new().push(b"\0\0\0\x04moov", &mut ev).is_err());
        let e = Fmp4StreamDemuxer::new()
            .push(b"\0\0\0\x01mdat\0\0\0\x10\0\0\0\0", &mut ev)
            .unwrap_err();
        assert!(e.to_string().contains("bytes"), "{e}");
        // MPEG-TS where fMP4 was expected: not a box stream.
        assert!(Fmp4StreamDemuxer::new().push(&[0x47; 188 * 2], &mut ev).is_err());
        // A moof followed by something else than its mdat.
        let moof = file.windows(4).position(|w| w == b"moof").unwrap() - 4;
        let mut d = Fmp4StreamDemuxer::new();
        d.push(&file[..moof], &mut ev).unwrap();
        let size = u32::from_be_bytes(file[moof..moof + 4].try_into().unwrap()) as usize;
        let mut bad = file[moof..moof + size].to_vec();
        bad.extend_from_slice(b"\0\0\0\x08free");
        let e = d.push(&bad, &mut ev).unwrap_err();
        assert!(e.to_string().contains("instead of its mdat"), "{e}");
    }

    proptest! {
        #[test]
        fn any_frames_read_back(
            gops in proptest::collection::vec((1usize..12, 0i64..4), 1..6),
            sizes in proptest::collection::vec(1usize..300, 1..80),
        ) {
            let mut frames = Vec::new();
            let mut i = 0usize;
            for (len, reorder) in gops {
                for k in 0..len {
                    let dts = i as i64 * 3003;
                    let cts = if k == 0 { 0 } else { reorder * 3003 };
                    frames.push(Frame::new(0, dts, dts + cts, k == 0, nal(sizes[i % sizes.len()], i as u8)));
                    i += 1;
                }
            }
            for j in 0..(i * 3003 / 1920) {
                let t = j as i64 * 1920;
                frames.push(Frame::new(1, t, t, true, Bytes::from(vec![j as u8; sizes[j % sizes.len()]])));
            }
            roundtrip(&[avc_track(), aac_track()], &frames);
        }

        #[test]
        fn any_stream_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600), chunk in 1usize..64) {
            let mut d = Fmp4StreamDemuxer::new();
            let mut ev = Vec::new();
            for c in data.chunks(chunk) {
                if d.push(c, &mut ev).is_err() {
                    break;
                }
            }
        }

        #[test]
        fn any_bytes_never_panic(init in proptest::collection::vec(any::<u8>(), 0..400), seg in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut d = Fmp4Demuxer::new();
            let mut ev = Vec::new();
            let _ = d.handle_init(&init, &mut ev);
            let _ = d.handle_segment(&Bytes::from(seg), &mut ev);
        }
    }
}
