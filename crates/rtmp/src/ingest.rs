//! Publisher → core: turns RTMP audio, video and metadata messages into tracks and frames.
//!
//! Waits until every track the publisher announced (in `onMetaData`) has its sequence header,
//! or until about a second of media is buffered, then starts the stream and flushes what it held.

use std::collections::VecDeque;

use bytes::Bytes;
use sluice_codec::aac::AudioSpecificConfig;
use sluice_codec::avc::AvcConfig;
use sluice_codec::hevc::HevcConfig;
use sluice_container::amf0::Amf0Value;
use sluice_container::flv::{self, Tag};
use sluice_media::{ms_to_ticks, CodecId, Frame, Publisher, Track, CLOCK_RATE};

use crate::Error;

const VIDEO: u8 = 0;
const AUDIO: u8 = 1;
/// Bounds on what is held before the stream starts.
const MAX_PENDING_FRAMES: usize = 600;
const MAX_PENDING_BYTES: usize = 32 << 20;

#[derive(Debug, Default)]
pub struct Ingest {
    video: Option<Track>,
    audio: Option<Track>,
    expect_video: Option<bool>,
    expect_audio: Option<bool>,
    meta_width: u32,
    meta_height: u32,
    meta_rate: u32,
    meta_stereo: Option<bool>,
    started: bool,
    pending: VecDeque<Frame>,
    pending_bytes: usize,
    last_ts: Option<u32>,
    wraps: i64,
}

impl Ingest {
    /// Takes `onMetaData` (from `@setDataFrame` or sent directly).
    pub fn metadata(&mut self, meta: &Amf0Value) {
        let num = |k: &str| meta.get(k).and_then(Amf0Value::as_f64);
        let has = |k: &str| {
            meta.get(k)
                .is_some_and(|v| !matches!(v, Amf0Value::Null | Amf0Value::Undefined))
        };
        self.expect_video = Some(has("videocodecid") || num("width").is_some_and(|w| w > 0.0));
        self.expect_audio = Some(has("audiocodecid"));
        self.meta_width = num("width").unwrap_or(0.0).clamp(0.0, 65535.0) as u32;
        self.meta_height = num("height").unwrap_or(0.0).clamp(0.0, 65535.0) as u32;
        self.meta_rate = num("audiosamplerate").unwrap_or(0.0).clamp(0.0, 384000.0) as u32;
        self.meta_stereo = meta.get("stereo").and_then(|v| match v {
            Amf0Value::Boolean(b) => Some(*b),
            _ => None,
        });
    }

    fn dts(&mut self, ts: u32) -> i64 {
        // RTMP timestamps are 32-bit milliseconds: follow them across the wrap (~49.7 days).
        if let Some(last) = self.last_ts {
            if ts < last && last - ts > 0x8000_0000 {
                self.wraps += 1;
            } else if ts > last && ts - last > 0x8000_0000 && self.wraps > 0 {
                self.wraps -= 1; // a late frame from before the wrap
            }
        }
        self.last_ts = Some(ts);
        ms_to_ticks(ts as i64 + (self.wraps << 32))
    }

    pub fn video(&mut self, timestamp: u32, body: &Bytes, publisher: &mut Publisher) -> Result<(), Error> {
        match flv::parse_video(body)? {
            Tag::SequenceHeader { codec, config } => {
                let track = self.video_track(codec, config)?;
                self.set_track(VIDEO, track, publisher);
            }
            Tag::Frame {
                codec,
                keyframe,
                cts_ms,
                data,
            } => {
                if self.video.as_ref().is_some_and(|t| t.codec != codec) {
                    return Err(Error::Protocol(format!(
                        "video codec changed to {codec} without a sequence header"
                    )));
                }
                let dts = self.dts(timestamp);
                let pts = dts + ms_to_ticks(cts_ms as i64);
                let frame = Frame::new(VIDEO, dts, pts, keyframe, data);
                if let Some(t) = &self.video {
                    flv::keep_body(t, &frame, body);
                }
                self.push(frame, publisher);
            }
            Tag::Ignored => {}
        }
        Ok(())
    }

