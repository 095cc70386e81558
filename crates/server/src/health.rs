//! Stream health per path, computed from the media itself: the `health` path output.
//!
//! One task per live path (an output, so it cannot miss a publish) reads the publisher's own
//! tracks and keeps a [`PathHealth`] in the shared [`HealthStore`] that the API and the metrics
//! read:
//!
//! - `stream`: `starting`, `flowing`, `stalled` (no media for `stall_after`, found by a timer,
//!   not only when frames arrive), `offline` (the publisher left; the path waits through its
//!   grace period);
//! - `audio`, `video`: `present`, or `absent` (no such track, or no frame of it for
//!   `stall_after` while the rest of the stream flows);
//! - `silence`: `sound`, `silent` (the decoded level stayed below `silence_level` for
//!   `silence_after` of audio), or `unknown` (no audio, a codec that is not decoded, detection
//!   off, or audio that does not decode); AAC (one frame measured in 16) and Opus (every
//!   frame) are decoded by [`sluice_audio::LevelMeter`], the one real cost here;
//! - `timestamps`: `steady`, or `jumping` (a DTS jump of more than 1 s forward or any backward
//!   on a track within the last 10 s), with a count of jumps;
//! - figures: video frames per second, keyframe interval and GOP length in frames (over the
//!   last seconds of media time), bitrate in, of every track and of the audio and video tracks
//!   (over the last 5 s), the audio level of the last second. The API shows the per-track ones
//!   beside each track's codec details.
//!
//! Each change of a state is logged at info and emitted as [`ServerEvent::Health`]. While the
//! stream is stalled or offline the other states keep their last value (the stall is the news).
//! The logic is the sans-IO [`Monitor`]: frames, levels and the time in, states and changes
//! out, so it is tested on synthetic frames with a manual clock; [`spawn`] is its thin task.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use sluice_audio::{Level, LevelMeter};
use sluice_media::events::{EventBus, ServerEvent};
use sluice_media::{CodecId, Event, Frame, Reader, StreamInfo, TrackId, CLOCK_RATE};
use utoipa::ToSchema;

use crate::config::PathHealthConfig;

/// How often the task looks at the clock (stalls, absent tracks) and refreshes the store.
const TICK: Duration = Duration::from_millis(250);
/// Frame rate and keyframe interval are measured over this much media time; bitrate over this
/// much wall time.
const WINDOW_TICKS: i64 = 5 * CLOCK_RATE;
const BITRATE_SECONDS: u64 = 5;
/// Keyframes kept for the interval (their mean spacing), and how far back in media time.
const KEYFRAMES: usize = 6;
const KEYFRAME_SPAN_TICKS: i64 = 30 * CLOCK_RATE;
/// A DTS step larger than this (or any step back) on one track is a timestamp jump.
const JUMP_TICKS: i64 = CLOCK_RATE;
/// `timestamps` goes back to `steady` after this long without a jump.
const JUMP_CLEAR: Duration = Duration::from_secs(10);
/// AAC is measured one frame in this many (341 ms of 48 kHz audio), with the three frames
/// before each decoded for the decoder's state: a quarter of the decoding of every frame, the
/// largest single cost of the checks (a third of an idle LL-HLS path's CPU, under `perf`), for
/// the same levels of those frames (`sluice_audio::LevelMeter::sampled`). Opus is measured
/// whole.
const METER_EVERY: u32 = 16;

/// The reported audio level is the RMS of this much audio.
const LEVEL_BLOCK: Duration = Duration::from_secs(1);

/// Whether media flows on the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Flow {
    /// The path went live; no frame yet.
    Starting,
    Flowing,
    /// A publisher is connected but sent no media for `stall_after`.
    Stalled,
    /// The publisher left; readers wait through the grace period.
    Offline,
}

/// Whether a kind of track (audio, video) is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// Not judged yet (the track's first frame has not come, nor `stall_after` passed).
    Unknown,
    Present,
    Absent,
}

/// Whether the audio is silent, from its decoded level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Silence {
    /// Not judged: no audio, a codec that is not decoded, detection off, or not yet known.
    Unknown,
    Sound,
    Silent,
}

/// Whether the timestamps run smoothly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Timestamps {
    Steady,
    /// A jump within the last 10 s.
    Jumping,
}

macro_rules! names {
    ($($t:ident { $($v:ident => $n:literal),* })*) => {$(
        impl $t {
            /// The state's name, as in the API, events and logs.
            pub fn name(self) -> &'static str {
                match self { $(Self::$v => $n),* }
            }
        }
    )*};
}

names! {
    Flow { Starting => "starting", Flowing => "flowing", Stalled => "stalled", Offline => "offline" }
    Presence { Unknown => "unknown", Present => "present", Absent => "absent" }
    Silence { Unknown => "unknown", Sound => "sound", Silent => "silent" }
    Timestamps { Steady => "steady", Jumping => "jumping" }
}

/// One path's health: the states and the figures behind them (the API's `health` of a path).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PathHealth {
    pub stream: Flow,
    /// Stalls since the path went live.
    pub stalls: u64,
    /// Milliseconds since the last frame (null before the first).
    pub last_frame_ms: Option<u64>,
    pub audio: Presence,
    pub audio_codec: Option<&'static str>,
    pub silence: Silence,
    /// Why `silence` is `unknown`, when it is.
    pub silence_detail: Option<String>,
    /// RMS level of the last second of decoded audio over every channel, in dBFS (-100 for
    /// digital silence); null when the audio is not decoded.
    pub audio_level_db: Option<f32>,
    /// Peak level of the same second, in dBFS.
    pub audio_peak_db: Option<f32>,
    /// How long the audio has been quieter than `silence_level`, in seconds of audio.
    pub quiet_s: f64,
    /// Audio frames that did not decode (corrupt, or not what the track announced).
    pub audio_decode_errors: u64,
    pub video: Presence,
    pub video_codec: Option<&'static str>,
    /// Video frames per second over the last 5 s of media time (null while no video flows).
    pub video_fps: Option<f64>,
    /// Mean spacing of the latest keyframes, in seconds (null before two keyframes).
    pub keyframe_interval_s: Option<f64>,
    /// Mean length of the latest GOPs, in video frames (null before two keyframes).
    pub gop_frames: Option<f64>,
    /// Media payload bits per second over the last 5 s (every track).
    pub bitrate_in: u64,
    /// Payload bits per second of the video track over the last 5 s.
    pub video_bitrate_in: u64,
    /// Payload bits per second of the audio track over the last 5 s.
    pub audio_bitrate_in: u64,
    /// The tracks the figures are of (the publisher's first video and audio track): the API
    /// puts them beside these tracks.
    #[serde(skip)]
    pub video_track: Option<TrackId>,
    #[serde(skip)]
    pub audio_track: Option<TrackId>,
    pub timestamps: Timestamps,
    /// DTS jumps (more than 1 s forward, or backward, on one track) since the path went live.
    pub timestamp_jumps: u64,
}

