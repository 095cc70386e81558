//! The stats store: counters of every session and path, updated by their owners and read by snapshot.
//!
//! Owners bump atomics on the hot path; the API, metrics and dashboard take snapshots.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::Track;

/// Whether a session publishes into a path or reads from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Reader,
}

/// Counters of one session (a publisher or reader connection).
#[derive(Debug)]
pub struct SessionStats {
    pub id: u64,
    pub protocol: &'static str,
    pub role: Role,
    pub path: String,
    pub remote: Option<SocketAddr>,
    pub started: SystemTime,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    /// Frames a reader skipped because it fell behind.
    pub frames_dropped: AtomicU64,
    /// Transport link statistics (SRT, WebRTC), refreshed by the session about every second.
    pub link: Mutex<Option<LinkStats>>,
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
    pub fn snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            id: self.id,
            protocol: self.protocol,
            role: self.role,
            path: self.path.clone(),
            remote: self.remote,
            started: self.started,
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            frames_in: self.frames_in.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            frames_dropped: self.frames_dropped.load(Relaxed),
            link: self.link.lock().clone(),
        }
    }
}

/// A point-in-time copy of [`SessionStats`].
#[derive(Debug, Clone)]
pub struct SessionSnapshot {
    pub id: u64,
    pub protocol: &'static str,
    pub role: Role,
    pub path: String,
    pub remote: Option<SocketAddr>,
    pub started: SystemTime,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub frames_dropped: u64,
    pub link: Option<LinkStats>,
}

/// A point-in-time view of one path.
#[derive(Debug, Clone)]
pub struct PathSnapshot {
    pub name: String,
    /// Whether a publisher is connected now.
    pub online: bool,
    pub tracks: Vec<Track>,
    pub readers: u64,
    pub bytes_in: u64,
    pub frames_in: u64,
    /// Publisher restarts seen on this path.
    pub epoch: u64,
}

/// Every live session's counters, by id.
#[derive(Debug, Default)]
pub struct StatsStore {
    sessions: Mutex<HashMap<u64, Arc<SessionStats>>>,
    next_id: AtomicU64,
}

impl StatsStore {
    pub(crate) fn register(
        self: &Arc<Self>,
        protocol: &'static str,
        role: Role,
        path: &str,
        remote: Option<SocketAddr>,
    ) -> SessionGuard {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let stats = Arc::new(SessionStats {
            id,
            protocol,
            role,
            path: path.to_owned(),
            remote,
            started: SystemTime::now(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            link: Mutex::new(None),
        });
        self.sessions.lock().insert(id, stats.clone());
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
        if let Some(store) = self.store.upgrade() {
            store.sessions.lock().remove(&self.stats.id);
        }
    }
}
