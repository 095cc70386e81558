//! MPEG-TS demuxing (ISO/IEC 13818-1) into core tracks and frames: PAT/PMT, PES reassembly,
//! 33-bit timestamp unwrapping, and the elementary streams SRT contribution carries (H.264,
//! H.265, AAC in ADTS, Opus, MP3, AC-3).
//!
//! Written by hand: the parsing is small, and it must hold to our bad-input rules (bounded PES
//! size, a clear error for a stream that is not MPEG-TS, resynchronisation after corruption),
//! which is easier to guarantee in code we own. Packets with continuity-counter gaps drop the PES
//! they belong to rather than pass on a corrupt frame.

use bytes::{BufMut, Bytes, BytesMut};
use sluice_codec::aac::AudioSpecificConfig;
use sluice_codec::avc::AvcConfig;
use sluice_codec::hevc::HevcConfig;
use sluice_codec::nal::{iter_annexb, NalCodec};
use sluice_media::{CodecId, Frame, Track, CLOCK_RATE};

use crate::Error;

const PACKET: usize = 188;
/// Largest PES we reassemble (a 4K intra frame is a few MB).
pub const MAX_PES: usize = 16 << 20;
/// Bytes of non-TS data tolerated in a row before the stream is declared not MPEG-TS.
const MAX_GARBAGE: usize = 16 * PACKET;
const WRAP: i64 = 1 << 33;
/// Packets tolerated before the first PAT and PMT: encoders send them every 100 ms to 1 s, and
/// at 400 Mb/s one second is 270 000 packets; a reader joining mid-stream must wait for them.
/// (Random bytes are caught sooner, by the sync-byte check.)
const MAX_PACKETS_WITHOUT_TABLES: usize = 100_000;

