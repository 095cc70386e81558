//! One WebRTC session: admission (offer in, answer out, path claimed or reader opened), then a
//! task that owns a `str0m::Rtc`, feeds it the datagrams the shared port routes to it, moves
//! media through [`MediaSender`] (WHEP) or [`Whip`], answers trickle ICE and ICE restarts, and ends on DELETE,
//! peer loss, a kick or shutdown (its core session's cancellation), removing itself from the
//! session map.

use std::sync::Arc;
use std::time::Instant;

use sluice_media::stats::{SessionState, SessionStats};
use sluice_media::{Event as CoreEv, KeyframeRequests, ReadError, Select, SessionInfo};
use str0m::media::MediaKind;
use str0m::net::Receive;
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc};
use tokio::sync::{mpsc, oneshot};

use crate::negotiate::{self, negotiate, SessionKind};
use crate::send::{Media, MediaSender};
use crate::stats::Link;
use crate::udp::{Batch, Datagram, SESSION_QUEUE};
use crate::whip::Whip;
use crate::{Answer, Error, Handle, Inner, SessionError};

pub(crate) enum Control {
    /// End the session; the sender is told once the session has let go of its path.
    Close(Option<oneshot::Sender<()>>),
    /// Trickle ICE or ICE restart; an ICE restart is answered with our new credentials.
    Patch(String, oneshot::Sender<Result<Option<String>, Error>>),
}

enum Role {
    Whep(Box<MediaSender>),
    Whip(Box<Whip>),
}

/// Admits a WHIP or WHEP offer: claims the path (WHIP) or opens a reader (WHEP), answers, and
/// spawns the session's task.
pub(crate) async fn start(
    inner: Arc<Inner>,
    kind: SessionKind,
    path: &str,
    offer: &str,
    remote: Option<std::net::SocketAddr>,
) -> Result<Answer, Error> {
    let info = SessionInfo {
        protocol: "webrtc",
        remote,
    };
    // Validate before claiming the path or opening a reader.
    negotiate::check_offer(offer)?;
    let (role, video_codec) = match kind {
        SessionKind::Whep => {
            let mut reader = inner
                .registry
                .read_with(path, info, Select::OPUS)
                .map_err(|e| match e {
                    ReadError::NoStream { path } => Error::NotPublished(path),
                    e => Error::Read(e),
                })?;
            let stream = match reader.try_recv() {
                Some(Ok(CoreEv::Start(info))) => Some(info),
                _ => None,
            };
            let video = stream.as_ref().and_then(|s| s.video().map(|v| v.codec));
            if let Some(v) = video {
                if !crate::video_codec_supported(v) {
                    reader.stats().set_reason("incompatible codec");
                    return Err(Error::NoUsableCodec(format!(
                        "the stream's video is {v}, which WebRTC cannot carry"
                    )));
                }
            }
            (Role::Whep(Box::new(MediaSender::new(reader, stream))), video)
        }
        SessionKind::Whip => {
            let video = negotiate::whip_video(offer)?;
            let publisher = inner.registry.publish(path, info)?;
            (Role::Whip(Box::new(Whip::new(publisher))), video)
        }
    };
    let now = Instant::now();
    let creds = negotiate::new_creds();
    let candidates = negotiate::local_candidates(
        &inner.udp.local_addrs(),
        inner.udp.tcp_addrs(),
        &inner.extra_candidates,
    );
    let (rtc, answer) = negotiate(kind, video_codec, offer, creds.clone(), candidates.clone(), now)?;

    let id = negotiate::random_hex(16);
    let (dtx, drx) = mpsc::channel(SESSION_QUEUE);
    let (ctx, crx) = mpsc::channel(16);
    let (stats, keyframes) = match &role {
        Role::Whep(w) => (w.reader.stats().clone(), None),
        Role::Whip(w) => (w.publisher.stats().clone(), Some(w.publisher.keyframe_requests())),
    };
    let core_id = stats.id;
    inner.udp.register(&creds.ufrag, dtx.clone());
    inner
        .sessions
        .lock()
        .insert(id.clone(), Handle { ctl: ctx, core_id });
    let session = Session {
        inner: inner.clone(),
        id: id.clone(),
        path: path.to_owned(),
        ufrags: vec![creds.ufrag.clone()],
        dtx,
        candidates,
        rtc,
        link: Link::new(stats.clone(), now),
        stats,
        last_rx: now,
        connected: false,
        remote_ufrag: negotiate::ice_ufrag(offer),
    };
    tracing::info!(
        path,
        session = %id,
        core_session = core_id,
        ?remote,
        "WebRTC {} session starts",
        if kind == SessionKind::Whip { "WHIP publish" } else { "WHEP read" }
    );
    tokio::spawn(session.run(role, keyframes, drx, crx));
    Ok(Answer {
        session: id,
        core_session: core_id,
        sdp: answer,
    })
}

