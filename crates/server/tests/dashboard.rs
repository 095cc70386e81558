//! The web dashboard, driven in headless Chromium (playwright-core, tests/web/dashboard.mjs)
//! against the real server with real publishers, readers and an nginx-rtmp destination: a
//! path appears as it is published, its page plays it, a reader is kicked, a push is added, a
//! path setting is changed live, a silent publisher is flagged, recordings play, and a browser
//! without a login sees only the login. Every page is scanned with axe-core and photographed
//! (target/dashboard-screenshots, the docs' images).
//!
//! The player uses WebRTC, so each test runs in a network namespace of its own with only `lo`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

fn shots_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots")
}

fn have_dashboard_browser() -> bool {
    have_hlsjs_browser() && require("ffmpeg") && {
        let ok = web_dir().join("node_modules/axe-core").exists();
        assert!(
            ok || std::env::var("CI").is_err(),
            "axe-core is required in CI: (cd crates/server/tests/web && npm ci)"
        );
        ok
    }
}

fn api_origin(server: &Server) -> String {
    server.api_url("").trim_end_matches('/').to_owned()
}

fn dashboard(scenario: &str, args: &[&str], seconds: u32) -> serde_json::Value {
    let shots = shots_dir();
    let r = run_web_script(
        "dashboard.mjs",
        &[&[scenario][..], args].concat(),
        &[
            ("SHOTS", shots.to_str().unwrap()),
            // The namespace has only `lo`: let Chromium's WebRTC use it, as the WebRTC tests do.
            (
                "CHROMIUM_EXTRA_ARGS",
                "--allow-loopback-in-peer-connection --disable-features=WebRtcHideLocalIpsWithMdns",
            ),
        ],
        seconds,
    );
    assert_eq!(r["ok"], true, "the {scenario} scenario failed: {r}");
    r
}

/// No serious or critical accessibility violation on any page the scenario visited.
fn assert_accessible(r: &serde_json::Value) {
    let pages = r["axe"].as_object().expect("axe results");
    assert!(!pages.is_empty(), "no page was scanned: {r}");
    for (page, violations) in pages {
        assert_eq!(
            violations.as_array().map(Vec::len),
            Some(0),
            "axe-core: serious violations on the {page} page: {violations}"
        );
    }
}