/// What the demuxer produces.
#[derive(Debug, Clone)]
pub enum DemuxEvent {
    /// The set of tracks, once every stream's parameters are known (again after a PMT change).
    Tracks(Vec<Track>),
    Frame(Frame),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EsKind {
    H264,
    H265,
    Aac,
    Opus,
    Mp3,
    Ac3,
}

#[derive(Debug)]
struct Es {
    pid: u16,
    kind: EsKind,
    cc: Option<u8>,
    pes: BytesMut,
    /// The PES being assembled lost a packet: drop it.
    broken: bool,
    /// Video: the parameter sets seen so far.
    vps: Option<Bytes>,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    track: Option<Track>,
    /// Track id given at announcement; streams not ready then are left out.
    id: Option<u8>,
    opus_channels: u8,
}

/// Demuxes a transport stream of one program.
#[derive(Debug, Default)]
pub struct TsDemuxer {
    partial: BytesMut,
    pmt_pid: Option<u16>,
    pmt_version: Option<u8>,
    streams: Vec<Es>,
    announced: bool,
    /// Last unwrapped timestamp (any stream), the reference for unwrapping the next.
    last_ts: Option<i64>,
    /// First timestamp seen: the stream's zero.
    base: Option<i64>,
    garbage: usize,
    packets_without_tables: usize,
    /// Frames that arrived before the tracks were announced (by PID), delivered after it.
    pending: Vec<(u16, Frame)>,
    /// Counters for the session's log and stats.
    pub cc_errors: u64,
    pub dropped_pes: u64,
}

impl TsDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes (any split; SRT delivers 7 packets per message) and appends what they complete.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<DemuxEvent>) -> Result<(), Error> {
        if !self.partial.is_empty() {
            let need = PACKET - self.partial.len();
            let take = need.min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < PACKET {
                return Ok(());
            }
            let pkt = std::mem::take(&mut self.partial);
            if pkt[0] == 0x47 {
                self.packet(&pkt, out)?;
            } else {
                self.garbage(PACKET)?;
            }
        }
        while !data.is_empty() {
            // A sync byte counts only when the next packet's is where it should be (when the
            // data goes that far): random bytes have a 0x47 every 256 bytes on average.
            let synced = data[0] == 0x47 && data.get(PACKET).is_none_or(|&b| b == 0x47);
            if !synced {
                if data[0] == 0x47 {
                    self.garbage(1)?;
                    data = &data[1..];
                    continue;
                }
                let skip = data.iter().position(|&b| b == 0x47).unwrap_or(data.len());
                self.garbage(skip)?;
                data = &data[skip..];
                continue;
            }
            if data.len() < PACKET {
                self.partial.extend_from_slice(data);
                break;
            }
            self.packet(&data[..PACKET], out)?;
            data = &data[PACKET..];
        }
        Ok(())
    }

    fn garbage(&mut self, n: usize) -> Result<(), Error> {
        self.garbage += n;
        if self.garbage > MAX_GARBAGE {
            return Err(Error::Ts(format!(
                "no MPEG-TS sync byte in {} bytes: this is not an MPEG-TS stream",
                self.garbage
            )));
        }
        Ok(())
    }

    fn packet(&mut self, p: &[u8], out: &mut Vec<DemuxEvent>) -> Result<(), Error> {
        self.garbage = 0;
        if self.pmt_version.is_none() {
            self.packets_without_tables += 1;
            if self.packets_without_tables > MAX_PACKETS_WITHOUT_TABLES {
                return Err(Error::Ts(format!(
                    "no program tables (PAT/PMT) in the first {MAX_PACKETS_WITHOUT_TABLES} packets: this is not an MPEG-TS stream Sluice can read"
                )));
            }
        }
        let tei = p[1] & 0x80 != 0;
        let pusi = p[1] & 0x40 != 0;
        let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
        let afc = (p[3] >> 4) & 3;
        let cc = p[3] & 0x0f;
        if tei || pid == 0x1fff {
            return Ok(());
        }
        let mut off = 4;
        if afc & 2 != 0 {
            off += 1 + p[4] as usize;
        }
        if afc & 1 == 0 || off > PACKET {
            return Ok(());
        }
        let payload = &p[off..];
        if pid == 0 {
            if pusi {
                self.pat(payload);
            }
            return Ok(());
        }
        if Some(pid) == self.pmt_pid {
            if pusi {
                self.pmt(payload, out)?;
            }
            return Ok(());
        }
        let Some(i) = self.streams.iter().position(|s| s.pid == pid) else {
            return Ok(());
        };
        {
            let es = &mut self.streams[i];
            if let Some(prev) = es.cc {
                if cc == prev {
                    return Ok(()); // duplicate packet
                }
                if cc != (prev + 1) & 0x0f {
                    self.cc_errors += 1;
                    es.broken = true;
                }
            }
            es.cc = Some(cc);
        }
        if pusi {
            self.flush(i, out)?;
            let es = &mut self.streams[i];
            es.broken = false;
            es.pes.clear();
        } else if self.streams[i].pes.is_empty() {
            return Ok(()); // joined mid-PES
        }
        let es = &mut self.streams[i];
        if es.pes.len() + payload.len() > MAX_PES {
            return Err(Error::Ts(format!(
                "PES on PID {pid} grows past {} MiB",
                MAX_PES >> 20
            )));
        }
        es.pes.extend_from_slice(payload);
        // A PES with a known length can be delivered as soon as it is complete.
        if es.pes.len() >= 6 {
            let len = u16::from_be_bytes([es.pes[4], es.pes[5]]) as usize;
            if len != 0 && es.pes.len() >= len + 6 {
                self.flush(i, out)?;
                self.streams[i].pes.clear();
            }
        }
        Ok(())
    }

    fn pat(&mut self, payload: &[u8]) {
        let Some(sec) = section(payload) else { return };
        // Programs after the 8-byte header, 4 bytes each, before the CRC.
        let mut i = 8;
        while i + 4 <= sec.len().saturating_sub(4) {
            let program = u16::from_be_bytes([sec[i], sec[i + 1]]);
            let pid = u16::from_be_bytes([sec[i + 2] & 0x1f, sec[i + 3]]);
            if program != 0 {
                self.pmt_pid = Some(pid);
                return;
            }
            i += 4;
        }
    }

    fn pmt(&mut self, payload: &[u8], out: &mut Vec<DemuxEvent>) -> Result<(), Error> {
        let Some(sec) = section(payload) else {
            return Ok(());
        };
        if sec.len() < 16 || sec[0] != 0x02 {
            return Ok(());
        }
        let version = (sec[5] >> 1) & 0x1f;
        if self.pmt_version == Some(version) {
            return Ok(());
        }
        let info_len = (u16::from_be_bytes([sec[10] & 0x0f, sec[11]])) as usize;
        let mut i = 12 + info_len;
        let end = sec.len() - 4;
        let mut streams = Vec::new();
        while i + 5 <= end {
            let stream_type = sec[i];
            let pid = u16::from_be_bytes([sec[i + 1] & 0x1f, sec[i + 2]]);
            let es_len = (u16::from_be_bytes([sec[i + 3] & 0x0f, sec[i + 4]])) as usize;
            let desc = sec.get(i + 5..(i + 5 + es_len).min(end)).unwrap_or(&[]);
            i += 5 + es_len;
            let (kind, opus_channels) = match stream_type {
                0x1b => (EsKind::H264, 0),
                0x24 => (EsKind::H265, 0),
                0x0f => (EsKind::Aac, 0),
                0x03 | 0x04 => (EsKind::Mp3, 0),
                0x81 => (EsKind::Ac3, 0),
                0x06 => match private_kind(desc) {
                    Some(k) => k,
                    None => continue,
                },
                _ => continue,
            };
            if streams.len() >= 8 {
                break;
            }
            streams.push(Es {
                pid,
                kind,
                cc: None,
                pes: BytesMut::new(),
                broken: false,
                vps: None,
                sps: None,
                pps: None,
                track: None,
                id: None,
                opus_channels,
            });
        }
        if streams.is_empty() {
            return Err(Error::Ts("the program has no stream Sluice can carry".into()));
        }
        // Keep the state of streams that stay the same.
        for s in &mut streams {
            if let Some(old) = self
                .streams
                .iter_mut()
                .find(|o| o.pid == s.pid && o.kind == s.kind)
            {
                std::mem::swap(s, old);
            }
        }
        let changed = self.pmt_version.is_some();
        self.pmt_version = Some(version);
        self.streams = streams;
        if changed {
            self.announced = false;
            self.announce(out, false);
        }
        Ok(())
    }

    /// Delivers the PES assembled on stream `i`.
    fn flush(&mut self, i: usize, out: &mut Vec<DemuxEvent>) -> Result<(), Error> {
        let es = &mut self.streams[i];
        if es.pes.is_empty() {
            return Ok(());
        }
        if es.broken {
            self.dropped_pes += 1;
            return Ok(());
        }
        // Hand the PES on without copying, and give the next one the same room up front so
        // large video frames do not regrow the buffer (and copy it) a dozen times each.
        let room = es.pes.len().min(MAX_PES);
        let pes = std::mem::replace(&mut es.pes, BytesMut::with_capacity(room)).freeze();
        let Some((pts, dts, body)) = parse_pes(&pes) else {
            self.dropped_pes += 1;
            return Ok(());
        };
        let (Some(pts), dts) = (pts.map(|t| self.unwrap(t)), dts.map(|t| self.unwrap(t))) else {
            return Ok(()); // no timestamp: cannot place it
        };
        let dts = dts.unwrap_or(pts);
        let base = *self.base.get_or_insert(dts);
        let (pts, dts) = (pts - base, dts - base);
        let es = &mut self.streams[i];
        let mut frames = Vec::new();
        match es.kind {
            EsKind::H264 | EsKind::H265 => video(es, &body, pts, dts, &mut frames),
            EsKind::Aac => aac(es, &body, pts, &mut frames),
            EsKind::Opus => opus(es, &body, pts, &mut frames),
            EsKind::Mp3 => mp3(es, &body, pts, &mut frames),
            EsKind::Ac3 => ac3(es, &body, pts, &mut frames),
        }
        if !frames.is_empty() {
            let pid = self.streams[i].pid;
            if !self.announced {
                self.pending.extend(frames.into_iter().map(|f| (pid, f)));
                let force = self.pending.len() > 512;
                self.announce(out, force);
                return Ok(());
            }
            if let Some(id) = self.streams[i].id {
                for mut f in frames {
                    f.track = id;
                    out.push(DemuxEvent::Frame(f));
                }
            }
        }
        Ok(())
    }

    /// Announces the tracks once every stream has its parameters (or the video has and audio
    /// is simply absent so far after a while; a stream with no frames never blocks video).
    fn announce(&mut self, out: &mut Vec<DemuxEvent>, force: bool) {
        let ready: Vec<&Es> = self.streams.iter().filter(|s| s.track.is_some()).collect();
        if ready.is_empty() {
            return;
        }
        let all = ready.len() == self.streams.len();
        let has_video = ready
            .iter()
            .any(|s| matches!(s.kind, EsKind::H264 | EsKind::H265));
        let want_video = self
            .streams
            .iter()
            .any(|s| matches!(s.kind, EsKind::H264 | EsKind::H265));
        if !all && !force && (want_video && !has_video || self.pending_audio_patience()) {
            return;
        }
        // Streams not ready now are left out (until a new PMT version).
        let mut tracks = Vec::new();
        for s in &mut self.streams {
            s.id = None;
            if let Some(t) = &s.track {
                let mut t = t.clone();
                t.id = tracks.len() as u8;
                s.id = Some(t.id);
                tracks.push(t);
            }
        }
        self.announced = true;
        out.push(DemuxEvent::Tracks(tracks));
        for (pid, mut f) in std::mem::take(&mut self.pending) {
            if let Some(id) = self.streams.iter().find(|s| s.pid == pid).and_then(|s| s.id) {
                f.track = id;
                out.push(DemuxEvent::Frame(f));
            }
        }
    }

    /// The timestamp subtracted from every frame's (the stream's first decode timestamp, in
    /// [`CLOCK_RATE`] ticks), once known: a frame's time in the stream is its own plus this.
    pub fn base(&self) -> Option<i64> {
        self.base
    }

    fn pending_audio_patience(&self) -> bool {
        // Wait up to ~1 s of stream time for the other streams to show their parameters.
        self.last_ts
            .zip(self.base)
            .is_some_and(|(l, b)| l - b < CLOCK_RATE)
    }

    /// Maps a 33-bit timestamp to a continuous 64-bit one near the previous timestamp.
    fn unwrap(&mut self, raw: u64) -> i64 {
        let raw = (raw as i64) & (WRAP - 1);
        let t = match self.last_ts {
            None => raw,
            Some(last) => {
                let base = last - last.rem_euclid(WRAP);
                let mut best = base + raw;
                for cand in [base + raw - WRAP, base + raw + WRAP] {
                    if (cand - last).abs() < (best - last).abs() {
                        best = cand;
                    }
                }
                best
            }
        };
        self.last_ts = Some(self.last_ts.map_or(t, |l| l.max(t)));
        t
    }
}

