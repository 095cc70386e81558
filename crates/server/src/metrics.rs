//! Prometheus metrics on 9998 (127.0.0.1 by default): `GET /metrics`.
//!
//! This module owns the metrics listener's router, the `sluice_*` series and their names (each
//! documented in docs/metrics.md), the count of refusals (a consumer of the event bus) and the
//! process series read from `/proc/self`. It keeps no per-session state: every scrape renders
//! the core's snapshots (`registry.paths()`, `registry.stats().sessions()`, the shared
//! [`Rates`]) through one prometheus-client [`Collector`], so a session's series are gone from
//! the first scrape after it ends and nothing has to be removed. At most `max_session_series`
//! sessions get series of their own per scrape (publishers first, then the oldest); the rest
//! are counted (`sluice_session_series_omitted`, `sluice_session_series_dropped_total`).
//! Path health comes from the [`HealthStore`] the `health` outputs fill.
//!
//! The body is the Prometheus text format 0.0.4, or OpenMetrics 1.0 when the scraper's `Accept`
//! header asks for it (Prometheus does). Encoding runs on the blocking pool, off the media tasks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use sluice_media::stats::{LinkStats, Role, SessionSnapshot};
use sluice_media::{MediaKind, Registry};
use tokio_util::sync::CancellationToken;

use crate::api::Rates;
use crate::config::MetricsConfig;
use crate::health::HealthStore;
use crate::http_error::HttpError;
use sluice_record::Recordings;

/// The OpenMetrics content type, served when the scraper accepts it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics endpoint's state: a prometheus-client registry holding the one collector.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<prometheus_client::registry::Registry>,
}

impl Metrics {
    /// The metrics of `core`, without the refusal counter's event consumer (see [`start`]).
    ///
    /// [`start`]: Metrics::start
    pub fn new(
        core: Registry,
        rates: Arc<Rates>,
        health: Arc<HealthStore>,
        recordings: Option<Arc<Recordings>>,
        max_session_series: usize,
    ) -> (Metrics, Arc<Refusals>) {
        let refusals = Arc::new(Refusals::default());
        let collector = Snapshots {
            core,
            rates,
            health,
            recordings,
            max_session_series,
            refusals: refusals.clone(),
            left_out: Mutex::default(),
            dropped: AtomicU64::new(0),
        };
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(collector));
        (
            Metrics {
                registry: Arc::new(registry),
            },
            refusals,
        )
    }

    /// The metrics, with a consumer of the event bus counting refusals until `stop`.
    pub fn start(
        core: Registry,
        rates: Arc<Rates>,
        health: Arc<HealthStore>,
        recordings: Arc<Recordings>,
        cfg: &MetricsConfig,
        stop: CancellationToken,
    ) -> Metrics {
        let rx = core.events().subscribe("metrics", 1024);
        let (metrics, refusals) = Metrics::new(core, rates, health, Some(recordings), cfg.max_session_series);
        tokio::spawn(count_refusals(rx, refusals, stop));
        metrics
    }

    /// Renders every series: OpenMetrics 1.0 (with `# EOF`) or the Prometheus text format 0.0.4.
    pub fn render(&self, openmetrics: bool) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(64 * 1024);
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        }
        Ok(out)
    }
}

/// Refusals (`ServerEvent::AccessDenied`) by protocol and action, and events this consumer
/// missed because it fell behind.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    missed_events: AtomicU64,
}

impl Refusals {
    pub fn record(&self, protocol: &'static str, action: &'static str, reason: &'static str) {
        *self.counts.lock().entry((protocol, action, reason)).or_default() += 1;
    }
}

async fn count_refusals(
    mut rx: sluice_media::events::EventReceiver,
    refusals: Arc<Refusals>,
    stop: CancellationToken,
) {
    use sluice_media::events::{Received, ServerEvent};
    loop {
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.recv() => r,
        };
        match r {
            None => return,
            Some(Received::Missed(n)) => {
                refusals.missed_events.fetch_add(n, Relaxed);
            }
            Some(Received::Event(e)) => {
                if let ServerEvent::AccessDenied {
                    action,
                    protocol,
                    code,
                    ..
                } = e.event
                {
                    refusals.record(protocol, action, code);
                }
            }
        }
    }
}

