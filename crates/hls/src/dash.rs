//! DASH and low-latency DASH over the HLS packager's CMAF segments: the live MPD and each
//! representation's files, taken from the same bytes as HLS (the segmenter writes one fragment
//! per track, [`Piece`] says where each lies), so a path is packaged once for both.
//!
//! - Whole segments (`variant = "fmp4"`): a `SegmentTimeline` with `$Number$`, listing the
//!   segments of the playlist window, whatever their durations.
//! - Low latency (`variant = "low-latency"`): `SegmentTemplate@duration` with `$Number$` (the
//!   DASH-IF "simple live" mode that dash.js and Shaka follow best), the duration being the first
//!   segment's of the stream (segments follow the publisher's keyframe interval),
//!   `availabilityTimeOffset` so the segment in progress is asked for as soon as its first part
//!   exists, and served with chunked transfer as its parts are made; a `ServiceDescription`
//!   with the latency target, `prft` boxes at each segment's start.
//! - Each publisher restart (a new init segment) is a new `Period`; `availabilityStartTime`
//!   stays that of the packager's first segment. `UTCTiming` points at the server's own clock
//!   (relative to the MPD), with the time of the MPD itself as a second, coarser source.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use sluice_container::fmp4::{codec_string, Piece};
use sluice_media::{MediaKind, Track, CLOCK_RATE};
use tokio::sync::watch;

use crate::playlist::rfc3339_millis;
use crate::store::{HlsStream, PlaylistError, Segment, State, MAX_WAITERS};

/// Streams (publisher restarts) remembered at most; older ones have left every window long ago.
const MAX_GENERATIONS: usize = 16;

/// Re-anchorings of one stream's low-latency timeline remembered at most.
const MAX_ANCHORS: usize = 16;

/// One stream of the path (from one init segment): a DASH Period.
#[derive(Debug)]
pub(crate) struct Generation {
    id: u64,
    /// Each track with its own init segment.
    tracks: Vec<(Track, Bytes)>,
    /// Sequence number, decode time and wall-clock time of its first segment.
    first: Option<(u64, i64, SystemTime)>,
    /// Duration of its first segment, in core ticks: the low-latency template's `@duration`.
    nominal: Option<i64>,
    /// Low latency: later anchors of the template's timeline (sequence number, decode time and
    /// wall-clock time of a segment's start, and a number for the Period's id), each a Period of
    /// its own, made when the segments have drifted more than half a segment from where the
    /// template puts them (a publisher that fell behind real time, segments longer or shorter
    /// than the first). At most [`MAX_ANCHORS`].
    anchors: VecDeque<(u64, i64, SystemTime, u32)>,
    /// Peak bit rate of each track (same order as `tracks`), over its segments.
    peak: Vec<u64>,
}

impl Generation {
    pub(crate) fn new(id: u64, tracks: Vec<(Track, Bytes)>) -> Self {
        let peak = vec![0; tracks.len()];
        Generation {
            id,
            tracks,
            first: None,
            nominal: None,
            anchors: VecDeque::new(),
            peak,
        }
    }

    fn track(&self, rep: &str) -> Option<(usize, &Track, &Bytes)> {
        self.tracks
            .iter()
            .enumerate()
            .find(|(_, (t, _))| rep_id(t) == Some(rep))
            .map(|(i, (t, b))| (i, t, b))
    }
}

/// The representation id of a track: one video and one audio track per path.
fn rep_id(t: &Track) -> Option<&'static str> {
    Some(match t.kind() {
        MediaKind::Video => "v",
        MediaKind::Audio => "a",
    })
}

/// What the MPD needs beyond the segments.
#[derive(Debug, Default)]
pub(crate) struct DashState {
    generations: VecDeque<Generation>,
    /// `availabilityStartTime`: the wall-clock time of the packager's first segment.
    ast: Option<SystemTime>,
}

impl DashState {
    pub(crate) fn begin(&mut self, g: Generation) {
        if g.tracks.is_empty() {
            return;
        }
        self.generations.push_back(g);
        while self.generations.len() > MAX_GENERATIONS {
            self.generations.pop_front();
        }
    }

