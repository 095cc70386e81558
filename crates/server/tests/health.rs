//! Stream health end to end (the real binary, real ffmpeg publishers, the API's `health` of a
//! path, the log and the event bus): silence then a tone flips the audio's `silence` to
//! `sound`, a tone then silence flips it to `silent`, a stream without audio says `absent`,
//! a publisher stopped with SIGSTOP is `stalled` within `stall_after` + 1 s and `flowing` again
//! after SIGCONT, and the health output ends with its path and with a kick.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Short thresholds, so the tests take seconds: silent after 2 s, stalled after 2 s; a path
/// ends 2 s after its publisher leaves.
const ENV: &[(&str, &str)] = &[
    ("SLUICE_PATH_DEFAULTS_HEALTH_SILENCE_AFTER", "2s"),
    ("SLUICE_PATH_DEFAULTS_HEALTH_STALL_AFTER", "2s"),
    ("SLUICE_PATH_DEFAULTS_GRACE_PERIOD", "2s"),
    ("SLUICE_WEBRTC_ENABLED", "false"),
];

const STALL_AFTER: Duration = Duration::from_secs(2);

/// A request on the API: status and JSON body (Null when empty or not JSON).
fn api(server: &Server, method: &str, path: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(server.api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} /{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        server.api
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (0, Value::Null);
    };
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The path's `health`, or None when the path is not live or has none.
fn health(server: &Server, path: &str) -> Option<Value> {
    let (st, v) = api(server, "GET", &format!("v1/paths/{path}"));
    if st != 200 {
        return None;
    }
    v.get("health").filter(|h| !h.is_null()).cloned()
}

/// Polls the path's health every 100 ms until `done` holds for it, for at most `timeout`.
/// Returns the successive values of `field` seen (each with when it was first seen), and the
/// last health.
fn watch(
    server: &Server,
    path: &str,
    field: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> (Vec<(String, Instant)>, Option<Value>) {
    let deadline = Instant::now() + timeout;
    let mut seen: Vec<(String, Instant)> = Vec::new();
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(h) = health(server, path) {
            let v = h[field].as_str().unwrap_or("?").to_owned();
            if seen.last().is_none_or(|(s, _)| *s != v) {
                seen.push((v, Instant::now()));
            }
            let ok = done(&h);
            last = Some(h);
            if ok {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (seen, last)
}

fn states(seen: &[(String, Instant)]) -> Vec<&str> {
    seen.iter().map(|(s, _)| s.as_str()).collect()
}

/// A 16 s FLV source: testsrc2 320x180 at 25 fps with a 2 s GOP, and 48 kHz stereo AAC from
/// the aevalsrc expression `audio` (None: no audio track). Made once and cached.
fn source(name: &str, audio: Option<&str>) -> PathBuf {
    let out = tmp_dir().join(name);
    if out.exists() {
        return out;
    }
    let tmp = tmp_dir().join(format!("{name}.{}.tmp", std::process::id()));
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-v", "error", "-y"]).args([
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x180:rate=25",
    ]);
    if let Some(expr) = audio {
        cmd.args([
            "-f",
            "lavfi",
            "-i",
            &format!("aevalsrc='{expr}':s=48000:c=stereo"),
        ]);
    }
    cmd.args(["-t", "16", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0"])
        .args([
            "-g",
            "50",
            "-keyint_min",
            "50",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
        ]);
    if audio.is_some() {
        cmd.args(["-c:a", "aac", "-b:a", "96k"]);
    } else {
        cmd.arg("-an");
    }
    let st = cmd.args(["-f", "flv"]).arg(&tmp).status().expect("run ffmpeg");
    assert!(st.success(), "ffmpeg could not make {name}");
    std::fs::rename(&tmp, &out).unwrap();
    out
}

fn silence_then_tone() -> PathBuf {
    source(
        "health-silence-then-tone-v1.flv",
        Some("if(lt(t,6),0,0.5*sin(2*PI*440*t))"),
    )
}

fn tone_then_silence() -> PathBuf {
    source(
        "health-tone-then-silence-v1.flv",
        Some("if(lt(t,6),0.5*sin(2*PI*440*t),0)"),
    )
}

/// ffmpeg publishing `src` over RTMP in real time (`looped`: forever).
fn publish(src: &Path, url: &str, looped: bool) -> Publisher {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-v", "warning", "-re"]);
    if looped {
        cmd.args(["-stream_loop", "-1"]);
    }
    let child = cmd
        .arg("-i")
        .arg(src)
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ffmpeg");
    Publisher::from_child(child)
}

/// Where `needle` first appears in the log.
fn log_at(server: &Server, needle: &str) -> Option<usize> {
    server.log().find(needle)
}

/// Whether the event bus carried a health event for `path` (the log consumer writes every
/// event at debug level).
fn event_seen(server: &Server, path: &str, what: &str, state: &str) -> bool {
    server.log().lines().any(|l| {
        l.contains("Health {")
            && l.contains(&format!("path: \"{path}\""))
            && l.contains(&format!("what: \"{what}\", state: \"{state}\""))
    })
}

#[test]
fn silence_then_tone_flips_to_sound() {
    if !require("ffmpeg") {
        return;
    }
    let src = silence_then_tone();
    let server = Server::start_with(ENV, None);
    let path = "live/s2t";
    let _publisher = publish(&src, &server.rtmp_url(path), false);
    wait_stream(&server, path);
    // The level is of the last second of audio (AAC measured one frame in 16, 341 ms each):
    // the first second after the tone starts may hold silence too, the next one is all tone.
    let (seen, last) = watch(&server, path, "silence", Duration::from_secs(14), |h| {
        h["silence"] == "sound" && h["audio_level_db"].as_f64().is_some_and(|db| db > -11.0)
    });
    let names = states(&seen);
    let silent = names.iter().position(|s| *s == "silent");
    let sound = names.iter().rposition(|s| *s == "sound");
    assert!(
        silent.is_some() && sound > silent,
        "silence states seen: {names:?}; log:\n{}",
        server.log()
    );
    // The tone starts 6 s into the stream; 2 s of silence made it silent well before.
    let (t_silent, t_sound) = (seen[silent.unwrap()].1, seen[sound.unwrap()].1);
    assert!(t_sound - t_silent > Duration::from_secs(2), "{names:?}");
    let h = last.unwrap();
    assert_eq!(
        (h["audio"].as_str(), h["audio_codec"].as_str()),
        (Some("present"), Some("aac"))
    );
    // A 0.5 sine is -9 dBFS RMS, -6 dBFS peak.
    let db = h["audio_level_db"].as_f64().unwrap();
    assert!((-11.0..=-7.0).contains(&db), "level {db}: {h}");
    assert_eq!(h["quiet_s"], 0.0, "{h}");
    assert_eq!(h["audio_decode_errors"], 0, "{h}");
    // Log lines at info and events on the bus, in order.
    assert!(server.wait_log("health: silence sound", Duration::from_secs(2)));
    let (a, b) = (
        log_at(&server, "health: silence silent").expect("silent logged"),
        log_at(&server, "health: silence sound").expect("sound logged"),
    );
    assert!(a < b, "silent logged after sound");
    assert!(server.wait_log("path=live/s2t", Duration::from_secs(1)));
    assert!(event_seen(&server, path, "silence", "silent"), "{}", server.log());
    assert!(event_seen(&server, path, "silence", "sound"), "{}", server.log());
}

#[test]
fn tone_then_silence_flips_to_silent_and_the_output_ends_with_the_path() {
    if !require("ffmpeg") {
        return;
    }
    let src = tone_then_silence();
    let server = Server::start_with(ENV, None);
    let path = "live/t2s";
    let mut publisher = publish(&src, &server.rtmp_url(path), false);
    wait_stream(&server, path);
    let (seen, last) = watch(&server, path, "silence", Duration::from_secs(14), |h| {
        h["silence"] == "silent"
    });
    let names = states(&seen);
    let sound = names.iter().position(|s| *s == "sound");
    let silent = names.iter().rposition(|s| *s == "silent");
    assert!(
        sound.is_some() && silent > sound,
        "silence states seen: {names:?}; log:\n{}",
        server.log()
    );
    let h = last.unwrap();
    assert!(h["audio_level_db"].as_f64().unwrap() < -60.0, "{h}");
    assert!(h["quiet_s"].as_f64().unwrap() >= 2.0, "{h}");
    let (a, b) = (
        log_at(&server, "health: silence sound").expect("sound logged"),
        log_at(&server, "health: silence silent").expect("silent logged"),
    );
    assert!(a < b, "sound logged after silent");
    assert!(event_seen(&server, path, "silence", "sound"));
    assert!(event_seen(&server, path, "silence", "silent"));
    // The source ends at 16 s: the stream goes offline, then the path ends (2 s grace) and
    // its health with it.
    assert!(
        publisher.wait_exit(Duration::from_secs(15)).is_some(),
        "ffmpeg did not finish"
    );
    let (seen, _) = watch(&server, path, "stream", Duration::from_secs(3), |h| {
        h["stream"] == "offline"
    });
    assert_eq!(states(&seen).last(), Some(&"offline"), "{seen:?}");
    let deadline = Instant::now() + Duration::from_secs(6);
    while health(&server, path).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(health(&server, path).is_none(), "health outlived its path");
    assert!(server.log().contains("health: stream offline"));
}

#[test]
fn a_stream_without_audio_says_absent_with_its_video_figures() {
    if !require("ffmpeg") {
        return;
    }
    let src = source("health-video-only-v1.flv", None);
    let server = Server::start_with(ENV, None);
    let path = "live/noaudio";
    let _publisher = publish(&src, &server.rtmp_url(path), true);
    wait_stream(&server, path);
    // Figures need a few seconds: two keyframes (2 s GOP), 5 s of bitrate.
    let (_, last) = watch(&server, path, "stream", Duration::from_secs(12), |h| {
        h["keyframe_interval_s"].is_number()
            && h["bitrate_in"].as_u64().unwrap_or(0) > 0
            && h["video_fps"].is_number()
    });
    let h = last.expect("health of the path");
    assert_eq!(h["audio"], "absent", "{h}");
    assert!(h["audio_codec"].is_null(), "{h}");
    assert_eq!(h["silence"], "unknown", "{h}");
    assert_eq!(h["silence_detail"], "no audio track", "{h}");
    assert_eq!(
        (h["stream"].as_str(), h["video"].as_str()),
        (Some("flowing"), Some("present")),
        "{h}"
    );
    assert_eq!(h["video_codec"], "h264");
    let fps = h["video_fps"].as_f64().unwrap();
    assert!((fps - 25.0).abs() < 1.0, "fps {fps}: {h}");
    let gop = h["keyframe_interval_s"].as_f64().unwrap();
    assert!((gop - 2.0).abs() < 0.1, "keyframe interval {gop}: {h}");
    assert_eq!(
        (h["timestamp_jumps"].as_u64(), h["stalls"].as_u64()),
        (Some(0), Some(0)),
        "{h}"
    );
    assert!(server
        .log()
        .contains("health: audio absent: the stream has no audio track"));
    assert!(event_seen(&server, path, "audio", "absent"));
    // The health output is a session of the path; a kick ends it (and only it).
    let (_, p) = api(&server, "GET", &format!("v1/paths/{path}"));
    let outputs = p["outputs"].as_array().unwrap();
    let id = outputs
        .iter()
        .find(|o| o["name"] == "health")
        .and_then(|o| o["session"].as_u64())
        .expect("a health output");
    let (st, _) = api(&server, "DELETE", &format!("v1/sessions/{id}"));
    assert!(st == 204 || st == 202, "kick: {st}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while health(&server, path).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        health(&server, path).is_none(),
        "health outlived its kicked output"
    );
    let (st, p) = api(&server, "GET", &format!("v1/paths/{path}"));
    assert_eq!((st, p["online"].as_bool()), (200, Some(true)), "the path goes on");
}

/// Sends `signal` (STOP, CONT) to a process.
fn signal(pid: u32, signal: &str) {
    let st = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

/// Resumes a stopped publisher even when the test fails.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-CONT").arg(self.0.to_string()).status();
    }
}

#[test]
fn a_stall_is_found_within_its_timeout_and_clears() {
    if !require("ffmpeg") {
        return;
    }
    let src = silence_then_tone();
    let server = Server::start_with(ENV, None);
    let path = "live/stall";
    let publisher = publish(&src, &server.rtmp_url(path), true);
    wait_stream(&server, path);
    let (_, last) = watch(&server, path, "stream", Duration::from_secs(10), |h| {
        h["stream"] == "flowing" && h["audio"] == "present" && h["video"] == "present"
    });
    assert_eq!(
        last.as_ref().map(|h| h["stream"].clone()),
        Some("flowing".into()),
        "{last:?}"
    );
    std::thread::sleep(Duration::from_secs(1));

    let _resume = Resume(publisher.pid());
    signal(publisher.pid(), "STOP");
    let stopped = Instant::now();
    let (seen, last) = watch(
        &server,
        path,
        "stream",
        STALL_AFTER + Duration::from_secs(3),
        |h| h["stream"] == "stalled",
    );
    let at = seen
        .iter()
        .find(|(s, _)| s == "stalled")
        .map(|(_, t)| *t - stopped);
    let at = at.unwrap_or_else(|| panic!("no stall seen: {seen:?}; log:\n{}", server.log()));
    assert!(
        at <= STALL_AFTER + Duration::from_secs(1),
        "stall seen {at:?} after SIGSTOP (stall_after {STALL_AFTER:?})"
    );
    // Frames in flight when the publisher stopped can delay the start of the count a little,
    // never by much; and the stall is not reported before stall_after.
    assert!(
        at >= STALL_AFTER - Duration::from_millis(300),
        "stall seen after {at:?}"
    );
    let h = last.unwrap();
    assert_eq!(h["stalls"], 1, "{h}");
    // Stalled: audio and video keep their state (the stall is the news).
    assert_eq!(
        (h["audio"].as_str(), h["video"].as_str()),
        (Some("present"), Some("present")),
        "{h}"
    );

    signal(publisher.pid(), "CONT");
    let resumed = Instant::now();
    let (seen, last) = watch(&server, path, "stream", Duration::from_secs(5), |h| {
        h["stream"] == "flowing"
    });
    assert!(
        seen.iter().any(|(s, _)| s == "flowing"),
        "no flowing after SIGCONT within {:?}: {seen:?}",
        resumed.elapsed()
    );
    assert_eq!(last.unwrap()["stalls"], 1);
    assert!(server.wait_log(
        "health: stream flowing: media again after",
        Duration::from_secs(2)
    ));
    let (a, b) = (
        log_at(&server, "health: stream stalled: no media for").expect("stall logged"),
        log_at(&server, "health: stream flowing: media again after").unwrap(),
    );
    assert!(a < b);
    assert!(event_seen(&server, path, "stream", "stalled"));
    assert!(event_seen(&server, path, "stream", "flowing"));
}

/// `enabled = false` for a path: no health output, `"health": null`, nothing decoded.
#[test]
fn health_off_per_path() {
    if !require("ffmpeg") {
        return;
    }
    let src = tone_then_silence();
    let config = "[paths.\"quiet/*\".health]\nenabled = false\n[paths.\"live/*\"]\n";
    let server = Server::start_with(ENV, Some(config));
    let _a = publish(&src, &server.rtmp_url("quiet/a"), true);
    let _b = publish(&src, &server.rtmp_url("live/b"), true);
    wait_stream(&server, "quiet/a");
    wait_stream(&server, "live/b");
    let (_, last) = watch(&server, "live/b", "stream", Duration::from_secs(5), |h| {
        h["stream"] == "flowing"
    });
    assert!(last.is_some(), "live/b has health");
    let (st, p) = api(&server, "GET", "v1/paths/quiet/a");
    assert_eq!(st, 200);
    assert!(p["health"].is_null(), "{p}");
    assert!(
        p["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["name"] != "health"),
        "{p}"
    );
}

/// A reload reaches the running checks: a tighter `silence_level` makes a steady tone silent
/// without restarting the path, and `enabled = false` removes the path's health.
#[test]
fn a_reload_changes_the_thresholds_of_a_live_path() {
    if !require("ffmpeg") {
        return;
    }
    let src = source("health-tone-v1.flv", Some("0.5*sin(2*PI*440*t)"));
    let cfg = |extra: &str| {
        format!("[path_defaults.health]\nsilence_after = \"2s\"\nstall_after = \"2s\"\n{extra}")
    };
    let server = Server::start_with(ENV, Some(&cfg("silence_level = \"-60dB\"\n")));
    let file = tmp_dir().join(format!(
        "config-{}-{}.toml",
        std::process::id(),
        server.rtmp.port()
    ));
    assert!(
        file.exists(),
        "the test kit's config file moved: {}",
        file.display()
    );
    let path = "live/reload";
    let _publisher = publish(&src, &server.rtmp_url(path), true);
    wait_stream(&server, path);
    let (_, last) = watch(&server, path, "silence", Duration::from_secs(8), |h| {
        h["silence"] == "sound"
    });
    assert_eq!(
        last.as_ref().map(|h| h["silence"].clone()),
        Some("sound".into()),
        "{last:?}"
    );
    let session = |server: &Server| {
        let (_, p) = api(server, "GET", &format!("v1/paths/{path}"));
        p["outputs"]
            .as_array()
            .and_then(|o| o.iter().find(|o| o["name"] == "health"))
            .and_then(|o| o["session"].as_u64())
    };
    let before = session(&server).expect("a health output");

    // The tone is -9 dBFS: under a -5 dBFS threshold it is silence, 2 s later.
    std::fs::write(&file, cfg("silence_level = \"-5dB\"\n")).unwrap();
    signal(server.pid(), "HUP");
    let (seen, _) = watch(&server, path, "silence", Duration::from_secs(8), |h| {
        h["silence"] == "silent"
    });
    assert_eq!(
        states(&seen).last(),
        Some(&"silent"),
        "{seen:?}; log:\n{}",
        server.log()
    );
    assert_eq!(session(&server), Some(before), "the same health output goes on");
    assert!(
        server.log().contains("health settings changed"),
        "{}",
        server.log()
    );

    std::fs::write(&file, cfg("enabled = false\n")).unwrap();
    signal(server.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while health(&server, path).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        health(&server, path).is_none(),
        "health still there after enabled = false"
    );
    let (st, p) = api(&server, "GET", &format!("v1/paths/{path}"));
    assert_eq!(
        (st, p["online"].as_bool()),
        (200, Some(true)),
        "the path goes on: {p}"
    );
}
