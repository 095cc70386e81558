//! Paths and their registry: who publishes where, the GOP cache, the publisher grace period,
//! path outputs, derived tracks and keyframe requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::access::{AccessRequest, AllowAll, Denied, Policy};
use crate::derive::{DerivedWriter, Transformer};
use crate::events::ServerEvent;
use crate::reader::{Event, Reader, Select, StreamInfo};
use crate::stats::{PathSnapshot, Role, SessionGuard, SessionState, SessionStats, StatsStore};
use crate::{CodecId, Frame, MediaKind, PublishError, ReadError, Track, TrackId, CLOCK_RATE};

/// Per-path tuning, resolved from the configuration when a path comes to life.
#[derive(Debug, Clone)]
pub struct PathOptions {
    /// How long readers are kept after the publisher leaves, waiting for it to return.
    pub grace: Duration,
    /// Frames a reader may fall behind before it skips to the next keyframe.
    pub queue_frames: usize,
    /// Upper bound on the GOP cache; past it, new readers wait for the next keyframe.
    pub gop_cache_max_bytes: usize,
    /// A reader that falls behind more than this many times within 10 s is closed.
    pub max_lags: u32,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            grace: Duration::from_secs(10),
            queue_frames: 512,
            gop_cache_max_bytes: 64 << 20,
            max_lags: 8,
        }
    }
}

/// Who a session is, for stats and logs.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub protocol: &'static str,
    pub remote: Option<SocketAddr>,
}

/// One always-on consumer of a path, as the configuration asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// What it is ("hls", "record", "push"): the session's protocol in the registry.
    pub kind: &'static str,
    /// Unique among the path's outputs ("hls", "push:youtube"); compared on reconfiguration.
    pub name: String,
    /// Which tracks it takes.
    pub select: Select,
}

/// Attaches a path's always-on consumers (path outputs). The registry calls [`start`](Self::start)
/// when a path's first stream starts, with a reader opened before any frame is written, so no
/// output can miss a publish; the outputs live through the grace period and end with the path.
pub trait Outputs: Send + Sync + 'static {
    /// The outputs `path` should have, from the configuration.
    fn wanted(&self, path: &str) -> Vec<OutputSpec>;
    /// Starts one output on `reader`. Must not block: spawn the work (on a runtime handle the
    /// implementation holds: publishers may run on plain threads).
    fn start(&self, spec: &OutputSpec, reader: Reader);
    /// The path ended (its outputs' readers end too).
    fn ended(&self, _path: &str) {}
}

/// All live paths. Cheap to clone; share one per server.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

type Resolver = dyn Fn(&str) -> Option<PathOptions> + Send + Sync;

/// Starts a path's source when a reader asks for a path nobody publishes (on-demand pulls).
pub trait OnDemand: Send + Sync + 'static {
    /// Called for a reader of `path`, which has no stream: starts its source if it has an
    /// on-demand one and returns how long readers may wait for the first frame; `None`: the
    /// path has no on-demand source (the reader is refused at once). Must not block.
    fn demand(&self, path: &str) -> Option<Duration>;
}

#[derive(Clone)]
struct Hooks {
    on_demand: Option<Arc<dyn OnDemand>>,
    outputs: Option<Arc<dyn Outputs>>,
    transformer: Option<Arc<dyn Transformer>>,
    policy: Arc<dyn Policy>,
}

pub(crate) struct RegistryInner {
    paths: Mutex<HashMap<Arc<str>, Arc<PathShared>>>,
    stats: Arc<StatsStore>,
    resolver: Mutex<Arc<Resolver>>,
    hooks: RwLock<Hooks>,
}

pub(crate) struct PathShared {
    pub(crate) name: Arc<str>,
    pub(crate) state: Mutex<PathState>,
    registry: std::sync::Weak<RegistryInner>,
}

/// A derived track of a path, kept while some reader takes it.
struct DerivedSlot {
    codec: CodecId,
    track: Track,
    users: usize,
    cancel: CancellationToken,
}

