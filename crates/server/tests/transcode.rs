//! Transcoding with a real encoder (ffmpeg, the software x264 path; libvpx and libaom for VP9
//! and AV1): a 640x360 source published over RTMP gets 288p and 180p renditions, read over RTMP and HLS by ffprobe at their sizes,
//! with keyframes where the source has them; killing the encoder leaves the source's readers
//! untouched and the renditions come back.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const CONFIG: &str = r#"
[paths."live/*".transcode]
preset = "ultrafast"
renditions = [
  { name = "288p", width = 512, height = 288, video_bitrate = "500k" },
  { name = "180p", height = 180, video_bitrate = "250k" },
]
"#;

fn wait_log_count(server: &Server, needle: &str, n: usize, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if server.log().matches(needle).count() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The keyframe times of a probe's video (ffprobe may list a packet twice across HLS parts:
/// times within 50 ms are one keyframe).
fn keyframes(p: &Probe) -> Vec<f64> {
    let mut k: Vec<f64> = p
        .packets
        .iter()
        .filter(|x| x.video && x.key)
        .map(|x| x.pts)
        .collect();
    k.sort_by(f64::total_cmp);
    k.dedup_by(|b, a| *b - *a < 0.05);
    k
}

#[test]
fn renditions_read_over_rtmp_and_hls_with_the_source_keyframes() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(&[], Some(CONFIG));
    let _p = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    wait_stream(&server, "live/cam/~288p");
    wait_stream(&server, "live/cam/~180p");

    for (name, w, h) in [("288p", 512, 288), ("180p", 320, 180)] {
        let p = probe(&server.rtmp_url(&format!("live/cam/~{name}")), 3);
        assert_eq!(p.video().codec_name, "h264", "{name} over RTMP: {}", p.stderr);
        assert_eq!((p.video().width, p.video().height), (w, h), "{name} over RTMP");
        assert_eq!(p.audio().codec_name, "aac", "{name}");
        assert!(
            p.count(true) >= 60,
            "{name}: {} video packets in 3 s",
            p.count(true)
        );
        p.assert_av_sync(0.3);
        let p = probe(&server.http_url(&format!("live/cam/~{name}/index.m3u8")), 3);
        assert_eq!(
            (p.video().width, p.video().height),
            (w, h),
            "{name} over HLS: {}",
            p.stderr
        );
    }

    // The encoder's figures: real time (once it has caught up with the burst it starts with:
    // the source's latest GOP at once), the source's frame rate, each rendition's bitrate.
    let ladder = || {
        let (_, body, _) = curl(&["-s", &server.api_url("v1/paths/live/cam")]);
        serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()["transcode"].clone()
    };
    wait_until("the encoder runs at real time", Duration::from_secs(20), || {
        ladder()["speed"]
            .as_f64()
            .is_some_and(|s| (0.85..1.15).contains(&s))
    });
    let t = ladder();
    for o in t["outputs"].as_array().unwrap() {
        let fps = o["fps"].as_f64().unwrap_or_default();
        assert!((24.0..36.0).contains(&fps), "{o}");
        assert!(o["bitrate"].as_u64().unwrap_or_default() > 50_000, "{o}");
        let added = o["added_latency_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("no latency: {o}"));
        assert!((1.0..2000.0).contains(&added), "{o}");
    }
    assert_same_keyframes(&server, "live/cam", "live/cam/~180p");

    // The API shows the transcoder: running, its renditions, frames written.
    let (st, _, body) = http_get(server.api, "/v1/paths/live/cam", &[]);
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let t = &v["transcode"];
    assert_eq!(t["state"], "running", "{v}");
    assert_eq!(
        t["renditions"],
        serde_json::json!(["live/cam/~288p", "live/cam/~180p"]),
        "{v}"
    );
    assert!(t["frames_out"].as_u64().unwrap() > 100, "{v}");
    assert!(t["pid"].as_u64().is_some(), "{v}");

    // One encoder for the path, whatever the number of renditions and readers.
    let encoders = Command::new("pgrep")
        .args(["-P", &server.pid().to_string(), "ffmpeg"])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&encoders.stdout);
    assert_eq!(pids.lines().count(), 1, "encoders: {pids:?}");
}

