//! The jwt method: a token (`?jwt=`, `?token=`, `Authorization: Bearer`, or the password where a
//! client can only send a user and password) signed with the HS256 secret or a key of a JWKS,
//! whose claim lists what it permits. Verification is jsonwebtoken's on the aws-lc-rs provider;
//! this module chooses the key and the algorithms, fetches the JWKS and reads the claim.
//!
//! The algorithms are fixed by the key, never by the token: HS256 for the secret; RS*/PS* for
//! an RSA key, ES256/ES384 for an EC key, EdDSA for an OKP key of the JWKS (symmetric keys in
//! a JWKS are ignored). `alg: none` is no algorithm at all. A token naming an unknown `kid`
//! makes the JWKS be fetched again, at most once per `jwks_refresh_min`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use sluice_media::access::{Action, Denied};

use super::config::{ActionName, AuthJwt, Permission};

/// The largest token read (headers and queries are bounded before, this bounds the work).
pub const MAX_TOKEN: usize = 8192;
/// The largest JWKS document read.
const MAX_JWKS: usize = 1 << 20;

/// A JWKS key: the decoding key and the algorithms it may verify.
struct Key {
    key: DecodingKey,
    algs: Vec<Algorithm>,
}

/// The JWKS in use and when it was last fetched.
#[derive(Default)]
struct JwksState {
    url: String,
    keys: HashMap<String, std::sync::Arc<Key>>,
    fetched: Option<Instant>,
}

/// Most verified tokens remembered.
const MAX_VERIFIED: usize = 10_000;

/// A token whose signature and claims were verified: until when it holds, what it permits.
struct Verified {
    exp: u64,
    perms: Vec<Permission>,
}

/// Tokens verified under one configuration (a player reloading a playlist twice a second sends
/// the same token each time: its signature is checked once).
#[derive(Default)]
struct Seen {
    cfg: Option<AuthJwt>,
    tokens: HashMap<[u8; 32], std::sync::Arc<Verified>>,
}

/// What the jwt method knows: the JWKS keys by `kid`, and the tokens it verified.
pub struct Jwt {
    jwks: Mutex<JwksState>,
    seen: Mutex<Seen>,
    fetching: tokio::sync::Mutex<()>,
    client: reqwest::Client,
}

/// What verifying a token now found.
pub enum Now {
    Done(Result<(), Denied>),
    /// The token names a `kid` the JWKS (as last fetched) does not have.
    NeedKeys,
}

impl Jwt {
    pub fn new() -> Jwt {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Jwt {
            jwks: Mutex::new(JwksState::default()),
            seen: Mutex::new(Seen::default()),
            fetching: tokio::sync::Mutex::new(()),
            client,
        }
    }

