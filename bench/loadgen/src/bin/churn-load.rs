//! Slow viewers and churn, for `bench/churn.sh` (issue 17): three kinds of viewers of one stream
//! over one protocol, in one process (tokio, one thread), and the frame arrival gaps of the
//! healthy ones.
//!
//! - **healthy** viewers read as fast as data comes and note the arrival time of each video
//!   frame; the gaps between consecutive frames of a viewer, over every healthy viewer, counted
//!   from the end of the warm-up, are the result (p50, p99, max). RTMP: each video message
//!   (sequence headers aside) decoded by the project's RTMP client; HTTP-FLV: each video tag of
//!   the body; HLS: each new part (LL-HLS: blocking playlist reload on the next part, then the
//!   new parts) or, for a playlist without parts, each new segment (polled every half target
//!   duration); WHEP: each RTP packet of the video payload type with the marker bit (the end of a
//!   frame: SRTP leaves the RTP header in clear, so media is never decrypted; only STUN, DTLS and
//!   RTCP go into str0m, set up as in `whep-bench`).
//! - **slow** viewers read at `--slow-kbps` (a tenth of the stream's bitrate, from the script)
//!   through a token bucket on their reads. RTMP and HTTP-FLV: a 16 KB `SO_RCVBUF` and throttled
//!   reads, so the server's socket fills and it must skip or drop them (a dropped slow viewer
//!   connects again). HLS: the newest segment fetched over its own connection (16 KB
//!   `SO_RCVBUF`, HTTP/1.0) whose body is read at that rate, then the next newest one. WHEP has
//!   no backpressure: a slow viewer reads its UDP socket only every 100 ms and then at most a
//!   tenth of the stream's bytes; the kernel drops what overflows the socket's buffer (the
//!   default `net.core.rmem_default`), as on a congested last mile. It still answers the STUN and
//!   RTCP it does read, so ICE stays up and the server keeps sending at full rate to a viewer that
//!   loses ~90 %.
//! - **churn** viewers connect, stay a random 1–5 s (uniform, xorshift seeded per viewer), leave
//!   abruptly (socket dropped; WHEP: no DELETE, the server times the session out) and connect
//!   again at once, until the end.
//!
//! At the end healthy and slow WHEP viewers send DELETE (they leave cleanly); other connections
//! are simply dropped.
//!
//! Usage: `churn-load --proto rtmp|flv|hls|whep --url URL --healthy N --slow N --churn N
//! --seconds S [--warmup S] [--slow-kbps K]`. URLs: `rtmp://H:P/live/bench`,
//! `http://H:P/live/bench.flv`, `http://H:P/live/bench/stream.m3u8`,
//! `http://H:P/live/bench/whep`. Prints one JSON object: the counts, sessions opened by role
//! (churn sessions are the churners' connections), errors by role and kind, bytes by role (and
//! Mb/s per viewer over the counted window), the healthy viewers' gap stats in ms, and the
//! process's own CPU seconds (`cpu_s`: is the load core the bottleneck?).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use reqwest::{Client, Url};
use sluice_rtmp::chunk::{types, Limits};
use sluice_rtmp::client::{self, ClientEvent, ClientSession, Mode, RtmpUrl};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// Receive buffer of slow TCP viewers.
const SLOW_RCVBUF: u32 = 16 * 1024;
/// Gap histogram: 0.1 ms buckets up to 60 s.
const BUCKET_US: u64 = 100;
const BUCKETS: usize = 600_000;
/// Distinct error kinds kept (the rest are counted as "other").
const MAX_ERROR_KINDS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    Rtmp,
    Flv,
    Hls,
    Whep,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Healthy,
    Slow,
    Churn,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Healthy => "healthy",
            Role::Slow => "slow",
            Role::Churn => "churn",
        }
    }
}

/// A failure of one session, by kind (`closed`, `http_503`, `io_ConnectionReset`, ...).
type Fail = String;
type R<T = ()> = std::result::Result<T, Fail>;

fn io(e: std::io::Error) -> Fail {
    format!("io_{:?}", e.kind())
}

fn http(e: reqwest::Error) -> Fail {
    if e.is_timeout() {
        "http_timeout"
    } else if e.is_connect() {
        "http_connect"
    } else if e.is_body() || e.is_decode() {
        "http_body"
    } else {
        "http_other"
    }
    .into()
}

