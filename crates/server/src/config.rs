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
    pub api: ApiConfig,
    pub metrics: MetricsConfig,
    pub webhooks: WebhooksConfig,
    pub playback: PlaybackConfig,
    /// Access control: the method, users, IP lists, signed links (`auth/`, docs/security.md).
    pub auth: crate::auth::config::AuthConfig,
    pub path_defaults: PathConfig,
    /// Every `[paths."NAME"]` table, resolved: `[path_defaults]` merged with the table (see
    /// [`PathConfig`]). Deserializing a document gives the tables unmerged;
    /// [`Config::parse`] resolves them.
    pub paths: BTreeMap<String, PathConfig>,
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
    /// RTMPS listener, on when `tls_cert` and `tls_key` are both set (PEM files, reloaded when
    /// they change: `tls.rs`).
    #[serde(deserialize_with = "de_listen")]
    pub tls_listen: SocketAddr,
    pub tls_cert: String,
    pub tls_key: String,
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
    /// Limits of every HTTP listener (this one, WebRTC's, the API's): see `http_serve`.
    #[serde(deserialize_with = "de_duration")]
    pub header_timeout: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections_per_ip: usize,
    /// HTTP/2 without TLS (prior knowledge, "h2c") on plain-HTTP listeners, besides HTTP/1.1.
    pub h2c: bool,
    /// HTTPS on this port when both are set (PEM files, reloaded when they change: `tls.rs`).
    pub tls_cert: String,
    pub tls_key: String,
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
    /// HTTPS on this port when both are set (PEM files, reloaded when they change: `tls.rs`).
    pub tls_cert: String,
    pub tls_key: String,
}

/// The control API (paths, sessions, kick).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "de_listen")]
    pub listen: SocketAddr,
    /// HTTPS on this port when both are set (PEM files, reloaded when they change: `tls.rs`).
    pub tls_cert: String,
    pub tls_key: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9997)),
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

/// Prometheus metrics (`GET /metrics`, docs/metrics.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "de_listen")]
    pub listen: SocketAddr,
    /// At most this many sessions get per-session series in one scrape; the others are counted.
    pub max_session_series: usize,
    /// HTTPS on this port when both are set (PEM files, reloaded when they change: `tls.rs`).
    pub tls_cert: String,
    pub tls_key: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9998)),
            max_session_series: 1000,
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

/// `[playback]`: recordings served over HTTP (`/list`, `/get`, `/vod.m3u8`, docs/recording.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PlaybackConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "de_listen")]
    pub listen: SocketAddr,
    /// HTTPS on this port when both are set (PEM files, reloaded when they change: `tls.rs`).
    pub tls_cert: String,
    pub tls_key: String,
}

impl Default for PlaybackConfig {
    fn default() -> Self {
        PlaybackConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9996)),
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

/// `[webhooks]`: every event POSTed as JSON to each URL (`webhooks.rs`, docs/events.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// `http://` or `https://` receivers; empty sends nothing.
    pub urls: Vec<String>,
    /// Key of the `X-Sluice-Signature` HMAC-SHA256; "" sends no signature. A secret.
    pub secret: String,
    /// Per request, connecting included.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Further attempts after a failed one (0: one attempt).
    pub retries: u32,
    /// Wait before the first retry; doubled for each next one (up to a minute).
    #[serde(deserialize_with = "de_duration")]
    pub retry_backoff: Duration,
    /// Events waiting per URL; when full, new ones are dropped (counted and logged).
    pub queue: usize,
    /// Event types to send (see docs/events.md); empty sends every type.
    pub events: Vec<String>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            urls: Vec::new(),
            secret: String::new(),
            timeout: Duration::from_secs(5),
            retries: 5,
            retry_backoff: Duration::from_secs(1),
            queue: 1000,
            events: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HlsVariant {
    /// LL-HLS: fMP4 segments and their parts (docs/hls.md).
    #[serde(rename = "low-latency")]
    LowLatency,
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
    /// LL-HLS part target (`EXT-X-PART-INF:PART-TARGET`).
    #[serde(deserialize_with = "de_duration")]
    pub part_duration: Duration,
}

/// Settings of a path: `[path_defaults]` merged with the best-matching `[paths."NAME"]` table.
///
/// The one declaration of every per-path key. A `[paths."NAME"]` table has the same keys and
/// sub-tables, every one optional: the document's `[path_defaults]` table and the path's table
/// are deep-merged (the path's keys win, sub-table by sub-table, key by key) and the result is
/// deserialized into this struct, missing keys taking the built-in defaults below.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PathConfig {
    #[serde(deserialize_with = "de_duration")]
    pub grace_period: Duration,
    pub reader_queue: usize,
    pub reader_max_lags: u32,
    pub gop_cache_max_bytes: usize,
    /// Pull the path from another server (`srt://...` caller, `rtmp://`, `rtmps://`,
    /// `http(s)://…m3u8` HLS with MPEG-TS or fMP4 segments); "" = wait for a publisher.
    #[serde(deserialize_with = "de_source")]
    pub source: String,
    /// Pull `source` only while someone reads the path (every kind of source): the first reader
    /// starts it and waits for the first frame, up to `source_on_demand_start_timeout`; it stops
    /// `source_on_demand_close_after` the last reader left.
    pub source_on_demand: bool,
    #[serde(deserialize_with = "de_duration")]
    pub source_on_demand_start_timeout: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub source_on_demand_close_after: Duration,
    pub srt: PathSrt,
    pub hls: PathHls,
    pub access: PathAccess,
    pub health: PathHealthConfig,
    pub run_on: PathRunOn,
    pub record: PathRecord,
    pub push: PathPush,
    pub transcode: crate::transcode::PathTranscode,
}

