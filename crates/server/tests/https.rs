//! HTTPS on the HTTP listeners' own ports: ffprobe reads HLS and curl the API over TLS
//! (verifying with the test's CA), HTTP/2 or HTTP/1.1 as the client asks through ALPN, a
//! certificate replaced on disk is served to new connections while HTTP-FLV readers (HTTP/2 and
//! HTTP/1.1) go on, plain HTTP or silent clients on an HTTPS port are turned away without
//! touching anyone else, and Chromium plays WHEP from the page served over HTTPS.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The listeners that take `tls_cert`/`tls_key`, by their environment prefix.
const SECTIONS: [&str; 5] = ["HTTP", "WEBRTC", "API", "PLAYBACK", "METRICS"];

/// Sluice with HTTPS on every HTTP listener, serving `live.pem`/`live.key` of `ca`, with a
/// header timeout of 2 s.
fn start(ca: &TestCa) -> Server {
    let (cert, key) = (ca.path("live.pem"), ca.path("live.key"));
    let mut env: Vec<(String, String)> = vec![("SLUICE_HTTP_HEADER_TIMEOUT".into(), "2s".into())];
    for s in SECTIONS {
        env.push((format!("SLUICE_{s}_TLS_CERT"), cert.display().to_string()));
        env.push((format!("SLUICE_{s}_TLS_KEY"), key.display().to_string()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = Server::start_with(&env, None);
    assert!(
        server.wait_log(
            "HTTPS (HLS, HTTP-FLV, player) listening on",
            Duration::from_secs(10)
        ),
        "no HTTPS listener:\n{}",
        server.log()
    );
    server
}

/// `https://localhost:PORT/REST`.
fn https(addr: std::net::SocketAddr, rest: &str) -> String {
    format!("https://localhost:{}/{rest}", addr.port())
}

/// curl GET over HTTPS verifying with `ca`, with `extra` arguments: (status, HTTP version, body).
fn get(url: &str, ca: &std::path::Path, extra: &[&str]) -> (String, String, String) {
    let ca = ca.to_str().unwrap();
    let mut args = vec!["--cacert", ca, "-o", "-", "-w", "\n%{http_code} %{http_version}"];
    args.extend_from_slice(extra);
    args.push(url);
    let (ok, out, err) = curl(&args);
    assert!(ok, "curl {url}: {err}");
    let (body, last) = out.rsplit_once('\n').unwrap();
    let (code, version) = last.split_once(' ').unwrap();
    (code.to_owned(), version.to_owned(), body.to_owned())
}

/// ffprobe's streams of `url` as `codec_name,width,height` lines, verifying the server with `ca`;
/// Err with its stderr.
fn probe_verified(url: &str, ca: &std::path::Path) -> Result<Vec<String>, String> {
    let out = Command::new("timeout")
        .args([
            "30",
            "ffprobe",
            "-hide_banner",
            "-v",
            "error",
            "-tls_verify",
            "1",
            "-ca_file",
        ])
        .arg(ca)
        .args([
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
            url,
        ])
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches(',').to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    // Streams are listed once more under their program.
    lines.sort();
    lines.dedup();
    Ok(lines)
}

#[test]
fn hls_api_and_every_listener_over_https() {
    if !require("ffmpeg") || !require("ffprobe") || !require("openssl") || !require("curl") {
        return;
    }
    let ca = TestCa::new("https-main");
    ca.server_cert("live", "localhost", 1);
    let server = start(&ca);
    let ca_pem = ca.path("ca.pem");
    let _publisher = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/x"));
    wait_stream(&server, "live/x");

    // HLS over HTTPS: ffprobe checks the certificate against our CA and sees the stream.
    let hls = https(server.http, "live/x/index.m3u8");
    assert_eq!(
        probe_verified(&hls, &ca_pem).unwrap(),
        ["aac", "h264,640,360"],
        "HLS over HTTPS"
    );
    let p = probe(&hls, 4);
    assert_source_stream(&p, 4, "HLS over HTTPS");
    // A reader that trusts another CA refuses the server.
    let other = TestCa::new("https-other");
    let e = probe_verified(&hls, &other.path("ca.pem")).unwrap_err();
    assert!(e.contains("verif") || e.contains("certificate"), "{e}");

    // The API: HTTP/2 when the client offers it, HTTP/1.1 when it asks for that.
    let paths = https(server.api, "v1/paths");
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let (code, version, body) = get(&paths, &ca_pem, &[flag]);
        assert_eq!((code.as_str(), version.as_str()), ("200", want), "{flag}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert!(body.contains("\"live/x\""), "{flag}: {v}");
    }
    // The listeners say they speak HTTPS.
    let (code, _, body) = get(&https(server.api, "v1/server"), &ca_pem, &["--http2"]);
    assert_eq!(code, "200");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    for (name, addr) in [
        ("http", server.http),
        ("webrtc", server.webrtc),
        ("api", server.api),
        ("playback", server.playback),
        ("metrics", server.metrics),
    ] {
        assert_eq!(
            v["listeners"][name],
            format!("{addr} (https)"),
            "{name}: {}",
            v["listeners"]
        );
    }
    assert_eq!(v["listeners"]["rtmp"], server.rtmp.to_string());

    // The other listeners answer over HTTPS, in both versions.
    for flag in ["--http2", "--http1.1"] {
        let (code, _, body) = get(&https(server.metrics, "metrics"), &ca_pem, &[flag]);
        assert!(
            code == "200" && body.contains("sluice_"),
            "metrics {flag}: {code}"
        );
        let (code, _, body) = get(&https(server.webrtc, "live/x/"), &ca_pem, &[flag]);
        assert!(
            code == "200" && body.contains("<video"),
            "WebRTC page {flag}: {code}"
        );
        let (code, _, _) = get(&https(server.playback, "list?path=live/x"), &ca_pem, &[flag]);
        assert!(code == "200" || code == "404", "playback {flag}: {code}");
        let (code, version, body) = get(&https(server.http, "live/x/index.m3u8"), &ca_pem, &[flag]);
        assert!(
            code == "200" && body.starts_with("#EXTM3U"),
            "playlist {flag}: {code}"
        );
        assert_eq!(version, if flag == "--http2" { "2" } else { "1.1" });
        // HEAD: the headers of the GET, the length of its body, and no body (curl fails a HEAD
        // whose HTTP/2 stream carries one).
        let (_, head, _) = curl(&[
            "--cacert",
            ca_pem.to_str().unwrap(),
            flag,
            "-sI",
            &https(server.http, "live/x/index.m3u8"),
        ]);
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains(" 200")
                && head.contains("content-length: ")
                && head.contains("access-control-allow-origin: *"),
            "HEAD {flag}: {head}"
        );
    }

    // A request head over http.max_header_bytes is refused over HTTP/2 as over HTTP/1.1; the
    // listener goes on.
    let big = format!("X-Big: {}", "a".repeat(20_000));
    for flag in ["--http2", "--http1.1"] {
        let (_, out, _) = curl(&[
            "--cacert",
            ca_pem.to_str().unwrap(),
            flag,
            "-H",
            &big,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &paths,
        ]);
        assert_eq!(out, "431", "{flag}: a 20 kB header");
        assert_eq!(get(&paths, &ca_pem, &[flag]).0, "200");
    }
}

