//! The configuration: TOML schema with defaults, `SLUICE_*` environment overrides, path patterns.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Deserializer};

/// The default configuration, commented; compiled in and printed by `--print-config`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub log: LogConfig,
    pub rtmp: RtmpConfig,
    pub http: HttpConfig,
    pub srt: SrtConfig,
    pub webrtc: WebRtcSection,
    pub hls: HlsSection,
    pub path_defaults: PathConfig,
    pub paths: BTreeMap<String, PathOverride>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "de_listen")]
    pub listen: SocketAddr,
    #[serde(deserialize_with = "de_duration")]
    pub handshake_timeout: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    pub chunk_size: u32,
    #[serde(deserialize_with = "de_duration")]
    pub play_coalesce: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "de_listen")]
    pub listen: SocketAddr,
    pub cors_origin: String,
    #[serde(deserialize_with = "de_duration")]
    pub flv_coalesce: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SrtConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "de_listen")]
    pub listen: SocketAddr,
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcSection {
    pub enabled: bool,
    /// HTTP listener for WHIP/WHEP and the WebRTC pages.
    #[serde(deserialize_with = "de_listen")]
    pub listen: SocketAddr,
    /// The one UDP port every WebRTC session shares.
    #[serde(deserialize_with = "de_listen")]
    pub udp_listen: SocketAddr,
    /// ICE-TCP listener (passive TCP candidates) for networks that block UDP; "" disables it.
    #[serde(deserialize_with = "de_opt_listen")]
    pub tcp_listen: Option<SocketAddr>,
    /// Extra addresses (public IPs or host names) advertised as ICE candidates.
    pub additional_hosts: Vec<String>,
    /// STUN/TURN servers handed to WHIP/WHEP clients (Link headers, and the pages).
    pub ice_servers: Vec<String>,
    /// Credentials for the `turn:`/`turns:` entries of `ice_servers`.
    pub ice_servers_user: String,
    pub ice_servers_pass: String,
    #[serde(deserialize_with = "de_duration")]
    pub ice_timeout: Duration,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HlsVariant {
    Fmp4,
    Mpegts,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HlsSection {
    pub variant: HlsVariant,
    #[serde(deserialize_with = "de_duration")]
    pub segment_duration: Duration,
    pub segment_count: usize,
    #[serde(deserialize_with = "de_duration")]
    pub ready_timeout: Duration,
}

/// Settings of a path, after defaults and the matching `[paths]` table are applied.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PathConfig {
    #[serde(deserialize_with = "de_duration")]
    pub grace_period: Duration,
    pub reader_queue: usize,
    pub reader_max_lags: u32,
    pub gop_cache_max_bytes: usize,
    #[serde(deserialize_with = "de_variant")]
    pub hls_variant: Option<HlsVariant>,
    pub srt_publish_passphrase: String,
    pub srt_read_passphrase: String,
    pub srt_publish_user: String,
    pub srt_publish_pass: String,
    pub srt_read_user: String,
    pub srt_read_pass: String,
    /// Token a WHIP publisher / WHEP reader must present (Bearer, or Basic password); "" = none.
    pub webrtc_publish_token: String,
    pub webrtc_read_token: String,
    #[serde(deserialize_with = "de_duration")]
    pub srt_latency: Duration,
    pub srt_max_bandwidth: i64,
    pub srt_payload_size: u32,
    pub source: String,
}

/// A `[paths."NAME"]` table: every key optional, overriding `[path_defaults]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PathOverride {
    #[serde(deserialize_with = "de_opt_duration")]
    pub grace_period: Option<Duration>,
    pub reader_queue: Option<usize>,
    pub reader_max_lags: Option<u32>,
    pub gop_cache_max_bytes: Option<usize>,
    #[serde(deserialize_with = "de_variant")]
    pub hls_variant: Option<HlsVariant>,
    pub srt_publish_passphrase: Option<String>,
    pub srt_read_passphrase: Option<String>,
    pub srt_publish_user: Option<String>,
    pub srt_publish_pass: Option<String>,
    pub srt_read_user: Option<String>,
    pub srt_read_pass: Option<String>,
    pub webrtc_publish_token: Option<String>,
    pub webrtc_read_token: Option<String>,
    #[serde(deserialize_with = "de_opt_duration")]
    pub srt_latency: Option<Duration>,
    pub srt_max_bandwidth: Option<i64>,
    pub srt_payload_size: Option<u32>,
    pub source: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log: LogConfig {
                level: "info".into(),
                format: LogFormat::Text,
            },
            rtmp: RtmpConfig::default(),
            http: HttpConfig::default(),
            srt: SrtConfig::default(),
            webrtc: WebRtcSection::default(),
            hls: HlsSection::default(),
            path_defaults: PathConfig::default(),
            paths: BTreeMap::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Config::default().log
    }
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            chunk_size: 4096,
            play_coalesce: Duration::from_millis(100),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 8888)),
            cors_origin: "*".into(),
            flv_coalesce: Duration::from_millis(100),
        }
    }
}

