//! Sans-IO container formats: FLV (and AMF0), MPEG-TS and fMP4/CMAF, read and written from the
//! media core's types, and the segmenter that cuts frames into CMAF/TS segments and parts. No I/O:
//! callers hand in bytes (and the time) and get bytes back.

pub mod amf0;
pub mod codec_info;
pub mod flv;
pub mod fmp4;
pub mod fmp4_demux;
pub mod segmenter;
pub mod ts;
pub mod ts_demux;

/// Errors of the container parsers and writers.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    #[error("AMF0: {0}")]
    Amf0(&'static str),
    #[error("FLV: {0}")]
    Flv(String),
    #[error("MPEG-TS: {0}")]
    Ts(String),
    #[error("fMP4: {0}")]
    Fmp4(String),
}