    /// A complete segment; `completed` is the wall-clock time it was complete, `low_latency`
    /// whether the MPD places segments by a template's duration (then its timeline is anchored
    /// again when the segments drift from it).
    pub(crate) fn add_segment(&mut self, seg: &Segment, completed: SystemTime, low_latency: bool) {
        let Some(g) = self.generations.iter_mut().find(|g| g.id == seg.generation) else {
            return;
        };
        match (g.first, g.nominal) {
            (None, _) | (_, None) => {
                g.first = Some((seg.seq, seg.start_dts, seg.pdt));
                g.nominal = Some(seg.duration_ticks.max(1));
                self.ast.get_or_insert(seg.pdt);
            }
            (Some(first), Some(nominal)) if low_latency => {
                let (a_seq, _, a_start, n) = g
                    .anchors
                    .back()
                    .copied()
                    .unwrap_or((first.0, first.1, first.2, 0));
                let segments = seg.seq.saturating_sub(a_seq) + 1;
                let expected = a_start + ticks_duration(nominal.saturating_mul(segments as i64));
                let drift = match completed.duration_since(expected) {
                    Ok(late) => late,
                    Err(early) => early.duration(),
                };
                if drift > ticks_duration(nominal / 2) {
                    // The next segment starts now: a new Period from there.
                    g.anchors
                        .push_back((seg.seq + 1, seg.start_dts + seg.duration_ticks, completed, n + 1));
                    while g.anchors.len() > MAX_ANCHORS {
                        g.anchors.pop_front();
                    }
                    tracing::debug!(
                        seq = seg.seq + 1,
                        drift_ms = drift.as_millis() as u64,
                        "DASH: segments drifted from the template's timeline; new Period"
                    );
                }
            }
            _ => {}
        }
        let secs = seg.duration.max(0.1);
        for (i, (t, _)) in g.tracks.iter().enumerate() {
            let bytes: usize = seg
                .pieces
                .iter()
                .filter(|p| p.track == t.id)
                .map(|p| p.range.len())
                .sum();
            g.peak[i] = g.peak[i].max((bytes as f64 * 8.0 / secs) as u64);
        }
    }

    /// Forgets the streams older than `oldest` (the generation of the oldest segment kept),
    /// keeping the current one.
    pub(crate) fn release_before(&mut self, oldest: u64) {
        while self.generations.len() > 1 && self.generations.front().is_some_and(|g| g.id < oldest) {
            self.generations.pop_front();
        }
    }
}

/// What the source's MPD needs of one of its renditions (another packager): its current
/// stream's video track, init segment and segments in its window.
#[derive(Debug)]
struct RenditionView {
    /// Representation id (the rendition's name) and the prefix of its files' URLs (`~NAME/`).
    id: String,
    prefix: String,
    token: String,
    generation: u64,
    track: Track,
    nominal: i64,
    peak: u64,
    frame_rate: Option<f64>,
    /// (sequence number, decode time, duration) of the segments in its window.
    segments: Vec<(u64, i64, i64)>,
}

impl HlsStream {
    fn rendition_view(&self, id: &str, prefix: &str) -> Option<RenditionView> {
        let st = self.state.read();
        let g = st.dash.generations.back()?;
        g.first?;
        let (i, (track, _)) = g
            .tracks
            .iter()
            .enumerate()
            .find(|(_, (t, _))| t.kind() == MediaKind::Video)?;
        let listed = st.segments.len().min(self.config().segment_count);
        let segments = st
            .segments
            .iter()
            .skip(st.segments.len() - listed)
            .filter(|s| s.generation == g.id)
            .map(|s| (s.seq, s.start_dts, s.duration_ticks))
            .collect();
        Some(RenditionView {
            id: id.to_owned(),
            prefix: prefix.to_owned(),
            token: self.token.clone(),
            generation: g.id,
            track: track.clone(),
            nominal: g.nominal?,
            peak: g.peak[i],
            frame_rate: st.frame_rate,
            segments,
        })
    }
}

