//! The control API on 9997 (127.0.0.1 by default): server, paths and sessions as JSON, the kick,
//! and the OpenAPI 3.1 document generated from these handlers (`/v1/openapi.json`, with a
//! reference page at `/v1/docs`), so the document cannot drift from the code.
//!
//! Every handler is annotated with `#[utoipa::path]` and registered through one
//! [`OpenApiRouter`]; other modules add their endpoints the same way and are merged in
//! [`router`]. Errors use the one [`HttpError`] shape, documented as [`ErrorBody`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sluice_media::stats::{LinkStats, PathSnapshot, SessionSnapshot};
use sluice_media::{MediaKind, Registry, Track};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use sluice_hls::playlist::rfc3339_millis as rfc3339;

use crate::http_error::HttpError;

/// Rates are measured over this window.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Byte counters sampled once a second, so the API can report bitrates.
#[derive(Default)]
pub struct Rates {
    inner: Mutex<RatesInner>,
}

#[derive(Default)]
struct RatesInner {
    paths: HashMap<String, VecDeque<(Instant, u64)>>,
    /// Per session: (time, bytes in, bytes out).
    sessions: HashMap<u64, VecDeque<(Instant, u64, u64)>>,
}

impl Rates {
    /// Samples every path and session; drops what is gone.
    pub fn sample(&self, registry: &Registry) {
        let now = Instant::now();
        let paths = registry.paths();
        let sessions = registry.stats().sessions();
        let mut r = self.inner.lock();
        r.paths.retain(|k, _| paths.iter().any(|p| &p.name == k));
        for p in &paths {
            let q = r.paths.entry(p.name.clone()).or_default();
            q.push_back((now, p.bytes_in));
            while q.len() > 2 && now.duration_since(q[1].0) >= RATE_WINDOW {
                q.pop_front();
            }
        }
        r.sessions.retain(|k, _| sessions.iter().any(|s| s.id == *k));
        for s in &sessions {
            let q = r.sessions.entry(s.id).or_default();
            q.push_back((now, s.bytes_in, s.bytes_out));
            while q.len() > 2 && now.duration_since(q[1].0) >= RATE_WINDOW {
                q.pop_front();
            }
        }
    }

    /// A path's incoming bitrate over the last 5 s, in bits per second (0 when unknown).
    pub fn path_bps(&self, name: &str) -> u64 {
        let r = self.inner.lock();
        r.paths.get(name).map_or(0, |q| {
            rate(q.front().map(|a| (a.0, a.1)), q.back().map(|b| (b.0, b.1)))
        })
    }

    /// A session's (in, out) bitrates over the last 5 s, in bits per second.
    pub fn session_bps(&self, id: u64) -> (u64, u64) {
        let r = self.inner.lock();
        let Some(q) = r.sessions.get(&id) else {
            return (0, 0);
        };
        let (a, b) = (q.front(), q.back());
        (
            rate(a.map(|a| (a.0, a.1)), b.map(|b| (b.0, b.1))),
            rate(a.map(|a| (a.0, a.2)), b.map(|b| (b.0, b.2))),
        )
    }
}

fn rate(a: Option<(Instant, u64)>, b: Option<(Instant, u64)>) -> u64 {
    match (a, b) {
        (Some(a), Some(b)) if b.0 > a.0 => {
            let secs = b.0.duration_since(a.0).as_secs_f64();
            (b.1.saturating_sub(a.1) as f64 * 8.0 / secs) as u64
        }
        _ => 0,
    }
}

#[derive(Clone)]
pub struct Api {
    pub registry: Registry,
    pub rates: Arc<Rates>,
    pub hls: Arc<sluice_hls::HlsStore>,
    /// Every live path's health (the `health` outputs).
    pub health: Arc<crate::health::HealthStore>,
    /// What `GET /v1/server` tells about this process.
    pub server: Arc<ServerInfo>,
    /// What is recorded, and the running recorders.
    pub recordings: Arc<sluice_record::Recordings>,
    /// The push destinations' status.
    pub pushes: Arc<crate::push::PushStore>,
    /// The transcoders' status.
    pub transcodes: Arc<crate::transcode::TranscodeStore>,
    /// The last events of the bus.
    pub recent: Arc<crate::api_state::RecentEvents>,
}

