//! Recording playback end to end: ffmpeg publishes ~12 s over RTMP with recording on (5 s
//! segments, 1 s parts); `/list`, `/get` across two segments in fMP4 and progressive MP4 (ffprobe
//! reads them, ffmpeg seeks in them, Range requests, Chromium plays and seeks), the HLS VOD
//! playlist (ffmpeg and hls.js in Chromium play it and seek), the `/v1/recordings` API; and every
//! attempt to leave the recording directory refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::*;

/// A fresh recording directory for one test.
fn rec_dir(test: &str) -> PathBuf {
    let d = tmp_dir().join(format!("playback-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(dir: &Path) -> String {
    format!(
        "[path_defaults]\ngrace_period = \"1s\"\n[path_defaults.record]\nenabled = true\n\
         segment_duration = \"5s\"\npart_duration = \"1s\"\n\
         path = \"{}/%path/%Y-%m-%d_%H-%M-%S-%f\"\n",
        dir.display()
    )
}

fn get(addr: std::net::SocketAddr, target: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http_get(addr, target, &[])
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

fn rfc3339(t: SystemTime) -> String {
    sluice_record::format_time(t)
}

fn parse(s: &str) -> SystemTime {
    sluice_record::parse_time(s).unwrap()
}

/// Publishes the 12 s source once over RTMP and waits until its recording is complete.
fn record_source(server: &Server, path: &str) {
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-re", "-i"])
        .arg(source_flv())
        .args(["-c", "copy", "-f", "flv", &server.rtmp_url(path)])
        .stdin(Stdio::null())
        .status()
        .expect("ffmpeg");
    assert!(st.success());
    wait_until("the recording completes", Duration::from_secs(20), || {
        let (st, _, body) = get(server.api, &format!("/v1/recordings/{path}"));
        st == 200
            && json(&body)["segments"]
                .as_array()
                .is_some_and(|s| s.len() >= 2 && s.iter().all(|s| s["writing"] == false))
    });
}

/// ffprobe's packets of a file, with its format duration.
fn probe_file(file: &Path, extra: &[&str]) -> (Probe, f64) {
    let p = probe_interval_file(file, extra);
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .unwrap();
    let d = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0.0);
    (p, d)
}

fn probe_interval_file(file: &Path, extra: &[&str]) -> Probe {
    let out = Command::new("ffprobe")
        .args(["-hide_banner", "-v", "error"])
        .args(extra)
        .args([
            "-show_entries",
            "stream=codec_type,codec_name:packet=codec_type,pts_time,dts_time,flags",
        ])
        .args(["-of", "compact=p=1:nk=0"])
        .arg(file)
        .output()
        .expect("ffprobe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut streams = Vec::new();
    let mut packets = Vec::new();
    for line in stdout.lines() {
        let kv: std::collections::HashMap<&str, &str> = line
            .split('|')
            .skip(1)
            .filter_map(|f| f.split_once('='))
            .collect();
        let num = |k: &str| kv.get(k).and_then(|v| v.parse::<f64>().ok());
        if line.starts_with("packet|") {
            let Some(pts) = num("pts_time") else { continue };
            packets.push(Packet {
                video: kv.get("codec_type") == Some(&"video"),
                pts,
                dts: num("dts_time").unwrap_or(pts),
                key: kv.get("flags").is_some_and(|f| f.starts_with('K')),
            });
        } else if line.starts_with("stream|") {
            streams.push(StreamDesc {
                codec_type: kv.get("codec_type").unwrap_or(&"").to_string(),
                codec_name: kv.get("codec_name").unwrap_or(&"").to_string(),
                width: 0,
                height: 0,
                sample_rate: 0,
                channels: 0,
            });
        }
    }
    Probe {
        streams,
        packets,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `ffmpeg -ss AT -copyts`: the time of the first video frame it shows.
fn first_frame_after_seek(file: &Path, at: f64) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-copyts", "-ss", &at.to_string(), "-i"])
        .arg(file)
        .args([
            "-map",
            "0:v",
            "-frames:v",
            "1",
            "-vf",
            "showinfo",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("ffmpeg");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg -ss {at}: {err}");
    err.split("pts_time:")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no frame after seeking to {at}: {err}"))
}

/// The kinds of the top-level boxes of an MP4 file.
fn top_boxes(b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= b.len() {
        let mut size = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        if size == 1 {
            size = u64::from_be_bytes(b[at + 8..at + 16].try_into().unwrap()) as usize;
        }
        out.push(String::from_utf8_lossy(&b[at + 4..at + 8]).into_owned());
        if size < 8 {
            break;
        }
        at += size;
    }
    out
}

/// No gap of more than 1.5 frames between consecutive video decode times.
fn assert_no_video_gap(p: &Probe, what: &str) {
    let mut dts: Vec<f64> = p.packets.iter().filter(|p| p.video).map(|p| p.dts).collect();
    dts.sort_by(f64::total_cmp);
    for w in dts.windows(2) {
        assert!(
            w[1] - w[0] < 1.5 / 30.0,
            "{what}: video gap {:.3} -> {:.3}",
            w[0],
            w[1]
        );
    }
}

/// Plays `url` in Chromium (`hls` through hls.js, `mp4` in a plain `<video>`), seeks to `seek`.
fn play_in_chromium(mode: &str, url: &str, seek: f64) -> serde_json::Value {
    run_web_script("vod.mjs", &[mode, url, &seek.to_string()], &[], 90)
}

fn assert_played_and_seeked(r: &serde_json::Value, seek: f64, duration: f64, what: &str) {
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{what}: {r}");
    assert!(
        r["played"].as_f64().unwrap_or(0.0) > 1.0,
        "{what} did not play: {r}"
    );
    assert_eq!(r["width"], 640, "{what}: {r}");
    let d = r["duration"].as_f64().unwrap_or(0.0);
    assert!(
        (d - duration).abs() < 1.5,
        "{what}: duration {d}, expected about {duration}: {r}"
    );
    let after = r["after_seek"].as_f64().unwrap_or(0.0);
    assert!(
        after > seek + 0.5 && after < seek + 5.0,
        "{what}: after seeking to {seek}: {r}"
    );
}

#[test]
fn get_list_vod_and_api_across_two_segments() {
    if !require("ffmpeg") || !require("ffprobe") {
        return;
    }
    let dir = rec_dir("get");
    let server = Server::start_with(&[], Some(&config(&dir)));
    record_source(&server, "live/cam1");
    let pb = server.playback;

    // /list: one span of the published duration.
    let (st, _, body) = get(pb, "/list?path=live/cam1");
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let spans = json(&body);
    assert_eq!(spans.as_array().unwrap().len(), 1, "{spans}");
    let span_start = parse(spans[0]["start"].as_str().unwrap());
    let span_len = spans[0]["duration"].as_f64().unwrap();
    assert!((11.0..=12.5).contains(&span_len), "span of {span_len} s");

    // /get across the first segment boundary (5 s segments cut on the 2 s GOP: at 6 s).
    let (ask_at, ask_len) = (3.3, 6.0);
    let start = rfc3339(span_start + Duration::from_secs_f64(ask_at));
    let target = format!("/get?path=live/cam1&start={start}&duration={ask_len}");
    let (st, headers, mp4) = get(pb, &target);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&mp4));
    assert_eq!(header(&headers, "content-type"), Some("video/mp4"));
    assert_eq!(
        header(&headers, "content-length"),
        Some(mp4.len().to_string().as_str())
    );
    let file = dir.join("cut.mp4");
    std::fs::write(&file, &mp4).unwrap();
    let (p, duration) = probe_file(&file, &[]);
    assert_eq!(&top_boxes(&mp4)[..2], ["ftyp", "moov"]);
    let codecs: Vec<&str> = p.streams.iter().map(|s| s.codec_name.as_str()).collect();
    assert!(codecs.contains(&"h264") && codecs.contains(&"aac"), "{codecs:?}");
    // From the keyframe at or before the start (2 s GOP) to the fragment holding the end.
    assert!(
        duration >= ask_len - 0.1 && duration <= ask_len + 2.0 + 1.0 + 0.2,
        "duration {duration} for {ask_len} s asked"
    );
    assert!(p.starts_with_keyframe(), "first frame is not a keyframe");
    let frames = p.count(true) as f64;
    assert!(
        (frames - duration * 30.0).abs() <= 3.0,
        "{frames} frames in {duration} s"
    );
    assert!(
        p.count(false) as f64 >= duration * 46.0,
        "{} audio frames",
        p.count(false)
    );
    p.assert_monotonic();
    assert_no_video_gap(&p, "/get");
    let first_dts = p
        .packets
        .iter()
        .filter(|p| p.video)
        .map(|p| p.dts)
        .fold(f64::INFINITY, f64::min);
    assert!(first_dts.abs() < 0.1, "timeline starts at {first_dts}");
    // Seeking: ffmpeg -ss decodes from the keyframe before and shows the frame at the time
    // asked, inside the first file and past the boundary between the files.
    for at in [4.0, duration - 2.5] {
        let shown = first_frame_after_seek(&file, at);
        assert!(
            shown >= at - 0.01 && shown < at + 0.1,
            "seek to {at}: first frame at {shown}"
        );
    }

    // Range requests.
    let (st, h, part) = http_get(pb, &target, &[("Range", "bytes=100-1099")]);
    assert_eq!(st, 206);
    assert_eq!(part, mp4[100..1100]);
    assert_eq!(
        header(&h, "content-range").map(str::to_owned),
        Some(format!("bytes 100-1099/{}", mp4.len()))
    );
    let (st, _, tail) = http_get(pb, &target, &[("Range", "bytes=-5000")]);
    assert_eq!((st, &tail[..]), (206, &mp4[mp4.len() - 5000..]));
    let (st, _, _) = http_get(pb, &target, &[("Range", &format!("bytes={}-", mp4.len()))]);
    assert_eq!(st, 416);

    // format=mp4: the same range as a progressive MP4, its moov before its mdat.
    let (st, h, prog) = get(pb, &format!("{target}&format=mp4"));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&prog));
    assert_eq!(
        header(&h, "content-length"),
        Some(prog.len().to_string().as_str())
    );
    assert_eq!(top_boxes(&prog), ["ftyp", "moov", "mdat"]);
    let prog_file = dir.join("cut-progressive.mp4");
    std::fs::write(&prog_file, &prog).unwrap();
    let (pp, pd) = probe_file(&prog_file, &[]);
    assert!((pd - duration).abs() < 0.1, "mp4 lasts {pd} s, fmp4 {duration} s");
    assert_eq!(pp.count(true), p.count(true), "frames of mp4 and fmp4");
    assert_eq!(pp.count(false), p.count(false), "audio frames of mp4 and fmp4");
    assert!(pp.starts_with_keyframe());
    assert_no_video_gap(&pp, "format=mp4");
    for at in [4.0, pd - 2.5] {
        let shown = first_frame_after_seek(&prog_file, at);
        assert!(
            shown >= at - 0.01 && shown < at + 0.1,
            "mp4 seek to {at}: {shown}"
        );
    }
    let (st, _, part) = http_get(pb, &format!("{target}&format=mp4"), &[("Range", "bytes=5000-")]);
    assert_eq!((st, &part[..]), (206, &prog[5000..]));

    // The whole span: everything published.
    let whole = format!(
        "/get?path=live/cam1&start={}&duration={span_len}",
        rfc3339(span_start)
    );
    let (st, _, all) = get(pb, &whole);
    assert_eq!(st, 200);
    std::fs::write(dir.join("all.mp4"), &all).unwrap();
    let (p, d) = probe_file(&dir.join("all.mp4"), &[]);
    assert!((d - span_len).abs() < 0.2, "whole span: {d} s, listed {span_len}");
    assert_no_video_gap(&p, "whole span");
    assert!(p.count(true) >= 350, "{} frames of 360", p.count(true));

    // HLS VOD of the same range as the cut.
    let vod = format!("/vod.m3u8?path=live/cam1&start={start}&duration={ask_len}");
    let (st, h, m3u8) = get(pb, &vod);
    assert_eq!(st, 200);
    assert_eq!(header(&h, "content-type"), Some("application/vnd.apple.mpegurl"));
    let m3u8 = String::from_utf8(m3u8).unwrap();
    for tag in [
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-ENDLIST",
        "#EXT-X-VERSION:7",
        "#EXT-X-MAP:URI=",
        "#EXT-X-DISCONTINUITY",
    ] {
        assert!(m3u8.contains(tag), "{tag} missing:\n{m3u8}");
    }
    let listed: f64 = m3u8
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|l| l.trim_end_matches(',').parse::<f64>().unwrap())
        .sum();
    assert!(
        listed >= ask_len && listed <= ask_len + 4.0,
        "playlist lasts {listed} s:\n{m3u8}"
    );
    let hls_file = dir.join("hls.mp4");
    let st = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-i",
            &format!("http://{pb}{vod}"),
            "-c",
            "copy",
            "-y",
        ])
        .arg(&hls_file)
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg cannot read the VOD playlist:\n{m3u8}");
    let (p, d) = probe_file(&hls_file, &[]);
    assert!((d - listed).abs() < 0.5, "HLS read {d} s of {listed}");
    assert!(p.starts_with_keyframe());

    if have_hlsjs_browser() {
        let r = play_in_chromium("hls", &format!("http://{pb}{vod}"), listed - 3.0);
        assert_played_and_seeked(&r, listed - 3.0, listed, "hls.js");
        let r = play_in_chromium("mp4", &format!("http://{pb}{target}"), duration - 3.0);
        assert_played_and_seeked(&r, duration - 3.0, duration, "<video src=/get>");
        let r = play_in_chromium("mp4", &format!("http://{pb}{target}&format=mp4"), duration - 3.0);
        assert_played_and_seeked(&r, duration - 3.0, duration, "<video src=/get?format=mp4>");
    }

    // The API.
    let (st, _, body) = get(server.api, "/v1/recordings");
    assert_eq!(st, 200);
    let list = json(&body);
    let item = &list["items"][0];
    assert_eq!(item["path"], "live/cam1");
    let n = item["segments"].as_u64().unwrap();
    assert!(n >= 2, "{list}");
    let (st, _, body) = get(server.api, "/v1/recordings/live/cam1");
    assert_eq!(st, 200);
    let rec = json(&body);
    let segs = rec["segments"].as_array().unwrap().clone();
    assert_eq!(segs.len() as u64, n);
    for s in &segs {
        let f = s["file"].as_str().unwrap();
        assert!(f.starts_with("live/cam1/") && f.ends_with(".mp4"), "{f}");
        assert_eq!(s["complete"], true);
    }
    let total: f64 = segs.iter().map(|s| s["duration"].as_f64().unwrap()).sum();
    assert!((total - span_len).abs() < 0.2);

    // A listed file swapped for a symlink to a file outside is refused, never followed.
    let outside = dir
        .parent()
        .unwrap()
        .join(format!("outside-{}.mp4", std::process::id()));
    let victim = dir.join(segs[0]["file"].as_str().unwrap());
    std::fs::rename(&victim, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &victim).unwrap();
    let (st, _, body) = get(pb, &target);
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&body));
    let id = {
        let t = parse(segs[0]["start"].as_str().unwrap());
        t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_micros()
    };
    // (An init already served comes from what was read of the file then, never from the file
    // outside; the media always come from the file.)
    let t = format!("/vod/{id}/live/cam1/0-1.m4s");
    let (st, _, body) = get(pb, &t);
    assert_eq!(st, 403, "{t}: {}", String::from_utf8_lossy(&body));
    std::fs::remove_file(&victim).unwrap();
    std::fs::rename(&outside, &victim).unwrap();
    // The same with the path's directory swapped for a symlink to a directory outside.
    let cam = dir.join("live/cam1");
    let outside_dir = dir
        .parent()
        .unwrap()
        .join(format!("outside-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&outside_dir);
    std::fs::rename(&cam, &outside_dir).unwrap();
    std::os::unix::fs::symlink(&outside_dir, &cam).unwrap();
    let (st, _, body) = get(pb, &target);
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&body));
    let (st, _, _) = get(pb, &format!("/vod/{id}/live/cam1/0-1.m4s"));
    assert_eq!(st, 403);
    std::fs::remove_file(&cam).unwrap();
    std::fs::rename(&outside_dir, &cam).unwrap();

    // Deleting: one segment, then a range.
    let first = segs[0]["start"].as_str().unwrap();
    let (st, body) = delete(&server, &format!("/v1/recordings/live/cam1?segment={first}"));
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(body.as_bytes())["deleted"], 1);
    assert!(!victim.exists());
    let (st, _) = delete(&server, &format!("/v1/recordings/live/cam1?segment={first}"));
    assert_eq!(st, 404);
    let (st, body) = delete(
        &server,
        "/v1/recordings/live/cam1?start=2000-01-01T00:00:00Z&end=2100-01-01T00:00:00Z",
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(body.as_bytes())["deleted"].as_u64(), Some(n - 1));
    let (st, _, _) = get(pb, "/list?path=live/cam1");
    assert_eq!(st, 404);
}