/// A DASH file as served.
pub enum DashFile {
    /// An init segment, with its content type.
    Init(Bytes, &'static str),
    /// A complete media segment, in pieces (slices of the shared segment bytes).
    Segment(Vec<Bytes>),
    /// The segment being made (low latency): its parts as they come, ending with the segment.
    Live(BoxStream<'static, Result<Bytes, std::io::Error>>),
}

impl std::fmt::Debug for DashFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DashFile::Init(b, _) => write!(f, "Init({} bytes)", b.len()),
            DashFile::Segment(p) => write!(f, "Segment({} pieces)", p.len()),
            DashFile::Live(_) => f.write_str("Live"),
        }
    }
}

enum Name<'a> {
    Init {
        generation: u64,
        rep: &'a str,
    },
    /// `seq` is this packager's own number: a rendition listed in its source's MPD is asked
    /// for by the source's numbers, with the offset between the two in its name.
    Media {
        rep: &'a str,
        seq: u64,
    },
}

/// A number as written in our own names: ASCII digits, no leading zero (one name per file, so
/// a cache in front keeps one copy).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// An offset as written in a name: `p3` (+3) or `m3` (-3).
fn offset(s: &str) -> Option<i64> {
    let (sign, n) = match s.as_bytes().first()? {
        b'p' => (1, &s[1..]),
        b'm' => (-1, &s[1..]),
        _ => return None,
    };
    i64::try_from(number(n)?).ok().map(|n| sign * n)
}

fn offset_text(o: i64) -> String {
    if o < 0 {
        format!("m{}", o.unsigned_abs())
    } else {
        format!("p{o}")
    }
}

/// `dash-TOKEN-GEN-REP.mp4`, `dash-TOKEN-REP-SEQ.m4s` or `dash-TOKEN-REP-OFFSET-NUMBER.m4s`,
/// for this packager's token.
fn parse_name<'a>(name: &'a str, token: &str) -> Option<Name<'a>> {
    let rest = name
        .strip_prefix("dash-")?
        .strip_prefix(token)?
        .strip_prefix('-')?;
    if let Some(r) = rest.strip_suffix(".mp4") {
        let (generation, rep) = r.split_once('-')?;
        return Some(Name::Init {
            generation: number(generation)?,
            rep,
        });
    }
    let (rep, seq) = rest.strip_suffix(".m4s")?.split_once('-')?;
    if let Some((o, n)) = seq.split_once('-') {
        let o = offset(o)?;
        let seq = u64::try_from(i64::try_from(number(n)?).ok()?.checked_sub(o)?).ok()?;
        return Some(Name::Media { rep, seq });
    }
    Some(Name::Media {
        rep,
        seq: number(seq)?,
    })
}

fn secs(ticks: i64) -> f64 {
    ticks as f64 / CLOCK_RATE as f64
}

fn ticks_duration(ticks: i64) -> Duration {
    Duration::from_nanos((ticks.max(0) as u128 * 1_000_000_000 / CLOCK_RATE as u128) as u64)
}

/// `PT…S` with milliseconds.
fn duration_attr(d: f64) -> String {
    format!("PT{:.3}S", d.max(0.0))
}

