//! SRT streamid parsing: the forms encoders send to say what they want.
//!
//! - `publish:live/cam1`, `read:live/cam1`, optionally `:user:pass` after the path
//!   (MediaMTX's form, which OBS, vMix and Larix users already type);
//! - the SRT access-control syntax `#!::r=live/cam1,m=publish,u=user,s=pass`
//!   (`m` is `request` (read) or `publish`; `s` is the password here, as MediaMTX reads it);
//! - a bare `live/cam1` reads.

/// Whether the connection publishes or reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Publish,
    Read,
}

/// What a streamid asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamId {
    pub mode: Mode,
    pub path: String,
    pub user: Option<String>,
    pub pass: Option<String>,
}

/// Why a streamid was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    #[error("empty streamid: say which path, e.g. publish:live/cam1 or read:live/cam1")]
    Empty,
    #[error("streamid is longer than 512 bytes")]
    TooLong,
    #[error("streamid {0:?}: unknown mode {1:?} (use publish or read)")]
    Mode(String, String),
    #[error("streamid {0:?}: no path")]
    NoPath(String),
    #[error("streamid {0:?}: invalid path (letters, digits, '_', '-', '.', '/' only; no '..')")]
    BadPath(String),
}

fn valid_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 256
        && !p.starts_with('/')
        && !p.ends_with('/')
        && p.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./~".contains(c))
}

/// The streamid for an error message, its secrets masked: the `u=`/`s=` values of the
/// access-control form, the user and password fields of the `mode:path:user:pass` form.
fn redacted(s: &str) -> String {
    if let Some(rest) = s.strip_prefix("#!::") {
        let kv: Vec<String> = rest
            .split(',')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if matches!(k.trim(), "u" | "s") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        return format!("#!::{}", kv.join(","));
    }
    let parts: Vec<&str> = s.splitn(4, ':').collect();
    match parts.len() {
        0..=2 => s.to_owned(),
        n => format!("{}:{}{}", parts[0], parts[1], ":***".repeat(n - 2)),
    }
}

/// `%XX` decoded; anything malformed is kept as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl StreamId {
    pub fn parse(s: &str) -> Result<StreamId, StreamIdError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(StreamIdError::Empty);
        }
        if s.len() > 512 {
            return Err(StreamIdError::TooLong);
        }
        // Some clients send the access-control form percent-encoded (`%23!::r=...`), as it
        // would be in a URL: decoded whole, once.
        let decoded;
        let s = if s.starts_with("%23") {
            decoded = percent_decode(s);
            decoded.as_str()
        } else {
            s
        };
        let (mode, path, user, pass) = if let Some(rest) = s.strip_prefix("#!::") {
            let mut mode = Mode::Read;
            let (mut path, mut user, mut pass) = (None, None, None);
            for kv in rest.split(',') {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                match k.trim() {
                    "r" => path = Some(v.trim().to_owned()),
                    "m" => {
                        mode = match v.trim() {
                            "publish" => Mode::Publish,
                            "request" | "read" | "" => Mode::Read,
                            other => return Err(StreamIdError::Mode(redacted(s), other.to_owned())),
                        }
                    }
                    "u" => user = Some(v.to_owned()),
                    "s" => pass = Some(v.to_owned()),
                    _ => {}
                }
            }
            (
                mode,
                path.ok_or_else(|| StreamIdError::NoPath(redacted(s)))?,
                user,
                pass,
            )
        } else {
            let parts: Vec<&str> = s.splitn(4, ':').collect();
            match parts[0] {
                "publish" | "read" if parts.len() >= 2 => {
                    let mode = if parts[0] == "publish" {
                        Mode::Publish
                    } else {
                        Mode::Read
                    };
                    let user = parts.get(2).map(|u| u.to_string());
                    let pass = parts.get(3).map(|p| p.to_string());
                    (mode, parts[1].to_owned(), user, pass)
                }
                _ if parts.len() == 1 => (Mode::Read, s.to_owned(), None, None),
                other => return Err(StreamIdError::Mode(redacted(s), other.to_owned())),
            }
        };
        if path.is_empty() {
            return Err(StreamIdError::NoPath(redacted(s)));
        }
        if !valid_path(&path) {
            return Err(StreamIdError::BadPath(redacted(s)));
        }
        Ok(StreamId {
            mode,
            path,
            user,
            pass,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        let p = StreamId::parse("publish:live/cam1").unwrap();
        assert_eq!(
            (p.mode, p.path.as_str(), p.user, p.pass),
            (Mode::Publish, "live/cam1", None, None)
        );
        let r = StreamId::parse("read:live/cam1:alice:s3cret:x").unwrap();
        assert_eq!(r.mode, Mode::Read);
        assert_eq!(
            (r.user.as_deref(), r.pass.as_deref()),
            (Some("alice"), Some("s3cret:x"))
        );
        let a = StreamId::parse("#!::r=live/cam1,m=publish,u=bob,s=pw").unwrap();
        assert_eq!((a.mode, a.path.as_str()), (Mode::Publish, "live/cam1"));
        assert_eq!((a.user.as_deref(), a.pass.as_deref()), (Some("bob"), Some("pw")));
        assert_eq!(
            StreamId::parse("#!::r=live/x,m=request").unwrap().mode,
            Mode::Read
        );
        assert_eq!(StreamId::parse("live/cam1").unwrap().mode, Mode::Read);
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(StreamId::parse(""), Err(StreamIdError::Empty));
        // Percent-encoded access-control form, as some clients send it.
        let e = StreamId::parse("%23!::r=live/cam1,m=publish,u=bob,s=p%40ss").unwrap();
        assert_eq!((e.mode, e.path.as_str()), (Mode::Publish, "live/cam1"));
        assert_eq!(
            (e.user.as_deref(), e.pass.as_deref()),
            (Some("bob"), Some("p@ss"))
        );
        assert!(StreamId::parse("%23!::r=%zz").is_err());
        // A refused streamid is quoted without its secrets.
        for (sid, secret) in [
            ("#!::r=live/a b,m=publish,u=obs,s=SECRET", "SECRET"),
            ("#!::r=live/a,m=pub,u=obs,s=SECRET", "SECRET"),
            ("publish:live/a b:obs:SECRET", "SECRET"),
            ("pub:live/a:obs:SECRET", "SECRET"),
        ] {
            let e = StreamId::parse(sid).unwrap_err().to_string();
            assert!(!e.contains(secret) && !e.contains("obs"), "{e}");
        }
        assert!(matches!(
            StreamId::parse("push:live/cam1"),
            Err(StreamIdError::Mode(..))
        ));
        assert!(matches!(
            StreamId::parse("publish:../etc"),
            Err(StreamIdError::BadPath(_))
        ));
        assert!(matches!(
            StreamId::parse("publish:"),
            Err(StreamIdError::NoPath(_))
        ));
        assert!(matches!(
            StreamId::parse("#!::m=publish"),
            Err(StreamIdError::NoPath(_))
        ));
        assert!(matches!(
            StreamId::parse("#!::r=a,m=bogus"),
            Err(StreamIdError::Mode(..))
        ));
        assert!(StreamId::parse(&"a".repeat(600)).is_err());
    }

    /// Regression (cargo fuzz, srt_streamid): dots inside a segment are a valid name, only a
    /// whole ".." segment is refused.
    #[test]
    fn dots_inside_a_segment_are_fine() {
        assert_eq!(StreamId::parse("tt..").unwrap().path, "tt..");
        assert!(StreamId::parse("read:a/../b").is_err());
        assert!(StreamId::parse("read:./b").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,600}") {
            let _ = StreamId::parse(&s);
        }
    }
}
