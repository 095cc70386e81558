//! `GET /v1/events` on the API: the event bus as Server-Sent Events.
//!
//! Each event is one SSE message with no `event:` or `id:` field (so `EventSource.onmessage`
//! gets them all) and the event's JSON ([`crate::events::EventJson`], one line) as its `data:`;
//! its `type` field says what happened. A client that reads too slowly loses events: its own
//! bounded queue on the bus fills, and the loss reaches it as a `resync` event with the count.
//! The stream starts with a comment line (the subscription is in place once it arrives), sends
//! a keep-alive comment every 15 s, and ends when the server shuts down. At most
//! [`MAX_STREAMS`] streams are open at once; more get 503. `?types=published,unpublished`
//! keeps only those types (`resync` always comes); an unknown type or parameter is a 400.
//!
//! Nothing a client sent is ever written into the stream's framing: the data is JSON (newlines
//! escaped) and the event names are not used.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::RawQuery;
use axum::http::{header::HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Extension;
use futures_util::stream::{self, Stream, StreamExt};
use sluice_media::events::EventReceiver;
use sluice_media::Registry;
use tokio_util::sync::CancellationToken;

use crate::events::EventJson;
use crate::http_error::HttpError;

/// Streams open at once, at most.
pub const MAX_STREAMS: usize = 100;
/// Events queued per stream before the stream starts losing them.
const QUEUE: usize = 1024;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What the handler needs, installed on the API router as an [`Extension`] (by `server.rs`):
/// the bus to subscribe to and the server's stop token.
#[derive(Clone)]
pub struct EventStreams {
    registry: Registry,
    stop: CancellationToken,
    open: Arc<AtomicUsize>,
}

impl EventStreams {
    pub fn new(registry: Registry, stop: CancellationToken) -> EventStreams {
        EventStreams {
            registry,
            stop,
            open: Arc::default(),
        }
    }

    /// Counts a new stream in, or refuses it when [`MAX_STREAMS`] are open.
    pub fn admit(&self) -> Result<OpenGuard, HttpError> {
        if self.open.fetch_add(1, Relaxed) >= MAX_STREAMS {
            self.open.fetch_sub(1, Relaxed);
            return Err(HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{MAX_STREAMS} event streams are open already"),
            ));
        }
        Ok(OpenGuard(self.open.clone()))
    }

    /// The server's stop: streams end with it.
    pub fn stop(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Counts an open stream while it lives.
pub struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// `GET /v1/events`.
pub async fn events(
    Extension(streams): Extension<EventStreams>,
    login: Option<Extension<crate::dashboard::LoggedIn>>,
    RawQuery(query): RawQuery,
) -> Result<impl IntoResponse, HttpError> {
    let types = parse_types(query.as_deref().unwrap_or(""))?;
    let guard = streams.admit()?;
    // Subscribed before the response goes out: whatever happens after the client sees the
    // headers reaches it.
    let rx = streams.registry.events().subscribe("sse", QUEUE);
    let hello = stream::once(async { Ok::<_, Infallible>(Event::default().comment("sluice events")) });
    // A stream opened with a dashboard login ends with the login (logout, expiry, [auth]
    // change): checked before each event goes out.
    let login = login.map(|Extension(l)| l);
    let body = hello
        .chain(event_stream(rx, streams.stop.clone(), guard, types))
        .take_while(move |_| std::future::ready(login.as_ref().is_none_or(|l| l.is_valid())));
    Ok((
        // Proxies (nginx) must not buffer the stream.
        [(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        )],
        Sse::new(body).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")),
    ))
}

/// The event types a client asked for with `?types=a,b` (empty: all of them).
fn parse_types(query: &str) -> Result<Vec<&'static str>, HttpError> {
    let mut types = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "types" {
            return Err(HttpError::bad_request(
                "unknown query parameter: GET /v1/events takes only ?types=TYPE,TYPE",
            ));
        }
        let value = value.replace("%2C", ",").replace("%2c", ",");
        for name in value.split(',').filter(|t| !t.is_empty()) {
            let Some(known) = crate::events::TYPES.iter().find(|t| **t == name) else {
                return Err(HttpError::bad_request(format!(
                    "unknown event type in ?types=; the types are {}",
                    crate::events::TYPES.join(", ")
                )));
            };
            types.push(*known);
        }
    }
    Ok(types)
}