fn frame_rate_attr(r: f64) -> String {
    let milli = (r * 1000.0).round() as u64;
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}/1000")
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl HlsStream {
    /// Whether this stream can be served as DASH (fMP4 with per-track fragments).
    pub fn has_dash(&self) -> bool {
        !self.state.read().dash.generations.is_empty()
    }

    /// The live MPD (`index.mpd`); `time_url` is where players read the server's clock
    /// (`UTCTiming`). `None` when the stream is not fMP4 or has no complete segment yet.
    pub fn mpd(&self, time_url: &str) -> Option<String> {
        self.mpd_with(time_url, &[])
    }

    /// The MPD listing `renditions` too (the path's renditions: each one's name, the prefix of
    /// its URLs relative to this MPD, and its stream) as more video representations of the
    /// current Period, for players to switch between. A rendition whose segments do not line
    /// up with this stream's is left out.
    pub fn mpd_with(
        &self,
        time_url: &str,
        renditions: &[(String, String, Arc<HlsStream>)],
    ) -> Option<String> {
        let views: Vec<RenditionView> = renditions
            .iter()
            .filter_map(|(id, prefix, s)| s.rendition_view(id, prefix))
            .collect();
        let st = self.state.read();
        self.render_mpd(&st, time_url, SystemTime::now(), &views)
    }

    fn render_mpd(
        &self,
        st: &State,
        time_url: &str,
        now: SystemTime,
        views: &[RenditionView],
    ) -> Option<String> {
        let ast = st.dash.ast?;
        let ll = self.is_low_latency();
        let cfg = self.config();
        let listed = st.segments.len().min(cfg.segment_count);
        let window: Vec<&Segment> = st.segments.iter().skip(st.segments.len() - listed).collect();
        let depth: f64 = window.iter().map(|s| s.duration).sum();
        let max_seg = window.iter().map(|s| s.duration).fold(0.0, f64::max);
        let target = st.target.max(1) as f64;
        let part = cfg.part_duration.as_secs_f64();
        let mut x = String::with_capacity(2048);
        let _ = write!(
            x,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" \
             profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" type=\"dynamic\" \
             availabilityStartTime=\"{}\" publishTime=\"{}\" minimumUpdatePeriod=\"{}\" \
             timeShiftBufferDepth=\"{}\" maxSegmentDuration=\"{}\" minBufferTime=\"{}\"",
            rfc3339_millis(ast),
            rfc3339_millis(now),
            duration_attr(if ll { target } else { target.min(max_seg.max(part)) }),
            // What the window holds once full, so that a player arriving early does not take
            // the few seconds made so far as the most it may stay behind live.
            duration_attr(depth.max(target * cfg.segment_count as f64)),
            duration_attr(max_seg.max(target)),
            duration_attr(if ll { part * 2.0 } else { target }),
        );
        if !ll {
            let _ = write!(
                x,
                " suggestedPresentationDelay=\"{}\"",
                duration_attr(3.0 * target)
            );
        }
        x.push_str(">\n");
        // Periods: the streams with a segment in the window, and the current one; in low latency
        // each anchor of a stream's timeline is a Period of its own.
        struct P<'g> {
            g: &'g Generation,
            id: String,
            first_seq: u64,
            first_dts: i64,
            start: SystemTime,
            /// The first sequence number of the next Period of the same stream.
            until: u64,
        }
        let last_gen = st.dash.generations.back().map(|g| g.id);
        let mut periods: Vec<P> = Vec::new();
        for g in st.dash.generations.iter() {
            let Some((seq, dts, pdt)) = g.first else { continue };
            let mut list = vec![(seq, dts, pdt, 0u32)];
            if ll {
                list.extend(g.anchors.iter().copied());
            }
            for (k, &(first_seq, first_dts, start, n)) in list.iter().enumerate() {
                let until = list.get(k + 1).map_or(u64::MAX, |a| a.0);
                let current = Some(g.id) == last_gen && until == u64::MAX;
                let listed = window
                    .iter()
                    .any(|s| s.generation == g.id && s.seq >= first_seq && s.seq < until);
                if current || listed {
                    periods.push(P {
                        g,
                        id: if n == 0 {
                            g.id.to_string()
                        } else {
                            format!("{}-{n}", g.id)
                        },
                        first_seq,
                        first_dts,
                        start,
                        until,
                    });
                }
            }
        }
        if periods.is_empty() {
            return None;
        }
        if ll {
            let nominal = periods.last().and_then(|p| p.g.nominal).map_or(target, secs);
            let target_ms = (nominal * 500.0 + 1000.0).round() as u64;
            let _ = writeln!(
                x,
                "  <ServiceDescription id=\"0\">\n    <Latency target=\"{target_ms}\" min=\"{}\" max=\"{}\"/>\n    \
                 <PlaybackRate min=\"0.9\" max=\"1.1\"/>\n  </ServiceDescription>",
                target_ms / 2,
                target_ms * 2 + 1000,
            );
        }
        let last_period = periods.len() - 1;
        for (pi, p) in periods.into_iter().enumerate() {
            let (g, first_seq, first_dts) = (p.g, p.first_seq, p.first_dts);
            let start = p.start.duration_since(ast).unwrap_or_default().as_secs_f64();
            let _ = writeln!(x, "  <Period id=\"{}\" start=\"{}\">", p.id, duration_attr(start));
            let segs: Vec<&&Segment> = window
                .iter()
                .filter(|s| s.generation == g.id && s.seq >= first_seq && s.seq < p.until)
                .collect();
            for (i, (t, _)) in g.tracks.iter().enumerate() {
                let Some(rep) = rep_id(t) else { continue };
                let codecs = codec_string(t).unwrap_or_default();
                let video = t.kind() == MediaKind::Video;
                let mime = if video { "video/mp4" } else { "audio/mp4" };
                let _ = writeln!(
                    x,
                    "    <AdaptationSet id=\"{i}\" contentType=\"{}\" mimeType=\"{mime}\" segmentAlignment=\"true\" startWithSAP=\"1\">",
                    if video { "video" } else { "audio" }
                );
                let init = format!("dash-{}-{}-$RepresentationID$.mp4", self.token, g.id);
                let media = format!("dash-{}-$RepresentationID$-$Number$.m4s", self.token);
                if ll {
                    let nominal = g.nominal.unwrap_or(CLOCK_RATE);
                    let ato = (secs(nominal) - part).max(0.0);
                    let _ = writeln!(
                        x,
                        "      <SegmentTemplate timescale=\"{CLOCK_RATE}\" duration=\"{nominal}\" startNumber=\"{first_seq}\" \
                         presentationTimeOffset=\"{first_dts}\" availabilityTimeOffset=\"{ato:.3}\" \
                         availabilityTimeComplete=\"false\" initialization=\"{init}\" media=\"{media}\"/>"
                    );
                } else {
                    let start_number = segs.first().map_or(first_seq, |s| s.seq);
                    let _ = writeln!(
                        x,
                        "      <SegmentTemplate timescale=\"{CLOCK_RATE}\" startNumber=\"{start_number}\" \
                         presentationTimeOffset=\"{first_dts}\" initialization=\"{init}\" media=\"{media}\">\n        <SegmentTimeline>"
                    );
                    let mut expected: Option<i64> = None;
                    let mut k = 0;
                    while k < segs.len() {
                        let s = segs[k];
                        let mut repeat = 0;
                        while k + repeat + 1 < segs.len()
                            && segs[k + repeat + 1].duration_ticks == s.duration_ticks
                            && segs[k + repeat + 1].start_dts
                                == s.start_dts + (repeat as i64 + 1) * s.duration_ticks
                        {
                            repeat += 1;
                        }
                        let _ = write!(x, "          <S");
                        if expected != Some(s.start_dts) {
                            let _ = write!(x, " t=\"{}\"", s.start_dts);
                        }
                        let _ = write!(x, " d=\"{}\"", s.duration_ticks);
                        if repeat > 0 {
                            let _ = write!(x, " r=\"{repeat}\"");
                        }
                        x.push_str("/>\n");
                        expected = Some(s.start_dts + (repeat as i64 + 1) * s.duration_ticks);
                        k += repeat + 1;
                    }
                    x.push_str("        </SegmentTimeline>\n      </SegmentTemplate>\n");
                }
                let bandwidth = g.peak[i].max(1);
                if video {
                    let _ = write!(
                        x,
                        "      <Representation id=\"{rep}\" codecs=\"{}\" bandwidth=\"{bandwidth}\"",
                        xml_escape(&codecs)
                    );
                    if t.width > 0 && t.height > 0 {
                        let _ = write!(x, " width=\"{}\" height=\"{}\"", t.width, t.height);
                    }
                    if let Some(r) = st.frame_rate {
                        let _ = write!(x, " frameRate=\"{}\"", frame_rate_attr(r));
                    }
                    x.push_str("/>\n");
                    if pi == last_period {
                        for v in views {
                            self.rendition_representation(
                                &mut x, v, ll, part, first_seq, first_dts, g.nominal,
                            );
                        }
                    }
                } else {
                    let _ = writeln!(
                        x,
                        "      <Representation id=\"{rep}\" codecs=\"{}\" bandwidth=\"{bandwidth}\" audioSamplingRate=\"{}\">\n        \
                         <AudioChannelConfiguration schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" value=\"{}\"/>\n      \
                         </Representation>",
                        xml_escape(&codecs),
                        t.sample_rate,
                        t.channels.max(1),
                    );
                }
                x.push_str("    </AdaptationSet>\n");
            }
            x.push_str("  </Period>\n");
        }
        let _ = writeln!(
            x,
            "  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"{}\"/>\n  \
             <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:direct:2014\" value=\"{}\"/>\n</MPD>",
            xml_escape(time_url),
            rfc3339_millis(now),
        );
        Some(x)
    }

    /// One rendition as a video representation of the current Period, with its own template:
    /// in low latency numbered as this stream's segments are (the offset between the two
    /// numberings in its media URLs), otherwise with its own timeline.
    #[allow(clippy::too_many_arguments)]
    fn rendition_representation(
        &self,
        x: &mut String,
        v: &RenditionView,
        ll: bool,
        part: f64,
        first_seq: u64,
        first_dts: i64,
        nominal: Option<i64>,
    ) {
        let init = format!("{}dash-{}-{}-v.mp4", v.prefix, v.token, v.generation);
        let codecs = xml_escape(&codec_string(&v.track).unwrap_or_default());
        let mut head = format!(
            "      <Representation id=\"{}\" codecs=\"{codecs}\" bandwidth=\"{}\"",
            xml_escape(&v.id),
            v.peak.max(1)
        );
        if v.track.width > 0 && v.track.height > 0 {
            let _ = write!(head, " width=\"{}\" height=\"{}\"", v.track.width, v.track.height);
        }
        if let Some(r) = v.frame_rate {
            let _ = write!(head, " frameRate=\"{}\"", frame_rate_attr(r));
        }
        head.push_str(">\n");
        if ll {
            // Its segments start where this stream's do (the transcoder keeps the source's
            // keyframes and timestamps): the number of its latest, in this stream's numbering.
            let Some(n) = nominal else { return };
            if (v.nominal - n).abs() > n / 100 {
                return;
            }
            let Some(&(seq, dts, _)) = v.segments.iter().rev().find(|s| s.1 >= first_dts) else {
                return;
            };
            let k = ((dts - first_dts) as f64 / n as f64).round() as i64;
            if (dts - first_dts - k * n).abs() > n / 10 {
                return;
            }
            let offset = first_seq as i64 + k - seq as i64;
            let media = format!(
                "{}dash-{}-v-{}-$Number$.m4s",
                v.prefix,
                v.token,
                offset_text(offset)
            );
            let ato = (secs(n) - part).max(0.0);
            x.push_str(&head);
            let _ = writeln!(
                x,
                "        <SegmentTemplate timescale=\"{CLOCK_RATE}\" duration=\"{n}\" startNumber=\"{first_seq}\" \
                 presentationTimeOffset=\"{first_dts}\" availabilityTimeOffset=\"{ato:.3}\" \
                 availabilityTimeComplete=\"false\" initialization=\"{init}\" media=\"{media}\"/>\n      </Representation>"
            );
        } else {
            let segs: Vec<&(u64, i64, i64)> = v.segments.iter().filter(|s| s.1 >= first_dts).collect();
            let Some(first) = segs.first() else { return };
            let media = format!("{}dash-{}-v-$Number$.m4s", v.prefix, v.token);
            x.push_str(&head);
            let _ = write!(
                x,
                "        <SegmentTemplate timescale=\"{CLOCK_RATE}\" startNumber=\"{}\" \
                 presentationTimeOffset=\"{first_dts}\" initialization=\"{init}\" media=\"{media}\">\n          <SegmentTimeline>\n",
                first.0
            );
            let mut expected = None;
            for &&(_, t, d) in &segs {
                if expected == Some(t) {
                    let _ = writeln!(x, "            <S d=\"{d}\"/>");
                } else {
                    let _ = writeln!(x, "            <S t=\"{t}\" d=\"{d}\"/>");
                }
                expected = Some(t + d);
            }
            x.push_str("          </SegmentTimeline>\n        </SegmentTemplate>\n      </Representation>\n");
        }
    }

    /// A DASH file by name: an init segment, a complete segment, or (low latency) the segment
    /// being made, streamed as its parts come. `Ok(None)` when there is no such file.
    pub async fn dash_file(self: &Arc<Self>, name: &str) -> Result<Option<DashFile>, PlaylistError> {
        let Some(parsed) = parse_name(name, &self.token) else {
            return Ok(None);
        };
        let (rep, seq) = match parsed {
            Name::Init { generation, rep } => {
                let st = self.state.read();
                return Ok(st
                    .dash
                    .generations
                    .iter()
                    .find(|g| g.id == generation)
                    .and_then(|g| g.track(rep))
                    .map(|(_, t, b)| {
                        let ct = if t.kind() == MediaKind::Video {
                            "video/mp4"
                        } else {
                            "audio/mp4"
                        };
                        DashFile::Init(b.clone(), ct)
                    }));
            }
            Name::Media { rep, seq } => (rep, seq),
        };
        let timeout = {
            let st = self.state.read();
            // The track of that representation in the stream the segment belongs to (the
            // current one for a segment not made yet).
            let generation = st
                .segments
                .iter()
                .find(|s| s.seq == seq)
                .map(|s| s.generation)
                .or_else(|| st.dash.generations.back().map(|g| g.id));
            let Some(track) = st
                .dash
                .generations
                .iter()
                .find(|g| Some(g.id) == generation)
                .and_then(|g| g.track(rep))
                .map(|(_, t, _)| t.id)
            else {
                return Ok(None);
            };
            if let Some(seg) = st.segments.iter().find(|s| s.seq == seq) {
                return Ok(Some(DashFile::Segment(pieces_of(&seg.data, &seg.pieces, track))));
            }
            let last = st.segments.back().map(|s| s.seq);
            let open = st.open_parts_seq();
            // Low latency: the segment being made, or the next one (asked for a little early);
            // never one of a stream the MPD does not announce yet (a publisher restarted and its
            // first segment is not complete: the player still reads the previous Period).
            let announced = st.dash.generations.back().is_some_and(|g| g.first.is_some());
            let upcoming = match (open, last) {
                (Some(o), _) => seq == o || seq == o + 1,
                (None, Some(l)) => seq == l + 1,
                (None, None) => false,
            };
            if !self.is_low_latency() || !upcoming || !announced || self.is_closed() {
                return Ok(None);
            }
            (track, Duration::from_secs(3 * st.target.max(1)))
        };
        let (track, timeout) = timeout;
        if self.waiters.load(Ordering::Acquire) >= MAX_WAITERS {
            return Err(PlaylistError::Unavailable("too many requests waiting".into()));
        }
        let live = LiveSegment {
            stream: self.clone(),
            rx: self.progress.subscribe(),
            track,
            seq,
            next: 0,
            timeout,
            done: false,
        };
        let body = stream::unfold(live, |mut l| async move {
            let out = l.next_pieces().await?;
            Some((out, l))
        })
        .flat_map(|v: Vec<Result<Bytes, std::io::Error>>| stream::iter(v))
        .boxed();
        Ok(Some(DashFile::Live(body)))
    }
}