pub(crate) struct PathState {
    options: PathOptions,
    tx: Option<broadcast::Sender<Event>>,
    pub(crate) info: Option<Arc<StreamInfo>>,
    /// Frames since the latest video keyframe (valid only when `gop_valid`).
    pub(crate) gop: Vec<Arc<Frame>>,
    gop_bytes: usize,
    pub(crate) gop_valid: bool,
    publisher: Option<Arc<SessionStats>>,
    generation: u64,
    next_epoch: u64,
    last_dts: Option<i64>,
    readers: u64,
    bytes_in: u64,
    frames_in: u64,
    derived: Vec<DerivedSlot>,
    next_derived: TrackId,
    /// Wakes the current publisher's keyframe-request stream.
    keyframe: Option<Arc<Notify>>,
    /// A request made while nobody published, delivered to the next publisher.
    keyframe_pending: bool,
    outputs: Vec<(OutputSpec, Arc<SessionStats>)>,
    outputs_attached: bool,
    /// Outputs that ended while the path was live: (name, when last started again, how many
    /// times in a row), so that one that ends at once every time is started again ever more
    /// slowly (5 s doubling to 5 min) instead of every reconcile.
    output_restarts: Vec<(String, Instant, u32)>,
    /// Readers asleep until a write at or after a time of theirs.
    pub(crate) pacer: crate::pace::Pacer,
}

/// An output restarted this long ago and still running counts as healthy again.
const OUTPUT_HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// The delay before an output that ended `count` times in a row is started again: none the
/// first time (the next reconcile), then 5 s doubling, at most 5 minutes.
fn restart_delay(count: u32) -> Duration {
    if count <= 1 {
        return Duration::ZERO;
    }
    (Duration::from_secs(5) * 2u32.saturating_pow((count - 2).min(6))).min(Duration::from_secs(300))
}

/// Derived track ids start here, so they never collide with a publisher's.
pub const DERIVED_TRACK_BASE: TrackId = 128;

impl Default for Registry {
    fn default() -> Self {
        Self::new(|_| PathOptions::default())
    }
}

impl Registry {
    /// A registry whose paths take their options from `resolver`.
    pub fn new(resolver: impl Fn(&str) -> PathOptions + Send + Sync + 'static) -> Self {
        Self::with_paths(move |p| Some(resolver(p)))
    }

    /// A registry where `resolver` also decides which paths exist: `None` refuses publishing.
    pub fn with_paths(resolver: impl Fn(&str) -> Option<PathOptions> + Send + Sync + 'static) -> Self {
        Registry {
            inner: Arc::new(RegistryInner {
                paths: Mutex::new(HashMap::new()),
                stats: Arc::new(StatsStore::default()),
                resolver: Mutex::new(Arc::new(resolver)),
                hooks: RwLock::new(Hooks {
                    on_demand: None,
                    outputs: None,
                    transformer: None,
                    policy: Arc::new(AllowAll),
                }),
            }),
        }
    }

    /// Replaces the options resolver (config reload); applies to paths that start from now on.
    pub fn set_resolver(&self, resolver: impl Fn(&str) -> Option<PathOptions> + Send + Sync + 'static) {
        *self.inner.resolver.lock() = Arc::new(resolver);
    }

    /// Installs what attaches path outputs (see [`Outputs`]).
    /// Installs what starts on-demand sources (see [`OnDemand`]).
    pub fn set_on_demand(&self, on_demand: Arc<dyn OnDemand>) {
        self.inner.hooks.write().on_demand = Some(on_demand);
    }

    pub fn set_outputs(&self, outputs: Arc<dyn Outputs>) {
        self.inner.hooks.write().outputs = Some(outputs);
    }

    /// Installs what derives tracks (see [`Transformer`]).
    pub fn set_transformer(&self, transformer: Arc<dyn Transformer>) {
        self.inner.hooks.write().transformer = Some(transformer);
    }

    /// Installs the access policy (the default allows everything).
    pub fn set_policy(&self, policy: Arc<dyn Policy>) {
        self.inner.hooks.write().policy = policy;
    }

    /// Asks the access policy; a refusal is logged and goes on the event bus.
    pub async fn authorize(&self, req: &AccessRequest) -> Result<(), Denied> {
        let policy = self.inner.hooks.read().policy.clone();
        let r = policy.check(req).await;
        if let Err(e) = &r {
            self.denied(req, e);
        }
        r
    }

    /// Whether the policy lets `req` in without credentials (see [`Policy::open_to`]).
    pub fn is_open_to(&self, req: &AccessRequest) -> bool {
        self.inner.hooks.read().policy.open_to(req)
    }

    /// The policy's answer when it can be given at once (see [`Policy::check_now`]).
    pub fn authorize_now(&self, req: &AccessRequest) -> Option<Result<(), Denied>> {
        let policy = self.inner.hooks.read().policy.clone();
        let r = policy.check_now(req);
        if let Some(Err(e)) = &r {
            self.denied(req, e);
        }
        r
    }

