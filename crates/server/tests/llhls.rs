//! Low-Latency HLS (draft-pantos-hls-rfc8216bis) from a live path published by ffmpeg: our own
//! conformance check over every playlist reload, ffprobe reading the playlist, and hls.js with
//! `lowLatencyMode` in headless Chromium.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Low-latency is the default variant; the grace period keeps the stream open after the
/// publisher stops, so a reload for a part that never comes can be seen to time out.
const CONFIG: &str = r#"
[paths."live/*"]
grace_period = "30s"
"#;

#[derive(Debug, Clone)]
struct PartLine {
    uri: String,
    duration: f64,
    independent: bool,
}

#[derive(Debug, Clone)]
struct SegmentLine {
    msn: u64,
    uri: String,
    duration: f64,
    pdt: Option<String>,
    parts: Vec<PartLine>,
}

/// A media playlist as a player reads it.
#[derive(Debug, Clone, Default)]
struct Playlist {
    text: String,
    version: u32,
    target: u64,
    media_sequence: u64,
    part_target: f64,
    server_control: String,
    skipped: u64,
    maps: Vec<String>,
    segments: Vec<SegmentLine>,
    /// Parts of the segment being built.
    pending: Vec<PartLine>,
    hint: Option<String>,
    end_list: bool,
}

fn attr(line: &str, name: &str) -> Option<String> {
    let key = format!("{name}=");
    let at = line
        .match_indices(&key)
        .find(|(i, _)| *i == 0 || matches!(line.as_bytes()[i - 1], b':' | b','))?
        .0;
    let rest = &line[at + key.len()..];
    let v = match rest.strip_prefix('"') {
        Some(q) => q.split('"').next()?,
        None => rest.split(',').next()?,
    };
    Some(v.to_owned())
}

fn parse(text: &str) -> Playlist {
    let mut p = Playlist {
        text: text.to_owned(),
        ..Default::default()
    };
    assert!(text.starts_with("#EXTM3U\n"), "{text}");
    let mut parts = Vec::new();
    let mut pdt = None;
    let mut extinf = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
            p.version = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
            p.server_control = v.to_owned();
        } else if line.starts_with("#EXT-X-PART-INF:") {
            p.part_target = attr(line, "PART-TARGET").unwrap().parse().unwrap();
        } else if line.starts_with("#EXT-X-SKIP:") {
            p.skipped = attr(line, "SKIPPED-SEGMENTS").unwrap().parse().unwrap();
        } else if line.starts_with("#EXT-X-MAP:") {
            p.maps.push(attr(line, "URI").unwrap());
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = Some(v.to_owned());
        } else if line.starts_with("#EXT-X-PART:") {
            parts.push(PartLine {
                uri: attr(line, "URI").unwrap(),
                duration: attr(line, "DURATION").unwrap().parse().unwrap(),
                independent: attr(line, "INDEPENDENT").as_deref() == Some("YES"),
            });
        } else if line.starts_with("#EXT-X-PRELOAD-HINT:") {
            assert_eq!(attr(line, "TYPE").as_deref(), Some("PART"), "{line}");
            p.hint = attr(line, "URI");
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf = Some(v.trim_end_matches(',').parse::<f64>().unwrap());
        } else if line == "#EXT-X-ENDLIST" {
            p.end_list = true;
        } else if !line.starts_with('#') && !line.is_empty() {
            let msn = p.media_sequence + p.skipped + p.segments.len() as u64;
            p.segments.push(SegmentLine {
                msn,
                uri: line.to_owned(),
                duration: extinf.take().expect("EXTINF before a URI"),
                pdt: pdt.take(),
                parts: std::mem::take(&mut parts),
            });
        }
    }
    p.pending = parts;
    p
}

impl Playlist {
    fn last_msn(&self) -> u64 {
        self.segments.last().map_or(self.media_sequence, |s| s.msn)
    }

    /// The part after the last one listed, as a player asks for it (`_HLS_msn`, `_HLS_part`).
    fn next_part(&self) -> (u64, usize) {
        (self.last_msn() + 1, self.pending.len())
    }

