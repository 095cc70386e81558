//! WebRTC end to end against headless Chromium (Debian's, driven by playwright-core): WHEP
//! playback of an RTMP stream with sound, WHIP publish read back over RTMP and WHEP,
//! glass-to-glass delay, cleanup of a viewer that vanishes, bad offers, the audio conversion as
//! a derived track of the core (only while a WebRTC reader takes it, unseen by RTMP and HLS
//! readers), and keyframe requests across a WHIP publisher's restart.
//!
//! Each test re-runs itself inside a fresh network namespace that has only `lo`, so no ICE
//! candidate can reach another address (PEERS.md); without the privilege to create one it runs
//! on loopback with the server bound to 127.0.0.1 only.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn have_browser() -> bool {
    if !require("ffmpeg") {
        return false;
    }
    let ok = std::path::Path::new("/usr/bin/chromium").exists()
        && browser_dir().join("node_modules/playwright-core").exists();
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromium and playwright-core are required in CI; run scripts/install-test-deps.sh");
        }
        eprintln!("skipping: chromium or playwright-core missing (run scripts/install-test-deps.sh)");
    }
    ok
}

/// Runs the browser driver to completion and returns its JSON result.
fn browser(args: &[&str], timeout: Duration) -> serde_json::Value {
    let mut child = Command::new("timeout")
        .arg(timeout.as_secs().to_string())
        .arg("node")
        .arg(browser_dir().join("webrtc.mjs"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    let stdout = child.stdout.take().unwrap();
    let mut result = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        eprintln!("browser: {line}");
        if line.starts_with('{') {
            result = serde_json::from_str(&line).ok();
        }
    }
    let st = child.wait().unwrap();
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    result.unwrap_or_else(|| panic!("browser driver gave no result ({st}): {err}"))
}

/// Starts the browser driver in the background (a publisher); its output goes to our stderr.
fn browser_bg(args: &[&str], seconds: u64) -> std::process::Child {
    Command::new("timeout")
        .arg((seconds + 30).to_string())
        .arg("node")
        .arg(browser_dir().join("webrtc.mjs"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node")
}

/// ffmpeg publishing the B-frame-free H.264 + AAC source on `path` over RTMP, once it is live.
fn publish_rtmp(server: &Server, path: &str) -> Publisher {
    let p = Publisher::rtmp(&source_flv_no_bframes(), &server.rtmp_url(path));
    wait_stream(server, path);
    p
}

fn num(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_f64().unwrap_or(0.0)
}

#[test]
fn rtmp_to_whep_in_chromium_with_sound() {
    if !in_netns("rtmp_to_whep_in_chromium_with_sound") || !have_browser() {
        return;
    }
    let server = Server::start();
    let _publisher = publish_rtmp(&server, "live/cam1");
    let r = browser(
        &["watch", &server.webrtc_url("live/cam1/"), "6"],
        Duration::from_secs(60),
    );
    eprintln!("{r}");
    assert_eq!(r["state"], "connected", "{r}\n{}", server.log());
    let frames = num(&r, &["video", "framesDecoded"]);
    assert!(frames >= 60.0, "framesDecoded {frames} in 6 s\n{}", server.log());
    assert_eq!(num(&r, &["video", "width"]) as u32, 640);
    assert_eq!(num(&r, &["video", "height"]) as u32, 360);
    // Picture within one GOP (the source has a 2 s GOP; the cached one is sent at once).
    let first = num(&r, &["firstFrameMs"]);
    assert!(first > 0.0 && first < 2500.0, "first frame after {first} ms");
    // Sound: the AAC source arrives as Opus with a non-zero level.
    assert_eq!(r["audio"]["codec"], "audio/opus", "{r}");
    assert!(num(&r, &["audio", "packetsReceived"]) >= 200.0, "{r}");
    assert!(num(&r, &["audio", "totalAudioEnergy"]) > 0.0, "silent audio: {r}");
    let log = server.log();
    assert!(log.contains("WebRTC peer connected"), "{log}");
}

#[test]
fn whip_from_chromium_to_rtmp_and_whep() {
    if !in_netns("whip_from_chromium_to_rtmp_and_whep") || !have_browser() {
        return;
    }
    let server = Server::start();
    let publisher = browser_bg(&["publish", &server.webrtc_url("live/web/publish"), "18"], 18);
    assert!(
        server.wait_log("WHIP stream starts", Duration::from_secs(20)),
        "no WHIP stream:\n{}",
        server.log()
    );
    // Read back over RTMP: H.264 video and AAC audio, frames keep coming.
    let p = probe(&server.rtmp_url("live/web"), 4);
    assert_eq!(p.video().codec_name, "h264", "{}", server.log());
    assert_eq!(p.audio().codec_name, "aac");
    assert!(p.video().width >= 320, "width {}", p.video().width);
    assert!(p.count(true) >= 40, "{} video frames in 4 s", p.count(true));
    assert!(p.count(false) >= 100, "{} audio frames in 4 s", p.count(false));
    // And over WHEP in a second Chromium.
    let r = browser(
        &["watch", &server.webrtc_url("live/web/"), "5"],
        Duration::from_secs(60),
    );
    eprintln!("{r}");
    assert_eq!(r["state"], "connected", "{r}");
    assert!(num(&r, &["video", "framesDecoded"]) >= 40.0, "{r}");
    assert!(num(&r, &["audio", "packetsReceived"]) >= 100.0, "{r}");
    assert!(num(&r, &["audio", "totalAudioEnergy"]) > 0.0, "{r}");
    // WebRTC readers of a WebRTC publisher get its own Opus from the core: no derived Opus
    // track (the RTMP reader above made the core derive AAC, and only that).
    let log = server.log();
    assert_eq!(derived_starts(&log, "opus"), 0, "{log}");
    assert_eq!(derived_starts(&log, "aac"), 1, "{log}");
    // The publisher stayed connected all along (its driver reports the state at its end).
    let out = publisher.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    eprintln!("publisher: {out}");
    assert!(
        out.contains(r#"{"state":"connected""#),
        "publisher: {out}\n{}",
        server.log()
    );
}

#[test]
fn ice_tcp_when_udp_is_blocked() {
    if !in_netns("ice_tcp_when_udp_is_blocked") || !have_browser() {
        return;
    }
    if std::env::var("TEST_IN_NETNS").is_err() {
        eprintln!("skipping: blocking UDP needs the test's own network namespace");
        return;
    }
    let server = Server::start();
    // Drop every UDP packet to or from the server's media port in this namespace.
    let port = server.webrtc_udp.port().to_string();
    for cmd in [
        vec!["add", "table", "inet", "blockudp"],
        vec![
            "add",
            "chain",
            "inet",
            "blockudp",
            "out",
            "{ type filter hook output priority 0; }",
        ],
        vec![
            "add", "rule", "inet", "blockudp", "out", "udp", "dport", &port, "drop",
        ],
        vec![
            "add", "rule", "inet", "blockudp", "out", "udp", "sport", &port, "drop",
        ],
    ] {
        let st = Command::new("nft")
            .args(&cmd)
            .status()
            .expect("nft (scripts/install-test-deps.sh)");
        assert!(st.success(), "nft {cmd:?}");
    }
    let _publisher = publish_rtmp(&server, "live/cam1");
    let r = browser(
        &["watch", &server.webrtc_url("live/cam1/"), "6"],
        Duration::from_secs(60),
    );
    eprintln!("{r}");
    assert_eq!(r["state"], "connected", "{r}\n{}", server.log());
    assert!(num(&r, &["video", "framesDecoded"]) >= 60.0, "{r}");
    assert!(num(&r, &["audio", "packetsReceived"]) >= 100.0, "{r}");
    let log = server.log();
    assert!(log.contains("with protocol Tcp"), "not over TCP:\n{log}");
}

/// Runs `nft` rules in the test's namespace (only called inside it).
fn nft(rules: &[Vec<&str>]) {
    for cmd in rules {
        let st = Command::new("nft")
            .args(cmd)
            .status()
            .expect("nft (scripts/install-test-deps.sh)");
        assert!(st.success(), "nft {cmd:?}");
    }
}

#[test]
fn whep_recovers_from_loss_with_nack() {
    if !in_netns("whep_recovers_from_loss_with_nack") || !have_browser() {
        return;
    }
    if std::env::var("TEST_IN_NETNS").is_err() {
        eprintln!("skipping: dropping packets needs the test's own network namespace");
        return;
    }
    let server = Server::start();
    // 3% of the server's media packets are lost on the way to the browser.
    let port = server.webrtc_udp.port().to_string();
    nft(&[
        vec!["add", "table", "inet", "lossy"],
        vec![
            "add",
            "chain",
            "inet",
            "lossy",
            "out",
            "{ type filter hook output priority 0; }",
        ],
        vec![
            "add", "rule", "inet", "lossy", "out", "udp", "sport", &port, "numgen", "random", "mod", "100",
            "<", "3", "drop",
        ],
    ]);
    let _publisher = publish_rtmp(&server, "live/cam1");
    let r = browser(
        &["watch", &server.webrtc_url("live/cam1/"), "8"],
        Duration::from_secs(60),
    );
    eprintln!("{r}");
    assert_eq!(r["state"], "connected", "{r}\n{}", server.log());
    // The browser asked for the lost packets again and the server resent them: the picture
    // keeps going (30 fps source) without falling back to keyframe requests.
    assert!(
        num(&r, &["video", "nackCount"]) > 0.0,
        "no NACK sent at 3% loss: {r}"
    );
    assert!(num(&r, &["video", "framesDecoded"]) >= 150.0, "{r}");
    assert!(num(&r, &["audio", "packetsReceived"]) >= 200.0, "{r}");
}

#[test]
fn whip_vp9_from_chromium_to_whep_and_hls() {
    if !in_netns("whip_vp9_from_chromium_to_whep_and_hls") || !have_browser() {
        return;
    }
    let server = Server::start();
    let publisher = browser_bg(
        &["publish", &server.webrtc_url("live/vp9/publish?codec=VP9"), "16"],
        16,
    );
    assert!(
        server.wait_log("WHIP stream starts", Duration::from_secs(20)),
        "no WHIP stream:\n{}",
        server.log()
    );
    // The publisher's own tracks: VP9 and Opus (HLS below gets AAC derived by the core).
    assert!(server.log().contains("tracks=vp9+opus"), "{}", server.log());
    let r = browser(
        &["watch", &server.webrtc_url("live/vp9/"), "5"],
        Duration::from_secs(60),
    );
    eprintln!("{r}");
    assert_eq!(r["state"], "connected", "{r}");
    assert!(num(&r, &["video", "framesDecoded"]) >= 30.0, "{r}");
    // HLS (fMP4) carries VP9 too.
    let p = probe(&server.http_url("live/vp9/index.m3u8"), 3);
    assert_eq!(p.video().codec_name, "vp9", "{}", server.log());
    assert_eq!(p.audio().codec_name, "aac");
    let out = publisher.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#"{"state":"connected""#));
}

#[test]
fn whep_ice_restart_keeps_playing() {
    if !in_netns("whep_ice_restart_keeps_playing") || !have_browser() {
        return;
    }
    let server = Server::start();
    let _publisher = publish_rtmp(&server, "live/cam1");
    let r = browser(
        &["restart", &server.webrtc_url("live/cam1/"), "4"],
        Duration::from_secs(60),
    );
    eprintln!("{r}");
    assert_eq!(r["restart"], 200, "{r}\n{}", server.log());
    let log = server.log();
    assert!(log.contains("WebRTC ICE restart"), "{log}");
    // The new credentials were checked and a new pair nominated (str0m's log).
    assert!(log.matches("Force success nominated pair").count() >= 2, "{log}");
    assert_eq!(r["state"], "connected", "{r}");
    // Frames kept coming after the restart (30 fps source, 4 s).
    let gained = num(&r, &["after"]) - num(&r, &["before"]);
    assert!(gained >= 60.0, "{gained} frames after the ICE restart: {r}");
}

#[test]
fn whip_from_gstreamer_webrtcbin() {
    if !in_netns("whip_from_gstreamer_webrtcbin") || !require("ffmpeg") {
        return;
    }
    let have_gst = Command::new("/usr/bin/python3")
        .args(["-c", "import gi; gi.require_version('GstWebRTC', '1.0')"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_gst {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("GStreamer and python3-gi are required in CI; run scripts/install-test-deps.sh");
        }
        eprintln!("skipping: GStreamer/python3-gi missing");
        return;
    }
    // GStreamer's default DTLS certificate is RSA; str0m's DTLS takes ECDSA only.
    let dir = tmp_dir().join(format!("gst-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert, pem) = (dir.join("k.pem"), dir.join("c.pem"), dir.join("ec.pem"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "2", "-subj", "/CN=gst-whip"])
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success());
    let both = std::fs::read_to_string(&cert).unwrap() + &std::fs::read_to_string(&key).unwrap();
    std::fs::write(&pem, both).unwrap();

    let server = Server::start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/gst/whip_publish.py");
    // 26 s: past the ~15 s after which a pair whose peer sends no more connectivity checks
    // (libnice keeps it alive with indications) lapses on our ICE-lite side.
    let publisher = Command::new("timeout")
        .args(["60", "/usr/bin/python3"])
        .arg(script)
        .arg(server.webrtc_url("live/gst/whip"))
        .arg("26")
        .arg(&pem)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    assert!(
        server.wait_log("WHIP stream starts", Duration::from_secs(15)),
        "GStreamer did not get a stream going:\n{}",
        server.log()
    );
    let p = probe(&server.rtmp_url("live/gst"), 4);
    assert_eq!(p.video().codec_name, "h264", "{}", server.log());
    assert_eq!(p.video().width, 640);
    assert_eq!(p.audio().codec_name, "aac");
    assert!(p.count(true) >= 60, "{} video frames in 4 s", p.count(true));
    assert!(p.count(false) >= 100, "{} audio frames in 4 s", p.count(false));
    // Still publishing 20 s in.
    std::thread::sleep(Duration::from_secs(12));
    let p = probe(&server.rtmp_url("live/gst"), 3);
    assert!(
        p.count(true) >= 45,
        "{} video frames in 3 s, 20 s in\n{}",
        p.count(true),
        server.log()
    );
    let out = publisher.wait_with_output().unwrap();
    assert!(!server.log().contains("ICE disconnected"), "{}", server.log());
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("whip 201") && out.contains("done completed"),
        "{out}"
    );
}

#[test]
fn glass_to_glass_delay() {
    if !in_netns("glass_to_glass_delay") || !have_browser() {
        return;
    }
    let server = Server::start();
    let r = browser(
        &["glass", &format!("http://{}", server.webrtc), "live/glass", "6"],
        Duration::from_secs(60),
    );
    eprintln!("glass-to-glass (WHIP → Sluice → WHEP, Chromium encode and decode included): {r}");
    assert!(num(&r, &["frames"]) >= 30.0, "{r}\n{}", server.log());
    let p50 = num(&r, &["p50"]);
    // The goal is under 200 ms added by the server; the whole chain (capture, encode, jitter
    // buffer, decode, render) must stay well under half a second on loopback.
    assert!(p50 < 400.0, "glass-to-glass p50 {p50} ms");
}

#[test]
fn vanished_viewer_is_cleaned_up_after_ice_timeout() {
    if !in_netns("vanished_viewer_is_cleaned_up_after_ice_timeout") || !have_browser() {
        return;
    }
    let server = Server::start_with(&[("SLUICE_WEBRTC_ICE_TIMEOUT", "3s")], None);
    let _publisher = publish_rtmp(&server, "live/cam1");
    // The browser watches for 3 s and is then killed: no DELETE is sent.
    let r = browser(
        &["watch", &server.webrtc_url("live/cam1/"), "3"],
        Duration::from_secs(40),
    );
    assert_eq!(r["state"], "connected", "{r}");
    let start = Instant::now();
    assert!(
        server.wait_log("(ICE timeout)", Duration::from_secs(15)),
        "the session was not closed:\n{}",
        server.log()
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn bad_offers_get_clear_errors() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start();
    let post = |path: &str, ct: &str, body: &str| {
        http_request(
            server.webrtc,
            "POST",
            path,
            &[("Content-Type", ct)],
            body.as_bytes(),
        )
    };
    // Not SDP at all.
    let (code, body) = post("/live/x/whip", "application/sdp", "hello");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("malformed SDP offer"), "{body}");
    // Wrong content type.
    let (code, _) = post("/live/x/whip", "text/plain", "v=0");
    assert_eq!(code, 415);
    // WHEP of a path nobody publishes.
    let (code, body) = post("/live/none/whep", "application/sdp", OFFER_H264_OPUS);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("no stream"), "{body}");
    // A video offer with a codec WHIP does not ingest.
    let av1 = OFFER_H264_OPUS.replace("H264/90000", "AV1/90000");
    let (code, body) = post("/live/x/whip", "application/sdp", &av1);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("H.264, VP9 or VP8"), "{body}");
    // A good offer is answered, and DELETE ends it; a second DELETE finds nothing.
    let (code, body, headers) = http_request_full(
        server.webrtc,
        "POST",
        "/live/x/whip",
        &[("Content-Type", "application/sdp")],
        OFFER_H264_OPUS.as_bytes(),
    );
    assert_eq!(code, 201, "{body}\n{}", server.log());
    assert!(body.contains("a=ice-lite"), "{body}");
    assert!(body.contains("a=candidate:"), "{body}");
    let loc = header(&headers, "location").unwrap().to_owned();
    assert!(loc.starts_with("/live/x/whip/"), "{loc}");
    // A second publisher on the same path is refused.
    let (code, body) = post("/live/x/whip", "application/sdp", OFFER_H264_OPUS);
    assert_eq!(code, 409, "{body}");
    // A bogus trickle candidate is refused; a restart is refused with 422.
    let frag = |b: &str| {
        http_request(
            server.webrtc,
            "PATCH",
            &loc,
            &[("Content-Type", "application/trickle-ice-sdpfrag")],
            b.as_bytes(),
        )
    };
    let (code, body) = frag("a=candidate:garbage\r\n");
    assert_eq!(code, 400, "{body}");
    // An ICE restart without the new password is refused; with it, answered with ours.
    let (code, _) = frag("a=ice-ufrag:new1\r\n");
    assert_eq!(code, 400);
    let (code, body) = frag("a=ice-ufrag:new1\r\na=ice-pwd:newpasswordnewpassword12\r\n");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("a=ice-ufrag:") && body.contains("a=ice-pwd:") && body.contains("a=candidate:"),
        "{body}"
    );
    let (code, _) = frag("a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n");
    assert_eq!(code, 204);
    let (code, _) = http_request(server.webrtc, "DELETE", &loc, &[], b"");
    assert_eq!(code, 200);
    let (code, _) = http_request(server.webrtc, "DELETE", &loc, &[], b"");
    assert_eq!(code, 404);
    // Garbage on the shared UDP port disturbs nothing.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..2000u32 {
        let mut junk = vec![0u8; 100];
        junk[0] = (i % 256) as u8;
        junk[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        let _ = sock.send_to(&junk, server.webrtc_udp);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (code, _) = post("/live/y/whip", "application/sdp", OFFER_H264_OPUS);
    assert_eq!(code, 201, "{}", server.log());
}

#[test]
fn whip_and_whep_tokens_are_checked() {
    let config = r#"
[webrtc]
ice_servers = ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp"]
ice_servers_user = "u"
ice_servers_pass = "p"

[paths."live/secure".access]
publish_token = "s3cret"
read_token = "watch"

[paths."live/*"]
"#;
    let server = Server::start_with(&[], Some(config));
    let post = |path: &str, auth: Option<&str>| {
        let mut h = vec![("Content-Type", "application/sdp")];
        if let Some(a) = auth {
            h.push(("Authorization", a));
        }
        http_request_full(server.webrtc, "POST", path, &h, OFFER_H264_OPUS.as_bytes())
    };
    let (code, body, headers) = post("/live/secure/whip", None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("needs a token"), "{body}");
    assert_eq!(
        header(&headers, "www-authenticate"),
        Some("Bearer realm=\"sluice\"")
    );
    let (code, _, _) = post("/live/secure/whip", Some("Bearer wrong"));
    assert_eq!(code, 401);
    // The read token does not let anyone publish.
    let (code, _, _) = post("/live/secure/whip", Some("Bearer watch"));
    assert_eq!(code, 401);
    // OBS sends Bearer; Basic works with the token as the password ("obs:s3cret").
    let (code, body, headers) = post("/live/secure/whip", Some("Bearer s3cret"));
    assert_eq!(code, 201, "{body}\n{}", server.log());
    let loc = header(&headers, "location").unwrap().to_owned();
    assert_eq!(http_request(server.webrtc, "DELETE", &loc, &[], b"").0, 200);
    let (code, body, _) = post("/live/secure/whip", Some("Basic b2JzOnMzY3JldA=="));
    assert_eq!(code, 201, "{body}");
    // Other paths ask for nothing. The answer names the STUN/TURN servers (RFC 9725 Link).
    let (code, body, headers) = post("/live/open/whip", None);
    assert_eq!(code, 201, "{body}");
    let links: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "link")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(links.len(), 2, "{headers:?}");
    assert_eq!(links[0], r#"<stun:127.0.0.1:3478>; rel="ice-server""#);
    assert!(
        links[1].contains(r#"username="u"; credential="p""#),
        "{}",
        links[1]
    );
    // The pages get them too.
    let (code, page, _) = http_request_full(server.webrtc, "GET", "/live/open/", &[], b"");
    assert_eq!(code, 200);
    assert!(page.contains(r#"{"urls":"stun:127.0.0.1:3478"}"#), "{page}");
    // And a path no table matches is not configured: 403.
    let (code, body, _) = post("/other/x/whip", None);
    assert_eq!(code, 403, "{body}");
    assert!(server.log().contains("WebRTC publish refused: wrong token"));
}

/// Lines of the server's log announcing a derived track in `codec` ("derived track starts").
fn derived_starts(log: &str, codec: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("derived track starts") && l.contains(&format!("to={codec}")))
        .count()
}

fn derived_stops(log: &str) -> usize {
    log.matches("derived track stops").count()
}

/// The codecs of `path`'s derived tracks, from the API.
fn api_derived(server: &Server, path: &str) -> Vec<String> {
    let (st, _, body) = http_get(server.api, &format!("/v1/paths/{path}"), &[]);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["derived"]
        .as_array()
        .unwrap_or_else(|| panic!("no derived field: {v}"))
        .iter()
        .map(|t| t["codec"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// POSTs a WHEP offer without a browser (the session is admitted and reads the path, the
/// peer never connects); returns the session's resource URL.
fn whep_offer(server: &Server, path: &str) -> String {
    let offer = OFFER_H264_OPUS.replace("a=sendonly", "a=recvonly");
    let (code, body, headers) = http_request_full(
        server.webrtc,
        "POST",
        &format!("/{path}/whep"),
        &[("Content-Type", "application/sdp")],
        offer.as_bytes(),
    );
    assert_eq!(code, 201, "{body}\n{}", server.log());
    assert!(
        body.contains("opus/48000/2") && body.contains("H264/90000"),
        "{body}"
    );
    header(&headers, "location").unwrap().to_owned()
}

#[test]
fn whep_readers_of_a_path_share_one_audio_converter() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start();
    let _publisher = publish_rtmp(&server, "live/cam1");
    assert!(api_derived(&server, "live/cam1").is_empty());
    let sessions: Vec<String> = (0..3).map(|_| whep_offer(&server, "live/cam1")).collect();
    let log = server.log();
    assert_eq!(derived_starts(&log, "opus"), 1, "{log}");
    assert_eq!(api_derived(&server, "live/cam1"), ["opus"]);
    for s in &sessions {
        assert_eq!(http_request(server.webrtc, "DELETE", s, &[], b"").0, 200);
    }
    // The last reader gone, the conversion stops.
    assert!(
        server.wait_log("derived track stops", Duration::from_secs(3)),
        "{}",
        server.log()
    );
    assert!(api_derived(&server, "live/cam1").is_empty());
}

/// The AAC→Opus conversion of a path runs only while a WebRTC reader takes it, and an RTMP
/// reader and the HLS packager of that path see nothing of it: one stream, every frame,
/// monotonic timestamps, no HLS discontinuity or second init segment.
#[test]
fn aac_to_opus_only_while_webrtc_reads_and_unseen_by_rtmp_and_hls() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start();
    let _publisher = publish_rtmp(&server, "live/cam1");
    let url = server.rtmp_url("live/cam1");
    let reader = std::thread::spawn(move || probe(&url, 10));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        api_derived(&server, "live/cam1").is_empty(),
        "no WebRTC reader yet"
    );
    assert_eq!(derived_starts(&server.log(), "opus"), 0);
    // A WHEP viewer joins: the conversion starts.
    let session = whep_offer(&server, "live/cam1");
    assert_eq!(api_derived(&server, "live/cam1"), ["opus"]);
    assert_eq!(derived_starts(&server.log(), "opus"), 1);
    std::thread::sleep(Duration::from_secs(3));
    // It leaves: the conversion stops.
    assert_eq!(http_request(server.webrtc, "DELETE", &session, &[], b"").0, 200);
    assert!(
        server.wait_log("derived track stops", Duration::from_secs(3)),
        "{}",
        server.log()
    );
    assert!(api_derived(&server, "live/cam1").is_empty());
    assert_eq!(derived_stops(&server.log()), 1);

    // The RTMP reader ran across both: one video and one audio stream, no frame missing.
    let p = reader.join().unwrap();
    let what = "RTMP reader across a WHEP viewer joining and leaving";
    assert_eq!(p.streams.len(), 2, "{what}: {:?}", p.streams);
    assert_source_stream(&p, 10, what);
    assert_every_frame(&p, 30.0, what);
    let mut audio: Vec<f64> = p.packets.iter().filter(|p| !p.video).map(|p| p.dts).collect();
    audio.sort_by(|a, b| a.total_cmp(b));
    let aac_frame = 1024.0 / 48000.0;
    let gaps: Vec<_> = audio
        .windows(2)
        .filter(|w| w[1] - w[0] > aac_frame * 1.5)
        .collect();
    assert!(gaps.is_empty(), "{what}: audio gaps {gaps:?}");

    // HLS: one init segment, no discontinuity.
    let (st, _, body) = http_get(server.http, "/live/cam1/index.m3u8", &[]);
    assert_eq!(st, 200);
    let text = String::from_utf8(body).unwrap();
    let media = text
        .lines()
        .find(|l| !l.starts_with('#') && l.ends_with(".m3u8"))
        .expect("media playlist URI")
        .to_owned();
    let (st, _, body) = http_get(server.http, &format!("/live/cam1/{media}"), &[]);
    assert_eq!(st, 200);
    let playlist = String::from_utf8(body).unwrap();
    assert!(playlist.matches("#EXTINF").count() >= 3, "{playlist}");
    assert!(
        !playlist.lines().any(|l| l.trim() == "#EXT-X-DISCONTINUITY"),
        "{playlist}"
    );
    assert!(playlist.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0"), "{playlist}");
    assert_eq!(playlist.matches("#EXT-X-MAP").count(), 1, "{playlist}");
}

/// After a WHIP publisher restarts (its page left and reloaded), a WHEP viewer of the path
/// decodes frames again within a second of the new publisher connecting: the keyframe requests
/// of the path reach the new publisher.
#[test]
fn whep_picture_resumes_after_whip_publisher_restart() {
    if !in_netns("whep_picture_resumes_after_whip_publisher_restart") || !have_browser() {
        return;
    }
    let server = Server::start();
    let r = browser(
        &["republish", &format!("http://{}", server.webrtc), "live/re", "5"],
        Duration::from_secs(90),
    );
    eprintln!("{r}");
    let log = server.log();
    assert!(r["error"].is_null(), "{r}\n{log}");
    assert_eq!(r["state"], "connected", "{r}\n{log}");
    assert_eq!(r["publisher"], "connected", "{r}");
    // Two publish sessions (the stream itself starts again whenever Chromium's encoder changes
    // its resolution, which it does on a busy machine: that is not counted).
    assert_eq!(
        log.matches("WHIP publish session starts").count(),
        2,
        "two publishes: {log}"
    );
    assert!(num(&r, &["before"]) >= 30.0, "{r}");
    let resume = r["resumeMs"]
        .as_f64()
        .unwrap_or_else(|| panic!("picture never resumed: {r}\n{log}"));
    assert!(
        resume < 1000.0,
        "picture resumed {resume} ms after the publisher came back: {r}"
    );
    // And keeps going: 5 s more. Chromium's fake camera is 30 fps, but its encoder lowers the
    // frame rate on a busy machine (15 fps idle here, less beside other tests): 30 frames is
    // 6 fps.
    let gained = num(&r, &["after"]) - num(&r, &["stalled"]);
    assert!(gained >= 30.0, "{gained} frames after the restart: {r}");
}

/// A minimal browser-like offer: H.264 video and Opus audio, both send-only.
const OFFER_H264_OPUS: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=msid-semantic: WMS\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\n\
a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=sendonly\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:102 H264/90000\r\n\
a=rtcp-fb:102 nack\r\n\
a=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=ssrc:1111 cname:test\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\n\
a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=sendonly\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=ssrc:2222 cname:test\r\n";

fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let (c, b, _) = http_request_full(addr, method, path, headers, body);
    (c, b)
}

/// One HTTP/1.1 request on a fresh connection: (status, body, headers).
fn http_request_full(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<(String, String)>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let hdrs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (code, body.to_owned(), hdrs)
}

/// A WHIP publisher (Chromium: H.264 + Opus) is recorded with its own Opus (the publisher's
/// tracks, not a derived AAC): ffprobe reads the segments as h264 + opus, from a keyframe.
#[test]
fn whip_opus_is_recorded_as_published() {
    if !in_netns("whip_opus_is_recorded_as_published") || !have_browser() {
        return;
    }
    let dir = tmp_dir().join(format!("rec-whip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = format!(
        "[path_defaults]\ngrace_period = \"1s\"\n[path_defaults.record]\nenabled = true\n\
         path = \"{}/%path/%Y-%m-%d_%H-%M-%S-%f\"\nsegment_duration = \"3s\"\npart_duration = \"1s\"\n",
        dir.display()
    );
    let server = Server::start_with(&[], Some(&cfg));
    let publisher = browser_bg(&["publish", &server.webrtc_url("live/webrec/publish"), "9"], 9);
    assert!(
        server.wait_log("WHIP stream starts", Duration::from_secs(20)),
        "no WHIP stream:\n{}",
        server.log()
    );
    let _ = publisher.wait_with_output();
    wait_until("a segment completes", Duration::from_secs(15), || {
        server.log().contains("recording segment completed")
    });
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("live/webrec"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}", server.log());
    let p = probe(files[0].to_str().unwrap(), 100_000);
    assert_eq!(p.video().codec_name, "h264", "{}", p.stderr);
    assert_eq!(p.audio().codec_name, "opus", "{}", p.stderr);
    assert_eq!(p.audio().sample_rate, 48000);
    assert!(p.starts_with_keyframe());
    assert!(p.count(true) >= 30, "{} video frames", p.count(true));
    assert!(p.count(false) >= 50, "{} Opus packets", p.count(false));
    // (The AAC the HLS packager takes is derived beside it; the file has the original Opus.)
}

/// A WebRTC viewer is given a rendition by reading its path: WHEP of `PATH/~NAME` in Chromium
/// plays the rendition's size, here from an on-demand ladder its reader starts.
#[test]
fn whep_plays_a_rendition() {
    if !in_netns("whep_plays_a_rendition") || !have_browser() || !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(
        &[],
        Some(
            "[paths.\"live/*\".transcode]\npreset = \"ultrafast\"\non_demand = true\n\
             renditions = [{ name = \"180p\", height = 180, video_bitrate = \"250k\" }]\n",
        ),
    );
    let _publisher = publish_rtmp(&server, "live/cam1");
    let r = browser(
        &["watch", &server.webrtc_url("live/cam1/~180p/"), "6"],
        Duration::from_secs(60),
    );
    eprintln!("{r}");
    assert_eq!(r["state"], "connected", "{r}\n{}", server.log());
    assert_eq!(num(&r, &["video", "width"]) as u32, 320, "{r}");
    assert_eq!(num(&r, &["video", "height"]) as u32, 180, "{r}");
    assert!(num(&r, &["video", "framesDecoded"]) >= 60.0, "{r}");
    assert!(num(&r, &["audio", "totalAudioEnergy"]) > 0.0, "silent: {r}");
}
