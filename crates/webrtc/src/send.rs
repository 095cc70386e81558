//! Sending a path's frames to a WebRTC peer: the WHEP session's viewer, or the WHIP server a
//! push publishes to (`whip_client`). The frames queued when the peer connects go first, from
//! their latest keyframe, squeezed just before the live edge so picture comes at once (with no
//! keyframe among them, video waits for the next one and the publisher is asked for it); then
//! live frames on one clock derived from the moment the peer connected. H.264 and Opus are
//! written as RTP packets built once per frame for every peer (str0m's RTP mode); other video
//! codecs go through str0m's packetizers.

use std::borrow::BorrowMut;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use sluice_media::{CodecId, Event as CoreEv, Frame, MediaKind, ReadError, Reader, StreamInfo};
use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime, Mid, Pt};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::Rtc;

use crate::rtp::{rtp_payloads, video_payload, NalForm};
use crate::SessionError;

/// Ticks of the core's 90 kHz clock added to RTP times so they never go below zero.
const RTP_ORIGIN: i64 = 90_000 * 100;

/// Opus always runs at 48 kHz (RFC 7587).
const OPUS_RATE: u64 = 48_000;

/// What the sending side waits for besides the network.
pub(crate) enum Media {
    Core(Result<CoreEv, ReadError>),
    /// A frame of the GOP cache, with its squeezed timestamp.
    Backlog(Arc<Frame>, i64),
    /// The rest of a video frame's RTP packets.
    Packets,
}

/// The most RTP packets written to str0m in one round of a session. str0m queues what is
/// written until the round's output is polled, and its queue keeps the room it once needed: a
/// keyframe written whole (a hundred packets and more) left each viewer a queue of that size
/// for good (about 400 bytes a packet).
const PACKETS_PER_ROUND: usize = 32;

/// A video frame's RTP packets not yet written.
struct FramePackets {
    payloads: Arc<[Arc<[u8]>]>,
    next: usize,
    pt: Pt,
    time: u32,
    wallclock: Instant,
}

/// The sending half of a session: owns the reader (WHEP) or borrows it (a push, whose reader
/// outlives each connection).
pub(crate) struct MediaSender<R: BorrowMut<Reader> = Reader> {
    /// A reader of the path with [`Select::OPUS`](sluice_media::Select::OPUS): video plus Opus,
    /// the publisher's own or the core's derived track.
    pub reader: R,
    stream: Option<Arc<StreamInfo>>,
    pub video_mid: Option<Mid>,
    pub audio_mid: Option<Mid>,
    video_pt: Option<Pt>,
    audio_pt: Option<Pt>,
    /// (pts of the live edge when the peer connected, that instant): RTP times and wallclocks
    /// derive from it.
    clock: Option<(i64, Instant)>,
    /// H.264/H.265: how the stream's frames become Annex B (codec, parameter sets, NAL length
    /// size), parsed once per stream rather than per frame.
    nal: Option<NalForm>,
    started: bool,
    /// No keyframe was queued when the peer connected: video waits for the next one.
    need_keyframe: bool,
    /// The GOP cache, taken at once when the peer connects, to be sent squeezed in time.
    pending: VecDeque<(Arc<Frame>, i64)>,
    /// H.264 and Opus are written as RTP packets packetized once per frame (str0m's RTP mode);
    /// other codecs go through str0m's per-session packetizers.
    rtp_mode: bool,
    video_seq: u64,
    audio_seq: u64,
    /// What is left to write of the current video frame (RTP mode).
    packets: Option<FramePackets>,
    /// How long the video's sent packets are kept for resends (NACK), once set.
    resend_age: Option<Duration>,
    /// The GOP cache went out at once: str0m's resend cache grew to hold all of it and keeps
    /// that room. Rebuilt once the burst is older than the resend age (when it ended, once
    /// it has).
    burst: Option<Option<Instant>>,
    /// Whether the peer asks for resends of audio (`a=rtcp-fb:PT nack`; browsers do not for
    /// Opus): only then are audio packets kept.
    audio_nack: bool,
}

