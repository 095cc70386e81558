//! WebRTC for Sluice: WHIP ingest and WHEP playback on str0m, bridged to the media core.
//!
//! str0m is sans-IO, so this crate owns the I/O: one UDP port for every session ([`udp`]), one
//! tokio task per session driving its `str0m::Rtc` ([`session`]), and the conversion of audio
//! between AAC and Opus ([`audio`]). The server answers as ICE-lite with host candidates on the
//! shared port (plus configured extra addresses, for NAT and containers), and as the DTLS server.
//! The HTTP side of WHIP/WHEP (routes, CORS, auth) is the server crate's; this crate takes an
//! SDP offer and gives back an answer and a session id.

pub mod audio;
mod session;
pub mod stun;
mod udp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sluice_media::{CodecId, PublishError, ReadError, Registry};
use tokio::sync::{mpsc, oneshot};

pub use session::{negotiate, SessionKind};
pub use str0m::{Candidate, IceCreds};

/// Settings of the WebRTC listener.
#[derive(Debug, Clone)]
pub struct WebRtcConfig {
    /// The shared UDP port (an unspecified IP binds every IPv4 address of the host on that port).
    pub udp_listen: SocketAddr,
    /// Extra addresses to advertise as candidates: a public IP or a host name (NAT, Docker).
    pub additional_hosts: Vec<String>,
    /// The ICE-TCP listener (passive TCP candidates), for networks that block UDP; `None` disables it.
    pub tcp_listen: Option<SocketAddr>,
    /// A session that receives nothing for this long is closed (a viewer that left without DELETE).
    pub ice_timeout: Duration,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig {
            udp_listen: "0.0.0.0:8189".parse().expect("valid"),
            additional_hosts: Vec::new(),
            tcp_listen: Some("0.0.0.0:8189".parse().expect("valid")),
            ice_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed SDP offer: {0}")]
    BadOffer(String),
    #[error("the offer has no codec this server can use: {0}")]
    NoUsableCodec(String),
    #[error("no stream is being published on {0:?}")]
    NotPublished(String),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("no such WebRTC session")]
    NoSession,
    #[error("malformed ICE candidate: {0}")]
    BadCandidate(String),
    #[error("{0}")]
    Internal(String),
}

/// What a successful WHIP/WHEP offer gives back.
#[derive(Debug)]
pub struct Answer {
    /// Unguessable id; the session's resource URL ends with it.
    pub session: String,
    pub sdp: String,
}

/// The WebRTC server: shared UDP port, sessions, and per-path audio converters.
#[derive(Clone)]
pub struct WebRtc {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub cfg: WebRtcConfig,
    pub registry: Registry,
    pub udp: Arc<udp::Udp>,
    pub sessions: Mutex<HashMap<String, mpsc::Sender<session::Control>>>,
    /// WHIP publishers by path, so that a viewer's keyframe request reaches the source.
    pub publishers: Mutex<HashMap<String, mpsc::Sender<session::Control>>>,
    pub feeds: audio::OpusFeeds,
    pub extra_candidates: Vec<SocketAddr>,
}

impl WebRtc {
    /// Binds the UDP port and installs the crypto provider.
    pub async fn start(cfg: WebRtcConfig, registry: Registry) -> std::io::Result<WebRtc> {
        static CRYPTO: std::sync::Once = std::sync::Once::new();
        CRYPTO.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
        let udp = udp::Udp::bind(cfg.udp_listen, cfg.tcp_listen).await?;
        let port = udp.port();
        let mut extra_candidates = Vec::new();
        for host in &cfg.additional_hosts {
            match host.parse::<IpAddr>() {
                Ok(ip) => extra_candidates.push(SocketAddr::new(ip, port)),
                Err(_) => match (host.as_str(), port).to_socket_addrs() {
                    Ok(addrs) => extra_candidates.extend(addrs.filter(|a| a.is_ipv4())),
                    Err(e) => tracing::warn!(%host, "WebRTC additional host does not resolve: {e}"),
                },
            }
        }
        Ok(WebRtc {
            inner: Arc::new(Inner {
                cfg,
                registry,
                udp,
                sessions: Mutex::new(HashMap::new()),
                publishers: Mutex::new(HashMap::new()),
                feeds: audio::OpusFeeds::default(),
                extra_candidates,
            }),
        })
    }

    /// The addresses the UDP port is bound on.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.udp.local_addrs()
    }

    /// The addresses of the ICE-TCP listener.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.inner.udp.tcp_addrs().to_vec()
    }

    /// Answers a WHEP offer: a reader of `path`.
    pub async fn whep(&self, path: &str, offer: &str, remote: Option<SocketAddr>) -> Result<Answer, Error> {
        session::start(self.inner.clone(), SessionKind::Whep, path, offer, remote).await
    }

    /// Answers a WHIP offer: a publisher on `path`.
    pub async fn whip(&self, path: &str, offer: &str, remote: Option<SocketAddr>) -> Result<Answer, Error> {
        session::start(self.inner.clone(), SessionKind::Whip, path, offer, remote).await
    }

    /// Trickle ICE (RFC 8840 fragment with `a=candidate` lines), or an ICE restart (a fragment
    /// with new `a=ice-ufrag`/`a=ice-pwd`), which is answered with our new credentials.
    pub async fn patch(&self, session: &str, fragment: &str) -> Result<Option<String>, Error> {
        let tx = self
            .inner
            .sessions
            .lock()
            .get(session)
            .cloned()
            .ok_or(Error::NoSession)?;
        let (reply, rx) = oneshot::channel();
        tx.send(session::Control::Patch(fragment.to_owned(), reply))
            .await
            .map_err(|_| Error::NoSession)?;
        rx.await.map_err(|_| Error::NoSession)?
    }

    /// Ends a session (HTTP DELETE) and waits (up to 2 s) until it has let go of its path, so a
    /// client may publish again at once. False if there is no such session.
    pub async fn delete(&self, session: &str) -> bool {
        let tx = self.inner.sessions.lock().remove(session);
        let Some(tx) = tx else { return false };
        let (done, rx) = oneshot::channel();
        if tx.send(session::Control::Close(Some(done))).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
        true
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.lock().len()
    }

    /// Paths whose AAC is being converted to Opus right now.
    pub fn audio_converters(&self) -> usize {
        self.inner.feeds.running()
    }

    /// Datagrams dropped on the shared port because no session owned them.
    pub fn dropped_datagrams(&self) -> u64 {
        self.inner
            .udp
            .dropped_unknown
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Whether WebRTC can carry this video codec to browsers.
pub fn video_codec_supported(c: CodecId) -> bool {
    matches!(
        c,
        CodecId::H264 | CodecId::H265 | CodecId::Vp8 | CodecId::Vp9 | CodecId::Av1
    )
}
