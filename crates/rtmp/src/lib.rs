//! RTMP and enhanced RTMP: handshake, chunk stream, AMF0 commands, and server sessions.
//!
//! Written by hand: no maintained crate covers server publish and play, enhanced RTMP and any
//! transport stream (TLS later) together (see ARCHITECTURE.md). The wire codecs ([`handshake`],
//! [`chunk`], and AMF0/FLV in `sluice-container`) are sans-IO; [`serve`] is the thin tokio adapter
//! that runs one connection against the media core: [`ingest`] turns a publisher's messages into
//! core frames, [`play`] turns a reader's frames into RTMP messages.

pub mod chunk;
pub mod client;
pub mod control;
pub mod handshake;
pub mod ingest;
pub mod play;
pub mod pull;
mod server;
pub mod session;

use std::time::Duration;

pub use server::serve;

/// Errors that end an RTMP session, worded for the log line that reports it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake: {0}")]
    Handshake(&'static str),
    #[error("chunk stream: {0}")]
    Chunk(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Container(#[from] sluice_container::Error),
    #[error("{0}")]
    Codec(#[from] sluice_codec::Error),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("publish refused: {0}")]
    Publish(#[from] sluice_media::PublishError),
    #[error("play refused: {0}")]
    Read(#[from] sluice_media::ReadError),
    #[error("access refused: {0}")]
    Denied(sluice_media::access::Denied),
}

/// Settings of the RTMP server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Outgoing chunk size.
    pub chunk_size: u32,
    /// The handshake and the commands up to publish/play must complete within this time.
    pub handshake_timeout: Duration,
    /// A publisher that sends nothing for this long is disconnected.
    pub idle_timeout: Duration,
    /// Bounds on what a peer may make the chunk decoder hold.
    pub limits: chunk::Limits,
    /// After each write to a player, wait this long before the next, so that the frames that
    /// arrive meanwhile go out in one write (fewer wakeups and syscalls per viewer, at most
    /// this much added delay). Zero writes every frame at once.
    pub play_coalesce: Duration,
    /// The protocol sessions are shown and authorized as: `rtmp`, or `rtmps` behind TLS.
    pub protocol: &'static str,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            chunk_size: 4096,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            limits: chunk::Limits::default(),
            play_coalesce: Duration::from_millis(100),
            protocol: "rtmp",
        }
    }
}