    fn denied(&self, req: &AccessRequest, e: &Denied) {
        tracing::warn!(action = req.action.name(), path = %req.path, protocol = req.protocol,
            remote = ?req.remote, user = req.user.as_deref().unwrap_or(""), "access refused: {e}");
        self.inner.stats.events().emit(ServerEvent::AccessDenied {
            action: req.action.name(),
            path: req.path.clone(),
            protocol: req.protocol,
            remote: req.remote,
            code: e.reason().code,
            reason: e.to_string(),
        });
    }

    /// The session registry and stats store.
    pub fn stats(&self) -> &Arc<StatsStore> {
        &self.inner.stats
    }

    /// The event bus.
    pub fn events(&self) -> &Arc<crate::events::EventBus> {
        self.inner.stats.events()
    }

    /// Claims `path` for a publisher. Refused if another publisher holds it, or if the name is
    /// invalid or reserved (see [`is_reserved`]).
    pub fn publish(&self, path: &str, session: SessionInfo) -> Result<Publisher, PublishError> {
        if is_reserved(path) {
            return Err(PublishError::InvalidPath {
                path: path.to_owned(),
                reason: "a segment starting with '~' is reserved for what the server derives (renditions)",
            });
        }
        self.publish_derived(path, session)
    }

    /// Claims `path`, reserved names included: for what the server itself publishes (renditions).
    pub fn publish_derived(&self, path: &str, session: SessionInfo) -> Result<Publisher, PublishError> {
        if self.inner.stats.is_shutting_down() {
            return Err(PublishError::ShuttingDown);
        }
        if let Err(reason) = validate_path(path) {
            return Err(PublishError::InvalidPath {
                path: path.to_owned(),
                reason,
            });
        }
        let shared = {
            let mut paths = self.inner.paths.lock();
            match paths.get(path) {
                Some(p) => p.clone(),
                None => {
                    let resolver = self.inner.resolver.lock().clone();
                    let Some(options) = resolver(path) else {
                        return Err(PublishError::NotConfigured {
                            path: path.to_owned(),
                        });
                    };
                    let p = Arc::new(PathShared::new(path.into(), options, Arc::downgrade(&self.inner)));
                    paths.insert(p.name.clone(), p.clone());
                    p
                }
            }
        };
        // Registered before the path is claimed, so that a refusal is a session that ends.
        let guard = self
            .inner
            .stats
            .register(session.protocol, Role::Publisher, path, session.remote);
        let notify = Arc::new(Notify::new());
        let generation = {
            let mut st = shared.state.lock();
            if st.publisher.is_some() {
                guard.stats().set_reason("path busy");
                return Err(PublishError::PathBusy {
                    path: path.to_owned(),
                });
            }
            if st.tx.is_none() {
                st.tx = Some(broadcast::channel(st.options.queue_frames.max(16)).0);
            }
            st.generation += 1;
            st.publisher = Some(guard.stats().clone());
            if std::mem::take(&mut st.keyframe_pending) {
                notify.notify_one();
            }
            st.keyframe = Some(notify.clone());
            st.generation
        };
        Ok(Publisher {
            shared,
            registry: self.clone(),
            generation,
            guard,
            keyframes: KeyframeRequests { notify },
            started: false,
            wrote: false,
            offset: 0,
        })
    }

    /// Opens a reader of the publisher's own tracks on `path`, starting at the latest keyframe.
    pub fn read(&self, path: &str, session: SessionInfo) -> Result<Reader, ReadError> {
        self.read_with(path, session, Select::Original)
    }

    /// Opens a reader on `path` that takes the tracks `select` picks (deriving a track if needed).
    pub fn read_with(&self, path: &str, session: SessionInfo, select: Select) -> Result<Reader, ReadError> {
        let shared = self.inner.paths.lock().get(path).cloned();
        let shared = match shared {
            Some(s) => {
                // In its grace period (or waiting for an on-demand source): a stopped
                // on-demand source starts again for this reader.
                if !s.state.lock().has_publisher() {
                    let hook = self.inner.hooks.read().on_demand.clone();
                    if let Some(h) = hook {
                        h.demand(path);
                    }
                }
                s
            }
            None => {
                if let Err(reason) = validate_path(path) {
                    return Err(ReadError::InvalidPath {
                        path: path.to_owned(),
                        reason,
                    });
                }
                self.await_on_demand(path).ok_or_else(|| ReadError::NoStream {
                    path: path.to_owned(),
                })?
            }
        };
        let guard = self
            .inner
            .stats
            .register(session.protocol, Role::Reader, path, session.remote);
        Reader::open(shared, guard, select).ok_or_else(|| ReadError::NoStream {
            path: path.to_owned(),
        })
    }

