//! Access control: the one policy that answers every protocol's [`AccessRequest`] (RTMP,
//! SRT, WebRTC, HLS, HTTP-FLV, the API, the metrics, recording playback), from the `[auth]`
//! section and each path's `access` table as in force at the moment of the request.
//!
//! The order of a decision (docs/security.md says it for users):
//! 1. the client's address (the TCP peer, or from `X-Forwarded-For` when the peer is a trusted
//!    proxy) against `[auth] deny_ips`/`allow_ips`, then the path's own lists;
//! 2. publish and read need a path that exists (a `[paths]` table matching it, when any exist);
//! 3. a signed link (`?expires=&sig=`) opens reading (and playback) of its one path;
//! 4. the path's own credentials (`publish_user`/`publish_pass`, `publish_token`, `read_*`),
//!    when set, are enough; when set and not given, `any` is not enough on that path;
//! 5. `[[auth.users]]`: a user whose name and password match, or `any`, from an allowed
//!    address, with a permission for the action and the path;
//! 6. the method: `internal` stops there; `jwt` verifies the token; `http` asks the callback.
//!
//! Slow steps (an argon2 hash not yet verified, an unknown JWKS `kid`, the callback) never run
//! in [`Policy::check_now`], which SRT calls in libsrt's listen hook: it answers `None` and the
//! decision finishes in the session's own thread. An address with many refusals in a minute has
//! its next refusals answered only after `fail_delay` (the asynchronous path): guessing slows
//! down, while other clients, allowed ones from the same address included, are not slowed.
//! Argon2 verifications run at most [`HASHING_AT_ONCE`] at a time, so guessing cannot take
//! every core.

pub mod callback;
pub mod config;
pub mod header;
pub mod jwt;
pub mod signed;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use sluice_media::access::{AccessRequest, Action, Decision, Denied, Policy};

use self::config::{contains, AuthMethod, AuthUser};
use crate::config::{Config, PathAccess};
use crate::reload::LiveConfig;

/// Most password verifications remembered (keyed by a digest of the hash and the password).
const MAX_VERIFIED: usize = 10_000;
/// Most addresses whose refusals are counted at once.
const MAX_TRACKED: usize = 65_536;
/// Argon2 verifications running at once (each takes about 20 ms of one core).
const HASHING_AT_ONCE: usize = 2;
/// The window over which refusals from one address are counted.
const FAIL_WINDOW: Duration = Duration::from_secs(60);

/// The access policy of the server.
pub struct Auth {
    config: LiveConfig,
    jwt: jwt::Jwt,
    callback: callback::Callback,
    verified: Mutex<HashMap<[u8; 32], bool>>,
    hashing: tokio::sync::Semaphore,
    fails: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// What the fast pass leaves to a slow step.
enum Pending {
    Jwt(String),
    Callback,
    /// Argon2 hashes of users named in the request, not verified yet.
    Hashes,
}

/// How the users list answered.
enum Users {
    Granted,
    /// A named user's credentials matched but no permission covers the request.
    NotPermitted(String),
    NotGranted,
    /// A user of that name has an argon2 hash not verified for this password yet.
    Unverified,
}

impl Auth {
    pub fn new(config: LiveConfig) -> Self {
        Auth {
            config,
            jwt: jwt::Jwt::new(),
            callback: callback::Callback::new(),
            verified: Mutex::new(HashMap::new()),
            hashing: tokio::sync::Semaphore::new(HASHING_AT_ONCE),
            fails: Mutex::new(HashMap::new()),
        }
    }

