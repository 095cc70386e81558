//! Push outputs: each destination URL of a path's `[..push] urls` is a path output with a
//! supervised task that publishes the path to it (RTMP, or RTMPS through `tls.rs`), reconnects
//! with exponential backoff and jitter, resumes at a keyframe with continuous timestamps, and
//! reports its state. A destination that reads too slowly loses frames up to the next keyframe
//! (its own bounded queue, never the path's), and one that takes nothing for `stall_timeout` is
//! dropped and retried: the publisher, the viewers and the other destinations never wait on it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use sluice_container::amf0::Amf0Value;
use sluice_container::flv;
use sluice_media::events::{EventBus, ServerEvent};
use sluice_media::{ticks_to_ms, CodecId, Event, Frame, MediaKind, ReadError, Reader, StreamInfo};
use sluice_rtmp::chunk::{ChunkEncoder, Limits};
use sluice_rtmp::client::{self, ClientSession, Mode, RtmpUrl};
use sluice_rtmp::control::{self, CSID_AUDIO, CSID_VIDEO};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::PathPush;

/// Bytes a destination may have waiting to be sent before frames are dropped to a keyframe.
const QUEUE_BYTES: usize = 8 << 20;

/// Unsent bytes a push socket holds before it stops taking more (`TCP_NOTSENT_LOWAT`).
const NOTSENT_LOWAT: u32 = 128 << 10;
/// How long the batch being written may wait to be taken before frames are dropped to a
/// keyframe (a destination that reads slower than the stream comes).
const QUEUE_DELAY: Duration = Duration::from_secs(2);
/// Our outgoing chunk size to destinations.
const CHUNK_SIZE: u32 = 4096;
/// How long frames are gathered into one write to a destination (a push's latency matters less
/// than its cost per destination: this takes the writes from one per frame to ten a second).
const COALESCE: Duration = Duration::from_millis(100);
/// A destination live this long has its backoff reset.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// A destination URL with its secrets masked: an RTMP stream key, an SRT URL's query
/// (streamid, passphrase).
pub fn masked_url(url: &str) -> String {
    if crate::push_whip::is_whip(url) {
        return crate::push_whip::masked_url(url);
    }
    if url.starts_with("srt://") {
        return match url.split_once('?') {
            Some((base, _)) => format!("{base}?****"),
            None => url.to_owned(),
        };
    }
    RtmpUrl::parse(url).map_or_else(|_| client::mask(url), |u| u.masked())
}

/// Checks a destination URL (`rtmp://`, `rtmps://`, `srt://`); the error masks its secrets.
pub fn check_url(url: &str) -> Result<(), String> {
    if crate::push_whip::is_whip(url) {
        return crate::push_whip::check_url(url);
    }
    if url.starts_with("srt://") {
        return sluice_srt::check_caller_url(url);
    }
    RtmpUrl::parse(url).map(|_| ())
}

/// The name of a destination's output: its masked URL and a digest of the whole URL, so two
/// destinations that differ only in their key are two outputs, and none shows a key.
pub fn output_name(url: &str) -> String {
    format!("push {} #{}", masked_url(url), push_id(url))
}

/// A destination's id in the API (`/v1/paths/{name}/pushes/{id}`): six hex digits of a digest
/// of the whole URL, stable across runs and versions, showing no key.
pub fn push_id(url: &str) -> String {
    // FNV-1a.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("{:06x}", h & 0xff_ffff)
}

/// What a destination is doing, for the API.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PushStatus {
    /// Its id in `/v1/paths/{name}/pushes/{id}`.
    pub id: String,
    /// The destination, its key masked.
    pub url: String,
    /// `connecting`, `live`, `retrying` (waiting before the next attempt), `refused` (the
    /// stream cannot go to this destination: see `last_error`).
    pub state: &'static str,
    pub last_error: Option<String>,
    /// When the last error happened (RFC 3339).
    pub last_error_at: Option<String>,
    /// Bytes sent to the destination, every connection counted.
    pub bytes_sent: u64,
    /// Bits per second sent over the last seconds.
    pub bitrate: u64,
    /// Connections made after the first.
    pub reconnects: u64,
    /// Seconds the current connection has been live.
    pub uptime_seconds: Option<u64>,
    /// Frames not sent because the destination read too slowly.
    pub dropped_frames: u64,
}

