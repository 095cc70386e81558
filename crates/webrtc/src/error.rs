//! Errors sorted by who is to blame: the peer, a mismatch between peer and stream, the path
//! (nobody publishes, busy, ended, kicked), or this server.

use std::time::Duration;

use sluice_media::{CodecId, PublishError, ReadError};

/// Who caused an error: decides the HTTP status, the log level, and whether to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Blame {
    /// The remote end: a malformed offer or candidate, an unknown session, a peer that left.
    Peer,
    /// Peer and stream do not fit: no codec in common, a stream WebRTC cannot carry.
    Incompatible,
    /// The path or the server's own decision: nobody publishes, the path is busy or not
    /// configured, the stream ended, the session was ended (API kick, shutdown).
    Path,
    /// This server: str0m, the UDP port.
    Internal,
}

/// Why a WHIP/WHEP offer or a PATCH was refused.
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
    /// A WHIP server's answer to our offer (a push) that does not parse or fit the offer.
    #[error("malformed SDP answer: {0}")]
    BadAnswer(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn blame(&self) -> Blame {
        match self {
            Error::BadOffer(_) | Error::BadCandidate(_) | Error::BadAnswer(_) | Error::NoSession => {
                Blame::Peer
            }
            Error::NoUsableCodec(_) => Blame::Incompatible,
            Error::NotPublished(_) | Error::Publish(_) | Error::Read(_) => Blame::Path,
            Error::Internal(_) => Blame::Internal,
        }
    }
}

/// Why a running session ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    // The peer's doing.
    #[error("ended by DELETE")]
    Deleted,
    #[error("the peer closed the connection")]
    PeerClosed,
    #[error("ICE disconnected")]
    IceDisconnected,
    #[error("no packet from the peer for {0:?} (ICE timeout)")]
    IceTimeout(Duration),
    /// A push's connection to a WHIP server: ICE and DTLS did not complete in time.
    #[error("ICE and DTLS did not complete within {0:?} (no UDP path to the WHIP server's candidates?)")]
    ConnectTimeout(Duration),
    // A mismatch between what was negotiated and what the stream became.
    #[error("the stream's video codec changed to {0}, which this session did not negotiate")]
    VideoCodecChanged(CodecId),
    // The path's.
    #[error("stream ended: {0}")]
    Stream(#[from] ReadError),
    #[error("session ended: {0}")]
    Ended(String),
    // Ours.
    #[error("WebRTC error: {0}")]
    Rtc(#[from] str0m::RtcError),
    #[error("the UDP port closed")]
    PortClosed,
}

impl SessionError {
    pub fn blame(&self) -> Blame {
        match self {
            SessionError::Deleted
            | SessionError::PeerClosed
            | SessionError::IceDisconnected
            | SessionError::IceTimeout(_)
            | SessionError::ConnectTimeout(_) => Blame::Peer,
            SessionError::VideoCodecChanged(_) => Blame::Incompatible,
            SessionError::Stream(_) | SessionError::Ended(_) => Blame::Path,
            SessionError::Rtc(_) | SessionError::PortClosed => Blame::Internal,
        }
    }
}