struct Hist {
    counts: Vec<u32>,
    n: u64,
    max_us: u64,
    over_1s: u64,
}

impl Hist {
    fn add(&mut self, gap: Duration) {
        let us = gap.as_micros() as u64;
        self.counts[((us / BUCKET_US) as usize).min(BUCKETS - 1)] += 1;
        self.n += 1;
        self.max_us = self.max_us.max(us);
        if us > 1_000_000 {
            self.over_1s += 1;
        }
    }

    /// The upper edge of the bucket holding the p-quantile, in ms.
    fn quantile_ms(&self, p: f64) -> f64 {
        if self.n == 0 {
            return f64::NAN;
        }
        let rank = ((p * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c as u64;
            if seen >= rank {
                return (b as u64 + 1) as f64 * BUCKET_US as f64 / 1000.0;
            }
        }
        self.max_us as f64 / 1000.0
    }
}

struct Shared {
    proto: Proto,
    url: String,
    slow_bps: f64,
    count_from: Instant,
    deadline: Instant,
    /// Shared client for WHEP offers and DELETEs.
    http: Client,
    hist: Mutex<Hist>,
    sessions: [AtomicU64; 3],
    bytes: [AtomicU64; 3],
    bytes_window: [AtomicU64; 3],
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn error(&self, role: Role, kind: &str) {
        let mut e = self.errors.lock().unwrap();
        let key = format!("{}:{}", role.name(), kind);
        if e.len() < MAX_ERROR_KINDS || e.contains_key(&key) {
            *e.entry(key).or_default() += 1;
        } else {
            *e.entry(format!("{}:other", role.name())).or_default() += 1;
        }
    }

    fn got(&self, role: Role, n: usize) {
        self.bytes[role as usize].fetch_add(n as u64, Relaxed);
        if Instant::now() >= self.count_from {
            self.bytes_window[role as usize].fetch_add(n as u64, Relaxed);
        }
    }
}

/// Arrival times of one healthy viewer's frames (or parts, segments).
struct Gaps {
    record: bool,
    last: Option<Instant>,
}

impl Gaps {
    fn frame(&mut self, sh: &Shared) {
        if !self.record {
            return;
        }
        let now = Instant::now();
        if let Some(prev) = self.last {
            if prev >= sh.count_from {
                sh.hist.lock().unwrap().add(now - prev);
            }
        }
        self.last = Some(now);
    }
}

/// Token bucket on reads: `rate` bytes per second, bursts of at most 100 ms worth.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        Bucket {
            rate,
            tokens: 0.0,
            last: Instant::now(),
        }
    }

    /// Waits until at least a small read (or `want`) is allowed, and takes it.
    async fn take(&mut self, want: usize) -> usize {
        let min = (want as f64).min(4096.0).min(self.rate * 0.1).max(1.0);
        loop {
            let now = Instant::now();
            self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate)
                .min((self.rate * 0.1).max(min));
            self.last = now;
            if self.tokens >= min {
                let n = (self.tokens as usize).min(want).max(1);
                self.tokens -= n as f64;
                return n;
            }
            tokio::time::sleep(Duration::from_secs_f64((min - self.tokens) / self.rate)).await;
        }
    }

    fn refund(&mut self, n: usize) {
        self.tokens += n as f64;
    }
}

