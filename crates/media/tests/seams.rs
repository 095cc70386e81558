//! The core's seams: path outputs, derived tracks, keyframe requests, sessions (kick, shutdown).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use sluice_media::stats::Role;
use sluice_media::{
    CodecId, DerivedWriter, Event, Frame, OutputSpec, Outputs, PublishError, ReadError, Reader, Registry,
    Select, SessionInfo, Track, Transformer, CLOCK_RATE,
};

fn session() -> SessionInfo {
    SessionInfo {
        protocol: "test",
        remote: None,
    }
}

fn tracks() -> Vec<Track> {
    vec![
        Track::video(0, CodecId::H264, Bytes::from_static(b"avcC"), 640, 360),
        Track::audio(1, CodecId::Aac, Bytes::from_static(&[0x11, 0x90]), 48000, 2),
    ]
}

fn write_av(p: &mut sluice_media::Publisher, n: i64) {
    let dts = n * CLOCK_RATE / 30;
    p.write(Frame::new(
        0,
        dts,
        dts,
        n % 30 == 0,
        Bytes::from(vec![n as u8; 100]),
    ));
    p.write(Frame::new(1, dts, dts, true, Bytes::from(vec![7; 10])));
}

fn drain(r: &mut Reader) -> Vec<Event> {
    let mut v = Vec::new();
    while let Some(ev) = r.try_recv() {
        v.push(ev.unwrap());
    }
    v
}

/// A fake AAC→Opus transform: each AAC frame becomes one "Opus" frame with the same payload.
struct FakeOpus;

