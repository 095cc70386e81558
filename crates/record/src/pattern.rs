//! Recording file names: renders a MediaMTX-style pattern (`./recordings/%path/%Y-%m-%d_%H-%M-%S-%f`)
//! for a path and a start time, and reads the path and the start time back from a file name, so
//! the catalog is rebuilt from the directory alone.
//!
//! Placeholders: `%path`, `%Y` `%m` `%d` `%H` `%M` `%S` (calendar fields, UTC or local time),
//! `%f` (microseconds, 6 digits), `%s` (seconds since 1970), `%%` (a `%`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use regex::Regex;

use crate::Format;

/// A validated file name pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    raw: String,
    local: bool,
    matcher: Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, o: &Self) -> bool {
        self.raw == o.raw && self.local == o.local
    }
}

const FIELDS: [&str; 8] = ["%Y", "%m", "%d", "%H", "%M", "%S", "%f", "%s"];

impl Pattern {
    /// Checks `raw`: it names `%path` once and enough of the time to tell segments apart
    /// (`%s`, or `%Y %m %d %H %M %S`); `local` renders calendar fields in the server's time zone.
    pub fn new(raw: &str, local: bool) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("the recording path pattern is empty".into());
        }
        if raw.matches("%path").count() != 1 {
            return Err(format!(
                "the recording path pattern {raw:?} must contain %path once"
            ));
        }
        let calendar = ["%Y", "%m", "%d", "%H", "%M", "%S"]
            .iter()
            .all(|f| raw.contains(f));
        if !calendar && !raw.contains("%s") {
            return Err(format!(
                "the recording path pattern {raw:?} must contain %s or all of %Y %m %d %H %M %S"
            ));
        }
        let mut re = String::from("^");
        let mut rest = raw;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("%path") {
                re.push_str("(?P<path>.+)");
                rest = r;
                continue;
            }
            if let Some(r) = rest.strip_prefix("%%") {
                re.push('%');
                rest = r;
                continue;
            }
            if let Some(f) = FIELDS.iter().find(|f| rest.starts_with(**f)) {
                let (name, digits) = match *f {
                    "%Y" => ("Y", "4"),
                    "%f" => ("f", "6"),
                    "%s" => ("s", "1,12"),
                    other => (&other[1..], "2"),
                };
                // A field may appear twice; only its first occurrence is captured.
                if re.contains(&format!("(?P<{name}>")) {
                    re.push_str(&format!("[0-9]{{{digits}}}"));
                } else {
                    re.push_str(&format!("(?P<{name}>[0-9]{{{digits}}})"));
                }
                rest = &rest[2..];
                continue;
            }
            let c = rest.chars().next().unwrap_or('%');
            if c == '%' {
                return Err(format!("unknown placeholder in recording path pattern {raw:?}"));
            }
            re.push_str(&regex::escape(&c.to_string()));
            rest = &rest[c.len_utf8()..];
        }
        // A name taken by another file gets a "-N" suffix (see `render`).
        re.push_str(r"(?:-[0-9]{1,4})?\.(?P<ext>mp4|ts)$");
        let matcher = Regex::new(&re).map_err(|e| format!("recording path pattern {raw:?}: {e}"))?;
        Ok(Pattern {
            raw: raw.to_owned(),
            local,
            matcher,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The file of `path`'s segment starting at `start` (without a collision suffix).
    pub fn render(&self, path: &str, start: SystemTime, format: Format) -> PathBuf {
        let micros = start.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as i64;
        let ts = Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH);
        let tz = if self.local {
            TimeZone::system()
        } else {
            TimeZone::UTC
        };
        let dt = tz.to_datetime(ts);
        let mut out = String::with_capacity(self.raw.len() + path.len() + 16);
        let mut rest = self.raw.as_str();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("%path") {
                out.push_str(path);
                rest = r;
                continue;
            }
            if let Some(r) = rest.strip_prefix("%%") {
                out.push('%');
                rest = r;
                continue;
            }
            if let Some(f) = FIELDS.iter().find(|f| rest.starts_with(**f)) {
                let v = match *f {
                    "%Y" => format!("{:04}", dt.year()),
                    "%m" => format!("{:02}", dt.month()),
                    "%d" => format!("{:02}", dt.day()),
                    "%H" => format!("{:02}", dt.hour()),
                    "%M" => format!("{:02}", dt.minute()),
                    "%S" => format!("{:02}", dt.second()),
                    "%f" => format!("{:06}", micros.rem_euclid(1_000_000)),
                    _ => format!("{}", micros.div_euclid(1_000_000)),
                };
                out.push_str(&v);
                rest = &rest[2..];
                continue;
            }
            let c = rest.chars().next().unwrap_or('%');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out.push_str(crate::extension(format));
        PathBuf::from(out)
    }

    /// The directory every file of this pattern is under: the part before the first placeholder,
    /// up to its last `/` (`.` when none).
    pub fn root(&self) -> PathBuf {
        let first = self.raw.find('%').unwrap_or(self.raw.len());
        match self.raw[..first].rfind('/') {
            Some(0) => PathBuf::from("/"),
            Some(i) => PathBuf::from(&self.raw[..i]),
            None => PathBuf::from("."),
        }
    }

    /// The directory files of `path` go to when the pattern puts `%path` alone in a directory
    /// name after a fixed prefix (`./recordings/%path/...`): what a scan or a delete of one path
    /// may look under. Otherwise the pattern's root.
    pub fn path_root(&self, path: &str) -> PathBuf {
        let i = self.raw.find("%path").unwrap_or(0);
        let before = &self.raw[..i];
        if !before.contains('%') && self.raw[i + 5..].starts_with('/') {
            PathBuf::from(format!("{before}{path}"))
        } else {
            self.root()
        }
    }

    /// The path and the start time of a recording file, from its full name as rendered; `None`
    /// for a file this pattern did not produce.
    pub fn parse(&self, file: &Path) -> Option<(String, SystemTime, Format)> {
        let name = file.to_str()?;
        let c = self.matcher.captures(name)?;
        let path = c.name("path")?.as_str().to_owned();
        let format = match c.name("ext")?.as_str() {
            "ts" => Format::MpegTs,
            _ => Format::Fmp4,
        };
        let num = |n: &str| c.name(n).and_then(|m| m.as_str().parse::<i64>().ok());
        let micros = num("f").unwrap_or(0);
        let secs = if let Some(s) = num("s") {
            s
        } else {
            let dt = DateTime::new(
                i16::try_from(num("Y")?).ok()?,
                i8::try_from(num("m")?).ok()?,
                i8::try_from(num("d")?).ok()?,
                i8::try_from(num("H")?).ok()?,
                i8::try_from(num("M")?).ok()?,
                i8::try_from(num("S")?).ok()?,
                0,
            )
            .ok()?;
            let tz = if self.local {
                TimeZone::system()
            } else {
                TimeZone::UTC
            };
            tz.to_timestamp(dt).ok()?.as_second()
        };
        if !(0..=1_000_000).contains(&micros) || secs < 0 {
            return None;
        }
        let t = UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_micros(micros as u64);
        Some((path, t, format))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTX: &str = "./recordings/%path/%Y-%m-%d_%H-%M-%S-%f";

    fn at(secs: u64, micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)
    }

    #[test]
    fn renders_and_parses_back() {
        let p = Pattern::new(MTX, false).unwrap();
        let t = at(1_764_547_200 + 3661, 123_456); // 2025-12-01 01:01:01.123456 UTC
        let f = p.render("live/cam 1", t, Format::Fmp4);
        assert_eq!(
            f,
            PathBuf::from("./recordings/live/cam 1/2025-12-01_01-01-01-123456.mp4")
        );
        assert_eq!(p.parse(&f), Some(("live/cam 1".into(), t, Format::Fmp4)));
        let ts = p.render("a", t, Format::MpegTs);
        assert_eq!(p.parse(&ts).unwrap().2, Format::MpegTs);
        // A collision suffix still parses.
        let dup = PathBuf::from("./recordings/a/2025-12-01_01-01-01-123456-2.mp4");
        assert_eq!(p.parse(&dup).unwrap().1, t);
    }

    #[test]
    fn unix_seconds_pattern() {
        let p = Pattern::new("/var/rec/%path-%s-%f", false).unwrap();
        let t = at(1_700_000_000, 5);
        let f = p.render("x", t, Format::Fmp4);
        assert_eq!(f, PathBuf::from("/var/rec/x-1700000000-000005.mp4"));
        assert_eq!(p.parse(&f).unwrap().1, t);
        assert_eq!(p.root(), PathBuf::from("/var/rec"));
    }

    #[test]
    fn roots() {
        let p = Pattern::new(MTX, false).unwrap();
        assert_eq!(p.root(), PathBuf::from("./recordings"));
        assert_eq!(p.path_root("live/a"), PathBuf::from("./recordings/live/a"));
        let q = Pattern::new("rec/%Y/%path_%m%d%H%M%S", false).unwrap();
        assert_eq!(q.root(), PathBuf::from("rec"));
        assert_eq!(q.path_root("a"), PathBuf::from("rec"));
    }

    #[test]
    fn refuses_bad_patterns() {
        for bad in [
            "",
            "rec/%Y%m%d",
            "rec/%path/%Y",
            "rec/%path/%path%s",
            "rec/%path/%s%q",
        ] {
            assert!(Pattern::new(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn foreign_files_do_not_parse() {
        let p = Pattern::new(MTX, false).unwrap();
        for f in [
            "./recordings/a/notes.txt",
            "./recordings/a/2025-13-01_01-01-01-123456.mp4",
            "./other/a/2025-12-01_01-01-01-123456.mp4",
        ] {
            assert_eq!(p.parse(Path::new(f)), None, "{f}");
        }
    }

    #[test]
    fn local_time_round_trips() {
        let p = Pattern::new(MTX, true).unwrap();
        let t = at(1_764_547_200, 42);
        assert_eq!(p.parse(&p.render("a", t, Format::Fmp4)).unwrap().1, t);
    }
}