/// A change of one state: what the event and the log line say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The check: "stream", "audio", "video", "silence", "timestamps".
    pub what: &'static str,
    /// Its new state.
    pub state: &'static str,
    /// The figures behind it.
    pub detail: String,
}

/// The health state machine of one path (sans-IO): feed it the stream's starts, frames, audio
/// levels and the time; read its [`snapshot`](Self::snapshot) and drain its changes with
/// [`poll_change`](Self::poll_change).
pub struct Monitor {
    cfg: PathHealthConfig,
    changes: VecDeque<Change>,
    /// When the monitor started (bitrate buckets count seconds from here).
    origin: Instant,
    /// When the current stream started (or its publisher came back): the reference for
    /// stalls and absences before any frame.
    started: Instant,
    audio_track: Option<(TrackId, CodecId)>,
    video_track: Option<(TrackId, CodecId)>,

    flow: Flow,
    last_frame: Option<Instant>,
    stalls: u64,
    /// While offline: whether the timer has seen a publisher again.
    back: bool,

    audio: Presence,
    last_audio: Option<Instant>,
    video: Presence,
    last_video: Option<Instant>,

    silence: Silence,
    silence_detail: Option<String>,
    /// Whether this stream's audio is decoded for its level.
    metered: bool,
    quiet: Duration,
    block: LevelBlock,
    level: Option<(f32, f32)>,
    decode_errors: u64,
    last_decoded: Option<Instant>,

    /// Video DTS over the last [`WINDOW_TICKS`].
    video_dts: VecDeque<i64>,
    keyframes: VecDeque<i64>,
    /// Frames of the latest complete GOPs (as many as the keyframe intervals), and of the
    /// current one (None before the first keyframe).
    gops: VecDeque<u64>,
    gop_now: Option<u64>,
    /// Payload bytes per second: every track, the video track, the audio track.
    bytes: Buckets,
    video_bytes: Buckets,
    audio_bytes: Buckets,

    last_dts: Vec<(TrackId, i64)>,
    jumps: u64,
    last_jump: Option<Instant>,
    timestamps: Timestamps,
}

/// Levels summed over [`LEVEL_BLOCK`] of audio.
#[derive(Default)]
struct LevelBlock {
    sum_squares: f64,
    peak: f32,
    samples: u64,
    rate: u32,
}

impl Monitor {
    pub fn new(cfg: PathHealthConfig, now: Instant) -> Self {
        Monitor {
            cfg,
            changes: VecDeque::new(),
            origin: now,
            started: now,
            audio_track: None,
            video_track: None,
            flow: Flow::Starting,
            last_frame: None,
            stalls: 0,
            back: false,
            audio: Presence::Unknown,
            last_audio: None,
            video: Presence::Unknown,
            last_video: None,
            silence: Silence::Unknown,
            silence_detail: None,
            metered: false,
            quiet: Duration::ZERO,
            block: LevelBlock::default(),
            level: None,
            decode_errors: 0,
            last_decoded: None,
            video_dts: VecDeque::new(),
            keyframes: VecDeque::new(),
            gops: VecDeque::new(),
            gop_now: None,
            bytes: Buckets::default(),
            video_bytes: Buckets::default(),
            audio_bytes: Buckets::default(),
            last_dts: Vec::new(),
            jumps: 0,
            last_jump: None,
            timestamps: Timestamps::Steady,
        }
    }

    /// A new stream (the first, a publisher's return, or a codec change). `level` says whether
    /// its audio is decoded for its level (`Ok`) or why not.
    pub fn handle_start(&mut self, info: &StreamInfo, level: Result<(), String>, now: Instant) {
        self.started = now;
        self.audio_track = info.audio().map(|t| (t.id, t.codec));
        self.video_track = info.video().map(|t| (t.id, t.codec));
        // A new stream's timestamps start their own run; its first frames are no jump.
        self.last_dts.clear();
        self.video_dts.clear();
        self.keyframes.clear();
        self.gops.clear();
        self.gop_now = None;
        if self.audio_track.is_none() {
            self.set_audio(Presence::Absent, "the stream has no audio track".into());
        }
        self.handle_meter(level, now);
        if self.video_track.is_none() {
            self.set_video(Presence::Absent, "the stream has no video track".into());
        }
    }

    /// Whether the audio is (now) decoded for its level (`Ok`), or why not: at a stream's
    /// start, and when `silence_detection` changes.
    pub fn handle_meter(&mut self, level: Result<(), String>, now: Instant) {
        self.quiet = Duration::ZERO;
        self.block = LevelBlock::default();
        self.level = None;
        self.last_decoded = Some(now);
        self.metered = false;
        match (self.audio_track, level) {
            (None, _) => self.set_silence(Silence::Unknown, "no audio track".into()),
            (Some(_), Ok(())) => self.metered = true,
            (Some(_), Err(why)) => self.set_silence(Silence::Unknown, why),
        }
    }

    /// New thresholds (a configuration reload); they apply from the next frame and tick.
    pub fn set_config(&mut self, cfg: PathHealthConfig) {
        self.cfg = cfg;
    }

