//! The control API against real clients: paths with codec details and bitrate, sessions of
//! every protocol with their link statistics, the kick, a shutdown with many sessions, and
//! 500 paths published at once each getting their HLS packager, push destinations added,
//! restarted and removed on a live path.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A request on the API; returns the status and the JSON body (Null when empty).
fn api(server: &Server, method: &str, path: &str) -> (u16, Value) {
    api_with(server, method, path, "")
}

/// [`api`] with a JSON request body.
fn api_with(server: &Server, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(server.api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} /{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.api,
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        // One chunk is enough for these small bodies.
        body.split_once("\r\n")
            .map_or("", |(_, b)| b)
            .rsplit_once("\r\n0")
            .map_or("", |(b, _)| b)
    } else {
        body
    };
    let json = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    };
    (status, json)
}

fn sessions(server: &Server) -> Vec<Value> {
    let (st, v) = api(server, "GET", "v1/sessions?limit=1000");
    assert_eq!(st, 200, "{v}");
    v["items"].as_array().unwrap().clone()
}

fn session_of<'a>(items: &'a [Value], protocol: &str, role: &str) -> Option<&'a Value> {
    items
        .iter()
        .find(|s| s["protocol"] == protocol && s["role"] == role)
}

/// What ffprobe says of each stream of `src`: (codec_type, its JSON).
fn probe_streams(src: &std::path::Path) -> Vec<(String, Value)> {
    let o = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries"])
        .arg("stream=codec_type,profile,level,r_frame_rate,bit_rate")
        .args(["-of", "json"])
        .arg(src)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["codec_type"].as_str().unwrap_or("").to_owned(), s.clone()))
        .collect()
}

fn within_10_percent(what: &str, got: f64, want: f64) {
    let ratio = got / want;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{what}: {got} vs the encoder's {want} (ratio {ratio:.3})"
    );
}