/// The metrics listener's routes: `GET /metrics`, and a pointer to it at `/`.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route(
            "/",
            get(|| async { "Sluice metrics: GET /metrics (Prometheus text format; docs/metrics.md)\n" }),
        )
        .fallback(|| async { HttpError::not_found("no such endpoint: the metrics are at /metrics") })
        .method_not_allowed_fallback(|| async {
            HttpError::method_not_allowed("the metrics are read with GET /metrics")
        })
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Metrics>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let rendered = tokio::task::spawn_blocking(move || metrics.render(openmetrics)).await;
    match rendered {
        Ok(Ok(body)) => {
            let ctype = if openmetrics {
                OPENMETRICS
            } else {
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE
            };
            ([(header::CONTENT_TYPE, ctype)], body).into_response()
        }
        Ok(Err(_)) | Err(_) => HttpError::internal("the metrics could not be rendered").into_response(),
    }
}

/// The collector: renders the core's snapshots at each scrape.
struct Snapshots {
    core: Registry,
    rates: Arc<Rates>,
    health: Arc<HealthStore>,
    recordings: Option<Arc<Recordings>>,
    max_session_series: usize,
    refusals: Arc<Refusals>,
    /// Live sessions that have been left out of some scrape (each counted once in `dropped`).
    left_out: Mutex<HashSet<u64>>,
    dropped: AtomicU64,
}

impl fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshots")
            .field("max_session_series", &self.max_session_series)
            .finish()
    }
}

/// One family of gauges: a descriptor and its samples.
fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One family of counters (`name` without `_total`: the encoder adds it).
fn counters<L: EncodeLabelSet, V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One family of info metrics (`name` without `_info`: the encoder adds it), each sample 1.
fn infos<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    samples: impl IntoIterator<Item = L>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Info)?;
    for labels in samples {
        m.encode_info(&labels)?;
    }
    Ok(())
}

/// A gauge without labels.
fn gauge<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    v: V,
) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

/// A counter without labels.
fn counter<V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    v: V,
) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

/// The label set of a path's series.
fn path_label(path: &str) -> [(&'static str, &str); 1] {
    [("path", path)]
}

/// A finite float (NaN and infinities become 0: a scraper would store them as they are).
fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// The labels of one session's series.
type SessionLabels<'a> = [(&'static str, &'a str); 4];

impl Collector for Snapshots {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let paths = self.core.paths();
        let sessions = self.core.stats().sessions();

        infos(
            &mut enc,
            "sluice_build",
            "Sluice's version.",
            [[("version", env!("CARGO_PKG_VERSION"))]],
        )?;

        // Every session, counted by protocol and role (never capped).
        let mut by_kind: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for s in &sessions {
            *by_kind.entry((s.protocol, s.role.name())).or_default() += 1;
        }
        gauges(
            &mut enc,
            "sluice_sessions",
            "Open sessions (publishers, readers, outputs, transforms) by protocol and role.",
            by_kind
                .iter()
                .map(|((p, r), n)| ([("protocol", *p), ("role", *r)], *n)),
        )?;

        self.encode_paths(&mut enc, &paths, &sessions)?;
        self.encode_health(&mut enc)?;
        {
            let r = sluice_hls::ALL_PARTS.snapshot();
            let mut m = enc.encode_descriptor(
                "sluice_hls_part_ready_seconds",
                "Time from the arrival of the frame that completes an LL-HLS/LL-DASH part to the part being servable, every path.",
                None,
                MetricType::Histogram,
            )?;
            m.encode_histogram::<Vec<(String, String)>>(r.sum_seconds, r.count(), &r.buckets(), None)?;
        }
        self.encode_recordings(&mut enc)?;

        // Per session, capped: publishers first, then the oldest (stable from scrape to scrape).
        let mut order: Vec<&SessionSnapshot> = sessions.iter().collect();
        order.sort_by_key(|s| (s.role != Role::Publisher, s.id));
        let cap = self.max_session_series.min(order.len());
        let (kept, omitted) = order.split_at(cap);
        {
            let mut left_out = self.left_out.lock();
            let live: HashSet<u64> = sessions.iter().map(|s| s.id).collect();
            left_out.retain(|id| live.contains(id));
            let mut new = 0u64;
            for s in omitted {
                if left_out.insert(s.id) {
                    new += 1;
                }
            }
            self.dropped.fetch_add(new, Relaxed);
        }
        gauge(
            &mut enc,
            "sluice_session_series_omitted",
            "Sessions left out of the per-session series of this scrape ([metrics] max_session_series).",
            omitted.len() as i64,
        )?;
        counter(
            &mut enc,
            "sluice_session_series_dropped",
            "Sessions that were left out of the per-session series of at least one scrape, each counted once.",
            self.dropped.load(Relaxed),
        )?;
        self.encode_sessions(&mut enc, kept)?;

        // Refusals.
        let refusals: Vec<_> = self
            .refusals
            .counts
            .lock()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        counters(
            &mut enc,
            "sluice_access_denied",
            "Requests the access policy refused, by protocol, action (publish, read, playback, api, metrics) and reason (docs/security.md).",
            refusals
                .iter()
                .map(|((p, a, r), n)| ([("protocol", *p), ("action", *a), ("reason", *r)], *n)),
        )?;
        counter(
            &mut enc,
            "sluice_metrics_events_missed",
            "Events the metrics' consumer of the event bus missed because it fell behind (refusals may be undercounted).",
            self.refusals.missed_events.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "sluice_events_dropped",
            "Events dropped because a consumer of the event bus (log, webhooks, SSE, metrics) was too slow.",
            self.core.events().dropped(),
        )?;

        encode_process(&mut enc)
    }
}