/// xorshift64: each churner's own sequence of stays.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn main() -> Result<()> {
    let usage = "usage: churn-load --proto rtmp|flv|hls|whep --url URL --healthy N --slow N --churn N \
                 --seconds S [--warmup S] [--slow-kbps K]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut proto, mut url) = (None, None);
    let (mut healthy, mut slow, mut churn) = (0usize, 0usize, 0usize);
    let (mut seconds, mut warmup, mut slow_kbps) = (None, 5.0f64, 250.0f64);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().context(usage)?;
        match a.as_str() {
            "--proto" => {
                proto = Some(match v.as_str() {
                    "rtmp" => Proto::Rtmp,
                    "flv" => Proto::Flv,
                    "hls" => Proto::Hls,
                    "whep" => Proto::Whep,
                    p => bail!("unknown protocol {p}; {usage}"),
                })
            }
            "--url" => url = Some(v.clone()),
            "--healthy" => healthy = v.parse().context("--healthy")?,
            "--slow" => slow = v.parse().context("--slow")?,
            "--churn" => churn = v.parse().context("--churn")?,
            "--seconds" => seconds = Some(v.parse::<f64>().context("--seconds")?),
            "--warmup" => warmup = v.parse().context("--warmup")?,
            "--slow-kbps" => slow_kbps = v.parse().context("--slow-kbps")?,
            _ => bail!(usage),
        }
    }
    let (Some(proto), Some(url), Some(seconds)) = (proto, url, seconds) else {
        bail!(usage);
    };
    if proto == Proto::Whep {
        str0m::crypto::from_feature_flags().install_process_default();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let start = Instant::now();
        let sh = Arc::new(Shared {
            proto,
            url,
            slow_bps: slow_kbps * 1000.0 / 8.0,
            count_from: start + Duration::from_secs_f64(warmup),
            deadline: start + Duration::from_secs_f64(seconds),
            http: Client::builder()
                .timeout(Duration::from_secs(10))
                .no_proxy()
                .tls_certs_only([])
                .build()?,
            hist: Mutex::new(Hist {
                counts: vec![0; BUCKETS],
                n: 0,
                max_us: 0,
                over_1s: 0,
            }),
            sessions: Default::default(),
            bytes: Default::default(),
            bytes_window: Default::default(),
            errors: Mutex::new(BTreeMap::new()),
        });
        // Arrivals: healthy and slow viewers over the first two seconds (at most half the
        // warm-up), churners over the first five (at most half the run), so they do not leave
        // together.
        let spread =
            |n: usize, over: f64, i: usize| Duration::from_secs_f64(over * i as f64 / n.max(1) as f64);
        let ramp = 2.0f64.min(warmup / 2.0);
        let mut tasks = Vec::new();
        for (role, n, over) in [
            (Role::Healthy, healthy, ramp),
            (Role::Slow, slow, ramp),
            (Role::Churn, churn, 5.0f64.min(seconds / 2.0)),
        ] {
            for i in 0..n {
                let sh = sh.clone();
                let delay = spread(n, over, i);
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    viewer(&sh, role, i).await;
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        report(&sh, healthy, slow, churn, seconds, warmup, slow_kbps);
        Ok(())
    })
}

fn report(sh: &Shared, healthy: usize, slow: usize, churn: usize, seconds: f64, warmup: f64, slow_kbps: f64) {
    let h = sh.hist.lock().unwrap();
    let errors = sh.errors.lock().unwrap();
    let window = (seconds - warmup).max(1e-3);
    let mbps = |r: Role, n: usize| {
        if n == 0 {
            0.0
        } else {
            sh.bytes_window[r as usize].load(Relaxed) as f64 * 8.0 / window / 1e6 / n as f64
        }
    };
    let unit = match sh.proto {
        Proto::Rtmp | Proto::Flv | Proto::Whep => "frame",
        Proto::Hls => "part or segment",
    };
    let proto = match sh.proto {
        Proto::Rtmp => "rtmp",
        Proto::Flv => "flv",
        Proto::Hls => "hls",
        Proto::Whep => "whep",
    };
    let kinds: Vec<String> = errors.iter().map(|(k, n)| format!("\"{k}\":{n}")).collect();
    let cpu = own_cpu_seconds().map_or("null".into(), |c| format!("{c:.2}"));
    let num = |x: f64| {
        if x.is_finite() {
            format!("{x:.1}")
        } else {
            "null".into()
        }
    };
    println!(
        "{{\"proto\":\"{proto}\",\"healthy\":{healthy},\"slow\":{slow},\"churn\":{churn},\
         \"seconds\":{seconds},\"warmup_s\":{warmup},\"slow_kbps\":{slow_kbps},\"unit\":\"{unit}\",\
         \"sessions\":{{\"healthy\":{},\"slow\":{},\"churn\":{}}},\"churn_sessions\":{},\
         \"errors\":{{{}}},\"error_count\":{},\
         \"bytes\":{{\"healthy\":{},\"slow\":{},\"churn\":{}}},\
         \"mbps_per_viewer\":{{\"healthy\":{:.3},\"slow\":{:.3},\"churn\":{:.3}}},\
         \"gap_ms\":{{\"p50\":{},\"p99\":{},\"max\":{:.1},\"count\":{},\"over_1s\":{}}},\
         \"cpu_s\":{cpu}}}",
        sh.sessions[0].load(Relaxed),
        sh.sessions[1].load(Relaxed),
        sh.sessions[2].load(Relaxed),
        sh.sessions[2].load(Relaxed),
        kinds.join(","),
        errors.values().sum::<u64>(),
        sh.bytes[0].load(Relaxed),
        sh.bytes[1].load(Relaxed),
        sh.bytes[2].load(Relaxed),
        mbps(Role::Healthy, healthy),
        mbps(Role::Slow, slow),
        mbps(Role::Churn, churn),
        num(h.quantile_ms(0.5)),
        num(h.quantile_ms(0.99)),
        h.max_us as f64 / 1000.0,
        h.n,
        h.over_1s,
    );
}

