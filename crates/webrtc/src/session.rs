//! One WebRTC session: a task that owns a `str0m::Rtc`, feeds it the datagrams the shared port
//! routes to it, and moves media between it and the core (WHEP: path → browser; WHIP: browser →
//! path).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use sluice_codec::nal::{annexb_to_avcc, avcc_to_annexb, iter_annexb, NalCodec};
use sluice_media::stats::{LinkStats, SessionStats};
use sluice_media::{
    CodecId, Event as CoreEv, Frame, Publisher, Reader, SessionInfo, StreamInfo, Track, WireForm,
};
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{Frequency, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Receive, TcpType};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::unversioned::{H264Packetizer, Packetizer};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::audio::{FeedHandle, OpusPacket, OpusToAac, OPUS_RATE};
use crate::udp::{Batch, Datagram, SESSION_QUEUE};
use crate::{Answer, Error, Inner};

/// Whether a session publishes (WHIP) or plays (WHEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Whip,
    Whep,
}

pub(crate) enum Control {
    /// End the session; the sender is told once the session has let go of its path.
    Close(Option<oneshot::Sender<()>>),
    /// Trickle ICE or ICE restart; an ICE restart is answered with our new credentials.
    Patch(String, oneshot::Sender<Result<Option<String>, Error>>),
    /// A viewer of this publisher's path asked for a keyframe.
    RequestKeyframe,
}

