//! Test kit for integration tests: runs the real `sluice` binary on free loopback ports and
//! drives it with ffmpeg/ffprobe.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running server; killed on drop. Its log is kept for assertions and printed on failure.
pub struct Server {
    child: Child,
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
    pub srt: SocketAddr,
    /// WebRTC HTTP (WHIP/WHEP) and the shared media UDP port.
    pub webrtc: SocketAddr,
    pub webrtc_udp: SocketAddr,
    /// The control API (paths, sessions, kick).
    pub api: SocketAddr,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: SocketAddr,
    /// Recording playback (`/list`, `/get`).
    pub playback: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fails the test when a peer program is missing in CI; elsewhere skips with a message.
pub fn require(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{tool} is required in CI; run scripts/install-test-deps.sh");
        }
        eprintln!("skipping: {tool} not installed (run scripts/install-test-deps.sh)");
    }
    ok
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[], None)
    }

    /// Starts the server with extra `SLUICE_*` variables and an optional config file text.
    ///
    /// Ports are picked free, but another test may take one before the server binds it; a
    /// start that fails with "already in use" is retried on new ports.
    pub fn start_with(env: &[(&str, &str)], config: Option<&str>) -> Server {
        for _ in 0..5 {
            if let Some(server) = Self::try_start(env, config) {
                return server;
            }
        }
        panic!("could not find free ports for the server in 5 tries");
    }

    fn try_start(env: &[(&str, &str)], config: Option<&str>) -> Option<Server> {
        // Distinct ports: two picks of a free port can return the same one before either binds.
        let mut taken = std::collections::HashSet::new();
        let mut tcp = || loop {
            let p = free_port();
            if taken.insert(p) {
                return p;
            }
        };
        let rtmp: SocketAddr = format!("127.0.0.1:{}", tcp()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", tcp()).parse().unwrap();
        let webrtc: SocketAddr = format!("127.0.0.1:{}", tcp()).parse().unwrap();
        let api: SocketAddr = format!("127.0.0.1:{}", tcp()).parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", tcp()).parse().unwrap();
        let playback: SocketAddr = format!("127.0.0.1:{}", tcp()).parse().unwrap();
        let ice_tcp = tcp();
        let srt: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let webrtc_udp: SocketAddr = loop {
            let p = free_udp_port();
            if p != srt.port() {
                break format!("127.0.0.1:{p}").parse().unwrap();
            }
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.env("SLUICE_RTMP_LISTEN", rtmp.to_string())
            .env("SLUICE_HTTP_LISTEN", http.to_string())
            .env("SLUICE_SRT_LISTEN", srt.to_string())
            .env("SLUICE_WEBRTC_LISTEN", webrtc.to_string())
            .env("SLUICE_WEBRTC_UDP_LISTEN", webrtc_udp.to_string())
            .env("SLUICE_API_LISTEN", api.to_string())
            .env("SLUICE_METRICS_LISTEN", metrics.to_string())
            .env("SLUICE_PLAYBACK_LISTEN", playback.to_string())
            .env("SLUICE_WEBRTC_TCP_LISTEN", format!("127.0.0.1:{ice_tcp}"))
            .env("SLUICE_LOG_LEVEL", "debug")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(text) = config {
            // The server keeps API changes in a state file beside its configuration file
            // (`NAME.state.toml`): one left by an earlier test whose server had the same port
            // would be applied over this configuration, so it goes first.
            let file = tmp_dir().join(format!("config-{}-{}.toml", std::process::id(), rtmp.port()));
            let _ = std::fs::remove_file(file.with_extension("state.toml"));
            std::fs::write(&file, text).unwrap();
            cmd.arg("--config").arg(file);
        }
        let mut child = cmd.spawn().expect("start sluice");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut server = Server {
            child,
            rtmp,
            http,
            srt,
            webrtc,
            webrtc_udp,
            api,
            metrics,
            playback,
            log,
        };
        let webrtc_on = !env
            .iter()
            .any(|(k, v)| *k == "SLUICE_WEBRTC_ENABLED" && *v == "false");
        let api_on = !env
            .iter()
            .any(|(k, v)| *k == "SLUICE_API_ENABLED" && *v == "false");
        let metrics_on = !env
            .iter()
            .any(|(k, v)| *k == "SLUICE_METRICS_ENABLED" && *v == "false");
        let playback_on = !env
            .iter()
            .any(|(k, v)| *k == "SLUICE_PLAYBACK_ENABLED" && *v == "false");
        let mut ports = vec![rtmp, http];
        if playback_on {
            ports.push(playback);
        }
        if api_on {
            ports.push(api);
        }
        if metrics_on {
            ports.push(metrics);
        }
        if webrtc_on {
            ports.push(webrtc);
        }
        for addr in ports {
            if !server.wait_port(addr) {
                return None;
            }
        }
        // SRT is UDP: no port to poke; the log says when it listens (when enabled).
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && !server.log().contains("SRT listening") {
            let log = server.log();
            if log.contains("already in use") || log.contains("cannot listen for SRT") {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    /// Waits until `addr` accepts; false when the server exited because a port was taken.
    fn wait_port(&mut self, addr: SocketAddr) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            if self.child.try_wait().ok().flatten().is_some() {
                // The log is read by another thread: give it time to catch up.
                let until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < until {
                    if self.log().contains("already in use") {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                panic!("server exited at start; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not listen on {addr}; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn rtmp_url(&self, path: &str) -> String {
        format!("rtmp://{}/{path}", self.rtmp)
    }

    /// `srt://` URL with a streamid, as ffmpeg and srt-live-transmit take it.
    pub fn srt_url(&self, streamid: &str) -> String {
        format!("srt://{}?streamid={streamid}&pkt_size=1316", self.srt)
    }

    /// `http://` URL on the WebRTC listener (WHIP/WHEP and the WebRTC pages).
    pub fn webrtc_url(&self, rest: &str) -> String {
        format!("http://{}/{rest}", self.webrtc)
    }

    /// `http://` URL on the control API, e.g. `api_url("v1/paths")`.
    pub fn api_url(&self, rest: &str) -> String {
        format!("http://{}/{rest}", self.api)
    }

    pub fn http_url(&self, rest: &str) -> String {
        format!("http://{}/{rest}", self.http)
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not exit after SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- sluice log ----\n{}", self.log());
        }
    }
}

pub fn tmp_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sluice-it");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 12 s test source encoded once and cached: testsrc2 640x360 30 fps, x264 with B-frames and
/// a 2 s GOP, AAC 48 kHz stereo. Publishing it with `-c copy` costs almost no CPU.
pub fn source_flv() -> PathBuf {
    h264_aac_source("src-h264-aac-v1.flv", "2")
}

/// The same source without B-frames, as WebRTC needs (browsers drop out-of-order frames):
/// what an encoder set up for WebRTC (OBS with `bframes=0`, a camera) sends.
pub fn source_flv_no_bframes() -> PathBuf {
    h264_aac_source("src-h264-aac-nobf-v1.flv", "0")
}

fn h264_aac_source(name: &str, bframes: &str) -> PathBuf {
    cached_source(
        name,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:sample_rate=48000",
            "-t",
            "12",
            "-c:v",
            "libx264",
            "-preset",
            "superfast",
            "-bf",
            bframes,
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ac",
            "2",
            "-b:a",
            "96k",
            "-f",
            "flv",
        ],
    )
}

fn cached_source(name: &str, args: &[&str]) -> PathBuf {
    let out = tmp_dir().join(name);
    if out.exists() {
        return out;
    }
    let tmp = tmp_dir().join(format!("{name}.{}.tmp", std::process::id()));
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-y"])
        .args(args)
        .arg(&tmp)
        .status()
        .expect("run ffmpeg");
    assert!(st.success(), "ffmpeg could not make the test source");
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// An ffmpeg process publishing `src` in a loop to `url` in real time; killed on drop.
pub struct Publisher {
    child: Child,
    pub stderr: Arc<Mutex<String>>,
}

impl Publisher {
    pub fn rtmp(src: &Path, url: &str) -> Publisher {
        Self::ffmpeg(src, "flv", url)
    }

    /// ffmpeg publishing MPEG-TS over SRT (libsrt), looping `src`.
    pub fn srt(src: &Path, url: &str) -> Publisher {
        Self::ffmpeg(src, "mpegts", url)
    }

    fn ffmpeg(src: &Path, format: &str, url: &str) -> Publisher {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "warning", "-re", "-stream_loop", "-1", "-i"])
            .arg(src)
            .args(["-c", "copy", "-f", format, url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ffmpeg");
        Self::from_child(child)
    }

    /// Wraps any publishing process (its stderr is collected).
    pub fn from_child(mut child: Child) -> Publisher {
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let s2 = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = pipe.read_to_string(&mut buf);
            s2.lock().unwrap().push_str(&buf);
        });
        Publisher { child, stderr }
    }

    /// Waits for the process to exit (for publishers that are expected to be refused).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Ends it as a user would (SIGTERM: ffmpeg closes its connection cleanly).
    pub fn terminate(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until the server reports the path's stream started.
pub fn wait_stream(server: &Server, path: &str) {
    // The core logs `stream started path=P tracks=...` once the tracks are known.
    let needle = format!("path={path} ");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ok = false;
    while Instant::now() < deadline && !ok {
        ok = server
            .log()
            .lines()
            .any(|l| l.contains("stream started") && l.contains(&needle));
        if !ok {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(ok, "stream {path} did not start; log:\n{}", server.log());
}

#[derive(Debug, Clone)]
pub struct StreamDesc {
    pub codec_type: String,
    pub codec_name: String,
    pub width: u32,
    pub height: u32,
    pub sample_rate: u32,
    pub channels: u32,
}

#[derive(Debug, Clone)]
pub struct Packet {
    pub video: bool,
    pub pts: f64,
    pub dts: f64,
    pub key: bool,
}

/// What ffprobe saw reading `url` for `seconds` of media.
#[derive(Debug)]
pub struct Probe {
    pub streams: Vec<StreamDesc>,
    pub packets: Vec<Packet>,
    pub stderr: String,
}

impl Probe {
    pub fn video(&self) -> &StreamDesc {
        self.streams
            .iter()
            .find(|s| s.codec_type == "video")
            .expect("a video stream")
    }
    pub fn audio(&self) -> &StreamDesc {
        self.streams
            .iter()
            .find(|s| s.codec_type == "audio")
            .expect("an audio stream")
    }
    pub fn count(&self, video: bool) -> usize {
        self.packets.iter().filter(|p| p.video == video).count()
    }
    fn span(&self, video: bool) -> (f64, f64) {
        let ts: Vec<f64> = self
            .packets
            .iter()
            .filter(|p| p.video == video)
            .map(|p| p.dts)
            .collect();
        let lo = ts.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = ts.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    }
    /// Asserts that decode timestamps never go backwards, per stream.
    pub fn assert_monotonic(&self) {
        for video in [true, false] {
            let ts: Vec<f64> = self
                .packets
                .iter()
                .filter(|p| p.video == video)
                .map(|p| p.dts)
                .collect();
            for w in ts.windows(2) {
                assert!(
                    w[1] >= w[0],
                    "{} dts went backwards: {} then {}",
                    if video { "video" } else { "audio" },
                    w[0],
                    w[1]
                );
            }
        }
    }
    /// Asserts that audio and video cover the same time span within `tol` seconds at both ends.
    pub fn assert_av_sync(&self, tol: f64) {
        self.assert_av_sync_window(tol, tol)
    }

    /// Like [`assert_av_sync`], with its own tolerance for where the window was cut: a source
    /// that groups several audio frames per PES (ffmpeg's MPEG-TS muxer does, up to ~250 ms)
    /// delivers audio in bursts, so a reader stopped at an instant sees audio end earlier.
    pub fn assert_av_sync_window(&self, tol: f64, end_tol: f64) {
        let (v0, v1) = self.span(true);
        let (a0, a1) = self.span(false);
        // The two streams of one window start and end together, up to one frame of each.
        let frame = 1.0 / 30.0 + 1024.0 / 48000.0;
        assert!(
            (v0 - a0).abs() <= tol + frame,
            "A/V start apart: video {v0:.3} audio {a0:.3}"
        );
        assert!(
            (v1 - a1).abs() <= end_tol + frame,
            "A/V end apart: video {v1:.3} audio {a1:.3}"
        );
    }
    /// The first video packet is a keyframe (the reader started at the GOP cache or a keyframe).
    pub fn starts_with_keyframe(&self) -> bool {
        self.packets.iter().find(|p| p.video).is_some_and(|p| p.key)
    }
}

/// Reads `url` with ffprobe for `seconds` of media: streams and every packet.
pub fn probe(url: &str, seconds: u32) -> Probe {
    probe_interval(url, &format!("%+{seconds}"), seconds + 20)
}

/// Reads the first `packets` packets of `url` with ffprobe (for codecs where ffprobe's
/// time-based read interval misbehaves, such as Opus in MPEG-TS).
pub fn probe_packets(url: &str, packets: u32) -> Probe {
    probe_interval(url, &format!("%+#{packets}"), 30)
}

fn probe_interval(url: &str, interval: &str, timeout_secs: u32) -> Probe {
    let out = Command::new("timeout")
        .arg(format!("{timeout_secs}"))
        .args(["ffprobe", "-hide_banner", "-v", "error", "-rw_timeout", "15000000"])
        .args(["-read_intervals", interval])
        .args(["-show_entries", "stream=codec_type,codec_name,width,height,sample_rate,channels:packet=codec_type,pts_time,dts_time,flags"])
        .args(["-of", "compact=p=1:nk=0", url])
        .output()
        .expect("run ffprobe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
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
            let (Some(pts), dts) = (num("pts_time"), num("dts_time")) else {
                continue;
            };
            packets.push(Packet {
                video: kv.get("codec_type") == Some(&"video"),
                pts,
                dts: dts.unwrap_or(pts),
                key: kv.get("flags").is_some_and(|f| f.starts_with('K')),
            });
        } else if line.starts_with("stream|") {
            streams.push(StreamDesc {
                codec_type: kv.get("codec_type").unwrap_or(&"").to_string(),
                codec_name: kv.get("codec_name").unwrap_or(&"").to_string(),
                width: num("width").unwrap_or(0.0) as u32,
                height: num("height").unwrap_or(0.0) as u32,
                sample_rate: num("sample_rate").unwrap_or(0.0) as u32,
                channels: num("channels").unwrap_or(0.0) as u32,
            });
        }
    }
    Probe {
        streams,
        packets,
        stderr,
    }
}

/// Asserts what a user checks on a stream made from [`source_flv`].
pub fn assert_source_stream(p: &Probe, seconds: u32, what: &str) {
    assert_source_stream_window(p, seconds, what, 0.1)
}

/// [`assert_source_stream`] for sources that arrive as MPEG-TS (see `assert_av_sync_window`).
pub fn assert_source_stream_window(p: &Probe, seconds: u32, what: &str, end_tol: f64) {
    assert_eq!(p.video().codec_name, "h264", "{what}: {p:?}");
    assert_eq!((p.video().width, p.video().height), (640, 360), "{what}");
    assert_eq!(p.audio().codec_name, "aac", "{what}");
    assert_eq!(p.audio().sample_rate, 48000, "{what}");
    assert_eq!(p.audio().channels, 2, "{what}");
    let want_v = (seconds * 30) as usize;
    let v = p.count(true);
    assert!(
        v >= want_v * 9 / 10,
        "{what}: {v} video frames in {seconds} s, expected about {want_v}; stderr: {}",
        p.stderr
    );
    let want_a = (seconds * 48000 / 1024) as usize;
    let a = p.count(false);
    assert!(
        a >= want_a * 9 / 10,
        "{what}: {a} audio frames in {seconds} s, expected about {want_a}"
    );
    assert!(
        p.starts_with_keyframe(),
        "{what}: first video frame is not a keyframe"
    );
    p.assert_monotonic();
    p.assert_av_sync_window(0.1, end_tol);
}

/// A plain HTTP/1.1 GET (Connection: close): status, lower-cased headers, body.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::Write;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
    out
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// An H.265 + AAC source like [`source_flv`], in MPEG-TS (x265, 2 s GOP).
pub fn source_hevc_ts() -> PathBuf {
    cached_source(
        "src-h265-aac-v1.ts",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:sample_rate=48000",
            "-t",
            "12",
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error:bframes=2",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ac",
            "2",
            "-b:a",
            "96k",
            "-f",
            "mpegts",
        ],
    )
}

/// A 5 Mb/s H.264 + AAC source (1280x720, 30 fps, 2 s GOP, B-frames), for loss tests.
pub fn source_5mbps_ts() -> PathBuf {
    cached_source(
        "src-h264-5mbps-v1.ts",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:sample_rate=48000",
            "-t",
            "12",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "2",
            "-b:v",
            "4800k",
            "-minrate",
            "4800k",
            "-maxrate",
            "4800k",
            "-bufsize",
            "2400k",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ac",
            "2",
            "-b:a",
            "128k",
            "-muxrate",
            "5200k",
            "-f",
            "mpegts",
        ],
    )
}

/// A UDP relay that drops a share of datagrams at random each way and delays the rest, the
/// way a lossy internet path would (this kernel has no netem). Seeded, so runs repeat.
pub struct LossyRelay {
    pub addr: SocketAddr,
    pub dropped: Arc<std::sync::atomic::AtomicU64>,
    pub forwarded: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl LossyRelay {
    pub fn start(target: SocketAddr, loss_percent: u32, delay: Duration, seed: u64) -> LossyRelay {
        use std::net::UdpSocket;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::mpsc;
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        back.connect(target).unwrap();
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        }
        let addr = front.local_addr().unwrap();
        let dropped = Arc::new(AtomicU64::new(0));
        let forwarded = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        // One direction: receive, maybe drop, send after `delay` (constant, so order is kept).
        let pipe = |from: Arc<UdpSocket>, to: Arc<UdpSocket>, to_client: bool, seed: u64| {
            let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
            let (stop2, client2) = (stop.clone(), client.clone());
            std::thread::spawn(move || {
                while let Ok((at, pkt)) = rx.recv() {
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                    if to_client {
                        let dest = *client2.lock().unwrap();
                        if let Some(c) = dest {
                            let _ = to.send_to(&pkt, c);
                        }
                    } else {
                        let _ = to.send(&pkt);
                    }
                }
            });
            let (stop3, client3, dropped, forwarded) =
                (stop2.clone(), client.clone(), dropped.clone(), forwarded.clone());
            std::thread::spawn(move || {
                let mut state = seed | 1;
                let mut buf = vec![0u8; 2048];
                while !stop3.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = from.recv_from(&mut buf) else {
                        continue;
                    };
                    if !to_client {
                        *client3.lock().unwrap() = Some(peer);
                    }
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    if (state % 100) < loss_percent as u64 {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    forwarded.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send((Instant::now() + delay, buf[..n].to_vec()));
                }
            });
        };
        pipe(front.clone(), back.clone(), false, seed);
        pipe(back, front, true, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        LossyRelay {
            addr,
            dropped,
            forwarded,
            stop,
        }
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Video presentation times ffprobe saw, sorted (B-frames reorder them), in seconds.
pub fn video_pts_sorted(p: &Probe) -> Vec<f64> {
    let mut v: Vec<f64> = p.packets.iter().filter(|p| p.video).map(|p| p.pts).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// Asserts no video frame is missing: consecutive presentation times are one frame apart.
pub fn assert_every_frame(p: &Probe, fps: f64, what: &str) {
    let pts = video_pts_sorted(p);
    assert!(
        pts.len() as f64 > fps * 3.0,
        "{what}: only {} video frames",
        pts.len()
    );
    let frame = 1.0 / fps;
    let gaps: Vec<(f64, f64)> = pts
        .windows(2)
        .filter(|w| w[1] - w[0] > frame * 1.5)
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        gaps.is_empty(),
        "{what}: {} frames missing, gaps at {gaps:?}",
        gaps.len()
    );
}

/// Waits until `f` holds, polling every 100 ms; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// An ffmpeg reader of `args` (its input), decoding nothing, discarding what it reads.
pub fn reader(args: &[&str]) -> Publisher {
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error"])
        .args(args)
        .args(["-f", "null", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Publisher::from_child(child)
}

/// A constant-bitrate source (x264 with HRD CBR filler, AAC), in MP4 so ffprobe can tell each
/// stream's bitrate, the encoder's figure the API must match.
pub fn cbr_source() -> (PathBuf, f64) {
    let out = tmp_dir().join("src-cbr-1500k-v1.mp4");
    if !out.exists() {
        let tmp = tmp_dir().join(format!("cbr.{}.mp4", std::process::id()));
        let st = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=640x360:rate=30",
            ])
            .args([
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=1000:sample_rate=48000",
                "-t",
                "20",
            ])
            .args(["-c:v", "libx264", "-preset", "superfast", "-bf", "0", "-g", "30"])
            .args([
                "-b:v", "1500k", "-minrate", "1500k", "-maxrate", "1500k", "-bufsize", "750k",
            ])
            .args(["-x264-params", "nal-hrd=cbr:force-cfr=1", "-pix_fmt", "yuv420p"])
            .args(["-c:a", "aac", "-b:a", "128k", "-ac", "2"])
            .arg(&tmp)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::rename(&tmp, &out).unwrap();
    }
    let o = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=bit_rate",
            "-of",
            "csv=p=0",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let total: f64 = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .sum();
    assert!(
        total > 1_000_000.0,
        "ffprobe bitrates: {:?}",
        String::from_utf8_lossy(&o.stdout)
    );
    (out, total)
}

/// `tests/web`: the hls.js players driven in Chromium (llhls.mjs, player.mjs, vod.mjs).
pub fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/web")
}

/// Runs `node tests/web/SCRIPT ARGS...` (bounded by `timeout_secs`, with `env` added), echoes
/// what it printed to the test's output, and returns the last JSON line it printed (each script
/// ends with one result object).
pub fn run_web_script(
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout_secs: u32,
) -> serde_json::Value {
    let out = Command::new("timeout")
        .arg(timeout_secs.to_string())
        .arg("node")
        .arg(web_dir().join(script))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{script}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no result from {script}"));
    serde_json::from_str(line).unwrap()
}

/// Chromium, playwright-core (tests/browser) and hls.js (tests/web, installed from its lock
/// file when missing). Panics in CI when missing; elsewhere says so and returns false.
pub fn have_hlsjs_browser() -> bool {
    let browser =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core");
    if !web_dir().join("node_modules/hls.js").exists() && require("npm") {
        let _ = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(web_dir())
            .status();
    }
    let ok = Path::new("/usr/bin/chromium").exists()
        && browser.exists()
        && web_dir().join("node_modules/hls.js").exists();
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "chromium, playwright-core and hls.js are required in CI; run scripts/install-test-deps.sh \
                 and (cd crates/server/tests/web && npm ci)"
            );
        }
        eprintln!("skipping the browser part: chromium, playwright-core or hls.js missing");
    }
    ok
}

/// A test certificate authority and server certificates for localhost and 127.0.0.1, made with
/// the openssl CLI in a directory of their own (removed on drop).
pub struct TestCa {
    pub dir: PathBuf,
}

impl TestCa {
    /// `ca.pem` (and its key), named `CN=Sluice-Test-CA-NAME`.
    pub fn new(name: &str) -> TestCa {
        let dir = tmp_dir().join(format!("ca-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = TestCa { dir };
        ca.openssl(&format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
             -out ca.pem -days 2 -subj /CN=Sluice-Test-CA-{name} \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        ));
        std::fs::write(
            ca.path("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        ca
    }

    /// Runs `openssl` with these whitespace-separated arguments in the directory.
    pub fn openssl(&self, args: &str) {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(&self.dir)
            .output()
            .expect("openssl CLI (scripts/install-test-deps.sh)");
        assert!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// NAME.pem and NAME.key: a certificate for localhost and 127.0.0.1 with this subject CN and
    /// serial, signed by the CA.
    pub fn server_cert(&self, name: &str, subject: &str, serial: u32) {
        self.openssl(&format!(
            "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout {name}.key \
             -out {name}.csr -subj /CN={subject}"
        ));
        self.openssl(&format!(
            "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -set_serial {serial} -days 2 \
             -extfile ext.cnf -out {name}.pem"
        ));
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The serial and subject of the certificate a new TLS connection to 127.0.0.1:`port` gets
/// (openssl s_client, verifying against `ca`): e.g. ("serial=01", "subject=CN = localhost").
pub fn served_cert(port: u16, ca: &Path) -> (String, String) {
    let out = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", "localhost", "-verify_return_error", "-CAfile"])
        .arg(ca)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl s_client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-subject"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    x509.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let text = String::from_utf8(x509.wait_with_output().unwrap().stdout).unwrap();
    let line = |p: &str| {
        text.lines()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no {p} in {text:?}"))
            .to_owned()
    };
    (line("serial="), line("subject="))
}

/// Runs curl with `args` (bounded to 20 s): its exit status, stdout and stderr.
pub fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("timeout")
        .args(["20", "curl", "-sS"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Re-executes the calling test inside a private network namespace; returns false in the
/// parent (which has asserted the child's success), true where the test body should run.
pub fn in_netns(test: &str) -> bool {
    if std::env::var("TEST_IN_NETNS").is_ok() {
        return true;
    }
    let name = format!("sluice-{}-{}", std::process::id(), test.len());
    let ok = Command::new("ip")
        .args(["netns", "add", &name])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("cannot create a network namespace (not root?): running on loopback only");
        return true;
    }
    let _ = Command::new("ip")
        .args(["-n", &name, "link", "set", "lo", "up"])
        .status();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &name])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env("TEST_IN_NETNS", &name)
        .output()
        .unwrap();
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "{test} failed inside its network namespace");
    assert!(
        text.contains("1 passed"),
        "{test} did not run inside its namespace"
    );
    false
}

/// ISO BMFF boxes at the top of `b`: (type, payload).
pub fn boxes(mut b: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 8 {
        let n = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
        assert!(n >= 8 && n <= b.len(), "box size {n} of {}", b.len());
        out.push((String::from_utf8_lossy(&b[4..8]).into_owned(), &b[8..n]));
        b = &b[n..];
    }
    assert!(b.is_empty());
    out
}

pub fn child<'a>(b: &'a [u8], kind: &str) -> Vec<&'a [u8]> {
    boxes(b)
        .into_iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, p)| p)
        .collect()
}

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// ffmpeg encoding a test picture and tone live (x264 with B-frames, 2 s GOP, AAC) and
/// publishing it over RTMP: regular timestamps for as long as the test runs. (A looped file
/// jumps in time where it wraps; the part that ends there is longer than the others.)
pub fn live_publisher(url: &str) -> Publisher {
    let child = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "warning", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args([
            "-c:v",
            "libx264",
            // ultrafast (B-frames put back): a third of veryfast's CPU, which on 2 cores beside
            // a browser test delayed the server's packaging by hundreds of milliseconds.
            "-preset",
            "ultrafast",
            "-bf",
            "2",
            "-g",
            "60",
            "-keyint_min",
            "60",
        ])
        .args([
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ac",
            "2",
            "-b:a",
            "96k",
        ])
        .args(["-f", "flv", url])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ffmpeg");
    Publisher::from_child(child)
}

/// An nginx HTTP reverse proxy with `proxy_cache` in front of `upstream`; its access log says
/// each request's cache status. Stopped on drop.
pub struct NginxCache {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl NginxCache {
    /// Cache for everything but playlists (which pass through, each viewer's own).
    pub fn start(upstream: SocketAddr) -> NginxCache {
        Self::with_locations(
            upstream,
            "location ~ \\.m3u8$ { proxy_pass http://sluice; proxy_buffering off; }\n\
             location / { proxy_pass http://sluice; proxy_cache hls; proxy_cache_lock on;\n\
               add_header X-Cache-Status $upstream_cache_status; }\n",
        )
    }

    /// The CDN set-up of docs/hls.md: everything cached as Sluice's headers say, playlists with
    /// their blocking-reload query in the key, requests for the same URL collapsed into one.
    pub fn cdn(upstream: SocketAddr) -> NginxCache {
        Self::with_locations(
            upstream,
            "location / { proxy_pass http://sluice; proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\"; proxy_set_header Host $host;\n\
               proxy_cache hls; proxy_cache_lock on; proxy_cache_lock_timeout 10s;\n\
               proxy_cache_lock_age 10s; proxy_cache_valid 200 206 1s; proxy_cache_revalidate on;\n\
               add_header X-Cache-Status $upstream_cache_status; }\n",
        )
    }

    fn with_locations(upstream: SocketAddr, locations: &str) -> NginxCache {
        let port = free_port();
        let dir = tmp_dir().join(format!("nginx-cache-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = format!(
            "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
               log_format cache '$request_uri $status $upstream_cache_status';\n\
               access_log {d}/access.log cache;\n\
               client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3;\n\
               uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;\n\
               proxy_cache_path {d}/cache keys_zone=hls:10m;\n\
               upstream sluice {{ server {upstream}; keepalive 64; }}\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 {locations}\
               }}\n\
             }}\n",
            d = dir.display()
        );
        let child = spawn_nginx(&dir, &conf);
        let n = NginxCache { child, port, dir };
        wait_listening("nginx listens", port);
        n
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }
}

impl Drop for NginxCache {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

pub const NGINX_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// nginx with libnginx-mod-rtmp (and ffmpeg). Panics in CI when missing.
pub fn have_nginx() -> bool {
    if !require("ffmpeg") {
        return false;
    }
    let ok = std::path::Path::new(NGINX_MODULE).exists();
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("nginx with libnginx-mod-rtmp is required in CI; run scripts/install-test-deps.sh");
        }
        eprintln!("skipping: nginx-rtmp missing (run scripts/install-test-deps.sh)");
    }
    ok
}

/// An nginx-rtmp server on `port` with application `live`; stopped on drop.
pub struct Nginx {
    pub child: Child,
    pub port: u16,
}

impl Nginx {
    pub fn start(port: u16) -> Nginx {
        let dir = tmp_dir().join(format!("nginx-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = format!(
            "load_module {NGINX_MODULE};\nuser root;\nworker_processes 1;\ndaemon off;\n\
             pid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 1024; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
             application live {{ live on; }} }} }}\n",
            d = dir.display()
        );
        let child = spawn_nginx(&dir, &conf);
        let n = Nginx { child, port };
        wait_listening("nginx listens", port);
        n
    }

    pub fn url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.port)
    }

    /// Stops nginx (SIGTERM to the master: a fast shutdown that ends its worker too).
    pub fn stop(&mut self) -> bool {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// nginx in the foreground with `conf` written to `dir/nginx.conf`, `dir` its prefix.
pub fn spawn_nginx(dir: &Path, conf: &str) -> Child {
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    Command::new("nginx")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx")
}

/// Waits (10 s at most) until 127.0.0.1:`port` accepts.
pub fn wait_listening(what: &str, port: u16) {
    wait_until(what, Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}