/// This process's CPU time (user + system), from `/proc/self/stat` (Linux; ticks of 1/100 s).
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut f = stat.rsplit_once(')')?.1.split_whitespace();
    // Fields 14 and 15 of the line; the text after ')' starts at field 3.
    let utime: f64 = f.nth(11)?.parse().ok()?;
    let stime: f64 = f.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// One viewer, session after session until the deadline: healthy and slow viewers connect again
/// after a failure (200 ms later), churners after each stay.
async fn viewer(sh: &Shared, role: Role, i: usize) {
    let mut rng = Rng::new(i as u64 ^ ((sh.proto as u64) << 32));
    let mut gaps = Gaps {
        record: role == Role::Healthy,
        last: None,
    };
    loop {
        let now = Instant::now();
        if now >= sh.deadline {
            return;
        }
        let end = match role {
            Role::Churn => (now + Duration::from_secs_f64(1.0 + 4.0 * rng.unit())).min(sh.deadline),
            _ => sh.deadline,
        };
        sh.sessions[role as usize].fetch_add(1, Relaxed);
        // A new session's first gap is not a delivery gap.
        gaps.last = None;
        let r = match sh.proto {
            // WHEP ends itself at `end` (healthy and slow viewers send DELETE); the others are
            // dropped there. Bounded either way.
            Proto::Whep => tokio::time::timeout_at((end + Duration::from_secs(5)).into(), async {
                whep(sh, role, &mut gaps, end).await
            })
            .await
            .unwrap_or_else(|_| Err("timeout".into())),
            p => match tokio::time::timeout_at(end.into(), async {
                match p {
                    Proto::Rtmp => rtmp(sh, role, &mut gaps).await,
                    Proto::Flv => flv(sh, role, &mut gaps).await,
                    _ => match role {
                        Role::Slow => hls_slow(sh).await,
                        _ => hls(sh, role, &mut gaps).await,
                    },
                }
            })
            .await
            {
                Ok(Err(e)) => Err(e),
                // Ended by us at `end`; a session the server ended without an error is one.
                Ok(Ok(())) => Err("ended".into()),
                Err(_) => Ok(()),
            },
        };
        if let Err(kind) = r {
            sh.error(role, &kind);
            let pause = (Instant::now() + Duration::from_millis(200)).min(sh.deadline);
            tokio::time::sleep_until(pause.into()).await;
        }
    }
}

async fn tcp_connect(addr: &str, role: Role) -> R<TcpStream> {
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => tokio::net::lookup_host(addr)
            .await
            .map_err(io)?
            .next()
            .ok_or("resolve")?,
    };
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(io)?;
    if role == Role::Slow {
        sock.set_recv_buffer_size(SLOW_RCVBUF).map_err(io)?;
    }
    let s = sock
        .connect(addr)
        .await
        .map_err(|e| format!("connect_{:?}", e.kind()))?;
    s.set_nodelay(true).map_err(io)?;
    Ok(s)
}

/// Reads into `buf` as the role does: everything that is there (healthy, churn) or what the
/// token bucket allows (slow). Ok(0) at the end of the stream.
async fn read_some(sock: &mut TcpStream, buf: &mut BytesMut, bucket: &mut Option<Bucket>) -> R<usize> {
    match bucket {
        None => {
            buf.reserve(256 * 1024);
            sock.read_buf(buf).await.map_err(io)
        }
        Some(b) => {
            let allowed = b.take(64 * 1024).await;
            buf.reserve(allowed);
            let n = sock.take(allowed as u64).read_buf(buf).await.map_err(io)?;
            b.refund(allowed - n);
            Ok(n)
        }
    }
}

