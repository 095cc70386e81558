//! The session registry and stats store: every publisher, reader and path output with its id,
//! state, counters and cancel handle. Owners bump atomics on the hot path; the API, metrics and
//! dashboard take snapshots; the API's kick and the server's shutdown cancel through it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::events::{EventBus, ServerEvent};
use crate::Track;

/// What a session does on its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Publisher,
    Reader,
    /// An always-on consumer attached by configuration (HLS packager, recorder, push).
    Output,
    /// A converter that writes a derived track back into its path.
    Transform,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Reader => "reader",
            Role::Output => "output",
            Role::Transform => "transform",
        }
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SessionState {
    /// Connected, not yet moving media (handshake, waiting for tracks or a keyframe).
    Starting = 0,
    /// Moving media.
    Live = 1,
    /// A reader or output whose publisher left: waiting through the grace period.
    Waiting = 2,
    /// Asked to end (kick, shutdown) or ending.
    Closing = 3,
}

impl SessionState {
    pub fn name(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::Live => "live",
            SessionState::Waiting => "waiting",
            SessionState::Closing => "closing",
        }
    }
    fn from_u8(v: u8) -> Self {
        match v {
            0 => SessionState::Starting,
            1 => SessionState::Live,
            2 => SessionState::Waiting,
            _ => SessionState::Closing,
        }
    }
}

/// Counters of one session (a publisher or reader connection).
#[derive(Debug)]
pub struct SessionStats {
    pub id: u64,
    pub protocol: &'static str,
    pub role: Role,
    pub path: Arc<str>,
    pub remote: Option<SocketAddr>,
    pub started: SystemTime,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    /// Frames a reader skipped because it fell behind.
    pub frames_dropped: AtomicU64,
    /// Keyframe requests this session sent (readers) or received (publishers).
    pub keyframe_requests: AtomicU64,
    /// Transport link statistics (SRT, WebRTC), refreshed by the session about every second.
    pub link: Mutex<Option<LinkStats>>,
    state: AtomicU8,
    /// Cancelled by a kick or the server's shutdown; the session ends when it sees it.
    cancel: CancellationToken,
    /// Why the session ended (or the last error of an output), for the log and events.
    reason: Mutex<String>,
    closed: AtomicBool,
}

/// What a packet transport (SRT, WebRTC) reports about its link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkStats {
    /// Connection state as the transport names it ("connected", "broken", ...).
    pub state: &'static str,
    pub rtt_ms: f64,
    pub send_mbps: f64,
    pub recv_mbps: f64,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Packets lost on the way (detected by the receiver, or reported to the sender).
    pub packets_lost: u64,
    pub packets_retransmitted: u64,
    /// Packets dropped because they arrived (or could be sent) too late.
    pub packets_dropped: u64,
    pub naks_sent: u64,
    pub naks_received: u64,
    /// Receive buffer: how much is waiting to be delivered, in time and bytes.
    pub recv_buffer_ms: u64,
    pub recv_buffer_bytes: u64,
    /// Packets that could not be decrypted (wrong passphrase or corruption).
    pub undecryptable: u64,
    /// Configured latency (SRT TSBPD), in milliseconds.
    pub latency_ms: u64,
    /// Keyframe requests (PLI/FIR) received from the peer (WebRTC).
    pub plis: u64,
    /// Interarrival jitter the receiver reports, in milliseconds (WebRTC).
    pub jitter_ms: f64,
    /// The selected ICE candidate pair (WebRTC), empty until one is chosen.
    pub candidate_pair: String,
}

impl SessionStats {
    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Relaxed);
    }
    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Relaxed);
    }
    pub fn state(&self) -> SessionState {
        SessionState::from_u8(self.state.load(Relaxed))
    }
    pub fn set_state(&self, s: SessionState) {
        self.state.store(s as u8, Relaxed);
    }
    /// The token a kick or shutdown cancels. Async sessions select on `cancelled()`; threads
    /// poll `is_cancelled()`.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
    /// Resolves when the session is asked to end.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
    /// Records why the session ends (or an output's last error), shown in events and the API.
    pub fn set_reason(&self, reason: impl Into<String>) {
        *self.reason.lock() = reason.into();
    }
    pub fn reason(&self) -> String {
        self.reason.lock().clone()
    }
    /// Whether the session has ended (its guard was dropped).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }
    pub fn snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            id: self.id,
            protocol: self.protocol,
            role: self.role,
            state: self.state(),
            path: self.path.to_string(),
            remote: self.remote,
            started: self.started,
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            frames_in: self.frames_in.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            frames_dropped: self.frames_dropped.load(Relaxed),
            keyframe_requests: self.keyframe_requests.load(Relaxed),
            link: self.link.lock().clone(),
            reason: self.reason(),
        }
    }
}