/// Every destination's status, by path and output name.
#[derive(Default)]
pub struct PushStore {
    map: Mutex<BTreeMap<(String, String), Arc<Shared>>>,
}

impl PushStore {
    /// The destinations of `path` (those whose task runs).
    pub fn of_path(&self, path: &str) -> Vec<PushStatus> {
        self.map
            .lock()
            .iter()
            .filter(|((p, _), _)| p == path)
            .map(|(_, s)| s.snapshot())
            .collect()
    }

    /// The status of the destination `url` of `path`, while its task runs.
    pub fn get(&self, path: &str, url: &str) -> Option<PushStatus> {
        let key = (path.to_owned(), output_name(url));
        self.map.lock().get(&key).map(|s| s.snapshot())
    }

    /// Ends the connection to the destination `url` of `path` (the output's session); the
    /// core then starts the output again, so it reconnects at once without touching the others.
    /// Waits (at most 5 s) until the old connection is closed; false when no such push runs.
    pub async fn restart(&self, path: &str, url: &str, registry: &sluice_media::Registry) -> bool {
        let key = (path.to_owned(), output_name(url));
        let Some(shared) = self.map.lock().get(&key).cloned() else {
            return false;
        };
        registry
            .stats()
            .kick(shared.session.id, "push restarted through the API");
        let until = Instant::now() + Duration::from_secs(5);
        while !shared.session.is_closed() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        registry.reconcile_outputs();
        true
    }
}

struct Shared {
    /// The destination's id (`push_id`).
    id: String,
    /// The masked URL.
    url: String,
    /// The output's session (a restart ends it; the core starts the output again).
    session: Arc<sluice_media::stats::SessionStats>,
    status: Mutex<Status>,
    bytes: AtomicU64,
    dropped: AtomicU64,
    /// (time, bytes) a second apart, for the bitrate.
    rate: Mutex<(Instant, u64, u64)>,
}

struct Status {
    state: &'static str,
    last_error: Option<String>,
    last_error_at: Option<SystemTime>,
    reconnects: u64,
    live_since: Option<Instant>,
}

impl Shared {
    fn new(full_url: &str, session: Arc<sluice_media::stats::SessionStats>) -> Arc<Shared> {
        Arc::new(Shared {
            id: push_id(full_url),
            url: masked_url(full_url),
            session,
            status: Mutex::new(Status {
                state: "connecting",
                last_error: None,
                last_error_at: None,
                reconnects: 0,
                live_since: None,
            }),
            bytes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            rate: Mutex::new((Instant::now(), 0, 0)),
        })
    }

    fn snapshot(&self) -> PushStatus {
        let st = self.status.lock();
        let bytes = self.bytes.load(Relaxed);
        let bitrate = {
            let mut r = self.rate.lock();
            let el = r.0.elapsed();
            if el >= Duration::from_secs(1) {
                r.2 = ((bytes - r.1) as f64 * 8.0 / el.as_secs_f64()) as u64;
                *r = (Instant::now(), bytes, r.2);
            }
            r.2
        };
        PushStatus {
            id: self.id.clone(),
            url: self.url.clone(),
            state: st.state,
            last_error: st.last_error.clone(),
            last_error_at: st.last_error_at.map(sluice_hls::playlist::rfc3339_millis),
            bytes_sent: bytes,
            bitrate,
            reconnects: st.reconnects,
            uptime_seconds: st.live_since.map(|t| t.elapsed().as_secs()),
            dropped_frames: self.dropped.load(Relaxed),
        }
    }
}

