//! Low-latency HLS viewer load for `bench/`: N viewers in one process, each behaving like an
//! LL-HLS player on its own keep-alive connections (one client per viewer; two requests in
//! flight at most: the blocking reload and the preload-hinted part).
//!
//! Modes (`--mode`):
//! - `parts` (default): load the media playlist, then loop on blocking reloads
//!   (`_HLS_msn=M&_HLS_part=P`, the part after the last `EXT-X-PART` listed, RFC 8216bis
//!   6.2.5.2), fetching the `EXT-X-PRELOAD-HINT` part at the same time (the server holds it until
//!   it is complete) and then every listed part not yet fetched, each once; the `EXT-X-MAP` init
//!   once. A playlist without parts (not LL-HLS) falls back to `segments`.
//! - `poll-parts`: the same parts, but the playlist is polled every part target with no query
//!   and hints are not fetched: what a player can do against static files (nginx), where blocking
//!   reload is impossible.
//! - `segments`: poll the playlist every half target duration, fetch each new segment once.
//!
//! A viewer joins near the live edge: the last three parts listed (the last segment in
//! `segments` mode). Viewers start staggered over the first second. A failed request is counted
//! by kind and retried after 200 ms; it does not end the viewer.
//!
//! `--warmup S`: count only from S seconds after the start (the run lasts SECONDS in all), so
//! that a script can measure a server's CPU over the same window. `--mirror DIR` (normally with
//! one viewer): write the init, every part, every segment and then each playlist fetched into DIR
//! (atomically: a temporary file renamed), for a static web server to serve the same stream;
//! files older than a minute are removed. `--threads N`: a multi-threaded runtime (default: one
//! thread).
//!
//! Usage: `llhls-load URL VIEWERS SECONDS [--mode parts|poll-parts|segments] [--warmup S]
//! [--mirror DIR] [--threads N]`. Prints one JSON object: playlists, parts, segments, inits,
//! bytes (bodies, all kinds) and delivered Gb/s over the counted window, max_gap_ms (the largest
//! wall gap between consecutive part (or segment) arrivals of any viewer: a stall indicator),
//! stalls (gaps over 1 s between parts, 2 s between segments), and errors by kind (`http_503`,
//! `timeout`, `connect`, ...; over the whole run, warm-up included).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reqwest::Url;

use self::http1::Client;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Parts,
    PollParts,
    Segments,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Parts => "parts",
            Mode::PollParts => "poll-parts",
            Mode::Segments => "segments",
        }
    }
}

/// Run-wide counters and the window they count over.
struct Shared {
    url: Url,
    mode: Mode,
    count_from: Instant,
    deadline: Instant,
    mirror: Option<PathBuf>,
    playlists: AtomicU64,
    parts: AtomicU64,
    segments: AtomicU64,
    inits: AtomicU64,
    bytes: AtomicU64,
    max_gap_ms: AtomicU64,
    stalls: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn counting(&self) -> bool {
        Instant::now() >= self.count_from
    }

    fn error(&self, kind: String) {
        *self.errors.lock().unwrap().entry(kind).or_default() += 1;
    }