    /// Whether the playlist holds part `part` of segment `msn` (or that whole segment).
    fn has(&self, msn: u64, part: usize) -> bool {
        self.last_msn() >= msn || self.last_msn() + 1 == msn && self.pending.len() > part
    }

    fn server_control(&self, name: &str) -> Option<String> {
        attr(&self.server_control, name)
    }

    /// Every rule of RFC 8216bis this playlist must follow on its own.
    fn check(&self) {
        let t = &self.text;
        assert_eq!(self.version, 9, "{t}");
        assert!(self.target >= 1, "{t}");
        assert_eq!(
            self.server_control("CAN-BLOCK-RELOAD").as_deref(),
            Some("YES"),
            "{t}"
        );
        let phb: f64 = self.server_control("PART-HOLD-BACK").unwrap().parse().unwrap();
        assert!(
            (0.19..=0.21).contains(&self.part_target),
            "PART-TARGET 200 ms: {t}"
        );
        assert!(
            phb >= 3.0 * self.part_target - 1e-9,
            "PART-HOLD-BACK ≥ 3 × PART-TARGET: {t}"
        );
        if let Some(hb) = self.server_control("HOLD-BACK") {
            assert!(hb.parse::<f64>().unwrap() >= 3.0 * self.target as f64, "{t}");
        }
        let skip: f64 = self.server_control("CAN-SKIP-UNTIL").unwrap().parse().unwrap();
        assert!(
            (skip - 6.0 * self.target as f64).abs() < 1e-6,
            "CAN-SKIP-UNTIL = 6 × target: {t}"
        );
        assert!(!self.maps.is_empty() || self.skipped > 0, "{t}");
        assert!(self.hint.is_some() || self.end_list, "{t}");
        // Segment durations round to at most the target duration (4.4.3.1).
        for s in &self.segments {
            assert!(s.duration.round() as u64 <= self.target, "{} in {t}", s.uri);
            assert!(s.pdt.is_some(), "PROGRAM-DATE-TIME on every segment: {t}");
        }
        let pdts: Vec<&String> = self.segments.iter().filter_map(|s| s.pdt.as_ref()).collect();
        assert!(pdts.windows(2).all(|w| w[0] < w[1]), "{t}");
        // Parts: at most the part target; at least 85 % of it except the last of a segment.
        let pt = self.part_target + 0.5e-5;
        for s in &self.segments {
            for (i, p) in s.parts.iter().enumerate() {
                assert!(p.duration <= pt, "{} longer than PART-TARGET: {t}", p.uri);
                if i + 1 < s.parts.len() {
                    assert!(p.duration >= 0.85 * self.part_target, "{} under 85 %: {t}", p.uri);
                }
            }
            if !s.parts.is_empty() {
                let sum: f64 = s.parts.iter().map(|p| p.duration).sum();
                assert!((sum - s.duration).abs() < 0.002, "parts add up to {}: {t}", s.uri);
                assert!(s.parts[0].independent, "a segment starts with a keyframe: {t}");
            }
        }
        for p in &self.pending {
            assert!(p.duration <= pt, "{} longer than PART-TARGET: {t}", p.uri);
        }
        // Parts are listed for at least the segments within the last three target durations.
        let mut age: f64 = self.pending.iter().map(|p| p.duration).sum();
        for s in self.segments.iter().rev() {
            if age >= 3.0 * self.target as f64 {
                break;
            }
            assert!(
                !s.parts.is_empty(),
                "{} within 3 target durations has no parts: {t}",
                s.uri
            );
            age += s.duration;
        }
        // The preload hint is not a listed part.
        if let Some(h) = &self.hint {
            assert!(!t.contains(&format!("URI=\"{h}\",")) && !self.pending.iter().any(|p| &p.uri == h));
        }
    }
}

fn get(server: &Server, target: &str) -> (u16, Vec<u8>, Duration) {
    let t0 = Instant::now();
    let (st, _, body) = http_get(server.http, target, &[]);
    (st, body, t0.elapsed())
}

fn get_playlist(server: &Server, query: &str) -> (Playlist, Duration) {
    let (st, body, took) = get(server, &format!("/live/cam/stream.m3u8{query}"));
    let text = String::from_utf8(body).unwrap();
    assert_eq!(st, 200, "stream.m3u8{query}: {text}");
    (parse(&text), took)
}

