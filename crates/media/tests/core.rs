//! Behaviour of the media core as protocol adapters and users rely on it.

use std::time::Duration;

use bytes::Bytes;
use sluice_media::{
    CodecId, Event, Frame, PathOptions, PublishError, ReadError, Reader, Registry, SessionInfo, Track,
    CLOCK_RATE,
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

/// Frame `n` of a 30 fps stream with a keyframe every `gop` frames, plus one audio frame.
fn write_av(p: &mut sluice_media::Publisher, n: i64, gop: i64) {
    let dts = n * CLOCK_RATE / 30;
    p.write(Frame::new(
        0,
        dts,
        dts + 3000,
        n % gop == 0,
        Bytes::from(vec![n as u8; 100]),
    ));
    p.write(Frame::new(1, dts, dts, true, Bytes::from(vec![0; 10])));
}

fn drain(r: &mut Reader) -> Vec<Event> {
    let mut v = Vec::new();
    while let Some(ev) = r.try_recv() {
        v.push(ev.unwrap());
    }
    v
}

fn frames(evs: &[Event]) -> Vec<(u8, i64, bool)> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Frame(f) => Some((f.track, f.dts, f.keyframe)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn new_reader_starts_at_latest_keyframe() {
    let reg = Registry::default();
    let mut p = reg.publish("live/cam1", session()).unwrap();
    p.start(tracks());
    for n in 0..75 {
        write_av(&mut p, n, 30);
    }
    let mut r = reg.read("live/cam1", session()).unwrap();
    let evs = drain(&mut r);
    assert!(matches!(&evs[0], Event::Start(i) if i.tracks.len() == 2 && i.epoch == 0));
    let f = frames(&evs);
    assert_eq!(f[0], (0, 60 * 3000, true), "first frame is the latest keyframe");
    assert_eq!(f.len(), 30, "15 video + 15 audio frames since frame 60");
    // Live frames follow.
    write_av(&mut p, 75, 30);
    assert_eq!(frames(&drain(&mut r)).len(), 2);
}

#[tokio::test]
async fn second_publisher_is_refused_and_first_untouched() {
    let reg = Registry::default();
    let mut p = reg.publish("live/cam1", session()).unwrap();
    p.start(tracks());
    let err = reg.publish("live/cam1", session()).err().unwrap();
    assert_eq!(
        err,
        PublishError::PathBusy {
            path: "live/cam1".into()
        }
    );
    assert!(err.to_string().contains("busy"));
    write_av(&mut p, 0, 30);
    let mut r = reg.read("live/cam1", session()).unwrap();
    assert_eq!(frames(&drain(&mut r)).len(), 2);
}

#[tokio::test]
async fn bad_and_missing_paths() {
    let reg = Registry::default();
    assert!(matches!(
        reg.read("live/none", session()),
        Err(ReadError::NoStream { .. })
    ));
    for bad in ["", "/x", "a//b", "a/../b", "a b", "x/"] {
        assert!(reg.publish(bad, session()).is_err(), "{bad:?} accepted");
    }
    let reg = Registry::with_paths(|p| (p == "live/ok").then(PathOptions::default));
    assert!(reg.publish("live/ok", session()).is_ok());
    assert!(matches!(
        reg.publish("live/no", session()),
        Err(PublishError::NotConfigured { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn slow_reader_skips_to_keyframe_then_is_closed() {
    let reg = Registry::new(|_| PathOptions {
        queue_frames: 16,
        max_lags: 2,
        ..Default::default()
    });
    let mut p = reg.publish("live/cam1", session()).unwrap();
    p.start(tracks());
    let mut fast = reg.read("live/cam1", session()).unwrap();
    let mut slow = reg.read("live/cam1", session()).unwrap();
    assert!(matches!(slow.recv().await.unwrap(), Event::Start(_)));
    let mut fast_frames = 0;
    for n in 0..40 {
        write_av(&mut p, n, 10);
        fast_frames += frames(&drain(&mut fast)).len();
    }
    assert_eq!(fast_frames, 80, "the fast reader gets everything");
    // The slow reader lost frames; it resumes on the next video keyframe.
    assert!(
        frames(&drain(&mut slow)).is_empty(),
        "no keyframe left in its window"
    );
    for n in 40..45 {
        write_av(&mut p, n, 10);
    }
    let first = frames(&drain(&mut slow))[0];
    assert_eq!((first.0, first.2), (0, true));
    assert!(
        slow.stats()
            .frames_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    // Falling behind again and again closes it.
    let mut result = Ok(());
    for round in 0..4 {
        for n in 0..40 {
            write_av(&mut p, 45 + 40 * round + n, 10);
        }
        while let Some(ev) = slow.try_recv() {
            if let Err(e) = ev {
                result = Err(e);
                break;
            }
        }
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(ReadError::TooSlow { .. })), "{result:?}");
}

#[tokio::test(start_paused = true)]
async fn restart_within_grace_keeps_readers_with_one_timeline() {
    let reg = Registry::new(|_| PathOptions {
        grace: Duration::from_secs(5),
        ..Default::default()
    });
    let mut p = reg.publish("live/cam1", session()).unwrap();
    p.start(tracks());
    for n in 0..30 {
        write_av(&mut p, n, 30);
    }
    let mut r = reg.read("live/cam1", session()).unwrap();
    let before = frames(&drain(&mut r));
    let last = before.iter().map(|f| f.1).max().unwrap();
    drop(p);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The new publisher's clock starts at zero again.
    let mut p = reg.publish("live/cam1", session()).unwrap();
    p.start(tracks());
    for n in 0..30 {
        write_av(&mut p, n, 30);
    }
    let evs = drain(&mut r);
    assert!(matches!(&evs[0], Event::Start(i) if i.discontinuity && i.epoch == 1));
    let after = frames(&evs);
    assert_eq!(after.len(), 60);
    assert!(
        after[0].1 > last,
        "timeline continues: {} after {}",
        after[0].1,
        last
    );
    assert!(after.windows(2).all(|w| w[0].1 <= w[1].1));
}

#[tokio::test(start_paused = true)]
async fn stream_ends_after_grace() {
    let reg = Registry::new(|_| PathOptions {
        grace: Duration::from_secs(1),
        ..Default::default()
    });
    let mut p = reg.publish("live/cam1", session()).unwrap();
    p.start(tracks());
    let mut r = reg.read("live/cam1", session()).unwrap();
    drop(p);
    assert!(matches!(r.recv().await, Ok(Event::Start(_))));
    let res = tokio::time::timeout(Duration::from_secs(3), r.recv())
        .await
        .unwrap();
    assert!(matches!(res, Err(ReadError::Ended)));
    assert!(reg.paths().is_empty());
    assert!(matches!(
        reg.read("live/cam1", session()),
        Err(ReadError::NoStream { .. })
    ));
}

#[tokio::test]
async fn stats_follow_sessions() {
    let reg = Registry::default();
    let mut p = reg.publish("live/cam1", session()).unwrap();
    p.start(tracks());
    let r = reg.read("live/cam1", session()).unwrap();
    assert_eq!(reg.stats().sessions().len(), 2);
    assert_eq!(reg.paths()[0].readers, 1);
    write_av(&mut p, 0, 30);
    assert_eq!(reg.paths()[0].frames_in, 2);
    drop(r);
    assert_eq!(reg.stats().sessions().len(), 1);
    assert_eq!(reg.paths()[0].readers, 0);
}

/// A reader waiting paced (`wait_paced`) is woken by the publisher's first write at or after
/// its time: not by a write before it, not by its time passing alone (only the fallback would,
/// much later); the publisher leaving wakes it at once.
#[tokio::test]
async fn paced_reader_is_woken_by_the_first_write_after_its_time() {
    use tokio::time::Instant;
    let reg = Registry::default();
    let mut p = reg.publish("live/pace", session()).unwrap();
    p.start(tracks());
    let r = reg.read("live/pace", session()).unwrap();
    let t0 = Instant::now();
    let at = t0 + Duration::from_millis(100);
    let waiter = tokio::spawn(async move {
        r.wait_paced(at, t0 + Duration::from_secs(30)).await;
        (Instant::now(), r)
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    write_av(&mut p, 0, 30);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "its time has passed but nothing was written since: asleep"
    );
    write_av(&mut p, 1, 30);
    let (woke, mut r) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the write after its time wakes it")
        .unwrap();
    assert!(woke >= at + Duration::from_millis(100));
    // Both writes' frames waited in the queue.
    assert_eq!(frames(&drain(&mut r)).len(), 4);

    let t1 = Instant::now();
    let waiter = tokio::spawn(async move {
        r.wait_paced(t1 + Duration::from_secs(20), t1 + Duration::from_secs(30))
            .await;
        r
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(p);
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the publisher leaving wakes it")
        .unwrap();
}
