//! The limits of the HTTP listeners (`http_serve`), checked against the real binary: half-sent
//! requests are cut after the header timeout while an HTTP-FLV viewer keeps streaming, the
//! per-IP connection cap, oversized headers, and JSON error bodies on both HTTP listeners.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const HALF_SENT: usize = 1000;

/// How a socket the server may have closed reads.
#[derive(Debug, PartialEq)]
enum ReadOutcome {
    /// EOF or reset: the server closed it.
    Closed,
    /// Nothing to read before the deadline: still open.
    Open,
    Data(usize),
}

fn read_outcome(s: &mut TcpStream, wait: Duration) -> ReadOutcome {
    s.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
        .unwrap();
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(0) => ReadOutcome::Closed,
        Ok(n) => ReadOutcome::Data(n),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => ReadOutcome::Open,
        Err(_) => ReadOutcome::Closed,
    }
}

/// Non-blocking check: is the socket still open with nothing to read?
fn still_open(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1];
    let open = matches!(s.peek(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    open
}

/// Sends raw bytes and reads until the server closes (bounded): status code and the text read.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, Option<std::io::Error>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut error = None;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text, error)
}

/// Checks a JSON error response: status, headers, and `{"error": ...}` containing `needle`.
fn assert_json_error(addr: SocketAddr, method: &str, path: &str, status: u16, needle: &str) {
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    let (code, text, _) = raw_exchange(addr, req.as_bytes());
    assert_eq!(code, status, "{method} {path}: {text}");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("\r\ncontent-type: application/json\r\n"), "{head}");
    assert!(head.contains("\r\ncache-control: no-cache\r\n"), "{head}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {body}"));
    assert!(msg.contains(needle), "{method} {path}: {msg}");
    assert_eq!(v.as_object().unwrap().len(), 1, "{body}");
}

/// 1000 clients that send half a request head are all disconnected about `header_timeout` after
/// they connected, while an HTTP-FLV viewer on the same listener streams on well past it.
#[test]
fn half_sent_requests_are_cut_while_flv_streams_on() {
    if !require("ffmpeg") {
        return;
    }
    let server = Server::start_with(
        &[
            ("SLUICE_HTTP_HEADER_TIMEOUT", "2s"),
            ("SLUICE_HTTP_MAX_CONNECTIONS_PER_IP", "2000"),
            ("SLUICE_LOG_LEVEL", "info"),
        ],
        None,
    );
    let _p = Publisher::rtmp(&source_flv(), &server.rtmp_url("live/cam1"));
    wait_stream(&server, "live/cam1");

    // The viewer: records when each read returns, for the whole test.
    let mut flv = TcpStream::connect(server.http).unwrap();
    flv.write_all(format!("GET /live/cam1.flv HTTP/1.1\r\nHost: {}\r\n\r\n", server.http).as_bytes())
        .unwrap();
    flv.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let reads: Arc<Mutex<Vec<(Instant, usize)>>> = Arc::default();
    let first_bytes: Arc<Mutex<Vec<u8>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let viewer = {
        let (reads, first_bytes, done) = (reads.clone(), first_bytes.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let stop = Instant::now() + Duration::from_secs(30);
            while !done.load(Ordering::Relaxed) && Instant::now() < stop {
                match flv.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut f = first_bytes.lock().unwrap();
                        if f.len() < 512 {
                            f.extend_from_slice(&buf[..n.min(512)]);
                        }
                        reads.lock().unwrap().push((Instant::now(), n));
                    }
                }
            }
        })
    };

    // The half-sent requests.
    let start = Instant::now();
    let mut half = Vec::with_capacity(HALF_SENT);
    for i in 0..HALF_SENT {
        let mut s = TcpStream::connect_timeout(&server.http, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n").unwrap();
        half.push((Instant::now(), s));
    }
    let opened = start.elapsed();
    eprintln!("opened {HALF_SENT} half-sent requests in {opened:?}");
    // They are accepted and held (the cap is 2000): the ones that connected less than
    // header_timeout ago (most of them; the listen backlog can slow the connects) are all open.
    let check_at = Instant::now();
    let recent: Vec<_> = half
        .iter()
        .filter(|(t, _)| check_at.duration_since(*t) < HEADER_TIMEOUT - Duration::from_millis(500))
        .collect();
    let open = recent.iter().filter(|(_, s)| still_open(s)).count();
    eprintln!(
        "{open} of the {} connected in the last 1.5 s are open",
        recent.len()
    );
    assert!(!recent.is_empty(), "no recent connection to check");
    assert_eq!(open, recent.len(), "connections closed before the header timeout");

    // Each is closed within header_timeout + margin of its connect, and not much before.
    let margin = Duration::from_millis(1500);
    let mut early = 0;
    for (i, (connected, s)) in half.iter_mut().enumerate() {
        let deadline = *connected + HEADER_TIMEOUT + margin;
        let wait = deadline.saturating_duration_since(Instant::now());
        let outcome = read_outcome(s, wait);
        assert_eq!(
            outcome,
            ReadOutcome::Closed,
            "half-sent request {i} not closed within {:?} of its connect",
            HEADER_TIMEOUT + margin
        );
        if connected.elapsed() < HEADER_TIMEOUT - Duration::from_millis(200) {
            early += 1;
        }
    }
    let all_closed = Instant::now();
    eprintln!("all closed {:?} after the first connect", start.elapsed());
    assert_eq!(early, 0, "connections closed before the header timeout");

    // The viewer keeps streaming: it reads until 2 x header_timeout after the last half-sent
    // connection was cut, and must get bytes after that cut too.
    let last_connect = half.last().unwrap().0;
    let cut_off = last_connect + HEADER_TIMEOUT;
    let until = (last_connect + 2 * HEADER_TIMEOUT).max(all_closed) + Duration::from_secs(1);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    done.store(true, Ordering::Relaxed);
    let head = String::from_utf8_lossy(&first_bytes.lock().unwrap()).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("FLV"), "no FLV header in {head:?}");
    let reads = reads.lock().unwrap().clone();
    let late: usize = reads
        .iter()
        .filter(|(t, _)| *t > cut_off + Duration::from_secs(1))
        .map(|(_, n)| n)
        .sum();
    let total: usize = reads.iter().map(|(_, n)| n).sum();
    eprintln!("viewer: {total} bytes, {late} of them more than 1 s after the cut-off");
    assert!(
        late > 50_000,
        "the HTTP-FLV viewer stopped getting data after the header timeout: {late} late bytes of {total}"
    );
    viewer.join().unwrap();
}

