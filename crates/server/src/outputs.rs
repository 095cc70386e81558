//! The server's path outputs: which always-on consumers a path gets from its configuration (the
//! HLS packager, the health checks, the recorder, the push destinations and the transcoder), started by the core's
//! [`Outputs`] hook when the path's first stream starts.
//!
//! To add an output: give it a name and a [`Select`] in [`PathOutputs::wanted`] from the path's
//! configuration, and start its task from the reader in [`PathOutputs::start`]. The reader's
//! session is the output's session (id, state, counters, cancel handle); the task ends when
//! the reader ends (path over, kick, shutdown, or the output removed by a reload).

use std::sync::Arc;

use sluice_hls::{HlsConfig, HlsStore, Variant};
use sluice_media::events::EventBus;
use sluice_media::{OutputSpec, Outputs, Reader, Select};
use sluice_record::Recordings;

use crate::push::PushStore;

use crate::config::HlsVariant;
use crate::health::HealthStore;
use crate::reload::LiveConfig;

/// The outputs of the configuration in force (a reload's `reconcile_outputs` applies a change).
pub struct PathOutputs {
    config: LiveConfig,
    hls: Arc<HlsStore>,
    rt: tokio::runtime::Handle,
    /// Where the health outputs file their checks; none: no health output.
    health: Option<Arc<HealthStore>>,
    /// The recordings the `record` outputs write to; none: no recording.
    recordings: Option<Arc<Recordings>>,
    /// Where the `push` outputs report, and the bus their state changes go to; none: no push.
    pushes: Option<(Arc<PushStore>, Arc<EventBus>)>,
    /// Where the `transcode` outputs publish their renditions; none: no transcoding.
    transcode: Option<(sluice_media::Registry, Arc<crate::transcode::TranscodeStore>)>,
}

impl PathOutputs {
    pub fn new(config: LiveConfig, hls: Arc<HlsStore>, rt: tokio::runtime::Handle) -> Self {
        PathOutputs {
            config,
            hls,
            rt,
            health: None,
            recordings: None,
            pushes: None,
            transcode: None,
        }
    }

    /// Gives paths their renditions, per their `[..transcode] renditions`.
    pub fn with_transcode(
        mut self,
        registry: sluice_media::Registry,
        store: Arc<crate::transcode::TranscodeStore>,
    ) -> Self {
        self.transcode = Some((registry, store));
        self
    }

    /// Gives paths a health output (`health.rs`), per their `[..health] enabled`.
    pub fn with_health(mut self, store: Arc<HealthStore>) -> Self {
        self.health = Some(store);
        self
    }

    /// Gives paths a recorder, per their `[..record] enabled`.
    pub fn with_recordings(mut self, recordings: Arc<Recordings>) -> Self {
        self.recordings = Some(recordings);
        self
    }

    /// Gives paths their push destinations, per their `[..push] urls`.
    pub fn with_pushes(mut self, store: Arc<PushStore>, events: Arc<EventBus>) -> Self {
        self.pushes = Some((store, events));
        self
    }

    fn hls_config(&self, path: &str) -> Option<HlsConfig> {
        let cfg = self.config.get();
        let pcfg = cfg.path(path)?;
        let variant = match cfg.hls_variant(pcfg) {
            HlsVariant::LowLatency => Variant::LowLatency,
            HlsVariant::Fmp4 => Variant::Fmp4,
            HlsVariant::Mpegts => Variant::MpegTs,
        };
        Some(HlsConfig {
            variant,
            segment_duration: cfg.hls.segment_duration,
            segment_count: cfg.hls.segment_count,
            part_duration: cfg.hls.part_duration,
            ..Default::default()
        })
    }
}

