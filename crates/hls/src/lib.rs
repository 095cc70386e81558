//! HLS delivery from the media core: one segmenter task per live path turns a core reader into
//! fMP4 (CMAF) or MPEG-TS segments kept in memory, and renders the multivariant and media
//! playlists (RFC 8216) over a sliding window.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;
use sluice_container::fmp4::{codec_string, Fmp4Writer, Fragment};
use sluice_container::ts::TsMuxer;
use sluice_media::{Event, Frame, ReadError, Reader, StreamInfo, TrackId, CLOCK_RATE};
use tokio::sync::watch;

/// Segment container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// fMP4/CMAF segments with an initialization segment (`EXT-X-MAP`).
    #[default]
    Fmp4,
    /// MPEG-TS segments, for old players and set-top boxes.
    MpegTs,
}

/// Settings of one HLS stream.
#[derive(Debug, Clone)]
pub struct HlsConfig {
    pub variant: Variant,
    /// Target segment length; segments are cut on the first keyframe after it.
    pub segment_duration: Duration,
    /// Segments listed in the media playlist.
    pub segment_count: usize,
    /// Segments kept after they leave the playlist, for players still fetching them.
    pub segment_keep: usize,
    /// A segment is cut even without a keyframe when it grows past this (bounded memory).
    pub max_segment_bytes: usize,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            variant: Variant::Fmp4,
            segment_duration: Duration::from_secs(1),
            segment_count: 7,
            segment_keep: 3,
            max_segment_bytes: 64 << 20,
        }
    }
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    name: String,
    data: Bytes,
    /// Seconds.
    duration: f64,
    pdt: SystemTime,
    discontinuity: bool,
    /// Name of the initialization segment (fMP4).
    init: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct State {
    segments: VecDeque<Segment>,
    inits: HashMap<Arc<str>, Bytes>,
    /// Discontinuities that have left the window.
    discontinuity_seq: u64,
    target: u64,
    codecs: String,
    resolution: Option<(u32, u32)>,
    frame_rate: Option<f64>,
    peak_bandwidth: u64,
}

/// A live HLS stream: its playlists and in-memory segments.
#[derive(Debug)]
pub struct HlsStream {
    config: HlsConfig,
    state: RwLock<State>,
    ready: watch::Sender<bool>,
    closed: AtomicBool,
}

impl HlsStream {
    /// Renders `index.m3u8` (multivariant) or `stream.m3u8` (media playlist).
    pub fn playlist(&self, name: &str) -> Option<String> {
        let st = self.state.read();
        match name {
            "index.m3u8" => Some(self.multivariant(&st)),
            "stream.m3u8" => Some(self.media(&st)),
            _ => None,
        }
    }

    fn version(&self) -> u8 {
        match self.config.variant {
            Variant::Fmp4 => 7,
            Variant::MpegTs => 3,
        }
    }

    fn multivariant(&self, st: &State) -> String {
        let mut s = format!(
            "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-INDEPENDENT-SEGMENTS\n",
            self.version()
        );
        let _ = write!(s, "#EXT-X-STREAM-INF:BANDWIDTH={}", st.peak_bandwidth.max(1));
        if !st.codecs.is_empty() {
            let _ = write!(s, ",CODECS=\"{}\"", st.codecs);
        }
        if let Some((w, h)) = st.resolution {
            let _ = write!(s, ",RESOLUTION={w}x{h}");
        }
        if let Some(r) = st.frame_rate {
            let _ = write!(s, ",FRAME-RATE={r:.3}");
        }
        s.push_str("\nstream.m3u8\n");
        s
    }

