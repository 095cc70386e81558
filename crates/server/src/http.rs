//! The HTTP delivery listener: HLS playlists and segments, HTTP-FLV, and the player page.
//!
//! URLs (PRODUCT.md): `/P/index.m3u8` (and the media playlist and segments it names under `/P/`),
//! `/P.flv`, and `/P/` for the player page. `/~sluice/` is reserved for what Sluice serves
//! itself (the player's hls.js): no path name may start with `~`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use hyper::body::Incoming;
use sluice_container::flv::FlvWriter;
use sluice_media::{Event, ReadError, SessionInfo};
use tower_http::cors::AllowOrigin;

use crate::http_error::HttpError;
use crate::range::{byte_range, RangeAsk};
use crate::server::Shared;

const PLAYLIST_CACHE: &str = "max-age=1";
const SEGMENT_CACHE: &str = "public, max-age=3600, immutable";
const M3U8: &str = "application/vnd.apple.mpegurl";

/// A playlist or MPD: counted for the stream's viewers, cacheable for a second.
fn manifest(
    stream: &sluice_hls::HlsStream,
    remote: SocketAddr,
    content_type: &'static str,
    text: impl Into<Bytes>,
) -> Response {
    let text: Bytes = text.into();
    stream.viewers.record(Some(remote.ip()), text.len() as u64);
    response(
        axum::http::StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(PLAYLIST_CACHE)),
        ],
        Body::from(text),
    )
}

/// `Access-Control-Allow-Origin` from `[http] cors_origin`, for every HTTP listener.
pub fn cors_origin(origin: &str) -> AllowOrigin {
    if origin == "*" {
        AllowOrigin::any()
    } else {
        AllowOrigin::exact(HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("null")))
    }
}

/// The delivery listener's service (`http_serve::serve` drives it): one handler for every URL,
/// called by hyper directly. No router: none is needed to tell these URLs apart (`route`), and
/// a router's per-request work (its layers, boxed services, cloned request heads) was about a
/// fifth of the CPU of an origin serving 1000 LL-HLS viewers (docs/benchmarks.md).
#[derive(Clone)]
pub struct Delivery {
    shared: Arc<Shared>,
    cors: Arc<Cors>,
}

/// The CORS headers of `[http] cors_origin`: the same on every response (a media server's files
/// are read by players on other origins), so written once. A preflight (`OPTIONS`) is answered
/// here, for the methods and request headers a player uses.
struct Cors {
    allow_origin: HeaderValue,
    /// `Vary: Origin`, needed by shared caches only when the answer names one origin; `*` is
    /// the same for every origin.
    vary: bool,
}

impl Cors {
    fn new(origin: &str) -> Cors {
        let allow_origin = if origin == "*" {
            HeaderValue::from_static("*")
        } else {
            HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("null"))
        };
        Cors {
            allow_origin,
            vary: origin != "*",
        }
    }

    fn apply(&self, headers: &mut HeaderMap, preflight: bool) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin.clone());
        if preflight {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET,HEAD,OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("range,content-type"),
            );
        } else {
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("content-length"),
            );
        }
        if self.vary {
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
    }
}

/// The request headers the delivery handler reads: credentials and what the access request
/// reports (`Authorization`, `User-Agent`, `X-Forwarded-For`), conditional and range requests.
const HEADERS_READ: [header::HeaderName; 5] = [
    header::AUTHORIZATION,
    header::USER_AGENT,
    header::HeaderName::from_static("x-forwarded-for"),
    header::IF_NONE_MATCH,
    header::RANGE,
];

/// The request head with its own copy of the bytes of the URI and of the header values the
/// handler reads ([`HEADERS_READ`]; the others are dropped), which hyper parses as slices of
/// the connection's read buffer. Kept while a request is held (a blocking playlist reload, a
/// preload-hinted part), those slices would make hyper allocate a new read buffer for each read
/// it makes meanwhile (to notice a client that goes away): an 8 KiB allocation per held
/// request, 3 % of the CPU of an origin serving 1000 LL-HLS viewers, against a few small ones
/// here (none for a header a player does not send).
fn detach(parts: axum::http::request::Parts) -> axum::http::request::Parts {
    let mut head = Request::new(()).into_parts().0;
    head.method = parts.method;
    head.version = parts.version;
    head.uri = parts
        .uri
        .path_and_query()
        .and_then(|pq| axum::http::Uri::try_from(pq.as_str()).ok())
        .unwrap_or_default();
    for name in &HEADERS_READ {
        for value in parts.headers.get_all(name) {
            if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
                head.headers.append(name.clone(), v);
            }
        }
    }
    head.extensions = parts.extensions;
    head
}