    /// Asks the on-demand hook to start what serves `path` (for a client that will ask for it
    /// by other means, such as an HTTP player); how long it may take, `None` when nothing
    /// would start.
    pub fn demand(&self, path: &str) -> Option<Duration> {
        let hook = self.inner.hooks.read().on_demand.clone()?;
        hook.demand(path)
    }

    /// Whether a publisher is streaming on `path` now.
    pub fn is_published(&self, path: &str) -> bool {
        let shared = self.inner.paths.lock().get(path).cloned();
        shared.is_some_and(|p| p.state.lock().publisher.is_some())
    }

    /// Snapshots of every path, sorted by name.
    pub fn paths(&self) -> Vec<PathSnapshot> {
        let paths: Vec<_> = self.inner.paths.lock().values().cloned().collect();
        let mut v: Vec<_> = paths.iter().map(|p| p.snapshot()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A snapshot of one path.
    pub fn path(&self, name: &str) -> Option<PathSnapshot> {
        let shared = self.inner.paths.lock().get(name).cloned();
        shared.map(|p| p.snapshot())
    }

    /// Re-evaluates every live path's outputs against [`Outputs::wanted`] (configuration
    /// change): starts the new ones, stops the removed ones, leaves the others alone.
    /// Brings every live path's outputs in line with what [`Outputs::wanted`] says now: starts
    /// the missing ones (new in the configuration, or ended while the path is live), stops
    /// those no longer wanted. Called on each configuration reload and every few seconds by the
    /// server, so that an output that failed comes back without touching the publisher.
    pub fn reconcile_outputs(&self) {
        if self.inner.stats.is_shutting_down() {
            return;
        }
        let paths: Vec<_> = self.inner.paths.lock().values().cloned().collect();
        let Some(outputs) = self.inner.hooks.read().outputs.clone() else {
            return;
        };
        for shared in paths {
            let wanted = outputs.wanted(&shared.name);
            let (stop, start) = {
                let mut st = shared.state.lock();
                if !st.outputs_attached || st.tx.is_none() {
                    continue;
                }
                // An output whose session ended while the path is live (its reader was cut for
                // falling behind, its task failed) is wanted still: it is started again below,
                // after a delay that grows while it keeps ending.
                let now = Instant::now();
                let ended: Vec<(String, u64, String)> = st
                    .outputs
                    .iter()
                    .filter(|(_, s)| s.is_closed())
                    .map(|(spec, s)| (spec.name.clone(), s.id, s.reason()))
                    .collect();
                st.outputs.retain(|(_, s)| !s.is_closed());
                for (name, session, reason) in ended {
                    let pos = st.output_restarts.iter().position(|(n, _, _)| *n == name);
                    let count = pos.map_or(0, |i| st.output_restarts[i].2);
                    tracing::warn!(
                        path = %shared.name,
                        output = %name,
                        session,
                        %reason,
                        "output ended while the path is live: starting it again in {:?} ({} in a row)",
                        restart_delay(count + 1),
                        count + 1
                    );
                    // Remembered as "ended now"; started once its delay has passed.
                    let entry = (name, now, count + 1);
                    match pos {
                        Some(i) => st.output_restarts[i] = entry,
                        None => st.output_restarts.push(entry),
                    }
                }
                // An output that lived a while since its last restart is healthy again.
                let running: Vec<String> = st.outputs.iter().map(|(spec, _)| spec.name.clone()).collect();
                st.output_restarts.retain(|(n, at, _)| {
                    !running.contains(n) || now.duration_since(*at) < OUTPUT_HEALTHY_AFTER
                });
                let waiting: Vec<String> = st
                    .output_restarts
                    .iter()
                    .filter(|(n, at, count)| {
                        !running.contains(n) && now.duration_since(*at) < restart_delay(*count)
                    })
                    .map(|(n, _, _)| n.clone())
                    .collect();
                let stop: Vec<_> = st
                    .outputs
                    .iter()
                    .filter(|(spec, _)| !wanted.contains(spec))
                    .map(|(_, s)| s.clone())
                    .collect();
                st.outputs.retain(|(spec, _)| wanted.contains(spec));
                let start: Vec<_> = wanted
                    .into_iter()
                    .filter(|w| !st.outputs.iter().any(|(spec, _)| spec == w))
                    .filter(|w| !waiting.contains(&w.name))
                    .collect();
                (stop, start)
            };
            for s in stop {
                tracing::info!(path = %shared.name, output = s.protocol, session = s.id, "output removed by the configuration");
                s.set_reason("output removed by the configuration");
                s.set_state(SessionState::Closing);
                s.cancel_token().cancel();
            }
            for spec in start {
                self.start_output(&shared, &*outputs, spec);
            }
        }
    }

    fn attach_outputs(&self, shared: &Arc<PathShared>) {
        let Some(outputs) = self.inner.hooks.read().outputs.clone() else {
            return;
        };
        for spec in outputs.wanted(&shared.name) {
            self.start_output(shared, &*outputs, spec);
        }
    }

    fn start_output(&self, shared: &Arc<PathShared>, outputs: &dyn Outputs, spec: OutputSpec) {
        let guard = self
            .inner
            .stats
            .register(spec.kind, Role::Output, &shared.name, None);
        let stats = guard.stats().clone();
        let Some(reader) = Reader::open(shared.clone(), guard, spec.select) else {
            return;
        };
        shared.state.lock().outputs.push((spec.clone(), stats));
        tracing::debug!(path = %shared.name, output = %spec.name, "output started");
        outputs.start(&spec, reader);
    }

    /// A path nobody publishes, for a reader: when its source is on demand, the source is
    /// started and the path opened without a stream, readers waiting for the first frame as
    /// through a grace period (the path ends if no stream comes within the source's wait).
    fn await_on_demand(&self, path: &str) -> Option<Arc<PathShared>> {
        let hook = self.inner.hooks.read().on_demand.clone()?;
        let shared = {
            let mut paths = self.inner.paths.lock();
            if let Some(p) = paths.get(path) {
                // Another reader (or the source itself) got there first.
                p.clone()
            } else {
                let resolver = self.inner.resolver.lock().clone();
                let options = resolver(path)?;
                let p = Arc::new(PathShared::new(path.into(), options, Arc::downgrade(&self.inner)));
                {
                    let mut st = p.state.lock();
                    st.tx = Some(broadcast::channel(st.options.queue_frames.max(16)).0);
                }
                paths.insert(p.name.clone(), p.clone());
                drop(paths);
                let Some(wait) = hook.demand(path) else {
                    let mut paths = self.inner.paths.lock();
                    if paths.get(path).is_some_and(|x| Arc::ptr_eq(x, &p))
                        && p.state.lock().publisher.is_none()
                    {
                        paths.remove(path);
                    }
                    return None;
                };
                tracing::info!(%path, wait_ms = wait.as_millis() as u64, "reader waits for the on-demand source");
                let registry = self.clone();
                let waiting = p.clone();
                let generation = p.state.lock().generation;
                let expire = move || {
                    if waiting.state.lock().info.is_none() {
                        tracing::info!(path = %waiting.name, "no stream from the on-demand source in time");
                    }
                    registry.end_path(&waiting, generation);
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn(async move {
                            tokio::time::sleep(wait).await;
                            expire();
                        });
                    }
                    // A reader on a thread of its own (SRT).
                    Err(_) => {
                        let _ = std::thread::Builder::new()
                            .name("on-demand-wait".into())
                            .spawn(move || {
                                std::thread::sleep(wait);
                                expire();
                            });
                    }
                }
                return Some(p);
            }
        };
        Some(shared)
    }

    fn end_path(&self, shared: &Arc<PathShared>, generation: u64) {
        {
            let mut st = shared.state.lock();
            if st.publisher.is_some() || st.generation != generation {
                return;
            }
            st.tx = None;
            st.pacer.wake_all();
            st.info = None;
            st.gop.clear();
            st.gop_bytes = 0;
            st.outputs.clear();
            st.outputs_attached = false;
            for d in st.derived.drain(..) {
                d.cancel.cancel();
            }
        }
        let mut paths = self.inner.paths.lock();
        if paths.get(&shared.name).is_some_and(|p| Arc::ptr_eq(p, shared)) {
            paths.remove(&shared.name);
        }
        drop(paths);
        tracing::debug!(path = %shared.name, "path ended");
        self.events().emit(ServerEvent::PathEnded {
            path: shared.name.clone(),
        });
        let outputs = self.inner.hooks.read().outputs.clone();
        if let Some(o) = outputs {
            o.ended(&shared.name);
        }
    }
}

impl PathShared {
    fn new(name: Arc<str>, options: PathOptions, registry: std::sync::Weak<RegistryInner>) -> Self {
        PathShared {
            name,
            registry,
            state: Mutex::new(PathState {
                options,
                tx: None,
                info: None,
                gop: Vec::new(),
                gop_bytes: 0,
                gop_valid: false,
                publisher: None,
                generation: 0,
                next_epoch: 0,
                last_dts: None,
                readers: 0,
                bytes_in: 0,
                frames_in: 0,
                derived: Vec::new(),
                pacer: Default::default(),
                next_derived: DERIVED_TRACK_BASE,
                keyframe: None,
                keyframe_pending: false,
                outputs: Vec::new(),
                outputs_attached: false,
                output_restarts: Vec::new(),
            }),
        }
    }