struct Session {
    inner: Arc<Inner>,
    /// The resource id (the end of the session's URL).
    id: String,
    path: String,
    /// Our ICE ufrags (the first, then one per ICE restart): the shared port routes them here.
    ufrags: Vec<String>,
    /// This session's datagram queue, for routing a new ufrag after an ICE restart.
    dtx: mpsc::Sender<Datagram>,
    /// Our candidates, repeated in the answer to an ICE restart.
    candidates: Vec<Candidate>,
    rtc: Rtc,
    /// The core session's counters and cancel token.
    stats: Arc<SessionStats>,
    link: Link,
    last_rx: Instant,
    connected: bool,
    /// The peer's ICE ufrag from the offer: a PATCH with another one is an ICE restart.
    remote_ufrag: Option<String>,
}

impl Session {
    async fn run(
        mut self,
        mut role: Role,
        keyframes: Option<KeyframeRequests>,
        mut drx: mpsc::Receiver<Datagram>,
        mut crx: mpsc::Receiver<Control>,
    ) {
        // One timer for the session's life, moved only when str0m's deadline changes (most
        // rounds it does not): no timer-wheel insert and remove per packet.
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        let mut fired = true;
        let mut closed_ack = None;
        let stats = self.stats.clone();
        let keyframe_request = async || match &keyframes {
            Some(k) => k.recv().await,
            None => std::future::pending().await,
        };
        let reason: SessionError = loop {
            let deadline = match self.drive(&mut role) {
                Ok(d) => d,
                Err(e) => break e,
            };
            if !self.rtc.is_alive() {
                break SessionError::PeerClosed;
            }
            let ice_deadline = self.last_rx + self.inner.cfg.ice_timeout;
            let wake = tokio::time::Instant::from_std(deadline.min(ice_deadline));
            if fired || sleep.deadline() != wake {
                sleep.as_mut().reset(wake);
                fired = false;
            }
            let connected = self.connected;
            tokio::select! {
                _ = stats.cancelled() => {
                    let r = stats.reason();
                    break SessionError::Ended(if r.is_empty() { "asked to end".into() } else { r });
                }
                c = crx.recv() => match c {
                    None => break SessionError::Deleted,
                    Some(Control::Close(done)) => {
                        closed_ack = done;
                        break SessionError::Deleted;
                    }
                    Some(Control::Patch(frag, reply)) => {
                        let _ = reply.send(self.patch(&frag));
                    }
                },
                _ = keyframe_request() => {
                    if let Role::Whip(w) = &mut role {
                        stats.keyframe_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        w.request_keyframe(&mut self.rtc, true);
                    }
                }
                d = drx.recv() => {
                    let Some(d) = d else { break SessionError::PortClosed };
                    self.receive(d);
                    // Drain what else arrived before polling the outputs once.
                    for _ in 0..64 {
                        match drx.try_recv() {
                            Ok(d) => self.receive(d),
                            Err(_) => break,
                        }
                    }
                }
                m = next_media(&mut role), if connected => {
                    if let Role::Whep(w) = &mut role {
                        if let Err(e) = w.media(&mut self.rtc, m, &self.path) {
                            break e;
                        }
                        // What was written goes out in this round (see `MediaSender::media`).
                        if let Err(e) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
                            break e.into();
                        }
                    }
                }
                _ = &mut sleep => {
                    fired = true;
                    let now = Instant::now();
                    if now >= ice_deadline {
                        break SessionError::IceTimeout(self.inner.cfg.ice_timeout);
                    }
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                        break e.into();
                    }
                }
            }
        };
        self.rtc.disconnect();
        for ufrag in &self.ufrags {
            self.inner.udp.unregister(ufrag);
        }
        self.inner.sessions.lock().remove(&self.id);
        self.stats.set_state(SessionState::Closing);
        if self.stats.reason().is_empty() {
            self.stats.set_reason(reason.to_string());
        }
        self.link.set_state("closed");
        self.link.publish();
        let l = &self.link.link;
        tracing::info!(
            path = %self.path,
            session = %self.id,
            core_session = self.stats.id,
            blame = ?reason.blame(),
            rtt_ms = l.rtt_ms,
            packets_sent = l.packets_sent,
            packets_received = l.packets_received,
            packets_lost = l.packets_lost,
            nacks_received = l.naks_received,
            plis = l.plis,
            jitter_ms = l.jitter_ms,
            pair = %l.candidate_pair,
            "WebRTC session closed: {reason}"
        );
        // The publisher (WHIP) or reader (WHEP) lets go of the path here.
        drop(role);
        if let Some(done) = closed_ack {
            let _ = done.send(());
        }
    }

    fn receive(&mut self, d: Datagram) {
        self.last_rx = Instant::now();
        let Ok(contents) = d.data[..].try_into() else {
            // Not STUN, DTLS, RTP or RTCP after all: str0m's own check.
            tracing::debug!(session = %self.id, "dropping an unrecognised datagram");
            return;
        };
        let input = Input::Receive(
            d.at,
            Receive {
                proto: d.proto,
                source: d.source,
                destination: d.destination,
                contents,
            },
        );
        if let Err(e) = self.rtc.handle_input(input) {
            // A bad packet (DTLS garbage, a bad SRTP tag) is dropped; str0m keeps the session.
            tracing::debug!(session = %self.id, "WebRTC input rejected: {e}");
        }
    }

    /// Trickle ICE (`a=candidate` lines) or an ICE restart (a new `a=ice-ufrag` with its
    /// `a=ice-pwd`), answered with our new credentials.
    fn patch(&mut self, frag: &str) -> Result<Option<String>, Error> {
        let mut answer = None;
        if let Some(ufrag) = negotiate::ice_ufrag(frag).filter(|u| Some(u) != self.remote_ufrag.as_ref()) {
            // ICE restart (RFC 9725 section 4.4): new credentials both ways; the media flows
            // on over the old pair until the new checks nominate a new one.
            let pass = negotiate::attr(frag, "a=ice-pwd:").ok_or_else(|| {
                Error::BadCandidate("an ICE restart needs a=ice-pwd with the new a=ice-ufrag".into())
            })?;
            let local = negotiate::new_creds();
            let mut api = self.rtc.direct_api();
            api.set_remote_ice_credentials(IceCreds {
                ufrag: ufrag.clone(),
                pass,
            });
            api.set_local_ice_credentials(local.clone());
            self.inner.udp.register(&local.ufrag, self.dtx.clone());
            self.ufrags.push(local.ufrag.clone());
            self.remote_ufrag = Some(ufrag);
            tracing::info!(path = %self.path, session = %self.id, "WebRTC ICE restart");
            answer = Some(negotiate::ice_restart_answer(&local, &self.candidates));
        }
        for line in frag.lines() {
            let line = line.trim();
            if let Some(c) = line.strip_prefix("a=candidate:") {
                let c = Candidate::from_sdp_string(&format!("candidate:{c}"))
                    .map_err(|e| Error::BadCandidate(format!("{line}: {e}")))?;
                self.rtc.add_remote_candidate(c);
            }
        }
        Ok(answer)
    }

    /// Polls str0m until it wants to be woken; returns when.
    fn drive(&mut self, role: &mut Role) -> Result<Instant, SessionError> {
        // Everything str0m wants sent goes out in one batch (GSO per run to one peer); only if
        // the socket buffer is full does the rest wait in a task, so the loop never blocks.
        Batch::with(|batch| {
            let deadline = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => {
                        self.stats.add_bytes_out(t.contents.len() as u64);
                        batch.push(t.proto, t.source, t.destination, &t.contents);
                    }
                    Ok(Output::Event(e)) => self.event(role, e)?,
                    Err(e) => return Err(e.into()),
                }
            };
            if !batch.is_empty() {
                let left = self.inner.udp.send_all(batch);
                if !left.is_empty() {
                    let udp = self.inner.udp.clone();
                    tokio::spawn(async move {
                        for o in left {
                            udp.send(o.proto, o.source, o.destination, &o.data).await;
                        }
                    });
                }
            }
            Ok(deadline)
        })
    }

    fn event(&mut self, role: &mut Role, e: Event) -> Result<(), SessionError> {
        if let (Event::MediaEgressStats(s), Role::Whep(w)) = (&e, &mut *role) {
            if Some(s.mid) == w.video_mid {
                w.tune_resends(&mut self.rtc, s.rtt, s.loss);
            }
        }
        if self.link.event(&e) {
            return Ok(());
        }
        match e {
            Event::Connected => {
                self.connected = true;
                self.link.set_state("connected");
                tracing::info!(path = %self.path, session = %self.id, "WebRTC peer connected (DTLS up)");
                if let Role::Whip(w) = role {
                    w.request_keyframe(&mut self.rtc, false);
                }
            }
            Event::IceConnectionStateChange(s) => {
                tracing::debug!(session = %self.id, "ICE state {s:?}");
                if s == IceConnectionState::Disconnected {
                    // Our side is ICE-lite: the peer's connectivity checks keep the pair alive.
                    // Some agents stop sending them once connected and keep the path alive with
                    // binding indications only (libnice, as GStreamer's webrtcbin runs it): the
                    // pair lapses after about 15 s while media still flows. A publisher is only
                    // received from, so it goes on while its datagrams arrive (the ICE timeout
                    // on the last datagram ends it when they stop); a viewer has no path left
                    // to send on, so it ends.
                    if !matches!(role, Role::Whip(_)) {
                        return Err(SessionError::IceDisconnected);
                    }
                    tracing::info!(path = %self.path, session = %self.id,
                        "the publisher's ICE agent stopped its connectivity checks; the session goes on while its media arrives");
                    return Ok(());
                }
                if self.link.link.state != "connected" {
                    self.link.set_state(match s {
                        IceConnectionState::Checking => "checking",
                        IceConnectionState::Connected | IceConnectionState::Completed => "ice-connected",
                        _ => "new",
                    });
                }
            }
            Event::MediaAdded(m) => match role {
                Role::Whep(w) => match m.kind {
                    MediaKind::Video if w.video_mid.is_none() => w.video_mid = Some(m.mid),
                    MediaKind::Audio if w.audio_mid.is_none() => w.audio_mid = Some(m.mid),
                    _ => {}
                },
                Role::Whip(w) => {
                    if m.kind == MediaKind::Video && w.video_mid.is_none() {
                        w.video_mid = Some(m.mid);
                    }
                }
            },
            Event::MediaData(d) => {
                if let Role::Whip(w) = role {
                    self.stats.add_bytes_in(d.data.len() as u64);
                    w.media(&mut self.rtc, d, &self.path);
                }
            }
            Event::KeyframeRequest(r) => {
                self.link.link.plis += 1;
                if let Role::Whep(w) = role {
                    w.keyframe_request(r.mid);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

async fn next_media(role: &mut Role) -> Media {
    match role {
        Role::Whep(w) => w.next().await,
        Role::Whip(_) => std::future::pending().await,
    }
}