/// A response with its headers in a map made large enough at once for them and those added
/// after (CORS, `Content-Length`): building one header by header from an empty map grew and
/// rehashed it twice per response.
fn response(
    status: axum::http::StatusCode,
    headers: impl IntoIterator<Item = (header::HeaderName, HeaderValue)>,
    body: Body,
) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let map = resp.headers_mut();
    map.reserve(12);
    for (name, value) in headers {
        map.insert(name, value);
    }
    resp
}

/// The service of the delivery listener.
pub fn delivery(shared: Arc<Shared>) -> Delivery {
    let cors = Arc::new(Cors::new(&shared.config.http.cors_origin));
    Delivery { shared, cors }
}

impl crate::http_serve::App for Delivery {
    type Service = Delivery;
    fn into_service(self) -> Delivery {
        self
    }
}

impl hyper::service::Service<Request<Incoming>> for Delivery {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let (shared, cors) = (self.shared.clone(), self.cors.clone());
        // The body of a GET or HEAD is nothing a handler reads.
        let (parts, _) = req.into_parts();
        let parts = detach(parts);
        Box::pin(async move {
            let preflight = parts.method == Method::OPTIONS;
            let mut resp = if preflight {
                Response::new(Body::empty())
            } else {
                handle(&shared, &parts).await
            };
            cors.apply(resp.headers_mut(), preflight);
            if parts.method == Method::HEAD {
                // The length of what a GET would get, and no body: hyper drops it on HTTP/1.1,
                // but would send it on HTTP/2.
                if let Some(len) = axum::body::HttpBody::size_hint(resp.body()).exact() {
                    resp.headers_mut()
                        .entry(header::CONTENT_LENGTH)
                        .or_insert_with(|| HeaderValue::from(len));
                }
                *resp.body_mut() = Body::empty();
            }
            Ok(resp)
        })
    }
}

