//! The live configuration: hot reload and the state file.
//!
//! The running configuration is a [`LiveConfig`]: one `Arc<Config>` behind a lock that a reload
//! swaps. Everything that decides from the configuration while the server runs (the registry's
//! path resolver, the access policy, the path outputs, the SRT listener's per-path settings,
//! HTTP-FLV and HLS timings, WHIP/WHEP ICE servers, each new RTMP connection) takes the current
//! one at the moment it decides, so a reload needs no other hand-off.
//!
//! **Layers.** The configuration is the configuration file (or the built-in one), then the state
//! file laid over it, then the `SLUICE_*` environment. The state file holds what was changed
//! through the API (`PATCH`/`PUT`/`DELETE` under `/v1/config`): it is the configuration's own
//! TOML schema, every key optional, with these rules (see [`overlay_state`]):
//! - global tables (`[rtmp]`, `[path_defaults.srt]`, ...) are deep-merged over the file's, key by key;
//! - a `[paths."NAME"]` table replaces the file's table of that name whole;
//! - `[state] removed_paths = [...]` names the file's path tables that were deleted.
//!
//! The configuration file itself (its comments) is never written; the state file is written
//! atomically (temporary file, fsync, rename, fsync of the directory).
//!
//! **Reload** (SIGHUP, a change of the configuration file or the state file seen by a watcher of
//! their directories, `POST /v1/config/reload`, or a change through the API): the files are read
//! and validated like at start; a bad one is refused with its line-accurate error and the running
//! configuration stays. A good one is applied without touching the sessions it does not concern:
//! - sessions on a path that is no longer configured end, with the reason in the log;
//! - a path's publisher ends when the path's publish credentials (`access.publish_*`, or the SRT
//!   `publish_passphrase` for an SRT publisher) changed; its readers end when the read
//!   credentials changed (they would have to present the new ones anyway: credentials of running
//!   sessions are not kept, so every one of them ends, not only those the change refuses);
//! - HLS packagers restart where a path's HLS settings changed; outputs are re-evaluated;
//! - per-path tuning (`grace_period`, `reader_queue`, ...) applies to paths that start afterwards;
//! - a new path with a `source` starts pulling; a changed or removed `source`, listener
//!   addresses and the other settings outside [`LIVE_KEYS`] need a restart: they are logged as
//!   such and keep their running value (see `GET /v1/config`'s `restart_needed`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use sluice_media::stats::Role;
use sluice_media::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogFormat, DEFAULT_TOML};
use crate::http_error::HttpError;

/// What a masked secret reads as in every response.
pub const MASK: &str = "********";

/// Dotted keys (and their sub-keys) that a reload applies while the server runs. Every other key
/// keeps its running value until a restart. Keep [`keep_running`] in step with this list.
pub const LIVE_KEYS: &[&str] = &[
    "paths",
    "path_defaults",
    "hls",
    "rtmp.handshake_timeout",
    "rtmp.idle_timeout",
    "rtmp.chunk_size",
    "rtmp.play_coalesce",
    "http.flv_coalesce",
    "webrtc.ice_servers",
    "webrtc.ice_servers_user",
    "webrtc.ice_servers_pass",
    "auth",
];

/// The running configuration, replaced whole by a reload. Cheap to clone; readers take the
/// current one with [`get`](Self::get) each time they decide (never keep it across a decision).
#[derive(Clone)]
pub struct LiveConfig(Arc<RwLock<Arc<Config>>>);

impl LiveConfig {
    pub fn new(config: Config) -> Self {
        LiveConfig(Arc::new(RwLock::new(Arc::new(config))))
    }

    /// The configuration in force now.
    pub fn get(&self) -> Arc<Config> {
        self.0.read().clone()
    }

    fn set(&self, config: Arc<Config>) {
        *self.0.write() = config;
    }
}

/// Where the configuration is read from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The configuration file; `None` runs on the built-in configuration.
    pub file: Option<PathBuf>,
    /// The state file (API changes): `--state`, else beside the configuration file; `None` on
    /// the built-in configuration without `--state` (changes are then kept in memory only).
    pub state: Option<PathBuf>,
    /// `--log-format`, which wins over the files.
    pub log_format: Option<LogFormat>,
}

/// The state file beside a configuration file: `sluice.toml` → `sluice.state.toml`.
pub fn default_state_file(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map_or_else(|| "sluice".into(), |s| s.to_string_lossy());
    config.with_file_name(format!("{stem}.state.toml"))
}

impl Sources {
    pub fn new(file: Option<PathBuf>, state: Option<PathBuf>, log_format: Option<LogFormat>) -> Self {
        let state = state.or_else(|| file.as_deref().map(default_state_file));
        Sources {
            file,
            state,
            log_format,
        }
    }

    fn state_name(&self) -> String {
        match &self.state {
            Some(f) => f.display().to_string(),
            None => "the changes made through the API".into(),
        }
    }

    fn file_name(&self) -> String {
        match &self.file {
            Some(f) => f.display().to_string(),
            None => "the built-in configuration".into(),
        }
    }

    /// Reads the files (a missing state file is an empty one) and validates them.
    pub fn load(&self) -> Result<Layers, String> {
        let (file_text, state_text) = self.read()?;
        self.build(file_text, state_text)
    }