fn private_kind(desc: &[u8]) -> Option<(EsKind, u8)> {
    let mut i = 0;
    let mut kind = None;
    let mut channels = 2;
    while i + 2 <= desc.len() {
        let (tag, len) = (desc[i], desc[i + 1] as usize);
        let body = desc.get(i + 2..i + 2 + len)?;
        match tag {
            0x05 if body == b"Opus" => kind = Some(EsKind::Opus),
            0x05 if body == b"AC-3" => kind = Some(EsKind::Ac3),
            0x6a => kind = Some(EsKind::Ac3),
            0x7f if body.len() >= 2 && body[0] == 0x80 => {
                channels = match body[1] {
                    c @ 1..=8 => c,
                    0x81 => 2,
                    _ => 2,
                }
            }
            _ => {}
        }
        i += 2 + len;
    }
    kind.map(|k| (k, channels))
}

/// The section that starts in this payload (after its pointer field), if complete.
fn section(payload: &[u8]) -> Option<&[u8]> {
    let ptr = *payload.first()? as usize;
    let s = payload.get(1 + ptr..)?;
    if s.len() < 3 {
        return None;
    }
    let len = (u16::from_be_bytes([s[1] & 0x0f, s[2]])) as usize;
    let sec = s.get(..3 + len)?;
    (crate::ts::crc32_mpeg2(sec) == 0).then_some(sec)
}