/// `[path_defaults.srt]`, `[paths."NAME".srt]`: SRT settings of a path's connections.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PathSrt {
    #[serde(deserialize_with = "de_duration")]
    pub latency: Duration,
    pub max_bandwidth: i64,
    #[serde(deserialize_with = "de_payload_size")]
    pub payload_size: u32,
    /// Encryption passphrase publishers (and readers) must use; "" = none.
    #[serde(deserialize_with = "de_passphrase")]
    pub publish_passphrase: String,
    #[serde(deserialize_with = "de_passphrase")]
    pub read_passphrase: String,
}

/// `[path_defaults.hls]`, `[paths."NAME".hls]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PathHls {
    /// `None` ("") uses `[hls] variant`.
    #[serde(deserialize_with = "de_variant")]
    pub variant: Option<HlsVariant>,
}

/// `[path_defaults.access]`, `[paths."NAME".access]`: the path's own credentials and address
/// lists, which the access policy (`auth/`) asks of publishers and readers on every protocol
/// before the `[auth]` method. Empty: none asked.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PathAccess {
    pub publish_user: String,
    pub publish_pass: String,
    pub read_user: String,
    pub read_pass: String,
    pub publish_token: String,
    pub read_token: String,
    /// Addresses (or networks) that may publish or read this path; empty: any.
    #[serde(deserialize_with = "crate::auth::config::de_nets")]
    pub allow_ips: Vec<ipnet::IpNet>,
    /// Addresses refused on this path.
    #[serde(deserialize_with = "crate::auth::config::de_nets")]
    pub deny_ips: Vec<ipnet::IpNet>,
}

/// `[path_defaults.run_on]`, `[paths."NAME".run_on]`: commands run on the path's events
/// (`run_on.rs`, docs/events.md), each with `sh -c`; "" runs nothing.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PathRunOn {
    /// Runs while the path is published; stopped (SIGTERM, then SIGKILL) when it is not.
    pub publish: String,
    /// Start `publish` again (with backoff) when it exits while the path is still published.
    pub publish_restart: bool,
    /// Run once when the publisher leaves.
    pub unpublish: String,
    /// Run once when a reader starts reading the path.
    pub read: String,
    /// Run once when a reader stops.
    pub unread: String,
    /// Run once when a recording segment is complete.
    pub record_segment_complete: String,
}

/// `[path_defaults.push]`, `[paths."NAME".push]`: destinations the path is pushed to (the
/// `push` outputs, `push.rs`; docs/restream.md). Each URL is one supervised destination.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PathPush {
    /// `rtmp://HOST[:PORT]/APP/KEY`, `rtmps://...`, `srt://HOST:PORT?streamid=..&passphrase=..`,
    /// `http(s)://.../whip` (WHIP). Secrets: masked in logs, the API, events.
    #[serde(deserialize_with = "de_push_urls")]
    pub urls: Vec<String>,
    /// Send H.265, AV1 and VP9 video to RTMP destinations as enhanced RTMP; false: such a
    /// stream is refused for RTMP destinations (they take H.264).
    pub enhanced_rtmp: bool,
    /// `rtmps://` and `https://` (WHIP) destinations: trust only this CA (PEM file) instead of
    /// the system roots.
    pub ca_file: String,
    /// WHIP destinations: sent as `Authorization: Bearer TOKEN` to every WHIP URL of the path;
    /// "" = none. A secret: masked in the configuration API.
    pub bearer_token: String,
    /// Reconnect backoff: the first wait, doubled after each failure up to `retry_max`
    /// (with up to 20 % jitter); back to `retry_min` after a minute live.
    #[serde(deserialize_with = "de_duration")]
    pub retry_min: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub retry_max: Duration,
    /// Connecting and being accepted must take at most this.
    #[serde(deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// A destination that takes nothing for this long is dropped and retried.
    #[serde(deserialize_with = "de_duration")]
    pub stall_timeout: Duration,
}

impl Default for PathPush {
    fn default() -> Self {
        PathPush {
            urls: Vec::new(),
            enhanced_rtmp: true,
            ca_file: String::new(),
            bearer_token: String::new(),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(10),
        }
    }
}

/// Push URLs: each must parse (its stream key masked in the error).
fn de_push_urls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let urls = Vec::<String>::deserialize(d)?;
    for u in &urls {
        crate::push::check_url(u).map_err(serde::de::Error::custom)?;
    }
    Ok(urls)
}

/// `[path_defaults.record]`, `[paths."NAME".record]`: recording of the path (the `record`
/// output, `sluice-record`; docs/recording.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PathRecord {
    pub enabled: bool,
    /// `fmp4` (fragmented MP4) or `mpegts`.
    pub format: RecordFormat,
    /// Directory and file name pattern, without extension: `%path`, `%Y %m %d %H %M %S`,
    /// `%f` (microseconds), `%s` (Unix seconds).
    pub path: String,
    /// Render the calendar fields of `path` in the server's time zone instead of UTC.
    pub local_time: bool,
    /// A new file at the first keyframe past this.
    #[serde(deserialize_with = "de_duration")]
    pub segment_duration: Duration,
    /// A fragment is written at least this often.
    #[serde(deserialize_with = "de_duration")]
    pub part_duration: Duration,
    /// Delete segments older than this; "0s" keeps them.
    #[serde(deserialize_with = "de_duration")]
    pub max_age: Duration,
    /// Keep the path's recordings under this size (`"500MB"`, `"20GiB"`, or bytes); 0: no cap.
    #[serde(deserialize_with = "de_size")]
    pub max_size: u64,
    /// After a write error (disk full...), try again this long after.
    #[serde(deserialize_with = "de_duration")]
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    Fmp4,
    Mpegts,
}