impl Snapshots {
    fn encode_paths(
        &self,
        enc: &mut DescriptorEncoder,
        paths: &[sluice_media::stats::PathSnapshot],
        sessions: &[SessionSnapshot],
    ) -> fmt::Result {
        let by_id: HashMap<u64, &SessionSnapshot> = sessions.iter().map(|s| (s.id, s)).collect();
        gauges(
            enc,
            "sluice_path_online",
            "Whether the path has a publisher now (0 while it waits through its grace period).",
            paths.iter().map(|p| (path_label(&p.name), i64::from(p.online))),
        )?;
        counters(
            enc,
            "sluice_path_in_bytes",
            "Media payload bytes the path received from its publishers.",
            paths.iter().map(|p| (path_label(&p.name), p.bytes_in)),
        )?;
        counters(
            enc,
            "sluice_path_in_frames",
            "Frames (access units) the path received from its publishers.",
            paths.iter().map(|p| (path_label(&p.name), p.frames_in)),
        )?;
        gauges(
            enc,
            "sluice_path_in_bitrate_bps",
            "Incoming media bitrate in bits per second over the last 5 s (the API's bitrate_in).",
            paths
                .iter()
                .map(|p| (path_label(&p.name), self.rates.path_bps(&p.name))),
        )?;
        gauges(
            enc,
            "sluice_path_epoch",
            "Publisher restarts and codec changes seen on the path.",
            paths.iter().map(|p| (path_label(&p.name), p.epoch)),
        )?;
        // Viewer sessions by protocol (as the API's readers_by_protocol).
        let mut readers: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for s in sessions.iter().filter(|s| s.role == Role::Reader) {
            *readers.entry((s.path.as_str(), s.protocol)).or_default() += 1;
        }
        gauges(
            enc,
            "sluice_path_readers",
            "Reader (viewer) sessions of the path by protocol.",
            readers
                .iter()
                .map(|((path, proto), n)| ([("path", *path), ("protocol", *proto)], *n)),
        )?;
        let mut tracks = Vec::new();
        for p in paths {
            for (t, derived) in p
                .tracks
                .iter()
                .map(|t| (t, "false"))
                .chain(p.derived.iter().map(|t| (t, "true")))
            {
                let video = t.kind() == MediaKind::Video;
                let (a, b) = if video {
                    (("width", t.width.to_string()), ("height", t.height.to_string()))
                } else {
                    (
                        ("sample_rate", t.sample_rate.to_string()),
                        ("channels", t.channels.to_string()),
                    )
                };
                tracks.push([
                    ("path", p.name.clone()),
                    ("track", t.id.to_string()),
                    ("kind", (if video { "video" } else { "audio" }).to_owned()),
                    ("codec", t.codec.name().to_owned()),
                    ("derived", derived.to_owned()),
                    (a.0, a.1),
                    (b.0, b.1),
                ]);
            }
        }
        infos(
            enc,
            "sluice_path_track",
            "The path's tracks: codec, and resolution or sample rate and channels; derived=\"true\" for tracks the server makes (audio conversions).",
            tracks,
        )?;
        let mut outputs = Vec::new();
        for p in paths {
            for (name, id) in &p.outputs {
                let state = by_id.get(id).map_or("closed", |s| s.state.name());
                outputs.push([
                    ("path", p.name.as_str()),
                    ("output", name.as_str()),
                    ("state", state),
                ]);
            }
        }
        gauges(
            enc,
            "sluice_path_output_state",
            "The path's outputs (HLS packager, recorder, pushes) and their session's state (always 1).",
            outputs.into_iter().map(|l| (l, 1i64)),
        )
    }

