//! SDP offer/answer without I/O: which codecs a session enables, the `Rtc` it builds, the
//! candidates it offers, and the ICE-restart answer fragment (also what the fuzz target drives).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use sluice_media::CodecId;
use str0m::change::SdpOffer;
use str0m::net::TcpType;
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, IceCreds, Rtc};

use crate::Error;

/// Whether a session publishes (WHIP) or plays (WHEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Whip,
    Whep,
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// Fresh local ICE credentials.
pub(crate) fn new_creds() -> IceCreds {
    IceCreds {
        ufrag: random_hex(8),
        pass: random_hex(16),
    }
}

/// Checks that `offer` parses, before a path is claimed or a reader opened.
pub(crate) fn check_offer(offer: &str) -> Result<(), Error> {
    SdpOffer::from_sdp_string(offer)
        .map(drop)
        .map_err(|e| Error::BadOffer(e.to_string()))
}

/// The video codec a WHIP offer will send: H.264 when offered (every output carries it), else
/// VP9/VP8 (`Some(Vp9)` enables both), `None` without video.
pub(crate) fn whip_video(offer: &str) -> Result<Option<CodecId>, Error> {
    if !offer.contains("m=video") || offer.contains("H264/90000") {
        return Ok(None);
    }
    if offer.contains("VP9/90000") || offer.contains("VP8/90000") {
        return Ok(Some(CodecId::Vp9));
    }
    Err(Error::NoUsableCodec(
        "WHIP video must be H.264, VP9 or VP8 (AV1 ingest is not supported yet)".into(),
    ))
}

/// The peer's ICE ufrag in an offer or fragment.
pub(crate) fn ice_ufrag(sdp: &str) -> Option<String> {
    attr(sdp, "a=ice-ufrag:")
}

/// The value of the first `name` attribute line (`name` includes `a=...:`).
pub(crate) fn attr(sdp: &str, name: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .map(str::to_owned)
}

/// Our candidates: a host candidate per bound UDP address, passive ICE-TCP ones, and the
/// configured extra addresses (server-reflexive when they differ from a bound address).
pub(crate) fn local_candidates(
    udp: &[SocketAddr],
    tcp: &[SocketAddr],
    extra: &[SocketAddr],
) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for addr in udp {
        candidates.extend(Candidate::host(*addr, "udp").ok());
    }
    for addr in tcp {
        candidates.extend(
            Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build()
                .ok(),
        );
    }
    let base = udp.iter().find(|a| !a.ip().is_loopback());
    for addr in extra {
        let c = match base {
            Some(base) if base.ip() != addr.ip() => Candidate::server_reflexive(*addr, *base, "udp"),
            _ => Candidate::host(*addr, "udp"),
        };
        candidates.extend(c.ok());
    }
    candidates
}

/// The answer to an ICE restart (RFC 9725 section 4.4): our new credentials and candidates, as
/// an sdpfrag.
pub(crate) fn ice_restart_answer(local: &IceCreds, candidates: &[Candidate]) -> String {
    let mut a = format!(
        "a=ice-lite\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\n",
        local.ufrag, local.pass
    );
    for c in candidates {
        a.push_str(&format!("a={}\r\n", c.to_sdp_string()));
    }
    a.push_str("a=end-of-candidates\r\n");
    a
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
        .set_rtp_mode(kind == SessionKind::Whep && crate::send::rtp_mode(video))
        .clear_codecs()
        .enable_opus(true, false);
    // A viewer's transport-wide congestion feedback (TWCC) feeds a sender's bandwidth
    // estimation, which WHEP does not run (every viewer gets the publisher's bitrate): without
    // the extension the browser sends none, and str0m keeps no record of the last 1000 packets
    // sent to each viewer (about 60 KB each) to match it against. WHIP keeps it: the
    // publishing browser's encoder adapts to our feedback.
    let builder = if kind == SessionKind::Whep {
        let mut exts = ExtensionMap::empty();
        for (id, e) in ExtensionMap::standard().iter() {
            if *e != Extension::TransportSequenceNumber {
                exts.set(id, e.clone());
            }
        }
        builder.set_extension_map(exts)
    } else {
        builder
    };
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
    fn whip_video_codecs() {
        assert_eq!(whip_video(OFFER).unwrap(), None);
        let vp8 = OFFER.replace("H264/90000", "VP8/90000");
        assert_eq!(whip_video(&vp8).unwrap(), Some(CodecId::Vp9));
        let av1 = OFFER
            .replace("H264/90000", "AV1/90000")
            .replace("H265/90000", "AV1/90000");
        assert!(matches!(whip_video(&av1), Err(Error::NoUsableCodec(_))));
        assert_eq!(ice_ufrag(OFFER).as_deref(), Some("abcd"));
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
