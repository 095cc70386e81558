//! Starts the listeners from the configuration, wires path events to the HLS muxers, and shuts
//! down on SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sluice_hls::{HlsConfig, HlsStore, Variant};
use sluice_media::{CoreEvent, PathOptions, Registry, SessionInfo};
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use crate::config::{Config, HlsVariant};

/// Everything the listeners share.
pub struct Shared {
    pub config: Config,
    pub registry: Registry,
    pub hls: Arc<HlsStore>,
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    if config.publishing_open() {
        tracing::warn!(
            "publishing is open: no [paths] table is configured, so anyone who can reach this server can publish on any path"
        );
    }
    let resolver_cfg = config.clone();
    let registry = Registry::with_paths(move |path| {
        resolver_cfg.path(path).map(|p| PathOptions {
            grace: p.grace_period,
            queue_frames: p.reader_queue,
            gop_cache_max_bytes: p.gop_cache_max_bytes,
            max_lags: p.reader_max_lags,
        })
    });
    let shared = Arc::new(Shared {
        config,
        registry,
        hls: Arc::new(HlsStore::default()),
    });

    tokio::spawn(hls_wiring(shared.clone()));

    let mut tasks = Vec::new();
    if shared.config.rtmp.enabled {
        let addr = shared.config.rtmp.listen;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for RTMP on {addr}"))?;
        tracing::info!("RTMP listening on {addr}");
        tasks.push(tokio::spawn(rtmp_listener(listener, shared.clone())));
    }
    if shared.config.http.enabled {
        let addr = shared.config.http.listen;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
        tracing::info!("HTTP (HLS, HTTP-FLV, player) listening on {addr}");
        let app = crate::http::router(shared.clone());
        tasks.push(tokio::spawn(async move {
            let svc = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            if let Err(e) = axum::serve(listener, svc).await {
                tracing::error!("HTTP server stopped: {e}");
            }
        }));
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
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for WebRTC (WHIP/WHEP) on {addr}"))?;
        let udp: Vec<String> = webrtc.local_addrs().iter().map(|a| a.to_string()).collect();
        let tcp: Vec<String> = webrtc.tcp_addrs().iter().map(|a| a.to_string()).collect();
        tracing::info!(
            "WebRTC (WHIP/WHEP) listening on {addr}, media on UDP {} and ICE-TCP {}",
            udp.join(", "),
            if tcp.is_empty() {
                "off".to_owned()
            } else {
                tcp.join(", ")
            }
        );
        let app = crate::webrtc_http::router(shared.clone(), webrtc);
        tasks.push(tokio::spawn(async move {
            let svc = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            if let Err(e) = axum::serve(listener, svc).await {
                tracing::error!("WebRTC HTTP server stopped: {e}");
            }
        }));
    }

    if shared.config.srt.enabled {
        let cfg = &shared.config.srt;
        let resolve_cfg = shared.config.clone();
        let listener = sluice_srt::ListenerConfig {
            addr: cfg.listen,
            idle_timeout: cfg.idle_timeout,
            resolve: Arc::new(move |path| resolve_cfg.path(path).map(|p| srt_settings(&p))),
        };
        sluice_srt::spawn_listener(
            listener,
            shared.registry.clone(),
            tokio::runtime::Handle::current(),
        )
        .map_err(|e| anyhow::anyhow!("cannot listen for SRT on {}: {e}", cfg.listen))?;
        tracing::info!("SRT listening on {} (UDP)", cfg.listen);
    }
    for (name, _) in shared.config.paths.iter() {
        let Some(p) = shared.config.path(name) else {
            continue;
        };
        if p.source.starts_with("srt://") {
            sluice_srt::spawn_caller(p.source.clone(), name.clone(), shared.registry.clone())
                .map_err(|e| anyhow::anyhow!("paths.{name:?}.source: {e}"))?;
            tracing::info!(path = %name, "pulling from an SRT source");
        }
    }

    shutdown_signal().await;
    tracing::info!("shutting down: closing listeners and sessions");
    sluice_srt::shutdown();
    for t in &tasks {
        t.abort();
    }
    // Give sessions a moment to send their closing messages (SRT sessions notice within 1 s).
    tokio::time::sleep(Duration::from_millis(if shared.config.srt.enabled {
        1100
    } else {
        200
    }))
    .await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// The SRT settings of a path.
fn srt_settings(p: &crate::config::PathConfig) -> sluice_srt::PathSettings {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let creds = |u: &str, p: &str| (!u.is_empty()).then(|| (u.to_owned(), p.to_owned()));
    sluice_srt::PathSettings {
        publish_passphrase: opt(&p.srt_publish_passphrase),
        read_passphrase: opt(&p.srt_read_passphrase),
        publish_credentials: creds(&p.srt_publish_user, &p.srt_publish_pass),
        read_credentials: creds(&p.srt_read_user, &p.srt_read_pass),
        latency: p.srt_latency,
        max_bandwidth: p.srt_max_bandwidth,
        payload_size: p.srt_payload_size as i32,
    }
}

async fn rtmp_listener(listener: TcpListener, shared: Arc<Shared>) {
    let cfg = &shared.config.rtmp;
    let rtmp_cfg = sluice_rtmp::ServerConfig {
        chunk_size: cfg.chunk_size,
        handshake_timeout: cfg.handshake_timeout,
        idle_timeout: cfg.idle_timeout,
        play_coalesce: cfg.play_coalesce,
        ..Default::default()
    };
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
        let rtmp_cfg = rtmp_cfg.clone();
        tokio::spawn(async move {
            if let Err(e) = sluice_rtmp::serve(socket, remote, registry, rtmp_cfg).await {
                tracing::info!(%remote, "RTMP session closed: {e}");
            }
        });
    }
}

/// Starts an HLS muxer for each path that goes live and drops it when the path ends.
async fn hls_wiring(shared: Arc<Shared>) {
    let mut events = shared.registry.subscribe_events();
    loop {
        match events.recv().await {
            Ok(CoreEvent::Published { path, .. }) => {
                if shared.hls.get(&path).is_some_and(|s| !s.is_closed()) {
                    // A publisher came back within the grace period: the muxer goes on.
                    continue;
                }
                let Some(pcfg) = shared.config.path(&path) else {
                    continue;
                };
                let reader = match shared.registry.read(
                    &path,
                    SessionInfo {
                        protocol: "hls",
                        remote: None,
                    },
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(%path, "cannot start HLS: {e}");
                        continue;
                    }
                };
                let hls = &shared.config.hls;
                let variant = match pcfg.hls_variant.unwrap_or(hls.variant) {
                    HlsVariant::Fmp4 => Variant::Fmp4,
                    HlsVariant::Mpegts => Variant::MpegTs,
                };
                let config = HlsConfig {
                    variant,
                    segment_duration: hls.segment_duration,
                    segment_count: hls.segment_count,
                    ..Default::default()
                };
                let stream = sluice_hls::spawn(reader, config);
                shared.hls.insert(&path, stream);
            }
            Ok(CoreEvent::Ended { path }) => {
                shared.hls.remove(&path);
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => tracing::warn!("HLS wiring missed {n} path events"),
            Err(RecvError::Closed) => return,
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