/// Ticks of the core's 90 kHz clock added to RTP times so they never go below zero.
const RTP_ORIGIN: i64 = 90_000 * 100;

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// Builds the `Rtc` for a session and answers `offer`: the whole SDP path, without I/O (also
/// what the fuzz target drives). `video` is the stream's codec for WHEP, `None` for WHIP.
pub fn negotiate(
    kind: SessionKind,
    video: Option<CodecId>,
    offer: &str,
    creds: IceCreds,
    candidates: Vec<Candidate>,
    now: Instant,
) -> Result<(Rtc, String), Error> {
    let sdp = SdpOffer::from_sdp_string(offer).map_err(|e| Error::BadOffer(e.to_string()))?;
    let builder = Rtc::builder()
        .set_ice_lite(true)
        .set_local_ice_credentials(creds)
        .set_stats_interval(Some(Duration::from_secs(1)))
        // WHEP of H.264: we packetize once per frame for every viewer and write RTP directly.
        .set_rtp_mode(kind == SessionKind::Whep && matches!(video, None | Some(CodecId::H264)))
        .clear_codecs()
        .enable_opus(true, false);
    let builder = match (kind, video) {
        (SessionKind::Whep, Some(CodecId::H265)) => builder.enable_h265(true),
        (SessionKind::Whep, Some(CodecId::Vp8)) => builder.enable_vp8(true),
        (SessionKind::Whep, Some(CodecId::Vp9)) => builder.enable_vp9(true),
        (SessionKind::Whep, Some(CodecId::Av1)) => builder.enable_av1(true),
        // WHIP: H.264 when offered (every output carries it), else VP9 or VP8.
        (SessionKind::Whip, Some(CodecId::Vp9 | CodecId::Vp8)) => builder.enable_vp9(true).enable_vp8(true),
        _ => builder.enable_h264(true),
    };
    let mut rtc = builder.build(now);
    for c in candidates {
        rtc.add_local_candidate(c);
    }
    let answer = rtc
        .sdp_api()
        .accept_offer(sdp)
        .map_err(|e| Error::BadOffer(e.to_string()))?
        .to_sdp_string();
    if !answer.contains("a=rtpmap:") {
        return Err(Error::NoUsableCodec(match kind {
            SessionKind::Whep => "the offer accepts none of the stream's codecs (or Opus)".into(),
            SessionKind::Whip => "the offer sends neither H.264 video nor Opus audio".into(),
        }));
    }
    Ok((rtc, answer))
}

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
    let creds = IceCreds {
        ufrag: random_hex(8),
        pass: random_hex(16),
    };
    // Validate before claiming the path or opening a reader.
    SdpOffer::from_sdp_string(offer).map_err(|e| Error::BadOffer(e.to_string()))?;
    let mut video_codec = None;
    let role = match kind {
        SessionKind::Whep => {
            let mut reader = inner.registry.read(path, info).map_err(|e| match e {
                sluice_media::ReadError::NoStream { path } => Error::NotPublished(path),
                e => Error::Read(e),
            })?;
            let stream = match reader.try_recv() {
                Some(Ok(CoreEv::Start(info))) => Some(info),
                _ => None,
            };
            let video = stream.as_ref().and_then(|s| s.video().cloned());
            video_codec = video.as_ref().map(|v| v.codec);
            if let Some(v) = &video {
                if !crate::video_codec_supported(v.codec) {
                    return Err(Error::NoUsableCodec(format!(
                        "the stream's video is {}, which WebRTC cannot carry",
                        v.codec
                    )));
                }
            }
            let audio = inner.feeds.subscribe(&inner.registry, path);
            Role::Whep(Box::new(Whep {
                reader,
                stream,
                audio,
                video_mid: None,
                audio_mid: None,
                video_pt: None,
                audio_pt: None,
                clock: None,
                nal: None,
                started: false,
                pending: Default::default(),
                rtp_mode: matches!(video_codec, None | Some(CodecId::H264)),
                video_seq: rand::rng().random_range(0..30_000),
                audio_seq: rand::rng().random_range(0..30_000),
                publisher_ctl: inner.publishers.lock().get(path).cloned(),
            }))
        }
        SessionKind::Whip => {
            if offer.contains("m=video") && !offer.contains("H264/90000") {
                if offer.contains("VP9/90000") || offer.contains("VP8/90000") {
                    video_codec = Some(CodecId::Vp9);
                } else {
                    return Err(Error::NoUsableCodec(
                        "WHIP video must be H.264, VP9 or VP8 (AV1 ingest is not supported yet)".into(),
                    ));
                }
            }
            let publisher = inner.registry.publish(path, info)?;
            Role::Whip(Box::new(Whip {
                publisher,
                direct_opus: inner.feeds.publish_direct(path),
                to_aac: None,
                video_mid: None,
                sps: None,
                pps: None,
                vpx_track: None,
                started: false,
                anchor: None,
                tracks: [None, None],
                last_keyframe_request: None,
                dropped_before_start: 0,
            }))
        }
    };
    let now = Instant::now();
    let mut candidates = Vec::new();
    for addr in inner.udp.local_addrs() {
        candidates.extend(Candidate::host(addr, "udp").ok());
    }
    for addr in inner.udp.tcp_addrs() {
        candidates.extend(
            Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build()
                .ok(),
        );
    }
    let base = inner
        .udp
        .local_addrs()
        .into_iter()
        .find(|a| !a.ip().is_loopback());
    for addr in &inner.extra_candidates {
        let c = match base {
            Some(base) if base.ip() != addr.ip() => Candidate::server_reflexive(*addr, base, "udp"),
            _ => Candidate::host(*addr, "udp"),
        };
        candidates.extend(c.ok());
    }
    let (rtc, answer) = negotiate(kind, video_codec, offer, creds.clone(), candidates.clone(), now)?;

    let id = random_hex(16);
    let (dtx, drx) = mpsc::channel(SESSION_QUEUE);
    let (ctx, crx) = mpsc::channel(16);
    inner.udp.register(&creds.ufrag, dtx.clone());
    inner.sessions.lock().insert(id.clone(), ctx.clone());
    let stats = match &role {
        Role::Whep(w) => w.reader.stats().clone(),
        Role::Whip(w) => w.publisher.stats().clone(),
    };
    if kind == SessionKind::Whip {
        inner.publishers.lock().insert(path.to_owned(), ctx.clone());
    }
    let session = Session {
        inner: inner.clone(),
        id: id.clone(),
        path: path.to_owned(),
        ufrags: vec![creds.ufrag.clone()],
        dtx: dtx.clone(),
        candidates: candidates.clone(),
        kind,
        rtc,
        stats,
        link: LinkStats {
            state: "new",
            ..Default::default()
        },
        last_rx: now,
        connected: false,
        ctl: ctx,
        remote_ufrag: offer
            .lines()
            .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
            .map(str::to_owned),
        last_stats: (now, 0, 0),
        batch: Batch::default(),
    };
    tracing::info!(
        path,
        session = %id,
        ?remote,
        "WebRTC {} session starts",
        if kind == SessionKind::Whip { "WHIP publish" } else { "WHEP read" }
    );
    tokio::spawn(session.run(role, drx, crx));
    Ok(Answer {
        session: id,
        sdp: answer,
    })
}

struct Session {
    inner: Arc<Inner>,
    id: String,
    path: String,
    /// Our ICE ufrags (the first, then one per ICE restart): the shared port routes them here.
    ufrags: Vec<String>,
    /// This session's datagram queue, for routing a new ufrag after an ICE restart.
    dtx: mpsc::Sender<Datagram>,
    /// Our candidates, repeated in the answer to an ICE restart.
    candidates: Vec<Candidate>,
    kind: SessionKind,
    rtc: Rtc,
    stats: Arc<SessionStats>,
    link: LinkStats,
    last_rx: Instant,
    connected: bool,
    /// This session's control channel (to tell our entry in the publishers map from a newer one).
    ctl: mpsc::Sender<Control>,
    /// The peer's ICE ufrag from the offer: a PATCH with another one is an ICE restart.
    remote_ufrag: Option<String>,
    /// (when, peer bytes sent, peer bytes received) at the previous stats event.
    last_stats: (Instant, u64, u64),
    /// Packets of the current round, reused from round to round.
    batch: Batch,
}

enum Role {
    Whep(Box<Whep>),
    Whip(Box<Whip>),
}