async fn rtmp(sh: &Shared, role: Role, gaps: &mut Gaps) -> R {
    let url = RtmpUrl::parse(&sh.url).map_err(|_| "bad_url")?;
    let addr = sh
        .url
        .strip_prefix("rtmp://")
        .and_then(|r| r.split('/').next())
        .map(|h| {
            if h.contains(':') {
                h.to_owned()
            } else {
                format!("{h}:1935")
            }
        })
        .ok_or("bad_url")?;
    let mut sock = tcp_connect(&addr, role).await?;
    let mut session = ClientSession::new(url, Mode::Play, 4096, Limits::default());
    let mut buf = BytesMut::with_capacity(64 * 1024);
    client::connect(&mut sock, &mut session, &mut buf, Duration::from_secs(10))
        .await
        .map_err(|e| format!("rtmp_connect: {}", short(&e.to_string())))?;
    let mut bucket = (role == Role::Slow).then(|| Bucket::new(sh.slow_bps));
    let mut out = Vec::new();
    loop {
        // Decode every message (acknowledgements go out from the session), note video frames.
        let events = session
            .receive(&mut buf, &mut out)
            .map_err(|e| format!("rtmp: {}", short(&e.to_string())))?;
        for ev in events {
            let ClientEvent::Media(m) = ev else { continue };
            if m.type_id == types::VIDEO && m.payload.len() > 1 {
                let b0 = m.payload[0];
                let seq_header = if b0 & 0x80 != 0 {
                    b0 & 0x0f == 0
                } else {
                    m.payload[1] == 0
                };
                if !seq_header {
                    gaps.frame(sh);
                }
            }
        }
        for o in out.drain(..) {
            sock.write_all(&o).await.map_err(io)?;
        }
        let n = read_some(&mut sock, &mut buf, &mut bucket).await?;
        if n == 0 {
            return Err("closed".into());
        }
        sh.got(role, n);
    }
}

/// The first words of an error message, without numbers (ids), as an error kind.
fn short(s: &str) -> String {
    s.split(|c: char| c == ',' || c == '(' || c.is_ascii_digit())
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .take(60)
        .collect()
}

/// `host:port` and `/path?query` of an http:// URL.
fn host_path(url: &Url) -> R<(String, String)> {
    let host = url.host_str().ok_or("bad_url")?;
    let port = url.port_or_known_default().ok_or("bad_url")?;
    let mut path = url.path().to_owned();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok((format!("{host}:{port}"), path))
}

/// A GET over a fresh connection, HTTP/1.0 (no chunking: the body runs to the close). Returns
/// the socket and what was read after the response head (the head checked for 200).
async fn get_raw(url: &Url, role: Role, bucket: &mut Option<Bucket>) -> R<(TcpStream, BytesMut)> {
    let (host, path) = host_path(url)?;
    let mut sock = tcp_connect(&host, role).await?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: churn-load\r\n\r\n");
    sock.write_all(req.as_bytes()).await.map_err(io)?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = &buf[..end];
            let status = head.split(|&b| b == b' ').nth(1).unwrap_or(b"");
            if status != b"200" {
                return Err(format!("http_{}", String::from_utf8_lossy(status)));
            }
            let _ = buf.split_to(end + 4);
            return Ok((sock, buf));
        }
        if buf.len() > 16 * 1024 {
            return Err("http_head_too_long".into());
        }
        if read_some(&mut sock, &mut buf, bucket).await? == 0 {
            return Err("closed_before_head".into());
        }
    }
}

/// Finds the video tags in an FLV byte stream as it arrives (nothing is kept but a tag header).
struct FlvScan {
    /// Bytes of the file header (9) and the first previous-tag-size (4) still to skip.
    skip_header: usize,
    head: [u8; 11],
    have: usize,
    /// Body and previous-tag-size bytes of the current tag still to skip; its type.
    body_left: usize,
    tag_type: u8,
}

impl FlvScan {
    fn new() -> FlvScan {
        FlvScan {
            skip_header: 13,
            head: [0; 11],
            have: 0,
            body_left: 0,
            tag_type: 0,
        }
    }

