//! Access control end to end, with real clients: one policy (the per-path `[..access]`
//! credentials) answering RTMP publish and play (ffmpeg, ffprobe), HTTP-FLV and HLS (ffprobe,
//! plain HTTP). Refusals are the protocol's own, logged with the reason, and never disturb a
//! stream that is already running.

mod common;

use std::time::Duration;

use common::*;

const CONFIG: &str = r#"
[paths."live/*"]

[paths."secure/*".access]
publish_user = "obs"
publish_pass = "s3cret"
read_user = "viewer"
read_pass = "watch"
read_token = "t0k"
"#;

/// Whether any log line says `what` about `path`.
fn logged(server: &Server, what: &str, path: &str) -> bool {
    let needle = format!("path={path}");
    server
        .log()
        .lines()
        .any(|l| l.contains(what) && l.contains(&needle))
}

#[test]
fn rtmp_publish_and_play_credentials_are_checked() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(&[], Some(CONFIG));
    let src = source_flv();
    // An open path streams all along.
    let mut open = Publisher::rtmp(&src, &server.rtmp_url("live/open"));
    wait_stream(&server, "live/open");

    // A wrong password, and none at all: ffmpeg fails, the log says why, nothing goes live.
    for (query, why) in [
        ("?user=obs&pass=wrong", "wrong user or password"),
        ("", "no user and password given"),
    ] {
        let mut p = Publisher::rtmp(&src, &server.rtmp_url(&format!("secure/cam{query}")));
        let st = p
            .wait_exit(Duration::from_secs(15))
            .expect("a refused publisher exits");
        assert!(!st.success(), "{query:?} was accepted");
        assert!(
            server.wait_log(why, Duration::from_secs(5))
                && logged(&server, "RTMP publish refused", "secure/cam"),
            "no refusal ({why}) in the log:\n{}",
            server.log()
        );
    }
    assert!(
        !logged(&server, "RTMP publisher started", "secure/cam"),
        "a refused publisher went live:\n{}",
        server.log()
    );
    assert!(open.is_running(), "the open publisher was disturbed");
    assert_source_stream(
        &probe(&server.rtmp_url("live/open"), 3),
        3,
        "open path during refusals",
    );

    // The configured user and password, in the stream key as OBS sends them.
    let _good = Publisher::rtmp(&src, &server.rtmp_url("secure/cam?user=obs&pass=s3cret"));
    wait_stream(&server, "secure/cam");

    // Play: read credentials (or the read token) in the stream name; the publish ones do not read.
    let p = probe(&server.rtmp_url("secure/cam?user=viewer&pass=watch"), 3);
    assert_source_stream(&p, 3, "RTMP play with read credentials");
    let p = probe(&server.rtmp_url("secure/cam?token=t0k"), 2);
    assert_eq!(p.video().codec_name, "h264", "{}", p.stderr);
    for query in ["", "?user=obs&pass=s3cret", "?user=viewer&pass=nope"] {
        let p = probe(&server.rtmp_url(&format!("secure/cam{query}")), 2);
        assert!(p.streams.is_empty(), "play {query:?} was let in");
    }
    assert!(
        logged(&server, "RTMP play refused", "secure/cam"),
        "{}",
        server.log()
    );
    assert!(open.is_running());
}

#[test]
fn http_flv_and_hls_readers_need_the_token() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(&[], Some(CONFIG));
    let src = source_flv();
    let _p = Publisher::rtmp(&src, &server.rtmp_url("secure/cam?user=obs&pass=s3cret"));
    wait_stream(&server, "secure/cam");

    // Without credentials: 401 with a JSON body and a challenge; a wrong token likewise.
    for url in [
        "/secure/cam.flv",
        "/secure/cam/index.m3u8",
        "/secure/cam/stream.m3u8",
        "/secure/cam.flv?token=nope",
    ] {
        let (st, h, body) = http_get(server.http, url, &[]);
        let body = String::from_utf8_lossy(&body);
        assert_eq!(st, 401, "{url}: {body}");
        assert!(body.contains("\"error\""), "{body}");
        assert!(header(&h, "www-authenticate").is_some(), "{h:?}");
    }
    // A path no table matches looks like a path without a stream.
    let (st, _, _) = http_get(server.http, "/other/cam/index.m3u8", &[]);
    assert_eq!(st, 404);

    // With the token (query, as players that cannot set headers send it) or Basic credentials.
    let p = probe(&server.http_url("secure/cam.flv?token=t0k"), 3);
    assert_source_stream(&p, 3, "HTTP-FLV with ?token=");
    let (st, _, _) = http_get(
        server.http,
        "/secure/cam/index.m3u8",
        &[("Authorization", "Basic dmlld2VyOndhdGNo")], // viewer:watch
    );
    assert_eq!(st, 200);
    let (st, _, body) = http_get(server.http, "/secure/cam/index.m3u8?token=t0k", &[]);
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(st, 200, "{text}");
    // The media playlist's URL carries the token on (a player drops the query of relative URLs)...
    let media = text
        .lines()
        .find(|l| !l.starts_with('#') && l.contains(".m3u8"))
        .expect("a media playlist");
    assert!(media.ends_with("?token=t0k"), "{text}");
    let (st, _, body) = http_get(server.http, &format!("/secure/cam/{media}"), &[]);
    let playlist = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(st, 200, "{playlist}");
    // ...but segments carry no secret and are served without one (a CDN caches them for all).
    let seg = playlist
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .expect("a segment");
    assert!(!seg.contains("token"), "{playlist}");
    let (st, _, body) = http_get(server.http, &format!("/secure/cam/{seg}"), &[]);
    assert_eq!(st, 200);
    assert!(body.len() > 1000);
    let p = probe(&server.http_url("secure/cam/index.m3u8?token=t0k"), 3);
    assert_eq!(p.video().codec_name, "h264", "HLS with ?token=: {}", p.stderr);
    assert!(p.count(true) >= 30, "{} video packets", p.count(true));
    assert!(
        logged(&server, "access refused", "secure/cam"),
        "{}",
        server.log()
    );
}
