//! Tracks: what a stream carries, with the codec parameters a decoder or muxer needs.

use bytes::Bytes;

/// Index of a track within its stream (0, 1, ...).
pub type TrackId = u8;

/// Whether a track is audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Video,
    Audio,
}

/// The codecs the core knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CodecId {
    H264,
    H265,
    Av1,
    Vp8,
    Vp9,
    Aac,
    Opus,
    Mp3,
    /// AC-3 (Dolby Digital), passed through where the output carries it.
    Ac3,
    /// G.711 A-law.
    Pcma,
    /// G.711 µ-law.
    Pcmu,
}

impl CodecId {
    pub fn kind(self) -> MediaKind {
        match self {
            CodecId::H264 | CodecId::H265 | CodecId::Av1 | CodecId::Vp8 | CodecId::Vp9 => MediaKind::Video,
            _ => MediaKind::Audio,
        }
    }

    /// Short lower-case name, as shown in logs, the API and metrics.
    pub fn name(self) -> &'static str {
        match self {
            CodecId::H264 => "h264",
            CodecId::H265 => "h265",
            CodecId::Av1 => "av1",
            CodecId::Vp8 => "vp8",
            CodecId::Vp9 => "vp9",
            CodecId::Aac => "aac",
            CodecId::Opus => "opus",
            CodecId::Mp3 => "mp3",
            CodecId::Ac3 => "ac3",
            CodecId::Pcma => "pcma",
            CodecId::Pcmu => "pcmu",
        }
    }
}

impl std::fmt::Display for CodecId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One elementary stream of a [`StreamInfo`](crate::StreamInfo).
///
/// `config` holds the codec configuration in its MP4 form, which is also what FLV carries:
/// H.264 `AVCDecoderConfigurationRecord`, H.265 `HEVCDecoderConfigurationRecord`,
/// AV1 `AV1CodecConfigurationRecord`, VP9 `vpcC` payload, AAC `AudioSpecificConfig`, Opus `OpusHead`
/// (or empty when the codec has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub id: TrackId,
    pub codec: CodecId,
    pub config: Bytes,
    /// Video only: coded picture size in pixels (0 if unknown).
    pub width: u32,
    pub height: u32,
    /// Audio only: sampling rate in Hz and channel count (0 if unknown).
    pub sample_rate: u32,
    pub channels: u8,
}

impl Track {
    pub fn video(id: TrackId, codec: CodecId, config: Bytes, width: u32, height: u32) -> Self {
        Track {
            id,
            codec,
            config,
            width,
            height,
            sample_rate: 0,
            channels: 0,
        }
    }

    pub fn audio(id: TrackId, codec: CodecId, config: Bytes, sample_rate: u32, channels: u8) -> Self {
        Track {
            id,
            codec,
            config,
            width: 0,
            height: 0,
            sample_rate,
            channels,
        }
    }

    pub fn kind(&self) -> MediaKind {
        self.codec.kind()
    }
}