/// Past `max_connections_per_ip`, new connections from that address are closed at once; the
/// ones held are untouched, and a freed slot serves again.
#[test]
fn connections_past_the_per_ip_cap_are_closed() {
    let server = Server::start_with(&[("SLUICE_HTTP_MAX_CONNECTIONS_PER_IP", "4")], None);
    // Let the start-up probe connections go.
    std::thread::sleep(Duration::from_millis(300));
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(server.http).unwrap();
            s.write_all(b"GET /x HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..3 {
        let mut extra = TcpStream::connect(server.http).unwrap();
        assert_eq!(
            read_outcome(&mut extra, Duration::from_secs(2)),
            ReadOutcome::Closed,
            "a connection past the cap was not closed"
        );
    }
    assert!(held.iter().all(still_open), "held connections were closed");
    assert!(
        server.wait_log("max_connections_per_ip", Duration::from_secs(2)),
        "no log line for the refusal"
    );
    // The other listener has its own count.
    assert_json_error(server.webrtc, "GET", "/", 404, "nothing here");
    // Free one: the next connection is served.
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(200));
    assert_json_error(server.http, "GET", "/", 404, "nothing here");
    drop(held);
}

/// A 64 KiB request head (limit 16 KiB) and one of 200 header lines are answered 431 by hyper
/// (empty body) and the connection closed, on both HTTP listeners.
#[test]
fn oversized_headers_are_answered_431() {
    let server = Server::start();
    for addr in [server.http, server.webrtc] {
        let big = format!(
            "GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        let (code, text, err) = raw_exchange(addr, big.as_bytes());
        assert_eq!(code, 431, "64 KiB head on {addr}: {text:?} {err:?}");
        let many = format!("GET /x HTTP/1.1\r\nHost: a\r\n{}\r\n", "X-H: 1\r\n".repeat(200));
        let (code, text, err) = raw_exchange(addr, many.as_bytes());
        assert_eq!(code, 431, "200 header lines on {addr}: {text:?} {err:?}");
        // Just under the limit is served.
        let ok = format!(
            "GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
            "a".repeat(15_000)
        );
        let (code, text, _) = raw_exchange(addr, ok.as_bytes());
        assert_ne!(code, 431, "{text}");
        assert_ne!(code, 0, "{text}");
    }
}

/// Errors on both HTTP listeners are JSON `{"error": message}`.
#[test]
fn errors_are_json_on_both_listeners() {
    let server = Server::start();
    assert_json_error(server.http, "GET", "/", 404, "nothing here: try /PATH/index.m3u8");
    assert_json_error(server.http, "GET", "/nobody/index.m3u8", 404, "no stream");
    assert_json_error(server.http, "GET", "/nobody.flv", 404, "nobody");
    assert_json_error(server.http, "POST", "/live/x.flv", 405, "only GET and HEAD");
    assert_json_error(server.webrtc, "GET", "/", 404, "nothing here: try /PATH/ (watch)");
    assert_json_error(server.webrtc, "GET", "/live/x/whip", 405, "POST an SDP offer");
    assert_json_error(server.webrtc, "POST", "/live/x/whep", 415, "application/sdp");
    assert_json_error(server.webrtc, "DELETE", "/live/x/whep/nosuch", 404, "session");
}
