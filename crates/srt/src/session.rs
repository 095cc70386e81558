//! SRT sessions: the listener's access hook, publish sessions (MPEG-TS in, demuxed into the
//! core), read sessions (core frames muxed to MPEG-TS out), and the caller that pulls a remote
//! stream into a path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sluice_container::ts::TsMuxer;
use sluice_container::ts_demux::{DemuxEvent, TsDemuxer};
use sluice_media::access::{AccessRequest, Action, Denied};
use sluice_media::stats::{LinkStats, SessionStats};
use sluice_media::{Event, MediaKind, PublishError, ReadError, Registry, SessionInfo};

use crate::socket::{Incoming, Socket, SrtError};
use crate::streamid::{Mode, StreamId, StreamIdError};
use crate::{reject, sys, ListenerConfig, PathSettings};

const TICK: Duration = Duration::from_secs(1);
const TS_MESSAGE: usize = 7 * 188;

/// Who is to blame for a session's end: what the log line and, later, the API say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The remote end: bad streamid or data, silence, credentials, a busy path.
    Peer,
    /// The server's configuration: a bad source URL, a path that is not configured.
    Configuration,
    /// This server or the system: libsrt failures, threads, the network stack.
    Internal,
}

/// Why an SRT session (listener side or caller) ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    // The peer's doing.
    #[error("{0}")]
    StreamId(#[from] StreamIdError),
    #[error("access refused: {0}")]
    Denied(Denied),
    #[error("the input is not valid MPEG-TS: {0}")]
    BadInput(String),
    #[error("no data for {} s", .0.as_secs())]
    Idle(Duration),
    #[error("{0}")]
    Publish(PublishError),
    #[error("{0}")]
    Read(ReadError),
    #[error("this stream cannot be sent over SRT: {0}")]
    Unsendable(String),
    // The configuration's.
    #[error("path {0} is not configured")]
    NotConfigured(String),
    #[error("source {url}: {reason}")]
    SourceUrl { url: String, reason: &'static str },
    #[error("cannot resolve the source host {0}")]
    Resolve(String),
    // Ours (or the system's).
    #[error("{0}")]
    Srt(#[from] SrtError),
    #[error("{0}")]
    Thread(std::io::Error),
}

impl SessionError {
    pub fn blame(&self) -> Blame {
        match self {
            SessionError::StreamId(_)
            | SessionError::Denied(_)
            | SessionError::BadInput(_)
            | SessionError::Idle(_)
            | SessionError::Unsendable(_)
            | SessionError::Read(_) => Blame::Peer,
            SessionError::Publish(PublishError::NotConfigured { .. }) => Blame::Configuration,
            SessionError::Publish(_) => Blame::Peer,
            SessionError::NotConfigured(_) | SessionError::SourceUrl { .. } | SessionError::Resolve(_) => {
                Blame::Configuration
            }
            SessionError::Srt(_) | SessionError::Thread(_) => Blame::Internal,
        }
    }
}

/// Logs a session's end at the level its blame deserves.
fn log_end(what: &str, remote: &str, path: &str, r: &Result<(), SessionError>) {
    match r {
        Ok(()) => tracing::info!(%remote, %path, "SRT {what} ended"),
        Err(e) if e.blame() == Blame::Internal => {
            tracing::error!(%remote, %path, "SRT {what} closed: {e}")
        }
        Err(e) => tracing::warn!(%remote, %path, blame = ?e.blame(), "SRT {what} closed: {e}"),
    }
}

/// Binds the SRT listener and starts its accept thread, which ends once the server shuts down
/// and the listener is closed. Join it before the process exits: libsrt's cleanup at exit
/// deadlocks with a thread still blocked in `srt_accept`.
pub fn spawn_listener(
    config: ListenerConfig,
    registry: Registry,
    handle: tokio::runtime::Handle,
) -> Result<std::thread::JoinHandle<()>, SessionError> {
    let sock = Socket::new()?;
    sock.set_i32(sys::SRTO_PAYLOADSIZE, 1316)?;
    sock.bind(config.addr)?;
    sock.listen(128)?;
    let hook_cfg = config.clone();
    let hook_registry = registry.clone();
    sock.set_listen_hook(Box::new(move |inc: &Incoming| {
        admit(&hook_cfg, &hook_registry, inc)
    }))?;
    std::thread::Builder::new()
        .name("srt-accept".into())
        .spawn(move || {
            // srt_accept blocks: a watcher thread closes the listener when the server shuts down.
            let listener = Arc::new(sock);
            let watcher = listener.clone();
            let stats = registry.stats().clone();
            let watcher = std::thread::spawn(move || {
                while !stats.is_shutting_down() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                watcher.close();
            });
            loop {
                match listener.accept() {
                    Ok((conn, peer)) => {
                        let (cfg, registry, handle) = (config.clone(), registry.clone(), handle.clone());
                        let spawned = std::thread::Builder::new()
                            .name("srt-session".into())
                            .spawn(move || session(conn, peer, &cfg, &registry, &handle));
                        if let Err(e) = spawned {
                            tracing::error!("cannot start an SRT session thread: {e}");
                        }
                    }
                    Err(e) => {
                        if registry.stats().is_shutting_down() {
                            let _ = watcher.join();
                            return;
                        }
                        tracing::warn!("SRT accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(SessionError::Thread)
}

/// The access request of a streamid: publish or read on its path, its user and password.
fn access_request(sid: &StreamId, peer: Option<SocketAddr>) -> AccessRequest {
    let action = match sid.mode {
        Mode::Publish => Action::Publish,
        Mode::Read => Action::Read,
    };
    AccessRequest::new(action, &sid.path, "srt", peer).with_credentials(sid.user.clone(), sid.pass.clone())
}

fn reject_code(d: &Denied) -> i32 {
    match d {
        Denied::Unauthorized(_) => reject::UNAUTHORIZED,
        Denied::Forbidden(_) => reject::FORBIDDEN,
    }
}

/// The check at the handshake, in libsrt's listen hook: streamid, access (only what the policy
/// can answer at once: this hook must not wait), path, busy path; sets the path's passphrase
/// and latency on the connection being accepted. A decision the policy cannot make at once is
/// finished in the session thread right after accept.
fn admit(cfg: &ListenerConfig, registry: &Registry, inc: &Incoming) -> Result<(), i32> {
    let peer = inc.peer.map(|p| p.to_string()).unwrap_or_default();
    let sid = match StreamId::parse(&inc.stream_id) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(remote = %peer, "SRT connection refused: {e}");
            return Err(reject::BAD_REQUEST);
        }
    };
    let mode = match sid.mode {
        Mode::Publish => "publish",
        Mode::Read => "read",
    };
    let decision = registry.authorize_now(&access_request(&sid, inc.peer));
    if let Some(Err(denied)) = &decision {
        let why = match denied {
            Denied::Unauthorized(w) | Denied::Forbidden(w) => w,
        };
        tracing::warn!(remote = %peer, path = %sid.path, "SRT {mode} refused: {why}");
        return Err(reject_code(denied));
    }
    // While the decision is pending, nothing here may tell the client whether the path exists
    // or is busy: the session thread decides first and checks those after.
    let pending = decision.is_none();
    let Some(settings) = (cfg.resolve)(&sid.path) else {
        if pending {
            return Ok(());
        }
        tracing::warn!(remote = %peer, path = %sid.path, "SRT {mode} refused: path is not configured");
        return Err(reject::NOT_FOUND);
    };
    if sid.mode == Mode::Publish && !pending && registry.is_published(&sid.path) {
        tracing::warn!(remote = %peer, path = %sid.path, "SRT publish refused: the path already has a publisher");
        return Err(reject::CONFLICT);
    }
    let passphrase = match sid.mode {
        Mode::Publish => &settings.publish_passphrase,
        Mode::Read => &settings.read_passphrase,
    };
    if let Some(p) = passphrase {
        if let Err(e) = inc.set_passphrase(p) {
            tracing::warn!(remote = %peer, path = %sid.path, "SRT {mode} refused: cannot set the passphrase: {e}");
            return Err(reject::FORBIDDEN);
        }
    }
    let _ = inc.set_i32(
        sys::SRTO_LATENCY,
        settings.latency.as_millis().min(i32::MAX as u128) as i32,
    );
    if settings.max_bandwidth > 0 {
        let _ = inc.set_i64(sys::SRTO_MAXBW, settings.max_bandwidth);
    }
    let _ = inc.set_i32(sys::SRTO_PAYLOADSIZE, settings.payload_size);
    tracing::debug!(remote = %peer, path = %sid.path, encrypted = passphrase.is_some(), "SRT {mode} handshake accepted");
    Ok(())
}

fn session(
    conn: Socket,
    peer: Option<SocketAddr>,
    cfg: &ListenerConfig,
    registry: &Registry,
    handle: &tokio::runtime::Handle,
) {
    let remote = peer.map(|p| p.to_string()).unwrap_or_default();
    let sid = match StreamId::parse(&conn.stream_id()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%remote, "SRT session closed: {e}");
            return;
        }
    };
    let mode = match sid.mode {
        Mode::Publish => "publish",
        Mode::Read => "read",
    };
    // Decisions the policy could not make in the listen hook (a remote check) are finished
    // here: the peer is connected by now, so a refusal closes the connection (the client sees
    // the connection end at once, not a handshake rejection).
    // Whatever answers now (a state that changed since the hook, a slow step) decides: a
    // refusal here is a refusal, never a pass.
    let req = access_request(&sid, peer);
    let decision = match registry.authorize_now(&req) {
        Some(r) => r,
        None => handle.block_on(registry.authorize(&req)),
    };
    if let Err(denied) = decision {
        let e = SessionError::Denied(denied);
        tracing::warn!(%remote, path = %sid.path, "SRT {mode} refused after accept, closing: {e}");
        conn.close();
        return;
    }
    let settings = (cfg.resolve)(&sid.path).unwrap_or_default();
    let info = SessionInfo {
        protocol: "srt",
        remote: peer,
    };
    match sid.mode {
        Mode::Publish => {
            let publisher = match registry.publish(&sid.path, info) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(%remote, path = %sid.path, "SRT publish refused: {e}");
                    return;
                }
            };
            tracing::info!(%remote, path = %sid.path, "SRT publisher started");
            let r = publish(&conn, publisher, &settings, cfg.idle_timeout, &|| false);
            log_end("publisher", &remote, &sid.path, &r);
        }
        Mode::Read => {
            let reader = match registry.read_with(&sid.path, info, sluice_media::Select::TS) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%remote, path = %sid.path, "SRT read refused: {e}");
                    return;
                }
            };
            tracing::info!(%remote, path = %sid.path, "SRT reader started");
            let stats = reader.stats().clone();
            let mut reader = reader;
            let r = read(&conn, &mut reader, &settings, handle).map(|_| ());
            update_stats(&conn, &stats, &settings);
            log_link(&stats);
            log_end("reader", &remote, &sid.path, &r);
        }
    }
}

