//! Sluice as the origin of a CDN: a real nginx `proxy_cache` (the set-up of docs/hls.md) in
//! front, fifty LL-HLS players (the `llhls-load` generator) and two hls.js players in Chromium
//! through it; then dash.js through it. What reaches the origin is counted in Sluice's request
//! stats and in nginx's log.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::*;

fn path_stats(server: &Server) -> serde_json::Value {
    let (st, _, body) = http_get(server.api, "/v1/paths/live/cam", &[]);
    assert_eq!(st, 200);
    serde_json::from_slice::<serde_json::Value>(&body).unwrap()["hls"].clone()
}

/// 50 load-generator players and two hls.js players in low-latency mode, all through one nginx
/// cache for 20 s: each part reaches Sluice about once (collapsed requests), the players play
/// on (the hls.js players with at most the few stalls nginx's lock polling causes).
#[test]
fn llhls_through_an_nginx_cache_reaches_the_origin_about_once_per_part() {
    if !require("ffmpeg") || !require("nginx") || !require("node") || !have_hlsjs_browser() {
        return;
    }
    let load = PathBuf::from(env!("CARGO_BIN_EXE_sluice")).with_file_name("llhls-load");
    assert!(
        load.exists(),
        "build the load generator: cargo build -p sluice-loadgen --bins"
    );
    let server = Server::start_with(&[], None);
    let _p = Publisher::rtmp(&source_flv_no_bframes(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    let nginx = NginxCache::cdn(server.http);
    thread::sleep(Duration::from_secs(3));
    let cdn = format!("http://127.0.0.1:{}", nginx.port);

    let before = path_stats(&server);
    let players: Vec<_> = (0..2)
        .map(|_| {
            let url = format!("{cdn}/live/cam/index.m3u8");
            thread::spawn(move || run_web_script("llhls.mjs", &[url.as_str(), "20"], &[], 120))
        })
        .collect();
    let out = Command::new(&load)
        .arg(format!("{cdn}/live/cam/stream.m3u8"))
        .args(["50", "24"])
        .output()
        .expect("llhls-load");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("llhls-load: {text}{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(text.trim()).expect("llhls-load JSON");
    let after_load = path_stats(&server);
    let results: Vec<serde_json::Value> = players.into_iter().map(|h| h.join().unwrap()).collect();
    let after = path_stats(&server);

    // The players played. nginx hands a collapsed request its answer at its next 500 ms poll,
    // for the blocking reload and again for the part it announced: a part can reach a player
    // up to a second late, more than hls.js's 0.6 s target holds. hls.js stalls once or twice
    // in the first seconds, raises its target latency and then plays on, at least 16 s of the
    // 20 (directly from Sluice the same player is held to no stall: llhls.rs).
    for p in &results {
        assert_eq!(p["errors"].as_array().map(Vec::len), Some(0), "{p}");
        assert!(p["played"].as_f64().unwrap() >= 16.0, "{p}");
        assert!(p["stalls"].as_u64().unwrap() <= 3, "{p}");
        assert!(p["part_loads"].as_u64().unwrap() > 40, "hls.js loaded parts: {p}");
    }
    // nginx wakes the requests it collapsed every 500 ms (its cache lock polls): a part can
    // reach a viewer half a second late, never later than that twice over.
    assert!(r["max_gap_ms"].as_u64().unwrap() < 3000, "{r}");
    let client_parts = r["parts"].as_u64().unwrap();

    // What reached the origin: parts made in the window, requests Sluice answered.
    let parts_made = after["parts"].as_u64().unwrap() - before["parts"].as_u64().unwrap();
    let origin =
        after["requests_last_minute"].as_u64().unwrap() - before["requests_last_minute"].as_u64().unwrap();
    eprintln!(
        "parts made {parts_made}, origin requests {origin}, parts the load generator got {client_parts}"
    );
    assert!(parts_made >= 100, "{parts_made} parts in about 24 s");
    // (Viewers join staggered and near the live edge: a little under fifty per part.)
    let during_load = after_load["parts"].as_u64().unwrap() - before["parts"].as_u64().unwrap();
    assert!(
        client_parts >= 35 * during_load,
        "the 50 players got {client_parts} parts of {during_load} made while they played"
    );
    // Per part: the part, the blocking reload that announced it, now and then a segment or a
    // plain playlist; never one per viewer.
    assert!(
        origin <= 3 * parts_made,
        "{origin} origin requests for {parts_made} parts"
    );
    // nginx's own view: each part URL fetched from the origin once (a MISS), the rest HITs.
    let log = nginx.access_log();
    let mut misses: HashMap<&str, u32> = HashMap::new();
    let mut hits: HashMap<&str, u32> = HashMap::new();
    for line in log.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 3 || !f[0].contains("/part-") {
            continue;
        }
        match f[2] {
            "MISS" | "EXPIRED" => *misses.entry(f[0]).or_default() += 1,
            "HIT" | "UPDATING" | "REVALIDATED" => *hits.entry(f[0]).or_default() += 1,
            _ => {}
        }
    }
    let twice = misses.values().filter(|n| **n > 1).count();
    assert!(
        misses.len() >= 100 && twice * 50 <= misses.len(),
        "{} parts went to the origin, {twice} of them more than once",
        misses.len()
    );
    // The parts of the load generator's 24 s (about 120) each went to most of its fifty
    // players from the cache. (Counted per part: on a loaded machine Chromium can start many
    // seconds late, and the hls.js players then fetch parts of their own after the load
    // generator has left, each a miss with one or two hits.)
    let served = misses
        .keys()
        .filter(|k| hits.get(*k).copied().unwrap_or(0) >= 35)
        .count();
    let total: u32 = hits.values().sum();
    assert!(
        served >= 100,
        "{served} of {} parts went to 35 players or more from the cache ({total} hits)",
        misses.len()
    );
}

/// dash.js plays the low-latency DASH stream through the same cache.
#[test]
fn dash_js_plays_through_an_nginx_cache() {
    if !require("ffmpeg") || !require("nginx") || !require("node") || !have_hlsjs_browser() {
        return;
    }
    let server = Server::start_with(&[], None);
    let _p = Publisher::rtmp(&source_flv_no_bframes(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    let nginx = NginxCache::cdn(server.http);
    thread::sleep(Duration::from_secs(3));
    let url = format!("http://127.0.0.1:{}/live/cam/dash.html", nginx.port);
    let r = run_web_script("dash.mjs", &[url.as_str(), "12"], &[], 120);
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}");
    assert_eq!(r["foreign"].as_array().map(Vec::len), Some(0), "{r}");
    assert!(r["played"].as_f64().unwrap() >= 10.5, "{r}");
    assert!(r["stalls"].as_u64().unwrap() <= 1, "{r}");
    assert!(r["latency_p50"].as_f64().unwrap() < 4.0, "{r}");
    let log = nginx.access_log();
    assert!(
        log.lines().any(|l| l.contains("/dash-") && l.ends_with(" MISS")),
        "segments came through the cache:\n{log}"
    );
}