impl<R: BorrowMut<Reader>> MediaSender<R> {
    /// `stream`: the first `Start` the reader gave (taken before negotiating, for the codec).
    pub fn new(reader: R, stream: Option<Arc<StreamInfo>>) -> Self {
        let video = stream.as_ref().and_then(|s| s.video()).map(|v| v.codec);
        MediaSender {
            reader,
            stream,
            video_mid: None,
            audio_mid: None,
            video_pt: None,
            audio_pt: None,
            clock: None,
            nal: None,
            started: false,
            need_keyframe: false,
            pending: VecDeque::new(),
            rtp_mode: rtp_mode(video),
            video_seq: rand::rng().random_range(0..30_000),
            audio_seq: rand::rng().random_range(0..30_000),
            packets: None,
            resend_age: None,
            burst: None,
            audio_nack: false,
        }
    }

    /// The stream being sent (the latest `Start`).
    pub fn stream(&self) -> Option<&Arc<StreamInfo>> {
        self.stream.as_ref()
    }

    /// The next thing to send: the squeezed GOP cache first, one frame per round, so that
    /// str0m's send buffer is drained between frames however big the GOP is; then the path.
    pub async fn next(&mut self) -> Media {
        if self.packets.is_some() {
            return Media::Packets;
        }
        if let Some((f, pts)) = self.pending.pop_front() {
            if self.pending.is_empty() {
                self.burst = Some(Some(Instant::now()));
            }
            return Media::Backlog(f, pts);
        }
        Media::Core(self.reader.borrow_mut().recv().await)
    }

    /// The viewer asked for a keyframe (PLI/FIR) on `mid`: it goes to whoever publishes the path.
    pub fn keyframe_request(&self, mid: Mid) {
        if Some(mid) == self.video_mid {
            self.reader.borrow().request_keyframe();
        }
    }

    /// Writes `m` to str0m. str0m sends written packets from its next timeout: the caller
    /// hands it one (`Input::Timeout(now)`) before polling the output, so that what one round
    /// wrote leaves in that round and str0m's queue stays small.
    pub fn media(&mut self, rtc: &mut Rtc, m: Media, path: &str) -> Result<(), SessionError> {
        if !self.started {
            self.started = true;
            self.choose_pts(rtc);
            // Take the GOP cache (and whatever queued while ICE and DTLS ran) in one go: it goes
            // out first, a frame per round, with timestamps squeezed just before the live edge,
            // so the picture comes now and the browser's jitter buffer does not take the backlog
            // as delay. Audio starts live: the backlog's audio is dropped.
            let mut backlog = Vec::new();
            let mut push = |ev: CoreEv, this: &mut Self| match ev {
                CoreEv::Start(info) => this.stream = Some(info),
                CoreEv::Frame(f) => {
                    let video = this
                        .stream
                        .as_ref()
                        .and_then(|s| s.track(f.track))
                        .is_some_and(|t| t.kind() == MediaKind::Video);
                    if video {
                        backlog.push(f);
                    }
                }
            };
            match m {
                Media::Core(ev) => push(ev?, self),
                Media::Backlog(..) | Media::Packets => {}
            }
            while let Some(ev) = self.reader.borrow_mut().try_recv() {
                push(ev?, self);
            }
            // From the latest keyframe (a WHEP reader's backlog starts with one; a push that
            // reconnects may be mid-GOP): what comes before it would not decode.
            match backlog.iter().rposition(|f| f.keyframe) {
                Some(k) => drop(backlog.drain(..k)),
                None => {
                    backlog.clear();
                    if self.stream.as_ref().is_some_and(|s| s.video().is_some()) {
                        self.need_keyframe = true;
                        self.reader.borrow().request_keyframe();
                    }
                }
            }
            let last = backlog.last().map(|f| f.pts);
            let n = backlog.len() as i64;
            // The newest frame is "now": the squeezed backlog lies just before it.
            if let Some(last) = last {
                self.clock = Some((last, Instant::now()));
            }
            tracing::debug!(
                path,
                frames = n,
                first_pts = backlog.first().map(|f| f.pts),
                last_pts = last,
                "WHEP: sending the GOP cache"
            );
            for (i, f) in backlog.into_iter().enumerate() {
                // 1 ms apart, ending at the newest frame's own time.
                let squeezed = last.unwrap_or(f.pts) - (n - 1 - i as i64) * 90;
                self.pending.push_back((f, squeezed));
                self.burst = Some(None);
            }
            return Ok(());
        }
        match m {
            Media::Core(ev) => match ev? {
                CoreEv::Start(info) => {
                    if let Some(v) = info.video() {
                        let cur = self.stream.as_ref().and_then(|s| s.video()).map(|t| t.codec);
                        if cur.is_some() && cur != Some(v.codec) {
                            return Err(SessionError::VideoCodecChanged(v.codec));
                        }
                    }
                    self.stream = Some(info);
                }
                CoreEv::Frame(f) => self.send_frame(rtc, &f, f.pts, path)?,
            },
            Media::Backlog(f, pts) => self.send_frame(rtc, &f, pts, path)?,
            Media::Packets => self.write_packets(rtc),
        }
        Ok(())
    }

