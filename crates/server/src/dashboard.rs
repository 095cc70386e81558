//! The web dashboard on the API's port: its files (built from `dashboard/` by
//! `scripts/build-dashboard.sh`, embedded in the binary), and browser logins: `POST /v1/login`
//! checks the credentials with the access policy like any API request and answers an
//! HTTP-only, same-site cookie; a request carrying a valid cookie is let through the API's
//! guard, and every change it asks for must carry the login's CSRF token.
//!
//! The files are three (fixed names, no hashes), so `include_bytes!` embeds them without a
//! crate for it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sluice_media::access::{AccessRequest, Action, Denied};
use sluice_media::Registry;
use utoipa::ToSchema;

use crate::http_error::HttpError;
use crate::reload::Reloader;

const INDEX: &[u8] = include_bytes!("../dashboard/dist/index.html");
const APP_JS: &[u8] = include_bytes!("../dashboard/dist/assets/app.js");
const APP_CSS: &[u8] = include_bytes!("../dashboard/dist/assets/app.css");

/// The login cookie's name.
pub const COOKIE: &str = "sluice_session";
/// The header every change made with a login cookie must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a login lasts (users of the configuration).
const LOGIN_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a login lasts under the `jwt` and `http` methods.
const LOGIN_TTL_EXTERNAL: Duration = Duration::from_secs(15 * 60);
/// Logins kept at most; the oldest goes first.
const MAX_LOGINS: usize = 1024;

/// Who a valid login cookie says the request comes from; the API's guard lets such a request
/// through. A stream answering it (SSE) ends when the login does ([`LoggedIn::is_valid`]).
#[derive(Clone)]
pub struct LoggedIn {
    pub user: String,
    pub csrf: String,
    token: String,
    ip: IpAddr,
    logins: Arc<Logins>,
    reload: Arc<Reloader>,
}

impl LoggedIn {
    /// Whether the login still holds (not logged out, expired, or ended by an `[auth]` change).
    pub fn is_valid(&self) -> bool {
        self.logins
            .check(&self.token, auth_digest(&self.reload), self.ip)
            .is_some()
    }
}

struct Login {
    user: String,
    csrf: String,
    made: Instant,
    /// How long it lasts: 12 hours for users of the configuration; under the `jwt` and `http`
    /// methods, whose answers can change without Sluice knowing, 15 minutes.
    ttl: Duration,
    /// The client address it was made from: the cookie works from there only, so address
    /// lists (global, per user) keep applying.
    ip: IpAddr,
    /// The `[auth]` settings it was made under: any change of them ends every login.
    auth: u64,
}

/// The open logins, by cookie value.
pub struct Logins {
    map: Mutex<HashMap<String, Login>>,
    /// Cookies get `Secure` when the API is served over HTTPS.
    secure: bool,
}

impl Logins {
    pub fn new(secure: bool) -> Logins {
        Logins {
            map: Mutex::new(HashMap::new()),
            secure,
        }
    }

    fn open(&self, user: String, ip: IpAddr, ttl: Duration, auth: u64) -> (String, String) {
        let (token, csrf) = (random_hex(), random_hex());
        let mut map = self.map.lock();
        map.retain(|_, l| l.made.elapsed() < l.ttl);
        if map.len() >= MAX_LOGINS {
            if let Some(oldest) = map.iter().min_by_key(|(_, l)| l.made).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(
            token.clone(),
            Login {
                user,
                csrf: csrf.clone(),
                made: Instant::now(),
                ttl,
                ip,
                auth,
            },
        );
        (token, csrf)
    }

    /// The login of `token` for a request from `ip`: (user, csrf), or `None`.
    fn check(&self, token: &str, auth: u64, ip: IpAddr) -> Option<(String, String)> {
        let mut map = self.map.lock();
        let l = map.get(token)?;
        if l.made.elapsed() >= l.ttl || l.auth != auth {
            map.remove(token);
            return None;
        }
        (l.ip == ip).then(|| (l.user.clone(), l.csrf.clone()))
    }

    fn close(&self, token: &str) {
        self.map.lock().remove(token);
    }

    fn cookie(&self, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        ))
        .unwrap_or(HeaderValue::from_static(""))
    }
}

