//! The in-memory store: every live HLS stream of the server by path ([`HlsStore`]), and for each
//! ([`HlsStream`]) its segments and init segments over a sliding window, the facts its playlists
//! need, and their rendering through the typed model in [`crate::playlist`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use parking_lot::RwLock;
use sluice_container::fmp4::Piece;
use tokio::sync::watch;

use crate::playlist::{
    LowLatency, MediaPlaylist, MediaSegment, MultivariantPlaylist, PartEntry, RenditionReport, VariantStream,
};
use crate::{HlsConfig, Variant};

/// One segment held in memory.
#[derive(Debug)]
pub(crate) struct Segment {
    pub seq: u64,
    pub name: String,
    pub data: Bytes,
    /// Seconds.
    pub duration: f64,
    pub pdt: SystemTime,
    pub discontinuity: bool,
    /// Name of the initialization segment (fMP4).
    pub init: Option<Arc<str>>,
    /// Its parts (LL-HLS), kept while the segment is among the last few; emptied after.
    pub parts: Vec<Part>,
    /// Decode time of its start and its duration, in core ticks (DASH timelines).
    pub start_dts: i64,
    pub duration_ticks: i64,
    /// Generation of its stream (its init segment), 0 for MPEG-TS.
    pub generation: u64,
    /// Where each track's fragments lie in `data` (DASH representations).
    pub pieces: Vec<Piece>,
    /// Wall-clock time it was complete (the arrival of the frame that closed it).
    pub completed: SystemTime,
}

/// One part (LL-HLS) held in memory.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    /// Sequence number of its segment.
    pub seq: u64,
    /// Index in its segment.
    pub index: u32,
    pub name: String,
    pub data: Bytes,
    /// Seconds.
    pub duration: f64,
    pub independent: bool,
    pub discontinuity: bool,
    pub init: Option<Arc<str>>,
    /// Where each track's fragment lies in `data` (DASH representations).
    pub pieces: Vec<Piece>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) segments: VecDeque<Segment>,
    /// Parts of the segment being built (LL-HLS).
    open_parts: Vec<Part>,
    /// The name the next part will have (EXT-X-PRELOAD-HINT).
    hint: Option<String>,
    inits: HashMap<Arc<str>, Bytes>,
    /// The init segment of the current stream, kept even before a segment refers to it.
    current_init: Option<Arc<str>>,
    /// Discontinuities that have left the window.
    discontinuity_seq: u64,
    pub(crate) target: u64,
    codecs: String,
    resolution: Option<(u32, u32)>,
    pub(crate) frame_rate: Option<f64>,
    peak_bandwidth: u64,
    /// What the DASH manifest needs (fMP4 only).
    pub(crate) dash: crate::dash::DashState,
    /// Bumped by every change of the playlists' content (under the write lock).
    pub(crate) version: u64,
}

impl State {
    /// Whether the playlist holds segment `msn` complete, or (with `part`) part `part` of it.
    fn has(&self, msn: u64, part: Option<u64>) -> bool {
        let next_begun = || self.open_parts.last().is_some_and(|p| p.seq > msn);
        match self.segments.back() {
            Some(s) if s.seq > msn => return true,
            // Segment `msn` is complete: a part after its last is Part 0 of the next segment
            // (RFC 8216bis 6.2.5.2), so a request for it waits for that one.
            Some(s) if s.seq == msn => {
                return match part {
                    Some(k) if !s.parts.is_empty() && k >= s.parts.len() as u64 => next_begun(),
                    _ => true,
                };
            }
            _ => {}
        }
        let Some(part) = part else {
            return false;
        };
        self.open_parts
            .last()
            .is_some_and(|p| p.seq > msn || p.seq == msn && u64::from(p.index) >= part)
    }

    /// Sequence number of the segment being built, when a part of it exists.
    pub(crate) fn open_parts_seq(&self) -> Option<u64> {
        self.open_parts.first().map(|p| p.seq)
    }

    /// The parts made so far of segment `seq`, when it is the one being built.
    pub(crate) fn open_parts_of(&self, seq: u64) -> &[Part] {
        if self.open_parts_seq() == Some(seq) {
            &self.open_parts
        } else {
            &[]
        }
    }

