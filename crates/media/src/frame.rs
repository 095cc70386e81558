//! Frames: access units shared by every reader, with a per-protocol cache of their wire form.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::TrackId;

/// Wire forms that more than one reader of a frame needs, built once per frame and shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum WireForm {
    /// The FLV tag body (RTMP audio/video message payload), used by RTMP play and HTTP-FLV.
    FlvBody = 0,
    /// The PES payload for MPEG-TS (Annex B video, ADTS audio).
    Pes = 1,
    /// The complete chunked RTMP message (headers included) at the server's outgoing chunk size.
    RtmpMessage = 2,
}

const WIRE_FORMS: usize = 3;

/// One access unit of one track.
///
/// Payload forms (one canonical form per codec; adapters convert at the edges):
/// - H.264 / H.265: NAL units, each prefixed by its 4-byte big-endian length (AVCC/HVCC form).
/// - AV1: OBUs in the low-overhead format with sizes, as in MP4 samples.
/// - VP8 / VP9: the frame as in MP4 samples.
/// - AAC: one raw access unit (no ADTS header). Opus: one packet. MP3: one frame.
/// - G.711: the raw samples.
#[derive(Debug)]
pub struct Frame {
    pub track: TrackId,
    /// Decode timestamp in [`CLOCK_RATE`](crate::CLOCK_RATE) ticks.
    pub dts: i64,
    /// Presentation timestamp in [`CLOCK_RATE`](crate::CLOCK_RATE) ticks.
    pub pts: i64,
    /// A random access point: an IDR/IRAP/key frame for video; always true for audio.
    pub keyframe: bool,
    pub data: Bytes,
    wire: [OnceLock<Bytes>; WIRE_FORMS],
    rtp: OnceLock<Arc<[Arc<[u8]>]>>,
}

impl Frame {
    pub fn new(track: TrackId, dts: i64, pts: i64, keyframe: bool, data: Bytes) -> Self {
        Frame {
            track,
            dts,
            pts,
            keyframe,
            data,
            wire: Default::default(),
            rtp: OnceLock::new(),
        }
    }

    /// Composition offset (PTS - DTS) in ticks.
    pub fn cts(&self) -> i64 {
        self.pts - self.dts
    }

    /// Returns this frame's `form`, building it with `build` the first time any reader asks.
    pub fn wire(&self, form: WireForm, build: impl FnOnce(&Frame) -> Bytes) -> Bytes {
        self.wire[form as usize].get_or_init(|| build(self)).clone()
    }

    /// The frame's RTP payloads (WebRTC), packetized once with `build` and shared by every reader.
    pub fn rtp_payloads(&self, build: impl FnOnce(&Frame) -> Arc<[Arc<[u8]>]>) -> Arc<[Arc<[u8]>]> {
        self.rtp.get_or_init(|| build(self)).clone()
    }

    pub(crate) fn shift(&mut self, offset: i64) {
        self.dts += offset;
        self.pts += offset;
    }
}

impl Clone for Frame {
    fn clone(&self) -> Self {
        Frame::new(self.track, self.dts, self.pts, self.keyframe, self.data.clone())
    }
}