    /// The client's address: the peer's, or the nearest untrusted hop of `X-Forwarded-For`
    /// when the peer is a trusted proxy.
    fn client_ip(cfg: &Config, req: &AccessRequest) -> Option<IpAddr> {
        let peer = canonical(req.remote?.ip());
        let trusted = &cfg.auth.trusted_proxies;
        if !contains(trusted, peer) {
            return Some(peer);
        }
        let Some(xff) = req.forwarded_for.as_deref() else {
            return Some(peer);
        };
        let mut client = peer;
        for hop in xff.rsplit(',').take(32) {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !contains(trusted, client) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        Some(client)
    }

    /// Everything that needs no waiting: `Ok(None)` allows, `Ok(Some)` names the slow step left.
    fn fast(&self, cfg: &Config, req: &AccessRequest, ip: Option<IpAddr>) -> Result<Option<Pending>, Denied> {
        let a = &cfg.auth;
        // An address that is not known is refused where a list of allowed ones exists.
        let refused_ip = |deny: &[ipnet::IpNet], allow: &[ipnet::IpNet]| match ip {
            Some(ip) => contains(deny, ip) || (!allow.is_empty() && !contains(allow, ip)),
            None => !allow.is_empty(),
        };
        if refused_ip(&a.deny_ips, &a.allow_ips) {
            return Err(Denied::forbidden("ip_denied", "this address is not allowed"));
        }
        // A path that does not exist is said so only to a client that may act on it (after
        // the decision, in `exists`), so the configuration cannot be probed from outside.
        // A path no table matches is judged by [path_defaults.access], like any path, so it
        // answers as an existing one would. Playback is the recordings of a path: its lists and
        // read credentials apply too.
        let path = match req.action {
            Action::Publish | Action::Read | Action::Playback => {
                Some(cfg.path(&req.path).unwrap_or(&cfg.path_defaults))
            }
            _ => None,
        };
        if let Some(p) = path {
            if refused_ip(&p.access.deny_ips, &p.access.allow_ips) {
                return Err(Denied::forbidden(
                    "ip_denied",
                    "this address is not allowed on this path",
                ));
            }
        }
        if matches!(req.action, Action::Read | Action::Playback) && signed::has_signature(&req.query) {
            // A link the API made for the dashboard's player is signed with this process's own
            // secret; any other with the configured one.
            if signed::verify(signed::player_secret(), &req.path, &req.query, ip, unix_now()).is_ok() {
                return Ok(None);
            }
            if !a.signed_urls.secret.is_empty() {
                return signed::verify(&a.signed_urls.secret, &req.path, &req.query, ip, unix_now())
                    .map(|_| None);
            }
        }
        let own = path.and_then(|p| path_credentials(&p.access, req));
        if let Some(Ok(())) = own {
            return Ok(None);
        }
        let own_failed = own.and_then(Result::err);
        match self.users(a.users(), req, ip, own_failed.is_none()) {
            Users::Granted => return Ok(None),
            Users::Unverified => return Ok(Some(Pending::Hashes)),
            Users::NotPermitted(user) if a.method == AuthMethod::Internal => {
                return Err(own_failed.unwrap_or_else(|| {
                    Denied::forbidden(
                        "not_permitted",
                        format!("user {user} may not {} here", req.action.name()),
                    )
                }))
            }
            Users::NotPermitted(_) | Users::NotGranted => {}
        }
        let given = req.user.is_some() || req.password.is_some() || req.token.is_some();
        let explain = || {
            own_failed.clone().unwrap_or_else(|| {
                if given {
                    Denied::unauthorized("wrong_credentials", "wrong credentials")
                } else {
                    Denied::unauthorized("no_credentials", "credentials needed")
                }
            })
        };
        match a.method {
            AuthMethod::Internal => Err(explain()),
            AuthMethod::Jwt => {
                let token = req
                    .token
                    .clone()
                    .or_else(|| req.password.clone().filter(|p| jwt::looks_like_jwt(p)));
                match token {
                    Some(t) => Ok(Some(Pending::Jwt(t))),
                    None => Err(explain()),
                }
            }
            AuthMethod::Http => Ok(Some(Pending::Callback)),
        }
    }

    /// The users list: `anyone` says whether `any` counts (not where the path's own
    /// credentials are set and were not given).
    fn users(&self, users: &[AuthUser], req: &AccessRequest, ip: Option<IpAddr>, anyone: bool) -> Users {
        let mut out = Users::NotGranted;
        for u in users {
            let from_ok = u.ips.is_empty() || ip.is_some_and(|ip| contains(&u.ips, ip));
            let permitted = || u.permissions.iter().any(|p| p.allows(req.action, &req.path));
            if u.user == "any" {
                if anyone && from_ok && permitted() {
                    return Users::Granted;
                }
                continue;
            }
            let (Some(user), Some(pass)) = (req.user.as_deref(), req.password.as_deref()) else {
                continue;
            };
            if !secret_eq(user, &u.user) {
                continue;
            }
            let matched = match self.password_matches(&u.pass, pass) {
                Some(m) => m,
                None => return Users::Unverified,
            };
            if matched && from_ok {
                if permitted() {
                    return Users::Granted;
                }
                out = Users::NotPermitted(u.user.clone());
            }
        }
        out
    }

    /// Whether `given` is the password `stored` (a hash or the password itself); `None` when
    /// an argon2 hash would have to be computed.
    fn password_matches(&self, stored: &str, given: &str) -> Option<bool> {
        if !stored.starts_with("$argon2") {
            return Some(secret_eq(given, stored));
        }
        self.verified.lock().get(&digest(stored, given)).copied()
    }

    /// Verifies (off the async threads) the argon2 hashes of the users named in `req`.
    async fn verify_hashes(&self, users: &[AuthUser], req: &AccessRequest) {
        let (Some(user), Some(pass)) = (req.user.clone(), req.password.clone()) else {
            return;
        };
        for u in users
            .iter()
            .filter(|u| u.user == user && u.pass.starts_with("$argon2"))
        {
            let key = digest(&u.pass, &pass);
            if self.verified.lock().contains_key(&key) {
                continue;
            }
            let (hash, pass) = (u.pass.clone(), pass.clone());
            let Ok(_slot) = self.hashing.acquire().await else {
                return;
            };
            let ok = tokio::task::spawn_blocking(move || verify_argon2(&hash, &pass))
                .await
                .unwrap_or(false);
            let mut v = self.verified.lock();
            if v.len() >= MAX_VERIFIED {
                // Wrong guesses go first: they must not push out the users' own passwords.
                v.retain(|_, ok| *ok);
                if v.len() >= MAX_VERIFIED {
                    v.clear();
                }
            }
            v.insert(key, ok);
        }
    }

    fn slowed(&self, cfg: &Config, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip.map(fail_key) else { return false };
        let limit = cfg.auth.fail_limit;
        limit > 0
            && self
                .fails
                .lock()
                .get(&ip)
                .is_some_and(|(start, n)| start.elapsed() < FAIL_WINDOW && *n >= limit)
    }

    fn count_refusal(&self, ip: Option<IpAddr>) {
        let Some(ip) = ip.map(fail_key) else { return };
        let mut fails = self.fails.lock();
        if fails.len() >= MAX_TRACKED && !fails.contains_key(&ip) {
            fails.retain(|_, (start, _)| start.elapsed() < FAIL_WINDOW);
            if fails.len() >= MAX_TRACKED {
                return;
            }
        }
        let e = fails.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= FAIL_WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    async fn decide(&self, req: &AccessRequest) -> Result<(), Denied> {
        let req = &source_request(req);
        let cfg = self.config.get();
        let ip = Self::client_ip(&cfg, req);
        let mut r = self.fast(&cfg, req, ip);
        if let Ok(Some(Pending::Hashes)) = r {
            // An address that keeps failing gets no more hashing: its guesses wait and fail.
            if self.slowed(&cfg, ip) {
                tokio::time::sleep(cfg.auth.fail_delay).await;
                self.count_refusal(ip);
                return Err(Denied::unauthorized("wrong_credentials", "wrong credentials"));
            }
            // The wait for a hashing slot is bounded: guessing cannot hold logins back long.
            if tokio::time::timeout(Duration::from_secs(3), self.verify_hashes(cfg.auth.users(), req))
                .await
                .is_err()
            {
                return Err(Denied::unauthorized(
                    "wrong_credentials",
                    "the password check is busy: try again",
                ));
            }
            r = self.fast(&cfg, req, ip);
        }
        let r = match r {
            Ok(None) => Ok(()),
            Ok(Some(Pending::Jwt(token))) => {
                self.jwt.check(&cfg.auth.jwt, &token, req.action, &req.path).await
            }
            Ok(Some(Pending::Callback)) => self.callback.check(&cfg.auth.http, req, ip).await,
            Ok(Some(Pending::Hashes)) => Err(Denied::unauthorized("wrong_credentials", "wrong credentials")),
            Err(e) => Err(e),
        }
        .and_then(|()| exists(&cfg, req));
        if r.is_err() {
            // Only refusals wait: viewers allowed from the same address (behind one NAT or
            // proxy) are not slowed by someone else's failures.
            if self.slowed(&cfg, ip) {
                tokio::time::sleep(cfg.auth.fail_delay).await;
            }
            self.count_refusal(ip);
        }
        r
    }

    fn decide_now(&self, req: &AccessRequest) -> Option<Result<(), Denied>> {
        let req = &source_request(req);
        let cfg = self.config.get();
        let ip = Self::client_ip(&cfg, req);
        let r = match self.fast(&cfg, req, ip) {
            Ok(None) => Ok(()),
            Ok(Some(Pending::Jwt(token))) => {
                match self.jwt.check_now(&cfg.auth.jwt, &token, req.action, &req.path) {
                    jwt::Now::Done(r) => r,
                    jwt::Now::NeedKeys => return None,
                }
            }
            Ok(Some(Pending::Callback)) => self.callback.check_now(req, ip)?,
            Ok(Some(Pending::Hashes)) => return None,
            Err(e) => Err(e),
        }
        .and_then(|()| exists(&cfg, req));
        if r.is_err() {
            if self.slowed(&cfg, ip) {
                // The refusal must wait: the asynchronous path decides again and waits.
                return None;
            }
            self.count_refusal(ip);
        }
        Some(r)
    }
}

impl Policy for Auth {
    fn check<'a>(&'a self, req: &'a AccessRequest) -> Decision<'a> {
        Box::pin(self.decide(req))
    }

    fn check_now(&self, req: &AccessRequest) -> Option<Result<(), Denied>> {
        self.decide_now(req)
    }

    fn open_to(&self, req: &AccessRequest) -> bool {
        let mut bare = source_request(req).into_owned();
        (bare.user, bare.password, bare.token) = (None, None, None);
        bare.query.clear();
        let cfg = self.config.get();
        let ip = Self::client_ip(&cfg, &bare);
        matches!(self.fast(&cfg, &bare, ip), Ok(None)) && exists(&cfg, &bare).is_ok()
    }
}

/// A rendition (`PATH/~NAME`) is decided as its source path: the same credentials, address
/// lists, signed links and permissions open both, and a rendition exists when its source does.
fn source_request(req: &AccessRequest) -> std::borrow::Cow<'_, AccessRequest> {
    match req.path.find("/~") {
        Some(i) => {
            let mut r = req.clone();
            r.path.truncate(i);
            std::borrow::Cow::Owned(r)
        }
        None => std::borrow::Cow::Borrowed(req),
    }
}

/// Publish and read need a path that exists (a `[paths]` table matching it, when any exist).
fn exists(cfg: &Config, req: &AccessRequest) -> Result<(), Denied> {
    match req.action {
        Action::Publish | Action::Read if cfg.path(&req.path).is_none() => Err(Denied::forbidden(
            "path_not_configured",
            format!("path {} is not configured", req.path),
        )),
        _ => Ok(()),
    }
}

/// The path's own credentials for the request's action: `None` when none are set, else
/// whether the request carries them (with why not).
fn path_credentials(a: &PathAccess, req: &AccessRequest) -> Option<Result<(), Denied>> {
    let (user, pass, token) = match req.action {
        Action::Publish => (&a.publish_user, &a.publish_pass, &a.publish_token),
        _ => (&a.read_user, &a.read_pass, &a.read_token),
    };
    if user.is_empty() && token.is_empty() {
        return None;
    }
    if !token.is_empty() {
        let given = [req.token.as_deref(), req.password.as_deref()];
        if given.iter().flatten().any(|g| secret_eq(g, token)) {
            return Some(Ok(()));
        }
    }
    if !user.is_empty() {
        let user_ok = req.user.as_deref().is_some_and(|u| secret_eq(u, user));
        let pass_ok = req.password.as_deref().is_some_and(|p| secret_eq(p, pass));
        if user_ok & pass_ok {
            return Some(Ok(()));
        }
    }
    let given = req.user.is_some() || req.password.is_some() || req.token.is_some();
    let what = match (user.is_empty(), token.is_empty()) {
        (true, _) => "token",
        (false, true) => "user and password",
        (false, false) => "user and password or token",
    };
    Some(Err(if !given {
        Denied::unauthorized("no_credentials", format!("no {what} given"))
    } else if user.is_empty() {
        Denied::unauthorized("wrong_credentials", "wrong token")
    } else if token.is_empty() {
        Denied::unauthorized("wrong_credentials", "wrong user or password")
    } else {
        Denied::unauthorized("wrong_credentials", "wrong user, password or token")
    }))
}

/// A URL for the log: no user information, no query (either may hold a credential).
pub fn masked_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            if u.query().is_some() {
                u.set_query(Some("********"));
            }
            u.to_string()
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

/// Refusals are counted per IPv4 address and per IPv6 /64 (one host's usual allocation, so
/// rotating addresses within it does not escape the count).
fn fail_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn digest(hash: &str, pass: &str) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(hash.as_bytes());
    ctx.update(&[0]);
    ctx.update(pass.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn verify_argon2(hash: &str, pass: &str) -> bool {
    use argon2::PasswordVerifier;
    argon2::PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(pass.as_bytes(), &h)
            .is_ok()
    })
}

/// An argon2id hash of `password` with a random salt, in the PHC format `[[auth.users]] pass`
/// takes (`sluice hash-password`).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::PasswordHasher;
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| anyhow::anyhow!("no randomness for the salt"))?;
    let salt = argon2::password_hash::SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(hash.to_string())
}