    /// The paths' stream health (the `health` outputs): states, and the figures behind them.
    fn encode_health(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let all = self.health.all();
        let mut states = Vec::new();
        for (path, h) in &all {
            for (check, state) in [
                ("stream", h.stream.name()),
                ("audio", h.audio.name()),
                ("video", h.video.name()),
                ("silence", h.silence.name()),
                ("timestamps", h.timestamps.name()),
            ] {
                states.push([("path", path.as_str()), ("check", check), ("state", state)]);
            }
        }
        gauges(
            enc,
            "sluice_path_health",
            "The path's health checks (always 1): stream (starting, flowing, stalled, offline), audio and video (unknown, present, absent), silence (unknown, sound, silent), timestamps (steady, jumping).",
            states.into_iter().map(|l| (l, 1i64)),
        )?;
        counters(
            enc,
            "sluice_path_stalls",
            "Stalls (no media for the path's stall_after) since the path went live.",
            all.iter().map(|(p, h)| (path_label(p), h.stalls)),
        )?;
        counters(
            enc,
            "sluice_path_timestamp_jumps",
            "DTS jumps (more than 1 s forward, or backward, on one track) since the path went live.",
            all.iter().map(|(p, h)| (path_label(p), h.timestamp_jumps)),
        )?;
        counters(
            enc,
            "sluice_path_audio_decode_errors",
            "Audio frames that did not decode for the silence detection.",
            all.iter().map(|(p, h)| (path_label(p), h.audio_decode_errors)),
        )?;
        let opt = |f: fn(&crate::health::PathHealth) -> Option<f64>| {
            all.iter()
                .filter_map(move |(p, h)| f(h).map(|v| (path_label(p), finite(v))))
        };
        gauges(
            enc,
            "sluice_path_since_last_frame_seconds",
            "Time since the path's last frame (no sample before the first).",
            opt(|h| h.last_frame_ms.map(|ms| ms as f64 / 1000.0)),
        )?;
        gauges(
            enc,
            "sluice_path_video_fps",
            "Video frames per second over the last 5 s of media time.",
            opt(|h| h.video_fps),
        )?;
        gauges(
            enc,
            "sluice_path_keyframe_interval_seconds",
            "Mean spacing of the latest keyframes.",
            opt(|h| h.keyframe_interval_s),
        )?;
        gauges(
            enc,
            "sluice_path_audio_level_dbfs",
            "RMS level of the last second of decoded audio, in dBFS (-100 for digital silence).",
            opt(|h| h.audio_level_db.map(f64::from)),
        )?;
        gauges(
            enc,
            "sluice_path_audio_peak_dbfs",
            "Peak level of the last second of decoded audio, in dBFS.",
            opt(|h| h.audio_peak_db.map(f64::from)),
        )?;
        gauges(
            enc,
            "sluice_path_audio_quiet_seconds",
            "How long the audio has been quieter than the path's silence_level, in seconds of audio.",
            all.iter().map(|(p, h)| (path_label(p), finite(h.quiet_s))),
        )
    }

    /// Recorders (running ones) and what is on disk per path.
    fn encode_recordings(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let Some(rec) = &self.recordings else {
            return Ok(());
        };
        let running = rec.statuses();
        gauges(
            enc,
            "sluice_recording_state",
            "A running recorder's state (always 1): recording, waiting (for a keyframe or the publisher), error (retrying).",
            running
                .iter()
                .map(|(p, s)| ([("path", p.as_str()), ("state", s.state)], 1i64)),
        )?;
        counters(
            enc,
            "sluice_recording_written_bytes",
            "Bytes the path's recorder has written since it started.",
            running.iter().map(|(p, s)| (path_label(p), s.bytes_written)),
        )?;
        counters(
            enc,
            "sluice_recording_segments_completed",
            "Segments the path's recorder has completed since it started.",
            running.iter().map(|(p, s)| (path_label(p), s.segments_completed)),
        )?;
        counters(
            enc,
            "sluice_recording_dropped_fragments",
            "Fragments not written because the disk failed or fell behind.",
            running.iter().map(|(p, s)| (path_label(p), s.dropped_fragments)),
        )?;
        let disk = rec.catalog().summaries();
        gauges(
            enc,
            "sluice_recordings_bytes",
            "Bytes of the path's recordings on disk.",
            disk.iter().map(|s| (path_label(&s.path), s.bytes as i64)),
        )?;
        gauges(
            enc,
            "sluice_recordings_segments",
            "Recording segments of the path on disk.",
            disk.iter().map(|s| (path_label(&s.path), s.segments as i64)),
        )
    }