/// Keyframes of `rendition` at the source's: the same instants over HLS (timestamps are the
/// source's).
fn assert_same_keyframes(server: &Server, source: &str, rendition: &str) {
    // Both read at once: one after the other, on a loaded machine, the second playlist's window
    // had moved past the first's (one keyframe in common).
    let (src, r) = std::thread::scope(|s| {
        let src = s.spawn(|| probe(&server.http_url(&format!("{source}/index.m3u8")), 6));
        let r = probe(&server.http_url(&format!("{rendition}/index.m3u8")), 6);
        (src.join().unwrap(), r)
    });
    let (ks, kr) = (keyframes(&src), keyframes(&r));
    assert!(
        !ks.is_empty() && !kr.is_empty(),
        "source {ks:?}, rendition {kr:?}: {}",
        r.stderr
    );
    let lo = ks[0].max(kr[0]);
    let hi = ks[ks.len() - 1].min(kr[kr.len() - 1]);
    let common_src: Vec<f64> = ks.iter().copied().filter(|t| (lo..=hi).contains(t)).collect();
    let common_r: Vec<f64> = kr.iter().copied().filter(|t| (lo..=hi).contains(t)).collect();
    assert!(common_src.len() >= 2, "source keyframes {ks:?}, rendition {kr:?}");
    assert_eq!(
        common_src.len(),
        common_r.len(),
        "source {ks:?}\nrendition {kr:?}"
    );
    for (a, b) in common_src.iter().zip(&common_r) {
        assert!(
            (a - b).abs() < 0.05,
            "keyframe at {a} in the source, {b} in the rendition"
        );
    }
}

/// VP9 (libvpx) and AV1 (libaom) ladders: the encoder's output comes back as fragmented MP4.
const VP9_AV1: &str = r#"
[paths."vp9/*".transcode]
video_codec = "vp9"
preset = "ultrafast"
renditions = [{ name = "180p", height = 180, video_bitrate = "250k" }]

[paths."av1/*".transcode]
video_codec = "av1"
preset = "ultrafast"
renditions = [{ name = "180p", height = 180, video_bitrate = "250k" }]
"#;

#[test]
fn vp9_and_av1_renditions_read_over_hls_with_the_source_keyframes() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(&[], Some(VP9_AV1));
    // One at a time: two encoders at once would not keep real time on two cores.
    for (path, codec, tag) in [("vp9/cam", "vp9", "vp09."), ("av1/cam", "av1", "av01.")] {
        let publisher = Publisher::rtmp(&source_flv(), &server.rtmp_url(path));
        wait_stream(&server, path);
        let rendition = format!("{path}/~180p");
        wait_stream(&server, &rendition);
        let p = probe(&server.http_url(&format!("{rendition}/index.m3u8")), 4);
        assert_eq!(p.video().codec_name, codec, "{rendition} over HLS: {}", p.stderr);
        assert_eq!((p.video().width, p.video().height), (320, 180), "{rendition}");
        assert_eq!(p.audio().codec_name, "aac", "{rendition}");
        assert!(
            p.count(true) >= 60,
            "{rendition}: {} video packets in 4 s",
            p.count(true)
        );
        p.assert_av_sync(0.3);
        // The multivariant playlist names the rendition's codec, for players to choose.
        let (_, _, body) = http_get(server.http, &format!("/{path}/index.m3u8"), &[]);
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("~180p/stream.m3u8") && text.contains(&format!("CODECS=\"{tag}")),
            "{text}"
        );
        assert_same_keyframes(&server, path, &rendition);
        // Real time, at the source's frame rate.
        let (_, body, _) = curl(&["-s", &server.api_url(&format!("v1/paths/{path}"))]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let fps = v["transcode"]["outputs"][0]["fps"].as_f64().unwrap_or_default();
        assert!((24.0..36.0).contains(&fps), "{v}");
        drop(publisher);
    }
}