fn delete(server: &Server, target: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(server.api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "DELETE {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_owned())
}

/// Every way out of the recording directory, on every endpoint, is a 4xx with the JSON error and
/// never a byte of the file outside; bad times and durations are 400.
#[test]
fn traversal_symlinks_and_bad_input_are_refused() {
    let dir = rec_dir("bad");
    // A file outside the recording directory, and a symlink to it planted where a recording of
    // `live/evil` would be, before the server scans the directory.
    let secret = dir
        .parent()
        .unwrap()
        .join(format!("secret-{}.txt", std::process::id()));
    std::fs::write(&secret, "SECRET-OUTSIDE").unwrap();
    std::fs::create_dir_all(dir.join("live/evil")).unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("live/evil/2026-01-01_00-00-00-000000.mp4")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("live/etc")).unwrap();
    let server = Server::start_with(&[], Some(&config(&dir)));
    let pb = server.playback;
    let t = "2026-01-01T00:00:00Z";
    let mut targets = Vec::new();
    for path in [
        "../../../../etc/passwd",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e/%2e%2e/etc/passwd",
        "%2E%2E%2F%2E%2E%2Fetc",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "live/../../etc",
        "live%2F..%2F..%2Fsecret",
        "live/./evil",
        "live//evil",
        "live/evil%00",
        "live\\..\\..\\etc",
    ] {
        targets.push(format!("/list?path={path}"));
        targets.push(format!("/get?path={path}&start={t}&duration=10"));
        targets.push(format!("/vod.m3u8?path={path}&start={t}&duration=10"));
        targets.push(format!("/vod/1767225600000000/{path}/init.mp4"));
        targets.push(format!("/vod/1767225600000000/{path}/0-1.m4s"));
    }
    // The planted symlinks are not recordings; nor are made-up identifiers.
    for path in ["live/evil", "live/etc"] {
        targets.push(format!("/list?path={path}"));
        targets.push(format!("/get?path={path}&start={t}&duration=10"));
        targets.push(format!("/vod.m3u8?path={path}&start={t}&duration=10"));
        targets.push(format!("/vod/1767225600000000/{path}/init.mp4"));
    }
    targets.extend([
        "/vod/../../../../etc/passwd".to_owned(),
        "/vod/%2e%2e/%2e%2e/etc/passwd".to_owned(),
        "/vod/1/live/cam1/init.mp4".to_owned(),
        "/vod/99999999999999999999/live/cam1/init.mp4".to_owned(),
        "/vod/18446744073709551615/live/cam1/init.mp4".to_owned(),
        "/vod/1767225600000000/live/cam1/1-0.m4s".to_owned(),
        "/vod/1767225600000000/live/cam1/../../../etc/passwd".to_owned(),
        "/vod/1767225600000000/live/cam1/init.mp4?path=/etc/passwd".to_owned(),
        "/../../../../etc/passwd".to_owned(),
    ]);
    for target in &targets {
        let (st, headers, body) = get(pb, target);
        let text = String::from_utf8_lossy(&body);
        assert!((400..500).contains(&st), "{target}: {st} {text}");
        assert!(
            !text.contains("SECRET") && !text.contains("root:"),
            "{target}: {text}"
        );
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/json"),
            "{target}"
        );
    }
    // The API's recordings endpoints too.
    for path in [
        "..%2F..%2Fetc",
        "%2e%2e/%2e%2e/etc",
        "live/../../etc",
        "%2Fetc",
        "live/evil",
        "live/etc",
    ] {
        let (st, _, body) = get(server.api, &format!("/v1/recordings/{path}"));
        assert!((400..500).contains(&st), "{path}: {st}");
        assert!(!String::from_utf8_lossy(&body).contains("SECRET"));
        let (st, _) = delete(
            &server,
            &format!("/v1/recordings/{path}?start={t}&end=2027-01-01T00:00:00Z"),
        );
        assert!((400..500).contains(&st), "DELETE {path}: {st}");
    }
    assert!(secret.exists(), "the file outside was deleted");

    // Bad times, durations and parameters: 400 with a reason.
    for q in [
        "start=yesterday&duration=10",
        "start=2026-13-01T00:00:00Z&duration=10",
        "start=1960-01-01T00:00:00Z&duration=10",
        "start=2026-01-01T00:00:00Z&duration=-5",
        "start=2026-01-01T00:00:00Z&duration=0",
        "start=2026-01-01T00:00:00Z&duration=NaN",
        "start=2026-01-01T00:00:00Z&duration=inf",
        "start=2026-01-01T00:00:00Z&duration=1e300",
        "start=2026-01-01T00:00:00Z&duration=90000",
        "start=2026-01-01T00:00:00Z&duration=ten",
        "start=2026-01-01T00:00:00Z",
        "duration=10",
        "start=2026-01-01T00:00:00Z&duration=10&bogus=1",
        "start=2026-01-01T00:00:00Z&duration=10&format=avi",
        "start=2026-01-01T00:00:00Z&duration=30000&format=mp4",
    ] {
        for ep in ["/get", "/vod.m3u8"] {
            if ep == "/vod.m3u8" && q.contains("format=") {
                continue;
            }
            let target = format!("{ep}?path=live/cam1&{q}");
            let (st, _, body) = get(pb, &target);
            let v = json(&body);
            assert_eq!(st, 400, "{target}: {v}");
            assert!(
                v["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{target}: {v}"
            );
        }
    }
    let (st, _, _) = get(
        pb,
        "/list?path=live/cam1&start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z",
    );
    assert_eq!(st, 400);
    // Well-formed but nothing recorded: 404.
    let (st, _, _) = get(pb, &format!("/get?path=live/cam1&start={t}&duration=10"));
    assert_eq!(st, 404);
    let (st, _, _) = get(pb, &format!("/vod.m3u8?path=live/cam1&start={t}&duration=10"));
    assert_eq!(st, 404);
    for q in [
        "",
        "?start=2026-01-01T00:00:00Z",
        "?segment=bad",
        "?start=x&end=y",
        "?bogus=1",
    ] {
        let (st, _) = delete(&server, &format!("/v1/recordings/live/cam1{q}"));
        assert!(st == 400 || st == 404, "DELETE ?{q}: {st}");
    }
    let _ = std::fs::remove_file(&secret);
}
