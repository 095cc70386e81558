//! The packaging task: one tokio task per live path reads a core [`Reader`] and drives the
//! sans-IO [`Segmenter`] with the wall clock, naming what comes out and putting it in the
//! [`HlsStream`]'s store. All cutting and timing rules live in the segmenter.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sluice_container::fmp4::codec_string;
use sluice_container::segmenter::{Chunk, Format, Segmenter, SegmenterConfig, SegmenterOutput};
use sluice_media::{CodecId, Event, Frame, MediaKind, ReadError, Reader, StreamInfo, Track};

use crate::store::{HlsStream, Part, Segment};
use crate::{HlsConfig, Variant};

/// Starts the segmenter task for `reader`; it runs until the path ends or the stream is removed.
pub fn spawn(reader: Reader, config: HlsConfig) -> Arc<HlsStream> {
    spawn_after(reader, config, None)
}

/// [`spawn`], taking over from `previous` (the stream of an earlier packager of the same path,
/// which restarted): segment numbers and the discontinuity sequence go on from its, so that
/// its players, whose next blocking reload names a segment after its last, carry on.
pub fn spawn_after(reader: Reader, config: HlsConfig, previous: Option<&HlsStream>) -> Arc<HlsStream> {
    let stream = Arc::new(HlsStream::new(config));
    let next = previous.map(|p| stream.take_over(p));
    let s = stream.clone();
    tokio::spawn(async move {
        let path = reader.path().to_owned();
        let mut packager = Packager::new(s.clone(), path.clone());
        if let Some(n) = next {
            packager.segmenter.continue_from(n);
        }
        let mut reader = reader;
        // Wakes the loop once a second to see whether the stream was closed (one timer for the
        // task's life, not one armed and cancelled per frame).
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if s.is_closed() {
                break;
            }
            let ev = tokio::select! {
                ev = reader.recv() => ev,
                _ = tick.tick() => continue,
            };
            match ev {
                Ok(Event::Start(info)) => packager.start(&info),
                Ok(Event::Frame(f)) => packager.frame(&f, SystemTime::now()),
                Err(ReadError::Ended) | Err(ReadError::NoStream { .. }) => break,
                Err(e) => {
                    tracing::warn!(%path, "HLS segmenter stopped: {e}");
                    break;
                }
            }
        }
        packager.finish();
        s.close();
        tracing::debug!(%path, "HLS segmenter ended");
    });
    stream
}

/// Feeds one path's events to a [`Segmenter`] and files its output in an [`HlsStream`].
pub(crate) struct Packager {
    out: Arc<HlsStream>,
    path: String,
    /// Makes file names unique per task, so a player never mixes two runs' segments.
    token: String,
    segmenter: Segmenter,
    /// Epoch and tracks of the stream being segmented.
    current: Option<(u64, Vec<Track>)>,
    /// Number of the next part (LL-HLS): part names count on across segments and streams, so
    /// the preload hint can name the next part before anyone knows which segment it opens.
    next_part: u64,
    /// When the packager started.
    opened: std::time::Instant,
    /// The wall clock of the frame being filed.
    now: SystemTime,
}

impl Packager {
    pub(crate) fn new(out: Arc<HlsStream>, path: String) -> Self {
        let token = out.token.clone();
        let cfg = out.config();
        let format = match cfg.variant {
            Variant::Fmp4 | Variant::LowLatency => Format::Fmp4,
            Variant::MpegTs => Format::MpegTs,
        };
        let mut sc = SegmenterConfig::new(format, cfg.segment_duration);
        if cfg.variant == Variant::LowLatency {
            sc = sc.with_parts(cfg.part_duration);
        }
        sc.max_bytes = cfg.max_segment_bytes;
        // One fragment per track: DASH serves each track's from the same bytes.
        sc.per_track = format == Format::Fmp4;
        Packager {
            segmenter: Segmenter::new(sc),
            out,
            path,
            token,
            current: None,
            next_part: 0,
            opened: std::time::Instant::now(),
            now: SystemTime::now(),
        }
    }