    fn encode_sessions(&self, enc: &mut DescriptorEncoder, kept: &[&SessionSnapshot]) -> fmt::Result {
        let ids: Vec<String> = kept.iter().map(|s| s.id.to_string()).collect();
        let labels: Vec<SessionLabels> = kept
            .iter()
            .zip(&ids)
            .map(|(s, id)| {
                [
                    ("id", id.as_str()),
                    ("protocol", s.protocol),
                    ("role", s.role.name()),
                    ("path", s.path.as_str()),
                ]
            })
            .collect();
        let each = |f: fn(&SessionSnapshot) -> u64| kept.iter().zip(&labels).map(move |(s, l)| (*l, f(s)));
        gauges(
            enc,
            "sluice_session_state",
            "The session's state (always 1): starting, live, waiting (for its publisher), closing.",
            kept.iter()
                .zip(&labels)
                .map(|(s, l)| ((*l, [("state", s.state.name())]), 1i64)),
        )?;
        gauges(
            enc,
            "sluice_session_start_time_seconds",
            "When the session started, in seconds since the Unix epoch.",
            kept.iter().zip(&labels).map(|(s, l)| {
                let t = s
                    .started
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                (*l, t)
            }),
        )?;
        counters(
            enc,
            "sluice_session_in_bytes",
            "Bytes the session received.",
            each(|s| s.bytes_in),
        )?;
        counters(
            enc,
            "sluice_session_out_bytes",
            "Bytes the session sent.",
            each(|s| s.bytes_out),
        )?;
        counters(
            enc,
            "sluice_session_in_frames",
            "Frames the session received (publishers).",
            each(|s| s.frames_in),
        )?;
        counters(
            enc,
            "sluice_session_out_frames",
            "Frames the session sent (readers, outputs).",
            each(|s| s.frames_out),
        )?;
        counters(
            enc,
            "sluice_session_dropped_frames",
            "Frames a reader skipped because it fell behind.",
            each(|s| s.frames_dropped),
        )?;
        counters(
            enc,
            "sluice_session_keyframe_requests",
            "Keyframe requests the session sent (readers) or received (publishers).",
            each(|s| s.keyframe_requests),
        )?;
        let rates: Vec<(u64, u64)> = kept.iter().map(|s| self.rates.session_bps(s.id)).collect();
        gauges(
            enc,
            "sluice_session_in_bitrate_bps",
            "Bits per second the session received over the last 5 s.",
            labels.iter().zip(&rates).map(|(l, r)| (*l, r.0)),
        )?;
        gauges(
            enc,
            "sluice_session_out_bitrate_bps",
            "Bits per second the session sent over the last 5 s.",
            labels.iter().zip(&rates).map(|(l, r)| (*l, r.1)),
        )?;

        // Link statistics of the packet transports (SRT, WebRTC).
        let linked: Vec<(SessionLabels, &LinkStats)> = kept
            .iter()
            .zip(&labels)
            .filter_map(|(s, l)| s.link.as_ref().map(|k| (*l, k)))
            .collect();
        let link_g = |f: fn(&LinkStats) -> f64| linked.iter().map(move |(l, k)| (*l, finite(f(k))));
        let link_c = |f: fn(&LinkStats) -> u64| linked.iter().map(move |(l, k)| (*l, f(k)));
        infos(
            enc,
            "sluice_session_link",
            "The transport's link state as it names it, and the selected ICE candidate pair (WebRTC).",
            linked.iter().map(|(l, k)| {
                (
                    *l,
                    [("state", k.state), ("candidate_pair", k.candidate_pair.as_str())],
                )
            }),
        )?;
        gauges(
            enc,
            "sluice_session_link_rtt_seconds",
            "Round-trip time of the link.",
            link_g(|k| k.rtt_ms / 1000.0),
        )?;
        gauges(
            enc,
            "sluice_session_link_send_rate_bps",
            "Sending rate the transport measures, in bits per second.",
            link_g(|k| k.send_mbps * 1e6),
        )?;
        gauges(
            enc,
            "sluice_session_link_recv_rate_bps",
            "Receiving rate the transport measures, in bits per second.",
            link_g(|k| k.recv_mbps * 1e6),
        )?;
        counters(
            enc,
            "sluice_session_link_sent_packets",
            "Packets sent on the link.",
            link_c(|k| k.packets_sent),
        )?;
        counters(
            enc,
            "sluice_session_link_received_packets",
            "Packets received on the link.",
            link_c(|k| k.packets_received),
        )?;
        counters(
            enc,
            "sluice_session_link_lost_packets",
            "Packets lost on the way (detected by the receiver, or reported to the sender).",
            link_c(|k| k.packets_lost),
        )?;
        counters(
            enc,
            "sluice_session_link_retransmitted_packets",
            "Packets retransmitted.",
            link_c(|k| k.packets_retransmitted),
        )?;
        counters(
            enc,
            "sluice_session_link_dropped_packets",
            "Packets dropped because they arrived (or could be sent) too late.",
            link_c(|k| k.packets_dropped),
        )?;
        counters(
            enc,
            "sluice_session_link_sent_naks",
            "NAKs (SRT) or NACKs (WebRTC) sent.",
            link_c(|k| k.naks_sent),
        )?;
        counters(
            enc,
            "sluice_session_link_received_naks",
            "NAKs (SRT) or NACKs (WebRTC) received.",
            link_c(|k| k.naks_received),
        )?;
        counters(
            enc,
            "sluice_session_link_undecryptable_packets",
            "Packets that could not be decrypted (wrong passphrase or corruption).",
            link_c(|k| k.undecryptable),
        )?;
        counters(
            enc,
            "sluice_session_link_received_plis",
            "Keyframe requests (PLI/FIR) received from the peer (WebRTC).",
            link_c(|k| k.plis),
        )?;
        gauges(
            enc,
            "sluice_session_link_jitter_seconds",
            "Interarrival jitter the receiver reports (WebRTC).",
            link_g(|k| k.jitter_ms / 1000.0),
        )?;
        gauges(
            enc,
            "sluice_session_link_recv_buffer_seconds",
            "Media waiting in the receive buffer, in time (SRT).",
            link_g(|k| k.recv_buffer_ms as f64 / 1000.0),
        )?;
        gauges(
            enc,
            "sluice_session_link_recv_buffer_bytes",
            "Media waiting in the receive buffer, in bytes (SRT).",
            link_c(|k| k.recv_buffer_bytes),
        )?;
        gauges(
            enc,
            "sluice_session_link_latency_seconds",
            "Configured latency (SRT TSBPD).",
            link_g(|k| k.latency_ms as f64 / 1000.0),
        )
    }
}

