//! The http method: each access request POSTed as JSON to `[auth.http] url`; a 2xx answer
//! allows, anything else refuses. Answers are remembered a short while (allowed and refused
//! each for their own time), requests in flight are bounded, and no answer within the timeout
//! refuses (fails closed).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use sluice_media::access::{AccessRequest, Denied};
use tokio::sync::Semaphore;

use super::config::AuthHttp;

/// Most answers remembered.
const MAX_CACHED: usize = 10_000;

/// What the callback receiver gets.
#[derive(Debug, serde::Serialize)]
pub struct Body<'a> {
    pub action: &'static str,
    pub path: &'a str,
    pub protocol: &'static str,
    pub ip: Option<String>,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    pub token: Option<&'a str>,
    pub query: &'a str,
    pub user_agent: Option<&'a str>,
}

impl<'a> Body<'a> {
    pub fn new(req: &'a AccessRequest, ip: Option<IpAddr>) -> Self {
        Body {
            action: req.action.name(),
            path: &req.path,
            protocol: req.protocol,
            ip: ip.map(|i| i.to_string()),
            user: req.user.as_deref(),
            password: req.password.as_deref(),
            token: req.token.as_deref(),
            query: &req.query,
            user_agent: req.user_agent.as_deref(),
        }
    }
}

/// An answer and until when it holds.
type Remembered = (Instant, Result<(), Denied>);

pub struct Callback {
    client: reqwest::Client,
    cache: Mutex<HashMap<[u8; 32], Remembered>>,
    slots: Mutex<(usize, Arc<Semaphore>)>,
}

impl Callback {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Callback {
            client,
            cache: Mutex::new(HashMap::new()),
            slots: Mutex::new((0, Arc::new(Semaphore::new(0)))),
        }
    }

    /// The request's digest (the body holds secrets and may be long: neither is kept).
    fn key(body: &Body) -> [u8; 32] {
        let json = serde_json::to_vec(body).unwrap_or_default();
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &json);
        let mut out = [0; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// A remembered answer.
    pub fn check_now(&self, req: &AccessRequest, ip: Option<IpAddr>) -> Option<Result<(), Denied>> {
        let key = Self::key(&Body::new(req, ip));
        let cache = self.cache.lock();
        let (until, r) = cache.get(&key)?;
        (Instant::now() < *until).then(|| r.clone())
    }

    pub async fn check(&self, cfg: &AuthHttp, req: &AccessRequest, ip: Option<IpAddr>) -> Result<(), Denied> {
        if let Some(r) = self.check_now(req, ip) {
            return r;
        }
        let body = Body::new(req, ip);
        let key = Self::key(&body);
        let r = match tokio::time::timeout(cfg.timeout, self.ask(cfg, &body)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(url = %super::masked_url(&cfg.url), "the authorization callback did not answer within {:?}: refused", cfg.timeout);
                // Not remembered: the next request asks again.
                return Err(Denied::unauthorized(
                    "callback_failed",
                    "the authorization service did not answer in time",
                ));
            }
        };
        let ttl = match (&r, cfg.cache_allow, cfg.cache_deny) {
            (Ok(()), t, _) => t,
            (Err(e), _, t) if e.reason().code == "callback_refused" => t,
            _ => std::time::Duration::ZERO,
        };
        if !ttl.is_zero() {
            let mut cache = self.cache.lock();
            if cache.len() >= MAX_CACHED {
                let now = Instant::now();
                cache.retain(|_, (until, _)| *until > now);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(key, (Instant::now() + ttl, r.clone()));
        }
        r
    }

    async fn ask(&self, cfg: &AuthHttp, body: &Body<'_>) -> Result<(), Denied> {
        let slots = {
            let mut s = self.slots.lock();
            if s.0 != cfg.max_concurrent {
                *s = (cfg.max_concurrent, Arc::new(Semaphore::new(cfg.max_concurrent)));
            }
            s.1.clone()
        };
        let _slot = slots.acquire_owned().await.map_err(|_| failed("closed"))?;
        let json = serde_json::to_vec(body).unwrap_or_default();
        let req = self
            .client
            .post(&cfg.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json);
        let resp = req.send().await.map_err(|e| {
            tracing::warn!(url = %super::masked_url(&cfg.url), "the authorization callback failed: {}", e.without_url());
            failed("unreachable")
        })?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(Denied::unauthorized(
                "callback_refused",
                format!("refused by the authorization service ({})", status.as_u16()),
            ))
        }
    }
}

fn failed(why: &str) -> Denied {
    Denied::unauthorized("callback_failed", format!("the authorization service is {why}"))
}

impl Default for Callback {
    fn default() -> Self {
        Self::new()
    }
}
