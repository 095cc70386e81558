//! Decode-only level meters: a path's audio decoded for nothing but its level, one [`Level`] per
//! frame in dBFS, for silence detection (the server's health checks). AAC is decoded with FDK
//! AAC and Opus with libopus, as for the conversions; nothing is encoded and nothing is
//! resampled, so the decode is the whole cost: decoding every frame, 0.31–0.38 % of a core for a
//! 48 kHz stereo AAC-LC stream at 128 kb/s and 0.22 % for Opus at 96 kb/s, on the 2-core
//! development machine (`cargo bench -p sluice-audio --bench level`, release build, 60 s of
//! audio each).
//!
//! A meter of AAC may also sample the audio ([`LevelMeter::sampled`]): one frame measured in
//! every N, with the three frames before it decoded too (their output thrown away) so that the
//! measured one comes out of a decoder whose state belongs to it; the frames between are not
//! decoded at all. At one in 16 that is a quarter of the decoding (0.095 % of a core), and each
//! measured frame stands for the 16 (341 ms of AAC at 48 kHz): what a silence detector judging
//! seconds of audio needs.
//!
//! Corrupt frames are errors for that frame only: the meter goes on with the next one.

use std::time::Duration;

use sluice_media::{CodecId, Track};

use crate::codec::AudioError;

/// The level given to digital silence and anything quieter, in dBFS (16-bit audio's own floor
/// is about -96 dBFS). Also what JSON gets instead of minus infinity.
pub const FLOOR_DB: f32 = -100.0;

/// The largest AAC frame FDK can decode into our buffer: 2048 samples per channel (HE-AAC
/// with SBR doubles the 1024 of AAC-LC), up to 8 channels (7.1).
const AAC_MAX_SAMPLES: usize = 2048 * 8;
/// The longest Opus packet: 120 ms at 48 kHz, per channel.
const OPUS_MAX_FRAME: usize = 5760;

/// The level of one decoded frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    /// Root mean square over every sample of every channel, relative to full scale (0..=1): a
    /// full-scale square wave is 1, a full-scale sine 0.707.
    pub rms: f32,
    /// Largest absolute sample, relative to full scale.
    pub peak: f32,
    /// Samples per channel the frame decoded to, and their rate: the frame's duration.
    pub samples: u32,
    pub sample_rate: u32,
}

impl Level {
    /// The level of interleaved 16-bit samples (`channels` of them per instant).
    pub fn of(pcm: &[i16], channels: usize, sample_rate: u32) -> Level {
        let mut sum: i64 = 0;
        let mut peak: i32 = 0;
        for &s in pcm {
            let s = s as i32;
            sum += (s * s) as i64;
            peak = peak.max(s.abs());
        }
        let rms = if pcm.is_empty() {
            0.0
        } else {
            ((sum as f64 / pcm.len() as f64).sqrt() / 32768.0) as f32
        };
        Level {
            rms,
            peak: peak as f32 / 32768.0,
            samples: (pcm.len() / channels.max(1)) as u32,
            sample_rate,
        }
    }

    /// [`rms`](Self::rms) in dBFS, never below [`FLOOR_DB`].
    pub fn rms_db(&self) -> f32 {
        to_db(self.rms)
    }

    /// [`peak`](Self::peak) in dBFS, never below [`FLOOR_DB`].
    pub fn peak_db(&self) -> f32 {
        to_db(self.peak)
    }

    /// How much audio the frame held.
    pub fn duration(&self) -> Duration {
        if self.sample_rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(self.samples as f64 / self.sample_rate as f64)
    }
}

/// A linear level (relative to full scale) in dBFS, floored at [`FLOOR_DB`].
pub fn to_db(linear: f32) -> f32 {
    if linear <= 0.0 || !linear.is_finite() {
        return FLOOR_DB;
    }
    (20.0 * linear.log10()).max(FLOOR_DB)
}