/// The video track id of an init segment (the `trak` whose `hdlr` is `vide`).
fn video_track(init: &[u8]) -> u32 {
    let moov = child(init, "moov")[0];
    for trak in child(moov, "trak") {
        let tkhd = child(trak, "tkhd")[0];
        let id = if tkhd[0] == 1 {
            be32(tkhd, 20)
        } else {
            be32(tkhd, 12)
        };
        let mdia = child(trak, "mdia")[0];
        let hdlr = child(mdia, "hdlr")[0];
        if &hdlr[8..12] == b"vide" {
            return id;
        }
    }
    panic!("no video track in the init segment");
}

/// Whether the first video sample of a `moof`+`mdat` part is a sync sample (a keyframe).
fn starts_with_keyframe(part: &[u8], video: u32) -> bool {
    // One `moof`+`mdat` per track (CMAF), each after a `prft` at a segment's start.
    let top = boxes(part);
    let kinds: Vec<&str> = top
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| *k != "prft")
        .collect();
    assert!(
        !kinds.is_empty() && kinds.chunks(2).all(|c| c == ["moof", "mdat"]),
        "{kinds:?}"
    );
    let trafs = top
        .iter()
        .filter(|(k, _)| k == "moof")
        .flat_map(|(_, moof)| child(moof, "traf"));
    for traf in trafs {
        let tfhd = child(traf, "tfhd")[0];
        if be32(tfhd, 4) != video {
            continue;
        }
        let tf = be32(tfhd, 0) & 0xff_ffff;
        let mut at = 8;
        let mut default_flags = None;
        for (bit, len) in [(0x1, 8), (0x2, 4), (0x8, 4), (0x10, 4), (0x20, 4)] {
            if tf & bit != 0 {
                if bit == 0x20 {
                    default_flags = Some(be32(tfhd, at));
                }
                at += len;
            }
        }
        let trun = child(traf, "trun")[0];
        let f = be32(trun, 0) & 0xff_ffff;
        let mut at = 8 + if f & 0x1 != 0 { 4 } else { 0 };
        let flags = if f & 0x4 != 0 {
            Some(be32(trun, at))
        } else {
            at += if f & 0x100 != 0 { 4 } else { 0 };
            at += if f & 0x200 != 0 { 4 } else { 0 };
            (f & 0x400 != 0).then(|| be32(trun, at)).or(default_flags)
        };
        let flags = flags.expect("sample flags of the first video sample");
        return flags & 0x1_0000 == 0;
    }
    false
}

