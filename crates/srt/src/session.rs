//! SRT sessions: the listener's access hook, publish sessions (MPEG-TS in, demuxed into the
//! core), read sessions (core frames muxed to MPEG-TS out), and the caller that pulls a remote
//! stream into a path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sluice_container::ts::TsMuxer;
use sluice_container::ts_demux::{DemuxEvent, TsDemuxer};
use sluice_media::stats::{LinkStats, SessionStats};
use sluice_media::{Event, MediaKind, ReadError, Registry, SessionInfo};

use crate::socket::{Incoming, Socket, SrtError};
use crate::streamid::{Mode, StreamId};
use crate::{reject, shutting_down, sys, ListenerConfig, PathSettings};

const TICK: Duration = Duration::from_secs(1);
const TS_MESSAGE: usize = 7 * 188;

/// Binds the SRT listener and starts its accept thread.
pub fn spawn_listener(
    config: ListenerConfig,
    registry: Registry,
    handle: tokio::runtime::Handle,
) -> Result<(), SrtError> {
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
            // Poll for shutdown: srt_accept blocks, so close the listener from a watcher thread.
            let listener = Arc::new(sock);
            let watcher = listener.clone();
            std::thread::spawn(move || {
                while !shutting_down() {
                    std::thread::sleep(Duration::from_millis(200));
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
                        if shutting_down() {
                            return;
                        }
                        tracing::warn!("SRT accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(|e| SrtError {
            code: -1,
            message: format!("cannot start the SRT accept thread: {e}"),
        })?;
    Ok(())
}

/// The access check at the handshake: streamid, path, credentials, busy path; sets the
/// path's passphrase and latency on the connection being accepted.
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
    let Some(settings) = (cfg.resolve)(&sid.path) else {
        tracing::warn!(remote = %peer, path = %sid.path, "SRT {mode} refused: path is not configured");
        return Err(reject::NOT_FOUND);
    };
    let (want_creds, passphrase) = match sid.mode {
        Mode::Publish => (&settings.publish_credentials, &settings.publish_passphrase),
        Mode::Read => (&settings.read_credentials, &settings.read_passphrase),
    };
    if let Some((user, pass)) = want_creds {
        let ok = sid.user.as_deref() == Some(user.as_str()) && sid.pass.as_deref() == Some(pass.as_str());
        if !ok {
            let why = if sid.user.is_none() {
                "no user and password in the streamid"
            } else {
                "wrong user or password"
            };
            tracing::warn!(remote = %peer, path = %sid.path, "SRT {mode} refused: {why}");
            return Err(reject::UNAUTHORIZED);
        }
    }
    if sid.mode == Mode::Publish && registry.paths().iter().any(|p| p.name == sid.path && p.online) {
        tracing::warn!(remote = %peer, path = %sid.path, "SRT publish refused: the path already has a publisher");
        return Err(reject::CONFLICT);
    }
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
    let sid = match StreamId::parse(&conn.stream_id()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(remote = ?peer, "SRT session closed: {e}");
            return;
        }
    };
    let settings = (cfg.resolve)(&sid.path).unwrap_or_default();
    let remote = peer.map(|p| p.to_string()).unwrap_or_default();
    match sid.mode {
        Mode::Publish => {
            let publisher = match registry.publish(
                &sid.path,
                SessionInfo {
                    protocol: "srt",
                    remote: peer,
                },
            ) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(%remote, path = %sid.path, "SRT publish refused: {e}");
                    return;
                }
            };
            tracing::info!(%remote, path = %sid.path, "SRT publisher started");
            match publish(&conn, publisher, &settings, cfg.idle_timeout) {
                Ok(()) => tracing::info!(%remote, path = %sid.path, "SRT publisher ended"),
                Err(e) => tracing::warn!(%remote, path = %sid.path, "SRT publisher closed: {e}"),
            }
        }
        Mode::Read => {
            let reader = match registry.read(
                &sid.path,
                SessionInfo {
                    protocol: "srt",
                    remote: peer,
                },
            ) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%remote, path = %sid.path, "SRT read refused: {e}");
                    return;
                }
            };
            tracing::info!(%remote, path = %sid.path, "SRT reader started");
            let stats = reader.stats().clone();
            let r = read(&conn, reader, &settings, handle);
            update_stats(&conn, &stats, &settings);
            log_link(&stats);
            match r {
                Ok(()) => tracing::info!(%remote, path = %sid.path, "SRT reader ended"),
                Err(e) => tracing::warn!(%remote, path = %sid.path, "SRT reader closed: {e}"),
            }
        }
    }
}

