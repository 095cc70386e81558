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
use std::net::SocketAddr;
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
/// How long a login lasts.
const LOGIN_TTL: Duration = Duration::from_secs(12 * 3600);
/// Logins kept at most; the oldest goes first.
const MAX_LOGINS: usize = 1024;

/// Who a valid login cookie says the request comes from; the API's guard lets such a request
/// through.
#[derive(Clone, Debug)]
pub struct LoggedIn {
    pub user: String,
    pub csrf: String,
}

struct Login {
    user: String,
    csrf: String,
    made: Instant,
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

    fn open(&self, user: String, auth: u64) -> (String, String) {
        let (token, csrf) = (random_hex(), random_hex());
        let mut map = self.map.lock();
        map.retain(|_, l| l.made.elapsed() < LOGIN_TTL);
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
                auth,
            },
        );
        (token, csrf)
    }

    fn check(&self, token: &str, auth: u64) -> Option<LoggedIn> {
        let mut map = self.map.lock();
        let l = map.get(token)?;
        if l.made.elapsed() >= LOGIN_TTL || l.auth != auth {
            map.remove(token);
            return None;
        }
        Some(LoggedIn {
            user: l.user.clone(),
            csrf: l.csrf.clone(),
        })
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
    let from_script = req.headers().contains_key("x-requested-with");
    if let Some(token) = cookie_value(req.headers(), COOKIE) {
        if let Some(login) = d.logins.check(token, auth_digest(&d.reload)) {
            let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            let csrf_ok = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| crate::auth::secret_eq(v, &login.csrf));
            if !safe && !csrf_ok && req.uri().path() != "/v1/logout" {
                return HttpError::forbidden(
                    "a change made with a login cookie needs its X-CSRF-Token header",
                )
                .into_response();
            }
            req.extensions_mut().insert(login);
        }
    }
    let mut res = next.run(req).await;
    if from_script && res.status() == StatusCode::UNAUTHORIZED {
        res.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    res
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
        (status = 403, description = "This user or address may not use the API", body = crate::api::ErrorBody)))]
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
    match d.registry.authorize(&areq).await {
        Ok(()) => {
            let (token, csrf) = d.logins.open(c.user.clone(), auth_digest(&d.reload));
            tracing::info!(user = %c.user.escape_debug(), %remote, "dashboard login");
            let mut res = Json(LoginJson { user: c.user, csrf }).into_response();
            res.headers_mut()
                .insert(header::SET_COOKIE, d.logins.cookie(&token, LOGIN_TTL.as_secs()));
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
        let (token, csrf) = l.open("admin".into(), 1);
        assert_eq!(token.len(), 64);
        assert_ne!(token, csrf);
        assert_eq!(l.check(&token, 1).map(|x| x.user), Some("admin".into()));
        assert!(l.check(&token, 2).is_none());
        assert!(l.check(&token, 1).is_none(), "gone for good");
        let (token, _) = l.open("admin".into(), 1);
        l.close(&token);
        assert!(l.check(&token, 1).is_none());
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
