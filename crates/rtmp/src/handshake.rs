//! The RTMP handshake (RTMP spec §5.2): C0/C1/C2 and S0/S1/S2, sans-IO.
//!
//! Sluice answers with the simple handshake: S1 carries a zero version field, which makes
//! ffmpeg skip its digest validation, and S2 echoes C1. OBS, ffmpeg, librtmp and VLC accept it.

use crate::Error;

pub const VERSION: u8 = 3;
pub const PACKET: usize = 1536;

/// Builds S0+S1+S2 from the client's C0+C1. `time` is the server's uptime in ms and `random`
/// fills S1's random field.
pub fn server_response(c0c1: &[u8], time: u32, random: &mut impl FnMut() -> u8) -> Result<Vec<u8>, Error> {
    if c0c1.len() != 1 + PACKET {
        return Err(Error::Handshake("C0+C1 must be 1537 bytes"));
    }
    // Version 6 is RTMPE (encrypted), which we do not speak; 3 is plain RTMP.
    if c0c1[0] != VERSION {
        return Err(Error::Handshake("not an RTMP client (C0 version byte is not 3)"));
    }
    let mut out = Vec::with_capacity(1 + 2 * PACKET);
    out.push(VERSION);
    out.extend_from_slice(&time.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend((0..PACKET - 8).map(|_| random()));
    out.extend_from_slice(&c0c1[1..]);
    Ok(out)
}

/// Builds C0+C1 for a client.
pub fn client_c0c1(random: &mut impl FnMut() -> u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + PACKET);
    out.push(VERSION);
    out.extend_from_slice(&[0; 8]);
    out.extend((0..PACKET - 8).map(|_| random()));
    out
}

/// Checks S0+S1+S2 and returns C2 (the echo of S1).
pub fn client_c2(s0s1s2: &[u8]) -> Result<Vec<u8>, Error> {
    if s0s1s2.len() != 1 + 2 * PACKET || s0s1s2[0] != VERSION {
        return Err(Error::Handshake("bad S0/S1/S2 from server"));
    }
    Ok(s0s1s2[1..1 + PACKET].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_echoes_c1() {
        let mut r = || 7u8;
        let c = client_c0c1(&mut r);
        let s = server_response(&c, 5, &mut r).unwrap();
        assert_eq!(s.len(), 1 + 2 * PACKET);
        assert_eq!(&s[1 + PACKET..], &c[1..]);
        assert_eq!(&s[5..9], &[0, 0, 0, 0], "zero version field: simple handshake");
        assert!(client_c2(&s).is_ok());
        let mut bad = c.clone();
        bad[0] = 6;
        assert!(server_response(&bad, 0, &mut r).is_err());
        assert!(server_response(&c[..100], 0, &mut r).is_err());
    }
}