/// `/v1/paths` shows an ffmpeg stream with its codecs, profiles, level, resolution, frame rate,
/// GOP, and bitrates (the path's and each track's) within 10 % of the encoder's.
#[test]
fn paths_show_codecs_resolution_and_bitrate() {
    if !require("ffmpeg") {
        return;
    }
    let (src, encoder_bps) = cbr_source();
    let probe = probe_streams(&src);
    let encoder = |kind: &str| probe.iter().find(|(k, _)| k == kind).unwrap().1.clone();
    let (enc_video, enc_audio) = (encoder("video"), encoder("audio"));
    let server = Server::start();
    let _pub = Publisher::rtmp(&src, &server.rtmp_url("live/api"));
    wait_stream(&server, "live/api");
    // The rate is measured over 5 s, sampled each second.
    std::thread::sleep(Duration::from_secs(7));
    let (st, v) = api(&server, "GET", "v1/paths");
    assert_eq!(st, 200);
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{v}");
    let (st, p) = api(&server, "GET", "v1/paths/live/api");
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["name"], "live/api");
    assert_eq!(p["online"], true);
    assert_eq!(p["publisher"]["protocol"], "rtmp");
    let tracks = p["tracks"].as_array().unwrap();
    let video = tracks.iter().find(|t| t["kind"] == "video").expect("video track");
    assert_eq!(video["codec"], "h264");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert!(
        video["codec_string"].as_str().unwrap().starts_with("avc1."),
        "{video}"
    );
    // x264's profile and level as ffprobe reads them (High, 30 meaning 3.0).
    assert_eq!(video["profile"], enc_video["profile"], "{video}");
    assert_eq!(video["profile"], "High", "{video}");
    let level = enc_video["level"].as_u64().unwrap();
    assert_eq!(
        video["level"].as_str(),
        Some(format!("{}.{}", level / 10, level % 10).as_str()),
        "{video}"
    );
    let fps: Vec<f64> = enc_video["r_frame_rate"]
        .as_str()
        .unwrap()
        .split('/')
        .map(|x| x.parse().unwrap())
        .collect();
    let fps = fps[0] / fps[1];
    within_10_percent("frame_rate", video["frame_rate"].as_f64().unwrap(), fps);
    // The source has a keyframe every 30 frames (-g 30): 1 s.
    within_10_percent("gop_frames", video["gop_frames"].as_f64().unwrap(), 30.0);
    within_10_percent(
        "keyframe_interval_s",
        video["keyframe_interval_s"].as_f64().unwrap(),
        30.0 / fps,
    );
    let enc_video_bps: f64 = enc_video["bit_rate"].as_str().unwrap().parse().unwrap();
    within_10_percent("video bitrate", video["bitrate"].as_f64().unwrap(), enc_video_bps);
    let audio = tracks.iter().find(|t| t["kind"] == "audio").expect("audio track");
    assert_eq!(audio["codec"], "aac");
    assert_eq!(audio["sample_rate"], 48000);
    assert_eq!(audio["channels"], 2);
    assert_eq!(audio["profile"], enc_audio["profile"], "{audio}");
    assert_eq!(audio["profile"], "LC", "{audio}");
    assert!(
        audio.get("level").is_none() && audio.get("frame_rate").is_none(),
        "{audio}"
    );
    let enc_audio_bps: f64 = enc_audio["bit_rate"].as_str().unwrap().parse().unwrap();
    within_10_percent("audio bitrate", audio["bitrate"].as_f64().unwrap(), enc_audio_bps);
    within_10_percent("bitrate_in", p["bitrate_in"].as_f64().unwrap(), encoder_bps);
    // The server lists its listeners, the metrics one among them.
    let (st, srv) = api(&server, "GET", "v1/server");
    assert_eq!(st, 200, "{srv}");
    assert_eq!(srv["listeners"]["metrics"], server.metrics.to_string(), "{srv}");
    assert_eq!(srv["listeners"]["api"], server.api.to_string(), "{srv}");
    // HLS viewers are counted as requests, bytes and distinct clients over the last minute.
    for file in ["index.m3u8", "stream.m3u8"] {
        let (st, _, _) = http_get(server.http, &format!("/live/api/{file}"), &[]);
        assert_eq!(st, 200);
    }
    let (_, p) = api(&server, "GET", "v1/paths/live/api");
    assert_eq!(p["hls"]["requests_last_minute"], 2, "{p}");
    assert_eq!(p["hls"]["clients_last_minute"], 1, "{p}");
    assert!(p["hls"]["bytes_last_minute"].as_u64().unwrap() > 100, "{p}");
    // The HLS packager and the health checks are the path's outputs, each a session.
    let outputs = p["outputs"].as_array().unwrap();
    let names: Vec<&str> = outputs.iter().filter_map(|o| o["name"].as_str()).collect();
    assert_eq!(names, ["hls", "health"], "{p}");
    // Errors have one shape.
    let (st, e) = api(&server, "GET", "v1/paths/live/nothing");
    assert_eq!(st, 404);
    assert!(e["error"].as_str().unwrap().contains("live/nothing"), "{e}");
    let (st, e) = api(&server, "GET", "v1/sessions/abc");
    assert_eq!(st, 400);
    assert!(e["error"].is_string());
}

