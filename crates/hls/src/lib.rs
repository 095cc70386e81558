//! HLS delivery from the media core. One task per live path ([`spawn`], in `task`) reads a core
//! reader and drives the sans-IO segmenter of `sluice-container`, which cuts fMP4 (CMAF) or
//! MPEG-TS segments; this crate keeps them in memory ([`HlsStore`], [`HlsStream`]) over a sliding
//! window and renders the multivariant and media playlists (RFC 8216) from a typed model
//! ([`playlist`]).

mod dash;
pub mod playlist;
mod readiness;
mod store;
mod task;
mod viewers;

use std::time::Duration;

pub use dash::DashFile;
pub use readiness::{Readiness, ReadinessSnapshot, ALL_PARTS, BUCKETS as READINESS_BUCKETS};
pub use store::{HlsStore, HlsStream, PlaylistError, PlaylistQuery};
pub use task::{spawn, spawn_after};
pub use viewers::{ViewerCounts, Viewers};

/// Segment container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// Low-Latency HLS (RFC 8216bis): fMP4/CMAF segments cut in parts listed as they are made
    /// (`EXT-X-PART`, `EXT-X-PRELOAD-HINT`), blocking playlist reload and delta updates.
    #[default]
    LowLatency,
    /// fMP4/CMAF segments with an initialization segment (`EXT-X-MAP`).
    Fmp4,
    /// MPEG-TS segments, for old players and set-top boxes.
    MpegTs,
}

/// Settings of one HLS stream.
#[derive(Debug, Clone)]
pub struct HlsConfig {
    pub variant: Variant,
    /// Target segment length; segments are cut on the first keyframe after it.
    pub segment_duration: Duration,
    /// Segments listed in the media playlist.
    pub segment_count: usize,
    /// Segments kept after they leave the playlist, for players still fetching them.
    pub segment_keep: usize,
    /// A segment is cut even without a keyframe when it grows past this (bounded memory).
    pub max_segment_bytes: usize,
    /// LL-HLS: parts of at most this (EXT-X-PART-INF:PART-TARGET).
    pub part_duration: Duration,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            variant: Variant::LowLatency,
            segment_duration: Duration::from_secs(1),
            segment_count: 7,
            segment_keep: 3,
            max_segment_bytes: 64 << 20,
            part_duration: sluice_container::segmenter::DEFAULT_PART_DURATION,
        }
    }
}