#[test]
fn a_killed_encoder_leaves_the_source_alone_and_comes_back() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(&[], Some(CONFIG));
    let _p = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam/~288p");
    // A source reader for the whole time, and a rendition reader that stays connected.
    let reader = std::thread::spawn({
        let url = server.rtmp_url("live/cam");
        move || probe(&url, 10)
    });
    std::thread::sleep(Duration::from_secs(2));
    let encoders = Command::new("pgrep")
        .args(["-P", &server.pid().to_string(), "ffmpeg"])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&encoders.stdout).trim().to_owned();
    assert!(!pid.is_empty(), "no encoder running:\n{}", server.log());
    assert!(Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap()
        .success());
    assert!(
        wait_log_count(&server, "transcoder started", 2, Duration::from_secs(15)),
        "the encoder was not started again:\n{}",
        server.log()
    );
    assert!(server.log().contains("transcoder failed"), "{}", server.log());
    let (_, _, body) = http_get(server.api, "/v1/paths/live/cam", &[]);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["transcode"]["restarts"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["transcode"]["last_error"].as_str().is_some(), "{v}");
    let p = reader.join().unwrap();
    assert_source_stream(&p, 10, "the source while its encoder was killed");
    let p = probe(&server.rtmp_url("live/cam/~288p"), 2);
    assert_eq!((p.video().width, p.video().height), (512, 288), "{}", p.stderr);
}

#[test]
fn a_rendition_cannot_be_published_by_a_client() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(&[], Some(CONFIG));
    let mut p = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam/~288p"));
    let st = p.wait_exit(Duration::from_secs(15)).expect("refused");
    assert!(!st.success());
    assert!(!server.log().contains("transcoder started"), "{}", server.log());
}