    /// One frame of the publisher's tracks, as it arrives.
    pub fn handle_frame(&mut self, frame: &Frame, now: Instant) {
        if self.flow != Flow::Flowing {
            let detail = match (self.flow, self.last_frame) {
                (Flow::Stalled, Some(t)) => format!(
                    "media again after {:.1} s without",
                    now.saturating_duration_since(t).as_secs_f64()
                ),
                _ => "media arrives".to_owned(),
            };
            self.set_flow(Flow::Flowing, detail);
        }
        self.last_frame = Some(now);
        let (second, len) = (self.second(now), frame.data.len() as u64);
        self.bytes.add(second, len);
        self.check_timestamps(frame, now);
        if let Some((id, codec)) = self.audio_track {
            if frame.track == id {
                self.audio_bytes.add(second, len);
                self.last_audio = Some(now);
                if self.audio != Presence::Present {
                    self.set_audio(Presence::Present, format!("{codec} audio frames arrive"));
                }
            }
        }
        if let Some((id, codec)) = self.video_track {
            if frame.track == id {
                self.video_bytes.add(second, len);
                self.last_video = Some(now);
                if self.video != Presence::Present {
                    self.set_video(Presence::Present, format!("{codec} video frames arrive"));
                }
                self.video_dts.push_back(frame.dts);
                while self
                    .video_dts
                    .front()
                    .is_some_and(|&f| frame.dts - f > WINDOW_TICKS)
                {
                    self.video_dts.pop_front();
                }
                if frame.keyframe {
                    if let Some(n) = self.gop_now.replace(0) {
                        self.gops.push_back(n);
                        if self.gops.len() >= KEYFRAMES {
                            self.gops.pop_front();
                        }
                    }
                }
                if let Some(n) = self.gop_now.as_mut() {
                    *n += 1;
                }
                if frame.keyframe {
                    self.keyframes.push_back(frame.dts);
                    while self.keyframes.len() > KEYFRAMES
                        || self
                            .keyframes
                            .front()
                            .is_some_and(|&f| frame.dts - f > KEYFRAME_SPAN_TICKS)
                    {
                        self.keyframes.pop_front();
                    }
                }
            }
        }
    }