    /// Feeds bytes; returns how many video tags ended in them.
    fn feed(&mut self, mut b: &[u8]) -> usize {
        let mut frames = 0;
        while !b.is_empty() {
            if self.skip_header > 0 {
                let n = self.skip_header.min(b.len());
                self.skip_header -= n;
                b = &b[n..];
            } else if self.body_left > 0 {
                let n = self.body_left.min(b.len());
                self.body_left -= n;
                b = &b[n..];
                if self.body_left == 0 && self.tag_type & 0x1f == 9 {
                    frames += 1;
                }
            } else {
                let n = (11 - self.have).min(b.len());
                self.head[self.have..self.have + n].copy_from_slice(&b[..n]);
                self.have += n;
                b = &b[n..];
                if self.have == 11 {
                    self.have = 0;
                    self.tag_type = self.head[0];
                    let size = u32::from_be_bytes([0, self.head[1], self.head[2], self.head[3]]) as usize;
                    self.body_left = size + 4;
                }
            }
        }
        frames
    }
}

async fn flv(sh: &Shared, role: Role, gaps: &mut Gaps) -> R {
    let url = Url::parse(&sh.url).map_err(|_| "bad_url")?;
    let mut bucket = (role == Role::Slow).then(|| Bucket::new(sh.slow_bps));
    let (mut sock, mut buf) = get_raw(&url, role, &mut bucket).await?;
    let mut scan = FlvScan::new();
    sh.got(role, buf.len());
    for _ in 0..scan.feed(&buf) {
        gaps.frame(sh);
    }
    loop {
        buf.clear();
        let n = read_some(&mut sock, &mut buf, &mut bucket).await?;
        if n == 0 {
            return Err("closed".into());
        }
        sh.got(role, n);
        for _ in 0..scan.feed(&buf) {
            gaps.frame(sh);
        }
    }
}

/// What a viewer needs from a media playlist.
#[derive(Default)]
struct Playlist {
    target: f64,
    part_target: f64,
    next_msn: u64,
    next_part: u64,
    map: Option<String>,
    /// (segment, index in it, URI)
    parts: Vec<(u64, u64, String)>,
    /// (sequence number, URI)
    segments: Vec<(u64, String)>,
}

impl Playlist {
    fn parse(text: &str) -> Playlist {
        let mut pl = Playlist {
            target: 2.0,
            ..Default::default()
        };
        let (mut msn, mut idx) = (0u64, 0u64);
        let uri = |line: &str| -> Option<String> {
            let s = line.find("URI=\"")? + 5;
            let e = s + line[s..].find('"')?;
            Some(line[s..e].to_owned())
        };
        let attr = |list: &str, key: &str| -> Option<f64> {
            let s = list.find(key)? + key.len();
            list[s..].split(',').next()?.trim().parse().ok()
        };
        for line in text.lines() {
            if let Some(tag) = line.strip_prefix("#EXT-X-") {
                if tag.starts_with("PART:") {
                    if let Some(u) = uri(line) {
                        pl.parts.push((msn, idx, u));
                        idx += 1;
                    }
                } else if tag.starts_with("MAP:") {
                    pl.map = uri(line);
                } else if let Some(v) = tag.strip_prefix("TARGETDURATION:") {
                    pl.target = v.trim().parse().unwrap_or(2.0);
                } else if let Some(v) = tag.strip_prefix("MEDIA-SEQUENCE:") {
                    msn = v.trim().parse().unwrap_or(0);
                } else if let Some(v) = tag.strip_prefix("PART-INF:") {
                    pl.part_target = attr(v, "PART-TARGET=").unwrap_or(0.0);
                } else if let Some(v) = tag.strip_prefix("SKIP:") {
                    msn += attr(v, "SKIPPED-SEGMENTS=").unwrap_or(0.0) as u64;
                }
            } else if !line.is_empty() && !line.starts_with('#') {
                pl.segments.push((msn, line.to_owned()));
                msn += 1;
                idx = 0;
            }
        }
        pl.next_msn = msn;
        pl.next_part = idx;
        pl
    }
}

async fn http_get(client: &Client, url: Url, sh: &Shared, role: Role) -> R<bytes::Bytes> {
    let r = client.get(url).send().await.map_err(http)?;
    if !r.status().is_success() {
        return Err(format!("http_{}", r.status().as_u16()));
    }
    let b = r.bytes().await.map_err(http)?;
    sh.got(role, b.len());
    Ok(b)
}