/// Compares a given secret with the configured one in time that depends only on the configured
/// one's length (not on where they differ, nor on the given one's length).
pub fn secret_eq(given: &str, want: &str) -> bool {
    let (g, w) = (given.as_bytes(), want.as_bytes());
    let mut diff = (g.len() != w.len()) as u8;
    for (i, &b) in w.iter().enumerate() {
        diff |= b ^ g.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// The credentials of an `Authorization` header (see [`header::parse_authorization`]).
pub fn authorization(headers: &axum::http::HeaderMap) -> (Option<String>, Option<String>, Option<String>) {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(header::parse_authorization)
        .unwrap_or((None, None, None))
}

/// An access request from an HTTP request: `Authorization` (Basic or Bearer) first, then the
/// query's `user`/`pass`/`token` (for players that cannot set headers).
pub fn http_request(
    action: Action,
    path: &str,
    protocol: &'static str,
    remote: std::net::SocketAddr,
    headers: &axum::http::HeaderMap,
    query: Option<&str>,
) -> AccessRequest {
    let (user, pass, token) = authorization(headers);
    let header = |h: axum::http::HeaderName| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(512).collect::<String>())
    };
    let mut req = AccessRequest::new(action, path, protocol, Some(remote))
        .with_credentials(user, pass)
        .with_token(token)
        .with_query(query.unwrap_or(""));
    req.user_agent = header(axum::http::header::USER_AGENT);
    req.forwarded_for = forwarded_for(headers);
    req
}