/// What `/proc/self` tells about this process (Linux); `None` fields are not reported.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ProcessStats {
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) threads: Option<u64>,
    virtual_bytes: Option<u64>,
    pub(crate) resident_bytes: Option<u64>,
    start_time_seconds: Option<f64>,
    pub(crate) open_fds: Option<u64>,
    max_fds: Option<u64>,
}

/// Clock ticks per second of `/proc/*/stat` times: USER_HZ, 100 on every Linux architecture
/// Sluice builds for (reading sysconf would need `unsafe`).
const CLOCK_TICKS: f64 = 100.0;

/// Parses `/proc/self/stat` (utime, stime, num_threads, starttime, vsize) with `btime` from
/// `/proc/stat`.
fn parse_stat(stat: &str, btime: Option<u64>, out: &mut ProcessStats) {
    // The command name is in parentheses and may hold spaces or ')': split after the last one.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return;
    };
    // Fields from 3 (state) on; field N is at index N - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    if let (Some(u), Some(s)) = (num(14), num(15)) {
        out.cpu_seconds = Some((u + s) as f64 / CLOCK_TICKS);
    }
    out.threads = num(20);
    if let (Some(start), Some(boot)) = (num(22), btime) {
        out.start_time_seconds = Some(boot as f64 + start as f64 / CLOCK_TICKS);
    }
    out.virtual_bytes = num(23);
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// The soft limit of open files from `/proc/self/limits`.
fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

