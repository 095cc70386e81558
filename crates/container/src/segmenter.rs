//! The sans-IO segmenter: frames and a caller-supplied clock in; initialization segments, parts
//! and segments (CMAF fMP4, or MPEG-TS) out. It owns the cutting rules and the timing of every
//! output (sequence numbers, durations, PROGRAM-DATE-TIME, discontinuities) for HLS, LL-HLS, DASH
//! and the recorder; it never reads the clock, spawns or does I/O.
//!
//! # Use
//!
//! ```text
//! let mut seg = Segmenter::new(SegmenterConfig::new(Format::Fmp4, Duration::from_secs(2)));
//! seg.start(&tracks)?;                       // each new stream (publisher start or restart)
//! seg.push_frame(&frame, SystemTime::now()); // each frame, in arrival order
//! seg.finish();                              // the stream ended: flush what is buffered
//! while let Some(out) = seg.poll_output() { /* SegmenterOutput::{Init, Part, Segment} */ }
//! ```
//!
//! # Rules
//!
//! - A segment starts on a video keyframe (any frame in audio-only streams) and is cut at the
//!   first keyframe at or past the target duration. A segment is cut without a keyframe (a
//!   *forced* cut, not independent) at a video frame once it reaches `max_duration` or holds
//!   `max_bytes` of samples, so memory stays bounded whatever the GOP.
//! - With parts enabled, a part is cut before the frame that would carry it past the part
//!   duration (video frames only when there is video); each part is one `moof`+`mdat` and is
//!   independent when it starts with a keyframe. A segment's bytes are then its parts' bytes
//!   concatenated, so a store can serve both from the same muxed data. With parts off, each
//!   segment is one fragment and no [`SegmenterOutput::Part`] is produced.
//! - A frame's duration is known only when the next frame of its track arrives: a closed part is
//!   output once every track in it has a following frame (or on [`Segmenter::finish`], a new
//!   stream, or when the stream has moved on a part's length past it, for a track that stopped).
//! - Each [`Segmenter::start`] after the first begins a new timeline: a new init segment (fMP4)
//!   and the discontinuity flag on the next segment and its first part.
//! - PROGRAM-DATE-TIME is anchored on the caller's clock at the first frame of a stream and
//!   follows the decode times from there; it never goes back, even when a restarted publisher's
//!   timestamps do.
//!
//! All times are in the media core's [`CLOCK_RATE`] ticks.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use sluice_media::{CodecId, Frame, MediaKind, Track, TrackId, CLOCK_RATE};

use crate::fmp4::{codec_string, Fmp4Writer, Fragment, Piece};
use crate::ts::TsMuxer;
use crate::Error;

/// The part duration LL-HLS uses unless configured otherwise.
pub const DEFAULT_PART_DURATION: Duration = Duration::from_millis(200);

/// Container of the segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// CMAF fMP4: an initialization segment, then `moof`+`mdat` fragments.
    #[default]
    Fmp4,
    /// MPEG-TS: each segment starts with a PAT and a PMT; there is no init segment.
    MpegTs,
}

/// How the segmenter cuts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmenterConfig {
    pub format: Format,
    /// Segments are cut at the first keyframe at or past this duration.
    pub target_duration: Duration,
    /// Parts of at most this duration (LL-HLS, low-latency DASH); `None` for whole segments.
    pub part_duration: Option<Duration>,
    /// A segment is cut without a keyframe once it is this long.
    pub max_duration: Duration,
    /// A segment is cut without a keyframe once its samples exceed this many bytes.
    pub max_bytes: usize,
    /// With parts on, whether a [`SegmenterOutput::Segment`] carries its bytes (its parts
    /// concatenated, kept in memory until it closes). A consumer that writes parts as they come
    /// (the recorder, with hour-long segments) turns it off: segments then carry no bytes.
    pub segment_bytes: bool,
    /// fMP4: each segment's decode times start at 0 (from its earliest sample) instead of
    /// following the stream's timeline; for segments that are files of their own (recordings).
    pub zero_based: bool,
    /// fMP4: each part (or segment) is one fragment per track instead of one fragment holding
    /// every track, with the byte range of each in [`Chunk::pieces`] and a `prft` box at the start
    /// of each segment; init segments then also come one per track ([`InitSegment::tracks`]).
    /// The HLS packager turns it on so that DASH representations (one track each) are served
    /// from the same bytes as HLS.
    pub per_track: bool,
    /// fMP4 without `per_track`: a part's samples are not copied into its bytes; `bytes` holds
    /// the `moof` and the `mdat` header, and the samples' data follow in [`Chunk::media`]. For a
    /// consumer that gathers them itself (the recorder copies them once, into its aligned
    /// direct-I/O blocks).
    pub gather: bool,
}

impl SegmenterConfig {
    /// Whole segments of `target_duration`; forced cuts at ten times the target (at least 10 s)
    /// or 64 MiB.
    pub fn new(format: Format, target_duration: Duration) -> Self {
        SegmenterConfig {
            format,
            target_duration,
            part_duration: None,
            max_duration: (target_duration * 10).max(Duration::from_secs(10)),
            max_bytes: 64 << 20,
            segment_bytes: true,
            zero_based: false,
            per_track: false,
            gather: false,
        }
    }

    /// The same with parts of `part` (see [`DEFAULT_PART_DURATION`]).
    pub fn with_parts(mut self, part: Duration) -> Self {
        self.part_duration = Some(part);
        self
    }
}

/// What the segmenter produces, polled with [`Segmenter::poll_output`] in this order: an `Init`
/// before the first part of its stream, each segment's parts (when enabled) before the segment.
#[derive(Debug, Clone)]
pub enum SegmenterOutput {
    /// The initialization segment of a new stream (fMP4 only).
    Init(InitSegment),
    /// One part of the segment being built (only when parts are enabled).
    Part(Chunk),
    /// A complete segment; with parts enabled its bytes are its parts' bytes in order.
    Segment(Chunk),
}

/// An fMP4 initialization segment (`ftyp`+`moov`).
#[derive(Debug, Clone)]
pub struct InitSegment {
    /// 1 for the first stream, then one more for each [`Segmenter::start`].
    pub generation: u64,
    pub bytes: Bytes,
    /// RFC 6381 codec strings of the tracks carried (HLS `CODECS`, DASH `codecs`).
    pub codecs: Vec<String>,
    /// With [`SegmenterConfig::per_track`]: each carried track, with its own init segment.
    pub tracks: Vec<(Track, Bytes)>,
}

