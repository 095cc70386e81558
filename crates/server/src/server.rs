//! Starts the listeners from the configuration, installs the core's hooks (path outputs, derived
//! tracks, access policy) over the live configuration, starts the reload triggers (SIGHUP, the
//! file watcher; see `reload`), and on SIGINT/SIGTERM ends every session and waits for them,
//! bounded.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sluice_hls::HlsStore;
use sluice_media::{PathOptions, Registry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::reload::{Layers, LiveConfig, Reloader, Sources};

/// Everything the listeners share.
pub struct Shared {
    /// The configuration the server started with: what the listeners were bound from, and the
    /// settings that need a restart. Anything a reload may change is read from `live`.
    pub config: Config,
    /// The configuration in force (replaced by a reload): read it where you decide.
    pub live: LiveConfig,
    pub registry: Registry,
    pub hls: Arc<HlsStore>,
    /// Every live path's health (the `health` outputs), for the API and the metrics.
    pub health: Arc<crate::health::HealthStore>,
    /// What is recorded, and the running recorders.
    pub recordings: Arc<sluice_record::Recordings>,
    /// The push destinations' status.
    pub pushes: Arc<crate::push::PushStore>,
    /// The transcoders' status.
    pub transcodes: Arc<crate::transcode::TranscodeStore>,
    /// Remembered snapshots (`/PATH/snapshot.jpg`).
    pub snapshots: Arc<crate::snapshot::Snapshots>,
}

pub async fn run(layers: Layers, sources: Sources) -> anyhow::Result<()> {
    let config = layers.config.clone();
    if config.publishing_open() {
        tracing::warn!(
            "publishing is open: no [paths] table is configured, so anyone who can reach this server can publish on any path"
        );
    }
    let live = LiveConfig::new(config.clone());
    let resolver_cfg = live.clone();
    let registry = Registry::with_paths(move |path| {
        resolver_cfg.get().path(path).map(|p| PathOptions {
            grace: p.grace_period,
            queue_frames: p.reader_queue,
            gop_cache_max_bytes: p.gop_cache_max_bytes,
            max_lags: p.reader_max_lags,
        })
    });
    let health = Arc::new(crate::health::HealthStore::new(registry.events().clone()));
    let record_cfg = live.clone();
    let recordings = sluice_record::Recordings::new(
        registry.events().clone(),
        Arc::new(move |path: &str| {
            let cfg = record_cfg.get();
            cfg.path(path).and_then(|p| p.record.to_record_config().ok())
        }),
    );
    // The catalog of what is on disk, before anything new is recorded (files a crash cut are
    // repaired here).
    let patterns = record_patterns(&config);
    let scan_with = recordings.clone();
    let report = tokio::task::spawn_blocking(move || scan_with.scan(&patterns)).await?;
    if report.segments > 0 {
        tracing::info!(segments = report.segments, "recordings found on disk");
    }
    let shared = Arc::new(Shared {
        config,
        live: live.clone(),
        registry,
        hls: Arc::new(HlsStore::default()),
        health,
        recordings,
        pushes: Arc::default(),
        transcodes: Arc::default(),
        snapshots: Arc::default(),
    });

    let policy = crate::auth::Auth::new(live.clone());
    shared.registry.set_policy(Arc::new(policy));

    let outputs = crate::outputs::PathOutputs::new(
        live.clone(),
        shared.hls.clone(),
        tokio::runtime::Handle::current(),
    )
    .with_health(shared.health.clone())
    .with_recordings(shared.recordings.clone())
    .with_pushes(shared.pushes.clone(), shared.registry.events().clone())
    .with_transcode(shared.registry.clone(), shared.transcodes.clone());
    shared.registry.set_outputs(Arc::new(outputs));
    shared.registry.set_on_demand(Arc::new(Demand {
        renditions: crate::transcode::RenditionDemand::new(
            live.clone(),
            shared.registry.clone(),
            shared.transcodes.clone(),
        ),
        pulls: crate::pull::OnDemandPulls::new(live.clone(), shared.registry.clone()),
    }));
    let audio = sluice_audio::AudioTransformer::new(tokio::runtime::Handle::current());
    shared.registry.set_transformer(Arc::new(audio));

    // Cancelled at shutdown: listeners stop accepting.
    let stop = CancellationToken::new();
    match &sources.state {
        Some(f) if f.exists() => {
            tracing::info!(state = %f.display(), "the state file (API changes) is applied over the configuration")
        }
        Some(_) => {}
        None => tracing::info!(
            "running on the built-in configuration without --state: changes made through the API are not kept across a restart"
        ),
    }
    // Retention, once a minute (and after each completed segment).
    let sweeper = shared.recordings.clone();
    let sweep_stop = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = sweep_stop.cancelled() => break,
            }
            let s = sweeper.clone();
            let _ = tokio::task::spawn_blocking(move || s.sweep_all()).await;
        }
    });
    // Outputs that ended while their path is live (a reader cut for falling behind, a task that
    // failed) are started again, every few seconds: the publisher and the other outputs never
    // notice.
    let supervised = shared.registry.clone();
    let supervise_stop = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => supervised.reconcile_outputs(),
                _ = supervise_stop.cancelled() => break,
            }
        }
    });
    let reloader = Reloader::new(sources, layers, live.clone(), shared.registry.clone());
    reloader.spawn_triggers(stop.clone());
    tokio::spawn(log_events(shared.registry.clone(), stop.clone()));
    // The other consumers of the event bus: webhooks, and commands run on path events.
    crate::webhooks::spawn(&shared.config.webhooks, &shared.registry, stop.clone())?;
    let run_on_cfg = shared.live.clone();
    let run_on = crate::run_on::spawn(
        Arc::new(move |path: &str| run_on_cfg.get().path(path).map(|p| p.run_on.clone())),
        crate::run_on::Urls::from_config(&shared.config),
        shared.registry.clone(),
        stop.clone(),
    );

    let mut tasks = Vec::new();
    let mut srt_accept = None;
    // Listeners start here; if one cannot, what already started is shut down the same way as
    // on a signal (a thread left in srt_accept would hang libsrt's cleanup at exit).
    let started: anyhow::Result<()> = async {
        if shared.config.rtmp.enabled {
            let addr = shared.config.rtmp.listen;
            let listener = bind(addr).with_context(|| format!("cannot listen for RTMP on {addr}"))?;
            tracing::info!("RTMP listening on {addr}");
            tasks.push(tokio::spawn(rtmp_listener(listener, shared.clone())));
        }
        if let Some((cert, key)) = rtmps_files(&shared.config)? {
            let addr = shared.config.rtmp.tls_listen;
            let tls = crate::tls::TlsServer::new(cert.as_ref(), key.as_ref(), &[])
                .with_context(|| format!("cannot start RTMPS on {addr}"))?;
            let tls = Arc::new(tls);
            tls.spawn_reload("RTMPS", stop.clone());
            let listener = bind(addr).with_context(|| format!("cannot listen for RTMPS on {addr}"))?;
            tracing::info!("RTMPS listening on {addr}");
            tasks.push(tokio::spawn(rtmps_listener(listener, shared.clone(), tls)));
        }
        if shared.config.http.enabled {
            let cfg = &shared.config.http;
            let addr = cfg.listen;
            let tls = https_acceptor("HTTPS (http)", &cfg.tls_cert, &cfg.tls_key, addr, &stop)?;
            let listener = bind(addr).with_context(|| format!("cannot listen for HTTP on {addr}"))?;
            let scheme = if tls.is_some() { "HTTPS" } else { "HTTP" };
            tracing::info!("{scheme} (HLS, HTTP-FLV, player) listening on {addr}");
            let app = crate::http::delivery(shared.clone());
            tasks.push(tokio::spawn(crate::http_serve::serve(
                listener,
                app,
                crate::http_serve::HttpLimits::from(&shared.config.http),
                tls,
                stop.clone().cancelled_owned(),
            )));
        }

        if shared.config.webrtc.enabled {
            let cfg = &shared.config.webrtc;
            let wcfg = sluice_webrtc::WebRtcConfig {
                udp_listen: cfg.udp_listen,
                additional_hosts: cfg.additional_hosts.clone(),
                tcp_listen: cfg.tcp_listen,
                ice_timeout: cfg.ice_timeout,
            };
            let webrtc = sluice_webrtc::WebRtc::start(wcfg, shared.registry.clone())
                .await
                .with_context(|| format!("cannot listen for WebRTC media on UDP {}", cfg.udp_listen))?;
            let addr = cfg.listen;
            let tls = https_acceptor("HTTPS (webrtc)", &cfg.tls_cert, &cfg.tls_key, addr, &stop)?;
            let listener =
                bind(addr).with_context(|| format!("cannot listen for WebRTC (WHIP/WHEP) on {addr}"))?;
            let udp: Vec<String> = webrtc.local_addrs().iter().map(|a| a.to_string()).collect();
            let tcp: Vec<String> = webrtc.tcp_addrs().iter().map(|a| a.to_string()).collect();
            tracing::info!(
                "WebRTC (WHIP/WHEP) listening on {addr}{}, media on UDP {} and ICE-TCP {}",
                https_note(&tls),
                udp.join(", "),
                if tcp.is_empty() {
                    "off".to_owned()
                } else {
                    tcp.join(", ")
                }
            );
            let app = crate::webrtc_http::router(shared.clone(), webrtc);
            tasks.push(tokio::spawn(crate::http_serve::serve(
                listener,
                app,
                crate::http_serve::HttpLimits::from(&shared.config.http),
                tls,
                stop.clone().cancelled_owned(),
            )));
        }

        if shared.config.srt.enabled {
            let cfg = &shared.config.srt;
            let resolve_cfg = shared.live.clone();
            let listener = sluice_srt::ListenerConfig {
                addr: cfg.listen,
                idle_timeout: cfg.idle_timeout,
                resolve: Arc::new(move |path| resolve_cfg.get().path(path).map(srt_settings)),
            };
            let thread = sluice_srt::spawn_listener(
                listener,
                shared.registry.clone(),
                tokio::runtime::Handle::current(),
            )
            .map_err(|e| anyhow::anyhow!("cannot listen for SRT on {}: {e}", cfg.listen))?;
            srt_accept = Some(thread);
            tracing::info!("SRT listening on {} (UDP)", cfg.listen);
        }
        reloader.sync_pulls(true)?;

        // Bitrates sampled once a second, shared by the API and the metrics.
        let rates = Arc::new(crate::api::Rates::default());
        if shared.config.api.enabled || shared.config.metrics.enabled {
            crate::api::spawn_sampler(rates.clone(), shared.registry.clone(), stop.clone());
        }
        if shared.config.api.enabled {
            let cfg = &shared.config.api;
            let addr = cfg.listen;
            let tls = https_acceptor("HTTPS (api)", &cfg.tls_cert, &cfg.tls_key, addr, &stop)?;
            let listener = bind(addr).with_context(|| format!("cannot listen for the API on {addr}"))?;
            tracing::info!("API listening on {addr}{}", https_note(&tls));
            let api = crate::api::Api {
                registry: shared.registry.clone(),
                rates: rates.clone(),
                hls: shared.hls.clone(),
                health: shared.health.clone(),
                server: Arc::new(crate::api::ServerInfo::new(listeners(&shared.config))),
                recordings: shared.recordings.clone(),
                pushes: shared.pushes.clone(),
                transcodes: shared.transcodes.clone(),
                recent: crate::api_state::RecentEvents::spawn(&shared.registry, stop.clone()),
            };
            let app = crate::api::router(api)
                .layer(axum::Extension(crate::sse::EventStreams::new(
                    shared.registry.clone(),
                    stop.clone(),
                )))
                .layer(axum::Extension(reloader.clone()));
            tasks.push(tokio::spawn(crate::http_serve::serve(
                listener,
                crate::dashboard::wrap(app, shared.registry.clone(), reloader.clone(), tls.is_some()),
                crate::http_serve::HttpLimits::from(&shared.config.http),
                tls,
                stop.clone().cancelled_owned(),
            )));
        }
        if shared.config.playback.enabled {
            let cfg = &shared.config.playback;
            let addr = cfg.listen;
            let tls = https_acceptor("HTTPS (playback)", &cfg.tls_cert, &cfg.tls_key, addr, &stop)?;
            let listener = bind(addr).with_context(|| format!("cannot listen for playback on {addr}"))?;
            tracing::info!("recording playback listening on {addr}{}", https_note(&tls));
            tasks.push(tokio::spawn(crate::http_serve::serve(
                listener,
                crate::auth::guard(
                    crate::playback::router(shared.recordings.clone()),
                    shared.registry.clone(),
                    sluice_media::access::Action::Playback,
                ),
                crate::http_serve::HttpLimits::from(&shared.config.http),
                tls,
                stop.clone().cancelled_owned(),
            )));
        }
        if shared.config.metrics.enabled {
            let cfg = &shared.config.metrics;
            let addr = cfg.listen;
            let tls = https_acceptor("HTTPS (metrics)", &cfg.tls_cert, &cfg.tls_key, addr, &stop)?;
            let listener = bind(addr).with_context(|| format!("cannot listen for metrics on {addr}"))?;
            tracing::info!("metrics (Prometheus) listening on {addr}{}", https_note(&tls));
            let metrics = crate::metrics::Metrics::start(
                shared.registry.clone(),
                rates.clone(),
                shared.health.clone(),
                shared.recordings.clone(),
                &shared.config.metrics,
                stop.clone(),
            );
            tasks.push(tokio::spawn(crate::http_serve::serve(
                listener,
                crate::auth::guard(
                    crate::metrics::router(metrics),
                    shared.registry.clone(),
                    sluice_media::access::Action::Metrics,
                ),
                crate::http_serve::HttpLimits::from(&shared.config.http),
                tls,
                stop.clone().cancelled_owned(),
            )));
        }

        Ok(())
    }
    .await;
    if started.is_ok() {
        shutdown_signal().await;
    }
    let sessions = shared.registry.stats().len();
    tracing::info!(sessions, "shutting down: closing listeners and sessions");
    stop.cancel();
    shared.registry.stats().shutdown();
    for t in &tasks {
        t.abort();
    }
    // Every session ends when it sees its cancellation (SRT threads within their 1 s poll).
    let left = shared
        .registry
        .stats()
        .wait_empty(Duration::from_millis(1500))
        .await;
    if left > 0 {
        tracing::warn!(sessions = left, "sessions still open at exit");
    }
    // Recorders complete their files (duration in the header, fsync).
    let writing = shared.recordings.wait_writers(Duration::from_secs(5)).await;
    if writing > 0 {
        tracing::warn!(
            writers = writing,
            "recordings still being written at exit (readable up to their last fragment)"
        );
    }
    // Commands run on events were sent SIGTERM at `stop` (SIGKILL after their grace).
    let grace = crate::run_on::KILL_GRACE + Duration::from_secs(1);
    if tokio::time::timeout(grace, run_on).await.is_err() {
        tracing::warn!("run_on commands did not stop in time");
    }
    // libsrt's cleanup at exit must not race a thread still blocked in srt_accept.
    if let Some(t) = srt_accept {
        let joined = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::task::spawn_blocking(move || t.join()),
        )
        .await;
        if joined.is_err() {
            tracing::warn!("the SRT listener did not stop in time");
        }
    }
    tracing::info!("shutdown complete");
    started
}

