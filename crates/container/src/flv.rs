//! FLV tag bodies (the payload of RTMP audio/video messages) and FLV streams for HTTP-FLV.
//!
//! Parses classic tags (AVC, AAC, MP3, G.711) and enhanced RTMP tags (veovera enhanced-rtmp v1/v2:
//! `IsExHeader` video with FourCC `avc1`/`hvc1`/`av01`/`vp09`, `ExHeader` audio with FourCC
//! `Opus`/`mp4a`/`.mp3`) into the core's model, and builds them back from core tracks and frames.

use bytes::{BufMut, Bytes, BytesMut};
use sluice_media::{ticks_to_ms, CodecId, Frame, FrameForm, MediaKind, StreamInfo, Track};

use crate::amf0::{self, Amf0Value};
use crate::Error;

/// FLV tag types (also RTMP message type ids).
pub const TAG_AUDIO: u8 = 8;
pub const TAG_VIDEO: u8 = 9;
pub const TAG_SCRIPT: u8 = 18;

const FOURCC_AVC: &[u8; 4] = b"avc1";
const FOURCC_HEVC: &[u8; 4] = b"hvc1";
const FOURCC_AV1: &[u8; 4] = b"av01";
const FOURCC_VP9: &[u8; 4] = b"vp09";
const FOURCC_OPUS: &[u8; 4] = b"Opus";

/// A parsed audio or video tag body.
#[derive(Debug, Clone, PartialEq)]
pub enum Tag {
    /// Codec configuration (AVCDecoderConfigurationRecord, AudioSpecificConfig, OpusHead, ...).
    SequenceHeader { codec: CodecId, config: Bytes },
    /// One access unit; `data` is a zero-copy slice of the message.
    Frame {
        codec: CodecId,
        keyframe: bool,
        cts_ms: i32,
        data: Bytes,
    },
    /// End of sequence, metadata, command frames and other tags that carry no media.
    Ignored,
}

fn si24(b: &[u8]) -> i32 {
    let v = ((b[0] as i32) << 16) | ((b[1] as i32) << 8) | b[2] as i32;
    (v << 8) >> 8
}

fn video_fourcc(f: &[u8]) -> Result<CodecId, Error> {
    match f {
        b"avc1" => Ok(CodecId::H264),
        b"hvc1" => Ok(CodecId::H265),
        b"av01" => Ok(CodecId::Av1),
        b"vp09" => Ok(CodecId::Vp9),
        b"vp08" => Ok(CodecId::Vp8),
        _ => Err(Error::Flv(format!(
            "unsupported video FourCC {:?}",
            String::from_utf8_lossy(f)
        ))),
    }
}

/// Parses a video tag body.
pub fn parse_video(body: &Bytes) -> Result<Tag, Error> {
    let b0 = *body.first().ok_or(Error::Flv("empty video tag".into()))?;
    if b0 & 0x80 != 0 {
        // Enhanced RTMP: [IsExHeader:1][FrameType:3][PacketType:4][FourCC:32]...
        let frame_type = (b0 >> 4) & 0x07;
        let packet_type = b0 & 0x0f;
        if body.len() < 5 {
            return Err(Error::Flv("truncated enhanced video tag".into()));
        }
        if frame_type == 5 {
            return Ok(Tag::Ignored); // command frame
        }
        let codec = match packet_type {
            // Multitrack (6) and ModEx (7) wrap the FourCC differently; not sent by OBS for one track.
            6 | 7 => {
                return Err(Error::Flv(
                    "enhanced RTMP multitrack/ModEx video is not supported".into(),
                ))
            }
            _ => video_fourcc(&body[1..5])?,
        };
        let keyframe = frame_type == 1;
        return Ok(match packet_type {
            0 => Tag::SequenceHeader {
                codec,
                config: body.slice(5..),
            },
            1 if matches!(codec, CodecId::H264 | CodecId::H265) => {
                if body.len() < 8 {
                    return Err(Error::Flv("truncated enhanced video frame".into()));
                }
                Tag::Frame {
                    codec,
                    keyframe,
                    cts_ms: si24(&body[5..8]),
                    data: body.slice(8..),
                }
            }
            1 | 3 => Tag::Frame {
                codec,
                keyframe,
                cts_ms: 0,
                data: body.slice(5..),
            },
            2 | 4 | 5 => Tag::Ignored,
            _ => {
                return Err(Error::Flv(format!(
                    "unknown enhanced video packet type {packet_type}"
                )))
            }
        });
    }
    let frame_type = b0 >> 4;
    let codec_id = b0 & 0x0f;
    if frame_type == 5 {
        return Ok(Tag::Ignored);
    }
    let codec = match codec_id {
        7 => CodecId::H264,
        // Codec id 12 is the pre-enhanced-RTMP HEVC extension some encoders still send.
        12 => CodecId::H265,
        _ => return Err(Error::Flv(format!("unsupported FLV video codec id {codec_id}"))),
    };
    if body.len() < 5 {
        return Err(Error::Flv("truncated AVC video tag".into()));
    }
    Ok(match body[1] {
        0 => Tag::SequenceHeader {
            codec,
            config: body.slice(5..),
        },
        1 => Tag::Frame {
            codec,
            keyframe: frame_type == 1,
            cts_ms: si24(&body[2..5]),
            data: body.slice(5..),
        },
        _ => Tag::Ignored,
    })
}