/// 32 random bytes, as hex.
fn random_hex() -> String {
    let mut b = [0u8; 32];
    // The system's generator does not fail on Linux; a zeroed buffer would only be guessable
    // if it did, so refuse to go on rather than hand it out.
    aws_lc_rs::rand::fill(&mut b).expect("the system's random generator failed");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A digest of the `[auth]` settings now in force.
fn auth_digest(r: &Reloader) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{:?}", r.current().config.auth).hash(&mut h);
    h.finish()
}

/// The value of one cookie of the request.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

#[derive(Clone)]
pub struct Dash {
    logins: Arc<Logins>,
    registry: Registry,
    reload: Arc<Reloader>,
}

/// The dashboard's routes around the API's `app` (which `guard` wraps in the access check):
/// the files and the login are open, everything else goes through the guard, which lets a
/// request with a valid login cookie through.
pub fn wrap(app: Router, registry: Registry, reload: Arc<Reloader>, secure: bool) -> Router {
    let dash = Dash {
        logins: Arc::new(Logins::new(secure)),
        registry: registry.clone(),
        reload,
    };
    let guarded = crate::auth::guard(app, registry, Action::Api);
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/v1/login", post(login))
        .route("/v1/logout", post(logout))
        .fallback_service(guarded)
        .layer(axum::middleware::from_fn_with_state(dash.clone(), cookies))
        .with_state(dash)
}

/// Security headers of the dashboard's page: its scripts come from this server (and hls.js
/// from Sluice's HTTP listener, for the player's HLS fallback); no page may frame it.
const CSP: &str = "default-src 'self'; script-src 'self' http: https:; style-src 'self' 'unsafe-inline'; \
    img-src 'self' http: https: data: blob:; media-src 'self' http: https: blob:; connect-src 'self' http: https:; \
    worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn file(body: &'static [u8], content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match name.as_str() {
        "app.js" => file(APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => file(APP_CSS, "text/css; charset=utf-8"),
        _ => HttpError::not_found("no such file").into_response(),
    }
}

/// Checks a login cookie: a valid one marks the request [`LoggedIn`] (a change must then carry
/// its CSRF token); an unknown or expired one is ignored. A 401 to the dashboard (which says
/// `X-Requested-With`) loses `WWW-Authenticate`, so the browser shows the dashboard's login
/// rather than its own prompt.
async fn cookies(State(d): State<Dash>, mut req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Some(why) = cross_site(req.headers()) {
            return HttpError::forbidden(why).into_response();
        }
    }
    let headers = req.headers();
    // The dashboard's own requests, and its event streams (EventSource cannot add headers):
    // a 401 must not make the browser ask for Basic credentials.
    let from_dashboard = headers.contains_key("x-requested-with")
        || cookie_value(headers, COOKIE).is_some()
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
    let ip = peer(&req).ip();
    if let Some(token) = cookie_value(req.headers(), COOKIE).map(str::to_owned) {
        if let Some((user, csrf)) = d.logins.check(&token, auth_digest(&d.reload), ip) {
            let csrf_ok = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| crate::auth::secret_eq(v, &csrf));
            if !safe && !csrf_ok {
                return HttpError::forbidden(
                    "a change made with a login cookie needs its X-CSRF-Token header",
                )
                .into_response();
            }
            req.extensions_mut().insert(LoggedIn {
                user,
                csrf,
                token,
                ip,
                logins: d.logins.clone(),
                reload: d.reload.clone(),
            });
        }
    }
    let mut res = next.run(req).await;
    if from_dashboard && res.status() == StatusCode::UNAUTHORIZED {
        res.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    res
}