/// The size of `file`, 0 while it does not exist.
fn size(file: &std::path::Path) -> u64 {
    std::fs::metadata(file).map(|m| m.len()).unwrap_or(0)
}

/// Waits until `file` has grown by `bytes` from its present size, within `timeout`.
fn grows(file: &std::path::Path, bytes: u64, timeout: Duration) -> bool {
    let from = size(file);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if size(file) >= from + bytes {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Reads from `s` until the server closes it (or `limit` from `t` passes): how long after `t`
/// that was.
fn closed_within(s: &mut std::net::TcpStream, t: Instant, limit: Duration) -> Option<Duration> {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(t.elapsed()),
            Err(_) => {}
        }
        if t.elapsed() > limit {
            return None;
        }
    }
}

/// curl reading HTTP-FLV over HTTPS into a file, from a local port of its own.
struct FlvReader {
    process: Publisher,
    file: std::path::PathBuf,
    port: u16,
    version: &'static str,
}

impl FlvReader {
    /// `version` is curl's `--http2` or `--http1.1`.
    fn start(url: &str, ca: &std::path::Path, version: &'static str) -> FlvReader {
        let port = free_port();
        let file = tmp_dir().join(format!("https-flv-{}-{port}.flv", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let child = Command::new("curl")
            .args(["-sS", "-N", version, "--cacert"])
            .arg(ca)
            .args(["--local-port", &port.to_string(), "-o"])
            .arg(&file)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        FlvReader {
            process: Publisher::from_child(child),
            file,
            port,
            version,
        }
    }
}

impl Drop for FlvReader {
    fn drop(&mut self) {
        self.process.stop();
        let _ = std::fs::remove_file(&self.file);
    }
}

#[test]
fn certificate_renewed_under_running_flv_readers_and_plain_http_turned_away() {
    if !require("ffmpeg") || !require("openssl") || !require("curl") {
        return;
    }
    let ca = TestCa::new("https-renew");
    ca.server_cert("live", "localhost", 1);
    let server = start(&ca);
    let ca_pem = ca.path("ca.pem");
    let mut publisher = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/x"));
    wait_stream(&server, "live/x");

    // HTTP-FLV readers over HTTPS (curl, verifying), one over HTTP/2 and one over HTTP/1.1,
    // each from a known local port.
    let mut readers: Vec<FlvReader> = ["--http2", "--http1.1"]
        .into_iter()
        .map(|version| FlvReader::start(&https(server.http, "live/x.flv"), &ca_pem, version))
        .collect();
    for r in &readers {
        assert!(
            grows(&r.file, 200_000, Duration::from_secs(15)),
            "{}: the HTTP-FLV reader got {} bytes: {}",
            r.version,
            size(&r.file),
            r.process.stderr.lock().unwrap()
        );
        let head = std::fs::read(&r.file).unwrap();
        assert_eq!(&head[..3], b"FLV", "{}: an FLV stream", r.version);
    }
    // The API sees each reader at its TCP address, TLS or not.
    let (code, _, body) = get(&https(server.api, "v1/sessions"), &ca_pem, &[]);
    assert_eq!(code, "200");
    for r in &readers {
        assert!(
            body.contains(&format!("\"127.0.0.1:{}\"", r.port)),
            "{}: no session from 127.0.0.1:{}: {body}",
            r.version,
            r.port
        );
    }

    // Renewal: a new certificate and key replace the files (renamed over, as certbot does).
    let port = server.http.port();
    assert_eq!(
        served_cert(port, &ca_pem),
        ("serial=01".into(), "subject=CN = localhost".into())
    );
    ca.server_cert("next", "sluice-renewed", 2);
    std::fs::rename(ca.path("next.key"), ca.path("live.key")).unwrap();
    std::fs::rename(ca.path("next.pem"), ca.path("live.pem")).unwrap();
    wait_until("the renewed certificate", Duration::from_secs(10), || {
        served_cert(port, &ca_pem).0 == "serial=02"
    });
    assert_eq!(served_cert(port, &ca_pem).1, "subject=CN = sluice-renewed");
    // curl sees it too (every listener reloads: the API's port here).
    let (ok, _, err) = curl(&[
        "-v",
        "--cacert",
        ca_pem.to_str().unwrap(),
        "-o",
        "/dev/null",
        &https(server.api, "v1/paths"),
    ]);
    assert!(ok && err.contains("subject: CN=sluice-renewed"), "{err}");
    // The readers that connected with the old certificate go on.
    for r in &mut readers {
        assert!(
            r.process.is_running(),
            "{}: the reader was dropped by the reload",
            r.version
        );
        assert!(
            grows(&r.file, 100_000, Duration::from_secs(10)),
            "{}: the reader stalled after the reload",
            r.version
        );
    }

    // Plain HTTP on the HTTPS port: answered 400, in clear text, and closed.
    let (st, _, body) = http_get(server.http, "/live/x/index.m3u8", &[]);
    assert_eq!(st, 400);
    assert!(String::from_utf8_lossy(&body).contains("https://"), "{body:?}");
    let (ok, _, _) = curl(&["--fail", "-o", "/dev/null", &server.http_url("live/x/index.m3u8")]);
    assert!(!ok, "plain HTTP was served on the HTTPS port");
    // A client that never sends its ClientHello, and one that stops halfway through it, are
    // closed after the header timeout (2 s).
    let t = Instant::now();
    let mut silent = std::net::TcpStream::connect(server.http).unwrap();
    let mut half = std::net::TcpStream::connect(server.http).unwrap();
    std::io::Write::write_all(&mut half, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    for (what, s) in [("silent", &mut silent), ("half a ClientHello", &mut half)] {
        let t = closed_within(s, t, Duration::from_secs(6)).unwrap_or_else(|| panic!("{what}: not closed"));
        assert!(
            t >= Duration::from_millis(1500),
            "{what}: closed after {t:?}, before the header timeout"
        );
    }
    // Nobody else noticed.
    for r in &mut readers {
        assert!(r.process.is_running(), "{}: the reader was disturbed", r.version);
        assert!(grows(&r.file, 100_000, Duration::from_secs(10)), "{}", r.version);
    }
    assert_eq!(
        get(&https(server.http, "live/x/index.m3u8"), &ca_pem, &[]).0,
        "200"
    );
    assert!(publisher.is_running());
    assert_eq!(
        server.log().matches("stream started").count(),
        1,
        "the publisher's session never restarted"
    );
    drop(readers);
    publisher.stop();
}

#[test]
fn https_needs_both_cert_and_key() {
    if !require("openssl") {
        return;
    }
    let ca = TestCa::new("https-half");
    ca.server_cert("live", "localhost", 1);
    // `sluice check` refuses a listener with only one of the two, naming it.
    for section in ["http", "webrtc", "api", "playback", "metrics"] {
        let file = ca.path(&format!("{section}.toml"));
        std::fs::write(
            &file,
            format!("[{section}]\ntls_cert = {:?}\n", ca.path("live.pem")),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("check")
            .arg(&file)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!(
                "{section}.tls_cert and {section}.tls_key: set both to serve HTTPS"
            )),
            "{err}"
        );
    }
    // A key that is not the certificate's: refused at start with both files named.
    ca.server_cert("other", "localhost", 2);
    let out = Command::new("timeout")
        .arg("20")
        .arg(env!("CARGO_BIN_EXE_sluice"))
        .env("SLUICE_RTMP_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("SLUICE_HTTP_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("SLUICE_HTTP_TLS_CERT", ca.path("live.pem"))
        .env("SLUICE_HTTP_TLS_KEY", ca.path("other.key"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cannot start HTTPS (http)") && err.contains("other.key") && err.contains("live.pem"),
        "{err}"
    );
}

/// The base64 SHA-256 of a certificate's public key, as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it.
fn spki_sha256(cert: &std::path::Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | base64",
        )
        .arg("sh")
        .arg(cert)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs tests/browser/webrtc.mjs `watch` on `url` for `seconds`, with extra Chromium flags:
/// its JSON result (null when the page did not load).
fn watch_in_chromium(url: &str, seconds: u32, chromium_args: &str) -> serde_json::Value {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let out = Command::new("timeout")
        .arg((seconds + 50).to_string())
        .arg("node")
        .arg(dir.join("webrtc.mjs"))
        .args(["watch", url, &seconds.to_string()])
        .env("CHROMIUM_EXTRA_ARGS", chromium_args)
        .stdin(Stdio::null())
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("browser: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .next_back()
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn whep_over_https_in_chromium() {
    if !in_netns("whep_over_https_in_chromium") || !require("ffmpeg") || !require("openssl") {
        return;
    }
    let browser = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser/node_modules/playwright-core");
    if !std::path::Path::new("/usr/bin/chromium").exists() || !browser.exists() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromium and playwright-core are required in CI; run scripts/install-test-deps.sh");
        }
        eprintln!("skipping: chromium or playwright-core missing (run scripts/install-test-deps.sh)");
        return;
    }
    let ca = TestCa::new("https-whep");
    ca.server_cert("live", "localhost", 1);
    let server = start(&ca);
    let _publisher = Publisher::rtmp(&source_flv_no_bframes(), &server.rtmp_url("live/cam1"));
    wait_stream(&server, "live/cam1");
    let page = https(server.webrtc, "live/cam1/");

    // Chromium trusts the server's key (and no other): the page loads over HTTPS, WHEP
    // negotiates over it, and the picture plays.
    let trust = format!(
        "--ignore-certificate-errors-spki-list={}",
        spki_sha256(&ca.path("live.pem"))
    );
    let r = watch_in_chromium(&page, 6, &trust);
    assert_eq!(r["state"], "connected", "{r}\n{}", server.log());
    let frames = r["video"]["framesDecoded"].as_f64().unwrap_or(0.0);
    assert!(frames >= 60.0, "framesDecoded {frames} in 6 s");
    assert_eq!(r["video"]["width"], 640, "{r}");
    assert_eq!(r["video"]["height"], 360, "{r}");
    assert!(server.log().contains("WebRTC peer connected"));

    // Without that trust, Chromium refuses the certificate and nothing plays.
    let r = watch_in_chromium(&page, 2, "");
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("ERR_CERT_AUTHORITY_INVALID")),
        "{r}"
    );
}

/// hls.js in Chromium plays low-latency HLS over HTTPS, trusting the server's key (and only it).
#[test]
fn hls_js_plays_over_https_in_chromium() {
    if !require("ffmpeg") || !require("node") || !require("openssl") || !have_hlsjs_browser() {
        return;
    }
    let ca = TestCa::new("https-hlsjs");
    ca.server_cert("live", "localhost", 1);
    let server = start(&ca);
    let _p = Publisher::rtmp(&source_flv_no_bframes(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    let url = https(server.http, "live/cam/index.m3u8");
    let trust = format!(
        "--ignore-certificate-errors-spki-list={}",
        spki_sha256(&ca.path("live.pem"))
    );
    let r = run_web_script(
        "llhls.mjs",
        &[url.as_str(), "10"],
        &[("CHROMIUM_EXTRA_ARGS", trust.as_str())],
        90,
    );
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}");
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(640), Some(360)),
        "{r}"
    );
    assert!(r["played"].as_f64().unwrap() >= 8.0, "{r}");
    assert!(
        r["part_loads"].as_u64().unwrap() > 10,
        "low-latency parts over HTTPS: {r}"
    );
}

/// `[http] h2c = true`: HTTP/2 with prior knowledge on the plain port (a CDN speaking h2c to
/// its origin) beside HTTP/1.1; off by default, where an h2c client is answered as HTTP/1.1
/// would be, and fails.
#[test]
fn h2c_on_the_plain_port_when_asked() {
    if !require("ffmpeg") || !require("curl") {
        return;
    }
    let curl = |server: &Server, flag: &str| -> (String, String) {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-m",
                "10",
                "-w",
                "%{http_code} %{http_version}",
                flag,
            ])
            .arg(server.http_url("live/cam/stream.m3u8"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (code, version) = text.split_once(' ').unwrap_or((&text, ""));
        (code.to_owned(), version.to_owned())
    };
    let server = Server::start_with(&[("SLUICE_HTTP_H2C", "true")], None);
    let _p = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    assert_eq!(
        curl(&server, "--http2-prior-knowledge"),
        ("200".into(), "2".into())
    );
    assert_eq!(curl(&server, "--http1.1"), ("200".into(), "1.1".into()));
    // HTTP/1.1 players (ffmpeg) read the same port as before.
    let p = probe(&server.http_url("live/cam/index.m3u8"), 2);
    assert_source_stream(&p, 2, "HLS beside h2c");
    drop(server);

    let server = Server::start_with(&[], None);
    let _p = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam"));
    wait_stream(&server, "live/cam");
    assert_ne!(
        curl(&server, "--http2-prior-knowledge").0,
        "200",
        "h2c is off by default"
    );
    assert_eq!(curl(&server, "--http1.1").0, "200");
}
