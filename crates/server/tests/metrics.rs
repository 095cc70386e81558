//! Prometheus metrics against real consumers: the text is parsed by the Python
//! `prometheus_client` parsers (Prometheus text format and OpenMetrics) and compared with the
//! API; Debian's `prometheus` server scrapes the endpoint and its query API returns the path's
//! bitrate. Sessions' series go when the sessions end; the per-session cap counts what it leaves
//! out; refusals are counted.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

/// One sample as the Python parser saw it.
#[derive(Debug, Clone)]
struct Sample {
    family: String,
    typ: String,
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The Python with the test tools: the project's virtual environment
/// (`target/test-venv`, made by scripts/install-test-deps.sh), else the system's.
fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
        .parent()
        .and_then(|d| d.parent())
        .map(|t| t.join("test-venv/bin/python"));
    match venv {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("python3"),
    }
}

/// Fails in CI when Python's `prometheus_client` is missing; elsewhere skips.
fn require_prometheus_client() -> bool {
    let ok = Command::new(python())
        .args([
            "-c",
            "import prometheus_client.parser, prometheus_client.openmetrics.parser",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("python3 with prometheus_client is required in CI; run scripts/install-test-deps.sh");
        }
        eprintln!("skipping: python3 prometheus_client not installed (run scripts/install-test-deps.sh)");
    }
    ok
}

const PARSE: &str = r#"
import json, sys
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"family": fam.name, "type": fam.type, "name": s.name,
                    "labels": s.labels, "value": s.value})
print(json.dumps(out, allow_nan=False))
"#;

/// Parses metrics text with the real Python parser (`openmetrics`: the strict OpenMetrics one).
fn parse(text: &str, openmetrics: bool) -> Vec<Sample> {
    let mut child = Command::new("timeout")
        .arg("30")
        .arg(python())
        .args(["-c", PARSE])
        .arg(if openmetrics { "openmetrics" } else { "prometheus" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut stdin = child.stdin.take().unwrap();
    let text2 = text.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(text2.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the metrics: {}\n---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            family: s["family"].as_str().unwrap().to_owned(),
            typ: s["type"].as_str().unwrap().to_owned(),
            name: s["name"].as_str().unwrap().to_owned(),
            labels: s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect(),
            value: s["value"].as_f64().unwrap(),
        })
        .collect()
}

/// The samples named `name` whose labels include `labels`.
fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The value of the one sample named `name` with `labels`.
fn one(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, labels);
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    found[0].value
}

/// `GET /metrics` (with `accept`), returning the status, content type and body.
fn scrape(server: &Server, accept: Option<&str>) -> (u16, String, String) {
    let extra: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    let (st, headers, body) = http_get(server.metrics, "/metrics", &extra);
    let ctype = header(&headers, "content-type").unwrap_or("").to_owned();
    (st, ctype, String::from_utf8(body).unwrap())
}

fn samples(server: &Server) -> Vec<Sample> {
    let (st, _, body) = scrape(server, None);
    assert_eq!(st, 200, "{body}");
    parse(&body, false)
}

