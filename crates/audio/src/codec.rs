//! The codecs: AAC access units to 20 ms Opus packets and back, with a resampler for AAC that
//! is not at 48 kHz. Timestamps (on the core's 90 kHz clock) are carried through.

use bytes::Bytes;
use sluice_media::{CodecId, Track, CLOCK_RATE};

/// Opus always runs at 48 kHz; a 20 ms frame is 960 samples per channel.
pub const OPUS_RATE: u32 = 48_000;
pub const OPUS_FRAME: usize = 960;
const AAC_FRAME: usize = 1024;

/// An Opus packet, timestamped on the path's clock.
#[derive(Debug, Clone)]
pub struct OpusPacket {
    pub pts: i64,
    pub data: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("AAC decoder: {0}")]
    AacDecode(String),
    #[error("AAC encoder: {0}")]
    AacEncode(String),
    #[error("Opus: {0}")]
    Opus(#[from] opus::Error),
}

/// Samples at 48 kHz libopus holds back at the start of a stream (its lookahead with the
/// default settings), the OpusHead pre-skip of what [`AacToOpus`] makes.
pub const OPUS_PRE_SKIP: u16 = 312;

/// An `OpusHead` (RFC 7845 §5.1) for a mapping-family-0 stream: how the core describes Opus.
pub fn opus_head(channels: u8, pre_skip: u16, input_rate: u32) -> Bytes {
    let mut h = Vec::with_capacity(19);
    h.extend_from_slice(b"OpusHead");
    h.push(1);
    h.push(channels);
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&input_rate.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes());
    h.push(0);
    Bytes::from(h)
}

/// Stereo linear-interpolation resampler from `from` Hz to `to` Hz over interleaved i16.
pub struct Resampler {
    from: u32,
    to: u32,
    /// Position of the next output sample in input samples, relative to `prev`.
    pos: f64,
    prev: [i16; 2],
}

impl Resampler {
    pub fn new(from: u32, to: u32) -> Self {
        Resampler {
            from,
            to,
            pos: 1.0,
            prev: [0; 2],
        }
    }

    /// Appends the resampled `input` (interleaved stereo) to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if self.from == self.to {
            out.extend_from_slice(input);
            return;
        }
        let step = self.from as f64 / self.to as f64;
        let frames = input.len() / 2;
        // Sample k of the virtual signal: k = 0 is `prev`, k = i + 1 is input frame i.
        let at = |k: usize, ch: usize, prev: &[i16; 2]| -> f64 {
            if k == 0 {
                prev[ch] as f64
            } else {
                input[(k - 1) * 2 + ch] as f64
            }
        };
        while self.pos < frames as f64 {
            let k = self.pos.floor() as usize;
            let frac = self.pos - k as f64;
            for ch in 0..2 {
                let a = at(k, ch, &self.prev);
                let b = at(k + 1, ch, &self.prev);
                out.push((a + (b - a) * frac).round() as i16);
            }
            self.pos += step;
        }
        if frames > 0 {
            self.prev = [input[(frames - 1) * 2], input[(frames - 1) * 2 + 1]];
        }
        self.pos -= frames as f64;
    }
}

/// AAC access units in, 20 ms Opus packets out, with timestamps carried through.
pub struct AacToOpus {
    decoder: fdk_aac::dec::Decoder,
    encoder: opus::Encoder,
    resampler: Option<Resampler>,
    pcm: Vec<i16>,
    resampled: Vec<i16>,
    /// 48 kHz stereo samples waiting for a full Opus frame, and the pts of the first.
    pending: Vec<i16>,
    pending_pts: Option<i64>,
    out: Vec<u8>,
}

impl AacToOpus {
    /// `asc`: the track's AudioSpecificConfig.
    pub fn new(asc: &[u8]) -> Result<Self, AudioError> {
        let mut decoder = fdk_aac::dec::Decoder::new(fdk_aac::dec::Transport::Raw);
        decoder
            .config_raw(asc)
            .map_err(|e| AudioError::AacDecode(e.message().into()))?;
        // Mono sources are upmixed and multichannel ones downmixed: Opus gets stereo.
        let _ = decoder.set_min_output_channels(2);
        let _ = decoder.set_max_output_channels(2);
        let mut encoder = opus::Encoder::new(OPUS_RATE, opus::Channels::Stereo, opus::Application::Audio)?;
        encoder.set_bitrate(opus::Bitrate::Bits(96_000))?;
        Ok(AacToOpus {
            decoder,
            encoder,
            resampler: None,
            pcm: vec![0; AAC_FRAME * 2 * 2 * 2],
            resampled: Vec::new(),
            pending: Vec::new(),
            pending_pts: None,
            out: vec![0; 4000],
        })
    }