/// Receives MPEG-TS from `conn` into `publisher` until the peer leaves or sends bad data.
fn publish(
    conn: &Socket,
    mut publisher: sluice_media::Publisher,
    settings: &PathSettings,
    idle_timeout: Duration,
) -> Result<(), String> {
    conn.set_recv_timeout(TICK).map_err(|e| e.to_string())?;
    let stats = publisher.stats().clone();
    let mut demux = TsDemuxer::new();
    let mut buf = vec![0u8; 1500];
    let mut events = Vec::new();
    let mut last_stats = Instant::now();
    let mut last_data = Instant::now();
    let result = loop {
        if shutting_down() {
            break Ok(());
        }
        match conn.recv(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                last_data = Instant::now();
                stats.add_bytes_in(n as u64);
                if let Err(e) = demux.push(&buf[..n], &mut events) {
                    break Err(e.to_string());
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
                    break Err(format!("no data for {} s", idle_timeout.as_secs()));
                }
            }
            Err(e)
                if e.code == sys::SRT_ECONNLOST
                    || e.code == sys::SRT_ENOCONN
                    || e.code == sys::SRT_EINVSOCK =>
            {
                break Ok(());
            }
            Err(e) => break Err(e.to_string()),
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
fn read(
    conn: &Socket,
    mut reader: sluice_media::Reader,
    settings: &PathSettings,
    handle: &tokio::runtime::Handle,
) -> Result<(), String> {
    let stats = reader.stats().clone();
    let mut mux: Option<TsMuxer> = None;
    let mut video = None;
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut last_stats = Instant::now();
    let message = (settings.payload_size.max(188) as usize / 188 * 188).min(TS_MESSAGE);
    let mut pace: Option<(Instant, i64)> = None;
    loop {
        if shutting_down() {
            return Ok(());
        }
        let ev = handle.block_on(async { tokio::time::timeout(TICK, reader.recv()).await });
        let mut batch = Vec::new();
        match ev {
            Err(_) => {
                if conn.state() != "connected" {
                    return Ok(());
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
                    let m = TsMuxer::new(&info.tracks)
                        .map_err(|e| format!("cannot send this stream over SRT: {e}"))?;
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
                        return Ok(());
                    }
                }
                Err(ReadError::Ended) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
        if !flush(conn, &mut out, message, &stats)? {
            return Ok(());
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
fn flush(conn: &Socket, out: &mut BytesMut, message: usize, stats: &SessionStats) -> Result<bool, String> {
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
            Err(e) => return Err(e.to_string()),
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

/// Pulls `url` (`srt://host:port?streamid=...&passphrase=...&latency=...`) into `path`,
/// reconnecting with backoff (1 s doubling to 30 s) until shutdown.
pub fn spawn_caller(url: String, path: String, registry: Registry) -> Result<(), String> {
    let target = CallerTarget::parse(&url)?;
    std::thread::Builder::new()
        .name("srt-caller".into())
        .spawn(move || {
            let mut backoff = Duration::from_secs(1);
            while !shutting_down() {
                let started = Instant::now();
                match call_once(&target, &path, &registry) {
                    Ok(()) => tracing::info!(%path, url = %target.display, "SRT source ended; reconnecting"),
                    Err(e) => tracing::warn!(%path, url = %target.display, "SRT source failed: {e}; retrying in {} s", backoff.as_secs()),
                }
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_secs(1);
                }
                let until = Instant::now() + backoff;
                while Instant::now() < until && !shutting_down() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
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
    fn parse(url: &str) -> Result<CallerTarget, String> {
        let rest = url
            .strip_prefix("srt://")
            .ok_or_else(|| format!("{url}: an SRT source must start with srt://"))?;
        let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hostport = hostport.trim_end_matches('/');
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| format!("{url}: no port"))?;
        let port: u16 = port.parse().map_err(|_| format!("{url}: bad port"))?;
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

fn call_once(t: &CallerTarget, path: &str, registry: &Registry) -> Result<(), String> {
    let addr = crate::socket::resolve(&t.host, t.port).ok_or_else(|| format!("cannot resolve {}", t.host))?;
    let sock = Socket::new().map_err(|e| e.to_string())?;
    let e = |e: SrtError| e.to_string();
    sock.set_i32(sys::SRTO_PAYLOADSIZE, 1316).map_err(e)?;
    sock.set_i32(sys::SRTO_CONNTIMEO, 5000).map_err(e)?;
    if let Some(s) = &t.stream_id {
        sock.set_str(sys::SRTO_STREAMID, s).map_err(e)?;
    }
    if let Some(p) = &t.passphrase {
        sock.set_str(sys::SRTO_PASSPHRASE, p).map_err(e)?;
    }
    let settings = PathSettings {
        latency: Duration::from_millis(t.latency_ms.unwrap_or(200).max(0) as u64),
        ..Default::default()
    };
    sock.set_i32(sys::SRTO_LATENCY, settings.latency.as_millis() as i32)
        .map_err(e)?;
    sock.connect(addr).map_err(e)?;
    let publisher = registry
        .publish(
            path,
            SessionInfo {
                protocol: "srt",
                remote: Some(addr),
            },
        )
        .map_err(|e| e.to_string())?;
    tracing::info!(%path, url = %t.display, "SRT source connected");
    publish(&sock, publisher, &settings, Duration::from_secs(10))
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