/// Every `X-Forwarded-For` value, in order, joined: proxies append the address they saw at the
/// end (some as another header line). Only the last hops are kept when it is long, so a client
/// cannot push the proxy's own entry out with padding.
pub(crate) fn forwarded_for(headers: &axum::http::HeaderMap) -> Option<String> {
    let all: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if all.is_empty() {
        return None;
    }
    let joined = all.join(",");
    let hops: Vec<&str> = joined.split(',').collect();
    let keep = hops.len().saturating_sub(32);
    Some(hops[keep..].join(","))
}

/// Asks the policy before every request of a listener that serves one action (the API,
/// metrics, recording playback): `401` with `WWW-Authenticate: Basic` for missing or wrong
/// credentials, `403` otherwise. Playback's path is its `path` query parameter; the files a VOD
/// playlist names (`/vod/...`) carry no per-viewer secret and are not asked for, as HLS
/// segments.
pub fn guard(router: axum::Router, registry: sluice_media::Registry, action: Action) -> axum::Router {
    use axum::response::IntoResponse;
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let registry = registry.clone();
            async move {
                // A dashboard login (a valid cookie, checked by `dashboard::wrap`) stands for
                // the credentials it was made with.
                if action == Action::Api && req.extensions().get::<crate::dashboard::LoggedIn>().is_some() {
                    return next.run(without_credentials(req)).await;
                }
                let remote = req
                    .extensions()
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .map(|c| c.0)
                    .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
                let (protocol, path) = match action {
                    Action::Playback if req.uri().path().starts_with("/vod/") => return next.run(req).await,
                    Action::Playback => (
                        "playback",
                        query_value(req.uri().query(), "path").unwrap_or_default(),
                    ),
                    Action::Metrics => ("metrics", String::new()),
                    _ => ("api", String::new()),
                };
                let areq = http_request(action, &path, protocol, remote, req.headers(), req.uri().query());
                match registry.authorize(&areq).await {
                    Ok(()) => next.run(without_credentials(req)).await,
                    Err(Denied::Unauthorized(why)) => (
                        [(axum::http::header::WWW_AUTHENTICATE, "Basic realm=\"sluice\"")],
                        crate::http_error::HttpError::unauthorized(format!(
                            "{} needs credentials ({why}): send Authorization: Basic (or Bearer), or ?token=",
                            action.name()
                        )),
                    )
                        .into_response(),
                    Err(Denied::Forbidden(why)) => {
                        crate::http_error::HttpError::forbidden(why.to_string()).into_response()
                    }
                }
            }
        },
    ))
}

