//! The WebRTC HTTP listener (8889): WHIP (RFC 9725) and WHEP offer/answer, trickle ICE PATCH,
//! DELETE, CORS, and the browser pages to watch (`/P/`) and publish (`/P/publish`).
//!
//! URLs: `POST /P/whip`, `POST /P/whep` create a session and answer `201 Created` with the SDP
//! answer and `Location: /P/whip/ID` (or `/P/whep/ID`); `PATCH` and `DELETE` go to that location.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Router;
use sluice_webrtc::{Error, WebRtc};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::server::Shared;

/// Largest SDP offer or trickle fragment accepted (browser offers are 3–10 KB).
const MAX_SDP: usize = 64 * 1024;

#[derive(Clone)]
struct St {
    shared: Arc<Shared>,
    webrtc: WebRtc,
}

pub fn router(shared: Arc<Shared>, webrtc: WebRtc) -> Router {
    let origin = &shared.config.http.cors_origin;
    let allow = if origin == "*" {
        AllowOrigin::any()
    } else {
        AllowOrigin::exact(HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("null")))
    };
    let cors = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::IF_MATCH])
        .expose_headers([
            header::LOCATION,
            header::ETAG,
            header::LINK,
            header::HeaderName::from_static("accept-patch"),
        ]);
    Router::new()
        .fallback(handle)
        .layer(cors)
        .with_state(St { shared, webrtc })
}

enum Route<'a> {
    Offer { path: &'a str, whip: bool },
    Session { id: &'a str },
    Player(&'a str),
    Publisher(&'a str),
    NoSlash(&'a str),
}

fn route(p: &str) -> Option<Route<'_>> {
    let p = p.strip_prefix('/')?;
    if p.is_empty() {
        return None;
    }
    if let Some(path) = p.strip_suffix("/whip") {
        return Some(Route::Offer { path, whip: true });
    }
    if let Some(path) = p.strip_suffix("/whep") {
        return Some(Route::Offer { path, whip: false });
    }
    if let Some(path) = p.strip_suffix("/publish") {
        return Some(Route::Publisher(path));
    }
    if let Some(path) = p.strip_suffix('/') {
        return Some(Route::Player(path));
    }
    if let Some((rest, id)) = p.rsplit_once('/') {
        for suffix in ["/whip", "/whep"] {
            if rest.ends_with(suffix) {
                return Some(Route::Session { id });
            }
        }
    }
    Some(Route::NoSlash(p))
}

fn text(code: StatusCode, msg: impl std::fmt::Display) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{msg}\n"),
    )
        .into_response()
}

fn error_response(e: &Error) -> Response {
    use sluice_media::PublishError;
    let code = match e {
        Error::BadOffer(_) | Error::NoUsableCodec(_) | Error::BadCandidate(_) => StatusCode::BAD_REQUEST,
        Error::NotPublished(_) | Error::NoSession => StatusCode::NOT_FOUND,
        Error::Publish(PublishError::PathBusy { .. }) => StatusCode::CONFLICT,
        Error::Publish(PublishError::NotConfigured { .. }) => StatusCode::FORBIDDEN,
        Error::Publish(_) | Error::Read(_) => StatusCode::BAD_REQUEST,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    text(code, e)
}

async fn handle(
    State(st): State<St>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(r) = route(uri.path()) else {
        return text(
            StatusCode::NOT_FOUND,
            "nothing here: try /PATH/ (watch), /PATH/publish, or WHIP/WHEP at /PATH/whip, /PATH/whep",
        );
    };
    match (r, &method) {
        (Route::Player(path), &Method::GET | &Method::HEAD) => page(include_str!("webrtc_player.html"), path),
        (Route::Publisher(path), &Method::GET | &Method::HEAD) => {
            page(include_str!("webrtc_publish.html"), path)
        }
        (Route::NoSlash(path), &Method::GET | &Method::HEAD) => {
            Redirect::permanent(&format!("/{path}/")).into_response()
        }
        (Route::Offer { path, whip }, &Method::POST) => offer(&st, path, whip, remote, &headers, &body).await,
        (Route::Offer { .. }, _) => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST an SDP offer (Content-Type: application/sdp)",
        ),
        (Route::Session { id, .. }, &Method::DELETE) => {
            if st.webrtc.delete(id) {
                StatusCode::OK.into_response()
            } else {
                text(StatusCode::NOT_FOUND, Error::NoSession)
            }
        }
        (Route::Session { id, .. }, &Method::PATCH) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !ct.starts_with("application/trickle-ice-sdpfrag") {
                return text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "PATCH takes Content-Type: application/trickle-ice-sdpfrag",
                );
            }
            let Ok(frag) = std::str::from_utf8(&body) else {
                return text(StatusCode::BAD_REQUEST, "the fragment is not UTF-8");
            };
            match st.webrtc.patch(id, frag).await {
                Ok(()) => StatusCode::NO_CONTENT.into_response(),
                Err(Error::BadCandidate(m)) if m.starts_with("ICE restart") => {
                    text(StatusCode::UNPROCESSABLE_ENTITY, m)
                }
                Err(e) => error_response(&e),
            }
        }
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
    }
}

async fn offer(
    st: &St,
    path: &str,
    whip: bool,
    remote: SocketAddr,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/sdp") {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must have Content-Type: application/sdp",
        );
    }
    if body.len() > MAX_SDP {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "SDP offer too large");
    }
    let Ok(sdp) = std::str::from_utf8(body) else {
        return text(StatusCode::BAD_REQUEST, "malformed SDP offer: not UTF-8");
    };
    let _ = &st.shared;
    let res = if whip {
        st.webrtc.whip(path, sdp, Some(remote)).await
    } else {
        st.webrtc.whep(path, sdp, Some(remote)).await
    };
    match res {
        Ok(a) => {
            let kind = if whip { "whip" } else { "whep" };
            let location = format!("/{path}/{kind}/{}", a.session);
            (
                StatusCode::CREATED,
                [
                    (header::CONTENT_TYPE, "application/sdp".to_owned()),
                    (header::LOCATION, location),
                    (header::ETAG, format!("\"{}\"", a.session)),
                    (
                        header::HeaderName::from_static("accept-patch"),
                        "application/trickle-ice-sdpfrag".to_owned(),
                    ),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
                a.sdp,
            )
                .into_response()
        }
        Err(e) => {
            tracing::info!(%remote, path, "WebRTC {} refused: {e}", if whip { "WHIP" } else { "WHEP" });
            error_response(&e)
        }
    }
}

fn page(template: &str, path: &str) -> Response {
    let page = template.replace("{{PATH}}", &crate::http::html_escape(path));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        page,
    )
        .into_response()
}