fn parse_pes(p: &Bytes) -> Option<(Option<u64>, Option<u64>, Bytes)> {
    if p.len() < 9 || p[..3] != [0, 0, 1] {
        return None;
    }
    let hdr_len = p[8] as usize;
    let flags = p[7] >> 6;
    let ts = |b: &[u8]| -> u64 {
        ((b[0] as u64 >> 1) & 7) << 30
            | (b[1] as u64) << 22
            | (b[2] as u64 >> 1) << 15
            | (b[3] as u64) << 7
            | b[4] as u64 >> 1
    };
    let h = p.get(9..9 + hdr_len)?;
    let pts = (flags & 2 != 0 && h.len() >= 5).then(|| ts(&h[..5]));
    let dts = (flags == 3 && h.len() >= 10).then(|| ts(&h[5..10]));
    let declared = u16::from_be_bytes([p[4], p[5]]) as usize;
    let end = if declared == 0 {
        p.len()
    } else {
        (declared + 6).min(p.len())
    };
    if 9 + hdr_len > end {
        return None;
    }
    Some((pts, dts, p.slice(9 + hdr_len..end)))
}

fn video(es: &mut Es, body: &Bytes, pts: i64, dts: i64, out: &mut Vec<Frame>) {
    let codec = if es.kind == EsKind::H264 {
        NalCodec::H264
    } else {
        NalCodec::H265
    };
    let mut data = BytesMut::with_capacity(body.len() + 16);
    let mut key = false;
    let mut params_changed = false;
    for nal in iter_annexb(body) {
        let t = codec.nal_type(nal);
        if codec.is_aud(t) {
            continue;
        }
        if codec.is_parameter_set(t) {
            let slot = match (codec, t) {
                (NalCodec::H264, 7) | (NalCodec::H265, 33) => &mut es.sps,
                (NalCodec::H264, 8) | (NalCodec::H265, 34) => &mut es.pps,
                _ => &mut es.vps,
            };
            if slot.as_deref() != Some(nal) {
                *slot = Some(Bytes::copy_from_slice(nal));
                params_changed = true;
            }
        }
        key |= codec.is_keyframe_nal(nal);
        data.put_u32(nal.len() as u32);
        data.put_slice(nal);
    }
    if params_changed || es.track.is_none() {
        let track = match (codec, &es.vps, &es.sps, &es.pps) {
            (NalCodec::H264, _, Some(sps), Some(pps)) => {
                let rec = AvcConfig::build(sps, pps);
                AvcConfig::parse(&rec)
                    .ok()
                    .and_then(|c| c.dimensions().ok())
                    .map(|(w, h)| Track::video(0, CodecId::H264, rec, w, h))
            }
            (NalCodec::H265, Some(vps), Some(sps), Some(pps)) => {
                HevcConfig::build(vps, sps, pps).ok().and_then(|rec| {
                    let (w, h) = HevcConfig::parse(&rec).ok()?.dimensions().ok()?;
                    Some(Track::video(0, CodecId::H265, rec, w, h))
                })
            }
            _ => None,
        };
        if let Some(t) = track {
            if es.track.is_none() {
                es.track = Some(t);
            } else if es.track.as_ref().map(|o| (o.width, o.height)) != Some((t.width, t.height)) {
                // A resolution change mid-stream keeps the announced track; players that
                // follow in-band parameter sets (all of ours do) adapt.
            }
        }
    }
    if es.track.is_none() || data.is_empty() {
        return;
    }
    out.push(Frame::new(0, dts, pts, key, data.freeze()));
}