/// Parses an audio tag body.
pub fn parse_audio(body: &Bytes) -> Result<Tag, Error> {
    let b0 = *body.first().ok_or(Error::Flv("empty audio tag".into()))?;
    let format = b0 >> 4;
    let frame = |codec, from: usize| Tag::Frame {
        codec,
        keyframe: true,
        cts_ms: 0,
        data: body.slice(from..),
    };
    match format {
        10 => {
            if body.len() < 2 {
                return Err(Error::Flv("truncated AAC audio tag".into()));
            }
            Ok(match body[1] {
                0 => Tag::SequenceHeader {
                    codec: CodecId::Aac,
                    config: body.slice(2..),
                },
                _ => frame(CodecId::Aac, 2),
            })
        }
        2 => Ok(frame(CodecId::Mp3, 1)),
        7 => Ok(frame(CodecId::Pcma, 1)),
        8 => Ok(frame(CodecId::Pcmu, 1)),
        9 => {
            // Enhanced audio: [SoundFormat=9:4][AudioPacketType:4][FourCC:32]...
            if body.len() < 5 {
                return Err(Error::Flv("truncated enhanced audio tag".into()));
            }
            let packet_type = b0 & 0x0f;
            let codec = match &body[1..5] {
                b"Opus" => CodecId::Opus,
                b"mp4a" => CodecId::Aac,
                b".mp3" => CodecId::Mp3,
                f => {
                    return Err(Error::Flv(format!(
                        "unsupported audio FourCC {:?}",
                        String::from_utf8_lossy(f)
                    )))
                }
            };
            match packet_type {
                0 => Ok(Tag::SequenceHeader {
                    codec,
                    config: body.slice(5..),
                }),
                1 => Ok(frame(codec, 5)),
                2 | 4 => Ok(Tag::Ignored),
                _ => Err(Error::Flv(format!(
                    "unsupported enhanced audio packet type {packet_type}"
                ))),
            }
        }
        _ => Err(Error::Flv(format!("unsupported FLV sound format {format}"))),
    }
}

fn enhanced_video_header(codec: CodecId) -> Option<&'static [u8; 4]> {
    match codec {
        CodecId::H265 => Some(FOURCC_HEVC),
        CodecId::Av1 => Some(FOURCC_AV1),
        CodecId::Vp9 => Some(FOURCC_VP9),
        _ => None,
    }
}

/// Whether FLV/RTMP can carry this codec.
pub fn supports(codec: CodecId) -> bool {
    matches!(
        codec,
        CodecId::H264
            | CodecId::H265
            | CodecId::Av1
            | CodecId::Vp9
            | CodecId::Aac
            | CodecId::Opus
            | CodecId::Mp3
            | CodecId::Pcma
            | CodecId::Pcmu
    )
}