impl Default for PathRecord {
    fn default() -> Self {
        PathRecord {
            enabled: false,
            format: RecordFormat::Fmp4,
            path: "./recordings/%path/%Y-%m-%d_%H-%M-%S-%f".into(),
            local_time: false,
            segment_duration: Duration::from_secs(3600),
            part_duration: Duration::from_secs(1),
            max_age: Duration::ZERO,
            max_size: 0,
            retry_after: Duration::from_secs(5),
        }
    }
}

impl PathRecord {
    /// The recorder's settings; an error names what is wrong.
    pub fn to_record_config(&self) -> Result<sluice_record::RecordConfig, String> {
        let pattern =
            sluice_record::Pattern::new(&self.path, self.local_time).map_err(|e| format!("path: {e}"))?;
        if self.segment_duration < Duration::from_secs(1) {
            return Err("segment_duration: at least 1s".into());
        }
        if self.part_duration < Duration::from_millis(100) || self.part_duration > self.segment_duration {
            return Err("part_duration: at least 100ms and at most segment_duration".into());
        }
        if self.retry_after < Duration::from_millis(100) {
            return Err("retry_after: at least 100ms".into());
        }
        Ok(sluice_record::RecordConfig {
            format: match self.format {
                RecordFormat::Fmp4 => sluice_record::Format::Fmp4,
                RecordFormat::Mpegts => sluice_record::Format::MpegTs,
            },
            pattern,
            segment_duration: self.segment_duration,
            part_duration: self.part_duration,
            max_age: (!self.max_age.is_zero()).then_some(self.max_age),
            max_bytes: (self.max_size > 0).then_some(self.max_size),
            retry_after: self.retry_after,
        })
    }
}

/// `[path_defaults.health]`, `[paths."NAME".health]`: the path's stream health checks (the
/// `health` output, `health.rs`: stalls, audio presence and silence, fps, keyframe interval,
/// timestamps).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PathHealthConfig {
    /// false: no health output for the path (the API shows `"health": null`).
    pub enabled: bool,
    /// Decode the audio to tell silence from sound (AAC, Opus); false: silence is "unknown".
    pub silence_detection: bool,
    /// Audio quieter than this (RMS, dBFS) counts as silent: `"-60dB"` or `-60`.
    #[serde(deserialize_with = "de_db")]
    pub silence_level: f32,
    /// Quieter than `silence_level` for this long (of audio) makes the audio "silent".
    #[serde(deserialize_with = "de_duration")]
    pub silence_after: Duration,
    /// No media for this long makes the stream "stalled" (and a track without frames "absent").
    #[serde(deserialize_with = "de_duration")]
    pub stall_after: Duration,
}