fn aac(es: &mut Es, body: &Bytes, pts: i64, out: &mut Vec<Frame>) {
    let mut i = 0;
    let mut n = 0i64;
    while i + 7 <= body.len() {
        let h = &body[i..];
        if h[0] != 0xff || h[1] & 0xf0 != 0xf0 {
            break;
        }
        let protection_absent = h[1] & 1 == 1;
        let profile = (h[2] >> 6) + 1;
        let rate_idx = (h[2] >> 2) & 0x0f;
        let channels = ((h[2] & 1) << 2) | (h[3] >> 6);
        let len = (((h[3] & 3) as usize) << 11) | ((h[4] as usize) << 3) | (h[5] as usize >> 5);
        let hdr = if protection_absent { 7 } else { 9 };
        if len < hdr || i + len > body.len() {
            break;
        }
        const RATES: [u32; 13] = [
            96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
        ];
        let Some(&rate) = RATES.get(rate_idx as usize) else {
            break;
        };
        if es.track.is_none() {
            let Some(asc) = AudioSpecificConfig::build(profile, rate, channels.max(1)) else {
                break;
            };
            es.track = Some(Track::audio(
                0,
                CodecId::Aac,
                Bytes::copy_from_slice(&asc),
                rate,
                channels.max(1),
            ));
        }
        let t = pts + n * 1024 * CLOCK_RATE / rate as i64;
        out.push(Frame::new(0, t, t, true, body.slice(i + hdr..i + len)));
        n += 1;
        i += len;
    }
}