/// Static facts about the running server.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServerInfo {
    /// Sluice's version.
    pub version: &'static str,
    /// When the server started (RFC 3339).
    #[serde(skip)]
    pub started: SystemTime,
    /// The listeners, by name (`rtmp`, `http`, `srt`, `webrtc`, `webrtc_udp`, `api`, `metrics`, ...).
    pub listeners: BTreeMap<String, String>,
    pub build: BuildInfo,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BuildInfo {
    /// The target the binary was built for (e.g. `x86_64-linux`).
    pub target: String,
    /// `release` or `debug`.
    pub profile: &'static str,
    /// The Rust compiler's minimum version the workspace declares.
    pub rust_version: &'static str,
}

impl ServerInfo {
    pub fn new(listeners: BTreeMap<String, String>) -> Self {
        ServerInfo {
            version: env!("CARGO_PKG_VERSION"),
            started: SystemTime::now(),
            listeners,
            build: BuildInfo {
                target: format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
                profile: if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                },
                rust_version: env!("CARGO_PKG_RUST_VERSION"),
            },
        }
    }
}

/// Starts the once-a-second sampler of the rates, shared by the API and the metrics; it ends
/// with `stop`.
pub fn spawn_sampler(rates: Arc<Rates>, registry: Registry, stop: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => rates.sample(&registry),
            }
        }
    });
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice control API",
        description = "Paths, sessions and the server of a Sluice live streaming server. Every error answers `{\"error\": \"message\"}` with its HTTP status.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "server", description = "The running server"),
        (name = "paths", description = "Live paths: publisher, tracks, readers, outputs"),
        (name = "sessions", description = "Every publisher, reader and output, with statistics; the kick")
    ),
    // Registered by hand below: its route captures names with `/` (`{*name}` in axum).
    paths(get_path)
)]
struct ApiDoc;

/// The API's routes, and the OpenAPI document generated from them.
pub fn router(api: Api) -> Router {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(server_info))
        .routes(routes!(list_paths))
        // Every method goes to one handler, so that `Allow` names what each resource under
        // the wildcard takes (a path, its pushes, one push, a restart).
        .route("/v1/paths/{*name}", axum::routing::any(under_path))
        .routes(routes!(list_sessions))
        .routes(routes!(get_session, kick_session))
        .merge(crate::api_config::routes())
        .merge(crate::api_recordings::routes())
        .merge(crate::api_auth::routes())
        .merge(crate::api_state::routes())
        .merge(crate::api_pushes::doc())
        .split_for_parts();
    let doc = Arc::new(doc.to_pretty_json().unwrap_or_else(|_| "{}".into()));
    router
        .route("/v1/events", axum::routing::get(crate::sse::events))
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        doc.as_str().to_owned(),
                    )
                }
            }),
        )
        .route(
            "/v1/docs",
            axum::routing::get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    include_str!("api_docs.html"),
                )
            }),
        )
        .fallback(|| async { HttpError::not_found("no such endpoint: see /v1/docs") })
        .with_state(api)
}

/// The body of every error.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    pub error: String,
}

/// `?limit=&offset=` of a list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct Page {
    /// Items per page (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Items to skip (default 0).
    offset: Option<usize>,
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