/// What the WHEP side waits for besides the network.
enum Media {
    Core(Result<CoreEv, sluice_media::ReadError>),
    Audio(Result<Arc<OpusPacket>, broadcast::error::RecvError>),
    /// A frame of the GOP cache, with its squeezed timestamp.
    Backlog(Arc<Frame>, i64),
}

struct Whep {
    reader: Reader,
    stream: Option<Arc<StreamInfo>>,
    audio: Option<FeedHandle>,
    video_mid: Option<Mid>,
    audio_mid: Option<Mid>,
    video_pt: Option<Pt>,
    audio_pt: Option<Pt>,
    /// (pts of the live edge when the peer connected, that instant): RTP times and wallclocks
    /// derive from it.
    clock: Option<(i64, Instant)>,
    /// H.264/H.265: how the stream's frames become Annex B (codec, parameter sets, NAL length
    /// size), parsed once per stream rather than per frame.
    nal: Option<NalForm>,
    started: bool,
    /// The GOP cache, taken at once when the peer connects, to be sent squeezed in time.
    pending: std::collections::VecDeque<(Arc<Frame>, i64)>,
    publisher_ctl: Option<mpsc::Sender<Control>>,
    /// H.264 and Opus are written as RTP packets packetized once per frame (str0m's RTP mode);
    /// other codecs go through str0m's per-session packetizers.
    rtp_mode: bool,
    video_seq: u64,
    audio_seq: u64,
}

struct Whip {
    publisher: Publisher,
    /// The original Opus, straight to this path's WebRTC readers (no AAC round trip).
    direct_opus: crate::audio::DirectOpus,
    to_aac: Option<OpusToAac>,
    video_mid: Option<Mid>,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    /// VP8/VP9: the video track, known from the first keyframe.
    vpx_track: Option<Track>,
    started: bool,
    /// Session clock origin: the arrival of the first media packet.
    anchor: Option<Instant>,
    /// Per track (video, audio): first RTP time (in 90 kHz ticks) and its arrival in core ticks.
    tracks: [Option<(i64, i64)>; 2],
    last_keyframe_request: Option<Instant>,
    dropped_before_start: u64,
}

