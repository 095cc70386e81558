//! The WebRTC HTTP listener (8889): WHIP (RFC 9725) and WHEP offer/answer, trickle ICE PATCH,
//! DELETE, CORS, and the browser pages to watch (`/P/`) and publish (`/P/publish`).
//!
//! URLs: `POST /P/whip`, `POST /P/whep` create a session and answer `201 Created` with the SDP
//! answer and `Location: /P/whip/ID` (or `/P/whep/ID`); `PATCH` and `DELETE` go to that location.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Router;
use sluice_webrtc::{Error, WebRtc};
use tower_http::cors::CorsLayer;

use crate::http_error::HttpError;
use crate::server::Shared;

/// Largest SDP offer or trickle fragment accepted (browser offers are 3–10 KB).
const MAX_SDP: usize = 64 * 1024;

#[derive(Clone)]
struct St {
    shared: Arc<Shared>,
    webrtc: WebRtc,
}

pub fn router(shared: Arc<Shared>, webrtc: WebRtc) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(crate::http::cors_origin(&shared.config.http.cors_origin))
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

/// An error answer: an [`HttpError`], JSON like every HTTP surface's.
fn error_text(code: StatusCode, msg: impl std::fmt::Display) -> Response {
    HttpError::new(code, msg.to_string()).into_response()
}

fn error_response(e: &Error) -> Response {
    use sluice_media::PublishError;
    let code = match e {
        Error::BadOffer(_) | Error::NoUsableCodec(_) | Error::BadCandidate(_) | Error::BadAnswer(_) => {
            StatusCode::BAD_REQUEST
        }
        Error::NotPublished(_) | Error::NoSession => StatusCode::NOT_FOUND,
        Error::Publish(PublishError::PathBusy { .. }) => StatusCode::CONFLICT,
        Error::Publish(PublishError::NotConfigured { .. }) => StatusCode::FORBIDDEN,
        Error::Publish(_) | Error::Read(_) => StatusCode::BAD_REQUEST,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_text(code, e)
}

async fn handle(
    State(st): State<St>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejected) => return error_text(rejected.status(), rejected.body_text()),
    };
    let Some(r) = route(uri.path()) else {
        return error_text(
            StatusCode::NOT_FOUND,
            "nothing here: try /PATH/ (watch), /PATH/publish, or WHIP/WHEP at /PATH/whip, /PATH/whep",
        );
    };
    match (r, &method) {
        (Route::Player(path), &Method::GET | &Method::HEAD) => {
            page(&st, include_str!("webrtc_player.html"), path)
        }
        (Route::Publisher(path), &Method::GET | &Method::HEAD) => {
            page(&st, include_str!("webrtc_publish.html"), path)
        }
        (Route::NoSlash(path), &Method::GET | &Method::HEAD) => {
            Redirect::permanent(&format!("/{path}/")).into_response()
        }
        (Route::Offer { path, whip }, &Method::POST) => {
            offer(&st, path, whip, remote, &headers, uri.query(), &body).await
        }
        (Route::Offer { .. }, _) => error_text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST an SDP offer (Content-Type: application/sdp)",
        ),
        (Route::Session { id, .. }, &Method::DELETE) => {
            if st.webrtc.delete(id).await {
                StatusCode::OK.into_response()
            } else {
                error_text(StatusCode::NOT_FOUND, Error::NoSession)
            }
        }
        (Route::Session { id, .. }, &Method::PATCH) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !ct.starts_with("application/trickle-ice-sdpfrag") {
                return error_text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "PATCH takes Content-Type: application/trickle-ice-sdpfrag",
                );
            }
            let Ok(frag) = std::str::from_utf8(&body) else {
                return error_text(StatusCode::BAD_REQUEST, "the fragment is not UTF-8");
            };
            match st.webrtc.patch(id, frag).await {
                Ok(None) => StatusCode::NO_CONTENT.into_response(),
                // ICE restart: our new credentials and candidates.
                Ok(Some(answer)) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/trickle-ice-sdpfrag")],
                    answer,
                )
                    .into_response(),
                Err(e) => error_response(&e),
            }
        }
        _ => error_text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
    }
}