/// The slices of `data` that hold `track`'s fragments.
fn pieces_of(data: &Bytes, pieces: &[Piece], track: sluice_media::TrackId) -> Vec<Bytes> {
    pieces
        .iter()
        .filter(|p| p.track == track && p.range.end <= data.len())
        .map(|p| data.slice(p.range.clone()))
        .collect()
}

/// Counts a segment request while it waits for a part (bounded with the blocking reloads);
/// not while its bytes are being sent, which the connection's own limits bound.
struct Held<'a>(&'a HlsStream);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The segment being made, read part by part.
struct LiveSegment {
    stream: Arc<HlsStream>,
    rx: watch::Receiver<u64>,
    track: sluice_media::TrackId,
    seq: u64,
    /// Index of the next part to send.
    next: u32,
    timeout: Duration,
    done: bool,
}

enum Step {
    Data(Vec<Bytes>, bool),
    Wait,
    Gone(&'static str),
}

impl LiveSegment {
    async fn next_pieces(&mut self) -> Option<Vec<Result<Bytes, std::io::Error>>> {
        if self.done {
            return None;
        }
        loop {
            self.rx.borrow_and_update();
            let s = self.stream.clone();
            let step = {
                let st = s.state.read();
                self.step(&st, s.is_closed())
            };
            match step {
                Step::Data(v, finished) => {
                    self.done = finished;
                    if v.is_empty() && !finished {
                        continue;
                    }
                    return Some(v.into_iter().map(Ok).collect());
                }
                Step::Gone(why) => {
                    self.done = true;
                    return Some(vec![Err(std::io::Error::other(why))]);
                }
                Step::Wait => {}
            }
            if s.waiters.fetch_add(1, Ordering::AcqRel) >= MAX_WAITERS {
                s.waiters.fetch_sub(1, Ordering::AcqRel);
                self.done = true;
                return Some(vec![Err(std::io::Error::other("too many requests waiting"))]);
            }
            let held = Held(&s);
            let waited = tokio::time::timeout(self.timeout, self.rx.changed()).await;
            drop(held);
            match waited {
                Ok(Ok(())) => {}
                _ => {
                    self.done = true;
                    return Some(vec![Err(std::io::Error::other(
                        "the segment's next part did not come in time",
                    ))]);
                }
            }
        }
    }