/// Starts the destination `url` of `reader`'s path; it runs until the reader ends (the path is
/// over, the destination removed from the configuration, a kick, shutdown).
pub fn spawn(
    reader: Reader,
    name: String,
    url: String,
    settings: PathPush,
    store: Arc<PushStore>,
    events: Arc<EventBus>,
    rt: &tokio::runtime::Handle,
) {
    let path = reader.path().to_owned();
    // WHIP (`push_whip.rs`) reports through the same status as SRT.
    if url.starts_with("srt://") || crate::push_whip::is_whip(&url) {
        spawn_srt(reader, name, url, settings, store, events, rt);
        return;
    }
    let dest = match RtmpUrl::parse(&url) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(%path, "push not started: {e}");
            return;
        }
    };
    let shared = Shared::new(&url, reader.stats().clone());
    store
        .map
        .lock()
        .insert((path.clone(), name.clone()), shared.clone());
    let mut task = Push {
        path: path.clone(),
        name: name.clone(),
        dest,
        settings,
        shared: shared.clone(),
        events,
        info: None,
        clock: Clock::default(),
    };
    rt.spawn(async move {
        let mut reader = reader;
        task.run(&mut reader).await;
        let mut map = store.map.lock();
        if map
            .get(&(path.clone(), name.clone()))
            .is_some_and(|s| Arc::ptr_eq(s, &shared))
        {
            map.remove(&(path, name));
        }
    });
}

/// An `srt://` destination: the SRT crate's pusher (MPEG-TS, on a thread of its own) reporting
/// here.
fn spawn_srt(
    reader: Reader,
    name: String,
    url: String,
    settings: PathPush,
    store: Arc<PushStore>,
    events: Arc<EventBus>,
    rt: &tokio::runtime::Handle,
) {
    let path = reader.path().to_owned();
    let shared = Shared::new(&url, reader.stats().clone());
    store
        .map
        .lock()
        .insert((path.clone(), name.clone()), shared.clone());
    let session = reader.stats().clone();
    let report = Arc::new(SrtReport {
        path: path.clone(),
        name: name.clone(),
        shared: shared.clone(),
        events,
        session,
        store: store.clone(),
        first: std::sync::atomic::AtomicBool::new(true),
    });
    if crate::push_whip::is_whip(&url) {
        crate::push_whip::spawn(url, reader, settings, report, rt);
        return;
    }
    let s = sluice_srt::PushSettings {
        retry_min: settings.retry_min,
        retry_max: settings.retry_max,
        connect_timeout: settings.connect_timeout,
    };
    if let Err(e) = sluice_srt::spawn_pusher(url, reader, s, report, rt.clone()) {
        tracing::warn!(%path, "SRT push not started: {e}");
        store.map.lock().remove(&(path, name));
    }
}

struct SrtReport {
    path: String,
    name: String,
    shared: Arc<Shared>,
    events: Arc<EventBus>,
    session: Arc<sluice_media::stats::SessionStats>,
    store: Arc<PushStore>,
    first: std::sync::atomic::AtomicBool,
}

impl sluice_srt::PushReport for SrtReport {
    fn state(&self, state: &'static str, error: Option<String>) {
        if state == "connecting" && !self.first.swap(false, Relaxed) {
            self.shared.status.lock().reconnects += 1;
        }
        // Bytes: what the reader session has sent, every connection counted.
        self.shared
            .bytes
            .store(self.session.snapshot().bytes_out, Relaxed);
        let mut st = self.shared.status.lock();
        let changed = st.state != state;
        st.state = state;
        st.live_since = (state == "live").then(Instant::now);
        if let Some(e) = &error {
            st.last_error = Some(e.clone());
            st.last_error_at = Some(SystemTime::now());
        }
        drop(st);
        if changed {
            self.events.emit(ServerEvent::Output {
                path: self.path.as_str().into(),
                name: self.name.clone(),
                state,
                detail: error.unwrap_or_default(),
            });
        }
    }

    fn sent(&self, _bytes: u64) {
        self.shared
            .bytes
            .store(self.session.snapshot().bytes_out, Relaxed);
    }
}

impl Drop for SrtReport {
    fn drop(&mut self) {
        let mut map = self.store.map.lock();
        let key = (self.path.clone(), self.name.clone());
        if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, &self.shared)) {
            map.remove(&key);
        }
    }
}

/// Maps the path's timestamps to the destination's: continuous across reconnects and publisher
/// restarts (a new base at the first keyframe after either).
#[derive(Default)]
struct Clock {
    /// (path ms, destination ms) of the current base.
    base: Option<(i64, i64)>,
    last_out: Option<i64>,
}

impl Clock {
    fn rebase(&mut self) {
        self.base = None;
    }