/// 30 s of a live LL-HLS path, every playlist reload parsed and checked; blocking reload,
/// preload hints, delta updates and the refusals of RFC 8216bis 6.2.5.2.
#[test]
fn conformance_over_30_seconds_of_a_live_path() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(&[], Some(CONFIG));
    let mut publisher = live_publisher(&server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");

    let (st, body, _) = get(&server, "/live/cam/index.m3u8");
    let index = String::from_utf8(body).unwrap();
    assert_eq!(st, 200, "{index}");
    assert!(
        index.contains("#EXT-X-VERSION:9\n") && index.contains("\nstream.m3u8\n"),
        "{index}"
    );

    let (mut pl, _) = get_playlist(&server, "");
    pl.check();
    let init_name = pl.maps[0].clone();
    let (st, init, _) = get(&server, &format!("/live/cam/{init_name}"));
    assert_eq!(st, 200);
    let video = video_track(&init);

    // Refusals: a segment more than two ahead, _HLS_part alone, a malformed value.
    let far = format!("?_HLS_msn={}", pl.last_msn() + 3);
    for q in [
        far.as_str(),
        "?_HLS_part=1",
        "?_HLS_msn=x",
        "?_HLS_msn=1&_HLS_skip=NO",
    ] {
        let (st, body, took) = get(&server, &format!("/live/cam/stream.m3u8{q}"));
        assert_eq!(st, 400, "{q}: {}", String::from_utf8_lossy(&body));
        assert!(
            took < Duration::from_secs(1),
            "{q} refused at once, took {took:?}"
        );
    }

    let mut fetched: HashSet<String> = HashSet::new();
    let mut fetch = |uri: &str, pl: &Playlist| {
        if !fetched.insert(uri.to_owned()) {
            return;
        }
        let (st, body, _) = get(&server, &format!("/live/cam/{uri}"));
        assert_eq!(st, 200, "{uri} listed but not served: {}", pl.text);
        assert!(!body.is_empty(), "{uri}");
        body.starts_with(b"\0").then_some(()).expect("an ISO BMFF box");
        let part = pl
            .segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .chain(pl.pending.iter())
            .find(|p| p.uri == uri);
        if let Some(p) = part {
            assert_eq!(
                starts_with_keyframe(&body, video),
                p.independent,
                "INDEPENDENT=YES exactly on parts that start with a keyframe: {uri}"
            );
        }
    };

    let start = Instant::now();
    let mut reloads = 0u32;
    let mut held_long = 0u32;
    let mut hint_waits = Vec::new();
    let mut last_sequence = pl.media_sequence;
    let mut last_seen = (pl.last_msn(), pl.pending.len());
    while start.elapsed() < Duration::from_secs(30) {
        // Blocking reload for the next part, as hls.js asks for it.
        let (msn, part) = pl.next_part();
        let hint = pl.hint.clone().unwrap();
        // Every tenth time, fetch the preload-hinted part first: it is held until complete.
        if reloads % 10 == 5 {
            let (st, body, took) = get(&server, &format!("/live/cam/{hint}"));
            assert_eq!(st, 200, "preload hint {hint}: {}", String::from_utf8_lossy(&body));
            assert_eq!(boxes(&body)[0].0, "moof");
            hint_waits.push(took);
        }
        let (next, took) = get_playlist(&server, &format!("?_HLS_msn={msn}&_HLS_part={part}"));
        reloads += 1;
        if took > Duration::from_millis(50) {
            held_long += 1;
        }
        assert!(
            next.has(msn, part),
            "reload for {msn}.{part} answered without it: {}",
            next.text
        );
        assert!(took < Duration::from_secs(3), "{msn}.{part} took {took:?}");
        next.check();
        assert!(next.media_sequence >= last_sequence, "media sequence went back");
        assert_eq!(
            next.target, pl.target,
            "EXT-X-TARGETDURATION changed: {}",
            next.text
        );
        last_sequence = next.media_sequence;
        let seen = (next.last_msn(), next.pending.len());
        assert!(
            seen > last_seen || next.last_msn() > last_seen.0,
            "no progress: {}",
            next.text
        );
        last_seen = seen;
        // The hinted part is the one now listed after the last the previous playlist had.
        let listed: Vec<&PartLine> = next
            .segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .chain(next.pending.iter())
            .collect();
        assert!(
            listed.iter().any(|p| p.uri == hint),
            "hint {hint} not listed next: {}",
            next.text
        );
        for p in &listed {
            fetch(&p.uri, &next);
        }
        for s in &next.segments {
            fetch(&s.uri, &next);
        }
        for m in &next.maps {
            fetch(m, &next);
        }
        pl = next;
    }
    eprintln!(
        "{reloads} blocking reloads in 30 s, {held_long} held > 50 ms; preload hint waits: {hint_waits:?}"
    );
    // About one reload per 200 ms part: each was held until its part came, none answered early.
    assert!((100..=200).contains(&reloads), "{reloads} reloads");
    assert!(held_long >= reloads / 2, "{held_long} of {reloads} reloads held");
    assert!(
        hint_waits.iter().any(|w| *w > Duration::from_millis(30)),
        "{hint_waits:?}"
    );
    // A part further than the hint does not exist and is not waited for.
    let hint = pl.hint.clone().unwrap();
    let n: u64 = hint
        .rsplit('-')
        .next()
        .unwrap()
        .trim_end_matches(".m4s")
        .parse()
        .unwrap();
    let beyond = hint.replace(&format!("-{n}.m4s"), &format!("-{}.m4s", n + 5));
    let (st, _, took) = get(&server, &format!("/live/cam/{beyond}"));
    assert_eq!(st, 404);
    assert!(took < Duration::from_secs(1));

    // Delta update: the oldest segments skipped, CAN-SKIP-UNTIL seconds kept.
    let mut ok = false;
    for _ in 0..5 {
        let (full, _) = get_playlist(&server, "");
        let (delta, _) = get_playlist(&server, "?_HLS_skip=YES");
        if delta.media_sequence != full.media_sequence || delta.last_msn() != full.last_msn() {
            continue;
        }
        delta.check();
        assert!(delta.skipped >= 1, "{}", delta.text);
        assert_eq!(
            delta.segments.len() as u64 + delta.skipped,
            full.segments.len() as u64,
            "{}",
            delta.text
        );
        let kept: f64 = delta.segments.iter().map(|s| s.duration).sum();
        let until: f64 = delta.server_control("CAN-SKIP-UNTIL").unwrap().parse().unwrap();
        assert!(
            kept >= until,
            "{kept} s kept < CAN-SKIP-UNTIL {until}: {}",
            delta.text
        );
        assert_eq!(delta.segments[0].uri, full.segments[delta.skipped as usize].uri);
        ok = true;
        break;
    }
    assert!(ok, "no stable pair of full and delta playlists");

    // The publisher stops (the path stays in its grace period): a reload for the next part is
    // held for three target durations, then answered 503.
    publisher.stop();
    thread::sleep(Duration::from_millis(500));
    let (pl, _) = get_playlist(&server, "");
    let (msn, part) = pl.next_part();
    let (st, body, took) = get(
        &server,
        &format!("/live/cam/stream.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
    );
    let limit = Duration::from_secs(3 * pl.target);
    assert_eq!(st, 503, "{}", String::from_utf8_lossy(&body));
    assert!(
        took >= limit - Duration::from_millis(100) && took < limit + Duration::from_secs(2),
        "{took:?}"
    );
    // So is the hinted part.
    let (st, _, took) = get(&server, &format!("/live/cam/{}", pl.hint.unwrap()));
    assert_eq!(st, 503);
    assert!(took >= limit - Duration::from_millis(100), "{took:?}");
}

/// ffprobe reads the low-latency playlist as any HLS: codec, resolution, frame count, A/V sync.
#[test]
fn ffprobe_reads_the_low_latency_playlist() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(&[], Some(CONFIG));
    let _p = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    let p = probe(&server.http_url("live/cam/index.m3u8"), 5);
    assert_source_stream(&p, 5, "LL-HLS");
}