    fn step(&mut self, st: &State, closed: bool) -> Step {
        if let Some(seg) = st.segments.iter().find(|s| s.seq == self.seq) {
            if self.next == 0 {
                return Step::Data(pieces_of(&seg.data, &seg.pieces, self.track), true);
            }
            if seg.parts.is_empty() {
                return Step::Gone("the segment's parts were released before they were read");
            }
            let v = seg
                .parts
                .iter()
                .filter(|p| p.index >= self.next)
                .flat_map(|p| pieces_of(&p.data, &p.pieces, self.track))
                .collect();
            return Step::Data(v, true);
        }
        let parts = st.open_parts_of(self.seq);
        let new: Vec<Bytes> = parts
            .iter()
            .filter(|p| p.index >= self.next)
            .flat_map(|p| pieces_of(&p.data, &p.pieces, self.track))
            .collect();
        if let Some(last) = parts.last() {
            self.next = self.next.max(last.index + 1);
        }
        if !new.is_empty() {
            return Step::Data(new, false);
        }
        if closed {
            return Step::Gone("the stream ended");
        }
        if st.open_parts_seq().is_some_and(|o| o > self.seq)
            || st.segments.back().is_some_and(|s| s.seq > self.seq)
        {
            return Step::Gone("the segment left memory");
        }
        Step::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(matches!(
            parse_name("dash-ab12-3-v.mp4", "ab12"),
            Some(Name::Init {
                generation: 3,
                rep: "v"
            })
        ));
        assert!(matches!(
            parse_name("dash-ab12-a-17.m4s", "ab12"),
            Some(Name::Media { rep: "a", seq: 17 })
        ));
        assert!(matches!(
            parse_name("dash-ab12-v-p3-17.m4s", "ab12"),
            Some(Name::Media { rep: "v", seq: 14 })
        ));
        assert!(matches!(
            parse_name("dash-ab12-v-m3-17.m4s", "ab12"),
            Some(Name::Media { rep: "v", seq: 20 })
        ));
        assert!(
            parse_name("dash-ab12-v-p30-17.m4s", "ab12").is_none(),
            "before the first"
        );
        assert!(parse_name("dash-ab12-v-x3-17.m4s", "ab12").is_none());
        assert_eq!(offset_text(-3), "m3");
        assert_eq!(offset_text(2), "p2");
        assert!(parse_name("dash-other-a-17.m4s", "ab12").is_none());
        assert!(parse_name("dash-ab12-a-x.m4s", "ab12").is_none());
        assert!(parse_name("dash-ab12-a-+5.m4s", "ab12").is_none());
        assert!(parse_name("dash-ab12-a-05.m4s", "ab12").is_none());
        assert!(matches!(
            parse_name("dash-ab12-a-0.m4s", "ab12"),
            Some(Name::Media { seq: 0, .. })
        ));
        assert_eq!(frame_rate_attr(30.0), "30");
        assert_eq!(frame_rate_attr(29.97), "29970/1000");
    }
}