    fn read(&self) -> Result<(Option<String>, Option<String>), String> {
        let file_text = match &self.file {
            Some(f) => {
                Some(std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?)
            }
            None => None,
        };
        let Some(state) = &self.state else {
            return Ok((file_text, None));
        };
        let state_text = match std::fs::read_to_string(state) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read {}: {e}", state.display())),
        };
        Ok((file_text, state_text))
    }

    /// Validates the configuration made of these texts, as at start.
    fn build(&self, file_text: Option<String>, state_text: Option<String>) -> Result<Layers, String> {
        let text = file_text.as_deref().unwrap_or(DEFAULT_TOML);
        let state_name = self.state_name();
        let mut config = Config::parse_layers(
            Some(&self.file_name()),
            text,
            state_text.as_deref().map(|t| (state_name.as_str(), t)),
            std::env::vars(),
        )
        .map_err(|e| format!("{e:#}"))?;
        if let Some(f) = self.log_format {
            config.log.format = f;
        }
        // On the built-in configuration there is no file: its values are the defaults.
        let file_doc: toml::Table = match &file_text {
            Some(t) => toml::from_str(t).map_err(|e| e.to_string())?,
            None => toml::Table::new(),
        };
        let state_doc: toml::Table = match &state_text {
            Some(t) => toml::from_str(t).map_err(|e| e.to_string())?,
            None => toml::Table::new(),
        };
        Ok(Layers {
            config,
            file_text,
            file_doc,
            state_text,
            state_doc,
        })
    }
}

/// A validated configuration and the documents it was made of.
#[derive(Debug, Clone)]
pub struct Layers {
    pub config: Config,
    file_text: Option<String>,
    file_doc: toml::Table,
    state_text: Option<String>,
    state_doc: toml::Table,
}

/// Where a value of `GET /v1/config` comes from.
pub type Origin = &'static str;

impl Layers {
    /// The merged document: built-in defaults, the file, the state file, the environment; path
    /// tables as written.
    pub fn merged_raw(&self) -> toml::Table {
        let mut doc: toml::Table = toml::from_str(DEFAULT_TOML).unwrap_or_default();
        merge_tables(&mut doc, &self.file_doc);
        let _ = overlay_state(&mut doc, &self.state_doc);
        let _ = crate::config::apply_env(&mut doc, std::env::vars());
        doc
    }

    /// [`merged_raw`](Self::merged_raw) with each path table resolved over `[path_defaults]`.
    pub fn merged(&self) -> toml::Table {
        let mut doc = self.merged_raw();
        let defaults = match doc.get("path_defaults") {
            Some(toml::Value::Table(t)) => t.clone(),
            _ => toml::Table::new(),
        };
        if let Some(toml::Value::Table(paths)) = doc.get_mut("paths") {
            for (_, table) in paths.iter_mut() {
                if let toml::Value::Table(t) = table {
                    let mut resolved = defaults.clone();
                    merge_tables(&mut resolved, t);
                    *t = resolved;
                }
            }
        }
        doc
    }

    /// The path tables as configured: each name with its own table and where it comes from.
    pub fn path_tables(&self) -> BTreeMap<String, (toml::Table, Origin)> {
        let mut out = BTreeMap::new();
        let removed = removed_paths(&self.state_doc);
        for (name, t) in sub_table(&self.file_doc, "paths") {
            if let toml::Value::Table(t) = t {
                if !removed.contains(name) {
                    out.insert(name.clone(), (t.clone(), "file"));
                }
            }
        }
        for (name, t) in sub_table(&self.state_doc, "paths") {
            if let toml::Value::Table(t) = t {
                out.insert(name.clone(), (t.clone(), "state"));
            }
        }
        out
    }

    /// Where each leaf value of [`merged`](Self::merged) comes from: `env`, `state`, `file`,
    /// `default`; for a path's key that its own table does not set, `path_defaults`.
    pub fn sources(&self) -> BTreeMap<String, Origin> {
        let env: BTreeSet<Vec<String>> = crate::config::env_names()
            .into_iter()
            .filter(|(name, _)| std::env::var_os(name).is_some())
            .map(|(_, keys)| keys)
            .collect();
        let merged = self.merged();
        let tables = self.path_tables();
        let mut out = BTreeMap::new();
        let mut leaves = Vec::new();
        collect_leaves(&merged, &mut Vec::new(), &mut leaves);
        for keys in leaves {
            let origin = if keys.first().map(String::as_str) == Some("paths") && keys.len() > 2 {
                match tables.get(&keys[1]) {
                    Some((t, origin)) if lookup(t, &keys[2..]) => origin,
                    _ => "path_defaults",
                }
            } else if env.contains(&keys) {
                "env"
            } else if lookup(&self.state_doc, &keys) {
                "state"
            } else if lookup(&self.file_doc, &keys) {
                "file"
            } else {
                "default"
            };
            out.insert(dotted(&keys), origin);
        }
        out
    }
}

/// The state file document's `[state] removed_paths`.
fn removed_paths(state: &toml::Table) -> BTreeSet<String> {
    match sub_table(state, "state").get("removed_paths") {
        Some(toml::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => BTreeSet::new(),
    }
}

fn sub_table<'a>(t: &'a toml::Table, key: &str) -> &'a toml::Table {
    static EMPTY: std::sync::OnceLock<toml::Table> = std::sync::OnceLock::new();
    match t.get(key) {
        Some(toml::Value::Table(s)) => s,
        _ => EMPTY.get_or_init(toml::Table::new),
    }
}

