//! RTMP in, RTMP / HTTP-FLV / HLS (fMP4 and MPEG-TS) out, checked with ffprobe as a user would.

mod common;

use std::thread;
use std::time::Duration;

use common::*;

const CONFIG_TWO_VARIANTS: &str = r#"
[paths."live/*"]
[paths."ts/*".hls]
variant = "mpegts"
"#;

/// One publisher, read at once over RTMP, HTTP-FLV and HLS; a second path with HLS MPEG-TS.
#[test]
fn rtmp_publish_reads_on_every_protocol_and_two_paths() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(&[], Some(CONFIG_TWO_VARIANTS));
    let src = source_flv();
    let _a = Publisher::rtmp(&src, &server.rtmp_url("live/cam1"));
    let _b = Publisher::rtmp(&src, &server.rtmp_url("ts/cam2"));
    wait_stream(&server, "live/cam1");
    wait_stream(&server, "ts/cam2");

    let urls = [
        ("RTMP", server.rtmp_url("live/cam1")),
        ("HTTP-FLV", server.http_url("live/cam1.flv")),
        ("HLS fMP4", server.http_url("live/cam1/index.m3u8")),
        ("HLS MPEG-TS", server.http_url("ts/cam2/index.m3u8")),
        ("RTMP second path", server.rtmp_url("ts/cam2")),
    ];
    let probes: Vec<_> = urls
        .iter()
        .map(|(what, url)| {
            let url = url.clone();
            (*what, thread::spawn(move || probe(&url, 5)))
        })
        .collect();
    for (what, h) in probes {
        let p = h.join().unwrap();
        assert_source_stream(&p, 5, what);
    }
    // Publishing to a path that matches no [paths] table is refused.
    let mut refused = Publisher::rtmp(&src, &server.rtmp_url("other/cam3"));
    let st = refused
        .wait_exit(Duration::from_secs(15))
        .expect("publisher to an unconfigured path exits");
    assert!(!st.success());
    assert!(
        server.wait_log("not configured", Duration::from_secs(5)),
        "{}",
        server.log()
    );
}

#[test]
fn hls_playlists_and_headers() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(&[], Some(CONFIG_TWO_VARIANTS));
    let src = source_flv();
    let _a = Publisher::rtmp(&src, &server.rtmp_url("live/cam1"));
    let _b = Publisher::rtmp(&src, &server.rtmp_url("ts/cam2"));
    wait_stream(&server, "live/cam1");
    wait_stream(&server, "ts/cam2");
    for (path, ext) in [("live/cam1", ".m4s"), ("ts/cam2", ".ts")] {
        let origin = [("Origin", "http://example.com")];
        let (st, h, body) = http_get(server.http, &format!("/{path}/index.m3u8"), &origin);
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with("#EXTM3U"), "{text}");
        assert!(
            text.contains("CODECS=\"avc1.") && text.contains("mp4a.40.2"),
            "{text}"
        );
        assert!(text.contains("RESOLUTION=640x360"), "{text}");
        assert_eq!(header(&h, "content-type"), Some("application/vnd.apple.mpegurl"));
        assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));
        let media = text
            .lines()
            .find(|l| !l.starts_with('#') && l.ends_with(".m3u8"))
            .expect("media playlist URI");
        // Wait for a full window of 2 s segments.
        thread::sleep(Duration::from_secs(4));
        let (st, h, body) = http_get(server.http, &format!("/{path}/{media}"), &[]);
        assert_eq!(st, 200);
        let text = String::from_utf8(body).unwrap();
        let cache = header(&h, "cache-control").unwrap();
        assert!(cache.contains("max-age=1"), "playlist cache-control {cache}");
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{text}");
        assert!(text.contains("#EXT-X-TARGETDURATION:"), "{text}");
        let segs: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        assert!(segs.len() >= 2, "{text}");
        assert!(segs.iter().all(|s| s.ends_with(ext)), "{text}");
        // Segments are cut on keyframes: with a 2 s GOP every segment lasts about 2 s.
        for d in text.lines().filter_map(|l| l.strip_prefix("#EXTINF:")) {
            let d: f64 = d
                .trim_end_matches(',')
                .split(',')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1.9..=2.1).contains(&d), "segment of {d} s in\n{text}");
        }
        let (st, h, seg) = http_get(server.http, &format!("/{path}/{}", segs[0]), &[]);
        assert_eq!(st, 200);
        assert!(seg.len() > 1000);
        assert!(header(&h, "cache-control").unwrap().contains("immutable"));
        if ext == ".m4s" {
            assert!(text.contains("#EXT-X-MAP:URI="), "{text}");
        } else {
            assert_eq!(seg[0], 0x47, "MPEG-TS sync byte");
        }
    }
    let (st, _, body) = http_get(server.http, "/nope/index.m3u8", &[]);
    assert_eq!(st, 404);
    assert!(String::from_utf8_lossy(&body).contains("no stream"));
    let (st, h, body) = http_get(server.http, "/live/cam1/", &[]);
    assert_eq!(st, 200);
    assert!(header(&h, "content-type").unwrap().starts_with("text/html"));
    assert!(String::from_utf8_lossy(&body).contains("index.m3u8"));
}

