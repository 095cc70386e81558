//! What the dashboard watches: `GET /v1/state/stream`, the server, its paths and its sessions
//! as one Server-Sent Event a second (one connection instead of a polling loop), and
//! `GET /v1/events/recent`, the last events of the bus kept in memory.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header::HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use futures_util::stream;
use parking_lot::Mutex;
use serde::Serialize;
use sluice_media::Registry;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{Api, PathJson, ServerJson, SessionJson};
use crate::events::EventJson;
use crate::http_error::HttpError;
use crate::sse::EventStreams;

/// Events kept for `GET /v1/events/recent`.
pub const RECENT: usize = 200;
/// Sessions listed in one state message at most (`sessions_total` says how many there are).
const MAX_SESSIONS: usize = 1000;
const PERIOD: Duration = Duration::from_secs(1);

#[derive(utoipa::OpenApi)]
// `GET /v1/events` is routed by `api.rs` (its handler is in `sse.rs`): documented here.
#[openapi(paths(events_doc), components(schemas(StateJson)))]
struct StateDoc;

/// One Server-Sent Event of a stream: its `data` is one JSON object (an event of docs/events.md,
/// or a `StateJson`).
#[derive(Serialize, ToSchema)]
struct SseEvent {
    /// The JSON text.
    data: String,
}

pub fn routes() -> OpenApiRouter<Api> {
    use utoipa::OpenApi;
    OpenApiRouter::with_openapi(StateDoc::openapi())
        .routes(routes!(state_stream))
        .routes(routes!(recent_events))
}

/// The last [`RECENT`] events of the bus, oldest first.
#[derive(Default)]
pub struct RecentEvents {
    items: Mutex<VecDeque<EventJson>>,
}

impl RecentEvents {
    /// Keeps the bus's events from now on, until `stop`.
    pub fn spawn(registry: &Registry, stop: CancellationToken) -> Arc<RecentEvents> {
        let recent = Arc::new(RecentEvents::default());
        let mut rx = registry.events().subscribe("recent", 256);
        let keep = recent.clone();
        tokio::spawn(async move {
            loop {
                let r = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = rx.recv() => match r { Some(r) => r, None => return },
                };
                if let Some(ev) = EventJson::from_received(&r) {
                    keep.push(ev);
                }
            }
        });
        recent
    }

    fn push(&self, ev: EventJson) {
        let mut items = self.items.lock();
        if items.len() == RECENT {
            items.pop_front();
        }
        items.push_back(ev);
    }
}

/// The last events.
#[derive(Serialize, ToSchema)]
struct RecentList {
    /// The event JSON of docs/events.md, oldest first.
    #[schema(value_type = Vec<Object>)]
    items: Vec<EventJson>,
}

/// The last 200 events of the bus (what `GET /v1/events` would have streamed), oldest first.
#[utoipa::path(get, path = "/v1/events/recent", tag = "server",
    responses((status = 200, description = "The last events", body = RecentList)))]
async fn recent_events(State(api): State<Api>) -> Json<RecentList> {
    Json(RecentList {
        items: api.recent.items.lock().iter().cloned().collect(),
    })
}

/// The event bus as Server-Sent Events (docs/events.md): one JSON event per `data:` line;
/// `?types=published,unpublished` keeps only those types.
#[utoipa::path(get, path = "/v1/events", tag = "server",
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = SseEvent),
        (status = 400, description = "An unknown type or parameter", body = crate::api::ErrorBody),
        (status = 503, description = "Too many streams are open", body = crate::api::ErrorBody)))]
#[allow(dead_code)]
async fn events_doc() {}

/// This process's use of the machine.
#[derive(Serialize, ToSchema)]
struct ProcessJson {
    /// CPU time used over the last second, in percent of one core (null in the first message).
    cpu_percent: Option<f64>,
    /// Resident memory.
    memory_bytes: Option<u64>,
    threads: Option<u64>,
    open_fds: Option<u64>,
}

#[derive(Serialize, ToSchema)]
struct ServerState {
    #[serde(flatten)]
    server: ServerJson,
    process: ProcessJson,
}

/// One message of the state stream.
#[derive(Serialize, ToSchema)]
struct StateJson {
    /// When it was taken (RFC 3339).
    time: String,
    server: ServerState,
    /// Every live path, as `GET /v1/paths` lists them.
    paths: Vec<PathJson>,
    /// The sessions, as `GET /v1/sessions` lists them (the first 1000).
    sessions: Vec<SessionJson>,
    sessions_total: usize,
}

fn snapshot(api: &Api, cpu: &mut Option<(Instant, f64)>) -> StateJson {
    let p = crate::metrics::process_stats();
    let now = Instant::now();
    let cpu_percent = match (*cpu, p.cpu_seconds) {
        (Some((then, before)), Some(used)) if now > then => {
            Some(((used - before) / (now - then).as_secs_f64() * 1000.0).round() / 10.0)
        }
        _ => None,
    };
    *cpu = p.cpu_seconds.map(|c| (now, c));
    let sessions = api.registry.stats().sessions();
    let paths = api
        .registry
        .paths()
        .into_iter()
        .map(|path| crate::api::path_json(api, path, &sessions))
        .collect();
    let sessions_total = sessions.len();
    StateJson {
        time: sluice_hls::playlist::rfc3339_millis(std::time::SystemTime::now()),
        server: ServerState {
            server: crate::api::server_json(api),
            process: ProcessJson {
                cpu_percent,
                memory_bytes: p.resident_bytes,
                threads: p.threads,
                open_fds: p.open_fds,
            },
        },
        paths,
        sessions: sessions
            .into_iter()
            .take(MAX_SESSIONS)
            .map(|s| crate::api::session_json(api, s))
            .collect(),
        sessions_total,
    }
}

/// The server, its live paths and its sessions, once a second (the first message at once), as
/// Server-Sent Events: each message's `data:` is one JSON object (`time`, `server` with
/// `process`, `paths`, `sessions`, `sessions_total`). It counts among the event streams' limit.
#[utoipa::path(get, path = "/v1/state/stream", tag = "server",
    responses(
        (status = 200, description = "The state, once a second: each event's data is a StateJson", content_type = "text/event-stream", body = SseEvent),
        (status = 503, description = "Too many streams are open", body = crate::api::ErrorBody)))]
async fn state_stream(
    State(api): State<Api>,
    Extension(streams): Extension<EventStreams>,
    login: Option<Extension<crate::dashboard::LoggedIn>>,
) -> Result<impl IntoResponse, HttpError> {
    let guard = streams.admit()?;
    // Opened with a dashboard login: it ends with the login (logout, expiry, [auth] change).
    let login = login.map(|Extension(l)| l);
    let stop = streams.stop();
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let body = stream::unfold(
        (api, stop, tick, None, guard),
        move |(api, stop, mut tick, mut cpu, guard)| {
            let login = login.clone();
            async move {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return None,
                    _ = tick.tick() => {}
                }
                if login.as_ref().is_some_and(|l| !l.is_valid()) {
                    return None;
                }
                let json = serde_json::to_string(&snapshot(&api, &mut cpu)).unwrap_or_default();
                Some((
                    Ok::<_, Infallible>(Event::default().data(json)),
                    (api, stop, tick, cpu, guard),
                ))
            }
        },
    );
    Ok((
        [(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        )],
        Sse::new(body).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    ))
}
