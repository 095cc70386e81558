//! The transformer on a real registry: conversions run only while a reader takes them, and
//! readers of the original track see nothing of them.

use std::sync::Arc;
use std::time::Duration;

use sluice_media::{Event, Frame, MediaKind, Reader, Registry, Select, SessionInfo, DERIVED_TRACK_BASE};

use super::*;

fn info() -> SessionInfo {
    SessionInfo {
        protocol: "test",
        remote: None,
    }
}

fn sine(samples: usize, offset: usize) -> Vec<i16> {
    (0..samples)
        .flat_map(|i| {
            let t = (i + offset) as f64 / OPUS_RATE as f64;
            let v = ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16;
            [v, v]
        })
        .collect()
}

/// 20 ms Opus packets of a tone, the k-th at pts k * 1800.
struct Tone {
    enc: opus::Encoder,
    k: usize,
}

impl Tone {
    fn new() -> Self {
        Tone {
            enc: opus::Encoder::new(OPUS_RATE, opus::Channels::Stereo, opus::Application::Audio).unwrap(),
            k: 0,
        }
    }
    fn next(&mut self) -> (i64, Bytes) {
        let mut buf = [0u8; 4000];
        let n = self
            .enc
            .encode(&sine(OPUS_FRAME, self.k * OPUS_FRAME), &mut buf)
            .unwrap();
        let pts = self.k as i64 * 1800;
        self.k += 1;
        (pts, Bytes::copy_from_slice(&buf[..n]))
    }
}

fn registry() -> Registry {
    let r = Registry::default();
    r.set_transformer(Arc::new(AudioTransformer::new(tokio::runtime::Handle::current())));
    r
}

/// What a reader saw so far.
#[derive(Default)]
struct Seen {
    starts: Vec<Arc<sluice_media::StreamInfo>>,
    frames: Vec<Arc<Frame>>,
}

impl Seen {
    fn drain(&mut self, r: &mut Reader) {
        while let Some(ev) = r.try_recv() {
            match ev.expect("reader stays open") {
                Event::Start(i) => self.starts.push(i),
                Event::Frame(f) => self.frames.push(f),
            }
        }
    }
    fn audio_codec(&self) -> Option<CodecId> {
        self.starts.last()?.audio().map(|a| a.codec)
    }
}

async fn tick() {
    tokio::time::sleep(Duration::from_millis(2)).await;
}

/// Waits until `f` holds (checking every 10 ms, up to 2 s).
async fn until(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// AAC publisher: an AAC reader is untouched while an Opus reader joins and leaves; the Opus
/// reader gets Opus from one transform, which stops with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aac_to_opus_runs_only_while_an_opus_reader_takes_it() {
    let registry = registry();
    let mut publisher = registry.publish("live/a", info()).unwrap();
    let mut to_aac = OpusToAac::new().unwrap();
    publisher.start(vec![to_aac.track(0)]);
    let mut aac_reader = registry.read_with("live/a", info(), Select::AAC).unwrap();
    let mut aac = Seen::default();
    let mut tone = Tone::new();
    let mut written = 0usize;
    let mut write = |publisher: &mut sluice_media::Publisher| {
        let (pts, opus) = tone.next();
        for (pts, data) in to_aac.push(pts, &opus).unwrap() {
            publisher.write(Frame::new(0, pts, pts, true, data));
            written += 1;
        }
    };
    for _ in 0..50 {
        write(&mut publisher);
        aac.drain(&mut aac_reader);
        tick().await;
    }
    assert!(
        registry.path("live/a").unwrap().derived.is_empty(),
        "no Opus reader yet"
    );

    let mut opus_reader = registry.read_with("live/a", info(), Select::OPUS).unwrap();
    let mut opus = Seen::default();
    opus.drain(&mut opus_reader);
    assert_eq!(opus.audio_codec(), Some(CodecId::Opus));
    let derived = registry.path("live/a").unwrap().derived;
    assert_eq!(derived.len(), 1, "one transform for the path");
    assert_eq!(derived[0].codec, CodecId::Opus);
    assert!(derived[0].id >= DERIVED_TRACK_BASE);
    assert_eq!(&derived[0].config[..8], b"OpusHead");
    // A second Opus reader shares the same transform.
    let mut opus_reader2 = registry.read_with("live/a", info(), Select::OPUS).unwrap();
    Seen::default().drain(&mut opus_reader2);
    assert_eq!(registry.path("live/a").unwrap().derived.len(), 1);
    drop(opus_reader2);
    for _ in 0..100 {
        write(&mut publisher);
        aac.drain(&mut aac_reader);
        opus.drain(&mut opus_reader);
        tick().await;
    }
    assert!(
        until(|| {
            opus.drain(&mut opus_reader);
            opus.frames.len() >= 60
        })
        .await,
        "{} Opus frames for 2 s of AAC",
        opus.frames.len()
    );
    for f in &opus.frames {
        assert_eq!(f.track, derived[0].id);
        assert!(f.keyframe && !f.data.is_empty());
    }
    for w in opus.frames.windows(2) {
        assert_eq!(w[1].pts - w[0].pts, 1800, "20 ms Opus packets");
    }
    // The Opus reader leaves: the transform stops at once.
    drop(opus_reader);
    assert!(
        registry.path("live/a").unwrap().derived.is_empty(),
        "the transform stops with its last reader"
    );
    assert!(
        until(|| !registry
            .stats()
            .sessions()
            .iter()
            .any(|s| s.protocol == "transform"))
        .await,
        "the transform session ends"
    );
    for _ in 0..50 {
        write(&mut publisher);
        aac.drain(&mut aac_reader);
        tick().await;
    }
    aac.drain(&mut aac_reader);

    // The AAC reader saw one stream and every AAC frame, in order, none of the Opus.
    assert_eq!(
        aac.starts.len(),
        1,
        "no new start when the derived track came and went"
    );
    assert_eq!(aac.starts[0].tracks.len(), 1);
    assert_eq!(aac.frames.len(), written, "no frame lost or added");
    for f in &aac.frames {
        assert_eq!(f.track, 0);
    }
    for w in aac.frames.windows(2) {
        assert_eq!(w[1].pts - w[0].pts, 1920, "1024 samples at 48 kHz, unbroken");
    }
}