    fn media(&self, st: &State) -> String {
        let listed = st.segments.len().min(self.config.segment_count);
        let skip = st.segments.len() - listed;
        let window: Vec<&Segment> = st.segments.iter().skip(skip).collect();
        let first_seq = window.first().map_or(0, |s| s.seq);
        let discontinuity_seq =
            st.discontinuity_seq + st.segments.iter().take(skip).filter(|s| s.discontinuity).count() as u64;
        let mut s = format!(
            "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-TARGETDURATION:{}\n\
             #EXT-X-MEDIA-SEQUENCE:{first_seq}\n#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_seq}\n",
            self.version(),
            st.target.max(1),
        );
        let mut map: Option<&Arc<str>> = None;
        for (i, seg) in window.iter().enumerate() {
            if seg.discontinuity && i > 0 {
                s.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if let Some(init) = &seg.init {
                if map != Some(init) {
                    let _ = writeln!(s, "#EXT-X-MAP:URI=\"{init}\"");
                    map = Some(init);
                }
            }
            let _ = write!(
                s,
                "#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:{:.5},\n{}\n",
                rfc3339_millis(seg.pdt),
                seg.duration,
                seg.name
            );
        }
        if self.is_closed() {
            s.push_str("#EXT-X-ENDLIST\n");
        }
        s
    }

    /// A segment or initialization segment by name, with its content type.
    pub fn file(&self, name: &str) -> Option<(Bytes, &'static str)> {
        let st = self.state.read();
        if let Some(b) = st.inits.get(name) {
            return Some((b.clone(), "video/mp4"));
        }
        let seg = st.segments.iter().find(|s| s.name == name)?;
        let ct = match self.config.variant {
            Variant::Fmp4 => "video/iso.segment",
            Variant::MpegTs => "video/mp2t",
        };
        Some((seg.data.clone(), ct))
    }

    /// Waits until the first segment exists; false on timeout or when the stream ended first.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.ready.subscribe();
        let ok = tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await;
        matches!(ok, Ok(Ok(_))) && !self.state.read().segments.is_empty()
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

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Wake waiters so they see the end.
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

/// Starts the segmenter task for `reader`; it runs until the path ends or the stream is removed.
pub fn spawn(reader: Reader, config: HlsConfig) -> Arc<HlsStream> {
    let (ready, _) = watch::channel(false);
    let target = config.segment_duration.as_secs_f64().ceil() as u64;
    let stream = Arc::new(HlsStream {
        config,
        state: RwLock::new(State {
            target,
            ..Default::default()
        }),
        ready,
        closed: AtomicBool::new(false),
    });
    let s = stream.clone();
    tokio::spawn(async move {
        let path = reader.path().to_owned();
        let mut seg = Segmenter::new(s.clone(), path.clone());
        let mut reader = reader;
        loop {
            if s.is_closed() {
                break;
            }
            let ev = tokio::select! {
                ev = reader.recv() => ev,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            };
            match ev {
                Ok(Event::Start(info)) => seg.start(info),
                Ok(Event::Frame(f)) => seg.frame(&f),
                Err(ReadError::Ended) | Err(ReadError::NoStream { .. }) => break,
                Err(e) => {
                    tracing::warn!(%path, "HLS segmenter stopped: {e}");
                    break;
                }
            }
        }
        seg.finish();
        s.close();
        tracing::debug!(%path, "HLS segmenter ended");
    });
    stream
}

enum Muxer {
    Fmp4 { writer: Fmp4Writer, frag: Fragment },
    Ts { muxer: TsMuxer, buf: BytesMut },
    None,
}

/// Cuts the frames of one stream into segments.
struct Segmenter {
    out: Arc<HlsStream>,
    path: String,
    token: String,
    next_seq: u64,
    generation: u64,
    info: Option<Arc<StreamInfo>>,
    muxer: Muxer,
    init: Option<Arc<str>>,
    video: Option<TrackId>,
    /// Decode time of the segment being built, and its wall clock.
    seg_start: Option<i64>,
    /// (wall clock, dts) of the first frame since the last start.
    anchor: Option<(SystemTime, i64)>,
    pending_discontinuity: bool,
    /// Wall-clock end of the last segment: a restarted timeline never goes back before it.
    last_pdt_end: Option<SystemTime>,
    last_dts: HashMap<TrackId, i64>,
    seg_bytes: usize,
    video_frames: u64,
}

impl Segmenter {
    fn new(out: Arc<HlsStream>, path: String) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let token = format!("{:x}", (nanos as u64) ^ (std::process::id() as u64) << 40);
        Segmenter {
            out,
            path,
            token,
            next_seq: 0,
            generation: 0,
            info: None,
            muxer: Muxer::None,
            init: None,
            video: None,
            seg_start: None,
            anchor: None,
            pending_discontinuity: false,
            last_pdt_end: None,
            last_dts: HashMap::new(),
            seg_bytes: 0,
            video_frames: 0,
        }
    }

    fn start(&mut self, info: Arc<StreamInfo>) {
        if self.info.is_some() {
            // Publisher restart: close what we have and mark the next segment.
            self.cut(None);
            self.pending_discontinuity = true;
        }
        self.generation += 1;
        self.anchor = None;
        self.seg_start = None;
        self.last_dts.clear();
        self.video = info.video().map(|t| t.id);
        let tracks = &info.tracks;
        self.muxer = match self.out.config.variant {
            Variant::Fmp4 => match Fmp4Writer::new(tracks) {
                Ok(writer) => {
                    let name: Arc<str> = format!("init-{}-{}.mp4", self.token, self.generation).into();
                    self.out.state.write().inits.insert(name.clone(), writer.init());
                    self.init = Some(name);
                    Muxer::Fmp4 {
                        writer,
                        frag: Fragment::default(),
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %self.path, "HLS cannot carry this stream: {e}");
                    Muxer::None
                }
            },
            Variant::MpegTs => match TsMuxer::new(tracks) {
                Ok(muxer) => Muxer::Ts {
                    muxer,
                    buf: BytesMut::new(),
                },
                Err(e) => {
                    tracing::warn!(path = %self.path, "HLS cannot carry this stream: {e}");
                    Muxer::None
                }
            },
        };
        let mut codecs = Vec::new();
        for t in tracks {
            let carried = match &self.muxer {
                Muxer::Fmp4 { writer, .. } => writer.carries(t.id),
                Muxer::Ts { muxer, .. } => muxer.carries(t.id),
                Muxer::None => false,
            };
            if carried {
                codecs.extend(codec_string(t));
            }
        }
        {
            let mut st = self.out.state.write();
            st.codecs = codecs.join(",");
            st.resolution = info
                .video()
                .map(|v| (v.width, v.height))
                .filter(|(w, h)| *w > 0 && *h > 0);
        }
        self.info = Some(info);
    }

    fn frame(&mut self, f: &Frame) {
        let carried = match &self.muxer {
            Muxer::Fmp4 { writer, .. } => writer.carries(f.track),
            Muxer::Ts { muxer, .. } => muxer.carries(f.track),
            Muxer::None => return,
        };
        if !carried {
            return;
        }
        let is_video = Some(f.track) == self.video;
        if self.seg_start.is_none() {
            // A segment starts on a video keyframe (or any audio frame in audio-only streams).
            if is_video && !f.keyframe || self.video.is_some() && !is_video {
                return;
            }
            self.open(f.dts);
        } else if let Some(start) = self.seg_start {
            let boundary = if self.video.is_some() {
                is_video && f.keyframe
            } else {
                true
            };
            let target = (self.out.config.segment_duration.as_secs_f64() * CLOCK_RATE as f64) as i64;
            let long = f.dts - start >= target;
            let overgrown = self.seg_bytes > self.out.config.max_segment_bytes
                || f.dts - start >= target.saturating_mul(10).max(10 * CLOCK_RATE);
            if boundary && long || overgrown && is_video {
                self.cut(Some(f.dts));
                self.open(f.dts);
            }
        }
        if is_video {
            self.video_frames += 1;
        }
        self.seg_bytes += f.data.len();
        self.last_dts.insert(f.track, f.dts);
        match &mut self.muxer {
            Muxer::Fmp4 { frag, .. } => frag.push(f),
            Muxer::Ts { muxer, buf } => {
                if let Err(e) = muxer.write_frame(f, buf) {
                    tracing::debug!("HLS: dropped a frame: {e}");
                }
            }
            Muxer::None => {}
        }
    }

    fn open(&mut self, dts: i64) {
        self.seg_start = Some(dts);
        self.seg_bytes = 0;
        self.video_frames = 0;
        if self.anchor.is_none() {
            // PROGRAM-DATE-TIME stays monotonic across a publisher restart.
            let now = SystemTime::now();
            let wall = self.last_pdt_end.map_or(now, |end| end.max(now));
            self.anchor = Some((wall, dts));
        }
        if let Muxer::Ts { muxer, buf } = &mut self.muxer {
            muxer.write_tables(buf);
        }
    }

    /// Closes the segment being built; `end` is the decode time of the frame that starts the next.
    fn cut(&mut self, end: Option<i64>) {
        let Some(start) = self.seg_start.take() else {
            return;
        };
        let last = self.last_dts.values().copied().max().unwrap_or(start);
        let end_dts = end.unwrap_or_else(|| {
            // No next frame: estimate from the frame rate of the segment.
            let per = if self.video_frames > 1 {
                (last - start) / (self.video_frames as i64 - 1)
            } else {
                0
            };
            last + per.max(0)
        });
        let data = match &mut self.muxer {
            Muxer::Fmp4 { writer, frag } => {
                if frag.is_empty() {
                    return;
                }
                let out = writer.fragment(frag, &|_| end);
                *frag = Fragment::default();
                out
            }
            Muxer::Ts { buf, .. } => buf.split().freeze(),
            Muxer::None => return,
        };
        let duration = (end_dts - start).max(1) as f64 / CLOCK_RATE as f64;
        let (anchor_wall, anchor_dts) = self.anchor.unwrap_or((SystemTime::now(), start));
        let offset = start - anchor_dts;
        let pdt = if offset >= 0 {
            anchor_wall + Duration::from_micros((offset as u64) * 1_000_000 / CLOCK_RATE as u64)
        } else {
            anchor_wall
        };
        let ext = match self.out.config.variant {
            Variant::Fmp4 => "m4s",
            Variant::MpegTs => "ts",
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let frame_rate = (self.video_frames > 1).then(|| self.video_frames as f64 / duration);
        self.last_pdt_end = Some(pdt + Duration::from_secs_f64(duration));
        let segment = Segment {
            seq,
            name: format!("seg-{}-{seq}.{ext}", self.token),
            duration,
            pdt,
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
            init: self
                .init
                .clone()
                .filter(|_| matches!(self.muxer, Muxer::Fmp4 { .. })),
            data,
        };
        let cfg = &self.out.config;
        let mut st = self.out.state.write();
        let bw = (segment.data.len() as f64 * 8.0 / duration.max(0.1)) as u64;
        st.peak_bandwidth = st.peak_bandwidth.max(bw);
        st.target = st.target.max(duration.round().max(1.0) as u64);
        if frame_rate.is_some() {
            st.frame_rate = frame_rate.map(|r| (r * 1000.0).round() / 1000.0);
        }
        st.segments.push_back(segment);
        while st.segments.len() > cfg.segment_count + cfg.segment_keep {
            if let Some(old) = st.segments.pop_front() {
                if old.discontinuity {
                    st.discontinuity_seq += 1;
                }
            }
        }
        let in_use: Vec<Arc<str>> = st.segments.iter().filter_map(|s| s.init.clone()).collect();
        let current = self.init.clone();
        st.inits
            .retain(|k, _| in_use.contains(k) || current.as_ref() == Some(k));
        drop(st);
        self.out.ready.send_replace(true);
    }

    fn finish(&mut self) {
        self.cut(None);
    }
}

/// Formats a wall-clock time as RFC 3339 with milliseconds in UTC, as EXT-X-PROGRAM-DATE-TIME wants.
fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sluice_media::{CodecId, Track};

    fn stream(variant: Variant) -> Arc<HlsStream> {
        let (ready, _) = watch::channel(false);
        Arc::new(HlsStream {
            config: HlsConfig {
                variant,
                segment_duration: Duration::from_secs(1),
                segment_count: 3,
                segment_keep: 1,
                ..Default::default()
            },
            state: RwLock::new(State {
                target: 1,
                ..Default::default()
            }),
            ready,
            closed: AtomicBool::new(false),
        })
    }

    fn info(discontinuity: bool) -> Arc<StreamInfo> {
        let rec = Bytes::from_static(include_bytes!("../../codec/testdata/ffmpeg_x264_640x360.avcc"));
        Arc::new(StreamInfo {
            tracks: vec![
                Track::video(0, CodecId::H264, rec, 640, 360),
                Track::audio(1, CodecId::Aac, Bytes::from_static(&[0x11, 0x90]), 48_000, 2),
            ],
            epoch: discontinuity as u64,
            discontinuity,
            started_at: SystemTime::now(),
        })
    }

    /// Feeds `secs` seconds of 30 fps video (keyframe every second) and 48 kHz AAC from `t0`.
    fn feed(seg: &mut Segmenter, t0: i64, secs: i64) {
        for i in 0..secs * 30 {
            let dts = t0 + i * 3000;
            let key = i % 30 == 0;
            let nal: &'static [u8] = if key {
                &[0, 0, 0, 2, 0x65, 0x88]
            } else {
                &[0, 0, 0, 2, 0x41, 0x9a]
            };
            seg.frame(&Frame::new(0, dts, dts, key, Bytes::from_static(nal)));
            if i % 2 == 0 {
                seg.frame(&Frame::new(1, dts, dts, true, Bytes::from_static(&[0x21, 0x10])));
            }
        }
    }