impl Default for PathHealthConfig {
    fn default() -> Self {
        PathHealthConfig {
            enabled: true,
            silence_detection: true,
            silence_level: -60.0,
            silence_after: Duration::from_secs(5),
            stall_after: Duration::from_secs(5),
        }
    }
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
            api: ApiConfig::default(),
            metrics: MetricsConfig::default(),
            webhooks: WebhooksConfig::default(),
            playback: PlaybackConfig::default(),
            auth: Default::default(),
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
            tls_listen: SocketAddr::from(([0, 0, 0, 0], 1936)),
            tls_cert: String::new(),
            tls_key: String::new(),
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
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 16384,
            max_connections_per_ip: 256,
            h2c: false,
            tls_cert: String::new(),
            tls_key: String::new(),
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
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

impl Default for HlsSection {
    fn default() -> Self {
        HlsSection {
            variant: HlsVariant::LowLatency,
            segment_duration: Duration::from_secs(1),
            segment_count: 7,
            ready_timeout: Duration::from_secs(10),
            part_duration: Duration::from_millis(200),
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
            source: String::new(),
            source_on_demand: false,
            source_on_demand_start_timeout: Duration::from_secs(10),
            source_on_demand_close_after: Duration::from_secs(10),
            srt: PathSrt::default(),
            hls: PathHls::default(),
            access: PathAccess::default(),
            health: PathHealthConfig::default(),
            run_on: PathRunOn::default(),
            record: PathRecord::default(),
            push: PathPush::default(),
            transcode: Default::default(),
        }
    }
}

impl Default for PathSrt {
    fn default() -> Self {
        PathSrt {
            latency: Duration::from_millis(200),
            max_bandwidth: 0,
            payload_size: 1316,
            publish_passphrase: String::new(),
            read_passphrase: String::new(),
        }
    }
}

impl Config {
    /// Parses a TOML document, then applies `SLUICE_*` variables from `env`, then resolves the
    /// `[paths]` tables over `[path_defaults]`.
    pub fn parse(text: &str, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Config> {
        Self::parse_layers(None, text, None, env)
    }

    /// Like [`parse`](Self::parse), with a state file laid over the document before the
    /// environment (see `crate::reload` for what a state file holds). `name` and the state's
    /// name prefix the errors found in each, with their lines.
    pub fn parse_layers(
        name: Option<&str>,
        text: &str,
        state: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let prefix = |n: Option<&str>| n.map(|n| format!("{n}: ")).unwrap_or_default();
        let mut doc: toml::Table =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}{}", prefix(name), describe(text, &e)))?;
        if let Some((sname, stext)) = state {
            let sdoc: toml::Table =
                toml::from_str(stext).map_err(|e| anyhow::anyhow!("{sname}: {}", describe(stext, &e)))?;
            crate::reload::overlay_state(&mut doc, &sdoc).map_err(|e| anyhow::anyhow!("{sname}: {e}"))?;
        }
        apply_env(&mut doc, env)?;
        let locate = |e: toml::de::Error| {
            // The document is valid TOML here; re-parse the original texts to locate the error.
            if let Err(e2) = toml::from_str::<Config>(text) {
                return anyhow::anyhow!("{}{}", prefix(name), describe(text, &e2));
            }
            if let Some((sname, stext)) = state {
                let rest = crate::reload::without_state_table(stext);
                if let Err(e2) = toml::from_str::<Config>(&rest) {
                    return anyhow::anyhow!("{sname}: {}", describe(&rest, &e2));
                }
            }
            anyhow::anyhow!("in an SLUICE_* environment variable: {}", e.message().trim_end())
        };
        // Every table on its own: key names, types and values checked, with their lines.
        let mut config: Config = doc.clone().try_into().map_err(locate)?;
        // Then the one merge rule: [path_defaults] under each [paths."NAME"] table.
        let defaults = match doc.get("path_defaults") {
            Some(toml::Value::Table(t)) => t.clone(),
            _ => toml::Table::new(),
        };
        if let Some(toml::Value::Table(paths)) = doc.get("paths") {
            for (name, table) in paths {
                let toml::Value::Table(table) = table else {
                    continue;
                };
                let mut merged = defaults.clone();
                deep_merge(&mut merged, table);
                let resolved: PathConfig = toml::Value::Table(merged).try_into().map_err(locate)?;
                config.paths.insert(name.clone(), resolved);
            }
        }
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
        if self.rtmp.tls_cert.is_empty() != self.rtmp.tls_key.is_empty() {
            bail!("rtmp.tls_cert and rtmp.tls_key: set both to serve RTMPS, or neither");
        }
        for (section, cert, key) in [
            ("http", &self.http.tls_cert, &self.http.tls_key),
            ("webrtc", &self.webrtc.tls_cert, &self.webrtc.tls_key),
            ("api", &self.api.tls_cert, &self.api.tls_key),
            ("playback", &self.playback.tls_cert, &self.playback.tls_key),
            ("metrics", &self.metrics.tls_cert, &self.metrics.tls_key),
        ] {
            if cert.is_empty() != key.is_empty() {
                bail!("{section}.tls_cert and {section}.tls_key: set both to serve HTTPS, or neither");
            }
        }
        if self.hls.segment_duration < Duration::from_millis(100) {
            bail!("hls.segment_duration must be at least 100ms");
        }
        if self.hls.part_duration < Duration::from_millis(50)
            || self.hls.part_duration > self.hls.segment_duration
        {
            bail!("hls.part_duration must be at least 50ms and at most hls.segment_duration");
        }
        self.validate_webhooks()?;
        self.auth.validate()?;
        self.path_defaults.transcode.validate("path_defaults")?;
        for (name, p) in &self.paths {
            p.transcode.validate(&format!("paths.{name:?}"))?;
        }
        // Values are checked where they are read (with their line); what is left are the rules
        // across tables. Checked again here for configurations built in code or from the env.
        let tables = std::iter::once(("path_defaults".to_owned(), &self.path_defaults))
            .chain(self.paths.iter().map(|(n, c)| (format!("paths.{n:?}"), c)));
        for (name, c) in tables {
            for (key, pass) in [
                ("srt.publish_passphrase", &c.srt.publish_passphrase),
                ("srt.read_passphrase", &c.srt.read_passphrase),
            ] {
                check_passphrase(pass).map_err(|e| anyhow::anyhow!("{name}.{key}: {e}"))?;
            }
            check_payload_size(c.srt.payload_size)
                .map_err(|e| anyhow::anyhow!("{name}.srt.payload_size: {e}"))?;
            check_source(&c.source).map_err(|e| anyhow::anyhow!("{name}.source: {e}"))?;
            let a = &c.access;
            for (what, user, pass) in [
                ("publish", &a.publish_user, &a.publish_pass),
                ("read", &a.read_user, &a.read_pass),
            ] {
                if user.is_empty() && !pass.is_empty() {
                    bail!("{name}.access.{what}_pass is set without {what}_user: set both (or use {what}_token)");
                }
            }
            check_health(&c.health).map_err(|e| anyhow::anyhow!("{name}.health.{e}"))?;
            c.record
                .to_record_config()
                .map_err(|e| anyhow::anyhow!("{name}.record.{e}"))?;
            let p = &c.push;
            if p.retry_min < Duration::from_millis(100) || p.retry_max < p.retry_min {
                bail!("{name}.push: retry_min must be at least 100ms and retry_max at least retry_min");
            }
            if p.connect_timeout < Duration::from_millis(100) || p.stall_timeout < Duration::from_millis(100)
            {
                bail!("{name}.push: connect_timeout and stall_timeout must be at least 100ms");
            }
            if c.source_on_demand && c.source.is_empty() {
                bail!("{name}.source_on_demand: the path has no source to pull on demand");
            }
            if !c.source.is_empty() && (name == "path_defaults" || name.contains('*')) {
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

    fn validate_webhooks(&self) -> anyhow::Result<()> {
        let w = &self.webhooks;
        for (i, url) in w.urls.iter().enumerate() {
            let lower = url.to_ascii_lowercase();
            let rest = lower
                .strip_prefix("http://")
                .or_else(|| lower.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                bail!("webhooks.urls[{i}]: {url:?} is not an http:// or https:// URL");
            }
        }
        if !(1..=1_000_000).contains(&w.queue) {
            bail!("webhooks.queue must be between 1 and 1000000, not {}", w.queue);
        }
        if w.timeout.is_zero() {
            bail!("webhooks.timeout must be more than 0s");
        }
        if w.retries > 100 {
            bail!("webhooks.retries must be at most 100, not {}", w.retries);
        }
        for e in &w.events {
            if !crate::events::TYPES.contains(&e.as_str()) {
                bail!(
                    "webhooks.events: unknown event type {e:?}; the types are {}",
                    crate::events::TYPES.join(", ")
                );
            }
        }
        Ok(())
    }

    /// Whether any path may be published (no `[paths]` table).
    pub fn publishing_open(&self) -> bool {
        self.paths.is_empty()
    }

    /// The settings of `path`, or `None` when `[paths]` tables exist and none matches it.
    pub fn path(&self, path: &str) -> Option<&PathConfig> {
        if self.paths.is_empty() {
            return Some(&self.path_defaults);
        }
        best_match(&self.paths, path)
    }

    /// The HLS variant of a path's settings (its own, else `[hls] variant`).
    pub fn hls_variant(&self, p: &PathConfig) -> HlsVariant {
        p.hls.variant.unwrap_or(self.hls.variant)
    }
}

/// Merges `over` into `base`: tables key by key (recursively), any other value replaced.
fn deep_merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => deep_merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The most specific table for `path`: the exact name, else the matching pattern with the most
/// literal characters (ties go to the name that sorts first, so the choice is stable).
fn best_match<'a, T>(tables: &'a BTreeMap<String, T>, path: &str) -> Option<&'a T> {
    best_match_name(tables, path).map(|name| &tables[name])
}

/// The name of the table [`Config::path`] takes for `path` (see `best_match`).
pub fn best_match_name<'a, T>(tables: &'a BTreeMap<String, T>, path: &str) -> Option<&'a str> {
    if let Some((name, _)) = tables.get_key_value(path) {
        return Some(name);
    }
    tables
        .keys()
        .filter(|name| name.contains('*') && glob(name.as_bytes(), path.as_bytes()))
        .max_by_key(|name| (name.len() - name.matches('*').count(), std::cmp::Reverse(*name)))
        .map(String::as_str)
}