    /// The Opus track this makes (48 kHz stereo), with its OpusHead.
    pub fn track(id: sluice_media::TrackId) -> Track {
        Track::audio(
            id,
            CodecId::Opus,
            opus_head(2, OPUS_PRE_SKIP, OPUS_RATE),
            OPUS_RATE,
            2,
        )
    }

    /// Decodes one AAC access unit at `pts` and returns the Opus packets that became complete.
    pub fn push(&mut self, pts: i64, aac: &[u8]) -> Result<Vec<OpusPacket>, AudioError> {
        self.decoder
            .fill(aac)
            .map_err(|e| AudioError::AacDecode(e.message().into()))?;
        self.decoder
            .decode_frame(&mut self.pcm)
            .map_err(|e| AudioError::AacDecode(e.message().into()))?;
        let info = self.decoder.stream_info();
        let (rate, channels) = (info.sampleRate as u32, info.numChannels as usize);
        let n = self.decoder.decoded_frame_size().min(self.pcm.len());
        if channels != 2 || rate == 0 {
            return Err(AudioError::AacDecode(format!(
                "unexpected decoder output: {channels} channels at {rate} Hz"
            )));
        }
        let resampler = self
            .resampler
            .get_or_insert_with(|| Resampler::new(rate, OPUS_RATE));
        if resampler.from != rate {
            *resampler = Resampler::new(rate, OPUS_RATE);
        }
        self.resampled.clear();
        resampler.process(&self.pcm[..n], &mut self.resampled);
        if self.pending_pts.is_none() {
            self.pending_pts = Some(pts);
        }
        // A jump in the source's timestamps (a gap or a restart) starts the queue over.
        let expected =
            self.pending_pts.unwrap_or(pts) + (self.pending.len() / 2) as i64 * CLOCK_RATE / OPUS_RATE as i64;
        if (pts - expected).abs() > CLOCK_RATE / 5 {
            self.pending.clear();
            self.pending_pts = Some(pts);
        }
        self.pending.extend_from_slice(&self.resampled);
        let mut packets = Vec::new();
        while self.pending.len() >= OPUS_FRAME * 2 {
            let len = self
                .encoder
                .encode(&self.pending[..OPUS_FRAME * 2], &mut self.out)?;
            let pts = self.pending_pts.unwrap_or(pts);
            packets.push(OpusPacket {
                pts,
                data: Bytes::copy_from_slice(&self.out[..len]),
            });
            self.pending.drain(..OPUS_FRAME * 2);
            self.pending_pts = Some(pts + OPUS_FRAME as i64 * CLOCK_RATE / OPUS_RATE as i64);
        }
        Ok(packets)
    }
}

/// Opus packets in (from a WebRTC publisher), AAC-LC access units out, at 48 kHz stereo.
pub struct OpusToAac {
    decoder: opus::Decoder,
    encoder: fdk_aac::enc::Encoder,
    pcm: Vec<i16>,
    pending: Vec<i16>,
    pending_pts: Option<i64>,
    out: Vec<u8>,
    asc: Bytes,
}