    /// The level of one decoded audio frame of the metered track (`Ok(None)`: an empty frame),
    /// or why it did not decode.
    pub fn handle_level(&mut self, level: Result<Option<Level>, String>, now: Instant) {
        if !self.metered {
            return;
        }
        let level = match level {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                self.decode_errors += 1;
                let since = self.last_decoded.unwrap_or(self.started).max(self.started);
                if now.saturating_duration_since(since) >= self.cfg.silence_after {
                    self.set_silence(Silence::Unknown, format!("the audio does not decode: {e}"));
                }
                return;
            }
        };
        self.last_decoded = Some(now);
        let b = &mut self.block;
        b.sum_squares += (level.rms as f64).powi(2) * level.samples as f64;
        b.peak = b.peak.max(level.peak);
        b.samples += level.samples as u64;
        b.rate = level.sample_rate;
        if b.rate > 0 && b.samples as f64 >= b.rate as f64 * LEVEL_BLOCK.as_secs_f64() {
            let rms = (b.sum_squares / b.samples as f64).sqrt() as f32;
            self.level = Some((sluice_audio::to_db(rms), sluice_audio::to_db(b.peak)));
            self.block = LevelBlock::default();
        }
        let db = level.rms_db();
        let threshold = self.cfg.silence_level;
        if db < threshold {
            self.quiet += level.duration();
            if self.quiet >= self.cfg.silence_after && self.silence != Silence::Silent {
                let detail = format!(
                    "level below {threshold} dBFS for {:.1} s (now {db:.1} dBFS)",
                    self.quiet.as_secs_f64()
                );
                self.set_silence(Silence::Silent, detail);
            }
        } else {
            self.quiet = Duration::ZERO;
            if self.silence != Silence::Sound {
                self.set_silence(Silence::Sound, format!("level {db:.1} dBFS"));
            }
        }
    }

    /// The timer: stalls, absent tracks, the end of a run of timestamp jumps. `publisher`:
    /// whether a publisher is connected now.
    pub fn handle_timeout(&mut self, now: Instant, publisher: bool) {
        if !publisher {
            self.back = false;
            if self.flow != Flow::Offline {
                self.set_flow(
                    Flow::Offline,
                    "the publisher left; readers wait for it (grace period)".into(),
                );
            }
            return;
        }
        if self.flow == Flow::Offline && !self.back {
            // A publisher is back, not streaming yet: its time to stall starts now.
            self.back = true;
            self.started = self.started.max(now);
        }
        let since = |t: Option<Instant>, started: Instant| match t {
            Some(t) if t >= started => t,
            _ => started,
        };
        let idle = now.saturating_duration_since(since(self.last_frame, self.started));
        if idle >= self.cfg.stall_after && self.flow != Flow::Stalled {
            self.stalls += 1;
            self.set_flow(Flow::Stalled, format!("no media for {:.1} s", idle.as_secs_f64()));
        }
        if self.flow == Flow::Flowing {
            if let Some((_, codec)) = self.audio_track {
                let idle = now.saturating_duration_since(since(self.last_audio, self.started));
                if idle >= self.cfg.stall_after && self.audio != Presence::Absent {
                    let detail = format!("no {codec} audio frame for {:.1} s", idle.as_secs_f64());
                    self.set_audio(Presence::Absent, detail);
                }
            }
            if let Some((_, codec)) = self.video_track {
                let idle = now.saturating_duration_since(since(self.last_video, self.started));
                if idle >= self.cfg.stall_after && self.video != Presence::Absent {
                    let detail = format!("no {codec} video frame for {:.1} s", idle.as_secs_f64());
                    self.set_video(Presence::Absent, detail);
                }
            }
        }
        if self.timestamps == Timestamps::Jumping
            && self
                .last_jump
                .is_some_and(|t| now.saturating_duration_since(t) >= JUMP_CLEAR)
        {
            self.set(
                "timestamps",
                Timestamps::Steady.name(),
                format!("no jump for {} s", JUMP_CLEAR.as_secs()),
            );
            self.timestamps = Timestamps::Steady;
        }
    }

    /// The next change of state since the last call, oldest first.
    pub fn poll_change(&mut self) -> Option<Change> {
        self.changes.pop_front()
    }

    /// The states and figures now.
    pub fn snapshot(&self, now: Instant) -> PathHealth {
        let flowing = self.flow == Flow::Flowing;
        let video_fps = match (self.video_dts.front(), self.video_dts.back()) {
            (Some(&a), Some(&b)) if flowing && self.video == Presence::Present && b > a => {
                let secs = (b - a) as f64 / CLOCK_RATE as f64;
                Some(round((self.video_dts.len() - 1) as f64 / secs, 2))
            }
            _ => None,
        };
        let keyframe_interval_s = match (self.keyframes.front(), self.keyframes.back()) {
            (Some(&a), Some(&b)) if b > a => {
                let n = (self.keyframes.len() - 1) as f64;
                Some(round((b - a) as f64 / CLOCK_RATE as f64 / n, 3))
            }
            _ => None,
        };
        let gop_frames = (!self.gops.is_empty())
            .then(|| round(self.gops.iter().sum::<u64>() as f64 / self.gops.len() as f64, 1));
        let second = self.second(now);
        PathHealth {
            stream: self.flow,
            stalls: self.stalls,
            last_frame_ms: self
                .last_frame
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            audio: self.audio,
            audio_codec: self.audio_track.map(|(_, c)| c.name()),
            silence: self.silence,
            silence_detail: self.silence_detail.clone(),
            audio_level_db: self.level.map(|(rms, _)| round(rms as f64, 1) as f32),
            audio_peak_db: self.level.map(|(_, peak)| round(peak as f64, 1) as f32),
            quiet_s: round(self.quiet.as_secs_f64(), 2),
            audio_decode_errors: self.decode_errors,
            video: self.video,
            video_codec: self.video_track.map(|(_, c)| c.name()),
            video_fps,
            keyframe_interval_s,
            gop_frames,
            bitrate_in: self.bytes.bps(second),
            video_bitrate_in: self.video_bytes.bps(second),
            audio_bitrate_in: self.audio_bytes.bps(second),
            video_track: self.video_track.map(|(id, _)| id),
            audio_track: self.audio_track.map(|(id, _)| id),
            timestamps: self.timestamps,
            timestamp_jumps: self.jumps,
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    fn check_timestamps(&mut self, frame: &Frame, now: Instant) {
        let prev = match self.last_dts.iter_mut().find(|(t, _)| *t == frame.track) {
            Some((_, dts)) => std::mem::replace(dts, frame.dts),
            None => {
                self.last_dts.push((frame.track, frame.dts));
                return;
            }
        };
        let step = frame.dts - prev;
        if (0..=JUMP_TICKS).contains(&step) {
            return;
        }
        self.jumps += 1;
        self.last_jump = Some(now);
        if self.video_track.is_some_and(|(id, _)| id == frame.track) {
            // Rates over media time mean nothing across the jump.
            self.video_dts.clear();
            self.keyframes.clear();
            self.gops.clear();
            self.gop_now = None;
            self.video_dts.push_back(frame.dts);
        }
        if self.timestamps != Timestamps::Jumping {
            self.timestamps = Timestamps::Jumping;
            let detail = format!(
                "track {}: DTS went {} by {} ms",
                frame.track,
                if step < 0 { "back" } else { "forward" },
                step.unsigned_abs() * 1000 / CLOCK_RATE as u64
            );
            self.set("timestamps", Timestamps::Jumping.name(), detail);
        }
    }

    fn set(&mut self, what: &'static str, state: &'static str, detail: String) {
        self.changes.push_back(Change { what, state, detail });
    }

    fn set_flow(&mut self, flow: Flow, detail: String) {
        if self.flow != flow {
            self.flow = flow;
            self.set("stream", flow.name(), detail);
        }
    }

    fn set_audio(&mut self, p: Presence, detail: String) {
        if self.audio != p {
            self.audio = p;
            self.set("audio", p.name(), detail);
        }
    }

    fn set_video(&mut self, p: Presence, detail: String) {
        if self.video != p {
            self.video = p;
            self.set("video", p.name(), detail);
        }
    }

    fn set_silence(&mut self, s: Silence, detail: String) {
        self.silence_detail = (s == Silence::Unknown).then(|| detail.clone());
        if self.silence != s {
            self.silence = s;
            self.set("silence", s.name(), detail);
        }
    }
}

/// Payload bytes counted per wall-clock second (seconds since the monitor's origin).
#[derive(Default)]
struct Buckets(VecDeque<(u64, u64)>);

impl Buckets {
    fn add(&mut self, second: u64, bytes: u64) {
        match self.0.back_mut() {
            Some((at, n)) if *at == second => *n += bytes,
            _ => self.0.push_back((second, bytes)),
        }
        while self
            .0
            .front()
            .is_some_and(|&(at, _)| at + BITRATE_SECONDS < second)
        {
            self.0.pop_front();
        }
    }

    /// Bits per second over the last complete seconds before `second` (up to five).
    fn bps(&self, second: u64) -> u64 {
        let span = second.min(BITRATE_SECONDS);
        if span == 0 {
            return 0;
        }
        let bytes: u64 = self
            .0
            .iter()
            .filter(|&&(at, _)| at < second && at + span >= second)
            .map(|&(_, n)| n)
            .sum();
        bytes * 8 / span
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (x * k).round() / k
}

/// Every live path's latest health, for the API and the metrics. One per server.
pub struct HealthStore {
    events: Arc<EventBus>,
    /// Path name -> (the health output's session id, its latest health).
    paths: Mutex<HashMap<String, (u64, PathHealth)>>,
}

impl HealthStore {
    /// A store whose outputs report their changes on `events` (the registry's bus).
    pub fn new(events: Arc<EventBus>) -> Self {
        HealthStore {
            events,
            paths: Mutex::new(HashMap::new()),
        }
    }

    /// The health of `path`, while it is live and its health output runs.
    pub fn get(&self, path: &str) -> Option<PathHealth> {
        self.paths.lock().get(path).map(|(_, h)| h.clone())
    }

    /// Every path's health, sorted by path name.
    pub fn all(&self) -> Vec<(String, PathHealth)> {
        let mut v: Vec<_> = self
            .paths
            .lock()
            .iter()
            .map(|(p, (_, h))| (p.clone(), h.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Files the health of `path` from the output `session`. An output that a newer one
    /// replaced (a reload) does not overwrite it.
    fn set(&self, path: &str, session: u64, health: PathHealth) {
        let mut paths = self.paths.lock();
        match paths.get_mut(path) {
            Some(e) if e.0 > session => {}
            Some(e) => *e = (session, health),
            None => {
                paths.insert(path.to_owned(), (session, health));
            }
        }
    }

    /// Forgets `path` if `session` is the output that filed it.
    fn remove(&self, path: &str, session: u64) {
        let mut paths = self.paths.lock();
        if paths.get(path).is_some_and(|e| e.0 == session) {
            paths.remove(path);
        }
    }
}

/// Starts the health output of a path on `reader` (from [`Select::Original`]): it runs until
/// the reader ends (the path ends, a kick, the shutdown, or a reload removes it).
///
/// [`Select::Original`]: sluice_media::Select::Original
///
/// `settings` gives the path's settings in force: looked at every second, so a reload's new
/// thresholds apply without restarting the checks.
pub fn spawn(
    reader: Reader,
    settings: impl Fn() -> Option<PathHealthConfig> + Send + 'static,
    store: Arc<HealthStore>,
    rt: &tokio::runtime::Handle,
) {
    let Some(cfg) = settings() else { return };
    rt.spawn(run(reader, cfg, settings, store));
}

/// Ticks between two looks at the settings.
const SETTINGS_TICKS: u32 = 4;

async fn run(
    mut reader: Reader,
    mut cfg: PathHealthConfig,
    settings: impl Fn() -> Option<PathHealthConfig>,
    store: Arc<HealthStore>,
) {
    let path: Arc<str> = reader.path().into();
    let session = reader.stats().id;
    let mut monitor = Monitor::new(cfg.clone(), Instant::now());
    let mut meter: Option<(TrackId, LevelMeter)> = None;
    let mut info: Option<Arc<StreamInfo>> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    tracing::debug!(%path, session, "health checks start");
    let end = loop {
        tokio::select! {
            biased;
            _ = tick.tick() => {
                let now = Instant::now();
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(SETTINGS_TICKS) {
                    if let Some(new) = settings().filter(|c| *c != cfg) {
                        tracing::info!(%path, "health settings changed: {new:?}");
                        let decode = new.silence_detection != cfg.silence_detection;
                        monitor.set_config(new.clone());
                        cfg = new;
                        if let (true, Some(info)) = (decode, &info) {
                            let (m, level) = open_meter(info, &cfg);
                            meter = m;
                            monitor.handle_meter(level, now);
                        }
                    }
                }
                monitor.handle_timeout(now, reader.publisher_present());
                report(&store, &path, &mut monitor);
                store.set(&path, session, monitor.snapshot(now));
                continue;
            }
            ev = reader.recv() => match ev {
                Ok(Event::Start(i)) => {
                    let (m, level) = open_meter(&i, &cfg);
                    meter = m;
                    monitor.handle_start(&i, level, Instant::now());
                    info = Some(i);
                }
                Ok(Event::Frame(f)) => {
                    let now = Instant::now();
                    monitor.handle_frame(&f, now);
                    if let Some((id, m)) = meter.as_mut().filter(|(id, _)| *id == f.track) {
                        let r = m.push(&f.data).map_err(|e| e.to_string());
                        if let Err(e) = &r {
                            let n = monitor.decode_errors + 1;
                            if n.is_power_of_two() {
                                tracing::warn!(%path, track = *id, errors = n, "audio frame does not decode: {e}");
                            }
                        }
                        monitor.handle_level(r, now);
                    }
                }
                Err(e) => break e,
            }
        }
        if !monitor.changes.is_empty() {
            report(&store, &path, &mut monitor);
            store.set(&path, session, monitor.snapshot(Instant::now()));
        }
    };
    tracing::debug!(%path, session, "health checks end: {end}");
    store.remove(&path, session);
}

/// A level meter for the stream's audio, or why there is none.
fn open_meter(
    info: &StreamInfo,
    cfg: &PathHealthConfig,
) -> (Option<(TrackId, LevelMeter)>, Result<(), String>) {
    let Some(a) = info.audio() else {
        return (None, Err("no audio track".into()));
    };
    if !cfg.silence_detection {
        return (None, Err("silence detection is off for this path".into()));
    }
    match LevelMeter::sampled(a, METER_EVERY) {
        Ok(Some(m)) => (Some((a.id, m)), Ok(())),
        Ok(None) => (
            None,
            Err(format!("{} audio is not decoded for its level", a.codec)),
        ),
        Err(e) => (None, Err(format!("the {} audio cannot be decoded: {e}", a.codec))),
    }
}

/// Logs and emits the monitor's changes.
fn report(store: &HealthStore, path: &Arc<str>, monitor: &mut Monitor) {
    while let Some(c) = monitor.poll_change() {
        tracing::info!(%path, what = c.what, state = c.state, "health: {} {}: {}", c.what, c.state, c.detail);
        store.events.emit(ServerEvent::Health {
            path: path.clone(),
            what: c.what,
            state: c.state,
            detail: c.detail,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sluice_media::Track;

    const MS: i64 = CLOCK_RATE / 1000;
    const NONE: [(&str, &str); 0] = [];

    fn cfg() -> PathHealthConfig {
        PathHealthConfig {
            silence_after: Duration::from_secs(2),
            stall_after: Duration::from_secs(2),
            ..Default::default()
        }
    }

    fn info(audio: Option<CodecId>, video: bool) -> StreamInfo {
        let mut tracks = Vec::new();
        if video {
            tracks.push(Track::video(0, CodecId::H264, Bytes::new(), 640, 360));
        }
        if let Some(c) = audio {
            tracks.push(Track::audio(1, c, Bytes::new(), 48_000, 2));
        }
        StreamInfo {
            tracks,
            epoch: 0,
            discontinuity: false,
            started_at: std::time::SystemTime::now(),
        }
    }

    fn level(db: f32) -> Result<Option<Level>, String> {
        let lin = 10f32.powf(db / 20.0);
        Ok(Some(Level {
            rms: lin,
            peak: lin,
            samples: 1024,
            sample_rate: 48_000,
        }))
    }

    fn changes(m: &mut Monitor) -> Vec<(&'static str, &'static str)> {
        std::iter::from_fn(|| m.poll_change())
            .map(|c| (c.what, c.state))
            .collect()
    }

    /// A synthetic stream on a manual clock: 30 fps video with a keyframe every `gop` frames,
    /// and 1024-sample AAC frames at 48 kHz whose level `db(t)` gives, for `secs` seconds.
    struct Feed {
        t0: Instant,
        video_ms: i64,
        audio_ms: f64,
        n: u64,
    }

    impl Feed {
        fn new(t0: Instant) -> Self {
            Feed {
                t0,
                video_ms: 0,
                audio_ms: 0.0,
                n: 0,
            }
        }
        fn at(&self, ms: f64) -> Instant {
            self.t0 + Duration::from_secs_f64(ms / 1000.0)
        }
        /// Feeds media from the current position up to `until_ms` of media time; wall time
        /// follows media time plus `lag_ms`. Ticks the timer every 250 ms.
        fn run(&mut self, m: &mut Monitor, until_ms: i64, lag_ms: i64, db: impl Fn(f64) -> f32) {
            while self.video_ms < until_ms {
                let v = self.video_ms;
                let now = self.at((v + lag_ms) as f64);
                let key = self.n.is_multiple_of(60);
                m.handle_frame(
                    &Frame::new(0, v * MS, v * MS, key, Bytes::from(vec![0; 1000])),
                    now,
                );
                self.n += 1;
                while self.audio_ms <= v as f64 + 33.0 {
                    let a = self.audio_ms;
                    let dts = (a * MS as f64) as i64;
                    m.handle_frame(&Frame::new(1, dts, dts, true, Bytes::from(vec![0; 250])), now);
                    m.handle_level(level(db(a / 1000.0)), now);
                    self.audio_ms += 1024.0 / 48.0;
                }
                if v % 250 < 34 {
                    m.handle_timeout(now, true);
                }
                // 30 fps: 33, 33, 34 ms.
                self.video_ms += if self.n.is_multiple_of(3) { 34 } else { 33 };
            }
        }
    }

    #[test]
    fn silence_then_sound_then_silence() {
        let t0 = Instant::now();
        let mut m = Monitor::new(cfg(), t0);
        m.handle_start(&info(Some(CodecId::Aac), true), Ok(()), t0);
        let mut feed = Feed::new(t0);
        // 1.5 s of digital silence: not yet silent (2 s needed), and not sound either.
        feed.run(&mut m, 1500, 0, |_| -100.0);
        assert_eq!(
            changes(&mut m),
            [("stream", "flowing"), ("video", "present"), ("audio", "present")]
        );
        assert_eq!(m.snapshot(feed.at(1500.0)).silence, Silence::Unknown);
        feed.run(&mut m, 2200, 0, |_| -100.0);
        assert_eq!(changes(&mut m), [("silence", "silent")]);
        let h = m.snapshot(feed.at(2200.0));
        assert_eq!(h.silence, Silence::Silent);
        assert_eq!(h.audio_level_db, Some(-100.0));
        assert!(h.quiet_s >= 2.0, "{h:?}");
        // A tone from 4 s: sound at once.
        feed.run(&mut m, 6000, 0, |t| if t < 4.0 { -100.0 } else { -9.0 });
        let c: Vec<Change> = std::iter::from_fn(|| m.poll_change()).collect();
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!((c[0].what, c[0].state), ("silence", "sound"));
        assert!(c[0].detail.contains("-9.0 dBFS"), "{}", c[0].detail);
        let h = m.snapshot(feed.at(6000.0));
        assert_eq!((h.silence, h.quiet_s), (Silence::Sound, 0.0));
        assert!((h.audio_level_db.unwrap() - -9.0).abs() < 0.2, "{h:?}");
        // Quiet but above the threshold (-50 dBFS) is not silence; below it for 2 s is.
        feed.run(&mut m, 9000, 0, |_| -50.0);
        assert_eq!(changes(&mut m), NONE);
        feed.run(&mut m, 12_000, 0, |_| -61.0);
        assert_eq!(changes(&mut m), [("silence", "silent")]);
        // Figures: 30 fps, a keyframe every 2 s, 30 x 1000 + 46.9 x 250 bytes a second.
        let h = m.snapshot(feed.at(12_000.0));
        assert_eq!(h.video_fps, Some(30.0), "{h:?}");
        assert_eq!(h.keyframe_interval_s, Some(2.0), "{h:?}");
        assert_eq!(h.gop_frames, Some(60.0), "{h:?}");
        let (video, audio) = (30_000.0 * 8.0, 48_000.0 / 1024.0 * 250.0 * 8.0);
        for (got, want) in [
            (h.bitrate_in, video + audio),
            (h.video_bitrate_in, video),
            (h.audio_bitrate_in, audio),
        ] {
            assert!((got as f64 / want - 1.0).abs() < 0.05, "{got} vs {want}: {h:?}");
        }
        assert_eq!((h.video_track, h.audio_track), (Some(0), Some(1)));
        assert_eq!((h.stream, h.stalls, h.timestamp_jumps), (Flow::Flowing, 0, 0));
        assert_eq!((h.audio_codec, h.video_codec), (Some("aac"), Some("h264")));
    }

    #[test]
    fn a_stall_is_found_by_the_timer_and_clears_with_media() {
        let t0 = Instant::now();
        let mut m = Monitor::new(cfg(), t0);
        m.handle_start(&info(Some(CodecId::Aac), true), Ok(()), t0);
        let mut feed = Feed::new(t0);
        feed.run(&mut m, 3000, 0, |_| -9.0);
        changes(&mut m);
        // Nothing arrives after 3 s: the timer alone finds the stall after 2 s, not before.
        let last = feed.at(3000.0);
        m.handle_timeout(last + Duration::from_millis(1900), true);
        assert_eq!(changes(&mut m), NONE);
        m.handle_timeout(last + Duration::from_millis(2100), true);
        let c = m.poll_change().unwrap();
        assert_eq!((c.what, c.state), ("stream", "stalled"));
        assert!(c.detail.contains("no media for 2.1 s"), "{}", c.detail);
        // Stalled: audio and video are not also declared absent; the figures say so.
        m.handle_timeout(last + Duration::from_secs(4), true);
        assert_eq!(changes(&mut m), NONE);
        let h = m.snapshot(last + Duration::from_secs(4));
        assert_eq!(
            (h.stream, h.stalls, h.audio, h.video),
            (Flow::Stalled, 1, Presence::Present, Presence::Present)
        );
        assert_eq!(h.video_fps, None);
        assert!(h.last_frame_ms.unwrap() >= 4000, "{h:?}");
        // Media again (the same timeline, 4 s later on the wall clock): flowing.
        feed.run(&mut m, 5000, 4000, |_| -9.0);
        let c = m.poll_change().unwrap();
        assert_eq!((c.what, c.state), ("stream", "flowing"));
        assert!(c.detail.contains("after 4.0 s"), "{}", c.detail);
        assert_eq!(changes(&mut m), NONE);
        assert_eq!(m.snapshot(feed.at(9000.0)).stalls, 1);
    }

    #[test]
    fn a_stream_without_audio_says_so() {
        let t0 = Instant::now();
        let mut m = Monitor::new(cfg(), t0);
        m.handle_start(&info(None, true), Err("no audio track".into()), t0);
        // Silence was unknown already: no change, but the reason is kept.
        assert_eq!(changes(&mut m), [("audio", "absent")]);
        let h = m.snapshot(t0);
        assert_eq!(
            (h.audio, h.silence, h.audio_codec),
            (Presence::Absent, Silence::Unknown, None)
        );
        assert_eq!(h.silence_detail.as_deref(), Some("no audio track"));
        assert_eq!(h.stream, Flow::Starting);
        for i in 0..100 {
            let now = t0 + Duration::from_millis(i * 33);
            m.handle_frame(
                &Frame::new(
                    0,
                    i as i64 * 33 * MS,
                    i as i64 * 33 * MS,
                    i.is_multiple_of(30),
                    Bytes::new(),
                ),
                now,
            );
            m.handle_timeout(now, true);
        }
        assert_eq!(changes(&mut m), [("stream", "flowing"), ("video", "present")]);
        assert_eq!(m.snapshot(t0 + Duration::from_secs(3)).audio, Presence::Absent);
    }

    #[test]
    fn an_audio_track_without_frames_becomes_absent_and_returns() {
        let t0 = Instant::now();
        let mut m = Monitor::new(cfg(), t0);
        m.handle_start(&info(Some(CodecId::Aac), true), Ok(()), t0);
        // Video only, for 3 s.
        for i in 0..90 {
            let now = t0 + Duration::from_millis(i * 33);
            m.handle_frame(
                &Frame::new(
                    0,
                    i as i64 * 33 * MS,
                    i as i64 * 33 * MS,
                    i.is_multiple_of(30),
                    Bytes::new(),
                ),
                now,
            );
            m.handle_timeout(now, true);
        }
        assert_eq!(
            changes(&mut m),
            [("stream", "flowing"), ("video", "present"), ("audio", "absent")]
        );
        let now = t0 + Duration::from_secs(3);
        m.handle_frame(&Frame::new(1, 3000 * MS, 3000 * MS, true, Bytes::new()), now);
        assert_eq!(changes(&mut m), [("audio", "present")]);
    }

    #[test]
    fn codecs_not_decoded_and_bad_audio_are_unknown() {
        let t0 = Instant::now();
        let mut m = Monitor::new(cfg(), t0);
        m.handle_start(
            &info(Some(CodecId::Mp3), true),
            Err("mp3 audio is not decoded for its level".into()),
            t0,
        );
        assert_eq!(changes(&mut m), NONE);
        // Levels for an unmetered stream are ignored.
        m.handle_level(level(-100.0), t0 + Duration::from_secs(5));
        assert_eq!(
            m.snapshot(t0).silence_detail.as_deref(),
            Some("mp3 audio is not decoded for its level")
        );
        // AAC that never decodes: counted, and unknown once silence_after has passed.
        let mut m = Monitor::new(cfg(), t0);
        m.handle_start(&info(Some(CodecId::Aac), false), Ok(()), t0);
        changes(&mut m);
        m.handle_level(level(-20.0), t0);
        assert_eq!(changes(&mut m), [("silence", "sound")]);
        for i in 0..150 {
            m.handle_level(Err("bad frame".into()), t0 + Duration::from_millis(i * 21));
        }
        assert_eq!(changes(&mut m), [("silence", "unknown")]);
        let h = m.snapshot(t0);
        assert_eq!(h.audio_decode_errors, 150);
        assert!(h.silence_detail.unwrap().contains("does not decode: bad frame"));
        // A good frame: judged again.
        m.handle_level(level(-20.0), t0 + Duration::from_secs(4));
        assert_eq!(changes(&mut m), [("silence", "sound")]);
        assert_eq!(m.snapshot(t0).silence_detail, None);
    }

    #[test]
    fn timestamp_jumps_are_counted_and_clear() {
        let t0 = Instant::now();
        let mut m = Monitor::new(cfg(), t0);
        m.handle_start(&info(Some(CodecId::Aac), true), Ok(()), t0);
        {
            let mut frame = |track: u8, ms: i64, wall_ms: u64| {
                let f = Frame::new(track, ms * MS, ms * MS, true, Bytes::new());
                m.handle_frame(&f, t0 + Duration::from_millis(wall_ms));
            };
            frame(0, 0, 0);
            frame(1, 0, 0);
            frame(0, 1000, 1000); // exactly 1 s: no jump
            frame(1, 5000, 1000); // 5 s forward on audio
            frame(0, 900, 1100); // back on video
            frame(0, 933, 1133);
        }
        let c: Vec<Change> = std::iter::from_fn(|| m.poll_change()).collect();
        let jumps: Vec<_> = c.iter().filter(|c| c.what == "timestamps").collect();
        assert_eq!(jumps.len(), 1, "one change for a run of jumps: {c:?}");
        assert_eq!(jumps[0].state, "jumping");
        assert!(
            jumps[0].detail.contains("track 1: DTS went forward by 5000 ms"),
            "{}",
            jumps[0].detail
        );
        assert_eq!(m.snapshot(t0).timestamp_jumps, 2);
        m.handle_timeout(t0 + Duration::from_millis(1133 + 9000), true);
        assert!(!changes(&mut m).contains(&("timestamps", "steady")));
        m.handle_timeout(t0 + Duration::from_millis(1133 + 10_000), true);
        let c = changes(&mut m);
        assert!(c.contains(&("timestamps", "steady")), "{c:?}");
        assert_eq!(m.snapshot(t0).timestamps, Timestamps::Steady);
        // A new stream (publisher restart) starts its own timeline: no jump.
        m.handle_start(
            &info(Some(CodecId::Aac), true),
            Ok(()),
            t0 + Duration::from_secs(12),
        );
        m.handle_frame(
            &Frame::new(0, 0, 0, true, Bytes::new()),
            t0 + Duration::from_secs(12),
        );
        assert_eq!(m.snapshot(t0).timestamp_jumps, 2);
    }

    #[test]
    fn publisher_gone_is_offline_not_stalled() {
        let t0 = Instant::now();
        let mut m = Monitor::new(cfg(), t0);
        m.handle_start(&info(Some(CodecId::Aac), true), Ok(()), t0);
        let mut feed = Feed::new(t0);
        feed.run(&mut m, 1000, 0, |_| -9.0);
        changes(&mut m);
        let left = feed.at(1000.0);
        m.handle_timeout(left + Duration::from_millis(300), false);
        assert_eq!(changes(&mut m), [("stream", "offline")]);
        m.handle_timeout(left + Duration::from_secs(8), false);
        assert_eq!(changes(&mut m), NONE);
        // Back after 8 s: not stalled at once; media makes it flowing.
        m.handle_timeout(left + Duration::from_millis(8250), true);
        assert_eq!(changes(&mut m), NONE);
        m.handle_start(
            &info(Some(CodecId::Aac), true),
            Ok(()),
            left + Duration::from_millis(8300),
        );
        m.handle_frame(
            &Frame::new(0, 0, 0, true, Bytes::new()),
            left + Duration::from_millis(8400),
        );
        assert_eq!(changes(&mut m), [("stream", "flowing")]);
        // Back but silent for stall_after: stalled.
        m.handle_timeout(left + Duration::from_secs(9), false);
        m.handle_timeout(left + Duration::from_secs(10), true);
        m.handle_timeout(left + Duration::from_millis(11_900), true);
        assert_eq!(changes(&mut m), [("stream", "offline")]);
        m.handle_timeout(left + Duration::from_millis(12_300), true);
        assert_eq!(changes(&mut m), [("stream", "stalled")]);
    }

    #[test]
    fn new_settings_apply_to_what_follows() {
        let t0 = Instant::now();
        let mut m = Monitor::new(cfg(), t0);
        m.handle_start(&info(Some(CodecId::Aac), true), Ok(()), t0);
        let mut feed = Feed::new(t0);
        // -50 dBFS is sound at the default -60 dBFS threshold...
        feed.run(&mut m, 3000, 0, |_| -50.0);
        assert!(changes(&mut m).contains(&("silence", "sound")));
        // ...and silent once the threshold is -40 dBFS (a reload).
        m.set_config(PathHealthConfig {
            silence_level: -40.0,
            ..cfg()
        });
        feed.run(&mut m, 6000, 0, |_| -50.0);
        assert_eq!(changes(&mut m), [("silence", "silent")]);
        // Detection turned off: unknown, with the reason.
        m.handle_meter(
            Err("silence detection is off for this path".into()),
            feed.at(6000.0),
        );
        assert_eq!(changes(&mut m), [("silence", "unknown")]);
        feed.run(&mut m, 9000, 0, |_| -9.0);
        assert_eq!(
            changes(&mut m),
            NONE,
            "levels are not judged while detection is off"
        );
    }

    #[test]
    fn the_store_keeps_the_newest_output() {
        let store = HealthStore::new(Arc::new(EventBus::default()));
        let h = Monitor::new(cfg(), Instant::now()).snapshot(Instant::now());
        store.set("a", 5, h.clone());
        store.set("b", 6, h.clone());
        let mut newer = h.clone();
        newer.stalls = 9;
        store.set("a", 7, newer.clone());
        store.set("a", 5, h.clone());
        assert_eq!(store.get("a"), Some(newer));
        store.remove("a", 5);
        assert!(
            store.get("a").is_some(),
            "an old output does not remove the new one's entry"
        );
        assert_eq!(
            store.all().iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        store.remove("a", 7);
        assert_eq!(store.get("a"), None);
        let json = serde_json::to_value(store.get("b").unwrap()).unwrap();
        assert_eq!(json["stream"], "starting");
        assert_eq!(json["silence"], "unknown");
        assert!(json["video_fps"].is_null());
    }
}
