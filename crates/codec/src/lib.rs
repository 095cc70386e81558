//! Sans-IO codec bitstream helpers: configuration records, NAL framing, audio headers.
//!
//! Everything here parses bytes that came from the network: no function panics on any input,
//! and every length read is checked against the data present.

pub mod aac;
pub mod avc;
mod bits;
pub mod hevc;
pub mod nal;
pub mod vpx;

/// Errors of the codec parsers.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    #[error("AVCDecoderConfigurationRecord: {0}")]
    AvcConfig(&'static str),
    #[error("HEVCDecoderConfigurationRecord: {0}")]
    HevcConfig(&'static str),
    #[error("H.264 SPS: {0}")]
    AvcSps(String),
    #[error("H.265 SPS: {0}")]
    HevcSps(&'static str),
    #[error("AudioSpecificConfig: {0}")]
    AacConfig(&'static str),
    #[error("NAL units: {0}")]
    Nal(&'static str),
}
