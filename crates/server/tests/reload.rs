//! Hot reload and the configuration API, against the real binary, ffmpeg and ffprobe: a reload
//! (SIGHUP, `POST /v1/config/reload`, the file watcher) adds a path and changes another's
//! access while an RTMP reader of a third path sees every frame of one stream; a bad file is
//! refused and the running configuration keeps working; a path added through the API takes a
//! publisher and survives a restart (state file); deleting a path ends its publisher; secrets
//! are masked; bad request bodies get a JSON 4xx.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    assert_every_frame, assert_source_stream, free_port, http_get, probe, require, source_flv, tmp_dir,
    Publisher,
};
use serde_json::{json, Value};

/// The server, started from a configuration file (the tests rewrite it).
struct Sluice {
    child: Child,
    rtmp: SocketAddr,
    http: SocketAddr,
    api: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Sluice {
    /// Starts `sluice --config FILE` (and `extra` arguments) on free loopback ports; the other
    /// listeners are off.
    fn start(config: &Path, extra: &[&str]) -> Sluice {
        for _ in 0..5 {
            if let Some(s) = Self::try_start(config, extra) {
                return s;
            }
        }
        panic!("could not find free ports in 5 tries");
    }

    fn try_start(config: &Path, extra: &[&str]) -> Option<Sluice> {
        let addr = || -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().unwrap() };
        let (rtmp, http, api) = (addr(), addr(), addr());
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--config")
            .arg(config)
            .args(extra)
            .env("SLUICE_RTMP_LISTEN", rtmp.to_string())
            .env("SLUICE_HTTP_LISTEN", http.to_string())
            .env("SLUICE_API_LISTEN", api.to_string())
            .env("SLUICE_SRT_ENABLED", "false")
            .env("SLUICE_WEBRTC_ENABLED", "false")
            .env("SLUICE_METRICS_ENABLED", "false")
            .env("SLUICE_PLAYBACK_ENABLED", "false")
            .env("SLUICE_LOG_LEVEL", "debug")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice");
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
        let mut s = Sluice {
            child,
            rtmp,
            http,
            api,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for a in [rtmp, http, api] {
            loop {
                if TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok() {
                    break;
                }
                if s.child.try_wait().ok().flatten().is_some() {
                    std::thread::sleep(Duration::from_millis(300));
                    if s.log().contains("already in use") {
                        return None;
                    }
                    panic!("server exited at start; log:\n{}", s.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "server did not listen; log:\n{}",
                    s.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(s)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait(timeout, || self.log().contains(needle))
    }

    /// How many times the log has `needle`.
    fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    fn rtmp_url(&self, path: &str) -> String {
        format!("rtmp://{}/{path}", self.rtmp)
    }

    fn hup(&self) {
        let st = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// SIGTERM, and waits for the exit.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let ok = wait(Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        assert!(ok, "server did not exit after SIGTERM");
    }

    /// An API request with an optional JSON body: status and JSON answer (Null when empty).
    fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (st, text) = request(
            self.api,
            method,
            path,
            body.map(str::as_bytes),
            "application/json",
        );
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
        };
        (st, json)
    }

    /// The sessions of `path` with `role`.
    fn sessions(&self, path: &str, role: &str) -> Vec<Value> {
        let (st, v) = self.api("GET", "/v1/sessions?limit=1000", None);
        assert_eq!(st, 200, "{v}");
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["path"] == path && s["role"] == role)
            .cloned()
            .collect()
    }

    fn wait_published(&self, path: &str) {
        let needle = format!("path={path} ");
        let ok = wait(Duration::from_secs(20), || {
            self.log()
                .lines()
                .any(|l| l.contains("stream started") && l.contains(&needle))
        });
        assert!(ok, "stream {path} did not start; log:\n{}", self.log());
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- sluice log ----\n{}", self.log());
        }
    }
}

fn wait(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A plain HTTP/1.1 request (Connection: close): status and body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    content_type: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let body = body.unwrap_or(b"");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A server may answer (413) before reading a large body: a failed write is not the test's
    // failure, the answer is.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut b: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = b.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        b = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A fresh directory for one test's configuration and state files.
fn test_dir(name: &str) -> PathBuf {
    let d = tmp_dir().join(format!("reload-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a file the way editors and deploy tools do: a new file renamed over the old one.
fn write_atomic(file: &Path, text: &str) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

fn hls_status(s: &Sluice, path: &str, query: &str) -> u16 {
    http_get(s.http, &format!("/{path}/index.m3u8{query}"), &[]).0
}

const BEFORE: &str = r#"
[paths."cam/a"]

[paths."cam/b"]
grace_period = "2s"
"#;

const AFTER: &str = r#"
[paths."cam/a"]

# cam/b now asks readers for a token.
[paths."cam/b"]
grace_period = "2s"
[paths."cam/b".access]
read_token = "b-token"

[paths."cam/new"]
"#;

#[derive(Clone, Copy, PartialEq)]
enum Trigger {
    Sighup,
    Api,
    Watcher,
}

/// A reload adds cam/new and gives cam/b a read token while cam/a's publisher streams to an
/// RTMP reader that runs across the reload: it sees one stream and every frame.
fn reload_keeps_other_paths_streaming(trigger: Trigger, name: &str) {
    if !require("ffmpeg") || !require("ffprobe") {
        return;
    }
    let src = source_flv();
    let dir = test_dir(name);
    // The configuration is a symlink to a file in another directory: editing that file in place
    // is not seen by the watcher (it watches the link's directory), so SIGHUP and the API are
    // tested on their own; the watcher's test replaces the link's target by a rename.
    let real_dir = dir.join("real");
    std::fs::create_dir_all(&real_dir).unwrap();
    let real = real_dir.join("sluice.toml");
    std::fs::write(&real, BEFORE).unwrap();
    let config = dir.join("sluice.toml");
    if trigger == Trigger::Watcher {
        std::fs::write(&config, BEFORE).unwrap();
    } else {
        std::os::unix::fs::symlink(&real, &config).unwrap();
    }
    let s = Sluice::start(&config, &[]);

    let _pub_a = Publisher::rtmp(&src, &s.rtmp_url("cam/a"));
    let _pub_b = Publisher::rtmp(&src, &s.rtmp_url("cam/b"));
    s.wait_published("cam/a");
    s.wait_published("cam/b");
    assert_eq!(
        hls_status(&s, "cam/b", ""),
        200,
        "cam/b is open before the reload"
    );
    let publisher_a = s.sessions("cam/a", "publisher");
    assert_eq!(publisher_a.len(), 1);
    // An RTMP reader of cam/b, which the new read token concerns.
    let mut reader_b = Publisher::from_child(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-i", &s.rtmp_url("cam/b")])
            .args(["-c", "copy", "-f", "null", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait(Duration::from_secs(10), || s.sessions("cam/b", "reader").len()
            == 1),
        "reader of cam/b"
    );
    // A publisher of a path not configured yet is refused.
    let mut refused = Publisher::rtmp(&src, &s.rtmp_url("cam/new"));
    assert!(
        refused.wait_exit(Duration::from_secs(10)).is_some(),
        "cam/new is not configured yet"
    );

    let url = s.rtmp_url("cam/a");
    let reader = std::thread::spawn(move || probe(&url, 10));
    std::thread::sleep(Duration::from_secs(3));

    let applied_before = s.count("configuration applied");
    match trigger {
        Trigger::Watcher => write_atomic(&config, AFTER),
        _ => std::fs::write(&real, AFTER).unwrap(),
    }
    match trigger {
        Trigger::Sighup => {
            // Not applied until asked.
            std::thread::sleep(Duration::from_secs(1));
            assert_eq!(
                s.count("configuration applied"),
                applied_before,
                "applied before SIGHUP"
            );
            s.hup();
        }
        Trigger::Api => {
            std::thread::sleep(Duration::from_secs(1));
            assert_eq!(
                s.count("configuration applied"),
                applied_before,
                "applied before the API call"
            );
            let (st, v) = s.api("POST", "/v1/config/reload", None);
            assert_eq!(st, 200, "{v}");
            let ended = v["ended_sessions"].as_array().unwrap();
            assert_eq!(ended.len(), 1, "{v}");
            assert_eq!(ended[0]["path"], "cam/b", "{v}");
            let changed: Vec<&str> = v["changed"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(changed.contains(&"paths.\"cam/b\".access.read_token"), "{v}");
            assert!(v["restart_needed"].as_array().unwrap().is_empty(), "{v}");
        }
        Trigger::Watcher => {}
    }
    let why = match trigger {
        Trigger::Sighup => "reload on SIGHUP",
        Trigger::Api => "reload through the API",
        Trigger::Watcher => "reload on a file change",
    };
    assert!(
        s.wait_log(&format!("configuration applied ({why})"), Duration::from_secs(10)),
        "no reload"
    );

    // cam/b's reader ended, with the reason in the log; its publisher goes on.
    assert!(
        s.wait_log(
            "ending session: the path's read credentials changed",
            Duration::from_secs(5)
        ),
        "reader of cam/b not ended"
    );
    assert!(
        reader_b.wait_exit(Duration::from_secs(10)).is_some(),
        "reader of cam/b still runs"
    );
    assert_eq!(
        s.sessions("cam/b", "publisher").len(),
        1,
        "cam/b's publisher is not concerned"
    );
    // cam/b now asks for the token.
    assert_eq!(hls_status(&s, "cam/b", ""), 401);
    assert_eq!(hls_status(&s, "cam/b", "?token=b-token"), 200);
    // cam/new takes a publisher.
    let _pub_new = Publisher::rtmp(&src, &s.rtmp_url("cam/new"));
    s.wait_published("cam/new");

    // cam/a: the same publisher session, and the reader saw one stream, every frame.
    let p = reader.join().unwrap();
    let what = format!("RTMP reader of cam/a across a {why}");
    assert_eq!(p.streams.len(), 2, "{what}: {:?}", p.streams);
    assert_source_stream(&p, 10, &what);
    assert_every_frame(&p, 30.0, &what);
    let after = s.sessions("cam/a", "publisher");
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0]["id"], publisher_a[0]["id"],
        "cam/a's publisher was not touched"
    );
    assert!(!s.log().contains("ending session: path cam/a"), "{}", s.log());
}

#[test]
fn sighup_reload_adds_a_path_and_changes_another_without_a_gap_on_a_third() {
    reload_keeps_other_paths_streaming(Trigger::Sighup, "sighup");
}

#[test]
fn api_reload_adds_a_path_and_changes_another_without_a_gap_on_a_third() {
    reload_keeps_other_paths_streaming(Trigger::Api, "api");
}

#[test]
fn watched_file_reload_adds_a_path_and_changes_another_without_a_gap_on_a_third() {
    reload_keeps_other_paths_streaming(Trigger::Watcher, "watcher");
}

#[test]
fn a_bad_file_is_refused_and_the_running_configuration_stays() {
    if !require("ffmpeg") {
        return;
    }
    let src = source_flv();
    let dir = test_dir("bad");
    let config = dir.join("sluice.toml");
    std::fs::write(&config, BEFORE).unwrap();
    let s = Sluice::start(&config, &[]);
    let _pub_a = Publisher::rtmp(&src, &s.rtmp_url("cam/a"));
    s.wait_published("cam/a");

    // A typo on line 4, and a secret on line 3 that no answer may show.
    let bad =
        "[paths.\"cam/a\"]\n[paths.\"cam/a\".access]\npublish_pass = \"hunter2-secret\"\nread_tokn = \"x\"\n";
    write_atomic(&config, bad);
    assert!(
        s.wait_log(
            "configuration reload on a file change refused",
            Duration::from_secs(10)
        ),
        "the watcher did not refuse the bad file"
    );
    let (st, v) = s.api("POST", "/v1/config/reload", None);
    assert_eq!(st, 400, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("line 4") && e.contains("read_tokn"), "{e}");
    assert!(e.contains("sluice.toml"), "names the file: {e}");
    s.hup();
    assert!(
        s.wait_log("configuration reload on SIGHUP refused", Duration::from_secs(10)),
        "SIGHUP did not refuse the bad file"
    );
    assert!(!s.log().contains("configuration applied"), "{}", s.log());
    assert!(!s.log().contains("hunter2-secret"), "a secret in the log");

    // The running configuration works: cam/a streams, cam/b takes a publisher.
    assert_eq!(s.sessions("cam/a", "publisher").len(), 1);
    let _pub_b = Publisher::rtmp(&src, &s.rtmp_url("cam/b"));
    s.wait_published("cam/b");
    let (_, v) = s.api("GET", "/v1/config", None);
    assert!(v["config"]["paths"]["cam/b"].is_object(), "{v}");

    // A change through the API is validated against the running file, not the bad one on disk.
    let (st, v) = s.api("PUT", "/v1/config/paths/cam/c", Some("{}"));
    assert_eq!(st, 201, "{v}");

    // Fixed: applied.
    write_atomic(&config, AFTER);
    assert!(
        s.wait_log(
            "configuration applied (reload on a file change)",
            Duration::from_secs(10)
        ),
        "the fixed file was not applied"
    );
}

#[test]
fn a_path_added_through_the_api_takes_a_publisher_and_survives_a_restart() {
    if !require("ffmpeg") {
        return;
    }
    let src = source_flv();
    let dir = test_dir("state");
    let config = dir.join("sluice.toml");
    let text = "# the operator's comment, kept\n[paths.\"cam/a\"]\n";
    std::fs::write(&config, text).unwrap();
    let mut s = Sluice::start(&config, &[]);

    let mut refused = Publisher::rtmp(&src, &s.rtmp_url("api/new"));
    assert!(
        refused.wait_exit(Duration::from_secs(10)).is_some(),
        "api/new is not configured yet"
    );

    let body = json!({"grace_period": "3s", "access": {"publish_token": "tok-123"}}).to_string();
    let (st, v) = s.api("PUT", "/v1/config/paths/api/new", Some(&body));
    assert_eq!(st, 201, "{v}");
    let (st, v) = s.api("PUT", "/v1/config/paths/api/new", Some(&body));
    assert_eq!(st, 200, "replaced: {v}");
    let (st, v) = s.api("GET", "/v1/config/paths/api/new", None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["origin"], "state", "{v}");
    assert_eq!(v["table"]["access"]["publish_token"], "********", "{v}");
    assert_eq!(v["resolved"]["grace_period"], "3s", "{v}");
    assert_eq!(v["resolved"]["reader_queue"], 512, "{v}");
    // PATCH keeps the masked token as it is.
    let (st, v) = s.api(
        "PATCH",
        "/v1/config/paths/api/new",
        Some(&json!({"grace_period": "4s", "access": {"publish_token": "********"}}).to_string()),
    );
    assert_eq!(st, 200, "{v}");

    let state = dir.join("sluice.state.toml");
    let written = std::fs::read_to_string(&state).expect("the state file");
    assert!(
        written.contains("api/new") && written.contains("tok-123"),
        "{written}"
    );
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        text,
        "the configuration file is never written"
    );

    let _publisher = Publisher::rtmp(&src, &s.rtmp_url("api/new?token=tok-123"));
    s.wait_published("api/new");
    let (_, v) = s.api("GET", "/v1/config", None);
    assert_eq!(v["sources"]["paths.\"api/new\".grace_period"], "state", "{v}");
    assert_eq!(
        v["sources"]["paths.\"api/new\".reader_queue"], "path_defaults",
        "{v}"
    );
    assert_eq!(v["sources"]["rtmp.listen"], "env", "{v}");
    assert_eq!(v["sources"]["rtmp.chunk_size"], "default", "{v}");
    assert_eq!(v["files"]["state"], state.display().to_string(), "{v}");
    drop(_publisher);
    s.stop();

    // Restarted on the same files: the path is still configured, with its token.
    let s = Sluice::start(&config, &[]);
    assert!(s.wait_log("the state file (API changes) is applied", Duration::from_secs(5)));
    let (st, v) = s.api("GET", "/v1/config/paths/api/new", None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["resolved"]["grace_period"], "4s", "{v}");
    let mut no_token = Publisher::rtmp(&src, &s.rtmp_url("api/new"));
    assert!(
        no_token.wait_exit(Duration::from_secs(10)).is_some(),
        "published without the token"
    );
    let _publisher = Publisher::rtmp(&src, &s.rtmp_url("api/new?token=tok-123"));
    s.wait_published("api/new");
}

#[test]
fn deleting_a_path_through_the_api_ends_its_publisher() {
    if !require("ffmpeg") {
        return;
    }
    let src = source_flv();
    let dir = test_dir("delete");
    let config = dir.join("sluice.toml");
    std::fs::write(&config, "[paths.\"cam/x\"]\n[paths.\"cam/y\"]\n").unwrap();
    let mut s = Sluice::start(&config, &[]);
    let mut pub_x = Publisher::rtmp(&src, &s.rtmp_url("cam/x"));
    let _pub_y = Publisher::rtmp(&src, &s.rtmp_url("cam/y"));
    s.wait_published("cam/x");
    s.wait_published("cam/y");
    let id = s.sessions("cam/x", "publisher")[0]["id"].clone();

    let (st, v) = s.api("DELETE", "/v1/config/paths/cam/x", None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["ended_sessions"][0]["id"], id, "{v}");
    assert!(
        s.wait_log(
            "ending session: path cam/x is no longer configured (change through the API)",
            Duration::from_secs(5)
        ),
        "no log line"
    );
    assert!(
        pub_x.wait_exit(Duration::from_secs(10)).is_some(),
        "the publisher of cam/x still runs"
    );
    assert_eq!(
        s.sessions("cam/y", "publisher").len(),
        1,
        "cam/y is not concerned"
    );
    let (st, _) = s.api("GET", "/v1/config/paths/cam/x", None);
    assert_eq!(st, 404);
    let (st, _) = s.api("DELETE", "/v1/config/paths/cam/x", None);
    assert_eq!(st, 404);
    let mut again = Publisher::rtmp(&src, &s.rtmp_url("cam/x"));
    assert!(
        again.wait_exit(Duration::from_secs(10)).is_some(),
        "cam/x took a publisher"
    );

    // The file's table stays deleted after a restart (the state file says so).
    s.stop();
    let s = Sluice::start(&config, &[]);
    let (st, _) = s.api("GET", "/v1/config/paths/cam/x", None);
    assert_eq!(st, 404);
    let (st, _) = s.api("GET", "/v1/config/paths/cam/y", None);
    assert_eq!(st, 200);
}

#[test]
fn secrets_are_masked_and_bad_bodies_get_a_json_4xx() {
    let dir = test_dir("mask");
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        r#"
[webrtc]
ice_servers_pass = "turn-secret-1"
[path_defaults.access]
read_token = "viewer-secret-2"
[paths."cam/a".access]
publish_user = "obs"
publish_pass = "pass-secret-3"
[paths."cam/a".srt]
publish_passphrase = "passphrase-secret-4"
"#,
    )
    .unwrap();
    let s = Sluice::start(&config, &[]);
    let (st, text) = request(s.api, "GET", "/v1/config", None, "application/json");
    assert_eq!(st, 200, "{text}");
    for secret in [
        "turn-secret-1",
        "viewer-secret-2",
        "pass-secret-3",
        "passphrase-secret-4",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    let a = &v["config"]["paths"]["cam/a"];
    assert_eq!(a["access"]["publish_user"], "obs");
    assert_eq!(a["access"]["publish_pass"], "********");
    assert_eq!(a["access"]["read_token"], "********", "inherited, and masked");
    assert_eq!(a["srt"]["publish_passphrase"], "********");
    assert_eq!(v["config"]["webrtc"]["ice_servers_pass"], "********");
    assert_eq!(
        v["config"]["path_defaults"]["access"]["publish_pass"], "",
        "unset stays empty"
    );
    assert_eq!(v["sources"]["paths.\"cam/a\".access.publish_pass"], "file");
    assert_eq!(v["sources"]["paths.\"cam/a\".access.read_token"], "path_defaults");

    // Bad bodies: 4xx with the JSON error shape, nothing written.
    let cases: Vec<(&str, &str, Vec<u8>, &str, u16)> = vec![
        (
            "PATCH",
            "/v1/config",
            b"{not json".to_vec(),
            "application/json",
            400,
        ),
        ("PATCH", "/v1/config", b"[1, 2]".to_vec(), "application/json", 422),
        ("PATCH", "/v1/config", b"{}".to_vec(), "text/plain", 415),
        (
            "PATCH",
            "/v1/config",
            br#"{"rtmp": {"chunk_sz": 1}}"#.to_vec(),
            "application/json",
            400,
        ),
        (
            "PATCH",
            "/v1/config",
            br#"{"rtmp": {"chunk_size": "big"}}"#.to_vec(),
            "application/json",
            400,
        ),
        (
            "PATCH",
            "/v1/config",
            br#"{"rtmp": {"chunk_size": 1}}"#.to_vec(),
            "application/json",
            400,
        ),
        (
            "PATCH",
            "/v1/config",
            br#"{"nonsense": 1}"#.to_vec(),
            "application/json",
            400,
        ),
        (
            "PATCH",
            "/v1/config",
            br#"{"paths": {}}"#.to_vec(),
            "application/json",
            400,
        ),
        // Just over the 64 KiB limit (a much larger body may be cut off by a reset).
        (
            "PATCH",
            "/v1/config",
            vec![b' '; 64 * 1024 + 100],
            "application/json",
            413,
        ),
        (
            "PUT",
            "/v1/config/paths/a%20b",
            b"{}".to_vec(),
            "application/json",
            400,
        ),
        (
            "PUT",
            "/v1/config/paths/cam/z",
            br#"{"grace_period": 5}"#.to_vec(),
            "application/json",
            400,
        ),
        (
            "PUT",
            "/v1/config/paths/cam/z",
            br#"{"access": {"publish_pass": "x"}}"#.to_vec(),
            "application/json",
            400,
        ),
        (
            "PUT",
            "/v1/config/paths/cam/z",
            br#"{"access": {"publish_pass": "********"}}"#.to_vec(),
            "application/json",
            400,
        ),
        (
            "PATCH",
            "/v1/config/paths/cam/none",
            b"{}".to_vec(),
            "application/json",
            404,
        ),
    ];
    for (method, path, body, ctype, want) in cases {
        let (st, text) = request(s.api, method, path, Some(&body), ctype);
        assert_eq!(st, want, "{method} {path}: {text}");
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        assert!(v["error"].is_string(), "{method} {path}: {v}");
    }
    assert!(
        !dir.join("sluice.state.toml").exists(),
        "a refused change was written"
    );

    // A good global change: applied and listed; a listener change needs a restart.
    let (st, v) = s.api(
        "PATCH",
        "/v1/config",
        Some(r#"{"rtmp": {"chunk_size": 8192}, "http": {"cors_origin": "https://example.com"}}"#),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["restart_needed"], json!(["http.cors_origin"]), "{v}");
    assert!(s.wait_log(
        "http.cors_origin changed: needs a restart",
        Duration::from_secs(2)
    ));
    let (_, v) = s.api("GET", "/v1/config", None);
    assert_eq!(v["config"]["rtmp"]["chunk_size"], 8192);
    assert_eq!(v["sources"]["rtmp.chunk_size"], "state");
    // `null` takes it back out of the state file.
    let (st, v) = s.api(
        "PATCH",
        "/v1/config",
        Some(r#"{"rtmp": {"chunk_size": null}, "http": null}"#),
    );
    assert_eq!(st, 200, "{v}");
    let (_, v) = s.api("GET", "/v1/config", None);
    assert_eq!(v["sources"]["rtmp.chunk_size"], "default", "{v}");
    assert_eq!(v["restart_needed"], json!([]), "{v}");
}