/// A part or a segment.
#[derive(Clone)]
pub struct Chunk {
    /// Sequence number of the segment (of the segment a part belongs to); from 0, never reset.
    pub sequence: u64,
    /// For a part, its index in its segment; for a segment, how many parts it holds (1 when
    /// parts are off).
    pub part: u32,
    /// Decode time of the first frame, in [`CLOCK_RATE`] ticks.
    pub start_dts: i64,
    /// Duration in ticks (at least 1): up to the start of the next part or segment.
    pub duration_ticks: i64,
    /// Wall-clock time of `start_dts` (EXT-X-PROGRAM-DATE-TIME), never before an earlier output's.
    pub program_date_time: SystemTime,
    /// Starts with a keyframe (always true for audio-only streams).
    pub independent: bool,
    /// First of a new stream after an earlier one (EXT-X-DISCONTINUITY).
    pub discontinuity: bool,
    /// Generation of the [`InitSegment`] it needs (fMP4); `None` for MPEG-TS.
    pub init: Option<u64>,
    /// Video frames it holds (for frame rates).
    pub video_frames: u32,
    pub bytes: Bytes,
    /// With [`SegmenterConfig::per_track`]: where each track's fragments lie in `bytes`, in order
    /// (one per track for a part; one per track and part for a segment).
    pub pieces: Vec<Piece>,
    /// With [`SegmenterConfig::gather`]: the samples' data, which follow `bytes` in this order.
    pub media: Vec<Bytes>,
}

impl Chunk {
    /// Its length in bytes, `media` included.
    pub fn len(&self) -> usize {
        self.bytes.len() + self.media.iter().map(Bytes::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("sequence", &self.sequence)
            .field("part", &self.part)
            .field("start_dts", &self.start_dts)
            .field("duration_ticks", &self.duration_ticks)
            .field("program_date_time", &self.program_date_time)
            .field("independent", &self.independent)
            .field("discontinuity", &self.discontinuity)
            .field("init", &self.init)
            .field("video_frames", &self.video_frames)
            .field("len", &self.len())
            .field("pieces", &self.pieces.len())
            .finish()
    }
}

impl Chunk {
    /// Duration in seconds.
    pub fn duration(&self) -> f64 {
        self.duration_ticks as f64 / CLOCK_RATE as f64
    }

    /// Decode time just after the last frame.
    pub fn end_dts(&self) -> i64 {
        self.start_dts.saturating_add(self.duration_ticks)
    }

    /// Wall-clock time at its end.
    pub fn end_time(&self) -> SystemTime {
        add(self.program_date_time, self.duration_ticks)
    }
}

enum Mux {
    None,
    Fmp4(Box<Fmp4Writer>),
    Ts { muxer: Box<TsMuxer>, buf: BytesMut },
}

/// Last decode time and frame spacing of a carried track.
#[derive(Debug, Clone, Copy)]
struct TrackState {
    id: TrackId,
    last_dts: Option<i64>,
    /// Last positive spacing between two frames, or a default for the codec.
    delta: i64,
}

#[derive(Debug)]
struct OpenSegment {
    sequence: u64,
    start: i64,
    bytes: usize,
    parts: u32,
}

#[derive(Debug)]
struct OpenPart {
    sequence: u64,
    index: u32,
    start: i64,
    independent: bool,
    discontinuity: bool,
    frag: Fragment,
    tracks: Vec<TrackId>,
    video_frames: u32,
}

/// A part that takes no more frames, waiting for the decode time after each of its tracks.
#[derive(Debug)]
struct ClosedPart {
    part: OpenPart,
    end: i64,
    last_of_segment: bool,
    /// Per track of the part: the decode time of its next frame, once known.
    next: Vec<(TrackId, Option<i64>)>,
    /// MPEG-TS bytes (complete at close).
    ts: Option<Bytes>,
}

impl ClosedPart {
    fn ready(&self) -> bool {
        self.next.iter().all(|(_, n)| n.is_some())
    }
}

/// A segment whose parts are being output.
#[derive(Debug)]
struct Assembly {
    chunk: Chunk,
    parts: Vec<Bytes>,
    /// Bytes of the parts so far (the offset of the next part's pieces in the segment).
    len: usize,
}

/// Cuts the frames of successive streams into segments and parts; see the module docs.
pub struct Segmenter {
    config: SegmenterConfig,
    target: i64,
    part_target: Option<i64>,
    max_duration: i64,
    mux: Mux,
    generation: u64,
    started: bool,
    video: Option<TrackId>,
    tracks: Vec<TrackState>,
    segment: Option<OpenSegment>,
    part: Option<OpenPart>,
    closing: VecDeque<ClosedPart>,
    assembly: Option<Assembly>,
    /// [`Segmenter::cut_at_next_keyframe`] was called.
    cut_requested: bool,
    /// With `zero_based`: the segment (sequence) being output and its time origin.
    segment_origin: Option<(u64, i64)>,
    next_sequence: u64,
    pending_discontinuity: bool,
    /// (wall clock, decode time) of the first frame of the current stream.
    anchor: Option<(SystemTime, i64)>,
    last_pdt_end: Option<SystemTime>,
    latest_dts: Option<i64>,
    outputs: VecDeque<SegmenterOutput>,
    dropped: u64,
}

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter")
            .field("config", &self.config)
            .field("generation", &self.generation)
            .field("next_sequence", &self.next_sequence)
            .field("closing", &self.closing.len())
            .field("outputs", &self.outputs.len())
            .finish_non_exhaustive()
    }
}

/// Tolerance of the part cut for timestamps rounded to milliseconds (1 ms in ticks).
const PART_SLACK: i64 = CLOCK_RATE / 1000;

/// Closed parts kept waiting for a stopped track before they are output anyway.
const MAX_CLOSING: usize = 4;

impl Segmenter {
    pub fn new(config: SegmenterConfig) -> Self {
        let target = duration_to_ticks(config.target_duration).max(1);
        Segmenter {
            target,
            part_target: config.part_duration.map(|d| duration_to_ticks(d).max(1)),
            max_duration: duration_to_ticks(config.max_duration).max(target),
            config,
            mux: Mux::None,
            generation: 0,
            started: false,
            video: None,
            tracks: Vec::new(),
            segment: None,
            part: None,
            closing: VecDeque::new(),
            assembly: None,
            cut_requested: false,
            segment_origin: None,
            next_sequence: 0,
            pending_discontinuity: false,
            anchor: None,
            last_pdt_end: None,
            latest_dts: None,
            outputs: VecDeque::new(),
            dropped: 0,
        }
    }

