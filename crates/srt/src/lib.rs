//! SRT ingest and read over libsrt, bridged to the media core: a listener that asks the core's
//! access policy at the handshake (the streamid's user and password are the request's
//! credentials), a caller that pulls from a remote listener, and per-connection link statistics
//! in the core's stats store.
//!
//! Why libsrt: it is the reference implementation that ffmpeg, OBS, vMix, Larix and hardware
//! encoders use, so interoperability, encryption and loss recovery are theirs by construction;
//! the pure-Rust srt-tokio was measured losing messages towards libsrt under loss. We bind its
//! C API ourselves (`sys`, `socket`: the only unsafe code in the project) against Debian's
//! libsrt 1.5, found with pkg-config.
//!
//! Threads, not the async runtime: each SRT connection runs on its own thread with blocking
//! libsrt calls (with one-second timeouts so that stats refresh, kicks and shutdown are noticed), and
//! talks to the core through its synchronous publisher API or by blocking on a reader. libsrt
//! already runs its own sender/receiver threads per socket, and an SRT server holds tens to a
//! few hundred connections, so one more thread each is cheap and keeps the code simple.

mod session;
pub mod socket;
pub mod streamid;
mod sys;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use session::{
    check_caller_url, pull_once, spawn_listener, spawn_pusher, Blame, PushReport, PushSettings, SessionError,
};
pub use socket::SrtError;
pub use streamid::{Mode, StreamId};

/// Rejection codes the listener sends back (SRT access-control convention, 1000 + HTTP status).
pub mod reject {
    pub use crate::sys::{
        SRT_REJX_BAD_REQUEST as BAD_REQUEST, SRT_REJX_CONFLICT as CONFLICT, SRT_REJX_FORBIDDEN as FORBIDDEN,
        SRT_REJX_NOTFOUND as NOT_FOUND, SRT_REJX_UNAUTHORIZED as UNAUTHORIZED,
    };
}

/// Per-path SRT settings, as the server's configuration resolves them.
#[derive(Debug, Clone, PartialEq)]
pub struct PathSettings {
    /// Passphrase publishers must use (10 to 79 characters), if any.
    pub publish_passphrase: Option<String>,
    /// Passphrase readers must use, if any.
    pub read_passphrase: Option<String>,
    /// TSBPD latency.
    pub latency: Duration,
    /// Maximum send bandwidth in bytes per second (0: libsrt's default).
    pub max_bandwidth: i64,
    /// Maximum payload per packet (1316 = 7 MPEG-TS packets).
    pub payload_size: i32,
}

impl Default for PathSettings {
    fn default() -> Self {
        PathSettings {
            publish_passphrase: None,
            read_passphrase: None,
            latency: Duration::from_millis(200),
            max_bandwidth: 0,
            payload_size: 1316,
        }
    }
}

/// Resolves a path to its SRT settings, or `None` when the path is not configured.
pub type Resolver = dyn Fn(&str) -> Option<PathSettings> + Send + Sync;

/// What the listener needs.
#[derive(Clone)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    pub resolve: Arc<Resolver>,
    /// A publisher that sends nothing for this long is disconnected.
    pub idle_timeout: Duration,
}