/// `/v1/sessions` lists RTMP, SRT, WebRTC and HTTP-FLV sessions with their link statistics;
/// kicking each ends it (the client sees the end) while the others go on.
#[test]
fn sessions_of_every_protocol_listed_and_kicked() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start();
    let mut publisher = Publisher::rtmp(&source_flv_no_bframes(), &server.rtmp_url("live/k"));
    wait_stream(&server, "live/k");
    let mut rtmp = reader(&["-i", &server.rtmp_url("live/k")]);
    let mut flv = reader(&["-i", &server.http_url("live/k.flv")]);
    let srt_url = format!("srt://{}?streamid=read:live/k", server.srt);
    let mut srt = reader(&["-i", &srt_url]);
    let whep = PathBuf::from(env!("CARGO_BIN_EXE_sluice")).with_file_name("whep-bench");
    assert!(
        whep.exists(),
        "build the load generator: cargo build -p sluice-loadgen"
    );
    let mut webrtc = Publisher::from_child(
        Command::new(&whep)
            .args([&server.webrtc_url("live/k/whep"), "1", "60"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let wanted = [
        ("rtmp", "reader"),
        ("http-flv", "reader"),
        ("srt", "reader"),
        ("webrtc", "reader"),
    ];
    wait_until("a session of every protocol", Duration::from_secs(20), || {
        let s = sessions(&server);
        wanted
            .iter()
            .all(|(p, r)| session_of(&s, p, r).is_some_and(|x| x["bytes_out"].as_u64().unwrap_or(0) > 0))
    });
    // Link statistics arrive about once a second.
    wait_until("SRT and WebRTC link statistics", Duration::from_secs(10), || {
        let s = sessions(&server);
        let srt = session_of(&s, "srt", "reader").unwrap();
        let rtc = session_of(&s, "webrtc", "reader").unwrap();
        srt["link"]["packets_sent"].as_u64().unwrap_or(0) > 0
            && rtc["link"]["packets_sent"].as_u64().unwrap_or(0) > 0
    });
    let s = sessions(&server);
    assert!(session_of(&s, "rtmp", "publisher").is_some(), "{s:?}");
    let srt_link = &session_of(&s, "srt", "reader").unwrap()["link"];
    assert!(
        srt_link["rtt_ms"].is_number() && srt_link["latency_ms"].as_u64().unwrap() > 0,
        "{srt_link}"
    );
    let id = session_of(&s, "srt", "reader").unwrap()["id"].as_u64().unwrap();
    let (st, one) = api(&server, "GET", &format!("v1/sessions/{id}"));
    assert_eq!(st, 200);
    assert_eq!(one["path"], "live/k");

    // Kick the readers one by one: each client sees its end, the others keep reading.
    let mut clients: Vec<(&str, &mut Publisher)> = vec![
        ("rtmp", &mut rtmp),
        ("http-flv", &mut flv),
        ("srt", &mut srt),
        ("webrtc", &mut webrtc),
    ];
    while let Some((proto, client)) = clients.first_mut().map(|(p, c)| (*p, &mut **c)) {
        let s = sessions(&server);
        let id = session_of(&s, proto, "reader").unwrap()["id"].as_u64().unwrap();
        let (st, _) = api(&server, "DELETE", &format!("v1/sessions/{id}"));
        assert!(st == 204 || st == 202, "kick {proto}: {st}");
        wait_until(&format!("{proto} session gone"), Duration::from_secs(5), || {
            sessions(&server).iter().all(|x| x["id"] != id)
        });
        if proto != "webrtc" {
            // ffmpeg ends when the server closes its stream.
            assert!(
                client.wait_exit(Duration::from_secs(10)).is_some(),
                "{proto} client still running after the kick"
            );
        }
        clients.remove(0);
        for (other, c) in clients.iter_mut() {
            assert!(c.is_running(), "{other} client ended when {proto} was kicked");
        }
        let s = sessions(&server);
        for (other, _) in &clients {
            assert!(
                session_of(&s, other, "reader").is_some(),
                "{other} session gone after kicking {proto}"
            );
        }
    }
    assert!(server.log().contains("kicked through the API"));
    // Kicking the publisher ends ffmpeg's publish.
    let s = sessions(&server);
    let id = session_of(&s, "rtmp", "publisher").unwrap()["id"]
        .as_u64()
        .unwrap();
    let (st, _) = api(&server, "DELETE", &format!("v1/sessions/{id}"));
    assert!(st == 204 || st == 202);
    assert!(
        publisher.wait_exit(Duration::from_secs(10)).is_some(),
        "publisher still running after the kick"
    );
    let (st, _) = api(&server, "DELETE", &format!("v1/sessions/{id}"));
    assert_eq!(st, 404);
}

/// SIGTERM with 200 open sessions ends each of them and exits within 2 s.
#[test]
fn shutdown_with_200_sessions_is_quick_and_clean() {
    if !require("ffmpeg") {
        return;
    }
    let mut server = Server::start();
    let _pub = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/many"));
    wait_stream(&server, "live/many");
    let loadgen = PathBuf::from(env!("CARGO_BIN_EXE_sluice")).with_file_name("sluice-loadgen");
    assert!(
        loadgen.exists(),
        "build the load generator: cargo build -p sluice-loadgen"
    );
    let mut viewers = Publisher::from_child(
        Command::new(&loadgen)
            .args([&server.rtmp_url("live/many"), "200", "60", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until("200 readers", Duration::from_secs(30), || {
        sessions(&server).iter().filter(|s| s["role"] == "reader").count() >= 200
    });
    let t = Instant::now();
    let st = server.terminate();
    let took = t.elapsed();
    assert!(st.success(), "exit status {st:?}");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    // Every reader's connection was ended: the load generator finishes at once, not at 60 s.
    assert!(
        viewers.wait_exit(Duration::from_secs(5)).is_some(),
        "readers were left hanging"
    );
    let log = server.log();
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(!log.contains("sessions still open"), "{log}");
}

/// 500 paths published at once each get their HLS packager (no publish is missed).
#[test]
fn five_hundred_paths_each_get_hls() {
    if !require("ffmpeg") {
        return;
    }
    let src = tmp_dir().join("src-tiny-10fps-v1.flv");
    if !src.exists() {
        let tmp = tmp_dir().join(format!("tiny.{}.flv", std::process::id()));
        let st = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=160x90:rate=10",
            ])
            .args([
                "-t",
                "4",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "10",
                "-bf",
                "0",
                "-b:v",
                "40k",
            ])
            .args(["-pix_fmt", "yuv420p", "-f", "flv"])
            .arg(&tmp)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::rename(&tmp, &src).unwrap();
    }
    let server = Server::start_with(&[("SLUICE_LOG_LEVEL", "info")], None);
    let gen = PathBuf::from(env!("CARGO_BIN_EXE_sluice")).with_file_name("rtmp-publish");
    assert!(
        gen.exists(),
        "build the load generator: cargo build -p sluice-loadgen"
    );
    let out = Command::new(&gen)
        .args([&server.rtmp_url("many/p"), "500", "12"])
        .arg(&src)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // While they publish: every path is live with an HLS output.
    let mut ok = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (_, v) = api(&server, "GET", "v1/paths?limit=1000");
        assert_eq!(v["limit"], 1000, "{v}");
        let items = v["items"].as_array().cloned().unwrap_or_default();
        let with_hls = items
            .iter()
            .filter(|p| {
                p["online"] == true
                    && p["outputs"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|o| o["name"] == "hls"))
            })
            .count();
        last = format!("{} paths, {with_hls} online with HLS", items.len());
        if with_hls == 500 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(ok, "{last}");
    // And each serves a playlist once its first segment is cut.
    std::thread::sleep(Duration::from_secs(3));
    let mut served = 0;
    for i in 0..500 {
        let (st, _, body) = http_get(server.http, &format!("/many/p{i}/stream.m3u8"), &[]);
        if st == 200 && String::from_utf8_lossy(&body).contains("#EXTINF") {
            served += 1;
        }
    }
    assert_eq!(served, 500, "playlists served");
    let res = out.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&res.stdout);
    assert!(report.contains("\"published\":500"), "{report}");
}

/// An SRT reader behind an impairing relay (5 % loss, 25 ms each way): the API shows its RTT,
/// losses and retransmissions as libsrt measures them.
#[test]
fn srt_link_statistics_through_a_lossy_relay() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(&[], Some("[paths.\"live/*\".srt]\nlatency = \"400ms\"\n"));
    let _pub = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/lossy"));
    wait_stream(&server, "live/lossy");
    let relay = LossyRelay::start(server.srt, 5, Duration::from_millis(25), 0x5eed_00a1);
    let url = format!("srt://{}?streamid=read:live/lossy&latency=400000", relay.addr);
    let _reader = reader(&["-i", &url]);
    let mut last = Value::Null;
    wait_until(
        "the SRT reader's link statistics to show the impairment",
        Duration::from_secs(20),
        || {
            let s = sessions(&server);
            let Some(r) = session_of(&s, "srt", "reader") else {
                return false;
            };
            last = r["link"].clone();
            last["rtt_ms"].as_f64().unwrap_or(0.0) >= 40.0
                && last["packets_lost"].as_u64().unwrap_or(0) > 0
                && last["packets_retransmitted"].as_u64().unwrap_or(0) > 0
                && last["packets_sent"].as_u64().unwrap_or(0) > 100
        },
    );
    assert_eq!(last["latency_ms"], 400, "{last}");
    assert_eq!(last["state"], "connected", "{last}");
    assert!(relay.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

/// Push destinations through `/v1/paths/{name}/pushes` on a live path governed by a pattern:
/// two added (to a second Sluice), one restarted, then removed, while the other destination's
/// stream goes on without a gap; the change lands in the path's own table (the pattern's other
/// paths untouched) and no key is ever shown.
#[test]
fn pushes_added_restarted_and_removed_through_the_api() {
    let dest = Server::start();
    let config = "[paths.\"live/*\"]\n[paths.\"live/*\".push]\nretry_min = \"500ms\"\n";
    let server = Server::start_with(&[], Some(config));
    let _publisher = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    let key_one = "one-secret-0123456789";
    let key_two = "two-secret-9876543210";
    let url_one = dest.rtmp_url(&format!("live/{key_one}"));
    let url_two = dest.rtmp_url(&format!("live/{key_two}"));

    let add = |url: &str| {
        api_with(
            &server,
            "POST",
            "v1/paths/live/cam/pushes",
            &serde_json::json!({ "url": url }).to_string(),
        )
    };
    let (st, one) = add(&url_one);
    assert_eq!(st, 201, "{one}");
    assert!(!one.to_string().contains(key_one), "a key in the answer: {one}");
    assert_eq!(one["table"], "live/cam", "{one}");
    let id_one = one["id"].as_str().unwrap().to_owned();
    let (st, two) = add(&url_two);
    assert_eq!(st, 201, "{two}");
    let id_two = two["id"].as_str().unwrap().to_owned();
    assert_ne!(id_one, id_two);
    // The same URL twice, a bad URL: refused with the reason.
    let (st, v) = add(&url_one);
    assert_eq!(st, 409, "{v}");
    let (st, v) = add("ftp://example.com/x");
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("url:"), "{v}");

    let list = || {
        let (st, v) = api(&server, "GET", "v1/paths/live/cam/pushes");
        assert_eq!(st, 200, "{v}");
        v
    };
    wait_until("both destinations live", Duration::from_secs(15), || {
        list()["items"]
            .as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|p| p["state"] == "live"))
    });
    let shown = list().to_string();
    assert!(
        !shown.contains(key_one) && !shown.contains(key_two),
        "a key shown: {shown}"
    );

    // The second destination is watched while the first is restarted and removed.
    let watch = std::thread::spawn({
        let url = url_two.clone();
        move || probe(&url, 10)
    });
    std::thread::sleep(Duration::from_secs(2));
    let (st, v) = api(
        &server,
        "POST",
        &format!("v1/paths/live/cam/pushes/{id_one}/restart"),
    );
    assert_eq!(st, 200, "{v}");
    assert!(server.wait_log("push restarted through the API", Duration::from_secs(5)));
    wait_until(
        "the restarted destination is live again",
        Duration::from_secs(10),
        || {
            let (st, v) = api(&server, "GET", &format!("v1/paths/live/cam/pushes/{id_one}"));
            st == 200 && v["state"] == "live"
        },
    );
    let (st, v) = api(&server, "DELETE", &format!("v1/paths/live/cam/pushes/{id_one}"));
    assert_eq!(st, 200, "{v}");
    let (st, v) = api(&server, "DELETE", &format!("v1/paths/live/cam/pushes/{id_one}"));
    assert_eq!(st, 404, "{v}");
    wait_until(
        "the removed destination's stream ends",
        Duration::from_secs(10),
        || {
            let (st, v) = api(&dest, "GET", &format!("v1/paths/live/{key_one}"));
            st == 404 || v["online"] == false
        },
    );
    let items = list()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["id"], id_two.as_str());
    assert_eq!(
        items[0]["reconnects"], 0,
        "the other destination was touched: {items:?}"
    );

    let p = watch.join().unwrap();
    assert_source_stream(&p, 10, "the destination left alone");
    let v: Vec<f64> = p.packets.iter().filter(|p| p.video).map(|p| p.dts).collect();
    let gap = v.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(gap < 0.2, "a {gap:.3} s gap in the other destination's video");

    // The change is the path's own table, in the state file; the pattern is as it was.
    let (st, v) = api(&server, "GET", "v1/config/paths/live/cam");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["origin"], "state", "{v}");
    assert_eq!(
        v["table"]["push"]["urls"].as_array().map(Vec::len),
        Some(1),
        "{v}"
    );
    assert_eq!(
        v["table"]["push"]["retry_min"], "500ms",
        "copied from the pattern: {v}"
    );
    let (_, v) = api(&server, "GET", "v1/config/paths/live/*");
    assert!(
        v["table"]["push"].get("urls").is_none(),
        "the pattern changed: {v}"
    );
    // The OpenAPI document describes the endpoints.
    let (_, doc) = api(&server, "GET", "v1/openapi.json");
    assert!(doc["paths"]["/v1/paths/{name}/pushes/{id}/restart"]["post"].is_object());
    assert!(!server.log().contains(key_one), "a key in the log");
}