/// A healthy (or churning) HLS player on its own keep-alive connection: LL-HLS blocking reloads
/// on the next part, each new part fetched once (joining at the last part); a playlist without
/// parts is polled every half target duration and each new segment fetched once.
async fn hls(sh: &Shared, role: Role, gaps: &mut Gaps) -> R {
    let base = Url::parse(&sh.url).map_err(|_| "bad_url")?;
    let client = Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .tls_certs_only([])
        .build()
        .map_err(http)?;
    let mut blocking: Option<(u64, u64)> = None;
    let mut cursor: Option<(u64, u64)> = None;
    let mut init = false;
    loop {
        let polled = tokio::time::Instant::now();
        let mut url = base.clone();
        if let Some((msn, part)) = blocking {
            let q = match base.query() {
                Some(q) => format!("{q}&_HLS_msn={msn}&_HLS_part={part}"),
                None => format!("_HLS_msn={msn}&_HLS_part={part}"),
            };
            url.set_query(Some(&q));
        }
        let text = http_get(&client, url, sh, role).await?;
        let pl = Playlist::parse(std::str::from_utf8(&text).map_err(|_| "bad_playlist")?);
        if !init {
            if let Some(m) = &pl.map {
                http_get(&client, base.join(m).map_err(|_| "bad_uri")?, sh, role).await?;
            }
            init = true;
        }
        if pl.part_target > 0.0 {
            if cursor.is_none() {
                // Join at the live edge: the last part listed only.
                if let Some(p) = pl.parts.iter().rev().nth(1) {
                    cursor = Some((p.0, p.1));
                }
            }
            for (msn, idx, u) in &pl.parts {
                if cursor.is_some_and(|c| c >= (*msn, *idx)) {
                    continue;
                }
                http_get(&client, base.join(u).map_err(|_| "bad_uri")?, sh, role).await?;
                gaps.frame(sh);
                cursor = Some((*msn, *idx));
            }
            blocking = Some((pl.next_msn, pl.next_part));
        } else {
            let first = cursor.is_none();
            for (msn, u) in &pl.segments {
                if cursor.is_some_and(|c| c.0 >= *msn) || (first && *msn + 1 != pl.next_msn) {
                    continue;
                }
                http_get(&client, base.join(u).map_err(|_| "bad_uri")?, sh, role).await?;
                gaps.frame(sh);
                cursor = Some((*msn, 0));
            }
            tokio::time::sleep_until(polled + Duration::from_secs_f64((pl.target / 2.0).max(0.1))).await;
        }
    }
}

/// A slow HLS viewer: the playlist, then the newest segment not fetched yet over a connection of
/// its own (small receive buffer), its body read at the slow rate; again.
async fn hls_slow(sh: &Shared) -> R {
    let base = Url::parse(&sh.url).map_err(|_| "bad_url")?;
    let client = Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .tls_certs_only([])
        .build()
        .map_err(http)?;
    let mut last: Option<u64> = None;
    let mut bucket = Some(Bucket::new(sh.slow_bps));
    loop {
        let text = http_get(&client, base.clone(), sh, Role::Slow).await?;
        let pl = Playlist::parse(std::str::from_utf8(&text).map_err(|_| "bad_playlist")?);
        let newest = pl
            .segments
            .last()
            .filter(|(msn, _)| last.is_none_or(|l| *msn > l));
        let Some((msn, u)) = newest else {
            tokio::time::sleep(Duration::from_secs_f64((pl.target / 2.0).max(0.1))).await;
            continue;
        };
        let url = base.join(u).map_err(|_| "bad_uri")?;
        let (mut sock, mut buf) = get_raw(&url, Role::Slow, &mut bucket).await?;
        sh.got(Role::Slow, buf.len());
        loop {
            buf.clear();
            let n = read_some(&mut sock, &mut buf, &mut bucket).await?;
            if n == 0 {
                break;
            }
            sh.got(Role::Slow, n);
        }
        last = Some(*msn);
    }
}

/// STUN, DTLS and RTCP go to str0m; SRTP media is only looked at (its RTP header is clear).
fn is_media(b: &[u8]) -> bool {
    b.len() > 12 && (128..=191).contains(&b[0]) && !(200..=207).contains(&b[1])
}