impl Page {
    fn from(q: Result<Query<Page>, QueryRejection>) -> Result<(usize, usize), HttpError> {
        let Query(p) = q.map_err(|e| HttpError::bad_request(e.body_text()))?;
        let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(HttpError::bad_request(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        Ok((limit, p.offset.unwrap_or(0)))
    }
}

/// `?protocol=&path=` filters of the session list, with the page.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct SessionQuery {
    /// Only sessions of this protocol (`rtmp`, `srt`, `webrtc`, `http-flv`, `hls`, ...).
    protocol: Option<String>,
    /// Only sessions of this path.
    path: Option<String>,
    /// Items per page (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Items to skip (default 0).
    offset: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct TrackJson {
    id: u8,
    /// `video` or `audio`.
    kind: &'static str,
    /// `h264`, `h265`, `av1`, `vp8`, `vp9`, `aac`, `opus`, `mp3`, `ac3`, `pcma`, `pcmu`.
    codec: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sample_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<u8>,
    /// RFC 6381 codec string (as in HLS CODECS), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    codec_string: Option<String>,
    /// The profile the codec configuration announces: `Baseline`, `Main`, `High`, `High 10`
    /// (H.264), `Main`, `Main 10` (H.265), `Main`, `High` (AV1), `Profile 0` (VP9), `LC`,
    /// `HE-AAC`, `HE-AAC v2` (AAC).
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
    /// The video level the codec configuration announces, e.g. `3.1` (`1b` for H.264's level
    /// 1b, `max` for AV1's unrestricted level).
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<String>,
    /// Video: frames per second measured over the last 5 s of media time (from the path's
    /// health checks; absent when they are off or no video flows).
    #[serde(skip_serializing_if = "Option::is_none")]
    frame_rate: Option<f64>,
    /// Video: mean spacing of the latest keyframes, in seconds (health checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    keyframe_interval_s: Option<f64>,
    /// Video: mean length of the latest GOPs, in frames (health checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    gop_frames: Option<f64>,
    /// This track's payload bits per second over the last 5 s (health checks; absent when they
    /// are off, and for derived tracks).
    #[serde(skip_serializing_if = "Option::is_none")]
    bitrate: Option<u64>,
}

/// A track with its codec details; `health` gives the measured figures of the publisher's own
/// tracks (None for derived tracks).
fn track_json(t: &Track, health: Option<&crate::health::PathHealth>) -> TrackJson {
    let video = t.kind() == MediaKind::Video;
    let info = sluice_container::codec_info::codec_info(t);
    let (video_h, audio_h) = match health {
        Some(h) => (
            h.video_track.filter(|&id| id == t.id).map(|_| h),
            h.audio_track.filter(|&id| id == t.id).map(|_| h),
        ),
        None => (None, None),
    };
    TrackJson {
        profile: info.profile,
        level: info.level,
        frame_rate: video_h.and_then(|h| h.video_fps),
        keyframe_interval_s: video_h.and_then(|h| h.keyframe_interval_s),
        gop_frames: video_h.and_then(|h| h.gop_frames),
        bitrate: video_h
            .map(|h| h.video_bitrate_in)
            .or(audio_h.map(|h| h.audio_bitrate_in)),
        id: t.id,
        kind: if video { "video" } else { "audio" },
        codec: t.codec.name(),
        width: video.then_some(t.width),
        height: video.then_some(t.height),
        sample_rate: (!video).then_some(t.sample_rate),
        channels: (!video).then_some(t.channels),
        codec_string: sluice_container::fmp4::codec_string(t),
    }
}

#[derive(Serialize, ToSchema)]
struct PublisherJson {
    session: u64,
    protocol: &'static str,
}

#[derive(Serialize, ToSchema)]
struct OutputJson {
    name: String,
    session: u64,
}

/// HLS viewers over the last minute (they are requests, not sessions).
#[derive(Serialize, ToSchema)]
struct HlsJson {
    /// HLS and DASH requests (playlists, manifests, segments, parts) over the last minute.
    requests_last_minute: u64,
    bytes_last_minute: u64,
    clients_last_minute: u64,
    /// Parts made (LL-HLS, LL-DASH) since the packager started.
    parts: u64,
    /// Upper bounds (ms) of the histogram buckets holding the median and the 99th percentile
    /// of part readiness: from the arrival of the frame that completes a part to the part
    /// being servable (null before the first part).
    part_ready_p50_ms: Option<f64>,
    part_ready_p99_ms: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct PathJson {
    name: String,
    /// Whether a publisher is connected now (false during the grace period).
    online: bool,
    publisher: Option<PublisherJson>,
    /// The publisher's own tracks.
    tracks: Vec<TrackJson>,
    /// Tracks derived from the publisher's (audio conversions) while some reader takes them.
    derived: Vec<TrackJson>,
    /// Incoming media bitrate (payload bits per second over the last 5 s).
    bitrate_in: u64,
    bytes_in: u64,
    frames_in: u64,
    /// Every reader of the path (viewers, outputs, converters).
    readers: u64,
    /// Viewer sessions by protocol.
    #[schema(value_type = BTreeMap<String, u64>)]
    readers_by_protocol: BTreeMap<&'static str, u64>,
    outputs: Vec<OutputJson>,
    hls: Option<HlsJson>,
    /// Stream health computed from the media (null when the path's health checks are off).
    health: Option<crate::health::PathHealth>,
    /// The path's recorder (null when the path is not recorded).
    recording: Option<RecordingJson>,
    /// The path's push destinations (keys masked).
    pushes: Vec<crate::push::PushStatus>,
    /// The path's transcoder (null when the path has no renditions).
    transcode: Option<crate::transcode::TranscodeStatus>,
    /// Publisher restarts and codec changes seen on this path.
    epoch: u64,
    /// When the current stream started (RFC 3339).
    started_at: Option<String>,
}

/// A path's recorder: its state and what it wrote (see `GET /v1/recordings/{path}` for the files).
#[derive(Serialize, ToSchema)]
struct RecordingJson {
    /// `recording`, `waiting` (for a keyframe or the publisher), `error` (retrying).
    state: &'static str,
    /// The file being written.
    file: Option<String>,
    /// Bytes written since the recorder started.
    bytes_written: u64,
    segments_completed: u64,
    /// The last write error, and when (RFC 3339).
    last_error: Option<String>,
    last_error_at: Option<String>,
    /// Fragments not written while the disk failed or fell behind.
    dropped_fragments: u64,
}

#[derive(Serialize, ToSchema)]
struct PathList {
    items: Vec<PathJson>,
    /// Paths in all (every page).
    total: usize,
    offset: usize,
    limit: usize,
}

pub(crate) fn path_json(api: &Api, p: PathSnapshot, sessions: &[SessionSnapshot]) -> PathJson {
    let mut by_proto = BTreeMap::new();
    for s in sessions
        .iter()
        .filter(|s| s.path == p.name && s.role == sluice_media::stats::Role::Reader)
    {
        *by_proto.entry(s.protocol).or_insert(0) += 1;
    }
    let health = api.health.get(&p.name);
    PathJson {
        bitrate_in: api.rates.path_bps(&p.name),
        online: p.online,
        publisher: p
            .publisher
            .map(|(session, protocol)| PublisherJson { session, protocol }),
        tracks: p.tracks.iter().map(|t| track_json(t, health.as_ref())).collect(),
        derived: p.derived.iter().map(|t| track_json(t, None)).collect(),
        bytes_in: p.bytes_in,
        frames_in: p.frames_in,
        readers: p.readers,
        readers_by_protocol: by_proto,
        outputs: p
            .outputs
            .into_iter()
            .map(|(name, session)| OutputJson { name, session })
            .collect(),
        hls: api.hls.get(&p.name).map(|s| {
            let c = s.viewers.counts();
            let r = s.readiness.snapshot();
            let ms = |q| r.quantile(q).filter(|v| v.is_finite()).map(|v| v * 1000.0);
            HlsJson {
                requests_last_minute: c.requests,
                bytes_last_minute: c.bytes,
                clients_last_minute: c.clients,
                parts: r.count(),
                part_ready_p50_ms: ms(0.5),
                part_ready_p99_ms: ms(0.99),
            }
        }),
        health,
        recording: api.recordings.status(&p.name).map(|r| RecordingJson {
            state: r.state,
            file: r.file.map(|f| f.display().to_string()),
            bytes_written: r.bytes_written,
            segments_completed: r.segments_completed,
            last_error: r.last_error,
            last_error_at: r.last_error_at.map(rfc3339),
            dropped_fragments: r.dropped_fragments,
        }),
        pushes: api.pushes.of_path(&p.name),
        transcode: api.transcodes.get(&p.name),
        epoch: p.epoch,
        started_at: p.started_at.map(rfc3339),
        name: p.name,
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ServerJson {
    #[serde(flatten)]
    info: ServerInfo,
    /// When the server started (RFC 3339).
    started_at: String,
    uptime_seconds: u64,
    /// Live paths and open sessions.
    paths: usize,
    sessions: usize,
}

/// The server: version, uptime, listeners, build.
#[utoipa::path(get, path = "/v1/server", tag = "server",
    responses((status = 200, description = "The server", body = ServerJson)))]
async fn server_info(State(api): State<Api>) -> Json<ServerJson> {
    Json(server_json(&api))
}

pub(crate) fn server_json(api: &Api) -> ServerJson {
    let info = (*api.server).clone();
    ServerJson {
        started_at: rfc3339(info.started),
        uptime_seconds: info.started.elapsed().unwrap_or_default().as_secs(),
        paths: api.registry.paths().len(),
        sessions: api.registry.stats().len(),
        info,
    }
}

/// Live paths (published now, or within their grace period), sorted by name.
#[utoipa::path(get, path = "/v1/paths", tag = "paths", params(Page),
    responses(
        (status = 200, description = "A page of paths", body = PathList),
        (status = 400, description = "Bad query", body = ErrorBody)))]
async fn list_paths(
    State(api): State<Api>,
    q: Result<Query<Page>, QueryRejection>,
) -> Result<Json<PathList>, HttpError> {
    let (limit, offset) = Page::from(q)?;
    let sessions = api.registry.stats().sessions();
    let paths = api.registry.paths();
    let total = paths.len();
    let items = paths
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|p| path_json(&api, p, &sessions))
        .collect();
    Ok(Json(PathList {
        items,
        total,
        offset,
        limit,
    }))
}

