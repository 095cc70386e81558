//! Receiving (WHIP): the browser's depacketized frames become core frames (H.264 parameter
//! sets and VP8/VP9 sizes found in the bitstream, Opus as sent), on one clock per session; the
//! path's keyframe requests become PLIs to the browser.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_codec::nal::{annexb_to_avcc, iter_annexb};
use sluice_media::{CodecId, Frame, Publisher, Track};
use str0m::format::Codec;
use str0m::media::{Frequency, KeyframeRequestKind, MediaData, Mid};
use str0m::Rtc;

pub(crate) struct Whip {
    pub publisher: Publisher,
    pub video_mid: Option<Mid>,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    /// VP8/VP9: the video track, known from the first keyframe.
    vpx_track: Option<Track>,
    started: bool,
    /// Session clock origin: the arrival of the first media packet.
    anchor: Option<Instant>,
    /// Per track (video, audio): first RTP time (in 90 kHz ticks) and its arrival in core ticks.
    tracks: [Option<(i64, i64)>; 2],
    last_keyframe_request: Option<Instant>,
    dropped_before_start: u64,
}

impl Whip {
    pub fn new(publisher: Publisher) -> Self {
        Whip {
            publisher,
            video_mid: None,
            sps: None,
            pps: None,
            vpx_track: None,
            started: false,
            anchor: None,
            tracks: [None, None],
            last_keyframe_request: None,
            dropped_before_start: 0,
        }
    }

    /// Sends the browser a PLI (at most one per 500 ms when `throttle`).
    pub fn request_keyframe(&mut self, rtc: &mut Rtc, throttle: bool) {
        let Some(mid) = self.video_mid else { return };
        if throttle
            && self
                .last_keyframe_request
                .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return;
        }
        if let Some(mut w) = rtc.writer(mid) {
            if w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok() {
                self.last_keyframe_request = Some(Instant::now());
            }
        }
    }

    /// Core ticks of a packet: each track is anchored at the arrival of its first packet, then
    /// follows its own RTP clock (browsers capture audio and video on the same clock).
    fn pts(&mut self, idx: usize, d: &MediaData) -> i64 {
        let anchor = *self.anchor.get_or_insert(d.network_time);
        let rtp = d.time.rebase(Frequency::NINETY_KHZ).numer() as i64;
        let (rtp0, at0) = *self.tracks[idx].get_or_insert_with(|| {
            let since = d.network_time.saturating_duration_since(anchor);
            (rtp, (since.as_micros() as i64) * 9 / 100)
        });
        at0 + (rtp - rtp0)
    }

    /// One depacketized frame from the browser: becomes a core frame (once the stream has
    /// started on a keyframe with its parameters).
    pub fn media(&mut self, rtc: &mut Rtc, d: MediaData, path: &str) {
        match d.params.spec().codec {
            Codec::H264 => {
                if !d.contiguous {
                    self.request_keyframe(rtc, true);
                }
                let mut keyframe = false;
                let (mut sps, mut pps) = (None, None);
                for nal in iter_annexb(&d.data) {
                    match nal.first().map(|b| b & 0x1f) {
                        Some(5) => keyframe = true,
                        Some(7) => sps = Some(Bytes::copy_from_slice(nal)),
                        Some(8) => pps = Some(Bytes::copy_from_slice(nal)),
                        _ => {}
                    }
                }
                let changed = (sps.is_some() && sps != self.sps) || (pps.is_some() && pps != self.pps);
                if sps.is_some() {
                    self.sps = sps;
                }
                if pps.is_some() {
                    self.pps = pps;
                }
                if changed || !self.started {
                    if !keyframe || self.sps.is_none() || self.pps.is_none() {
                        self.dropped_before_start += 1;
                        if self.dropped_before_start % 30 == 1 {
                            self.request_keyframe(rtc, true);
                        }
                        return;
                    }
                    self.start(path);
                }
                let pts = self.pts(0, &d);
                let data = annexb_to_avcc(&d.data);
                self.publisher.write(Frame::new(0, pts, pts, keyframe, data));
            }
            codec @ (Codec::Vp8 | Codec::Vp9) => {
                if !d.contiguous {
                    self.request_keyframe(rtc, true);
                }
                let (id, info) = if codec == Codec::Vp8 {
                    (CodecId::Vp8, sluice_codec::vpx::vp8_frame(&d.data))
                } else {
                    (CodecId::Vp9, sluice_codec::vpx::vp9_frame(&d.data))
                };
                let Some(info) = info else {
                    tracing::debug!(path, "dropping a {id} frame with a malformed header");
                    return;
                };
                if let (true, Some((w, h))) = (info.keyframe, info.size) {
                    let t = Track::video(0, id, Bytes::new(), w, h);
                    if self.vpx_track.as_ref() != Some(&t) {
                        self.vpx_track = Some(t);
                        self.start(path);
                    }
                }
                if !self.started || self.vpx_track.is_none() {
                    self.dropped_before_start += 1;
                    if self.dropped_before_start % 30 == 1 {
                        self.request_keyframe(rtc, true);
                    }
                    return;
                }
                let pts = self.pts(0, &d);
                self.publisher.write(Frame::new(
                    0,
                    pts,
                    pts,
                    info.keyframe,
                    Bytes::copy_from_slice(&d.data),
                ));
            }
            Codec::Opus => {
                if !self.started && self.video_mid.is_some() {
                    return;
                }
                if !self.started {
                    self.start(path);
                }
                // As received: the core derives AAC for the readers that need it.
                let pts = self.pts(1, &d);
                self.publisher
                    .write(Frame::new(1, pts, pts, true, Bytes::copy_from_slice(&d.data)));
            }
            _ => {}
        }
    }

    /// Announces the tracks: the video as it is known now, and Opus as the browser sends it.
    fn start(&mut self, path: &str) {
        let mut tracks = Vec::new();
        if let Some(t) = &self.vpx_track {
            tracks.push(t.clone());
        } else if let (Some(sps), Some(pps)) = (&self.sps, &self.pps) {
            let (w, h) = sluice_codec::avc::sps_dimensions(sps).unwrap_or((0, 0));
            let config = sluice_codec::avc::AvcConfig::build(sps, pps);
            tracks.push(Track::video(0, CodecId::H264, config, w, h));
        }
        // Browsers send Opus at 48 kHz, stereo-capable (RFC 7587: always opus/48000/2).
        tracks.push(Track::audio(1, CodecId::Opus, opus_head(2, 0, 48_000), 48_000, 2));
        tracing::info!(
            path,
            tracks = %tracks.iter().map(|t| t.codec.name()).collect::<Vec<_>>().join("+"),
            "WHIP stream starts"
        );
        self.publisher.start(tracks);
        self.started = true;
    }
}

/// An `OpusHead` (RFC 7845 section 5.1, mapping family 0): how the core describes Opus.
pub(crate) fn opus_head(channels: u8, pre_skip: u16, input_rate: u32) -> Bytes {
    let mut h = Vec::with_capacity(19);
    h.extend_from_slice(b"OpusHead");
    h.push(1);
    h.push(channels);
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&input_rate.to_le_bytes());
    h.extend_from_slice(&[0, 0, 0]);
    Bytes::from(h)
}