    pub fn config(&self) -> &SegmenterConfig {
        &self.config
    }

    /// Numbers the next segment `sequence` (a packager that takes over from an earlier one on
    /// the same path goes on from its numbers, so its players' blocking reloads stay valid).
    /// Only before the first segment.
    pub fn continue_from(&mut self, sequence: u64) {
        if self.segment.is_none() && self.closing.is_empty() {
            self.next_sequence = self.next_sequence.max(sequence);
        }
    }

    /// Starts a new segment at the next keyframe, whatever the current one's length (the
    /// recorder, resuming in a new file after a write error, needs a segment start there).
    pub fn cut_at_next_keyframe(&mut self) {
        self.cut_requested = true;
    }

    /// Begins a stream with these tracks (the caller picks them; tracks the format cannot carry
    /// are left out). What was buffered of the previous stream is output first, and the next
    /// segment is marked as a discontinuity. An error (no track can be carried) leaves the
    /// segmenter ignoring frames until the next `start`.
    pub fn start(&mut self, tracks: &[Track]) -> Result<(), Error> {
        if self.started {
            self.finish();
            self.pending_discontinuity = true;
        }
        self.started = true;
        self.generation += 1;
        self.anchor = None;
        self.latest_dts = None;
        self.video = None;
        self.tracks.clear();
        self.mux = Mux::None;
        let mux = match self.config.format {
            Format::Fmp4 => {
                let writer = Fmp4Writer::new(tracks)?;
                let per_track = if self.config.per_track {
                    writer
                        .tracks()
                        .filter_map(|t| Some((t.clone(), writer.track_init(t.id)?)))
                        .collect()
                } else {
                    Vec::new()
                };
                self.outputs.push_back(SegmenterOutput::Init(InitSegment {
                    generation: self.generation,
                    tracks: per_track,
                    bytes: writer.init(),
                    codecs: tracks
                        .iter()
                        .filter(|t| writer.carries(t.id))
                        .filter_map(codec_string)
                        .collect(),
                }));
                Mux::Fmp4(Box::new(writer))
            }
            Format::MpegTs => Mux::Ts {
                muxer: Box::new(TsMuxer::new(tracks)?),
                buf: BytesMut::new(),
            },
        };
        self.mux = mux;
        let carried: Vec<&Track> = tracks.iter().filter(|t| self.carries(t.id)).collect();
        for t in carried {
            if t.kind() == MediaKind::Video && self.video.is_none() {
                self.video = Some(t.id);
            }
            self.tracks.push(TrackState {
                id: t.id,
                last_dts: None,
                delta: default_delta(t),
            });
        }
        Ok(())
    }

    /// Whether frames of `track` go into the current stream's segments.
    pub fn carries(&self, track: TrackId) -> bool {
        match &self.mux {
            Mux::Fmp4(w) => w.carries(track),
            Mux::Ts { muxer, .. } => muxer.carries(track),
            Mux::None => false,
        }
    }

