//! Relays: a second Sluice (the edge) pulls a path from the first (the origin) over RTMP, SRT
//! and HLS (MPEG-TS and fMP4 segments, and ffmpeg's CMAF); its viewers get the origin's stream,
//! the pull comes back by itself after the origin's publisher returns or after bad input, and
//! an on-demand pull of every kind runs only while the path has readers.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

fn edge_config(source: &str) -> String {
    format!("[paths.\"live/cam\"]\nsource = \"{source}\"\n[paths.\"live/*\"]\n")
}

#[test]
fn edge_pulls_from_origin_over_rtmp() {
    if !require("ffmpeg") {
        return;
    }
    let origin = Server::start();
    let mut publisher = Publisher::rtmp(&source_flv(), &origin.rtmp_url("live/cam"));
    wait_stream(&origin, "live/cam");
    let edge = Server::start_with(&[], Some(&edge_config(&origin.rtmp_url("live/cam"))));
    assert!(
        edge.wait_log("RTMP source connected", Duration::from_secs(10)),
        "{}",
        edge.log()
    );
    wait_stream(&edge, "live/cam");
    let p = probe(&edge.rtmp_url("live/cam"), 4);
    assert_source_stream(&p, 4, "the edge's RTMP viewer");
    p.assert_monotonic();
    p.assert_av_sync(0.1);
    // HLS on the edge too.
    let h = probe(&edge.http_url("live/cam/index.m3u8"), 3);
    assert_eq!(h.video().codec_name, "h264");
    // The origin's publisher goes away and comes back within the origin's grace period: the
    // pull goes on (the origin's reader waits too) and the edge's viewers get the new stream.
    publisher.stop();
    std::thread::sleep(Duration::from_secs(1));
    let _p2 = Publisher::rtmp(&source_flv(), &origin.rtmp_url("live/cam"));
    std::thread::sleep(Duration::from_secs(2));
    let p = probe(&edge.rtmp_url("live/cam"), 3);
    assert_source_stream(&p, 3, "the edge after the origin's publisher came back");
    assert_eq!(
        edge.log().matches("RTMP source connected").count(),
        1,
        "{}",
        edge.log()
    );
}

/// An origin without the stream yet: the edge is refused, logs why and retries with backoff
/// until the stream is there.
#[test]
fn edge_retries_until_the_origin_has_the_stream() {
    if !require("ffmpeg") {
        return;
    }
    let origin = Server::start();
    let edge = Server::start_with(&[], Some(&edge_config(&origin.rtmp_url("live/cam"))));
    assert!(
        edge.wait_log("RTMP source failed", Duration::from_secs(10)),
        "{}",
        edge.log()
    );
    assert!(
        edge.wait_log("reconnecting in 2 s", Duration::from_secs(10)),
        "{}",
        edge.log()
    );
    let _publisher = Publisher::rtmp(&source_flv(), &origin.rtmp_url("live/cam"));
    wait_stream(&origin, "live/cam");
    assert!(
        edge.wait_log("RTMP source connected", Duration::from_secs(40)),
        "{}",
        edge.log()
    );
    let p = probe(&edge.rtmp_url("live/cam"), 3);
    assert_source_stream(&p, 3, "the edge once the origin has the stream");
}

#[test]
fn edge_pulls_from_origin_over_srt() {
    if !require("ffmpeg") {
        return;
    }
    let origin = Server::start();
    let _publisher = Publisher::rtmp(&source_flv(), &origin.rtmp_url("live/cam"));
    wait_stream(&origin, "live/cam");
    let src = format!("srt://{}?streamid=read:live/cam", origin.srt);
    let edge = Server::start_with(&[], Some(&edge_config(&src)));
    wait_stream(&edge, "live/cam");
    let p = probe(&edge.rtmp_url("live/cam"), 4);
    assert_source_stream_window(&p, 4, "the edge's viewer of an SRT pull", 0.3);
}

