//! The HTTP delivery listener: HLS playlists and segments, HTTP-FLV, and the player page.
//!
//! URLs (PRODUCT.md): `/P/index.m3u8` (and the media playlist and segments it names under `/P/`),
//! `/P.flv`, and `/P/` for the player page.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use sluice_container::flv::FlvWriter;
use sluice_media::{Event, ReadError, SessionInfo};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::server::Shared;

const PLAYLIST_CACHE: &str = "max-age=1";
const SEGMENT_CACHE: &str = "public, max-age=3600, immutable";

/// `Access-Control-Allow-Origin` from `[http] cors_origin`, for every HTTP listener.
pub fn cors_origin(origin: &str) -> AllowOrigin {
    if origin == "*" {
        AllowOrigin::any()
    } else {
        AllowOrigin::exact(HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("null")))
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(cors_origin(&shared.config.http.cors_origin))
        .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
        .allow_headers([header::RANGE, header::CONTENT_TYPE])
        .expose_headers([header::CONTENT_LENGTH]);
    Router::new().fallback(handle).layer(cors).with_state(shared)
}

enum Route<'a> {
    Flv(&'a str),
    Player(&'a str),
    Hls { path: &'a str, file: &'a str },
    PathWithoutSlash(&'a str),
}

fn route(uri_path: &str) -> Option<Route<'_>> {
    let p = uri_path.strip_prefix('/')?;
    if p.is_empty() {
        return None;
    }
    if let Some(path) = p.strip_suffix(".flv") {
        return Some(Route::Flv(path));
    }
    if let Some(path) = p.strip_suffix('/') {
        return Some(Route::Player(path));
    }
    match p.rsplit_once('/') {
        Some((path, file)) if file.contains('.') => Some(Route::Hls { path, file }),
        _ => Some(Route::PathWithoutSlash(p)),
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are allowed\n").into_response();
    }
    match route(uri.path()) {
        None => not_found("nothing here: try /PATH/index.m3u8, /PATH.flv or /PATH/"),
        Some(Route::Flv(path)) => flv(&shared, path, remote),
        Some(Route::Player(path)) => player(path),
        Some(Route::PathWithoutSlash(path)) => Redirect::permanent(&format!("/{path}/")).into_response(),
        Some(Route::Hls { path, file }) => hls(&shared, path, file).await,
    }
}

fn not_found(msg: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CACHE_CONTROL, "no-cache")],
        format!("{msg}\n"),
    )
        .into_response()
}

async fn hls(shared: &Shared, path: &str, file: &str) -> Response {
    let stream = match shared.hls.get(path) {
        Some(s) => s,
        None => {
            // A player may ask just as the publisher starts, before the HLS muxer exists: wait
            // for it while the path is live, up to the ready timeout.
            let deadline = tokio::time::Instant::now() + shared.config.hls.ready_timeout;
            loop {
                let live = shared.registry.paths().iter().any(|p| p.name == path && p.online);
                if !live || tokio::time::Instant::now() >= deadline {
                    return not_found(&format!("no stream is available on path {path}"));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                if let Some(s) = shared.hls.get(path) {
                    break s;
                }
            }
        }
    };
    if file.ends_with(".m3u8") {
        if !stream.wait_ready(shared.config.hls.ready_timeout).await {
            return not_found(&format!("stream {path} has no segment yet"));
        }
        return match stream.playlist(file) {
            Some(text) => (
                [
                    (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
                    (header::CACHE_CONTROL, PLAYLIST_CACHE),
                ],
                text,
            )
                .into_response(),
            None => not_found(&format!("no playlist {file} on path {path}")),
        };
    }
    match stream.file(file) {
        Some((bytes, content_type)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, SEGMENT_CACHE),
            ],
            bytes,
        )
            .into_response(),
        None => not_found(&format!(
            "no file {file} on path {path} (it may have left the playlist window)"
        )),
    }
}

fn flv(shared: &Shared, path: &str, remote: SocketAddr) -> Response {
    let reader = match shared.registry.read(
        path,
        SessionInfo {
            protocol: "http-flv",
            remote: Some(remote),
        },
    ) {
        Ok(r) => r,
        Err(e) => return not_found(&e.to_string()),
    };
    tracing::info!(%remote, path, "HTTP-FLV reader started");
    let state = (reader, FlvWriter::default(), None, false);
    let coalesce = shared.config.http.flv_coalesce;
    let body = futures_util::stream::unfold(
        state,
        move |(mut reader, mut writer, mut info, mut sent_header)| async move {
            // After the first write (header and GOP cache, at once), let frames gather for
            // `flv_coalesce` so each write carries several: fewer wakeups per viewer.
            if sent_header && !coalesce.is_zero() {
                tokio::time::sleep(coalesce).await;
            }
            let mut out: Vec<Bytes> = Vec::new();
            let first = reader.recv().await;
            let mut next = Some(first);
            while let Some(ev) = next.take() {
                match ev {
                    Ok(Event::Start(i)) => {
                        if !sent_header {
                            out.push(FlvWriter::header(&i));
                            sent_header = true;
                        } else {
                            out.extend(writer.restart(&i));
                        }
                        info = Some(i);
                    }
                    Ok(Event::Frame(f)) => {
                        if let Some(i) = &info {
                            writer.frame(i, &f, &mut out);
                        }
                    }
                    Err(ReadError::Ended) if out.is_empty() => return None,
                    Err(ReadError::Ended) => break,
                    Err(e) => {
                        tracing::info!(path = reader.path(), "HTTP-FLV reader closed: {e}");
                        return None;
                    }
                }
                if out.len() < 256 {
                    next = reader.try_recv();
                }
            }
            let n: usize = out.iter().map(Bytes::len).sum();
            reader.stats().add_bytes_out(n as u64);
            Some((out, (reader, writer, info, sent_header)))
        },
    )
    .flat_map(|chunks| futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>)));
    (
        [
            (header::CONTENT_TYPE, "video/x-flv"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

fn player(path: &str) -> Response {
    let page = include_str!("player.html").replace("{{PATH}}", &html_escape(path));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        page,
    )
        .into_response()
}

pub fn html_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(route("/live/cam1.flv"), Some(Route::Flv("live/cam1"))));
        assert!(matches!(route("/live/cam1/"), Some(Route::Player("live/cam1"))));
        assert!(matches!(
            route("/live/cam1/index.m3u8"),
            Some(Route::Hls {
                path: "live/cam1",
                file: "index.m3u8"
            })
        ));
        assert!(matches!(
            route("/live/cam1"),
            Some(Route::PathWithoutSlash("live/cam1"))
        ));
        assert!(route("/").is_none());
    }
}
