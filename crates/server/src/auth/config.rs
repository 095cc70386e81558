//! The `[auth]` section: which method decides, the internal users, the HTTP callback, JWT
//! settings, signed links, IP lists and the refusal slow-down (docs/security.md).

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use sluice_media::access::Action;

/// `[auth]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub method: AuthMethod,
    /// `[[auth.users]]`. `None` (no such table written): the built-in list of [`default_users`].
    pub users: Option<Vec<AuthUser>>,
    /// Addresses (or CIDR networks) allowed to do anything at all; empty: every address.
    #[serde(deserialize_with = "de_nets")]
    pub allow_ips: Vec<IpNet>,
    /// Addresses refused everything (checked before `allow_ips`).
    #[serde(deserialize_with = "de_nets")]
    pub deny_ips: Vec<IpNet>,
    /// Reverse proxies whose `X-Forwarded-For` is believed; from anyone else it is ignored.
    #[serde(deserialize_with = "de_nets")]
    pub trusted_proxies: Vec<IpNet>,
    /// Refusals from one address within a minute after which each of its next requests waits
    /// `fail_delay` before being answered; 0: never slowed.
    pub fail_limit: u32,
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub fail_delay: Duration,
    pub http: AuthHttp,
    pub jwt: AuthJwt,
    pub signed_urls: AuthSignedUrls,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            method: AuthMethod::Internal,
            users: None,
            allow_ips: Vec::new(),
            deny_ips: Vec::new(),
            trusted_proxies: Vec::new(),
            fail_limit: 20,
            fail_delay: Duration::from_secs(1),
            http: AuthHttp::default(),
            jwt: AuthJwt::default(),
            signed_urls: AuthSignedUrls::default(),
        }
    }
}

/// Who decides what is not settled by the IP lists, a signed link or a path's own credentials.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// `[[auth.users]]`.
    Internal,
    /// `[auth.http]`: a POST to a URL.
    Http,
    /// `[auth.jwt]`: a signed token with the permissions in a claim.
    Jwt,
}

/// One `[[auth.users]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthUser {
    /// The user name; `any` is everyone, with or without credentials.
    pub user: String,
    /// The password: an argon2id hash from `sluice hash-password` (`$argon2id$...`), or the
    /// password itself. Empty for `any`.
    pub pass: String,
    /// Where this user may connect from; empty: anywhere.
    #[serde(deserialize_with = "de_nets")]
    pub ips: Vec<IpNet>,
    pub permissions: Vec<Permission>,
}

/// One thing a user (or a token) may do: an action, on paths matching a pattern.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    pub action: ActionName,
    /// A path or a pattern with `*` (as in `[paths]`); empty or absent: every path.
    #[serde(default)]
    pub path: String,
}

impl Permission {
    pub fn new(action: ActionName, path: &str) -> Self {
        Permission {
            action,
            path: path.to_owned(),
        }
    }

    pub fn allows(&self, action: Action, path: &str) -> bool {
        self.action.action() == action
            && (self.path.is_empty()
                || self.path == path
                || (self.path.contains('*') && crate::config::glob(self.path.as_bytes(), path.as_bytes())))
    }
}

/// An action's name in the configuration and in tokens.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ActionName {
    Publish,
    Read,
    Playback,
    Api,
    Metrics,
}

impl ActionName {
    pub fn action(self) -> Action {
        match self {
            ActionName::Publish => Action::Publish,
            ActionName::Read => Action::Read,
            ActionName::Playback => Action::Playback,
            ActionName::Api => Action::Api,
            ActionName::Metrics => Action::Metrics,
        }
    }
}

/// `[auth.http]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthHttp {
    /// Where each request is POSTed as JSON; a 2xx answer allows.
    pub url: String,
    /// No answer within this: refused (fails closed).
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub timeout: Duration,
    /// How long an allowed request is remembered (0: not remembered).
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub cache_allow: Duration,
    /// How long a refused request is remembered.
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub cache_deny: Duration,
    /// Requests to the URL at once; a request that cannot start within `timeout` is refused.
    pub max_concurrent: usize,
}

impl Default for AuthHttp {
    fn default() -> Self {
        AuthHttp {
            url: String::new(),
            timeout: Duration::from_secs(2),
            cache_allow: Duration::from_secs(10),
            cache_deny: Duration::from_secs(1),
            max_concurrent: 32,
        }
    }
}

/// `[auth.jwt]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthJwt {
    /// HS256 shared secret (tokens signed with it).
    pub secret: String,
    /// A JWKS URL (RS256/384/512, PS256/384/512, ES256/384, EdDSA keys, found by `kid`).
    pub jwks_url: String,
    /// The JWKS is fetched again for an unknown `kid`, at most once per this.
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub jwks_refresh_min: Duration,
    /// Required `iss`, when set.
    pub issuer: String,
    /// Required `aud`, when set.
    pub audience: String,
    /// The claim listing what the token permits: `[{"action": "read", "path": "live/*"}]`.
    pub claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(deserialize_with = "crate::config::de_duration")]
    pub leeway: Duration,
}