/// Decodes one audio track's frames and measures each (or, [`sampled`](Self::sampled), one in
/// N). One per path (the health output).
pub struct LevelMeter {
    codec: CodecId,
    decoder: Decoder,
    pcm: Vec<i16>,
    /// One frame measured in this many (1: every frame).
    every: u32,
    /// Frames pushed so far (modulo `every`).
    at: u32,
    /// Frames decoded before a measured one for the decoder's state alone.
    primers: u32,
}

enum Decoder {
    Aac(fdk_aac::dec::Decoder),
    Opus { decoder: opus::Decoder, channels: usize },
}

impl LevelMeter {
    /// A meter for `track`'s frames. `Ok(None)` when its codec is not one this decodes (MP3,
    /// AC-3, G.711, multichannel Opus); an error when the track's configuration is refused by
    /// the decoder (a bad AudioSpecificConfig).
    pub fn new(track: &Track) -> Result<Option<LevelMeter>, AudioError> {
        Self::sampled(track, 1)
    }

    /// A meter that measures one frame in every `every` (at least 1) and decodes the three
    /// frames before it as well, to bring the decoder's state up to it; the others are not decoded and
    /// [`push`](Self::push) gives `Ok(None)` for them. Each measured [`Level`] stands for `every`
    /// frames: its `samples` (and so its duration) are the frame's times `every`. Corrupt frames
    /// are found only among the decoded ones. Opus is measured whole (every frame) whatever
    /// `every` says: its decoder's state outlasts a few frames.
    pub fn sampled(track: &Track, every: u32) -> Result<Option<LevelMeter>, AudioError> {
        let (decoder, pcm_len) = match track.codec {
            CodecId::Aac => {
                let mut d = fdk_aac::dec::Decoder::new(fdk_aac::dec::Transport::Raw);
                d.config_raw(&track.config)
                    .map_err(|e| AudioError::AacDecode(e.message().into()))?;
                (Decoder::Aac(d), AAC_MAX_SAMPLES)
            }
            CodecId::Opus => {
                // OpusHead's channel count (RFC 7845 §5.1, byte 9) when there is one.
                let channels = match track.config.get(9) {
                    Some(&n) if track.config.starts_with(b"OpusHead") => n,
                    _ => track.channels,
                };
                let ch = match channels {
                    0 | 2 => opus::Channels::Stereo,
                    1 => opus::Channels::Mono,
                    // Multistream (mapping family 1): a plain decoder cannot take its packets.
                    _ => return Ok(None),
                };
                let n = if ch == opus::Channels::Mono { 1 } else { 2 };
                // Decoded at 48 kHz: Opus's own rate, so nothing is resampled inside libopus.
                let decoder = opus::Decoder::new(crate::OPUS_RATE, ch)?;
                (Decoder::Opus { decoder, channels: n }, OPUS_MAX_FRAME * n)
            }
            _ => return Ok(None),
        };
        Ok(Some(LevelMeter {
            codec: track.codec,
            decoder,
            pcm: vec![0; pcm_len],
            // Opus is measured whole: CELT codes each frame's band energies against the
            // previous frame's, and after a gap the decoder's energies stayed off (6 dB after a
            // 12-frame gap across a silence-to-tone change) for more frames than skipping saves.
            every: if track.codec == CodecId::Aac {
                every.max(1)
            } else {
                1
            },
            at: 0,
            // Three: FDK's output lags its input (its default concealment holds a frame back,
            // its limiter looks ahead), so the audio a decode gives out was decoded from the
            // frames before it, which need their own predecessors' overlap; with fewer the
            // levels of a steady tone were off by up to 0.7 dB, with three they are exact.
            primers: 3,
        }))
    }

    /// The codec this meter decodes.
    pub fn codec(&self) -> CodecId {
        self.codec
    }