/// Payload types of the answer's video section, retransmission and FEC formats aside.
fn video_pts(sdp: &str) -> Vec<u8> {
    let mut pts = Vec::new();
    let mut not_media = Vec::new();
    let mut in_video = false;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video");
            if in_video {
                pts.extend(m.split_whitespace().skip(3).filter_map(|p| p.parse::<u8>().ok()));
            }
        } else if let (true, Some(r)) = (in_video, line.strip_prefix("a=rtpmap:")) {
            let mut f = r.split_whitespace();
            let pt = f.next().and_then(|p| p.parse::<u8>().ok());
            let name = f.next().unwrap_or("").to_ascii_lowercase();
            if ["rtx/", "red/", "ulpfec/", "flexfec"]
                .iter()
                .any(|n| name.starts_with(n))
            {
                not_media.extend(pt);
            }
        }
    }
    pts.retain(|p| !not_media.contains(p));
    pts
}

async fn whep(sh: &Shared, role: Role, gaps: &mut Gaps, end: Instant) -> R {
    let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(io)?;
    std_sock.set_nonblocking(true).map_err(io)?;
    let sock = UdpSocket::from_std(std_sock).map_err(io)?;
    let local = sock.local_addr().map_err(io)?;
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|_| "candidate")?);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending): (_, SdpPendingOffer) = api.apply().ok_or("offer")?;
    let resp = sh
        .http
        .post(&sh.url)
        .header("Content-Type", "application/sdp")
        .body(offer.to_sdp_string())
        .send()
        .await
        .map_err(http)?;
    if resp.status().as_u16() != 201 {
        return Err(format!("http_{}", resp.status().as_u16()));
    }
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .and_then(|l| Url::parse(&sh.url).ok()?.join(l).ok());
    let answer = resp.text().await.map_err(http)?;
    let pts = video_pts(&answer);
    let answer = SdpAnswer::from_sdp_string(&answer).map_err(|_| "bad_answer")?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|_| "bad_answer")?;

    let mut buf = vec![0u8; 2048];
    let mut next_timeout = Instant::now();
    let slow_tick = Duration::from_millis(100);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut fed = false;
        if role == Role::Slow {
            // Every 100 ms, a tenth of a second's worth at the slow rate; the rest overflows.
            let wake = (now + slow_tick).min(end);
            tokio::time::sleep_until(wake.into()).await;
            let mut budget = sh.slow_bps * slow_tick.as_secs_f64();
            while budget > 0.0 {
                match sock.try_recv_from(&mut buf) {
                    Ok((len, src)) => {
                        budget -= len as f64;
                        fed |= whep_packet(sh, role, gaps, &mut rtc, &buf[..len], src, local, &pts);
                    }
                    Err(_) => break,
                }
            }
        } else {
            let wake = next_timeout.min(end);
            tokio::select! {
                r = sock.recv_from(&mut buf) => {
                    let (len, src) = r.map_err(io)?;
                    fed = whep_packet(sh, role, gaps, &mut rtc, &buf[..len], src, local, &pts);
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        let now = Instant::now();
        if !fed && now < next_timeout {
            continue;
        }
        if now >= next_timeout {
            rtc.handle_input(Input::Timeout(now)).map_err(|_| "str0m")?;
        }
        loop {
            match rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let _ = sock.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Timeout(t)) => {
                    next_timeout = t;
                    break;
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return Err("str0m".into()),
            }
        }
    }
    // Healthy and slow viewers leave cleanly; churners vanish.
    if role != Role::Churn {
        if let Some(loc) = location {
            let _ = tokio::time::timeout(Duration::from_secs(2), sh.http.delete(loc).send()).await;
        }
    }
    Ok(())
}

/// One datagram of a WHEP viewer; true when it went into str0m.
#[allow(clippy::too_many_arguments)]
fn whep_packet(
    sh: &Shared,
    role: Role,
    gaps: &mut Gaps,
    rtc: &mut Rtc,
    b: &[u8],
    src: SocketAddr,
    local: SocketAddr,
    pts: &[u8],
) -> bool {
    sh.got(role, b.len());
    if is_media(b) {
        if b[1] & 0x80 != 0 && pts.contains(&(b[1] & 0x7f)) {
            gaps.frame(sh);
        }
        return false;
    }
    let Ok(contents) = b.try_into() else {
        return false;
    };
    let _ = rtc.handle_input(Input::Receive(
        Instant::now(),
        Receive {
            proto: Protocol::Udp,
            source: src,
            destination: local,
            contents,
        },
    ));
    true
}
