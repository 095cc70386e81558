//! Access control's one request type and the policy trait that answers it. Every protocol fills
//! in an [`AccessRequest`] the same way (RTMP from the stream name's query, SRT from its
//! streamid, HTTP from headers and query) and asks the registry's [`Policy`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

/// What a client wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Publish,
    Read,
    /// Recorded media (playback server).
    Playback,
    Api,
    Metrics,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Read => "read",
            Action::Playback => "playback",
            Action::Api => "api",
            Action::Metrics => "metrics",
        }
    }
}

/// One question to the access policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    pub action: Action,
    pub path: String,
    pub protocol: &'static str,
    pub remote: Option<SocketAddr>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// A bearer token (`?token=`, `Authorization: Bearer`).
    pub token: Option<String>,
    /// The raw query the client sent (without `?`), for policies that read more of it.
    pub query: String,
    /// The client's `User-Agent` (HTTP) or its software (RTMP `flashVer`), when it says.
    pub user_agent: Option<String>,
    /// The `X-Forwarded-For` header of an HTTP request: the policy believes it only from its
    /// trusted proxies.
    pub forwarded_for: Option<String>,
}

impl AccessRequest {
    pub fn new(action: Action, path: &str, protocol: &'static str, remote: Option<SocketAddr>) -> Self {
        AccessRequest {
            action,
            path: path.to_owned(),
            protocol,
            remote,
            user: None,
            password: None,
            token: None,
            query: String::new(),
            user_agent: None,
            forwarded_for: None,
        }
    }

    /// Takes `user`, `pass` (or `password`) and `token` (or `jwt`) from a URL query, as OBS and
    /// ffmpeg send them in an RTMP stream key (`cam1?user=u&pass=p`) or an HTTP URL. Values
    /// already set (from headers) are kept.
    pub fn with_query(mut self, query: &str) -> Self {
        let query = query.strip_prefix('?').unwrap_or(query);
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "user" | "username" if self.user.is_none() => self.user = Some(v),
                "pass" | "password" if self.password.is_none() => self.password = Some(v),
                "token" | "jwt" if self.token.is_none() => self.token = Some(v),
                _ => {}
            }
        }
        self.query = query.to_owned();
        self
    }

    pub fn with_credentials(mut self, user: Option<String>, password: Option<String>) -> Self {
        self.user = user.or(self.user);
        self.password = password.or(self.password);
        self
    }

    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.or(self.token);
        self
    }
}

/// Why access was refused: a short fixed code (a metrics label, an event field) and a message
/// for the log and the client. The message never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// One of a small fixed set (`no_credentials`, `wrong_credentials`, `not_permitted`,
    /// `ip_denied`, `path_not_configured`, `bad_token`, `token_expired`, `link_expired`,
    /// `bad_signature`, `callback_refused`, `callback_failed`, ...): never built from input.
    pub code: &'static str,
    pub message: String,
}

impl Reason {
    pub fn new(code: &'static str, message: impl Into<String>) -> Reason {
        Reason {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why access was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Credentials missing or wrong: the client may ask again with others (HTTP 401).
    #[error("unauthorized: {0}")]
    Unauthorized(Reason),
    /// Not allowed whatever the credentials (HTTP 403).
    #[error("forbidden: {0}")]
    Forbidden(Reason),
}

impl Denied {
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Denied {
        Denied::Unauthorized(Reason::new(code, message))
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Denied {
        Denied::Forbidden(Reason::new(code, message))
    }

    pub fn reason(&self) -> &Reason {
        match self {
            Denied::Unauthorized(r) | Denied::Forbidden(r) => r,
        }
    }
}

/// A boxed future answering an access request.
pub type Decision<'a> = Pin<Box<dyn Future<Output = Result<(), Denied>> + Send + 'a>>;

/// Answers access requests. Implementations that ask a remote service (HTTP callback, JWKS)
/// answer from what they already know in [`check_now`](Self::check_now) where they can.
pub trait Policy: Send + Sync + 'static {
    /// The decision, possibly after asking elsewhere.
    fn check<'a>(&'a self, req: &'a AccessRequest) -> Decision<'a>;

    /// The decision when it can be made at once (static rules, a cache), `None` when only
    /// [`check`](Self::check) can tell. Used where waiting is not allowed (libsrt's listen hook).
    fn check_now(&self, req: &AccessRequest) -> Option<Result<(), Denied>>;

    /// Whether `req` is allowed with no credentials at all (those it carries are not looked
    /// at), decided at once with nothing counted or logged; `false` when only asking elsewhere
    /// could tell. The dashboard asks it before a login: a client let in anyway needs none.
    fn open_to(&self, _req: &AccessRequest) -> bool {
        false
    }
}

/// Lets everyone do everything (the default posture; the server warns at startup).
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Policy for AllowAll {
    fn check<'a>(&'a self, _req: &'a AccessRequest) -> Decision<'a> {
        Box::pin(std::future::ready(Ok(())))
    }
    fn check_now(&self, _req: &AccessRequest) -> Option<Result<(), Denied>> {
        Some(Ok(()))
    }
    fn open_to(&self, _req: &AccessRequest) -> bool {
        true
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_a_stream_key_query() {
        let r = AccessRequest::new(Action::Publish, "live/cam1", "rtmp", None)
            .with_query("user=alice&pass=s%40cret&x=1");
        assert_eq!(r.user.as_deref(), Some("alice"));
        assert_eq!(r.password.as_deref(), Some("s@cret"));
        assert_eq!(r.token, None);
        assert_eq!(r.query, "user=alice&pass=s%40cret&x=1");
        let r = AccessRequest::new(Action::Read, "a", "hls", None).with_query("?token=abc&bad=%zz%");
        assert_eq!(r.token.as_deref(), Some("abc"));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
    }

    proptest::proptest! {
        /// Any query parses without panicking, and a value given once comes back decoded.
        #[test]
        fn any_query_parses(q in ".{0,200}", user in "[a-zA-Z0-9]{1,20}") {
            let _ = AccessRequest::new(Action::Read, "p", "hls", None).with_query(&q);
            let r = AccessRequest::new(Action::Read, "p", "hls", None).with_query(&format!("x=1&user={user}&{q}"));
            proptest::prop_assert_eq!(r.user.as_deref(), Some(user.as_str()));
        }
    }
}