/// hls.js in low-latency mode plays the stream for 30 s without a stall, loading parts over
/// blocking reloads, and stays under 1.5 s behind the ingest (PROGRAM-DATE-TIME) on loopback.
#[test]
fn hls_js_plays_low_latency_in_chromium() {
    if !require("ffmpeg") || !require("node") || !have_hlsjs_browser() {
        return;
    }
    let server = Server::start_with(&[], Some(CONFIG));
    let _p = Publisher::rtmp(&source_flv_no_bframes(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    let url = server.http_url("live/cam/index.m3u8");
    let r = run_web_script("llhls.mjs", &[url.as_str(), "30"], &[], 120);
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}");
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(640), Some(360)),
        "{r}"
    );
    let played = r["played"].as_f64().unwrap();
    assert!(played >= 28.0, "played {played} s of 30: {r}");
    assert_eq!(r["stalls"].as_u64(), Some(0), "{r}");
    assert_eq!(r["waiting"].as_u64(), Some(0), "{r}");
    assert!(r["part_loads"].as_u64().unwrap() > 50, "hls.js loads parts: {r}");
    assert!(r["frames"].as_u64().unwrap() >= 720, "{r}");
    let pdt = r["pdt_latency_p50"].as_f64().unwrap();
    let latency = r["latency_p50"].as_f64().unwrap();
    assert!(pdt < 1.5, "latency against PROGRAM-DATE-TIME {pdt} s: {r}");
    assert!(latency < 1.5, "hls.js latency {latency} s: {r}");
}