impl Outputs for PathOutputs {
    fn wanted(&self, path: &str) -> Vec<OutputSpec> {
        let mut v = Vec::new();
        if self.config.get().http.enabled && self.hls_config(path).is_some() {
            v.push(OutputSpec {
                kind: "hls",
                name: "hls".into(),
                select: Select::AAC,
            });
        }
        // A rendition (a reserved path the server publishes) gets HLS only: its source path
        // has the health checks, the recorder, the pushes and the transcoder.
        if sluice_media::is_reserved(path) {
            return v;
        }
        let health = self.config.get().path(path).is_some_and(|p| p.health.enabled);
        if health && self.health.is_some() {
            v.push(OutputSpec {
                kind: "health",
                name: "health".into(),
                select: Select::Original,
            });
        }
        let record = self.config.get().path(path).is_some_and(|p| p.record.enabled);
        if record && self.recordings.is_some() {
            v.push(OutputSpec {
                kind: "record",
                name: "record".into(),
                select: Select::Original,
            });
        }
        let transcode = self
            .config
            .get()
            .path(path)
            .filter(|p| !p.transcode.renditions.is_empty())
            .map(|p| p.transcode.clone());
        if let (Some(t), Some((registry, store))) = (transcode, &self.transcode) {
            // An on-demand ladder runs while someone watches a rendition (the reconcile starts
            // it on demand and stops it once nobody does).
            let run = !t.on_demand || crate::transcode::is_watched(store, registry, &self.hls, path, &t);
            // The name carries the settings: a reload that changes the ladder replaces the
            // running transcoder (the reconcile stops what is no longer wanted).
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            format!("{t:?}").hash(&mut h);
            if run {
                v.push(OutputSpec {
                    kind: "transcode",
                    name: format!("transcode-{:08x}", h.finish() as u32),
                    select: Select::TS,
                });
            }
        }
        if self.pushes.is_some() {
            if let Some(p) = self.config.get().path(path) {
                for url in &p.push.urls {
                    v.push(OutputSpec {
                        kind: "push",
                        name: crate::push::output_name(url),
                        // RTMP takes AAC; SRT carries MPEG-TS (what TS carries, as sent);
                        // WHIP takes Opus (the publisher's, or the core's derived track).
                        select: if url.starts_with("srt://") {
                            Select::TS
                        } else if crate::push_whip::is_whip(url) {
                            Select::OPUS
                        } else {
                            Select::AAC
                        },
                    });
                }
            }
        }
        v
    }

    fn start(&self, spec: &OutputSpec, reader: Reader) {
        let path = reader.path().to_owned();
        match spec.kind {
            "hls" => {
                let Some(config) = self.hls_config(&path) else {
                    return;
                };
                let _guard = self.rt.enter();
                // A packager started again (settings changed, or it failed) goes on from the
                // numbers of the one it replaces, so that LL-HLS players carry on.
                let previous = self.hls.get(&path);
                let stream = sluice_hls::spawn_after(reader, config, previous.as_deref());
                self.hls.insert(&path, stream);
            }
            "health" => {
                let Some(store) = &self.health else { return };
                let live = self.config.clone();
                let settings = move || live.get().path(&path).map(|p| p.health.clone());
                crate::health::spawn(reader, settings, store.clone(), &self.rt);
            }
            "record" => {
                let Some(recordings) = &self.recordings else {
                    return;
                };
                sluice_record::spawn(recordings, reader, &self.rt);
            }
            "push" => {
                let Some((store, events)) = &self.pushes else {
                    return;
                };
                let cfg = self.config.get();
                let Some(p) = cfg.path(&path) else { return };
                let Some(url) = p
                    .push
                    .urls
                    .iter()
                    .find(|u| crate::push::output_name(u) == spec.name)
                else {
                    return;
                };
                crate::push::spawn(
                    reader,
                    spec.name.clone(),
                    url.clone(),
                    p.push.clone(),
                    store.clone(),
                    events.clone(),
                    &self.rt,
                );
            }
            "transcode" => {
                let Some((registry, store)) = &self.transcode else {
                    return;
                };
                let Some(settings) = self.config.get().path(&path).map(|p| p.transcode.clone()) else {
                    return;
                };
                crate::transcode::spawn(reader, settings, registry.clone(), store.clone(), &self.rt);
            }
            other => tracing::warn!(%path, "unknown output kind {other}"),
        }
    }

    fn ended(&self, path: &str) {
        self.hls.remove(path);
    }
}
