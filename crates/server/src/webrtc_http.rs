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
use tower_http::cors::CorsLayer;

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
        (Route::Player(path), &Method::GET | &Method::HEAD) => {
            page(&st, include_str!("webrtc_player.html"), path)
        }
        (Route::Publisher(path), &Method::GET | &Method::HEAD) => {
            page(&st, include_str!("webrtc_publish.html"), path)
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
            if st.webrtc.delete(id).await {
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
    if let Some(refused) = authorize(st, path, whip, remote, headers) {
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
            for l in ice_server_links(&st.shared.config.webrtc) {
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

/// Checks the path's WebRTC token against the request's credentials (Bearer, or the password of
/// Basic); `Some(401)` when it does not match.
fn authorize(st: &St, path: &str, whip: bool, remote: SocketAddr, headers: &HeaderMap) -> Option<Response> {
    let pcfg = st.shared.config.path(path)?;
    let want = if whip {
        &pcfg.webrtc_publish_token
    } else {
        &pcfg.webrtc_read_token
    };
    if want.is_empty() {
        return None;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(credential);
    if given
        .as_deref()
        .is_some_and(|g| constant_time_eq(g.as_bytes(), want.as_bytes()))
    {
        return None;
    }
    let action = if whip { "publish" } else { "read" };
    tracing::info!(%remote, path, "WebRTC {action} refused: {}", if given.is_some() { "wrong token" } else { "no token" });
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, "Bearer realm=\"sluice\""),
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            ],
            format!("this path needs a token to {action}: send Authorization: Bearer TOKEN\n"),
        )
            .into_response(),
    )
}

/// The secret of an `Authorization` value: a Bearer token, or the password of Basic credentials.
fn credential(v: &str) -> Option<String> {
    let (scheme, rest) = v.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest.trim())?;
        let text = String::from_utf8(decoded).ok()?;
        return text.split_once(':').map(|(_, pass)| pass.to_owned());
    }
    None
}

/// Standard base64 (RFC 4648) with or without padding; `None` on any other character.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
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
        .replace("{{ICE_SERVERS}}", &ice_servers_json(&st.shared.config.webrtc));
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
    fn credentials_from_bearer_and_basic() {
        assert_eq!(credential("Bearer s3cret").as_deref(), Some("s3cret"));
        // "obs:s3cret"
        assert_eq!(credential("Basic b2JzOnMzY3JldA==").as_deref(), Some("s3cret"));
        assert_eq!(credential("Basic !!!"), None);
        assert_eq!(credential("Digest x"), None);
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
    }

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
