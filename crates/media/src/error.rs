//! Errors the core returns to protocol adapters, worded for the client and the log.

/// Why a publisher was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// Another publisher holds the path.
    #[error("path {path} is busy: another publisher is already streaming to it")]
    PathBusy { path: String },
    /// The path name is not valid.
    #[error("invalid path name {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// The configuration has `[paths]` tables and none matches this path.
    #[error("path {path} is not configured: no [paths] table matches it")]
    NotConfigured { path: String },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Why a reader could not start or had to stop.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// Nobody publishes on the path.
    #[error("no stream is available on path {path}")]
    NoStream { path: String },
    /// The path name is not valid.
    #[error("invalid path name {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// The stream ended (publisher gone and grace period over).
    #[error("stream ended")]
    Ended,
    /// The reader fell behind too often and was disconnected.
    #[error("reader is too slow: fell behind {lags} times, {dropped} frames dropped")]
    TooSlow { lags: u32, dropped: u64 },
    /// The session was asked to end (kicked through the API, or the server is shutting down).
    #[error("session ended: {reason}")]
    Closed { reason: String },
}