impl Session {
    async fn run(
        mut self,
        mut role: Role,
        mut drx: mpsc::Receiver<Datagram>,
        mut crx: mpsc::Receiver<Control>,
    ) {
        // One timer for the session's life, moved only when str0m's deadline changes (most
        // rounds it does not): no timer-wheel insert and remove per packet.
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        let mut fired = true;
        let mut closed_ack = None;
        let reason = loop {
            let deadline = match self.drive(&mut role) {
                Ok(d) => d,
                Err(e) => break e,
            };
            if !self.rtc.is_alive() {
                break "the peer closed the connection".to_owned();
            }
            let ice_deadline = self.last_rx + self.inner.cfg.ice_timeout;
            let wake = tokio::time::Instant::from_std(deadline.min(ice_deadline));
            if fired || sleep.deadline() != wake {
                sleep.as_mut().reset(wake);
                fired = false;
            }
            let connected = self.connected;
            tokio::select! {
                c = crx.recv() => match c {
                    None => break "ended by DELETE".to_owned(),
                    Some(Control::Close(done)) => {
                        closed_ack = done;
                        break "ended by DELETE".to_owned();
                    }
                    Some(Control::Patch(frag, reply)) => {
                        let _ = reply.send(self.patch(&frag));
                    }
                    Some(Control::RequestKeyframe) => {
                        if let Role::Whip(w) = &mut role {
                            w.request_keyframe(&mut self.rtc, true);
                        }
                    }
                },
                d = drx.recv() => {
                    let Some(d) = d else { break "the UDP port closed".to_owned() };
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
                    }
                }
                _ = &mut sleep => {
                    fired = true;
                    let now = Instant::now();
                    if now >= ice_deadline {
                        break format!("no packet from the peer for {:?} (ICE timeout)", self.inner.cfg.ice_timeout);
                    }
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                        break format!("WebRTC error: {e}");
                    }
                }
            }
        };
        self.rtc.disconnect();
        for ufrag in &self.ufrags {
            self.inner.udp.unregister(ufrag);
        }
        self.inner.sessions.lock().remove(&self.id);
        if self.kind == SessionKind::Whip {
            // Only remove our own entry: a new publisher may already hold the path.
            let mut pubs = self.inner.publishers.lock();
            if pubs.get(&self.path).is_some_and(|tx| tx.same_channel(&self.ctl)) {
                pubs.remove(&self.path);
            }
        }
        self.link.state = "closed";
        *self.stats.link.lock() = Some(self.link.clone());
        let l = &self.link;
        tracing::info!(
            path = %self.path,
            session = %self.id,
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

    fn patch(&mut self, frag: &str) -> Result<Option<String>, Error> {
        let attr = |name: &str| {
            frag.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(str::to_owned)
        };
        let mut answer = None;
        if let Some(ufrag) = attr("a=ice-ufrag:").filter(|u| Some(u) != self.remote_ufrag.as_ref()) {
            // ICE restart (RFC 9725 section 4.4): new credentials both ways; the media flows
            // on over the old pair until the new checks nominate a new one.
            let pass = attr("a=ice-pwd:").ok_or_else(|| {
                Error::BadCandidate("an ICE restart needs a=ice-pwd with the new a=ice-ufrag".into())
            })?;
            let local = IceCreds {
                ufrag: random_hex(8),
                pass: random_hex(16),
            };
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
            let mut a = format!(
                "a=ice-lite\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
                local.ufrag, local.pass
            );
            for c in &self.candidates {
                a.push_str(&format!("a={}\r\n", c.to_sdp_string()));
            }
            a.push_str("a=end-of-candidates\r\n");
            answer = Some(a);
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
    fn drive(&mut self, role: &mut Role) -> Result<Instant, String> {
        // Everything str0m wants sent goes out in one batch (GSO per run to one peer); only if
        // the socket buffer is full does the rest wait in a task, so the loop never blocks.
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        let deadline = loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    self.stats.add_bytes_out(t.contents.len() as u64);
                    batch.push(t.proto, t.source, t.destination, &t.contents);
                }
                Ok(Output::Event(e)) => self.event(role, e)?,
                Err(e) => return Err(format!("WebRTC error: {e}")),
            }
        };
        if !batch.is_empty() {
            let left = self.inner.udp.send_all(&batch);
            if !left.is_empty() {
                let udp = self.inner.udp.clone();
                tokio::spawn(async move {
                    for o in left {
                        udp.send(o.proto, o.source, o.destination, &o.data).await;
                    }
                });
            }
        }
        self.batch = batch;
        Ok(deadline)
    }

    fn event(&mut self, role: &mut Role, e: Event) -> Result<(), String> {
        match e {
            Event::Connected => {
                self.connected = true;
                self.link.state = "connected";
                tracing::info!(path = %self.path, session = %self.id, "WebRTC peer connected (DTLS up)");
                if let Role::Whip(w) = role {
                    w.request_keyframe(&mut self.rtc, false);
                }
            }
            Event::IceConnectionStateChange(s) => {
                tracing::debug!(session = %self.id, "ICE state {s:?}");
                if s == IceConnectionState::Disconnected {
                    return Err("ICE disconnected".into());
                }
                if self.link.state != "connected" {
                    self.link.state = match s {
                        IceConnectionState::Checking => "checking",
                        IceConnectionState::Connected | IceConnectionState::Completed => "ice-connected",
                        _ => "new",
                    };
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
                    w.media(&mut self.rtc, d, &self.path)?;
                }
            }
            Event::KeyframeRequest(r) => {
                self.link.plis += 1;
                if let Role::Whep(w) = role {
                    if Some(r.mid) == w.video_mid {
                        if let Some(tx) = &w.publisher_ctl {
                            let _ = tx.try_send(Control::RequestKeyframe);
                        }
                    }
                }
            }
            Event::PeerStats(s) => {
                if let Some(rtt) = s.rtt {
                    self.link.rtt_ms = rtt.as_secs_f64() * 1000.0;
                }
                if let Some(p) = &s.selected_candidate_pair {
                    self.link.candidate_pair = format!("{:?} {:?} -> {:?}", p.protocol, p.local, p.remote);
                }
                let secs = s
                    .timestamp
                    .saturating_duration_since(self.last_stats.0)
                    .as_secs_f64()
                    .max(0.001);
                let (tx, rx) = (s.peer_bytes_tx, s.peer_bytes_rx);
                self.link.send_mbps = tx.saturating_sub(self.last_stats.1) as f64 * 8.0 / 1e6 / secs;
                self.link.recv_mbps = rx.saturating_sub(self.last_stats.2) as f64 * 8.0 / 1e6 / secs;
                self.last_stats = (s.timestamp, tx, rx);
                *self.stats.link.lock() = Some(self.link.clone());
            }
            Event::MediaEgressStats(s) => {
                self.link.packets_sent = s.packets;
                self.link.naks_received = s.nacks;
                self.link.plis = s.plis + s.firs;
                if let Some(r) = &s.remote {
                    self.link.jitter_ms = r.jitter as f64 / 90.0;
                    self.link.packets_lost = r.packets_lost;
                }
            }
            Event::MediaIngressStats(s) => {
                self.link.packets_received = s.packets;
                self.link.naks_sent = s.nacks;
                self.link.jitter_ms = s.jitter as f64 / 90.0;
                if let Some(l) = s.loss {
                    self.link.packets_lost = (l as f64 * s.packets as f64) as u64;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

async fn next_media(role: &mut Role) -> Media {
    match role {
        Role::Whep(w) => {
            // The squeezed GOP cache goes first, one frame per round, so that str0m's send
            // buffer is drained between frames however big the GOP is.
            if let Some((f, pts)) = w.pending.pop_front() {
                return Media::Backlog(f, pts);
            }
            match &mut w.audio {
                Some(a) => tokio::select! {
                    biased;
                    ev = w.reader.recv() => Media::Core(ev),
                    p = a.rx.recv() => Media::Audio(p),
                },
                None => Media::Core(w.reader.recv().await),
            }
        }
        Role::Whip(_) => std::future::pending().await,
    }
}

impl Whep {
    fn media(&mut self, rtc: &mut Rtc, m: Media, path: &str) -> Result<(), String> {
        if !self.started {
            self.started = true;
            self.choose_pts(rtc);
            // Take the GOP cache (and whatever queued while ICE and DTLS ran) in one go: it goes
            // out first, a frame per round, with timestamps squeezed just before the live edge,
            // so the picture comes now and the browser's jitter buffer does not take the backlog
            // as delay.
            let mut backlog = Vec::new();
            let first = m;
            let mut push = |ev: CoreEv, this: &mut Self| match ev {
                CoreEv::Start(info) => this.stream = Some(info),
                CoreEv::Frame(f) => backlog.push(f),
            };
            match first {
                Media::Core(Ok(ev)) => push(ev, self),
                Media::Core(Err(e)) => return Err(format!("stream ended: {e}")),
                Media::Audio(_) | Media::Backlog(..) => {}
            }
            while let Some(ev) = self.reader.try_recv() {
                match ev {
                    Ok(ev) => push(ev, self),
                    Err(e) => return Err(format!("stream ended: {e}")),
                }
            }
            let last = backlog.last().map(|f| f.pts);
            let n = backlog.len() as i64;
            // The newest frame is "now": the squeezed backlog lies just before it.
            if let Some(last) = last {
                self.clock = Some((last, Instant::now()));
            }
            tracing::debug!(
                path,
                frames = n,
                first_pts = backlog.first().map(|f| f.pts),
                last_pts = last,
                "WHEP: sending the GOP cache"
            );
            for (i, f) in backlog.into_iter().enumerate() {
                // 1 ms apart, ending at the newest frame's own time.
                let squeezed = last.unwrap_or(f.pts) - (n - 1 - i as i64) * 90;
                self.pending.push_back((f, squeezed));
            }
            if let Some(a) = &mut self.audio {
                // Audio starts live.
                *a = a.resubscribe();
            }
            return Ok(());
        }
        match m {
            Media::Core(Ok(CoreEv::Start(info))) => {
                if let Some(v) = info.video() {
                    let cur = self.stream.as_ref().and_then(|s| s.video()).map(|t| t.codec);
                    if cur.is_some() && cur != Some(v.codec) {
                        return Err(format!("the stream's video codec changed to {}", v.codec));
                    }
                }
                self.stream = Some(info);
            }
            Media::Core(Ok(CoreEv::Frame(f))) => self.send_frame(rtc, &f, f.pts, path)?,
            Media::Backlog(f, pts) => self.send_frame(rtc, &f, pts, path)?,
            Media::Core(Err(e)) => return Err(format!("stream ended: {e}")),
            Media::Audio(Ok(p)) => self.send_audio(rtc, &p),
            Media::Audio(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Media::Audio(Err(broadcast::error::RecvError::Closed)) => self.audio = None,
        }
        Ok(())
    }

    fn choose_pts(&mut self, rtc: &mut Rtc) {
        let want = self.stream.as_ref().and_then(|s| s.video()).map(|t| t.codec);
        // The negotiated payload types of a media line (what its writer would list; the
        // writer itself is not available in RTP mode).
        let params = |rtc: &Rtc, mid: Mid| -> Vec<str0m::format::PayloadParams> {
            let Some(m) = rtc.media(mid) else {
                return Vec::new();
            };
            rtc.codec_config()
                .params()
                .iter()
                .filter(|p| m.remote_pts().contains(&p.pt()))
                .cloned()
                .collect()
        };
        if let Some(mid) = self.video_mid {
            let mut best: Option<(u8, Pt)> = None;
            for p in params(rtc, mid) {
                let spec = p.spec();
                let ok = match want {
                    Some(CodecId::H265) => spec.codec == Codec::H265,
                    Some(CodecId::Vp8) => spec.codec == Codec::Vp8,
                    Some(CodecId::Vp9) => spec.codec == Codec::Vp9,
                    Some(CodecId::Av1) => spec.codec == Codec::Av1,
                    _ => spec.codec == Codec::H264,
                };
                if !ok {
                    continue;
                }
                // Prefer H.264 packetization-mode 1 (FU-A), which every browser decodes.
                let score = match spec.format.packetization_mode {
                    Some(1) => 2,
                    _ => 1,
                };
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, p.pt()));
                }
            }
            self.video_pt = best.map(|(_, pt)| pt);
        }
        if let Some(mid) = self.audio_mid {
            self.audio_pt = params(rtc, mid)
                .iter()
                .find(|p| p.spec().codec == Codec::Opus)
                .map(|p| p.pt());
        }
    }

    fn wallclock(&mut self, pts: i64) -> Instant {
        let (p0, t0) = *self.clock.get_or_insert((pts, Instant::now()));
        let d = pts - p0;
        if d >= 0 {
            t0 + Duration::from_micros((d as u64) * 100 / 9)
        } else {
            t0.checked_sub(Duration::from_micros((-d) as u64 * 100 / 9))
                .unwrap_or(t0)
        }
    }

    fn rtp_ticks(&self, pts: i64) -> u64 {
        let p0 = self.clock.map_or(pts, |c| c.0);
        (pts - p0 + RTP_ORIGIN).max(0) as u64
    }

    fn send_frame(&mut self, rtc: &mut Rtc, f: &Frame, pts: i64, path: &str) -> Result<(), String> {
        let Some(stream) = self.stream.clone() else {
            return Ok(());
        };
        let Some(track) = stream.track(f.track) else {
            return Ok(());
        };
        if self.nal.as_ref().is_none_or(|n| n.track != *track) {
            self.nal = NalForm::of(track);
        }
        if matches!(track.codec, CodecId::H264 | CodecId::H265) && self.nal.is_none() {
            tracing::debug!(
                path,
                "skipping a video frame: the stream's {} config does not parse",
                track.codec
            );
            return Ok(());
        }
        if track.kind() != sluice_media::MediaKind::Video {
            // Audio reaches WebRTC readers through the path's Opus converter.
            return Ok(());
        }
        let (Some(mid), Some(pt)) = (self.video_mid, self.video_pt) else {
            return Ok(());
        };
        if self.rtp_mode {
            let payloads = match rtp_payloads(self.nal.as_ref(), f) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(path, "skipping a video frame WebRTC cannot carry: {e}");
                    return Ok(());
                }
            };
            let wallclock = self.wallclock(pts);
            let time = self.rtp_ticks(pts) as u32;
            let mut api = rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                return Ok(());
            };
            let n = payloads.len();
            for (i, p) in payloads.iter().enumerate() {
                let seq = SeqNo::from(self.video_seq);
                self.video_seq += 1;
                tx.write_rtp(
                    RtpWrite::new(pt, seq, time, wallclock, p.clone())
                        .marker(i + 1 == n)
                        .nackable(true),
                );
            }
            return Ok(());
        }
        let data: Arc<[u8]> = match video_payload(self.nal.as_ref(), f) {
            Ok(d) => Arc::from(&d[..]),
            Err(e) => {
                tracing::debug!(path, "skipping a video frame WebRTC cannot carry: {e}");
                return Ok(());
            }
        };
        let wallclock = self.wallclock(pts);
        let rtp = MediaTime::new(self.rtp_ticks(pts), Frequency::NINETY_KHZ);
        if let Some(w) = rtc.writer(mid) {
            w.write(pt, wallclock, rtp, data)
                .map_err(|e| format!("cannot send video: {e}"))?;
        }
        Ok(())
    }

    fn send_audio(&mut self, rtc: &mut Rtc, p: &OpusPacket) {
        let (Some(mid), Some(pt)) = (self.audio_mid, self.audio_pt) else {
            return;
        };
        if self.clock.is_none() {
            return; // wait for video to set the clock
        }
        let wallclock = self.wallclock(p.pts);
        let rtp = MediaTime::new(
            self.rtp_ticks(p.pts) * OPUS_RATE as u64 / 90_000,
            Frequency::FORTY_EIGHT_KHZ,
        );
        if self.rtp_mode {
            let mut api = rtc.direct_api();
            if let Some(tx) = api.stream_tx_by_mid(mid, None) {
                let seq = SeqNo::from(self.audio_seq);
                self.audio_seq += 1;
                tx.write_rtp(
                    RtpWrite::new(pt, seq, rtp.numer() as u32, wallclock, p.data.clone()).nackable(true),
                );
            }
            return;
        }
        if let Some(w) = rtc.writer(mid) {
            if let Err(e) = w.write(pt, wallclock, rtp, &p.data[..]) {
                tracing::debug!("cannot send audio: {e}");
            }
        }
    }
}