#[test]
fn second_publisher_is_refused_first_untouched() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start();
    let src = source_flv();
    let mut first = Publisher::rtmp(&src, &server.rtmp_url("live/cam1"));
    wait_stream(&server, "live/cam1");
    let mut second = Publisher::rtmp(&src, &server.rtmp_url("live/cam1"));
    let st = second
        .wait_exit(Duration::from_secs(15))
        .expect("the second publisher is refused and exits");
    assert!(!st.success());
    assert!(
        server.wait_log("busy", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    assert!(first.is_running(), "first publisher still streaming");
    let p = probe(&server.rtmp_url("live/cam1"), 4);
    assert_source_stream(&p, 4, "RTMP after refusal");
}

/// The publisher drops and returns within the grace period: readers keep going, HLS marks a
/// discontinuity, timestamps stay monotonic.
#[test]
fn publisher_restart_keeps_readers() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(&[("SLUICE_PATH_DEFAULTS_GRACE_PERIOD", "10s")], None);
    let src = source_flv();
    let mut first = Publisher::rtmp(&src, &server.rtmp_url("live/cam1"));
    wait_stream(&server, "live/cam1");
    let url_rtmp = server.rtmp_url("live/cam1");
    let url_flv = server.http_url("live/cam1.flv");
    let rtmp_reader = thread::spawn(move || probe(&url_rtmp, 10));
    let flv_reader = thread::spawn(move || probe(&url_flv, 10));
    thread::sleep(Duration::from_secs(3));
    first.stop();
    thread::sleep(Duration::from_secs(1));
    let _second = Publisher::rtmp(&src, &server.rtmp_url("live/cam1"));
    for (what, h) in [("RTMP", rtmp_reader), ("HTTP-FLV", flv_reader)] {
        let p = h.join().unwrap();
        p.assert_monotonic();
        // 10 s of media minus the ~1.5 s gap while no one published.
        let v = p.count(true);
        assert!(v >= 200, "{what} reader got {v} video frames across the restart");
    }
    let (_, _, body) = http_get(server.http, "/live/cam1/stream.m3u8", &[]);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("#EXT-X-DISCONTINUITY"), "{text}");
}

#[test]
fn thirty_readers_at_once() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start();
    let _p = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam1"));
    wait_stream(&server, "live/cam1");
    let readers: Vec<_> = (0..30)
        .map(|i| {
            let url = if i % 2 == 0 {
                server.rtmp_url("live/cam1")
            } else {
                server.http_url("live/cam1.flv")
            };
            thread::spawn(move || probe(&url, 4))
        })
        .collect();
    for h in readers {
        let p = h.join().unwrap();
        assert_source_stream(&p, 4, "one of 30 readers");
    }
}

/// A reader that stops reading (SIGSTOP) does not reduce what another reader receives.
#[test]
fn stalled_reader_does_not_slow_others() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start();
    let _p = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam1"));
    wait_stream(&server, "live/cam1");
    let mut stalled: Vec<std::process::Child> =
        [server.rtmp_url("live/cam1"), server.http_url("live/cam1.flv")]
            .iter()
            .map(|url| {
                std::process::Command::new("ffmpeg")
                    .args(["-v", "quiet", "-i", url, "-c", "copy", "-f", "null", "-"])
                    .stdin(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
    thread::sleep(Duration::from_secs(1));
    for c in &stalled {
        std::process::Command::new("kill")
            .args(["-STOP", &c.id().to_string()])
            .status()
            .unwrap();
    }
    let p = probe(&server.rtmp_url("live/cam1"), 8);
    assert_source_stream(&p, 8, "reader next to stalled ones");
    for c in &mut stalled {
        let _ = c.kill();
        let _ = c.wait();
    }
}