    fn snapshot(&self) -> PathSnapshot {
        let st = self.state.lock();
        PathSnapshot {
            name: self.name.to_string(),
            online: st.publisher.is_some(),
            publisher: st.publisher.as_ref().map(|s| (s.id, s.protocol)),
            tracks: st.info.as_ref().map(|i| i.tracks.clone()).unwrap_or_default(),
            derived: st.derived.iter().map(|d| d.track.clone()).collect(),
            readers: st.readers,
            bytes_in: st.bytes_in,
            frames_in: st.frames_in,
            epoch: st.next_epoch.saturating_sub(1),
            started_at: st.info.as_ref().map(|i| i.started_at),
            outputs: st
                .outputs
                .iter()
                .filter(|(_, s)| !s.is_closed())
                .map(|(spec, s)| (spec.name.clone(), s.id))
                .collect(),
        }
    }

    /// Takes one user of the derived track in `codec` made from `from`, creating it (and
    /// starting its transform) for the first user. `None` when nothing can derive it.
    pub(crate) fn acquire_derived(self: &Arc<Self>, from: &Track, codec: CodecId) -> Option<Track> {
        {
            let mut st = self.state.lock();
            if let Some(d) = st.derived.iter_mut().find(|d| d.codec == codec) {
                d.users += 1;
                return Some(d.track.clone());
            }
            st.tx.as_ref()?;
        }
        let registry = self.registry.upgrade()?;
        let transformer = registry.hooks.read().transformer.clone()?;
        let mut track = transformer.derive(from, codec)?;
        let cancel = registry.stats.root_child();
        {
            let mut st = self.state.lock();
            if let Some(d) = st.derived.iter_mut().find(|d| d.codec == codec) {
                // Another reader created it meanwhile.
                d.users += 1;
                return Some(d.track.clone());
            }
            st.tx.as_ref()?;
            track.id = st.next_derived;
            st.next_derived = st.next_derived.checked_add(1).unwrap_or(DERIVED_TRACK_BASE);
            st.derived.push(DerivedSlot {
                codec,
                track: track.clone(),
                users: 1,
                cancel: cancel.clone(),
            });
        }
        let guard = registry
            .stats
            .register("transform", Role::Transform, &self.name, None);
        let Some(reader) = Reader::open(self.clone(), guard, Select::Original) else {
            self.release_derived(codec);
            return None;
        };
        tracing::info!(path = %self.name, from = %from.codec, to = %codec,
            "derived track starts (one per path, shared by every reader that takes it)");
        let out = DerivedWriter::new(self.clone(), codec, track.clone(), cancel);
        transformer.start(from.codec, reader, out);
        Some(track)
    }

