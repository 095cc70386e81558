//! The `transcode` output: a path's ABR renditions (`[..transcode] renditions`), made by one
//! supervised ffmpeg per path and published back into the core as the reserved paths
//! `PATH/~NAME`, which every protocol reads like any other path. Codecs: H.264 and H.265
//! (x264/x265 or a hardware encoder), VP9 (libvpx) and AV1 (libaom), real-time settings.
//!
//! **Isolation.** The encoder is a child process, never code in our address space: it gets the
//! path's stream as FLV or MPEG-TS on its stdin (from the output's reader, which the core bounds
//! like any reader's queue), and writes every rendition in one MPEG-TS on its stdout (one
//! fragmented MP4 for VP9 and AV1, which ffmpeg 5.1 cannot put in MPEG-TS), which [`TsDemuxer`]
//! or [`Fmp4StreamDemuxer`] reads with its bad-input rules. The source decodes once (one `split` filter);
//! each rendition encodes once however many read it. An encoder that exits, fails, or writes
//! nothing for `stall_timeout` while its input flows is killed and started again with backoff
//! (1 s doubling to `restart_max`); the source path, its readers and the other outputs never
//! notice, and the renditions' readers stay connected (a restart is a new start of the same
//! rendition paths).
//!
//! **Alignment.** Each rendition's keyframes are forced at the source's keyframes
//! (`-force_key_frames source`, scene-cut keyframes off) and timestamps are the source's
//! (`-copyts`), so segments of every rendition and the source start at the same instants and
//! players switch cleanly.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Deserialize;
use sluice_container::fmp4_demux::Fmp4StreamDemuxer;
use sluice_container::ts::TsMuxer;
use sluice_container::ts_demux::{DemuxEvent, TsDemuxer};
use sluice_media::{Event, MediaKind, Publisher, ReadError, Reader, Registry, SessionInfo, Track};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// `[path_defaults.transcode]`, `[paths."NAME".transcode]` (docs/transcoding.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PathTranscode {
    /// The ladder; empty: no transcoding.
    pub renditions: Vec<Rendition>,
    /// `h264` (libx264) or `h265` (libx265), or their hardware encoders with `hwaccel`.
    pub video_codec: VideoCodec,
    /// The encoder preset of every rendition that does not set its own.
    pub preset: String,
    /// The renditions' audio: `copy` (the source's own frames, so every rendition and the
    /// source have the very same audio and players switch without a seam) or `aac` (encoded at
    /// `audio_bitrate`).
    pub audio: AudioMode,
    /// AAC bitrate of the renditions' audio with `audio = "aac"`, e.g. "128k".
    pub audio_bitrate: String,
    /// `none` (software), `vaapi`, `nvenc` or `qsv`: the hardware encoder, when the machine has one.
    pub hwaccel: HwAccel,
    /// The ffmpeg executable.
    pub ffmpeg: String,
    /// Longest wait before starting a failed encoder again.
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub restart_max: Duration,
    /// An encoder that writes nothing this long while it is fed is restarted.
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub stall_timeout: Duration,
    /// Encode only while someone watches a rendition (a reader of `P/~NAME` on any protocol,
    /// or HLS/DASH requests of the path or its renditions); off: always while the path is live.
    pub on_demand: bool,
    /// With `on_demand`: how long the encoder runs on after the last rendition viewer left.
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub close_after: Duration,
}

impl Default for PathTranscode {
    fn default() -> Self {
        PathTranscode {
            renditions: Vec::new(),
            video_codec: VideoCodec::H264,
            preset: "veryfast".into(),
            audio: AudioMode::Copy,
            audio_bitrate: "128k".into(),
            hwaccel: HwAccel::None,
            ffmpeg: "ffmpeg".into(),
            restart_max: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(10),
            on_demand: false,
            close_after: Duration::from_secs(10),
        }
    }
}

/// One rung of the ladder.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Rendition {
    /// The rendition's name: it is read at `PATH/~NAME` (letters, digits, '.', '_', '-').
    #[serde(deserialize_with = "de_name")]
    pub name: String,
    /// Picture size; 0 for one of them keeps the source's aspect ratio.
    pub width: u32,
    pub height: u32,
    /// Video bitrate, e.g. "1200k" or "3M".
    #[serde(deserialize_with = "de_bitrate")]
    pub video_bitrate: String,
    /// Frame rate; 0 keeps the source's.
    pub fps: u32,
    /// Encoder profile (e.g. "main", "high"); empty: the encoder's default.
    pub profile: String,
    /// This rung's preset; empty: the section's.
    pub preset: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    H264,
    H265,
    Vp9,
    Av1,
}

impl VideoCodec {
    /// Whether the encoder's output comes back as fragmented MP4 (ffmpeg 5.1 cannot put VP9 or
    /// AV1 in MPEG-TS) rather than MPEG-TS.
    fn fmp4_out(self) -> bool {
        matches!(self, VideoCodec::Vp9 | VideoCodec::Av1)
    }
}

