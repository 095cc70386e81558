//! The WHIP client: publishes a path to another server's WHIP endpoint (a push destination).
//! It owns one str0m `Rtc` as the offerer (full ICE, controlling; DTLS client once the server
//! answers `a=setup:passive`), its own UDP socket, the offer it makes and the answer it takes;
//! the path's frames go out through the same [`MediaSender`] as a WHEP viewer's, and the
//! server's PLI/FIR become keyframe requests to the path's publisher. The HTTP exchange (POST of
//! the offer, DELETE of the resource, the bearer token) is the caller's: this module takes and
//! gives SDP strings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_media::{CodecId, Reader, StreamInfo};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;

use crate::send::{self, MediaSender};
use crate::stats::Link;
use crate::{Error, SessionError};

/// What a push reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushProgress {
    /// ICE and DTLS are up: media flows from now on.
    Connected,
    /// About once a second while media flows: bytes sent on the socket since the last report.
    Sent(u64),
}

/// A push to a WHIP server, from the offer to the end of its connection.
pub struct WhipPush {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    video: Option<(Mid, Option<CodecId>)>,
    audio: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    stream: Arc<StreamInfo>,
}

impl WhipPush {
    /// Makes the offer for pushing `stream` (the reader's current tracks) to a WHIP server whose
    /// endpoint is at `server`: binds a UDP socket on the local address the system routes toward
    /// it (its address family; loopback for a server on loopback) and offers sendonly video in
    /// the stream's codec and Opus audio, with that socket as the host candidate.
    ///
    /// A stream WebRTC cannot carry is refused with [`Error::NoUsableCodec`].
    pub async fn offer(
        stream: Arc<StreamInfo>,
        server: SocketAddr,
        now: Instant,
    ) -> Result<(WhipPush, String), Error> {
        crate::install_crypto();
        let video_codec = stream.video().map(|v| v.codec);
        if let Some(v) = video_codec {
            if !crate::video_codec_supported(v) {
                return Err(Error::NoUsableCodec(format!(
                    "the stream's video is {v}, which WebRTC cannot carry"
                )));
            }
        }
        let opus = stream.audio().is_some_and(|a| a.codec == CodecId::Opus);
        if video_codec.is_none() && !opus {
            return Err(Error::NoUsableCodec(match stream.audio() {
                Some(a) => format!(
                    "the stream has no video and its {} audio cannot be sent as Opus",
                    a.codec
                ),
                None => "the stream has neither video nor audio".into(),
            }));
        }
        let ip =
            local_ip_toward(server).map_err(|e| Error::Internal(format!("no route to {server}: {e}")))?;
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
            .await
            .map_err(|e| Error::Internal(format!("cannot bind a UDP socket on {ip}: {e}")))?;
        let local = socket.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
        let builder = Rtc::builder()
            .set_stats_interval(Some(Duration::from_secs(1)))
            .set_rtp_mode(send::rtp_mode(video_codec))
            .clear_codecs()
            .enable_opus(true, false);
        let builder = match video_codec {
            Some(CodecId::H265) => builder.enable_h265(true),
            Some(CodecId::Vp8) => builder.enable_vp8(true),
            Some(CodecId::Vp9) => builder.enable_vp9(true),
            Some(CodecId::Av1) => builder.enable_av1(true),
            _ => builder.enable_h264(true),
        };
        let mut rtc = builder.build(now);
        let candidate = Candidate::host(local, "udp").map_err(|e| Error::Internal(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let video =
            video_codec.map(|_| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
        let audio = opus.then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| Error::Internal("str0m made no offer".into()))?;
        Ok((
            WhipPush {
                rtc,
                socket,
                local,
                video: video.map(|m| (m, video_codec)),
                audio,
                pending: Some(pending),
                stream,
            },
            offer.to_sdp_string(),
        ))
    }

    /// Takes the server's answer. An answer that is not SDP, or that accepts none of the codecs
    /// the stream needs (H.265 offered to a server that takes H.264 only), is refused.
    pub fn accept_answer(&mut self, answer: &str) -> Result<(), Error> {
        let pending = self
            .pending
            .take()
            .ok_or_else(|| Error::Internal("the answer was already taken".into()))?;
        let sdp = SdpAnswer::from_sdp_string(answer).map_err(|e| Error::BadAnswer(e.to_string()))?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, sdp)
            .map_err(|e| Error::BadAnswer(e.to_string()))?;
        if let Some((mid, codec)) = self.video {
            if send::video_pt(&self.rtc, mid, codec).is_none() {
                return Err(Error::NoUsableCodec(format!(
                    "the WHIP server's answer does not take {} video",
                    codec.map_or("H.264".into(), |c| c.to_string())
                )));
            }
        }
        if let Some(mid) = self.audio {
            if send::opus_pt(&self.rtc, mid).is_none() {
                return Err(Error::NoUsableCodec(
                    "the WHIP server's answer does not take Opus audio".into(),
                ));
            }
        }
        Ok(())
    }

    /// Runs the connection: ICE and DTLS (at most `connect_timeout`), then the reader's frames
    /// from a keyframe, until the server goes silent for `ice_timeout`, closes, or the reader
    /// ends. Returns why it ended and the stream as last seen (the reader may have started a
    /// new one meanwhile); the caller deletes the WHIP resource.
    pub async fn run(
        mut self,
        reader: &mut Reader,
        connect_timeout: Duration,
        ice_timeout: Duration,
        progress: &mut (dyn FnMut(PushProgress) + Send),
    ) -> (SessionError, Arc<StreamInfo>) {
        let stats = reader.stats().clone();
        let path = reader.path().to_owned();
        let mut sender = MediaSender::new(reader, Some(self.stream.clone()));
        // The media lines are ours: their mids are known from the offer.
        sender.video_mid = self.video.map(|(m, _)| m);
        sender.audio_mid = self.audio;
        let mut link = Link::new(stats.clone(), Instant::now());
        let started = Instant::now();
        let mut last_rx = started;
        let mut connected = false;
        let mut unreported = 0u64;
        let mut last_report = started;
        let mut buf = vec![0u8; 2048];
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        let reason = loop {
            // Everything str0m wants sent, then its next deadline.
            let deadline = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break Ok(t),
                    Ok(Output::Transmit(t)) => {
                        let n = t.contents.len() as u64;
                        stats.add_bytes_out(n);
                        unreported += n;
                        let sent = match self.socket.try_send_to(&t.contents, t.destination) {
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                self.socket.send_to(&t.contents, t.destination).await
                            }
                            r => r,
                        };
                        if let Err(e) = sent {
                            tracing::debug!(%path, destination = %t.destination, "WHIP push: UDP send failed: {e}");
                        }
                    }
                    Ok(Output::Event(e)) => {
                        if let Event::MediaEgressStats(s) = &e {
                            if Some(s.mid) == sender.video_mid {
                                sender.tune_resends(&mut self.rtc, s.rtt, s.loss);
                            }
                        }
                        if link.event(&e) {
                            continue;
                        }
                        match e {
                            Event::Connected => {
                                connected = true;
                                link.set_state("connected");
                                progress(PushProgress::Connected);
                            }
                            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                                break Err(SessionError::IceDisconnected);
                            }
                            Event::KeyframeRequest(r) => {
                                link.link.plis += 1;
                                sender.keyframe_request(r.mid);
                            }
                            _ => {}
                        }
                    }
                    Err(e) => break Err(e.into()),
                }
            };
            let deadline = match deadline {
                Ok(d) => d,
                Err(e) => break e,
            };
            if !self.rtc.is_alive() {
                break SessionError::PeerClosed;
            }
            if unreported > 0 && last_report.elapsed() >= Duration::from_secs(1) {
                progress(PushProgress::Sent(unreported));
                unreported = 0;
                last_report = Instant::now();
            }
            let limit = if connected {
                last_rx + ice_timeout
            } else {
                started + connect_timeout
            };
            sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline.min(limit)));
            tokio::select! {
                _ = stats.cancelled() => {
                    let r = stats.reason();
                    break SessionError::Ended(if r.is_empty() { "asked to end".into() } else { r });
                }
                r = self.socket.recv_from(&mut buf) => {
                    let (n, source) = match r {
                        Ok(r) => r,
                        // ICMP port unreachable from a server that left shows up here.
                        Err(e) => {
                            tracing::trace!(%path, "WHIP push: UDP receive error: {e}");
                            continue;
                        }
                    };
                    let now = Instant::now();
                    last_rx = now;
                    let Ok(contents) = buf[..n].try_into() else { continue };
                    let input = Input::Receive(now, Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local,
                        contents,
                    });
                    if let Err(e) = self.rtc.handle_input(input) {
                        tracing::debug!(%path, "WHIP push: input rejected: {e}");
                    }
                }
                m = sender.next(), if connected => {
                    if let Err(e) = sender.media(&mut self.rtc, m, &path) {
                        break e;
                    }
                    // What was written goes out in this round (see `MediaSender::media`).
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
                        break e.into();
                    }
                }
                _ = &mut sleep => {
                    let now = Instant::now();
                    if now >= limit {
                        break if connected {
                            SessionError::IceTimeout(ice_timeout)
                        } else {
                            SessionError::ConnectTimeout(connect_timeout)
                        };
                    }
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                        break e.into();
                    }
                }
            }
        };
        if unreported > 0 {
            progress(PushProgress::Sent(unreported));
        }
        self.rtc.disconnect();
        link.set_state("closed");
        link.publish();
        let stream = sender.stream().cloned().unwrap_or_else(|| self.stream.clone());
        (reason, stream)
    }
}