    /// Gives back one user of the derived track in `codec`; the last one stops its transform.
    pub(crate) fn release_derived(&self, codec: CodecId) {
        let mut st = self.state.lock();
        let Some(i) = st.derived.iter().position(|d| d.codec == codec) else {
            return;
        };
        st.derived[i].users -= 1;
        if st.derived[i].users == 0 {
            let d = st.derived.remove(i);
            d.cancel.cancel();
            tracing::info!(path = %self.name, codec = %codec, "derived track stops: no reader takes it");
        }
    }

    /// Writes one frame of a derived track: to every reader and to the GOP cache. False when
    /// the derived track is gone (its last reader left, or the path ended).
    pub(crate) fn write_derived(&self, codec: CodecId, id: TrackId, mut frame: Frame) -> bool {
        let mut st = self.state.lock();
        if !st.derived.iter().any(|d| d.codec == codec && d.track.id == id) {
            return false;
        }
        frame.track = id;
        let frame = Arc::new(frame);
        if st.gop_valid {
            st.gop_bytes += frame.data.len();
            st.gop.push(frame.clone());
        }
        match &st.tx {
            Some(tx) => {
                let _ = tx.send(Event::Frame(frame));
                let due = st.pacer.due();
                drop(st);
                due.into_iter().for_each(Waker::wake);
                true
            }
            None => false,
        }
    }