    fn map(&mut self, ms: i64) -> u32 {
        let (bi, bo) = *self
            .base
            .get_or_insert_with(|| (ms, self.last_out.map_or(0, |l| l + 40)));
        // A frame just before the base (audio interleaved with the keyframe) stays at the base.
        let out = (bo + ms - bi).max(bo);
        self.last_out = Some(self.last_out.map_or(out, |l| l.max(out)));
        out as u32
    }
}

enum End {
    /// The path's stream is over or the output was removed: stop.
    Done(String),
    /// The destination failed: retry.
    Retry(String),
}

struct Push {
    path: String,
    name: String,
    dest: RtmpUrl,
    settings: PathPush,
    shared: Arc<Shared>,
    events: Arc<EventBus>,
    /// The stream being pushed.
    info: Option<Arc<StreamInfo>>,
    clock: Clock,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Push {
    fn set_state(&self, state: &'static str, error: Option<String>) {
        let changed = {
            let mut st = self.shared.status.lock();
            let changed = st.state != state || (error.is_some() && st.last_error != error);
            st.state = state;
            if state == "live" {
                st.live_since = Some(Instant::now());
            } else {
                st.live_since = None;
            }
            if let Some(e) = &error {
                st.last_error = Some(e.clone());
                st.last_error_at = Some(SystemTime::now());
            }
            changed
        };
        if changed {
            self.events.emit(ServerEvent::Output {
                path: self.path.as_str().into(),
                name: self.name.clone(),
                state,
                detail: error.unwrap_or_default(),
            });
        }
    }

    async fn run(&mut self, reader: &mut Reader) {
        let mut backoff = self.settings.retry_min;
        let mut first = true;
        loop {
            // Wait for a stream this destination can carry.
            if let Err(e) = self.wait_carriable(reader).await {
                self.log_end(&e);
                return;
            }
            if !first {
                self.shared.status.lock().reconnects += 1;
            }
            first = false;
            self.set_state("connecting", None);
            let started = Instant::now();
            let end = match self.connect().await {
                Ok((io, session, buf)) => {
                    tracing::info!(path = %self.path, dest = %self.dest.masked(), "push live");
                    self.set_state("live", None);
                    self.clock.rebase();
                    self.live(reader, io, session, buf).await
                }
                Err(e) => End::Retry(e),
            };
            match end {
                End::Done(why) => {
                    self.log_end(&why);
                    return;
                }
                End::Retry(why) => {
                    if started.elapsed() >= HEALTHY_AFTER {
                        backoff = self.settings.retry_min;
                    }
                    let wait = jitter(backoff);
                    tracing::warn!(path = %self.path, dest = %self.dest.masked(),
                        "push failed: {why}; retrying in {:.1} s", wait.as_secs_f64());
                    self.set_state("retrying", Some(why));
                    if let Err(e) = self.drain_for(reader, wait).await {
                        self.log_end(&e);
                        return;
                    }
                    backoff = (backoff * 2).min(self.settings.retry_max);
                }
            }
        }
    }

    fn log_end(&self, why: &str) {
        tracing::info!(path = %self.path, dest = %self.dest.masked(), "push ended: {why}");
    }

    /// Why the current stream cannot go to this destination, if it cannot.
    fn refusal(&self) -> Option<String> {
        let info = self.info.as_ref()?;
        let v = info.video()?;
        if v.codec != CodecId::H264 && !self.settings.enhanced_rtmp {
            return Some(format!(
                "{} video needs enhanced RTMP, which is off for this path (push.enhanced_rtmp = false)",
                v.codec
            ));
        }
        if !flv::supports(v.codec) {
            return Some(format!("{} video cannot be carried over RTMP", v.codec));
        }
        None
    }

    /// Reads the path until it has a stream this destination can carry.
    async fn wait_carriable(&mut self, reader: &mut Reader) -> Result<(), String> {
        loop {
            if self.info.is_some() {
                match self.refusal() {
                    None => return Ok(()),
                    Some(why) => {
                        if self.shared.status.lock().state != "refused" {
                            tracing::warn!(path = %self.path, dest = %self.dest.masked(), "push refused: {why}");
                        }
                        self.set_state("refused", Some(why));
                    }
                }
            }
            // Until the next stream (a codec change may make it carriable).
            loop {
                match reader.recv().await {
                    Ok(Event::Start(i)) => {
                        self.info = Some(i);
                        break;
                    }
                    Ok(Event::Frame(_)) => {}
                    Err(e) => return Err(read_end(e)),
                }
            }
        }
    }

    /// Waits `d` while reading the path (a reader left unread would fall behind).
    async fn drain_for(&mut self, reader: &mut Reader, d: Duration) -> Result<(), String> {
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return Ok(()),
                ev = reader.recv() => match ev {
                    Ok(Event::Start(i)) => self.info = Some(i),
                    Ok(Event::Frame(_)) => {}
                    Err(e) => return Err(read_end(e)),
                },
            }
        }
    }

    async fn connect(&self) -> Result<(Box<dyn Io>, ClientSession, BytesMut), String> {
        let t = self.settings.connect_timeout;
        let addr = format!("{}:{}", self.dest.host, self.dest.port);
        let tcp = tokio::time::timeout(t, tokio::net::TcpStream::connect(&addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        // What the kernel holds unsent for the destination stays small: a destination that stops
        // reading then shows in our own queue within seconds (slow: dropped to a keyframe;
        // nothing taken for `stall_timeout`: retried) instead of after megabytes of socket
        // buffer, minutes at a low bitrate. Bytes in flight are not limited by it.
        let _ = socket2::SockRef::from(&tcp).set_tcp_notsent_lowat(NOTSENT_LOWAT);
        let mut io: Box<dyn Io> = if self.dest.tls {
            let ca =
                (!self.settings.ca_file.is_empty()).then(|| std::path::Path::new(&self.settings.ca_file));
            let tls = tokio::time::timeout(t, crate::tls::connect(&self.dest.host, tcp, ca))
                .await
                .map_err(|_| format!("TLS handshake with {addr} timed out"))?
                .map_err(|e| format!("TLS with {addr}: {e}"))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut session = ClientSession::new(self.dest.clone(), Mode::Publish, CHUNK_SIZE, Limits::default());
        let mut buf = BytesMut::with_capacity(4 * 1024);
        client::connect(&mut io, &mut session, &mut buf, t)
            .await
            .map_err(|e| e.to_string())?;
        Ok((io, session, buf))
    }

    /// Pushes until the destination fails (retry) or the path ends (done).
    ///
    /// One task does it all: frames are taken from the path at most every [`COALESCE`] (woken
    /// by the publisher's first write after each tick, so a push costs no wake-up of its own),
    /// added to this destination's own bounded queue, and written as the destination takes them.
    async fn live(
        &mut self,
        reader: &mut Reader,
        io: Box<dyn Io>,
        mut session: ClientSession,
        mut inbuf: BytesMut,
    ) -> End {
        let (mut rd, mut wr) = tokio::io::split(io);
        let stall = self.settings.stall_timeout;
        let enc = session.encoder();
        let sid = session.stream_id();
        let mut need_key = true;
        let mut dropping = false;
        // What goes out next, in pieces (chunk headers, then stretches of the frames' own
        // buffers: nothing is copied before the kernel takes it), and how many frames it holds.
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batch_frames = 0u64;
        // Pieces waiting for the destination; when the oldest of them was queued; when the
        // destination last took some (or the queue last filled from empty).
        let mut pending = Pending::default();
        let mut queued_at: Option<Instant> = None;
        let mut progress = tokio::time::Instant::now();
        // Written to a TLS session but maybe not yet to the socket.
        let mut unflushed = false;
        // Frames are gathered until `tick` once some came.
        let mut tick: Option<tokio::time::Instant> = None;
        if let Some(info) = self.info.clone() {
            self.headers(&info, &enc, sid, &mut batch);
        }
        loop {
            if !batch.is_empty() {
                let size: usize = batch.iter().map(Bytes::len).sum();
                let late = queued_at.is_some_and(|t| t.elapsed() > QUEUE_DELAY);
                if pending.len() + size > QUEUE_BYTES || late {
                    // Too slow: drop what comes up to the next keyframe.
                    if !dropping {
                        tracing::info!(path = %self.path, dest = %self.dest.masked(),
                            "destination reads too slowly: dropping to the next keyframe");
                    }
                    dropping = true;
                    need_key = true;
                    self.shared.dropped.fetch_add(batch_frames, Relaxed);
                    batch.clear();
                } else {
                    if pending.is_empty() {
                        queued_at = Some(Instant::now());
                        progress = tokio::time::Instant::now();
                    }
                    pending.extend(batch.drain(..));
                }
                batch_frames = 0;
            }
            tokio::select! {
                // What waits goes out as the destination takes it, then is flushed (a TLS
                // session's records); polled afresh each time, so nothing is lost to a
                // branch that did not complete.
                w = std::future::poll_fn(|cx| {
                    let wr = std::pin::Pin::new(&mut wr);
                    if pending.is_empty() {
                        wr.poll_flush(cx).map_ok(|()| None)
                    } else {
                        let mut slices = [std::io::IoSlice::new(&[]); MAX_SLICES];
                        let n = pending.slices(&mut slices);
                        wr.poll_write_vectored(cx, &slices[..n]).map_ok(Some)
                    }
                }), if !pending.is_empty() || unflushed => match w {
                    Ok(Some(0)) => return End::Retry("the destination closed the connection".into()),
                    Ok(Some(n)) => {
                        pending.advance(n);
                        self.shared.bytes.fetch_add(n as u64, Relaxed);
                        progress = tokio::time::Instant::now();
                        unflushed = true;
                        if pending.is_empty() {
                            queued_at = None;
                        }
                    }
                    Ok(None) => unflushed = false,
                    Err(e) => return End::Retry(format!("writing to the destination: {e}")),
                },
                _ = tokio::time::sleep_until(progress + stall), if !pending.is_empty() => {
                    return End::Retry(format!(
                        "the destination took nothing for {} s (stalled)",
                        stall.as_secs()
                    ));
                }
                // Frames are taken at most once per tick; the publisher's first write after
                // the tick wakes the push (no timer of its own).
                ev = async {
                    if let Some(t) = tick {
                        reader.wait_paced(t, t + COALESCE).await;
                    }
                    reader.recv().await
                } => {
                    tick = Some(next_tick());
                    let mut ev = Some(ev);
                    // Everything ready now goes in one batch.
                    while let Some(e) = ev.take() {
                        match e {
                            Ok(Event::Start(info)) => {
                                self.info = Some(info.clone());
                                if let Some(why) = self.refusal() {
                                    self.set_state("refused", Some(why.clone()));
                                    return End::Retry(why);
                                }
                                // A new stream: new headers, timestamps continue from the next keyframe.
                                self.clock.rebase();
                                need_key = true;
                                self.headers(&info, &enc, sid, &mut batch);
                            }
                            Ok(Event::Frame(f)) => {
                                if self.frame(&f, &enc, sid, &mut need_key, &mut batch) {
                                    dropping = false;
                                    batch_frames += 1;
                                }
                            }
                            Err(e) => {
                                // What is queued is sent before the connection closes.
                                pending.extend(batch.drain(..));
                                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                                    for b in pending.queue.drain(..) {
                                        wr.write_all(&b).await?;
                                    }
                                    wr.flush().await?;
                                    wr.shutdown().await
                                })
                                .await;
                                return End::Done(read_end(e));
                            }
                        }
                        ev = reader.try_recv();
                    }
                }
                n = rd.read_buf(&mut inbuf) => {
                    match n {
                        Ok(0) => return End::Retry("the destination closed the connection".into()),
                        Err(e) => return End::Retry(format!("reading from the destination: {e}")),
                        Ok(_) => {
                            let mut out = Vec::new();
                            if let Err(e) = session.receive(&mut inbuf, &mut out) {
                                return End::Retry(e.to_string());
                            }
                            batch.extend(out);
                            // Destinations send little (acks, pings): a small buffer.
                            if inbuf.capacity() - inbuf.len() < 512 {
                                inbuf.reserve(4096);
                            }
                        }
                    }
                }
            }
        }
    }

    /// `@setDataFrame onMetaData` and the sequence headers of a stream.
    fn headers(&mut self, info: &StreamInfo, enc: &ChunkEncoder, sid: u32, out: &mut Vec<Bytes>) {
        let ms = self.clock.last_out.unwrap_or(0) as u32;
        out.push(control::data(
            enc,
            sid,
            ms,
            &[
                Amf0Value::string("@setDataFrame"),
                Amf0Value::string("onMetaData"),
                flv::metadata(info),
            ],
        ));
        for t in info.tracks.iter().filter(|t| flv::supports(t.codec)) {
            if let Some(sh) = flv::sequence_header(t) {
                let csid = if t.kind() == MediaKind::Video {
                    CSID_VIDEO
                } else {
                    CSID_AUDIO
                };
                out.push(enc.encode_to_bytes(csid, ms, flv::tag_type(t), sid, &sh));
            }
        }
    }

    /// One frame as a message, in pieces onto `out`; false while waiting for a keyframe.
    fn frame(
        &mut self,
        f: &Frame,
        enc: &ChunkEncoder,
        sid: u32,
        need_key: &mut bool,
        out: &mut Vec<Bytes>,
    ) -> bool {
        let Some(info) = self.info.as_ref() else {
            return false;
        };
        let Some(track) = info.track(f.track).filter(|t| flv::supports(t.codec)) else {
            return false;
        };
        let video = track.kind() == MediaKind::Video;
        if *need_key {
            if info.video().is_some() && !(video && f.keyframe) {
                self.shared.dropped.fetch_add(1, Relaxed);
                return false;
            }
            *need_key = false;
        }
        let ms = self.clock.map(ticks_to_ms(f.dts));
        let body = flv::frame_body(track, f);
        let csid = if video { CSID_VIDEO } else { CSID_AUDIO };
        enc.encode_pieces(csid, ms, flv::tag_type(track), sid, &body, out);
        true
    }
}

