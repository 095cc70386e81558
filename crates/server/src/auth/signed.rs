//! Signed reader links: `?expires=UNIX[&ip=ADDR]&sig=HMAC`, made by `sluice sign-url` or the API
//! with `[auth.signed_urls] secret`, checked without a callback. The signature covers the path,
//! the expiry and the bound address, so a link opens one path until it expires (from one
//! address when bound); segments need none (they carry no per-viewer secret).

use std::net::IpAddr;

use aws_lc_rs::hmac;
use sluice_media::access::Denied;

/// The longest `sig` value read (a SHA-256 HMAC is 43 characters of base64url).
const MAX_SIG: usize = 128;

fn message(path: &str, expires: u64, ip: Option<&str>) -> String {
    format!("sluice-link\n{path}\n{expires}\n{}", ip.unwrap_or(""))
}

/// The query (without `?`) that opens `path` until `expires` (Unix seconds), from `ip` only
/// when given.
pub fn sign(secret: &str, path: &str, expires: u64, ip: Option<IpAddr>) -> String {
    let ip = ip.map(|i| i.to_string());
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, message(path, expires, ip.as_deref()).as_bytes());
    let sig = base64url(tag.as_ref());
    match ip {
        Some(ip) => format!("expires={expires}&ip={ip}&sig={sig}"),
        None => format!("expires={expires}&sig={sig}"),
    }
}

/// This process's own link secret, made at first use and never written anywhere: the API signs
/// the dashboard player's short-lived links with it, so they work without
/// `[auth.signed_urls] secret` and end with the process.
pub fn player_secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| {
        let mut b = [0u8; 32];
        aws_lc_rs::rand::fill(&mut b).expect("the system's random generator failed");
        base64url(&b)
    })
}

/// Whether a query carries a link signature at all.
pub fn has_signature(query: &str) -> bool {
    query.split('&').any(|p| p.starts_with("sig="))
}

/// Checks the link in `query` for `path`, from `client` at `now` (Unix seconds).
pub fn verify(secret: &str, path: &str, query: &str, client: Option<IpAddr>, now: u64) -> Result<(), Denied> {
    let (mut expires, mut ip, mut sig) = (None, None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("expires", v)) => expires = Some(v),
            Some(("ip", v)) => ip = Some(v),
            Some(("sig", v)) => sig = Some(v),
            _ => {}
        }
    }
    let bad = |m: &str| Denied::unauthorized("bad_signature", m);
    let sig = sig
        .filter(|s| s.len() <= MAX_SIG)
        .ok_or_else(|| bad("the link's signature is malformed"))?;
    let expires: u64 = expires
        .and_then(|e| e.parse().ok())
        .ok_or_else(|| bad("the link has no valid expires"))?;
    let given = base64url_decode(sig).ok_or_else(|| bad("the link's signature is malformed"))?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    // Verified before anything else is said about the link (hmac::verify is constant-time).
    hmac::verify(&key, message(path, expires, ip).as_bytes(), &given)
        .map_err(|_| bad("the link's signature does not match (another path, or altered)"))?;
    if now > expires {
        return Err(Denied::unauthorized("link_expired", "the link has expired"));
    }
    if let Some(ip) = ip {
        let bound: Option<IpAddr> = ip.parse().ok();
        if bound.is_none() || bound != client.map(canonical) {
            return Err(Denied::forbidden(
                "ip_denied",
                "the link is bound to another address",
            ));
        }
    }
    Ok(())
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 4 / 3 + 2);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (b as u32) << (16 - 8 * i));
        for i in 0..chunk.len() + 1 {
            out.push(B64URL[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B64URL.iter().position(|&x| x == c)? as u32;
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

    #[test]
    fn links_open_one_path_until_they_expire() {
        let q = sign("k", "live/a", 1000, None);
        assert!(q.starts_with("expires=1000&sig="), "{q}");
        assert_eq!(verify("k", "live/a", &q, None, 999), Ok(()));
        assert_eq!(
            verify("k", "live/a", &q, None, 1001).unwrap_err().reason().code,
            "link_expired"
        );
        assert_eq!(
            verify("k", "live/b", &q, None, 999).unwrap_err().reason().code,
            "bad_signature"
        );
        assert_eq!(
            verify("x", "live/a", &q, None, 999).unwrap_err().reason().code,
            "bad_signature"
        );
        let moved = q.replace("expires=1000", "expires=9999");
        assert_eq!(
            verify("k", "live/a", &moved, None, 999)
                .unwrap_err()
                .reason()
                .code,
            "bad_signature"
        );
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let q = sign("k", "live/a", 1000, Some(ip));
        assert_eq!(verify("k", "live/a", &q, Some(ip), 1), Ok(()));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(verify("k", "live/a", &q, Some(mapped), 1), Ok(()));
        let other: IpAddr = "10.1.2.4".parse().unwrap();
        assert_eq!(
            verify("k", "live/a", &q, Some(other), 1)
                .unwrap_err()
                .reason()
                .code,
            "ip_denied"
        );
        let stripped = q.replace("&ip=10.1.2.3", "");
        assert_eq!(
            verify("k", "live/a", &stripped, Some(other), 1)
                .unwrap_err()
                .reason()
                .code,
            "bad_signature"
        );
        assert!(verify("k", "live/a", "sig=%%%", None, 1).is_err());
        assert!(verify("k", "live/a", "expires=1&sig=", None, 1).is_err());
        assert_eq!(base64url_decode(&base64url(b"abcde")).unwrap(), b"abcde");
    }

    proptest::proptest! {
        /// Any query is answered without panicking, and never allowed without the key.
        #[test]
        fn any_query_is_refused(q in ".{0,300}") {
            proptest::prop_assert!(verify("secret", "p", &q, None, 0).is_err());
        }
    }
}