    pub(crate) fn request_keyframe(&self) {
        let mut st = self.state.lock();
        match &st.keyframe {
            Some(n) => n.notify_one(),
            None => st.keyframe_pending = true,
        }
    }
}

impl PathState {
    pub(crate) fn subscribe(&mut self) -> Option<broadcast::Receiver<Event>> {
        let rx = self.tx.as_ref()?.subscribe();
        self.readers += 1;
        Some(rx)
    }
    pub(crate) fn reader_left(&mut self) {
        self.readers = self.readers.saturating_sub(1);
    }
    pub(crate) fn max_lags(&self) -> u32 {
        self.options.max_lags
    }
    pub(crate) fn queue_frames(&self) -> usize {
        self.options.queue_frames.max(16)
    }
    pub(crate) fn has_publisher(&self) -> bool {
        self.publisher.is_some()
    }
    /// Whether the path's stream is over (no queue any more).
    pub(crate) fn ended(&self) -> bool {
        self.tx.is_none()
    }
}

/// Whether `path` is reserved for what the server derives (renditions): a segment starts with `~`,
/// as in `live/cam1/~720p`. Publishers can never take such a name; readers can read it.
pub fn is_reserved(path: &str) -> bool {
    path.split('/').any(|s| s.starts_with('~'))
}

/// Checks a path name: segments of `[A-Za-z0-9._~-]`, separated by single `/`.
fn validate_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty");
    }
    if path.len() > 256 {
        return Err("longer than 256 bytes");
    }
    for seg in path.split('/') {
        if seg.is_empty() {
            return Err("empty segment");
        }
        if seg == "." || seg == ".." {
            return Err("relative segment");
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
        {
            return Err("only letters, digits, '.', '_', '~', '-' and '/' are allowed");
        }
    }
    Ok(())
}

/// Keyframe requests for the current publisher of a path, from its readers (a WebRTC viewer's
/// PLI, a new HLS segment, an encoder restart). A request made while the path had no publisher
/// reaches the next one.
#[derive(Debug, Clone)]
pub struct KeyframeRequests {
    notify: Arc<Notify>,
}

impl KeyframeRequests {
    /// Waits for the next request (requests made meanwhile collapse into one).
    pub async fn recv(&self) {
        self.notify.notified().await
    }
}

/// The publishing side of a path. Dropping it starts the path's grace period.
pub struct Publisher {
    shared: Arc<PathShared>,
    registry: Registry,
    generation: u64,
    guard: SessionGuard,
    keyframes: KeyframeRequests,
    started: bool,
    wrote: bool,
    /// Added to every timestamp so a restarted publisher continues the path's timeline.
    offset: i64,
}

impl Publisher {
    pub fn path(&self) -> &str {
        &self.shared.name
    }

    pub fn stats(&self) -> &Arc<SessionStats> {
        self.guard.stats()
    }

    /// Resolves when the session is asked to end (kick, shutdown).
    pub async fn cancelled(&self) {
        self.guard.stats().cancelled().await
    }

    pub fn is_cancelled(&self) -> bool {
        self.guard.stats().is_cancelled()
    }

    /// Keyframe requests of this path's readers, for publishers that can produce a keyframe
    /// on demand (WebRTC: PLI/FIR to the sender; encoders).
    pub fn keyframe_requests(&self) -> KeyframeRequests {
        self.keyframes.clone()
    }