    /// A stream (re)starts. The same stream announced again with the same tracks (a derived
    /// track HLS does not take came or went) changes nothing.
    pub(crate) fn start(&mut self, info: &StreamInfo) {
        let tracks = select_tracks(info);
        if !info.discontinuity
            && self
                .current
                .as_ref()
                .is_some_and(|(epoch, t)| *epoch == info.epoch && *t == tracks)
        {
            return;
        }
        if let Err(e) = self.segmenter.start(&tracks) {
            tracing::warn!(path = %self.path, "HLS cannot carry this stream: {e}");
        }
        let codecs: Vec<String> = tracks
            .iter()
            .filter(|t| self.segmenter.carries(t.id))
            .filter_map(codec_string)
            .collect();
        let resolution = info
            .video()
            .map(|v| (v.width, v.height))
            .filter(|(w, h)| *w > 0 && *h > 0);
        // What the previous stream left is filed before the new stream's init segment.
        let mut init = None;
        let mut dash = None;
        while let Some(out) = self.segmenter.poll_output() {
            match out {
                SegmenterOutput::Init(i) => {
                    dash = Some(crate::dash::Generation::new(i.generation, i.tracks));
                    init = Some((self.init_name(i.generation), i.bytes));
                }
                other => self.file(other),
            }
        }
        self.out.begin_stream(codecs.join(","), resolution, init, dash);
        self.out.notify();
        self.current = Some((info.epoch, tracks));
    }

    pub(crate) fn frame(&mut self, f: &Frame, now: SystemTime) {
        self.now = now;
        self.segmenter.push_frame(f, now);
        // The parts this frame completes are servable once filed: readiness is measured from
        // its arrival in the server (the reader's queue and the muxing included).
        let mut parts = 0;
        let mut filed = false;
        while let Some(out) = self.segmenter.poll_output() {
            parts += usize::from(matches!(out, SegmenterOutput::Part(_)));
            filed = true;
            self.file(out);
        }
        if filed {
            self.out.notify();
        }
        // Frames replayed from the GOP cache when the packager starts arrived before it: their
        // parts are not a measure of readiness.
        if f.arrived >= self.opened {
            for _ in 0..parts {
                let d = f.arrived.elapsed();
                self.out.readiness.record(d);
                crate::readiness::ALL_PARTS.record(d);
            }
        }
    }

    pub(crate) fn finish(&mut self) {
        self.segmenter.finish();
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(out) = self.segmenter.poll_output() {
            self.file(out);
        }
        self.out.notify();
    }

    fn init_name(&self, generation: u64) -> Arc<str> {
        format!("init-{}-{generation}.mp4", self.token).into()
    }

    fn file(&mut self, out: SegmenterOutput) {
        match out {
            SegmenterOutput::Segment(c) => self.file_segment(c),
            SegmenterOutput::Part(c) => self.file_part(c),
            SegmenterOutput::Init(i) => {
                // Only `start` produces init segments, and it files them itself.
                tracing::debug!(path = %self.path, generation = i.generation, "unexpected init segment");
            }
        }
    }

    fn part_name(&self, n: u64) -> String {
        format!("part-{}-{n}.m4s", self.token)
    }

    fn file_part(&mut self, c: Chunk) {
        let part = Part {
            seq: c.sequence,
            index: c.part,
            name: self.part_name(self.next_part),
            duration: c.duration(),
            independent: c.independent,
            discontinuity: c.discontinuity,
            init: c.init.map(|g| self.init_name(g)),
            data: c.bytes,
            pieces: c.pieces,
        };
        self.next_part += 1;
        self.out.push_part(part, self.part_name(self.next_part));
    }

    fn file_segment(&mut self, c: Chunk) {
        let ext = match self.out.config().variant {
            Variant::Fmp4 | Variant::LowLatency => "m4s",
            Variant::MpegTs => "ts",
        };
        let duration = c.duration();
        let frame_rate = (c.video_frames > 1).then(|| f64::from(c.video_frames) / duration);
        let segment = Segment {
            seq: c.sequence,
            name: format!("seg-{}-{}.{ext}", self.token, c.sequence),
            data: c.bytes,
            duration,
            pdt: c.program_date_time,
            discontinuity: c.discontinuity,
            init: c.init.map(|g| self.init_name(g)),
            parts: Vec::new(),
            start_dts: c.start_dts,
            duration_ticks: c.duration_ticks,
            generation: c.init.unwrap_or(0),
            pieces: c.pieces,
            completed: self.now,
        };
        self.out.push_segment(segment, frame_rate);
    }
}

