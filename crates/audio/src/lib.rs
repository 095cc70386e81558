//! Audio conversion between what RTMP/SRT/HLS carry (AAC) and what browsers speak (Opus), as a
//! derived-track [`Transformer`] of the media core: the core asks for a conversion per path
//! while some reader takes the converted track (a WHEP viewer of an RTMP stream takes Opus, an
//! RTMP or HLS reader of a WHIP stream takes AAC), and this writes it back into the path.
//!
//! Chosen libraries: libopus through the `opus` crate (the reference codec; the crate builds the
//! bundled libopus with cmake, so no system package is needed), and Fraunhofer FDK AAC through the
//! `fdk-aac` crate (bundled source) for both directions of AAC, since it decodes every profile
//! that encoders send (LC, HE-AAC, HE-AACv2) and encodes LC at broadcast quality. FDK's C++ does
//! not build at `-O1`, so the workspace's `Cargo.toml` builds `fdk-aac-sys` at `opt-level = 2`
//! even in dev profiles. Neither codec is written here. The only signal processing of our own is
//! a linear-interpolation resampler for sources that are not at 48 kHz (44.1 kHz AAC is common;
//! Opus runs at 48 kHz).
//!
//! Also decode-only level meters ([`LevelMeter`]: AAC and Opus to a level in dBFS per frame),
//! which the server's health checks use to tell silent audio from sound.

mod codec;
mod level;

pub use codec::{
    opus_head, AacToOpus, AudioError, OpusPacket, OpusToAac, Resampler, OPUS_FRAME, OPUS_PRE_SKIP, OPUS_RATE,
};
pub use level::{to_db, Level, LevelMeter, FLOOR_DB};

use bytes::Bytes;
use sluice_media::{CodecId, DerivedWriter, Event, Frame, Reader, Track, TrackId, Transformer};

/// AAC→Opus and Opus→AAC (48 kHz stereo) as derived tracks. Each conversion runs as a task on
/// the runtime given here, one per (path, codec) however many readers take it.
pub struct AudioTransformer {
    rt: tokio::runtime::Handle,
}

impl AudioTransformer {
    pub fn new(rt: tokio::runtime::Handle) -> Self {
        AudioTransformer { rt }
    }
}

impl Transformer for AudioTransformer {
    fn derive(&self, from: &Track, to: CodecId) -> Option<Track> {
        match (from.codec, to) {
            (CodecId::Aac, CodecId::Opus) => match AacToOpus::new(&from.config) {
                Ok(_) => Some(AacToOpus::track(0)),
                Err(e) => {
                    tracing::warn!("cannot convert this AAC to Opus: {e}");
                    None
                }
            },
            (CodecId::Opus, CodecId::Aac) => match OpusToAac::new() {
                Ok(c) => Some(c.track(0)),
                Err(e) => {
                    tracing::warn!("cannot start the AAC encoder: {e}");
                    None
                }
            },
            _ => None,
        }
    }

    fn start(&self, from: CodecId, reader: Reader, out: DerivedWriter) {
        self.rt.spawn(run(from, reader, out));
    }
}

/// One conversion in progress.
enum Converter {
    ToOpus(AacToOpus),
    ToAac(OpusToAac),
}

impl Converter {
    /// A converter from `source` to `to`, or `None` (logged) when there is none.
    fn new(source: &Track, to: CodecId, path: &str) -> Option<Converter> {
        let r = match (source.codec, to) {
            (CodecId::Aac, CodecId::Opus) => AacToOpus::new(&source.config).map(Converter::ToOpus),
            (CodecId::Opus, CodecId::Aac) => OpusToAac::new().map(Converter::ToAac),
            (from, to) => {
                tracing::info!(
                    path,
                    "the stream's audio is now {from}: nothing to convert to {to}"
                );
                return None;
            }
        };
        r.map_err(|e| tracing::warn!(path, "cannot convert {} to {to}: {e}", source.codec))
            .ok()
    }

    fn push(&mut self, pts: i64, data: &[u8]) -> Result<Vec<(i64, Bytes)>, AudioError> {
        match self {
            Converter::ToOpus(c) => Ok(c.push(pts, data)?.into_iter().map(|p| (p.pts, p.data)).collect()),
            Converter::ToAac(c) => c.push(pts, data),
        }
    }
}

/// The transform task: the path's own audio in, the derived track out, until the core cancels
/// it (its last reader left) or the path ends. Live audio only: the GOP cache it is handed at
/// the start is skipped (its `Start` is not), since readers want audio from now on.
async fn run(from: CodecId, mut reader: Reader, out: DerivedWriter) {
    let path = out.path().to_owned();
    let to = out.track().codec;
    let mut conv: Option<(TrackId, Converter)> = None;
    let mut errors = 0u32;
    let mut written = 0u64;
    let mut live = false;
    loop {
        let ev = if live {
            tokio::select! {
                biased;
                _ = out.cancelled() => break,
                ev = reader.recv() => ev,
            }
        } else {
            match reader.try_recv() {
                Some(ev) => ev,
                None => {
                    live = true;
                    continue;
                }
            }
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(%path, %from, %to, "audio conversion ends: {e}");
                break;
            }
        };
        match ev {
            Event::Start(info) => {
                // A new stream (restart or codec change): new decoder state.
                conv = info
                    .audio()
                    .and_then(|a| Converter::new(a, to, &path).map(|c| (a.id, c)));
            }
            Event::Frame(f) => {
                if !live {
                    continue;
                }
                let Some((id, c)) = conv.as_mut() else { continue };
                if f.track != *id {
                    continue;
                }
                match c.push(f.pts, &f.data) {
                    Ok(frames) => {
                        for (pts, data) in frames {
                            if !out.write(Frame::new(0, pts, pts, true, data)) {
                                tracing::debug!(%path, %to, written, "audio conversion ends: no reader takes it");
                                return;
                            }
                            written += 1;
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        if errors.is_power_of_two() {
                            tracing::warn!(%path, errors, "{from}→{to}: {e}");
                        }
                    }
                }
            }
        }
    }
    tracing::debug!(%path, %to, written, "audio conversion stopped");
}

#[cfg(test)]
mod tests;