async fn offer(
    st: &St,
    path: &str,
    whip: bool,
    remote: SocketAddr,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &Bytes,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/sdp") {
        return error_text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must have Content-Type: application/sdp",
        );
    }
    if body.len() > MAX_SDP {
        return error_text(StatusCode::PAYLOAD_TOO_LARGE, "SDP offer too large");
    }
    let Ok(sdp) = std::str::from_utf8(body) else {
        return error_text(StatusCode::BAD_REQUEST, "malformed SDP offer: not UTF-8");
    };
    if let Some(refused) = authorize(st, path, whip, remote, headers, query).await {
        return refused;
    }
    let res = if whip {
        st.webrtc.whip(path, sdp, Some(remote)).await
    } else {
        st.webrtc.whep(path, sdp, Some(remote)).await
    };
    match res {
        Ok(a) => {
            let kind = if whip { "whip" } else { "whep" };
            let location = format!("/{path}/{kind}/{}", a.session);
            let mut links = HeaderMap::new();
            for l in ice_server_links(&st.shared.live.get().webrtc) {
                if let Ok(v) = HeaderValue::from_str(&l) {
                    links.append(header::LINK, v);
                }
            }
            (
                StatusCode::CREATED,
                links,
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

/// Asks the access policy whether this WHIP publisher / WHEP reader may go on, from its
/// `Authorization` header (Bearer token, or Basic user and password) or a `?token=` query;
/// `Some(401/403)` when refused.
async fn authorize(
    st: &St,
    path: &str,
    whip: bool,
    remote: SocketAddr,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<Response> {
    use sluice_media::access::{Action, Denied};
    let action = if whip { Action::Publish } else { Action::Read };
    let req = crate::auth::http_request(action, path, "webrtc", remote, headers, query);
    let denied = st.shared.registry.authorize(&req).await.err()?;
    let action = action.name();
    Some(match denied {
        Denied::Unauthorized(why) => {
            tracing::info!(%remote, path, "WebRTC {action} refused: {why}");
            let needs = if why.message.contains("user") {
                "credentials"
            } else {
                "a token"
            };
            (
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"sluice\"")],
                HttpError::unauthorized(format!(
                    "this path needs {needs} to {action} ({why}): send Authorization: Bearer TOKEN (or Basic USER:PASSWORD)"
                )),
            )
                .into_response()
        }
        Denied::Forbidden(why) => {
            tracing::info!(%remote, path, "WebRTC {action} refused: {why}");
            HttpError::forbidden(why.to_string()).into_response()
        }
    })
}

/// RFC 9725 section 4.6: one `Link: <URL>; rel="ice-server"` per configured STUN/TURN server.
fn ice_server_links(cfg: &crate::config::WebRtcSection) -> Vec<String> {
    ice_servers(cfg)
        .map(|(url, creds)| match creds {
            Some((user, pass)) => format!(
                "<{url}>; rel=\"ice-server\"; username=\"{user}\"; credential=\"{pass}\"; credential-type=\"password\""
            ),
            None => format!("<{url}>; rel=\"ice-server\""),
        })
        .collect()
}

/// The configured STUN/TURN servers, with the credentials that go with the `turn:` ones.
fn ice_servers(cfg: &crate::config::WebRtcSection) -> impl Iterator<Item = (&str, Option<(&str, &str)>)> {
    cfg.ice_servers.iter().map(|url| {
        let creds = (url.starts_with("turn") && !cfg.ice_servers_user.is_empty())
            .then_some((cfg.ice_servers_user.as_str(), cfg.ice_servers_pass.as_str()));
        (url.as_str(), creds)
    })
}

/// The pages' `RTCPeerConnection` configuration: the same servers as JSON.
fn ice_servers_json(cfg: &crate::config::WebRtcSection) -> String {
    let servers: Vec<serde_json::Value> = ice_servers(cfg)
        .map(|(url, creds)| match creds {
            Some((user, pass)) => serde_json::json!({"urls": url, "username": user, "credential": pass}),
            None => serde_json::json!({"urls": url}),
        })
        .collect();
    // Inside a <script>: keep "</" from ending it.
    serde_json::Value::Array(servers)
        .to_string()
        .replace("</", "<\\/")
}

fn page(st: &St, template: &str, path: &str) -> Response {
    let page = template
        .replace("{{PATH}}", &crate::http::html_escape(path))
        .replace("{{ICE_SERVERS}}", &ice_servers_json(&st.shared.live.get().webrtc));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        page,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(
            route("/live/cam1/whip"),
            Some(Route::Offer {
                path: "live/cam1",
                whip: true
            })
        ));
        assert!(matches!(
            route("/live/cam1/whep"),
            Some(Route::Offer {
                path: "live/cam1",
                whip: false
            })
        ));
        assert!(matches!(
            route("/live/cam1/whep/abc"),
            Some(Route::Session { id: "abc" })
        ));
        assert!(matches!(route("/live/cam1/"), Some(Route::Player("live/cam1"))));
        assert!(matches!(
            route("/live/cam1/publish"),
            Some(Route::Publisher("live/cam1"))
        ));
        assert!(route("/").is_none());
    }
}