/// A kicked or shut-down session's log line (the end itself is not an error).
fn log_closed_by_server(what: &str, stats: &SessionStats) {
    tracing::info!(path = %stats.path, session = stats.id, "SRT {what} closed by the server: {}", stats.reason());
}

/// Receives MPEG-TS from `conn` into `publisher` until the peer leaves or sends bad data.
fn publish(
    conn: &Socket,
    mut publisher: sluice_media::Publisher,
    settings: &PathSettings,
    idle_timeout: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<(), SessionError> {
    conn.set_recv_timeout(TICK)?;
    let stats = publisher.stats().clone();
    let mut demux = TsDemuxer::new();
    let mut buf = vec![0u8; 1500];
    let mut events = Vec::new();
    let mut last_stats = Instant::now();
    let mut last_data = Instant::now();
    let result = loop {
        if publisher.is_cancelled() {
            log_closed_by_server("publisher", &stats);
            break Ok(());
        }
        if stop() {
            break Ok(());
        }
        match conn.recv(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                last_data = Instant::now();
                stats.add_bytes_in(n as u64);
                if let Err(e) = demux.push(&buf[..n], &mut events) {
                    break Err(SessionError::BadInput(e.to_string()));
                }
                for ev in events.drain(..) {
                    match ev {
                        DemuxEvent::Tracks(t) => publisher.start(t),
                        DemuxEvent::Frame(f) => publisher.write(f),
                    }
                }
            }
            Err(e) if e.is_timeout() => {
                if last_data.elapsed() > idle_timeout {
                    break Err(SessionError::Idle(idle_timeout));
                }
            }
            Err(e)
                if e.code == sys::SRT_ECONNLOST
                    || e.code == sys::SRT_ENOCONN
                    || e.code == sys::SRT_EINVSOCK =>
            {
                break Ok(());
            }
            Err(e) => break Err(e.into()),
        }
        if last_stats.elapsed() >= TICK {
            update_stats(conn, &stats, settings);
            last_stats = Instant::now();
        }
    };
    update_stats(conn, &stats, settings);
    log_link(&stats);
    if demux.cc_errors > 0 {
        tracing::info!(path = %publisher.path(), cc_errors = demux.cc_errors, dropped_frames = demux.dropped_pes, "SRT input had continuity errors");
    }
    result
}

