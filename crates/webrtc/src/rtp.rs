//! Per-frame payload forms for RTP, built once per frame and shared by every WHEP session
//! through the core's frame cache: Annex B without access unit delimiters, and H.264 RTP payloads.

use std::sync::Arc;

use bytes::Bytes;
use sluice_codec::nal::NalCodec;
use sluice_media::{CodecId, Frame, FrameForm, Track};
use str0m::unversioned::{H264Packetizer, Packetizer};

/// Why a frame cannot be sent over RTP (the frame is skipped; the next reader tries again).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PayloadError {
    #[error("malformed bitstream: {0}")]
    Bitstream(sluice_codec::Error),
    #[error("cannot packetize: {0}")]
    Packetize(String),
}

/// Payload bytes per RTP packet: leaves room for the RTP header, extensions and the SRTP tag
/// within the ~1200-byte datagrams WebRTC uses.
const RTP_PAYLOAD_MTU: usize = 1100;

/// A frame's H.264 RTP payloads (single NAL units and FU-A fragments, RFC 6184), made once per
/// frame with str0m's own packetizer and shared by every WHEP session: the first viewer to send
/// the frame builds them, the others take the cached ones.
pub(crate) fn rtp_payloads(nal: Option<&NalForm>, f: &Frame) -> Result<Arc<[Arc<[u8]>]>, PayloadError> {
    f.form::<RtpPayloads, _>(|f| {
        let annexb = video_payload(nal, f)?;
        let mut p = H264Packetizer::default();
        match p.packetize(RTP_PAYLOAD_MTU, &annexb) {
            Ok(v) => Ok(v.into_iter().map(Arc::from).collect()),
            Err(e) => Err(PayloadError::Packetize(e.to_string())),
        }
    })
}

/// A video frame's RTP payloads, as a [`FrameForm`] shared by every WHEP session.
struct RtpPayloads;

impl FrameForm for RtpPayloads {
    type Value = Arc<[Arc<[u8]>]>;
}

/// A video frame in Annex B for the RTP packetizer (parameter sets on keyframes, no access
/// unit delimiter: browsers do not want one), as a [`FrameForm`].
struct AnnexB;

impl FrameForm for AnnexB {
    type Value = Bytes;
}

/// How a stream's H.264/H.265 frames become Annex B.
pub(crate) struct NalForm {
    pub track: Track,
    codec: NalCodec,
    params: Vec<Bytes>,
    length_size: u8,
}

impl NalForm {
    /// `None` for codecs that are sent as they are (VP8, VP9, AV1) or a config that does not parse.
    pub fn of(track: &Track) -> Option<NalForm> {
        let (codec, params, length_size) = match track.codec {
            CodecId::H264 => {
                let c = sluice_codec::avc::AvcConfig::parse(&track.config).ok()?;
                (NalCodec::H264, [c.sps, c.pps].concat(), c.length_size)
            }
            CodecId::H265 => {
                let c = sluice_codec::hevc::HevcConfig::parse(&track.config).ok()?;
                (NalCodec::H265, [c.vps, c.sps, c.pps].concat(), c.length_size)
            }
            _ => return None,
        };
        Some(NalForm {
            track: track.clone(),
            codec,
            params,
            length_size,
        })
    }
}

/// The RTP payloader's input for a video frame: Annex B for H.264/H.265 (with parameter sets
/// on keyframes, the same bytes MPEG-TS carries, built once per frame), the frame as is otherwise.
pub(crate) fn video_payload(nal: Option<&NalForm>, f: &Frame) -> Result<Bytes, PayloadError> {
    let Some(n) = nal else {
        return Ok(f.data.clone());
    };
    f.form::<AnnexB, _>(|f| {
        sluice_codec::nal::avcc_to_annexb_no_aud(n.codec, &f.data, n.length_size, &n.params, f.keyframe)
            .map_err(PayloadError::Bitstream)
    })
}