/// A server with the ladder of [`CONFIG`], a publisher without B-frames (what browsers play)
/// on `live/cam`, and both renditions published.
fn live_with_renditions() -> (Server, Publisher) {
    let server = Server::start_with(&[], Some(CONFIG));
    let p = Publisher::rtmp(&source_flv_no_bframes(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam/~288p");
    wait_stream(&server, "live/cam/~180p");
    (server, p)
}

/// The path's multivariant playlist names every rendition with its size, bandwidth and codecs,
/// and hls.js in Chromium plays it, switching to each level (forced) without a stall.
#[test]
fn hls_js_switches_between_renditions() {
    if !require("ffmpeg") || !require("node") || !have_hlsjs_browser() {
        return;
    }
    let (server, _p) = live_with_renditions();
    // The renditions' playlists exist once each has a segment.
    wait_until(
        "the multivariant playlist names both renditions",
        Duration::from_secs(20),
        || {
            let (_, _, body) = http_get(server.http, "/live/cam/index.m3u8", &[]);
            String::from_utf8_lossy(&body)
                .matches("#EXT-X-STREAM-INF")
                .count()
                == 3
        },
    );
    let (_, _, body) = http_get(server.http, "/live/cam/index.m3u8", &[]);
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(
        text.contains("RESOLUTION=512x288") && text.contains("RESOLUTION=320x180"),
        "{text}"
    );
    assert!(
        text.contains("~288p/stream.m3u8") && text.contains("CODECS=\"avc1."),
        "{text}"
    );
    let url = server.http_url("live/cam/index.m3u8");
    let r = run_web_script("abr.mjs", &[url.as_str(), "4"], &[], 120);
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}");
    assert_eq!(r["levels"].as_array().map(Vec::len), Some(3), "{r}");
    let shown: Vec<(u64, u64)> = r["shown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["width"].as_u64().unwrap(), s["height"].as_u64().unwrap()))
        .collect();
    for size in [(640, 360), (512, 288), (320, 180)] {
        assert!(shown.contains(&size), "never showed {size:?}: {r}");
    }
    // Four switches in about 20 s on a 2-core machine that also runs the publisher, a server
    // and two x264 encodes beside the browser: at most one short stall, and playback keeps up
    // with the wall clock. (hls.js sometimes seeks over a small hole at one switch: the stall
    // bound covers it; finding where the hole comes from is still to do.)
    assert!(r["stalls"].as_u64().unwrap() <= 1, "{r}");
    assert!(
        r["played"].as_f64().unwrap() >= r["wall"].as_f64().unwrap() - 2.0,
        "{r}"
    );
    // LL-HLS rendition reports: the source's media playlist reports both renditions, a
    // rendition's reports the source and the other one, each at its last segment and part.
    let (_, _, body) = http_get(server.http, "/live/cam/stream.m3u8", &[]);
    let text = String::from_utf8_lossy(&body).into_owned();
    let reports: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-RENDITION-REPORT:"))
        .collect();
    assert_eq!(reports.len(), 2, "{text}");
    assert!(
        reports[0].starts_with("URI=\"~288p/stream.m3u8\",LAST-MSN="),
        "{text}"
    );
    assert!(reports.iter().all(|r| r.contains(",LAST-PART=")), "{text}");
    let (_, _, body) = http_get(server.http, "/live/cam/~180p/stream.m3u8", &[]);
    let text = String::from_utf8_lossy(&body).into_owned();
    let uris: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-RENDITION-REPORT:URI=\""))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert_eq!(uris, ["../stream.m3u8", "../~288p/stream.m3u8"], "{text}");
    // Each report's segment is one the rendition has (the renditions keep the source's
    // keyframes, so they stand within a segment of each other).
    let msn = |r: &str| -> u64 {
        r.split("LAST-MSN=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let own: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(reports.iter().all(|r| msn(r) + 8 >= own), "{reports:?} vs {own}");
}

/// `GET /PATH/snapshot.jpg?width=W`: a JPEG of the latest keyframe, at that width, within a
/// second.
#[test]
fn snapshot_is_a_jpeg_of_the_latest_keyframe() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start();
    let _p = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    let t = std::time::Instant::now();
    let (st, h, body) = http_get(server.http, "/live/cam/snapshot.jpg?width=320", &[]);
    let took = t.elapsed();
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(header(&h, "content-type"), Some("image/jpeg"));
    let file = tmp_dir().join(format!("snapshot-{}.jpg", std::process::id()));
    std::fs::write(&file, &body).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "mjpeg,320,180");
    // Full size, and bad widths refused.
    let (st, _, full) = http_get(server.http, "/live/cam/snapshot.jpg", &[]);
    assert_eq!(st, 200);
    std::fs::write(&file, &full).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "640,360");
    for bad in ["width=7", "width=x", "width=99999"] {
        let (st, _, _) = http_get(server.http, &format!("/live/cam/snapshot.jpg?{bad}"), &[]);
        assert_eq!(st, 400, "{bad}");
    }
    let (st, _, _) = http_get(server.http, "/nothing/snapshot.jpg", &[]);
    assert_eq!(st, 404);
}

/// A reload that changes the ladder replaces the running transcoder: a rung added appears, a
/// rung removed ends, and the source's publisher is not touched.
#[test]
fn a_reload_changes_the_ladder_of_a_live_path() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(&[], Some(CONFIG));
    let _p = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam/~288p");
    let file = tmp_dir().join(format!(
        "config-{}-{}.toml",
        std::process::id(),
        server.rtmp.port()
    ));
    let changed = r#"
[paths."live/*".transcode]
preset = "ultrafast"
renditions = [{ name = "144p", height = 144, video_bitrate = "150k" }]
"#;
    std::fs::write(&file, changed).unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap()
        .success());
    wait_stream(&server, "live/cam/~144p");
    let p = probe(&server.rtmp_url("live/cam/~144p"), 2);
    assert_eq!((p.video().width, p.video().height), (256, 144), "{}", p.stderr);
    wait_until("the old rungs end", Duration::from_secs(10), || {
        let (st, _, _) = http_get(server.http, "/live/cam/~288p/index.m3u8", &[]);
        st == 404
    });
    assert_eq!(
        server.log().matches("RTMP publisher started").count(),
        1,
        "the source was touched:\n{}",
        server.log()
    );
}

