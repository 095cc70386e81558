//! The Sluice media core: the protocol-neutral model of live media and its fan-out.
//!
//! A [`Registry`] owns every [`path`](Registry::publish) (`live/cam1`). A path has at most one
//! [`Publisher`] and any number of [`Reader`]s. A publisher announces its [`Track`]s and then
//! writes [`Frame`]s (access units whose payload is a shared [`bytes::Bytes`], timestamps in the
//! one [`CLOCK_RATE`]). Readers receive the same `Arc<Frame>`s without copying, starting at the
//! latest keyframe (the GOP cache). The publisher never waits for a reader: a reader that falls
//! behind skips to the next keyframe, and one that keeps falling behind is closed.
//!
//! The seams every feature attaches to: the session registry ([`stats`]: id, state, counters,
//! cancel handle of every publisher, reader and output), the [`events`] bus, path [`Outputs`]
//! (always-on consumers attached by configuration), derived tracks ([`Transformer`]: audio
//! conversions written back into the path), keyframe requests routed to whoever publishes,
//! a per-frame cache of derived forms ([`FrameForm`]), and one [`access`] request and policy.
//!
//! This crate knows no protocol and does no network I/O; protocol adapters translate between
//! their wire codecs and these types.

pub mod access;
mod derive;
mod error;
pub mod events;
mod frame;
mod pace;
mod path;
mod reader;
pub mod stats;
mod track;

pub use derive::{DerivedWriter, Transformer};
pub use error::{PublishError, ReadError};
pub use frame::{Frame, FrameForm};
pub use path::{
    is_reserved, KeyframeRequests, OnDemand, OutputSpec, Outputs, PathOptions, Publisher, Registry,
    SessionInfo, DERIVED_TRACK_BASE,
};
pub use reader::{Event, Reader, Select, StreamInfo};
pub use track::{CodecId, MediaKind, Track, TrackId};

/// The clock of every timestamp in the core: 90 kHz, as MPEG-TS and RTP video use.
pub const CLOCK_RATE: i64 = 90_000;

/// Converts milliseconds (RTMP, FLV) to [`CLOCK_RATE`] ticks.
pub const fn ms_to_ticks(ms: i64) -> i64 {
    ms * (CLOCK_RATE / 1000)
}

/// Converts [`CLOCK_RATE`] ticks to milliseconds, rounding towards negative infinity.
pub const fn ticks_to_ms(ticks: i64) -> i64 {
    ticks.div_euclid(CLOCK_RATE / 1000)
}