    /// Frames the MPEG-TS muxer refused (malformed payloads), since creation.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped
    }

    /// Takes one frame of the current stream, in arrival order; `now` is the caller's wall clock
    /// (used only to anchor PROGRAM-DATE-TIME at a stream's first frame). Frames of tracks not
    /// carried, and frames before the first keyframe of a video stream, are ignored.
    pub fn push_frame(&mut self, frame: &Frame, now: SystemTime) {
        let Some(ti) = self.tracks.iter().position(|t| t.id == frame.track) else {
            return;
        };
        let dts = frame.dts;
        let is_video = Some(frame.track) == self.video;
        let video_stream = self.video.is_some();
        // Frames that may begin a part or a segment.
        let may_cut = is_video || !video_stream;
        let random_access = frame.keyframe || !video_stream;

        // This frame ends the last frame of its track in every part still waiting for it.
        for c in &mut self.closing {
            for (t, next) in &mut c.next {
                if *t == frame.track && next.is_none() {
                    *next = Some(dts);
                }
            }
        }

        match &self.segment {
            None => {
                if video_stream && !(is_video && frame.keyframe) {
                    return;
                }
                self.open_segment(dts, true, now);
            }
            Some(seg) => {
                let elapsed = dts.saturating_sub(seg.start);
                let part_elapsed = self.part.as_ref().map_or(0, |p| dts.saturating_sub(p.start));
                if may_cut && random_access && (elapsed >= self.target || self.cut_requested && elapsed > 0) {
                    self.close_part(dts, true, Some(frame.track));
                    self.open_segment(dts, true, now);
                } else if may_cut
                    && elapsed > 0
                    && (elapsed >= self.max_duration || seg.bytes >= self.config.max_bytes)
                {
                    self.close_part(dts, true, Some(frame.track));
                    self.open_segment(dts, random_access, now);
                } else if let Some(pt) = self.part_target {
                    // The frame's own duration is unknown until the next one comes: it is
                    // guessed from the last spacing, with one millisecond of slack because
                    // RTMP/FLV timestamps are whole milliseconds (30 fps arrives as 33, 33,
                    // 34 ms): without it a 200 ms part would be cut at 5 frames (167 ms, under
                    // the 85 % of the part target that LL-HLS asks, RFC 8216bis 4.4.4.9).
                    let delta = self.tracks[ti].delta;
                    if may_cut && part_elapsed > 0 && part_elapsed.saturating_add(delta) > pt + PART_SLACK {
                        self.close_part(dts, false, Some(frame.track));
                        self.open_part(dts, random_access, false);
                    }
                }
            }
        }

        // Append.
        let t = &mut self.tracks[ti];
        if let Some(last) = t.last_dts {
            let d = dts.saturating_sub(last);
            if d > 0 {
                t.delta = d;
            }
        }
        t.last_dts = Some(dts);
        self.latest_dts = Some(self.latest_dts.map_or(dts, |l| l.max(dts)));
        if let Some(seg) = &mut self.segment {
            seg.bytes += frame.data.len();
        }
        if let Some(p) = &mut self.part {
            if !p.tracks.contains(&frame.track) {
                p.tracks.push(frame.track);
            }
            if is_video {
                p.video_frames += 1;
            }
            match &mut self.mux {
                Mux::Fmp4(_) => p.frag.push(frame),
                Mux::Ts { muxer, buf } => {
                    if muxer.write_frame(frame, buf).is_err() {
                        self.dropped += 1;
                    }
                }
                Mux::None => {}
            }
        }
        self.drain(false);
    }

    /// Ends the current stream: closes the part and segment being built (the last frames'
    /// durations are estimated from their tracks' frame spacing) and outputs everything.
    pub fn finish(&mut self) {
        if let Some(p) = &self.part {
            let end = p
                .tracks
                .iter()
                .filter_map(|id| self.estimated_next(*id))
                .max()
                .unwrap_or(p.start);
            self.close_part(end, true, None);
        }
        self.segment = None;
        self.drain(true);
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<SegmenterOutput> {
        self.outputs.pop_front()
    }

    fn estimated_next(&self, track: TrackId) -> Option<i64> {
        let t = self.tracks.iter().find(|t| t.id == track)?;
        Some(t.last_dts?.saturating_add(t.delta))
    }

    fn open_segment(&mut self, dts: i64, independent: bool, now: SystemTime) {
        if self.anchor.is_none() {
            let wall = self.last_pdt_end.map_or(now, |end| end.max(now));
            self.anchor = Some((wall, dts));
        }
        self.segment = Some(OpenSegment {
            sequence: self.next_sequence,
            start: dts,
            bytes: 0,
            parts: 0,
        });
        self.next_sequence += 1;
        self.cut_requested = false;
        if let Mux::Ts { muxer, buf } = &mut self.mux {
            muxer.write_tables(buf);
        }
        let discontinuity = std::mem::take(&mut self.pending_discontinuity);
        self.open_part(dts, independent, discontinuity);
    }

    fn open_part(&mut self, dts: i64, independent: bool, discontinuity: bool) {
        let Some(seg) = &mut self.segment else {
            return;
        };
        self.part = Some(OpenPart {
            sequence: seg.sequence,
            index: seg.parts,
            start: dts,
            independent,
            discontinuity,
            frag: Fragment::default(),
            tracks: Vec::new(),
            video_frames: 0,
        });
        seg.parts += 1;
    }

    /// Closes the open part at `end`; `by` is the track of the frame that starts the next one.
    fn close_part(&mut self, end: i64, last_of_segment: bool, by: Option<TrackId>) {
        let Some(part) = self.part.take() else {
            return;
        };
        let next = part
            .tracks
            .iter()
            .map(|t| (*t, (Some(*t) == by).then_some(end)))
            .collect();
        let ts = match &mut self.mux {
            Mux::Ts { buf, .. } => Some(buf.split().freeze()),
            _ => None,
        };
        let mut closed = ClosedPart {
            part,
            end,
            last_of_segment,
            next,
            ts,
        };
        if closed.ts.is_some() {
            // MPEG-TS carries no sample durations: nothing to wait for.
            closed.next.clear();
        }
        self.closing.push_back(closed);
    }

    /// Outputs the closed parts that are complete, in order. `all` outputs every one, with
    /// estimated durations for tracks whose next frame never came.
    fn drain(&mut self, all: bool) {
        while let Some(front) = self.closing.front() {
            let grace = self.part_target.unwrap_or(self.target);
            let stale = self
                .latest_dts
                .is_some_and(|l| l.saturating_sub(front.end) >= grace)
                || self.closing.len() > MAX_CLOSING;
            if !(all || stale || front.ready()) {
                break;
            }
            let Some(mut c) = self.closing.pop_front() else {
                break;
            };
            for i in 0..c.next.len() {
                if c.next[i].1.is_none() {
                    c.next[i].1 = self.estimated_next(c.next[i].0);
                }
            }
            self.emit(c);
        }
    }

    fn emit(&mut self, c: ClosedPart) {
        let p = &c.part;
        let duration_ticks = c.end.saturating_sub(p.start).max(1);
        let (anchor_wall, anchor_dts) = self.anchor.unwrap_or((SystemTime::UNIX_EPOCH, p.start));
        let offset = p.start.saturating_sub(anchor_dts);
        let mut pdt = add(anchor_wall, offset);
        if let Some(end) = self.last_pdt_end {
            pdt = pdt.max(end);
        }
        let mut pieces = Vec::new();
        let mut media = Vec::new();
        let bytes = match (&mut self.mux, c.ts) {
            (_, Some(ts)) => ts,
            (Mux::Fmp4(writer), None) => {
                let next = &c.next;
                let lookup = |t: TrackId| next.iter().find(|(id, _)| *id == t).and_then(|(_, n)| *n);
                if self.config.per_track && !self.config.zero_based {
                    let prft = (p.index == 0).then_some(pdt);
                    let (bytes, p) = writer.fragment_per_track(&p.frag, &lookup, prft);
                    pieces = p;
                    bytes
                } else {
                    let origin = if self.config.zero_based {
                        match self.segment_origin {
                            Some((seq, o)) if seq == p.sequence => o,
                            _ => {
                                let o = p.frag.start().unwrap_or(p.start).min(p.start);
                                self.segment_origin = Some((p.sequence, o));
                                o
                            }
                        }
                    } else {
                        0
                    };
                    if self.config.gather {
                        let (bytes, m) = writer.fragment_gathered(&p.frag, &lookup, origin);
                        media = m;
                        bytes
                    } else {
                        writer.fragment_from(&p.frag, &lookup, origin)
                    }
                }
            }
            _ => Bytes::new(),
        };
        let p = c.part;
        let chunk = Chunk {
            sequence: p.sequence,
            part: p.index,
            start_dts: p.start,
            duration_ticks,
            program_date_time: pdt,
            independent: p.independent,
            discontinuity: p.discontinuity,
            init: matches!(self.mux, Mux::Fmp4(_)).then_some(self.generation),
            video_frames: p.video_frames,
            bytes,
            pieces,
            media,
        };
        self.last_pdt_end = Some(chunk.end_time());
        if self.part_target.is_some() {
            self.outputs.push_back(SegmenterOutput::Part(chunk.clone()));
        }
        let keep_bytes = self.config.segment_bytes || self.part_target.is_none();
        match &mut self.assembly {
            Some(a) if a.chunk.sequence == chunk.sequence => {
                a.chunk.duration_ticks += chunk.duration_ticks;
                a.chunk.video_frames += chunk.video_frames;
                a.chunk.part += 1;
                if keep_bytes {
                    let at = a.len;
                    a.len += chunk.len();
                    a.chunk.pieces.extend(chunk.pieces.into_iter().map(|mut pc| {
                        pc.range = pc.range.start + at..pc.range.end + at;
                        pc
                    }));
                    a.parts.push(chunk.bytes);
                    a.parts.extend(chunk.media);
                }
            }
            _ => {
                let mut chunk = chunk;
                chunk.part = 1;
                let len = chunk.len();
                let first = std::mem::take(&mut chunk.bytes);
                let media = std::mem::take(&mut chunk.media);
                let parts = if keep_bytes {
                    std::iter::once(first).chain(media).collect()
                } else {
                    chunk.pieces.clear();
                    Vec::new()
                };
                self.assembly = Some(Assembly { chunk, parts, len });
            }
        }
        if c.last_of_segment {
            if let Some(Assembly { mut chunk, parts, .. }) = self.assembly.take() {
                chunk.bytes = concat(parts);
                // Rounding to nanoseconds could put the sum of the parts a hair past the last
                // part's end: the next output starts after both.
                self.last_pdt_end = self.last_pdt_end.max(Some(chunk.end_time()));
                self.outputs.push_back(SegmenterOutput::Segment(chunk));
            }
        }
    }
}