/// Opus packet duration in 48 kHz samples from its TOC (RFC 6716 §3.1).
fn opus_samples(p: &[u8]) -> i64 {
    let Some(&toc) = p.first() else { return 960 };
    let config = toc >> 3;
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][(config % 4) as usize],
        12..=15 => [480, 960][(config % 2) as usize],
        _ => [120, 240, 480, 960][(config % 4) as usize],
    };
    let count = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => p.get(1).map_or(1, |b| (b & 0x3f) as i64),
    };
    frame * count
}

fn opus(es: &mut Es, body: &Bytes, pts: i64, out: &mut Vec<Frame>) {
    if es.track.is_none() {
        let ch = es.opus_channels.max(1);
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, ch]);
        head.extend_from_slice(&312u16.to_le_bytes());
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&[0, 0, 0]);
        es.track = Some(Track::audio(0, CodecId::Opus, Bytes::from(head), 48_000, ch));
    }
    let mut i = 0;
    let mut t = pts;
    while i + 2 <= body.len() {
        if body[i] != 0x7f || body[i + 1] & 0xe0 != 0xe0 {
            break;
        }
        let (start_trim, end_trim) = (body[i + 1] & 0x10 != 0, body[i + 1] & 0x08 != 0);
        let control_ext = body[i + 1] & 0x04 != 0;
        i += 2;
        let mut size = 0usize;
        while i < body.len() {
            let b = body[i];
            i += 1;
            size += b as usize;
            if b != 0xff {
                break;
            }
        }
        i += 2 * (start_trim as usize + end_trim as usize);
        if control_ext {
            let Some(&n) = body.get(i) else { break };
            i += 1 + n as usize;
        }
        if i + size > body.len() {
            break;
        }
        let pkt = body.slice(i..i + size);
        let d = opus_samples(&pkt) * CLOCK_RATE / 48_000;
        out.push(Frame::new(0, t, t, true, pkt));
        t += d;
        i += size;
    }
}

fn mp3(es: &mut Es, body: &Bytes, pts: i64, out: &mut Vec<Frame>) {
    if es.track.is_none() {
        let Some(h) = body.get(..4) else { return };
        if h[0] != 0xff || h[1] & 0xe0 != 0xe0 {
            return;
        }
        let version = (h[1] >> 3) & 3; // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
        let base = match (h[2] >> 2) & 3 {
            0 => 44_100,
            1 => 48_000,
            2 => 32_000,
            _ => return,
        };
        let rate = match version {
            3 => base,
            2 => base / 2,
            _ => base / 4,
        };
        let channels = if h[3] >> 6 == 3 { 1 } else { 2 };
        es.track = Some(Track::audio(0, CodecId::Mp3, Bytes::new(), rate, channels));
    }
    out.push(Frame::new(0, pts, pts, true, body.clone()));
}