/// A change asked by a page of another site (the browser says so in `Sec-Fetch-Site`, or an
/// `Origin` that is not this host): refused whatever credentials come with it, as a browser
/// sends the ones it holds (Basic, an address the policy trusts) to any page's requests.
fn cross_site(headers: &HeaderMap) -> Option<&'static str> {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if get("sec-fetch-site") == Some("cross-site") {
        return Some("a change asked by another site's page is refused");
    }
    let origin = get("origin")?;
    let host = get("host")?;
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
    (origin_host != host).then_some("a change asked by a page of another origin is refused")
}

fn peer(req: &Request) -> SocketAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// A login's credentials.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The user name (`[[auth.users]] user`).
    user: String,
    /// Its password (or, under the jwt method, a JWT).
    pass: String,
}

/// An open login.
#[derive(Serialize, ToSchema)]
pub struct LoginJson {
    /// Who is logged in.
    user: String,
    /// The token to send as `X-CSRF-Token` with every change.
    csrf: String,
}

/// Logs a browser in: the credentials are checked like any API request's; the answer sets an
/// HTTP-only, same-site `sluice_session` cookie.
#[utoipa::path(post, path = "/v1/login", tag = "auth",
    request_body = Credentials,
    responses(
        (status = 200, description = "Logged in; the cookie is set", body = LoginJson),
        (status = 400, description = "Unreadable body", body = crate::api::ErrorBody),
        (status = 401, description = "Wrong credentials", body = crate::api::ErrorBody),
        (status = 403, description = "This user or address may not use the API", body = crate::api::ErrorBody),
        (status = 409, description = "This client needs no login (the API is open to its address)", body = crate::api::ErrorBody)))]
pub async fn login(
    State(d): State<Dash>,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Json<Credentials>, JsonRejection>,
) -> Response {
    let Json(c) = match body {
        Ok(b) => b,
        Err(e) => {
            return HttpError::bad_request(format!(
                "the body must be {{\"user\": \"...\", \"pass\": \"...\"}}: {}",
                e.body_text()
            ))
            .into_response()
        }
    };
    if c.user.is_empty() || c.user.len() > 256 || c.pass.len() > 8192 {
        return HttpError::unauthorized("wrong user or password").into_response();
    }
    let remote = connect
        .map(|c| c.0 .0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut areq = AccessRequest::new(Action::Api, "", "api", Some(remote))
        .with_credentials(Some(c.user.clone()), Some(c.pass));
    areq.forwarded_for = crate::auth::forwarded_for(&headers);
    // A client the policy lets in anyway (an address allowed without credentials) needs no
    // login, and its credentials would prove nothing.
    if d.registry.is_open_to(&areq) {
        return HttpError::conflict("this client needs no login: the API is open to its address")
            .into_response();
    }
    match d.registry.authorize(&areq).await {
        Ok(()) => {
            let cfg = d.reload.current();
            let ttl = if cfg.config.auth.method == crate::auth::config::AuthMethod::Internal {
                LOGIN_TTL
            } else {
                LOGIN_TTL_EXTERNAL
            };
            let (token, csrf) = d
                .logins
                .open(c.user.clone(), remote.ip(), ttl, auth_digest(&d.reload));
            tracing::info!(user = %c.user.escape_debug(), %remote, "dashboard login");
            let mut res = Json(LoginJson { user: c.user, csrf }).into_response();
            res.headers_mut()
                .insert(header::SET_COOKIE, d.logins.cookie(&token, ttl.as_secs()));
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(Denied::Unauthorized(_)) => HttpError::unauthorized("wrong user or password").into_response(),
        Err(Denied::Forbidden(why)) => HttpError::forbidden(why.to_string()).into_response(),
    }
}

/// Ends the browser's login and clears its cookie.
#[utoipa::path(post, path = "/v1/logout", tag = "auth",
    responses((status = 204, description = "Logged out; the cookie is cleared")))]