fn concat(mut parts: Vec<Bytes>) -> Bytes {
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
    for p in &parts {
        out.put_slice(p);
    }
    out.freeze()
}

/// Spacing assumed between frames of a track until two of its frames have been seen.
fn default_delta(t: &Track) -> i64 {
    let rate = i64::from(t.sample_rate.max(1));
    match (t.kind(), t.codec) {
        (MediaKind::Video, _) => CLOCK_RATE / 30,
        (_, CodecId::Aac) => 1024 * CLOCK_RATE / rate,
        (_, CodecId::Mp3) => 1152 * CLOCK_RATE / rate,
        _ => CLOCK_RATE / 50,
    }
}

fn duration_to_ticks(d: Duration) -> i64 {
    (d.as_nanos() * CLOCK_RATE as u128 / 1_000_000_000).min(i64::MAX as u128) as i64
}

/// `t` plus `ticks` (negative counts as 0), saturating instead of overflowing.
fn add(t: SystemTime, ticks: i64) -> SystemTime {
    let nanos = ticks.max(0) as u128 * 1_000_000_000 / CLOCK_RATE as u128;
    let d = Duration::from_nanos(nanos.min(u64::MAX as u128) as u64);
    t.checked_add(d).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: i64 = CLOCK_RATE;
    /// 30 fps.
    const FRAME: i64 = 3000;
    /// 1024 AAC samples at 48 kHz.
    const AAC: i64 = 1920;

    fn video() -> Track {
        let rec = Bytes::from_static(include_bytes!("../../codec/testdata/ffmpeg_x264_640x360.avcc"));
        Track::video(0, CodecId::H264, rec, 640, 360)
    }

    fn audio() -> Track {
        Track::audio(1, CodecId::Aac, Bytes::from_static(&[0x11, 0x90]), 48_000, 2)
    }

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// A simulated publisher: 30 fps video with a keyframe every `gop` frames and, optionally,
    /// 48 kHz AAC interleaved in decode order; the wall clock follows the media time from `wall`.
    struct Feed {
        dts: i64,
        audio_dts: i64,
        frame: i64,
        gop: i64,
        audio: bool,
        wall: SystemTime,
        start_dts: i64,
    }

    impl Feed {
        fn new(dts: i64, gop: i64, audio: bool, wall: SystemTime) -> Self {
            Feed {
                dts,
                audio_dts: dts,
                frame: 0,
                gop,
                audio,
                wall,
                start_dts: dts,
            }
        }

        fn now(&self) -> SystemTime {
            add(self.wall, self.dts - self.start_dts)
        }

        /// Feeds `n` video frames (and the audio up to them).
        fn video(&mut self, seg: &mut Segmenter, n: i64) {
            for _ in 0..n {
                let key = self.frame % self.gop == 0;
                let nal: &'static [u8] = if key {
                    &[0, 0, 0, 2, 0x65, 0x88]
                } else {
                    &[0, 0, 0, 2, 0x41, 0x9a]
                };
                seg.push_frame(
                    &Frame::new(0, self.dts, self.dts, key, Bytes::from_static(nal)),
                    self.now(),
                );
                while self.audio && self.audio_dts <= self.dts {
                    let f = Frame::new(
                        1,
                        self.audio_dts,
                        self.audio_dts,
                        true,
                        Bytes::from_static(&[0x21, 0x10]),
                    );
                    seg.push_frame(&f, self.now());
                    self.audio_dts += AAC;
                }
                self.frame += 1;
                self.dts += FRAME;
            }
        }
    }

    fn drain(seg: &mut Segmenter) -> Vec<SegmenterOutput> {
        std::iter::from_fn(|| seg.poll_output()).collect()
    }

    fn segments(out: &[SegmenterOutput]) -> Vec<&Chunk> {
        out.iter()
            .filter_map(|o| match o {
                SegmenterOutput::Segment(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    fn parts(out: &[SegmenterOutput]) -> Vec<&Chunk> {
        out.iter()
            .filter_map(|o| match o {
                SegmenterOutput::Part(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    fn fmp4(target_ms: u64) -> SegmenterConfig {
        SegmenterConfig::new(Format::Fmp4, Duration::from_millis(target_ms))
    }

    /// Top-level box types of an fMP4 byte string.
    fn boxes(data: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 8 <= data.len() {
            let n = u32::from_be_bytes(data[i..i + 4].try_into().unwrap()) as usize;
            assert!(n >= 8 && i + n <= data.len());
            out.push(String::from_utf8_lossy(&data[i + 4..i + 8]).into_owned());
            i += n;
        }
        assert_eq!(i, data.len());
        out
    }

    #[test]
    fn keyframe_cut_segments_of_the_target() {
        let mut seg = Segmenter::new(fmp4(1000));
        seg.start(&[video(), audio()]).unwrap();
        let mut feed = Feed::new(0, 30, true, t0());
        feed.video(&mut seg, 150);
        seg.finish();
        let out = drain(&mut seg);
        let SegmenterOutput::Init(init) = &out[0] else {
            panic!("init first: {out:?}")
        };
        assert_eq!(init.generation, 1);
        assert_eq!(init.codecs, ["avc1.64001e", "mp4a.40.2"]);
        assert_eq!(boxes(&init.bytes), ["ftyp", "moov"]);
        assert!(parts(&out).is_empty(), "parts are off");
        let segs = segments(&out);
        assert_eq!(segs.len(), 5);
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(s.sequence, i as u64);
            assert_eq!((s.start_dts, s.duration_ticks), (i as i64 * SEC, SEC));
            assert_eq!(s.duration(), 1.0);
            assert!(s.independent && !s.discontinuity);
            assert_eq!((s.init, s.part, s.video_frames), (Some(1), 1, 30));
            assert_eq!(boxes(&s.bytes), ["moof", "mdat"]);
            assert_eq!(s.program_date_time, add(t0(), i as i64 * SEC));
        }

        // Keyframes every 0.4 s: cut at the first one at or past the target.
        let mut seg = Segmenter::new(fmp4(1000));
        seg.start(&[video()]).unwrap();
        Feed::new(0, 12, false, t0()).video(&mut seg, 72);
        seg.finish();
        let out = drain(&mut seg);
        let d: Vec<i64> = segments(&out).iter().map(|s| s.duration_ticks).collect();
        assert_eq!(d, [108_000, 108_000]);
    }

    #[test]
    fn parts_of_the_configured_duration() {
        let mut seg = Segmenter::new(fmp4(1000).with_parts(DEFAULT_PART_DURATION));
        seg.start(&[video(), audio()]).unwrap();
        Feed::new(0, 30, true, t0()).video(&mut seg, 90);
        seg.finish();
        let out = drain(&mut seg);
        let segs = segments(&out);
        let parts = parts(&out);
        assert_eq!((segs.len(), parts.len()), (3, 15));
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.sequence, i as u64 / 5);
            assert_eq!(p.part, i as u32 % 5);
            assert_eq!(p.duration_ticks, 18_000, "200 ms");
            assert_eq!(
                p.independent,
                p.part == 0,
                "only a part that starts with a keyframe"
            );
            assert_eq!(boxes(&p.bytes), ["moof", "mdat"]);
        }
        for s in &segs {
            let mine: Vec<&&Chunk> = parts.iter().filter(|p| p.sequence == s.sequence).collect();
            assert_eq!(s.part, 5);
            let joined: Vec<u8> = mine.iter().flat_map(|p| p.bytes.iter().copied()).collect();
            assert_eq!(&s.bytes[..], &joined[..], "a segment is its parts");
            assert_eq!(
                mine.iter().map(|p| p.duration_ticks).sum::<i64>(),
                s.duration_ticks
            );
            assert_eq!(s.program_date_time, mine[0].program_date_time);
            assert_eq!(s.video_frames, 30);
        }
        // Each segment comes after its parts.
        let order: Vec<(char, u64)> = out
            .iter()
            .filter_map(|o| match o {
                SegmenterOutput::Part(c) => Some(('p', c.sequence)),
                SegmenterOutput::Segment(c) => Some(('s', c.sequence)),
                SegmenterOutput::Init(_) => None,
            })
            .collect();
        let first_seg = order.iter().position(|o| *o == ('s', 0)).unwrap();
        assert_eq!(first_seg, 5);
        assert_eq!(order[6], ('p', 1));
    }

    #[test]
    fn gathered_parts_are_the_same_bytes_without_the_copy() {
        let run = |gather: bool, zero_based: bool| {
            let mut cfg = fmp4(1000).with_parts(DEFAULT_PART_DURATION);
            cfg.gather = gather;
            cfg.zero_based = zero_based;
            let mut seg = Segmenter::new(cfg);
            seg.start(&[video(), audio()]).unwrap();
            Feed::new(0, 30, true, t0()).video(&mut seg, 90);
            seg.finish();
            drain(&mut seg)
        };
        for zero_based in [false, true] {
            let (plain, gathered) = (run(false, zero_based), run(true, zero_based));
            let (plain, gathered) = (parts(&plain), parts(&gathered));
            assert_eq!(plain.len(), 15);
            assert_eq!(plain.len(), gathered.len());
            for (a, b) in plain.iter().zip(&gathered) {
                assert!(a.media.is_empty());
                // The samples: a video frame and the audio up to the next one, each by itself.
                assert!(b.media.len() >= 6, "{} samples", b.media.len());
                let joined: Vec<u8> = std::iter::once(&b.bytes)
                    .chain(&b.media)
                    .flat_map(|p| p.iter().copied())
                    .collect();
                assert_eq!(&a.bytes[..], &joined[..], "the same fragment");
                assert_eq!(a.len(), b.len());
                assert!(b.bytes.ends_with(b"mdat"), "header only");
            }
            // Whole segments still carry their bytes, joined.
            let segs = segments(&run(true, zero_based))
                .iter()
                .map(|c| c.bytes.clone())
                .collect::<Vec<_>>();
            let plain_segs = segments(&run(false, zero_based))
                .iter()
                .map(|c| c.bytes.clone())
                .collect::<Vec<_>>();
            assert_eq!(segs, plain_segs);
        }
    }

    /// 30 fps with RTMP's millisecond timestamps (0, 33, 67, 100... ms): every part but the
    /// last of a segment is 200 ms (at least 85 % of the part target and never past it), and a
    /// part is independent exactly when it starts with a keyframe.
    #[test]
    fn parts_from_millisecond_timestamps_stay_within_the_part_target() {
        let mut seg = Segmenter::new(fmp4(1000).with_parts(DEFAULT_PART_DURATION));
        seg.start(&[video(), audio()]).unwrap();
        let ms = |k: i64| (k * 1000 + 15) / 30 * 90; // round(k * 33.33 ms), in ticks
        for k in 0..(25 * 9) {
            // A keyframe every 25 frames: segments are not a whole number of parts.
            let f = Frame::new(0, ms(k), ms(k), k % 25 == 0, Bytes::from_static(&[0, 0, 0, 1, 9]));
            seg.push_frame(&f, t0());
        }
        seg.finish();
        let out = drain(&mut seg);
        let parts = parts(&out);
        let target = 200 * 90;
        assert!(parts.len() > 30, "{}", parts.len());
        for (i, p) in parts.iter().enumerate() {
            let last_of_segment = parts.get(i + 1).is_none_or(|n| n.sequence != p.sequence);
            assert!(p.duration_ticks <= target, "{p:?}");
            if !last_of_segment {
                assert!(p.duration_ticks * 100 >= target * 85, "{p:?}");
            }
            assert_eq!(p.independent, p.part == 0, "{p:?}");
        }
    }

    #[test]
    fn long_gop_cut_on_next_keyframe_and_forced_past_the_cap() {
        // 2.5 s GOPs for a 1 s target: segments wait for the keyframes.
        let mut seg = Segmenter::new(fmp4(1000));
        seg.start(&[video(), audio()]).unwrap();
        Feed::new(0, 75, true, t0()).video(&mut seg, 225);
        seg.finish();
        let out = drain(&mut seg);
        let segs = segments(&out);
        assert!(
            segs.iter().all(|s| s.duration_ticks == 225_000 && s.independent),
            "{segs:?}"
        );

        // A 30 s GOP with a 4 s cap: cut without a keyframe, flagged as not independent.
        let mut config = fmp4(1000);
        config.max_duration = Duration::from_secs(4);
        let mut seg = Segmenter::new(config);
        seg.start(&[video(), audio()]).unwrap();
        Feed::new(0, 900, true, t0()).video(&mut seg, 300);
        seg.finish();
        let out = drain(&mut seg);
        let segs = segments(&out);
        let d: Vec<(i64, bool)> = segs.iter().map(|s| (s.duration_ticks, s.independent)).collect();
        assert_eq!(d, [(4 * SEC, true), (4 * SEC, false), (2 * SEC, false)]);

        // A size cap: cut once the samples exceed it (6 bytes a video frame, 2 an audio one).
        let mut config = fmp4(1000);
        config.max_bytes = 100;
        let mut seg = Segmenter::new(config);
        seg.start(&[video(), audio()]).unwrap();
        Feed::new(0, 900, true, t0()).video(&mut seg, 60);
        seg.finish();
        let out = drain(&mut seg);
        let segs = segments(&out);
        assert!(segs.len() >= 5, "{segs:?}");
        // About 9 bytes of samples a video frame: a dozen frames a segment.
        assert!(
            segs.iter()
                .all(|s| s.video_frames <= 13 && !s.independent || s.sequence == 0),
            "{segs:?}"
        );
    }

    #[test]
    fn audio_only_cuts_on_any_frame() {
        let mut seg = Segmenter::new(fmp4(1000).with_parts(DEFAULT_PART_DURATION));
        seg.start(&[audio()]).unwrap();
        let mut now = t0();
        let n = 47 * 4 + 10;
        for i in 0..n {
            let dts = 1000 + i * AAC;
            seg.push_frame(&Frame::new(1, dts, dts, true, Bytes::from_static(b"aa")), now);
            now += Duration::from_millis(20);
        }
        seg.finish();
        let out = drain(&mut seg);
        let segs = segments(&out);
        assert_eq!(segs.len(), 5);
        // 47 frames is the first count reaching 1 s.
        for s in &segs[..4] {
            assert_eq!(s.duration_ticks, 47 * AAC);
            assert!(s.independent);
        }
        assert_eq!(segs.iter().map(|s| s.duration_ticks).sum::<i64>(), n * AAC);
        let parts = parts(&out);
        assert!(
            parts.iter().all(|p| p.independent && p.duration_ticks <= 18_000),
            "{parts:?}"
        );
        assert!(parts
            .iter()
            .all(|p| p.duration_ticks == 9 * AAC || p.part == 5 || p.sequence == 4));
    }

    #[test]
    fn restart_brings_discontinuity_new_init_and_monotonic_dates() {
        let mut seg = Segmenter::new(fmp4(1000).with_parts(DEFAULT_PART_DURATION));
        seg.start(&[video(), audio()]).unwrap();
        let mut feed = Feed::new(50 * SEC, 30, true, t0());
        feed.video(&mut seg, 100);
        let before_restart = feed.now();
        // The publisher comes back at once with timestamps from 0.
        seg.start(&[video(), audio()]).unwrap();
        Feed::new(0, 30, true, before_restart).video(&mut seg, 70);
        seg.finish();
        let out = drain(&mut seg);
        let inits: Vec<u64> = out
            .iter()
            .filter_map(|o| match o {
                SegmenterOutput::Init(i) => Some(i.generation),
                _ => None,
            })
            .collect();
        assert_eq!(inits, [1, 2]);
        let segs = segments(&out);
        let seqs: Vec<u64> = segs.iter().map(|s| s.sequence).collect();
        assert_eq!(seqs, (0..7).collect::<Vec<_>>());
        let flags: Vec<(bool, Option<u64>)> = segs.iter().map(|s| (s.discontinuity, s.init)).collect();
        assert_eq!(
            flags[3],
            (false, Some(1)),
            "the flushed segment belongs to the first stream"
        );
        assert_eq!(
            segs[3].duration_ticks,
            10 * FRAME,
            "estimated from the frame spacing"
        );
        assert_eq!(flags[4], (true, Some(2)));
        assert!(flags[5..].iter().all(|f| *f == (false, Some(2))));
        let restart_parts: Vec<&Chunk> = parts(&out).into_iter().filter(|p| p.discontinuity).collect();
        assert_eq!(restart_parts.len(), 1);
        assert_eq!((restart_parts[0].sequence, restart_parts[0].part), (4, 0));
        // PROGRAM-DATE-TIME: every output starts at or after the end of the previous one.
        let all: Vec<&Chunk> = out
            .iter()
            .filter_map(|o| match o {
                SegmenterOutput::Part(c) => Some(c),
                _ => None,
            })
            .collect();
        for w in all.windows(2) {
            assert!(w[1].program_date_time >= w[0].end_time(), "{w:?}");
        }
        for w in segs.windows(2) {
            assert!(w[1].program_date_time >= w[0].end_time(), "{w:?}");
        }
    }

    #[test]
    fn durations_add_up_with_jitter() {
        let mut seg = Segmenter::new(fmp4(2000).with_parts(Duration::from_millis(330)));
        seg.start(&[video(), audio()]).unwrap();
        let (mut v, mut a) = (7 * SEC, 7 * SEC - 500);
        let first = v;
        let mut last_end = 0;
        for i in 0..600i64 {
            // 25-35 ms spacing, keyframes every 50 frames.
            let step = 2250 + (i * 7919 % 900);
            let f = Frame::new(0, v, v + 3000, i % 50 == 0, Bytes::from_static(&[0, 0, 0, 1, 9]));
            seg.push_frame(&f, t0());
            while a <= v {
                seg.push_frame(&Frame::new(1, a, a, true, Bytes::from_static(b"a")), t0());
                last_end = last_end.max(a + AAC);
                a += AAC;
            }
            last_end = last_end.max(v + step);
            v += step;
        }
        seg.finish();
        let out = drain(&mut seg);
        let segs = segments(&out);
        let parts = parts(&out);
        for s in &segs {
            let sum: i64 = parts
                .iter()
                .filter(|p| p.sequence == s.sequence)
                .map(|p| p.duration_ticks)
                .sum();
            assert_eq!(sum, s.duration_ticks);
            assert!(s.duration_ticks > 0);
        }
        for w in segs.windows(2) {
            assert_eq!(w[0].end_dts(), w[1].start_dts, "segments are contiguous");
        }
        // At most the part duration, give or take the jitter of the frame that would overrun it.
        assert!(
            parts.iter().all(|p| p.duration_ticks <= 330 * 90 + 900),
            "{parts:?}"
        );
        assert!(parts.iter().filter(|p| p.duration_ticks > 330 * 90).count() < parts.len() / 4);
        let total: i64 = segs.iter().map(|s| s.duration_ticks).sum();
        assert_eq!(segs[0].start_dts, first);
        assert!(
            (first + total - last_end).abs() <= 3000,
            "{total} vs {}",
            last_end - first
        );
    }

    #[test]
    fn a_part_waits_for_the_next_frame_of_each_track() {
        let mut seg = Segmenter::new(fmp4(1000));
        seg.start(&[video(), audio()]).unwrap();
        let key = Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]);
        seg.push_frame(&Frame::new(0, 0, 0, true, key.clone()), t0());
        seg.push_frame(&Frame::new(1, 0, 0, true, Bytes::from_static(b"a")), t0());
        seg.push_frame(
            &Frame::new(1, 88_000, 88_000, true, Bytes::from_static(b"a")),
            t0(),
        );
        seg.push_frame(&Frame::new(0, SEC, SEC, true, key.clone()), t0());
        // The audio after 88 000 has not come: its last duration is unknown.
        assert!(segments(&drain(&mut seg)).is_empty());
        seg.push_frame(
            &Frame::new(1, 89_920, 89_920, true, Bytes::from_static(b"a")),
            t0(),
        );
        let out = drain(&mut seg);
        assert_eq!(segments(&out).len(), 1);
        // A track that stops does not hold segments back for long.
        seg.push_frame(&Frame::new(0, 2 * SEC, 2 * SEC, true, key.clone()), t0());
        assert!(segments(&drain(&mut seg)).is_empty());
        // One target duration later it goes out with an estimated last duration.
        seg.push_frame(&Frame::new(0, 3 * SEC, 3 * SEC, true, key.clone()), t0());
        let segs: Vec<i64> = segments(&drain(&mut seg))
            .iter()
            .map(|s| s.duration_ticks)
            .collect();
        assert_eq!(segs, [SEC, SEC]);
    }

    #[test]
    fn mpegts_segments() {
        let mut seg = Segmenter::new(SegmenterConfig::new(Format::MpegTs, Duration::from_secs(1)));
        seg.start(&[video(), audio()]).unwrap();
        Feed::new(0, 30, true, t0()).video(&mut seg, 90);
        seg.finish();
        let out = drain(&mut seg);
        assert!(
            out.iter().all(|o| matches!(o, SegmenterOutput::Segment(_))),
            "no init"
        );
        let segs = segments(&out);
        assert_eq!(segs.len(), 3);
        for s in segs {
            assert_eq!((s.duration_ticks, s.init), (SEC, None));
            assert_eq!(s.bytes.len() % 188, 0);
            assert_eq!(
                (s.bytes[0], s.bytes[1] & 0x1f, s.bytes[2]),
                (0x47, 0, 0),
                "PAT first"
            );
        }
    }

    #[test]
    fn frames_before_the_first_keyframe_are_dropped() {
        let mut seg = Segmenter::new(fmp4(1000));
        seg.start(&[video(), audio()]).unwrap();
        let mut feed = Feed::new(0, 30, true, t0());
        feed.frame = 10; // join mid-GOP
        feed.video(&mut seg, 80);
        seg.finish();
        let segs: Vec<(i64, i64)> = segments(&drain(&mut seg))
            .iter()
            .map(|s| (s.start_dts, s.duration_ticks))
            .collect();
        assert_eq!(segs, [(20 * FRAME, SEC), (50 * FRAME, SEC)]);
    }

    #[derive(Debug, Clone)]
    enum Input {
        Frame {
            track: u8,
            step: i64,
            key: bool,
            len: usize,
        },
        Restart {
            back: i64,
        },
    }

    fn input() -> impl Strategy<Value = Input> {
        prop_oneof![
            40 => (0u8..3, -2000i64..20_000, any::<bool>(), 0usize..5000)
                .prop_map(|(track, step, key, len)| Input::Frame { track, step, key, len }),
            1 => (0i64..1_000_000).prop_map(|back| Input::Restart { back }),
        ]
    }

    proptest! {
        #[test]
        fn random_frames_never_panic(
            inputs in proptest::collection::vec(input(), 0..400),
            parts in any::<bool>(),
            ts in any::<bool>(),
            audio_only in any::<bool>(),
        ) {
            let format = if ts { Format::MpegTs } else { Format::Fmp4 };
            let mut config = SegmenterConfig::new(format, Duration::from_millis(500));
            config.max_bytes = 50_000;
            if parts {
                config = config.with_parts(Duration::from_millis(100));
            }
            let tracks = if audio_only { vec![audio()] } else { vec![video(), audio()] };
            let mut seg = Segmenter::new(config);
            seg.start(&tracks).unwrap();
            let mut dts = 0i64;
            let mut now = t0();
            let payload = Bytes::from(vec![0u8; 5000]);
            let mut out = Vec::new();
            for i in inputs {
                match i {
                    Input::Frame { track, step, key, len } => {
                        dts += step;
                        now += Duration::from_millis(7);
                        let f = Frame::new(TrackId::from(track), dts, dts, key, payload.slice(..len));
                        seg.push_frame(&f, now);
                    }
                    Input::Restart { back } => {
                        dts -= back;
                        seg.start(&tracks).unwrap();
                    }
                }
                out.extend(drain(&mut seg));
            }
            seg.finish();
            out.extend(drain(&mut seg));
            let mut last_pdt = None;
            let mut last_seq = None;
            for o in &out {
                if let SegmenterOutput::Segment(s) | SegmenterOutput::Part(s) = o {
                    prop_assert!(s.duration_ticks > 0);
                    prop_assert!(s.duration() > 0.0);
                    if let SegmenterOutput::Segment(s) = o {
                        prop_assert!(last_seq.is_none_or(|l| s.sequence == l + 1));
                        last_seq = Some(s.sequence);
                        prop_assert!(last_pdt.is_none_or(|l| s.program_date_time >= l));
                        last_pdt = Some(s.end_time());
                    }
                }
            }
        }
    }
}