/// The bus as SSE messages (only `types`, when not empty, and resyncs), until `stop` or the bus
/// ends.
fn event_stream(
    rx: EventReceiver,
    stop: CancellationToken,
    guard: OpenGuard,
    types: Vec<&'static str>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold((rx, stop, guard), move |(mut rx, stop, guard)| {
        let types = types.clone();
        async move {
            loop {
                let r = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return None,
                    r = rx.recv() => r?,
                };
                let Some(ev) = EventJson::from_received(&r) else {
                    continue;
                };
                let kind = ev.kind();
                if kind == "resync" || types.is_empty() || types.contains(&kind) {
                    return Some((Ok(message(&ev)), (rx, stop, guard)));
                }
            }
        }
    })
}

/// One event as an SSE message: `data: {json}`.
fn message(ev: &EventJson) -> Event {
    Event::default().data(ev.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_media::events::{EventBus, ServerEvent};

    fn ended(i: u32) -> ServerEvent {
        ServerEvent::PathEnded {
            path: format!("p{i}").into(),
        }
    }

    async fn next_json(
        s: &mut (impl Stream<Item = Result<Event, Infallible>> + Unpin),
    ) -> Option<serde_json::Value> {
        let ev = tokio::time::timeout(Duration::from_secs(2), s.next())
            .await
            .ok()??;
        let Ok(ev) = ev;
        // Event's Display is not public: render it through the response body.
        let text = render(ev).await;
        let data = text.lines().find_map(|l| l.strip_prefix("data: "))?;
        Some(serde_json::from_str(data).unwrap())
    }

    async fn render(ev: Event) -> String {
        let resp = Sse::new(stream::iter([Ok::<_, Infallible>(ev)])).into_response();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_slow_client_gets_a_resync_then_stops_on_shutdown() {
        let bus = EventBus::default();
        let rx = bus.subscribe("sse", 2);
        let stop = CancellationToken::new();
        let open = Arc::new(AtomicUsize::new(1));
        let mut s = Box::pin(event_stream(
            rx,
            stop.clone(),
            OpenGuard(open.clone()),
            Vec::new(),
        ));
        for i in 0..5 {
            bus.emit(ended(i));
        }
        // Two fit; the three others are reported before the next delivery.
        let v = next_json(&mut s).await.unwrap();
        assert_eq!(
            (v["type"].as_str(), v["missed"].as_u64()),
            (Some("resync"), Some(3))
        );
        let v = next_json(&mut s).await.unwrap();
        assert_eq!(
            (v["type"].as_str(), v["path"].as_str()),
            (Some("path_ended"), Some("p0"))
        );
        let v = next_json(&mut s).await.unwrap();
        assert_eq!(v["path"], "p1");
        stop.cancel();
        assert!(tokio::time::timeout(Duration::from_secs(2), s.next())
            .await
            .unwrap()
            .is_none());
        drop(s);
        assert_eq!(open.load(Relaxed), 0, "the stream's slot is given back");
    }

    #[tokio::test]
    async fn types_select_what_is_sent() {
        assert_eq!(parse_types("").unwrap(), Vec::<&str>::new());
        assert_eq!(
            parse_types("types=published%2Cunpublished").unwrap(),
            ["published", "unpublished"]
        );
        assert_eq!(
            parse_types("types=publish").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse_types("type=published").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let bus = EventBus::default();
        let rx = bus.subscribe("sse", 8);
        let types = parse_types("types=published").unwrap();
        let guard = OpenGuard(Arc::new(AtomicUsize::new(1)));
        let mut s = Box::pin(event_stream(rx, CancellationToken::new(), guard, types));
        bus.emit(ended(1));
        bus.emit(ServerEvent::Published {
            path: "a".into(),
            session: 1,
            protocol: "srt",
        });
        let v = next_json(&mut s).await.unwrap();
        assert_eq!(
            (v["type"].as_str(), v["path"].as_str()),
            (Some("published"), Some("a"))
        );
    }

    #[tokio::test]
    async fn untrusted_text_stays_inside_the_json() {
        let bus = EventBus::default();
        let rx = bus.subscribe("sse", 8);
        let stop = CancellationToken::new();
        let mut s = Box::pin(event_stream(
            rx,
            stop,
            OpenGuard(Arc::new(AtomicUsize::new(1))),
            Vec::new(),
        ));
        bus.emit(ServerEvent::AccessDenied {
            action: "publish",
            path: "x\n\nevent: published\ndata: {}\nid: 9".into(),
            protocol: "rtmp",
            remote: None,
            code: "wrong_credentials",
            reason: "r\r\nid: 1".into(),
        });
        let ev = s.next().await.unwrap().unwrap();
        let text = render(ev).await;
        assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), 1, "{text:?}");
        assert!(text.starts_with("data: {\"type\":\"access_denied\""), "{text:?}");
        assert!(!text.contains("\nevent:") && !text.contains("\nid:"), "{text:?}");
    }
}