impl Default for SrtConfig {
    fn default() -> Self {
        SrtConfig {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 8890)),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for WebRtcSection {
    fn default() -> Self {
        WebRtcSection {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 8889)),
            udp_listen: SocketAddr::from(([0, 0, 0, 0], 8189)),
            tcp_listen: Some(SocketAddr::from(([0, 0, 0, 0], 8189))),
            additional_hosts: Vec::new(),
            ice_servers: Vec::new(),
            ice_servers_user: String::new(),
            ice_servers_pass: String::new(),
            ice_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for HlsSection {
    fn default() -> Self {
        HlsSection {
            variant: HlsVariant::Fmp4,
            segment_duration: Duration::from_secs(1),
            segment_count: 7,
            ready_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for PathConfig {
    fn default() -> Self {
        PathConfig {
            grace_period: Duration::from_secs(10),
            reader_queue: 512,
            reader_max_lags: 8,
            gop_cache_max_bytes: 64 << 20,
            hls_variant: None,
            srt_publish_passphrase: String::new(),
            srt_read_passphrase: String::new(),
            srt_publish_user: String::new(),
            srt_publish_pass: String::new(),
            srt_read_user: String::new(),
            srt_read_pass: String::new(),
            webrtc_publish_token: String::new(),
            webrtc_read_token: String::new(),
            srt_latency: Duration::from_millis(200),
            srt_max_bandwidth: 0,
            srt_payload_size: 1316,
            source: String::new(),
        }
    }
}

impl Config {
    /// Parses a TOML document, then applies `SLUICE_*` variables from `env`.
    pub fn parse(text: &str, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Config> {
        let mut doc: toml::Table =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", describe(text, &e)))?;
        apply_env(&mut doc, env)?;
        let config: Config = doc.try_into().map_err(|e: toml::de::Error| {
            // The document is valid TOML here; re-parse the original text to locate the error.
            match toml::from_str::<Config>(text) {
                Err(e2) => anyhow::anyhow!("{}", describe(text, &e2)),
                Ok(_) => anyhow::anyhow!("in an SLUICE_* environment variable: {}", e.message()),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log.level.as_str()) {
            bail!(
                "log.level must be one of error, warn, info, debug, trace, not {:?}",
                self.log.level
            );
        }
        if !(128..=0x7fff_ffff).contains(&self.rtmp.chunk_size) {
            bail!(
                "rtmp.chunk_size must be between 128 and 2147483647, not {}",
                self.rtmp.chunk_size
            );
        }
        if self.hls.segment_count < 2 {
            bail!("hls.segment_count must be at least 2");
        }
        if self.hls.segment_duration < Duration::from_millis(100) {
            bail!("hls.segment_duration must be at least 100ms");
        }
        let mut tables: Vec<(String, PathConfig)> =
            vec![("path_defaults".into(), self.path_defaults.clone())];
        for name in self.paths.keys() {
            if let Some(c) = self.path(name) {
                tables.push((format!("paths.{name:?}"), c));
            }
        }
        for (name, c) in &tables {
            for (key, pass) in [
                ("srt_publish_passphrase", &c.srt_publish_passphrase),
                ("srt_read_passphrase", &c.srt_read_passphrase),
            ] {
                if !pass.is_empty() && !(10..=79).contains(&pass.len()) {
                    bail!("{name}.{key}: an SRT passphrase is 10 to 79 characters long");
                }
            }
            if !(188..=1456).contains(&c.srt_payload_size) {
                bail!(
                    "{name}.srt_payload_size must be between 188 and 1456 bytes, not {}",
                    c.srt_payload_size
                );
            }
            if !c.source.is_empty() && !c.source.starts_with("srt://") {
                bail!(
                    "{name}.source: only srt:// sources are supported, not {:?}",
                    c.source
                );
            }
            if c.source.is_empty() {
                continue;
            }
            if name == "path_defaults" || name.contains('*') {
                bail!("{name}.source: a source belongs to one path, not to defaults or a pattern");
            }
        }
        for name in self.paths.keys() {
            let literal = name.replace('*', "a");
            if name.is_empty() || name.starts_with('/') || name.ends_with('/') || literal.contains("//") {
                bail!("paths.{name:?}: a path name is segments separated by single '/', without leading or trailing '/'");
            }
        }
        Ok(())
    }

    /// Whether any path may be published (no `[paths]` table).
    pub fn publishing_open(&self) -> bool {
        self.paths.is_empty()
    }

    /// The settings of `path`, or `None` when `[paths]` tables exist and none matches it.
    pub fn path(&self, path: &str) -> Option<PathConfig> {
        let mut c = self.path_defaults.clone();
        if self.paths.is_empty() {
            return Some(c);
        }
        let o = best_match(&self.paths, path)?;
        if let Some(v) = o.grace_period {
            c.grace_period = v;
        }
        if let Some(v) = o.reader_queue {
            c.reader_queue = v;
        }
        if let Some(v) = o.reader_max_lags {
            c.reader_max_lags = v;
        }
        if let Some(v) = o.gop_cache_max_bytes {
            c.gop_cache_max_bytes = v;
        }
        if o.hls_variant.is_some() {
            c.hls_variant = o.hls_variant;
        }
        let strings = [
            (&o.srt_publish_passphrase, &mut c.srt_publish_passphrase),
            (&o.srt_read_passphrase, &mut c.srt_read_passphrase),
            (&o.srt_publish_user, &mut c.srt_publish_user),
            (&o.srt_publish_pass, &mut c.srt_publish_pass),
            (&o.srt_read_user, &mut c.srt_read_user),
            (&o.srt_read_pass, &mut c.srt_read_pass),
            (&o.webrtc_publish_token, &mut c.webrtc_publish_token),
            (&o.webrtc_read_token, &mut c.webrtc_read_token),
            (&o.source, &mut c.source),
        ];
        for (from, to) in strings {
            if let Some(v) = from {
                to.clone_from(v);
            }
        }
        if let Some(v) = o.srt_latency {
            c.srt_latency = v;
        }
        if let Some(v) = o.srt_max_bandwidth {
            c.srt_max_bandwidth = v;
        }
        if let Some(v) = o.srt_payload_size {
            c.srt_payload_size = v;
        }
        Some(c)
    }
}

/// The most specific table for `path`: the exact name, else the matching pattern with the most
/// literal characters (ties go to the name that sorts first, so the choice is stable).
fn best_match<'a, T>(tables: &'a BTreeMap<String, T>, path: &str) -> Option<&'a T> {
    if let Some(t) = tables.get(path) {
        return Some(t);
    }
    tables
        .iter()
        .filter(|(name, _)| name.contains('*') && glob(name.as_bytes(), path.as_bytes()))
        .max_by_key(|(name, _)| (name.len() - name.matches('*').count(), std::cmp::Reverse(*name)))
        .map(|(_, t)| t)
}

/// `*` matches any run of bytes (including `/`); everything else matches itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Formats a TOML error as `line L, column C: message`, with the offending line quoted.
fn describe(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            let src = text.lines().nth(line - 1).unwrap_or("");
            format!(
                "line {line}, column {col}: {}\n  {line} | {src}",
                e.message().trim_end()
            )
        }
        None => e.message().trim_end().to_owned(),
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Applies `SLUICE_SECTION_KEY=value` for every key of the default configuration's sections.
fn apply_env(doc: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<()> {
    let defaults: toml::Table = toml::from_str(DEFAULT_TOML).expect("default config is valid TOML");
    let mut known = BTreeMap::new();
    for (section, table) in &defaults {
        if let toml::Value::Table(t) = table {
            for key in t.keys() {
                let name = format!("SLUICE_{}_{}", section, key).to_uppercase();
                known.insert(name, (section.clone(), key.clone()));
            }
        }
    }
    for (name, raw) in env {
        if !name.starts_with("SLUICE_") {
            continue;
        }
        let Some((section, key)) = known.get(&name) else {
            bail!("unknown environment variable {name}: it matches no configuration key");
        };
        // A value is read as TOML (numbers, booleans, quoted strings); anything else is a string.
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let entry = doc
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        let toml::Value::Table(t) = entry else {
            bail!("{name}: [{section}] is not a table in the configuration file");
        };
        t.insert(key.clone(), value);
    }
    Ok(())
}

/// Parses "500ms", "10s", "2m", "1h" (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. \"500ms\", \"10s\", \"2m\""))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration {s:?}: unit must be ms, s, m or h")),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses ":1935", "0.0.0.0:1935", "[::]:1935", "127.0.0.1:1935".
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse()
        .map_err(|_| format!("invalid listen address {s:?}: expected e.g. \":1935\" or \"127.0.0.1:1935\""))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    parse_listen(&s).map_err(serde::de::Error::custom)
}

fn de_opt_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    parse_listen(&s).map(Some).map_err(serde::de::Error::custom)
}

fn de_variant<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HlsVariant>, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "" => Ok(None),
        "fmp4" => Ok(Some(HlsVariant::Fmp4)),
        "mpegts" => Ok(Some(HlsVariant::Mpegts)),
        _ => Err(serde::de::Error::custom(format!(
            "invalid HLS variant {s:?}: expected \"fmp4\" or \"mpegts\""
        ))),
    }
}

/// Reads a configuration file, naming the file in any error.
pub fn load(file: &std::path::Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Config::parse(&text, std::env::vars()).with_context(|| format!("{}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn default_file_matches_built_in_defaults() {
        assert_eq!(Config::parse(DEFAULT_TOML, no_env()).unwrap(), Config::default());
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("", no_env()).unwrap(), Config::default());
    }

    #[test]
    fn errors_name_the_line() {
        let text = "[rtmp]\nenabled = true\nlisten = \"nonsense\"\n";
        let e = Config::parse(text, no_env()).unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("invalid listen address"), "{e}");
        let e = Config::parse("[hls]\nvariant = \"fmp4\"\nsegment_cont = 3\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("segment_cont"), "{e}");
        let e = Config::parse("[log\n", no_env()).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn env_overrides_keys() {
        let env = vec![
            ("SLUICE_RTMP_LISTEN".to_owned(), "127.0.0.1:19350".to_owned()),
            ("SLUICE_HLS_VARIANT".to_owned(), "mpegts".to_owned()),
            ("SLUICE_HLS_SEGMENT_COUNT".to_owned(), "5".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let c = Config::parse("", env).unwrap();
        assert_eq!(c.rtmp.listen, "127.0.0.1:19350".parse().unwrap());
        assert_eq!(c.hls.variant, HlsVariant::Mpegts);
        assert_eq!(c.hls.segment_count, 5);
        let e = Config::parse("", vec![("SLUICE_RTMP_LISTNE".to_owned(), "x".to_owned())]).unwrap_err();
        assert!(e.to_string().contains("SLUICE_RTMP_LISTNE"));
    }

    #[test]
    fn most_specific_path_wins() {
        let text = r#"
[paths."live/*"]
grace_period = "1s"
[paths."live/cam*"]
grace_period = "2s"
[paths."live/cam1"]
grace_period = "3s"
[paths."*"]
grace_period = "4s"
"#;
        let c = Config::parse(text, no_env()).unwrap();
        assert_eq!(c.path("live/cam1").unwrap().grace_period, Duration::from_secs(3));
        assert_eq!(c.path("live/cam2").unwrap().grace_period, Duration::from_secs(2));
        assert_eq!(c.path("live/x").unwrap().grace_period, Duration::from_secs(1));
        assert_eq!(c.path("other/a/b").unwrap().grace_period, Duration::from_secs(4));
        let c = Config::parse("[paths.\"live/cam1\"]\n", no_env()).unwrap();
        assert!(c.path("live/cam2").is_none());
        assert!(!c.publishing_open());
    }

    #[test]
    fn glob_matches() {
        assert!(glob(b"live/*", b"live/a/b"));
        assert!(glob(b"*cam*", b"live/cam1"));
        assert!(!glob(b"live/*", b"other/a"));
        assert!(glob(b"a*b*c", b"aXXbYYc"));
        assert!(!glob(b"a*b*c", b"aXXbYY"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
