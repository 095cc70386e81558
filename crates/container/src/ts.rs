//! MPEG-TS muxing (ISO/IEC 13818-1) of core frames: PAT/PMT, PES with PTS/DTS, PCR.
//!
//! Video goes out as Annex B with an access unit delimiter and, on keyframes, the parameter sets
//! (so a player can start at any segment); AAC as ADTS. The PES payload is built once per frame
//! ([`PesPayload`]) and shared by every muxer that carries the frame.

use bytes::{BufMut, Bytes, BytesMut};
use sluice_codec::aac::AudioSpecificConfig;
use sluice_codec::avc::AvcConfig;
use sluice_codec::hevc::HevcConfig;
use sluice_codec::nal::{avcc_to_annexb, NalCodec};
use sluice_media::{CodecId, Frame, FrameForm, MediaKind, Track, TrackId};

use crate::Error;

pub const PACKET: usize = 188;
const PID_PMT: u16 = 0x1000;
const PID_VIDEO: u16 = 0x100;
const PID_AUDIO: u16 = 0x101;
const TS_MASK: i64 = (1 << 33) - 1;

/// A frame's PES payload (Annex B video with an access unit delimiter and, on keyframes, the
/// parameter sets; ADTS AAC; Opus with its control header), as a [`FrameForm`].
pub struct PesPayload;

impl FrameForm for PesPayload {
    type Value = Bytes;
}

#[derive(Debug)]
struct Stream {
    track: TrackId,
    pid: u16,
    stream_type: u8,
    stream_id: u8,
    cc: u8,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Nal {
        codec: NalCodec,
        length_size: u8,
        params: Vec<Bytes>,
    },
    Aac(AudioSpecificConfig),
    Opus,
    Raw,
}

/// Muxes the frames of a set of tracks into 188-byte packets.
#[derive(Debug)]
pub struct TsMuxer {
    streams: Vec<Stream>,
    pcr_pid: u16,
    pat_cc: u8,
    pmt_cc: u8,
}

impl TsMuxer {
    /// A muxer for the tracks MPEG-TS can carry (others are left out); an error when none.
    pub fn new(tracks: &[Track]) -> Result<Self, Error> {
        let mut streams = Vec::new();
        for t in tracks {
            let (pid, stream_id) = match t.kind() {
                MediaKind::Video if !streams.iter().any(|s: &Stream| s.pid == PID_VIDEO) => (PID_VIDEO, 0xe0),
                MediaKind::Audio if !streams.iter().any(|s: &Stream| s.pid == PID_AUDIO) => (PID_AUDIO, 0xc0),
                _ => continue,
            };
            let (stream_type, kind, stream_id) = match t.codec {
                CodecId::H264 => {
                    let c = AvcConfig::parse(&t.config).map_err(|e| Error::Ts(e.to_string()))?;
                    let params = c.sps.iter().chain(&c.pps).cloned().collect();
                    (
                        0x1b,
                        Kind::Nal {
                            codec: NalCodec::H264,
                            length_size: c.length_size,
                            params,
                        },
                        stream_id,
                    )
                }
                CodecId::H265 => {
                    let c = HevcConfig::parse(&t.config).map_err(|e| Error::Ts(e.to_string()))?;
                    let params = c.vps.iter().chain(&c.sps).chain(&c.pps).cloned().collect();
                    (
                        0x24,
                        Kind::Nal {
                            codec: NalCodec::H265,
                            length_size: c.length_size,
                            params,
                        },
                        stream_id,
                    )
                }
                CodecId::Aac => {
                    let asc = AudioSpecificConfig::parse(&t.config).map_err(|e| Error::Ts(e.to_string()))?;
                    (0x0f, Kind::Aac(asc), stream_id)
                }
                CodecId::Mp3 => (0x03, Kind::Raw, stream_id),
                // Opus in MPEG-TS (ETSI TS 102 366 style): private data with an "Opus" registration.
                CodecId::Opus => (0x06, Kind::Opus, 0xbd),
                // AC-3 with the ATSC stream type, which every demuxer reads.
                CodecId::Ac3 => (0x81, Kind::Raw, 0xbd),
                // Tracks MPEG-TS cannot carry are left out; the rest still goes through.
                _ => continue,
            };
            streams.push(Stream {
                track: t.id,
                pid,
                stream_type,
                stream_id,
                cc: 0,
                kind,
            });
        }
        if streams.is_empty() {
            let codecs: Vec<&str> = tracks.iter().map(|t| t.codec.name()).collect();
            return Err(Error::Ts(format!(
                "no track that MPEG-TS can carry (tracks: {})",
                codecs.join(", ")
            )));
        }
        let pcr_pid = streams
            .iter()
            .find(|s| s.pid == PID_VIDEO)
            .unwrap_or(&streams[0])
            .pid;
        Ok(TsMuxer {
            streams,
            pcr_pid,
            pat_cc: 0,
            pmt_cc: 0,
        })
    }

