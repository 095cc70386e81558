//! `POST /v1/signed-links`: a signed reader link for a path, made with the configuration's
//! `[auth.signed_urls] secret` (the API's twin of `sluice sign-url`), so a website's backend can
//! hand out expiring links without sharing the secret.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{Api, ErrorBody};
use crate::api_config::Reload;
use crate::http_error::HttpError;

#[derive(OpenApi)]
#[openapi(
    tags((name = "auth", description = "Signed reader links (docs/security.md), dashboard logins (docs/dashboard.md)")),
    // Served beside the guard (dashboard.rs): documented here.
    paths(crate::dashboard::login, crate::dashboard::logout)
)]
struct AuthDoc;

pub fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(AuthDoc::openapi())
        .routes(routes!(sign_link))
        .routes(routes!(player_link))
        .routes(routes!(crate::dashboard::me))
}

/// What link to make.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLink {
    /// The path the link opens, e.g. live/cam1.
    path: String,
    /// Seconds the link works, from now (1 to 31,536,000).
    #[schema(minimum = 1, maximum = 31536000)]
    expires_in: u64,
    /// Bind the link to this client address.
    #[serde(default)]
    ip: Option<String>,
}

/// A signed link.
#[derive(Serialize, ToSchema)]
pub struct SignedLink {
    /// The query to append to the path's playlist or HTTP-FLV URL (without `?`).
    query: String,
    /// The path's HLS playlist, relative to the HLS listener: `/PATH/index.m3u8?QUERY`.
    hls: String,
    /// Unix seconds after which the link is refused.
    expires: u64,
}

/// Makes a signed reader link for a path.
#[utoipa::path(post, path = "/v1/signed-links", tag = "auth",
    request_body = NewLink,
    responses(
        (status = 200, description = "The link", body = SignedLink),
        (status = 400, description = "Unreadable body, bad path, expiry or address", body = ErrorBody),
        (status = 409, description = "No [auth.signed_urls] secret is configured", body = ErrorBody)))]
async fn sign_link(
    Extension(r): Reload,
    body: Result<Json<NewLink>, JsonRejection>,
) -> Result<Json<SignedLink>, HttpError> {
    let Json(link) = body.map_err(|e| {
        HttpError::bad_request(format!(
            "the body must be {{\"path\": \"live/cam1\", \"expires_in\": 3600}}: {}",
            e.body_text()
        ))
    })?;
    crate::api_config::path_name(&link.path)?;
    if !(1..=31_536_000).contains(&link.expires_in) {
        return Err(HttpError::bad_request("expires_in must be 1 to 31536000 seconds"));
    }
    let ip: Option<IpAddr> = match link.ip.as_deref() {
        None => None,
        Some(s) => Some(
            s.parse()
                .map_err(|_| HttpError::bad_request(format!("ip: {s:?} is not an IP address")))?,
        ),
    };
    let secret = r.current().config.auth.signed_urls.secret.clone();
    if secret.is_empty() {
        return Err(HttpError::conflict(
            "no [auth.signed_urls] secret is configured: set one to make links",
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let expires = now + link.expires_in;
    let query = crate::auth::signed::sign(&secret, &link.path, expires, ip);
    Ok(Json(SignedLink {
        hls: format!("/{}/index.m3u8?{query}", link.path),
        query,
        expires,
    }))
}

/// Seconds a player link works.
const PLAYER_LINK_SECONDS: u64 = 3600;

/// Which path the player opens.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlayerFor {
    /// The path, e.g. live/cam1.
    path: String,
}

/// A player link.
#[derive(Serialize, ToSchema)]
pub struct PlayerLink {
    /// The query to append to the path's WHEP, HLS, DASH, HTTP-FLV or snapshot URL (without `?`).
    query: String,
    /// Unix seconds after which the link is refused.
    expires: u64,
}

/// A short-lived (one hour) reader link for a path, for the dashboard's player and snapshots,
/// bound to the address that asked: signed with a secret of this process's own, so it works
/// whether or not `[auth.signed_urls] secret` is set, and with no other credentials of the path.
#[utoipa::path(post, path = "/v1/player-links", tag = "auth",
    request_body = PlayerFor,
    responses(
        (status = 200, description = "The link", body = PlayerLink),
        (status = 400, description = "Unreadable body or bad path", body = ErrorBody)))]
async fn player_link(
    connect: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    body: Result<Json<PlayerFor>, JsonRejection>,
) -> Result<Json<PlayerLink>, HttpError> {
    let Json(p) = body.map_err(|e| {
        HttpError::bad_request(format!(
            "the body must be {{\"path\": \"live/cam1\"}}: {}",
            e.body_text()
        ))
    })?;
    crate::api_config::path_name(&p.path)?;
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + PLAYER_LINK_SECONDS;
    // Bound to the address that asked: the dashboard's browser.
    let ip = connect.map(|Extension(c)| crate::auth::canonical(c.0.ip()));
    Ok(Json(PlayerLink {
        query: crate::auth::signed::sign(crate::auth::signed::player_secret(), &p.path, expires, ip),
        expires,
    }))
}