/// Sends the path's frames to `conn` as MPEG-TS until the peer leaves or the path ends.
/// How a read session ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// The peer went away.
    PeerGone,
    /// The path's stream is over, or the session was ended (kick, shutdown, removed).
    Done,
}

fn read(
    conn: &Socket,
    reader: &mut sluice_media::Reader,
    settings: &PathSettings,
    handle: &tokio::runtime::Handle,
) -> Result<ReadEnd, SessionError> {
    let stats = reader.stats().clone();
    let mut mux: Option<TsMuxer> = None;
    let mut video = None;
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut last_stats = Instant::now();
    let message = (settings.payload_size.max(188) as usize / 188 * 188).min(TS_MESSAGE);
    let mut pace: Option<(Instant, i64)> = None;
    loop {
        if stats.is_cancelled() {
            log_closed_by_server("reader", &stats);
            return Ok(ReadEnd::Done);
        }
        let ev = handle.block_on(async { tokio::time::timeout(TICK, reader.recv()).await });
        let mut batch = Vec::new();
        match ev {
            Err(_) => {
                if conn.state() != "connected" {
                    return Ok(ReadEnd::PeerGone);
                }
            }
            Ok(ev) => {
                batch.push(ev);
                while batch.len() < 64 {
                    match reader.try_recv() {
                        Some(ev) => batch.push(ev),
                        None => break,
                    }
                }
            }
        }
        for ev in batch {
            match ev {
                Ok(Event::Start(info)) => {
                    let m =
                        TsMuxer::new(&info.tracks).map_err(|e| SessionError::Unsendable(e.to_string()))?;
                    video = info
                        .tracks
                        .iter()
                        .find(|t| t.kind() == MediaKind::Video && m.carries(t.id))
                        .map(|t| t.id);
                    let mut m = m;
                    m.write_tables(&mut out);
                    mux = Some(m);
                    pace = None;
                }
                Ok(Event::Frame(f)) => {
                    let Some(m) = mux.as_mut() else { continue };
                    if f.keyframe && Some(f.track) == video {
                        // Tables before each keyframe, so a player can join at any GOP.
                        m.write_tables(&mut out);
                    }
                    if let Err(e) = m.write_frame(&f, &mut out) {
                        tracing::debug!("SRT read: frame skipped: {e}");
                    }
                    // A new reader first gets the GOP cache, a backlog of up to a GOP. SRT
                    // stamps each packet when it is sent, so a GOP sent in one burst at high
                    // bitrates reaches the receiver later than its latency allows and is
                    // dropped. Send a backlog at twice real time instead; live frames, which
                    // come at real time, are never held.
                    let now = Instant::now();
                    let (w0, d0) = *pace.get_or_insert((now, f.dts));
                    let ahead = (f.dts - d0).max(0) as u64 * 1_000_000 / 90_000 / 2;
                    let due = w0 + Duration::from_micros(ahead);
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    if !flush(conn, &mut out, message, &stats)? {
                        return Ok(ReadEnd::PeerGone);
                    }
                }
                Err(ReadError::Ended) => return Ok(ReadEnd::Done),
                Err(ReadError::Closed { .. }) => {
                    log_closed_by_server("reader", &stats);
                    return Ok(ReadEnd::Done);
                }
                Err(e) => return Err(SessionError::Read(e)),
            }
        }
        if !flush(conn, &mut out, message, &stats)? {
            return Ok(ReadEnd::PeerGone);
        }
        if last_stats.elapsed() >= TICK {
            update_stats(conn, &stats, settings);
            last_stats = Instant::now();
        }
    }
}