    /// Whether a track's frames go into this muxer.
    pub fn carries(&self, track: TrackId) -> bool {
        self.streams.iter().any(|s| s.track == track)
    }

    /// Appends a PAT and a PMT.
    pub fn write_tables(&mut self, out: &mut BytesMut) {
        let mut pat = vec![0x00, 0xb0, 0, 0x00, 0x01, 0xc1, 0, 0, 0x00, 0x01];
        pat.extend_from_slice(&(0xe000 | PID_PMT).to_be_bytes());
        section(out, 0, &mut self.pat_cc, &mut pat);
        let mut pmt = vec![0x02, 0xb0, 0, 0x00, 0x01, 0xc1, 0, 0];
        pmt.extend_from_slice(&(0xe000 | self.pcr_pid).to_be_bytes());
        pmt.extend_from_slice(&[0xf0, 0x00]);
        for s in &self.streams {
            let mut desc = Vec::new();
            if matches!(s.kind, Kind::Opus) {
                desc.extend_from_slice(&[0x05, 4, b'O', b'p', b'u', b's']);
                desc.extend_from_slice(&[0x7f, 2, 0x80, 2]);
            }
            pmt.push(s.stream_type);
            pmt.extend_from_slice(&(0xe000 | s.pid).to_be_bytes());
            pmt.extend_from_slice(&(0xf000 | desc.len() as u16).to_be_bytes());
            pmt.extend_from_slice(&desc);
        }
        section(out, PID_PMT, &mut self.pmt_cc, &mut pmt);
    }

    /// Appends one frame as a PES. Frames of tracks this muxer does not carry are skipped.
    pub fn write_frame(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), Error> {
        let pcr_pid = self.pcr_pid;
        let Some(s) = self.streams.iter_mut().find(|s| s.track == frame.track) else {
            return Ok(());
        };
        let payload = match &s.kind {
            Kind::Nal {
                codec,
                length_size,
                params,
            } => {
                let (codec, ls) = (*codec, *length_size);
                frame
                    .form::<PesPayload, _>(|f| avcc_to_annexb(codec, &f.data, ls, params, f.keyframe))
                    .map_err(|e| Error::Ts(format!("bad video frame: {e}")))?
            }
            Kind::Aac(asc) => frame.form_infallible::<PesPayload>(|f| {
                let mut b = BytesMut::with_capacity(f.data.len() + 7);
                b.put_slice(&asc.adts_header(f.data.len()));
                b.put_slice(&f.data);
                b.freeze()
            }),
            Kind::Opus => frame.form_infallible::<PesPayload>(|f| {
                // Opus control header (ETSI TS 102 366 Annex): prefix 0x7fe0 and the size in 255-steps.
                let mut b = BytesMut::with_capacity(f.data.len() + 8);
                b.put_slice(&[0x7f, 0xe0]);
                let mut n = f.data.len();
                while n >= 255 {
                    b.put_u8(0xff);
                    n -= 255;
                }
                b.put_u8(n as u8);
                b.put_slice(&f.data);
                b.freeze()
            }),
            Kind::Raw => frame.data.clone(),
        };
        let pts = frame.pts & TS_MASK;
        let dts = frame.dts & TS_MASK;
        let mut hdr = Vec::with_capacity(19);
        hdr.extend_from_slice(&[0, 0, 1, s.stream_id]);
        let with_dts = pts != dts;
        let header_data = if with_dts { 10 } else { 5 };
        let len = payload.len() + 3 + header_data;
        // Video PES may exceed 65535 bytes: length 0 means unbounded (allowed for video only).
        let pes_len = if s.stream_id == 0xe0 && len > 0xffff {
            0
        } else {
            len.min(0xffff) as u16
        };
        hdr.extend_from_slice(&pes_len.to_be_bytes());
        hdr.push(0x80);
        hdr.push(if with_dts { 0xc0 } else { 0x80 });
        hdr.push(header_data as u8);
        put_ts(&mut hdr, if with_dts { 3 } else { 2 }, pts);
        if with_dts {
            put_ts(&mut hdr, 1, dts);
        }
        let pcr = (s.pid == pcr_pid).then_some(dts);
        let rai = frame.keyframe && s.pid == PID_VIDEO || s.pid != PID_VIDEO && s.pid == pcr_pid;
        packetize(out, s.pid, &mut s.cc, &hdr, &payload, pcr, rai);
        Ok(())
    }
}

fn put_ts(b: &mut Vec<u8>, prefix: u8, ts: i64) {
    let ts = ts as u64;
    b.push((prefix << 4) | (((ts >> 29) & 0x0e) as u8) | 1);
    b.extend_from_slice(&((((ts >> 14) & 0xfffe) | 1) as u16).to_be_bytes());
    b.extend_from_slice(&((((ts << 1) & 0xfffe) | 1) as u16).to_be_bytes());
}