    fn part(&self, name: &str) -> Option<&Part> {
        self.open_parts
            .iter()
            .chain(self.segments.iter().rev().flat_map(|s| s.parts.iter()))
            .find(|p| p.name == name)
    }
}

/// What a player asks of a media playlist (RFC 8216bis 6.2.5): blocking reload on
/// `_HLS_msn`/`_HLS_part`, a delta update with `_HLS_skip`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlaylistQuery {
    pub msn: Option<u64>,
    pub part: Option<u64>,
    pub skip: bool,
}

impl PlaylistQuery {
    /// From a URL query; an error names the bad parameter. Other parameters are ignored.
    pub fn parse(query: Option<&str>) -> Result<Self, PlaylistError> {
        let mut q = PlaylistQuery::default();
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| PlaylistError::BadRequest(format!("{k}={v:?} is not a number")))
            };
            match k {
                "_HLS_msn" => q.msn = Some(num(v)?),
                "_HLS_part" => q.part = Some(num(v)?),
                "_HLS_skip" => match v {
                    "YES" | "v2" => q.skip = true,
                    _ => {
                        return Err(PlaylistError::BadRequest(format!(
                            "_HLS_skip={v:?}: expected YES or v2"
                        )))
                    }
                },
                _ => {}
            }
        }
        if q.part.is_some() && q.msn.is_none() {
            return Err(PlaylistError::BadRequest("_HLS_part without _HLS_msn".into()));
        }
        Ok(q)
    }
}

/// Why a media playlist request is not answered with a playlist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaylistError {
    /// The player's fault (HTTP 400): a malformed query, or a segment too far ahead.
    #[error("bad playlist request: {0}")]
    BadRequest(String),
    /// The part or segment did not come in time, or too many requests wait (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// No such playlist (HTTP 404).
    #[error("no playlist {0}")]
    NotFound(String),
}

/// Requests held at once per stream (blocking reloads and preload-hinted parts); past it a
/// request is answered 503 at once, so memory and tasks stay bounded.
pub(crate) const MAX_WAITERS: usize = 4096;

/// Counts a held request while it lives.
pub(crate) struct Waiter<'a>(&'a AtomicUsize);