pub async fn logout(State(d): State<Dash>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie_value(&headers, COOKIE) {
        d.logins.close(token);
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, d.logins.cookie("", 0));
    res
}

/// Who the API takes this client for.
#[derive(Serialize, ToSchema)]
pub struct MeJson {
    /// The logged-in user (a login cookie) or the one named by the request's credentials; null
    /// when the access policy lets this client in without any.
    user: Option<String>,
    /// `cookie` (a dashboard login), `credentials` (Authorization header or query), `open`
    /// (none needed from this client).
    method: &'static str,
    /// The login's CSRF token (`cookie` only).
    csrf: Option<String>,
    /// Whether `POST /v1/logout` means something (a cookie login).
    logout: bool,
}

/// Who the API takes this client for (the dashboard asks this first: a 401 means it shows its
/// login).
#[utoipa::path(get, path = "/v1/me", tag = "auth",
    responses(
        (status = 200, description = "This client may use the API", body = MeJson),
        (status = 401, description = "Credentials or a login are needed", body = crate::api::ErrorBody)))]
pub async fn me(login: Option<axum::Extension<LoggedIn>>, headers: HeaderMap) -> Json<MeJson> {
    if let Some(axum::Extension(l)) = login {
        return Json(MeJson {
            user: Some(l.user),
            method: "cookie",
            csrf: Some(l.csrf),
            logout: true,
        });
    }
    let (user, pass, token) = crate::auth::authorization(&headers);
    let given = user.is_some() || pass.is_some() || token.is_some();
    Json(MeJson {
        user,
        method: if given { "credentials" } else { "open" },
        csrf: None,
        logout: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sluice_session=abc; b=2"),
        );
        assert_eq!(cookie_value(&h, COOKIE), Some("abc"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(cookie_value(&h, "c"), None);
    }

    #[test]
    fn logins_end_when_the_auth_settings_change() {
        let l = Logins::new(false);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (token, csrf) = l.open("admin".into(), ip, LOGIN_TTL, 1);
        assert_eq!(token.len(), 64);
        assert_ne!(token, csrf);
        assert_eq!(l.check(&token, 1, ip).map(|x| x.0), Some("admin".into()));
        assert!(
            l.check(&token, 1, "127.0.0.2".parse().unwrap()).is_none(),
            "another address"
        );
        assert!(l.check(&token, 1, ip).is_some(), "still there for its own");
        assert!(l.check(&token, 2, ip).is_none());
        assert!(l.check(&token, 1, ip).is_none(), "gone for good");
        let (token, _) = l.open("admin".into(), ip, LOGIN_TTL, 1);
        l.close(&token);
        assert!(l.check(&token, 1, ip).is_none());
        let (token, _) = l.open("admin".into(), ip, Duration::ZERO, 1);
        assert!(l.check(&token, 1, ip).is_none(), "expired");
    }

    #[test]
    fn changes_from_other_sites_are_refused() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(cross_site(&h(&[("host", "127.0.0.1:9997")])).is_none(), "curl");
        assert!(cross_site(&h(&[
            ("host", "127.0.0.1:9997"),
            ("origin", "http://127.0.0.1:9997")
        ]))
        .is_none());
        assert!(cross_site(&h(&[
            ("host", "127.0.0.1:9997"),
            ("origin", "http://evil.example")
        ]))
        .is_some());
        assert!(cross_site(&h(&[("host", "a:1"), ("sec-fetch-site", "cross-site")])).is_some());
        assert!(cross_site(&h(&[("host", "a:1"), ("sec-fetch-site", "same-origin")])).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site() {
        let v = Logins::new(true).cookie("x", 60);
        let v = v.to_str().unwrap();
        assert!(v.contains("HttpOnly") && v.contains("SameSite=Strict") && v.contains("Secure"));
        assert!(!Logins::new(false)
            .cookie("x", 60)
            .to_str()
            .unwrap()
            .contains("Secure"));
    }
}