/// A point-in-time copy of [`SessionStats`].
#[derive(Debug, Clone)]
pub struct SessionSnapshot {
    pub id: u64,
    pub protocol: &'static str,
    pub role: Role,
    pub state: SessionState,
    pub path: String,
    pub remote: Option<SocketAddr>,
    pub started: SystemTime,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub frames_dropped: u64,
    pub keyframe_requests: u64,
    pub link: Option<LinkStats>,
    /// Why it is ending, or an output's last error; empty otherwise.
    pub reason: String,
}

/// A point-in-time view of one path.
#[derive(Debug, Clone)]
pub struct PathSnapshot {
    pub name: String,
    /// Whether a publisher is connected now.
    pub online: bool,
    /// The publisher's session id and protocol, while one is connected.
    pub publisher: Option<(u64, &'static str)>,
    /// The publisher's tracks.
    pub tracks: Vec<Track>,
    /// Tracks derived from them (audio conversions) while some reader takes them.
    pub derived: Vec<Track>,
    pub readers: u64,
    pub bytes_in: u64,
    pub frames_in: u64,
    /// Publisher restarts seen on this path.
    pub epoch: u64,
    /// When the current stream started.
    pub started_at: Option<SystemTime>,
    /// Path outputs: (name, session id).
    pub outputs: Vec<(String, u64)>,
}

/// Every live session's counters, by id: the session registry.
#[derive(Debug)]
pub struct StatsStore {
    sessions: Mutex<HashMap<u64, Arc<SessionStats>>>,
    next_id: AtomicU64,
    /// Parent of every session's cancel token: cancelling it ends them all (shutdown).
    root: CancellationToken,
    events: Arc<EventBus>,
}

impl Default for StatsStore {
    fn default() -> Self {
        StatsStore {
            sessions: Mutex::default(),
            next_id: AtomicU64::new(0),
            root: CancellationToken::new(),
            events: Arc::new(EventBus::default()),
        }
    }
}

impl StatsStore {
    /// Registers a session; it stays listed until the guard is dropped. Sessions that are not
    /// publishers or readers of a path (none yet) may use it directly.
    pub fn register(
        self: &Arc<Self>,
        protocol: &'static str,
        role: Role,
        path: &str,
        remote: Option<SocketAddr>,
    ) -> SessionGuard {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let path: Arc<str> = path.into();
        let stats = Arc::new(SessionStats {
            id,
            protocol,
            role,
            path: path.clone(),
            remote,
            started: SystemTime::now(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            keyframe_requests: AtomicU64::new(0),
            link: Mutex::new(None),
            state: AtomicU8::new(SessionState::Starting as u8),
            cancel: self.root.child_token(),
            reason: Mutex::new(String::new()),
            closed: AtomicBool::new(false),
        });
        self.sessions.lock().insert(id, stats.clone());
        self.events.emit(ServerEvent::SessionOpened {
            id,
            protocol,
            role,
            path,
            remote,
        });
        SessionGuard {
            stats,
            store: Arc::downgrade(self),
        }
    }

    pub fn sessions(&self) -> Vec<SessionSnapshot> {
        let mut v: Vec<_> = self.sessions.lock().values().map(|s| s.snapshot()).collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// One session's counters.
    pub fn get(&self, id: u64) -> Option<Arc<SessionStats>> {
        self.sessions.lock().get(&id).cloned()
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks session `id` to end (the API's kick). False if there is no such session.
    pub fn kick(&self, id: u64, reason: &str) -> bool {
        let Some(s) = self.get(id) else { return false };
        tracing::info!(session = id, protocol = s.protocol, path = %s.path, "ending session: {reason}");
        s.set_reason(reason);
        s.set_state(SessionState::Closing);
        s.cancel.cancel();
        true
    }

    /// The event bus every session and path reports to.
    pub fn events(&self) -> &Arc<EventBus> {
        &self.events
    }

    /// Asks every session, present and future, to end (server shutdown).
    pub fn shutdown(&self) {
        for s in self.sessions.lock().values() {
            s.set_state(SessionState::Closing);
            if s.reason.lock().is_empty() {
                s.set_reason("server shutting down");
            }
        }
        self.root.cancel();
    }

    pub(crate) fn root_child(&self) -> CancellationToken {
        self.root.child_token()
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.root.is_cancelled()
    }

    /// Waits until every session has ended, up to `timeout`; returns how many are left.
    pub async fn wait_empty(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.len();
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Keeps a session's counters registered; removes them when dropped.
#[derive(Debug)]
pub struct SessionGuard {
    stats: Arc<SessionStats>,
    store: Weak<StatsStore>,
}

impl SessionGuard {
    pub fn stats(&self) -> &Arc<SessionStats> {
        &self.stats
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let s = &self.stats;
        s.closed.store(true, Relaxed);
        if let Some(store) = self.store.upgrade() {
            store.sessions.lock().remove(&s.id);
            store.events.emit(ServerEvent::SessionClosed {
                id: s.id,
                protocol: s.protocol,
                role: s.role,
                path: s.path.clone(),
                reason: s.reason(),
            });
        }
    }
}