/// Sluice's player page (`/PATH/`) plays in Chromium with the hls.js Sluice serves itself
/// (nothing fetched from another origin), in low-latency mode, and shows the live latency.
#[test]
fn player_page_plays_with_its_own_hls_js() {
    if !require("ffmpeg") || !require("node") || !have_hlsjs_browser() {
        return;
    }
    let server = Server::start_with(&[], Some(CONFIG));
    let _p = Publisher::rtmp(&source_flv_no_bframes(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    let url = server.http_url("live/cam/");
    let r = run_web_script("player.mjs", &[url.as_str(), "8"], &[], 90);
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}");
    assert_eq!(
        r["foreign"].as_array().map(Vec::len),
        Some(0),
        "requests to another origin: {r}"
    );
    assert_eq!(r["mode"], "hls.js", "{r}");
    assert_eq!(r["hls_version"], "1.7.4", "the vendored hls.js: {r}");
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(640), Some(360)),
        "{r}"
    );
    // Idle, the page plays 8.1 s of 8 at 1.1 s latency. The bounds allow one stall on a busy
    // CI machine (hls.js then raises its target latency); without low-latency mode hls.js
    // would hold back three 2 s segments, 6 s.
    let played = r["played"].as_f64().unwrap();
    assert!(played >= 6.0, "played {played} s of 8: {r}");
    let latency = r["latency"].as_f64().unwrap_or(f64::MAX);
    assert!(latency < 3.0, "the page's latency {latency} s: {r}");
    assert!(r["shown"].as_str().unwrap_or("").starts_with("latency "), "{r}");

    // The script itself: cacheable, revalidated by ETag.
    let (status, headers, body) = http_get(server.http, "/~sluice/hls.min.js", &[]);
    assert_eq!(status, 200);
    assert!(body.len() > 100_000);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let etag = header(&headers, "etag").expect("an ETag").to_owned();
    let (status, _, body) = http_get(server.http, "/~sluice/hls.min.js", &[("If-None-Match", &etag)]);
    assert_eq!((status, body.len()), (304, 0));
    let (status, _, _) = http_get(server.http, "/~sluice/nothing.js", &[]);
    assert_eq!(status, 404);
}

/// `[hls] part_duration` changed through the API on a live path: its packager restarts with the
/// new part target (a reload), the publisher untouched.
#[test]
fn part_duration_change_applies_to_a_live_path() {
    if !require("ffmpeg") || !require("curl") {
        return;
    }
    let server = Server::start_with(&[], Some(CONFIG));
    let _p = live_publisher(&server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    let publisher = || {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .arg(server.api_url("v1/paths/live/cam"))
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["publisher"]["session"].clone()
    };
    let before = publisher();
    assert!(before.is_u64(), "the publisher's session id: {before}");
    let text = || {
        let (_, body, _) = get(&server, "/live/cam/stream.m3u8");
        String::from_utf8_lossy(&body).into_owned()
    };
    wait_until("200 ms parts", Duration::from_secs(15), || {
        text().contains("#EXT-X-PART-INF:PART-TARGET=0.20000")
    });
    let last_msn = |t: &str| -> u64 {
        let p = parse(t);
        p.media_sequence + p.segments.len() as u64
    };
    // Wait for a few segments, so that the numbers carried on are seen to be carried on.
    wait_until("three segments", Duration::from_secs(15), || {
        last_msn(&text()) >= 3
    });
    let before_msn = last_msn(&text());
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}", "-X", "PATCH"])
        .args(["-H", "Content-Type: application/json"])
        .args(["-d", r#"{"hls": {"part_duration": "500ms"}}"#])
        .arg(server.api_url("v1/config"))
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(answer.ends_with("\n200"), "PATCH /v1/config answered {answer}");
    wait_until("500 ms parts", Duration::from_secs(15), || {
        text().contains("#EXT-X-PART-INF:PART-TARGET=0.50000")
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(publisher(), before, "the publisher's session was not touched");
    // The new packager numbers its segments on from the old one's, after a discontinuity, so
    // players' blocking reloads stay valid.
    let now = text();
    let p = parse(&now);
    assert!(
        p.media_sequence >= before_msn,
        "segment numbers went back: {before_msn} then\n{now}"
    );
    assert!(!now.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0\n"), "{now}");
}