/// Writes a PSI section (with CRC) in one packet.
fn section(out: &mut BytesMut, pid: u16, cc: &mut u8, sec: &mut Vec<u8>) {
    let len = sec.len() - 3 + 4;
    sec[1] = 0xb0 | ((len >> 8) as u8 & 0x0f);
    sec[2] = len as u8;
    let crc = crc32_mpeg2(sec);
    sec.extend_from_slice(&crc.to_be_bytes());
    let start = out.len();
    out.put_u8(0x47);
    out.put_u16(0x4000 | pid);
    out.put_u8(0x10 | (*cc & 0x0f));
    *cc = cc.wrapping_add(1);
    out.put_u8(0); // pointer field
    out.put_slice(sec);
    out.resize(start + PACKET, 0xff);
}

/// Splits a PES (header + payload) into packets, with PCR and the random access indicator in the
/// first packet's adaptation field and stuffing in the last.
fn packetize(
    out: &mut BytesMut,
    pid: u16,
    cc: &mut u8,
    hdr: &[u8],
    payload: &[u8],
    pcr: Option<i64>,
    rai: bool,
) {
    let total = hdr.len() + payload.len();
    let mut written = 0;
    let mut first = true;
    out.reserve((total / 184 + 2) * PACKET);
    while written < total {
        let start = out.len();
        out.put_u8(0x47);
        out.put_u16(if first { 0x4000 } else { 0 } | pid);
        let mut af: Vec<u8> = Vec::new();
        if first && (pcr.is_some() || rai) {
            let mut flags = 0u8;
            if rai {
                flags |= 0x40;
            }
            af.push(flags);
            if let Some(pcr) = pcr {
                af[0] |= 0x10;
                let base = (pcr & TS_MASK) as u64;
                af.extend_from_slice(&[
                    (base >> 25) as u8,
                    (base >> 17) as u8,
                    (base >> 9) as u8,
                    (base >> 1) as u8,
                    (((base & 1) << 7) as u8) | 0x7e,
                    0,
                ]);
            }
        }
        let left = total - written;
        // Adaptation field bytes after its length byte (flags, PCR, stuffing); None = no field.
        let mut af = if af.is_empty() { None } else { Some(af) };
        let af_total = af.as_ref().map_or(0, |a| 1 + a.len());
        if left < 184 - af_total {
            // Stuff so the payload ends the packet exactly.
            let stuff = 184 - af_total - left;
            match &mut af {
                Some(a) => a.extend(std::iter::repeat_n(0xff, stuff)),
                None if stuff == 1 => af = Some(Vec::new()),
                None => {
                    let mut a = vec![0u8];
                    a.extend(std::iter::repeat_n(0xff, stuff - 2));
                    af = Some(a);
                }
            }
        }
        out.put_u8(if af.is_some() { 0x30 } else { 0x10 } | (*cc & 0x0f));
        *cc = cc.wrapping_add(1);
        if let Some(a) = &af {
            out.put_u8(a.len() as u8);
            out.put_slice(a);
        }
        let n = PACKET - (out.len() - start);
        let n = n.min(left);
        // Copy n bytes from hdr ++ payload starting at `written`.
        let mut k = 0;
        while k < n {
            let pos = written + k;
            if pos < hdr.len() {
                let m = (hdr.len() - pos).min(n - k);
                out.put_slice(&hdr[pos..pos + m]);
                k += m;
            } else {
                let p = pos - hdr.len();
                out.put_slice(&payload[p..p + (n - k)]);
                k = n;
            }
        }
        written += n;
        first = false;
        debug_assert_eq!(out.len() - start, PACKET);
    }
}

/// CRC-32/MPEG-2 (poly 0x04C11DB7, init all ones, no reflection, no final xor).
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= (b as u32) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_a_known_pat() {
        // PAT for program 1 on PID 0x1000, as ffmpeg writes it; CRC 0x2AB104B2.
        let sec = [
            0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00,
        ];
        assert_eq!(crc32_mpeg2(&sec), 0x2ab1_04b2);
    }

    #[test]
    fn packets_are_188_bytes_for_every_size() {
        let asc = Bytes::from_static(&[0x11, 0x90]);
        let tracks = [Track::audio(1, CodecId::Aac, asc, 48000, 2)];
        let mut m = TsMuxer::new(&tracks).unwrap();
        let mut out = BytesMut::new();
        m.write_tables(&mut out);
        for n in 0..600 {
            let f = Frame::new(
                1,
                n as i64 * 1920,
                n as i64 * 1920,
                true,
                Bytes::from(vec![0x21; n]),
            );
            m.write_frame(&f, &mut out).unwrap();
            assert_eq!(out.len() % PACKET, 0, "frame of {n} bytes");
        }
        assert!(out.chunks(PACKET).all(|p| p[0] == 0x47));
    }

    #[test]
    fn refuses_codecs_it_cannot_carry() {
        let t = [Track::video(0, CodecId::Vp9, Bytes::new(), 1, 1)];
        assert!(TsMuxer::new(&t).unwrap_err().to_string().contains("vp9"));
    }
}