    /// Writes up to [`PACKETS_PER_ROUND`] of the current frame's packets.
    fn write_packets(&mut self, rtc: &mut Rtc) {
        let (Some(fp), Some(mid)) = (self.packets.as_mut(), self.video_mid) else {
            self.packets = None;
            return;
        };
        let mut api = rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            self.packets = None;
            return;
        };
        let n = fp.payloads.len();
        let end = (fp.next + PACKETS_PER_ROUND).min(n);
        for i in fp.next..end {
            let seq = SeqNo::from(self.video_seq);
            self.video_seq += 1;
            tx.write_rtp(
                RtpWrite::new(fp.pt, seq, fp.time, fp.wallclock, fp.payloads[i].clone())
                    .marker(i + 1 == n)
                    .nackable(true),
            );
        }
        fp.next = end;
        if end == n {
            self.packets = None;
        }
    }

    fn choose_pts(&mut self, rtc: &mut Rtc) {
        let want = self.stream.as_ref().and_then(|s| s.video()).map(|t| t.codec);
        if let Some(mid) = self.video_mid {
            self.video_pt = video_pt(rtc, mid, want);
        }
        if let Some(mid) = self.audio_mid {
            self.audio_pt = opus_pt(rtc, mid);
            self.audio_nack = negotiated(rtc, mid)
                .iter()
                .any(|p| Some(p.pt()) == self.audio_pt && p.fb_nack());
            let age = if self.audio_nack {
                resend_age(None, None)
            } else {
                Duration::ZERO
            };
            if let Some(tx) = rtc.direct_api().stream_tx_by_mid(mid, None) {
                // Zero keeps nothing (str0m's cache is then inert).
                tx.set_rtx_cache(RESEND_MAX_PACKETS, age, Some(RTX_RATIO_CAP));
            }
        }
        self.tune_resends(rtc, None, None);
    }

    /// Sizes the video's resend cache from the viewer's round trip and loss (str0m's RTCP
    /// figures, about once a second): see [`resend_age`]. The cache is rebuilt (and emptied)
    /// only when the wanted age moves by a quarter or more.
    pub fn tune_resends(&mut self, rtc: &mut Rtc, rtt: Option<Duration>, loss: Option<f32>) {
        let Some(mid) = self.video_mid else {
            return;
        };
        let age = resend_age(rtt, loss);
        let after_burst = match (self.burst, self.resend_age) {
            (Some(Some(end)), Some(cur)) => end.elapsed() > cur,
            _ => false,
        };
        if let (Some(cur), false) = (self.resend_age, after_burst) {
            let (a, c) = (age.as_secs_f64(), cur.as_secs_f64());
            if (a - c).abs() < c / 4.0 {
                return;
            }
        }
        if after_burst {
            self.burst = None;
        }
        if let Some(tx) = rtc.direct_api().stream_tx_by_mid(mid, None) {
            tx.set_rtx_cache(RESEND_MAX_PACKETS, age, Some(RTX_RATIO_CAP));
            self.resend_age = Some(age);
        }
    }

    fn wallclock(&mut self, pts: i64) -> Instant {
        let (p0, t0) = *self.clock.get_or_insert((pts, Instant::now()));
        let d = pts - p0;
        if d >= 0 {
            t0 + Duration::from_micros((d as u64) * 100 / 9)
        } else {
            t0.checked_sub(Duration::from_micros((-d) as u64 * 100 / 9))
                .unwrap_or(t0)
        }
    }

    fn rtp_ticks(&self, pts: i64) -> u64 {
        let p0 = self.clock.map_or(pts, |c| c.0);
        (pts - p0 + RTP_ORIGIN).max(0) as u64
    }

    fn send_frame(&mut self, rtc: &mut Rtc, f: &Frame, pts: i64, path: &str) -> Result<(), SessionError> {
        let Some(stream) = self.stream.clone() else {
            return Ok(());
        };
        let Some(track) = stream.track(f.track) else {
            return Ok(());
        };
        if track.kind() == MediaKind::Audio {
            if track.codec == CodecId::Opus {
                self.send_audio(rtc, f, stream.video().is_some());
            }
            return Ok(());
        }
        if self.nal.as_ref().is_none_or(|n| n.track != *track) {
            self.nal = NalForm::of(track);
        }
        if self.need_keyframe {
            if !f.keyframe {
                return Ok(());
            }
            self.need_keyframe = false;
        }
        if matches!(track.codec, CodecId::H264 | CodecId::H265) && self.nal.is_none() {
            tracing::debug!(
                path,
                "skipping a video frame: the stream's {} config does not parse",
                track.codec
            );
            return Ok(());
        }
        let (Some(mid), Some(pt)) = (self.video_mid, self.video_pt) else {
            return Ok(());
        };
        if self.rtp_mode {
            let payloads = match rtp_payloads(self.nal.as_ref(), f) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(path, "skipping a video frame WebRTC cannot carry: {e}");
                    return Ok(());
                }
            };
            let wallclock = self.wallclock(pts);
            let time = self.rtp_ticks(pts) as u32;
            // A frame still being written (only if a frame came before its packets were all
            // written) goes out first.
            while self.packets.is_some() {
                self.write_packets(rtc);
            }
            self.packets = Some(FramePackets {
                payloads,
                next: 0,
                pt,
                time,
                wallclock,
            });
            self.write_packets(rtc);
            return Ok(());
        }
        let data: Arc<[u8]> = match video_payload(self.nal.as_ref(), f) {
            Ok(d) => Arc::from(&d[..]),
            Err(e) => {
                tracing::debug!(path, "skipping a video frame WebRTC cannot carry: {e}");
                return Ok(());
            }
        };
        let wallclock = self.wallclock(pts);
        let rtp = MediaTime::new(self.rtp_ticks(pts), Frequency::NINETY_KHZ);
        if let Some(w) = rtc.writer(mid) {
            w.write(pt, wallclock, rtp, data)?;
        }
        Ok(())
    }

    /// One Opus packet, on the video's clock (or its own when the stream has no video).
    fn send_audio(&mut self, rtc: &mut Rtc, f: &Frame, has_video: bool) {
        let (Some(mid), Some(pt)) = (self.audio_mid, self.audio_pt) else {
            return;
        };
        if self.clock.is_none() && has_video {
            return; // wait for video to set the clock
        }
        let wallclock = self.wallclock(f.pts);
        let rtp = MediaTime::new(
            self.rtp_ticks(f.pts) * OPUS_RATE / 90_000,
            Frequency::FORTY_EIGHT_KHZ,
        );
        if self.rtp_mode {
            let mut api = rtc.direct_api();
            if let Some(tx) = api.stream_tx_by_mid(mid, None) {
                let seq = SeqNo::from(self.audio_seq);
                self.audio_seq += 1;
                let payload: Arc<[u8]> = f.form_infallible::<OpusPayload>(|f| Arc::from(&f.data[..]));
                tx.write_rtp(
                    RtpWrite::new(pt, seq, rtp.numer() as u32, wallclock, payload).nackable(self.audio_nack),
                );
            }
            return;
        }
        if let Some(w) = rtc.writer(mid) {
            if let Err(e) = w.write(pt, wallclock, rtp, &f.data[..]) {
                tracing::debug!("cannot send audio: {e}");
            }
        }
    }
}

