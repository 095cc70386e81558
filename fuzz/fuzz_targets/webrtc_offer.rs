//! WebRTC input: any bytes POSTed as an SDP offer (WHIP or WHEP) give an answer or a clear
//! error, never a panic; the same for trickle-ICE candidate lines, the shared port's datagram
//! classifier, the VP8/VP9 frame headers of WHIP video, and a WHIP server's answer to our push.
#![no_main]
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sluice_webrtc::{negotiate, stun, Candidate, IceCreds, SessionKind};

fuzz_target!(|data: &[u8]| {
    let _ = stun::classify(data);
    let _ = sluice_codec::vpx::vp8_frame(data);
    let _ = sluice_codec::vpx::vp9_frame(data);
    let Ok(offer) = std::str::from_utf8(data) else { return };
    let _ = sluice_webrtc::accept_answer_for_fuzzing(offer);
    for line in offer.lines() {
        if let Some(c) = line.trim().strip_prefix("a=") {
            let _ = Candidate::from_sdp_string(c);
        }
    }
    let creds = IceCreds {
        ufrag: "fuzzufrg".into(),
        pass: "fuzzpasswordfuzzpassword".into(),
    };
    let cand = Candidate::host("127.0.0.1:8189".parse().unwrap(), "udp").unwrap();
    for kind in [SessionKind::Whip, SessionKind::Whep] {
        if let Ok((_, answer)) = negotiate(kind, None, offer, creds.clone(), vec![cand.clone()], Instant::now()) {
            assert!(answer.contains("a=ice-lite"));
        }
    }
});