    fn delivered(&self, what: &AtomicU64, bytes: usize) {
        if self.counting() {
            what.fetch_add(1, Relaxed);
            self.bytes.fetch_add(bytes as u64, Relaxed);
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: llhls-load URL_OF_MEDIA_PLAYLIST VIEWERS SECONDS \
                 [--mode parts|poll-parts|segments] [--warmup S] [--mirror DIR] [--threads N]";
    if args.len() < 4 {
        bail!(usage);
    }
    let url = Url::parse(&args[1]).context("URL")?;
    let viewers: usize = args[2].parse().context("VIEWERS")?;
    let seconds: f64 = args[3].parse().context("SECONDS")?;
    let (mut mode, mut warmup, mut mirror, mut threads) = (Mode::Parts, 0.0f64, None, 1usize);
    let mut rest = args[4..].iter();
    while let Some(a) = rest.next() {
        let mut val = || rest.next().context(usage);
        match a.as_str() {
            "--mode" => {
                mode = match val()?.as_str() {
                    "parts" => Mode::Parts,
                    "poll-parts" => Mode::PollParts,
                    "segments" => Mode::Segments,
                    m => bail!("unknown mode {m}; {usage}"),
                }
            }
            "--warmup" => warmup = val()?.parse().context("--warmup")?,
            "--mirror" => mirror = Some(PathBuf::from(val()?)),
            "--threads" => threads = val()?.parse().context("--threads")?,
            _ => bail!(usage),
        }
    }
    if let Some(dir) = &mirror {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let rt = if threads > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let start = Instant::now();
        let sh = Arc::new(Shared {
            url,
            mode,
            count_from: start + Duration::from_secs_f64(warmup),
            deadline: start + Duration::from_secs_f64(seconds),
            mirror,
            playlists: AtomicU64::new(0),
            parts: AtomicU64::new(0),
            segments: AtomicU64::new(0),
            inits: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            max_gap_ms: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
        });
        let mut tasks = Vec::with_capacity(viewers);
        for i in 0..viewers {
            let sh = sh.clone();
            tasks.push(tokio::spawn(async move {
                // Staggered over the first second, as viewers arriving.
                let delay = Duration::from_micros(i as u64 * 1_000_000 / viewers.max(1) as u64);
                tokio::time::sleep(delay).await;
                let deadline = tokio::time::Instant::from_std(sh.deadline);
                let _ = tokio::time::timeout_at(deadline, Viewer::new(&sh).run(&sh)).await;
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let window = Instant::now()
            .min(sh.deadline)
            .saturating_duration_since(sh.count_from)
            .as_secs_f64()
            .max(1e-3);
        let bytes = sh.bytes.load(Relaxed);
        let errors = sh.errors.lock().unwrap();
        let total: u64 = errors.values().sum();
        let kinds: Vec<String> = errors.iter().map(|(k, n)| format!("\"{k}\":{n}")).collect();
        println!(
            "{{\"viewers\":{viewers},\"mode\":\"{}\",\"seconds\":{seconds},\"warmup_s\":{warmup},\
             \"elapsed_s\":{window:.3},\"playlists\":{},\"parts\":{},\"segments\":{},\"inits\":{},\
             \"bytes\":{bytes},\"gbps\":{:.4},\"max_gap_ms\":{},\"stalls\":{},\
             \"error_count\":{total},\"errors\":{{{}}}}}",
            sh.mode.name(),
            sh.playlists.load(Relaxed),
            sh.parts.load(Relaxed),
            sh.segments.load(Relaxed),
            sh.inits.load(Relaxed),
            bytes as f64 * 8.0 / window / 1e9,
            sh.max_gap_ms.load(Relaxed),
            sh.stalls.load(Relaxed),
            kinds.join(",")
        );
        Ok(())
    })
}

/// What the viewer needs from a media playlist, as byte ranges into its text (no copies).
#[derive(Default)]
struct Playlist {
    target: f64,
    part_target: f64,
    /// `EXT-X-MEDIA-SEQUENCE` plus the segments listed (and skipped): the sequence number of
    /// the segment after the last one listed, which the trailing parts belong to.
    next_msn: u64,
    /// Parts listed after the last segment: the index of the next part of `next_msn`.
    next_part: u64,
    map: Option<Range<usize>>,
    hint: Option<Range<usize>>,
    /// (segment, index in it, URI)
    parts: Vec<(u64, u64, Range<usize>)>,
    /// (sequence number, URI)
    segments: Vec<(u64, Range<usize>)>,
}

impl Playlist {
    fn parse(&mut self, text: &str) {
        self.parts.clear();
        self.segments.clear();
        self.map = None;
        self.hint = None;
        self.part_target = 0.0;
        let (mut msn, mut idx) = (0u64, 0u64);
        let base = text.as_ptr() as usize;
        for line in text.lines() {
            let at = line.as_ptr() as usize - base;
            if let Some(tag) = line.strip_prefix("#EXT-X-") {
                if tag.starts_with("PART:") {
                    if let Some(u) = uri(line, at) {
                        self.parts.push((msn, idx, u));
                        idx += 1;
                    }
                } else if tag.starts_with("PRELOAD-HINT:") && tag.contains("TYPE=PART") {
                    self.hint = uri(line, at);
                } else if tag.starts_with("MAP:") {
                    self.map = uri(line, at);
                } else if let Some(v) = tag.strip_prefix("TARGETDURATION:") {
                    self.target = v.trim().parse().unwrap_or(1.0);
                } else if let Some(v) = tag.strip_prefix("MEDIA-SEQUENCE:") {
                    msn = v.trim().parse().unwrap_or(0);
                } else if let Some(v) = tag.strip_prefix("PART-INF:") {
                    self.part_target = attr(v, "PART-TARGET=")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0.0);
                } else if let Some(v) = tag.strip_prefix("SKIP:") {
                    msn += attr(v, "SKIPPED-SEGMENTS=")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                }
            } else if !line.is_empty() && !line.starts_with('#') {
                self.segments.push((msn, at..at + line.len()));
                msn += 1;
                idx = 0;
            }
        }
        self.next_msn = msn;
        self.next_part = idx;
    }

    fn low_latency(&self) -> bool {
        self.part_target > 0.0
    }
}

/// The `URI="..."` attribute of a tag line starting at `at` in the text.
fn uri(line: &str, at: usize) -> Option<Range<usize>> {
    let s = line.find("URI=\"")? + 5;
    let e = s + line[s..].find('"')?;
    Some(at + s..at + e)
}

/// An unquoted attribute's value in a tag's attribute list.
fn attr<'a>(list: &'a str, key: &str) -> Option<&'a str> {
    let s = list.find(key)? + key.len();
    Some(list[s..].split(',').next().unwrap_or("").trim())
}

struct Viewer {
    client: Client,
    /// The playlist's text, reused from one reload to the next.
    text: Vec<u8>,
    pl: Playlist,
    /// Body of a part or segment when mirroring.
    body: Vec<u8>,
    /// The last part (segment, index) or, in segments mode, segment (sequence, 0) fetched.
    cursor: Option<(u64, u64)>,
    /// The hint of the last playlist (the part to fetch along the next reload) and the hinted
    /// part already fetched, by URI.
    hint: String,
    hint_done: String,
    init_done: bool,
    last_arrival: Option<Instant>,
    /// Mirror: files written, oldest first, to remove after a minute; the next segment to write.
    written: VecDeque<(Instant, String)>,
    mirror_seg: Option<u64>,
}

#[derive(Clone, Copy)]
enum Kind {
    Part,
    Segment,
    Init,
}

impl Viewer {
    fn new(sh: &Shared) -> Viewer {
        // One client per viewer: its own keep-alive connections, as separate players have; up to
        // 6 idle connections kept, as browsers keep per host (with 2, a connection handed back a
        // moment after the next request was issued made the client open another, a churn no
        // player causes).
        let client = Client::new(&sh.url, 6);
        Viewer {
            client,
            text: Vec::with_capacity(8192),
            pl: Playlist::default(),
            body: Vec::new(),
            cursor: None,
            hint: String::new(),
            hint_done: String::new(),
            init_done: false,
            last_arrival: None,
            written: VecDeque::new(),
            mirror_seg: None,
        }
    }

    async fn run(mut self, sh: &Shared) {
        let mut blocking: Option<(u64, u64)> = None;
        loop {
            let polled_at = tokio::time::Instant::now();
            let mut url = sh.url.clone();
            if let Some((msn, part)) = blocking {
                let q = match sh.url.query() {
                    Some(q) => format!("{q}&_HLS_msn={msn}&_HLS_part={part}"),
                    None => format!("_HLS_msn={msn}&_HLS_part={part}"),
                };
                url.set_query(Some(&q));
            }
            // The playlist, and with a blocking reload the hinted part alongside it.
            let ok = if blocking.is_some() && !self.hint.is_empty() {
                let hint_url = sh.url.join(&self.hint).ok();
                let (client, text) = (&self.client, &mut self.text);
                let body = if sh.mirror.is_some() {
                    Some(&mut self.body)
                } else {
                    None
                };
                let (pl, hint) = tokio::join!(fetch(client, url, sh, Some(text)), async move {
                    match hint_url {
                        Some(u) => fetch(client, u, sh, body).await,
                        None => Err(()),
                    }
                });
                if let Ok(n) = hint {
                    let name = std::mem::take(&mut self.hint);
                    self.arrived(sh, Kind::Part, n, &name);
                    self.hint_done = name;
                }
                pl
            } else {
                fetch(&self.client, url, sh, Some(&mut self.text)).await
            };
            let Ok(n) = ok else {
                blocking = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            sh.delivered(&sh.playlists, n);
            let Ok(text) = std::str::from_utf8(&self.text) else {
                sh.error("bad_playlist".into());
                blocking = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            // Parse into the reused playlist; take it out to borrow self mutably below.
            let mut pl = std::mem::take(&mut self.pl);
            pl.parse(text);
            let text = std::mem::take(&mut self.text);
            let text_str = std::str::from_utf8(&text).unwrap_or("");
            if !self.init_done {
                if let Some(r) = pl.map.clone() {
                    if self.get(sh, &text_str[r], Kind::Init).await {
                        self.init_done = true;
                    }
                } else {
                    self.init_done = true;
                }
            }
            let mode = if pl.low_latency() { sh.mode } else { Mode::Segments };
            let mut failed = false;
            if mode == Mode::Segments {
                let first = self.cursor.is_none();
                for (msn, r) in &pl.segments {
                    let last = *msn + 1 == pl.next_msn;
                    if self.cursor.is_some_and(|c| c.0 >= *msn) || (first && !last) {
                        continue;
                    }
                    if !self.get(sh, &text_str[r.clone()], Kind::Segment).await {
                        failed = true;
                        break;
                    }
                    self.cursor = Some((*msn, 0));
                }
            } else {
                let n = pl.parts.len();
                if self.cursor.is_none() && n > 3 {
                    // Join three parts behind the live edge.
                    self.cursor = Some((pl.parts[n - 4].0, pl.parts[n - 4].1));
                }
                for (msn, idx, r) in &pl.parts {
                    if self.cursor.is_some_and(|c| c >= (*msn, *idx)) {
                        continue;
                    }
                    let u = &text_str[r.clone()];
                    if u == self.hint_done {
                        // Fetched as the preload hint, while the reload was held.
                        self.hint_done.clear();
                    } else if !self.get(sh, u, Kind::Part).await {
                        failed = true;
                        break;
                    }
                    self.cursor = Some((*msn, *idx));
                }
                if sh.mirror.is_some() {
                    self.mirror_segments(sh, &pl, text_str).await;
                }
            }
            if let Some(dir) = &sh.mirror {
                let name = sh
                    .url
                    .path()
                    .rsplit('/')
                    .next()
                    .unwrap_or("stream.m3u8")
                    .to_owned();
                self.write(dir, &name, &text, false);
            }
            self.hint.clear();
            if mode == Mode::Parts {
                if let Some(r) = pl.hint.clone() {
                    self.hint.push_str(&text_str[r]);
                }
            }
            self.text = text;
            let next_poll = match mode {
                Mode::Parts => {
                    blocking = Some((pl.next_msn, pl.next_part));
                    None
                }
                Mode::PollParts => Some(pl.part_target),
                Mode::Segments => Some(pl.target / 2.0),
            };
            self.pl = pl;
            if failed {
                blocking = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
            } else if let Some(every) = next_poll {
                tokio::time::sleep_until(polled_at + Duration::from_secs_f64(every.max(0.05))).await;
            }
        }
    }

    /// Mirror only: every segment listed that is new since the start (for a static server's
    /// `segments` viewers).
    async fn mirror_segments(&mut self, sh: &Shared, pl: &Playlist, text: &str) {
        for (msn, r) in &pl.segments {
            // At the start only the last segment listed.
            let from = *self.mirror_seg.get_or_insert(pl.next_msn.saturating_sub(1));
            if *msn < from {
                continue;
            }
            if self.get(sh, &text[r.clone()], Kind::Segment).await {
                self.mirror_seg = Some(msn + 1);
            }
        }
    }

    /// GET a part, segment or init relative to the playlist; counts it (and its arrival) and
    /// mirrors it. False on an error (already counted).
    async fn get(&mut self, sh: &Shared, uri: &str, kind: Kind) -> bool {
        let Ok(u) = sh.url.join(uri) else {
            sh.error("bad_uri".into());
            return false;
        };
        let keep = if sh.mirror.is_some() {
            Some(&mut self.body)
        } else {
            None
        };
        match fetch(&self.client, u, sh, keep).await {
            Ok(n) => {
                self.arrived(sh, kind, n, uri);
                true
            }
            Err(()) => false,
        }
    }

    fn arrived(&mut self, sh: &Shared, kind: Kind, n: usize, uri: &str) {
        let now = Instant::now();
        match kind {
            Kind::Init => sh.delivered(&sh.inits, n),
            Kind::Part | Kind::Segment => {
                let is_part = matches!(kind, Kind::Part);
                // Stalls: parts in the part modes, segments in segments mode.
                if is_part != (sh.mode == Mode::Segments) {
                    if let (Some(prev), true) = (self.last_arrival, sh.counting()) {
                        let gap = now.duration_since(prev);
                        sh.max_gap_ms.fetch_max(gap.as_millis() as u64, Relaxed);
                        // A stall: more than 1 s without a part (2 s without a segment).
                        let stall = if is_part { 1 } else { 2 };
                        if gap > Duration::from_secs(stall) {
                            sh.stalls.fetch_add(1, Relaxed);
                        }
                    }
                    self.last_arrival = Some(now);
                }
                sh.delivered(if is_part { &sh.parts } else { &sh.segments }, n);
            }
        }
        if let Some(dir) = &sh.mirror {
            let body = std::mem::take(&mut self.body);
            let media = !matches!(kind, Kind::Init);
            self.write(dir, file_name(uri), &body, media);
            self.body = body;
        }
    }

    /// Mirror: write atomically (temporary file, rename); remove media written over a minute ago.
    fn write(&mut self, dir: &std::path::Path, name: &str, data: &[u8], media: bool) {
        let tmp = dir.join(format!(".{name}.tmp"));
        if std::fs::write(&tmp, data)
            .and_then(|_| std::fs::rename(&tmp, dir.join(name)))
            .is_err()
        {
            eprintln!("llhls-load: cannot write {name} in {}", dir.display());
        }
        if media {
            let now = Instant::now();
            self.written.push_back((now, name.to_owned()));
            while self
                .written
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(60))
            {
                if let Some((_, old)) = self.written.pop_front() {
                    let _ = std::fs::remove_file(dir.join(old));
                }
            }
        }
    }
}

fn file_name(uri: &str) -> &str {
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    path.rsplit('/').next().unwrap_or(path)
}

/// GET `url` and read its body: into `keep` (cleared first) when given, else only counted.
/// Returns the body's length; an error is counted by kind.
async fn fetch(client: &Client, url: Url, sh: &Shared, keep: Option<&mut Vec<u8>>) -> Result<usize, ()> {
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    match tokio::time::timeout(Duration::from_secs(10), client.get(&target, keep)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => {
            sh.error(e.kind());
            Err(())
        }
        Err(_) => {
            sh.error("timeout".into());
            Err(())
        }
    }
}

/// A minimal HTTP/1.1 client for this load generator: GET only, to one origin, keep-alive
/// connections kept in a small pool, bodies with `Content-Length` or chunked. Written here
/// rather than with reqwest because the load generator must stay well below the server's cost
/// per request on its one core at 1000 viewers, and reqwest's general client (pool keyed by
/// origin, header maps, URL handling per request) cost about as much per request as the
/// server under test, saturating the load's core first. Headers are parsed with `httparse`.
mod http1 {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use reqwest::Url;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Largest response head accepted.
    const MAX_HEAD: usize = 16 * 1024;
    /// A connection's read buffer.
    const BUF: usize = 32 * 1024;

    pub enum Error {
        Connect,
        Io,
        Status(u16),
        Body,
    }

    impl Error {
        pub fn kind(&self) -> String {
            match self {
                Error::Connect => "connect".into(),
                Error::Io => "io".into(),
                Error::Status(s) => format!("http_{s}"),
                Error::Body => "body".into(),
            }
        }
    }

    pub struct Client {
        addr: Option<SocketAddr>,
        host: String,
        max_idle: usize,
        idle: Mutex<Vec<Conn>>,
    }

    struct Conn {
        stream: TcpStream,
        /// A fixed buffer; bytes read and not yet consumed are `buf[at..end]`.
        buf: Box<[u8]>,
        at: usize,
        end: usize,
    }

    impl Client {
        pub fn new(url: &Url, max_idle: usize) -> Client {
            let addr = url
                .socket_addrs(|| Some(80))
                .ok()
                .and_then(|a| a.into_iter().next());
            let host = match url.port() {
                Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
                None => url.host_str().unwrap_or("").to_owned(),
            };
            Client {
                addr,
                host,
                max_idle,
                idle: Mutex::new(Vec::new()),
            }
        }

        /// GETs `target` (path and query); the body goes into `keep` (cleared first) when
        /// given. Returns the body's length.
        pub async fn get(&self, target: &str, keep: Option<&mut Vec<u8>>) -> Result<usize, Error> {
            let pooled = self.idle.lock().unwrap().pop();
            // A pooled connection the server closed meanwhile fails at once: retry on a new one.
            let mut keep = keep;
            if let Some(mut c) = pooled {
                if let Ok(r) = c.exchange(&self.host, target, keep.as_deref_mut()).await {
                    return self.done(c, r);
                }
            }
            let addr = self.addr.ok_or(Error::Connect)?;
            let stream = TcpStream::connect(addr).await.map_err(|_| Error::Connect)?;
            let _ = stream.set_nodelay(true);
            let mut c = Conn {
                stream,
                buf: vec![0; BUF].into_boxed_slice(),
                at: 0,
                end: 0,
            };
            let r = c.exchange(&self.host, target, keep).await?;
            self.done(c, r)
        }

        fn done(&self, c: Conn, (status, len, reuse): (u16, usize, bool)) -> Result<usize, Error> {
            if reuse {
                let mut idle = self.idle.lock().unwrap();
                if idle.len() < self.max_idle {
                    idle.push(c);
                }
            }
            if (200..300).contains(&status) {
                Ok(len)
            } else {
                Err(Error::Status(status))
            }
        }
    }

    impl Conn {
        /// One request and its whole response: (status, body length, whether the connection
        /// can be used again).
        async fn exchange(
            &mut self,
            host: &str,
            target: &str,
            mut keep: Option<&mut Vec<u8>>,
        ) -> Result<(u16, usize, bool), Error> {
            let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
            self.stream
                .write_all(req.as_bytes())
                .await
                .map_err(|_| Error::Io)?;
            if let Some(k) = keep.as_deref_mut() {
                k.clear();
            }
            // The head.
            let (status, head_len, length, chunked, close) = loop {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf[self.at..self.end]) {
                    Ok(httparse::Status::Complete(n)) => {
                        let (mut length, mut chunked, mut close) = (None, false, false);
                        for h in resp.headers.iter() {
                            if h.name.eq_ignore_ascii_case("content-length") {
                                length = std::str::from_utf8(h.value)
                                    .ok()
                                    .and_then(|v| v.trim().parse::<usize>().ok());
                            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                                chunked = h.value.eq_ignore_ascii_case(b"chunked");
                            } else if h.name.eq_ignore_ascii_case("connection") {
                                close = h.value.eq_ignore_ascii_case(b"close");
                            }
                        }
                        let close = close || resp.version == Some(0);
                        break (resp.code.unwrap_or(0), n, length, chunked, close);
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.end - self.at > MAX_HEAD {
                            return Err(Error::Body);
                        }
                        if self.fill().await? == 0 {
                            return Err(Error::Io);
                        }
                    }
                    Err(_) => return Err(Error::Body),
                }
            };
            self.at += head_len;
            let mut n = 0;
            if chunked {
                loop {
                    let line = self.line().await?;
                    let size = std::str::from_utf8(&line)
                        .ok()
                        .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
                        .ok_or(Error::Body)?;
                    if size == 0 {
                        // Trailers, up to the empty line.
                        while !self.line().await?.is_empty() {}
                        break;
                    }
                    n += self.body(size, keep.as_deref_mut()).await?;
                    if !self.line().await?.is_empty() {
                        return Err(Error::Body);
                    }
                }
            } else if let Some(len) = length {
                n = self.body(len, keep.as_deref_mut()).await?;
            } else if status != 204 && status != 304 {
                // Delimited by the end of the connection.
                loop {
                    let avail = self.end - self.at;
                    n += self.take(avail, keep.as_deref_mut());
                    if self.fill().await? == 0 {
                        break;
                    }
                }
                return Ok((status, n, false));
            }
            Ok((status, n, !close))
        }

        /// Reads `len` body bytes, keeping them when asked.
        async fn body(&mut self, len: usize, mut keep: Option<&mut Vec<u8>>) -> Result<usize, Error> {
            let mut left = len;
            while left > 0 {
                if self.at == self.end && self.fill().await? == 0 {
                    return Err(Error::Body);
                }
                let take = left.min(self.end - self.at);
                left -= self.take(take, keep.as_deref_mut());
            }
            Ok(len)
        }

        fn take(&mut self, n: usize, keep: Option<&mut Vec<u8>>) -> usize {
            if let Some(k) = keep {
                k.extend_from_slice(&self.buf[self.at..self.at + n]);
            }
            self.at += n;
            n
        }

        /// One CRLF-terminated line (without its end), for chunked framing.
        async fn line(&mut self) -> Result<Vec<u8>, Error> {
            loop {
                if let Some(i) = self.buf[self.at..self.end].windows(2).position(|w| w == b"\r\n") {
                    let line = self.buf[self.at..self.at + i].to_vec();
                    self.at += i + 2;
                    return Ok(line);
                }
                if self.end - self.at > MAX_HEAD {
                    return Err(Error::Body);
                }
                if self.fill().await? == 0 {
                    return Err(Error::Body);
                }
            }
        }

        /// Reads what the socket has after the unconsumed bytes `buf[at..end]` (moved to the
        /// front when the buffer's end is reached). Returns 0 at the end of the stream.
        async fn fill(&mut self) -> Result<usize, Error> {
            if self.at == self.end {
                (self.at, self.end) = (0, 0);
            } else if self.end == self.buf.len() {
                self.buf.copy_within(self.at..self.end, 0);
                (self.end, self.at) = (self.end - self.at, 0);
            }
            let n = self
                .stream
                .read(&mut self.buf[self.end..])
                .await
                .map_err(|_| Error::Io)?;
            self.end += n;
            Ok(n)
        }
    }
}