/// The link's totals at the end of a session, in the log (the API shows them live).
fn log_link(stats: &SessionStats) {
    if let Some(l) = stats.link.lock().clone() {
        tracing::info!(
            path = %stats.path,
            rtt_ms = l.rtt_ms,
            sent = l.packets_sent,
            received = l.packets_received,
            lost = l.packets_lost,
            retransmitted = l.packets_retransmitted,
            dropped = l.packets_dropped,
            naks_sent = l.naks_sent,
            naks_received = l.naks_received,
            undecryptable = l.undecryptable,
            "SRT link stats"
        );
    }
}

/// Sends what `out` holds in SRT messages of `message` bytes; false when the peer has gone.
fn flush(
    conn: &Socket,
    out: &mut BytesMut,
    message: usize,
    stats: &SessionStats,
) -> Result<bool, SessionError> {
    for chunk in out.chunks(message) {
        match conn.send(chunk) {
            Ok(_) => stats.add_bytes_out(chunk.len() as u64),
            Err(e)
                if e.code == sys::SRT_ECONNLOST
                    || e.code == sys::SRT_ENOCONN
                    || e.code == sys::SRT_EINVSOCK =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e.into()),
        }
    }
    out.clear();
    Ok(true)
}

fn update_stats(conn: &Socket, stats: &SessionStats, settings: &PathSettings) {
    let Ok(p) = conn.stats(false) else { return };
    let link = LinkStats {
        state: conn.state(),
        rtt_ms: p.msRTT,
        send_mbps: p.mbpsSendRate,
        recv_mbps: p.mbpsRecvRate,
        packets_sent: p.pktSentTotal.max(0) as u64,
        packets_received: p.pktRecvTotal.max(0) as u64,
        packets_lost: (p.pktRcvLossTotal.max(0) + p.pktSndLossTotal.max(0)) as u64,
        packets_retransmitted: p.pktRetransTotal.max(0) as u64,
        packets_dropped: (p.pktRcvDropTotal.max(0) + p.pktSndDropTotal.max(0)) as u64,
        naks_sent: p.pktSentNAKTotal.max(0) as u64,
        naks_received: p.pktRecvNAKTotal.max(0) as u64,
        recv_buffer_ms: p.msRcvBuf.max(0) as u64,
        recv_buffer_bytes: p.byteRcvBuf.max(0) as u64,
        undecryptable: p.pktRcvUndecryptTotal.max(0) as u64,
        latency_ms: settings.latency.as_millis() as u64,
        ..Default::default()
    };
    *stats.link.lock() = Some(link);
}