/// On demand: the edge pulls only while someone reads. The first reader waits for the first
/// frame instead of being refused; the pull stops a moment after the last reader left; the
/// next reader starts it again (an SRT reader this time).
#[test]
fn on_demand_pull_follows_its_readers() {
    if !require("ffmpeg") {
        return;
    }
    let origin = Server::start();
    let _publisher = Publisher::rtmp(&source_flv(), &origin.rtmp_url("live/cam"));
    wait_stream(&origin, "live/cam");
    let cfg = format!(
        "[paths.\"live/cam\"]\nsource = \"{}\"\nsource_on_demand = true\nsource_on_demand_close_after = \"2s\"\n",
        origin.rtmp_url("live/cam")
    );
    let edge = Server::start_with(&[], Some(&cfg));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !edge.log().contains("RTMP source connected"),
        "pulled before any reader:\n{}",
        edge.log()
    );
    let p = probe(&edge.rtmp_url("live/cam"), 3);
    assert_source_stream(&p, 3, "the first reader of an on-demand path");
    assert!(
        edge.wait_log("on-demand source stopped", Duration::from_secs(10)),
        "{}",
        edge.log()
    );
    // The origin's reader (the pull) is gone too.
    wait_until("the origin loses its reader", Duration::from_secs(5), || {
        let out = std::process::Command::new("curl")
            .args(["-s", &origin.api_url("v1/sessions?protocol=rtmp")])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["items"]
            .as_array()
            .is_some_and(|a| a.iter().all(|s| s["role"] != "reader"))
    });
    // Again, from an SRT reader.
    let url = format!("srt://{}?streamid=read:live/cam", edge.srt);
    let p = probe(&url, 3);
    assert_source_stream_window(&p, 3, "an SRT reader of the on-demand path", 0.3);
    assert_eq!(
        edge.log().matches("starting its on-demand source").count(),
        2,
        "{}",
        edge.log()
    );
}

/// HLS pull: the edge follows the origin's MPEG-TS HLS playlist and republishes it; an RTMP
/// viewer of the edge gets H.264 + AAC at the source's frame rate.
#[test]
fn edge_pulls_from_origin_over_hls() {
    if !require("ffmpeg") {
        return;
    }
    let origin = Server::start_with(&[], Some("[path_defaults.hls]\nvariant = \"mpegts\"\n"));
    let _publisher = Publisher::rtmp(&source_flv(), &origin.rtmp_url("live/cam"));
    wait_stream(&origin, "live/cam");
    let src = origin.http_url("live/cam/index.m3u8");
    let edge = Server::start_with(&[], Some(&edge_config(&src)));
    assert!(
        edge.wait_log("HLS source connected", Duration::from_secs(15)),
        "{}",
        edge.log()
    );
    wait_stream(&edge, "live/cam");
    let p = probe(&edge.rtmp_url("live/cam"), 4);
    assert_source_stream_window(&p, 4, "the edge's viewer of an HLS pull", 0.3);
    p.assert_monotonic();
}

/// The origin's default HLS (fMP4/CMAF segments with `EXT-X-MAP`) pulled by the edge: its RTMP
/// viewers get H.264 + AAC at the source's size and frame rate, in sync, and so do its HLS ones.
#[test]
fn edge_pulls_fmp4_hls_from_origin() {
    if !require("ffmpeg") {
        return;
    }
    let origin = Server::start_with(&[], Some("[path_defaults.hls]\nvariant = \"fmp4\"\n"));
    let _publisher = Publisher::rtmp(&source_flv(), &origin.rtmp_url("live/cam"));
    wait_stream(&origin, "live/cam");
    let (_, _, playlist) = http_get(origin.http, "/live/cam/stream.m3u8", &[]);
    assert!(
        String::from_utf8_lossy(&playlist).contains("#EXT-X-MAP"),
        "the origin serves fMP4: {}",
        String::from_utf8_lossy(&playlist)
    );
    let edge = Server::start_with(&[], Some(&edge_config(&origin.http_url("live/cam/index.m3u8"))));
    assert!(
        edge.wait_log("HLS source connected", Duration::from_secs(15)),
        "{}",
        edge.log()
    );
    wait_stream(&edge, "live/cam");
    let p = probe(&edge.rtmp_url("live/cam"), 4);
    assert_source_stream_window(&p, 4, "the edge's RTMP viewer of an fMP4 HLS pull", 0.3);
    let h = probe(&edge.http_url("live/cam/index.m3u8"), 3);
    assert_eq!(h.video().codec_name, "h264", "{h:?}");
    assert_eq!((h.video().width, h.video().height), (640, 360));
    assert_eq!(h.audio().codec_name, "aac");
    assert!(!edge.log().contains("HLS source failed"), "{}", edge.log());
}