impl<'a> Waiter<'a> {
    pub(crate) fn enter(n: &'a AtomicUsize) -> Option<Self> {
        if n.fetch_add(1, Ordering::AcqRel) >= MAX_WAITERS {
            n.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Waiter(n))
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a rendered LL-HLS media playlist depends on: (state version, delta update, closed).
type RenderKey = (u64, bool, bool);

/// A live HLS stream: its playlists and in-memory segments.
#[derive(Debug)]
pub struct HlsStream {
    config: HlsConfig,
    pub(crate) state: RwLock<State>,
    ready: watch::Sender<bool>,
    /// Bumped on every new part, segment and at the end: what held requests wait on.
    pub(crate) progress: watch::Sender<u64>,
    pub(crate) waiters: AtomicUsize,
    /// Names this packager's files apart from an earlier one's on the same path (a cache in
    /// front must never mix them up: sequence numbers start again at 0).
    pub(crate) token: String,
    closed: AtomicBool,
    /// Requests, bytes and distinct clients over the last minute (viewers are not sessions).
    pub viewers: crate::viewers::Viewers,
    /// How soon parts can be served after the frame that completes them arrives.
    pub readiness: crate::readiness::Readiness,
    /// The LL-HLS media playlist last rendered: ((state version, delta update, closed), text).
    rendered: parking_lot::Mutex<Option<(RenderKey, Bytes)>>,
}

impl HlsStream {
    pub(crate) fn new(config: HlsConfig) -> Self {
        let (ready, _) = watch::channel(false);
        let (progress, _) = watch::channel(0);
        let target = config.segment_duration.as_secs_f64().ceil() as u64;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let token = format!("{:x}", (nanos as u64) ^ (std::process::id() as u64) << 40);
        HlsStream {
            token,
            config,
            state: RwLock::new(State {
                target,
                ..Default::default()
            }),
            ready,
            progress,
            waiters: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            viewers: Default::default(),
            readiness: Default::default(),
            rendered: Default::default(),
        }
    }

    pub(crate) fn config(&self) -> &HlsConfig {
        &self.config
    }

    /// Renders `index.m3u8` (multivariant) or `stream.m3u8` (media playlist).
    pub fn playlist(&self, name: &str) -> Option<String> {
        let st = self.state.read();
        match name {
            "index.m3u8" => Some(self.multivariant(&st).render()),
            "stream.m3u8" => Some(self.media(&st, false).render()),
            _ => None,
        }
    }

    /// A playlist as a player asks for it: for an LL-HLS media playlist, held until the
    /// segment or part of a blocking reload exists (RFC 8216bis 6.2.5.2), for at most three
    /// target durations, and a delta update when asked (6.2.5.1). Other variants ignore the query.
    pub async fn playlist_for(&self, name: &str, q: PlaylistQuery) -> Result<String, PlaylistError> {
        let text = self.playlist_with_reports(name, q, &[]).await?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// [`HlsStream::playlist_for`], the LL-HLS media playlist carrying an
    /// `EXT-X-RENDITION-REPORT` for each of `others` (the path's other renditions: the URI of
    /// each one's media playlist relative to this one's, and its stream), read after the wait.
    pub async fn playlist_with_reports(
        &self,
        name: &str,
        q: PlaylistQuery,
        others: &[(String, Arc<HlsStream>)],
    ) -> Result<Bytes, PlaylistError> {
        if name != "stream.m3u8" || !self.is_low_latency() {
            return self
                .playlist(name)
                .map(Bytes::from)
                .ok_or_else(|| PlaylistError::NotFound(name.to_owned()));
        }
        if let Some(msn) = q.msn {
            let (last, timeout) = {
                let st = self.state.read();
                let last = st.segments.back().map_or(0, |s| s.seq);
                (last, Duration::from_secs(3 * st.target.max(1)))
            };
            if msn > last + 2 {
                return Err(PlaylistError::BadRequest(format!(
                    "_HLS_msn={msn} is more than two segments past the last one ({last})"
                )));
            }
            let ready = || self.is_closed() || self.state.read().has(msn, q.part);
            if !ready() {
                let Some(_w) = Waiter::enter(&self.waiters) else {
                    return Err(PlaylistError::Unavailable("too many requests waiting".into()));
                };
                let mut rx = self.progress.subscribe();
                let waited = tokio::time::timeout(timeout, rx.wait_for(|_| ready())).await;
                if !matches!(waited, Ok(Ok(_))) {
                    return Err(PlaylistError::Unavailable(format!(
                        "segment {msn} part {:?} did not come within {timeout:?}",
                        q.part
                    )));
                }
            }
        }
        let reports: Vec<RenditionReport> = others
            .iter()
            .filter_map(|(uri, s)| {
                let (last_msn, last_part) = s.last_position()?;
                Some(RenditionReport {
                    uri: uri.clone(),
                    last_msn,
                    last_part,
                })
            })
            .collect();
        // Every viewer waiting for the same part gets the same playlist: it is rendered once per
        // change of the stream (and kind of request), not once per viewer. The key is read under
        // the same lock as the state the text is rendered from, so a cached text is always the
        // state's.
        let st = self.state.read();
        let key = (st.version, q.skip, self.is_closed());
        if others.is_empty() {
            if let Some((k, text)) = &*self.rendered.lock() {
                if *k == key {
                    return Ok(text.clone());
                }
            }
        }
        let mut pl = self.media(&st, q.skip);
        if let Some(ll) = &mut pl.low_latency {
            ll.rendition_reports = reports;
        }
        let text = Bytes::from(pl.render());
        if others.is_empty() {
            *self.rendered.lock() = Some((key, text.clone()));
        }
        drop(st);
        Ok(text)
    }

    /// Takes over from `previous`, the stream an earlier packager made on the same path (it
    /// restarted): the discontinuity sequence goes on past all of the previous stream's, so
    /// players see a discontinuity before this stream's first segment. Returns the sequence
    /// number this stream's segments start at: the one after the previous stream's last.
    pub(crate) fn take_over(&self, previous: &HlsStream) -> u64 {
        let (next, discontinuities) = {
            let p = previous.state.read();
            let next = p
                .open_parts
                .last()
                .map(|o| o.seq + 1)
                .or_else(|| p.segments.back().map(|s| s.seq + 1))
                .unwrap_or(0);
            let d = p.discontinuity_seq + p.segments.iter().filter(|s| s.discontinuity).count() as u64;
            (next, d)
        };
        let mut st = self.state.write();
        if next > 0 {
            st.discontinuity_seq = discontinuities + 1;
        }
        st.version += 1;
        next
    }

    /// The last segment (complete or being built) and its last part (LL-HLS): what a rendition
    /// report says of this stream.
    pub fn last_position(&self) -> Option<(u64, Option<u64>)> {
        let st = self.state.read();
        if let Some(p) = st.open_parts.last() {
            return Some((p.seq, Some(u64::from(p.index))));
        }
        let seg = st.segments.back()?;
        Some((seg.seq, seg.parts.last().map(|p| u64::from(p.index))))
    }

    pub(crate) fn is_low_latency(&self) -> bool {
        self.config.variant == Variant::LowLatency
    }

    fn version(&self) -> u8 {
        match self.config.variant {
            // EXT-X-SKIP needs 9; the other LL-HLS tags need no more than 6.
            Variant::LowLatency => 9,
            Variant::Fmp4 => 7,
            Variant::MpegTs => 3,
        }
    }

    /// `index.m3u8` naming this stream first, then `others` (renditions of it: the URI of each
    /// one's media playlist relative to this one's, and its stream), each with its own
    /// bandwidth, codecs, resolution and frame rate, so a player switches between them.
    pub fn multivariant_with(&self, others: &[(String, Arc<HlsStream>)]) -> String {
        let st = self.state.read();
        let mut pl = self.multivariant(&st);
        let states: Vec<_> = others.iter().map(|(uri, s)| (uri, s.state.read())).collect();
        for (uri, o) in &states {
            pl.variants.push(VariantStream {
                bandwidth: o.peak_bandwidth.max(1),
                codecs: &o.codecs,
                resolution: o.resolution,
                frame_rate: o.frame_rate,
                uri,
            });
        }
        pl.render()
    }

    fn multivariant<'a>(&self, st: &'a State) -> MultivariantPlaylist<'a> {
        MultivariantPlaylist {
            version: self.version(),
            independent_segments: true,
            variants: vec![VariantStream {
                bandwidth: st.peak_bandwidth.max(1),
                codecs: &st.codecs,
                resolution: st.resolution,
                frame_rate: st.frame_rate,
                uri: "stream.m3u8",
            }],
        }
    }

    fn media<'a>(&self, st: &'a State, skip_requested: bool) -> MediaPlaylist<'a> {
        let listed = st.segments.len().min(self.config.segment_count);
        let skip = st.segments.len() - listed;
        let window = st.segments.iter().skip(skip);
        let discontinuity_seq =
            st.discontinuity_seq + st.segments.iter().take(skip).filter(|s| s.discontinuity).count() as u64;
        let target = st.target.max(1);
        let part_target = self.config.part_duration.as_secs_f64();
        let can_skip_until = 6.0 * target as f64;
        // A delta update leaves out the oldest segments, keeping at least CAN-SKIP-UNTIL seconds.
        let mut skipped = 0;
        if skip_requested && self.is_low_latency() {
            let mut remaining: f64 = window.clone().map(|s| s.duration).sum();
            for seg in window.clone() {
                if remaining - seg.duration < can_skip_until {
                    break;
                }
                remaining -= seg.duration;
                skipped += 1;
            }
        }
        // Parts are listed for the segments within the last three target durations (4.4.4.9).
        let parts_from = {
            let mut age: f64 = st.open_parts.iter().map(|p| p.duration).sum();
            let mut from = st.segments.len();
            for seg in st.segments.iter().rev() {
                if age >= 3.0 * target as f64 || seg.parts.is_empty() {
                    break;
                }
                age += seg.duration;
                from -= 1;
            }
            from
        };
        let entry = |p: &'a Part| PartEntry {
            uri: &p.name,
            duration: p.duration,
            independent: p.independent,
        };
        MediaPlaylist {
            version: self.version(),
            independent_segments: true,
            target_duration: target,
            media_sequence: st.segments.get(skip).map_or(0, |s| s.seq),
            discontinuity_sequence: discontinuity_seq,
            segments: window
                .enumerate()
                .skip(skipped)
                .map(|(i, seg)| MediaSegment {
                    uri: &seg.name,
                    duration: seg.duration,
                    program_date_time: Some(seg.pdt),
                    // A discontinuity at the head of the window is not written (players start there).
                    discontinuity: seg.discontinuity && i > 0,
                    map: seg.init.as_deref(),
                    parts: if skip + i >= parts_from {
                        seg.parts.iter().map(entry).collect()
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
            end_list: self.is_closed(),
            low_latency: self.is_low_latency().then(|| LowLatency {
                part_target,
                part_hold_back: 3.0 * part_target,
                can_skip_until,
                skipped_segments: skipped as u64,
                pending_parts: st.open_parts.iter().map(entry).collect(),
                pending_discontinuity: st.open_parts.first().is_some_and(|p| p.discontinuity),
                pending_map: st.open_parts.first().and_then(|p| p.init.as_deref()),
                preload_hint: st.hint.as_deref(),
                rendition_reports: Vec::new(),
            }),
        }
    }

    /// A segment, part or initialization segment by name, with its content type.
    pub fn file(&self, name: &str) -> Option<(Bytes, &'static str)> {
        let st = self.state.read();
        if let Some(b) = st.inits.get(name) {
            return Some((b.clone(), "video/mp4"));
        }
        let ct = match self.config.variant {
            Variant::Fmp4 | Variant::LowLatency => "video/iso.segment",
            Variant::MpegTs => "video/mp2t",
        };
        if let Some(p) = st.part(name) {
            return Some((p.data.clone(), ct));
        }
        let seg = st.segments.iter().find(|s| s.name == name)?;
        Some((seg.data.clone(), ct))
    }

    /// [`HlsStream::file`], except that the part named by EXT-X-PRELOAD-HINT is waited for
    /// (RFC 8216bis 6.2.6: the server holds the request until the part is complete), for at
    /// most three target durations. `Err` when it did not come in time.
    pub async fn file_when_ready(&self, name: &str) -> Result<Option<(Bytes, &'static str)>, PlaylistError> {
        let timeout = {
            let st = self.state.read();
            if st.hint.as_deref() != Some(name) || self.is_closed() {
                drop(st);
                return Ok(self.file(name));
            }
            Duration::from_secs(3 * st.target.max(1))
        };
        let Some(_w) = Waiter::enter(&self.waiters) else {
            return Err(PlaylistError::Unavailable("too many requests waiting".into()));
        };
        let mut rx = self.progress.subscribe();
        let ready = || self.is_closed() || self.state.read().part(name).is_some();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|_| ready()))
            .await
            .is_ok_and(|r| r.is_ok());
        if waited {
            Ok(self.file(name))
        } else {
            Err(PlaylistError::Unavailable(format!(
                "part {name} did not come within {timeout:?}"
            )))
        }
    }

    /// Waits until the first segment exists; false on timeout or when the stream ended first.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.ready.subscribe();
        let ok = tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await;
        matches!(ok, Ok(Ok(_))) && !self.state.read().segments.is_empty()
    }

    /// Whether the first segment exists (without waiting).
    pub fn is_ready(&self) -> bool {
        !self.state.read().segments.is_empty()
    }

    /// Whether the segmenter has stopped (the path ended or failed).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sequence numbers and durations of the segments in memory (for tests and the API).
    pub fn segments(&self) -> Vec<(u64, f64)> {
        self.state
            .read()
            .segments
            .iter()
            .map(|s| (s.seq, s.duration))
            .collect()
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Wake waiters so they see the end.
        self.ready.send_replace(true);
        self.progress.send_modify(|n| *n += 1);
    }

    /// Requests held now (blocking reloads, preload-hinted parts).
    pub fn waiting(&self) -> usize {
        self.waiters.load(Ordering::Acquire)
    }

    /// Adds a complete part of the segment being built; `hint` names the one after it. Held
    /// requests see it at the next [`notify`](Self::notify).
    pub(crate) fn push_part(&self, part: Part, hint: String) {
        let mut st = self.state.write();
        if st.open_parts.first().is_some_and(|p| p.seq != part.seq) {
            st.open_parts.clear();
        }
        st.open_parts.push(part);
        st.hint = Some(hint);
        st.version += 1;
    }

    /// Wakes the held requests (blocking reloads, preload hints) to look at what was filed
    /// since the last call: called once per step of the packager, after all it filed (a
    /// segment's last part and the segment itself come in one step), so that a request never
    /// answers from half of a step (on a runtime with several workers, a held request may run
    /// on another thread while the packager files).
    pub(crate) fn notify(&self) {
        self.progress.send_modify(|n| *n += 1);
    }

    /// A new stream begins: what the multivariant playlist says about it, and its init segment.
    pub(crate) fn begin_stream(
        &self,
        codecs: String,
        resolution: Option<(u32, u32)>,
        init: Option<(Arc<str>, Bytes)>,
        dash: Option<crate::dash::Generation>,
    ) {
        let mut st = self.state.write();
        st.version += 1;
        if let Some(g) = dash {
            st.dash.begin(g);
        }
        st.codecs = codecs;
        st.resolution = resolution;
        if let Some((name, bytes)) = init {
            st.inits.insert(name.clone(), bytes);
            st.current_init = Some(name);
        } else {
            st.current_init = None;
        }
    }

    /// Adds a finished segment, slides the window and drops init segments no longer referred to.
    /// Held requests see it at the next [`notify`](Self::notify).
    pub(crate) fn push_segment(&self, segment: Segment, frame_rate: Option<f64>) {
        let cfg = &self.config;
        let mut st = self.state.write();
        let bw = (segment.data.len() as f64 * 8.0 / segment.duration.max(0.1)) as u64;
        st.peak_bandwidth = st.peak_bandwidth.max(bw);
        st.target = st.target.max(segment.duration.round().max(1.0) as u64);
        if let Some(r) = frame_rate {
            st.frame_rate = Some((r * 1000.0).round() / 1000.0);
        }
        let mut segment = segment;
        let seq = segment.seq;
        segment.parts = std::mem::take(&mut st.open_parts);
        segment.parts.retain(|p| p.seq == seq);
        st.dash
            .add_segment(&segment, segment.completed, self.is_low_latency());
        st.segments.push_back(segment);
        st.version += 1;
        // Parts are kept for the segments of the last four target durations (they are listed
        // for three), then released: the segment's own bytes serve from there.
        let keep = 4.0 * st.target as f64;
        let mut age = 0.0;
        for s in st.segments.iter_mut().rev() {
            if age > keep {
                s.parts = Vec::new();
            }
            age += s.duration;
        }
        while st.segments.len() > cfg.segment_count + cfg.segment_keep {
            if let Some(old) = st.segments.pop_front() {
                if old.discontinuity {
                    st.discontinuity_seq += 1;
                }
            }
        }
        let State {
            segments,
            inits,
            current_init,
            ..
        } = &mut *st;
        inits.retain(|k, _| {
            current_init.as_ref() == Some(k) || segments.iter().any(|s| s.init.as_ref() == Some(k))
        });
        let oldest = st.segments.front().map_or(u64::MAX, |s| s.generation);
        st.dash.release_before(oldest);
        drop(st);
        self.ready.send_replace(true);
    }
}

/// The HLS streams of the server, by path.
#[derive(Debug, Default)]
pub struct HlsStore {
    streams: RwLock<HashMap<String, Arc<HlsStream>>>,
}

impl HlsStore {
    pub fn get(&self, path: &str) -> Option<Arc<HlsStream>> {
        self.streams.read().get(path).cloned()
    }

    pub fn insert(&self, path: &str, stream: Arc<HlsStream>) {
        if let Some(old) = self.streams.write().insert(path.to_owned(), stream) {
            old.close();
        }
    }

    pub fn remove(&self, path: &str) {
        if let Some(old) = self.streams.write().remove(path) {
            old.close();
        }
    }

    pub fn paths(&self) -> Vec<String> {
        self.streams.read().keys().cloned().collect()
    }
}