/// libvpx's and libaom's `-cpu-used` (0 slowest, 8 fastest in real-time mode) for a preset: a
/// number as is, or the x264 name of the same trade-off.
fn cpu_used(preset: &str) -> Option<u8> {
    if let Ok(n) = preset.parse::<u8>() {
        return (n <= 8).then_some(n);
    }
    Some(match preset {
        "ultrafast" | "superfast" => 8,
        "veryfast" => 7,
        "faster" => 6,
        "fast" => 5,
        "medium" => 4,
        "slow" => 3,
        "slower" => 2,
        "veryslow" | "placebo" => 1,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AudioMode {
    Copy,
    Aac,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HwAccel {
    None,
    Vaapi,
    Nvenc,
    Qsv,
}

fn de_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(serde::de::Error::custom(format!(
            "rendition name {s:?}: 1 to 32 letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(s)
}

fn de_bitrate<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let digits = s.trim_end_matches(['k', 'K', 'M']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || s.len() - digits.len() > 1 {
        return Err(serde::de::Error::custom(format!(
            "bitrate {s:?}: a number of bits per second, optionally with k or M (\"1200k\")"
        )));
    }
    Ok(s)
}

impl PathTranscode {
    /// The rules across keys: distinct names, a size for each rung.
    pub fn validate(&self, table: &str) -> anyhow::Result<()> {
        if self.video_codec == VideoCodec::Vp9 && self.hwaccel == HwAccel::Nvenc {
            anyhow::bail!(
                "{table}.transcode: NVENC has no VP9 encoder (vaapi or qsv do, or h264, h265, av1)"
            );
        }
        if self.video_codec.fmp4_out() && self.hwaccel == HwAccel::None {
            for p in std::iter::once(&self.preset).chain(self.renditions.iter().map(|r| &r.preset)) {
                if !p.is_empty() && cpu_used(p).is_none() {
                    anyhow::bail!(
                        "{table}.transcode: preset {p:?} for {:?}: a speed from 0 (slowest) to 8 (fastest), or an x264 preset name",
                        self.video_codec
                    );
                }
            }
        }
        let mut names = std::collections::HashSet::new();
        for r in &self.renditions {
            if !names.insert(&r.name) {
                anyhow::bail!("{table}.transcode: two renditions are named {:?}", r.name);
            }
            if r.width == 0 && r.height == 0 {
                anyhow::bail!(
                    "{table}.transcode: rendition {:?} needs a width or a height",
                    r.name
                );
            }
            if r.width % 2 == 1 || r.height % 2 == 1 {
                anyhow::bail!(
                    "{table}.transcode: rendition {:?}: width and height must be even",
                    r.name
                );
            }
            if r.video_bitrate.is_empty() {
                anyhow::bail!("{table}.transcode: rendition {:?} needs a video_bitrate", r.name);
            }
        }
        Ok(())
    }
}

/// The reserved path a rendition of `path` is read at.
pub fn rendition_path(path: &str, name: &str) -> String {
    format!("{path}/~{name}")
}

/// The ffmpeg command line (without the executable): `input` (`flv` or `mpegts`) in on stdin,
/// every rendition's video (in ladder order) then the audio (copied, or AAC) out on stdout as
/// one MPEG-TS (H.264, H.265) or one fragmented MP4 cut at every frame (VP9, AV1).
pub fn ffmpeg_args(t: &PathTranscode, input: &str, has_audio: bool) -> Vec<String> {
    let mut a: Vec<String> = ["-hide_banner", "-nostats", "-loglevel", "warning"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if t.hwaccel == HwAccel::Vaapi {
        a.extend(["-vaapi_device".into(), "/dev/dri/renderD128".into()]);
    }
    a.extend(["-f", input, "-i", "pipe:0"].map(String::from));
    let n = t.renditions.len();
    let mut graph = format!("[0:v:0]split={n}");
    for i in 0..n {
        graph.push_str(&format!("[s{i}]"));
    }
    for (i, r) in t.renditions.iter().enumerate() {
        let w = if r.width == 0 {
            "-2".to_owned()
        } else {
            r.width.to_string()
        };
        let h = if r.height == 0 {
            "-2".to_owned()
        } else {
            r.height.to_string()
        };
        graph.push_str(&format!(";[s{i}]scale={w}:{h}"));
        if r.fps > 0 {
            graph.push_str(&format!(",fps={}", r.fps));
        }
        if t.hwaccel == HwAccel::Vaapi {
            graph.push_str(",format=nv12,hwupload");
        }
        graph.push_str(&format!("[v{i}]"));
    }
    a.extend(["-filter_complex".into(), graph]);
    for i in 0..n {
        a.extend(["-map".into(), format!("[v{i}]")]);
    }
    if has_audio {
        a.extend(["-map", "0:a:0"].map(String::from));
    }
    let encoder = match (t.video_codec, t.hwaccel) {
        (VideoCodec::H264, HwAccel::None) => "libx264",
        (VideoCodec::H265, HwAccel::None) => "libx265",
        (VideoCodec::H264, HwAccel::Vaapi) => "h264_vaapi",
        (VideoCodec::H265, HwAccel::Vaapi) => "hevc_vaapi",
        (VideoCodec::H264, HwAccel::Nvenc) => "h264_nvenc",
        (VideoCodec::H265, HwAccel::Nvenc) => "hevc_nvenc",
        (VideoCodec::H264, HwAccel::Qsv) => "h264_qsv",
        (VideoCodec::H265, HwAccel::Qsv) => "hevc_qsv",
        (VideoCodec::Vp9, HwAccel::None) => "libvpx-vp9",
        (VideoCodec::Vp9, HwAccel::Vaapi) => "vp9_vaapi",
        // Refused by `validate`: NVENC has no VP9 encoder.
        (VideoCodec::Vp9, HwAccel::Nvenc) => "vp9_nvenc",
        (VideoCodec::Vp9, HwAccel::Qsv) => "vp9_qsv",
        // libaom, not SVT-AV1: ffmpeg 5.1's SVT-AV1 wrapper ignores forced keyframes, which the
        // renditions' alignment needs.
        (VideoCodec::Av1, HwAccel::None) => "libaom-av1",
        (VideoCodec::Av1, HwAccel::Vaapi) => "av1_vaapi",
        (VideoCodec::Av1, HwAccel::Nvenc) => "av1_nvenc",
        (VideoCodec::Av1, HwAccel::Qsv) => "av1_qsv",
    };
    let libvpx_or_aom = t.video_codec.fmp4_out() && t.hwaccel == HwAccel::None;
    a.extend(["-c:v".into(), encoder.into()]);
    for (i, r) in t.renditions.iter().enumerate() {
        let preset = if r.preset.is_empty() { &t.preset } else { &r.preset };
        a.extend([format!("-b:v:{i}"), r.video_bitrate.clone()]);
        a.extend([format!("-maxrate:v:{i}"), r.video_bitrate.clone()]);
        a.extend([format!("-bufsize:v:{i}"), double(&r.video_bitrate)]);
        if libvpx_or_aom {
            let speed = cpu_used(preset).unwrap_or(8);
            a.extend([format!("-cpu-used:v:{i}"), speed.to_string()]);
        } else if !preset.is_empty() && t.hwaccel != HwAccel::Vaapi {
            a.extend([format!("-preset:v:{i}"), preset.clone()]);
        }
        if !r.profile.is_empty() {
            a.extend([format!("-profile:v:{i}"), r.profile.clone()]);
        }
    }
    // Keyframes exactly where the source has them, and nowhere else.
    a.extend(
        [
            "-force_key_frames:v",
            "source",
            "-sc_threshold:v",
            "0",
            "-g:v",
            "1000",
        ]
        .map(String::from),
    );
    if t.hwaccel == HwAccel::None && t.video_codec == VideoCodec::H264 {
        a.extend(["-bf:v", "0"].map(String::from));
    }
    // Live, not file encoding: no look-ahead (it would add as many frames of latency).
    match (t.video_codec, t.hwaccel) {
        (VideoCodec::Vp9, HwAccel::None) => a.extend(
            [
                "-deadline:v",
                "realtime",
                "-lag-in-frames:v",
                "0",
                "-row-mt:v",
                "1",
            ]
            .map(String::from),
        ),
        (VideoCodec::Av1, HwAccel::None) => {
            a.extend(["-usage:v", "realtime", "-lag-in-frames:v", "0", "-row-mt:v", "1"].map(String::from))
        }
        _ => {}
    }
    match (has_audio, t.audio) {
        (false, _) => {}
        (true, AudioMode::Copy) => a.extend(["-c:a", "copy"].map(String::from)),
        (true, AudioMode::Aac) => a.extend([
            "-c:a".into(),
            "aac".into(),
            "-b:a".into(),
            t.audio_bitrate.clone(),
        ]),
    }
    a.extend(["-copyts", "-flush_packets", "1"].map(String::from));
    if t.video_codec.fmp4_out() {
        // A fragment per frame (`-frag_duration` of 1 µs): no frame waits for the next keyframe.
        // The moov waits for the first frame (`delay_moov`): libaom gives its sequence header,
        // which av1C carries, only with its first frame.
        a.extend(
            [
                "-f",
                "mp4",
                "-movflags",
                "empty_moov+delay_moov+default_base_moof",
                "-frag_duration",
                "1",
                "pipe:1",
            ]
            .map(String::from),
        );
    } else {
        a.extend(["-muxdelay", "0", "-muxpreload", "0", "-f", "mpegts", "pipe:1"].map(String::from));
    }
    a
}

fn double(bitrate: &str) -> String {
    let digits = bitrate.trim_end_matches(['k', 'K', 'M']);
    let unit = &bitrate[digits.len()..];
    format!("{}{unit}", digits.parse::<u64>().unwrap_or(0) * 2)
}

/// A path's transcoder as the API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TranscodeStatus {
    /// `running` (an encoder works), `restarting` (waiting to start a failed one again).
    pub state: &'static str,
    /// The rendition paths (`PATH/~NAME`).
    pub renditions: Vec<String>,
    /// Encoders started again after a failure or a stall.
    pub restarts: u64,
    /// Why the last encoder ended, when one failed.
    pub last_error: Option<String>,
    /// The running encoder's process id.
    pub pid: Option<u32>,
    /// Frames the encoders wrote, every rendition and track counted.
    pub frames_out: u64,
    /// Media time the encoder makes per second of wall time over the last seconds, its
    /// slowest rendition's (1.0: real time; below: it falls behind); null until measured.
    pub speed: Option<f64>,
    /// Each rendition's output over the last seconds, in ladder order.
    pub outputs: Vec<RenditionOutput>,
}

/// What one rendition's encoder makes, over the last seconds.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RenditionOutput {
    /// The rendition's path.
    pub path: String,
    /// Video frames per second.
    pub fps: Option<f64>,
    /// Bits per second (video and audio).
    pub bitrate: Option<u64>,
    /// Media time per second of wall time.
    pub speed: Option<f64>,
    /// The delay the ladder adds: from a source frame's arrival in the server to the same
    /// frame of this rendition (same timestamp) coming out of the encoder, mean, in ms.
    pub added_latency_ms: Option<f64>,
}

/// One rendition's output counters, sampled about once a second.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    dts: i64,
    frames: u64,
    bytes: u64,
    /// Sum and count of the added latencies measured (ms).
    latency_ms: f64,
    latencies: u64,
}

/// When the source's video frames came in, by presentation time (a rendition's frame has its
/// source frame's, decode times differ where the source has B-frames), for the added latency.
type FedAt = Arc<parking_lot::Mutex<Fed>>;

/// The source's video frames fed to the encoder: (pts, arrival) of the last [`FED_AT`], and the
/// pts of each keyframe with its number since the encoder started.
#[derive(Default)]
struct Fed {
    frames: std::collections::VecDeque<(i64, Instant)>,
    keys: std::collections::VecDeque<(u64, i64)>,
    key_count: u64,
}
/// Source frames remembered (about 30 s of 30 fps video).
const FED_AT: usize = 1024;

/// The samples of the last seconds, per rendition (ladder order).
type Meters = Arc<parking_lot::Mutex<Vec<std::collections::VecDeque<Sample>>>>;
/// The window the figures are measured over.
const METER_WINDOW: Duration = Duration::from_secs(5);

fn measure(
    path: &str,
    meters: &[std::collections::VecDeque<Sample>],
    names: &[Rendition],
) -> Vec<RenditionOutput> {
    names
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let w = meters.get(i).and_then(|q| {
                let (a, b) = (q.front()?, q.back()?);
                let secs = b.at.duration_since(a.at).as_secs_f64();
                // Stale: the encoder stopped writing.
                (secs >= 1.0 && b.at.elapsed() < Duration::from_secs(3)).then_some((a, b, secs))
            });
            let round = |x: f64| (x * 100.0).round() / 100.0;
            RenditionOutput {
                path: rendition_path(path, &r.name),
                fps: w.map(|(a, b, s)| round((b.frames - a.frames) as f64 / s)),
                bitrate: w.map(|(a, b, s)| ((b.bytes - a.bytes) as f64 * 8.0 / s) as u64),
                speed: w.map(|(a, b, s)| round((b.dts - a.dts) as f64 / sluice_media::CLOCK_RATE as f64 / s)),
                added_latency_ms: w.filter(|(a, b, _)| b.latencies > a.latencies).map(|(a, b, _)| {
                    ((b.latency_ms - a.latency_ms) / (b.latencies - a.latencies) as f64).round()
                }),
            }
        })
        .collect()
}

/// One path's entry in the store.
struct Entry {
    status: parking_lot::Mutex<TranscodeStatus>,
    frames: Arc<AtomicU64>,
    meters: Meters,
    ladder: Vec<Rendition>,
}

/// The running transcoders' status, by source path.
#[derive(Default)]
pub struct TranscodeStore {
    map: parking_lot::Mutex<std::collections::HashMap<String, Arc<Entry>>>,
    /// On-demand ladders: when each source path's renditions were last wanted.
    demanded: parking_lot::Mutex<std::collections::HashMap<String, Instant>>,
}

impl TranscodeStore {
    /// Someone wants `source`'s renditions now.
    pub fn demand(&self, source: &str) {
        let mut d = self.demanded.lock();
        // Entries of paths that went away are dropped as others come (bounded by live paths).
        if d.len() > 4096 {
            d.retain(|_, t| t.elapsed() < Duration::from_secs(3600));
        }
        d.insert(source.to_owned(), Instant::now());
    }

    /// Whether `source`'s on-demand renditions were wanted within `close_after`.
    pub fn is_demanded(&self, source: &str, close_after: Duration) -> bool {
        self.demanded
            .lock()
            .get(source)
            .is_some_and(|t| t.elapsed() < close_after)
    }

    /// The status of `path`'s transcoder while one runs.
    pub fn get(&self, path: &str) -> Option<TranscodeStatus> {
        let e = self.map.lock().get(path).cloned()?;
        let mut s = e.status.lock().clone();
        s.frames_out = e.frames.load(Relaxed);
        s.outputs = measure(path, &e.meters.lock(), &e.ladder);
        s.speed = s
            .outputs
            .iter()
            .map(|o| o.speed)
            .collect::<Option<Vec<f64>>>()
            .and_then(|v| v.into_iter().reduce(f64::min));
        Some(s)
    }
}

/// How long a reader of an on-demand rendition waits for the ladder to start.
const START_WAIT: Duration = Duration::from_secs(10);

/// Whether someone watches `source`'s on-demand renditions: wanted within `close_after` (a
/// reader asked for one), a reader of one now (any protocol), or HLS/DASH requests of the source
/// or a rendition within `close_after` (HLS viewers are not sessions). Seen watching renews the
/// demand, so the ladder stops `close_after` after the last viewer (checked by the periodic
/// reconcile of outputs).
pub fn is_watched(
    store: &TranscodeStore,
    registry: &Registry,
    hls: &sluice_hls::HlsStore,
    source: &str,
    t: &PathTranscode,
) -> bool {
    if store.is_demanded(source, t.close_after) {
        return true;
    }
    let renditions: Vec<String> = t
        .renditions
        .iter()
        .map(|r| rendition_path(source, &r.name))
        .collect();
    let reader = registry
        .stats()
        .sessions()
        .iter()
        .any(|s| s.role == sluice_media::stats::Role::Reader && renditions.contains(&s.path));
    let requested = std::iter::once(source)
        .chain(renditions.iter().map(String::as_str))
        .any(|p| {
            hls.get(p)
                .is_some_and(|s| s.viewers.requested_within(t.close_after))
        });
    if reader || requested {
        store.demand(source);
    }
    reader || requested
}

/// Starts an on-demand ladder for the first viewer of one of its renditions: a part of the
/// core's on-demand hook (beside on-demand pulls, `pull.rs`).
pub struct RenditionDemand {
    config: crate::reload::LiveConfig,
    registry: Registry,
    store: Arc<TranscodeStore>,
    rt: tokio::runtime::Handle,
}

impl RenditionDemand {
    pub fn new(config: crate::reload::LiveConfig, registry: Registry, store: Arc<TranscodeStore>) -> Self {
        RenditionDemand {
            config,
            registry,
            store,
            rt: tokio::runtime::Handle::current(),
        }
    }

    /// For a viewer of `path`: when it is a rendition of a live source whose ladder is on
    /// demand, the ladder starts (if it does not run) and the viewer may wait [`START_WAIT`] for
    /// its first frame; `None` otherwise.
    pub fn demand(&self, path: &str) -> Option<Duration> {
        let (source, name) = path.rsplit_once("/~")?;
        let cfg = self.config.get();
        let t = &cfg.path(source)?.transcode;
        if !t.on_demand || !t.renditions.iter().any(|r| r.name == name) || !self.registry.is_published(source)
        {
            return None;
        }
        if !self.store.is_demanded(source, t.close_after) || self.store.get(source).is_none() {
            tracing::info!(%path, "a viewer asks for a rendition: starting the on-demand ladder");
        }
        self.store.demand(source);
        // Not from here (the caller may hold the path's locks): the reconcile starts the
        // transcoder output, now wanted.
        let registry = self.registry.clone();
        self.rt.spawn(async move { registry.reconcile_outputs() });
        Some(START_WAIT)
    }
}

/// Starts the transcoder of `reader`'s path: runs until the reader ends (the path is over, a
/// reload removed the output, shutdown).
pub fn spawn(
    reader: Reader,
    settings: PathTranscode,
    registry: Registry,
    store: Arc<TranscodeStore>,
    rt: &tokio::runtime::Handle,
) {
    rt.spawn(async move {
        let path = reader.path().to_owned();
        let entry = Arc::new(Entry {
            status: parking_lot::Mutex::new(TranscodeStatus {
                state: "running",
                renditions: settings
                    .renditions
                    .iter()
                    .map(|r| rendition_path(&path, &r.name))
                    .collect(),
                restarts: 0,
                last_error: None,
                pid: None,
                frames_out: 0,
                speed: None,
                outputs: Vec::new(),
            }),
            frames: Arc::default(),
            meters: Arc::default(),
            ladder: settings.renditions.clone(),
        });
        store.map.lock().insert(path.clone(), entry.clone());
        run(reader, settings, registry, &entry).await;
        let mut map = store.map.lock();
        if map.get(&path).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
            map.remove(&path);
        }
    });
}

async fn run(mut reader: Reader, settings: PathTranscode, registry: Registry, entry: &Entry) {
    let path = reader.path().to_owned();
    let mut renditions: Vec<Option<Publisher>> = Vec::new();
    let mut backoff = Duration::from_secs(1);
    // The last start of the source: a restarted encoder is fed from it.
    let mut start: Option<Vec<Track>> = None;
    loop {
        let began = Instant::now();
        let end = encode_once(
            &mut reader,
            &settings,
            &registry,
            &path,
            &mut renditions,
            &mut start,
            entry,
        )
        .await;
        match end {
            End::SourceOver => {
                tracing::info!(%path, "transcoder stopped: the source ended");
                return;
            }
            End::Failed(why) => {
                {
                    let mut s = entry.status.lock();
                    s.state = "restarting";
                    s.restarts += 1;
                    s.pid = None;
                    s.last_error = Some(why.clone());
                }
                if began.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                tracing::warn!(%path, "transcoder failed ({why}); starting it again in {backoff:?}");
                if wait_or_end(&mut reader, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(settings.restart_max.max(Duration::from_secs(1)));
            }
        }
    }
}

enum End {
    SourceOver,
    Failed(String),
}

/// Waits `d` while draining the source (so its queue does not lag); true when it ended.
async fn wait_or_end(reader: &mut Reader, d: Duration) -> bool {
    let until = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(until, reader.recv()).await {
            Err(_) => return false,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return true,
        }
    }
}

fn spawn_ffmpeg(settings: &PathTranscode, input: &str, has_audio: bool) -> std::io::Result<Child> {
    Command::new(&settings.ffmpeg)
        .args(ffmpeg_args(settings, input, has_audio))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

/// One encoder's life: feed it, read it, publish what it makes; returns why it ended.
#[allow(clippy::too_many_arguments)]
async fn encode_once(
    reader: &mut Reader,
    settings: &PathTranscode,
    registry: &Registry,
    path: &str,
    renditions: &mut Vec<Option<Publisher>>,
    start: &mut Option<Vec<Track>>,
    entry: &Entry,
) -> End {
    // The source's tracks first (a restart reuses the last ones).
    while start.is_none() {
        match reader.recv().await {
            Ok(Event::Start(info)) => *start = Some(info.tracks.clone()),
            Ok(Event::Frame(_)) => {}
            Err(_) => return End::SourceOver,
        }
    }
    let tracks = start.clone().unwrap_or_default();
    let mut mux = match Input::new(&tracks) {
        Ok(m) => m,
        Err(e) => return End::Failed(format!("the source cannot be sent to the encoder: {e}")),
    };
    if !tracks
        .iter()
        .any(|t| t.kind() == MediaKind::Video && mux.carries(t.id))
    {
        return End::Failed("the source has no video the encoder can take".into());
    }
    let has_audio = tracks
        .iter()
        .any(|t| t.kind() == MediaKind::Audio && mux.carries(t.id));
    let mut child = match spawn_ffmpeg(settings, mux.format(), has_audio) {
        Ok(c) => c,
        Err(e) => return End::Failed(format!("cannot start {}: {e}", settings.ffmpeg)),
    };
    tracing::info!(%path, pid = child.id(), renditions = settings.renditions.len(), "transcoder started");
    {
        let mut s = entry.status.lock();
        s.state = "running";
        s.pid = child.id();
    }
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return End::Failed("no pipes to the encoder".into());
    };
    // The encoder's complaints, last lines kept for the log.
    let last_err = Arc::new(parking_lot::Mutex::new(String::new()));
    let le = last_err.clone();
    let err_task = tokio::spawn(async move {
        let mut stderr = stderr;
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let mut l = le.lock();
            l.push_str(&String::from_utf8_lossy(&buf[..n]));
            if l.len() > 2000 {
                let cut = l.len() - 1000;
                let cut = (cut..l.len()).find(|&i| l.is_char_boundary(i)).unwrap_or(0);
                l.drain(..cut);
            }
        }
    });
    // The encoder's output is read by its own task, never held up by feeding its input (a
    // pipe each way: waiting on one while the other fills would deadlock).
    let last_out = Arc::new(AtomicU64::new(0));
    let fed_at = FedAt::default();
    let since = Instant::now();
    let out_task = tokio::spawn(read_output(
        stdout,
        std::mem::take(renditions),
        settings.clone(),
        registry.clone(),
        path.to_owned(),
        last_out.clone(),
        entry.frames.clone(),
        entry.meters.clone(),
        fed_at.clone(),
    ));
    let mut out_task = std::pin::pin!(out_task);
    let mut out = BytesMut::with_capacity(64 * 1024);
    mux.write_header(&mut out);
    let mut fed: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut output_ended = None;
    let end = loop {
        tokio::select! {
            ev = reader.recv() => match ev {
                Ok(Event::Start(info)) => {
                    // New source tracks: the encoder starts again with them.
                    *start = Some(info.tracks.clone());
                    if info.tracks != tracks {
                        break End::Failed("the source's tracks changed".into());
                    }
                }
                Ok(Event::Frame(f)) => {
                    let video = tracks.iter().any(|t| t.id == f.track && t.kind() == MediaKind::Video);
                    if f.keyframe && video {
                        mux.keyframe(&mut out);
                    }
                    if video {
                        let mut fa = fed_at.lock();
                        if fa.frames.len() == FED_AT {
                            fa.frames.pop_front();
                        }
                        fa.frames.push_back((f.pts, f.arrived));
                        if f.keyframe {
                            let n = fa.key_count;
                            fa.key_count += 1;
                            if fa.keys.len() == 64 {
                                fa.keys.pop_front();
                            }
                            fa.keys.push_back((n, f.pts));
                        }
                    }
                    if mux.write_frame(&f, &mut out) && !out.is_empty() {
                        fed.get_or_insert_with(Instant::now);
                        // An encoder that stops reading without exiting is as stalled as one
                        // that stops writing.
                        match tokio::time::timeout(settings.stall_timeout, stdin.write_all(&out)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => break End::Failed(format!("the encoder stopped reading: {e}")),
                            Err(_) => {
                                break End::Failed(format!("the encoder read nothing for {:?}", settings.stall_timeout))
                            }
                        }
                        out.clear();
                    }
                }
                Err(ReadError::TooSlow { .. }) => {
                    // The core cut this output's reader: it cannot be fed again.
                    tracing::warn!(%path, "the encoder fell behind real time: the transcoder stops (its reader was cut)");
                    break End::SourceOver;
                }
                Err(_) => break End::SourceOver,
            },
            r = &mut out_task => {
                output_ended = Some(r);
                break End::Failed("the encoder exited".into());
            }
            _ = tick.tick() => {
                let last = last_out.load(Relaxed);
                let quiet = if last == 0 { fed.map(|f| f.elapsed()) } else {
                    Some(since.elapsed().saturating_sub(Duration::from_millis(last)))
                };
                if quiet.is_some_and(|q| q > settings.stall_timeout) {
                    break End::Failed(format!("the encoder wrote nothing for {:?}", settings.stall_timeout));
                }
            }
        }
    };
    drop(stdin);
    let _ = child.start_kill();
    let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    err_task.abort();
    // The renditions' publishers come back from the output task (it ends with the encoder's
    // stdout), so their readers stay connected across a restart.
    let back = match output_ended {
        Some(r) => r,
        None => tokio::time::timeout(Duration::from_secs(2), &mut out_task)
            .await
            .unwrap_or(Ok(Vec::new())),
    };
    *renditions = back.unwrap_or_default();
    let tail = last_err.lock().trim().to_owned();
    if !tail.is_empty() {
        tracing::warn!(%path, exit = ?status.ok().and_then(|s| s.ok()), "ffmpeg said: {}", tail.lines().last().unwrap_or(""));
    }
    if let End::SourceOver = end {
        renditions.clear();
    }
    end
}

