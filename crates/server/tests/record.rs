//! Recording end to end: ffmpeg (RTMP, SRT H.265) publishes, the recorder writes segment
//! files, ffprobe reads them back; a `kill -9` mid-recording, retention, and a full disk.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;

/// A fresh recording directory for one test.
fn rec_dir(test: &str) -> PathBuf {
    let d = tmp_dir().join(format!("rec-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A configuration recording every path under `dir`, with `record` keys added.
fn config(dir: &Path, record: &str) -> String {
    format!(
        "[path_defaults]\ngrace_period = \"1s\"\n[path_defaults.record]\nenabled = true\n\
         path = \"{}/%path/%Y-%m-%d_%H-%M-%S-%f\"\npart_duration = \"1s\"\n{record}\n",
        dir.display()
    )
}

/// Every recording file under `dir`, oldest first (names sort by time).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// ffmpeg publishing `src` once (not looped), in real time.
fn publish_once(src: &Path, format: &str, url: &str) -> std::process::Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-re", "-i"])
        .arg(src)
        .args(["-c", "copy", "-f", format, url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ffmpeg")
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// The start time a file name says (`..._HH-MM-SS-ffffff.mp4`), in seconds since the epoch.
fn name_time(f: &Path) -> f64 {
    let name = f.file_stem().unwrap().to_str().unwrap();
    let (date, time) = name.split_once('_').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let t: Vec<i64> = time.split('-').map(|x| x.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm), UTC.
    let (y, m, day) = (d[0] - (d[1] <= 2) as i64, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) as f64 + t[3] as f64 / 1e6
}

/// Stream durations (video) and packet counts of a recording file.
struct FileCheck {
    video_codec: String,
    audio_codec: String,
    video_frames: usize,
    audio_frames: usize,
    /// Video duration: from the first video packet's start to the last one's end.
    video_duration: f64,
    first_is_key: bool,
}

fn check_file(f: &Path, fps: f64) -> FileCheck {
    let p = probe(f.to_str().unwrap(), 100_000);
    assert!(p.stderr.trim().is_empty(), "{}: {}", f.display(), p.stderr);
    let v: Vec<&Packet> = p.packets.iter().filter(|p| p.video).collect();
    let dts: Vec<f64> = v.iter().map(|p| p.dts).collect();
    let first = dts.iter().cloned().fold(f64::INFINITY, f64::min);
    let last = dts.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    FileCheck {
        video_codec: p.video().codec_name.clone(),
        audio_codec: p.audio().codec_name.clone(),
        video_frames: v.len(),
        audio_frames: p.count(false),
        video_duration: last - first + 1.0 / fps,
        first_is_key: p.starts_with_keyframe(),
    }
}

/// 12 s of H.264 (with B-frames) + AAC over RTMP, recorded in 4 s segments with 1 s fragments:
/// every segment reads back with both codecs from a keyframe, every published frame is in one
/// segment, durations add up to the published length within a frame, and each segment starts
/// where the previous one ended.
#[test]
fn rtmp_recording_is_complete_and_contiguous() {
    if !require("ffmpeg") {
        return;
    }
    let dir = rec_dir("rtmp");
    let server = Server::start_with(&[], Some(&config(&dir, "segment_duration = \"4s\"")));
    let mut ff = publish_once(&source_flv(), "flv", &server.rtmp_url("live/cam"));
    assert!(ff.wait().unwrap().success());
    wait_until("the path ends", Duration::from_secs(15), || {
        server.log().contains("path ended") || count(&server.log(), "recording segment completed") >= 3
    });
    wait_until("three segments complete", Duration::from_secs(10), || {
        count(&server.log(), "recording segment completed") >= 3
    });
    let files = files(&dir);
    assert_eq!(files.len(), 3, "{files:?}\n{}", server.log());
    let mut total_v = 0;
    let mut total_a = 0;
    let mut total_d = 0.0;
    for (i, f) in files.iter().enumerate() {
        assert!(f.starts_with(dir.join("live/cam")), "{}", f.display());
        assert_eq!(f.extension().unwrap(), "mp4");
        let c = check_file(f, 30.0);
        assert_eq!((c.video_codec.as_str(), c.audio_codec.as_str()), ("h264", "aac"));
        assert!(c.first_is_key, "{} does not start with a keyframe", f.display());
        // Completed, the file ends with its last fragment's media: the `free` box that pads
        // each direct write to a block boundary while it is written is cut off.
        let boxes = top_level_boxes(&std::fs::read(f).unwrap());
        assert_eq!(
            boxes.last().map(|b| b.as_str()),
            Some("mdat"),
            "{}: {boxes:?}",
            f.display()
        );
        assert!(!boxes.iter().any(|b| b == "free"), "{}: {boxes:?}", f.display());
        total_v += c.video_frames;
        total_a += c.audio_frames;
        total_d += c.video_duration;
        // No gap: the next segment starts where this one ends (file names carry the start).
        if let Some(next) = files.get(i + 1) {
            let gap = name_time(next) - name_time(f) - c.video_duration;
            assert!(gap.abs() < 0.002, "gap of {gap:.4} s after {}", f.display());
        }
    }
    // The source: 12 s at 30 fps, AAC 48 kHz (1024 samples per frame).
    assert_eq!(total_v, 360, "video frames recorded");
    assert!((560..=564).contains(&total_a), "{total_a} audio frames recorded");
    assert!(
        (total_d - 12.0).abs() <= 1.0 / 30.0 + 1e-6,
        "recorded {total_d:.4} s"
    );
    // Events: created then completed, for each segment.
    let log = server.log();
    assert_eq!(count(&log, "recording segment created"), 3, "{log}");
    // And on the event bus (webhooks, SSE, run_on): one "completed" event per segment.
    let events = log
        .lines()
        .filter(|l| l.contains("event=Recording") && l.contains("state: \"completed\""))
        .count();
    assert_eq!(events, 3, "{log}");
    // A restart lists them with the same duration and leaves every byte as it was.
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let (_, listed) = list(&server, "live/cam");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let listed = listed[0]["duration"].as_f64().unwrap();
    drop(server);
    let server = Server::start_with(&[], Some(&config(&dir, "segment_duration = \"4s\"")));
    assert!(
        server.wait_log("recordings found on disk", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let after: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(before == after, "a restart modified a complete recording");
    let (st, body) = list(&server, "live/cam");
    assert_eq!(st, 200, "{body}");
    let spans: serde_json::Value = serde_json::from_str(&body).unwrap();
    let d = spans[0]["duration"].as_f64().unwrap();
    assert!(
        (d - listed).abs() < 0.005,
        "listed {d} s after a restart, {listed} s before"
    );
    // (The listed time runs to the end of the last audio frame, a little past the video.)
    assert!(
        (d - total_d).abs() < 0.15,
        "listed {d} s, recorded {total_d:.3} s of video"
    );
}

/// An SRT publisher's H.265 is recorded as H.265 (the publisher's own codec), and MPEG-TS
/// recording works as well as fMP4.
#[test]
fn srt_h265_recorded_in_fmp4_and_mpegts() {
    if !require("ffmpeg") {
        return;
    }
    for format in ["fmp4", "mpegts"] {
        let dir = rec_dir(&format!("srt-{format}"));
        let extra = format!("segment_duration = \"4s\"\nformat = \"{format}\"");
        let server = Server::start_with(&[], Some(&config(&dir, &extra)));
        let url = format!("srt://{}?streamid=publish:live/hevc", server.srt);
        let mut ff = publish_once(&source_hevc_ts(), "mpegts", &url);
        assert!(ff.wait().unwrap().success());
        wait_until("segments complete", Duration::from_secs(20), || {
            count(&server.log(), "recording segment completed") >= 3
        });
        let files = files(&dir);
        assert!(files.len() >= 3, "{format}: {files:?}\n{}", server.log());
        let ext = if format == "fmp4" { "mp4" } else { "ts" };
        let mut total_v = 0;
        for f in &files {
            assert_eq!(f.extension().unwrap(), ext);
            let c = check_file(f, 30.0);
            assert_eq!(
                (c.video_codec.as_str(), c.audio_codec.as_str()),
                ("hevc", "aac"),
                "{format}"
            );
            assert!(
                c.first_is_key,
                "{format}: {} does not start with a keyframe",
                f.display()
            );
            total_v += c.video_frames;
        }
        // What was published over SRT (12 s at 30 fps) is in the files, but for the last few
        // frames ffmpeg's SRT caller does not deliver before it closes (a quarter second seen).
        assert!((345..=360).contains(&total_v), "{format}: {total_v} video frames");
    }
}

/// `kill -9` mid-recording: the file being written plays up to within about a second of the
/// kill; the next start repairs and lists it, and records into a new file beside it.
#[test]
fn kill_9_loses_at_most_the_last_fragment() {
    if !require("ffmpeg") {
        return;
    }
    let dir = rec_dir("kill9");
    let cfg = config(&dir, "segment_duration = \"1h\"");
    let mut server = Server::start_with(&[], Some(&cfg));
    let _publisher = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/k"));
    assert!(server.wait_log("recording segment created", Duration::from_secs(20)));
    let created = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    let killed_after = created.elapsed().as_secs_f64();
    let _ = Command::new("kill")
        .args(["-9", &server.pid().to_string()])
        .status();
    wait_until("the server dies", Duration::from_secs(5), || !server.is_running());
    let files = files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let before = std::fs::read(&files[0]).unwrap();
    let c = check_file(&files[0], 30.0);
    assert_eq!(c.video_codec, "h264");
    assert!(c.first_is_key);
    // Fragments of 1 s: what was written covers the time until the kill, less about a second
    // (plus the wait for the first keyframe before the file was created).
    assert!(
        c.video_duration >= killed_after - 2.0,
        "{:.2} s readable of {killed_after:.2} s",
        c.video_duration
    );

    // The next start repairs the file (its header gets the duration) and lists it.
    let server = Server::start_with(&[], Some(&cfg));
    assert!(
        server.wait_log("recordings found on disk", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let (st, body) = list(&server, "live/k");
    assert_eq!(st, 200, "{body}");
    let spans: serde_json::Value = serde_json::from_str(&body).unwrap();
    let d = spans[0]["duration"].as_f64().unwrap();
    assert!(
        (d - c.video_duration).abs() < 0.1,
        "listed {d} s, file has {:.3} s",
        c.video_duration
    );
    let after = std::fs::read(&files[0]).unwrap();
    assert!(after.len() <= before.len() && after.len() > before.len() / 2);
    let c2 = check_file(&files[0], 30.0);
    assert_eq!(
        c2.video_frames, c.video_frames,
        "the repair kept every whole fragment"
    );
    // A new recording goes to a new file; the old one is untouched from here on.
    let _p2 = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/k"));
    assert!(server.wait_log("recording segment created", Duration::from_secs(20)));
    let now = files_after(&dir, &files[0]);
    assert!(!now.is_empty(), "no new file");
    assert_eq!(std::fs::read(&files[0]).unwrap(), after);
}

/// The types of an MP4 file's top-level boxes, in order; the walk must end exactly at the
/// file's end.
fn top_level_boxes(bytes: &[u8]) -> Vec<String> {
    let mut at = 0usize;
    let mut kinds = Vec::new();
    while at + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        assert!(size >= 8, "box of size {size} at {at}");
        kinds.push(String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned());
        at += size;
    }
    assert_eq!(
        at,
        bytes.len(),
        "the boxes do not end at the end of the file: {kinds:?}"
    );
    kinds
}

fn files_after(dir: &Path, old: &Path) -> Vec<PathBuf> {
    files(dir).into_iter().filter(|f| f != old).collect()
}

/// GET /list on the playback port: (status, body).
fn list(server: &Server, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .arg(format!("http://{}/list?path={path}", server.playback))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Retention: segments older than `max_age` are deleted as new ones complete, the newest are
/// kept; a size cap keeps a path's recordings under it.
#[test]
fn retention_deletes_old_segments_only() {
    if !require("ffmpeg") {
        return;
    }
    let dir = rec_dir("retention");
    // 2 s GOPs: segments of about 2 s. Keep 3 s of age on live/age, 400 KB on live/size.
    let cfg = format!(
        "{}[paths.\"live/age\".record]\nmax_age = \"3s\"\n[paths.\"live/size\".record]\nmax_size = \"400KB\"\n[paths.\"live/*\"]\n",
        config(&dir, "segment_duration = \"2s\"")
    );
    let server = Server::start_with(&[], Some(&cfg));
    let mut a = publish_once(&source_flv(), "flv", &server.rtmp_url("live/age"));
    let mut b = publish_once(&source_flv(), "flv", &server.rtmp_url("live/size"));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    // Retention sweeps just after each segment's completion is logged, in its own time: wait
    // for every segment to complete and for the sweep that follows the last one (the kept size
    // under the cap, at most 3 segments of age), within a bound; the checks below say which
    // rule failed if it never comes.
    let kept = |path: &str| files(&dir.join(path));
    let size_of = |v: &[PathBuf]| -> u64 {
        v.iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let log = server.log();
        if count(&log, "recording segment completed") >= 12
            && size_of(&kept("live/size")) <= 400_000
            && kept("live/age").len() <= 3
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = server.log();
    assert!(count(&log, "recording segment completed") >= 12, "{log}");
    let age = kept("live/age");
    let size = kept("live/size");
    // 12 s in 2 s segments: 6 each. live/age keeps those that ended less than 3 s before the
    // last completed: at most 3 of 6; the oldest are the ones gone.
    assert!(!age.is_empty() && age.len() <= 3, "age: {age:?}\n{log}");
    assert!(
        log.contains("recording segment deleted (older than max_age)"),
        "{log}"
    );
    let size_total = size_of(&size);
    assert!(
        size_total <= 400_000,
        "{size_total} bytes kept under a 400 KB cap"
    );
    assert!(!size.is_empty(), "the newest segment is kept");
    assert!(log.contains("recording segment deleted (over max_size)"), "{log}");
    // Only the oldest were deleted: what is left is the newest, contiguous.
    let newest_age = files(&dir.join("live/age"));
    assert_eq!(age, newest_age);
    let deleted = count(&log, "recording segment deleted");
    assert_eq!(deleted + age.len() + size.len(), 12, "{log}");
    let _ = SystemTime::now();
}

/// A full disk (a 3 MB tmpfs): recording of the path stops with a clear log line and an event,
/// the live stream goes on for its viewers, and recording resumes in a new file once space
/// returns. Needs root for the mount.
#[test]
fn full_disk_stops_recording_not_the_stream() {
    if !require("ffmpeg") {
        return;
    }
    let dir = rec_dir("full");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        if std::env::var("CI").is_ok_and(|v| v == "true") && unsafe_is_root() {
            panic!("cannot mount a tmpfs as root");
        }
        eprintln!("skipping: mounting a tmpfs needs root");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.clone());
    // Most of the space taken already: the recording fills the rest within seconds.
    let filler = dir.join("filler");
    std::fs::write(&filler, vec![0u8; 2_400_000]).unwrap();
    let cfg = config(&dir, "segment_duration = \"2s\"\nretry_after = \"1s\"");
    let server = Server::start_with(&[], Some(&cfg));
    let _publisher = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/full"));
    assert!(
        server.wait_log(
            "recording stopped, retrying: the disk is full",
            Duration::from_secs(30)
        ),
        "{}",
        server.log()
    );
    // The API and the metrics say so.
    let v = get_json(&server.api_url("v1/paths/live/full"));
    assert_eq!(v["recording"]["state"], "error", "{v}");
    assert!(
        v["recording"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("disk is full"),
        "{v}"
    );
    let m = get_text(&format!("http://{}/metrics", server.metrics));
    assert!(
        m.contains("sluice_recording_state{path=\"live/full\",state=\"error\"} 1"),
        "{m}"
    );
    // The live stream is untouched: a viewer gets the whole stream.
    let p = probe(&server.rtmp_url("live/full"), 3);
    assert_source_stream(&p, 3, "RTMP while the disk is full");
    let hls = probe(&server.http_url("live/full/index.m3u8"), 2);
    assert!(
        hls.count(true) >= 30,
        "HLS while the disk is full: {}",
        hls.count(true)
    );
    // Space returns: recording resumes on its own in a new file.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        server.wait_log("recording resumed", Duration::from_secs(15)),
        "{}",
        server.log()
    );
    wait_until(
        "a segment completes after the resume",
        Duration::from_secs(10),
        || {
            let log = server.log();
            let resumed = log.find("recording resumed").unwrap_or(usize::MAX);
            log[resumed.min(log.len())..].contains("recording segment completed")
        },
    );
    // Every file left is readable (the one cut by the full disk up to its last fragment).
    for f in files(&dir) {
        let c = check_file(&f, 30.0);
        assert_eq!(c.video_codec, "h264", "{}", f.display());
    }
    assert!(!files(&dir).iter().any(|f| f.to_string_lossy().contains(".tmp")));
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A publisher that comes back within the grace period starts a new segment: the first file
/// is completed, the second starts at 0 with a keyframe, after the first one's end.
#[test]
fn reconnecting_publisher_starts_a_new_segment() {
    if !require("ffmpeg") {
        return;
    }
    let dir = rec_dir("reconnect");
    let cfg =
        config(&dir, "segment_duration = \"1h\"").replace("grace_period = \"1s\"", "grace_period = \"5s\"");
    let server = Server::start_with(&[], Some(&cfg));
    let short = tmp_dir().join("src-4s-copy.flv");
    if !short.exists() {
        let st = Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-y", "-i"])
            .arg(source_flv())
            .args(["-t", "4", "-c", "copy"])
            .arg(&short)
            .status()
            .unwrap();
        assert!(st.success());
    }
    for _ in 0..2 {
        let mut ff = publish_once(&short, "flv", &server.rtmp_url("live/re"));
        assert!(ff.wait().unwrap().success());
    }
    wait_until("both segments complete", Duration::from_secs(15), || {
        count(&server.log(), "recording segment completed") >= 2
    });
    let files = files(&dir);
    assert_eq!(files.len(), 2, "{files:?}\n{}", server.log());
    let a = check_file(&files[0], 30.0);
    let b = check_file(&files[1], 30.0);
    assert!(a.first_is_key && b.first_is_key);
    assert!((115..=125).contains(&a.video_frames), "{}", a.video_frames);
    assert!((115..=125).contains(&b.video_frames), "{}", b.video_frames);
    let p = probe(files[1].to_str().unwrap(), 100);
    let first = p.packets.iter().map(|p| p.dts).fold(f64::INFINITY, f64::min);
    assert!(first.abs() < 0.1, "the second file starts at {first}");
    assert!(name_time(&files[1]) >= name_time(&files[0]) + a.video_duration - 0.01);
}

fn get_text(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn get_json(url: &str) -> serde_json::Value {
    let text = get_text(url);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
}

/// Recording turned on and off on a live path through the API (a hot reload): the recorder
/// starts at the next keyframe and, turned off, completes its file; the publisher never notices.
#[test]
fn recording_switched_on_and_off_live() {
    if !require("ffmpeg") {
        return;
    }
    let dir = rec_dir("switch");
    let cfg = config(&dir, "").replace("enabled = true", "enabled = false");
    let server = Server::start_with(&[], Some(&cfg));
    let mut publisher = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/sw"));
    wait_stream(&server, "live/sw");
    let patch = |on: bool| {
        let body = format!(r#"{{"path_defaults": {{"record": {{"enabled": {on}}}}}}}"#);
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PATCH"])
            .args(["-H", "content-type: application/json", "--data", &body])
            .arg(server.api_url("v1/config"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    };
    patch(true);
    assert!(
        server.wait_log("recording segment created", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    std::thread::sleep(Duration::from_secs(4));
    // The API's bytes written: the file's size (up to what was written since it answered).
    let written = get_json(&server.api_url("v1/paths/live/sw"))["recording"]["bytes_written"]
        .as_u64()
        .unwrap();
    let size: u64 = files(&dir).iter().map(|f| f.metadata().unwrap().len()).sum();
    assert!(
        written > 0 && written <= size && size - written < 1 << 20,
        "API says {written} bytes written, the file has {size}"
    );
    patch(false);
    assert!(
        server.wait_log("recording segment completed", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let files = files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let c = check_file(&files[0], 30.0);
    assert!(
        c.first_is_key && c.video_duration >= 2.0,
        "{:.2} s",
        c.video_duration
    );
    assert!(publisher.is_running(), "the publisher was disturbed");
    assert!(!server.log().contains("RTMP publisher ended"), "{}", server.log());
}