/// Pulls `url` (`srt://host:port?streamid=...&passphrase=...&latency=...`, we are the caller)
/// into `path` once: connects, publishes what the source sends, and returns when it ends, fails,
/// or `stop` returns true (asked every second, the receive timeout). Blocking: run it on a
/// thread of its own. Reconnecting is the caller's (the server's pull supervisor, one for every
/// kind of source).
pub fn pull_once(
    url: &str,
    path: &str,
    registry: &Registry,
    stop: &dyn Fn() -> bool,
) -> Result<(), SessionError> {
    let target = CallerTarget::parse(url)?;
    call_once(&target, path, registry, stop)
}

/// Checks an `srt://` caller URL (for the configuration); the error says what is wrong.
pub fn check_caller_url(url: &str) -> Result<(), String> {
    match CallerTarget::parse(url) {
        Ok(_) => Ok(()),
        Err(SessionError::SourceUrl { reason, .. }) => Err(format!("bad srt:// URL: {reason}")),
        Err(e) => Err(e.to_string()),
    }
}

/// What a push destination reports to whoever shows its state.
pub trait PushReport: Send + Sync {
    /// `connecting`, `live` or `retrying` (with the error).
    fn state(&self, state: &'static str, error: Option<String>);
    /// Bytes sent.
    fn sent(&self, bytes: u64);
}

/// Settings of an SRT push.
#[derive(Debug, Clone)]
pub struct PushSettings {
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub connect_timeout: Duration,
}

/// Pushes `reader`'s path to `url` (`srt://host:port?streamid=...&passphrase=...&latency=...`,
/// we are the caller) on a thread of its own: MPEG-TS as the SRT read sessions send it,
/// reconnecting with backoff and jitter until the reader ends.
pub fn spawn_pusher(
    url: String,
    mut reader: sluice_media::Reader,
    settings: PushSettings,
    report: std::sync::Arc<dyn PushReport>,
    handle: tokio::runtime::Handle,
) -> Result<(), SessionError> {
    let target = CallerTarget::parse(&url)?;
    std::thread::Builder::new()
        .name("srt-push".into())
        .spawn(move || {
            let path = reader.path().to_owned();
            let mut backoff = settings.retry_min;
            loop {
                report.state("connecting", None);
                let started = Instant::now();
                let r = push_once(&target, &mut reader, &settings, &handle, &*report);
                let why = match r {
                    Ok(ReadEnd::Done) => {
                        tracing::info!(%path, dest = %target.display, "SRT push ended");
                        return;
                    }
                    Ok(ReadEnd::PeerGone) => "the destination closed the connection".to_owned(),
                    Err(e) => e.to_string(),
                };
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = settings.retry_min;
                }
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                let wait = backoff.mul_f64(0.8 + (nanos % 1000) as f64 / 1000.0 * 0.4);
                tracing::warn!(%path, dest = %target.display, "SRT push failed: {why}; retrying in {:.1} s", wait.as_secs_f64());
                report.state("retrying", Some(why));
                // Wait, reading the path meanwhile (a reader left unread falls behind).
                let until = Instant::now() + wait;
                while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                    match handle.block_on(async { tokio::time::timeout(left, reader.recv()).await }) {
                        Ok(Err(ReadError::Ended)) | Ok(Err(ReadError::Closed { .. })) => return,
                        _ => {}
                    }
                }
                backoff = (backoff * 2).min(settings.retry_max);
            }
        })
        .map_err(SessionError::Thread)?;
    Ok(())
}