/// The sequence header tag body of a track, or `None` when its codec has no configuration in FLV.
pub fn sequence_header(track: &Track) -> Option<Bytes> {
    let mut b = BytesMut::with_capacity(8 + track.config.len());
    match track.codec {
        CodecId::H264 => b.put_slice(&[0x17, 0, 0, 0, 0]),
        CodecId::Aac => b.put_slice(&[0xaf, 0]),
        CodecId::Opus => {
            b.put_u8(0x90);
            b.put_slice(FOURCC_OPUS);
        }
        c => {
            let fourcc = enhanced_video_header(c)?;
            b.put_u8(0x80 | (1 << 4));
            b.put_slice(fourcc);
        }
    }
    b.put_slice(&track.config);
    Some(b.freeze())
}

/// A frame's FLV tag body (the RTMP audio/video message payload), as a [`FrameForm`].
pub struct FlvBody;

impl FrameForm for FlvBody {
    type Value = Bytes;
}

/// A frame's whole FLV tag followed by its previous-tag-size (what an FLV stream carries of it;
/// its time is the frame's own, the same for every reader).
struct FlvTag;

impl FrameForm for FlvTag {
    type Value = Bytes;
}

/// The tag body of one frame. Built once per frame via [`Frame::form`] and shared by all readers.
pub fn frame_body(track: &Track, frame: &Frame) -> Bytes {
    frame.form_infallible::<FlvBody>(|f| build_frame_body(track, f))
}

/// Keeps an ingest's FLV tag body as the frame's [`FlvBody`] when it is byte for byte what
/// [`frame_body`] would build (the frame's data is the end of `body`, and the header before it
/// is the one written here): RTMP and HTTP-FLV outputs then send the publisher's own buffer, and
/// no reader copies the frame into a new one.
pub fn keep_body(track: &Track, frame: &Frame, body: &Bytes) {
    let Some(head) = body.len().checked_sub(frame.data.len()) else {
        return;
    };
    if body[head..].as_ptr() != frame.data.as_ptr() || head > 16 {
        return;
    }
    // On the stack: this runs for every ingested frame. `body_header` writes at most 8 bytes
    // (enhanced video: type, FourCC, composition time), so 16 never runs out.
    let mut buf = [0u8; 16];
    let mut h = &mut buf[..];
    body_header(track, frame, &mut h);
    let written = 16 - h.len();
    if buf[..written] == body[..head] {
        frame.set_form::<FlvBody>(body.clone());
    }
}

fn build_frame_body(track: &Track, f: &Frame) -> Bytes {
    let mut b = BytesMut::with_capacity(f.data.len() + 8);
    body_header(track, f, &mut b);
    b.put_slice(&f.data);
    b.freeze()
}

/// The bytes of a frame's tag body before its data.
fn body_header(track: &Track, f: &Frame, b: &mut impl BufMut) {
    let cts = ticks_to_ms(f.cts()).clamp(-0x80_0000, 0x7f_ffff) as i32;
    let cts = [(cts >> 16) as u8, (cts >> 8) as u8, cts as u8];
    let ft = if f.keyframe { 1u8 } else { 2 };
    match track.codec {
        CodecId::H264 => {
            b.put_u8((ft << 4) | 7);
            b.put_u8(1);
            b.put_slice(&cts);
        }
        CodecId::H265 => {
            b.put_u8(0x80 | (ft << 4) | 1);
            b.put_slice(FOURCC_HEVC);
            b.put_slice(&cts);
        }
        CodecId::Av1 | CodecId::Vp9 => {
            b.put_u8(0x80 | (ft << 4) | 1);
            b.put_slice(enhanced_video_header(track.codec).expect("video fourcc"));
        }
        CodecId::Aac => b.put_slice(&[0xaf, 1]),
        CodecId::Mp3 => b.put_u8(0x2f),
        CodecId::Pcma => b.put_u8(0x72),
        CodecId::Pcmu => b.put_u8(0x82),
        CodecId::Opus => {
            b.put_u8(0x91);
            b.put_slice(FOURCC_OPUS);
        }
        _ => {}
    }
}