impl Transformer for FakeOpus {
    fn derive(&self, from: &Track, to: CodecId) -> Option<Track> {
        (from.codec == CodecId::Aac && to == CodecId::Opus)
            .then(|| Track::audio(0, CodecId::Opus, Bytes::from_static(b"OpusHead"), 48000, 2))
    }
    fn start(&self, _from: CodecId, mut reader: Reader, out: DerivedWriter) {
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = out.cancelled() => return,
                    ev = reader.recv() => ev,
                };
                match ev {
                    Ok(Event::Frame(f)) if f.track == 1 => {
                        if !out.write(Frame::new(0, f.dts, f.pts, true, f.data.clone())) {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
    }
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// A derived track starts with its first reader and stops with its last, and readers that do
/// not take it see one stream without a new start or a gap.
#[tokio::test]
async fn derived_track_comes_and_goes_without_disturbing_other_readers() {
    let reg = Registry::default();
    reg.set_transformer(Arc::new(FakeOpus));
    let mut p = reg.publish("live/a", session()).unwrap();
    p.start(tracks());
    let mut aac = reg.read_with("live/a", session(), Select::AAC).unwrap();
    let mut n = 0;
    for _ in 0..10 {
        write_av(&mut p, n);
        n += 1;
    }
    let mut opus = reg.read_with("live/a", session(), Select::OPUS).unwrap();
    let first = drain(&mut opus);
    let Event::Start(info) = &first[0] else {
        panic!("{first:?}")
    };
    let derived = info.audio().unwrap().clone();
    assert_eq!(derived.codec, CodecId::Opus);
    assert!(derived.id >= sluice_media::DERIVED_TRACK_BASE);
    assert_eq!(reg.path("live/a").unwrap().derived.len(), 1);
    settle().await;
    for _ in 0..20 {
        write_av(&mut p, n);
        n += 1;
        settle().await;
    }
    let got = drain(&mut opus);
    let opus_frames = got
        .iter()
        .filter(|e| matches!(e, Event::Frame(f) if f.track == derived.id))
        .count();
    assert!(
        opus_frames >= 19,
        "{opus_frames} derived frames for 20 AAC frames"
    );
    assert!(
        got.iter().all(|e| !matches!(e, Event::Frame(f) if f.track == 1)),
        "no AAC for the Opus reader"
    );
    drop(opus);
    settle().await;
    assert!(
        reg.path("live/a").unwrap().derived.is_empty(),
        "the transform stops with its last reader"
    );
    for _ in 0..10 {
        write_av(&mut p, n);
        n += 1;
    }
    // The AAC reader saw one start and every frame in order, nothing derived.
    let evs = drain(&mut aac);
    assert_eq!(evs.iter().filter(|e| matches!(e, Event::Start(_))).count(), 1);
    let frames: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            Event::Frame(f) => Some((f.track, f.dts)),
            _ => None,
        })
        .collect();
    assert_eq!(frames.len(), 2 * n as usize);
    let video: Vec<i64> = frames.iter().filter(|f| f.0 == 0).map(|f| f.1).collect();
    assert!(video.windows(2).all(|w| w[1] - w[0] == 3000), "no gap in video");
    assert!(frames.iter().all(|f| f.0 < 2));
}

/// With the publisher's audio already in the wanted codec, no transform runs.
#[tokio::test]
async fn no_transform_when_the_publisher_sends_the_wanted_codec() {
    let reg = Registry::default();
    reg.set_transformer(Arc::new(FakeOpus));
    let mut p = reg.publish("live/b", session()).unwrap();
    p.start(vec![
        Track::video(0, CodecId::H264, Bytes::from_static(b"avcC"), 640, 360),
        Track::audio(1, CodecId::Opus, Bytes::from_static(b"OpusHead"), 48000, 2),
    ]);
    let mut r = reg.read_with("live/b", session(), Select::OPUS).unwrap();
    let evs = drain(&mut r);
    let Event::Start(info) = &evs[0] else { panic!() };
    assert_eq!(info.audio().unwrap().id, 1);
    assert!(reg.path("live/b").unwrap().derived.is_empty());
    // An AAC-only reader with no transformer for Opus→AAC gets video only.
    let mut a = reg.read_with("live/b", session(), Select::AAC).unwrap();
    let Event::Start(info) = &drain(&mut a)[0] else {
        panic!()
    };
    assert!(info.audio().is_none());
    assert_eq!(info.tracks.len(), 1);
}

/// A reader's keyframe request reaches the current publisher, and one made while the path has
/// no publisher reaches the next one.
#[tokio::test]
async fn keyframe_requests_follow_the_publisher() {
    let reg = Registry::default();
    let mut p = reg.publish("live/k", session()).unwrap();
    p.start(tracks());
    let r = reg.read("live/k", session()).unwrap();
    let kf = p.keyframe_requests();
    r.request_keyframe();
    tokio::time::timeout(Duration::from_secs(1), kf.recv())
        .await
        .unwrap();
    drop(p);
    r.request_keyframe();
    let p2 = reg.publish("live/k", session()).unwrap();
    tokio::time::timeout(Duration::from_secs(1), p2.keyframe_requests().recv())
        .await
        .expect("the request made between publishers reaches the new one");
    assert_eq!(
        r.stats()
            .keyframe_requests
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[derive(Default)]
struct Recorder {
    wanted: Mutex<Vec<OutputSpec>>,
    started: Mutex<Vec<(String, Vec<Event>)>>,
    readers: Mutex<Vec<Reader>>,
    ended: Mutex<Vec<String>>,
}

struct RecOut(Arc<Recorder>);

impl Outputs for RecOut {
    fn wanted(&self, _path: &str) -> Vec<OutputSpec> {
        self.0.wanted.lock().clone()
    }
    fn start(&self, spec: &OutputSpec, mut reader: Reader) {
        let evs = drain(&mut reader);
        self.0.started.lock().push((spec.name.clone(), evs));
        self.0.readers.lock().push(reader);
    }
    fn ended(&self, path: &str) {
        self.0.ended.lock().push(path.to_owned());
    }
}

fn spec(name: &str) -> OutputSpec {
    OutputSpec {
        kind: "test-output",
        name: name.into(),
        select: Select::Original,
    }
}

/// Outputs start with the first stream (before any frame), live through a restart within the
/// grace period, follow reconfiguration, and end with the path.
#[tokio::test(start_paused = true)]
async fn outputs_attach_at_publish_and_follow_configuration() {
    let reg = Registry::default();
    let rec = Arc::new(Recorder::default());
    *rec.wanted.lock() = vec![spec("hls"), spec("record")];
    reg.set_outputs(Arc::new(RecOut(rec.clone())));
    let mut p = reg.publish("live/o", session()).unwrap();
    p.start(tracks());
    {
        let started = rec.started.lock();
        assert_eq!(started.len(), 2);
        // Each output's reader begins with the stream's start: nothing can be missed.
        assert!(matches!(started[0].1.first(), Some(Event::Start(_))));
    }
    let snap = reg.path("live/o").unwrap();
    assert_eq!(snap.outputs.len(), 2);
    let sessions = reg.stats().sessions();
    assert_eq!(sessions.iter().filter(|s| s.role == Role::Output).count(), 2);
    // The publisher restarts within the grace period: outputs go on, none started again.
    drop(p);
    let mut p = reg.publish("live/o", session()).unwrap();
    p.start(tracks());
    assert_eq!(rec.started.lock().len(), 2);
    // Reconfiguration: "record" removed, "push" added; "hls" untouched.
    *rec.wanted.lock() = vec![spec("hls"), spec("push")];
    reg.reconcile_outputs();
    let names: Vec<String> = rec.started.lock().iter().map(|s| s.0.clone()).collect();
    assert_eq!(names, ["hls", "record", "push"]);
    let mut readers = std::mem::take(&mut *rec.readers.lock());
    assert!(
        matches!(readers[1].recv().await, Err(ReadError::Closed { .. })),
        "record was stopped"
    );
    while let Some(r) = readers[0].try_recv() {
        assert!(r.is_ok(), "hls goes on: {r:?}");
    }
    drop(readers.remove(1));
    let snap = reg.path("live/o").unwrap();
    let names: Vec<&str> = snap.outputs.iter().map(|o| o.0.as_str()).collect();
    assert_eq!(names, ["hls", "push"]);
    // The path ends after the grace period.
    drop(p);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(*rec.ended.lock(), ["live/o"]);
    assert!(matches!(readers[0].recv().await, Err(ReadError::Ended)));
}

/// An output that ends while its path is live (a task that failed, a reader cut for falling
/// behind) is started again by the next reconcile (the server runs one every few seconds),
/// from the stream's start; the outputs that did not fail are not touched.
#[tokio::test(start_paused = true)]
async fn an_output_that_ended_is_started_again() {
    let reg = Registry::default();
    let rec = Arc::new(Recorder::default());
    *rec.wanted.lock() = vec![spec("hls"), spec("record")];
    reg.set_outputs(Arc::new(RecOut(rec.clone())));
    let mut p = reg.publish("live/f", session()).unwrap();
    p.start(tracks());
    assert_eq!(rec.started.lock().len(), 2);
    // Nothing failed: a reconcile starts nothing.
    reg.reconcile_outputs();
    assert_eq!(rec.started.lock().len(), 2);
    // "record" fails: its reader is dropped.
    let record = rec.readers.lock().remove(1);
    drop(record);
    reg.reconcile_outputs();
    {
        let started = rec.started.lock();
        let names: Vec<&str> = started.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, ["hls", "record", "record"]);
        assert!(
            matches!(started[2].1.first(), Some(Event::Start(_))),
            "from the stream's start"
        );
    }
    let mut readers = std::mem::take(&mut *rec.readers.lock());
    while let Some(r) = readers[0].try_recv() {
        assert!(r.is_ok(), "hls goes on: {r:?}");
    }
    assert_eq!(reg.path("live/f").unwrap().outputs.len(), 2);
    // It ends again at once: the next reconcile waits (5 s, then longer each time in a row).
    let record = readers.remove(1);
    drop(record);
    *rec.readers.lock() = readers;
    reg.reconcile_outputs();
    assert_eq!(rec.started.lock().len(), 3, "not again at once");
    tokio::time::advance(Duration::from_secs(2)).await;
    reg.reconcile_outputs();
    assert_eq!(rec.started.lock().len(), 3, "not within 5 s");
    tokio::time::advance(Duration::from_secs(4)).await;
    reg.reconcile_outputs();
    assert_eq!(rec.started.lock().len(), 4, "after 5 s");
    drop(p);
}

/// A kicked reader ends with the reason; shutdown ends every session and refuses new ones.
#[tokio::test]
async fn kick_and_shutdown() {
    let reg = Registry::default();
    let mut p = reg.publish("live/s", session()).unwrap();
    p.start(tracks());
    let mut a = reg.read("live/s", session()).unwrap();
    let mut b = reg.read("live/s", session()).unwrap();
    drain(&mut a);
    drain(&mut b);
    assert!(reg.stats().kick(a.stats().id, "kicked by the API"));
    let err = a.recv().await.unwrap_err();
    assert_eq!(
        err,
        ReadError::Closed {
            reason: "kicked by the API".into()
        }
    );
    write_av(&mut p, 0);
    assert!(b.try_recv().unwrap().is_ok(), "the other reader goes on");
    assert!(!reg.stats().kick(999, "nobody"));

    let mut events = reg.events().subscribe("test", 64);
    reg.stats().shutdown();
    assert!(p.is_cancelled());
    assert!(matches!(b.recv().await, Err(ReadError::Closed { .. })));
    assert!(matches!(
        reg.publish("live/t", session()),
        Err(PublishError::ShuttingDown)
    ));
    drop((a, b, p));
    assert_eq!(reg.stats().wait_empty(Duration::from_secs(1)).await, 0);
    let mut closed = 0;
    while let Some(sluice_media::events::Received::Event(e)) = events.try_recv() {
        if matches!(e.event, sluice_media::events::ServerEvent::SessionClosed { .. }) {
            closed += 1;
        }
    }
    assert!(closed >= 3, "{closed} SessionClosed events");
}

#[test]
fn reserved_names_are_refused_to_publishers() {
    let reg = Registry::default();
    let err = reg.publish("live/cam1/~720p", session()).err().unwrap();
    assert!(err.to_string().contains("reserved"), "{err}");
    assert!(sluice_media::is_reserved("live/~x"));
    assert!(!sluice_media::is_reserved("live/a~b"));
}

/// A stalled event consumer does not slow publishing: sessions come and go at full speed, the
/// consumer's queue stays bounded, and it is told how much it missed.
#[tokio::test]
async fn a_stalled_event_consumer_does_not_slow_publishing() {
    let reg = Registry::default();
    let mut stalled = reg.events().subscribe("stalled", 8);
    let t = std::time::Instant::now();
    for i in 0..2000 {
        let mut p = reg.publish(&format!("live/e{}", i % 50), session()).unwrap();
        p.start(tracks());
        write_av(&mut p, 0);
        let r = reg.read(&format!("live/e{}", i % 50), session()).unwrap();
        drop(r);
        drop(p);
    }
    let took = t.elapsed();
    // 2000 publish/read/leave cycles make ~10000 events; none waits for the consumer.
    assert!(took < Duration::from_secs(5), "{took:?}");
    let first = stalled.try_recv();
    assert!(
        matches!(first, Some(sluice_media::events::Received::Missed(n)) if n > 5000),
        "{first:?}"
    );
    assert!(reg.events().dropped() > 5000);
}