/// ffmpeg's own CMAF HLS (`-hls_segment_type fmp4`) with H.265 and AAC, served by a plain HTTP
/// server: the edge republishes it and an SRT reader gets H.265 at the source's frame rate.
#[test]
fn edge_pulls_ffmpeg_cmaf_h265() {
    if !require("ffmpeg") {
        return;
    }
    let dir = tmp_dir().join(format!("cmaf-h265-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let _writer = Publisher::from_child(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "warning", "-re", "-stream_loop", "-1", "-i"])
            .arg(source_hevc_ts())
            .args(["-c", "copy", "-bsf:a", "aac_adtstoasc", "-tag:v", "hvc1"])
            .args(["-f", "hls", "-hls_segment_type", "fmp4"])
            .args(["-hls_time", "1", "-hls_list_size", "6"])
            .args(["-hls_flags", "delete_segments+temp_file"])
            .args(["-hls_fmp4_init_filename", "init.mp4"])
            .arg("-hls_segment_filename")
            .arg(dir.join("seg%d.m4s"))
            .arg(dir.join("index.m3u8"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until("ffmpeg's first segments", Duration::from_secs(20), || {
        std::fs::read_to_string(dir.join("index.m3u8")).is_ok_and(|t| t.matches(".m4s").count() >= 2)
    });
    let http = MiniHttp::files(dir.clone());
    let edge = Server::start_with(&[], Some(&edge_config(&http.url("index.m3u8"))));
    wait_stream(&edge, "live/cam");
    let url = format!("srt://{}?streamid=read:live/cam", edge.srt);
    let p = probe(&url, 4);
    assert_eq!(p.video().codec_name, "hevc", "{p:?}");
    assert_eq!((p.video().width, p.video().height), (640, 360));
    assert_eq!(p.audio().codec_name, "aac");
    assert_eq!((p.audio().sample_rate, p.audio().channels), (48000, 2));
    let v = p.count(true);
    assert!(
        v >= 108,
        "{v} video frames in 4 s, expected about 120; {}",
        p.stderr
    );
    let a = p.count(false);
    assert!(a >= 168, "{a} audio frames in 4 s, expected about 187");
    assert!(p.starts_with_keyframe());
    p.assert_monotonic();
    p.assert_av_sync_window(0.1, 0.3);
}

/// On demand over SRT: nothing is pulled until a reader comes; the first reader waits for the
/// first frame; the origin shows the edge's SRT reader while the edge has readers, and loses
/// it a moment after the last one left.
#[test]
fn on_demand_srt_pull_follows_its_readers() {
    if !require("ffmpeg") {
        return;
    }
    let origin = Server::start();
    let _publisher = Publisher::rtmp(&source_flv(), &origin.rtmp_url("live/cam"));
    wait_stream(&origin, "live/cam");
    let src = format!("srt://{}?streamid=read:live/cam", origin.srt);
    let edge = Server::start_with(&[], Some(&on_demand_config(&src)));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        readers(&origin, "srt"),
        0,
        "pulled before any reader:\n{}",
        edge.log()
    );
    assert!(!edge.log().contains("SRT source connected"), "{}", edge.log());
    let p = probe(&edge.rtmp_url("live/cam"), 3);
    assert_source_stream_window(&p, 3, "the first reader of an on-demand SRT path", 0.3);
    // A longer reader: the origin's SRT reader (the pull) is there while it reads...
    let mut viewer = reader(&["-i", &edge.rtmp_url("live/cam")]);
    wait_until("the origin's SRT reader", Duration::from_secs(10), || {
        readers(&origin, "srt") == 1
    });
    viewer.stop();
    // ... and goes once the edge has had no reader for 2 s.
    assert!(
        edge.wait_log("on-demand source stopped", Duration::from_secs(15)),
        "{}",
        edge.log()
    );
    wait_until("the origin loses its SRT reader", Duration::from_secs(5), || {
        readers(&origin, "srt") == 0
    });
    wait_until("the edge's SRT publisher leaves", Duration::from_secs(5), || {
        publishers(&edge, "srt") == 0
    });
}

/// On demand over HLS (fMP4 from the origin, through a counting proxy): no request before the
/// first reader, the edge's HLS publisher while it reads, no more requests after it stopped.
#[test]
fn on_demand_hls_pull_follows_its_readers() {
    if !require("ffmpeg") {
        return;
    }
    let origin = Server::start();
    let _publisher = Publisher::rtmp(&source_flv(), &origin.rtmp_url("live/cam"));
    wait_stream(&origin, "live/cam");
    let proxy = MiniHttp::proxy(origin.http);
    let edge = Server::start_with(&[], Some(&on_demand_config(&proxy.url("live/cam/index.m3u8"))));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(proxy.requests(), 0, "pulled before any reader:\n{}", edge.log());
    let p = probe(&edge.rtmp_url("live/cam"), 4);
    assert_source_stream_window(&p, 4, "the first reader of an on-demand HLS path", 0.3);
    assert!(proxy.requests() > 0);
    assert!(
        edge.wait_log("on-demand source stopped", Duration::from_secs(15)),
        "{}",
        edge.log()
    );
    wait_until("the edge's HLS publisher leaves", Duration::from_secs(5), || {
        publishers(&edge, "hls") == 0
    });
    let n = proxy.requests();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        proxy.requests(),
        n,
        "the origin is still asked after the pull stopped"
    );
    // The next reader starts it again.
    let p = probe(&edge.rtmp_url("live/cam"), 2);
    assert_eq!(p.video().codec_name, "h264");
    assert_eq!(
        edge.log().matches("starting its on-demand source").count(),
        2,
        "{}",
        edge.log()
    );
}

/// HLS sources that send garbage (an MPEG-TS segment of random bytes; an fMP4 playlist whose
/// initialization segment is random bytes) end their pull with the reason and are retried;
/// another path of the same server streams on untouched.
#[test]
fn garbage_hls_source_retries_without_touching_other_paths() {
    if !require("ffmpeg") {
        return;
    }
    let dir = tmp_dir().join(format!("garbage-hls-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let garbage: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(dir.join("seg0.ts"), &garbage).unwrap();
    std::fs::write(dir.join("init.mp4"), &garbage[..4096]).unwrap();
    std::fs::write(dir.join("seg0.m4s"), &garbage).unwrap();
    std::fs::write(
        dir.join("ts.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2.0,\nseg0.ts\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("cmaf.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\nseg0.m4s\n",
    )
    .unwrap();
    let http = MiniHttp::files(dir);
    let cfg = format!(
        "[paths.\"live/ts\"]\nsource = \"{}\"\n[paths.\"live/cmaf\"]\nsource = \"{}\"\n[paths.\"live/*\"]\n",
        http.url("ts.m3u8"),
        http.url("cmaf.m3u8")
    );
    let edge = Server::start_with(&[], Some(&cfg));
    let _publisher = Publisher::rtmp(&source_flv(), &edge.rtmp_url("live/cam"));
    wait_stream(&edge, "live/cam");
    for (path, why) in [
        ("live/ts", "segment 0: MPEG-TS"),
        ("live/cmaf", "the initialization segment: fMP4"),
    ] {
        wait_until(&format!("{path} fails twice"), Duration::from_secs(20), || {
            edge.log()
                .lines()
                .filter(|l| l.contains("HLS source failed") && l.contains(&format!("path={path} ")))
                .count()
                >= 2
        });
        let log = edge.log();
        let line = log
            .lines()
            .find(|l| l.contains("HLS source failed") && l.contains(&format!("path={path} ")))
            .unwrap();
        assert!(line.contains(why), "{line}");
    }
    assert!(edge.log().contains("reconnecting in 2 s"), "{}", edge.log());
    let p = probe(&edge.rtmp_url("live/cam"), 3);
    assert_source_stream(&p, 3, "another path of the edge while its HLS sources fail");
}

fn on_demand_config(source: &str) -> String {
    format!(
        "[paths.\"live/cam\"]\nsource = \"{source}\"\nsource_on_demand = true\nsource_on_demand_close_after = \"2s\"\n"
    )
}

/// Sessions of `server` with this protocol and role, from its API.
fn sessions(server: &Server, protocol: &str, role: &str) -> usize {
    let out = Command::new("curl")
        .args(["-s", &server.api_url(&format!("v1/sessions?protocol={protocol}"))])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["items"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|s| s["role"] == role).count())
}

fn readers(server: &Server, protocol: &str) -> usize {
    sessions(server, protocol, "reader")
}

fn publishers(server: &Server, protocol: &str) -> usize {
    sessions(server, protocol, "publisher")
}

/// A tiny HTTP/1.1 server for HLS sources: serves a directory's files, or forwards every
/// request to an upstream server; counts the requests. One request per connection.
struct MiniHttp {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
}

#[derive(Clone)]
enum Serve {
    Files(PathBuf),
    Proxy(SocketAddr),
}

impl MiniHttp {
    fn files(dir: PathBuf) -> MiniHttp {
        Self::start(Serve::Files(dir))
    }

    fn proxy(upstream: SocketAddr) -> MiniHttp {
        Self::start(Serve::Proxy(upstream))
    }

    fn start(serve: Serve) -> MiniHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (n, d) = (requests.clone(), done.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if d.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (serve, n) = (serve.clone(), n.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, &serve, &n);
                });
            }
        });
        MiniHttp { addr, requests, done }
    }

    fn url(&self, rest: &str) -> String {
        format!("http://{}/{rest}", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for MiniHttp {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn handle(mut conn: TcpStream, serve: &Serve, count: &AtomicUsize) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    count.fetch_add(1, Ordering::SeqCst);
    let text = String::from_utf8_lossy(&head).into_owned();
    let target = text.split(' ').nth(1).unwrap_or("/").to_owned();
    match serve {
        Serve::Files(dir) => {
            let name = target.trim_start_matches('/').split('?').next().unwrap_or("");
            let resp = match std::fs::read(dir.join(name))
                .ok()
                .filter(|_| !name.contains(".."))
            {
                Some(body) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&body);
                    r
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            };
            conn.write_all(&resp)
        }
        Serve::Proxy(upstream) => {
            let mut up = TcpStream::connect(upstream)?;
            let req = format!("GET {target} HTTP/1.1\r\nHost: {upstream}\r\nConnection: close\r\n\r\n");
            up.write_all(req.as_bytes())?;
            let mut resp = Vec::new();
            up.read_to_end(&mut resp)?;
            conn.write_all(&resp)
        }
    }
}
