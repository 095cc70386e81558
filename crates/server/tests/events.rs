//! Events end to end (real binary, real ffmpeg): webhooks reach a local receiver signed (the
//! HMAC checked with Python's hmac module), a receiver that accepts and never answers delays
//! neither an RTMP reader's frames nor the other receiver; the API's SSE stream shows an ffmpeg
//! publish as `published` then `unpublished` and ends at shutdown; `run_on` commands get their
//! environment, and the `publish` one (with a child of its own) is killed when the publisher
//! stops and at shutdown, and restarted when asked.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Req {
    at: Instant,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// A webhook receiver on 127.0.0.1: answers 200 to each request, or (`hang`) reads it and
/// never answers.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Req>>>,
    accepted: Arc<AtomicUsize>,
}

impl Receiver {
    fn start(hang: bool) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (got2, accepted2) = (got.clone(), accepted.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                accepted2.fetch_add(1, Ordering::Relaxed);
                let got = got2.clone();
                std::thread::spawn(move || serve(conn, hang, got));
            }
        });
        Receiver { addr, got, accepted }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn requests(&self) -> Vec<Req> {
        self.got.lock().unwrap().clone()
    }

    /// Waits for a request whose JSON satisfies `f`.
    fn wait_for(&self, what: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Req {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| f(&r.json())) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}; got {:?}",
                self.requests()
                    .iter()
                    .map(|r| String::from_utf8_lossy(&r.body).into_owned())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(conn: TcpStream, hang: bool, got: Arc<Mutex<Vec<Req>>>) {
    conn.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut headers = Vec::new();
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let len: usize = header(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        got.lock().unwrap().push(Req {
            at: Instant::now(),
            headers,
            body,
        });
        if hang {
            // Never answer; wait for the client to give up and close.
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
            return;
        }
        if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// `sha256=<hex>` computed by Python's hmac module: an implementation independent of ours.
fn python_signature(secret: &str, body: &[u8]) -> String {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import hmac, hashlib, sys; print('sha256=' + hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())",
            secret,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Opens an HTTP-FLV reader of `path`, reads a little and leaves: one reader session.
fn short_flv_read(server: &Server, path: &str) {
    let mut s = TcpStream::connect(server.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /{path}.flv HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let mut n = 0;
    while n < 2000 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
}

/// An ffmpeg RTMP reader writing one line per video packet as it arrives; the arrival times.
struct ArrivalReader {
    child: std::process::Child,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl ArrivalReader {
    fn start(url: &str) -> ArrivalReader {
        let mut child = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-v",
                "error",
                "-rw_timeout",
                "15000000",
                "-i",
                url,
            ])
            .args([
                "-map",
                "0:v",
                "-c",
                "copy",
                "-f",
                "framecrc",
                "-flush_packets",
                "1",
                "-",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ffmpeg");
        let out = child.stdout.take().unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let a2 = arrivals.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if !line.starts_with('#') {
                    a2.lock().unwrap().push(Instant::now());
                }
            }
        });
        ArrivalReader { child, arrivals }
    }
}

impl Drop for ArrivalReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn webhooks_are_signed_and_a_hung_receiver_delays_nothing() {
    if !require("ffmpeg") || !require("python3") {
        return;
    }
    let good = Receiver::start(false);
    let hung = Receiver::start(true);
    let secret = "hook-secret-é";
    let config = format!(
        r#"
[webhooks]
urls = ["{}", "{}"]
secret = "{secret}"
timeout = "1s"
retries = 2
retry_backoff = "200ms"
queue = 16
"#,
        hung.url(),
        good.url()
    );
    let server = Server::start_with(&[], Some(&config));
    let path = "live/hooks";
    let _publisher = Publisher::rtmp(&source_flv(), &server.rtmp_url(path));
    wait_stream(&server, path);

    // The good receiver gets `published`, signed.
    let r = good.wait_for("published", Duration::from_secs(5), |v| {
        v["type"] == "published" && v["path"] == path
    });
    let v = r.json();
    assert_eq!(v["protocol"], "rtmp", "{v}");
    assert!(v["session"].as_u64().is_some(), "{v}");
    assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-sluice-event"), Some("published"));
    let sig = r.header("x-sluice-signature").expect("a signature header");
    assert_eq!(sig, python_signature(secret, &r.body), "signature of {v}");

    // A reader's frames arrive with no gap while the hung receiver's deliveries time out, retry
    // and overflow its queue: twenty short HTTP-FLV readers make forty events.
    let reader = ArrivalReader::start(&server.rtmp_url(path));
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let mut read_at = Vec::new();
    for _ in 0..20 {
        read_at.push(Instant::now());
        short_flv_read(&server, path);
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(1));
    let t1 = Instant::now();
    let arrivals: Vec<Instant> = reader
        .arrivals
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|a| *a >= t0 && *a <= t1)
        .collect();
    let secs = (t1 - t0).as_secs_f64();
    assert!(
        arrivals.len() as f64 >= secs * 30.0 * 0.9,
        "{} video frames in {secs:.1} s",
        arrivals.len()
    );
    let max_gap = arrivals.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    assert!(
        max_gap < Duration::from_millis(500),
        "the reader waited {max_gap:?} for a frame"
    );

    // The good receiver saw every reader come, each within a second of its connection.
    let flv_opened = |reqs: &[Req]| -> Vec<Instant> {
        reqs.iter()
            .filter(|r| {
                let v = r.json();
                v["type"] == "session_opened" && v["protocol"] == "http-flv" && v["role"] == "reader"
            })
            .map(|r| r.at)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while flv_opened(&good.requests()).len() < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let reqs = good.requests();
    let opened = flv_opened(&reqs);
    assert_eq!(opened.len(), 20, "every HTTP-FLV reader reported");
    for (i, (at, read)) in opened.iter().zip(&read_at).enumerate() {
        let delay = at.saturating_duration_since(*read);
        assert!(
            delay < Duration::from_secs(1),
            "the good receiver was held up: reader {i} reported after {delay:?}"
        );
    }
    for r in &reqs {
        assert_eq!(
            r.header("x-sluice-signature").map(str::to_owned),
            Some(python_signature(secret, &r.body))
        );
    }
    assert!(
        !reqs.iter().any(|r| r.json()["type"] == "resync"),
        "the good receiver lost nothing"
    );

    // The hung receiver got attempts and retries of the same event, and its overflow was logged.
    let tries = hung.requests();
    assert!(hung.accepted.load(Ordering::Relaxed) >= 2);
    assert!(
        tries.len() >= 2 && tries[0].body == tries[1].body,
        "a timed-out delivery is retried: {} requests",
        tries.len()
    );
    assert!(
        server.wait_log("webhook queue full", Duration::from_secs(10)),
        "the dropped events are logged; log:\n{}",
        server.log()
    );
    assert!(server.log().contains("no answer within 1s"), "{}", server.log());
}

/// Reads an SSE stream's `data:` payloads into a channel; the channel closes at EOF.
fn sse_client(api: SocketAddr, query: &str) -> mpsc::Receiver<Value> {
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET /v1/events{query} HTTP/1.1\r\nHost: {api}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "no response head");
        if line.trim_end().is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in r.lines().map_while(Result::ok) {
            if let Some(data) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(data).expect("JSON data");
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

#[test]
fn sse_shows_publish_then_unpublish_and_ends_at_shutdown() {
    if !require("ffmpeg") {
        return;
    }
    let mut server = Server::start();
    // The head arrives after the subscription: everything from here on is in the stream.
    let events = sse_client(server.api, "");
    let only_unpublished = sse_client(server.api, "?types=unpublished");
    let (st, _, body) = http_get(server.api, "/v1/events?types=publishd", &[]);
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("unknown event type"),
        "{err}"
    );
    let path = "live/sse";
    let mut publisher = Publisher::rtmp(&source_flv(), &server.rtmp_url(path));
    wait_stream(&server, path);
    std::thread::sleep(Duration::from_millis(500));
    publisher.stop();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !seen
        .iter()
        .any(|v: &Value| v["type"] == "unpublished" && v["path"] == path)
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(v) => seen.push(v),
            Err(_) => panic!("no unpublished event; got {seen:?}"),
        }
    }
    let published = seen
        .iter()
        .position(|v| v["type"] == "published" && v["path"] == path)
        .unwrap_or_else(|| panic!("no published event: {seen:?}"));
    let unpublished = seen.iter().position(|v| v["type"] == "unpublished").unwrap();
    assert!(published < unpublished, "{seen:?}");
    let (p, u) = (&seen[published], &seen[unpublished]);
    assert_eq!(p["protocol"], "rtmp");
    assert_eq!(p["session"], u["session"], "{p} {u}");
    assert!(
        seen.iter().any(|v| v["type"] == "session_opened"
            && v["session"] == p["session"]
            && v["role"] == "publisher"),
        "{seen:?}"
    );

    let first = only_unpublished.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (first["type"].as_str(), first["path"].as_str()),
        (Some("unpublished"), Some(path))
    );

    // Shutdown ends the stream.
    server.terminate();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(_) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("the event stream did not end at shutdown"),
        }
    }
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty()
        || stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'))
}

