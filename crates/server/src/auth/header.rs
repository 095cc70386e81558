//! The `Authorization` header's credentials: `Basic` gives a user and a password, `Bearer` a
//! token. Written by hand (base64 included) to stay a dependency-free parser the fuzz target
//! includes as it is.

/// Longest credentials value read; longer ones give nothing.
pub const MAX_VALUE: usize = 4096;

/// `(user, password, token)` of an `Authorization` value; anything else (an unknown scheme, a
/// malformed or oversized value) gives nothing.
pub fn parse_authorization(v: &str) -> (Option<String>, Option<String>, Option<String>) {
    let Some((scheme, rest)) = v.trim().split_once(' ') else {
        return (None, None, None);
    };
    let rest = rest.trim();
    if rest.len() > MAX_VALUE {
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

    #[test]
    fn schemes() {
        assert_eq!(
            parse_authorization("Basic b2JzOnMzY3JldA=="),
            (Some("obs".into()), Some("s3cret".into()), None)
        );
        assert_eq!(
            parse_authorization("bearer abc "),
            (None, None, Some("abc".into()))
        );
        assert_eq!(parse_authorization("Basic !!!"), (None, None, None));
        assert_eq!(
            parse_authorization("Basic bm9jb2xvbg=="),
            (None, None, None),
            "no colon"
        );
        assert_eq!(parse_authorization("Digest x"), (None, None, None));
        let long = format!("Bearer {}", "a".repeat(MAX_VALUE + 1));
        assert_eq!(parse_authorization(&long), (None, None, None));
    }

    proptest::proptest! {
        /// Any value parses without panicking; Basic round-trips any user without a colon.
        #[test]
        fn any_value(v in ".{0,300}", user in "[^:]{0,20}", pass in ".{0,20}") {
            let _ = parse_authorization(&v);
            let enc = base64_encode(format!("{user}:{pass}").as_bytes());
            proptest::prop_assert_eq!(
                parse_authorization(&format!("Basic {enc}")),
                (Some(user), Some(pass), None)
            );
        }
    }

    fn base64_encode(d: &[u8]) -> String {
        let abc = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in d.chunks(3) {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |a, (i, &b)| a | (b as u32) << (16 - 8 * i));
            for i in 0..c.len() + 1 {
                out.push(abc[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
            out.push_str(&"=".repeat(3 - c.len()));
        }
        out
    }
}
