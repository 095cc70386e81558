//! WebRTC for Sluice: WHIP ingest and WHEP playback on str0m, bridged to the media core.
//!
//! str0m is sans-IO, so this crate owns the I/O: one UDP port for every session (`udp`), and one
//! tokio task per session driving its `str0m::Rtc` (`session`). The server answers as ICE-lite
//! with host candidates on the shared port (plus configured extra addresses, for NAT and
//! containers), and as the DTLS server. The HTTP side of WHIP/WHEP (routes, CORS, auth) is the
//! server crate's; this crate takes an SDP offer and gives back an answer and a session id.
//!
//! Nothing travels beside the core: a WHEP session is a reader of its path that takes Opus
//! ([`Select::OPUS`](sluice_media::Select::OPUS): the publisher's own, or the core's derived
//! track, converted once per path), and its viewer's keyframe requests go through the path to
//! whoever publishes now. A WHIP session publishes what the browser sends (video and Opus); the
//! core derives AAC for the readers that need it, and hands the WHIP session the path's keyframe
//! requests, which it turns into PLIs.
//!
//! The crate also pushes: [`WhipPush`] publishes a path to another server's WHIP endpoint (the
//! offerer, with full ICE and its own UDP socket), sending as a WHEP session does.
//!
//! Modules: `negotiate` (SDP offer/answer, pure), `session` (the task loop, admission, ICE
//! restart), `send` (sending a path's frames: WHEP and the WHIP client), `whip` (receiving),
//! `whip_client` (pushing to a WHIP server), `rtp` (per-frame payload forms), `stats` (link
//! statistics), `error` (errors sorted by blame), `udp` (the shared port), [`stun`].

mod error;
mod negotiate;
mod rtp;
mod send;
mod session;
mod stats;
pub mod stun;
mod udp;
mod whip;
mod whip_client;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sluice_media::{CodecId, Registry};
use tokio::sync::{mpsc, oneshot};

pub use error::{Blame, Error, SessionError};
pub use negotiate::{negotiate, SessionKind};
pub use str0m::{Candidate, IceCreds};
pub use whip_client::{accept_answer_for_fuzzing, PushProgress, WhipPush};

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

/// What a successful WHIP/WHEP offer gives back.
#[derive(Debug)]
pub struct Answer {
    /// Unguessable id; the session's resource URL ends with it.
    pub session: String,
    /// The session's id in the core's session registry (the API's id, for listing and kicks).
    pub core_session: u64,
    pub sdp: String,
}

/// A live session, as the HTTP side reaches it.
pub(crate) struct Handle {
    pub ctl: mpsc::Sender<session::Control>,
    /// Its id in the core's session registry.
    pub core_id: u64,
}

/// The WebRTC server: the shared UDP port and its sessions.
#[derive(Clone)]
pub struct WebRtc {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub cfg: WebRtcConfig,
    pub registry: Registry,
    pub udp: Arc<udp::Udp>,
    /// Live sessions by resource id; each removes itself when it ends.
    pub sessions: Mutex<HashMap<String, Handle>>,
    pub extra_candidates: Vec<SocketAddr>,
}

impl WebRtc {
    /// Binds the UDP port and installs the crypto provider.
    pub async fn start(cfg: WebRtcConfig, registry: Registry) -> std::io::Result<WebRtc> {
        install_crypto();
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
            .map(|h| h.ctl.clone())
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
        let tx = self.inner.sessions.lock().remove(session).map(|h| h.ctl);
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

    /// The core session id (the API's) of the session with this resource id.
    pub fn core_session_id(&self, session: &str) -> Option<u64> {
        self.inner.sessions.lock().get(session).map(|h| h.core_id)
    }

    /// Every live session: (resource id, core session id).
    pub fn sessions(&self) -> Vec<(String, u64)> {
        let s = self.inner.sessions.lock();
        s.iter().map(|(id, h)| (id.clone(), h.core_id)).collect()
    }

    /// Datagrams dropped on the shared port because no session owned them.
    pub fn dropped_datagrams(&self) -> u64 {
        self.inner
            .udp
            .dropped_unknown
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Installs str0m's crypto provider (DTLS, SRTP) once per process.
pub(crate) fn install_crypto() {
    static CRYPTO: std::sync::Once = std::sync::Once::new();
    CRYPTO.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// Whether WebRTC can carry this video codec to browsers.
pub fn video_codec_supported(c: CodecId) -> bool {
    matches!(
        c,
        CodecId::H264 | CodecId::H265 | CodecId::Vp8 | CodecId::Vp9 | CodecId::Av1
    )
}
