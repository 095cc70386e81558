//! A token (any bytes) verified by the jwt method with an HS256 secret: the server's own
//! `crates/server/src/auth/jwt.rs` and `config.rs`, included as they are (with the two helpers
//! of `crate::config` they use). Nothing may be allowed without the secret.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/server/src/auth/config.rs"]
mod auth_config;
#[allow(dead_code)]
#[path = "../../crates/server/src/auth/jwt.rs"]
mod jwt;

/// What `jwt.rs` logs a JWKS address with (`crate::auth::masked_url` in the server; only logged).
fn masked_url(url: &str) -> String {
    url.to_owned()
}

/// What `jwt.rs` finds as `super::config`, and what `auth/config.rs` uses of the server's
/// `crate::config`.
mod config {
    pub use crate::auth_config::*;

    pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
        pattern == b"*" || pattern == text
    }

    pub fn de_duration<'de, D: serde::Deserializer<'de>>(_d: D) -> Result<std::time::Duration, D::Error> {
        Ok(std::time::Duration::ZERO)
    }
}

/// One verifier for every input, as the server has one (a new one per input built an HTTP client
/// each time: 17 runs a second, and memory growing under the sanitizer).
static JWT: std::sync::LazyLock<jwt::Jwt> = std::sync::LazyLock::new(jwt::Jwt::new);

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let cfg = config::AuthJwt {
        secret: "fuzz-secret".into(),
        ..Default::default()
    };
    let jwt = &*JWT;
    match jwt.check_now(&cfg, &token, sluice_media::access::Action::Read, "live/x") {
        jwt::Now::Done(r) => assert!(r.is_err()),
        jwt::Now::NeedKeys => panic!("HS256 needs no keys"),
    }
});