fn wait_file(file: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(file) {
            if !s.is_empty() {
                return s;
            }
        }
        assert!(Instant::now() < deadline, "{} did not appear", file.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_gone(pids: &[u32], timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while !pids.iter().all(|p| gone(*p)) {
        assert!(Instant::now() < deadline, "{what}: processes {pids:?} still run");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pids a run_on publish command wrote: its shell and its child.
fn pids(dir: &Path) -> Vec<u32> {
    let text = wait_file(&dir.join("pids"), Duration::from_secs(10));
    let pids: Vec<u32> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
    assert_eq!(pids.len(), 2, "{text:?}");
    pids
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = tmp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn run_on_commands_get_the_event_and_publish_is_stopped_with_the_path() {
    if !require("ffmpeg") {
        return;
    }
    let dir = fresh_dir("run-on");
    let d = dir.display();
    // The publish command writes its environment, then waits on a child of its own.
    let config = format!(
        r#"
[path_defaults.run_on]
publish = 'env | grep ^SLUICE_ | sort > {d}/env.tmp && mv {d}/env.tmp {d}/env; sleep 600 & echo "$$ $!" > {d}/pids.tmp && mv {d}/pids.tmp {d}/pids; wait'
unpublish = 'echo "$SLUICE_PATH $SLUICE_SESSION" > {d}/unpublished'
read = 'echo "$SLUICE_SESSION $SLUICE_PROTOCOL $SLUICE_EVENT" >> {d}/read'
unread = 'echo "$SLUICE_SESSION $SLUICE_EVENT" >> {d}/unread'
[paths."live/*"]
[paths."restart/*".run_on]
publish = 'echo run >> {d}/restarts; echo a line of output'
publish_restart = true
"#
    );
    let mut server = Server::start_with(&[("SLUICE_WEBHOOKS_SECRET", "not-for-commands")], Some(&config));
    let path = "live/run";
    let mut publisher = Publisher::rtmp(&source_flv(), &server.rtmp_url(path));
    let _restarting = Publisher::rtmp(&source_flv(), &server.rtmp_url("restart/x"));
    wait_stream(&server, path);

    let env = wait_file(&dir.join("env"), Duration::from_secs(10));
    let var = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing from {env}"))
            .to_owned()
    };
    assert_eq!(var("SLUICE_EVENT"), "publish");
    assert_eq!(var("SLUICE_PATH"), path);
    assert_eq!(var("SLUICE_PROTOCOL"), "rtmp");
    let session: u64 = var("SLUICE_SESSION").parse().unwrap();
    assert_eq!(var("SLUICE_RTMP_URL"), server.rtmp_url(path));
    assert_eq!(
        var("SLUICE_HLS_URL"),
        server.http_url(&format!("{path}/index.m3u8"))
    );
    assert_eq!(var("SLUICE_FLV_URL"), server.http_url(&format!("{path}.flv")));
    assert!(var("SLUICE_SRT_URL").ends_with(&format!("?streamid=read:{path}")));
    assert!(
        !env.contains("SLUICE_WEBHOOKS_SECRET") && !env.contains("SLUICE_RTMP_LISTEN"),
        "the server's own SLUICE_ variables are not passed on: {env}"
    );
    let running = pids(&dir);
    assert!(
        !running.iter().any(|p| gone(*p)),
        "the command runs while published"
    );

    // A reader: read and unread run once each, with the reader's session.
    short_flv_read(&server, path);
    let read = wait_file(&dir.join("read"), Duration::from_secs(5));
    let reader: u64 = read.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(read.trim(), format!("{reader} http-flv read"));
    let unread = wait_file(&dir.join("unread"), Duration::from_secs(10));
    assert_eq!(unread.trim(), format!("{reader} unread"));

    // The publisher stops: the command and its child are stopped, unpublish runs.
    let t0 = Instant::now();
    publisher.stop();
    wait_gone(&running, Duration::from_secs(5), "after the publisher stopped");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let unpublished = wait_file(&dir.join("unpublished"), Duration::from_secs(5));
    assert_eq!(unpublished.trim(), format!("{path} {session}"));

    // The restarting command ran more than once (it exits at once; restarted after 1 s, 2 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let runs = std::fs::read_to_string(dir.join("restarts")).unwrap_or_default();
        if runs.lines().count() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted {} times",
            runs.lines().count()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server.log().contains("a line of output"),
        "command output is logged"
    );

    // Published again, then the server shuts down: the command is stopped with it.
    std::fs::remove_file(dir.join("pids")).unwrap();
    let _again = Publisher::rtmp(&source_flv(), &server.rtmp_url(path));
    let running = pids(&dir);
    server.terminate();
    wait_gone(&running, Duration::from_secs(2), "after shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