/// The FLV/RTMP message type of a track.
pub fn tag_type(track: &Track) -> u8 {
    match track.kind() {
        MediaKind::Video => TAG_VIDEO,
        MediaKind::Audio => TAG_AUDIO,
    }
}

/// `onMetaData` values describing a stream, for RTMP play and FLV files.
pub fn metadata(info: &StreamInfo) -> Amf0Value {
    let mut m: Vec<(String, Amf0Value)> = Vec::new();
    if let Some(v) = info.video().filter(|t| supports(t.codec)) {
        m.push(("width".into(), Amf0Value::Number(v.width as f64)));
        m.push(("height".into(), Amf0Value::Number(v.height as f64)));
        let id = match v.codec {
            CodecId::H264 => 7.0,
            c => u32::from_be_bytes(*enhanced_video_header(c).unwrap_or(FOURCC_AVC)) as f64,
        };
        m.push(("videocodecid".into(), Amf0Value::Number(id)));
    }
    if let Some(a) = info.audio().filter(|t| supports(t.codec)) {
        let id = match a.codec {
            CodecId::Aac => 10.0,
            CodecId::Mp3 => 2.0,
            CodecId::Pcma => 7.0,
            CodecId::Pcmu => 8.0,
            _ => u32::from_be_bytes(*FOURCC_OPUS) as f64,
        };
        m.push(("audiocodecid".into(), Amf0Value::Number(id)));
        m.push(("audiosamplerate".into(), Amf0Value::Number(a.sample_rate as f64)));
        m.push(("audiochannels".into(), Amf0Value::Number(a.channels as f64)));
        m.push(("stereo".into(), Amf0Value::Boolean(a.channels > 1)));
    }
    m.push(("encoder".into(), Amf0Value::string("Sluice")));
    Amf0Value::EcmaArray(m)
}

/// Builds FLV streams (HTTP-FLV) from a reader's events, sharing each frame's body.
#[derive(Debug, Default)]
pub struct FlvWriter {
    last_ms: u32,
}

fn tag_header(kind: u8, size: usize, ms: u32) -> [u8; 11] {
    let s = size as u32;
    [
        kind,
        (s >> 16) as u8,
        (s >> 8) as u8,
        s as u8,
        (ms >> 16) as u8,
        (ms >> 8) as u8,
        ms as u8,
        (ms >> 24) as u8,
        0,
        0,
        0,
    ]
}

fn put_tag(b: &mut BytesMut, kind: u8, ms: u32, body: &[u8]) {
    b.put_slice(&tag_header(kind, body.len(), ms));
    b.put_slice(body);
    b.put_u32(11 + body.len() as u32);
}

impl FlvWriter {
    /// The FLV file header, `onMetaData` and the sequence headers: what a new reader gets first.
    pub fn header(info: &StreamInfo) -> Bytes {
        let has_video = info.video().is_some_and(|t| supports(t.codec));
        let has_audio = info.audio().is_some_and(|t| supports(t.codec));
        let mut b = BytesMut::with_capacity(1024);
        b.put_slice(b"FLV\x01");
        b.put_u8(((has_audio as u8) << 2) | has_video as u8);
        b.put_u32(9);
        b.put_u32(0);
        let script = amf0::encode_all(&[Amf0Value::string("onMetaData"), metadata(info)]);
        put_tag(&mut b, TAG_SCRIPT, 0, &script);
        for t in &info.tracks {
            if let Some(sh) = sequence_header(t).filter(|_| supports(t.codec)) {
                put_tag(&mut b, tag_type(t), 0, &sh);
            }
        }
        b.freeze()
    }

    /// Sequence headers for a stream that restarted mid-connection.
    pub fn restart(&mut self, info: &StreamInfo) -> Vec<Bytes> {
        let mut b = BytesMut::new();
        for t in &info.tracks {
            if let Some(sh) = sequence_header(t).filter(|_| supports(t.codec)) {
                put_tag(&mut b, tag_type(t), self.last_ms, &sh);
            }
        }
        vec![b.freeze()]
    }