    /// Verifies `token` for `action` on `path` with what is known now.
    pub fn check_now(&self, cfg: &AuthJwt, token: &str, action: Action, path: &str) -> Now {
        if token.len() > MAX_TOKEN {
            return Now::Done(Err(bad("the token is too long")));
        }
        let digest = digest(token);
        if let Some(v) = self.remembered(cfg, &digest) {
            if now_unix() > v.exp + cfg.leeway.as_secs() {
                return Now::Done(Err(Denied::unauthorized(
                    "token_expired",
                    "the token has expired",
                )));
            }
            return Now::Done(permitted(&v.perms, action, path));
        }
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(e) => return Now::Done(Err(bad(&format!("the token is not a JWT: {e}")))),
        };
        let key = if !cfg.secret.is_empty() {
            std::sync::Arc::new(Key {
                key: DecodingKey::from_secret(cfg.secret.as_bytes()),
                algs: vec![Algorithm::HS256],
            })
        } else {
            let st = self.jwks.lock();
            if st.url != cfg.jwks_url || st.fetched.is_none() {
                return Now::NeedKeys;
            }
            let Some(kid) = header.kid.as_deref() else {
                return Now::Done(Err(bad("the token names no key (kid)")));
            };
            match st.keys.get(kid) {
                Some(k) => k.clone(),
                None => return Now::NeedKeys,
            }
        };
        if !key.algs.contains(&header.alg) {
            return Now::Done(Err(bad(&format!(
                "the token's algorithm {:?} is not accepted for its key",
                header.alg
            ))));
        }
        let verified = match verify(cfg, &key.key, header.alg, token) {
            Ok(v) => v,
            Err(e) => return Now::Done(Err(e)),
        };
        let r = permitted(&verified.perms, action, path);
        self.remember(cfg, digest, verified);
        Now::Done(r)
    }

    fn remembered(&self, cfg: &AuthJwt, digest: &[u8; 32]) -> Option<std::sync::Arc<Verified>> {
        let seen = self.seen.lock();
        if seen.cfg.as_ref() != Some(cfg) {
            return None;
        }
        seen.tokens.get(digest).cloned()
    }

    fn remember(&self, cfg: &AuthJwt, digest: [u8; 32], v: Verified) {
        let mut seen = self.seen.lock();
        if seen.cfg.as_ref() != Some(cfg) {
            *seen = Seen {
                cfg: Some(cfg.clone()),
                tokens: HashMap::new(),
            };
        }
        if seen.tokens.len() >= MAX_VERIFIED {
            let now = now_unix();
            seen.tokens.retain(|_, v| v.exp >= now);
            if seen.tokens.len() >= MAX_VERIFIED {
                seen.tokens.clear();
            }
        }
        seen.tokens.insert(digest, std::sync::Arc::new(v));
    }

    /// Verifies `token`, fetching the JWKS first when needed (at most once per
    /// `jwks_refresh_min`).
    pub async fn check(&self, cfg: &AuthJwt, token: &str, action: Action, path: &str) -> Result<(), Denied> {
        if let Now::Done(r) = self.check_now(cfg, token, action, path) {
            return r;
        }
        self.refresh(cfg).await;
        match self.check_now(cfg, token, action, path) {
            Now::Done(r) => r,
            Now::NeedKeys => Err(bad("the token's key (kid) is not in the JWKS")),
        }
    }

    async fn refresh(&self, cfg: &AuthJwt) {
        let _one = self.fetching.lock().await;
        {
            let st = self.jwks.lock();
            if st.url == cfg.jwks_url && st.fetched.is_some_and(|t| t.elapsed() < cfg.jwks_refresh_min) {
                return;
            }
        }
        let fetched = self.fetch(&cfg.jwks_url).await;
        let mut st = self.jwks.lock();
        if st.url != cfg.jwks_url {
            *st = JwksState {
                url: cfg.jwks_url.clone(),
                ..Default::default()
            };
        }
        st.fetched = Some(Instant::now());
        match fetched {
            Ok(keys) => {
                tracing::info!(url = %super::masked_url(&cfg.jwks_url), keys = keys.len(), "JWKS fetched");
                // A key that left the set no longer vouches for the tokens it signed.
                self.seen.lock().tokens.clear();
                st.keys = keys;
            }
            // The keys known so far stay in use.
            Err(e) => tracing::warn!(url = %super::masked_url(&cfg.jwks_url), "cannot fetch the JWKS: {e}"),
        }
    }

    async fn fetch(&self, url: &str) -> anyhow::Result<HashMap<String, std::sync::Arc<Key>>> {
        let mut resp = self
            .client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.without_url())?;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.without_url())? {
            if body.len() + chunk.len() > MAX_JWKS {
                anyhow::bail!("the JWKS is larger than {MAX_JWKS} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body)?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let algs = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => vec![
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
                AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256, Algorithm::ES384],
                AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
                AlgorithmParameters::OctetKey(_) => continue,
            };
            // A key that names its algorithm verifies only that one.
            let algs = match jwk.common.key_algorithm.map(|a| a.to_string()) {
                Some(a) => algs.into_iter().filter(|x| format!("{x:?}") == a).collect(),
                None => algs,
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) if !algs.is_empty() => {
                    keys.insert(kid, std::sync::Arc::new(Key { key, algs }));
                }
                Ok(_) => tracing::warn!(%kid, "JWKS key skipped: its alg does not fit its type"),
                Err(e) => tracing::warn!(%kid, "JWKS key skipped: {e}"),
            }
        }
        Ok(keys)
    }
}

