//! Push to real RTMP servers (nginx with libnginx-mod-rtmp): two destinations, one stopped and
//! started again, one throttled; what the others and Sluice's own viewers receive is untouched.
//! Push to srt-live-transmit over SRT, and to a second Sluice over WHIP (read back over WHEP in
//! Chromium and over RTMP; a wrong bearer token refused with the server's reason).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// What a viewer of an nginx destination checks: H.264 + AAC, every video frame from its first
/// keyframe on (nginx-rtmp starts a new player's audio at once and its video at the next
/// keyframe, so a fixed window of media time holds less video than audio), no gap.
fn assert_fluent(p: &Probe, what: &str) {
    assert_eq!(p.video().codec_name, "h264", "{what}: {p:?}");
    assert_eq!(p.audio().codec_name, "aac", "{what}");
    let v: Vec<f64> = p.packets.iter().filter(|p| p.video).map(|p| p.dts).collect();
    assert!(v.len() >= 30, "{what}: {} video frames", v.len());
    let span = v[v.len() - 1] - v[0];
    let expected = span * 30.0;
    assert!(
        v.len() as f64 >= expected * 0.95,
        "{what}: {} video frames over {span:.2} s of video",
        v.len()
    );
    let gap = v.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(gap < 0.2, "{what}: a {gap:.3} s gap in video");
    assert!(
        p.count(false) as f64 >= span * 46.0 * 0.9,
        "{what}: {} audio frames",
        p.count(false)
    );
}

fn push_config(urls: &[String], extra: &str) -> String {
    let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[path_defaults.push]\nurls = [{}]\nretry_min = \"500ms\"\nretry_max = \"2s\"\n{extra}\n",
        list.join(", ")
    )
}