    pub fn audio(&mut self, timestamp: u32, body: &Bytes, publisher: &mut Publisher) -> Result<(), Error> {
        match flv::parse_audio(body)? {
            Tag::SequenceHeader { codec, config } => {
                let track = self.audio_track(codec, config)?;
                self.set_track(AUDIO, track, publisher);
            }
            Tag::Frame { codec, data, .. } => {
                if self.audio.is_none() && !matches!(codec, CodecId::Aac | CodecId::Opus) {
                    // MP3 and G.711 have no sequence header: the first frame defines the track.
                    let track = self.audio_track(codec, Bytes::new())?;
                    self.set_track(AUDIO, track, publisher);
                }
                let dts = self.dts(timestamp);
                let frame = Frame::new(AUDIO, dts, dts, true, data);
                if let Some(t) = &self.audio {
                    flv::keep_body(t, &frame, body);
                }
                self.push(frame, publisher);
            }
            Tag::Ignored => {}
        }
        Ok(())
    }

    fn video_track(&self, codec: CodecId, config: Bytes) -> Result<Track, Error> {
        let (mut w, mut h) = match codec {
            CodecId::H264 => AvcConfig::parse(&config)?.dimensions()?,
            CodecId::H265 => HevcConfig::parse(&config)?.dimensions()?,
            _ => (0, 0),
        };
        if w == 0 || h == 0 {
            (w, h) = (self.meta_width, self.meta_height);
        }
        Ok(Track::video(VIDEO, codec, config, w, h))
    }

    fn audio_track(&self, codec: CodecId, config: Bytes) -> Result<Track, Error> {
        let meta_channels = match self.meta_stereo {
            Some(false) => 1,
            _ => 2,
        };
        let (rate, channels) = match codec {
            CodecId::Aac => {
                let asc = AudioSpecificConfig::parse(&config)?;
                (asc.sample_rate, asc.channels)
            }
            CodecId::Opus => {
                // OpusHead (RFC 7845 §5.1): magic(8) version(1) channels(1) pre-skip(2) rate(4 LE).
                if config.len() < 19 || &config[..8] != b"OpusHead" {
                    return Err(Error::Protocol(
                        "invalid OpusHead in the Opus sequence header".into(),
                    ));
                }
                (48000, config[9])
            }
            CodecId::Pcma | CodecId::Pcmu => (8000, 1),
            _ => (
                if self.meta_rate > 0 { self.meta_rate } else { 44100 },
                meta_channels,
            ),
        };
        Ok(Track::audio(AUDIO, codec, config, rate, channels))
    }

    fn set_track(&mut self, id: u8, track: Track, publisher: &mut Publisher) {
        let slot = if id == VIDEO {
            &mut self.video
        } else {
            &mut self.audio
        };
        if slot.as_ref() == Some(&track) {
            return;
        }
        *slot = Some(track);
        if self.started {
            // New parameters mid-stream (resolution change, encoder restart): a new epoch.
            publisher.start(self.tracks());
        } else {
            self.maybe_start(publisher);
        }
    }

    fn tracks(&self) -> Vec<Track> {
        self.video.iter().chain(self.audio.iter()).cloned().collect()
    }

    fn push(&mut self, frame: Frame, publisher: &mut Publisher) {
        if self.started {
            if self.has_track(frame.track) {
                publisher.write(frame);
            }
            return;
        }
        self.pending_bytes += frame.data.len();
        self.pending.push_back(frame);
        self.maybe_start(publisher);
    }

    fn has_track(&self, id: u8) -> bool {
        if id == VIDEO {
            self.video.is_some()
        } else {
            self.audio.is_some()
        }
    }