/// Runs `f` on the sub-table `key` of `t` (made when missing or not a table); an empty one is
/// left out.
pub fn with_sub_table<R>(t: &mut toml::Table, key: &str, f: impl FnOnce(&mut toml::Table) -> R) -> R {
    let mut sub = match t.remove(key) {
        Some(toml::Value::Table(s)) => s,
        _ => toml::Table::new(),
    };
    let r = f(&mut sub);
    if !sub.is_empty() {
        t.insert(key.to_owned(), toml::Value::Table(sub));
    }
    r
}

fn lookup(t: &toml::Table, keys: &[String]) -> bool {
    match keys {
        [] => true,
        [k] => t.contains_key(k),
        [k, rest @ ..] => matches!(t.get(k), Some(toml::Value::Table(s)) if lookup(s, rest)),
    }
}

fn collect_leaves(t: &toml::Table, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    for (k, v) in t {
        prefix.push(k.clone());
        match v {
            toml::Value::Table(s) => collect_leaves(s, prefix, out),
            _ => out.push(prefix.clone()),
        }
        prefix.pop();
    }
}

/// `rtmp.listen`, `paths."live/cam1".access.read_token`: path names quoted.
fn dotted(keys: &[String]) -> String {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            if i == 1 && keys[0] == "paths" {
                format!("{k:?}")
            } else {
                k.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Tables merged key by key (recursively); any other value replaced.
fn merge_tables(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Lays a state document over a configuration document (see the module's doc for the rules).
pub fn overlay_state(doc: &mut toml::Table, state: &toml::Table) -> Result<(), String> {
    let meta = sub_table(state, "state");
    if let Some(k) = meta.keys().find(|k| *k != "removed_paths") {
        return Err(format!("unknown key `{k}` in [state]: only removed_paths"));
    }
    let removed = match meta.get("removed_paths") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or("[state] removed_paths must be a list of path names")?,
        Some(_) => return Err("[state] removed_paths must be a list of path names".into()),
    };
    if let Some(toml::Value::Table(paths)) = doc.get_mut("paths") {
        for name in &removed {
            paths.remove(name);
        }
    }
    for (k, v) in state {
        match (k.as_str(), v) {
            ("state", _) => {}
            ("paths", toml::Value::Table(tables)) => {
                with_sub_table(doc, "paths", |paths| {
                    for (name, t) in tables {
                        paths.insert(name.clone(), t.clone());
                    }
                });
            }
            _ => match (doc.get_mut(k), v) {
                (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
                _ => {
                    doc.insert(k.clone(), v.clone());
                }
            },
        }
    }
    Ok(())
}

/// Sets the path table `name` in a state document (it replaces the file's table of that name).
pub fn state_set_path(state: &mut toml::Table, name: &str, table: toml::Table) {
    set_removed(state, name, false);
    with_sub_table(state, "paths", |paths| {
        paths.insert(name.to_owned(), toml::Value::Table(table))
    });
}

/// Removes the path table `name` from the configuration that `layers` make, in their state
/// document `state`.
pub fn state_remove_path(state: &mut toml::Table, layers: &Layers, name: &str) {
    with_sub_table(state, "paths", |paths| paths.remove(name));
    if sub_table(&layers.file_doc, "paths").contains_key(name) {
        set_removed(state, name, true);
    }
}

fn set_removed(state: &mut toml::Table, name: &str, removed: bool) {
    let mut list = removed_paths(state);
    let changed = if removed {
        list.insert(name.to_owned())
    } else {
        list.remove(name)
    };
    if !changed {
        return;
    }
    if list.is_empty() {
        state.remove("state");
    } else {
        with_sub_table(state, "state", |meta| {
            meta.insert(
                "removed_paths".into(),
                toml::Value::Array(list.into_iter().map(toml::Value::String).collect()),
            )
        });
    }
}

/// The state file's text with its `[state]` table blanked (lines kept, so errors found in the
/// rest keep their line numbers): what is left has the configuration's schema.
pub fn without_state_table(text: &str) -> String {
    let mut inside = false;
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with('[') {
                let header = t.trim_start_matches('[').trim_start();
                inside = header.starts_with("state]")
                    || header.starts_with("state ")
                    || header.starts_with("state.");
            }
            if inside {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a key holds a secret (passwords, tokens, passphrases, webhook secrets).
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["pass", "password", "passphrase", "token", "secret"]
        .iter()
        .any(|s| k.ends_with(s))
}

/// Replaces every non-empty secret value in `v` (by key name, at any depth) with [`MASK`].
pub fn mask_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                match val {
                    serde_json::Value::String(s) if is_secret(k) && !s.is_empty() => *s = MASK.into(),
                    // Push destinations carry their stream key in the URL.
                    serde_json::Value::Array(a) if k == "urls" => {
                        for u in a.iter_mut() {
                            if let serde_json::Value::String(s) = u {
                                *s = crate::push::masked_url(s);
                            }
                        }
                    }
                    _ => mask_json(val),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(mask_json),
        _ => {}
    }
}

/// Masks the values of secret keys in the source lines an error message quotes
/// (`  3 | publish_pass = "..."`).
pub fn mask_message(msg: &str) -> String {
    msg.lines()
        .map(|l| {
            let Some((num, src)) = l.split_once(" | ") else {
                return l.to_owned();
            };
            if !num.trim().chars().all(|c| c.is_ascii_digit()) {
                return l.to_owned();
            }
            match src.split_once('=') {
                Some((key, _)) if is_secret(key.trim().trim_matches('"')) => {
                    format!("{num} | {}= \"{MASK}\"", key)
                }
                // Push destinations and sources carry keys and passphrases in their URLs.
                Some((key, value)) if matches!(key.trim(), "urls" | "source") => {
                    let masked: Vec<String> = value
                        .split('"')
                        .enumerate()
                        .map(|(i, part)| {
                            if i % 2 == 1 {
                                crate::push::masked_url(part)
                            } else {
                                part.to_owned()
                            }
                        })
                        .collect();
                    format!("{num} | {key}={}", masked.join("\""))
                }
                _ => l.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every dotted leaf key whose value differs between `a` and `b` (present in one only included).
pub fn diff_keys(a: &toml::Table, b: &toml::Table) -> Vec<String> {
    fn walk(a: Option<&toml::Value>, b: Option<&toml::Value>, keys: &mut Vec<String>, out: &mut Vec<String>) {
        match (a, b) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                let names: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in names {
                    keys.push(k.clone());
                    walk(x.get(k), y.get(k), keys, out);
                    keys.pop();
                }
            }
            (Some(toml::Value::Table(x)), None) | (None, Some(toml::Value::Table(x))) if x.is_empty() => {
                out.push(dotted(keys))
            }
            (Some(toml::Value::Table(x)), None) | (None, Some(toml::Value::Table(x))) => walk(
                Some(&toml::Value::Table(x.clone())),
                Some(&toml::Value::Table(toml::Table::new())),
                keys,
                out,
            ),
            (x, y) if x != y => out.push(dotted(keys)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(
        Some(&toml::Value::Table(a.clone())),
        Some(&toml::Value::Table(b.clone())),
        &mut Vec::new(),
        &mut out,
    );
    out
}

/// Whether a reload applies the dotted `key` while the server runs (see [`LIVE_KEYS`]).
pub fn is_live(key: &str) -> bool {
    LIVE_KEYS
        .iter()
        .any(|p| key == *p || key.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
}

/// `new` with every setting outside [`LIVE_KEYS`] taken from `running` (listener addresses and
/// what else needs a restart keep the values the server runs with).
fn keep_running(new: &mut Config, running: &Config) {
    let mut c = running.clone();
    c.paths = std::mem::take(&mut new.paths);
    c.path_defaults = new.path_defaults.clone();
    c.hls = new.hls.clone();
    c.rtmp.handshake_timeout = new.rtmp.handshake_timeout;
    c.rtmp.idle_timeout = new.rtmp.idle_timeout;
    c.rtmp.chunk_size = new.rtmp.chunk_size;
    c.rtmp.play_coalesce = new.rtmp.play_coalesce;
    c.http.flv_coalesce = new.http.flv_coalesce;
    c.webrtc.ice_servers = new.webrtc.ice_servers.clone();
    c.webrtc.ice_servers_user = new.webrtc.ice_servers_user.clone();
    c.webrtc.ice_servers_pass = new.webrtc.ice_servers_pass.clone();
    c.auth = new.auth.clone();
    *new = c;
}

/// One session a configuration change ended.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct EndedSession {
    pub id: u64,
    pub path: String,
    pub reason: String,
}

/// What applying a configuration did.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Applied {
    /// The dotted keys whose value changed.
    pub changed: Vec<String>,
    /// The sessions the change ended, with why.
    pub ended_sessions: Vec<EndedSession>,
    /// Keys that differ from what the server runs with and need a restart to take effect.
    pub restart_needed: Vec<String>,
}

/// The sessions a change from `old` to `new` concerns, with why they end.
fn sessions_to_end(
    old: &Config,
    new: &Config,
    sessions: &[sluice_media::stats::SessionSnapshot],
    why: &str,
) -> Vec<(u64, String, String)> {
    let mut out = Vec::new();
    for s in sessions {
        if !matches!(s.role, Role::Publisher | Role::Reader) {
            continue;
        }
        let Some(n) = new.path(&s.path) else {
            out.push((
                s.id,
                s.path.clone(),
                format!("path {} is no longer configured ({why})", s.path),
            ));
            continue;
        };
        let Some(o) = old.path(&s.path) else {
            continue;
        };
        let (oa, na) = (&o.access, &n.access);
        let reason = match s.role {
            Role::Publisher
                if (&oa.publish_user, &oa.publish_pass, &oa.publish_token)
                    != (&na.publish_user, &na.publish_pass, &na.publish_token) =>
            {
                Some("the path's publish credentials changed")
            }
            Role::Publisher
                if s.protocol == "srt" && o.srt.publish_passphrase != n.srt.publish_passphrase =>
            {
                Some("the path's SRT publish passphrase changed")
            }
            Role::Reader
                if (&oa.read_user, &oa.read_pass, &oa.read_token)
                    != (&na.read_user, &na.read_pass, &na.read_token) =>
            {
                Some("the path's read credentials changed")
            }
            Role::Reader if s.protocol == "srt" && o.srt.read_passphrase != n.srt.read_passphrase => {
                Some("the path's SRT read passphrase changed")
            }
            _ => None,
        };
        if let Some(r) = reason {
            out.push((s.id, s.path.clone(), format!("{r} ({why})")));
        }
    }
    out
}

/// The HLS settings a path's packager runs with.
/// What a running HLS packager was started with: a change restarts it.
fn hls_settings(c: &Config, path: &str) -> Option<(crate::config::HlsVariant, Duration, usize, Duration)> {
    c.path(path).map(|p| {
        (
            c.hls_variant(p),
            c.hls.segment_duration,
            c.hls.segment_count,
            c.hls.part_duration,
        )
    })
}

/// Reloads and changes the configuration; one at a time.
pub struct Reloader {
    sources: Sources,
    live: LiveConfig,
    registry: Registry,
    current: Mutex<Arc<Layers>>,
    /// The merged document the server started with (listeners were bound from it).
    started_doc: toml::Table,
    started: Arc<Config>,
    serial: tokio::sync::Mutex<()>,
    /// Paths pulled from a `source`, with its URL.
    pulls: Mutex<BTreeMap<String, String>>,
    /// The texts (file, state) the watcher last found bad: not refused again until they change.
    refused: Mutex<Option<(Option<String>, Option<String>)>>,
}

impl Reloader {
    pub fn new(sources: Sources, layers: Layers, live: LiveConfig, registry: Registry) -> Arc<Self> {
        let started = live.get();
        Arc::new(Reloader {
            sources,
            live,
            registry,
            started_doc: layers.merged_raw(),
            current: Mutex::new(Arc::new(layers)),
            started,
            serial: tokio::sync::Mutex::new(()),
            pulls: Mutex::new(BTreeMap::new()),
            refused: Mutex::new(None),
        })
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The documents of the configuration in force.
    pub fn current(&self) -> Arc<Layers> {
        self.current.lock().clone()
    }

    /// Keys that differ from what the server runs with and need a restart.
    pub fn restart_needed(&self) -> Vec<String> {
        let now = self.current().merged_raw();
        diff_keys(&self.started_doc, &now)
            .into_iter()
            .filter(|k| !is_live(k))
            .collect()
    }

    /// Starts pulling the paths with a `source` that no pull serves yet; at start, an error
    /// is returned (the server does not start); on reload it is logged.
    pub fn sync_pulls(&self, at_start: bool) -> anyhow::Result<()> {
        let config = self.live.get();
        let mut pulls = self.pulls.lock();
        for (name, p) in &config.paths {
            if p.source.is_empty() || p.source_on_demand {
                continue;
            }
            match pulls.get(name) {
                Some(url) if *url == p.source => continue,
                Some(_) => {
                    tracing::warn!(path = %name, "paths.{name:?}.source changed: needs a restart (the running pull goes on)");
                    continue;
                }
                None => {}
            }
            if let Err(e) = crate::pull::spawn(&p.source, name.clone(), self.registry.clone()) {
                if at_start {
                    return Err(anyhow::anyhow!("paths.{name:?}.source: {e}"));
                }
                tracing::error!(path = %name, "cannot pull paths.{name:?}.source: {e}");
                continue;
            }
            tracing::info!(path = %name, source = %crate::push::masked_url(&p.source), "pulling from a source");
            pulls.insert(name.clone(), p.source.clone());
        }
        for name in pulls.keys() {
            if config.paths.get(name).is_none_or(|p| p.source.is_empty()) {
                tracing::warn!(path = %name, "the source of {name} was removed: needs a restart to stop pulling");
            }
        }
        Ok(())
    }

    /// Reads the files again and applies them (SIGHUP, the API); refused with the error when
    /// they are not valid, the running configuration staying.
    pub async fn reload(&self, trigger: &str) -> Result<Applied, String> {
        let _serial = self.serial.lock().await;
        self.reload_locked(trigger, false)
            .await
            .map(Option::unwrap_or_default)
    }

    /// Like [`reload`](Self::reload), only when a file's text differs from the running one's
    /// (the watcher: events come for every file of the directory, ours included).
    async fn reload_if_changed(&self) {
        let _serial = self.serial.lock().await;
        let _ = self.reload_locked("reload on a file change", true).await;
    }

    async fn reload_locked(&self, trigger: &str, only_if_changed: bool) -> Result<Option<Applied>, String> {
        let sources = self.sources.clone();
        let read = tokio::task::spawn_blocking(move || sources.read())
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        let (file_text, mut state_text) = match read {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("configuration {trigger} refused, the running configuration stays: {e}");
                return Err(mask_message(&e));
            }
        };
        let cur = self.current();
        if self.sources.state.is_none() {
            // No state file: the changes made through the API live in memory.
            state_text = cur.state_text.clone();
        }
        if only_if_changed {
            let texts = (file_text.clone(), state_text.clone());
            let same = cur.file_text == texts.0 && cur.state_text == texts.1;
            if same || self.refused.lock().as_ref() == Some(&texts) {
                return Ok(None);
            }
        }
        let texts = (file_text.clone(), state_text.clone());
        match self.sources.build(file_text, state_text) {
            Ok(new) => {
                *self.refused.lock() = None;
                Ok(Some(self.apply(&cur, new, trigger).await))
            }
            Err(e) => {
                *self.refused.lock() = Some(texts);
                let e = mask_message(&e);
                tracing::error!("configuration {trigger} refused, the running configuration stays: {e}");
                Err(e)
            }
        }
    }

    /// Changes the state file through `edit` (given the state document and the running
    /// layers), validates the result like a file, writes it atomically and applies it.
    pub async fn change(
        &self,
        edit: impl FnOnce(&mut toml::Table, &Layers) -> Result<(), HttpError>,
    ) -> Result<Applied, HttpError> {
        let _serial = self.serial.lock().await;
        let cur = self.current();
        let mut state = cur.state_doc.clone();
        edit(&mut state, &cur)?;
        let text = render_state(&state).map_err(HttpError::bad_request)?;
        // Errors in the state name it: for a change, the line is the state's as it would be written.
        let state_name = format!("{}: ", self.sources.state_name());
        let new = self
            .sources
            .build(cur.file_text.clone(), Some(text.clone()))
            .map_err(|e| {
                let e = e.replacen(&state_name, "", 1);
                HttpError::bad_request(format!("refused: {}", mask_message(&e)))
            })?;
        if let Some(file) = self.sources.state.clone() {
            let shown = file.display().to_string();
            tokio::task::spawn_blocking(move || write_atomic(&file, &text))
                .await
                .map_err(|e| HttpError::internal(e.to_string()))?
                .map_err(|e| HttpError::internal(format!("cannot write the state file {shown}: {e}")))?;
        }
        Ok(self.apply(&cur, new, "change through the API").await)
    }

    /// Puts `new` in force and ends, restarts and starts what it concerns.
    async fn apply(&self, old: &Layers, mut new: Layers, why: &str) -> Applied {
        keep_running(&mut new.config, &self.started);
        let changed = diff_keys(&old.merged_raw(), &new.merged_raw());
        let old_cfg = self.live.get();
        let new_cfg = Arc::new(new.config.clone());
        self.live.set(new_cfg.clone());
        *self.current.lock() = Arc::new(new);

        let restart_now: Vec<&String> = changed.iter().filter(|k| !is_live(k)).collect();
        for k in &restart_now {
            tracing::warn!("{k} changed: needs a restart (the running value stays until then)");
        }
        let stats = self.registry.stats().clone();
        let sessions = stats.sessions();
        let mut ended = Vec::new();
        for (id, path, reason) in sessions_to_end(&old_cfg, &new_cfg, &sessions, why) {
            if stats.kick(id, &reason) {
                ended.push(EndedSession { id, path, reason });
            }
        }
        // HLS packagers whose settings changed restart (the reconcile below starts them again
        // once the old one has closed).
        let mut closing = Vec::new();
        for s in &sessions {
            if s.role == Role::Output && s.protocol == "hls" {
                let now = hls_settings(&new_cfg, &s.path);
                if now.is_some() && hls_settings(&old_cfg, &s.path) != now {
                    let reason = format!("the path's HLS settings changed ({why}): the packager restarts");
                    if let Some(h) = stats.get(s.id) {
                        stats.kick(s.id, &reason);
                        closing.push(h);
                    }
                }
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while closing.iter().any(|h| !h.is_closed()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.registry.reconcile_outputs();
        let _ = self.sync_pulls(false);
        tracing::info!(
            changed = changed.len(),
            ended = ended.len(),
            "configuration applied ({why}){}",
            if changed.is_empty() {
                String::new()
            } else {
                format!(": {}", changed.join(", "))
            }
        );
        Applied {
            changed,
            ended_sessions: ended,
            restart_needed: self.restart_needed(),
        }
    }

    /// Reloads on SIGHUP and when the configuration or state file changes (a watcher of their
    /// directories, so atomic renames and symlink swaps are seen; events debounced). The SIGHUP
    /// handler is installed before this returns. Both end with `stop`.
    pub fn spawn_triggers(self: &Arc<Self>, stop: CancellationToken) {
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                let this = self.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            r = hup.recv() => if r.is_none() { return },
                        }
                        tracing::info!("SIGHUP: reloading the configuration");
                        let _ = this.reload("reload on SIGHUP").await;
                    }
                });
            }
            Err(e) => tracing::warn!("cannot handle SIGHUP (no reload on it): {e}"),
        }
        self.spawn_watcher(stop);
    }

    fn spawn_watcher(self: &Arc<Self>, stop: CancellationToken) {
        use notify::Watcher;
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        let dir_of = |f: &Path| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if let Some(f) = &self.sources.file {
            dirs.insert(dir_of(f));
        }
        // The state file may be elsewhere (`--state`).
        if let Some(f) = &self.sources.state {
            dirs.insert(dir_of(f));
        }
        if dirs.is_empty() {
            return;
        }
        // Only the configuration and state files matter: a log or a recording written beside
        // them must not wake the reloader at every write.
        let names: Vec<std::ffi::OsString> = [&self.sources.file, &self.sources.state]
            .into_iter()
            .flatten()
            .filter_map(|f| f.file_name().map(|n| n.to_os_string()))
            .collect();
        let wake = Arc::new(tokio::sync::Notify::new());
        let w = wake.clone();
        let handler = move |ev: notify::Result<notify::Event>| {
            use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
            if let Ok(ev) = ev {
                // Reading a file is no change (and we read them ourselves: a read may update
                // the access time, a metadata event); nor is a change of owner or mode.
                let noise = match ev.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
                    EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => true,
                    _ => false,
                };
                // (No path: the watcher lost events, so anything may have changed.)
                if !noise && concerns(&ev.paths, &names) {
                    w.notify_one();
                }
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("cannot watch the configuration files (reload with SIGHUP or the API): {e}");
                return;
            }
        };
        for d in &dirs {
            if let Err(e) = watcher.watch(d, notify::RecursiveMode::NonRecursive) {
                tracing::warn!("cannot watch {} for configuration changes: {e}", d.display());
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            let _watcher = watcher;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = wake.notified() => {}
                }
                // Debounce: an editor's save or a swap is several events.
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(300)) => break,
                        _ = wake.notified() => {}
                    }
                }
                this.reload_if_changed().await;
            }
        });
    }
}

