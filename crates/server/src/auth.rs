//! The built-in access policy: the per-path credentials of `[path_defaults.access]` and
//! `[paths."NAME".access]`, answering the core's one [`AccessRequest`] for every protocol.
//!
//! Rules, for publish (and the same for read with the `read_*` keys):
//! - the path must match a `[paths]` table when any exists (else Forbidden: "not configured");
//! - with neither `publish_user` nor `publish_token` set, anyone may publish;
//! - else the request must carry `publish_user` with `publish_pass`, or `publish_token` (as a
//!   token, or as the password for clients that can only send a user and password);
//! - missing or wrong credentials are Unauthorized (the client may try others).
//!
//! Secrets are compared in constant time. The rules need no I/O, so [`Policy::check_now`] always
//! answers (SRT decides in libsrt's listen hook). Other actions (playback, API, metrics) are not
//! governed by per-path credentials and are allowed here; those listeners bind to loopback.

use sluice_media::access::{AccessRequest, Action, Decision, Denied, Policy};

use crate::reload::LiveConfig;

/// The access policy from the configuration's per-path `access` settings; it decides from the
/// configuration in force at each request (a reload changes the answers at once).
pub struct ConfigPolicy {
    config: LiveConfig,
}

impl ConfigPolicy {
    pub fn new(config: LiveConfig) -> Self {
        ConfigPolicy { config }
    }

    fn decide(&self, req: &AccessRequest) -> Result<(), Denied> {
        if !matches!(req.action, Action::Publish | Action::Read) {
            return Ok(());
        }
        let config = self.config.get();
        let Some(p) = config.path(&req.path) else {
            return Err(Denied::Forbidden(format!("path {} is not configured", req.path)));
        };
        let a = &p.access;
        let (user, pass, token) = match req.action {
            Action::Publish => (&a.publish_user, &a.publish_pass, &a.publish_token),
            _ => (&a.read_user, &a.read_pass, &a.read_token),
        };
        if user.is_empty() && token.is_empty() {
            return Ok(());
        }
        if !token.is_empty() {
            let given = [req.token.as_deref(), req.password.as_deref()];
            if given.iter().flatten().any(|g| secret_eq(g, token)) {
                return Ok(());
            }
        }
        if !user.is_empty() {
            let user_ok = req.user.as_deref().is_some_and(|u| secret_eq(u, user));
            let pass_ok = req.password.as_deref().is_some_and(|p| secret_eq(p, pass));
            if user_ok & pass_ok {
                return Ok(());
            }
        }
        let given = req.user.is_some() || req.password.is_some() || req.token.is_some();
        let what = match (user.is_empty(), token.is_empty()) {
            (true, _) => "token",
            (false, true) => "user and password",
            (false, false) => "user and password or token",
        };
        Err(Denied::Unauthorized(if !given {
            format!("no {what} given")
        } else if user.is_empty() {
            "wrong token".to_owned()
        } else if token.is_empty() {
            "wrong user or password".to_owned()
        } else {
            "wrong user, password or token".to_owned()
        }))
    }
}

impl Policy for ConfigPolicy {
    fn check<'a>(&'a self, req: &'a AccessRequest) -> Decision<'a> {
        Box::pin(std::future::ready(self.decide(req)))
    }

    fn check_now(&self, req: &AccessRequest) -> Option<Result<(), Denied>> {
        Some(self.decide(req))
    }
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

/// The credentials of an `Authorization` header: `Basic` gives a user and password, `Bearer` a
/// token. Anything else (or a malformed value) gives nothing.
pub fn authorization(headers: &axum::http::HeaderMap) -> (Option<String>, Option<String>, Option<String>) {
    let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return (None, None, None);
    };
    let Some((scheme, rest)) = v.trim().split_once(' ') else {
        return (None, None, None);
    };
    let rest = rest.trim();
    if rest.len() > 4096 {
        return (None, None, None);
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return (None, None, Some(rest.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let text = base64_decode(rest).and_then(|d| String::from_utf8(d).ok());
        if let Some((user, pass)) = text.as_deref().and_then(|t| t.split_once(':')) {
            return (Some(user.to_owned()), Some(pass.to_owned()), None);
        }
    }
    (None, None, None)
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
    AccessRequest::new(action, path, protocol, Some(remote))
        .with_credentials(user, pass)
        .with_token(token)
        .with_query(query.unwrap_or(""))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn policy(text: &str) -> ConfigPolicy {
        ConfigPolicy::new(LiveConfig::new(Config::parse(text, Vec::new()).unwrap()))
    }

    fn req(action: Action, path: &str, q: &str) -> AccessRequest {
        AccessRequest::new(action, path, "rtmp", None).with_query(q)
    }

    const CONFIG: &str = r#"
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
    fn users_passwords_and_tokens() {
        let p = policy(CONFIG);
        let ok = |a, path, q| p.check_now(&req(a, path, q)) == Some(Ok(()));
        let denied = |a, path, q| p.check_now(&req(a, path, q)).unwrap().unwrap_err();
        assert!(ok(Action::Publish, "live/cam1", "user=obs&pass=s3cret"));
        assert_eq!(
            denied(Action::Publish, "live/cam1", "user=obs&pass=nope"),
            Denied::Unauthorized("wrong user or password".into())
        );
        assert!(matches!(
            denied(Action::Publish, "live/cam1", ""),
            Denied::Unauthorized(m) if m.starts_with("no user and password given")
        ));
        // The read token comes from [path_defaults.access] (the path's table keeps it).
        assert!(ok(Action::Read, "live/cam1", "token=viewers"));
        assert_eq!(
            denied(Action::Read, "live/cam1", "token=x"),
            Denied::Unauthorized("wrong token".into())
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
        assert!(matches!(
            denied(Action::Publish, "other/x", ""),
            Denied::Forbidden(m) if m.contains("not configured")
        ));
        assert!(ok(Action::Api, "other/x", ""));
        // No [paths] at all: every path exists.
        assert!(policy("").check_now(&req(Action::Publish, "a/b", "")) == Some(Ok(())));
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
    }
}