    fn maybe_start(&mut self, publisher: &mut Publisher) {
        let video_ready = self.video.is_some() || self.expect_video == Some(false);
        let audio_ready = self.audio.is_some() || self.expect_audio == Some(false);
        let span = match (self.pending.front(), self.pending.back()) {
            (Some(a), Some(b)) => b.dts - a.dts,
            _ => 0,
        };
        let waited_enough = span >= CLOCK_RATE
            || self.pending.len() >= MAX_PENDING_FRAMES
            || self.pending_bytes >= MAX_PENDING_BYTES;
        let ready = (video_ready && audio_ready) || waited_enough;
        if !ready || (self.video.is_none() && self.audio.is_none()) {
            if waited_enough {
                // Nothing decodable after a second of media: keep only the newest frames.
                while self.pending.len() > MAX_PENDING_FRAMES / 2 {
                    if let Some(f) = self.pending.pop_front() {
                        self.pending_bytes -= f.data.len();
                    }
                }
            }
            return;
        }
        self.started = true;
        publisher.start(self.tracks());
        for f in std::mem::take(&mut self.pending) {
            if self.has_track(f.track) {
                publisher.write(f);
            }
        }
        self.pending_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_media::{Event, Registry, SessionInfo};

    const AVCC: &[u8] = include_bytes!("../../codec/testdata/ffmpeg_x264_640x360.avcc");

    fn seq_video() -> Bytes {
        let mut b = vec![0x17, 0, 0, 0, 0];
        b.extend_from_slice(AVCC);
        Bytes::from(b)
    }

    #[tokio::test]
    async fn waits_for_both_sequence_headers_then_flushes() {
        let reg = Registry::default();
        let mut p = reg
            .publish(
                "live/a",
                SessionInfo {
                    protocol: "rtmp",
                    remote: None,
                },
            )
            .unwrap();
        let mut ing = Ingest::default();
        ing.metadata(&Amf0Value::EcmaArray(vec![
            ("videocodecid".into(), Amf0Value::Number(7.0)),
            ("audiocodecid".into(), Amf0Value::Number(10.0)),
        ]));
        ing.video(0, &seq_video(), &mut p).unwrap();
        ing.video(
            0,
            &Bytes::from_static(&[0x17, 1, 0, 0, 0x21, 0, 0, 0, 1, 0x65]),
            &mut p,
        )
        .unwrap();
        assert!(!ing.started, "waits for the audio sequence header");
        let mut r = reg.read(
            "live/a",
            SessionInfo {
                protocol: "t",
                remote: None,
            },
        );
        assert!(r.is_ok());
        ing.audio(0, &Bytes::from_static(&[0xaf, 0, 0x11, 0x90]), &mut p)
            .unwrap();
        assert!(ing.started);
        let r = r.as_mut().unwrap();
        let Some(Ok(Event::Start(info))) = r.try_recv() else {
            panic!()
        };
        assert_eq!(info.tracks.len(), 2);
        assert_eq!((info.tracks[0].width, info.tracks[0].height), (640, 360));
        assert_eq!((info.tracks[1].sample_rate, info.tracks[1].channels), (48000, 2));
        let Some(Ok(Event::Frame(f))) = r.try_recv() else {
            panic!()
        };
        assert_eq!((f.keyframe, f.dts, f.pts), (true, 0, 33 * 90));
    }

    #[tokio::test]
    async fn bad_sequence_header_is_an_error() {
        let reg = Registry::default();
        let mut p = reg
            .publish(
                "live/a",
                SessionInfo {
                    protocol: "rtmp",
                    remote: None,
                },
            )
            .unwrap();
        let mut ing = Ingest::default();
        let err = ing
            .video(0, &Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2]), &mut p)
            .unwrap_err();
        assert!(err.to_string().contains("AVCDecoderConfigurationRecord"), "{err}");
    }

    #[test]
    fn timestamps_follow_the_wrap() {
        let mut ing = Ingest::default();
        assert_eq!(ing.dts(0xffff_fff0), ms_to_ticks(0xffff_fff0));
        assert_eq!(ing.dts(0x10), ms_to_ticks(0x1_0000_0010));
    }
}