/// The query keys that carry credentials.
const CREDENTIAL_KEYS: &[&str] = &[
    "token", "jwt", "user", "username", "pass", "password", "expires", "ip", "sig",
];

/// The request with the credential pairs taken out of its query, once they have been checked,
/// so handlers see only their own parameters (and refuse unknown ones).
fn without_credentials(mut req: axum::extract::Request) -> axum::extract::Request {
    let Some(q) = req.uri().query() else { return req };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|p| !CREDENTIAL_KEYS.contains(&p.split('=').next().unwrap_or("")))
        .collect();
    if kept.len() == q.split('&').count() {
        return req;
    }
    let pq = if kept.is_empty() {
        req.uri().path().to_owned()
    } else {
        format!("{}?{}", req.uri().path(), kept.join("&"))
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = pq.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// One decoded value of a query.
fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == key).then(|| {
            let r = AccessRequest::new(Action::Read, "", "", None).with_query(&format!("user={v}"));
            r.user.unwrap_or_default()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Auth {
        Auth::new(LiveConfig::new(Config::parse(text, Vec::new()).unwrap()))
    }

    fn req(action: Action, path: &str, q: &str) -> AccessRequest {
        AccessRequest::new(action, path, "rtmp", Some("192.0.2.7:5000".parse().unwrap())).with_query(q)
    }

    fn from(action: Action, path: &str, q: &str, ip: &str) -> AccessRequest {
        AccessRequest::new(
            action,
            path,
            "hls",
            Some(std::net::SocketAddr::new(ip.parse().unwrap(), 5000)),
        )
        .with_query(q)
    }

    fn code(p: &Auth, r: &AccessRequest) -> &'static str {
        match p.check_now(r) {
            Some(Ok(())) => "ok",
            Some(Err(e)) => e.reason().code,
            None => "pending",
        }
    }

    const PATHS: &str = r#"
[path_defaults.access]
read_token = "viewers"

[paths."live/*".access]
publish_user = "obs"
publish_pass = "s3cret"

[paths."tok/*".access]
publish_token = "t0k"
read_token = ""

[paths."open/*"]
"#;

    #[test]
    fn per_path_credentials_as_before() {
        let p = policy(PATHS);
        let ok = |a, path, q| p.check_now(&req(a, path, q)) == Some(Ok(()));
        let denied = |a, path, q| p.check_now(&req(a, path, q)).unwrap().unwrap_err();
        assert!(ok(Action::Publish, "live/cam1", "user=obs&pass=s3cret"));
        assert_eq!(
            denied(Action::Publish, "live/cam1", "user=obs&pass=nope"),
            Denied::unauthorized("wrong_credentials", "wrong user or password")
        );
        assert_eq!(
            denied(Action::Publish, "live/cam1", "").reason().message,
            "no user and password given"
        );
        // The read token comes from [path_defaults.access] (the path's table keeps it).
        assert!(ok(Action::Read, "live/cam1", "token=viewers"));
        assert_eq!(
            denied(Action::Read, "live/cam1", "token=x"),
            Denied::unauthorized("wrong_credentials", "wrong token")
        );
        // A token may come as the password (SRT streamid, Basic); the read one does not publish.
        assert!(ok(Action::Publish, "tok/a", "token=t0k"));
        assert!(ok(Action::Publish, "tok/a", "user=any&pass=t0k"));
        assert!(!ok(Action::Publish, "tok/a", "token=viewers"));
        assert!(
            ok(Action::Read, "tok/a", ""),
            "read_token = \"\" opens reading there"
        );
        assert!(ok(Action::Publish, "open/x", ""));
        assert_eq!(
            denied(Action::Publish, "other/x", "").reason().code,
            "path_not_configured"
        );
        // API and metrics: from this machine only, by default.
        assert!(!ok(Action::Api, "", ""));
        assert_eq!(code(&p, &from(Action::Api, "", "", "127.0.0.1")), "ok");
        assert_eq!(code(&p, &from(Action::Metrics, "", "", "::1")), "ok");
        // Playback of a path's recordings asks what reading it asks (here the default token).
        assert_eq!(
            code(&p, &from(Action::Playback, "x", "", "192.0.2.1")),
            "no_credentials"
        );
        assert_eq!(
            code(&p, &from(Action::Playback, "x", "token=viewers", "192.0.2.1")),
            "ok"
        );
        // A rendition is its source: the same credentials open it.
        assert_eq!(
            code(&p, &req(Action::Read, "live/cam1/~480p", "token=viewers")),
            "ok"
        );
        assert_eq!(
            code(&p, &req(Action::Read, "live/cam1/~480p", "")),
            "no_credentials"
        );
        // A path no table matches answers like one that exists (its defaults ask a token).
        assert_eq!(code(&p, &req(Action::Read, "nothing/here", "")), "no_credentials");
        // No [paths] at all: every path exists.
        assert!(policy("").check_now(&req(Action::Publish, "a/b", "")) == Some(Ok(())));
    }

    #[test]
    fn internal_users_with_hashes_ips_and_patterns() {
        let hash = hash_password("pw").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let p = policy(&format!(
            r#"
[[auth.users]]
user = "any"
permissions = [{{ action = "read", path = "public/*" }}]

[[auth.users]]
user = "alice"
pass = "{hash}"
permissions = [{{ action = "publish", path = "live/*" }}, {{ action = "read" }}]

[[auth.users]]
user = "bob"
pass = "plain"
ips = ["10.0.0.0/8"]
permissions = [{{ action = "publish" }}, {{ action = "api" }}]
"#
        ));
        assert_eq!(code(&p, &req(Action::Read, "public/a", "")), "ok");
        assert_eq!(code(&p, &req(Action::Read, "live/a", "")), "no_credentials");
        assert_eq!(code(&p, &req(Action::Api, "", "")), "no_credentials");
        // An argon2 hash is verified off the fast path first, then remembered.
        let alice = req(Action::Publish, "live/a", "user=alice&pass=pw");
        assert_eq!(code(&p, &alice), "pending");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(p.check(&alice)), Ok(()));
        assert_eq!(code(&p, &alice), "ok");
        let wrong = req(Action::Publish, "live/a", "user=alice&pass=nope");
        assert_eq!(
            rt.block_on(p.check(&wrong)).unwrap_err().reason().code,
            "wrong_credentials"
        );
        assert_eq!(
            code(&p, &req(Action::Publish, "other/a", "user=alice&pass=pw")),
            "not_permitted"
        );
        // bob: only from 10/8.
        assert_eq!(
            code(&p, &req(Action::Publish, "x", "user=bob&pass=plain")),
            "wrong_credentials"
        );
        assert_eq!(
            code(&p, &from(Action::Publish, "x", "user=bob&pass=plain", "10.1.2.3")),
            "ok"
        );
        assert_eq!(
            code(&p, &from(Action::Api, "", "user=bob&pass=plain", "10.1.2.3")),
            "ok"
        );
        // Written users replace the built-in ones: no anonymous API from loopback any more.
        assert_eq!(
            code(&p, &from(Action::Api, "", "", "127.0.0.1")),
            "no_credentials"
        );
    }

    #[test]
    fn address_lists_and_trusted_proxies() {
        let p = policy(
            r#"
[auth]
deny_ips = ["192.0.2.0/24"]
allow_ips = ["192.0.0.0/8", "10.0.0.0/8", "127.0.0.1"]
trusted_proxies = ["10.9.9.9"]
[paths."p".access]
deny_ips = ["10.1.1.1"]
[paths."q"]
"#,
        );
        assert_eq!(code(&p, &from(Action::Read, "q", "", "192.0.2.1")), "ip_denied");
        assert_eq!(code(&p, &from(Action::Read, "q", "", "192.0.3.1")), "ok");
        assert_eq!(code(&p, &from(Action::Read, "q", "", "8.8.8.8")), "ip_denied");
        assert_eq!(code(&p, &from(Action::Read, "q", "", "::ffff:10.1.1.1")), "ok");
        assert_eq!(code(&p, &from(Action::Read, "p", "", "10.1.1.1")), "ip_denied");
        // X-Forwarded-For counts only from the trusted proxy.
        let mut r = from(Action::Read, "q", "", "10.9.9.9");
        r.forwarded_for = Some("8.8.8.8, 10.9.9.9".into());
        assert_eq!(code(&p, &r), "ip_denied");
        r.forwarded_for = Some("garbage, 192.0.3.3".into());
        assert_eq!(code(&p, &r), "ok");
        let mut r = from(Action::Read, "q", "", "10.1.1.2");
        r.forwarded_for = Some("192.0.2.1".into());
        assert_eq!(code(&p, &r), "ok", "not a trusted proxy: its header is ignored");
    }

    #[test]
    fn signed_links_and_refusal_slowdown() {
        let p = policy(
            r#"
[auth]
fail_limit = 3
[auth.signed_urls]
secret = "link-key"
[[auth.users]]
user = "any"
permissions = [{ action = "publish" }]
"#,
        );
        let q = signed::sign("link-key", "live/a", unix_now() + 60, None);
        assert_eq!(code(&p, &req(Action::Read, "live/a", &q)), "ok");
        assert_eq!(code(&p, &req(Action::Read, "live/b", &q)), "bad_signature");
        let old = signed::sign("link-key", "live/a", unix_now() - 1, None);
        assert_eq!(code(&p, &req(Action::Read, "live/a", &old)), "link_expired");
        // Three refusals from 192.0.2.7 in a minute: its next refusals wait (never at once);
        // what it is allowed is still answered at once, and other addresses are not slowed.
        assert_eq!(code(&p, &req(Action::Read, "live/a", "")), "no_credentials");
        assert_eq!(code(&p, &req(Action::Read, "live/a", "")), "pending");
        assert_eq!(code(&p, &req(Action::Read, "live/a", &q)), "ok");
        assert_eq!(
            code(&p, &from(Action::Read, "live/a", "", "192.0.2.8")),
            "no_credentials"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let t = Instant::now();
        assert!(rt.block_on(p.check(&req(Action::Read, "live/a", ""))).is_err());
        assert!(t.elapsed() >= Duration::from_millis(900), "{:?}", t.elapsed());
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(secret_eq("abc", "abc"));
        assert!(!secret_eq("abd", "abc"));
        assert!(!secret_eq("ab", "abc"));
        assert!(!secret_eq("abcd", "abc"));
        assert!(!secret_eq("", "abc"));
        assert!(secret_eq("", ""));
    }

    #[test]
    fn authorization_headers() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("authorization", "Basic b2JzOnMzY3JldA==".parse().unwrap());
        assert_eq!(
            authorization(&h),
            (Some("obs".into()), Some("s3cret".into()), None)
        );
        h.insert("authorization", "bearer abc ".parse().unwrap());
        assert_eq!(authorization(&h), (None, None, Some("abc".into())));
        h.insert("authorization", "Basic !!!".parse().unwrap());
        assert_eq!(authorization(&h), (None, None, None));
        h.insert("authorization", "Digest x".parse().unwrap());
        assert_eq!(authorization(&h), (None, None, None));
        // Headers win over the query.
        h.insert("authorization", "Bearer fromheader".parse().unwrap());
        h.insert("user-agent", "hls.js".parse().unwrap());
        let r = http_request(
            Action::Read,
            "a",
            "hls",
            "127.0.0.1:1".parse().unwrap(),
            &h,
            Some("token=fromquery&user=u"),
        );
        assert_eq!(
            (r.token.as_deref(), r.user.as_deref()),
            (Some("fromheader"), Some("u"))
        );
        assert_eq!(r.user_agent.as_deref(), Some("hls.js"));
    }
}