    /// Appends one frame: its whole tag and the previous-tag-size after it, one buffer built
    /// once per frame and shared by every writer (no allocation per viewer, one piece to write).
    pub fn frame(&mut self, info: &StreamInfo, frame: &Frame, out: &mut Vec<Bytes>) {
        let Some(track) = info.track(frame.track).filter(|t| supports(t.codec)) else {
            return;
        };
        let ms = ticks_to_ms(frame.dts).max(0) as u32;
        self.last_ms = ms;
        out.push(frame.form_infallible::<FlvTag>(|f| {
            let body = frame_body(track, f);
            let mut b = BytesMut::with_capacity(11 + body.len() + 4);
            b.put_slice(&tag_header(tag_type(track), body.len(), ms));
            b.put_slice(&body);
            b.put_u32(11 + body.len() as u32);
            b.freeze()
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_media::CLOCK_RATE;

    #[test]
    fn an_ingested_body_is_kept_only_when_it_is_what_would_be_built() {
        let frame_of =
            |body: &Bytes, track: &Track| match parse_video(body).or_else(|_| parse_audio(body)).unwrap() {
                Tag::Frame {
                    keyframe,
                    cts_ms,
                    data,
                    ..
                } => {
                    let dts = 9000;
                    let pts = dts + i64::from(cts_ms) * (CLOCK_RATE / 1000);
                    Frame::new(track.id, dts, pts, keyframe, data)
                }
                t => panic!("{t:?}"),
            };
        let avc = Track::video(0, CodecId::H264, Bytes::from_static(b"\x01"), 640, 360);
        let body = Bytes::from_static(&[0x17, 1, 0, 0, 0x21, 0, 0, 0, 1, 0x65]);
        let f = frame_of(&body, &avc);
        keep_body(&avc, &f, &body);
        let kept = frame_body(&avc, &f);
        assert_eq!(kept, body);
        assert_eq!(
            kept.as_ptr(),
            body.as_ptr(),
            "the publisher's own buffer, not a copy"
        );

        // AAC flagged mono (0xae): what we build says 0xaf, so the body is built, not kept.
        let aac = Track::audio(1, CodecId::Aac, Bytes::from_static(&[0x12, 0x10]), 48000, 1);
        let body = Bytes::from_static(&[0xae, 1, 0x21, 0x10]);
        let f = frame_of(&body, &aac);
        keep_body(&aac, &f, &body);
        let built = frame_body(&aac, &f);
        assert_eq!(&built[..], &[0xaf, 1, 0x21, 0x10]);
        assert_ne!(built.as_ptr(), body.as_ptr());

        // A frame whose data is not the end of the body (an ingest that changed it) is not kept.
        let f = Frame::new(0, 0, 0, true, Bytes::from_static(&[0, 0, 0, 1, 0x65]));
        let body = Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
        keep_body(&avc, &f, &body);
        assert_ne!(frame_body(&avc, &f).as_ptr(), body.as_ptr());
    }

    #[test]
    fn classic_avc_and_aac() {
        let body = Bytes::from_static(&[0x17, 1, 0, 0, 0x21, 0, 0, 0, 1, 0x65]);
        assert_eq!(
            parse_video(&body).unwrap(),
            Tag::Frame {
                codec: CodecId::H264,
                keyframe: true,
                cts_ms: 33,
                data: body.slice(5..)
            }
        );
        let body = Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xdf, 1]);
        assert!(matches!(
            parse_video(&body).unwrap(),
            Tag::Frame {
                keyframe: false,
                cts_ms: -33,
                ..
            }
        ));
        let sh = Bytes::from_static(&[0xaf, 0, 0x11, 0x90]);
        assert_eq!(
            parse_audio(&sh).unwrap(),
            Tag::SequenceHeader {
                codec: CodecId::Aac,
                config: Bytes::from_static(&[0x11, 0x90])
            }
        );
    }

    /// Enhanced RTMP tags as OBS 30 sends them (built from the enhanced-rtmp v1 spec).
    #[test]
    fn enhanced_hevc_av1_opus() {
        let mut hevc_sh = vec![0x80 | 0x10, b'h', b'v', b'c', b'1'];
        hevc_sh.extend_from_slice(&[1, 1, 0x60, 0, 0, 0]);
        let t = parse_video(&Bytes::from(hevc_sh)).unwrap();
        assert!(matches!(t, Tag::SequenceHeader { codec: CodecId::H265, ref config } if config.len() == 6));
        let frame = Bytes::from(vec![
            0x80 | 0x10 | 1,
            b'h',
            b'v',
            b'c',
            b'1',
            0,
            0,
            0x42,
            0,
            0,
            0,
            1,
            0x26,
        ]);
        assert!(matches!(
            parse_video(&frame).unwrap(),
            Tag::Frame { codec: CodecId::H265, keyframe: true, cts_ms: 0x42, ref data } if data.len() == 5
        ));
        let frame_x = Bytes::from(vec![0x80 | 0x20 | 3, b'h', b'v', b'c', b'1', 9, 9]);
        assert!(matches!(
            parse_video(&frame_x).unwrap(),
            Tag::Frame { keyframe: false, cts_ms: 0, ref data, .. } if data.len() == 2
        ));
        let av1 = Bytes::from(vec![0x80 | 0x10 | 1, b'a', b'v', b'0', b'1', 0x12, 0]);
        assert!(matches!(
            parse_video(&av1).unwrap(),
            Tag::Frame { codec: CodecId::Av1, ref data, .. } if data.len() == 2
        ));
        let opus_sh = Bytes::from(b"\x90OpusOpusHead\x01\x02".to_vec());
        assert!(matches!(
            parse_audio(&opus_sh).unwrap(),
            Tag::SequenceHeader {
                codec: CodecId::Opus,
                ..
            }
        ));
        let opus = Bytes::from(b"\x91Opus\xfc\x00".to_vec());
        assert!(
            matches!(parse_audio(&opus).unwrap(), Tag::Frame { codec: CodecId::Opus, ref data, .. } if data.len() == 2)
        );
    }

    #[test]
    fn build_then_parse() {
        let tracks = [
            Track::video(
                0,
                CodecId::H264,
                Bytes::from_static(b"\x01\x64\x00\x1f"),
                640,
                360,
            ),
            Track::video(0, CodecId::H265, Bytes::from_static(b"\x01\x01"), 640, 360),
            Track::video(0, CodecId::Av1, Bytes::from_static(b"\x81\x00"), 640, 360),
            Track::audio(1, CodecId::Aac, Bytes::from_static(b"\x11\x90"), 48000, 2),
            Track::audio(1, CodecId::Opus, Bytes::from_static(b"OpusHead"), 48000, 2),
        ];
        for t in &tracks {
            let sh = sequence_header(t).unwrap();
            let parsed = if t.kind() == MediaKind::Video {
                parse_video(&sh)
            } else {
                parse_audio(&sh)
            }
            .unwrap();
            assert_eq!(
                parsed,
                Tag::SequenceHeader {
                    codec: t.codec,
                    config: t.config.clone()
                }
            );
            let f = Frame::new(
                t.id,
                CLOCK_RATE,
                CLOCK_RATE + 3000,
                true,
                Bytes::from_static(b"\0\0\0\x01\x65"),
            );
            let body = frame_body(t, &f);
            let parsed = if t.kind() == MediaKind::Video {
                parse_video(&body)
            } else {
                parse_audio(&body)
            }
            .unwrap();
            let Tag::Frame {
                codec,
                data,
                cts_ms,
                keyframe,
            } = parsed
            else {
                panic!("{parsed:?}")
            };
            assert_eq!((codec, &data[..], keyframe), (t.codec, &f.data[..], true));
            if matches!(t.codec, CodecId::H264 | CodecId::H265) {
                assert_eq!(cts_ms, 33);
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..12 {
            for seed in 0..=255u8 {
                let b = Bytes::from(
                    (0..len)
                        .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7))
                        .collect::<Vec<_>>(),
                );
                let _ = parse_video(&b);
                let _ = parse_audio(&b);
            }
        }
    }
}