fn push_once(
    t: &CallerTarget,
    reader: &mut sluice_media::Reader,
    settings: &PushSettings,
    handle: &tokio::runtime::Handle,
    report: &dyn PushReport,
) -> Result<ReadEnd, SessionError> {
    let addr =
        crate::socket::resolve(&t.host, t.port).ok_or_else(|| SessionError::Resolve(t.host.clone()))?;
    let sock = Socket::new()?;
    sock.set_i32(sys::SRTO_PAYLOADSIZE, 1316)?;
    sock.set_i32(
        sys::SRTO_CONNTIMEO,
        settings.connect_timeout.as_millis().min(60_000) as i32,
    )?;
    if let Some(s) = &t.stream_id {
        sock.set_str(sys::SRTO_STREAMID, s)?;
    }
    if let Some(p) = &t.passphrase {
        sock.set_str(sys::SRTO_PASSPHRASE, p)?;
    }
    let path_settings = PathSettings {
        latency: Duration::from_millis(t.latency_ms.unwrap_or(200).max(0) as u64),
        ..Default::default()
    };
    sock.set_i32(sys::SRTO_LATENCY, path_settings.latency.as_millis() as i32)?;
    sock.connect(addr)?;
    tracing::info!(path = %reader.path(), dest = %t.display, "SRT push live");
    report.state("live", None);
    let stats = reader.stats().clone();
    let before = stats.snapshot().bytes_out;
    let r = read(&sock, reader, &path_settings, handle);
    report.sent(stats.snapshot().bytes_out.saturating_sub(before));
    sock.close();
    r
}