/// The renditions are video representations of the path's low-latency MPD, numbered as the
/// source's segments; dash.js in Chromium shows each size in turn (ABR off, a switch every 4 s)
/// without a stall.
#[test]
fn dash_js_switches_between_renditions() {
    if !require("ffmpeg") || !require("node") || !have_hlsjs_browser() {
        return;
    }
    let (server, _p) = live_with_renditions();
    wait_until("the MPD lists both renditions", Duration::from_secs(20), || {
        let (_, _, body) = http_get(server.http, "/live/cam/index.mpd", &[]);
        let text = String::from_utf8_lossy(&body);
        text.contains("<Representation id=\"288p\"") && text.contains("<Representation id=\"180p\"")
    });
    let (_, _, body) = http_get(server.http, "/live/cam/index.mpd", &[]);
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(text.contains("width=\"512\" height=\"288\""), "{text}");
    assert!(text.contains("media=\"~288p/dash-"), "{text}");
    let url = server.http_url("live/cam/dash.html");
    let r = run_web_script("dash.mjs", &[url.as_str(), "16"], &[("SWITCH_MS", "4000")], 120);
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}");
    assert_eq!(r["representations"].as_array().map(Vec::len), Some(3), "{r}");
    let sizes: Vec<&str> = r["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for size in ["640x360", "512x288", "320x180"] {
        assert!(sizes.contains(&size), "never showed {size}: {r}");
    }
    // The machine also runs the publisher, the server, two x264 encodes and the browser (CI
    // gives this test all of it): playback keeps going, within a few seconds of the wall clock.
    assert!(r["stalls"].as_u64().unwrap() <= 1, "{r}");
    assert!(
        r["played"].as_f64().unwrap() >= r["wall"].as_f64().unwrap() * 0.8,
        "{r}"
    );
    assert_eq!(r["http_error_count"].as_u64(), Some(0), "{r}");
}

/// An on-demand ladder: no encoder while nobody watches a rendition; an RTMP reader of one
/// starts it (its first frames within seconds), and it stops `close_after` after the last
/// rendition viewer; an HLS player of the source's multivariant playlist starts it too and finds
/// every rendition listed.
#[test]
fn an_on_demand_ladder_runs_only_while_a_rendition_is_watched() {
    if !require("ffmpeg") {
        return;
    }
    let config = CONFIG.replace(
        "preset = \"ultrafast\"",
        "preset = \"ultrafast\"\non_demand = true\nclose_after = \"2s\"",
    );
    let server = Server::start_with(&[], Some(&config));
    let _p = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    let transcode = |s: &Server| -> serde_json::Value {
        let (_, body, _) = curl(&["-s", &s.api_url("v1/paths/live/cam")]);
        serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()["transcode"].clone()
    };
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        transcode(&server).is_null(),
        "an encoder runs with nobody watching"
    );
    assert!(!server.log().contains("transcoder started"), "{}", server.log());

    // A reader of a rendition: the ladder starts, and the reader gets its picture.
    let asked = std::time::Instant::now();
    let p = probe(&server.rtmp_url("live/cam/~180p"), 3);
    let took = asked.elapsed();
    assert_eq!((p.video().width, p.video().height), (320, 180), "{}", p.stderr);
    assert!(p.count(true) >= 60, "{} video packets in 3 s", p.count(true));
    eprintln!("first rendition reader: probe of 3 s done after {took:?}");
    assert!(took < Duration::from_secs(9), "the rendition took {took:?}");
    assert!(server.log().contains("starting the on-demand ladder"));
    // Nobody watches any more: it stops after close_after (and the next reconcile).
    wait_until("the ladder stops", Duration::from_secs(15), || {
        transcode(&server).is_null()
    });

    // An HLS player of the source: the multivariant playlist waits for the renditions.
    let (_, text, _) = curl(&["-s", &server.http_url("live/cam/index.m3u8")]);
    assert!(
        text.contains("~288p/stream.m3u8") && text.contains("~180p/stream.m3u8"),
        "{text}"
    );
    assert!(!transcode(&server).is_null());
    wait_until("the ladder stops again", Duration::from_secs(15), || {
        transcode(&server).is_null()
    });
}