/// A GET on the API; the JSON body.
fn api(server: &Server, path: &str) -> Value {
    let (st, _, body) = http_get(server.api, &format!("/{path}"), &[]);
    assert_eq!(st, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

const CONFIG: &str = r#"
[paths."live/*"]
[paths."secure/*".access]
read_token = "letmein"
"#;

/// The text parsed by `prometheus_client` has every family we document with the right values:
/// the path's bitrate within 10 % of the API's, bytes and frames, readers by protocol, the HLS
/// output's state, an SRT reader's link series, the process; refusals counted by protocol and
/// action; the OpenMetrics form passes the strict parser; a session's series are gone once it
/// ends.
#[test]
fn metrics_parsed_by_prometheus_client_match_the_api() {
    if !require("ffmpeg") || !require_prometheus_client() {
        return;
    }
    let server = Server::start_with(&[], Some(CONFIG));
    let _pub = Publisher::rtmp(&cbr_source().0, &server.rtmp_url("live/m"));
    wait_stream(&server, "live/m");
    let srt_url = format!("srt://{}?streamid=read:live/m", server.srt);
    let mut srt = reader(&["-i", &srt_url]);
    // Two refused HLS reads of a path that needs a token.
    for _ in 0..2 {
        let (st, _, _) = http_get(server.http, "/secure/x/index.m3u8", &[]);
        assert_eq!(st, 401);
    }
    // Rates are measured over 5 s, sampled each second; SRT link statistics come each second.
    std::thread::sleep(Duration::from_secs(7));
    let srt_id = wait_srt_reader(&server);

    let path = api(&server, "v1/paths/live/m");
    let s = samples(&server);
    let api_bps = path["bitrate_in"].as_f64().unwrap();
    let bps = one(&s, "sluice_path_in_bitrate_bps", &[("path", "live/m")]);
    assert!(api_bps > 1_000_000.0, "{path}");
    assert!(
        (bps / api_bps - 1.0).abs() <= 0.10,
        "metrics bitrate {bps} vs the API's {api_bps}"
    );
    assert_eq!(one(&s, "sluice_path_online", &[("path", "live/m")]), 1.0);
    let bytes = one(&s, "sluice_path_in_bytes_total", &[("path", "live/m")]);
    assert!(bytes >= path["bytes_in"].as_f64().unwrap(), "{bytes} {path}");
    let frames = one(&s, "sluice_path_in_frames_total", &[("path", "live/m")]);
    assert!(frames >= path["frames_in"].as_f64().unwrap() && frames > 100.0);
    let fam = s.iter().find(|x| x.name == "sluice_path_in_bytes_total").unwrap();
    assert_eq!(
        (fam.family.as_str(), fam.typ.as_str()),
        ("sluice_path_in_bytes", "counter")
    );
    assert_eq!(
        one(
            &s,
            "sluice_path_readers",
            &[("path", "live/m"), ("protocol", "srt")]
        ),
        1.0
    );
    assert_eq!(
        one(
            &s,
            "sluice_path_output_state",
            &[("path", "live/m"), ("output", "hls")]
        ),
        1.0
    );
    assert_eq!(
        find(
            &s,
            "sluice_path_track_info",
            &[("path", "live/m"), ("kind", "video")]
        )[0]
        .labels["width"],
        "640"
    );
    assert_eq!(
        one(
            &s,
            "sluice_sessions",
            &[("protocol", "rtmp"), ("role", "publisher")]
        ),
        1.0
    );
    // Stream health: the API's states, one sample per check.
    let health = &path["health"];
    for check in ["stream", "audio", "video", "silence", "timestamps"] {
        let states = find(&s, "sluice_path_health", &[("path", "live/m"), ("check", check)]);
        assert_eq!(states.len(), 1, "{check}: {states:?}");
        if let Some(want) = health[check].as_str() {
            assert_eq!(states[0].labels["state"], want, "{check}: {health}");
        }
    }
    assert_eq!(
        find(
            &s,
            "sluice_path_health",
            &[("path", "live/m"), ("check", "stream")]
        )[0]
        .labels["state"],
        "flowing"
    );
    let fps = one(&s, "sluice_path_video_fps", &[("path", "live/m")]);
    assert!((fps - 30.0).abs() < 3.0, "fps {fps}");

    // The SRT reader: its own series, with the id the API gives it, and its link statistics.
    let id = srt_id.to_string();
    let me = [
        ("id", id.as_str()),
        ("protocol", "srt"),
        ("role", "reader"),
        ("path", "live/m"),
    ];
    assert!(one(&s, "sluice_session_out_bytes_total", &me) > 100_000.0);
    assert!(one(&s, "sluice_session_out_bitrate_bps", &me) > 1_000_000.0);
    assert!(one(&s, "sluice_session_link_sent_packets_total", &me) > 100.0);
    assert!(one(&s, "sluice_session_link_rtt_seconds", &me) >= 0.0);
    assert!(one(&s, "sluice_session_link_latency_seconds", &me) > 0.0);
    for name in [
        "sluice_session_link_lost_packets_total",
        "sluice_session_link_retransmitted_packets_total",
        "sluice_session_link_received_naks_total",
        "sluice_session_link_recv_buffer_seconds",
    ] {
        assert_eq!(find(&s, name, &me).len(), 1, "{name}");
    }
    assert_eq!(
        find(&s, "sluice_session_link_info", &me)[0].labels["state"],
        api(&server, &format!("v1/sessions/{srt_id}"))["link"]["state"]
            .as_str()
            .unwrap()
    );

    // Refusals, by protocol and action (counted from the event bus: allow it a moment).
    wait_until("two refusals counted", Duration::from_secs(5), || {
        let s = samples(&server);
        find(
            &s,
            "sluice_access_denied_total",
            &[("protocol", "hls"), ("action", "read")],
        )
        .first()
        .is_some_and(|x| x.value == 2.0)
    });

    // The process.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = one(&s, "sluice_process_start_time_seconds", &[]);
    assert!(
        start > now - 120.0 && start <= now + 1.0,
        "start {start} now {now}"
    );
    assert!(one(&s, "sluice_process_resident_memory_bytes", &[]) > 1e6);
    assert!(one(&s, "sluice_process_open_fds", &[]) >= 5.0);
    assert!(one(&s, "sluice_process_threads", &[]) >= 2.0);
    assert!(one(&s, "sluice_runtime_alive_tasks", &[]) >= 1.0);
    assert!(one(&s, "sluice_process_cpu_seconds_total", &[]) > 0.0);
    assert_eq!(one(&s, "sluice_session_series_omitted", &[]), 0.0);

    // Every exported family is documented, and the docs and the dashboard name no other.
    let (_, _, text) = scrape(&server, None);
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for doc in ["docs/metrics.md", "docs/grafana-dashboard.json"] {
        let names = sluice_names(&std::fs::read_to_string(root.join(doc)).unwrap());
        for n in &names {
            assert!(exported.contains(n), "{doc} names {n}, which is not exported");
        }
        if doc.ends_with(".md") {
            for n in &exported {
                assert!(names.contains(n), "{n} is not documented in {doc}");
            }
        }
    }

    // The OpenMetrics form, for scrapers that ask for it, passes the strict parser.
    let (st, ctype, body) = scrape(
        &server,
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    );
    assert_eq!(st, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(body.ends_with("# EOF\n"));
    let om = parse(&body, true);
    assert_eq!(
        find(&om, "sluice_path_in_bitrate_bps", &[("path", "live/m")]).len(),
        1
    );
    assert_eq!(
        find(&om, "sluice_path_in_bytes_total", &[("path", "live/m")])[0].typ,
        "counter"
    );
    let (_, ctype, _) = scrape(&server, None);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");

    // The reader leaves: its series go with it; the path's stay.
    srt.stop();
    wait_until("the SRT reader's series gone", Duration::from_secs(15), || {
        let s = samples(&server);
        s.iter().all(|x| x.labels.get("id") != Some(&id))
            && find(&s, "sluice_path_online", &[("path", "live/m")]).len() == 1
    });

    // Anything else is a JSON 404.
    let (st, _, body) = http_get(server.metrics, "/nothing", &[]);
    assert_eq!(st, 404);
    assert!(String::from_utf8_lossy(&body).contains("\"error\""));
}

/// Every `sluice_...` metric name in a text.
fn sluice_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("sluice_") {
        let tail = &rest[i..];
        let len = tail
            .bytes()
            .position(|b| !(b.is_ascii_lowercase() || b == b'_'))
            .unwrap_or(tail.len());
        let name = tail[..len].trim_end_matches('_');
        if name.len() > "sluice_".len() {
            out.insert(name.to_owned());
        }
        rest = &tail[len.max(1)..];
    }
    out
}

/// Waits until the API lists an SRT reader with link statistics; its id.
fn wait_srt_reader(server: &Server) -> u64 {
    let mut id = 0;
    wait_until(
        "an SRT reader with link statistics",
        Duration::from_secs(20),
        || {
            let v = api(server, "v1/sessions");
            let found = v["items"].as_array().unwrap().iter().find(|s| {
                s["protocol"] == "srt"
                    && s["role"] == "reader"
                    && s["link"]["packets_sent"].as_u64().unwrap_or(0) > 0
            });
            if let Some(s) = found {
                id = s["id"].as_u64().unwrap();
            }
            found.is_some()
        },
    );
    id
}

/// With `max_session_series = 1`, only the publisher gets session series; the others are
/// counted (once each), and the per-protocol totals still count everyone.
#[test]
fn session_series_are_capped_and_what_is_left_out_is_counted() {
    if !require("ffmpeg") || !require_prometheus_client() {
        return;
    }
    let server = Server::start_with(&[("SLUICE_METRICS_MAX_SESSION_SERIES", "1")], None);
    let _pub = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cap"));
    wait_stream(&server, "live/cap");
    let _r1 = reader(&["-i", &server.rtmp_url("live/cap")]);
    let _r2 = reader(&["-i", &server.rtmp_url("live/cap")]);
    wait_until("two RTMP readers", Duration::from_secs(15), || {
        let s = samples(&server);
        find(&s, "sluice_sessions", &[("protocol", "rtmp"), ("role", "reader")])
            .first()
            .is_some_and(|x| x.value == 2.0)
    });
    for _ in 0..3 {
        let s = samples(&server);
        let states = find(&s, "sluice_session_state", &[]);
        assert_eq!(states.len(), 1, "{states:?}");
        assert_eq!(states[0].labels["role"], "publisher");
        // Everyone else (two readers, the path's outputs) is left out, and counted once.
        let total: f64 = find(&s, "sluice_sessions", &[]).iter().map(|x| x.value).sum();
        assert!(total >= 4.0, "{total}");
        assert_eq!(one(&s, "sluice_session_series_omitted", &[]), total - 1.0);
        assert_eq!(one(&s, "sluice_session_series_dropped_total", &[]), total - 1.0);
    }
}

/// A Prometheus server (Debian's `prometheus`) on a free loopback port, scraping `target`
/// every second; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dir = tmp_dir().join(format!("prometheus-{}", addr.port()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let mut p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && get(addr, "/-/ready").0 == 200
            {
                break;
            }
            assert!(
                p.child.try_wait().unwrap().is_none(),
                "prometheus exited at start"
            );
            assert!(Instant::now() < deadline, "prometheus not ready in 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// An instant query; the result vector.
    fn query(&self, q: &str) -> Vec<Value> {
        let (st, body) = get(self.addr, &format!("/api/v1/query?query={}", percent_encode(q)));
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET with a bounded read; (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (0, text);
    };
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Debian's Prometheus scrapes the endpoint every second (target up, no scrape error), and its
/// query API returns the path's bitrate within 10 % of the API's.
#[test]
fn prometheus_server_scrapes_the_path_bitrate() {
    if !require("ffmpeg") || !require("prometheus") {
        return;
    }
    let server = Server::start();
    let mut publisher = Publisher::rtmp(&cbr_source().0, &server.rtmp_url("live/prom"));
    wait_stream(&server, "live/prom");
    let prom = Prometheus::start(server.metrics);
    // The bitrate settles over the 5 s window.
    std::thread::sleep(Duration::from_secs(6));
    let query = "sluice_path_in_bitrate_bps{path=\"live/prom\"}";
    let mut value = 0.0;
    wait_until(
        "Prometheus to return the path's bitrate",
        Duration::from_secs(30),
        || {
            let r = prom.query(query);
            value = r
                .first()
                .and_then(|x| x["value"][1].as_str())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            value > 1_000_000.0
        },
    );
    let api_bps = api(&server, "v1/paths/live/prom")["bitrate_in"].as_f64().unwrap();
    assert!(
        (value / api_bps - 1.0).abs() <= 0.10,
        "Prometheus has {value} b/s, the API {api_bps}"
    );
    // The target is healthy: every scrape parsed, none failed.
    let (st, body) = get(prom.addr, "/api/v1/targets");
    assert_eq!(st, 200);
    let t: Value = serde_json::from_str(&body).unwrap();
    let target = &t["data"]["activeTargets"][0];
    assert_eq!(target["health"], "up", "{target}");
    assert_eq!(target["lastError"], "", "{target}");
    let up = prom.query("up{job=\"sluice\"}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    // Counters arrive as counters: rate() over them gives the bytes per second (once a few
    // scrapes are in its window).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = prom.query("rate(sluice_path_in_bytes_total{path=\"live/prom\"}[10s])");
        let bytes_per_s: f64 = r
            .first()
            .and_then(|x| x["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if (bytes_per_s * 8.0 / api_bps - 1.0).abs() <= 0.25 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rate() {bytes_per_s} B/s vs the API's {api_bps} b/s: {r:?}; publisher running: {}, {}",
            publisher.is_running(),
            publisher.stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