/// How many pieces one write hands the kernel (IOV_MAX is 1024; a 100 ms batch of a 6 Mb/s
/// stream in 4 KiB chunks is about 40).
const MAX_SLICES: usize = 64;

/// The bytes waiting for a destination, as the pieces they were made in.
#[derive(Default)]
struct Pending {
    queue: std::collections::VecDeque<Bytes>,
    len: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn len(&self) -> usize {
        self.len
    }

    fn extend(&mut self, pieces: impl Iterator<Item = Bytes>) {
        for p in pieces.filter(|p| !p.is_empty()) {
            self.len += p.len();
            self.queue.push_back(p);
        }
    }

    /// The first pieces, as many as fit in `out`; how many.
    fn slices<'a>(&'a self, out: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, p) in out.iter_mut().zip(&self.queue) {
            *slot = std::io::IoSlice::new(p);
            n += 1;
        }
        n
    }

    /// `n` bytes were written.
    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if front.len() <= n {
                n -= front.len();
                self.queue.pop_front();
            } else {
                bytes::Buf::advance(front, n);
                n = 0;
            }
        }
    }
}

fn read_end(e: ReadError) -> String {
    match e {
        ReadError::Ended | ReadError::NoStream { .. } => "the path's stream ended".into(),
        other => other.to_string(),
    }
}