/// The SRT settings of a path.
fn srt_settings(p: &crate::config::PathConfig) -> sluice_srt::PathSettings {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    sluice_srt::PathSettings {
        publish_passphrase: opt(&p.srt.publish_passphrase),
        read_passphrase: opt(&p.srt.read_passphrase),
        latency: p.srt.latency,
        max_bandwidth: p.srt.max_bandwidth,
        payload_size: p.srt.payload_size as i32,
    }
}

/// The RTMP settings in force now: each connection takes them when it arrives.
fn rtmp_server_config(shared: &Shared) -> sluice_rtmp::ServerConfig {
    let live = shared.live.get();
    sluice_rtmp::ServerConfig {
        chunk_size: live.rtmp.chunk_size,
        handshake_timeout: live.rtmp.handshake_timeout,
        idle_timeout: live.rtmp.idle_timeout,
        play_coalesce: live.rtmp.play_coalesce,
        ..Default::default()
    }
}

async fn rtmp_listener(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (socket, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("RTMP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let registry = shared.registry.clone();
        let rtmp_cfg = rtmp_server_config(&shared);
        tokio::spawn(async move {
            if let Err(e) = sluice_rtmp::serve(socket, remote, registry, rtmp_cfg).await {
                tracing::info!(%remote, "RTMP session closed: {e}");
            }
        });
    }
}

/// The RTMPS certificate and key files: `None` when RTMPS is off (neither set, or RTMP off).
fn rtmps_files(config: &Config) -> anyhow::Result<Option<(&str, &str)>> {
    let r = &config.rtmp;
    match (r.tls_cert.is_empty(), r.tls_key.is_empty()) {
        _ if !r.enabled => Ok(None),
        (true, true) => Ok(None),
        (false, false) => Ok(Some((&r.tls_cert, &r.tls_key))),
        _ => anyhow::bail!("rtmp.tls_cert and rtmp.tls_key: set both to serve RTMPS, or neither"),
    }
}

/// RTMPS: the TLS handshake (bounded by `rtmp.handshake_timeout`), then the same RTMP session
/// as on the plain port. A failed handshake (a plain RTMP client, a scanner, an untrusted
/// certificate) ends that connection only, logged with the remote.
async fn rtmps_listener(listener: TcpListener, shared: Arc<Shared>, tls: Arc<crate::tls::TlsServer>) {
    loop {
        let (socket, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("RTMPS accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let registry = shared.registry.clone();
        let rtmp_cfg = rtmp_server_config(&shared);
        let rtmp_cfg = sluice_rtmp::ServerConfig {
            protocol: "rtmps",
            ..rtmp_cfg
        };
        let acceptor = tls.acceptor();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(rtmp_cfg.handshake_timeout, acceptor.accept(socket)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%remote, "RTMPS: TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "RTMPS: TLS handshake timed out");
                    return;
                }
            };
            if let Err(e) = sluice_rtmp::serve(stream, remote, registry, rtmp_cfg).await {
                tracing::info!(%remote, "RTMPS session closed: {e}");
            }
        });
    }
}

