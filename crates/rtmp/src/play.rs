//! Core → player: turns a reader's events into RTMP messages, sharing each frame's encoding.

use bytes::Bytes;
use sluice_container::amf0::Amf0Value;
use sluice_container::flv;
use sluice_media::{ticks_to_ms, Frame, FrameForm, MediaKind, StreamInfo};

/// A frame as a complete chunked RTMP message at the server's chunk size, as a [`FrameForm`].
struct RtmpMessage;

impl FrameForm for RtmpMessage {
    type Value = bytes::Bytes;
}

use crate::chunk::ChunkEncoder;
use crate::control::{self, CSID_AUDIO, CSID_VIDEO, STREAM_ID};

/// Per-reader state of an RTMP play session.
#[derive(Debug)]
pub struct Play {
    enc: ChunkEncoder,
    last_ms: u32,
}

fn csid(kind: MediaKind) -> u32 {
    match kind {
        MediaKind::Video => CSID_VIDEO,
        MediaKind::Audio => CSID_AUDIO,
    }
}

impl Play {
    pub fn new(enc: ChunkEncoder) -> Self {
        Play { enc, last_ms: 0 }
    }

    /// `onMetaData` and the sequence headers for a (re)started stream.
    pub fn start(&mut self, info: &StreamInfo, out: &mut Vec<Bytes>) {
        let meta = flv::metadata(info);
        out.push(control::data(
            &self.enc,
            STREAM_ID,
            self.last_ms,
            &[Amf0Value::string("onMetaData"), meta],
        ));
        for t in info.tracks.iter().filter(|t| flv::supports(t.codec)) {
            if let Some(sh) = flv::sequence_header(t) {
                out.push(self.enc.encode_to_bytes(
                    csid(t.kind()),
                    self.last_ms,
                    flv::tag_type(t),
                    STREAM_ID,
                    &sh,
                ));
            }
        }
    }

    /// One frame as a complete chunked message, built once per frame for every RTMP reader
    /// (all use the server's chunk size, fixed chunk stream ids and message stream id 1).
    pub fn frame(&mut self, info: &StreamInfo, frame: &Frame, out: &mut Vec<Bytes>) {
        let Some(track) = info.track(frame.track).filter(|t| flv::supports(t.codec)) else {
            return;
        };
        let ms = ticks_to_ms(frame.dts).max(0) as u32;
        self.last_ms = ms;
        let enc = self.enc;
        out.push(frame.form_infallible::<RtmpMessage>(|f| {
            let body = flv::frame_body(track, f);
            enc.encode_to_bytes(csid(track.kind()), ms, flv::tag_type(track), STREAM_ID, &body)
        }));
    }
}