    fn tag_count(text: &str, tag: &str) -> usize {
        text.lines().filter(|l| l.starts_with(tag)).count()
    }

    fn line_count(text: &str, line: &str) -> usize {
        text.lines().filter(|l| *l == line).count()
    }

    /// Keyframe-cut one-second segments, a sliding window of three, and a publisher restart that
    /// brings EXT-X-DISCONTINUITY, a new EXT-X-MAP and, once it slides out, the sequence count.
    #[test]
    fn window_discontinuity_and_maps() {
        let out = stream(Variant::Fmp4);
        let mut seg = Segmenter::new(out.clone(), "live/x".into());
        seg.start(info(false));
        feed(&mut seg, 0, 5);
        let p = out.playlist("stream.m3u8").unwrap();
        assert_eq!(tag_count(&p, "#EXTINF:1.00000"), 3, "{p}");
        assert!(p.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{p}");
        assert!(p.contains("#EXT-X-TARGETDURATION:1\n"), "{p}");
        assert_eq!(tag_count(&p, "#EXT-X-PROGRAM-DATE-TIME:"), 3);
        assert_eq!(tag_count(&p, "#EXT-X-MAP:"), 1);

        // The publisher comes back with a new timeline.
        seg.start(info(true));
        feed(&mut seg, 900_000, 3);
        let p = out.playlist("stream.m3u8").unwrap();
        assert_eq!(line_count(&p, "#EXT-X-DISCONTINUITY"), 1, "{p}");
        assert_eq!(tag_count(&p, "#EXT-X-MAP:"), 2, "{p}");
        assert!(p.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0\n"), "{p}");
        // Every segment and init segment the playlist names can be fetched.
        for line in p.lines() {
            let name = line
                .strip_prefix("#EXT-X-MAP:URI=\"")
                .map(|l| l.trim_end_matches('"'))
                .unwrap_or(line);
            if !line.starts_with('#') || line.starts_with("#EXT-X-MAP") {
                assert!(out.file(name).is_some(), "{name} listed but not served");
            }
        }
        // PROGRAM-DATE-TIME never goes back, even across the restart.
        let pdts: Vec<&str> = p
            .lines()
            .filter_map(|l| l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:"))
            .collect();
        assert!(pdts.windows(2).all(|w| w[0] < w[1]), "{pdts:?}");
        // Once the discontinuity slides out of the window, the sequence counts it.
        feed(&mut seg, 900_000 + 3 * 90_000, 4);
        let p = out.playlist("stream.m3u8").unwrap();
        assert!(p.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{p}");
        assert_eq!(line_count(&p, "#EXT-X-DISCONTINUITY"), 0, "{p}");
        let index = out.playlist("index.m3u8").unwrap();
        assert!(
            index.contains("CODECS=\"avc1.64001e,mp4a.40.2\"") && index.contains("RESOLUTION=640x360"),
            "{index}"
        );
    }

    #[test]
    fn mpegts_segments_start_with_tables() {
        let out = stream(Variant::MpegTs);
        let mut seg = Segmenter::new(out.clone(), "live/x".into());
        seg.start(info(false));
        feed(&mut seg, 0, 3);
        let p = out.playlist("stream.m3u8").unwrap();
        let name = p.lines().find(|l| l.ends_with(".ts")).unwrap();
        let (data, ct) = out.file(name).unwrap();
        assert_eq!(ct, "video/mp2t");
        assert_eq!(data.len() % 188, 0);
        // PAT first (PID 0), then the PMT.
        assert_eq!((data[0], data[1] & 0x1f, data[2]), (0x47, 0, 0));
        assert_eq!(tag_count(&p, "#EXT-X-MAP:"), 0);
    }

    #[test]
    fn date_format() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339_millis(t), "2026-11-18T11:06:40.123Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }
}