fn ffmpeg_argv(url: &str, audio: &str, seconds: u32) -> Vec<String> {
    let t = seconds.to_string();
    [
        "ffmpeg",
        "-hide_banner",
        "-v",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-f",
        "lavfi",
        "-i",
        audio,
        "-t",
        &t,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        "60",
        "-b:v",
        "1500k",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "96k",
        "-f",
        "flv",
        url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn publish(url: &str, audio: &str, seconds: u32) -> Publisher {
    let argv = ffmpeg_argv(url, audio, seconds);
    let child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ffmpeg");
    Publisher::from_child(child)
}

const SINE: &str = "sine=frequency=440:sample_rate=48000";
const SILENCE: &str = "anullsrc=channel_layout=stereo:sample_rate=48000";

#[test]
fn a_published_path_appears_plays_and_warns_of_silence() {
    if !in_netns("a_published_path_appears_plays_and_warns_of_silence") || !have_dashboard_browser() {
        return;
    }
    let server = Server::start_with(&[], Some("[path_defaults.health]\nsilence_after = \"2s\"\n"));
    let _quiet = publish(&server.rtmp_url("live/quiet"), SILENCE, 120);
    let argv = ffmpeg_argv(&server.rtmp_url("live/cam1"), SINE, 120);
    let r = dashboard(
        "live",
        &[
            &api_origin(&server),
            "live/cam1",
            "live/quiet",
            &serde_json::to_string(&argv).unwrap(),
        ],
        150,
    );
    eprintln!("{r}");
    // The row follows the server within one state message (a second), plus rendering.
    let after_api = r["appear_after_api_ms"].as_f64().expect("the API saw the path");
    assert!(
        after_api <= 2000.0,
        "the path appeared {after_api} ms after the API had it"
    );
    let after_publish = r["appear_after_publish_ms"].as_f64().unwrap();
    assert!(after_publish <= 6000.0, "{after_publish} ms after ffmpeg started");
    let video = r["video_text"].as_str().unwrap();
    assert!(video.contains("h264") && video.contains("1280x720"), "{video}");
    let (row, api) = (r["row_bps"].as_f64().unwrap(), r["api_bps"].as_f64().unwrap());
    assert!(api > 500_000.0, "the API's bitrate {api}");
    assert!(
        (row / api - 1.0).abs() < 0.35,
        "the row says {row} b/s, the API {api}"
    );
    assert!(
        r["quiet_warning"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("silent"),
        "{r}"
    );
    assert_eq!(r["loud_warnings"].as_array().map(Vec::len), Some(0), "{r}");
    // The embedded player plays over WebRTC.
    assert_eq!(r["player"]["via"], "webrtc", "{r}\n{}", server.log());
    assert!(r["player"]["frames"].as_f64().unwrap() >= 45.0, "{r}");
    assert_eq!(r["player"]["width"], 1280);
    assert_eq!(r["snapshot_width"], 640, "{r}");
    // Ready-to-copy URLs for this path.
    let text = r["page_text"].as_str().unwrap();
    for url in [
        server.rtmp_url("live/cam1"),
        server.http_url("live/cam1/index.m3u8"),
        format!("srt://127.0.0.1:{}?streamid=publish:live/cam1", server.srt.port()),
        server.webrtc_url("live/cam1/whip"),
    ] {
        assert!(text.contains(&url), "{url} not on the path page:\n{text}");
    }
    assert!(
        r["phone_overflow"].as_f64().unwrap() <= 1.0,
        "horizontal scroll on a phone: {r}"
    );
    assert_accessible(&r);
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}");
}

#[test]
fn kick_push_and_a_live_setting_change_from_the_browser() {
    if !in_netns("kick_push_and_a_live_setting_change_from_the_browser")
        || !have_dashboard_browser()
        || !have_nginx()
    {
        return;
    }
    let nginx = Nginx::start(free_port());
    let server = Server::start_with(
        &[],
        Some("[paths.\"live/cam1\"]\ngrace_period = \"10s\"\n\n[paths.\"*\"]\n"),
    );
    let mut publisher = publish(&server.rtmp_url("live/cam1"), SINE, 120);
    wait_stream(&server, "live/cam1");
    let publisher_session = |s: &Server| {
        let (_, body, _) = curl(&["-s", &s.api_url("v1/paths/live/cam1")]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["publisher"]["session"].as_u64()
    };
    let before = publisher_session(&server).expect("a publisher");
    let mut reader = reader(&["-i", &server.rtmp_url("live/cam1")]);
    let r = dashboard(
        "manage",
        &[&api_origin(&server), "live/cam1", &nginx.url("fromdash")],
        120,
    );
    eprintln!("{r}");
    // The kicked reader's ffmpeg sees its connection end.
    assert!(
        reader.wait_exit(Duration::from_secs(10)).is_some(),
        "the kicked reader still runs\n{}",
        server.log()
    );
    assert!(server.log().contains("kicked through the API"));
    // The push the browser added delivers the stream to nginx-rtmp.
    assert_eq!(r["push_state"], "live");
    let p = probe(&nginx.url("fromdash"), 5);
    assert_eq!(p.video().codec_name, "h264", "{p:?}");
    assert_eq!((p.video().width, p.video().height), (1280, 720));
    let refused = r["push_error"].as_str().unwrap();
    assert!(refused.contains("ftp"), "{refused}");
    // The setting changed without dropping the publisher.
    assert!(
        r["config_result"].as_str().unwrap().contains("grace_period"),
        "{r}"
    );
    assert!(!r["config_error"].as_str().unwrap().is_empty());
    let (_, table, _) = curl(&["-s", &server.api_url("v1/config/paths/live/cam1")]);
    let table: serde_json::Value = serde_json::from_str(&table).unwrap();
    assert_eq!(table["table"]["grace_period"], "42s", "{table}");
    assert!(publisher.is_running(), "the publisher was dropped");
    assert_eq!(
        publisher_session(&server),
        Some(before),
        "the publisher's session changed"
    );
    assert_accessible(&r);
}

#[test]
fn recordings_and_the_server_page() {
    if !in_netns("recordings_and_the_server_page") || !have_dashboard_browser() {
        return;
    }
    let dir = tmp_dir().join(format!("dash-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = Server::start_with(
        &[],
        Some(&format!(
            "[path_defaults.record]\nenabled = true\npath = \"{}/%path/%Y-%m-%d_%H-%M-%S-%f\"\nsegment_duration = \"2s\"\n",
            dir.display()
        )),
    );
    let mut publisher = publish(&server.rtmp_url("live/rec"), SINE, 6);
    publisher.wait_exit(Duration::from_secs(20));
    let r = dashboard("records", &[&api_origin(&server), "live/rec"], 90);
    eprintln!("{r}");
    assert!(r["segments"].as_u64().unwrap() >= 2, "{r}");
    assert!(r["recording_frames"].as_u64().unwrap() >= 10, "{r}");
    assert_eq!(
        r["version"].as_str().unwrap().trim(),
        env!("CARGO_PKG_VERSION"),
        "{r}"
    );
    let types: Vec<&str> = r["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(
        types.contains(&"published") && types.contains(&"unpublished"),
        "{types:?}"
    );
    assert_accessible(&r);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_a_login_only_the_login_shows() {
    if !in_netns("without_a_login_only_the_login_shows") || !have_dashboard_browser() {
        return;
    }
    // Publishing is open; the API needs the admin; the path needs read credentials, which the
    // dashboard's player gets as a short-lived link.
    let server = Server::start_with(
        &[],
        Some(
            "[[auth.users]]\nuser = \"any\"\npermissions = [{ action = \"publish\" }]\n\n\
             [[auth.users]]\nuser = \"admin\"\npass = \"dash-pass-1\"\npermissions = [{ action = \"api\" }]\n\n\
             [path_defaults.access]\nread_user = \"viewer\"\nread_pass = \"view-pass\"\n",
        ),
    );
    let _publisher = publish(&server.rtmp_url("live/secret"), SINE, 120);
    let r = dashboard(
        "login",
        &[&api_origin(&server), "live/secret", "admin", "dash-pass-1"],
        90,
    );
    eprintln!("{r}");
    assert_eq!(r["unauth_nav"], 0, "{r}");
    assert_eq!(r["unauth_rows"], 0, "{r}");
    let text = r["unauth_text"].as_str().unwrap();
    assert!(
        !text.contains("live/secret"),
        "the login page shows a path: {text}"
    );
    for call in r["unauth_calls"].as_array().unwrap() {
        let call = call.as_str().unwrap();
        assert!(
            call.ends_with(" 401") || call.starts_with("POST /v1/login"),
            "an API call answered without a login: {call}"
        );
    }
    assert!(!r["wrong_error"].as_str().unwrap().is_empty());
    assert_eq!(r["cookie"]["httpOnly"], true, "{r}");
    assert_eq!(r["cookie"]["sameSite"], "Strict", "{r}");
    assert_eq!(r["csrf_missing_status"], 403);
    assert!(
        r["player"]["frames"].as_f64().unwrap() >= 20.0,
        "{r}\n{}",
        server.log()
    );
    assert_eq!(r["after_logout_me"], 401);
    assert_accessible(&r);
    // What a reader without the link gets: the path's credentials are still needed.
    let (_, code, _) = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &server.http_url("live/secret/index.m3u8"),
    ]);
    assert_eq!(code.trim(), "401");
}

const ADMIN: &str = "[[auth.users]]\nuser = \"any\"\npermissions = [{ action = \"publish\" }]\n\n\
     [[auth.users]]\nuser = \"admin\"\npass = \"dash-pass-1\"\npermissions = [{ action = \"api\" }]\n\n\
     [path_defaults.access]\nread_user = \"viewer\"\nread_pass = \"view-pass\"\n";

/// `curl -s -i` with `args`: the status and the whole answer (headers and body).
fn curl_i(args: &[&str]) -> (u16, String) {
    let (_, out, err) = curl(&[&["-s", "-i"][..], args].concat());
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {err}"));
    (status, out)
}

#[test]
fn logins_cookies_csrf_and_player_links_over_http() {
    let server = Server::start_with(&[], Some(ADMIN));
    let url = |p: &str| server.api_url(p);
    // The page and its files are open; data is not, and the dashboard gets no browser prompt.
    let (status, page) = curl_i(&[&url("")]);
    assert_eq!(status, 200);
    assert!(
        page.contains("content-security-policy: default-src 'self'"),
        "{page}"
    );
    assert!(page.contains("x-frame-options: DENY"), "{page}");
    assert_eq!(curl_i(&[&url("assets/app.js")]).0, 200);
    assert_eq!(curl_i(&[&url("assets/other.js")]).0, 404);
    let (status, me) = curl_i(&[&url("v1/me")]);
    assert_eq!(status, 401);
    assert!(me.to_lowercase().contains("www-authenticate: basic"), "{me}");
    let (status, me) = curl_i(&["-H", "X-Requested-With: sluice-dashboard", &url("v1/me")]);
    assert_eq!(status, 401);
    assert!(!me.to_lowercase().contains("www-authenticate"), "{me}");
    // A wrong password, then the right one: the cookie is HTTP-only and same-site.
    let login = |pass: &str, jar: &str| {
        curl_i(&[
            "-c",
            jar,
            "-H",
            "Content-Type: application/json",
            "-d",
            &format!("{{\"user\": \"admin\", \"pass\": \"{pass}\"}}"),
            &url("v1/login"),
        ])
    };
    let jar = tmp_dir().join(format!("dash-jar-{}", std::process::id()));
    let jar = jar.to_str().unwrap();
    assert_eq!(login("nope", jar).0, 401);
    let (status, answer) = login("dash-pass-1", jar);
    assert_eq!(status, 200, "{answer}");
    let cookie = answer
        .lines()
        .find(|l| l.to_lowercase().starts_with("set-cookie:"))
        .expect("a cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let body: serde_json::Value = serde_json::from_str(answer.rsplit("\r\n\r\n").next().unwrap()).unwrap();
    let csrf = body["csrf"].as_str().unwrap().to_owned();
    let (status, me) = curl_i(&["-b", jar, &url("v1/me")]);
    assert_eq!(status, 200);
    assert!(
        me.contains("\"method\":\"cookie\"") && me.contains("\"user\":\"admin\""),
        "{me}"
    );
    // A change needs the CSRF token as well as the cookie.
    let link = |extra: &[&str]| {
        curl_i(
            &[
                &["-b", jar, "-H", "Content-Type: application/json"][..],
                extra,
                &["-d", "{\"path\": \"live/secret\"}", &url("v1/player-links")],
            ]
            .concat(),
        )
    };
    assert_eq!(link(&[]).0, 403);
    assert_eq!(link(&["-H", "X-CSRF-Token: 00"]).0, 403);
    let (status, answer) = link(&["-H", &format!("X-CSRF-Token: {csrf}")]);
    assert_eq!(status, 200, "{answer}");
    let body: serde_json::Value = serde_json::from_str(answer.rsplit("\r\n\r\n").next().unwrap()).unwrap();
    let query = body["query"].as_str().unwrap().to_owned();
    // The link opens the protected path's playlist; altered, or for another path, it does not.
    let _publisher = publish(&server.rtmp_url("live/secret"), SINE, 60);
    wait_stream(&server, "live/secret");
    let hls = |p: &str, q: &str| curl_i(&[&server.http_url(&format!("{p}/index.m3u8?{q}"))]).0;
    assert_eq!(hls("live/secret", ""), 401);
    assert_eq!(hls("live/secret", &query), 200);
    assert_eq!(hls("live/other", &query), 401);
    assert_eq!(hls("live/secret", &query.replace("expires=", "expires=9")), 401);
    // The link and the login work from the address they were made for only.
    let elsewhere = |u: &str| curl_i(&["--interface", "127.0.0.2", "-b", jar, u]).0;
    assert_eq!(
        elsewhere(&server.http_url(&format!("live/secret/index.m3u8?{query}"))),
        401
    );
    assert_eq!(elsewhere(&url("v1/me")), 401);
    // A change asked by another site's page is refused, cookie, token and all.
    let csrf_header = format!("X-CSRF-Token: {csrf}");
    let (status, _) = curl_i(&[
        "-b",
        jar,
        "-H",
        &csrf_header,
        "-H",
        "Origin: http://evil.example",
        "-X",
        "POST",
        &url("v1/config/reload"),
    ]);
    assert_eq!(status, 403);
    // Logout (a change: it needs the token too) ends the login for good.
    assert_eq!(curl_i(&["-b", jar, "-X", "POST", &url("v1/logout")]).0, 403);
    assert_eq!(
        curl_i(&["-b", jar, "-H", &csrf_header, "-X", "POST", &url("v1/logout")]).0,
        204
    );
    assert_eq!(curl_i(&["-b", jar, &url("v1/me")]).0, 401);
    let _ = std::fs::remove_file(jar);
    // Where the API is open to the client's address, there is nothing to log in to.
    let open = Server::start();
    let (status, body) = curl_i(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        "{\"user\": \"admin\", \"pass\": \"anything\"}",
        &open.api_url("v1/login"),
    ]);
    assert_eq!(status, 409, "{body}");
    assert!(!body.to_lowercase().contains("set-cookie"), "{body}");
}

#[test]
fn every_endpoint_the_dashboard_calls_is_in_the_openapi_document() {
    let server = Server::start();
    let (_, doc, _) = curl(&["-s", &server.api_url("v1/openapi.json")]);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let source =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboard/src/api.js"))
            .unwrap();
    // `ENDPOINTS = [["GET", "/v1/server"], ...]` in api.js: every call the dashboard makes.
    let list = &source[source.find("ENDPOINTS").expect("api.js lists ENDPOINTS")..];
    let list = &list[..list.find("];").unwrap()];
    let mut n = 0;
    for entry in list.split('[').skip(2) {
        let parts: Vec<&str> = entry.split('"').collect();
        let (method, path) = (parts[1].to_lowercase(), parts[3]);
        assert!(
            doc["paths"][path][&method].is_object(),
            "the dashboard calls {method} {path}, which the OpenAPI document does not have"
        );
        n += 1;
    }
    assert!(n >= 15, "only {n} endpoints listed in api.js");
}
