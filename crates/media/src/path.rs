//! Paths and their registry: who publishes where, the GOP cache, and the publisher grace period.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::reader::{Event, Reader, StreamInfo};
use crate::stats::{PathSnapshot, Role, SessionGuard, SessionStats, StatsStore};
use crate::{Frame, MediaKind, PublishError, ReadError, Track, CLOCK_RATE};

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

/// Lifecycle events of paths, for the wiring (HLS muxers, recorders) and the event bus.
#[derive(Debug, Clone)]
pub enum CoreEvent {
    /// A publisher started a stream on the path (first time or after a restart).
    Published { path: Arc<str>, protocol: &'static str },
    /// The publisher left; readers are kept for the grace period.
    Unpublished { path: Arc<str> },
    /// The path has no publisher and its grace period is over; readers were closed.
    Ended { path: Arc<str> },
}

type Resolver = dyn Fn(&str) -> Option<PathOptions> + Send + Sync;

/// All live paths. Cheap to clone; share one per server.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

struct RegistryInner {
    paths: Mutex<HashMap<Arc<str>, Arc<PathShared>>>,
    stats: Arc<StatsStore>,
    resolver: Mutex<Arc<Resolver>>,
    events: broadcast::Sender<CoreEvent>,
}

pub(crate) struct PathShared {
    pub(crate) name: Arc<str>,
    pub(crate) state: Mutex<PathState>,
}

pub(crate) struct PathState {
    options: PathOptions,
    tx: Option<broadcast::Sender<Event>>,
    pub(crate) info: Option<Arc<StreamInfo>>,
    /// Frames since the latest video keyframe (valid only when `gop_valid`).
    pub(crate) gop: Vec<Arc<Frame>>,
    gop_bytes: usize,
    pub(crate) gop_valid: bool,
    publisher: Option<u64>,
    publisher_protocol: &'static str,
    generation: u64,
    next_epoch: u64,
    last_dts: Option<i64>,
    readers: u64,
    bytes_in: u64,
    frames_in: u64,
}

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
                events: broadcast::channel(1024).0,
            }),
        }
    }

    /// Replaces the options resolver (config reload); applies to paths that start from now on.
    pub fn set_resolver(&self, resolver: impl Fn(&str) -> Option<PathOptions> + Send + Sync + 'static) {
        *self.inner.resolver.lock() = Arc::new(resolver);
    }

    pub fn stats(&self) -> &Arc<StatsStore> {
        &self.inner.stats
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<CoreEvent> {
        self.inner.events.subscribe()
    }

    /// Claims `path` for a publisher. Refused if another publisher holds it.
    pub fn publish(&self, path: &str, session: SessionInfo) -> Result<Publisher, PublishError> {
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
                    let p = Arc::new(PathShared::new(path.into(), options));
                    paths.insert(p.name.clone(), p.clone());
                    p
                }
            }
        };
        let generation = {
            let mut st = shared.state.lock();
            if st.publisher.is_some() {
                return Err(PublishError::PathBusy {
                    path: path.to_owned(),
                });
            }
            if st.tx.is_none() {
                st.tx = Some(broadcast::channel(st.options.queue_frames.max(16)).0);
            }
            st.generation += 1;
            st.publisher_protocol = session.protocol;
            st.generation
        };
        let guard = self
            .inner
            .stats
            .register(session.protocol, Role::Publisher, path, session.remote);
        shared.state.lock().publisher = Some(guard.stats().id);
        Ok(Publisher {
            shared,
            registry: self.clone(),
            generation,
            guard,
            started: false,
            wrote: false,
            offset: 0,
        })
    }

    /// Opens a reader on `path`, starting at the latest keyframe.
    pub fn read(&self, path: &str, session: SessionInfo) -> Result<Reader, ReadError> {
        let shared = self.inner.paths.lock().get(path).cloned();
        let Some(shared) = shared else {
            if let Err(reason) = validate_path(path) {
                return Err(ReadError::InvalidPath {
                    path: path.to_owned(),
                    reason,
                });
            }
            return Err(ReadError::NoStream {
                path: path.to_owned(),
            });
        };
        let guard = self
            .inner
            .stats
            .register(session.protocol, Role::Reader, path, session.remote);
        Reader::open(shared, guard).ok_or_else(|| ReadError::NoStream {
            path: path.to_owned(),
        })
    }

    /// Snapshots of every path, sorted by name.
    pub fn paths(&self) -> Vec<PathSnapshot> {
        let paths: Vec<_> = self.inner.paths.lock().values().cloned().collect();
        let mut v: Vec<_> = paths
            .iter()
            .map(|p| {
                let st = p.state.lock();
                PathSnapshot {
                    name: p.name.to_string(),
                    online: st.publisher.is_some(),
                    tracks: st.info.as_ref().map(|i| i.tracks.clone()).unwrap_or_default(),
                    readers: st.readers,
                    bytes_in: st.bytes_in,
                    frames_in: st.frames_in,
                    epoch: st.next_epoch.saturating_sub(1),
                }
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn emit(&self, ev: CoreEvent) {
        let _ = self.inner.events.send(ev);
    }

    fn end_path(&self, shared: &Arc<PathShared>, generation: u64) {
        {
            let mut st = shared.state.lock();
            if st.publisher.is_some() || st.generation != generation {
                return;
            }
            st.tx = None;
            st.info = None;
            st.gop.clear();
            st.gop_bytes = 0;
        }
        let mut paths = self.inner.paths.lock();
        if paths.get(&shared.name).is_some_and(|p| Arc::ptr_eq(p, shared)) {
            paths.remove(&shared.name);
        }
        drop(paths);
        tracing::debug!(path = %shared.name, "path ended");
        self.emit(CoreEvent::Ended {
            path: shared.name.clone(),
        });
    }
}

impl PathShared {
    fn new(name: Arc<str>, options: PathOptions) -> Self {
        PathShared {
            name,
            state: Mutex::new(PathState {
                options,
                tx: None,
                info: None,
                gop: Vec::new(),
                gop_bytes: 0,
                gop_valid: false,
                publisher: None,
                publisher_protocol: "",
                generation: 0,
                next_epoch: 0,
                last_dts: None,
                readers: 0,
                bytes_in: 0,
                frames_in: 0,
            }),
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

/// The publishing side of a path. Dropping it starts the path's grace period.
pub struct Publisher {
    shared: Arc<PathShared>,
    registry: Registry,
    generation: u64,
    guard: SessionGuard,
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
        let first = !self.started;
        self.started = true;
        drop(st);
        if first {
            tracing::info!(path = %self.shared.name, tracks = %describe(&info.tracks), "stream started");
            self.registry.emit(CoreEvent::Published {
                path: self.shared.name.clone(),
                protocol: self.guard.stats().protocol,
            });
        } else {
            tracing::info!(path = %self.shared.name, tracks = %describe(&info.tracks), "stream parameters changed");
        }
    }

    /// Hands one frame to every reader. Never waits. Frames before [`start`](Self::start) are dropped.
    pub fn write(&mut self, mut frame: Frame) {
        if !self.started {
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
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let grace = {
            let mut st = self.shared.state.lock();
            st.publisher = None;
            st.options.grace
        };
        let path = self.shared.name.clone();
        tracing::info!(%path, grace_ms = grace.as_millis() as u64, "publisher left");
        self.registry.emit(CoreEvent::Unpublished { path });
        let registry = self.registry.clone();
        let shared = self.shared.clone();
        let generation = self.generation;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if !grace.is_zero() => {
                rt.spawn(async move {
                    tokio::time::sleep(grace).await;
                    registry.end_path(&shared, generation);
                });
            }
            _ => registry.end_path(&shared, generation),
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