enum Route<'a> {
    /// A file Sluice serves itself, under the reserved `/~sluice/` prefix.
    Asset(&'a str),
    Flv(&'a str),
    Player(&'a str),
    Hls {
        path: &'a str,
        file: &'a str,
    },
    PathWithoutSlash(&'a str),
}

fn route(uri_path: &str) -> Option<Route<'_>> {
    let p = uri_path.strip_prefix('/')?;
    if p.is_empty() {
        return None;
    }
    if let Some(file) = p.strip_prefix(ASSET_PREFIX) {
        return Some(Route::Asset(file));
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

async fn handle(shared: &Shared, req: &axum::http::request::Parts) -> Response {
    let (method, uri, headers) = (&req.method, &req.uri, &req.headers);
    let remote = req
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
    if method != Method::GET && method != Method::HEAD {
        return HttpError::method_not_allowed("only GET and HEAD are allowed").into_response();
    }
    let route = route(uri.path());
    // Readers are asked for credentials on what names a stream (HTTP-FLV, the playlists), not
    // on segments: those carry no per-viewer secret, so a CDN caches them for every viewer.
    let checked = match &route {
        Some(Route::Flv(path)) => Some((*path, "http-flv")),
        Some(Route::Hls { path, file }) if file.ends_with(".m3u8") || *file == "snapshot.jpg" => {
            Some((*path, "hls"))
        }
        Some(Route::Hls { path, file }) if file.ends_with(".mpd") => Some((*path, "dash")),
        _ => None,
    };
    if let Some((path, protocol)) = checked {
        if let Some(refused) = authorize(shared, path, protocol, remote, headers, uri.query()).await {
            return refused;
        }
    }
    match route {
        None => not_found("nothing here: try /PATH/index.m3u8, /PATH.flv or /PATH/"),
        Some(Route::Flv(path)) => flv(shared, path, remote),
        Some(Route::Player(path)) => player(path),
        Some(Route::Asset("time")) => utc_time(),
        Some(Route::Asset(file)) => asset(file, headers),
        Some(Route::PathWithoutSlash(path)) => Redirect::permanent(&format!("/{path}/")).into_response(),
        Some(Route::Hls {
            path,
            file: "snapshot.jpg",
        }) => snapshot(shared, path, uri.query()).await,
        Some(Route::Hls {
            path,
            file: "dash.html",
        }) => dash_player(path),
        Some(Route::Hls { path, file }) if file.ends_with(".mpd") || file.starts_with("dash-") => {
            dash(shared, path, file, remote, headers).await
        }
        Some(Route::Hls { path, file }) => {
            let resp = hls(shared, path, file, remote, uri.query(), headers).await;
            match credential_query(uri.query()) {
                Some(q) if file == "index.m3u8" => carry_query(resp, &q).await,
                _ => resp,
            }
        }
    }
}

/// The credential pairs of a query (`token`, `jwt`, `user`, `pass`, a signed link's `expires`,
/// `ip`, `sig`), re-joined.
fn credential_query(query: Option<&str>) -> Option<String> {
    let pairs: Vec<&str> = query?
        .split('&')
        .filter(|p| {
            let k = p.split('=').next().unwrap_or("");
            matches!(
                k,
                "token" | "jwt" | "user" | "username" | "pass" | "password" | "expires" | "ip" | "sig"
            )
        })
        .filter(|p| !p.contains(['"', '\r', '\n']))
        .collect();
    (!pairs.is_empty()).then(|| pairs.join("&"))
}

/// A player that got the multivariant playlist with `?token=` must send it again for the media
/// playlists it names (relative URLs drop the query): append it to their URLs. Segments are
/// left alone (no per-viewer secret in what a CDN caches).
async fn carry_query(resp: Response, query: &str) -> Response {
    if !resp.status().is_success() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return HttpError::internal("playlist too large").into_response();
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        if !line.starts_with('#') && line.ends_with(".m3u8") {
            out.push_str(&format!("{line}?{query}"));
        } else if line.starts_with('#') && line.contains(".m3u8\"") {
            out.push_str(&line.replace(".m3u8\"", &format!(".m3u8?{query}\"")));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    // It now holds this viewer's credentials: no shared cache may keep it.
    parts.headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=1"),
    );
    Response::from_parts(parts, Body::from(out))
}

/// Asks the access policy whether this HTTP reader may read `path`: credentials from
/// `Authorization` (Basic or Bearer) or the query (`?token=`, `?user=&pass=`, for players that
/// cannot set headers). `Some(401)` (or 404) when refused.
async fn authorize(
    shared: &Shared,
    path: &str,
    protocol: &'static str,
    remote: SocketAddr,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<Response> {
    use sluice_media::access::{Action, Denied};
    let req = crate::auth::http_request(Action::Read, path, protocol, remote, headers, query);
    match shared.registry.authorize(&req).await.err()? {
        Denied::Unauthorized(why) => Some(
            (
                [(header::WWW_AUTHENTICATE, "Basic realm=\"sluice\"")],
                HttpError::unauthorized(format!(
                    "reading this path needs credentials ({why}): add ?token=TOKEN (or ?user=USER&pass=PASSWORD) to the URL, or send an Authorization header"
                )),
            )
                .into_response(),
        ),
        // A path that does not exist (said only to a client that may read it): answered like
        // a path with no stream.
        Denied::Forbidden(why) if why.code == "path_not_configured" => {
            Some(not_found(&format!("no stream is available on path {path}")))
        }
        // Not allowed whatever the credentials (address, permissions): the log says more.
        Denied::Forbidden(why) => Some(HttpError::forbidden(why.to_string()).into_response()),
    }
}

/// `GET /PATH/snapshot.jpg[?width=W]`: the latest keyframe as a JPEG (`snapshot.rs`).
async fn snapshot(shared: &Shared, path: &str, query: Option<&str>) -> Response {
    let width = query
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("width="))
        .map(|w| w.parse::<u32>());
    let width = match width {
        None => 0,
        Some(Ok(w)) if (16..=7680).contains(&w) && w % 2 == 0 => w,
        Some(_) => {
            return HttpError::bad_request("width must be an even number of pixels from 16 to 7680")
                .into_response()
        }
    };
    let ffmpeg = shared
        .live
        .get()
        .path(path)
        .map(|p| p.transcode.ffmpeg.clone())
        .unwrap_or_else(|| "ffmpeg".into());
    match shared.snapshots.get(&shared.registry, path, width, &ffmpeg).await {
        Ok(jpeg) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "max-age=1"),
            ],
            jpeg,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

fn not_found(msg: &str) -> Response {
    HttpError::not_found(msg).into_response()
}

fn playlist_error(e: sluice_hls::PlaylistError) -> Response {
    use sluice_hls::PlaylistError;
    match e {
        PlaylistError::BadRequest(m) => HttpError::bad_request(m).into_response(),
        PlaylistError::Unavailable(m) => HttpError::unavailable(m).into_response(),
        e => not_found(&e.to_string()),
    }
}

async fn hls(
    shared: &Shared,
    path: &str,
    file: &str,
    remote: SocketAddr,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let stream = match live_stream(shared, path).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if file.ends_with(".m3u8") {
        // LL-HLS blocking reload and delta updates (RFC 8216bis 6.2.5); checked before waiting.
        let q = match sluice_hls::PlaylistQuery::parse(query) {
            Ok(q) => q,
            Err(e) => return playlist_error(e),
        };
        if !stream.wait_ready(shared.live.get().hls.ready_timeout).await {
            return not_found(&format!("stream {path} has no segment yet"));
        }
        // A path with renditions: its multivariant playlist names them too.
        if file == "index.m3u8" && !sluice_media::is_reserved(path) {
            wake_renditions(shared, path).await;
            let others = renditions_of(shared, path, "");
            if !others.is_empty() {
                let text = stream.multivariant_with(&others);
                return manifest(&stream, remote, M3U8, text);
            }
        }
        // LL-HLS media playlists report where the path's other renditions stand
        // (EXT-X-RENDITION-REPORT), relative to this one: a source's from `~NAME/`, a
        // rendition's from `../`.
        let reports = if file == "stream.m3u8" {
            match path.rsplit_once("/~") {
                Some((source, own)) if !sluice_media::is_reserved(source) => {
                    let mut r: Vec<_> = renditions_of(shared, source, "../")
                        .into_iter()
                        .filter(|(uri, _)| uri != &format!("../~{own}/stream.m3u8"))
                        .collect();
                    if let Some(s) = shared.hls.get(source).filter(|s| s.is_ready()) {
                        r.insert(0, ("../stream.m3u8".to_owned(), s));
                    }
                    r
                }
                Some(_) => Vec::new(),
                None => renditions_of(shared, path, ""),
            }
        } else {
            Vec::new()
        };
        return match stream.playlist_with_reports(file, q, &reports).await {
            Ok(text) => manifest(&stream, remote, M3U8, text),
            Err(sluice_hls::PlaylistError::NotFound(_)) => {
                not_found(&format!("no playlist {file} on path {path}"))
            }
            Err(e) => playlist_error(e),
        };
    }
    // The part named by EXT-X-PRELOAD-HINT is held until it is complete.
    let found = match stream.file_when_ready(file).await {
        Ok(f) => f,
        Err(e) => return playlist_error(e),
    };
    match found {
        Some((bytes, content_type)) => {
            stream.viewers.record(Some(remote.ip()), bytes.len() as u64);
            immutable(headers, file, content_type, vec![bytes])
        }
        None => not_found(&format!(
            "no file {file} on path {path} (it may have left the playlist window)"
        )),
    }
}

/// A player of a source whose ladder is on demand starts it: its multivariant playlist or MPD
/// waits (up to the HLS ready timeout) for the renditions, so that it names them all.
async fn wake_renditions(shared: &Shared, source: &str) {
    let names: Vec<String> = match shared.live.get().path(source) {
        Some(p) if p.transcode.on_demand => p.transcode.renditions.iter().map(|r| r.name.clone()).collect(),
        _ => return,
    };
    let ready = || {
        names.iter().all(|n| {
            shared
                .hls
                .get(&crate::transcode::rendition_path(source, n))
                .is_some_and(|s| s.is_ready())
        })
    };
    let Some(first) = names.first() else { return };
    // Asked even when they run: it renews the demand.
    shared
        .registry
        .demand(&crate::transcode::rendition_path(source, first));
    let deadline = tokio::time::Instant::now() + shared.live.get().hls.ready_timeout;
    while !ready() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The packaged renditions of `source` (`[..transcode] renditions`), each with the URI of its
/// media playlist (`PREFIX~NAME/stream.m3u8`).
fn renditions_of(shared: &Shared, source: &str, prefix: &str) -> Vec<(String, Arc<sluice_hls::HlsStream>)> {
    let names: Vec<String> = shared
        .live
        .get()
        .path(source)
        .map(|p| p.transcode.renditions.iter().map(|r| r.name.clone()).collect())
        .unwrap_or_default();
    names
        .iter()
        .filter_map(|n| {
            let s = shared.hls.get(&crate::transcode::rendition_path(source, n))?;
            s.is_ready().then(|| (format!("{prefix}~{n}/stream.m3u8"), s))
        })
        .collect()
}

/// The path's packaged stream; the packager is attached when the stream's tracks are known, and
/// a player may ask just as the publisher connects, before that: wait while the path is
/// published, up to the ready timeout.
async fn live_stream(shared: &Shared, path: &str) -> Result<Arc<sluice_hls::HlsStream>, Response> {
    if let Some(s) = shared.hls.get(path) {
        return Ok(s);
    }
    let deadline = tokio::time::Instant::now() + shared.live.get().hls.ready_timeout;
    loop {
        let live = shared.registry.is_published(path);
        if !live || tokio::time::Instant::now() >= deadline {
            return Err(not_found(&format!("no stream is available on path {path}")));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if let Some(s) = shared.hls.get(path) {
            return Ok(s);
        }
    }
}

/// `GET /PATH/index.mpd` and the DASH files it names (`dash-…`), from the HLS packager's
/// segments (`sluice_hls::DashFile`).
async fn dash(shared: &Shared, path: &str, file: &str, remote: SocketAddr, headers: &HeaderMap) -> Response {
    let stream = match live_stream(shared, path).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if file == "index.mpd" {
        if !stream.wait_ready(shared.live.get().hls.ready_timeout).await {
            return not_found(&format!("stream {path} has no segment yet"));
        }
        // Players read the server's clock there (UTCTiming): relative to the MPD, so that it
        // is asked of whatever host served the MPD (a CDN rewrites Host on its way here).
        let time_url = format!("{}{ASSET_PREFIX}time", "../".repeat(path.split('/').count()));
        // A path with renditions: they are more video representations of its MPD.
        let renditions: Vec<(String, String, Arc<sluice_hls::HlsStream>)> = if sluice_media::is_reserved(path)
        {
            Vec::new()
        } else {
            wake_renditions(shared, path).await;
            renditions_of(shared, path, "")
                .into_iter()
                .filter_map(|(uri, s)| {
                    let prefix = uri.strip_suffix("stream.m3u8")?.to_owned();
                    let name = prefix.trim_start_matches('~').trim_end_matches('/').to_owned();
                    Some((name, prefix, s))
                })
                .collect()
        };
        return match stream.mpd_with(&time_url, &renditions) {
            Some(text) => manifest(&stream, remote, "application/dash+xml", text),
            None => not_found(&format!(
                "no DASH manifest for path {path}: DASH needs fMP4 segments (hls variant \"low-latency\" or \"fmp4\", not \"mpegts\")"
            )),
        };
    }
    match stream.dash_file(file).await {
        Ok(Some(sluice_hls::DashFile::Init(bytes, ct))) => {
            stream.viewers.record(Some(remote.ip()), bytes.len() as u64);
            immutable(headers, file, ct, vec![bytes])
        }
        Ok(Some(sluice_hls::DashFile::Segment(pieces))) => {
            let len: usize = pieces.iter().map(Bytes::len).sum();
            stream.viewers.record(Some(remote.ip()), len as u64);
            immutable(headers, file, dash_media_type(file), pieces)
        }
        Ok(Some(sluice_hls::DashFile::Live(body))) => {
            stream.viewers.record(Some(remote.ip()), 0);
            // Sent as its parts are made (chunked); a cache may keep it once complete.
            (
                [
                    (header::CONTENT_TYPE, dash_media_type(file)),
                    (header::CACHE_CONTROL, SEGMENT_CACHE),
                ],
                Body::from_stream(body),
            )
                .into_response()
        }
        Ok(None) => not_found(&format!(
            "no file {file} on path {path} (it may have left the window, or not be made yet)"
        )),
        Err(e) => playlist_error(e),
    }
}

fn dash_media_type(file: &str) -> &'static str {
    if file.contains("-a-") {
        "audio/mp4"
    } else {
        "video/mp4"
    }
}

/// `GET /~sluice/time`: the server's clock (DASH `UTCTiming`, `urn:mpeg:dash:utc:http-iso:2014`).
fn utc_time() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        sluice_hls::playlist::rfc3339_millis(std::time::SystemTime::now()),
    )
        .into_response()
}

/// A file that never changes under its name (segment, part, init segment), from its pieces:
/// `ETag` and `If-None-Match`, one byte range (`Range: bytes=…`, 206 or 416), HEAD (the body
/// is dropped by the server), and cache headers a shared cache may follow.
fn immutable(headers: &HeaderMap, name: &str, content_type: &'static str, pieces: Vec<Bytes>) -> Response {
    use axum::http::StatusCode;
    let len: usize = pieces.iter().map(Bytes::len).sum();
    let etag = format!(
        "\"{}-{len}\"",
        name.trim_end_matches(|c: char| c != '.').trim_end_matches('.')
    );
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == "*")
        });
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static(SEGMENT_CACHE)),
        (
            header::ETAG,
            // The string's own buffer becomes the value's: no second copy.
            HeaderValue::from_maybe_shared(Bytes::from(etag)).unwrap_or(HeaderValue::from_static("\"x\"")),
        ),
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
    ];
    if matches {
        return response(StatusCode::NOT_MODIFIED, common, Body::empty());
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| byte_range(v, len));
    let (status, start, end) = match range {
        None | Some(RangeAsk::Ignore) => (StatusCode::OK, 0, len),
        Some(RangeAsk::Range(a, b)) => (StatusCode::PARTIAL_CONTENT, a, b),
        Some(RangeAsk::Unsatisfiable) => {
            let mut resp = response(StatusCode::RANGE_NOT_SATISFIABLE, common, Body::empty());
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
    };
    // The pieces within [start, end), as slices (no copy).
    let mut parts = Vec::new();
    let mut at = 0;
    for p in pieces {
        let (a, b) = (at, at + p.len());
        at = b;
        if b <= start || a >= end {
            continue;
        }
        parts.push(p.slice(start.max(a) - a..end.min(b) - a));
    }
    let body = if parts.len() == 1 {
        Body::from(parts.pop().unwrap_or_default())
    } else {
        Body::from_stream(futures_util::stream::iter(
            parts.into_iter().map(Ok::<_, std::convert::Infallible>),
        ))
    };
    let mut resp = response(status, common, body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

fn dash_player(path: &str) -> Response {
    let page = include_str!("dash_player.html").replace("{{PATH}}", &html_escape(path));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        page,
    )
        .into_response()
}

fn flv(shared: &Shared, path: &str, remote: SocketAddr) -> Response {
    let reader = match shared.registry.read_with(
        path,
        SessionInfo {
            protocol: "http-flv",
            remote: Some(remote),
        },
        sluice_media::Select::AAC,
    ) {
        Ok(r) => r,
        Err(e) => return not_found(&e.to_string()),
    };
    tracing::info!(%remote, path, "HTTP-FLV reader started");
    let state = (reader, FlvWriter::default(), None, false);
    let coalesce = shared.live.get().http.flv_coalesce;
    let body = futures_util::stream::unfold(
        state,
        move |(mut reader, mut writer, mut info, mut sent_header)| async move {
            // After the first write (header and GOP cache, at once), let frames gather for
            // `flv_coalesce` so each write carries several: fewer wakeups per viewer. The
            // publisher's first write after the pause wakes the viewer (no timer of its own).
            if sent_header && !coalesce.is_zero() {
                let now = tokio::time::Instant::now();
                reader.wait_paced(now + coalesce, now + 2 * coalesce).await;
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

/// The reserved prefix of Sluice's own files (a path segment starting with `~` is refused to
/// publishers, so no stream can take it).
const ASSET_PREFIX: &str = "~sluice/";

/// hls.js, vendored from npm (`crates/server/assets`, refreshed by `scripts/refresh-vendored.sh`).
const HLS_JS: &[u8] = include_bytes!("../assets/hls.min.js");
const HLS_JS_LICENSE: &str = include_str!("../assets/hls.js-LICENSE.txt");
/// dash.js, vendored from npm the same way.
const DASH_JS: &[u8] = include_bytes!("../assets/dash.all.min.js");
const DASH_JS_LICENSE: &str = include_str!("../assets/dashjs-LICENSE.txt");
const ASSET_VERSIONS: &str = include_str!("../assets/VERSIONS");

fn asset(file: &str, headers: &HeaderMap) -> Response {
    let (body, kind): (Bytes, &str) = match file {
        "hls.min.js" => (Bytes::from_static(HLS_JS), "text/javascript; charset=utf-8"),
        "hls.js-LICENSE.txt" => (
            Bytes::from_static(HLS_JS_LICENSE.as_bytes()),
            "text/plain; charset=utf-8",
        ),
        "dash.all.min.js" => (Bytes::from_static(DASH_JS), "text/javascript; charset=utf-8"),
        "dashjs-LICENSE.txt" => (
            Bytes::from_static(DASH_JS_LICENSE.as_bytes()),
            "text/plain; charset=utf-8",
        ),
        _ => return not_found("no such file under /~sluice/"),
    };
    // The vendored versions name the content: a new version is a new ETag.
    let version = ASSET_VERSIONS.split_whitespace().collect::<Vec<_>>().join("-");
    let etag = format!("\"{version}-{}\"", env!("CARGO_PKG_VERSION"));
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            // A proxy that compresses weakens the tag (W/"..."): the content is the same.
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == "*")
        });
    let common = [
        (header::CACHE_CONTROL, "public, max-age=86400".to_owned()),
        (header::ETAG, etag.clone()),
    ];
    if cached {
        return (axum::http::StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, [(header::CONTENT_TYPE, kind)], body).into_response()
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
    fn the_detached_head_is_the_same_request_in_its_own_memory() {
        let buf = Bytes::from(b"/live/cam1/stream.m3u8?_HLS_msn=4&_HLS_part=2".to_vec());
        let req = Request::builder()
            .method(Method::HEAD)
            .uri(axum::http::Uri::from_maybe_shared(buf.clone()).unwrap())
            .header(header::RANGE, "bytes=0-99")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-for", "10.0.0.2")
            .header("x-custom", "a")
            .header(header::ACCEPT, "*/*")
            .body(())
            .unwrap();
        let (mut parts, ()) = req.into_parts();
        let remote = SocketAddr::from(([10, 1, 2, 3], 5000));
        parts.extensions.insert(ConnectInfo(remote));
        assert!(!buf.is_unique(), "the URI is a slice of the buffer");
        let head = detach(parts);
        assert_eq!(head.method, Method::HEAD);
        assert_eq!(head.uri.path(), "/live/cam1/stream.m3u8");
        assert_eq!(head.uri.query(), Some("_HLS_msn=4&_HLS_part=2"));
        assert_eq!(head.headers.get(header::RANGE).unwrap(), "bytes=0-99");
        let hops: Vec<_> = head.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(hops, ["10.0.0.1", "10.0.0.2"], "every line of a header, in order");
        // What the handler does not read is not copied.
        assert_eq!(head.headers.len(), 3, "{:?}", head.headers);
        assert_eq!(
            head.extensions.get::<ConnectInfo<SocketAddr>>().unwrap().0,
            remote
        );
        // Nothing of the original buffer is held any more: it is unique again.
        assert!(buf.is_unique());
    }

    #[test]
    fn cors_headers_are_those_of_the_configured_origin() {
        let mut h = HeaderMap::new();
        Cors::new("*").apply(&mut h, false);
        assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "*");
        assert_eq!(
            h.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).unwrap(),
            "content-length"
        );
        // The same answer for every origin: nothing for a cache to vary on.
        assert!(h.get(header::VARY).is_none());

        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        Cors::new("https://player.example").apply(&mut h, true);
        assert_eq!(
            h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
            "https://player.example"
        );
        assert_eq!(
            h.get(header::ACCESS_CONTROL_ALLOW_METHODS).unwrap(),
            "GET,HEAD,OPTIONS"
        );
        assert_eq!(
            h.get(header::ACCESS_CONTROL_ALLOW_HEADERS).unwrap(),
            "range,content-type"
        );
        assert!(h.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).is_none());
        let vary: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["accept-encoding", "origin"]);
    }

    #[test]
    fn credentials_are_carried_to_media_playlists() {
        assert_eq!(
            credential_query(Some("token=a%20b&x=1")).as_deref(),
            Some("token=a%20b")
        );
        assert_eq!(credential_query(Some("x=1")), None);
        assert_eq!(credential_query(None), None);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let resp = (
            [(header::CONTENT_TYPE, "application/vnd.apple.mpegurl")],
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\nstream.m3u8\n",
        )
            .into_response();
        let resp = rt.block_on(carry_query(resp, "token=t"));
        let body = rt
            .block_on(axum::body::to_bytes(resp.into_body(), 1 << 20))
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&body),
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio.m3u8?token=t\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\nstream.m3u8?token=t\n"
        );
    }

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