/// The TLS acceptor of an HTTP listener whose `tls_cert` and `tls_key` are set (ALPN h2 and
/// http/1.1; the files reloaded from disk until `stop`, `what` naming it in the log); `None`
/// when both are empty (plain HTTP).
fn https_acceptor(
    what: &'static str,
    cert: &str,
    key: &str,
    addr: std::net::SocketAddr,
    stop: &CancellationToken,
) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => return Ok(None),
        (false, false) => {}
        _ => anyhow::bail!("{what} on {addr}: set both tls_cert and tls_key to serve HTTPS, or neither"),
    }
    let tls = crate::tls::TlsServer::new(cert.as_ref(), key.as_ref(), crate::tls::ALPN_HTTP)
        .with_context(|| format!("cannot start {what} on {addr}"))?;
    let tls = Arc::new(tls);
    tls.spawn_reload(what, stop.clone());
    Ok(Some(tls.acceptor()))
}

/// Added to a listener's startup line when it serves HTTPS.
fn https_note(tls: &Option<tokio_rustls::TlsAcceptor>) -> &'static str {
    if tls.is_some() {
        " (HTTPS)"
    } else {
        ""
    }
}

/// The listeners of `config`, by name, for `GET /v1/server`; an HTTPS one is marked
/// `ADDR (https)`, as UDP ones are `ADDR (udp)`.
fn listeners(config: &Config) -> std::collections::BTreeMap<String, String> {
    let mut m = std::collections::BTreeMap::new();
    let mut add = |name: &str, on: bool, addr: String| {
        if on {
            m.insert(name.to_owned(), addr);
        }
    };
    add("rtmp", config.rtmp.enabled, config.rtmp.listen.to_string());
    add(
        "rtmps",
        matches!(rtmps_files(config), Ok(Some(_))),
        config.rtmp.tls_listen.to_string(),
    );
    let http = |listen: std::net::SocketAddr, cert: &str| {
        if cert.is_empty() {
            listen.to_string()
        } else {
            format!("{listen} (https)")
        }
    };
    add(
        "http",
        config.http.enabled,
        http(config.http.listen, &config.http.tls_cert),
    );
    add("srt", config.srt.enabled, format!("{} (udp)", config.srt.listen));
    add(
        "webrtc",
        config.webrtc.enabled,
        http(config.webrtc.listen, &config.webrtc.tls_cert),
    );
    add(
        "webrtc_udp",
        config.webrtc.enabled,
        format!("{} (udp)", config.webrtc.udp_listen),
    );
    add(
        "api",
        config.api.enabled,
        http(config.api.listen, &config.api.tls_cert),
    );
    add(
        "metrics",
        config.metrics.enabled,
        http(config.metrics.listen, &config.metrics.tls_cert),
    );
    add(
        "playback",
        config.playback.enabled,
        http(config.playback.listen, &config.playback.tls_cert),
    );
    m
}