/// The negotiated payload types of a media line (what its writer would list; the writer itself
/// is not available in RTP mode).
fn negotiated(rtc: &Rtc, mid: Mid) -> Vec<str0m::format::PayloadParams> {
    let Some(m) = rtc.media(mid) else {
        return Vec::new();
    };
    rtc.codec_config()
        .params()
        .iter()
        .filter(|p| m.remote_pts().contains(&p.pt()))
        .cloned()
        .collect()
}

/// The payload type to send `want` video with on `mid` (H.264 for `None`), if the peer took it.
pub(crate) fn video_pt(rtc: &Rtc, mid: Mid, want: Option<CodecId>) -> Option<Pt> {
    let mut best: Option<(u8, Pt)> = None;
    for p in negotiated(rtc, mid) {
        let spec = p.spec();
        let ok = match want {
            Some(CodecId::H265) => spec.codec == Codec::H265,
            Some(CodecId::Vp8) => spec.codec == Codec::Vp8,
            Some(CodecId::Vp9) => spec.codec == Codec::Vp9,
            Some(CodecId::Av1) => spec.codec == Codec::Av1,
            _ => spec.codec == Codec::H264,
        };
        if !ok {
            continue;
        }
        // Prefer H.264 packetization-mode 1 (FU-A), which every browser decodes.
        let score = match spec.format.packetization_mode {
            Some(1) => 2,
            _ => 1,
        };
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, p.pt()));
        }
    }
    best.map(|(_, pt)| pt)
}