/// The tracks HLS carries: the first video track and one audio track, AAC first (derived tracks
/// included, so an AAC conversion of an Opus publisher is taken), then MP3, then the rest.
fn select_tracks(info: &StreamInfo) -> Vec<Track> {
    let rank = |t: &Track| match t.codec {
        CodecId::Aac => 0,
        CodecId::Mp3 => 1,
        CodecId::Opus => 2,
        _ => 3,
    };
    let video = info.video().cloned();
    let audio = info
        .tracks
        .iter()
        .filter(|t| t.kind() == MediaKind::Audio)
        .min_by_key(|t| rank(t))
        .cloned();
    video.into_iter().chain(audio).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PlaylistError, PlaylistQuery};
    use bytes::Bytes;

    fn stream(variant: Variant) -> Arc<HlsStream> {
        Arc::new(HlsStream::new(HlsConfig {
            variant,
            segment_duration: Duration::from_secs(1),
            segment_count: 3,
            segment_keep: 1,
            ..Default::default()
        }))
    }

    fn info(epoch: u64, discontinuity: bool) -> Arc<StreamInfo> {
        let rec = Bytes::from_static(include_bytes!("../../codec/testdata/ffmpeg_x264_640x360.avcc"));
        Arc::new(StreamInfo {
            tracks: vec![
                Track::video(0, CodecId::H264, rec, 640, 360),
                Track::audio(1, CodecId::Aac, Bytes::from_static(&[0x11, 0x90]), 48_000, 2),
            ],
            epoch,
            discontinuity,
            started_at: SystemTime::now(),
        })
    }

    /// Feeds `secs` seconds of 30 fps video (keyframe every second) and 48 kHz AAC from `t0`.
    fn feed(p: &mut Packager, t0: i64, secs: i64) {
        feed_at(p, t0, secs, None);
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
        let mut p = Packager::new(out.clone(), "live/x".into());
        p.start(&info(0, false));
        feed(&mut p, 0, 5);
        let pl = out.playlist("stream.m3u8").unwrap();
        assert_eq!(tag_count(&pl, "#EXTINF:1.00000"), 3, "{pl}");
        assert!(pl.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{pl}");
        assert!(pl.contains("#EXT-X-TARGETDURATION:1\n"), "{pl}");
        assert_eq!(tag_count(&pl, "#EXT-X-PROGRAM-DATE-TIME:"), 3);
        assert_eq!(tag_count(&pl, "#EXT-X-MAP:"), 1);
        let name = pl.lines().find(|l| l.starts_with("seg-")).unwrap();
        assert!(name.ends_with("-1.m4s"), "{name}");
        assert!(
            pl.contains(&format!("#EXT-X-MAP:URI=\"init-{}-1.mp4\"", p.token)),
            "{pl}"
        );

        // The same stream announced again (a derived track came) changes nothing.
        p.start(&info(0, false));
        feed(&mut p, 5 * 90_000, 1);
        let pl = out.playlist("stream.m3u8").unwrap();
        assert_eq!(line_count(&pl, "#EXT-X-DISCONTINUITY"), 0, "{pl}");
        assert_eq!(tag_count(&pl, "#EXTINF:1.00000"), 3, "{pl}");

        // The publisher comes back with a new timeline.
        p.start(&info(1, true));
        feed(&mut p, 900_000, 3);
        let pl = out.playlist("stream.m3u8").unwrap();
        assert_eq!(line_count(&pl, "#EXT-X-DISCONTINUITY"), 1, "{pl}");
        assert_eq!(tag_count(&pl, "#EXT-X-MAP:"), 2, "{pl}");
        assert!(pl.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0\n"), "{pl}");
        // Every segment and init segment the playlist names can be fetched.
        for line in pl.lines() {
            let name = line
                .strip_prefix("#EXT-X-MAP:URI=\"")
                .map(|l| l.trim_end_matches('"'))
                .unwrap_or(line);
            if !line.starts_with('#') || line.starts_with("#EXT-X-MAP") {
                assert!(out.file(name).is_some(), "{name} listed but not served");
            }
        }
        // PROGRAM-DATE-TIME never goes back, even across the restart.
        let pdts: Vec<&str> = pl
            .lines()
            .filter_map(|l| l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:"))
            .collect();
        assert!(pdts.windows(2).all(|w| w[0] < w[1]), "{pdts:?}");
        // Once the discontinuity slides out of the window, the sequence counts it.
        feed(&mut p, 900_000 + 3 * 90_000, 4);
        let pl = out.playlist("stream.m3u8").unwrap();
        assert!(pl.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{pl}");
        assert_eq!(line_count(&pl, "#EXT-X-DISCONTINUITY"), 0, "{pl}");
        // The first stream's init segment is gone with its segments.
        assert!(out.file(&format!("init-{}-1.mp4", p.token)).is_none());
        let index = out.playlist("index.m3u8").unwrap();
        assert!(
            index.contains("CODECS=\"avc1.64001e,mp4a.40.2\"") && index.contains("RESOLUTION=640x360"),
            "{index}"
        );
        assert!(index.contains("FRAME-RATE=30.000"), "{index}");
        // The end of the path ends the playlist.
        p.finish();
        out.close();
        assert!(out.playlist("stream.m3u8").unwrap().ends_with("#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn mpegts_segments_start_with_tables() {
        let out = stream(Variant::MpegTs);
        let mut p = Packager::new(out.clone(), "live/x".into());
        p.start(&info(0, false));
        feed(&mut p, 0, 3);
        let pl = out.playlist("stream.m3u8").unwrap();
        assert!(pl.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n"), "{pl}");
        let name = pl.lines().find(|l| l.ends_with(".ts")).unwrap();
        let (data, ct) = out.file(name).unwrap();
        assert_eq!(ct, "video/mp2t");
        assert_eq!(data.len() % 188, 0);
        // PAT first (PID 0), then the PMT.
        assert_eq!((data[0], data[1] & 0x1f, data[2]), (0x47, 0, 0));
        assert_eq!(tag_count(&pl, "#EXT-X-MAP:"), 0);
        assert_eq!(out.segments().iter().map(|s| s.1).collect::<Vec<_>>(), [1.0, 1.0]);
    }

    #[test]
    fn one_video_and_one_audio_track_aac_first() {
        let mut i = StreamInfo {
            tracks: info(0, false).tracks.clone(),
            epoch: 0,
            discontinuity: false,
            started_at: SystemTime::now(),
        };
        i.tracks
            .insert(1, Track::audio(130, CodecId::Opus, Bytes::new(), 48_000, 2));
        let picked: Vec<(u8, CodecId)> = select_tracks(&i).iter().map(|t| (t.id, t.codec)).collect();
        assert_eq!(picked, [(0, CodecId::H264), (1, CodecId::Aac)]);
    }

    fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
        let rest = line.split(&format!("{name}=")).nth(1)?;
        let v = rest.split(',').next()?;
        Some(v.trim_matches('"'))
    }

    /// A packager that replaces another on the same path (it restarted) numbers its segments
    /// on from the other's, with the discontinuity sequence one past the other's: a player's
    /// next blocking reload names a segment the new stream will make.
    #[test]
    fn a_packager_taking_over_goes_on_from_the_numbers() {
        let old = stream(Variant::LowLatency);
        let mut p = Packager::new(old.clone(), "live/x".into());
        p.start(&info(0, false));
        feed(&mut p, 0, 4);
        let (last, _) = old.last_position().unwrap();
        let new = Arc::new(HlsStream::new(old.config().clone()));
        let next = new.take_over(&old);
        assert_eq!(next, last + 1);
        let mut q = Packager::new(new.clone(), "live/x".into());
        q.segmenter.continue_from(next);
        q.start(&info(0, false));
        feed(&mut q, 4 * 90_000, 3);
        let pl = new.playlist("stream.m3u8").unwrap();
        let first = pl.lines().find(|l| l.starts_with("seg-")).unwrap();
        let seqs: Vec<u64> = new.segments().iter().map(|s| s.0).collect();
        assert_eq!(seqs.first().copied(), Some(next), "{pl}");
        assert!(first.ends_with(&format!("-{next}.m4s")), "{pl}");
        assert!(pl.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{pl}");
    }

    /// 30 fps with a keyframe a second and AAC (every other video frame); with `wall`, the wall
    /// clock follows the media time from there (frames arrive in real time), otherwise it is
    /// the clock's now.
    fn feed_at(p: &mut Packager, t0: i64, secs: i64, wall: Option<SystemTime>) {
        for i in 0..secs * 30 {
            let dts = t0 + i * 3000;
            let key = i % 30 == 0;
            let nal: &'static [u8] = if key {
                &[0, 0, 0, 2, 0x65, 0x88]
            } else {
                &[0, 0, 0, 2, 0x41, 0x9a]
            };
            let now = wall.map_or_else(SystemTime::now, |w| {
                w + Duration::from_nanos((i * 3000) as u64 * 1_000_000_000 / 90_000)
            });
            p.frame(&Frame::new(0, dts, dts, key, Bytes::from_static(nal)), now);
            if i % 2 == 0 {
                p.frame(
                    &Frame::new(1, dts, dts, true, Bytes::from_static(&[0x21, 0x10])),
                    now,
                );
            }
        }
    }

    /// Low-latency DASH: the template's timeline holds while frames come in real time; a
    /// publisher that stalls two seconds (its timestamps going on from where they were) puts
    /// the segments two seconds behind it, and the MPD anchors a new Period where they are.
    #[test]
    fn ll_dash_timeline_is_anchored_again_after_a_stall() {
        let out = stream(Variant::LowLatency);
        let mut p = Packager::new(out.clone(), "live/x".into());
        p.start(&info(0, false));
        let t0 = SystemTime::now() - Duration::from_secs(30);
        feed_at(&mut p, 0, 4, Some(t0));
        let mpd = out.mpd("/~sluice/time").unwrap();
        assert_eq!(mpd.matches("<Period ").count(), 1, "{mpd}");
        assert!(mpd.contains("duration=\"90000\" startNumber=\"0\""), "{mpd}");
        // Two seconds of nothing, then on in real time.
        feed_at(&mut p, 4 * 90_000, 4, Some(t0 + Duration::from_secs(6)));
        let mpd = out.mpd("/~sluice/time").unwrap();
        assert!(mpd.contains("<Period id=\"1-1\" start=\"PT"), "{mpd}");
        // The new Period starts at the first segment after the stall, about 6 s after the first.
        let start = mpd.split("<Period id=\"1-1\" start=\"PT").nth(1).unwrap();
        let start: f64 = start.split('S').next().unwrap().parse().unwrap();
        assert!((5.8..6.3).contains(&start), "{start} in {mpd}");
        let sn = mpd.split("<Period id=\"1-1\"").nth(1).unwrap();
        assert!(
            sn.contains("startNumber=\"4\" presentationTimeOffset=\"360000\""),
            "{mpd}"
        );
    }

    /// A blocking reload for the part after the last of a segment that is complete is a request
    /// for Part 0 of the next segment (RFC 8216bis 6.2.5.2): held until that part exists, and
    /// answered with it listed.
    #[tokio::test]
    async fn reload_past_the_last_part_of_a_complete_segment_waits_for_the_next_one() {
        let out = stream(Variant::LowLatency);
        let mut p = Packager::new(out.clone(), "live/x".into());
        p.start(&info(0, false));
        feed(&mut p, 0, 4);
        // Frames of the fifth second, one at a time, until the one that completes segment 3:
        // its last part and the segment are filed in that one step.
        let mut i = 0;
        while out.segments().last().map(|s| s.0) != Some(3) {
            let dts = 4 * 90_000 + i * 3000;
            let nal: &'static [u8] = if i == 0 {
                &[0, 0, 0, 2, 0x65, 0x88]
            } else {
                &[0, 0, 0, 2, 0x41, 0x9a]
            };
            p.frame(
                &Frame::new(0, dts, dts, i == 0, Bytes::from_static(nal)),
                SystemTime::now(),
            );
            p.frame(
                &Frame::new(1, dts, dts, true, Bytes::from_static(&[0x21, 0x10])),
                SystemTime::now(),
            );
            i += 1;
            assert!(
                i < 5,
                "segment 3 not complete after {i} frames of the next second"
            );
        }
        let q = |msn, part| PlaylistQuery {
            msn: Some(msn),
            part: Some(part),
            skip: false,
        };
        let quick = Duration::from_millis(50);
        // Parts of segment 3 and the segment itself: there already.
        for ask in [
            q(3, 0),
            q(3, 4),
            PlaylistQuery {
                part: None,
                ..q(3, 0)
            },
        ] {
            assert!(tokio::time::timeout(quick, out.playlist_for("stream.m3u8", ask))
                .await
                .is_ok());
        }
        // The part after segment 3's last (5 parts of 200 ms) is 4.0: not yet.
        for ask in [q(3, 5), q(4, 0)] {
            assert!(
                tokio::time::timeout(quick, out.playlist_for("stream.m3u8", ask))
                    .await
                    .is_err(),
                "{ask:?} answered before part 4.0 exists"
            );
        }
        let (held, ()) = tokio::join!(out.playlist_for("stream.m3u8", q(3, 5)), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            feed(&mut p, 4 * 90_000 + i * 3000, 1);
        });
        let held = held.unwrap();
        let after = held.split_once("-3.m4s\n").map_or("", |(_, tail)| tail);
        assert!(after.contains("#EXT-X-PART:"), "part 4.0 listed: {held}");
    }

    /// LL-HLS: parts listed for the last segments and after them, every part named can be
    /// fetched, the preload hint names the next part, blocking reload holds until the part
    /// exists, and a delta update skips the oldest segments.
    #[tokio::test]
    async fn low_latency_parts_hint_blocking_and_skip() {
        let out = Arc::new(HlsStream::new(HlsConfig {
            segment_count: 12,
            ..Default::default()
        }));
        let mut p = Packager::new(out.clone(), "live/x".into());
        p.start(&info(0, false));
        feed(&mut p, 0, 10);
        let pl = out.playlist("stream.m3u8").unwrap();
        assert!(pl.starts_with("#EXTM3U\n#EXT-X-VERSION:9\n"), "{pl}");
        assert!(pl.contains("#EXT-X-PART-INF:PART-TARGET=0.20000\n"), "{pl}");
        assert!(
            pl.contains(
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.000,PART-HOLD-BACK=0.600\n"
            ),
            "{pl}"
        );
        let parts: Vec<&str> = pl.lines().filter(|l| l.starts_with("#EXT-X-PART:")).collect();
        // Three target durations of parts at least, not the whole window.
        assert!((15..=25).contains(&parts.len()), "{pl}");
        for l in &parts {
            let d: f64 = attr(l, "DURATION").unwrap().parse().unwrap();
            assert!((0.17..=0.2).contains(&d), "{l}");
            assert!(out.file(attr(l, "URI").unwrap()).is_some(), "{l}");
        }
        assert_eq!(
            parts.iter().filter(|l| l.ends_with("INDEPENDENT=YES")).count(),
            parts.len().div_ceil(5),
            "{pl}"
        );
        let hint = pl
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
            .unwrap();
        let hint = hint.trim_end_matches('"').to_owned();
        assert!(out.file(&hint).is_none());

        // The next part of the live segment: held until it exists, then listed.
        let last = out.segments().last().unwrap().0;
        let open = pl
            .lines()
            .rev()
            .take_while(|l| !l.starts_with("#EXTINF"))
            .filter(|l| l.starts_with("#EXT-X-PART:"))
            .count() as u64;
        let q = PlaylistQuery {
            msn: Some(last + 1),
            part: Some(open),
            skip: false,
        };
        let (held, fetched, ()) = tokio::join!(
            out.playlist_for("stream.m3u8", q),
            out.file_when_ready(&hint),
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                feed(&mut p, 10 * 90_000, 1);
            }
        );
        let held = held.unwrap();
        assert!(held.contains(&format!("URI=\"{hint}\"")), "{held}");
        assert!(fetched.unwrap().is_some());

        // Requests the spec refuses.
        let far = PlaylistQuery {
            msn: Some(last + 4),
            part: None,
            skip: false,
        };
        assert!(matches!(
            out.playlist_for("stream.m3u8", far).await,
            Err(PlaylistError::BadRequest(_))
        ));
        assert!(matches!(
            PlaylistQuery::parse(Some("_HLS_part=1")),
            Err(PlaylistError::BadRequest(_))
        ));
        assert_eq!(
            PlaylistQuery::parse(Some("_HLS_msn=4&_HLS_part=1&_HLS_skip=YES&token=x")).unwrap(),
            PlaylistQuery {
                msn: Some(4),
                part: Some(1),
                skip: true
            }
        );

        // A delta update: the oldest segments left out, the last six target durations kept.
        let q = PlaylistQuery {
            skip: true,
            ..Default::default()
        };
        let delta = out.playlist_for("stream.m3u8", q).await.unwrap();
        let full = out.playlist("stream.m3u8").unwrap();
        let n = |t: &str| t.lines().filter(|l| l.starts_with("#EXTINF")).count();
        let skipped: usize = attr(
            delta.lines().find(|l| l.starts_with("#EXT-X-SKIP:")).unwrap(),
            "SKIPPED-SEGMENTS",
        )
        .unwrap()
        .parse()
        .unwrap();
        assert_eq!(n(&delta) + skipped, n(&full), "{delta}");
        assert!(n(&delta) >= 6 && skipped > 0, "{delta}");

        // Old parts are released as the window slides.
        let kept: usize = out.state.read().segments.iter().map(|s| s.parts.len()).sum();
        assert!(kept <= 25, "{kept}");
    }
}