/// `*` matches any run of bytes (including `/`); everything else matches itself.
pub(crate) fn glob(pattern: &[u8], text: &[u8]) -> bool {
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

/// Formats a TOML error as `line L, column C: message`, with the offending line quoted, and
/// where a key of the old flat layout is refused, where it went.
fn describe(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim_end();
    let hint = moved_key_hint(msg).unwrap_or_default();
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            let src = text.lines().nth(line - 1).unwrap_or("");
            format!("line {line}, column {col}: {msg}{hint}\n  {line} | {src}")
        }
        None => format!("{msg}{hint}"),
    }
}

/// Per-path keys of the flat layout (before sub-tables) and where they are now.
pub const MOVED_KEYS: &[(&str, &str)] = &[
    ("hls_variant", "hls.variant"),
    ("srt_latency", "srt.latency"),
    ("srt_max_bandwidth", "srt.max_bandwidth"),
    ("srt_payload_size", "srt.payload_size"),
    ("srt_publish_passphrase", "srt.publish_passphrase"),
    ("srt_read_passphrase", "srt.read_passphrase"),
    ("srt_publish_user", "access.publish_user"),
    ("srt_publish_pass", "access.publish_pass"),
    ("srt_read_user", "access.read_user"),
    ("srt_read_pass", "access.read_pass"),
    ("webrtc_publish_token", "access.publish_token"),
    ("webrtc_read_token", "access.read_token"),
];