impl Default for AuthJwt {
    fn default() -> Self {
        AuthJwt {
            secret: String::new(),
            jwks_url: String::new(),
            jwks_refresh_min: Duration::from_secs(10),
            issuer: String::new(),
            audience: String::new(),
            claim: "sluice_permissions".into(),
            leeway: Duration::from_secs(30),
        }
    }
}

/// `[auth.signed_urls]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSignedUrls {
    /// The HMAC key of `?expires=&sig=` reader links (`sluice sign-url`); empty: links off.
    pub secret: String,
}

/// What `any` may do when no `[[auth.users]]` is written: with the internal method, publish,
/// read and play recordings from anywhere (the open default), the API and the metrics from
/// this machine only; with the http and jwt methods, only the API and metrics from this
/// machine (everything else is the method's to decide).
pub fn default_users(method: AuthMethod) -> Vec<AuthUser> {
    let local: Vec<IpNet> = ["127.0.0.0/8", "::1/128"]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    let mut users = vec![AuthUser {
        user: "any".into(),
        pass: String::new(),
        ips: local,
        permissions: vec![
            Permission::new(ActionName::Api, ""),
            Permission::new(ActionName::Metrics, ""),
        ],
    }];
    if method == AuthMethod::Internal {
        users.push(AuthUser {
            user: "any".into(),
            pass: String::new(),
            ips: Vec::new(),
            permissions: vec![
                Permission::new(ActionName::Publish, ""),
                Permission::new(ActionName::Read, ""),
                Permission::new(ActionName::Playback, ""),
            ],
        });
    }
    users
}

impl AuthConfig {
    /// The users in force: the written ones, else the built-in ones.
    pub fn users(&self) -> &[AuthUser] {
        static INTERNAL: std::sync::OnceLock<Vec<AuthUser>> = std::sync::OnceLock::new();
        static OTHERS: std::sync::OnceLock<Vec<AuthUser>> = std::sync::OnceLock::new();
        match (&self.users, self.method) {
            (Some(u), _) => u,
            (None, AuthMethod::Internal) => INTERNAL.get_or_init(|| default_users(AuthMethod::Internal)),
            (None, _) => OTHERS.get_or_init(|| default_users(AuthMethod::Http)),
        }
    }

    /// The rules across keys (each value is checked where it is read).
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        match self.method {
            AuthMethod::Http if self.http.url.is_empty() => {
                bail!("auth.method = \"http\" needs auth.http.url")
            }
            AuthMethod::Http => {
                let u: reqwest::Url = self
                    .http
                    .url
                    .parse()
                    .map_err(|e| anyhow::anyhow!("auth.http.url: {e}"))?;
                if !matches!(u.scheme(), "http" | "https") {
                    bail!("auth.http.url must be an http:// or https:// URL");
                }
            }
            AuthMethod::Jwt if self.jwt.secret.is_empty() == self.jwt.jwks_url.is_empty() => {
                bail!("auth.method = \"jwt\" needs one of auth.jwt.secret (HS256) or auth.jwt.jwks_url")
            }
            _ => {}
        }
        if self.http.max_concurrent == 0 {
            bail!("auth.http.max_concurrent must be at least 1");
        }
        if self.fail_delay > Duration::from_secs(10) {
            bail!("auth.fail_delay must be at most 10s");
        }
        for (i, u) in self.users.iter().flatten().enumerate() {
            if u.user.is_empty() {
                bail!("auth.users[{i}]: user is empty (use \"any\" for everyone)");
            }
            if u.user == "any" && !u.pass.is_empty() {
                bail!("auth.users[{i}]: the user \"any\" is everyone and has no password");
            }
            if u.pass.starts_with("$argon2") {
                argon2::PasswordHash::new(&u.pass).map_err(|e| {
                    anyhow::anyhow!(
                        "auth.users[{i}] ({}): pass is not a valid argon2 hash: {e}",
                        u.user
                    )
                })?;
            }
        }
        Ok(())
    }
}

/// An address or a CIDR network: `10.0.0.1`, `10.0.0.0/8`, `::1`.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(n) = IpNet::from_str(s) {
        return Ok(n.trunc());
    }
    IpAddr::from_str(s)
        .map(IpNet::from)
        .map_err(|_| format!("{s:?} is neither an IP address nor a network like 10.0.0.0/8"))
}

pub fn de_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter()
        .map(|s| parse_net(s))
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

/// Whether `ip` is in any of `nets` (an IPv4-mapped IPv6 address counts as its IPv4 one).
pub fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    nets.iter().any(|n| n.contains(&ip))
}
