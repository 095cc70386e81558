//! Pulled sources: a path whose `source` is another server's stream (`rtmp://`, `rtmps://`,
//! `srt://` as a caller, `http(s)://…m3u8` HLS with MPEG-TS or fMP4 segments) is published from
//! it. One supervisor serves every kind of source: it runs the pull, reconnects with backoff
//! (1 s doubling to 30 s, reset after 30 s of success), and stops through one
//! [`CancellationToken`]: at shutdown, or, for an on-demand source ([`OnDemandPulls`]),
//! `source_on_demand_close_after` after the path's last reader left.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::Mutex;
use sluice_media::stats::Role;
use sluice_media::{Registry, SessionInfo};
use sluice_rtmp::chunk::Limits;
use sluice_rtmp::client::{self, ClientSession, Mode, RtmpUrl};
use tokio_util::sync::CancellationToken;

use crate::hls_pull::HlsSource;

/// Our outgoing chunk size towards the source (commands only).
const CHUNK_SIZE: u32 = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where a path's stream comes from.
#[derive(Clone)]
pub enum Source {
    Rtmp(RtmpUrl),
    /// The URL as configured (libsrt parses it on its thread).
    Srt(String),
    Hls(HlsSource),
}

impl Source {
    /// Parses a `source` URL; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<Source, String> {
        if url.starts_with("srt://") {
            sluice_srt::check_caller_url(url)?;
            Ok(Source::Srt(url.to_owned()))
        } else if url.starts_with("http://") || url.starts_with("https://") {
            HlsSource::parse(url).map(Source::Hls)
        } else {
            RtmpUrl::parse(url).map(Source::Rtmp)
        }
    }

    /// What logs call it: `RTMP`, `SRT`, `HLS`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Rtmp(_) => "RTMP",
            Source::Srt(_) => "SRT",
            Source::Hls(_) => "HLS",
        }
    }

    /// The URL without its secrets (stream key, passphrase, query tokens).
    pub fn masked(&self) -> String {
        match self {
            Source::Rtmp(u) => u.masked(),
            Source::Srt(u) => crate::push::masked_url(u),
            Source::Hls(h) => h.masked(),
        }
    }

    /// One connection to the source: returns when the source ends or fails, or soon after
    /// `stop` is cancelled (the path's publisher is gone by then).
    async fn run_once(
        &self,
        path: &str,
        registry: &Registry,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        match self {
            Source::Rtmp(u) => tokio::select! {
                r = rtmp_once(u, path, registry) => r,
                _ = stop.cancelled() => Ok(()),
            },
            Source::Hls(h) => tokio::select! {
                r = h.run_once(path, registry) => r,
                _ = stop.cancelled() => Ok(()),
            },
            // libsrt blocks: the pull runs on a thread that asks `stop` every second; it is
            // awaited to the end, so its publisher has left the path when this returns.
            Source::Srt(url) => {
                let (url, path, registry, stop) =
                    (url.clone(), path.to_owned(), registry.clone(), stop.clone());
                tokio::task::spawn_blocking(move || {
                    sluice_srt::pull_once(&url, &path, &registry, &|| stop.is_cancelled())
                })
                .await
                .map_err(|e| format!("the SRT pull thread failed: {e}"))?
                .map_err(|e| e.to_string())
            }
        }
    }
}

/// Starts pulling `url` into `path`, always on (reconnecting until shutdown); an error for a
/// URL that does not parse.
pub fn spawn(url: &str, path: String, registry: Registry) -> Result<(), String> {
    let source = Source::parse(url)?;
    tokio::spawn(supervise(source, path, registry, CancellationToken::new()));
    Ok(())
}

/// Runs `source` into `path` until `stop` is cancelled or the server shuts down, reconnecting
/// with backoff.
async fn supervise(source: Source, path: String, registry: Registry, stop: CancellationToken) {
    let kind = source.kind();
    let shown = source.masked();
    // Shutdown is one more reason to stop.
    let watch = stop.clone();
    let shutdown = registry.clone();
    tokio::spawn(async move {
        while !shutdown.stats().is_shutting_down() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = watch.cancelled() => return,
            }
        }
        watch.cancel();
    });
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = Instant::now();
        match source.run_once(&path, &registry, &stop).await {
            Ok(()) if stop.is_cancelled() => {}
            Ok(()) => tracing::info!(%path, source = %shown, "{kind} source ended"),
            Err(e) => tracing::warn!(%path, source = %shown, "{kind} source failed: {e}"),
        }
        if stop.is_cancelled() || registry.stats().is_shutting_down() {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = BACKOFF_MIN;
        }
        tracing::info!(%path, source = %shown, "reconnecting in {} s", backoff.as_secs());
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => break,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    // The shutdown watcher ends with the token.
    stop.cancel();
}