#[derive(Debug, Clone)]
struct CallerTarget {
    host: String,
    port: u16,
    stream_id: Option<String>,
    passphrase: Option<String>,
    latency_ms: Option<i32>,
    display: String,
}

impl CallerTarget {
    fn parse(url: &str) -> Result<CallerTarget, SessionError> {
        let bad = |reason| SessionError::SourceUrl {
            url: url.to_owned(),
            reason,
        };
        let rest = url
            .strip_prefix("srt://")
            .ok_or_else(|| bad("an SRT source must start with srt://"))?;
        let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hostport = hostport.trim_end_matches('/');
        let (host, port) = hostport.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        let mut t = CallerTarget {
            host: host.to_owned(),
            port,
            stream_id: None,
            passphrase: None,
            latency_ms: None,
            display: format!("srt://{hostport}"),
        };
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = percent_decode(v);
            match k {
                "streamid" => t.stream_id = Some(v),
                "passphrase" => t.passphrase = Some(v),
                // ffmpeg's convention: microseconds.
                "latency" => t.latency_ms = v.parse::<i64>().ok().map(|us| (us / 1000) as i32),
                _ => {}
            }
        }
        Ok(t)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn call_once(
    t: &CallerTarget,
    path: &str,
    registry: &Registry,
    stop: &dyn Fn() -> bool,
) -> Result<(), SessionError> {
    let addr =
        crate::socket::resolve(&t.host, t.port).ok_or_else(|| SessionError::Resolve(t.host.clone()))?;
    let sock = Socket::new()?;
    sock.set_i32(sys::SRTO_PAYLOADSIZE, 1316)?;
    sock.set_i32(sys::SRTO_CONNTIMEO, 5000)?;
    if let Some(s) = &t.stream_id {
        sock.set_str(sys::SRTO_STREAMID, s)?;
    }
    if let Some(p) = &t.passphrase {
        sock.set_str(sys::SRTO_PASSPHRASE, p)?;
    }
    let settings = PathSettings {
        latency: Duration::from_millis(t.latency_ms.unwrap_or(200).max(0) as u64),
        ..Default::default()
    };
    sock.set_i32(sys::SRTO_LATENCY, settings.latency.as_millis() as i32)?;
    sock.connect(addr)?;
    let publisher = registry
        .publish(
            path,
            SessionInfo {
                protocol: "srt",
                remote: Some(addr),
            },
        )
        .map_err(SessionError::Publish)?;
    tracing::info!(%path, url = %t.display, "SRT source connected");
    publish(&sock, publisher, &settings, Duration::from_secs(10), stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_urls() {
        let t = CallerTarget::parse(
            "srt://example.com:9000?streamid=read:live/x&passphrase=abc%20def1234&latency=400000",
        )
        .unwrap();
        assert_eq!((t.host.as_str(), t.port), ("example.com", 9000));
        assert_eq!(t.stream_id.as_deref(), Some("read:live/x"));
        assert_eq!(t.passphrase.as_deref(), Some("abc def1234"));
        assert_eq!(t.latency_ms, Some(400));
        assert!(CallerTarget::parse("rtmp://x:1").is_err());
        assert!(CallerTarget::parse("srt://x").is_err());
    }
}