/// The payload type to send Opus with on `mid`, if the peer took it.
pub(crate) fn opus_pt(rtc: &Rtc, mid: Mid) -> Option<Pt> {
    negotiated(rtc, mid)
        .iter()
        .find(|p| p.spec().codec == Codec::Opus)
        .map(|p| p.pt())
}

/// The most packets a viewer's resend cache holds (str0m's default); the age bounds it first.
const RESEND_MAX_PACKETS: usize = 1024;

/// Resends stop when they would be more than this share of what is sent (str0m's default).
const RTX_RATIO_CAP: f32 = 0.15;

/// How long a viewer's sent video packets are kept to answer its NACKs. A browser asks again
/// about once per round trip while the frame can still be shown (Chrome up to 10 times), more
/// often the lossier the link: 3 round trips on a clean link, 6 above 1 % loss, 10 above 5 %,
/// plus 150 ms for the loss to be noticed and the request to be sent; at least 300 ms (a resend
/// later than that misses a LAN viewer's playout anyway, and Chrome asks for a keyframe), at
/// most str0m's default of 3 s; until an RTCP report gives a round trip, 300 ms. Each cached
/// packet is about 430 bytes of header and bookkeeping (the payload is shared by every viewer):
/// at 2.5 Mb/s, 3 s was about 440 KB per viewer; 300 ms, with a keyframe's burst, about 60 KB.
pub(crate) fn resend_age(rtt: Option<Duration>, loss: Option<f32>) -> Duration {
    let Some(rtt) = rtt else {
        return Duration::from_millis(300);
    };
    let loss = loss.unwrap_or(0.0);
    let rounds = if loss > 0.05 {
        10
    } else if loss > 0.01 {
        6
    } else {
        3
    };
    (rtt * rounds + Duration::from_millis(150)).clamp(Duration::from_millis(300), Duration::from_secs(3))
}

/// Whether a stream with this video codec is sent in str0m's RTP mode (H.264, or no video): the
/// session's `Rtc` must be built to match.
pub(crate) fn rtp_mode(video: Option<CodecId>) -> bool {
    matches!(video, None | Some(CodecId::H264))
}

/// An Opus frame as the shared RTP payload every viewer writes (one copy per frame).
struct OpusPayload;

impl sluice_media::FrameForm for OpusPayload {
    type Value = Arc<[u8]>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resend_cache_follows_round_trip_and_loss() {
        let ms = Duration::from_millis;
        // Before any report: 300 ms.
        assert_eq!(resend_age(None, None), ms(300));
        // Loopback and LANs: the floor.
        assert_eq!(resend_age(Some(ms(1)), Some(0.0)), ms(300));
        assert_eq!(resend_age(Some(ms(40)), Some(0.0)), ms(300));
        // 100 ms clean: 3 round trips + 150 ms.
        assert_eq!(resend_age(Some(ms(100)), None), ms(450));
        // The same link losing 2 %, then 10 %: more requests to answer.
        assert_eq!(resend_age(Some(ms(100)), Some(0.02)), ms(750));
        assert_eq!(resend_age(Some(ms(100)), Some(0.10)), ms(1150));
        // Never beyond str0m's own 3 s.
        assert_eq!(resend_age(Some(ms(800)), Some(0.5)), ms(3000));
    }
}