fn get_json(url: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", url])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

const KEY_A: &str = "key-a-secret-0123456789";
const KEY_B: &str = "key-b-secret-9876543210";

/// Sluice pushes one path to two nginx-rtmp servers; both get the stream. One is stopped: the
/// other and Sluice's own viewers see no gap; it is started again and the push resumes by
/// itself within the backoff bound. Keys never appear in the log or the API.
#[test]
fn push_to_two_nginx_one_restarted() {
    if !have_nginx() {
        return;
    }
    let mut a = Nginx::start(free_port());
    let b = Nginx::start(free_port());
    let server = Server::start_with(&[], Some(&push_config(&[a.url(KEY_A), b.url(KEY_B)], "")));
    let _publisher = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    for (n, key) in [(&a, KEY_A), (&b, KEY_B)] {
        let p = probe(&n.url(key), 5);
        assert_fluent(&p, &format!("nginx {}", n.port));
        p.assert_monotonic();
    }
    let v = get_json(&server.api_url("v1/paths/live/cam"));
    let pushes = v["pushes"].as_array().cloned().unwrap_or_default();
    assert_eq!(pushes.len(), 2, "{v}");
    assert!(pushes.iter().all(|p| p["state"] == "live"), "{v}");

    // One destination goes away: the other and Sluice's viewers see no gap.
    assert!(a.stop(), "nginx did not stop");
    let other = std::thread::spawn({
        let url = b.url(KEY_B);
        move || probe(&url, 5)
    });
    let own = probe(&server.rtmp_url("live/cam"), 5);
    let other = other.join().unwrap();
    assert_source_stream(&own, 5, "Sluice's RTMP viewer");
    own.assert_monotonic();
    assert_fluent(&own, "Sluice's RTMP viewer");
    assert_fluent(&other, "the other nginx while one destination was down");
    other.assert_monotonic();
    let v = get_json(&server.api_url("v1/paths/live/cam"));
    let down: Vec<_> = v["pushes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] != "live")
        .cloned()
        .collect();
    assert_eq!(down.len(), 1, "{v}");
    assert!(down[0]["last_error"].is_string(), "{v}");

    // It comes back on the same port: the push resumes within the backoff bound (2 s + jitter).
    let back = Instant::now();
    let a2 = Nginx::start(a.port);
    wait_until("the push resumes", Duration::from_secs(10), || {
        get_json(&server.api_url("v1/paths/live/cam"))["pushes"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["state"] == "live"))
    });
    assert!(
        back.elapsed() < Duration::from_secs(6),
        "resumed after {:?}",
        back.elapsed()
    );
    let p = probe(&a2.url(KEY_A), 5);
    assert_fluent(&p, "the restarted nginx");
    let v = get_json(&server.api_url("v1/paths/live/cam"));
    let text = v.to_string();
    assert!(
        !text.contains("0123456789") && !text.contains("9876543210"),
        "a key in the API: {text}"
    );
    let log = server.log();
    assert!(
        !log.contains("0123456789") && !log.contains("9876543210"),
        "a key in the log"
    );
    assert!(log.contains("push failed"), "{log}");
    drop(b);
}

/// The publisher drops and comes back within the grace period: the push stays connected (no
/// reconnect, one RTMP session at nginx) and what nginx's viewer reads goes on with
/// timestamps that keep increasing, with no gap longer than the publisher's absence.
#[test]
fn push_stays_connected_across_a_publisher_restart() {
    if !have_nginx() {
        return;
    }
    let n = Nginx::start(free_port());
    let server = Server::start_with(
        &[("SLUICE_PATH_DEFAULTS_GRACE_PERIOD", "10s")],
        Some(&push_config(&[n.url(KEY_A)], "")),
    );
    let src = source_flv();
    let mut first = Publisher::rtmp(&src, &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    wait_until("the push is live", Duration::from_secs(20), || {
        push_state(&server, "live/cam")["state"] == "live"
    });
    let url = n.url(KEY_A);
    let reader = std::thread::spawn(move || probe(&url, 10));
    std::thread::sleep(Duration::from_secs(3));
    first.stop();
    let gone = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let _second = Publisher::rtmp(&src, &server.rtmp_url("live/cam"));
    let p = reader.join().unwrap();
    let absent = gone.elapsed().min(Duration::from_secs(3));
    assert_eq!(p.video().codec_name, "h264", "{p:?}");
    assert_eq!(p.audio().codec_name, "aac");
    p.assert_monotonic();
    let v: Vec<f64> = p.packets.iter().filter(|p| p.video).map(|p| p.dts).collect();
    assert!(v.len() >= 200, "{} video frames across the restart", v.len());
    let gap = v.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(
        gap < 3.0,
        "a {gap:.2} s jump in the pushed timestamps (publisher absent for less than {absent:?})"
    );
    let st = push_state(&server, "live/cam");
    assert_eq!(st["state"], "live", "{st}");
    assert_eq!(st["reconnects"], 0, "the push reconnected: {st}");
}

/// A TCP relay that forwards client → server at most `rate` bytes per second (and the other
/// way freely): a destination behind a slow link.
fn slow_relay(to: u16, rate: usize, stop: Arc<AtomicBool>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { break };
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            let (mut c2, mut s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n) = s2.read(&mut buf) {
                    if n == 0 || c2.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; (rate / 10).max(1)];
                while !stop.load(Ordering::Relaxed) {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
    });
    port
}

/// A destination throttled to a fraction of the bitrate loses frames to keyframes (or is
/// dropped and retried); the other destination and Sluice's viewers get everything.
#[test]
fn a_slow_destination_does_not_slow_the_others() {
    if !have_nginx() {
        return;
    }
    let slow = Nginx::start(free_port());
    let fast = Nginx::start(free_port());
    let stop = Arc::new(AtomicBool::new(false));
    // The source is about 1 Mb/s: the relay lets through 20 KB/s.
    let relay = slow_relay(slow.port, 20_000, stop.clone());
    let slow_url = format!("rtmp://127.0.0.1:{relay}/live/{KEY_A}");
    let server = Server::start_with(
        &[],
        Some(&push_config(
            &[slow_url, fast.url(KEY_B)],
            "stall_timeout = \"3s\"",
        )),
    );
    let _publisher = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    std::thread::sleep(Duration::from_secs(2));
    let other = std::thread::spawn({
        let url = fast.url(KEY_B);
        move || probe(&url, 6)
    });
    let own = probe(&server.rtmp_url("live/cam"), 6);
    let other = other.join().unwrap();
    assert_source_stream(&own, 6, "Sluice's RTMP viewer");
    own.assert_monotonic();
    assert_fluent(&own, "Sluice's RTMP viewer");
    assert_fluent(&other, "the fast nginx");
    other.assert_monotonic();
    // Once the socket buffers are full, the slow destination loses frames to keyframes (or is
    // dropped as stalled and retried).
    let slow_status = || {
        get_json(&server.api_url("v1/paths/live/cam"))["pushes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["url"].as_str().unwrap_or("").contains(&relay.to_string()))
            .cloned()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = slow_status();
        if s["dropped_frames"].as_u64().unwrap_or(0) > 0 || s["reconnects"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow destination neither dropped nor was retried: {s}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Meanwhile the fast destination and the viewers went on at full rate.
    let own = probe(&server.rtmp_url("live/cam"), 3);
    assert_fluent(&own, "Sluice's RTMP viewer, later");
    let other = probe(&fast.url(KEY_B), 4);
    assert_fluent(&other, "the fast nginx, later");
    stop.store(true, Ordering::Relaxed);
}

/// A destination added and another removed through the configuration API on a live path: the
/// destination that stays is not touched (no reconnect, no gap).
#[test]
fn destinations_added_and_removed_live() {
    if !have_nginx() {
        return;
    }
    let a = Nginx::start(free_port());
    let b = Nginx::start(free_port());
    let server = Server::start_with(&[], Some(&push_config(&[a.url(KEY_A)], "")));
    let _publisher = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    let patch = |urls: &[String]| {
        let body = serde_json::json!({"path_defaults": {"push": {"urls": urls}}}).to_string();
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-X", "PATCH"])
            .args(["-H", "content-type: application/json", "--data", &body])
            .arg(server.api_url("v1/config"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.ends_with("200"), "{text}");
        assert!(!text.contains("0123456789"), "a key in the answer: {text}");
    };
    let stays = std::thread::spawn({
        let url = a.url(KEY_A);
        move || probe(&url, 8)
    });
    std::thread::sleep(Duration::from_secs(2));
    patch(&[a.url(KEY_A), b.url(KEY_B)]);
    wait_until("the new destination is live", Duration::from_secs(10), || {
        get_json(&server.api_url("v1/paths/live/cam"))["pushes"]
            .as_array()
            .is_some_and(|p| p.len() == 2 && p.iter().all(|p| p["state"] == "live"))
    });
    let p = probe(&b.url(KEY_B), 3);
    assert_fluent(&p, "the added destination");
    // GET shows the URLs masked; sending them back as shown keeps them.
    let cfg = get_json(&server.api_url("v1/config"));
    let shown: Vec<String> = cfg["config"]["path_defaults"]["push"]["urls"]
        .as_array()
        .or_else(|| cfg["path_defaults"]["push"]["urls"].as_array())
        .map(|a| a.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    assert!(
        !shown.is_empty() && shown.iter().all(|u| u.contains("****")),
        "{cfg}"
    );
    patch(&shown[..1]);
    wait_until("the removed destination stops", Duration::from_secs(10), || {
        get_json(&server.api_url("v1/paths/live/cam"))["pushes"]
            .as_array()
            .is_some_and(|p| p.len() == 1)
    });
    let stays = stays.join().unwrap();
    assert_fluent(&stays, "the destination that stayed");
    stays.assert_monotonic();
    let v = get_json(&server.api_url("v1/paths/live/cam"));
    assert_eq!(v["pushes"][0]["reconnects"], 0, "{v}");
    assert_eq!(v["pushes"][0]["state"], "live", "{v}");
}

/// SRT push: srt-live-transmit listens, Sluice calls it and sends the path as MPEG-TS; what
/// srt-live-transmit writes out plays (H.264 + AAC, every frame).
#[test]
fn push_srt_to_srt_live_transmit() {
    if !require("ffmpeg") || !require("srt-live-transmit") {
        return;
    }
    let port = free_udp_port();
    let out = tmp_dir().join(format!("srt-push-{}.ts", std::process::id()));
    let file = std::fs::File::create(&out).unwrap();
    let mut slt = Command::new("timeout")
        .args([
            "12",
            "srt-live-transmit",
            &format!("srt://:{port}?mode=listener"),
            "file://con",
        ])
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("srt://127.0.0.1:{port}?streamid=from-sluice&latency=200000");
    let server = Server::start_with(&[], Some(&push_config(&[url], "")));
    let _publisher = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    wait_until("the SRT push is live", Duration::from_secs(10), || {
        get_json(&server.api_url("v1/paths/live/cam"))["pushes"][0]["state"] == "live"
    });
    let v = get_json(&server.api_url("v1/paths/live/cam"));
    assert_eq!(
        v["pushes"][0]["url"],
        format!("srt://127.0.0.1:{port}?****"),
        "{v}"
    );
    let _ = slt.wait();
    let p = probe(out.to_str().unwrap(), 100);
    assert_fluent(&p, "what srt-live-transmit received");
    let v: Vec<&Packet> = p.packets.iter().filter(|p| p.video).collect();
    assert!(v.len() >= 150, "{} video frames in ~10 s", v.len());
}

/// H.265 to an RTMP destination with enhanced RTMP off: refused with the reason (no connection
/// made), the path and its viewers untouched.
#[test]
fn hevc_refused_where_enhanced_rtmp_is_off() {
    if !have_nginx() {
        return;
    }
    let n = Nginx::start(free_port());
    let server = Server::start_with(&[], Some(&push_config(&[n.url(KEY_A)], "enhanced_rtmp = false")));
    let url = format!("srt://{}?streamid=publish:live/hevc", server.srt);
    let _publisher = Publisher::srt(&source_hevc_ts(), &url);
    wait_stream(&server, "live/hevc");
    wait_until("the push is refused", Duration::from_secs(10), || {
        get_json(&server.api_url("v1/paths/live/hevc"))["pushes"][0]["state"] == "refused"
    });
    let v = get_json(&server.api_url("v1/paths/live/hevc"));
    let why = v["pushes"][0]["last_error"].as_str().unwrap_or("").to_owned();
    assert!(why.contains("h265") && why.contains("enhanced RTMP"), "{v}");
    assert!(server.log().contains("push refused"), "{}", server.log());
    // The path's own viewers get the stream (over SRT: ffmpeg 5.1 reads no enhanced RTMP).
    let p = probe(&format!("srt://{}?streamid=read:live/hevc", server.srt), 2);
    assert_eq!(p.video().codec_name, "hevc");
    assert!(p.count(true) >= 40, "{} video frames", p.count(true));
}

/// Chromium and the playwright driver of the WebRTC tests (a WHEP viewer that reports what it
/// decoded).
fn have_chromium() -> bool {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let ok = std::path::Path::new("/usr/bin/chromium").exists()
        && dir.join("node_modules/playwright-core").exists();
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromium and playwright-core are required in CI; run scripts/install-test-deps.sh");
        }
        eprintln!("skipping: chromium or playwright-core missing (run scripts/install-test-deps.sh)");
    }
    ok
}

/// Watches a WHEP player page in headless Chromium for `seconds`: the driver's JSON result.
fn watch_whep(player_url: &str, seconds: u32) -> serde_json::Value {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/webrtc.mjs");
    let out = Command::new("timeout")
        .arg((seconds + 60).to_string())
        .arg("node")
        .arg(script)
        .args(["watch", player_url, &seconds.to_string()])
        .output()
        .expect("node");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .filter(|l| l.starts_with('{'))
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "the browser driver gave no result: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

fn push_state(server: &Server, path: &str) -> serde_json::Value {
    get_json(&server.api_url(&format!("v1/paths/{path}")))["pushes"][0].clone()
}

/// WHIP push: ffmpeg publishes H.264 + AAC over RTMP to Sluice A, whose path pushes to Sluice
/// B's WHIP endpoint with a bearer token. B has a WebRTC publisher with H.264 and Opus (A's
/// derived Opus), its bytes growing; B's RTMP viewers get the picture at full rate (ffprobe)
/// and a WHEP viewer in Chromium decodes it with sound. The token shows nowhere.
#[test]
fn push_whip_to_a_second_sluice() {
    if !require("ffmpeg") || !require("ffprobe") {
        return;
    }
    const TOKEN: &str = "whip-token-0123456789";
    // B pushes its WebRTC path (Opus audio) on to nginx-rtmp: RTMP carries AAC, the core's
    // derived track.
    let nginx = have_nginx().then(|| Nginx::start(free_port()));
    let b_push = nginx
        .as_ref()
        .map(|n| format!("[paths.\"live/x\".push]\nurls = [{:?}]\n", n.url("fromb")))
        .unwrap_or_default();
    let b = Server::start_with(
        &[],
        Some(&format!(
            "[paths.\"live/x\".access]\npublish_token = {TOKEN:?}\n{b_push}"
        )),
    );
    let whip = b.webrtc_url("live/x/whip");
    let a = Server::start_with(
        &[],
        Some(&push_config(
            std::slice::from_ref(&whip),
            &format!("bearer_token = {TOKEN:?}"),
        )),
    );
    // B-frames have no place in WebRTC (RTP carries no decode timestamps).
    let _publisher = Publisher::rtmp(&source_flv_no_bframes(), &a.rtmp_url("live/cam"));
    wait_stream(&a, "live/cam");
    wait_until("the WHIP push is live", Duration::from_secs(20), || {
        push_state(&a, "live/cam")["state"] == "live"
    });
    let st = push_state(&a, "live/cam");
    assert_eq!(st["url"], whip, "{st}");
    wait_stream(&b, "live/x");

    // B: a WebRTC publisher with H.264 640x360 and Opus, bytes growing.
    let path = get_json(&b.api_url("v1/paths/live/x"));
    assert_eq!(path["publisher"]["protocol"], "webrtc", "{path}");
    let tracks = path["tracks"].as_array().cloned().unwrap_or_default();
    let codecs: Vec<&str> = tracks.iter().filter_map(|t| t["codec"].as_str()).collect();
    assert_eq!(codecs, ["h264", "opus"], "{path}");
    let video = tracks.iter().find(|t| t["kind"] == "video").unwrap();
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(640), Some(360)),
        "{path}"
    );
    let (in0, sent0) = (
        path["bytes_in"].as_u64().unwrap_or(0),
        st["bytes_sent"].as_u64().unwrap_or(0),
    );
    std::thread::sleep(Duration::from_secs(2));
    let path = get_json(&b.api_url("v1/paths/live/x"));
    let st = push_state(&a, "live/cam");
    let (in1, sent1) = (
        path["bytes_in"].as_u64().unwrap_or(0),
        st["bytes_sent"].as_u64().unwrap_or(0),
    );
    // The source is about 1 Mb/s: 2 s is well over 100 KB each way.
    assert!(in1 > in0 + 100_000, "B received {in0} then {in1} bytes: {path}");
    assert!(sent1 > sent0 + 100_000, "A sent {sent0} then {sent1} bytes: {st}");

    // B's RTMP viewer: every frame of 5 s, at the source's resolution; Opus arrives as AAC.
    let p = probe(&b.rtmp_url("live/x"), 5);
    assert_eq!(p.video().codec_name, "h264", "{p:?}");
    assert_eq!((p.video().width, p.video().height), (640, 360));
    assert_eq!(p.audio().codec_name, "aac");
    p.assert_monotonic();
    let v = p.count(true);
    assert!(
        (135..=165).contains(&v),
        "{v} video frames in 5 s of B's RTMP stream"
    );
    let a_frames = p.count(false);
    assert!(a_frames >= 200, "{a_frames} audio frames in 5 s");
    let (v0, v1) = {
        let ts: Vec<f64> = p.packets.iter().filter(|p| p.video).map(|p| p.dts).collect();
        (ts[0], ts[ts.len() - 1])
    };
    assert!((4.5..=5.5).contains(&(v1 - v0)), "video spans {:.2} s", v1 - v0);

    // B's push of its Opus path to nginx-rtmp: H.264 and AAC, every frame, in order.
    if let Some(n) = &nginx {
        wait_until("B's push is live", Duration::from_secs(20), || {
            push_state(&b, "live/x")["state"] == "live"
        });
        let p = probe(&n.url("fromb"), 5);
        assert_eq!(p.video().codec_name, "h264", "{p:?}");
        assert_eq!(p.audio().codec_name, "aac", "Opus pushed over RTMP as AAC: {p:?}");
        assert_eq!((p.video().width, p.video().height), (640, 360));
        p.assert_monotonic();
        let v = p.count(true);
        assert!(v >= 120, "{v} video frames in 5 s from B's push");
        let a = p.count(false);
        assert!(a >= 180, "{a} AAC frames in 5 s from B's push");
    }

    // B's WHEP viewer (Chromium): H.264 decoded at 640x360 with Opus sound.
    if have_chromium() {
        let r = watch_whep(&b.webrtc_url("live/x/"), 5);
        assert_eq!(r["state"], "connected", "{r}");
        let frames = r["video"]["framesDecoded"].as_f64().unwrap_or(0.0);
        assert!(frames >= 100.0, "framesDecoded {frames} in 5 s: {r}");
        assert_eq!(r["video"]["width"].as_u64(), Some(640), "{r}");
        assert_eq!(r["video"]["height"].as_u64(), Some(360), "{r}");
        assert_eq!(r["audio"]["codec"], "audio/opus", "{r}");
        assert!(
            r["audio"]["packetsReceived"].as_f64().unwrap_or(0.0) >= 150.0,
            "{r}"
        );
    }

    // The token shows in no log or API answer of A.
    let cfg = get_json(&a.api_url("v1/config")).to_string();
    assert!(!cfg.contains("0123456789"), "the token in the config API: {cfg}");
    assert!(!a.log().contains("0123456789"), "the token in the log");
    assert!(!st.to_string().contains("0123456789"));
}

/// A WHIP destination that refuses the bearer token: the push retries with the server's
/// answer (401 and its reason) as `last_error`; the path and its viewers are untouched.
#[test]
fn push_whip_with_a_wrong_token_is_refused_clearly() {
    if !require("ffmpeg") {
        return;
    }
    let b = Server::start_with(
        &[],
        Some("[paths.\"live/x\".access]\npublish_token = \"the-right-token\"\n"),
    );
    let a = Server::start_with(
        &[],
        Some(&push_config(
            &[b.webrtc_url("live/x/whip")],
            "bearer_token = \"a-wrong-token-0123456789\"",
        )),
    );
    let _publisher = Publisher::rtmp(&source_flv_no_bframes(), &a.rtmp_url("live/cam"));
    wait_stream(&a, "live/cam");
    wait_until("the WHIP push fails", Duration::from_secs(15), || {
        push_state(&a, "live/cam")["last_error"].is_string()
    });
    let st = push_state(&a, "live/cam");
    let why = st["last_error"].as_str().unwrap();
    assert!(why.contains("401"), "{st}");
    assert!(why.contains("token"), "the server's reason is quoted: {st}");
    assert!(
        matches!(st["state"].as_str(), Some("retrying" | "connecting")),
        "{st}"
    );
    // It keeps trying with backoff (retry_min 500 ms, retry_max 2 s).
    wait_until("the WHIP push retries", Duration::from_secs(10), || {
        push_state(&a, "live/cam")["reconnects"].as_u64().unwrap_or(0) >= 2
    });
    assert!(b.log().contains("wrong token"), "{}", b.log());
    assert!(a.log().contains("push failed"), "{}", a.log());
    assert!(!a.log().contains("0123456789"), "the token in the log");
    // A's own viewers are untouched.
    let p = probe(&a.rtmp_url("live/cam"), 3);
    assert_eq!(p.video().codec_name, "h264");
    assert!(p.count(true) >= 80, "{} video frames in 3 s", p.count(true));
}

/// An HTTP relay in front of a WHIP endpoint that rewrites the answer's UDP candidate to a port
/// where nobody listens: the offer is answered, but ICE can never connect.
fn whip_relay_to_nowhere(to: std::net::SocketAddr, udp: u16) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { break };
            // The request: headers, then Content-Length bytes of body.
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            let body_start = loop {
                let Ok(n) = c.read(&mut buf) else { break None };
                if n == 0 {
                    break None;
                }
                req.extend_from_slice(&buf[..n]);
                if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(body_start) = body_start else { continue };
            let head = String::from_utf8_lossy(&req[..body_start]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while req.len() < body_start + len {
                let Ok(n) = c.read(&mut buf) else { break };
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            let Ok(mut s) = TcpStream::connect(to) else {
                continue;
            };
            let head = String::from_utf8_lossy(&req[..body_start])
                .replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&req[body_start..]);
            let mut resp = Vec::new();
            let _ = s.read_to_end(&mut resp);
            let Some(i) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let body =
                String::from_utf8_lossy(&resp[i + 4..]).replace(&format!(" {udp} typ host"), " 9 typ host");
            let head: String = String::from_utf8_lossy(&resp[..i])
                .lines()
                .filter(|l| {
                    !l.to_lowercase().starts_with("content-length:")
                        && !l.to_lowercase().starts_with("transfer-encoding:")
                })
                .map(|l| format!("{l}\r\n"))
                .collect();
            let _ = write!(c, "{head}Content-Length: {}\r\n\r\n{body}", body.len());
        }
    });
    port
}

/// A WHIP server whose answer names a candidate nothing answers on: ICE and DTLS do not
/// complete within connect_timeout, and the push says so and retries.
#[test]
fn push_whip_ice_timeout_is_reported() {
    if !require("ffmpeg") {
        return;
    }
    let b = Server::start_with(&[], Some("[paths.\"live/x\"]\n"));
    let relay = whip_relay_to_nowhere(b.webrtc, b.webrtc_udp.port());
    let url = format!("http://127.0.0.1:{relay}/live/x/whip");
    let a = Server::start_with(&[], Some(&push_config(&[url], "connect_timeout = \"2s\"")));
    let _publisher = Publisher::rtmp(&source_flv_no_bframes(), &a.rtmp_url("live/cam"));
    wait_stream(&a, "live/cam");
    wait_until("the WHIP push times out", Duration::from_secs(20), || {
        push_state(&a, "live/cam")["last_error"].is_string()
    });
    let st = push_state(&a, "live/cam");
    let why = st["last_error"].as_str().unwrap();
    assert!(why.contains("ICE and DTLS did not complete within 2s"), "{st}");
    assert!(
        matches!(st["state"].as_str(), Some("retrying" | "connecting")),
        "{st}"
    );
    // B's session was deleted (or timed out): no WebRTC publisher is left on live/x.
    wait_until("B has no publisher", Duration::from_secs(15), || {
        get_json(&b.api_url("v1/paths/live/x"))["publisher"].is_null()
    });
}

/// H.265 to a WHIP server that takes H.264 only (Sluice's WHIP ingest): the server's refusal
/// and its reason are the push's error, retried with backoff; the path's viewers are untouched.
#[test]
fn push_whip_h265_to_an_h264_only_server() {
    if !require("ffmpeg") || !require("ffprobe") {
        return;
    }
    let b = Server::start_with(&[], Some("[paths.\"live/x\"]\n"));
    let a = Server::start_with(&[], Some(&push_config(&[b.webrtc_url("live/x/whip")], "")));
    let url = format!("srt://{}?streamid=publish:live/hevc", a.srt);
    let _publisher = Publisher::srt(&source_hevc_ts(), &url);
    wait_stream(&a, "live/hevc");
    wait_until("the WHIP push fails", Duration::from_secs(15), || {
        push_state(&a, "live/hevc")["last_error"].is_string()
    });
    let st = push_state(&a, "live/hevc");
    let why = st["last_error"].as_str().unwrap();
    assert!(why.contains("400") && why.contains("H.264"), "{st}");
    let p = probe(&format!("srt://{}?streamid=read:live/hevc", a.srt), 2);
    assert_eq!(p.video().codec_name, "hevc");
    assert!(p.count(true) >= 40, "{} video frames", p.count(true));
}

/// Runs `openssl` with these whitespace-separated arguments in `dir`.
fn openssl(dir: &std::path::Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("openssl CLI (scripts/install-test-deps.sh)");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// nginx terminating TLS on `port` (a certificate for 127.0.0.1 from a CA of its own, in
/// `dir`/ca.pem) in front of the plain HTTP server `to`; stopped on drop.
fn nginx_tls_proxy(dir: &std::path::Path, port: u16, to: std::net::SocketAddr) -> Nginx {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
         -out ca.pem -days 2 -subj /CN=Sluice-WHIP-Test-CA \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key \
         -out server.csr -subj /CN=127.0.0.1",
    );
    openssl(
        dir,
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 7 -days 2 \
         -extfile ext.cnf -out server.pem",
    );
    let d = dir.display();
    let conf = format!(
        "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
         server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {d}/server.pem; ssl_certificate_key {d}/server.key;\n\
         location / {{ proxy_pass http://{to}; proxy_http_version 1.1; }} }} }}\n"
    );
    let child = spawn_nginx(dir, &conf);
    let n = Nginx { child, port };
    wait_listening("nginx listens", port);
    n
}

/// WHIP over HTTPS: the destination's certificate is checked against `ca_file` (a private CA:
/// the push goes live) or the system roots (the same server is refused with the reason).
#[test]
fn push_whip_over_https_with_a_private_ca() {
    if !have_nginx() {
        return;
    }
    let b = Server::start_with(&[], Some("[paths.\"live/*\"]\n"));
    let dir = tmp_dir().join(format!("whip-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let _tls = nginx_tls_proxy(&dir, port, b.webrtc);
    let url = |p: &str| format!("https://127.0.0.1:{port}/live/{p}/whip");
    let config = format!(
        "[paths.\"live/good\".push]\nurls = [{:?}]\nca_file = {:?}\nretry_min = \"500ms\"\nretry_max = \"2s\"\n\
         [paths.\"live/bad\".push]\nurls = [{:?}]\nretry_min = \"500ms\"\nretry_max = \"2s\"\n",
        url("good"),
        dir.join("ca.pem").display().to_string(),
        url("bad"),
    );
    let a = Server::start_with(&[], Some(&config));
    let _good = Publisher::rtmp(&source_flv_no_bframes(), &a.rtmp_url("live/good"));
    let _bad = Publisher::rtmp(&source_flv_no_bframes(), &a.rtmp_url("live/bad"));
    wait_stream(&a, "live/good");
    wait_stream(&a, "live/bad");
    wait_until("the push with the CA is live", Duration::from_secs(20), || {
        push_state(&a, "live/good")["state"] == "live"
    });
    wait_stream(&b, "live/good");
    let v = get_json(&b.api_url("v1/paths/live/good"));
    assert_eq!(v["publisher"]["protocol"], "webrtc", "{v}");
    wait_until("the push without the CA fails", Duration::from_secs(15), || {
        push_state(&a, "live/bad")["last_error"].is_string()
    });
    let st = push_state(&a, "live/bad");
    let why = st["last_error"].as_str().unwrap();
    assert!(why.contains("certificate"), "{st}");
    assert_ne!(st["state"], "live", "{st}");
    assert!(get_json(&b.api_url("v1/paths/live/bad"))["publisher"].is_null());
}

/// The WHIP server ends the push's session (B's publisher kicked through its API): the push
/// notices, reconnects with a new offer by itself, and B has a WebRTC publisher again.
#[test]
fn push_whip_resumes_after_the_server_ends_the_session() {
    if !require("ffmpeg") {
        return;
    }
    let b = Server::start_with(&[], Some("[paths.\"live/x\"]\n"));
    let a = Server::start_with(&[], Some(&push_config(&[b.webrtc_url("live/x/whip")], "")));
    let _publisher = Publisher::rtmp(&source_flv_no_bframes(), &a.rtmp_url("live/cam"));
    wait_stream(&a, "live/cam");
    wait_until("the WHIP push is live", Duration::from_secs(20), || {
        push_state(&a, "live/cam")["state"] == "live"
    });
    let first = get_json(&b.api_url("v1/paths/live/x"))["publisher"]["session"].clone();
    assert!(first.is_u64() || first.is_string(), "{first}");
    let id = first.to_string().trim_matches('"').to_owned();
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE"])
        .arg(b.api_url(&format!("v1/sessions/{id}")))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(code == "204" || code == "202", "kick: {code}");
    // Noticed at the latest after 10 s of silence (the ICE timeout), then retried.
    wait_until("a new WHIP session on B", Duration::from_secs(30), || {
        let p = get_json(&b.api_url("v1/paths/live/x"))["publisher"]["session"].clone();
        !p.is_null() && p != first
    });
    wait_until("the push is live again", Duration::from_secs(10), || {
        let st = push_state(&a, "live/cam");
        st["state"] == "live" && st["reconnects"].as_u64().unwrap_or(0) >= 1
    });
    let st = push_state(&a, "live/cam");
    assert!(st["last_error"].is_string(), "{st}");
    let p = probe(&b.rtmp_url("live/x"), 3);
    assert_eq!(p.video().codec_name, "h264");
    assert!(
        p.count(true) >= 80,
        "{} video frames in 3 s after the reconnect",
        p.count(true)
    );
}