/// One live path; its name may contain `/` (`/v1/paths/live/cam1`).
#[utoipa::path(get, path = "/v1/paths/{name}", tag = "paths",
    params(("name" = String, Path, description = "The path name, e.g. live/cam1 (given as is, or with its `/` encoded as %2F)")),
    responses(
        (status = 200, description = "The path", body = PathJson),
        (status = 404, description = "No such live path", body = ErrorBody)))]
async fn get_path(
    State(api): State<Api>,
    Extension(r): Extension<Arc<crate::reload::Reloader>>,
    Path(name): Path<String>,
) -> Result<Response, HttpError> {
    if let Some(route) = crate::api_pushes::route(&name) {
        return crate::api_pushes::get(api, r, route).await;
    }
    let name = name.trim_start_matches('/');
    let p = api
        .registry
        .path(name)
        .ok_or_else(|| HttpError::not_found(format!("no path {name:?} is live")))?;
    let sessions = api.registry.stats().sessions();
    Ok(Json(path_json(&api, p, &sessions)).into_response())
}

/// Every method under `/v1/paths/`: a path (GET) and its pushes resources (see
/// [`crate::api_pushes`]); anything else is a 405 with the resource's own `Allow`.
async fn under_path(
    State(api): State<Api>,
    Extension(r): Extension<Arc<crate::reload::Reloader>>,
    method: axum::http::Method,
    Path(name): Path<String>,
    body: Result<Json<crate::api_pushes::NewPush>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, HttpError> {
    use crate::api_pushes::Route;
    use axum::http::Method;
    let route = crate::api_pushes::route(&name);
    let allow = Route::allow(route.as_ref());
    match (&method, route) {
        (&Method::GET | &Method::HEAD, None) => get_path(State(api), Extension(r), Path(name)).await,
        (&Method::GET | &Method::HEAD, Some(rt @ (Route::List(_) | Route::One(..)))) => {
            crate::api_pushes::get(api, r, rt).await
        }
        (&Method::POST, Some(rt @ (Route::List(_) | Route::Restart(..)))) => {
            crate::api_pushes::post(api, r, rt, body).await
        }
        (&Method::DELETE, Some(rt @ Route::One(..))) => crate::api_pushes::delete(r, rt).await,
        (_, route) => {
            let hint = match route {
                None => "a path is read with GET; its push destinations are under /v1/paths/{name}/pushes; a live path is ended by kicking its publisher (DELETE /v1/sessions/{id})",
                Some(Route::List(_)) => "push destinations are listed with GET and added with POST",
                Some(Route::One(..)) => "a push destination is read with GET and removed with DELETE",
                Some(Route::Restart(..)) => "a push destination is restarted with POST",
            };
            let mut resp = HttpError::method_not_allowed(format!("{method} is not allowed here: {hint}"))
                .into_response();
            resp.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
            Ok(resp)
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SessionJson {
    id: u64,
    /// `rtmp`, `srt`, `webrtc`, `http-flv`, `hls` (the packager), `transform`, ...
    protocol: &'static str,
    /// `publisher`, `reader`, `output` or `transform`.
    role: &'static str,
    /// `starting`, `live`, `waiting` or `closing`.
    state: &'static str,
    path: String,
    remote: Option<String>,
    started_at: String,
    bytes_in: u64,
    bytes_out: u64,
    bitrate_in: u64,
    bitrate_out: u64,
    frames_in: u64,
    frames_out: u64,
    frames_dropped: u64,
    keyframe_requests: u64,
    /// Transport link statistics (SRT, WebRTC).
    link: Option<LinkJson>,
    /// Why the session is ending, or an output's last error.
    #[serde(skip_serializing_if = "String::is_empty")]
    reason: String,
}

#[derive(Serialize, ToSchema)]
struct SessionList {
    items: Vec<SessionJson>,
    /// Sessions matching the filters (every page).
    total: usize,
    offset: usize,
    limit: usize,
}

#[derive(Serialize, ToSchema)]
struct LinkJson {
    /// Connection state as the transport names it.
    state: &'static str,
    rtt_ms: f64,
    send_mbps: f64,
    recv_mbps: f64,
    packets_sent: u64,
    packets_received: u64,
    packets_lost: u64,
    packets_retransmitted: u64,
    packets_dropped: u64,
    naks_sent: u64,
    naks_received: u64,
    recv_buffer_ms: u64,
    recv_buffer_bytes: u64,
    undecryptable: u64,
    latency_ms: u64,
    plis: u64,
    jitter_ms: f64,
    #[serde(skip_serializing_if = "String::is_empty")]
    candidate_pair: String,
}

fn link_json(l: LinkStats) -> LinkJson {
    LinkJson {
        state: l.state,
        rtt_ms: l.rtt_ms,
        send_mbps: l.send_mbps,
        recv_mbps: l.recv_mbps,
        packets_sent: l.packets_sent,
        packets_received: l.packets_received,
        packets_lost: l.packets_lost,
        packets_retransmitted: l.packets_retransmitted,
        packets_dropped: l.packets_dropped,
        naks_sent: l.naks_sent,
        naks_received: l.naks_received,
        recv_buffer_ms: l.recv_buffer_ms,
        recv_buffer_bytes: l.recv_buffer_bytes,
        undecryptable: l.undecryptable,
        latency_ms: l.latency_ms,
        plis: l.plis,
        jitter_ms: l.jitter_ms,
        candidate_pair: l.candidate_pair,
    }
}

pub(crate) fn session_json(api: &Api, s: SessionSnapshot) -> SessionJson {
    let (bitrate_in, bitrate_out) = api.rates.session_bps(s.id);
    SessionJson {
        id: s.id,
        protocol: s.protocol,
        role: s.role.name(),
        state: s.state.name(),
        path: s.path,
        remote: s.remote.map(|r| r.to_string()),
        started_at: rfc3339(s.started),
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        bitrate_in,
        bitrate_out,
        frames_in: s.frames_in,
        frames_out: s.frames_out,
        frames_dropped: s.frames_dropped,
        keyframe_requests: s.keyframe_requests,
        link: s.link.map(link_json),
        reason: s.reason,
    }
}

/// Every session (publishers, readers, outputs), by id, optionally of one protocol or path.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(SessionQuery),
    responses(
        (status = 200, description = "A page of sessions", body = SessionList),
        (status = 400, description = "Bad query", body = ErrorBody)))]
async fn list_sessions(
    State(api): State<Api>,
    q: Result<Query<SessionQuery>, QueryRejection>,
) -> Result<Json<SessionList>, HttpError> {
    let Query(q) = q.map_err(|e| HttpError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(HttpError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let offset = q.offset.unwrap_or(0);
    let all: Vec<_> = api
        .registry
        .stats()
        .sessions()
        .into_iter()
        .filter(|s| q.protocol.as_deref().is_none_or(|p| p == s.protocol))
        .filter(|s| q.path.as_deref().is_none_or(|p| p == s.path))
        .collect();
    let total = all.len();
    let items = all
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|s| session_json(&api, s))
        .collect();
    Ok(Json(SessionList {
        items,
        total,
        offset,
        limit,
    }))
}

fn parse_id(id: &str) -> Result<u64, HttpError> {
    id.parse()
        .map_err(|_| HttpError::bad_request(format!("invalid session id {id:?}: a number is expected")))
}

/// One session with its statistics.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = u64, Path, description = "Session id")),
    responses(
        (status = 200, description = "The session", body = SessionJson),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody)))]
async fn get_session(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<SessionJson>, HttpError> {
    let id = parse_id(&id)?;
    let s = api
        .registry
        .stats()
        .get(id)
        .ok_or_else(|| HttpError::not_found(format!("no session {id}")))?;
    Ok(Json(session_json(&api, s.snapshot())))
}

#[derive(Serialize, ToSchema)]
struct Closing {
    /// Always `closing`.
    status: &'static str,
    id: u64,
}

/// Kicks a session: asks it to end, and waits (up to 2 s) until it has.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = u64, Path, description = "Session id")),
    responses(
        (status = 204, description = "The session has ended"),
        (status = 202, description = "The session is still closing after 2 s", body = Closing),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody)))]
async fn kick_session(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, HttpError> {
    let id = parse_id(&id)?;
    let stats = api.registry.stats();
    let Some(s) = stats.get(id) else {
        return Err(HttpError::not_found(format!("no session {id}")));
    };
    stats.kick(id, "kicked through the API");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !s.is_closed() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if s.is_closed() {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Ok((
            StatusCode::ACCEPTED,
            Json(Closing {
                status: "closing",
                id,
            }),
        )
            .into_response())
    }
}