    /// Decodes one frame and measures it (a sampled meter: the frames it measures, `Ok(None)`
    /// for the others). `Ok(None)` for an empty frame (nothing to decode); an error for a frame
    /// that does not decode (counted by the caller, never fatal).
    pub fn push(&mut self, data: &[u8]) -> Result<Option<Level>, AudioError> {
        if data.is_empty() {
            return Ok(None);
        }
        let at = self.at;
        self.at = (at + 1) % self.every;
        if self.every == 1 || at + 1 == self.every {
            let level = self.decode(data)?;
            return Ok(level.map(|l| Level {
                samples: l.samples.saturating_mul(self.every),
                ..l
            }));
        }
        if at + 1 + self.primers >= self.every {
            // The frames before the measured one: decoded for the decoder's state only.
            self.decode(data)?;
        }
        Ok(None)
    }

    fn decode(&mut self, data: &[u8]) -> Result<Option<Level>, AudioError> {
        match &mut self.decoder {
            Decoder::Aac(d) => {
                d.fill(data)
                    .map_err(|e| AudioError::AacDecode(e.message().into()))?;
                d.decode_frame(&mut self.pcm)
                    .map_err(|e| AudioError::AacDecode(e.message().into()))?;
                let info = d.stream_info();
                let channels = info.numChannels.max(0) as usize;
                let rate = info.sampleRate.max(0) as u32;
                let n = d.decoded_frame_size().min(self.pcm.len());
                if channels == 0 || rate == 0 {
                    return Err(AudioError::AacDecode(format!(
                        "unexpected decoder output: {channels} channels at {rate} Hz"
                    )));
                }
                Ok(Some(Level::of(&self.pcm[..n], channels, rate)))
            }
            Decoder::Opus { decoder, channels } => {
                let samples = decoder.decode(data, &mut self.pcm, false)?;
                let n = (samples * *channels).min(self.pcm.len());
                Ok(Some(Level::of(&self.pcm[..n], *channels, crate::OPUS_RATE)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{opus_head, OPUS_FRAME, OPUS_RATE};

    /// Interleaved stereo: a 440 Hz sine of `amplitude` (relative to full scale).
    fn sine(frames: usize, offset: usize, amplitude: f64) -> Vec<i16> {
        (0..frames)
            .flat_map(|i| {
                let t = (i + offset) as f64 / 48_000.0;
                let v = ((t * 440.0 * std::f64::consts::TAU).sin() * amplitude * 32767.0) as i16;
                [v, v]
            })
            .collect()
    }

    /// AAC-LC 48 kHz stereo access units of `seconds` of audio: tone for the first half when
    /// `tone_first`, else silence then tone. Returns the AudioSpecificConfig and the frames.
    fn aac(seconds: usize, tone_first: bool) -> (Vec<u8>, Vec<Vec<u8>>) {
        let enc = fdk_aac::enc::Encoder::new(fdk_aac::enc::EncoderParams {
            bit_rate: fdk_aac::enc::BitRate::Cbr(128_000),
            sample_rate: 48_000,
            transport: fdk_aac::enc::Transport::Raw,
            channels: fdk_aac::enc::ChannelMode::Stereo,
            audio_object_type: fdk_aac::enc::AudioObjectType::Mpeg4LowComplexity,
        })
        .unwrap();
        let info = enc.info().unwrap();
        let asc = info.confBuf[..info.confSize as usize].to_vec();
        let total = seconds * 48_000;
        let mut frames = Vec::new();
        let mut out = vec![0u8; 8192];
        let mut at = 0;
        while at < total {
            let tone = (at < total / 2) == tone_first;
            let pcm = sine(1024, at, if tone { 0.5 } else { 0.0 });
            let r = enc.encode(&pcm, &mut out).unwrap();
            if r.output_size > 0 {
                frames.push(out[..r.output_size].to_vec());
            }
            at += 1024;
        }
        (asc, frames)
    }

    #[test]
    fn levels_of_known_signals() {
        let full = Level::of(&sine(4800, 0, 1.0), 2, 48_000);
        assert!((full.rms_db() - -3.01).abs() < 0.05, "{}", full.rms_db());
        assert!(full.peak_db() > -0.01, "{}", full.peak_db());
        assert_eq!(full.samples, 4800);
        assert_eq!(full.duration(), Duration::from_millis(100));
        let half = Level::of(&sine(4800, 0, 0.5), 2, 48_000);
        assert!((half.rms_db() - -9.03).abs() < 0.05, "{}", half.rms_db());
        let zero = Level::of(&[0; 2048], 2, 48_000);
        assert_eq!((zero.rms_db(), zero.peak_db()), (FLOOR_DB, FLOOR_DB));
        assert_eq!(Level::of(&[], 2, 48_000).rms_db(), FLOOR_DB);
        assert_eq!(to_db(f32::NAN), FLOOR_DB);
        // One LSB of 16-bit audio is -90 dBFS: above the floor.
        assert!((Level::of(&[1; 64], 2, 48_000).rms_db() - -90.3).abs() < 0.1);
    }

    #[test]
    fn aac_silence_and_tone() {
        let (asc, frames) = aac(4, false);
        let track = Track::audio(1, CodecId::Aac, asc.into(), 48_000, 2);
        let mut m = LevelMeter::new(&track).unwrap().expect("AAC is metered");
        let levels: Vec<Level> = frames.iter().filter_map(|f| m.push(f).unwrap()).collect();
        assert!(levels.len() >= frames.len() - 2);
        let n = levels.len();
        // First half digital silence, second half a 0.5 sine (-9 dBFS RMS), past the codecs'
        // delay (about 3 frames) at each end.
        for l in &levels[2..n / 2 - 2] {
            assert!(l.rms_db() < -90.0, "silence at {}", l.rms_db());
        }
        for l in &levels[n / 2 + 6..] {
            assert!((l.rms_db() - -9.0).abs() < 1.0, "tone at {}", l.rms_db());
            assert_eq!((l.samples, l.sample_rate), (1024, 48_000));
        }
    }

    /// A sampled meter gives the very levels the full one gives for the frames it measures
    /// (the frames before each are decoded for the decoder's state), each standing for `every`
    /// frames, and decodes no others.
    #[test]
    fn sampled_meter_matches_the_full_one() {
        let (asc, aac_frames) = aac(4, false);
        let aac_track = Track::audio(1, CodecId::Aac, asc.into(), 48_000, 2);
        let mut enc =
            opus::Encoder::new(OPUS_RATE, opus::Channels::Stereo, opus::Application::Audio).unwrap();
        let mut buf = [0u8; 4000];
        let opus_frames: Vec<Vec<u8>> = (0..200)
            .map(|k| {
                let amp = if k < 100 { 0.0 } else { 0.5 };
                let n = enc
                    .encode(&sine(OPUS_FRAME, k * OPUS_FRAME, amp), &mut buf)
                    .unwrap();
                buf[..n].to_vec()
            })
            .collect();
        let opus_track = Track::audio(1, CodecId::Opus, opus_head(2, 312, 48_000), 48_000, 2);
        for (track, frames) in [(&aac_track, &aac_frames), (&opus_track, &opus_frames)] {
            for every in [4, 8, 16] {
                // Opus is measured whole whatever is asked.
                let step = if track.codec == CodecId::Opus { 1 } else { every };
                let mut full = LevelMeter::new(track).unwrap().unwrap();
                let mut sampled = LevelMeter::sampled(track, every).unwrap().unwrap();
                let (mut measured, mut tone) = (0, 0);
                for (i, f) in frames.iter().enumerate() {
                    let want = full.push(f).unwrap().unwrap();
                    let got = sampled.push(f).unwrap();
                    let what = format!("{} frame {i}, one in {every}", track.codec);
                    if i as u32 % step != step - 1 {
                        assert_eq!(got, None, "{what}: not measured");
                        continue;
                    }
                    let got = got.unwrap();
                    measured += 1;
                    tone += usize::from(want.rms_db() > -20.0);
                    assert_eq!(got.samples, want.samples * step, "{what}");
                    assert!(
                        (got.rms_db() - want.rms_db()).abs() < 0.01
                            && (got.peak_db() - want.peak_db()).abs() < 0.01,
                        "{what}: {got:?} against {want:?}"
                    );
                }
                assert_eq!(measured, frames.len() / step as usize);
                assert!(
                    tone >= measured / 2 - 2 && tone < measured,
                    "{} one in {every}: {tone} tone frames of {measured}",
                    track.codec
                );
            }
        }
    }

    #[test]
    fn opus_silence_and_tone() {
        let track = Track::audio(1, CodecId::Opus, opus_head(2, 312, 48_000), 48_000, 2);
        let mut m = LevelMeter::new(&track).unwrap().expect("Opus is metered");
        let mut enc =
            opus::Encoder::new(OPUS_RATE, opus::Channels::Stereo, opus::Application::Audio).unwrap();
        let mut buf = [0u8; 4000];
        let mut levels = Vec::new();
        for k in 0..100 {
            let amp = if k < 50 { 0.0 } else { 0.5 };
            let n = enc
                .encode(&sine(OPUS_FRAME, k * OPUS_FRAME, amp), &mut buf)
                .unwrap();
            levels.push(m.push(&buf[..n]).unwrap().unwrap());
        }
        for l in &levels[..50] {
            assert!(l.rms_db() < -70.0, "silence at {}", l.rms_db());
        }
        for l in &levels[55..] {
            assert!((l.rms_db() - -9.0).abs() < 1.0, "tone at {}", l.rms_db());
            assert_eq!(l.duration(), Duration::from_millis(20));
        }
        assert_eq!(m.push(&[]).unwrap(), None, "an empty frame decodes to nothing");
    }

    #[test]
    fn codecs_not_metered() {
        for codec in [CodecId::Mp3, CodecId::Ac3, CodecId::Pcma, CodecId::H264] {
            let t = Track::audio(1, codec, Default::default(), 48_000, 2);
            assert!(LevelMeter::new(&t).unwrap().is_none(), "{codec}");
        }
        let six = Track::audio(1, CodecId::Opus, opus_head(6, 312, 48_000), 48_000, 6);
        assert!(LevelMeter::new(&six).unwrap().is_none());
        let bad = Track::audio(
            1,
            CodecId::Aac,
            bytes::Bytes::from_static(&[0xff, 0xff]),
            48_000,
            2,
        );
        assert!(LevelMeter::new(&bad).is_err());
    }

    /// Garbage frames are errors (or concealed levels), never a panic, and the meter decodes
    /// good frames after them.
    #[test]
    fn corrupt_frames_are_errors_not_fatal() {
        let (asc, frames) = aac(2, true);
        let aac_track = Track::audio(1, CodecId::Aac, asc.into(), 48_000, 2);
        let opus_track = Track::audio(1, CodecId::Opus, opus_head(2, 312, 48_000), 48_000, 2);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for track in [&aac_track, &opus_track] {
            let mut m = LevelMeter::new(track).unwrap().unwrap();
            let mut errors = 0;
            for i in 0..2000 {
                let len = (next() % 3000) as usize + if i % 7 == 0 { 70_000 } else { 1 };
                let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if i % 3 == 0 && track.codec == CodecId::Aac {
                    // A real frame with some bits flipped.
                    data = frames[i % frames.len()].clone();
                    let at = next() as usize % data.len();
                    data[at] ^= 1 << (next() % 8);
                }
                match m.push(&data) {
                    Ok(Some(l)) => assert!(l.rms.is_finite() && l.rms_db() <= 0.0),
                    Ok(None) => {}
                    Err(_) => errors += 1,
                }
            }
            assert!(errors > 0, "{}: garbage decoded without error", track.codec);
        }
        // After garbage, good AAC decodes again.
        let mut m = LevelMeter::new(&aac_track).unwrap().unwrap();
        let _ = m.push(&[0xde, 0xad, 0xbe, 0xef]);
        let ok = frames[10..30]
            .iter()
            .filter(|f| matches!(m.push(f), Ok(Some(_))))
            .count();
        assert!(ok >= 18, "{ok} of 20 good frames decoded after garbage");
    }
}