fn moved_key_hint(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    let key = &rest[..rest.find('`')?];
    let (_, new) = MOVED_KEYS.iter().find(|(old, _)| *old == key)?;
    let (table, new_key) = new.split_once('.')?;
    Some(format!(
        "; `{key}` moved: write `{new_key}` in the path's [{table}] sub-table, e.g. [paths.\"NAME\".{table}] or [path_defaults.{table}] (see docs/configuration.md)"
    ))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The environment variable of every key of the default configuration: `SLUICE_` and the key's
/// table names and name joined by `_`, upper case (`[path_defaults.srt] latency` is
/// `SLUICE_PATH_DEFAULTS_SRT_LATENCY`), mapped to that key's table path and name.
pub fn env_names() -> BTreeMap<String, Vec<String>> {
    fn walk(prefix: &[String], t: &toml::Table, out: &mut BTreeMap<String, Vec<String>>) {
        for (k, v) in t {
            let mut keys = prefix.to_vec();
            keys.push(k.clone());
            match v {
                toml::Value::Table(sub) => walk(&keys, sub, out),
                _ if prefix.is_empty() => {}
                _ => {
                    out.insert(format!("SLUICE_{}", keys.join("_")).to_uppercase(), keys);
                }
            }
        }
    }
    let defaults: toml::Table = toml::from_str(DEFAULT_TOML).expect("default config is valid TOML");
    let mut out = BTreeMap::new();
    walk(&[], &defaults, &mut out);
    out
}

/// Applies `SLUICE_...=value` for every key of the default configuration (see [`env_names`]).
pub(crate) fn apply_env(
    doc: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<()> {
    let mut known: Option<BTreeMap<String, Vec<String>>> = None;
    for (name, raw) in env {
        if !name.starts_with("SLUICE_") {
            continue;
        }
        let known = known.get_or_insert_with(env_names);
        let Some(keys) = known.get(&name) else {
            bail!("unknown environment variable {name}: it matches no configuration key");
        };
        // A value is read as TOML (numbers, booleans, quoted strings); anything else is a string.
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let (key, tables) = keys.split_last().expect("a key has a table");
        let mut t = &mut *doc;
        for (i, section) in tables.iter().enumerate() {
            let entry = t
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(Default::default()));
            let toml::Value::Table(sub) = entry else {
                bail!(
                    "{name}: [{}] is not a table in the configuration file",
                    tables[..=i].join(".")
                );
            };
            t = sub;
        }
        t.insert(key.clone(), value);
    }
    Ok(())
}

/// Parses "500ms", "10s", "2m", "1h", "7d" (or a bare number of seconds).
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
        "d" => n * 86_400.0,
        _ => return Err(format!("invalid duration {s:?}: unit must be ms, s, m, h or d")),
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

pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn check_passphrase(s: &str) -> Result<(), String> {
    if !s.is_empty() && !(10..=79).contains(&s.len()) {
        return Err("an SRT passphrase is 10 to 79 characters long".into());
    }
    Ok(())
}

fn check_payload_size(n: u32) -> Result<(), String> {
    if !(188..=1456).contains(&n) {
        return Err(format!("the SRT payload size is 188 to 1456 bytes, not {n}"));
    }
    Ok(())
}

fn check_source(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if s.starts_with("srt://") {
        return sluice_srt::check_caller_url(s);
    }
    if s.starts_with("rtmp://") || s.starts_with("rtmps://") {
        return sluice_rtmp::client::RtmpUrl::parse(s).map(|_| ());
    }
    if s.starts_with("http://") || s.starts_with("https://") {
        return reqwest::Url::parse(s)
            .map(|_| ())
            .map_err(|e| format!("bad HLS source URL: {e}"));
    }
    Err(format!(
        "a source is an srt://, rtmp://, rtmps:// or http(s):// (HLS) URL, not {:?}",
        crate::push::masked_url(s)
    ))
}

fn check_health(h: &PathHealthConfig) -> Result<(), String> {
    check_db(h.silence_level).map_err(|e| format!("silence_level: {e}"))?;
    if h.silence_after < Duration::from_millis(100) {
        return Err("silence_after: at least 100ms".into());
    }
    if h.stall_after < Duration::from_millis(500) {
        return Err("stall_after: at least 500ms".into());
    }
    Ok(())
}

fn check_db(db: f32) -> Result<(), String> {
    if !(-100.0..=0.0).contains(&db) {
        return Err(format!("a level is -100 to 0 dBFS, not {db}"));
    }
    Ok(())
}

/// Parses a level in dBFS: "-60dB", "-60 dBFS", "-60".
pub fn parse_db(s: &str) -> Result<f32, String> {
    let t = s.trim();
    let num = ["dBFS", "dbfs", "dB", "db"]
        .iter()
        .find_map(|unit| t.strip_suffix(unit))
        .unwrap_or(t)
        .trim();
    let db: f32 = num
        .parse()
        .map_err(|_| format!("invalid level {s:?}: expected e.g. \"-60dB\" or -60 (dBFS)"))?;
    check_db(db)?;
    Ok(db)
}

/// A level in dBFS, written as a number (-60, -60.5) or a string ("-60dB").
fn de_db<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = f32;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a level in dBFS, e.g. \"-60dB\" or -60")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<f32, E> {
            let db = v.clamp(-1000, 1000) as f32;
            check_db(db).map_err(E::custom)?;
            Ok(db)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<f32, E> {
            self.visit_i64(v.min(1000) as i64)
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f32, E> {
            let db = v as f32;
            if !db.is_finite() {
                return Err(E::custom(format!("invalid level {v}")));
            }
            check_db(db).map_err(E::custom)?;
            Ok(db)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<f32, E> {
            parse_db(v).map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

/// A size in bytes: an integer, or a string with a unit (`"500MB"`, `"20GiB"`, `"1.5TB"`).
fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(n),
        Raw::S(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like \"500MB\", \"20GiB\" or a number of bytes)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    Ok((n * mult).round() as u64)
}

fn de_passphrase<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_passphrase(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn de_payload_size<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    check_payload_size(n).map_err(serde::de::Error::custom)?;
    Ok(n)
}

fn de_source<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    check_source(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
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
        "low-latency" => Ok(Some(HlsVariant::LowLatency)),
        "fmp4" => Ok(Some(HlsVariant::Fmp4)),
        "mpegts" => Ok(Some(HlsVariant::Mpegts)),
        _ => Err(serde::de::Error::custom(format!(
            "invalid HLS variant {s:?}: expected \"low-latency\", \"fmp4\" or \"mpegts\""
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
    fn a_sub_table_key_overrides_only_that_key() {
        let text = r#"
[path_defaults]
grace_period = "5s"
[path_defaults.srt]
latency = "300ms"
payload_size = 1000
[path_defaults.access]
read_token = "everyone"

[paths."live/*".srt]
latency = "800ms"
[paths."live/*".access]
publish_user = "cam"
publish_pass = "pw"
[paths."other/*"]
"#;
        let c = Config::parse(text, no_env()).unwrap();
        let p = c.path("live/a").unwrap();
        assert_eq!(p.srt.latency, Duration::from_millis(800));
        assert_eq!(
            p.srt.payload_size, 1000,
            "the other srt keys come from [path_defaults.srt]"
        );
        assert_eq!(
            p.srt.max_bandwidth, 0,
            "and the built-in default where neither sets one"
        );
        assert_eq!(p.grace_period, Duration::from_secs(5));
        assert_eq!(p.access.publish_user, "cam");
        assert_eq!(p.access.read_token, "everyone");
        let o = c.path("other/b").unwrap();
        assert_eq!(o.srt.latency, Duration::from_millis(300));
        assert_eq!(o.access.publish_user, "");
        assert_eq!(c.path_defaults.srt.latency, Duration::from_millis(300));
        let c = Config::parse("[paths.\"ts/*\".hls]\nvariant = \"mpegts\"\n", no_env()).unwrap();
        assert_eq!(c.hls_variant(c.path("ts/x").unwrap()), HlsVariant::Mpegts);
        assert_eq!(c.hls_variant(&c.path_defaults), HlsVariant::LowLatency);
    }

    #[test]
    fn errors_in_path_sub_tables_name_the_line() {
        let text = "[paths.\"live/*\"]\ngrace_period = \"1s\"\n\n[paths.\"x\".srt]\nmax_bandwidth = 0\nlatency = \"fast\"\n";
        let e = Config::parse(text, no_env()).unwrap_err().to_string();
        assert!(e.contains("line 6") && e.contains("invalid duration"), "{e}");
        let text = "[paths.\"x\".srt]\npublish_passphrase = \"short\"\n";
        let e = Config::parse(text, no_env()).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("10 to 79"), "{e}");
        let text = "[paths.\"x\"]\n[paths.\"x\".srt]\npayload_size = 9000\n";
        let e = Config::parse(text, no_env()).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("188 to 1456"), "{e}");
        let e = Config::parse("[paths.\"x\"]\nsource = \"rtmp://a/b\"\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("needs rtmp://HOST/APP/STREAM"),
            "{e}"
        );
        let e = Config::parse("[paths.\"x\"]\nsource = \"ftp://a/b\"\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("srt://, rtmp://, rtmps:// or http(s)://"),
            "{e}"
        );
        let e = Config::parse("[paths.\"x/*\"]\nsource = \"srt://a:1\"\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not to defaults or a pattern"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_everywhere() {
        let e = Config::parse(
            "[paths.\"x\".access]\nread_user = \"a\"\nread_usr = \"b\"\n",
            no_env(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 3") && e.contains("read_usr"), "{e}");
        let e = Config::parse("[path_defaults.webrtc]\nx = 1\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("webrtc"), "{e}");
        // A key of the old flat layout says where it went.
        let e = Config::parse("[paths.\"live/*\"]\n\nsrt_publish_user = \"a\"\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("srt_publish_user"), "{e}");
        assert!(
            e.contains("write `publish_user` in the path's [access] sub-table"),
            "{e}"
        );
        let e = Config::parse("[path_defaults]\nhls_variant = \"mpegts\"\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`variant` in the path's [hls] sub-table"), "{e}");
    }

    #[test]
    fn env_overrides_nested_keys() {
        let env = vec![
            ("SLUICE_PATH_DEFAULTS_SRT_LATENCY".to_owned(), "500ms".to_owned()),
            (
                "SLUICE_PATH_DEFAULTS_ACCESS_READ_TOKEN".to_owned(),
                "t0k".to_owned(),
            ),
            ("SLUICE_PATH_DEFAULTS_GRACE_PERIOD".to_owned(), "3s".to_owned()),
        ];
        let text = "[path_defaults.srt]\npayload_size = 1000\n[paths.\"live/*\".srt]\nmax_bandwidth = 5\n";
        let c = Config::parse(text, env).unwrap();
        assert_eq!(c.path_defaults.srt.latency, Duration::from_millis(500));
        assert_eq!(c.path_defaults.srt.payload_size, 1000);
        let p = c.path("live/a").unwrap();
        assert_eq!(
            (p.srt.latency, p.srt.max_bandwidth),
            (Duration::from_millis(500), 5)
        );
        assert_eq!(p.access.read_token, "t0k");
        assert_eq!(p.grace_period, Duration::from_secs(3));
        let bad = vec![("SLUICE_PATH_DEFAULTS_SRT_LATENCY".to_owned(), "soon".to_owned())];
        let e = Config::parse("", bad).unwrap_err().to_string();
        assert!(e.contains("environment") && e.contains("invalid duration"), "{e}");
        let e = Config::parse(
            "",
            vec![("SLUICE_PATH_DEFAULTS_SRT_USER".to_owned(), "x".to_owned())],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("SLUICE_PATH_DEFAULTS_SRT_USER"), "{e}");
    }

    #[test]
    fn every_key_has_one_environment_name() {
        let names = env_names();
        for want in [
            "SLUICE_RTMP_LISTEN",
            "SLUICE_HLS_VARIANT",
            "SLUICE_HTTP_HEADER_TIMEOUT",
            "SLUICE_PATH_DEFAULTS_GRACE_PERIOD",
            "SLUICE_PATH_DEFAULTS_SRT_PUBLISH_PASSPHRASE",
            "SLUICE_PATH_DEFAULTS_HLS_VARIANT",
            "SLUICE_PATH_DEFAULTS_ACCESS_PUBLISH_USER",
        ] {
            assert!(names.contains_key(want), "{want} missing from {names:?}");
        }
        // No two keys collide on one name (the map would have dropped one).
        fn count(t: &toml::Table) -> usize {
            t.values()
                .map(|v| match v {
                    toml::Value::Table(s) => count(s),
                    _ => 1,
                })
                .sum()
        }
        let doc: toml::Table = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(names.len(), count(&doc));
    }

    #[test]
    fn record_keys() {
        let text = r#"
[path_defaults.record]
enabled = true
max_size = "2GiB"
[paths."live/*".record]
format = "mpegts"
max_age = "7d"
segment_duration = "10m"
[paths."cctv/*".record]
path = "/srv/rec/%path/%s"
local_time = true
max_size = 1000
"#;
        let c = Config::parse(text, no_env()).unwrap();
        let live = c.path("live/a").unwrap().record.to_record_config().unwrap();
        assert_eq!(live.format, sluice_record::Format::MpegTs);
        assert_eq!(live.max_bytes, Some(2 * 1024 * 1024 * 1024));
        assert_eq!(live.max_age, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(live.segment_duration, Duration::from_secs(600));
        assert_eq!(live.part_duration, Duration::from_secs(1));
        let cctv = c.path("cctv/a").unwrap().record.to_record_config().unwrap();
        assert_eq!(cctv.pattern.as_str(), "/srv/rec/%path/%s");
        assert_eq!(cctv.max_bytes, Some(1000));
        assert_eq!(cctv.max_age, None);
        assert!(!Config::default().path_defaults.record.enabled);
        // From the environment too.
        let env = vec![(
            "SLUICE_PATH_DEFAULTS_RECORD_ENABLED".to_owned(),
            "true".to_owned(),
        )];
        assert!(Config::parse("", env).unwrap().path_defaults.record.enabled);
        for (bad, why) in [
            ("path = \"rec/%Y%m%d\"", "%path"),
            ("path = \"rec/%path\"", "%s"),
            ("max_size = \"10 parsecs\"", "unit"),
            ("part_duration = \"10ms\"", "part_duration"),
            ("format = \"avi\"", "format"),
        ] {
            let e = Config::parse(&format!("[paths.\"x\".record]\n{bad}\n"), no_env())
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn health_keys() {
        let text = r#"
[path_defaults.health]
silence_after = "2s"
[paths."live/*".health]
silence_level = -45
stall_after = "1500ms"
[paths."quiet/*".health]
silence_level = "-70.5 dB"
silence_detection = false
[paths."off".health]
enabled = false
"#;
        let c = Config::parse(text, no_env()).unwrap();
        let h = &c.path("live/a").unwrap().health;
        assert_eq!(
            (
                h.enabled,
                h.silence_detection,
                h.silence_level,
                h.silence_after,
                h.stall_after
            ),
            (
                true,
                true,
                -45.0,
                Duration::from_secs(2),
                Duration::from_millis(1500)
            )
        );
        let q = &c.path("quiet/a").unwrap().health;
        assert_eq!((q.silence_level, q.silence_detection), (-70.5, false));
        assert!(!c.path("off").unwrap().health.enabled);
        assert_eq!(c.path_defaults.health.silence_level, -60.0);
        for (raw, want) in [("-50dB", -50.0), ("-40", -40.0), ("\"-30 dBFS\"", -30.0)] {
            let env = vec![(
                "SLUICE_PATH_DEFAULTS_HEALTH_SILENCE_LEVEL".to_owned(),
                raw.to_owned(),
            )];
            let c = Config::parse("", env).unwrap();
            assert_eq!(c.path_defaults.health.silence_level, want, "{raw}");
        }
        for (bad, want) in [
            ("silence_level = \"loud\"", "invalid level"),
            ("silence_level = 3", "-100 to 0"),
            ("silence_level = \"-200dB\"", "-100 to 0"),
            ("silence_level = true", "a level in dBFS"),
            ("stall_after = \"100ms\"", "stall_after: at least 500ms"),
            ("silence_after = \"0s\"", "silence_after: at least 100ms"),
            ("silence = true", "silence"),
        ] {
            let text = format!("[paths.\"x\".health]\n{bad}\n");
            let e = Config::parse(&text, no_env()).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
        let e = Config::parse("[paths.\"x\".health]\nsilence_level = \"loud\"\n", no_env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
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
    fn webhooks_and_run_on() {
        let text = r#"
[webhooks]
urls = ["http://127.0.0.1:9/hook", "https://hooks.example/x"]
secret = "s3cret"
events = ["published", "unpublished"]
[path_defaults.run_on]
unpublish = "echo gone"
[paths."live/*".run_on]
publish = "ffmpeg -i $SLUICE_RTMP_URL -f null -"
publish_restart = true
[paths."other"]
"#;
        let c = Config::parse(text, no_env()).unwrap();
        assert_eq!(c.webhooks.urls.len(), 2);
        assert_eq!(c.webhooks.timeout, Duration::from_secs(5));
        let p = c.path("live/a").unwrap();
        assert!(p.run_on.publish.starts_with("ffmpeg") && p.run_on.publish_restart);
        assert_eq!(p.run_on.unpublish, "echo gone");
        let o = c.path("other").unwrap();
        assert_eq!((o.run_on.publish.as_str(), o.run_on.publish_restart), ("", false));
        for (bad, want) in [
            ("[webhooks]\nurls = [\"ftp://x\"]\n", "webhooks.urls[0]"),
            ("[webhooks]\nurls = [\"http://\"]\n", "webhooks.urls[0]"),
            ("[webhooks]\nqueue = 0\n", "webhooks.queue"),
            ("[webhooks]\nevents = [\"publised\"]\n", "unknown event type"),
            ("[path_defaults.run_on]\npublsh = \"x\"\n", "publsh"),
        ] {
            let e = Config::parse(bad, no_env()).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
        let env = vec![(
            "SLUICE_WEBHOOKS_URLS".to_owned(),
            r#"["http://127.0.0.1:1/a"]"#.to_owned(),
        )];
        let c = Config::parse("", env).unwrap();
        assert_eq!(c.webhooks.urls, ["http://127.0.0.1:1/a"]);
        assert!(env_names().contains_key("SLUICE_PATH_DEFAULTS_RUN_ON_PUBLISH"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