/// Reads the encoder's MPEG-TS until it ends: publishes each rendition's frames and stamps
/// `last_out` (milliseconds since the task started) at each; gives the publishers back.
#[allow(clippy::too_many_arguments)]
async fn read_output(
    mut stdout: tokio::process::ChildStdout,
    mut renditions: Vec<Option<Publisher>>,
    settings: PathTranscode,
    registry: Registry,
    path: String,
    last_out: Arc<AtomicU64>,
    frames: Arc<AtomicU64>,
    meters: Meters,
    fed_at: FedAt,
) -> Vec<Option<Publisher>> {
    let since = Instant::now();
    // Per rendition: video frames, bytes and added latency, sampled into `meters` about once
    // a second.
    let mut counts: Vec<Counts> = vec![Counts::default(); settings.renditions.len()];
    meters.lock().clear();
    let mut demux = if settings.video_codec.fmp4_out() {
        OutputDemux::Fmp4(Fmp4StreamDemuxer::new())
    } else {
        OutputDemux::Ts(TsDemuxer::new())
    };
    let mut events = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut routes: Vec<Route> = Vec::new();
    loop {
        let n = match stdout.read(&mut buf).await {
            Ok(0) | Err(_) => return renditions,
            Ok(n) => n,
        };
        if let Err(e) = demux.push(&buf[..n], &mut events) {
            tracing::warn!(%path, "the encoder's output is not readable: {e}");
            return renditions;
        }
        for ev in events.drain(..) {
            match ev {
                DemuxEvent::Tracks(t) => {
                    routes = start_renditions(&t, &settings, &registry, &path, &mut renditions);
                }
                DemuxEvent::Frame(f) => {
                    last_out.store((since.elapsed().as_millis() as u64).max(1), Relaxed);
                    frames.fetch_add(1, Relaxed);
                    for r in routes.iter().filter(|r| r.tracks.contains(&f.track)) {
                        if let Some(c) = counts.get_mut(r.index) {
                            c.bytes += f.data.len() as u64;
                            if r.tracks.first() == Some(&f.track) {
                                c.frames += 1;
                                // The encoder keeps the source's timestamps (-copyts), and the demuxer
                                // counts from its first; but ffmpeg shifts them after a jump in the
                                // source's. Its keyframes are the source's (forced), one for one:
                                // each re-anchors the rendition's offset to the source's timeline.
                                let mut pts = f.pts + demux.base().unwrap_or(0);
                                let fed = fed_at.lock();
                                if f.keyframe {
                                    let n = c.keys;
                                    c.keys += 1;
                                    if let Some(&(_, src)) = fed.keys.iter().find(|(k, _)| *k == n) {
                                        c.offset = src - pts;
                                    }
                                }
                                pts += c.offset;
                                // (FLV carries milliseconds, decode time and offset each rounded: 5 ms of
                                // slack; frames are tens of ms apart.)
                                let came = fed
                                    .frames
                                    .iter()
                                    .rev()
                                    .find(|(p, _)| (p - pts).abs() <= 450)
                                    .map(|x| x.1);
                                drop(fed);
                                if let Some(came) = came {
                                    c.latency_ms += came.elapsed().as_secs_f64() * 1000.0;
                                    c.latencies += 1;
                                }
                                sample(&meters, r.index, f.dts, c);
                            }
                        }
                        if let Some(slot) = renditions.get_mut(r.index) {
                            // A rendition kicked through the API is gone; the others go on.
                            if slot.as_ref().is_some_and(|p| p.is_cancelled()) {
                                *slot = None;
                            }
                            if let Some(p) = slot {
                                p.write(f.clone());
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The reader of the encoder's output: MPEG-TS, or fragmented MP4 for VP9 and AV1.
enum OutputDemux {
    Ts(TsDemuxer),
    Fmp4(Fmp4StreamDemuxer),
}

impl OutputDemux {
    fn push(&mut self, data: &[u8], out: &mut Vec<DemuxEvent>) -> Result<(), sluice_container::Error> {
        match self {
            OutputDemux::Ts(d) => d.push(data, out),
            OutputDemux::Fmp4(d) => d.push(data, out),
        }
    }

    /// What the demuxer subtracted from the stream's timestamps.
    fn base(&self) -> Option<i64> {
        match self {
            OutputDemux::Ts(d) => d.base(),
            OutputDemux::Fmp4(d) => d.base(),
        }
    }
}

/// Which of the encoder's tracks go to rendition `index`.
struct Route {
    index: usize,
    tracks: Vec<sluice_media::TrackId>,
}

/// One rendition's running counts.
#[derive(Clone, Copy, Default)]
struct Counts {
    frames: u64,
    bytes: u64,
    latency_ms: f64,
    latencies: u64,
    /// Keyframes out, and the offset from this rendition's timestamps to the source's.
    keys: u64,
    offset: i64,
}

/// Adds a sample of rendition `i` when its last is a second old, keeping the last
/// [`METER_WINDOW`].
fn sample(meters: &Meters, i: usize, dts: i64, c: &Counts) {
    let now = Instant::now();
    let mut m = meters.lock();
    if m.len() <= i {
        m.resize_with(i + 1, Default::default);
    }
    let q = &mut m[i];
    if q.back()
        .is_some_and(|b| now.duration_since(b.at) < Duration::from_secs(1))
    {
        return;
    }
    q.push_back(Sample {
        at: now,
        dts,
        frames: c.frames,
        bytes: c.bytes,
        latency_ms: c.latency_ms,
        latencies: c.latencies,
    });
    while q.front().is_some_and(|a| now.duration_since(a.at) > METER_WINDOW) {
        q.pop_front();
    }
}

/// What the encoder is fed on its stdin. FLV for H.264 with AAC, MP3 or no audio: ffmpeg 5.1
/// takes a piped FLV for about 30 % less CPU than the same stream as a piped MPEG-TS (measured
/// on the 1080p ladder of bench/transcode.sh: 70-73 % of a core against 100-104 %). MPEG-TS for
/// every other source (H.265, AV1, VP9, Opus, ...), which ffmpeg 5.1 does not read from FLV.
enum Input {
    Flv {
        info: sluice_media::StreamInfo,
        writer: sluice_container::flv::FlvWriter,
        parts: Vec<bytes::Bytes>,
    },
    Ts(TsMuxer),
}

impl Input {
    fn new(tracks: &[Track]) -> Result<Input, String> {
        use sluice_media::CodecId;
        let video = tracks.iter().find(|t| t.kind() == MediaKind::Video);
        let audio = tracks.iter().find(|t| t.kind() == MediaKind::Audio);
        let flv = video.is_some_and(|v| v.codec == CodecId::H264)
            && audio.is_none_or(|a| matches!(a.codec, CodecId::Aac | CodecId::Mp3));
        if flv {
            let info = sluice_media::StreamInfo {
                tracks: video.into_iter().chain(audio).cloned().collect(),
                epoch: 0,
                discontinuity: false,
                started_at: std::time::SystemTime::now(),
            };
            return Ok(Input::Flv {
                info,
                writer: Default::default(),
                parts: Vec::new(),
            });
        }
        TsMuxer::new(tracks).map(Input::Ts).map_err(|e| e.to_string())
    }

    fn format(&self) -> &'static str {
        match self {
            Input::Flv { .. } => "flv",
            Input::Ts(_) => "mpegts",
        }
    }

    fn carries(&self, track: sluice_media::TrackId) -> bool {
        match self {
            Input::Flv { info, .. } => info.track(track).is_some(),
            Input::Ts(m) => m.carries(track),
        }
    }

    /// What the stream starts with: FLV's header and sequence headers, or the TS tables.
    fn write_header(&mut self, out: &mut BytesMut) {
        match self {
            Input::Flv { info, .. } => out.extend_from_slice(&sluice_container::flv::FlvWriter::header(info)),
            Input::Ts(m) => m.write_tables(out),
        }
    }

    /// Before a video keyframe: the TS tables again.
    fn keyframe(&mut self, out: &mut BytesMut) {
        if let Input::Ts(m) = self {
            m.write_tables(out);
        }
    }

    /// Appends a frame; false when it cannot be carried.
    fn write_frame(&mut self, f: &sluice_media::Frame, out: &mut BytesMut) -> bool {
        match self {
            Input::Flv { info, writer, parts } => {
                writer.frame(info, f, parts);
                for p in parts.drain(..) {
                    out.extend_from_slice(&p);
                }
                true
            }
            Input::Ts(m) => m.write_frame(f, out).is_ok(),
        }
    }
}

/// Publishes (or starts again) each rendition with its video track and the audio track of the
/// encoder's output; returns the routing of the output's tracks.
fn start_renditions(
    tracks: &[Track],
    settings: &PathTranscode,
    registry: &Registry,
    path: &str,
    renditions: &mut Vec<Option<Publisher>>,
) -> Vec<Route> {
    let videos: Vec<&Track> = tracks.iter().filter(|t| t.kind() == MediaKind::Video).collect();
    let audio = tracks.iter().find(|t| t.kind() == MediaKind::Audio);
    renditions.resize_with(settings.renditions.len(), || None);
    let mut routes = Vec::new();
    for (i, r) in settings.renditions.iter().enumerate() {
        let Some(v) = videos.get(i) else { break };
        let mut list = vec![(*v).clone()];
        list.extend(audio.cloned());
        if renditions[i].is_none() {
            let rpath = rendition_path(path, &r.name);
            let info = SessionInfo {
                protocol: "transcode",
                remote: None,
            };
            match registry.publish_derived(&rpath, info) {
                Ok(p) => renditions[i] = Some(p),
                Err(e) => {
                    tracing::warn!(path = %rpath, "cannot publish the rendition: {e}");
                    continue;
                }
            }
        }
        if let Some(p) = renditions[i].as_mut() {
            p.start(list.clone());
        }
        routes.push(Route {
            index: i,
            tracks: list.iter().map(|t| t.id).collect(),
        });
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_of_a_ladder() {
        let t = PathTranscode {
            renditions: vec![
                Rendition {
                    name: "480p".into(),
                    height: 480,
                    video_bitrate: "1200k".into(),
                    ..Default::default()
                },
                Rendition {
                    name: "360p".into(),
                    width: 640,
                    height: 360,
                    video_bitrate: "700k".into(),
                    fps: 15,
                    profile: "main".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let a = ffmpeg_args(&t, "mpegts", true).join(" ");
        assert!(a.contains("-f mpegts -i pipe:0"), "{a}");
        assert!(
            a.contains("[0:v:0]split=2[s0][s1];[s0]scale=-2:480[v0];[s1]scale=640:360,fps=15[v1]"),
            "{a}"
        );
        assert!(a.contains("-map [v0] -map [v1] -map 0:a:0"), "{a}");
        assert!(a.contains("-c:v libx264"), "{a}");
        assert!(
            a.contains("-b:v:0 1200k -maxrate:v:0 1200k -bufsize:v:0 2400k -preset:v:0 veryfast"),
            "{a}"
        );
        assert!(a.contains("-profile:v:1 main"), "{a}");
        assert!(a.contains("-force_key_frames:v source"), "{a}");
        assert!(
            a.ends_with("-copyts -flush_packets 1 -muxdelay 0 -muxpreload 0 -f mpegts pipe:1"),
            "{a}"
        );
        assert!(a.contains("-c:a copy"), "{a}");
        let aac = PathTranscode {
            audio: AudioMode::Aac,
            ..t.clone()
        };
        assert!(ffmpeg_args(&aac, "flv", true)
            .join(" ")
            .contains("-c:a aac -b:a 128k"));
        let silent = ffmpeg_args(&t, "flv", false).join(" ");
        assert!(!silent.contains("0:a") && !silent.contains("-c:a"), "{silent}");
        let hw = PathTranscode {
            hwaccel: HwAccel::Nvenc,
            ..t.clone()
        };
        assert!(ffmpeg_args(&hw, "flv", true)
            .join(" ")
            .contains("-c:v h264_nvenc"));
        // VP9 and AV1: real-time libvpx / libaom, their speed from the preset, fMP4 out.
        for (codec, encoder, mode) in [
            (VideoCodec::Vp9, "libvpx-vp9", "-deadline:v realtime"),
            (VideoCodec::Av1, "libaom-av1", "-usage:v realtime"),
        ] {
            let v = PathTranscode {
                video_codec: codec,
                ..t.clone()
            };
            let a = ffmpeg_args(&v, "flv", true).join(" ");
            assert!(a.contains(&format!("-c:v {encoder}")), "{a}");
            assert!(a.contains("-cpu-used:v:0 7") && !a.contains("-preset"), "{a}");
            assert!(a.contains(&format!("{mode} -lag-in-frames:v 0")), "{a}");
            assert!(a.contains("-force_key_frames:v source"), "{a}");
            assert!(
                a.ends_with(
                    "-f mp4 -movflags empty_moov+delay_moov+default_base_moof -frag_duration 1 pipe:1"
                ),
                "{a}"
            );
        }
    }

    #[test]
    fn settings_are_checked() {
        let c = crate::config::Config::parse(
            "[paths.\"live/*\".transcode]\nrenditions = [{ name = \"480p\", height = 480, video_bitrate = \"1200k\" }]\n",
            Vec::new(),
        )
        .unwrap();
        assert_eq!(c.path("live/a").unwrap().transcode.renditions[0].name, "480p");
        for bad in [
            "renditions = [{ name = \"a b\", height = 480, video_bitrate = \"1k\" }]",
            "renditions = [{ name = \"a\", height = 480, video_bitrate = \"fast\" }]",
            "renditions = [{ name = \"a\", video_bitrate = \"1k\" }]",
            "renditions = [{ name = \"a\", height = 481, video_bitrate = \"1k\" }]",
            "renditions = [{ name = \"a\", height = 480, video_bitrate = \"1k\" }, { name = \"a\", height = 360, video_bitrate = \"1k\" }]",
            "video_codec = \"vp9\"\nhwaccel = \"nvenc\"",
            "video_codec = \"av1\"\npreset = \"12\"",
            "video_codec = \"vp9\"\nrenditions = [{ name = \"a\", height = 480, video_bitrate = \"1k\", preset = \"turbo\" }]",
        ] {
            let text = format!("[paths.\"live/*\".transcode]\n{bad}\n");
            assert!(crate::config::Config::parse(&text, Vec::new()).is_err(), "{bad}");
        }
    }
}