    /// Announces the tracks that follow. Calling it again (a codec change) starts a new epoch.
    pub fn start(&mut self, tracks: Vec<Track>) {
        let mut st = self.shared.state.lock();
        let epoch = st.next_epoch;
        st.next_epoch += 1;
        let info = Arc::new(StreamInfo {
            tracks,
            epoch,
            discontinuity: epoch > 0,
            started_at: SystemTime::now(),
        });
        st.info = Some(info.clone());
        st.gop.clear();
        st.gop_bytes = 0;
        st.gop_valid = false;
        if let Some(tx) = &st.tx {
            let _ = tx.send(Event::Start(info.clone()));
        }
        st.pacer.wake_all();
        let attach = !std::mem::replace(&mut st.outputs_attached, true);
        let first = !self.started;
        self.started = true;
        drop(st);
        self.guard.stats().set_state(SessionState::Live);
        if first {
            tracing::info!(path = %self.shared.name, tracks = %describe(&info.tracks), "stream started");
            self.registry.events().emit(ServerEvent::Published {
                path: self.shared.name.clone(),
                session: self.guard.stats().id,
                protocol: self.guard.stats().protocol,
            });
        } else {
            tracing::info!(path = %self.shared.name, tracks = %describe(&info.tracks), "stream parameters changed");
        }
        if attach {
            // Before any frame is written: the outputs' readers begin with this start.
            self.registry.attach_outputs(&self.shared);
        }
    }

    /// Hands one frame to every reader. Never waits. Frames before [`start`](Self::start) are dropped.
    pub fn write(&mut self, mut frame: Frame) {
        if !self.started || frame.track >= DERIVED_TRACK_BASE {
            return;
        }
        let stats = self.guard.stats();
        stats.frames_in.fetch_add(1, Relaxed);
        let mut st = self.shared.state.lock();
        let len = frame.data.len();
        st.frames_in += 1;
        st.bytes_in += len as u64;
        if !self.wrote {
            self.wrote = true;
            // A publisher that takes over a path continues after the previous one's last frame,
            // so every reader sees one monotonic timeline.
            if let Some(last) = st.last_dts {
                self.offset = last + CLOCK_RATE / 30 - frame.dts;
            }
        }
        frame.shift(self.offset);
        st.last_dts = Some(st.last_dts.map_or(frame.dts, |l| l.max(frame.dts)));

        let info = st.info.clone();
        let is_video = info
            .as_ref()
            .and_then(|i| i.tracks.iter().find(|t| t.id == frame.track))
            .is_some_and(|t| t.kind() == MediaKind::Video);
        let has_video = info
            .as_ref()
            .is_some_and(|i| i.tracks.iter().any(|t| t.kind() == MediaKind::Video));
        let frame = Arc::new(frame);
        if has_video {
            if is_video && frame.keyframe {
                st.gop.clear();
                st.gop_bytes = 0;
                st.gop_valid = true;
            }
            if st.gop_valid {
                st.gop_bytes += len;
                if st.gop_bytes > st.options.gop_cache_max_bytes {
                    tracing::warn!(path = %self.shared.name, limit = st.options.gop_cache_max_bytes,
                        "GOP larger than the GOP cache limit; new readers will wait for the next keyframe");
                    st.gop.clear();
                    st.gop_bytes = 0;
                    st.gop_valid = false;
                } else {
                    st.gop.push(frame.clone());
                }
            }
        }
        if let Some(tx) = &st.tx {
            let _ = tx.send(Event::Frame(frame));
        }
        let due = st.pacer.due();
        drop(st);
        due.into_iter().for_each(Waker::wake);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let grace = {
            let mut st = self.shared.state.lock();
            st.publisher = None;
            st.keyframe = None;
            st.pacer.wake_all();
            st.options.grace
        };
        let path = self.shared.name.clone();
        tracing::info!(%path, grace_ms = grace.as_millis() as u64, "publisher left");
        self.registry.events().emit(ServerEvent::Unpublished {
            path,
            session: self.guard.stats().id,
        });
        let registry = self.registry.clone();
        let shared = self.shared.clone();
        let generation = self.generation;
        let shutting_down = self.registry.stats().is_shutting_down();
        if grace.is_zero() || shutting_down {
            registry.end_path(&shared, generation);
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(grace).await;
                    registry.end_path(&shared, generation);
                });
            }
            // Dropped off the runtime (an SRT session's own thread): the grace period all the
            // same, on a thread of its own (ending the path at once cut the readers off).
            Err(_) => {
                let ended = std::thread::Builder::new().name("grace".into()).spawn({
                    let (registry, shared) = (registry.clone(), shared.clone());
                    move || {
                        std::thread::sleep(grace);
                        registry.end_path(&shared, generation);
                    }
                });
                if ended.is_err() {
                    registry.end_path(&shared, generation);
                }
            }
        }
    }
}

fn describe(tracks: &[Track]) -> String {
    tracks
        .iter()
        .map(|t| match t.kind() {
            MediaKind::Video => format!("{} {}x{}", t.codec, t.width, t.height),
            MediaKind::Audio => format!("{} {} Hz {} ch", t.codec, t.sample_rate, t.channels),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