impl Default for Jwt {
    fn default() -> Self {
        Self::new()
    }
}

fn bad(m: &str) -> Denied {
    Denied::unauthorized("bad_token", m)
}

fn verify(cfg: &AuthJwt, key: &DecodingKey, alg: Algorithm, token: &str) -> Result<Verified, Denied> {
    use jsonwebtoken::errors::ErrorKind;
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.leeway = cfg.leeway.as_secs();
    v.validate_nbf = true;
    v.required_spec_claims = ["exp".to_owned()].into();
    if cfg.issuer.is_empty() {
        v.iss = None;
    } else {
        v.set_issuer(&[&cfg.issuer]);
    }
    if cfg.audience.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(&[&cfg.audience]);
    }
    let data = jsonwebtoken::decode::<serde_json::Value>(token, key, &v).map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => Denied::unauthorized("token_expired", "the token has expired"),
        ErrorKind::ImmatureSignature => Denied::unauthorized("bad_token", "the token is not valid yet (nbf)"),
        ErrorKind::InvalidSignature => bad("the token's signature does not match"),
        ErrorKind::InvalidIssuer => bad("the token's issuer (iss) is not the one configured"),
        ErrorKind::InvalidAudience => bad("the token's audience (aud) is not the one configured"),
        ErrorKind::MissingRequiredClaim(c) => bad(&format!("the token has no {c} claim")),
        _ => bad(&format!("the token is refused: {e}")),
    })?;
    Ok(Verified {
        exp: data.claims.get("exp").and_then(|e| e.as_u64()).unwrap_or(0),
        perms: permissions(data.claims.get(&cfg.claim)),
    })
}

fn permitted(perms: &[Permission], action: Action, path: &str) -> Result<(), Denied> {
    if perms.iter().any(|p| p.allows(action, path)) {
        Ok(())
    } else {
        Err(Denied::forbidden(
            "not_permitted",
            format!("the token does not permit {} on this path", action.name()),
        ))
    }
}

/// The permissions of a claim value: `[{"action": "read", "path": "live/*"}, ...]`; entries that
/// do not read as one are skipped.
fn permissions(v: Option<&serde_json::Value>) -> Vec<Permission> {
    let Some(serde_json::Value::Array(items)) = v else {
        return Vec::new();
    };
    items
        .iter()
        .take(256)
        .filter_map(|i| {
            let action: ActionName = serde_json::from_value(i.get("action")?.clone()).ok()?;
            let path = match i.get("path") {
                None | Some(serde_json::Value::Null) => "",
                Some(p) => p.as_str()?,
            };
            Some(Permission::new(action, path))
        })
        .collect()
}