/// A TCP listener with a backlog of 1024: a burst of connections (a thousand viewers arriving at
/// once) is queued, not dropped into SYN retries.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The log consumer of the event bus (webhooks, SSE and run_on are the others).
async fn log_events(registry: Registry, stop: CancellationToken) {
    use sluice_media::events::{Received, ServerEvent};
    let mut rx = registry.events().subscribe("log", 4096);
    loop {
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.recv() => r,
        };
        match r {
            None => return,
            Some(Received::Missed(n)) => tracing::warn!(missed = n, "event log fell behind"),
            Some(Received::Event(e)) => match e.event {
                ServerEvent::SessionOpened {
                    id,
                    protocol,
                    role,
                    path,
                    remote,
                } => {
                    tracing::debug!(session = id, protocol, role = role.name(), %path, ?remote, "session opened")
                }
                ServerEvent::SessionClosed {
                    id,
                    protocol,
                    role,
                    path,
                    reason,
                } => {
                    tracing::debug!(session = id, protocol, role = role.name(), %path, %reason, "session closed")
                }
                other => tracing::debug!(event = ?other, "event"),
            },
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Every recording file pattern of the configuration (defaults and each path table), for the
/// catalog scan.
fn record_patterns(config: &Config) -> Vec<sluice_record::Pattern> {
    let mut v: Vec<sluice_record::Pattern> = Vec::new();
    for p in std::iter::once(&config.path_defaults).chain(config.paths.values()) {
        if let Ok(c) = p.record.to_record_config() {
            if !v.contains(&c.pattern) {
                v.push(c.pattern);
            }
        }
    }
    v
}

/// What starts for a viewer of a path nobody publishes: an on-demand ladder's rendition, or an
/// on-demand source.
struct Demand {
    renditions: crate::transcode::RenditionDemand,
    pulls: crate::pull::OnDemandPulls,
}

impl sluice_media::OnDemand for Demand {
    fn demand(&self, path: &str) -> Option<std::time::Duration> {
        self.renditions.demand(path).or_else(|| self.pulls.demand(path))
    }
}