impl OpusToAac {
    pub fn new() -> Result<Self, AudioError> {
        let decoder = opus::Decoder::new(OPUS_RATE, opus::Channels::Stereo)?;
        let encoder = fdk_aac::enc::Encoder::new(fdk_aac::enc::EncoderParams {
            bit_rate: fdk_aac::enc::BitRate::Cbr(128_000),
            sample_rate: OPUS_RATE,
            transport: fdk_aac::enc::Transport::Raw,
            channels: fdk_aac::enc::ChannelMode::Stereo,
            audio_object_type: fdk_aac::enc::AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(|e| AudioError::AacEncode(e.to_string()))?;
        let info = encoder.info().map_err(|e| AudioError::AacEncode(e.to_string()))?;
        let asc = Bytes::copy_from_slice(&info.confBuf[..(info.confSize as usize).min(64)]);
        Ok(OpusToAac {
            decoder,
            encoder,
            pcm: vec![0; 5760 * 2],
            pending: Vec::new(),
            pending_pts: None,
            out: vec![0; 8192],
            asc,
        })
    }

    /// The AudioSpecificConfig of the AAC this produces.
    pub fn track(&self, id: sluice_media::TrackId) -> Track {
        Track::audio(id, CodecId::Aac, self.asc.clone(), OPUS_RATE, 2)
    }

    /// Decodes one Opus packet at `pts`; returns complete AAC access units with their pts.
    /// An empty `opus` conceals one lost 20 ms packet.
    pub fn push(&mut self, pts: i64, opus: &[u8]) -> Result<Vec<(i64, Bytes)>, AudioError> {
        let samples = self.decoder.decode(opus, &mut self.pcm, false)?;
        let expected =
            self.pending_pts.unwrap_or(pts) + (self.pending.len() / 2) as i64 * CLOCK_RATE / OPUS_RATE as i64;
        if self.pending_pts.is_none() || (pts - expected).abs() > CLOCK_RATE / 5 {
            self.pending.clear();
            self.pending_pts = Some(pts);
        }
        self.pending.extend_from_slice(&self.pcm[..samples * 2]);
        let mut frames = Vec::new();
        while self.pending.len() >= AAC_FRAME * 2 {
            let info = self
                .encoder
                .encode(&self.pending[..AAC_FRAME * 2], &mut self.out)
                .map_err(|e| AudioError::AacEncode(e.to_string()))?;
            let pts = self.pending_pts.unwrap_or(pts);
            self.pending.drain(..info.input_consumed.min(self.pending.len()));
            self.pending_pts = Some(pts + (info.input_consumed / 2) as i64 * CLOCK_RATE / OPUS_RATE as i64);
            if info.output_size > 0 {
                frames.push((pts, Bytes::copy_from_slice(&self.out[..info.output_size])));
            }
            if info.input_consumed == 0 {
                break;
            }
        }
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(samples: usize, rate: u32, offset: usize) -> Vec<i16> {
        (0..samples)
            .flat_map(|i| {
                let t = (i + offset) as f64 / rate as f64;
                let v = ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16;
                [v, v]
            })
            .collect()
    }

    #[test]
    fn resampler_keeps_the_rate() {
        let mut r = Resampler::new(44_100, 48_000);
        let mut out = Vec::new();
        for k in 0..100 {
            r.process(&sine(441, 44_100, k * 441), &mut out);
        }
        // One second in, one second (±1 sample) out.
        assert!((out.len() as i64 / 2 - 48_000).abs() <= 1, "{}", out.len() / 2);
    }

    #[test]
    fn opus_to_aac_to_opus_round_trip() {
        // Opus 20 ms packets of a 440 Hz tone, through AAC and back to Opus.
        let mut enc =
            opus::Encoder::new(OPUS_RATE, opus::Channels::Stereo, opus::Application::Audio).unwrap();
        let mut to_aac = OpusToAac::new().unwrap();
        let track = to_aac.track(1);
        assert_eq!(track.config.len(), 2, "AAC-LC AudioSpecificConfig");
        let mut to_opus = AacToOpus::new(&track.config).unwrap();
        let mut aac_frames = 0;
        let mut opus_out = Vec::new();
        let mut buf = [0u8; 4000];
        for k in 0..100 {
            let pcm = sine(OPUS_FRAME, OPUS_RATE, k * OPUS_FRAME);
            let n = enc.encode(&pcm, &mut buf).unwrap();
            let pts = k as i64 * 1800;
            for (apts, aac) in to_aac.push(pts, &buf[..n]).unwrap() {
                aac_frames += 1;
                opus_out.extend(to_opus.push(apts, &aac).unwrap());
            }
        }
        // 2 s of audio: 93 AAC frames (minus the encoder's delay) and ~95 Opus packets.
        assert!(aac_frames >= 90, "{aac_frames}");
        assert!(opus_out.len() >= 85, "{}", opus_out.len());
        // Timestamps advance 20 ms per packet.
        for w in opus_out.windows(2) {
            assert_eq!(w[1].pts - w[0].pts, 1800);
        }
        // The tone survives: decode the last packet and check it is not silence.
        let mut dec = opus::Decoder::new(OPUS_RATE, opus::Channels::Stereo).unwrap();
        let mut pcm = vec![0i16; 5760 * 2];
        let mut peak = 0;
        for p in &opus_out {
            let n = dec.decode(&p.data, &mut pcm, false).unwrap();
            peak = pcm[..n * 2].iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        }
        assert!(peak > 2000, "peak {peak}");
    }
}