/// Whether a change of `paths` in a watched directory may change the configuration: one of
/// them is named as a configuration or state file (`names`), or none is given (the watcher lost
/// events).
fn concerns(paths: &[PathBuf], names: &[std::ffi::OsString]) -> bool {
    paths.is_empty()
        || paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)))
}

/// The state file's text for a state document.
fn render_state(state: &toml::Table) -> Result<String, String> {
    let body = toml::to_string(state).map_err(|e| format!("cannot write the state: {e}"))?;
    Ok(format!(
        "# Written by Sluice: the changes made through the API (/v1/config), applied over the\n\
         # configuration file at start and on every reload. Path tables here replace the file's;\n\
         # [state] removed_paths lists the file's path tables deleted through the API.\n\n{body}"
    ))
}

/// Writes `text` to `file` atomically: a temporary file beside it, fsync, rename, fsync of the
/// directory.
pub fn write_atomic(file: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, file)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn only_the_configuration_files_wake_the_reloader() {
        let names = ["sluice.toml".into(), "sluice.state.toml".into()];
        let p = |s: &str| vec![PathBuf::from(s)];
        assert!(concerns(&p("/etc/sluice/sluice.toml"), &names));
        assert!(concerns(&p("./sluice.state.toml"), &names));
        // An editor's temporary file renamed over the configuration: both paths in one event.
        assert!(concerns(
            &[
                PathBuf::from("/etc/.sluice.toml.swp"),
                PathBuf::from("/etc/sluice.toml")
            ],
            &names
        ));
        assert!(concerns(&[], &names));
        // A log or a recording written beside the configuration.
        assert!(!concerns(&p("/srv/sluice.log"), &names));
        assert!(!concerns(&p("/srv/.sluice.toml.swp"), &names));
        assert!(!concerns(&p("/srv"), &names));
    }

    #[test]
    fn state_paths_replace_and_globals_merge() {
        let mut doc = table(
            "[rtmp]\nchunk_size = 4096\nidle_timeout = \"5s\"\n[paths.\"a\"]\ngrace_period = \"1s\"\n[paths.\"a\".srt]\nlatency = \"1s\"\n[paths.\"b\"]\n",
        );
        let state = table(
            "[rtmp]\nchunk_size = 8192\n[paths.\"a\"]\nreader_queue = 5\n[paths.\"c\"]\n[state]\nremoved_paths = [\"b\"]\n",
        );
        overlay_state(&mut doc, &state).unwrap();
        assert_eq!(doc["rtmp"]["chunk_size"].as_integer(), Some(8192));
        assert_eq!(doc["rtmp"]["idle_timeout"].as_str(), Some("5s"));
        let paths = doc["paths"].as_table().unwrap();
        assert_eq!(paths.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert!(paths["a"].get("grace_period").is_none(), "replaced whole");
        assert_eq!(paths["a"]["reader_queue"].as_integer(), Some(5));
        assert!(overlay_state(&mut doc, &table("[state]\nremoved = 1\n")).is_err());
        assert!(overlay_state(&mut doc, &table("[state]\nremoved_paths = [1]\n")).is_err());
    }

    #[test]
    fn state_round_trips_through_its_text() {
        let mut state = toml::Table::new();
        state_set_path(&mut state, "cam/c", toml::Table::new());
        state_set_path(
            &mut state,
            "live/*",
            table("grace_period = \"1s\"\n[access]\nread_token = \"t\"\n"),
        );
        with_sub_table(&mut state, "rtmp", |t| {
            t.insert("chunk_size".into(), toml::Value::Integer(8192))
        });
        set_removed(&mut state, "old", true);
        let text = render_state(&state).unwrap();
        let back: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(back, state, "{text}");
        let c = Config::parse_layers(None, "[paths.\"old\"]\n", Some(("s", &text)), Vec::new()).unwrap();
        assert!(c.path("old").is_none() && c.path("cam/c").is_some() && c.path("live/x").is_some());
        // Added back: no longer removed.
        state_set_path(&mut state, "old", toml::Table::new());
        assert!(state.get("state").is_none(), "{state:?}");
    }

    #[test]
    fn state_errors_keep_their_lines() {
        let text =
            "[rtmp]\nchunk_size = 8192\n[state]\nremoved_paths = [\"x\"]\n[paths.\"a\"]\nbad_key = 1\n";
        let blanked = without_state_table(text);
        assert_eq!(blanked.lines().count(), text.lines().count());
        assert!(!blanked.contains("removed_paths"));
        assert!(blanked.contains("bad_key"));
        let e = Config::parse_layers(None, "", Some(("st.toml", text)), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("st.toml") && e.contains("line 6") && e.contains("bad_key"),
            "{e}"
        );
    }

    #[test]
    fn layered_parse_removes_and_replaces_paths() {
        let file = "[paths.\"a\"]\ngrace_period = \"1s\"\n[paths.\"b\"]\n";
        let state = "[paths.\"a\"]\nreader_queue = 7\n[state]\nremoved_paths = [\"b\"]\n";
        let c = Config::parse_layers(None, file, Some(("s", state)), Vec::new()).unwrap();
        assert!(c.path("b").is_none());
        let a = c.path("a").unwrap();
        assert_eq!((a.reader_queue, a.grace_period), (7, Duration::from_secs(10)));
    }

    #[test]
    fn secrets_are_masked() {
        let mut v = serde_json::json!({
            "paths": {"a": {"access": {"publish_user": "u", "publish_pass": "p", "read_token": ""},
                             "srt": {"publish_passphrase": "0123456789"}}},
            "webhooks": {"endpoints": [{"url": "http://x", "secret": "s"}]},
            "webrtc": {"ice_servers_pass": "t"}
        });
        mask_json(&mut v);
        assert_eq!(v["paths"]["a"]["access"]["publish_user"], "u");
        assert_eq!(v["paths"]["a"]["access"]["publish_pass"], MASK);
        assert_eq!(
            v["paths"]["a"]["access"]["read_token"], "",
            "an empty secret stays empty"
        );
        assert_eq!(v["paths"]["a"]["srt"]["publish_passphrase"], MASK);
        assert_eq!(v["webhooks"]["endpoints"][0]["secret"], MASK);
        assert_eq!(v["webrtc"]["ice_servers_pass"], MASK);
        let m = mask_message("line 2, column 1: bad\n  2 | publish_pass = \"hunter2\"\n");
        assert!(!m.contains("hunter2") && m.contains("line 2"), "{m}");
        let m = mask_message("line 3, column 8: bad\n  3 | urls = [\"rtmp://h/app/supersecretkey\", \"srt://h:1?passphrase=abcdefghijk\"]\n");
        assert!(
            !m.contains("secretkey")
                && !m.contains("abcdefghijk")
                && m.contains("rtmp://h:1935/app/supe****"),
            "{m}"
        );
    }

    #[test]
    fn diffs_and_live_keys() {
        let a = table("[rtmp]\nlisten = \":1\"\nchunk_size = 1\n[paths.\"x\"]\ngrace_period = \"1s\"\n");
        let b = table("[rtmp]\nlisten = \":2\"\nchunk_size = 1\n[paths.\"y\"]\ngrace_period = \"1s\"\n");
        let d = diff_keys(&a, &b);
        assert_eq!(
            d,
            [
                "paths.\"x\".grace_period",
                "paths.\"y\".grace_period",
                "rtmp.listen"
            ]
        );
        assert_eq!(
            diff_keys(
                &a,
                &table("[paths.\"x\"]\ngrace_period = \"1s\"\n[paths.\"z\"]\n")
            )[0],
            "paths.\"z\""
        );
        assert!(is_live("paths.\"x\".grace_period"));
        assert!(is_live("rtmp.chunk_size") && is_live("hls.variant"));
        assert!(!is_live("rtmp.listen") && !is_live("rtmp.chunk_size_x") && !is_live("metrics.listen"));
    }

    #[test]
    fn sessions_a_change_concerns() {
        use sluice_media::stats::{SessionSnapshot, SessionState};
        let old = Config::parse(
            "[paths.\"a\"]\n[paths.\"b\".access]\nread_token = \"t\"\n[paths.\"c\"]\n",
            Vec::new(),
        )
        .unwrap();
        let new = Config::parse(
            "[paths.\"b\".access]\nread_token = \"u\"\n[paths.\"c\"]\n[paths.\"d\"]\n",
            Vec::new(),
        )
        .unwrap();
        let s = |id, role, path: &str| SessionSnapshot {
            id,
            protocol: "rtmp",
            role,
            state: SessionState::Live,
            path: path.into(),
            remote: None,
            started: std::time::SystemTime::now(),
            bytes_in: 0,
            bytes_out: 0,
            frames_in: 0,
            frames_out: 0,
            frames_dropped: 0,
            keyframe_requests: 0,
            link: None,
            reason: String::new(),
        };
        let sessions = [
            s(1, Role::Publisher, "a"),
            s(2, Role::Reader, "a"),
            s(3, Role::Publisher, "b"),
            s(4, Role::Reader, "b"),
            s(5, Role::Publisher, "c"),
            s(6, Role::Output, "a"),
        ];
        let ended = sessions_to_end(&old, &new, &sessions, "test");
        let ids: Vec<u64> = ended.iter().map(|e| e.0).collect();
        assert_eq!(ids, [1, 2, 4]);
        assert!(ended[0].2.contains("no longer configured"), "{ended:?}");
        assert!(ended[2].2.contains("read credentials changed"), "{ended:?}");
    }

    #[test]
    fn live_config_swaps() {
        let live = LiveConfig::new(Config::default());
        let before = live.get();
        let mut c = Config::default();
        c.rtmp.chunk_size = 999;
        live.set(Arc::new(c));
        assert_eq!(before.rtmp.chunk_size, 4096);
        assert_eq!(live.get().rtmp.chunk_size, 999);
    }

    #[test]
    fn keep_running_keeps_listeners() {
        let running = Config::default();
        let mut new = Config::parse(
            "[rtmp]\nlisten = \":1\"\nchunk_size = 8192\n[paths.\"x\"]\n",
            Vec::new(),
        )
        .unwrap();
        keep_running(&mut new, &running);
        assert_eq!(new.rtmp.listen, running.rtmp.listen);
        assert_eq!(new.rtmp.chunk_size, 8192);
        assert!(new.paths.contains_key("x"));
    }

    #[test]
    fn state_file_names() {
        assert_eq!(
            default_state_file(Path::new("/etc/sluice/sluice.toml")),
            PathBuf::from("/etc/sluice/sluice.state.toml")
        );
        assert_eq!(
            default_state_file(Path::new("conf")),
            PathBuf::from("conf.state.toml")
        );
        let s = Sources::new(None, None, None);
        assert!(s.state.is_none(), "no state file on the built-in configuration");
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = std::env::temp_dir().join(format!("sluice-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.state.toml");
        write_atomic(&f, "a = 1\n").unwrap();
        write_atomic(&f, "a = 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "a = 2\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