/// The next tick at which pushes take frames: multiples of [`COALESCE`] from one instant for
/// the whole process, so the pushes of one path are woken by the same write.
fn next_tick() -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(tokio::time::Instant::now);
    let period = COALESCE.as_nanos();
    let n = epoch.elapsed().as_nanos() / period + 1;
    epoch + Duration::from_nanos((n * period) as u64)
}

/// `d` give or take 20 %.
pub(crate) fn jitter(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let f = 0.8 + (nanos % 1000) as f64 / 1000.0 * 0.4;
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hide_keys_and_tell_destinations_apart() {
        let a = output_name("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl");
        let b = output_name("rtmp://a.rtmp.youtube.com/live2/abcd-zzzz-ijkl");
        assert!(!a.contains("efgh") && !a.contains("ijkl"), "{a}");
        assert_ne!(a, b);
        assert_eq!(a, output_name("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl"));
    }

    #[test]
    fn timestamps_continue_across_rebases() {
        let mut c = Clock::default();
        assert_eq!(c.map(5000), 0);
        assert_eq!(c.map(5040), 40);
        // An audio frame just before the base stays at it.
        c.rebase();
        assert_eq!(c.map(100), 80);
        assert_eq!(c.map(90), 80);
        assert_eq!(c.map(140), 120);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!(j >= Duration::from_secs(8) && j <= Duration::from_secs(12));
        }
    }
}