fn ac3(es: &mut Es, body: &Bytes, pts: i64, out: &mut Vec<Frame>) {
    if es.track.is_none() {
        // Sync info: 0x0B77, crc, fscod(2) frmsizecod(6); bsi: bsid(5) bsmod(3) acmod(3).
        let Some(h) = body.get(..7) else { return };
        if h[0] != 0x0b || h[1] != 0x77 {
            return;
        }
        let rate = match h[4] >> 6 {
            0 => 48_000,
            1 => 44_100,
            2 => 32_000,
            _ => return,
        };
        let acmod = h[6] >> 5;
        let channels = [2, 1, 2, 3, 3, 4, 4, 5][acmod as usize];
        es.track = Some(Track::audio(0, CodecId::Ac3, Bytes::new(), rate, channels));
    }
    out.push(Frame::new(0, pts, pts, true, body.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::TsMuxer;

    fn avc_track() -> Track {
        let rec = Bytes::from_static(include_bytes!("../../codec/testdata/ffmpeg_x264_640x360.avcc"));
        Track::video(0, CodecId::H264, rec, 640, 360)
    }

    fn aac_track() -> Track {
        Track::audio(1, CodecId::Aac, Bytes::from_static(&[0x11, 0x90]), 48_000, 2)
    }

    /// Frames muxed by our muxer come back with the same timestamps, flags and payloads.
    #[test]
    fn mux_then_demux_round_trip() {
        let tracks = vec![avc_track(), aac_track()];
        let mut mux = TsMuxer::new(&tracks).unwrap();
        let mut ts = BytesMut::new();
        mux.write_tables(&mut ts);
        let mut sent = Vec::new();
        for i in 0..60i64 {
            let key = i % 30 == 0;
            let nal: Vec<u8> = if key {
                vec![0x65, 0x88, 0x80 | i as u8]
            } else {
                vec![0x41, 0x9a, 0x80 | i as u8]
            };
            let mut v = (nal.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(&nal);
            let dts = 1_000 + i * 3000;
            let f = Frame::new(0, dts, dts + 6000, key, Bytes::from(v));
            mux.write_frame(&f, &mut ts).unwrap();
            sent.push(f);
            let a = Frame::new(1, dts, dts, true, Bytes::from(vec![0x21, i as u8, 0x55]));
            mux.write_frame(&a, &mut ts).unwrap();
        }
        let mut d = TsDemuxer::new();
        let mut out = Vec::new();
        // Feed in SRT-sized pieces that do not align with packets.
        for piece in ts.chunks(1000) {
            d.push(piece, &mut out).unwrap();
        }
        let tracks: Vec<_> = out
            .iter()
            .filter_map(|e| {
                if let DemuxEvent::Tracks(t) = e {
                    Some(t.clone())
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(tracks.len(), 1, "{tracks:?}");
        assert_eq!(tracks[0][0].codec, CodecId::H264);
        assert_eq!((tracks[0][0].width, tracks[0][0].height), (640, 360));
        assert_eq!(tracks[0][1].codec, CodecId::Aac);
        assert_eq!(tracks[0][1].sample_rate, 48_000);
        let frames: Vec<Frame> = out
            .into_iter()
            .filter_map(|e| {
                if let DemuxEvent::Frame(f) = e {
                    Some(f)
                } else {
                    None
                }
            })
            .collect();
        let video: Vec<&Frame> = frames.iter().filter(|f| f.track == 0).collect();
        // The last PES of each stream is delivered when the next starts: all but the last.
        assert!(video.len() >= 59, "{} video frames", video.len());
        for (got, want) in video.iter().zip(&sent) {
            assert_eq!(got.dts - video[0].dts, want.dts - sent[0].dts);
            assert_eq!(got.cts(), want.cts());
            assert_eq!(got.keyframe, want.keyframe);
            // Key frames gain the parameter sets in band; the slice NAL is last.
            assert!(got.data.ends_with(&want.data[4..]));
        }
        let audio: Vec<&Frame> = frames.iter().filter(|f| f.track == 1).collect();
        assert!(audio.len() >= 59);
        assert_eq!(&audio[3].data[..], &[0x21, 3, 0x55]);
    }

    #[test]
    fn timestamps_unwrap_across_33_bits() {
        let mut d = TsDemuxer::new();
        let near = WRAP - 3000;
        assert_eq!(d.unwrap(near as u64), near);
        assert_eq!(d.unwrap(1000), WRAP + 1000);
        assert_eq!(
            d.unwrap((WRAP - 500) as u64),
            WRAP - 500,
            "a slightly late frame stays before the wrap"
        );
    }

    #[test]
    fn garbage_is_refused_clearly() {
        let mut d = TsDemuxer::new();
        let mut out = Vec::new();
        let junk = vec![0x11u8; 10_000];
        let e = d.push(&junk, &mut out).unwrap_err();
        assert!(e.to_string().contains("not an MPEG-TS stream"), "{e}");
    }

    #[test]
    fn random_bytes_are_refused_even_with_sync_bytes() {
        let mut d = TsDemuxer::new();
        let mut out = Vec::new();
        let mut x = 0x1234_5678u32;
        let mut err = None;
        for _ in 0..2000 {
            let msg: Vec<u8> = (0..1316)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if let Err(e) = d.push(&msg, &mut out) {
                err = Some(e);
                break;
            }
        }
        assert!(err.expect("refused").to_string().contains("not an MPEG-TS"));
    }

    #[test]
    fn absurd_pes_is_refused() {
        let mut d = TsDemuxer::new();
        let mut mux = TsMuxer::new(&[avc_track()]).unwrap();
        let mut ts = BytesMut::new();
        mux.write_tables(&mut ts);
        let mut out = Vec::new();
        d.push(&ts, &mut out).unwrap();
        // A PES start on the video PID, then endless continuation packets.
        let mut pkt = [0xffu8; 188];
        pkt[..4].copy_from_slice(&[0x47, 0x41, 0x00, 0x10]);
        pkt[4..13].copy_from_slice(&[0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5]);
        pkt[13..18].copy_from_slice(&[0x21, 0, 1, 0, 1]);
        d.push(&pkt, &mut out).unwrap();
        let mut err = None;
        for i in 1..200_000u32 {
            pkt[1] = 0x01;
            pkt[3] = 0x10 | (i as u8 & 0x0f);
            if let Err(e) = d.push(&pkt, &mut out) {
                err = Some(e);
                break;
            }
        }
        assert!(err.expect("refused").to_string().contains("grows past"));
    }

    #[test]
    fn continuity_gap_drops_the_broken_frame() {
        let tracks = vec![avc_track()];
        let mut mux = TsMuxer::new(&tracks).unwrap();
        let mut ts = BytesMut::new();
        mux.write_tables(&mut ts);
        for i in 0..4i64 {
            let payload = vec![0x41u8; 1000]; // spans several packets
            let mut v = (payload.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(&payload);
            mux.write_frame(
                &Frame::new(0, i * 3000, i * 3000, i == 0, Bytes::from(v)),
                &mut ts,
            )
            .unwrap();
        }
        let pkts: Vec<&[u8]> = ts.chunks(188).collect();
        let mut d = TsDemuxer::new();
        let mut out = Vec::new();
        // Drop one continuation packet of the second frame (packets: PAT, PMT, then ~6 per frame).
        for (i, p) in pkts.iter().enumerate() {
            if i == 2 + 6 + 2 {
                continue;
            }
            d.push(p, &mut out).unwrap();
        }
        assert_eq!(d.cc_errors, 1);
        assert_eq!(d.dropped_pes, 1);
    }

    #[test]
    fn opus_durations_from_toc() {
        assert_eq!(opus_samples(&[0xfc]), 960); // CELT FB 20 ms, one frame
        assert_eq!(opus_samples(&[0x79]), 1920); // hybrid FB 20 ms (config 15), two frames
    }
}