/// Payload bytes per RTP packet: leaves room for the RTP header, extensions and the SRTP tag
/// within the ~1200-byte datagrams WebRTC uses.
const RTP_PAYLOAD_MTU: usize = 1100;

/// A frame's H.264 RTP payloads (single NAL units and FU-A fragments, RFC 6184), made once per
/// frame with str0m's own packetizer and shared by every WHEP session: the first viewer to send
/// the frame builds them, the others take the cached ones.
fn rtp_payloads(nal: Option<&NalForm>, f: &Frame) -> Result<Arc<[Arc<[u8]>]>, String> {
    let mut err = None;
    let payloads = f.rtp_payloads(|f| {
        let annexb = match video_payload(nal, f) {
            Ok(b) => b,
            Err(e) => {
                err = Some(e);
                return Arc::from(Vec::new());
            }
        };
        let mut p = H264Packetizer::default();
        match p.packetize(RTP_PAYLOAD_MTU, &annexb) {
            Ok(v) => v.into_iter().map(Arc::from).collect(),
            Err(e) => {
                err = Some(format!("cannot packetize: {e}"));
                Arc::from(Vec::new())
            }
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(payloads),
    }
}

/// How a stream's H.264/H.265 frames become Annex B.
struct NalForm {
    track: Track,
    codec: NalCodec,
    params: Vec<Bytes>,
    length_size: u8,
}

impl NalForm {
    /// `None` for codecs that are sent as they are (VP8, VP9, AV1) or a config that does not parse.
    fn of(track: &Track) -> Option<NalForm> {
        let (codec, params, length_size) = match track.codec {
            CodecId::H264 => {
                let c = sluice_codec::avc::AvcConfig::parse(&track.config).ok()?;
                (NalCodec::H264, [c.sps, c.pps].concat(), c.length_size)
            }
            CodecId::H265 => {
                let c = sluice_codec::hevc::HevcConfig::parse(&track.config).ok()?;
                (NalCodec::H265, [c.vps, c.sps, c.pps].concat(), c.length_size)
            }
            _ => return None,
        };
        Some(NalForm {
            track: track.clone(),
            codec,
            params,
            length_size,
        })
    }
}

/// The RTP payloader's input for a video frame: Annex B for H.264/H.265 (with parameter sets
/// on keyframes, the same bytes MPEG-TS carries, built once per frame), the frame as is otherwise.
fn video_payload(nal: Option<&NalForm>, f: &Frame) -> Result<Bytes, String> {
    let Some(n) = nal else {
        return Ok(f.data.clone());
    };
    let mut err = None;
    let b = f.wire(WireForm::Pes, |f| {
        avcc_to_annexb(n.codec, &f.data, n.length_size, &n.params, f.keyframe).unwrap_or_else(|e| {
            err = Some(e.to_string());
            Bytes::new()
        })
    });
    match err {
        Some(e) => Err(e),
        None => Ok(b),
    }
}

impl Whip {
    fn request_keyframe(&mut self, rtc: &mut Rtc, throttle: bool) {
        let Some(mid) = self.video_mid else { return };
        if throttle
            && self
                .last_keyframe_request
                .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return;
        }
        if let Some(mut w) = rtc.writer(mid) {
            if w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok() {
                self.last_keyframe_request = Some(Instant::now());
            }
        }
    }

    /// Core ticks of a packet: each track is anchored at the arrival of its first packet, then
    /// follows its own RTP clock (browsers capture audio and video on the same clock).
    fn pts(&mut self, idx: usize, d: &MediaData) -> i64 {
        let anchor = *self.anchor.get_or_insert(d.network_time);
        let rtp = d.time.rebase(Frequency::NINETY_KHZ).numer() as i64;
        let (rtp0, at0) = *self.tracks[idx].get_or_insert_with(|| {
            let since = d.network_time.saturating_duration_since(anchor);
            (rtp, (since.as_micros() as i64) * 9 / 100)
        });
        at0 + (rtp - rtp0)
    }

    fn media(&mut self, rtc: &mut Rtc, d: MediaData, path: &str) -> Result<(), String> {
        match d.params.spec().codec {
            Codec::H264 => {
                if !d.contiguous {
                    self.request_keyframe(rtc, true);
                }
                let mut keyframe = false;
                let (mut sps, mut pps) = (None, None);
                for nal in iter_annexb(&d.data) {
                    match nal.first().map(|b| b & 0x1f) {
                        Some(5) => keyframe = true,
                        Some(7) => sps = Some(Bytes::copy_from_slice(nal)),
                        Some(8) => pps = Some(Bytes::copy_from_slice(nal)),
                        _ => {}
                    }
                }
                let changed = (sps.is_some() && sps != self.sps) || (pps.is_some() && pps != self.pps);
                if sps.is_some() {
                    self.sps = sps;
                }
                if pps.is_some() {
                    self.pps = pps;
                }
                if changed || !self.started {
                    if !keyframe || self.sps.is_none() || self.pps.is_none() {
                        self.dropped_before_start += 1;
                        if self.dropped_before_start % 30 == 1 {
                            self.request_keyframe(rtc, true);
                        }
                        return Ok(());
                    }
                    self.start(path)?;
                }
                let pts = self.pts(0, &d);
                let data = annexb_to_avcc(&d.data);
                self.publisher.write(Frame::new(0, pts, pts, keyframe, data));
            }
            codec @ (Codec::Vp8 | Codec::Vp9) => {
                if !d.contiguous {
                    self.request_keyframe(rtc, true);
                }
                let (id, info) = if codec == Codec::Vp8 {
                    (CodecId::Vp8, sluice_codec::vpx::vp8_frame(&d.data))
                } else {
                    (CodecId::Vp9, sluice_codec::vpx::vp9_frame(&d.data))
                };
                let Some(info) = info else {
                    tracing::debug!(path, "dropping a {id} frame with a malformed header");
                    return Ok(());
                };
                if let (true, Some((w, h))) = (info.keyframe, info.size) {
                    let t = Track::video(0, id, Bytes::new(), w, h);
                    if self.vpx_track.as_ref() != Some(&t) {
                        self.vpx_track = Some(t);
                        self.start(path)?;
                    }
                }
                if !self.started || self.vpx_track.is_none() {
                    self.dropped_before_start += 1;
                    if self.dropped_before_start % 30 == 1 {
                        self.request_keyframe(rtc, true);
                    }
                    return Ok(());
                }
                let pts = self.pts(0, &d);
                self.publisher.write(Frame::new(
                    0,
                    pts,
                    pts,
                    info.keyframe,
                    Bytes::copy_from_slice(&d.data),
                ));
            }
            Codec::Opus => {
                if !self.started && self.video_mid.is_some() {
                    return Ok(());
                }
                if !self.started {
                    self.start(path)?;
                }
                let pts = self.pts(1, &d);
                self.direct_opus.send(pts, &d.data);
                let Some(conv) = self.to_aac.as_mut() else {
                    return Ok(());
                };
                match conv.push(pts, &d.data) {
                    Ok(frames) => {
                        for (pts, aac) in frames {
                            self.publisher.write(Frame::new(1, pts, pts, true, aac));
                        }
                    }
                    Err(e) => tracing::debug!(path, "Opus→AAC: {e}"),
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn start(&mut self, path: &str) -> Result<(), String> {
        let mut tracks = Vec::new();
        if let Some(t) = &self.vpx_track {
            tracks.push(t.clone());
        } else if let (Some(sps), Some(pps)) = (&self.sps, &self.pps) {
            let (w, h) = sluice_codec::avc::sps_dimensions(sps).unwrap_or((0, 0));
            let config = sluice_codec::avc::AvcConfig::build(sps, pps);
            tracks.push(Track::video(0, CodecId::H264, config, w, h));
        }
        if self.to_aac.is_none() {
            self.to_aac = Some(OpusToAac::new().map_err(|e| format!("cannot start the AAC encoder: {e}"))?);
        }
        if let Some(c) = &self.to_aac {
            tracks.push(c.track(1));
        }
        tracing::info!(
            path,
            tracks = %tracks.iter().map(|t| t.codec.name()).collect::<Vec<_>>().join("+"),
            "WHIP stream starts (Opus converted to AAC)"
        );
        self.publisher.start(tracks);
        self.started = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102 49\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:49 H265/90000\r\na=rtcp-fb:49 nack pli\r\na=fmtp:49 level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n";

    fn answer(video: Option<CodecId>, offer: &str) -> Result<String, Error> {
        let creds = IceCreds {
            ufrag: "srvufrag".into(),
            pass: "serverpasswordserverpass".into(),
        };
        let c = Candidate::host("127.0.0.1:8189".parse().unwrap(), "udp").unwrap();
        negotiate(SessionKind::Whep, video, offer, creds, vec![c], Instant::now()).map(|(_, a)| a)
    }

    #[test]
    fn whep_answer_carries_the_stream_codec_and_opus() {
        let a = answer(Some(CodecId::H264), OFFER).unwrap();
        assert!(a.contains("H264/90000") && !a.contains("H265/90000"), "{a}");
        assert!(a.contains("opus/48000/2"), "{a}");
        assert!(
            a.contains("a=ice-lite") && a.contains("a=ice-ufrag:srvufrag"),
            "{a}"
        );
        assert!(a.contains("a=candidate:") && a.contains("127.0.0.1 8189"), "{a}");
        assert!(a.contains("a=sendonly"), "{a}");
        // H.265 is offered when the source is H.265 and the browser negotiates it.
        let a = answer(Some(CodecId::H265), OFFER).unwrap();
        assert!(a.contains("H265/90000") && !a.contains("H264/90000"), "{a}");
    }

    #[test]
    fn bad_offers_are_refused_with_a_reason() {
        assert!(matches!(answer(None, "hello"), Err(Error::BadOffer(_))));
        assert!(matches!(answer(None, ""), Err(Error::BadOffer(_))));
        // Only a codec nobody here speaks: no media line can be accepted.
        let g722 = OFFER
            .replace("opus/48000/2", "G722/8000")
            .replace("H264/90000", "FOO/90000")
            .replace("H265/90000", "BAR/90000");
        match answer(None, &g722) {
            Err(Error::NoUsableCodec(_)) | Err(Error::BadOffer(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}