fn digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether a string could be a JWT (three base64url parts): a password that is one is tried
/// as a token.
pub fn looks_like_jwt(s: &str) -> bool {
    s.len() > 20 && s.bytes().filter(|&b| b == b'.').count() == 2 && s.starts_with("eyJ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn cfg() -> AuthJwt {
        AuthJwt {
            secret: "hs-secret".into(),
            ..Default::default()
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn token(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn decide(t: &str, action: Action, path: &str) -> Result<(), Denied> {
        match Jwt::new().check_now(&cfg(), t, action, path) {
            Now::Done(r) => r,
            Now::NeedKeys => panic!("HS256 needs no keys"),
        }
    }

    #[test]
    fn hs256_tokens_permit_what_their_claim_says() {
        let claims = serde_json::json!({"exp": now() + 60,
            "sluice_permissions": [{"action": "read", "path": "live/*"}, {"action": "publish", "path": "cam"}]});
        let t = token(Algorithm::HS256, "hs-secret", claims.clone());
        assert_eq!(decide(&t, Action::Read, "live/a"), Ok(()));
        assert_eq!(decide(&t, Action::Publish, "cam"), Ok(()));
        assert_eq!(
            decide(&t, Action::Publish, "live/a").unwrap_err().reason().code,
            "not_permitted"
        );
        let wrong = token(Algorithm::HS256, "other", claims.clone());
        assert_eq!(
            decide(&wrong, Action::Read, "live/a").unwrap_err().reason().code,
            "bad_token"
        );
        // Another HMAC algorithm with the right secret is still refused: the key fixes the alg.
        let hs512 = token(Algorithm::HS512, "hs-secret", claims);
        assert!(decide(&hs512, Action::Read, "live/a")
            .unwrap_err()
            .to_string()
            .contains("algorithm"));
        let expired = token(
            Algorithm::HS256,
            "hs-secret",
            serde_json::json!({"exp": now() - 120, "sluice_permissions": [{"action": "read"}]}),
        );
        assert_eq!(
            decide(&expired, Action::Read, "x").unwrap_err().reason().code,
            "token_expired"
        );
        let no_exp = token(
            Algorithm::HS256,
            "hs-secret",
            serde_json::json!({"sluice_permissions": [{"action": "read"}]}),
        );
        assert_eq!(
            decide(&no_exp, Action::Read, "x").unwrap_err().reason().code,
            "bad_token"
        );
        let later = token(
            Algorithm::HS256,
            "hs-secret",
            serde_json::json!({"exp": now() + 600, "nbf": now() + 300, "sluice_permissions": [{"action": "read"}]}),
        );
        assert!(decide(&later, Action::Read, "x").is_err());
    }

    #[test]
    fn verified_tokens_are_remembered_per_configuration() {
        let j = Jwt::new();
        let claims = serde_json::json!({"exp": now() + 60, "sluice_permissions": [{"action": "read"}]});
        let t = token(Algorithm::HS256, "hs-secret", claims);
        let check = |c: &AuthJwt, a| match j.check_now(c, &t, a, "x") {
            Now::Done(r) => r,
            Now::NeedKeys => panic!(),
        };
        assert_eq!(check(&cfg(), Action::Read), Ok(()));
        assert_eq!(j.seen.lock().tokens.len(), 1);
        // Remembered: the permissions still apply, per request.
        assert_eq!(check(&cfg(), Action::Read), Ok(()));
        assert_eq!(
            check(&cfg(), Action::Publish).unwrap_err().reason().code,
            "not_permitted"
        );
        // Another secret: what was verified under the old one counts for nothing.
        let other = AuthJwt {
            secret: "rotated".into(),
            ..cfg()
        };
        assert_eq!(
            check(&other, Action::Read).unwrap_err().reason().code,
            "bad_token"
        );
    }

    #[test]
    fn unsigned_and_malformed_tokens_are_refused() {
        // {"alg":"none","typ":"JWT"} . {"exp":9999999999,"sluice_permissions":[{"action":"read"}]} .
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJleHAiOjk5OTk5OTk5OTksInNsdWljZV9wZXJtaXNzaW9ucyI6W3siYWN0aW9uIjoicmVhZCJ9XX0.";
        assert_eq!(
            decide(none, Action::Read, "x").unwrap_err().reason().code,
            "bad_token"
        );
        for t in ["", "a.b.c", "....", "eyJ.eyJ.x", &"x".repeat(MAX_TOKEN + 1)] {
            assert!(decide(t, Action::Read, "x").is_err(), "{t:.20}");
        }
    }

    #[test]
    fn claims_read_leniently() {
        let p = permissions(Some(&serde_json::json!([
            {"action": "read"}, {"action": "bogus"}, 7, {"action": "publish", "path": null}, {"action": "api", "path": 3}
        ])));
        assert_eq!(
            p,
            vec![
                Permission::new(ActionName::Read, ""),
                Permission::new(ActionName::Publish, "")
            ]
        );
        assert!(permissions(Some(&serde_json::json!("read"))).is_empty());
    }

    proptest::proptest! {
        /// Any string is answered without panicking, and never allowed.
        #[test]
        fn any_token_is_refused(t in ".{0,400}") {
            proptest::prop_assert!(decide(&t, Action::Read, "x").is_err());
        }
    }
}