pub(crate) fn process_stats() -> ProcessStats {
    let mut p = ProcessStats::default();
    let read = |f: &str| std::fs::read_to_string(f).ok();
    if let Some(stat) = read("/proc/self/stat") {
        let btime = read("/proc/stat").as_deref().and_then(parse_btime);
        parse_stat(&stat, btime, &mut p);
    }
    p.resident_bytes = read("/proc/self/status").as_deref().and_then(parse_rss);
    p.max_fds = read("/proc/self/limits").as_deref().and_then(parse_max_fds);
    // The directory's own descriptor (read_dir holds one while listing) is not counted.
    p.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| (d.count() as u64).saturating_sub(1));
    p
}

fn encode_process(enc: &mut DescriptorEncoder) -> fmt::Result {
    let p = process_stats();
    if let Some(v) = p.cpu_seconds {
        counter(
            enc,
            "sluice_process_cpu_seconds",
            "User and system CPU time the process used, in seconds.",
            v,
        )?;
    }
    if let Some(v) = p.resident_bytes {
        gauge(
            enc,
            "sluice_process_resident_memory_bytes",
            "Resident memory size in bytes.",
            v,
        )?;
    }
    if let Some(v) = p.virtual_bytes {
        gauge(
            enc,
            "sluice_process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            v,
        )?;
    }
    if let Some(v) = p.open_fds {
        gauge(enc, "sluice_process_open_fds", "Open file descriptors.", v)?;
    }
    if let Some(v) = p.max_fds {
        gauge(
            enc,
            "sluice_process_max_fds",
            "The limit of open file descriptors (soft).",
            v,
        )?;
    }
    if let Some(v) = p.threads {
        gauge(enc, "sluice_process_threads", "Threads of the process.", v)?;
    }
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        // Every session, output and timer is a task: a number that only grows is a leak.
        gauge(
            enc,
            "sluice_runtime_alive_tasks",
            "Tasks alive in the server's async runtime.",
            rt.metrics().num_alive_tasks() as u64,
        )?;
    }
    let start = p.start_time_seconds.unwrap_or_else(|| {
        // Off Linux: when this module first ran, close enough to the start.
        static START: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
        *START.get_or_init(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        })
    });
    gauge(
        enc,
        "sluice_process_start_time_seconds",
        "When the process started, in seconds since the Unix epoch.",
        start,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_media::SessionInfo;

    fn metrics(max: usize) -> (Registry, Metrics, Arc<Refusals>) {
        let core = Registry::default();
        let health = Arc::new(HealthStore::new(core.events().clone()));
        let (m, r) = Metrics::new(core.clone(), Arc::new(Rates::default()), health, None, max);
        (core, m, r)
    }

    /// The value of the one sample whose line starts with `prefix`.
    fn value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn session_series_come_and_go_with_the_session() {
        let (core, m, _) = metrics(1000);
        let guard = core.stats().register("srt", Role::Reader, "live/a", None);
        guard.stats().add_bytes_out(1234);
        *guard.stats().link.lock() = Some(LinkStats {
            state: "connected",
            rtt_ms: 12.5,
            packets_lost: 7,
            ..Default::default()
        });
        let id = guard.stats().id;
        let text = m.render(false).unwrap();
        let labels = format!("{{id=\"{id}\",protocol=\"srt\",role=\"reader\",path=\"live/a\"}}");
        assert_eq!(
            value(&text, &format!("sluice_session_out_bytes_total{labels}")),
            Some(1234.0),
            "{text}"
        );
        assert_eq!(
            value(&text, &format!("sluice_session_link_rtt_seconds{labels}")),
            Some(0.0125)
        );
        assert_eq!(
            value(&text, &format!("sluice_session_link_lost_packets_total{labels}")),
            Some(7.0)
        );
        assert!(
            text.contains("# TYPE sluice_session_out_bytes_total counter"),
            "{text}"
        );
        assert_eq!(
            value(&text, "sluice_sessions{protocol=\"srt\",role=\"reader\"}"),
            Some(1.0)
        );
        drop(guard);
        let text = m.render(false).unwrap();
        assert!(!text.contains(&format!("id=\"{id}\"")), "{text}");
        // OpenMetrics: the family is named without _total, and the body ends with # EOF.
        let om = m.render(true).unwrap();
        assert!(om.contains("# TYPE sluice_session_out_bytes counter"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
    }

    #[test]
    fn the_cap_keeps_publishers_and_the_oldest_and_counts_each_left_out_once() {
        let (core, m, _) = metrics(2);
        let r1 = core.stats().register("rtmp", Role::Reader, "p", None);
        let r2 = core.stats().register("rtmp", Role::Reader, "p", None);
        let r3 = core.stats().register("rtmp", Role::Reader, "p", None);
        let publisher = core.stats().register("rtmp", Role::Publisher, "p", None);
        let has = |text: &str, g: &sluice_media::stats::SessionGuard| {
            text.contains(&format!("sluice_session_state{{id=\"{}\"", g.stats().id))
        };
        for _ in 0..3 {
            let text = m.render(false).unwrap();
            assert!(has(&text, &publisher) && has(&text, &r1), "{text}");
            assert!(!has(&text, &r2) && !has(&text, &r3), "{text}");
            assert_eq!(value(&text, "sluice_session_series_omitted "), Some(2.0));
            assert_eq!(value(&text, "sluice_session_series_dropped_total "), Some(2.0));
        }
        drop(r1);
        let text = m.render(false).unwrap();
        assert!(has(&text, &r2) && !has(&text, &r3), "{text}");
        assert_eq!(value(&text, "sluice_session_series_omitted "), Some(1.0));
        assert_eq!(value(&text, "sluice_session_series_dropped_total "), Some(2.0));
        assert_eq!(
            value(&text, "sluice_sessions{protocol=\"rtmp\",role=\"reader\"}"),
            Some(2.0),
            "totals count every session"
        );
    }

    #[test]
    fn paths_refusals_and_odd_names() {
        let (core, m, refusals) = metrics(10);
        let _p = core
            .publish(
                "live/ok",
                SessionInfo {
                    protocol: "rtmp",
                    remote: None,
                },
            )
            .unwrap();
        // The core refuses such path names; a label must survive one anyway.
        let _odd = core
            .stats()
            .register("rtmp", Role::Reader, "live/odd \"name\" \\ with\nnewline", None);
        refusals.record("rtmp", "publish", "wrong_credentials");
        refusals.record("rtmp", "publish", "wrong_credentials");
        let text = m.render(false).unwrap();
        assert!(text.contains("sluice_path_online{path=\"live/ok\"} 1"), "{text}");
        assert!(
            text.contains("path=\"live/odd \\\"name\\\" \\\\ with\\nnewline\"}"),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                "sluice_access_denied_total{protocol=\"rtmp\",action=\"publish\",reason=\"wrong_credentials\"}"
            ),
            Some(2.0)
        );
        // Every sample line is one line: name, optional labels, value.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(l.starts_with("sluice_"), "{l}");
        }
    }

    #[test]
    fn proc_files_parse() {
        let mut p = ProcessStats::default();
        let stat = "4242 (sl) uice) S 1 4242 4242 0 -1 4194560 2000 0 0 0 150 50 0 0 20 0 9 0 \
                    12345 1000000 2500 18446744073709551615";
        parse_stat(stat, Some(1_700_000_000), &mut p);
        assert_eq!(p.cpu_seconds, Some(2.0));
        assert_eq!(p.threads, Some(9));
        assert_eq!(p.start_time_seconds, Some(1_700_000_123.45));
        assert_eq!(p.virtual_bytes, Some(1_000_000));
        assert_eq!(
            parse_rss("Name:\tsluice\nVmRSS:\t   2048 kB\n"),
            Some(2048 * 1024)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(parse_btime("cpu 1 2 3\nbtime 1700000000\n"), Some(1_700_000_000));
        // Garbage gives nothing, never a panic.
        let mut q = ProcessStats::default();
        parse_stat("garbage", None, &mut q);
        parse_stat("1 (x) S", None, &mut q);
        assert_eq!(q, ProcessStats::default());
        assert_eq!(parse_rss("VmRSS: lots"), None);
        assert_eq!(parse_max_fds("Max open files unlimited"), None);
        // This process has some.
        let me = process_stats();
        if cfg!(target_os = "linux") {
            assert!(me.cpu_seconds.is_some() && me.resident_bytes.unwrap() > 0);
            assert!(me.open_fds.unwrap() >= 3 && me.threads.unwrap() >= 1);
        }
    }
}
