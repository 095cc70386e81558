//! What silence detection costs: decoding 60 s of 48 kHz stereo audio (AAC-LC at 128 kb/s, and
//! Opus at 96 kb/s) with the level meter, timed, as a share of one core in real time.
//!
//! Run: `cargo bench -p sluice-audio --bench level` (release profile). Prints one line per codec;
//! asserts nothing (timing depends on the machine).

use std::time::{Duration, Instant};

use sluice_audio::{opus_head, LevelMeter, OPUS_FRAME, OPUS_RATE};
use sluice_media::{CodecId, Track};

const SECONDS: usize = 60;

/// Something like programme audio: two tones, a slow tremolo and a little noise, per channel.
fn music(frames: usize, offset: usize, seed: &mut u32) -> Vec<i16> {
    let mut out = Vec::with_capacity(frames * 2);
    for i in 0..frames {
        let t = (i + offset) as f64 / 48_000.0;
        let env = 0.6 + 0.4 * (t * 0.7 * std::f64::consts::TAU).sin();
        for ch in 0..2 {
            *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (*seed >> 16) as f64 / 65536.0 - 0.5;
            let f = if ch == 0 { 220.0 } else { 330.0 };
            let v = env
                * (0.3 * (t * f * std::f64::consts::TAU).sin()
                    + 0.1 * (t * 1760.0 * std::f64::consts::TAU).sin())
                + 0.02 * noise;
            out.push((v * 32767.0) as i16);
        }
    }
    out
}

fn aac_frames() -> (Vec<u8>, Vec<Vec<u8>>) {
    let enc = fdk_aac::enc::Encoder::new(fdk_aac::enc::EncoderParams {
        bit_rate: fdk_aac::enc::BitRate::Cbr(128_000),
        sample_rate: 48_000,
        transport: fdk_aac::enc::Transport::Raw,
        channels: fdk_aac::enc::ChannelMode::Stereo,
        audio_object_type: fdk_aac::enc::AudioObjectType::Mpeg4LowComplexity,
    })
    .expect("AAC encoder");
    let info = enc.info().expect("encoder info");
    let asc = info.confBuf[..info.confSize as usize].to_vec();
    let mut seed = 1;
    let mut out = vec![0u8; 8192];
    let mut frames = Vec::new();
    for k in 0..SECONDS * 48_000 / 1024 {
        let r = enc
            .encode(&music(1024, k * 1024, &mut seed), &mut out)
            .expect("encode");
        if r.output_size > 0 {
            frames.push(out[..r.output_size].to_vec());
        }
    }
    (asc, frames)
}

fn opus_frames() -> Vec<Vec<u8>> {
    let mut enc = opus::Encoder::new(OPUS_RATE, opus::Channels::Stereo, opus::Application::Audio)
        .expect("Opus encoder");
    enc.set_bitrate(opus::Bitrate::Bits(96_000)).expect("bitrate");
    let mut seed = 1;
    let mut buf = [0u8; 4000];
    (0..SECONDS * 50)
        .map(|k| {
            let n = enc
                .encode(&music(OPUS_FRAME, k * OPUS_FRAME, &mut seed), &mut buf)
                .expect("encode");
            buf[..n].to_vec()
        })
        .collect()
}

/// Best of five runs of metering the frames with a fresh meter measuring one in `every`.
fn time(track: &Track, frames: &[Vec<u8>], every: u32) -> (Duration, f64) {
    let mut best = Duration::MAX;
    let mut audio = 0.0;
    for _ in 0..5 {
        let mut meter = LevelMeter::sampled(track, every)
            .expect("meter")
            .expect("metered codec");
        let start = Instant::now();
        let mut seconds = 0.0;
        for f in frames {
            if let Ok(Some(l)) = meter.push(f) {
                seconds += l.duration().as_secs_f64();
            }
        }
        best = best.min(start.elapsed());
        audio = seconds;
    }
    (best, audio)
}

fn report(what: &str, (took, audio): (Duration, f64)) {
    println!(
        "{what}: {audio:.1} s of audio metered in {:.1} ms: {:.3} % of one core per stream",
        took.as_secs_f64() * 1000.0,
        took.as_secs_f64() / audio * 100.0
    );
}

fn main() {
    // Test runners list every target (`cargo nextest --all-targets` runs `--list`): this bench
    // has no test to list, and only measures when run as a benchmark (`cargo bench`).
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") || !args.iter().any(|a| a == "--bench") {
        return;
    }
    let (asc, aac) = aac_frames();
    let track = Track::audio(0, CodecId::Aac, asc.into(), 48_000, 2);
    report("AAC-LC 48 kHz stereo 128 kb/s", time(&track, &aac, 1));
    report(
        "AAC-LC 48 kHz stereo 128 kb/s, one frame in 16 (the health checks)",
        time(&track, &aac, 16),
    );
    let opus = opus_frames();
    let track = Track::audio(0, CodecId::Opus, opus_head(2, 312, 48_000), 48_000, 2);
    report("Opus 48 kHz stereo 96 kb/s", time(&track, &opus, 1));
}