/// The local address the system would send from toward `server` (no packet is sent: a UDP
/// `connect` only looks up the route).
fn local_ip_toward(server: SocketAddr) -> std::io::Result<IpAddr> {
    let any = match server {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let probe = std::net::UdpSocket::bind(SocketAddr::new(any, 0))?;
    probe.connect(server)?;
    Ok(probe.local_addr()?.ip())
}

/// What [`WhipPush::accept_answer`] does with a server's answer, without a socket: `answer`
/// taken as the answer to an offer of sendonly H.264 + Opus. For the fuzz target (an answer is
/// bytes from the network); an error, never a panic.
#[doc(hidden)]
pub fn accept_answer_for_fuzzing(answer: &str) -> Result<(), Error> {
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_h264(true)
        .build(Instant::now());
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
    let candidate = Candidate::host(local, "udp").map_err(|e| Error::Internal(e.to_string()))?;
    rtc.add_local_candidate(candidate);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (_, pending) = api
        .apply()
        .ok_or_else(|| Error::Internal("str0m made no offer".into()))?;
    let sdp = SdpAnswer::from_sdp_string(answer).map_err(|e| Error::BadAnswer(e.to_string()))?;
    rtc.sdp_api()
        .accept_answer(pending, sdp)
        .map_err(|e| Error::BadAnswer(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_answers_are_errors() {
        for answer in [
            "",
            "not sdp",
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
            "\u{0}\u{ff}",
        ] {
            assert!(accept_answer_for_fuzzing(answer).is_err(), "{answer:?}");
        }
    }

    #[test]
    fn the_local_address_follows_the_destination() {
        let ip = local_ip_toward("127.0.0.1:8889".parse().unwrap()).unwrap();
        assert!(ip.is_loopback(), "{ip}");
    }
}