/// Opus publisher (a WHIP browser): an Opus reader takes its Opus as sent; an AAC reader gets
/// AAC derived from it, and the transform stops when it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_to_aac_for_aac_readers_and_opus_as_sent() {
    let registry = registry();
    let mut publisher = registry.publish("live/web", info()).unwrap();
    publisher.start(vec![sluice_media::Track::audio(
        1,
        CodecId::Opus,
        opus_head(2, 0, OPUS_RATE),
        OPUS_RATE,
        2,
    )]);
    let mut opus_reader = registry.read_with("live/web", info(), Select::OPUS).unwrap();
    let mut opus = Seen::default();
    opus.drain(&mut opus_reader);
    assert!(
        registry.path("live/web").unwrap().derived.is_empty(),
        "Opus readers take the publisher's own"
    );
    let mut aac_reader = registry.read_with("live/web", info(), Select::AAC).unwrap();
    let mut aac = Seen::default();
    aac.drain(&mut aac_reader);
    let start = aac.starts.last().unwrap().clone();
    let track = start.audio().unwrap();
    assert_eq!(track.codec, CodecId::Aac);
    assert!(track.id >= DERIVED_TRACK_BASE);
    assert_eq!(track.config.len(), 2, "AAC-LC AudioSpecificConfig");
    assert_eq!(
        start
            .tracks
            .iter()
            .filter(|t| t.kind() == MediaKind::Audio)
            .count(),
        1
    );

    let mut tone = Tone::new();
    for _ in 0..100 {
        let (pts, data) = tone.next();
        publisher.write(Frame::new(1, pts, pts, true, data));
        opus.drain(&mut opus_reader);
        aac.drain(&mut aac_reader);
        tick().await;
    }
    assert!(
        until(|| {
            aac.drain(&mut aac_reader);
            aac.frames.len() >= 80
        })
        .await,
        "{} AAC frames for 2 s of Opus",
        aac.frames.len()
    );
    assert!(aac.frames.iter().all(|f| f.track == track.id));
    // The AAC decodes back to the tone.
    let mut back = AacToOpus::new(&track.config).unwrap();
    let mut packets = 0;
    for f in &aac.frames {
        packets += back.push(f.pts, &f.data).unwrap().len();
    }
    assert!(packets >= 70, "{packets}");
    opus.drain(&mut opus_reader);
    assert_eq!(opus.frames.len(), 100, "the publisher's own Opus, every packet");
    assert!(opus.frames.iter().all(|f| f.track == 1));
    assert_eq!(opus.starts.len(), 1);

    drop(aac_reader);
    assert!(registry.path("live/web").unwrap().derived.is_empty());
}

#[test]
fn opus_head_is_rfc_7845() {
    let h = opus_head(2, 312, 48_000);
    assert_eq!(h.len(), 19);
    assert_eq!(&h[..8], b"OpusHead");
    assert_eq!(h[8], 1);
    assert_eq!(h[9], 2);
    assert_eq!(u16::from_le_bytes([h[10], h[11]]), 312);
    assert_eq!(u32::from_le_bytes([h[12], h[13], h[14], h[15]]), 48_000);
}