/// Starts a path's on-demand source for its first reader (the core's [`sluice_media::OnDemand`]
/// hook) and stops it once the path has had no reader for `source_on_demand_close_after`, for
/// every kind of source.
pub struct OnDemandPulls {
    config: crate::reload::LiveConfig,
    registry: Registry,
    /// The running pulls: path -> (a number telling this run from the next, its stop token).
    running: Arc<Mutex<HashMap<String, (u64, CancellationToken)>>>,
    next_run: AtomicU64,
    rt: tokio::runtime::Handle,
}

impl OnDemandPulls {
    pub fn new(config: crate::reload::LiveConfig, registry: Registry) -> Self {
        OnDemandPulls {
            config,
            registry,
            running: Arc::default(),
            next_run: AtomicU64::new(0),
            rt: tokio::runtime::Handle::current(),
        }
    }
}

impl sluice_media::OnDemand for OnDemandPulls {
    fn demand(&self, path: &str) -> Option<Duration> {
        let cfg = self.config.get();
        let p = cfg.path(path)?;
        if !p.source_on_demand || p.source.is_empty() {
            return None;
        }
        let wait = p.source_on_demand_start_timeout;
        let close_after = p.source_on_demand_close_after;
        // Running and not stopping: this reader waits for it. (One that is stopping is
        // replaced: its publisher leaves the path as the new pull connects.)
        let is_running = |running: &HashMap<String, (u64, CancellationToken)>| {
            running.get(path).is_some_and(|(_, t)| !t.is_cancelled())
        };
        if is_running(&self.running.lock()) {
            return Some(wait);
        }
        // Parsed only to start one (an HLS source builds its HTTP client).
        let source = Source::parse(&p.source).ok()?;
        let run = self.next_run.fetch_add(1, Ordering::Relaxed);
        let stop = CancellationToken::new();
        {
            let mut running = self.running.lock();
            if is_running(&running) {
                return Some(wait);
            }
            running.insert(path.to_owned(), (run, stop.clone()));
        }
        tracing::info!(%path, source = %source.masked(), "a reader asks for the path: starting its on-demand source");
        let registry = self.registry.clone();
        let running = self.running.clone();
        let path = path.to_owned();
        self.rt.spawn(watch_readers(
            registry.clone(),
            path.clone(),
            source.masked(),
            close_after,
            stop.clone(),
        ));
        self.rt.spawn(async move {
            supervise(source, path.clone(), registry, stop).await;
            let mut running = running.lock();
            if running.get(&path).is_some_and(|(r, _)| *r == run) {
                running.remove(&path);
            }
        });
        Some(wait)
    }
}

/// Cancels `stop` once `path` has had no reader for `close_after`.
async fn watch_readers(
    registry: Registry,
    path: String,
    shown: String,
    close_after: Duration,
    stop: CancellationToken,
) {
    let mut idle_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => return,
        }
        let readers = registry
            .stats()
            .sessions()
            .iter()
            .filter(|s| s.role == Role::Reader && s.path == path)
            .count();
        if readers > 0 {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= close_after {
            tracing::info!(%path, source = %shown, "no reader for {} s: on-demand source stopped", close_after.as_secs());
            stop.cancel();
            return;
        }
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn rtmp_once(src: &RtmpUrl, path: &str, registry: &Registry) -> Result<(), String> {
    let addr = format!("{}:{}", src.host, src.port);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let remote = tcp.peer_addr().ok();
    let _ = tcp.set_nodelay(true);
    let mut io: Box<dyn Io> = if src.tls {
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, crate::tls::connect(&src.host, tcp, None))
            .await
            .map_err(|_| format!("TLS handshake with {addr} timed out"))?
            .map_err(|e| format!("TLS with {addr}: {e}"))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let mut session = ClientSession::new(src.clone(), Mode::Play, CHUNK_SIZE, Limits::default());
    let mut buf = BytesMut::with_capacity(64 * 1024);
    client::connect(&mut io, &mut session, &mut buf, CONNECT_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(%path, source = %src.masked(), "RTMP source connected");
    let info = SessionInfo {
        protocol: "rtmp",
        remote,
    };
    sluice_rtmp::pull::run(&mut io, &mut session, buf, path, info, registry, IDLE_TIMEOUT)
        .await
        .map_err(|e| e.to_string())
}
